//! Micro-benchmarks of the hot path, stage by stage: parse + validate + dedup key, render per
//! target kind, store append (group commit) and the retry-policy math.
//!
//! Run with `cargo bench --bench pipeline`. End-to-end throughput is measured by the load test
//! in `bench/` (see docs/benchmarks.md), not here.

use std::path::Path;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sekoia_relay::configuration::{self, SyncMode};
use sekoia_relay::delivery::policy;
use sekoia_relay::domain::event::{dedup_key, WebhookEvent};
use sekoia_relay::domain::TargetKind;
use sekoia_relay::render::{RenderInput, Renderer};
use sekoia_relay::retry::{parse_retry_after, Jitter, RetryPolicy};
use sekoia_relay::store::{NewEvent, SqliteStore};

const EVENT: &str = include_str!("../tests/fixtures/webhook-alert-created.json");
const ALERT: &str = include_str!("../tests/fixtures/alert.json");
const HOSTILE: &str = include_str!("../tests/fixtures/alert-hostile.json");

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_validate_dedup_key", |b| {
        b.iter(|| {
            let e = WebhookEvent::parse(EVENT.as_bytes()).expect("valid");
            dedup_key("soc", &e, EVENT.as_bytes())
        })
    });
    g.finish();
}

fn render(c: &mut Criterion) {
    let mut toml = String::new();
    for kind in TargetKind::ALL {
        // Each kind with the keys it requires (the bench broke when kinds with other keys
        // were added: it is not run by CI, only compiled).
        let keys = match kind {
            TargetKind::SlackApp => "token = \"xoxb-1-2-x\"\nchannel = \"C0123456789\"\n".to_string(),
            TargetKind::MattermostApp => "url = \"https://example.test\"\ntoken = \"abcdefghijklmnopqrstuvwxyz\"\nchannel_id = \"abcdefghijklmnopqrstuvwxyz\"\n".to_string(),
            TargetKind::PagerDuty => "routing_key = \"0123456789abcdef0123456789abcdef\"\n".to_string(),
            k => format!("url = \"https://example.test/{k}\"\n"),
        };
        toml.push_str(&format!(
            "[targets.{k}]\nkind = \"{k}\"\n{keys}",
            k = kind.as_str()
        ));
    }
    toml.push_str("[[hooks]]\nname = \"soc\"\nid = \"67a7472b-b43c-415d-b1ce-c135fb1dfb0e\"\ntargets = [\"console\"]\n");
    let settings = configuration::load_str(
        &toml,
        Path::new("bench.toml"),
        Path::new("."),
        &Default::default(),
    )
    .expect("bench config");
    let renderer = Renderer::new(&settings).expect("templates");
    let event: serde_json::Value = serde_json::from_str(EVENT).expect("json");
    let mut g = c.benchmark_group("render");
    g.throughput(Throughput::Elements(1));
    for (name, alert) in [("alert", ALERT), ("hostile", HOSTILE)] {
        let alert: serde_json::Value = serde_json::from_str(alert).expect("json");
        for kind in TargetKind::ALL {
            let input = RenderInput {
                changes: &[],
                event: &event,
                alert: Some(&alert),
                enrichment_error: None,
                hook_name: "soc",
                target_name: kind.as_str(),
                app_url: "https://app.sekoia.io",
            };
            g.bench_function(format!("{}/{name}", kind.as_str()), |b| {
                b.iter(|| renderer.render(kind.as_str(), &input).expect("renders"))
            });
        }
    }
    g.finish();
}

fn store(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut g = c.benchmark_group("store_append");
    g.sample_size(20);
    for (label, sync) in [("full", SyncMode::Full), ("normal", SyncMode::Normal)] {
        for batch in [1usize, 32, 256] {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = SqliteStore::open(&dir.path().join("bench.db"), sync).expect("store");
            let mut n = 0u64;
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_function(format!("{label}/concurrent_{batch}"), |b| {
                b.iter_batched(
                    || {
                        (0..batch)
                            .map(|_| {
                                n += 1;
                                NewEvent {
                                    hook: "soc".into(),
                                    dedup_key: format!("{n:064x}"),
                                    kind: "alert".into(),
                                    action: "created".into(),
                                    alert_uuid: Some(format!("{n}")),
                                    short_id: Some("ALEY4fqz8moo".into()),
                                    body: EVENT.to_string(),
                                    targets: vec!["teams".into(), "slack".into()],
                                    dedup_window_ms: 86_400_000,
                                }
                            })
                            .collect::<Vec<_>>()
                    },
                    |events| {
                        rt.block_on(async {
                            let tasks: Vec<_> = events
                                .into_iter()
                                .map(|e| {
                                    let s = store.clone();
                                    tokio::spawn(async move { s.ingest(e).await })
                                })
                                .collect();
                            for t in tasks {
                                t.await.expect("join").expect("ingest");
                            }
                        })
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    g.finish();
}

fn retry_policy(c: &mut Criterion) {
    let now = SystemTime::now();
    let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
    let mut g = c.benchmark_group("policy");
    let schedule = RetryPolicy::new(policy::DEFAULT_RETRY_SCHEDULE.to_vec(), Jitter::Half);
    g.bench_function("scheduled_delay", |b| {
        b.iter(|| schedule.delay(std::hint::black_box(7), 0.5))
    });
    g.bench_function("parse_retry_after_seconds", |b| {
        b.iter(|| parse_retry_after(std::hint::black_box("120"), now))
    });
    g.bench_function("parse_retry_after_date", |b| {
        b.iter(|| parse_retry_after(std::hint::black_box(&date), now))
    });
    g.bench_function("classify_teams_2xx", |b| {
        b.iter(|| policy::classify(TargetKind::Teams, 202, std::hint::black_box("")))
    });
    g.finish();
}

criterion_group!(benches, parse, render, store, retry_policy);
criterion_main!(benches);
