//! A daemon that dies mid-job loses nothing: the next start runs the job
//! again (SPEC §7, at-least-once).

use std::time::Duration;

use wiremock::MockServer;

use crate::support::prelude::*;
use crate::{queue_app, save_hook};

/// Sleeps on its first attempt (long enough to be killed), then saves the
/// document; records every attempt number in `$OUT/attempts`.
const SLOW_FIRST: &str = r#"["/bin/sh", "-c", "echo \"$STEERHOOK_ATTEMPT\" >> \"$OUT/attempts\"; if [ \"$STEERHOOK_ATTEMPT\" = 1 ]; then sleep 30; fi; cat > \"$OUT/$STEERHOOK_EVENT_ID.json\""]"#;

#[tokio::test]
async fn a_delivery_cut_off_mid_hook_is_recorded_as_interrupted_and_runs_again_after_restart() {
    let api = MockServer::start().await;
    mount_runs(&api, FakeRuns::lines(3)).await;
    let sandbox = Sandbox::new();
    let setup = queue_app(&sandbox, Some(&api))
        .without_hooks()
        .hook(&save_hook(&sandbox, SLOW_FIRST, ""));
    let clock = manual_clock();
    let app = setup.clone().clock(clock.clone()).stepped().spawn().await;
    let id = app.post_run("run_crash").await;
    app.step().await; // the fetch

    // The delivery step is dropped as soon as the hook has started: for the
    // database that is a process that died mid-job (the hook is killed with
    // its process group when its future is dropped).
    tokio::select! {
        o = app.step() => panic!("the slow hook finished: {o:?}"),
        _ = wait_for_async(DEADLINE, "the hook to start", || async {
            (!sandbox.out_lines("attempts").is_empty()).then_some(())
        }) => {}
    }
    let deliver = sandbox.db().job(&id, "deliver");
    assert_eq!(deliver.state, "running");
    app.stop().await;

    let app = setup.clone().clock(clock).stepped().spawn().await;
    app.drain(5).await;
    let tries = sandbox.db().attempts(deliver.id);
    let outcomes: Vec<(i64, &str, Option<&str>)> = tries
        .iter()
        .map(|t| (t.attempt, t.outcome.as_str(), t.error_code.as_deref()))
        .collect();
    assert_eq!(
        outcomes,
        [(1, "interrupted", Some("INTERRUPTED")), (2, "ok", None)]
    );
    assert_eq!(sandbox.out_lines("attempts"), ["1", "2"]);
    assert_eq!(sandbox.db().job(&id, "deliver").state, "succeeded");
    assert_eq!(sandbox.db().event_status(&id), "done");
    assert_eq!(sandbox.hook_document(&id)["run"], run_json("run_crash"));
    app.stop().await;
}

/// The real worker loop in its own runtime, which is then torn down without
/// any shutdown: every task is dropped where it stands, as in a kill -9.
#[test]
fn a_worker_killed_mid_hook_leaves_the_job_to_the_next_start_which_completes_it() {
    let sandbox = Sandbox::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = rt.block_on(MockServer::start());
    rt.block_on(mount_runs(&api, FakeRuns::lines(3)));
    let setup = queue_app(&sandbox, Some(&api))
        .without_hooks()
        .hook(&save_hook(&sandbox, SLOW_FIRST, ""));

    let first = tokio::runtime::Runtime::new().unwrap();
    let id = first.block_on(async {
        let app = setup.clone().system_clock().spawn().await;
        let id = app.post_run("run_kill").await;
        wait_for_async(DEADLINE, "the hook to start", || async {
            (!sandbox.out_lines("attempts").is_empty()).then_some(())
        })
        .await;
        // Dropped without a shutdown: the tasks stay behind in the runtime.
        drop(app);
        id
    });
    first.shutdown_timeout(Duration::ZERO);
    let deliver = sandbox.db().job(&id, "deliver");
    assert_eq!(deliver.state, "running", "the kill left the job running");

    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        let app = setup.clone().system_clock().spawn().await;
        wait_for(DEADLINE, "the event to be done", || {
            (sandbox.db().event_status(&id) == "done").then_some(())
        })
        .await;
        app.stop().await;
    });
    let tries = sandbox.db().attempts(deliver.id);
    let outcomes: Vec<&str> = tries.iter().map(|t| t.outcome.as_str()).collect();
    assert_eq!(outcomes, ["interrupted", "ok"]);
    assert_eq!(sandbox.out_lines("attempts"), ["1", "2"]);
    assert_eq!(sandbox.hook_document(&id)["run"], run_json("run_kill"));
    drop(api);
    rt.shutdown_timeout(Duration::ZERO);
}
