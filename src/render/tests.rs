//! Render every built-in template over the fixture matrix, and the fallback rules.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::*;
use crate::configuration::{load_str, Env};

const ALERT: &str = include_str!("../../tests/fixtures/alert.json");
const ALERT_MINIMAL: &str = include_str!("../../tests/fixtures/alert-minimal.json");
const ALERT_HOSTILE: &str = include_str!("../../tests/fixtures/alert-hostile.json");
const EVENT_CREATED: &str = include_str!("../../tests/fixtures/webhook-alert-created.json");
const EVENT_UPDATED: &str = include_str!("../../tests/fixtures/webhook-alert-updated.json");
const EVENT_PROPOSAL: &str = include_str!("../../tests/fixtures/webhook-content-proposal.json");
const EVENT_HOSTILE: &str = include_str!("../../tests/fixtures/webhook-alert-hostile.json");
const CARD_SCHEMA: &str = include_str!("../../tests/fixtures/adaptive-card.schema.json");

const APP_URL: &str = "https://app.sekoia.io";

fn parse(s: &str) -> Value {
    serde_json::from_str(s).expect("fixture is JSON")
}

/// A hostile `type`: the event is then not an alert, so the "other type" branches render it.
const HOSTILE_TYPE: &str =
    "[Case](https://evil.example/type) <!channel> @all <b>x</b>\n  Link:    https://evil.example/t";

/// The hostile event in every shape the templates tell apart, with what it is rendered with.
fn hostile_event_cases() -> Vec<(&'static str, Value, Option<Value>, Option<&'static str>)> {
    let updated = parse(EVENT_HOSTILE);
    let mut deleted = updated.clone();
    deleted["action"] = json!("deleted");
    let mut other = updated.clone();
    other["type"] = json!(HOSTILE_TYPE);
    vec![
        ("hostile-event", updated.clone(), Some(parse(ALERT)), None),
        (
            "hostile-event-unenriched",
            updated,
            None,
            Some("Alert API answered 404 for [x](https://evil.example/e) <!channel> @all"),
        ),
        ("hostile-event-deleted", deleted, None, None),
        ("hostile-event-other-type", other, None, None),
    ]
}

/// Every string in a JSON value, with whether the chat tool shows it as plain text (Slack
/// `plain_text` objects, Mattermost's notification `fallback`), where links cannot exist.
fn strings<'a>(v: &'a Value, plain: bool, out: &mut Vec<(bool, &'a str)>) {
    match v {
        Value::String(s) => out.push((plain, s)),
        Value::Array(items) => items.iter().for_each(|i| strings(i, plain, out)),
        Value::Object(map) => {
            let plain_object = map.get("type").and_then(Value::as_str) == Some("plain_text");
            for (key, item) in map {
                strings(item, plain || plain_object || key == "fallback", out);
            }
        }
        _ => {}
    }
}

/// What a hostile event must never achieve in a kind's output: a Markdown link anywhere but to
/// the SEKOIA.IO app, a live mention, a URL field leaving the app, or (console) a line of its own.
fn assert_no_live_markup(kind: TargetKind, body: &str, case: &str) {
    if kind == TargetKind::Console {
        let links: Vec<&str> = body
            .lines()
            .filter(|l| l.trim_start().starts_with("Link:"))
            .collect();
        assert_eq!(links.len(), 1, "{case}: a line of its own: {body}");
        assert!(links[0].contains(APP_URL), "{case}: {}", links[0]);
        return;
    }
    let mut v: Value = parse(body);
    if let Some(obj) = v.as_object_mut() {
        // Google Chat's threadKey is an id Google never shows: the alert uuid as received.
        obj.remove("thread");
    }
    if kind == TargetKind::Webhook {
        // JSON only: the event travels verbatim, the summary stays one line.
        assert!(
            v["summary"].as_str().is_some_and(|s| !s.contains('\n')),
            "{case}"
        );
        return;
    }
    if kind == TargetKind::PagerDuty {
        // PagerDuty shows text as typed (no Markdown, no mentions): the summary stays one
        // line, and the only link is the relay's own, to the app.
        assert!(
            v["payload"]["summary"]
                .as_str()
                .is_some_and(|s| !s.contains('\n')),
            "{case}"
        );
        for link in [&v["links"][0]["href"], &v["client_url"]] {
            assert!(
                link.as_str().is_some_and(|u| u.starts_with(APP_URL)),
                "{case}: {link}"
            );
        }
        return;
    }
    let mut texts = Vec::new();
    strings(&v, false, &mut texts);
    for (plain, text) in texts {
        // A `](` that is not backslash-escaped must open the relay's own link to the app.
        for (at, _) in text.match_indices("](").filter(|_| !plain) {
            let escaped = text[..at].ends_with('\\');
            let to_app = text[at + 2..].starts_with(APP_URL);
            assert!(escaped || to_app, "{case}: live link in {text:?}");
        }
        // Slack plain_text cannot mention either; Mattermost's fallback can (notifications).
        let slack = matches!(kind, TargetKind::Slack | TargetKind::SlackApp);
        if kind != TargetKind::Teams && !(plain && slack) {
            // Teams TextBlocks cannot mention anyone (that needs `msteams.entities`).
            let lower = text.to_lowercase();
            for mention in ["@all", "@here", "@channel", "@present", "<!", "<@"] {
                assert!(!lower.contains(mention), "{case}: {mention} in {text:?}");
            }
        }
        if !plain
            && matches!(
                kind,
                TargetKind::Chime
                    | TargetKind::Mattermost
                    | TargetKind::MattermostApp
                    | TargetKind::Webex
            )
        {
            assert!(!text.contains('<'), "{case}: raw HTML in {text:?}");
        }
        if kind == TargetKind::GoogleChat {
            // Card text is HTML: every tag is one the template wrote, never one from data.
            const OWN: [&str; 4] = ["<b>", "</b>", "<font color=\"#", "</font>"];
            for (at, _) in text.match_indices('<') {
                assert!(
                    OWN.iter().any(|t| text[at..].starts_with(t)),
                    "{case}: raw HTML in {text:?}"
                );
            }
        }
    }
    assert!(
        v["attachments"][0]["content"]["msteams"]
            .get("entities")
            .is_none(),
        "{case}: Teams mention entities"
    );
    // Every URL field leads to the app, whatever the short id says.
    let google_chat_buttons = v
        .pointer("/cardsV2/0/card/sections")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|s| s["widgets"].as_array().into_iter().flatten())
        .filter_map(|w| w.pointer("/buttonList/buttons/0/onClick/openLink/url"));
    let urls = [
        v.pointer("/embeds/0/url"),
        v.pointer("/attachments/0/content/actions/0/url"),
        v.pointer("/attachments/0/title_link"),
        v.pointer("/blocks")
            .and_then(Value::as_array)
            .and_then(|b| b.iter().find(|b| b["type"] == "actions"))
            .and_then(|b| b.pointer("/elements/0/url")),
    ]
    .into_iter()
    .flatten()
    .chain(google_chat_buttons);
    for u in urls {
        let parsed = url::Url::parse(u.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{case}: {u}: {e}"));
        assert_eq!(parsed.host_str(), Some("app.sekoia.io"), "{case}: {u}");
        assert!(
            parsed.query().is_none() && parsed.fragment().is_none(),
            "{case}: {u}"
        );
        let segments: Vec<&str> = parsed
            .path_segments()
            .map(Iterator::collect)
            .unwrap_or_default();
        assert!(
            segments.len() <= 3 && segments.iter().all(|s| *s != ".." && *s != "."),
            "{case}: {u}"
        );
    }
}

