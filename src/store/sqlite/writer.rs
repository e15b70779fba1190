//! The writer thread: drains the command channel and runs each batch in one transaction.

use std::collections::HashSet;

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use tokio::sync::mpsc;

use super::MAX_BATCH;
use super::{now_ms, Claimed, Command, Ingested, NewEvent, Outcome, QueueDepth, StoreError};
use crate::configuration::SyncMode;
use crate::store::{Candidate, FoldInto, Member, PlanApplied, StormPlan, DIGEST_EVENT_TYPE};

/// A reply to send once the batch's transaction has committed (or failed).
enum Pending {
    Ingest(
        tokio::sync::oneshot::Sender<Result<Ingested, StoreError>>,
        Ingested,
    ),
    Unit(tokio::sync::oneshot::Sender<Result<(), StoreError>>),
    Count(
        tokio::sync::oneshot::Sender<Result<usize, StoreError>>,
        usize,
    ),
}

impl Pending {
    fn ok(self) {
        // A dropped receiver means the caller gave up (request cancelled): nothing to do.
        match self {
            Pending::Ingest(tx, v) => drop(tx.send(Ok(v))),
            Pending::Unit(tx) => drop(tx.send(Ok(()))),
            Pending::Count(tx, v) => drop(tx.send(Ok(v))),
        }
    }
}

