//! A storage fault while the worker records an attempt delays the record; it
//! does not drop it (which would leave the job `running` until its lease ran
//! out, minutes later, and then run the hook a second time).

use wiremock::MockServer;

use crate::support::fault::StoreFault;
use crate::support::prelude::*;
use crate::{queue_app, save_hook};

const WARNING: &str = "cannot store the attempt's outcome yet; retrying";

/// Appends the event id to `$OUT/ids`, then waits (at most 30 s) for
/// `$OUT/go`: the test takes the database away while the hook runs.
const APPEND_ID_THEN_WAIT: &str = r#"["/bin/sh", "-c", "echo \"$STEERHOOK_EVENT_ID\" >> \"$OUT/ids\"; i=0; while [ ! -e \"$OUT/go\" ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done"]"#;

crate::backends! {
    /// The fault: on SQLite a trigger fails every attempt record as a full
    /// disk would; on PostgreSQL the server is cut away.
    #[tokio::test]
    async fn a_delivery_whose_outcome_cannot_be_stored_is_recorded_once_the_fault_clears_and_runs_once(backend) {
        let api = MockServer::start().await;
        mount_runs(&api, FakeRuns::lines(3)).await;
        let sandbox = Sandbox::with_backend(backend);
        let setup = queue_app(&sandbox, Some(&api))
            .without_hooks()
            .hook(&save_hook(&sandbox, APPEND_ID_THEN_WAIT, ""));
        let (setup, fault) = StoreFault::around(setup, sandbox.db()).await;
        let app = setup.stepped().spawn().await;
        let id = app.post_run("run_fault").await;
        app.step().await; // the fetch
        let warnings_before = captured_logs().matches(WARNING).count();

        // The delivery step runs the hook, then keeps trying to store the
        // outcome; the fault starts while the hook runs and is cleared once a
        // failed try is in the log.
        let fault_while_the_hook_runs = async {
            wait_for(DEADLINE, "the hook to start", || {
                (!sandbox.out_lines("ids").is_empty()).then_some(())
            })
            .await;
            fault.start(sandbox.db()).await;
            std::fs::write(sandbox.out().join("go"), "").unwrap();
            wait_for(DEADLINE, "a failed record in the log", || {
                (captured_logs().matches(WARNING).count() > warnings_before).then_some(())
            })
            .await;
            assert_eq!(
                sandbox.db().job(&id, "deliver").state,
                "running",
                "the outcome is not stored while the fault lasts"
            );
            fault.clear(sandbox.db()).await;
        };
        let (outcome, ()) = tokio::join!(app.step(), fault_while_the_hook_runs);

        assert!(
            matches!(outcome, steerhook::dispatch::Outcome::Ran { .. }),
            "{outcome:?}"
        );
        let delivery = sandbox.db().job(&id, "deliver");
        assert_eq!(delivery.state, "succeeded", "{delivery:?}");
        let tries = sandbox.db().attempts(delivery.id);
        assert_eq!(tries.len(), 1, "one attempt, stored once: {tries:?}");
        assert_eq!(
            sandbox.out_lines("ids"),
            vec![id.clone()],
            "the hook ran once"
        );
        // Nothing left to run: the job is not picked up again.
        assert!(matches!(
            app.step().await,
            steerhook::dispatch::Outcome::Idle { .. }
        ));
        app.stop().await;
    }
}
