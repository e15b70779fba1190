//! Delivery policies as pure functions: what a response means and when to try again.

use std::time::{Duration, SystemTime};

use crate::configuration::TargetKind;

/// What a target's answer means for the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again later (the target or the network may recover).
    Retry,
    /// Retrying cannot help (the payload or the URL is wrong): dead letter now.
    Permanent,
}

/// Classify an HTTP answer.
///
/// Rule: 2xx is delivered; 408, 425, 429 and 5xx except 501 are retried; every other status is
/// permanent. Reason: timeouts, throttling and server faults pass, while a 4xx means the payload
/// or URL is wrong and resending the same bytes cannot succeed; Mattermost answers 501 when
/// incoming webhooks are disabled server-wide, which no retry fixes.
///
/// One exception (SPEC §5): the retired Teams connector answered 2xx with a body like
/// "Microsoft Teams endpoint returned HTTP error 429"; such a body is classified as that status.
pub fn classify(kind: TargetKind, status: u16, body: &str) -> Verdict {
    if (200..300).contains(&status) {
        if kind == TargetKind::Teams {
            if let Some(code) = teams_embedded_error(body) {
                return classify_status(code);
            }
        }
        return Verdict::Delivered;
    }
    classify_status(status)
}

fn classify_status(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 425 | 429 => Verdict::Retry,
        501 => Verdict::Permanent,
        500..=599 => Verdict::Retry,
        _ => Verdict::Permanent,
    }
}

