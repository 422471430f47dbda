//! Spawning the app, posting signed webhooks, stepping the worker, reading
//! the database, and a fake Opensteer API that pages logs properly.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde_json::{json, Value};
use steerhook::clock::{Clock, ManualClock, SystemClock};
use steerhook::config::{LogFormat, Settings};
use steerhook::dispatch::{Dispatcher, Outcome};
use steerhook::startup::Application;
use tempfile::TempDir;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::app::Running;
pub use crate::support::poll::{wait_for, wait_for_async};

pub const SECRET: &str = "whsec_queue_tests";
pub const API_KEY: &str = "osk_test_key";
/// 2023-11-14T22:13:20Z: where every manual clock starts.
pub const T0_SECS: u64 = 1_700_000_000;
/// How long a polling test waits for the worker before failing.
pub const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- logs ----

/// Everything the product logged while this test binary ran: one global
/// subscriber (tokio tasks on other threads do not inherit a thread-local
/// default), installed by the first app any test spawns.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

#[derive(Clone)]
struct BufferWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufferWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BufferWriter {
    type Writer = BufferWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        steerhook::telemetry::init(
            LogFormat::Text,
            "debug",
            BufferWriter(log_buffer().clone()),
            false,
        )
    });
}

// -------------------------------------------------------------- config ----

/// What a test changes in the configuration; everything else is the default
/// test setup (one shell hook writing what it received into `out/`).
#[derive(Clone)]
pub struct Setup {
    /// `[opensteer] base_url`; `None` leaves the section out.
    pub api: Option<String>,
    /// Extra lines in `[opensteer]`.
    pub opensteer: String,
    /// Extra lines in `[queue]`.
    pub queue: String,
    /// The hook's `command`, as a TOML array; `None`: no hook at all.
    pub hook_command: Option<String>,
    /// Extra lines in the `[[hook]]`.
    pub hook: String,
    /// `opensteer.log_page_size`.
    pub log_page_size: u32,
    /// `opensteer.request_timeout_secs`.
    pub request_timeout_secs: u64,
    /// `server.listen`.
    pub listen: String,
}

/// Writes the document the hook received to `$OUT/<event id>.json`.
pub const SAVE_DOCUMENT: &str = r#"["/bin/sh", "-c", "cat > \"$OUT/$STEERHOOK_EVENT_ID.json\""]"#;
/// [`SAVE_DOCUMENT`], and `$STEERHOOK_ENRICHMENT` in `$OUT/<event id>.enrichment`.
pub const SAVE_WITH_ENRICHMENT: &str = r#"["/bin/sh", "-c", "cat > \"$OUT/$STEERHOOK_EVENT_ID.json\" && printf %s \"$STEERHOOK_ENRICHMENT\" > \"$OUT/$STEERHOOK_EVENT_ID.enrichment\""]"#;
/// Appends the event id to `$OUT/ids`, one line per delivery.
pub const APPEND_ID: &str = r#"["/bin/sh", "-c", "echo \"$STEERHOOK_EVENT_ID\" >> \"$OUT/ids\""]"#;

impl Setup {
    pub fn new(api: &MockServer) -> Self {
        Self::new_with_uri(Some(api.uri()))
    }

    /// A setup without `[opensteer]`: hooks get the webhook payload only.
    pub fn without_api() -> Self {
        Self::new_with_uri(None)
    }

