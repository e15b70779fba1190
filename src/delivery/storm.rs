//! Storm control: the pure rules that decide, for one paced target, which waiting messages go
//! first, which updates collapse into one message, and which alerts go out in digests.
//!
//! The dispatcher runs a plan before claiming a paced target's rows (see `Deliverer::plan`):
//! it reads the target's *candidates* (pending, due, never attempted, not claimed), learns the
//! urgency of the new ones (their alert, fetched once and kept with the event), and applies
//! the [`StormPlan`] from [`plan`] in one store transaction. Rows claimed meanwhile are left
//! out by the store, so every alert is in exactly one sent message.

use std::collections::HashMap;

use crate::store::{Candidate, FoldInto, NewDigest, StormPlan, DIGEST_EVENT_TYPE};

/// The urgency a message is ranked with when its alert could not be read.
///
/// Rule: 50, the middle of SEKOIA.IO's 0–100 scale. Reason: an alert the API could not
/// describe may be urgent, so it is not sent last; but it does not jump ahead of alerts
/// known to be critical.
pub const UNKNOWN_URGENCY: i64 = 50;

/// How much earlier one point of urgency makes a message due, in ms (about 11.6 days).
const RANK_SPAN_MS: i64 = 1_000_000_000;

/// The `next_at` that puts a due message in urgency order.
///
/// Rule: `due_at - urgency × 10⁹ ms`: a more urgent message is due earlier than any less
/// urgent one (due times of one backlog are far less than 11 days apart), and messages of one
/// urgency keep their order. Reason: claims read the `(target, next_at)` index in order and
/// stop after a few rows; ordering by an urgency column instead would sort the whole backlog
/// on every claim. Only due, never-attempted rows are ranked, so no retry is moved.
pub fn rank_next_at(due_at_ms: i64, urgency: i64) -> i64 {
    due_at_ms - urgency.clamp(0, 100) * RANK_SPAN_MS
}

/// What the planner knows about one candidate beyond the store row.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// The alert's urgency, when it is known.
    pub urgency: Option<i64>,
    /// The alert JSON just fetched, to keep with the event.
    pub alert_json: Option<String>,
}

/// The digest limits of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestLimits {
    /// More waiting messages than this go out as digests (0 = never).
    pub after: usize,
    /// Alerts per digest.
    pub max_items: usize,
}

