//! The app as a test sees it: built through the one startup seam on a fresh
//! SQLite file, talked to over HTTP, inspected through the database file, the
//! hook's output files and /proc.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde_json::Value;
use steerhook::clock::{Clock, ManualClock};
use steerhook::config::Settings;
use steerhook::dispatch::{Dispatcher, Outcome};
use steerhook::startup::Application;
use steerhook::store::{ClaimedJob, JobNext};
use tempfile::TempDir;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use crate::support::app::Running;
pub use crate::support::poll::{poll_until, poll_until_blocking};
pub use crate::support::process::{is_alive, live_members_of_group};

/// The webhook secret every test app accepts.
pub const SECRET: &str = "whsec_hooks_tests";
/// Longest any polled condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Tests that measure this process (RSS) run alone: every app holds a read
/// guard, a measuring test the write guard.
static EXCLUSIVE: LazyLock<Arc<RwLock<()>>> = LazyLock::new(|| Arc::new(RwLock::new(())));

/// Held for as long as an app lives.
pub enum Guard {
    /// Other tests may run.
    Shared(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    /// No other test runs.
    Exclusive(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

impl Guard {
    /// Runs alongside other tests.
    pub async fn shared() -> Guard {
        Guard::Shared(EXCLUSIVE.clone().read_owned().await)
    }

    /// Waits until no other test runs, and keeps them out.
    pub async fn exclusive() -> Guard {
        Guard::Exclusive(EXCLUSIVE.clone().write_owned().await)
    }
}

/// A temporary directory holding the database and the hooks' output directory.
pub struct Sandbox {
    dir: TempDir,
}

impl Sandbox {
    /// A fresh sandbox with an empty `out/` directory.
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("out")).expect("out dir");
        Sandbox { dir }
    }

    /// Where hooks write what they saw (`$OUT`).
    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// The SQLite file.
    pub fn db(&self) -> PathBuf {
        self.dir.path().join("steerhook.db")
    }

    /// Where the app writes hook payload files (beside the database).
    pub fn payload_dir(&self) -> PathBuf {
        self.dir.path().join("steerhook.db.payloads")
    }

    /// A file from `$OUT`, or empty when it does not exist (yet).
    pub fn read_out(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.out().join(name)).unwrap_or_default()
    }

    /// A file from `$OUT` as text, empty when missing.
    pub fn read_out_string(&self, name: &str) -> String {
        String::from_utf8(self.read_out(name)).expect("utf-8 output file")
    }

    /// The lines of a file from `$OUT`.
    pub fn out_lines(&self, name: &str) -> Vec<String> {
        self.read_out_string(name)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Payload files still present.
    pub fn payload_files_left(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.payload_dir()) {
            Ok(entries) => entries.filter_map(|e| Some(e.ok()?.path())).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The configuration for an app on this sandbox: a random port, our
    /// secret, the sandbox's database, then `rest` (sections and hooks).
    pub fn config(&self, rest: &str) -> String {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\
             [webhook]\nsecrets = [{}]\n\
             [storage]\npath = {}\n\
             {rest}",
            toml_str(SECRET),
            toml_str(&self.db().display().to_string()),
        )
    }

    /// A `[[hook]]` table for `sh -c script` with `$OUT` pointing at this
    /// sandbox's output directory, receiving `events`, plus `extra` lines.
    pub fn shell_hook(&self, name: &str, events: &[&str], script: &str, extra: &str) -> String {
        self.shell_hook_with(name, events, &["sh", "-c", script], &[], extra)
    }

    /// Like [`Sandbox::shell_hook`] with a full argv and more `env` entries.
    pub fn shell_hook_with(
        &self,
        name: &str,
        events: &[&str],
        argv: &[&str],
        env: &[(&str, &str)],
        extra: &str,
    ) -> String {
        let out = self.out().display().to_string();
        let env = std::iter::once(("OUT", out.as_str()))
            .chain(env.iter().copied())
            .map(|(k, v)| format!("{k} = {}", toml_str(v)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "[[hook]]\nname = {}\nkind = \"shell\"\nevents = {}\ncommand = {}\nenv = {{ {env} }}\n{extra}\n",
            toml_str(name),
            toml_list(events),
            toml_list(argv),
        )
    }
}

/// A TOML string literal for `s`, escaped as TOML wants.
pub fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A TOML array of strings.
pub fn toml_list(items: &[&str]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| toml_str(s))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// How the worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worker {
    /// Off: the test calls [`TestApp::step`].
    Stepped,
    /// The real loop of `serve`.
    Loop,
}

/// One running app.
pub struct TestApp {
    /// The HTTP address.
    pub addr: SocketAddr,
    /// The app's clock; starts at the real time, moves only when told.
    pub clock: ManualClock,
    /// The worker (also usable when the loop runs).
    pub dispatcher: Arc<Dispatcher>,
    db_path: PathBuf,
    webhook_path: String,
    running: Running,
    http: reqwest::Client,
    _guard: Guard,
}

impl TestApp {
    /// Builds and runs the app for `config`, alongside other tests.
    pub async fn spawn(config: &str, worker: Worker) -> TestApp {
        Self::spawn_guarded(config, worker, Guard::shared().await).await
    }

