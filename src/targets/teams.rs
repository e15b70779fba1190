//! Microsoft Teams, through a Workflows webhook ("Post to a channel when a webhook request is
//! received"): an Adaptive Card in a `message` envelope.

use std::borrow::Cow;

use serde_json::Value;

use super::{non_empty_str, object, TargetKind, TargetKindSpec};
use crate::render::UrgencyBand;

/// Teams Workflows: Microsoft documents failures above ~28 KB and a 202 never reports them,
/// so cards are kept under 25 KB (docs/targets.md, Teams).
pub const TEAMS_MAX_BYTES: usize = 25_000;

/// The official Adaptive Card 1.5 schema (microsoft/AdaptiveCards
/// `schemas/1.5.0/adaptive-card.json`, commit 93695cf, MIT, © Microsoft Corporation).
pub const ADAPTIVE_CARD_SCHEMA: &str = include_str!("adaptive-card.schema.json");

pub struct Teams;

impl TargetKindSpec for Teams {
    fn kind(&self) -> TargetKind {
        TargetKind::Teams
    }

    /// 4/s: the per-webhook limit documented for the Teams connector; Workflows publishes no
    /// per-webhook number, and 429s are obeyed on top (docs/targets.md).
    fn default_rate_limit_per_sec(&self) -> u32 {
        4
    }

    fn builtin_template(&self) -> (&'static str, &'static str) {
        (
            "builtin/teams.json.j2",
            include_str!("../../templates/teams.json.j2"),
        )
    }

    fn builtin_digest_template(&self) -> Option<(&'static str, &'static str)> {
        Some((
            "builtin/digest/teams.json.j2",
            include_str!("../../templates/digest/teams.json.j2"),
        ))
    }

    fn max_body_bytes(&self) -> usize {
        TEAMS_MAX_BYTES
    }

    /// Teams needs `type: "message"` and a non-empty `attachments` list of objects with a
    /// `contentType`; an Adaptive Card attachment's `content` must be an `AdaptiveCard`.
    fn check_envelope(&self, body: &Value) -> Result<(), String> {
        let obj = object(body)?;
        if obj.get("type").and_then(Value::as_str) != Some("message") {
            return Err("`type` must be \"message\"".into());
        }
        let attachments = obj
            .get("attachments")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .ok_or("`attachments` must be a non-empty list")?;
        for (i, a) in attachments.iter().enumerate() {
            if !non_empty_str(a.get("contentType")) {
                return Err(format!("attachments[{i}] needs a `contentType` string"));
            }
            let adaptive = a.get("contentType").and_then(Value::as_str)
                == Some("application/vnd.microsoft.card.adaptive");
            if adaptive
                && a.get("content")
                    .and_then(|c| c.get("type"))
                    .and_then(Value::as_str)
                    != Some("AdaptiveCard")
            {
                return Err(format!(
                    "attachments[{i}].content must be an object with type \"AdaptiveCard\""
                ));
            }
        }
        Ok(())
    }

    /// Markdown links `[text](url)` are broken, so alert data cannot show a disguised link;
    /// nothing else (TextBlocks cannot mention anyone, and whether Teams honours backslash
    /// escapes is undocumented).
    fn md_escape<'a>(&self, s: &'a str) -> Cow<'a, str> {
        crate::render::text::break_markdown_links(s)
    }

    /// Adaptive Card TextBlock colours are a closed set of names (hex is rejected).
    fn urgency_color(&self, band: Option<UrgencyBand>) -> &'static str {
        match band {
            Some(UrgencyBand::Urgent | UrgencyBand::Major) => "Attention",
            Some(UrgencyBand::High) => "Warning",
            Some(UrgencyBand::Moderate) => "Accent",
            Some(UrgencyBand::Low) => "Good",
            None => "Default",
        }
    }

    /// The retired Teams connector answered 2xx with a body like "Microsoft Teams endpoint
    /// returned HTTP error 429"; such a body is classified as that status.
    fn embedded_status(&self, body: &str) -> Option<u16> {
        teams_embedded_error(body)
    }

    fn url_problems(&self, name: &str, url: &url::Url) -> Vec<String> {
        if url
            .host_str()
            .is_some_and(|h| h.ends_with(".webhook.office.com"))
        {
            return vec![format!(
                "targets.{name}: Office 365 connector URLs (*.webhook.office.com) are retired; create a Teams Workflows webhook (\"Post to a channel when a webhook request is received\") and use its URL"
            )];
        }
        Vec::new()
    }

    fn url_warnings(&self, name: &str, url: &str, safe_host: &str) -> Vec<String> {
        let has_sig = url::Url::parse(url)
            .map(|u| u.query_pairs().any(|(k, _)| k == "sig"))
            .unwrap_or(false);
        if has_sig {
            return Vec::new();
        }
        vec![format!(
            "targets.{name}: the Teams URL ({safe_host}) has no `sig=` parameter; Workflows webhook URLs carry one: copy the whole URL"
        )]
    }

    fn body_problems(&self, body: &Value) -> Vec<String> {
        teams_problems(body)
    }
}

