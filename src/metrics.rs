//! Prometheus metrics served at `GET /metrics`.
//!
//! Built on `prometheus-client`, the Prometheus project's own Rust client: it is maintained
//! under the `prometheus` GitHub organisation, has no global registry (so each `Application`,
//! and each test, has its own), and encodes the OpenMetrics text format Prometheus scrapes.
//!
//! Labels are hook *names* and target *names* only: a hook id is a secret (whoever knows it can post alerts) and a
//! target URL carries credentials, so neither is ever a label value.
//!
//! Queue depth and template fallbacks are read when `/metrics` is scraped, not maintained on
//! every request: one `GROUP BY` per scrape instead of one per webhook.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::store::{now_ms, Outcome, QueueDepth};

/// Label value for posts to a hook id that is not configured: there is no name to show, and
/// the id itself must not become a label. Parentheses keep it apart from real hook names.
pub const UNKNOWN_HOOK: &str = "(unknown)";

/// What `POST /hooks/{id}` did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    Accepted,
    Duplicate,
    Filtered,
    /// Any 4xx: unknown hook, address not allowed, content type, size, not JSON, not v2.
    Rejected4xx,
    /// The store could not persist the event (503).
    StoreError,
}

impl EventOutcome {
    fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Accepted => "accepted",
            EventOutcome::Duplicate => "duplicate",
            EventOutcome::Filtered => "filtered",
            EventOutcome::Rejected4xx => "rejected_4xx",
            EventOutcome::StoreError => "store_error",
        }
    }
}

/// How an enrichment ended (see [`crate::sekoia::Enrichment`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrichmentOutcome {
    Enriched,
    Unavailable,
    NotApplicable,
}

