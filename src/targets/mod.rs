//! One module per target kind, each owning everything that differs between kinds: its
//! default pace, built-in template, size and field limits, envelope check, escaping, urgency
//! colours, the meaning of its answers, its config checks and `check`'s extra validation.
//!
//! The pipeline asks a kind through [`TargetKindSpec`] (`kind.spec()`), never matches on it.
//! Adding a kind: a variant in [`crate::domain::TargetKind`], a module here implementing
//! [`TargetKindSpec`], its template in `templates/`, one line in [`TargetKind::spec`], and its
//! tests. The facts behind each kind's numbers are in `docs/targets.md`.

use std::borrow::Cow;
use std::time::Duration;

use serde_json::Value;

pub use crate::domain::TargetKind;
use crate::render::UrgencyBand;

pub mod chime;
pub mod console;
pub mod discord;
pub mod google_chat;
pub mod mattermost;
pub mod mattermost_app;
pub mod pagerduty;
pub mod slack;
pub mod slack_app;
pub mod teams;
pub mod webex;
pub mod webhook;

/// How a kind's messages leave the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// A JSON body POSTed to the target's `url` (required).
    HttpJson,
    /// Plain text written to stdout; no `url`.
    StdoutText,
}

/// What a target kind is, asked by configuration, rendering, delivery and `check`.
pub trait TargetKindSpec: Sync {
    /// The kind these rules are for.
    fn kind(&self) -> TargetKind;

    /// How messages leave the relay (HTTP JSON unless said otherwise).
    fn output(&self) -> Output {
        Output::HttpJson
    }

    /// Default pace in messages per second when `rate_limit_per_sec` is not set, from the
    /// service's documented webhook limit (docs/targets.md). 0 means unlimited.
    fn default_rate_limit_per_sec(&self) -> u32;

    /// Name and source of the built-in template (shipped in `templates/`, embedded).
    fn builtin_template(&self) -> (&'static str, &'static str);

    /// Name and source of the built-in storm digest template (`templates/digest/`), for the
    /// kinds a person reads in a channel. `None`: digests are off by default for the kind
    /// (PagerDuty needs one event per alert, a webhook consumer its own format, a living
    /// message edits itself) and need a `digest_template` to be turned on.
    fn builtin_digest_template(&self) -> Option<(&'static str, &'static str)> {
        None
    }

    /// Most alerts one digest message of this kind holds, whatever `digest_max_items` says:
    /// a small message limit (Chime's 4 KB) must not cut alerts out of a digest.
    fn digest_items_cap(&self) -> usize {
        40
    }

    /// `digest_after` when the target does not set it: 5 for kinds with a built-in digest,
    /// else 0 (off).
    fn default_digest_after(&self) -> usize {
        if self.builtin_digest_template().is_some() {
            5
        } else {
            0
        }
    }

    /// The hard size limit of a rendered body in bytes: nothing larger is sent.
    fn max_body_bytes(&self) -> usize;

    /// Check that a rendered JSON body has the envelope the target accepts: these are the
    /// mistakes that turn into a 400 (a dead letter), so they are caught before sending.
    fn check_envelope(&self, body: &Value) -> Result<(), String>;

    /// Cut over-long fields in place, so a long value is cut instead of the whole message
    /// being rejected. Kinds without per-field limits keep the default (nothing).
    fn enforce_field_limits(&self, _body: &mut Value) {}

