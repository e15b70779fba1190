//! The routing rules that decide alone, without the router: urgency, `min_urgency` and the
//! fail-open rule of `when`. Pure functions, tested without a config.

use serde_json::Value;

/// The live urgency of an alert: `urgency.current_value`, else `urgency.value`.
pub fn alert_urgency(alert: &Value) -> Option<u64> {
    let u = alert.get("urgency")?;
    u.get("current_value")
        .and_then(Value::as_u64)
        .or_else(|| u.get("value").and_then(Value::as_u64))
}

/// Whether `urgency` passes a `min_urgency` threshold.
///
/// Rule: 0 always passes; an unknown urgency (alert unavailable, or no urgency field) passes.
/// Reason: fail open — a relay that drops an alert because the API was down would hide exactly
/// the incidents that matter.
pub fn passes_min_urgency(min: u32, urgency: Option<u64>) -> bool {
    min == 0 || urgency.is_none_or(|u| u >= u64::from(min))
}

/// What a `when` expression evaluated to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhenValue {
    /// A truthy value (Jinja truthiness: non-empty string, non-zero number, `true`, …).
    True,
    /// A falsy value (`false`, `none`, `0`, `""`, empty list).
    False,
    /// The expression's value is undefined (e.g. it is just a path to a missing field).
    Undefined,
    /// Evaluation failed (type error, unknown filter, out of fuel, …).
    Error(String),
}

/// Whether a `when` condition lets the event through.
///
/// Rule, in order:
/// 1. the alert is **unavailable** (an `alert` event whose alert object could not be fetched:
///    API down, no key, deleted alert) and the expression reads `alert` → **passes**;
/// 2. evaluation **errors** → **passes** (and the caller logs a warning);
/// 3. the value is **undefined** → passes only if the alert is unavailable;
/// 4. otherwise the value's truthiness decides.
///
/// Reason: fail open. Without the alert, `alert.rule.name != 'Noisy rule'` or
/// `alert.urgency.value >= 80` cannot be answered, and guessing "no" would silence a page
/// exactly when the SEKOIA.IO API is having trouble; an extra message is cheap, a missed
/// incident is not. For events that never have an alert (e.g. `content-proposal`), `alert`
/// is simply none and the expression is evaluated as written (`event.type == 'alert' and …`
/// keeps reports out).
pub fn when_passes(value: &WhenValue, alert_unavailable: bool, reads_alert: bool) -> bool {
    if alert_unavailable && reads_alert {
        return true;
    }
    match value {
        WhenValue::True | WhenValue::Error(_) => true,
        WhenValue::Undefined => alert_unavailable,
        WhenValue::False => false,
    }
}

/// Whether the alert of an event is unavailable: it is an `alert` event and `alert` is none.
pub fn alert_unavailable(event: &Value, alert: Option<&Value>) -> bool {
    alert.is_none() && event.get("type").and_then(Value::as_str) == Some("alert")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urgency_from_alert() {
        let a = json!({"urgency": {"current_value": 70, "value": 60}});
        assert_eq!(alert_urgency(&a), Some(70));
        let b = json!({"urgency": {"value": 60}});
        assert_eq!(alert_urgency(&b), Some(60));
        assert_eq!(alert_urgency(&json!({})), None);
    }

    #[test]
    fn when_policy_matrix() {
        use WhenValue::*;
        let err = Error("boom".into());
        // (value, alert unavailable, reads alert) -> passes
        let cases = [
            (True, false, false, true),
            (False, false, false, false),
            (Undefined, false, false, false),
            (err.clone(), false, false, true),
            (False, true, true, true),
            (Undefined, true, true, true),
            (err.clone(), true, true, true),
            (False, true, false, false),
            (Undefined, true, false, true),
            (True, true, false, true),
            (False, false, true, false),
        ];
        for (value, unavailable, reads, expected) in cases {
            assert_eq!(
                when_passes(&value, unavailable, reads),
                expected,
                "{value:?} unavailable={unavailable} reads_alert={reads}"
            );
        }
    }
}
