//! The statements of ingest and the worker on PostgreSQL.

use std::collections::HashMap;

use deadpool_postgres::{Client, GenericClient};

use super::{pg_error, WORK_CHANNEL};
use crate::domain::{Enrichment, EnrichmentError, EnrichmentStatus};
use crate::store::logs::Newest;
use crate::store::{
    event_id_candidates, AttemptRecord, ClaimFilter, ClaimedJob, HookConfig, InsertOutcome,
    JobKind, JobNext, JobState, LogPage, NewEvent, NewestLogs, Routing, StoreError, StoredEvent,
    SummaryBounds,
};

/// Inserts a batch of events and their jobs in one statement (atomic, so no
/// explicit transaction: one round trip); the answers are in the order of
/// `events`, and only valid once this returns `Ok` (the commit has happened).
/// An event whose id another stored event holds (SPEC §5) is then inserted
/// alone, under the first free id derived from it.
pub(super) async fn insert_batch(
    client: &mut Client,
    events: &[&NewEvent],
    routing: &Routing,
) -> Result<Vec<InsertOutcome>, StoreError> {
    // The first event of each dedupe key goes to the database; a later one
    // in the same batch is its duplicate.
    let mut first_of: HashMap<(&str, &str), usize> = HashMap::new();
    let mut unique = Vec::with_capacity(events.len());
    for (i, ev) in events.iter().enumerate() {
        let key = (ev.event.event_type.as_str(), ev.event.run_id.as_str());
        if let std::collections::hash_map::Entry::Vacant(v) = first_of.entry(key) {
            v.insert(i);
            unique.push(*ev);
        }
    }
    let n = unique.len();
    let mut ids = Vec::with_capacity(n);
    let mut senders = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut runs = Vec::with_capacity(n);
    let mut signed = Vec::with_capacity(n);
    let mut received = Vec::with_capacity(n);
    let mut clients = Vec::with_capacity(n);
    let mut bodies = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let (mut job_type, mut job_run, mut job_kind, mut job_hook, mut job_state) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ev in &unique {
        let e = &ev.event;
        ids.push(e.id.as_str());
        senders.push(e.sender_id.as_deref());
        types.push(e.event_type.as_str());
        runs.push(e.run_id.as_str());
        signed.push(e.signed_at as i64);
        received.push(ev.received_at);
        clients.push(ev.client_addr.as_deref());
        bodies.push(e.body.as_slice());
        let jobs = new_jobs(e.event_type, routing);
        // Nothing to do for this event: it is finished as soon as it is stored.
        statuses.push(if jobs.is_empty() { "done" } else { "pending" });
        for (kind, hook, state) in jobs {
            job_type.push(e.event_type.as_str());
            job_run.push(e.run_id.as_str());
            job_kind.push(kind);
            job_hook.push(hook);
            job_state.push(state);
        }
    }
    // The events, their jobs and the wake-up of idle daemons in one
    // statement. ON CONFLICT DO NOTHING also settles a race with another
    // daemon inserting the same event: the later statement waits for the
    // earlier one's commit, then inserts nothing. It is on any unique index,
    // the id's too: an event whose id is taken is left out here, not an
    // error that would fail the batch. Rows go in key order, so two
    // statements sharing events take the keys' locks in the same order and
    // wait for each other instead of deadlocking.
    let insert = client
        .prepare_cached(
            "WITH ins AS (
                 INSERT INTO events (id, event_type, run_id, signed_at, received_at, client_addr, body, status, sender_id)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[],
                                      $6::text[], $7::bytea[], $8::text[], $14::text[])
                     AS t(id, event_type, run_id, signed_at, received_at, client_addr, body, status, sender_id)
                 ORDER BY event_type, run_id
                 ON CONFLICT DO NOTHING
                 RETURNING seq, event_type, run_id, received_at
             ), new_jobs AS (
                 INSERT INTO jobs (event_seq, kind, hook, state, due_at, created_at, updated_at)
                 SELECT ins.seq, j.kind, j.hook, j.state, ins.received_at, ins.received_at, ins.received_at
                 FROM ins JOIN unnest($9::text[], $10::text[], $11::text[], $12::text[], $13::text[])
                     AS j(event_type, run_id, kind, hook, state)
                   ON j.event_type = ins.event_type AND j.run_id = ins.run_id
                 ORDER BY ins.seq
                 RETURNING 1
             ), woke AS (
                 SELECT pg_notify('steerhook_work', '') FROM (SELECT 1 FROM new_jobs LIMIT 1) AS any_job
             )
             SELECT event_type, run_id, (SELECT count(*) FROM woke) FROM ins",
        )
        .await
        .map_err(pg_error)?;
    let rows = client
        .query(
            &insert,
            &[
                &ids, &types, &runs, &signed, &received, &clients, &bodies, &statuses, &job_type,
                &job_run, &job_kind, &job_hook, &job_state, &senders,
            ],
        )
        .await
        .map_err(pg_error)?;
    // The id each key was stored under by this call.
    let mut inserted: HashMap<(String, String), String> = HashMap::new();
    let batch: std::collections::HashSet<(String, String)> = rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect();
    for ev in &unique {
        let key = (
            ev.event.event_type.as_str().to_owned(),
            ev.event.run_id.clone(),
        );
        if batch.contains(&key) {
            inserted.insert(key, ev.event.id.clone());
        }
    }
    // Keys another statement stored first: their stored ids (committed,
    // since ours waited for them).
    let taken: Vec<&NewEvent> = unique
        .iter()
        .filter(|ev| {
            !inserted.contains_key(&(
                ev.event.event_type.as_str().to_owned(),
                ev.event.run_id.clone(),
            ))
        })
        .copied()
        .collect();
    let mut stored = find_stored_ids(client, &taken).await?;
    // Neither stored by us nor by anyone: the event's id is another event's.
    for ev in taken {
        let key = (
            ev.event.event_type.as_str().to_owned(),
            ev.event.run_id.clone(),
        );
        if stored.contains_key(&key) {
            continue;
        }
        match insert_with_derived_id(client, ev, routing).await? {
            Some(id) => {
                inserted.insert(key, id);
            }
            // Its key was stored meanwhile, by another daemon.
            None => stored.extend(find_stored_ids(client, &[ev]).await?),
        }
    }
    events
        .iter()
        .enumerate()
        .map(|(i, ev)| {
            let e = &ev.event;
            let key = (e.event_type.as_str().to_owned(), e.run_id.clone());
            let first = first_of[&(e.event_type.as_str(), e.run_id.as_str())];
            match inserted.get(&key) {
                Some(id) if first == i => Ok(InsertOutcome::Accepted { id: id.clone() }),
                Some(id) => Ok(InsertOutcome::Duplicate { id: id.clone() }),
                None => stored
                    .get(&key)
                    .map(|id| InsertOutcome::Duplicate { id: id.clone() })
                    .ok_or_else(|| {
                        StoreError::Database(format!(
                            "event {} was neither stored nor found stored",
                            e.id
                        ))
                    }),
            }
        })
        .collect()
}

