//! The SEKOIA.IO Alert API client: fetch the full alert behind a webhook event, once.
//!
//! `GET {api_url}/v1/sic/alerts/{uuid}?stix=false&comments=false&countermeasures=false&history=false`
//! with `Authorization: Bearer {api_key}`.
//!
//! - **One call per alert.** Results (including failures) are cached for `cache_ttl_secs`,
//!   keyed by (API URL, a SHA-256 fingerprint of the key, alert uuid, the event's
//!   `created_at`): every target and hook of one event shares one call, while an `updated`
//!   event (new `created_at`) fetches fresh data. Concurrent callers for the same key wait for
//!   the single request in flight. With `cache_ttl_secs = 0` nothing is kept, but concurrent
//!   callers still share the request in flight.
//! - **Global rate limit** of `max_requests_per_sec` (0 = none) over all keys, spaced evenly;
//!   waiting for it does not count toward the deadline.
//! - **Retries** of 408/429/5xx, timeouts and connection errors with backoff and full jitter
//!   ([`policy`]), honouring `Retry-After`, until `enrich_deadline_secs` after the first failed
//!   call. 401/403/404 and other 4xx give up at once.
//! - **Never fails.** Every failure becomes [`Enrichment::Unavailable`] with a reason fit for
//!   the chat message, so the alert still goes out (README, "Delivery guarantees"). The key never appears in logs,
//!   reasons or errors, and logs show the API host only.

mod alert;
mod policy;
#[cfg(test)]
mod tests;
pub mod verify;
pub mod workflow;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use moka::future::Cache;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::configuration::SekoiaSettings;
use crate::domain::event::WebhookEvent;
use crate::metrics::{EnrichmentOutcome, Metrics};
use crate::secrets::redact_url;
use crate::url_memo::UrlMemo;

use crate::retry::{parse_retry_after, RetryPolicy};
pub use alert::Alert;
use alert::{AlertMemory, ALERT_MEMORY, CACHE_MEMORY, MAX_ALERT_BYTES};
use policy::{classify_status, default_retry_policy, error_excerpt, next_delay, StatusClass};

const USER_AGENT: &str = concat!("sekoia-relay/", env!("CARGO_PKG_VERSION"));
const QUERY: &str = "stix=false&comments=false&countermeasures=false&history=false";
/// Largest part of an error body read, for the log excerpt.
const MAX_ERROR_BYTES: usize = 4 * 1024;
/// Weight of a cached outcome that holds no alert, so failures stay bounded in number too.
const CACHED_FAILURE_WEIGHT: u32 = 256;

/// The API base and key for one hook (per-hook overrides already applied by the caller).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub api_url: String,
    pub api_key: SecretString,
}

impl Credentials {
    /// The hook's `api_url` and `api_key`, else those of `[sekoia]`.
    pub fn of_hook(hook: &crate::configuration::HookSettings, sekoia: &SekoiaSettings) -> Self {
        Credentials {
            api_url: hook.api_url(sekoia).to_string(),
            api_key: SecretString::from(hook.api_key(sekoia).expose_secret().to_string()),
        }
    }
}

/// The outcome of enriching one event.
#[derive(Debug, Clone)]
pub enum Enrichment {
    /// The alert object as returned by the Alert API.
    Enriched(Arc<Alert>),
    /// Why details are unavailable, for the message ("SEKOIA.IO API answered 404 (alert not
    /// found)", "no API key configured", "API unavailable for 120 s (last: HTTP 503)").
    /// Never contains the key or the full URL.
    Unavailable(String),
    /// Not an alert event, or a `deleted` one: not enriched by design.
    NotApplicable,
}

#[derive(Debug, thiserror::Error)]
pub enum SekoiaError {
    #[error("cannot build the HTTP client for the SEKOIA.IO API: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// One cached call: see the module documentation for why each part is in the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    api_url: String,
    key_fingerprint: [u8; 32],
    uuid: String,
    created_at: Option<String>,
}

