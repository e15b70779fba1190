//! Sample events and alerts, embedded in the binary so `check`, `render` and `send-test` work
//! anywhere. The files live here, beside the code; `tests/fixtures/` links to them so the
//! tests use the same data (sources in `tests/fixtures/README.md`).

use serde_json::Value;

pub const ALERT: &str = include_str!("alert.json");
pub const ALERT_MINIMAL: &str = include_str!("alert-minimal.json");
/// Emoji, RTL, CJK, `<!channel>`, markdown, HTML, Jinja-like text, 5 000+ character fields.
pub const ALERT_HOSTILE: &str = include_str!("alert-hostile.json");
pub const EVENT_CREATED: &str = include_str!("webhook-alert-created.json");
pub const EVENT_UPDATED: &str = include_str!("webhook-alert-updated.json");
pub const EVENT_PROPOSAL: &str = include_str!("webhook-content-proposal.json");

/// The enrichment error shown by the unenriched sample.
pub const UNENRICHED_REASON: &str =
    "Alert API answered 403 (the API key needs the SIC_READ_ALERTS permission)";

/// Parse an embedded sample. They are checked by the tests, so this cannot fail in a release;
/// `Null` keeps it total anyway.
pub fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// One case every template is rendered against.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub event: Value,
    pub alert: Option<Value>,
    pub enrichment_error: Option<&'static str>,
}

/// The cases of `check`: the three alerts with the created and the updated event, a report
/// (an event that never has an alert), and an alert whose enrichment failed.
pub fn all() -> Vec<Sample> {
    let alerts = [
        ("alert", ALERT),
        ("alert-minimal", ALERT_MINIMAL),
        ("alert-hostile", ALERT_HOSTILE),
    ];
    let events = [("created", EVENT_CREATED), ("updated", EVENT_UPDATED)];
    let mut out = Vec::new();
    for (ename, event) in events {
        for (aname, alert) in alerts {
            out.push(Sample {
                name: format!("{ename}/{aname}"),
                event: parse(event),
                alert: Some(parse(alert)),
                enrichment_error: None,
            });
        }
    }
    out.push(Sample {
        name: "content-proposal (no alert)".into(),
        event: parse(EVENT_PROPOSAL),
        alert: None,
        enrichment_error: None,
    });
    out.push(Sample {
        name: "created/unenriched".into(),
        event: parse(EVENT_CREATED),
        alert: None,
        enrichment_error: Some(UNENRICHED_REASON),
    });
    out
}

/// The alerts of a sample storm digest (for `check` and `render --digest`): the three sample
/// alerts, most urgent first, one with the changes of collapsed updates, and one whose details
/// could not be fetched.
pub fn digest_items(app_url: &str) -> Vec<Value> {
    let event = parse(EVENT_CREATED);
    let mut items = Vec::new();
    for (i, alert) in [ALERT, ALERT_HOSTILE, ALERT_MINIMAL]
        .into_iter()
        .enumerate()
    {
        let alert = parse(alert);
        let changes = if i == 0 {
            vec!["status: Pending → Acknowledged".to_string()]
        } else {
            Vec::new()
        };
        items.push(crate::render::digest_item(
            &event,
            Some(&alert),
            &changes,
            app_url,
        ));
    }
    items.push(crate::render::digest_item(&event, None, &[], app_url));
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_valid() {
        let all = all();
        assert_eq!(all.len(), 8);
        for s in &all {
            assert!(s.event.is_object(), "{}", s.name);
            assert!(
                crate::domain::WebhookEvent::from_json(s.event.clone()).is_ok(),
                "{}",
                s.name
            );
            if let Some(a) = &s.alert {
                assert!(a.is_object(), "{}", s.name);
            }
        }
        assert!(parse(crate::targets::teams::ADAPTIVE_CARD_SCHEMA).is_object());
    }
}
