//! Storm control on the real server: a burst of alerts reaches a paced channel as a few
//! messages (urgent first, the rest in digests), every alert in exactly one of them; unsent
//! updates of one alert collapse into one message that lists the changes; the alerts are
//! fetched with the list endpoint in batches; a crash in the middle of a digest loses nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);

/// The uuid and short id of storm alert `n`; alert 99 is the urgent one.
fn ids(n: usize) -> (String, String) {
    (
        format!("5696845f-0000-4000-8000-{n:012}"),
        format!("ALst{n:02}x"),
    )
}

fn storm_event(n: usize) -> Value {
    let (uuid, short_id) = ids(n);
    let mut e = fixture_json("webhook-alert-created.json");
    e["attributes"]["uuid"] = json!(uuid);
    e["attributes"]["short_id"] = json!(short_id);
    e["metadata"]["created_at"] = json!(format!("2022-01-14T16:10:{:02}.1+00:00", n % 60));
    e
}

/// The alert object of storm alert `uuid`, from the fixture: urgency 90 for alert 99.
fn storm_alert(uuid: &str) -> Value {
    let n: usize = uuid
        .rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut a = fixture_json("alert.json");
    a["uuid"] = json!(uuid);
    a["short_id"] = json!(ids(n).1);
    a["title"] = json!(format!("Storm alert {}", ids(n).1));
    let urgency = if n == 99 { 90 } else { 20 };
    a["urgency"] = json!({"current_value": urgency, "value": urgency});
    a
}

/// The Alert API: the list endpoint answers the alerts of `match[uuid]`, the single one its
/// alert; 50 ms each, like a real API.
struct AlertApi;

impl Respond for AlertApi {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body = match req.url.path().strip_prefix("/v1/sic/alerts/") {
            Some(uuid) => storm_alert(uuid),
            None => {
                let uuids = req
                    .url
                    .query_pairs()
                    .find(|(k, _)| k == "match[uuid]")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                let items: Vec<Value> = uuids.split(',').map(storm_alert).collect();
                json!({"total": items.len(), "items": items})
            }
        };
        ResponseTemplate::new(200)
            .set_body_json(body)
            .set_delay(Duration::from_millis(50))
    }
}

async fn mount_alert_api(sekoia: &MockServer) {
    Mock::given(method("GET"))
        .and(path_regex("^/v1/sic/alerts(/.+)?$"))
        .respond_with(AlertApi)
        .mount(sekoia)
        .await;
}

fn slack_storm_target(extra: &str) -> String {
    format!(
        r#"
[targets.slack]
kind = "slack"
url = "{{chat}}/slack"
{extra}

[[hooks]]
name = "soc"
id = "{HOOK_ID}"
targets = ["slack"]
"#
    )
}

/// How many messages each short id appears in, and in which message (by arrival) first.
fn appearances(bodies: &[String], n: &[usize]) -> HashMap<usize, Vec<usize>> {
    let mut seen: HashMap<usize, Vec<usize>> = HashMap::new();
    for &i in n {
        let sid = ids(i).1;
        for (m, b) in bodies.iter().enumerate() {
            if b.contains(&sid) {
                seen.entry(i).or_default().push(m);
            }
        }
    }
    seen
}

async fn slack_bodies(chat: &MockServer) -> Vec<String> {
    received(chat, "/slack")
        .await
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect()
}

