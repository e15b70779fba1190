//! The store contract: what every backend promises, run against SQLite always and against
//! PostgreSQL when a server is reachable (see `store::testing`). Each PostgreSQL test gets a
//! database of its own, so they run in parallel.
//!
//! After them, PostgreSQL-only promises: what several replicas on one database guarantee.

use std::collections::HashSet;
use std::time::Duration;

use super::testing::{event, TestDb};
use super::*;
use crate::configuration::{StoreSettings, SyncMode};

/// Keeps what the store lives in (a temp dir, a database) alive for the test.
#[allow(dead_code)]
enum Holder {
    Dir(tempfile::TempDir),
    Db(TestDb),
}

async fn sqlite_store() -> Option<(Holder, Store)> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("sub/relay.db"), SyncMode::Normal).unwrap();
    Some((Holder::Dir(dir), Store::Sqlite(store)))
}

fn pg_settings(url: &str, lease_secs: u64) -> StoreSettings {
    StoreSettings {
        url: secrecy::SecretString::from(url.to_string()),
        lease_secs,
        pool_size: 8,
        ..StoreSettings::default()
    }
}

async fn pg_replica(db: &TestDb, lease_secs: u64) -> PgStore {
    PgStore::open(&pg_settings(db.url(), lease_secs))
        .await
        .expect("open the PostgreSQL store")
}

async fn postgres_store() -> Option<(Holder, Store)> {
    let db = TestDb::create().await?;
    let store = Store::Postgres(pg_replica(&db, 30).await);
    Some((Holder::Db(db), store))
}

/// One `#[tokio::test]` per backend for each contract function.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (_holder, store) = super::sqlite_store().await.unwrap();
                    super::$name(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some((_holder, store)) = super::postgres_store().await else { return };
                    super::$name(store).await;
                }
            )*
        }
    };
}

contract!(
    ingest_then_duplicate,
    a_key_is_accepted_again_after_the_window,
    concurrent_ingests_are_all_committed_once,
    concurrent_successes_are_all_recorded,
    claims_are_exclusive_and_outcomes_recorded,
    released_rows_can_be_claimed_again,
    a_retry_that_does_not_count_keeps_the_attempt_count,
    dead_letters_are_listed_retried_and_purged,
    prune_drops_finished_rows_only,
    probe_is_a_write_that_succeeds,
    message_refs_are_stored_replaced_and_expire,
    storm_plans_rank_fold_and_digest_free_rows_only,
    ranked_claims_leave_new_rows_to_the_plan_but_not_forever,
);

async fn ranked_claims_leave_new_rows_to_the_plan_but_not_forever(store: Store) {
    store.ingest(event("fresh", &["t"])).await.unwrap();
    assert!(
        store.claim_ranked("t", 10).await.unwrap().is_empty(),
        "waits for its plan"
    );
    // A row unranked for longer than the grace (planning failing) is claimed anyway: made
    // due long ago by a release-like retry that keeps it a never-attempted candidate.
    let row = store.claim("t", 1).await.unwrap().remove(0);
    let long_ago = now_ms() - UNRANKED_GRACE_MS - 1_000;
    store
        .complete(
            row.id,
            Outcome::Retry {
                next_at_ms: long_ago,
                status: None,
                error: "store away".into(),
                response: None,
                body: None,
                counts_attempt: false,
            },
        )
        .await
        .unwrap();
    let claimed = store.claim_ranked("t", 10).await.unwrap();
    assert_eq!(claimed.len(), 1, "fail open after the grace");
    assert_eq!(claimed[0].id, row.id);
    // A ranked row is claimed at once.
    store.ingest(event("ranked", &["u"])).await.unwrap();
    let c = store.candidates("u", 10).await.unwrap().remove(0);
    let plan = StormPlan {
        ranks: vec![(c.id, 70, c.next_at_ms)],
        ..StormPlan::default()
    };
    store.apply_plan("u", plan).await.unwrap();
    assert_eq!(store.claim_ranked("u", 10).await.unwrap().len(), 1);
}

