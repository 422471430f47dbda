//! The SQLite backend: one file, one daemon, one writer thread.
//!
//! Writes go through one writer thread that owns the write connection.
//! Ingest requests hand their event to it and wait; the writer takes every
//! event pending at that moment, commits them in one transaction (group
//! commit) and only then answers each request with its own outcome. Other
//! writes (the worker's, `replay`) are closures run on the same thread.
//! Reads run on a small pool of read connections off the async threads.
//!
//! Two refinements keep the commit cheap. Writes whose loss in a power
//! failure is harmless (claiming a job, a fetch's progress) are *relaxed*: a
//! batch of only those commits without `fsync` ([`SqliteStore::write_relaxed`]).
//! And the answers of one commit reach each HTTP worker thread as a single
//! message ([`SqliteStore::serve_answers_on_this_thread`]), not one
//! cross-thread wake each.
//!
//! This file opens the store and runs reads and writes; the statements are
//! in one file per part, each adding the [`SqliteStore`] methods of its
//! part: [`ingest`], [`worker`] (with [`expand`], which makes an event's
//! jobs after its answer), [`enrichment`] and [`logs`] (what a fetch keeps),
//! [`inspect`] (the CLI's read views) and [`operator`] (the operator's
//! commands). [`writer`], [`checkpointer`] and [`schema`] are the machinery.

mod checkpointer;
mod enrichment;
mod expand;
mod ingest;
mod inspect;
mod logs;
mod operator;
mod schema;
mod worker;
mod writer;

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use super::{AttemptOutcome, EventStatus, JobKind, JobState, Routing, StoreError, StoreOptions};
use crate::config::Synchronous;
use crate::domain::EnrichmentStatus;
use writer::Command;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// The stored words ([`JobKind`], [`JobState`], [`AttemptOutcome`]) are TEXT columns.
macro_rules! text_column {
    ($($t:ty),+) => {$(
        impl rusqlite::types::ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl rusqlite::types::FromSql for $t {
            fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                v.as_str()?
                    .parse()
                    .map_err(|e: String| rusqlite::types::FromSqlError::Other(e.into()))
            }
        }
    )+};
}

text_column!(
    JobKind,
    JobState,
    AttemptOutcome,
    EventStatus,
    EnrichmentStatus
);

impl From<rusqlite_migration::Error> for StoreError {
    fn from(e: rusqlite_migration::Error) -> Self {
        StoreError::Migration(e.to_string())
    }
}

/// Most commands (inserts and other writes) the writer commits in one transaction.
pub const MAX_BATCH_EVENTS: usize = 512;
/// Commands waiting for the writer before senders have to wait.
const WRITER_QUEUE_LEN: usize = 8_192;
/// Read connections kept open.
const MAX_IDLE_READERS: usize = 4;

/// Whether a write must be on disk (`fsync`ed) before it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Committed with the configured `synchronous` (FULL by default).
    Durable,
    /// May commit without `fsync` when nothing durable shares its batch.
    Relaxed,
}

/// The SQLite database: its writer thread and its read connections.
#[derive(Clone)]
pub struct SqliteStore {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    options: StoreOptions,
    /// Which jobs an event gets: made after the answer (see [`expand`]).
    routing: std::sync::Arc<Routing>,
    writer: mpsc::Sender<Command>,
    readers: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.options.path)
            .finish()
    }
}

/// Runs `f` with a read connection from the pool (or a new one), on the
/// calling thread, which must be one that may block.
fn read_blocking<T>(
    inner: &Inner,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
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
}

/// The `PRAGMA synchronous` value for a setting.
fn sync_pragma(s: Synchronous) -> &'static str {
    match s {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    }
}

