//! The Mattermost REST API calls of a living message (API v4, bot or personal access token):
//! `POST /api/v4/posts` (a card, or a reply with `root_id`), `PUT /api/v4/posts/{id}/patch`.
//! Mattermost reports failures with HTTP statuses; a 404 on an edit or a reply means the post
//! was deleted.

use std::time::SystemTime;

use serde_json::{json, Map, Value};

use super::{new_ref, Call, ChatAnswer};
use crate::delivery::policy::{self, excerpt, Verdict};
use crate::domain::TargetKind;
use crate::store::MessageRef;

/// The post's `message` and `props` from the rendered webhook card (`text`, `attachments`).
///
/// Rule: `text` becomes `message`, `attachments` go to `props.attachments`, the webhook-only
/// overrides (`channel`, `username`, `icon_url`) are dropped. Reason: the REST API takes a
/// post, not a webhook payload, and the same template serves both kinds.
pub fn post_fields(card: &Value) -> (String, Value) {
    let message = card["text"].as_str().unwrap_or("").to_string();
    let mut props = Map::new();
    if let Some(a) = card.get("attachments").filter(|a| a.is_array()) {
        props.insert("attachments".into(), a.clone());
    }
    (message, Value::Object(props))
}

/// One Mattermost bot-token target.
pub struct MattermostApi<'a> {
    pub http: &'a reqwest::Client,
    /// The server, e.g. `https://chat.example.com`.
    pub base: &'a str,
    pub token: &'a str,
    pub channel_id: &'a str,
}

impl MattermostApi<'_> {
    pub(crate) async fn post(&self, card: &Value) -> Call<MessageRef> {
        let (message, props) = post_fields(card);
        let body = json!({"channel_id": self.channel_id, "message": message, "props": props});
        match self.call(reqwest::Method::POST, "/api/v4/posts", Some(&body)).await {
            Call::Ok(answer) => match answer["id"].as_str() {
                Some(id) => Call::Ok(new_ref(self.channel_id.to_string(), id.to_string())),
                None => Call::Failed(ChatAnswer {
                    status: Some(201),
                    verdict: Verdict::Retry,
                    retry_after: None,
                    response: Some(excerpt(&answer.to_string(), 2048)),
                    error: "Mattermost created a post without an `id`".into(),
                }),
            },
            // A 404 on a new post: the channel is gone, which no retry fixes.
            Call::Gone => Call::Failed(ChatAnswer {
                status: Some(404),
                verdict: Verdict::Permanent,
                retry_after: None,
                response: None,
                error: "Mattermost POST /api/v4/posts: HTTP 404 (is channel_id right, and is the bot a member?)".into(),
            }),
            Call::Failed(a) => Call::Failed(a),
        }
    }

    pub(crate) async fn edit(&self, at: &MessageRef, card: &Value) -> Call<()> {
        let (message, props) = post_fields(card);
        let body = json!({"message": message, "props": props});
        let path = format!("/api/v4/posts/{}/patch", at.message_id);
        match self.call(reqwest::Method::PUT, &path, Some(&body)).await {
            Call::Ok(_) => Call::Ok(()),
            Call::Gone => Call::Gone,
            Call::Failed(a) => Call::Failed(a),
        }
    }

    pub(crate) async fn reply(&self, at: &MessageRef, text: &str) -> Call<()> {
        let body = json!({"channel_id": at.channel, "root_id": at.message_id, "message": text});
        match self
            .call(reqwest::Method::POST, "/api/v4/posts", Some(&body))
            .await
        {
            Call::Ok(_) => Call::Ok(()),
            Call::Gone => Call::Gone,
            Call::Failed(a) => Call::Failed(a),
        }
    }

    /// After a button press: the post loses its buttons and says who did what.
    pub(crate) async fn mark_done(
        &self,
        post_id: &str,
        done: &str,
        who: &str,
    ) -> Result<(), String> {
        // The id comes from the press: it must not reshape the URL.
        if post_id.is_empty() || !post_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err("the press names no valid post id".into());
        }
        let path = format!("/api/v4/posts/{post_id}");
        let post = match self.call(reqwest::Method::GET, &path, None).await {
            Call::Ok(p) => p,
            Call::Gone => return Err("the post no longer exists".into()),
            Call::Failed(a) => return Err(a.error),
        };
        let props = super::triage::updated_mattermost_props(&post["props"], done, who);
        let path = format!("/api/v4/posts/{post_id}/patch");
        match self
            .call(
                reqwest::Method::PUT,
                &path,
                Some(&json!({ "props": props })),
            )
            .await
        {
            Call::Ok(_) => Ok(()),
            Call::Gone => Err("the post no longer exists".into()),
            Call::Failed(a) => Err(a.error),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Call<Value> {
        let what = format!("Mattermost {method} {}", path_label(path));
        let url = format!("{}{path}", self.base.trim_end_matches('/'));
        let mut req = self.http.request(method, &url).bearer_auth(self.token);
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let sent = req.send().await;
        let res = match sent {
            Ok(r) => r,
            Err(e) => {
                return Call::Failed(ChatAnswer::transport(format!(
                    "{what}: {}",
                    super::describe(e)
                )))
            }
        };
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::retry::parse_retry_after(v, SystemTime::now()));
        let text = super::read_body(res).await;
        if status == 404 {
            return Call::Gone;
        }
        match policy::classify(TargetKind::Webhook, status, "") {
            Verdict::Delivered => Call::Ok(serde_json::from_str(&text).unwrap_or(Value::Null)),
            verdict => Call::Failed(ChatAnswer {
                status: Some(status),
                verdict,
                retry_after,
                response: Some(excerpt(&text, 2048)),
                error: format!("{what}: HTTP {status}"),
            }),
        }
    }
}

/// `/api/v4/posts/{id}/patch` for logs: the post id is not secret, but it is noise.
fn path_label(path: &str) -> &str {
    if path.ends_with("/patch") {
        "/api/v4/posts/{id}/patch"
    } else if path.starts_with("/api/v4/posts/") {
        "/api/v4/posts/{id}"
    } else {
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_card_becomes_a_post() {
        let card = json!({"text": "New alert", "channel": "town-square", "username": "x",
            "attachments": [{"title": "T", "color": "#A4262C"}]});
        let (message, props) = post_fields(&card);
        assert_eq!(message, "New alert");
        assert_eq!(
            props,
            json!({"attachments": [{"title": "T", "color": "#A4262C"}]})
        );
        assert_eq!(post_fields(&json!({"text": "x"})).1, json!({}));
    }
}
