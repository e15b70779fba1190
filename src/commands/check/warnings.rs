//! `check`'s warnings: what does not stop the relay but deserves attention.

use std::path::Path;

use secrecy::ExposeSecret;

use crate::configuration::Settings;

/// Hook ids are the only secret of a hook URL: below 32 characters they may be guessable.
pub const MIN_HOOK_ID_CHARS: usize = 32;

#[cfg(unix)]
pub(super) fn file_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).ok().map(|m| m.permissions().mode())
}

#[cfg(not(unix))]
pub(super) fn file_mode(_: &Path) -> Option<u32> {
    None
}

/// A warning when the config file is readable by other users and holds secrets.
///
/// Rule: group or other read permission (`mode & 0o044`) on a file that holds at least one
/// hook id, or an API key / target URL written literally rather than as `${VAR}`. Reason: hook
/// ids, keys and webhook URLs are credentials (each lets its holder post or read alerts); a world-readable file leaks them to
/// every local account. It is a warning, not an error: containers often mount configs 0644.
pub fn permission_warning(path: &Path, mode: u32, settings: &Settings) -> Option<String> {
    let readable = mode & 0o044 != 0;
    let holds_secrets = !settings.hooks.is_empty()
        || !settings.sekoia.api_key.expose_secret().is_empty()
        || settings.targets.values().any(|t| t.url.is_some());
    (readable && holds_secrets).then(|| {
        format!(
            "{} is readable by other users (mode {:o}) and holds secrets (hook ids, keys or webhook URLs): run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        )
    })
}

/// The id of the demo hook in the shipped `config.toml`: public, since it is in the repository.
pub const DEMO_HOOK_ID: &str = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e";

/// Warnings about what the internet can reach once `server.public_url` is set (logged at
/// startup too).
///
/// Rule: with a `public_url`, warn about a hook still using the shipped demo id, and about
/// `/metrics` served on the public listener (no `server.metrics_listen`). Reason: the demo id
/// is in the repository, so anyone can post alerts to a relay that kept it; and the tunnel or
/// proxy that forwards the hooks forwards `/metrics` too, which names every hook and target.
/// Without a `public_url` the relay is presumed local, and the demo hook is the quick start.
pub fn exposure_warnings(settings: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    if settings.server.public_url.is_empty() {
        return out;
    }
    for h in settings.hooks.iter().filter(|h| h.id == DEMO_HOOK_ID) {
        out.push(format!(
            "hook {:?} uses the demo id shipped in config.toml, which is public: delete that hook (or give it a new id with `sekoia-relay new-hook`) before exposing the relay at server.public_url",
            h.name
        ));
    }
    if settings.server.metrics_listen.is_empty() {
        out.push(
            "GET /metrics is served on the listener that server.public_url exposes: set server.metrics_listen (e.g. \"127.0.0.1:9100\") to serve it on a private address only".into(),
        );
    }
    out
}

/// Warnings that do not stop the relay but deserve attention.
pub fn settings_warnings(settings: &Settings) -> Vec<String> {
    let mut out = exposure_warnings(settings);
    for h in &settings.hooks {
        let n = h.id.chars().count();
        if n < MIN_HOOK_ID_CHARS {
            out.push(format!(
                "hook {:?}: the id has {n} characters; the id is the hook's only secret, use at least {MIN_HOOK_ID_CHARS} (`sekoia-relay new-hook` makes one)",
                h.name
            ));
        }
    }
    for (name, t) in &settings.targets {
        out.extend(crate::chatapp::config_warnings(
            name,
            t,
            &settings.server.public_url,
        ));
        if let Some(url) = &t.url {
            out.extend(
                t.kind
                    .spec()
                    .url_warnings(name, url.expose_secret(), &t.safe_host()),
            );
        }
        if !settings
            .hooks
            .iter()
            .any(|h| h.candidate_targets().iter().any(|c| c == name))
        {
            out.push(format!("targets.{name}: no hook sends to this target"));
        }
    }
    out
}
