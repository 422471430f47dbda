//! Black-box tests of the Opensteer API client against a fake API on a real
//! socket (wiremock). No sleeps: slowness is the fake's `set_delay`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or tool: a panic names what failed

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use steerhook::clock::ManualClock;
use steerhook::opensteer::{
    ClientSettings, ErrorClass, KeyCheck, LogsPage, OpensteerClient, OpensteerError, MAX_BODY_BYTES,
};
use steerhook::secret::Secret;
use support::prelude::*;
use wiremock::matchers::{header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "osk_test_s3cr3t_0123456789";

fn client_settings(base_url: &str) -> ClientSettings {
    ClientSettings {
        base_url: base_url.to_owned(),
        api_key: Secret::new(KEY),
        log_page_size: 50,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        max_concurrent_requests: 4,
    }
}

fn client_for(server: &MockServer) -> OpensteerClient {
    OpensteerClient::new(client_settings(&server.uri())).expect("valid settings")
}

/// A mock of `GET path` that insists on the API key.
fn get(p: &str) -> wiremock::MockBuilder {
    Mock::given(method("GET"))
        .and(path(p))
        .and(header("x-api-key", KEY))
}

/// A port nothing listens on: bound, then released.
fn refused_base_url() -> String {
    format!("http://{}", free_addr())
}

async fn run_error(server: &MockServer, response: ResponseTemplate) -> OpensteerError {
    get("/runs/r1").respond_with(response).mount(server).await;
    client_for(server)
        .fetch_run("r1")
        .await
        .expect_err("the fake answers an error")
}

#[tokio::test]
async fn fetch_run_returns_a_bare_run_object_and_the_raw_text() {
    let server = MockServer::start().await;
    let raw = r#"{"id": "r1", "status": "succeeded", "output": {"rows": 3}}"#;
    get("/runs/r1")
        .respond_with(ResponseTemplate::new(200).set_body_raw(raw, "application/json"))
        .expect(1)
        .mount(&server)
        .await;

    let response = client_for(&server).fetch_run("r1").await.expect("run");

    assert_eq!(
        response.run,
        json!({"id": "r1", "status": "succeeded", "output": {"rows": 3}})
    );
    assert_eq!(response.raw, raw, "the raw body is kept byte for byte");
}

#[tokio::test]
async fn fetch_run_unwraps_a_run_object_nested_under_run() {
    let server = MockServer::start().await;
    let body = json!({"run": {"id": "r1", "status": "failed"}, "requestId": "q"});
    get("/runs/r1")
        .respond_with(ResponseTemplate::new(200).set_body_json(&body))
        .mount(&server)
        .await;

    let response = client_for(&server).fetch_run("r1").await.expect("run");

    assert_eq!(response.run, json!({"id": "r1", "status": "failed"}));
    assert_eq!(
        serde_json::from_str::<Value>(&response.raw).expect("raw is JSON"),
        body
    );
}

#[tokio::test]
async fn fetch_run_percent_encodes_a_run_id_with_slashes_and_spaces() {
    let server = MockServer::start().await;
    get("/runs/a%2Fb%20c%3Fd")
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "a/b c?d"})))
        .expect(1)
        .mount(&server)
        .await;

    let response = client_for(&server).fetch_run("a/b c?d").await.expect("run");

    assert_eq!(response.run["id"], "a/b c?d");
}

#[tokio::test]
async fn fetch_run_tolerates_a_trailing_slash_and_a_path_prefix_in_base_url() {
    let server = MockServer::start().await;
    get("/runs/r1")
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": 1})))
        .mount(&server)
        .await;
    get("/api/v1/runs/r1")
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": 2})))
        .mount(&server)
        .await;

    for (base, id) in [
        (format!("{}/", server.uri()), 1),
        (format!("{}/api/v1/", server.uri()), 2),
        (format!("{}/api/v1", server.uri()), 2),
    ] {
        let client = OpensteerClient::new(client_settings(&base)).expect("valid settings");
        let response = client
            .fetch_run("r1")
            .await
            .unwrap_or_else(|e| panic!("base {base}: {e}"));
        assert_eq!(response.run["id"], id, "base {base}");
    }
}

