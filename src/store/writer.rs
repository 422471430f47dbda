//! The single writer thread and its group commit.

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::{queries, InsertOutcome, NewEvent, Routing, StoreError, MAX_BATCH_EVENTS};

/// A write to run on the writer's connection.
pub(super) type WriteFn = Box<dyn FnOnce(&mut Connection) + Send>;

/// Where the answer to one insert goes.
type InsertReply = oneshot::Sender<Result<InsertOutcome, StoreError>>;

pub(super) enum Command {
    Insert(Box<NewEvent>, InsertReply),
    Exec(WriteFn),
}

pub(super) fn spawn(
    conn: Connection,
    rx: mpsc::Receiver<Command>,
    routing: Routing,
) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name("steerhook-writer".into())
        .spawn(move || run(conn, rx, routing))
        .map(|_| ())
        .map_err(|e| StoreError::Task(format!("cannot start the writer thread: {e}")))
}

/// Takes whatever is waiting, commits consecutive inserts together, and
/// answers each only after its transaction has committed (or failed).
fn run(mut conn: Connection, mut rx: mpsc::Receiver<Command>, routing: Routing) {
    let mut batch: Vec<(Box<NewEvent>, InsertReply)> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Insert(ev, reply) => {
                    batch.push((ev, reply));
                    if batch.len() < MAX_BATCH_EVENTS {
                        next = rx.try_recv().ok();
                    }
                }
                Command::Exec(f) => {
                    // Keep order: earlier inserts commit before a later write runs.
                    flush(&mut conn, &mut batch, &routing);
                    f(&mut conn);
                    next = rx.try_recv().ok();
                }
            }
        }
        flush(&mut conn, &mut batch, &routing);
    }
    tracing::debug!("database writer stopped");
}

fn flush(conn: &mut Connection, batch: &mut Vec<(Box<NewEvent>, InsertReply)>, routing: &Routing) {
    if batch.is_empty() {
        return;
    }
    let result = (|| -> Result<Vec<InsertOutcome>, StoreError> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for (ev, _) in batch.iter() {
            outcomes.push(queries::insert_event_with_jobs(&tx, ev, routing)?);
        }
        tx.commit()?;
        Ok(outcomes)
    })();
    match result {
        Ok(outcomes) => {
            for ((_, reply), outcome) in batch.drain(..).zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, events = batch.len(), "commit failed; answering 503");
            let msg = e.to_string();
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Err(StoreError::Commit(msg.clone())));
            }
        }
    }
}
