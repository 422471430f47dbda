//! The operator's queries on PostgreSQL: counts, list, show, replay, prune.

use deadpool_postgres::Client;

use super::queries::refresh_event_status;
use super::{pg_error, LOCK_PRUNE, WORK_CHANNEL};
use crate::store::{
    AttemptDetail, EventDetail, EventFilter, EventSummary, JobDetail, JobKind, JobState, Pruned,
    QueueCounts, ReplayReport, StoreError,
};

/// Queue depth by kind and state.
pub(super) async fn queue_counts(client: &Client, now: i64) -> Result<QueueCounts, StoreError> {
    let rows = client
        .query(
            "SELECT kind, state, count(*) FROM jobs GROUP BY kind, state",
            &[],
        )
        .await
        .map_err(pg_error)?;
    let mut by_kind_state = Vec::with_capacity(rows.len());
    for r in rows {
        let kind: String = r.get(0);
        let state: String = r.get(1);
        by_kind_state.push((
            kind.parse::<JobKind>().map_err(StoreError::Database)?,
            state.parse::<JobState>().map_err(StoreError::Database)?,
            r.get::<_, i64>(2),
        ));
    }
    let oldest: Option<i64> = client
        .query_one(
            "SELECT min(due_at) FROM jobs WHERE state = 'pending' AND due_at <= $1",
            &[&now],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    Ok(QueueCounts {
        by_kind_state,
        oldest_due_age_ms: oldest.map(|d| now - d),
    })
}

/// Events, newest first.
pub(super) async fn list_events(
    client: &Client,
    f: &EventFilter,
) -> Result<Vec<EventSummary>, StoreError> {
    let status = f.status.map(|s| s.as_str());
    let event_type = f.event_type.map(|t| t.as_str());
    let rows = client
        .query(
            "SELECT id, event_type, run_id, received_at, status FROM events
             WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR event_type = $2)
               AND ($3::int8 IS NULL OR received_at >= $3)
             ORDER BY seq DESC LIMIT $4",
            &[&status, &event_type, &f.since, &i64::from(f.limit)],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows
        .iter()
        .map(|r| EventSummary {
            id: r.get(0),
            event_type: r.get(1),
            run_id: r.get(2),
            received_at_ms: r.get(3),
            status: r.get(4),
        })
        .collect())
}

/// Finds an event by id (ids are unique; SPEC §5).
pub(super) async fn find_event(
    client: &Client,
    id: &str,
) -> Result<Option<EventDetail>, StoreError> {
    let Some(r) = client
        .query_opt(
            "SELECT seq, id, event_type, run_id, received_at, signed_at, client_addr, status, body,
                    run_json, enrichment_error,
                    (SELECT count(*) FROM log_entries WHERE event_seq = events.seq),
                    sender_id, enrichment_status, enrichment_code
             FROM events WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(pg_error)?
    else {
        return Ok(None);
    };
    let body: Vec<u8> = r.get(8);
    let run: Option<String> = r.get(9);
    let mut ev = EventDetail {
        seq: r.get(0),
        id: r.get(1),
        event_type: r.get(2),
        run_id: r.get(3),
        received_at_ms: r.get(4),
        signed_at: r.get(5),
        client_addr: r.get(6),
        status: r.get(7),
        payload: serde_json::from_slice(&body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
        }),
        run: run.and_then(|r| serde_json::from_str(&r).ok()),
        enrichment_error: r.get(10),
        log_count: r.get(11),
        sender_id: r.get(12),
        enrichment: super::queries::enrichment_from(r.get(13), r.get(14), r.get(10))?,
        jobs: Vec::new(),
    };
    let jobs = client
        .query(
            "SELECT id, kind, hook, state, attempts, due_at, last_error_code, last_error FROM jobs
             WHERE event_seq = $1 ORDER BY kind DESC, hook",
            &[&ev.seq],
        )
        .await
        .map_err(pg_error)?;
    let text = |b: Option<Vec<u8>>| b.map(|b| String::from_utf8_lossy(&b).into_owned());
    for j in jobs {
        let job_id: i64 = j.get(0);
        let state: String = j.get(3);
        let attempts = client
            .query(
                "SELECT attempt, started_at, duration_ms, outcome, error_code, error, exit_code, stdout, stderr
                 FROM attempts WHERE job_id = $1 ORDER BY id",
                &[&job_id],
            )
            .await
            .map_err(pg_error)?;
        ev.jobs.push(JobDetail {
            kind: j.get(1),
            hook: j.get(2),
            due_at_ms: (state == JobState::Pending.as_str()).then(|| j.get(5)),
            state,
            attempts: j.get::<_, i32>(4) as u32,
            last_error_code: j.get(6),
            last_error: j.get(7),
            attempt_log: attempts
                .into_iter()
                .map(|a| AttemptDetail {
                    attempt: a.get::<_, i32>(0) as u32,
                    started_at_ms: a.get(1),
                    duration_ms: a.get(2),
                    outcome: a.get(3),
                    error_code: a.get(4),
                    error: a.get(5),
                    exit_code: a.get(6),
                    stdout: text(a.get(7)),
                    stderr: text(a.get(8)),
                })
                .collect(),
        });
    }
    Ok(Some(ev))
}

