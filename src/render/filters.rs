//! The filters and functions template authors can use, registered on the environment.
//!
//! | name | use | what it does |
//! | --- | --- | --- |
//! | `truncate_chars(n)` | `{{ alert.details\|truncate_chars(500) }}` | cut to n characters with `…` |
//! | `md_escape` / `md_escape("slack")` | `{{ alert.title\|md_escape }}` | escape for the target's markup, neutralise mentions |
//! | `no_mentions` | `{{ alert.title\|no_mentions }}` | only break `@channel`-style mentions (plain-text fields) |
//! | `one_line` | `{{ event.action\|one_line }}` | line breaks and tabs become spaces (single-line fields) |
//! | `urgency_label` | `{{ alert.urgency\|urgency_label }}` or `urgency_label(70)` | `display`, else the band name |
//! | `urgency_text` | `{{ alert.urgency\|urgency_text }}` | `Major (70)` |
//! | `urgency_value` | `{{ alert.urgency\|urgency_value }}` | `current_value`, else `value` (a number or none) |
//! | `urgency_color` / `urgency_color("slack")` | `{{ alert.urgency\|urgency_color }}` | Teams colour name or `#RRGGBB` |
//! | `urgency_emoji` | `{{ alert.urgency\|urgency_emoji }}` | 🔴 🟠 🟡 🟢 |
//! | `format_time` | `{{ alert.created_at\|format_time }}` | Unix seconds → `YYYY-MM-DD HH:MM:SS UTC` |
//! | `changes_text` | `{{ event.attributes.updated\|changes_text }}` | `status: Ongoing, urgency: 20` |
//!
//! Filters that depend on the target kind read `target.kind` from the template context, so
//! one environment serves every target; an explicit kind argument overrides it.

use minijinja::{Environment, Error, ErrorKind, State, Value};

use super::{text, urgency};
use crate::domain::TargetKind;

pub(crate) fn register(env: &mut Environment<'static>) {
    env.add_filter("truncate_chars", truncate_chars);
    env.add_filter("md_escape", md_escape);
    env.add_filter("no_mentions", no_mentions);
    env.add_filter("one_line", one_line);
    env.add_filter("urgency_label", urgency_label);
    env.add_function("urgency_label", urgency_label);
    env.add_filter("urgency_value", urgency_value);
    env.add_filter("urgency_text", urgency_text);
    env.add_filter("urgency_color", urgency_color);
    env.add_filter("urgency_emoji", urgency_emoji);
    env.add_filter("format_time", format_time);
    env.add_filter("changes_text", changes_text);
    for kind in TargetKind::ALL {
        kind.spec().register_template_functions(env);
    }
}

/// `event.attributes.updated` as one line (see [`text::describe_changes`]); `""` when absent.
fn changes_text(value: Value) -> String {
    serde_json::to_value(&value)
        .map(|v| text::describe_changes(&v))
        .unwrap_or_default()
}

/// Parse a kind name as written in config and in `target.kind`.
pub fn parse_kind(name: &str) -> Option<TargetKind> {
    TargetKind::parse(name)
}

/// The kind to escape or colour for: the explicit argument, else `target.kind` of the context.
fn kind_for(state: &State, explicit: Option<&str>) -> Result<TargetKind, Error> {
    let name = match explicit {
        Some(k) => k.to_string(),
        None => state
            .lookup("target")
            .and_then(|t| t.get_attr("kind").ok())
            .and_then(|k| k.as_str().map(str::to_string))
            .unwrap_or_default(),
    };
    parse_kind(&name).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "unknown target kind {name:?} (expected {})",
                TargetKind::expected_names()
            ),
        )
    })
}

/// Text of a value for the string filters: none/undefined → `""`, strings as they are, other
/// values as printed (so a numeric title still renders).
fn as_text(value: &Value) -> String {
    if value.is_undefined() || value.is_none() {
        String::new()
    } else if let Some(s) = value.as_str() {
        s.to_string()
    } else {
        value.to_string()
    }
}

fn truncate_chars(value: &Value, max: usize) -> Value {
    if value.is_undefined() || value.is_none() {
        return value.clone();
    }
    Value::from(text::truncate_chars(&as_text(value), max).into_owned())
}

fn md_escape(state: &State, value: &Value, kind: Option<&str>) -> Result<Value, Error> {
    let kind = kind_for(state, kind)?;
    Ok(Value::from(
        text::md_escape(&as_text(value), kind).into_owned(),
    ))
}

fn no_mentions(value: &Value) -> Value {
    Value::from(text::neutralize_mentions(&as_text(value)).into_owned())
}

fn one_line(value: &Value) -> Value {
    Value::from(text::one_line(&as_text(value)).into_owned())
}

/// `current_value` (the live urgency) or `value` of an urgency object, or a bare number.
pub(crate) fn value_of(urgency: &Value) -> Option<i64> {
    if let Ok(n) = i64::try_from(urgency.clone()) {
        return Some(n);
    }
    ["current_value", "value"]
        .into_iter()
        .find_map(|k| urgency.get_attr(k).ok().and_then(|v| i64::try_from(v).ok()))
}

fn urgency_value(urgency: &Value) -> Value {
    value_of(urgency)
        .map(Value::from)
        .unwrap_or(Value::from(()))
}

fn urgency_label(urgency: &Value) -> String {
    let display = urgency
        .get_attr("display")
        .ok()
        .and_then(|d| d.as_str().map(str::to_string));
    urgency::urgency_label(display.as_deref(), value_of(urgency))
}

fn urgency_text(urgency: &Value) -> String {
    let label = urgency_label(urgency);
    match value_of(urgency) {
        Some(v) => format!("{label} ({v})"),
        None => label,
    }
}

/// The kind's colour value: a string (`#RRGGBB`, a Teams name) or, for Discord, a number.
fn urgency_color(state: &State, urgency: &Value, kind: Option<&str>) -> Result<Value, Error> {
    let kind = kind_for(state, kind)?;
    let band = value_of(urgency).map(urgency::UrgencyBand::from_value);
    Ok(Value::from_serialize(kind.spec().urgency_color_value(band)))
}

fn urgency_emoji(urgency: &Value) -> String {
    urgency::urgency_emoji(value_of(urgency)).to_string()
}

fn format_time(value: &Value) -> Value {
    match i64::try_from(value.clone()) {
        Ok(secs) => Value::from(text::format_unix_utc(secs)),
        // ISO strings (first_seen_at) and none pass through as they are.
        Err(_) => value.clone(),
    }
}
