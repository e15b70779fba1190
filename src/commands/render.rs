//! `render --hook NAME [--event FILE] [--alert FILE] [--unenriched]`: what the relay would
//! post for an event, offline.
//!
//! No network at all: the alert comes from `--alert` or the built-in sample, never from the
//! Alert API, and nothing is sent. The routing rules of the hook are applied, so only the
//! targets the event would reach are printed. Each body goes to stdout (one per target, exactly
//! as it would be posted); what happened to each target goes to stderr.

use std::path::PathBuf;

use serde_json::Value;

use super::{list, read_json, samples, CommandError};
use crate::configuration::Settings;
use crate::domain::WebhookEvent;
use crate::render::{RenderInput, Renderer};
use crate::routing::Router;

/// The enrichment error shown with `--unenriched`.
pub const UNENRICHED_REASON: &str = "not fetched (sekoia-relay render --unenriched)";

#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    pub hook: String,
    pub event: Option<PathBuf>,
    pub alert: Option<PathBuf>,
    pub unenriched: bool,
    /// Render a sample storm digest for each target of the hook instead of one event.
    pub digest: bool,
}

/// One target's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetOutput {
    /// The exact body, and the reason the user template was replaced by the built-in, if it was.
    Body {
        target: String,
        kind: String,
        template: String,
        body: String,
        fallback: Option<String>,
    },
    NotRouted {
        target: String,
        reason: String,
    },
    /// A `when` of the hook fails on this event (e.g. compares a number with a string): the
    /// server counts it as true (fail open) and logs a warning.
    WhenFails {
        message: String,
    },
}

/// Route and render; `Err` only when the command cannot run (unknown hook, unreadable file).
pub fn run(settings: &Settings, opts: &RenderOptions) -> Result<Vec<TargetOutput>, CommandError> {
    let hook = settings
        .hook_by_name(&opts.hook)
        .ok_or_else(|| CommandError::UnknownHook {
            name: opts.hook.clone(),
            known: list(settings.hooks.iter().map(|h| &h.name)),
        })?;
    let renderer = Renderer::new(settings)?;
    if opts.digest {
        return Ok(digests(settings, &renderer, hook));
    }
    let router = Router::new(settings)?;

    let event_json = match &opts.event {
        Some(p) => read_json(p)?,
        None => samples::parse(samples::EVENT_CREATED),
    };
    let event = WebhookEvent::from_json(event_json).map_err(|e| CommandError::Event {
        path: opts.event.clone().unwrap_or_else(|| "sample".into()),
        detail: e.to_string(),
    })?;
    // The server only enriches alert events that are not deletions: mirror that.
    let wants_alert = event.has_alert_to_fetch() && !opts.unenriched;
    let alert: Option<Value> = match (&opts.alert, wants_alert) {
        (Some(p), true) => Some(read_json(p)?),
        (None, true) => Some(samples::parse(samples::ALERT)),
        (_, false) => None,
    };
    let input = RenderInput {
        changes: &[],
        event: &event.json,
        alert: alert.as_ref(),
        enrichment_error: opts.unenriched.then_some(UNENRICHED_REASON),
        hook_name: &hook.name,
        target_name: "",
        app_url: hook.app_url(&settings.sekoia),
    };
    let selection = router.select(&hook.name, &input);
    let mut out: Vec<TargetOutput> = router
        .evaluation_errors(&hook.name, &input)
        .into_iter()
        .map(|message| TargetOutput::WhenFails { message })
        .collect();
    for target in &selection.selected {
        let input = RenderInput {
            changes: &[],
            target_name: target,
            ..input
        };
        let rendered = renderer.render(target, &input)?;
        out.push(TargetOutput::Body {
            target: target.clone(),
            kind: renderer
                .target_kind(target)
                .map(|k| k.to_string())
                .unwrap_or_default(),
            template: renderer.template_name(target).unwrap_or_default(),
            body: rendered.body,
            fallback: rendered.fallback,
        });
    }
    for (target, reason) in selection.skipped {
        out.push(TargetOutput::NotRouted { target, reason });
    }
    Ok(out)
}

/// `--digest`: a sample digest for each target of the hook that has a digest template.
fn digests(
    settings: &Settings,
    renderer: &Renderer,
    hook: &crate::configuration::HookSettings,
) -> Vec<TargetOutput> {
    let app_url = hook.app_url(&settings.sekoia);
    let items = samples::digest_items(app_url);
    let mut out = Vec::new();
    for target in hook.candidate_targets() {
        let digest_after = settings
            .targets
            .get(&target)
            .map_or(0, |t| t.digest_after());
        if !renderer.has_digest(&target) || digest_after == 0 {
            out.push(TargetOutput::NotRouted {
                target,
                reason: "no digests for this target (digest_after = 0, or a kind without a built-in digest and no digest_template)".into(),
            });
            continue;
        }
        let input = crate::render::DigestInput {
            items: &items,
            hook_name: &hook.name,
            target_name: &target,
            app_url,
        };
        match renderer.render_digest(&target, &input) {
            Ok(rendered) => out.push(TargetOutput::Body {
                kind: renderer
                    .target_kind(&target)
                    .map(|k| k.to_string())
                    .unwrap_or_default(),
                template: "digest".into(),
                target,
                body: rendered.body,
                fallback: rendered.fallback,
            }),
            Err(e) => out.push(TargetOutput::WhenFails {
                message: format!("target {target}: {e}"),
            }),
        }
    }
    out
}

/// Write the results: bodies to `stdout`, one per line; notes to `stderr`. Returns false when
/// a user template failed (its built-in replacement is printed, as the server would send it).
pub fn print(
    results: &[TargetOutput],
    stdout: &mut impl std::io::Write,
    stderr: &mut impl std::io::Write,
) -> std::io::Result<bool> {
    let mut ok = true;
    if results.is_empty() {
        writeln!(stderr, "==> the hook has no targets")?;
    }
    for r in results {
        match r {
            TargetOutput::Body {
                target,
                kind,
                template,
                body,
                fallback,
            } => {
                writeln!(
                    stderr,
                    "==> target {target} ({kind}, {template}): {} bytes",
                    body.len()
                )?;
                if let Some(reason) = fallback {
                    ok = false;
                    writeln!(
                        stderr,
                        "!!  {reason}\n!!  the server would send the built-in {kind} template instead (below)"
                    )?;
                }
                stderr.flush()?;
                writeln!(stdout, "{body}")?;
                stdout.flush()?;
            }
            TargetOutput::NotRouted { target, reason } => {
                writeln!(stderr, "==> target {target}: not routed ({reason})")?;
            }
            TargetOutput::WhenFails { message } => {
                ok = false;
                writeln!(stderr, "!!  routing: {message}")?;
            }
        }
    }
    Ok(ok)
}
