//! `send-test TARGET`: post a sample message to one target now and show the answer.
//!
//! The sample alert's title is marked as a test so nobody on call mistakes it for an incident.
//! Only the target's scheme and host are printed, never its URL (it is a secret).

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{list, samples, CommandError};
use crate::configuration::Settings;
use crate::delivery::{policy, Sender};
use crate::render::{RenderInput, Renderer};

/// Longest response excerpt printed.
pub const EXCERPT_BYTES: usize = 512;

/// Prefix of the test message's title.
pub const TEST_TITLE_PREFIX: &str = "[TEST from sekoia-relay send-test, not an incident] ";

#[derive(Debug)]
pub struct SendReport {
    pub target: String,
    /// `scheme://host[:port]`, or `stdout`.
    pub host: String,
    pub status: Option<u16>,
    pub delivered: bool,
    /// The response excerpt, or the transport error.
    pub detail: String,
    pub elapsed: Duration,
    pub fallback: Option<String>,
}

impl SendReport {
    pub fn to_text(&self) -> String {
        let status = self
            .status
            .map(|s| format!("HTTP {s}"))
            .unwrap_or_else(|| "no response".into());
        let mut out = format!(
            "{}: POST {} -> {status} in {} ms: {}\n",
            self.target,
            self.host,
            self.elapsed.as_millis(),
            if self.delivered {
                "delivered"
            } else {
                "FAILED"
            }
        );
        if let Some(f) = &self.fallback {
            out.push_str(&format!(
                "note: {f}; the built-in template was sent instead\n"
            ));
        }
        if !self.detail.is_empty() {
            out.push_str(&format!("response: {}\n", self.detail));
        }
        out
    }
}

/// The sample created event and alert, with the title marked as a test.
pub fn test_sample() -> (Value, Value) {
    let event = samples::parse(samples::EVENT_CREATED);
    let mut alert = samples::parse(samples::ALERT);
    let title = alert["title"]
        .as_str()
        .unwrap_or("sample alert")
        .to_string();
    alert["title"] = Value::from(format!("{TEST_TITLE_PREFIX}{title}"));
    (event, alert)
}

pub async fn run(settings: &Settings, target: &str) -> Result<SendReport, CommandError> {
    let Some(t) = settings.targets.get(target) else {
        return Err(CommandError::UnknownTarget {
            name: target.to_string(),
            known: list(settings.targets.keys()),
        });
    };
    let renderer = Renderer::new(settings)?;
    let hook = settings
        .hooks
        .iter()
        .find(|h| h.candidate_targets().iter().any(|c| c == target));
    let (event, alert) = test_sample();
    let input = RenderInput {
        changes: &[],
        event: &event,
        alert: Some(&alert),
        enrichment_error: None,
        hook_name: hook.map(|h| h.name.as_str()).unwrap_or("send-test"),
        target_name: target,
        app_url: hook
            .map(|h| h.app_url(&settings.sekoia))
            .unwrap_or(&settings.sekoia.app_url),
    };
    let rendered = renderer.render(target, &input)?;
    let sender = Sender::new(Duration::from_secs(settings.delivery.timeout_secs))?;
    let started = Instant::now();
    if t.kind.spec().chat_api() {
        // A bot-token kind posts through the tool's API, not to a webhook URL.
        let a = crate::chatapp::post_test(sender.http(), t, &rendered.body).await;
        let delivered = a.verdict == policy::Verdict::Delivered;
        let detail = match (delivered, a.response) {
            (true, r) => r.unwrap_or_default(),
            (false, Some(r)) => {
                format!("{}: {}", a.error, policy::excerpt(r.trim(), EXCERPT_BYTES))
            }
            (false, None) => a.error,
        };
        return Ok(SendReport {
            target: target.to_string(),
            host: t.safe_host(),
            status: a.status,
            delivered,
            detail,
            elapsed: started.elapsed(),
            fallback: rendered.fallback,
        });
    }
    // Usually one post; a kind that must undo its test (PagerDuty resolves the incident it
    // opened) posts more, and the report is about the first that fails, else the last.
    let mut result = Err("nothing to send".to_string());
    for body in t.kind.spec().send_test_bodies(&rendered.body) {
        result = sender.send(t, &body).await;
        match &result {
            Ok(r) if policy::classify(t.kind, r.status, &r.body) == policy::Verdict::Delivered => {}
            _ => break,
        }
    }
    let elapsed = started.elapsed();
    Ok(match result {
        Ok(r) => {
            let verdict = policy::classify(t.kind, r.status, &r.body);
            let detail = if verdict == policy::Verdict::Redirected {
                let url = t.post_url().unwrap_or("");
                policy::redirect_error(r.status, url, r.location.as_deref())
            } else {
                policy::excerpt(r.body.trim(), EXCERPT_BYTES)
            };
            SendReport {
                target: target.to_string(),
                host: t.safe_host(),
                status: Some(r.status),
                delivered: verdict == policy::Verdict::Delivered,
                detail,
                elapsed,
                fallback: rendered.fallback,
            }
        }
        Err(e) => SendReport {
            target: target.to_string(),
            host: t.safe_host(),
            status: None,
            delivered: false,
            detail: e,
            elapsed,
            fallback: rendered.fallback,
        },
    })
}
