//! Settings: `config.toml` → `${VAR}` expansion → `SEKOIA_RELAY__…` overrides → validation.
//!
//! Every startup error names the key (and the variable, for `${VAR}`) so the user knows what
//! to fix. Unknown keys are rejected: a typo must never silently disable a route.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::domain::TargetKind;
use crate::targets::Output;

mod loading;
#[cfg(test)]
mod tests;
mod validation;

pub use loading::*;

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "SEKOIA_RELAY_CONFIG";
/// Prefix of the scalar overrides, e.g. `SEKOIA_RELAY__SERVER__LISTEN`.
pub const OVERRIDE_PREFIX: &str = "SEKOIA_RELAY";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("environment variable {var} is not set (used by key `{key}`); set it or write ${{{var}:-default}}")]
    MissingVar { var: String, key: String },
    #[error("malformed variable reference in key `{key}`: {detail}")]
    BadReference { key: String, detail: String },
    #[error("invalid configuration: {0}")]
    Load(String),
    /// Every validation problem found, one sentence each (all are reported at once).
    #[error("invalid configuration: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub sekoia: SekoiaSettings,
    #[serde(default)]
    pub store: StoreSettings,
    #[serde(default)]
    pub delivery: DeliverySettings,
    #[serde(default)]
    pub targets: BTreeMap<String, TargetSettings>,
    #[serde(default)]
    pub hooks: Vec<HookSettings>,
    /// Directory of the config file; relative paths are resolved against it. Not a key.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    pub listen: String,
    pub public_url: String,
    pub max_body_bytes: usize,
    pub shutdown_grace_secs: u64,
    pub log_format: LogFormat,
    pub trusted_proxies: Vec<IpNet>,
    /// A second listener for `GET /metrics` only; empty = the main listener serves it.
    pub metrics_listen: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8000".into(),
            public_url: String::new(),
            max_body_bytes: 65536,
            shutdown_grace_secs: 10,
            log_format: LogFormat::Pretty,
            trusted_proxies: Vec::new(),
            metrics_listen: String::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SekoiaSettings {
    pub api_url: String,
    pub app_url: String,
    pub api_key: SecretString,
    pub timeout_secs: u64,
    pub cache_ttl_secs: u64,
    pub max_requests_per_sec: u32,
    pub enrich_deadline_secs: u64,
}

impl Default for SekoiaSettings {
    fn default() -> Self {
        Self {
            api_url: "https://api.sekoia.io".into(),
            app_url: "https://app.sekoia.io".into(),
            api_key: SecretString::from(String::new()),
            timeout_secs: 10,
            cache_ttl_secs: 60,
            max_requests_per_sec: 5,
            enrich_deadline_secs: 120,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    Full,
    Normal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    pub path: PathBuf,
    pub sync: SyncMode,
    pub dedup_window_secs: u64,
    pub retention_days: u64,
    /// `postgres://…`: the PostgreSQL store shared by replicas; empty = SQLite at `path`.
    /// A secret: it usually carries the password.
    pub url: SecretString,
    /// PostgreSQL connections per replica.
    pub pool_size: usize,
    /// How long a PostgreSQL claim stays with a replica that stopped renewing it.
    pub lease_secs: u64,
}

/// The default `[store] path`, also what "path not set" means when `url` is set.
pub const DEFAULT_STORE_PATH: &str = "data/relay.db";

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            path: PathBuf::from(DEFAULT_STORE_PATH),
            sync: SyncMode::Full,
            dedup_window_secs: 86400,
            retention_days: 7,
            url: SecretString::from(String::new()),
            pool_size: 16,
            lease_secs: 30,
        }
    }
}

impl StoreSettings {
    pub fn is_postgres(&self) -> bool {
        !self.url.expose_secret().trim().is_empty()
    }