/// The status code inside a Teams connector error text, if the body carries one.
pub fn teams_embedded_error(body: &str) -> Option<u16> {
    const MARKER: &str = "Microsoft Teams endpoint returned HTTP error ";
    // Teams answers most posts with a bare `1`: no search to set up (twice per send).
    if body.len() < MARKER.len() {
        return None;
    }
    let at = body.find(MARKER)? + MARKER.len();
    let digits: String = body[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok().or(Some(500))
}

/// Teams: each Adaptive Card attachment must validate against the official schema (embedded),
/// without Teams' own `msteams` key, which the schema does not know.
fn teams_problems(body: &Value) -> Vec<String> {
    let schema = serde_json::from_str::<Value>(ADAPTIVE_CARD_SCHEMA).unwrap_or(Value::Null);
    let validator = match jsonschema::validator_for(&schema) {
        Ok(v) => v,
        Err(e) => {
            return vec![format!(
                "internal: the Adaptive Card schema does not load: {e}"
            )]
        }
    };
    let mut out = Vec::new();
    for (i, a) in body["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if a["contentType"] != "application/vnd.microsoft.card.adaptive" {
            continue;
        }
        let mut card = a["content"].clone();
        if let Some(obj) = card.as_object_mut() {
            obj.remove("msteams");
        }
        let mut leaves = Vec::new();
        for e in validator.iter_errors(&card) {
            schema_leaves(&e, &mut leaves);
        }
        leaves.dedup();
        let total = leaves.len();
        for leaf in leaves.into_iter().take(5) {
            out.push(format!(
                "attachments[{i}].content does not match the Adaptive Card schema: {leaf}"
            ));
        }
        if total > 5 {
            out.push(format!(
                "attachments[{i}].content: {} more schema errors",
                total - 5
            ));
        }
    }
    out
}

/// The useful errors inside a schema error. The card schema is a tree of `anyOf`s (a block is
/// one of many element types), whose own message ("not valid under any of the schemas") says
/// nothing; follow the branch that matched deepest, and print values masked (their path
/// locates them, and a 5 000-character alert detail would drown the message).
fn schema_leaves(e: &jsonschema::ValidationError<'_>, out: &mut Vec<String>) {
    use jsonschema::error::ValidationErrorKind as K;
    let depth = |e: &jsonschema::ValidationError<'_>| e.instance_path.as_str().matches('/').count();
    match &e.kind {
        K::AnyOf { context } | K::OneOfNotValid { context } if !context.is_empty() => {
            let best = context
                .iter()
                .filter(|b| !b.is_empty())
                .max_by_key(|branch| {
                    let deepest = branch.iter().map(depth).max().unwrap_or(0);
                    (deepest, std::cmp::Reverse(branch.len()))
                });
            match best {
                // A branch got further into the value: the mistake is in there.
                Some(branch) if branch.iter().map(depth).max().unwrap_or(0) > depth(e) => {
                    branch.iter().for_each(|sub| schema_leaves(sub, out))
                }
                // Every branch failed on the value itself (e.g. an enum or null): list them.
                _ => {
                    let mut options = Vec::new();
                    alternatives(e, &mut options);
                    out.push(format!("{} (at {})", options.join(", or "), location(e)));
                }
            }
        }
        _ => out.push(format!("{} (at {})", e.masked(), location(e))),
    }
}

/// The messages of every alternative of nested `anyOf`/`oneOf`s, each once.
fn alternatives(e: &jsonschema::ValidationError<'_>, out: &mut Vec<String>) {
    use jsonschema::error::ValidationErrorKind as K;
    match &e.kind {
        K::AnyOf { context } | K::OneOfNotValid { context } if !context.is_empty() => {
            for sub in context.iter().flatten() {
                alternatives(sub, out);
            }
        }
        _ => {
            let m = e.masked().to_string();
            if !out.contains(&m) {
                out.push(m);
            }
        }
    }
}

fn location(e: &jsonschema::ValidationError<'_>) -> String {
    match e.instance_path.as_str() {
        "" => "/".to_string(),
        p => p.to_string(),
    }
}
