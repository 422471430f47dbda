//! Queries for the operator's commands: list, show, replay, hooks, quarantine.

use std::collections::{BTreeMap, HashSet};

use rusqlite::{params, Connection, OptionalExtension};

use crate::store::{
    AttemptDetail, BulkReplayReport, EventDetail, EventFilter, EventSummary, FailedDeliveries,
    HookActivity, JobDetail, QuarantineSummary, QuarantinedDetail, ReplayReport, StoreError,
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
        "SELECT id, kind, hook, state, attempts, due_at, last_error_code, last_error, replays FROM jobs
         WHERE event_seq = ?1 ORDER BY kind DESC, hook",
    )?;
    let mut attempts = conn.prepare(
        "SELECT attempt, started_at, duration_ms, outcome, error_code, error, exit_code, stdout, stderr, replay
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
                    replays: r.get(8)?,
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
                    replay: r.get(9)?,
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
            "UPDATE jobs SET state = 'pending', attempts = 0, due_at = ?2, updated_at = ?3, finished_at = NULL,
                    replays = replays + 1
             WHERE event_seq = ?1 AND kind = 'fetch' AND state = 'failed'",
            params![seq, due, now],
        )? > 0;
        if report.refetch {
            forget_enrichment(tx, seq)?;
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
                updated_at = excluded.updated_at, finished_at = NULL, lease_until = NULL,
                replays = replays + 1",
            params![seq, hook, state, due, now],
        )?;
        report.queued.push(hook.clone());
    }
    super::queries::refresh_event_status(tx, seq)?;
    Ok(report)
}

/// Drops what a failed fetch left, so that the fetch starts again from nothing.
fn forget_enrichment(tx: &Connection, seq: i64) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE events SET run_json = NULL, logs_cursor = NULL, logs_pages = 0, logs_complete = 0,
                logs_bytes = 0, settle_polls = 0,
                enrichment_status = NULL, enrichment_code = NULL, enrichment_error = NULL
         WHERE seq = ?1",
        [seq],
    )?;
    tx.execute("DELETE FROM log_entries WHERE event_seq = ?1", [seq])?;
    tx.execute("DELETE FROM log_cursors WHERE event_seq = ?1", [seq])?;
    Ok(())
}

