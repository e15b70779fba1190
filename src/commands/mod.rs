//! The commands that work on templates and routing before SEKOIA.IO ever calls:
//! `check` ([`check`], and [`verify`] for `check --online`), `render` ([`render`]) and
//! `send-test` ([`send_test`]), with the sample events and alerts they use ([`samples`],
//! embedded in the binary).

pub mod check;
pub mod render;
pub mod samples;
pub mod send_test;
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
