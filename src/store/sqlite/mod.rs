//! The embedded SQLite backend: one file, one server.
//!
//! One writer thread owns the connection. Requests queue on a channel and the thread runs
//! whatever has queued in *one* transaction (group commit): with `sync = "full"` each commit
//! costs an fsync, so a burst of N concurrent webhooks costs one fsync, not N. A caller gets its
//! answer only after the commit returned, which is what makes "202 means persisted" true.

mod dead_letters;
mod message_refs;
mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub(crate) use dead_letters::export;
use dead_letters::DeadLetters;
use message_refs::MessageRefs;

use super::{
    Candidate, Claimed, DeadLetter, Ingested, Member, MessageRef, NewEvent, Outcome, PlanApplied,
    QueueDepth, StoreError, StormPlan,
};
use crate::configuration::SyncMode;

/// Most commands one transaction takes: bounds the latency a commit adds to the first request
/// of a batch while still amortising the fsync across a burst.
const MAX_BATCH: usize = 1024;

enum Command {
    Ingest(NewEvent, oneshot::Sender<Result<Ingested, StoreError>>),
    Claim {
        target: String,
        limit: usize,
        ranked_only: bool,
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
    // Storm control: answered on the writer thread, which knows what is claimed.
    Candidates {
        target: String,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<Candidate>, StoreError>>,
    },
    Plan {
        target: String,
        plan: StormPlan,
        reply: oneshot::Sender<Result<PlanApplied, StoreError>>,
    },
    Members(i64, oneshot::Sender<Result<Vec<Member>, StoreError>>),
}

/// Handle to the SQLite store; cheap to clone. The writer thread stops when the last handle drops.
#[derive(Clone)]
pub struct SqliteStore {
    tx: mpsc::Sender<Command>,
    path: PathBuf,
}

pub(crate) use super::now_ms;

mod embedded {
    refinery::embed_migrations!("src/store/sqlite/migrations");
}

/// Apply the pending migrations, refusing a file whose schema is newer than this binary.
fn migrate(conn: &mut rusqlite::Connection) -> Result<(), StoreError> {
    let runner = embedded::migrations::runner();
    let has_history: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'refinery_schema_history')",
        [],
        |r| r.get(0),
    )?;
    let found = if has_history {
        conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM refinery_schema_history",
            [],
            |r| r.get(0),
        )?
    } else {
        0
    };
    super::check_version(&runner, found)?;
    runner
        .run(conn)
        .map_err(|e| StoreError::Migration(e.to_string()))?;
    Ok(())
}

/// Open a connection with the relay's pragmas; creates the file, its directory and the schema.
pub(crate) fn connect(
    path: &Path,
    sync: SyncMode,
    busy: Duration,
) -> Result<rusqlite::Connection, StoreError> {
    ensure_dir(path)?;
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
        // Plans must not depend on bound values. Otherwise SQLite (built with STAT4) recompiles
        // a statement whenever a parameter it compared against a partial index's condition is
        // bound again: the claim's `?4 = 0` made every claim a fresh parse and plan, about a
        // tenth of the writer thread's CPU under load.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        Ok(conn)
    };
    let mut conn = open(path).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    migrate(&mut conn)?;
    Ok(conn)
}