    fn new_with_uri(api: Option<String>) -> Self {
        Self {
            api,
            opensteer: String::new(),
            queue: String::new(),
            hook_command: Some(SAVE_DOCUMENT.to_owned()),
            hook: String::new(),
            log_page_size: 200,
            request_timeout_secs: 1,
            listen: "127.0.0.1:0".to_owned(),
        }
    }

    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr.to_string();
        self
    }

    pub fn log_page_size(mut self, n: u32) -> Self {
        self.log_page_size = n;
        self
    }

    pub fn opensteer(mut self, lines: &str) -> Self {
        self.opensteer.push_str(lines);
        self.opensteer.push('\n');
        self
    }

    pub fn queue(mut self, lines: &str) -> Self {
        self.queue.push_str(lines);
        self.queue.push('\n');
        self
    }

    pub fn hook_command(mut self, command: &str) -> Self {
        self.hook_command = Some(command.to_owned());
        self
    }

    pub fn hook(mut self, lines: &str) -> Self {
        self.hook.push_str(lines);
        self.hook.push('\n');
        self
    }

    pub fn no_hook(mut self) -> Self {
        self.hook_command = None;
        self
    }

    /// The configuration file's text, storage in `dir`.
    pub fn toml(&self, dir: &Path) -> String {
        let db = dir.join("steerhook.db");
        let out = dir.join("out");
        let mut t = format!(
            r#"
[server]
listen = "{listen}"

[webhook]
secrets = ["{SECRET}"]

[storage]
path = {db:?}

[queue]
{queue}
"#,
            listen = self.listen,
            queue = with_defaults(
                &self.queue,
                &[("backoff_base_secs", "1"), ("backoff_max_secs", "1")]
            ),
        );
        if let Some(api) = &self.api {
            t.push_str(&format!(
                r#"
[opensteer]
base_url = "{api}"
api_key = "{API_KEY}"
log_page_size = {}
request_timeout_secs = {}
{}
"#,
                self.log_page_size,
                self.request_timeout_secs,
                with_defaults(&self.opensteer, &[("connect_timeout_secs", "1")]),
            ));
        }
        if let Some(command) = &self.hook_command {
            t.push_str(&format!(
                r#"
[[hook]]
name = "save"
kind = "shell"
events = ["run.succeeded", "run.failed"]
command = {command}
env = {{ OUT = {out:?} }}
timeout_secs = 60
kill_grace_secs = 1
{}
"#,
                self.hook
            ));
        }
        t
    }
}

/// `lines`, plus each default whose key `lines` does not set.
fn with_defaults(lines: &str, defaults: &[(&str, &str)]) -> String {
    let mut out = lines.to_owned();
    for (key, value) in defaults {
        let set = lines
            .lines()
            .any(|l| l.split('=').next().map(str::trim) == Some(key));
        if !set {
            out.push_str(&format!("{key} = {value}\n"));
        }
    }
    out
}

// ----------------------------------------------------------------- app ----

