//! Faults (the delivery guarantees under worse than the happy path): a target down for a long time, a 429
//! storm, the Alert API slow, flapping or down, the store's disk full. Every test asserts that
//! each acknowledged (202) event reached every routed target at least once, and counts the
//! duplicates. The numbers are printed: `cargo test faults -- --nocapture` shows them (they
//! are the "observed" column of docs/reliability.md).
//!
//! The crash tests (SIGKILL, SIGTERM, SIGHUP on the real binary) are in `crashes.rs` and use
//! the same [`Target`] and [`Tally`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::*;

/// Two independent JSON webhook targets: each request names its event's uuid, so what each
/// target received can be checked event by event.
pub const TWO_TARGETS: &str = r#"
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
"#;

pub const WAIT: Duration = Duration::from_secs(30);

/// The uuid of `alert_event(n)`.
pub fn uuid(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// The test config with both targets and `max_attempts` raised so that long outages are
/// retried rather than dead-lettered.
pub fn fault_config(
    sekoia: &MockServer,
    chat: &MockServer,
    dir: &Path,
    max_attempts: u32,
) -> String {
    config_text(&sekoia.uri(), &chat.uri(), dir, TWO_TARGETS).replace(
        "max_attempts = 5",
        &format!("max_attempts = {max_attempts}"),
    )
}

fn event_uuid(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["event"]["attributes"]["uuid"].as_str().map(String::from))
        .unwrap_or_default()
}

type Rule = dyn Fn(&str, usize) -> u16 + Send + Sync;

/// A chat target standing in for Teams/Slack/a SOAR: `rule(uuid, k)` gives the status of the
/// k-th attempt (0-based) for an event; it records attempts and 2xx answers per event uuid.
#[derive(Clone)]
pub struct Target {
    rule: Arc<Rule>,
    delay: Duration,
    retry_after: Option<&'static str>,
    attempts: Arc<Mutex<HashMap<String, usize>>>,
    delivered: Arc<Mutex<HashMap<String, usize>>>,
    total: Arc<AtomicUsize>,
}

impl Target {
    pub fn new(rule: impl Fn(&str, usize) -> u16 + Send + Sync + 'static) -> Self {
        Self {
            rule: Arc::new(rule),
            delay: Duration::ZERO,
            retry_after: None,
            attempts: Default::default(),
            delivered: Default::default(),
            total: Default::default(),
        }
    }

    /// Always 200.
    pub fn ok() -> Self {
        Self::new(|_, _| 200)
    }

    /// Answer after `delay` (the request is counted when it arrives).
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// `Retry-After` on 429 and 503 answers.
    pub fn with_retry_after(mut self, value: &'static str) -> Self {
        self.retry_after = Some(value);
        self
    }

    pub async fn mount(&self, chat: &MockServer, at: &str) {
        Mock::given(method("POST"))
            .and(path(at))
            .respond_with(self.clone())
            .mount(chat)
            .await;
    }

