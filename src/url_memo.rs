//! Configuration URLs parsed once, not per request.
//!
//! Target and API URLs come from the config and are the same for thousands of requests, yet
//! parsing one (with its IDNA host mapping) cost about 5 % of a delivery's CPU when it was
//! done per send. A memo keyed by the URL's text keeps the parse and its loggable host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use url::Url;

use crate::secrets::redact_url_parsed;

/// Most URLs kept: far more than a config has, so the memo only empties after many reloads
/// that changed URLs (then it is rebuilt as requests come).
const MAX_URLS: usize = 64;

/// A URL as parsed, with the part of it that may be logged. Not `Debug`: the URL is a secret.
#[derive(Clone)]
pub struct Parsed {
    pub url: Url,
    /// `scheme://host[:port]` (see [`crate::secrets::redact_url`]).
    pub safe_host: Arc<str>,
}

/// Parsed URLs by their text (`None` remembers a text that does not parse). Not `Debug`,
/// like [`Parsed`].
#[derive(Default)]
pub struct UrlMemo {
    parsed: Mutex<HashMap<String, Option<Parsed>>>,
}

impl UrlMemo {
    /// `raw` parsed, from the memo when it was seen before.
    pub fn parse(&self, raw: &str) -> Option<Parsed> {
        let mut memo = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = memo.get(raw) {
            return p.clone();
        }
        let p = Url::parse(raw).ok().map(|url| Parsed {
            safe_host: redact_url_parsed(&url).into(),
            url,
        });
        if memo.len() >= MAX_URLS {
            memo.clear();
        }
        memo.insert(raw.to_owned(), p.clone());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_parsed_like_url_parse_and_keeps_only_its_host_for_logs() {
        let memo = UrlMemo::default();
        let raw = "https://example.webhook.office.com:8443/webhookb2/secret?x=1";
        for _ in 0..2 {
            let p = memo.parse(raw).expect("valid");
            assert_eq!(p.url, Url::parse(raw).unwrap());
            assert_eq!(&*p.safe_host, "https://example.webhook.office.com:8443");
        }
        assert!(memo.parse("not a url").is_none());
        assert!(memo.parse("not a url").is_none(), "remembered as invalid");
    }

    #[test]
    fn the_memo_stays_bounded() {
        let memo = UrlMemo::default();
        for i in 0..(MAX_URLS * 3) {
            let raw = format!("https://host{i}.example/");
            assert_eq!(memo.parse(&raw).unwrap().url.as_str(), raw);
        }
        assert!(memo.parsed.lock().unwrap().len() <= MAX_URLS);
    }
}
