//! Stage 4, render: one MiniJinja template per target builds the exact request body.
//!
//! - JSON targets are rendered with JSON auto-escaping: `{{ alert.title }}` prints a complete,
//!   correctly escaped JSON string, so alert data can never break the document, and template
//!   syntax inside data (`{{ 7*7 }}` in a title) is printed, not evaluated.
//! - Every body is parsed, checked against its target's envelope ([`limits::check_envelope`]),
//!   cut to the target's field limits and serialized compactly under its hard size limit.
//! - A user template that fails at run time, renders invalid JSON, the wrong envelope or too
//!   many bytes never loses the alert: the built-in template of that kind is used instead,
//!   and the failure is logged (with the template path, never the target URL) and counted.
//!
//! The built-in templates live in `templates/` and are compiled into the binary.

pub mod filters;
pub mod limits;
pub mod text;
pub mod urgency;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::{json, Value};

use crate::configuration::Settings;
use crate::domain::TargetKind;
use crate::targets::Output;

pub use limits::{enforce_field_limits, max_body_bytes, shrink_to_fit};
pub use text::{md_escape, truncate_bytes, truncate_chars};
pub use urgency::{urgency_color, urgency_emoji, urgency_label, UrgencyBand};

/// Upper bound on template work per render (MiniJinja "fuel", roughly instructions). The
/// built-in templates use a few thousand; the bound stops a user template with a runaway
/// loop from pinning a delivery worker, and makes it fall back instead.
pub const TEMPLATE_FUEL: u64 = 2_000_000;

/// Everything a template can see about one event for one target.
pub struct RenderInput<'a> {
    /// The webhook JSON as received.
    pub event: &'a Value,
    /// The enriched alert object, `None` when unavailable.
    pub alert: Option<&'a Value>,
    /// Why the alert is missing (`None` if enrichment was not attempted or went fine).
    pub enrichment_error: Option<&'a str>,
    pub hook_name: &'a str,
    pub target_name: &'a str,
    /// e.g. `https://app.sekoia.io`, with the per-hook override already applied.
    pub app_url: &'a str,
    /// What changed, when this message carries newer events of the alert that were not sent
    /// on their own (storm control collapsed them): `status: Pending → Closed`, one per field.
    pub changes: &'a [String],
}

/// A rendered message, ready to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Exact request body to post (compact JSON), or the console text.
    pub body: String,
    /// `Some(reason)` when the user template failed and the built-in one was used.
    pub fallback: Option<String>,
}

fn line_suffix(line: &Option<usize>) -> String {
    line.map(|l| format!(" line {l}")).unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot read template {path} (target {target}): {source}")]
    Read {
        target: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("template {template}{}: {detail}", line_suffix(.line))]
    Compile {
        template: String,
        line: Option<usize>,
        detail: String,
    },
    #[error("template {template}{} failed: {detail}", line_suffix(.line))]
    Runtime {
        template: String,
        line: Option<usize>,
        detail: String,
    },
    #[error(
        "template {template} rendered invalid JSON (output line {line}, column {column}): {detail}"
    )]
    InvalidJson {
        template: String,
        line: usize,
        column: usize,
        detail: String,
    },
    #[error("template {template} rendered a body {kind} would reject: {detail}")]
    Envelope {
        template: String,
        kind: TargetKind,
        detail: String,
    },
    #[error("template {template} rendered {size} bytes, over the {kind} limit of {limit} bytes")]
    TooLarge {
        template: String,
        kind: TargetKind,
        size: usize,
        limit: usize,
    },
    #[error("unknown target {0:?}")]
    UnknownTarget(String),
    #[error("the built-in {kind} template failed too: {source}")]
    Builtin {
        kind: TargetKind,
        #[source]
        source: Box<RenderError>,
    },
}

impl RenderError {
    fn from_template(template: &str, err: &minijinja::Error, compile: bool) -> RenderError {
        let template = err.name().unwrap_or(template).to_string();
        let line = err.line();
        let detail = match err.detail() {
            Some(d) => format!("{}: {d}", err.kind()),
            None => err.kind().to_string(),
        };
        if compile {
            RenderError::Compile {
                template,
                line,
                detail,
            }
        } else {
            RenderError::Runtime {
                template,
                line,
                detail,
            }
        }
    }
}

/// Name and source of the built-in template of a kind (also shipped in `templates/`).
pub fn builtin_template(kind: TargetKind) -> (&'static str, &'static str) {
    kind.spec().builtin_template()
}

