//! Routing: which of a hook's targets an event reaches, once the alert is known.
//!
//! A hook's `targets` are unconditional; each `[[hooks.routes]]` adds targets under
//! conditions (`min_urgency`, `when`). The hook's own `types`, `actions`, `min_urgency` and
//! `when` apply to every target of the hook, routes included. A target named by several
//! matching routes still receives the event once (deliveries are one row per event and
//! target; [`Router::select`] returns each target once).
//!
//! `when` is a MiniJinja expression over the template context (the same as templates': `event`, `alert`,
//! `enriched`, `enrichment_error`, `hook`, `target`, `links`, `sekoia`), compiled once when
//! the [`Router`] is built (startup, reload, `check`). A bad expression is an error naming the
//! hook and the route.
//!
//! Conditions that need the alert *fail open* when it is unavailable ([`when_passes`],
//! [`passes_min_urgency`]): a missing alert must never silence a page. A comparison whose
//! two sides have different types (`alert.urgency.current_value >= '50'`) is an evaluation
//! error ([`compare`]), so it fails open too, with one warning per rule.

mod compare;
pub mod policy;
mod when;

pub use policy::{alert_unavailable, alert_urgency, passes_min_urgency, when_passes, WhenValue};
use when::{compile_when, describe, where_, Condition};
pub use when::{RoutingError, WhenError};

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::{json, Value};

use crate::configuration::Settings;
use crate::domain::TargetKind;
use crate::render::{context_json, RenderInput};

/// Upper bound on the work of one `when` evaluation (MiniJinja fuel): a condition is a
/// comparison or two; this only stops a pathological loop (`range(10**9)`) from pinning a
/// delivery worker. Running out of fuel is an evaluation error, so the condition fails open.
const WHEN_FUEL: u64 = 100_000;

#[derive(Debug, Clone)]
struct RouteRules {
    targets: Vec<String>,
    min_urgency: u32,
    when: Option<Condition>,
}

#[derive(Debug, Clone)]
struct HookRules {
    types: Vec<String>,
    actions: Vec<String>,
    min_urgency: u32,
    when: Option<Condition>,
    targets: Vec<String>,
    routes: Vec<RouteRules>,
    /// Every target the hook may reach, in config order, without repeats.
    candidates: Vec<String>,
}

/// Whether one target gets the event, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Selected,
    Skipped(String),
}

/// The outcome of routing one event through one hook.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Targets that get the event, each once, in config order.
    pub selected: Vec<String>,
    /// Candidate targets that do not, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// The routing rules of every hook, with their `when` expressions compiled. Pure: deciding
