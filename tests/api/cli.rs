//! `check`, `render` and `send-test` (README, "Command line"), run as the real binary on temporary configs.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

/// A temporary directory with a config file and templates.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    /// A config file as an operator should keep it: readable by its owner only (`check` warns
    /// about secrets in a file other users can read; that warning has its own test).
    fn config(&self, text: &str) -> PathBuf {
        let p = self.config_with_default_mode(text);
        let mut perms = std::fs::metadata(&p).expect("stat").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
        std::fs::set_permissions(&p, perms).expect("chmod");
        p
    }

    fn config_with_default_mode(&self, text: &str) -> PathBuf {
        self.write(
            "config.toml",
            &format!(
                "[store]\npath = \"{}/relay.db\"\n{text}",
                self.dir.path().display()
            ),
        )
    }
}

fn run(config: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sekoia-relay"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("SEKOIA_RELAY_CONFIG")
        .output()
        .expect("run the binary")
}

/// Run the binary off the async runtime, so mock servers keep answering meanwhile.
async fn run_async(config: PathBuf, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&config, &refs)
    })
    .await
    .expect("join")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const HOOK: &str = r#"
[[hooks]]
name = "soc"
id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
targets = ["t"]
"#;

/// Target `t` of `kind` with the user template `t.j2` holding `template`.
fn one_target(kind: &str, template: &str) -> (Workspace, PathBuf) {
    let ws = Workspace::new();
    ws.write("t.j2", template);
    let config = ws.config(&format!(
        "[targets.t]\nkind = \"{kind}\"\nurl = \"https://chat.invalid/x?sig=abc\"\ntemplate = \"t.j2\"\n{HOOK}"
    ));
    (ws, config)
}

#[test]
fn check_passes_on_the_builtin_templates() {
    let ws = Workspace::new();
    let config = ws.config(
        r#"
[targets.teams]
kind = "teams"
url = "https://x.invalid/workflows/1?api-version=1&sig=abc"
[targets.slack]
kind = "slack"
url = "https://hooks.slack.invalid/services/1"
[targets.chime]
kind = "chime"
url = "https://hooks.chime.invalid/1"
[targets.console]
kind = "console"
[[hooks]]
name = "soc"
id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
targets = ["teams", "console"]
[[hooks.routes]]
targets = ["slack", "chime"]
min_urgency = 80
when = "alert.rule.name != 'Noisy rule'"
"#,
    );
    let out = run(&config, &["check"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).starts_with("ok: 0 problem(s), 0 warning(s)"));
}

#[test]
fn check_reports_each_failure_mode_with_its_message() {
    // (case, kind, template, expected pieces of the report)
    let cases: [(&str, &str, &str, &[&str]); 6] = [
        (
            "syntax",
            "slack",
            "{\"text\": {{ alert.title }},\n \"blocks\": {% for b in x %}\n}",
            &["t.j2 line 3", "syntax error"],
        ),
        (
            "invalid JSON",
            "webhook",
            "{\"title\": {{ alert.title }}\n \"rule\": {{ alert.rule.name }}}",
            &[
                "t.j2 renders invalid JSON [every sample]",
                "output line 2",
                "\"rule\": \"Cobalt Strike C2 (Sekoia CTI)\"",
            ],
        ),
        (
            "unknown filter",
            "mattermost",
            "{\n\"text\": {{ alert.title|shout }}}",
            &["t.j2 line 2", "unknown filter", "shout"],
        ),
        (
            "Teams schema",
            "teams",
            r#"{"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": {"type": "AdaptiveCard", "version": "1.4", "body": [{"type": "TextBlock", "text": {{ alert.title or "-" }}, "color": "Purple"}]}}]}"#,
            &["Adaptive Card schema", "/body/0/color", "[every sample]"],
        ),
        (
            "Chime over the limit",
            "chime",
            "{\"Content\": {{ \"/md \" ~ (alert.details or \"\") }}}",
            &[
                "over the chime limit of 4096 bytes",
                "created/alert-hostile",
            ],
        ),
        (
            "Slack empty text",
            "slack",
            r#"{"text": "x", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": {{ alert.entity.name or "" }}}}]}"#,
            &["blocks[0].text is empty", "created/unenriched"],
        ),
    ];
    for (case, kind, template, expected) in cases {
        let (_ws, config) = one_target(kind, template);
        let out = run(&config, &["check"]);
        let report = stdout(&out);
        assert_eq!(out.status.code(), Some(1), "{case}: {report}");
        for e in expected {
            assert!(report.contains(e), "{case}: {e:?} missing in\n{report}");
        }
        assert!(report.contains("FAILED"), "{case}");
        assert!(!report.contains("chat.invalid/x"), "{case}: URL leaked");
    }
}

