//! The delivery job: builds the hook document (SPEC §6) from the stored
//! event, writes it to the attempt's payload file with every log entry
//! streamed from the store, hands both to the hook's [`crate::hooks::Sink`],
//! and records how the attempt ended.
//!
//! Memory: the logs pass from the database to the payload file in chunks;
//! the document in memory holds only the newest entries a summary needs
//! (a hook's `summary_log_lines`, within [`SUMMARY_MAX_BYTES`]).

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use serde_json::value::RawValue;

use super::retry::{self, Step};
use super::{attempt_started, Dispatcher};
use crate::clock::format_rfc3339_ms;
use crate::domain::{DocumentEvent, Enrichment, EnrichmentStatus, HookDocument};
use crate::hooks::{Delivery, PayloadFile};
use crate::store::{
    AttemptOutcome, AttemptRecord, ClaimedJob, JobNext, LogChunks, NewestLogs, StoreError,
    StoredEvent, SummaryBounds,
};

/// The most bytes of log entries the document holds for a summary (the
/// newest entries, at least one): an e-mail shows a few lines of 500
/// characters each, so this is plenty, and it bounds the memory a delivery
/// takes whatever `log_lines` says.
pub const SUMMARY_MAX_BYTES: usize = 1024 * 1024;
/// A log entry larger than this is shown in a summary as a note of its size.
pub const SUMMARY_ENTRY_MAX_BYTES: usize = 16 * 1024;

impl Dispatcher {
    #[tracing::instrument(skip_all, fields(job_id = job.id, event_id, hook = %job.hook, attempt = job.attempt))]
    pub(super) async fn run_delivery(&self, job: &ClaimedJob) -> Result<JobNext, StoreError> {
        let mut rec = attempt_started(self.clock.now_ms());
        let started = Instant::now();
        let seq = job.event_seq;
        let ev = self.store.load_event(seq).await?;
        tracing::Span::current().record("event_id", ev.id.as_str());
        let Some(hook) = self.hooks.get(&job.hook) else {
            rec.outcome = AttemptOutcome::Failed;
            rec.error_code = Some("HOOK_NOT_CONFIGURED".into());
            rec.error = Some(format!(
                "no hook named {:?} in the configuration any more; add it back and `steerhook replay`",
                job.hook
            ));
            return self
                .finish_delivery(job, rec, JobNext::Failed, started)
                .await;
        };
        // No record: the event was stored without [opensteer], or before
        // enrichment was recorded and never fetched.
        let enrichment = ev
            .enrichment
            .clone()
            .unwrap_or_else(Enrichment::not_configured);
        let with_logs = enrichment.status != EnrichmentStatus::None;
        let summary_lines = hook.sink.summary_log_lines();
        let newest = match (with_logs, summary_lines) {
            (false, _) => None,
            // Nothing to read for a kind that takes only the payload file.
            (true, 0) => Some(NewestLogs::default()),
            (true, entries) => {
                let bounds = SummaryBounds {
                    entries,
                    total_bytes: SUMMARY_MAX_BYTES,
                    entry_bytes: SUMMARY_ENTRY_MAX_BYTES,
                };
                Some(self.store.newest_logs(seq, bounds).await?)
            }
        };
        let doc = match build_document(&ev, enrichment, newest) {
            Ok(doc) => Arc::new(doc),
            Err(e) => {
                // Cannot happen for rows we wrote (the body was parsed at ingest);
                // recorded rather than panicking if the file was edited by hand.
                rec.outcome = AttemptOutcome::Failed;
                rec.error_code = Some("STORED_EVENT_UNREADABLE".into());
                rec.error = Some(e.to_string());
                return self
                    .finish_delivery(job, rec, JobNext::Failed, started)
                    .await;
            }
        };
        // Dropped (the file removed) when this attempt ends, however it ends.
        let payload = {
            let doc = doc.clone();
            let logs = with_logs.then(|| self.store.stream_logs_json(seq));
            PayloadFile::create(&self.payload_dir, move |w| {
                doc.write_to(w, |w| copy_log_chunks(logs, w))
            })
            .await
        };
        let payload = match payload {
            Ok(p) => p,
            Err(e) => {
                // Our own disk: worth a retry, like a hook that failed.
                rec.outcome = AttemptOutcome::Retry;
                rec.error_code = Some("PAYLOAD_FILE".into());
                rec.error = Some(format!(
                    "cannot write the payload file in {}: {e}",
                    self.payload_dir.display()
                ));
                let next = if job.attempt < hook.max_attempts {
                    JobNext::RetryAt(
                        self.clock.now_ms()
                            + retry::Backoff::of(&self.queue)
                                .delay(job.attempt, self.draw())
                                .as_millis() as i64,
                    )
                } else {
                    rec.outcome = AttemptOutcome::Failed;
                    JobNext::Failed
                };
                return self.finish_delivery(job, rec, next, started).await;
            }
        };
        let out = hook
            .sink
            .deliver(Delivery {
                hook: &job.hook,
                document: &doc,
                payload: payload.path(),
                attempt: job.attempt,
                cancel: self.hook_cancel.clone(),
            })
            .await;
        drop(payload);
        rec.exit_code = out.exit_code;
        rec.stdout = out.output;
        rec.stderr = out.error_output;
        let step = match out.result {
            Ok(()) => Step {
                outcome: AttemptOutcome::Ok,
                next: JobNext::Succeeded,
            },
            Err(failure) => {
                let step = retry::after_delivery_failure(
                    &failure,
                    job.attempt,
                    hook.max_attempts,
                    self.clock.now_ms(),
                    retry::Backoff::of(&self.queue),
                    self.queue.retry_after_max,
                    self.draw(),
                );
                rec.error_code = Some(failure.code.to_owned());
                rec.error = Some(failure.message);
                step
            }
        };
        rec.outcome = step.outcome;
        self.finish_delivery(job, rec, step.next, started).await
    }

