//! The durable queue: events and their per-target deliveries.
//!
//! [`Store`] is the one interface the rest of the relay uses. Two backends implement it:
//! - [`sqlite`]: embedded SQLite, the default. One server per file (claims live in memory).
//! - [`postgres`]: PostgreSQL shared by any number of replicas. Claims are rows leased with
//!   `FOR UPDATE SKIP LOCKED`, dedup is a unique key, pacing is shared through a table.
//!
//! Everything backend-specific stays in those modules: the relay sees events, claims,
//! outcomes, dead letters and send slots.

#[cfg(test)]
mod contract_tests;
mod postgres;
mod sqlite;
#[doc(hidden)]
pub mod testing;

use serde::Serialize;

pub use postgres::{redacted_url, PgStore};
pub use sqlite::SqliteStore;

use crate::configuration::Settings;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}")]
    Open {
        path: std::path::PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create {path}")]
    CreateDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("another sekoia-relay process is serving the store {path}: one server per store file")]
    Busy { path: std::path::PathBuf },
    #[error("store write failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The message of a PostgreSQL error; never the connection URL or its password.
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    #[error("[store] url: {0}")]
    Url(String),
    #[error("schema migration failed: {0}")]
    Migration(String),
    #[error(
        "the store's schema is version {found}, newer than this binary's {supported}: \
         run a sekoia-relay at least as new as the one that upgraded it"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("`store import` needs a PostgreSQL store: set [store] url")]
    NotPostgres,
    #[error("the store is shut down")]
    Closed,
}

/// A validated event ready to persist, with the targets it may reach.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub hook: String,
    pub dedup_key: String,
    pub kind: String,
    pub action: String,
    pub alert_uuid: Option<String>,
    pub short_id: Option<String>,
    pub body: String,
    pub targets: Vec<String>,
    pub dedup_window_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    Accepted { event_id: String },
    Duplicate { event_id: String },
}

/// A delivery claimed by this process: nobody else sends it until it is completed or released
/// (with PostgreSQL: or until this process stops renewing its lease).
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub event_id: String,
    pub hook: String,
    pub target: String,
    /// Attempts made before this one.
    pub attempts: u32,
    pub age_from_ms: i64,
    /// The alert's short id, for logs.
    pub short_id: Option<String>,
    pub event_json: String,
    /// The body rendered by an earlier attempt, re-sent as is on retries.
    pub body: Option<String>,
    /// When the relay acknowledged the event (unix ms), for the receipt-to-delivery latency.
    pub received_at_ms: i64,
    /// The event's `type`: `relay-digest` for a digest made by the storm planner.
    pub event_type: String,
    /// The alert as fetched once for this event (by the storm planner), if it was.
    pub alert_json: Option<String>,
}

/// How long a row of a target under storm control may wait unranked before claims take it
/// anyway (ms).
///
/// Rule: 10 s, fifty plans. Reason: fail open: if planning keeps failing (the store refusing
/// the plan's transaction, a bug), alerts must still go out, one by one, rather than wait for
/// a plan that never comes.
pub const UNRANKED_GRACE_MS: i64 = 10_000;

/// The `type` of the events the storm planner creates to carry a digest.
pub const DIGEST_EVENT_TYPE: &str = "relay-digest";

/// A delivery the storm planner may rank, collapse or digest: pending, due, not claimed by
/// anyone, never attempted (nothing of it was sent).
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: i64,
    pub hook: String,
    pub event_type: String,
    pub action: String,
    pub alert_uuid: Option<String>,
    pub short_id: Option<String>,
    pub event_json: String,
    pub alert_json: Option<String>,
    /// Set once planned.
    pub urgency: Option<i64>,
    pub next_at_ms: i64,
    pub received_at_ms: i64,
    /// Deliveries already folded into this one (a digest's alerts, an alert's older events).
    pub members: u32,
}

/// What the storm planner decided for one target, applied in one transaction. Rows claimed
/// in the meantime are left out (and so sent on their own): nothing is ever in two messages.
#[derive(Debug, Clone, Default)]
pub struct StormPlan {
    /// (delivery, urgency, new next_at): the claim order.
    pub ranks: Vec<(i64, i64, i64)>,
    /// (delivery, alert JSON): kept with the delivery's event, where none is yet.
    pub alerts: Vec<(i64, String)>,
    /// (member, the delivery that carries it).
    pub folds: Vec<(i64, FoldInto)>,
    pub new_digests: Vec<NewDigest>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoldInto {
    Delivery(i64),
    /// Index into [`StormPlan::new_digests`].
    NewDigest(usize),
}

#[derive(Debug, Clone)]
pub struct NewDigest {
    pub hook: String,
    pub urgency: i64,
    pub next_at_ms: i64,
}

/// What applying a plan did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanApplied {
    pub folded: usize,
    /// Digests created (those that got at least one member).
    pub digests: usize,
}

