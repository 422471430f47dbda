//! The PostgreSQL backend: several daemons share one database.
//!
//! - Ingest ([`ingest`]): concurrent inserts are gathered into one
//!   transaction of multi-row statements (up to
//!   [`ingest::MAX_BATCH_EVENTS`] events), committed on the server before
//!   any of them is answered; a few batches run at once on separate
//!   connections, so one waiting commit does not hold the rest.
//! - Claims ([`worker`]): `FOR UPDATE SKIP LOCKED` on the job row;
//!   deliveries of a hook are claimed under a lock on that hook's row, which
//!   makes `concurrency` a limit across daemons and keeps arrival order for
//!   `concurrency = 1`.
//! - Leases ([`worker`]): a claimed job belongs to its daemon until
//!   `lease_until`, which the daemon renews while it runs; another daemon
//!   reclaims a job whose lease ran out (its daemon died) and records the
//!   interrupted attempt.
//! - Wake-ups ([`notify`]): `NOTIFY steerhook_work` when work is queued;
//!   every daemon listens on a connection of its own, polling remains the
//!   fallback.
//! - The API's `Retry-After` is a row in `pauses` that every claim reads.
//!
//! The rest: what a fetch keeps ([`enrichment`], [`logs`]), the CLI's read
//! views ([`inspect`]), the operator's commands ([`operator`]) and the
//! schema ([`schema`]). Each file adds the [`PgStore`] methods of its part;
//! this one opens the store.

mod enrichment;
mod ingest;
mod inspect;
mod logs;
mod notify;
mod operator;
mod schema;
mod worker;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::mpsc;
use tokio_postgres::NoTls;

use super::{Routing, StoreError};

/// How long a request waits for a pooled connection before giving up (503).
const POOL_WAIT: Duration = Duration::from_secs(5);
/// How long opening one connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
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

/// The PostgreSQL database: a connection pool and the ingest batcher.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    config: tokio_postgres::Config,
    inserts: mpsc::Sender<ingest::PendingInsert>,
    /// Identifies this daemon's claims, so that it renews only its own.
    daemon: String,
    /// Where the database is, password hidden, for messages.
    location: String,
    /// The runtime that opened the store, where every connection is made.
    home: tokio::runtime::Handle,
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
        let inserts = ingest::start_batchers(&pool, pool_size, &routing);
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                config,
                inserts,
                daemon: format!(
                    "{}:{}",
                    std::env::var("HOSTNAME")
                        .ok()
                        .filter(|h| !h.is_empty())
                        .unwrap_or_else(|| "steerhook".into()),
                    uuid::Uuid::new_v4().simple()
                ),
                location,
                home: tokio::runtime::Handle::current(),
            }),
        })
    }

    /// Where the database is, password hidden.
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// A pooled connection. A new connection's I/O runs on the runtime that
    /// makes it, and the worker's runtime runs below the daemon's CPU
    /// priority (`dispatch::runtime`); ingest shares these connections, so
    /// they are all made on the runtime that opened the store.
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        let pool = self.inner.pool.clone();
        self.inner
            .home
            .spawn(async move { pool.get().await })
            .await
            .map_err(|e| StoreError::Database(format!("a connection could not be taken: {e}")))?
            .map_err(pool_error)
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
}
