//! A database per test, of either backend, and the macro that runs one test
//! body against both.

use std::time::Duration;

use steerhook::config::{StorageBackend, StorageSettings, Synchronous};
use steerhook::secret::Secret;
use steerhook::store::{Routing, Store};

/// The server the PostgreSQL variants use, unless `STEERHOOK_TEST_DATABASE_URL` says otherwise.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Runs each test body twice: `<name>::sqlite` and `<name>::postgres`.
macro_rules! both_backends {
    ($(
        $(#[$doc:meta])*
        async fn $name:ident($db:ident) $body:block
    )*) => {$(
        $(#[$doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $db = $crate::db::TestDb::sqlite();
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some($db) = $crate::db::TestDb::postgres().await else {
                    return;
                };
                $body
            }
        }
    )*};
}
pub(crate) use both_backends;

/// A fresh, empty database, removed when dropped.
pub enum TestDb {
    /// A file in a temp dir.
    Sqlite(tempfile::TempDir),
    /// A database of its own on the test server.
    Postgres {
        /// Its URL.
        url: String,
        /// The server's maintenance database, to drop it from.
        admin_url: String,
        /// Its name.
        name: String,
    },
}

impl TestDb {
    /// A SQLite file in a new temp dir.
    pub fn sqlite() -> TestDb {
        TestDb::Sqlite(tempfile::tempdir().unwrap())
    }

    /// A new database on the test server; `None` (with the reason printed)
    /// only when `STEERHOOK_TEST_SKIP_POSTGRES=1`. Without a server and
    /// without that, the test fails saying how to get one.
    pub async fn postgres() -> Option<TestDb> {
        if std::env::var("STEERHOOK_TEST_SKIP_POSTGRES").as_deref() == Ok("1") {
            eprintln!("SKIP: STEERHOOK_TEST_SKIP_POSTGRES=1, the PostgreSQL variant does not run");
            return None;
        }
        let admin_url = std::env::var("STEERHOOK_TEST_DATABASE_URL")
            .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        let name = format!("steerhook_test_{}", uuid::Uuid::new_v4().simple());
        let (client, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no PostgreSQL server at {admin_url} ({e}). The store's tests run against a real one: \
                     install and start one (Debian: apt install postgresql; pg_ctlcluster 15 main start; \
                     trust local connections), point STEERHOOK_TEST_DATABASE_URL at a server where this \
                     user may CREATE DATABASE, or set STEERHOOK_TEST_SKIP_POSTGRES=1 to skip these variants"
                )
            });
        let driver = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create a test database on {admin_url}: {e}"));
        drop(client);
        let _ = driver.await;
        let mut url = reqwest::Url::parse(&admin_url).expect("STEERHOOK_TEST_DATABASE_URL is a URL");
        url.set_path(&format!("/{name}"));
        Some(TestDb::Postgres {
            url: url.to_string(),
            admin_url,
            name,
        })
    }

    /// `[storage]` for this database.
    pub fn settings(&self) -> StorageSettings {
        let (backend, path, url) = match self {
            TestDb::Sqlite(dir) => (StorageBackend::Sqlite, dir.path().join("t.db"), None),
            TestDb::Postgres { url, .. } => (
                StorageBackend::Postgres,
                Default::default(),
                Some(Secret::new(url.clone())),
            ),
        };
        StorageSettings {
            backend,
            path,
            url,
            pool_size: 8,
            payload_dir: None,
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            retention: Duration::from_secs(30 * 86_400),
            prune_interval: Duration::from_secs(3_600),
        }
    }

    /// The store `serve` would open, making new events' jobs as `routing` says.
    pub async fn open(&self, routing: Routing) -> Store {
        Store::open(&self.settings(), routing).await.unwrap()
    }

    /// Runs `sql` (a statement without parameters) directly on the database.
    pub async fn execute(&self, sql: &str) {
        match self {
            TestDb::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
                conn.execute_batch(sql).unwrap();
            }
            TestDb::Postgres { url, .. } => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                client.batch_execute(sql).await.unwrap();
            }
        }
    }

    /// The first column of the first row of `sql`, as an integer.
    pub async fn query_i64(&self, sql: &str) -> i64 {
        match self {
            TestDb::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
                conn.query_row(sql, [], |r| r.get(0)).unwrap()
            }
            TestDb::Postgres { url, .. } => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                client.query_one(sql, &[]).await.unwrap().get(0)
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let TestDb::Postgres {
            admin_url, name, ..
        } = self
        else {
            return;
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        // Drop runs inside the test's runtime: drop the database from a
        // runtime of its own, on a thread of its own, and wait for it.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}
