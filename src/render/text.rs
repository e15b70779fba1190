//! Pure text helpers: truncation, per-target escaping, mention neutralising, timestamps.
//!
//! Everything here is a small function over strings so it can be unit-tested without a
//! template engine; the MiniJinja filters in [`super::filters`] are thin wrappers.

use std::borrow::Cow;

use unicode_segmentation::UnicodeSegmentation;

use crate::domain::TargetKind;

/// The mark appended to a cut string. One character, three bytes in UTF-8.
pub const ELLIPSIS: char = '…';

/// Cut `s` to at most `max` characters, ending with `…` when anything was removed.
///
/// Chat limits (Slack header 150, Mattermost text 4000, …) are counted in characters, so the
/// budget is in characters, and the ellipsis counts towards it. The cut falls on a grapheme
/// boundary: splitting an emoji ZWJ sequence or a letter from its combining accent would show
/// a broken glyph (or a different emoji) to the person on call. Trailing whitespace before the
/// ellipsis is dropped. Unchanged strings are borrowed, not copied.
pub fn truncate_chars(s: &str, max: usize) -> Cow<'_, str> {
    cut(s, max, |g| g.chars().count(), 1)
}

/// Cut `s` to at most `max` **bytes** of UTF-8, ending with `…` when anything was removed.
///
/// Some limits are in bytes (Chime's 4 KB, Teams' ~25 KB card); the same grapheme rule as
/// [`truncate_chars`] applies, so the result is always valid UTF-8 and never splits a
/// character. The ellipsis (3 bytes) counts towards the budget; a budget under 3 gives `""`.
pub fn truncate_bytes(s: &str, max: usize) -> Cow<'_, str> {
    cut(s, max, str::len, ELLIPSIS.len_utf8())
}

fn cut(s: &str, max: usize, measure: impl Fn(&str) -> usize, ellipsis_cost: usize) -> Cow<'_, str> {
    if measure(s) <= max {
        return Cow::Borrowed(s);
    }
    if max < ellipsis_cost {
        return Cow::Owned(String::new());
    }
    let budget = max - ellipsis_cost;
    let mut used = 0;
    let mut end = 0;
    for (idx, g) in s.grapheme_indices(true) {
        let n = measure(g);
        if used + n > budget {
            break;
        }
        used += n;
        end = idx + g.len();
    }
    let mut out = String::with_capacity(end + ELLIPSIS.len_utf8());
    out.push_str(s[..end].trim_end());
    out.push(ELLIPSIS);
    Cow::Owned(out)
}

/// Escape alert-derived text for the markup of a target kind.
///
/// - `slack`: mrkdwn control characters `&`, `<`, `>` become `&amp;`, `&lt;`, `&gt;` (Slack's
///   documented escaping). This turns `<!channel>` and `<url|label>` in alert data into plain
///   text, so an attacker-controlled title cannot ping a channel or fake a link. Markdown
///   links `[text](url)` are broken as for Teams and mentions neutralised as for Mattermost:
///   mrkdwn ignores both, but Slack's `markdown` block and `link_names` do not, and a user
///   template may use either.
/// - `mattermost`, `chime`: Markdown. `&`, `<`, `>` become entities (Mattermost converts
///   Slack-style `<url|label>` links, and entities survive that), other inline Markdown
///   punctuation is backslash-escaped, and mentions are neutralised ([`neutralize_mentions`]).
/// - `teams`: Markdown links `[text](url)` are broken with a zero-width space between `]` and
///   `(`, so alert data cannot show a disguised link; nothing else (TextBlocks cannot mention
///   anyone, and whether Teams honours backslash escapes is undocumented).
/// - `webhook`, `console`: unchanged (JSON and console output have no markup).
pub fn md_escape(s: &str, kind: TargetKind) -> Cow<'_, str> {
    kind.spec().md_escape(s)
}

/// Break Markdown links `[text](url)` with a zero-width space between `]` and `(`: the text
/// still reads the same, but no renderer sees a link, so data cannot show a disguised one.
pub fn break_markdown_links(s: &str) -> Cow<'_, str> {
    if s.contains("](") {
        Cow::Owned(s.replace("](", "]\u{200B}("))
    } else {
        Cow::Borrowed(s)
    }
}

/// One line of text: line breaks and tabs (`\r`, `\n`, `\t`, U+0085, U+2028, U+2029) become
/// spaces.
///
/// For values shown on a single line (an id, an action, a summary): a newline in event data
/// must not start a line of its own that looks like one of the relay's (`Link: https://evil`
/// on the console, a list item or heading in Markdown).
pub fn one_line(s: &str) -> Cow<'_, str> {
    let breaks = |c: char| matches!(c, '\r' | '\n' | '\t' | '\u{85}' | '\u{2028}' | '\u{2029}');
    if !s.contains(breaks) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().map(|c| if breaks(c) { ' ' } else { c }).collect())
}

