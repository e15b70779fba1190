//! One-click triage from a card's buttons (Slack and Mattermost): the buttons a card carries, what a press
//! says, who may press, and the slow part done after the chat tool got its answer (the status
//! change and comment in SEKOIA.IO, the card update, or an ephemeral note to the presser).

use std::sync::Arc;

use serde_json::{json, Value};

use crate::configuration::Settings;
use crate::metrics::Metrics;
use crate::sekoia::workflow::{self, WorkflowAction};
use crate::sekoia::Credentials;

/// The `block_id` of the buttons, so an update can remove them.
pub const BUTTONS_BLOCK: &str = "sekoia_triage";

/// What a button carries (its `value`): not secret, and only trusted after the signature.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ButtonValue {
    /// The hook whose API key changes the alert.
    pub h: String,
    /// Alert uuid and short id.
    pub a: String,
    #[serde(default)]
    pub s: String,
    /// Workflow action id and name.
    pub x: String,
    pub n: String,
}

impl ButtonValue {
    /// What the button of `action` on the card of alert `uuid` (brought by `hook`) carries.
    pub fn new(hook: &str, uuid: &str, short_id: &str, action: &WorkflowAction) -> Self {
        ButtonValue {
            h: hook.to_string(),
            a: uuid.to_string(),
            s: short_id.to_string(),
            x: action.id.clone(),
            n: action.name.clone(),
        }
    }
}

/// The Slack `actions` block for the alert's workflow actions.
pub fn slack_buttons(hook: &str, uuid: &str, short_id: &str, actions: &[WorkflowAction]) -> Value {
    let elements: Vec<Value> = workflow::buttons(actions)
        .iter()
        .map(|a| {
            let value = ButtonValue::new(hook, uuid, short_id, a);
            json!({
                "type": "button",
                "action_id": format!("triage-{}", a.id),
                "text": {"type": "plain_text", "text": crate::render::truncate_chars(&a.name, 75)},
                "value": serde_json::to_string(&value).unwrap_or_default(),
            })
        })
        .collect();
    json!({"type": "actions", "block_id": BUTTONS_BLOCK, "elements": elements})
}

/// One press of a Slack button, from the interaction payload.
#[derive(Debug, Clone)]
pub struct Press {
    pub button: ButtonValue,
    pub user_id: String,
    pub user_name: String,
    pub response_url: Option<String>,
    pub channel: String,
    pub ts: String,
    pub blocks: Value,
}

/// Read a Slack `block_actions` request: a form body with the JSON in `payload`.
pub fn parse_slack(body: &[u8]) -> Result<Press, String> {
    let payload = url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
        .ok_or("no `payload` field")?;
    let p: Value = serde_json::from_str(&payload).map_err(|_| "`payload` is not JSON")?;
    let action = p["actions"].get(0).ok_or("no action in the payload")?;
    let value = action["value"].as_str().ok_or("the button has no value")?;
    let button: ButtonValue =
        serde_json::from_str(value).map_err(|_| "not a button of the relay")?;
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    Ok(Press {
        button,
        user_id: s(&p["user"]["id"]),
        user_name: p["user"]["username"]
            .as_str()
            .or(p["user"]["name"].as_str())
            .unwrap_or("")
            .to_string(),
        response_url: p["response_url"].as_str().map(str::to_string),
        channel: s(&p["channel"]["id"]),
        ts: p["container"]["message_ts"]
            .as_str()
            .or(p["message"]["ts"].as_str())
            .unwrap_or("")
            .to_string(),
        blocks: p["message"]["blocks"].clone(),
    })
}

/// Whether the presser may act.
///
/// Rule: an empty `allowed_users` lets everyone in the channel act; otherwise the user's id
/// or name must be listed (a leading `@` ignored). Reason: the channel's membership is the
/// first gate; a list narrows it to the on-call team without a second login.
pub fn allowed(list: &[String], user_id: &str, user_name: &str) -> bool {
    list.is_empty()
        || list.iter().any(|u| {
            let u = u.trim_start_matches('@');
            (!user_id.is_empty() && u == user_id) || (!user_name.is_empty() && u == user_name)
        })
}