/// Decide the plan for one target's candidates.
///
/// Rules, in order:
/// 1. **Collapse.** Of several waiting events of one alert (same hook and alert uuid), only
///    the newest is sent; the older ones are folded into it and its message lists the
///    changes. Reason: the channel needs the alert's current state once, not every step.
/// 2. **Urgent first.** Each message not yet ranked gets `urgency` and [`rank_next_at`];
///    a digest is ranked by its most urgent alert.
/// 3. **Digest.** When more than `after` messages wait (single ones and digests not yet
///    sent), the `after − digests` most urgent stay single and the rest fill the open
///    digests of their hook (up to `max_items`), then new ones. Reason: a storm reaches a
///    1-message-per-second channel as a handful of urgent messages and a few digests, not
///    hundreds of messages over ten minutes.
pub fn plan(
    candidates: &[Candidate],
    known: &HashMap<i64, Known>,
    limits: DigestLimits,
    now_ms: i64,
) -> StormPlan {
    let mut out = StormPlan::default();
    let urgency_of = |c: &Candidate| {
        c.urgency
            .or_else(|| known.get(&c.id).and_then(|k| k.urgency))
            .unwrap_or(UNKNOWN_URGENCY)
    };
    for c in candidates {
        if let Some(json) = known.get(&c.id).and_then(|k| k.alert_json.clone()) {
            out.alerts.push((c.id, json));
        }
    }

    // 1. Collapse: the newest event of each alert carries the older ones.
    let (digests, singles): (Vec<&Candidate>, Vec<&Candidate>) = candidates
        .iter()
        .partition(|c| c.event_type == DIGEST_EVENT_TYPE);
    let mut newest: HashMap<(&str, &str), &Candidate> = HashMap::new();
    for c in &singles {
        if let Some(uuid) = c.alert_uuid.as_deref().filter(|_| c.event_type == "alert") {
            let slot = newest.entry((c.hook.as_str(), uuid)).or_insert(c);
            if (c.received_at_ms, c.id) > (slot.received_at_ms, slot.id) {
                *slot = c;
            }
        }
    }
    let mut survivors: Vec<&Candidate> = Vec::new();
    for c in singles {
        let carrier = c
            .alert_uuid
            .as_deref()
            .filter(|_| c.event_type == "alert")
            .and_then(|uuid| newest.get(&(c.hook.as_str(), uuid)));
        match carrier {
            Some(n) if n.id != c.id => out.folds.push((c.id, FoldInto::Delivery(n.id))),
            _ => survivors.push(c),
        }
    }

    // 2. Urgent first, then oldest.
    survivors.sort_by_key(|c| (-urgency_of(c), c.received_at_ms, c.id));
    for c in &survivors {
        if c.urgency.is_none() {
            let u = urgency_of(c);
            out.ranks.push((c.id, u, rank_next_at(c.received_at_ms, u)));
        }
    }

    // 3. Digests.
    let keep = limits.after.saturating_sub(digests.len());
    if limits.after == 0 || limits.max_items == 0 || survivors.len() <= keep {
        return out;
    }
    // Room left in the digests not yet sent, per hook, and their current urgency.
    let mut open: Vec<(i64, &str, usize, i64)> = digests
        .iter()
        .map(|d| {
            let room = limits.max_items.saturating_sub(d.members as usize);
            (d.id, d.hook.as_str(), room, d.urgency.unwrap_or(0))
        })
        .collect();
    let mut raised: HashMap<i64, i64> = HashMap::new();
    // New digests: (hook, members so far, urgency).
    let mut fresh: Vec<(String, usize, i64)> = Vec::new();
    for c in &survivors[keep..] {
        let u = urgency_of(c);
        if let Some(slot) = open
            .iter_mut()
            .find(|(_, hook, room, _)| *hook == c.hook && *room > 0)
        {
            slot.2 -= 1;
            if u > slot.3 {
                slot.3 = u;
                raised.insert(slot.0, u);
            }
            out.folds.push((c.id, FoldInto::Delivery(slot.0)));
            continue;
        }
        let i = match fresh
            .iter()
            .position(|(hook, n, _)| *hook == c.hook && *n < limits.max_items)
        {
            Some(i) => i,
            None => {
                fresh.push((c.hook.clone(), 0, 0));
                fresh.len() - 1
            }
        };
        fresh[i].1 += 1;
        fresh[i].2 = fresh[i].2.max(u);
        out.folds.push((c.id, FoldInto::NewDigest(i)));
    }
    for (id, u) in raised {
        out.ranks.push((id, u, rank_next_at(now_ms, u)));
    }
    out.new_digests = fresh
        .into_iter()
        .map(|(hook, _, urgency)| NewDigest {
            hook,
            urgency,
            next_at_ms: rank_next_at(now_ms, urgency),
        })
        .collect();
    out
}

