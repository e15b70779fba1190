//! Does an API key work? One cheap authenticated read, for `check --online` and the startup
//! log: `GET {api_url}/v1/sic/alerts?limit=1`, which needs the same `SIC_READ_ALERTS`
//! permission as fetching an alert (`/v1/me` would answer 200 to a key without it).
//!
//! The key is sent only to the configured `api_url`, never printed; redirects are not
//! followed (a redirect means `api_url` is not the API base, and following it would send the
//! key elsewhere).

use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use secrecy::{ExposeSecret, SecretString};

use crate::secrets::redact_url;

/// What the Alert API said about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// 2xx with JSON: the key can read alerts.
    Ok,
    /// No key configured: messages go out unenriched, by choice.
    NoKey,
    /// 401: invalid, expired or revoked, or a key of another region.
    Rejected,
    /// 403: the key lacks `SIC_READ_ALERTS`.
    MissingPermission,
    /// 404, a redirect or a 2xx that is not JSON: `api_url` is not an Alert API base
    /// (another region's app URL, a missing `/api`).
    NotTheApi(String),
    /// 429 or 5xx: the API is there but not answering now.
    Unavailable(u16),
    /// Any other answer.
    Unexpected(u16),
    /// No answer: DNS, connection, TLS or timeout.
    Unreachable(String),
}

impl KeyState {
    pub fn is_ok(&self) -> bool {
        matches!(self, KeyState::Ok)
    }

    /// A short machine-friendly name, for log fields.
    pub fn code(&self) -> &'static str {
        match self {
            KeyState::Ok => "ok",
            KeyState::NoKey => "no_key",
            KeyState::Rejected => "rejected_401",
            KeyState::MissingPermission => "missing_permission_403",
            KeyState::NotTheApi(_) => "wrong_api_url",
            KeyState::Unavailable(_) => "unavailable",
            KeyState::Unexpected(_) => "unexpected",
            KeyState::Unreachable(_) => "unreachable",
        }
    }
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyState::Ok => f.write_str("ok: the key can read alerts"),
            KeyState::NoKey => f.write_str("no API key configured: messages go out unenriched"),
            KeyState::Rejected => f.write_str(
                "401: the key is invalid, expired or revoked, or was created in another region than api_url",
            ),
            KeyState::MissingPermission => {
                f.write_str("403: the key lacks the SIC_READ_ALERTS permission")
            }
            KeyState::NotTheApi(what) => write!(
                f,
                "{what}: api_url is not the Alert API of a region (wrong region, or the app URL without /api; see the region table)"
            ),
            KeyState::Unavailable(s) => {
                write!(f, "{s}: the API is not answering now (rate limit or outage); try again")
            }
            KeyState::Unexpected(s) => write!(f, "unexpected answer {s}"),
            KeyState::Unreachable(why) => write!(f, "unreachable: {why}"),
        }
    }
}

/// The state of a key from the API's answer to the probe.
///
/// Rule: 2xx with a JSON body is ok; 401 rejected; 403 missing permission; 404, 3xx, or a 2xx
/// that is not JSON mean `api_url` is not an Alert API; 408/429/5xx unavailable. Reason: these
/// are the answers SEKOIA.IO documents (401 bad key, 403 permission, 429 rate limit), and an
/// app host or another service answers HTML or a redirect rather than the API's JSON.
pub fn classify(status: u16, json_body: bool) -> KeyState {
    match status {
        200..=299 if json_body => KeyState::Ok,
        200..=299 => KeyState::NotTheApi(format!("{status} without JSON")),
        300..=399 => KeyState::NotTheApi(format!("redirect {status}")),
        401 => KeyState::Rejected,
        403 => KeyState::MissingPermission,
        404 => KeyState::NotTheApi("404".into()),
        408 | 429 | 500..=599 => KeyState::Unavailable(status),
        other => KeyState::Unexpected(other),
    }
}

/// The SEKOIA.IO region of an API or app URL (`fra1` for `api.sekoia.io`/`app.sekoia.io`,
/// `usa1` for `app.usa1.sekoia.io`, …), or `None` for any other host.
pub fn region_of(url: &str) -> Option<String> {
    let host = url::Url::parse(url).ok()?.host_str()?.to_ascii_lowercase();
    let rest = host.strip_suffix("sekoia.io")?;
    match rest.trim_end_matches('.').split('.').collect::<Vec<_>>()[..] {
        ["api" | "app"] => Some("fra1".into()),
        ["api" | "app", region] if !region.is_empty() => Some(region.to_string()),
        _ => None,
    }
}

/// Call the probe with `key` against `api_url` (no redirects, `timeout` for connect and total).
pub async fn verify_key(api_url: &str, key: &SecretString, timeout: Duration) -> KeyState {
    if key.expose_secret().is_empty() {
        return KeyState::NoKey;
    }
    let client = match reqwest::Client::builder()
        .user_agent(concat!("sekoia-relay/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        .timeout(timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => return KeyState::Unreachable(format!("cannot build an HTTP client: {e}")),
    };
    let url = format!("{}/v1/sic/alerts?limit=1", api_url.trim_end_matches('/'));
    let answer = client
        .get(&url)
        .header(ACCEPT, "application/json")
        .header(AUTHORIZATION, format!("Bearer {}", key.expose_secret()))
        .send()
        .await;
    match answer {
        Ok(r) => {
            let status = r.status().as_u16();
            let json_type = r
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("json"));
            let json_body = json_type
                && r.bytes()
                    .await
                    .ok()
                    .is_some_and(|b| serde_json::from_slice::<serde_json::Value>(&b).is_ok());
            classify(status, json_body)
        }
        Err(e) => KeyState::Unreachable(describe(&e, api_url)),
    }
}

/// Why a request got no answer, without the URL's path or query (reqwest's own message
/// includes the full URL).
fn describe(e: &reqwest::Error, api_url: &str) -> String {
    let host = redact_url(api_url);
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // The innermost cause says what happened (DNS, refused, TLS); it carries no URL.
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    format!("{kind} to {host} ({cause})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(200, true), KeyState::Ok);
        assert!(matches!(classify(200, false), KeyState::NotTheApi(_)));
        assert!(matches!(classify(302, false), KeyState::NotTheApi(_)));
        assert!(matches!(classify(404, true), KeyState::NotTheApi(_)));
        assert_eq!(classify(401, true), KeyState::Rejected);
        assert_eq!(classify(403, false), KeyState::MissingPermission);
        assert_eq!(classify(429, false), KeyState::Unavailable(429));
        assert_eq!(classify(503, false), KeyState::Unavailable(503));
        assert_eq!(classify(418, false), KeyState::Unexpected(418));
    }

    #[test]
    fn regions_from_urls() {
        assert_eq!(region_of("https://api.sekoia.io").as_deref(), Some("fra1"));
        assert_eq!(region_of("https://app.sekoia.io/").as_deref(), Some("fra1"));
        assert_eq!(
            region_of("https://app.usa1.sekoia.io/api").as_deref(),
            Some("usa1")
        );
        assert_eq!(
            region_of("https://api.sgp1.sekoia.io").as_deref(),
            Some("sgp1")
        );
        assert_eq!(region_of("http://127.0.0.1:9000"), None);
        assert_eq!(region_of("https://notsekoia.io"), None);
    }
}
