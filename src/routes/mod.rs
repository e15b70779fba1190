//! The HTTP surface (README, "HTTP answers"): `POST /hooks/{id}`, `/healthz`, `/readyz`, `/metrics`,
//! `POST /integrations/slack/actions` (triage buttons).

pub mod health;
pub mod hooks;
pub mod integrations;
pub mod metrics;

use actix_web::{http::StatusCode, HttpResponse, ResponseError};
use serde_json::json;

/// Every error the HTTP surface answers, with its status. 4xx bodies are public and say what
/// to fix; 5xx bodies are generic and the full chain goes to the logs.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unknown hook")]
    UnknownHook,
    #[error("client address not allowed for this hook")]
    Forbidden,
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("timed out reading the request body")]
    Timeout,
    #[error("the event could not be stored; retry later")]
    Unavailable,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::UnknownHook | ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Unavailable) {
            res.insert_header(("Retry-After", "5"));
        }
        res.json(json!({ "detail": self.to_string() }))
    }
}

/// Fallback for every other path: a JSON 404, like the rest of the surface.
pub async fn not_found() -> HttpResponse {
    ApiError::NotFound.error_response()
}

/// Any method but POST on a hook URL.
pub async fn method_not_allowed() -> HttpResponse {
    ApiError::MethodNotAllowed.error_response()
}
