//! Fill a store with N pending deliveries, for the startup and backlog measurements in
//! `bench/startup.sh` (docs/benchmarks.md).
//!
//! `cargo run --release --example seed_store -- PATH N [TARGET]`

use std::path::PathBuf;

use sekoia_relay::configuration::SyncMode;
use sekoia_relay::store::{NewEvent, SqliteStore};

const EVENT: &str = include_str!("../tests/fixtures/webhook-alert-created.json");

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(
        args.next()
            .ok_or_else(|| anyhow::anyhow!("usage: seed_store PATH N [TARGET]"))?,
    );
    let n: usize = args.next().unwrap_or_else(|| "100000".into()).parse()?;
    let target = args.next().unwrap_or_else(|| "sink".into());
    let store = SqliteStore::open(&path, SyncMode::Normal)?;
    let mut done = 0;
    while done < n {
        let chunk = (n - done).min(4096);
        let tasks: Vec<_> = (done..done + chunk)
            .map(|i| {
                let store = store.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    store
                        .ingest(NewEvent {
                            hook: "bench".into(),
                            dedup_key: format!("seed-{i}"),
                            kind: "alert".into(),
                            action: "created".into(),
                            alert_uuid: Some(format!("seed-{i}")),
                            short_id: Some(format!("ALseed{i}")),
                            body: EVENT.to_string(),
                            targets: vec![target],
                            dedup_window_ms: 86_400_000,
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await??;
        }
        done += chunk;
    }
    println!(
        "seeded {n} pending deliveries for target {target:?} in {}",
        path.display()
    );
    Ok(())
}
