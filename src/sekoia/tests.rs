//! The Alert API client against a wiremock server on 127.0.0.1: "called exactly n times" is an
//! assertion (`.expect(n)`, checked when the server drops). Timing is only ever bounded below.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::*;
use crate::retry::Jitter;

const ALERT: &str = include_str!("../../tests/fixtures/alert.json");
const CREATED: &str = include_str!("../../tests/fixtures/webhook-alert-created.json");
const UPDATED: &str = include_str!("../../tests/fixtures/webhook-alert-updated.json");
const REPORT: &str = include_str!("../../tests/fixtures/webhook-content-proposal.json");
const ALERT_PATH: &str = "/v1/sic/alerts/5696845f-9ecf-4431-9f0f-48ee0ee2eff1";
const KEY: &str = "test-key-0123456789abcdef";

// ---- helpers ---------------------------------------------------------------------------------

struct Setup {
    ttl_secs: u64,
    per_sec: u32,
    deadline_secs: u64,
    timeout_secs: u64,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            ttl_secs: 60,
            per_sec: 0,
            deadline_secs: 30,
            timeout_secs: 5,
        }
    }
}

impl Setup {
    fn client(self) -> AlertClient {
        let settings = SekoiaSettings {
            cache_ttl_secs: self.ttl_secs,
            max_requests_per_sec: self.per_sec,
            enrich_deadline_secs: self.deadline_secs,
            timeout_secs: self.timeout_secs,
            ..SekoiaSettings::default()
        };
        // Milliseconds instead of 250 ms..10 s, so retry scenarios run fast.
        let retry = RetryPolicy::exponential(
            Duration::from_millis(5),
            Duration::from_millis(40),
            Jitter::Full,
        );
        AlertClient::with_retry(&settings, retry).expect("client builds")
    }
}

fn client() -> AlertClient {
    Setup::default().client()
}

fn creds(api_url: &str) -> Credentials {
    Credentials {
        api_url: api_url.to_owned(),
        api_key: SecretString::from(KEY),
    }
}

fn event(raw: &str) -> WebhookEvent {
    WebhookEvent::parse(raw.as_bytes()).expect("fixture is a valid v2 event")
}

/// The created-alert fixture with one field of its JSON replaced.
fn event_with(pointer: &str, value: Value) -> WebhookEvent {
    let mut json: Value = serde_json::from_str(CREATED).expect("fixture is JSON");
    *json.pointer_mut(pointer).expect("pointer exists") = value;
    WebhookEvent::from_json(json).expect("still a valid v2 event")
}

fn alert_json() -> Value {
    serde_json::from_str(ALERT).expect("fixture is JSON")
}

fn ok_alert() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(ALERT, "application/json")
}

async fn calls(server: &MockServer) -> usize {
    server.received_requests().await.map_or(0, |r| r.len())
}

fn unavailable(outcome: &Enrichment) -> &str {
    match outcome {
        Enrichment::Unavailable(reason) => reason,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

fn enriched(outcome: &Enrichment) -> &Value {
    match outcome {
        Enrichment::Enriched(alert) => alert.json(),
        other => panic!("expected Enriched, got {other:?}"),
    }
}

/// Everything logged while the guard lives (current-thread runtime only).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

thread_local! {
    /// Where this thread's log lines go while a test captures them.
    static SINK: std::cell::RefCell<Option<Logs>> = const { std::cell::RefCell::new(None) };
}

/// Writes to the capturing test's buffer, if the current thread has one.
struct ThreadSink;

impl Write for ThreadSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        SINK.with(|s| {
            if let Some(logs) = s.borrow_mut().as_mut() {
                logs.0.lock().expect("not poisoned").extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Stops capturing on drop.
struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        SINK.with(|s| *s.borrow_mut() = None);
    }
}

impl Logs {
    /// Capture this thread's logs (tokio tests run on one thread). One global subscriber for
    /// the whole test binary: a thread-scoped one (`set_default`) loses events at random,
    /// because tracing caches a callsite's interest globally when another test's thread hits
    /// it first with no subscriber.
    fn capture(&self) -> CaptureGuard {
        static INIT: std::sync::Once = std::sync::Once::new();
        INIT.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(|| ThreadSink)
                .finish();
            // Another test binary module may have installed one first; ours then stays off
            // and the assertions below would say so.
            let _ = tracing::subscriber::set_global_default(subscriber);
        });
        SINK.with(|s| *s.borrow_mut() = Some(self.clone()));
        CaptureGuard
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).into_owned()
    }
}