fn deleted_event() -> Value {
    let mut e = parse(EVENT_CREATED);
    e["action"] = json!("deleted");
    e
}

/// A config with one target of each kind using the built-in templates, plus `extra` TOML.
fn settings(extra: &str, base_dir: &Path) -> Settings {
    let text = format!(
        r#"
        [targets.teams]
        kind = "teams"
        url = "https://example.invalid/workflows/x"
        [targets.slack]
        kind = "slack"
        url = "https://example.invalid/services/x"
        [targets.mattermost]
        kind = "mattermost"
        url = "https://example.invalid/hooks/x"
        [targets.chime]
        kind = "chime"
        url = "https://example.invalid/incomingwebhooks/x"
        [targets.google_chat]
        kind = "google_chat"
        url = "https://example.invalid/v1/spaces/S/messages?key=k&token=t"
        [targets.discord]
        kind = "discord"
        url = "https://example.invalid/api/webhooks/1/t"
        [targets.webex]
        kind = "webex"
        url = "https://example.invalid/v1/webhooks/incoming/x"
        [targets.pagerduty]
        kind = "pagerduty"
        routing_key = "0123456789abcdef0123456789abcdef"
        [targets.webhook]
        kind = "webhook"
        url = "https://example.invalid/soar"
        [targets.console]
        kind = "console"
        [targets.slack_app]
        kind = "slack_app"
        token = "xoxb-1-2-x"
        channel = "C0123456789"
        [targets.mattermost_app]
        kind = "mattermost_app"
        url = "https://example.invalid"
        token = "abcdefghijklmnopqrstuvwxyz"
        channel_id = "abcdefghijklmnopqrstuvwxyz"
        {extra}
        "#
    );
    load_str(&text, &base_dir.join("config.toml"), base_dir, &Env::new()).expect("test config")
}

fn builtin_renderer() -> Renderer {
    Renderer::new(&settings("", Path::new("."))).expect("built-in templates compile")
}

fn input<'a>(
    event: &'a Value,
    alert: Option<&'a Value>,
    error: Option<&'a str>,
    target: &'a str,
) -> RenderInput<'a> {
    RenderInput {
        changes: &[],
        event,
        alert,
        enrichment_error: error,
        hook_name: "soc",
        target_name: target,
        app_url: APP_URL,
    }
}

