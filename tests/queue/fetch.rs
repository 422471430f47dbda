//! Enrichment: the run and every log page reach the hook, in order, once.

use serde_json::{json, Value};
use steerhook::dispatch::Outcome;
use steerhook::store::JobNext;
use wiremock::{MockServer, Request, ResponseTemplate};

use crate::queue_app;
use crate::support::prelude::*;

/// Posts one run, drains the queue, and returns the hook's document.
async fn deliver_one(sandbox: &Sandbox, setup: TestAppBuilder, run_id: &str) -> Value {
    let app = setup.stepped().spawn().await;
    let id = app.post_run(run_id).await;
    app.drain(10).await;
    let doc = sandbox.hook_document(&id);
    app.stop().await;
    doc
}

crate::backends! {
    #[tokio::test]
    async fn logs_of_450_lines_at_200_a_page_take_three_calls_and_reach_the_hook_oldest_first(backend) {
        let api = MockServer::start().await;
        mount_runs(&api, FakeRuns::lines(450)).await;
        let sandbox = Sandbox::with_backend(backend);
        let app = queue_app(&sandbox, Some(&api)).stepped().spawn().await;
        let id = app.post_run("run_450").await;

        let fetch = app.step().await;
        assert!(
            matches!(&fetch, Outcome::Ran { job, next: JobNext::Succeeded } if job.kind == steerhook::store::JobKind::Fetch),
            "the first step fetches: {fetch:?}"
        );
        let logs_calls = requests_to(&api, "/runs/run_450/logs").await;
        assert_eq!(logs_calls.len(), 3, "one call per page of 200");
        let cursors: Vec<Option<String>> = logs_calls
            .iter()
            .map(|r| {
                r.url
                    .query_pairs()
                    .find(|(k, _)| k == "beforeLogCursor")
                    .map(|(_, v)| v.into_owned())
            })
            .collect();
        assert_eq!(
            cursors,
            [None, Some("before:250".into()), Some("before:50".into())],
            "the newest page first, then each page's cursor"
        );
        assert!(
            logs_calls.iter().all(|r| r
                .url
                .query_pairs()
                .any(|(k, v)| k == "logLimit" && v == "200")),
            "logLimit = opensteer.log_page_size on every call"
        );
        assert_eq!(
            requests_to(&api, "/runs/run_450").await.len(),
            4,
            "one run call"
        );

        app.drain(5).await;
        let doc = sandbox.hook_document(&id);
        assert_eq!(log_seqs(&doc), (0..450).collect::<Vec<u64>>());
        assert_eq!(doc["run"], run_json("run_450"));
        assert_eq!(doc["event"]["id"], json!(id));
        assert_eq!(sandbox.db().event_status(&id), "done");
        app.stop().await;
    }
}

#[tokio::test]
async fn every_shape_of_spec_section_5_reaches_the_hook_whole_and_in_order() {
    let mut shapes = Vec::new();
    for wrapped_run in [false, true] {
        for entries_key in ["logs", "items", "data", "entries"] {
            shapes.push(Shape {
                wrapped_run,
                entries_key,
                cursor: CursorAt::Key("nextCursor"),
            });
        }
    }
    for cursor in [
        CursorAt::Key("nextCursor"),
        CursorAt::Key("nextBeforeLogCursor"),
        CursorAt::Key("beforeLogCursor"),
        CursorAt::Key("cursor"),
        CursorAt::Pagination,
        CursorAt::HasMoreId,
        CursorAt::HasMoreEntryCursor,
    ] {
        shapes.push(Shape {
            wrapped_run: false,
            entries_key: "items",
            cursor,
        });
    }
    for shape in shapes {
        let api = MockServer::start().await;
        mount_runs(&api, FakeRuns { total: 45, shape }).await;
        let sandbox = Sandbox::new();
        let setup = queue_app(&sandbox, Some(&api)).opensteer_lines("log_page_size = 20");
        let doc = deliver_one(&sandbox, setup, "run_shape").await;
        assert_eq!(
            doc["run"],
            run_json("run_shape"),
            "the run object, unwrapped, for {shape:?}"
        );
        assert_eq!(
            log_seqs(&doc),
            (0..45).collect::<Vec<u64>>(),
            "every entry once, oldest first, for {shape:?}"
        );
        assert_eq!(
            requests_to(&api, "/runs/run_shape/logs").await.len(),
            3,
            "three pages of 20 for {shape:?}"
        );
    }
}