/// Slack mrkdwn escaping: `&` → `&amp;`, `<` → `&lt;`, `>` → `&gt;`, nothing else.
pub fn slack_escape(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// CommonMark-style escaping for Mattermost and Chime: entities for `&<>`, a backslash before
/// the punctuation that starts inline markup (`\ ` * _ ~ [ ] # |`), so alert text shows as
/// written and cannot fake a link or a heading.
pub fn markdown_escape(s: &str) -> Cow<'_, str> {
    const PUNCT: [char; 9] = ['\\', '`', '*', '_', '~', '[', ']', '#', '|'];
    if !s.contains(['&', '<', '>']) && !s.contains(PUNCT) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if PUNCT.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Break every `@mention` in alert text by putting a zero-width space after the `@`.
///
/// `@channel`, `@here`, `@all` (Mattermost) and `@All`, `@Present` (Chime) notify a whole
/// room, and `@name` pings a person: alert data must never do that. A mention is an `@` at the
/// start or after a non-alphanumeric character, followed by a letter, digit or `_`; an e-mail
/// address (`user@example.com`, `@` after a letter) is left intact so it still reads and links.
/// Slack-style `<!channel>` and `<@U123>` (which Mattermost expands too) get the zero-width
/// space after the `<`, for plain-text fields that are not entity-escaped.
pub fn neutralize_mentions(s: &str) -> Cow<'_, str> {
    if !s.contains('@') && !s.contains("<!") {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut prev: Option<char> = None;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '<' && chars.peek().is_some_and(|n| matches!(n, '!' | '@')) {
            out.push('\u{200B}');
        }
        if c == '@' {
            let starts_word = prev.is_none_or(|p| !p.is_alphanumeric());
            let next_is_name = chars
                .peek()
                .is_some_and(|n| n.is_alphanumeric() || *n == '_');
            if starts_word && next_is_name {
                out.push('\u{200B}');
            }
        }
        prev = Some(c);
    }
    Cow::Owned(out)
}

/// Make text safe to print on a terminal: control characters other than newline and tab are
/// replaced by `�` (a carriage return is dropped), so alert data cannot move the cursor,
/// clear the screen or hide lines with ANSI escape sequences.
pub fn sanitize_terminal(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .filter(|c| *c != '\r')
            .map(|c| {
                if c.is_control() && c != '\n' && c != '\t' {
                    '\u{FFFD}'
                } else {
                    c
                }
            })
            .collect(),
    )
}

/// Unix seconds → `YYYY-MM-DD HH:MM:SS UTC`.
///
/// The Alert API gives `created_at` as an integer; people on call read dates, and UTC avoids
/// guessing the reader's time zone. Days-from-civil arithmetic (Howard Hinnant's algorithm)
/// keeps this free of a date crate.
pub fn format_unix_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02} UTC")
}

