//! The worker: claims the next due job, runs it (fetch the run and its logs,
//! or deliver to one hook), records the attempt and schedules the retry.
//!
//! [`Dispatcher::try_dispatch_next`] is one step, which tests drive;
//! [`Dispatcher::run`] is the loop around it that runs up to
//! `queue.concurrency` jobs at once and stops on the shutdown token.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::value::RawValue;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::{format_rfc3339_ms, Clock};
use crate::config::{HookKind, HookSettings, QueueSettings, Settings};
use crate::domain::{HookDocument, HookEvent};
use crate::hooks::email::{EmailError, EmailSpec, Mailer};
use crate::hooks::shell::{run_shell_hook, Invocation, ShellHookSpec};
use crate::metrics::Metrics;
use crate::opensteer::{ErrorClass, OpensteerClient, OpensteerError};
use crate::store::{
    self, AttemptRecord, ClaimFilter, ClaimedJob, JobNext, Store, StoreError, KIND_DELIVER,
    KIND_FETCH,
};

/// Margin added to a job's longest possible run time to make its lease.
const LEASE_MARGIN: Duration = Duration::from_secs(60);
/// The idle loop looks at the queue at least this often (the clock may be moved by tests).
const IDLE_POLL: Duration = Duration::from_millis(500);
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

