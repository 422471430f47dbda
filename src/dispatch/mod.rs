//! The worker: claims the next due job, runs it (fetch the run and its logs,
//! or deliver to one hook), records the attempt and schedules the retry.
//!
//! [`Dispatcher::try_dispatch_next`] is one step, which tests drive;
//! [`Dispatcher::run`] is the loop around it that runs up to
//! `queue.concurrency` jobs at once and stops on the shutdown token.
//!
//! - [`fetch`]: the fetch job and the paging rules of SPEC §5;
//! - [`deliver`]: the delivery job, through a [`crate::hooks::Sink`];
//! - [`retry`]: where a job goes after a failed attempt (pure functions);
//! - [`runtime`]: the worker's own threads, below the daemon's CPU priority.

mod deliver;
mod fetch;
pub mod retry;
mod runtime;

pub use runtime::WorkerRuntime;

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use rand::Rng;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{QueueSettings, Settings};
use crate::hooks::{self, Sink, SinkSetupError};
use crate::metrics::Metrics;
use crate::opensteer::OpensteerError;
use crate::store::{
    AttemptOutcome, AttemptRecord, ClaimFilter, ClaimedJob, JobKind, JobNext, Store, StoreError,
};

pub use fetch::Fetcher;

/// The idle loop looks at the queue at least this often (the clock may be moved by tests).
const IDLE_POLL: Duration = Duration::from_millis(500);
/// The same on a shared database, where other daemons announce their work
/// (`LISTEN/NOTIFY`): polling is only the fallback there, and every poll of
/// every daemon is a query on the one server.
const IDLE_POLL_SHARED: Duration = Duration::from_secs(5);
/// First wait before storing an attempt's outcome again; doubles up to [`RECORD_RETRY_MAX`].
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(50);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(5);

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No job was due.
    Idle {
        /// When the next job becomes due, unix ms.
        next_due_at: Option<i64>,
    },
    /// A job ran.
    Ran {
        /// The job.
        job: ClaimedJob,
        /// Where it went.
        next: JobNext,
    },
}

/// A configured hook as the worker sees it.
#[derive(Debug, Clone)]
struct Hook {
    sink: Arc<dyn Sink>,
    max_attempts: u32,
    concurrency: usize,
    /// `match`: the runs this hook is for (SPEC §3).
    route: Option<crate::domain::Match>,
}

/// What this process is running, for the concurrency limits and the claim.
#[derive(Debug, Default)]
struct Running {
    /// Deliveries running per hook.
    per_hook: HashMap<String, usize>,
    /// Ids of the jobs this process is running.
    jobs: HashSet<i64>,
}