/// "Acknowledged", "Closed", "Rejected" for the usual actions; else the action's name.
///
/// Rule: the comment and the card say what was done in the past tense for SEKOIA.IO's
/// standard actions; a custom action keeps its name in quotes. Reason: "Acknowledged from
/// Slack by @alice" reads as a fact in the alert's history.
pub fn done_text(action: &str) -> String {
    match action.to_ascii_lowercase().as_str() {
        "acknowledge" => "Acknowledged".into(),
        "close" => "Closed".into(),
        "reject" => "Rejected".into(),
        "reopen" => "Reopened".into(),
        _ => format!("\"{action}\" done"),
    }
}

/// The card after a successful press: buttons removed, "Acknowledged by @alice" added.
pub fn updated_blocks(blocks: &Value, done: &str, user: &str) -> Value {
    let mut out: Vec<Value> = blocks
        .as_array()
        .map(|b| {
            b.iter()
                .filter(|b| b["block_id"] != BUTTONS_BLOCK)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let text = crate::render::text::slack_escape(&format!("{done} by @{user}")).into_owned();
    out.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}));
    Value::Array(out)
}

/// The slow part of a press, after Slack got its 200: change the status, comment, update the
/// card; on any failure tell the presser only, leaving the card as it is. One audit line and
/// one count per press.
pub async fn run_slack(
    http: reqwest::Client,
    settings: Arc<Settings>,
    target_name: String,
    press: Press,
    metrics: Arc<Metrics>,
) {
    let who = presser(&press.user_name, &press.user_id);
    let mut result = change(&http, &settings, &press.button, &who, "Slack").await;
    if let Ok(done) = &result {
        if let Some(target) = settings.targets.get(&target_name) {
            match super::api(&http, target) {
                Ok(super::Api::Slack(slack)) => {
                    let blocks = updated_blocks(&press.blocks, done, &who);
                    let at = crate::store::MessageRef {
                        channel: press.channel.clone(),
                        message_id: press.ts.clone(),
                        created_at_ms: 0,
                    };
                    let card = json!({"text": format!("{done} by @{who}"), "blocks": blocks});
                    if let super::Call::Failed(a) = slack.edit(&at, &card).await {
                        tracing::warn!(error = %a.error, "status changed, but the card could not be updated");
                    }
                }
                Ok(_) => {}
                Err(e) => result = Err(Failure::Other(e)),
            }
        }
    }
    if let Some(text) = report(&metrics, &target_name, &press.button, &who, &result) {
        ephemeral(&http, press.response_url.as_deref(), &text).await;
    }
}

/// One press of a Mattermost button: the integration request's JSON.
#[derive(Debug, Clone)]
pub struct MattermostPress {
    pub target: String,
    /// The secret the button carried, to compare with the target's.
    pub secret: String,
    pub button: ButtonValue,
    pub user_id: String,
    pub user_name: String,
    pub post_id: String,
}

/// Read a Mattermost integration request (`context` is what the relay put on the button).
pub fn parse_mattermost(body: &[u8]) -> Result<MattermostPress, String> {
    let p: Value = serde_json::from_slice(body).map_err(|_| "the body is not JSON")?;
    let ctx = &p["context"];
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let button: ButtonValue =
        serde_json::from_value(ctx["button"].clone()).map_err(|_| "not a button of the relay")?;
    let target = s(&ctx["target"]);
    if target.is_empty() {
        return Err("not a button of the relay".into());
    }
    Ok(MattermostPress {
        target,
        secret: s(&ctx["secret"]),
        button,
        user_id: s(&p["user_id"]),
        user_name: s(&p["user_name"]),
        post_id: s(&p["post_id"]),
    })
}

