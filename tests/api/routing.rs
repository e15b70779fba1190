//! Routing (README, `[[hooks]]` routes) and user templates (README, "Templates") through the
//! real server.

use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(10);
/// How long to keep watching a target that must receive nothing.
const QUIET: Duration = Duration::from_millis(700);

/// `teams` always; `slack` from urgency 80 and, with `pager`, unless the rule is noisy.
const ONCALL: &str = r#"
[targets.teams]
kind = "teams"
url = "{chat}/teams"
rate_limit_per_sec = 0
[targets.slack]
kind = "slack"
url = "{chat}/slack"
rate_limit_per_sec = 0
[targets.pager]
kind = "webhook"
url = "{chat}/pager"

[[hooks]]
name = "soc"
id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
targets = ["teams"]

[[hooks.routes]]
targets = ["slack"]
min_urgency = 80

[[hooks.routes]]
targets = ["slack", "pager"]
when = "alert.rule.name != 'Noisy rule'"
"#;

/// The Alert API answers every alert with `alert.json` changed by `edit`.
async fn mount_alert_with(app: &TestApp, edit: impl Fn(&mut Value)) {
    let mut alert = fixture_json("alert.json");
    edit(&mut alert);
    Mock::given(method("GET"))
        .and(path_regex("^/v1/sic/alerts/.+$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(alert))
        .mount(&app.sekoia)
        .await;
}

#[tokio::test]
async fn critical_alerts_also_page_the_on_call_channel_once() {
    let app = TestApp::spawn_with(ONCALL).await;
    mount_alert_with(&app, |a| a["urgency"]["current_value"] = json!(90)).await;
    mount_chat_ok(&app.chat).await;

    assert_eq!(app.post_event(&alert_event(1)).await.status(), 202);

    for p in ["/teams", "/slack", "/pager"] {
        assert_eq!(wait_for(&app.chat, p, 1, WAIT).await.len(), 1, "{p}");
    }
    tokio::time::sleep(QUIET).await;
    // slack is named by both matching routes: one message.
    assert_eq!(received(&app.chat, "/slack").await.len(), 1);
}

#[tokio::test]
async fn routes_whose_conditions_fail_are_skipped() {
    let app = TestApp::spawn_with(ONCALL).await;
    // urgency 70 (< 80) and the noisy rule: only the unconditional target.
    mount_alert_with(&app, |a| a["rule"]["name"] = json!("Noisy rule")).await;
    mount_chat_ok(&app.chat).await;

    assert_eq!(app.post_event(&alert_event(2)).await.status(), 202);

    assert_eq!(wait_for(&app.chat, "/teams", 1, WAIT).await.len(), 1);
    tokio::time::sleep(QUIET).await;
    assert!(received(&app.chat, "/slack").await.is_empty());
    assert!(received(&app.chat, "/pager").await.is_empty());
}

#[tokio::test]
async fn conditions_on_the_alert_fail_open_when_it_is_unavailable() {
    let app = TestApp::spawn_with(ONCALL).await;
    Mock::given(method("GET"))
        .and(path_regex("^/v1/sic/alerts/.+$"))
        .respond_with(ResponseTemplate::new(403))
        .mount(&app.sekoia)
        .await;
    mount_chat_ok(&app.chat).await;

    assert_eq!(app.post_event(&alert_event(3)).await.status(), 202);

    // Neither min_urgency nor the `when` on alert.rule can be answered: everyone is told.
    for p in ["/teams", "/slack", "/pager"] {
        assert_eq!(wait_for(&app.chat, p, 1, WAIT).await.len(), 1, "{p}");
    }
    tokio::time::sleep(QUIET).await;
    assert_eq!(received(&app.chat, "/slack").await.len(), 1);
}

/// A config with one Slack target using the user template `slack.json.j2`, written in the
/// test's directory before the relay starts.
async fn spawn_with_user_template(source: &str) -> TestApp {
    let sekoia = wiremock::MockServer::start().await;
    let chat = wiremock::MockServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("slack.json.j2"), source).expect("write template");
    TestApp::start(
        sekoia,
        chat,
        dir,
        r#"
[targets.slack]
kind = "slack"
url = "{chat}/slack"
rate_limit_per_sec = 0
template = "slack.json.j2"

[[hooks]]
name = "soc"
id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
targets = ["slack"]
"#,
    )
    .await
}

#[tokio::test]
async fn a_user_template_prints_hostile_data_literally() {
    let app = spawn_with_user_template(
        "{\"text\": {{ (\"<!channel> \" ~ alert.title ~ \" \" ~ alert.urgency|urgency_text) }}, \"blocks\": [{\"type\": \"section\", \"text\": {\"type\": \"mrkdwn\", \"text\": {{ alert.rule.name|md_escape }}}}]}",
    )
    .await;
    mount_alert_with(&app, |a| {
        a["title"] = json!("{{ 7*7 }} \"quoted\"\n{% raw %}");
        a["rule"]["name"] = json!("<!here> & {{ 6*7 }}");
    })
    .await;
    mount_chat_ok(&app.chat).await;

    assert_eq!(app.post_event(&alert_event(4)).await.status(), 202);

    let got = wait_for(&app.chat, "/slack", 1, WAIT).await;
    assert_eq!(got.len(), 1);
    let body = body_json(&got[0]);
    // The author's own mention stays; the data is printed as data, never evaluated.
    assert_eq!(
        body["text"],
        "<!channel> {{ 7*7 }} \"quoted\"\n{% raw %} Major (70)"
    );
    assert_eq!(
        body["blocks"][0]["text"]["text"],
        "&lt;!here&gt; &amp; {{ 6*7 }}"
    );
    assert!(!String::from_utf8_lossy(&got[0].body).contains("49"));
}

#[tokio::test]
async fn a_broken_user_template_still_delivers_with_the_builtin() {
    // Compiles, but renders invalid JSON (missing closing brace).
    let app = spawn_with_user_template("{\"text\": {{ alert.title }}\n").await;
    mount_alert(&app.sekoia).await;
    mount_chat_ok(&app.chat).await;

    assert_eq!(app.post_event(&alert_event(5)).await.status(), 202);

    let got = wait_for(&app.chat, "/slack", 1, WAIT).await;
    assert_eq!(got.len(), 1, "the alert is delivered");
    let body = body_json(&got[0]);
    assert!(body["blocks"].is_array(), "built-in Slack message: {body}");
    assert!(
        body["text"]
            .as_str()
            .is_some_and(|t| t.contains("Cobalt Strike beacon HTTP traffic")),
        "{body}"
    );
}

/// A `when` comparing a number with a quoted number is an evaluation error: every event goes
/// through (fail open), and the warning is logged once for the rule, not once per event.
#[tokio::test]
async fn a_type_mismatched_when_fails_open_and_warns_once_per_rule() {
    let sekoia = wiremock::MockServer::start().await;
    let chat = wiremock::MockServer::start().await;
    mount_alert(&sekoia).await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::path("/pager"))
        .respond_with(ResponseTemplate::new(200))
        .expect(3)
        .mount(&chat)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let routing = format!(
        "[targets.pager]\nkind = \"webhook\"\nurl = \"{{chat}}/pager\"\n\
         [[hooks]]\nname = \"soc\"\nid = \"{HOOK_ID}\"\n\
         [[hooks.routes]]\ntargets = [\"pager\"]\nwhen = \"alert.urgency.current_value >= '50'\"\n"
    );
    std::fs::write(
        &config,
        config_text(&sekoia.uri(), &chat.uri(), dir.path(), &routing),
    )
    .unwrap();
    let relay = RelayProcess::start(&config, &[]);
    let client = reqwest::Client::new();
    for n in 1..=3 {
        let r = client
            .post(relay.hook_url())
            .json(&alert_event(n))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    wait_for(&chat, "/pager", 3, WAIT).await;
    let out = relay.stop().await;
    let warnings: Vec<&String> = out
        .iter()
        .filter(|l| l.contains("`when` failed to evaluate"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains("compares a number with a string"),
        "{}",
        warnings[0]
    );
    chat.verify().await;
}