    /// Escape alert-derived text for the kind's markup (see [`crate::render::md_escape`]).
    fn md_escape<'a>(&self, s: &'a str) -> Cow<'a, str>;

    /// The colour of an urgency band: a `#RRGGBB` hex unless the kind has its own names.
    fn urgency_color(&self, band: Option<UrgencyBand>) -> &'static str {
        hex_urgency_color(band)
    }

    /// An error status embedded in a 2xx answer body, for kinds whose service reports
    /// failures that way (the retired Teams connector). `None`: the status stands.
    fn embedded_status(&self, _body: &str) -> Option<u16> {
        None
    }

    /// Config problems of a target URL of this kind (already known to be http(s)).
    fn url_problems(&self, _name: &str, _url: &url::Url) -> Vec<String> {
        Vec::new()
    }

    /// `check` warnings about the URL of a target `name` of this kind (a valid URL; only
    /// `safe_host` of it may be shown).
    fn url_warnings(&self, _name: &str, _url: &str, _safe_host: &str) -> Vec<String> {
        Vec::new()
    }

    /// The config keys of this kind's targets that templates also see as `target.KEY` (e.g.
    /// Mattermost's `channel`); empty values are left out.
    fn context_keys(&self) -> &'static [&'static str] {
        &[]
    }

    /// `check`'s validation of a final body beyond the envelope: what the service would
    /// reject with a 400 and the relay cannot repair by cutting.
    fn body_problems(&self, _body: &Value) -> Vec<String> {
        Vec::new()
    }

    /// The URL to POST to, from the configured one: kinds whose options travel in the query
    /// (Google Chat's `messageReplyOption`, Discord's `wait`) add them here.
    fn request_url<'a>(&self, url: &'a str) -> Cow<'a, str> {
        Cow::Borrowed(url)
    }

    /// The wait an answer's body asks for (Discord's JSON `retry_after`), on top of the
    /// `Retry-After` header; `None`: the header alone counts.
    fn retry_after_from_body(&self, _status: u16, _body: &str) -> Option<Duration> {
        None
    }

    /// The value `urgency_color` gives a template: the colour as a string, unless the
    /// kind wants a number (Discord's integer embed `color`).
    fn urgency_color_value(&self, band: Option<UrgencyBand>) -> Value {
        Value::from(self.urgency_color(band))
    }

    /// The URL messages go to when the target sets none (PagerDuty's Events API); `None`:
    /// `url` is required.
    fn default_url(&self) -> Option<&'static str> {
        None
    }

    /// Whether targets of this kind take a `routing_key` (required then, refused otherwise):
    /// PagerDuty's integration key.
    fn uses_routing_key(&self) -> bool {
        false
    }

    /// The body as sent, from the rendered one: PagerDuty adds the `routing_key` here, so the
    /// secret is never part of a rendered (shown, stored) body.
    fn prepare_body<'a>(&self, body: &'a str, _routing_key: Option<&str>) -> Cow<'a, str> {
        Cow::Borrowed(body)
    }

    /// Template functions and filters only this kind's template needs (PagerDuty's
    /// `pagerduty_action` and `pagerduty_severity`), registered once for every template.
    fn register_template_functions(&self, _env: &mut minijinja::Environment<'static>) {}

    /// The bodies `send-test` posts, in order, from the rendered test message: that message,
    /// unless the kind must undo it (PagerDuty resolves its test incident).
    fn send_test_bodies(&self, body: &str) -> Vec<String> {
        vec![body.to_string()]
    }

    /// Whether messages go through the chat tool's API with a bot token (`slack_app`,
    /// `mattermost_app`): one living message per alert, edited by later events
    /// ([`crate::chatapp`]), instead of one POST per event to `url`.
    fn chat_api(&self) -> bool {
        false
    }
}

impl TargetKind {
    /// The rules of this kind: the registry, one line per kind.
    pub fn spec(self) -> &'static dyn TargetKindSpec {
        match self {
            TargetKind::Teams => &teams::Teams,
            TargetKind::Slack => &slack::Slack,
            TargetKind::Mattermost => &mattermost::Mattermost,
            TargetKind::Chime => &chime::Chime,
            TargetKind::GoogleChat => &google_chat::GoogleChat,
            TargetKind::Discord => &discord::Discord,
            TargetKind::PagerDuty => &pagerduty::PagerDuty,
            TargetKind::Webex => &webex::Webex,
            TargetKind::Webhook => &webhook::Webhook,
            TargetKind::Console => &console::Console,
            TargetKind::SlackApp => &slack_app::SlackApp,
            TargetKind::MattermostApp => &mattermost_app::MattermostApp,
        }
    }
}

/// Urgency as `#RRGGBB`, from dark red for Urgent down to green for Low; unknown → grey
/// (Slack and Mattermost attachment `color`; useful as data elsewhere). Mattermost only
/// accepts `good`/`warning`/`danger` or `#RRGGBB`, hence the `#`.
pub fn hex_urgency_color(band: Option<UrgencyBand>) -> &'static str {
    match band {
        Some(UrgencyBand::Urgent) => "#A4262C",
        Some(UrgencyBand::Major) => "#D13438",
        Some(UrgencyBand::High) => "#F7630C",
        Some(UrgencyBand::Moderate) => "#FFB900",
        Some(UrgencyBand::Low) => "#2EB67D",
        None => "#8A8886",
    }
}

