//! Per-kind payload rules: the envelope each target accepts, its field limits and its hard
//! size limit (reference: chat-targets.md). Applied to every rendered payload, built-in or not.

use serde_json::Value;

use super::text::{truncate_bytes, truncate_chars};
use crate::configuration::TargetKind;

/// Teams Workflows: Microsoft documents failures above ~28 KB and a 202 never reports them,
/// so cards are kept under 25 KB (chat-targets.md §1b).
pub const TEAMS_MAX_BYTES: usize = 25_000;
/// Slack: no documented byte limit, but `msg_blocks_too_long` was hit at ~13 000 characters
/// of block text; a 12 000-byte body keeps all text under that, whatever the script.
pub const SLACK_MAX_BYTES: usize = 12_000;
/// Mattermost accepts far more (it splits long posts), but nobody reads 64 KB on call.
pub const MATTERMOST_MAX_BYTES: usize = 65_536;
/// Chime: messages over 4 KB get 413. Counted on the whole body, so the `Content` is
/// always under 4 096 bytes too.
pub const CHIME_MAX_BYTES: usize = 4_096;
/// Generic webhook: no protocol limit; 1 MiB catches a runaway template.
pub const WEBHOOK_MAX_BYTES: usize = 1_048_576;
/// Console: stdout, capped so a huge alert cannot flood the terminal or the log collector.
pub const CONSOLE_MAX_BYTES: usize = 65_536;

/// Slack top-level `text` (notification fallback): Slack cuts at 40 000, keep it readable.
pub const SLACK_TEXT_MAX_CHARS: usize = 4_000;
pub const SLACK_MAX_BLOCKS: usize = 50;
pub const SLACK_HEADER_MAX_CHARS: usize = 150;
pub const SLACK_SECTION_TEXT_MAX_CHARS: usize = 3_000;
pub const SLACK_MAX_FIELDS: usize = 10;
pub const SLACK_FIELD_MAX_CHARS: usize = 2_000;
pub const SLACK_BUTTON_TEXT_MAX_CHARS: usize = 75;
pub const SLACK_MAX_ACTION_ELEMENTS: usize = 25;
pub const SLACK_MAX_CONTEXT_ELEMENTS: usize = 10;
pub const SLACK_MARKDOWN_BLOCK_MAX_CHARS: usize = 12_000;
/// Mattermost `text`: 4 000 runes is the limit of older servers; longer posts get split.
pub const MATTERMOST_TEXT_MAX_CHARS: usize = 4_000;

/// The hard size limit of a rendered body for a kind, in bytes: nothing larger is sent.
pub fn max_body_bytes(kind: TargetKind) -> usize {
    match kind {
        TargetKind::Teams => TEAMS_MAX_BYTES,
        TargetKind::Slack => SLACK_MAX_BYTES,
        TargetKind::Mattermost => MATTERMOST_MAX_BYTES,
        TargetKind::Chime => CHIME_MAX_BYTES,
        TargetKind::Webhook => WEBHOOK_MAX_BYTES,
        TargetKind::Console => CONSOLE_MAX_BYTES,
    }
}

