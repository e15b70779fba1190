//! PagerDuty Events API v2: one event per SEKOIA.IO event, `dedup_key` = the alert uuid,
//! `event_action` from the alert's status, `routing_key` added from config when sending.

use std::borrow::Cow;

use minijinja::Environment;
use serde_json::Value;

use super::{cap_str, non_empty_str, object, TargetKind, TargetKindSpec};
use crate::render::UrgencyBand;

/// The Events API v2 endpoint (US service region; EU accounts set `url`).
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// "Events API payloads are limited to 512 KB" (PagerDuty `01-Overview.md`), less room for
/// the `routing_key` the relay adds when sending.
pub const PAGERDUTY_MAX_BYTES: usize = 512_000 - 1_000;
pub const PAGERDUTY_SUMMARY_MAX_CHARS: usize = 1_024;
pub const PAGERDUTY_DEDUP_KEY_MAX_CHARS: usize = 255;

pub struct PagerDuty;

impl TargetKindSpec for PagerDuty {
    fn kind(&self) -> TargetKind {
        TargetKind::PagerDuty
    }

    /// "approximately 120 calls/minute per integration key" (PagerDuty `05-Rate-Limits.md`).
    fn default_rate_limit_per_sec(&self) -> u32 {
        2
    }

    fn builtin_template(&self) -> (&'static str, &'static str) {
        (
            "builtin/pagerduty.json.j2",
            include_str!("../../templates/pagerduty.json.j2"),
        )
    }

    fn max_body_bytes(&self) -> usize {
        PAGERDUTY_MAX_BYTES
    }

    fn default_url(&self) -> Option<&'static str> {
        Some(PAGERDUTY_EVENTS_URL)
    }

    /// What PagerDuty answers 400 to: an unknown `event_action`, no `dedup_key` to
    /// acknowledge or resolve, a trigger without `payload.summary`, `payload.source` or a
    /// valid `payload.severity`.
    fn check_envelope(&self, body: &Value) -> Result<(), String> {
        let obj = object(body)?;
        let action = obj.get("event_action").and_then(Value::as_str);
        match action {
            Some("trigger" | "acknowledge" | "resolve") => {}
            _ => {
                return Err(
                    "`event_action` must be \"trigger\", \"acknowledge\" or \"resolve\"".into(),
                )
            }
        }
        if action != Some("trigger") && !non_empty_str(obj.get("dedup_key")) {
            return Err("acknowledge and resolve need a non-empty `dedup_key`".into());
        }
        if action == Some("trigger") {
            let payload = obj.get("payload").and_then(Value::as_object);
            let payload = payload.ok_or("a trigger needs a `payload` object")?;
            for key in ["summary", "source"] {
                if !non_empty_str(payload.get(key)) {
                    return Err(format!("a trigger needs a non-empty `payload.{key}`"));
                }
            }
            match payload.get("severity").and_then(Value::as_str) {
                Some("critical" | "error" | "warning" | "info") => {}
                _ => {
                    return Err(
                        "`payload.severity` must be critical, error, warning or info".into(),
                    )
                }
            }
        }
        Ok(())
    }

    /// `payload.summary` ≤ 1 024 characters and `dedup_key` ≤ 255 (PagerDuty's limits).
    fn enforce_field_limits(&self, body: &mut Value) {
        cap_str(body, "dedup_key", PAGERDUTY_DEDUP_KEY_MAX_CHARS);
        if let Some(payload) = body.get_mut("payload") {
            cap_str(payload, "summary", PAGERDUTY_SUMMARY_MAX_CHARS);
        }
    }

    /// Unchanged: PagerDuty shows event text as typed (no Markdown, no mentions).
    fn md_escape<'a>(&self, s: &'a str) -> Cow<'a, str> {
        Cow::Borrowed(s)
    }

    /// Events carry the integration key: `routing_key` is required, and never rendered.
    fn uses_routing_key(&self) -> bool {
        true
    }

    /// `routing_key` from config, set when sending: it never appears in a rendered body, so
    /// not in `render`, the logs or a dead letter.
    fn prepare_body<'a>(&self, body: &'a str, routing_key: Option<&str>) -> Cow<'a, str> {
        let Some(key) = routing_key else {
            return Cow::Borrowed(body);
        };
        match serde_json::from_str::<Value>(body) {
            Ok(Value::Object(mut map)) => {
                map.insert("routing_key".into(), Value::from(key));
                serde_json::to_string(&map)
                    .map(Cow::Owned)
                    .unwrap_or(Cow::Borrowed(body))
            }
            _ => Cow::Borrowed(body),
        }
    }

    /// A trigger (whatever the sample alert's status says), then a resolve of the same
    /// `dedup_key`: the test incident shows up, and does not stay open.
    fn send_test_bodies(&self, body: &str) -> Vec<String> {
        let Ok(mut v) = serde_json::from_str::<Value>(body) else {
            return vec![body.to_string()];
        };
        let mut out = Vec::new();
        for action in ["trigger", "resolve"] {
            v["event_action"] = Value::from(action);
            out.push(v.to_string());
        }
        out
    }

    fn register_template_functions(&self, env: &mut Environment<'static>) {
        env.add_function(
            "pagerduty_action",
            |event: minijinja::Value, alert: minijinja::Value| {
                let event = serde_json::to_value(&event).unwrap_or(Value::Null);
                let alert = serde_json::to_value(&alert).unwrap_or(Value::Null);
                event_action_of(&event, alert.is_object().then_some(&alert))
            },
        );
        env.add_filter("pagerduty_severity", |urgency: minijinja::Value| {
            severity(crate::render::filters::value_of(&urgency).map(UrgencyBand::from_value))
        });
    }
}