    /// Builds and runs the app for `config` while holding `guard`.
    pub async fn spawn_guarded(config: &str, worker: Worker, guard: Guard) -> TestApp {
        let settings = Settings::from_toml(config)
            .unwrap_or_else(|e| panic!("test config refused: {e}\n{config}"));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let clock = ManualClock::at_unix_secs(now);
        let webhook_path = settings.server.webhook_path.clone();
        let db_path = settings.storage.path.clone();
        crate::support::instance::wait_for_instance_lock_release(&db_path).await;
        let app = Application::build_with(settings, Arc::new(clock.clone()))
            .await
            .expect("the app builds");
        let app = match worker {
            Worker::Stepped => app.without_worker(),
            Worker::Loop => app,
        };
        let addr = app.addr();
        let dispatcher = app.dispatcher();
        TestApp {
            addr,
            clock,
            dispatcher,
            db_path,
            webhook_path,
            running: Running::start(app),
            http: reqwest::Client::new(),
            _guard: guard,
        }
    }

    /// Posts `body` signed with the right secret at the app's clock; returns
    /// the status and the JSON answer.
    pub async fn post_raw(&self, body: &[u8]) -> (u16, Value) {
        let t = u64::try_from(self.clock.now_ms() / 1000).expect("positive time");
        let response = self
            .http
            .post(format!("http://{}{}", self.addr, self.webhook_path))
            .header(
                "x-opensteer-signature",
                steerhook::signature::sign(SECRET, t, body),
            )
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .expect("the webhook answers");
        let status = response.status().as_u16();
        let json = response.json().await.unwrap_or(Value::Null);
        (status, json)
    }

    /// Posts `body` and asserts it was accepted; returns the event id.
    pub async fn post_accepted(&self, body: &Value) -> String {
        let bytes = serde_json::to_vec(body).expect("json");
        self.post_raw_accepted(&bytes).await
    }

    /// Posts raw bytes and asserts they were accepted; returns the event id.
    pub async fn post_raw_accepted(&self, body: &[u8]) -> String {
        let (status, answer) = self.post_raw(body).await;
        assert_eq!(status, 202, "webhook answer: {answer}");
        answer["id"].as_str().expect("id in the answer").to_owned()
    }

    /// One worker step.
    pub async fn step(&self) -> Outcome {
        self.dispatcher
            .try_dispatch_next()
            .await
            .expect("the worker step works")
    }

    /// One worker step that must run a job.
    pub async fn step_ran(&self) -> (ClaimedJob, JobNext) {
        match self.step().await {
            Outcome::Ran { job, next } => (job, next),
            idle => panic!("expected a job to run, got {idle:?}"),
        }
    }

    /// Moves the app's clock forward.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// A read-only connection to the app's database.
    pub fn db(&self) -> Connection {
        open_db(&self.db_path)
    }

