//! The durable queue: events and their per-target deliveries, in embedded SQLite.
//!
//! Everything SQLite-specific lives in this module, behind [`Store`]. The rest of the relay
//! only sees events, claims and outcomes, so a PostgreSQL backend (claims with
//! `FOR UPDATE SKIP LOCKED`) can later implement the same methods.
//!
//! One writer thread owns the connection. Requests queue on a channel and the thread runs
//! whatever has queued in *one* transaction (group commit): with `sync = "full"` each commit
//! costs an fsync, so a burst of N concurrent webhooks costs one fsync, not N. A caller gets its
//! answer only after the commit returned, which is what makes "202 means persisted" true.

mod dead_letters;
mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use dead_letters::{DeadLetter, DeadLetters};

use crate::configuration::SyncMode;

/// Most commands one transaction takes: bounds the latency a commit adds to the first request
/// of a batch while still amortising the fsync across a burst.
const MAX_BATCH: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create {path}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another sekoia-relay process is serving the store {path}: one server per store file")]
    Busy { path: PathBuf },
    #[error("store write failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
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

/// A delivery claimed by this process: nobody else sends it until it is completed or released.
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

enum Command {
    Ingest(NewEvent, oneshot::Sender<Result<Ingested, StoreError>>),
    Claim {
        target: String,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<Claimed>, StoreError>>,
    },
    Complete(i64, Outcome, oneshot::Sender<Result<(), StoreError>>),
    NextDue(
        Vec<String>,
        oneshot::Sender<Result<Option<i64>, StoreError>>,
    ),
    Depth(oneshot::Sender<Result<QueueDepth, StoreError>>),
    Probe(oneshot::Sender<Result<(), StoreError>>),
    Prune {
        older_than_ms: i64,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
}

/// Handle to the store; cheap to clone. The writer thread stops when the last handle drops.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Command>,
    path: PathBuf,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Open a connection with the relay's pragmas; creates the file, its directory and the schema.
pub(crate) fn connect(
    path: &Path,
    sync: SyncMode,
    busy: Duration,
) -> Result<rusqlite::Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let open = |path: &Path| -> rusqlite::Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open(path)?;
        // The CLI (dead-letters) and the server share the file: wait for each other's locks.
        conn.busy_timeout(busy)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(
            None,
            "synchronous",
            match sync {
                SyncMode::Full => "FULL",
                SyncMode::Normal => "NORMAL",
            },
        )?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(include_str!("schema.sql"))?;
        Ok(conn)
    };
    open(path).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// Take the server lock, waiting a little for a previous `Store` of this process to wind down.
fn lock_exclusive(path: &Path) -> Result<std::fs::File, StoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| StoreError::CreateDir {
            path: PathBuf::from(&lock_path),
            source,
        })?;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => {
                return Err(StoreError::Busy {
                    path: path.to_path_buf(),
                })
            }
        }
    }
}

