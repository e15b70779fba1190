//! Changing an alert from a chat button: the workflow actions an alert allows, the status
//! change, and the comment saying who did it.
//!
//! Endpoints, from SEKOIA.IO's public Alert API documentation and the public
//! SEKOIA-IO/automation-library (`Sekoia.io/sekoiaio/operation_center/`, whose
//! `update_alert_status` and `comment_alert` actions call them):
//! - `GET {api}/v1/sic/alerts/{uuid}/workflow` → `{"actions": [{"id", "name", …}]}`
//!   (permission `SIC_READ_ALERTS`);
//! - `PATCH {api}/v1/sic/alerts/{uuid}/workflow` with `{"action_uuid": …}`
//!   (`SIC_WRITE_ALERTS_WORKFLOW`);
//! - `POST {api}/v1/sic/alerts/{uuid}/comments` with `{"content", "author"}`
//!   (`SIC_WRITE_ALERTS_COMMENTS`; `author` at most 32 characters).

use secrecy::ExposeSecret;
use serde_json::{json, Value};

use super::Credentials;

/// One status change an alert allows now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowAction {
    pub id: String,
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// 401/403: the key lacks the permission (or is wrong).
    #[error("SEKOIA.IO refused: HTTP {0} (does the API key have {1}?)")]
    Refused(u16, &'static str),
    #[error("SEKOIA.IO answered HTTP {0}")]
    Http(u16),
    #[error("SEKOIA.IO unreachable: {0}")]
    Transport(String),
    #[error("SEKOIA.IO answered something that is not a workflow listing")]
    Malformed,
}

/// Path segment check: the uuid comes from a button press, so it must not reshape the URL.
fn safe_uuid(uuid: &str) -> bool {
    !uuid.is_empty()
        && uuid.len() <= 64
        && uuid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

async fn call(
    http: &reqwest::Client,
    creds: &Credentials,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    permission: &'static str,
) -> Result<Value, WorkflowError> {
    let url = format!("{}{path}", creds.api_url.trim_end_matches('/'));
    let mut req = http
        .request(method, &url)
        .bearer_auth(creds.api_key.expose_secret());
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req
        .send()
        .await
        .map_err(|e| WorkflowError::Transport(crate::delivery::describe_transport_error(e)))?;
    let status = res.status().as_u16();
    match status {
        200..=299 => Ok(res.json::<Value>().await.unwrap_or(Value::Null)),
        401 | 403 => Err(WorkflowError::Refused(status, permission)),
        _ => Err(WorkflowError::Http(status)),
    }
}

/// The status changes the alert allows now.
pub async fn actions(
    http: &reqwest::Client,
    creds: &Credentials,
    uuid: &str,
) -> Result<Vec<WorkflowAction>, WorkflowError> {
    if !safe_uuid(uuid) {
        return Err(WorkflowError::Malformed);
    }
    let path = format!("/v1/sic/alerts/{uuid}/workflow");
    let v = call(
        http,
        creds,
        reqwest::Method::GET,
        &path,
        None,
        "SIC_READ_ALERTS",
    )
    .await?;
    parse_actions(&v).ok_or(WorkflowError::Malformed)
}

/// `{"actions": [{"id", "name"}]}` → the actions with both (others are skipped).
pub fn parse_actions(v: &Value) -> Option<Vec<WorkflowAction>> {
    let list = v.get("actions")?.as_array()?;
    Some(
        list.iter()
            .filter_map(|a| {
                Some(WorkflowAction {
                    id: a.get("id")?.as_str()?.to_string(),
                    name: a.get("name")?.as_str()?.to_string(),
                })
            })
            .collect(),
    )
}

/// Apply a workflow action (a status change).
pub async fn change_status(
    http: &reqwest::Client,
    creds: &Credentials,
    uuid: &str,
    action_id: &str,
) -> Result<(), WorkflowError> {
    if !safe_uuid(uuid) {
        return Err(WorkflowError::Malformed);
    }
    let path = format!("/v1/sic/alerts/{uuid}/workflow");
    let body = json!({ "action_uuid": action_id });
    call(
        http,
        creds,
        reqwest::Method::PATCH,
        &path,
        Some(body),
        "SIC_WRITE_ALERTS_WORKFLOW",
    )
    .await
    .map(|_| ())
}

/// Add a comment to the alert; `author` is cut to SEKOIA.IO's 32 characters.
pub async fn comment(
    http: &reqwest::Client,
    creds: &Credentials,
    uuid: &str,
    content: &str,
    author: &str,
) -> Result<(), WorkflowError> {
    if !safe_uuid(uuid) {
        return Err(WorkflowError::Malformed);
    }
    let path = format!("/v1/sic/alerts/{uuid}/comments");
    let author: String = author.chars().take(32).collect();
    let body = json!({ "content": content, "author": author });
    call(
        http,
        creds,
        reqwest::Method::POST,
        &path,
        Some(body),
        "SIC_WRITE_ALERTS_COMMENTS",
    )
    .await
    .map(|_| ())
}

/// The buttons a card shows, from the alert's actions.
///
/// Rule: at most 5, in the API's order. Reason: the API knows which changes the alert's
/// current status allows; Slack shows at most 5 buttons on one line before wrapping.
pub fn buttons(actions: &[WorkflowAction]) -> &[WorkflowAction] {
    &actions[..actions.len().min(5)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_read_from_the_listing() {
        let v = json!({"actions": [
            {"id": "a1", "name": "Acknowledge", "description": "x"},
            {"name": "no id"},
            {"id": "a2", "name": "Close"}]});
        let got = parse_actions(&v).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].name, "Close");
        assert!(parse_actions(&json!({"items": []})).is_none());
        assert!(!safe_uuid("../x"));
        assert!(safe_uuid("5696845f-9ecf-4431-9f0f-48ee0ee2eff1"));
    }
}