/// A delivery folded into another: a digest's alert, or an older event of a collapsed alert.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: i64,
    pub hook: String,
    pub event_json: String,
    pub alert_json: Option<String>,
    pub short_id: Option<String>,
    pub urgency: Option<i64>,
    pub received_at_ms: i64,
}

/// What happened to a claimed delivery.
#[derive(Debug, Clone)]
pub enum Outcome {
    Delivered {
        status: u16,
    },
    Retry {
        next_at_ms: i64,
        status: Option<u16>,
        error: String,
        response: Option<String>,
        body: Option<String>,
        /// False for a 429: throttling is the target working as designed, so it does not use
        /// up the delivery's attempts (the age horizon still applies).
        counts_attempt: bool,
    },
    Dead {
        status: Option<u16>,
        error: String,
        response: Option<String>,
        body: Option<String>,
    },
    /// No route of the hook matched: nothing to send, by design.
    Skipped {
        reason: String,
    },
    /// Not attempted (shutdown): back to pending with the attempt count unchanged.
    Release,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub pending: u64,
    pub inflight: u64,
    pub dead: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub event_id: String,
    pub hook: String,
    pub target: String,
    pub short_id: Option<String>,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub response: Option<String>,
    pub body: Option<String>,
    pub updated_at_ms: i64,
}

/// Where the living chat message of one alert in one bot-token target is (`slack_app`,
/// `mattermost_app`): later events of the alert edit it instead of posting anew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef {
    /// The channel id the message is in (Slack answers with the id even when a name was set).
    pub channel: String,
    /// Slack's `ts`, Mattermost's post id.
    pub message_id: String,
    /// When the message was posted (unix ms): the reference expires with `retention_days`.
    pub created_at_ms: i64,
}

/// What `store import` copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub events: u64,
    pub deliveries: u64,
    /// Events already in the destination (an earlier import): skipped with their deliveries.
    pub already_present: u64,
}