#[tokio::test]
async fn fetch_run_refuses_run_ids_that_are_not_a_path_segment_without_sending() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let client = client_for(&server);

    for run_id in ["", ".", ".."] {
        let err = client.fetch_run(run_id).await.expect_err("not requestable");
        assert_eq!(
            (err.class(), err.code().as_str()),
            (ErrorClass::Terminal, "INVALID_RUN_ID"),
            "run id {run_id:?}"
        );
        let err = client
            .fetch_logs_page(run_id, None)
            .await
            .expect_err("not requestable");
        assert_eq!(err.code(), "INVALID_RUN_ID", "run id {run_id:?}");
    }
}

#[tokio::test]
async fn fetch_logs_page_sends_log_limit_and_no_cursor_for_the_newest_page() {
    let server = MockServer::start().await;
    get("/runs/r1/logs")
        .and(query_param("logLimit", "50"))
        .and(query_param_is_missing("beforeLogCursor"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "logs": [{"id": "l1", "msg": "a"}, {"id": "l2", "msg": "b"}],
            "nextCursor": "older-1"
        })))
        .expect(1)
        .mount(&server)
        .await;

    let page = client_for(&server)
        .fetch_logs_page("r1", None)
        .await
        .expect("page");

    assert_eq!(
        page.to_values(),
        LogsPage {
            entries: vec![
                json!({"id": "l1", "msg": "a"}),
                json!({"id": "l2", "msg": "b"})
            ],
            next_cursor: Some("older-1".to_owned()),
        }
    );
}

#[tokio::test]
async fn fetch_logs_page_sends_the_cursor_url_encoded() {
    let server = MockServer::start().await;
    let cursor = "c/1 &x=2#y+z";
    get("/runs/r%2F1/logs")
        .and(query_param("logLimit", "50"))
        .and(query_param("beforeLogCursor", cursor))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"items": [], "hasMore": false})),
        )
        .expect(1)
        .mount(&server)
        .await;

    let page = client_for(&server)
        .fetch_logs_page("r/1", Some(cursor))
        .await
        .expect("page");

    assert_eq!(page.to_values(), LogsPage::default());
}

#[tokio::test]
async fn fetch_logs_page_reads_every_shape_of_spec_section_5() {
    let server = MockServer::start().await;
    let cases = [
        (
            json!({"logs": [{"id": "a"}], "nextCursor": "n1"}),
            Some("n1"),
        ),
        (
            json!({"items": [{"id": "a"}], "nextBeforeLogCursor": "n2"}),
            Some("n2"),
        ),
        (
            json!({"data": [{"id": "a"}], "beforeLogCursor": "n3"}),
            Some("n3"),
        ),
        (
            json!({"entries": [{"id": "a"}], "cursor": "n4"}),
            Some("n4"),
        ),
        (
            json!({"data": [{"id": "a"}], "pagination": {"nextCursor": "n5"}}),
            Some("n5"),
        ),
        (
            json!({"logs": [{"cursor": "oldest", "id": "x"}, {"cursor": "newer"}], "hasMore": true}),
            Some("oldest"),
        ),
        (
            json!({"logs": [{"id": 17}, {"id": 18}], "hasMore": true}),
            Some("17"),
        ),
        (json!([{"id": "a"}]), None),
    ];
    for (i, (body, cursor)) in cases.iter().enumerate() {
        let run = format!("run{i}");
        get(&format!("/runs/{run}/logs"))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(&server)
            .await;
        let page = client_for(&server)
            .fetch_logs_page(&run, None)
            .await
            .unwrap_or_else(|e| panic!("{body}: {e}"));
        assert_eq!(page.next_cursor.as_deref(), *cursor, "body {body}");
        assert!(!page.entries().is_empty(), "body {body}");
    }
}