/// A temp dir holding the database and the hook's `out/` directory; shared
/// by the apps that one test starts one after the other.
pub struct Sandbox {
    pub dir: TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("out")).expect("out dir");
        Self { dir }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("steerhook.db")
    }

    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// The document the hook received for `event_id`.
    pub fn hook_document(&self, event_id: &str) -> Value {
        let p = self.out().join(format!("{event_id}.json"));
        let text = std::fs::read(&p)
            .unwrap_or_else(|e| panic!("the hook wrote no document for {event_id}: {e}"));
        serde_json::from_slice(&text)
            .unwrap_or_else(|e| panic!("the hook's document for {event_id} is not JSON: {e}"))
    }

    /// A file the hook wrote in `out/`, as text.
    pub fn out_text(&self, name: &str) -> String {
        std::fs::read_to_string(self.out().join(name))
            .unwrap_or_else(|e| panic!("the hook wrote no {name}: {e}"))
    }

    /// Lines the hook appended to `out/ids`.
    pub fn delivered_ids(&self) -> Vec<String> {
        std::fs::read_to_string(self.out().join("ids"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// A read-only connection on the real file, as an operator's `sqlite3` would open it.
    pub fn db(&self) -> Connection {
        let c = Connection::open_with_flags(self.db_path(), OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the database read-only");
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        c
    }
}

/// A running app: HTTP served, worker loop on or off. Dropping it leaves
/// the app running, as a kill -9 would (tests/queue/crash.rs); `stop` is
/// the SIGTERM.
pub struct TestApp {
    pub addr: SocketAddr,
    pub dispatcher: Arc<Dispatcher>,
    pub clock: Option<ManualClock>,
    running: Running,
    http: reqwest::Client,
    seq: AtomicUsize,
}

/// Builds the app from `setup` on the sandbox's database. With a manual
/// clock the worker loop is off and the test steps it.
pub async fn spawn_app(sandbox: &Sandbox, setup: &Setup, clock: Option<ManualClock>) -> TestApp {
    spawn_app_with(sandbox, setup, clock, |_| {}).await
}

/// [`spawn_app`], with a chance to change the built app before it runs.
pub async fn spawn_app_with(
    sandbox: &Sandbox,
    setup: &Setup,
    clock: Option<ManualClock>,
    customize: impl FnOnce(&mut Application),
) -> TestApp {
    init_logs();
    let toml = setup.toml(sandbox.dir.path());
    let settings = Settings::from_toml(&toml)
        .unwrap_or_else(|e| panic!("the test configuration is refused: {e}\n{toml}"));
    let app_clock: Arc<dyn Clock> = match &clock {
        Some(c) => Arc::new(c.clone()),
        None => Arc::new(SystemClock),
    };
    crate::support::instance::wait_for_instance_lock_release(&settings.storage.path).await;
    let mut app = Application::build_with(settings, app_clock)
        .await
        .expect("the app builds");
    if clock.is_some() {
        app = app.without_worker();
    }
    customize(&mut app);
    let addr = app.addr();
    let dispatcher = app.dispatcher();
    let running = Running::start(app);
    // The server starts after interrupted jobs are recovered: once /healthz
    // answers, a step sees the recovered queue.
    let http = reqwest::Client::new();
    wait_for_async(DEADLINE, "the app to serve /healthz", || {
        let r = http.get(format!("http://{addr}/healthz")).send();
        async move { r.await.ok().filter(|r| r.status().is_success()) }
    })
    .await;
    TestApp {
        addr,
        dispatcher,
        clock,
        running,
        http,
        seq: AtomicUsize::new(0),
    }
}

/// A manual clock at [`T0_SECS`].
pub fn manual_clock() -> ManualClock {
    ManualClock::at_unix_secs(T0_SECS)
}

/// A `run.succeeded` webhook body for `run_id`, with event id `evt_<run_id>`.
pub fn webhook_body(run_id: &str) -> Vec<u8> {
    json!({
        "id": format!("evt_{run_id}"),
        "type": "run.succeeded",
        "data": {"run": {"id": run_id, "status": "succeeded"}}
    })
    .to_string()
    .into_bytes()
}

impl TestApp {
    fn now_secs(&self) -> u64 {
        match &self.clock {
            Some(c) => (c.now_ms() / 1000) as u64,
            None => (SystemClock.now_ms() / 1000) as u64,
        }
    }

    /// Posts a signed `run.succeeded` for `run_id` and expects 202; returns the event id.
    pub async fn post_run(&self, run_id: &str) -> String {
        let body = webhook_body(run_id);
        let sig = steerhook::signature::sign(SECRET, self.now_secs(), &body);
        let r = self
            .http
            .post(format!("http://{}/webhooks/opensteer", self.addr))
            .header("x-opensteer-signature", sig)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("the webhook request is answered");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        assert_eq!(status, 202, "posting {run_id}: {text}");
        self.seq.fetch_add(1, Ordering::Relaxed);
        let v: Value = serde_json::from_str(&text).unwrap();
        v["id"].as_str().unwrap().to_owned()
    }

    /// Posts `body` signed at the app's clock; returns the status and the JSON answer.
    pub async fn post_body(&self, body: &Value) -> (u16, Value) {
        let body = serde_json::to_vec(body).unwrap();
        let sig = steerhook::signature::sign(SECRET, self.now_secs(), &body);
        let r = self
            .http
            .post(format!("http://{}/webhooks/opensteer", self.addr))
            .header("x-opensteer-signature", sig)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("the webhook request is answered");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// One worker step.
    pub async fn step(&self) -> Outcome {
        self.dispatcher
            .try_dispatch_next()
            .await
            .expect("the worker step reaches the database")
    }

    /// Steps until Idle; fails after `max_steps`.
    pub async fn drain(&self, max_steps: usize) -> Vec<Outcome> {
        let mut ran = Vec::new();
        for _ in 0..max_steps {
            match self.step().await {
                Outcome::Idle { .. } => return ran,
                o => ran.push(o),
            }
        }
        panic!("the queue did not drain in {max_steps} steps: {ran:?}");
    }

    pub fn clock(&self) -> &ManualClock {
        self.clock.as_ref().expect("this app has a manual clock")
    }

    pub fn now_ms(&self) -> i64 {
        self.clock().now_ms()
    }

    pub fn advance(&self, by: Duration) {
        self.clock().advance(by);
    }

    /// Stops the app the way SIGTERM does and waits for it.
    pub async fn stop(mut self) {
        self.running.stop(DEADLINE).await;
    }
}

// ------------------------------------------------------------ database ----

/// One row of `jobs`.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: i64,
    pub kind: String,
    pub state: String,
    pub attempts: i64,
    pub last_error_code: Option<String>,
}

/// One row of `attempts`.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub attempt: i64,
    pub outcome: String,
    pub error_code: Option<String>,
}

fn event_seq(db: &Connection, event_id: &str) -> i64 {
    db.query_row("SELECT seq FROM events WHERE id = ?1", [event_id], |r| {
        r.get(0)
    })
    .unwrap_or_else(|e| panic!("event {event_id} is not stored: {e}"))
}

/// The event's jobs, in id order.
pub fn jobs(sandbox: &Sandbox, event_id: &str) -> Vec<JobRow> {
    let db = sandbox.db();
    let seq = event_seq(&db, event_id);
    let mut stmt = db
        .prepare(
            "SELECT id, kind, state, attempts, last_error_code
             FROM jobs WHERE event_seq = ?1 ORDER BY id",
        )
        .unwrap();
    stmt.query_map([seq], |r| {
        Ok(JobRow {
            id: r.get(0)?,
            kind: r.get(1)?,
            state: r.get(2)?,
            attempts: r.get(3)?,
            last_error_code: r.get(4)?,
        })
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// The event's job of `kind` (`fetch` or `deliver`).
pub fn job(sandbox: &Sandbox, event_id: &str, kind: &str) -> JobRow {
    jobs(sandbox, event_id)
        .into_iter()
        .find(|j| j.kind == kind)
        .unwrap_or_else(|| panic!("event {event_id} has no {kind} job"))
}

/// The attempts of a job, oldest first.
pub fn attempts(sandbox: &Sandbox, job_id: i64) -> Vec<AttemptRow> {
    let db = sandbox.db();
    let mut stmt = db
        .prepare("SELECT attempt, outcome, error_code FROM attempts WHERE job_id = ?1 ORDER BY id")
        .unwrap();
    stmt.query_map([job_id], |r| {
        Ok(AttemptRow {
            attempt: r.get(0)?,
            outcome: r.get(1)?,
            error_code: r.get(2)?,
        })
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// The event's `status` and `enrichment_error`.
pub fn event_status(sandbox: &Sandbox, event_id: &str) -> (String, Option<String>) {
    sandbox
        .db()
        .query_row(
            "SELECT status, enrichment_error FROM events WHERE id = ?1",
            [event_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .unwrap()
        .unwrap_or_else(|| panic!("event {event_id} is not stored"))
}

// --------------------------------------------------------- fake API ----

/// Where a logs page puts its entries and its next cursor (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorAt {
    /// A top-level string key.
    Key(&'static str),
    /// `pagination.nextCursor`.
    Pagination,
    /// No cursor key: `hasMore: true`, and the oldest entry carries `id`.
    HasMoreId,
    /// No cursor key: `hasMore: true`, and the oldest entry carries `cursor`.
    HasMoreEntryCursor,
}

/// The shape of the fake's answers.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// `GET /runs/{id}` wraps the run as `{"run": {...}}`.
    pub wrapped_run: bool,
    /// The key of the entries array.
    pub entries_key: &'static str,
    /// Where the next cursor is.
    pub cursor: CursorAt,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            wrapped_run: false,
            entries_key: "logs",
            cursor: CursorAt::Key("nextCursor"),
        }
    }
}

/// The run object the fake serves for `run_id`.
pub fn run_json(run_id: &str) -> Value {
    json!({"id": run_id, "status": "succeeded", "scraper": "shop-prices"})
}

/// Log line `i` of a run, in the shape's form.
pub fn log_line(i: usize, shape: &Shape) -> Value {
    let mut e = json!({"id": format!("line-{i}"), "seq": i, "message": format!("line {i}")});
    if shape.cursor == CursorAt::HasMoreEntryCursor {
        e["cursor"] = json!(format!("entry-cursor:{i}"));
    }
    e
}

/// The index an opaque cursor stands for: entries before it are older.
fn cursor_index(cursor: &str) -> Option<usize> {
    cursor
        .rsplit([':', '-'])
        .next()
        .and_then(|n| n.parse().ok())
}

/// A logs page of `total` lines, paging backwards from `before` (exclusive).
pub fn logs_page(total: usize, limit: usize, before: usize, shape: &Shape) -> Value {
    let end = before.min(total);
    let start = end.saturating_sub(limit);
    let entries: Vec<Value> = (start..end).map(|i| log_line(i, shape)).collect();
    let more = start > 0;
    let mut page = json!({});
    page[shape.entries_key] = Value::Array(entries);
    let cursor = format!("before:{start}");
    match shape.cursor {
        CursorAt::Key(k) if more => page[k] = json!(cursor),
        CursorAt::Pagination if more => page["pagination"] = json!({"nextCursor": cursor}),
        CursorAt::HasMoreId | CursorAt::HasMoreEntryCursor => page["hasMore"] = json!(more),
        _ => {}
    }
    page
}

/// Serves every run: `GET /runs/{id}` and its `total` log lines, paged as
/// the real API does (newest page first, entries oldest first within a page).
#[derive(Clone)]
pub struct FakeRuns {
    pub total: usize,
    pub shape: Shape,
}

impl FakeRuns {
    /// Every run with `total` log lines, in the default shape.
    pub fn lines(total: usize) -> Self {
        Self {
            total,
            shape: Shape::default(),
        }
    }
}

impl Respond for FakeRuns {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        serve_run(request, self.total, &self.shape)
    }
}

/// The answer of the healthy fake to `request`.
pub fn serve_run(request: &Request, total: usize, shape: &Shape) -> ResponseTemplate {
    let segments: Vec<&str> = request.url.path().trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["runs", run_id] => {
            let run = run_json(run_id);
            let body = if shape.wrapped_run {
                json!({"run": run, "requestId": "req_1"})
            } else {
                run
            };
            ResponseTemplate::new(200).set_body_json(body)
        }
        ["runs", _, "logs"] => {
            let q: HashMap<String, String> = request.url.query_pairs().into_owned().collect();
            let limit = q
                .get("logLimit")
                .and_then(|l| l.parse().ok())
                .expect("logLimit is sent");
            let before = match q.get("beforeLogCursor") {
                None => total,
                Some(c) => cursor_index(c).unwrap_or_else(|| panic!("unknown cursor {c:?}")),
            };
            ResponseTemplate::new(200).set_body_json(logs_page(total, limit, before, shape))
        }
        _ => ResponseTemplate::new(404),
    }
}

/// Mounts `responder` for every `GET /runs/...`.
pub async fn mount_runs(server: &MockServer, responder: impl Respond + 'static) {
    Mock::given(method("GET"))
        .and(path_regex(r"^/runs/"))
        .respond_with(responder)
        .mount(server)
        .await;
}

/// An API error answer.
pub fn api_error(status: u16, code: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"error": format!("fake {code}"), "code": code}))
}

/// Requests the fake received for paths starting with `prefix`.
pub async fn requests_to(server: &MockServer, prefix: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path().starts_with(prefix))
        .collect()
}

/// The `seq` field of each log entry the hook received.
pub fn log_seqs(doc: &Value) -> Vec<u64> {
    doc["logs"]
        .as_array()
        .unwrap_or_else(|| panic!("the hook got no logs: {doc}"))
        .iter()
        .map(|e| e["seq"].as_u64().expect("an entry with seq"))
        .collect()
}