#[derive(Debug, Clone)]
struct TargetEntry {
    kind: TargetKind,
    /// Name of the user template in the environment (its resolved path), if any.
    user_template: Option<String>,
    /// The kind's extra `target.*` keys ([`crate::targets::TargetKindSpec::context_keys`]).
    context_keys: Vec<(&'static str, String)>,
    /// Name of the user digest template (`digest_template`) in the environment, if any.
    digest_template: Option<String>,
}

/// Everything a digest template sees (README, "Storms").
pub struct DigestInput<'a> {
    /// One object per alert, most urgent first: `short_id`, `title`, `rule`, `entity`,
    /// `urgency`, `status`, `link`, `changes`.
    pub items: &'a [Value],
    pub hook_name: &'a str,
    pub target_name: &'a str,
    pub app_url: &'a str,
}

/// Compiled templates for every target. `Send + Sync`; share it in an `Arc`.
pub struct Renderer {
    env: Environment<'static>,
    targets: BTreeMap<String, TargetEntry>,
    fallbacks: AtomicU64,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("targets", &self.targets.keys().collect::<Vec<_>>())
            .field("fallbacks", &self.fallback_count())
            .finish()
    }
}

impl Renderer {
    /// Compile the built-in template of every kind (embedded with `include_str!` from
    /// `templates/`) and each target's user template (`template = "path"`, resolved with
    /// [`Settings::resolve`]). A user template that does not compile is an error naming the
    /// file and line.
    pub fn new(settings: &Settings) -> Result<Renderer, RenderError> {
        // Read every user template first: escaping is decided per template name when it is
        // compiled, and it depends on the kind of target using the file (JSON for all kinds
        // but console), not on its extension.
        let mut users = Vec::new();
        for (name, t) in &settings.targets {
            if let Some(p) = &t.template {
                let (path, source) = read_template(settings, name, p)?;
                let json = t.kind.spec().output() == Output::HttpJson;
                users.push((name.clone(), path, source, json));
            }
        }
        let mut digests = BTreeMap::new();
        for (name, t) in &settings.targets {
            if let Some(p) = &t.digest_template {
                let (path, source) = read_template(settings, name, p)?;
                digests.insert(
                    name.clone(),
                    (format!("{} (digest)", path.display()), source),
                );
            }
        }
        let json_paths: HashSet<PathBuf> =
            users.iter().filter(|u| u.3).map(|u| u.1.clone()).collect();
        let mut json_names = HashSet::new();
        let mut user_names = BTreeMap::new();
        let mut sources = BTreeMap::new();
        for (target, path, source, json) in users {
            let mut tname = path.display().to_string();
            // The same file used by a console target and a JSON target needs two compiled
            // copies with different escaping.
            if !json && json_paths.contains(&path) {
                tname.push_str(" (as text)");
            }
            if json {
                json_names.insert(tname.clone());
            }
            user_names.insert(target, tname.clone());
            sources.insert(tname, source);
        }

        for (tname, _) in digests.values() {
            json_names.insert(tname.clone());
        }
        let mut env = Environment::new();
        let json_names = Arc::new(json_names);
        env.set_auto_escape_callback(move |name| {
            if (name.starts_with("builtin/") && name.ends_with(".json.j2"))
                || json_names.contains(name)
            {
                AutoEscape::Json
            } else {
                AutoEscape::None
            }
        });
        // Alerts differ in which optional fields they carry (SEKOIA: "any field may be
        // missing"); `alert.custom_status.label` on an alert without one must read as
        // undefined, not abort the message.
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        // Block tags do not leave blank lines behind: matters for the console template.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(TEMPLATE_FUEL));
        filters::register(&mut env);

        for kind in TargetKind::ALL {
            let (name, source) = builtin_template(kind);
            env.add_template(name, source)
                .map_err(|e| RenderError::from_template(name, &e, true))?;
            if let Some((name, source)) = kind.spec().builtin_digest_template() {
                env.add_template(name, source)
                    .map_err(|e| RenderError::from_template(name, &e, true))?;
            }
        }
        for (tname, source) in digests.values() {
            env.add_template_owned(tname.clone(), source.clone())
                .map_err(|e| RenderError::from_template(tname, &e, true))?;
        }
        for (tname, source) in sources {
            env.add_template_owned(tname.clone(), source)
                .map_err(|e| RenderError::from_template(&tname, &e, true))?;
        }

        let targets = settings
            .targets
            .iter()
            .map(|(name, t)| {
                let entry = TargetEntry {
                    kind: t.kind,
                    user_template: user_names.get(name).cloned(),
                    context_keys: t
                        .kind
                        .spec()
                        .context_keys()
                        .iter()
                        .filter_map(|k| t.extra(k).map(|v| (*k, v.to_string())))
                        .collect(),
                    digest_template: digests.get(name).map(|d| d.0.clone()),
                };
                (name.clone(), entry)
            })
            .collect();
        Ok(Renderer {
            env,
            targets,
            fallbacks: AtomicU64::new(0),
        })
    }

