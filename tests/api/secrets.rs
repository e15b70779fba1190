//! Secrets stay secret: the API keys, target URLs beyond scheme and host, webhook
//! headers and full hook ids never appear in logs (even at `RUST_LOG=debug`), HTTP error
//! bodies, `/metrics` or the dead-letter listing. The real binary runs as a child with JSON
//! logs while every path is driven: success, retry, dead letter, transport error, 401 from
//! the Alert API, unknown hook, bad request.

use std::time::Duration;

use serde_json::Value;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(20);

// Distinctive strings: any occurrence in the output is a leak.
const API_KEY: &str = "SECRET-APIKEY-5f0c2e9a71";
const HOOK_API_KEY: &str = "SECRET-HOOKKEY-8d4b61c3f2";
const HEADER_TOKEN: &str = "SECRET-HEADER-3a9e7d05b8";
const PATH_OK: &str = "SECRETPATH-ok-41d2";
const QUERY_OK: &str = "SECRETQUERY-7c1e";
const PATH_FLAKY: &str = "SECRETPATH-flaky-9b3f";
const PATH_BROKEN: &str = "SECRETPATH-broken-2e6a";
const PATH_DOWN: &str = "SECRETPATH-down-5d8c";
/// The second hook's id; its first 8 characters may be logged, the rest never.
const LOCKED_HOOK_ID: &str = "c0ffee00-SECRET-HOOKID-4e7a9d1b7a1e";
const UNKNOWN_HOOK_ID: &str = "deadbeef-SECRET-UNKNOWN-0d15ea5e";

fn routing() -> String {
    format!(
        r#"
[targets.ok]
kind = "webhook"
url = "{{chat}}/{PATH_OK}?token={QUERY_OK}"
headers = {{ Authorization = "Bearer {HEADER_TOKEN}" }}

[targets.flaky]
kind = "slack"
url = "{{chat}}/{PATH_FLAKY}"
rate_limit_per_sec = 0

[targets.broken]
kind = "mattermost"
url = "{{chat}}/{PATH_BROKEN}"

[targets.down]
kind = "webhook"
url = "http://127.0.0.1:1/{PATH_DOWN}"

[[hooks]]
name = "soc"
id = "{HOOK_ID}"
targets = ["ok", "flaky", "broken", "down"]

[[hooks]]
name = "locked"
id = "{LOCKED_HOOK_ID}"
api_key = "{HOOK_API_KEY}"
targets = ["ok"]
"#
    )
}

