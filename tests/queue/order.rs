//! The order of work (SPEC §5, §7): an event's fetch runs before its
//! deliveries, and events reach a hook in the order they arrived.

use steerhook::dispatch::Outcome;
use wiremock::MockServer;

use crate::support::prelude::*;
use crate::{queue_app, save_hook, APPEND_ID};

crate::backends! {
    #[tokio::test]
    async fn each_fetch_runs_before_its_delivery_and_events_reach_the_hook_in_arrival_order(backend) {
        let api = MockServer::start().await;
        mount_runs(&api, FakeRuns::lines(1)).await;
        let sandbox = Sandbox::with_backend(backend);
        let app = queue_app(&sandbox, Some(&api))
            .without_hooks()
            .hook(&save_hook(&sandbox, APPEND_ID, ""))
            .stepped()
            .spawn()
            .await;
        // Not in the order of their names or ids.
        let mut arrived = Vec::new();
        for run in ["run_c", "run_a", "run_b"] {
            arrived.push(app.post_run(run).await);
        }

        let mut ran = Vec::new();
        while let Outcome::Ran { job, .. } = app.step().await {
            ran.push((job.kind.to_string(), job.event_seq));
        }
        let seq = |id: &String| -> i64 {
            sandbox
                .db()
                .query_one("SELECT seq FROM events WHERE id = $1", &[id])
        };
        let expected: Vec<(String, i64)> = arrived
            .iter()
            .flat_map(|id| [("fetch".to_owned(), seq(id)), ("deliver".to_owned(), seq(id))])
            .collect();
        assert_eq!(ran, expected, "oldest job first: a fetch, then the delivery it released");
        assert_eq!(sandbox.out_lines("ids"), arrived, "arrival order");
        app.stop().await;
    }
}