/// The Alert API client, shared in an `Arc` by all delivery workers.
pub struct AlertClient {
    http: reqwest::Client,
    cache: Cache<CacheKey, Enrichment>,
    /// What every alert in memory is charged to (see [`alert`]).
    memory: AlertMemory,
    limiter: Option<DefaultDirectRateLimiter>,
    /// The store and slot spacing that share `max_requests_per_sec` between replicas.
    shared_pacing: Option<(crate::store::Store, i64)>,
    deadline: Duration,
    retry: RetryPolicy,
    metrics: Option<Arc<Metrics>>,
    /// API base URLs, parsed once (see [`crate::url_memo`]).
    bases: UrlMemo,
    /// API bases whose list endpoint refused a call, and until when it is not asked again.
    list_refused: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
}

impl std::fmt::Debug for AlertClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertClient")
            .field("deadline", &self.deadline)
            .field("rate_limited", &self.limiter.is_some())
            .finish_non_exhaustive()
    }
}

/// Log fields of one enrichment.
struct Ctx<'a> {
    alert: &'a str,
    uuid: &'a str,
    api: Arc<str>,
}

/// One attempt that did not settle the outcome.
struct Failure {
    /// For the message and logs: "HTTP 503", "timeout", "connection error".
    last: String,
    retry_after: Option<Duration>,
}

enum Attempt {
    Done(Enrichment),
    Retry(Failure),
}

impl AlertClient {
    pub fn new(settings: &SekoiaSettings) -> Result<AlertClient, SekoiaError> {
        Self::with_retry(settings, default_retry_policy())
    }

    /// [`AlertClient::new`] with another retry policy (tests use milliseconds).
    pub(crate) fn with_retry(
        settings: &SekoiaSettings,
        retry: RetryPolicy,
    ) -> Result<AlertClient, SekoiaError> {
        let timeout = Duration::from_secs(settings.timeout_secs);
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        // Built once so connections are reused; the system proxy (HTTPS_PROXY, NO_PROXY) is
        // reqwest's default and stays on.
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .default_headers(headers)
            .connect_timeout(timeout)
            .timeout(timeout)
            // Never follow: a redirect to another host would receive the Bearer key's request
            // and serve the alert we render. A 3xx says the `api_url` must be fixed.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(SekoiaError::HttpClient)?;
        let cache = Cache::builder()
            .max_capacity(CACHE_MEMORY as u64)
            .weigher(|_, v: &Enrichment| match v {
                Enrichment::Enriched(a) => u32::try_from(a.charge()).unwrap_or(u32::MAX),
                _ => CACHED_FAILURE_WEIGHT,
            })
            .time_to_live(Duration::from_secs(settings.cache_ttl_secs))
            .build();
        // Evenly spaced (burst of 1): SEKOIA's WAF guidance is "at most 5 requests per second",
        // and spacing keeps every one-second window within it.
        let limiter = std::num::NonZeroU32::new(settings.max_requests_per_sec)
            .and_then(|n| Quota::with_period(Duration::from_secs(1) / n.get()))
            .map(RateLimiter::direct);
        Ok(AlertClient {
            http,
            cache,
            memory: AlertMemory::new(ALERT_MEMORY),
            limiter,
            shared_pacing: None,
            deadline: Duration::from_secs(settings.enrich_deadline_secs),
            retry,
            metrics: None,
            bases: UrlMemo::default(),
            list_refused: Default::default(),
        })
    }

