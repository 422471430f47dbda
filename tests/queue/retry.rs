//! Upstream faults delay the fetch; they never drop the event (SPEC §7).

use std::time::Duration;

use serde_json::json;
use steerhook::dispatch::Outcome;
use steerhook::store::JobNext;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::queue_app;
use crate::support::prelude::*;

/// Answers `GET {p}` with `answer` once, before the healthy fake.
async fn first_call_to(server: &MockServer, p: &str, answer: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path(p.to_owned()))
        .respond_with(answer)
        .up_to_n_times(1)
        .with_priority(1)
        .mount(server)
        .await;
}

fn ran(o: &Outcome) -> (String, i64, JobNext) {
    match o {
        Outcome::Ran { job, next } => (job.kind.to_string(), job.id, *next),
        Outcome::Idle { .. } => panic!("expected a job to run, the queue was idle"),
    }
}

crate::backends! {
    #[tokio::test]
    async fn a_429_with_retry_after_holds_every_fetch_until_it_has_passed(backend) {
        let api = MockServer::start().await;
        first_call_to(
            &api,
            "/runs/run_a",
            api_error(429, "CLOUD_RATE_LIMITED").insert_header("retry-after", "2"),
        )
        .await;
        mount_runs(&api, FakeRuns::lines(5)).await;
        let sandbox = Sandbox::with_backend(backend);
        let app = queue_app(&sandbox, Some(&api)).stepped().spawn().await;
        let a = app.post_run("run_a").await;
        let b = app.post_run("run_b").await;
        let t0 = app.now_ms();

        let (kind, id, next) = ran(&app.step().await);
        let a_fetch = sandbox.db().job(&a, "fetch").id;
        assert_eq!((kind.as_str(), id), ("fetch", a_fetch));
        let JobNext::RetryAt(at) = next else {
            panic!("a 429 is retried: {next:?}")
        };
        assert!(
            at - t0 >= 2_000,
            "due {} ms later, before Retry-After",
            at - t0
        );
        let tries = sandbox.db().attempts(a_fetch);
        assert_eq!(tries[0].outcome, "retry");
        assert_eq!(tries[0].error_code.as_deref(), Some("CLOUD_RATE_LIMITED"));

        app.advance(Duration::from_millis(1_900));
        let paused = app.step().await;
        assert!(
            matches!(paused, Outcome::Idle { .. }),
            "nothing is fetched during the pause, not even another event's run: {paused:?}"
        );
        assert_eq!(sandbox.db().job(&b, "fetch").attempts, 0);
        assert_eq!(requests_to(&api, "/runs/run_b").await.len(), 0);
        assert_eq!(sandbox.db().job(&a, "deliver").state, "blocked");

        app.advance(Duration::from_millis(100));
        let (kind, id, next) = ran(&app.step().await);
        assert_eq!(
            (kind.as_str(), id, next),
            ("fetch", a_fetch, JobNext::Succeeded),
            "the limited fetch runs first once Retry-After has passed"
        );
        app.drain(10).await;
        for ev in [&a, &b] {
            assert_eq!(sandbox.db().event_status(ev), "done");
            assert_eq!(
                sandbox.hook_document(ev)["run"]["status"],
                json!("succeeded")
            );
        }
        app.stop().await;
    }
}

crate::backends! {
    #[tokio::test]
    async fn a_500_is_retried_with_backoff_and_the_hook_gets_the_run(backend) {
        let api = MockServer::start().await;
        first_call_to(
            &api,
            "/runs/run_500",
            ResponseTemplate::new(500).set_body_string("<html>oops</html>"),
        )
        .await;
        mount_runs(&api, FakeRuns::lines(5)).await;
        let sandbox = Sandbox::with_backend(backend);
        let app = queue_app(&sandbox, Some(&api)).stepped().spawn().await;
        let id = app.post_run("run_500").await;
        let t0 = app.now_ms();

        let (kind, fetch_id, next) = ran(&app.step().await);
        assert_eq!(kind, "fetch");
        let JobNext::RetryAt(at) = next else {
            panic!("a 500 is retried: {next:?}")
        };
        assert!(
            (t0..=t0 + 1_000).contains(&at),
            "backoff within queue.backoff_base_secs: {}",
            at - t0
        );
        assert_eq!(sandbox.db().job(&id, "deliver").state, "blocked");

        app.advance(Duration::from_secs(1));
        let (_, again, next) = ran(&app.step().await);
        assert_eq!((again, next), (fetch_id, JobNext::Succeeded));
        let tries = sandbox.db().attempts(fetch_id);
        let outcomes: Vec<(i64, &str, Option<&str>)> = tries
            .iter()
            .map(|t| (t.attempt, t.outcome.as_str(), t.error_code.as_deref()))
            .collect();
        assert_eq!(outcomes, [(1, "retry", Some("HTTP_500")), (2, "ok", None)]);

        app.drain(5).await;
        let doc = sandbox.hook_document(&id);
        assert_eq!(doc["run"], run_json("run_500"));
        assert_eq!(log_seqs(&doc), [0, 1, 2, 3, 4]);
        app.stop().await;
    }
}

