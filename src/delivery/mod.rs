//! Delivery: claim due rows from the store, enrich, route, render, pace, post, record.
//!
//! One dispatcher loop claims work per target. Each target has its own slots: at most
//! `delivery.concurrency` sends in flight and, for rate-limited targets, no more than its token
//! bucket holds. A target that hangs or throttles can only ever block itself, never the slots
//! a healthy target needs. Each claimed row runs in its own task.

pub mod policy;
mod sender;
pub mod storm;
mod threads;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::configuration::{
    DeliverySettings, HookSettings, SekoiaSettings, Settings, TargetSettings,
};
use crate::domain::WebhookEvent;
use crate::metrics::Metrics;
use crate::render::RenderInput;
use crate::retry;
use crate::routing::Decision;
use crate::sekoia::{Alert, AlertClient, Credentials, Enrichment};
use crate::state::Runtime;
use crate::store::{
    now_ms, sleep_until_ms, slot_interval_ms, target_pacing_key as pacing_key, Candidate, Claimed,
    FoldInto, Outcome, Store, DIGEST_EVENT_TYPE,
};
use policy::Verdict;
pub(crate) use sender::describe as describe_transport_error;
pub use sender::Sender;
pub use threads::DeliveryThreads;

/// Longest idle wait between polls: bounds how long a row re-queued by `dead-letters retry`
/// from another process waits before this server sees it.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// How often a paced target's waiting messages are re-planned (ranked, collapsed, digested):
/// well under one send slot of the fastest paced kinds (Teams 4/s), so an urgent alert that
/// just arrived is ranked before the next claim.
const PLAN_EVERY: Duration = Duration::from_millis(200);

/// Most candidates one storm plan reads: a storm of this many waiting messages is planned in
/// one go, a larger one over successive plans.
const PLAN_LIMIT: usize = 2_000;

/// Longest wait between two tries at recording an outcome the store refused (see `record`):
/// bounds how long after space returns a held delivery is finished.
const RECORD_RETRY_MAX: Duration = Duration::from_secs(2);

/// The alerts one claim needs, fetched together by whichever of its tasks asks first: by hook
/// name, then by alert uuid (see [`Deliverer::fetch_together`]).
type Batch = Shared<BoxFuture<'static, Arc<HashMap<String, HashMap<String, Arc<Alert>>>>>>;

/// Per-target pacing and bookkeeping that outlives a config reload.
struct TargetState {
    limiter: Option<DefaultDirectRateLimiter>,
    /// Most deliveries of this target claimed at once.
    cap: usize,
    inflight: AtomicUsize,
    /// Set by a 429/503 with Retry-After: nothing is sent to the target before this instant.
    paused_until: Mutex<Option<Instant>>,
    /// A storm plan of this target is running: its rows are not claimed meanwhile.
    planning: AtomicBool,
    /// When the last storm plan of this target ended.
    planned_at: Mutex<Option<Instant>>,
}

impl TargetState {
    fn new(t: &TargetSettings, concurrency: usize) -> Self {
        let rate = t.rate_limit();
        let limiter = NonZeroU32::new(rate).map(|r| RateLimiter::direct(Quota::per_second(r)));
        // A rate-limited target needs at most one bucket's worth of sends in flight; more would
        // only sit waiting for tokens while holding slots.
        let cap = if rate == 0 {
            concurrency
        } else {
            (rate as usize).clamp(1, concurrency)
        };
        Self {
            limiter,
            cap,
            inflight: AtomicUsize::new(0),
            paused_until: Mutex::new(None),
            planning: AtomicBool::new(false),
            planned_at: Mutex::new(None),
        }
    }

    /// Whether a storm plan is due: none ran in the last [`PLAN_EVERY`].
    fn plan_due(&self) -> bool {
        let at = self.planned_at.lock().unwrap_or_else(|e| e.into_inner());
        at.is_none_or(|t| t.elapsed() >= PLAN_EVERY)
    }

    fn planned(&self) {
        *self.planned_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.planning.store(false, Ordering::Release);
    }

    fn paused(&self) -> bool {
        let mut guard = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        match *guard {
            Some(until) if until > Instant::now() => true,
            Some(_) => {
                *guard = None;
                false
            }
            None => false,
        }
    }

    fn pause_for(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut guard = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none_or(|u| u < until) {
            *guard = Some(until);
        }
    }
}

