//! The app as a test sees it: built through the one startup seam from a
//! [`Config`], on a [`Sandbox`]'s database, run on a task as `main` runs it,
//! talked to over HTTP.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use steerhook::clock::{Clock, ManualClock, SystemClock};
use steerhook::config::Settings;
use steerhook::dispatch::{Dispatcher, Outcome};
use steerhook::startup::Application;
use steerhook::store::{ClaimedJob, JobNext};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::{write_config_file, Config};
use super::db::{Backend, TestDb};
use super::poll::wait_for_async;
use super::sandbox::Sandbox;
use super::webhook::{http_client, run_event, Answer, Webhook};
use super::{DEADLINE, NOW_SECS, SECRET};

/// How the worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worker {
    /// Off: the test calls [`TestApp::step`].
    Stepped,
    /// The real loop of `serve`.
    Loop,
}

/// A manual clock at [`NOW_SECS`].
pub fn manual_clock() -> ManualClock {
    ManualClock::at_unix_secs(NOW_SECS)
}

/// Current unix seconds from the system clock.
pub fn system_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Tests that measure this process (RSS, CPU) run alone: every app holds a
/// read guard, a measuring test the write guard.
static EXCLUSIVE: LazyLock<Arc<RwLock<()>>> = LazyLock::new(|| Arc::new(RwLock::new(())));

