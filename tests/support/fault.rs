//! A database that refuses writes, then accepts them again, on either
//! backend, from one test body:
//!
//! - SQLite: triggers that fail every insert into `events`, `quarantine`
//!   and `attempts` the way a full disk would (the file itself cannot be taken away from a
//!   process that has it open, and a read-only file does not stop root);
//! - PostgreSQL: the server cut away behind a [`TcpProxy`] the app connects
//!   through (what an operator sees when the database host goes away).
//!
//! ```ignore
//! let sandbox = Sandbox::with_backend(backend);
//! let (builder, fault) = StoreFault::around(TestApp::builder().sandbox(&sandbox)).await;
//! let app = builder.spawn().await;
//! fault.start(app.db()).await;   // writes refused
//! fault.clear(app.db()).await;   // accepted again
//! ```

use std::sync::Arc;

use super::app::TestAppBuilder;
use super::config::toml_str;
use super::db::{Backend, TestDb};
use super::proxy::TcpProxy;

/// See the module documentation.
pub struct StoreFault {
    /// The proxy between the app and the PostgreSQL server; none on SQLite.
    proxy: Option<Arc<TcpProxy>>,
}

/// The sabotage of the SQLite variant.
const SQLITE_REFUSE: &str = "
    CREATE TRIGGER sabotage_events BEFORE INSERT ON events
        BEGIN SELECT RAISE(FAIL, 'disk full (sabotage)'); END;
    CREATE TRIGGER sabotage_quarantine BEFORE INSERT ON quarantine
        BEGIN SELECT RAISE(FAIL, 'disk full (sabotage)'); END;
    CREATE TRIGGER sabotage_attempts BEFORE INSERT ON attempts
        BEGIN SELECT RAISE(FAIL, 'disk full (sabotage)'); END;";
const SQLITE_ACCEPT: &str =
    "DROP TRIGGER sabotage_events; DROP TRIGGER sabotage_quarantine; DROP TRIGGER sabotage_attempts;";

impl StoreFault {
    /// `builder` (whose sandbox must be set) ready for a fault: on
    /// PostgreSQL its `storage.url` goes through a proxy.
    pub async fn around(builder: TestAppBuilder, db: &TestDb) -> (TestAppBuilder, StoreFault) {
        match db.backend() {
            Backend::Sqlite => (builder, StoreFault { proxy: None }),
            Backend::Postgres => {
                let mut url = reqwest::Url::parse(db.url()).expect("a postgres:// URL");
                let host = url.host_str().expect("a host").to_owned();
                let server = tokio::net::lookup_host((host.as_str(), url.port().unwrap_or(5432)))
                    .await
                    .expect("the server's address resolves")
                    .next()
                    .expect("an address");
                let proxy = TcpProxy::start(server).await;
                url.set_host(Some("127.0.0.1")).expect("a host");
                url.set_port(Some(proxy.addr().port())).expect("a port");
                let builder = builder.storage(&format!("url = {}", toml_str(url.as_str())));
                (builder, StoreFault { proxy: Some(proxy) })
            }
        }
    }

    /// From now on the database refuses every write.
    pub async fn start(&self, db: &TestDb) {
        match &self.proxy {
            None => db.execute_batch(SQLITE_REFUSE),
            Some(proxy) => proxy.cut().await,
        }
    }

    /// The database accepts writes again.
    pub async fn clear(&self, db: &TestDb) {
        match &self.proxy {
            None => db.execute_batch(SQLITE_ACCEPT),
            Some(proxy) => proxy.restore().await,
        }
    }
}