    /// Render for the named target. If the user template errors at run time, renders invalid
    /// JSON, or exceeds a hard limit, fall back to the built-in template of that kind, log
    /// the failure with the template path (never the target URL), count it, and return Ok
    /// with `fallback: Some(reason)`. Err only if even the built-in fails.
    pub fn render(&self, target_name: &str, input: &RenderInput) -> Result<Rendered, RenderError> {
        let entry = self.entry(target_name)?;
        let ctx = context(input, target_name, entry);
        let builtin = builtin_template(entry.kind).0;
        self.render_with_fallback(
            target_name,
            entry,
            entry.user_template.as_deref(),
            Some(builtin),
            &ctx,
        )
    }

    /// The user template's output, else (it failed: logged, counted, reason returned) the
    /// built-in's; Err when neither renders.
    fn render_with_fallback(
        &self,
        target_name: &str,
        entry: &TargetEntry,
        user: Option<&str>,
        builtin: Option<&str>,
        ctx: &minijinja::Value,
    ) -> Result<Rendered, RenderError> {
        let mut fallback = None;
        if let Some(user) = user {
            match self.render_template(user, entry.kind, ctx, false) {
                Ok(body) => {
                    return Ok(Rendered {
                        body,
                        fallback: None,
                    })
                }
                Err(err) => {
                    self.fallbacks.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        target_name,
                        kind = %entry.kind,
                        template = %user,
                        error = %err,
                        "user template failed; the built-in template is used for this message"
                    );
                    fallback = Some(err);
                }
            }
        }
        let Some(builtin) = builtin else {
            // No built-in to fall back to (a digest of a kind without one).
            return Err(fallback.unwrap_or_else(|| {
                RenderError::UnknownTarget(format!("{target_name} (no template)"))
            }));
        };
        let body = self
            .render_template(builtin, entry.kind, ctx, true)
            .map_err(|source| RenderError::Builtin {
                kind: entry.kind,
                source: Box::new(source),
            })?;
        Ok(Rendered {
            body,
            fallback: fallback.map(|e| e.to_string()),
        })
    }

    /// Render a storm digest for the named target: its `digest_template`, falling back to the
    /// kind's built-in digest (like [`Renderer::render`]); Err when neither renders.
    pub fn render_digest(
        &self,
        target_name: &str,
        input: &DigestInput,
    ) -> Result<Rendered, RenderError> {
        let entry = self.entry(target_name)?;
        let ctx = digest_context(input, target_name, entry);
        let builtin = entry.kind.spec().builtin_digest_template().map(|t| t.0);
        self.render_with_fallback(
            target_name,
            entry,
            entry.digest_template.as_deref(),
            builtin,
            &ctx,
        )
    }

    /// A digest with the target's own digest template, failures reported (for `check` and
    /// `render --digest`).
    pub fn render_digest_strict(
        &self,
        target_name: &str,
        input: &DigestInput,
    ) -> Result<String, RenderError> {
        let entry = self.entry(target_name)?;
        let ctx = digest_context(input, target_name, entry);
        match (
            &entry.digest_template,
            entry.kind.spec().builtin_digest_template(),
        ) {
            (Some(user), _) => self.render_template(user, entry.kind, &ctx, false),
            (None, Some((builtin, _))) => self.render_template(builtin, entry.kind, &ctx, true),
            (None, None) => Err(RenderError::UnknownTarget(format!(
                "{target_name} (kind {} has no digest template)",
                entry.kind
            ))),
        }
    }

    /// Whether the target has a digest template (its own or the kind's).
    pub fn has_digest(&self, target_name: &str) -> bool {
        self.targets.get(target_name).is_some_and(|e| {
            e.digest_template.is_some() || e.kind.spec().builtin_digest_template().is_some()
        })
    }

    /// Render with the target's own template and report its failure instead of falling back:
    /// for `check` and `render`, which must show template problems before the server runs.
    pub fn render_strict(
        &self,
        target_name: &str,
        input: &RenderInput,
    ) -> Result<String, RenderError> {
        let entry = self.entry(target_name)?;
        let ctx = context(input, target_name, entry);
        match &entry.user_template {
            Some(user) => self.render_template(user, entry.kind, &ctx, false),
            None => self.render_template(builtin_template(entry.kind).0, entry.kind, &ctx, true),
        }
    }

    /// Name of the template a target uses: the resolved path of its user template, or the
    /// built-in's name (`builtin/slack.json.j2`).
    pub fn template_name(&self, target_name: &str) -> Option<String> {
        self.targets.get(target_name).map(entry_template_name)
    }

    fn entry(&self, target_name: &str) -> Result<&TargetEntry, RenderError> {
        self.targets
            .get(target_name)
            .ok_or_else(|| RenderError::UnknownTarget(target_name.to_string()))
    }

    /// The raw output of the target's own template, before any parsing, check or limit: for
    /// `check`, which reports what the relay would otherwise cut or reject silently.
    pub fn render_raw(
        &self,
        target_name: &str,
        input: &RenderInput,
    ) -> Result<String, RenderError> {
        let entry = self.entry(target_name)?;
        let name = entry_template_name(entry);
        let ctx = context(input, target_name, entry);
        self.env
            .get_template(&name)
            .and_then(|t| t.render(&ctx))
            .map_err(|e| RenderError::from_template(&name, &e, false))
    }

    /// Number of fallbacks so far (for metrics).
    pub fn fallback_count(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// Kind of a configured target.
    pub fn target_kind(&self, target_name: &str) -> Option<TargetKind> {
        self.targets.get(target_name).map(|t| t.kind)
    }

    /// Render one template and turn its output into a body the target accepts.
    ///
    /// Field limits are always applied. Over the hard size limit, the built-in template's
    /// output is shrunk (its size comes from alert data, and it must go out); a user
    /// template's output is rejected instead, so the caller falls back to the built-in.
    fn render_template(
        &self,
        name: &str,
        kind: TargetKind,
        ctx: &minijinja::Value,
        builtin: bool,
    ) -> Result<String, RenderError> {
        let template = self
            .env
            .get_template(name)
            .map_err(|e| RenderError::from_template(name, &e, false))?;
        let out = template
            .render(ctx)
            .map_err(|e| RenderError::from_template(name, &e, false))?;
        let limit = max_body_bytes(kind);
        if kind.spec().output() == Output::StdoutText {
            let out = text::sanitize_terminal(out.trim_end()).into_owned();
            if out.len() > limit && !builtin {
                return Err(RenderError::TooLarge {
                    template: name.to_string(),
                    kind,
                    size: out.len(),
                    limit,
                });
            }
            return Ok(truncate_bytes(&out, limit).into_owned());
        }
        let mut body: Value = serde_json::from_str(&out).map_err(|e| RenderError::InvalidJson {
            template: name.to_string(),
            line: e.line(),
            column: e.column(),
            detail: e.to_string(),
        })?;
        limits::check_envelope(kind, &body).map_err(|detail| RenderError::Envelope {
            template: name.to_string(),
            kind,
            detail,
        })?;
        enforce_field_limits(kind, &mut body);
        let too_large = |size| RenderError::TooLarge {
            template: name.to_string(),
            kind,
            size,
            limit,
        };
        if builtin {
            shrink_to_fit(&mut body, limit).map_err(too_large)
        } else {
            let text = serde_json::to_string(&body).map_err(|e| RenderError::Runtime {
                template: name.to_string(),
                line: None,
                detail: e.to_string(),
            })?;
            if text.len() > limit {
                Err(too_large(text.len()))
            } else {
                Ok(text)
            }
        }
    }
}