/// rusqlite errors are not Clone; keep the code and message, which is what callers log.
fn clone_error(err: &rusqlite::Error) -> rusqlite::Error {
    match err {
        rusqlite::Error::SqliteFailure(code, msg) => {
            rusqlite::Error::SqliteFailure(*code, msg.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

pub(super) fn run(mut conn: Connection, mut rx: mpsc::Receiver<Command>, sync: SyncMode) {
    // What the connection's `synchronous` is now: `sync`, or NORMAL for a batch of successes.
    let mut relaxed = false;
    // Deliveries handed to this process's workers and not yet completed. Claims live in memory:
    // only one server uses a store file (see `SqliteStore::open`), a crash forgets them (which is
    // exactly "in flight work resumes at restart"), and a claim then costs no write or fsync.
    let mut claimed: HashSet<i64> = HashSet::new();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        // Read-only commands are answered outside the transaction. A claim that runs before
        // this batch's completions commit still skips their rows: they are in `claimed`.
        let mut writes = Vec::with_capacity(batch.len());
        for cmd in batch.drain(..) {
            match cmd {
                Command::Claim {
                    target,
                    limit,
                    ranked_only,
                    reply,
                } => drop(
                    reply.send(
                        claim(&conn, &target, limit, ranked_only, now_ms(), &mut claimed)
                            .map_err(Into::into),
                    ),
                ),
                Command::Complete(id, Outcome::Release, tx) => {
                    claimed.remove(&id);
                    drop(tx.send(Ok(())));
                }
                Command::NextDue(targets, tx) => {
                    drop(tx.send(next_due(&conn, &targets).map_err(Into::into)))
                }
                Command::Depth(tx) => drop(
                    tx.send(
                        depth(&conn)
                            // Claimed rows are still 'pending' in the table: count them once.
                            .map(|d| QueueDepth {
                                pending: d.pending.saturating_sub(claimed.len() as u64),
                                inflight: claimed.len() as u64,
                                dead: d.dead,
                            })
                            .map_err(Into::into),
                    ),
                ),
                Command::Candidates {
                    target,
                    limit,
                    reply,
                } => drop(reply.send(
                    candidates(&conn, &target, limit, now_ms(), &claimed).map_err(Into::into),
                )),
                Command::Members(id, reply) => {
                    drop(reply.send(members(&conn, id).map_err(Into::into)))
                }
                Command::Plan {
                    target,
                    plan,
                    reply,
                } => drop(reply.send(
                    apply_plan(&mut conn, &target, &plan, now_ms(), &claimed).map_err(Into::into),
                )),
                other => writes.push(other),
            }
        }
        if writes.is_empty() {
            continue;
        }
        write(&mut conn, writes, &mut claimed, sync, &mut relaxed);
    }
}

/// Run one batch of writes in one transaction, with the durability its commands need (see
/// [`may_skip_fsync`]), and answer each command after the commit.
fn write(
    conn: &mut Connection,
    mut writes: Vec<Command>,
    claimed: &mut HashSet<i64>,
    sync: SyncMode,
    relaxed: &mut bool,
) {
    let want = sync == SyncMode::Full && may_skip_fsync(&writes);
    if want != *relaxed {
        let mode = if want { "NORMAL" } else { "FULL" };
        match conn.pragma_update(None, "synchronous", mode) {
            Ok(()) => *relaxed = want,
            // Still relaxed, and this batch must wait for the disk: it fails like a failed
            // transaction would (its senders see a 503 and retry).
            Err(err) if *relaxed => {
                tracing::error!(error = %err, batch = writes.len(), "cannot make the store wait for the disk again");
                for cmd in writes.drain(..) {
                    reply_err(cmd, &err);
                }
                return;
            }
            // Not relaxed: the batch simply waits for the disk.
            Err(err) => tracing::warn!(error = %err, "cannot relax the commit of successes"),
        }
    }
    let completed: Vec<i64> = writes
        .iter()
        .filter_map(|c| match c {
            Command::Complete(id, _, _) => Some(*id),
            _ => None,
        })
        .collect();
    match run_batch(conn, &mut writes) {
        // Recorded: these rows are no longer held.
        Ok(()) => {
            for id in completed {
                claimed.remove(&id);
            }
        }
        Err(err) => {
            // Failures here are environmental (disk full, locked, I/O): every command of
            // the batch gets the error at once, so senders see a fast 503 and retry. Rows
            // whose outcome was not recorded stay claimed: their task retries the record
            // (releasing them made each due row a hot loop of re-sends while the disk was
            // full). If the process dies first, the claim dies with it and the row, still
            // pending in the file, is sent again at the next start: never lost.
            tracing::error!(error = %err, batch = writes.len(), "store transaction failed");
            for cmd in writes.drain(..) {
                reply_err(cmd, &err);
            }
        }
    }
}

/// Whether a batch may commit without waiting for the disk (`synchronous = NORMAL`), when the
/// store is configured `sync = "full"`.
///
/// Rule: only when every command in it records a success or a skip. Reason: such a record is
/// lost only on power loss or an OS crash (never on a process crash: the write has reached the
/// OS), and then its row is pending again and the message is sent once more: a duplicate,
/// never a loss. Webhooks (the 202), failures and dead letters still wait for the fsync, and
/// that fsync also makes every relaxed commit before it durable, since the WAL is one file
/// written in order. Under load most commits are successes, each paying an fsync.
fn may_skip_fsync(writes: &[Command]) -> bool {
    writes.iter().all(|c| {
        matches!(
            c,
            Command::Complete(_, Outcome::Delivered { .. } | Outcome::Skipped { .. }, _)
        )
    })
}

fn reply_err(cmd: Command, err: &rusqlite::Error) {
    let e = || StoreError::Sqlite(clone_error(err));
    match cmd {
        Command::Ingest(_, tx) => drop(tx.send(Err(e()))),
        Command::Claim { reply, .. } => drop(reply.send(Err(e()))),
        Command::Complete(_, _, tx) | Command::Probe(tx) => drop(tx.send(Err(e()))),
        Command::Prune { reply, .. } => drop(reply.send(Err(e()))),
        Command::NextDue(_, tx) => drop(tx.send(Err(e()))),
        Command::Depth(tx) => drop(tx.send(Err(e()))),
        Command::Candidates { reply, .. } => drop(reply.send(Err(e()))),
        Command::Plan { reply, .. } => drop(reply.send(Err(e()))),
        Command::Members(_, tx) => drop(tx.send(Err(e()))),
    }
}

/// Run all commands in one transaction; replies are sent only after COMMIT. On error nothing
/// is replied and the commands are left in `cmds` for the caller to retry.
fn run_batch(conn: &mut Connection, cmds: &mut Vec<Command>) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let now = now_ms();
    let mut results = Vec::with_capacity(cmds.len());
    for cmd in cmds.iter() {
        results.push(apply(&tx, cmd, now)?);
    }
    tx.commit()?;
    for (cmd, result) in cmds.drain(..).zip(results) {
        let pending = match (cmd, result) {
            (Command::Ingest(_, tx), Applied::Ingest(v)) => Pending::Ingest(tx, v),
            (Command::Complete(_, _, tx), Applied::Unit) | (Command::Probe(tx), Applied::Unit) => {
                Pending::Unit(tx)
            }
            (Command::Prune { reply, .. }, Applied::Count(n)) => Pending::Count(reply, n),
            // apply() returns the variant matching its command; anything else is unreachable,
            // and dropping the sender makes the caller see StoreError::Closed rather than hang.
            _ => continue,
        };
        pending.ok();
    }
    Ok(())
}

enum Applied {
    Ingest(Ingested),
    Unit,
    Count(usize),
}

fn apply(tx: &Transaction<'_>, cmd: &Command, now: i64) -> Result<Applied, rusqlite::Error> {
    Ok(match cmd {
        Command::Ingest(ev, _) => Applied::Ingest(ingest(tx, ev, now)?),
        Command::Complete(id, outcome, _) => {
            complete(tx, *id, outcome, now)?;
            Applied::Unit
        }
        Command::Probe(_) => {
            tx.execute(
                "UPDATE meta SET v = ?1 WHERE k = 'probe'",
                params![now.to_string()],
            )?;
            Applied::Unit
        }
        Command::Prune { older_than_ms, .. } => Applied::Count(prune(tx, *older_than_ms)?),
        // Read-only commands (and releases) never reach a transaction.
        Command::Claim { .. }
        | Command::NextDue(..)
        | Command::Depth(_)
        | Command::Candidates { .. }
        | Command::Plan { .. }
        | Command::Members(..) => Applied::Unit,
    })
}

fn ingest(tx: &Transaction<'_>, ev: &NewEvent, now: i64) -> Result<Ingested, rusqlite::Error> {
    let existing: Option<String> = tx
        .prepare_cached(
            "SELECT public_id FROM events WHERE dedup_key = ?1 AND received_at >= ?2 LIMIT 1",
        )?
        .query_row(params![ev.dedup_key, now - ev.dedup_window_ms], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(event_id) = existing {
        return Ok(Ingested::Duplicate { event_id });
    }
    let event_id = uuid::Uuid::now_v7().to_string();
    tx.prepare_cached(
        "INSERT INTO events (public_id, hook, dedup_key, type, action, alert_uuid, short_id, body, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        event_id,
        ev.hook,
        ev.dedup_key,
        ev.kind,
        ev.action,
        ev.alert_uuid,
        ev.short_id,
        ev.body,
        now
    ])?;
    let row = tx.last_insert_rowid();
    let mut insert = tx.prepare_cached(
        "INSERT INTO deliveries (event_id, target, state, next_at, age_from, updated_at)
         VALUES (?1, ?2, 'pending', ?3, ?3, ?3)",
    )?;
    for target in &ev.targets {
        insert.execute(params![row, target, now])?;
    }
    Ok(Ingested::Accepted { event_id })
}

/// Due rows of a target, oldest first (`?4`: ranked rows only).
const CLAIM: &str = "SELECT d.id, e.public_id, e.hook, d.target, d.attempts, d.age_from, e.body, d.body, e.received_at,
                e.short_id, e.type, e.alert_json
         FROM deliveries d JOIN events e ON e.id = d.event_id
         WHERE d.state = 'pending' AND d.target = ?1 AND d.next_at <= ?2
           AND (?4 = 0 OR d.urgency IS NOT NULL OR d.attempts > 0 OR d.body IS NOT NULL
                OR d.next_at <= ?5)
         ORDER BY d.next_at, d.id LIMIT ?3";

fn claim(
    conn: &Connection,
    target: &str,
    limit: usize,
    ranked_only: bool,
    now: i64,
    claimed: &mut HashSet<i64>,
) -> Result<Vec<Claimed>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(CLAIM)?;
    let fetch = limit.saturating_add(claimed.len());
    let stale = now - crate::store::UNRANKED_GRACE_MS;
    let query = stmt.query(params![target, now, fetch as i64, ranked_only, stale])?;
    let rows = unclaimed(query, limit, claimed, |id, r| {
        Ok(Claimed {
            id,
            event_id: r.get(1)?,
            hook: r.get(2)?,
            target: r.get(3)?,
            attempts: r.get(4)?,
            age_from_ms: r.get(5)?,
            event_json: r.get(6)?,
            body: r.get(7)?,
            received_at_ms: r.get(8)?,
            short_id: r.get(9)?,
            event_type: r.get(10)?,
            alert_json: r.get(11)?,
        })
    })?;
    claimed.extend(rows.iter().map(|c| c.id));
    Ok(rows)
}

fn complete(
    tx: &Transaction<'_>,
    id: i64,
    outcome: &Outcome,
    now: i64,
) -> Result<(), rusqlite::Error> {
    match outcome {
        Outcome::Delivered { status } => tx
            .prepare_cached(
                // The body is not kept once delivered: it is the bulk of the row, and only
                // retries and dead letters need it.
                "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, updated_at = ?2,
                 last_status = ?3, last_error = NULL, response = NULL, body = NULL WHERE id = ?1",
            )?
            .execute(params![id, now, status])?,
        Outcome::Retry {
            next_at_ms,
            status,
            error,
            response,
            body,
            counts_attempt,
        } => tx
            .prepare_cached(
                "UPDATE deliveries SET state = 'pending', attempts = attempts + ?8, updated_at = ?2,
                 next_at = ?3, last_status = ?4, last_error = ?5, response = ?6,
                 body = COALESCE(?7, body) WHERE id = ?1",
            )?
            .execute(params![
                id,
                now,
                next_at_ms,
                status,
                error,
                response,
                body,
                i64::from(*counts_attempt)
            ])?,
        Outcome::Dead {
            status,
            error,
            response,
            body,
        } => tx
            .prepare_cached(
                "UPDATE deliveries SET state = 'dead', attempts = attempts + 1, updated_at = ?2,
                 last_status = ?3, last_error = ?4, response = ?5, body = COALESCE(?6, body)
                 WHERE id = ?1",
            )?
            .execute(params![id, now, status, error, response, body])?,
        Outcome::Skipped { reason } => tx
            .prepare_cached(
                "UPDATE deliveries SET state = 'skipped', updated_at = ?2, last_error = ?3 WHERE id = ?1",
            )?
            .execute(params![id, now, reason])?,
        // Handled in memory by `run` (nothing to write).
        Outcome::Release => 0,
    };
    Ok(())
}

fn prune(tx: &Transaction<'_>, older_than_ms: i64) -> Result<usize, rusqlite::Error> {
    let deliveries = tx.execute(
        "DELETE FROM deliveries WHERE state IN ('delivered', 'dead', 'skipped', 'folded') AND updated_at < ?1",
        params![older_than_ms],
    )?;
    tx.execute(
        "DELETE FROM events WHERE received_at < ?1
         AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)",
        params![older_than_ms],
    )?;
    Ok(deliveries)
}