/// touches no network, store or clock, so the same rules serve the server, `render` and tests.
pub struct Router {
    env: Environment<'static>,
    hooks: BTreeMap<String, HookRules>,
    kinds: BTreeMap<String, TargetKind>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("hooks", &self.hooks.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Router {
    /// Compile every hook's and route's `when`. All bad expressions are reported at once.
    pub fn new(settings: &Settings) -> Result<Router, RoutingError> {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::None);
        // Same as templates: a missing optional field reads as undefined, not an error.
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_fuel(Some(WHEN_FUEL));
        crate::render::filters::register(&mut env);
        env.add_function(compare::CMP_FUNCTION, compare::compare);

        let mut problems = Vec::new();
        let mut hooks = BTreeMap::new();
        for (i, h) in settings.hooks.iter().enumerate() {
            let mut compile = |source: &str, route: Option<usize>| -> Option<Condition> {
                let name = match route {
                    Some(r) => format!("hooks[{i}].routes[{}].when", r - 1),
                    None => format!("hooks[{i}].when"),
                };
                match compile_when(&mut env, &name, source) {
                    Ok(c) => c,
                    Err((line, detail)) => {
                        problems.push(WhenError {
                            hook: h.name.clone(),
                            route,
                            expression: source.to_string(),
                            line,
                            detail,
                        });
                        None
                    }
                }
            };
            let when = compile(&h.when, None);
            let routes = h
                .routes
                .iter()
                .enumerate()
                .map(|(j, r)| RouteRules {
                    targets: r.targets.clone(),
                    min_urgency: r.min_urgency,
                    when: compile(&r.when, Some(j + 1)),
                })
                .collect();
            hooks.insert(
                h.name.clone(),
                HookRules {
                    types: h.types.clone(),
                    actions: h.actions.clone(),
                    min_urgency: h.min_urgency,
                    when,
                    targets: h.targets.clone(),
                    routes,
                    candidates: h.candidate_targets(),
                },
            );
        }
        if !problems.is_empty() {
            return Err(RoutingError(problems));
        }
        let kinds = settings
            .targets
            .iter()
            .map(|(n, t)| (n.clone(), t.kind))
            .collect();
        Ok(Router { env, hooks, kinds })
    }

    /// Route an event through `hook`: every candidate target, selected or skipped with the
    /// reason. `input.target_name` is ignored (each target is evaluated in turn).
    pub fn select(&self, hook: &str, input: &RenderInput) -> Selection {
        let mut out = Selection::default();
        let Some(rules) = self.hooks.get(hook) else {
            return out;
        };
        for target in &rules.candidates {
            match self.decide_rules(rules, hook, target, input) {
                Decision::Selected => out.selected.push(target.clone()),
                Decision::Skipped(why) => out.skipped.push((target.clone(), why)),
            }
        }
        out
    }

    /// Whether `target` of `hook` gets the event (what a delivery row asks).
    pub fn decide(&self, hook: &str, target: &str, input: &RenderInput) -> Decision {
        match self.hooks.get(hook) {
            Some(rules) => self.decide_rules(rules, hook, target, input),
            None => Decision::Skipped(format!("hook {hook:?} is not configured")),
        }
    }

    /// Evaluate every `when` of `hook` against one input and return the evaluation errors
    /// (which would make the condition fail open at run time): for `check`.
    pub fn evaluation_errors(&self, hook: &str, input: &RenderInput) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(rules) = self.hooks.get(hook) {
            let conditions = std::iter::once((None, &rules.when, &rules.candidates)).chain(
                rules
                    .routes
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (Some(i + 1), &r.when, &r.targets)),
            );
            for (route, when, targets) in conditions {
                let (Some(cond), Some(target)) = (when, targets.first()) else {
                    continue;
                };
                let mismatches = self.mismatches(cond, input, target);
                let failed = match self.eval(cond, input, target) {
                    WhenValue::Error(e) if mismatches.is_empty() => Some(e),
                    _ => None,
                };
                for e in mismatches.into_iter().chain(failed) {
                    errors.push(format!(
                        "{}: `when` = {:?} fails at run time: {e} (the route would then always match)",
                        where_(hook, &route),
                        cond.source
                    ));
                }
            }
        }
        errors
    }

    /// The routing rule: types and actions, then the hook's `min_urgency` and `when`, then the
    /// unconditional targets or any route naming the target whose `min_urgency` and `when` pass.
    fn decide_rules(
        &self,
        rules: &HookRules,
        hook: &str,
        target: &str,
        input: &RenderInput,
    ) -> Decision {
        let event_type = input
            .event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("");
        let action = input
            .event
            .get("action")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !rules.types.is_empty() && !rules.types.iter().any(|t| t == event_type) {
            return Decision::Skipped(format!("type {event_type:?} is not in the hook's types"));
        }
        if !rules.actions.is_empty() && !rules.actions.iter().any(|a| a == action) {
            return Decision::Skipped(format!("action {action:?} is not in the hook's actions"));
        }
        let urgency = input.alert.and_then(alert_urgency);
        if !passes_min_urgency(rules.min_urgency, urgency) {
            return Decision::Skipped(format!(
                "urgency {} is below the hook's min_urgency {}",
                urgency.unwrap_or(0),
                rules.min_urgency
            ));
        }
        if let Some(cond) = &rules.when {
            if !self.passes(cond, input, target, hook, None) {
                return Decision::Skipped(format!("the hook's `when` ({}) is false", cond.source));
            }
        }
        if rules.targets.iter().any(|t| t == target) {
            return Decision::Selected;
        }
        let mut reasons = Vec::new();
        for (i, route) in rules.routes.iter().enumerate() {
            if !route.targets.iter().any(|t| t == target) {
                continue;
            }
            if !passes_min_urgency(route.min_urgency, urgency) {
                reasons.push(format!(
                    "route {}: urgency {} < min_urgency {}",
                    i + 1,
                    urgency.unwrap_or(0),
                    route.min_urgency
                ));
                continue;
            }
            match &route.when {
                Some(cond) if !self.passes(cond, input, target, hook, Some(i + 1)) => {
                    reasons.push(format!(
                        "route {}: `when` ({}) is false",
                        i + 1,
                        cond.source
                    ));
                }
                _ => return Decision::Selected,
            }
        }
        if reasons.is_empty() {
            Decision::Skipped(format!("no route of hook {hook:?} names this target"))
        } else {
            Decision::Skipped(format!("no route matched: {}", reasons.join("; ")))
        }
    }

    fn passes(
        &self,
        cond: &Condition,
        input: &RenderInput,
        target: &str,
        hook: &str,
        route: Option<usize>,
    ) -> bool {
        let value = self.eval(cond, input, target);
        let unavailable = alert_unavailable(input.event, input.alert);
        let first =
            matches!(value, WhenValue::Error(_)) && !cond.warned.swap(true, Ordering::Relaxed);
        if let (WhenValue::Error(e), true) = (&value, first) {
            tracing::warn!(
                hook,
                route,
                target,
                expression = %cond.source,
                error = %e,
                "`when` failed to evaluate: the condition counts as true (fail open); logged once per rule until the next reload"
            );
        }
        when_passes(&value, unavailable, cond.reads_alert)
    }

    /// Every comparison of `cond` whose sides have different types on this input, evaluated
    /// without stopping at the first (for `check`).
    fn mismatches(&self, cond: &Condition, input: &RenderInput, target: &str) -> Vec<String> {
        let mut ctx = self.context(input, target);
        ctx[compare::COLLECT_VAR] = json!(true);
        let Ok(captured) = self
            .env
            .get_template(&cond.name)
            .and_then(|t| t.render_captured(&ctx))
        else {
            return Vec::new();
        };
        captured
            .state()
            .get_temp(compare::MISMATCHES_TEMP)
            .and_then(|v| {
                v.try_iter()
                    .ok()
                    .map(|it| it.map(|m| m.to_string()).collect())
            })
            .unwrap_or_default()
    }

    fn context(&self, input: &RenderInput, target: &str) -> Value {
        let kind = self.kinds.get(target).map(|k| k.as_str()).unwrap_or("");
        context_json(input, json!({"name": target, "kind": kind}))
    }

    fn eval(&self, cond: &Condition, input: &RenderInput, target: &str) -> WhenValue {
        let ctx = self.context(input, target);
        let rendered = self
            .env
            .get_template(&cond.name)
            .and_then(|t| t.render(&ctx));
        match rendered.as_deref() {
            Ok("1") => WhenValue::True,
            Ok("0") => WhenValue::False,
            Ok("u") => WhenValue::Undefined,
            Ok(other) => WhenValue::Error(format!("unexpected result {other:?}")),
            Err(e) => WhenValue::Error(describe(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::{load_str, Env};
    use std::path::Path;

    const ALERT: &str = include_str!("../../tests/fixtures/alert.json");
    const EVENT_CREATED: &str = include_str!("../../tests/fixtures/webhook-alert-created.json");
    const EVENT_PROPOSAL: &str = include_str!("../../tests/fixtures/webhook-content-proposal.json");

    /// Targets `teams`, `slack`, `pager`, `soar`; `hooks` is appended.
    fn router(hooks: &str) -> Result<Router, RoutingError> {
        let text = format!(
            r#"
            [targets.teams]
            kind = "teams"
            url = "https://example.invalid/t"
            [targets.slack]
            kind = "slack"
            url = "https://example.invalid/s"
            [targets.pager]
            kind = "webhook"
            url = "https://example.invalid/p"
            [targets.soar]
            kind = "webhook"
            url = "https://example.invalid/w"
            {hooks}
            "#
        );
        let settings =
            load_str(&text, Path::new("c.toml"), Path::new("."), &Env::new()).expect("test config");
        Router::new(&settings)
    }

    const ID: &str = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e";

    /// Hook `soc`: `teams` always; `slack` from urgency 80; `pager` unless the rule is noisy;
    /// `soar` named by two routes.
    fn soc(hook_extra: &str) -> Router {
        router(&format!(
            r#"
            [[hooks]]
            name = "soc"
            id = "{ID}"
            targets = ["teams"]
            {hook_extra}
            [[hooks.routes]]
            targets = ["slack", "soar"]
            min_urgency = 80
            [[hooks.routes]]
            targets = ["pager", "soar"]
            when = "alert.rule.name != 'Noisy rule'"
            "#
        ))
        .expect("rules compile")
    }

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).expect("fixture")
    }

    fn alert_with(urgency: u64, rule: &str) -> Value {
        let mut a = parse(ALERT);
        a["urgency"]["current_value"] = json!(urgency);
        a["rule"]["name"] = json!(rule);
        a
    }

    fn event(kind: &str, action: &str) -> Value {
        let mut e = parse(EVENT_CREATED);
        e["type"] = json!(kind);
        e["action"] = json!(action);
        e
    }

    fn input<'a>(event: &'a Value, alert: Option<&'a Value>) -> RenderInput<'a> {
        RenderInput {
            changes: &[],
            event,
            alert,
            enrichment_error: alert.is_none().then_some("API down"),
            hook_name: "soc",
            target_name: "",
            app_url: "https://app.sekoia.io",
        }
    }

    fn selected(r: &Router, event: &Value, alert: Option<&Value>) -> Vec<String> {
        r.select("soc", &input(event, alert)).selected
    }

    #[test]
    fn routing_matrix() {
        let r = soc("");
        let proposal = parse(EVENT_PROPOSAL);
        let created = event("alert", "created");
        let quiet = alert_with(70, "Cobalt Strike C2");
        let loud = alert_with(90, "Cobalt Strike C2");
        let noisy_loud = alert_with(90, "Noisy rule");
        let noisy_quiet = alert_with(10, "Noisy rule");
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // (case, event, alert, expected targets in config order)
        let cases: Vec<(&str, &Value, Option<&Value>, Vec<String>)> = vec![
            (
                "urgency 70",
                &created,
                Some(&quiet),
                s(&["teams", "soar", "pager"]),
            ),
            (
                "urgency 90",
                &created,
                Some(&loud),
                s(&["teams", "slack", "soar", "pager"]),
            ),
            (
                "noisy, 90",
                &created,
                Some(&noisy_loud),
                s(&["teams", "slack", "soar"]),
            ),
            ("noisy, 10", &created, Some(&noisy_quiet), s(&["teams"])),
            // Alert unavailable: min_urgency and `when` on the alert both fail open.
            (
                "unavailable",
                &created,
                None,
                s(&["teams", "slack", "soar", "pager"]),
            ),
            // A report has no alert: urgency unknown passes, `alert.rule.name` (undefined)
            // differs from 'Noisy rule'.
            (
                "report",
                &proposal,
                None,
                s(&["teams", "slack", "soar", "pager"]),
            ),
        ];
        for (case, ev, alert, expected) in cases {
            assert_eq!(selected(&r, ev, alert), expected, "{case}");
        }
    }

    #[test]
    fn a_target_named_by_several_routes_is_selected_once() {
        let r = soc("");
        let created = event("alert", "created");
        let loud = alert_with(90, "x");
        let got = selected(&r, &created, Some(&loud));
        assert_eq!(got.iter().filter(|t| *t == "soar").count(), 1, "{got:?}");
    }

    #[test]
    fn types_and_actions_filter_every_target() {
        let r = soc("types = [\"alert\"]\nactions = [\"created\"]");
        let loud = alert_with(90, "x");
        assert_eq!(
            selected(&r, &event("alert", "created"), Some(&loud)).len(),
            4
        );
        let sel = r.select("soc", &input(&event("alert", "updated"), Some(&loud)));
        assert!(sel.selected.is_empty());
        assert!(sel.skipped[0].1.contains("actions"), "{sel:?}");
        let proposal = parse(EVENT_PROPOSAL);
        let sel = r.select("soc", &input(&proposal, None));
        assert!(sel.selected.is_empty());
        assert!(sel.skipped[0].1.contains("types"), "{sel:?}");
    }

    #[test]
    fn hook_min_urgency_and_when_apply_to_every_route() {
        let r = soc("min_urgency = 50\nwhen = \"alert.entity.name != 'Lab'\"");
        let created = event("alert", "created");
        assert!(selected(&r, &created, Some(&alert_with(40, "x"))).is_empty());
        assert_eq!(selected(&r, &created, Some(&alert_with(50, "x"))).len(), 3);
        let mut lab = alert_with(90, "x");
        lab["entity"]["name"] = json!("Lab");
        let sel = r.select("soc", &input(&created, Some(&lab)));
        assert!(sel.selected.is_empty(), "{sel:?}");
        assert!(sel.skipped[0].1.contains("hook's `when`"), "{sel:?}");
        // Unavailable alert: both hook-level conditions fail open.
        assert_eq!(selected(&r, &created, None).len(), 4);
    }

    #[test]
    fn when_sees_the_whole_context() {
        let r = soc(
            "when = \"event.type == 'alert' and enriched and hook.name == 'soc' and target.kind in ['teams', 'slack', 'webhook'] and links.alert.startswith(sekoia.app_url)\"",
        );
        let created = event("alert", "created");
        assert_eq!(selected(&r, &created, Some(&alert_with(90, "x"))).len(), 4);
        // Reports are kept out by testing event.type: no alert is expected, no fail-open.
        let proposal = parse(EVENT_PROPOSAL);
        assert!(selected(&r, &proposal, None).is_empty());
    }

    #[test]
    fn filters_work_in_when_and_errors_fail_open() {
        let r = router(&format!(
            r#"
            [[hooks]]
            name = "soc"
            id = "{ID}"
            [[hooks.routes]]
            targets = ["slack"]
            when = "(alert.urgency|urgency_value) >= 80"
            [[hooks.routes]]
            targets = ["pager"]
            when = "event.attributes.short_id + 1 > 0"
            "#
        ))
        .expect("compiles");
        let created = event("alert", "created");
        let sel = selected(&r, &created, Some(&alert_with(70, "x")));
        // slack: 70 < 80; pager: string + int errors at run time → fail open.
        assert_eq!(sel, vec!["pager".to_string()]);
        assert_eq!(
            selected(&r, &created, Some(&alert_with(85, "x"))),
            vec!["slack".to_string(), "pager".to_string()]
        );
        let errors = r.evaluation_errors("soc", &input(&created, Some(&alert_with(85, "x"))));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("route 2"), "{errors:?}");
    }

    #[test]
    fn a_quoted_number_fails_open_and_is_reported() {
        let r = router(&format!(
            r#"
            [[hooks]]
            name = "soc"
            id = "{ID}"
            [[hooks.routes]]
            targets = ["slack"]
            when = "alert.urgency.current_value >= '50'"
            [[hooks.routes]]
            targets = ["pager"]
            when = "alert.rule.name == 42 or alert.title > 5"
            "#
        ))
        .expect("compiles");
        let created = event("alert", "created");
        // Urgency 10: `10 >= '50'` would otherwise be decided by type order, silently.
        let quiet = alert_with(10, "x");
        assert_eq!(
            selected(&r, &created, Some(&quiet)),
            vec!["slack".to_string(), "pager".to_string()]
        );
        let errors = r.evaluation_errors("soc", &input(&created, Some(&quiet)));
        assert_eq!(errors.len(), 3, "every comparison is reported: {errors:?}");
        assert!(errors[0].contains("route 1") && errors[0].contains("a number with a string"));
        assert!(errors[1].contains("route 2") && errors[1].contains("alert.rule.name == 42"));
        assert!(errors[2].contains("alert.title > 5"), "{errors:?}");
    }

    #[test]
    fn bad_expressions_are_reported_with_hook_and_route() {
        let err = router(&format!(
            r#"
            [[hooks]]
            name = "soc"
            id = "{ID}"
            targets = ["teams"]
            when = "alert.title =="
            [[hooks.routes]]
            targets = ["slack"]
            when = "true"
            [[hooks.routes]]
            targets = ["pager"]
            when = "x %}}{{% for i in range(3) %}}"
            "#
        ))
        .unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
        assert_eq!(err.0[0].hook, "soc");
        assert_eq!(err.0[0].route, None);
        assert_eq!(err.0[1].route, Some(2));
        let msg = err.to_string();
        assert!(msg.contains("hook \"soc\": `when`"), "{msg}");
        assert!(msg.contains("route 2"), "{msg}");
        assert!(msg.contains("syntax error"), "{msg}");
    }

    #[test]
    fn empty_when_is_true() {
        let r = router(&format!(
            "[[hooks]]\nname = \"soc\"\nid = \"{ID}\"\ntargets = [\"teams\"]\nwhen = \"  \"\n"
        ))
        .unwrap();
        let proposal = parse(EVENT_PROPOSAL);
        assert_eq!(selected(&r, &proposal, None), vec!["teams".to_string()]);
        assert_eq!(
            r.decide("soc", "slack", &input(&proposal, None)),
            Decision::Skipped("no route of hook \"soc\" names this target".into())
        );
    }
}
