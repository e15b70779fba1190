//! The Google Chat, Discord, Webex and PagerDuty targets on the real server: what each
//! service's mock received (body, query, headers) and how its answers are handled.

use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(10);
const ALERT_UUID: &str = "5696845f-9ecf-4431-9f0f-48ee0ee2eff1";
const ROUTING_KEY: &str = "R0UT1NGKEY0123456789abcdef012345";

/// One target named `t` of `kind` at `url`, unpaced, the only target of hook `soc`.
fn one_target(kind: &str, url: &str, extra: &str) -> String {
    format!(
        r#"
[targets.t]
kind = "{kind}"
url = "{url}"
rate_limit_per_sec = 0
{extra}

[[hooks]]
name = "soc"
id = "{HOOK_ID}"
targets = ["t"]
"#
    )
}

fn content_type(r: &wiremock::Request) -> Option<&str> {
    r.headers.get("content-type").and_then(|v| v.to_str().ok())
}

/// The Alert API answers `uuid` with `alert.json` carrying `status` (and its stage).
async fn mount_alert_with_status(sekoia: &MockServer, uuid: &str, status: &str, stage: &str) {
    let mut alert = fixture_json("alert.json");
    alert["uuid"] = json!(uuid);
    alert["status"]["name"] = json!(status);
    alert["custom_status"]["label"] = json!(status);
    alert["custom_status"]["stage"] = json!(stage);
    Mock::given(method("GET"))
        .and(path(format!("/v1/sic/alerts/{uuid}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(alert))
        .mount(sekoia)
        .await;
}

fn event(action: &str, uuid: &str) -> Value {
    let mut e = fixture_json("webhook-alert-created.json");
    e["action"] = json!(action);
    e["attributes"]["uuid"] = json!(uuid);
    e
}

#[tokio::test]
async fn google_chat_gets_one_card_per_event_threaded_by_alert() {
    let app = TestApp::spawn_with(&one_target(
        "google_chat",
        "{chat}/v1/spaces/AAAA/messages?key=the-key&token=the-token",
        "",
    ))
    .await;
    mount_alert(&app.sekoia).await;
    Mock::given(method("POST"))
        .and(path("/v1/spaces/AAAA/messages"))
        .and(query_param("key", "the-key"))
        .and(query_param("token", "the-token"))
        .and(query_param(
            "messageReplyOption",
            "REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD",
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"name": "spaces/AAAA/messages/m1", "thread": {"name": "spaces/AAAA/threads/t1"}})),
        )
        .expect(2)
        .mount(&app.chat)
        .await;

    for fixture in ["webhook-alert-created.json", "webhook-alert-updated.json"] {
        assert_eq!(app.post_event(&fixture_json(fixture)).await.status(), 202);
    }
    let got = wait_for(&app.chat, "/v1/spaces/AAAA/messages", 2, WAIT).await;
    assert_eq!(got.len(), 2);
    for r in &got {
        assert_eq!(content_type(r), Some("application/json"));
        let body = body_json(r);
        assert_eq!(body["thread"]["threadKey"], ALERT_UUID, "{body}");
        let card = &body["cardsV2"][0]["card"];
        let text = card.to_string();
        for fact in [
            "Cobalt Strike beacon HTTP traffic",
            "Major (70)",
            "Paris HQ",
            "ALEY4fqz8moo",
        ] {
            assert!(text.contains(fact), "{fact} missing: {text}");
        }
        assert_eq!(
            card.pointer("/sections/1/widgets/0/buttonList/buttons/0/onClick/openLink/url")
                .or_else(|| card
                    .pointer("/sections/2/widgets/0/buttonList/buttons/0/onClick/openLink/url")),
            Some(&json!(
                "https://app.sekoia.test/operations/alerts/ALEY4fqz8moo"
            )),
            "{card}"
        );
    }
    app.chat.verify().await;
}

/// Discord answers 429 once with only a JSON `retry_after`, then 204/200: the relay waited.
#[tokio::test]
async fn discord_gets_an_embed_with_wait_and_its_json_retry_after_is_honoured() {
    let app = TestApp::spawn_with(&one_target("discord", "{chat}/api/webhooks/123/tok", "")).await;
    mount_alert(&app.sekoia).await;
    let throttled = Timed::new(ResponseTemplate::new(429).set_body_json(
        json!({"message": "You are being rate limited.", "retry_after": 0.8, "global": false}),
    ));
    let ok = Timed::new(ResponseTemplate::new(200).set_body_json(json!({"id": "1"})));
    Mock::given(method("POST"))
        .and(path("/api/webhooks/123/tok"))
        .and(query_param("wait", "true"))
        .respond_with(throttled.clone())
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&app.chat)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/webhooks/123/tok"))
        .and(query_param("wait", "true"))
        .respond_with(ok.clone())
        .expect(1)
        .mount(&app.chat)
        .await;

    assert_eq!(
        app.post_event(&fixture_json("webhook-alert-created.json"))
            .await
            .status(),
        202
    );
    let got = wait_for(&app.chat, "/api/webhooks/123/tok", 2, WAIT).await;
    assert_eq!(got.len(), 2);
    let (first, second) = (throttled.arrivals(), ok.arrivals());
    let waited = second[0] - first[0];
    // The test schedule starts at 20 ms and no Retry-After header was sent: only the body's
    // retry_after explains this wait.
    assert!(
        waited >= Duration::from_millis(790),
        "retried after {waited:?}"
    );
    let body = body_json(&got[1]);
    assert_eq!(content_type(&got[1]), Some("application/json"));
    assert_eq!(body["allowed_mentions"], json!({"parse": []}));
    let embed = &body["embeds"][0];
    assert_eq!(embed["color"], json!(0xD13438), "{embed}");
    assert_eq!(
        embed["url"],
        "https://app.sekoia.test/operations/alerts/ALEY4fqz8moo"
    );
    assert!(embed["title"]
        .as_str()
        .is_some_and(|t| t.contains("Cobalt Strike beacon HTTP traffic")));
    let fields = embed["fields"].as_array().expect("fields");
    assert!(fields
        .iter()
        .any(|f| f["name"] == "Urgency" && f["value"] == "Major (70)"));
    app.chat.verify().await;
    let list = app.cli(&["dead-letters", "list"]);
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("no dead letters"),
        "a 429 is not a dead letter"
    );
}