/// Wait until every alert of `n` is in a received body (or the time is up).
async fn wait_all_visible(chat: &MockServer, n: &[usize], within: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        let bodies = slack_bodies(chat).await;
        if appearances(&bodies, n).len() == n.len() || start.elapsed() > within {
            return bodies;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_storm_reaches_a_paced_channel_as_a_few_messages_urgent_first_every_alert_once() {
    storm(None).await;
}

#[tokio::test]
async fn a_storm_on_postgresql_is_controlled_the_same_way() {
    let Some(db) = sekoia_relay::store::testing::TestDb::create().await else {
        return;
    };
    storm(Some(&db)).await;
}

/// 20 alerts at once, then an urgent one, to a Slack target at 2/s digesting beyond 2.
async fn storm(db: Option<&sekoia_relay::store::testing::TestDb>) {
    let (sekoia, chat) = (MockServer::start().await, MockServer::start().await);
    let dir = tempfile::tempdir().unwrap();
    let mut text = config_text(
        &sekoia.uri(),
        &chat.uri(),
        dir.path(),
        &slack_storm_target("rate_limit_per_sec = 2\ndigest_after = 2\ndigest_max_items = 5"),
    );
    if let Some(db) = db {
        text = text.replace(
            &format!("path = \"{}/relay.db\"", dir.path().display()),
            &format!("url = \"{}\"", db.url()),
        );
        assert!(text.contains("postgres"), "the config uses PostgreSQL");
    }
    let app = TestApp::start_text(sekoia, chat, dir, &text).await;
    mount_alert_api(&app.sekoia).await;
    Mock::given(method("POST"))
        .and(path("/slack"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&app.chat)
        .await;
    let storm: Vec<usize> = (0..20).collect();
    let events: Vec<Value> = storm.iter().map(|&n| storm_event(n)).collect();
    for res in futures_util::future::join_all(events.iter().map(|e| app.post_event(e))).await {
        assert_eq!(res.status().as_u16(), 202);
    }
    // The urgent alert comes last.
    assert_eq!(
        app.post_event(&storm_event(99)).await.status().as_u16(),
        202
    );
    let mut all = storm.clone();
    all.push(99);
    let bodies = wait_all_visible(&app.chat, &all, WAIT).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let bodies_after = slack_bodies(&app.chat).await;
    assert_eq!(bodies.len(), bodies_after.len(), "nothing more is sent");
    let seen = appearances(&bodies, &all);
    for n in &all {
        assert_eq!(
            seen.get(n).map(Vec::len),
            Some(1),
            "alert {n} must be in exactly one message: {seen:?}"
        );
    }
    // 21 alerts: a few single messages and digests of at most 5, not 21 messages.
    assert!(bodies.len() <= 7, "{} messages for 21 alerts", bodies.len());
    assert!(bodies.iter().any(|b| b.contains("storm digest")));
    // The urgent alert, posted last, is in one of the first messages sent after it.
    assert!(
        seen[&99][0] <= 2,
        "urgent alert in message #{}",
        seen[&99][0]
    );
    // Fetched in batches: a handful of list calls, not one call per alert.
    let calls = app.sekoia.received_requests().await.unwrap_or_default();
    let single = calls
        .iter()
        .filter(|r| r.url.path() != "/v1/sic/alerts")
        .count();
    let batch = calls.len() - single;
    // (A message claimed before its first plan fetches its alert on its own.)
    println!(
        "{} messages, {batch} list calls, {single} single calls",
        bodies.len()
    );
    assert!(batch >= 1, "no list call");
    assert!(
        batch + single <= 3,
        "{batch} list + {single} single calls for 21 alerts"
    );
    let metrics = app.scrape().await;
    assert!(
        metric(
            &metrics,
            r#"sekoia_relay_digests_sent_total{target="slack"}"#
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn unsent_updates_of_an_alert_collapse_into_one_message_with_the_changes() {
    let app = TestApp::spawn_with(&slack_storm_target("rate_limit_per_sec = 1")).await;
    mount_alert(&app.sekoia).await;
    // The first post is throttled for a second: the events of alert A wait meanwhile.
    Mock::given(method("POST"))
        .and(path("/slack"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .mount(&app.chat)
        .await;
    Mock::given(method("POST"))
        .and(path("/slack"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&app.chat)
        .await;
    assert_eq!(app.post_event(&storm_event(1)).await.status().as_u16(), 202);
    wait_for(&app.chat, "/slack", 1, WAIT).await;
    let mut a = fixture_json("webhook-alert-created.json");
    let statuses = ["Pending", "Acknowledged", "Closed"];
    for (i, status) in statuses.iter().enumerate() {
        if i > 0 {
            a = fixture_json("webhook-alert-updated.json");
            a["attributes"]["updated"]["status_name"] = json!(status);
        }
        a["metadata"]["created_at"] = json!(format!("2022-01-14T16:2{i}:02.1+00:00"));
        assert_eq!(app.post_event(&a).await.status().as_u16(), 202);
    }
    // The throttled message, then one message for storm alert 1 and one for alert A.
    let got = wait_for(&app.chat, "/slack", 3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got_after = received(&app.chat, "/slack").await;
    assert_eq!(
        got_after.len(),
        3,
        "A's three events went out as one message"
    );
    let bodies: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    let a_body = bodies
        .iter()
        .find(|b| !b.contains(&ids(1).1))
        .expect("a message for alert A");
    assert!(a_body.contains("Acknowledged → Closed"), "{a_body}");
    let metrics = app.scrape().await;
    assert_eq!(
        metric(
            &metrics,
            r#"sekoia_relay_collapsed_updates_total{target="slack"}"#
        ),
        Some(2.0),
        "{metrics}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn unpaced_targets_send_every_event_as_it_comes() {
    let app = TestApp::spawn_with(&slack_storm_target("rate_limit_per_sec = 0")).await;
    mount_alert_api(&app.sekoia).await;
    Mock::given(method("POST"))
        .and(path("/slack"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(12)
        .mount(&app.chat)
        .await;
    let events: Vec<Value> = (0..12).map(storm_event).collect();
    futures_util::future::join_all(events.iter().map(|e| app.post_event(e))).await;
    wait_for(&app.chat, "/slack", 12, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(slack_bodies(&app.chat)
        .await
        .iter()
        .all(|b| !b.contains("storm digest")));
    app.shutdown().await;
}

/// SIGKILL while a digest is being sent, then a restart on the same store: every alert is
/// visible, and an alert is in two messages only if it was in a message in flight at the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_in_the_middle_of_a_digest_loses_no_alert_and_repeats_only_the_send_in_flight() {
    let (sekoia, chat) = (MockServer::start().await, MockServer::start().await);
    mount_alert_api(&sekoia).await;
    // Slow answers: messages are in flight when the process dies.
    Mock::given(method("POST"))
        .and(path("/slack"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("ok")
                .set_delay(Duration::from_millis(1500)),
        )
        .mount(&chat)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        config_text(
            &sekoia.uri(),
            &chat.uri(),
            dir.path(),
            &slack_storm_target("rate_limit_per_sec = 2\ndigest_after = 1\ndigest_max_items = 5"),
        ),
    )
    .unwrap();
    let mut relay = RelayProcess::start(&config, &[]);
    let client = reqwest::Client::new();
    let all: Vec<usize> = (0..15).collect();
    for &n in &all {
        let res = client
            .post(relay.hook_url())
            .json(&storm_event(n))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 202);
    }
    // Kill once a digest is on the wire (received by the chat tool, not yet answered).
    let start = Instant::now();
    while !slack_bodies(&chat)
        .await
        .iter()
        .any(|b| b.contains("storm digest"))
    {
        assert!(start.elapsed() < WAIT, "no digest was sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.child.kill().expect("SIGKILL");
    relay.child.wait().unwrap();
    let before_kill = slack_bodies(&chat).await.len();

    let relay = RelayProcess::start(&config, &[]);
    let bodies = wait_all_visible(&chat, &all, WAIT).await;
    // Whatever was claimed at the kill is sent again: let it arrive.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let bodies_final = slack_bodies(&chat).await;
    relay.stop().await;
    assert!(bodies.len() <= bodies_final.len());
    let seen = appearances(&bodies_final, &all);
    let repeated = seen.values().filter(|v| v.len() > 1).count();
    println!(
        "{before_kill} messages before the kill, {} in all; {repeated} alerts repeated",
        bodies_final.len()
    );
    for n in &all {
        let at = seen.get(n).cloned().unwrap_or_default();
        assert!(!at.is_empty(), "alert {n} was lost: {seen:?}");
        assert!(at.len() <= 2, "alert {n} in {} messages", at.len());
        if at.len() == 2 {
            assert!(
                at[0] < before_kill,
                "alert {n} repeated although it was not in flight at the kill: {seen:?}"
            );
        }
    }
}

#[tokio::test]
async fn render_digest_shows_each_targets_digest_and_check_catches_a_broken_one() {
    let (sekoia, chat) = (MockServer::start().await, MockServer::start().await);
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("digest.j2");
    std::fs::write(
        &template,
        r#"{"text": {{ digest.count ~ " alerts: " ~ (digest.items|map(attribute="short_id")|join(", ")) }}}"#,
    )
    .unwrap();
    let text = config_text(
        &sekoia.uri(),
        &chat.uri(),
        dir.path(),
        &slack_storm_target("digest_template = \"digest.j2\""),
    );
    let app = TestApp::start_text(sekoia, chat, dir, &text).await;
    let out = app.cli(&["render", "--hook", "soc", "--digest"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(
        body["text"].as_str().unwrap().starts_with("4 alerts: "),
        "{body}"
    );
    let out = app.cli(&["check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A digest template that renders invalid JSON is a problem `check` names.
    std::fs::write(&template, r#"{"text": {{ digest.count }} oops"#).unwrap();
    let out = app.cli(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("digest") && text.contains("invalid JSON"),
        "{text}"
    );
    app.shutdown().await;
}