#[tokio::test]
async fn errors_are_classified_by_code_first_then_status() {
    // (status, body code or none, expected class, expected code)
    let cases: [(u16, Option<&str>, ErrorClass, &str); 10] = [
        (
            401,
            Some("CLOUD_AUTH_FAILED"),
            ErrorClass::AuthFault,
            "CLOUD_AUTH_FAILED",
        ),
        (403, None, ErrorClass::AuthFault, "HTTP_403"),
        (404, None, ErrorClass::Terminal, "HTTP_404"),
        (
            409,
            Some("CLOUD_CONTRACT_MISMATCH"),
            ErrorClass::Terminal,
            "CLOUD_CONTRACT_MISMATCH",
        ),
        (422, None, ErrorClass::Terminal, "HTTP_422"),
        (500, None, ErrorClass::Retry, "HTTP_500"),
        (502, None, ErrorClass::Retry, "HTTP_502"),
        (
            503,
            Some("CLOUD_CAPACITY_FULL"),
            ErrorClass::Retry,
            "CLOUD_CAPACITY_FULL",
        ),
        (
            500,
            Some("CLOUD_AUTH_FAILED"),
            ErrorClass::AuthFault,
            "CLOUD_AUTH_FAILED",
        ),
        (
            400,
            Some("CLOUD_TIMEOUT"),
            ErrorClass::Retry,
            "CLOUD_TIMEOUT",
        ),
    ];
    for (status, code, class, expected_code) in cases {
        let server = MockServer::start().await;
        let response = match code {
            Some(code) => api_error_saying(status, code, "something happened"),
            None => ResponseTemplate::new(status),
        };
        let err = run_error(&server, response).await;
        assert_eq!(err.class(), class, "status {status} code {code:?}: {err}");
        assert_eq!(err.code(), expected_code, "status {status} code {code:?}");
        assert_eq!(err.status(), Some(status));
        let text = err.to_string();
        assert!(
            text.contains(&status.to_string()),
            "the message names the status: {text}"
        );
        if let Some(code) = code {
            assert!(text.contains(code), "the message names the code: {text}");
        }
    }
}

#[tokio::test]
async fn auth_failure_tells_the_operator_to_check_the_api_key() {
    let server = MockServer::start().await;
    let err = run_error(
        &server,
        api_error_saying(401, "CLOUD_AUTH_FAILED", "invalid API key"),
    )
    .await;

    let text = err.to_string();
    assert_eq!(err.class(), ErrorClass::AuthFault);
    assert!(text.contains("opensteer.api_key"), "{text}");
    assert!(
        text.contains("invalid API key"),
        "the API's message is kept: {text}"
    );
}

#[tokio::test]
async fn contract_mismatch_says_steerhook_may_need_upgrading() {
    let server = MockServer::start().await;
    let err = run_error(
        &server,
        api_error_saying(409, "CLOUD_CONTRACT_MISMATCH", "unsupported contract"),
    )
    .await;

    assert_eq!(
        (err.class(), err.code().as_str()),
        (ErrorClass::Terminal, "CLOUD_CONTRACT_MISMATCH")
    );
    assert!(
        err.to_string().contains("steerhook may need upgrading"),
        "{err}"
    );
}

#[tokio::test]
async fn rate_limit_with_retry_after_seconds_is_retry_after_that_long() {
    let server = MockServer::start().await;
    let response =
        api_error_saying(429, "CLOUD_RATE_LIMITED", "slow down").insert_header("retry-after", "2");
    let err = run_error(&server, response).await;

    assert_eq!(
        err.class(),
        ErrorClass::RetryAfter(Some(Duration::from_secs(2)))
    );
    assert_eq!(err.code(), "CLOUD_RATE_LIMITED");
}

#[tokio::test]
async fn rate_limit_with_retry_after_date_is_resolved_against_the_clock() {
    let server = MockServer::start().await;
    let clock = ManualClock::at_unix_secs(1_700_000_000);
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_090);
    get("/runs/r1")
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", httpdate::fmt_http_date(at).as_str()),
        )
        .mount(&server)
        .await;
    let client =
        OpensteerClient::with_clock(client_settings(&server.uri()), Arc::new(clock.clone()))
            .expect("client");

    let err = client.fetch_run("r1").await.expect_err("429");
    assert_eq!(
        err.class(),
        ErrorClass::RetryAfter(Some(Duration::from_secs(90)))
    );
    assert_eq!(err.code(), "HTTP_429");

    clock.advance(Duration::from_secs(600));
    let err = client.fetch_run("r1").await.expect_err("429");
    assert_eq!(
        err.class(),
        ErrorClass::RetryAfter(Some(Duration::ZERO)),
        "a date in the past means now"
    );
}

