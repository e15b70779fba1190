//! A generic webhook: any JSON the template makes, POSTed with the configured `headers`.

use std::borrow::Cow;

use serde_json::Value;

use super::{TargetKind, TargetKindSpec};

/// Generic webhook: no protocol limit; 1 MiB catches a runaway template.
pub const WEBHOOK_MAX_BYTES: usize = 1_048_576;

pub struct Webhook;

impl TargetKindSpec for Webhook {
    fn kind(&self) -> TargetKind {
        TargetKind::Webhook
    }

    /// Unlimited: the receiver is the operator's own service.
    fn default_rate_limit_per_sec(&self) -> u32 {
        0
    }

    fn builtin_template(&self) -> (&'static str, &'static str) {
        (
            "builtin/webhook.json.j2",
            include_str!("../../templates/webhook.json.j2"),
        )
    }

    fn max_body_bytes(&self) -> usize {
        WEBHOOK_MAX_BYTES
    }

    /// Any JSON value is accepted.
    fn check_envelope(&self, _body: &Value) -> Result<(), String> {
        Ok(())
    }

    /// Unchanged: JSON has no markup.
    fn md_escape<'a>(&self, s: &'a str) -> Cow<'a, str> {
        Cow::Borrowed(s)
    }
}
