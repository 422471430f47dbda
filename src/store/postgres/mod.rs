//! The PostgreSQL backend: several daemons share one database.
//!
//! - Ingest: concurrent inserts are gathered into one transaction of
//!   multi-row statements (up to [`MAX_BATCH_EVENTS`] events), committed on
//!   the server before any of them is answered; a few batches run at once
//!   on separate connections, so one waiting commit does not hold the rest.
//! - Claims: `FOR UPDATE SKIP LOCKED` on the job row; deliveries of a hook
//!   are claimed under a lock on that hook's row, which makes `concurrency`
//!   a limit across daemons and keeps arrival order for `concurrency = 1`.
//! - Leases: a claimed job belongs to its daemon until `lease_until`, which
//!   the daemon renews while it runs; another daemon reclaims a job whose
//!   lease ran out (its daemon died) and records the interrupted attempt.
//! - Wake-ups: `NOTIFY steerhook_work` when work is queued; every daemon
//!   listens on a connection of its own, polling remains the fallback.
//! - The API's `Retry-After` is a row in `pauses` that every claim reads.

mod inspect;
mod queries;
mod schema;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot, Mutex, Notify};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use super::logs::{ChunkedArray, LOG_CHUNKS_AHEAD};
use super::{
    AttemptRecord, BulkReplayReport, ClaimFilter, ClaimedJob, EventDetail, EventFilter,
    EventSummary, FailedDeliveries, HookActivity, HookConfig, InsertOutcome, JobNext, LogChunks,
    LogPage, NewEvent, NewestLogs, Pruned, QuarantineSummary, QuarantinedBody, QuarantinedDetail,
    QueueCounts, ReplayReport, Routing, StoreError, StoredEvent, SummaryBounds,
};
use crate::domain::EnrichmentError;

/// Most events one ingest transaction takes.
const MAX_BATCH_EVENTS: usize = 128;
/// Ingest transactions in flight at once.
const BATCHERS: usize = 2;
/// Inserts waiting for a batch before senders have to wait.
const INSERT_QUEUE_LEN: usize = 8_192;
/// How long a request waits for a pooled connection before giving up (503).
const POOL_WAIT: Duration = Duration::from_secs(5);
/// How long opening one connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Log rows fetched from the server at a time while streaming a log.
const LOG_ROWS_PER_FETCH: i32 = 64;
/// The channel work is announced on.
const WORK_CHANNEL: &str = "steerhook_work";
/// Advisory lock key (arbitrary, fixed) held while the schema is migrated.
pub const LOCK_MIGRATE: i64 = 0x5374_6565_7268_6f6f;
/// Advisory lock key held while a daemon prunes (`pg_locks` shows it).
pub const LOCK_PRUNE: i64 = 0x5374_6565_7268_7072;

/// Turns a driver error, with its causes, into ours.
pub(super) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    StoreError::Database(error_text(&e))
}

fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_error(e),
        other => StoreError::Database(format!("no database connection: {other}")),
    }
}

/// Checks a `storage.url` (libpq URL or key=value string) without connecting.
pub fn check_url(url: &str) -> Result<(), String> {
    let config = tokio_postgres::Config::from_str(url).map_err(|_| {
        "is not a PostgreSQL connection string such as postgres://steerhook@db.internal:5432/steerhook (the value is not shown: it may hold a password)".to_owned()
    })?;
    // Connections are made without TLS: a URL that demands it would only
    // fail at the first connection, so say it now.
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        return Err("asks for sslmode=require, but steerhook connects to PostgreSQL without TLS: use a private network or an encrypted tunnel (docs/DEPLOY.md) and sslmode=disable or prefer".to_owned());
    }
    Ok(())
}

