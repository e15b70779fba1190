//! Slack incoming webhooks: `text`, Block Kit `blocks` and/or legacy `attachments`.

use std::borrow::Cow;

use serde_json::Value;

use super::{cap_str, non_empty_list, non_empty_str, object, TargetKind, TargetKindSpec};
use crate::render::text::{break_markdown_links, neutralize_mentions, slack_escape};

/// Slack: no documented byte limit, but `msg_blocks_too_long` was hit at ~13 000 characters
/// of block text; a 12 000-byte body keeps all text under that, whatever the script.
pub const SLACK_MAX_BYTES: usize = 12_000;
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

pub struct Slack;

impl TargetKindSpec for Slack {
    fn kind(&self) -> TargetKind {
        TargetKind::Slack
    }

    /// Slack documents 1 message/s per webhook, short bursts tolerated (docs/targets.md).
    fn default_rate_limit_per_sec(&self) -> u32 {
        1
    }

    fn builtin_template(&self) -> (&'static str, &'static str) {
        (
            "builtin/slack.json.j2",
            include_str!("../../templates/slack.json.j2"),
        )
    }

    fn builtin_digest_template(&self) -> Option<(&'static str, &'static str)> {
        Some((
            "builtin/digest/slack.json.j2",
            include_str!("../../templates/digest/slack.json.j2"),
        ))
    }

    fn max_body_bytes(&self) -> usize {
        SLACK_MAX_BYTES
    }

    fn check_envelope(&self, body: &Value) -> Result<(), String> {
        let obj = object(body)?;
        if non_empty_str(obj.get("text"))
            || non_empty_list(obj.get("blocks"))
            || non_empty_list(obj.get("attachments"))
        {
            Ok(())
        } else {
            Err("Slack needs a non-empty `text`, `blocks` or `attachments`".into())
        }
    }

    /// Top-level `text` ≤ 4 000, ≤ 50 blocks (also inside legacy attachments), header ≤ 150,
    /// section text ≤ 3 000, ≤ 10 fields of ≤ 2 000, ≤ 25 action elements with button text
    /// ≤ 75, ≤ 10 context elements, markdown block ≤ 12 000: a 400 from Slack for a
    /// 151-character header would be a lost alert.
    fn enforce_field_limits(&self, body: &mut Value) {
        cap_str(body, "text", SLACK_TEXT_MAX_CHARS);
        slack_blocks(body);
        if let Some(Value::Array(atts)) = body.get_mut("attachments") {
            atts.iter_mut().for_each(slack_blocks);
        }
    }

