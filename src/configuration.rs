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
}

impl TargetSettings {
    pub fn rate_limit(&self) -> u32 {
        self.rate_limit_per_sec
            .unwrap_or_else(|| self.kind.spec().default_rate_limit_per_sec())
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

/// Which file to load: `--config`, else `$SEKOIA_RELAY_CONFIG`, else `./config.toml`.
pub fn config_path(cli: Option<PathBuf>) -> PathBuf {
    cli.or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("config.toml"))
}

/// Whether `${VAR}`s in secret keys must resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secrets {
    /// Every variable must be set (the server, `check`).
    Resolve,
    /// A missing variable in a secret key (a target's `url` or `headers`, an `api_key`) reads
    /// as [`UNRESOLVED_SECRET`]: for commands that send nothing (`urls`, `dead-letters`,
    /// `render`, `healthcheck`), which must work on a host that does not hold the secrets.
    Skip,
    /// [`Secrets::Skip`] except for the keys of this target (`send-test TARGET` posts to that
    /// target only, and needs no other secret).
    SkipAllBut(String),
}

impl Secrets {
    /// Whether an unset variable in `key` may be left unresolved.
    fn may_skip(&self, key: &str) -> bool {
        match self {
            Secrets::Resolve => false,
            Secrets::Skip => is_secret_key(key),
            Secrets::SkipAllBut(target) => {
                is_secret_key(key) && !key.starts_with(&format!("targets.{target}."))
            }
        }
    }
}

/// What an unset secret variable reads as under [`Secrets::Skip`]: a URL that cannot resolve.
pub const UNRESOLVED_SECRET: &str = "https://unresolved-secret.invalid/";

/// Load, expand, override and validate the configuration at `path`.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    load_with_secrets(path, Secrets::Resolve)
}

/// [`load`], choosing whether secret variables must be set.
pub fn load_with_secrets(path: &Path, secrets: Secrets) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let env: Env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    load_str_with(&text, path, &base_dir, &env, secrets)
}

/// The process environment as seen by the loader (a map, so tests need not mutate the real one).
pub type Env = BTreeMap<String, String>;

/// The body of [`load`], with the file text and the environment passed in so it can be tested
/// without touching the process environment.
pub fn load_str(
    text: &str,
    path: &Path,
    base_dir: &Path,
    env: &Env,
) -> Result<Settings, ConfigError> {
    load_str_with(text, path, base_dir, env, Secrets::Resolve)
}

/// [`load_str`], choosing whether secret variables must be set.
pub fn load_str_with(
    text: &str,
    path: &Path,
    base_dir: &Path,
    env: &Env,
    secrets: Secrets,
) -> Result<Settings, ConfigError> {
    let lookup = |name: &str| env.get(name).cloned();
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut expander = Expander {
        env: &lookup,
        secrets,
        missing: Vec::new(),
        sources: Vec::new(),
    };
    expander.table(&mut doc, "")?;
    match expander.missing.len() {
        0 => {}
        // Every unset variable at once, one per line in `check`.
        1 => return Err(expander.missing.remove(0)),
        _ => {
            let all: Vec<String> = expander.missing.iter().map(ToString::to_string).collect();
            return Err(ConfigError::Invalid(all));
        }
    }
    let expanded = toml::to_string(&doc).map_err(|e| ConfigError::Load(e.to_string()))?;

    let overrides = collect_overrides(env);
    let mut settings = match merge(&expanded, &overrides) {
        Ok(s) => s,
        Err(e) => return Err(blame_overrides(&expanded, &overrides).unwrap_or(e)),
    };
    settings.base_dir = base_dir.to_path_buf();
    // An override wins over the file, so it is the first place a value came from.
    let mut sources: Vec<(String, Vec<String>, bool)> = overrides
        .iter()
        .map(|o| {
            let empty = o.value.clone().into_string().is_ok_and(|v| v.is_empty());
            (o.key.clone(), vec![o.var.clone()], empty)
        })
        .collect();
    sources.extend(expander.sources);
    settings
        .validate()
        .map_err(|e| name_variables(e, &sources))?;
    Ok(settings)
}

