//! Google Chat incoming webhooks: a Message with `cardsV2` (and/or `text`), threaded per
//! alert with `thread.threadKey` and `messageReplyOption` on the URL.

use std::borrow::Cow;

use serde_json::Value;

use super::{non_empty_list, non_empty_str, object, with_query_param, TargetKind, TargetKindSpec};
use crate::render::text::{break_markdown_links, neutralize_mentions, slack_escape};

/// "The maximum message size, including any text or cards, is 32,000 bytes" (Google Chat
/// `create-messages`; docs/targets.md).
pub const GOOGLE_CHAT_MAX_BYTES: usize = 32_000;
/// Widgets per card: "any widgets beyond this limit are ignored", so the relay drops them
/// itself, from the end, rather than let Google pick.
pub const GOOGLE_CHAT_MAX_WIDGETS: usize = 100;
/// Message `text` (apprise uses 4 000; Google's number is not published).
pub const GOOGLE_CHAT_TEXT_MAX_CHARS: usize = 4_000;

pub struct GoogleChat;

impl TargetKindSpec for GoogleChat {
    fn kind(&self) -> TargetKind {
        TargetKind::GoogleChat
    }

    /// Google Chat has a per-space write quota of about 1 message/s (docs/targets.md).
    fn default_rate_limit_per_sec(&self) -> u32 {
        1
    }

    fn builtin_template(&self) -> (&'static str, &'static str) {
        (
            "builtin/google_chat.json.j2",
            include_str!("../../templates/google_chat.json.j2"),
        )
    }

    fn builtin_digest_template(&self) -> Option<(&'static str, &'static str)> {
        Some((
            "builtin/digest/google_chat.json.j2",
            include_str!("../../templates/digest/google_chat.json.j2"),
        ))
    }

    /// What one message of this kind holds with the longest values the digest template
    /// lets through (checked by the render tests).
    fn digest_items_cap(&self) -> usize {
        10
    }

    fn max_body_bytes(&self) -> usize {
        GOOGLE_CHAT_MAX_BYTES
    }

    fn check_envelope(&self, body: &Value) -> Result<(), String> {
        let obj = object(body)?;
        if !(non_empty_str(obj.get("text")) || non_empty_list(obj.get("cardsV2"))) {
            return Err("Google Chat needs a non-empty `text` or `cardsV2`".into());
        }
        if let Some(Value::Array(cards)) = obj.get("cardsV2") {
            for (i, c) in cards.iter().enumerate() {
                if !c.get("card").is_some_and(Value::is_object) {
                    return Err(format!("cardsV2[{i}] needs a `card` object"));
                }
            }
        }
        Ok(())
    }

    /// `text` ≤ 4 000 characters and at most 100 widgets per card.
    fn enforce_field_limits(&self, body: &mut Value) {
        super::cap_str(body, "text", GOOGLE_CHAT_TEXT_MAX_CHARS);
        if let Some(Value::Array(cards)) = body.get_mut("cardsV2") {
            for card in cards.iter_mut() {
                if let Some(sections) = card.pointer_mut("/card/sections") {
                    cap_widgets(sections, GOOGLE_CHAT_MAX_WIDGETS);
                }
            }
        }
    }

    /// Card text is a small HTML subset: `&`, `<`, `>` become entities (the same three as
    /// Slack's), so `<a href=…>`, `<font>` or `<users/all>` in alert data read as text;
    /// Markdown links are broken and `@mentions` neutralised as for the other kinds, for
    /// templates that put data in the Chat-markup `text`.
    fn md_escape<'a>(&self, s: &'a str) -> Cow<'a, str> {
        Cow::Owned(neutralize_mentions(&break_markdown_links(&slack_escape(s))).into_owned())
    }

    /// The URL with `messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD`, so a message
    /// with a `threadKey` replies in that thread (and starts it the first time).
    fn request_url<'a>(&self, url: &'a str) -> Cow<'a, str> {
        with_query_param(
            url,
            "messageReplyOption",
            "REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD",
        )
    }

    /// A Google Chat webhook URL carries its credentials as `key` and `token`.
    fn url_warnings(&self, name: &str, url: &str, safe_host: &str) -> Vec<String> {
        let Ok(url) = url::Url::parse(url) else {
            return Vec::new();
        };
        let has = |k: &str| url.query_pairs().any(|(q, v)| q == k && !v.is_empty());
        if has("key") && has("token") {
            Vec::new()
        } else {
            vec![format!(
                "targets.{name}: the Google Chat URL ({safe_host}) lacks its `key` or `token` parameter; Google answers 401/403 without them: copy the whole webhook URL"
            )]
        }
    }
}

/// Keep at most `max` widgets over a card's sections, dropping from the end.
///
/// Rule: widgets are counted in order across sections; once `max` is reached the rest are
/// removed, and sections left empty are removed too (Google rejects a section without
/// widgets). Reason: Google ignores widgets past 100 anyway; cutting here keeps the order
/// and the relay's own last widgets (the link button) are before any bulk a template adds.
pub fn cap_widgets(sections: &mut Value, max: usize) {
    let Value::Array(list) = sections else {
        return;
    };
    let mut left = max;
    for section in list.iter_mut() {
        if let Some(Value::Array(widgets)) = section.get_mut("widgets") {
            widgets.truncate(left);
            left -= widgets.len();
        }
    }
    list.retain(|s| {
        s.get("widgets")
            .and_then(Value::as_array)
            .is_none_or(|w| !w.is_empty())
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelope_needs_text_or_cards() {
        let g = GoogleChat;
        assert!(g.check_envelope(&json!({"text": "x"})).is_ok());
        assert!(g
            .check_envelope(&json!({"cardsV2": [{"cardId": "a", "card": {}}]}))
            .is_ok());
        assert!(g.check_envelope(&json!({"cardsV2": []})).is_err());
        assert!(g
            .check_envelope(&json!({"cardsV2": [{"cardId": "a"}]}))
            .is_err());
        assert!(g.check_envelope(&json!([1])).is_err());
    }

    #[test]
    fn widgets_are_capped_across_sections() {
        let w = |n: usize| -> Vec<Value> {
            (0..n)
                .map(|i| json!({"textParagraph": {"text": i}}))
                .collect()
        };
        let mut sections = json!([{"widgets": w(60)}, {"widgets": w(60)}, {"widgets": w(5)}]);
        cap_widgets(&mut sections, 100);
        let counts: Vec<usize> = sections
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["widgets"].as_array().unwrap().len())
            .collect();
        assert_eq!(counts, vec![60, 40]);
    }

    #[test]
    fn card_text_is_html_escaped() {
        let s = GoogleChat
            .md_escape("<a href=\"https://evil\">x</a> & <users/all> [t](https://e) @all");
        assert!(!s.contains('<') && !s.contains("]("), "{s}");
        assert!(
            s.contains("&lt;users/all&gt;") && s.contains("&amp;"),
            "{s}"
        );
        assert!(!s.contains("@all"), "{s}");
    }

    #[test]
    fn the_url_gets_the_reply_option() {
        let u = GoogleChat
            .request_url("https://chat.googleapis.com/v1/spaces/S/messages?key=k&token=t");
        assert_eq!(
            u,
            "https://chat.googleapis.com/v1/spaces/S/messages?key=k&token=t&messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD"
        );
    }
}