/// Check that a rendered JSON body has the envelope its target accepts.
///
/// These are the mistakes that turn into a 400 from the target, i.e. a dead letter and a lost
/// alert, so they are caught before sending (and trigger the built-in fallback): Teams needs
/// `type: "message"` and a non-empty `attachments` list of objects with a `contentType`;
/// Slack needs `text`, `blocks` or `attachments`; Mattermost `text` or `attachments`; Chime
/// exactly a `Content` string. A generic webhook accepts any JSON.
pub fn check_envelope(kind: TargetKind, body: &Value) -> Result<(), String> {
    let non_empty_str =
        |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(|s| !s.is_empty());
    let non_empty_list =
        |v: Option<&Value>| v.and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    let obj = match (kind, body.as_object()) {
        (TargetKind::Webhook | TargetKind::Console, _) => return Ok(()),
        (_, Some(obj)) => obj,
        (_, None) => return Err("the body must be a JSON object".into()),
    };
    match kind {
        TargetKind::Teams => {
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
        TargetKind::Slack => {
            if non_empty_str(obj.get("text"))
                || non_empty_list(obj.get("blocks"))
                || non_empty_list(obj.get("attachments"))
            {
                Ok(())
            } else {
                Err("Slack needs a non-empty `text`, `blocks` or `attachments`".into())
            }
        }
        TargetKind::Mattermost => {
            if non_empty_str(obj.get("text")) || non_empty_list(obj.get("attachments")) {
                Ok(())
            } else {
                Err("Mattermost needs a non-empty `text` or `attachments`".into())
            }
        }
        TargetKind::Chime => {
            if obj.len() == 1 && non_empty_str(obj.get("Content")) {
                Ok(())
            } else {
                Err("Chime needs exactly one key, a non-empty `Content` string".into())
            }
        }
        TargetKind::Webhook | TargetKind::Console => Ok(()),
    }
}

/// Cut the string at `v[key]` to `max` characters, if it is a string.
fn cap_str(v: &mut Value, key: &str, max: usize) {
    if let Some(Value::String(s)) = v.get_mut(key) {
        if let std::borrow::Cow::Owned(cut) = truncate_chars(s, max) {
            *s = cut;
        }
    }
}

/// Cut the list at `v[key]` to `max` items, if it is a list.
fn cap_list(v: &mut Value, key: &str, max: usize) {
    if let Some(Value::Array(items)) = v.get_mut(key) {
        items.truncate(max);
    }
}

/// Text object (`{"type": "plain_text"|"mrkdwn", "text": …}`) at `v[key]`, capped.
fn cap_text_object(v: &mut Value, key: &str, max: usize) {
    if let Some(obj) = v.get_mut(key) {
        cap_str(obj, "text", max);
    }
}

/// Apply the field limits of a kind in place, so a long value is cut instead of the whole
/// message being rejected (a 400 from Slack for a 151-character header is a lost alert).
///
/// Slack: top-level `text` ≤ 4 000, ≤ 50 blocks (also inside legacy attachments), header
/// ≤ 150, section text ≤ 3 000, ≤ 10 fields of ≤ 2 000, ≤ 25 action elements with button text
/// ≤ 75, ≤ 10 context elements, markdown block ≤ 12 000. Mattermost: `text` ≤ 4 000. Other
/// kinds have no per-field limit; their size is handled by [`shrink_to_fit`].
pub fn enforce_field_limits(kind: TargetKind, body: &mut Value) {
    match kind {
        TargetKind::Slack => {
            cap_str(body, "text", SLACK_TEXT_MAX_CHARS);
            slack_blocks(body);
            if let Some(Value::Array(atts)) = body.get_mut("attachments") {
                atts.iter_mut().for_each(slack_blocks);
            }
        }
        TargetKind::Mattermost => cap_str(body, "text", MATTERMOST_TEXT_MAX_CHARS),
        _ => {}
    }
}

fn slack_blocks(holder: &mut Value) {
    cap_list(holder, "blocks", SLACK_MAX_BLOCKS);
    let Some(Value::Array(blocks)) = holder.get_mut("blocks") else {
        return;
    };
    for block in blocks.iter_mut() {
        match block.get("type").and_then(Value::as_str) {
            Some("header") => cap_text_object(block, "text", SLACK_HEADER_MAX_CHARS),
            Some("section") => {
                cap_text_object(block, "text", SLACK_SECTION_TEXT_MAX_CHARS);
                cap_list(block, "fields", SLACK_MAX_FIELDS);
                if let Some(Value::Array(fields)) = block.get_mut("fields") {
                    for f in fields.iter_mut() {
                        cap_str(f, "text", SLACK_FIELD_MAX_CHARS);
                    }
                }
                if let Some(acc) = block.get_mut("accessory") {
                    cap_text_object(acc, "text", SLACK_BUTTON_TEXT_MAX_CHARS);
                }
            }
            Some("actions") => {
                cap_list(block, "elements", SLACK_MAX_ACTION_ELEMENTS);
                if let Some(Value::Array(els)) = block.get_mut("elements") {
                    for e in els.iter_mut() {
                        if e.get("type").and_then(Value::as_str) == Some("button") {
                            cap_text_object(e, "text", SLACK_BUTTON_TEXT_MAX_CHARS);
                        }
                    }
                }
            }
            Some("context") => {
                cap_list(block, "elements", SLACK_MAX_CONTEXT_ELEMENTS);
                if let Some(Value::Array(els)) = block.get_mut("elements") {
                    for e in els.iter_mut() {
                        cap_str(e, "text", SLACK_SECTION_TEXT_MAX_CHARS);
                    }
                }
            }
            Some("markdown") => cap_str(block, "text", SLACK_MARKDOWN_BLOCK_MAX_CHARS),
            _ => {}
        }
    }
}

/// Keys whose string values are never shortened by [`shrink_to_fit`]: links (a cut URL is a
/// broken button) and protocol tokens (a cut `type` is an invalid payload).
const PROTECTED_KEYS: [&str; 16] = [
    "url",
    "title_link",
    "icon_url",
    "author_link",
    "image_url",
    "thumb_url",
    "$schema",
    "type",
    "contentType",
    "style",
    "color",
    "action_id",
    "block_id",
    "version",
    "channel",
    "link",
];

/// Strings shorter than this are left alone: cutting them saves little and they are the
/// facts (urgency, status, ids) the reader needs most.
const MIN_SHRINKABLE_BYTES: usize = 48;

fn collect_shrinkable<'a>(v: &'a mut Value, key: Option<&str>, out: &mut Vec<&'a mut String>) {
    match v {
        Value::String(s)
            if s.len() >= MIN_SHRINKABLE_BYTES
                && !key.is_some_and(|k| PROTECTED_KEYS.contains(&k)) =>
        {
            out.push(s);
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                collect_shrinkable(item, key, out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                collect_shrinkable(item, Some(k.as_str()), out);
            }
        }
        _ => {}
    }
}