/// created → trigger, Acknowledged → acknowledge, Closed → resolve, Rejected → resolve,
/// deleted → resolve; `dedup_key` is the alert uuid and `routing_key` comes from config.
#[tokio::test]
async fn pagerduty_events_follow_the_alert_status() {
    let app = TestApp::spawn_with(&one_target(
        "pagerduty",
        "{chat}/v2/enqueue",
        &format!("routing_key = \"{ROUTING_KEY}\""),
    ))
    .await;
    let cases = [
        (
            "created",
            "00000000-0000-4000-8000-000000000001",
            "Pending",
            "open",
            "trigger",
        ),
        (
            "updated",
            "00000000-0000-4000-8000-000000000002",
            "Acknowledged",
            "in_progress",
            "acknowledge",
        ),
        (
            "updated",
            "00000000-0000-4000-8000-000000000003",
            "Closed",
            "closed",
            "resolve",
        ),
        (
            "updated",
            "00000000-0000-4000-8000-000000000004",
            "Rejected",
            "closed",
            "resolve",
        ),
    ];
    for (_, uuid, status, stage, _) in cases {
        mount_alert_with_status(&app.sekoia, uuid, status, stage).await;
    }
    Mock::given(method("POST"))
        .and(path("/v2/enqueue"))
        .respond_with(ResponseTemplate::new(202).set_body_json(
            json!({"status": "success", "message": "Event processed", "dedup_key": "x"}),
        ))
        .expect(5)
        .mount(&app.chat)
        .await;

    for (action, uuid, _, _, _) in cases {
        assert_eq!(app.post_event(&event(action, uuid)).await.status(), 202);
    }
    let deleted_uuid = "00000000-0000-4000-8000-000000000005";
    assert_eq!(
        app.post_event(&event("deleted", deleted_uuid))
            .await
            .status(),
        202
    );
    let got = wait_for(&app.chat, "/v2/enqueue", 5, WAIT).await;
    assert_eq!(got.len(), 5);
    let bodies: Vec<Value> = got.iter().map(body_json).collect();
    let by_key = |uuid: &str| {
        bodies
            .iter()
            .find(|b| b["dedup_key"] == uuid)
            .unwrap_or_else(|| panic!("no event for {uuid}: {bodies:#?}"))
    };
    for (_, uuid, _, _, want) in cases {
        let b = by_key(uuid);
        assert_eq!(b["event_action"], want, "{uuid}: {b}");
        assert_eq!(b["routing_key"], ROUTING_KEY);
        assert_eq!(b["payload"]["severity"], "error", "Major (70) → error");
        assert_eq!(b["payload"]["source"], "Paris HQ");
        assert!(b["payload"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("Cobalt Strike beacon HTTP traffic")));
        assert_eq!(
            b["links"][0]["href"],
            "https://app.sekoia.test/operations/alerts/ALEY4fqz8moo"
        );
    }
    let deleted = by_key(deleted_uuid);
    assert_eq!(deleted["event_action"], "resolve");
    assert_eq!(deleted["routing_key"], ROUTING_KEY);
    for r in &got {
        assert_eq!(content_type(r), Some("application/json"));
    }
    app.chat.verify().await;
}

