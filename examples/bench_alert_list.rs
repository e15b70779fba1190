//! The Alert API's list endpoint for the load test (`bench/loadtest.sh`, docs/benchmarks.md):
//! `GET /v1/sic/alerts?match[uuid]=a,b,…` answers `{"total", "items"}`, each item the alert of
//! `ALERT_JSON` with the uuid asked for, as SEKOIA.IO does. nginx, which serves every other
//! mock route, cannot build such an answer, so it passes this one route here.
//!
//! `cargo run --release --example bench_alert_list -- PORT ALERT_JSON`

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || anyhow::anyhow!("usage: bench_alert_list PORT ALERT_JSON");
    let port: u16 = args.next().ok_or_else(usage)?.parse()?;
    let alert: Value =
        serde_json::from_str(&std::fs::read_to_string(args.next().ok_or_else(usage)?)?)?;
    let alert = web::Data::new(alert);
    HttpServer::new(move || {
        App::new()
            .app_data(alert.clone())
            .route("/v1/sic/alerts", web::get().to(list))
            .route("/api/v1/sic/alerts", web::get().to(list))
    })
    .workers(1)
    .bind(("127.0.0.1", port))?
    .run()
    .await?;
    Ok(())
}

async fn list(req: HttpRequest, alert: web::Data<Value>) -> HttpResponse {
    let uuids = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "match[uuid]")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let items: Vec<Value> = uuids
        .split(',')
        .filter(|u| !u.is_empty())
        .map(|uuid| {
            let mut a = alert.get_ref().clone();
            a["uuid"] = json!(uuid);
            a
        })
        .collect();
    HttpResponse::Ok().json(json!({"total": items.len(), "items": items}))
}