/// The parts the dispatcher works with.
pub struct Dispatcher {
    store: Store,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    queue: QueueSettings,
    /// `None` without `[opensteer]`: a fetch job then finishes at once.
    fetcher: Option<Fetcher>,
    hooks: HashMap<String, Hook>,
    /// Where each delivery attempt's payload file is written.
    payload_dir: PathBuf,
    running: Mutex<Running>,
    /// Fired when running hooks must stop (the shutdown grace period is over).
    hook_cancel: CancellationToken,
    /// Woken when there may be new work.
    wake: Arc<Notify>,
    /// When the loop last went round (ms since `born`), for the systemd watchdog.
    heartbeat_ms: AtomicU64,
    born: Instant,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

/// Why the dispatcher could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DispatchSetupError {
    /// The API client could not be made.
    #[error("opensteer: {0}")]
    Opensteer(#[from] OpensteerError),
    /// A hook could not be prepared.
    #[error(transparent)]
    Sinks(#[from] SinkSetupError),
}

impl Dispatcher {
    /// A dispatcher for `settings`, writing hook payload files under `payload_dir`.
    pub fn new(
        settings: &Settings,
        store: Store,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
        payload_dir: PathBuf,
    ) -> Result<Self, DispatchSetupError> {
        let mut sinks = hooks::build_sinks(settings, payload_dir.clone())?;
        let hooks = settings
            .hooks
            .iter()
            .filter_map(|h| {
                Some((
                    h.name.clone(),
                    Hook {
                        sink: sinks.remove(&h.name)?,
                        max_attempts: h.max_attempts,
                        concurrency: h.concurrency,
                        route: h.route.clone(),
                    },
                ))
            })
            .collect();
        let fetcher = settings
            .opensteer
            .as_ref()
            .map(|o| Fetcher::new(o, &settings.queue, clock.clone()))
            .transpose()?;
        Ok(Self {
            store,
            clock,
            metrics,
            queue: settings.queue.clone(),
            fetcher,
            hooks,
            payload_dir,
            running: Mutex::new(Running::default()),
            hook_cancel: CancellationToken::new(),
            wake,
            heartbeat_ms: AtomicU64::new(0),
            born: Instant::now(),
        })
    }

    /// Replaces the sink of the hook `name` (for tests that need a hook
    /// kind's failure no real program produces). Returns false when there
    /// is no such hook.
    pub fn replace_sink(&mut self, name: &str, sink: Arc<dyn Sink>) -> bool {
        match self.hooks.get_mut(name) {
            Some(h) => {
                h.sink = sink;
                true
            }
            None => false,
        }
    }

    /// What wakes the worker loop when there may be new work.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Puts jobs left running by a previous process back in the queue.
    pub async fn recover_interrupted(&self) -> Result<usize, StoreError> {
        let n = self.store.recover_interrupted(self.clock.now_ms()).await?;
        if n > 0 {
            tracing::warn!(jobs = n, "jobs interrupted by the last stop run again");
        }
        Ok(n)
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long a claim holds without renewal (`queue.lease_secs`); the
    /// loop renews its jobs' leases every third of it (see [`Self::run`]).
    fn lease(&self) -> Duration {
        self.queue.lease
    }

    /// Renews the leases of the jobs this process runs.
    async fn renew_leases(&self) {
        let ids: Vec<i64> = self.running().jobs.iter().copied().collect();
        let until = self.clock.now_ms() + self.lease().as_millis() as i64;
        if let Err(e) = self.store.extend_leases(ids, until).await {
            tracing::warn!(error = %e, "cannot renew the leases of running jobs; will try again");
        }
    }

    async fn claim(&self) -> Result<Option<ClaimedJob>, StoreError> {
        let now = self.clock.now_ms();
        let (busy_hooks, in_flight) = {
            let running = self.running();
            let busy: Vec<String> = running
                .per_hook
                .iter()
                .filter(|(name, n)| self.hooks.get(*name).is_some_and(|h| **n >= h.concurrency))
                .map(|(name, _)| name.clone())
                .collect();
            (busy, running.jobs.iter().copied().collect())
        };
        // Every hook busy: no pending delivery can be taken, so do not look.
        let deliveries_allowed = self.hooks.is_empty() || busy_hooks.len() < self.hooks.len();
        let filter = ClaimFilter {
            now,
            lease_ms: self.lease().as_millis() as i64,
            busy_hooks,
            in_flight,
            fetch_allowed: self.fetcher.as_ref().is_none_or(|f| f.may_start(now)),
            deliveries_allowed,
            hook_limits: self
                .hooks
                .iter()
                .map(|(name, h)| (name.clone(), h.concurrency))
                .collect(),
        };
        let job = self.store.claim_due_job(filter).await?;
        if let Some(job) = &job {
            let mut running = self.running();
            running.jobs.insert(job.id);
            if job.kind == JobKind::Deliver {
                *running.per_hook.entry(job.hook.clone()).or_default() += 1;
            }
        }
        Ok(job)
    }

    /// One step: claims the next due job, runs it to the end and records the attempt.
    pub async fn try_dispatch_next(&self) -> Result<Outcome, StoreError> {
        match self.claim().await? {
            Some(job) => {
                let next = self.run_job(&job).await?;
                Ok(Outcome::Ran { job, next })
            }
            None => Ok(Outcome::Idle {
                next_due_at: self.store.next_due_at().await?,
            }),
        }
    }

    /// Runs a claimed job. A panic inside it is caught here: recorded as a
    /// failed attempt (code `PANIC`) and retried like any failure, so the
    /// job is neither lost nor held by counters nobody decrements.
    async fn run_job(&self, job: &ClaimedJob) -> Result<JobNext, StoreError> {
        let started_at = self.clock.now_ms();
        let started = Instant::now();
        let ran = AssertUnwindSafe(async {
            match job.kind {
                JobKind::Fetch => self.run_fetch(job).await,
                JobKind::Deliver => self.run_delivery(job).await,
            }
        })
        .catch_unwind()
        .await;
        {
            let mut running = self.running();
            running.jobs.remove(&job.id);
            if job.kind == JobKind::Deliver {
                if let Some(n) = running.per_hook.get_mut(&job.hook) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        // A finished job may release others (deliveries after a fetch).
        self.wake.notify_one();
        match ran {
            Ok(result) => result,
            Err(panic) => {
                self.record_panic(job, started_at, started, panic_message(panic))
                    .await
            }
        }
    }

    async fn record_panic(
        &self,
        job: &ClaimedJob,
        started_at: i64,
        started: Instant,
        message: String,
    ) -> Result<JobNext, StoreError> {
        let now = self.clock.now_ms();
        let attempt = job.attempt;
        let max_attempts = match job.kind {
            JobKind::Fetch => self.queue.fetch_max_attempts,
            JobKind::Deliver => self.hooks.get(&job.hook).map_or(1, |h| h.max_attempts),
        };
        let failure = hooks::SinkFailure::new(
            hooks::FailureKind::Retryable,
            "PANIC",
            format!("the attempt panicked: {message}"),
        );
        let step = retry::after_delivery_failure(
            &failure,
            attempt,
            max_attempts,
            now,
            retry::Backoff::of(&self.queue),
            self.queue.retry_after_max,
            self.draw(),
        );
        tracing::error!(
            job_id = job.id,
            kind = %job.kind,
            hook = %job.hook,
            attempt,
            error = %failure.message,
            "a job's attempt panicked; recorded as failed and retried like any failure"
        );
        let rec = AttemptRecord {
            started_at,
            duration_ms: started.elapsed().as_millis() as i64,
            outcome: step.outcome,
            error_code: Some(failure.code.to_owned()),
            error: Some(failure.message),
            exit_code: None,
            stdout: None,
            stderr: None,
            enrichment: None,
        };
        if job.kind == JobKind::Deliver {
            self.metrics
                .observe_delivery(&job.hook, step.outcome.as_str(), started.elapsed());
        }
        self.record(job, rec, step.next, now).await?;
        Ok(step.next)
    }

    /// A uniform draw in `[0, 1]` for the backoff's jitter.
    fn draw(&self) -> f64 {
        rand::thread_rng().gen_range(0.0..=1.0)
    }

    /// Stores an attempt's outcome, retrying while the database refuses it
    /// (disk full, locked past `busy_timeout`): the attempt has happened, and
    /// if its outcome were dropped the job would sit `running` until its
    /// lease ran out (minutes) and then run again. Gives up only when running
    /// jobs are being stopped at shutdown; the job then runs again on the
    /// next start, as any interrupted job does.
    async fn record(
        &self,
        job: &ClaimedJob,
        rec: AttemptRecord,
        next: JobNext,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut wait = RECORD_RETRY_FIRST;
        loop {
            let result = self
                .store
                .record_attempt(job.clone(), rec.clone(), next, now)
                .await;
            match result {
                Ok(()) => return Ok(()),
                Err(e @ StoreError::WriterGone) => return Err(e),
                Err(e) => {
                    tracing::warn!(
                        job_id = job.id,
                        error = %e,
                        retry_in_ms = wait.as_millis() as u64,
                        "cannot store the attempt's outcome yet; retrying"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.hook_cancel.cancelled() => return Err(e),
                    }
                    wait = (wait * 2).min(RECORD_RETRY_MAX);
                }
            }
        }
    }

    fn beat(&self) {
        self.heartbeat_ms
            .store(self.born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether the worker loop went round within `d` (for the systemd watchdog).
    pub fn alive_within(&self, d: Duration) -> bool {
        let last = self.heartbeat_ms.load(Ordering::Relaxed);
        (self.born.elapsed().as_millis() as u64).saturating_sub(last) <= d.as_millis() as u64
    }

    /// The longest the loop waits when idle ([`IDLE_POLL`], or
    /// [`IDLE_POLL_SHARED`] on a shared database).
    pub fn idle_poll(&self) -> Duration {
        if self.store.is_shared() {
            IDLE_POLL_SHARED
        } else {
            IDLE_POLL
        }
    }

    /// How long the loop sleeps when nothing could be claimed: until the next
    /// job is due, at most [`Self::idle_poll`].
    async fn idle_wait(&self) -> Duration {
        let poll = self.idle_poll();
        let now = self.clock.now_ms();
        let paused_until = self.fetcher.as_ref().map_or(0, Fetcher::paused_until);
        let ms = match self.store.next_due_at().await {
            Ok(Some(at)) if at > now => at - now,
            // A job is due, yet none could be claimed: fetches are paused (until
            // `paused_until`) or its hook is at its concurrency limit (a finishing
            // job wakes us). Waiting 0 here spun on the database the whole time.
            Ok(Some(_)) if paused_until > now => paused_until - now,
            _ => poll.as_millis() as i64,
        };
        Duration::from_millis(ms.clamp(0, poll.as_millis() as i64) as u64)
    }

    /// Runs jobs until `shutdown` fires, then gives running hooks
    /// `queue.shutdown_grace` to finish before stopping them (they run again
    /// on the next start).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.queue.concurrency));
        let mut tasks = JoinSet::new();
        // Leases outlive a stall of a third of their length; a daemon that
        // dies stops renewing, and its jobs go to others (or to the next
        // start) once they run out. Running jobs keep theirs through the
        // shutdown grace: the renewer stops when this function returns.
        let _renewer = {
            let me = self.clone();
            tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
                let every = me.lease() / 3;
                loop {
                    tokio::time::sleep(every).await;
                    me.renew_leases().await;
                }
            }))
        };
        loop {
            self.beat();
            // Jobs catch their own panics (see `run_job`); a task can only
            // end in error if it was aborted, which nothing does.
            while tasks.try_join_next().is_some() {}
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.cancelled() => break,
                // Every slot busy (long hooks): still go round, to show we are alive.
                _ = tokio::time::sleep(self.idle_poll()) => continue,
            };
            match self.claim().await {
                Ok(Some(job)) => {
                    let me = self.clone();
                    tasks.spawn(async move {
                        if let Err(e) = me.run_job(&job).await {
                            tracing::error!(job_id = job.id, error = %e, "could not record a job's attempt; it runs again on the next start");
                        }
                        drop(permit);
                    });
                }
                Ok(None) => {
                    drop(permit);
                    let wait = self.idle_wait().await;
                    tokio::select! {
                        _ = self.wake.notified() => {},
                        _ = tokio::time::sleep(wait) => {},
                        _ = shutdown.cancelled() => break,
                    }
                }
                Err(e) => {
                    drop(permit);
                    tracing::error!(error = %e, "cannot claim jobs; retrying in a second");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                        _ = shutdown.cancelled() => break,
                    }
                }
            }
        }
        if !tasks.is_empty() {
            tracing::info!(
                running = tasks.len(),
                grace_secs = self.queue.shutdown_grace.as_secs(),
                "waiting for running jobs"
            );
            let grace = tokio::time::sleep(self.queue.shutdown_grace);
            tokio::pin!(grace);
            loop {
                tokio::select! {
                    r = tasks.join_next() => if r.is_none() { break },
                    _ = &mut grace, if !self.hook_cancel.is_cancelled() => {
                        tracing::warn!("grace period over: stopping running hooks; they run again on the next start");
                        self.hook_cancel.cancel();
                    }
                }
            }
        }
    }
}

/// The text a panic was raised with.
fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(s) => *s,
        Err(panic) => panic.downcast_ref::<&str>().map_or_else(
            || "a panic without a message".to_owned(),
            |s| (*s).to_owned(),
        ),
    }
}

/// What an attempt record starts as, before the outcome is known.
fn attempt_started(started_at: i64) -> AttemptRecord {
    AttemptRecord {
        started_at,
        duration_ms: 0,
        outcome: AttemptOutcome::Ok,
        error_code: None,
        error: None,
        exit_code: None,
        stdout: None,
        stderr: None,
        enrichment: None,
    }
}
