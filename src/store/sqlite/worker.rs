//! The worker's statements on SQLite: claims, leases, attempts recorded
//! with the event's status kept in step, and recovery after a restart.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::enrichment::{fallback_enrichment, save_enrichment};
use super::{expand, SqliteStore};
use crate::store::{AttemptRecord, ClaimFilter, ClaimedJob, JobKind, JobNext, StoreError};

impl SqliteStore {
    /// Claims a job; when none can be claimed although a slot is free,
    /// first makes the jobs of the next waiting events (see [`expand`]).
    /// Relaxed: a claim lost to a power failure leaves the job pending, as
    /// every restart does with claimed jobs anyway, and jobs lost with it
    /// are made again (their events still wait).
    ///
    /// Jobs are made as the worker needs them, not as events arrive: while
    /// hooks drain a backlog, ingest is not joined by two job rows (and
    /// their index entries) per event in the writer's commits.
    pub async fn claim_due_job(&self, f: ClaimFilter) -> Result<Option<ClaimedJob>, StoreError> {
        let routing = self.inner.routing.clone();
        self.write_relaxed(move |tx| {
            if let Some(job) = claim_due_job(tx, &f)? {
                return Ok(Some(job));
            }
            // A free slot found nothing: a hook below its concurrency (or the
            // fetcher, when there is one) has no job due. Its next jobs may
            // be among the waiting events.
            let a_slot_is_free = f.deliveries_allowed || (routing.enrich && f.fetch_allowed);
            if !a_slot_is_free || expand::expand(tx, &routing)? == 0 {
                return Ok(None);
            }
            claim_due_job(tx, &f)
        })
        .await
    }

    /// The earliest time a pending job becomes due.
    pub async fn next_due_at(&self) -> Result<Option<i64>, StoreError> {
        self.read(next_due_at).await
    }

    /// Records an attempt (durably: its outcome must survive).
    pub async fn record_attempt(
        &self,
        job: ClaimedJob,
        rec: AttemptRecord,
        next: JobNext,
        now: i64,
    ) -> Result<(), StoreError> {
        self.write(move |tx| record_attempt(tx, &job, &rec, next, now))
            .await
    }

    /// Renews leases (relaxed: a lost renewal costs at worst a job that a
    /// restart runs again, as it would anyway).
    pub async fn extend_leases(&self, ids: Vec<i64>, until: i64) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.write_relaxed(move |tx| extend_leases(tx, &ids, until))
            .await
    }

    /// Puts jobs left running by the previous process back in the queue.
    pub async fn recover_interrupted(&self, now: i64) -> Result<usize, StoreError> {
        self.write(move |tx| recover_interrupted(tx, now)).await
    }
}

/// Atomically takes the oldest due job (or one whose lease expired) and marks it running.
pub(super) fn claim_due_job(
    tx: &Connection,
    f: &ClaimFilter,
) -> Result<Option<ClaimedJob>, StoreError> {
    let busy = json_list(&f.busy_hooks);
    let in_flight = json_list(&f.in_flight);
    let job = tx
        .prepare_cached(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1,
                    lease_until = ?1 + ?2, updated_at = ?1
             WHERE id = (
                -- The pending branches walk jobs_pending_by_kind in id order and
                -- stop at the first job they may take (the planner, left alone,
                -- prefers jobs_by_state_due and sorts every due job). ?6 false
                -- skips the deliveries' walk, which would otherwise step over
                -- every waiting delivery of a busy hook on each claim. Running
                -- jobs are few (at most the concurrency, plus a crash's).
                -- Busy hooks and paused hooks (`hooks pause`) are one list:
                -- two NOT IN lists cost a third more per claim.
                SELECT id FROM (
                    SELECT id FROM jobs INDEXED BY jobs_pending_by_kind
                    WHERE state = 'pending' AND kind = 'fetch' AND ?4 AND due_at <= ?1
                    ORDER BY id LIMIT 1)
                UNION ALL
                SELECT id FROM (
                    SELECT id FROM jobs INDEXED BY jobs_pending_by_kind
                    WHERE state = 'pending' AND kind = 'deliver' AND ?6 AND due_at <= ?1
                      AND hook NOT IN (SELECT value FROM json_each(?3)
                                       UNION ALL SELECT name FROM hooks WHERE paused)
                    ORDER BY id LIMIT 1)
                UNION ALL
                SELECT id FROM (
                    SELECT id FROM jobs
                    WHERE state = 'running' AND lease_until <= ?1
                      AND id NOT IN (SELECT value FROM json_each(?5))
                      AND (kind <> 'fetch' OR ?4)
                      AND (kind <> 'deliver' OR hook NOT IN (SELECT value FROM json_each(?3)
                                                             UNION ALL SELECT name FROM hooks WHERE paused))
                    ORDER BY id LIMIT 1)
                ORDER BY id LIMIT 1)
             RETURNING id, event_seq, kind, hook, attempts",
        )?
        .query_row(
            params![
                f.now,
                f.lease_ms,
                busy,
                f.fetch_allowed,
                in_flight,
                f.deliveries_allowed
            ],
            |r| {
                Ok(ClaimedJob {
                    id: r.get(0)?,
                    event_seq: r.get(1)?,
                    kind: r.get(2)?,
                    hook: r.get(3)?,
                    attempt: r.get(4)?,
                })
            },
        )
        .optional()?;
    Ok(job)
}

/// A list as a JSON array, for `json_each(?)`: SQLite's way of taking a
/// list as one parameter.
// Strings and integers always serialise.
#[allow(clippy::expect_used)]
fn json_list<T: serde::Serialize>(items: &[T]) -> String {
    serde_json::to_string(items).expect("a list of strings or integers serialises")
}

/// Sets the lease of the running jobs `ids`.
pub(super) fn extend_leases(tx: &Connection, ids: &[i64], until: i64) -> Result<(), StoreError> {
    let ids = json_list(ids);
    tx.prepare_cached(
        "UPDATE jobs SET lease_until = ?2
         WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'running'",
    )?
    .execute(params![ids, until])?;
    Ok(())
}

/// The earliest time a pending job becomes due, unix ms.
pub(super) fn next_due_at(conn: &Connection) -> Result<Option<i64>, StoreError> {
    // An event whose jobs are still to be made (`expand`) is work due since
    // it arrived. The oldest waiting event is read, not the earliest arrival
    // among all of them: a backlog waits there (jobs are made as hooks take
    // them), and the oldest arrived within milliseconds of the earliest.
    Ok(conn.query_row(
        "SELECT min(at) FROM (
             SELECT min(due_at) AS at FROM jobs WHERE state = 'pending'
             UNION ALL
             SELECT * FROM (SELECT e.received_at FROM unexpanded u CROSS JOIN events e ON e.seq = u.seq
                            ORDER BY u.seq LIMIT 1))",
        [],
        |r| r.get(0),
    )?)
}

