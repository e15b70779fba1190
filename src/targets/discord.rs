//! Discord webhooks: `content` and/or up to 10 `embeds`, posted with `?wait=true`; a 429
//! carries its wait as JSON `retry_after`.

use std::borrow::Cow;
use std::time::Duration;

use serde_json::Value;

use super::{
    cap_str, non_empty_list, non_empty_str, object, with_query_param, TargetKind, TargetKindSpec,
};
use crate::render::limits::water_level;
use crate::render::text::{neutralize_mentions, truncate_chars};
use crate::render::UrgencyBand;

/// No byte limit is documented; the character limits below keep a message far smaller. This
/// only catches a runaway user template.
pub const DISCORD_MAX_BYTES: usize = 64 * 1024;
pub const DISCORD_CONTENT_MAX_CHARS: usize = 2_000;
pub const DISCORD_MAX_EMBEDS: usize = 10;
pub const DISCORD_TITLE_MAX_CHARS: usize = 256;
pub const DISCORD_DESCRIPTION_MAX_CHARS: usize = 4_096;
pub const DISCORD_MAX_FIELDS: usize = 25;
pub const DISCORD_FIELD_NAME_MAX_CHARS: usize = 256;
pub const DISCORD_FIELD_VALUE_MAX_CHARS: usize = 1_024;
pub const DISCORD_FOOTER_MAX_CHARS: usize = 2_048;
pub const DISCORD_AUTHOR_MAX_CHARS: usize = 256;
/// Title, description, field names and values, footer and author over all embeds.
pub const DISCORD_EMBEDS_MAX_TOTAL_CHARS: usize = 6_000;

pub struct Discord;

impl TargetKindSpec for Discord {
    fn kind(&self) -> TargetKind {
        TargetKind::Discord
    }

    /// Discord webhooks allow about 5 requests per 2 s and 30 per minute per channel; 429s
    /// (with their `retry_after`) are obeyed on top (docs/targets.md).
    fn default_rate_limit_per_sec(&self) -> u32 {
        1
    }

    fn builtin_template(&self) -> (&'static str, &'static str) {
        (
            "builtin/discord.json.j2",
            include_str!("../../templates/discord.json.j2"),
        )
    }

    fn builtin_digest_template(&self) -> Option<(&'static str, &'static str)> {
        Some((
            "builtin/digest/discord.json.j2",
            include_str!("../../templates/digest/discord.json.j2"),
        ))
    }

    /// What one message of this kind holds with the longest values the digest template
    /// lets through (checked by the render tests).
    fn digest_items_cap(&self) -> usize {
        10
    }

    fn max_body_bytes(&self) -> usize {
        DISCORD_MAX_BYTES
    }

    fn check_envelope(&self, body: &Value) -> Result<(), String> {
        let obj = object(body)?;
        if non_empty_str(obj.get("content"))
            || non_empty_list(obj.get("embeds"))
            || non_empty_list(obj.get("components"))
            || obj.get("poll").is_some_and(Value::is_object)
        {
            Ok(())
        } else {
            Err("Discord needs a non-empty `content` or `embeds`".into())
        }
    }

    /// Discord's documented limits, each field cut to its own, then the embeds' text cut
    /// to 6 000 characters in all ([`fit_embed_total`]): any one over is a 400.
    fn enforce_field_limits(&self, body: &mut Value) {
        cap_str(body, "content", DISCORD_CONTENT_MAX_CHARS);
        let Some(Value::Array(embeds)) = body.get_mut("embeds") else {
            return;
        };
        embeds.truncate(DISCORD_MAX_EMBEDS);
        for embed in embeds.iter_mut() {
            cap_str(embed, "title", DISCORD_TITLE_MAX_CHARS);
            cap_str(embed, "description", DISCORD_DESCRIPTION_MAX_CHARS);
            if let Some(footer) = embed.get_mut("footer") {
                cap_str(footer, "text", DISCORD_FOOTER_MAX_CHARS);
            }
            if let Some(author) = embed.get_mut("author") {
                cap_str(author, "name", DISCORD_AUTHOR_MAX_CHARS);
            }
            if let Some(Value::Array(fields)) = embed.get_mut("fields") {
                fields.truncate(DISCORD_MAX_FIELDS);
                for f in fields.iter_mut() {
                    cap_str(f, "name", DISCORD_FIELD_NAME_MAX_CHARS);
                    cap_str(f, "value", DISCORD_FIELD_VALUE_MAX_CHARS);
                }
            }
        }
        fit_embed_total(embeds, DISCORD_EMBEDS_MAX_TOTAL_CHARS);
    }

