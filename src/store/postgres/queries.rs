//! The statements of ingest and the worker on PostgreSQL.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::{Client, GenericClient};

use super::{pg_error, WORK_CHANNEL};
use crate::store::{
    AttemptRecord, ClaimFilter, ClaimedJob, HookConfig, InsertOutcome, JobKind, JobNext, JobState,
    LogPage, NewEvent, Routing, StoreError, StoredEvent,
};

/// Inserts a batch of events and their jobs in one transaction; the answers
/// are in the order of `events`, and only valid once this returns `Ok`
/// (the commit has happened).
pub(super) async fn insert_batch(
    client: &mut Client,
    events: &[&NewEvent],
    routing: &Routing,
) -> Result<Vec<InsertOutcome>, StoreError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    let n = events.len();
    let mut ids = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut runs = Vec::with_capacity(n);
    let mut signed = Vec::with_capacity(n);
    let mut received = Vec::with_capacity(n);
    let mut clients = Vec::with_capacity(n);
    let mut bodies = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    // One row per dedupe key goes to the INSERT: the batch's first event
    // with the key, which is then the one answered 202 (below). Given two
    // rows with one key, the INSERT would keep whichever its sort put first,
    // and the 202 could name an event that was not stored.
    let mut batch_keys = HashSet::with_capacity(n);
    for ev in events {
        let e = &ev.event;
        if !batch_keys.insert((e.event_type.as_str(), e.run_id.as_str())) {
            continue;
        }
        let has_jobs = routing.enrich || routing.hooks_for(e.event_type).next().is_some();
        ids.push(e.id.as_str());
        types.push(e.event_type.as_str());
        runs.push(e.run_id.as_str());
        signed.push(e.signed_at as i64);
        received.push(ev.received_at);
        clients.push(ev.client_addr.as_deref());
        bodies.push(e.body.as_slice());
        // Nothing to do for this event: it is finished as soon as it is stored.
        statuses.push(if has_jobs { "pending" } else { "done" });
    }
    // One statement for the whole batch. ON CONFLICT DO NOTHING also settles
    // a race with another daemon inserting the same event: the later
    // transaction waits for the earlier one, then inserts nothing.
    let insert = tx
        .prepare_cached(
            "INSERT INTO events (id, event_type, run_id, signed_at, received_at, client_addr, body, status)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[],
                                  $6::text[], $7::bytea[], $8::text[])
                 AS t(id, event_type, run_id, signed_at, received_at, client_addr, body, status)
             -- Every transaction takes the keys' locks in the same order, so
             -- two batches sharing events (the same event sent to two
             -- daemons) wait for each other instead of deadlocking.
             ORDER BY event_type, run_id
             ON CONFLICT (event_type, run_id) DO NOTHING
             RETURNING seq, event_type, run_id",
        )
        .await
        .map_err(pg_error)?;
    let rows = tx
        .query(
            &insert,
            &[
                &ids, &types, &runs, &signed, &received, &clients, &bodies, &statuses,
            ],
        )
        .await
        .map_err(pg_error)?;
    let inserted: HashMap<(String, String), i64> = rows
        .iter()
        .map(|r| ((r.get::<_, String>(1), r.get::<_, String>(2)), r.get(0)))
        .collect();

    // The event that got the row answers 202; any other with its key (sent
    // earlier, by another daemon, or twice in this batch) is a duplicate.
    let mut outcomes: Vec<Option<InsertOutcome>> = vec![None; n];
    let mut claimed_keys = HashSet::new();
    let mut job_event = Vec::new();
    let mut job_kind = Vec::new();
    let mut job_hook = Vec::new();
    let mut job_state = Vec::new();
    let mut job_due = Vec::new();
    let mut duplicates = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        let e = &ev.event;
        let key = (e.event_type.as_str().to_owned(), e.run_id.clone());
        match inserted.get(&key) {
            Some(&seq) if claimed_keys.insert(key.clone()) => {
                outcomes[i] = Some(InsertOutcome::Accepted { id: e.id.clone() });
                let deliver_state = if routing.enrich {
                    job_event.push(seq);
                    job_kind.push(JobKind::Fetch.as_str());
                    job_hook.push("");
                    job_state.push(JobState::Pending.as_str());
                    job_due.push(ev.received_at);
                    JobState::Blocked
                } else {
                    JobState::Pending
                };
                for hook in routing.hooks_for(e.event_type) {
                    job_event.push(seq);
                    job_kind.push(JobKind::Deliver.as_str());
                    job_hook.push(hook);
                    job_state.push(deliver_state.as_str());
                    job_due.push(ev.received_at);
                }
            }
            _ => duplicates.push(i),
        }
    }
    if !duplicates.is_empty() {
        let dup_types: Vec<&str> = duplicates
            .iter()
            .map(|&i| events[i].event.event_type.as_str())
            .collect();
        let dup_runs: Vec<&str> = duplicates
            .iter()
            .map(|&i| events[i].event.run_id.as_str())
            .collect();
        let rows = tx
            .query(
                "SELECT e.event_type, e.run_id, e.id FROM events e
                 JOIN unnest($1::text[], $2::text[]) AS k(event_type, run_id)
                   ON e.event_type = k.event_type AND e.run_id = k.run_id",
                &[&dup_types, &dup_runs],
            )
            .await
            .map_err(pg_error)?;
        let stored: HashMap<(String, String), String> = rows
            .iter()
            .map(|r| ((r.get::<_, String>(0), r.get::<_, String>(1)), r.get(2)))
            .collect();
        for i in duplicates {
            let e = &events[i].event;
            let key = (e.event_type.as_str().to_owned(), e.run_id.clone());
            let id = stored.get(&key).cloned().ok_or_else(|| {
                StoreError::Database(format!(
                    "event {} was neither stored nor found stored",
                    e.id
                ))
            })?;
            outcomes[i] = Some(InsertOutcome::Duplicate { id });
        }
    }
    if !job_event.is_empty() {
        let jobs = tx
            .prepare_cached(
                "INSERT INTO jobs (event_seq, kind, hook, state, due_at, created_at, updated_at)
                 SELECT s, k, h, st, d, d, d
                 FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::int8[])
                      AS t(s, k, h, st, d)",
            )
            .await
            .map_err(pg_error)?;
        tx.execute(
            &jobs,
            &[&job_event, &job_kind, &job_hook, &job_state, &job_due],
        )
        .await
        .map_err(pg_error)?;
        notify_work(&tx).await?;
    }
    tx.commit().await.map_err(pg_error)?;
    outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| StoreError::Database("an insert got no answer".into())))
        .collect()
}

