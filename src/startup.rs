//! The one startup seam: `main` and the tests build and run the daemon here.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::clock::{Clock, SystemClock};
use crate::config::{Settings, StorageBackend};
use crate::dispatch::{Dispatcher, WorkerRuntime};
use crate::http::{configure_routes, AppState};
use crate::metrics::Metrics;
use crate::signature::Verifier;
use crate::store::{HookConfig, Routing, Store};

/// A built daemon: listener bound, database open, not yet serving.
pub struct Application {
    addr: SocketAddr,
    server: actix_web::dev::Server,
    store: Store,
    settings: Settings,
    clock: Arc<dyn Clock>,
    dispatcher: Arc<Dispatcher>,
    run_worker: bool,
    _instance_lock: std::fs::File,
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

/// Where the configuration says the database is, for messages.
pub fn database_location(settings: &Settings) -> String {
    match settings.storage.backend {
        StorageBackend::Sqlite => format!("{} (storage.path)", settings.storage.path.display()),
        StorageBackend::Postgres => format!(
            "{} (storage.url)",
            settings.storage.url.as_ref().map_or_else(String::new, |u| {
                crate::store::redacted_postgres_url(u.expose())
            })
        ),
    }
}

/// Opens (creating or migrating) the database as `serve` does.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    Store::open(&settings.storage, routing(settings))
        .await
        .with_context(|| format!("cannot open the database {}", database_location(settings)))
}

/// Opens the database for a command that reads it: never creates one.
pub async fn open_existing_store(settings: &Settings) -> anyhow::Result<Store> {
    Store::open_existing(&settings.storage)
        .await
        .with_context(|| format!("cannot open the database {}", database_location(settings)))
}

/// What identifies this daemon's hook configuration among the daemons of a
/// shared database: its host and listen address.
fn daemon_identity(settings: &Settings) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}/{}", settings.server.listen)
}

