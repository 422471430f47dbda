//! Ingest on SQLite: an event stored (or found a duplicate) inside the
//! writer's batch, its jobs left to be made; refused bodies kept.

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use tokio::sync::oneshot;

use super::writer::{self, Command};
use super::SqliteStore;
use crate::store::{
    event_id_candidates, InsertOutcome, NewEvent, QuarantinedBody, Routing, StoreError,
};

impl SqliteStore {
    /// Stores a new event and its jobs; returns after the commit.
    pub async fn insert_event(&self, ev: NewEvent) -> Result<InsertOutcome, StoreError> {
        let route = writer::Route::of_this_thread();
        let (reply, rx) = oneshot::channel();
        self.inner
            .writer
            .send(Command::Insert(Box::new(ev), reply, route))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Keeps a refused body.
    pub async fn quarantine(&self, q: QuarantinedBody) -> Result<i64, StoreError> {
        self.write(move |tx| insert_quarantine(tx, &q)).await
    }
}

/// Inserts the event, with its jobs to be made (`unexpanded`), or reports
/// the duplicate. Runs inside the writer's batch transaction.
pub(super) fn insert_event_with_jobs(
    tx: &Transaction<'_>,
    ev: &NewEvent,
    routing: &Routing,
) -> Result<InsertOutcome, StoreError> {
    let e = &ev.event;
    // The dedupe key decides first: a conflict on it is a duplicate,
    // whatever id the new copy carries. A conflict on the id alone (another
    // run sent under the same id) moves on to the next candidate id, so ids
    // stay unique (SPEC §5). Both are the constraints' answer, inside this
    // transaction: no read-then-write race.
    // Not `RETURNING seq`: SQLite gathers RETURNING rows in a temporary
    // b-tree, opened and closed per statement. The row count says whether
    // the row was stored, and then its rowid is the last one inserted.
    let mut stored_as = None;
    for id in event_id_candidates(&e.id, e.event_type.as_str(), &e.run_id) {
        let inserted = tx
            .prepare_cached(
                "INSERT INTO events (id, sender_id, event_type, run_id, signed_at, received_at, client_addr, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                id,
                e.sender_id,
                e.event_type.as_str(),
                e.run_id,
                e.signed_at as i64,
                ev.received_at,
                ev.client_addr,
                e.body
            ])?;
        if inserted == 1 {
            stored_as = Some(id);
            break;
        }
        let existing: Option<String> = tx
            .prepare_cached("SELECT id FROM events WHERE event_type = ?1 AND run_id = ?2")?
            .query_row(params![e.event_type.as_str(), e.run_id], |r| r.get(0))
            .optional()?;
        if let Some(id) = existing {
            return Ok(InsertOutcome::Duplicate { id });
        }
    }
    let Some(id) = stored_as else {
        return Err(StoreError::Database(format!(
            "no free event id derived from {:?}",
            e.id
        )));
    };
    let seq = tx.last_insert_rowid();
    if super::expand::projected(routing, e.event_type).is_empty() {
        // Nothing to do for this event: it is finished as soon as it is stored.
        tx.prepare_cached("UPDATE events SET status = 'done' WHERE seq = ?1")?
            .execute([seq])?;
    } else {
        // Its jobs are made after the answer, by the worker (see `expand`).
        tx.prepare_cached("INSERT INTO unexpanded (seq) VALUES (?1)")?
            .execute([seq])?;
    }
    Ok(InsertOutcome::Accepted { id })
}

/// Keeps a refused body for inspection.
pub(super) fn insert_quarantine(tx: &Connection, q: &QuarantinedBody) -> Result<i64, StoreError> {
    tx.execute(
        "INSERT INTO quarantine (received_at, client_addr, signed_at, reason, body) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![q.received_at, q.client_addr, q.signed_at as i64, q.reason, q.body],
    )?;
    Ok(tx.last_insert_rowid())
}
