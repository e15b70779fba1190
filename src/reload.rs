//! Reload on SIGHUP: load and validate the new config and compile its templates *first*; only
//! then swap it in. A config that fails either step changes nothing, so a typo in a reload
//! never takes the relay down or stops deliveries.
//!
//! Queued work is untouched: deliveries live in the store, and the workers read the current
//! [`Runtime`] at each claim. Settings read once at startup (listener, store, HTTP clients,
//! worker pool) keep their old values until a restart, and the reload says so.

use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use secrecy::ExposeSecret;
use tokio::sync::Notify;

use crate::configuration::{self, ConfigError, Settings};
use crate::delivery::Deliverer;
use crate::metrics::Metrics;
use crate::state::{Runtime, RuntimeError};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Templates or routing expressions that do not compile.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// What a successful reload changed that only a restart applies.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Keys whose new value is ignored until the next start, e.g. `server.listen`.
    pub restart_needed: Vec<&'static str>,
}

/// Swaps a new configuration into a running [`crate::startup::Application`]. Cheap to clone.
#[derive(Clone)]
pub struct ReloadHandle {
    pub(crate) runtime: Arc<ArcSwap<Runtime>>,
    pub(crate) deliverer: Arc<Deliverer>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) wake: Arc<Notify>,
    /// The settings the process started with: restart-only keys keep these values, so a
    /// reload is compared with them (not with the last reload, which may not have applied).
    pub(crate) started: Arc<Settings>,
    /// Two reloads at once would race on "compare with the old config": one at a time.
    pub(crate) lock: Arc<Mutex<()>>,
}

impl ReloadHandle {
    /// Reload from `path`, log the outcome, and count it in the metrics. On error the running
    /// config keeps serving.
    pub fn reload(&self, path: &Path) -> Result<Reloaded, ReloadError> {
        let result = configuration::load(path)
            .map_err(ReloadError::from)
            .and_then(|settings| self.apply(settings));
        self.metrics.reload(result.is_ok());
        match &result {
            Ok(_) => {}
            Err(e) => tracing::error!(
                config = %path.display(),
                error = %e,
                "reload failed: still serving the previous configuration"
            ),
        }
        result
    }

    /// Compile `settings` and swap them in (no file access: tests and `reload` share this).
    pub fn apply(&self, settings: Settings) -> Result<Reloaded, ReloadError> {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        // Compiling first is what keeps a bad config from replacing a good one.
        let new = Runtime::build(settings)?;
        let old = self.runtime.load_full();
        let restart_needed = restart_needed(&self.started, &new.settings);
        for key in &restart_needed {
            tracing::warn!(
                key,
                "reload: a changed setting needs a restart to take effect; the old value stays in use"
            );
        }
        let gone_targets: Vec<&String> = old
            .settings
            .targets
            .keys()
            .filter(|t| !new.settings.targets.contains_key(*t))
            .collect();
        if !gone_targets.is_empty() {
            tracing::warn!(
                targets = ?gone_targets,
                "reload: targets removed; their queued deliveries stay in the store and resume if the target is configured again"
            );
        }
        let gone_hooks: Vec<&str> = old
            .settings
            .hooks
            .iter()
            .filter(|h| new.settings.hook_by_name(&h.name).is_none())
            .map(|h| h.name.as_str())
            .collect();
        if !gone_hooks.is_empty() {
            tracing::warn!(
                hooks = ?gone_hooks,
                "reload: hooks removed; their deliveries not yet rendered become dead letters (see `dead-letters list`)"
            );
        }
        let (hooks, targets) = (new.settings.hooks.len(), new.settings.targets.len());
        self.metrics.retire_renderer(old.renderer.fallback_count());
        self.runtime.store(Arc::new(new));
        // Rate limits may have changed: per-target pacing starts afresh from the new values.
        self.deliverer.reset_targets();
        // New targets may have work waiting: look now rather than at the next poll.
        self.wake.notify_one();
        tracing::info!(hooks, targets, "configuration reloaded");
        Ok(Reloaded { restart_needed })
    }
}

/// The keys read once at startup whose value differs between `old` and `new`.
///
/// Rule: everything the HTTP handlers and delivery workers read through the current
/// `Runtime` (hooks, targets, routes, templates, delivery retry policy, API URL and key,
/// trusted proxies, body limit) applies at once; what was used to build long-lived objects
/// (the listener, the store connection, the HTTP clients, the worker pool, the logger) does not.
pub fn restart_needed(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let (os, ns) = (&old.server, &new.server);
    let (ok, nk) = (&old.sekoia, &new.sekoia);
    let checks = [
        ("server.listen", os.listen != ns.listen),
        (
            "server.metrics_listen",
            os.metrics_listen != ns.metrics_listen,
        ),
        ("server.log_format", os.log_format != ns.log_format),
        (
            "server.shutdown_grace_secs",
            os.shutdown_grace_secs != ns.shutdown_grace_secs,
        ),
        (
            "store.path",
            old.resolve(&old.store.path) != new.resolve(&new.store.path),
        ),
        ("store.sync", old.store.sync != new.store.sync),
        (
            // Compared without ever printing it: the URL holds the password.
            "store.url",
            old.store.url.expose_secret() != new.store.url.expose_secret(),
        ),
        (
            "store.pool_size",
            old.store.pool_size != new.store.pool_size,
        ),
        (
            "store.lease_secs",
            old.store.lease_secs != new.store.lease_secs,
        ),
        (
            "delivery.concurrency",
            old.delivery.concurrency != new.delivery.concurrency,
        ),
        (
            "delivery.threads",
            old.delivery.threads != new.delivery.threads,
        ),
        (
            "delivery.timeout_secs",
            old.delivery.timeout_secs != new.delivery.timeout_secs,
        ),
        ("sekoia.timeout_secs", ok.timeout_secs != nk.timeout_secs),
        (
            "sekoia.cache_ttl_secs",
            ok.cache_ttl_secs != nk.cache_ttl_secs,
        ),
        (
            "sekoia.max_requests_per_sec",
            ok.max_requests_per_sec != nk.max_requests_per_sec,
        ),
        (
            "sekoia.enrich_deadline_secs",
            ok.enrich_deadline_secs != nk.enrich_deadline_secs,
        ),
    ];
    checks
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(key, _)| key)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Settings {
        configuration::load_str(
            text,
            Path::new("config.toml"),
            Path::new("/etc/relay"),
            &Default::default(),
        )
        .expect("valid")
    }

    #[test]
    fn startup_only_keys_are_reported() {
        let old = settings("[server]\nlisten = \"127.0.0.1:8000\"\n");
        // Live settings (retry policy, proxies) do not need a restart.
        let same = settings(
            "[server]\nlisten = \"127.0.0.1:8000\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n[delivery]\nmax_attempts = 3\n",
        );
        assert!(restart_needed(&old, &same).is_empty());
        let moved = settings(
            "[server]\nlisten = \"0.0.0.0:9000\"\n[store]\npath = \"other.db\"\n[delivery]\nconcurrency = 4\nthreads = 3\n",
        );
        assert_eq!(
            restart_needed(&old, &moved),
            vec![
                "server.listen",
                "store.path",
                "delivery.concurrency",
                "delivery.threads"
            ]
        );
    }
}