impl EnrichmentOutcome {
    fn as_str(self) -> &'static str {
        match self {
            EnrichmentOutcome::Enriched => "enriched",
            EnrichmentOutcome::Unavailable => "unavailable",
            EnrichmentOutcome::NotApplicable => "not_applicable",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookOutcome {
    hook: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetOutcome {
    target: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriageLabel {
    target: String,
    action: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    target: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

type LatencyFamily = Family<TargetLabel, Histogram, fn() -> Histogram>;

/// Receipt to 2xx: from well under a second to the hours a target may be down.
fn delivery_latency_histogram() -> Histogram {
    // 0.05 s … ~1.8 h
    Histogram::new(exponential_buckets(0.05, 2.0, 18))
}

/// Every metric of the relay, shared in an `Arc` by the HTTP handlers and delivery workers.
pub struct Metrics {
    registry: Registry,
    events: Family<HookOutcome, Counter>,
    deliveries: Family<TargetOutcome, Counter>,
    attempts: Family<TargetLabel, Counter>,
    triage: Family<TriageLabel, Counter>,
    digests: Family<TargetLabel, Counter>,
    digest_alerts: Histogram,
    collapsed: Family<TargetLabel, Counter>,
    api_calls: Family<KindLabel, Counter>,
    queue: Family<StateLabel, Gauge>,
    enrichments: Family<OutcomeLabel, Counter>,
    enrichment_seconds: Histogram,
    delivery_latency: LatencyFamily,
    template_fallbacks: Counter,
    reloads: Family<OutcomeLabel, Counter>,
    /// Fallbacks counted by renderers replaced by a reload (each renderer counts its own).
    retired_fallbacks: AtomicU64,
    /// Serialises scrape-time updates so two scrapes cannot interleave the fallback delta.
    scrape: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sekoia_relay");
        let events = Family::<HookOutcome, Counter>::default();
        registry.register(
            "events_received",
            "Webhook posts by hook name and outcome (accepted, duplicate, filtered, rejected_4xx, store_error)",
            events.clone(),
        );
        let deliveries = Family::<TargetOutcome, Counter>::default();
        registry.register(
            "deliveries",
            "Delivery outcomes by target (delivered, retry, dead, skipped)",
            deliveries.clone(),
        );
        let attempts = Family::<TargetLabel, Counter>::default();
        registry.register(
            "delivery_attempts",
            "Requests sent to each target",
            attempts.clone(),
        );
        let queue = Family::<StateLabel, Gauge>::default();
        registry.register(
            "queue_deliveries",
            "Deliveries in the store by state (pending, inflight, dead), read at scrape time",
            queue.clone(),
        );
        let enrichments = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "enrichments",
            "Alert enrichments per message prepared (enriched, unavailable, not_applicable)",
            enrichments.clone(),
        );
        // 5 ms … ~160 s: cache hits, one API call, up to retries until enrich_deadline_secs.
        let enrichment_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 16));
        registry.register(
            "enrichment_duration_seconds",
            "Time a message waited for its alert details (cache hits included)",
            enrichment_seconds.clone(),
        );
        let delivery_latency: LatencyFamily =
            Family::new_with_constructor(delivery_latency_histogram);
        registry.register(
            "delivery_latency_seconds",
            "From receipt of the event to the target's 2xx, by target",
            delivery_latency.clone(),
        );
        let template_fallbacks = Counter::default();
        registry.register(
            "template_fallbacks",
            "Messages rendered with the built-in template because the configured one failed",
            template_fallbacks.clone(),
        );
        let triage = Family::<TriageLabel, Counter>::default();
        registry.register(
            "triage_actions",
            "Button presses in chat by target, action and result (done, refused, failed, forbidden)",
            triage.clone(),
        );
        let digests = Family::<TargetLabel, Counter>::default();
        registry.register(
            "digests_sent",
            "Storm digests delivered, by target",
            digests.clone(),
        );
        let digest_alerts = Histogram::new([1.0, 2.0, 5.0, 10.0, 20.0, 40.0]);
        registry.register(
            "digest_alerts",
            "Alerts listed per delivered storm digest",
            digest_alerts.clone(),
        );
        let collapsed = Family::<TargetLabel, Counter>::default();
        registry.register(
            "collapsed_updates",
            "Events not sent on their own because a newer event of the same alert carried them, by target",
            collapsed.clone(),
        );
        let api_calls = Family::<KindLabel, Counter>::default();
        registry.register(
            "alert_api_requests",
            "Requests to the SEKOIA.IO Alert API: single (one alert) or batch (a list of alerts)",
            api_calls.clone(),
        );
        for kind in ["single", "batch"] {
            let _ = api_calls.get_or_create(&KindLabel { kind });
        }
        let reloads = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP) by outcome (success, failure)",
            reloads.clone(),
        );
        // Every outcome is visible from the first scrape, so rate() and alerts on, say,
        // store_error work before the first one happens.
        for state in ["pending", "inflight", "dead"] {
            let _ = queue.get_or_create(&StateLabel { state });
        }
        for outcome in [
            EnrichmentOutcome::Enriched,
            EnrichmentOutcome::Unavailable,
            EnrichmentOutcome::NotApplicable,
        ] {
            let _ = enrichments.get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            });
        }
        for outcome in ["success", "failure"] {
            let _ = reloads.get_or_create(&OutcomeLabel { outcome });
        }
        Metrics {
            registry,
            events,
            deliveries,
            attempts,
            triage,
            digests,
            digest_alerts,
            collapsed,
            api_calls,
            queue,
            enrichments,
            enrichment_seconds,
            delivery_latency,
            template_fallbacks,
            reloads,
            retired_fallbacks: AtomicU64::new(0),
            scrape: Mutex::new(()),
        }
    }

    pub fn event_received(&self, hook_name: &str, outcome: EventOutcome) {
        self.events
            .get_or_create(&HookOutcome {
                hook: hook_name.to_string(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// A storm digest listing `alerts` alerts was delivered to `target`.
    pub fn digest_sent(&self, target: &str, alerts: usize) {
        self.digests
            .get_or_create(&TargetLabel {
                target: target.to_string(),
            })
            .inc();
        self.digest_alerts.observe(alerts as f64);
    }

    /// `n` events of `target` were collapsed into a newer event of their alert.
    pub fn collapsed(&self, target: &str, n: u64) {
        self.collapsed
            .get_or_create(&TargetLabel {
                target: target.to_string(),
            })
            .inc_by(n);
    }

    /// One request to the Alert API (`single` or `batch`).
    pub fn alert_api_call(&self, kind: &'static str) {
        self.api_calls.get_or_create(&KindLabel { kind }).inc();
    }

    /// Count one button press: `result` is done, refused (by SEKOIA.IO), failed or forbidden.
    pub fn triage_action(&self, target: &str, action: &str, result: &'static str) {
        self.triage
            .get_or_create(&TriageLabel {
                target: target.to_string(),
                action: action.to_string(),
                result,
            })
            .inc();
    }

    pub fn attempt(&self, target: &str) {
        self.attempts
            .get_or_create(&TargetLabel {
                target: target.to_string(),
            })
            .inc();
    }

    /// Count a delivery's outcome; a 2xx also records the time since the event was received.
    pub fn delivery_outcome(&self, target: &str, outcome: &Outcome, received_at_ms: i64) {
        let label = match outcome {
            Outcome::Delivered { .. } => {
                let secs = (now_ms() - received_at_ms).max(0) as f64 / 1000.0;
                self.delivery_latency
                    .get_or_create(&TargetLabel {
                        target: target.to_string(),
                    })
                    .observe(secs);
                "delivered"
            }
            Outcome::Retry { .. } => "retry",
            Outcome::Dead { .. } => "dead",
            Outcome::Skipped { .. } => "skipped",
            // Not attempted (shutdown): not an outcome, the row goes back to pending.
            Outcome::Release => return,
        };
        self.deliveries
            .get_or_create(&TargetOutcome {
                target: target.to_string(),
                outcome: label,
            })
            .inc();
    }

    pub fn enrichment(&self, outcome: EnrichmentOutcome, took: Duration) {
        self.enrichments
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            })
            .inc();
        if outcome != EnrichmentOutcome::NotApplicable {
            self.enrichment_seconds.observe(took.as_secs_f64());
        }
    }

    pub fn reload(&self, ok: bool) {
        self.reloads
            .get_or_create(&OutcomeLabel {
                outcome: if ok { "success" } else { "failure" },
            })
            .inc();
    }

    /// A renderer is being replaced (reload): keep the fallbacks it counted.
    pub fn retire_renderer(&self, fallbacks: u64) {
        self.retired_fallbacks
            .fetch_add(fallbacks, Ordering::Relaxed);
    }

    /// Refresh the scrape-time values and encode everything in the OpenMetrics text format.
    /// `depth` is `None` when the store could not answer: the gauges keep their last values.
    pub fn encode(&self, depth: Option<QueueDepth>, current_fallbacks: u64) -> String {
        let _guard = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = depth {
            for (state, n) in [
                ("pending", d.pending),
                ("inflight", d.inflight),
                ("dead", d.dead),
            ] {
                self.queue
                    .get_or_create(&StateLabel { state })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        let total = self.retired_fallbacks.load(Ordering::Relaxed) + current_fallbacks;
        let seen = self.template_fallbacks.get();
        if total > seen {
            self.template_fallbacks.inc_by(total - seen);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_labels_and_scrape_time_values() {
        let m = Metrics::new();
        m.event_received("soc", EventOutcome::Accepted);
        m.event_received(UNKNOWN_HOOK, EventOutcome::Rejected4xx);
        m.attempt("teams");
        m.delivery_outcome(
            "teams",
            &Outcome::Delivered { status: 200 },
            now_ms() - 1500,
        );
        m.delivery_outcome("teams", &Outcome::Release, 0);
        m.enrichment(EnrichmentOutcome::Enriched, Duration::from_millis(20));
        m.retire_renderer(2);
        let text = m.encode(
            Some(QueueDepth {
                pending: 3,
                inflight: 1,
                dead: 2,
            }),
            1,
        );
        for line in [
            r#"sekoia_relay_events_received_total{hook="soc",outcome="accepted"} 1"#,
            r#"sekoia_relay_events_received_total{hook="(unknown)",outcome="rejected_4xx"} 1"#,
            r#"sekoia_relay_delivery_attempts_total{target="teams"} 1"#,
            r#"sekoia_relay_deliveries_total{target="teams",outcome="delivered"} 1"#,
            r#"sekoia_relay_queue_deliveries{state="pending"} 3"#,
            r#"sekoia_relay_queue_deliveries{state="dead"} 2"#,
            r#"sekoia_relay_enrichments_total{outcome="enriched"} 1"#,
            r#"sekoia_relay_enrichments_total{outcome="unavailable"} 0"#,
            r#"sekoia_relay_template_fallbacks_total 3"#,
            r#"sekoia_relay_delivery_latency_seconds_bucket{le="3.2",target="teams"} 1"#,
            r#"sekoia_relay_delivery_latency_seconds_bucket{le="0.8",target="teams"} 0"#,
            r#"sekoia_relay_config_reloads_total{outcome="failure"} 0"#,
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // Release is not an outcome.
        assert_eq!(text.matches("deliveries_total{").count(), 1, "{text}");
        // A second scrape does not count the same fallbacks twice.
        let again = m.encode(None, 1);
        assert!(again.contains("sekoia_relay_template_fallbacks_total 3"));
        assert!(again.contains(r#"sekoia_relay_queue_deliveries{state="pending"} 3"#));
    }
}
