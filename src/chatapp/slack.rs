//! The Slack Web API calls of a living message, and what Slack's answers mean.
//!
//! Slack answers most failures with HTTP 200 and `{"ok": false, "error": "…"}`
//! (<https://api.slack.com/web#evaluating_responses>), so the body decides, not the status.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::{new_ref, Call, ChatAnswer};
use crate::delivery::policy::{self, excerpt, Verdict};
use crate::domain::TargetKind;
use crate::store::MessageRef;

/// What one Slack `error` code means for the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlackError {
    /// The message or thread is gone (deleted in Slack): post a new card.
    Gone,
    /// Like an HTTP status of this verdict.
    Is(Verdict),
}

/// Classify a Slack Web API `error` code.
///
/// Rule: `ratelimited` is throttled (retried after `Retry-After`, not counted);
/// `message_not_found`, `cant_update_message`, `thread_not_found` mean the message is gone
/// (post anew); `internal_error`, `fatal_error`, `service_unavailable`, `request_timeout`
/// are retried; everything else (`invalid_auth`, `not_authed`, `token_revoked`,
/// `account_inactive`, `channel_not_found`, `not_in_channel`, `is_archived`,
/// `missing_scope`, `invalid_blocks`, `msg_too_long`, …) is permanent. Reason: these are the
/// codes Slack documents for `chat.postMessage` and `chat.update`; only the server-side ones
/// pass by themselves, while a bad token, a channel the bot is not in or a rejected card
/// needs a human, so retrying the same request for a day would only hide it.
pub fn classify_error(code: &str) -> SlackError {
    match code {
        "ratelimited" | "rate_limited" => SlackError::Is(Verdict::Throttled),
        "message_not_found" | "cant_update_message" | "thread_not_found" => SlackError::Gone,
        "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => {
            SlackError::Is(Verdict::Retry)
        }
        _ => SlackError::Is(Verdict::Permanent),
    }
}

/// One Slack bot-token target.
pub struct SlackApi<'a> {
    pub http: &'a reqwest::Client,
    /// The Web API base, `https://slack.com/api` unless `api_url` says otherwise.
    pub base: &'a str,
    pub token: &'a str,
    /// As configured: an id or a name (Slack answers with the id, which is what is stored).
    pub channel: &'a str,
}

impl SlackApi<'_> {
    pub(crate) async fn post(&self, card: &Value) -> Call<MessageRef> {
        let mut body = card.clone();
        body["channel"] = json!(self.channel);
        match self.call("chat.postMessage", &body).await {
            Call::Ok(answer) => {
                let channel = answer["channel"].as_str().unwrap_or(self.channel);
                match answer["ts"].as_str() {
                    Some(ts) => Call::Ok(new_ref(channel.to_string(), ts.to_string())),
                    None => Call::Failed(ChatAnswer {
                        status: Some(200),
                        verdict: Verdict::Retry,
                        retry_after: None,
                        response: Some(excerpt(&answer.to_string(), 2048)),
                        error: "Slack chat.postMessage answered ok without a `ts`".into(),
                    }),
                }
            }
            Call::Gone => Call::Gone,
            Call::Failed(a) => Call::Failed(a),
        }
    }

    pub(crate) async fn edit(&self, at: &MessageRef, card: &Value) -> Call<()> {
        let mut body = card.clone();
        body["channel"] = json!(at.channel);
        body["ts"] = json!(at.message_id);
        match self.call("chat.update", &body).await {
            Call::Ok(_) => Call::Ok(()),
            Call::Gone => Call::Gone,
            Call::Failed(a) => Call::Failed(a),
        }
    }

    pub(crate) async fn reply(&self, at: &MessageRef, text: &str) -> Call<()> {
        let body = json!({"channel": at.channel, "thread_ts": at.message_id, "text": text});
        match self.call("chat.postMessage", &body).await {
            Call::Ok(_) => Call::Ok(()),
            Call::Gone => Call::Gone,
            Call::Failed(a) => Call::Failed(a),
        }
    }

    /// POST a Web API method with the bot token; the answer's JSON when `ok` is true.
    async fn call(&self, method: &str, body: &Value) -> Call<Value> {
        let url = format!("{}/{method}", self.base.trim_end_matches('/'));
        let sent = self
            .http
            .post(&url)
            .bearer_auth(self.token)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )
            .body(body.to_string())
            .send()
            .await;
        let res = match sent {
            Ok(r) => r,
            Err(e) => {
                return Call::Failed(ChatAnswer::transport(format!(
                    "Slack {method}: {}",
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
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        let ok = parsed.as_ref().and_then(|v| v["ok"].as_bool());
        match (status, ok) {
            (200..=299, Some(true)) => Call::Ok(parsed.unwrap_or(Value::Null)),
            (_, Some(false)) => {
                let code = parsed
                    .as_ref()
                    .and_then(|v| v["error"].as_str())
                    .unwrap_or("unknown_error");
                match classify_error(code) {
                    SlackError::Gone => Call::Gone,
                    SlackError::Is(verdict) => Call::Failed(ChatAnswer {
                        status: Some(status),
                        verdict,
                        retry_after: retry_after.or(throttle_default(verdict)),
                        response: Some(excerpt(&text, 2048)),
                        error: format!("Slack {method}: {code}"),
                    }),
                }
            }
            _ => {
                // No Slack verdict in the body (a proxy, a 5xx page): the status decides.
                let verdict = match policy::classify(TargetKind::Webhook, status, "") {
                    Verdict::Delivered => Verdict::Retry,
                    v => v,
                };
                Call::Failed(ChatAnswer {
                    status: Some(status),
                    verdict,
                    retry_after,
                    response: Some(excerpt(&text, 2048)),
                    error: format!("Slack {method}: HTTP {status} without a Slack answer"),
                })
            }
        }
    }
}

/// A `ratelimited` without `Retry-After` still waits a little (Slack's limits are per minute).
fn throttle_default(verdict: Verdict) -> Option<Duration> {
    (verdict == Verdict::Throttled).then_some(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_errors_are_classified_like_statuses() {
        assert_eq!(
            classify_error("ratelimited"),
            SlackError::Is(Verdict::Throttled)
        );
        for code in [
            "invalid_auth",
            "not_authed",
            "token_revoked",
            "account_inactive",
            "channel_not_found",
            "not_in_channel",
            "missing_scope",
            "invalid_blocks",
        ] {
            assert_eq!(
                classify_error(code),
                SlackError::Is(Verdict::Permanent),
                "{code}"
            );
        }
        assert_eq!(classify_error("message_not_found"), SlackError::Gone);
        assert_eq!(classify_error("thread_not_found"), SlackError::Gone);
        assert_eq!(
            classify_error("internal_error"),
            SlackError::Is(Verdict::Retry)
        );
    }
}