/// The URL with its password replaced, for messages and `check-config`.
pub fn redacted_url(url: &str) -> String {
    // A marker the URL does not percent-encode, replaced after formatting.
    const MARK: &str = "steerhookredactedpassword";
    if let Ok(mut parsed) = reqwest::Url::parse(url) {
        if parsed.password().is_some() {
            let _ = parsed.set_password(Some(MARK));
        }
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    MARK.to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        if !pairs.is_empty() {
            parsed.query_pairs_mut().clear().extend_pairs(pairs);
        }
        return parsed.to_string().replace(MARK, "[redacted]");
    }
    // key=value form: hide the password's value.
    url.split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some(("password", _)) => "password=[redacted]".to_owned(),
            _ => kv.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One insert waiting for its batch.
struct PendingInsert {
    event: NewEvent,
    reply: oneshot::Sender<Result<InsertOutcome, StoreError>>,
}

/// The PostgreSQL database: a connection pool and the ingest batcher.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    config: tokio_postgres::Config,
    inserts: mpsc::Sender<PendingInsert>,
    /// Identifies this daemon's claims, so that it renews only its own.
    daemon: String,
    /// Where the database is, password hidden, for messages.
    location: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.inner.location)
            .finish_non_exhaustive()
    }
}

/// How a PostgreSQL store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Open {
    /// For `serve`: create or migrate the schema, start the batcher.
    Serve,
    /// For commands that read: the schema must exist and be known.
    Existing,
}

impl PgStore {
    /// Connects, checks or migrates the schema, and starts the batcher.
    pub(super) async fn open(
        url: &str,
        pool_size: usize,
        routing: Routing,
        how: Open,
    ) -> Result<Self, StoreError> {
        let location = redacted_url(url);
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|_| StoreError::Database("storage.url is not a connection string".into()))?;
        config.connect_timeout(CONNECT_TIMEOUT);
        if config.get_application_name().is_none() {
            config.application_name("steerhook");
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Database(format!("cannot make the connection pool: {e}")))?;
        let mut client = pool.get().await.map_err(|e| {
            StoreError::Database(format!("cannot connect to {location}: {}", pool_error(e)))
        })?;
        match how {
            Open::Serve => schema::migrate(&mut client).await?,
            Open::Existing => match schema::version(&client).await? {
                None => {
                    return Err(StoreError::NoDatabase(format!(
                        "{location} has no steerhook schema; has `steerhook serve` run with this configuration?"
                    )))
                }
                Some(v) if v > schema::known_version() => {
                    return Err(StoreError::SchemaTooNew {
                        found: v,
                        known: schema::known_version(),
                    })
                }
                Some(_) => {}
            },
        }
        drop(client);
        let (tx, rx) = mpsc::channel(INSERT_QUEUE_LEN);
        let store = Self {
            inner: Arc::new(Inner {
                pool,
                config,
                inserts: tx,
                daemon: format!(
                    "{}:{}",
                    std::env::var("HOSTNAME")
                        .ok()
                        .filter(|h| !h.is_empty())
                        .unwrap_or_else(|| "steerhook".into()),
                    uuid::Uuid::new_v4().simple()
                ),
                location,
            }),
        };
        // Two batches at once: one commits while the next gathers the
        // inserts that arrive meanwhile; more would only make the batches
        // smaller (more commits for the server) and take connections the
        // worker needs (figures in docs/PERFORMANCE.md).
        let batchers = (pool_size / 2).clamp(1, BATCHERS);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..batchers {
            tokio::spawn(run_batcher(
                store.inner.pool.clone(),
                rx.clone(),
                Arc::new(routing.clone()),
            ));
        }
        Ok(store)
    }

    /// Where the database is, password hidden.
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.inner.pool.get().await.map_err(pool_error)
    }

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

    /// Whether the server answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.client()
            .await?
            .query_one("SELECT 1", &[])
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    /// Whether a write goes through.
    pub async fn ping_writer(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute("SELECT pg_current_xact_id()", &[])
            .await
            .map_err(pg_error)?;
        tx.rollback().await.map_err(pg_error)
    }

    /// What `doctor` proves: the server answers, the schema is known, and a
    /// transaction that writes can begin.
    pub async fn check(&self) -> Result<String, StoreError> {
        let mut client = self.client().await?;
        let version = schema::version(&client).await?.unwrap_or(0);
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute(
            "CREATE TEMP TABLE steerhook_doctor (x INT) ON COMMIT DROP",
            &[],
        )
        .await
        .map_err(|e| StoreError::Database(format!("not writable: {}", error_text(&e))))?;
        tx.rollback().await.map_err(pg_error)?;
        let sync: String = client
            .query_one("SHOW synchronous_commit", &[])
            .await
            .map_err(pg_error)?
            .get(0);
        Ok(format!(
            "{} answers, schema version {version}, writable, synchronous_commit={sync}",
            self.inner.location
        ))
    }

    /// Wakes `wake` whenever any daemon announces work, until `stop`; on its
    /// own connection, reconnecting after a failure.
    pub fn watch_for_work(&self, wake: Arc<Notify>, stop: CancellationToken) {
        let config = self.inner.config.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    ended = listen(&config, &wake) => {
                        if let Err(e) = ended {
                            tracing::warn!(error = %e, "lost the database notification connection; reconnecting in a second (polling meanwhile)");
                        }
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                // Something may have been queued while nobody listened.
                wake.notify_one();
            }
        });
    }
}

