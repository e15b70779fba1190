//! Delivery policies as pure functions: what a response means and when to try again.

use std::time::Duration;

use crate::domain::TargetKind;

/// What a target's answer means for the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again later (the target or the network may recover); counts as an attempt.
    Retry,
    /// 429: the target asks to slow down. Pauses the target and never counts as an attempt.
    Throttled,
    /// 3xx: redirects are never followed; the URL must be updated by a human.
    Redirected,
    /// Retrying cannot help (the payload or the URL is wrong): dead letter now.
    Permanent,
}

/// Classify an HTTP answer.
///
/// Rule: 2xx is delivered; 429 is throttled; 3xx is a redirect (permanent); 408, 425 and 5xx
/// except 501 are retried; every other status is permanent. Reason: timeouts, throttling and
/// server faults pass, while a 4xx means the payload or URL is wrong and resending the same
/// bytes cannot succeed; Mattermost answers 501 when incoming webhooks are disabled
/// server-wide, which no retry fixes. A 429 is the target working as designed, so it must not
/// use up the delivery's attempts. Redirects are not followed (as svix and hook0 do): a
/// 301/302 would be re-sent as a body-less GET whose 200 looks like a delivery, and a 307/308
/// would hand the body and the `headers` secrets to whatever host the target names.
///
/// One exception: a kind may report an error inside a 2xx body (the retired Teams connector
/// answered "Microsoft Teams endpoint returned HTTP error 429"); such a body is classified as
/// that status ([`crate::targets::TargetKindSpec::embedded_status`]).
pub fn classify(kind: TargetKind, status: u16, body: &str) -> Verdict {
    if (200..300).contains(&status) {
        if let Some(code) = kind.spec().embedded_status(body) {
            return classify_status(code);
        }
        return Verdict::Delivered;
    }
    classify_status(status)
}

fn classify_status(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        300..=399 => Verdict::Redirected,
        429 => Verdict::Throttled,
        408 | 425 => Verdict::Retry,
        501 => Verdict::Permanent,
        500..=599 => Verdict::Retry,
        _ => Verdict::Permanent,
    }
}

/// The dead-letter reason for a redirect: where the target pointed, by host only.
///
/// Rule: "target redirected to HOST: update the URL", HOST being `scheme://host[:port]` of the
/// `Location` resolved against the target URL (a relative one stays on the target's host).
/// Reason: the operator must know the URL moved and where, but a Location may carry a token in
/// its path or query like the webhook URL itself.
pub fn redirect_error(status: u16, target_url: &str, location: Option<&str>) -> String {
    let resolved = location.and_then(|loc| {
        url::Url::parse(target_url)
            .ok()
            .and_then(|base| base.join(loc).ok())
    });
    match resolved {
        Some(to) => format!(
            "target redirected to {} (HTTP {status}): update the URL; redirects are never followed",
            crate::secrets::redact_url(to.as_str())
        ),
        None => format!(
            "target redirected (HTTP {status}, no usable Location): update the URL; redirects are never followed"
        ),
    }
}

/// The default wait after each failed attempt; the last repeats until `max_age_secs`.
///
/// Rule: 5 s, 30 s, 2 min, 5 min, 15 min, then every 30 min: about 50 attempts over the
/// default 24 h horizon. Reason: a blip is retried at once, a chat tool that is down for hours
/// is neither hammered nor given up on (svix spreads its retries the same way), and once it
/// is back every waiting alert arrives within 30 minutes, which matters more to an on-call
/// team than svix's 10-hour gaps.
pub const DEFAULT_RETRY_SCHEDULE: [Duration; 6] = [
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(2 * 60),
    Duration::from_secs(5 * 60),
    Duration::from_secs(15 * 60),
    Duration::from_secs(30 * 60),
];