/// Mattermost's interactive buttons for the alert's workflow actions, each calling
/// `action_url` with the target's secret in its `context`.
///
/// Rule: ids are `triage0`, `triage1`, … (Mattermost routes presses by id and breaks on `-`
/// or `_`); names are cut to 75 characters like Slack's. Reason: the press must name its
/// target (to find the secret) and its alert and action (to act) without a lookup.
pub fn mattermost_buttons(
    target: &str,
    secret: &str,
    action_url: &str,
    hook: &str,
    uuid: &str,
    short_id: &str,
    actions: &[WorkflowAction],
) -> Vec<Value> {
    workflow::buttons(actions)
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let button = ButtonValue::new(hook, uuid, short_id, a);
            json!({
                "id": format!("triage{i}"),
                "type": "button",
                "name": crate::render::truncate_chars(&a.name, 75),
                "integration": {"url": action_url, "context": {
                    "target": target, "secret": secret, "button": button}},
            })
        })
        .collect()
}

/// The post's props after a successful press: every attachment's buttons removed and a last
/// attachment saying who did what.
pub fn updated_mattermost_props(props: &Value, done: &str, user: &str) -> Value {
    let mut props = match props {
        Value::Object(m) => Value::Object(m.clone()),
        _ => json!({}),
    };
    let mut attachments: Vec<Value> = props["attachments"].as_array().cloned().unwrap_or_default();
    for a in &mut attachments {
        if let Some(m) = a.as_object_mut() {
            m.remove("actions");
        }
    }
    let text = crate::render::text::markdown_escape(&format!("{done} by @{user}")).into_owned();
    attachments.push(json!({"text": text}));
    props["attachments"] = Value::Array(attachments);
    props
}

/// A Mattermost press, done while Mattermost waits: change the status, comment, update the
/// post; the answer is Mattermost's response body (`ephemeral_text` on failure, shown to the
/// presser only). One audit line and one count per press.
pub async fn run_mattermost(
    http: &reqwest::Client,
    settings: &Settings,
    press: &MattermostPress,
    metrics: &Metrics,
) -> Value {
    let who = presser(&press.user_name, &press.user_id);
    let mut result = change(http, settings, &press.button, &who, "Mattermost").await;
    if let Ok(done) = &result {
        if let Some(target) = settings.targets.get(&press.target) {
            match super::api(http, target) {
                Ok(super::Api::Mattermost(mm)) => {
                    if let Err(e) = mm.mark_done(&press.post_id, done, &who).await {
                        tracing::warn!(error = %e, "status changed, but the post could not be updated");
                    }
                }
                Ok(_) => {}
                Err(e) => result = Err(Failure::Other(e)),
            }
        }
    }
    match report(metrics, &press.target, &press.button, &who, &result) {
        Some(text) => json!({ "ephemeral_text": text }),
        None => json!({}),
    }
}

fn presser(name: &str, id: &str) -> String {
    if name.is_empty() {
        id.to_string()
    } else {
        name.to_string()
    }
}

/// The audit line and the count of a press; the text for the presser when it failed.
fn report(
    metrics: &Metrics,
    target_name: &str,
    b: &ButtonValue,
    who: &str,
    result: &Result<String, Failure>,
) -> Option<String> {
    let (label, detail) = match result {
        Ok(_) => ("done", String::new()),
        Err(Failure::Refused(e)) => ("refused", e.clone()),
        Err(Failure::Other(e)) => ("failed", e.clone()),
    };
    tracing::info!(
        audit = true,
        user = %who,
        alert = %b.s,
        action = %b.n,
        result = label,
        target = %target_name,
        error = %detail,
        "triage action"
    );
    if matches!(result, Err(Failure::Refused(_))) {
        tracing::warn!(alert = %b.s, "SEKOIA.IO refused a status change from the chat: the hook's API key needs SIC_WRITE_ALERTS_WORKFLOW and SIC_WRITE_ALERTS_COMMENTS");
    }
    metrics.triage_action(target_name, &b.n, label);
    result.is_err().then(|| {
        format!(
            "Could not {} {}: {detail}. The alert is unchanged.",
            b.n.to_lowercase(),
            if b.s.is_empty() { "the alert" } else { &b.s }
        )
    })
}

