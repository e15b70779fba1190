//! "Never silently lost": redirects, the retry horizon, 429 accounting, one hung target, and
//! credentials in URLs, each on the real server against wiremock targets.

use std::time::{Duration, Instant};

use serde_json::Value;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(10);

/// The dead letters, as `dead-letters list --json` prints them.
fn dead_letters(app: &TestApp) -> Vec<Value> {
    let out = app.cli(&["dead-letters", "list", "--json"]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("one JSON dead letter per line"))
        .collect()
}

/// Wait until `n` dead letters exist (or `within` passes) and return them.
async fn wait_dead(app: &TestApp, n: usize, within: Duration) -> Vec<Value> {
    let until = Instant::now() + within;
    loop {
        let dead = dead_letters(app);
        if dead.len() >= n || Instant::now() > until {
            return dead;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Test config with `extra` routing, the given `[delivery]` lines replacing the test defaults'
/// `max_attempts = 5`.
async fn start(routing: &str, delivery: &str) -> TestApp {
    let sekoia = MockServer::start().await;
    let chat = MockServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = config_text(&sekoia.uri(), &chat.uri(), dir.path(), routing)
        .replace("max_attempts = 5\n", &format!("{delivery}\n"));
    if delivery.contains("retry_schedule") {
        text = text.replace(TEST_RETRY_SCHEDULE, "");
    }
    TestApp::start_text(sekoia, chat, dir, &text).await
}

/// One JSON-webhook target `soar` on the chat mock, the only target of hook `soc`.
const SOAR: &str = "[targets.soar]\nkind = \"webhook\"\nurl = \"{chat}/soar\"\n[[hooks]]\nname = \"soc\"\nid = \"67a7472b-b43c-415d-b1ce-c135fb1dfb0e\"\ntargets = [\"soar\"]\n";

/// `/soar` answers each response of `script` the given number of times, in order (each
/// verified with `.expect`), then nothing.
async fn soar_answers(app: &TestApp, script: Vec<(ResponseTemplate, u64)>) {
    for (response, times) in script {
        Mock::given(path("/soar"))
            .respond_with(response)
            .up_to_n_times(times)
            .expect(times)
            .mount(&app.chat)
            .await;
    }
}

/// Post the created-alert fixture and require a 202.
async fn post_created(app: &TestApp) {
    let res = app
        .post_event(&fixture_json("webhook-alert-created.json"))
        .await;
    assert_eq!(res.status().as_u16(), 202);
}

fn webhook_hook(targets: &[&str]) -> String {
    let list: Vec<String> = targets.iter().map(|t| format!("{t:?}")).collect();
    format!(
        "[[hooks]]\nname = \"soc\"\nid = \"{HOOK_ID}\"\ntargets = [{}]\n",
        list.join(", ")
    )
}

#[tokio::test]
async fn a_redirecting_target_is_a_dead_letter_naming_the_new_host_and_nothing_follows() {
    // Where the redirects point: it must never see the body nor the header secret.
    let elsewhere = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(0)
        .mount(&elsewhere)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let mut routing = String::new();
    let statuses = [301, 302, 307, 308];
    for s in statuses {
        routing.push_str(&format!(
            "[targets.moved{s}]\nkind = \"webhook\"\nurl = \"{{chat}}/moved{s}\"\nheaders = {{ X-Api-Token = \"token-{s}-secret\" }}\n"
        ));
    }
    let names: Vec<String> = statuses.iter().map(|s| format!("moved{s}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    routing.push_str(&webhook_hook(&names));
    let app = start(&routing, "").await;
    mount_alert(&app.sekoia).await;
    for s in statuses {
        Mock::given(path(format!("/moved{s}")))
            .respond_with(
                ResponseTemplate::new(s)
                    .insert_header("Location", format!("{}/stolen?t=1", elsewhere.uri())),
            )
            .expect(1) // one try: a redirect is permanent
            .mount(&app.chat)
            .await;
    }

    post_created(&app).await;

    let dead = wait_dead(&app, 4, WAIT).await;
    assert_eq!(dead.len(), 4, "{dead:?}");
    for d in &dead {
        let status = d["last_status"].as_u64().expect("status kept");
        let error = d["last_error"].as_str().unwrap_or_default();
        assert_eq!(
            error,
            format!(
                "target redirected to {} (HTTP {status}): update the URL; redirects are never followed",
                elsewhere.uri()
            )
        );
        assert!(!error.contains("stolen"), "only the host is shown: {error}");
    }
    app.chat.verify().await;
    // `elsewhere` checks on drop that nothing reached it.
}

#[tokio::test]
async fn an_alert_api_redirect_is_not_followed_and_the_alert_goes_out_unenriched() {
    let elsewhere = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(fixture("alert.json"), "application/json"),
        )
        .expect(0)
        .mount(&elsewhere)
        .await;
    let app = start(SOAR, "").await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(302).insert_header(
            "Location",
            format!(
                "{}/v1/sic/alerts/5696845f-9ecf-4431-9f0f-48ee0ee2eff1",
                elsewhere.uri()
            ),
        ))
        .expect(1)
        .mount(&app.sekoia)
        .await;
    mount_chat_ok(&app.chat).await;

    post_created(&app).await;
    let got = wait_for(&app.chat, "/soar", 1, WAIT).await;
    assert_eq!(got.len(), 1);
    let body = body_json(&got[0]);
    assert_eq!(body["enriched"], Value::Bool(false), "{body}");
    let why = body["enrichment_error"].as_str().unwrap_or_default();
    assert!(
        why.contains(&format!("redirected to {}", elsewhere.uri())),
        "{body}"
    );
}

#[tokio::test]
async fn a_target_down_for_longer_than_ten_attempts_still_gets_the_alert() {
    // No max_attempts (the default: no cap) and a compressed schedule: 25 failures in a row,
    // more than the old default cap of 10, then the target is back.
    let app = start(SOAR, "").await;
    let text = std::fs::read_to_string(&app.config_path).unwrap();
    assert!(!text.contains("max_attempts"), "the default applies");
    mount_alert(&app.sekoia).await;
    soar_answers(
        &app,
        vec![
            (ResponseTemplate::new(503), 25),
            (ResponseTemplate::new(200).set_body_string("ok"), 1),
        ],
    )
    .await;

    post_created(&app).await;
    let got = wait_for(&app.chat, "/soar", 26, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 26);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(dead_letters(&app).is_empty());
    app.chat.verify().await;
}

#[tokio::test]
async fn refused_connections_are_retried_until_max_age_then_dead_lettered() {
    // A port nothing listens on: every attempt is "connection refused", at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let app = start(
        &format!("[targets.soar]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/soar\"\n[[hooks]]\nname = \"soc\"\nid = \"67a7472b-b43c-415d-b1ce-c135fb1dfb0e\"\ntargets = [\"soar\"]\n"),
        "max_age_secs = 2\nretry_schedule = [\"100ms\"]",
    )
    .await;
    mount_alert(&app.sekoia).await;
    let posted = Instant::now();
    post_created(&app).await;

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(dead_letters(&app).is_empty(), "dead before max_age_secs");
    let dead = wait_dead(&app, 1, WAIT).await;
    assert!(posted.elapsed() >= Duration::from_secs(2));
    assert_eq!(dead.len(), 1);
    let attempts = dead[0]["attempts"].as_u64().unwrap();
    let error = dead[0]["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("connection failed") && error.contains("max_age_secs = 2 s"),
        "{error}"
    );
    // 50–100 ms apart for 2 s: far more than the old cap of 10 attempts.
    assert!(attempts >= 12, "{attempts} attempts");
}

#[tokio::test]
async fn throttling_never_uses_up_attempts() {
    let app = start(SOAR, "max_attempts = 2").await;
    mount_alert(&app.sekoia).await;
    // Five 429s (two with Retry-After: 0, three without), far past max_attempts = 2.
    soar_answers(
        &app,
        vec![
            (
                ResponseTemplate::new(429).insert_header("Retry-After", "0"),
                2,
            ),
            (ResponseTemplate::new(429), 3),
            (ResponseTemplate::new(200).set_body_string("ok"), 1),
        ],
    )
    .await;

    post_created(&app).await;
    let got = wait_for(&app.chat, "/soar", 6, WAIT).await;
    assert_eq!(got.len(), 6);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(dead_letters(&app).is_empty());
    app.chat.verify().await;
}

#[tokio::test]
async fn a_hung_target_never_delays_a_healthy_one() {
    let app = start(
        "[targets.a_hung]\nkind = \"webhook\"\nurl = \"{chat}/hung\"\n[targets.healthy]\nkind = \"webhook\"\nurl = \"{chat}/healthy\"\n[[hooks]]\nname = \"soc\"\nid = \"67a7472b-b43c-415d-b1ce-c135fb1dfb0e\"\ntargets = [\"a_hung\", \"healthy\"]\n",
        "concurrency = 4",
    )
    .await;
    // Named to come first in the dispatcher's pass over targets. Its sends hang past the
    // test's 2 s request timeout, so each holds its slot for the whole test.
    let text = std::fs::read_to_string(&app.config_path).unwrap();
    assert!(text.contains("timeout_secs = 2"));
    mount_alert(&app.sekoia).await;
    Mock::given(path("/hung"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&app.chat)
        .await;
    Mock::given(path("/healthy"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(12)
        .mount(&app.chat)
        .await;

    let started = Instant::now();
    for n in 0..12 {
        assert_eq!(app.post_event(&alert_event(n)).await.status().as_u16(), 202);
    }
    let got = wait_for(&app.chat, "/healthy", 12, WAIT).await;
    let took = started.elapsed();
    assert_eq!(got.len(), 12);
    // Shared slots made the healthy target wait for the hung sends' 2 s timeouts (12 events,
    // 4 slots: several rounds). Its own slots let it finish long before the first timeout.
    assert!(
        took < Duration::from_millis(1800),
        "healthy target took {took:?}"
    );
    let hung = received(&app.chat, "/hung").await.len();
    assert!(
        hung <= 4,
        "the hung target holds at most its own 4 slots: {hung}"
    );
}

/// `sekoia-relay check` on a config of a console target, a hook `soc` and `extra`, with
/// `hook_extra` appended to the hook: (success, stdout + stderr).
fn check_with(extra: &str, hook_extra: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "{extra}\n[store]\npath = \"{}/relay.db\"\n[targets.c]\nkind = \"console\"\n[[hooks]]\nname = \"soc\"\nid = \"{HOOK_ID}\"\ntargets = [\"c\"]\n{hook_extra}",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sekoia-relay"))
        .arg("--config")
        .arg(&config)
        .arg("check")
        .env_remove("SEKOIA_RELAY_CONFIG")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), all)
}

#[tokio::test]
async fn userinfo_in_the_api_url_is_refused_and_never_echoed() {
    for key in ["api_url", "app_url"] {
        let (ok, all) = check_with(
            &format!("[sekoia]\n{key} = \"https://bob:s3cret-pw@api.sekoia.io\""),
            "",
        );
        assert!(!ok, "{all}");
        assert!(all.contains("carries a user name or password"), "{all}");
        assert!(!all.contains("s3cret-pw"), "password echoed: {all}");
    }
    // An invalid per-hook api_url with a password: the error says which key, not the password.
    let (ok, all) = check_with("", "api_url = \"https://bob:s3cret-pw@exa mple:99999\"\n");
    assert!(!ok);
    assert!(
        all.contains("api_url") && all.contains("is not a URL"),
        "{all}"
    );
    assert!(!all.contains("s3cret-pw"), "password echoed: {all}");
}

#[tokio::test]
async fn header_secrets_are_sent_to_the_configured_host_only() {
    // Sanity for the redirect test: the header does reach the configured target.
    let app = start(
        "[targets.soar]\nkind = \"webhook\"\nurl = \"{chat}/soar\"\nheaders = { X-Api-Token = \"tok\" }\n[[hooks]]\nname = \"soc\"\nid = \"67a7472b-b43c-415d-b1ce-c135fb1dfb0e\"\ntargets = [\"soar\"]\n",
        "",
    )
    .await;
    mount_alert(&app.sekoia).await;
    Mock::given(path("/soar"))
        .and(header("X-Api-Token", "tok"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&app.chat)
        .await;
    post_created(&app).await;
    assert_eq!(wait_for(&app.chat, "/soar", 1, WAIT).await.len(), 1);
}