/// The parts the dispatcher works with.
pub struct Dispatcher {
    store: Store,
    clock: Arc<dyn Clock>,
    queue: QueueSettings,
    hooks: HashMap<String, HookSettings>,
    max_log_pages: u32,
    client: Option<OpensteerClient>,
    mailer: Option<Mailer>,
    metrics: Arc<Metrics>,
    payload_dir: PathBuf,
    /// Deliveries running per hook, for the per-hook concurrency limit.
    running: Mutex<HashMap<String, usize>>,
    /// Ids of the jobs this dispatcher is running.
    in_flight: Mutex<std::collections::HashSet<i64>>,
    /// No fetch starts before this (unix ms): the API asked us to wait.
    api_paused_until: Mutex<i64>,
    /// Fired when running hooks must stop (the shutdown grace period is over).
    hook_cancel: CancellationToken,
    /// Woken when there may be new work.
    wake: Arc<Notify>,
    /// When the loop last went round (ms since `born`), for the systemd watchdog.
    heartbeat_ms: std::sync::atomic::AtomicU64,
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
    /// The API client settings were refused.
    #[error("opensteer: {0}")]
    Opensteer(#[from] OpensteerError),
    /// The SMTP settings were refused.
    #[error("smtp: {0}")]
    Email(#[from] EmailError),
    /// The payload directory could not be made.
    #[error("cannot create the hook payload directory {0}: {1}")]
    PayloadDir(PathBuf, std::io::Error),
}

/// Builds the SMTP sender from the settings, if `[smtp]` is present.
pub fn mailer_for(settings: &Settings) -> Result<Option<Mailer>, EmailError> {
    settings.smtp.as_ref().map(Mailer::new).transpose()
}

/// Builds the API client from the settings, if `[opensteer]` is present.
pub fn client_for(
    settings: &Settings,
    clock: Arc<dyn Clock>,
) -> Result<Option<OpensteerClient>, OpensteerError> {
    settings
        .opensteer
        .as_ref()
        .map(|o| {
            OpensteerClient::with_clock(
                crate::opensteer::ClientSettings {
                    base_url: o.base_url.clone(),
                    api_key: o.api_key.clone(),
                    log_page_size: o.log_page_size,
                    connect_timeout: o.connect_timeout,
                    request_timeout: o.request_timeout,
                    max_concurrent_requests: o.max_concurrent_requests,
                },
                clock,
            )
        })
        .transpose()
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
        create_private_dir(&payload_dir)
            .map_err(|e| DispatchSetupError::PayloadDir(payload_dir.clone(), e))?;
        Ok(Self {
            client: client_for(settings, clock.clone())?,
            mailer: mailer_for(settings)?,
            store,
            clock,
            queue: settings.queue.clone(),
            hooks: settings
                .hooks
                .iter()
                .map(|h| (h.name.clone(), h.clone()))
                .collect(),
            max_log_pages: settings.opensteer.as_ref().map_or(0, |o| o.max_log_pages),
            metrics,
            payload_dir,
            running: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(std::collections::HashSet::new()),
            api_paused_until: Mutex::new(0),
            hook_cancel: CancellationToken::new(),
            wake,
            heartbeat_ms: std::sync::atomic::AtomicU64::new(0),
            born: Instant::now(),
        })
    }

    /// Puts jobs left running by a previous process back in the queue.
    pub async fn recover_interrupted(&self) -> Result<usize, StoreError> {
        let now = self.clock.now_ms();
        let n = self
            .store
            .write(move |tx| store::recover_interrupted(tx, now))
            .await?;
        if n > 0 {
            tracing::warn!(jobs = n, "jobs interrupted by the last stop run again");
        }
        Ok(n)
    }

    fn lease(&self) -> Duration {
        // Longest a job may legitimately run: a shell hook's timeout plus
        // twice its kill grace (TERM -> KILL, then children holding its pipes),
        // or a fetch of every log page. Generous: the lease only matters if
        // the process that holds it has died without `serve` restarting.
        let hook_max = self
            .hooks
            .values()
            .filter_map(|h| match &h.kind {
                HookKind::Shell(s) => Some(s.timeout + s.kill_grace * 2),
                HookKind::Email(_) => None,
            })
            .max()
            .unwrap_or_default();
        hook_max.max(Duration::from_secs(600)) + LEASE_MARGIN
    }

    async fn claim(&self) -> Result<Option<ClaimedJob>, StoreError> {
        let now = self.clock.now_ms();
        let busy: Vec<String> = {
            let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            running
                .iter()
                .filter(|(name, n)| {
                    self.hooks
                        .get(name.as_str())
                        .is_some_and(|h| **n >= h.concurrency)
                })
                .map(|(name, _)| name.clone())
                .collect()
        };
        // Every hook busy: no pending delivery can be taken, so do not look.
        let deliveries_allowed = self.hooks.is_empty() || busy.len() < self.hooks.len();
        let fetch_allowed = now
            >= *self
                .api_paused_until
                .lock()
                .unwrap_or_else(|p| p.into_inner());
        let filter = ClaimFilter {
            now,
            lease_ms: self.lease().as_millis() as i64,
            busy_hooks: busy,
            in_flight: self
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .copied()
                .collect(),
            fetch_allowed,
            deliveries_allowed,
        };
        // Relaxed: a claim lost to a power failure leaves the job pending,
        // as every restart does with claimed jobs anyway.
        let job = self
            .store
            .write_relaxed(move |tx| store::claim_due_job(tx, &filter))
            .await?;
        if let Some(job) = &job {
            self.in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(job.id);
            if job.kind == KIND_DELIVER {
                *self
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(job.hook.clone())
                    .or_default() += 1;
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
                next_due_at: self.store.read(store::next_due_at).await?,
            }),
        }
    }

