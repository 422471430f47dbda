//! A worker with nothing it may claim waits; it does not spin on the
//! database. Measured on the real binary as a child process, whose CPU time
//! the kernel counts apart from this test's threads.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wiremock::MockServer;

use crate::helpers::*;

/// How long the idle worker is watched.
const WATCH: Duration = Duration::from_secs(2);
/// CPU the daemon may use while it waits, over [`WATCH`]: a spinning loop
/// burned 400 ms here (on a shared 2-core machine); an idle one about none.
const MAX_IDLE_CPU: Duration = Duration::from_millis(200);

struct Daemon {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn start_daemon(sandbox: &Sandbox, setup: Setup) -> Daemon {
    let addr = free_port();
    let config = sandbox.dir.path().join("steerhook.toml");
    std::fs::write(&config, setup.listen(addr).toml(sandbox.dir.path())).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_steerhook"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start steerhook serve");
    let daemon = Daemon { child, addr };
    let http = reqwest::Client::new();
    wait_for_async(DEADLINE, "the daemon to serve /healthz", || {
        let r = http.get(format!("http://{addr}/healthz")).send();
        async move { r.await.ok().filter(|r| r.status().is_success()) }
    })
    .await;
    daemon
}

async fn post(daemon: &Daemon, run_id: &str) {
    let body = webhook_body(run_id);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let r = reqwest::Client::new()
        .post(format!("http://{}/webhooks/opensteer", daemon.addr))
        .header(
            "x-opensteer-signature",
            steerhook::signature::sign(SECRET, now, &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
}

/// utime + stime of `pid`, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on every Linux ABI that Rust targets.
    Duration::from_millis(ticks * 10)
}

/// The daemon's CPU time over [`WATCH`]. The sleep is the measurement
/// window, not a synchronisation.
async fn cpu_while_watching(daemon: &Daemon) -> Duration {
    let before = cpu_time(daemon.child.id());
    tokio::time::sleep(WATCH).await;
    cpu_time(daemon.child.id()) - before
}

#[tokio::test]
async fn the_worker_waits_without_spinning_while_fetches_are_paused_by_retry_after() {
    let api = MockServer::start().await;
    mount_runs(
        &api,
        api_error(429, "CLOUD_RATE_LIMITED").insert_header("retry-after", "60"),
    )
    .await;
    let sandbox = Sandbox::new();
    let daemon = start_daemon(&sandbox, Setup::new(&api)).await;
    post(&daemon, "run_p1").await;
    wait_for_async(DEADLINE, "the first fetch", || async {
        (!requests_to(&api, "/runs/").await.is_empty()).then_some(())
    })
    .await;
    // Due at once, but the API asked every fetch to wait.
    post(&daemon, "run_p2").await;

    let used = cpu_while_watching(&daemon).await;
    assert!(
        used < MAX_IDLE_CPU,
        "the daemon used {used:?} of CPU in {WATCH:?} while every fetch was paused"
    );
    assert_eq!(requests_to(&api, "/runs/").await.len(), 1);
}

#[tokio::test]
async fn the_worker_waits_without_spinning_while_a_hook_is_at_its_concurrency_limit() {
    let sandbox = Sandbox::new();
    let setup = Setup::without_api()
        .hook_command(r#"["/bin/sh", "-c", "touch \"$OUT/started\"; sleep 10"]"#)
        .hook("concurrency = 1");
    let daemon = start_daemon(&sandbox, setup).await;
    post(&daemon, "run_h1").await;
    post(&daemon, "run_h2").await;
    wait_for(DEADLINE, "the first hook to start", || {
        sandbox.out().join("started").exists().then_some(())
    })
    .await;

    let used = cpu_while_watching(&daemon).await;
    assert!(
        used < MAX_IDLE_CPU,
        "the daemon used {used:?} of CPU in {WATCH:?} while the second delivery waited for the hook"
    );
}
