//! `POST /hooks/{id}`: check, parse, persist, then answer.
//!
//! The checks run in the order of the README's "HTTP answers" table so each failure gets its
//! documented status: unknown hook 404, client address 403, content type 415, size 413, not
//! JSON 400, not a v2 event 422, excluded type/action 200 filtered. Only a committed event gets
//! a 202.

use std::net::IpAddr;
use std::time::Duration;

use actix_web::{http::header, web, HttpRequest, HttpResponse, ResponseError};
use futures_util::StreamExt;
use ipnet::IpNet;
use serde_json::json;

use super::ApiError;
use crate::domain::event::{dedup_key, EventError, WebhookEvent};
use crate::metrics::{EventOutcome, UNKNOWN_HOOK};
use crate::secrets::hook_id_prefix;
use crate::state::{AppState, HookEntry, Runtime};
use crate::store::{Ingested, NewEvent};

/// How long a client may take to send its body: a slow client must not hold a worker forever.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The client address as the relay sees it: the peer, or the `X-Forwarded-For` client when
/// the peer is a trusted proxy (what `allow_from` is checked against).
fn seen_client(req: &HttpRequest, trusted: &[IpNet]) -> Option<IpAddr> {
    let forwarded = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    req.peer_addr()
        .map(|a| client_ip(a.ip(), forwarded, trusted))
}

pub async fn receive(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let hook_id = path.into_inner();
    let runtime = state.runtime();
    let trusted = &runtime.settings.server.trusted_proxies;
    let Some(hook) = runtime.hook_by_id(&hook_id) else {
        if let Some(suppressed) = state.refusals.admit() {
            tracing::info!(
                hook_id = %hook_id_prefix(&hook_id),
                client = %display_ip(seen_client(&req, trusted)),
                status = 404,
                suppressed,
                "post to an unknown hook"
            );
        }
        state
            .metrics
            .event_received(UNKNOWN_HOOK, EventOutcome::Rejected4xx);
        return Err(ApiError::UnknownHook);
    };
    let result = accept(&req, payload, &state, &runtime, hook).await;
    let outcome = match &result {
        Ok((outcome, _)) => *outcome,
        Err(ApiError::Unavailable) => EventOutcome::StoreError,
        Err(_) => EventOutcome::Rejected4xx,
    };
    // One line per refusal (the 503 has its own error line), paced.
    let refused = match &result {
        Err(ApiError::Unavailable) => None,
        Err(e) => Some((e.status_code().as_u16(), e.to_string())),
        Ok(_) => None,
    };
    if let Some((status, reason)) = refused {
        if let Some(suppressed) = state.refusals.admit() {
            let client = display_ip(seen_client(&req, trusted));
            let hook = hook.settings.name.as_str();
            tracing::info!(hook, %client, status, %reason, suppressed, "post refused");
        }
    }
    state.metrics.event_received(&hook.settings.name, outcome);
    result.map(|(_, response)| response)
}

