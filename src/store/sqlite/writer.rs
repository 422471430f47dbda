//! The single writer thread and its group commit.

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::checkpointer::Nudge;
use super::{ingest, sync_pragma, Durability, MAX_BATCH_EVENTS};
use crate::config::Synchronous;
use crate::store::{InsertOutcome, NewEvent, Routing, StoreError};

/// Answers a write's caller once its batch's fate is known: `None` when it
/// committed, the commit error otherwise.
pub(super) type Finish = Box<dyn FnOnce(Option<&str>) + Send>;

/// What a write did inside the batch transaction, and how to answer it.
pub(super) struct Written {
    /// Whether the write succeeded; a failed one is rolled back to its savepoint.
    pub ok: bool,
    /// Answers the caller after the commit.
    pub finish: Finish,
}

/// A write to run on the writer's connection, inside the batch transaction;
/// `None` when the batch failed before its turn: it must then change nothing
/// and answer with the batch's error.
pub(super) type WriteFn = Box<dyn FnOnce(Option<&Transaction<'_>>) -> Written + Send>;

/// Where the answer to one insert goes.
type InsertReply = oneshot::Sender<Result<InsertOutcome, StoreError>>;

/// An insert's answer, on its way to the caller.
type Answer = (InsertReply, Result<InsertOutcome, StoreError>);

/// A thread's mailbox for answers (see
/// [`super::SqliteStore::serve_answers_on_this_thread`]): the writer sends it
/// every answer of one commit for that thread at once.
#[derive(Clone)]
pub(crate) struct Route {
    id: usize,
    tx: mpsc::UnboundedSender<Vec<Answer>>,
}

thread_local! {
    static ROUTE: std::cell::RefCell<Option<Route>> = const { std::cell::RefCell::new(None) };
}

impl Route {
    /// Makes this thread's route and the local task behind it, unless one
    /// is already running. Must be called inside a `LocalSet`.
    pub(crate) fn install_for_this_thread() {
        static NEXT_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        ROUTE.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.as_ref().is_some_and(|r| !r.tx.is_closed()) {
                return;
            }
            let (tx, mut rx) = mpsc::unbounded_channel::<Vec<Answer>>();
            tokio::task::spawn_local(async move {
                while let Some(answers) = rx.recv().await {
                    for (reply, result) in answers {
                        let _ = reply.send(result);
                    }
                }
            });
            *cell = Some(Route {
                id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                tx,
            });
        });
    }

    /// This thread's route, if one was installed and its task still runs
    /// (the runtime that ran it may have gone).
    pub(crate) fn of_this_thread() -> Option<Route> {
        ROUTE.with(|cell| {
            cell.borrow()
                .as_ref()
                .filter(|r| !r.tx.is_closed())
                .cloned()
        })
    }
}

pub(super) enum Command {
    Insert(Box<NewEvent>, InsertReply, Option<Route>),
    Exec(WriteFn, Durability),
}

impl Command {
    fn durable(&self) -> bool {
        match self {
            Command::Insert(..) => true,
            Command::Exec(_, d) => *d == Durability::Durable,
        }
    }
}

/// The writer connection's `synchronous` setting, switched per batch: the
/// configured one when anything in the batch must be durable, NORMAL when
/// only relaxed writes (job claims) are in it.
struct SyncMode {
    configured: Synchronous,
    current: Synchronous,
}

impl SyncMode {
    /// Sets the mode a batch needs, if it is not already set. Outside a transaction.
    fn set_for(&mut self, conn: &Connection, durable: bool) -> Result<(), StoreError> {
        let wanted = if durable {
            self.configured
        } else {
            Synchronous::Normal
        };
        if wanted != self.current {
            conn.pragma_update(None, "synchronous", sync_pragma(wanted))?;
            self.current = wanted;
        }
        Ok(())
    }
}

pub(super) fn spawn(
    conn: Connection,
    rx: mpsc::Receiver<Command>,
    routing: Routing,
    synchronous: Synchronous,
    checkpoints: Nudge,
) -> Result<(), StoreError> {
    let sync = SyncMode {
        configured: synchronous,
        current: synchronous,
    };
    std::thread::Builder::new()
        .name("steerhook-writer".into())
        .spawn(move || run(conn, rx, routing, sync, checkpoints))
        .map(|_| ())
        .map_err(|e| StoreError::Task(format!("cannot start the writer thread: {e}")))
}

/// Takes whatever is waiting (up to [`MAX_BATCH_EVENTS`] commands), runs it
/// in arrival order in one transaction, commits once, and only then answers
/// each command (group commit). Inserts and the worker's writes share the
/// commit, so one fsync covers them all. Checkpoints are the checkpointer's,
/// nudged after each commit.
fn run(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Command>,
    routing: Routing,
    mut sync: SyncMode,
    checkpoints: Nudge,
) {
    let mut batch: Vec<Command> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH_EVENTS {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        flush(&mut conn, &mut batch, &routing, &mut sync);
        checkpoints.committed();
    }
    tracing::debug!("database writer stopped");
}

