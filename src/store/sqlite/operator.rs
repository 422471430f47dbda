//! The operator's commands on SQLite: replay (one event's deliveries, or
//! every failed one), prune, and pausing a hook.

use std::collections::{BTreeMap, HashSet};

use rusqlite::{params, Connection, OptionalExtension};

use super::worker::refresh_event_status;
use super::{expand, SqliteStore};
use crate::store::{BulkReplayReport, FailedDeliveries, Pruned, ReplayReport, StoreError};

impl SqliteStore {
    /// Queues deliveries again.
    pub async fn replay(
        &self,
        seq: i64,
        hooks: Vec<String>,
        enrich: bool,
        now: i64,
    ) -> Result<ReplayReport, StoreError> {
        let routing = self.inner.routing.clone();
        self.write(move |tx| {
            expand::expand_one(tx, &routing, seq)?;
            replay(tx, seq, &hooks, enrich, now)
        })
        .await
    }

    /// Deletes finished events past `cutoff`.
    pub async fn prune(&self, cutoff: i64) -> Result<Pruned, StoreError> {
        self.write(move |tx| prune(tx, cutoff)).await
    }

    /// What `prune` would delete at `cutoff`.
    pub async fn count_prunable(&self, cutoff: i64) -> Result<Pruned, StoreError> {
        self.read(move |c| count_prunable(c, cutoff)).await
    }

    /// Queues the failed deliveries `f` selects again, in one transaction.
    pub async fn replay_failed(
        &self,
        f: FailedDeliveries,
        enrich: bool,
        now: i64,
    ) -> Result<BulkReplayReport, StoreError> {
        self.write(move |tx| replay_failed(tx, &f, enrich, now))
            .await
    }

    /// What `replay_failed` would queue.
    pub async fn count_failed(
        &self,
        f: FailedDeliveries,
        enrich: bool,
    ) -> Result<BulkReplayReport, StoreError> {
        self.read(move |c| count_failed(c, &f, enrich)).await
    }

    /// Pauses or resumes a hook.
    pub async fn set_hook_paused(&self, name: String, paused: bool) -> Result<bool, StoreError> {
        self.write(move |tx| set_hook_paused(tx, &name, paused))
            .await
    }
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
    refresh_event_status(tx, seq)?;
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
        refresh_event_status(conn, *seq)?;
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
