//! The statements of ingest, the worker and retention.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::domain::{Enrichment, EnrichmentError, EnrichmentStatus};
use crate::store::logs::{ChunkedArray, Newest};
use crate::store::{
    event_id_candidates, AttemptRecord, ClaimFilter, ClaimedJob, InsertOutcome, JobKind, JobNext,
    LogPage, NewEvent, NewestLogs, Pruned, QuarantinedBody, QueueCounts, Routing, StoreError,
    StoredEvent, SummaryBounds,
};

/// Inserts the event, with its jobs to be made (`unexpanded`), or reports
/// the duplicate. Runs inside the writer's batch transaction.
pub(super) fn insert_event_with_jobs(
    tx: &Transaction<'_>,
    ev: &NewEvent,
    routing: &Routing,
) -> Result<InsertOutcome, StoreError> {
    let e = &ev.event;
    // The dedupe key decides first: a conflict on it is a duplicate,
    // whatever id the new copy carries. A conflict on the id alone (another
    // run sent under the same id) moves on to the next candidate id, so ids
    // stay unique (SPEC §5). Both are the constraints' answer, inside this
    // transaction: no read-then-write race.
    // Not `RETURNING seq`: SQLite gathers RETURNING rows in a temporary
    // b-tree, opened and closed per statement. The row count says whether
    // the row was stored, and then its rowid is the last one inserted.
    let mut stored_as = None;
    for id in event_id_candidates(&e.id, e.event_type.as_str(), &e.run_id) {
        let inserted = tx
            .prepare_cached(
                "INSERT INTO events (id, sender_id, event_type, run_id, signed_at, received_at, client_addr, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                id,
                e.sender_id,
                e.event_type.as_str(),
                e.run_id,
                e.signed_at as i64,
                ev.received_at,
                ev.client_addr,
                e.body
            ])?;
        if inserted == 1 {
            stored_as = Some(id);
            break;
        }
        let existing: Option<String> = tx
            .prepare_cached("SELECT id FROM events WHERE event_type = ?1 AND run_id = ?2")?
            .query_row(params![e.event_type.as_str(), e.run_id], |r| r.get(0))
            .optional()?;
        if let Some(id) = existing {
            return Ok(InsertOutcome::Duplicate { id });
        }
    }
    let Some(id) = stored_as else {
        return Err(StoreError::Database(format!(
            "no free event id derived from {:?}",
            e.id
        )));
    };
    let seq = tx.last_insert_rowid();
    if super::expand::projected(routing, e.event_type).is_empty() {
        // Nothing to do for this event: it is finished as soon as it is stored.
        tx.prepare_cached("UPDATE events SET status = 'done' WHERE seq = ?1")?
            .execute([seq])?;
    } else {
        // Its jobs are made after the answer, by the worker (see `expand`).
        tx.prepare_cached("INSERT INTO unexpanded (seq) VALUES (?1)")?
            .execute([seq])?;
    }
    Ok(InsertOutcome::Accepted { id })
}

/// Keeps a refused body for inspection.
pub(super) fn insert_quarantine(tx: &Connection, q: &QuarantinedBody) -> Result<i64, StoreError> {
    tx.execute(
        "INSERT INTO quarantine (received_at, client_addr, signed_at, reason, body) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![q.received_at, q.client_addr, q.signed_at as i64, q.reason, q.body],
    )?;
    Ok(tx.last_insert_rowid())
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
    // it arrived.
    Ok(conn.query_row(
        "SELECT min(at) FROM (
             SELECT min(due_at) AS at FROM jobs WHERE state = 'pending'
             UNION ALL
             SELECT min(e.received_at) FROM unexpanded u JOIN events e ON e.seq = u.seq)",
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

/// The enrichment of a fetch that ended without saying (a panic): none
/// without a run, else partial when it failed, complete when it did not.
fn fallback_enrichment(
    tx: &Transaction<'_>,
    job: &ClaimedJob,
    rec: &AttemptRecord,
    next: JobNext,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE events SET
            enrichment_status = CASE WHEN run_json IS NULL THEN 'none'
                                     WHEN ?2 THEN 'partial' ELSE 'complete' END,
            enrichment_code = CASE WHEN ?2 THEN ?3 END,
            enrichment_error = CASE WHEN ?2 THEN ?4 END
         WHERE seq = ?1 AND enrichment_status IS NULL",
    )?
    .execute(params![
        job.event_seq,
        next == JobNext::Failed,
        rec.error_code,
        rec.error
    ])?;
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

/// Loads one event row.
pub(super) fn load_event(conn: &Connection, seq: i64) -> Result<StoredEvent, StoreError> {
    conn.prepare_cached(
        "SELECT seq, id, sender_id, event_type, run_id, received_at, body, run_json, logs_cursor,
                logs_pages, logs_complete, logs_bytes, settle_polls,
                enrichment_status, enrichment_code, enrichment_error
         FROM events WHERE seq = ?1",
    )?
    .query_row([seq], |r| {
        Ok(StoredEvent {
            seq: r.get(0)?,
            id: r.get(1)?,
            sender_id: r.get(2)?,
            event_type: r.get(3)?,
            run_id: r.get(4)?,
            received_at: r.get(5)?,
            body: r.get(6)?,
            run_json: r.get(7)?,
            logs_cursor: r.get(8)?,
            logs_pages: r.get(9)?,
            logs_complete: r.get(10)?,
            logs_bytes: r.get(11)?,
            settle_polls: r.get(12)?,
            enrichment: enrichment_from(r.get(13)?, r.get(14)?, r.get(15)?),
        })
    })
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("event #{seq}")))
}

