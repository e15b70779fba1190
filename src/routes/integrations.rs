//! `POST /integrations/slack/actions` and `POST /integrations/mattermost/actions`: a press of
//! a card's triage button.
//!
//! Slack: only a request signed with a `slack_app` target's `signing_secret` (fresh, not seen
//! before) is acted on. Slack wants its answer within 3 s, so the relay answers 200 at once
//! and does the slow part (SEKOIA.IO, the card) after.
//!
//! Mattermost signs nothing: only a press carrying its `mattermost_app` target's secret
//! ([`crate::chatapp::signing::mattermost_secret`]) is acted on. Mattermost waits for the
//! answer (up to its `OutgoingIntegrationRequestsTimeout`, 30 s by default), so the relay acts
//! first and answers with `ephemeral_text` (shown to the presser only) when it failed.
//!
//! Anything else is 401 and changes nothing.

use std::sync::LazyLock;

use actix_web::{web, HttpRequest, HttpResponse};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::chatapp::signing::{mattermost_secret, same_secret, verify_slack, Refusal};
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
        if t.kind != crate::domain::TargetKind::SlackApp
            || !crate::chatapp::buttons_on(t, &rt.settings.server.public_url)
        {
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

/// How long a Mattermost press may take before the presser is told to look in SEKOIA.IO
/// (below Mattermost's default 30 s integration timeout).
const MATTERMOST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

pub async fn mattermost_actions(body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let rt = state.runtime();
    let press = match triage::parse_mattermost(&body) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(reason = %e, "refused a Mattermost action request");
            return HttpResponse::Unauthorized()
                .json(json!({ "detail": "not a press of the relay's buttons" }));
        }
    };
    // The target named in the context, if it is a Mattermost app with buttons, and only if the
    // press carries its secret; otherwise nothing is said about which part was wrong.
    let target = rt
        .settings
        .targets
        .get(&press.target)
        .filter(|t| t.kind == crate::domain::TargetKind::MattermostApp)
        .filter(|t| crate::chatapp::buttons_on(t, &rt.settings.server.public_url))
        .filter(|t| {
            let token = t.token.as_ref().map(|s| s.expose_secret()).unwrap_or("");
            same_secret(&press.secret, &mattermost_secret(token, &press.target))
        });
    let Some(target) = target else {
        tracing::warn!(
            reason = "secret does not match",
            "refused a Mattermost action request"
        );
        return HttpResponse::Unauthorized().json(json!({ "detail": "secret does not match" }));
    };
    if !triage::allowed(&target.allowed_users, &press.user_id, &press.user_name) {
        tracing::info!(audit = true, user = %press.user_name, user_id = %press.user_id, alert = %press.button.s, action = %press.button.n, result = "forbidden", target = %press.target, "triage action");
        state
            .metrics
            .triage_action(&press.target, &press.button.n, "forbidden");
        return HttpResponse::Ok().json(json!({
            "ephemeral_text": "You are not allowed to change alerts from this channel (allowed_users)."
        }));
    }
    // Spawned, so a press that outlives the deadline still finishes (and writes its audit line).
    let (settings, metrics, p) = (rt.settings.clone(), state.metrics.clone(), press.clone());
    let work =
        tokio::spawn(async move { triage::run_mattermost(&HTTP, &settings, &p, &metrics).await });
    match tokio::time::timeout(MATTERMOST_DEADLINE, work).await {
        Ok(Ok(answer)) => HttpResponse::Ok().json(answer),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "a Mattermost press failed inside the relay");
            HttpResponse::Ok().json(json!({
                "ephemeral_text": "The relay failed while acting: check the alert in SEKOIA.IO."
            }))
        }
        Err(_) => {
            tracing::warn!(alert = %press.button.s, target = %press.target, "a Mattermost press took longer than its deadline");
            HttpResponse::Ok().json(json!({
                "ephemeral_text": "SEKOIA.IO did not answer in time: check the alert in SEKOIA.IO before pressing again."
            }))
        }
    }
}
