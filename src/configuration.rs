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
    #[error("invalid configuration: {0}")]
    Invalid(String),
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
    pub max_attempts: u32,
    pub max_age_secs: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_secs: u64,
    pub timeout_secs: u64,
    pub concurrency: usize,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            max_age_secs: 86400,
            backoff_initial_ms: 1000,
            backoff_max_secs: 300,
            timeout_secs: 15,
            concurrency: 32,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(try_from = "String")]
pub enum TargetKind {
    Teams,
    Slack,
    Mattermost,
    Chime,
    Webhook,
    Console,
}

impl TargetKind {
    pub const ALL: [TargetKind; 6] = [
        TargetKind::Teams,
        TargetKind::Slack,
        TargetKind::Mattermost,
        TargetKind::Chime,
        TargetKind::Webhook,
        TargetKind::Console,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Teams => "teams",
            TargetKind::Slack => "slack",
            TargetKind::Mattermost => "mattermost",
            TargetKind::Chime => "chime",
            TargetKind::Webhook => "webhook",
            TargetKind::Console => "console",
        }
    }

    /// Default pace per kind, from each service's documented webhook limit
    /// (reference: chat-targets.md §0). 0 means unlimited.
    pub fn default_rate_limit_per_sec(self) -> u32 {
        match self {
            TargetKind::Slack | TargetKind::Chime => 1,
            TargetKind::Teams => 4,
            TargetKind::Mattermost => 10,
            TargetKind::Webhook | TargetKind::Console => 0,
        }
    }
}

impl TryFrom<String> for TargetKind {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        TargetKind::ALL
            .into_iter()
            .find(|k| k.as_str() == value)
            .ok_or_else(|| {
                format!(
                    "unknown target kind {value:?} (expected teams, slack, mattermost, chime, webhook or console)"
                )
            })
    }
}

impl std::fmt::Display for TargetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
}

impl TargetSettings {
    pub fn rate_limit(&self) -> u32 {
        self.rate_limit_per_sec
            .unwrap_or_else(|| self.kind.default_rate_limit_per_sec())
    }

    /// `scheme://host[:port]` of the target URL: the only part of it that may be logged.
    pub fn safe_host(&self) -> String {
        self.url
            .as_ref()
            .map(|u| crate::telemetry::redact_url(u.expose_secret()))
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
    /// several routes still gets the event once (SPEC §3).
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

/// Load, expand, override and validate the configuration at `path`.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
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
    load_str(&text, path, &base_dir, &env)
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
    let lookup = |name: &str| env.get(name).cloned();
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    expand_table(&mut doc, "", &lookup)?;
    let expanded = toml::to_string(&doc).map_err(|e| ConfigError::Load(e.to_string()))?;

    let overrides = collect_overrides(env);
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(&expanded, config::FileFormat::Toml));
    for (key, value) in overrides {
        builder = builder
            .set_override(key.as_str(), value)
            .map_err(|e| ConfigError::Load(e.to_string()))?;
    }
    let merged = builder
        .build()
        .map_err(|e| ConfigError::Load(e.to_string()))?;
    let mut settings: Settings = merged
        .try_deserialize()
        .map_err(|e| ConfigError::Load(e.to_string()))?;
    settings.base_dir = base_dir.to_path_buf();
    settings.validate()?;
    Ok(settings)
}

/// `SEKOIA_RELAY__SECTION__KEY=value` → (`section.key`, value). Values that parse as integers
/// or booleans are passed typed so numeric keys can be overridden.
fn collect_overrides(env: &Env) -> Vec<(String, config::Value)> {
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
            Some((key, value))
        })
        .collect()
}

fn expand_table(
    table: &mut toml::Table,
    prefix: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for (k, v) in table.iter_mut() {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        expand_value(v, &key, env)?;
    }
    Ok(())
}

fn expand_value(
    value: &mut toml::Value,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) => *s = expand_vars(s, key, env)?,
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &format!("{key}[{i}]"), env)?;
            }
        }
        toml::Value::Table(t) => expand_table(t, key, env)?,
        _ => {}
    }
    Ok(())
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
        if self.server.max_body_bytes == 0 {
            problems.push("server.max_body_bytes must be > 0".into());
        }
        for (key, url) in [
            ("sekoia.api_url", &self.sekoia.api_url),
            ("sekoia.app_url", &self.sekoia.app_url),
        ] {
            if url::Url::parse(url).is_err() {
                problems.push(format!("{key} = {url:?} is not a URL"));
            }
        }
        problems.extend(self.store.problems());
        if self.delivery.max_attempts == 0 {
            problems.push("delivery.max_attempts must be ≥ 1".into());
        }
        if self.delivery.concurrency == 0 {
            problems.push("delivery.concurrency must be ≥ 1".into());
        }
        if self.delivery.backoff_initial_ms == 0 {
            problems.push("delivery.backoff_initial_ms must be ≥ 1".into());
        }
        for (name, t) in &self.targets {
            if !valid_target_name(name) {
                problems.push(format!(
                    "targets.{name}: target names may only use a-z, 0-9, _ and -"
                ));
            }
            match (&t.url, t.kind) {
                (_, TargetKind::Console) => {}
                (None, kind) => {
                    problems.push(format!("targets.{name}: `url` is required for kind {kind}"))
                }
                (Some(u), _) => match url::Url::parse(u.expose_secret()) {
                    Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {
                        if t.kind == TargetKind::Teams
                            && parsed
                                .host_str()
                                .is_some_and(|h| h.ends_with(".webhook.office.com"))
                        {
                            problems.push(format!(
                                "targets.{name}: Office 365 connector URLs (*.webhook.office.com) are retired; create a Teams Workflows webhook (\"Post to a channel when a webhook request is received\") and use its URL"
                            ));
                        }
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
                if let Some(u) = url {
                    if url::Url::parse(u).is_err() {
                        problems.push(format!("{label}: {key} = {u:?} is not a URL"));
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems.join("; ")))
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
        assert_eq!(s.delivery.max_attempts, 10);
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
    fn per_kind_rate_limit_defaults() {
        assert_eq!(TargetKind::Slack.default_rate_limit_per_sec(), 1);
        assert_eq!(TargetKind::Teams.default_rate_limit_per_sec(), 4);
        assert_eq!(TargetKind::Webhook.default_rate_limit_per_sec(), 0);
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