/// Everything a delivery task needs, shared.
pub struct Deliverer {
    store: Store,
    alerts: Arc<AlertClient>,
    sender: Sender,
    runtime: Arc<dyn Fn() -> Arc<Runtime> + Send + Sync>,
    targets: Mutex<HashMap<String, Arc<TargetState>>>,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl Deliverer {
    pub fn new(
        store: Store,
        alerts: Arc<AlertClient>,
        sender: Sender,
        runtime: Arc<dyn Fn() -> Arc<Runtime> + Send + Sync>,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            alerts,
            sender,
            runtime,
            targets: Mutex::new(HashMap::new()),
            wake,
            metrics,
        })
    }

    fn target_state(&self, name: &str, t: &TargetSettings, concurrency: usize) -> Arc<TargetState> {
        let mut map = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_string())
            .or_insert_with(|| Arc::new(TargetState::new(t, concurrency)))
            .clone()
    }

    /// Forget pacing state so that changed rate limits apply (after a reload).
    pub fn reset_targets(&self) {
        self.targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Claim and process due deliveries until `shutdown` is cancelled; then wait up to `grace`
    /// for in-flight sends. Rows still in flight after that stay claimed in the store and go
    /// back to pending at the next start, so nothing is lost.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, grace: Duration) {
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let (claimed, held_back) = self.dispatch_once(&mut tasks, &shutdown).await;
            // Reap finished tasks so the set does not grow without bound.
            while tasks.try_join_next().is_some() {}
            if claimed > 0 {
                continue;
            }
            let targets = (self.runtime)().settings.targets.keys().cloned().collect();
            let wait = if held_back {
                // Sends are running and their ends wake this loop: no need to ask the store.
                IDLE_POLL
            } else {
                self.next_wait(targets).await
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => {}
            }
        }
        tracing::info!(in_flight = tasks.len(), "draining deliveries");
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                abandoned = tasks.len(),
                "shutdown grace elapsed; unfinished deliveries resume at next start"
            );
            tasks.abort_all();
            // Abandoned sends go back to the queue now, not after their lease (PostgreSQL).
            match self.store.release_claims().await {
                Ok(n) if n > 0 => {
                    tracing::info!(released = n, "claims handed back to the other replicas")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot hand back claims: they return after lease_secs")
                }
            }
        }
    }

    /// How long the dispatcher may sleep (a wake cuts it short): until the next row is due,
    /// at most [`IDLE_POLL`].
    async fn next_wait(&self, targets: Vec<String>) -> Duration {
        match self.store.next_due(targets).await {
            Ok(Some(at)) => {
                let ms = (at - now_ms()).clamp(0, IDLE_POLL.as_millis() as i64);
                // Due but held back (target paused or at its cap): re-check soon.
                Duration::from_millis(ms.max(50) as u64)
            }
            Ok(None) => IDLE_POLL,
            Err(e) => {
                tracing::error!(error = %e, "store unavailable to the dispatcher");
                IDLE_POLL
            }
        }
    }

    /// One pass over the targets: how many rows were claimed, and whether a target was held
    /// back while sends of its own are running (see [`policy::claim_size`]).
    async fn dispatch_once(
        self: &Arc<Self>,
        tasks: &mut tokio::task::JoinSet<()>,
        shutdown: &CancellationToken,
    ) -> (usize, bool) {
        let rt = (self.runtime)();
        let concurrency = rt.settings.delivery.concurrency;
        let mut claimed = 0;
        let mut held_back = false;
        for (name, target) in &rt.settings.targets {
            let state = self.target_state(name, target, concurrency);
            if state.paused() {
                continue;
            }
            if target.storm_control() {
                if state.planning.load(Ordering::Acquire) {
                    // Its end wakes the dispatcher.
                    held_back = true;
                    continue;
                }
                if state.plan_due() {
                    state.planning.store(true, Ordering::Release);
                    let (this, state, rt, name) =
                        (self.clone(), state.clone(), rt.clone(), name.clone());
                    tokio::spawn(async move {
                        this.plan(&rt, &name).await;
                        state.planned();
                        this.wake.notify_one();
                    });
                    held_back = true;
                    continue;
                }
            }
            // Only this target's own slots: a hung target fills its share and stops there.
            let inflight = state.inflight.load(Ordering::Acquire);
            let n = policy::claim_size(state.cap, inflight);
            if n == 0 {
                // A send of this target is running: its end wakes the dispatcher.
                held_back |= inflight > 0;
                continue;
            }
            let claimed_rows = if target.storm_control() {
                self.store.claim_ranked(name, n).await
            } else {
                self.store.claim(name, n).await
            };
            let rows = match claimed_rows {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = %e, target = %name, "cannot claim deliveries");
                    continue;
                }
            };
            // Each row's stored event, parsed once for the batch below and for `prepare`.
            // Shared, not copied, with the claim's list call.
            let events: Vec<Option<Arc<WebhookEvent>>> = rows
                .iter()
                .map(|r| {
                    let built_here = r.body.is_none() && r.event_type != DIGEST_EVENT_TYPE;
                    built_here
                        .then(|| WebhookEvent::from_stored(&r.event_json).ok().map(Arc::new))
                        .flatten()
                })
                .collect();
            // Storm-controlled targets had their alerts fetched (in batches) by the plan.
            let batch = if target.storm_control() {
                None
            } else {
                self.fetch_together(&rt, &rows, &events)
            };
            for (row, event) in rows.into_iter().zip(events) {
                state.inflight.fetch_add(1, Ordering::AcqRel);
                claimed += 1;
                let this = self.clone();
                let state = state.clone();
                let shutdown = shutdown.clone();
                let batch = batch.clone();
                let span = tracing::info_span!("delivery", event_id = %row.event_id, hook = %row.hook, alert = row.short_id.as_deref().unwrap_or("-"), target = %row.target);
                tasks.spawn(
                    async move {
                        let (id, target, received_at) =
                            (row.id, row.target.clone(), row.received_at_ms);
                        // Boxed: a send's whole state machine (enrich, render, HTTP) is large,
                        // and a future spawned unboxed is copied into its task.
                        let outcome =
                            Box::pin(this.process(row, event, &state, &shutdown, batch)).await;
                        this.metrics
                            .delivery_outcome(&target, &outcome, received_at);
                        this.record(id, outcome, &shutdown).await;
                        state.inflight.fetch_sub(1, Ordering::AcqRel);
                        this.wake.notify_one();
                    }
                    .instrument(span),
                );
            }
        }
        (claimed, held_back)
    }

    /// Record a delivery's outcome, retrying while the store cannot write (disk full, locked).
    ///
    /// Rule: the row stays claimed until its outcome is recorded, and only the *recording* is
    /// retried, with a doubling wait up to [`RECORD_RETRY_MAX`]. Reason: a row released after a
    /// failed write is due again at once, so a full disk turned every due delivery into a hot
    /// loop of re-sends (thousands of duplicate messages a second to the chat tool). Holding
    /// the row also holds its delivery slot, so a store that cannot write stops new sends
    /// instead of multiplying them. If the process stops first, the claim dies with it and the
    /// row is sent again at the next start: at least once, never lost.
    async fn record(&self, id: i64, outcome: Outcome, shutdown: &CancellationToken) {
        let mut wait = Duration::from_millis(100);
        loop {
            match self.store.complete(id, outcome.clone()).await {
                Ok(()) => return,
                Err(e) => tracing::error!(
                    error = %e,
                    retry_in_ms = wait.as_millis() as u64,
                    "cannot record the delivery outcome; retrying the record, not the send"
                ),
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => {
                    tracing::warn!("stopping with a delivery outcome not recorded: it is sent again at the next start");
                    return;
                }
            }
            wait = (wait * 2).min(RECORD_RETRY_MAX);
        }
    }

    /// Build (unless the row carries its body), pace and send one delivery; `event` is the
    /// row's stored event when the dispatcher could parse it.
    async fn process(
        &self,
        row: Claimed,
        event: Option<Arc<WebhookEvent>>,
        state: &TargetState,
        shutdown: &CancellationToken,
        batch: Option<Batch>,
    ) -> Outcome {
        let rt = (self.runtime)();
        let settings = &rt.settings;
        let Some(target) = settings.targets.get(&row.target) else {
            return dead(
                None,
                format!("target {:?} is no longer configured", row.target),
                None,
                row.body,
            );
        };
        // No age check before sending: a delivery due within its horizon always gets that
        // attempt, even when claimed late (a restart after an outage); `decide` ends retries.
        let body = match row.body.clone() {
            Some(b) => b,
            None => {
                let prepared = tokio::select! {
                    p = self.prepare(&rt, &row, event, batch) => p,
                    _ = shutdown.cancelled() => return Outcome::Release,
                };
                match prepared {
                    Prepared::Body(b) => b,
                    Prepared::Skip(reason) => {
                        tracing::info!(%reason, "not routed to this target");
                        return Outcome::Skipped { reason };
                    }
                    Prepared::Fail(error) => {
                        tracing::error!(%error, "cannot build the message");
                        return dead(None, error, None, None);
                    }
                    Prepared::Later(error) => {
                        tracing::warn!(%error, "cannot build the message yet: retrying in 5 s");
                        return Outcome::Retry {
                            next_at_ms: now_ms() + 5_000,
                            status: None,
                            error,
                            response: None,
                            body: None,
                            counts_attempt: false,
                        };
                    }
                }
            }
        };

        let go = tokio::select! {
            go = self.pace(&row.target, target.rate_limit(), state) => go,
            _ = shutdown.cancelled() => return Outcome::Release,
        };
        if !go {
            // Paused by another replica's Retry-After: back to the queue, not an attempt.
            return Outcome::Release;
        }

        let attempt = row.attempts + 1;
        self.metrics.attempt(&row.target);
        let answer = if target.kind.spec().chat_api() {
            // Bot-token kinds: one living message per alert (post, or edit and reply).
            let creds = settings
                .hook_by_name(&row.hook)
                .map(|h| Credentials::of_hook(h, &settings.sekoia));
            let a = crate::chatapp::deliver(
                self.sender.http(),
                &self.store,
                &row.target,
                target,
                &row.event_json,
                &body,
                crate::chatapp::Buttons {
                    hook: creds.as_ref().map(|c| (row.hook.as_str(), c)),
                    public_url: &settings.server.public_url,
                },
            )
            .await;
            Answer {
                status: a.status,
                verdict: a.verdict,
                retry_after: a.retry_after,
                response: a.response,
                error: a.error,
            }
        } else {
            self.send(target, &body).await
        };
        let (outcome, pause) = decide(
            answer,
            Attempted {
                body,
                attempt,
                age_from_ms: row.age_from_ms,
                host: self.sender.safe_host(target),
            },
            &settings.delivery,
        );
        if row.event_type == DIGEST_EVENT_TYPE && matches!(outcome, Outcome::Delivered { .. }) {
            let n = self.store.members(row.id).await.map_or(0, |m| m.len());
            self.metrics.digest_sent(&row.target, n);
        }
        if let Some(pause) = pause {
            // The target asked everyone to wait, not only this delivery: every replica, when
            // the store is shared.
            state.pause_for(pause);
            let until = now_ms() + pause.as_millis() as i64;
            if let Err(e) = self.store.pause(&pacing_key(&row.target), until).await {
                tracing::warn!(error = %e, "cannot share the target's pause with the other replicas");
            }
        }
        outcome
    }

    /// Post once and read the answer into what the retry decision needs.
    async fn send(&self, target: &TargetSettings, body: &str) -> Answer {
        let r = match self.sender.send(target, body).await {
            Ok(r) => r,
            Err(error) => {
                return Answer {
                    status: None,
                    verdict: Verdict::Retry,
                    retry_after: None,
                    response: None,
                    error,
                }
            }
        };
        let verdict = policy::classify(target.kind, r.status, &r.body);
        let error = match (verdict, target.kind.spec().embedded_status(&r.body)) {
            (Verdict::Delivered, _) => String::new(),
            (Verdict::Redirected, _) => policy::redirect_error(
                r.status,
                target.post_url().unwrap_or(""),
                r.location.as_deref(),
            ),
            // A 2xx that is a failure: say which error the body carried.
            (_, Some(code)) if (200..300).contains(&r.status) => format!(
                "HTTP {} with the Teams connector error text \"HTTP error {code}\"",
                r.status
            ),
            _ => format!("HTTP {}", r.status),
        };
        let header_wait = if matches!(r.status, 429 | 503) {
            r.retry_after
                .as_deref()
                .and_then(|v| retry::parse_retry_after(v, SystemTime::now()))
        } else {
            None
        };
        // The longer of the header's and the body's wait (Discord gives both): never retry
        // before the target said.
        let retry_after =
            header_wait.max(target.kind.spec().retry_after_from_body(r.status, &r.body));
        Answer {
            status: Some(r.status),
            verdict,
            retry_after,
            response: Some(policy::excerpt(&r.body, 2048)),
            error,
        }
    }

    /// Wait for the target's next send slot under `rate_limit_per_sec`; false when the slot
    /// is so far off (a pause) that the delivery should go back to the queue instead.
    ///
    /// With a shared store (PostgreSQL) the slot is reserved in the store, so the limit and
    /// any `Retry-After` pause hold across all replicas; otherwise, or while the store cannot
    /// answer, this process's token bucket paces alone.
    async fn pace(&self, target: &str, rate: u32, state: &TargetState) -> bool {
        if rate == 0 {
            // Unlimited: no slot to share, and a shared pause was already checked when the
            // row was claimed (a round trip per send on one hot row would serialise replicas).
            return true;
        }
        let (key, interval) = (pacing_key(target), slot_interval_ms(rate));
        loop {
            let at = match self.store.reserve_slot(&key, interval).await {
                Ok(Some(at)) => at,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "shared pacing unavailable: pacing locally");
                    break;
                }
            };
            let wait = at - now_ms();
            if policy::hand_back_slot(wait, interval) {
                state.pause_for(Duration::from_millis(wait.max(0) as u64));
                return false;
            }
            if wait <= 0 {
                // Due now: the reservation itself saw any pause.
                return true;
            }
            sleep_until_ms(at).await;
            // A replica may have been told to pause while this task waited for its slot
            // (reserved before the pause): then take a slot after the pause instead.
            match self.store.paused_until(&key).await {
                Ok(until) if until > now_ms() => continue,
                _ => return true,
            }
        }
        if let Some(limiter) = &state.limiter {
            limiter.until_ready().await;
        }
        true
    }

    /// Rank, collapse and digest the waiting messages of one paced target (see [`storm`]):
    /// learn the urgency of the new ones (one batch call per hook for the alerts not yet
    /// known, each kept with its event), then apply the plan in one store transaction.
    async fn plan(&self, rt: &Runtime, name: &str) {
        let settings = &rt.settings;
        let Some(target) = settings.targets.get(name) else {
            return;
        };
        let candidates = match self.store.candidates(name, PLAN_LIMIT).await {
            Ok(c) if !c.is_empty() => c,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, target = %name, "cannot read the waiting messages: sending them in arrival order");
                return;
            }
        };
        let known = self.learn_urgencies(rt, &candidates).await;
        let limits = storm::DigestLimits {
            after: target.digest_after(),
            max_items: target.digest_items(),
        };
        let plan = storm::plan(&candidates, &known, limits, now_ms());
        if plan.ranks.is_empty() && plan.folds.is_empty() && plan.alerts.is_empty() {
            return;
        }
        // Folds into a single message (not a digest) are collapsed updates.
        let singles: std::collections::HashSet<i64> = candidates
            .iter()
            .filter(|c| c.event_type != DIGEST_EVENT_TYPE)
            .map(|c| c.id)
            .collect();
        let collapses = plan
            .folds
            .iter()
            .filter(|(_, into)| matches!(into, FoldInto::Delivery(id) if singles.contains(id)))
            .count();
        match self.store.apply_plan(name, plan).await {
            Ok(applied) => {
                if collapses > 0 {
                    self.metrics.collapsed(name, collapses as u64);
                }
                if applied.folded > 0 {
                    tracing::info!(target = %name, folded = applied.folded, new_digests = applied.digests, waiting = candidates.len(), "storm control: messages collapsed or digested");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, target = %name, "cannot apply the storm plan: sending in arrival order")
            }
        }
    }

    /// The urgency (and alert JSON, to keep) of candidates not ranked yet: from the alert kept
    /// with the event, else from the cache after one batch call per hook.
    async fn learn_urgencies(
        &self,
        rt: &Runtime,
        candidates: &[Candidate],
    ) -> HashMap<i64, storm::Known> {
        let settings = &rt.settings;
        let mut known = HashMap::new();
        let mut by_hook: HashMap<&str, Vec<(i64, WebhookEvent)>> = HashMap::new();
        for c in candidates
            .iter()
            .filter(|c| c.urgency.is_none() && c.event_type == "alert")
        {
            if let Some(json) = c
                .alert_json
                .as_deref()
                .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
            {
                let urgency = crate::routing::policy::alert_urgency(&json).map(|u| u as i64);
                known.insert(
                    c.id,
                    storm::Known {
                        urgency,
                        alert_json: None,
                    },
                );
                continue;
            }
            let Ok(event) = WebhookEvent::from_stored(&c.event_json) else {
                continue;
            };
            if !event.has_alert_to_fetch() {
                continue;
            }
            by_hook
                .entry(c.hook.as_str())
                .or_default()
                .push((c.id, event));
        }
        for (hook, rows) in by_hook {
            let Some(h) = settings.hook_by_name(hook) else {
                continue;
            };
            let creds = Credentials::of_hook(h, &settings.sekoia);
            let events: Vec<&WebhookEvent> = rows.iter().map(|r| &r.1).collect();
            let fetched = self.alerts.prefetch(&creds, &events).await;
            for (id, event) in &rows {
                let found = match event.uuid.as_ref().and_then(|u| fetched.get(u)) {
                    Some(a) => Some(a.clone()),
                    None => match self.alerts.cached(&creds, event).await {
                        Some(Enrichment::Enriched(a)) => Some(a),
                        _ => None,
                    },
                };
                if let Some(a) = found {
                    let urgency = crate::routing::policy::alert_urgency(a.json()).map(|u| u as i64);
                    known.insert(
                        *id,
                        storm::Known {
                            urgency,
                            alert_json: serde_json::to_string(a.json()).ok(),
                        },
                    );
                }
            }
        }
        known
    }

    /// The alerts that the claimed `rows` need, as one list call per hook (see
    /// [`policy::fetch_together`]), started when a row's task first asks for its alert. An
    /// alert the call did not bring is fetched on its own, with the usual retries.
    fn fetch_together(
        self: &Arc<Self>,
        rt: &Arc<Runtime>,
        rows: &[Claimed],
        events: &[Option<Arc<WebhookEvent>>],
    ) -> Option<Batch> {
        let mut by_hook: HashMap<String, Vec<Arc<WebhookEvent>>> = HashMap::new();
        for (row, event) in rows.iter().zip(events) {
            let Some(event) = event.as_ref().filter(|_| row.alert_json.is_none()) else {
                continue;
            };
            if event.has_alert_to_fetch() && event.uuid.is_some() {
                by_hook
                    .entry(row.hook.clone())
                    .or_default()
                    .push(event.clone());
            }
        }
        by_hook.retain(|_, events| policy::fetch_together(events.len()));
        if by_hook.is_empty() {
            return None;
        }
        let (this, rt) = (self.clone(), rt.clone());
        let fetch = async move {
            let mut by_uuid = HashMap::new();
            for (hook, events) in by_hook {
                let Some(h) = rt.settings.hook_by_name(&hook) else {
                    continue;
                };
                let creds = Credentials::of_hook(h, &rt.settings.sekoia);
                let events: Vec<&WebhookEvent> = events.iter().map(|e| &**e).collect();
                let fetched = this.alerts.prefetch(&creds, &events).await;
                by_uuid.insert(hook, fetched);
            }
            Arc::new(by_uuid)
        };
        Some(fetch.boxed().shared())
    }

    /// Enrich, route and render a delivery's message.
    async fn prepare(
        &self,
        rt: &Runtime,
        row: &Claimed,
        event: Option<Arc<WebhookEvent>>,
        batch: Option<Batch>,
    ) -> Prepared {
        if row.event_type == DIGEST_EVENT_TYPE {
            return self.prepare_digest(rt, row).await;
        }
        let settings = &rt.settings;
        let Some(hook) = settings.hook_by_name(&row.hook) else {
            return Prepared::Fail(format!("hook {:?} is no longer configured", row.hook));
        };
        let stored = || WebhookEvent::from_stored(&row.event_json).map(Arc::new);
        let event = match event.map_or_else(stored, Ok) {
            Ok(e) => e,
            Err(e) => return Prepared::Fail(format!("stored event is invalid: {e}")),
        };
        let creds = Credentials::of_hook(hook, &settings.sekoia);
        // The alert fetched once for this event (by the storm planner), else by its claim's
        // list call, else fetched now.
        let found = self
            .alert_for(&creds, &event, row.alert_json.as_deref(), batch, &hook.name)
            .await;
        let changes = match settings.targets.get(&row.target) {
            Some(t) if t.storm_control() => self.changes_of(row.id, &event.json).await,
            _ => Vec::new(),
        };
        let input = found.input(&event, hook, &settings.sekoia, &row.target, &changes);
        if let Decision::Skipped(reason) = rt.router.decide(&hook.name, &row.target, &input) {
            return Prepared::Skip(reason);
        }
        match rt.renderer.render(&row.target, &input) {
            Ok(r) => Prepared::Body(r.body),
            Err(e) => Prepared::Fail(format!("render failed: {e}")),
        }
    }

    /// The event's alert: the one kept with the event (fetched once by the storm planner),
    /// else the one its claim's batch brought, else fetched now through the cache.
    async fn alert_for(
        &self,
        creds: &Credentials,
        event: &WebhookEvent,
        stored: Option<&str>,
        batch: Option<Batch>,
        hook: &str,
    ) -> AlertFor {
        if let Some(alert) = stored.and_then(|j| serde_json::from_str(j).ok()) {
            return AlertFor::Stored(alert);
        }
        let start = Instant::now();
        let fetched = match batch {
            Some(b) => Some(b.await),
            None => None,
        };
        let of_hook = fetched.as_ref().and_then(|f| f.get(hook));
        AlertFor::Fetched(self.alerts.enrich_from(creds, event, of_hook, start).await)
    }

    /// The changes line of a message that carries older, collapsed events of its alert.
    async fn changes_of(&self, delivery: i64, newest: &serde_json::Value) -> Vec<String> {
        let members = match self.store.members(delivery).await {
            Ok(m) if !m.is_empty() => m,
            _ => return Vec::new(),
        };
        let mut events: Vec<serde_json::Value> = members
            .iter()
            .filter_map(|m| serde_json::from_str(&m.event_json).ok())
            .collect();
        events.push(newest.clone());
        storm::changes(&events)
    }

    /// A digest: each alert folded into it that its hook's routes send to this target, most
    /// urgent first, rendered with the target's digest template.
    async fn prepare_digest(&self, rt: &Runtime, row: &Claimed) -> Prepared {
        let settings = &rt.settings;
        let members = match self.store.members(row.id).await {
            Ok(m) => m,
            // Not a dead letter: the store is away, the digest waits for it.
            Err(e) => return Prepared::Later(format!("cannot read the digest's alerts: {e}")),
        };
        let mut items: Vec<(i64, serde_json::Value)> = Vec::new();
        for m in &members {
            let Some(hook) = settings.hook_by_name(&m.hook) else {
                continue;
            };
            let Ok(event) = WebhookEvent::from_stored(&m.event_json) else {
                continue;
            };
            let creds = Credentials::of_hook(hook, &settings.sekoia);
            let found = self
                .alert_for(&creds, &event, m.alert_json.as_deref(), None, &hook.name)
                .await;
            let changes = self.changes_of(m.id, &event.json).await;
            let input = found.input(&event, hook, &settings.sekoia, &row.target, &changes);
            let alert = input.alert;
            // The routes decide for each alert, as they would have for its own message.
            if let Decision::Skipped(_) = rt.router.decide(&hook.name, &row.target, &input) {
                continue;
            }
            let urgency = alert
                .and_then(crate::routing::policy::alert_urgency)
                .map_or(storm::UNKNOWN_URGENCY, |u| u as i64);
            items.push((
                urgency,
                crate::render::digest_item(&event.json, alert, &changes, input.app_url),
            ));
        }
        if items.is_empty() {
            return Prepared::Skip("no alert of this digest is routed to the target".into());
        }
        // Most urgent first; the sort is stable, so arrival order within one urgency.
        items.sort_by_key(|(u, _)| -u);
        let items: Vec<serde_json::Value> = items.into_iter().map(|(_, v)| v).collect();
        let app_url = settings
            .hook_by_name(&row.hook)
            .map(|h| h.app_url(&settings.sekoia))
            .unwrap_or(&settings.sekoia.app_url);
        let input = crate::render::DigestInput {
            items: &items,
            hook_name: &row.hook,
            target_name: &row.target,
            app_url,
        };
        match rt.renderer.render_digest(&row.target, &input) {
            Ok(r) => Prepared::Body(r.body),
            Err(e) => Prepared::Fail(format!("digest render failed: {e}")),
        }
    }
}

