//! Persist, then acknowledge: acked events survive kill -9, and SIGTERM drains and exits 0.
//! These tests run the real binary as a child process.

use std::collections::HashSet;
use std::time::Duration;

use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

const ROUTING: &str = r#"
[targets.soar]
kind = "webhook"
url = "{chat}/soar"
[[hooks]]
name = "soc"
id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
targets = ["soar"]
"#;

fn write_config(
    sekoia: &MockServer,
    chat: &MockServer,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let p = dir.join("config.toml");
    std::fs::write(&p, config_text(&sekoia.uri(), &chat.uri(), dir, ROUTING)).unwrap();
    p
}

#[tokio::test]
async fn acknowledged_events_survive_kill_9() {
    let sekoia = MockServer::start().await;
    let chat = MockServer::start().await;
    mount_alert(&sekoia).await;
    // The target hangs: deliveries are in flight when the process dies.
    Mock::given(path("/soar"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&chat)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&sekoia, &chat, dir.path());

    let mut relay = RelayProcess::start(&config, &[]);
    let client = reqwest::Client::new();
    for n in 0..50 {
        let res = client
            .post(relay.hook_url())
            .json(&alert_event(n))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 202);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.child.kill().expect("SIGKILL");
    relay.child.wait().unwrap();

    // The target is back; a new process on the same store delivers every acked event.
    chat.reset().await;
    mount_chat_ok(&chat).await;
    let _running = RelayProcess::start(&config, &[]); // killed on drop, after the checks
    let got = wait_for(&chat, "/soar", 50, Duration::from_secs(30)).await;
    let ids: HashSet<String> = got
        .iter()
        .map(|r| {
            body_json(r)["event"]["attributes"]["uuid"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        ids.len(),
        50,
        "every acknowledged event was delivered after the crash"
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_sends_and_exits_0() {
    let sekoia = MockServer::start().await;
    let chat = MockServer::start().await;
    mount_alert(&sekoia).await;
    Mock::given(path("/soar"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(800)))
        .mount(&chat)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&sekoia, &chat, dir.path());
    let mut relay = RelayProcess::start(&config, &[]);
    let client = reqwest::Client::new();
    for n in 0..5 {
        let res = client
            .post(relay.hook_url())
            .json(&alert_event(n))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 202);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.signal("TERM");
    let status = relay.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "exit status {status:?}");
    // The sends in flight at SIGTERM finished (the target answered within the grace period).
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(received(&chat, "/soar").await.len(), 5);
}

#[tokio::test]
async fn restart_resumes_pending_retries() {
    let app = TestApp::spawn_with(ROUTING).await;
    mount_alert(&app.sekoia).await;
    Mock::given(path("/soar"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&app.chat)
        .await;
    assert_eq!(app.post_event(&alert_event(1)).await.status(), 202);
    wait_for(&app.chat, "/soar", 1, Duration::from_secs(10)).await;
    let (sekoia, chat, dir) = app.shutdown().await;

    chat.reset().await;
    mount_chat_ok(&chat).await;
    let app = TestApp::start(sekoia, chat, dir, ROUTING).await;
    let got = wait_for(&app.chat, "/soar", 1, Duration::from_secs(10)).await;
    assert_eq!(
        got.len(),
        1,
        "the pending retry was resumed after a restart"
    );
}

#[tokio::test]
async fn sigint_also_stops_cleanly_with_exit_0() {
    let sekoia = MockServer::start().await;
    let chat = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&sekoia, &chat, dir.path());
    let mut relay = RelayProcess::start(&config, &[]);
    relay.signal("INT");
    let status = relay.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "exit status {status:?}");
    // The reader thread may still be draining the pipe after the exit.
    assert!(
        relay
            .wait_for_output("stopped", Duration::from_secs(5))
            .await
    );
}