/// The byte level `L` such that cutting every string longer than `L` down to `L` saves at
/// least `excess` bytes, as high as possible (so the cut is spread over the longest strings
/// rather than wiping one of them). `lens` is sorted longest first.
fn water_level(lens: &[usize], excess: usize) -> Option<usize> {
    let mut sum = 0usize;
    for (k, len) in lens.iter().enumerate() {
        sum += len;
        let count = k + 1;
        // Highest level L with sum(top count) - count * L >= excess.
        let Some(saved_at_zero) = sum.checked_sub(excess) else {
            // Even cutting these to nothing would not save enough: include the next one.
            continue;
        };
        let level = saved_at_zero / count;
        let next = lens.get(count).copied().unwrap_or(0);
        if level >= next {
            return Some(level);
        }
    }
    None
}

/// Serialize `body` compactly, shortening its longest strings until it fits `max_bytes`.
///
/// The rule: a payload never goes out over the target's hard limit, and what gets cut is the
/// bulk (details, descriptions), not the facts or the links. Strings under protected keys
/// (URLs, `type`, …) and short strings are never cut; the others are cut to a common length
/// (water-filling), at grapheme boundaries with an ellipsis. Removing a character never saves
/// fewer serialized bytes than its UTF-8 length, so one pass normally suffices; a few more are
/// allowed for safety. Returns the serialized body, or its size when it cannot be made to fit.
pub fn shrink_to_fit(body: &mut Value, max_bytes: usize) -> Result<String, usize> {
    for _ in 0..8 {
        let text = serde_json::to_string(body).map_err(|_| usize::MAX)?;
        if text.len() <= max_bytes {
            return Ok(text);
        }
        let excess = text.len() - max_bytes;
        let mut strings = Vec::new();
        collect_shrinkable(body, None, &mut strings);
        strings.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let lens: Vec<usize> = strings.iter().map(|s| s.len()).collect();
        let level = water_level(&lens, excess).ok_or(text.len())?;
        let mut progressed = false;
        for s in strings.into_iter().filter(|s| s.len() > level) {
            if let std::borrow::Cow::Owned(cut) = truncate_bytes(s, level) {
                *s = cut;
                progressed = true;
            }
        }
        if !progressed {
            return Err(text.len());
        }
    }
    let text = serde_json::to_string(body).map_err(|_| usize::MAX)?;
    if text.len() <= max_bytes {
        Ok(text)
    } else {
        Err(text.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelopes_are_checked_per_kind() {
        let teams = json!({"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": {"type": "AdaptiveCard"}}]});
        assert!(check_envelope(TargetKind::Teams, &teams).is_ok());
        assert!(check_envelope(
            TargetKind::Teams,
            &json!({"type": "message", "attachments": []})
        )
        .is_err());
        assert!(check_envelope(TargetKind::Teams, &json!({"text": "x"})).is_err());
        assert!(check_envelope(TargetKind::Slack, &json!({"text": "x"})).is_ok());
        assert!(check_envelope(TargetKind::Slack, &json!({"text": ""})).is_err());
        assert!(check_envelope(TargetKind::Mattermost, &json!({"attachments": [{}]})).is_ok());
        assert!(check_envelope(TargetKind::Mattermost, &json!([1])).is_err());
        assert!(check_envelope(TargetKind::Chime, &json!({"Content": "x"})).is_ok());
        assert!(check_envelope(TargetKind::Chime, &json!({"Content": "x", "y": 1})).is_err());
        assert!(check_envelope(TargetKind::Webhook, &json!([1, 2])).is_ok());
    }

    #[test]
    fn slack_field_limits_are_applied() {
        let long = "x".repeat(5000);
        let fields: Vec<Value> = (0..12)
            .map(|_| json!({"type": "mrkdwn", "text": long}))
            .collect();
        let mut blocks = vec![
            json!({"type": "header", "text": {"type": "plain_text", "text": long}}),
            json!({"type": "section", "text": {"type": "mrkdwn", "text": long}, "fields": fields}),
            json!({"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": long}, "url": "https://x"}]}),
        ];
        blocks.extend((0..60).map(|_| json!({"type": "divider"})));
        let mut body = json!({"text": "y".repeat(9000), "blocks": blocks});
        enforce_field_limits(TargetKind::Slack, &mut body);
        let chars = |v: &Value| v.as_str().map(|s| s.chars().count()).unwrap_or(0);
        assert_eq!(chars(&body["text"]), SLACK_TEXT_MAX_CHARS);
        assert_eq!(
            body["blocks"].as_array().map(Vec::len),
            Some(SLACK_MAX_BLOCKS)
        );
        assert_eq!(chars(&body["blocks"][0]["text"]["text"]), 150);
        assert_eq!(chars(&body["blocks"][1]["text"]["text"]), 3000);
        assert_eq!(
            body["blocks"][1]["fields"].as_array().map(Vec::len),
            Some(10)
        );
        assert_eq!(chars(&body["blocks"][1]["fields"][0]["text"]), 2000);
        assert_eq!(chars(&body["blocks"][2]["elements"][0]["text"]["text"]), 75);
        assert!(body["blocks"][2]["elements"][0]["text"]["text"]
            .as_str()
            .is_some_and(|s| s.ends_with('…')));
    }

    #[test]
    fn mattermost_text_is_capped() {
        let mut body = json!({"text": "é".repeat(5000)});
        enforce_field_limits(TargetKind::Mattermost, &mut body);
        assert_eq!(body["text"].as_str().map(|s| s.chars().count()), Some(4000));
    }

    #[test]
    fn water_level_spreads_the_cut() {
        assert_eq!(water_level(&[100, 100], 50), Some(75));
        assert_eq!(water_level(&[1000, 10], 500), Some(500));
        assert_eq!(water_level(&[100, 60], 100), Some(30));
        assert_eq!(water_level(&[10], 50), None);
        assert_eq!(water_level(&[], 1), None);
    }

    #[test]
    fn shrink_cuts_long_text_but_keeps_links_and_short_facts() {
        let url = format!("https://app.sekoia.io/{}", "a".repeat(200));
        let mut body = json!({
            "Content": "😀".repeat(3000),
            "url": url,
            "status": "Acknowledged",
        });
        let out = shrink_to_fit(&mut body, 4096).unwrap();
        assert!(out.len() <= 4096, "{}", out.len());
        let parsed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed["url"], url.as_str());
        assert_eq!(parsed["status"], "Acknowledged");
        assert!(parsed["Content"].as_str().unwrap().ends_with('…'));
    }

    #[test]
    fn shrink_spreads_over_the_longest_strings() {
        let mut body = json!({"a": "x".repeat(6000), "b": "y".repeat(6000), "c": "short"});
        let out = shrink_to_fit(&mut body, 8000).unwrap();
        assert!(out.len() <= 8000);
        let a = body["a"].as_str().unwrap().len();
        let b = body["b"].as_str().unwrap().len();
        assert!(a > 3000 && b > 3000, "{a} {b}");
    }

    #[test]
    fn shrink_reports_what_cannot_fit() {
        let mut body = json!({"url": "https://x/".repeat(1000)});
        assert!(shrink_to_fit(&mut body, 100).is_err());
    }
}