/// A digest per hook of everything that decides what it does (secrets
/// included only as their redacted form: a changed token is not a changed
/// hook).
fn hook_configs(settings: &Settings) -> Vec<HookConfig> {
    use sha2::{Digest, Sha256};
    settings
        .hooks
        .iter()
        .map(|h| HookConfig {
            name: h.name.clone(),
            config_hash: hex::encode(Sha256::digest(format!("{h:?}").as_bytes())),
        })
        .collect()
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
        let instance_lock = lock_instance(&settings)?;
        let store = open_store(&settings).await?;
        if store.is_shared() {
            let differences = store
                .register_hooks(
                    hook_configs(&settings),
                    daemon_identity(&settings),
                    clock.now_ms(),
                )
                .await
                .context("cannot record this daemon's hooks in the database")?;
            for d in differences {
                tracing::warn!(
                    "HOOK CONFIGURATION DIFFERS BETWEEN DAEMONS ON THIS DATABASE: {d}; daemons sharing a database should run the same [[hook]] sections, or an event's deliveries depend on which daemon claims them"
                );
            }
        }
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
        let dispatcher = Arc::new(
            Dispatcher::new(
                &settings,
                store.clone(),
                clock.clone(),
                metrics.clone(),
                wake_worker.clone(),
                payload_dir(&settings),
            )
            .context("cannot prepare the worker")?,
        );
        // Payload files of attempts a kill -9 cut short: the instance lock
        // covers this directory (the SQLite file's, or with PostgreSQL the
        // payload directory's own), so no attempt of any process owns one,
        // and none of ours has started.
        let payloads = payload_dir(&settings);
        match crate::hooks::remove_orphan_payload_files(&payloads) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                files = n,
                dir = %payloads.display(),
                "removed payload files left by attempts that were killed"
            ),
            Err(e) => tracing::warn!(
                dir = %payloads.display(),
                error = %e,
                "cannot remove payload files left by killed attempts; they hold event data: remove them by hand"
            ),
        }
        // Jobs a killed process left running go back in the queue before
        // anything is served: only one `serve` owns a SQLite database (the
        // lock); on a shared database their leases say when they are free.
        dispatcher
            .recover_interrupted()
            .await
            .context("cannot recover interrupted jobs")?;
        let path = settings.server.webhook_path.clone();
        // `max_body_bytes` is enforced where the body is read (the webhook
        // handler reads a raw `web::Payload`, which no extractor config limits).
        let server = HttpServer::new(move || {
            // Runs once on each worker thread, inside its `LocalSet`.
            state.store.serve_answers_on_this_thread();
            App::new()
                .app_data(web::Data::new(state.clone()))
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
        let run_worker = !settings.queue.paused;
        Ok(Self {
            addr,
            server,
            store,
            settings,
            clock,
            dispatcher,
            run_worker,
            _instance_lock: instance_lock,
        })
    }

    /// Leaves the worker loop off, so a test can drive
    /// [`Dispatcher::try_dispatch_next`] one step at a time.
    pub fn without_worker(mut self) -> Self {
        self.run_worker = false;
        self
    }

    /// Replaces the sink of the hook `name` before the app runs (for tests
    /// that need a failure no real hook produces). False when there is no
    /// such hook, or the worker has already been handed out.
    pub fn replace_sink(&mut self, name: &str, sink: Arc<dyn crate::hooks::Sink>) -> bool {
        Arc::get_mut(&mut self.dispatcher).is_some_and(|d| d.replace_sink(name, sink))
    }

    /// The worker.
    pub fn dispatcher(&self) -> Arc<Dispatcher> {
        self.dispatcher.clone()
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
            dispatcher,
            run_worker,
            addr,
            _instance_lock,
        } = self;
        let handle = server.handle();
        // Every task is aborted if this future is dropped (a test that
        // simulates a crash, or a panic), so nothing outlives the daemon.
        let server_task = AbortOnDropHandle::new(tokio::spawn(server));
        let worker_stop = CancellationToken::new();
        if run_worker {
            // Work queued by other daemons on a shared database wakes ours.
            store.watch_for_work(dispatcher.waker(), worker_stop.clone());
        }
        // The worker runs on threads of its own, queue.nice below these
        // (dispatch::runtime); dropped last, once the worker has ended.
        let worker_runtime = run_worker
            .then(|| WorkerRuntime::start(settings.queue.nice))
            .transpose()
            .context("cannot start the worker's threads")?;
        let worker = worker_runtime.as_ref().map(|runtime| {
            AbortOnDropHandle::new(
                runtime
                    .handle()
                    .spawn(dispatcher.clone().run(worker_stop.clone())),
            )
        });
        let pruner = AbortOnDropHandle::new(tokio::spawn(prune_periodically(
            store.clone(),
            clock.clone(),
            settings.storage.retention,
            settings.storage.prune_interval,
            worker_stop.clone(),
        )));
        // systemd hears READY=1 only now: listener bound, database open.
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        let mut watchdog = None;
        let mut watchdog_usec = 0;
        if sd_notify::watchdog_enabled(false, &mut watchdog_usec) {
            watchdog = Some(AbortOnDropHandle::new(tokio::spawn(feed_watchdog(
                std::time::Duration::from_micros(watchdog_usec),
                store.clone(),
                run_worker.then(|| dispatcher.clone()),
                worker_stop.clone(),
            ))));
        }
        tracing::info!(%addr, "steerhook is listening");
        if settings.example_secret_exposed() {
            tracing::warn!(
                listen = %settings.server.listen,
                "webhook.secrets holds the example secret of config.example.toml, which anyone can read, and server.listen is not a loopback address: anyone can sign webhooks to this daemon; use the secret your Opensteer runs are queued with"
            );
        }
        if settings.queue.paused {
            tracing::warn!("queue.paused = true: events are stored but no hook runs until it is false and the daemon restarted");
        }
        // A worker that ends by itself has panicked (it only returns when
        // told to stop): the daemon stops too, with an error, so that systemd
        // restarts it rather than leave a daemon that accepts events and
        // never delivers them.
        let mut worker = worker;
        let worker_died = match worker.as_mut() {
            Some(w) => tokio::select! {
                () = shutdown.cancelled() => None,
                ended = w => Some(ended),
            },
            None => {
                shutdown.cancelled().await;
                None
            }
        };
        if let Some(ended) = &worker_died {
            tracing::error!(
                error = %ended.as_ref().err().map(ToString::to_string).unwrap_or_default(),
                "the worker stopped unexpectedly; shutting down so that the service manager restarts steerhook"
            );
            worker = None;
        }
        tracing::info!("shutting down: no new connections; finishing requests in flight");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        handle.stop(true).await;
        let served = server_task.await;
        // Requests are answered; now the worker gets its grace period.
        worker_stop.cancel();
        let died = worker_died.is_some();
        let worker_result = match (worker_died, worker) {
            (Some(ended), _) => Some(ended),
            (None, Some(w)) => Some(w.await),
            (None, None) => None,
        };
        let _ = pruner.await;
        drop(watchdog);
        served
            .context("the HTTP server task failed")?
            .context("the HTTP server failed")?;
        if let Some(Err(e)) = worker_result {
            return Err(anyhow::anyhow!("the worker failed: {e}"));
        }
        if died {
            anyhow::bail!("the worker stopped before it was told to");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Where hook payload files are written: `storage.payload_dir`, else a
/// private directory beside the SQLite file (`<db>.payloads`, see
/// [`crate::instance::payload_dir`]), or `steerhook.payloads` in the working
/// directory with PostgreSQL.
pub fn payload_dir(settings: &Settings) -> std::path::PathBuf {
    if let Some(dir) = &settings.storage.payload_dir {
        return dir.clone();
    }
    match settings.storage.backend {
        // A path that does not resolve has already stopped `build` at the lock.
        StorageBackend::Sqlite => crate::instance::payload_dir(&settings.storage.path)
            .unwrap_or_else(|_| {
                let mut p = settings.storage.path.clone().into_os_string();
                p.push(".payloads");
                p.into()
            }),
        StorageBackend::Postgres => "steerhook.payloads".into(),
    }
}

/// Takes the instance lock: with SQLite one `serve` per database, since
/// `serve` puts jobs found running back in the queue at start; with
/// PostgreSQL one per payload directory, since each daemon removes the
/// payload files it finds there at start.
fn lock_instance(settings: &Settings) -> anyhow::Result<std::fs::File> {
    match settings.storage.backend {
        StorageBackend::Sqlite => crate::instance::lock(&settings.storage.path),
        StorageBackend::Postgres => crate::instance::lock_payload_dir(&payload_dir(settings)),
    }
}

/// Sends WATCHDOG=1 at half the interval, but only while the database writer
/// answers and the worker loop goes round: a wedged daemon gets restarted.
async fn feed_watchdog(
    interval: std::time::Duration,
    store: Store,
    worker: Option<Arc<Dispatcher>>,
    stop: CancellationToken,
) {
    let every = interval / 2;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {},
            _ = stop.cancelled() => return,
        }
        let writer_ok = tokio::time::timeout(every, store.ping_writer())
            .await
            .is_ok_and(|r| r.is_ok());
        // The idle worker loop goes round at least every `idle_poll`, so
        // allow four of those.
        let worker_ok = worker
            .as_ref()
            .is_none_or(|w| w.alive_within(interval.max(w.idle_poll() * 4)));
        if writer_ok && worker_ok {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        } else {
            tracing::error!(
                writer_ok,
                worker_ok,
                "not feeding the systemd watchdog: a part of the daemon is stuck"
            );
        }
    }
}

/// Deletes finished events past retention every `interval` until `stop`.
async fn prune_periodically(
    store: Store,
    clock: Arc<dyn Clock>,
    retention: std::time::Duration,
    interval: std::time::Duration,
    stop: CancellationToken,
) {
    loop {
        let cutoff = clock.now_ms() - retention.as_millis() as i64;
        match store.prune(cutoff, false).await {
            Ok(p) if p == crate::store::Pruned::default() => {}
            Ok(p) if p.failed_events > 0 => tracing::warn!(
                events = p.events,
                failed_events = p.failed_events,
                quarantined = p.quarantined,
                "pruned past retention, with events whose failed deliveries were never replayed (storage.retention_days)"
            ),
            Ok(p) => {
                tracing::info!(
                    events = p.events,
                    quarantined = p.quarantined,
                    "pruned past retention"
                )
            }
            Err(e) => tracing::warn!(error = %e, "pruning failed; will try again"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {},
            _ = stop.cancelled() => return,
        }
    }
}

/// The process environment as a map, for [`Settings::load`].
pub fn process_env() -> HashMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}
