//! The PostgreSQL backend: one queue shared by any number of replicas.
//!
//! PostgreSQL does all the coordination, no home-made consensus:
//! - **persist, then ack**: `ingest` returns after its transaction committed;
//! - **dedup across replicas**: `dedup` has the key as primary key and `INSERT … ON CONFLICT`
//!   decides, so the same event posted to two replicas at once is accepted exactly once;
//! - **claims are leases**: `FOR UPDATE SKIP LOCKED` hands each due row to one replica, which
//!   writes its id and `lease_until`; a background task renews the leases of this replica
//!   every `lease_secs / 3`, so a replica that dies (SIGKILL, host lost) stops renewing and the
//!   others take its rows over once the lease expires. Outcomes are written only by the lease
//!   holder (`WHERE claimed_by = me`);
//! - **pacing**: one `UPDATE … RETURNING` per send reserves the next slot of a target (GCRA).
//!
//! Times are the replicas' clocks in unix ms, like SQLite: run NTP on the hosts (a skew eats
//! into `lease_secs`).

mod batch;
mod ingest;
mod message_refs;
mod outcomes;
mod storm;
mod tls;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{
    now_ms, Claimed, DeadLetter, ExportedEvent, ImportReport, Ingested, NewEvent, Outcome,
    QueueDepth, StoreError,
};
use crate::configuration::StoreSettings;
use secrecy::ExposeSecret;
use tls::TlsPolicy;

/// Key of the session advisory lock that serialises migrations: replicas starting at the same
/// moment apply them one after the other (the later ones find nothing to do).
const MIGRATION_LOCK: i64 = 0x5e_c01a_2e1a_0001;

/// How long a webhook may wait for a pooled connection (or a new one) before it gets its 503.
const POOL_TIMEOUT: Duration = Duration::from_secs(3);

mod embedded {
    refinery::embed_migrations!("src/store/postgres/migrations");
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // Display has the server's message (and the kind), never the connection parameters.
        StoreError::Postgres(error_text(&e))
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        StoreError::Postgres(match e {
            PoolError::Backend(e) => error_text(&e),
            PoolError::Timeout(_) => "no connection available in time (is PostgreSQL up?)".into(),
            other => other.to_string(),
        })
    }
}

fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            msg
        }
    }
}

/// The URL with its password replaced by `***`, for `check` and diagnostics. Something that
/// does not parse is not shown at all: it could be anything, including a bare password.
pub fn redacted_url(raw: &str) -> String {
    match url::Url::parse(raw.trim()) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(not a URL)".into(),
    }
}

fn build_pool(
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    size: usize,
) -> Result<Pool, StoreError> {
    let manager = Manager::from_connect(
        config,
        ConnectOnHome {
            tls,
            home: tokio::runtime::Handle::current(),
        },
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_TIMEOUT))
        .create_timeout(Some(POOL_TIMEOUT))
        .recycle_timeout(Some(POOL_TIMEOUT))
        .build()
        .map_err(|e| StoreError::Postgres(e.to_string()))
}

/// Opens pooled connections on the runtime the store was opened on, and drives their I/O
/// there, whoever asks for the connection first.
///
/// Reason: delivery threads run at a lower priority (`delivery::threads`). A connection first
/// asked for by a delivery would otherwise have its reads and writes driven by a delivery
/// thread for its whole life, and an ingest that later borrowed it would wait for that thread:
/// acknowledgements behind deliveries, the inversion the lower priority exists to prevent.
struct ConnectOnHome {
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    home: tokio::runtime::Handle,
}