    /// Problems of the `[store]` section.
    ///
    /// Rule: `url` and a non-default `path` together are an error naming both ways out; `url`
    /// must be a `postgres://` or `postgresql://` URL; `pool_size` and `lease_secs` ≥ 1.
    /// Reason: silently picking one store would leave the other one's queue undelivered, and
    /// the messages never quote the URL, which carries the password.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.is_postgres() {
            if self.path != Path::new(DEFAULT_STORE_PATH) {
                problems.push(format!(
                    "store.url (PostgreSQL) and store.path = {:?} (SQLite) are both set: keep url and remove path to use PostgreSQL (move the SQLite queue with `sekoia-relay store import --from {}`), or empty url to stay on SQLite",
                    self.path.display(),
                    self.path.display()
                ));
            }
            let url = self.url.expose_secret().trim();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                problems.push(
                    "store.url must start with postgres:// or postgresql:// (value not shown: it may hold a password)".into(),
                );
            }
            if self.pool_size == 0 {
                problems.push("store.pool_size must be ≥ 1".into());
            }
        }
        if self.lease_secs == 0 {
            problems.push("store.lease_secs must be ≥ 1".into());
        }
        problems
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// Optional cap on attempts; 0 (the default) = none: `max_age_secs` is the horizon.
    pub max_attempts: u32,
    pub max_age_secs: u64,
    /// Waits between attempts (`"5s"`, `"30m"`, …); the last one repeats until `max_age_secs`.
    #[serde(deserialize_with = "durations")]
    pub retry_schedule: Vec<std::time::Duration>,
    /// Replaced by `retry_schedule`; kept only to say so instead of "unknown key".
    #[serde(default)]
    pub backoff_initial_ms: Option<u64>,
    /// Longest `Retry-After` honoured.
    pub backoff_max_secs: u64,
    pub timeout_secs: u64,
    /// Most sends in flight per target.
    pub concurrency: usize,
    /// Threads that run deliveries; 0 = [`crate::delivery::policy::delivery_threads`] decides.
    pub threads: usize,
}

impl DeliverySettings {
    /// `retry_schedule` as a retry policy, jittered within half a step (see
    /// [`crate::retry::Jitter::Half`]).
    pub fn retry_policy(&self) -> crate::retry::RetryPolicy {
        crate::retry::RetryPolicy::new(self.retry_schedule.clone(), crate::retry::Jitter::Half)
    }
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            max_attempts: 0,
            max_age_secs: 86400,
            retry_schedule: crate::delivery::policy::DEFAULT_RETRY_SCHEDULE.to_vec(),
            backoff_initial_ms: None,
            backoff_max_secs: 300,
            timeout_secs: 15,
            concurrency: 32,
            threads: 0,
        }
    }
}

/// `["5s", "2m", "1h30m"]` (humantime syntax) as durations, each problem named.
fn durations<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<std::time::Duration>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    raw.iter()
        .map(|s| {
            humantime::parse_duration(s).map_err(|e| {
                serde::de::Error::custom(format!(
                    "{s:?} is not a duration like \"5s\", \"10m\" or \"2h\": {e}"
                ))
            })
        })
        .collect()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSettings {
    pub kind: TargetKind,
    #[serde(default)]
    pub url: Option<SecretString>,
    #[serde(default)]
    pub template: Option<PathBuf>,
    #[serde(default)]
    pub rate_limit_per_sec: Option<u32>,
    // mattermost extras
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub icon_url: Option<String>,
    // webhook extras
    #[serde(default)]
    pub headers: BTreeMap<String, SecretString>,
    // pagerduty: the Events API v2 integration key, added to each event when it is sent
    #[serde(default)]
    pub routing_key: Option<SecretString>,
    // slack_app / mattermost_app (bot token, living messages; see crate::chatapp)
    /// The bot token (Slack `xoxb-…`, Mattermost bot or personal access token).
    #[serde(default)]
    pub token: Option<SecretString>,
    /// slack_app: the Web API base (default `https://slack.com/api`), for a proxy or a test.
    #[serde(default)]
    pub api_url: Option<String>,
    /// mattermost_app: the channel's id (26 characters).
    #[serde(default)]
    pub channel_id: Option<String>,
    /// slack_app: the app's signing secret, which the action endpoint verifies requests with.
    #[serde(default)]
    pub signing_secret: Option<SecretString>,
    /// What a later event of an alert does to its message: edit+reply (default), edit, reply, new.
    #[serde(default)]
    pub on_update: crate::chatapp::OnUpdate,
    /// Who may press the card's buttons (Slack user ids or names); empty: everyone in the channel.
    #[serde(default)]
    pub allowed_users: Vec<String>,
    // storm control (see delivery::storm)
    /// More waiting messages than this go out as digests; 0 = never. Default per kind.
    #[serde(default)]
    pub digest_after: Option<usize>,
    /// Alerts per digest message.
    #[serde(default = "default_digest_max_items")]
    pub digest_max_items: usize,
    /// A MiniJinja template for this target's digests (default: the kind's built-in).
    #[serde(default)]
    pub digest_template: Option<PathBuf>,
}

