//! What the container and the network around the relay rely on: `healthcheck` as Docker runs
//! it, and outbound proxies from the environment.

use std::time::Duration;

use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(20);

/// The Dockerfile's setup: config from `SEKOIA_RELAY_CONFIG`, listen address overridden to
/// `0.0.0.0:PORT` by environment, `HEALTHCHECK CMD ["sekoia-relay", "healthcheck"]`.
#[tokio::test]
async fn healthcheck_works_as_the_dockerfile_runs_it() {
    let sekoia = MockServer::start().await;
    let chat = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let text = config_text(&sekoia.uri(), &chat.uri(), dir.path(), DEFAULT_ROUTING)
        .replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"");
    std::fs::write(&config, text).unwrap();
    let relay = RelayProcess::start(&config, &[]);
    let port = relay.base.rsplit(':').next().unwrap().to_string();
    let healthcheck = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sekoia-relay"))
            .arg("healthcheck")
            .env("SEKOIA_RELAY_CONFIG", &config)
            .env("SEKOIA_RELAY__SERVER__LISTEN", format!("0.0.0.0:{port}"))
            .status()
            .unwrap()
    };
    assert!(healthcheck().success(), "healthy while serving");
    relay.stop().await;
    assert_eq!(healthcheck().code(), Some(1), "unhealthy once stopped");
}

/// `HTTP_PROXY`/`HTTPS_PROXY` and `NO_PROXY` are honoured (reqwest's system proxy). A wiremock
/// stands in for the proxy: a proxied plain-HTTP request arrives with the absolute URL of the
/// target, so the proxy sees the target's host. (HTTPS goes through the same proxy selection
/// but tunnels with CONNECT, which wiremock cannot answer.)
#[tokio::test]
async fn outbound_requests_go_through_the_configured_proxy() {
    let sekoia = MockServer::start().await;
    let chat = MockServer::start().await;
    let proxy = MockServer::start().await;
    mount_alert(&sekoia).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&proxy)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    // A host that does not resolve: only a proxy can deliver to it.
    let routing = format!(
        "[targets.soar]\nkind = \"webhook\"\nurl = \"http://soar.example.test/api/sekoia\"\n\
         [[hooks]]\nname = \"soc\"\nid = \"{HOOK_ID}\"\ntargets = [\"soar\"]\n"
    );
    std::fs::write(
        &config,
        config_text(&sekoia.uri(), &chat.uri(), dir.path(), &routing),
    )
    .unwrap();
    let relay = RelayProcess::start(
        &config,
        &[
            ("HTTP_PROXY", proxy.uri().as_str()),
            ("http_proxy", proxy.uri().as_str()),
            // The Alert API stand-in on 127.0.0.1 is reached directly.
            ("NO_PROXY", "127.0.0.1,localhost"),
            ("no_proxy", "127.0.0.1,localhost"),
        ],
    );
    let res = reqwest::Client::new()
        .post(format!("{}/hooks/{HOOK_ID}", relay.base))
        .json(&alert_event(1))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);

    let got = wait_for(&proxy, "/api/sekoia", 1, WAIT).await;
    assert_eq!(got.len(), 1, "the delivery went through the proxy");
    assert_eq!(got[0].url.host_str(), Some("soar.example.test"));
    let message = body_json(&got[0]);
    assert_eq!(
        message["enriched"], true,
        "the Alert API was reached directly (NO_PROXY), not through the proxy"
    );
    assert!(received(
        &proxy,
        "/v1/sic/alerts/00000000-0000-4000-8000-000000000001"
    )
    .await
    .is_empty());
    relay.stop().await;
}

/// `serve --pid-file` writes this process's id while it serves and removes the file at exit,
/// so `kill -HUP "$(cat FILE)"` reaches this relay and no other.
#[tokio::test]
async fn pid_file_holds_the_serving_process_id_until_exit() {
    let sekoia = MockServer::start().await;
    let chat = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        config_text(&sekoia.uri(), &chat.uri(), dir.path(), DEFAULT_ROUTING),
    )
    .unwrap();
    let pid_file = dir.path().join("relay.pid");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sekoia-relay"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .arg("--pid-file")
        .arg(&pid_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let pid = loop {
        if let Ok(text) = std::fs::read_to_string(&pid_file) {
            if !text.is_empty() {
                break text.trim().to_string();
            }
        }
        assert!(start.elapsed() < WAIT, "no pid file");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(pid, child.id().to_string());
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(hup.success());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP reloads, it does not kill"
    );
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < WAIT, "did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success());
    assert!(!pid_file.exists(), "removed at exit");
}
