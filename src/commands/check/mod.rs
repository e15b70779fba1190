//! `check`: everything that can be wrong before SEKOIA.IO calls, reported at once.
//!
//! 1. the config loads (syntax, unknown keys, `${VAR}`s, cross-field rules);
//! 2. every user template compiles (file and line);
//! 3. every `when` compiles (hook and route) and evaluates without error on the samples;
//! 4. every target's template renders every sample ([`samples::all`]) into a body its kind
//!    accepts: JSON, the envelope, the Adaptive Card schema (Teams), Block Kit structure
//!    (Slack), the hard size limits (Chime 4 096 bytes, …). Values the relay would cut to a
//!    field limit (Slack header 150 characters, Mattermost text 4 000, …) are warnings.
//!
//! Warnings (not failures): hook ids shorter than 32 characters, Teams URLs without `sig=`,
//! targets no hook uses, and (with `public_url`) the demo hook id and a public `/metrics`.
//! Nothing here touches the network or the store; `check --online` adds the API key check of
//! [`super::verify`].

use std::path::Path;

use serde_json::Value;

use super::samples::{self, Sample};
use crate::configuration::{self, ConfigError, Settings};
use crate::domain::TargetKind;
use crate::render::{limits, RenderError, RenderInput, Renderer};
use crate::routing::Router;
use crate::targets::Output;

mod report;
mod warnings;

pub use report::Report;
use report::{Finding, Grouped};
use warnings::file_mode;
pub use warnings::{
    exposure_warnings, permission_warning, settings_warnings, DEMO_HOOK_ID, MIN_HOOK_ID_CHARS,
};

/// Run every check on the config file at `path`.
pub fn run(path: &Path) -> Report {
    match configuration::load(path) {
        Ok(settings) => {
            let mut report = check_settings(&settings);
            if let Some(w) = file_mode(path).and_then(|m| permission_warning(path, m, &settings)) {
                report.warnings.push(w);
            }
            report
        }
        Err(e) => Report {
            problems: config_problems(path, &e),
            ..Report::default()
        },
    }
}

/// A config error as one line per problem.
fn config_problems(path: &Path, e: &ConfigError) -> Vec<String> {
    match e {
        ConfigError::Invalid(all) => all
            .iter()
            .map(|p| format!("{}: {p}", path.display()))
            .collect(),
        other => vec![format!("{}: {}", path.display(), super::error_chain(other))],
    }
}

/// Every check after the config has loaded.
pub fn check_settings(settings: &Settings) -> Report {
    let mut report = Report {
        warnings: settings_warnings(settings),
        ..Report::default()
    };

    // Compile each user template on its own, so every broken file is reported, not the first.
    let mut usable = settings.clone();
    usable.hooks.clear();
    for (name, target) in &settings.targets {
        if target.template.is_none() {
            continue;
        }
        let mut alone = usable.clone();
        alone.targets.retain(|n, _| n == name);
        if let Err(e) = Renderer::new(&alone) {
            report.problems.push(format!("target {name}: {e}"));
            usable.targets.remove(name);
        }
    }

    let router = match Router::new(settings) {
        Ok(r) => Some(r),
        Err(e) => {
            report
                .problems
                .extend(e.0.iter().map(|w| format!("routing: {w}")));
            None
        }
    };

    let samples = samples::all();
    match Renderer::new(&usable) {
        Ok(renderer) => {
            for (name, target) in &usable.targets {
                let mut grouped = Grouped::default();
                let mut warned = Grouped::default();
                for sample in &samples {
                    let found =
                        check_target(settings, &renderer, name, target.kind, sample, &mut warned);
                    for f in found {
                        grouped.add(f, &sample.name);
                    }
                }
                report.problems.extend(
                    grouped
                        .into_lines(samples.len())
                        .into_iter()
                        .map(|p| format!("target {name} ({}): {p}", target.kind)),
                );
                report.warnings.extend(
                    warned
                        .into_lines(samples.len())
                        .into_iter()
                        .map(|w| format!("target {name} ({}): {w}", target.kind)),
                );
            }
        }
        Err(e) => report.problems.push(format!("templates: {e}")),
    }

    if let Some(router) = &router {
        let mut grouped = Grouped::default();
        for sample in &samples {
            for hook in &settings.hooks {
                let input = sample_input(settings, sample, &hook.name, "");
                for e in router.evaluation_errors(&hook.name, &input) {
                    grouped.add(e.into(), &sample.name);
                }
            }
        }
        report.problems.extend(
            grouped
                .into_lines(samples.len())
                .into_iter()
                .map(|p| format!("routing: {p}")),
        );
    }

    // Each digest template renders a sample digest, as a storm would.
    if let Ok(renderer) = Renderer::new(&usable) {
        let items = samples::digest_items(&settings.sekoia.app_url);
        for (name, t) in &usable.targets {
            if t.digest_after() == 0 || !renderer.has_digest(name) {
                continue;
            }
            let input = crate::render::DigestInput {
                items: &items,
                hook_name: hook_for(settings, name),
                target_name: name,
                app_url: &settings.sekoia.app_url,
            };
            if let Err(e) = renderer.render_digest_strict(name, &input) {
                report
                    .problems
                    .push(format!("target {name} ({}): digest: {e}", t.kind));
            }
        }
    }

    for (name, t) in &settings.targets {
        if crate::chatapp::buttons_on(t, &settings.server.public_url) {
            report.notes.push(format!(
                "targets.{name}: triage buttons on; whether each hook's API key may change alerts (SIC_WRITE_ALERTS_WORKFLOW, SIC_WRITE_ALERTS_COMMENTS) cannot be known offline: the first refusal is logged and told to the presser"
            ));
        }
    }

    report.summary = format!(
        "{} target(s), {} hook(s), {} samples per template",
        settings.targets.len(),
        settings.hooks.len(),
        samples.len()
    );
    report
}