impl deadpool_postgres::Connect for ConnectOnHome {
    fn connect(
        &self,
        pg_config: &tokio_postgres::Config,
    ) -> futures_util::future::BoxFuture<
        '_,
        Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
    > {
        let (tls, config) = (self.tls.clone(), pg_config.clone());
        Box::pin(async move {
            // The socket belongs to the reactor of the runtime that opens it, so the whole
            // connection is opened and driven there.
            let (tx, rx) = tokio::sync::oneshot::channel();
            let task = self.home.spawn(async move {
                match config.connect(tls).await {
                    Ok((client, connection)) => {
                        if tx.send(Ok(client)).is_ok() {
                            if let Err(e) = connection.await {
                                tracing::warn!(error = %error_text(&e), "PostgreSQL connection closed");
                            }
                        }
                    }
                    Err(e) => drop(tx.send(Err(e))),
                }
            });
            match rx.await {
                Ok(Ok(client)) => Ok((client, task)),
                Ok(Err(e)) => Err(e),
                // The home runtime is shutting down: the pool's create timeout answers.
                Err(_) => std::future::pending().await,
            }
        })
    }
}

/// The sessions of the bookkeeping pool commit with `synchronous_commit = off`: a commit
/// returns before its WAL is flushed. Only writes whose loss cannot lose an alert go there:
/// a claim (lost, the row is free again), a lease renewal (lost, the lease ends sooner) and a
/// success (lost, the message is sent once more). They are lost only if the PostgreSQL server
/// itself crashes within about three `wal_writer_delay`s (0.6 s by default) of the commit, and
/// any later flushed commit makes them durable too. Measured: claims and successes were two
/// thirds of the commits, each waiting for its own WAL flush (docs/benchmarks.md). Ingests,
/// failures and dead letters stay on the main pool and are flushed before anyone is answered.
fn relaxed(mut config: tokio_postgres::Config) -> tokio_postgres::Config {
    let options = match config.get_options() {
        Some(given) => format!("{given} -c synchronous_commit=off"),
        None => "-c synchronous_commit=off".to_owned(),
    };
    config.options(&options);
    config
}

/// Split a `postgres://` URL into tokio-postgres's config and the TLS policy. `sslmode` and
/// `sslrootcert` are read here (tokio-postgres knows only three modes and no root file).
fn parse_url(raw: &str) -> Result<(tokio_postgres::Config, TlsPolicy), StoreError> {
    let mut url = url::Url::parse(raw.trim())
        .map_err(|e| StoreError::Url(format!("not a valid URL ({e})")))?;
    let mut sslmode = None;
    let mut root_cert = None;
    let rest: Vec<(String, String)> = url
        .query_pairs()
        .filter_map(|(k, v)| match k.as_ref() {
            "sslmode" => {
                sslmode = Some(v.into_owned());
                None
            }
            "sslrootcert" => {
                root_cert = Some(PathBuf::from(v.as_ref()));
                None
            }
            _ => Some((k.into_owned(), v.into_owned())),
        })
        .collect();
    if rest.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(rest);
    }
    let policy = TlsPolicy::from_params(sslmode.as_deref(), root_cert)?;
    let mut config: tokio_postgres::Config = url.as_str().parse().map_err(|e| {
        StoreError::Url(format!(
            "{} (value not shown: it may hold a password)",
            error_text(&e)
        ))
    })?;
    config.ssl_mode(policy.ssl_mode());
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(POOL_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("sekoia-relay");
    }
    // Notice a dead server or a failover in seconds, not after the kernel's two hours.
    config.keepalives_idle(Duration::from_secs(15));
    Ok((config, policy))
}

/// One plain connection (no pool), for tests and tools that administer databases.
pub(super) async fn connect_one(raw_url: &str) -> Result<tokio_postgres::Client, StoreError> {
    let (config, policy) = parse_url(raw_url)?;
    let (client, connection) = config.connect(policy.connector()?).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn describe_config(c: &tokio_postgres::Config) -> String {
    let host = c
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        c.get_user().unwrap_or("-"),
        c.get_dbname().unwrap_or("-")
    )
}