/// Every mrkdwn/plain text string of a Slack body, with whether it is mrkdwn.
fn slack_texts(v: &Value, out: &mut Vec<(bool, String)>) {
    match v {
        Value::Object(map) => {
            if let (Some(t), Some(Value::String(s))) =
                (map.get("type").and_then(Value::as_str), map.get("text"))
            {
                out.push((t == "mrkdwn", s.clone()));
            }
            for item in map.values() {
                slack_texts(item, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| slack_texts(i, out)),
        _ => {}
    }
}

fn chars(v: &Value) -> usize {
    v.as_str().map(|s| s.chars().count()).unwrap_or(0)
}

fn validate_card(body: &Value, case: &str) {
    let schema = parse(CARD_SCHEMA);
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let attachments = body["attachments"].as_array().expect("attachments");
    assert_eq!(attachments.len(), 1, "{case}: exactly one attachment");
    assert_eq!(
        attachments[0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let mut card = attachments[0]["content"].clone();
    assert_eq!(card["msteams"]["width"], "Full", "{case}");
    card.as_object_mut().map(|c| c.remove("msteams"));
    let errors: Vec<String> = validator
        .iter_errors(&card)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{case}: card does not validate: {errors:#?}"
    );
}

/// Checks that hold for every rendered output of a kind.
fn check_output(kind: TargetKind, body: &str, case: &str) {
    assert!(
        body.len() <= max_body_bytes(kind),
        "{case}: {} bytes",
        body.len()
    );
    if kind == TargetKind::Console {
        assert!(
            !body.contains('\x1b'),
            "{case}: escape sequence on the console"
        );
        return;
    }
    let v: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{case}: invalid JSON {e}: {body}"));
    limits::check_envelope(kind, &v).unwrap_or_else(|e| panic!("{case}: {e}"));
    match kind {
        TargetKind::Teams => validate_card(&v, case),
        TargetKind::Slack | TargetKind::SlackApp => {
            let blocks = v["blocks"].as_array().expect("blocks");
            assert!(blocks.len() <= 50, "{case}");
            assert!(chars(&v["text"]) <= 4000, "{case}");
            for b in blocks {
                match b["type"].as_str() {
                    Some("header") => {
                        assert_eq!(b["text"]["type"], "plain_text");
                        assert!((1..=150).contains(&chars(&b["text"]["text"])), "{case}");
                    }
                    Some("section") => {
                        assert!(chars(&b["text"]["text"]) <= 3000, "{case}");
                        let fields = b["fields"].as_array().map(Vec::len).unwrap_or(0);
                        assert!(fields <= 10, "{case}");
                        for f in b["fields"].as_array().into_iter().flatten() {
                            assert!((1..=2000).contains(&chars(&f["text"])), "{case}");
                        }
                    }
                    Some("actions") => {
                        for e in b["elements"].as_array().into_iter().flatten() {
                            assert!(chars(&e["text"]["text"]) <= 75, "{case}");
                            assert!(
                                e["url"].as_str().is_some_and(|u| u.starts_with("https://")),
                                "{case}"
                            );
                        }
                    }
                    _ => {}
                }
            }
            assert!(
                v.get("username").is_none() && v.get("channel").is_none(),
                "{case}"
            );
            let mut texts = Vec::new();
            slack_texts(&v, &mut texts);
            texts.push((true, v["text"].as_str().unwrap_or_default().to_string()));
            for (mrkdwn, t) in texts {
                if mrkdwn {
                    assert!(
                        !t.contains("<!") && !t.contains("<http"),
                        "{case}: unescaped mrkdwn {t}"
                    );
                }
            }
        }
        TargetKind::Mattermost | TargetKind::MattermostApp => {
            assert!(chars(&v["text"]) <= 4000, "{case}");
            let atts = v["attachments"].as_array().expect("attachments");
            assert_eq!(atts.len(), 1, "{case}");
            let color = atts[0]["color"].as_str().unwrap_or_default();
            assert!(
                color.starts_with('#') && color.len() == 7,
                "{case}: {color}"
            );
            assert!(
                atts[0]["title"].as_str().is_some_and(|t| !t.is_empty()),
                "{case}"
            );
            let lower = body.to_lowercase();
            for mention in ["@channel", "@here", "@all"] {
                assert!(
                    !lower.contains(mention),
                    "{case}: {mention} not neutralised"
                );
            }
        }
        TargetKind::Chime => {
            let content = v["Content"].as_str().expect("Content");
            assert!(content.starts_with("/md "), "{case}");
            assert!(content.len() <= 4096, "{case}");
            assert!(
                !body.contains("@here") && !body.contains("@channel"),
                "{case}"
            );
        }
        TargetKind::GoogleChat => {
            let cards = v["cardsV2"].as_array().expect("cardsV2");
            assert_eq!(cards.len(), 1, "{case}");
            let card = &cards[0]["card"];
            // The header is plain text: only the relay's fixed words.
            let title = card["header"]["title"].as_str().unwrap_or_default();
            assert!(
                [
                    "New alert",
                    "Alert updated",
                    "Alert deleted",
                    "Alert event",
                    "New report",
                    "SEKOIA.IO notification"
                ]
                .contains(&title),
                "{case}: header {title:?}"
            );
            let sections = card["sections"].as_array().expect("sections");
            let widgets: usize = sections
                .iter()
                .map(|s| s["widgets"].as_array().map(Vec::len).unwrap_or(0))
                .sum();
            assert!((1..=100).contains(&widgets), "{case}: {widgets} widgets");
            let button = sections
                .iter()
                .flat_map(|s| s["widgets"].as_array().into_iter().flatten())
                .find_map(|w| w.pointer("/buttonList/buttons/0/onClick/openLink/url"));
            assert!(
                button
                    .and_then(Value::as_str)
                    .is_some_and(|u| u.starts_with("https://")),
                "{case}: no link button"
            );
            if let Some(key) = v.pointer("/thread/threadKey") {
                assert!(key.as_str().is_some_and(|k| !k.is_empty()), "{case}");
            }
        }
        TargetKind::Discord => {
            assert_eq!(v["allowed_mentions"], json!({"parse": []}), "{case}");
            let embeds = v["embeds"].as_array().expect("embeds");
            assert!((1..=10).contains(&embeds.len()), "{case}");
            let mut total = 0;
            for e in embeds {
                assert!(e["color"].is_u64(), "{case}: color {}", e["color"]);
                assert!((1..=256).contains(&chars(&e["title"])), "{case}");
                assert!(chars(&e["description"]) <= 4096, "{case}");
                assert!(
                    e["url"].as_str().is_some_and(|u| u.starts_with("https://")),
                    "{case}"
                );
                let fields = e["fields"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                assert!(fields.len() <= 25, "{case}");
                for f in fields {
                    assert!((1..=256).contains(&chars(&f["name"])), "{case}");
                    assert!((1..=1024).contains(&chars(&f["value"])), "{case}");
                    total += chars(&f["name"]) + chars(&f["value"]);
                }
                assert!(chars(&e["footer"]["text"]) <= 2048, "{case}");
                total +=
                    chars(&e["title"]) + chars(&e["description"]) + chars(&e["footer"]["text"]);
            }
            assert!(total <= 6000, "{case}: {total} characters");
        }
        TargetKind::Webex => {
            let md = v["markdown"].as_str().expect("markdown");
            assert!(md.len() <= 7439, "{case}: {} bytes", md.len());
            assert!(md.starts_with("### "), "{case}");
            assert!(
                md.contains("](https://app.sekoia.io"),
                "{case}: no link to the app"
            );
        }
        TargetKind::PagerDuty => {
            assert!(
                ["trigger", "acknowledge", "resolve"]
                    .contains(&v["event_action"].as_str().unwrap_or_default()),
                "{case}"
            );
            if let Some(key) = v.get("dedup_key") {
                assert!(
                    key.as_str()
                        .is_some_and(|k| (1..=255).contains(&k.chars().count())),
                    "{case}"
                );
            }
            assert!(
                v.get("routing_key").is_none(),
                "{case}: the key is added when sending"
            );
            let summary = &v["payload"]["summary"];
            assert!((1..=1024).contains(&chars(summary)), "{case}");
            assert!(
                summary.as_str().is_some_and(|s| !s.contains('\n')),
                "{case}"
            );
            assert!(
                ["critical", "error", "warning", "info"]
                    .contains(&v["payload"]["severity"].as_str().unwrap_or_default()),
                "{case}"
            );
            assert!(
                v["links"][0]["href"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("https://")),
                "{case}"
            );
        }
        TargetKind::Webhook => {
            assert_eq!(v["version"], "1", "{case}");
            assert!(
                v["summary"].as_str().is_some_and(|s| !s.contains('\n')),
                "{case}"
            );
        }
        TargetKind::Console => {}
    }
}

#[test]
fn renderer_is_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Renderer>();
}

#[test]
fn every_builtin_renders_every_fixture() {
    let renderer = builtin_renderer();
    let alerts = [
        ("alert", parse(ALERT)),
        ("minimal", parse(ALERT_MINIMAL)),
        ("hostile", parse(ALERT_HOSTILE)),
    ];
    let events = [
        ("created", parse(EVENT_CREATED)),
        ("updated", parse(EVENT_UPDATED)),
    ];
    for kind in TargetKind::ALL {
        let target = kind.as_str();
        for (ename, event) in &events {
            for (aname, alert) in &alerts {
                let case = format!("{target}/{ename}/{aname}");
                let out = renderer
                    .render(target, &input(event, Some(alert), None, target))
                    .unwrap_or_else(|e| panic!("{case}: {e}"));
                assert_eq!(out.fallback, None, "{case}");
                check_output(kind, &out.body, &case);
                let short_id = event["attributes"]["short_id"].as_str().unwrap_or_default();
                assert!(out.body.contains(short_id), "{case}: short id missing");
                assert!(
                    out.body
                        .contains("https://app.sekoia.io/operations/alerts/ALEY4fqz8moo"),
                    "{case}: link missing"
                );
            }
            // Unenriched: the alert could not be fetched.
            let case = format!("{target}/{ename}/unenriched");
            let out = renderer
                .render(
                    target,
                    &input(
                        event,
                        None,
                        Some("Alert API answered 403: the key needs SIC_READ_ALERTS"),
                        target,
                    ),
                )
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            check_output(kind, &out.body, &case);
            assert!(out.body.contains("ALEY4fqz8moo"), "{case}");
            assert!(
                out.body.contains("/operations/alerts/ALEY4fqz8moo"),
                "{case}"
            );
            assert!(
                out.body.contains("answered 403"),
                "{case}: enrichment error missing"
            );
            if kind != TargetKind::Webhook {
                assert!(out.body.contains("unavailable"), "{case}");
            }
        }
        let deleted = deleted_event();
        let out = renderer
            .render(target, &input(&deleted, None, None, target))
            .expect("deleted");
        check_output(kind, &out.body, &format!("{target}/deleted"));
        assert!(
            out.body.contains("ALEY4fqz8moo") && out.body.to_lowercase().contains("deleted"),
            "{target}/deleted: {}",
            out.body
        );
        if kind != TargetKind::Webhook {
            assert!(
                !out.body.contains("unavailable"),
                "{target}/deleted says unavailable"
            );
        }

        let proposal = parse(EVENT_PROPOSAL);
        let out = renderer
            .render(target, &input(&proposal, None, None, target))
            .expect("proposal");
        check_output(kind, &out.body, &format!("{target}/content-proposal"));
        assert!(
            !out.body.contains("/operations/alerts/"),
            "{target}: no alert link for a report"
        );
        if kind != TargetKind::Webhook {
            assert!(
                out.body.contains("New report"),
                "{target}/content-proposal: {}",
                out.body
            );
        }

        let unknown = json!({"type": "case", "action": "alerts-updated", "attributes": {"uuid": "c1"}, "metadata": {"version": 2}});
        let out = renderer
            .render(target, &input(&unknown, None, None, target))
            .expect("unknown type");
        check_output(kind, &out.body, &format!("{target}/unknown-type"));

        // An event with almost nothing in it still renders (defensive: fields may be absent).
        let bare = json!({"type": "alert", "action": "created", "metadata": {}});
        let out = renderer
            .render(target, &input(&bare, None, None, target))
            .expect("bare event");
        check_output(kind, &out.body, &format!("{target}/bare"));
    }
    assert_eq!(renderer.fallback_count(), 0);
}

#[test]
fn default_messages_show_the_facts() {
    let renderer = builtin_renderer();
    let event = parse(EVENT_CREATED);
    let alert = parse(ALERT);
    for kind in TargetKind::ALL {
        let target = kind.as_str();
        let body = renderer
            .render(target, &input(&event, Some(&alert), None, target))
            .expect("render")
            .body;
        for fact in [
            "New alert",
            "Cobalt Strike beacon HTTP traffic",
            "Major",
            "70",
            "Acknowledged",
            "Cobalt Strike C2 (Sekoia CTI)",
            "Paris HQ",
            "ALEY4fqz8moo",
        ] {
            assert!(body.contains(fact), "{target}: {fact} missing in {body}");
        }
        if kind != TargetKind::Webhook && kind != TargetKind::Chime {
            assert!(
                body.contains("malicious-code / malware"),
                "{target}: alert type missing"
            );
        }
    }
    let updated = parse(EVENT_UPDATED);
    let body = renderer
        .render("slack", &input(&updated, Some(&alert), None, "slack"))
        .expect("render")
        .body;
    assert!(body.contains("Alert updated"));
}

#[test]
fn colours_are_per_kind() {
    let renderer = builtin_renderer();
    let event = parse(EVENT_CREATED);
    let alert = parse(ALERT);
    let teams: Value = parse(
        &renderer
            .render("teams", &input(&event, Some(&alert), None, "teams"))
            .unwrap()
            .body,
    );
    assert_eq!(
        teams["attachments"][0]["content"]["body"][0]["color"],
        "Attention"
    );
    let mm: Value = parse(
        &renderer
            .render(
                "mattermost",
                &input(&event, Some(&alert), None, "mattermost"),
            )
            .unwrap()
            .body,
    );
    assert_eq!(mm["attachments"][0]["color"], "#D13438");
    assert_eq!(mm["attachments"][0]["ts"], 1736863617);
    let minimal = parse(ALERT_MINIMAL);
    let teams: Value = parse(
        &renderer
            .render("teams", &input(&event, Some(&minimal), None, "teams"))
            .unwrap()
            .body,
    );
    assert_eq!(
        teams["attachments"][0]["content"]["body"][0]["color"],
        "Good"
    );
}

#[test]
fn hostile_data_cannot_break_the_json_or_run_as_template() {
    let renderer = builtin_renderer();
    let event = parse(EVENT_CREATED);
    let hostile = parse(ALERT_HOSTILE);
    // The webhook envelope carries the alert unchanged, Jinja-like text included.
    let out = renderer
        .render("webhook", &input(&event, Some(&hostile), None, "webhook"))
        .unwrap();
    let v: Value = parse(&out.body);
    assert_eq!(v["alert"], hostile);
    assert_eq!(v["event"], event);
    assert_eq!(v["enriched"], true);
    assert!(v["alert"]["details"]
        .as_str()
        .is_some_and(|d| d.contains("{{ jinja }}")));

    // A title that looks like a template prints literally, everywhere.
    let mut alert = parse(ALERT);
    alert["title"] = json!("{{ 7*7 }} {% if true %}x{% endif %} \"quoted\" \\ back\nslash");
    for kind in TargetKind::ALL {
        let target = kind.as_str();
        let out = renderer
            .render(target, &input(&event, Some(&alert), None, target))
            .unwrap();
        // Markdown targets escape the `*`; the braces stay.
        assert!(
            out.body.contains("{{ 7*7 }}") || out.body.contains("{{ 7\\\\*7 }}"),
            "{target}: {}",
            out.body
        );
        check_output(kind, &out.body, target);
    }

    // Slack: the hostile title keeps its text but cannot ping.
    let out = renderer
        .render("slack", &input(&event, Some(&hostile), None, "slack"))
        .unwrap();
    let v: Value = parse(&out.body);
    assert!(
        v["text"]
            .as_str()
            .is_some_and(|t| t.contains("&lt;!channel&gt;")),
        "{}",
        v["text"]
    );
    // Long fields were cut with an ellipsis, not dropped.
    let details = v["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "section" && b["text"].is_object())
        .unwrap();
    assert!(details["text"]["text"]
        .as_str()
        .is_some_and(|t| t.ends_with('…')));
}

#[test]
fn huge_alerts_are_shrunk_to_the_limit() {
    let renderer = builtin_renderer();
    let event = parse(EVENT_CREATED);
    let mut alert = parse(ALERT_HOSTILE);
    let big = "🚨👩‍💻 ".repeat(200_000);
    alert["title"] = json!(big);
    alert["rule"]["name"] = json!(big);
    alert["entity"]["name"] = json!(big);
    for kind in TargetKind::ALL {
        let target = kind.as_str();
        let out = renderer
            .render(target, &input(&event, Some(&alert), None, target))
            .unwrap_or_else(|e| panic!("{target}: {e}"));
        check_output(kind, &out.body, target);
        assert!(
            out.body.contains("/operations/alerts/ALEY4fqz8moo"),
            "{target}: link lost"
        );
    }
}

/// Issue 16: a hostile *event* (short id, uuid, action, type, `updated`, metadata), not only a
/// hostile alert, is escaped by every kind in every place it is shown.
#[test]
fn hostile_events_are_escaped_in_every_kind() {
    let renderer = builtin_renderer();
    for (case, event, alert, error) in hostile_event_cases() {
        for kind in TargetKind::ALL {
            let target = kind.as_str();
            let name = format!("{target}/{case}");
            let out = renderer
                .render(target, &input(&event, alert.as_ref(), error, target))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(out.fallback, None, "{name}");
            check_output(kind, &out.body, &name);
            assert_no_live_markup(kind, &out.body, &name);
            // Escaped, not dropped: the reader still sees the alert's id (a long hostile type
            // may push it out of a cut heading, hence alerts only).
            if event["type"] == "alert" {
                assert!(
                    out.body.contains("evil.example/login"),
                    "{name}: short id dropped"
                );
            }
            if kind == TargetKind::Webhook {
                assert_eq!(
                    parse(&out.body)["event"],
                    event,
                    "{name}: event not verbatim"
                );
            }
        }
    }
    // The alert link carries the hostile short id percent-encoded, as one path segment.
    let event = parse(EVENT_HOSTILE);
    let link = alert_link(&event, APP_URL).expect("alert link");
    let segment = link
        .strip_prefix("https://app.sekoia.io/operations/alerts/")
        .expect("link to the app");
    assert!(
        segment.starts_with("%5BOpen%20alert%20in%20SEKOIA.IO%5D%28https%3A%2F%2Fevil"),
        "{link}"
    );
    assert!(
        segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"%-._~".contains(&b)),
        "{link}"
    );
}

#[test]
fn mattermost_overrides_come_from_the_target() {
    let extra = r#"
        [targets.mm2]
        kind = "mattermost"
        url = "https://example.invalid/hooks/y"
        channel = "soc-alerts"
        username = "SEKOIA"
        icon_url = "https://app.sekoia.io/favicon.ico"
    "#;
    let renderer = Renderer::new(&settings(extra, Path::new("."))).unwrap();
    let event = parse(EVENT_CREATED);
    let alert = parse(ALERT);
    let v: Value = parse(
        &renderer
            .render("mm2", &input(&event, Some(&alert), None, "mm2"))
            .unwrap()
            .body,
    );
    assert_eq!(v["channel"], "soc-alerts");
    assert_eq!(v["username"], "SEKOIA");
    assert_eq!(v["icon_url"], "https://app.sekoia.io/favicon.ico");
    assert_eq!(
        v["attachments"][0]["title_link"],
        "https://app.sekoia.io/operations/alerts/ALEY4fqz8moo"
    );
    let v: Value = parse(
        &renderer
            .render(
                "mattermost",
                &input(&event, Some(&alert), None, "mattermost"),
            )
            .unwrap()
            .body,
    );
    assert!(
        v.get("channel").is_none() && v.get("username").is_none() && v.get("icon_url").is_none()
    );
}

#[test]
fn links_only_for_alerts_with_a_short_id() {
    let event = parse(EVENT_CREATED);
    assert_eq!(
        alert_link(&event, "https://app.sekoia.io/").as_deref(),
        Some("https://app.sekoia.io/operations/alerts/ALEY4fqz8moo")
    );
    assert_eq!(alert_link(&parse(EVENT_PROPOSAL), APP_URL), None);
    assert_eq!(
        alert_link(&json!({"type": "alert", "attributes": {}}), APP_URL),
        None
    );
    assert_eq!(
        alert_link(
            &json!({"type": "alert", "attributes": {"short_id": "a/../b?c"}}),
            APP_URL
        )
        .as_deref(),
        Some("https://app.sekoia.io/operations/alerts/a%2F..%2Fb%3Fc")
    );
}

#[test]
fn console_is_readable_text() {
    let renderer = builtin_renderer();
    let event = parse(EVENT_CREATED);
    let mut alert = parse(ALERT);
    alert["title"] = json!("beacon \x1b[2J cleared?");
    let body = renderer
        .render("console", &input(&event, Some(&alert), None, "console"))
        .unwrap()
        .body;
    assert!(body.lines().count() >= 7, "{body}");
    assert!(
        body.contains("Rule:    Cobalt Strike C2 (Sekoia CTI)"),
        "{body}"
    );
    assert!(body.contains("Created: 2025-01-14 14:06:57 UTC"), "{body}");
    assert!(!body.contains('\x1b'));
    assert!(
        !body.contains("\n\n"),
        "blank lines left by block tags: {body}"
    );
}

// ---- user templates ---------------------------------------------------------------------

struct UserTemplates {
    dir: tempfile::TempDir,
}

impl UserTemplates {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn write(&self, name: &str, source: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let mut f = std::fs::File::create(&path).expect("create template");
        f.write_all(source.as_bytes()).expect("write template");
        path
    }

    /// A renderer whose target `t` uses the built-in template of `kind`.
    fn builtin(&self, kind: TargetKind) -> Renderer {
        let extra =
            format!("[targets.t]\nkind = \"{kind}\"\nurl = \"https://example.invalid/t\"\n");
        Renderer::new(&settings(&extra, self.dir.path())).expect("built-in renderer")
    }

    /// A renderer whose target `t` (of `kind`) uses the template file `name` (relative, so it
    /// also exercises `Settings::resolve`).
    fn renderer(&self, kind: &str, name: &str) -> Result<Renderer, RenderError> {
        let extra = format!("[targets.t]\nkind = \"{kind}\"\nurl = \"https://example.invalid/t\"\ntemplate = \"{name}\"\n");
        Renderer::new(&settings(&extra, self.dir.path()))
    }
}

#[test]
fn a_working_user_template_is_used() {
    let t = UserTemplates::new();
    t.write(
        "mine.j2",
        "{\"text\": {{ \"Alert: \" ~ alert.title }}, \"x\": {{ alert.similar }}}\n",
    );
    let renderer = t.renderer("slack", "mine.j2").unwrap();
    let event = parse(EVENT_CREATED);
    let hostile = parse(ALERT_HOSTILE);
    let out = renderer
        .render("t", &input(&event, Some(&hostile), None, "t"))
        .unwrap();
    assert_eq!(out.fallback, None);
    let v: Value = parse(&out.body);
    assert_eq!(
        v["text"].as_str(),
        Some(format!("Alert: {}", hostile["title"].as_str().unwrap()).as_str())
    );
    assert_eq!(v["x"], 4294967296u64);
    assert_eq!(renderer.fallback_count(), 0);
    assert_eq!(
        renderer
            .render_strict("t", &input(&event, Some(&hostile), None, "t"))
            .unwrap(),
        out.body
    );
}

#[test]
fn user_template_field_limits_are_enforced_not_rejected() {
    let t = UserTemplates::new();
    t.write("long.j2", "{\"text\": \"x\", \"blocks\": [{\"type\": \"header\", \"text\": {\"type\": \"plain_text\", \"text\": {{ alert.details }}}}]}");
    let renderer = t.renderer("slack", "long.j2").unwrap();
    let event = parse(EVENT_CREATED);
    let hostile = parse(ALERT_HOSTILE);
    let out = renderer
        .render("t", &input(&event, Some(&hostile), None, "t"))
        .unwrap();
    assert_eq!(out.fallback, None);
    let v: Value = parse(&out.body);
    assert_eq!(chars(&v["blocks"][0]["text"]["text"]), 150);
}

/// Each broken template falls back to the built-in of its kind, says why, and is counted.
#[test]
fn broken_user_templates_fall_back_to_the_builtin() {
    let cases: [(&str, &str, &str, &str); 6] = [
        ("teams", "runtime.j2", "{\"type\": \"message\", \"attachments\": {{ nope(1) }}}", "runtime.j2"),
        ("slack", "invalid.j2", "{\"text\": {{ alert.title }}", "invalid JSON"),
        ("teams", "big.j2", "{\"type\": \"message\", \"attachments\": [{\"contentType\": \"text/plain\", \"content\": \"{% for i in range(3000) %}xxxxxxxxxx{% endfor %}\"}]}", "over the teams limit"),
        ("slack", "shape.j2", "{\"hello\": {{ alert.title }}}", "Slack needs"),
        ("chime", "loop.j2", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{\"Content\": \"x\"}", "loop.j2"),
        ("console", "text.j2", "{% for i in range(20000) %}xxxxxxxxxx{% endfor %}", "over the console limit"),
    ];
    let event = parse(EVENT_CREATED);
    let alert = parse(ALERT);
    for (kind, file, source, expect) in cases {
        let t = UserTemplates::new();
        t.write(file, source);
        let renderer = t
            .renderer(kind, file)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let out = renderer
            .render("t", &input(&event, Some(&alert), None, "t"))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let reason = out
            .fallback
            .clone()
            .unwrap_or_else(|| panic!("{file}: no fallback"));
        assert!(reason.contains(expect), "{file}: {reason}");
        assert_eq!(renderer.fallback_count(), 1, "{file}");
        let kind = filters::parse_kind(kind).unwrap();
        check_output(kind, &out.body, file);
        let builtin = UserTemplates::new()
            .builtin(kind)
            .render("t", &input(&event, Some(&alert), None, "t"))
            .unwrap();
        assert_eq!(out.body, builtin.body, "{file}: not the built-in output");
        assert!(
            renderer
                .render_strict("t", &input(&event, Some(&alert), None, "t"))
                .is_err(),
            "{file}"
        );
        // Counted every time.
        renderer
            .render("t", &input(&event, Some(&alert), None, "t"))
            .unwrap();
        assert_eq!(renderer.fallback_count(), 2, "{file}");
    }
}

#[test]
fn a_user_template_that_does_not_compile_is_a_startup_error() {
    let t = UserTemplates::new();
    t.write(
        "broken.json.j2",
        "{\n  \"text\": {{ alert.title }},\n  {% if alert %}\n}\n",
    );
    let err = t.renderer("slack", "broken.json.j2").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RenderError::Compile { .. }), "{msg}");
    assert!(
        msg.contains("broken.json.j2") && msg.contains("line"),
        "{msg}"
    );

    let t = UserTemplates::new();
    t.write("syntax.j2", "{\"text\": \"a\"}\n{{ alert.title }\n");
    let msg = t.renderer("slack", "syntax.j2").unwrap_err().to_string();
    assert!(msg.contains("syntax.j2 line 2"), "{msg}");

    let msg = UserTemplates::new()
        .renderer("slack", "missing.j2")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("missing.j2") && msg.contains("target t"),
        "{msg}"
    );
}

#[test]
fn the_same_file_serves_a_console_and_a_json_target() {
    let t = UserTemplates::new();
    t.write("both.j2", "{\"text\": {{ alert.title }}}");
    let extra = "[targets.a]\nkind = \"slack\"\nurl = \"https://example.invalid/a\"\ntemplate = \"both.j2\"\n[targets.b]\nkind = \"console\"\ntemplate = \"both.j2\"\n";
    let renderer = Renderer::new(&settings(extra, t.dir.path())).unwrap();
    let event = parse(EVENT_CREATED);
    let alert = parse(ALERT);
    let a = renderer
        .render("a", &input(&event, Some(&alert), None, "a"))
        .unwrap();
    assert_eq!(a.body, r#"{"text":"Cobalt Strike beacon HTTP traffic"}"#);
    let b = renderer
        .render("b", &input(&event, Some(&alert), None, "b"))
        .unwrap();
    assert_eq!(b.body, r#"{"text": Cobalt Strike beacon HTTP traffic}"#);
}

#[test]
fn unknown_target_is_an_error() {
    let renderer = builtin_renderer();
    let event = parse(EVENT_CREATED);
    assert!(matches!(
        renderer.render("nope", &input(&event, None, None, "nope")),
        Err(RenderError::UnknownTarget(_))
    ));
}

#[test]
fn filters_work_in_templates() {
    let t = UserTemplates::new();
    t.write(
        "f.j2",
        r#"{"a": {{ "abcdef"|truncate_chars(4) }}, "b": {{ "<!here> @here"|md_escape("slack") }}, "b2": {{ "<x>"|md_escape }}, "c": {{ "@here"|md_escape("mattermost") }},
           "d": {{ alert.urgency|urgency_color }}, "e": {{ alert.urgency|urgency_label }}, "f": {{ urgency_label(85) }},
           "g": {{ alert.urgency|urgency_text }}, "h": {{ alert.created_at|format_time }}, "i": {{ 30|urgency_color("teams") }},
           "j": {{ alert.urgency|urgency_value }}, "k": {{ none|truncate_chars(3) }}}"#,
    );
    let renderer = t.renderer("webhook", "f.j2").unwrap();
    let event = parse(EVENT_CREATED);
    let alert = parse(ALERT);
    let out = renderer
        .render("t", &input(&event, Some(&alert), None, "t"))
        .unwrap();
    assert_eq!(out.fallback, None);
    let v: Value = parse(&out.body);
    assert_eq!(v["a"], "abc…");
    assert_eq!(v["b"], "&lt;!here&gt; @\u{200B}here");
    assert_eq!(v["b2"], "<x>", "webhook bodies are not markup");
    assert_eq!(v["c"], "@\u{200B}here");
    assert_eq!(v["d"], "#D13438");
    assert_eq!(v["e"], "Major");
    assert_eq!(v["f"], "Urgent");
    assert_eq!(v["g"], "Major (70)");
    assert_eq!(v["h"], "2025-01-14 14:06:57 UTC");
    assert_eq!(v["i"], "Accent");
    assert_eq!(v["j"], 70);
    assert!(v["k"].is_null());
}

// ---- golden files -----------------------------------------------------------------------

/// The exact payload of every built-in template for the main cases, kept in
/// `src/render/snapshots/` so a change to a template shows up in review as a diff of what
/// users will see. Regenerate with `UPDATE_SNAPSHOTS=1 cargo test --lib render`.
#[test]
fn builtin_payloads_match_the_snapshots() {
    let renderer = builtin_renderer();
    let created = parse(EVENT_CREATED);
    let updated = parse(EVENT_UPDATED);
    let alert = parse(ALERT);
    let minimal = parse(ALERT_MINIMAL);
    let hostile = parse(ALERT_HOSTILE);
    let deleted = deleted_event();
    let proposal = parse(EVENT_PROPOSAL);
    let hostile_events = hostile_event_cases();
    let mut cases: Vec<(&str, &Value, Option<&Value>, Option<&str>)> = vec![
        ("created", &created, Some(&alert), None),
        ("updated-minimal", &updated, Some(&minimal), None),
        ("created-hostile", &created, Some(&hostile), None),
        (
            "unenriched",
            &created,
            None,
            Some("Alert API answered 403 (the API key needs SIC_READ_ALERTS)"),
        ),
        ("deleted", &deleted, None, None),
        ("content-proposal", &proposal, None, None),
    ];
    for (case, event, alert, error) in &hostile_events {
        cases.push((case, event, alert.as_ref(), *error));
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/render/snapshots");
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut stale = Vec::new();
    for kind in TargetKind::ALL {
        let target = kind.as_str();
        for &(case, event, alert, error) in &cases {
            let body = renderer
                .render(target, &input(event, alert, error, target))
                .unwrap()
                .body;
            let (text, ext) = if kind == TargetKind::Console {
                (format!("{body}\n"), "txt")
            } else {
                let v: Value = parse(&body);
                (
                    format!("{}\n", serde_json::to_string_pretty(&v).unwrap()),
                    "json",
                )
            };
            let path = dir.join(format!("{target}-{case}.{ext}"));
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &text).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(stale.is_empty(), "payloads differ from the snapshots (rerun with UPDATE_SNAPSHOTS=1 and review the diff): {stale:#?}");
}

#[test]
fn builtin_digests_render_hostile_items_within_every_kinds_rules() {
    let mut text = String::from(
        "[[hooks]]\nname = \"soc\"\nid = \"67a7472b-b43c-415d-b1ce-c135fb1dfb0e\"\ntargets = [\"slack\"]\n",
    );
    let kinds: Vec<TargetKind> = TargetKind::ALL
        .into_iter()
        .filter(|k| k.spec().builtin_digest_template().is_some())
        .collect();
    assert_eq!(kinds.len(), 7);
    for kind in &kinds {
        text.push_str(&format!(
            "[targets.{kind}]\nkind = \"{kind}\"\nurl = \"https://x.invalid/api/webhooks/1?sig=a&key=k&token=t\"\n"
        ));
    }
    let dir = std::path::Path::new("/nonexistent");
    let settings = load_str(&text, &dir.join("c.toml"), dir, &Env::new()).expect("config");
    let renderer = Renderer::new(&settings).expect("renderer");
    let hostile = "<!channel> @here @all [x](https://evil.test) *bold* <https://evil.test|y>";
    // As many alerts as the kind holds (at most the default 20), with the longest values
    // the templates let through.
    let items: Vec<Value> = (0..20)
        .map(|i| {
            let event = json!({"type": "alert", "action": "created",
                "attributes": {"short_id": format!("AL{i}Z"), "uuid": "u"}});
            let alert = json!({"title": format!("{hostile} {}", "t".repeat(300)), "urgency": {"current_value": i * 2},
                "rule": {"name": hostile}, "entity": {"name": hostile}});
            digest_item(&event, Some(&alert), &[format!("status: {hostile} → Closed")], "https://app.sekoia.io")
        })
        .collect();
    for kind in kinds {
        let n = kind.spec().digest_items_cap().min(20);
        let input = DigestInput {
            items: &items[..n],
            hook_name: "soc",
            target_name: kind.as_str(),
            app_url: "https://app.sekoia.io",
        };
        let body = renderer
            .render_digest_strict(kind.as_str(), &input)
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(body.len() <= kind.spec().max_body_bytes(), "{kind}");
        assert!(
            !body.contains("[x](https://evil.test)"),
            "{kind}: a link was injected"
        );
        if kind == TargetKind::Slack {
            assert!(
                !body.contains("<!channel>"),
                "slack: a mention was injected"
            );
        }
        for i in 0..n {
            assert!(
                body.contains(&format!("AL{i}Z")),
                "{kind}: AL{i} is missing ({} bytes)",
                body.len()
            );
        }
        assert!(v.is_object());
    }
}

/// Templates see exactly what `when` expressions see: the borrowed context serializes to
/// `context_json`.
#[test]
fn the_template_context_is_the_routing_context() {
    let event: Value = serde_json::from_str(include_str!(
        "../../tests/fixtures/webhook-alert-created.json"
    ))
    .unwrap();
    let alert: Value =
        serde_json::from_str(include_str!("../../tests/fixtures/alert.json")).unwrap();
    let changes = vec!["status: A → B".to_string()];
    let input = RenderInput {
        changes: &changes,
        event: &event,
        alert: Some(&alert),
        enrichment_error: Some("x"),
        hook_name: "soc",
        target_name: "t",
        app_url: "https://app.sekoia.io/",
    };
    let target = json!({"name": "t", "kind": "slack"});
    let borrowed = serde_json::to_value(super::ContextRef::new(&input, &target)).unwrap();
    assert_eq!(borrowed, context_json(&input, target.clone()));
}
