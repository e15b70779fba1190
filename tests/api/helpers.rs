//! Test harness: the real server on port 0, wiremock standing in for SEKOIA.IO and the chat
//! tools, a temporary store file, and helpers to wait for what the mocks receive.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sekoia_relay::configuration;
use sekoia_relay::startup::Application;
use serde_json::Value;
use tokio::sync::oneshot;
use wiremock::{MockServer, Request};

pub const HOOK_ID: &str = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e";

pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// A file of the repository (README, contrib/…), by its path from the repository root.
pub fn repo_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).expect("fixture is JSON")
}

/// A version-2 alert event for a fresh alert uuid (distinct events, as in a storm).
pub fn alert_event(n: usize) -> Value {
    let mut e = fixture_json("webhook-alert-created.json");
    e["attributes"]["uuid"] = Value::from(format!("00000000-0000-4000-8000-{n:012}"));
    e["attributes"]["short_id"] = Value::from(format!("ALtest{n}"));
    e
}

/// The test config's compressed retry schedule (production waits seconds to half an hour).
pub const TEST_RETRY_SCHEDULE: &str =
    r#"retry_schedule = ["20ms", "40ms", "80ms", "160ms", "320ms", "640ms", "1s"]"#;

/// The default test config: fast retries, short deadlines, no rate limits, a hook `soc`
/// routed to `teams` and `slack` targets on the chat mock. `{api}`, `{chat}` and `{dir}` in
/// `extra` are substituted, and `extra` is appended (TOML tables), so tests add targets/hooks.
pub fn config_text(api: &str, chat: &str, dir: &Path, body: &str) -> String {
    let base = r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace_secs = 2
log_format = "json"

[sekoia]
api_url = "{api}"
app_url = "https://app.sekoia.test"
api_key = "test-api-key-0123456789"
timeout_secs = 1
max_requests_per_sec = 0
enrich_deadline_secs = 2

[store]
path = "{dir}/relay.db"

[delivery]
{retry_schedule}
backoff_max_secs = 1
timeout_secs = 2
max_attempts = 5
"#;
    (base.to_string() + body)
        .replace("{retry_schedule}", TEST_RETRY_SCHEDULE)
        .replace("{api}", api)
        .replace("{chat}", chat)
        .replace("{dir}", &dir.display().to_string())
}

/// Targets and hook used by most tests.
pub const DEFAULT_ROUTING: &str = r#"
[targets.teams]
kind = "teams"
url = "{chat}/teams"
rate_limit_per_sec = 0

[targets.slack]
kind = "slack"
url = "{chat}/slack"
rate_limit_per_sec = 0

[[hooks]]
name = "soc"
id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
targets = ["teams", "slack"]
"#;

pub struct TestApp {
    pub address: String,
    /// `http://127.0.0.1:{port}` of `server.metrics_listen`, when the config sets it.
    pub metrics_address: Option<String>,
    pub client: reqwest::Client,
    pub sekoia: MockServer,
    pub chat: MockServer,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    /// SIGHUP's entry point, for in-process reload tests.
    pub reload: sekoia_relay::reload::ReloadHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(DEFAULT_ROUTING).await
    }

    /// Start the relay with `routing` (targets and hooks, see [`config_text`]).
    pub async fn spawn_with(routing: &str) -> TestApp {
        let sekoia = MockServer::start().await;
        let chat = MockServer::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start(sekoia, chat, dir, routing).await
    }

    /// Start a relay on existing mocks and store directory (a restart).
    pub async fn start(
        sekoia: MockServer,
        chat: MockServer,
        dir: tempfile::TempDir,
        routing: &str,
    ) -> TestApp {
        let text = config_text(&sekoia.uri(), &chat.uri(), dir.path(), routing);
        Self::start_text(sekoia, chat, dir, &text).await
    }

    /// Start a relay on existing mocks and store directory with a complete config `text`.
    pub async fn start_text(
        sekoia: MockServer,
        chat: MockServer,
        dir: tempfile::TempDir,
        text: &str,
    ) -> TestApp {
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, text).expect("write config");
        let settings = configuration::load(&config_path).expect("test config is valid");
        let app = Application::build(settings).await.expect("app builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let metrics_address = app.metrics_port().map(|p| format!("http://127.0.0.1:{p}"));
        let reload = app.reload_handle();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _ = rx.await;
        }));
        TestApp {
            address,
            metrics_address,
            client: reqwest::Client::new(),
            sekoia,
            chat,
            dir,
            config_path,
            reload,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn hook_url(&self) -> String {
        format!("{}/hooks/{HOOK_ID}", self.address)
    }

    pub async fn post_event(&self, event: &Value) -> reqwest::Response {
        self.client
            .post(self.hook_url())
            .json(event)
            .send()
            .await
            .expect("post reaches the relay")
    }

    pub async fn post_raw(
        &self,
        body: impl Into<reqwest::Body>,
        content_type: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self.client.post(self.hook_url()).body(body);
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        req.send().await.expect("post reaches the relay")
    }

    /// The `GET /metrics` text.
    pub async fn scrape(&self) -> String {
        let res = self
            .client
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .expect("scrape reaches the relay");
        assert_eq!(res.status().as_u16(), 200);
        res.text().await.expect("metrics text")
    }

    /// Graceful stop (what SIGTERM does); returns the mocks and the store for a restart.
    pub async fn shutdown(mut self) -> (MockServer, MockServer, tempfile::TempDir) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("run task").expect("clean shutdown");
        }
        (self.sekoia, self.chat, self.dir)
    }

    /// Run the real binary's CLI against this app's config (e.g. `dead-letters list`).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_sekoia-relay"))
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .output()
            .expect("run the CLI")
    }
}

