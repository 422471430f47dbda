//! Ingest on PostgreSQL: concurrent inserts gathered into batches, each
//! batch one statement, answered after its commit; refused bodies kept.

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::{Client, Pool};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::{pg_error, pool_error, PgStore};
use crate::store::{
    event_id_candidates, InsertOutcome, JobKind, JobState, NewEvent, QuarantinedBody, Routing,
    StoreError,
};

/// Most events one ingest transaction takes.
const MAX_BATCH_EVENTS: usize = 128;
/// Ingest transactions in flight at once.
const BATCHERS: usize = 2;
/// Inserts waiting for a batch before senders have to wait.
const INSERT_QUEUE_LEN: usize = 8_192;

/// One insert waiting for its batch.
pub(super) struct PendingInsert {
    event: NewEvent,
    reply: oneshot::Sender<Result<InsertOutcome, StoreError>>,
}

/// Starts the batchers, which commit what is sent to the returned queue.
pub(super) fn start_batchers(
    pool: &Pool,
    pool_size: usize,
    routing: &Routing,
) -> mpsc::Sender<PendingInsert> {
    let (tx, rx) = mpsc::channel(INSERT_QUEUE_LEN);
    // Two batches at once: one commits while the next gathers the
    // inserts that arrive meanwhile; more would only make the batches
    // smaller (more commits for the server) and take connections the
    // worker needs (figures in docs/PERFORMANCE.md).
    let batchers = (pool_size / 2).clamp(1, BATCHERS);
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..batchers {
        tokio::spawn(run_batcher(
            pool.clone(),
            rx.clone(),
            Arc::new(routing.clone()),
        ));
    }
    tx
}

/// Takes waiting inserts in batches and commits each batch in one
/// transaction; answers every insert of a batch after its commit.
async fn run_batcher(
    pool: Pool,
    rx: Arc<Mutex<mpsc::Receiver<PendingInsert>>>,
    routing: Arc<Routing>,
) {
    loop {
        let batch = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH_EVENTS {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            batch
        };
        let events: Vec<&NewEvent> = batch.iter().map(|p| &p.event).collect();
        let result = match pool.get().await {
            Ok(mut client) => insert_batch(&mut client, &events, &routing).await,
            Err(e) => Err(pool_error(e)),
        };
        match result {
            Ok(outcomes) => {
                for (p, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = p.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = batch.len(), "commit failed; answering 503");
                let msg = e.to_string();
                for p in batch {
                    let _ = p.reply.send(Err(StoreError::Commit(msg.clone())));
                }
            }
        }
    }
}

impl PgStore {
    /// Stores a new event and its jobs; returns after the batch committed.
    pub async fn insert_event(&self, event: NewEvent) -> Result<InsertOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .inserts
            .send(PendingInsert { event, reply })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Keeps a refused body.
    pub async fn quarantine(&self, q: QuarantinedBody) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO quarantine (received_at, client_addr, signed_at, reason, body)
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
                &[
                    &q.received_at,
                    &q.client_addr,
                    &(q.signed_at as i64),
                    &q.reason,
                    &q.body,
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.get(0))
    }
}

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
    for id in event_id_candidates(&e.id, e.event_type.as_str(), &e.run_id).skip(1) {
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