/// The enrichment of an event row's three columns.
pub(super) fn enrichment_from(
    status: Option<EnrichmentStatus>,
    code: Option<String>,
    message: Option<String>,
) -> Option<Enrichment> {
    Some(Enrichment {
        status: status?,
        error: code.map(|code| EnrichmentError {
            code,
            message: message.unwrap_or_default(),
        }),
    })
}

/// Whether every stored entry of the event has a timestamp: then they are
/// ordered by it (SPEC §5). Answered from `log_entries_by_ts`.
fn every_entry_has_a_timestamp(conn: &Connection, seq: i64) -> Result<bool, StoreError> {
    Ok(!conn
        .prepare_cached("SELECT 1 FROM log_entries WHERE event_seq = ?1 AND ts IS NULL")?
        .exists([seq])?)
}

/// How many pages' rows the event has (pages are numbered from 0, newest first).
fn stored_pages(conn: &Connection, seq: i64) -> Result<i64, StoreError> {
    let max: Option<i64> = conn
        .prepare_cached("SELECT max(page) FROM log_entries WHERE event_seq = ?1")?
        .query_row([seq], |r| r.get(0))?;
    Ok(max.map_or(0, |m| m + 1))
}

/// The log entries of event `seq` as one JSON array, oldest first in the
/// order of SPEC §5, handed to `emit` in chunks of about
/// 64 KiB (or one entry, if larger). Rows are read one by one
/// inside one read transaction (one snapshot): never the whole log in memory,
/// and no sort, since both orders are index orders. Stops early, without
/// error, when `emit` returns false (nobody reads any more).
pub(super) fn write_logs_json(
    conn: &Connection,
    seq: i64,
    emit: &mut dyn FnMut(Vec<u8>) -> bool,
) -> Result<(), StoreError> {
    let tx = conn.unchecked_transaction()?;
    let mut out = ChunkedArray::new();
    let mut push = |row: &rusqlite::Row<'_>| -> Result<bool, StoreError> {
        Ok(match out.push(entry_bytes(row)?) {
            Some(chunk) => emit(chunk),
            None => true,
        })
    };
    if every_entry_has_a_timestamp(&tx, seq)? {
        let mut stmt = tx.prepare_cached(
            "SELECT entry FROM log_entries WHERE event_seq = ?1 ORDER BY ts, page DESC, pos",
        )?;
        let mut rows = stmt.query([seq])?;
        while let Some(row) = rows.next()? {
            if !push(row)? {
                return Ok(());
            }
        }
    } else {
        let mut stmt = tx.prepare_cached(
            "SELECT entry FROM log_entries WHERE event_seq = ?1 AND page = ?2 ORDER BY pos",
        )?;
        for page in (0..stored_pages(&tx, seq)?).rev() {
            let mut rows = stmt.query(params![seq, page])?;
            while let Some(row) = rows.next()? {
                if !push(row)? {
                    return Ok(());
                }
            }
        }
    }
    emit(out.finish());
    tx.commit()?;
    Ok(())
}

/// The stored text of an entry (first column), without copying it.
fn entry_bytes<'r>(row: &'r rusqlite::Row<'_>) -> Result<&'r [u8], StoreError> {
    row.get_ref(0)?
        .as_bytes()
        .map_err(|e| StoreError::Database(format!("a log entry is not text: {e}")))
}

