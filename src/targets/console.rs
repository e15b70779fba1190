//! The console: plain text on stdout, for trying the relay and for log collectors.

use std::borrow::Cow;

use serde_json::Value;

use super::{Output, TargetKind, TargetKindSpec};

/// Console: stdout, capped so a huge alert cannot flood the terminal or the log collector.
pub const CONSOLE_MAX_BYTES: usize = 65_536;

pub struct Console;

impl TargetKindSpec for Console {
    fn kind(&self) -> TargetKind {
        TargetKind::Console
    }

    fn output(&self) -> Output {
        Output::StdoutText
    }

    /// Unlimited: writing to stdout needs no pacing.
    fn default_rate_limit_per_sec(&self) -> u32 {
        0
    }

    fn builtin_template(&self) -> (&'static str, &'static str) {
        (
            "builtin/console.txt.j2",
            include_str!("../../templates/console.txt.j2"),
        )
    }

    fn max_body_bytes(&self) -> usize {
        CONSOLE_MAX_BYTES
    }

    /// Text, not JSON: nothing to check.
    fn check_envelope(&self, _body: &Value) -> Result<(), String> {
        Ok(())
    }

    /// Unchanged: the console has no markup (control characters are removed on output).
    fn md_escape<'a>(&self, s: &'a str) -> Cow<'a, str> {
        Cow::Borrowed(s)
    }
}