    async fn run_job(&self, job: &ClaimedJob) -> Result<JobNext, StoreError> {
        let result = if job.kind == KIND_FETCH {
            self.run_fetch(job).await
        } else {
            let r = self.run_delivery(job).await;
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = running.get_mut(&job.hook) {
                *n = n.saturating_sub(1);
            }
            r
        };
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&job.id);
        // A finished job may release others (deliveries after a fetch).
        self.wake.notify_one();
        result
    }

    /// Full-jitter exponential backoff: uniform in [0, min(max, base * 2^(attempt-1))].
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.queue.backoff_base.as_millis() as u64;
        let cap = self.queue.backoff_max.as_millis() as u64;
        let exp = base.saturating_mul(1u64 << attempt.saturating_sub(1).min(40));
        let ceiling = exp.min(cap);
        Duration::from_millis(rand::thread_rng().gen_range(0..=ceiling))
    }

    #[tracing::instrument(skip_all, fields(job_id = job.id, event_seq = job.event_seq, attempt = job.attempt))]
    async fn run_fetch(&self, job: &ClaimedJob) -> Result<JobNext, StoreError> {
        let started_at = self.clock.now_ms();
        let started = Instant::now();
        let result = self.fetch_everything(job.event_seq).await;
        let now = self.clock.now_ms();
        let mut rec = AttemptRecord {
            started_at,
            duration_ms: started.elapsed().as_millis() as i64,
            outcome: "ok",
            ..Default::default()
        };
        let next = match result {
            Ok(()) => JobNext::Succeeded,
            Err(FetchError::Store(e)) => {
                // Our own storage failed: leave the job for the lease to expire.
                return Err(e);
            }
            Err(FetchError::Api(e)) => {
                rec.error_code = Some(e.code());
                rec.error = Some(e.to_string());
                match e.class() {
                    ErrorClass::Retry if job.attempt < self.queue.fetch_max_attempts => {
                        rec.outcome = "retry";
                        JobNext::RetryAt(now + self.backoff(job.attempt).as_millis() as i64)
                    }
                    ErrorClass::RetryAfter(after)
                        if job.attempt < self.queue.fetch_max_attempts =>
                    {
                        rec.outcome = "retry";
                        let wait = after
                            .unwrap_or_else(|| self.backoff(job.attempt))
                            .min(self.queue.retry_after_max);
                        let at = now + wait.as_millis() as i64;
                        // The limit is the account's: hold every fetch, not just this one.
                        self.pause_fetches_until(at);
                        tracing::warn!(
                            wait_ms = wait.as_millis() as u64,
                            "Opensteer API rate limit: fetches paused"
                        );
                        JobNext::RetryAt(at)
                    }
                    ErrorClass::AuthFault => {
                        // Retried slowly forever: fixing the key and restarting resumes.
                        rec.outcome = "retry";
                        self.metrics.observe_auth_fault();
                        tracing::error!(
                            code = %e.code(),
                            "THE OPENSTEER API REFUSED OUR KEY: {e}; fix opensteer.api_key and restart; events wait meanwhile"
                        );
                        let at = now + self.queue.auth_retry.as_millis() as i64;
                        // The key is the account's too: every other fetch would be
                        // refused the same way, so one request per interval is enough.
                        self.pause_fetches_until(at);
                        JobNext::RetryAt(at)
                    }
                    ErrorClass::Terminal => {
                        rec.outcome = "failed";
                        tracing::error!(code = %e.code(), "fetching the run failed for good; hooks get the event without it: {e}");
                        JobNext::Failed
                    }
                    _ => {
                        rec.outcome = "failed";
                        tracing::error!(code = %e.code(), attempts = job.attempt, "giving up fetching the run; hooks get the event without it: {e}");
                        JobNext::Failed
                    }
                }
            }
        };
        self.record(job, rec, next, now).await?;
        Ok(next)
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
            let (job2, rec2) = (job.clone(), rec.clone());
            let result = self
                .store
                .write(move |tx| store::record_attempt(tx, &job2, &rec2, next, now))
                .await;
            match result {
                Ok(_) => return Ok(()),
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

    /// No fetch is claimed before `at` (unix ms).
    fn pause_fetches_until(&self, at: i64) {
        let mut paused = self
            .api_paused_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *paused = (*paused).max(at);
    }

    /// Fetches the run (once) and the remaining log pages, saving each as it
    /// arrives so a retry resumes where the last attempt stopped.
    async fn fetch_everything(&self, seq: i64) -> Result<(), FetchError> {
        let Some(client) = &self.client else {
            return Ok(());
        };
        let ev = self.store.read(move |c| store::load_event(c, seq)).await?;
        // The run and the log pages are saved with relaxed writes: they are
        // made durable by the fetch's attempt record that follows them, and
        // if a power failure loses them first, they are fetched again.
        if ev.run_json.is_none() {
            let run = client.fetch_run(&ev.run_id).await;
            self.count_api(&run);
            let run = serde_json::to_string(&run?.run).unwrap_or_else(|_| "null".into());
            self.store
                .write_relaxed(move |tx| store::save_run(tx, seq, &run))
                .await?;
        }
        let (mut page_no, mut cursor, mut complete) =
            (ev.logs_pages, ev.logs_cursor, ev.logs_complete);
        while !complete {
            if page_no >= self.max_log_pages {
                tracing::warn!(
                    pages = page_no,
                    "log paging stopped at opensteer.max_log_pages"
                );
                self.store
                    .write_relaxed(move |tx| store::finish_logs(tx, seq))
                    .await?;
                break;
            }
            let page = client.fetch_logs_page(&ev.run_id, cursor.as_deref()).await;
            self.count_api(&page);
            let page = page?;
            let mut entries: Vec<String> = page
                .entries
                .iter()
                .map(|e| serde_json::to_string(e).unwrap_or_else(|_| "null".into()))
                .collect();
            let next = page.next_cursor;
            let repeated = match &next {
                Some(n) if Some(n) == cursor.as_ref() => true,
                Some(n) => {
                    let n = n.clone();
                    self.store
                        .read(move |c| store::cursor_seen(c, seq, &n))
                        .await?
                }
                None => false,
            };
            if repeated {
                tracing::warn!("the logs API repeated a cursor; paging stopped");
                // A looping API may have answered a page we already stored
                // (e.g. it ignores the cursor): keep only what is new, so no
                // entry reaches the hooks twice.
                let stored: HashSet<String> = self
                    .store
                    .read(move |c| store::load_logs(c, seq))
                    .await?
                    .into_iter()
                    .collect();
                entries.retain(|e| !stored.contains(e));
            }
            complete = entries.is_empty()
                || next.is_none()
                || repeated
                || page_no + 1 >= self.max_log_pages;
            let followed = cursor.clone();
            let next_saved = if complete { None } else { next.clone() };
            let p = page_no;
            self.store
                .write_relaxed(move |tx| {
                    store::save_log_page(
                        tx,
                        seq,
                        p,
                        &entries,
                        followed.as_deref(),
                        next_saved.as_deref(),
                        complete,
                    )
                })
                .await?;
            page_no += 1;
            cursor = next;
        }
        Ok(())
    }

    fn count_api<T>(&self, r: &Result<T, OpensteerError>) {
        match r {
            Ok(_) => self.metrics.observe_api_call("OK"),
            Err(e) => self.metrics.observe_api_call(&e.code()),
        }
    }

    #[tracing::instrument(skip_all, fields(job_id = job.id, event_id, hook = %job.hook, attempt = job.attempt))]
    async fn run_delivery(&self, job: &ClaimedJob) -> Result<JobNext, StoreError> {
        let started_at = self.clock.now_ms();
        let started = Instant::now();
        let seq = job.event_seq;
        let (ev, logs) = self
            .store
            .read(move |c| Ok((store::load_event(c, seq)?, store::load_logs(c, seq)?)))
            .await?;
        tracing::Span::current().record("event_id", ev.id.as_str());
        let mut rec = AttemptRecord {
            started_at,
            outcome: "ok",
            ..Default::default()
        };
        let Some(hook) = self.hooks.get(&job.hook) else {
            rec.outcome = "failed";
            rec.error_code = Some("HOOK_NOT_CONFIGURED".into());
            rec.error = Some(format!(
                "no hook named {:?} in the configuration any more; add it back and `steerhook replay`",
                job.hook
            ));
            return self
                .finish_delivery(job, rec, JobNext::Failed, started)
                .await;
        };
        let doc = build_document(&ev, &logs);
        let (bytes, status) = match &doc {
            Ok(d) => (d.to_bytes(), d.run_status()),
            Err(e) => {
                // Cannot happen for rows we wrote (the body was parsed at ingest);
                // recorded rather than panicking if the file was edited by hand.
                rec.outcome = "failed";
                rec.error_code = Some("STORED_EVENT_UNREADABLE".into());
                rec.error = Some(e.to_string());
                return self
                    .finish_delivery(job, rec, JobNext::Failed, started)
                    .await;
            }
        };
        let now = || self.clock.now_ms();
        let retry_or_fail = |rec: &mut AttemptRecord| {
            if job.attempt < hook.max_attempts {
                rec.outcome = "retry";
                JobNext::RetryAt(now() + self.backoff(job.attempt).as_millis() as i64)
            } else {
                rec.outcome = "failed";
                JobNext::Failed
            }
        };
        let next = match &hook.kind {
            HookKind::Shell(sh) => {
                let spec = ShellHookSpec {
                    name: hook.name.clone(),
                    settings: sh.clone(),
                    payload_dir: self.payload_dir.clone(),
                };
                let vars = vec![
                    ("STEERHOOK_EVENT_ID".to_owned(), ev.id.clone()),
                    ("STEERHOOK_EVENT_TYPE".to_owned(), ev.event_type.clone()),
                    ("STEERHOOK_RUN_ID".to_owned(), ev.run_id.clone()),
                    ("STEERHOOK_RUN_STATUS".to_owned(), status),
                    ("STEERHOOK_HOOK".to_owned(), hook.name.clone()),
                    ("STEERHOOK_ATTEMPT".to_owned(), job.attempt.to_string()),
                ];
                let out = run_shell_hook(
                    &spec,
                    Invocation {
                        document: &bytes,
                        vars,
                    },
                    self.hook_cancel.clone(),
                )
                .await;
                rec.exit_code = out.exit_code;
                rec.stdout = Some(out.stdout);
                rec.stderr = Some(out.stderr);
                match out.result {
                    Ok(()) => JobNext::Succeeded,
                    Err(f) => {
                        rec.error_code = Some(f.code().to_owned());
                        rec.error = Some(f.to_string());
                        if f == crate::hooks::shell::ShellFailure::Interrupted {
                            rec.outcome = "interrupted";
                            JobNext::RetryAt(now())
                        } else {
                            retry_or_fail(&mut rec)
                        }
                    }
                }
            }
            HookKind::Email(em) => match &self.mailer {
                None => {
                    rec.error_code = Some("SMTP_NOT_CONFIGURED".into());
                    rec.error = Some("there is no [smtp] section".into());
                    rec.outcome = "failed";
                    JobNext::Failed
                }
                Some(mailer) => {
                    let spec = EmailSpec {
                        hook: hook.name.clone(),
                        settings: em.clone(),
                    };
                    let value: serde_json::Value =
                        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                    match mailer.send_event(&spec, &value, &ev.id).await {
                        Ok(sent) => {
                            rec.stdout = Some(
                                format!(
                                    "sent {} {:?}: {}",
                                    sent.message_id, sent.subject, sent.server_reply
                                )
                                .into_bytes(),
                            );
                            JobNext::Succeeded
                        }
                        Err(e) => {
                            rec.error_code = Some(e.code().to_owned());
                            rec.error = Some(e.to_string());
                            if e.is_transient() {
                                retry_or_fail(&mut rec)
                            } else {
                                rec.outcome = "failed";
                                JobNext::Failed
                            }
                        }
                    }
                }
            },
        };
        self.finish_delivery(job, rec, next, started).await
    }

    async fn finish_delivery(
        &self,
        job: &ClaimedJob,
        mut rec: AttemptRecord,
        next: JobNext,
        started: Instant,
    ) -> Result<JobNext, StoreError> {
        let took = started.elapsed();
        rec.duration_ms = took.as_millis() as i64;
        self.metrics.observe_delivery(&job.hook, rec.outcome, took);
        match next {
            JobNext::Succeeded => tracing::info!(duration_ms = rec.duration_ms, "delivered"),
            JobNext::RetryAt(_) => {
                tracing::warn!(code = ?rec.error_code, error = ?rec.error, "delivery attempt failed; will retry")
            }
            JobNext::Failed => {
                tracing::error!(code = ?rec.error_code, error = ?rec.error, "delivery failed for good; `steerhook replay` runs it again")
            }
        }
        let now = self.clock.now_ms();
        self.record(job, rec, next, now).await?;
        Ok(next)
    }

    fn beat(&self) {
        self.heartbeat_ms.store(
            self.born.elapsed().as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Whether the worker loop went round within `d` (for the systemd watchdog).
    pub fn alive_within(&self, d: Duration) -> bool {
        let last = self.heartbeat_ms.load(std::sync::atomic::Ordering::Relaxed);
        (self.born.elapsed().as_millis() as u64).saturating_sub(last) <= d.as_millis() as u64
    }

    /// How long the loop sleeps when nothing could be claimed: until the next
    /// job is due, at most [`IDLE_POLL`].
    async fn idle_wait(&self) -> Duration {
        let now = self.clock.now_ms();
        let paused_until = *self
            .api_paused_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let ms = match self.store.read(store::next_due_at).await {
            Ok(Some(at)) if at > now => at - now,
            // A job is due, yet none could be claimed: fetches are paused (until
            // `paused_until`) or its hook is at its concurrency limit (a finishing
            // job wakes us). Waiting 0 here spun on the database the whole time.
            Ok(Some(_)) if paused_until > now => paused_until - now,
            _ => IDLE_POLL.as_millis() as i64,
        };
        Duration::from_millis(ms.clamp(0, IDLE_POLL.as_millis() as i64) as u64)
    }

    /// Runs jobs until `shutdown` fires, then gives running hooks
    /// `queue.shutdown_grace` to finish before stopping them (they run again
    /// on the next start).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.queue.concurrency));
        let mut tasks = JoinSet::new();
        loop {
            self.beat();
            while tasks.try_join_next().is_some() {}
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.cancelled() => break,
                // Every slot busy (long hooks): still go round, to show we are alive.
                _ = tokio::time::sleep(IDLE_POLL) => continue,
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

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Api(#[from] OpensteerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The hook document for a stored event (SPEC §6).
pub fn build_document(
    ev: &store::StoredEvent,
    logs: &[String],
) -> Result<OwnedDocument, serde_json::Error> {
    let payload: Box<RawValue> = serde_json::from_slice(&ev.body)?;
    let run = ev
        .run_json
        .as_deref()
        .map(|r| RawValue::from_string(r.to_owned()))
        .transpose()?;
    let logs = if ev.run_json.is_some() || !logs.is_empty() {
        Some(
            logs.iter()
                .map(|l| RawValue::from_string(l.clone()))
                .collect::<Result<Vec<_>, _>>()?,
        )
    } else {
        None
    };
    Ok(OwnedDocument {
        id: ev.id.clone(),
        event_type: ev.event_type.clone(),
        run_id: ev.run_id.clone(),
        received_at: format_rfc3339_ms(ev.received_at),
        payload,
        run,
        logs,
    })
}

/// The hook document's parts, owned.
#[derive(Debug)]
pub struct OwnedDocument {
    id: String,
    event_type: String,
    run_id: String,
    received_at: String,
    payload: Box<RawValue>,
    run: Option<Box<RawValue>>,
    logs: Option<Vec<Box<RawValue>>>,
}

impl OwnedDocument {
    fn view(&self) -> HookDocument<'_> {
        HookDocument {
            event: HookEvent {
                id: &self.id,
                event_type: &self.event_type,
                run_id: &self.run_id,
                received_at: self.received_at.clone(),
                payload: &self.payload,
            },
            run: self.run.as_deref(),
            logs: self.logs.as_ref().map(|l| l.iter().map(|b| &**b).collect()),
        }
    }

    /// The serialised document.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.view().to_bytes()
    }

    /// The run status for `STEERHOOK_RUN_STATUS`.
    pub fn run_status(&self) -> String {
        self.view().run_status()
    }
}

fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}