fn ensure_dir(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Take the server lock, waiting a little for a previous `Store` of this process to wind down.
fn lock_exclusive(path: &Path) -> Result<std::fs::File, StoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    ensure_dir(path)?;
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

impl SqliteStore {
    /// Open (or create) the store and start its writer thread. Deliveries left in flight by a
    /// previous process (crash, kill -9) are simply pending again: claims live in memory.
    ///
    /// One server per store file: claims are in memory, so a second server would send the same
    /// rows. An exclusive lock on `<path>.lock` (released by the OS when the process dies, even
    /// on kill -9) turns that mistake into a clear startup error. The CLI does not take it.
    pub fn open(path: &Path, sync: SyncMode) -> Result<SqliteStore, StoreError> {
        let lock = lock_exclusive(path)?;
        Self::start(path, sync, Some(lock))
    }

    /// Open without the server lock, for the command line next to a running server: WAL mode
    /// and a busy timeout make sharing the file safe.
    pub fn open_unlocked(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::start(path, SyncMode::Full, None)
    }

    fn start(
        path: &Path,
        sync: SyncMode,
        lock: Option<std::fs::File>,
    ) -> Result<SqliteStore, StoreError> {
        // Short: a webhook must get its 503 (and retry) quickly rather than hang on a lock.
        let conn = connect(path, sync, Duration::from_secs(2))?;
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                writer::run(conn, rx, sync);
                // Held for the writer's whole life: released once the last handle is gone.
                drop(lock);
            })
            .map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok(SqliteStore {
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
    pub async fn claim(
        &self,
        target: &str,
        limit: usize,
        ranked_only: bool,
    ) -> Result<Vec<Claimed>, StoreError> {
        let target = target.to_string();
        self.call(|reply| Command::Claim {
            target,
            limit,
            ranked_only,
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

    pub async fn candidates(
        &self,
        target: &str,
        limit: usize,
    ) -> Result<Vec<Candidate>, StoreError> {
        let target = target.to_string();
        self.call(|reply| Command::Candidates {
            target,
            limit,
            reply,
        })
        .await
    }

    pub async fn apply_plan(
        &self,
        target: &str,
        plan: StormPlan,
    ) -> Result<PlanApplied, StoreError> {
        let target = target.to_string();
        self.call(|reply| Command::Plan {
            target,
            plan,
            reply,
        })
        .await
    }

    pub async fn members(&self, delivery: i64) -> Result<Vec<Member>, StoreError> {
        self.call(|r| Command::Members(delivery, r)).await
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

impl SqliteStore {
    /// Dead-letter commands run on their own connection, off the writer thread (they are rare
    /// and may scan the whole table).
    async fn with_dead_letters<T: Send + 'static>(
        &self,
        f: impl FnOnce(&DeadLetters) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || f(&DeadLetters::open(&path)?))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.with_dead_letters(|d| d.list()).await
    }

    pub async fn retry_dead(&self, ids: Option<Vec<i64>>) -> Result<usize, StoreError> {
        self.with_dead_letters(move |d| d.retry(ids.as_deref()))
            .await
    }

    pub async fn purge_dead(&self) -> Result<usize, StoreError> {
        self.with_dead_letters(|d| d.purge()).await
    }

    /// Message references run on their own connection too (see `message_refs`).
    async fn with_message_refs<T: Send + 'static>(
        &self,
        f: impl FnOnce(&MessageRefs) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || f(&MessageRefs::open(&path)?))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    pub async fn message_ref(
        &self,
        target: &str,
        alert_uuid: &str,
    ) -> Result<Option<MessageRef>, StoreError> {
        let (target, alert_uuid) = (target.to_string(), alert_uuid.to_string());
        self.with_message_refs(move |m| m.get(&target, &alert_uuid))
            .await
    }

    pub async fn put_message_ref(
        &self,
        target: &str,
        alert_uuid: &str,
        r: &MessageRef,
    ) -> Result<(), StoreError> {
        let (target, alert_uuid, r) = (target.to_string(), alert_uuid.to_string(), r.clone());
        self.with_message_refs(move |m| m.put(&target, &alert_uuid, &r))
            .await
    }

    pub async fn prune_message_refs(&self, older_than_ms: i64) -> Result<usize, StoreError> {
        self.with_message_refs(move |m| m.prune(older_than_ms))
            .await
    }
}

#[cfg(test)]
mod tests {
    //! SQLite-only behaviour; what both backends promise is in `store::contract_tests`.
    use super::*;
    use crate::store::testing::event;

    fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("sub/relay.db"), SyncMode::Normal).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_second_server_on_the_same_file_is_refused() {
        let (dir, _store) = open();
        let err = SqliteStore::open(&dir.path().join("sub/relay.db"), SyncMode::Normal)
            .err()
            .expect("second open must fail");
        assert!(
            err.to_string().contains("one server per store file"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_row_whose_outcome_cannot_be_recorded_stays_claimed() {
        let (dir, store) = open();
        store.ingest(event("k1", &["a"])).await.unwrap();
        let first = store.claim("a", 10, false).await.unwrap();
        // Another connection holds the write lock past the busy timeout: the record fails.
        let conn = rusqlite::Connection::open(dir.path().join("sub/relay.db")).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let outcome = Outcome::Delivered { status: 200 };
        assert!(store.complete(first[0].id, outcome.clone()).await.is_err());
        assert!(
            store.claim("a", 10, false).await.unwrap().is_empty(),
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
            let store = SqliteStore::open(&path, SyncMode::Full).unwrap();
            store.ingest(event("k1", &["a"])).await.unwrap();
            assert_eq!(store.claim("a", 10, false).await.unwrap().len(), 1);
        }
        let store = SqliteStore::open(&path, SyncMode::Full).unwrap();
        let again = store.claim("a", 10, false).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 0);
    }

    #[test]
    fn a_store_created_before_versioned_migrations_opens_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(include_str!("migrations/V1__initial.sql"))
                .unwrap();
            conn.execute_batch(
                "INSERT INTO events (public_id, hook, dedup_key, type, action, body, received_at)
                 VALUES ('e1', 'soc', 'k', 'alert', 'created', '{}', 1);
                 INSERT INTO deliveries (event_id, target, state, next_at, age_from, updated_at)
                 VALUES (1, 'a', 'pending', 1, 1, 1);",
            )
            .unwrap();
        }
        let conn = connect(&path, SyncMode::Normal, Duration::from_secs(1)).unwrap();
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM deliveries", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn a_schema_newer_than_the_binary_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        drop(connect(&path, SyncMode::Normal, Duration::from_secs(1)).unwrap());
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
             VALUES (99, 'future', '2030-01-01T00:00:00Z', '0')",
            [],
        )
        .unwrap();
        let err = connect(&path, SyncMode::Normal, Duration::from_secs(1))
            .expect_err("a newer schema must be refused");
        assert!(
            matches!(
                err,
                StoreError::SchemaTooNew {
                    found: 99,
                    supported: 4
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("newer than this binary"), "{err}");
    }
}