#[tokio::test]
async fn no_secret_reaches_logs_errors_metrics_or_the_cli() {
    let sekoia = MockServer::start().await;
    let chat = MockServer::start().await;
    // The second hook's key is refused (401); the main key works.
    Mock::given(method("GET"))
        .and(header(
            "Authorization",
            format!("Bearer {HOOK_API_KEY}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(401).set_body_string("Unauthorized"))
        .with_priority(1)
        .mount(&sekoia)
        .await;
    mount_alert(&sekoia).await;
    Mock::given(path(format!("/{PATH_OK}")))
        .respond_with(ResponseTemplate::new(200))
        .mount(&chat)
        .await;
    Mock::given(path(format!("/{PATH_FLAKY}")))
        .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", "0"))
        .mount(&chat)
        .await;
    Mock::given(path(format!("/{PATH_BROKEN}")))
        .respond_with(ResponseTemplate::new(400).set_body_string("Unable to parse incoming data"))
        .mount(&chat)
        .await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let text = config_text(&sekoia.uri(), &chat.uri(), dir.path(), &routing())
        .replace("test-api-key-0123456789", API_KEY);
    std::fs::write(&config, text).unwrap();
    let relay = RelayProcess::start(&config, &[("RUST_LOG", "debug")]);
    let client = reqwest::Client::new();
    let mut bodies = Vec::new();
    let mut post = async |hook: &str, body: reqwest::Body, expect: u16| {
        let res = client
            .post(format!("{}/hooks/{hook}", relay.base))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), expect);
        bodies.push(res.text().await.unwrap());
    };

    let event = |n| reqwest::Body::from(alert_event(n).to_string());
    post(HOOK_ID, event(1), 202).await;
    post(LOCKED_HOOK_ID, event(2), 202).await;
    post(UNKNOWN_HOOK_ID, event(3), 404).await;
    post(HOOK_ID, reqwest::Body::from("{not json"), 400).await;
    post(HOOK_ID, reqwest::Body::from("{\"type\":\"alert\"}"), 422).await;

    // ok: 2 (soc + locked); flaky: retried until dead (max_attempts = 5); broken: dead at once.
    wait_for(&chat, &format!("/{PATH_OK}"), 2, WAIT).await;
    wait_for(&chat, &format!("/{PATH_FLAKY}"), 5, WAIT).await;
    assert!(
        relay.wait_for_output("retries exhausted", WAIT).await,
        "{:#?}",
        relay.output()
    );
    let metrics = client
        .get(format!("{}/metrics", relay.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    bodies.push(metrics);
    let listing = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sekoia-relay"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let dead = listing(&["dead-letters", "list"]);
    assert!(dead.contains("broken"), "{dead}");
    bodies.push(dead);
    bodies.push(listing(&["dead-letters", "list", "--json"]));
    let logs = relay.stop().await;

    // The paths were really driven (so the absence below means something).
    let all = logs.join("\n");
    for expected in [
        "event accepted",
        "delivered",
        "delivery failed, will retry",
        "retries exhausted: dead letter",
        "permanent failure: dead letter",
        "post to an unknown hook",
        "refused the API key",
        "connection failed",
        "\"level\":\"DEBUG\"",
    ] {
        assert!(
            all.contains(expected),
            "no {expected:?} in the logs:\n{all}"
        );
    }
    let secrets = [
        API_KEY,
        HOOK_API_KEY,
        HEADER_TOKEN,
        PATH_OK,
        QUERY_OK,
        PATH_FLAKY,
        PATH_BROKEN,
        PATH_DOWN,
        &HOOK_ID[8..],
        &LOCKED_HOOK_ID[8..],
        &UNKNOWN_HOOK_ID[8..],
    ];
    for (what, text) in [("logs", &all), ("answers and listings", &bodies.join("\n"))] {
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "{secret:?} leaked into the {what}:\n{}",
                text.lines()
                    .filter(|l| l.contains(secret))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    // Hooks are named by name and id prefix; targets by scheme and host.
    assert!(
        all.contains("deadbeef…"),
        "an unknown hook is logged by its id prefix"
    );
    assert!(
        all.contains(&format!("\"host\":\"{}\"", chat.uri())),
        "{all}"
    );
}

/// The span and attempt fields an on-call engineer filters by (README, "Logs").
#[tokio::test]
async fn attempt_logs_carry_event_hook_alert_target_host_status_attempt_and_next_retry() {
    let sekoia = MockServer::start().await;
    let chat = MockServer::start().await;
    mount_alert(&sekoia).await;
    Mock::given(path(format!("/{PATH_FLAKY}")))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&chat)
        .await;
    mount_chat_ok(&chat).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let routing = format!(
        "[targets.flaky]\nkind = \"slack\"\nurl = \"{{chat}}/{PATH_FLAKY}\"\nrate_limit_per_sec = 0\n\
         [[hooks]]\nname = \"soc\"\nid = \"{HOOK_ID}\"\ntargets = [\"flaky\"]\n"
    );
    std::fs::write(
        &config,
        config_text(&sekoia.uri(), &chat.uri(), dir.path(), &routing),
    )
    .unwrap();
    let relay = RelayProcess::start(&config, &[]);
    let res = reqwest::Client::new()
        .post(format!("{}/hooks/{HOOK_ID}", relay.base))
        .json(&alert_event(7))
        .send()
        .await
        .unwrap();
    let event_id = res.json::<Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(&chat, &format!("/{PATH_FLAKY}"), 2, WAIT).await;
    assert!(relay.wait_for_output("\"delivered\"", WAIT).await);
    let logs: Vec<Value> = relay
        .stop()
        .await
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let find = |msg: &str| {
        logs.iter()
            .find(|l| l["message"] == msg)
            .unwrap_or_else(|| panic!("no {msg:?} line in {logs:#?}"))
            .clone()
    };
    let retry = find("delivery failed, will retry");
    let span = &retry["span"];
    assert_eq!(span["name"], "delivery");
    assert_eq!(span["event_id"], event_id.as_str());
    assert_eq!(span["hook"], "soc");
    assert_eq!(span["alert"], "ALtest7");
    assert_eq!(span["target"], "flaky");
    assert_eq!(retry["host"], chat.uri().as_str());
    assert_eq!(retry["status"], 503);
    assert_eq!(retry["attempt"], 1);
    assert!(retry["next_retry_ms"].is_u64(), "{retry}");
    let delivered = find("delivered");
    assert_eq!(delivered["attempt"], 2);
    assert_eq!(delivered["status"], 200);
    assert_eq!(delivered["span"]["alert"], "ALtest7");
}
