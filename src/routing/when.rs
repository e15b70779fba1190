//! `when` expressions: compiled once into the router's MiniJinja environment, with errors that
//! name the hook and the route.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use minijinja::Environment;

use super::compare;

/// A `when` expression that does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: `when` = {expression:?} is not a valid expression{}: {detail}", where_(.hook, .route), line_of(.line))]
pub struct WhenError {
    pub hook: String,
    /// 1-based index of the `[[hooks.routes]]` block; `None` for the hook's own `when`.
    pub route: Option<usize>,
    pub expression: String,
    /// Line inside the expression (multi-line TOML strings).
    pub line: Option<usize>,
    pub detail: String,
}

pub(super) fn where_(hook: &str, route: &Option<usize>) -> String {
    match route {
        Some(i) => format!("hook {hook:?}, route {i} ([[hooks.routes]] #{i})"),
        None => format!("hook {hook:?}"),
    }
}

fn line_of(line: &Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

/// Every bad `when` of the config, so one run of `check` shows them all.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct RoutingError(pub Vec<WhenError>);

/// A compiled `when`.
#[derive(Debug, Clone)]
pub(super) struct Condition {
    /// Name of the wrapper template in the router's environment.
    pub(super) name: String,
    pub(super) source: String,
    /// Whether the expression reads the `alert` variable (for the fail-open rule).
    pub(super) reads_alert: bool,
    /// Set once the evaluation error of this rule has been logged: a broken rule would
    /// otherwise log one warning per event and target.
    pub(super) warned: Arc<AtomicBool>,
}

pub(super) fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    }
}

/// Compile one `when`: `""` (or blanks) is no condition. The expression is first compiled on
/// its own (so template syntax such as `%}` cannot sneak in), then wrapped in a one-line
/// template that prints `1`, `0` or `u` (undefined), stored in the environment under `name`.
pub(super) fn compile_when(
    env: &mut Environment<'static>,
    name: &str,
    source: &str,
) -> Result<Option<Condition>, (Option<usize>, String)> {
    if source.trim().is_empty() {
        return Ok(None);
    }
    let reads_alert = {
        let expr = env
            .compile_expression(source)
            .map_err(|e| (e.line(), describe(&e)))?;
        let vars: HashSet<String> = expr.undeclared_variables(false);
        vars.contains("alert")
    };
    // Comparisons become type-checked calls (see `compare`); the rest keeps its meaning.
    let checked = compare::rewrite(source).map_err(|e| (e.line(), describe(&e)))?;
    let wrapper = format!(
        "{{%- set __when = ({checked}) -%}}{{{{ \"u\" if __when is undefined else (\"1\" if __when else \"0\") }}}}"
    );
    env.add_template_owned(name.to_string(), wrapper)
        .map_err(|e| (e.line(), describe(&e)))?;
    Ok(Some(Condition {
        name: name.to_string(),
        source: source.to_string(),
        reads_alert,
        warned: Arc::default(),
    }))
}
