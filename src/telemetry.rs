//! Logging setup (pretty or JSON, filtered by `RUST_LOG`) and the pacing of refusal lines.
//! What may be logged of a secret is decided in [`crate::secrets`].

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tracing_subscriber::{fmt, EnvFilter};

use crate::configuration::LogFormat;

/// Install the global subscriber. Safe to call more than once (later calls are no-ops), which
/// tests rely on.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: a log file or journald gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

/// Log lines about refused posts: a burst of this many, then one per second.
const REFUSAL_LOG_BURST: u32 = 20;

/// Paces the log lines about refused posts, counting the lines it holds back.
///
/// Rule: up to [`REFUSAL_LOG_BURST`] lines at once, then one per second; the next line logged
/// says how many were suppressed. Reason: each refusal must leave a trace (hook, reason,
/// client address) so a misconfigured sender or proxy can be diagnosed, but anyone on the
/// internet can post garbage, and a flood of refusals must not fill the disk (at most about
/// 86 400 lines a day).
pub struct RefusalLog {
    limiter: DefaultDirectRateLimiter,
    suppressed: AtomicU64,
}

impl RefusalLog {
    pub fn new() -> Self {
        let burst = NonZeroU32::new(REFUSAL_LOG_BURST).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::direct(Quota::per_second(NonZeroU32::MIN).allow_burst(burst)),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines suppressed since the last one)` when a line may be logged now.
    pub fn admit(&self) -> Option<u64> {
        if self.limiter.check().is_ok() {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn refusal_lines_are_paced_and_count_what_they_held_back() {
        let log = RefusalLog::new();
        for _ in 0..REFUSAL_LOG_BURST {
            assert_eq!(log.admit(), Some(0));
        }
        assert_eq!(log.admit(), None);
        assert_eq!(log.admit(), None);
        std::thread::sleep(Duration::from_millis(1050));
        assert_eq!(
            log.admit(),
            Some(2),
            "the next line says two were held back"
        );
        assert_eq!(log.admit(), None);
    }
}
