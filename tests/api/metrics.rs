//! `GET /metrics`: the numbers move with what the relay does, and carry names, never ids or URLs.

use std::time::Duration;

use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn metrics_count_events_deliveries_enrichment_and_queue() {
    let app = TestApp::spawn().await;
    mount_alert(&app.sekoia).await;
    mount_chat_ok(&app.chat).await;

    let before = app.scrape().await;
    assert_eq!(
        metric(&before, r#"sekoia_relay_queue_deliveries{state="pending"}"#),
        Some(0.0),
        "{before}"
    );

    for n in 0..3 {
        assert_eq!(app.post_event(&alert_event(n)).await.status(), 202);
    }
    assert_eq!(app.post_event(&alert_event(0)).await.status(), 200);
    assert_eq!(app.post_raw("not json", None).await.status(), 400);
    let unknown = app
        .client
        .post(format!("{}/hooks/not-a-configured-hook-id", app.address))
        .json(&alert_event(9))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    wait_for(&app.chat, "/teams", 3, WAIT).await;
    wait_for(&app.chat, "/slack", 3, WAIT).await;
    // The outcome is counted right after the send returns: give it a moment.
    let text = scrape_until(
        &app,
        &[
            (
                r#"sekoia_relay_deliveries_total{target="slack",outcome="delivered"}"#,
                3.0,
            ),
            (r#"sekoia_relay_queue_deliveries{state="pending"}"#, 0.0),
            (r#"sekoia_relay_queue_deliveries{state="inflight"}"#, 0.0),
        ],
    )
    .await;

    for (sample, want) in [
        (
            r#"sekoia_relay_events_received_total{hook="soc",outcome="accepted"}"#,
            3.0,
        ),
        (
            r#"sekoia_relay_events_received_total{hook="soc",outcome="duplicate"}"#,
            1.0,
        ),
        (
            r#"sekoia_relay_events_received_total{hook="soc",outcome="rejected_4xx"}"#,
            1.0,
        ),
        (
            r#"sekoia_relay_events_received_total{hook="(unknown)",outcome="rejected_4xx"}"#,
            1.0,
        ),
        (
            r#"sekoia_relay_deliveries_total{target="teams",outcome="delivered"}"#,
            3.0,
        ),
        (
            r#"sekoia_relay_delivery_attempts_total{target="teams"}"#,
            3.0,
        ),
        (
            r#"sekoia_relay_delivery_latency_seconds_count{target="teams"}"#,
            3.0,
        ),
        (r#"sekoia_relay_enrichments_total{outcome="enriched"}"#, 6.0),
        (r#"sekoia_relay_enrichment_duration_seconds_count"#, 6.0),
        (r#"sekoia_relay_queue_deliveries{state="pending"}"#, 0.0),
        (r#"sekoia_relay_queue_deliveries{state="dead"}"#, 0.0),
        (r#"sekoia_relay_template_fallbacks_total"#, 0.0),
    ] {
        assert_eq!(metric(&text, sample), Some(want), "{sample} in\n{text}");
    }
    // Names only: no hook id, no target path.
    assert!(!text.contains(HOOK_ID), "{text}");
    assert!(!text.contains("not-a-configured"), "{text}");
    assert!(
        !text.contains("/teams") && !text.contains(&app.chat.uri()),
        "{text}"
    );
}

#[tokio::test]
async fn retries_and_dead_letters_show_in_outcomes_and_queue_depth() {
    let app = TestApp::spawn().await;
    mount_alert(&app.sekoia).await;
    Mock::given(method("POST"))
        .and(path("/teams"))
        .respond_with(ResponseTemplate::new(400).set_body_string("bad card"))
        .mount(&app.chat)
        .await;
    Mock::given(method("POST"))
        .and(path("/slack"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&app.chat)
        .await;

    assert_eq!(app.post_event(&alert_event(1)).await.status(), 202);
    // max_attempts = 5 in the test config: the slack delivery is retried, then dead.
    wait_for(&app.chat, "/slack", 5, WAIT).await;
    let text = scrape_until(
        &app,
        &[
            (r#"sekoia_relay_queue_deliveries{state="dead"}"#, 2.0),
            (r#"sekoia_relay_queue_deliveries{state="inflight"}"#, 0.0),
        ],
    )
    .await;
    for (sample, want) in [
        (
            r#"sekoia_relay_deliveries_total{target="teams",outcome="dead"}"#,
            1.0,
        ),
        (
            r#"sekoia_relay_deliveries_total{target="slack",outcome="retry"}"#,
            4.0,
        ),
        (
            r#"sekoia_relay_deliveries_total{target="slack",outcome="dead"}"#,
            1.0,
        ),
        (
            r#"sekoia_relay_delivery_attempts_total{target="slack"}"#,
            5.0,
        ),
        (r#"sekoia_relay_queue_deliveries{state="pending"}"#, 0.0),
    ] {
        assert_eq!(metric(&text, sample), Some(want), "{sample} in\n{text}");
    }
    assert_eq!(
        metric(
            &text,
            r#"sekoia_relay_delivery_latency_seconds_count{target="slack"}"#
        ),
        None,
        "no 2xx, no latency sample"
    );
}

#[tokio::test]
async fn enrichment_failures_are_counted_as_unavailable() {
    let app = TestApp::spawn().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&app.sekoia)
        .await;
    mount_chat_ok(&app.chat).await;
    assert_eq!(app.post_event(&alert_event(1)).await.status(), 202);
    wait_for(&app.chat, "/slack", 1, WAIT).await;
    wait_for(&app.chat, "/teams", 1, WAIT).await;
    let text = scrape_until(
        &app,
        &[(
            r#"sekoia_relay_enrichments_total{outcome="unavailable"}"#,
            2.0,
        )],
    )
    .await;
    assert_eq!(
        metric(
            &text,
            r#"sekoia_relay_enrichments_total{outcome="enriched"}"#
        ),
        Some(0.0)
    );
}

/// Scrape until every `(sample, value)` holds (counters move just after the mocks see a
/// request, and the queue gauges once the outcome is recorded in the store).
async fn scrape_until(app: &TestApp, want: &[(&str, f64)]) -> String {
    let start = std::time::Instant::now();
    loop {
        let text = app.scrape().await;
        let done = want.iter().all(|(s, v)| metric(&text, s) == Some(*v));
        if done || start.elapsed() > WAIT {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `server.metrics_listen` moves `/metrics` to its own listener: the public one (what a
/// tunnel forwards) answers 404 for it, and still serves hooks.
#[tokio::test]
async fn metrics_listen_serves_metrics_apart_from_the_public_listener() {
    let sekoia = wiremock::MockServer::start().await;
    let chat = wiremock::MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&sekoia.uri(), &chat.uri(), dir.path(), DEFAULT_ROUTING).replace(
        "log_format = \"json\"",
        "log_format = \"json\"\nmetrics_listen = \"127.0.0.1:0\"",
    );
    let app = TestApp::start_text(sekoia, chat, dir, &text).await;
    let public = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    let private = app.metrics_address.clone().expect("a metrics listener");
    let r = app
        .client
        .get(format!("{private}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("sekoia_relay_queue_deliveries"));
    let hook = app
        .client
        .post(format!("{private}/hooks/{HOOK_ID}"))
        .json(&alert_event(1))
        .send()
        .await
        .unwrap();
    assert_eq!(
        hook.status(),
        404,
        "the metrics listener serves nothing else"
    );
    app.shutdown().await;
}

/// With a `public_url`, startup warns about the public demo hook id and about `/metrics` on
/// the public listener (the same warnings as `check`).
#[tokio::test]
async fn startup_warns_about_the_demo_hook_and_public_metrics_under_a_public_url() {
    let sekoia = wiremock::MockServer::start().await;
    let chat = wiremock::MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let text = config_text(&sekoia.uri(), &chat.uri(), dir.path(), DEFAULT_ROUTING).replace(
        "log_format = \"json\"",
        "log_format = \"json\"\npublic_url = \"https://relay.example.test\"",
    );
    std::fs::write(&config, text).unwrap();
    let relay = RelayProcess::start(&config, &[]);
    let out = relay.stop().await.join("\n");
    assert!(out.contains("hook \\\"soc\\\" uses the demo id"), "{out}");
    assert!(out.contains("set server.metrics_listen"), "{out}");
}
