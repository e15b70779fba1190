//! The state the stages share: the config-derived [`Runtime`] (swapped whole on reload) and
//! the [`AppState`] the HTTP handlers read. Depends on the stages' types only, never on a
//! route or a worker, so routes, delivery and reload import it while [`crate::startup`] wires.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::chatapp::signing::ReplayGuard;
use crate::configuration::{HookSettings, Settings};
use crate::metrics::Metrics;
use crate::render::{RenderError, Renderer};
use crate::routing::{Router, RoutingError};
use crate::store::Store;
use crate::telemetry::RefusalLog;

/// What can be wrong with a config once it has loaded: its templates or its routing rules.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("templates: {0}")]
    Render(#[from] RenderError),
    #[error("routing: {0}")]
    Routing(#[from] RoutingError),
}

/// A hook ready to serve: its settings and the targets its deliveries are created for.
pub struct HookEntry {
    pub settings: HookSettings,
    pub targets: Vec<String>,
}

/// The config-derived part of the relay, swapped as a whole on reload.
pub struct Runtime {
    pub settings: Arc<Settings>,
    pub renderer: Arc<Renderer>,
    pub router: Router,
    hooks_by_id: HashMap<String, HookEntry>,
}

impl Runtime {
    /// Compile everything the config needs (templates included). Fails without side effects,
    /// so a bad reload leaves the running config in place.
    pub fn build(settings: Settings) -> Result<Runtime, RuntimeError> {
        let renderer = Arc::new(Renderer::new(&settings)?);
        let router = Router::new(&settings)?;
        let hooks_by_id = settings
            .hooks
            .iter()
            .map(|h| {
                (
                    h.id.clone(),
                    HookEntry {
                        settings: h.clone(),
                        targets: h.candidate_targets(),
                    },
                )
            })
            .collect();
        Ok(Runtime {
            settings: Arc::new(settings),
            renderer,
            router,
            hooks_by_id,
        })
    }

    pub fn hook_by_id(&self, id: &str) -> Option<&HookEntry> {
        self.hooks_by_id.get(id)
    }
}

/// State shared by the HTTP handlers.
pub struct AppState {
    runtime: Arc<ArcSwap<Runtime>>,
    pub store: Store,
    pub wake: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    /// Paces the log lines about refused posts (a flood must not fill the disk).
    pub refusals: RefusalLog,
    /// Slack press signatures seen in the last 5 minutes by this server (one guard per
    /// server, not per process: two relays in one process must not refuse each other's presses).
    pub slack_replays: ReplayGuard,
}

impl AppState {
    pub fn new(
        runtime: Arc<ArcSwap<Runtime>>,
        store: Store,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> AppState {
        AppState {
            runtime,
            store,
            wake,
            metrics,
            refusals: RefusalLog::new(),
            slack_replays: ReplayGuard::default(),
        }
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }
}
