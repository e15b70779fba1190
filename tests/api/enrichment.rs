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

/// The Alert API mock for batches: the list endpoint answers the alerts of `match[uuid]`,
/// the single endpoint its alert, each the fixture with that uuid.
struct ListingApi;

fn listed_alert(uuid: &str) -> Value {
    let mut a = fixture_json("alert.json");
    a["uuid"] = Value::from(uuid);
    a
}

impl wiremock::Respond for ListingApi {
    fn respond(&self, req: &wiremock::Request) -> ResponseTemplate {
        let body = match req.url.path().strip_prefix("/v1/sic/alerts/") {
            Some(uuid) => listed_alert(uuid),
            None => {
                let items: Vec<Value> = list_uuids(req).iter().map(|u| listed_alert(u)).collect();
                serde_json::json!({"total": items.len(), "items": items})
            }
        };
        ResponseTemplate::new(200).set_body_json(body)
    }
}

/// The uuids a list call asked for (none for a single-alert call).
fn list_uuids(req: &wiremock::Request) -> Vec<String> {
    req.url
        .query_pairs()
        .find(|(k, _)| k == "match[uuid]")
        .map(|(_, v)| v.split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

fn numbered_event(n: usize) -> (String, Value) {
    let uuid = format!("00000000-0000-4000-8000-{n:012}");
    let mut e = fixture_json("webhook-alert-created.json");
    e["attributes"]["uuid"] = Value::from(uuid.clone());
    e["attributes"]["short_id"] = Value::from(format!("ALbatch{n}"));
    (uuid, e)
}

const WAIT: Duration = Duration::from_secs(20);

/// Deliveries claimed together get their alerts from one list call (README, "Enrichment"):
/// events that waited while their unpaced target was paused are not fetched one by one.
#[tokio::test]
async fn alerts_of_deliveries_claimed_together_come_from_one_list_call() {
    claimed_together(true).await;
}

/// Without the list endpoint (an API that refuses it), the same alerts are fetched one by one
/// and still go out enriched; the next batch does not ask for the list again.
#[tokio::test]
async fn a_refused_list_call_falls_back_to_one_call_per_alert() {
    claimed_together(false).await;
}

/// Pause the unpaced target with a 429 on `first`, post `rest` meanwhile (they wait in the
/// store, to be claimed together), and return what the target got once all were sent.
async fn while_paused(app: &TestApp, first: &Value, rest: &[(String, Value)]) -> Vec<Value> {
    let before = received(&app.chat, "/soar").await.len();
    // Retry-After pauses the whole target (for `backoff_max_secs`, 1 s, at most).
    Mock::given(method("POST"))
        .and(path_regex("^/soar$"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "2"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.chat)
        .await;
    assert_eq!(app.post_event(first).await.status(), 202);
    wait_for(&app.chat, "/soar", before + 1, WAIT).await;
    // The relay has read the 429 well before this.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (_, e) in rest {
        assert_eq!(app.post_event(e).await.status(), 202);
    }
    let want = before + 2 + rest.len();
    let got = wait_for(&app.chat, "/soar", want, WAIT).await;
    assert_eq!(
        got.len(),
        want,
        "the 429'd message again, and those that waited"
    );
    got[before..].iter().map(body_json).collect()
}

async fn claimed_together(list_works: bool) {
    let app = TestApp::spawn_with(SOAR_ONLY).await;
    if !list_works {
        Mock::given(method("GET"))
            .and(path_regex("^/v1/sic/alerts$"))
            .respond_with(ResponseTemplate::new(403))
            .with_priority(1)
            .expect(1)
            .mount(&app.sekoia)
            .await;
    }
    Mock::given(method("GET"))
        .and(path_regex("^/v1/sic/alerts(/.+)?$"))
        .respond_with(ListingApi)
        .mount(&app.sekoia)
        .await;
    mount_chat_ok(&app.chat).await;
    let events: Vec<(String, Value)> = (0..18).map(numbered_event).collect();
    let got = while_paused(&app, &events[0].1, &events[1..9]).await;
    for (uuid, _) in &events[..9] {
        assert!(
            got.iter()
                .any(|b| b["enriched"] == true && b["alert"]["uuid"] == uuid.as_str()),
            "{uuid} delivered with its own alert"
        );
    }
    let api = app.sekoia.received_requests().await.unwrap_or_default();
    let single = |api: &[wiremock::Request]| -> Vec<String> {
        let mut s: Vec<String> = api
            .iter()
            .filter_map(|r| r.url.path().strip_prefix("/v1/sic/alerts/"))
            .map(str::to_string)
            .collect();
        s.sort();
        s
    };
    let lists: Vec<Vec<String>> = api
        .iter()
        .map(list_uuids)
        .filter(|u| !u.is_empty())
        .collect();
    let uuids = |r: std::ops::Range<usize>| -> Vec<String> {
        let mut u: Vec<String> = events[r].iter().map(|(u, _)| u.clone()).collect();
        u.sort();
        u
    };
    assert_eq!(lists, [uuids(1..9)], "one list call for the 8 that waited");
    if list_works {
        assert_eq!(single(&api), uuids(0..1), "only the first alert alone");
        return;
    }
    assert_eq!(
        single(&api),
        uuids(0..9),
        "each fetched alone after the refusal"
    );
    // A second batch: fetched one by one at once, without a list call (`expect(1)` above).
    let got = while_paused(&app, &events[9].1, &events[10..]).await;
    assert!(got.iter().all(|b| b["enriched"] == true), "all enriched");
    let api = app.sekoia.received_requests().await.unwrap_or_default();
    assert_eq!(single(&api), uuids(0..18));
    app.sekoia.verify().await;
}