    /// Discord Markdown: a backslash before `\ * _ ~ ` | [ ] # > <`, so alert data cannot
    /// show a masked link, a spoiler, a heading, a quote or a `<@id>` / `<#channel>` /
    /// `<t:…>` tag; `@everyone`, `@here` and `<@…>` are also neutralised (the built-in
    /// template sends `allowed_mentions: {"parse": []}` as well).
    fn md_escape<'a>(&self, s: &'a str) -> Cow<'a, str> {
        const PUNCT: [char; 10] = ['\\', '*', '_', '~', '`', '|', '[', ']', '#', '>'];
        if !s.contains(PUNCT) && !s.contains(['<', '@']) {
            return Cow::Borrowed(s);
        }
        let mut out = String::with_capacity(s.len() + 16);
        for c in s.chars() {
            if PUNCT.contains(&c) || c == '<' {
                out.push('\\');
            }
            out.push(c);
        }
        Cow::Owned(neutralize_mentions(&out).into_owned())
    }

    /// Embed `color` is an integer (0xRRGGBB), not a string.
    fn urgency_color_value(&self, band: Option<UrgencyBand>) -> Value {
        let hex = super::hex_urgency_color(band);
        Value::from(u32::from_str_radix(hex.trim_start_matches('#'), 16).unwrap_or(0))
    }

    /// `?wait=true`: Discord then answers only once the message is saved, and reports an
    /// error instead of a 204 for a message it dropped.
    fn request_url<'a>(&self, url: &'a str) -> Cow<'a, str> {
        with_query_param(url, "wait", "true")
    }

    fn retry_after_from_body(&self, status: u16, body: &str) -> Option<Duration> {
        if status == 429 {
            discord_retry_after(body)
        } else {
            None
        }
    }

    /// Discord webhook URLs are `…/api/webhooks/<id>/<token>`; a channel link is not one.
    fn url_warnings(&self, name: &str, url: &str, safe_host: &str) -> Vec<String> {
        let looks_right = url::Url::parse(url)
            .map(|u| u.path().contains("/api/webhooks/"))
            .unwrap_or(false);
        if looks_right {
            return Vec::new();
        }
        vec![format!(
            "targets.{name}: the Discord URL ({safe_host}) has no /api/webhooks/ path; copy the whole webhook URL (Integrations → Webhooks → Copy Webhook URL)"
        )]
    }

    fn body_problems(&self, body: &Value) -> Vec<String> {
        discord_problems(body)
    }
}

/// The wait a Discord 429 asks for, from its JSON body.
///
/// Rule: `retry_after`, a number of seconds (a float such as `64.57`), rounded up to the
/// millisecond; negative, non-finite or missing → none (the `Retry-After` header or the
/// schedule applies). Reason: Discord documents this field as the time to wait ("rely on the
/// `Retry-After` header or `retry_after` field"), and it is more precise than the header's
/// whole seconds; retrying sooner just earns another 429 and counts towards Discord's
/// invalid-request ban.
pub fn discord_retry_after(body: &str) -> Option<Duration> {
    let v: Value = serde_json::from_str(body).ok()?;
    let secs = v.get("retry_after")?.as_f64()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    // Rounded up: never retry before Discord said.
    Duration::try_from_secs_f64((secs * 1000.0).ceil() / 1000.0).ok()
}