/// LISTENs until the connection fails.
async fn listen(config: &tokio_postgres::Config, wake: &Notify) -> Result<(), String> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(|e| error_text(&e))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match futures_util::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => {
                    let _ = tx.send(());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return error_text(&e),
                None => return "the server closed the connection".to_owned(),
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {WORK_CHANNEL}"))
        .await
        .map_err(|e| error_text(&e))?;
    while rx.recv().await.is_some() {
        wake.notify_one();
    }
    Err(driver
        .await
        .unwrap_or_else(|e| format!("the notification task failed: {e}")))
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
            Ok(mut client) => queries::insert_batch(&mut client, &events, &routing).await,
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

/// The operations of the store interface not written in `queries` and
/// `inspect`, which take a connection.
impl PgStore {
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

    /// Claims a job (see the module documentation).
    pub async fn claim_due_job(&self, f: ClaimFilter) -> Result<Option<ClaimedJob>, StoreError> {
        let mut client = self.client().await?;
        queries::claim_due_job(&mut client, &f, &self.inner.daemon).await
    }

    /// The earliest time a job may be claimed: a pending job becomes due,
    /// or a running one's lease runs out (its daemon may have died, and an
    /// idle daemon should look then, not at its next poll).
    pub async fn next_due_at(&self) -> Result<Option<i64>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT least((SELECT min(due_at) FROM jobs WHERE state = 'pending'),
                              (SELECT min(lease_until) FROM jobs WHERE state = 'running'))",
                &[],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.get(0))
    }

    /// Records an attempt.
    pub async fn record_attempt(
        &self,
        job: ClaimedJob,
        rec: AttemptRecord,
        next: JobNext,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        queries::record_attempt(&mut client, &job, &rec, next, now, &self.inner.daemon).await
    }

    /// Renews the leases of the jobs this daemon runs.
    pub async fn extend_leases(&self, ids: Vec<i64>, until: i64) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        client
            .execute(
                "UPDATE jobs SET lease_until = $2
                 WHERE id = ANY($1) AND state = 'running' AND claimed_by = $3",
                &[&ids, &until, &self.inner.daemon],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    /// Makes every daemon wait before its next fetch until `until` (unix ms).
    pub async fn pause_fetches_until(&self, until: i64) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO pauses (name, until_ms) VALUES ('opensteer_api', $1)
                 ON CONFLICT (name) DO UPDATE SET until_ms = greatest(pauses.until_ms, excluded.until_ms)",
                &[&until],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    /// With several daemons, running jobs are not this process's to
    /// interrupt: their leases say when they are free. Only fetches waiting
    /// out an upstream fault are made due (a restart is how the operator
    /// says it is fixed), and the shared pause is lifted.
    pub async fn recover_interrupted(&self, now: i64) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute(
            "UPDATE jobs SET due_at = $1, updated_at = $1
             WHERE kind = 'fetch' AND state = 'pending' AND due_at > $1",
            &[&now],
        )
        .await
        .map_err(pg_error)?;
        tx.execute("DELETE FROM pauses WHERE name = 'opensteer_api'", &[])
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(0)
    }

    /// Records this daemon's hooks and returns how they differ from what
    /// other daemons on the database said theirs are.
    pub async fn register_hooks(
        &self,
        hooks: Vec<HookConfig>,
        identity: String,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut client = self.client().await?;
        queries::register_hooks(&mut client, &hooks, &identity, now).await
    }

    /// Loads one event row.
    pub async fn load_event(&self, seq: i64) -> Result<StoredEvent, StoreError> {
        let client = self.client().await?;
        queries::load_event(&client, seq).await
    }

    /// The event's logs as a JSON array (see [`super::Store::stream_logs_json`]).
    pub fn stream_logs_json(&self, seq: i64) -> LogChunks {
        use tracing::Instrument;
        let (tx, rx) = mpsc::channel(LOG_CHUNKS_AHEAD);
        let store = self.clone();
        tokio::spawn(
            async move {
                if let Err(e) = store.write_logs_json(seq, &tx).await {
                    let _ = tx.send(Err(e)).await;
                }
            }
            .instrument(tracing::Span::current()),
        );
        rx
    }

    /// Sends the chunks of [`PgStore::stream_logs_json`]: one read-only
    /// snapshot, rows fetched [`LOG_ROWS_PER_FETCH`] at a time through a
    /// portal (never the whole log in memory), in index order.
    async fn write_logs_json(
        &self,
        seq: i64,
        out: &mpsc::Sender<Result<Vec<u8>, StoreError>>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_error)?;
        let mut array = ChunkedArray::new();
        let by_time = queries::every_entry_has_a_timestamp(&tx, seq).await?;
        let pages = if by_time {
            vec![None]
        } else {
            (0..queries::stored_pages(&tx, seq).await?)
                .rev()
                .map(Some)
                .collect()
        };
        for page in pages {
            let portal = match page {
                None => {
                    tx.bind(
                        "SELECT entry FROM log_entries WHERE event_seq = $1 ORDER BY ts, page DESC, pos",
                        &[&seq],
                    )
                    .await
                }
                Some(page) => {
                    tx.bind(
                        "SELECT entry FROM log_entries WHERE event_seq = $1 AND page = $2 ORDER BY pos",
                        &[&seq, &page],
                    )
                    .await
                }
            }
            .map_err(pg_error)?;
            loop {
                let rows = tx
                    .query_portal(&portal, LOG_ROWS_PER_FETCH)
                    .await
                    .map_err(pg_error)?;
                if rows.is_empty() {
                    break;
                }
                for row in rows {
                    let entry: &str = row.get(0);
                    if let Some(chunk) = array.push(entry.as_bytes()) {
                        if out.send(Ok(chunk)).await.is_err() {
                            // Nobody reads any more.
                            return Ok(());
                        }
                    }
                }
            }
        }
        let _ = out.send(Ok(array.finish())).await;
        tx.commit().await.map_err(pg_error)
    }

    /// The newest log entries within `bounds`.
    pub async fn newest_logs(
        &self,
        seq: i64,
        bounds: SummaryBounds,
    ) -> Result<NewestLogs, StoreError> {
        let mut client = self.client().await?;
        queries::newest_logs(&mut client, seq, &bounds).await
    }

    /// Stores the run object, and why it is taken although it has not settled.
    pub async fn save_run(
        &self,
        seq: i64,
        run_json: String,
        unsettled: Option<EnrichmentError>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute(
            "UPDATE events SET run_json = $2 WHERE seq = $1",
            &[&seq, &run_json],
        )
        .await
        .map_err(pg_error)?;
        if let Some(why) = &unsettled {
            queries::mark_partial(&tx, seq, why).await?;
        }
        tx.commit().await.map_err(pg_error)
    }

    /// Counts a fetch of a run that had not settled.
    pub async fn count_settle_poll(&self, seq: i64) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE events SET settle_polls = settle_polls + 1 WHERE seq = $1",
                &[&seq],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    /// Stores one page of logs.
    pub async fn save_log_page(&self, seq: i64, page: LogPage) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        queries::save_log_page(&mut client, seq, &page).await
    }

    /// Whether paging already followed `cursor`.
    pub async fn cursor_seen(&self, seq: i64, cursor: String) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT 1 FROM log_cursors WHERE event_seq = $1 AND cursor = $2",
                &[&seq, &cursor],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.is_some())
    }

    /// Marks paging finished, and why it stopped early.
    pub async fn finish_logs(
        &self,
        seq: i64,
        stopped: Option<EnrichmentError>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute(
            "UPDATE events SET logs_complete = true, logs_cursor = NULL WHERE seq = $1",
            &[&seq],
        )
        .await
        .map_err(pg_error)?;
        if let Some(why) = &stopped {
            queries::mark_partial(&tx, seq, why).await?;
        }
        tx.commit().await.map_err(pg_error)
    }

    /// Queue depth by kind and state.
    pub async fn queue_counts(&self, now: i64) -> Result<QueueCounts, StoreError> {
        let client = self.client().await?;
        inspect::queue_counts(&client, now).await
    }

    /// Events, newest first.
    pub async fn list_events(&self, f: EventFilter) -> Result<Vec<EventSummary>, StoreError> {
        let client = self.client().await?;
        inspect::list_events(&client, &f).await
    }

    /// One event with its jobs and attempts.
    pub async fn find_event(&self, id: String) -> Result<Option<EventDetail>, StoreError> {
        let client = self.client().await?;
        inspect::find_event(&client, &id).await
    }

    /// Queues deliveries again.
    pub async fn replay(
        &self,
        seq: i64,
        hooks: Vec<String>,
        enrich: bool,
        now: i64,
    ) -> Result<ReplayReport, StoreError> {
        let mut client = self.client().await?;
        inspect::replay(&mut client, seq, &hooks, enrich, now).await
    }

    /// Deletes finished events past `cutoff`, on one daemon at a time: a
    /// daemon that finds another pruning skips this round (`wait` false) or
    /// waits for it (`wait` true, the `prune` command).
    pub async fn prune(&self, cutoff: i64, wait: bool) -> Result<Pruned, StoreError> {
        let mut client = self.client().await?;
        inspect::prune(&mut client, cutoff, wait).await
    }

    /// What `prune` would delete at `cutoff`.
    pub async fn count_prunable(&self, cutoff: i64) -> Result<Pruned, StoreError> {
        let client = self.client().await?;
        inspect::count_prunable(&client, cutoff).await
    }

    /// Queues the failed deliveries `f` selects again, in one transaction.
    pub async fn replay_failed(
        &self,
        f: FailedDeliveries,
        enrich: bool,
        now: i64,
    ) -> Result<BulkReplayReport, StoreError> {
        let mut client = self.client().await?;
        inspect::replay_failed(&mut client, &f, enrich, now).await
    }

    /// What `replay_failed` would queue.
    pub async fn count_failed(
        &self,
        f: FailedDeliveries,
        enrich: bool,
    ) -> Result<BulkReplayReport, StoreError> {
        let client = self.client().await?;
        inspect::count_failed(&client, &f, enrich).await
    }

    /// Each hook's pause and deliveries.
    pub async fn hook_activity(&self, since: i64) -> Result<Vec<HookActivity>, StoreError> {
        let client = self.client().await?;
        inspect::hook_activity(&client, since).await
    }

    /// Pauses or resumes a hook for every daemon.
    pub async fn set_hook_paused(&self, name: String, paused: bool) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        inspect::set_hook_paused(&mut client, &name, paused).await
    }

    /// Quarantined bodies, newest first.
    pub async fn list_quarantine(&self, limit: u32) -> Result<Vec<QuarantineSummary>, StoreError> {
        let client = self.client().await?;
        inspect::list_quarantine(&client, limit).await
    }

    /// One quarantined body.
    pub async fn find_quarantined(&self, id: i64) -> Result<Option<QuarantinedDetail>, StoreError> {
        let client = self.client().await?;
        inspect::find_quarantined(&client, id).await
    }
}