/// An override from the environment: its variable, the key it sets and the value.
struct Override {
    var: String,
    key: String,
    value: config::Value,
}

/// The file text with `overrides` on top, deserialized.
fn merge(expanded: &str, overrides: &[Override]) -> Result<Settings, ConfigError> {
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(expanded, config::FileFormat::Toml));
    for o in overrides {
        builder = builder
            .set_override(o.key.as_str(), o.value.clone())
            .map_err(|e| ConfigError::Load(e.to_string()))?;
    }
    let merged = builder
        .build()
        .map_err(|e| ConfigError::Load(e.to_string()))?;
    merged
        .try_deserialize()
        .map_err(|e| ConfigError::Load(e.to_string()))
}

/// When the file loads on its own but not with the overrides, the overrides that break it,
/// each named by its environment variable (a mistyped `SEKOIA_RELAY__SERVER__LISTN` is not
/// a mistake in the file, and must not be reported as one).
fn blame_overrides(expanded: &str, overrides: &[Override]) -> Option<ConfigError> {
    if overrides.is_empty() || merge(expanded, &[]).is_err() {
        return None;
    }
    let blamed: Vec<String> = overrides
        .iter()
        .filter_map(|o| {
            let alone = std::slice::from_ref(o);
            merge(expanded, alone).err().map(|e| {
                let detail = e.to_string();
                let detail = detail.trim_start_matches("invalid configuration: ");
                format!(
                    "environment variable {} (sets `{}`): {detail}",
                    o.var, o.key
                )
            })
        })
        .collect();
    (!blamed.is_empty()).then_some(ConfigError::Invalid(blamed))
}

/// Validation problems about a key whose value came from environment variables say so, and
/// say when the variable was set but empty (`SLACK_WEBHOOK_URL=` reads as "", which is not
/// a URL, and the user must learn which variable to fix).
fn name_variables(e: ConfigError, sources: &[(String, Vec<String>, bool)]) -> ConfigError {
    let ConfigError::Invalid(all) = e else {
        return e;
    };
    let problems: Vec<String> = all
        .into_iter()
        .map(|p| {
            let source = sources.iter().find(|(key, _, _)| {
                p.starts_with(&format!("{key} ")) || p.starts_with(&format!("{key}:"))
            });
            match source {
                Some((_, vars, true)) => {
                    format!(
                        "{p} (it is empty: the environment variable {} is set to \"\")",
                        vars.join(", ")
                    )
                }
                Some((_, vars, false)) => {
                    format!(
                        "{p} (its value comes from the environment variable {})",
                        vars.join(", ")
                    )
                }
                None => p,
            }
        })
        .collect();
    ConfigError::Invalid(problems)
}

/// `SEKOIA_RELAY__SECTION__KEY=value` → (`section.key`, value). Values that parse as integers
/// or booleans are passed typed so numeric keys can be overridden.
fn collect_overrides(env: &Env) -> Vec<Override> {
    let prefix = format!("{OVERRIDE_PREFIX}__");
    env.iter()
        .filter_map(|(k, v)| {
            let key = k
                .strip_prefix(&prefix)?
                .to_ascii_lowercase()
                .replace("__", ".");
            let value = if let Ok(i) = v.parse::<i64>() {
                config::Value::from(i)
            } else if let Ok(b) = v.parse::<bool>() {
                config::Value::from(b)
            } else {
                config::Value::from(v.as_str())
            };
            Some(Override {
                var: k.clone(),
                key,
                value,
            })
        })
        .collect()
}

/// `${VAR}` expansion over the whole document, collecting every unset variable.
struct Expander<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    secrets: Secrets,
    missing: Vec<ConfigError>,
    /// (key, variables its value came from, whether the result is empty), for messages.
    sources: Vec<(String, Vec<String>, bool)>,
}