    /// Stops the app as SIGTERM would, and waits until `run_until_stopped` returns.
    pub async fn stop(mut self) {
        self.running.stop(DEADLINE).await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.running.cancel();
    }
}

/// A read-only connection to a database file.
pub fn open_db(path: &Path) -> Connection {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open the database read-only");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    conn
}

/// One row of `attempts`.
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub struct AttemptRow {
    pub attempt: u32,
    pub outcome: String,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub exit_code: Option<i32>,
    pub stdout: Option<Vec<u8>>,
    pub stderr: Option<Vec<u8>>,
}

/// One row of `jobs`.
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub struct JobRow {
    pub id: i64,
    pub state: String,
    pub attempts: u32,
    pub due_at: i64,
    pub last_error_code: Option<String>,
    pub last_error: Option<String>,
}

/// The delivery job of `hook` for the event with id `event_id`.
pub fn delivery_job(db: &Connection, event_id: &str, hook: &str) -> JobRow {
    db.query_row(
        "SELECT j.id, j.state, j.attempts, j.due_at, j.last_error_code, j.last_error
         FROM jobs j JOIN events e ON e.seq = j.event_seq
         WHERE e.id = ?1 AND j.kind = 'deliver' AND j.hook = ?2",
        [event_id, hook],
        |r| {
            Ok(JobRow {
                id: r.get(0)?,
                state: r.get(1)?,
                attempts: r.get(2)?,
                due_at: r.get(3)?,
                last_error_code: r.get(4)?,
                last_error: r.get(5)?,
            })
        },
    )
    .optional()
    .expect("query jobs")
    .unwrap_or_else(|| panic!("no delivery job of {hook:?} for event {event_id:?}"))
}

/// The attempts of a job, oldest first.
pub fn attempts_of(db: &Connection, job_id: i64) -> Vec<AttemptRow> {
    let mut stmt = db
        .prepare(
            "SELECT attempt, outcome, error_code, error, exit_code, stdout, stderr
             FROM attempts WHERE job_id = ?1 ORDER BY id",
        )
        .expect("prepare");
    stmt.query_map([job_id], |r| {
        Ok(AttemptRow {
            attempt: r.get(0)?,
            outcome: r.get(1)?,
            error_code: r.get(2)?,
            error: r.get(3)?,
            exit_code: r.get(4)?,
            stdout: r.get(5)?,
            stderr: r.get(6)?,
        })
    })
    .expect("query attempts")
    .collect::<Result<_, _>>()
    .expect("read attempts")
}

/// The status of the event with id `event_id`.
pub fn event_status(db: &Connection, event_id: &str) -> String {
    db.query_row("SELECT status FROM events WHERE id = ?1", [event_id], |r| {
        r.get(0)
    })
    .expect("event row")
}

/// The stored raw body of the event with id `event_id`.
pub fn event_body(db: &Connection, event_id: &str) -> Vec<u8> {
    db.query_row("SELECT body FROM events WHERE id = ?1", [event_id], |r| {
        r.get(0)
    })
    .expect("event row")
}

/// A field of /proc/self/status in KiB, e.g. `VmRSS:`.
pub fn vm_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

/// Parses `env -0` output (or NUL-separated `NAME=value` entries) into a map.
pub fn parse_env(raw: &[u8]) -> std::collections::BTreeMap<String, String> {
    raw.split(|byte| *byte == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let entry = String::from_utf8(entry.to_vec()).expect("utf-8 env entry");
            let (name, value) = entry.split_once('=').expect("NAME=value");
            (name.to_string(), value.to_string())
        })
        .collect()
}

/// A unique suffix for ids, so tests never share a run id.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// CPU time this process has used so far (user + system), from /proc/self/stat.
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after_name = &stat[stat.rfind(')').expect("comm") + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3 of the full line, utime 14, stime 15.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // USER_HZ is 100 on every Linux architecture we run on.
    Duration::from_millis(ticks * 10)
}