/// The status code inside a Teams connector error text, if the body carries one.
pub fn teams_embedded_error(body: &str) -> Option<u16> {
    const MARKER: &str = "Microsoft Teams endpoint returned HTTP error ";
    let at = body.find(MARKER)? + MARKER.len();
    let digits: String = body[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok().or(Some(500))
}

/// Delay before attempt `attempt + 1`, after `attempt` failures (1-based), with full jitter.
///
/// Rule: pick uniformly in `[0, min(max, initial × 2^(attempt-1))]`; `unit` is the random draw
/// in `[0, 1)`. Reason: exponential growth stops hammering a target that is down, and full
/// jitter (AWS architecture blog, "Exponential Backoff And Jitter") spreads the retries of an
/// alert storm so they do not all land on the target in the same second.
pub fn backoff_delay(attempt: u32, initial: Duration, max: Duration, unit: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(32);
    let ceiling = initial
        .checked_mul(1u32 << exp.min(31))
        .unwrap_or(max)
        .min(max);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// Whether a delivery whose shared send slot is `wait_ms` away should go back to the queue.
///
/// Rule: yes when the wait exceeds both 5 s and ten slot intervals. Reason: such a wait is a
/// `Retry-After` pause set by another replica; a task sleeping through it would hold a delivery
/// slot (all of them, for an unlimited target) that other targets need. Ordinary queueing
/// behind other replicas stays well under ten intervals, and handing those slots back would
/// waste them and slow the target down.
pub fn hand_back_slot(wait_ms: i64, interval_ms: i64) -> bool {
    wait_ms > 5_000 && wait_ms > interval_ms.saturating_mul(10)
}

/// Parse a `Retry-After` header: delay-seconds or an HTTP date.
///
/// Rule: a non-negative integer is seconds; otherwise an IMF-fixdate is the moment to wait
/// for (a date in the past means "now"); anything else is ignored. Reason: RFC 9110 §10.2.3
/// allows both forms, and Slack, Teams and proxies use both.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The wait before the next attempt.
///
/// Rule: the jittered backoff, pushed later to the target's `Retry-After` when it gave one,
/// which is itself capped at `max`. Reason: Retry-After is the earliest moment the target will
/// accept us again (SPEC §5), but a hostile or buggy header must not park an alert for a day.
pub fn next_delay(backoff: Duration, retry_after: Option<Duration>, max: Duration) -> Duration {
    match retry_after {
        Some(ra) => backoff.max(ra.min(max)),
        None => backoff,
    }
}

/// Whether a delivery that just failed (retryably) should become a dead letter instead.
///
/// Rule: after `max_attempts` attempts, or once the delivery is older than `max_age`. Reason:
/// an alert that could not be delivered for a day is better inspected by a human (dead
/// letters) than retried forever.
pub fn exhausted(attempts: u32, max_attempts: u32, age: Duration, max_age: Duration) -> bool {
    attempts >= max_attempts || age >= max_age
}

/// Keep at most `max` bytes of a response body for diagnosis, cut at a character boundary.
pub fn excerpt(body: &str, max: usize) -> String {
    if body.len() <= max {
        return body.to_string();
    }
    let mut end = max;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &body[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        use Verdict::*;
        for (status, want) in [
            (200, Delivered),
            (202, Delivered),
            (204, Delivered),
            (400, Permanent),
            (401, Permanent),
            (403, Permanent),
            (404, Permanent),
            (408, Retry),
            (410, Permanent),
            (413, Permanent),
            (425, Retry),
            (429, Retry),
            (500, Retry),
            (501, Permanent),
            (502, Retry),
            (503, Retry),
            (504, Retry),
        ] {
            assert_eq!(classify(TargetKind::Slack, status, ""), want, "{status}");
        }
    }

    #[test]
    fn teams_error_text_in_a_2xx_counts_as_that_error() {
        let body = "Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP error 429 with ContextId tcid=0";
        assert_eq!(classify(TargetKind::Teams, 200, body), Verdict::Retry);
        let body = "Microsoft Teams endpoint returned HTTP error 413";
        assert_eq!(classify(TargetKind::Teams, 200, body), Verdict::Permanent);
        assert_eq!(classify(TargetKind::Teams, 200, "1"), Verdict::Delivered);
        // Only Teams is known to do this; other kinds' bodies are not parsed.
        assert_eq!(classify(TargetKind::Webhook, 200, body), Verdict::Delivered);
    }

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        let i = Duration::from_millis(1000);
        let m = Duration::from_secs(300);
        assert_eq!(backoff_delay(1, i, m, 1.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(2, i, m, 1.0), Duration::from_secs(2));
        assert_eq!(backoff_delay(5, i, m, 1.0), Duration::from_secs(16));
        assert_eq!(backoff_delay(30, i, m, 1.0), m);
        assert_eq!(backoff_delay(u32::MAX, i, m, 1.0), m);
        assert_eq!(backoff_delay(3, i, m, 0.5), Duration::from_secs(2));
        assert_eq!(backoff_delay(3, i, m, 0.0), Duration::ZERO);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn retry_after_pushes_later_but_is_capped() {
        let max = Duration::from_secs(300);
        let b = Duration::from_secs(2);
        assert_eq!(next_delay(b, None, max), b);
        assert_eq!(
            next_delay(b, Some(Duration::from_secs(10)), max),
            Duration::from_secs(10)
        );
        assert_eq!(next_delay(b, Some(Duration::from_secs(1)), max), b);
        assert_eq!(next_delay(b, Some(Duration::from_secs(86400)), max), max);
    }

    #[test]
    fn exhaustion_by_attempts_or_age() {
        let day = Duration::from_secs(86400);
        assert!(!exhausted(1, 10, Duration::ZERO, day));
        assert!(exhausted(10, 10, Duration::ZERO, day));
        assert!(exhausted(1, 10, day, day));
    }

    #[test]
    fn excerpts_cut_at_char_boundaries() {
        assert_eq!(excerpt("short", 10), "short");
        assert_eq!(excerpt("ééé", 3), "é…");
    }

    #[test]
    fn only_a_pause_hands_a_slot_back() {
        assert!(!hand_back_slot(0, 0));
        assert!(
            !hand_back_slot(3_000, 1_000),
            "queueing behind 3 replicas at 1/s"
        );
        assert!(!hand_back_slot(8_000, 1_000), "still under ten intervals");
        assert!(hand_back_slot(30_000, 1_000), "a Retry-After pause");
        assert!(hand_back_slot(6_000, 0), "an unlimited target paused");
        assert!(!hand_back_slot(4_000, 0));
    }
}
