//! The worker's statements on PostgreSQL: claims under leases, attempts
//! recorded with the event's status kept in step, the shared pause of
//! fetches, and the hooks each daemon runs.

use std::collections::HashMap;

use deadpool_postgres::{Client, GenericClient};

use super::enrichment::save_enrichment;
use super::notify::notify_work;
use super::{pg_error, PgStore};
use crate::store::{
    AttemptRecord, ClaimFilter, ClaimedJob, HookConfig, JobKind, JobNext, JobState, StoreError,
};

impl PgStore {
    /// Claims a job (see the module documentation).
    pub async fn claim_due_job(&self, f: ClaimFilter) -> Result<Option<ClaimedJob>, StoreError> {
        let mut client = self.client().await?;
        claim_due_job(&mut client, &f, &self.inner.daemon).await
    }

    /// The earliest time a job may be claimed: a pending job becomes due,
    /// or a running one's lease runs out (its daemon may have died, and an
    /// idle daemon should look then, not at its next poll).
    pub async fn next_due_at(&self) -> Result<Option<i64>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT least((SELECT min(due_at) FROM jobs WHERE state = 'pending'),
                              (SELECT min(lease_until) FROM jobs WHERE state = 'running'))",
                &[],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.get(0))
    }

    /// Records an attempt.
    pub async fn record_attempt(
        &self,
        job: ClaimedJob,
        rec: AttemptRecord,
        next: JobNext,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        record_attempt(&mut client, &job, &rec, next, now, &self.inner.daemon).await
    }

    /// Renews the leases of the jobs this daemon runs.
    pub async fn extend_leases(&self, ids: Vec<i64>, until: i64) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        client
            .execute(
                "UPDATE jobs SET lease_until = $2
                 WHERE id = ANY($1) AND state = 'running' AND claimed_by = $3",
                &[&ids, &until, &self.inner.daemon],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    /// Makes every daemon wait before its next fetch until `until` (unix ms).
    pub async fn pause_fetches_until(&self, until: i64) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO pauses (name, until_ms) VALUES ('opensteer_api', $1)
                 ON CONFLICT (name) DO UPDATE SET until_ms = greatest(pauses.until_ms, excluded.until_ms)",
                &[&until],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    /// With several daemons, running jobs are not this process's to
    /// interrupt: their leases say when they are free. Only fetches waiting
    /// out an upstream fault are made due (a restart is how the operator
    /// says it is fixed), and the shared pause is lifted.
    pub async fn recover_interrupted(&self, now: i64) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute(
            "UPDATE jobs SET due_at = $1, updated_at = $1
             WHERE kind = 'fetch' AND state = 'pending' AND due_at > $1",
            &[&now],
        )
        .await
        .map_err(pg_error)?;
        tx.execute("DELETE FROM pauses WHERE name = 'opensteer_api'", &[])
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(0)
    }

    /// Records this daemon's hooks and returns how they differ from what
    /// other daemons on the database said theirs are.
    pub async fn register_hooks(
        &self,
        hooks: Vec<HookConfig>,
        identity: String,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut client = self.client().await?;
        register_hooks(&mut client, &hooks, &identity, now).await
    }
}