/// The jobs a new event of `event_type` gets: (kind, hook, state).
fn new_jobs(
    event_type: crate::domain::EventType,
    routing: &Routing,
) -> Vec<(&'static str, &str, &'static str)> {
    let mut jobs = Vec::new();
    let deliver_state = if routing.enrich {
        jobs.push((JobKind::Fetch.as_str(), "", JobState::Pending.as_str()));
        JobState::Blocked
    } else {
        JobState::Pending
    };
    for hook in routing.hooks_for(event_type) {
        jobs.push((JobKind::Deliver.as_str(), hook, deliver_state.as_str()));
    }
    jobs
}

/// The ids the events stored under the dedupe keys of `events` have.
async fn find_stored_ids(
    client: &Client,
    events: &[&NewEvent],
) -> Result<HashMap<(String, String), String>, StoreError> {
    if events.is_empty() {
        return Ok(HashMap::new());
    }
    let types: Vec<&str> = events.iter().map(|e| e.event.event_type.as_str()).collect();
    let runs: Vec<&str> = events.iter().map(|e| e.event.run_id.as_str()).collect();
    let rows = client
        .query(
            "SELECT e.event_type, e.run_id, e.id FROM events e
             JOIN unnest($1::text[], $2::text[]) AS k(event_type, run_id)
               ON e.event_type = k.event_type AND e.run_id = k.run_id",
            &[&types, &runs],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows
        .iter()
        .map(|r| ((r.get::<_, String>(0), r.get::<_, String>(1)), r.get(2)))
        .collect())
}

