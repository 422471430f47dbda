//! Several daemons on one PostgreSQL database (SPEC §7), black-box: real
//! apps through the startup seam on port 0, a real server, real hooks.
//! Nothing sleeps to synchronise: waits poll with a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or tool: a panic names what failed

mod daemons;
mod outage;
#[path = "../support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use steerhook::clock::SystemClock;
use steerhook::config::Settings;
use steerhook::startup::Application;

use support::app::Running;

/// The secret every daemon accepts.
pub const SECRET: &str = "whsec_cluster_tests";
/// How long a poll waits before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// One daemon: a real app serving HTTP, its worker looping.
pub struct Daemon {
    pub addr: SocketAddr,
    running: Running,
    http: reqwest::Client,
}

/// The configuration of a daemon on the database at `url`, with its own
/// payload directory in `dir`, `extra` appended (queue settings, hooks).
pub fn config(url: &str, dir: &Path, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [webhook]\nsecrets = [\"{SECRET}\"]\n\
         [storage]\nbackend = \"postgres\"\nurl = {url:?}\npool_size = 8\npayload_dir = {:?}\n\
         {extra}\n",
        dir.join("payloads").display().to_string()
    )
}

impl Daemon {
    /// Builds and runs a daemon from `toml`.
    pub async fn start(toml: &str) -> Daemon {
        let settings =
            Settings::from_toml(toml).unwrap_or_else(|e| panic!("config refused: {e}\n{toml}"));
        let app = Application::build_with(settings, Arc::new(SystemClock))
            .await
            .expect("the daemon builds");
        let addr = app.addr();
        Daemon {
            addr,
            running: Running::start(app),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
        }
    }

    /// Posts a signed `run.succeeded` for `run_id`; the status, the
    /// `Retry-After` header and the JSON answer.
    pub async fn post(&self, run_id: &str) -> (u16, Option<String>, Value) {
        let body = json!({
            "id": format!("evt_{run_id}"),
            "type": "run.succeeded",
            "data": {"run": {"id": run_id, "status": "succeeded"}}
        })
        .to_string();
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let r = self
            .http
            .post(format!("http://{}/webhooks/opensteer", self.addr))
            .header(
                "x-opensteer-signature",
                steerhook::signature::sign(SECRET, t, body.as_bytes()),
            )
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("the webhook is answered");
        let status = r.status().as_u16();
        let retry_after = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (status, retry_after, r.json().await.unwrap_or(Value::Null))
    }

    /// `GET /healthz`'s status.
    pub async fn health(&self) -> u16 {
        self.http
            .get(format!("http://{}/healthz", self.addr))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// Stops it as SIGTERM does.
    pub async fn stop(mut self) {
        self.running.stop(DEADLINE).await;
    }

    /// Drops it without a shutdown, as kill -9 would: its tasks and hook
    /// processes die, its leases stop being renewed.
    pub fn kill(self) {
        self.running.kill();
    }
}

/// A shell hook `name` whose command runs `script` with `$OUT` = `out`.
pub fn shell_hook(name: &str, script: &str, out: &Path, extra: &str) -> String {
    format!(
        "[[hook]]\nname = {name:?}\nkind = \"shell\"\nevents = [\"run.succeeded\"]\n\
         command = [\"/bin/sh\", \"-c\", {script:?}]\nenv = {{ OUT = {:?} }}\n\
         timeout_secs = 60\nkill_grace_secs = 1\n{extra}\n",
        out.display().to_string()
    )
}

/// The lines of `out/<name>`, empty until it exists.
pub fn lines(out: &Path, name: &str) -> Vec<String> {
    std::fs::read_to_string(out.join(name))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A temp dir with an `out/` for hooks to write to.
pub fn sandbox() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    (dir, out)
}