impl Store {
    /// Open (or create) the store and start its writer thread. Deliveries left in flight by a
    /// previous process (crash, kill -9) are simply pending again: claims live in memory.
    ///
    /// One server per store file: claims are in memory, so a second server would send the same
    /// rows. An exclusive lock on `<path>.lock` (released by the OS when the process dies, even
    /// on kill -9) turns that mistake into a clear startup error. The CLI does not take it.
    pub fn open(path: &Path, sync: SyncMode) -> Result<Store, StoreError> {
        // Short: a webhook must get its 503 (and retry) quickly rather than hang on a lock.
        let conn = connect(path, sync, Duration::from_secs(2))?;
        let lock = lock_exclusive(path)?;
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                writer::run(conn, rx);
                // Held for the writer's whole life: released once the last handle is gone.
                drop(lock);
            })
            .map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok(Store {
            tx,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Persist an event and its deliveries, or find the duplicate within the dedup window.
    /// Returns only after the transaction is committed.
    pub async fn ingest(&self, event: NewEvent) -> Result<Ingested, StoreError> {
        self.call(|r| Command::Ingest(event, r)).await
    }

    /// Claim up to `limit` due deliveries of `target`, oldest first.
    pub async fn claim(&self, target: &str, limit: usize) -> Result<Vec<Claimed>, StoreError> {
        let target = target.to_string();
        self.call(|reply| Command::Claim {
            target,
            limit,
            reply,
        })
        .await
    }

    pub async fn complete(&self, id: i64, outcome: Outcome) -> Result<(), StoreError> {
        self.call(|r| Command::Complete(id, outcome, r)).await
    }

    /// When the earliest pending delivery of `targets` becomes due (unix ms), if any.
    pub async fn next_due(&self, targets: Vec<String>) -> Result<Option<i64>, StoreError> {
        self.call(|r| Command::NextDue(targets, r)).await
    }

    pub async fn depth(&self) -> Result<QueueDepth, StoreError> {
        self.call(Command::Depth).await
    }

    /// A real write through the same path as events: `/readyz` is 503 when this fails.
    pub async fn probe(&self) -> Result<(), StoreError> {
        self.call(Command::Probe).await
    }

    /// Drop finished deliveries (delivered, dead, skipped) and events older than the cut-off.
    pub async fn prune(&self, older_than_ms: i64) -> Result<usize, StoreError> {
        self.call(|reply| Command::Prune {
            older_than_ms,
            reply,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, targets: &[&str]) -> NewEvent {
        NewEvent {
            hook: "soc".into(),
            dedup_key: key.into(),
            kind: "alert".into(),
            action: "created".into(),
            alert_uuid: Some("u".into()),
            short_id: Some("AL1".into()),
            body: "{}".into(),
            targets: targets.iter().map(|t| t.to_string()).collect(),
            dedup_window_ms: 60_000,
        }
    }

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("sub/relay.db"), SyncMode::Normal).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn ingest_then_duplicate() {
        let (_dir, store) = open();
        let a = store.ingest(event("k1", &["t"])).await.unwrap();
        let b = store.ingest(event("k1", &["t"])).await.unwrap();
        let Ingested::Accepted { event_id } = a else {
            panic!("{a:?}")
        };
        assert_eq!(b, Ingested::Duplicate { event_id });
        assert_eq!(store.depth().await.unwrap().pending, 1);
    }

    #[tokio::test]
    async fn concurrent_ingests_are_all_committed_once() {
        let (_dir, store) = open();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let s = store.clone();
            // Every key twice: exactly one of each pair is accepted, even inside one batch.
            tasks.push(tokio::spawn(async move {
                s.ingest(event(&format!("k{}", i / 2), &["a", "b"])).await
            }));
        }
        let mut accepted = 0;
        for t in tasks {
            if let Ingested::Accepted { .. } = t.await.unwrap().unwrap() {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 100);
        assert_eq!(store.depth().await.unwrap().pending, 200);
    }

    #[tokio::test]
    async fn claims_are_exclusive_and_outcomes_recorded() {
        let (_dir, store) = open();
        store.ingest(event("k1", &["a", "b"])).await.unwrap();
        let first = store.claim("a", 10).await.unwrap();
        assert_eq!(first.len(), 1);
        assert!(
            store.claim("a", 10).await.unwrap().is_empty(),
            "claimed twice"
        );
        store
            .complete(
                first[0].id,
                Outcome::Retry {
                    next_at_ms: now_ms() + 60_000,
                    status: Some(503),
                    error: "HTTP 503".into(),
                    response: None,
                    body: Some("{\"x\":1}".into()),
                    counts_attempt: true,
                },
            )
            .await
            .unwrap();
        assert!(
            store.claim("a", 10).await.unwrap().is_empty(),
            "not yet due"
        );
        assert!(store.next_due(vec!["a".into()]).await.unwrap().is_some());
        let b = store.claim("b", 10).await.unwrap();
        store
            .complete(
                b[0].id,
                Outcome::Dead {
                    status: Some(400),
                    error: "HTTP 400".into(),
                    response: Some("bad".into()),
                    body: Some("{}".into()),
                },
            )
            .await
            .unwrap();
        let depth = store.depth().await.unwrap();
        assert_eq!((depth.pending, depth.dead), (1, 1));
    }

    #[tokio::test]
    async fn a_second_server_on_the_same_file_is_refused() {
        let (dir, _store) = open();
        let err = Store::open(&dir.path().join("sub/relay.db"), SyncMode::Normal)
            .err()
            .expect("second open must fail");
        assert!(
            err.to_string().contains("one server per store file"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn released_rows_can_be_claimed_again() {
        let (_dir, store) = open();
        store.ingest(event("k1", &["a"])).await.unwrap();
        let first = store.claim("a", 10).await.unwrap();
        assert_eq!(store.depth().await.unwrap().inflight, 1);
        store.complete(first[0].id, Outcome::Release).await.unwrap();
        assert_eq!(store.claim("a", 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_row_whose_outcome_cannot_be_recorded_stays_claimed() {
        let (dir, store) = open();
        store.ingest(event("k1", &["a"])).await.unwrap();
        let first = store.claim("a", 10).await.unwrap();
        // Another connection holds the write lock past the busy timeout: the record fails.
        let conn = rusqlite::Connection::open(dir.path().join("sub/relay.db")).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let outcome = Outcome::Delivered { status: 200 };
        assert!(store.complete(first[0].id, outcome.clone()).await.is_err());
        assert!(
            store.claim("a", 10).await.unwrap().is_empty(),
            "released on a failed write: it would be sent again at once"
        );
        conn.execute_batch("ROLLBACK").unwrap();
        store.complete(first[0].id, outcome).await.unwrap();
        let depth = store.depth().await.unwrap();
        assert_eq!((depth.pending, depth.inflight), (0, 0));
    }

    #[tokio::test]
    async fn inflight_rows_return_to_pending_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        {
            let store = Store::open(&path, SyncMode::Full).unwrap();
            store.ingest(event("k1", &["a"])).await.unwrap();
            assert_eq!(store.claim("a", 10).await.unwrap().len(), 1);
        }
        let store = Store::open(&path, SyncMode::Full).unwrap();
        let again = store.claim("a", 10).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 0);
    }
}
