//! Every row of the README's "HTTP answers" table, through the real server.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

async fn detail(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.expect("error bodies are JSON");
    (status, body)
}

#[tokio::test]
async fn valid_event_is_accepted_with_an_event_id() {
    let app = TestApp::spawn().await;
    mount_alert(&app.sekoia).await;
    mount_chat_ok(&app.chat).await;
    let (status, body) = detail(
        app.post_event(&fixture_json("webhook-alert-created.json"))
            .await,
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(body["status"], "accepted");
    assert!(body["event_id"].as_str().is_some_and(|s| !s.is_empty()));
}

#[tokio::test]
async fn same_event_again_is_a_duplicate_and_not_resent() {
    let app = TestApp::spawn().await;
    mount_alert(&app.sekoia).await;
    mount_chat_ok(&app.chat).await;
    let event = fixture_json("webhook-alert-created.json");
    let (s1, b1) = detail(app.post_event(&event).await).await;
    let (s2, b2) = detail(app.post_event(&event).await).await;
    assert_eq!((s1, s2), (202, 200));
    assert_eq!(b2["status"], "duplicate");
    assert_eq!(b1["event_id"], b2["event_id"]);
    // The same alert updated is a new event, not a duplicate.
    let (s3, _) = detail(
        app.post_event(&fixture_json("webhook-alert-updated.json"))
            .await,
    )
    .await;
    assert_eq!(s3, 202);
    wait_for(&app.chat, "/teams", 2, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        received(&app.chat, "/teams").await.len(),
        2,
        "one message per accepted event"
    );
    let slack = received(&app.chat, "/slack").await;
    assert_eq!(slack.len(), 2);
    // The update says what changed, from the event's `attributes.updated`.
    assert!(
        slack.iter().any(|r| body_json(r)["text"]
            .as_str()
            .unwrap_or_default()
            .contains("Alert updated (status: Ongoing)")),
        "{:?}",
        slack.iter().map(body_json).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn excluded_type_or_action_is_filtered() {
    let app = TestApp::spawn_with(
        r#"
[targets.out]
kind = "webhook"
url = "{chat}/out"
[[hooks]]
name = "soc"
id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
targets = ["out"]
types = ["alert"]
actions = ["created"]
"#,
    )
    .await;
    let (s, b) = detail(
        app.post_event(&fixture_json("webhook-alert-updated.json"))
            .await,
    )
    .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("filtered")));
    let (s, b) = detail(
        app.post_event(&fixture_json("webhook-content-proposal.json"))
            .await,
    )
    .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("filtered")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(received(&app.chat, "/out").await.is_empty());
}

#[tokio::test]
async fn unknown_hook_is_404_with_detail() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .post(format!("{}/hooks/not-a-hook", app.address))
        .json(&fixture_json("webhook-alert-created.json"))
        .send()
        .await
        .unwrap();
    let (s, b) = detail(res).await;
    assert_eq!(s, 404);
    assert!(b["detail"].as_str().is_some());
}

#[tokio::test]
async fn address_outside_allow_from_is_403() {
    let app = TestApp::spawn_with(
        r#"
[targets.out]
kind = "webhook"
url = "{chat}/out"
[[hooks]]
name = "soc"
id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
targets = ["out"]
allow_from = ["192.0.2.0/24"]
"#,
    )
    .await;
    // X-Forwarded-For from an untrusted peer is ignored: it cannot open the door.
    let res = app
        .client
        .post(app.hook_url())
        .header("X-Forwarded-For", "192.0.2.10")
        .json(&fixture_json("webhook-alert-created.json"))
        .send()
        .await
        .unwrap();
    let (s, b) = detail(res).await;
    assert_eq!(s, 403);
    assert!(b["detail"].as_str().is_some());
}

#[tokio::test]
async fn non_json_and_non_utf8_bodies_are_400() {
    let app = TestApp::spawn().await;
    for body in [
        b"not json".to_vec(),
        vec![0xff, 0xfe, 0x00],
        b"{\"type\":".to_vec(),
    ] {
        let (s, b) = detail(app.post_raw(body, Some("application/json")).await).await;
        assert_eq!(s, 400);
        assert!(b["detail"].as_str().is_some());
    }
}

#[tokio::test]
async fn json_that_is_not_a_v2_event_is_422() {
    let app = TestApp::spawn().await;
    let mut no_type = fixture_json("webhook-alert-created.json");
    no_type.as_object_mut().unwrap().remove("type");
    let mut v1 = fixture_json("webhook-alert-created.json");
    v1["metadata"]["version"] = json!(1);
    let mut no_uuid = fixture_json("webhook-alert-created.json");
    no_uuid["attributes"]
        .as_object_mut()
        .unwrap()
        .remove("uuid");
    let mut no_metadata = fixture_json("webhook-alert-created.json");
    no_metadata.as_object_mut().unwrap().remove("metadata");
    for event in [no_type, v1, no_uuid, no_metadata, json!([1, 2])] {
        let (s, b) = detail(app.post_event(&event).await).await;
        assert_eq!(s, 422, "{event}");
        assert!(b["detail"].as_str().unwrap().contains("version-2"));
    }
}

