//! The operator's commands on PostgreSQL: replay (one event's deliveries,
//! or every failed one), prune, and pausing a hook.

use std::collections::{BTreeMap, HashSet};

use deadpool_postgres::{Client, GenericClient};

use super::notify::notify_work;
use super::worker::refresh_event_status;
use super::{pg_error, PgStore, LOCK_PRUNE};
use crate::store::{
    BulkReplayReport, FailedDeliveries, JobState, Pruned, ReplayReport, StoreError,
};

impl PgStore {
    /// Queues deliveries again.
    pub async fn replay(
        &self,
        seq: i64,
        hooks: Vec<String>,
        enrich: bool,
        now: i64,
    ) -> Result<ReplayReport, StoreError> {
        let mut client = self.client().await?;
        replay(&mut client, seq, &hooks, enrich, now).await
    }

    /// Deletes finished events past `cutoff`, on one daemon at a time: a
    /// daemon that finds another pruning skips this round (`wait` false) or
    /// waits for it (`wait` true, the `prune` command).
    pub async fn prune(&self, cutoff: i64, wait: bool) -> Result<Pruned, StoreError> {
        let mut client = self.client().await?;
        prune(&mut client, cutoff, wait).await
    }

    /// What `prune` would delete at `cutoff`.
    pub async fn count_prunable(&self, cutoff: i64) -> Result<Pruned, StoreError> {
        let client = self.client().await?;
        count_prunable(&client, cutoff).await
    }

    /// Queues the failed deliveries `f` selects again, in one transaction.
    pub async fn replay_failed(
        &self,
        f: FailedDeliveries,
        enrich: bool,
        now: i64,
    ) -> Result<BulkReplayReport, StoreError> {
        let mut client = self.client().await?;
        replay_failed(&mut client, &f, enrich, now).await
    }

    /// What `replay_failed` would queue.
    pub async fn count_failed(
        &self,
        f: FailedDeliveries,
        enrich: bool,
    ) -> Result<BulkReplayReport, StoreError> {
        let client = self.client().await?;
        count_failed(&client, &f, enrich).await
    }

    /// Pauses or resumes a hook for every daemon.
    pub async fn set_hook_paused(&self, name: String, paused: bool) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        set_hook_paused(&mut client, &name, paused).await
    }
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
                        finished_at = NULL, replays = replays + 1
                 WHERE event_seq = $1 AND kind = 'fetch' AND state = 'failed'",
                &[&seq, &due, &now],
            )
            .await
            .map_err(pg_error)?
            > 0;
        if report.refetch {
            forget_enrichment(&tx, &[seq]).await?;
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
                claimed_by = NULL, replays = jobs.replays + 1",
            &[&seq, hook, &state.as_str(), &due, &now],
        )
        .await
        .map_err(pg_error)?;
        report.queued.push(hook.clone());
    }
    refresh_event_status(&tx, seq).await?;
    notify_work(&tx).await?;
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
    // Counted and deleted in one statement, so the count is of what went.
    let row = tx
        .query_one(
            &format!(
                "WITH gone AS (DELETE FROM events WHERE {PRUNABLE} RETURNING seq)
                 SELECT count(*),
                        count(*) FILTER (WHERE EXISTS (SELECT 1 FROM jobs WHERE jobs.event_seq = gone.seq
                                                       AND jobs.kind = 'deliver' AND jobs.state = 'failed'))
                 FROM gone"
            ),
            &[&cutoff],
        )
        .await
        .map_err(pg_error)?;
    let quarantined = tx
        .execute("DELETE FROM quarantine WHERE received_at < $1", &[&cutoff])
        .await
        .map_err(pg_error)? as usize;
    tx.commit().await.map_err(pg_error)?;
    Ok(Pruned {
        events: row.get::<_, i64>(0) as usize,
        failed_events: row.get::<_, i64>(1) as usize,
        quarantined,
    })
}