/// Held for as long as an app (or a measuring test) lives.
pub enum Guard {
    /// Other tests may run.
    Shared(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    /// No other test's app runs.
    Exclusive(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

impl Guard {
    /// Runs alongside other tests.
    pub async fn shared() -> Guard {
        Guard::Shared(EXCLUSIVE.clone().read_owned().await)
    }

    /// Waits until no other test's app runs, and keeps them out.
    pub async fn exclusive() -> Guard {
        Guard::Exclusive(EXCLUSIVE.clone().write_owned().await)
    }
}

type Customize = Arc<dyn Fn(&mut Application) + Send + Sync>;

/// How to build a [`TestApp`]; cheap to clone, so a test restarts the same
/// app on the same sandbox with `builder.clone().spawn()`.
#[derive(Clone)]
pub struct TestAppBuilder {
    config: Config,
    sandbox: Option<Sandbox>,
    backend: Backend,
    clock: Option<ManualClock>,
    worker: Worker,
    customize: Option<Customize>,
    capture_logs: bool,
    exclusive: bool,
}

/// Forwards to the [`Config`] method of the same name.
macro_rules! config_methods {
    ($($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        $(#[$doc])*
        pub fn $name(mut self, $($arg: $ty),*) -> Self {
            self.config = self.config.$name($($arg),*);
            self
        }
    )*};
}

impl TestAppBuilder {
    config_methods! {
        /// `server.listen`.
        listen(addr: SocketAddr);
        /// `webhook.secrets` (the first one signs [`TestApp::post_signed`]).
        secrets(secrets: &[&str]);
        /// `webhook.tolerance_secs`.
        tolerance_secs(secs: u64);
        /// `[opensteer]` pointing at `base_url` with [`super::API_KEY`].
        opensteer(base_url: &str);
        /// `[smtp]` for the test SMTP server on `port`.
        smtp(port: u16);
        /// A `[[hook]]` table.
        hook(table: &str);
        /// Raw TOML after everything else.
        tail(toml: &str);
        /// Removes the `[[hook]]` tables added so far.
        without_hooks();
    }

    /// Raw lines for `[server]`.
    pub fn server(self, lines: &str) -> Self {
        self.lines("server", lines)
    }

    /// Raw lines for `[webhook]`.
    pub fn webhook(self, lines: &str) -> Self {
        self.lines("webhook", lines)
    }

    /// Raw lines for `[storage]` (beside the database's own).
    pub fn storage(self, lines: &str) -> Self {
        self.lines("storage", lines)
    }

    /// Raw lines for `[queue]`.
    pub fn queue(self, lines: &str) -> Self {
        self.lines("queue", lines)
    }

    /// Raw lines for `[opensteer]`.
    pub fn opensteer_lines(self, lines: &str) -> Self {
        self.lines("opensteer", lines)
    }

    /// Raw lines for `[smtp]`.
    pub fn smtp_lines(self, lines: &str) -> Self {
        self.lines("smtp", lines)
    }

    /// Raw lines for `[log]`.
    pub fn log(self, lines: &str) -> Self {
        self.lines("log", lines)
    }

    /// Raw lines for `[section]`.
    pub fn lines(mut self, section: &'static str, lines: &str) -> Self {
        self.config = self.config.lines(section, lines);
        self
    }

    /// A typed key of `[section]` (raw lines setting it win).
    pub fn set(mut self, section: &'static str, key: &str, toml_value: String) -> Self {
        self.config = self.config.set(section, key, toml_value);
        self
    }

    /// The configuration so far.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Runs on `sandbox` (its database and `out/`); without it the app gets
    /// a fresh sandbox of its own on [`TestAppBuilder::backend`].
    pub fn sandbox(mut self, sandbox: &Sandbox) -> Self {
        self.sandbox = Some(sandbox.clone());
        self
    }

    /// The backend of the app's own sandbox (SQLite unless told).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Runs on `clock` (default: a manual clock at [`NOW_SECS`]).
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Runs on the system clock.
    pub fn system_clock(mut self) -> Self {
        self.clock = None;
        self
    }

    /// How the worker runs (default: [`Worker::Loop`]).
    pub fn worker(mut self, worker: Worker) -> Self {
        self.worker = worker;
        self
    }

    /// The worker loop off: the test steps it ([`TestApp::step`]).
    pub fn stepped(self) -> Self {
        self.worker(Worker::Stepped)
    }

    /// Changes the built app before it runs (e.g. `replace_sink`).
    pub fn customize(mut self, f: impl Fn(&mut Application) + Send + Sync + 'static) -> Self {
        self.customize = Some(Arc::new(f));
        self
    }

    /// Installs the log capture ([`super::logs::captured_logs`]) first.
    pub fn capture_logs(mut self) -> Self {
        self.capture_logs = true;
        self
    }

    /// Waits until no other app of this test binary runs, and keeps them
    /// out while this one lives (for tests that measure the process).
    pub fn exclusive(mut self) -> Self {
        self.exclusive = true;
        self
    }

    /// Builds the app through the startup seam, runs it on a task, and
    /// waits until it serves `/healthz`.
    pub async fn spawn(self) -> TestApp {
        let guard = if self.exclusive {
            Guard::exclusive().await
        } else {
            Guard::shared().await
        };
        if self.capture_logs {
            super::logs::capture();
        }
        let sandbox = self
            .sandbox
            .unwrap_or_else(|| Sandbox::with_backend(self.backend));
        let toml = self.config.toml(&sandbox.db().storage_toml());
        let settings = Settings::from_toml(&toml)
            .unwrap_or_else(|e| panic!("the test configuration is refused: {e}\n{toml}"));
        super::instance::wait_for_instance_lock_release(&settings).await;
        let secret = settings
            .webhook
            .secrets
            .first()
            .map(|s| s.expose().to_owned())
            .unwrap_or_else(|| SECRET.to_owned());
        let webhook_path = settings.server.webhook_path.clone();
        let app_clock: Arc<dyn Clock> = match &self.clock {
            Some(c) => Arc::new(c.clone()),
            None => Arc::new(SystemClock),
        };
        let mut app = Application::build_with(settings, app_clock.clone())
            .await
            .unwrap_or_else(|e| panic!("the app builds: {e:#}"));
        if self.worker == Worker::Stepped {
            app = app.without_worker();
        }
        if let Some(customize) = &self.customize {
            customize(&mut app);
        }
        let addr = app.addr();
        let dispatcher = app.dispatcher();
        let running = Running::start(app);
        let base_url = format!("http://{addr}");
        let client = http_client();
        // Recovery of interrupted jobs is done by now (build_with); this
        // makes "spawned" mean "serving" too.
        wait_for_async(DEADLINE, "the app to serve /healthz", || {
            let r = client.get(format!("{base_url}/healthz")).send();
            async move { r.await.ok().filter(|r| r.status().is_success()) }
        })
        .await;
        // The test's connection is open before anything the test does.
        sandbox.db().connect();
        let webhook_url = format!("{base_url}{webhook_path}");
        TestApp {
            addr,
            webhook: Webhook::new(&webhook_url, &secret, app_clock),
            webhook_url,
            base_url,
            clock: self.clock,
            dispatcher,
            client,
            toml,
            running,
            sandbox,
            _guard: guard,
        }
    }
}

/// A running app. [`TestApp::stop`] is the SIGTERM; dropping it (or
/// [`TestApp::kill`]) is the kill -9: its task is aborted where it stands and
/// nothing gets to record anything.
pub struct TestApp {
    /// The bound address.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:port`.
    pub base_url: String,
    /// `base_url` + the webhook path.
    pub webhook_url: String,
    /// The worker (also usable while the loop runs).
    pub dispatcher: Arc<Dispatcher>,
    /// An HTTP client with a timeout, so a hang fails the test.
    pub client: reqwest::Client,
    webhook: Webhook,
    clock: Option<ManualClock>,
    toml: String,
    running: Running,
    // After `running`: the app's task is aborted before its files go.
    sandbox: Sandbox,
    _guard: Guard,
}

impl TestApp {
    /// The default app: [`SECRET`], a manual clock at [`NOW_SECS`], the
    /// worker loop on, a sandbox of its own on SQLite.
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            config: Config::default(),
            sandbox: None,
            backend: Backend::Sqlite,
            clock: Some(manual_clock()),
            worker: Worker::Loop,
            customize: None,
            capture_logs: false,
            exclusive: false,
        }
    }

    /// [`TestApp::builder`], spawned.
    pub async fn spawn() -> TestApp {
        TestApp::builder().spawn().await
    }

    /// The sandbox (temp dir, database, `out/`).
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// The database, for assertions.
    pub fn db(&self) -> &TestDb {
        self.sandbox.db()
    }

    /// The configuration file's text the app was built from.
    pub fn config_toml(&self) -> &str {
        &self.toml
    }

    /// Writes that text to `steerhook.toml` in the sandbox, for the CLI.
    pub fn write_config(&self) -> std::path::PathBuf {
        write_config_file(self.sandbox.dir(), &self.toml)
    }

    /// The manual clock; panics on the system clock.
    pub fn clock(&self) -> &ManualClock {
        self.clock.as_ref().expect("this app has a manual clock")
    }

    /// The app's time in unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        match &self.clock {
            Some(c) => c.now_ms(),
            None => SystemClock.now_ms(),
        }
    }