impl Expander<'_> {
    fn table(&mut self, table: &mut toml::Table, prefix: &str) -> Result<(), ConfigError> {
        for (k, v) in table.iter_mut() {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            self.value(v, &key)?;
        }
        Ok(())
    }

    fn value(&mut self, value: &mut toml::Value, key: &str) -> Result<(), ConfigError> {
        match value {
            toml::Value::String(s) => match expand_vars(s, key, self.env) {
                Ok(v) => {
                    // Only variables that are set gave the value (others used their default).
                    let vars: Vec<String> = referenced_vars(s)
                        .into_iter()
                        .filter(|name| (self.env)(name).is_some())
                        .collect();
                    if !vars.is_empty() {
                        self.sources.push((key.to_string(), vars, v.is_empty()));
                    }
                    *s = v;
                }
                Err(ConfigError::MissingVar { .. }) if self.secrets.may_skip(key) => {
                    *s = UNRESOLVED_SECRET.to_string();
                }
                Err(e @ ConfigError::MissingVar { .. }) => self.missing.push(e),
                Err(e) => return Err(e),
            },
            toml::Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.value(item, &format!("{key}[{i}]"))?;
                }
            }
            toml::Value::Table(t) => self.table(t, key)?,
            _ => {}
        }
        Ok(())
    }
}

