//! Group commit of ingests (see [`super::batch`]): concurrent webhooks share one statement.
//!
//! Every waiter is answered only after its batch committed (persist, then ack) or with the
//! batch's error (the route answers 503). Dedup is decided per key as before
//! (`INSERT … ON CONFLICT` on `dedup`), also across replicas; keys repeated inside one batch
//! are settled here, first come first accepted, because one statement cannot insert the same
//! key twice.

use std::collections::HashMap;

use deadpool_postgres::Pool;

use super::super::{now_ms, Ingested, NewEvent, StoreError};
use super::batch::{Batcher, Failure, Job};

/// Most events in one statement: big enough to absorb a burst on two cores, small enough that
/// one batch's arrays stay a few hundred KiB.
const MAX_BATCH: usize = 256;

/// Batches being written at once (each holds one pooled connection while it runs). Two, not
/// more: the PostgreSQL server's CPU is what runs out first, and its cost is mostly per
/// statement, so fewer, larger batches take more events per second (measured: 4 slots gave
/// batches of 6 to 8 events under 32 concurrent webhooks).
const FLUSH_SLOTS: usize = 2;

/// How many times a batch that lost a deadlock to another replica's batch is tried again.
const DEADLOCK_RETRIES: usize = 3;

/// An event waiting for its batch, with the public id it gets if it is accepted.
struct Pending {
    ev: NewEvent,
    event_id: String,
}

type Waiting = Job<Pending, Ingested>;

/// The sending side; the batcher task ends when the last handle is dropped.
pub(super) struct IngestQueue {
    batcher: Batcher<Pending, Ingested>,
}

impl IngestQueue {
    pub(super) fn start(pool: Pool) -> IngestQueue {
        let slots = FLUSH_SLOTS.min(pool.status().max_size.max(1));
        let batcher = Batcher::start(slots, MAX_BATCH, move |batch| {
            let pool = pool.clone();
            async move { flush(&pool, batch).await }
        });
        IngestQueue { batcher }
    }

    pub(super) async fn ingest(&self, ev: NewEvent) -> Result<Ingested, StoreError> {
        let event_id = uuid::Uuid::now_v7().to_string();
        self.batcher.submit(Pending { ev, event_id }).await
    }
}

/// Write one batch and answer each of its waiters.
async fn flush(pool: &Pool, batch: Vec<Waiting>) {
    // One statement per dedup window: the window is a config value, so in practice one.
    let mut by_window: HashMap<i64, Vec<Waiting>> = HashMap::new();
    for w in batch {
        by_window
            .entry(w.item.ev.dedup_window_ms)
            .or_default()
            .push(w);
    }
    for (window_ms, group) in by_window {
        let plan = Plan::new(&group);
        let mut result = write(pool, &plan, &group, window_ms).await;
        for _ in 0..DEADLOCK_RETRIES {
            match &result {
                Err(Failure::Deadlock(_)) => {
                    result = write(pool, &plan, &group, window_ms).await;
                }
                _ => break,
            }
        }
        answer(group, &plan, result.map_err(Failure::into_message));
    }
}

/// Which waiter of a batch is the first with its key (the one the statement writes) and,
/// for a later one with the same key, whose answer it shares.
struct Plan {
    /// Indexes of the first waiter of each key, sorted by key: every batch takes the `dedup`
    /// row locks in the same order, so two batches (two replicas) cannot deadlock on them.
    leaders: Vec<usize>,
    /// For each waiter, the index of its key's leader (itself for a leader).
    leader_of: Vec<usize>,
}

impl Plan {
    fn new(group: &[Waiting]) -> Plan {
        let mut first: HashMap<&str, usize> = HashMap::with_capacity(group.len());
        let mut leader_of = Vec::with_capacity(group.len());
        for (i, w) in group.iter().enumerate() {
            leader_of.push(*first.entry(w.item.ev.dedup_key.as_str()).or_insert(i));
        }
        let mut leaders: Vec<usize> = (0..group.len()).filter(|&i| leader_of[i] == i).collect();
        leaders.sort_by(|&a, &b| group[a].item.ev.dedup_key.cmp(&group[b].item.ev.dedup_key));
        Plan { leaders, leader_of }
    }
}

