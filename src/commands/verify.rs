//! `check --online` and the startup key check: call the Alert API once per distinct API URL
//! and key ([`crate::sekoia::verify`]) and say, per key, whether enrichment will work.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::check::Report;
use crate::configuration::Settings;
use crate::secrets::redact_url;
use crate::sekoia::verify::{region_of, verify_key, KeyState};

/// One distinct (API URL, key) pair of the config and what the API said about it.
#[derive(Debug, Clone)]
pub struct KeyCheck {
    /// Which hooks use this pair (`[sekoia]` when none overrides it).
    pub used_by: String,
    pub hooks: usize,
    /// `scheme://host` of the API URL: the only part shown.
    pub api: String,
    pub state: KeyState,
    /// Set when `api_url` and `app_url` point at two different regions.
    pub region_note: Option<String>,
}

impl KeyCheck {
    /// One line for `check` and the logs; never contains the key.
    pub fn line(&self) -> String {
        let note = self
            .region_note
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        format!(
            "SEKOIA.IO API key of {} at {}: {}{note}",
            self.used_by, self.api, self.state
        )
    }
}

struct Pair<'a> {
    api_url: &'a str,
    app_url: &'a str,
    key: &'a SecretString,
    hooks: Vec<&'a str>,
}

/// The distinct (API URL, key) pairs the hooks use, each with its hooks, in config order.
/// `[sekoia]` alone when there are no hooks.
fn pairs(settings: &Settings) -> Vec<Pair<'_>> {
    let mut out: Vec<Pair> = Vec::new();
    for h in &settings.hooks {
        let (api_url, key) = (h.api_url(&settings.sekoia), h.api_key(&settings.sekoia));
        match out
            .iter_mut()
            .find(|p| p.api_url == api_url && p.key.expose_secret() == key.expose_secret())
        {
            Some(p) => p.hooks.push(&h.name),
            None => out.push(Pair {
                api_url,
                app_url: h.app_url(&settings.sekoia),
                key,
                hooks: vec![&h.name],
            }),
        }
    }
    if out.is_empty() {
        out.push(Pair {
            api_url: &settings.sekoia.api_url,
            app_url: &settings.sekoia.app_url,
            key: &settings.sekoia.api_key,
            hooks: Vec::new(),
        });
    }
    out
}

/// A note when `api_url` and `app_url` are both SEKOIA.IO hosts of different regions.
///
/// Rule: both URLs name a known region and the regions differ. Reason: a key works in the
/// region it was created in only; links built from `app_url` and calls to `api_url` then
/// disagree, and the API answers 401 for a key of the other region.
pub fn region_mismatch(api_url: &str, app_url: &str) -> Option<String> {
    match (region_of(api_url), region_of(app_url)) {
        (Some(api), Some(app)) if api != app => Some(format!(
            "api_url is in region {api} but app_url in region {app}"
        )),
        _ => None,
    }
}

/// Call the API once per distinct pair, all at once.
pub async fn run(settings: &Settings) -> Vec<KeyCheck> {
    let timeout = Duration::from_secs(settings.sekoia.timeout_secs.max(1));
    let pairs = pairs(settings);
    let calls = pairs.iter().map(|p| verify_key(p.api_url, p.key, timeout));
    let states = futures_util::future::join_all(calls).await;
    pairs
        .iter()
        .zip(states)
        .map(|(p, state)| KeyCheck {
            used_by: if p.hooks.is_empty()
                || (p.api_url == settings.sekoia.api_url
                    && p.key.expose_secret() == settings.sekoia.api_key.expose_secret())
            {
                let hooks = if p.hooks.is_empty() {
                    String::new()
                } else {
                    format!(" (hooks {})", p.hooks.join(", "))
                };
                format!("[sekoia]{hooks}")
            } else {
                format!("hooks {}", p.hooks.join(", "))
            },
            hooks: p.hooks.len(),
            api: redact_url(p.api_url),
            state,
            region_note: region_mismatch(p.api_url, p.app_url),
        })
        .collect()
}

/// Add the online results to a `check` report: ok lines as notes, no key as a warning,
/// everything else as a problem (exit 1).
pub fn add_to_report(report: &mut Report, checks: &[KeyCheck]) {
    for c in checks {
        match (&c.state, &c.region_note) {
            (KeyState::Ok, None) => report.notes.push(c.line()),
            (KeyState::NoKey, _) | (KeyState::Ok, Some(_)) => report.warnings.push(c.line()),
            _ => report.problems.push(c.line()),
        }
    }
}

/// At startup: the same calls, one log line per key with the hook and target counts; a
/// warning unless the key works (no key at all is a choice, e.g. the quick start: info).
pub async fn log_at_startup(settings: Settings) {
    let targets = settings.targets.len();
    for c in run(&settings).await {
        let fine = matches!(c.state, KeyState::Ok | KeyState::NoKey) && c.region_note.is_none();
        if fine {
            tracing::info!(
                key_state = c.state.code(),
                api = %c.api,
                hooks = c.hooks,
                targets,
                "{}",
                c.line()
            );
        } else {
            tracing::warn!(
                key_state = c.state.code(),
                api = %c.api,
                hooks = c.hooks,
                targets,
                "{}",
                c.line()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::{load_str, Env};
    use std::path::Path;

    #[test]
    fn one_call_per_distinct_url_and_key() {
        let s = load_str(
            r#"
            [sekoia]
            api_key = "k1"
            [targets.out]
            kind = "console"
            [[hooks]]
            name = "a"
            id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
            targets = ["out"]
            [[hooks]]
            name = "b"
            id = "77a7472b-b43c-415d-b1ce-c135fb1dfb0e"
            targets = ["out"]
            [[hooks]]
            name = "c"
            id = "87a7472b-b43c-415d-b1ce-c135fb1dfb0e"
            targets = ["out"]
            api_key = "k2"
            [[hooks]]
            name = "d"
            id = "97a7472b-b43c-415d-b1ce-c135fb1dfb0e"
            targets = ["out"]
            api_key = "k2"
            api_url = "https://app.usa1.sekoia.io/api"
            "#,
            Path::new("c.toml"),
            Path::new("."),
            &Env::new(),
        )
        .expect("config");
        let p = pairs(&s);
        let hooks: Vec<Vec<&str>> = p.iter().map(|p| p.hooks.clone()).collect();
        assert_eq!(hooks, vec![vec!["a", "b"], vec!["c"], vec!["d"]]);
    }

    #[test]
    fn regions_that_disagree_are_noted() {
        assert!(region_mismatch("https://api.sekoia.io", "https://app.sekoia.io").is_none());
        assert!(region_mismatch(
            "https://app.usa1.sekoia.io/api",
            "https://app.usa1.sekoia.io"
        )
        .is_none());
        let n = region_mismatch("https://api.sekoia.io", "https://app.usa1.sekoia.io").unwrap();
        assert!(n.contains("fra1") && n.contains("usa1"), "{n}");
        assert!(region_mismatch("http://127.0.0.1:1", "https://app.usa1.sekoia.io").is_none());
    }
}