fn sample_input<'a>(
    settings: &'a Settings,
    sample: &'a Sample,
    hook: &'a str,
    target: &'a str,
) -> RenderInput<'a> {
    let app_url = settings
        .hook_by_name(hook)
        .map(|h| h.app_url(&settings.sekoia))
        .unwrap_or(&settings.sekoia.app_url);
    RenderInput {
        changes: &[],
        event: &sample.event,
        alert: sample.alert.as_ref(),
        enrichment_error: sample.enrichment_error,
        hook_name: hook,
        target_name: target,
        app_url,
    }
}

/// The first hook that may reach `target` (its name and `app_url` go in the context).
fn hook_for<'a>(settings: &'a Settings, target: &str) -> &'a str {
    settings
        .hooks
        .iter()
        .find(|h| h.candidate_targets().iter().any(|t| t == target))
        .map(|h| h.name.as_str())
        .unwrap_or("sample")
}

/// Problems of one target on one sample; field-limit cuts go to `warned`.
fn check_target(
    settings: &Settings,
    renderer: &Renderer,
    target: &str,
    kind: TargetKind,
    sample: &Sample,
    warned: &mut Grouped,
) -> Vec<Finding> {
    let hook = hook_for(settings, target);
    let input = sample_input(settings, sample, hook, target);
    let template = renderer.template_name(target).unwrap_or_default();
    let body = match renderer.render_strict(target, &input) {
        Ok(body) => body,
        Err(RenderError::InvalidJson {
            template,
            line,
            column,
            detail,
        }) => {
            // Show the offending output line: the template line is easy to find from it.
            let text = renderer
                .render_raw(target, &input)
                .ok()
                .and_then(|raw| raw.lines().nth(line.saturating_sub(1)).map(str::to_string))
                .unwrap_or_default();
            let detail = detail.split(" at line ").next().unwrap_or_default();
            return vec![Finding {
                message: format!("template {template} renders invalid JSON"),
                detail: Some(format!(
                    "{detail} at output line {line}, column {column}: {}",
                    crate::render::truncate_chars(text.trim(), 160)
                )),
            }];
        }
        Err(RenderError::TooLarge {
            template,
            kind,
            size,
            limit,
        }) => {
            return vec![Finding {
                message: format!(
                    "template {template} renders a body over the {kind} limit of {limit} bytes"
                ),
                detail: Some(format!("{size} bytes")),
            }];
        }
        Err(e) => return vec![e.to_string().into()],
    };
    if kind.spec().output() != Output::HttpJson {
        return Vec::new();
    }
    let Ok(value) = serde_json::from_str::<Value>(&body) else {
        return vec![format!("template {template}: the final body is not JSON").into()];
    };
    if let Ok(raw) = renderer.render_raw(target, &input) {
        if let Ok(mut raw_value) = serde_json::from_str::<Value>(&raw) {
            let before = raw_value.clone();
            limits::enforce_field_limits(kind, &mut raw_value);
            for path in changed_paths(&before, &raw_value, "") {
                warned.add(
                    format!(
                        "template {template}: {path} is over the {kind} limit and is cut by the relay (use truncate_chars to choose where)"
                    )
                    .into(),
                    &sample.name,
                );
            }
        }
    }
    kind.spec()
        .body_problems(&value)
        .into_iter()
        .map(|p| format!("template {template}: {p}").into())
        .collect()
}