// ---- the request -----------------------------------------------------------------------------

#[test]
fn the_client_can_be_shared_by_workers() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<AlertClient>();
    shared::<Enrichment>();
    // The future of `enrich` must be spawnable by delivery workers.
    fn spawnable<F: std::future::Future + Send>(_: F) {}
    let client = client();
    let creds = creds("http://127.0.0.1:9");
    let event = event(CREATED);
    spawnable(client.enrich(&creds, &event));
}

#[tokio::test]
async fn request_has_the_exact_path_query_and_headers() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(ALERT_PATH))
        .and(query_param("stix", "false"))
        .and(query_param("comments", "false"))
        .and(query_param("countermeasures", "false"))
        .and(query_param("history", "false"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .and(header("accept", "application/json"))
        .and(header(
            "user-agent",
            concat!("sekoia-relay/", env!("CARGO_PKG_VERSION")),
        ))
        .respond_with(ok_alert())
        .expect(1)
        .mount(&server)
        .await;

    let outcome = client()
        .enrich(&creds(&server.uri()), &event(CREATED))
        .await;

    assert_eq!(enriched(&outcome), &alert_json());
}

#[tokio::test]
async fn a_trailing_slash_is_trimmed_and_the_uuid_is_percent_encoded() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/sic/alerts/a%2Fb%20c%3Fd"))
        .respond_with(ok_alert())
        .expect(1)
        .mount(&server)
        .await;
    let odd = event_with("/attributes/uuid", json!("a/b c?d"));

    let outcome = client()
        .enrich(&creds(&format!("{}/api/", server.uri())), &odd)
        .await;

    enriched(&outcome);
}

// ---- one call per alert ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_calls_for_one_event_make_one_request() {
    let server = MockServer::start().await;
    Mock::given(path(ALERT_PATH))
        .respond_with(ok_alert().set_delay(Duration::from_millis(200)))
        .expect(1)
        .mount(&server)
        .await;
    let client = Arc::new(client());
    let creds = Arc::new(creds(&server.uri()));
    let event = Arc::new(event(CREATED));

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (client, creds, event) = (client.clone(), creds.clone(), event.clone());
        tasks.spawn(async move { client.enrich(&creds, &event).await });
    }
    let outcomes = tasks.join_all().await;

    assert_eq!(outcomes.len(), 10);
    for outcome in &outcomes {
        assert_eq!(enriched(outcome), &alert_json());
    }
}

#[tokio::test]
async fn a_new_created_at_fetches_again_and_the_same_event_does_not() {
    let server = MockServer::start().await;
    Mock::given(path(ALERT_PATH))
        .respond_with(ok_alert())
        .expect(2)
        .mount(&server)
        .await;
    let client = client();
    let creds = creds(&server.uri());

    enriched(&client.enrich(&creds, &event(CREATED)).await);
    enriched(&client.enrich(&creds, &event(CREATED)).await); // a second target: cached
    enriched(&client.enrich(&creds, &event(UPDATED)).await); // new created_at: fresh data
    enriched(&client.enrich(&creds, &event(UPDATED)).await);
}