/// Everything after the hook lookup, with the outcome for the metrics.
async fn accept(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    runtime: &Runtime,
    hook: &HookEntry,
) -> Result<(EventOutcome, HttpResponse), ApiError> {
    if !hook.settings.allow_from.is_empty() {
        let allowed = seen_client(req, &runtime.settings.server.trusted_proxies)
            .is_some_and(|ip| hook.settings.allow_from.iter().any(|net| net.contains(&ip)));
        if !allowed {
            // Logged by `receive` with the address seen.
            return Err(ApiError::Forbidden);
        }
    }

    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        if !is_json_content_type(ct.to_str().unwrap_or("")) {
            return Err(ApiError::UnsupportedMediaType);
        }
    }

    let max = runtime.settings.server.max_body_bytes;
    let body = read_body(req, payload, max).await?;

    let event = WebhookEvent::parse(&body).map_err(|e| match e {
        EventError::NotJson(m) => ApiError::BadRequest(format!("body is not valid JSON: {m}")),
        EventError::NotV2(m) => {
            ApiError::Unprocessable(format!("not a version-2 SEKOIA.IO event: {m}"))
        }
    })?;

    let s = &hook.settings;
    if (!s.types.is_empty() && !s.types.contains(&event.kind))
        || (!s.actions.is_empty() && !s.actions.contains(&event.action))
    {
        // Debug, not info: filtering is the hook doing its job. Paced like refusals.
        if tracing::enabled!(tracing::Level::DEBUG) {
            if let Some(suppressed) = state.refusals.admit() {
                let client = display_ip(seen_client(req, &runtime.settings.server.trusted_proxies));
                tracing::debug!(hook = %s.name, %client, r#type = %event.kind, action = %event.action, suppressed, "event filtered by the hook");
            }
        }
        return Ok((
            EventOutcome::Filtered,
            HttpResponse::Ok().json(json!({ "status": "filtered" })),
        ));
    }

    let new = NewEvent {
        hook: s.name.clone(),
        dedup_key: dedup_key(&s.name, &event, &body),
        kind: event.kind.clone(),
        action: event.action.clone(),
        alert_uuid: event.uuid.clone(),
        short_id: event.short_id.clone(),
        // Already validated as UTF-8 by the parser.
        body: String::from_utf8_lossy(&body).into_owned(),
        targets: hook.targets.clone(),
        dedup_window_ms: (runtime.settings.store.dedup_window_secs as i64).saturating_mul(1000),
    };
    match state.store.ingest(new).await {
        Ok(Ingested::Accepted { event_id }) => {
            tracing::info!(hook = %s.name, %event_id, short_id = event.short_id.as_deref().unwrap_or("-"), r#type = %event.kind, action = %event.action, "event accepted");
            state.wake.notify_one();
            Ok((
                EventOutcome::Accepted,
                HttpResponse::Accepted()
                    .json(json!({ "status": "accepted", "event_id": event_id })),
            ))
        }
        Ok(Ingested::Duplicate { event_id }) => {
            tracing::info!(hook = %s.name, %event_id, "duplicate event ignored");
            Ok((
                EventOutcome::Duplicate,
                HttpResponse::Ok().json(json!({ "status": "duplicate", "event_id": event_id })),
            ))
        }
        Err(e) => {
            tracing::error!(hook = %s.name, error = %e, "cannot persist event: answering 503");
            Err(ApiError::Unavailable)
        }
    }
}

fn display_ip(ip: Option<IpAddr>) -> String {
    ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into())
}

async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    max: usize,
) -> Result<web::BytesMut, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(ApiError::TooLarge(max));
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(max));
    let read = async {
        while let Some(chunk) = payload.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::BadRequest(format!("cannot read body: {e}")))?;
            if body.len() + chunk.len() > max {
                return Err(ApiError::TooLarge(max));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(())
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .map_err(|_| ApiError::Timeout)??;
    Ok(body)
}

/// Whether a `Content-Type` value is JSON: `application/json` or any `application/*+json`,
/// parameters (charset) ignored, case-insensitive.
pub fn is_json_content_type(value: &str) -> bool {
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// The client's address, believing `X-Forwarded-For` only from trusted proxies.
///
/// Rule: if the TCP peer is not a trusted proxy, it is the client. Otherwise walk the
/// `X-Forwarded-For` list from the right (the hop nearest to us), skipping trusted proxies;
/// the first address that is not one is the client. Reason: each proxy appends the address it
/// saw, so only the entries added by our own proxies are trustworthy; a client can put anything
/// on the left of the list, so believing the leftmost entry would let anyone spoof `allow_from`.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(list) = forwarded_for else {
        return peer;
    };
    let mut client = peer;
    for hop in list.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // A malformed entry ends the chain of trust: use what we had.
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn content_types() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("Application/JSON; charset=utf-8"));
        assert!(is_json_content_type("application/vnd.sekoia+json"));
        assert!(!is_json_content_type("text/plain"));
        assert!(!is_json_content_type("application/x-www-form-urlencoded"));
        assert!(!is_json_content_type(""));
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(
            client_ip(peer, Some("10.0.0.1"), &nets(&["127.0.0.1/32"])),
            peer
        );
        assert_eq!(client_ip(peer, Some("10.0.0.1"), &[]), peer);
    }

    #[test]
    fn forwarded_for_is_believed_from_trusted_proxies_only() {
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let trusted = nets(&["127.0.0.1/32", "10.0.0.0/8"]);
        // spoofed left entry, real client added by our proxy on the right
        assert_eq!(
            client_ip(proxy, Some("1.2.3.4, 198.51.100.7, 10.1.1.1"), &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(proxy, None, &trusted), proxy);
        assert_eq!(client_ip(proxy, Some("garbage"), &trusted), proxy);
    }
}