/// 400 (invalid event) is a dead letter at once, PagerDuty's errors kept and the routing key
/// not; 429 pauses and is retried until the 202.
#[tokio::test]
async fn pagerduty_400_is_a_dead_letter_and_429_is_retried() {
    let app = TestApp::spawn_with(&format!(
        r#"
[targets.bad]
kind = "pagerduty"
url = "{{chat}}/bad/enqueue"
routing_key = "{ROUTING_KEY}"
rate_limit_per_sec = 0
[targets.busy]
kind = "pagerduty"
url = "{{chat}}/busy/enqueue"
routing_key = "{ROUTING_KEY}"
rate_limit_per_sec = 0
[[hooks]]
name = "soc"
id = "{HOOK_ID}"
targets = ["bad", "busy"]
"#
    ))
    .await;
    mount_alert_with_status(&app.sekoia, ALERT_UUID, "Pending", "open").await;
    Mock::given(path("/bad/enqueue"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "status": "invalid event",
            "message": "Event object is invalid",
            "errors": ["'payload.summary' is missing or blank"]
        })))
        .expect(1)
        .mount(&app.chat)
        .await;
    Mock::given(path("/busy/enqueue"))
        .respond_with(ResponseTemplate::new(429))
        .up_to_n_times(2)
        .with_priority(1)
        .expect(2)
        .mount(&app.chat)
        .await;
    Mock::given(path("/busy/enqueue"))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({"status": "success"})))
        .expect(1)
        .mount(&app.chat)
        .await;

    assert_eq!(
        app.post_event(&fixture_json("webhook-alert-created.json"))
            .await
            .status(),
        202
    );
    wait_for(&app.chat, "/busy/enqueue", 3, WAIT).await;
    wait_for(&app.chat, "/bad/enqueue", 1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.chat.verify().await;

    let json = app.cli(&["dead-letters", "list", "--json"]);
    let text = String::from_utf8_lossy(&json.stdout).to_string();
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(rows.len(), 1, "{text}");
    assert_eq!(rows[0]["target"], "bad");
    assert!(rows[0]["response"]
        .as_str()
        .is_some_and(|r| r.contains("payload.summary")));
    assert!(
        !text.contains(ROUTING_KEY),
        "the routing key is not stored: {text}"
    );
    assert!(rows[0]["body"]
        .as_str()
        .is_some_and(|b| b.contains("\"event_action\":\"trigger\"")));
}

