//! What the hooks are told about enrichment (SPEC §5, §6): complete,
//! partial (and why), or none; the run fetched again until it has settled;
//! the logs put oldest first whatever order each page came in.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use steerhook::store::JobNext;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::prelude::*;
use crate::{queue_app, save_hook};

/// [`queue_app`] whose hook also keeps `$STEERHOOK_ENRICHMENT`, in
/// `out/<event id>.enrichment`.
fn app_telling(sandbox: &Sandbox, api: Option<&MockServer>) -> TestAppBuilder {
    queue_app(sandbox, api)
        .without_hooks()
        .hook(&save_hook(sandbox, SAVE_WITH_ENRICHMENT, ""))
        .stepped()
}

/// Saves the document to `$OUT/<event id>.json` and `$STEERHOOK_ENRICHMENT`
/// to `$OUT/<event id>.enrichment`.
const SAVE_WITH_ENRICHMENT: &str = r#"["/bin/sh", "-c", "cat > \"$OUT/$STEERHOOK_EVENT_ID.json\" && printf %s \"$STEERHOOK_ENRICHMENT\" > \"$OUT/$STEERHOOK_EVENT_ID.enrichment\""]"#;

/// What the hook was told: `(status, error code)` from the document, and
/// `STEERHOOK_ENRICHMENT`.
fn enrichment(sandbox: &Sandbox, id: &str) -> (String, Option<String>, String) {
    let doc = sandbox.hook_document(id);
    let e = &doc["enrichment"];
    (
        e["status"].as_str().unwrap_or_default().to_owned(),
        e["error"]["code"].as_str().map(str::to_owned),
        sandbox.read_out_string(&format!("{id}.enrichment")),
    )
}

/// What `steerhook events show ID` prints for the event.
async fn events_show(sandbox: &Sandbox, id: &str) -> String {
    let store = sandbox
        .db()
        .open(steerhook::store::Routing::default())
        .await;
    let detail = store.find_event(id.to_owned()).await.unwrap().unwrap();
    steerhook::ops::render_event(&detail)
}

/// The last attempt's error text of the event's fetch.
fn last_fetch_error(sandbox: &Sandbox, id: &str) -> String {
    let fetch = sandbox.db().job(id, "fetch");
    sandbox
        .db()
        .query_one::<Option<String>>(
            "SELECT error FROM attempts WHERE job_id = $1 ORDER BY id DESC LIMIT 1",
            &[&fetch.id],
        )
        .unwrap_or_default()
}

crate::backends! {
    #[tokio::test]
    async fn a_run_and_every_log_page_reach_the_hooks_as_complete(backend) {
        let api = MockServer::start().await;
        mount_runs(&api, FakeRuns::lines(450)).await;
        let sandbox = Sandbox::with_backend(backend);
        let app = app_telling(&sandbox, Some(&api)).spawn().await;
        let id = app.post_run("run_whole").await;
        app.drain(10).await;

        assert_eq!(
            enrichment(&sandbox, &id),
            ("complete".into(), None, "complete".into())
        );
        assert_eq!(
            sandbox.hook_document(&id)["enrichment"]["error"],
            Value::Null
        );
        assert_eq!(
            log_seqs(&sandbox.hook_document(&id)),
            (0..450).collect::<Vec<u64>>()
        );
        app.stop().await;
    }
}