/// The failed deliveries `f` selects: (job id, event seq, hook), in job order.
fn failed_deliveries(
    conn: &Connection,
    f: &FailedDeliveries,
) -> Result<Vec<(i64, i64, String)>, StoreError> {
    let hooks = serde_json::to_string(&f.hooks).map_err(|e| StoreError::Database(e.to_string()))?;
    let mut stmt = conn.prepare(
        "SELECT j.id, j.event_seq, j.hook FROM jobs j JOIN events e ON e.seq = j.event_seq
         WHERE j.kind = 'deliver' AND j.state = 'failed'
           AND j.hook IN (SELECT value FROM json_each(?1))
           AND (?2 IS NULL OR e.received_at >= ?2)
         ORDER BY j.id",
    )?;
    let rows = stmt.query_map(params![hooks, f.since], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What [`replay_failed`] would do, and what it does once `queue` is true.
fn replay_failed_with(
    conn: &Connection,
    f: &FailedDeliveries,
    enrich: bool,
    now: i64,
    queue: bool,
) -> Result<BulkReplayReport, StoreError> {
    let found = failed_deliveries(conn, f)?;
    let hooks = serde_json::to_string(&f.hooks).map_err(|e| StoreError::Database(e.to_string()))?;
    let other_hooks: i64 = conn.query_row(
        "SELECT count(*) FROM jobs j JOIN events e ON e.seq = j.event_seq
         WHERE j.kind = 'deliver' AND j.state = 'failed'
           AND j.hook NOT IN (SELECT value FROM json_each(?1))
           AND (?2 IS NULL OR e.received_at >= ?2)",
        params![hooks, f.since],
        |r| r.get(0),
    )?;
    let mut by_hook: BTreeMap<String, usize> = BTreeMap::new();
    let mut events: Vec<i64> = Vec::new();
    let mut seen = HashSet::new();
    for (_, seq, hook) in &found {
        *by_hook.entry(hook.clone()).or_default() += 1;
        if seen.insert(*seq) {
            events.push(*seq);
        }
    }
    let mut refetched = HashSet::new();
    if enrich {
        let mut failed_fetch = conn.prepare(
            "SELECT 1 FROM jobs WHERE event_seq = ?1 AND kind = 'fetch' AND state = 'failed'",
        )?;
        for seq in &events {
            if failed_fetch.exists([seq])? {
                refetched.insert(*seq);
            }
        }
    }
    let report = BulkReplayReport {
        by_hook: by_hook.into_iter().collect(),
        events: events.len(),
        refetch: refetched.len(),
        other_hooks: other_hooks as usize,
    };
    if !queue {
        return Ok(report);
    }
    // Due since the event arrived, as a single replay: the serving process's
    // clock decides when "now" is.
    let mut refetch = conn.prepare(
        "UPDATE jobs SET state = 'pending', attempts = 0, updated_at = ?2, finished_at = NULL,
                replays = replays + 1,
                due_at = (SELECT received_at FROM events WHERE seq = ?1)
         WHERE event_seq = ?1 AND kind = 'fetch' AND state = 'failed'",
    )?;
    for seq in &refetched {
        refetch.execute(params![seq, now])?;
        forget_enrichment(conn, *seq)?;
    }
    let mut requeue = conn.prepare(
        "UPDATE jobs SET state = ?2, attempts = 0, updated_at = ?3, finished_at = NULL, lease_until = NULL,
                replays = replays + 1,
                due_at = (SELECT received_at FROM events WHERE seq = jobs.event_seq)
         WHERE id = ?1 AND state = 'failed'",
    )?;
    for (id, seq, _) in &found {
        let state = if refetched.contains(seq) {
            "blocked"
        } else {
            "pending"
        };
        requeue.execute(params![id, state, now])?;
    }
    for seq in &events {
        super::queries::refresh_event_status(conn, *seq)?;
    }
    Ok(report)
}

/// Queues again every delivery in state failed that `f` selects, with a fresh
/// attempt count, due at once; refetches the run first where its fetch
/// failed and `enrich` is on. Running deliveries are not failed, so they are
/// left alone.
pub(super) fn replay_failed(
    tx: &Connection,
    f: &FailedDeliveries,
    enrich: bool,
    now: i64,
) -> Result<BulkReplayReport, StoreError> {
    replay_failed_with(tx, f, enrich, now, true)
}

/// What [`replay_failed`] would queue, counted without changing anything.
pub(super) fn count_failed(
    conn: &Connection,
    f: &FailedDeliveries,
    enrich: bool,
) -> Result<BulkReplayReport, StoreError> {
    replay_failed_with(conn, f, enrich, 0, false)
}

/// Every hook that has deliveries or a pause row: its pause, the deliveries
/// waiting and running now, and those finished since `since` (unix ms).
pub(super) fn hook_activity(
    conn: &Connection,
    since: i64,
) -> Result<Vec<HookActivity>, StoreError> {
    let mut hooks: BTreeMap<String, HookActivity> = BTreeMap::new();
    let mut paused = conn.prepare("SELECT name, paused FROM hooks")?;
    for row in paused.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))? {
        let (name, paused) = row?;
        hooks
            .entry(name.clone())
            .or_insert_with(|| HookActivity {
                name,
                ..Default::default()
            })
            .paused = paused;
    }
    let mut counts = conn.prepare(
        "SELECT hook, state, count(*) FROM jobs
         WHERE kind = 'deliver'
           AND (state IN ('blocked', 'pending', 'running') OR finished_at >= ?1)
         GROUP BY hook, state",
    )?;
    for row in counts.query_map([since], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })? {
        let (name, state, n) = row?;
        let h = hooks.entry(name.clone()).or_insert_with(|| HookActivity {
            name,
            ..Default::default()
        });
        match state.as_str() {
            "blocked" | "pending" => h.pending += n,
            "running" => h.running += n,
            "failed" => h.failed += n,
            "succeeded" => h.succeeded += n,
            "skipped" => h.skipped += n,
            _ => {}
        }
    }
    Ok(hooks.into_values().collect())
}

/// Pauses or resumes a hook; returns whether that changed anything.
pub(super) fn set_hook_paused(
    tx: &Connection,
    name: &str,
    paused: bool,
) -> Result<bool, StoreError> {
    let before: Option<bool> = tx
        .query_row("SELECT paused FROM hooks WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()?;
    tx.execute(
        "INSERT INTO hooks (name, paused) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
        params![name, paused],
    )?;
    Ok(before.unwrap_or(false) != paused)
}

fn quarantine_summary(r: &rusqlite::Row<'_>) -> rusqlite::Result<QuarantineSummary> {
    Ok(QuarantineSummary {
        id: r.get(0)?,
        received_at_ms: r.get(1)?,
        client_addr: r.get(2)?,
        signed_at: r.get(3)?,
        reason: r.get(4)?,
        size: r.get(5)?,
    })
}

/// Quarantined bodies, newest first.
pub(super) fn list_quarantine(
    conn: &Connection,
    limit: u32,
) -> Result<Vec<QuarantineSummary>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, received_at, client_addr, signed_at, reason, length(body) FROM quarantine
         ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], quarantine_summary)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One quarantined body.
pub(super) fn find_quarantined(
    conn: &Connection,
    id: i64,
) -> Result<Option<QuarantinedDetail>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT id, received_at, client_addr, signed_at, reason, length(body), body FROM quarantine WHERE id = ?1",
            [id],
            |r| {
                Ok(QuarantinedDetail {
                    summary: quarantine_summary(r)?,
                    body: r.get(6)?,
                })
            },
        )
        .optional()?)
}
