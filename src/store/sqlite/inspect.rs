//! The CLI's read views on SQLite: queue counts, events, each hook's
//! activity, quarantined bodies. An event whose jobs are still to be made
//! (see [`super::expand`]) shows the jobs it will get.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension};

use super::enrichment::enrichment_from;
use super::{expand, SqliteStore};
use crate::store::{
    AttemptDetail, EventDetail, EventFilter, EventSummary, HookActivity, JobDetail, JobKind,
    QuarantineSummary, QuarantinedDetail, QueueCounts, StoreError,
};

impl SqliteStore {
    /// Queue depth by kind and state.
    pub async fn queue_counts(&self, now: i64) -> Result<QueueCounts, StoreError> {
        let routing = self.inner.routing.clone();
        self.read(move |c| {
            let mut counts = queue_counts(c, now)?;
            // Waiting events count as the jobs they will get.
            for (event_type, n, oldest) in expand::waiting(c)? {
                for (kind, _, state) in expand::projected(&routing, event_type) {
                    match counts
                        .by_kind_state
                        .iter_mut()
                        .find(|(k, s, _)| *k == kind && *s == state)
                    {
                        Some((_, _, count)) => *count += n,
                        None => counts.by_kind_state.push((kind, state, n)),
                    }
                }
                let age = now - oldest;
                counts.oldest_due_age_ms =
                    Some(counts.oldest_due_age_ms.map_or(age, |a| a.max(age)));
            }
            Ok(counts)
        })
        .await
    }

    /// Events, newest first.
    pub async fn list_events(&self, f: EventFilter) -> Result<Vec<EventSummary>, StoreError> {
        self.read(move |c| list_events(c, &f)).await
    }

    /// One event with its jobs and attempts.
    pub async fn find_event(&self, id: String) -> Result<Option<EventDetail>, StoreError> {
        let routing = self.inner.routing.clone();
        self.read(move |c| {
            let Some(mut ev) = find_event(c, &id)? else {
                return Ok(None);
            };
            // An event whose jobs are still to be made shows the jobs it will get.
            if let Some(jobs) = expand::projected_details(c, &routing, ev.seq)? {
                ev.jobs = jobs;
            }
            Ok(Some(ev))
        })
        .await
    }

    /// Each hook's pause and deliveries.
    pub async fn hook_activity(&self, since: i64) -> Result<Vec<HookActivity>, StoreError> {
        let routing = self.inner.routing.clone();
        self.read(move |c| {
            let mut hooks = hook_activity(c, since)?;
            // Waiting events count as the deliveries they will get.
            for (event_type, n, _) in expand::waiting(c)? {
                for (kind, hook, _) in expand::projected(&routing, event_type) {
                    if kind != JobKind::Deliver {
                        continue;
                    }
                    match hooks.iter_mut().find(|h| h.name == hook) {
                        Some(h) => h.pending += n,
                        None => hooks.push(HookActivity {
                            name: hook.to_owned(),
                            pending: n,
                            ..Default::default()
                        }),
                    }
                }
            }
            hooks.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(hooks)
        })
        .await
    }

    /// Quarantined bodies, newest first.
    pub async fn list_quarantine(&self, limit: u32) -> Result<Vec<QuarantineSummary>, StoreError> {
        self.read(move |c| list_quarantine(c, limit)).await
    }

    /// One quarantined body.
    pub async fn find_quarantined(&self, id: i64) -> Result<Option<QuarantinedDetail>, StoreError> {
        self.read(move |c| find_quarantined(c, id)).await
    }
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
                    enrichment: enrichment_from(r.get(13)?, r.get(14)?, r.get(10)?),
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