struct Inner {
    /// Every write that acknowledges something (ingest, failures, dead letters) and the reads.
    pool: Pool,
    /// Claims, lease renewals and successes: see [`relaxed`].
    bookkeeping: Pool,
    /// This process's id in `claimed_by`.
    replica: String,
    lease_ms: i64,
    describe: String,
    /// Group commit of webhooks (see [`ingest`]).
    ingest: ingest::IngestQueue,
    /// Group commit of successful sends (see [`outcomes`]).
    delivered: outcomes::DeliveredQueue,
    /// The rows this replica holds a lease on: renewing and handing them back find them by
    /// primary key (there is no index on `claimed_by`, so that a claim is a HOT update: V5).
    held: Held,
    /// Stops the lease renewal when the last handle is dropped.
    _renewal: DropGuard,
}

/// Ids of the deliveries this replica claimed and has not recorded yet. A row whose outcome
/// could not be written stays here (its lease is still renewed) until it is.
#[derive(Clone, Default)]
struct Held(Arc<Mutex<HashSet<i64>>>);

impl Held {
    fn lock(&self) -> MutexGuard<'_, HashSet<i64>> {
        // The set is only ever extended or shrunk whole: a panic elsewhere leaves it usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sorted, so that renewals lock rows in id order like every other multi-row write.
    fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.lock().iter().copied().collect();
        ids.sort_unstable();
        ids
    }
}