/// Claims the oldest job this daemon may run, in one transaction:
/// a due fetch (unless fetches are paused, here or by any daemon), a job
/// whose daemon's lease ran out, or a delivery of a configured hook that is
/// not paused and runs fewer deliveries than its `concurrency`, counted
/// across every daemon under a lock on the hook's row.
pub(super) async fn claim_due_job(
    client: &mut Client,
    f: &ClaimFilter,
    daemon: &str,
) -> Result<Option<ClaimedJob>, StoreError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    let now = f.now;
    let mut candidates: Vec<(i64, bool)> = Vec::new();
    if f.fetch_allowed {
        let row = tx
            .query_opt(
                "SELECT id FROM jobs
                 WHERE state = 'pending' AND kind = 'fetch' AND hook = '' AND due_at <= $1
                   AND NOT EXISTS (SELECT 1 FROM pauses WHERE name = 'opensteer_api' AND until_ms > $1)
                 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
                &[&now],
            )
            .await
            .map_err(pg_error)?;
        if let Some(r) = row {
            candidates.push((r.get(0), false));
        }
        let row = tx
            .query_opt(
                "SELECT id FROM jobs
                 WHERE state = 'running' AND kind = 'fetch' AND lease_until <= $1
                   AND id <> ALL($2)
                 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
                &[&now, &f.in_flight],
            )
            .await
            .map_err(pg_error)?;
        if let Some(r) = row {
            candidates.push((r.get(0), true));
        }
    }
    if f.deliveries_allowed {
        for (hook, concurrency) in &f.hook_limits {
            if f.busy_hooks.contains(hook) {
                continue;
            }
            if let Some(found) = claimable_delivery(&tx, hook, *concurrency, f).await? {
                candidates.push(found);
            }
        }
    }
    let Some(&(id, expired)) = candidates.iter().min_by_key(|(id, _)| *id) else {
        tx.commit().await.map_err(pg_error)?;
        return Ok(None);
    };
    if expired {
        tx.execute(
            "INSERT INTO attempts (job_id, attempt, started_at, duration_ms, outcome, error_code, error, replay)
             SELECT id, attempts, updated_at, greatest(0, $2 - updated_at), 'interrupted', 'INTERRUPTED',
                    'the daemon running this attempt stopped renewing its lease (' || coalesce(claimed_by, '?') || '); it runs again',
                    replays
             FROM jobs WHERE id = $1",
            &[&id, &now],
        )
        .await
        .map_err(pg_error)?;
    }
    let row = tx
        .query_one(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_until = $2::int8 + $3::int8,
                    claimed_by = $4, updated_at = $2
             WHERE id = $1
             RETURNING id, event_seq, kind, hook, attempts",
            &[&id, &now, &f.lease_ms, &daemon],
        )
        .await
        .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)?;
    let kind: String = row.get(2);
    Ok(Some(ClaimedJob {
        id: row.get(0),
        event_seq: row.get(1),
        kind: kind.parse().map_err(StoreError::Database)?,
        hook: row.get(3),
        attempt: row.get::<_, i32>(4) as u32,
    }))
}

