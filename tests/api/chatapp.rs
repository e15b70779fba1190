//! The bot-token kinds (`slack_app`, `mattermost_app`) on the real server: one living message
//! per alert, edited and replied to by later events, kept across restarts, re-posted when
//! deleted; Slack's `ok: false` answers classified. Wiremock stands in for the Slack Web API,
//! the Mattermost API and SEKOIA.IO.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(10);
const SLACK_TOKEN: &str = "xoxb-1111-2222-abcdefghijklmnop";
const MM_TOKEN: &str = "mmtoken0123456789abcdefghij";

fn slack_target(extra: &str) -> String {
    format!(
        r#"
[targets.t]
kind = "slack_app"
api_url = "{{chat}}/api"
token = "{SLACK_TOKEN}"
channel = "alerts"
rate_limit_per_sec = 0
{extra}

[[hooks]]
name = "soc"
id = "{HOOK_ID}"
targets = ["t"]
"#
    )
}

fn mattermost_target(extra: &str) -> String {
    format!(
        r#"
[targets.t]
kind = "mattermost_app"
url = "{{chat}}"
token = "{MM_TOKEN}"
channel_id = "chan0123456789abcdefghijkl"
rate_limit_per_sec = 0
{extra}

[[hooks]]
name = "soc"
id = "{HOOK_ID}"
targets = ["t"]
"#
    )
}

/// The `n`th event of the alert: `created` first, then `updated` ones with a new status each
/// (and their own `created_at`, so none is a duplicate).
fn nth_event(n: usize) -> Value {
    if n == 0 {
        return fixture_json("webhook-alert-created.json");
    }
    let mut e = fixture_json("webhook-alert-updated.json");
    e["attributes"]["updated"]["status_name"] = json!(format!("Status{n}"));
    e["metadata"]["created_at"] = json!(format!("2022-01-14T16:1{n}:02.118233+00:00"));
    e
}

/// Slack's `chat.postMessage`: a new `ts` for every message, in channel id `C42`.
struct SlackPosts(Arc<AtomicUsize>);

impl Respond for SlackPosts {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        ResponseTemplate::new(200).set_body_json(
            json!({"ok": true, "channel": "C42", "ts": format!("1700000000.{n:06}")}),
        )
    }
}

async fn mount_slack(chat: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .and(header("authorization", format!("Bearer {SLACK_TOKEN}")))
        .respond_with(SlackPosts(Arc::new(AtomicUsize::new(0))))
        .mount(chat)
        .await;
}