#[tokio::test]
async fn rate_limit_without_retry_after_leaves_the_delay_to_the_caller() {
    let server = MockServer::start().await;
    let err = run_error(
        &server,
        api_error_saying(400, "CLOUD_RATE_LIMITED", "slow down"),
    )
    .await;

    assert_eq!(err.class(), ErrorClass::RetryAfter(None));
}

#[tokio::test]
async fn an_html_error_page_keeps_a_bounded_excerpt() {
    let server = MockServer::start().await;
    let page = format!(
        "<html><body>Bad Gateway{}</body></html>",
        " ".repeat(4) + &"x".repeat(100_000)
    );
    let err = run_error(
        &server,
        ResponseTemplate::new(502).set_body_raw(page, "text/html"),
    )
    .await;

    let text = err.to_string();
    assert_eq!(
        (err.class(), err.code().as_str()),
        (ErrorClass::Retry, "HTTP_502")
    );
    assert!(text.contains("Bad Gateway"), "{text}");
    assert!(
        text.len() < 1000,
        "the message is bounded, got {} bytes",
        text.len()
    );
}

#[tokio::test]
async fn truncated_json_on_a_200_is_a_retryable_invalid_body() {
    let server = MockServer::start().await;
    let truncated = r#"{"id": "r1", "status": "succ"#;
    get("/runs/r1")
        .respond_with(ResponseTemplate::new(200).set_body_raw(truncated, "application/json"))
        .mount(&server)
        .await;
    get("/runs/r1/logs")
        .respond_with(ResponseTemplate::new(200).set_body_raw(truncated, "application/json"))
        .mount(&server)
        .await;
    let client = client_for(&server);

    let err = client.fetch_run("r1").await.expect_err("truncated");
    assert_eq!(
        (err.class(), err.code().as_str()),
        (ErrorClass::Retry, "INVALID_BODY"),
        "{err}"
    );
    let err = client
        .fetch_logs_page("r1", None)
        .await
        .expect_err("truncated");
    assert_eq!(
        (err.class(), err.code().as_str()),
        (ErrorClass::Retry, "INVALID_BODY"),
        "{err}"
    );
    assert!(
        err.to_string().contains("/runs/r1/logs"),
        "the message names the request: {err}"
    );
}

#[tokio::test]
async fn a_body_over_the_cap_is_refused_and_not_retried() {
    let server = MockServer::start().await;
    let huge = vec![b' '; MAX_BODY_BYTES + 1];
    get("/runs/r1")
        .respond_with(ResponseTemplate::new(200).set_body_raw(huge, "application/json"))
        .mount(&server)
        .await;

    let err = client_for(&server)
        .fetch_run("r1")
        .await
        .expect_err("too large");

    assert_eq!(
        (err.class(), err.code().as_str()),
        (ErrorClass::Terminal, "BODY_TOO_LARGE"),
        "{err}"
    );
}