    /// Requests received, whatever the answer.
    pub fn attempts(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    pub fn attempts_of(&self, uuid: &str) -> usize {
        self.attempts
            .lock()
            .unwrap()
            .get(uuid)
            .copied()
            .unwrap_or(0)
    }

    /// 2xx answers per event uuid.
    pub fn delivered(&self) -> HashMap<String, usize> {
        self.delivered.lock().unwrap().clone()
    }

    /// Wait until every uuid of `acked` got a 2xx (up to `within`), then count.
    pub async fn wait_all(&self, acked: &HashSet<String>, within: Duration) -> Tally {
        let start = Instant::now();
        loop {
            let tally = Tally::of(&self.delivered(), acked, self.attempts());
            if tally.missing.is_empty() || start.elapsed() > within {
                return tally;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Respond for Target {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let uuid = event_uuid(&req.body);
        self.total.fetch_add(1, Ordering::SeqCst);
        let k = {
            let mut attempts = self.attempts.lock().unwrap();
            let n = attempts.entry(uuid.clone()).or_default();
            *n += 1;
            *n - 1
        };
        let status = (self.rule)(&uuid, k);
        if (200..300).contains(&status) {
            *self.delivered.lock().unwrap().entry(uuid).or_default() += 1;
        }
        let mut res = ResponseTemplate::new(status)
            .set_body_string(if status < 300 { "ok" } else { "busy" })
            .set_delay(self.delay);
        if let (Some(ra), 429 | 503) = (self.retry_after, status) {
            res = res.insert_header("Retry-After", ra);
        }
        res
    }
}

/// What one target got, against what the relay acknowledged.
#[derive(Debug)]
pub struct Tally {
    pub acked: usize,
    /// Acknowledged events delivered at least once.
    pub delivered: usize,
    /// Acknowledged events never delivered (must stay empty).
    pub missing: Vec<String>,
    /// Extra 2xx deliveries of an event beyond its first.
    pub duplicates: usize,
    /// Events delivered that the sender never saw a 202 for (committed, but the answer was
    /// lost to a crash): at least once, from the store's side.
    pub unacked_delivered: usize,
    pub attempts: usize,
}

impl Tally {
    fn of(delivered: &HashMap<String, usize>, acked: &HashSet<String>, attempts: usize) -> Tally {
        let mut missing: Vec<String> = acked
            .iter()
            .filter(|u| !delivered.contains_key(*u))
            .cloned()
            .collect();
        missing.sort();
        Tally {
            acked: acked.len(),
            delivered: acked.len() - missing.len(),
            missing,
            duplicates: delivered.values().map(|n| n - 1).sum(),
            unacked_delivered: delivered.keys().filter(|u| !acked.contains(*u)).count(),
            attempts,
        }
    }

    /// Fail with the numbers when an acknowledged event is missing.
    pub fn assert_complete(&self, what: &str) {
        assert!(
            self.missing.is_empty(),
            "{what}: {} of {} acknowledged events never delivered (first: {:?}); {self:?}",
            self.missing.len(),
            self.acked,
            self.missing.iter().take(5).collect::<Vec<_>>()
        );
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "acked {} delivered {} missing {} duplicates {} unacked-but-delivered {} attempts {}",
            self.acked,
            self.delivered,
            self.missing.len(),
            self.duplicates,
            self.unacked_delivered,
            self.attempts
        )
    }
}

/// Delivery rows per state, read straight from the store file (as `dead-letters list` does).
pub fn store_states(db: &Path) -> HashMap<String, i64> {
    let conn = rusqlite::Connection::open(db).expect("open the store");
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut stmt = conn
        .prepare("SELECT state, COUNT(*) FROM deliveries GROUP BY state")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// The public event ids the store holds.
pub fn stored_event_ids(db: &Path) -> HashSet<String> {
    let conn = rusqlite::Connection::open(db).expect("open the store");
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut stmt = conn.prepare("SELECT public_id FROM events").unwrap();
    let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
    rows.map(Result::unwrap).collect()
}

/// The answers to a burst of posts.
#[derive(Debug, Default)]
pub struct Burst {
    /// uuid → event_id of every 202.
    pub acked: HashMap<String, String>,
    /// Other statuses and how often.
    pub statuses: HashMap<u16, usize>,
    /// Requests that got no HTTP answer (connection refused or reset: the sender retries).
    pub transport_errors: usize,
}

impl Burst {
    pub fn acked_uuids(&self) -> HashSet<String> {
        self.acked.keys().cloned().collect()
    }
}

/// Post `alert_event(n)` for each n of `ids` to `url` from `concurrency` clients at once;
/// `answered` counts the answers (or failures) as they come, so a caller can strike mid-burst.
pub async fn burst(
    url: String,
    ids: std::ops::Range<usize>,
    concurrency: usize,
    answered: Arc<AtomicUsize>,
) -> Burst {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let queue = Arc::new(Mutex::new(ids));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, queue, url, answered) =
            (client.clone(), queue.clone(), url.clone(), answered.clone());
        tasks.spawn(async move {
            let mut out = Vec::new();
            loop {
                let next = queue.lock().unwrap().next();
                let Some(n) = next else { break };
                let res = match client.post(&url).json(&alert_event(n)).send().await {
                    Ok(res) => {
                        let status = res.status().as_u16();
                        let body: Value = res.json().await.unwrap_or(Value::Null);
                        Ok((status, body))
                    }
                    Err(e) => Err(e),
                };
                answered.fetch_add(1, Ordering::SeqCst);
                out.push((n, res));
            }
            out
        });
    }
    let mut burst = Burst::default();
    while let Some(done) = tasks.join_next().await {
        for (n, res) in done.unwrap() {
            match res {
                Ok((202, body)) => {
                    let id = body["event_id"].as_str().unwrap_or_default().to_string();
                    burst.acked.insert(uuid(n), id);
                }
                Ok((status, _)) => *burst.statuses.entry(status).or_default() += 1,
                Err(_) => burst.transport_errors += 1,
            }
        }
    }
    burst
}

/// Wait until `counter` reaches `n` (up to `within`).
pub async fn wait_count(counter: &AtomicUsize, n: usize, within: Duration) {
    let start = Instant::now();
    while counter.load(Ordering::SeqCst) < n && start.elapsed() < within {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Post events `ids` one by one and return the acked uuids; every answer must be 202.
async fn post_all(app: &TestApp, ids: std::ops::Range<usize>) -> HashSet<String> {
    let mut acked = HashSet::new();
    for n in ids {
        let res = app.post_event(&alert_event(n)).await;
        assert_eq!(res.status().as_u16(), 202, "event {n}");
        acked.insert(uuid(n));
    }
    acked
}

#[tokio::test]
async fn a_target_down_for_many_retries_then_back_gets_everything_none_dead() {
    const EVENTS: usize = 20;
    const DOWN_FOR: usize = 15;
    let sekoia = MockServer::start().await;
    let chat = MockServer::start().await;
    mount_alert(&sekoia).await;
    let healthy = Target::ok();
    // Down: the first 15 attempts of every event get a 503 (no Retry-After), then it is back.
    let down = Target::new(|_, k| if k < DOWN_FOR { 503 } else { 200 });
    healthy.mount(&chat, "/a").await;
    down.mount(&chat, "/b").await;
    let dir = tempfile::tempdir().unwrap();
    let text = fault_config(&sekoia, &chat, dir.path(), 40);
    let app = TestApp::start_text(sekoia, chat, dir, &text).await;

    let acked = post_all(&app, 0..EVENTS).await;
    let b = down.wait_all(&acked, Duration::from_secs(60)).await;
    let a = healthy.wait_all(&acked, WAIT).await;
    println!("target down for {DOWN_FOR} attempts: a: {a}; b: {b}");
    a.assert_complete("healthy target");
    b.assert_complete("target down then back");
    assert_eq!(a.duplicates, 0, "the healthy target is not re-sent: {a}");
    for u in &acked {
        assert!(
            down.attempts_of(u) > DOWN_FOR,
            "{u} was retried through the outage"
        );
    }
    // The last outcomes are recorded just after the 200s: give the writer a moment.
    let db = app.dir.path().join("relay.db");
    let start = Instant::now();
    let mut states = store_states(&db);
    while states.get("delivered").copied().unwrap_or(0) < 2 * EVENTS as i64
        && start.elapsed() < WAIT
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        states = store_states(&db);
    }
    assert_eq!(states.get("dead"), None, "no dead letters: {states:?}");
    assert_eq!(
        states.get("delivered").copied(),
        Some(2 * EVENTS as i64),
        "{states:?}"
    );
    let list = app.cli(&["dead-letters", "list"]);
    assert!(list.status.success());
    println!(
        "dead-letters list: {}",
        String::from_utf8_lossy(&list.stdout).trim()
    );
}

#[tokio::test]
async fn a_429_storm_on_one_target_does_not_hold_back_the_other() {
    const EVENTS: usize = 50;
    const STORM: Duration = Duration::from_secs(4);
    let sekoia = MockServer::start().await;
    let chat = MockServer::start().await;
    mount_alert(&sekoia).await;
    let healthy = Target::ok();
    // 429 + Retry-After: 1 for everything during the storm, which starts at the first request.
    let storm_start: Arc<Mutex<Option<Instant>>> = Default::default();
    let storm = storm_start.clone();
    let throttled = Target::new(move |_, _| {
        let start = *storm.lock().unwrap().get_or_insert_with(Instant::now);
        if start.elapsed() < STORM {
            429
        } else {
            200
        }
    })
    .with_retry_after("1");
    healthy.mount(&chat, "/a").await;
    throttled.mount(&chat, "/b").await;
    let dir = tempfile::tempdir().unwrap();
    let text = fault_config(&sekoia, &chat, dir.path(), 50);
    let app = TestApp::start_text(sekoia, chat, dir, &text).await;

    let acked = post_all(&app, 0..EVENTS).await;
    let a = healthy.wait_all(&acked, WAIT).await;
    let a_done = Instant::now();
    let b = throttled.wait_all(&acked, WAIT).await;
    let storm_began = storm_start.lock().unwrap().expect("the storm started");
    let a_after = a_done.saturating_duration_since(storm_began);
    println!(
        "429 storm of {STORM:?}: healthy a complete {a_after:?} after the storm began: {a}; throttled b: {b}"
    );
    a.assert_complete("healthy target during a storm");
    b.assert_complete("throttled target after the storm");
    // Generous: the healthy target must not wait for the storm to end.
    assert!(
        a_after < STORM,
        "the healthy target waited for the other's storm: {a_after:?}"
    );
    assert_eq!(a.duplicates, 0, "{a}");
    let states = store_states(&app.dir.path().join("relay.db"));
    assert_eq!(states.get("dead"), None, "no dead letters: {states:?}");
}

/// Alert API faults: each test posts events to both targets with a misbehaving API and checks
/// that everything is delivered, enriched or not as the fault allows.
async fn with_alert_api(
    fault: &str,
    api: impl FnOnce(&MockServer) -> Mock,
    events: usize,
) -> (Vec<Value>, Vec<Value>, usize) {
    let sekoia = MockServer::start().await;
    let chat = MockServer::start().await;
    api(&sekoia).mount(&sekoia).await;
    let (a, b) = (Target::ok(), Target::ok());
    a.mount(&chat, "/a").await;
    b.mount(&chat, "/b").await;
    let dir = tempfile::tempdir().unwrap();
    let text = fault_config(&sekoia, &chat, dir.path(), 10);
    let app = TestApp::start_text(sekoia, chat, dir, &text).await;
    let acked = post_all(&app, 0..events).await;
    let ta = a.wait_all(&acked, WAIT).await;
    let tb = b.wait_all(&acked, WAIT).await;
    ta.assert_complete("target a");
    tb.assert_complete("target b");
    let bodies = |p: &'static str| {
        let chat = &app.chat;
        async move {
            received(chat, p)
                .await
                .iter()
                .map(body_json)
                .collect::<Vec<_>>()
        }
    };
    // Single-alert calls: these mocks have no list endpoint, so the first batch's list call
    // is refused (404) and every alert is fetched on its own.
    let api_calls = app
        .sekoia
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path().starts_with("/v1/sic/alerts/"))
        .count();
    println!("Alert API {fault}: a: {ta}; b: {tb}; Alert API calls: {api_calls}");
    (bodies("/a").await, bodies("/b").await, api_calls)
}

fn alert_mock() -> wiremock::MockBuilder {
    Mock::given(method("GET")).and(path_regex("^/v1/sic/alerts/.+$"))
}

#[tokio::test]
async fn alert_api_slower_than_its_timeout_delivers_unenriched() {
    // timeout_secs = 1, enrich_deadline_secs = 2: every call times out until the deadline.
    let (a, b, calls) = with_alert_api(
        "slower than its timeout",
        |_| {
            alert_mock().respond_with(
                ResponseTemplate::new(200)
                    .set_body_raw(fixture("alert.json"), "application/json")
                    .set_delay(Duration::from_millis(1500)),
            )
        },
        10,
    )
    .await;
    for body in a.iter().chain(&b) {
        assert_eq!(body["enriched"], false, "{body}");
        assert!(body["enrichment_error"].is_string(), "{body}");
    }
    assert!(calls >= 10, "one call per alert at least: {calls}");
}

#[tokio::test]
async fn alert_api_flapping_delivers_enriched() {
    // Every alert's first call fails (500), the retry succeeds: 500/200 alternating per alert.
    let seen: Arc<Mutex<HashMap<String, usize>>> = Default::default();
    let responder = move |req: &Request| {
        let mut seen = seen.lock().unwrap();
        let n = seen.entry(req.url.path().to_string()).or_default();
        *n += 1;
        if !n.is_multiple_of(2) {
            ResponseTemplate::new(500).set_body_string("flap")
        } else {
            ResponseTemplate::new(200).set_body_raw(fixture("alert.json"), "application/json")
        }
    };
    let (a, b, calls) =
        with_alert_api("flapping", |_| alert_mock().respond_with(responder), 10).await;
    for body in a.iter().chain(&b) {
        assert_eq!(body["enriched"], true, "{body}");
    }
    assert_eq!(
        calls, 20,
        "two calls per alert, shared by both targets (cache)"
    );
}

#[tokio::test]
async fn alert_api_down_past_the_deadline_delivers_unenriched() {
    let (a, b, calls) = with_alert_api(
        "down past the deadline",
        |_| alert_mock().respond_with(ResponseTemplate::new(503).set_body_string("down")),
        10,
    )
    .await;
    for body in a.iter().chain(&b) {
        assert_eq!(body["enriched"], false, "{body}");
        assert!(body["enrichment_error"].is_string(), "{body}");
        assert!(
            body["summary"]
                .as_str()
                .is_some_and(|s| s.contains("details unavailable")),
            "{body}"
        );
    }
    assert!(calls > 10, "retried before giving up: {calls}");
}

/// A tmpfs mounted on a directory for the length of a test (root only); unmounted on drop.
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mount, or `None` when privileged tests are skipped by `SEKOIA_RELAY_SKIP_PRIVILEGED_TESTS=1`.
    /// Any other failure fails the test: a fault matrix that silently skips is not one.
    pub fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        let skip = std::env::var("SEKOIA_RELAY_SKIP_PRIVILEGED_TESTS").is_ok_and(|v| v == "1");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs {
                path: path.to_path_buf(),
            }),
            _ if skip => {
                println!("skipped: cannot mount a tmpfs (SEKOIA_RELAY_SKIP_PRIVILEGED_TESTS=1)");
                None
            }
            Ok(o) => panic!(
                "this test mounts a small tmpfs to fill the store's disk and needs root \
                 (or CAP_SYS_ADMIN); mount said: {}. Set SEKOIA_RELAY_SKIP_PRIVILEGED_TESTS=1 \
                 to skip it.",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!(
                "cannot run mount ({e}); set SEKOIA_RELAY_SKIP_PRIVILEGED_TESTS=1 to skip this test"
            ),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Write zeros to `path` until the disk refuses; returns the bytes written.
fn fill(path: &Path) -> usize {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    let mut written = 0;
    loop {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n,
        }
    }
    let _ = f.sync_all();
    written
}