/// Requests received by `server` on `path`.
pub async fn received(server: &MockServer, path: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path() == path)
        .collect()
}

/// Wait until `server` has received at least `n` requests on `path` (up to `within`).
pub async fn wait_for(server: &MockServer, path: &str, n: usize, within: Duration) -> Vec<Request> {
    let start = Instant::now();
    loop {
        let got = received(server, path).await;
        if got.len() >= n || start.elapsed() > within {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn body_json(r: &Request) -> Value {
    serde_json::from_slice(&r.body).expect("request body is JSON")
}

/// The Alert API answers every alert with `alert.json`.
pub async fn mount_alert(sekoia: &MockServer) {
    use wiremock::matchers::{method, path_regex};
    wiremock::Mock::given(method("GET"))
        .and(path_regex("^/v1/sic/alerts/.+$"))
        .respond_with(
            wiremock::ResponseTemplate::new(200)
                .set_body_raw(fixture("alert.json"), "application/json"),
        )
        .mount(sekoia)
        .await;
}

/// Every chat path answers 200 `ok` (Slack's and Mattermost's success body).
pub async fn mount_chat_ok(chat: &MockServer) {
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_string("ok"))
        .mount(chat)
        .await;
}

/// A wiremock responder that records when each request arrived, for "waited at least" checks.
#[derive(Clone)]
pub struct Timed {
    pub times: std::sync::Arc<std::sync::Mutex<Vec<Instant>>>,
    pub response: wiremock::ResponseTemplate,
}

impl Timed {
    pub fn new(response: wiremock::ResponseTemplate) -> Self {
        Self {
            times: Default::default(),
            response,
        }
    }
    pub fn arrivals(&self) -> Vec<Instant> {
        self.times.lock().unwrap().clone()
    }
}

impl wiremock::Respond for Timed {
    fn respond(&self, _: &Request) -> wiremock::ResponseTemplate {
        self.times.lock().unwrap().push(Instant::now());
        self.response.clone()
    }
}

/// The value of one sample (`name{labels}`, exactly as exposed) in a `/metrics` text.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The real binary as a child process, with everything it prints on stdout and stderr kept
/// for assertions (logs, console messages).
pub struct RelayProcess {
    pub child: std::process::Child,
    pub base: String,
    output: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl RelayProcess {
    /// Start `serve` on `config` with extra environment variables; wait for the "listening"
    /// JSON log line (the config must use `log_format = "json"`) to learn the port.
    pub fn start(config: &Path, env: &[(&str, &str)]) -> RelayProcess {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sekoia-relay"));
        cmd.arg("--config")
            .arg(config)
            .arg("serve")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the relay binary");
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let out = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                out.lock().unwrap().push(line);
            }
        });
        let out = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if let Some(port) = v["port"].as_u64() {
                        let _ = tx.send(port);
                    }
                }
                out.lock().unwrap().push(line);
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the relay logs its port");
        RelayProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
            output,
        }
    }

    /// Everything printed so far, one entry per line.
    pub fn output(&self) -> Vec<String> {
        self.output.lock().unwrap().clone()
    }

    /// Wait until a printed line contains `needle` (up to `within`); true if one did.
    pub async fn wait_for_output(&self, needle: &str, within: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.output().iter().any(|l| l.contains(needle)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Send a signal by name (`HUP`, `TERM`) with kill(1).
    pub fn signal(&self, name: &str) {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Wait for the process to exit (up to `within`, else the test fails).
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the relay") {
                return status;
            }
            assert!(start.elapsed() < within, "the relay did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The hook URL of the test hook on this process.
    pub fn hook_url(&self) -> String {
        format!("{}/hooks/{HOOK_ID}", self.base)
    }

    /// SIGTERM and wait for the exit; returns everything printed.
    pub async fn stop(mut self) -> Vec<String> {
        self.signal("TERM");
        let start = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(20)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The reader threads finish once the pipes close.
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.output()
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        // A failed assertion must not leave a server running.
        let _ = self.child.kill();
    }
}