async fn storm_plans_rank_fold_and_digest_free_rows_only(store: Store) {
    for i in 0..4 {
        let mut ev = event(&format!("s{i}"), &["t", "other"]);
        ev.alert_uuid = Some(format!("a{i}"));
        store.ingest(ev).await.unwrap();
    }
    let c = store.candidates("t", 100).await.unwrap();
    assert_eq!(c.len(), 4);
    assert!(c.iter().all(|c| c.urgency.is_none() && c.members == 0));
    // One of them is claimed (being sent): the plan must leave it alone.
    let busy = store.claim("t", 1).await.unwrap().remove(0);
    let ids: Vec<i64> = c.iter().map(|c| c.id).filter(|id| *id != busy.id).collect();
    assert_eq!(store.candidates("t", 100).await.unwrap().len(), 3);
    let plan = StormPlan {
        ranks: vec![(ids[0], 90, 5), (busy.id, 10, 1)],
        alerts: vec![(ids[0], "{\"urgency\":90}".into())],
        folds: vec![
            (ids[1], FoldInto::NewDigest(0)),
            (ids[2], FoldInto::NewDigest(0)),
            (busy.id, FoldInto::NewDigest(0)),
        ],
        new_digests: vec![NewDigest {
            hook: "soc".into(),
            urgency: 40,
            next_at_ms: 7,
        }],
    };
    let applied = store.apply_plan("t", plan).await.unwrap();
    assert_eq!(
        applied,
        PlanApplied {
            folded: 2,
            digests: 1
        }
    );
    let c = store.candidates("t", 100).await.unwrap();
    // The ranked row and the new digest are left; the claimed row is still claimed.
    assert_eq!(c.len(), 2, "{c:?}");
    assert_eq!(
        (c[0].id, c[0].urgency, c[0].next_at_ms),
        (ids[0], Some(90), 5)
    );
    assert_eq!(c[0].alert_json.as_deref(), Some("{\"urgency\":90}"));
    let digest = &c[1];
    assert_eq!(digest.event_type, DIGEST_EVENT_TYPE);
    assert_eq!(
        (digest.members, digest.urgency, digest.next_at_ms),
        (2, Some(40), 7)
    );
    let members = store.members(digest.id).await.unwrap();
    assert_eq!(
        members.iter().map(|m| m.id).collect::<Vec<_>>(),
        [ids[1], ids[2]]
    );
    // The claimed row was not ranked: it completes as usual.
    store
        .complete(busy.id, Outcome::Delivered { status: 200 })
        .await
        .unwrap();
    // The other target is untouched; the digest is claimed like any delivery.
    assert_eq!(store.candidates("other", 100).await.unwrap().len(), 4);
    let claimed = store.claim("t", 10).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert_eq!(claimed[0].id, ids[0], "ranked first by its next_at");
    assert_eq!(claimed[0].alert_json.as_deref(), Some("{\"urgency\":90}"));
    assert_eq!(claimed[1].event_type, DIGEST_EVENT_TYPE);
    // Nothing folds into a row being sent.
    let late = StormPlan {
        folds: vec![(ids[0], FoldInto::Delivery(claimed[1].id))],
        ..StormPlan::default()
    };
    assert_eq!(store.apply_plan("t", late).await.unwrap().folded, 0);
    // Folded rows are neither pending nor dead.
    let d = store.depth().await.unwrap();
    assert_eq!((d.pending + d.inflight, d.dead), (4 + 2, 0));
}

