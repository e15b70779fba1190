//! One retry policy for every caller: a schedule of waits as data, a jitter rule, and the
//! `Retry-After` header. Pure functions (the caller passes `now` and a random draw), so every
//! rule is unit-tested. What an answer *means* stays with each caller
//! (`delivery::policy::classify`, `sekoia::policy::classify_status`).

use std::time::{Duration, SystemTime};

/// How a wait of the schedule is spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `[½·wait, wait]`: the schedule says the latest a retry happens, and half a
    /// step of spread keeps a storm's retries from hitting a recovering target together.
    Half,
    /// Uniform in `[0, wait]` ("full jitter"): for short exponential backoffs, where workers
    /// that hit the same outage at once must not retry in lockstep.
    Full,
}

/// When to try again after each failure.
///
/// The schedule is data, as in svix: the wait after the `n`-th failure is its `n`-th entry,
/// and the last entry repeats. An exponential backoff is the same thing, written out by
/// [`RetryPolicy::exponential`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    schedule: Vec<Duration>,
    jitter: Jitter,
}

impl RetryPolicy {
    /// The waits of `schedule` in order, the last repeating.
    pub fn new(schedule: Vec<Duration>, jitter: Jitter) -> RetryPolicy {
        RetryPolicy { schedule, jitter }
    }

    /// `base`, doubling after each failure, capped at `max`.
    pub fn exponential(base: Duration, max: Duration, jitter: Jitter) -> RetryPolicy {
        let mut schedule = Vec::new();
        let mut wait = base.min(max);
        // Doubling stops at `max` (or never grows, for a zero base); 32 steps bound it anyway.
        for _ in 0..32 {
            schedule.push(wait);
            let next = wait.saturating_mul(2).min(max);
            if next == wait {
                break;
            }
            wait = next;
        }
        RetryPolicy { schedule, jitter }
    }

    pub fn schedule(&self) -> &[Duration] {
        &self.schedule
    }

    /// The wait after the `failure`-th failure (1-based; 0 counts as the first) before jitter:
    /// its entry in the schedule, the last one once past the end, zero for an empty schedule.
    pub fn ceiling(&self, failure: u32) -> Duration {
        let idx = (failure.max(1) - 1) as usize;
        self.schedule
            .get(idx)
            .or(self.schedule.last())
            .copied()
            .unwrap_or(Duration::ZERO)
    }

    /// The jittered wait after the `failure`-th failure; `unit` is a random draw in `[0, 1)`.
    ///
    /// Rule: [`Self::ceiling`] scaled by the jitter rule; a draw outside `[0, 1]` is clamped and
    /// a non-finite one counts as 1 (the full wait). Reason: whatever the randomness, a retry
    /// is never later than the schedule says, and a broken draw errs on the patient side.
    pub fn delay(&self, failure: u32, unit: f64) -> Duration {
        let wait = self.ceiling(failure);
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            1.0
        };
        match self.jitter {
            Jitter::Half => wait.mul_f64(0.5 + unit / 2.0),
            Jitter::Full => wait.mul_f64(unit),
        }
    }
}

/// Parse a `Retry-After` header: delay-seconds or an HTTP date (RFC 9110, section 10.2.3,
/// allows both; Slack, Teams and proxies use both).
///
/// Rule: a non-negative integer is seconds; an IMF-fixdate is the moment to wait for, and a
/// date already past means "now" (`Some(ZERO)`); anything else is `None`. Reason: a past date
/// is a well-formed header saying the server is ready again, which is not the same as no
/// header; and since callers only ever push their own backoff later with it
/// ([`honour_retry_after`]), "now" never makes a retry come sooner. A malformed header is
/// ignored rather than trusted: the backoff alone decides.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The wait before the next attempt, given the server's `Retry-After`.
///
/// Rule: the backoff, pushed later (never earlier) to `Retry-After`, which is itself capped at
/// `max`. Reason: `Retry-After` is the earliest moment the server will accept us again, but a
/// hostile or buggy header must not park a message beyond the caller's limit.
pub fn honour_retry_after(
    backoff: Duration,
    retry_after: Option<Duration>,
    max: Duration,
) -> Duration {
    match retry_after {
        Some(ra) => backoff.max(ra.min(max)),
        None => backoff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn the_schedule_is_followed_and_its_last_wait_repeats() {
        let p = RetryPolicy::new(vec![S(5), S(30), S(60)], Jitter::Half);
        assert_eq!(p.ceiling(1), S(5));
        assert_eq!(p.ceiling(2), S(30));
        assert_eq!(p.ceiling(3), S(60));
        assert_eq!(p.ceiling(100), S(60));
        assert_eq!(p.ceiling(0), S(5));
        assert_eq!(
            RetryPolicy::new(vec![], Jitter::Half).delay(3, 1.0),
            Duration::ZERO
        );
    }

    #[test]
    fn exponential_is_a_doubling_schedule_capped_at_the_max() {
        let p = RetryPolicy::exponential(MS(250), S(10), Jitter::Full);
        assert_eq!(
            p.schedule(),
            [MS(250), MS(500), S(1), S(2), S(4), S(8), S(10)]
        );
        assert_eq!(p.ceiling(1000), S(10));
        assert_eq!(
            RetryPolicy::exponential(S(20), S(10), Jitter::Full).schedule(),
            [S(10)]
        );
        assert_eq!(
            RetryPolicy::exponential(Duration::ZERO, S(10), Jitter::Full).schedule(),
            [Duration::ZERO]
        );
    }

    #[test]
    fn jitter_stays_within_its_range_whatever_the_draw() {
        let half = RetryPolicy::new(vec![S(10), S(60)], Jitter::Half);
        assert_eq!(half.delay(1, 0.0), S(5));
        assert_eq!(half.delay(1, 1.0), S(10));
        assert_eq!(half.delay(2, 0.5), S(45));
        assert_eq!(half.delay(7, f64::NAN), S(60));
        let full = RetryPolicy::new(vec![S(1)], Jitter::Full);
        assert_eq!(full.delay(1, 0.0), Duration::ZERO);
        assert_eq!(full.delay(1, 0.5), MS(500));
        assert_eq!(full.delay(1, 7.0), S(1));
        assert_eq!(full.delay(1, -1.0), Duration::ZERO);
        assert_eq!(full.delay(1, f64::INFINITY), S(1));
    }

    #[test]
    fn retry_after_is_seconds_or_a_date_and_a_past_date_is_now() {
        let now = SystemTime::UNIX_EPOCH + S(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(S(7)));
        assert_eq!(parse_retry_after(" 30 ", now), Some(S(30)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + S(90));
        assert_eq!(parse_retry_after(&later, now), Some(S(90)));
        let earlier = httpdate::fmt_http_date(now - S(90));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn retry_after_only_pushes_later_and_is_capped() {
        let max = S(3600);
        assert_eq!(honour_retry_after(S(5), None, max), S(5));
        assert_eq!(honour_retry_after(S(5), Some(S(10)), max), S(10));
        assert_eq!(honour_retry_after(S(5), Some(S(1)), max), S(5));
        assert_eq!(honour_retry_after(S(5), Some(Duration::ZERO), max), S(5));
        assert_eq!(honour_retry_after(S(5), Some(S(86_400)), max), max);
    }
}
