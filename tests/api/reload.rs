//! Reload (SIGHUP): a valid new config is swapped in without losing queued work; an invalid
//! one changes nothing and the old config keeps serving.

use std::time::Duration;

use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(15);
const OPS_HOOK_ID: &str = "0b9f6a52-5c1e-4d8e-9b0a-3f2d7c4e8a61";

/// The default routing plus a second hook `ops` → teams.
fn with_ops_hook() -> String {
    format!(
        "{DEFAULT_ROUTING}\n[[hooks]]\nname = \"ops\"\nid = \"{OPS_HOOK_ID}\"\ntargets = [\"teams\"]\n"
    )
}

fn write(app: &TestApp, routing: &str) {
    let text = config_text(&app.sekoia.uri(), &app.chat.uri(), app.dir.path(), routing);
    std::fs::write(&app.config_path, text).unwrap();
}

async fn post_to(app: &TestApp, hook_id: &str, n: usize) -> u16 {
    app.client
        .post(format!("{}/hooks/{hook_id}", app.address))
        .json(&alert_event(n))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_valid_config_is_swapped_in_and_an_invalid_one_changes_nothing() {
    let app = TestApp::spawn().await;
    mount_alert(&app.sekoia).await;
    mount_chat_ok(&app.chat).await;
    assert_eq!(
        post_to(&app, OPS_HOOK_ID, 1).await,
        404,
        "not configured yet"
    );

    write(&app, &with_ops_hook());
    let reloaded = app.reload.reload(&app.config_path).expect("valid config");
    assert!(reloaded.restart_needed.is_empty());
    assert_eq!(post_to(&app, OPS_HOOK_ID, 2).await, 202);
    let got = wait_for(&app.chat, "/teams", 1, WAIT).await;
    assert_eq!(got.len(), 1, "the new hook's event was delivered");

    // A typo (unknown key) and a template that does not compile: both refused, nothing changes.
    write(
        &app,
        &format!("{}\n[delivery]\nmax_attempts_typo = 3\n", with_ops_hook()),
    );
    assert!(app.reload.reload(&app.config_path).is_err());
    let bad_template = app.dir.path().join("bad.j2");
    std::fs::write(&bad_template, "{{ unclosed").unwrap();
    write(
        &app,
        &with_ops_hook().replace(
            "kind = \"slack\"",
            &format!(
                "kind = \"slack\"\ntemplate = \"{}\"",
                bad_template.display()
            ),
        ),
    );
    assert!(app.reload.reload(&app.config_path).is_err());
    std::fs::remove_file(&app.config_path).unwrap();
    assert!(app.reload.reload(&app.config_path).is_err(), "missing file");

    assert_eq!(
        post_to(&app, OPS_HOOK_ID, 3).await,
        202,
        "last good config still serves"
    );
    assert_eq!(post_to(&app, HOOK_ID, 4).await, 202);
    let text = app.scrape().await;
    assert_eq!(
        metric(
            &text,
            r#"sekoia_relay_config_reloads_total{outcome="success"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"sekoia_relay_config_reloads_total{outcome="failure"}"#
        ),
        Some(3.0)
    );
}

#[tokio::test]
async fn queued_deliveries_survive_a_reload_and_use_the_new_target_url() {
    let app = TestApp::spawn().await;
    mount_alert(&app.sekoia).await;
    // The teams target points at a path that keeps failing: its delivery waits in the queue.
    let routing = DEFAULT_ROUTING.replace("{chat}/teams", "{chat}/down");
    Mock::given(method("POST"))
        .and(path("/down"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&app.chat)
        .await;
    mount_chat_ok(&app.chat).await;
    write(&app, &routing);
    app.reload.reload(&app.config_path).unwrap();
    assert_eq!(app.post_event(&alert_event(1)).await.status(), 202);
    wait_for(&app.chat, "/down", 1, WAIT).await;

    // The operator fixes the URL and reloads: the queued delivery goes to the new one.
    write(&app, DEFAULT_ROUTING);
    app.reload.reload(&app.config_path).unwrap();
    let got = wait_for(&app.chat, "/teams", 1, WAIT).await;
    assert_eq!(
        got.len(),
        1,
        "the queued delivery was sent after the reload"
    );
}

#[tokio::test]
async fn startup_only_settings_are_reported_not_applied() {
    let app = TestApp::spawn().await;
    let text = config_text(
        &app.sekoia.uri(),
        &app.chat.uri(),
        app.dir.path(),
        DEFAULT_ROUTING,
    )
    .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"")
    .replace("timeout_secs = 2\n", "timeout_secs = 2\nconcurrency = 3\n");
    std::fs::write(&app.config_path, text).unwrap();
    let reloaded = app.reload.reload(&app.config_path).unwrap();
    assert_eq!(
        reloaded.restart_needed,
        vec!["server.listen", "delivery.concurrency"]
    );
    // Still listening where it was.
    assert_eq!(app.post_event(&alert_event(1)).await.status(), 202);

    // Reverting to the running values: nothing needs a restart any more, nothing is warned.
    let original = config_text(
        &app.sekoia.uri(),
        &app.chat.uri(),
        app.dir.path(),
        DEFAULT_ROUTING,
    );
    std::fs::write(&app.config_path, original).unwrap();
    let reverted = app.reload.reload(&app.config_path).unwrap();
    assert!(
        reverted.restart_needed.is_empty(),
        "{:?}",
        reverted.restart_needed
    );
}

/// The real binary: `kill -HUP` adds a hook; a broken config and HUP leave the old one serving.
#[tokio::test]
async fn sighup_reloads_the_running_binary() {
    let sekoia = MockServer::start().await;
    let chat = MockServer::start().await;
    mount_alert(&sekoia).await;
    mount_chat_ok(&chat).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let text = |routing: &str| config_text(&sekoia.uri(), &chat.uri(), dir.path(), routing);
    std::fs::write(&config, text(DEFAULT_ROUTING)).unwrap();
    let relay = RelayProcess::start(&config, &[]);
    let client = reqwest::Client::new();
    let post = |hook: &str, n: usize| {
        client
            .post(format!("{}/hooks/{hook}", relay.base))
            .json(&alert_event(n))
            .send()
    };
    assert_eq!(post(OPS_HOOK_ID, 1).await.unwrap().status(), 404);

    std::fs::write(&config, text(&with_ops_hook())).unwrap();
    relay.signal("HUP");
    assert!(
        relay.wait_for_output("configuration reloaded", WAIT).await,
        "{:#?}",
        relay.output()
    );
    assert_eq!(post(OPS_HOOK_ID, 2).await.unwrap().status(), 202);
    assert_eq!(wait_for(&chat, "/teams", 1, WAIT).await.len(), 1);

    std::fs::write(&config, "this is [not toml").unwrap();
    relay.signal("HUP");
    assert!(
        relay
            .wait_for_output(
                "reload failed: still serving the previous configuration",
                WAIT
            )
            .await,
        "{:#?}",
        relay.output()
    );
    assert_eq!(post(OPS_HOOK_ID, 3).await.unwrap().status(), 202);
    assert_eq!(post(HOOK_ID, 4).await.unwrap().status(), 202);
    let out = relay.stop().await;
    assert!(
        out.iter()
            .any(|l| l.contains("\"level\":\"ERROR\"") && l.contains("not valid TOML")),
        "the failure is logged at error level with its reason: {out:#?}"
    );
}