    /// Count outcomes and time every [`AlertClient::enrich`] call in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> AlertClient {
        self.metrics = Some(metrics);
        self
    }

    /// Share `max_requests_per_sec` with every replica on `store` (a no-op for SQLite, whose
    /// server is alone).
    pub fn with_shared_pacing(
        mut self,
        store: crate::store::Store,
        settings: &SekoiaSettings,
    ) -> AlertClient {
        if settings.max_requests_per_sec > 0 {
            let interval = crate::store::slot_interval_ms(settings.max_requests_per_sec);
            self.shared_pacing = Some((store, interval));
        }
        self
    }

    /// Wait for this request's turn: a slot reserved in the shared store when there is one
    /// (PostgreSQL), else, or while it cannot answer, this process's limiter.
    async fn wait_turn(&self) {
        if let Some((store, interval)) = &self.shared_pacing {
            match store.reserve_slot("sekoia:api", *interval).await {
                Ok(Some(at)) => return crate::store::sleep_until_ms(at).await,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "shared API pacing unavailable: pacing locally")
                }
            }
        }
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
    }

    /// Fetch the alert behind `event`, or say why not.
    ///
    /// Never fails: every failure becomes [`Enrichment::Unavailable`] so the alert still goes
    /// out. May take up to `enrich_deadline_secs` (plus a request timeout and rate-limit waits)
    /// while the API fails transiently. Counted per call, i.e. per message prepared, so the
    /// metrics say how many messages went out without details.
    pub async fn enrich(&self, creds: &Credentials, event: &WebhookEvent) -> Enrichment {
        self.enrich_from(creds, event, None, Instant::now()).await
    }

    /// [`AlertClient::enrich`], answered from `batch` (what [`AlertClient::prefetch`] returned
    /// for these credentials) when it holds the event's alert, so that no call is made. Timed
    /// from `start`: the wait for the batch counts as the enrichment's time.
    pub async fn enrich_from(
        &self,
        creds: &Credentials,
        event: &WebhookEvent,
        batch: Option<&std::collections::HashMap<String, Arc<Alert>>>,
        start: Instant,
    ) -> Enrichment {
        let fetched = batch
            .filter(|_| event.has_alert_to_fetch())
            .and_then(|b| b.get(event.uuid.as_deref()?));
        let outcome = match fetched {
            Some(a) => Enrichment::Enriched(a.clone()),
            None => self.enrich_uncounted(creds, event).await,
        };
        if let Some(m) = &self.metrics {
            let kind = match &outcome {
                Enrichment::Enriched(_) => EnrichmentOutcome::Enriched,
                Enrichment::Unavailable(_) => EnrichmentOutcome::Unavailable,
                Enrichment::NotApplicable => EnrichmentOutcome::NotApplicable,
            };
            m.enrichment(kind, start.elapsed());
        }
        outcome
    }

    async fn enrich_uncounted(&self, creds: &Credentials, event: &WebhookEvent) -> Enrichment {
        if !event.has_alert_to_fetch() {
            return Enrichment::NotApplicable;
        }
        let Some(uuid) = event.uuid.as_deref() else {
            return Enrichment::Unavailable("the event carries no alert uuid".into());
        };
        let key = creds.api_key.expose_secret().trim();
        if key.is_empty() {
            return Enrichment::Unavailable("no API key configured".into());
        }
        let api_url = creds.api_url.trim().trim_end_matches('/');
        let base = self.bases.parse(api_url);
        let ctx = Ctx {
            alert: event.short_id.as_deref().unwrap_or("-"),
            uuid,
            api: base
                .as_ref()
                .map_or_else(|| "<invalid url>".into(), |b| b.safe_host.clone()),
        };
        let Some(url) = base.and_then(|b| alert_url(b.url, uuid)) else {
            tracing::warn!(alert = ctx.alert, uuid, api = %ctx.api, "the SEKOIA.IO API URL is not a valid http(s) URL");
            return Enrichment::Unavailable("the SEKOIA.IO API URL is not valid".into());
        };
        let Some(auth) = bearer(key) else {
            tracing::warn!(alert = ctx.alert, uuid, api = %ctx.api, "the SEKOIA.IO API key contains characters not allowed in an HTTP header");
            return Enrichment::Unavailable("the API key is malformed".into());
        };
        // Both are there (checked above), so the key is too.
        let Some(cache_key) = cache_key(creds, event) else {
            return Enrichment::Unavailable("no API key configured".into());
        };
        // Single flight: concurrent callers with the same key wait for this one future.
        self.cache
            .get_with(cache_key, self.fetch(url, auth, &ctx))
            .await
    }

    /// The cache entry of `event`'s alert, if one is there (a batch prefetch or an earlier
    /// call filled it). Never calls the API.
    pub async fn cached(&self, creds: &Credentials, event: &WebhookEvent) -> Option<Enrichment> {
        let key = cache_key(creds, event)?;
        self.cache.get(&key).await
    }

    /// Fetch the alerts of `events` that are not cached yet with as few calls as the Alert
    /// API allows, and cache them for [`AlertClient::enrich`]: the storm planner's batch.
    ///
    /// `GET {api_url}/v1/sic/alerts?match[uuid]=a,b,…&limit=N&stix=false`, at most
    /// [`BATCH_SIZE`] uuids per call (the list endpoint and its `match[uuid]` filter are those
    /// of SEKOIA.IO's public automation library, `Sekoia.io/action_list_alerts.json` and
    /// `sekoiaio/operation_center/`, whose lists answer `{"total", "items"}`). Paced by
    /// `max_requests_per_sec` like every call. No retries: an alert the batch did not bring
    /// is fetched on its own later, with the usual retries. Returns the alerts it fetched, by
    /// uuid (the cache may evict them before they are read: it is weighed in bytes).
    pub async fn prefetch(
        &self,
        creds: &Credentials,
        events: &[&WebhookEvent],
    ) -> std::collections::HashMap<String, Arc<Alert>> {
        let mut fetched = std::collections::HashMap::new();
        let key = creds.api_key.expose_secret().trim();
        let api_url = creds.api_url.trim().trim_end_matches('/');
        let Some(auth) = bearer(key) else {
            return fetched;
        };
        if self.list_refused_now(api_url) {
            return fetched;
        }
        let mut wanted: Vec<(String, CacheKey)> = Vec::new();
        for e in events {
            if !e.has_alert_to_fetch() {
                continue;
            }
            let (Some(uuid), Some(k)) = (e.uuid.clone(), cache_key(creds, e)) else {
                continue;
            };
            // Cached already (another target's plan, a send): no call, but returned too.
            match self.cache.get(&k).await {
                Some(Enrichment::Enriched(a)) => {
                    fetched.insert(uuid, a);
                }
                _ => wanted.push((uuid, k)),
            }
        }
        let mut uuids: Vec<String> = wanted.iter().map(|w| w.0.clone()).collect();
        uuids.sort();
        uuids.dedup();
        for chunk in uuids.chunks(BATCH_SIZE) {
            let Some(url) = self
                .bases
                .parse(api_url)
                .and_then(|b| list_url(b.url, chunk))
            else {
                return fetched;
            };
            self.wait_turn().await;
            if let Some(m) = &self.metrics {
                m.alert_api_call("batch");
            }
            let sent = self
                .http
                .get(url)
                .header(AUTHORIZATION, auth.clone())
                .send()
                .await;
            let mut resp = match sent {
                Ok(r) if r.status().is_success() => r,
                Ok(r) if policy::list_refused(r.status().as_u16()) => {
                    tracing::warn!(status = r.status().as_u16(), api = %redact_url(api_url), pause_secs = LIST_REFUSED_PAUSE.as_secs(), "SEKOIA.IO refused the alert list call: alerts are fetched one by one, and the list is not asked for a while");
                    self.list_refused
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(api_url.to_string(), Instant::now() + LIST_REFUSED_PAUSE);
                    return fetched;
                }
                Ok(r) => {
                    tracing::info!(status = r.status().as_u16(), api = %redact_url(api_url), "SEKOIA.IO alert list call failed: alerts are fetched one by one");
                    return fetched;
                }
                Err(e) => {
                    tracing::info!(error = %e.without_url(), api = %redact_url(api_url), "SEKOIA.IO alert list call failed: alerts are fetched one by one");
                    return fetched;
                }
            };
            let Some(mut reserved) = self
                .reserve(alert::reservation(resp.content_length()))
                .await
            else {
                return fetched;
            };
            let Ok((body, false)) = read_limited(&mut resp, MAX_ALERT_BYTES).await else {
                return fetched;
            };
            let Ok(list) = serde_json::from_slice::<Value>(&body) else {
                return fetched;
            };
            drop(body);
            let items = match list {
                Value::Object(mut o) => match o.remove("items") {
                    Some(Value::Array(items)) => items,
                    _ => return fetched,
                },
                _ => return fetched,
            };
            for item in items {
                let Some(uuid) = item.get("uuid").and_then(Value::as_str).map(str::to_string)
                else {
                    continue;
                };
                let size = alert::parsed_size(&item);
                let Some(permit) = reserved.split(size.max(1)) else {
                    break;
                };
                let Ok(a) = alert::admit(item, permit) else {
                    continue;
                };
                let a = Arc::new(a);
                for (_, k) in wanted.iter().filter(|w| w.0 == uuid) {
                    self.cache
                        .insert(k.clone(), Enrichment::Enriched(a.clone()))
                        .await;
                }
                fetched.insert(uuid, a);
            }
        }
        fetched
    }

    /// Whether the list endpoint of `api_url` refused a call less than [`LIST_REFUSED_PAUSE`]
    /// ago.
    fn list_refused_now(&self, api_url: &str) -> bool {
        let mut refused = self.list_refused.lock().unwrap_or_else(|e| e.into_inner());
        match refused.get(api_url) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                refused.remove(api_url);
                false
            }
            None => false,
        }
    }

    /// Reserve `n` units of alert memory, waiting for deliveries to release theirs.
    ///
    /// The cache evicts lazily, so while we wait it may hold more than its weighed capacity:
    /// every 50 ms of waiting, its pending evictions are run, which returns the memory of
    /// entries over capacity (otherwise a full budget could wait on the cache forever).
    async fn reserve(&self, n: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let wait = self.memory.reserve(n);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                permit = &mut wait => return permit,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    self.cache.run_pending_tasks().await;
                }
            }
        }
    }

    /// Call the API until it settles the outcome or the deadline passes.
    async fn fetch(&self, url: url::Url, auth: HeaderValue, ctx: &Ctx<'_>) -> Enrichment {
        let mut deadline: Option<Instant> = None;
        let mut first_failure: Option<Instant> = None;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            {
                let start = Instant::now();
                self.wait_turn().await;
                // Waiting for the rate limit is not the API's fault: it does not count.
                if let Some(d) = deadline.as_mut() {
                    *d += start.elapsed();
                }
            }
            let failure = match self.attempt(url.clone(), auth.clone(), ctx, attempt).await {
                Attempt::Done(outcome) => return outcome,
                Attempt::Retry(failure) => failure,
            };
            let now = Instant::now();
            let first = *first_failure.get_or_insert(now);
            let until = *deadline.get_or_insert(now + self.deadline);
            if now >= until {
                let secs = now.duration_since(first).as_secs();
                tracing::warn!(
                    alert = ctx.alert, uuid = ctx.uuid, api = %ctx.api, attempt, last = %failure.last,
                    "SEKOIA.IO API still failing after the enrichment deadline; sending the alert unenriched"
                );
                return Enrichment::Unavailable(format!(
                    "API unavailable for {secs} s (last: {})",
                    failure.last
                ));
            }
            let backoff = self.retry.delay(attempt, rand::random::<f64>());
            let delay = next_delay(backoff, failure.retry_after, until - now);
            tracing::info!(
                alert = ctx.alert, uuid = ctx.uuid, api = %ctx.api, attempt, last = %failure.last,
                retry_in_ms = delay.as_millis() as u64,
                "SEKOIA.IO API call failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One GET, classified.
    async fn attempt(
        &self,
        url: url::Url,
        auth: HeaderValue,
        ctx: &Ctx<'_>,
        attempt: u32,
    ) -> Attempt {
        if let Some(m) = &self.metrics {
            m.alert_api_call("single");
        }
        let sent = self
            .http
            .get(url.clone())
            .header(AUTHORIZATION, auth)
            .send()
            .await;
        let mut resp = match sent {
            Ok(resp) => resp,
            Err(e) => return Attempt::Retry(transport_failure(e, ctx, attempt)),
        };
        let status = resp.status().as_u16();
        match classify_status(status) {
            StatusClass::Success => {
                // Reserve memory before reading: hostile answers then wait their turn instead
                // of adding up (the request already went out; only reading waits).
                let Some(reserved) = self
                    .reserve(alert::reservation(resp.content_length()))
                    .await
                else {
                    return Attempt::Done(Enrichment::Unavailable("shutting down".into()));
                };
                let body = match read_limited(&mut resp, MAX_ALERT_BYTES).await {
                    Ok((body, false)) => body,
                    Ok((_, true)) => {
                        tracing::warn!(alert = ctx.alert, uuid = ctx.uuid, api = %ctx.api, attempt, status, limit = MAX_ALERT_BYTES, "alert body too large");
                        return Attempt::Done(Enrichment::Unavailable(format!(
                            "SEKOIA.IO API answered {status} with a body over {} MiB",
                            MAX_ALERT_BYTES / (1024 * 1024)
                        )));
                    }
                    // The body broke off (reset, timeout): as transient as a failed request.
                    Err(e) => return Attempt::Retry(transport_failure(e, ctx, attempt)),
                };
                let json = match serde_json::from_slice::<Value>(&body) {
                    Ok(json @ Value::Object(_)) => json,
                    _ => {
                        tracing::warn!(
                            alert = ctx.alert, uuid = ctx.uuid, api = %ctx.api, attempt, status,
                            excerpt = %error_excerpt(&body),
                            "SEKOIA.IO API answered with a body that is not a JSON object"
                        );
                        return Attempt::Done(Enrichment::Unavailable(format!(
                            "SEKOIA.IO API answered {status} with a body that is not a JSON alert"
                        )));
                    }
                };
                drop(body);
                match alert::admit(json, reserved) {
                    Ok(alert) => {
                        tracing::debug!(alert = ctx.alert, uuid = ctx.uuid, api = %ctx.api, attempt, status, "alert fetched");
                        Attempt::Done(Enrichment::Enriched(Arc::new(alert)))
                    }
                    Err(too_large) => {
                        tracing::warn!(alert = ctx.alert, uuid = ctx.uuid, api = %ctx.api, attempt, status, parsed_bytes = too_large.charge, "alert too large once parsed");
                        Attempt::Done(Enrichment::Unavailable(format!(
                            "SEKOIA.IO API answered {status} with an alert too large to keep in memory"
                        )))
                    }
                }
            }
            StatusClass::Redirect => {
                let to = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|loc| url.join(loc).ok())
                    .map(|u| redact_url(u.as_str()))
                    .unwrap_or_else(|| "an unusable Location".into());
                tracing::warn!(
                    alert = ctx.alert, uuid = ctx.uuid, api = %ctx.api, attempt, status, to = %to,
                    "SEKOIA.IO API answered with a redirect, which is never followed: check sekoia.api_url (region); sending the alert unenriched"
                );
                Attempt::Done(Enrichment::Unavailable(format!(
                    "SEKOIA.IO API redirected to {to} (HTTP {status}): check api_url"
                )))
            }
            StatusClass::Retry => {
                let retry_after = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                let excerpt = body_excerpt(&mut resp).await;
                tracing::debug!(alert = ctx.alert, uuid = ctx.uuid, api = %ctx.api, attempt, status, excerpt = %excerpt, "SEKOIA.IO API error response");
                Attempt::Retry(Failure {
                    last: format!("HTTP {status}"),
                    retry_after,
                })
            }
            StatusClass::GiveUp => {
                let excerpt = body_excerpt(&mut resp).await;
                let reason = match status {
                    401 | 403 => {
                        tracing::warn!(
                            alert = ctx.alert, uuid = ctx.uuid, api = %ctx.api, attempt, status, excerpt = %excerpt,
                            "SEKOIA.IO API refused the API key: it must be valid and have the SIC_READ_ALERTS permission; sending the alert unenriched"
                        );
                        if status == 401 {
                            "API key invalid or expired"
                        } else {
                            "API key lacks the SIC_READ_ALERTS permission"
                        }
                    }
                    404 => {
                        tracing::warn!(alert = ctx.alert, uuid = ctx.uuid, api = %ctx.api, attempt, status, excerpt = %excerpt, "alert not found by the SEKOIA.IO API; sending the alert unenriched");
                        "alert not found"
                    }
                    _ => {
                        tracing::warn!(alert = ctx.alert, uuid = ctx.uuid, api = %ctx.api, attempt, status, excerpt = %excerpt, "unexpected SEKOIA.IO API answer; sending the alert unenriched");
                        "unexpected answer"
                    }
                };
                Attempt::Done(Enrichment::Unavailable(format!(
                    "SEKOIA.IO API answered {status} ({reason})"
                )))
            }
        }
    }
}

