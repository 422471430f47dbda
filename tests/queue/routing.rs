//! A hook's `match` (SPEC §3) against the fetched run, and what a failed
//! delivery writes to the log.

use std::time::Duration;

use wiremock::MockServer;

use crate::support::prelude::*;
use crate::{queue_app, save_hook, SAVE_DOCUMENT};

crate::backends! {
    #[tokio::test]
    async fn match_on_the_fetched_run_delivers_its_scraper_and_skips_the_others_without_starting_them(backend) {
        let api = MockServer::start().await;
        mount_runs(&api, FakeRuns::lines(3)).await;
        let sandbox = Sandbox::with_backend(backend);
        // Only the fetched run has a scraper ("shop-prices"): the payload does not.
        let app = queue_app(&sandbox, Some(&api))
            .without_hooks()
            .hook(&save_hook(
                &sandbox,
                SAVE_DOCUMENT,
                "match = { \"/run/scraper\" = \"shop-prices\" }",
            ))
            .hook(&sandbox.shell_hook(
                "other",
                &["run.succeeded"],
                "touch \"$OUT/other-ran\"",
                "match = { \"/run/scraper\" = [\"news\", \"jobs\"] }",
            ))
            .stepped()
            .spawn()
            .await;
        let id = app.post_run("run_routed").await;
        app.drain(10).await;

        let doc = sandbox.hook_document(&id);
        assert_eq!(doc["run"]["scraper"], "shop-prices", "evaluated after the fetch");
        assert!(
            !sandbox.out().join("other-ran").exists(),
            "the non-matching hook was started"
        );
        let db = sandbox.db();
        assert_eq!(db.delivery_job(&id, "save").state, "succeeded");
        let other = db.delivery_job(&id, "other");
        assert_eq!((other.state.as_str(), other.attempts), ("skipped", 1));
        let attempts = db.attempts(other.id);
        assert_eq!(attempts[0].outcome, "skipped");
        assert_eq!(
            attempts[0].error.as_deref(),
            Some("run did not match /run/scraper = one of news, jobs (it is \"shop-prices\")")
        );
        assert_eq!(db.event_status(&id), "done");
        assert!(
            captured_logs().lines().any(|l| l.contains(&id)
                && l.contains("skipped, the hook was not started: run did not match /run/scraper")),
            "one line says why"
        );
        app.stop().await;
    }
}

/// One log line per attempt, and values as a user writes them: no
/// `Some(..)`, no `None`, no Rust type names.
#[tokio::test]
async fn each_failed_attempt_is_logged_once_with_plain_values() {
    let sandbox = Sandbox::new();
    let app = queue_app(&sandbox, None)
        .without_hooks()
        .hook(&save_hook(
            &sandbox,
            r#"["/nonexistent/steerhook-etl"]"#,
            "max_attempts = 2",
        ))
        .stepped()
        .spawn()
        .await;
    let id = app.post_run("run_spawn_failed").await;
    app.step().await;
    app.advance(Duration::from_secs(2));
    app.step().await;
    assert_eq!(sandbox.db().event_status(&id), "failed");
    app.stop().await;

    let logs = captured_logs();
    let ours: Vec<&str> = logs.lines().filter(|l| l.contains(&id)).collect();
    let attempts: Vec<&&str> = ours
        .iter()
        .filter(|l| l.contains("delivery attempt failed") || l.contains("delivery failed for good"))
        .collect();
    assert_eq!(
        attempts.len(),
        2,
        "one line per attempt:\n{}",
        ours.join("\n")
    );
    assert!(
        attempts.iter().all(|l| l.contains("SPAWN_FAILED")),
        "{attempts:#?}"
    );
    for line in &ours {
        for debug in [
            "Some(",
            "None",
            "SpawnFailed",
            "Spawn(",
            "ShellFailure",
            "\\\"",
        ] {
            assert!(!line.contains(debug), "{debug} in the log: {line}");
        }
    }
}