fn default_digest_max_items() -> usize {
    20
}

impl TargetSettings {
    pub fn rate_limit(&self) -> u32 {
        self.rate_limit_per_sec
            .unwrap_or_else(|| self.kind.spec().default_rate_limit_per_sec())
    }

    /// `digest_after`, or the kind's default.
    pub fn digest_after(&self) -> usize {
        self.digest_after
            .unwrap_or_else(|| self.kind.spec().default_digest_after())
    }

    /// Alerts per digest: `digest_max_items`, at most what one message of the kind holds.
    pub fn digest_items(&self) -> usize {
        self.digest_max_items
            .min(self.kind.spec().digest_items_cap())
    }

    /// Whether the storm planner runs for this target: only paced targets wait, so only
    /// they have storms to control (an unlimited target sends as fast as it answers).
    pub fn storm_control(&self) -> bool {
        self.rate_limit() > 0 && self.kind.spec().output() != crate::targets::Output::StdoutText
    }

    /// The value of a kind's extra key (`channel`, `username`, `icon_url`), if set and not
    /// empty; see [`crate::targets::TargetKindSpec::context_keys`].
    pub fn extra(&self, key: &str) -> Option<&str> {
        let value = match key {
            "channel" => &self.channel,
            "username" => &self.username,
            "icon_url" => &self.icon_url,
            _ => &None,
        };
        value.as_deref().filter(|v| !v.is_empty())
    }

    /// The URL messages are posted to: `url`, else the kind's default (PagerDuty's Events
    /// API); `None` for `console`.
    pub fn post_url(&self) -> Option<&str> {
        self.url
            .as_ref()
            .map(|u| u.expose_secret())
            .or(self.api_url.as_deref().filter(|u| !u.is_empty()))
            .or_else(|| self.kind.spec().default_url())
    }

    /// `scheme://host[:port]` of the target URL: the only part of it that may be logged.
    pub fn safe_host(&self) -> String {
        self.post_url()
            .map(crate::secrets::redact_url)
            .unwrap_or_else(|| "stdout".into())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSettings {
    pub name: String,
    pub id: String,
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub types: Vec<String>,
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default)]
    pub min_urgency: u32,
    #[serde(default)]
    pub when: String,
    #[serde(default)]
    pub allow_from: Vec<IpNet>,
    #[serde(default)]
    pub api_key: Option<SecretString>,
    #[serde(default)]
    pub api_url: Option<String>,
    #[serde(default)]
    pub app_url: Option<String>,
    #[serde(default)]
    pub routes: Vec<RouteSettings>,
}

impl HookSettings {
    /// Every target this hook may reach, in a stable order, without repeats: a target named by
    /// several routes still gets the event once (one delivery row per target, so one message).
    pub fn candidate_targets(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        self.targets
            .iter()
            .chain(self.routes.iter().flat_map(|r| r.targets.iter()))
            .filter(|t| seen.insert(t.as_str()))
            .cloned()
            .collect()
    }

    pub fn api_url<'a>(&'a self, sekoia: &'a SekoiaSettings) -> &'a str {
        self.api_url.as_deref().unwrap_or(&sekoia.api_url)
    }

    pub fn app_url<'a>(&'a self, sekoia: &'a SekoiaSettings) -> &'a str {
        self.app_url.as_deref().unwrap_or(&sekoia.app_url)
    }

    pub fn api_key<'a>(&'a self, sekoia: &'a SekoiaSettings) -> &'a SecretString {
        self.api_key.as_ref().unwrap_or(&sekoia.api_key)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    pub targets: Vec<String>,
    #[serde(default)]
    pub min_urgency: u32,
    #[serde(default)]
    pub when: String,
}