/// Lines `range` as a page with `next` as its cursor.
fn page(range: std::ops::Range<usize>, next: Option<&str>) -> ResponseTemplate {
    let shape = Shape::default();
    let entries: Vec<Value> = range.map(|i| log_line(i, &shape)).collect();
    let mut body = json!({ "logs": entries });
    if let Some(n) = next {
        body["nextCursor"] = json!(n);
    }
    ResponseTemplate::new(200).set_body_json(body)
}

fn cursor_of(request: &Request) -> Option<String> {
    request
        .url
        .query_pairs()
        .find(|(k, _)| k == "beforeLogCursor")
        .map(|(_, v)| v.into_owned())
}

/// Whether `request` is for the logs; else it is for the run.
fn is_logs(request: &Request) -> bool {
    request.url.path().ends_with("/logs")
}

#[tokio::test]
async fn a_page_that_repeats_its_own_cursor_ends_paging_with_every_entry_once() {
    let api = MockServer::start().await;
    mount_runs(&api, |r: &Request| {
        if !is_logs(r) {
            return ResponseTemplate::new(200).set_body_json(run_json("run_rep"));
        }
        match cursor_of(r).as_deref() {
            None => page(100..200, Some("c1")),
            // The oldest page points at itself.
            Some("c1") => page(0..100, Some("c1")),
            Some(c) => panic!("unexpected cursor {c}"),
        }
    })
    .await;
    let sandbox = Sandbox::new();
    let app = queue_app(&sandbox, Some(&api)).stepped().spawn().await;
    let id = app.post_run("run_rep").await;
    app.drain(5).await;

    assert_eq!(requests_to(&api, "/runs/run_rep/logs").await.len(), 2);
    assert_eq!(sandbox.db().job(&id, "fetch").state, "succeeded");
    let doc = sandbox.hook_document(&id);
    assert_eq!(log_seqs(&doc), (0..200).collect::<Vec<u64>>());
    app.stop().await;
}