/// The PagerDuty `event_action` for a SEKOIA.IO event, from its parts.
///
/// Rule: a non-alert event (a report) → `trigger`; a `deleted` alert → `resolve`; a status in
/// the Closed stage, or named Closed or Rejected → `resolve`; named Acknowledged →
/// `acknowledge`; anything else (Pending, Ongoing, a custom status, none) → `trigger`. Names
/// compare without case. Reason: the incident should follow the alert (PagerDuty: "Use
/// [resolve] when the problem … has been fixed", "[acknowledge] to indicate that someone is
/// presently working on the problem"); Closed and Rejected are SEKOIA.IO's final statuses, and
/// custom statuses say their stage. Unknown states trigger: a trigger on an open incident only
/// adds a log entry, while a wrong resolve would silence a real page.
pub fn event_action(
    event_type: Option<&str>,
    action: Option<&str>,
    status: Option<&str>,
    stage: Option<&str>,
) -> &'static str {
    let is = |v: Option<&str>, want: &str| v.is_some_and(|s| s.trim().eq_ignore_ascii_case(want));
    if !is(event_type, "alert") {
        return "trigger";
    }
    if is(action, "deleted")
        || is(stage, "closed")
        || is(status, "closed")
        || is(status, "rejected")
    {
        return "resolve";
    }
    if is(status, "acknowledged") {
        return "acknowledge";
    }
    "trigger"
}

/// [`event_action`] for a webhook event and its enriched alert: the alert's status when it
/// was fetched (it is the current one), else the `status_name` an update carries.
pub fn event_action_of(event: &Value, alert: Option<&Value>) -> &'static str {
    fn str_at<'v>(v: &'v Value, path: &str) -> Option<&'v str> {
        v.pointer(path).and_then(Value::as_str)
    }
    let (status, stage) = match alert {
        Some(a) => (str_at(a, "/status/name"), str_at(a, "/custom_status/stage")),
        None => (str_at(event, "/attributes/updated/status_name"), None),
    };
    event_action(
        str_at(event, "/type"),
        str_at(event, "/action"),
        status,
        stage,
    )
}