/// The changes of a collapsed alert, in order: one line per field that changed.
///
/// Rule: for each field in the events' `attributes.updated` (names preferred to uuids,
/// `_name` dropped, as in the thread replies), its successive values joined by " → ", e.g.
/// `status: Pending → Acknowledged → Closed`; a value repeated in a row is said once; at most
/// 10 fields of 200 characters. Reason: the message shows the newest state; the line says how
/// it got there without one message per step.
pub fn changes(events: &[serde_json::Value]) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let mut values: HashMap<String, Vec<String>> = HashMap::new();
    for e in events {
        for (name, text) in crate::domain::event::updated_fields(e) {
            let list = values.entry(name.clone()).or_default();
            if list.is_empty() {
                order.push(name);
            }
            if list.last() != Some(&text) {
                list.push(text);
            }
        }
    }
    order
        .into_iter()
        .take(10)
        .map(|name| {
            let line = format!("{name}: {}", values[&name].join(" → "));
            crate::render::truncate_chars(&line, 200).into_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cand(id: i64, uuid: &str, received: i64) -> Candidate {
        Candidate {
            id,
            hook: "soc".into(),
            event_type: "alert".into(),
            action: "created".into(),
            alert_uuid: Some(uuid.into()),
            short_id: None,
            event_json: "{}".into(),
            alert_json: None,
            urgency: None,
            next_at_ms: received,
            received_at_ms: received,
            members: 0,
        }
    }

    fn known(pairs: &[(i64, i64)]) -> HashMap<i64, Known> {
        pairs
            .iter()
            .map(|(id, u)| {
                (
                    *id,
                    Known {
                        urgency: Some(*u),
                        alert_json: None,
                    },
                )
            })
            .collect()
    }

    const OFF: DigestLimits = DigestLimits {
        after: 0,
        max_items: 20,
    };

    #[test]
    fn ranks_put_urgency_first_then_age() {
        assert!(rank_next_at(2_000, 90) < rank_next_at(1_000, 10));
        assert!(rank_next_at(1_000, 50) < rank_next_at(2_000, 50));
        assert_eq!(rank_next_at(5, 500), rank_next_at(5, 100));
        let c = [cand(1, "a", 100), cand(2, "b", 200), cand(3, "c", 300)];
        let p = plan(&c, &known(&[(1, 10), (3, 90)]), OFF, 1_000);
        let order: Vec<(i64, i64)> = p.ranks.iter().map(|r| (r.0, r.1)).collect();
        assert_eq!(order, [(3, 90), (2, UNKNOWN_URGENCY), (1, 10)]);
        assert!(p.folds.is_empty() && p.new_digests.is_empty());
        // Already ranked rows are not ranked again.
        let mut ranked = c.clone();
        ranked.iter_mut().for_each(|c| c.urgency = Some(1));
        assert!(plan(&ranked, &HashMap::new(), OFF, 1_000).ranks.is_empty());
    }

    #[test]
    fn older_events_of_an_alert_fold_into_the_newest() {
        let mut other_hook = cand(4, "a", 50);
        other_hook.hook = "other".into();
        let c = [
            cand(1, "a", 100),
            cand(2, "b", 150),
            cand(3, "a", 200),
            other_hook,
        ];
        let p = plan(&c, &HashMap::new(), OFF, 1_000);
        assert_eq!(p.folds, [(1, FoldInto::Delivery(3))]);
        let ranked: Vec<i64> = p.ranks.iter().map(|r| r.0).collect();
        assert_eq!(ranked, [4, 2, 3]);
    }

    #[test]
    fn beyond_digest_after_the_least_urgent_go_into_digests() {
        let limits = DigestLimits {
            after: 2,
            max_items: 2,
        };
        let c: Vec<Candidate> = (1..=7).map(|i| cand(i, &format!("u{i}"), i * 10)).collect();
        let p = plan(&c, &known(&[(7, 90)]), limits, 1_000);
        // 7 (urgent) and 1 (oldest) stay single; 2..6 go in digests of 2, 2, 1.
        let singles: Vec<i64> = c
            .iter()
            .map(|c| c.id)
            .filter(|id| !p.folds.iter().any(|f| f.0 == *id))
            .collect();
        assert_eq!(singles, [1, 7]);
        assert_eq!(p.new_digests.len(), 3);
        assert_eq!(
            p.folds,
            [
                (2, FoldInto::NewDigest(0)),
                (3, FoldInto::NewDigest(0)),
                (4, FoldInto::NewDigest(1)),
                (5, FoldInto::NewDigest(1)),
                (6, FoldInto::NewDigest(2)),
            ]
        );
        assert_eq!(p.new_digests[0].urgency, UNKNOWN_URGENCY);
        // Under the limit: nothing is digested.
        assert!(plan(&c[..2], &HashMap::new(), limits, 1_000)
            .folds
            .is_empty());
    }

    #[test]
    fn open_digests_are_filled_first_and_count_as_waiting_messages() {
        let limits = DigestLimits {
            after: 2,
            max_items: 3,
        };
        let mut digest = cand(10, "", 0);
        digest.event_type = DIGEST_EVENT_TYPE.into();
        digest.alert_uuid = None;
        digest.members = 2;
        digest.urgency = Some(20);
        // One digest waits: one single may stay; of the two others, one fills the digest.
        let c = [digest, cand(1, "a", 10), cand(2, "b", 20), cand(3, "c", 30)];
        let p = plan(&c, &known(&[(3, 80)]), limits, 1_000);
        assert_eq!(
            p.folds,
            [(1, FoldInto::Delivery(10)), (2, FoldInto::NewDigest(0))]
        );
        assert!(
            p.ranks.iter().any(|r| r.0 == 10 && r.1 == UNKNOWN_URGENCY),
            "the digest is ranked by its most urgent alert"
        );
        assert_eq!(p.new_digests.len(), 1);
    }

    #[test]
    fn changes_list_each_fields_values_in_order() {
        let ev = |status: &str, urgency: i64| json!({"attributes": {"updated": {"status": "uuid", "status_name": status, "urgency": urgency}}});
        let lines = changes(&[
            ev("Pending", 40),
            ev("Acknowledged", 40),
            json!({"attributes": {}}),
            ev("Closed", 70),
        ]);
        assert_eq!(
            lines,
            [
                "status: Pending → Acknowledged → Closed",
                "urgency: 40 → 70"
            ]
        );
        assert!(changes(&[json!({})]).is_empty());
    }
}
