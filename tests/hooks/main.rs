//! Fan-out to hooks (SPEC §6, §7). Through the whole app: a signed webhook
//! over HTTP, the event in a real database, the worker delivering it to real
//! hook processes, a real SMTP server and real HTTP receivers. And hook kinds
//! on their own: `hooks::shell` running real child processes
//! (`shell_process`), the e-mail `Mailer` against a real SMTP server on a
//! real socket (`mailer`).
//!
//! Most app tests drive the worker one step at a time
//! (`Dispatcher::try_dispatch_next`) with a `ManualClock`; the ones about
//! concurrency and restarts run the real loop of `serve` and poll files and
//! the database with a deadline. No test sleeps to synchronise.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or tool: a panic names what failed

#[path = "../support/mod.rs"]
mod support;

mod email;
mod http;
mod mailer;
mod restart;
mod shell;
mod shell_process;

use steerhook::clock::ManualClock;
use support::prelude::*;

/// The app of these tests on `sandbox`: one HTTP worker thread, a manual
/// clock at the real time, the worker loop on unless `.stepped()`.
pub fn app_on(sandbox: &Sandbox) -> TestAppBuilder {
    TestApp::builder()
        .sandbox(sandbox)
        .server("workers = 1")
        .clock(ManualClock::at_unix_secs(system_now_secs()))
}

/// A `run.succeeded` body with the run id in `data.runId` (SPEC §5).
pub fn succeeded_body(event_id: &str, run_id: &str) -> String {
    run_body("run.succeeded", "succeeded", event_id, run_id)
}

/// A `run.failed` body, likewise.
pub fn failed_body(event_id: &str, run_id: &str) -> String {
    run_body("run.failed", "failed", event_id, run_id)
}

fn run_body(event_type: &str, status: &str, event_id: &str, run_id: &str) -> String {
    serde_json::json!({"type": event_type, "id": event_id, "data": {"runId": run_id, "status": status}})
        .to_string()
}