#[tokio::test]
async fn webex_gets_one_markdown_message() {
    let app = TestApp::spawn_with(&one_target(
        "webex",
        "{chat}/v1/webhooks/incoming/Y2lzY29zcGFyazovL3VzL1dFQkhPT0s",
        "",
    ))
    .await;
    mount_alert(&app.sekoia).await;
    Mock::given(method("POST"))
        .and(path(
            "/v1/webhooks/incoming/Y2lzY29zcGFyazovL3VzL1dFQkhPT0s",
        ))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&app.chat)
        .await;

    assert_eq!(
        app.post_event(&fixture_json("webhook-alert-created.json"))
            .await
            .status(),
        202
    );
    let got = wait_for(
        &app.chat,
        "/v1/webhooks/incoming/Y2lzY29zcGFyazovL3VzL1dFQkhPT0s",
        1,
        WAIT,
    )
    .await;
    assert_eq!(got.len(), 1);
    assert_eq!(content_type(&got[0]), Some("application/json"));
    let body = body_json(&got[0]);
    let obj = body.as_object().expect("an object");
    assert_eq!(obj.keys().collect::<Vec<_>>(), vec!["markdown"]);
    let md = body["markdown"].as_str().expect("markdown");
    assert!(md.starts_with("### "), "{md}");
    assert!(
        md.contains("(https://app.sekoia.test/operations/alerts/ALEY4fqz8moo)"),
        "{md}"
    );
    assert!(md.contains("**Urgency:** Major (70)"), "{md}");
    app.chat.verify().await;
}

#[tokio::test]
async fn send_test_reaches_each_new_kind() {
    let chat = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex("^/(gchat|discord|webex|pd)"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"status": "success"})))
        .mount(&chat)
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        r#"
[targets.gchat]
kind = "google_chat"
url = "{uri}/gchat/v1/spaces/S/messages?key=k&token=t"
[targets.discord]
kind = "discord"
url = "{uri}/discord/api/webhooks/1/t"
[targets.webex]
kind = "webex"
url = "{uri}/webex/v1/webhooks/incoming/abc"
[targets.pd]
kind = "pagerduty"
url = "{uri}/pd/v2/enqueue"
routing_key = "{ROUTING_KEY}"
[[hooks]]
name = "soc"
id = "{HOOK_ID}"
targets = ["gchat", "discord", "webex", "pd"]
"#,
        uri = chat.uri()
    );
    for target in ["gchat", "discord", "webex", "pd"] {
        let (dir, config) = (dir.path().to_path_buf(), config.clone());
        let (code, text) =
            tokio::task::spawn_blocking(move || run_cli(&dir, &config, &["send-test", target]))
                .await
                .expect("join");
        assert_eq!(code, Some(0), "{target}: {text}");
        assert!(text.contains("delivered"), "{target}: {text}");
    }
    let all = chat.received_requests().await.unwrap_or_default();
    let on = |prefix: &str| -> Vec<&wiremock::Request> {
        all.iter()
            .filter(|r| r.url.path().starts_with(prefix))
            .collect()
    };
    assert!(on("/gchat")[0]
        .url
        .query()
        .is_some_and(|q| q.contains("messageReplyOption=")));
    assert!(on("/discord")[0]
        .url
        .query()
        .is_some_and(|q| q.contains("wait=true")));
    for prefix in ["/gchat", "/discord", "/webex"] {
        let reqs = on(prefix);
        assert_eq!(reqs.len(), 1, "{prefix}");
        assert!(
            String::from_utf8_lossy(&reqs[0].body).contains("[TEST from sekoia-relay"),
            "{prefix}: not marked as a test"
        );
    }
    // PagerDuty: a marked trigger, then a resolve of the same dedup_key, so the test
    // incident does not stay open.
    let pd: Vec<Value> = on("/pd").into_iter().map(body_json).collect();
    assert_eq!(pd.len(), 2, "{pd:#?}");
    assert_eq!(pd[0]["event_action"], "trigger");
    assert!(pd[0]["payload"]["summary"]
        .as_str()
        .is_some_and(|s| s.contains("[TEST from sekoia-relay")));
    assert_eq!(pd[1]["event_action"], "resolve");
    assert_eq!(pd[1]["dedup_key"], pd[0]["dedup_key"]);
    assert!(pd.iter().all(|b| b["routing_key"] == ROUTING_KEY));
}