/// Opens a connection with our pragmas.
fn open_connection(options: &StoreOptions, read_only: bool) -> Result<Connection, StoreError> {
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
        conn.pragma_update(None, "synchronous", sync_pragma(options.synchronous))?;
        // No connection checkpoints when it commits: the checkpointer does,
        // on its own thread (see [`checkpointer`]).
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    }
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating and migrating) the database and starts the writer thread.
    /// The writer stops when every handle is dropped.
    pub fn open(options: StoreOptions, routing: Routing) -> Result<Self, StoreError> {
        let mut conn = open_connection(&options, false)?;
        schema::migrate(&mut conn)?;
        let nudge = checkpointer::spawn(open_connection(&options, false)?, options.busy_timeout)?;
        let (tx, rx) = mpsc::channel(WRITER_QUEUE_LEN);
        writer::spawn(conn, rx, routing.clone(), options.synchronous, nudge)?;
        Ok(Self {
            inner: std::sync::Arc::new(Inner {
                options,
                routing: std::sync::Arc::new(routing),
                writer: tx,
                readers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.options.path
    }

    /// Makes the calling thread's route for answers (see the module
    /// documentation): a local task that hands out every answer of one
    /// commit for this thread, woken once per commit instead of once per
    /// request (each wake from another thread is a syscall and, on a busy
    /// core, a context switch). Must be called inside a `LocalSet`.
    pub fn serve_answers_on_this_thread(&self) {
        writer::Route::install_for_this_thread();
    }

    /// Runs `f` on the writer thread inside a transaction and returns its
    /// result once that transaction has committed. The transaction is shared
    /// with whatever else is pending (group commit); `f` runs in a savepoint,
    /// so its error undoes only its own changes.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_with(Durability::Durable, f).await
    }

    /// Like [`SqliteStore::write`], for a write whose loss in a power failure is
    /// harmless: claiming a job (after any restart every claimed job is
    /// pending again anyway) or keeping a fetch's progress (fetched again).
    /// It is answered once committed, like any write, but a batch holding
    /// only such writes commits with `synchronous = NORMAL` (no `fsync`; the
    /// WAL still keeps the database consistent), so the worker does not wait
    /// for the disk to take its next job. The next durable commit's `fsync`
    /// covers it too: the WAL is written in order. Against a process crash
    /// (`kill -9`, OOM) it is as safe as any write: the kernel keeps it.
    async fn write_relaxed<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_with(Durability::Relaxed, f).await
    }

    async fn write_with<T, F>(&self, durability: Durability, f: F) -> Result<T, StoreError>
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
            .send(Command::Exec(job, durability))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Runs `f` with a read connection on a blocking thread.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _g = span.enter();
            read_blocking(&inner, f)
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

    /// Whether a write goes through the writer thread.
    pub async fn ping_writer(&self) -> Result<(), StoreError> {
        self.write(|_| Ok(())).await
    }

    /// `PRAGMA integrity_check`, then a write transaction begun and rolled back.
    pub async fn check(&self) -> Result<String, StoreError> {
        let options = self.inner.options.clone();
        tokio::task::spawn_blocking(move || {
            let conn = open_connection(&options, false)?;
            let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
            if ok != "ok" {
                return Err(StoreError::Database(format!("integrity_check: {ok}")));
            }
            conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
                .map_err(|e| StoreError::Database(format!("not writable: {e}")))?;
            Ok(format!("{} writable, integrity ok", options.path.display()))
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn store(dir: &tempfile::TempDir, synchronous: Synchronous) -> SqliteStore {
        SqliteStore::open(
            StoreOptions {
                path: dir.path().join("t.db"),
                synchronous,
                busy_timeout: Duration::from_secs(5),
            },
            Routing::default(),
        )
        .unwrap()
    }

    /// `PRAGMA synchronous` as the writer connection has it inside the write's transaction.
    fn sync_level(tx: &rusqlite::Transaction<'_>) -> Result<i64, StoreError> {
        Ok(tx.query_row("PRAGMA synchronous", [], |r| r.get(0))?)
    }

    const NORMAL: i64 = 1;
    const FULL: i64 = 2;

    /// Holds the writer inside a batch of its own until the returned sender
    /// is used, so that the writes queued meanwhile share the next batch.
    /// Await the returned future (the holding write) after releasing it.
    async fn hold_writer(
        s: &SqliteStore,
    ) -> (
        std::pin::Pin<Box<impl std::future::Future<Output = Result<(), StoreError>> + '_>>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let mut holder = Box::pin(s.write(move |_| {
            started_tx.send(()).unwrap();
            gate_rx.recv().unwrap();
            Ok(())
        }));
        assert!(futures_util::poll!(&mut holder).is_pending());
        started_rx.recv().unwrap();
        (holder, gate_tx)
    }

    /// Runs `a` then `b` in one batch of their own: the writer is held while
    /// both queue up, then released.
    async fn in_one_batch<A, B>(
        s: &SqliteStore,
        a: impl std::future::Future<Output = A>,
        b: impl std::future::Future<Output = B>,
    ) -> (A, B) {
        let (holder, gate) = hold_writer(s).await;
        tokio::pin!(a, b);
        assert!(futures_util::poll!(&mut a).is_pending());
        assert!(futures_util::poll!(&mut b).is_pending());
        gate.send(()).unwrap();
        holder.await.unwrap();
        (a.await, b.await)
    }

    /// Stores one 4 KiB blob: a write that adds at least a page to the database.
    fn add_page(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
        tx.execute(
            "INSERT INTO quarantine (received_at, reason, body) VALUES (0, 'test', zeroblob(4096))",
            [],
        )?;
        Ok(())
    }

    fn db_file_len(dir: &tempfile::TempDir) -> u64 {
        std::fs::metadata(dir.path().join("t.db")).unwrap().len()
    }

    /// Polls `done` every 10 ms for up to 10 s (unit tests cannot reach
    /// tests/support).
    async fn within_10s(mut done: impl FnMut() -> bool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    #[tokio::test]
    async fn the_writer_never_checkpoints_and_the_checkpointer_moves_its_pages_into_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir, Synchronous::Full);
        let autocheckpoint: i64 = s
            .write(|tx| Ok(tx.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(autocheckpoint, 0, "no commit may include a checkpoint");
        let before = db_file_len(&dir);
        for _ in 0..50 {
            s.write(add_page).await.unwrap();
        }
        let grown = within_10s(|| db_file_len(&dir) >= before + 50 * 4096).await;
        assert!(
            grown,
            "the database file went from {before} to {} bytes: the pages stayed in the WAL",
            db_file_len(&dir)
        );
    }

    #[tokio::test]
    async fn a_reader_holding_an_old_snapshot_past_the_wal_bound_stalls_writes_only_briefly() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir, Synchronous::Normal);
        s.write(add_page).await.unwrap();
        // A reader in the middle of a long read: the WAL cannot start over
        // while it may still read from it, so it grows past its bound and the
        // checkpointer starts waiting for readers (which makes writers wait).
        let reader = Connection::open(dir.path().join("t.db")).unwrap();
        reader
            .execute_batch("BEGIN; SELECT count(*) FROM quarantine;")
            .unwrap();
        let batches = checkpointer::MAX_WAL_PAGES as usize / 256 + 2;
        let mut slowest = Duration::ZERO;
        for _ in 0..batches + 20 {
            let started = std::time::Instant::now();
            s.write(|tx| {
                for _ in 0..256 {
                    add_page(tx)?;
                }
                Ok(())
            })
            .await
            .unwrap();
            slowest = slowest.max(started.elapsed());
        }
        let wal = std::fs::metadata(dir.path().join("t.db-wal"))
            .unwrap()
            .len();
        assert!(
            wal > checkpointer::MAX_WAL_PAGES as u64 * 4096,
            "the reader kept the WAL from starting over ({wal} bytes)"
        );
        assert!(
            slowest < Duration::from_secs(2),
            "a write waited {slowest:?} for a reader it cannot hurry"
        );
        reader.execute_batch("COMMIT").unwrap();
    }

    #[tokio::test]
    async fn relaxed_writes_commit_without_fsync_and_durable_ones_with_the_configured_level() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir, Synchronous::Full);
        assert_eq!(s.write(sync_level).await.unwrap(), FULL);
        assert_eq!(s.write_relaxed(sync_level).await.unwrap(), NORMAL);
        assert_eq!(s.write_relaxed(sync_level).await.unwrap(), NORMAL);
        // Back to FULL as soon as a durable write comes.
        assert_eq!(s.write(sync_level).await.unwrap(), FULL);
    }

    #[tokio::test]
    async fn a_relaxed_write_sharing_a_batch_with_a_durable_one_commits_durably() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir, Synchronous::Full);
        let (relaxed, durable) =
            in_one_batch(&s, s.write_relaxed(sync_level), s.write(sync_level)).await;
        assert_eq!(durable.unwrap(), FULL);
        assert_eq!(
            relaxed.unwrap(),
            FULL,
            "it shared the durable write's commit"
        );
        // Alone again, a relaxed write commits without fsync.
        assert_eq!(s.write_relaxed(sync_level).await.unwrap(), NORMAL);
    }

    #[tokio::test]
    async fn a_failing_write_undoes_only_its_own_changes_in_a_shared_batch() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir, Synchronous::Full);
        let (blocker, gate_tx) = hold_writer(&s).await;
        let keep = |reason: &'static str| {
            move |tx: &rusqlite::Transaction<'_>| -> Result<(), StoreError> {
                tx.execute(
                    "INSERT INTO quarantine (received_at, reason, body) VALUES (0, ?1, x'')",
                    [reason],
                )?;
                Ok(())
            }
        };
        let first = s.write(keep("first"));
        let failing = s.write(|tx| -> Result<(), StoreError> {
            tx.execute(
                "INSERT INTO quarantine (received_at, reason, body) VALUES (0, 'failing', x'')",
                [],
            )?;
            Err(StoreError::NotFound("on purpose".into()))
        });
        let last = s.write(keep("last"));
        tokio::pin!(first, failing, last);
        for f in [&mut first, &mut last] {
            assert!(futures_util::poll!(f).is_pending());
        }
        assert!(futures_util::poll!(&mut failing).is_pending());
        gate_tx.send(()).unwrap();
        blocker.await.unwrap();
        first.await.unwrap();
        last.await.unwrap();
        assert!(matches!(failing.await, Err(StoreError::NotFound(_))));
        let reasons: Vec<String> = s
            .read(|c| {
                let mut st = c.prepare("SELECT reason FROM quarantine ORDER BY id")?;
                let rows = st.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
            .unwrap();
        assert_eq!(reasons, ["first", "last"]);
    }

    #[tokio::test]
    async fn with_synchronous_normal_configured_everything_commits_with_normal() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir, Synchronous::Normal);
        assert_eq!(s.write(sync_level).await.unwrap(), NORMAL);
        assert_eq!(s.write_relaxed(sync_level).await.unwrap(), NORMAL);
        assert_eq!(s.write(sync_level).await.unwrap(), NORMAL);
    }
}