/// PagerDuty `payload.severity` of an urgency band.
///
/// Rule: Urgent → `critical`, Major → `error`, High → `warning`, Moderate and Low → `info`;
/// unknown → `error`. Reason: PagerDuty's default "severity-based" urgency pages at high
/// urgency for critical and error, so SEKOIA.IO's two top bands wake someone and the lower
/// ones wait; an alert whose urgency is missing (details unavailable) must not be quietly
/// downgraded, as routing fails open for the same reason.
pub fn severity(band: Option<UrgencyBand>) -> &'static str {
    match band {
        Some(UrgencyBand::Urgent) => "critical",
        Some(UrgencyBand::Major) | None => "error",
        Some(UrgencyBand::High) => "warning",
        Some(UrgencyBand::Moderate | UrgencyBand::Low) => "info",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn actions_follow_the_alert_status() {
        let a = |t, ac, st, sg| event_action(t, ac, st, sg);
        assert_eq!(
            a(Some("alert"), Some("created"), Some("Pending"), None),
            "trigger"
        );
        assert_eq!(
            a(
                Some("alert"),
                Some("updated"),
                Some("Ongoing"),
                Some("in progress")
            ),
            "trigger"
        );
        assert_eq!(
            a(Some("alert"), Some("updated"), Some("Acknowledged"), None),
            "acknowledge"
        );
        assert_eq!(
            a(Some("alert"), Some("updated"), Some("closed "), None),
            "resolve"
        );
        assert_eq!(
            a(Some("alert"), Some("updated"), Some("Rejected"), None),
            "resolve"
        );
        assert_eq!(
            a(
                Some("alert"),
                Some("updated"),
                Some("False positive"),
                Some("Closed")
            ),
            "resolve"
        );
        assert_eq!(a(Some("alert"), Some("deleted"), None, None), "resolve");
        assert_eq!(a(Some("alert"), Some("updated"), None, None), "trigger");
        assert_eq!(
            a(
                Some("content-proposal"),
                Some("created"),
                Some("Closed"),
                None
            ),
            "trigger"
        );
        assert_eq!(a(None, None, None, None), "trigger");
    }

    #[test]
    fn the_enriched_status_wins_over_the_event() {
        let event = json!({"type": "alert", "action": "updated", "attributes": {"updated": {"status_name": "Closed"}}});
        assert_eq!(event_action_of(&event, None), "resolve");
        let alert = json!({"status": {"name": "Acknowledged"}});
        assert_eq!(event_action_of(&event, Some(&alert)), "acknowledge");
        let alert = json!({"status": {"name": "Custom"}, "custom_status": {"stage": "closed"}});
        assert_eq!(event_action_of(&event, Some(&alert)), "resolve");
    }

    #[test]
    fn severities_by_band() {
        assert_eq!(severity(Some(UrgencyBand::Urgent)), "critical");
        assert_eq!(severity(Some(UrgencyBand::Major)), "error");
        assert_eq!(severity(Some(UrgencyBand::High)), "warning");
        assert_eq!(severity(Some(UrgencyBand::Moderate)), "info");
        assert_eq!(severity(Some(UrgencyBand::Low)), "info");
        assert_eq!(severity(None), "error");
    }

    #[test]
    fn envelope_is_the_events_api_v2() {
        let p = PagerDuty;
        let trigger = json!({"event_action": "trigger", "payload": {"summary": "s", "source": "x", "severity": "error"}});
        assert!(p.check_envelope(&trigger).is_ok());
        assert!(p
            .check_envelope(&json!({"event_action": "resolve", "dedup_key": "k"}))
            .is_ok());
        assert!(p
            .check_envelope(&json!({"event_action": "resolve"}))
            .is_err());
        assert!(p
            .check_envelope(&json!({"event_action": "escalate", "dedup_key": "k"}))
            .is_err());
        let bad = json!({"event_action": "trigger", "payload": {"summary": "s", "source": "x", "severity": "major"}});
        assert!(p.check_envelope(&bad).is_err());
        let bad = json!({"event_action": "trigger", "payload": {"summary": "", "source": "x", "severity": "info"}});
        assert!(p.check_envelope(&bad).is_err());
    }

    #[test]
    fn limits_cut_summary_and_dedup_key() {
        let mut body =
            json!({"dedup_key": "k".repeat(300), "payload": {"summary": "s".repeat(2000)}});
        PagerDuty.enforce_field_limits(&mut body);
        assert_eq!(body["dedup_key"].as_str().unwrap().chars().count(), 255);
        assert_eq!(
            body["payload"]["summary"].as_str().unwrap().chars().count(),
            1024
        );
    }
}

#[cfg(test)]
mod body_tests {
    use super::*;

    #[test]
    fn the_routing_key_is_added_when_sending() {
        let body = r#"{"event_action":"trigger","dedup_key":"k"}"#;
        let sent: Value = serde_json::from_str(&PagerDuty.prepare_body(body, Some("KEY"))).unwrap();
        assert_eq!(sent["routing_key"], "KEY");
        assert_eq!(sent["dedup_key"], "k");
        assert_eq!(PagerDuty.prepare_body(body, None), body);
    }

    #[test]
    fn send_test_triggers_then_resolves() {
        let body = r#"{"event_action":"acknowledge","dedup_key":"k","payload":{"summary":"s"}}"#;
        let sent: Vec<Value> = PagerDuty
            .send_test_bodies(body)
            .iter()
            .map(|b| serde_json::from_str(b).unwrap())
            .collect();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0]["event_action"], "trigger");
        assert_eq!(sent[1]["event_action"], "resolve");
        assert!(sent.iter().all(|b| b["dedup_key"] == "k"));
    }
}