/// The delivery of `hook` to claim next, if the hook may run one more: the
/// oldest whose lease ran out, else the oldest due. `None` when another
/// daemon is claiming for this hook right now (its row is locked): that
/// daemon takes the hook's next delivery, this one looks elsewhere.
async fn claimable_delivery(
    tx: &deadpool_postgres::Transaction<'_>,
    hook: &str,
    concurrency: usize,
    f: &ClaimFilter,
) -> Result<Option<(i64, bool)>, StoreError> {
    // The row exists for every configured hook (`register_hooks` at start);
    // the lock serialises the count-then-claim below across daemons.
    let Some(row) = tx
        .query_opt(
            "SELECT paused FROM hooks WHERE name = $1 FOR UPDATE SKIP LOCKED",
            &[&hook],
        )
        .await
        .map_err(pg_error)?
    else {
        return Ok(None);
    };
    if row.get::<_, bool>(0) {
        return Ok(None);
    }
    let running: i64 = tx
        .query_one(
            "SELECT count(*) FROM jobs
             WHERE state = 'running' AND kind = 'deliver' AND hook = $1 AND lease_until > $2",
            &[&hook, &f.now],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    if running >= concurrency as i64 {
        return Ok(None);
    }
    let expired = tx
        .query_opt(
            "SELECT id FROM jobs
             WHERE state = 'running' AND kind = 'deliver' AND hook = $1 AND lease_until <= $2
               AND id <> ALL($3)
             ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
            &[&hook, &f.now, &f.in_flight],
        )
        .await
        .map_err(pg_error)?;
    if let Some(r) = expired {
        return Ok(Some((r.get(0), true)));
    }
    let due = tx
        .query_opt(
            "SELECT id FROM jobs
             WHERE state = 'pending' AND kind = 'deliver' AND hook = $1 AND due_at <= $2
             ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
            &[&hook, &f.now],
        )
        .await
        .map_err(pg_error)?;
    Ok(due.map(|r| (r.get(0), false)))
}

/// Records the attempt and moves the job on, in one transaction. A job whose
/// lease this daemon lost (another daemon reclaimed it) keeps its new
/// owner's state; the attempt is still recorded, as it happened.
pub(super) async fn record_attempt(
    client: &mut Client,
    job: &ClaimedJob,
    rec: &AttemptRecord,
    next: JobNext,
    now: i64,
    daemon: &str,
) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    // The event's row first: two deliveries of one event finishing on two
    // daemons at once each recompute the event's status from its jobs; the
    // second waits here, so its statements see the first one's job.
    tx.execute(
        "SELECT 1 FROM events WHERE seq = $1 FOR UPDATE",
        &[&job.event_seq],
    )
    .await
    .map_err(pg_error)?;
    tx.execute(
        "INSERT INTO attempts (job_id, attempt, started_at, duration_ms, outcome, error_code, error, exit_code, stdout, stderr, replay)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, (SELECT replays FROM jobs WHERE id = $1))",
        &[
            &job.id,
            &(job.attempt as i32),
            &rec.started_at,
            &rec.duration_ms,
            &rec.outcome.as_str(),
            &rec.error_code,
            &rec.error,
            &rec.exit_code,
            &rec.stdout,
            &rec.stderr,
        ],
    )
    .await
    .map_err(pg_error)?;
    let (state, due, finished) = match next {
        JobNext::Succeeded => (JobState::Succeeded, None, Some(now)),
        JobNext::Failed => (JobState::Failed, None, Some(now)),
        JobNext::Skipped => (JobState::Skipped, None, Some(now)),
        JobNext::RetryAt(at) => (JobState::Pending, Some(at), None),
    };
    let moved = tx
        .execute(
            "UPDATE jobs SET state = $2, due_at = coalesce($3, due_at), lease_until = NULL,
                    claimed_by = NULL, last_error_code = $4, last_error = $5, updated_at = $6,
                    finished_at = $7
             WHERE id = $1 AND state = 'running' AND claimed_by = $8 AND attempts = $9",
            &[
                &job.id,
                &state.as_str(),
                &due,
                &rec.error_code,
                &rec.error,
                &now,
                &finished,
                &daemon,
                &(job.attempt as i32),
            ],
        )
        .await
        .map_err(pg_error)?;
    if moved == 0 {
        tracing::warn!(
            job_id = job.id,
            "this daemon's lease on the job ran out while it ran; another daemon has it now"
        );
        tx.commit().await.map_err(pg_error)?;
        return Ok(());
    }
    let mut released = 0;
    if job.kind == JobKind::Fetch && !matches!(next, JobNext::RetryAt(_)) {
        released = tx
            .execute(
                "UPDATE jobs SET state = 'pending', due_at = $2, updated_at = $2
                 WHERE event_seq = $1 AND kind = 'deliver' AND state = 'blocked'",
                &[&job.event_seq, &now],
            )
            .await
            .map_err(pg_error)?;
        match &rec.enrichment {
            Some(e) => save_enrichment(&tx, job.event_seq, e).await?,
            // A fetch that ended without deciding (it panicked): decided
            // from what it stored.
            None => {
                tx.execute(
                    "UPDATE events SET
                        enrichment_status = CASE WHEN run_json IS NULL THEN 'none'
                                                 WHEN $2 THEN 'partial' ELSE 'complete' END,
                        enrichment_code = CASE WHEN $2 THEN $3 END,
                        enrichment_error = CASE WHEN $2 THEN $4 END
                     WHERE seq = $1 AND enrichment_status IS NULL",
                    &[
                        &job.event_seq,
                        &(next == JobNext::Failed),
                        &rec.error_code,
                        &rec.error,
                    ],
                )
                .await
                .map_err(pg_error)?;
            }
        }
    }
    if released > 0 || matches!(next, JobNext::RetryAt(_)) {
        notify_work(&tx).await?;
    }
    refresh_event_status(&tx, job.event_seq).await?;
    tx.commit().await.map_err(pg_error)
}

