//! A worker with nothing it may claim waits; it does not spin on the
//! database (measured on the real binary as a child process, whose CPU time
//! the kernel counts apart from this test's threads), and new work wakes it.

use std::time::{Duration, Instant};

use wiremock::MockServer;

use crate::support::prelude::*;
use crate::{queue_app, save_hook, APPEND_ID};

/// How long the idle worker is watched.
const WATCH: Duration = Duration::from_secs(2);
/// CPU the daemon may use while it waits, over [`WATCH`]: a spinning loop
/// burned 400 ms here (on a shared 2-core machine); an idle one about none.
const MAX_IDLE_CPU: Duration = Duration::from_millis(200);

/// `steerhook serve` on the app's configuration, serving; and a sender of
/// webhooks to it.
async fn start_daemon(sandbox: &Sandbox, app: TestAppBuilder) -> (Daemon, Webhook) {
    let addr = free_addr();
    let config = sandbox.write_config(app.listen(addr).config());
    let daemon = Daemon::spawn(serve_command(&config));
    wait_healthy(addr, DEADLINE).await;
    (daemon, Webhook::to(&format!("http://{addr}{WEBHOOK_PATH}")))
}

/// The daemon's CPU time over [`WATCH`]. The sleep is the measurement
/// window, not a synchronisation.
async fn cpu_while_watching(daemon: &Daemon) -> Duration {
    let pid = daemon.pid().to_string();
    let before = cpu_time(&pid);
    tokio::time::sleep(WATCH).await;
    cpu_time(&pid) - before
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
    let (daemon, webhook) = start_daemon(&sandbox, queue_app(&sandbox, Some(&api))).await;
    webhook.post_run("run_p1").await;
    wait_for_async(DEADLINE, "the first fetch", || async {
        (!requests_to(&api, "/runs/").await.is_empty()).then_some(())
    })
    .await;
    // Due at once, but the API asked every fetch to wait.
    webhook.post_run("run_p2").await;

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
    let setup = queue_app(&sandbox, None).without_hooks().hook(&save_hook(
        &sandbox,
        r#"["/bin/sh", "-c", "touch \"$OUT/started\"; sleep 10"]"#,
        "concurrency = 1",
    ));
    let (daemon, webhook) = start_daemon(&sandbox, setup).await;
    webhook.post_run("run_h1").await;
    webhook.post_run("run_h2").await;
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

crate::backends! {
    /// The worker, idle between events, starts each new one as soon as it
    /// is stored, not at its next look at the queue (every 500 ms on SQLite,
    /// every 5 s on PostgreSQL, where several daemons would each poll the
    /// one server).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_worker_starts_each_new_event_before_its_next_poll(backend) {
        let sandbox = Sandbox::with_backend(backend);
        let app = queue_app(&sandbox, None)
            .without_hooks()
            .hook(&save_hook(&sandbox, APPEND_ID, ""))
            .system_clock()
            .spawn()
            .await;
        let poll = app.dispatcher.idle_poll();
        for n in 0..3 {
            let started = Instant::now();
            app.post_run(&format!("run_idle_{n}")).await;
            wait_for(DEADLINE, "the delivery", || {
                (sandbox.out_lines("ids").len() > n).then_some(())
            })
            .await;
            let took = started.elapsed();
            assert!(
                took < poll,
                "delivery {n} took {took:?}: the worker waited for its poll ({poll:?})"
            );
        }
        app.stop().await;
    }
}