/// Every embed text Discord counts towards its 6 000-character total.
fn counted_texts(embeds: &mut [Value]) -> Vec<&mut String> {
    let mut out = Vec::new();
    for embed in embeds.iter_mut() {
        let Value::Object(map) = embed else { continue };
        for (key, v) in map.iter_mut() {
            match (key.as_str(), v) {
                ("title" | "description", Value::String(s)) => out.push(s),
                ("footer", Value::Object(f)) => {
                    if let Some(Value::String(s)) = f.get_mut("text") {
                        out.push(s);
                    }
                }
                ("author", Value::Object(a)) => {
                    if let Some(Value::String(s)) = a.get_mut("name") {
                        out.push(s);
                    }
                }
                ("fields", Value::Array(fields)) => {
                    for f in fields.iter_mut() {
                        if let Value::Object(f) = f {
                            for (k, v) in f.iter_mut() {
                                if let ("name" | "value", Value::String(s)) = (k.as_str(), v) {
                                    out.push(s);
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Cut the embeds' counted text to `max` characters in all.
///
/// Rule: when the total (title, description, field names and values, footer, author over
/// every embed) is over `max`, the longest texts are cut to a common length, just enough to
/// fit (the water level of [`crate::render::limits::water_level`], in characters), with `…`,
/// so the bulk (a long description) goes first and short facts (urgency, status) survive.
/// Reason: Discord rejects the whole message with a 400 above 6 000, which would be a lost
/// alert.
pub fn fit_embed_total(embeds: &mut [Value], max: usize) {
    let mut texts = counted_texts(embeds);
    let count = |s: &str| s.chars().count();
    let total: usize = texts.iter().map(|s| count(s)).sum();
    if total <= max {
        return;
    }
    texts.sort_by_key(|s| std::cmp::Reverse(count(s)));
    let lens: Vec<usize> = texts.iter().map(|s| count(s)).collect();
    let Some(level) = water_level(&lens, total - max) else {
        return;
    };
    for s in texts.into_iter().filter(|s| count(s) > level) {
        if let Cow::Owned(cut) = truncate_chars(s, level) {
            *s = cut;
        }
    }
}

/// What Discord would still reject after the cuts: an empty field name or value (a 400).
fn discord_problems(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(embeds) = body.get("embeds").and_then(Value::as_array) else {
        return out;
    };
    for (i, e) in embeds.iter().enumerate() {
        let Some(fields) = e.get("fields").and_then(Value::as_array) else {
            continue;
        };
        for (j, f) in fields.iter().enumerate() {
            for key in ["name", "value"] {
                let text = f.get(key).and_then(Value::as_str);
                if text.is_none_or(|s| s.trim().is_empty()) {
                    out.push(format!(
                        "embeds[{i}].fields[{j}].{key} must be a non-empty string"
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn retry_after_comes_from_the_json_body() {
        let body =
            r#"{"message": "You are being rate limited.", "retry_after": 64.57, "global": false}"#;
        assert_eq!(
            discord_retry_after(body),
            Some(Duration::from_millis(64_570))
        );
        assert_eq!(
            discord_retry_after(r#"{"retry_after": 0.0004}"#),
            Some(Duration::from_millis(1))
        );
        assert_eq!(
            discord_retry_after(r#"{"retry_after": 2}"#),
            Some(Duration::from_secs(2))
        );
        assert_eq!(discord_retry_after(r#"{"retry_after": -1}"#), None);
        assert_eq!(discord_retry_after(r#"{"retry_after": "5"}"#), None);
        assert_eq!(discord_retry_after("not json"), None);
        assert_eq!(
            Discord.retry_after_from_body(500, r#"{"retry_after": 3}"#),
            None
        );
        assert_eq!(
            Discord.retry_after_from_body(429, r#"{"retry_after": 3}"#),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn field_limits_are_discords() {
        let long = "é".repeat(5000);
        let fields: Vec<Value> = (0..30)
            .map(|_| json!({"name": long, "value": long}))
            .collect();
        let embeds: Vec<Value> = (0..12)
            .map(|_| json!({"title": long, "description": long, "fields": fields, "footer": {"text": long}}))
            .collect();
        let mut body = json!({"content": long, "embeds": embeds});
        Discord.enforce_field_limits(&mut body);
        let chars = |v: &Value| v.as_str().map(|s| s.chars().count()).unwrap_or(0);
        assert_eq!(chars(&body["content"]), DISCORD_CONTENT_MAX_CHARS);
        let embeds = body["embeds"].as_array().unwrap();
        assert_eq!(embeds.len(), DISCORD_MAX_EMBEDS);
        assert_eq!(
            embeds[0]["fields"].as_array().unwrap().len(),
            DISCORD_MAX_FIELDS
        );
        assert!(chars(&embeds[0]["title"]) <= DISCORD_TITLE_MAX_CHARS);
        assert!(chars(&embeds[0]["description"]) <= DISCORD_DESCRIPTION_MAX_CHARS);
        assert!(chars(&embeds[0]["fields"][0]["value"]) <= DISCORD_FIELD_VALUE_MAX_CHARS);
        let mut all = embeds.clone();
        let total: usize = counted_texts(&mut all)
            .iter()
            .map(|s| s.chars().count())
            .sum();
        assert!(total <= DISCORD_EMBEDS_MAX_TOTAL_CHARS, "{total}");
    }

    #[test]
    fn the_total_is_cut_from_the_longest_text_first() {
        let mut embeds = vec![json!({
            "title": "Alert",
            "description": "d".repeat(4000),
            "fields": [{"name": "Urgency", "value": "Major (70)"}, {"name": "Rule", "value": "r".repeat(1000)}],
            "footer": {"text": "f".repeat(2000)}
        })];
        fit_embed_total(&mut embeds, 6000);
        let e = &embeds[0];
        assert_eq!(e["title"], "Alert");
        assert_eq!(e["fields"][0]["value"], "Major (70)");
        let mut all = embeds.clone();
        let total: usize = counted_texts(&mut all)
            .iter()
            .map(|s| s.chars().count())
            .sum();
        assert!(total <= 6000, "{total}");
        assert!(e["description"].as_str().unwrap().ends_with('…'));
        // The description took the cut; the shorter rule value kept its text.
        assert_eq!(
            e["fields"][1]["value"].as_str().unwrap().chars().count(),
            1000
        );
    }

    #[test]
    fn markdown_and_mentions_are_escaped() {
        let s = Discord
            .md_escape("[Open](https://evil) **b** ||spoiler|| # h > q <@123> @everyone @here a_b");
        assert!(s.contains(r"\[Open\](https://evil)"), "{s}");
        assert!(
            s.contains(r"\*\*b\*\*") && s.contains(r"\|\|spoiler\|\|"),
            "{s}"
        );
        assert!(s.contains(r"\# h \> q"), "{s}");
        assert!(
            !s.contains("<@") && !s.contains("@everyone") && !s.contains("@here"),
            "{s}"
        );
        assert_eq!(Discord.md_escape("plain text"), "plain text");
    }

    #[test]
    fn colours_are_integers_and_wait_is_added() {
        assert_eq!(
            Discord.urgency_color_value(Some(UrgencyBand::Major)),
            json!(13_710_392)
        );
        assert_eq!(Discord.urgency_color_value(None), json!(0x8A8886));
        assert_eq!(
            Discord.request_url("https://discord.com/api/webhooks/1/t"),
            "https://discord.com/api/webhooks/1/t?wait=true"
        );
        assert_eq!(
            Discord.request_url("https://discord.com/api/webhooks/1/t?thread_id=9&wait=false"),
            "https://discord.com/api/webhooks/1/t?thread_id=9&wait=true"
        );
    }

    #[test]
    fn empty_field_values_are_problems() {
        let body = json!({"embeds": [{"fields": [{"name": "a", "value": " "}]}]});
        assert_eq!(
            discord_problems(&body),
            vec!["embeds[0].fields[0].value must be a non-empty string"]
        );
    }
}