crate::backends! {
    #[tokio::test]
    async fn a_fetch_that_fails_mid_paging_resumes_at_the_failed_page_and_stores_each_entry_once(backend) {
        let api = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/runs/run_mid/logs"))
            .and(query_param("beforeLogCursor", "before:250"))
            .respond_with(api_error(503, "CLOUD_CAPACITY_FULL"))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&api)
            .await;
        mount_runs(&api, FakeRuns::lines(450)).await;
        let sandbox = Sandbox::with_backend(backend);
        let app = queue_app(&sandbox, Some(&api)).stepped().spawn().await;
        let id = app.post_run("run_mid").await;

        let (_, _, next) = ran(&app.step().await);
        assert!(matches!(next, JobNext::RetryAt(_)), "{next:?}");
        app.advance(Duration::from_secs(1));
        let (_, _, next) = ran(&app.step().await);
        assert_eq!(next, JobNext::Succeeded);

        assert_eq!(
            requests_to(&api, "/runs/run_mid/logs").await.len(),
            4,
            "page 1, page 2 (503), page 2 again, page 3"
        );
        assert_eq!(
            requests_to(&api, "/runs/run_mid").await.len() - 4,
            1,
            "the run is fetched once"
        );
        app.drain(5).await;
        assert_eq!(
            log_seqs(&sandbox.hook_document(&id)),
            (0..450).collect::<Vec<u64>>()
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn a_hanging_api_times_out_and_the_fetch_is_retried() {
    let api = MockServer::start().await;
    first_call_to(
        &api,
        "/runs/run_slow",
        ResponseTemplate::new(200)
            .set_body_json(run_json("run_slow"))
            .set_delay(Duration::from_secs(5)),
    )
    .await;
    mount_runs(&api, FakeRuns::lines(5)).await;
    let sandbox = Sandbox::new();
    let app = queue_app(&sandbox, Some(&api)).stepped().spawn().await;
    let id = app.post_run("run_slow").await;

    let started = std::time::Instant::now();
    let (_, fetch_id, next) = ran(&app.step().await);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "opensteer.request_timeout_secs = 1 bounds the call: {:?}",
        started.elapsed()
    );
    assert!(matches!(next, JobNext::RetryAt(_)), "{next:?}");
    let tries = sandbox.db().attempts(fetch_id);
    assert_eq!(tries.len(), 1);
    assert_eq!(tries[0].outcome, "retry");
    assert_eq!(tries[0].error_code.as_deref(), Some("TIMEOUT"));
    assert_eq!(sandbox.db().job(&id, "fetch").state, "pending");

    app.advance(Duration::from_secs(1));
    app.drain(5).await;
    assert_eq!(sandbox.db().job(&id, "fetch").state, "succeeded");
    assert_eq!(sandbox.hook_document(&id)["run"], run_json("run_slow"));
    app.stop().await;
}

#[tokio::test]
async fn a_rejected_api_key_waits_auth_retry_secs_forever_and_deliveries_wait() {
    let api = MockServer::start().await;
    mount_runs(&api, api_error(401, "CLOUD_AUTH_FAILED")).await;
    let sandbox = Sandbox::new();
    let setup =
        queue_app(&sandbox, Some(&api)).queue("auth_retry_secs = 60\nfetch_max_attempts = 2");
    let app = setup.clone().stepped().spawn().await;
    let id = app.post_run("run_key").await;

    for attempt in 1..=4 {
        let now = app.now_ms();
        let (kind, fetch_id, next) = ran(&app.step().await);
        assert_eq!(kind, "fetch");
        assert_eq!(
            next,
            JobNext::RetryAt(now + 60_000),
            "attempt {attempt}: next try after queue.auth_retry_secs, beyond fetch_max_attempts"
        );
        let fetch = sandbox.db().job(&id, "fetch");
        assert_eq!(fetch.state, "pending", "attempt {attempt}: never failed");
        assert_eq!(fetch.last_error_code.as_deref(), Some("CLOUD_AUTH_FAILED"));
        assert_eq!(sandbox.db().attempts(fetch_id).len(), attempt);
        assert_eq!(sandbox.db().job(&id, "deliver").state, "blocked");
        assert_eq!(sandbox.db().event_status(&id), "pending");

        app.advance(Duration::from_millis(59_999));
        assert!(
            matches!(app.step().await, Outcome::Idle { .. }),
            "attempt {attempt}: no tight retry loop"
        );
        app.advance(Duration::from_millis(1));
    }
    assert_eq!(requests_to(&api, "/runs/").await.len(), 4);
    assert!(
        captured_logs().contains("THE OPENSTEER API REFUSED OUR KEY"),
        "the fault is logged loudly"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_rejected_api_key_holds_every_fetch_not_just_the_first() {
    let api = MockServer::start().await;
    mount_runs(&api, api_error(401, "CLOUD_AUTH_FAILED")).await;
    let sandbox = Sandbox::new();
    let setup = queue_app(&sandbox, Some(&api)).queue("auth_retry_secs = 60");
    let app = setup.clone().stepped().spawn().await;
    let ids = [
        app.post_run("run_k1").await,
        app.post_run("run_k2").await,
        app.post_run("run_k3").await,
    ];

    let (kind, _, _) = ran(&app.step().await);
    assert_eq!(kind, "fetch");
    let idle = app.step().await;
    assert!(
        matches!(idle, Outcome::Idle { .. }),
        "one refusal of the key is enough: the other events wait too: {idle:?}"
    );
    assert_eq!(requests_to(&api, "/runs/").await.len(), 1);
    for id in &ids {
        assert_eq!(sandbox.db().job(id, "deliver").state, "blocked");
    }
    app.stop().await;
}

crate::backends! {
    #[tokio::test]
    async fn after_the_key_is_fixed_a_restart_fetches_at_once(backend) {
        let api = MockServer::start().await;
        mount_runs(&api, api_error(401, "CLOUD_AUTH_FAILED")).await;
        let sandbox = Sandbox::with_backend(backend);
        let setup = queue_app(&sandbox, Some(&api)).queue("auth_retry_secs = 300");
        let clock = manual_clock();
        let app = setup.clone().clock(clock.clone()).stepped().spawn().await;
        let id = app.post_run("run_fixed").await;
        let (_, _, next) = ran(&app.step().await);
        assert!(matches!(next, JobNext::RetryAt(_)), "{next:?}");
        app.stop().await;

        // The operator fixes the key and restarts; the clock has not moved.
        api.reset().await;
        mount_runs(&api, FakeRuns::lines(5)).await;
        let app = setup.clone().clock(clock).stepped().spawn().await;
        let resumed = app.step().await;
        assert!(
            matches!(&resumed, Outcome::Ran { job, next: JobNext::Succeeded } if job.kind == steerhook::store::JobKind::Fetch),
            "processing resumes once the daemon is restarted, not auth_retry_secs later: {resumed:?}"
        );
        app.drain(5).await;
        assert_eq!(sandbox.hook_document(&id)["run"], run_json("run_fixed"));
        app.stop().await;
    }
}

#[tokio::test]
async fn an_api_error_code_steerhook_does_not_know_is_counted_as_other_in_metrics() {
    let api = MockServer::start().await;
    first_call_to(
        &api,
        "/runs/run_new",
        api_error(503, "CLOUD_SOMETHING_NEW_7"),
    )
    .await;
    first_call_to(
        &api,
        "/runs/run_known",
        api_error(503, "CLOUD_CAPACITY_FULL"),
    )
    .await;
    mount_runs(&api, FakeRuns::lines(1)).await;
    let sandbox = Sandbox::new();
    let app = queue_app(&sandbox, Some(&api)).stepped().spawn().await;
    for run in ["run_new", "run_known"] {
        let id = app.post_run(run).await;
        let (kind, _, next) = ran(&app.step().await);
        assert!(
            kind == "fetch" && matches!(next, JobNext::RetryAt(_)),
            "{run}: the failed fetch is retried: {kind} {next:?}"
        );
        assert_eq!(sandbox.db().job(&id, "fetch").attempts, 1, "{run}");
    }

    let text = reqwest::get(format!("http://{}/metrics", app.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "steerhook_opensteer_api_calls_total{code=\"OTHER\"} 1",
        "steerhook_opensteer_api_calls_total{code=\"CLOUD_CAPACITY_FULL\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    assert!(
        !text.contains("CLOUD_SOMETHING_NEW_7"),
        "no series for the unknown code:\n{text}"
    );
    assert!(
        captured_logs()
            .lines()
            .any(|l| l.contains("CLOUD_SOMETHING_NEW_7") && l.contains("counted as code=")),
        "the unknown code is logged"
    );
    app.stop().await;
}

crate::backends! {
    /// A fetch that keeps failing gives up after `queue.fetch_max_attempts`:
    /// the hooks get the event without its run, saying why. Once the API is
    /// back, `steerhook replay` fetches again and delivers the whole document.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fetch_that_keeps_failing_gives_up_after_fetch_max_attempts_and_replay_fetches_again(backend) {
        let api = MockServer::start().await;
        mount_runs(&api, api_error(503, "CLOUD_CAPACITY_FULL")).await;
        let sandbox = Sandbox::with_backend(backend);
        let app = queue_app(&sandbox, Some(&api))
            .queue("fetch_max_attempts = 2")
            .stepped()
            .spawn()
            .await;
        let id = app.post_run("run_down").await;

        let (kind, fetch_id, next) = ran(&app.step().await);
        assert_eq!(kind, "fetch");
        assert!(matches!(next, JobNext::RetryAt(_)), "{next:?}");
        app.advance(Duration::from_secs(1));
        let (_, again, next) = ran(&app.step().await);
        assert_eq!((again, next), (fetch_id, JobNext::Failed), "the last attempt gives up");
        let tries = sandbox.db().attempts(fetch_id);
        let outcomes: Vec<(i64, &str, Option<&str>)> = tries
            .iter()
            .map(|t| (t.attempt, t.outcome.as_str(), t.error_code.as_deref()))
            .collect();
        assert_eq!(
            outcomes,
            [
                (1, "retry", Some("CLOUD_CAPACITY_FULL")),
                (2, "failed", Some("CLOUD_CAPACITY_FULL"))
            ]
        );
        app.drain(5).await;
        let doc = sandbox.hook_document(&id);
        assert_eq!(doc["run"], serde_json::Value::Null);
        assert_eq!(doc["enrichment"]["status"], json!("none"));
        assert_eq!(doc["enrichment"]["error"]["code"], json!("CLOUD_CAPACITY_FULL"));
        assert_eq!(sandbox.db().job(&id, "deliver").state, "succeeded");
        assert_eq!(
            sandbox.db().event_status(&id),
            "done",
            "the hooks ran; a fetch that gave up does not fail the event"
        );

        api.reset().await;
        mount_runs(&api, FakeRuns::lines(5)).await;
        let config = app.write_config();
        let (code, stdout, stderr) = cli(&config, &["replay", &id]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains(&format!("queued {id} for hook save")), "{stdout}");
        let ran: Vec<String> = app
            .drain(5)
            .await
            .iter()
            .map(|o| ran(o).0)
            .collect();
        assert_eq!(ran, ["fetch", "deliver"], "the fetch first, then the delivery");
        let doc = sandbox.hook_document(&id);
        assert_eq!(doc["run"], run_json("run_down"));
        assert_eq!(log_seqs(&doc), [0, 1, 2, 3, 4]);
        assert_eq!(doc["enrichment"]["status"], json!("complete"));
        assert_eq!(sandbox.db().job(&id, "fetch").state, "succeeded");
        assert_eq!(sandbox.db().event_status(&id), "done");
        app.stop().await;
    }
}
