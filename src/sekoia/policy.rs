//! The Alert API client's retry policy, as pure functions: no I/O, no clock, no randomness
//! inside (the caller passes `now` and a random `unit`), so every rule is unit-tested.

use std::time::Duration;

use crate::retry::{honour_retry_after, Jitter, RetryPolicy};

/// What to do with an HTTP status from `GET /v1/sic/alerts/{uuid}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusClass {
    /// 2xx: read the body.
    Success,
    /// 408, 429, 5xx: transient, retry until the deadline.
    Retry,
    /// 3xx: redirects are never followed; `api_url` must be fixed.
    Redirect,
    /// Any other status (401, 403, 404, other 4xx): give up at once.
    GiveUp,
}

/// Rule: 408, 429 and 5xx are retried; 2xx is success; 3xx is a redirect, reported and never
/// followed; everything else gives up at once.
///
/// Reason: 429 is SEKOIA.IO's WAF asking us to slow down and 5xx/408 are outages that pass;
/// a 401/403 (key invalid or lacking `SIC_READ_ALERTS`) or a 404 (unknown alert) will not
/// change in the next two minutes, so waiting would only delay the on-call message.
pub(crate) fn classify_status(status: u16) -> StatusClass {
    match status {
        200..=299 => StatusClass::Success,
        300..=399 => StatusClass::Redirect,
        408 | 429 | 500..=599 => StatusClass::Retry,
        _ => StatusClass::GiveUp,
    }
}

/// Whether an answer to the list call (`GET /v1/sic/alerts?match[uuid]=…`) says the endpoint
/// is refused to this client, rather than failing for now.
///
/// Rule: any 4xx but 408 and 429. Reason: a 401/403 (the key may read alerts one by one but
/// not list them), 404 or 405 (a proxy or an API without the list) will answer the same to
/// the next batch, so asking again would cost one wasted call per claim; a timeout, a 429 or
/// a 5xx passes, and the next batch tries again.
pub(crate) fn list_refused(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 408 | 429)
}

/// The Alert API client's retry policy: 250 ms doubling up to 10 s, full jitter.
///
/// Rule and reason: exponential so a struggling API (and SEKOIA.IO's WAF, which blocks clients
/// that keep failing) gets room; full jitter so the delivery workers, which all hit the same
/// outage at once, do not retry in lockstep; capped at 10 s so a recovery is noticed quickly
/// within the 120 s enrichment deadline. Tests pass a policy in milliseconds instead.
pub(crate) fn default_retry_policy() -> RetryPolicy {
    RetryPolicy::exponential(
        Duration::from_millis(250),
        Duration::from_secs(10),
        Jitter::Full,
    )
}

/// How long to sleep before the next attempt.
///
/// Rule: the jittered backoff, pushed later (never earlier) by `Retry-After`, and cut at the
/// time left before the enrichment deadline. Reason: `Retry-After` is the server's earliest
/// useful time, but a message must not wait past `enrich_deadline_secs` for it: at the
/// deadline the relay makes its last attempt and then sends the alert unenriched.
pub(crate) fn next_delay(
    backoff: Duration,
    retry_after: Option<Duration>,
    remaining: Duration,
) -> Duration {
    honour_retry_after(backoff, retry_after, remaining).min(remaining)
}

/// Longest excerpt of an error body kept for logs, in characters.
pub(crate) const EXCERPT_CHARS: usize = 200;

/// What an error response body says, for logs only.
///
/// Rule: the JSON `message` first (what SEKOIA's SDK reads), then `detail` / `error`, else the
/// raw text; cut to [`EXCERPT_CHARS`] characters at a character boundary, control characters
/// replaced by spaces. Reason: the error format is undocumented, and a hostile or huge body
/// must neither flood nor forge log lines.
pub(crate) fn error_excerpt(body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            ["message", "detail", "error"].iter().find_map(|k| {
                v.get(k)
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
            })
        });
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let mut out: String = text
        .trim()
        .chars()
        .take(EXCERPT_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.trim().chars().nth(EXCERPT_CHARS).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_call_refused_for_good_is_told_from_one_that_failed_for_now() {
        for refused in [400, 401, 403, 404, 405, 410] {
            assert!(list_refused(refused), "{refused}");
        }
        for passing in [200, 302, 408, 429, 500, 502, 503] {
            assert!(!list_refused(passing), "{passing}");
        }
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify_status(200), StatusClass::Success);
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(classify_status(s), StatusClass::Retry, "{s}");
        }
        for s in [301, 302, 307, 308] {
            assert_eq!(classify_status(s), StatusClass::Redirect, "{s}");
        }
        for s in [400, 401, 403, 404, 410, 422] {
            assert_eq!(classify_status(s), StatusClass::GiveUp, "{s}");
        }
    }

    #[test]
    fn backoff_ceiling_doubles_from_the_base_up_to_the_max() {
        let ceiling = |retry| default_retry_policy().delay(retry, 1.0);
        assert_eq!(ceiling(1), Duration::from_millis(250));
        assert_eq!(ceiling(2), Duration::from_millis(500));
        assert_eq!(ceiling(3), Duration::from_secs(1));
        assert_eq!(ceiling(6), Duration::from_secs(8));
        assert_eq!(ceiling(7), Duration::from_secs(10));
        assert_eq!(ceiling(1000), Duration::from_secs(10));
        // retry 0 is treated as the first retry rather than underflowing
        assert_eq!(ceiling(0), Duration::from_millis(250));
    }

    #[test]
    fn backoff_is_full_jitter_over_the_ceiling() {
        let backoff_delay = |retry, unit| default_retry_policy().delay(retry, unit);
        assert_eq!(backoff_delay(3, 0.0), Duration::ZERO);
        assert_eq!(backoff_delay(3, 0.5), Duration::from_millis(500));
        // out-of-range or non-finite randomness cannot escape [0, ceiling]
        assert_eq!(backoff_delay(3, 7.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(3, -1.0), Duration::ZERO);
        // a non-finite draw waits the full ceiling (the one rule of crate::retry)
        assert_eq!(backoff_delay(3, f64::NAN), Duration::from_secs(1));
    }

    #[test]
    fn retry_after_only_pushes_later_and_the_deadline_caps_everything() {
        let ms = Duration::from_millis;
        let big = Duration::from_secs(600);
        assert_eq!(next_delay(ms(300), None, big), ms(300));
        assert_eq!(next_delay(ms(300), Some(ms(1000)), big), ms(1000));
        assert_eq!(next_delay(ms(300), Some(Duration::ZERO), big), ms(300));
        assert_eq!(next_delay(ms(300), Some(ms(5000)), ms(800)), ms(800));
        assert_eq!(next_delay(ms(300), None, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn error_excerpt_prefers_the_json_message_then_bounded_raw_text() {
        assert_eq!(
            error_excerpt(br#"{"message":"Insufficient permissions","code":7}"#),
            "Insufficient permissions"
        );
        assert_eq!(error_excerpt(br#"{"detail":"nope"}"#), "nope");
        assert_eq!(
            error_excerpt(b"Forbidden: Insufficient permissions\n"),
            "Forbidden: Insufficient permissions"
        );
        assert_eq!(error_excerpt(b"line1\nline2"), "line1 line2");
        let long = "é".repeat(5000);
        let cut = error_excerpt(long.as_bytes());
        assert_eq!(cut.chars().count(), EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(error_excerpt(&[0xff, 0xfe, b'x']), "\u{fffd}\u{fffd}x");
        assert_eq!(error_excerpt(b""), "");
    }
}