/// How each command of a batch is answered after the commit.
enum Pending {
    Insert(InsertReply, InsertOutcome, Option<Route>),
    Exec(Finish),
}

fn flush(conn: &mut Connection, batch: &mut Vec<Command>, routing: &Routing, sync: &mut SyncMode) {
    if batch.is_empty() {
        return;
    }
    let durable = batch.iter().any(Command::durable);
    let mut pending: Vec<Pending> = Vec::with_capacity(batch.len());
    // Inserts that could not even be attempted are answered with the batch's error.
    let mut unrun: Vec<InsertReply> = Vec::new();
    let mut unrun_writes: Vec<WriteFn> = Vec::new();
    let mut failure: Option<StoreError> = None;
    let mut commands = batch.drain(..);
    let begun = sync
        .set_for(conn, durable)
        .and_then(|()| Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?));
    match begun {
        Err(e) => failure = Some(e),
        Ok(tx) => {
            for cmd in commands.by_ref() {
                match cmd {
                    Command::Insert(ev, reply, route) => {
                        // An insert that fails fails the batch (as a disk error
                        // would anyway): nothing of it is stored, every caller hears so.
                        match ingest::insert_event_with_jobs(&tx, &ev, routing) {
                            Ok(outcome) => pending.push(Pending::Insert(reply, outcome, route)),
                            Err(e) => {
                                unrun.push(reply);
                                failure = Some(e);
                            }
                        }
                    }
                    Command::Exec(f, _) => {
                        // Each write gets a savepoint, so its own failure undoes
                        // only its own changes, as its own transaction would.
                        if let Err(e) = run_cached(&tx, "SAVEPOINT steerhook_write") {
                            unrun_writes.push(f);
                            failure = Some(e.into());
                        } else {
                            let written = f(Some(&tx));
                            let ok = written.ok;
                            pending.push(Pending::Exec(written.finish));
                            let closed = if ok {
                                run_cached(&tx, "RELEASE steerhook_write")
                            } else {
                                run_cached(&tx, "ROLLBACK TO steerhook_write")
                                    .and_then(|()| run_cached(&tx, "RELEASE steerhook_write"))
                            };
                            if let Err(e) = closed {
                                failure = Some(e.into());
                            }
                        }
                    }
                }
                if failure.is_some() {
                    break;
                }
            }
            if failure.is_none() {
                if let Err(e) = tx.commit() {
                    failure = Some(e.into());
                }
            }
            // Otherwise dropping `tx` rolls the whole batch back.
        }
    }
    // Commands after a failure were not run; they fail with the batch.
    for cmd in commands {
        match cmd {
            Command::Insert(_, reply, _) => unrun.push(reply),
            Command::Exec(f, _) => unrun_writes.push(f),
        }
    }
    let error = failure.map(|e| {
        tracing::error!(
            error = %e,
            commands = pending.len() + unrun.len() + unrun_writes.len(),
            "commit failed; answering 503"
        );
        e.to_string()
    });
    // Insert answers, one message per caller thread.
    let mut routed: Vec<(Route, Vec<Answer>)> = Vec::new();
    for p in pending {
        match p {
            Pending::Insert(reply, outcome, route) => {
                let result = match &error {
                    None => Ok(outcome),
                    Some(msg) => Err(StoreError::Commit(msg.clone())),
                };
                match route {
                    None => {
                        let _ = reply.send(result);
                    }
                    Some(route) => match routed.iter_mut().find(|(r, _)| r.id == route.id) {
                        Some((_, answers)) => answers.push((reply, result)),
                        None => routed.push((route, vec![(reply, result)])),
                    },
                }
            }
            Pending::Exec(finish) => finish(error.as_deref()),
        }
    }
    for (route, answers) in routed {
        // The thread's runtime has gone: answer directly.
        if let Err(mpsc::error::SendError(answers)) = route.tx.send(answers) {
            for (reply, result) in answers {
                let _ = reply.send(result);
            }
        }
    }
    let msg = error.unwrap_or_default();
    for reply in unrun {
        let _ = reply.send(Err(StoreError::Commit(msg.clone())));
    }
    for f in unrun_writes {
        (f(None).finish)(Some(&msg));
    }
}

/// Runs a statement without parameters through the statement cache (the
/// savepoints around each write would otherwise be parsed every time).
fn run_cached(tx: &Transaction<'_>, sql: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(sql)?.execute([]).map(|_| ())
}
