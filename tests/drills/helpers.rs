//! The app on port 0 with a config given as TOML, signed posts, the database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use steerhook::clock::SystemClock;
use steerhook::config::Settings;
use steerhook::signature::{sign, SIGNATURE_HEADER};
use steerhook::startup::Application;
use tempfile::TempDir;

use crate::support::app::Running;
pub use crate::support::poll::{wait_for, wait_for_async};

pub const SECRET: &str = "whsec_drills";
pub const WEBHOOK_PATH: &str = "/webhooks/opensteer";

/// A temp dir with the database, the config and the hooks' output.
pub struct Sandbox {
    pub dir: TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn db_path(&self) -> PathBuf {
        self.path("steerhook.db")
    }

    /// A configuration: `[server]` with `listen` and the `server` lines,
    /// the secret, the database, then `rest` (more sections).
    pub fn config(&self, listen: &str, server: &str, rest: &str) -> String {
        format!(
            "[server]\nlisten = \"{listen}\"\n{server}\n[webhook]\nsecrets = [\"{SECRET}\"]\n\
             [storage]\npath = {}\n\n{rest}\n",
            toml_str(&self.db_path().display().to_string())
        )
    }

    /// A second connection to the file, as another process would open it.
    pub fn db(&self) -> Connection {
        let c = Connection::open(self.db_path()).expect("open the database");
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        c
    }

    /// Lines of a file the hooks append to (empty when it does not exist).
    pub fn lines(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.path(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// `SELECT <one integer>`.
pub fn count(db: &Connection, sql: &str) -> i64 {
    db.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The app, run in this process through the startup seam.
pub struct TestApp {
    running: Running,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
}

impl TestApp {
    pub async fn spawn(config: &str) -> Self {
        let settings = Settings::from_toml(config)
            .unwrap_or_else(|e| panic!("test config refused: {e}\n{config}"));
        let app = Application::build_with(settings, Arc::new(SystemClock))
            .await
            .expect("the app builds");
        Self {
            addr: app.addr(),
            client: http_client(),
            running: Running::start(app),
        }
    }

    pub fn webhook_url(&self) -> String {
        format!("http://{}{WEBHOOK_PATH}", self.addr)
    }

    /// Stops it the way SIGTERM does.
    pub async fn stop(mut self) {
        self.running.stop(Duration::from_secs(30)).await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.running.cancel();
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// A `run.succeeded` (or `run.failed`) body with event id `evt_<run_id>`.
pub fn run_body(event_type: &str, run_id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": format!("evt_{run_id}"),
        "type": event_type,
        "data": {"run": {"id": run_id, "status": if event_type == "run.failed" { "failed" } else { "succeeded" }}}
    }))
    .expect("json")
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Posts `body` signed now; returns (status, Retry-After, body text), or
/// `None` when the connection failed.
pub async fn post_signed(
    client: &reqwest::Client,
    url: &str,
    body: &[u8],
) -> Option<(u16, Option<String>, String)> {
    let resp = client
        .post(url)
        .header(SIGNATURE_HEADER, sign(SECRET, now_secs(), body))
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = resp.text().await.ok()?;
    Some((status, retry_after, text))
}

pub fn unfinished_jobs(db: &Connection) -> i64 {
    count(
        db,
        "SELECT count(*) FROM jobs WHERE state IN ('blocked', 'pending', 'running')",
    )
}

/// The real binary.
pub fn steerhook_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_steerhook"))
}
