//! `spawn_app()` and friends: the real application on port 0, a fresh SQLite
//! file in a temp dir, a manual clock, and an HTTP client. Nothing sleeps to
//! synchronise; waits are polls with a deadline.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use serde_json::Value;
use steerhook::clock::{Clock, ManualClock};
use steerhook::config::Settings;
use steerhook::signature::{sign, SIGNATURE_HEADER};
use steerhook::startup::Application;
use tempfile::TempDir;

use crate::support::app::Running;
pub use crate::support::poll::{poll_until, wait_for, wait_for_async, POLL_INTERVAL};

/// The secret every default test app accepts.
pub const SECRET: &str = "whsec_ingest_tests_0123456789";
/// Where the default manual clock stands: 2026-01-01T00:00:00Z.
pub const NOW_SECS: u64 = 1_767_225_600;
/// How long any poll waits before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Between two polls.
/// The webhook path of the default configuration.
pub const WEBHOOK_PATH: &str = "/webhooks/opensteer";

/// How to configure a test app. The TOML fragments are appended to their
/// section, so a test can set any key the configuration knows.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// `webhook.secrets`.
    pub secrets: Vec<String>,
    /// `webhook.tolerance_secs`.
    pub tolerance_secs: u64,
    /// Extra lines for `[server]`.
    pub server: String,
    /// Extra lines for `[storage]`.
    pub storage: String,
    /// Extra sections after everything else (`[[hook]]`, `[opensteer]`, ...).
    pub tail: String,
    /// The app's clock.
    pub clock: ManualClock,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            secrets: vec![SECRET.to_owned()],
            tolerance_secs: 300,
            server: String::new(),
            storage: String::new(),
            tail: String::new(),
            clock: ManualClock::at_unix_secs(NOW_SECS),
        }
    }
}

/// A running application and everything a test needs to talk to it.
pub struct TestApp {
    /// The bound address.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:port`.
    pub base_url: String,
    /// `base_url` + the webhook path.
    pub webhook_url: String,
    /// The SQLite file.
    pub db_path: PathBuf,
    /// The first configured secret.
    pub secret: String,
    /// The app's clock; move it to test the tolerance.
    pub clock: ManualClock,
    /// The app's task; dropping the `TestApp` shuts it down.
    running: Running,
    /// An HTTP client with a timeout, so a hang fails the test.
    pub client: reqwest::Client,
    /// Holds the database (and any other file) until the app is dropped;
    /// never read, only kept alive.
    #[allow(dead_code)]
    pub tempdir: TempDir,
}

/// The default app: one secret, tolerance 300 s, clock at [`NOW_SECS`].
pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

/// The TOML the test app is built from.
pub fn config_toml(opts: &AppOptions, db_path: &Path) -> String {
    let secrets: Vec<String> = opts.secrets.iter().map(|s| toml_string(s)).collect();
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}\n\
         [webhook]\nsecrets = [{}]\ntolerance_secs = {}\n\
         [storage]\npath = {}\n{}\n\
         {}\n",
        opts.server,
        secrets.join(", "),
        opts.tolerance_secs,
        toml_string(&db_path.display().to_string()),
        opts.storage,
        opts.tail,
    )
}

/// A TOML basic string.
pub fn toml_string(s: &str) -> String {
    // TOML basic strings escape like JSON strings.
    serde_json::to_string(s).expect("a string serialises")
}

/// Builds the app through the one startup seam and runs it on a task.
pub async fn spawn_app_with(opts: AppOptions) -> TestApp {
    let tempdir = tempfile::tempdir().expect("temp dir");
    let db_path = tempdir.path().join("steerhook.db");
    let text = config_toml(&opts, &db_path);
    let settings =
        Settings::from_toml(&text).unwrap_or_else(|e| panic!("test config refused: {e}\n{text}"));
    let clock = opts.clock.clone();
    let app = Application::build_with(settings, Arc::new(clock.clone()))
        .await
        .expect("the application builds");
    let addr = app.addr();
    let running = Running::start(app);
    let base_url = format!("http://{addr}");
    TestApp {
        addr,
        webhook_url: format!("{base_url}{WEBHOOK_PATH}"),
        base_url,
        db_path,
        secret: opts.secrets.first().cloned().unwrap_or_default(),
        clock,
        running,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client"),
        tempdir,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.running.cancel();
    }
}

impl TestApp {
    /// The manual clock's time in unix seconds.
    pub fn now_secs(&self) -> u64 {
        self.clock
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    }

