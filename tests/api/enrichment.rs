//! Enrichment never loses an alert (README, "Delivery guarantees"): every failure still delivers, unenriched.

use std::time::Duration;

use serde_json::Value;
use wiremock::matchers::{header, method, path_regex};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

const SOAR_ONLY: &str = r#"
[targets.soar]
kind = "webhook"
url = "{chat}/soar"
[[hooks]]
name = "soc"
id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
targets = ["soar"]
"#;

/// Post the created-alert fixture with the API answering `status` and return what the
/// generic webhook received.
async fn deliver_with_api_status(status: u16, api_calls: u64) -> Value {
    let app = TestApp::spawn_with(SOAR_ONLY).await;
    Mock::given(method("GET"))
        .and(path_regex("^/v1/sic/alerts/"))
        .respond_with(ResponseTemplate::new(status).set_body_string("{\"message\":\"nope\"}"))
        .expect(api_calls)
        .mount(&app.sekoia)
        .await;
    mount_chat_ok(&app.chat).await;
    assert_eq!(
        app.post_event(&fixture_json("webhook-alert-created.json"))
            .await
            .status(),
        202
    );
    let got = wait_for(&app.chat, "/soar", 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1, "delivered despite API {status}");
    app.sekoia.verify().await;
    body_json(&got[0])
}

fn assert_unenriched(body: &Value, reason: &str) {
    assert_eq!(body["enriched"], false, "{body}");
    assert!(body["alert"].is_null(), "{body}");
    let error = body["enrichment_error"].as_str().unwrap_or_default();
    assert!(error.contains(reason), "{error:?} should mention {reason}");
    assert_eq!(body["event"]["attributes"]["short_id"], "ALEY4fqz8moo");
    assert_eq!(
        body["link"],
        "https://app.sekoia.test/operations/alerts/ALEY4fqz8moo"
    );
}

#[tokio::test]
async fn api_401_delivers_unenriched_after_one_call() {
    let body = deliver_with_api_status(401, 1).await;
    assert_unenriched(&body, "401");
}

#[tokio::test]
async fn api_404_delivers_unenriched_after_one_call() {
    let body = deliver_with_api_status(404, 1).await;
    assert_unenriched(&body, "404");
}

#[tokio::test]
async fn api_down_past_the_deadline_delivers_unenriched() {
    let app = TestApp::spawn_with(SOAR_ONLY).await;
    Mock::given(method("GET"))
        .and(path_regex("^/v1/sic/alerts/"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&app.sekoia)
        .await;
    mount_chat_ok(&app.chat).await;
    let started = std::time::Instant::now();
    assert_eq!(
        app.post_event(&fixture_json("webhook-alert-created.json"))
            .await
            .status(),
        202
    );
    let got = wait_for(&app.chat, "/soar", 1, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 1);
    // enrich_deadline_secs is 2 in the test config: the relay kept trying that long.
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(
        received(
            &app.sekoia,
            "/v1/sic/alerts/5696845f-9ecf-4431-9f0f-48ee0ee2eff1"
        )
        .await
        .len()
            > 1
    );
    assert_unenriched(&body_json(&got[0]), "500");
}

#[tokio::test]
async fn deleted_alerts_are_not_enriched() {
    let app = TestApp::spawn_with(SOAR_ONLY).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&app.sekoia)
        .await;
    mount_chat_ok(&app.chat).await;
    let mut event = fixture_json("webhook-alert-created.json");
    event["action"] = "deleted".into();
    assert_eq!(app.post_event(&event).await.status(), 202);
    let got = wait_for(&app.chat, "/soar", 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(body_json(&got[0])["event"]["action"], "deleted");
    app.sekoia.verify().await;
}

#[tokio::test]
async fn per_hook_api_key_and_app_url_override_the_global_ones() {
    let app = TestApp::spawn_with(
        r#"
[targets.soar]
kind = "webhook"
url = "{chat}/soar"
[[hooks]]
name = "soc"
id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
targets = ["soar"]
api_key = "community-b-key"
app_url = "https://app.usa1.sekoia.io"
"#,
    )
    .await;
    Mock::given(method("GET"))
        .and(header("Authorization", "Bearer community-b-key"))
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
    let got = wait_for(&app.chat, "/soar", 1, Duration::from_secs(10)).await;
    let body = body_json(&got[0]);
    assert_eq!(body["enriched"], true);
    assert_eq!(
        body["link"],
        "https://app.usa1.sekoia.io/operations/alerts/ALEY4fqz8moo"
    );
    app.sekoia.verify().await;
}
