//! Several daemons on one PostgreSQL database (SPEC §7), black-box: real
//! apps through the startup seam on port 0, a real server, real hooks.
//! Nothing sleeps to synchronise: waits poll with a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or tool: a panic names what failed

mod daemons;
mod outage;
#[path = "../support/mod.rs"]
mod support;

use support::prelude::*;

/// A daemon of these tests on `sandbox`'s PostgreSQL database: the system
/// clock, the worker loop on, and a payload directory of its own
/// (`<sandbox>/<name>/payloads`), so that several run on one database.
pub fn daemon(sandbox: &Sandbox, name: &str) -> TestAppBuilder {
    let payloads = sandbox.path(name).join("payloads");
    TestApp::builder()
        .sandbox(sandbox)
        .system_clock()
        .storage(&format!(
            "pool_size = 8\npayload_dir = {}",
            toml_str(&payloads.display().to_string())
        ))
}

/// The hook `etl` for `run.succeeded`: `sh -c script` with `$OUT`, plus `extra`.
pub fn etl_hook(sandbox: &Sandbox, script: &str, extra: &str) -> String {
    sandbox.shell_hook(
        "etl",
        &["run.succeeded"],
        script,
        &format!("timeout_secs = 60\nkill_grace_secs = 1\n{extra}"),
    )
}
