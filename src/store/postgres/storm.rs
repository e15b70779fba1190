//! Storm control on PostgreSQL (see `delivery::storm`): the rows the planner may act on, and
//! its plan applied in one transaction. Rows are locked `FOR UPDATE SKIP LOCKED` and touched
//! only while free (pending, never attempted, no live lease), so a row another replica claims
//! meanwhile is sent on its own and nothing is ever in two messages.

use std::collections::HashSet;

use super::PgStore;
use crate::store::{
    now_ms, Candidate, FoldInto, Member, PlanApplied, StoreError, StormPlan, DIGEST_EVENT_TYPE,
};

impl PgStore {
    pub async fn candidates(
        &self,
        target: &str,
        limit: usize,
    ) -> Result<Vec<Candidate>, StoreError> {
        let client = self.client().await?;
        let now = now_ms();
        let rows = client
            .query(
                &client
                    .prepare_cached(
                        "SELECT d.id, e.hook, e.type, e.action, e.alert_uuid, e.short_id, e.body,
                                e.alert_json, d.urgency::BIGINT, d.next_at, e.received_at,
                                (SELECT COUNT(*) FROM deliveries m
                                 WHERE m.folded_into = d.id AND m.state = 'folded')
                         FROM deliveries d JOIN events e ON e.id = d.event_id
                         WHERE d.state = 'pending' AND d.target = $1 AND d.next_at <= $2
                           AND d.attempts = 0 AND d.body IS NULL
                           AND (d.lease_until IS NULL OR d.lease_until < $2)
                         ORDER BY d.next_at LIMIT $3",
                    )
                    .await?,
                &[&target, &now, &(limit as i64)],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| Candidate {
                id: r.get(0),
                hook: r.get(1),
                event_type: r.get(2),
                action: r.get(3),
                alert_uuid: r.get(4),
                short_id: r.get(5),
                event_json: r.get(6),
                alert_json: r.get(7),
                urgency: r.get(8),
                next_at_ms: r.get(9),
                received_at_ms: r.get(10),
                members: r.get::<_, i64>(11).max(0) as u32,
            })
            .collect())
    }

    pub async fn apply_plan(
        &self,
        target: &str,
        plan: StormPlan,
    ) -> Result<PlanApplied, StoreError> {
        let mut client = self.client().await?;
        let now = now_ms();
        let tx = client.transaction().await?;
        let mut ids: Vec<i64> = plan.ranks.iter().map(|r| r.0).collect();
        for (member, into) in &plan.folds {
            ids.push(*member);
            if let FoldInto::Delivery(id) = into {
                ids.push(*id);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        // Locked in id order (like lease renewal), so two planners cannot deadlock.
        let free: HashSet<i64> = tx
            .query(
                "SELECT id FROM deliveries
                 WHERE id = ANY($1) AND target = $2 AND state = 'pending' AND attempts = 0
                   AND body IS NULL AND (lease_until IS NULL OR lease_until < $3)
                 ORDER BY id FOR UPDATE SKIP LOCKED",
                &[&ids, &target, &now],
            )
            .await?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        let rank = tx
            .prepare("UPDATE deliveries SET urgency = $2, next_at = $3 WHERE id = $1")
            .await?;
        for (id, urgency, next_at) in &plan.ranks {
            if free.contains(id) {
                tx.execute(&rank, &[id, &(*urgency as i32), next_at])
                    .await?;
            }
        }
        let keep = tx
            .prepare(
                "UPDATE events SET alert_json = $2
                 WHERE id = (SELECT event_id FROM deliveries WHERE id = $1) AND alert_json IS NULL",
            )
            .await?;
        for (id, alert) in &plan.alerts {
            tx.execute(&keep, &[id, alert]).await?;
        }
        let fold = tx
            .prepare(
                "UPDATE deliveries SET state = 'folded', folded_into = $2, updated_at = $3
                 WHERE id = $1",
            )
            .await?;
        let mut digests: Vec<Option<i64>> = vec![None; plan.new_digests.len()];
        let mut applied = PlanApplied::default();
        for (member, into) in &plan.folds {
            if !free.contains(member) {
                continue;
            }
            let into = match *into {
                FoldInto::Delivery(id) if free.contains(&id) => id,
                FoldInto::Delivery(_) => continue,
                FoldInto::NewDigest(i) => match digests.get(i).copied().flatten() {
                    Some(id) => id,
                    None => {
                        let Some(d) = plan.new_digests.get(i) else {
                            continue;
                        };
                        let public_id = uuid::Uuid::now_v7().to_string();
                        let body =
                            serde_json::json!({"type": DIGEST_EVENT_TYPE, "action": "digest"})
                                .to_string();
                        let row = tx
                            .query_one(
                                "WITH e AS (
                                   INSERT INTO events (public_id, hook, dedup_key, type, action,
                                                       body, received_at)
                                   VALUES ($1, $2, $3, $4, 'digest', $5, $6) RETURNING id)
                                 INSERT INTO deliveries (event_id, target, state, next_at,
                                                         age_from, updated_at, urgency)
                                 SELECT e.id, $7, 'pending', $8, $6, $6, $9 FROM e
                                 RETURNING id",
                                &[
                                    &public_id,
                                    &d.hook,
                                    &format!("digest:{public_id}"),
                                    &DIGEST_EVENT_TYPE,
                                    &body,
                                    &now,
                                    &target,
                                    &d.next_at_ms,
                                    &(d.urgency as i32),
                                ],
                            )
                            .await?;
                        let id: i64 = row.get(0);
                        digests[i] = Some(id);
                        applied.digests += 1;
                        id
                    }
                },
            };
            tx.execute(&fold, &[member, &into, &now]).await?;
            applied.folded += 1;
        }
        tx.commit().await?;
        Ok(applied)
    }

    pub async fn members(&self, delivery: i64) -> Result<Vec<Member>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT d.id, e.hook, e.body, e.alert_json, e.short_id, d.urgency::BIGINT,
                        e.received_at
                 FROM deliveries d JOIN events e ON e.id = d.event_id
                 WHERE d.folded_into = $1 AND d.state = 'folded' ORDER BY e.id",
                &[&delivery],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| Member {
                id: r.get(0),
                hook: r.get(1),
                event_json: r.get(2),
                alert_json: r.get(3),
                short_id: r.get(4),
                urgency: r.get(5),
                received_at_ms: r.get(6),
            })
            .collect())
    }
}