/// Queues the deliveries of event `seq` to `hooks` again, due at once, with
/// a fresh attempt count; a delivery running right now is left alone.
pub(super) async fn replay(
    client: &mut Client,
    seq: i64,
    hooks: &[String],
    enrich: bool,
    now: i64,
) -> Result<ReplayReport, StoreError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    let mut report = ReplayReport::default();
    // Due since the event arrived: the serving daemons' clocks, not this
    // command's, decide when "now" is, and a replayed job must be due at once.
    let due: i64 = tx
        .query_one(
            "SELECT received_at FROM events WHERE seq = $1 FOR UPDATE",
            &[&seq],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    if enrich {
        report.refetch = tx
            .execute(
                "UPDATE jobs SET state = 'pending', attempts = 0, due_at = $2, updated_at = $3,
                        finished_at = NULL
                 WHERE event_seq = $1 AND kind = 'fetch' AND state = 'failed'",
                &[&seq, &due, &now],
            )
            .await
            .map_err(pg_error)?
            > 0;
        if report.refetch {
            tx.execute(
                "UPDATE events SET run_json = NULL, logs_cursor = NULL, logs_pages = 0,
                        logs_complete = false, logs_bytes = 0, settle_polls = 0,
                        enrichment_status = NULL, enrichment_code = NULL, enrichment_error = NULL
                 WHERE seq = $1",
                &[&seq],
            )
            .await
            .map_err(pg_error)?;
            tx.execute("DELETE FROM log_entries WHERE event_seq = $1", &[&seq])
                .await
                .map_err(pg_error)?;
            tx.execute("DELETE FROM log_cursors WHERE event_seq = $1", &[&seq])
                .await
                .map_err(pg_error)?;
        }
    }
    let fetch_pending = tx
        .query_opt(
            "SELECT 1 FROM jobs WHERE event_seq = $1 AND kind = 'fetch' AND state IN ('pending', 'running')",
            &[&seq],
        )
        .await
        .map_err(pg_error)?
        .is_some();
    let state = if fetch_pending {
        JobState::Blocked
    } else {
        JobState::Pending
    };
    for hook in hooks {
        let current: Option<String> = tx
            .query_opt(
                "SELECT state FROM jobs WHERE event_seq = $1 AND kind = 'deliver' AND hook = $2",
                &[&seq, hook],
            )
            .await
            .map_err(pg_error)?
            .map(|r| r.get(0));
        if current.as_deref() == Some(JobState::Running.as_str()) {
            report.running.push(hook.clone());
            continue;
        }
        tx.execute(
            "INSERT INTO jobs (event_seq, kind, hook, state, due_at, created_at, updated_at)
             VALUES ($1, 'deliver', $2, $3, $4, $5, $5)
             ON CONFLICT (event_seq, kind, hook) DO UPDATE SET
                state = excluded.state, attempts = 0, due_at = excluded.due_at,
                updated_at = excluded.updated_at, finished_at = NULL, lease_until = NULL,
                claimed_by = NULL",
            &[&seq, hook, &state.as_str(), &due, &now],
        )
        .await
        .map_err(pg_error)?;
        report.queued.push(hook.clone());
    }
    refresh_event_status(&tx, seq).await?;
    tx.execute(&format!("NOTIFY {WORK_CHANNEL}"), &[])
        .await
        .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)?;
    Ok(report)
}

/// Deletes finished events past `cutoff` with everything they own, and
/// quarantined bodies as old; on one daemon at a time (an advisory lock).
pub(super) async fn prune(
    client: &mut Client,
    cutoff: i64,
    wait: bool,
) -> Result<Pruned, StoreError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    let locked = if wait {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_PRUNE])
            .await
            .map_err(pg_error)?;
        true
    } else {
        tx.query_one("SELECT pg_try_advisory_xact_lock($1)", &[&LOCK_PRUNE])
            .await
            .map_err(pg_error)?
            .get(0)
    };
    if !locked {
        tracing::debug!("another daemon is pruning; skipped");
        return Ok(Pruned::default());
    }
    let events = tx
        .execute(
            "DELETE FROM events WHERE received_at < $1
               AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.event_seq = events.seq
                               AND jobs.state IN ('blocked', 'pending', 'running'))",
            &[&cutoff],
        )
        .await
        .map_err(pg_error)? as usize;
    let quarantined = tx
        .execute("DELETE FROM quarantine WHERE received_at < $1", &[&cutoff])
        .await
        .map_err(pg_error)? as usize;
    tx.commit().await.map_err(pg_error)?;
    Ok(Pruned {
        events,
        quarantined,
    })
}