#[tokio::test]
async fn a_hanging_api_is_a_retryable_timeout() {
    let server = MockServer::start().await;
    get("/runs/r1")
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "r1"}))
                .set_delay(Duration::from_secs(30)),
        )
        .mount(&server)
        .await;
    let mut s = client_settings(&server.uri());
    s.request_timeout = Duration::from_millis(300);
    let client = OpensteerClient::new(s).expect("client");

    let started = Instant::now();
    let err = client.fetch_run("r1").await.expect_err("times out");

    assert_eq!(
        (err.class(), err.code().as_str()),
        (ErrorClass::Retry, "TIMEOUT"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "gave up after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_refused_connection_is_a_retryable_connect_error() {
    let client = OpensteerClient::new(client_settings(&refused_base_url())).expect("client");

    let err = client.fetch_run("r1").await.expect_err("refused");

    assert_eq!(
        (err.class(), err.code().as_str()),
        (ErrorClass::Retry, "CONNECT"),
        "{err}"
    );
    assert!(err.to_string().contains("opensteer.base_url"), "{err}");
}

#[tokio::test]
async fn redirects_are_not_followed_so_the_key_stays_home() {
    let server = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let location = format!("{}/runs/r1", elsewhere.uri());
    let err = run_error(
        &server,
        ResponseTemplate::new(302).insert_header("location", location.as_str()),
    )
    .await;

    assert_eq!(
        (err.class(), err.code().as_str()),
        (ErrorClass::AuthFault, "HTTP_302"),
        "{err}"
    );
    assert!(err.to_string().contains("opensteer.base_url"), "{err}");
}

#[tokio::test]
async fn in_flight_requests_are_bounded_across_clones() {
    let server = MockServer::start().await;
    let delay = Duration::from_millis(200);
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    get("/runs/r")
        .respond_with(Arrivals {
            at: arrivals.clone(),
            delay,
            answer: ResponseTemplate::new(200).set_body_json(json!({"id": "r"})),
        })
        .expect(10)
        .mount(&server)
        .await;
    let mut s = client_settings(&server.uri());
    s.max_concurrent_requests = 2;
    let client = OpensteerClient::new(s).expect("client");

    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.fetch_run("r").await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("run");
    }

    // Each request takes at least `delay`, so the requests in flight at the
    // arrival of request `a` are those that arrived less than `delay` before.
    let arrivals = arrivals.lock().expect("not poisoned").clone();
    let window = delay * 9 / 10;
    let most = most_in_flight(&arrivals, window);
    assert_eq!(arrivals.len(), 10);
    assert_eq!(
        most, 2,
        "at most 2 in flight (and 2 were: the bound, not the test, limited it)"
    );
}

#[tokio::test]
async fn the_api_key_never_appears_in_error_messages() {
    let mut errors = Vec::new();

    let server = MockServer::start().await;
    get("/runs/auth")
        .respond_with(api_error_saying(
            401,
            "CLOUD_AUTH_FAILED",
            &format!("key {KEY} is revoked"),
        ))
        .mount(&server)
        .await;
    get("/runs/gone")
        .respond_with(ResponseTemplate::new(404).set_body_string(format!("no run for {KEY}")))
        .mount(&server)
        .await;
    get("/runs/bad")
        .respond_with(ResponseTemplate::new(200).set_body_string("{oops"))
        .mount(&server)
        .await;
    get("/runs/slow")
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&server)
        .await;
    let mut s = client_settings(&server.uri());
    s.request_timeout = Duration::from_millis(300);
    let client = OpensteerClient::new(s).expect("client");
    for run in ["auth", "gone", "bad", "slow"] {
        errors.push(client.fetch_run(run).await.expect_err(run));
    }
    let refused = OpensteerClient::new(client_settings(&refused_base_url())).expect("client");
    errors.push(refused.fetch_run("r1").await.expect_err("refused"));
    let mut bad_key = client_settings(&server.uri());
    bad_key.api_key = Secret::new(format!("{KEY}\n"));
    errors.push(OpensteerClient::new(bad_key).expect_err("a newline cannot be sent"));

    for err in &errors {
        let mut texts = vec![err.to_string(), format!("{err:?}")];
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            texts.push(cause.to_string());
            source = cause.source();
        }
        for text in texts {
            assert!(!text.contains(KEY), "the key leaked into {text}");
        }
    }
    assert!(!format!("{client:?}").contains(KEY));
    assert!(
        errors[0].to_string().contains("[redacted]"),
        "{}",
        errors[0]
    );
}

#[tokio::test]
async fn probe_reports_an_accepted_key_and_the_server_date_on_404() {
    let server = MockServer::start().await;
    let date = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    get("/runs/steerhook-doctor-probe")
        .respond_with(
            api_error_saying(404, "CLOUD_NOT_FOUND", "no such run")
                .insert_header("date", httpdate::fmt_http_date(date).as_str()),
        )
        .expect(1)
        .mount(&server)
        .await;

    let probe = client_for(&server).probe().await.expect("probe");

    assert_eq!((probe.status, probe.key), (404, KeyCheck::Accepted));
    assert_eq!(probe.server_date, Some(date));
    assert_eq!(probe.code.as_deref(), Some("CLOUD_NOT_FOUND"));
}

