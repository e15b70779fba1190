//! Validation: the cross-field rules the types cannot express, all reported at once.

use super::*;

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
        if self.delivery.threads > crate::delivery::policy::MAX_DELIVERY_THREADS {
            problems.push(format!(
                "delivery.threads must be at most {} (0 = half the cores)",
                crate::delivery::policy::MAX_DELIVERY_THREADS
            ));
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
            problems.extend(digest_problems(name, t));
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

/// Config problems of a target's digest keys.
///
/// Rule: `digest_max_items` is 1–40; a kind without a built-in digest (pagerduty, webhook,
/// console, the bot-token kinds) takes `digest_after` > 0 only with a `digest_template`.
/// Reason: 40 items plus a header and a footer stay within Slack's 50 blocks and every kind's
/// size limit; and a digest with nothing to render it would only show up as a dead letter in
/// the middle of a storm.
pub(crate) fn digest_problems(name: &str, t: &super::TargetSettings) -> Vec<String> {
    let mut out = Vec::new();
    if !(1..=40).contains(&t.digest_max_items) {
        out.push(format!(
            "targets.{name}.digest_max_items must be between 1 and 40 (it is {})",
            t.digest_max_items
        ));
    }
    if t.digest_after() > 0
        && t.digest_template.is_none()
        && t.kind.spec().builtin_digest_template().is_none()
    {
        out.push(format!(
            "targets.{name}: kind {} has no built-in digest: set digest_template, or digest_after = 0",
            t.kind
        ));
    }
    out
}
