//! Queries for the operator's commands: list, show, replay.

use rusqlite::{params, Connection, OptionalExtension};

use crate::store::{
    AttemptDetail, EventDetail, EventFilter, EventSummary, JobDetail, ReplayReport, StoreError,
};

/// Events, newest first.
pub(super) fn list_events(
    conn: &Connection,
    f: &EventFilter,
) -> Result<Vec<EventSummary>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, event_type, run_id, received_at, status FROM events
         WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR event_type = ?2) AND (?3 IS NULL OR received_at >= ?3)
         ORDER BY seq DESC LIMIT ?4",
    )?;
    let rows = stmt.query_map(
        params![f.status, f.event_type.map(|t| t.as_str()), f.since, f.limit],
        |r| {
            Ok(EventSummary {
                id: r.get(0)?,
                event_type: r.get(1)?,
                run_id: r.get(2)?,
                received_at_ms: r.get(3)?,
                status: r.get(4)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Finds an event by id (ids are unique; SPEC §5).
pub(super) fn find_event(conn: &Connection, id: &str) -> Result<Option<EventDetail>, StoreError> {
    let row = conn
        .query_row(
            "SELECT seq, id, event_type, run_id, received_at, signed_at, client_addr, status, body, run_json, enrichment_error,
                    (SELECT count(*) FROM log_entries WHERE event_seq = events.seq),
                    sender_id, enrichment_status, enrichment_code
             FROM events WHERE id = ?1",
            [id],
            |r| {
                let body: Vec<u8> = r.get(8)?;
                let run: Option<String> = r.get(9)?;
                Ok(EventDetail {
                    seq: r.get(0)?,
                    id: r.get(1)?,
                    event_type: r.get(2)?,
                    run_id: r.get(3)?,
                    received_at_ms: r.get(4)?,
                    signed_at: r.get(5)?,
                    client_addr: r.get(6)?,
                    status: r.get(7)?,
                    payload: serde_json::from_slice(&body).unwrap_or_else(|_| {
                        serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
                    }),
                    run: run.and_then(|r| serde_json::from_str(&r).ok()),
                    enrichment_error: r.get(10)?,
                    log_count: r.get(11)?,
                    sender_id: r.get(12)?,
                    enrichment: super::queries::enrichment_from(r.get(13)?, r.get(14)?, r.get(10)?),
                    jobs: Vec::new(),
                })
            },
        )
        .optional()?;
    let Some(mut ev) = row else { return Ok(None) };
    let mut jobs = conn.prepare(
        "SELECT id, kind, hook, state, attempts, due_at, last_error_code, last_error FROM jobs
         WHERE event_seq = ?1 ORDER BY kind DESC, hook",
    )?;
    let mut attempts = conn.prepare(
        "SELECT attempt, started_at, duration_ms, outcome, error_code, error, exit_code, stdout, stderr
         FROM attempts WHERE job_id = ?1 ORDER BY id",
    )?;
    let rows: Vec<(i64, JobDetail)> = jobs
        .query_map([ev.seq], |r| {
            let state: String = r.get(3)?;
            let due: i64 = r.get(5)?;
            Ok((
                r.get(0)?,
                JobDetail {
                    kind: r.get(1)?,
                    hook: r.get(2)?,
                    due_at_ms: (state == "pending").then_some(due),
                    state,
                    attempts: r.get(4)?,
                    last_error_code: r.get(6)?,
                    last_error: r.get(7)?,
                    attempt_log: Vec::new(),
                },
            ))
        })?
        .collect::<Result<_, _>>()?;
    for (job_id, mut job) in rows {
        let text = |b: Option<Vec<u8>>| b.map(|b| String::from_utf8_lossy(&b).into_owned());
        job.attempt_log = attempts
            .query_map([job_id], |r| {
                Ok(AttemptDetail {
                    attempt: r.get(0)?,
                    started_at_ms: r.get(1)?,
                    duration_ms: r.get(2)?,
                    outcome: r.get(3)?,
                    error_code: r.get(4)?,
                    error: r.get(5)?,
                    exit_code: r.get(6)?,
                    stdout: text(r.get(7)?),
                    stderr: text(r.get(8)?),
                })
            })?
            .collect::<Result<_, _>>()?;
        ev.jobs.push(job);
    }
    Ok(Some(ev))
}

/// Queues the deliveries of event `seq` to `hooks` again, now, with a fresh
/// attempt count. A delivery running at this moment is left alone. If the
/// event's fetch failed and `enrich` is on, the fetch runs again first.
pub(super) fn replay(
    tx: &Connection,
    seq: i64,
    hooks: &[String],
    enrich: bool,
    now: i64,
) -> Result<ReplayReport, StoreError> {
    let mut report = ReplayReport::default();
    // Due since the event arrived: the serving process's clock, not this
    // command's, decides when "now" is, and a replayed job must be due at once.
    let due: i64 = tx.query_row(
        "SELECT received_at FROM events WHERE seq = ?1",
        [seq],
        |r| r.get(0),
    )?;
    if enrich {
        report.refetch = tx.execute(
            "UPDATE jobs SET state = 'pending', attempts = 0, due_at = ?2, updated_at = ?3, finished_at = NULL
             WHERE event_seq = ?1 AND kind = 'fetch' AND state = 'failed'",
            params![seq, due, now],
        )? > 0;
        if report.refetch {
            tx.execute(
                "UPDATE events SET run_json = NULL, logs_cursor = NULL, logs_pages = 0, logs_complete = 0,
                        logs_bytes = 0, settle_polls = 0,
                        enrichment_status = NULL, enrichment_code = NULL, enrichment_error = NULL
                 WHERE seq = ?1",
                [seq],
            )?;
            tx.execute("DELETE FROM log_entries WHERE event_seq = ?1", [seq])?;
            tx.execute("DELETE FROM log_cursors WHERE event_seq = ?1", [seq])?;
        }
    }
    let fetch_pending: bool = tx
        .prepare("SELECT 1 FROM jobs WHERE event_seq = ?1 AND kind = 'fetch' AND state IN ('pending', 'running')")?
        .exists([seq])?;
    let state = if fetch_pending { "blocked" } else { "pending" };
    for hook in hooks {
        let current: Option<String> = tx
            .query_row(
                "SELECT state FROM jobs WHERE event_seq = ?1 AND kind = 'deliver' AND hook = ?2",
                params![seq, hook],
                |r| r.get(0),
            )
            .optional()?;
        if current.as_deref() == Some("running") {
            report.running.push(hook.clone());
            continue;
        }
        tx.execute(
            "INSERT INTO jobs (event_seq, kind, hook, state, due_at, created_at, updated_at)
             VALUES (?1, 'deliver', ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT (event_seq, kind, hook) DO UPDATE SET
                state = excluded.state, attempts = 0, due_at = excluded.due_at,
                updated_at = excluded.updated_at, finished_at = NULL, lease_until = NULL",
            params![seq, hook, state, due, now],
        )?;
        report.queued.push(hook.clone());
    }
    super::queries::refresh_event_status(tx, seq)?;
    Ok(report)
}
