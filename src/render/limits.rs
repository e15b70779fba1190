//! Payload rules applied to every rendered payload, built-in or not: the kind's envelope,
//! field limits and hard size limit (each defined in its module under [`crate::targets`]),
//! and the shrinking that makes a built-in body fit.

use serde_json::Value;

use super::text::truncate_bytes;
use crate::domain::TargetKind;

/// The hard size limit of a rendered body for a kind, in bytes: nothing larger is sent.
pub fn max_body_bytes(kind: TargetKind) -> usize {
    kind.spec().max_body_bytes()
}

/// Check that a rendered JSON body has the envelope its target accepts.
///
/// These are the mistakes that turn into a 400 from the target, i.e. a dead letter and a lost
/// alert, so they are caught before sending (and trigger the built-in fallback). Each kind's
/// rule is in its module under [`crate::targets`].
pub fn check_envelope(kind: TargetKind, body: &Value) -> Result<(), String> {
    kind.spec().check_envelope(body)
}

/// Apply the field limits of a kind in place, so a long value is cut instead of the whole
/// message being rejected. Each kind's limits are in its module under [`crate::targets`];
/// the size of the whole body is handled by [`shrink_to_fit`].
pub fn enforce_field_limits(kind: TargetKind, body: &mut Value) {
    kind.spec().enforce_field_limits(body)
}

/// Keys whose string values are never shortened by [`shrink_to_fit`]: links (a cut URL is a
/// broken button) and protocol tokens (a cut `type` is an invalid payload; a cut Google Chat
/// `threadKey` would start a new thread, a cut PagerDuty `dedup_key` a new incident).
const PROTECTED_KEYS: [&str; 23] = [
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
    "threadKey",
    "cardId",
    "dedup_key",
    "event_action",
    "severity",
    "href",
    "client_url",
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
pub(crate) fn water_level(lens: &[usize], excess: usize) -> Option<usize> {
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
    use crate::targets::slack::{SLACK_MAX_BLOCKS, SLACK_TEXT_MAX_CHARS};
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