#[tokio::test]
async fn unknown_types_and_fields_are_accepted() {
    let app = TestApp::spawn().await;
    mount_chat_ok(&app.chat).await;
    let event = json!({
        "type": "rule-deprecated", "action": "created", "future_field": {"x": 1},
        "attributes": {"uuid": "r1"}, "metadata": {"version": 2, "created": "2026-01-01T00:00:00Z"}
    });
    let (s, _) = detail(app.post_event(&event).await).await;
    assert_eq!(s, 202);
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let app = TestApp::spawn().await;
    let mut event = fixture_json("webhook-alert-created.json");
    event["padding"] = json!("x".repeat(70_000));
    let (s, b) = detail(app.post_event(&event).await).await;
    assert_eq!(s, 413);
    assert!(b["detail"].as_str().is_some());
}

#[tokio::test]
async fn non_json_content_type_is_415_and_missing_is_accepted() {
    let app = TestApp::spawn().await;
    mount_alert(&app.sekoia).await;
    mount_chat_ok(&app.chat).await;
    let body = fixture("webhook-alert-created.json");
    let (s, b) = detail(app.post_raw(body.clone(), Some("text/plain")).await).await;
    assert_eq!(s, 415);
    assert!(b["detail"].as_str().is_some());
    let (s, _) = detail(app.post_raw(body, None).await).await;
    assert_eq!(s, 202);
}

#[tokio::test]
async fn locked_store_answers_503_never_2xx_then_recovers() {
    let app = TestApp::spawn().await;
    mount_alert(&app.sekoia).await;
    mount_chat_ok(&app.chat).await;
    // Another process holds the write lock longer than the store's busy timeout.
    let db = app.dir.path().join("relay.db");
    let (release, released) = std::sync::mpsc::channel::<()>();
    let locker = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let _ = released.recv();
        conn.execute_batch("ROLLBACK").unwrap();
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let res = app
        .post_event(&fixture_json("webhook-alert-created.json"))
        .await;
    let (s, b) = detail(res).await;
    assert_eq!(s, 503, "{b}");
    assert!(b["detail"].as_str().is_some());
    let ready = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    release.send(()).unwrap();
    locker.join().unwrap();
    let (s, _) = detail(
        app.post_event(&fixture_json("webhook-alert-created.json"))
            .await,
    )
    .await;
    assert_eq!(
        s, 202,
        "the same event is accepted once the store is writable again"
    );
    let ready = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn().await;
    let h = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status().as_u16(), 200);
    let r = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (s, b) = detail(
        app.client
            .get(format!("{}/nope", app.address))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 404);
    assert!(b["detail"].as_str().is_some());
}