/// Earliest `next_at` among pending rows of `targets`: one index probe per target.
fn next_due(conn: &Connection, targets: &[String]) -> Result<Option<i64>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT MIN(next_at) FROM deliveries WHERE state = 'pending' AND target = ?1",
    )?;
    let mut earliest: Option<i64> = None;
    for t in targets {
        let at: Option<i64> = stmt.query_row(params![t], |r| r.get(0))?;
        earliest = match (earliest, at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(earliest)
}

fn depth(conn: &Connection) -> Result<QueueDepth, rusqlite::Error> {
    // Two counts, each served by its partial index.
    let count = |sql: &str| -> Result<u64, rusqlite::Error> {
        conn.prepare_cached(sql)?
            .query_row([], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
    };
    Ok(QueueDepth {
        pending: count("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'")?,
        inflight: 0,
        dead: count("SELECT COUNT(*) FROM deliveries WHERE state = 'dead'")?,
    })
}

/// Deliveries of `target` the storm planner may act on (see [`Candidate`]).
fn candidates(
    conn: &Connection,
    target: &str,
    limit: usize,
    now: i64,
    claimed: &HashSet<i64>,
) -> Result<Vec<Candidate>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.id, e.hook, e.type, e.action, e.alert_uuid, e.short_id, e.body, e.alert_json,
                d.urgency, d.next_at, e.received_at,
                (SELECT COUNT(*) FROM deliveries m WHERE m.folded_into = d.id AND m.state = 'folded')
         FROM deliveries d JOIN events e ON e.id = d.event_id
         WHERE d.state = 'pending' AND d.target = ?1 AND d.next_at <= ?2
           AND d.attempts = 0 AND d.body IS NULL
         ORDER BY d.next_at LIMIT ?3",
    )?;
    let fetch = limit.saturating_add(claimed.len());
    let query = stmt.query(params![target, now, fetch as i64])?;
    unclaimed(query, limit, claimed, |id, r| {
        Ok(Candidate {
            id,
            hook: r.get(1)?,
            event_type: r.get(2)?,
            action: r.get(3)?,
            alert_uuid: r.get(4)?,
            short_id: r.get(5)?,
            event_json: r.get(6)?,
            alert_json: r.get(7)?,
            urgency: r.get(8)?,
            next_at_ms: r.get(9)?,
            received_at_ms: r.get(10)?,
            members: r.get::<_, i64>(11)?.max(0) as u32,
        })
    })
}

