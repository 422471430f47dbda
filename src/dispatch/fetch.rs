//! The fetch job: the run, once it has settled, then its log pages (SPEC
//! §5), each saved as it arrives so that a retry resumes where the last
//! attempt stopped; and what the hooks are told about it (SPEC §6), recorded
//! on the event when the job ends.
//!
//! Memory: one page is held at a time, as the text the API sent (its
//! entries are slices of it), and handed whole to the store.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::retry::{self, FetchFailureReason, FetchPolicy};
use super::{attempt_started, Dispatcher};
use crate::clock::Clock;
use crate::config::{OpensteerSettings, QueueSettings};
use crate::domain::{Enrichment, EnrichmentError, EnrichmentStatus, EventType};
use crate::opensteer::{OpensteerClient, OpensteerError};
use crate::store::{
    AttemptOutcome, ClaimedJob, JobNext, LogEntry, LogPage, StoreError, StoredEvent,
};

/// The first wait before a run that has not settled is fetched again; it
/// doubles with each fetch, up to [`SETTLE_MAX_WAIT`], and never goes past
/// the end of `opensteer.settle_secs`.
pub const SETTLE_FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest wait between two fetches of a run that has not settled.
pub const SETTLE_MAX_WAIT: Duration = Duration::from_secs(15);

/// The API client and what the fetch job needs around it.
#[derive(Debug)]
pub struct Fetcher {
    client: OpensteerClient,
    max_log_pages: u32,
    max_log_bytes: u64,
    settle: Duration,
    policy: FetchPolicy,
    /// No fetch starts before this (unix ms): the API asked us to wait.
    paused_until: Mutex<i64>,
}