/// When the next attempt happens, never past the retry horizon.
///
/// Rule: `now + delay`, but no later than `horizon` (when the delivery reaches
/// `max_age_secs`). Reason: the last attempt is made at the horizon instead of after it, so
/// a target that came back in the final stretch still gets the alert rather than a dead letter
/// produced without trying.
pub fn next_attempt_at(now_ms: i64, delay: Duration, horizon_ms: i64) -> i64 {
    now_ms
        .saturating_add(delay.as_millis().min(i64::MAX as u128) as i64)
        .min(horizon_ms.max(now_ms))
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

/// How many deliveries of a target to claim now, given its `cap` of sends in flight.
///
/// Rule: all free slots when the target is idle or at least half its slots are free; none
/// otherwise (a finishing send wakes the dispatcher again). Reason: every claim is a store
/// round trip and, with PostgreSQL, a write; topping up one slot per finished send made that
/// one claim statement per delivery under load. Waiting for half the slots keeps claims
/// large while never leaving the target with less than half its slots busy.
pub fn claim_size(cap: usize, inflight: usize) -> usize {
    let free = cap.saturating_sub(inflight);
    if inflight == 0 || free * 2 >= cap {
        free
    } else {
        0
    }
}

/// Whether the alerts that `rows` deliveries of one hook need, claimed together, are fetched
/// in one list call before they are prepared.
///
/// Rule: when at least two rows need one. Reason: one request instead of N against the Alert
/// API, whose `max_requests_per_sec` (SEKOIA.IO's WAF asks for at most 5 a second) otherwise
/// paces a burst to an unpaced target one alert at a time, and less CPU per message. A row
/// alone keeps the single-alert call: a list call brings nothing more, and an alert it missed
/// is fetched on its own anyway.
pub fn fetch_together(rows: usize) -> bool {
    rows >= 2
}

/// Most threads `[delivery] threads` may ask for.
pub const MAX_DELIVERY_THREADS: usize = 256;

/// How many threads run deliveries (claim, enrich, render, post), given the setting
/// (`0` = automatic) and the cores the process may use.
///
/// Rule: the setting when given; otherwise half the cores, at least one. Reason: SEKOIA.IO
/// does not document retries of webhook calls, so acknowledging a webhook must never wait for
/// a core that deliveries took; deliveries wait safely in the store. The other half of the
/// cores stays with the HTTP server and the store. Chat tools take a few messages a second,
/// so one delivery thread is far more than they accept (the load test measured 3,900–5,300
/// unpaced deliveries a second on one thread). On 2 cores shared with the load generator and
/// the mocks, one thread instead of two raised accepted/s by 19 % and lowered CPU per event
/// by 9 % (medians of five pairs, docs/benchmarks.md).
pub fn delivery_threads(setting: usize, cores: usize) -> usize {
    if setting > 0 {
        setting
    } else {
        (cores / 2).max(1)
    }
}

/// Whether a delivery that just failed (retryably) should become a dead letter instead.
///
/// Rule: once the delivery is older than `max_age`, or after `max_attempts` counted attempts
/// when that optional cap is set (0 = no cap). Reason: the horizon is a time, so an outage of
/// hours is survived whatever the schedule; an alert that could not be delivered for a day is
/// better inspected by a human (dead letters) than retried forever.
pub fn exhausted(attempts: u32, max_attempts: u32, age: Duration, max_age: Duration) -> bool {
    (max_attempts > 0 && attempts >= max_attempts) || age >= max_age
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
    use crate::retry::{Jitter, RetryPolicy};

    #[test]
    fn claims_wait_for_half_the_slots_but_an_idle_target_claims_at_once() {
        assert_eq!(claim_size(32, 0), 32);
        assert_eq!(claim_size(32, 31), 0, "one free slot is not worth a claim");
        assert_eq!(claim_size(32, 17), 0);
        assert_eq!(claim_size(32, 16), 16);
        assert_eq!(claim_size(32, 32), 0);
        // A paced target with one slot claims whenever that slot is free.
        assert_eq!(claim_size(1, 0), 1);
        assert_eq!(claim_size(1, 1), 0);
        assert_eq!(claim_size(3, 1), 2);
        assert_eq!(claim_size(3, 2), 0);
    }

    #[test]
    fn two_rows_that_need_an_alert_share_one_list_call_and_one_row_does_not() {
        assert!(!fetch_together(0));
        assert!(!fetch_together(1));
        assert!(fetch_together(2));
        assert!(fetch_together(32));
    }

    #[test]
    fn deliveries_get_half_the_cores_unless_told_otherwise() {
        assert_eq!(delivery_threads(0, 1), 1);
        assert_eq!(delivery_threads(0, 2), 1);
        assert_eq!(delivery_threads(0, 3), 1);
        assert_eq!(delivery_threads(0, 8), 4);
        assert_eq!(
            delivery_threads(3, 2),
            3,
            "the setting wins, even above the cores"
        );
        assert_eq!(
            delivery_threads(0, 0),
            1,
            "an unknown core count still delivers"
        );
    }

    fn default_policy() -> RetryPolicy {
        RetryPolicy::new(DEFAULT_RETRY_SCHEDULE.to_vec(), Jitter::Half)
    }

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
            (429, Throttled),
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
        assert_eq!(classify(TargetKind::Teams, 200, body), Verdict::Throttled);
        let body = "Microsoft Teams endpoint returned HTTP error 413";
        assert_eq!(classify(TargetKind::Teams, 200, body), Verdict::Permanent);
        assert_eq!(classify(TargetKind::Teams, 200, "1"), Verdict::Delivered);
        // Only Teams is known to do this; other kinds' bodies are not parsed.
        assert_eq!(classify(TargetKind::Webhook, 200, body), Verdict::Delivered);
    }

    #[test]
    fn redirects_and_throttling_are_classified() {
        for status in [301, 302, 303, 307, 308] {
            assert_eq!(
                classify(TargetKind::Slack, status, ""),
                Verdict::Redirected,
                "{status}"
            );
        }
        assert_eq!(classify(TargetKind::Slack, 429, ""), Verdict::Throttled);
        let body = "Microsoft Teams endpoint returned HTTP error 429";
        assert_eq!(classify(TargetKind::Teams, 200, body), Verdict::Throttled);
    }

    #[test]
    fn redirect_errors_name_the_host_only() {
        let e = redirect_error(
            302,
            "https://hooks.slack.com/services/T/B/secret",
            Some("https://evil.example:8443/steal?token=abc"),
        );
        assert!(
            e.starts_with("target redirected to https://evil.example:8443 (HTTP 302)"),
            "{e}"
        );
        assert!(!e.contains("abc") && !e.contains("secret"), "{e}");
        let e = redirect_error(
            301,
            "https://hooks.slack.com/services/T/B/s",
            Some("/moved"),
        );
        assert!(e.contains("redirected to https://hooks.slack.com "), "{e}");
        let e = redirect_error(307, "https://x.test/a", None);
        assert!(e.contains("no usable Location"), "{e}");
    }

    #[test]
    fn the_default_schedule_spreads_over_the_day() {
        let day = Duration::from_secs(86400);
        let mut at = Duration::ZERO;
        let mut attempts = 1; // the first try, at once
        while at < day {
            at += default_policy().delay(attempts, 1.0);
            attempts += 1;
        }
        // Worst case (no jitter): about 50 tries in a day; never more than 30 min apart.
        assert!((45..=60).contains(&attempts), "{attempts}");
        assert_eq!(default_policy().delay(1, 1.0), Duration::from_secs(5));
        assert_eq!(default_policy().delay(100, 1.0), Duration::from_secs(1800));
        // Jittered within half a step: never sooner than half the scheduled wait.
        assert_eq!(default_policy().delay(1, 0.0), Duration::from_millis(2500));
    }

    #[test]
    fn the_last_attempt_lands_on_the_horizon() {
        assert_eq!(
            next_attempt_at(1_000, Duration::from_secs(5), 100_000),
            6_000
        );
        assert_eq!(
            next_attempt_at(1_000, Duration::from_secs(500), 100_000),
            100_000
        );
        // Already past the horizon: now (the caller dead-letters first anyway).
        assert_eq!(
            next_attempt_at(200_000, Duration::from_secs(5), 100_000),
            200_000
        );
    }

    #[test]
    fn exhaustion_by_age_or_the_optional_attempt_cap() {
        let day = Duration::from_secs(86400);
        assert!(!exhausted(1, 10, Duration::ZERO, day));
        assert!(exhausted(10, 10, Duration::ZERO, day));
        assert!(exhausted(1, 10, day, day));
        // 0 = no cap: only the age ends retries.
        assert!(!exhausted(10_000, 0, Duration::from_secs(86399), day));
        assert!(exhausted(1, 0, day, day));
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