/// Records the attempt and moves the job on, in one transaction. When a fetch
/// job ends (either way), the event's deliveries are released. Keeps the
/// event's status in step with its jobs.
pub(super) fn record_attempt(
    tx: &Transaction<'_>,
    job: &ClaimedJob,
    rec: &AttemptRecord,
    next: JobNext,
    now: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO attempts (job_id, attempt, started_at, duration_ms, outcome, error_code, error, exit_code, stdout, stderr, replay)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, (SELECT replays FROM jobs WHERE id = ?1))",
    )?
    .execute(params![
        job.id,
        job.attempt,
        rec.started_at,
        rec.duration_ms,
        rec.outcome,
        rec.error_code,
        rec.error,
        rec.exit_code,
        rec.stdout,
        rec.stderr
    ])?;
    let (state, due, finished) = match next {
        JobNext::Succeeded => ("succeeded", None, Some(now)),
        JobNext::Failed => ("failed", None, Some(now)),
        JobNext::Skipped => ("skipped", None, Some(now)),
        JobNext::RetryAt(at) => ("pending", Some(at), None),
    };
    tx.prepare_cached(
        "UPDATE jobs SET state = ?2, due_at = coalesce(?3, due_at), lease_until = NULL,
                last_error_code = ?4, last_error = ?5, updated_at = ?6, finished_at = ?7
         WHERE id = ?1",
    )?
    .execute(params![
        job.id,
        state,
        due,
        rec.error_code,
        rec.error,
        now,
        finished
    ])?;
    if job.kind == JobKind::Fetch && !matches!(next, JobNext::RetryAt(_)) {
        tx.prepare_cached(
            "UPDATE jobs SET state = 'pending', due_at = ?2, updated_at = ?2
             WHERE event_seq = ?1 AND kind = 'deliver' AND state = 'blocked'",
        )?
        .execute(params![job.event_seq, now])?;
        match &rec.enrichment {
            Some(e) => save_enrichment(tx, job.event_seq, e)?,
            // A fetch that ended without deciding (it panicked): decided
            // from what it stored.
            None => fallback_enrichment(tx, job, rec, next)?,
        }
    }
    refresh_event_status(tx, job.event_seq)?;
    Ok(())
}

/// Sets the event's status from its jobs: pending while any is unfinished,
/// else failed if a delivery failed, else done. A fetch that gave up does
/// not fail the event: its hooks ran, told so by the enrichment (SPEC §2).
pub(super) fn refresh_event_status(tx: &Connection, event_seq: i64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE events SET status = CASE
            WHEN EXISTS (SELECT 1 FROM jobs WHERE event_seq = ?1 AND state IN ('blocked','pending','running')) THEN 'pending'
            WHEN EXISTS (SELECT 1 FROM jobs WHERE event_seq = ?1 AND kind = 'deliver' AND state = 'failed') THEN 'failed'
            ELSE 'done' END
         WHERE seq = ?1",
    )?
    .execute([event_seq])?;
    Ok(())
}

/// Puts jobs left running by a previous process back in the queue, recording
/// the interrupted attempt, and makes waiting fetches due now. Called once by
/// `serve` before the worker starts. Returns the number of interrupted jobs.
pub(super) fn recover_interrupted(tx: &Transaction<'_>, now: i64) -> Result<usize, StoreError> {
    tx.execute(
        "INSERT INTO attempts (job_id, attempt, started_at, duration_ms, outcome, error_code, error, replay)
         SELECT id, attempts, updated_at, max(0, ?1 - updated_at), 'interrupted', 'INTERRUPTED',
                'the daemon stopped while this attempt ran; it runs again', replays
         FROM jobs WHERE state = 'running'",
        [now],
    )?;
    let n = tx.execute(
        "UPDATE jobs SET state = 'pending', due_at = ?1, lease_until = NULL, updated_at = ?1,
                last_error_code = 'INTERRUPTED', last_error = 'the daemon stopped while this attempt ran'
         WHERE state = 'running'",
        [now],
    )?;
    // Fetches waiting out an upstream fault run at once: a restart is how the
    // operator says it is fixed (SPEC §7: a rejected key resumes once fixed
    // and restarted). If the API still refuses, the first answer pauses every
    // fetch again, so this costs one request, not one per event.
    tx.execute(
        "UPDATE jobs SET due_at = ?1, updated_at = ?1
         WHERE kind = 'fetch' AND state = 'pending' AND due_at > ?1",
        [now],
    )?;
    Ok(n)
}
