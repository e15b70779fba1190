//! # sekoia-relay
//!
//! SEKOIA.IO notification webhooks in, rich chat messages out, nothing lost in between.
//!
//! The pipeline, stage by stage:
//!
//! 1. **Receive** — [`routes::hooks`]: `POST /hooks/{id}` checks the hook, the client address,
//!    the size, the content type, and parses the version-2 event ([`domain::event`]).
//! 2. **Persist** — [`store`]: the event and one delivery row per target are committed
//!    *before* the relay answers 202, to embedded SQLite (group commit) or to PostgreSQL
//!    shared by several replicas (leases, shared pacing). Duplicates answer 200.
//! 3. **Enrich** — [`sekoia`]: the full alert is fetched once from the Alert API (cache,
//!    rate limit, retries until a deadline; the deliveries claimed together share one list
//!    call); on failure the message goes out unenriched.
//! 4. **Render** — [`render`]: a MiniJinja template per target kind builds the exact request
//!    body, JSON-escaped by construction and cut to the target's size limits.
//!    [`targets`] holds one module per kind with everything that differs between kinds
//!    (limits, envelope, template, escaping, answers), asked through one trait.
//! 5. **Deliver** — [`delivery`]: workers claim due rows, pace each target with a token
//!    bucket, post, and record success, a retry (the `retry_schedule`, jittered, pushed later
//!    by `Retry-After`) or a dead letter. For paced targets, [`delivery::storm`] plans the
//!    waiting rows first (alerts fetched in batches and kept with the event, urgent first,
//!    older updates of an alert collapsed into the newest, the rest of a storm in digests). The bot-token kinds (`slack_app`, `mattermost_app`)
//!    go through [`chatapp`] instead: one living message per alert, edited by later events
//!    (its reference kept in the store), with triage buttons whose presses
//!    [`routes::integrations`] receives (`POST /integrations/{slack,mattermost}/actions`).
//!    Deliveries run on threads of their own at a lower CPU priority
//!    ([`delivery::DeliveryThreads`]): when cores run out, acknowledging webhooks comes first.
//!    [`retry`] is the one retry policy (a schedule as
//!    data, jitter, `Retry-After`) used by delivery and by the Alert API client alike.
//!
//! Around it, by layer:
//!
//! - bottom: [`domain`] (the event, the kind names), [`secrets`] (what may be shown of a
//!   secret), [`url_memo`] (config URLs parsed once), [`retry`], [`configuration`] (config.toml), and [`targets`] (each kind's rules,
//!   asked by configuration's checks and by the stages; it still borrows render's text
//!   helpers and urgency bands, the one arrow left to straighten);
//! - the stages above, plus [`routing`] (which targets an event reaches), [`telemetry`] (logs)
//!   and [`metrics`] (`GET /metrics`);
//! - [`state`]: the config-derived `Runtime` and the handlers' `AppState`, shared by routes,
//!   delivery and reload without depending on any of them;
//! - top: [`startup`] (the `Application` that wires the stages, runs until a shutdown future
//!   resolves, and reloads on SIGHUP through [`reload`]), [`cli`] (the clap types only) and
//!   [`commands`] (what each command does: `check`, `render`, `send-test`, `dead-letters`, …).

pub mod chatapp;
pub mod cli;
pub mod commands;
pub mod configuration;
pub mod delivery;
pub mod domain;
pub mod metrics;
pub mod reload;
pub mod render;
pub mod retry;
pub mod routes;
pub mod routing;
pub mod secrets;
pub mod sekoia;
pub mod startup;
pub mod state;
pub mod store;
pub mod targets;
pub mod telemetry;
pub mod url_memo;