/// Most uuids in one alert list call (`limit` of the list endpoint).
pub const BATCH_SIZE: usize = 100;

/// How long a list endpoint that refused a call (see [`policy::list_refused`]) is left alone:
/// until then each alert is fetched on its own, without paying a refused call per batch.
const LIST_REFUSED_PAUSE: Duration = Duration::from_secs(600);

/// `Authorization: Bearer {key}`, marked sensitive (never printed by the HTTP stack); `None`
/// for a key with characters a header cannot carry.
fn bearer(key: &str) -> Option<HeaderValue> {
    let mut auth = HeaderValue::from_str(&format!("Bearer {key}")).ok()?;
    auth.set_sensitive(true);
    Some(auth)
}

/// The cache key of `event`'s alert (see the module documentation), when it has one.
fn cache_key(creds: &Credentials, event: &WebhookEvent) -> Option<CacheKey> {
    let key = creds.api_key.expose_secret().trim();
    if key.is_empty() {
        return None;
    }
    Some(CacheKey {
        api_url: creds.api_url.trim().trim_end_matches('/').to_owned(),
        key_fingerprint: Sha256::digest(key.as_bytes()).into(),
        uuid: event.uuid.clone()?,
        created_at: event.created_at.clone(),
    })
}

/// `{api_url}/v1/sic/alerts?match[uuid]=a,b&limit=N&stix=false`: the list of `uuids`.
fn list_url(base: url::Url, uuids: &[String]) -> Option<url::Url> {
    let mut url = alert_url(base, "x")?;
    url.path_segments_mut().ok()?.pop();
    url.query_pairs_mut()
        .clear()
        .append_pair("match[uuid]", &uuids.join(","))
        .append_pair("limit", &uuids.len().to_string())
        .append_pair("stix", "false");
    Some(url)
}