/// Where a message's alert came from.
enum AlertFor {
    Stored(serde_json::Value),
    Fetched(Enrichment),
}

impl AlertFor {
    /// The alert, or why it is missing (none when not applicable).
    fn parts(&self) -> (Option<&serde_json::Value>, Option<&str>) {
        match self {
            AlertFor::Stored(a) => (Some(a), None),
            AlertFor::Fetched(Enrichment::Enriched(a)) => (Some(a.json()), None),
            AlertFor::Fetched(Enrichment::Unavailable(reason)) => (None, Some(reason.as_str())),
            AlertFor::Fetched(Enrichment::NotApplicable) => (None, None),
        }
    }

    /// What a message of `event` from `hook` to `target` is rendered from: its own message
    /// and each item of a digest are built the same way.
    fn input<'a>(
        &'a self,
        event: &'a WebhookEvent,
        hook: &'a HookSettings,
        sekoia: &'a SekoiaSettings,
        target: &'a str,
        changes: &'a [String],
    ) -> RenderInput<'a> {
        let (alert, enrichment_error) = self.parts();
        RenderInput {
            event: &event.json,
            alert,
            enrichment_error,
            hook_name: &hook.name,
            target_name: target,
            app_url: hook.app_url(sekoia),
            changes,
        }
    }
}