async fn message_refs_are_stored_replaced_and_expire(store: Store) {
    assert_eq!(store.message_ref("slack", "a-1").await.unwrap(), None);
    let first = MessageRef {
        channel: "C1".into(),
        message_id: "1700000000.000100".into(),
        created_at_ms: 1_000,
    };
    store.put_message_ref("slack", "a-1", &first).await.unwrap();
    assert_eq!(
        store.message_ref("slack", "a-1").await.unwrap(),
        Some(first.clone())
    );
    // Per target: the same alert in another target has its own message.
    assert_eq!(store.message_ref("mm", "a-1").await.unwrap(), None);
    // A re-post (the message was deleted) replaces the reference.
    let second = MessageRef {
        message_id: "1700000000.000200".into(),
        created_at_ms: 5_000,
        ..first.clone()
    };
    store
        .put_message_ref("slack", "a-1", &second)
        .await
        .unwrap();
    assert_eq!(
        store.message_ref("slack", "a-1").await.unwrap(),
        Some(second.clone())
    );
    let old = MessageRef {
        created_at_ms: 1_000,
        ..first
    };
    store.put_message_ref("slack", "a-2", &old).await.unwrap();
    assert_eq!(store.prune_message_refs(2_000).await.unwrap(), 1);
    assert_eq!(store.message_ref("slack", "a-2").await.unwrap(), None);
    assert_eq!(
        store.message_ref("slack", "a-1").await.unwrap(),
        Some(second)
    );
}

fn retry(next_at_ms: i64, counts_attempt: bool) -> Outcome {
    Outcome::Retry {
        next_at_ms,
        status: Some(503),
        error: "HTTP 503".into(),
        response: None,
        body: Some("{\"x\":1}".into()),
        counts_attempt,
    }
}

fn dead() -> Outcome {
    Outcome::Dead {
        status: Some(400),
        error: "HTTP 400".into(),
        response: Some("bad".into()),
        body: Some("{}".into()),
    }
}

async fn ingest_then_duplicate(store: Store) {
    let a = store.ingest(event("k1", &["t"])).await.unwrap();
    let b = store.ingest(event("k1", &["t"])).await.unwrap();
    let Ingested::Accepted { event_id } = a else {
        panic!("{a:?}")
    };
    assert_eq!(b, Ingested::Duplicate { event_id });
    assert_eq!(store.depth().await.unwrap().pending, 1);
}

