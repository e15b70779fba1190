//! `GET /metrics`: Prometheus (OpenMetrics) text.

use actix_web::{http::header, web, HttpResponse};

use crate::metrics::CONTENT_TYPE;
use crate::state::AppState;

/// Longest wait for the queue depth: a scrape must answer even when the store is stuck (the
/// gauges then keep their last values and `/readyz` tells the rest).
const DEPTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let depth = match tokio::time::timeout(DEPTH_TIMEOUT, state.store.depth()).await {
        Ok(Ok(d)) => Some(d),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: cannot read the queue depth");
            None
        }
        Err(_) => {
            tracing::warn!("metrics: the store did not answer the queue depth in time");
            None
        }
    };
    let fallbacks = state.runtime().renderer.fallback_count();
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, CONTENT_TYPE))
        .body(state.metrics.encode(depth, fallbacks))
}