/// The first `limit` rows of `query` (its first column the delivery id) that this server
/// does not hold, each read by `read`. Callers over-fetch by the number held
/// (`LIMIT limit + held`), so that held rows cannot starve the others.
fn unclaimed<T>(
    mut query: rusqlite::Rows<'_>,
    limit: usize,
    claimed: &HashSet<i64>,
    read: impl Fn(i64, &rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    // A claim's limit is a few slots; a storm plan's is large and usually far from reached.
    let mut out = Vec::with_capacity(limit.min(64));
    while out.len() < limit {
        let Some(r) = query.next()? else { break };
        let id: i64 = r.get(0)?;
        if !claimed.contains(&id) {
            out.push(read(id, r)?);
        }
    }
    Ok(out)
}

/// Apply a storm plan in one transaction. A row is touched only while it is still free
/// (pending, never attempted, not claimed): a row claimed since the plan was made is sent
/// on its own, and nothing is folded into a row that is being sent.
fn apply_plan(
    conn: &mut Connection,
    target: &str,
    plan: &StormPlan,
    now: i64,
    claimed: &HashSet<i64>,
) -> Result<PlanApplied, rusqlite::Error> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let free = |tx: &Transaction<'_>, id: i64| -> Result<bool, rusqlite::Error> {
        if claimed.contains(&id) {
            return Ok(false);
        }
        tx.prepare_cached(
            "SELECT 1 FROM deliveries WHERE id = ?1 AND target = ?2 AND state = 'pending'
             AND attempts = 0 AND body IS NULL",
        )?
        .query_row(params![id, target], |_| Ok(()))
        .optional()
        .map(|r| r.is_some())
    };
    for (id, urgency, next_at) in &plan.ranks {
        if free(&tx, *id)? {
            tx.prepare_cached("UPDATE deliveries SET urgency = ?2, next_at = ?3 WHERE id = ?1")?
                .execute(params![id, urgency, next_at])?;
        }
    }
    for (id, alert) in &plan.alerts {
        tx.prepare_cached(
            "UPDATE events SET alert_json = ?2
             WHERE id = (SELECT event_id FROM deliveries WHERE id = ?1) AND alert_json IS NULL",
        )?
        .execute(params![id, alert])?;
    }
    let mut digests: Vec<Option<i64>> = vec![None; plan.new_digests.len()];
    let mut applied = PlanApplied::default();
    for (member, into) in &plan.folds {
        if !free(&tx, *member)? {
            continue;
        }
        let into = match *into {
            FoldInto::Delivery(id) => {
                if !free(&tx, id)? {
                    continue;
                }
                id
            }
            FoldInto::NewDigest(i) => match digests.get(i).copied().flatten() {
                Some(id) => id,
                None => {
                    let Some(d) = plan.new_digests.get(i) else {
                        continue;
                    };
                    let public_id = uuid::Uuid::now_v7().to_string();
                    tx.prepare_cached(
                        "INSERT INTO events (public_id, hook, dedup_key, type, action, body, received_at)
                         VALUES (?1, ?2, ?3, ?4, 'digest', ?5, ?6)",
                    )?
                    .execute(params![
                        public_id,
                        d.hook,
                        format!("digest:{public_id}"),
                        DIGEST_EVENT_TYPE,
                        serde_json::json!({"type": DIGEST_EVENT_TYPE, "action": "digest"}).to_string(),
                        now
                    ])?;
                    let event_id = tx.last_insert_rowid();
                    tx.prepare_cached(
                        "INSERT INTO deliveries (event_id, target, state, next_at, age_from, updated_at, urgency)
                         VALUES (?1, ?2, 'pending', ?3, ?4, ?4, ?5)",
                    )?
                    .execute(params![event_id, target, d.next_at_ms, now, d.urgency])?;
                    let id = tx.last_insert_rowid();
                    digests[i] = Some(id);
                    applied.digests += 1;
                    id
                }
            },
        };
        tx.prepare_cached(
            "UPDATE deliveries SET state = 'folded', folded_into = ?2, updated_at = ?3 WHERE id = ?1",
        )?
        .execute(params![member, into, now])?;
        applied.folded += 1;
    }
    tx.commit()?;
    Ok(applied)
}

