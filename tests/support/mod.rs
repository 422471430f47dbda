//! The one test harness of the black-box tests (every crate in tests/
//! includes it as `mod support`). Everything is real: the app through the
//! startup seam on port 0, a real database, HTTP through reqwest, child
//! processes, wiremock for the Opensteer API on a socket, an SMTP server on
//! a socket. Nothing sleeps to synchronise: waits poll with a deadline
//! ([`poll`]), or the test steps the worker with a manual clock.
//!
//! # The API in short
//!
//! ```ignore
//! use crate::support::prelude::*;
//!
//! let sandbox = Sandbox::new();                    // temp dir, SQLite file, out/
//! let app = TestApp::builder()                     // SECRET, clock at NOW_SECS, worker loop on
//!     .sandbox(&sandbox)                           // else a sandbox of its own
//!     .server("max_body_bytes = 4096")             // raw lines for any section:
//!     .queue("backoff_base_secs = 1")              //   server webhook storage queue
//!     .opensteer(&api.uri())                       //   opensteer_lines smtp_lines log
//!     .smtp(smtp.port())                           // typed: listen secrets tolerance_secs
//!     .hook(&sandbox.shell_hook("etl", &["run.succeeded"], "cat > \"$OUT/doc\"", ""))
//!     .clock(manual_clock())                       // or .system_clock()
//!     .stepped()                                   // worker off: app.step() / step_ran() / drain(n)
//!     .customize(|app| { app.replace_sink(..); })  // change the built app
//!     .capture_logs()                              // logs::captured_logs() sees the product's logs
//!     .exclusive()                                 // no other app runs meanwhile (RSS, CPU tests)
//!     .spawn().await;                              // built, running, serving /healthz
//!
//! app.post_signed(body) / post_accepted(body) -> id / post_run("run_1") -> id
//! app.post_webhook(body, Some(header)) / signature(body) / webhook() (clone into tasks)
//! app.get("/metrics"); app.advance(d); app.now_ms(); app.write_config() (for the CLI)
//! app.stop().await;        // SIGTERM: graceful, must return Ok
//! app.kill().await;        // kill -9 (dropping the app is the same): nothing is recorded
//! builder.clone().spawn()  // restart on the same sandbox (waits for the instance lock)
//!
//! let db = app.db();       // or sandbox.db(): TestDb, the same SQL on SQLite and PostgreSQL
//! db.query_one::<i64>("SELECT count(*) FROM events WHERE status = $1", &[&"done"]);
//! db.query::<(String, Option<String>)>(sql, &[]); db.execute(sql, &[..]); db.count(sql)
//! db.event_status(id); db.jobs(id); db.job(id, "fetch"); db.delivery_job(id, "etl");
//! db.attempts(job_id); db.event_body(id); db.count_rows("quarantine")
//! db.sqlite_connection()   // SQLite-only sabotage (triggers, locks)
//!
//! Sandbox::with_backend(backend) / Sandbox::postgres() (None: skipped)
//! TestDb::fresh(backend); db.open(routing).await -> Store; db.settings(); db.url()
//! app.try_post_run("run_1") -> Answer {status, retry_after, text}; app.health()
//! ```
//!
//! - Both backends from one body: `crate::backends! { #[tokio::test] async fn
//!   name(backend) { TestApp::builder().backend(backend)... } }` makes
//!   `name::sqlite` and `name::postgres` ([`backends`]).
//!   The server: `STEERHOOK_TEST_DATABASE_URL` (default
//!   `postgres://postgres@127.0.0.1:5432/postgres`); none there fails the
//!   test saying how to get one, unless `STEERHOOK_TEST_SKIP_POSTGRES=1`
//!   outside CI.
//! - The Opensteer API: [`fake_api`] (`mount_runs(&server, FakeRuns::lines(450))`,
//!   `api_error`, `requests_to`, `Arrivals` + `most_in_flight`).
//! - SMTP: [`smtp::SmtpServer`]. Processes: [`process`]. The real binary:
//!   [`daemon`] (`steerhook_command`, `serve_command`, `Daemon`, `free_port`,
//!   `cli`, `run_cli`, `describe`, `repo_path`, `read_repo`). An
//!   `Application` a test builds itself: [`app::Running`]. Outside tools:
//!   [`tools`]. A TCP proxy to cut a server away: [`proxy`]. A database
//!   that refuses writes on either backend: [`fault::StoreFault`].
//! - Bodies and answers: [`webhook`] (`run_event`, `unique`, `json_body`,
//!   `assert_error`, `Webhook::to(url)` for the real binary, `post_run`).
//! - A configuration file for the real binary: `write_config_file(dir, text)`
//!   ([`config`]), or `sandbox.write_config(&config)`.
//! - The store on its own (tests/store): [`store`] (`event(n)`, `routing`,
//!   `claim_at`, `claim`, `ok`, `failed`, `register`, all at `T0`).
#![allow(dead_code)] // each test binary uses a different part

pub mod app;
pub mod backends;
pub mod config;
pub mod daemon;
pub mod db;
pub mod fake_api;
pub mod fault;
pub mod instance;
pub mod logs;
pub mod poll;
pub mod process;
pub mod proxy;
pub mod sandbox;
pub mod smtp;
pub mod store;
pub mod tools;
pub mod webhook;

use std::time::Duration;

/// The webhook secret every test app accepts (unless told otherwise).
pub const SECRET: &str = "whsec_tests_0123456789";
/// The Opensteer API key of [`config::Config::opensteer`].
pub const API_KEY: &str = "osk_test_key";
/// Where manual clocks start: 2026-01-01T00:00:00Z.
pub const NOW_SECS: u64 = 1_767_225_600;
/// How long any wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// The webhook path of the default configuration.
pub const WEBHOOK_PATH: &str = "/webhooks/opensteer";

/// What most tests use.
#[allow(unused_imports)] // each test binary uses a different part
pub mod prelude {
    pub use super::app::{manual_clock, system_now_secs, Guard, TestApp, TestAppBuilder, Worker};
    pub use super::config::{toml_list, toml_str, write_config_file, Config};
    pub use super::daemon::{
        cli, describe, free_addr, free_port, repo_path, run_cli, serve_command, serve_logging_to,
        steerhook_bin, steerhook_command, wait_healthy, Daemon,
    };
    pub use super::db::{AttemptRow, Backend, JobRow, TestDb};
    pub use super::fake_api::{
        api_error, api_error_saying, log_line, log_seqs, logs_page, most_in_flight, mount_runs,
        requests_to, run_json, serve_run, Arrivals, CursorAt, FakeRuns, Shape,
    };
    pub use super::logs::captured_logs;
    pub use super::poll::{
        poll_until, poll_until_blocking, wait_for, wait_for_async, POLL_INTERVAL,
    };
    pub use super::process::{
        cpu_time, is_alive, live_members_of_group, parse_env, vm_kib, wait_until_gone,
    };
    pub use super::sandbox::Sandbox;
    pub use super::smtp::SmtpServer;
    pub use super::webhook::{
        assert_error, http_client, json_body, run_event, unique, Answer, Webhook,
    };
    pub use super::{API_KEY, DEADLINE, NOW_SECS, SECRET, WEBHOOK_PATH};
}