/// The variable names a config string refers to (`${NAME}` or `${NAME:-default}`).
fn referenced_vars(s: &str) -> Vec<String> {
    s.replace("$$", "")
        .split("${")
        .skip(1)
        .filter_map(|rest| {
            let inner = rest.split('}').next()?;
            let name = inner.split(":-").next()?;
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

/// Whether `key` (as `expand` names it) holds a secret only sending needs: a target's `url`
/// or `headers`, `sekoia.api_key`, a hook's `api_key`.
fn is_secret_key(key: &str) -> bool {
    let parts: Vec<&str> = key.split('.').collect();
    match parts[..] {
        ["targets", _, "url" | "routing_key" | "token" | "signing_secret"]
        | ["sekoia", "api_key"] => true,
        ["targets", _, "headers", ..] => true,
        [hook, "api_key"] => hook.starts_with("hooks["),
        _ => false,
    }
}

/// Expand `${VAR}` and `${VAR:-default}` in a config string. `$$` is a literal `$`.
///
/// An unset variable without a default is an error naming the variable and the key, because a
/// silently empty webhook URL or API key would lose alerts without anyone noticing.
pub fn expand_vars(
    input: &str,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| ConfigError::BadReference {
                key: key.to_string(),
                detail: "`${` without a closing `}`".into(),
            })?;
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(ConfigError::BadReference {
                    key: key.to_string(),
                    detail: format!("`${{{inner}}}` is not a variable name"),
                });
            }
            match (env(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(ConfigError::MissingVar {
                        var: name.to_string(),
                        key: key.to_string(),
                    })
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// What is wrong with a SEKOIA.IO API or app URL, if anything; the value is shown with any
/// `user:pass@` removed.
///
/// Rule: an http(s) URL without userinfo. Reason: reqwest turns userinfo into a Basic
/// `Authorization` header, sent next to the Bearer key (two credentials, one of them leaked to
/// the API), and a password written there must not be echoed in the startup error.
fn sekoia_url_problem(key: &str, raw: &str) -> Option<String> {
    let shown = crate::secrets::strip_userinfo(raw);
    match url::Url::parse(raw) {
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            Some(format!("{key} = {shown:?} is not an http(s) URL"))
        }
        Ok(u) if !u.username().is_empty() || u.password().is_some() => Some(format!(
            "{key} = {shown:?} carries a user name or password (user:pass@): remove it; the API key goes in api_key"
        )),
        Ok(_) => None,
        Err(_) => Some(format!("{key} = {shown:?} is not a URL")),
    }
}

fn valid_target_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl Settings {
    /// Cross-field checks the types cannot express. Every problem is reported at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.server.listen.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "server.listen = {:?} is not an address like 127.0.0.1:8000",
                self.server.listen
            ));
        }
        if !self.server.metrics_listen.is_empty()
            && self.server.metrics_listen.parse::<SocketAddr>().is_err()
        {
            problems.push(format!(
                "server.metrics_listen = {:?} is not an address like 127.0.0.1:9100",
                self.server.metrics_listen
            ));
        }
        if !self.server.public_url.is_empty() {
            let ok = url::Url::parse(&self.server.public_url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
            if !ok {
                problems.push(format!(
                    "server.public_url = {:?} is not an http(s) URL: write it with its scheme, e.g. \"https://relay.example.com\"",
                    self.server.public_url
                ));
            }
        }
        if self.server.max_body_bytes == 0 {
            problems.push("server.max_body_bytes must be > 0".into());
        }
        for (key, url) in [
            ("sekoia.api_url", &self.sekoia.api_url),
            ("sekoia.app_url", &self.sekoia.app_url),
        ] {
            if let Some(problem) = sekoia_url_problem(key, url) {
                problems.push(problem);
            }
        }
        problems.extend(self.store.problems());
        if self.delivery.concurrency == 0 {
            problems.push("delivery.concurrency must be ≥ 1".into());
        }
        if self.delivery.backoff_initial_ms.is_some() {
            problems.push("delivery.backoff_initial_ms was replaced by delivery.retry_schedule (a list of waits, e.g. [\"5s\", \"5m\", \"30m\"]; the last repeats until max_age_secs): remove it".into());
        }
        if self.delivery.retry_schedule.is_empty() {
            problems
                .push("delivery.retry_schedule must list at least one wait, e.g. [\"30s\"]".into());
        } else if self.delivery.retry_schedule.iter().any(|d| d.is_zero()) {
            problems.push("delivery.retry_schedule: every wait must be > 0".into());
        }
        for (name, t) in &self.targets {
            if !valid_target_name(name) {
                problems.push(format!(
                    "targets.{name}: target names may only use a-z, 0-9, _ and -"
                ));
            }
            let spec = t.kind.spec();
            let has_key = t
                .routing_key
                .as_ref()
                .is_some_and(|k| !k.expose_secret().trim().is_empty());
            if spec.uses_routing_key() && !has_key {
                problems.push(format!(
                    "targets.{name}: `routing_key` is required for kind {} (the service's Events API v2 integration key)",
                    t.kind
                ));
            } else if !spec.uses_routing_key() && t.routing_key.is_some() {
                problems.push(format!(
                    "targets.{name}: `routing_key` is only for kind pagerduty"
                ));
            }
            problems.extend(crate::chatapp::config_problems(name, t));
            if spec.output() == Output::StdoutText {
                continue;
            }
            match &t.url {
                None if spec.default_url().is_some() => {}
                None => problems.push(format!(
                    "targets.{name}: `url` is required for kind {}",
                    t.kind
                )),
                Some(u) => match url::Url::parse(u.expose_secret()) {
                    Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {
                        problems.extend(t.kind.spec().url_problems(name, &parsed));
                    }
                    _ => problems.push(format!("targets.{name}.url is not an http(s) URL")),
                },
            }
        }
        let mut names = HashSet::new();
        let mut ids = HashSet::new();
        for (i, h) in self.hooks.iter().enumerate() {
            let label = if h.name.is_empty() {
                format!("hooks[{i}]")
            } else {
                format!("hook {:?}", h.name)
            };
            if h.name.is_empty() {
                problems.push(format!("{label}: `name` is required"));
            } else if !names.insert(h.name.as_str()) {
                problems.push(format!("{label}: the name is used twice"));
            }
            if h.id.is_empty() {
                problems.push(format!(
                    "{label}: `id` is required (run `sekoia-relay new-hook` for one)"
                ));
            } else if !ids.insert(h.id.as_str()) {
                problems.push(format!("{label}: the id is used by another hook"));
            } else if !h
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                problems.push(format!(
                    "{label}: `id` may only use letters, digits, - and _ (it is part of a URL)"
                ));
            }
            let candidates = h.candidate_targets();
            if candidates.is_empty() {
                problems.push(format!(
                    "{label}: no targets (set `targets` or add a route)"
                ));
            }
            for t in &candidates {
                if !self.targets.contains_key(t) {
                    problems.push(format!("{label}: unknown target {t:?}"));
                }
            }
            for (key, url) in [("api_url", &h.api_url), ("app_url", &h.app_url)] {
                if let Some(problem) = url.as_deref().and_then(|u| sekoia_url_problem(key, u)) {
                    problems.push(format!("{label}: {problem}"));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Resolve a path from the config (store, template) against the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    pub fn hook_by_name(&self, name: &str) -> Option<&HookSettings> {
        self.hooks.iter().find(|h| h.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn lookup(env: &Env) -> impl Fn(&str) -> Option<String> + '_ {
        |k| env.get(k).cloned()
    }

    fn load_text(text: &str) -> Result<Settings, ConfigError> {
        load_with(text, &[])
    }

    fn load_with(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        load_str(text, Path::new("config.toml"), Path::new("."), &env_of(env))
    }

    const MINIMAL: &str = r#"
        [targets.out]
        kind = "console"
        [[hooks]]
        name = "soc"
        id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
        targets = ["out"]
    "#;

    #[test]
    fn expands_variables_and_defaults() {
        let env = env_of(&[("A", "x")]);
        let env = lookup(&env);
        assert_eq!(expand_vars("${A}/${B:-d}", "k", &env).unwrap(), "x/d");
        assert_eq!(expand_vars("$$5 $x", "k", &env).unwrap(), "$5 $x");
        assert_eq!(expand_vars("${B:-}", "k", &env).unwrap(), "");
    }

    #[test]
    fn missing_variable_names_variable_and_key() {
        let err = expand_vars("${NOPE}", "targets.t.url", &|_| None).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("NOPE") && msg.contains("targets.t.url"),
            "{msg}"
        );
    }

    #[test]
    fn defaults_apply() {
        let s = load_text(MINIMAL).unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:8000");
        assert_eq!(s.delivery.max_attempts, 0);
        assert_eq!(
            s.delivery.retry_schedule,
            crate::delivery::policy::DEFAULT_RETRY_SCHEDULE
        );
        assert_eq!(s.store.sync, SyncMode::Full);
        assert_eq!(s.sekoia.max_requests_per_sec, 5);
    }

    #[test]
    fn unknown_key_is_rejected_by_name() {
        let err = load_text(&format!("{MINIMAL}\n[server]\nlisten_adress = \"x\"\n")).unwrap_err();
        assert!(err.to_string().contains("listen_adress"), "{err}");
        let err =
            load_text(&MINIMAL.replace("targets = [\"out\"]", "targets = [\"out\"]\ntargest = 1"))
                .unwrap_err();
        assert!(err.to_string().contains("targest"), "{err}");
    }

    #[test]
    fn unknown_target_and_retired_teams_url_are_reported() {
        let text = MINIMAL.replace("targets = [\"out\"]", "targets = [\"nope\"]")
            + "\n[targets.old]\nkind = \"teams\"\nurl = \"https://acme.webhook.office.com/webhookb2/x\"\n";
        let err = load_text(&text).unwrap_err().to_string();
        assert!(err.contains("unknown target \"nope\""), "{err}");
        assert!(err.contains("retired"), "{err}");
    }

    #[test]
    fn candidate_targets_are_deduplicated() {
        let text =
            MINIMAL.to_string() + "\n[[hooks.routes]]\ntargets = [\"out\"]\nmin_urgency = 80\n";
        let s = load_text(&text).unwrap();
        assert_eq!(s.hooks[0].candidate_targets(), vec!["out".to_string()]);
    }

    #[test]
    fn env_overrides_scalars() {
        let s = load_with(
            MINIMAL,
            &[
                ("SEKOIA_RELAY__SERVER__LISTEN", "0.0.0.0:9000"),
                ("SEKOIA_RELAY__DELIVERY__MAX_ATTEMPTS", "3"),
            ],
        )
        .unwrap();
        assert_eq!(s.server.listen, "0.0.0.0:9000");
        assert_eq!(s.delivery.max_attempts, 3);
    }

    #[test]
    fn variables_expand_inside_the_file() {
        let text = MINIMAL.to_string() + "\n[sekoia]\napi_key = \"${KEY}\"\n";
        let s = load_with(&text, &[("KEY", "secret")]).unwrap();
        assert_eq!(s.sekoia.api_key.expose_secret(), "secret");
        let err = load_with(&text, &[]).unwrap_err().to_string();
        assert!(
            err.contains("KEY") && err.contains("sekoia.api_key"),
            "{err}"
        );
    }

    #[test]
    fn every_missing_variable_is_reported_at_once() {
        let text = MINIMAL.to_string()
            + "\n[sekoia]\napi_key = \"${KEY}\"\n[targets.mm]\nkind = \"mattermost\"\nurl = \"${MATTERMOST_WEBHOOK_URL}\"\n";
        let err = load_with(&text, &[]).unwrap_err().to_string();
        assert!(
            err.contains("KEY") && err.contains("sekoia.api_key"),
            "{err}"
        );
        assert!(
            err.contains("MATTERMOST_WEBHOOK_URL") && err.contains("targets.mm.url"),
            "{err}"
        );
    }

    #[test]
    fn commands_that_send_nothing_skip_unset_secrets_only() {
        let text = MINIMAL.to_string()
            + "\n[sekoia]\napi_key = \"${KEY}\"\n[targets.mm]\nkind = \"mattermost\"\nurl = \"${MM_URL}\"\n\
               [targets.soar]\nkind = \"webhook\"\nurl = \"https://soar.invalid/x\"\nheaders = { Authorization = \"Bearer ${TOKEN}\" }\n";
        let skip = |text: &str, env: &[(&str, &str)]| {
            load_str_with(
                text,
                Path::new("config.toml"),
                Path::new("."),
                &env_of(env),
                Secrets::Skip,
            )
        };
        let s = skip(&text, &[]).expect("secrets are not needed");
        assert_eq!(
            s.targets["mm"].url.as_ref().unwrap().expose_secret(),
            UNRESOLVED_SECRET
        );
        // A set variable still resolves.
        let s = skip(&text, &[("MM_URL", "https://mm.invalid/hooks/1")]).unwrap();
        assert_eq!(
            s.targets["mm"].url.as_ref().unwrap().expose_secret(),
            "https://mm.invalid/hooks/1"
        );
        // Anything else must still resolve: the store path is needed by dead-letters.
        let err = skip(
            &format!("{text}[store]\npath = \"${{DATA}}/relay.db\"\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("DATA") && err.contains("store.path"), "{err}");
        assert!(load_with(&text, &[]).is_err(), "the server needs them");
    }

    #[test]
    fn send_test_needs_the_secrets_of_its_target_only() {
        let text = MINIMAL.to_string()
            + "\n[targets.mm]\nkind = \"mattermost\"\nurl = \"${MM_URL}\"\n[targets.slack]\nkind = \"slack\"\nurl = \"${SLACK_URL}\"\n";
        let only = |target: &str, env: &[(&str, &str)]| {
            load_str_with(
                &text,
                Path::new("config.toml"),
                Path::new("."),
                &env_of(env),
                Secrets::SkipAllBut(target.to_string()),
            )
        };
        assert!(only("slack", &[("SLACK_URL", "https://hooks.slack.invalid/x")]).is_ok());
        let err = only("slack", &[]).unwrap_err().to_string();
        assert!(
            err.contains("SLACK_URL") && !err.contains("MM_URL"),
            "{err}"
        );
    }

    #[test]
    fn a_mistyped_override_is_blamed_on_its_variable() {
        let err = load_with(MINIMAL, &[("SEKOIA_RELAY__SERVER__LISTN", "0.0.0.0:1")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("environment variable SEKOIA_RELAY__SERVER__LISTN (sets `server.listn`)"),
            "{err}"
        );
        assert!(err.contains("unknown field `listn`"), "{err}");
        // A mistake in the file itself is still the file's.
        let err = load_with(
            &format!("{MINIMAL}\n[server]\nlistn = \"x\"\n"),
            &[("SEKOIA_RELAY__SERVER__LISTEN", "0.0.0.0:1")],
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("environment variable"), "{err}");
    }

    #[test]
    fn a_value_from_an_empty_variable_names_it() {
        let text = MINIMAL.to_string()
            + "\n[targets.slack]\nkind = \"slack\"\nurl = \"${SLACK_WEBHOOK_URL}\"\n";
        let err = load_with(&text, &[("SLACK_WEBHOOK_URL", "")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("targets.slack.url is not an http(s) URL (it is empty: the environment variable SLACK_WEBHOOK_URL is set to \"\")"),
            "{err}"
        );
        let err = load_with(&text, &[("SLACK_WEBHOOK_URL", "hooks.slack.com/x")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("(its value comes from the environment variable SLACK_WEBHOOK_URL)"),
            "{err}"
        );
    }

    #[test]
    fn public_url_needs_a_scheme() {
        for bad in [
            "relay.example.com",
            "localhost:8000",
            "ftp://relay.example.com",
        ] {
            let err = load_text(&format!("[server]\npublic_url = \"{bad}\"\n{MINIMAL}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("server.public_url"), "{bad}: {err}");
        }
        let err = load_with(
            MINIMAL,
            &[("SEKOIA_RELAY__SERVER__PUBLIC_URL", "relay.example.com")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(
                "(its value comes from the environment variable SEKOIA_RELAY__SERVER__PUBLIC_URL)"
            ),
            "{err}"
        );
        // A default used because the variable is unset is not blamed on the variable.
        let err = load_text(&format!(
            "[server]\npublic_url = \"${{PUBLIC:-relay.example.com}}\"\n{MINIMAL}"
        ))
        .unwrap_err()
        .to_string();
        assert!(!err.contains("environment variable"), "{err}");
        let s = load_text(&format!(
            "[server]\npublic_url = \"https://relay.example.com\"\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(s.server.public_url, "https://relay.example.com");
    }

    #[test]
    fn per_kind_rate_limit_defaults() {
        assert_eq!(TargetKind::Slack.spec().default_rate_limit_per_sec(), 1);
        assert_eq!(TargetKind::Teams.spec().default_rate_limit_per_sec(), 4);
        assert_eq!(TargetKind::Webhook.spec().default_rate_limit_per_sec(), 0);
    }

    #[test]
    fn store_url_comes_from_the_environment_and_keeps_sqlite_when_empty() {
        let text = format!("[store]\nurl = \"${{DATABASE_URL:-}}\"\n{MINIMAL}");
        let sqlite = load_with(&text, &[]).unwrap();
        assert!(!sqlite.store.is_postgres());
        let pg = load_with(&text, &[("DATABASE_URL", "postgres://u:pw@db/relay")]).unwrap();
        assert!(pg.store.is_postgres());
        assert_eq!(pg.store.lease_secs, 30, "default lease ≤ 30 s");
        assert!(pg.store.pool_size >= 1);
    }

    #[test]
    fn store_url_and_path_together_say_which_to_keep_without_the_password() {
        let text = format!(
            "[store]\nurl = \"postgres://u:hunter2@db/relay\"\npath = \"other.db\"\n{MINIMAL}"
        );
        let err = load_text(&text).unwrap_err().to_string();
        assert!(err.contains("keep url and remove path"), "{err}");
        assert!(err.contains("empty url to stay on SQLite"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let text = format!("[store]\nurl = \"mysql://u:hunter2@db/relay\"\n{MINIMAL}");
        let err = load_text(&text).unwrap_err().to_string();
        assert!(err.contains("must start with postgres://"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