/// The newest entries of event `seq`, oldest first, within `bounds`, and
/// how many it has in all. An entry over `bounds.entry_bytes` is replaced by
/// a JSON string saying how large it was, without reading it.
pub(super) fn newest_logs(
    conn: &Connection,
    seq: i64,
    bounds: &SummaryBounds,
) -> Result<NewestLogs, StoreError> {
    let tx = conn.unchecked_transaction()?;
    let total: i64 = tx
        .prepare_cached("SELECT count(*) FROM log_entries WHERE event_seq = ?1")?
        .query_row([seq], |r| r.get(0))?;
    let mut newest = Newest::new(bounds);
    if newest.wanted() > 0 && total > 0 {
        if every_entry_has_a_timestamp(&tx, seq)? {
            let mut stmt = tx.prepare_cached(
                "SELECT CASE WHEN octet_length(entry) <= ?3 THEN entry END, octet_length(entry)
                 FROM log_entries WHERE event_seq = ?1
                 ORDER BY ts DESC, page, pos DESC LIMIT ?2",
            )?;
            let mut rows = stmt.query(params![
                seq,
                newest.wanted() as i64,
                bounds.entry_bytes as i64
            ])?;
            while let Some(row) = rows.next()? {
                if !newest.add(row.get(0)?, row.get(1)?) {
                    break;
                }
            }
        } else {
            let mut stmt = tx.prepare_cached(
                "SELECT CASE WHEN octet_length(entry) <= ?4 THEN entry END, octet_length(entry)
                 FROM log_entries WHERE event_seq = ?1 AND page = ?2
                 ORDER BY pos DESC LIMIT ?3",
            )?;
            'pages: for page in 0..stored_pages(&tx, seq)? {
                let mut rows = stmt.query(params![
                    seq,
                    page,
                    newest.wanted() as i64,
                    bounds.entry_bytes as i64
                ])?;
                while let Some(row) = rows.next()? {
                    if !newest.add(row.get(0)?, row.get(1)?) {
                        break 'pages;
                    }
                }
            }
        }
    }
    tx.commit()?;
    Ok(NewestLogs {
        entries: newest.oldest_first(),
        total: total as u64,
    })
}

/// Makes the event's enrichment partial for `why`, unless it already is for
/// an earlier reason (the first reason is the one hooks are told).
fn mark_partial(tx: &Connection, seq: i64, why: &EnrichmentError) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE events SET enrichment_status = 'partial',
            enrichment_error = CASE WHEN enrichment_code IS NULL THEN ?3 ELSE enrichment_error END,
            enrichment_code = coalesce(enrichment_code, ?2)
         WHERE seq = ?1",
    )?
    .execute(params![seq, why.code, why.message])?;
    Ok(())
}

/// Stores the run object, and why it is taken although it has not settled.
pub(super) fn save_run(
    tx: &Connection,
    seq: i64,
    run_json: &str,
    unsettled: Option<&EnrichmentError>,
) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE events SET run_json = ?2 WHERE seq = ?1")?
        .execute(params![seq, run_json])?;
    if let Some(why) = unsettled {
        mark_partial(tx, seq, why)?;
    }
    Ok(())
}

/// Counts one more fetch of a run that had not settled.
pub(super) fn count_settle_poll(tx: &Connection, seq: i64) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE events SET settle_polls = settle_polls + 1 WHERE seq = ?1")?
        .execute([seq])?;
    Ok(())
}

/// Records what the hooks are told about enrichment.
fn save_enrichment(tx: &Connection, seq: i64, e: &Enrichment) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE events SET enrichment_status = ?2, enrichment_code = ?3, enrichment_error = ?4
         WHERE seq = ?1",
    )?
    .execute(params![
        seq,
        e.status,
        e.error.as_ref().map(|x| &x.code),
        e.error.as_ref().map(|x| &x.message)
    ])?;
    Ok(())
}

