//! The SQLite store: schema, the single writer, and every query. SQL lives only here.
//!
//! Writes go through one writer thread that owns the write connection.
//! Ingest requests hand their event to it and wait; the writer takes every
//! event pending at that moment, commits them in one transaction (group
//! commit) and only then answers each request with its own outcome. Other
//! writes (the worker's, `replay`) are closures run on the same thread.
//! Reads run on a small pool of read connections off the async threads.

mod inspect;
mod queries;
mod schema;
mod writer;

pub use inspect::*;
pub use queries::*;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::config::Synchronous;
use crate::domain::{EventType, IncomingEvent};
use writer::Command;

/// Most commands (inserts and other writes) the writer commits in one transaction.
pub const MAX_BATCH_EVENTS: usize = 512;
/// Commands waiting for the writer before senders have to wait.
const WRITER_QUEUE_LEN: usize = 8_192;
/// Read connections kept open.
const MAX_IDLE_READERS: usize = 4;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused (disk full, read-only, corrupt, busy past the timeout).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The schema could not be brought up to date.
    #[error("database migration failed: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    /// The group commit this insert was part of failed; nothing of it was stored.
    #[error("the commit failed: {0}")]
    Commit(String),
    /// The writer thread is gone (shutting down or crashed).
    #[error("the database writer has stopped")]
    WriterGone,
    /// A row that should exist does not.
    #[error("not found: {0}")]
    NotFound(String),
    /// A blocking task panicked or was cancelled.
    #[error("a database task failed: {0}")]
    Task(String),
}

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The SQLite file.
    pub path: PathBuf,
    /// `PRAGMA synchronous`.
    pub synchronous: Synchronous,
    /// `PRAGMA busy_timeout`.
    pub busy_timeout: Duration,
}

/// Which jobs a new event gets, decided by the configuration.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// Whether the run is fetched from the API first.
    pub enrich: bool,
    /// Hook names and the event types each receives.
    pub hooks: Vec<(String, Vec<EventType>)>,
}

impl Routing {
    /// Hooks that receive `event_type`.
    pub fn hooks_for(&self, event_type: EventType) -> impl Iterator<Item = &str> {
        self.hooks
            .iter()
            .filter(move |(_, ev)| ev.contains(&event_type))
            .map(|(n, _)| n.as_str())
    }
}

/// An event to store, with what the request told us about it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The parsed, verified event.
    pub event: IncomingEvent,
    /// Receipt time, unix ms.
    pub received_at: i64,
    /// The client's address as logged.
    pub client_addr: Option<String>,
}

/// The answer to an insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored now; committed before this was returned.
    Accepted {
        /// The event id.
        id: String,
    },
    /// The dedupe key was already stored.
    Duplicate {
        /// The id of the stored event.
        id: String,
    },
}

/// A cheap-to-clone handle on the database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    options: StoreOptions,
    writer: mpsc::Sender<Command>,
    readers: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.options.path)
            .finish()
    }
}

/// Opens a connection with our pragmas.
pub fn open_connection(options: &StoreOptions, read_only: bool) -> Result<Connection, StoreError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(&options.path, flags)?;
    conn.busy_timeout(options.busy_timeout)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    if !read_only {
        // WAL lets readers (the CLI, /healthz) work while the writer commits.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let sync = match options.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
    }
    Ok(conn)
}

impl Store {
    /// Opens (creating and migrating) the database and starts the writer thread.
    /// The writer stops when every handle is dropped.
    pub fn open(options: StoreOptions, routing: Routing) -> Result<Self, StoreError> {
        let mut conn = open_connection(&options, false)?;
        schema::migrations().to_latest(&mut conn)?;
        let (tx, rx) = mpsc::channel(WRITER_QUEUE_LEN);
        writer::spawn(conn, rx, routing)?;
        Ok(Self {
            inner: Arc::new(Inner {
                options,
                writer: tx,
                readers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.options.path
    }

    /// Stores a new event and its jobs; returns after the commit.
    #[tracing::instrument(skip_all, fields(event_id = %ev.event.id, run_id = %ev.event.run_id))]
    pub async fn insert_event(&self, ev: NewEvent) -> Result<InsertOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .writer
            .send(Command::Insert(Box::new(ev), reply))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Runs `f` on the writer thread inside a transaction and returns its
    /// result once that transaction has committed. The transaction is shared
    /// with whatever else is pending (group commit); `f` runs in a savepoint,
    /// so its error undoes only its own changes.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let span = tracing::Span::current();
        let job: writer::WriteFn = Box::new(move |tx: Option<&rusqlite::Transaction<'_>>| {
            let result = match tx {
                Some(tx) => {
                    let _g = span.enter();
                    f(tx)
                }
                None => Err(StoreError::Commit(String::new())),
            };
            writer::Written {
                ok: result.is_ok() && tx.is_some(),
                finish: Box::new(move |commit_error: Option<&str>| {
                    let answer = match (result, commit_error) {
                        (Err(StoreError::Commit(_)), Some(msg)) => {
                            Err(StoreError::Commit(msg.to_owned()))
                        }
                        (Err(e), _) => Err(e),
                        (Ok(_), Some(msg)) => Err(StoreError::Commit(msg.to_owned())),
                        (Ok(out), None) => Ok(out),
                    };
                    let _ = reply.send(answer);
                }),
            }
        });
        self.inner
            .writer
            .send(Command::Exec(job))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Runs `f` with a read connection on a blocking thread.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _g = span.enter();
            let conn = {
                let mut pool = inner.readers.lock().unwrap_or_else(|p| p.into_inner());
                pool.pop()
            };
            let conn = match conn {
                Some(c) => c,
                None => open_connection(&inner.options, true)?,
            };
            let out = f(&conn);
            // A connection that just failed may be broken; drop it rather than reuse.
            if out.is_ok() {
                let mut pool = inner.readers.lock().unwrap_or_else(|p| p.into_inner());
                if pool.len() < MAX_IDLE_READERS {
                    pool.push(conn);
                }
            }
            out
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| {
            c.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })?;
            Ok(())
        })
        .await
    }
}