#[test]
fn check_reports_bad_when_expressions_and_every_problem_at_once() {
    let ws = Workspace::new();
    ws.write("a.j2", "{\"text\": {{ alert.title }\n");
    ws.write("b.j2", "{% if %}\n");
    let config = ws.config(
        r#"
[targets.a]
kind = "slack"
url = "https://x.invalid/a"
template = "a.j2"
[targets.b]
kind = "webhook"
url = "https://x.invalid/b"
template = "b.j2"
[targets.c]
kind = "webhook"
url = "https://x.invalid/c"
template = "missing.j2"
[[hooks]]
name = "soc"
id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
targets = ["a", "b", "c"]
when = "alert.urgency.value >"
[[hooks.routes]]
targets = ["a"]
when = "alert.rule.name not 'x'"
"#,
    );
    let out = run(&config, &["check"]);
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    for e in [
        "a.j2 line 1",
        "b.j2 line 1",
        "cannot read template",
        "missing.j2",
        "hook \"soc\": `when` = \"alert.urgency.value >\" is not a valid expression",
        "hook \"soc\", route 1",
        "5 problem(s)",
    ] {
        assert!(report.contains(e), "{e:?} missing in\n{report}");
    }
}

#[test]
fn check_reports_config_errors_and_warnings() {
    let ws = Workspace::new();
    let config = ws.config("[server]\nlisten_adress = \"x\"\n");
    let out = run(&config, &["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("listen_adress"), "{}", stdout(&out));

    let config = ws.config(
        r#"
[targets.teams]
kind = "teams"
url = "https://prod-01.example.invalid/workflows/secret-path?api-version=1"
[[hooks]]
name = "soc"
id = "short"
targets = ["teams"]
"#,
    );
    let out = run(&config, &["check"]);
    let report = stdout(&out);
    assert!(out.status.success(), "warnings do not fail: {report}");
    assert!(
        report.contains("hook \"soc\": the id has 5 characters"),
        "{report}"
    );
    assert!(report.contains("no `sig=` parameter"), "{report}");
    assert!(!report.contains("secret-path"), "{report}");
    assert!(report.contains("0 problem(s), 2 warning(s)"), "{report}");

    // The same file readable by other users: it holds a hook id and a webhook URL.
    let mut perms = std::fs::metadata(&config).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(&config, perms).expect("chmod");
    let report = stdout(&run(&config, &["check"]));
    assert!(
        report.contains("readable by other users (mode 644)"),
        "{report}"
    );
    assert!(report.contains("chmod 600"), "{report}");
}

#[tokio::test]
async fn render_is_offline_and_follows_the_routes() {
    let mock = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&mock)
        .await;
    let ws = Workspace::new();
    let config = ws.config(&format!(
        r#"
[sekoia]
api_url = "{uri}"
api_key = "key-that-must-not-be-used"
[targets.teams]
kind = "teams"
url = "{uri}/teams"
[targets.slack]
kind = "slack"
url = "{uri}/slack"
[targets.pager]
kind = "webhook"
url = "{uri}/pager"
[[hooks]]
name = "soc"
id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
targets = ["teams"]
[[hooks.routes]]
targets = ["slack"]
min_urgency = 80
[[hooks.routes]]
targets = ["pager", "teams"]
when = "alert.rule.name != 'Noisy rule'"
"#,
        uri = mock.uri()
    ));

    // The sample alert has urgency 70: teams (once) and pager, not slack.
    let out = run_async(config.clone(), &["render", "--hook", "soc"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let bodies: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON body per line"))
        .collect();
    assert_eq!(bodies.len(), 2, "{}", stdout(&out));
    assert_eq!(bodies[0]["type"], "message", "teams first");
    assert_eq!(
        bodies[1]["alert"]["title"],
        "Cobalt Strike beacon HTTP traffic"
    );
    let notes = stderr(&out);
    assert!(notes.contains("==> target teams (teams"), "{notes}");
    assert!(
        notes.contains("target slack: not routed") && notes.contains("min_urgency 80"),
        "{notes}"
    );

    // An alert of our own, urgency 90: slack too.
    let mut alert = fixture_json("alert.json");
    alert["urgency"]["current_value"] = 90.into();
    let alert_file = ws.write("alert.json", &alert.to_string());
    let event_file = ws.write("event.json", &fixture("webhook-alert-updated.json"));
    let out = run_async(
        config.clone(),
        &[
            "render",
            "--hook",
            "soc",
            "--event",
            event_file.to_str().unwrap(),
            "--alert",
            alert_file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 3, "{}", stderr(&out));
    assert!(stdout(&out).contains("Alert updated"));

    // As if the API were down: every conditional route fails open.
    let out = run_async(config.clone(), &["render", "--hook", "soc", "--unenriched"]).await;
    assert!(out.status.success());
    assert_eq!(stdout(&out).lines().count(), 3, "{}", stderr(&out));
    assert!(stdout(&out).contains("unavailable"));

    let out = run_async(config, &["render", "--hook", "nope"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no hook named \"nope\""));

    // Nothing reached the network: neither the Alert API nor a target.
    assert!(mock
        .received_requests()
        .await
        .unwrap_or_default()
        .is_empty());
}

#[tokio::test]
async fn render_shows_the_fallback_when_a_user_template_fails() {
    let (_ws, config) = one_target("slack", "{\"text\": {{ alert.title }}\n");
    let out = run_async(config, &["render", "--hook", "soc"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("invalid JSON"), "{}", stderr(&out));
    let body: Value = serde_json::from_str(stdout(&out).trim()).expect("built-in body");
    assert!(body["blocks"].is_array());
}

#[tokio::test]
async fn send_test_posts_a_marked_sample_and_reports_the_answer() {
    let chat = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/T0/B0/secret-token"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(1)
        .mount(&chat)
        .await;
    Mock::given(method("POST"))
        .and(path("/broken/secret-token"))
        .respond_with(ResponseTemplate::new(400).set_body_string("invalid_blocks".repeat(100)))
        .expect(1)
        .mount(&chat)
        .await;
    let ws = Workspace::new();
    let config = ws.config(&format!(
        r#"
[targets.slack]
kind = "slack"
url = "{uri}/services/T0/B0/secret-token"
[targets.broken]
kind = "slack"
url = "{uri}/broken/secret-token"
[[hooks]]
name = "soc"
id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
targets = ["slack", "broken"]
"#,
        uri = chat.uri()
    ));

    let out = run_async(config.clone(), &["send-test", "slack"]).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(
        text.contains("HTTP 200") && text.contains("delivered"),
        "{text}"
    );
    assert!(text.contains(&chat.uri()), "the host is shown: {text}");
    assert!(
        !text.contains("secret-token"),
        "the URL path is not: {text}"
    );
    let got = received(&chat, "/services/T0/B0/secret-token").await;
    let body = body_json(&got[0]);
    assert!(
        body["text"].as_str().is_some_and(|t| t.contains("[TEST")),
        "{body}"
    );

    let out = run_async(config.clone(), &["send-test", "broken"]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("HTTP 400") && text.contains("FAILED"),
        "{text}"
    );
    assert!(text.contains("invalid_blocks"), "{text}");
    assert!(text.len() < 1000, "the response excerpt is bounded: {text}");

    let out = run_async(config, &["send-test", "nope"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no target named \"nope\""));
}

#[tokio::test]
async fn send_test_reports_a_redirect_and_does_not_follow_it() {
    let elsewhere = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let chat = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/moved/secret-token"))
        .respond_with(
            ResponseTemplate::new(308)
                .insert_header("Location", format!("{}/new/secret-token", elsewhere.uri())),
        )
        .expect(1)
        .mount(&chat)
        .await;
    let ws = Workspace::new();
    let config = ws.config(&format!(
        "[targets.moved]\nkind = \"slack\"\nurl = \"{}/moved/secret-token\"\n[[hooks]]\nname = \"soc\"\nid = \"{HOOK_ID}\"\ntargets = [\"moved\"]\n",
        chat.uri()
    ));
    let out = run_async(config, &["send-test", "moved"]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("HTTP 308") && text.contains("FAILED"),
        "{text}"
    );
    assert!(
        text.contains(&format!("target redirected to {}", elsewhere.uri())),
        "{text}"
    );
    assert!(!text.contains("secret-token"), "{text}");
}

#[test]
fn help_has_examples() {
    let ws = Workspace::new();
    let config = ws.config("");
    for cmd in ["check", "render", "send-test", "new-hook", "urls"] {
        let out = run(&config, &[cmd, "--help"]);
        assert!(out.status.success(), "{cmd}");
        assert!(stdout(&out).contains("Example"), "{cmd}: {}", stdout(&out));
    }
}

#[test]
fn urls_prints_each_hook_under_the_public_url() {
    let ws = Workspace::new();
    let config = ws.config(
        r#"
[server]
public_url = "https://abc123.ngrok-free.app/"
[targets.console]
kind = "console"
[[hooks]]
name = "soc"
id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
targets = ["console"]
[[hooks]]
name = "cert"
id = "0b0f8f0e-5b1c-4c5e-9a55-1f7a2f2d9c11"
targets = ["console"]
"#,
    );
    let out = run(&config, &["urls"]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        "soc\thttps://abc123.ngrok-free.app/hooks/67a7472b-b43c-415d-b1ce-c135fb1dfb0e\n\
         cert\thttps://abc123.ngrok-free.app/hooks/0b0f8f0e-5b1c-4c5e-9a55-1f7a2f2d9c11\n"
    );
}

#[test]
fn config_comes_from_the_environment_and_relative_paths_from_its_directory() {
    let ws = Workspace::new();
    let dir = ws.dir.path().join("etc");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("relay.toml");
    std::fs::write(
        &config,
        "[store]\npath = \"state/relay.db\"\n[targets.console]\nkind = \"console\"\n[[hooks]]\nname = \"soc\"\nid = \"67a7472b-b43c-415d-b1ce-c135fb1dfb0e\"\ntargets = [\"console\"]\n",
    )
    .unwrap();
    // No --config, and a working directory elsewhere: $SEKOIA_RELAY_CONFIG names the file and
    // `store.path` is relative to the file's directory, not to the working directory.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sekoia-relay"))
        .args(["dead-letters", "list"])
        .env("SEKOIA_RELAY_CONFIG", &config)
        .current_dir(ws.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dir.join("state/relay.db").exists(),
        "store created beside the config file"
    );
    assert!(!ws.dir.path().join("state").exists());
}

/// `check --online` calls the Alert API once per distinct API URL and key, with the key as a
/// Bearer token, and reports each outcome: ok, 401, 403, a wrong api_url, unreachable.
#[tokio::test]
async fn check_online_verifies_each_distinct_key_once_and_names_the_failure() {
    let api = MockServer::start().await;
    for (key, status) in [
        ("good-key", 200),
        ("no-perm-key", 403),
        ("expired-key", 401),
    ] {
        let answer = if status == 200 {
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"items": [], "total": 0}))
        } else {
            ResponseTemplate::new(status).set_body_string("{\"message\":\"nope\"}")
        };
        Mock::given(method("GET"))
            .and(path("/v1/sic/alerts"))
            .and(wiremock::matchers::query_param("limit", "1"))
            .and(wiremock::matchers::header(
                "Authorization",
                format!("Bearer {key}").as_str(),
            ))
            .respond_with(answer)
            .expect(1)
            .mount(&api)
            .await;
    }
    let uri = api.uri();
    let ws = Workspace::new();
    let hook = |name: &str, n: u8, extra: &str| {
        format!(
            "[[hooks]]\nname = \"{name}\"\nid = \"{n}7a7472b-b43c-415d-b1ce-c135fb1dfb0e\"\ntargets = [\"t\"]\n{extra}\n"
        )
    };
    let config = ws.config(&format!(
        "[sekoia]\napi_url = \"{uri}\"\napi_key = \"good-key\"\n[targets.t]\nkind = \"console\"\n{}{}{}{}{}{}",
        hook("soc", 1, ""),
        hook("lab", 2, ""),
        hook("noperm", 3, "api_key = \"no-perm-key\""),
        hook("old", 4, "api_key = \"expired-key\""),
        hook("typo", 5, &format!("api_url = \"{uri}/wrong\"")),
        hook("down", 6, "api_url = \"http://127.0.0.1:9\""),
    ));
    let out = run_async(config.clone(), &["check", "--online"]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for expected in [
        "ok: SEKOIA.IO API key of [sekoia] (hooks soc, lab) at http://127.0.0.1",
        "ok: the key can read alerts",
        "error: SEKOIA.IO API key of hooks noperm at http://127.0.0.1",
        "403: the key lacks the SIC_READ_ALERTS permission",
        "error: SEKOIA.IO API key of hooks old",
        "401: the key is invalid, expired or revoked, or was created in another region",
        "error: SEKOIA.IO API key of hooks typo",
        "404: api_url is not the Alert API of a region",
        "error: SEKOIA.IO API key of hooks down at http://127.0.0.1:9: unreachable: cannot connect",
    ] {
        assert!(text.contains(expected), "{expected:?} missing in:\n{text}");
    }
    for key in ["good-key", "no-perm-key", "expired-key"] {
        assert!(!text.contains(key) && !stderr(&out).contains(key), "{text}");
    }
    api.verify().await;

    // Offline `check` calls nothing.
    let offline = run_async(config, &["check"]).await;
    assert!(!stdout(&offline).contains("SEKOIA.IO API key"));
}

/// At startup the relay checks its key once and logs the result with the hook and target
/// counts, never the key.
#[tokio::test]
async fn startup_logs_the_key_check_once_with_hook_and_target_counts() {
    let sekoia = MockServer::start().await;
    let chat = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/sic/alerts"))
        .respond_with(ResponseTemplate::new(403).set_body_string("Forbidden"))
        .expect(1)
        .mount(&sekoia)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        config_text(&sekoia.uri(), &chat.uri(), dir.path(), DEFAULT_ROUTING),
    )
    .unwrap();
    let relay = RelayProcess::start(&config, &[]);
    assert!(
        relay
            .wait_for_output("missing_permission_403", std::time::Duration::from_secs(10))
            .await
    );
    let out = relay.stop().await;
    let lines: Vec<&String> = out.iter().filter(|l| l.contains("key_state")).collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line: Value = serde_json::from_str(lines[0]).expect("JSON log line");
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["hooks"], 1);
    assert_eq!(line["targets"], 2);
    assert!(line["message"]
        .as_str()
        .unwrap()
        .contains("SIC_READ_ALERTS"));
    assert!(!out.iter().any(|l| l.contains("test-api-key-0123456789")));
    sekoia.verify().await;
}

/// With the targets' variables unset, the commands that send nothing still work, and `check`
/// names every unset variable, not only the first.
#[test]
fn commands_that_send_nothing_work_without_target_secrets() {
    let ws = Workspace::new();
    let config = ws.config(
        r#"
[targets.mm]
kind = "mattermost"
url = "${MATTERMOST_WEBHOOK_URL}"
[targets.slack]
kind = "slack"
url = "${SLACK_WEBHOOK_URL}"
[[hooks]]
name = "soc"
id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
targets = ["mm", "slack"]
"#,
    );
    let run_clean = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sekoia-relay"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("SEKOIA_RELAY_CONFIG")
            .env_remove("MATTERMOST_WEBHOOK_URL")
            .env_remove("SLACK_WEBHOOK_URL")
            .output()
            .expect("run the binary")
    };
    for args in [
        &["urls"][..],
        &["dead-letters", "list"],
        &["render", "--hook", "soc"],
    ] {
        let out = run_clean(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    }
    let check = run_clean(&["check"]);
    assert_eq!(check.status.code(), Some(1));
    let text = stdout(&check);
    assert!(
        text.contains("MATTERMOST_WEBHOOK_URL is not set (used by key `targets.mm.url`)"),
        "{text}"
    );
    assert!(
        text.contains("SLACK_WEBHOOK_URL is not set (used by key `targets.slack.url`)"),
        "{text}"
    );
    // Sending needs them: send-test the secrets of its own target, and only those.
    let send = run_clean(&["send-test", "mm"]);
    assert_eq!(send.status.code(), Some(2));
    assert!(stderr(&send).contains("MATTERMOST_WEBHOOK_URL"));
    assert!(
        !stderr(&send).contains("SLACK_WEBHOOK_URL"),
        "{}",
        stderr(&send)
    );
}

/// Errors point to where the mistake is: a mistyped override names its variable, a missing
/// file says why once, an empty variable is named, a public_url without scheme is refused.
#[test]
fn errors_point_to_the_variable_or_file_at_fault() {
    let ws = Workspace::new();
    let config = ws.config(
        "[targets.slack]\nkind = \"slack\"\nurl = \"${SLACK_WEBHOOK_URL}\"\n[[hooks]]\nname = \"soc\"\nid = \"67a7472b-b43c-415d-b1ce-c135fb1dfb0e\"\ntargets = [\"slack\"]\n",
    );
    let relay = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sekoia-relay"));
        cmd.args(args).env_remove("SEKOIA_RELAY_CONFIG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run the binary")
    };
    let path = config.display().to_string();
    let slack = ("SLACK_WEBHOOK_URL", "https://hooks.slack.invalid/x");

    let out = relay(
        &["--config", &path, "urls"],
        &[slack, ("SEKOIA_RELAY__SERVER__LISTN", "0.0.0.0:8000")],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("environment variable SEKOIA_RELAY__SERVER__LISTN (sets `server.listn`): unknown field `listn`"),
        "{err}"
    );

    // A port in use: the cause is said once, not once per level of the chain.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let out = relay(
        &["--config", &path, "serve"],
        &[slack, ("SEKOIA_RELAY__SERVER__LISTEN", &listen)],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert_eq!(
        line.matches("Address already in use").count(),
        1,
        "the cause once: {line}"
    );
    let missing = ws.dir.path().join("nope.toml").display().to_string();
    let out = stdout(&relay(&["--config", &missing, "check"], &[]));
    assert!(
        out.contains("No such file or directory"),
        "check says why: {out}"
    );

    let out = stdout(&relay(
        &["--config", &path, "check"],
        &[("SLACK_WEBHOOK_URL", "")],
    ));
    assert!(
        out.contains("targets.slack.url is not an http(s) URL (it is empty: the environment variable SLACK_WEBHOOK_URL is set to \"\")"),
        "{out}"
    );

    let out = relay(
        &["--config", &path, "urls"],
        &[
            slack,
            ("SEKOIA_RELAY__SERVER__PUBLIC_URL", "relay.example.com"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("server.public_url = \"relay.example.com\" is not an http(s) URL"),
        "{}",
        stderr(&out)
    );
}

/// `render` shows a route whose `when` compares a number with a string as taken (the server
/// fails open) and says why, instead of silently showing it as not taken.
#[test]
fn render_names_a_type_mismatched_when_and_shows_the_route_taken() {
    let ws = Workspace::new();
    let config = ws.config(
        r#"
[targets.pager]
kind = "console"
[[hooks]]
name = "soc"
id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
[[hooks.routes]]
targets = ["pager"]
when = "alert.urgency.current_value >= '50'"
"#,
    );
    let out = run(&config, &["render", "--hook", "soc"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("!!  routing: hook \"soc\", route 1"), "{err}");
    assert!(err.contains("compares a number with a string"), "{err}");
    assert!(err.contains("==> target pager (console"), "taken: {err}");
    assert!(!stdout(&out).is_empty());
}