impl Fetcher {
    /// A fetcher for `[opensteer]`, retrying as `[queue]` says.
    pub fn new(
        settings: &OpensteerSettings,
        queue: &QueueSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, OpensteerError> {
        Ok(Self {
            client: settings.client(clock)?,
            max_log_pages: settings.max_log_pages,
            max_log_bytes: settings.max_log_bytes,
            settle: settings.settle,
            policy: FetchPolicy {
                backoff: retry::Backoff::of(queue),
                max_attempts: queue.fetch_max_attempts,
                retry_after_max: queue.retry_after_max,
                auth_retry: queue.auth_retry,
            },
            paused_until: Mutex::new(0),
        })
    }

    /// Whether a fetch may start at `now` (unix ms).
    pub fn may_start(&self, now: i64) -> bool {
        now >= self.paused_until()
    }

    /// Until when fetches wait (unix ms).
    pub fn paused_until(&self) -> i64 {
        *self.paused_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pause_until(&self, at: i64) {
        let mut paused = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        *paused = (*paused).max(at);
    }
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Api(#[from] OpensteerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How an attempt of the fetch ended, short of an error.
enum Fetched {
    /// The run and its logs are stored; not all of them, for this reason
    /// (also stored with them), if `partial`.
    Done {
        /// The first reason the run or its logs are not all there is.
        partial: Option<EnrichmentError>,
    },
    /// The run has not settled; it is fetched again at `at` (unix ms).
    Unsettled {
        /// When.
        at: i64,
        /// What the API said.
        why: String,
    },
}

impl Dispatcher {
    #[tracing::instrument(skip_all, fields(job_id = job.id, event_seq = job.event_seq, attempt = job.attempt))]
    pub(super) async fn run_fetch(&self, job: &ClaimedJob) -> Result<JobNext, StoreError> {
        let mut rec = attempt_started(self.clock.now_ms());
        let started = Instant::now();
        let seq = job.event_seq;
        let Some(fetcher) = &self.fetcher else {
            // Nothing to fetch from: the deliveries go ahead with the payload.
            rec.enrichment = Some(Enrichment::not_configured());
            self.record(job, rec, JobNext::Succeeded, self.clock.now_ms())
                .await?;
            return Ok(JobNext::Succeeded);
        };
        let ev = self.store.load_event(seq).await?;
        let result = self.fetch_everything(fetcher, &ev).await;
        let now = self.clock.now_ms();
        rec.duration_ms = started.elapsed().as_millis() as i64;
        let next = match result {
            Ok(Fetched::Done { partial }) => {
                let enrichment = match partial {
                    Some(why) => {
                        Enrichment::because(EnrichmentStatus::Partial, why.code, why.message)
                    }
                    None => Enrichment::complete(),
                };
                rec.enrichment = Some(enrichment);
                JobNext::Succeeded
            }
            Ok(Fetched::Unsettled { at, why }) => {
                self.store.count_settle_poll(seq).await?;
                let wait = wait_text(at - now);
                tracing::info!(
                    code = "RUN_NOT_SETTLED",
                    wait_ms = at - now,
                    "the API has not caught up with the event yet ({why}); asking again in {wait}"
                );
                rec.outcome = AttemptOutcome::Retry;
                rec.error_code = Some("RUN_NOT_SETTLED".into());
                rec.error = Some(format!(
                    "{why}; the run has not settled: asking again in {wait}"
                ));
                JobNext::RetryAt(at)
            }
            // Our own storage failed: leave the job for the lease to expire.
            Err(FetchError::Store(e)) => return Err(e),
            Err(FetchError::Api(e)) => {
                let code = e.code();
                // Fetches of a run that had not settled were not failures.
                let failures = job.attempt.saturating_sub(ev.settle_polls).max(1);
                let s = retry::after_fetch_failure(
                    &e.class(),
                    failures,
                    now,
                    fetcher.policy,
                    self.draw(),
                );
                if let Some(at) = s.pause_fetches_until {
                    fetcher.pause_until(at);
                    // The account's limit: every daemon on the database waits.
                    if let Err(e) = self.store.pause_fetches_until(at).await {
                        tracing::warn!(error = %e, "cannot share the API's pause with other daemons");
                    }
                }
                let wait = match s.step.next {
                    JobNext::RetryAt(at) => wait_text(at - now),
                    _ => String::new(),
                };
                let message = match s.reason {
                    FetchFailureReason::Transient => {
                        tracing::warn!(code = %code, "fetching failed; asking again in {wait}: {e}");
                        format!("{e}; asking again in {wait}")
                    }
                    FetchFailureReason::RateLimited => {
                        tracing::warn!(code = %code, "Opensteer API rate limit: every fetch paused for {wait}: {e}");
                        format!("{e}; every fetch paused for {wait}")
                    }
                    FetchFailureReason::AuthFault => {
                        self.metrics.observe_auth_fault();
                        tracing::error!(
                            code = %code,
                            "THE OPENSTEER API REFUSED OUR KEY: {e}; fix opensteer.api_key and restart; events wait meanwhile"
                        );
                        format!(
                            "{e}; asking again in {wait} (fix the key and restart to ask at once)"
                        )
                    }
                    FetchFailureReason::Terminal | FetchFailureReason::GaveUp => {
                        let (outcome, said) = if s.reason == FetchFailureReason::GaveUp {
                            let n = format!("gave up after {failures} attempts");
                            (format!("{e}; {n}"), n)
                        } else {
                            (e.to_string(), "not retried".to_owned())
                        };
                        let ev = self.store.load_event(seq).await?;
                        let enrichment = after_giving_up(&ev, code.clone(), outcome);
                        let status = enrichment.status;
                        rec.enrichment = Some(enrichment);
                        tracing::error!(
                            code = %code,
                            attempts = failures,
                            "fetching {} {said}; hooks run with enrichment {status}: {e}",
                            if ev.run_json.is_some() { "the logs" } else { "the run" }
                        );
                        format!("{e}; {said}: hooks run with enrichment {status}")
                    }
                };
                rec.outcome = s.step.outcome;
                rec.error_code = Some(code);
                rec.error = Some(message);
                s.step.next
            }
        };
        debug_assert!(rec.outcome != AttemptOutcome::Interrupted);
        self.record(job, rec, next, now).await?;
        Ok(next)
    }

    /// Fetches the run until it has settled, then the remaining log pages,
    /// saving each as it arrives so a retry resumes where the last attempt
    /// stopped.
    async fn fetch_everything(
        &self,
        fetcher: &Fetcher,
        ev: &StoredEvent,
    ) -> Result<Fetched, FetchError> {
        let client = &fetcher.client;
        let seq = ev.seq;
        // The first reason for partial enrichment, from an earlier attempt or this one.
        let mut partial = ev
            .enrichment
            .as_ref()
            .filter(|e| e.status == EnrichmentStatus::Partial)
            .and_then(|e| e.error.clone());
        if ev.run_json.is_none() {
            let now = self.clock.now_ms();
            let settle_end = ev
                .received_at
                .saturating_add(fetcher.settle.as_millis() as i64);
            let settling = now < settle_end;
            let again_at = now + settle_wait(ev.settle_polls).min(settle_end - now);
            let run = client.fetch_run(&ev.run_id).await;
            self.count_api(&run);
            let run = match run {
                Err(e) if e.status() == Some(404) && settling => {
                    return Ok(Fetched::Unsettled {
                        at: again_at,
                        why: format!("GET /runs/{} answered HTTP 404", ev.run_id),
                    })
                }
                r => r?,
            };
            let expected = expected_status(&ev.event_type);
            let unsettled = match (expected, run.status()) {
                (Some(expected), Some(status)) if status != expected => Some(format!(
                    "the API says the run is {status:?}, not {expected:?}"
                )),
                _ => None,
            };
            if let Some(why) = unsettled.clone().filter(|_| settling) {
                return Ok(Fetched::Unsettled { at: again_at, why });
            }
            let json = serde_json::to_string(&run.run).map_err(|e| {
                StoreError::Database(format!("cannot keep the run as JSON text: {e}"))
            })?;
            let note = unsettled.map(|why| {
                tracing::warn!(
                    code = "RUN_NOT_SETTLED",
                    "{why}, {} s after the event arrived; hooks get it as it is, with enrichment partial",
                    fetcher.settle.as_secs()
                );
                EnrichmentError {
                    code: "RUN_NOT_SETTLED".into(),
                    message: format!(
                        "{why}, {} s after the event arrived (opensteer.settle_secs)",
                        fetcher.settle.as_secs()
                    ),
                }
            });
            partial = partial.or(note.clone());
            self.store.save_run(seq, json, note).await?;
        }
        let (mut page_no, mut cursor, mut complete) =
            (ev.logs_pages, ev.logs_cursor.clone(), ev.logs_complete);
        let mut stored_bytes = ev.logs_bytes;
        while !complete {
            if page_no >= fetcher.max_log_pages {
                tracing::warn!(
                    pages = page_no,
                    "log paging stopped at opensteer.max_log_pages"
                );
                self.store
                    .finish_logs(seq, Some(page_limit(fetcher.max_log_pages)))
                    .await?;
                break;
            }
            let page = client.fetch_logs_page(&ev.run_id, cursor.as_deref()).await;
            self.count_api(&page);
            let page = page?;
            let next = page.next_cursor.clone();
            let repeated = match &next {
                Some(n) if Some(n) == cursor.as_ref() => true,
                Some(n) => self.store.cursor_seen(seq, n.clone()).await?,
                None => false,
            };
            if repeated {
                // A looping API may have answered a page we already stored
                // (e.g. it ignores the cursor): the store keeps only what is
                // new, so no entry reaches the hooks twice.
                tracing::warn!("the logs API repeated a cursor; paging stopped");
            }
            let (text, entries) = page.into_parts();
            let entries: Vec<LogEntry> = entries
                .into_iter()
                .map(|e| LogEntry {
                    span: e.span,
                    ts_us: e.ts_us,
                })
                .collect();
            let page_bytes: u64 = entries.iter().map(|e| e.span.len() as u64).sum();
            if stored_bytes + page_bytes > fetcher.max_log_bytes {
                tracing::warn!(
                    stored_bytes,
                    page_bytes,
                    "log paging stopped at opensteer.max_log_bytes"
                );
                let why = EnrichmentError {
                    code: "MAX_LOG_BYTES".into(),
                    message: format!(
                        "log paging stopped after {page_no} pages ({stored_bytes} bytes): the next page \
                         ({page_bytes} bytes) would pass opensteer.max_log_bytes = {}",
                        fetcher.max_log_bytes
                    ),
                };
                partial = partial.or(Some(why.clone()));
                self.store.finish_logs(seq, Some(why)).await?;
                break;
            }
            let more = !(entries.is_empty() || next.is_none() || repeated);
            let at_limit = more && page_no + 1 >= fetcher.max_log_pages;
            if at_limit {
                tracing::warn!(
                    pages = page_no + 1,
                    "log paging stopped at opensteer.max_log_pages"
                );
            }
            complete = !more || at_limit;
            let stopped = at_limit.then(|| page_limit(fetcher.max_log_pages));
            partial = partial.or(stopped.clone());
            self.store
                .save_log_page(
                    seq,
                    LogPage {
                        page: page_no,
                        text,
                        entries,
                        followed_cursor: cursor.clone(),
                        next_cursor: next.clone(),
                        complete,
                        skip_stored: repeated,
                        stopped,
                    },
                )
                .await?;
            stored_bytes += page_bytes;
            page_no += 1;
            cursor = next;
        }
        Ok(Fetched::Done { partial })
    }

    fn count_api<T>(&self, r: &Result<T, OpensteerError>) {
        match r {
            Ok(_) => self.metrics.observe_api_call("OK"),
            Err(e) => self.metrics.observe_api_call(&e.code()),
        }
    }
}

/// The run status an event type stands for (SPEC §5).
fn expected_status(event_type: &str) -> Option<&'static str> {
    match event_type.parse::<EventType>().ok()? {
        EventType::RunSucceeded => Some("succeeded"),
        EventType::RunFailed => Some("failed"),
    }
}

/// The wait before the fetch after `polls` fetches of an unsettled run, ms.
fn settle_wait(polls: u32) -> i64 {
    let wait = SETTLE_FIRST_WAIT.saturating_mul(1u32 << polls.min(16));
    wait.min(SETTLE_MAX_WAIT).as_millis() as i64
}

/// Why paging stopped at `opensteer.max_log_pages`.
fn page_limit(max: u32) -> EnrichmentError {
    EnrichmentError {
        code: "MAX_LOG_PAGES".into(),
        message: format!(
            "log paging stopped at opensteer.max_log_pages = {max}; older pages were not fetched"
        ),
    }
}

/// What the hooks are told when the fetch ends on an error: `none` when the
/// run was not fetched, else `partial`, for the first reason there was.
fn after_giving_up(ev: &StoredEvent, code: String, message: String) -> Enrichment {
    if ev.run_json.is_none() {
        return Enrichment::because(EnrichmentStatus::None, code, message);
    }
    match &ev.enrichment {
        Some(Enrichment {
            status: EnrichmentStatus::Partial,
            error: Some(first),
        }) => Enrichment::because(
            EnrichmentStatus::Partial,
            first.code.clone(),
            format!("{}; then log paging stopped: {message}", first.message),
        ),
        _ => Enrichment::because(EnrichmentStatus::Partial, code, message),
    }
}

/// A wait in ms, for messages ("1s", "2m 30s").
fn wait_text(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or(0);
    // Whole seconds read better; a jittered wait under one is shown in ms.
    let d = if ms >= 1_000 {
        Duration::from_secs(ms.div_ceil(1_000))
    } else {
        Duration::from_millis(ms)
    };
    humantime::format_duration(d).to_string()
}