async fn a_key_is_accepted_again_after_the_window(store: Store) {
    let mut ev = event("k1", &["t"]);
    ev.dedup_window_ms = 1;
    store.ingest(ev.clone()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let again = store.ingest(ev).await.unwrap();
    assert!(matches!(again, Ingested::Accepted { .. }), "{again:?}");
    assert_eq!(store.depth().await.unwrap().pending, 2);
}

async fn concurrent_ingests_are_all_committed_once(store: Store) {
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

async fn concurrent_successes_are_all_recorded(store: Store) {
    for i in 0..150 {
        store.ingest(event(&format!("k{i}"), &["a"])).await.unwrap();
    }
    let claimed = store.claim("a", 150).await.unwrap();
    assert_eq!(claimed.len(), 150);
    // Mixed outcomes at once: successes share batches (PostgreSQL), the others do not.
    let mut tasks = Vec::new();
    for (i, c) in claimed.into_iter().enumerate() {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let outcome = if i % 10 == 0 {
                dead()
            } else {
                Outcome::Delivered { status: 200 }
            };
            s.complete(c.id, outcome).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let depth = store.depth().await.unwrap();
    assert_eq!((depth.pending, depth.inflight, depth.dead), (0, 0, 15));
    assert!(store.claim("a", 150).await.unwrap().is_empty());
}

async fn claims_are_exclusive_and_outcomes_recorded(store: Store) {
    store.ingest(event("k1", &["a", "b"])).await.unwrap();
    let first = store.claim("a", 10).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempts, 0);
    assert!(
        store.claim("a", 10).await.unwrap().is_empty(),
        "claimed twice"
    );
    assert_eq!(store.depth().await.unwrap().inflight, 1);
    store
        .complete(first[0].id, retry(now_ms() + 60_000, true))
        .await
        .unwrap();
    assert!(
        store.claim("a", 10).await.unwrap().is_empty(),
        "not yet due"
    );
    assert!(store.next_due(vec!["a".into()]).await.unwrap().is_some());
    let b = store.claim("b", 10).await.unwrap();
    store.complete(b[0].id, dead()).await.unwrap();
    let depth = store.depth().await.unwrap();
    assert_eq!((depth.pending, depth.inflight, depth.dead), (1, 0, 1));
}

async fn released_rows_can_be_claimed_again(store: Store) {
    store.ingest(event("k1", &["a"])).await.unwrap();
    let first = store.claim("a", 10).await.unwrap();
    assert_eq!(store.depth().await.unwrap().inflight, 1);
    store.complete(first[0].id, Outcome::Release).await.unwrap();
    let again = store.claim("a", 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 0, "a release is not an attempt");
}

async fn a_retry_that_does_not_count_keeps_the_attempt_count(store: Store) {
    store.ingest(event("k1", &["a"])).await.unwrap();
    let row = store.claim("a", 1).await.unwrap().remove(0);
    store.complete(row.id, retry(now_ms(), true)).await.unwrap();
    let row = store.claim("a", 1).await.unwrap().remove(0);
    assert_eq!(row.attempts, 1);
    assert_eq!(
        row.body.as_deref(),
        Some("{\"x\":1}"),
        "the rendered body is kept"
    );
    store
        .complete(row.id, retry(now_ms(), false))
        .await
        .unwrap();
    let row = store.claim("a", 1).await.unwrap().remove(0);
    assert_eq!(row.attempts, 1, "a 429 is not the delivery's attempt");
}

async fn dead_letters_are_listed_retried_and_purged(store: Store) {
    for k in ["k1", "k2", "k3"] {
        store.ingest(event(k, &["a"])).await.unwrap();
    }
    for row in store.claim("a", 10).await.unwrap() {
        store.complete(row.id, dead()).await.unwrap();
    }
    let list = store.dead_letters().await.unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0].last_status, Some(400));
    assert_eq!(list[0].attempts, 1);
    assert_eq!(list[0].response.as_deref(), Some("bad"));
    assert_eq!(store.retry_dead(Some(vec![list[0].id])).await.unwrap(), 1);
    let again = store.claim("a", 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 0, "a retried dead letter starts afresh");
    assert_eq!(again[0].body, None, "and is rendered again");
    assert_eq!(store.purge_dead().await.unwrap(), 2);
    assert!(store.dead_letters().await.unwrap().is_empty());
}

async fn prune_drops_finished_rows_only(store: Store) {
    store.ingest(event("k1", &["a", "b"])).await.unwrap();
    let row = store.claim("a", 1).await.unwrap().remove(0);
    store
        .complete(row.id, Outcome::Delivered { status: 200 })
        .await
        .unwrap();
    assert_eq!(store.prune(now_ms() + 1).await.unwrap(), 1);
    assert_eq!(store.depth().await.unwrap().pending, 1, "pending stays");
    assert_eq!(store.claim("b", 1).await.unwrap().len(), 1);
}

async fn probe_is_a_write_that_succeeds(store: Store) {
    store.probe().await.unwrap();
    store.probe().await.unwrap();
}