/// Inserts `ev` and its jobs, in one statement, under the first free id
/// derived from its own (SPEC §5); `None` when its dedupe key is stored
/// meanwhile (a duplicate).
async fn insert_with_derived_id(
    client: &Client,
    ev: &NewEvent,
    routing: &Routing,
) -> Result<Option<String>, StoreError> {
    let e = &ev.event;
    let jobs = new_jobs(e.event_type, routing);
    let status = if jobs.is_empty() { "done" } else { "pending" };
    let kinds: Vec<&str> = jobs.iter().map(|j| j.0).collect();
    let hooks: Vec<&str> = jobs.iter().map(|j| j.1).collect();
    let states: Vec<&str> = jobs.iter().map(|j| j.2).collect();
    let insert = client
        .prepare_cached(
            "WITH ins AS (
                 INSERT INTO events (id, sender_id, event_type, run_id, signed_at, received_at, client_addr, body, status)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT DO NOTHING
                 RETURNING seq, received_at
             ), new_jobs AS (
                 INSERT INTO jobs (event_seq, kind, hook, state, due_at, created_at, updated_at)
                 SELECT ins.seq, j.kind, j.hook, j.state, ins.received_at, ins.received_at, ins.received_at
                 FROM ins, unnest($10::text[], $11::text[], $12::text[]) AS j(kind, hook, state)
                 RETURNING 1
             ), woke AS (
                 SELECT pg_notify('steerhook_work', '') FROM (SELECT 1 FROM new_jobs LIMIT 1) AS any_job
             )
             SELECT seq, (SELECT count(*) FROM woke) FROM ins",
        )
        .await
        .map_err(pg_error)?;
    for id in event_id_candidates(&e.id, e.event_type.as_str(), &e.run_id)
        .into_iter()
        .skip(1)
    {
        let row = client
            .query_opt(
                &insert,
                &[
                    &id,
                    &e.sender_id,
                    &e.event_type.as_str(),
                    &e.run_id,
                    &(e.signed_at as i64),
                    &ev.received_at,
                    &ev.client_addr,
                    &e.body,
                    &status,
                    &kinds,
                    &hooks,
                    &states,
                ],
            )
            .await
            .map_err(pg_error)?;
        if row.is_some() {
            return Ok(Some(id));
        }
        let stored = client
            .query_opt(
                "SELECT 1 FROM events WHERE event_type = $1 AND run_id = $2",
                &[&e.event_type.as_str(), &e.run_id],
            )
            .await
            .map_err(pg_error)?;
        if stored.is_some() {
            return Ok(None);
        }
    }
    Err(StoreError::Database(format!(
        "no free event id derived from {:?}",
        e.id
    )))
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

/// Loads one event row.
pub(super) async fn load_event(client: &Client, seq: i64) -> Result<StoredEvent, StoreError> {
    let row = client
        .query_opt(
            "SELECT seq, id, sender_id, event_type, run_id, received_at, body, run_json, logs_cursor,
                    logs_pages, logs_complete, logs_bytes, settle_polls,
                    enrichment_status, enrichment_code, enrichment_error
             FROM events WHERE seq = $1",
            &[&seq],
        )
        .await
        .map_err(pg_error)?
        .ok_or_else(|| StoreError::NotFound(format!("event #{seq}")))?;
    Ok(StoredEvent {
        seq: row.get(0),
        id: row.get(1),
        sender_id: row.get(2),
        event_type: row.get(3),
        run_id: row.get(4),
        received_at: row.get(5),
        body: row.get(6),
        run_json: row.get(7),
        logs_cursor: row.get(8),
        logs_pages: row.get::<_, i32>(9) as u32,
        logs_complete: row.get(10),
        logs_bytes: row.get::<_, i64>(11) as u64,
        settle_polls: row.get::<_, i32>(12) as u32,
        enrichment: enrichment_from(row.get(13), row.get(14), row.get(15))?,
    })
}

/// The enrichment of an event row's three columns.
pub(super) fn enrichment_from(
    status: Option<String>,
    code: Option<String>,
    message: Option<String>,
) -> Result<Option<Enrichment>, StoreError> {
    let Some(status) = status else {
        return Ok(None);
    };
    Ok(Some(Enrichment {
        status: status
            .parse::<EnrichmentStatus>()
            .map_err(StoreError::Database)?,
        error: code.map(|code| EnrichmentError {
            code,
            message: message.unwrap_or_default(),
        }),
    }))
}