async fn readyz(app: &TestApp) -> u16 {
    app.client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn disk_full_answers_503_never_2xx_then_recovers_and_loses_nothing_acked() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = Tmpfs::mount(dir.path(), "16m") else {
        return;
    };
    let sekoia = MockServer::start().await;
    let chat = MockServer::start().await;
    mount_alert(&sekoia).await;
    let a = Target::ok();
    // b fails the first three attempts of each event: retries are due while the disk is full.
    let b = Target::new(|_, k| if k < 3 { 503 } else { 200 });
    a.mount(&chat, "/a").await;
    b.mount(&chat, "/b").await;
    let text = fault_config(&sekoia, &chat, dir.path(), 50).replace(
        TEST_RETRY_SCHEDULE,
        r#"retry_schedule = ["200ms", "400ms", "800ms", "1s"]"#,
    );
    let app = TestApp::start_text(sekoia, chat, dir, &text).await;
    let db = app.dir.path().join("relay.db");

    // Before: accepted and stored.
    let mut acked: HashMap<String, String> = HashMap::new();
    for n in 0..20 {
        let res = app.post_event(&alert_event(n)).await;
        assert_eq!(res.status().as_u16(), 202);
        let body: Value = res.json().await.unwrap();
        acked.insert(uuid(n), body["event_id"].as_str().unwrap().to_string());
    }

    // The disk fills up.
    let pending_when_full = acked.len();
    let filler = app.dir.path().join("filler");
    let filled = fill(&filler);
    let b_before = b.attempts();
    let mut full_statuses: HashMap<u16, usize> = HashMap::new();
    for n in 100..120 {
        let res = app.post_event(&alert_event(n)).await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        *full_statuses.entry(status).or_default() += 1;
        assert!(
            status == 503,
            "a post while the disk is full must get 503, got {status} {body}"
        );
        assert!(body["detail"].is_string(), "{body}");
    }
    assert_eq!(readyz(&app).await, 503, "/readyz while the disk is full");
    // Deliveries keep going while full: their outcomes cannot be recorded.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b_while_full = b.attempts() - b_before;

    // Space returns.
    std::fs::remove_file(&filler).unwrap();
    let start = Instant::now();
    while readyz(&app).await != 200 && start.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(readyz(&app).await, 200, "/readyz once space returns");
    for n in 200..220 {
        let res = app.post_event(&alert_event(n)).await;
        assert_eq!(
            res.status().as_u16(),
            202,
            "accepted again once space returns"
        );
        let body: Value = res.json().await.unwrap();
        acked.insert(uuid(n), body["event_id"].as_str().unwrap().to_string());
    }
    let uuids: HashSet<String> = acked.keys().cloned().collect();
    let ta = a.wait_all(&uuids, WAIT).await;
    let tb = b.wait_all(&uuids, WAIT).await;
    println!(
        "disk full (filler {filled} bytes): answers while full {full_statuses:?}; b attempts while full {b_while_full}; a: {ta}; b: {tb}"
    );
    ta.assert_complete("target a after the disk was full");
    tb.assert_complete("target b after the disk was full");
    // Nothing acknowledged that was not written.
    let stored = stored_event_ids(&db);
    for (u, id) in &acked {
        assert!(
            stored.contains(id),
            "acked event {u} ({id}) is not in the store"
        );
    }
    // While full, each due delivery is sent at most once more (its outcome is retried, not
    // the send): no hot loop hammering the target.
    assert!(
        b_while_full <= pending_when_full,
        "the target was hammered while the store could not record outcomes: {b_while_full} attempts"
    );
    let (_, _, dir) = app.shutdown().await;
    drop(mount);
    drop(dir);
}