/// The newest migration a runner knows: the schema version this binary supports.
fn supported_version(runner: &refinery::Runner) -> i64 {
    runner
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

/// Refuse a store migrated by a newer binary: its schema may mean things this one ignores.
fn check_version(runner: &refinery::Runner, found: i64) -> Result<(), StoreError> {
    let supported = supported_version(runner);
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    Ok(())
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The spacing of send slots for a rate of `per_sec` (0 = unlimited).
///
/// Rule: `ceil(1000 / per_sec)` ms, 0 when unlimited. Reason: rounding up keeps every
/// one-second window at or under the documented limit (rounding down would let 3/s through a
/// 3/s limit plus one every few seconds); an unlimited key still takes a slot, so that a
/// shared `Retry-After` pause holds it back.
/// The shared pacing key of a target (its rate-limit slots and `Retry-After` pause).
pub fn target_pacing_key(target: &str) -> String {
    format!("target:{target}")
}

/// Milliseconds between two send slots at `per_sec` (0 = unlimited: no slots).
pub fn slot_interval_ms(per_sec: u32) -> i64 {
    if per_sec == 0 {
        0
    } else {
        i64::from(1000u32.div_ceil(per_sec))
    }
}

/// Sleep until the unix ms `at` (at once if it has passed).
pub async fn sleep_until_ms(at: i64) {
    let ms = (at - now_ms()).max(0) as u64;
    if ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// Run the same call on whichever backend this store is.
macro_rules! each_backend {
    ($store:expr, $b:ident => $call:expr) => {
        match $store {
            Store::Sqlite($b) => $call,
            Store::Postgres($b) => $call,
        }
    };
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Store {
    /// Open the configured store for a server: PostgreSQL when `[store] url` is set, else the
    /// SQLite file at `path` (taking its one-server lock). Applies pending schema migrations.
    pub async fn open(settings: &Settings) -> Result<Store, StoreError> {
        let s = &settings.store;
        if s.is_postgres() {
            Ok(Store::Postgres(PgStore::open(s).await?))
        } else {
            let path = settings.resolve(&s.path);
            let sync = s.sync;
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path, sync))
                .await
                .map_err(|_| StoreError::Closed)??;
            Ok(Store::Sqlite(store))
        }
    }

    /// Open the configured store for a command-line tool (dead letters, import): like
    /// [`Store::open`] but without the SQLite server lock, so it works next to a running server.
    pub async fn open_for_cli(settings: &Settings) -> Result<Store, StoreError> {
        let s = &settings.store;
        if s.is_postgres() {
            Ok(Store::Postgres(PgStore::open(s).await?))
        } else {
            let path = settings.resolve(&s.path);
            let store = tokio::task::spawn_blocking(move || SqliteStore::open_unlocked(&path))
                .await
                .map_err(|_| StoreError::Closed)??;
            Ok(Store::Sqlite(store))
        }
    }

    /// Which store this is, for logs and command output. Never contains a password.
    pub fn describe(&self) -> String {
        match self {
            Store::Sqlite(s) => format!("SQLite {}", s.path().display()),
            Store::Postgres(p) => format!("PostgreSQL {}", p.describe()),
        }
    }

    /// Persist an event and its deliveries, or find the duplicate within the dedup window.
    /// Returns only after the transaction is committed.
    pub async fn ingest(&self, event: NewEvent) -> Result<Ingested, StoreError> {
        each_backend!(self, b => b.ingest(event).await)
    }

    /// Claim up to `limit` due deliveries of `target`, oldest first.
    pub async fn claim(&self, target: &str, limit: usize) -> Result<Vec<Claimed>, StoreError> {
        each_backend!(self, b => b.claim(target, limit, false).await)
    }

    /// [`Store::claim`] for a target under storm control: a row the storm planner may still
    /// rank, collapse or digest is left for its next plan (at most `PLAN_EVERY` away), so
    /// nothing jumps the urgency order or escapes a digest by being claimed first; unless it
    /// has waited unranked for [`UNRANKED_GRACE_MS`] (planning is failing: fail open).
    pub async fn claim_ranked(
        &self,
        target: &str,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        each_backend!(self, b => b.claim(target, limit, true).await)
    }

    /// Record the outcome of a claimed delivery. With PostgreSQL only the lease holder's write
    /// counts: a replica whose lease was taken over records nothing (the new holder decides).
    pub async fn complete(&self, id: i64, outcome: Outcome) -> Result<(), StoreError> {
        each_backend!(self, b => b.complete(id, outcome).await)
    }

    /// When the earliest pending delivery of `targets` becomes due (unix ms), if any.
    pub async fn next_due(&self, targets: Vec<String>) -> Result<Option<i64>, StoreError> {
        each_backend!(self, b => b.next_due(targets).await)
    }

    pub async fn depth(&self) -> Result<QueueDepth, StoreError> {
        each_backend!(self, b => b.depth().await)
    }

    /// Up to `limit` deliveries of `target` the storm planner may act on, oldest first.
    pub async fn candidates(
        &self,
        target: &str,
        limit: usize,
    ) -> Result<Vec<Candidate>, StoreError> {
        each_backend!(self, b => b.candidates(target, limit).await)
    }

    /// Apply a storm plan for `target` in one transaction, skipping rows claimed meanwhile.
    pub async fn apply_plan(
        &self,
        target: &str,
        plan: StormPlan,
    ) -> Result<PlanApplied, StoreError> {
        each_backend!(self, b => b.apply_plan(target, plan).await)
    }

    /// The deliveries folded into `delivery`, oldest event first.
    pub async fn members(&self, delivery: i64) -> Result<Vec<Member>, StoreError> {
        each_backend!(self, b => b.members(delivery).await)
    }

    /// A real write through the same path as events: `/readyz` is 503 when this fails.
    pub async fn probe(&self) -> Result<(), StoreError> {
        each_backend!(self, b => b.probe().await)
    }

    /// Drop finished deliveries (delivered, dead, skipped, folded) and events older than the
    /// cut-off.
    pub async fn prune(&self, older_than_ms: i64) -> Result<usize, StoreError> {
        each_backend!(self, b => b.prune(older_than_ms).await)
    }

    /// The living message of `alert_uuid` in `target`, if one was posted and not expired.
    pub async fn message_ref(
        &self,
        target: &str,
        alert_uuid: &str,
    ) -> Result<Option<MessageRef>, StoreError> {
        each_backend!(self, b => b.message_ref(target, alert_uuid).await)
    }

    /// Remember (or replace, after a re-post) the living message of `alert_uuid` in `target`.
    pub async fn put_message_ref(
        &self,
        target: &str,
        alert_uuid: &str,
        r: &MessageRef,
    ) -> Result<(), StoreError> {
        each_backend!(self, b => b.put_message_ref(target, alert_uuid, r).await)
    }

    /// Forget message references posted before the cut-off (`retention_days`): a later event
    /// of such an old alert posts a new card.
    pub async fn prune_message_refs(&self, older_than_ms: i64) -> Result<usize, StoreError> {
        each_backend!(self, b => b.prune_message_refs(older_than_ms).await)
    }

    /// Reserve the next send slot of the pacing key `key` (a target, the SEKOIA.IO API), one
    /// slot every `interval_ms`, after any pause. Returns the unix ms at which the caller may
    /// send, or `None` when pacing is local to this process (SQLite: one server per store).
    pub async fn reserve_slot(
        &self,
        key: &str,
        interval_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(None),
            Store::Postgres(p) => p.reserve_slot(key, interval_ms).await.map(Some),
        }
    }

    /// Until when (unix ms) the pacing key `key` is paused for every replica; 0 when it is
    /// not, and always with SQLite.
    pub async fn paused_until(&self, key: &str) -> Result<i64, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(0),
            Store::Postgres(p) => p.paused_until(key).await,
        }
    }

    /// Pause the pacing key `key` until `until_ms` for every replica (a `Retry-After`).
    /// A no-op with SQLite, whose pauses are the process's own.
    pub async fn pause(&self, key: &str, until_ms: i64) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(_) => Ok(()),
            Store::Postgres(p) => p.pause(key, until_ms).await,
        }
    }

    /// Hand back every claim this process still holds (at shutdown: sends abandoned past the
    /// grace period), so the other replicas need not wait for the lease to end. SQLite: a
    /// no-op, its claims end with the process.
    pub async fn release_claims(&self) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(0),
            Store::Postgres(p) => p.release_claims().await,
        }
    }

    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        each_backend!(self, b => b.dead_letters().await)
    }

    /// Re-queue the given dead letters (or all with `None`). Attempts and age start afresh, and
    /// the stored body is dropped so the message is rendered again with the current templates:
    /// a dead letter is often a template mistake the operator has just fixed.
    pub async fn retry_dead(&self, ids: Option<Vec<i64>>) -> Result<usize, StoreError> {
        each_backend!(self, b => b.retry_dead(ids).await)
    }

    /// Delete every dead letter.
    pub async fn purge_dead(&self) -> Result<usize, StoreError> {
        each_backend!(self, b => b.purge_dead().await)
    }

    /// Copy the pending deliveries (with their events) and the dead letters of the SQLite
    /// store at `from` into this PostgreSQL store. Idempotent: events already copied (same
    /// public id) are skipped with their deliveries.
    pub async fn import_sqlite(&self, from: &std::path::Path) -> Result<ImportReport, StoreError> {
        let Store::Postgres(p) = self else {
            return Err(StoreError::NotPostgres);
        };
        let from = from.to_path_buf();
        let rows = tokio::task::spawn_blocking(move || sqlite::export(&from))
            .await
            .map_err(|_| StoreError::Closed)??;
        p.import(rows).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_never_exceed_the_rate() {
        assert_eq!(slot_interval_ms(0), 0);
        assert_eq!(slot_interval_ms(1), 1000);
        assert_eq!(slot_interval_ms(3), 334);
        assert_eq!(slot_interval_ms(5), 200);
        assert_eq!(slot_interval_ms(5000), 1);
    }
}

/// One event with the deliveries `store import` copies.
#[derive(Debug, Clone)]
pub(crate) struct ExportedEvent {
    pub public_id: String,
    pub hook: String,
    pub dedup_key: String,
    pub kind: String,
    pub action: String,
    pub alert_uuid: Option<String>,
    pub short_id: Option<String>,
    pub body: String,
    pub received_at: i64,
    pub deliveries: Vec<ExportedDelivery>,
}

#[derive(Debug, Clone)]
pub(crate) struct ExportedDelivery {
    pub target: String,
    pub state: String,
    pub attempts: i64,
    pub next_at: i64,
    pub age_from: i64,
    pub updated_at: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub response: Option<String>,
    pub body: Option<String>,
}