/// Write `config` (TOML; a `[store]` in `dir` is prepended) as an owner-only file, as an
/// operator keeps it, and run the real binary on it with `args`: its exit code and
/// everything it printed.
fn run_cli(dir: &std::path::Path, config: &str, args: &[&str]) -> (Option<i32>, String) {
    let path = dir.join("config.toml");
    let text = format!("[store]\npath = \"{}/relay.db\"\n{config}", dir.display());
    std::fs::write(&path, text).expect("write config");
    let mut perms = std::fs::metadata(&path).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&path, perms).expect("chmod");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sekoia-relay"))
        .arg("--config")
        .arg(&path)
        .args(args)
        .env_remove("SEKOIA_RELAY_CONFIG")
        .output()
        .expect("run the binary");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), printed)
}

/// `check` on a config whose only target is `target` (TOML keys).
fn check_with_target(target: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "[targets.t]\n{target}\n[[hooks]]\nname = \"soc\"\nid = \"{HOOK_ID}\"\ntargets = [\"t\"]\n"
    );
    run_cli(dir.path(), &config, &["check"])
}

#[test]
fn check_warns_about_a_google_chat_url_without_its_credentials() {
    let (code, text) = check_with_target(
        "kind = \"google_chat\"\nurl = \"https://chat.googleapis.com/v1/spaces/S/messages?key=k&token=secret-token\"",
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("`key` or `token`"), "{text}");
    assert!(
        !text.contains("secret-token"),
        "the URL is a secret: {text}"
    );
    let (_, text) = check_with_target(
        "kind = \"google_chat\"\nurl = \"https://chat.googleapis.com/v1/spaces/S/messages\"",
    );
    assert!(text.contains("lacks its `key` or `token`"), "{text}");
    assert!(text.contains("https://chat.googleapis.com"), "{text}");
}

#[test]
fn check_warns_about_a_discord_url_that_is_not_a_webhook() {
    let (code, text) = check_with_target(
        "kind = \"discord\"\nurl = \"https://discord.com/api/webhooks/1/secret-token\"",
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("/api/webhooks/ path"), "{text}");
    let (_, text) =
        check_with_target("kind = \"discord\"\nurl = \"https://discord.com/channels/1/2\"");
    assert!(text.contains("no /api/webhooks/ path"), "{text}");
}

#[test]
fn check_requires_the_pagerduty_routing_key_and_refuses_it_elsewhere() {
    let (code, text) = check_with_target("kind = \"pagerduty\"");
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("`routing_key` is required"), "{text}");
    // With its key, no url is needed (the Events API is the default), and the key is never
    // printed.
    let (code, text) = check_with_target(&format!(
        "kind = \"pagerduty\"\nrouting_key = \"{ROUTING_KEY}\""
    ));
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains(ROUTING_KEY), "{text}");
    let (code, text) = check_with_target(
        "kind = \"discord\"\nurl = \"https://discord.com/api/webhooks/1/t\"\nrouting_key = \"x\"",
    );
    assert_ne!(code, Some(0), "{text}");
    assert!(
        text.contains("`routing_key` is only for kind pagerduty"),
        "{text}"
    );
}