/// Issue 16: the short id is printed in every message and builds the alert link, so one that
/// is not a SEKOIA.IO short id (1–32 ASCII letters and digits) is refused at the door with a
/// 422 that says why, and nothing is stored, enriched or sent; a real one still gets through.
#[tokio::test]
async fn a_short_id_that_is_not_one_is_422_and_nothing_is_delivered() {
    use wiremock::matchers::{body_string_contains, method};
    let app = TestApp::spawn().await;
    mount_alert(&app.sekoia).await;
    wiremock::Mock::given(method("POST"))
        .and(body_string_contains("evil.example"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_string("ok"))
        .expect(0)
        .named("nothing from a refused event")
        .mount(&app.chat)
        .await;
    wiremock::Mock::given(method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_string("ok"))
        .expect(2)
        .named("the real event, to teams and slack")
        .mount(&app.chat)
        .await;

    let mut refused = vec![fixture_json("webhook-alert-hostile.json")];
    for short_id in [
        json!("[Open alert in SEKOIA.IO](https://evil.example/login)"),
        json!("<!channel>"),
        json!("AL1 @all"),
        json!("ALEY4fqz8moo\n"),
        json!("x".repeat(33)),
        json!(12345),
        json!({"href": "https://evil.example"}),
    ] {
        let mut event = alert_event(1);
        event["attributes"]["short_id"] = short_id;
        refused.push(event);
    }
    for event in &refused {
        let (status, body) = detail(app.post_event(event).await).await;
        assert_eq!(status, 422, "{event}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("attributes.short_id") && detail.contains("letters and digits"),
            "{detail}"
        );
        assert!(
            !detail.contains("evil"),
            "the detail does not echo the value: {detail}"
        );
    }

    // The same event with a real short id is accepted and delivered.
    let (status, _) = detail(app.post_event(&alert_event(1)).await).await;
    assert_eq!(status, 202);
    wait_for(&app.chat, "/teams", 1, Duration::from_secs(5)).await;
    wait_for(&app.chat, "/slack", 1, Duration::from_secs(5)).await;
    // Time for a wrongly stored refused event to be delivered too, before verifying.
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.chat.verify().await;
    let alert_fetches = app.sekoia.received_requests().await.unwrap_or_default();
    assert!(
        alert_fetches.iter().all(|r| r
            .url
            .path()
            .ends_with("00000000-0000-4000-8000-000000000001")),
        "only the accepted event was enriched: {:?}",
        alert_fetches
            .iter()
            .map(|r| r.url.path().to_string())
            .collect::<Vec<_>>()
    );
}

/// Every refused post leaves one info line with the hook, the status, the reason and the
/// client address as seen (the `X-Forwarded-For` client behind a trusted proxy); filtered
/// events are logged at debug; a flood is paced and the next line says how many were held.
#[tokio::test]
async fn refusals_are_logged_once_with_hook_reason_and_client_paced_under_a_flood() {
    let sekoia = wiremock::MockServer::start().await;
    let chat = wiremock::MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let routing = format!(
        "[targets.out]\nkind = \"console\"\n\
         [[hooks]]\nname = \"soc\"\nid = \"{HOOK_ID}\"\ntargets = [\"out\"]\ntypes = [\"alert\"]\n\
         [[hooks]]\nname = \"fenced\"\nid = \"fe11ced0-b43c-415d-b1ce-c135fb1dfb0e\"\ntargets = [\"out\"]\nallow_from = [\"203.0.113.0/24\"]\n"
    );
    let text = config_text(&sekoia.uri(), &chat.uri(), dir.path(), &routing).replace(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
    );
    std::fs::write(&config, text).unwrap();
    let relay = RelayProcess::start(&config, &[("RUST_LOG", "debug")]);
    let client = reqwest::Client::new();
    let url = relay.hook_url();
    let post = |body: &'static str, ct: &'static str| {
        client
            .post(&url)
            .header("Content-Type", ct)
            .header("X-Forwarded-For", "198.51.100.7")
            .body(body)
            .send()
    };
    assert_eq!(
        post("{not json", "application/json")
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(post("{}", "text/plain").await.unwrap().status(), 415);
    assert_eq!(
        post("{\"type\": \"alert\"}", "application/json")
            .await
            .unwrap()
            .status(),
        422
    );
    let big: &'static str = Box::leak(format!("[{}1]", "1,".repeat(40_000)).into_boxed_str());
    assert_eq!(post(big, "application/json").await.unwrap().status(), 413);
    let proposal = fixture("webhook-content-proposal.json");
    let r = client
        .post(&url)
        .header("Content-Type", "application/json")
        .header("X-Forwarded-For", "198.51.100.7")
        .body(proposal)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "filtered");
    let fenced = format!("{}/hooks/fe11ced0-b43c-415d-b1ce-c135fb1dfb0e", relay.base);
    let r = client
        .post(&fenced)
        .header("X-Forwarded-For", "198.51.100.7")
        .json(&alert_event(1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        relay
            .wait_for_output("\"status\":403", Duration::from_secs(10))
            .await
    );

    let lines = relay.output();
    let refused: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "post refused")
        .collect();
    let statuses: Vec<u64> = refused
        .iter()
        .filter_map(|v| v["status"].as_u64())
        .collect();
    assert_eq!(statuses, vec![400, 415, 422, 413, 403], "{refused:#?}");
    for v in &refused {
        assert_eq!(v["level"], "INFO", "{v}");
        assert_eq!(
            v["client"], "198.51.100.7",
            "the address allow_from saw: {v}"
        );
        assert!(!v["reason"].as_str().unwrap_or("").is_empty(), "{v}");
    }
    assert_eq!(refused[4]["hook"], "fenced");
    assert!(refused[0]["reason"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    let filtered = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "event filtered by the hook")
        .expect("a debug line for the filtered event");
    assert_eq!(filtered["level"], "DEBUG");
    assert_eq!(filtered["client"], "198.51.100.7");

    // A flood: at most the burst is logged, and a later line counts what was held back.
    for _ in 0..100 {
        assert_eq!(post("{x", "application/json").await.unwrap().status(), 400);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(post("{x", "application/json").await.unwrap().status(), 400);
    let out = relay.stop().await;
    let logged: Vec<Value> = out
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "post refused")
        .collect();
    assert!(logged.len() < 30, "{} lines for 106 refusals", logged.len());
    let held: u64 = logged.iter().filter_map(|v| v["suppressed"].as_u64()).sum();
    assert!(held > 70, "suppressed lines are counted: {held}");
}
