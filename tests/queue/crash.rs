//! A daemon that dies mid-job loses nothing: the next start runs the job
//! again (SPEC §7, at-least-once). On SQLite the next start finds the job
//! left `running` and runs it at once; on PostgreSQL, where it cannot tell
//! its predecessor's jobs from those of another daemon still at work, the
//! job's lease decides (`queue.lease_secs`).

use std::time::Duration;

use steerhook::dispatch::Outcome;
use wiremock::MockServer;

use crate::support::prelude::*;
use crate::{queue_app, save_hook};

/// Sleeps on its first attempt (long enough to be killed), then saves the
/// document; records every attempt number in `$OUT/attempts`.
const SLOW_FIRST: &str = r#"["/bin/sh", "-c", "echo \"$STEERHOOK_ATTEMPT\" >> \"$OUT/attempts\"; if [ \"$STEERHOOK_ATTEMPT\" = 1 ]; then sleep 30; fi; cat > \"$OUT/$STEERHOOK_EVENT_ID.json\""]"#;

/// `queue.lease_secs` of these tests: the shortest allowed, so that the
/// PostgreSQL variant of the real loop waits three seconds for the lease,
/// not a minute.
const LEASE_SECS: u64 = 3;

crate::backends! {
    #[tokio::test]
    async fn a_delivery_cut_off_mid_hook_is_recorded_as_interrupted_and_runs_again_after_restart(backend) {
        let api = MockServer::start().await;
        mount_runs(&api, FakeRuns::lines(3)).await;
        let sandbox = Sandbox::with_backend(backend);
        let setup = queue_app(&sandbox, Some(&api))
            .without_hooks()
            .hook(&save_hook(&sandbox, SLOW_FIRST, ""))
            .queue(&format!("lease_secs = {LEASE_SECS}"));
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
        if backend == Backend::Postgres {
            // For all this start knows, another daemon runs the job: it
            // waits for the lease (the claim reads the app's clock), and
            // knows when to look again: when the lease runs out.
            let lease_until: i64 = sandbox
                .db()
                .query_one("SELECT lease_until FROM jobs WHERE id = $1", &[&deliver.id]);
            assert_eq!(lease_until, app.now_ms() + LEASE_SECS as i64 * 1000);
            let early = app.step().await;
            assert_eq!(
                early,
                Outcome::Idle { next_due_at: Some(lease_until) },
                "the job is not taken before its lease runs out, and is due then"
            );
            app.advance(Duration::from_secs(LEASE_SECS));
        }
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
    fn a_worker_killed_mid_hook_leaves_the_job_to_the_next_start_which_completes_it(backend) {
        let sandbox = Sandbox::with_backend(backend);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let api = rt.block_on(MockServer::start());
        rt.block_on(mount_runs(&api, FakeRuns::lines(3)));
        let setup = queue_app(&sandbox, Some(&api))
            .without_hooks()
            .hook(&save_hook(&sandbox, SLOW_FIRST, ""))
            .queue(&format!("lease_secs = {LEASE_SECS}"));

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
}
