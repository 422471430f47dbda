//! A daemon that dies mid-job loses nothing: the next start runs the job
//! again (SPEC §7, at-least-once).

use std::time::Duration;

use wiremock::MockServer;

use crate::helpers::*;

/// Sleeps on its first attempt (long enough to be killed), then saves the
/// document; records every attempt number in `$OUT/attempts`.
const SLOW_FIRST: &str = r#"["/bin/sh", "-c", "echo \"$STEERHOOK_ATTEMPT\" >> \"$OUT/attempts\"; if [ \"$STEERHOOK_ATTEMPT\" = 1 ]; then sleep 30; fi; cat > \"$OUT/$STEERHOOK_EVENT_ID.json\""]"#;

fn hook_attempts(sandbox: &Sandbox) -> Vec<String> {
    std::fs::read_to_string(sandbox.out().join("attempts"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_delivery_cut_off_mid_hook_is_recorded_as_interrupted_and_runs_again_after_restart() {
    let api = MockServer::start().await;
    mount_runs(&api, FakeRuns::lines(3)).await;
    let sandbox = Sandbox::new();
    let setup = Setup::new(&api).hook_command(SLOW_FIRST);
    let clock = manual_clock();
    let app = spawn_app(&sandbox, &setup, Some(clock.clone())).await;
    let id = app.post_run("run_crash").await;
    app.step().await; // the fetch

    // The delivery step is dropped as soon as the hook has started: for the
    // database that is a process that died mid-job (the hook is killed with
    // its process group when its future is dropped).
    tokio::select! {
        o = app.step() => panic!("the slow hook finished: {o:?}"),
        _ = wait_for_async(DEADLINE, "the hook to start", || async {
            (!hook_attempts(&sandbox).is_empty()).then_some(())
        }) => {}
    }
    let deliver = job(&sandbox, &id, "deliver");
    assert_eq!(deliver.state, "running");
    app.stop().await;

    let app = spawn_app(&sandbox, &setup, Some(clock)).await;
    app.drain(5).await;
    let tries = attempts(&sandbox, deliver.id);
    let outcomes: Vec<(i64, &str, Option<&str>)> = tries
        .iter()
        .map(|t| (t.attempt, t.outcome.as_str(), t.error_code.as_deref()))
        .collect();
    assert_eq!(
        outcomes,
        [(1, "interrupted", Some("INTERRUPTED")), (2, "ok", None)]
    );
    assert_eq!(hook_attempts(&sandbox), ["1", "2"]);
    assert_eq!(job(&sandbox, &id, "deliver").state, "succeeded");
    assert_eq!(event_status(&sandbox, &id).0, "done");
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
    let setup = Setup::new(&api).hook_command(SLOW_FIRST);

    let first = tokio::runtime::Runtime::new().unwrap();
    let id = first.block_on(async {
        let app = spawn_app(&sandbox, &setup, None).await;
        let id = app.post_run("run_kill").await;
        wait_for_async(DEADLINE, "the hook to start", || async {
            (!hook_attempts(&sandbox).is_empty()).then_some(())
        })
        .await;
        // Dropped without a shutdown: the tasks stay behind in the runtime.
        drop(app);
        id
    });
    first.shutdown_timeout(Duration::ZERO);
    let deliver = job(&sandbox, &id, "deliver");
    assert_eq!(deliver.state, "running", "the kill left the job running");

    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        let app = spawn_app(&sandbox, &setup, None).await;
        wait_for(DEADLINE, "the event to be done", || {
            (event_status(&sandbox, &id).0 == "done").then_some(())
        })
        .await;
        app.stop().await;
    });
    let tries = attempts(&sandbox, deliver.id);
    let outcomes: Vec<&str> = tries.iter().map(|t| t.outcome.as_str()).collect();
    assert_eq!(outcomes, ["interrupted", "ok"]);
    assert_eq!(hook_attempts(&sandbox), ["1", "2"]);
    assert_eq!(sandbox.hook_document(&id)["run"], run_json("run_kill"));
    drop(api);
    rt.shutdown_timeout(Duration::ZERO);
}