    /// The app's time in unix seconds.
    pub fn now_secs(&self) -> u64 {
        u64::try_from(self.now_ms() / 1000).expect("after 1970")
    }

    /// Moves the manual clock forward.
    pub fn advance(&self, by: Duration) {
        self.clock().advance(by);
    }

    /// A sender of webhooks to this app, signed with its first secret at its
    /// clock, to clone into concurrent tasks.
    pub fn webhook(&self) -> Webhook {
        self.webhook.clone()
    }

    /// The signature header for `body` at the app's current time.
    pub fn signature(&self, body: &[u8]) -> String {
        self.webhook.signature(body)
    }

    /// POSTs `body` with the signature header `header` (absent when None).
    pub async fn post_webhook(&self, body: &[u8], header: Option<&str>) -> reqwest::Response {
        self.post_webhook_bytes(body, header.map(str::as_bytes))
            .await
    }

    /// [`TestApp::post_webhook`] with the header's raw bytes, which need
    /// not be text (HTTP allows octets from 0x80 up in a header value).
    pub async fn post_webhook_bytes(
        &self,
        body: &[u8],
        header: Option<&[u8]>,
    ) -> reqwest::Response {
        self.webhook
            .send(body, header)
            .await
            .expect("the webhook request is answered")
    }

    /// POSTs `body` signed with the app's secret at the app's current time.
    pub async fn post_signed(&self, body: impl AsRef<[u8]>) -> reqwest::Response {
        self.webhook.post_signed(body).await
    }

