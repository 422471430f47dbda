//! Jobs made after the answer: ingest stores an event with one small row in
//! `unexpanded` instead of its fetch and delivery jobs, and the worker turns
//! those rows into jobs, many events at a time, when a claim finds nothing
//! for a free slot: jobs are made as fast as hooks take them, not as fast as
//! events arrive. An event's jobs are made from the hooks configured when
//! the worker reaches it (README, "Choices made where the contract is silent").
//!
//! Why: each job row costs a row and three index entries, all written in
//! the commit the sender waits for; one `unexpanded` row is an append to a
//! rowid table. The event is as durable as before (its row and the
//! `unexpanded` row commit together, before the 202), and making jobs is
//! idempotent (`INSERT OR IGNORE` on the jobs' unique key), so a crash
//! between the two only means the next start makes them. Until then, every
//! view of the queue (`events show`, `/metrics`, the next due time) counts
//! the jobs the event will get, as `projected` here says.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::domain::EventType;
use crate::store::{JobDetail, JobKind, JobState, Routing, StoreError};

/// Most events turned into jobs per claim: bounds the claim's write.
pub(super) const EXPAND_BATCH: i64 = 64;

/// The jobs an event of `event_type` gets: (kind, hook, first state).
pub(super) fn projected(
    routing: &Routing,
    event_type: EventType,
) -> Vec<(JobKind, &str, JobState)> {
    let mut jobs = Vec::new();
    let deliver_state = if routing.enrich {
        jobs.push((JobKind::Fetch, "", JobState::Pending));
        JobState::Blocked
    } else {
        JobState::Pending
    };
    for hook in routing.hooks_for(event_type) {
        jobs.push((JobKind::Deliver, hook, deliver_state));
    }
    jobs
}

/// Turns up to [`EXPAND_BATCH`] waiting events, oldest first, into their
/// jobs (due when the event arrived, like jobs made at ingest). Returns how
/// many events it expanded.
pub(super) fn expand(tx: &Transaction<'_>, routing: &Routing) -> Result<usize, StoreError> {
    let last: Option<i64> = tx
        .prepare_cached("SELECT max(seq) FROM (SELECT seq FROM unexpanded ORDER BY seq LIMIT ?1)")?
        .query_row([EXPAND_BATCH], |r| r.get(0))?;
    let Some(last) = last else {
        return Ok(0);
    };
    expand_through(tx, routing, None, last)
}

/// Turns event `seq` into its jobs now, if it is still waiting (`replay`
/// must see them).
pub(super) fn expand_one(
    tx: &Transaction<'_>,
    routing: &Routing,
    seq: i64,
) -> Result<(), StoreError> {
    expand_through(tx, routing, Some(seq), seq).map(|_| ())
}

/// Makes the jobs of the waiting events up to `?2` (only `?3`, when not
/// NULL) from the routes `?1` (a JSON array of job templates). CROSS JOIN
/// keeps the waiting events the outer loop (SQLite never reorders it): left
/// alone, the planner walked every stored event of the type through the
/// dedupe index and looked each up in `unexpanded`, so a claim cost time in
/// proportion to the whole table.
const EXPAND: &str =
    "INSERT OR IGNORE INTO jobs (event_seq, kind, hook, state, due_at, created_at, updated_at)
         SELECT e.seq, t.value ->> '$.kind', t.value ->> '$.hook', t.value ->> '$.state',
                e.received_at, e.received_at, e.received_at
         FROM unexpanded u
         CROSS JOIN events e ON e.seq = u.seq
         CROSS JOIN json_each(?1) t ON t.value ->> '$.type' = e.event_type
         WHERE u.seq <= ?2 AND (?3 IS NULL OR u.seq = ?3)
         ORDER BY u.seq, t.value ->> '$.ord'";

fn expand_through(
    tx: &Transaction<'_>,
    routing: &Routing,
    only: Option<i64>,
    last: i64,
) -> Result<usize, StoreError> {
    // Every job of every waiting event in one statement, ordered by event
    // and then as ingest made them (the fetch first), so ids keep arrival
    // order: the oldest event's jobs are claimed first.
    let templates: Vec<serde_json::Value> = EventType::ALL
        .iter()
        .flat_map(|t| {
            projected(routing, *t)
                .into_iter()
                .enumerate()
                .map(move |(ord, (kind, hook, state))| {
                    serde_json::json!({
                        "type": t.as_str(), "ord": ord, "kind": kind.as_str(),
                        "hook": hook, "state": state.as_str(),
                    })
                })
        })
        .collect();
    tx.prepare_cached(EXPAND)?.execute(params![
        serde_json::Value::Array(templates).to_string(),
        last,
        only
    ])?;
    let expanded = tx
        .prepare_cached("DELETE FROM unexpanded WHERE seq <= ?1 AND (?2 IS NULL OR seq = ?2)")?
        .execute(params![last, only])?;
    Ok(expanded)
}

/// Waiting events by type: how many, and the oldest's arrival (unix ms).
pub(super) fn waiting(conn: &Connection) -> Result<Vec<(EventType, i64, i64)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT e.event_type, count(*), min(e.received_at)
         FROM unexpanded u CROSS JOIN events e ON e.seq = u.seq GROUP BY e.event_type",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (t, n, oldest) = row?;
        if let Ok(t) = t.parse::<EventType>() {
            out.push((t, n, oldest));
        }
    }
    Ok(out)
}

/// The jobs event `seq` will get, for `events show`, when it is still
/// waiting; `None` once its jobs exist.
pub(super) fn projected_details(
    conn: &Connection,
    routing: &Routing,
    seq: i64,
) -> Result<Option<Vec<JobDetail>>, StoreError> {
    let waiting: Option<(String, i64)> = conn
        .prepare_cached(
            "SELECT e.event_type, e.received_at FROM unexpanded u CROSS JOIN events e ON e.seq = u.seq
             WHERE u.seq = ?1",
        )?
        .query_row([seq], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((event_type, received_at)) = waiting else {
        return Ok(None);
    };
    let Ok(event_type) = event_type.parse::<EventType>() else {
        return Ok(Some(Vec::new()));
    };
    Ok(Some(
        projected(routing, event_type)
            .into_iter()
            .map(|(kind, hook, state)| JobDetail {
                kind: kind.as_str().to_owned(),
                hook: hook.to_owned(),
                state: state.as_str().to_owned(),
                attempts: 0,
                due_at_ms: (state == JobState::Pending).then_some(received_at),
                last_error_code: None,
                last_error: None,
                replays: 0,
                attempt_log: Vec::new(),
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use rusqlite::{params, Connection};

    /// The plan SQLite makes for expansion walks the waiting events and looks
    /// each up by key; the other way round it walked every stored event.
    #[test]
    fn expansion_walks_the_waiting_events_not_every_stored_one() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::sqlite::schema::migrate(&mut conn).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", super::EXPAND))
            .unwrap()
            .query_map(params!["[]", 1, None::<i64>], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(plan[0].starts_with("SEARCH u "), "{plan:?}");
        assert!(
            plan.iter()
                .any(|p| p == "SEARCH e USING INTEGER PRIMARY KEY (rowid=?)"),
            "{plan:?}"
        );
    }
}