    /// Counts, logs (one line per attempt) and records a delivery attempt.
    async fn finish_delivery(
        &self,
        job: &ClaimedJob,
        mut rec: AttemptRecord,
        next: JobNext,
        started: Instant,
    ) -> Result<JobNext, StoreError> {
        let took = started.elapsed();
        rec.duration_ms = took.as_millis() as i64;
        self.metrics
            .observe_delivery(&job.hook, rec.outcome.as_str(), took);
        let code = rec.error_code.as_deref().unwrap_or("");
        let error = rec.error.as_deref().unwrap_or("");
        let now = self.clock.now_ms();
        match next {
            JobNext::Succeeded => {
                tracing::info!(duration_ms = rec.duration_ms, "delivered")
            }
            JobNext::RetryAt(at) if rec.outcome == AttemptOutcome::Interrupted => tracing::warn!(
                code,
                retry_in_ms = at - now,
                "delivery interrupted by shutdown; it runs again: {error}"
            ),
            JobNext::RetryAt(at) => tracing::warn!(
                code,
                retry_in_ms = at - now,
                duration_ms = rec.duration_ms,
                "delivery attempt failed; will retry: {error}"
            ),
            JobNext::Failed => tracing::error!(
                code,
                duration_ms = rec.duration_ms,
                "delivery failed for good; `steerhook replay` runs it again: {error}"
            ),
        }
        self.record(job, rec, next, now).await?;
        Ok(next)
    }
}

/// Copies the streamed `[...]` of the logs to `w` (on a blocking thread).
/// A stream that ends before its closing `]` (the reader died) is an error,
/// never a truncated document.
fn copy_log_chunks(logs: Option<LogChunks>, w: &mut dyn Write) -> std::io::Result<()> {
    let Some(mut logs) = logs else {
        return w.write_all(b"[]");
    };
    let mut last = None;
    while let Some(chunk) = logs.blocking_recv() {
        let chunk = chunk.map_err(std::io::Error::other)?;
        w.write_all(&chunk)?;
        last = chunk.last().copied().or(last);
    }
    if last != Some(b']') {
        return Err(std::io::Error::other(
            "the stored logs stopped before their end",
        ));
    }
    Ok(())
}

/// The hook document for a stored event, what its fetch found, and the
/// newest of its logs (`None`: `logs` is null).
pub fn build_document(
    ev: &StoredEvent,
    enrichment: Enrichment,
    newest: Option<NewestLogs>,
) -> Result<HookDocument, serde_json::Error> {
    let payload: Box<RawValue> = serde_json::from_slice(&ev.body)?;
    let run = ev
        .run_json
        .as_deref()
        .map(|r| RawValue::from_string(r.to_owned()))
        .transpose()?;
    let logs_total = newest.as_ref().map_or(0, |n| n.total);
    let logs = newest
        .map(|n| {
            n.entries
                .into_iter()
                .map(RawValue::from_string)
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    Ok(HookDocument {
        event: DocumentEvent {
            id: ev.id.clone(),
            sender_id: ev.sender_id.clone(),
            event_type: ev.event_type.clone(),
            run_id: ev.run_id.clone(),
            received_at: format_rfc3339_ms(ev.received_at),
            payload,
        },
        run,
        logs,
        logs_total,
        enrichment,
    })
}
