//! Slack through the Web API with a bot token (`chat.postMessage`, `chat.update`, thread
//! replies): one living message per alert. The body is the Slack card (same template and
//! limits as incoming webhooks); [`crate::chatapp`] adds the channel, `ts` and `thread_ts`.

use std::borrow::Cow;

use serde_json::Value;

use super::slack::{Slack, SLACK_MAX_BYTES};
use super::{TargetKind, TargetKindSpec};

/// Where the Slack Web API lives unless `api_url` says otherwise.
pub const SLACK_API_URL: &str = "https://slack.com/api";

pub struct SlackApp;

impl TargetKindSpec for SlackApp {
    fn kind(&self) -> TargetKind {
        TargetKind::SlackApp
    }

    /// `chat.postMessage` allows about one message per second per channel (Slack's "special"
    /// rate tier, docs/targets.md); `chat.update` is Tier 3 (50/min), above that pace.
    fn default_rate_limit_per_sec(&self) -> u32 {
        1
    }

    fn builtin_template(&self) -> (&'static str, &'static str) {
        (
            "builtin/slack_app.json.j2",
            include_str!("../../templates/slack.json.j2"),
        )
    }

    fn max_body_bytes(&self) -> usize {
        SLACK_MAX_BYTES
    }

    fn check_envelope(&self, body: &Value) -> Result<(), String> {
        Slack.check_envelope(body)
    }

    fn enforce_field_limits(&self, body: &mut Value) {
        Slack.enforce_field_limits(body)
    }

    fn md_escape<'a>(&self, s: &'a str) -> Cow<'a, str> {
        Slack.md_escape(s)
    }

    fn body_problems(&self, body: &Value) -> Vec<String> {
        Slack.body_problems(body)
    }

    fn default_url(&self) -> Option<&'static str> {
        Some(SLACK_API_URL)
    }

    fn chat_api(&self) -> bool {
        true
    }
}
