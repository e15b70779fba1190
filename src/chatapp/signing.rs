//! Verifying that a button press comes from the chat tool.
//!
//! Slack signs every request to the interactivity URL
//! (<https://api.slack.com/authentication/verifying-requests-from-slack>):
//! `X-Slack-Signature: v0=hex(HMAC-SHA256(signing_secret, "v0:{X-Slack-Request-Timestamp}:{body}"))`.
//! Mattermost signs nothing: the relay puts a per-target secret in each button's `context`,
//! which Mattermost sends back with the press.

use std::collections::HashMap;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a request's timestamp may be from now, in seconds (Slack's advice: 5 minutes).
pub const MAX_SKEW_SECS: i64 = 5 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("missing X-Slack-Signature or X-Slack-Request-Timestamp")]
    MissingHeader,
    #[error("timestamp more than 5 minutes from now")]
    Stale,
    #[error("signature does not match")]
    BadSignature,
    #[error("request already seen (replay)")]
    Replayed,
}

/// Check a Slack signature.
///
/// Rule: the timestamp is an integer within [`MAX_SKEW_SECS`] of `now_secs`, the signature is
/// `v0=` and 64 hex digits, and its HMAC-SHA256 over `v0:{ts}:{body}` with `secret` matches,
/// compared in constant time (`verify_slice`). Reason: Slack's documented scheme; the window
/// limits replays to 5 minutes (the replay guard closes those), and a constant-time compare
/// leaks nothing about the expected value.
pub fn verify_slack(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_secs: i64,
) -> Result<(), Refusal> {
    let (Some(ts), Some(sig)) = (timestamp, signature) else {
        return Err(Refusal::MissingHeader);
    };
    let t: i64 = ts.trim().parse().map_err(|_| Refusal::Stale)?;
    if (now_secs - t).abs() > MAX_SKEW_SECS {
        return Err(Refusal::Stale);
    }
    let hex = sig.strip_prefix("v0=").ok_or(Refusal::BadSignature)?;
    let expected = decode_hex(hex).ok_or(Refusal::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| Refusal::BadSignature)?;
    mac.update(b"v0:");
    mac.update(ts.trim().as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| Refusal::BadSignature)
}

/// `v0=…` for `body` at `ts`: what Slack sends (for tests and `send-test`).
pub fn sign_slack(secret: &[u8], ts: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("v0:{ts}:").as_bytes());
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// The secret a `mattermost_app` target's buttons carry in their `context`.
///
/// Rule: hex(HMAC-SHA256(target token, "sekoia-relay mattermost actions:" + target name)).
/// Reason: Mattermost signs nothing, so the relay must recognise its own buttons; deriving the
/// secret from the token needs no new key, gives every replica and every restart the same
/// value (a card posted yesterday still works), differs per target, reveals nothing about
/// the token, and changes when the token is rotated (old cards' buttons then get 401).
/// Mattermost strips `integration.context` before a post reaches users' clients.
pub fn mattermost_secret(token: &str, target: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"sekoia-relay mattermost actions:");
    mac.update(target.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Constant-time equality of two secrets (Mattermost's per-target action secret).
pub fn same_secret(a: &str, b: &str) -> bool {
    // Every byte is looked at whatever the first difference: no early exit to time.
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Signatures seen in the last [`MAX_SKEW_SECS`]: a captured press sent again inside the
/// timestamp window is refused. In memory: each replica guards its own window.
#[derive(Default)]
pub struct ReplayGuard {
    seen: Mutex<HashMap<String, i64>>,
}

impl ReplayGuard {
    /// Record `signature` at `now_secs`; `Err(Replayed)` if it was already seen.
    pub fn check(&self, signature: &str, now_secs: i64) -> Result<(), Refusal> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|_, at| now_secs - *at <= MAX_SKEW_SECS);
        if seen.contains_key(signature) {
            return Err(Refusal::Replayed);
        }
        seen.insert(signature.to_string(), now_secs);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Slack's documented example (verifying-requests-from-slack).
    const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn slacks_example_verifies_and_every_change_is_refused() {
        let now = 1531420618 + 10;
        assert_eq!(sign_slack(SECRET, TS, BODY), SIG);
        assert_eq!(verify_slack(SECRET, Some(TS), Some(SIG), BODY, now), Ok(()));
        assert_eq!(
            verify_slack(b"wrong", Some(TS), Some(SIG), BODY, now),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            verify_slack(SECRET, Some(TS), Some(SIG), b"token=other", now),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            verify_slack(SECRET, Some(TS), Some(SIG), BODY, now + 301),
            Err(Refusal::Stale)
        );
        assert_eq!(
            verify_slack(SECRET, None, Some(SIG), BODY, now),
            Err(Refusal::MissingHeader)
        );
        assert_eq!(
            verify_slack(SECRET, Some(TS), Some("a2114d57"), BODY, now),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn the_mattermost_secret_is_stable_and_differs_per_target_and_token() {
        let a = mattermost_secret("tok-1", "ops");
        assert_eq!(a, mattermost_secret("tok-1", "ops"));
        assert_eq!(a.len(), 64);
        assert_ne!(a, mattermost_secret("tok-1", "soc"));
        assert_ne!(a, mattermost_secret("tok-2", "ops"));
        assert!(!a.contains("tok-1"));
        assert!(same_secret(&a, &mattermost_secret("tok-1", "ops")));
        assert!(!same_secret(&a, &a[..63]));
    }

    #[test]
    fn a_signature_is_accepted_once_per_window() {
        let guard = ReplayGuard::default();
        assert_eq!(guard.check("v0=ab", 100), Ok(()));
        assert_eq!(guard.check("v0=ab", 200), Err(Refusal::Replayed));
        assert_eq!(guard.check("v0=cd", 200), Ok(()));
        // Past the window the timestamp check refuses it anyway; the guard forgets it.
        assert_eq!(guard.check("v0=ab", 100 + MAX_SKEW_SECS + 1), Ok(()));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