/// Records what the hooks are told about enrichment.
async fn save_enrichment(
    tx: &impl GenericClient,
    seq: i64,
    e: &Enrichment,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE events SET enrichment_status = $2, enrichment_code = $3, enrichment_error = $4
         WHERE seq = $1",
        &[
            &seq,
            &e.status.as_str(),
            &e.error.as_ref().map(|x| &x.code),
            &e.error.as_ref().map(|x| &x.message),
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Makes the event's enrichment partial for `why`, unless it already is for
/// an earlier reason (the first reason is the one hooks are told).
pub(super) async fn mark_partial(
    tx: &impl GenericClient,
    seq: i64,
    why: &EnrichmentError,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE events SET enrichment_status = 'partial',
            enrichment_error = CASE WHEN enrichment_code IS NULL THEN $3 ELSE enrichment_error END,
            enrichment_code = coalesce(enrichment_code, $2)
         WHERE seq = $1",
        &[&seq, &why.code, &why.message],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Stores one page of logs, replacing it if a retried fetch stored it before.
pub(super) async fn save_log_page(
    client: &mut Client,
    seq: i64,
    p: &LogPage,
) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    let page = p.page as i32;
    let replaced: i64 = tx
        .query_one(
            "WITH gone AS (DELETE FROM log_entries WHERE event_seq = $1 AND page = $2 RETURNING entry)
             SELECT coalesce(sum(octet_length(entry)), 0)::int8 FROM gone",
            &[&seq, &page],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    let mut positions = Vec::with_capacity(p.entries.len());
    let mut texts = Vec::with_capacity(p.entries.len());
    let mut stamps = Vec::with_capacity(p.entries.len());
    for (pos, e) in p.entries.iter().enumerate() {
        let text = p
            .text
            .get(e.span.clone())
            .ok_or_else(|| StoreError::Database(format!("log entry {pos} is outside its page")))?;
        positions.push(pos as i32);
        texts.push(text);
        stamps.push(e.ts_us);
    }
    // With `skip_stored`, an entry equal to one of another page is left out
    // (only a looping API gets here).
    let added: i64 = tx
        .query_one(
            "WITH added AS (
                INSERT INTO log_entries (event_seq, page, pos, entry, ts)
                SELECT $1, $2, t.pos, t.entry, t.ts
                FROM unnest($3::int4[], $4::text[], $5::int8[]) AS t(pos, entry, ts)
                WHERE NOT $6 OR NOT EXISTS (SELECT 1 FROM log_entries o
                                            WHERE o.event_seq = $1 AND o.page <> $2 AND o.entry = t.entry)
                RETURNING entry)
             SELECT coalesce(sum(octet_length(entry)), 0)::int8 FROM added",
            &[&seq, &page, &positions, &texts, &stamps, &p.skip_stored],
        )
        .await
        .map_err(pg_error)?
        .get(0);
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
        "UPDATE events SET logs_cursor = $2, logs_pages = $3, logs_complete = $4,
                logs_bytes = logs_bytes - $5 + $6
         WHERE seq = $1",
        &[&seq, &next, &(page + 1), &p.complete, &replaced, &added],
    )
    .await
    .map_err(pg_error)?;
    if let Some(why) = &p.stopped {
        mark_partial(&tx, seq, why).await?;
    }
    tx.commit().await.map_err(pg_error)
}

/// Whether every stored entry of the event has a timestamp (SPEC §5).
pub(super) async fn every_entry_has_a_timestamp(
    client: &impl GenericClient,
    seq: i64,
) -> Result<bool, StoreError> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM log_entries WHERE event_seq = $1 AND ts IS NULL LIMIT 1",
            &[&seq],
        )
        .await
        .map_err(pg_error)?
        .is_none())
}

/// How many pages' rows the event has (numbered from 0, newest first).
pub(super) async fn stored_pages(client: &impl GenericClient, seq: i64) -> Result<i32, StoreError> {
    let max: Option<i32> = client
        .query_one(
            "SELECT max(page) FROM log_entries WHERE event_seq = $1",
            &[&seq],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    Ok(max.map_or(0, |m| m + 1))
}

/// The newest entries of event `seq`, oldest first, within `bounds`, and
/// how many it has in all (one snapshot).
pub(super) async fn newest_logs(
    client: &mut Client,
    seq: i64,
    bounds: &SummaryBounds,
) -> Result<NewestLogs, StoreError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg_error)?;
    let total: i64 = tx
        .query_one(
            "SELECT count(*) FROM log_entries WHERE event_seq = $1",
            &[&seq],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    let mut newest = Newest::new(bounds);
    let entry_bytes = bounds.entry_bytes as i32;
    if newest.wanted() > 0 && total > 0 {
        if every_entry_has_a_timestamp(&tx, seq).await? {
            let rows = tx
                .query(
                    "SELECT CASE WHEN octet_length(entry) <= $3 THEN entry END, octet_length(entry)::int8
                     FROM log_entries WHERE event_seq = $1
                     ORDER BY ts DESC, page, pos DESC LIMIT $2",
                    &[&seq, &(newest.wanted() as i64), &entry_bytes],
                )
                .await
                .map_err(pg_error)?;
            for row in rows {
                if !newest.add(row.get(0), row.get(1)) {
                    break;
                }
            }
        } else {
            'pages: for page in 0..stored_pages(&tx, seq).await? {
                let rows = tx
                    .query(
                        "SELECT CASE WHEN octet_length(entry) <= $4 THEN entry END, octet_length(entry)::int8
                         FROM log_entries WHERE event_seq = $1 AND page = $2
                         ORDER BY pos DESC LIMIT $3",
                        &[&seq, &page, &(newest.wanted() as i64), &entry_bytes],
                    )
                    .await
                    .map_err(pg_error)?;
                for row in rows {
                    if !newest.add(row.get(0), row.get(1)) {
                        break 'pages;
                    }
                }
            }
        }
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(NewestLogs {
        entries: newest.oldest_first(),
        total: total as u64,
    })
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
