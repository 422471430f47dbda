//! A hook's `match` (SPEC §3) against the fetched run, and what a failed
//! delivery writes to the log.

use std::time::Duration;

use wiremock::MockServer;

use crate::helpers::*;

/// A second hook, appended after the default one: touches `out/<name>-ran`.
fn second_hook(sandbox: &Sandbox, name: &str, route: &str) -> String {
    format!(
        "[[hook]]\nname = \"{name}\"\nkind = \"shell\"\nevents = [\"run.succeeded\"]\n\
         command = [\"/bin/sh\", \"-c\", \"touch \\\"$OUT/{name}-ran\\\"\"]\nenv = {{ OUT = {:?} }}\n{route}\n",
        sandbox.out()
    )
}

#[tokio::test]
async fn match_on_the_fetched_run_delivers_its_scraper_and_skips_the_others_without_starting_them()
{
    let api = MockServer::start().await;
    mount_runs(&api, FakeRuns::lines(3)).await;
    let sandbox = Sandbox::new();
    // Only the fetched run has a scraper ("shop-prices"): the payload does not.
    let setup = Setup::new(&api).hook(&format!(
        "match = {{ \"/run/scraper\" = \"shop-prices\" }}\n{}",
        second_hook(
            &sandbox,
            "other",
            "match = { \"/run/scraper\" = [\"news\", \"jobs\"] }"
        )
    ));
    let app = spawn_app(&sandbox, &setup, Some(manual_clock())).await;
    let id = app.post_run("run_routed").await;
    app.drain(10).await;

    let doc = sandbox.hook_document(&id);
    assert_eq!(
        doc["run"]["scraper"], "shop-prices",
        "evaluated after the fetch"
    );
    assert!(
        !sandbox.out().join("other-ran").exists(),
        "the non-matching hook was started"
    );
    let deliveries: Vec<(String, i64)> = {
        let db = sandbox.db();
        let mut stmt = db
            .prepare("SELECT state, attempts FROM jobs WHERE kind = 'deliver' ORDER BY hook")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(
        deliveries,
        [("skipped".to_owned(), 1), ("succeeded".to_owned(), 1)],
        "other skipped, save delivered"
    );
    let reason: String = sandbox
        .db()
        .query_row(
            "SELECT error FROM attempts WHERE outcome = 'skipped'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        reason,
        "run did not match /run/scraper = one of news, jobs (it is \"shop-prices\")"
    );
    assert_eq!(event_status(&sandbox, &id).0, "done");
    assert!(
        captured_logs().lines().any(|l| l.contains(&id)
            && l.contains("skipped, the hook was not started: run did not match /run/scraper")),
        "one line says why"
    );
    app.stop().await;
}

/// One log line per attempt, and values as a user writes them: no
/// `Some(..)`, no `None`, no Rust type names.
#[tokio::test]
async fn each_failed_attempt_is_logged_once_with_plain_values() {
    let sandbox = Sandbox::new();
    let setup = Setup::without_api()
        .hook_command(r#"["/nonexistent/steerhook-etl"]"#)
        .hook("max_attempts = 2");
    let app = spawn_app(&sandbox, &setup, Some(manual_clock())).await;
    let id = app.post_run("run_spawn_failed").await;
    app.step().await;
    app.advance(Duration::from_secs(2));
    app.step().await;
    assert_eq!(event_status(&sandbox, &id).0, "failed");
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