crate::backends! {
    #[tokio::test]
    async fn a_logs_page_that_keeps_failing_gives_the_hooks_the_pages_before_it_marked_partial(backend) {
        // Its own run id on each backend: the captured log is the binary's.
        let run = unique("run_p500");
        let api = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(format!("/runs/{run}/logs")))
            .and(query_param("beforeLogCursor", "before:250"))
            .respond_with(ResponseTemplate::new(500).set_body_string("upstream exploded"))
            .with_priority(1)
            .mount(&api)
            .await;
        mount_runs(&api, FakeRuns::lines(450)).await;
        let sandbox = Sandbox::with_backend(backend);
        let app = app_telling(&sandbox, Some(&api))
            .queue("fetch_max_attempts = 3")
            .spawn()
            .await;
        let id = app.post_run(&run).await;

        for attempt in 1..=2 {
            let next = app.step_ran().await.1;
            assert!(
                matches!(next, JobNext::RetryAt(_)),
                "attempt {attempt}: {next:?}"
            );
            app.advance(Duration::from_secs(1));
        }
        assert_eq!(
            app.step_ran().await.1,
            JobNext::Failed,
            "the third gives up"
        );
        assert_eq!(
            requests_to(&api, &format!("/runs/{run}/logs")).await.len(),
            4,
            "page 1 once, page 2 three times"
        );
        app.drain(5).await;

        let doc = sandbox.hook_document(&id);
        assert_eq!(
            enrichment(&sandbox, &id),
            ("partial".into(), Some("HTTP_500".into()), "partial".into())
        );
        let message = doc["enrichment"]["error"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(message.contains("500"), "the error says what: {message}");
        assert_eq!(
            log_seqs(&doc),
            (250..450).collect::<Vec<u64>>(),
            "the page fetched before the failing one"
        );
        assert_eq!(
            sandbox.db().event_status(&id),
            "done",
            "a fetch that gave up does not by itself fail the event (SPEC §2)"
        );

        let last = last_fetch_error(&sandbox, &id);
        assert!(
            last.contains("gave up")
                && last.contains("enrichment partial")
                && !last.contains("will retry"),
            "the last attempt says what happens next: {last}"
        );
        let logs = captured_logs();
        let gave_up: Vec<&str> = logs
            .lines()
            // The product's own lines (the driver logs its statements too).
            .filter(|l| l.contains(" ERROR ") && l.contains(&run) && l.contains("gave up"))
            .collect();
        assert_eq!(gave_up.len(), 1, "one give-up line: {gave_up:?}");
        assert!(
            gave_up[0].contains("enrichment partial") && !gave_up[0].contains("will retry"),
            "{}",
            gave_up[0]
        );
        let shown = events_show(&sandbox, &id).await;
        for expected in [
            "fetch run and logs: gave up after 3 attempts; hooks ran with enrichment partial",
            "enrichment partial (HTTP_500)",
        ] {
            assert!(shown.contains(expected), "{expected:?} in:\n{shown}");
        }
        assert!(!shown.contains("will retry"), "{shown}");
        app.stop().await;
    }
}

crate::backends! {
    #[tokio::test]
    async fn a_logs_page_larger_than_the_client_reads_stops_paging_at_once_as_partial(backend) {
        let api = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/runs/run_huge/logs"))
            .and(query_param("beforeLogCursor", "before:250"))
            .respond_with(
                ResponseTemplate::new(200).set_body_raw(vec![b' '; 17 << 20], "application/json"),
            )
            .with_priority(1)
            .mount(&api)
            .await;
        mount_runs(&api, FakeRuns::lines(450)).await;
        let sandbox = Sandbox::with_backend(backend);
        let app = app_telling(&sandbox, Some(&api)).spawn().await;
        let id = app.post_run("run_huge").await;

        let next = app.step_ran().await.1;
        assert_eq!(next, JobNext::Failed, "not retried");
        assert_eq!(requests_to(&api, "/runs/run_huge/logs").await.len(), 2);
        app.drain(5).await;

        assert_eq!(
            enrichment(&sandbox, &id),
            (
                "partial".into(),
                Some("BODY_TOO_LARGE".into()),
                "partial".into()
            )
        );
        assert_eq!(
            log_seqs(&sandbox.hook_document(&id)),
            (250..450).collect::<Vec<u64>>()
        );
        assert_eq!(requests_to(&api, "/runs/run_huge/logs").await.len(), 2);
        app.stop().await;
    }
}