/// Stores one page of logs and where paging goes next; replaces the page if it
/// was stored before (a retried fetch), so entries are never doubled.
pub(super) fn save_log_page(tx: &Connection, seq: i64, p: &LogPage) -> Result<(), StoreError> {
    let replaced: i64 = tx
        .prepare_cached(
            "SELECT coalesce(sum(octet_length(entry)), 0) FROM log_entries
             WHERE event_seq = ?1 AND page = ?2",
        )?
        .query_row(params![seq, p.page], |r| r.get(0))?;
    tx.prepare_cached("DELETE FROM log_entries WHERE event_seq = ?1 AND page = ?2")?
        .execute(params![seq, p.page])?;
    let mut added: i64 = 0;
    {
        // With `skip_stored`, an entry equal to one of another page is left
        // out. That compares it with each of the event's rows, which is
        // slow for a large log, but only a looping API gets here.
        let mut ins = tx.prepare_cached(if p.skip_stored {
            "INSERT INTO log_entries (event_seq, page, pos, entry, ts)
             SELECT ?1, ?2, ?3, ?4, ?5
             WHERE NOT EXISTS (SELECT 1 FROM log_entries
                               WHERE event_seq = ?1 AND page <> ?2 AND entry = ?4)"
        } else {
            "INSERT INTO log_entries (event_seq, page, pos, entry, ts) VALUES (?1, ?2, ?3, ?4, ?5)"
        })?;
        for (pos, e) in p.entries.iter().enumerate() {
            let text = p.text.get(e.span.clone()).ok_or_else(|| {
                StoreError::Database(format!("log entry {pos} is outside its page"))
            })?;
            let n = ins.execute(params![seq, p.page, pos as i64, text, e.ts_us])?;
            if n == 1 {
                added += text.len() as i64;
            }
        }
    }
    if let Some(c) = &p.followed_cursor {
        tx.prepare_cached(
            "INSERT INTO log_cursors (event_seq, cursor) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        )?
        .execute(params![seq, c])?;
    }
    let next = if p.complete {
        None
    } else {
        p.next_cursor.as_deref()
    };
    tx.prepare_cached(
        "UPDATE events SET logs_cursor = ?2, logs_pages = ?3, logs_complete = ?4,
                logs_bytes = logs_bytes - ?5 + ?6
         WHERE seq = ?1",
    )?
    .execute(params![seq, next, p.page + 1, p.complete, replaced, added])?;
    if let Some(why) = &p.stopped {
        mark_partial(tx, seq, why)?;
    }
    Ok(())
}

/// Whether paging already followed `cursor` for this event.
pub(super) fn cursor_seen(conn: &Connection, seq: i64, cursor: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM log_cursors WHERE event_seq = ?1 AND cursor = ?2")?
        .exists(params![seq, cursor])?)
}

/// Marks paging finished without a new page (a page limit, or the next
/// page would pass `max_log_bytes`), and why it stopped early.
pub(super) fn finish_logs(
    tx: &Connection,
    seq: i64,
    stopped: Option<&EnrichmentError>,
) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE events SET logs_complete = 1, logs_cursor = NULL WHERE seq = ?1")?
        .execute([seq])?;
    if let Some(why) = stopped {
        mark_partial(tx, seq, why)?;
    }
    Ok(())
}

/// Queue depth by kind and state.
pub(super) fn queue_counts(conn: &Connection, now: i64) -> Result<QueueCounts, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT kind, state, count(*) FROM jobs GROUP BY kind, state")?;
    let by_kind_state = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let oldest: Option<i64> = conn.query_row(
        "SELECT min(due_at) FROM jobs WHERE state = 'pending' AND due_at <= ?1",
        [now],
        |r| r.get(0),
    )?;
    Ok(QueueCounts {
        by_kind_state,
        oldest_due_age_ms: oldest.map(|d| now - d),
    })
}

/// The events `prune` deletes: received before `?1`, no unfinished job.
const PRUNABLE: &str = "received_at < ?1
    AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.event_seq = events.seq
                    AND jobs.state IN ('blocked', 'pending', 'running'))
    AND NOT EXISTS (SELECT 1 FROM unexpanded u WHERE u.seq = events.seq)";

/// Of the events [`PRUNABLE`] selects, those with a delivery still `failed`.
const WITH_FAILED_DELIVERY: &str = "EXISTS (SELECT 1 FROM jobs WHERE jobs.event_seq = events.seq
    AND jobs.kind = 'deliver' AND jobs.state = 'failed')";

/// What [`prune`] would delete at `cutoff`, counted without deleting.
pub(super) fn count_prunable(conn: &Connection, cutoff: i64) -> Result<Pruned, StoreError> {
    let (events, failed_events): (i64, i64) = conn.query_row(
        &format!(
            "SELECT count(*), coalesce(sum({WITH_FAILED_DELIVERY}), 0) FROM events WHERE {PRUNABLE}"
        ),
        [cutoff],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let quarantined: i64 = conn.query_row(
        "SELECT count(*) FROM quarantine WHERE received_at < ?1",
        [cutoff],
        |r| r.get(0),
    )?;
    Ok(Pruned {
        events: events as usize,
        failed_events: failed_events as usize,
        quarantined: quarantined as usize,
    })
}

/// Deletes events received before `cutoff` (unix ms) whose work is finished,
/// with their jobs, attempts and logs, and quarantined bodies as old.
/// Never deletes an event with an unfinished job.
pub(super) fn prune(tx: &Connection, cutoff: i64) -> Result<Pruned, StoreError> {
    let failed_events: i64 = tx.query_row(
        &format!("SELECT count(*) FROM events WHERE {PRUNABLE} AND {WITH_FAILED_DELIVERY}"),
        [cutoff],
        |r| r.get(0),
    )?;
    let events = tx.execute(&format!("DELETE FROM events WHERE {PRUNABLE}"), [cutoff])?;
    let quarantined = tx.execute("DELETE FROM quarantine WHERE received_at < ?1", [cutoff])?;
    Ok(Pruned {
        events,
        failed_events: failed_events as usize,
        quarantined,
    })
}