/// Handle to the PostgreSQL store; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl PgStore {
    /// Connect, apply migrations under an advisory lock, start renewing this replica's leases.
    pub async fn open(settings: &StoreSettings) -> Result<PgStore, StoreError> {
        let (config, policy) = parse_url(settings.url.expose_secret())?;
        let tls = policy.connector()?;
        let describe = describe_config(&config);
        migrate(&config, tls.clone()).await?;
        let size = settings.pool_size.max(1);
        let pool = build_pool(config.clone(), tls.clone(), size)?;
        let bookkeeping = build_pool(relaxed(config), tls, (size / 2).max(2))?;
        let replica = uuid::Uuid::new_v4().to_string();
        let lease_ms = (settings.lease_secs.max(1) as i64).saturating_mul(1000);
        let stop = CancellationToken::new();
        let held = Held::default();
        tokio::spawn(renew_leases(
            bookkeeping.clone(),
            held.clone(),
            replica.clone(),
            lease_ms,
            stop.clone(),
        ));
        let ingest = ingest::IngestQueue::start(pool.clone());
        let delivered = outcomes::DeliveredQueue::start(bookkeeping.clone(), replica.clone());
        tracing::info!(store = %describe, %replica, lease_secs = settings.lease_secs, "PostgreSQL store open");
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                bookkeeping,
                replica,
                lease_ms,
                describe,
                ingest,
                delivered,
                held,
                _renewal: stop.drop_guard(),
            }),
        })
    }

    pub fn describe(&self) -> &str {
        &self.inner.describe
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.inner.pool.get().await?)
    }

    async fn bookkeeping_client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.inner.bookkeeping.get().await?)
    }

    /// `synchronous_commit` of a session from the main pool and from the bookkeeping pool.
    #[cfg(test)]
    pub(crate) async fn commit_modes(&self) -> (String, String) {
        let show = |c: deadpool_postgres::Object| async move {
            let row = c.query_one("SHOW synchronous_commit", &[]).await.unwrap();
            row.get::<_, String>(0)
        };
        (
            show(self.client().await.unwrap()).await,
            show(self.bookkeeping_client().await.unwrap()).await,
        )
    }

    /// Persist an event and its deliveries, or find the duplicate: queued for the next group
    /// commit (see [`ingest`]), answered after that commit.
    ///
    /// The dedup row is inserted, or taken over from an entry older than the window: then
    /// this event is accepted and its rows are inserted by the same statement. A key inserted
    /// by a concurrent, not yet committed statement makes this one wait for it; then the
    /// conflict is seen and the event is a duplicate.
    pub async fn ingest(&self, ev: NewEvent) -> Result<Ingested, StoreError> {
        self.inner.ingest.ingest(ev).await
    }

    pub async fn claim(
        &self,
        target: &str,
        limit: usize,
        ranked_only: bool,
    ) -> Result<Vec<Claimed>, StoreError> {
        let client = self.bookkeeping_client().await?;
        let now = now_ms();
        let rows = client
            .query(
                &client
                    .prepare_cached(
                        "WITH c AS (
                           SELECT id FROM deliveries
                           WHERE state = 'pending' AND target = $1 AND next_at <= $2
                             AND (lease_until IS NULL OR lease_until < $2)
                             AND (NOT $7 OR urgency IS NOT NULL OR attempts > 0 OR body IS NOT NULL
                                  OR next_at <= $2 - $8)
                             -- A Retry-After seen by any replica holds the whole target.
                             AND NOT EXISTS (SELECT 1 FROM pacing p
                                             WHERE p.key = $6 AND p.paused_until > $2)
                           -- Not `next_at, id`: the index `deliveries_due (target, next_at)`
                           -- gives this order, so the scan stops after LIMIT rows; an `id`
                           -- tiebreak made PostgreSQL read and sort the whole backlog
                           -- (19 ms per claim at 20,000 pending).
                           ORDER BY next_at LIMIT $3
                           FOR UPDATE SKIP LOCKED)
                         UPDATE deliveries d SET claimed_by = $4, lease_until = $2 + $5
                         FROM c, events e WHERE d.id = c.id AND e.id = d.event_id
                         RETURNING d.id, e.public_id, e.hook, d.target, d.attempts, d.age_from,
                                   e.body, d.body, e.received_at, e.short_id, d.next_at,
                                   e.type, e.alert_json",
                    )
                    .await?,
                &[
                    &target,
                    &now,
                    &(limit as i64),
                    &self.inner.replica,
                    &self.inner.lease_ms,
                    &super::target_pacing_key(target),
                    &ranked_only,
                    &super::UNRANKED_GRACE_MS,
                ],
            )
            .await?;
        let mut claimed: Vec<(i64, Claimed)> = rows
            .into_iter()
            .map(|r| {
                (
                    r.get::<_, i64>(10),
                    Claimed {
                        id: r.get(0),
                        event_id: r.get(1),
                        hook: r.get(2),
                        target: r.get(3),
                        attempts: r.get::<_, i32>(4).max(0) as u32,
                        age_from_ms: r.get(5),
                        event_json: r.get(6),
                        body: r.get(7),
                        received_at_ms: r.get(8),
                        short_id: r.get(9),
                        event_type: r.get(11),
                        alert_json: r.get(12),
                    },
                )
            })
            .collect();
        // RETURNING has no order: oldest first, as promised.
        claimed.sort_by_key(|(next_at, c)| (*next_at, c.id));
        self.inner
            .held
            .lock()
            .extend(claimed.iter().map(|(_, c)| c.id));
        Ok(claimed.into_iter().map(|(_, c)| c).collect())
    }

    /// Record what happened to a claimed delivery. Successes are group-committed (see
    /// [`outcomes`]); the rarer outcomes are one statement each (prepared once per
    /// connection). Every write ends the claim and is conditional on still holding it.
    pub async fn complete(&self, id: i64, outcome: Outcome) -> Result<(), StoreError> {
        let written = match &outcome {
            Outcome::Delivered { status } => {
                u64::from(self.inner.delivered.delivered(id, *status).await?)
            }
            other => self.complete_alone(id, other).await?,
        };
        // Written, or taken over by another replica: either way no longer ours to renew.
        self.inner.held.lock().remove(&id);
        if written == 0 {
            // The lease expired (this replica was stalled) and another replica owns the row
            // now: its attempt decides. Ours may have been a duplicate send, never a loss.
            tracing::warn!(
                delivery = id,
                "the lease of this delivery was taken over by another replica: outcome not recorded"
            );
        }
        Ok(())
    }

    /// A retry, dead letter, skip or release: rows written.
    async fn complete_alone(&self, id: i64, outcome: &Outcome) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let now = now_ms();
        let me = &self.inner.replica;
        let status = |s: &Option<u16>| s.map(i32::from);
        let n = match outcome {
            Outcome::Delivered { .. } => {
                return Err(StoreError::Postgres(
                    "a success is written by the group commit".into(),
                ))
            }
            Outcome::Retry {
                next_at_ms,
                status: s,
                error,
                response,
                body,
                counts_attempt,
            } => {
                let sql = "UPDATE deliveries SET state = 'pending', attempts = attempts + $8,
                     updated_at = $2, next_at = $3, last_status = $4, last_error = $5,
                     response = $6, body = COALESCE($7, body), claimed_by = NULL,
                     lease_until = NULL
                     WHERE id = $1 AND claimed_by = $9";
                let statement = client.prepare_cached(sql).await?;
                client
                    .execute(
                        &statement,
                        &[
                            &id,
                            &now,
                            next_at_ms,
                            &status(s),
                            error,
                            response,
                            body,
                            &i32::from(*counts_attempt),
                            me,
                        ],
                    )
                    .await?
            }
            Outcome::Dead {
                status: s,
                error,
                response,
                body,
            } => {
                let sql = "UPDATE deliveries SET state = 'dead', attempts = attempts + 1,
                     updated_at = $2, last_status = $3, last_error = $4, response = $5,
                     body = COALESCE($6, body), claimed_by = NULL, lease_until = NULL
                     WHERE id = $1 AND claimed_by = $7";
                let statement = client.prepare_cached(sql).await?;
                client
                    .execute(
                        &statement,
                        &[&id, &now, &status(s), error, response, body, me],
                    )
                    .await?
            }
            Outcome::Skipped { reason } => {
                let sql = "UPDATE deliveries SET state = 'skipped', updated_at = $2,
                     last_error = $3, claimed_by = NULL, lease_until = NULL
                     WHERE id = $1 AND claimed_by = $4";
                let statement = client.prepare_cached(sql).await?;
                client.execute(&statement, &[&id, &now, reason, me]).await?
            }
            Outcome::Release => {
                let sql = "UPDATE deliveries SET claimed_by = NULL, lease_until = NULL
                     WHERE id = $1 AND claimed_by = $2";
                let statement = client.prepare_cached(sql).await?;
                client.execute(&statement, &[&id, me]).await?
            }
        };
        Ok(n)
    }

    pub async fn next_due(&self, targets: Vec<String>) -> Result<Option<i64>, StoreError> {
        let client = self.client().await?;
        // A row leased by a replica becomes due for the others when its lease ends.
        let row = client
            .query_one(
                &client
                    .prepare_cached(
                        // Index probes instead of a scan of the whole backlog (this runs
                        // whenever the dispatcher's slots are full): the earliest free row
                        // per target through `deliveries_due`, and only when none is due
                        // now, the end of the first lease. A leased row was due when it was
                        // claimed (`next_at` ≤ now) and keeps its `next_at`, so when nothing
                        // free is due, the due part of `deliveries_due` holds only leased
                        // rows: a few per replica, not the backlog. (A CASE branch's
                        // subquery runs only when that branch is taken.)
                        "SELECT CASE WHEN f.free <= $2 THEN f.free ELSE LEAST(f.free,
                           (SELECT MIN(lease_until) FROM deliveries
                            WHERE state = 'pending' AND target = ANY($1) AND next_at <= $2
                              AND lease_until > next_at)) END
                         FROM (SELECT MIN(f.next_at) AS free FROM unnest($1::text[]) AS t(name),
                                 LATERAL (SELECT next_at FROM deliveries
                                          WHERE state = 'pending' AND target = t.name
                                            AND (lease_until IS NULL OR lease_until <= next_at)
                                          ORDER BY next_at LIMIT 1) AS f) f",
                    )
                    .await?,
                &[&targets, &now_ms()],
            )
            .await?;
        Ok(row.get(0))
    }

    pub async fn depth(&self) -> Result<QueueDepth, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT
                   COUNT(*) FILTER (WHERE state = 'pending' AND (lease_until IS NULL OR lease_until < $1)),
                   COUNT(*) FILTER (WHERE state = 'pending' AND lease_until >= $1),
                   COUNT(*) FILTER (WHERE state = 'dead')
                 FROM deliveries WHERE state IN ('pending', 'dead')",
                &[&now_ms()],
            )
            .await?;
        let n = |i: usize| row.get::<_, i64>(i).max(0) as u64;
        Ok(QueueDepth {
            pending: n(0),
            inflight: n(1),
            dead: n(2),
        })
    }

    pub async fn probe(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO replicas (replica, seen_at) VALUES ($1, $2)
                 ON CONFLICT (replica) DO UPDATE SET seen_at = EXCLUDED.seen_at",
                &[&self.inner.replica, &now_ms()],
            )
            .await?;
        Ok(())
    }

    pub async fn prune(&self, older_than_ms: i64) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let n = tx
            .execute(
                "DELETE FROM deliveries WHERE state IN ('delivered', 'dead', 'skipped', 'folded') AND updated_at < $1",
                &[&older_than_ms],
            )
            .await?;
        tx.execute(
            "DELETE FROM events e WHERE received_at < $1
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)",
            &[&older_than_ms],
        )
        .await?;
        tx.execute(
            "DELETE FROM dedup WHERE received_at < $1",
            &[&older_than_ms],
        )
        .await?;
        tx.execute("DELETE FROM replicas WHERE seen_at < $1", &[&older_than_ms])
            .await?;
        tx.commit().await?;
        Ok(n as usize)
    }

    /// GCRA with a burst of one: the slot is `max(tat, now, paused_until)`, and `tat` moves
    /// one interval past it, atomically in one statement (the row lock orders the replicas).
    pub async fn reserve_slot(&self, key: &str, interval_ms: i64) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &client
                    .prepare_cached(
                        "INSERT INTO pacing AS p (key, tat, paused_until) VALUES ($1, $2::bigint + $3::bigint, 0)
                         ON CONFLICT (key) DO UPDATE
                           SET tat = GREATEST(p.tat, $2, p.paused_until) + $3
                         RETURNING p.tat - $3",
                    )
                    .await?,
                &[&key, &now_ms(), &interval_ms.max(0)],
            )
            .await?;
        Ok(row.get(0))
    }

    pub async fn paused_until(&self, key: &str) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &client
                    .prepare_cached("SELECT paused_until FROM pacing WHERE key = $1")
                    .await?,
                &[&key],
            )
            .await?;
        Ok(row.map(|r| r.get(0)).unwrap_or(0))
    }

    pub async fn pause(&self, key: &str, until_ms: i64) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO pacing AS p (key, tat, paused_until) VALUES ($1, 0, $2)
                 ON CONFLICT (key) DO UPDATE SET paused_until = GREATEST(p.paused_until, $2)",
                &[&key, &until_ms],
            )
            .await?;
        Ok(())
    }

    pub async fn release_claims(&self) -> Result<u64, StoreError> {
        let client = self.bookkeeping_client().await?;
        let ids = self.inner.held.ids();
        let n = client
            .execute(
                "UPDATE deliveries d SET claimed_by = NULL, lease_until = NULL
                 FROM (SELECT id FROM deliveries
                       WHERE id = ANY($1) AND claimed_by = $2 AND state = 'pending'
                       ORDER BY id FOR UPDATE) mine
                 WHERE d.id = mine.id",
                &[&ids, &self.inner.replica],
            )
            .await?;
        // `ids` is sorted (see `Held::ids`).
        self.inner
            .held
            .lock()
            .retain(|id| ids.binary_search(id).is_err());
        Ok(n)
    }

    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT d.id, e.public_id, e.hook, d.target, e.short_id, d.attempts, d.last_status,
                        d.last_error, d.response, d.body, d.updated_at
                 FROM deliveries d JOIN events e ON e.id = d.event_id
                 WHERE d.state = 'dead' ORDER BY d.id",
                &[],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| DeadLetter {
                id: r.get(0),
                event_id: r.get(1),
                hook: r.get(2),
                target: r.get(3),
                short_id: r.get(4),
                attempts: r.get::<_, i32>(5).max(0) as u32,
                last_status: r
                    .get::<_, Option<i32>>(6)
                    .and_then(|s| u16::try_from(s).ok()),
                last_error: r.get(7),
                response: r.get(8),
                body: r.get(9),
                updated_at_ms: r.get(10),
            })
            .collect())
    }

    pub async fn retry_dead(&self, ids: Option<Vec<i64>>) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let sql = "UPDATE deliveries SET state = 'pending', attempts = 0, next_at = $1,
                   age_from = $1, updated_at = $1, body = NULL, claimed_by = NULL,
                   lease_until = NULL WHERE state = 'dead'";
        let now = now_ms();
        let n = match ids {
            None => client.execute(sql, &[&now]).await?,
            Some(ids) => {
                client
                    .execute(&format!("{sql} AND id = ANY($2)"), &[&now, &ids])
                    .await?
            }
        };
        Ok(n as usize)
    }

    pub async fn purge_dead(&self) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute("DELETE FROM deliveries WHERE state = 'dead'", &[])
            .await?;
        Ok(n as usize)
    }

    /// Copy exported SQLite rows in one transaction: all or nothing. An event whose public id
    /// is already here was copied before and is skipped with its deliveries.
    pub(crate) async fn import(
        &self,
        events: Vec<ExportedEvent>,
    ) -> Result<ImportReport, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let insert_event = tx
            .prepare(
                "INSERT INTO events (public_id, hook, dedup_key, type, action, alert_uuid, short_id, body, received_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (public_id) DO NOTHING RETURNING id",
            )
            .await?;
        let insert_dedup = tx
            .prepare(
                "INSERT INTO dedup AS d (dedup_key, public_id, received_at) VALUES ($1, $2, $3)
                 ON CONFLICT (dedup_key) DO UPDATE
                   SET public_id = EXCLUDED.public_id, received_at = EXCLUDED.received_at
                   WHERE d.received_at < EXCLUDED.received_at",
            )
            .await?;
        let insert_delivery = tx
            .prepare(
                "INSERT INTO deliveries (event_id, target, state, attempts, next_at, age_from,
                   updated_at, last_status, last_error, response, body)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .await?;
        let mut report = ImportReport::default();
        for ev in events {
            let Some(row) = tx
                .query_opt(
                    &insert_event,
                    &[
                        &ev.public_id,
                        &ev.hook,
                        &ev.dedup_key,
                        &ev.kind,
                        &ev.action,
                        &ev.alert_uuid,
                        &ev.short_id,
                        &ev.body,
                        &ev.received_at,
                    ],
                )
                .await?
            else {
                report.already_present += 1;
                continue;
            };
            let id: i64 = row.get(0);
            tx.execute(
                &insert_dedup,
                &[&ev.dedup_key, &ev.public_id, &ev.received_at],
            )
            .await?;
            for d in &ev.deliveries {
                let attempts = i32::try_from(d.attempts).unwrap_or(i32::MAX);
                let status = d.last_status.and_then(|s| i32::try_from(s).ok());
                tx.execute(
                    &insert_delivery,
                    &[
                        &id,
                        &d.target,
                        &d.state,
                        &attempts,
                        &d.next_at,
                        &d.age_from,
                        &d.updated_at,
                        &status,
                        &d.last_error,
                        &d.response,
                        &d.body,
                    ],
                )
                .await?;
                report.deliveries += 1;
            }
            report.events += 1;
        }
        tx.commit().await?;
        Ok(report)
    }
}