/// A target's template file, resolved against the config's directory.
fn read_template(
    settings: &Settings,
    target: &str,
    file: &std::path::Path,
) -> Result<(PathBuf, String), RenderError> {
    let path = settings.resolve(file);
    std::fs::read_to_string(&path)
        .map(|source| (path.clone(), source))
        .map_err(|source| RenderError::Read {
            target: target.to_string(),
            path,
            source,
        })
}

fn entry_template_name(entry: &TargetEntry) -> String {
    entry
        .user_template
        .clone()
        .unwrap_or_else(|| builtin_template(entry.kind).0.to_string())
}

/// `{app_url}/operations/alerts/{short_id}` for alert events that carry a short id (so the
/// link exists even when enrichment failed); `None` for other events.
pub fn alert_link(event: &Value, app_url: &str) -> Option<String> {
    if event.get("type").and_then(Value::as_str) != Some("alert") {
        return None;
    }
    let short_id = event
        .get("attributes")
        .and_then(|a| a.get("short_id"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())?;
    Some(format!(
        "{}/operations/alerts/{}",
        app_url.trim_end_matches('/'),
        text::encode_path_segment(short_id)
    ))
}

/// The template context (README, "Templates" → "Context").
fn context(input: &RenderInput, target_name: &str, entry: &TargetEntry) -> minijinja::Value {
    let mut target = json!({"name": target_name, "kind": entry.kind.as_str()});
    if let Some(obj) = target.as_object_mut() {
        for (key, value) in &entry.context_keys {
            obj.insert(key.to_string(), Value::from(value.as_str()));
        }
    }
    // Serialized from references: building `context_json` first deep-copied the event and
    // the alert once more before MiniJinja copied them into its own values.
    minijinja::Value::from_serialize(ContextRef::new(input, &target))
}

/// [`context_json`] as borrowed data, for templates (same keys, same values).
#[derive(serde::Serialize)]
struct ContextRef<'a> {
    event: &'a Value,
    alert: Option<&'a Value>,
    enriched: bool,
    enrichment_error: Option<&'a str>,
    hook: HookRef<'a>,
    target: &'a Value,
    links: LinksRef,
    sekoia: SekoiaRef<'a>,
    changes: &'a [String],
}