crate::backends! {
    #[tokio::test]
    async fn logs_past_max_log_bytes_stop_paging_and_the_hooks_get_the_newest_pages_marked_partial(backend) {
        let api = MockServer::start().await;
        mount_runs(&api, FakeRuns::lines(450)).await;
        let sandbox = Sandbox::with_backend(backend);
        // A page of 200 lines is about 10 KB: the first fits, the second not.
        let app = app_telling(&sandbox, Some(&api))
            .opensteer_lines("max_log_bytes = 15000")
            .spawn()
            .await;
        let id = app.post_run("run_bytes").await;
        app.drain(5).await;

        assert_eq!(
            enrichment(&sandbox, &id),
            (
                "partial".into(),
                Some("MAX_LOG_BYTES".into()),
                "partial".into()
            )
        );
        assert_eq!(
            log_seqs(&sandbox.hook_document(&id)),
            (250..450).collect::<Vec<u64>>()
        );
        assert_eq!(sandbox.db().job(&id, "fetch").state, "succeeded");
        app.stop().await;
    }
}

crate::backends! {
    #[tokio::test]
    async fn without_opensteer_the_hooks_get_enrichment_none_without_an_error(backend) {
        let sandbox = Sandbox::with_backend(backend);
        let app = app_telling(&sandbox, None).spawn().await;
        let id = app.post_run("run_bare").await;
        app.drain(5).await;

        let doc = sandbox.hook_document(&id);
        assert_eq!(doc["enrichment"], json!({"status": "none", "error": null}));
        assert_eq!(
            (doc["run"].clone(), doc["logs"].clone()),
            (Value::Null, Value::Null)
        );
        assert_eq!(sandbox.read_out_string(&format!("{id}.enrichment")), "none");
        app.stop().await;
    }
}

/// Serves the run with `status(n)` for its n-th call (0-based), and the logs as the healthy fake.
fn run_answers(
    status: impl Fn(usize) -> Option<&'static str> + Send + Sync + 'static,
) -> impl wiremock::Respond {
    let calls = Arc::new(AtomicUsize::new(0));
    move |r: &Request| {
        if r.url.path().ends_with("/logs") {
            return serve_run(r, 5, &Shape::default());
        }
        let n = calls.fetch_add(1, Ordering::SeqCst);
        match status(n) {
            Some(s) => ResponseTemplate::new(200)
                .set_body_json(json!({"id": "run_settle", "status": s, "scraper": "shop-prices"})),
            None => ResponseTemplate::new(404).set_body_string("no such run"),
        }
    }
}

crate::backends! {
    #[tokio::test]
    async fn a_run_the_api_still_reports_running_is_fetched_again_and_its_logs_only_once_it_has_settled(backend) {
        let api = MockServer::start().await;
        mount_runs(
            &api,
            run_answers(|n| Some(if n < 2 { "running" } else { "succeeded" })),
        )
        .await;
        let sandbox = Sandbox::with_backend(backend);
        let app = app_telling(&sandbox, Some(&api)).spawn().await;
        let id = app.post_run("run_settle").await;
        let t0 = app.now_ms();

        assert_eq!(app.step_ran().await.1, JobNext::RetryAt(t0 + 1_000));
        assert_eq!(requests_to(&api, "/runs/run_settle/logs").await.len(), 0);
        assert_eq!(sandbox.db().job(&id, "deliver").state, "blocked");
        let fetch = sandbox.db().job(&id, "fetch");
        let tries = sandbox.db().attempts(fetch.id);
        assert_eq!(
            (tries[0].outcome.as_str(), tries[0].error_code.as_deref()),
            ("retry", Some("RUN_NOT_SETTLED"))
        );

        app.advance(Duration::from_secs(1));
        assert_eq!(
            app.step_ran().await.1,
            JobNext::RetryAt(t0 + 3_000),
            "a short backoff"
        );
        app.advance(Duration::from_secs(2));
        assert_eq!(app.step_ran().await.1, JobNext::Succeeded);
        let run_calls = requests_to(&api, "/runs/run_settle")
            .await
            .into_iter()
            .filter(|r| !r.url.path().ends_with("/logs"))
            .count();
        assert_eq!(run_calls, 3);
        app.drain(5).await;

        let doc = sandbox.hook_document(&id);
        assert_eq!(doc["run"]["status"], json!("succeeded"));
        assert_eq!(log_seqs(&doc), [0, 1, 2, 3, 4]);
        assert_eq!(
            enrichment(&sandbox, &id),
            ("complete".into(), None, "complete".into())
        );
        app.stop().await;
    }
}

