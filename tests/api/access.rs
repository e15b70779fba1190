//! Access: `allow_from` per hook, and `X-Forwarded-For` believed only from
//! `server.trusted_proxies`, through the real server. The test client connects from
//! 127.0.0.1, so with `trusted_proxies = ["127.0.0.1/32"]` it plays the reverse proxy (or the
//! ngrok agent); without it, it plays a client trying to spoof its address.

use serde_json::Value;

use crate::helpers::*;

const ALLOWED: &str = "198.51.100.7";
const OTHER: &str = "203.0.113.5";

async fn app(trusted: &str, allow_from: &str) -> TestApp {
    let routing = format!(
        r#"
[targets.out]
kind = "webhook"
url = "{{chat}}/out"
[[hooks]]
name = "soc"
id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
targets = ["out"]
allow_from = {allow_from}
"#
    );
    let sekoia = wiremock::MockServer::start().await;
    let chat = wiremock::MockServer::start().await;
    mount_alert(&sekoia).await;
    mount_chat_ok(&chat).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&sekoia.uri(), &chat.uri(), dir.path(), &routing).replace(
        "log_format = \"json\"\n",
        &format!("log_format = \"json\"\ntrusted_proxies = {trusted}\n"),
    );
    TestApp::start_text(sekoia, chat, dir, &text).await
}

/// Post a fresh event with an optional `X-Forwarded-For`; the status and the JSON answer.
async fn post_from(app: &TestApp, n: usize, forwarded: Option<&str>) -> (u16, Value) {
    let mut req = app.client.post(app.hook_url()).json(&alert_event(n));
    if let Some(f) = forwarded {
        req = req.header("X-Forwarded-For", f);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn forwarded_for_is_believed_from_a_trusted_proxy() {
    let app = app(r#"["127.0.0.1/32"]"#, r#"["198.51.100.0/24"]"#).await;
    assert_eq!(post_from(&app, 1, Some(ALLOWED)).await.0, 202);
    let (status, body) = post_from(&app, 2, Some(OTHER)).await;
    assert_eq!(status, 403);
    assert!(body["detail"].is_string(), "{body}");
    // The proxy itself is not in allow_from: no header, no entry.
    assert_eq!(post_from(&app, 3, None).await.0, 403);
    // Each proxy appends what it saw: a client writing an allowed address on the left of the
    // list does not get in; the entry our proxy added (rightmost) decides.
    let spoofed = format!("{ALLOWED}, {OTHER}");
    assert_eq!(post_from(&app, 4, Some(&spoofed)).await.0, 403);
    let honest = format!("{OTHER}, {ALLOWED}");
    assert_eq!(post_from(&app, 5, Some(&honest)).await.0, 202);
    // Garbage ends the chain of trust at the proxy, which is not allowed.
    assert_eq!(post_from(&app, 6, Some("not-an-ip")).await.0, 403);
}

#[tokio::test]
async fn forwarded_for_is_ignored_without_trusted_proxies() {
    // Spoofing in: the header names an allowed address, but the peer is not a trusted proxy.
    let app1 = app("[]", r#"["198.51.100.0/24"]"#).await;
    assert_eq!(post_from(&app1, 1, Some(ALLOWED)).await.0, 403);
    // Spoofing out: an allowed peer is not locked out by a header naming another address.
    let app2 = app("[]", r#"["127.0.0.1/32"]"#).await;
    assert_eq!(post_from(&app2, 2, Some(OTHER)).await.0, 202);
    assert_eq!(post_from(&app2, 3, None).await.0, 202);
}

#[tokio::test]
async fn an_empty_allow_from_lets_any_address_in() {
    let app = app(r#"["127.0.0.1/32"]"#, "[]").await;
    assert_eq!(post_from(&app, 1, Some(OTHER)).await.0, 202);
    assert_eq!(post_from(&app, 2, None).await.0, 202);
}