/// Sets the event's status from its jobs (SPEC §2): pending while any is
/// unfinished, else failed if a delivery failed, else done. A fetch that
/// gave up does not fail the event: its hooks ran, told so.
pub(super) async fn refresh_event_status(
    tx: &impl GenericClient,
    event_seq: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE events SET status = CASE
            WHEN EXISTS (SELECT 1 FROM jobs WHERE event_seq = $1 AND state IN ('blocked','pending','running')) THEN 'pending'
            WHEN EXISTS (SELECT 1 FROM jobs WHERE event_seq = $1 AND kind = 'deliver' AND state = 'failed') THEN 'failed'
            ELSE 'done' END
         WHERE seq = $1",
        &[&event_seq],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Upserts the hook rows claims lock, records this daemon's hook
/// configuration, and returns a line per difference with what other
/// daemons on the database recorded in the last week.
pub(super) async fn register_hooks(
    client: &mut Client,
    hooks: &[HookConfig],
    identity: &str,
    now: i64,
) -> Result<Vec<String>, StoreError> {
    const WEEK_MS: i64 = 7 * 86_400_000;
    let tx = client.transaction().await.map_err(pg_error)?;
    let names: Vec<&str> = hooks.iter().map(|h| h.name.as_str()).collect();
    let hashes: Vec<&str> = hooks.iter().map(|h| h.config_hash.as_str()).collect();
    tx.execute(
        "INSERT INTO hooks (name) SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING",
        &[&names],
    )
    .await
    .map_err(pg_error)?;
    let others = tx
        .query(
            "SELECT daemon, hook, config_hash, seen_at FROM hook_configs
             WHERE daemon <> $1 AND seen_at > $2 ORDER BY daemon, hook",
            &[&identity, &(now - WEEK_MS)],
        )
        .await
        .map_err(pg_error)?;
    let mut differences = Vec::new();
    let mut theirs: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for r in &others {
        theirs
            .entry(r.get::<_, String>(0))
            .or_default()
            .push((r.get(1), r.get(2)));
    }
    for (daemon, their_hooks) in &theirs {
        for (hook, hash) in their_hooks {
            match hooks.iter().find(|h| &h.name == hook) {
                None => differences.push(format!(
                    "hook {hook:?} is configured on daemon {daemon} but not on this one"
                )),
                Some(ours) if &ours.config_hash != hash => differences.push(format!(
                    "hook {hook:?} is configured differently on daemon {daemon}"
                )),
                Some(_) => {}
            }
        }
        for ours in hooks {
            if !their_hooks.iter().any(|(h, _)| h == &ours.name) {
                differences.push(format!(
                    "hook {:?} is configured on this daemon but not on daemon {daemon}",
                    ours.name
                ));
            }
        }
    }
    tx.execute(
        "DELETE FROM hook_configs WHERE daemon = $1 OR seen_at <= $2",
        &[&identity, &(now - WEEK_MS)],
    )
    .await
    .map_err(pg_error)?;
    tx.execute(
        "INSERT INTO hook_configs (daemon, hook, config_hash, seen_at)
         SELECT $1, h, c, $2 FROM unnest($3::text[], $4::text[]) AS t(h, c)",
        &[&identity, &now, &names, &hashes],
    )
    .await
    .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)?;
    Ok(differences)
}