/// Apply the embedded migrations on a dedicated connection, holding a session advisory lock,
/// after refusing a schema newer than this binary.
async fn migrate(
    config: &tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
) -> Result<(), StoreError> {
    let (mut client, connection) = config.connect(tls).await?;
    let conn_task = tokio::spawn(connection);
    let result = async {
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let runner = embedded::migrations::runner();
        let has_history: bool = client
            .query_one(
                "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
                &[],
            )
            .await?
            .get(0);
        let found: i64 = if has_history {
            client
                .query_one(
                    "SELECT COALESCE(MAX(version), 0)::bigint FROM refinery_schema_history",
                    &[],
                )
                .await?
                .get(0)
        } else {
            0
        };
        super::check_version(&runner, found)?;
        runner
            .run_async(&mut client)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        Ok(())
    }
    .await;
    // Closing the session releases the advisory lock too, even after an error.
    drop(client);
    let _ = conn_task.await;
    result
}

/// Bring a database to schema `version` exactly (tests of upgrades from an older schema).
#[cfg(test)]
pub(crate) async fn migrate_to(client: &mut tokio_postgres::Client, version: i32) {
    embedded::migrations::runner()
        .set_target(refinery::Target::Version(version))
        .run_async(client)
        .await
        .expect("migrate to the older schema");
}

