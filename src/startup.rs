//! The one startup seam: `main` and the tests build and run the daemon here.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::http::{configure_routes, AppState};
use crate::metrics::Metrics;
use crate::signature::Verifier;
use crate::store::{Routing, Store, StoreOptions};

/// A built daemon: listener bound, database open, not yet serving.
pub struct Application {
    addr: SocketAddr,
    server: actix_web::dev::Server,
    store: Store,
    settings: Settings,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    wake_worker: Arc<tokio::sync::Notify>,
}

/// Store options from the settings.
pub fn store_options(settings: &Settings) -> StoreOptions {
    StoreOptions {
        path: settings.storage.path.clone(),
        synchronous: settings.storage.synchronous,
        busy_timeout: settings.storage.busy_timeout,
    }
}

/// Which jobs each new event gets.
pub fn routing(settings: &Settings) -> Routing {
    Routing {
        enrich: settings.opensteer.is_some(),
        hooks: settings
            .hooks
            .iter()
            .map(|h| (h.name.clone(), h.events.clone()))
            .collect(),
    }
}

/// Opens the store for a CLI command (no listener, no worker).
pub fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    Store::open(store_options(settings), routing(settings)).with_context(|| {
        format!(
            "cannot open the database {} (storage.path)",
            settings.storage.path.display()
        )
    })
}

impl Application {
    /// Builds with the system clock.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, Arc::new(SystemClock)).await
    }

    /// Binds `server.listen` (port 0 picks one), opens and migrates the
    /// database, and prepares the HTTP server. Nothing is served until
    /// [`Application::run_until_stopped`].
    pub async fn build_with(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.server.listen).with_context(|| {
            format!(
                "cannot listen on {} (server.listen)",
                settings.server.listen
            )
        })?;
        let addr = listener.local_addr()?;
        let store = open_store(&settings)?;
        let metrics = Arc::new(Metrics::new());
        let wake_worker = Arc::new(tokio::sync::Notify::new());
        let state = AppState {
            verifier: Verifier::new(
                settings.webhook.secrets.clone(),
                settings.webhook.tolerance_secs,
            ),
            store: store.clone(),
            clock: clock.clone(),
            max_body_bytes: settings.server.max_body_bytes,
            body_timeout: settings.server.body_timeout,
            trusted_proxies: Arc::new(settings.server.trusted_proxies.clone()),
            metrics: metrics.clone(),
            wake_worker: wake_worker.clone(),
        };
        let path = settings.server.webhook_path.clone();
        let max_body = settings.server.max_body_bytes;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .app_data(web::PayloadConfig::new(max_body))
                .configure(|cfg| configure_routes(cfg, &path))
        })
        .listen(listener)?
        // Our own token stops the server; actix's handlers would treat SIGINT as a hard stop.
        .disable_signals()
        .workers(settings.server.workers)
        .client_request_timeout(settings.server.header_timeout)
        .client_disconnect_timeout(std::time::Duration::from_secs(1))
        .shutdown_timeout(30)
        .run();
        Ok(Self {
            addr,
            server,
            store,
            settings,
            clock,
            metrics,
            wake_worker,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The database handle.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `shutdown` fires, then stops accepting, finishes in-flight
    /// requests and returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            server,
            store,
            settings,
            clock,
            metrics,
            wake_worker,
            addr,
        } = self;
        let _ = (&settings, &clock, &metrics, &wake_worker, &store);
        let handle = server.handle();
        let server_task = tokio::spawn(server);
        // systemd hears READY=1 only now: listener bound, database open.
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        tracing::info!(%addr, "steerhook is listening");
        shutdown.cancelled().await;
        tracing::info!("shutting down: no new connections; finishing requests in flight");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        handle.stop(true).await;
        server_task
            .await
            .context("the HTTP server task failed")?
            .context("the HTTP server failed")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The process environment as a map, for [`Settings::load`].
pub fn process_env() -> HashMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}
