//! Test support shared by the unit tests and `tests/api`: sample events and throw-away
//! PostgreSQL databases. Not part of the relay's behaviour.
//!
//! PostgreSQL tests run against `SEKOIA_RELAY_TEST_PG` (an admin URL) or, when unset, the
//! local server at 127.0.0.1:5432 (user postgres, database test). When neither answers they
//! are skipped with one line on stderr, unless `SEKOIA_RELAY_REQUIRE_PG=1` (CI), which makes
//! an unreachable server a failure.

use std::io::Write;
use std::sync::Once;

use super::NewEvent;

pub const PG_URL_ENV: &str = "SEKOIA_RELAY_TEST_PG";
pub const REQUIRE_PG_ENV: &str = "SEKOIA_RELAY_REQUIRE_PG";
const LOCAL_PG: &str = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable";

pub fn event(key: &str, targets: &[&str]) -> NewEvent {
    NewEvent {
        hook: "soc".into(),
        dedup_key: key.into(),
        kind: "alert".into(),
        action: "created".into(),
        alert_uuid: Some("u".into()),
        short_id: Some("AL1".into()),
        body: "{}".into(),
        targets: targets.iter().map(|t| t.to_string()).collect(),
        dedup_window_ms: 60_000,
    }
}

/// A database of its own for one test, dropped (with its connections) when this is dropped.
pub struct TestDb {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDb {
    /// A fresh database, or `None` (after saying so once) when no PostgreSQL is reachable.
    pub async fn create() -> Option<TestDb> {
        let admin_url = std::env::var(PG_URL_ENV).unwrap_or_else(|_| LOCAL_PG.to_string());
        let admin = match super::postgres::connect_one(&admin_url).await {
            Ok(c) => c,
            Err(e) => {
                let required = std::env::var(REQUIRE_PG_ENV).is_ok_and(|v| v == "1");
                assert!(
                    !required,
                    "{REQUIRE_PG_ENV}=1 but PostgreSQL is unreachable at {}: {e}",
                    super::redacted_url(&admin_url)
                );
                static SAID: Once = Once::new();
                SAID.call_once(|| {
                    // Straight to stderr: the test harness captures print!/eprint! output.
                    let _ = writeln!(
                        std::io::stderr(),
                        "note: PostgreSQL tests skipped: no server at {} ({e}); start one or set {PG_URL_ENV}=postgres://… (and {REQUIRE_PG_ENV}=1 to make this a failure)",
                        super::redacted_url(&admin_url)
                    );
                });
                return None;
            }
        };
        let name = format!("relay_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("CREATE DATABASE");
        let mut url = url::Url::parse(&admin_url).expect("admin URL");
        url.set_path(&name);
        Some(TestDb {
            admin_url,
            url: url.to_string(),
            name,
        })
    }

    /// The URL of this test's database.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A plain connection to this test's database.
    pub async fn connect(&self) -> tokio_postgres::Client {
        super::postgres::connect_one(&self.url)
            .await
            .expect("connect to the test database")
    }

    /// Cut every connection to this database, as a PostgreSQL restart or failover would.
    pub async fn terminate_connections(&self) {
        let admin = super::postgres::connect_one(&self.admin_url)
            .await
            .expect("admin connection");
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                &[&self.name],
            )
            .await
            .expect("pg_terminate_backend");
    }

    /// Refuse (or allow again) new connections to this database.
    pub async fn allow_connections(&self, allow: bool) {
        let admin = super::postgres::connect_one(&self.admin_url)
            .await
            .expect("admin connection");
        admin
            .batch_execute(&format!(
                "ALTER DATABASE {} WITH ALLOW_CONNECTIONS {allow}",
                self.name
            ))
            .await
            .expect("ALTER DATABASE");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop may run inside a runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(admin) = super::postgres::connect_one(&admin_url).await {
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}