/// `url` with `key=value` in its query, replacing the value `key` had.
///
/// Rule: a URL that already says exactly `key=value` is sent as it is; otherwise the pair is
/// appended after the existing parameters (or replaces the first `key`, dropping repeats),
/// and the others keep their order. Reason: Discord's `wait` and Google Chat's
/// `messageReplyOption` are options the relay depends on, whatever URL was pasted, and the
/// other parameters carry the webhook's credentials. An unparsable URL is returned as it is
/// (config refuses those).
pub fn with_query_param<'a>(url: &'a str, key: &str, value: &str) -> Cow<'a, str> {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return Cow::Borrowed(url);
    };
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let same: Vec<&(String, String)> = pairs.iter().filter(|(k, _)| k == key).collect();
    if same.len() == 1 && same[0].1 == value {
        return Cow::Borrowed(url);
    }
    if same.is_empty() {
        parsed.query_pairs_mut().append_pair(key, value);
    } else {
        let mut query = parsed.query_pairs_mut();
        query.clear();
        let mut written = false;
        for (k, v) in &pairs {
            if k != key {
                query.append_pair(k, v);
            } else if !written {
                query.append_pair(k, value);
                written = true;
            }
        }
    }
    Cow::Owned(parsed.into())
}

/// The body as a JSON object, for kinds whose envelope is one.
fn object(body: &Value) -> Result<&serde_json::Map<String, Value>, String> {
    body.as_object()
        .ok_or_else(|| "the body must be a JSON object".to_string())
}

fn non_empty_str(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str).is_some_and(|s| !s.is_empty())
}

fn non_empty_list(v: Option<&Value>) -> bool {
    v.and_then(Value::as_array).is_some_and(|a| !a.is_empty())
}

/// Cut the string at `v[key]` to `max` characters, if it is a string.
fn cap_str(v: &mut Value, key: &str, max: usize) {
    if let Some(Value::String(s)) = v.get_mut(key) {
        if let Cow::Owned(cut) = crate::render::truncate_chars(s, max) {
            *s = cut;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_registered_under_its_own_name() {
        for kind in TargetKind::ALL {
            assert_eq!(kind.spec().kind(), kind);
            let (name, source) = kind.spec().builtin_template();
            assert!(name.starts_with(&format!("builtin/{kind}.")), "{name}");
            assert!(!source.is_empty());
        }
    }

    #[test]
    fn default_paces_follow_the_documented_limits() {
        assert_eq!(TargetKind::Slack.spec().default_rate_limit_per_sec(), 1);
        assert_eq!(TargetKind::Chime.spec().default_rate_limit_per_sec(), 1);
        assert_eq!(TargetKind::Teams.spec().default_rate_limit_per_sec(), 4);
        assert_eq!(
            TargetKind::Mattermost.spec().default_rate_limit_per_sec(),
            10
        );
        assert_eq!(TargetKind::Webhook.spec().default_rate_limit_per_sec(), 0);
        assert_eq!(TargetKind::Console.spec().default_rate_limit_per_sec(), 0);
        assert_eq!(
            TargetKind::GoogleChat.spec().default_rate_limit_per_sec(),
            1
        );
        assert_eq!(TargetKind::Discord.spec().default_rate_limit_per_sec(), 1);
        assert_eq!(TargetKind::PagerDuty.spec().default_rate_limit_per_sec(), 2);
        assert_eq!(TargetKind::Webex.spec().default_rate_limit_per_sec(), 1);
        assert_eq!(TargetKind::SlackApp.spec().default_rate_limit_per_sec(), 1);
        assert_eq!(
            TargetKind::MattermostApp
                .spec()
                .default_rate_limit_per_sec(),
            10
        );
    }

    #[test]
    fn query_params_are_added_or_replaced_and_others_kept() {
        let add = |u, k, v| with_query_param(u, k, v).into_owned();
        assert_eq!(
            add("https://h.test/p", "wait", "true"),
            "https://h.test/p?wait=true"
        );
        assert_eq!(
            add("https://h.test/p?key=a%2Bb&token=t", "wait", "true"),
            "https://h.test/p?key=a%2Bb&token=t&wait=true"
        );
        assert_eq!(
            add("https://h.test/p?wait=false&x=1&wait=0", "wait", "true"),
            "https://h.test/p?wait=true&x=1"
        );
        // Already right: sent exactly as configured.
        assert!(matches!(
            with_query_param("https://h.test/p?wait=true", "wait", "true"),
            Cow::Borrowed(_)
        ));
        assert_eq!(add("not a url", "wait", "true"), "not a url");
    }
}
