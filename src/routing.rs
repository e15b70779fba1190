//! Routing: which of a hook's targets an event reaches, once the alert is known.
//!
//! A hook's `targets` are unconditional; each `[[hooks.routes]]` adds targets under
//! conditions (`min_urgency`). The hook's own `min_urgency` applies to every route. Conditions
//! that need the alert *fail open* when it is unavailable: a missing alert must never silence
//! a page.

use serde_json::Value;

use crate::configuration::HookSettings;

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

/// Whether `target` of `hook` should receive an event whose alert has `urgency`.
///
/// Rule: the hook's own `min_urgency` must pass; then the target is selected if the hook lists
/// it unconditionally or any route naming it passes. A target named by several routes is
/// still sent once (the caller asks per target, and deliveries are one row per target).
pub fn target_selected(hook: &HookSettings, target: &str, urgency: Option<u64>) -> bool {
    if !passes_min_urgency(hook.min_urgency, urgency) {
        return false;
    }
    hook.targets.iter().any(|t| t == target)
        || hook
            .routes
            .iter()
            .filter(|r| r.targets.iter().any(|t| t == target))
            .any(|r| passes_min_urgency(r.min_urgency, urgency))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::RouteSettings;

    fn hook() -> HookSettings {
        HookSettings {
            name: "soc".into(),
            id: "x".repeat(36),
            targets: vec!["teams".into()],
            types: vec![],
            actions: vec![],
            min_urgency: 0,
            when: String::new(),
            allow_from: vec![],
            api_key: None,
            api_url: None,
            app_url: None,
            routes: vec![RouteSettings {
                targets: vec!["slack".into(), "teams".into()],
                min_urgency: 80,
                when: String::new(),
            }],
        }
    }

    #[test]
    fn urgency_from_alert() {
        let a = serde_json::json!({"urgency": {"current_value": 70, "value": 60}});
        assert_eq!(alert_urgency(&a), Some(70));
        let b = serde_json::json!({"urgency": {"value": 60}});
        assert_eq!(alert_urgency(&b), Some(60));
        assert_eq!(alert_urgency(&serde_json::json!({})), None);
    }

    #[test]
    fn routes_select_by_urgency_and_fail_open() {
        let h = hook();
        assert!(target_selected(&h, "teams", Some(10)));
        assert!(!target_selected(&h, "slack", Some(79)));
        assert!(target_selected(&h, "slack", Some(80)));
        assert!(target_selected(&h, "slack", None), "fail open");
        assert!(!target_selected(&h, "other", Some(100)));
    }

    #[test]
    fn hook_min_urgency_applies_to_every_route() {
        let mut h = hook();
        h.min_urgency = 50;
        assert!(!target_selected(&h, "teams", Some(40)));
        assert!(target_selected(&h, "teams", Some(50)));
        assert!(target_selected(&h, "teams", None));
    }
}