crate::backends! {
    #[tokio::test]
    async fn a_run_still_running_after_settle_secs_goes_to_the_hooks_as_partial_run_not_settled(backend) {
        let api = MockServer::start().await;
        mount_runs(&api, run_answers(|_| Some("running"))).await;
        let sandbox = Sandbox::with_backend(backend);
        let app = app_telling(&sandbox, Some(&api))
            .opensteer_lines("settle_secs = 3")
            .spawn()
            .await;
        let id = app.post_run("run_settle").await;
        let t0 = app.now_ms();

        assert_eq!(app.step_ran().await.1, JobNext::RetryAt(t0 + 1_000));
        app.advance(Duration::from_secs(1));
        assert_eq!(
            app.step_ran().await.1,
            JobNext::RetryAt(t0 + 3_000),
            "never past the window"
        );
        app.advance(Duration::from_secs(2));
        assert_eq!(app.step_ran().await.1, JobNext::Succeeded);
        app.drain(5).await;

        let doc = sandbox.hook_document(&id);
        assert_eq!(doc["run"]["status"], json!("running"), "the run as it is");
        assert_eq!(
            enrichment(&sandbox, &id),
            (
                "partial".into(),
                Some("RUN_NOT_SETTLED".into()),
                "partial".into()
            )
        );
        assert_eq!(sandbox.db().event_status(&id), "done");
        app.stop().await;
    }
}

crate::backends! {
    #[tokio::test]
    async fn a_run_the_api_does_not_know_yet_is_asked_for_again_and_reaches_the_hooks_once_it_does(backend) {
        let api = MockServer::start().await;
        mount_runs(&api, run_answers(|n| (n >= 1).then_some("succeeded"))).await;
        let sandbox = Sandbox::with_backend(backend);
        let app = app_telling(&sandbox, Some(&api)).spawn().await;
        let id = app.post_run("run_settle").await;
        let t0 = app.now_ms();

        assert_eq!(
            app.step_ran().await.1,
            JobNext::RetryAt(t0 + 1_000),
            "a 404 within settle_secs is not final"
        );
        app.advance(Duration::from_secs(1));
        assert_eq!(app.step_ran().await.1, JobNext::Succeeded);
        app.drain(5).await;
        assert_eq!(
            enrichment(&sandbox, &id),
            ("complete".into(), None, "complete".into())
        );
        assert_eq!(
            sandbox.hook_document(&id)["run"]["status"],
            json!("succeeded")
        );
        app.stop().await;
    }
}

crate::backends! {
    #[tokio::test]
    async fn a_run_still_unknown_after_settle_secs_is_final_and_the_hooks_get_none(backend) {
        let api = MockServer::start().await;
        mount_runs(&api, run_answers(|_| None)).await;
        let sandbox = Sandbox::with_backend(backend);
        let app = app_telling(&sandbox, Some(&api))
            .opensteer_lines("settle_secs = 2")
            .spawn()
            .await;
        let id = app.post_run("run_settle").await;
        let t0 = app.now_ms();

        assert_eq!(app.step_ran().await.1, JobNext::RetryAt(t0 + 1_000));
        app.advance(Duration::from_secs(1));
        assert_eq!(app.step_ran().await.1, JobNext::RetryAt(t0 + 2_000));
        app.advance(Duration::from_secs(1));
        assert_eq!(
            app.step_ran().await.1,
            JobNext::Failed,
            "now a 404 is final"
        );
        app.drain(5).await;

        let doc = sandbox.hook_document(&id);
        assert_eq!(
            (doc["run"].clone(), doc["logs"].clone()),
            (Value::Null, Value::Null)
        );
        assert_eq!(
            enrichment(&sandbox, &id),
            ("none".into(), Some("HTTP_404".into()), "none".into())
        );
        let last = last_fetch_error(&sandbox, &id);
        assert!(
            last.contains("enrichment none") && !last.contains("will retry"),
            "{last}"
        );
        app.stop().await;
    }
}

