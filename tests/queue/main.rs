//! The durable queue and the enrichment fetch (SPEC §5, §7): the real app on
//! a real database, the Opensteer API faked on a real socket (wiremock),
//! real shell hooks. Step tests drive `Dispatcher::try_dispatch_next` with a
//! `ManualClock`; loop tests poll the database with a deadline. Nothing
//! sleeps to synchronise.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or tool: a panic names what failed

mod crash;
mod enrichment;
mod fetch;
mod idle;
mod ids;
mod load;
mod order;
mod panics;
mod retry;
mod routing;
mod secrets;
mod storage_fault;
#[path = "../support/mod.rs"]
mod support;

use support::prelude::*;
use wiremock::MockServer;

/// Writes the document the hook received to `$OUT/<event id>.json`.
pub const SAVE_DOCUMENT: &str = r#"["/bin/sh", "-c", "cat > \"$OUT/$STEERHOOK_EVENT_ID.json\""]"#;
/// Appends the event id to `$OUT/ids`, one line per delivery.
pub const APPEND_ID: &str = r#"["/bin/sh", "-c", "echo \"$STEERHOOK_EVENT_ID\" >> \"$OUT/ids\""]"#;

/// The hook `save` of these tests: `command` (a TOML array) for both run
/// events, `$OUT` set, then `extra` lines.
pub fn save_hook(sandbox: &Sandbox, command: &str, extra: &str) -> String {
    format!(
        "[[hook]]\nname = \"save\"\nkind = \"shell\"\nevents = [\"run.succeeded\", \"run.failed\"]\n\
         command = {command}\nenv = {{ OUT = {} }}\ntimeout_secs = 60\nkill_grace_secs = 1\n{extra}\n",
        toml_str(&sandbox.out().display().to_string())
    )
}

/// The app of these tests on `sandbox`: `api` as the Opensteer API (none:
/// no `[opensteer]`, hooks get the webhook payload only) with short
/// timeouts and 200 log lines a page, one-second backoffs, the product's
/// logs captured, and the hook `save` writing each document it gets to
/// `out/<event id>.json` (`.without_hooks()` to replace it).
pub fn queue_app(sandbox: &Sandbox, api: Option<&MockServer>) -> TestAppBuilder {
    let app = TestApp::builder()
        .sandbox(sandbox)
        .capture_logs()
        .set("queue", "backoff_base_secs", "1".into())
        .set("queue", "backoff_max_secs", "1".into())
        .hook(&save_hook(sandbox, SAVE_DOCUMENT, ""));
    match api {
        None => app,
        Some(api) => app
            .opensteer(&api.uri())
            .set("opensteer", "log_page_size", "200".into())
            .set("opensteer", "request_timeout_secs", "1".into())
            .set("opensteer", "connect_timeout_secs", "1".into()),
    }
}