async fn mount_slack_update_ok(chat: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/api/chat.update"))
        .and(header("authorization", format!("Bearer {SLACK_TOKEN}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .mount(chat)
        .await;
}

/// Post event `n` and wait until the chat mock has `total` requests in all.
async fn send_and_wait(app: &TestApp, n: usize, total: usize) {
    assert_eq!(app.post_event(&nth_event(n)).await.status().as_u16(), 202);
    let start = std::time::Instant::now();
    while app.chat.received_requests().await.unwrap_or_default().len() < total {
        assert!(
            start.elapsed() < WAIT,
            "the chat tool got no request {total}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_reply(r: &Request) -> bool {
    body_json(r).get("thread_ts").is_some()
}

#[tokio::test]
async fn slack_app_posts_the_card_then_edits_it_and_replies_in_its_thread() {
    let app = TestApp::spawn_with(&slack_target("")).await;
    mount_alert(&app.sekoia).await;
    mount_slack(&app.chat).await;
    mount_slack_update_ok(&app.chat).await;

    send_and_wait(&app, 0, 1).await;
    send_and_wait(&app, 1, 3).await;
    send_and_wait(&app, 2, 5).await;

    let posts = received(&app.chat, "/api/chat.postMessage").await;
    let (replies, cards): (Vec<_>, Vec<_>) = posts.iter().partition(|r| is_reply(r));
    assert_eq!(cards.len(), 1, "one card for the alert");
    let card = body_json(cards[0]);
    assert_eq!(card["channel"], "alerts");
    assert!(card["blocks"].as_array().is_some_and(|b| !b.is_empty()));
    let updates = received(&app.chat, "/api/chat.update").await;
    assert_eq!(updates.len(), 2);
    for u in &updates {
        let u = body_json(u);
        // Slack answered with the channel id: edits use it and the card's ts.
        assert_eq!(u["channel"], "C42");
        assert_eq!(u["ts"], "1700000000.000001");
        assert!(u["blocks"].as_array().is_some_and(|b| !b.is_empty()));
    }
    assert_eq!(replies.len(), 2);
    for (i, r) in replies.iter().enumerate() {
        let r = body_json(r);
        assert_eq!(r["thread_ts"], "1700000000.000001");
        assert_eq!(r["channel"], "C42");
        assert_eq!(r["text"], format!("Updated: status Status{}", i + 1));
    }
    for r in app.chat.received_requests().await.unwrap() {
        let ct = r.headers.get("content-type").unwrap().to_str().unwrap();
        assert_eq!(ct, "application/json; charset=utf-8");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn slack_app_on_update_edit_only_edits_and_new_always_posts() {
    for (mode, cards, updates, replies) in [("edit", 1, 1, 0), ("new", 2, 0, 0), ("reply", 1, 0, 1)]
    {
        let app = TestApp::spawn_with(&slack_target(&format!("on_update = \"{mode}\""))).await;
        mount_alert(&app.sekoia).await;
        mount_slack(&app.chat).await;
        mount_slack_update_ok(&app.chat).await;
        send_and_wait(&app, 0, 1).await;
        send_and_wait(&app, 1, 2).await;
        // Nothing more arrives.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let posts = received(&app.chat, "/api/chat.postMessage").await;
        let got_replies = posts.iter().filter(|r| is_reply(r)).count();
        assert_eq!(posts.len() - got_replies, cards, "{mode}: cards");
        assert_eq!(got_replies, replies, "{mode}: replies");
        assert_eq!(
            received(&app.chat, "/api/chat.update").await.len(),
            updates,
            "{mode}: edits"
        );
        app.shutdown().await;
    }
}

#[tokio::test]
async fn slack_app_edits_the_same_card_after_a_restart() {
    let routing = slack_target("");
    let app = TestApp::spawn_with(&routing).await;
    mount_alert(&app.sekoia).await;
    mount_slack(&app.chat).await;
    mount_slack_update_ok(&app.chat).await;
    send_and_wait(&app, 0, 1).await;
    let (sekoia, chat, dir) = app.shutdown().await;

    let app = TestApp::start(sekoia, chat, dir, &routing).await;
    send_and_wait(&app, 1, 3).await;
    let updates = received(&app.chat, "/api/chat.update").await;
    assert_eq!(
        updates.len(),
        1,
        "the card posted before the restart is edited"
    );
    assert_eq!(body_json(&updates[0])["ts"], "1700000000.000001");
    let cards = received(&app.chat, "/api/chat.postMessage")
        .await
        .into_iter()
        .filter(|r| !is_reply(r))
        .count();
    assert_eq!(cards, 1);
    app.shutdown().await;
}

#[tokio::test]
async fn slack_app_posts_a_new_card_when_the_old_one_was_deleted() {
    let app = TestApp::spawn_with(&slack_target("")).await;
    mount_alert(&app.sekoia).await;
    mount_slack(&app.chat).await;
    // The first edit finds the message deleted; the next one (of the new card) works.
    Mock::given(method("POST"))
        .and(path("/api/chat.update"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ok": false, "error": "message_not_found"})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.chat)
        .await;
    mount_slack_update_ok(&app.chat).await;

    send_and_wait(&app, 0, 1).await;
    // Edit (gone) → a new card, no reply to the deleted thread.
    send_and_wait(&app, 1, 3).await;
    let posts = received(&app.chat, "/api/chat.postMessage").await;
    assert_eq!(posts.len(), 2);
    assert!(
        !is_reply(&posts[1]),
        "a new card, not a reply: {:?}",
        body_json(&posts[1])
    );
    // The next event edits the new card.
    send_and_wait(&app, 2, 5).await;
    let updates = received(&app.chat, "/api/chat.update").await;
    assert_eq!(updates.len(), 2);
    assert_eq!(body_json(&updates[1])["ts"], "1700000000.000002");
    let posts = received(&app.chat, "/api/chat.postMessage").await;
    assert_eq!(body_json(&posts[2])["thread_ts"], "1700000000.000002");
    app.shutdown().await;
}

#[tokio::test]
async fn slack_app_invalid_auth_is_a_dead_letter_and_ratelimited_is_retried() {
    let app = TestApp::spawn_with(&slack_target("")).await;
    mount_alert(&app.sekoia).await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"ok": false, "error": "invalid_auth"})),
        )
        .expect(1)
        .mount(&app.chat)
        .await;
    send_and_wait(&app, 0, 1).await;
    let start = std::time::Instant::now();
    let text = loop {
        let out = app.cli(&["dead-letters", "list"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("invalid_auth") || start.elapsed() > WAIT {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        text.contains("Slack chat.postMessage: invalid_auth"),
        "{text}"
    );
    assert!(
        !text.contains(SLACK_TOKEN),
        "the token never reaches a dead letter"
    );
    app.shutdown().await;

    let app = TestApp::spawn_with(&slack_target("")).await;
    mount_alert(&app.sekoia).await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_json(json!({"ok": false, "error": "ratelimited"})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.chat)
        .await;
    mount_slack(&app.chat).await;
    let sent = std::time::Instant::now();
    send_and_wait(&app, 0, 2).await;
    let gap = sent.elapsed();
    assert!(
        gap >= Duration::from_millis(900),
        "Retry-After was honoured ({gap:?})"
    );
    let out = app.cli(&["dead-letters", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no dead letters"));
    app.shutdown().await;
}

#[tokio::test]
async fn mattermost_app_posts_then_patches_and_replies_and_reposts_a_deleted_post() {
    let app = TestApp::spawn_with(&mattermost_target("")).await;
    mount_alert(&app.sekoia).await;
    let n = Arc::new(AtomicUsize::new(0));
    struct Posts(Arc<AtomicUsize>);
    impl Respond for Posts {
        fn respond(&self, _: &Request) -> ResponseTemplate {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            ResponseTemplate::new(201).set_body_json(json!({"id": format!("post{n}")}))
        }
    }
    Mock::given(method("POST"))
        .and(path("/api/v4/posts"))
        .and(header("authorization", format!("Bearer {MM_TOKEN}")))
        .respond_with(Posts(n.clone()))
        .mount(&app.chat)
        .await;
    Mock::given(method("PUT"))
        .and(path("/api/v4/posts/post1/patch"))
        .and(header("authorization", format!("Bearer {MM_TOKEN}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "post1"})))
        .up_to_n_times(1)
        .mount(&app.chat)
        .await;
    // Then post1 is deleted.
    Mock::given(method("PUT"))
        .and(path("/api/v4/posts/post1/patch"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&app.chat)
        .await;

    send_and_wait(&app, 0, 1).await;
    let posts = received(&app.chat, "/api/v4/posts").await;
    let card = body_json(&posts[0]);
    assert_eq!(card["channel_id"], "chan0123456789abcdefghijkl");
    assert!(card["message"]
        .as_str()
        .is_some_and(|m| m.contains("New alert")));
    assert!(card["props"]["attachments"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));

    send_and_wait(&app, 1, 3).await;
    let patch = received(&app.chat, "/api/v4/posts/post1/patch").await;
    assert!(body_json(&patch[0])["props"]["attachments"].is_array());
    let posts = received(&app.chat, "/api/v4/posts").await;
    let reply = body_json(&posts[1]);
    assert_eq!(reply["root_id"], "post1");
    assert_eq!(reply["message"], "Updated: status Status1");

    // The post was deleted: the patch gets 404, a new card is posted, no reply.
    send_and_wait(&app, 2, 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let posts = received(&app.chat, "/api/v4/posts").await;
    assert_eq!(posts.len(), 3);
    assert!(body_json(&posts[2]).get("root_id").is_none());
    app.shutdown().await;
}

// ---- triage buttons (POST /integrations/slack/actions) ----

const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const ACK_ID: &str = "0b1b7a1c-0000-4000-8000-00000000ac01";
const CLOSE_ID: &str = "0b1b7a1c-0000-4000-8000-00000000c105";

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn mount_workflow(sekoia: &MockServer, patch_status: u16) {
    Mock::given(method("GET"))
        .and(path(format!("/v1/sic/alerts/{ALERT}/workflow")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"actions": [
            {"id": ACK_ID, "name": "Acknowledge", "description": "Acknowledge the alert"},
            {"id": CLOSE_ID, "name": "Close", "description": "Close the alert"}]})))
        .mount(sekoia)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!("/v1/sic/alerts/{ALERT}/workflow")))
        .respond_with(ResponseTemplate::new(patch_status).set_body_json(json!({})))
        .mount(sekoia)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v1/sic/alerts/{ALERT}/comments")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(sekoia)
        .await;
    mount_alert(sekoia).await;
}

const ALERT: &str = "5696845f-9ecf-4431-9f0f-48ee0ee2eff1";

/// A relay with a buttons-on Slack app, its card posted; returns the first button's value.
async fn app_with_card(extra: &str, patch_status: u16) -> (TestApp, String) {
    let app = TestApp::spawn_with(&slack_target(&format!(
        "signing_secret = \"{SIGNING_SECRET}\"\n{extra}"
    )))
    .await;
    mount_workflow(&app.sekoia, patch_status).await;
    mount_slack(&app.chat).await;
    mount_slack_update_ok(&app.chat).await;
    Mock::given(method("POST"))
        .and(path("/response"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&app.chat)
        .await;
    send_and_wait(&app, 0, 1).await;
    let card = body_json(&received(&app.chat, "/api/chat.postMessage").await[0]);
    let buttons = card["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["block_id"] == "sekoia_triage")
        .expect("the card carries triage buttons")
        .clone();
    let names: Vec<&str> = buttons["elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Acknowledge", "Close"]);
    let value = buttons["elements"][0]["value"]
        .as_str()
        .unwrap()
        .to_string();
    (app, value)
}

fn press_body(app: &TestApp, value: &str, user: &str) -> String {
    let payload = json!({
        "type": "block_actions",
        "user": {"id": format!("U-{user}"), "username": user},
        "channel": {"id": "C42"},
        "container": {"message_ts": "1700000000.000001"},
        "message": {"ts": "1700000000.000001", "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": "card"}},
            {"type": "actions", "block_id": "sekoia_triage", "elements": []}]},
        "response_url": format!("{}/response", app.chat.uri()),
        "actions": [{"action_id": "triage-x", "value": value}],
    });
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish()
}

async fn send_press(app: &TestApp, body: &str, headers: &[(&str, String)]) -> reqwest::Response {
    let mut req = app
        .client
        .post(format!("{}/integrations/slack/actions", app.address))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.send().await.unwrap()
}

fn signed(secret: &str, ts: i64, body: &str) -> Vec<(&'static str, String)> {
    let ts = ts.to_string();
    let sig = sekoia_relay::chatapp::signing::sign_slack(secret.as_bytes(), &ts, body.as_bytes());
    vec![
        ("x-slack-request-timestamp", ts),
        ("x-slack-signature", sig),
    ]
}

async fn patches(app: &TestApp) -> Vec<Request> {
    app.sekoia
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.method.as_str() == "PATCH")
        .collect()
}

#[tokio::test]
async fn a_signed_press_acknowledges_comments_and_updates_the_card() {
    let (app, value) = app_with_card("", 200).await;
    let body = press_body(&app, &value, "alice");
    let res = send_press(&app, &body, &signed(SIGNING_SECRET, now_secs(), &body)).await;
    assert_eq!(res.status().as_u16(), 200);

    let comments = wait_for(
        &app.sekoia,
        &format!("/v1/sic/alerts/{ALERT}/comments"),
        1,
        WAIT,
    )
    .await;
    let patch = patches(&app).await;
    assert_eq!(patch.len(), 1);
    assert_eq!(body_json(&patch[0]), json!({"action_uuid": ACK_ID}));
    assert_eq!(
        patch[0].headers.get("authorization").unwrap(),
        "Bearer test-api-key-0123456789"
    );
    assert_eq!(
        body_json(&comments[0])["content"],
        "Acknowledged from Slack by @alice"
    );
    let updates = wait_for(&app.chat, "/api/chat.update", 1, WAIT).await;
    let card = body_json(&updates[0]);
    assert_eq!(card["ts"], "1700000000.000001");
    assert_eq!(card["channel"], "C42");
    let blocks = card["blocks"].as_array().unwrap();
    assert!(
        blocks.iter().all(|b| b["block_id"] != "sekoia_triage"),
        "buttons removed"
    );
    assert_eq!(
        blocks.last().unwrap()["elements"][0]["text"],
        "Acknowledged by @alice"
    );
    assert!(received(&app.chat, "/response").await.is_empty());
    let metrics = app.scrape().await;
    assert!(
        metrics.contains(
            r#"sekoia_relay_triage_actions_total{target="t",action="Acknowledge",result="done"} 1"#
        ),
        "{metrics}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn unsigned_wrong_stale_and_replayed_presses_get_401_and_change_nothing() {
    let (app, value) = app_with_card("", 200).await;
    let body = press_body(&app, &value, "alice");
    let now = now_secs();
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("missing headers", vec![]),
        (
            "missing signature",
            vec![("x-slack-request-timestamp", now.to_string())],
        ),
        ("wrong secret", signed("not-the-secret", now, &body)),
        (
            "stale timestamp",
            signed(SIGNING_SECRET, now - 6 * 60, &body),
        ),
        (
            "future timestamp",
            signed(SIGNING_SECRET, now + 6 * 60, &body),
        ),
    ];
    for (case, headers) in cases {
        let res = send_press(&app, &body, &headers).await;
        assert_eq!(res.status().as_u16(), 401, "{case}");
    }
    // Signed for another body: the body was changed on the way.
    let other = press_body(&app, &value, "mallory");
    let res = send_press(&app, &other, &signed(SIGNING_SECRET, now, &body)).await;
    assert_eq!(res.status().as_u16(), 401, "changed body");
    // The same signed request twice: the second is a replay.
    let headers = signed(SIGNING_SECRET, now, &body);
    assert_eq!(
        send_press(&app, &body, &headers).await.status().as_u16(),
        200
    );
    assert_eq!(
        send_press(&app, &body, &headers).await.status().as_u16(),
        401,
        "replayed"
    );
    wait_for(
        &app.sekoia,
        &format!("/v1/sic/alerts/{ALERT}/comments"),
        1,
        WAIT,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        patches(&app).await.len(),
        1,
        "only the one valid press acted"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_user_not_allowed_is_told_privately_and_nothing_changes() {
    let (app, value) = app_with_card("allowed_users = [\"@alice\"]", 200).await;
    let body = press_body(&app, &value, "bob");
    let res = send_press(&app, &body, &signed(SIGNING_SECRET, now_secs(), &body)).await;
    assert_eq!(res.status().as_u16(), 200);
    let notes = wait_for(&app.chat, "/response", 1, WAIT).await;
    let note = body_json(&notes[0]);
    assert_eq!(note["response_type"], "ephemeral");
    assert!(note["text"].as_str().unwrap().contains("not allowed"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(patches(&app).await.is_empty());
    assert!(received(&app.chat, "/api/chat.update").await.is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn sekoia_refusing_the_change_tells_the_presser_and_leaves_the_card() {
    let (app, value) = app_with_card("", 403).await;
    let body = press_body(&app, &value, "alice");
    let res = send_press(&app, &body, &signed(SIGNING_SECRET, now_secs(), &body)).await;
    assert_eq!(res.status().as_u16(), 200);
    let notes = wait_for(&app.chat, "/response", 1, WAIT).await;
    let note = body_json(&notes[0]);
    assert_eq!(note["response_type"], "ephemeral");
    let text = note["text"].as_str().unwrap();
    assert!(text.contains("SIC_WRITE_ALERTS_WORKFLOW"), "{text}");
    assert!(text.contains("HTTP 403"), "{text}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        received(&app.chat, "/api/chat.update").await.is_empty(),
        "card unchanged"
    );
    assert!(
        received(&app.sekoia, &format!("/v1/sic/alerts/{ALERT}/comments"))
            .await
            .is_empty(),
        "no comment for a change that did not happen"
    );
    let metrics = app.scrape().await;
    assert!(metrics.contains(r#"result="refused"} 1"#), "{metrics}");
    app.shutdown().await;
}

/// Regression: the replay guard was one per process, so a second server in the same process
/// (or a test that signed the same press in the same second) was refused with 401.
#[tokio::test]
async fn each_server_keeps_its_own_replay_guard() {
    let (first, value) = app_with_card("", 200).await;
    let (second, _) = app_with_card("", 200).await;
    let body = press_body(&first, &value, "alice");
    let headers = signed(SIGNING_SECRET, now_secs(), &body);
    assert_eq!(
        send_press(&first, &body, &headers).await.status().as_u16(),
        200
    );
    assert_eq!(
        send_press(&second, &body, &headers).await.status().as_u16(),
        200,
        "a press seen by another server is not a replay here"
    );
    assert_eq!(
        send_press(&second, &body, &headers).await.status().as_u16(),
        401,
        "but the same press twice on one server is"
    );
    for app in [&first, &second] {
        wait_for(
            &app.sekoia,
            &format!("/v1/sic/alerts/{ALERT}/comments"),
            1,
            WAIT,
        )
        .await;
    }
    first.shutdown().await;
    second.shutdown().await;
}

// ---- triage buttons (POST /integrations/mattermost/actions) ----

const PUBLIC_URL: &str = "https://relay.example.test";

/// A relay with a buttons-on Mattermost app (`public_url` set), its card posted as `post1`;
/// returns the card's buttons.
async fn mattermost_with_card(extra: &str, patch_status: u16) -> (TestApp, Vec<Value>) {
    let sekoia = MockServer::start().await;
    let chat = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        &sekoia.uri(),
        &chat.uri(),
        dir.path(),
        &mattermost_target(extra),
    )
    .replacen(
        "[server]\n",
        &format!("[server]\npublic_url = \"{PUBLIC_URL}\"\n"),
        1,
    );
    let app = TestApp::start_text(sekoia, chat, dir, &text).await;
    mount_workflow(&app.sekoia, patch_status).await;
    Mock::given(method("POST"))
        .and(path("/api/v4/posts"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "post1"})))
        .mount(&app.chat)
        .await;
    send_and_wait(&app, 0, 1).await;
    let card = body_json(&received(&app.chat, "/api/v4/posts").await[0]);
    let attachments = card["props"]["attachments"].as_array().unwrap().clone();
    let buttons = attachments
        .last()
        .and_then(|a| a["actions"].as_array())
        .expect("the card carries triage buttons")
        .clone();
    // What Mattermost answers for GET /api/v4/posts/post1: the post as posted.
    Mock::given(method("GET"))
        .and(path("/api/v4/posts/post1"))
        .and(header("authorization", format!("Bearer {MM_TOKEN}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"id": "post1", "message": card["message"], "props": card["props"]}),
        ))
        .mount(&app.chat)
        .await;
    Mock::given(method("PUT"))
        .and(path("/api/v4/posts/post1/patch"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "post1"})))
        .mount(&app.chat)
        .await;
    (app, buttons)
}

/// What Mattermost POSTs to a button's integration URL.
fn mattermost_press(button: &Value, user: &str) -> Value {
    json!({
        "user_id": format!("uid{user}"), "user_name": user, "channel_id": "chan0123456789abcdefghijkl",
        "team_id": "team1", "post_id": "post1", "trigger_id": "trig", "type": "", "data_source": "",
        "context": button["integration"]["context"],
    })
}

async fn send_mattermost_press(app: &TestApp, body: &Value) -> reqwest::Response {
    app.client
        .post(format!("{}/integrations/mattermost/actions", app.address))
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_mattermost_press_acknowledges_comments_and_updates_the_post() {
    let (app, buttons) = mattermost_with_card("", 200).await;
    let names: Vec<&str> = buttons
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Acknowledge", "Close"]);
    assert_eq!(
        buttons[0]["integration"]["url"],
        format!("{PUBLIC_URL}/integrations/mattermost/actions")
    );
    assert!(buttons.iter().all(|b| b["id"]
        .as_str()
        .unwrap()
        .bytes()
        .all(|c| c.is_ascii_alphanumeric())));
    let secret = buttons[0]["integration"]["context"]["secret"]
        .as_str()
        .unwrap();
    assert_eq!(secret.len(), 64);
    assert!(!secret.contains(MM_TOKEN));

    let res = send_mattermost_press(&app, &mattermost_press(&buttons[0], "alice")).await;
    assert_eq!(res.status().as_u16(), 200);
    let answer: Value = res.json().await.unwrap();
    assert!(answer.get("ephemeral_text").is_none(), "{answer}");

    let patch = patches(&app).await;
    assert_eq!(patch.len(), 1);
    assert_eq!(body_json(&patch[0])["action_uuid"], ACK_ID);
    let comments = received(&app.sekoia, &format!("/v1/sic/alerts/{ALERT}/comments")).await;
    assert_eq!(
        body_json(&comments[0])["content"],
        "Acknowledged from Mattermost by @alice"
    );
    let edit = received(&app.chat, "/api/v4/posts/post1/patch").await;
    assert_eq!(edit.len(), 1);
    let props = &body_json(&edit[0])["props"];
    let attachments = props["attachments"].as_array().unwrap();
    assert!(attachments.iter().all(|a| a.get("actions").is_none()));
    assert_eq!(
        attachments.last().unwrap()["text"],
        "Acknowledged by @alice"
    );
    let metrics = app.scrape().await;
    assert!(metrics.contains(r#"result="done"} 1"#), "{metrics}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_mattermost_press_without_the_secret_gets_401_and_changes_nothing() {
    let (app, buttons) = mattermost_with_card("", 200).await;
    let good = mattermost_press(&buttons[0], "alice");
    let mut wrong = good.clone();
    wrong["context"]["secret"] = json!("0".repeat(64));
    let mut missing = good.clone();
    missing["context"].as_object_mut().unwrap().remove("secret");
    let mut other_target = good.clone();
    other_target["context"]["target"] = json!("nope");
    for (case, body) in [
        ("wrong secret", wrong),
        ("missing secret", missing),
        ("unknown target", other_target),
        (
            "no context",
            json!({"user_name": "alice", "post_id": "post1"}),
        ),
    ] {
        let res = send_mattermost_press(&app, &body).await;
        assert_eq!(res.status().as_u16(), 401, "{case}");
    }
    let res = app
        .client
        .post(format!("{}/integrations/mattermost/actions", app.address))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401, "not JSON");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(patches(&app).await.is_empty());
    assert!(received(&app.chat, "/api/v4/posts/post1/patch")
        .await
        .is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn a_mattermost_user_not_allowed_or_a_refusal_is_told_to_the_presser_only() {
    let (app, buttons) = mattermost_with_card("allowed_users = [\"@alice\"]", 403).await;
    let res = send_mattermost_press(&app, &mattermost_press(&buttons[0], "bob")).await;
    assert_eq!(res.status().as_u16(), 200);
    let answer: Value = res.json().await.unwrap();
    assert!(answer["ephemeral_text"]
        .as_str()
        .unwrap()
        .contains("not allowed"));
    assert!(patches(&app).await.is_empty());

    // Alice may, but SEKOIA.IO refuses: she is told why, the post keeps its buttons.
    let res = send_mattermost_press(&app, &mattermost_press(&buttons[0], "alice")).await;
    let answer: Value = res.json().await.unwrap();
    let text = answer["ephemeral_text"].as_str().unwrap();
    assert!(
        text.contains("HTTP 403") && text.contains("SIC_WRITE_ALERTS_WORKFLOW"),
        "{text}"
    );
    assert!(received(&app.chat, "/api/v4/posts/post1/patch")
        .await
        .is_empty());
    assert!(
        received(&app.sekoia, &format!("/v1/sic/alerts/{ALERT}/comments"))
            .await
            .is_empty()
    );
    let metrics = app.scrape().await;
    assert!(metrics.contains(r#"result="forbidden"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"result="refused"} 1"#), "{metrics}");
    app.shutdown().await;
}

#[tokio::test]
async fn mattermost_cards_have_no_buttons_without_public_url() {
    let app = TestApp::spawn_with(&mattermost_target("")).await;
    mount_workflow(&app.sekoia, 200).await;
    Mock::given(method("POST"))
        .and(path("/api/v4/posts"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "post1"})))
        .mount(&app.chat)
        .await;
    send_and_wait(&app, 0, 1).await;
    let card = body_json(&received(&app.chat, "/api/v4/posts").await[0]);
    assert!(card["props"]["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a.get("actions").is_none()));
    app.shutdown().await;
}

/// `send-test` on a bot-token kind posts through the tool's API and reports its answer.
#[tokio::test]
async fn send_test_posts_through_the_chat_api_and_reports_the_answer() {
    let cli = |app: &TestApp, target: &'static str| {
        let config = app.config_path.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_sekoia-relay"))
                .arg("--config")
                .arg(config)
                .args(["send-test", target])
                .output()
                .expect("run the CLI")
        })
    };
    let app = TestApp::spawn_with(&slack_target("")).await;
    mount_slack(&app.chat).await;
    let out = cli(&app, "t").await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("delivered") && text.contains("message 1700000000.000001"),
        "{text}"
    );
    let posted = received(&app.chat, "/api/chat.postMessage").await;
    assert_eq!(posted.len(), 1);
    assert!(body_json(&posted[0])["text"]
        .as_str()
        .unwrap()
        .contains("TEST from sekoia-relay"));
    app.shutdown().await;

    // Slack's ok:false is a failure, with Slack's error shown and the token not.
    let app = TestApp::spawn_with(&slack_target("")).await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ok": false, "error": "channel_not_found"})),
        )
        .mount(&app.chat)
        .await;
    let out = cli(&app, "t").await.unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("FAILED") && text.contains("channel_not_found"),
        "{text}"
    );
    assert!(!text.contains(SLACK_TOKEN), "{text}");
    app.shutdown().await;

    let app = TestApp::spawn_with(&mattermost_target("")).await;
    Mock::given(method("POST"))
        .and(path("/api/v4/posts"))
        .and(header("authorization", format!("Bearer {MM_TOKEN}")))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "post9"})))
        .expect(1)
        .mount(&app.chat)
        .await;
    let out = cli(&app, "t").await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("message post9"),
        "{text}"
    );
    app.shutdown().await;
}
