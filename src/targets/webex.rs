//! Webex incoming webhooks: `{"markdown": "…"}` (or `text`), one message in the space.

use std::borrow::Cow;

use serde_json::Value;

use super::{non_empty_str, object, TargetKind, TargetKindSpec};
use crate::render::text::{markdown_escape, neutralize_mentions, truncate_bytes};

/// "The maximum message length is 7439 bytes" for `text`, `markdown` and `html` (Webex
/// `create-a-message`; Alertmanager's `maxMessageSize`).
pub const WEBEX_MESSAGE_MAX_BYTES: usize = 7_439;
/// The whole body: both message fields at their limit, plus JSON escaping and the envelope.
pub const WEBEX_MAX_BYTES: usize = 32 * 1024;

pub struct Webex;

impl TargetKindSpec for Webex {
    fn kind(&self) -> TargetKind {
        TargetKind::Webex
    }

    /// Webex publishes no per-webhook number, only 429 with `Retry-After` (docs/targets.md).
    fn default_rate_limit_per_sec(&self) -> u32 {
        1
    }

    fn builtin_template(&self) -> (&'static str, &'static str) {
        (
            "builtin/webex.json.j2",
            include_str!("../../templates/webex.json.j2"),
        )
    }

    fn builtin_digest_template(&self) -> Option<(&'static str, &'static str)> {
        Some((
            "builtin/digest/webex.json.j2",
            include_str!("../../templates/digest/webex.json.j2"),
        ))
    }

    /// What one message of this kind holds with the longest values the digest template
    /// lets through (checked by the render tests).
    fn digest_items_cap(&self) -> usize {
        12
    }

    fn max_body_bytes(&self) -> usize {
        WEBEX_MAX_BYTES
    }

    fn check_envelope(&self, body: &Value) -> Result<(), String> {
        let obj = object(body)?;
        if non_empty_str(obj.get("markdown")) || non_empty_str(obj.get("text")) {
            Ok(())
        } else {
            Err("Webex needs a non-empty `markdown` or `text` string".into())
        }
    }

    /// `markdown` and `text` ≤ 7 439 bytes each, cut at the end (templates keep the link
    /// near the top).
    fn enforce_field_limits(&self, body: &mut Value) {
        for key in ["markdown", "text"] {
            if let Some(Value::String(s)) = body.get_mut(key) {
                if let Cow::Owned(cut) = truncate_bytes(s, WEBEX_MESSAGE_MAX_BYTES) {
                    *s = cut;
                }
            }
        }
    }

    /// Markdown, escaped as for Mattermost (entities for `&<>`, so `<@all>` and
    /// `<@personEmail:…>` read as text; a backslash before inline punctuation); `@mentions`
    /// neutralised.
    fn md_escape<'a>(&self, s: &'a str) -> Cow<'a, str> {
        Cow::Owned(neutralize_mentions(&markdown_escape(s)).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelope_and_byte_limit() {
        assert!(Webex.check_envelope(&json!({"markdown": "x"})).is_ok());
        assert!(Webex.check_envelope(&json!({"text": "x"})).is_ok());
        assert!(Webex.check_envelope(&json!({"markdown": ""})).is_err());
        let mut body = json!({"markdown": "é".repeat(5000)});
        Webex.enforce_field_limits(&mut body);
        let md = body["markdown"].as_str().unwrap();
        assert!(
            md.len() <= WEBEX_MESSAGE_MAX_BYTES && md.ends_with('…'),
            "{}",
            md.len()
        );
    }

    #[test]
    fn mentions_and_links_read_as_text() {
        let s = Webex.md_escape("<@all> <@personEmail:a@b.c> [x](https://evil) @all");
        assert!(!s.contains('<') && !s.contains("@all"), "{s}");
        assert!(
            s.contains(r"\[x\](https://evil)"),
            "the link is escaped: {s}"
        );
    }
}