/// Percent-encode one URL path segment (everything but RFC 3986 unreserved characters).
///
/// The alert short id comes from the request body; encoding it keeps a hostile id such as
/// `../x?y` from changing which page the "Open" button leads to.
pub fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_strings_are_borrowed_unchanged() {
        assert!(matches!(truncate_chars("abc", 3), Cow::Borrowed("abc")));
        assert!(matches!(truncate_bytes("é", 2), Cow::Borrowed("é")));
    }

    #[test]
    fn truncation_counts_the_ellipsis() {
        assert_eq!(truncate_chars("abcdef", 4), "abc…");
        assert_eq!(truncate_chars("abcdef", 1), "…");
        assert_eq!(truncate_chars("abcdef", 0), "");
        assert_eq!(truncate_chars("ab  cdef", 4), "ab…");
    }

    #[test]
    fn truncation_never_splits_a_character_or_grapheme() {
        // 👩‍💻 is three chars (woman, ZWJ, laptop): never keep half of it.
        let s = "ab👩‍💻cd";
        assert_eq!(truncate_chars(s, 4), "ab…");
        assert_eq!(truncate_chars(s, 6), "ab👩‍💻…");
        // e + combining acute stays together.
        assert_eq!(truncate_chars("xe\u{301}yz", 3), "x…");
        // Byte budgets: é is 2 bytes, … is 3.
        assert_eq!(truncate_bytes("éééé", 7), "éé…");
        assert_eq!(truncate_bytes("éééé", 6), "é…");
        assert_eq!(truncate_bytes("éééé", 2), "");
        for max in 0..40 {
            let out = truncate_bytes("日本語テキスト🏳️‍🌈中文", max);
            assert!(out.len() <= max, "{max}: {out}");
        }
    }

    #[test]
    fn slack_escaping_neutralises_channel_pings_and_links() {
        assert_eq!(
            md_escape("<!channel> a & <https://x|y>", TargetKind::Slack),
            "&lt;!channel&gt; a &amp; &lt;https://x|y&gt;"
        );
        assert_eq!(
            md_escape("@channel [x](https://evil) a@b.c", TargetKind::Slack),
            "@\u{200B}channel [x]\u{200B}(https://evil) a@b.c"
        );
    }

    #[test]
    fn one_line_turns_line_breaks_into_spaces() {
        assert_eq!(one_line("a\r\nb\tc\u{2028}d"), "a  b c d");
        assert!(matches!(one_line("AL1 x"), Cow::Borrowed(_)));
    }

    #[test]
    fn markdown_escaping_and_mentions_for_mattermost_and_chime() {
        let out = md_escape("@channel *x* [l](u) <b> mail a@b.c", TargetKind::Mattermost);
        assert_eq!(
            out,
            "@\u{200B}channel \\*x\\* \\[l\\](u) &lt;b&gt; mail a@b.c"
        );
        let out = md_escape("hi @All and @Present", TargetKind::Chime);
        assert_eq!(out, "hi @\u{200B}All and @\u{200B}Present");
        assert_eq!(
            neutralize_mentions("<!channel> <@U1> <b>"),
            "<\u{200B}!channel> <\u{200B}@\u{200B}U1> <b>"
        );
        assert_eq!(md_escape("*x*", TargetKind::Teams), "*x*");
        assert_eq!(
            md_escape("[a](http://e)", TargetKind::Teams),
            "[a]\u{200B}(http://e)"
        );
        assert_eq!(md_escape("<b>", TargetKind::Webhook), "<b>");
    }

    #[test]
    fn terminal_sanitising_removes_escape_sequences() {
        assert_eq!(
            sanitize_terminal("a\x1b[2Jb\r\nc\td"),
            "a\u{FFFD}[2Jb\nc\td"
        );
        assert!(matches!(sanitize_terminal("ok\n"), Cow::Borrowed(_)));
    }

    #[test]
    fn unix_time_is_formatted_in_utc() {
        assert_eq!(format_unix_utc(1_736_863_617), "2025-01-14 14:06:57 UTC");
        assert_eq!(format_unix_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_unix_utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_path_segment("ALz9_Qx-7Kp2"), "ALz9_Qx-7Kp2");
        assert_eq!(encode_path_segment("../a?b"), "..%2Fa%3Fb");
    }
}

/// What an "updated" event says changed, as one short line: `status: Ongoing, urgency: 20`.
///
/// Rule: read `event.attributes.updated`; `status_name` is shown as `status` (and the status
/// uuid beside it is dropped), `dynamic_urgency_value` as `urgency`; other scalar fields are
/// shown as `key: value` in key order, except ids (keys ending in `uuid`); nested values are
/// shown as `key changed`. Reason: an update notification is only useful to someone on call if
/// it says what moved, and SEKOIA.IO puts exactly that in `updated`, even when the Alert API
/// cannot be reached.
pub fn describe_changes(updated: &serde_json::Value) -> String {
    use serde_json::Value;
    let Some(map) = updated.as_object() else {
        return String::new();
    };
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let mut parts = Vec::new();
    if let Some(status) = map.get("status_name").and_then(scalar) {
        parts.push(format!("status: {status}"));
    }
    if let Some(urgency) = map.get("dynamic_urgency_value").and_then(scalar) {
        parts.push(format!("urgency: {urgency}"));
    }
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for key in keys {
        let shown_above = matches!(key.as_str(), "status_name" | "dynamic_urgency_value")
            || (key == "status" && map.contains_key("status_name"));
        if shown_above || key.ends_with("uuid") {
            continue;
        }
        match map.get(key).and_then(scalar) {
            Some(v) => parts.push(format!("{key}: {v}")),
            None if map.get(key).is_some_and(|v| !v.is_null()) => {
                parts.push(format!("{key} changed"))
            }
            None => {}
        }
    }
    parts.join(", ")
}

#[cfg(test)]
mod changes_tests {
    use super::describe_changes;
    use serde_json::json;

    #[test]
    fn status_and_urgency_changes_are_named() {
        let u = json!({"status": "1f2f88d5-ff5b-48bf-bbbc-00c2fff82d9f", "status_name": "Ongoing"});
        assert_eq!(describe_changes(&u), "status: Ongoing");
        assert_eq!(
            describe_changes(&json!({"dynamic_urgency_value": 20})),
            "urgency: 20"
        );
        let u = json!({"title": "New title", "assets": ["a"], "entity_uuid": "x", "z": null});
        assert_eq!(describe_changes(&u), "assets changed, title: New title");
        assert_eq!(describe_changes(&json!("nope")), "");
        assert_eq!(describe_changes(&json!({})), "");
    }
}