    /// Posts `body` signed and asserts 202; returns the event id.
    pub async fn post_accepted(&self, body: impl AsRef<[u8]>) -> String {
        self.webhook.post_accepted(body).await
    }

    /// Posts a signed `run.succeeded` for `run_id` (event id `evt_<run_id>`)
    /// and asserts 202; returns the event id.
    pub async fn post_run(&self, run_id: &str) -> String {
        self.webhook.post_run(run_id).await
    }

    /// Posts a signed `run.succeeded` for `run_id` (event id `evt_<run_id>`);
    /// the answer, whatever it is.
    pub async fn try_post_run(&self, run_id: &str) -> Answer {
        self.webhook
            .try_post_signed(run_event("run.succeeded", &format!("evt_{run_id}"), run_id))
            .await
            .expect("the webhook request is answered")
    }

    /// The status `/healthz` answers, 0 when nothing answers.
    pub async fn health(&self) -> u16 {
        match self
            .client
            .get(format!("{}/healthz", self.base_url))
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// `GET {base_url}{path}`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base_url))
            .send()
            .await
            .expect("the request is answered")
    }

    /// One worker step.
    pub async fn step(&self) -> Outcome {
        self.dispatcher
            .try_dispatch_next()
            .await
            .expect("the worker step reaches the database")
    }

    /// One worker step that must run a job.
    pub async fn step_ran(&self) -> (ClaimedJob, JobNext) {
        match self.step().await {
            Outcome::Ran { job, next } => (job, next),
            idle => panic!("expected a job to run, got {idle:?}"),
        }
    }

    /// Steps until Idle; fails after `max_steps`.
    pub async fn drain(&self, max_steps: usize) -> Vec<Outcome> {
        let mut ran = Vec::new();
        for _ in 0..max_steps {
            match self.step().await {
                Outcome::Idle { .. } => return ran,
                o => ran.push(o),
            }
        }
        panic!("the queue did not drain in {max_steps} steps: {ran:?}");
    }

    /// Stops the app as SIGTERM would, and waits until `run_until_stopped`
    /// returns; it must return `Ok`.
    pub async fn stop(mut self) {
        self.running.stop(DEADLINE).await;
    }

    /// Kills the app as kill -9 would (see [`TestApp`]), and waits until its
    /// task is gone.
    pub async fn kill(mut self) {
        self.running.kill().await;
    }
}

/// `run_until_stopped` on a task, and the token that stops it as SIGTERM
/// does; dropping it aborts the task (kill -9). [`TestApp`] runs on one;
/// a test that builds its own `Application` can too.
pub struct Running {
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    /// Runs `app` on a task.
    pub fn start(app: Application) -> Running {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Running {
            shutdown,
            task: Some(task),
        }
    }

    /// Stops the app as SIGTERM would and waits, up to `deadline`, until
    /// `run_until_stopped` returns; it must return `Ok`.
    pub async fn stop(&mut self, deadline: Duration) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(deadline, task)
                .await
                .expect("the app stops within the deadline")
                .expect("the app task did not panic")
                .expect("run_until_stopped returns Ok");
        }
    }

    /// Aborts the app's task, as kill -9 ends the process: every task it
    /// owns (server, worker, running hooks, lease renewals) stops at once,
    /// with no shutdown; waits until the task is gone.
    pub async fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Dropping the future aborts every task it started (startup.rs).
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
