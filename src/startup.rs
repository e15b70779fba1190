//! Wiring: build every stage from the settings, bind the listener, run until told to stop.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{dev::Server, web, App, HttpServer};
use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::configuration::Settings;
use crate::delivery::{build_sender, Deliverer, DeliveryThreads};
use crate::metrics::Metrics;
use crate::reload::ReloadHandle;
use crate::routes;
use crate::sekoia::{AlertClient, SekoiaError};
use crate::state::{AppState, Runtime, RuntimeError};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("SEKOIA.IO client: {0}")]
    Sekoia(#[from] SekoiaError),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot start the delivery threads: {0}")]
    DeliveryThreads(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// The actix app: routes only, so tests could drive it without a socket. `/metrics` is
/// served here unless `server.metrics_listen` gives it a listener of its own.
pub fn build_app(
    state: web::Data<AppState>,
    serve_metrics: bool,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .route("/hooks/{id}", web::post().to(routes::hooks::receive))
        .route("/hooks/{id}", web::route().to(routes::method_not_allowed))
        .route(
            "/integrations/slack/actions",
            web::post().to(routes::integrations::slack_actions),
        )
        .route(
            "/integrations/mattermost/actions",
            web::post().to(routes::integrations::mattermost_actions),
        )
        .route("/healthz", web::get().to(routes::health::healthz))
        .route("/readyz", web::get().to(routes::health::readyz))
        .configure(|cfg| {
            if serve_metrics {
                cfg.route("/metrics", web::get().to(routes::metrics::metrics));
            }
        })
        .default_service(web::to(routes::not_found))
}

/// The app of `server.metrics_listen`: `/metrics` only.
fn build_metrics_app(
    state: web::Data<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .route("/metrics", web::get().to(routes::metrics::metrics))
        .default_service(web::to(routes::not_found))
}

pub struct Application {
    port: u16,
    server: Server,
    /// The `server.metrics_listen` server, when configured.
    metrics_server: Option<(Server, u16)>,
    deliverer: Arc<Deliverer>,
    /// Where deliveries run: threads of their own at a lower priority, so that acknowledging
    /// webhooks gets the cores first (`delivery::policy::delivery_threads`, `delivery::threads`).
    delivery_threads: DeliveryThreads,
    store: Store,
    runtime: Arc<ArcSwap<Runtime>>,
    grace: Duration,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    /// The settings the process started with: what restart-only keys still use.
    started: Arc<Settings>,
}

impl Application {
    /// Open the store, compile templates, bind the listener (port 0 picks a free port).
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        let store = Store::open(&settings).await?;
        tracing::info!(store = %store.describe(), "store open");
        let metrics = Arc::new(Metrics::new());
        let alerts = Arc::new(
            AlertClient::new(&settings.sekoia)?
                .with_metrics(metrics.clone())
                .with_shared_pacing(store.clone(), &settings.sekoia),
        );
        let sender = build_sender(&settings)?;
        let listen = settings.server.listen.clone();
        let metrics_listen = settings.server.metrics_listen.clone();
        for warning in crate::commands::check::exposure_warnings(&settings) {
            tracing::warn!("{warning}");
        }
        let grace = Duration::from_secs(settings.server.shutdown_grace_secs);
        let max_body = settings.server.max_body_bytes;
        let runtime = Arc::new(ArcSwap::from_pointee(Runtime::build(settings)?));
        let started = runtime.load().settings.clone();
        let wake = Arc::new(Notify::new());

        let threads = crate::delivery::policy::delivery_threads(
            started.delivery.threads,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        );
        let delivery_threads =
            DeliveryThreads::start(threads).map_err(StartupError::DeliveryThreads)?;
        let rt_for_delivery = runtime.clone();
        let deliverer = Deliverer::new(
            store.clone(),
            alerts,
            sender,
            Arc::new(move || rt_for_delivery.load_full()),
            wake.clone(),
            metrics.clone(),
        );

        let listener = TcpListener::bind(&listen).map_err(|source| StartupError::Bind {
            addr: listen.clone(),
            source,
        })?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let state = web::Data::new(AppState::new(
            runtime.clone(),
            store.clone(),
            wake.clone(),
            metrics.clone(),
        ));
        let serve_metrics = metrics_listen.is_empty();
        let main_state = state.clone();
        let server = HttpServer::new(move || build_app(main_state.clone(), serve_metrics))
            .listen(listener)
            .map_err(|source| StartupError::Bind {
                addr: listen.clone(),
                source,
            })?
            // Slow clients must not hold connections: headers within 5 s, idle keep-alive 30 s.
            .client_request_timeout(Duration::from_secs(5))
            .client_disconnect_timeout(Duration::from_secs(2))
            .keep_alive(Duration::from_secs(30))
            .max_connection_rate(256)
            .shutdown_timeout(grace.as_secs().max(1))
            .disable_signals()
            .run();
        tracing::info!(addr = %listen, port, max_body, "listening");
        let metrics_server = if serve_metrics {
            None
        } else {
            Some(metrics_server(&metrics_listen, state)?)
        };
        Ok(Application {
            port,
            server,
            metrics_server,
            deliverer,
            delivery_threads,
            store,
            runtime,
            grace,
            metrics,
            wake,
            started,
        })
    }

    /// What SIGHUP uses to swap in a new configuration; valid for the life of the process.
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle {
            runtime: self.runtime.clone(),
            deliverer: self.deliverer.clone(),
            metrics: self.metrics.clone(),
            wake: self.wake.clone(),
            started: self.started.clone(),
            lock: Default::default(),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of `server.metrics_listen`, when it is set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_server.as_ref().map(|(_, port)| *port)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serve and deliver until `shutdown` resolves, then stop accepting, drain in-flight
    /// deliveries within `shutdown_grace_secs`, and return.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let stop = CancellationToken::new();
        let handle = self.server.handle();
        let server = tokio::spawn(self.server);
        let metrics = self.metrics_server.map(|(s, _)| {
            let handle = s.handle();
            (handle, tokio::spawn(s))
        });
        let delivery = self
            .delivery_threads
            .spawn(self.deliverer.clone().run(stop.clone(), self.grace));
        let pruner = tokio::spawn(prune_loop(
            self.store.clone(),
            self.runtime.clone(),
            stop.clone(),
        ));

        shutdown.await;
        tracing::info!("shutting down: no longer accepting events");
        // Stop accepting first, so nothing is acknowledged that the drain below won't see.
        handle.stop(true).await;
        stop.cancel();
        let _ = delivery.await;
        let _ = pruner.await;
        let _ = server.await;
        if let Some((handle, task)) = metrics {
            handle.stop(true).await;
            let _ = task.await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The `/metrics`-only server on `addr` (small: a scraper or two).
fn metrics_server(addr: &str, state: web::Data<AppState>) -> Result<(Server, u16), StartupError> {
    let bind_error = |source| StartupError::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).map_err(bind_error)?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let server = HttpServer::new(move || build_metrics_app(state.clone()))
        .listen(listener)
        .map_err(bind_error)?
        .workers(1)
        .client_request_timeout(Duration::from_secs(5))
        .keep_alive(Duration::from_secs(30))
        .disable_signals()
        .run();
    tracing::info!(addr = %addr, port, "metrics listening");
    Ok((server, port))
}

/// Hourly: drop finished rows older than `retention_days` (kept for inspection until then).
async fn prune_loop(store: Store, runtime: Arc<ArcSwap<Runtime>>, stop: CancellationToken) {
    loop {
        let rt = runtime.load_full();
        let keep = &rt.settings.store;
        let window_days = keep
            .retention_days
            .max(keep.dedup_window_secs.div_ceil(86400));
        let cutoff = crate::store::now_ms() - (window_days as i64) * 86_400_000;
        match store.prune(cutoff).await {
            Ok(n) if n > 0 => tracing::info!(rows = n, "pruned finished deliveries"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "prune failed"),
        }
        // Living chat messages expire with the same retention (issue 11).
        match store.prune_message_refs(cutoff).await {
            Ok(n) if n > 0 => tracing::info!(rows = n, "pruned chat message references"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "prune of chat message references failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stop.cancelled() => return,
        }
    }
}
