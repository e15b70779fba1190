//! Liveness and readiness.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::state::AppState;

/// `GET /healthz`: 200 while the process runs.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when the config is loaded and the store accepts a write, else 503.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.store.probe().await {
        Ok(()) => HttpResponse::Ok().json(json!({ "status": "ready" })),
        Err(e) => {
            tracing::error!(error = %e, "readiness probe: the store is not writable");
            HttpResponse::ServiceUnavailable()
                .json(json!({ "status": "unavailable", "detail": "the store is not writable" }))
        }
    }
}