#[derive(serde::Serialize)]
struct HookRef<'a> {
    name: &'a str,
}

#[derive(serde::Serialize)]
struct LinksRef {
    alert: Option<String>,
}

#[derive(serde::Serialize)]
struct SekoiaRef<'a> {
    app_url: &'a str,
}

impl<'a> ContextRef<'a> {
    fn new(input: &'a RenderInput<'a>, target: &'a Value) -> Self {
        ContextRef {
            event: input.event,
            alert: input.alert,
            enriched: input.alert.is_some(),
            enrichment_error: input.enrichment_error,
            hook: HookRef {
                name: input.hook_name,
            },
            target,
            links: LinksRef {
                alert: alert_link(input.event, input.app_url),
            },
            sekoia: SekoiaRef {
                app_url: input.app_url.trim_end_matches('/'),
            },
            changes: input.changes,
        }
    }
}

/// One alert of a digest, as its template sees it.
///
/// Rule: the short id from the event (else the alert), title, rule, entity and status names
/// from the alert when it was fetched (else none: the template shows the short id), the
/// urgency as a number, the alert's link (or SEKOIA.IO's alert list), and the changes of its
/// collapsed events. Reason: a digest line must stand for its alert even without details.
pub fn digest_item(
    event: &Value,
    alert: Option<&Value>,
    changes: &[String],
    app_url: &str,
) -> Value {
    let at = |v: Option<&Value>, p: &str| {
        v.and_then(|v| v.pointer(p))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let short_id = at(Some(event), "/attributes/short_id")
        .or_else(|| at(alert, "/short_id"))
        .unwrap_or_default();
    let urgency = alert.and_then(crate::routing::policy::alert_urgency);
    let link = alert_link(event, app_url)
        .unwrap_or_else(|| format!("{}/operations/alerts", app_url.trim_end_matches('/')));
    json!({
        "short_id": short_id,
        "title": at(alert, "/title"),
        "rule": at(alert, "/rule/name"),
        "entity": at(alert, "/entity/name"),
        "status": at(alert, "/status/name"),
        "urgency": urgency,
        "action": at(Some(event), "/action"),
        "link": link,
        "changes": changes,
    })
}

/// The digest template context (README, "Storms").
fn digest_context(input: &DigestInput, target_name: &str, entry: &TargetEntry) -> minijinja::Value {
    let mut target = json!({"name": target_name, "kind": entry.kind.as_str()});
    if let Some(obj) = target.as_object_mut() {
        for (key, value) in &entry.context_keys {
            obj.insert(key.to_string(), Value::from(value.as_str()));
        }
    }
    let app_url = input.app_url.trim_end_matches('/');
    minijinja::Value::from_serialize(json!({
        "digest": {
            "count": input.items.len(),
            "items": input.items,
            "link": format!("{app_url}/operations/alerts"),
        },
        "event": {"type": crate::store::DIGEST_EVENT_TYPE, "action": "digest"},
        "hook": {"name": input.hook_name},
        "target": target,
        "sekoia": {"app_url": app_url},
    }))
}

/// The template context as JSON, with `target` given by the caller. Templates and
/// `when` expressions (routing) see exactly the same variables.
pub fn context_json(input: &RenderInput, target: Value) -> Value {
    json!({
        "event": input.event,
        "alert": input.alert,
        "enriched": input.alert.is_some(),
        "enrichment_error": input.enrichment_error,
        "hook": {"name": input.hook_name},
        "target": target,
        "links": {"alert": alert_link(input.event, input.app_url)},
        "sekoia": {"app_url": input.app_url.trim_end_matches('/')},
        "changes": input.changes,
    })
}

#[cfg(test)]
mod tests;
