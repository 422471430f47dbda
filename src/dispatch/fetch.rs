//! The fetch job: the run, then its log pages (SPEC §5), each saved as it
//! arrives so that a retry resumes where the last attempt stopped.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::retry::{self, FetchFailureReason, FetchPolicy};
use super::{attempt_started, Dispatcher};
use crate::clock::Clock;
use crate::config::{OpensteerSettings, QueueSettings};
use crate::opensteer::{OpensteerClient, OpensteerError};
use crate::store::{AttemptOutcome, ClaimedJob, JobNext, LogPage, StoreError};

/// The API client and what the fetch job needs around it.
#[derive(Debug)]
pub struct Fetcher {
    client: OpensteerClient,
    max_log_pages: u32,
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

impl Dispatcher {
    #[tracing::instrument(skip_all, fields(job_id = job.id, event_seq = job.event_seq, attempt = job.attempt))]
    pub(super) async fn run_fetch(&self, job: &ClaimedJob) -> Result<JobNext, StoreError> {
        let mut rec = attempt_started(self.clock.now_ms());
        let started = Instant::now();
        let Some(fetcher) = &self.fetcher else {
            // Nothing to fetch from: the deliveries go ahead with the payload.
            self.record(job, rec, JobNext::Succeeded, self.clock.now_ms())
                .await?;
            return Ok(JobNext::Succeeded);
        };
        let result = self.fetch_everything(fetcher, job.event_seq).await;
        let now = self.clock.now_ms();
        rec.duration_ms = started.elapsed().as_millis() as i64;
        let next = match result {
            Ok(()) => JobNext::Succeeded,
            // Our own storage failed: leave the job for the lease to expire.
            Err(FetchError::Store(e)) => return Err(e),
            Err(FetchError::Api(e)) => {
                let code = e.code();
                let s = retry::after_fetch_failure(
                    &e.class(),
                    job.attempt,
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
                let wait_ms = match s.step.next {
                    JobNext::RetryAt(at) => at - now,
                    _ => 0,
                };
                match s.reason {
                    FetchFailureReason::Transient => {
                        tracing::warn!(code = %code, wait_ms, "fetching the run failed; will retry: {e}")
                    }
                    FetchFailureReason::RateLimited => {
                        tracing::warn!(code = %code, wait_ms, "Opensteer API rate limit: fetches paused")
                    }
                    FetchFailureReason::AuthFault => {
                        self.metrics.observe_auth_fault();
                        tracing::error!(
                            code = %code,
                            "THE OPENSTEER API REFUSED OUR KEY: {e}; fix opensteer.api_key and restart; events wait meanwhile"
                        );
                    }
                    FetchFailureReason::Terminal => tracing::error!(
                        code = %code,
                        "fetching the run failed for good; hooks get the event without it: {e}"
                    ),
                    FetchFailureReason::GaveUp => tracing::error!(
                        code = %code,
                        attempts = job.attempt,
                        "giving up fetching the run; hooks get the event without it: {e}"
                    ),
                }
                rec.outcome = s.step.outcome;
                rec.error_code = Some(code);
                rec.error = Some(e.to_string());
                s.step.next
            }
        };
        debug_assert!(rec.outcome != AttemptOutcome::Interrupted);
        self.record(job, rec, next, now).await?;
        Ok(next)
    }

    /// Fetches the run (once) and the remaining log pages, saving each as it
    /// arrives so a retry resumes where the last attempt stopped.
    async fn fetch_everything(&self, fetcher: &Fetcher, seq: i64) -> Result<(), FetchError> {
        let client = &fetcher.client;
        let ev = self.store.load_event(seq).await?;
        if ev.run_json.is_none() {
            let run = client.fetch_run(&ev.run_id).await;
            self.count_api(&run);
            let run = serde_json::to_string(&run?.run).map_err(|e| {
                StoreError::Database(format!("cannot keep the run as JSON text: {e}"))
            })?;
            self.store.save_run(seq, run).await?;
        }
        let (mut page_no, mut cursor, mut complete) =
            (ev.logs_pages, ev.logs_cursor, ev.logs_complete);
        while !complete {
            if page_no >= fetcher.max_log_pages {
                tracing::warn!(
                    pages = page_no,
                    "log paging stopped at opensteer.max_log_pages"
                );
                self.store.finish_logs(seq).await?;
                break;
            }
            let page = client.fetch_logs_page(&ev.run_id, cursor.as_deref()).await;
            self.count_api(&page);
            let page = page?;
            let mut entries = page
                .entries
                .iter()
                .map(serde_json::to_string)
                .collect::<Result<Vec<String>, _>>()
                .map_err(|e| StoreError::Database(format!("cannot keep a log entry: {e}")))?;
            let next = page.next_cursor;
            let repeated = match &next {
                Some(n) if Some(n) == cursor.as_ref() => true,
                Some(n) => self.store.cursor_seen(seq, n.clone()).await?,
                None => false,
            };
            if repeated {
                tracing::warn!("the logs API repeated a cursor; paging stopped");
                // A looping API may have answered a page we already stored
                // (e.g. it ignores the cursor): keep only what is new, so no
                // entry reaches the hooks twice.
                let stored: HashSet<String> =
                    self.store.load_logs(seq).await?.into_iter().collect();
                entries.retain(|e| !stored.contains(e));
            }
            complete = entries.is_empty()
                || next.is_none()
                || repeated
                || page_no + 1 >= fetcher.max_log_pages;
            self.store
                .save_log_page(
                    seq,
                    LogPage {
                        page: page_no,
                        entries,
                        followed_cursor: cursor.clone(),
                        next_cursor: next.clone(),
                        complete,
                    },
                )
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
}