    /// mrkdwn control characters `&`, `<`, `>` become `&amp;`, `&lt;`, `&gt;` (Slack's
    /// documented escaping), so `<!channel>` and `<url|label>` in alert data are plain text.
    /// Markdown links are broken and mentions neutralised too: mrkdwn ignores both, but
    /// Slack's `markdown` block and `link_names` do not, and a user template may use either.
    fn md_escape<'a>(&self, s: &'a str) -> Cow<'a, str> {
        Cow::Owned(neutralize_mentions(&break_markdown_links(&slack_escape(s))).into_owned())
    }

    fn body_problems(&self, body: &Value) -> Vec<String> {
        slack_problems(body)
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

/// Block types Slack's incoming webhooks accept.
const SLACK_BLOCK_TYPES: [&str; 11] = [
    "section",
    "header",
    "divider",
    "actions",
    "context",
    "image",
    "markdown",
    "rich_text",
    "input",
    "file",
    "video",
];

/// Slack: the Block Kit mistakes that make Slack answer 400 `invalid_blocks` (a dead letter),
/// which the relay cannot repair by cutting: unknown block types, empty or mistyped text
/// objects, a header that is not plain text, a section without text or fields, empty element
/// lists, a button without a label or target, repeated `block_id`s.
pub fn slack_problems(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut holders = vec![("".to_string(), body)];
    for (i, a) in body["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        holders.push((format!("attachments[{i}]."), a));
    }
    let mut ids = std::collections::HashSet::new();
    for (prefix, holder) in holders {
        let Some(blocks) = holder.get("blocks") else {
            continue;
        };
        let Some(blocks) = blocks.as_array() else {
            out.push(format!("{prefix}blocks must be a list"));
            continue;
        };
        for (i, b) in blocks.iter().enumerate() {
            let at = format!("{prefix}blocks[{i}]");
            let Some(kind) = b.get("type").and_then(Value::as_str) else {
                out.push(format!("{at} has no `type`"));
                continue;
            };
            if !SLACK_BLOCK_TYPES.contains(&kind) {
                out.push(format!("{at}: unknown block type {kind:?}"));
                continue;
            }
            if let Some(id) = b.get("block_id").and_then(Value::as_str) {
                if !ids.insert(id.to_string()) {
                    out.push(format!("{at}: block_id {id:?} is used twice"));
                }
            }
            match kind {
                "header" => match text_object(&b["text"]) {
                    Ok(("plain_text", _)) => {}
                    Ok((t, _)) => out.push(format!("{at}.text must be plain_text, not {t}")),
                    Err(e) => out.push(format!("{at}.text {e}")),
                },
                "section" => {
                    let has_text = !b["text"].is_null();
                    let fields = b["fields"].as_array();
                    if !has_text && fields.is_none_or(|f| f.is_empty()) {
                        out.push(format!("{at} needs `text` or `fields`"));
                    }
                    if has_text {
                        if let Err(e) = text_object(&b["text"]) {
                            out.push(format!("{at}.text {e}"));
                        }
                    }
                    for (j, f) in fields.into_iter().flatten().enumerate() {
                        if let Err(e) = text_object(f) {
                            out.push(format!("{at}.fields[{j}] {e}"));
                        }
                    }
                }
                "actions" | "context" => {
                    let els = b["elements"].as_array();
                    if els.is_none_or(|e| e.is_empty()) {
                        out.push(format!("{at} needs a non-empty `elements` list"));
                    }
                    for (j, e) in els.into_iter().flatten().enumerate() {
                        let at = format!("{at}.elements[{j}]");
                        match e.get("type").and_then(Value::as_str) {
                            Some("button") => {
                                if let Err(err) = text_object(&e["text"]) {
                                    out.push(format!("{at}.text {err}"));
                                }
                                if e.get("url").is_none() && e.get("action_id").is_none() {
                                    out.push(format!("{at} needs a `url`"));
                                }
                            }
                            Some("mrkdwn" | "plain_text") => {
                                if let Err(err) = text_object(e) {
                                    out.push(format!("{at} {err}"));
                                }
                            }
                            Some(_) => {}
                            None => out.push(format!("{at} has no `type`")),
                        }
                    }
                }
                "image" => {
                    for key in ["image_url", "alt_text"] {
                        if b.get(key).and_then(Value::as_str).is_none_or(str::is_empty) {
                            out.push(format!("{at} needs a non-empty `{key}`"));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// A Block Kit text object: `{"type": "plain_text"|"mrkdwn", "text": "…"}` with non-empty
/// text (Slack rejects empty strings).
fn text_object(v: &Value) -> Result<(&str, &str), String> {
    let kind = v.get("type").and_then(Value::as_str);
    let text = v.get("text").and_then(Value::as_str);
    match (kind, text) {
        (Some(k @ ("plain_text" | "mrkdwn")), Some(t)) if !t.is_empty() => Ok((k, t)),
        (Some("plain_text" | "mrkdwn"), Some(_)) => {
            Err("is empty (Slack rejects empty text)".into())
        }
        (Some("plain_text" | "mrkdwn"), None) => {
            Err("has no `text` string (is the value none?)".into())
        }
        (Some(k), _) => Err(format!("has type {k:?}, expected plain_text or mrkdwn")),
        (None, _) => Err("must be an object with `type` and `text`".into()),
    }
}