#[tokio::test]
async fn another_api_key_is_another_cache_entry() {
    let server = MockServer::start().await;
    Mock::given(path(ALERT_PATH))
        .respond_with(ok_alert())
        .expect(2)
        .mount(&server)
        .await;
    let client = client();
    let other = Credentials {
        api_url: server.uri(),
        api_key: SecretString::from("another-community-key"),
    };

    enriched(&client.enrich(&creds(&server.uri()), &event(CREATED)).await);
    enriched(&client.enrich(&other, &event(CREATED)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ttl_zero_keeps_nothing_but_still_shares_the_request_in_flight() {
    let server = MockServer::start().await;
    Mock::given(path(ALERT_PATH))
        .respond_with(ok_alert().set_delay(Duration::from_millis(200)))
        .expect(2)
        .mount(&server)
        .await;
    let client = Setup {
        ttl_secs: 0,
        ..Setup::default()
    }
    .client();
    let creds = creds(&server.uri());
    let event = event(CREATED);

    let concurrent = futures_util::future::join_all((0..5).map(|_| client.enrich(&creds, &event)));
    for outcome in concurrent.await {
        enriched(&outcome);
    }
    assert_eq!(calls(&server).await, 1);
    enriched(&client.enrich(&creds, &event).await); // nothing kept: a second call
}

// ---- not enriched by design ------------------------------------------------------------------

#[tokio::test]
async fn deleted_and_non_alert_events_are_not_applicable_and_make_no_call() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ok_alert())
        .expect(0)
        .mount(&server)
        .await;
    let client = client();
    let creds = creds(&server.uri());

    let deleted = event_with("/action", json!("deleted"));
    assert!(matches!(
        client.enrich(&creds, &deleted).await,
        Enrichment::NotApplicable
    ));
    assert!(matches!(
        client.enrich(&creds, &event(REPORT)).await,
        Enrichment::NotApplicable
    ));
}

#[tokio::test]
async fn an_empty_key_is_unavailable_without_a_call() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ok_alert())
        .expect(0)
        .mount(&server)
        .await;
    let client = client();

    for key in ["", "  \n"] {
        let creds = Credentials {
            api_url: server.uri(),
            api_key: SecretString::from(key),
        };
        let outcome = client.enrich(&creds, &event(CREATED)).await;
        assert_eq!(unavailable(&outcome), "no API key configured");
    }
}

// ---- retries ---------------------------------------------------------------------------------

#[tokio::test]
async fn transient_errors_are_retried_until_success() {
    let server = MockServer::start().await;
    Mock::given(path(ALERT_PATH))
        .respond_with(ResponseTemplate::new(500).set_body_string("boom"))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(path(ALERT_PATH))
        .respond_with(ok_alert())
        .expect(1)
        .mount(&server)
        .await;

    let outcome = client()
        .enrich(&creds(&server.uri()), &event(CREATED))
        .await;

    assert_eq!(enriched(&outcome), &alert_json());
}

#[tokio::test]
async fn retry_after_is_honoured_on_429() {
    let server = MockServer::start().await;
    Mock::given(path(ALERT_PATH))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path(ALERT_PATH))
        .respond_with(ok_alert())
        .expect(1)
        .mount(&server)
        .await;
    let started = Instant::now();

    let outcome = client()
        .enrich(&creds(&server.uri()), &event(CREATED))
        .await;

    enriched(&outcome);
    // The backoff alone is at most 40 ms here: only Retry-After explains a second's wait.
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn a_timeout_is_retried() {
    let server = MockServer::start().await;
    Mock::given(path(ALERT_PATH))
        .respond_with(ok_alert().set_delay(Duration::from_secs(3)))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path(ALERT_PATH))
        .respond_with(ok_alert())
        .expect(1)
        .mount(&server)
        .await;
    let client = Setup {
        timeout_secs: 1,
        ..Setup::default()
    }
    .client();

    let outcome = client.enrich(&creds(&server.uri()), &event(CREATED)).await;

    enriched(&outcome);
}

#[tokio::test]
async fn failing_past_the_deadline_is_unavailable() {
    let server = MockServer::start().await;
    Mock::given(path(ALERT_PATH))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let client = Setup {
        deadline_secs: 1,
        ..Setup::default()
    }
    .client();
    let started = Instant::now();

    let outcome = client.enrich(&creds(&server.uri()), &event(CREATED)).await;

    // "for 1 s" on any sane machine; only the shape is asserted, not the timing.
    let reason = unavailable(&outcome);
    assert!(reason.starts_with("API unavailable for "), "{reason}");
    assert!(reason.ends_with(" s (last: HTTP 500)"), "{reason}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(calls(&server).await > 1);
    // Cached: a second target does not wait the deadline again.
    let before = calls(&server).await;
    unavailable(&client.enrich(&creds(&server.uri()), &event(CREATED)).await);
    assert_eq!(calls(&server).await, before);
}

#[tokio::test]
async fn connection_errors_are_retried_until_the_deadline() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let client = Setup {
        deadline_secs: 1,
        ..Setup::default()
    }
    .client();
    let started = Instant::now();

    let outcome = client
        .enrich(&creds(&format!("http://127.0.0.1:{port}")), &event(CREATED))
        .await;

    // "for 1 s" on any sane machine; only the shape is asserted, not the timing.
    let reason = unavailable(&outcome);
    assert!(reason.starts_with("API unavailable for "), "{reason}");
    assert!(reason.ends_with(" s (last: connection error)"), "{reason}");
    assert!(started.elapsed() >= Duration::from_secs(1));
}

