//! Amazon Chime incoming webhooks: exactly one `Content` string (Markdown with `/md`).

use std::borrow::Cow;

use serde_json::Value;

use super::{non_empty_str, object, TargetKind, TargetKindSpec};
use crate::render::text::{markdown_escape, neutralize_mentions};

/// Chime: messages over 4 KB get 413. Counted on the whole body, so the `Content` is
/// always under 4 096 bytes too.
pub const CHIME_MAX_BYTES: usize = 4_096;

pub struct Chime;

impl TargetKindSpec for Chime {
    fn kind(&self) -> TargetKind {
        TargetKind::Chime
    }

    /// Chime webhooks are limited to 1 request/s per webhook (docs/targets.md).
    fn default_rate_limit_per_sec(&self) -> u32 {
        1
    }

    fn builtin_template(&self) -> (&'static str, &'static str) {
        (
            "builtin/chime.json.j2",
            include_str!("../../templates/chime.json.j2"),
        )
    }

    fn builtin_digest_template(&self) -> Option<(&'static str, &'static str)> {
        Some((
            "builtin/digest/chime.json.j2",
            include_str!("../../templates/digest/chime.json.j2"),
        ))
    }

    /// What one message of this kind holds with the longest values the digest template
    /// lets through (checked by the render tests).
    fn digest_items_cap(&self) -> usize {
        6
    }

    fn max_body_bytes(&self) -> usize {
        CHIME_MAX_BYTES
    }

    fn check_envelope(&self, body: &Value) -> Result<(), String> {
        let obj = object(body)?;
        if obj.len() == 1 && non_empty_str(obj.get("Content")) {
            Ok(())
        } else {
            Err("Chime needs exactly one key, a non-empty `Content` string".into())
        }
    }

    /// Markdown, escaped as for Mattermost; `@All` and `@Present` are neutralised.
    fn md_escape<'a>(&self, s: &'a str) -> Cow<'a, str> {
        Cow::Owned(neutralize_mentions(&markdown_escape(s)).into_owned())
    }
}
