//! Mattermost through the REST API with a bot (or personal access) token: `POST
//! /api/v4/posts`, `PUT /api/v4/posts/{id}/patch`, replies with `root_id`; one living post per
//! alert. The body is the Mattermost card (same template as incoming webhooks);
//! [`crate::chatapp`] turns it into a post (`channel_id`, `message`, `props.attachments`).

use std::borrow::Cow;

use serde_json::Value;

use super::mattermost::{Mattermost, MATTERMOST_MAX_BYTES};
use super::{TargetKind, TargetKindSpec};

pub struct MattermostApp;

impl TargetKindSpec for MattermostApp {
    fn kind(&self) -> TargetKind {
        TargetKind::MattermostApp
    }

    /// Same as webhooks: Mattermost's rate limiting, when on, allows 10 requests/s per client.
    fn default_rate_limit_per_sec(&self) -> u32 {
        10
    }

    fn builtin_template(&self) -> (&'static str, &'static str) {
        (
            "builtin/mattermost_app.json.j2",
            include_str!("../../templates/mattermost.json.j2"),
        )
    }

    fn max_body_bytes(&self) -> usize {
        MATTERMOST_MAX_BYTES
    }

    fn check_envelope(&self, body: &Value) -> Result<(), String> {
        Mattermost.check_envelope(body)
    }

    fn enforce_field_limits(&self, body: &mut Value) {
        Mattermost.enforce_field_limits(body)
    }

    fn md_escape<'a>(&self, s: &'a str) -> Cow<'a, str> {
        Mattermost.md_escape(s)
    }

    fn body_problems(&self, body: &Value) -> Vec<String> {
        Mattermost.body_problems(body)
    }

    fn chat_api(&self) -> bool {
        true
    }
}