/// Every `lease / 3`, push this replica's leases forward. A replica that stops (crash, kill
/// -9, host lost) stops renewing, which is what hands its rows to the others.
async fn renew_leases(
    pool: Pool,
    held: Held,
    replica: String,
    lease_ms: i64,
    stop: CancellationToken,
) {
    let every = Duration::from_millis((lease_ms / 3).max(200) as u64);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let ids = held.ids();
        if ids.is_empty() {
            continue;
        }
        let renewed = async {
            let client = pool.get().await?;
            client
                .execute(
                    // Rows locked in id order, like the batched outcome writes: the two
                    // cannot deadlock on each other.
                    "UPDATE deliveries d SET lease_until = $2::bigint + $3::bigint
                     FROM (SELECT id FROM deliveries
                           WHERE id = ANY($4) AND claimed_by = $1 AND state = 'pending'
                           ORDER BY id FOR UPDATE) mine
                     WHERE d.id = mine.id",
                    &[&replica, &now_ms(), &lease_ms, &ids],
                )
                .await?;
            Ok::<_, StoreError>(())
        }
        .await;
        if let Err(e) = renewed {
            tracing::warn!(error = %e, "cannot renew delivery leases");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        let raw = "postgres://relay:s3cr3t@db.example:6543/queue?sslmode=require";
        let shown = redacted_url(raw);
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("relay:***@db.example:6543/queue"), "{shown}");
        let (config, policy) = parse_url(raw).unwrap();
        assert_eq!(policy, TlsPolicy::Require);
        let described = describe_config(&config);
        assert_eq!(described, "relay@db.example:6543/queue");
        assert!(!format!("{config:?}").contains("s3cr3t"));
        let err = parse_url("postgres://relay:s3cr3t@db/q?bogus=1").unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        assert_eq!(redacted_url("s3cr3t"), "(not a URL)");
    }

    #[test]
    fn sslrootcert_is_read_by_the_relay_not_passed_on() {
        let (_, policy) =
            parse_url("postgres://u@h/d?sslmode=verify-full&sslrootcert=/etc/ca.pem").unwrap();
        assert_eq!(
            policy,
            TlsPolicy::Verify {
                root_cert: Some(PathBuf::from("/etc/ca.pem"))
            }
        );
    }
}
