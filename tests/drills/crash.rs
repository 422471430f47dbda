//! kill -9 under load, short version: the real binary, events posted 16 at
//! a time while two hooks run, SIGKILL once 100 are acknowledged. Every
//! acknowledged id is on disk, the file is intact, and after a restart
//! every delivery succeeds, the interrupted ones after an 'interrupted'
//! attempt. On SQLite and on PostgreSQL, where the restarted daemon takes
//! the jobs the kill cut off once their leases run out.
//! `scripts/crash-drill.sh` does 20 such cycles at 500 req/s (SQLite),
//! `scripts/cluster-drill.sh` kills either of two daemons on PostgreSQL.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};

use crate::support::prelude::*;

/// How long the daemon may take to serve after a start.
const HEALTHY_WITHIN: Duration = Duration::from_secs(15);

const ACKED_BEFORE_KILL: usize = 100;
const MAX_POSTS: usize = 400;

/// Two hooks, one of them slow, that log each attempt to `$OUT/<name>.log`;
/// the slow one touches `$OUT/slow.started` as it starts.
fn crash_config(sandbox: &Sandbox, listen: SocketAddr) -> Config {
    let hook = |name: &str, sleep: &str| {
        sandbox.shell_hook_with(
            name,
            &["run.succeeded"],
            &[
                "/bin/sh",
                "-c",
                &format!(
                    "{sleep}echo \"$STEERHOOK_EVENT_ID $STEERHOOK_ATTEMPT\" >> \"$OUT/{name}.log\""
                ),
            ],
            &[],
            "concurrency = 4\ntimeout_secs = 30\nkill_grace_secs = 1",
        )
    };
    Config::default()
        .listen(listen)
        .lines(
            "queue",
            // On PostgreSQL the restarted daemon takes the killed one's jobs
            // when their leases run out: the shortest lease keeps that short.
            "concurrency = 8\nbackoff_base_secs = 1\nbackoff_max_secs = 1\nlease_secs = 3",
        )
        .lines("log", "level = \"warn\"")
        .hook(&hook("fast", ""))
        // The slow hook says when it starts, so the kill can wait for a
        // delivery to be running instead of hoping one is.
        .hook(&hook("slow", "touch \"$OUT/slow.started\"; sleep 0.1; "))
}

crate::backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_kill_9_under_load_loses_no_acknowledged_event_and_interrupted_hooks_run_again(backend) {
        let sandbox = Sandbox::with_backend(backend);
        let addr = free_addr();
        let config = sandbox.write_config(&crash_config(&sandbox, addr));
        let webhook = Webhook::to(&format!("http://{addr}{WEBHOOK_PATH}"));

        let daemon = Arc::new(Mutex::new(Daemon::spawn(serve_command(&config))));
        wait_healthy(addr, HEALTHY_WITHIN).await;
        let acked = Arc::new(Mutex::new(Vec::new()));
        let n_acked = Arc::new(AtomicUsize::new(0));
        let killed = Arc::new(AtomicBool::new(false));
        let started = sandbox.out().join("slow.started");
        stream::iter(0..MAX_POSTS)
            .map(|i| {
                let (webhook, acked, n_acked, daemon, killed, started) = (
                    webhook.clone(),
                    acked.clone(),
                    n_acked.clone(),
                    daemon.clone(),
                    killed.clone(),
                    started.clone(),
                );
                async move {
                    let body = run_event(
                        "run.succeeded",
                        &format!("evt_kill_{i:04}"),
                        &format!("kill_{i:04}"),
                    );
                    if let Some(answer) = webhook.try_post_signed(&body).await {
                        if (200..300).contains(&answer.status) {
                            let v = answer.json();
                            acked
                                .lock()
                                .unwrap()
                                .push(v["id"].as_str().unwrap().to_owned());
                            // Once enough are acknowledged and a slow
                            // delivery has started (four run at a time,
                            // 0.1 s each, while the queue is long).
                            if n_acked.fetch_add(1, Ordering::SeqCst) + 1 >= ACKED_BEFORE_KILL
                                && started.exists()
                                && !killed.swap(true, Ordering::SeqCst)
                            {
                                // std's Child::kill is SIGKILL.
                                daemon.lock().unwrap().0.kill().expect("kill -9");
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
            .0
            .wait()
            .expect("reap the killed daemon");
        let acked: Vec<String> = acked.lock().unwrap().clone();
        assert!(
            acked.len() >= ACKED_BEFORE_KILL && acked.len() < MAX_POSTS,
            "{} acked",
            acked.len()
        );

        let db = sandbox.db();
        let integrity = db.integrity_check();
        assert_eq!(integrity, "ok");
        let stored: HashSet<String> = db.query("SELECT id FROM events", &[]).into_iter().collect();
        let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
        assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
        let interrupted = db.count("SELECT count(*) FROM jobs WHERE state = 'running'");
        assert!(interrupted > 0, "the kill landed while hooks ran");

        // Restart and drain.
        let daemon = Daemon::spawn(serve_command(&config));
        wait_healthy(addr, HEALTHY_WITHIN).await;
        wait_for(Duration::from_secs(60), "the queue to drain", || {
            (db.unfinished_jobs() == 0).then_some(())
        })
        .await;
        daemon.sigterm();
        let mut daemon = daemon;
        assert!(daemon.0.wait().unwrap().success(), "exit 0 on SIGTERM");

        let n = stored.len() as i64;
        assert_eq!(
            db.count("SELECT count(*) FROM events WHERE status = 'done'"),
            n
        );
        assert_eq!(
            db.count("SELECT count(*) FROM jobs WHERE state = 'succeeded'"),
            2 * n
        );
        assert_eq!(
            db.count("SELECT count(*) FROM attempts WHERE outcome = 'interrupted'"),
            interrupted,
            "one 'interrupted' attempt per job the kill cut off"
        );
        // Each job: exactly one 'ok', and it is its last attempt.
        assert_eq!(
            db.count("SELECT count(*) FROM jobs j WHERE
                   (SELECT count(*) FROM attempts a WHERE a.job_id = j.id AND a.outcome = 'ok') <> 1
                   OR (SELECT outcome FROM attempts a WHERE a.job_id = j.id ORDER BY a.id DESC LIMIT 1) <> 'ok'"
            ),
            0
        );
        for hook in ["fast.log", "slow.log"] {
            let ran: HashSet<String> = sandbox
                .out_lines(hook)
                .iter()
                .map(|l| l.split(' ').next().unwrap_or_default().to_owned())
                .collect();
            let missing: Vec<&String> = stored.iter().filter(|id| !ran.contains(*id)).collect();
            assert!(missing.is_empty(), "{hook}: never ran for {missing:?}");
        }
    }
}