enum Prepared {
    Body(String),
    /// Cannot be built now for a reason that passes (the store is away): try again soon,
    /// without counting an attempt.
    Later(String),
    Skip(String),
    Fail(String),
}

/// A target's answer (or the transport failure), classified.
struct Answer {
    status: Option<u16>,
    verdict: Verdict,
    retry_after: Option<Duration>,
    response: Option<String>,
    error: String,
}

/// The delivery an answer is about.
struct Attempted {
    body: String,
    /// This attempt's number, counting only attempts that count (a 429 does not).
    attempt: u32,
    age_from_ms: i64,
    host: Arc<str>,
}

/// Turn an answer into the delivery's outcome (delivered, a dead letter, or the next try) and
/// how long the whole target should pause, if at all.
///
/// Retries follow `retry_schedule` until `max_age_secs` (and the optional `max_attempts`); a
/// `Retry-After` pushes the next try later and pauses the whole target, since the target asked
/// everyone to wait. A 429 pauses the target and is retried without counting as an attempt.
fn decide(a: Answer, d: Attempted, cfg: &DeliverySettings) -> (Outcome, Option<Duration>) {
    let Attempted {
        body,
        attempt,
        age_from_ms,
        host,
    } = d;
    let Answer {
        status,
        verdict,
        retry_after,
        response,
        error,
    } = a;
    let code = status.unwrap_or(0);
    let counts_attempt = match verdict {
        Verdict::Delivered => {
            tracing::info!(%host, status = code, attempt, "delivered");
            return (Outcome::Delivered { status: code }, None);
        }
        Verdict::Permanent | Verdict::Redirected => {
            tracing::warn!(%host, status = code, attempt, %error, response = response.as_deref().unwrap_or(""), "permanent failure: dead letter");
            return (dead(status, error, response, Some(body)), None);
        }
        Verdict::Retry => true,
        Verdict::Throttled => false,
    };
    let now = now_ms();
    let max_age = Duration::from_secs(cfg.max_age_secs);
    let age = Duration::from_millis((now - age_from_ms).max(0) as u64);
    let counted = if counts_attempt { attempt } else { attempt - 1 };
    if policy::exhausted(counted, cfg.max_attempts, age, max_age) {
        tracing::warn!(%host, status = code, attempt, %error, "retries exhausted: dead letter");
        let why = if age >= max_age {
            format!(
                "{error} (not delivered within max_age_secs = {} s, after {counted} attempts)",
                cfg.max_age_secs
            )
        } else {
            format!(
                "{error} (after {counted} attempts, max_attempts = {})",
                cfg.max_attempts
            )
        };
        return (dead(status, why, response, Some(body)), None);
    }
    let ra_cap = Duration::from_secs(cfg.backoff_max_secs);
    // The wait this failure calls for: the schedule's step for the attempt (a 429 repeats the
    // current step), pushed later by the target's Retry-After.
    let step = cfg
        .retry_policy()
        .delay(counted.max(1), rand::random::<f64>());
    let delay = retry::honour_retry_after(step, retry_after, ra_cap);
    let pause = match retry_after {
        Some(ra) => Some(ra.min(ra_cap)),
        None if !counts_attempt => Some(delay),
        None => None,
    };
    // The last try is made at the horizon, not after it (see `next_attempt_at`).
    let horizon = age_from_ms.saturating_add(max_age.as_millis() as i64 - 1);
    let next_at_ms = policy::next_attempt_at(now, delay, horizon);
    tracing::warn!(%host, status = code, attempt, %error, counts_attempt, next_retry_ms = (next_at_ms - now).max(0), "delivery failed, will retry");
    let outcome = Outcome::Retry {
        next_at_ms,
        status,
        error,
        response,
        body: Some(body),
        counts_attempt,
    };
    (outcome, pause)
}

fn dead(
    status: Option<u16>,
    error: String,
    response: Option<String>,
    body: Option<String>,
) -> Outcome {
    Outcome::Dead {
        status,
        error,
        response,
        body,
    }
}

/// Build the shared HTTP sender from settings.
pub fn build_sender(settings: &Settings) -> Result<Sender, reqwest::Error> {
    Sender::new(Duration::from_secs(settings.delivery.timeout_secs))
}
