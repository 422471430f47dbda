//! kill -9 under load, short version: the real binary, events posted 16 at
//! a time while two hooks run, SIGKILL once 100 are acknowledged. Every
//! acknowledged id is on disk, the file is intact, and after a restart
//! every delivery succeeds, the interrupted ones after an 'interrupted'
//! attempt. `scripts/crash-drill.sh` does 20 such cycles at 500 req/s.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};

use crate::helpers::*;

const ACKED_BEFORE_KILL: usize = 100;
const MAX_POSTS: usize = 400;

fn hooks(sandbox: &Sandbox) -> String {
    let hook = |name: &str, sleep: &str| {
        format!(
            "[[hook]]\nname = \"{name}\"\nkind = \"shell\"\nevents = [\"run.succeeded\"]\n\
             command = [\"/bin/sh\", \"-c\", \"{sleep}echo \\\"$STEERHOOK_EVENT_ID $STEERHOOK_ATTEMPT\\\" >> \\\"$HOOK_LOG\\\"\"]\n\
             env = {{ HOOK_LOG = {} }}\nconcurrency = 4\ntimeout_secs = 30\nkill_grace_secs = 1\n",
            toml_str(&sandbox.path(&format!("{name}.log")).display().to_string())
        )
    };
    format!(
        "[queue]\nconcurrency = 8\nbackoff_base_secs = 1\nbackoff_max_secs = 1\n[log]\nlevel = \"warn\"\n{}{}",
        hook("fast", ""),
        hook("slow", "sleep 0.1; ")
    )
}

fn serve(config: &std::path::Path) -> Child {
    Command::new(steerhook_bin())
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env_remove("STEERHOOK_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start steerhook serve")
}

async fn wait_healthy(client: &reqwest::Client, port: u16) {
    let url = format!("http://127.0.0.1:{port}/healthz");
    wait_for_async(
        Duration::from_secs(15),
        "the daemon to answer /healthz",
        || {
            let probe = client.get(&url).send();
            async move {
                probe
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(drop)
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_9_under_load_loses_no_acknowledged_event_and_interrupted_hooks_run_again() {
    let sandbox = Sandbox::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = sandbox.path("steerhook.toml");
    std::fs::write(
        &config,
        sandbox.config(&format!("127.0.0.1:{port}"), "", &hooks(&sandbox)),
    )
    .unwrap();
    let client = http_client();
    let url = format!("http://127.0.0.1:{port}{WEBHOOK_PATH}");

    let daemon = Arc::new(Mutex::new(serve(&config)));
    wait_healthy(&client, port).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let n_acked = Arc::new(AtomicUsize::new(0));
    stream::iter(0..MAX_POSTS)
        .map(|i| {
            let (client, url, acked, n_acked, daemon) = (
                client.clone(),
                url.clone(),
                acked.clone(),
                n_acked.clone(),
                daemon.clone(),
            );
            async move {
                let body = run_body("run.succeeded", &format!("kill_{i:04}"));
                if let Some((status, _, text)) = post_signed(&client, &url, &body).await {
                    if (200..300).contains(&status) {
                        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                        acked
                            .lock()
                            .unwrap()
                            .push(v["id"].as_str().unwrap().to_owned());
                        if n_acked.fetch_add(1, Ordering::SeqCst) + 1 == ACKED_BEFORE_KILL {
                            // std's Child::kill is SIGKILL.
                            daemon.lock().unwrap().kill().expect("kill -9");
                        }
                    }
                }
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    daemon
        .lock()
        .unwrap()
        .wait()
        .expect("reap the killed daemon");
    let acked: Vec<String> = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= ACKED_BEFORE_KILL && acked.len() < MAX_POSTS,
        "{} acked",
        acked.len()
    );

    let db = sandbox.db();
    let integrity: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let stored: HashSet<String> = db
        .prepare("SELECT id FROM events")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    let interrupted = count(&db, "SELECT count(*) FROM jobs WHERE state = 'running'");
    assert!(interrupted > 0, "the kill landed while hooks ran");

    // Restart and drain.
    let mut daemon = serve(&config);
    wait_healthy(&client, port).await;
    wait_for(Duration::from_secs(60), "the queue to drain", || {
        (unfinished_jobs(&db) == 0).then_some(())
    })
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(daemon.wait().unwrap().success(), "exit 0 on SIGTERM");

    let n = stored.len() as i64;
    assert_eq!(
        count(&db, "SELECT count(*) FROM events WHERE status = 'done'"),
        n
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM jobs WHERE state = 'succeeded'"),
        2 * n
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM attempts WHERE outcome = 'interrupted'"
        ),
        interrupted,
        "one 'interrupted' attempt per job the kill cut off"
    );
    // Each job: exactly one 'ok', and it is its last attempt.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM jobs j WHERE
               (SELECT count(*) FROM attempts a WHERE a.job_id = j.id AND a.outcome = 'ok') <> 1
               OR (SELECT outcome FROM attempts a WHERE a.job_id = j.id ORDER BY a.id DESC LIMIT 1) <> 'ok'"
        ),
        0
    );
    for hook in ["fast.log", "slow.log"] {
        let ran: HashSet<String> = sandbox
            .lines(hook)
            .iter()
            .map(|l| l.split(' ').next().unwrap_or_default().to_owned())
            .collect();
        let missing: Vec<&String> = stored.iter().filter(|id| !ran.contains(*id)).collect();
        assert!(missing.is_empty(), "{hook}: never ran for {missing:?}");
    }
}
