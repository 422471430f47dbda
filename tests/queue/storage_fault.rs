//! A storage fault while the worker records an attempt delays the record; it
//! does not drop it (which would leave the job `running` until its lease ran
//! out, minutes later, and then run the hook a second time).

use wiremock::MockServer;

use crate::helpers::*;

const WARNING: &str = "cannot store the attempt's outcome yet; retrying";

#[tokio::test]
async fn a_delivery_whose_outcome_cannot_be_stored_is_recorded_once_the_fault_clears_and_runs_once()
{
    let api = MockServer::start().await;
    mount_runs(&api, FakeRuns::lines(3)).await;
    let sandbox = Sandbox::new();
    let setup = Setup::new(&api).hook_command(APPEND_ID);
    let app = spawn_app(&sandbox, &setup, Some(manual_clock())).await;
    let id = app.post_run("run_fault").await;
    app.step().await; // the fetch
    let warnings_before = captured_logs().matches(WARNING).count();

    // Every attempt record fails from now on, the way a full disk would.
    let db = rusqlite::Connection::open(sandbox.db_path()).unwrap();
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
            job(&sandbox, &id, "deliver").state,
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
    let delivery = job(&sandbox, &id, "deliver");
    assert_eq!(delivery.state, "succeeded", "{delivery:?}");
    let tries = attempts(&sandbox, delivery.id);
    assert_eq!(tries.len(), 1, "one attempt, stored once: {tries:?}");
    assert_eq!(
        sandbox.delivered_ids(),
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