/// `{api_url}/v1/sic/alerts/{uuid}?stix=false&...` (`url` is `api_url` parsed), the uuid
/// percent-encoded as one path segment. `None` for a URL that is not http(s) or cannot carry
/// a path.
fn alert_url(mut url: url::Url, uuid: &str) -> Option<url::Url> {
    // Userinfo would become a second (Basic) Authorization header: refused (config validation
    // says so first; this keeps the client safe on its own).
    if !matches!(url.scheme(), "http" | "https") || !url.username().is_empty() {
        return None;
    }
    if url.password().is_some() {
        return None;
    }
    url.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .extend(["v1", "sic", "alerts", uuid]);
    url.set_query(Some(QUERY));
    url.set_fragment(None);
    Some(url)
}

/// Classify and log a request that got no (complete) answer. The URL is stripped from the
/// error first: logs show the API host only.
fn transport_failure(e: reqwest::Error, ctx: &Ctx<'_>, attempt: u32) -> Failure {
    let e = e.without_url();
    let last = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection error"
    } else {
        "transport error"
    };
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    tracing::debug!(alert = ctx.alert, uuid = ctx.uuid, api = %ctx.api, attempt, error = %detail, "SEKOIA.IO API request failed");
    Failure {
        last: last.into(),
        retry_after: None,
    }
}

/// Read at most `limit` bytes of the body; the flag says whether more was left unread.
async fn read_limited(
    resp: &mut reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    // Sized once from the announced length: growing by doubling would hold up to twice the body.
    let announced = resp.content_length().unwrap_or(0).min(limit as u64 + 1);
    let mut buf = Vec::with_capacity(announced as usize);
    while let Some(chunk) = resp.chunk().await? {
        let room = limit.saturating_sub(buf.len());
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            return Ok((buf, true));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf, false))
}

/// A bounded, sanitised excerpt of an error body, for logs.
async fn body_excerpt(resp: &mut reqwest::Response) -> String {
    match read_limited(resp, MAX_ERROR_BYTES).await {
        Ok((body, _)) => error_excerpt(&body),
        Err(_) => "<unreadable body>".into(),
    }
}
