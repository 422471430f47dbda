//! A storage fault while the worker records an attempt delays the record; it
//! does not drop it (which would leave the job `running` until its lease ran
//! out, minutes later, and then run the hook a second time).

use wiremock::MockServer;

use crate::support::prelude::*;
use crate::{queue_app, save_hook, APPEND_ID};

const WARNING: &str = "cannot store the attempt's outcome yet; retrying";

#[tokio::test]
async fn a_delivery_whose_outcome_cannot_be_stored_is_recorded_once_the_fault_clears_and_runs_once()
{
    let api = MockServer::start().await;
    mount_runs(&api, FakeRuns::lines(3)).await;
    let sandbox = Sandbox::new();
    let setup = queue_app(&sandbox, Some(&api))
        .without_hooks()
        .hook(&save_hook(&sandbox, APPEND_ID, ""));
    let app = setup.clone().stepped().spawn().await;
    let id = app.post_run("run_fault").await;
    app.step().await; // the fetch
    let warnings_before = captured_logs().matches(WARNING).count();

    // Every attempt record fails from now on, the way a full disk would.
    let db = sandbox.db().sqlite_connection();
    db.execute_batch(
        "CREATE TRIGGER sabotage BEFORE INSERT ON attempts
         BEGIN SELECT RAISE(FAIL, 'database or disk is full (sabotage)'); END;",
    )
    .unwrap();

    // The delivery step runs the hook, then keeps trying to store the outcome;
    // the fault is cleared once a failed try is in the log.
    let clear_the_fault = async {
        wait_for(DEADLINE, "a failed record in the log", || {
            (captured_logs().matches(WARNING).count() > warnings_before).then_some(())
        })
        .await;
        assert_eq!(
            sandbox.db().job(&id, "deliver").state,
            "running",
            "the outcome is not stored while the fault lasts"
        );
        db.execute_batch("DROP TRIGGER sabotage").unwrap();
    };
    let (outcome, ()) = tokio::join!(app.step(), clear_the_fault);

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