/// A logs page whose entries come newest first, each with a timestamp
/// written in a different way (SPEC §5 lists them).
fn newest_first_page(total: usize, limit: usize, before: usize, stamped: bool) -> Value {
    let end = before.min(total);
    let start = end.saturating_sub(limit);
    // 2026-01-01T00:00:00Z, plus i seconds.
    const BASE: u64 = 1_767_225_600;
    let entries: Vec<Value> = (start..end)
        .rev()
        .map(|i| {
            let mut e = json!({"seq": i, "message": format!("line {i}")});
            if stamped {
                let secs = BASE + i as u64;
                let (key, value) = match i % 5 {
                    0 => ("ts", json!(format_rfc3339(secs, "Z"))),
                    1 => ("timestamp", json!(secs * 1000)),
                    2 => ("time", json!(secs)),
                    // Two hours ahead of UTC: the same instant.
                    3 => ("createdAt", json!(format_rfc3339(secs + 7_200, "+02:00"))),
                    // Unix seconds with a fraction.
                    _ => ("ts", serde_json::from_str(&format!("{secs}.250")).unwrap()),
                };
                e[key] = value;
            }
            e
        })
        .collect();
    let mut page = json!({ "logs": entries });
    if start > 0 {
        page["nextCursor"] = json!(format!("before:{start}"));
    }
    page
}

/// `secs` as `YYYY-MM-DDTHH:MM:SS<zone>` (days since 1970 by the civil calendar).
fn format_rfc3339(secs: u64, zone: &str) -> String {
    let t = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs))
        .to_string();
    format!("{}{zone}", t.trim_end_matches('Z'))
}

async fn serve_newest_first(api: &MockServer, stamped: bool) {
    mount_runs(api, move |r: &Request| {
        if !r.url.path().ends_with("/logs") {
            return serve_run(r, 0, &Shape::default());
        }
        let before = r
            .url
            .query_pairs()
            .find(|(k, _)| k == "beforeLogCursor")
            .map_or(450, |(_, v)| {
                v.trim_start_matches("before:").parse().unwrap()
            });
        ResponseTemplate::new(200).set_body_json(newest_first_page(450, 200, before, stamped))
    })
    .await;
}

crate::backends! {
    #[tokio::test]
    async fn entries_sent_newest_first_within_each_page_reach_the_hook_oldest_first_by_their_timestamps(backend) {
        let api = MockServer::start().await;
        serve_newest_first(&api, true).await;
        let sandbox = Sandbox::with_backend(backend);
        let app = queue_app(&sandbox, Some(&api)).stepped().spawn().await;
        let id = app.post_run("run_order").await;
        app.drain(5).await;

        assert_eq!(
            log_seqs(&sandbox.hook_document(&id)),
            (0..450).collect::<Vec<u64>>()
        );
        app.stop().await;
    }
}

crate::backends! {
    #[tokio::test]
    async fn entries_without_timestamps_keep_each_pages_order_as_sent_oldest_page_first(backend) {
        let api = MockServer::start().await;
        serve_newest_first(&api, false).await;
        let sandbox = Sandbox::with_backend(backend);
        let app = queue_app(&sandbox, Some(&api)).stepped().spawn().await;
        let id = app.post_run("run_order").await;
        app.drain(5).await;

        let expected: Vec<u64> = (0..50)
            .rev()
            .chain((50..250).rev())
            .chain((250..450).rev())
            .collect();
        assert_eq!(log_seqs(&sandbox.hook_document(&id)), expected);
        app.stop().await;
    }
}
