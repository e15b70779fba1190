//! Mattermost incoming webhooks: `text` and/or Slack-style `attachments`, with optional
//! `channel`, `username` and `icon_url` overrides from config.

use std::borrow::Cow;

use serde_json::Value;

use super::{cap_str, non_empty_list, non_empty_str, object, TargetKind, TargetKindSpec};
use crate::render::text::{markdown_escape, neutralize_mentions};

/// Mattermost accepts far more (it splits long posts), but nobody reads 64 KB on call.
pub const MATTERMOST_MAX_BYTES: usize = 65_536;
/// Mattermost `text`: 4 000 runes is the limit of older servers; longer posts get split.
pub const MATTERMOST_TEXT_MAX_CHARS: usize = 4_000;

pub struct Mattermost;

impl TargetKindSpec for Mattermost {
    fn kind(&self) -> TargetKind {
        TargetKind::Mattermost
    }

    /// Mattermost's rate limiting (off by default) allows 10 requests/s per remote IP when on
    /// (docs/targets.md).
    fn default_rate_limit_per_sec(&self) -> u32 {
        10
    }

    fn builtin_template(&self) -> (&'static str, &'static str) {
        (
            "builtin/mattermost.json.j2",
            include_str!("../../templates/mattermost.json.j2"),
        )
    }

    fn builtin_digest_template(&self) -> Option<(&'static str, &'static str)> {
        Some((
            "builtin/digest/mattermost.json.j2",
            include_str!("../../templates/digest/mattermost.json.j2"),
        ))
    }

    fn max_body_bytes(&self) -> usize {
        MATTERMOST_MAX_BYTES
    }

    fn check_envelope(&self, body: &Value) -> Result<(), String> {
        let obj = object(body)?;
        if non_empty_str(obj.get("text")) || non_empty_list(obj.get("attachments")) {
            Ok(())
        } else {
            Err("Mattermost needs a non-empty `text` or `attachments`".into())
        }
    }

    fn enforce_field_limits(&self, body: &mut Value) {
        cap_str(body, "text", MATTERMOST_TEXT_MAX_CHARS);
    }

    /// Markdown: `&`, `<`, `>` become entities (Mattermost converts Slack-style `<url|label>`
    /// links, and entities survive that), other inline Markdown punctuation is
    /// backslash-escaped, and mentions are neutralised.
    fn md_escape<'a>(&self, s: &'a str) -> Cow<'a, str> {
        Cow::Owned(neutralize_mentions(&markdown_escape(s)).into_owned())
    }

    /// `channel`, `username`, `icon_url`: the overrides a Mattermost webhook accepts, for the
    /// template to put in the body.
    fn context_keys(&self) -> &'static [&'static str] {
        &["channel", "username", "icon_url"]
    }

    fn body_problems(&self, body: &Value) -> Vec<String> {
        mattermost_problems(body)
    }
}

/// Mattermost: attachments must be objects (a list of strings is a 400).
fn mattermost_problems(body: &Value) -> Vec<String> {
    match body.get("attachments") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter(|(_, a)| !a.is_object())
            .map(|(i, _)| format!("attachments[{i}] must be an object"))
            .collect(),
        Some(_) => vec!["`attachments` must be a list".into()],
    }
}
