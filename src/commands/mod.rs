//! What the commands do (their clap types are in [`crate::cli`]). Those that work on
//! templates and routing before SEKOIA.IO ever calls: `check` ([`check`], and [`verify`] for
//! `check --online`), `render` ([`render`]) and `send-test` ([`send_test`]), with the sample
//! events and alerts they use ([`samples`], embedded in the binary). And the operator's:
//! `dead-letters` ([`dead_letters`]), `new-hook` and `urls` ([`self::hooks`]), `healthcheck`
//! ([`healthcheck`]).

pub mod check;
pub mod dead_letters;
pub mod healthcheck;
pub mod hooks;
pub mod render;
pub mod samples;
pub mod send_test;
pub mod store;
pub mod verify;

use std::path::PathBuf;

/// Why a command could not run at all (as opposed to the problems `check` reports).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Render(#[from] crate::render::RenderError),
    #[error("routing: {0}")]
    Routing(#[from] crate::routing::RoutingError),
    #[error("no hook named {name:?} (hooks in the config: {known})")]
    UnknownHook { name: String, known: String },
    #[error("no target named {name:?} (targets in the config: {known})")]
    UnknownTarget { name: String, known: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {detail}")]
    Json { path: PathBuf, detail: String },
    #[error("{path} is not a SEKOIA.IO version-2 event: {detail}")]
    Event { path: PathBuf, detail: String },
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// `a, b, c`, or `none`.
fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Read a JSON file given on the command line.
fn read_json(path: &std::path::Path) -> Result<serde_json::Value, CommandError> {
    let text = std::fs::read_to_string(path).map_err(|source| CommandError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| CommandError::Json {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

/// An error and its causes on one line, `outer: cause: root`, each cause said once.
///
/// Rule: a cause whose text is already part of what was printed is skipped. Reason: many
/// errors put their source in their own message *and* expose it as `source()`, so printing
/// the chain naively says `… No such file or directory (os error 2): No such file or
/// directory (os error 2)`.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut next = Some(e);
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chains_say_each_cause_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        // The source in the message and as source(): said once.
        let bind = crate::startup::StartupError::Bind {
            addr: "127.0.0.1:8000".into(),
            source: io(),
        };
        assert_eq!(
            error_chain(&bind),
            "cannot listen on 127.0.0.1:8000: No such file or directory"
        );
        // The source only as source(): still said.
        let read = crate::configuration::ConfigError::Read {
            path: "c.toml".into(),
            source: io(),
        };
        assert_eq!(
            error_chain(&read),
            "cannot read config file c.toml: No such file or directory"
        );
        let wrapped = anyhow::Error::new(read).context("cannot load c.toml");
        assert_eq!(
            error_chain(wrapped.as_ref()),
            "cannot load c.toml: cannot read config file c.toml: No such file or directory"
        );
    }
}
