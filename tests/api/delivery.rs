//! The README's delivery guarantees: retries, Retry-After, dead letters, independence, bursts.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn one_api_call_serves_every_target() {
    let app = TestApp::spawn_with(
        r#"
[targets.teams]
kind = "teams"
url = "{chat}/teams"
[targets.slack]
kind = "slack"
url = "{chat}/slack"
[targets.soar]
kind = "webhook"
url = "{chat}/soar"
[[hooks]]
name = "soc"
id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
targets = ["teams", "slack", "soar"]
"#,
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/v1/sic/alerts/5696845f-9ecf-4431-9f0f-48ee0ee2eff1"))
        .and(query_param("stix", "false"))
        .and(query_param("comments", "false"))
        .and(query_param("countermeasures", "false"))
        .and(query_param("history", "false"))
        .and(header("Authorization", "Bearer test-api-key-0123456789"))
        .and(header("Accept", "application/json"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(fixture("alert.json"), "application/json"),
        )
        .expect(1)
        .mount(&app.sekoia)
        .await;
    mount_chat_ok(&app.chat).await;

    assert_eq!(
        app.post_event(&fixture_json("webhook-alert-created.json"))
            .await
            .status(),
        202
    );

    for p in ["/teams", "/slack", "/soar"] {
        let got = wait_for(&app.chat, p, 1, WAIT).await;
        assert_eq!(got.len(), 1, "{p}");
        assert_eq!(
            got[0]
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
    }
    let api = received(
        &app.sekoia,
        "/v1/sic/alerts/5696845f-9ecf-4431-9f0f-48ee0ee2eff1",
    )
    .await;
    let ua = api[0]
        .headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(ua.starts_with("sekoia-relay/"), "{ua}");
    // The enriched alert reached the generic webhook.
    let soar = body_json(&received(&app.chat, "/soar").await[0]);
    assert_eq!(soar["alert"]["title"], "Cobalt Strike beacon HTTP traffic");
    app.sekoia.verify().await;
}

#[tokio::test]
async fn server_errors_are_retried_until_success_exactly() {
    let app = TestApp::spawn().await;
    mount_alert(&app.sekoia).await;
    Mock::given(method("POST"))
        .and(path("/teams"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .expect(2)
        .with_priority(1)
        .mount(&app.chat)
        .await;
    Mock::given(method("POST"))
        .and(path("/teams"))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&app.chat)
        .await;
    Mock::given(method("POST"))
        .and(path("/slack"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(1)
        .mount(&app.chat)
        .await;

    assert_eq!(
        app.post_event(&fixture_json("webhook-alert-created.json"))
            .await
            .status(),
        202
    );
    wait_for(&app.chat, "/teams", 3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.chat.verify().await;
}

/// Slack answers 429 with `retry_after` once, then 200: how long the relay waited between.
async fn wait_after_429(retry_after: &str) -> Duration {
    let app = TestApp::spawn().await;
    mount_alert(&app.sekoia).await;
    let throttled =
        Timed::new(ResponseTemplate::new(429).insert_header("Retry-After", retry_after));
    let ok = Timed::new(ResponseTemplate::new(200).set_body_string("ok"));
    Mock::given(path("/slack"))
        .respond_with(throttled.clone())
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.chat)
        .await;
    Mock::given(path("/slack"))
        .respond_with(ok.clone())
        .mount(&app.chat)
        .await;
    Mock::given(path("/teams"))
        .respond_with(ResponseTemplate::new(202))
        .mount(&app.chat)
        .await;

    assert_eq!(
        app.post_event(&fixture_json("webhook-alert-created.json"))
            .await
            .status(),
        202
    );
    wait_for(&app.chat, "/slack", 2, WAIT).await;
    let (first, second) = (throttled.arrivals(), ok.arrivals());
    assert_eq!((first.len(), second.len()), (1, 1));
    second[0] - first[0]
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let waited = wait_after_429("1").await;
    // The test schedule starts at 20 ms: only Retry-After explains a wait of a second.
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}"
    );
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_honoured_and_capped() {
    // Three seconds ahead, capped by backoff_max_secs (1 s in tests).
    let at = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3));
    let waited = wait_after_429(&at).await;
    assert!(
        waited >= Duration::from_millis(900),
        "retried after {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "capped at backoff_max_secs: {waited:?}"
    );
}

#[tokio::test]
async fn client_error_is_a_dead_letter_at_once_and_can_be_retried() {
    let app = TestApp::spawn().await;
    mount_alert(&app.sekoia).await;
    Mock::given(path("/teams"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_string("{\"error\":{\"code\":\"InvalidRequestContent\"}}"),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.chat)
        .await;
    Mock::given(path("/teams"))
        .respond_with(ResponseTemplate::new(202))
        .mount(&app.chat)
        .await;
    Mock::given(path("/slack"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&app.chat)
        .await;

    assert_eq!(
        app.post_event(&fixture_json("webhook-alert-created.json"))
            .await
            .status(),
        202
    );
    wait_for(&app.chat, "/teams", 1, WAIT).await;
    wait_for(&app.chat, "/slack", 1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        received(&app.chat, "/teams").await.len(),
        1,
        "a 400 is not retried"
    );

    let list = app.cli(&["dead-letters", "list"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("teams") && text.contains("400"), "{text}");
    // The table says why, from the target's answer, on one line.
    assert!(text.contains("HTTP 400: InvalidRequestContent"), "{text}");
    assert!(
        !text.contains("slack"),
        "the healthy target is not a dead letter: {text}"
    );
    let json = app.cli(&["dead-letters", "list", "--json"]);
    let row: Value =
        serde_json::from_slice(json.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert!(row["response"]
        .as_str()
        .unwrap()
        .contains("InvalidRequestContent"));
    assert!(
        row["body"].as_str().is_some_and(|b| !b.is_empty()),
        "the rendered body is kept"
    );

    let retry = app.cli(&["dead-letters", "retry", "--all"]);
    assert!(retry.status.success());
    assert!(String::from_utf8_lossy(&retry.stdout).contains("re-queued 1"));
    let got = wait_for(&app.chat, "/teams", 2, WAIT).await;
    assert_eq!(got.len(), 2, "the running server re-sent the dead letter");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let list = app.cli(&["dead-letters", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("no dead letters"));
    assert_eq!(
        received(&app.chat, "/slack").await.len(),
        1,
        "slack was not re-sent"
    );
}

#[tokio::test]
async fn a_failing_target_never_resends_a_healthy_one() {
    let app = TestApp::spawn().await;
    mount_alert(&app.sekoia).await;
    Mock::given(path("/teams"))
        .respond_with(ResponseTemplate::new(500))
        .expect(5) // max_attempts in the test config
        .mount(&app.chat)
        .await;
    Mock::given(path("/slack"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(1)
        .mount(&app.chat)
        .await;

    assert_eq!(
        app.post_event(&fixture_json("webhook-alert-created.json"))
            .await
            .status(),
        202
    );
    wait_for(&app.chat, "/teams", 5, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.chat.verify().await;
    let list = app.cli(&["dead-letters", "list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("teams") && text.contains("after 5 attempts"),
        "{text}"
    );
}

#[tokio::test]
async fn rate_limit_paces_a_target_without_dropping() {
    let app = TestApp::spawn_with(
        r#"
[targets.slack]
kind = "slack"
url = "{chat}/slack"
rate_limit_per_sec = 2
[[hooks]]
name = "soc"
id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
targets = ["slack"]
"#,
    )
    .await;
    mount_alert(&app.sekoia).await;
    let ok = Timed::new(ResponseTemplate::new(200).set_body_string("ok"));
    Mock::given(path("/slack"))
        .respond_with(ok.clone())
        .expect(6)
        .mount(&app.chat)
        .await;
    for n in 0..6 {
        assert_eq!(app.post_event(&alert_event(n)).await.status(), 202);
    }
    wait_for(&app.chat, "/slack", 6, WAIT).await;
    let t = ok.arrivals();
    // A bucket of 2 at 2/s: the 6th send cannot happen before 2 s after the first.
    assert!(
        t[5] - t[0] >= Duration::from_millis(1900),
        "{:?}",
        t[5] - t[0]
    );
    app.chat.verify().await;
}

#[tokio::test]
async fn a_burst_of_300_is_delivered_exactly_once_per_target() {
    let app = TestApp::spawn_with(
        r#"
[targets.a]
kind = "webhook"
url = "{chat}/a"
[targets.b]
kind = "webhook"
url = "{chat}/b"
[[hooks]]
name = "soc"
id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
targets = ["a", "b"]
"#,
    )
    .await;
    mount_alert(&app.sekoia).await;
    mount_chat_ok(&app.chat).await;
    let url = app.hook_url();
    let mut posts = Vec::new();
    for n in 0..300 {
        let client = app.client.clone();
        let url = url.clone();
        posts.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&alert_event(n))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for p in posts {
        assert_eq!(p.await.unwrap().unwrap(), 202);
    }
    for target in ["/a", "/b"] {
        wait_for(&app.chat, target, 300, Duration::from_secs(30)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for target in ["/a", "/b"] {
        let got = received(&app.chat, target).await;
        let ids: HashSet<String> = got
            .iter()
            .map(|r| {
                body_json(r)["event"]["attributes"]["uuid"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(got.len(), 300, "{target}: no duplicates");
        assert_eq!(ids.len(), 300, "{target}: every event");
    }
}

#[tokio::test]
async fn a_delivery_older_than_max_age_becomes_a_dead_letter() {
    let sekoia = wiremock::MockServer::start().await;
    let chat = wiremock::MockServer::start().await;
    mount_alert(&sekoia).await;
    Mock::given(path("/teams"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&chat)
        .await;
    Mock::given(path("/slack"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(1)
        .mount(&chat)
        .await;
    let dir = tempfile::tempdir().unwrap();
    // Plenty of attempts, but only one second of age: age is what ends the retries.
    let text = config_text(&sekoia.uri(), &chat.uri(), dir.path(), DEFAULT_ROUTING)
        .replace("max_attempts = 5", "max_attempts = 1000\nmax_age_secs = 1");
    let app = TestApp::start_text(sekoia, chat, dir, &text).await;

    assert_eq!(
        app.post_event(&fixture_json("webhook-alert-created.json"))
            .await
            .status(),
        202
    );
    let deadline = std::time::Instant::now() + WAIT;
    let text = loop {
        let out = app.cli(&["dead-letters", "list"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains("teams") || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        text.contains("teams"),
        "the old delivery is a dead letter: {text}"
    );
    let attempts = received(&app.chat, "/teams").await.len();
    assert!(
        attempts > 1 && attempts < 1000,
        "retried until max age, then stopped: {attempts}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        received(&app.chat, "/teams").await.len(),
        attempts,
        "no attempt after it died"
    );
    app.chat.verify().await;
}

#[tokio::test]
async fn a_teams_2xx_carrying_a_connector_error_is_that_error() {
    let app = TestApp::spawn().await;
    mount_alert(&app.sekoia).await;
    // Throttled in a 200 (the retired connector's way): retried, then delivered.
    Mock::given(path("/teams"))
        .respond_with(ResponseTemplate::new(200).set_body_string(
            "Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP error 429 with ContextId tcid=0",
        ))
        .up_to_n_times(1)
        .expect(1)
        .with_priority(1)
        .mount(&app.chat)
        .await;
    Mock::given(path("/teams"))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&app.chat)
        .await;
    // Too large in a 200: permanent, a dead letter that says why.
    Mock::given(path("/slack"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&app.chat)
        .await;
    assert_eq!(
        app.post_event(&fixture_json("webhook-alert-created.json"))
            .await
            .status(),
        202
    );
    wait_for(&app.chat, "/teams", 2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.chat.verify().await;

    let app = TestApp::spawn().await;
    mount_alert(&app.sekoia).await;
    Mock::given(path("/teams"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("Microsoft Teams endpoint returned HTTP error 413"),
        )
        .expect(1)
        .mount(&app.chat)
        .await;
    mount_chat_ok(&app.chat).await;
    assert_eq!(
        app.post_event(&fixture_json("webhook-alert-created.json"))
            .await
            .status(),
        202
    );
    wait_for(&app.chat, "/teams", 1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let list = String::from_utf8_lossy(&app.cli(&["dead-letters", "list"]).stdout).to_string();
    assert!(list.contains("HTTP error 413"), "{list}");
    app.chat.verify().await;
}

/// The dead-letter commands do not let a mistake pass for success: unknown ids exit 1 and
/// re-queue nothing, `retry` alone points to `--all`, `list` says since when each letter is
/// dead, and `purge` asks on a terminal unless `--yes`.
#[tokio::test]
async fn dead_letter_commands_refuse_unknown_ids_and_ask_before_purging() {
    let app = TestApp::spawn().await;
    mount_alert(&app.sekoia).await;
    Mock::given(path("/teams"))
        .respond_with(ResponseTemplate::new(400).set_body_string("bad card"))
        .mount(&app.chat)
        .await;
    mount_chat_ok(&app.chat).await;
    assert_eq!(app.post_event(&alert_event(1)).await.status(), 202);
    wait_for(&app.chat, "/teams", 1, WAIT).await;
    let start = std::time::Instant::now();
    let text = loop {
        let out = String::from_utf8_lossy(&app.cli(&["dead-letters", "list"]).stdout).to_string();
        if out.contains("teams") || start.elapsed() > WAIT {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut lines = text.lines();
    assert!(
        lines.next().unwrap().starts_with("ID\tDEAD SINCE\tTARGET"),
        "{text}"
    );
    let row: Vec<&str> = lines.next().expect("one dead letter").split('\t').collect();
    assert!(
        row[1].ends_with(" UTC") && row[1].len() == 23,
        "a time: {row:?}"
    );
    let id = row[0].to_string();

    let unknown = app.cli(&["dead-letters", "retry", &id, "99999"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no dead letter with id 99999"));
    let none = app.cli(&["dead-letters", "retry"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("--all"));
    let still = String::from_utf8_lossy(&app.cli(&["dead-letters", "list"]).stdout).to_string();
    assert!(still.contains("teams"), "nothing was re-queued: {still}");

    // On a terminal (script(1) gives it one), purge asks; "n" keeps everything.
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok()
    {
        let cmd = format!(
            "{} --config {} dead-letters purge",
            env!("CARGO_BIN_EXE_sekoia-relay"),
            app.config_path.display()
        );
        let mut child = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"n\n").unwrap();
        let out = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.contains("Delete 1 dead letter(s) for good? [y/N]"),
            "{said}"
        );
        assert!(said.contains("nothing purged"), "{said}");
        let kept = String::from_utf8_lossy(&app.cli(&["dead-letters", "list"]).stdout).to_string();
        assert!(kept.contains("teams"), "{kept}");
    }
    let purged = app.cli(&["dead-letters", "purge", "--yes"]);
    assert!(String::from_utf8_lossy(&purged.stdout).contains("purged 1"));
}
