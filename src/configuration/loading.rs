//! Loading: which file, `${VAR}` expansion (secrets resolved or left out, as the command
//! needs), `SEKOIA_RELAY__…` overrides, then parsing into [`Settings`] and validation.

use super::*;

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
