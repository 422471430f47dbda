//! The delivery job: builds the hook document (SPEC §6) from the stored
//! event, hands it to the hook's [`crate::hooks::Sink`], and records how the
//! attempt ended.

use std::time::Instant;

use serde_json::value::RawValue;

use super::retry::{self, Step};
use super::{attempt_started, Dispatcher};
use crate::clock::format_rfc3339_ms;
use crate::domain::{DocumentEvent, Enrichment, EnrichmentError, EnrichmentStatus, HookDocument};
use crate::hooks::{Delivery, PayloadFile};
use crate::store::{AttemptOutcome, AttemptRecord, ClaimedJob, JobNext, StoreError, StoredEvent};

impl Dispatcher {
    #[tracing::instrument(skip_all, fields(job_id = job.id, event_id, hook = %job.hook, attempt = job.attempt))]
    pub(super) async fn run_delivery(&self, job: &ClaimedJob) -> Result<JobNext, StoreError> {
        let mut rec = attempt_started(self.clock.now_ms());
        let started = Instant::now();
        let seq = job.event_seq;
        let ev = self.store.load_event(seq).await?;
        let logs = self.store.load_logs(seq).await?;
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
        let doc = match build_document(&ev, logs) {
            Ok(doc) => doc,
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
        // SPEC §3: evaluated now, after the fetch, so `/run/...` can be asked.
        if let Some(Err(miss)) = hook.route.as_ref().map(|r| r.matches_document(&doc)) {
            rec.outcome = AttemptOutcome::Skipped;
            rec.error_code = Some("NOT_MATCHED".into());
            rec.error = Some(miss.to_string());
            return self
                .finish_delivery(job, rec, JobNext::Skipped, started)
                .await;
        }
        // Dropped (the file removed) when this attempt ends, however it ends.
        let payload = {
            let doc = doc.clone();
            PayloadFile::create(&self.payload_dir, move |w| doc.write_to(w)).await
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
            JobNext::Skipped => tracing::info!("skipped, the hook was not started: {error}"),
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

/// The hook document for a stored event and its logs (oldest first).
pub fn build_document(
    ev: &StoredEvent,
    logs: Vec<String>,
) -> Result<HookDocument, serde_json::Error> {
    let payload: Box<RawValue> = serde_json::from_slice(&ev.body)?;
    let run = ev
        .run_json
        .as_deref()
        .map(|r| RawValue::from_string(r.to_owned()))
        .transpose()?;
    let logs = if ev.run_json.is_some() || !logs.is_empty() {
        Some(
            logs.into_iter()
                .map(RawValue::from_string)
                .collect::<Result<Vec<_>, _>>()?,
        )
    } else {
        None
    };
    let enrichment = match (&ev.run_json, &ev.enrichment_error) {
        (Some(_), None) if ev.logs_complete => Enrichment {
            status: EnrichmentStatus::Complete,
            error: None,
        },
        (Some(_), error) => Enrichment {
            status: EnrichmentStatus::Partial,
            error: Some(EnrichmentError {
                code: "FETCH_FAILED".into(),
                message: error
                    .clone()
                    .unwrap_or_else(|| "log paging stopped early".into()),
            }),
        },
        (None, error) => Enrichment {
            status: EnrichmentStatus::None,
            error: error.as_ref().map(|e| EnrichmentError {
                code: "FETCH_FAILED".into(),
                message: e.clone(),
            }),
        },
    };
    Ok(HookDocument {
        event: DocumentEvent {
            id: ev.id.clone(),
            event_type: ev.event_type.clone(),
            run_id: ev.run_id.clone(),
            received_at: format_rfc3339_ms(ev.received_at),
            payload,
        },
        run,
        logs,
        enrichment,
    })
}