#[tokio::test]
async fn an_api_that_ignores_the_cursor_ends_paging_without_duplicate_entries() {
    let api = MockServer::start().await;
    // Every request answers the same page with the same cursor.
    mount_runs(&api, |r: &Request| {
        if is_logs(r) {
            page(0..50, Some("c1"))
        } else {
            ResponseTemplate::new(200).set_body_json(run_json("run_loop"))
        }
    })
    .await;
    let sandbox = Sandbox::new();
    let app = queue_app(&sandbox, Some(&api)).stepped().spawn().await;
    let id = app.post_run("run_loop").await;
    app.drain(5).await;

    assert_eq!(requests_to(&api, "/runs/run_loop/logs").await.len(), 2);
    assert_eq!(sandbox.db().job(&id, "fetch").state, "succeeded");
    let doc = sandbox.hook_document(&id);
    assert_eq!(
        log_seqs(&doc),
        (0..50).collect::<Vec<u64>>(),
        "the repeated page is not stored twice"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_cursor_that_loops_back_to_an_earlier_page_ends_paging_without_duplicates() {
    let api = MockServer::start().await;
    mount_runs(&api, |r: &Request| {
        if !is_logs(r) {
            return ResponseTemplate::new(200).set_body_json(run_json("run_back"));
        }
        match cursor_of(r).as_deref() {
            None => page(200..300, Some("c1")),
            Some("c1") => page(100..200, Some("c2")),
            // Broken: answers the first older page again, pointing back at c1.
            Some("c2") => page(100..200, Some("c1")),
            Some(c) => panic!("unexpected cursor {c}"),
        }
    })
    .await;
    let sandbox = Sandbox::new();
    let app = queue_app(&sandbox, Some(&api)).stepped().spawn().await;
    let id = app.post_run("run_back").await;
    app.drain(5).await;

    assert_eq!(requests_to(&api, "/runs/run_back/logs").await.len(), 3);
    assert_eq!(sandbox.db().job(&id, "fetch").state, "succeeded");
    let doc = sandbox.hook_document(&id);
    assert_eq!(log_seqs(&doc), (100..300).collect::<Vec<u64>>());
    app.stop().await;
}

#[tokio::test]
async fn paging_stops_at_max_log_pages_and_the_fetch_still_succeeds() {
    let api = MockServer::start().await;
    mount_runs(&api, FakeRuns::lines(450)).await;
    let sandbox = Sandbox::new();
    let setup = queue_app(&sandbox, Some(&api)).opensteer_lines("max_log_pages = 2");
    let app = setup.clone().stepped().spawn().await;
    let id = app.post_run("run_cap").await;
    app.drain(5).await;

    assert_eq!(requests_to(&api, "/runs/run_cap/logs").await.len(), 2);
    assert_eq!(sandbox.db().job(&id, "fetch").state, "succeeded");
    let doc = sandbox.hook_document(&id);
    assert_eq!(
        log_seqs(&doc),
        (50..450).collect::<Vec<u64>>(),
        "the newest two pages, oldest first"
    );
    assert_eq!(doc["enrichment"]["status"], json!("partial"), "{doc}");
    assert_eq!(doc["enrichment"]["error"]["code"], json!("MAX_LOG_PAGES"));
    assert_eq!(sandbox.db().event_status(&id), "done");
    app.stop().await;
}

crate::backends! {
    #[tokio::test]
    async fn a_run_that_is_not_found_or_a_contract_mismatch_fails_the_fetch_and_hooks_get_the_event_without_it(backend) {
        for (status, code, expected_code) in [
            (404, None, "HTTP_404"),
            (
                409,
                Some("CLOUD_CONTRACT_MISMATCH"),
                "CLOUD_CONTRACT_MISMATCH",
            ),
        ] {
            let api = MockServer::start().await;
            let answer = match code {
                Some(c) => api_error(status, c),
                None => ResponseTemplate::new(status).set_body_string("no such run"),
            };
            mount_runs(&api, answer).await;
            let sandbox = Sandbox::with_backend(backend);
            // Without a settle window, a 404 is final at once (SPEC §5).
            let app = queue_app(&sandbox, Some(&api))
                .opensteer_lines("settle_secs = 0")
                .stepped()
                .spawn()
                .await;
            let id = app.post_run("run_gone").await;

            let first = app.step().await;
            assert!(
                matches!(&first, Outcome::Ran { job, next: JobNext::Failed } if job.kind == steerhook::store::JobKind::Fetch),
                "HTTP {status}: the fetch fails at once, not retried: {first:?}"
            );
            let fetch = sandbox.db().job(&id, "fetch");
            assert_eq!(fetch.state, "failed", "HTTP {status}");
            assert_eq!(fetch.last_error_code.as_deref(), Some(expected_code));
            let tries = sandbox.db().attempts(fetch.id);
            assert_eq!(tries.len(), 1, "HTTP {status}: {tries:?}");
            assert_eq!(tries[0].outcome, "failed");
            assert_eq!(tries[0].error_code.as_deref(), Some(expected_code));
            let enrichment_error = sandbox.db().enrichment_error(&id);
            assert!(
                enrichment_error.is_some(),
                "HTTP {status}: the event says why it has no run"
            );
            assert_eq!(
                sandbox.db().event_status(&id),
                "pending",
                "HTTP {status}: its delivery is still to run"
            );

            app.drain(5).await;
            let deliver = sandbox.db().job(&id, "deliver");
            assert_eq!(deliver.state, "succeeded", "HTTP {status}");
            let doc = sandbox.hook_document(&id);
            assert_eq!(doc["run"], Value::Null, "HTTP {status}");
            assert_eq!(doc["enrichment"]["status"], json!("none"), "HTTP {status}");
            assert_eq!(
                doc["enrichment"]["error"]["code"],
                json!(expected_code),
                "HTTP {status}"
            );
            assert_eq!(
                sandbox.db().event_status(&id),
                "done",
                "HTTP {status}: the hooks ran; a fetch that gave up does not fail the event"
            );
            assert_eq!(doc["event"]["runId"], json!("run_gone"));
            assert_eq!(
                requests_to(&api, "/runs/").await.len(),
                1,
                "HTTP {status}: not retried"
            );
            app.stop().await;
        }
    }
}