/// The verdict of the statement for one leader: accepted, or the event its key belongs to.
#[derive(Clone)]
enum Verdict {
    Accepted,
    Duplicate(String),
}

const INGEST_BATCH: &str = "
WITH input AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                       $6::text[], $7::text[], $8::text[]) WITH ORDINALITY
    AS i(public_id, hook, dedup_key, type, action, alert_uuid, short_id, body, n)),
d AS (
  INSERT INTO dedup AS d (dedup_key, public_id, received_at)
  SELECT dedup_key, public_id, $9 FROM input ORDER BY n
  ON CONFLICT (dedup_key) DO UPDATE
    SET public_id = EXCLUDED.public_id, received_at = EXCLUDED.received_at
    WHERE d.received_at < $10
  RETURNING d.public_id),
e AS (
  INSERT INTO events (public_id, hook, dedup_key, type, action, alert_uuid, short_id, body, received_at)
  SELECT i.public_id, i.hook, i.dedup_key, i.type, i.action, i.alert_uuid, i.short_id, i.body, $9
  FROM input i JOIN d ON d.public_id = i.public_id ORDER BY i.n
  RETURNING id, public_id),
x AS (
  INSERT INTO deliveries (event_id, target, state, next_at, age_from, updated_at)
  SELECT e.id, t.target, 'pending', $9, $9, $9
  FROM unnest($11::text[], $12::text[]) AS t(public_id, target) JOIN e ON e.public_id = t.public_id)
SELECT i.public_id, d.public_id IS NOT NULL,
       CASE WHEN d.public_id IS NULL
            THEN (SELECT public_id FROM dedup WHERE dedup_key = i.dedup_key) END
FROM input i LEFT JOIN d ON d.public_id = i.public_id";

/// One statement (one round trip, one commit) for the batch's leaders. A duplicate whose
/// winner committed after the statement's snapshot (it waited for that commit) is read after.
async fn write(
    pool: &Pool,
    plan: &Plan,
    group: &[Waiting],
    window_ms: i64,
) -> Result<HashMap<String, Verdict>, Failure> {
    let n = plan.leaders.len();
    let mut public_id = Vec::with_capacity(n);
    let mut hook = Vec::with_capacity(n);
    let mut dedup_key = Vec::with_capacity(n);
    let mut kind = Vec::with_capacity(n);
    let mut action = Vec::with_capacity(n);
    let mut alert_uuid = Vec::with_capacity(n);
    let mut short_id = Vec::with_capacity(n);
    let mut body = Vec::with_capacity(n);
    let mut target_event = Vec::new();
    let mut target_name = Vec::new();
    for &i in &plan.leaders {
        let w = &group[i];
        public_id.push(w.item.event_id.as_str());
        hook.push(w.item.ev.hook.as_str());
        dedup_key.push(w.item.ev.dedup_key.as_str());
        kind.push(w.item.ev.kind.as_str());
        action.push(w.item.ev.action.as_str());
        alert_uuid.push(w.item.ev.alert_uuid.as_deref());
        short_id.push(w.item.ev.short_id.as_deref());
        body.push(w.item.ev.body.as_str());
        for t in &w.item.ev.targets {
            target_event.push(w.item.event_id.as_str());
            target_name.push(t.as_str());
        }
    }
    let now = now_ms();
    let cutoff = now - window_ms;
    let client = pool.get().await.map_err(|e| Failure::Other(e.into()))?;
    let statement = client.prepare_cached(INGEST_BATCH).await?;
    let rows = client
        .query(
            &statement,
            &[
                &public_id,
                &hook,
                &dedup_key,
                &kind,
                &action,
                &alert_uuid,
                &short_id,
                &body,
                &now,
                &cutoff,
                &target_event,
                &target_name,
            ],
        )
        .await?;
    let mut verdicts = HashMap::with_capacity(n);
    let mut unknown = Vec::new();
    for row in rows {
        let id: String = row.get(0);
        if row.get::<_, bool>(1) {
            verdicts.insert(id, Verdict::Accepted);
        } else if let Some(existing) = row.get::<_, Option<String>>(2) {
            verdicts.insert(id, Verdict::Duplicate(existing));
        } else {
            unknown.push(id);
        }
    }
    if !unknown.is_empty() {
        let keys: HashMap<&str, &str> = plan
            .leaders
            .iter()
            .map(|&i| {
                (
                    group[i].item.event_id.as_str(),
                    group[i].item.ev.dedup_key.as_str(),
                )
            })
            .collect();
        let wanted: Vec<&str> = unknown
            .iter()
            .filter_map(|id| keys.get(id.as_str()).copied())
            .collect();
        let found = client
            .query(
                "SELECT dedup_key, public_id FROM dedup WHERE dedup_key = ANY($1)",
                &[&wanted],
            )
            .await?;
        let by_key: HashMap<String, String> =
            found.into_iter().map(|r| (r.get(0), r.get(1))).collect();
        for id in unknown {
            let key = keys.get(id.as_str()).copied().unwrap_or_default();
            let existing = by_key
                .get(key)
                .cloned()
                .ok_or_else(|| StoreError::Postgres("a duplicate key has no dedup entry".into()))?;
            verdicts.insert(id, Verdict::Duplicate(existing));
        }
    }
    Ok(verdicts)
}