/// The deliveries folded into `delivery`, oldest event first.
fn members(conn: &Connection, delivery: i64) -> Result<Vec<Member>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.id, e.hook, e.body, e.alert_json, e.short_id, d.urgency, e.received_at
         FROM deliveries d JOIN events e ON e.id = d.event_id
         WHERE d.folded_into = ?1 AND d.state = 'folded' ORDER BY e.id",
    )?;
    let rows = stmt.query_map(params![delivery], |r| {
        Ok(Member {
            id: r.get(0)?,
            hook: r.get(1)?,
            event_json: r.get(2)?,
            alert_json: r.get(3)?,
            short_id: r.get(4)?,
            urgency: r.get(5)?,
            received_at_ms: r.get(6)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rusqlite::StatementStatus;

    use super::*;
    use crate::configuration::SyncMode;
    use crate::store::testing::event;

    fn synchronous(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    }

    fn complete_cmd(id: i64, outcome: Outcome) -> Command {
        Command::Complete(id, outcome, tokio::sync::oneshot::channel().0)
    }

    #[test]
    fn only_a_batch_of_successes_and_skips_may_skip_the_fsync() {
        let delivered = || complete_cmd(1, Outcome::Delivered { status: 200 });
        let skipped = || {
            complete_cmd(
                2,
                Outcome::Skipped {
                    reason: "route".into(),
                },
            )
        };
        assert!(may_skip_fsync(&[delivered(), skipped(), delivered()]));
        let ingest = Command::Ingest(event("k", &["a"]), tokio::sync::oneshot::channel().0);
        assert!(!may_skip_fsync(&[delivered(), ingest]));
        let dead = complete_cmd(
            3,
            Outcome::Dead {
                status: Some(400),
                error: "HTTP 400".into(),
                response: None,
                body: None,
            },
        );
        assert!(!may_skip_fsync(&[delivered(), dead]));
        let retry = complete_cmd(
            4,
            Outcome::Retry {
                next_at_ms: 0,
                status: Some(503),
                error: "HTTP 503".into(),
                response: None,
                body: None,
                counts_attempt: true,
            },
        );
        assert!(!may_skip_fsync(&[retry]));
        assert!(!may_skip_fsync(&[Command::Probe(
            tokio::sync::oneshot::channel().0
        )]));
    }

    #[test]
    fn successes_commit_relaxed_and_the_next_webhook_waits_for_the_disk_again() {
        const FULL: i64 = 2;
        const NORMAL: i64 = 1;
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str, sync| {
            super::super::connect(&dir.path().join(name), sync, Duration::from_secs(1)).unwrap()
        };
        let mut conn = open("relay.db", SyncMode::Full);
        let (mut claimed, mut relaxed) = (HashSet::new(), false);
        let ingest = |conn: &mut Connection, key: &str, sync, relaxed: &mut bool| {
            let (tx, mut accepted) = tokio::sync::oneshot::channel();
            let cmd = Command::Ingest(event(key, &["a"]), tx);
            write(conn, vec![cmd], &mut HashSet::new(), sync, relaxed);
            assert!(matches!(
                accepted.try_recv(),
                Ok(Ok(Ingested::Accepted { .. }))
            ));
        };
        ingest(&mut conn, "k1", SyncMode::Full, &mut relaxed);
        assert_eq!(synchronous(&conn), FULL);
        let rows = claim(&conn, "a", 10, false, now_ms(), &mut claimed).unwrap();
        let (tx, mut done) = tokio::sync::oneshot::channel();
        let success = Command::Complete(rows[0].id, Outcome::Delivered { status: 200 }, tx);
        write(
            &mut conn,
            vec![success],
            &mut claimed,
            SyncMode::Full,
            &mut relaxed,
        );
        assert!(matches!(done.try_recv(), Ok(Ok(()))));
        assert!(claimed.is_empty(), "recorded, so no longer held");
        assert_eq!(
            synchronous(&conn),
            NORMAL,
            "a batch of successes skips the fsync"
        );
        ingest(&mut conn, "k2", SyncMode::Full, &mut relaxed);
        assert_eq!(
            synchronous(&conn),
            FULL,
            "a webhook's commit waits for the disk"
        );
        // With `sync = "normal"` nothing is switched.
        let mut conn = open("normal.db", SyncMode::Normal);
        let mut relaxed = false;
        ingest(&mut conn, "k1", SyncMode::Normal, &mut relaxed);
        assert_eq!(synchronous(&conn), NORMAL);
    }

    #[test]
    fn a_claim_runs_its_compiled_statement_without_recompiling_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        let mut conn =
            super::super::connect(&path, SyncMode::Normal, Duration::from_secs(1)).unwrap();
        let mut claimed = HashSet::new();
        for i in 0..6 {
            let tx = conn.transaction().unwrap();
            ingest(&tx, &event(&format!("k{i}"), &["a"]), now_ms()).unwrap();
            tx.commit().unwrap();
            // Alternate the bindings, as ranked and unranked claims do.
            claim(&conn, "a", 10, i % 2 == 0, now_ms(), &mut claimed).unwrap();
        }
        assert!(!claimed.is_empty());
        let stmt = conn.prepare_cached(CLAIM).unwrap();
        assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0);
    }
}
