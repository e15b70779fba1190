//! A fetched alert and the memory it may take.
//!
//! Every alert object in memory holds a share of one budget, [`ALERT_MEMORY`], for as long as
//! anything (a delivery task, the cache) still uses it. A storm of hostile answers (bodies near
//! the cap, or small bodies that parse into millions of nodes) then waits for memory instead of
//! adding up: the relay's peak stays bounded whatever the API sends.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Largest alert body accepted. Real `stix=false` alerts are a few KiB: the realistic fixture
/// is 7 KiB and the hostile one, with every field at its worst, 21 KiB, so 1 MiB is a margin
/// of about 50× that no real alert reaches.
pub(crate) const MAX_ALERT_BYTES: usize = 1024 * 1024;

/// Parsed size allowed per body byte. Measured: the realistic fixture parses into about 3×
/// its size and the hostile one into about 2×; a body made of `[0,0,0,…]` would be 16×.
pub(crate) const MAX_EXPANSION: usize = 8;

/// The most one body may reserve before it is read (see [`reservation`]).
pub(crate) const MAX_RESERVATION: usize = MAX_ALERT_BYTES * MAX_EXPANSION;

/// Parsed alerts the cache keeps at most (moka weighs entries by [`Alert::charge`]).
pub(crate) const CACHE_MEMORY: usize = 2 * 1024 * 1024;

/// Memory all alerts in use may take together (estimated parsed size). It exceeds what the
/// cache may hold by a maximal reservation, so a body of unknown length always gets its turn
/// once in-flight deliveries finish, even while the cache is full; real alerts (about 20 KiB
/// parsed) fit by the hundreds.
pub(crate) const ALERT_MEMORY: usize = CACHE_MEMORY + MAX_RESERVATION + 2 * 1024 * 1024;

/// An alert object as returned by the Alert API, with its share of [`ALERT_MEMORY`].
#[derive(Debug)]
pub struct Alert {
    json: Value,
    charge: usize,
    _memory: OwnedSemaphorePermit,
}

impl Alert {
    pub fn json(&self) -> &Value {
        &self.json
    }

    /// The memory this alert is charged for (its estimated parsed size).
    pub fn charge(&self) -> usize {
        self.charge
    }
}

/// The shared budget alerts are charged to.
#[derive(Debug, Clone)]
pub(crate) struct AlertMemory(Arc<Semaphore>);

impl AlertMemory {
    pub fn new(total: usize) -> Self {
        Self(Arc::new(Semaphore::new(total)))
    }

    /// Wait until `n` units are free and reserve them. `None` only if the budget was closed.
    pub async fn reserve(&self, n: usize) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
        self.0.clone().acquire_many_owned(n).await.ok()
    }

    #[cfg(test)]
    pub fn available(&self) -> usize {
        self.0.available_permits()
    }
}

/// Why a parsed body is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TooLarge {
    pub charge: usize,
}

/// Keep `json` as an alert charged at its parsed size, returning what `reserved` held beyond
/// it to the budget; refuse it when it takes more than was reserved.
pub(crate) fn admit(json: Value, mut reserved: OwnedSemaphorePermit) -> Result<Alert, TooLarge> {
    let charge = parsed_size(&json);
    let held = reserved.num_permits();
    if charge > held {
        return Err(TooLarge { charge });
    }
    if let Some(extra) = reserved.split(held - charge.max(1)) {
        drop(extra);
    }
    Ok(Alert {
        json,
        charge,
        _memory: reserved,
    })
}

/// Units to reserve before reading a body.
///
/// Rule: [`MAX_EXPANSION`] × the announced `Content-Length` (the per-body cap when the length is
/// unknown or larger). Reason: the whole reservation is taken before reading, in one go, so a
/// reader never holds part of the budget while waiting for more (no deadlock); what the
/// parsed alert does not need is returned at once by [`admit`].
pub(crate) fn reservation(content_length: Option<u64>) -> usize {
    let body = content_length.map_or(MAX_ALERT_BYTES as u64, |n| n.min(MAX_ALERT_BYTES as u64));
    (body as usize).max(1) * MAX_EXPANSION
}

/// Estimated heap size of a parsed JSON value, in bytes.
///
/// Rule: each node's inline size, plus string capacities, array capacities and, per object
/// entry, its key and a B-tree slot. Reason: the body's length says little about memory (a
/// 2 MiB array of zeros is a million nodes); this estimate is what the budget is charged.
pub(crate) fn parsed_size(v: &Value) -> usize {
    const NODE: usize = std::mem::size_of::<Value>();
    // Key String (24) plus the B-tree's per-entry share of node overhead.
    const ENTRY: usize = 24 + 16;
    fn owned(v: &Value) -> usize {
        match v {
            Value::String(s) => s.capacity(),
            Value::Array(a) => a.capacity() * NODE + a.iter().map(owned).sum::<usize>(),
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| ENTRY + k.capacity() + NODE + owned(v))
                .sum(),
            _ => 0,
        }
    }
    NODE + owned(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsed_size_counts_nodes_strings_and_keys() {
        let node = std::mem::size_of::<Value>();
        assert_eq!(parsed_size(&Value::Null), node);
        assert_eq!(parsed_size(&Value::from("abcd")), node + 4);
        let zeros: Value = serde_json::from_str("[0,0,0,0]").unwrap();
        assert!(parsed_size(&zeros) >= node * 5);
        let obj: Value = serde_json::from_str(r#"{"ab": 1}"#).unwrap();
        assert_eq!(parsed_size(&obj), node + 40 + 2 + node);
    }

    #[test]
    fn real_alerts_fit_the_expansion_allowed_and_a_zero_array_does_not() {
        for raw in [
            include_str!("../../tests/fixtures/alert.json"),
            include_str!("../../tests/fixtures/alert-hostile.json"),
            include_str!("../../tests/fixtures/alert-minimal.json"),
        ] {
            let v: Value = serde_json::from_str(raw).unwrap();
            let ratio = parsed_size(&v) as f64 / raw.len() as f64;
            assert!(ratio < MAX_EXPANSION as f64 / 2.0, "{ratio}");
        }
        let zeros = format!("{{\"a\":[{}0]}}", "0,".repeat(10_000));
        let v: Value = serde_json::from_str(&zeros).unwrap();
        assert!(parsed_size(&v) > zeros.len() * MAX_EXPANSION);
    }

    #[test]
    fn reservations_follow_the_announced_length_up_to_the_cap() {
        assert_eq!(reservation(Some(7_000)), 7_000 * MAX_EXPANSION);
        assert_eq!(reservation(Some(0)), MAX_EXPANSION);
        assert_eq!(reservation(Some(u64::MAX)), MAX_RESERVATION);
        assert_eq!(reservation(None), MAX_RESERVATION);
        const { assert!(MAX_RESERVATION + CACHE_MEMORY < ALERT_MEMORY) };
    }

    #[tokio::test]
    async fn an_admitted_alert_holds_only_its_charge_until_dropped() {
        let memory = AlertMemory::new(100_000);
        let permit = memory.reserve(50_000).await.unwrap();
        let json: Value = serde_json::from_str(r#"{"title": "x"}"#).unwrap();
        let alert = admit(json, permit).unwrap();
        assert_eq!(memory.available(), 100_000 - alert.charge());
        drop(alert);
        assert_eq!(memory.available(), 100_000);

        let permit = memory.reserve(10).await.unwrap();
        let big = Value::from("y".repeat(100));
        assert!(admit(big, permit).is_err());
        assert_eq!(
            memory.available(),
            100_000,
            "a refused body returns everything"
        );
    }
}