#[tokio::test]
async fn probe_reports_a_rejected_key_and_no_verdict_on_other_answers() {
    let cases = [
        (
            api_error_saying(401, "CLOUD_AUTH_FAILED", "bad key"),
            401,
            KeyCheck::Rejected,
        ),
        (ResponseTemplate::new(403), 403, KeyCheck::Rejected),
        (
            api_error_saying(500, "CLOUD_AUTH_FAILED", "bad key"),
            500,
            KeyCheck::Rejected,
        ),
        (ResponseTemplate::new(503), 503, KeyCheck::Unknown),
    ];
    for (response, status, key) in cases {
        let server = MockServer::start().await;
        get("/runs/steerhook-doctor-probe")
            .respond_with(response)
            .mount(&server)
            .await;
        let probe = client_for(&server).probe().await.expect("probe");
        assert_eq!((probe.status, probe.key), (status, key), "status {status}");
        let now = SystemTime::now();
        let date = probe.server_date.expect("hyper sends a Date header");
        assert!(date <= now + Duration::from_secs(5), "server date {date:?}");
    }
}

#[tokio::test]
async fn probe_fails_when_the_api_cannot_be_reached() {
    let client = OpensteerClient::new(client_settings(&refused_base_url())).expect("client");

    let err = client.probe().await.expect_err("refused");

    assert_eq!(err.code(), "CONNECT");
}

#[test]
fn new_rejects_settings_that_cannot_work_and_names_the_key() {
    let cases: [(ClientSettings, &str); 7] = [
        (client_settings("not a url"), "opensteer.base_url"),
        (
            client_settings("ftp://api.example.com"),
            "opensteer.base_url",
        ),
        (
            client_settings("https://user:pw@api.example.com"),
            "opensteer.base_url",
        ),
        (
            client_settings("https://api.example.com/?x=1"),
            "opensteer.base_url",
        ),
        (
            ClientSettings {
                api_key: Secret::new(""),
                ..client_settings("https://api.example.com")
            },
            "opensteer.api_key",
        ),
        (
            ClientSettings {
                log_page_size: 0,
                ..client_settings("https://api.example.com")
            },
            "opensteer.log_page_size",
        ),
        (
            ClientSettings {
                max_concurrent_requests: 0,
                ..client_settings("https://api.example.com")
            },
            "concurrency",
        ),
    ];
    for (s, key) in cases {
        let base = s.base_url.clone();
        let err = OpensteerClient::new(s).expect_err("invalid");
        assert!(err.to_string().contains(key), "{base}: {err}");
        assert_eq!(err.code(), "INVALID_SETTINGS");
    }
}

#[tokio::test]
async fn a_chunked_body_without_length_is_cut_off_at_the_cap() {
    // wiremock always sends Content-Length; this fake streams an endless
    // chunked body instead, so only the read loop's cap can stop it.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let sent = Arc::new(Mutex::new(0usize));
    let sent_by_server = sent.clone();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut request = [0u8; 4096];
        let _ = socket.read(&mut request).await;
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
        socket.write_all(head.as_bytes()).await.expect("head");
        let chunk = vec![b' '; 64 * 1024];
        let frame = [
            format!("{:x}\r\n", chunk.len()).into_bytes(),
            chunk,
            b"\r\n".to_vec(),
        ]
        .concat();
        // Stops when the client hangs up.
        while socket.write_all(&frame).await.is_ok() {
            *sent_by_server.lock().expect("not poisoned") += 64 * 1024;
        }
    });
    let client = OpensteerClient::new(client_settings(&base)).expect("client");

    let err = client.fetch_run("r1").await.expect_err("too large");

    assert_eq!(
        (err.class(), err.code().as_str()),
        (ErrorClass::Terminal, "BODY_TOO_LARGE"),
        "{err}"
    );
    let sent = *sent.lock().expect("not poisoned");
    assert!(
        sent < 2 * MAX_BODY_BYTES,
        "the client stopped reading near the cap, not at {sent} bytes"
    );
}