// ---- giving up at once -----------------------------------------------------------------------

async fn give_up_once(status: u16, body: &str) -> (String, String) {
    let server = MockServer::start().await;
    Mock::given(path(ALERT_PATH))
        .respond_with(ResponseTemplate::new(status).set_body_string(body))
        .expect(1)
        .mount(&server)
        .await;
    let client = client();
    let creds = creds(&server.uri());
    let logs = Logs::default();
    let guard = logs.capture();

    let outcome = client.enrich(&creds, &event(CREATED)).await;
    // A second target of the same event gets the cached answer: still one call.
    let again = client.enrich(&creds, &event(CREATED)).await;

    drop(guard);
    assert_eq!(unavailable(&outcome), unavailable(&again));
    (unavailable(&outcome).to_owned(), logs.text())
}

#[tokio::test]
async fn unauthorized_is_unavailable_after_one_call_and_logs_the_permission() {
    let (reason, logs) = give_up_once(401, r#"{"message":"Invalid token"}"#).await;

    assert_eq!(
        reason,
        "SEKOIA.IO API answered 401 (API key invalid or expired)"
    );
    assert!(logs.contains("SIC_READ_ALERTS"), "{logs}");
    assert!(logs.contains("Invalid token"), "{logs}");
    assert!(logs.contains("ALEY4fqz8moo"), "{logs}");
    assert!(!logs.contains(KEY) && !reason.contains(KEY), "{logs}");
    assert!(
        !logs.contains("/v1/sic") && !reason.contains("/v1/sic"),
        "{logs}"
    );
}

#[tokio::test]
async fn forbidden_is_unavailable_after_one_call_and_logs_the_permission() {
    let (reason, logs) = give_up_once(403, "Forbidden: Insufficient permissions").await;

    assert_eq!(
        reason,
        "SEKOIA.IO API answered 403 (API key lacks the SIC_READ_ALERTS permission)"
    );
    assert!(logs.contains("SIC_READ_ALERTS"), "{logs}");
    assert!(!logs.contains(KEY), "{logs}");
}

#[tokio::test]
async fn not_found_is_unavailable_after_one_call() {
    let (reason, logs) = give_up_once(404, "").await;

    assert_eq!(reason, "SEKOIA.IO API answered 404 (alert not found)");
    assert!(!logs.contains(KEY), "{logs}");
}

#[tokio::test]
async fn other_client_errors_are_unavailable_after_one_call() {
    let (reason, _) = give_up_once(400, r#"{"message":"bad"}"#).await;

    assert_eq!(reason, "SEKOIA.IO API answered 400 (unexpected answer)");
}

#[tokio::test]
async fn a_200_that_is_not_a_json_object_is_unavailable() {
    for body in ["<html>captive portal</html>", "[1,2]", ""] {
        let server = MockServer::start().await;
        Mock::given(path(ALERT_PATH))
            .respond_with(ResponseTemplate::new(200).set_body_string(body))
            .expect(1)
            .mount(&server)
            .await;

        let outcome = client()
            .enrich(&creds(&server.uri()), &event(CREATED))
            .await;

        assert_eq!(
            unavailable(&outcome),
            "SEKOIA.IO API answered 200 with a body that is not a JSON alert"
        );
    }
}

#[tokio::test]
async fn logs_during_retries_never_show_the_key_or_the_path() {
    let server = MockServer::start().await;
    Mock::given(path(ALERT_PATH))
        .respond_with(ResponseTemplate::new(502).set_body_string("bad gateway"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path(ALERT_PATH))
        .respond_with(ok_alert())
        .mount(&server)
        .await;
    let logs = Logs::default();
    let guard = logs.capture();

    enriched(
        &client()
            .enrich(&creds(&server.uri()), &event(CREATED))
            .await,
    );

    drop(guard);
    let text = logs.text();
    assert!(text.contains("HTTP 502"), "{text}");
    assert!(
        text.contains(&server.uri()),
        "the API host is logged: {text}"
    );
    assert!(!text.contains(KEY), "{text}");
    assert!(!text.contains("/v1/sic"), "{text}");
}

// ---- rate limit ------------------------------------------------------------------------------

#[tokio::test]
async fn the_global_rate_limit_spaces_requests() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ok_alert())
        .expect(3)
        .mount(&server)
        .await;
    let client = Setup {
        per_sec: 10,
        ..Setup::default()
    }
    .client();
    let creds = creds(&server.uri());
    let started = Instant::now();

    for uuid in ["a", "b", "c"] {
        enriched(
            &client
                .enrich(&creds, &event_with("/attributes/uuid", json!(uuid)))
                .await,
        );
    }

    // 10 per second, evenly spaced: the third request waits at least 2 × 100 ms.
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn redirects_are_never_followed_even_to_a_server_serving_the_alert() {
    for status in [301, 302, 307, 308] {
        let elsewhere = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ok_alert())
            .expect(0)
            .mount(&elsewhere)
            .await;
        let server = MockServer::start().await;
        Mock::given(path(ALERT_PATH))
            .respond_with(
                ResponseTemplate::new(status)
                    .insert_header("Location", format!("{}{ALERT_PATH}", elsewhere.uri())),
            )
            .expect(1)
            .mount(&server)
            .await;

        let outcome = client()
            .enrich(&creds(&server.uri()), &event(CREATED))
            .await;

        let reason = unavailable(&outcome);
        assert_eq!(
            reason,
            format!(
                "SEKOIA.IO API redirected to {} (HTTP {status}): check api_url",
                elsewhere.uri()
            )
        );
        // `elsewhere` verifies on drop that it never got the request (nor the key).
    }
}

/// Enrich the created fixture once against an API that answers `response` exactly once.
async fn enrich_once(response: ResponseTemplate) -> Enrichment {
    let server = MockServer::start().await;
    Mock::given(path(ALERT_PATH))
        .respond_with(response)
        .expect(1)
        .mount(&server)
        .await;
    client()
        .enrich(&creds(&server.uri()), &event(CREATED))
        .await
}

/// A JSON alert of about `bytes` bytes: the real fixture with a long description.
fn alert_of_size(bytes: usize) -> String {
    let mut alert = alert_json();
    alert["description"] = Value::from("x".repeat(bytes));
    serde_json::to_string(&alert).expect("serialises")
}

#[tokio::test]
async fn an_alert_body_over_1_mib_is_unavailable_and_a_large_one_under_it_is_fine() {
    let outcome = enrich_once(ResponseTemplate::new(200).set_body_raw(
        alert_of_size(alert::MAX_ALERT_BYTES + 1),
        "application/json",
    ))
    .await;
    assert_eq!(
        unavailable(&outcome),
        "SEKOIA.IO API answered 200 with a body over 1 MiB"
    );

    let outcome = enrich_once(ResponseTemplate::new(200).set_body_raw(
        alert_of_size(alert::MAX_ALERT_BYTES - 16 * 1024),
        "application/json",
    ))
    .await;
    assert_eq!(enriched(&outcome)["short_id"], alert_json()["short_id"]);
}

#[tokio::test]
async fn concurrent_large_answers_all_complete_within_the_read_budget() {
    // Ten near-cap bodies at once, more than the memory budget holds: they wait for memory
    // in turn, none is refused or lost.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            alert_of_size(alert::MAX_ALERT_BYTES - 16 * 1024),
            "application/json",
        ))
        .expect(10)
        .mount(&server)
        .await;
    let client = Arc::new(client());
    let mut tasks = Vec::new();
    for n in 0..10 {
        let client = client.clone();
        let uri = server.uri();
        tasks.push(tokio::spawn(async move {
            let ev = event_with(
                "/attributes/uuid",
                Value::from(format!("00000000-0000-4000-8000-{n:012}")),
            );
            // Like a delivery task: the alert is used, then dropped.
            matches!(
                client.enrich(&creds(&uri), &ev).await,
                Enrichment::Enriched(_)
            )
        }));
    }
    for t in tasks {
        assert!(t.await.expect("task"), "enriched");
    }
    // Emptying the cache (lazily evicted) returns the rest.
    client.cache.invalidate_all();
    for _ in 0..50 {
        client.cache.run_pending_tasks().await;
        if client.memory.available() == alert::ALERT_MEMORY {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        client.memory.available(),
        alert::ALERT_MEMORY,
        "every reservation returned"
    );
}
