//! The storage interface: every operation the daemon and the CLI perform on
//! the database, named after what it does, and one implementation per
//! backend. SQL lives only under this module, and no driver type leaves it.
//!
//! [`Store`] is a cheap-to-clone handle; its methods are the interface.
//! - [`sqlite`]: one file, one daemon; one writer thread with group commit.
//! - [`postgres`]: a server that several daemons share; batched inserts,
//!   `SKIP LOCKED` claims under leases, `LISTEN/NOTIFY` wake-ups.

mod logs;
mod model;
mod postgres;
mod sqlite;
mod views;

pub use model::*;
pub use postgres::{
    check_url as check_postgres_url, redacted_url as redacted_postgres_url,
    LOCK_MIGRATE as POSTGRES_MIGRATE_LOCK, LOCK_PRUNE as POSTGRES_PRUNE_LOCK,
};
pub use views::*;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{StorageBackend, StorageSettings, Synchronous};
use crate::domain::EnrichmentError;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused (disk full, read-only, corrupt, busy past the timeout).
    #[error("database error: {0}")]
    Database(String),
    /// The schema could not be brought up to date.
    #[error("database migration failed: {0}")]
    Migration(String),
    /// The group commit this write was part of failed; nothing of it was stored.
    #[error("the commit failed: {0}")]
    Commit(String),
    /// The writer is gone (shutting down or crashed).
    #[error("the database writer has stopped")]
    WriterGone,
    /// A row that should exist does not.
    #[error("not found: {0}")]
    NotFound(String),
    /// A blocking task panicked or was cancelled.
    #[error("a database task failed: {0}")]
    Task(String),
    /// A command that only reads found no database (it never creates one).
    #[error("{0}")]
    NoDatabase(String),
    /// The schema was made by a newer steerhook.
    #[error("the database schema is version {found}, newer than this steerhook knows ({known}); upgrade steerhook on this host (or restore a backup made before the newer version ran)")]
    SchemaTooNew {
        /// The database's version.
        found: i32,
        /// The newest this binary knows.
        known: i32,
    },
}

/// The chunks of [`Store::stream_logs_json`].
pub type LogChunks = tokio::sync::mpsc::Receiver<Result<Vec<u8>, StoreError>>;

/// How the SQLite store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The SQLite file.
    pub path: PathBuf,
    /// `PRAGMA synchronous`.
    pub synchronous: Synchronous,
    /// `PRAGMA busy_timeout`.
    pub busy_timeout: Duration,
}

/// A cheap-to-clone handle on the database.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Arc<Backend>,
}

#[derive(Debug)]
enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

/// Calls the same method on whichever backend the store has.
macro_rules! on_backend {
    ($self:ident, $s:ident => $call:expr) => {
        match &*$self.backend {
            Backend::Sqlite($s) => $call,
            Backend::Postgres($s) => $call,
        }
    };
}

impl Store {
    /// Opens the database for `serve`: creates it (SQLite) and its schema,
    /// or migrates it, and starts the writer, with the jobs each new event gets.
    pub async fn open(settings: &StorageSettings, routing: Routing) -> Result<Self, StoreError> {
        let backend = match settings.backend {
            StorageBackend::Sqlite => Backend::Sqlite(sqlite::SqliteStore::open(
                sqlite_options(settings),
                routing,
            )?),
            StorageBackend::Postgres => Backend::Postgres(
                postgres::PgStore::open(
                    postgres_url(settings)?,
                    settings.pool_size,
                    routing,
                    postgres::Open::Serve,
                )
                .await?,
            ),
        };
        Ok(Self {
            backend: Arc::new(backend),
        })
    }

    /// Opens a database `serve` has made, for a command: never creates
    /// one, and says where it looked when there is none.
    pub async fn open_existing(settings: &StorageSettings) -> Result<Self, StoreError> {
        let backend = match settings.backend {
            StorageBackend::Sqlite => {
                if !settings.path.exists() {
                    return Err(StoreError::NoDatabase(format!(
                        "there is no database at {} (storage.path); has `steerhook serve` run with this configuration?",
                        settings.path.display()
                    )));
                }
                Backend::Sqlite(sqlite::SqliteStore::open(
                    sqlite_options(settings),
                    Routing::default(),
                )?)
            }
            StorageBackend::Postgres => Backend::Postgres(
                postgres::PgStore::open(
                    postgres_url(settings)?,
                    settings.pool_size.min(4),
                    Routing::default(),
                    postgres::Open::Existing,
                )
                .await?,
            ),
        };
        Ok(Self {
            backend: Arc::new(backend),
        })
    }