/// The events `prune` deletes: received before `$1`, no unfinished job.
const PRUNABLE: &str = "received_at < $1
    AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.event_seq = events.seq
                    AND jobs.state IN ('blocked', 'pending', 'running'))";

/// What [`prune`] would delete at `cutoff`, counted without deleting.
pub(super) async fn count_prunable(client: &Client, cutoff: i64) -> Result<Pruned, StoreError> {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*),
                        count(*) FILTER (WHERE EXISTS (SELECT 1 FROM jobs WHERE jobs.event_seq = events.seq
                                                       AND jobs.kind = 'deliver' AND jobs.state = 'failed')),
                        (SELECT count(*) FROM quarantine WHERE received_at < $1)
                 FROM events WHERE {PRUNABLE}"
            ),
            &[&cutoff],
        )
        .await
        .map_err(pg_error)?;
    Ok(Pruned {
        events: row.get::<_, i64>(0) as usize,
        failed_events: row.get::<_, i64>(1) as usize,
        quarantined: row.get::<_, i64>(2) as usize,
    })
}

/// Drops what failed fetches left, so that they start again from nothing.
async fn forget_enrichment(tx: &impl GenericClient, seqs: &[i64]) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE events SET run_json = NULL, logs_cursor = NULL, logs_pages = 0,
                logs_complete = false, logs_bytes = 0, settle_polls = 0,
                enrichment_status = NULL, enrichment_code = NULL, enrichment_error = NULL
         WHERE seq = ANY($1)",
        &[&seqs],
    )
    .await
    .map_err(pg_error)?;
    tx.execute(
        "DELETE FROM log_entries WHERE event_seq = ANY($1)",
        &[&seqs],
    )
    .await
    .map_err(pg_error)?;
    tx.execute(
        "DELETE FROM log_cursors WHERE event_seq = ANY($1)",
        &[&seqs],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// What `replay_failed` would queue: the failed deliveries (job id, event
/// seq, hook), the failed deliveries of other hooks, and which of the
/// events have a failed fetch. With `lock`, the rows are locked, so that a
/// daemon cannot move them between this count and the update.
async fn select_failed(
    tx: &impl GenericClient,
    f: &FailedDeliveries,
    enrich: bool,
    lock: bool,
) -> Result<(Vec<(i64, i64, String)>, i64, HashSet<i64>), StoreError> {
    let rows = tx
        .query(
            &format!(
                "SELECT j.id, j.event_seq, j.hook FROM jobs j JOIN events e ON e.seq = j.event_seq
                 WHERE j.kind = 'deliver' AND j.state = 'failed' AND j.hook = ANY($1)
                   AND ($2::int8 IS NULL OR e.received_at >= $2)
                 ORDER BY j.id{}",
                if lock { " FOR UPDATE OF j" } else { "" }
            ),
            &[&f.hooks, &f.since],
        )
        .await
        .map_err(pg_error)?;
    let found: Vec<(i64, i64, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let other: i64 = tx
        .query_one(
            "SELECT count(*) FROM jobs j JOIN events e ON e.seq = j.event_seq
             WHERE j.kind = 'deliver' AND j.state = 'failed' AND j.hook <> ALL($1)
               AND ($2::int8 IS NULL OR e.received_at >= $2)",
            &[&f.hooks, &f.since],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    let mut refetch = HashSet::new();
    if enrich && !found.is_empty() {
        let seqs: Vec<i64> = found.iter().map(|(_, seq, _)| *seq).collect();
        let rows = tx
            .query(
                &format!(
                    "SELECT event_seq FROM jobs WHERE event_seq = ANY($1) AND kind = 'fetch' AND state = 'failed'{}",
                    if lock { " FOR UPDATE" } else { "" }
                ),
                &[&seqs],
            )
            .await
            .map_err(pg_error)?;
        refetch = rows.iter().map(|r| r.get(0)).collect();
    }
    Ok((found, other, refetch))
}

fn bulk_report(
    found: &[(i64, i64, String)],
    other: i64,
    refetch: &HashSet<i64>,
) -> BulkReplayReport {
    let mut by_hook: BTreeMap<String, usize> = BTreeMap::new();
    let mut events = HashSet::new();
    for (_, seq, hook) in found {
        *by_hook.entry(hook.clone()).or_default() += 1;
        events.insert(*seq);
    }
    BulkReplayReport {
        by_hook: by_hook.into_iter().collect(),
        events: events.len(),
        refetch: refetch.len(),
        other_hooks: other as usize,
    }
}

/// What `replay_failed` would queue, counted without changing anything.
pub(super) async fn count_failed(
    client: &Client,
    f: &FailedDeliveries,
    enrich: bool,
) -> Result<BulkReplayReport, StoreError> {
    let (found, other, refetch) = select_failed(client, f, enrich, false).await?;
    Ok(bulk_report(&found, other, &refetch))
}

/// Queues again, in one transaction, every delivery in state failed that
/// `f` selects, with a fresh attempt count, due at once; refetches the run
/// first where its fetch failed and `enrich` is on. Running deliveries are
/// not failed, so they are left alone.
pub(super) async fn replay_failed(
    client: &mut Client,
    f: &FailedDeliveries,
    enrich: bool,
    now: i64,
) -> Result<BulkReplayReport, StoreError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    let (found, other, refetch) = select_failed(&tx, f, enrich, true).await?;
    let report = bulk_report(&found, other, &refetch);
    if found.is_empty() {
        tx.commit().await.map_err(pg_error)?;
        return Ok(report);
    }
    let refetch: Vec<i64> = refetch.into_iter().collect();
    if !refetch.is_empty() {
        // Due since the event arrived: the serving daemons' clocks decide "now".
        tx.execute(
            "UPDATE jobs SET state = 'pending', attempts = 0, updated_at = $2, finished_at = NULL,
                    replays = replays + 1,
                    due_at = (SELECT received_at FROM events WHERE seq = jobs.event_seq)
             WHERE event_seq = ANY($1) AND kind = 'fetch' AND state = 'failed'",
            &[&refetch, &now],
        )
        .await
        .map_err(pg_error)?;
        forget_enrichment(&tx, &refetch).await?;
    }
    let ids: Vec<i64> = found.iter().map(|(id, _, _)| *id).collect();
    tx.execute(
        "UPDATE jobs SET attempts = 0, updated_at = $3, finished_at = NULL, lease_until = NULL,
                claimed_by = NULL, replays = replays + 1,
                state = CASE WHEN event_seq = ANY($2) THEN 'blocked' ELSE 'pending' END,
                due_at = (SELECT received_at FROM events WHERE seq = jobs.event_seq)
         WHERE id = ANY($1) AND state = 'failed'",
        &[&ids, &refetch, &now],
    )
    .await
    .map_err(pg_error)?;
    let seqs: Vec<i64> = found
        .iter()
        .map(|(_, seq, _)| *seq)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    // Each has an unfinished job now.
    tx.execute(
        "UPDATE events SET status = 'pending' WHERE seq = ANY($1)",
        &[&seqs],
    )
    .await
    .map_err(pg_error)?;
    notify_work(&tx).await?;
    tx.commit().await.map_err(pg_error)?;
    Ok(report)
}

/// Pauses or resumes a hook for every daemon; returns whether that changed
/// anything. A resume wakes idle daemons.
pub(super) async fn set_hook_paused(
    client: &mut Client,
    name: &str,
    paused: bool,
) -> Result<bool, StoreError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    let before: Option<bool> = tx
        .query_opt(
            "SELECT paused FROM hooks WHERE name = $1 FOR UPDATE",
            &[&name],
        )
        .await
        .map_err(pg_error)?
        .map(|r| r.get(0));
    tx.execute(
        "INSERT INTO hooks (name, paused) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
        &[&name, &paused],
    )
    .await
    .map_err(pg_error)?;
    if !paused {
        notify_work(&tx).await?;
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(before.unwrap_or(false) != paused)
}