/// JSON paths where `a` and `b` differ (strings cut, lists shortened).
fn changed_paths(a: &Value, b: &Value, at: &str) -> Vec<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x
            .iter()
            .filter_map(|(k, v)| y.get(k).map(|w| (k, v, w)))
            .flat_map(|(k, v, w)| {
                let p = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                changed_paths(v, w, &p)
            })
            .collect(),
        (Value::Array(x), Value::Array(y)) => {
            let mut out: Vec<String> = x
                .iter()
                .zip(y.iter())
                .enumerate()
                .flat_map(|(i, (v, w))| changed_paths(v, w, &format!("{at}[{i}]")))
                .collect();
            if x.len() != y.len() {
                out.push(format!("{at} ({} items, {} kept)", x.len(), y.len()));
            }
            out
        }
        (Value::String(x), Value::String(y)) if x != y => {
            vec![format!("{at} ({} characters)", x.chars().count())]
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::{load_str, Env};
    use serde_json::json;

    fn settings(text: &str) -> Settings {
        load_str(text, Path::new("c.toml"), Path::new("."), &Env::new()).expect("config")
    }

    #[test]
    fn builtin_templates_pass_every_check() {
        let s = settings(
            r#"
            [targets.teams]
            kind = "teams"
            url = "https://x.invalid/workflows/1?api-version=1&sig=abc"
            [targets.slack]
            kind = "slack"
            url = "https://x.invalid/s"
            [targets.mattermost]
            kind = "mattermost"
            url = "https://x.invalid/m"
            [targets.chime]
            kind = "chime"
            url = "https://x.invalid/c"
            [targets.webhook]
            kind = "webhook"
            url = "https://x.invalid/w"
            [targets.console]
            kind = "console"
            [[hooks]]
            name = "soc"
            id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
            targets = ["teams", "slack", "mattermost", "chime", "webhook", "console"]
            when = "alert.rule.name != 'Noisy rule'"
            "#,
        );
        let r = check_settings(&s);
        assert!(r.ok(), "{}", r.to_text());
        assert!(r.warnings.is_empty(), "{}", r.to_text());
    }

    #[test]
    fn copies_of_the_builtin_templates_pass_as_user_templates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names: Vec<&str> = TargetKind::ALL.iter().map(|k| k.as_str()).collect();
        let mut text = format!(
            "[[hooks]]\nname = \"soc\"\nid = \"67a7472b-b43c-415d-b1ce-c135fb1dfb0e\"\ntargets = {names:?}\n",
        );
        for kind in TargetKind::ALL {
            let (name, source) = crate::render::builtin_template(kind);
            let file = name.trim_start_matches("builtin/");
            std::fs::write(dir.path().join(file), source).expect("write");
            let url = if kind.spec().output() == Output::StdoutText {
                String::new()
            } else if kind == TargetKind::SlackApp {
                "token = \"xoxb-1-2-x\"\nchannel = \"C0123456789\"\nsigning_secret = \"8f742231b10e8888abcd99aaabbb85a5\"\n".to_string()
            } else if kind == TargetKind::MattermostApp {
                "url = \"https://x.invalid\"\ntoken = \"abcdefghijklmnopqrstuvwxyz\"\nchannel_id = \"abcdefghijklmnopqrstuvwxyz\"\n".to_string()
            } else {
                // A URL every kind's checks accept (Teams' sig, Google Chat's key and token,
                // Discord's path).
                "url = \"https://x.invalid/api/webhooks/1?sig=a&key=k&token=t\"\n".to_string()
            };
            let key = if kind.spec().uses_routing_key() {
                "routing_key = \"0123456789abcdef0123456789abcdef\"\n"
            } else {
                ""
            };
            text.push_str(&format!(
                "[targets.{kind}]\nkind = \"{kind}\"\n{url}{key}template = \"{file}\"\n"
            ));
        }
        let s =
            load_str(&text, &dir.path().join("c.toml"), dir.path(), &Env::new()).expect("config");
        let r = check_settings(&s);
        // Mattermost buttons need server.public_url, which this config leaves out.
        assert!(
            r.ok() && r.warnings.len() == 1 && r.warnings[0].contains("server.public_url"),
            "{}",
            r.to_text()
        );
    }

    /// The worked examples of the README's "Templates" section pass `check`, so the README
    /// cannot drift from what the relay accepts.
    #[test]
    fn readme_template_examples_pass_check() {
        let readme = include_str!("../../../README.md");
        let blocks: Vec<&str> = readme
            .split("```jinja\n")
            .skip(1)
            .filter_map(|b| b.split("\n```").next())
            .collect();
        let kinds = [
            "teams",
            "slack",
            "mattermost",
            "chime",
            "webhook",
            "console",
        ];
        assert_eq!(
            blocks.len(),
            kinds.len(),
            "one example per kind, in this order"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let mut text = format!(
            "[[hooks]]\nname = \"soc\"\nid = \"67a7472b-b43c-415d-b1ce-c135fb1dfb0e\"\ntargets = {kinds:?}\n"
        );
        for (kind, source) in kinds.iter().zip(&blocks) {
            std::fs::write(dir.path().join(format!("{kind}.j2")), source).expect("write");
            let url = if *kind == "console" {
                ""
            } else {
                "url = \"https://x.invalid/1?sig=a\"\n"
            };
            text.push_str(&format!(
                "[targets.{kind}]\nkind = \"{kind}\"\n{url}template = \"{kind}.j2\"\n"
            ));
        }
        let s =
            load_str(&text, &dir.path().join("c.toml"), dir.path(), &Env::new()).expect("config");
        let r = check_settings(&s);
        assert!(r.ok() && r.warnings.is_empty(), "{}", r.to_text());

        // And every one reads well on every sample `check` renders: a report (no alert, no
        // short id) or an unenriched alert must not show "Alert " or " created : (no details)".
        let renderer = Renderer::new(&s).expect("templates");
        let mut bad = Vec::new();
        for kind in kinds {
            for sample in samples::all() {
                let input = sample_input(&s, &sample, "soc", kind);
                let body = renderer.render_strict(kind, &input).expect("renders");
                let texts = if kind == "console" {
                    vec![body]
                } else {
                    let mut leaves = Vec::new();
                    string_leaves(&serde_json::from_str(&body).expect("JSON"), &mut leaves);
                    leaves
                };
                for t in texts {
                    if let Some(why) = reads_badly(&t) {
                        bad.push(format!("{kind} / {}: {why}: {t:?}", sample.name));
                    }
                }
            }
        }
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }

    fn string_leaves(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|i| string_leaves(i, out)),
            // The webhook example's `raw` is the alert as received: data, not wording.
            Value::Object(m) => m
                .iter()
                .filter(|(k, _)| k.as_str() != "raw")
                .for_each(|(_, i)| string_leaves(i, out)),
            _ => {}
        }
    }

    /// Text a reader would find broken: stray spaces around it or inside, a dangling
    /// separator, a missing value printed as a word.
    fn reads_badly(t: &str) -> Option<&'static str> {
        let stray = t
            .lines()
            .any(|l| !l.is_empty() && (l.trim() != l || l.contains("  ")));
        if t.trim().is_empty() {
            Some("empty")
        } else if stray {
            Some("stray spaces")
        } else if t.contains(" :") || t.contains(": (") || t.trim_end().ends_with(':') {
            Some("a dangling separator")
        } else if t
            .split(|c: char| !c.is_alphanumeric())
            .any(|w| matches!(w, "none" | "None" | "undefined" | "null"))
        {
            Some("a missing value printed")
        } else {
            None
        }
    }

    #[test]
    fn type_mismatched_comparisons_are_problems() {
        let s = settings(
            r#"
            [targets.out]
            kind = "console"
            [[hooks]]
            name = "soc"
            id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
            [[hooks.routes]]
            targets = ["out"]
            when = "alert.urgency.current_value >= '50'"
            [[hooks.routes]]
            targets = ["out"]
            when = "alert.rule.name == 42"
            [[hooks.routes]]
            targets = ["out"]
            when = "alert.title > 5"
            "#,
        );
        let r = check_settings(&s);
        assert!(!r.ok());
        let text = r.to_text();
        for expected in [
            "route 1 ([[hooks.routes]] #1): `when` = \"alert.urgency.current_value >= '50'\" fails at run time",
            "compares a number with a string",
            "`alert.rule.name == 42` compares a string with a number",
            "`alert.title > 5` compares a string with a number",
        ] {
            assert!(text.contains(expected), "{expected} missing in:\n{text}");
        }
    }

    #[test]
    fn a_public_url_with_the_demo_hook_or_public_metrics_is_a_warning() {
        let local = format!(
            "[targets.out]\nkind = \"console\"\n[[hooks]]\nname = \"demo\"\nid = \"{DEMO_HOOK_ID}\"\ntargets = [\"out\"]\n"
        );
        assert!(
            exposure_warnings(&settings(&local)).is_empty(),
            "local: the quick start"
        );
        let public = format!("[server]\npublic_url = \"https://x.ngrok-free.app\"\n{local}");
        let w = settings_warnings(&settings(&public)).join("\n");
        assert!(w.contains("hook \"demo\" uses the demo id"), "{w}");
        assert!(w.contains("server.metrics_listen"), "{w}");
        let fixed = public
            .replace(DEMO_HOOK_ID, "0b9a0a9e-3f7c-4a4e-9a8e-2f0c2b9f6a11")
            .replace(
                "[server]\n",
                "[server]\nmetrics_listen = \"127.0.0.1:9100\"\n",
            );
        assert!(exposure_warnings(&settings(&fixed)).is_empty());
    }

    #[test]
    fn world_readable_config_with_secrets_is_a_warning() {
        let s = settings(
            r#"
            [targets.out]
            kind = "console"
            [[hooks]]
            name = "soc"
            id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
            targets = ["out"]
            "#,
        );
        let w = permission_warning(Path::new("config.toml"), 0o100644, &s).expect("warns");
        assert!(w.contains("chmod 600") && w.contains("644"), "{w}");
        assert!(permission_warning(Path::new("config.toml"), 0o100600, &s).is_none());
        assert!(permission_warning(Path::new("config.toml"), 0o100640, &s).is_some());
    }

    #[test]
    fn warnings_for_short_ids_teams_urls_and_unused_targets() {
        let s = settings(
            r#"
            [targets.teams]
            kind = "teams"
            url = "https://secret-host.invalid/workflows/1?api-version=1"
            [targets.idle]
            kind = "console"
            [[hooks]]
            name = "soc"
            id = "short-id"
            targets = ["teams"]
            "#,
        );
        let w = settings_warnings(&s).join("\n");
        assert!(w.contains("hook \"soc\": the id has 8 characters"), "{w}");
        assert!(w.contains("sig="), "{w}");
        assert!(!w.contains("/workflows/1"), "only the host is shown: {w}");
        assert!(w.contains("targets.idle: no hook"), "{w}");
    }

    #[test]
    fn slack_structure_problems() {
        let body = json!({"text": "x", "blocks": [
            {"type": "header", "text": {"type": "mrkdwn", "text": "h"}},
            {"type": "section"},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": ""}]},
            {"type": "bogus"},
            {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open"}}]},
            {"type": "context", "elements": []},
        ]});
        let p = crate::targets::slack::slack_problems(&body).join("\n");
        for expected in [
            "blocks[0].text must be plain_text",
            "blocks[1] needs `text` or `fields`",
            "blocks[2].fields[0] is empty",
            "unknown block type \"bogus\"",
            "blocks[4].elements[0] needs a `url`",
            "blocks[5] needs a non-empty `elements`",
        ] {
            assert!(p.contains(expected), "{expected} missing in:\n{p}");
        }
    }

    #[test]
    fn changed_paths_name_what_was_cut() {
        let a = json!({"text": "abcdef", "blocks": [1, 2, 3], "same": "x"});
        let b = json!({"text": "abc…", "blocks": [1, 2], "same": "x"});
        assert_eq!(
            changed_paths(&a, &b, ""),
            vec![
                "blocks (3 items, 2 kept)".to_string(),
                "text (6 characters)".to_string()
            ]
        );
    }
}
