//! `POST /integrations/slack/actions`: a press of a card's triage button.
//!
//! Only a request signed with a `slack_app` target's `signing_secret` (fresh, not seen
//! before) is acted on; anything else is 401 and changes nothing. Slack wants its answer within
//! 3 s, so the relay answers 200 at once and does the slow part (SEKOIA.IO, the card) after.

use std::sync::LazyLock;

use actix_web::{web, HttpRequest, HttpResponse};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::chatapp::signing::{verify_slack, Refusal};
use crate::chatapp::triage;
use crate::state::AppState;

/// The client for SEKOIA.IO, Slack and `response_url` calls of a press.
static HTTP: LazyLock<reqwest::Client> = LazyLock::new(|| {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
});

pub async fn slack_actions(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    let rt = state.runtime();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (ts, sig) = (
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
    );
    let now = crate::store::now_ms() / 1000;
    let mut refusal = Refusal::BadSignature;
    let mut matched = None;
    for (name, t) in &rt.settings.targets {
        if !crate::chatapp::buttons_on(t) {
            continue;
        }
        let Some(secret) = t.signing_secret.as_ref() else {
            continue;
        };
        match verify_slack(
            secret.expose_secret().as_bytes(),
            ts.as_deref(),
            sig.as_deref(),
            &body,
            now,
        ) {
            Ok(()) => {
                matched = Some((name.clone(), t.clone()));
                break;
            }
            Err(r) => refusal = r,
        }
    }
    let Some((target_name, target)) = matched else {
        tracing::warn!(reason = %refusal, "refused a Slack action request");
        return unauthorized(refusal);
    };
    if let Err(r) = state.slack_replays.check(sig.as_deref().unwrap_or(""), now) {
        tracing::warn!(reason = %r, target = %target_name, "refused a Slack action request");
        return unauthorized(r);
    }
    let press = match triage::parse_slack(&body) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, target = %target_name, "signed Slack request that is not a press of the relay's buttons");
            return HttpResponse::Ok().finish();
        }
    };
    if !triage::allowed(&target.allowed_users, &press.user_id, &press.user_name) {
        tracing::info!(audit = true, user = %press.user_name, user_id = %press.user_id, alert = %press.button.s, action = %press.button.n, result = "forbidden", target = %target_name, "triage action");
        state
            .metrics
            .triage_action(&target_name, &press.button.n, "forbidden");
        if let Some(url) = press.response_url.clone() {
            tokio::spawn(async move {
                let body = json!({"response_type": "ephemeral", "replace_original": false,
                    "text": "You are not allowed to change alerts from this channel (allowed_users)."});
                let _ = HTTP.post(url).json(&body).send().await;
            });
        }
        return HttpResponse::Ok().finish();
    }
    // Slack's 3-second deadline: answer now, act after.
    tokio::spawn(triage::run_slack(
        HTTP.clone(),
        rt.settings.clone(),
        target_name,
        press,
        state.metrics.clone(),
    ));
    HttpResponse::Ok().finish()
}

fn unauthorized(r: Refusal) -> HttpResponse {
    HttpResponse::Unauthorized().json(json!({ "detail": r.to_string() }))
}