    /// POSTs `body` to the webhook path with the signature header `header`
    /// (absent when None).
    pub async fn post_webhook(&self, body: &[u8], header: Option<&str>) -> reqwest::Response {
        self.post_webhook_bytes(body, header.map(str::as_bytes))
            .await
    }

    /// [`TestApp::post_webhook`] with the header's raw bytes, which need
    /// not be text (HTTP allows octets from 0x80 up in a header value).
    pub async fn post_webhook_bytes(
        &self,
        body: &[u8],
        header: Option<&[u8]>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(&self.webhook_url)
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(h) = header {
            let value = reqwest::header::HeaderValue::from_bytes(h)
                .unwrap_or_else(|e| panic!("{h:?} cannot be sent as a header value: {e}"));
            req = req.header(SIGNATURE_HEADER, value);
        }
        req.send().await.expect("the webhook request is answered")
    }

    /// The signature header for `body` at the app's current time.
    pub fn signature(&self, body: &[u8]) -> String {
        sign(&self.secret, self.now_secs(), body)
    }

    /// POSTs `body` signed with the app's secret at the app's current time.
    pub async fn post_signed(&self, body: &[u8]) -> reqwest::Response {
        let header = self.signature(body);
        self.post_webhook(body, Some(&header)).await
    }

    /// `GET {base_url}{path}`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base_url))
            .send()
            .await
            .expect("the request is answered")
    }

    /// A second connection to the database file, as another process would open it.
    pub fn db(&self) -> Connection {
        let conn = Connection::open(&self.db_path).expect("open the test database");
        conn.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        conn
    }

    /// Rows in `events`.
    pub fn event_count(&self) -> i64 {
        count_rows(&self.db(), "events")
    }

    /// Rows in `quarantine`.
    pub fn quarantine_count(&self) -> i64 {
        count_rows(&self.db(), "quarantine")
    }

    /// Stops the app and waits for `run_until_stopped` to return.
    pub async fn stop(mut self) {
        self.running.stop(DEADLINE).await;
    }
}

/// `SELECT count(*) FROM table`.
pub fn count_rows(conn: &Connection, table: &str) -> i64 {
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("count {table}: {e}"))
}

/// A `run.*` event body the app accepts.
pub fn run_event(event_type: &str, event_id: &str, run_id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": event_id,
        "type": event_type,
        "createdAt": "2026-01-01T00:00:00.000Z",
        "data": {"run": {"id": run_id, "status": "succeeded", "scraperId": "scr_1"}}
    }))
    .expect("json")
}

/// Reads the JSON body; panics with the text when it is not JSON.
pub async fn json_body(resp: reqwest::Response) -> Value {
    let text = resp.text().await.expect("a body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

/// Asserts the SPEC §4 error shape `{"error": "<message>", "code": CODE}`
/// with `status`, and returns the body.
pub async fn assert_error(resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status, "status for {code}");
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type:?} for {code}"
    );
    let body = json_body(resp).await;
    let obj = body.as_object().expect("the error body is an object");
    assert_eq!(obj.len(), 2, "exactly error and code: {body}");
    assert_eq!(obj["code"], code, "{body}");
    let message = obj["error"].as_str().expect("error is a string");
    assert!(!message.is_empty(), "an empty error message: {body}");
    body
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind port 0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// The real `steerhook` binary.
pub fn steerhook_bin() -> &'static str {
    env!("CARGO_BIN_EXE_steerhook")
}

/// `std::process::Command` for the binary, with no inherited `STEERHOOK*`
/// or `CREDENTIALS_DIRECTORY` variable that could change its behaviour.
pub fn steerhook_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(steerhook_bin());
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str() {
            if k.starts_with("STEERHOOK") || k == "CREDENTIALS_DIRECTORY" {
                cmd.env_remove(k);
            }
        }
    }
    cmd
}

/// Current unix seconds from the system clock.
pub fn system_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A `steerhook serve` child process, killed if the test fails before it exits.
pub struct Daemon(pub std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Writes a config for a `serve` child on `port` in `dir` (the default secret,
/// the database beside it, `extra` appended); returns (config, database) paths.
pub fn write_serve_config(dir: &Path, port: u16, extra: &str) -> (PathBuf, PathBuf) {
    let db_path = dir.join("steerhook.db");
    let config_path = dir.join("steerhook.toml");
    std::fs::write(
        &config_path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[webhook]\nsecrets = [{}]\n[storage]\npath = {}\n{extra}",
            toml_string(SECRET),
            toml_string(&db_path.display().to_string())
        ),
    )
    .expect("write the config");
    (config_path, db_path)
}