/// Answer every waiter of a group: a leader by its verdict, a later waiter with the same key
/// as a duplicate of whatever its leader's key now belongs to.
fn answer(group: Vec<Waiting>, plan: &Plan, result: Result<HashMap<String, Verdict>, String>) {
    let verdicts = match result {
        Ok(v) => v,
        Err(text) => {
            for w in group {
                // The PostgreSQL message as it was, not wrapped a second time.
                w.answer(Err(StoreError::Postgres(text.clone())));
            }
            return;
        }
    };
    let leader_ids: Vec<String> = plan
        .leader_of
        .iter()
        .map(|&l| group[l].item.event_id.clone())
        .collect();
    for (i, w) in group.into_iter().enumerate() {
        let leader_id = &leader_ids[i];
        let verdict = verdicts.get(leader_id).cloned();
        let answer = match verdict {
            None => Err(StoreError::Postgres(
                "an event of the batch got no answer".into(),
            )),
            Some(Verdict::Accepted) if *leader_id == w.item.event_id => Ok(Ingested::Accepted {
                event_id: w.item.event_id.clone(),
            }),
            Some(Verdict::Accepted) => Ok(Ingested::Duplicate {
                event_id: leader_id.clone(),
            }),
            Some(Verdict::Duplicate(existing)) => Ok(Ingested::Duplicate { event_id: existing }),
        };
        w.answer(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::event;

    fn waiting(key: &str) -> Waiting {
        let (reply, _) = tokio::sync::oneshot::channel();
        Waiting {
            item: Pending {
                ev: event(key, &["t"]),
                event_id: uuid::Uuid::now_v7().to_string(),
            },
            reply,
        }
    }

    #[test]
    fn a_key_repeated_in_a_batch_is_written_once_and_the_leaders_are_sorted_by_key() {
        let group: Vec<Waiting> = ["b", "a", "b", "c", "a"].into_iter().map(waiting).collect();
        let plan = Plan::new(&group);
        assert_eq!(plan.leader_of, vec![0, 1, 0, 3, 1]);
        assert_eq!(plan.leaders, vec![1, 0, 3]);
    }

    #[test]
    fn a_failed_batch_passes_on_the_postgresql_message_once() {
        let e = Failure::Other(StoreError::Postgres(
            "FATAL: the database is shutting down".into(),
        ));
        let answered = StoreError::Postgres(e.into_message()).to_string();
        assert_eq!(answered, "PostgreSQL: FATAL: the database is shutting down");
    }
}