/// Tells every listening daemon that there is work (delivered at commit).
async fn notify_work(tx: &impl GenericClient) -> Result<(), StoreError> {
    tx.execute(&format!("NOTIFY {WORK_CHANNEL}"), &[])
        .await
        .map_err(pg_error)?;
    Ok(())
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
            "INSERT INTO attempts (job_id, attempt, started_at, duration_ms, outcome, error_code, error)
             SELECT id, attempts, updated_at, greatest(0, $2 - updated_at), 'interrupted', 'INTERRUPTED',
                    'the daemon running this attempt stopped renewing its lease (' || coalesce(claimed_by, '?') || '); it runs again'
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
    // The event's row first: the outcomes of its jobs are recorded one at a
    // time. Two at once (two daemons, or two slots of one) would each set
    // the event's status from a snapshot in which the other job still ran,
    // and leave an event whose jobs all finished `pending` for good.
    // Locking events before jobs is the order replay and prune keep too.
    tx.execute(
        "SELECT 1 FROM events WHERE seq = $1 FOR UPDATE",
        &[&job.event_seq],
    )
    .await
    .map_err(pg_error)?;
    tx.execute(
        "INSERT INTO attempts (job_id, attempt, started_at, duration_ms, outcome, error_code, error, exit_code, stdout, stderr)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
        if next == JobNext::Failed {
            tx.execute(
                "UPDATE events SET enrichment_error = $2 WHERE seq = $1",
                &[&job.event_seq, &rec.error],
            )
            .await
            .map_err(pg_error)?;
        }
    }
    if released > 0 || matches!(next, JobNext::RetryAt(_)) {
        notify_work(&tx).await?;
    }
    refresh_event_status(&tx, job.event_seq).await?;
    tx.commit().await.map_err(pg_error)
}

/// Sets the event's status from its jobs (SPEC §2).
pub(super) async fn refresh_event_status(
    tx: &impl GenericClient,
    event_seq: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE events SET status = CASE
            WHEN EXISTS (SELECT 1 FROM jobs WHERE event_seq = $1 AND state IN ('blocked','pending','running')) THEN 'pending'
            WHEN EXISTS (SELECT 1 FROM jobs WHERE event_seq = $1 AND state = 'failed') THEN 'failed'
            ELSE 'done' END
         WHERE seq = $1",
        &[&event_seq],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Loads one event row.
pub(super) async fn load_event(client: &Client, seq: i64) -> Result<StoredEvent, StoreError> {
    let row = client
        .query_opt(
            "SELECT seq, id, event_type, run_id, received_at, body, run_json, logs_cursor,
                    logs_pages, logs_complete, enrichment_error
             FROM events WHERE seq = $1",
            &[&seq],
        )
        .await
        .map_err(pg_error)?
        .ok_or_else(|| StoreError::NotFound(format!("event #{seq}")))?;
    Ok(StoredEvent {
        seq: row.get(0),
        id: row.get(1),
        event_type: row.get(2),
        run_id: row.get(3),
        received_at: row.get(4),
        body: row.get(5),
        run_json: row.get(6),
        logs_cursor: row.get(7),
        logs_pages: row.get::<_, i32>(8) as u32,
        logs_complete: row.get(9),
        enrichment_error: row.get(10),
    })
}

/// Stores one page of logs, replacing it if a retried fetch stored it before.
pub(super) async fn save_log_page(
    client: &mut Client,
    seq: i64,
    p: &LogPage,
) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    let page = p.page as i32;
    tx.execute(
        "DELETE FROM log_entries WHERE event_seq = $1 AND page = $2",
        &[&seq, &page],
    )
    .await
    .map_err(pg_error)?;
    let positions: Vec<i32> = (0..p.entries.len() as i32).collect();
    tx.execute(
        "INSERT INTO log_entries (event_seq, page, pos, entry)
         SELECT $1, $2, pos, entry FROM unnest($3::int4[], $4::text[]) AS t(pos, entry)",
        &[&seq, &page, &positions, &p.entries],
    )
    .await
    .map_err(pg_error)?;
    if let Some(c) = &p.followed_cursor {
        tx.execute(
            "INSERT INTO log_cursors (event_seq, cursor) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&seq, c],
        )
        .await
        .map_err(pg_error)?;
    }
    let next = if p.complete {
        None
    } else {
        p.next_cursor.as_deref()
    };
    tx.execute(
        "UPDATE events SET logs_cursor = $2, logs_pages = $3, logs_complete = $4 WHERE seq = $1",
        &[&seq, &next, &(page + 1), &p.complete],
    )
    .await
    .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)
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
