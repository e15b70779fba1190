//! The SEKOIA.IO "version 2" webhook event.
//!
//! SEKOIA says more event types will come, so only what the relay needs is checked: `type`,
//! `action` and `metadata` must be present, `metadata.version` must be 2, an `alert` must
//! name its `attributes.uuid`, and an `attributes.short_id` must look like one
//! ([`is_short_id`]). Everything else, including unknown fields, is kept verbatim.

use serde_json::Value;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    /// 400: the body is not UTF-8 JSON.
    #[error("body is not valid UTF-8 JSON: {0}")]
    NotJson(String),
    /// 422: JSON, but not a version-2 event.
    #[error("{0}")]
    NotV2(String),
}

/// A validated event: the raw JSON (as received) plus the fields the relay uses.
#[derive(Debug, Clone)]
pub struct WebhookEvent {
    pub json: Value,
    pub kind: String,
    pub action: String,
    pub uuid: Option<String>,
    pub short_id: Option<String>,
    /// `metadata.created_at`, or its synonym `metadata.created`, as text.
    pub created_at: Option<String>,
}

/// Longest short id accepted. SEKOIA.IO's are about a dozen characters (`ALEY4fqz8moo`).
pub const SHORT_ID_MAX: usize = 32;

/// Whether `s` is a SEKOIA.IO short id: 1 to [`SHORT_ID_MAX`] ASCII letters and digits.
///
/// Rule: every short id SEKOIA.IO documents or serves (`ALEY4fqz8moo`, `ALfghiw34ax`,
/// `rANd0MiD`) is short ASCII alphanumerics. Reason: the short id is printed in every message
/// and builds the link to the alert, so a value carrying Markdown, mentions or a URL is not
/// a real event; refusing it at the door (422) keeps it out of the store and of every chat.
pub fn is_short_id(s: &str) -> bool {
    (1..=SHORT_ID_MAX).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The ingest rule for `attributes.short_id`: absent, `null` and `""` pass (they say
/// nothing), a string must satisfy [`is_short_id`], anything else is refused (422).
pub fn check_short_id(event: &Value) -> Result<(), EventError> {
    match event.get("attributes").and_then(|a| a.get("short_id")) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if s.is_empty() || is_short_id(s) => Ok(()),
        Some(_) => Err(EventError::NotV2(format!(
            "`attributes.short_id` is not a SEKOIA.IO short id: expected 1 to {SHORT_ID_MAX} \
             ASCII letters and digits (like ALEY4fqz8moo)"
        ))),
    }
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl WebhookEvent {
    /// Parse and validate a request body, as the ingest door does. 400 for bytes that are not
    /// UTF-8 JSON, 422 for JSON that is not a version-2 event, including an
    /// `attributes.short_id` that is not a SEKOIA.IO short id ([`check_short_id`]).
    pub fn parse(body: &[u8]) -> Result<Self, EventError> {
        let text = std::str::from_utf8(body)
            .map_err(|e| EventError::NotJson(format!("not UTF-8 ({e})")))?;
        let json: Value =
            serde_json::from_str(text).map_err(|e| EventError::NotJson(e.to_string()))?;
        let event = Self::from_json(json)?;
        check_short_id(&event.json)?;
        Ok(event)
    }

    /// An event as the store kept it: JSON text, shape checked by [`WebhookEvent::from_json`]
    /// (not the short-id rule: it may predate it).
    pub fn from_stored(text: &str) -> Result<Self, EventError> {
        let json: Value =
            serde_json::from_str(text).map_err(|e| EventError::NotJson(e.to_string()))?;
        Self::from_json(json)
    }

    /// Validate the shape of an event already in hand: one from the store (which may predate
    /// the short-id rule, and must still be delivered) or given to `render --event`. The
    /// short-id rule is [`WebhookEvent::parse`]'s alone; templates escape every field anyway.
    pub fn from_json(json: Value) -> Result<Self, EventError> {
        let obj = json
            .as_object()
            .ok_or_else(|| EventError::NotV2("the event must be a JSON object".into()))?;
        let text_field = |name: &str| -> Result<String, EventError> {
            match obj.get(name) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                Some(_) => Err(EventError::NotV2(format!(
                    "`{name}` must be a non-empty string"
                ))),
                None => Err(EventError::NotV2(format!("missing `{name}`"))),
            }
        };
        let kind = text_field("type")?;
        let action = text_field("action")?;
        let metadata = match obj.get("metadata") {
            Some(Value::Object(m)) => m,
            Some(_) => return Err(EventError::NotV2("`metadata` must be an object".into())),
            None => return Err(EventError::NotV2("missing `metadata`".into())),
        };
        match metadata.get("version") {
            Some(v) if v.as_i64() == Some(2) || v.as_str() == Some("2") => {}
            Some(v) => {
                return Err(EventError::NotV2(format!(
                    "`metadata.version` is {v}; only version 2 events are supported"
                )))
            }
            None => return Err(EventError::NotV2("missing `metadata.version`".into())),
        }
        let attributes = obj.get("attributes").and_then(Value::as_object);
        let attr = |name: &str| {
            attributes
                .and_then(|a| a.get(name))
                .and_then(as_text)
                .filter(|s| !s.is_empty())
        };
        let uuid = attr("uuid");
        let short_id = attr("short_id");
        if kind == "alert" && uuid.is_none() {
            return Err(EventError::NotV2(
                "an `alert` event must carry `attributes.uuid`".into(),
            ));
        }
        let created_at = metadata
            .get("created_at")
            .or_else(|| metadata.get("created"))
            .and_then(as_text);
        Ok(Self {
            kind,
            action,
            uuid,
            short_id,
            created_at,
            json,
        })
    }

    pub fn is_alert(&self) -> bool {
        self.kind == "alert"
    }

    /// Whether the event names an alert the Alert API can give: an alert event that is not a
    /// deletion (a deleted alert is gone from SEKOIA.IO, so asking for it only fails).
    pub fn has_alert_to_fetch(&self) -> bool {
        self.is_alert() && self.action != "deleted"
    }
}

/// The deduplication key of an event posted to `hook`.
///
/// Rule: the same hook, type, action, `attributes.uuid` and `metadata.created_at`
/// identify one notification, because SEKOIA.IO re-posts the same event when it retries. An
/// event lacking the uuid or the timestamp falls back to the exact body bytes, so two different
/// events of an unknown shape are never merged. The key is the SHA-256 of those, in hex,
/// after the [`time_prefix`] of `created_at` when it has one.
pub fn dedup_key(hook: &str, event: &WebhookEvent, body: &[u8]) -> String {
    let mut h = Sha256::new();
    match (&event.uuid, &event.created_at) {
        (Some(uuid), Some(created)) => {
            for part in [
                "fields",
                hook,
                &event.kind,
                &event.action,
                uuid.as_str(),
                created.as_str(),
            ] {
                h.update(part.len().to_le_bytes());
                h.update(part.as_bytes());
            }
        }
        _ => {
            h.update(b"body");
            h.update(hook.len().to_le_bytes());
            h.update(hook.as_bytes());
            h.update(body);
        }
    }
    let digest = h.finalize();
    let mut out = String::with_capacity(85);
    if event.uuid.is_some() {
        if let Some(prefix) = event.created_at.as_deref().and_then(time_prefix) {
            out.push_str(&prefix);
            out.push('-');
        }
    }
    // Hex by hand: this runs once per request, and `format!` per byte is 32 allocations.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in digest {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

/// The digits of an RFC 3339 timestamp down to the microsecond (`2022-01-14T15:06:57.398005…`
/// gives `20220114150657398005`, a missing fraction is zeros); `None` for any other text.
///
/// Rule: it goes first in the dedup key, so that keys sort in the order SEKOIA.IO created the
/// events. Reason: both stores find duplicates through an index on the key; with bare hashes
/// every new event lands on a random index page, and each commit rewrote one such page per
/// event (two thirds of SQLite's WAL writes under load, docs/benchmarks.md). In time order,
/// a burst's keys share the index's last pages. The offset is ignored (SEKOIA.IO sends UTC):
/// the prefix only places the key, the hash after it still covers the whole `created_at`, so
/// any prefix keeps equal events equal and different events different.
pub fn time_prefix(created_at: &str) -> Option<String> {
    let b = created_at.as_bytes();
    // YYYY-MM-DDTHH:MM:SS, position by position.
    const SHAPE: &[u8; 19] = b"dddd-dd-ddTdd:dd:dd";
    if b.len() < SHAPE.len() {
        return None;
    }
    let mut out = String::with_capacity(20);
    for (&c, &want) in b.iter().zip(SHAPE) {
        match want {
            b'd' if c.is_ascii_digit() => out.push(c as char),
            b'd' => return None,
            b'T' if c == b'T' || c == b't' || c == b' ' => {}
            sep if c == sep => {}
            _ => return None,
        }
    }
    let mut fraction = 0;
    if b.get(19) == Some(&b'.') {
        for &c in b[20..].iter().take_while(|c| c.is_ascii_digit()).take(6) {
            out.push(c as char);
            fraction += 1;
        }
    }
    out.extend(std::iter::repeat_n('0', 6 - fraction));
    Some(out)
}

/// The fields an `updated` event says changed, as (name, value) text pairs in event order.
///
/// Rule: from `attributes.updated`; a field with a `_name` twin (`status` and `status_name`)
/// is given by the name, `_name` dropped and `_` read as a space; strings, numbers and
/// booleans as they are, null as "none", objects by their `name` or `display`; arrays and
/// other objects are left out. Reason: people read names, not uuids; the thread replies and
/// the collapsed-changes lines say the same thing the same way.
pub fn updated_fields(event: &Value) -> Vec<(String, String)> {
    let Some(updated) = event
        .pointer("/attributes/updated")
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, value) in updated {
        if updated.contains_key(&format!("{key}_name")) {
            continue;
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => "none".into(),
            Value::Object(o) => match o.get("name").or_else(|| o.get("display")) {
                Some(Value::String(s)) => s.clone(),
                _ => continue,
            },
            Value::Array(_) => continue,
        };
        let name = key.strip_suffix("_name").unwrap_or(key).replace('_', " ");
        out.push((name, text));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CREATED: &str = r#"{"type":"alert","action":"created","attributes":{"uuid":"u1","short_id":"AL1"},"metadata":{"version":2,"created_at":"2022-01-14T15:06:57Z"}}"#;

    #[test]
    fn parses_a_v2_alert() {
        let e = WebhookEvent::parse(CREATED.as_bytes()).unwrap();
        assert_eq!(e.kind, "alert");
        assert_eq!(e.uuid.as_deref(), Some("u1"));
        assert_eq!(e.short_id.as_deref(), Some("AL1"));
        assert_eq!(e.created_at.as_deref(), Some("2022-01-14T15:06:57Z"));
    }

    #[test]
    fn only_alerts_not_deleted_have_an_alert_to_fetch() {
        let with = |kind: &str, action: &str| {
            let body = CREATED
                .replace(r#""type":"alert""#, &format!(r#""type":"{kind}""#))
                .replace(r#""action":"created""#, &format!(r#""action":"{action}""#));
            WebhookEvent::parse(body.as_bytes()).unwrap()
        };
        assert!(with("alert", "created").has_alert_to_fetch());
        assert!(with("alert", "updated").has_alert_to_fetch());
        assert!(!with("alert", "deleted").has_alert_to_fetch());
        assert!(!with("content-proposal", "created").has_alert_to_fetch());
    }

    #[test]
    fn rejects_non_json_as_400_and_non_v2_as_422() {
        assert!(matches!(
            WebhookEvent::parse(b"not json"),
            Err(EventError::NotJson(_))
        ));
        assert!(matches!(
            WebhookEvent::parse(&[0xff, 0xfe]),
            Err(EventError::NotJson(_))
        ));
        for body in [
            r#"[]"#,
            r#"{"action":"created","metadata":{"version":2}}"#,
            r#"{"type":"alert","metadata":{"version":2},"attributes":{"uuid":"u"}}"#,
            r#"{"type":"alert","action":"created","attributes":{"uuid":"u"}}"#,
            r#"{"type":"alert","action":"created","attributes":{"uuid":"u"},"metadata":{"version":1}}"#,
            r#"{"type":"alert","action":"created","metadata":{"version":2}}"#,
        ] {
            assert!(
                matches!(
                    WebhookEvent::parse(body.as_bytes()),
                    Err(EventError::NotV2(_))
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn short_ids_are_short_ascii_alphanumerics() {
        for ok in [
            "ALEY4fqz8moo",
            "ALfghiw34ax",
            "rANd0MiD",
            "A",
            &"x".repeat(32),
        ] {
            assert!(is_short_id(ok), "{ok}");
        }
        for bad in [
            "",
            &"x".repeat(33),
            "[Open alert in SEKOIA.IO](https://evil.example/login)",
            "AL 1",
            "AL-1",
            "AL_1",
            "<!channel>",
            "@all",
            "AL1\n",
            "ALé1",
            "ＡＬ１",
        ] {
            assert!(!is_short_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_short_id_that_is_not_one_is_422() {
        let with = |v: Value| {
            let mut e: Value = serde_json::from_str(CREATED).unwrap();
            e["attributes"]["short_id"] = v;
            WebhookEvent::parse(e.to_string().as_bytes())
        };
        for bad in [
            json!("[x](https://evil.example)"),
            json!("AL1 <!channel>"),
            json!(42),
            json!({"a": 1}),
            json!(["AL1"]),
        ] {
            let err = with(bad.clone()).unwrap_err();
            assert!(
                matches!(&err, EventError::NotV2(m) if m.contains("attributes.short_id")),
                "{bad}: {err:?}"
            );
        }
        assert_eq!(with(json!(null)).unwrap().short_id, None);
        assert_eq!(with(json!("")).unwrap().short_id, None);
        assert_eq!(
            with(json!("ALEY4fqz8moo")).unwrap().short_id.as_deref(),
            Some("ALEY4fqz8moo")
        );
        // Other event types carry short ids too (cases): the same rule applies.
        let case = r#"{"type":"case","action":"created","attributes":{"uuid":"c","short_id":"CA#1"},"metadata":{"version":2}}"#;
        assert!(WebhookEvent::parse(case.as_bytes()).is_err());
        // An event already stored (or given to `render`) is still read, to be delivered.
        let stored = WebhookEvent::from_json(serde_json::from_str(case).unwrap()).unwrap();
        assert_eq!(stored.short_id.as_deref(), Some("CA#1"));
        let kept = WebhookEvent::from_stored(case).unwrap();
        assert_eq!(kept.short_id.as_deref(), Some("CA#1"));
        assert!(matches!(
            WebhookEvent::from_stored("{not json"),
            Err(EventError::NotJson(_))
        ));
    }

    #[test]
    fn unknown_types_and_fields_are_accepted() {
        let body = r#"{"type":"rule-deprecated","action":"whatever","metadata":{"version":2,"extra":1},"new":true}"#;
        let e = WebhookEvent::parse(body.as_bytes()).unwrap();
        assert_eq!(e.kind, "rule-deprecated");
        assert!(e.uuid.is_none());
    }

    #[test]
    fn created_is_a_synonym_of_created_at() {
        let body = CREATED.replace("created_at", "created");
        let e = WebhookEvent::parse(body.as_bytes()).unwrap();
        assert_eq!(e.created_at.as_deref(), Some("2022-01-14T15:06:57Z"));
    }

    #[test]
    fn dedup_key_uses_identity_fields_not_formatting() {
        let a = WebhookEvent::parse(CREATED.as_bytes()).unwrap();
        let spaced = CREATED.replace(',', ", ");
        let b = WebhookEvent::parse(spaced.as_bytes()).unwrap();
        assert_eq!(
            dedup_key("soc", &a, CREATED.as_bytes()),
            dedup_key("soc", &b, spaced.as_bytes())
        );
        assert_ne!(
            dedup_key("soc", &a, CREATED.as_bytes()),
            dedup_key("other", &a, CREATED.as_bytes())
        );
        let updated = CREATED.replace("created\"", "updated\"");
        let c = WebhookEvent::parse(updated.as_bytes()).unwrap();
        assert_ne!(
            dedup_key("soc", &a, CREATED.as_bytes()),
            dedup_key("soc", &c, updated.as_bytes())
        );
    }

    #[test]
    fn time_prefix_is_the_digits_down_to_the_microsecond() {
        let cases = [
            (
                "2022-01-14T15:06:57.398005+00:00",
                Some("20220114150657398005"),
            ),
            ("2022-01-14T15:06:57Z", Some("20220114150657000000")),
            ("2022-01-14T15:06:57.3Z", Some("20220114150657300000")),
            (
                "2022-01-14T15:06:57.123456789Z",
                Some("20220114150657123456"),
            ),
            ("2022-01-14 15:06:57", Some("20220114150657000000")),
            ("2022-01-14", None),
            ("14/01/2022 15:06:57", None),
            ("2022-01-14T15:06:5x", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(time_prefix(text).as_deref(), want, "{text}");
        }
    }

    #[test]
    fn dedup_keys_sort_in_creation_order_and_stay_distinct() {
        let at = |t: &str| {
            let body = CREATED.replace("2022-01-14T15:06:57Z", t);
            let e = WebhookEvent::parse(body.as_bytes()).unwrap();
            dedup_key("soc", &e, body.as_bytes())
        };
        let (a, b) = (
            at("2022-01-14T15:06:57.000001Z"),
            at("2022-01-14T15:06:57.000002Z"),
        );
        assert!(a < b, "{a} < {b}");
        assert!(a.starts_with("20220114150657000001-"), "{a}");
        // Same microsecond, another offset: same prefix, different key (the hash sees it all).
        assert_ne!(
            at("2022-01-14T15:06:57.000001Z"),
            at("2022-01-14T15:06:57.000001+01:00")
        );
        // No usable timestamp: the bare hash, as before.
        assert_eq!(at("yesterday").len(), 64);
    }

    #[test]
    fn dedup_key_falls_back_to_body_bytes() {
        let body = br#"{"type":"x","action":"y","metadata":{"version":2}}"#;
        let e = WebhookEvent::parse(body).unwrap();
        let other = br#"{"type":"x","action":"y","metadata":{"version":2},"n":1}"#;
        let f = WebhookEvent::parse(other).unwrap();
        assert_eq!(dedup_key("h", &e, body), dedup_key("h", &e, body));
        assert_ne!(dedup_key("h", &e, body), dedup_key("h", &f, other));
    }
}