// ---- PostgreSQL only: several replicas on one database. ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_the_same_event_on_two_replicas_is_accepted_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (a, b) = (pg_replica(&db, 30).await, pg_replica(&db, 30).await);
    let mut tasks = Vec::new();
    for i in 0..100 {
        for replica in [a.clone(), b.clone()] {
            tasks.push(tokio::spawn(async move {
                (i, replica.ingest(event(&format!("k{i}"), &["t"])).await)
            }));
        }
    }
    // Both replicas batch their ingests: keys meet across batches and replicas.
    let mut accepted = std::collections::HashMap::new();
    let mut duplicates = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (i, Ok(Ingested::Accepted { event_id })) => {
                assert!(
                    accepted.insert(i, event_id).is_none(),
                    "k{i} accepted twice"
                )
            }
            (i, Ok(Ingested::Duplicate { event_id })) => duplicates.push((i, event_id)),
            (i, Err(e)) => panic!("k{i}: {e}"),
        }
    }
    assert_eq!((accepted.len(), duplicates.len()), (100, 100));
    for (i, event_id) in duplicates {
        assert_eq!(
            accepted[&i], event_id,
            "a duplicate names the accepted event"
        );
    }
    assert_eq!(
        a.depth().await.unwrap().pending,
        100,
        "one delivery per event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_replicas_never_claim_the_same_row() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let replicas: Vec<PgStore> = vec![
        pg_replica(&db, 30).await,
        pg_replica(&db, 30).await,
        pg_replica(&db, 30).await,
    ];
    for i in 0..300 {
        replicas[i % 3]
            .ingest(event(&format!("k{i}"), &["t"]))
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for r in &replicas {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let rows = r.claim("t", 7, false).await.unwrap();
                if rows.is_empty() {
                    return mine;
                }
                mine.extend(rows.into_iter().map(|c| c.id));
            }
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        for id in t.await.unwrap() {
            assert!(all.insert(id), "row {id} claimed twice");
        }
    }
    assert_eq!(all.len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_next_due_sees_free_rows_first_then_the_end_of_a_lease() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = pg_replica(&db, 30).await;
    let start = now_ms();
    assert_eq!(store.next_due(vec!["t".into()]).await.unwrap(), None);
    store.ingest(event("k1", &["t"])).await.unwrap();
    store.ingest(event("k2", &["u"])).await.unwrap();
    let claimed = store.claim("t", 10, false).await.unwrap();
    assert_eq!(claimed.len(), 1);
    // Only a leased row on t: due for the others when its lease ends.
    let t_due = store.next_due(vec!["t".into()]).await.unwrap().unwrap();
    assert!(t_due >= start + 29_000, "lease end, got {}", t_due - start);
    // A free row on u is due now, and wins over the lease.
    let both = store
        .next_due(vec!["t".into(), "u".into()])
        .await
        .unwrap()
        .unwrap();
    assert!(both <= now_ms(), "free row due now, got {}", both - start);
    // Rescheduled far out: the lease is the earliest again.
    let u = store.claim("u", 10, false).await.unwrap().remove(0);
    store
        .complete(u.id, retry(start + 100_000, true))
        .await
        .unwrap();
    let later = store
        .next_due(vec!["t".into(), "u".into()])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(later, t_due);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_dead_replicas_claims_are_taken_over_after_the_lease() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let survivor = pg_replica(&db, 1).await;
    survivor.ingest(event("k1", &["t"])).await.unwrap();
    {
        let doomed = pg_replica(&db, 1).await;
        assert_eq!(doomed.claim("t", 10, false).await.unwrap().len(), 1);
        // Dropped without recording anything: like SIGKILL, it stops renewing its lease.
    }
    assert!(
        survivor.claim("t", 10, false).await.unwrap().is_empty(),
        "still leased"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let taken = survivor.claim("t", 10, false).await.unwrap();
    assert_eq!(taken.len(), 1, "taken over after lease_secs");
    assert_eq!(taken[0].attempts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_live_replica_keeps_its_claims_past_the_lease() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (a, b) = (pg_replica(&db, 2).await, pg_replica(&db, 2).await);
    a.ingest(event("k1", &["t"])).await.unwrap();
    let row = a.claim("t", 1, false).await.unwrap().remove(0);
    // A long send: over two lease lengths. The renewal keeps the row with its holder.
    tokio::time::sleep(std::time::Duration::from_millis(4500)).await;
    assert!(
        b.claim("t", 10, false).await.unwrap().is_empty(),
        "renewed lease"
    );
    a.complete(row.id, Outcome::Delivered { status: 200 })
        .await
        .unwrap();
    assert_eq!(b.depth().await.unwrap(), QueueDepth::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_only_the_lease_holder_records_an_outcome() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (a, b) = (pg_replica(&db, 30).await, pg_replica(&db, 30).await);
    a.ingest(event("k1", &["t"])).await.unwrap();
    let stale = a.claim("t", 1, false).await.unwrap().remove(0);
    // A stalled past its lease: expire it by hand, B takes the row over.
    db.connect()
        .await
        .execute("UPDATE deliveries SET lease_until = 0", &[])
        .await
        .unwrap();
    let fresh = b.claim("t", 1, false).await.unwrap().remove(0);
    assert_eq!(fresh.id, stale.id);
    a.complete(stale.id, dead()).await.unwrap();
    assert_eq!(b.depth().await.unwrap().dead, 0, "A's late outcome ignored");
    // A late success too (written by A's group commit).
    a.complete(stale.id, Outcome::Delivered { status: 200 })
        .await
        .unwrap();
    assert_eq!(
        b.depth().await.unwrap().inflight,
        1,
        "A's late success ignored"
    );
    b.complete(fresh.id, Outcome::Delivered { status: 200 })
        .await
        .unwrap();
    assert_eq!(b.depth().await.unwrap(), QueueDepth::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_what_acknowledges_waits_for_the_flush_and_bookkeeping_does_not() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = pg_replica(&db, 30).await;
    // Ingests, failures and dead letters are answered only once flushed; claims, leases and
    // successes may be lost with the server itself (see `relaxed`).
    assert_eq!(store.commit_modes().await, ("on".into(), "off".into()));
    // Both pools still see each other's writes at once: a relaxed commit is visible before it
    // is flushed.
    store.ingest(event("k1", &["t"])).await.unwrap();
    let c = store.claim("t", 1, false).await.unwrap().remove(0);
    store
        .complete(c.id, Outcome::Delivered { status: 200 })
        .await
        .unwrap();
    assert_eq!(store.depth().await.unwrap(), QueueDepth::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_send_slots_are_shared_and_spaced() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (a, b) = (pg_replica(&db, 30).await, pg_replica(&db, 30).await);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let r = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            r.reserve_slot("target:slack", 100).await
        }));
    }
    let mut slots = Vec::new();
    for t in tasks {
        slots.push(t.await.unwrap().unwrap());
    }
    slots.sort();
    for w in slots.windows(2) {
        assert!(w[1] - w[0] >= 100, "slots {} and {} too close", w[0], w[1]);
    }
    // A Retry-After seen by one replica holds the other back too.
    let until = now_ms() + 10_000;
    assert_eq!(b.paused_until("target:slack").await.unwrap(), 0);
    a.pause("target:slack", until).await.unwrap();
    assert_eq!(b.paused_until("target:slack").await.unwrap(), until);
    assert!(b.reserve_slot("target:slack", 100).await.unwrap() >= until);
    assert!(b.reserve_slot("target:other", 100).await.unwrap() < until);
}

/// Unlimited targets reserve no slots; a pause set by any replica holds their claims instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_paused_target_is_not_claimed_by_any_replica() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (a, b) = (pg_replica(&db, 30).await, pg_replica(&db, 30).await);
    a.ingest(event("k1", &["soar", "other"])).await.unwrap();
    a.pause(&target_pacing_key("soar"), now_ms() + 600)
        .await
        .unwrap();
    assert!(
        b.claim("soar", 10, false).await.unwrap().is_empty(),
        "paused"
    );
    assert_eq!(
        b.claim("other", 10, false).await.unwrap().len(),
        1,
        "others are not"
    );
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_eq!(
        b.claim("soar", 10, false).await.unwrap().len(),
        1,
        "after the pause"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_version_5_store_upgrades_with_its_queue() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let mut client = db.connect().await;
    super::postgres::migrate_to(&mut client, 5).await;
    // What a V5 relay left: a pending delivery, and an old event whose deliveries are gone.
    let now = now_ms();
    let pending: i64 = client
        .query_one(
            "INSERT INTO events (public_id, hook, dedup_key, type, action, alert_uuid, short_id,
                                 body, received_at)
             VALUES ('ev-pending', 'h', 'k-pending', 'alert', 'created', 'u1', 'AL1', '{}', $1)
             RETURNING id",
            &[&now],
        )
        .await
        .unwrap()
        .get(0);
    client
        .execute(
            "INSERT INTO events (public_id, hook, dedup_key, type, action, body, received_at)
             VALUES ('ev-old', 'h', 'k-old', 'alert', 'created', '{}', 1000)",
            &[],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO deliveries (event_id, target, state, next_at, age_from, updated_at)
             VALUES ($1, 't', 'pending', 0, 0, 0)",
            &[&pending],
        )
        .await
        .unwrap();

    let store = pg_replica(&db, 30).await;
    let foreign_keys: i64 = client
        .query_one(
            "SELECT COUNT(*) FROM pg_constraint
             WHERE conrelid = 'deliveries'::regclass AND contype = 'f'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(foreign_keys, 0, "V6 drops the foreign key");
    let method: String = client
        .query_one(
            "SELECT a.amname::text FROM pg_class c JOIN pg_am a ON a.oid = c.relam
             WHERE c.relname = 'events_received'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(method, "brin");

    let claimed = store.claim("t", 10, false).await.unwrap();
    assert_eq!(claimed.len(), 1, "the queued delivery survives the upgrade");
    assert_eq!(claimed[0].event_id, "ev-pending");
    assert!(matches!(
        store.ingest(event("k-new", &["t"])).await.unwrap(),
        Ingested::Accepted { .. }
    ));
    // `prune` still finds the old event by time (now through the BRIN index), and only it.
    store.prune(now - 1).await.unwrap();
    let left: Vec<String> = client
        .query("SELECT public_id FROM events ORDER BY id", &[])
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(!left.contains(&"ev-old".to_string()), "{left:?}");
}

/// Deliveries run on threads of their own at a lower priority. A pooled connection first
/// asked for there must not have its I/O stuck on those threads: whoever borrows it later
/// (an ingest) would wait for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_pooled_connections_do_their_io_on_the_runtime_that_opened_the_store() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = pg_replica(&db, 30).await;
    // Another runtime with one thread (the delivery threads) opens every connection it can.
    let other = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let from_other = store.clone();
    other
        .spawn(async move {
            let claims = (0..8).map(|_| from_other.claim("t", 1, false));
            for result in futures_util::future::join_all(claims).await {
                result.expect("claim from the other runtime");
            }
        })
        .await
        .unwrap();
    // That thread is now busy for 3 s, as a delivery thread may be when cores run out.
    other.spawn(async { std::thread::sleep(Duration::from_secs(3)) });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    let claims = (0..8).map(|_| store.claim("t", 1, false));
    let all = tokio::time::timeout(
        Duration::from_secs(2),
        futures_util::future::join_all(claims),
    )
    .await
    .expect("no claim waited for the busy runtime");
    assert!(all.iter().all(|r| r.is_ok()));
    assert!(started.elapsed() < Duration::from_secs(2));
    other.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_replicas_starting_together_migrate_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let settings = pg_settings(db.url(), 30);
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let s = settings.clone();
            tokio::spawn(async move { PgStore::open(&s).await.map(|_| ()) })
        })
        .collect();
    for o in opens {
        o.await.unwrap().expect("every replica starts");
    }
    let n: i64 = db
        .connect()
        .await
        .query_one("SELECT COUNT(*) FROM refinery_schema_history", &[])
        .await
        .unwrap()
        .get(0);
    // One row per migration (V1, V3 message refs, V4 storms, V5 HOT claims, V6 lighter
    // ingest), each applied once.
    assert_eq!(n, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_schema_newer_than_the_binary_stops_the_relay() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    drop(pg_replica(&db, 30).await);
    db.connect()
        .await
        .execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
             VALUES (99, 'future', '2030-01-01T00:00:00Z', '0')",
            &[],
        )
        .await
        .unwrap();
    let err = PgStore::open(&pg_settings(db.url(), 30))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 99,
                supported: 6
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_store_errors_never_show_the_password() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let mut url = url::Url::parse(db.url()).unwrap();
    url.set_username("nobody_here").unwrap();
    url.set_password(Some("s3cr3t-pw")).unwrap();
    let err = PgStore::open(&pg_settings(url.as_str(), 30))
        .await
        .err()
        .expect("unknown role");
    assert!(!format!("{err} {err:?}").contains("s3cr3t-pw"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_import_copies_the_sqlite_queue_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    {
        let sqlite = SqliteStore::open(&path, SyncMode::Normal).unwrap();
        sqlite.ingest(event("pending", &["a", "b"])).await.unwrap();
        sqlite.ingest(event("dead", &["a"])).await.unwrap();
        sqlite.ingest(event("done", &["b"])).await.unwrap();
        // Delivery ids follow insertion: pending→a 1, pending→b 2, dead→a 3, done→b 4.
        for c in sqlite.claim("a", 10, false).await.unwrap() {
            let outcome = if c.id == 3 { dead() } else { Outcome::Release };
            sqlite.complete(c.id, outcome).await.unwrap();
        }
        for c in sqlite.claim("b", 10, false).await.unwrap() {
            let outcome = if c.id == 4 {
                Outcome::Delivered { status: 200 }
            } else {
                Outcome::Release
            };
            sqlite.complete(c.id, outcome).await.unwrap();
        }
    }
    let pg = Store::Postgres(pg_replica(&db, 30).await);
    let first = pg.import_sqlite(&path).await.unwrap();
    // The delivered-only event stays behind: nothing left to do for it.
    assert_eq!((first.events, first.deliveries), (2, 3), "{first:?}");
    let depth = pg.depth().await.unwrap();
    assert_eq!((depth.pending, depth.dead), (2, 1));
    let second = pg.import_sqlite(&path).await.unwrap();
    assert_eq!((second.events, second.already_present), (0, 2));
    assert_eq!(pg.depth().await.unwrap(), depth, "nothing copied twice");
    // Dedup carries over: the imported events are duplicates here.
    assert!(matches!(
        pg.ingest(event("pending", &["a"])).await.unwrap(),
        Ingested::Duplicate { .. }
    ));
}

/// `url` with its `sslmode` replaced by `mode`.
fn with_sslmode(url: &str, mode: &str) -> String {
    let mut u = url::Url::parse(url).unwrap();
    let rest: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| k != "sslmode")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    u.query_pairs_mut()
        .clear()
        .extend_pairs(rest)
        .append_pair("sslmode", mode);
    u.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_sslmode_require_encrypts_and_verify_full_checks_the_certificate() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let ssl_on: String = db
        .connect()
        .await
        .query_one("SHOW ssl", &[])
        .await
        .unwrap()
        .get(0);
    if ssl_on != "on" {
        // Nothing to check against: this server has no TLS.
        return;
    }
    let encrypted = |url: String| async move {
        let client = super::postgres::connect_one(&url).await?;
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await?;
        Ok::<bool, StoreError>(row.get(0))
    };
    assert!(encrypted(with_sslmode(db.url(), "require")).await.unwrap());
    assert!(encrypted(with_sslmode(db.url(), "prefer")).await.unwrap());
    assert!(!encrypted(with_sslmode(db.url(), "disable")).await.unwrap());
    // The local server's certificate is self-signed: checking it must fail, not fall back.
    let err = encrypted(with_sslmode(db.url(), "verify-full"))
        .await
        .expect_err("an untrusted certificate is refused");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    // And the store itself runs over TLS.
    let store = pg_replica_at(&with_sslmode(db.url(), "require")).await;
    store.probe().await.unwrap();
}

async fn pg_replica_at(url: &str) -> PgStore {
    PgStore::open(&pg_settings(url, 30)).await.expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_claims_handed_back_at_shutdown_are_free_at_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (a, b) = (pg_replica(&db, 30).await, pg_replica(&db, 30).await);
    a.ingest(event("k1", &["t"])).await.unwrap();
    assert_eq!(a.claim("t", 1, false).await.unwrap().len(), 1);
    assert!(b.claim("t", 1, false).await.unwrap().is_empty());
    assert_eq!(a.release_claims().await.unwrap(), 1);
    assert_eq!(
        b.claim("t", 1, false).await.unwrap().len(),
        1,
        "no lease wait"
    );
}