    /// Where the database is, for messages (a URL's password hidden).
    pub fn location(&self) -> String {
        match &*self.backend {
            Backend::Sqlite(s) => s.path().display().to_string(),
            Backend::Postgres(s) => s.location().to_owned(),
        }
    }

    /// The SQLite file, when the backend is SQLite.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &*self.backend {
            Backend::Sqlite(s) => Some(s.path()),
            Backend::Postgres(_) => None,
        }
    }

    /// Whether several daemons may share this database.
    pub fn is_shared(&self) -> bool {
        matches!(&*self.backend, Backend::Postgres(_))
    }

    /// Lets the calling thread receive the answers of one group commit as one
    /// message (see [`sqlite`]); for the HTTP server's worker threads, each a
    /// single-threaded runtime with a `LocalSet`. Call it from inside that
    /// `LocalSet`. Elsewhere answers come one by one, which always works.
    pub fn serve_answers_on_this_thread(&self) {
        if let Backend::Sqlite(s) = &*self.backend {
            s.serve_answers_on_this_thread();
        }
    }

    /// Wakes `wake` when another daemon queues work (PostgreSQL's
    /// `LISTEN`), until `stop`. A single SQLite daemon wakes itself.
    pub fn watch_for_work(&self, wake: Arc<Notify>, stop: CancellationToken) {
        if let Backend::Postgres(s) = &*self.backend {
            s.watch_for_work(wake, stop);
        }
    }

    /// Renews the leases of the jobs this daemon runs until `until` (unix ms).
    pub async fn extend_leases(&self, ids: Vec<i64>, until: i64) -> Result<(), StoreError> {
        on_backend!(self, s => s.extend_leases(ids, until).await)
    }

    /// Makes every daemon on the database wait before its next fetch until
    /// `until` (the API asked us to slow down). One SQLite daemon keeps the
    /// pause in memory only.
    pub async fn pause_fetches_until(&self, until: i64) -> Result<(), StoreError> {
        match &*self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(s) => s.pause_fetches_until(until).await,
        }
    }

    /// Records the hooks this daemon runs, under its `identity`, and returns
    /// how they differ from what other daemons on the database run.
    pub async fn register_hooks(
        &self,
        hooks: Vec<HookConfig>,
        identity: String,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(_) => Ok(Vec::new()),
            Backend::Postgres(s) => s.register_hooks(hooks, identity, now).await,
        }
    }

    /// Stores a new event and its jobs; returns after the commit.
    pub async fn insert_event(&self, ev: NewEvent) -> Result<InsertOutcome, StoreError> {
        on_backend!(self, s => s.insert_event(ev).await)
    }

    /// Keeps a refused body for inspection; returns its id.
    pub async fn quarantine(&self, q: QuarantinedBody) -> Result<i64, StoreError> {
        on_backend!(self, s => s.quarantine(q).await)
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_backend!(self, s => s.ping().await)
    }

    /// Whether a write goes through (for the systemd watchdog).
    pub async fn ping_writer(&self) -> Result<(), StoreError> {
        on_backend!(self, s => s.ping_writer().await)
    }

    /// Checks the database for `doctor`: intact and writable. Returns what it proved.
    pub async fn check(&self) -> Result<String, StoreError> {
        on_backend!(self, s => s.check().await)
    }

    /// Takes the oldest due job (or one whose lease expired) and marks it running.
    pub async fn claim_due_job(&self, f: ClaimFilter) -> Result<Option<ClaimedJob>, StoreError> {
        on_backend!(self, s => s.claim_due_job(f).await)
    }

    /// The earliest time a job may be claimed, unix ms: a pending job
    /// becomes due, or (PostgreSQL) a running job's lease runs out.
    pub async fn next_due_at(&self) -> Result<Option<i64>, StoreError> {
        on_backend!(self, s => s.next_due_at().await)
    }

    /// Records the attempt and moves the job on, in one transaction. When a
    /// fetch ends (either way) the event's deliveries are released and its
    /// enrichment is stored (`rec.enrichment`; without one, decided from
    /// what the fetch stored). Keeps the event's status in step with its jobs.
    pub async fn record_attempt(
        &self,
        job: ClaimedJob,
        rec: AttemptRecord,
        next: JobNext,
        now: i64,
    ) -> Result<(), StoreError> {
        on_backend!(self, s => s.record_attempt(job, rec, next, now).await)
    }

    /// At start: with SQLite (one daemon), puts jobs left running by the
    /// previous process back in the queue, recording the interrupted attempt;
    /// with PostgreSQL, leases decide that. Either way, fetches waiting out
    /// an upstream fault are made due now (a restart says it is fixed).
    /// Returns the number of interrupted jobs.
    pub async fn recover_interrupted(&self, now: i64) -> Result<usize, StoreError> {
        on_backend!(self, s => s.recover_interrupted(now).await)
    }

    /// Loads one event row.
    pub async fn load_event(&self, seq: i64) -> Result<StoredEvent, StoreError> {
        on_backend!(self, s => s.load_event(seq).await)
    }

    /// Every log entry of event `seq`, as one JSON array in the order of
    /// SPEC §5 (by timestamp when every entry has one, else oldest page
    /// first, each page as sent), in chunks of some 64 KiB: the store reads
    /// row by row and the caller writes each chunk out, so a log of any size
    /// passes through bounded memory. A database error ends the stream with
    /// an `Err`; dropping the receiver stops the reading.
    pub fn stream_logs_json(&self, seq: i64) -> LogChunks {
        on_backend!(self, s => s.stream_logs_json(seq))
    }

    /// The newest log entries of event `seq` within `bounds`, oldest first
    /// (the order of SPEC §5), and how many there are in all.
    pub async fn newest_logs(
        &self,
        seq: i64,
        bounds: SummaryBounds,
    ) -> Result<NewestLogs, StoreError> {
        on_backend!(self, s => s.newest_logs(seq, bounds).await)
    }

    /// Stores the run object; with `unsettled`, the run is taken although
    /// it has not settled, and the enrichment becomes partial for that reason.
    pub async fn save_run(
        &self,
        seq: i64,
        run_json: String,
        unsettled: Option<EnrichmentError>,
    ) -> Result<(), StoreError> {
        on_backend!(self, s => s.save_run(seq, run_json, unsettled).await)
    }

    /// Counts one more fetch of a run that had not settled (SPEC §5): such a
    /// fetch is not a failure, and does not use up `fetch_max_attempts`.
    pub async fn count_settle_poll(&self, seq: i64) -> Result<(), StoreError> {
        on_backend!(self, s => s.count_settle_poll(seq).await)
    }

    /// Stores one page of logs and where paging goes next; a page stored
    /// before (a retried fetch) is replaced, so entries are never doubled.
    pub async fn save_log_page(&self, seq: i64, page: LogPage) -> Result<(), StoreError> {
        on_backend!(self, s => s.save_log_page(seq, page).await)
    }

    /// Whether paging already followed `cursor` for this event.
    pub async fn cursor_seen(&self, seq: i64, cursor: String) -> Result<bool, StoreError> {
        on_backend!(self, s => s.cursor_seen(seq, cursor).await)
    }

    /// Marks paging finished without a new page (a page limit, or the next
    /// page would pass `max_log_bytes`); `stopped` says why it stopped early.
    pub async fn finish_logs(
        &self,
        seq: i64,
        stopped: Option<EnrichmentError>,
    ) -> Result<(), StoreError> {
        on_backend!(self, s => s.finish_logs(seq, stopped).await)
    }

    /// Queue depth by kind and state.
    pub async fn queue_counts(&self, now: i64) -> Result<QueueCounts, StoreError> {
        on_backend!(self, s => s.queue_counts(now).await)
    }

    /// Events, newest first.
    pub async fn list_events(&self, f: EventFilter) -> Result<Vec<EventSummary>, StoreError> {
        on_backend!(self, s => s.list_events(f).await)
    }

    /// Everything about the event with this id.
    pub async fn find_event(&self, id: String) -> Result<Option<EventDetail>, StoreError> {
        on_backend!(self, s => s.find_event(id).await)
    }

    /// Queues the deliveries of event `seq` to `hooks` again, due at once,
    /// with a fresh attempt count. A delivery running at this moment is left
    /// alone. If the event's fetch failed and `enrich` is on, the fetch runs
    /// again first.
    pub async fn replay(
        &self,
        seq: i64,
        hooks: Vec<String>,
        enrich: bool,
        now: i64,
    ) -> Result<ReplayReport, StoreError> {
        on_backend!(self, s => s.replay(seq, hooks, enrich, now).await)
    }

    /// Deletes events received before `cutoff` (unix ms) whose work is
    /// finished, with their jobs, attempts and logs, and quarantined bodies
    /// as old. Never deletes an event with an unfinished job. One daemon
    /// prunes at a time: with `wait` false a daemon that finds another at it
    /// skips (the timer), with `wait` true it waits (the `prune` command).
    pub async fn prune(&self, cutoff: i64, wait: bool) -> Result<Pruned, StoreError> {
        match &*self.backend {
            Backend::Sqlite(s) => s.prune(cutoff).await,
            Backend::Postgres(s) => s.prune(cutoff, wait).await,
        }
    }

    /// What [`Store::prune`] would delete at `cutoff`, counted without
    /// deleting anything (`prune --dry-run`).
    pub async fn count_prunable(&self, cutoff: i64) -> Result<Pruned, StoreError> {
        on_backend!(self, s => s.count_prunable(cutoff).await)
    }

    /// Queues again, in one transaction, every delivery in state `failed`
    /// that `f` selects (`replay --status failed`): due at once, with a
    /// fresh attempt count and its replay counted. Where the event's fetch
    /// failed and `enrich` is on, the run is fetched again first. Running
    /// deliveries are not failed, so they are left alone.
    pub async fn replay_failed(
        &self,
        f: FailedDeliveries,
        enrich: bool,
        now: i64,
    ) -> Result<BulkReplayReport, StoreError> {
        on_backend!(self, s => s.replay_failed(f, enrich, now).await)
    }

    /// What [`Store::replay_failed`] would queue, counted without changing
    /// anything (`--dry-run`).
    pub async fn count_failed(
        &self,
        f: FailedDeliveries,
        enrich: bool,
    ) -> Result<BulkReplayReport, StoreError> {
        on_backend!(self, s => s.count_failed(f, enrich).await)
    }

    /// Every hook the database knows (by its deliveries or its pause), in
    /// name order: paused or not, deliveries waiting and running now, and
    /// those that finished at or after `since` (unix ms) by how they ended.
    pub async fn hook_activity(&self, since: i64) -> Result<Vec<HookActivity>, StoreError> {
        on_backend!(self, s => s.hook_activity(since).await)
    }

    /// Pauses (`true`) or resumes a hook: no daemon on the database starts
    /// its deliveries while it is paused; running ones finish. Returns
    /// whether that changed anything.
    pub async fn set_hook_paused(&self, name: String, paused: bool) -> Result<bool, StoreError> {
        on_backend!(self, s => s.set_hook_paused(name, paused).await)
    }

    /// Quarantined bodies (SPEC §4 step 6), newest first, at most `limit`.
    pub async fn list_quarantine(&self, limit: u32) -> Result<Vec<QuarantineSummary>, StoreError> {
        on_backend!(self, s => s.list_quarantine(limit).await)
    }

    /// The quarantined body with this id, with its bytes.
    pub async fn find_quarantined(&self, id: i64) -> Result<Option<QuarantinedDetail>, StoreError> {
        on_backend!(self, s => s.find_quarantined(id).await)
    }
}

fn sqlite_options(settings: &StorageSettings) -> StoreOptions {
    StoreOptions {
        path: settings.path.clone(),
        synchronous: settings.synchronous,
        busy_timeout: settings.busy_timeout,
    }
}

fn postgres_url(settings: &StorageSettings) -> Result<&str, StoreError> {
    settings
        .url
        .as_ref()
        .map(|u| u.expose())
        .ok_or_else(|| StoreError::Database("storage.url is not set".into()))
}