enum Failure {
    Refused(String),
    Other(String),
}

/// Change the alert's status and comment who did it from which tool; the past-tense text of
/// what was done.
async fn change(
    http: &reqwest::Client,
    settings: &Settings,
    b: &ButtonValue,
    who: &str,
    tool: &str,
) -> Result<String, Failure> {
    let hook = settings
        .hook_by_name(&b.h)
        .ok_or_else(|| Failure::Other("its hook is no longer configured".into()))?;
    let creds = Credentials::of_hook(hook, &settings.sekoia);
    let map = |e: workflow::WorkflowError| match e {
        workflow::WorkflowError::Refused(..) => Failure::Refused(e.to_string()),
        other => Failure::Other(other.to_string()),
    };
    workflow::change_status(http, &creds, &b.a, &b.x)
        .await
        .map_err(map)?;
    let done = done_text(&b.n);
    let comment = format!("{done} from {tool} by @{who}");
    if let Err(e) = workflow::comment(http, &creds, &b.a, &comment, "sekoia-relay").await {
        // The status did change: the card says so; the missing comment is logged.
        tracing::warn!(error = %e, alert = %b.s, "status changed, but the comment was refused");
    }
    Ok(done)
}

/// Tell the presser only (Slack `response_url`, ephemeral).
async fn ephemeral(http: &reqwest::Client, response_url: Option<&str>, text: &str) {
    let Some(url) = response_url else { return };
    let body = json!({"response_type": "ephemeral", "replace_original": false, "text": text});
    if let Err(e) = http.post(url).json(&body).send().await {
        tracing::warn!(error = %crate::delivery::describe_transport_error(e), "cannot tell the presser why the action failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_matches_ids_or_names() {
        assert!(allowed(&[], "U1", "alice"));
        let list = vec!["@alice".to_string(), "U9".to_string()];
        assert!(allowed(&list, "U1", "alice"));
        assert!(allowed(&list, "U9", ""));
        assert!(!allowed(&list, "U2", "bob"));
        assert!(!allowed(&list, "", ""));
    }

    #[test]
    fn the_card_loses_its_buttons_and_says_who_acted() {
        let blocks = json!([{"type": "section"}, {"type": "actions", "block_id": BUTTONS_BLOCK}]);
        let out = updated_blocks(&blocks, &done_text("Acknowledge"), "alice");
        assert_eq!(out.as_array().unwrap().len(), 2);
        assert_eq!(out[1]["elements"][0]["text"], "Acknowledged by @alice");
        assert_eq!(done_text("Close"), "Closed");
    }

    #[test]
    fn a_press_is_read_from_the_form_payload() {
        let value = serde_json::to_string(&ButtonValue {
            h: "soc".into(),
            a: "u-1".into(),
            s: "ALx".into(),
            x: "act-1".into(),
            n: "Acknowledge".into(),
        })
        .unwrap();
        let payload = json!({"type": "block_actions", "user": {"id": "U1", "username": "alice"},
            "channel": {"id": "C42"}, "container": {"message_ts": "1.2"},
            "message": {"ts": "1.2", "blocks": []}, "response_url": "https://r.test/x",
            "actions": [{"value": value}]});
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish();
        let p = parse_slack(body.as_bytes()).unwrap();
        assert_eq!(p.button.x, "act-1");
        assert_eq!(p.user_name, "alice");
        assert_eq!(p.ts, "1.2");
        assert!(parse_slack(b"payload=%7B%7D").is_err());
    }
}
