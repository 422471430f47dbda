//! The CLI's read views on PostgreSQL: queue counts, events, each hook's
//! activity, quarantined bodies.

use std::collections::BTreeMap;

use deadpool_postgres::Client;

use super::enrichment::enrichment_from;
use super::{pg_error, PgStore};
use crate::store::{
    AttemptDetail, EventDetail, EventFilter, EventSummary, HookActivity, JobDetail, JobKind,
    JobState, QuarantineSummary, QuarantinedDetail, QueueCounts, StoreError,
};

impl PgStore {
    /// Queue depth by kind and state.
    pub async fn queue_counts(&self, now: i64) -> Result<QueueCounts, StoreError> {
        let client = self.client().await?;
        queue_counts(&client, now).await
    }

    /// Events, newest first.
    pub async fn list_events(&self, f: EventFilter) -> Result<Vec<EventSummary>, StoreError> {
        let client = self.client().await?;
        list_events(&client, &f).await
    }

    /// One event with its jobs and attempts.
    pub async fn find_event(&self, id: String) -> Result<Option<EventDetail>, StoreError> {
        let client = self.client().await?;
        find_event(&client, &id).await
    }

    /// Each hook's pause and deliveries.
    pub async fn hook_activity(&self, since: i64) -> Result<Vec<HookActivity>, StoreError> {
        let client = self.client().await?;
        hook_activity(&client, since).await
    }

    /// Quarantined bodies, newest first.
    pub async fn list_quarantine(&self, limit: u32) -> Result<Vec<QuarantineSummary>, StoreError> {
        let client = self.client().await?;
        list_quarantine(&client, limit).await
    }

    /// One quarantined body.
    pub async fn find_quarantined(&self, id: i64) -> Result<Option<QuarantinedDetail>, StoreError> {
        let client = self.client().await?;
        find_quarantined(&client, id).await
    }
}

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
        enrichment: enrichment_from(r.get(13), r.get(14), r.get(10))?,
        jobs: Vec::new(),
    };
    let jobs = client
        .query(
            "SELECT id, kind, hook, state, attempts, due_at, last_error_code, last_error, replays FROM jobs
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
                "SELECT attempt, started_at, duration_ms, outcome, error_code, error, exit_code, stdout, stderr, replay
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
            replays: j.get::<_, i32>(8) as u32,
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
                    replay: a.get::<_, i32>(9) as u32,
                })
                .collect(),
        });
    }
    Ok(Some(ev))
}

/// Every hook that has a row (any daemon configured it, or it was paused) or
/// deliveries: its pause, the deliveries waiting and running now, and those
/// finished since `since` (unix ms).
pub(super) async fn hook_activity(
    client: &Client,
    since: i64,
) -> Result<Vec<HookActivity>, StoreError> {
    let mut hooks: BTreeMap<String, HookActivity> = BTreeMap::new();
    for r in client
        .query("SELECT name, paused FROM hooks", &[])
        .await
        .map_err(pg_error)?
    {
        let name: String = r.get(0);
        hooks
            .entry(name.clone())
            .or_insert_with(|| HookActivity {
                name,
                ..Default::default()
            })
            .paused = r.get(1);
    }
    for r in client
        .query(
            "SELECT hook, state, count(*) FROM jobs
             WHERE kind = 'deliver'
               AND (state IN ('blocked', 'pending', 'running') OR finished_at >= $1)
             GROUP BY hook, state",
            &[&since],
        )
        .await
        .map_err(pg_error)?
    {
        let name: String = r.get(0);
        let state: String = r.get(1);
        let n: i64 = r.get(2);
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

fn quarantine_summary(r: &tokio_postgres::Row) -> QuarantineSummary {
    QuarantineSummary {
        id: r.get(0),
        received_at_ms: r.get(1),
        client_addr: r.get(2),
        signed_at: r.get(3),
        reason: r.get(4),
        size: i64::from(r.get::<_, i32>(5)),
    }
}

/// Quarantined bodies, newest first.
pub(super) async fn list_quarantine(
    client: &Client,
    limit: u32,
) -> Result<Vec<QuarantineSummary>, StoreError> {
    let rows = client
        .query(
            "SELECT id, received_at, client_addr, signed_at, reason, octet_length(body) FROM quarantine
             ORDER BY id DESC LIMIT $1",
            &[&i64::from(limit)],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows.iter().map(quarantine_summary).collect())
}

/// One quarantined body.
pub(super) async fn find_quarantined(
    client: &Client,
    id: i64,
) -> Result<Option<QuarantinedDetail>, StoreError> {
    let row = client
        .query_opt(
            "SELECT id, received_at, client_addr, signed_at, reason, octet_length(body), body
             FROM quarantine WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(pg_error)?;
    Ok(row.map(|r| QuarantinedDetail {
        summary: quarantine_summary(&r),
        body: r.get(6),
    }))
}
