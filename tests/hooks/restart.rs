//! Deliveries interrupted by a kill or a SIGTERM run again on the next start (SPEC §7).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::app_on;
use crate::support::prelude::*;

/// Records its pid and attempt, then hangs on the first attempt only.
const HANGS_FIRST_TIME: &str = r#"echo $$ >> "$OUT/pids"
    echo "$STEERHOOK_ATTEMPT" >> "$OUT/attempts"
    [ "$STEERHOOK_ATTEMPT" -gt 1 ] || sleep 1000"#;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn body() -> String {
    json!({"type": "run.succeeded", "id": unique("evt"), "data": {"runId": unique("run")}})
        .to_string()
}

fn first_pid(sandbox: &Sandbox) -> i32 {
    sandbox.out_lines("pids")[0]
        .trim()
        .parse()
        .expect("the hook's pid")
}

/// The restarted daemon runs the delivery again; it succeeds with an
/// `interrupted` attempt before it.
async fn restart_and_expect_the_second_attempt(
    app: TestAppBuilder,
    sandbox: &Sandbox,
    event_id: &str,
) {
    let app = app.spawn().await;
    let db = sandbox.db();
    poll_until(DEADLINE, "the delivery to run again and succeed", || {
        db.delivery_job(event_id, "etl").state == "succeeded"
    })
    .await;
    app.stop().await;
    assert_eq!(sandbox.out_lines("attempts"), ["1", "2"]);
    let job = db.delivery_job(event_id, "etl");
    let attempts: Vec<_> = db
        .attempts(job.id)
        .into_iter()
        .map(|a| (a.attempt, a.outcome, a.error_code))
        .collect();
    assert_eq!(
        attempts,
        [
            (1, "interrupted".to_owned(), Some("INTERRUPTED".to_owned())),
            (2, "ok".to_owned(), None)
        ]
    );
    assert_eq!(db.event_status(event_id), "done");
}

#[test]
fn delivery_killed_with_the_daemon_runs_again_after_restart() {
    let sandbox = Sandbox::new();
    let builder =
        app_on(&sandbox).hook(&sandbox.shell_hook("etl", &["run.succeeded"], HANGS_FIRST_TIME, ""));
    let daemon = runtime();
    let (app, event_id) = daemon.block_on(async {
        let app = builder.clone().spawn().await;
        let event_id = app.post_accepted(&body()).await;
        poll_until(DEADLINE, "the first attempt to start", || {
            sandbox.out_lines("attempts") == ["1"]
        })
        .await;
        (app, event_id)
    });
    let hook_pid = first_pid(&sandbox);
    assert_eq!(
        app.db().delivery_job(&event_id, "etl").state,
        "running",
        "killed mid-delivery"
    );

    // As close to kill -9 as one process can do to itself: every task of the
    // daemon (server, worker, the attempt) is dropped where it stands, and
    // nothing gets to record anything.
    daemon.shutdown_timeout(Duration::from_secs(5));
    drop(app);
    poll_until_blocking(DEADLINE, "the hook's process group to be killed", || {
        !is_alive(hook_pid)
    });

    runtime().block_on(restart_and_expect_the_second_attempt(
        builder, &sandbox, &event_id,
    ));
}

#[tokio::test]
async fn delivery_stopped_by_sigterm_after_the_grace_period_is_left_pending_and_runs_on_next_start()
{
    let sandbox = Sandbox::new();
    let hook = sandbox.shell_hook(
        "etl",
        &["run.succeeded"],
        HANGS_FIRST_TIME,
        "kill_grace_secs = 1",
    );
    let builder = app_on(&sandbox)
        .queue("shutdown_grace_secs = 1")
        .hook(&hook);
    let app = builder.clone().spawn().await;
    let event_id = app.post_accepted(&body()).await;
    poll_until(DEADLINE, "the first attempt to start", || {
        sandbox.out_lines("attempts") == ["1"]
    })
    .await;
    let hook_pid = first_pid(&sandbox);
    let db = sandbox.db();

    let stopping = Instant::now();
    app.stop().await;

    let took = stopping.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "running hooks get the grace period: stopped after {took:?}"
    );
    assert!(
        took < Duration::from_secs(10),
        "then they are stopped: took {took:?}"
    );
    assert!(!is_alive(hook_pid), "the hook was stopped");
    let job = db.delivery_job(&event_id, "etl");
    assert_eq!(job.state, "pending", "left for the next start, not failed");
    assert_eq!(db.event_status(&event_id), "pending");
    assert!(sandbox.payload_files_left().is_empty());

    restart_and_expect_the_second_attempt(builder, &sandbox, &event_id).await;
}

crate::backends! {
    #[tokio::test]
    async fn payload_files_left_by_a_killed_attempt_are_removed_at_start_and_nothing_else_is(backend) {
        let sandbox = Sandbox::with_backend(backend);
        let hook = sandbox.shell_hook("etl", &["run.succeeded"], "cat > /dev/null", "");
        let builder = app_on(&sandbox).hook(&hook).stepped();
        // The directory the app uses for its payload files.
        let dir = {
            let app = builder.clone().spawn().await;
            app.stop().await;
            sandbox.payload_dir()
        };
        assert!(dir.is_dir(), "{}", dir.display());
        // What a kill -9 in the middle of an attempt leaves: the whole
        // document, in a file named as the worker names them.
        let orphan = dir.join(format!("steerhook-payload-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&orphan, br#"{"event":{"id":"evt_killed"},"logs":[1,2,3]}"#).unwrap();
        let others = [
            dir.join("notes.txt"),
            dir.join("steerhook-payload-keep.json.bak"),
            dir.join("my-steerhook-payload-1.json"),
        ];
        for other in &others {
            std::fs::write(other, b"not ours").unwrap();
        }

        let app = builder.spawn().await;

        assert!(!orphan.exists(), "the orphan is removed at start");
        for other in &others {
            assert!(other.exists(), "{} is left alone", other.display());
        }
        app.stop().await;
    }
}
