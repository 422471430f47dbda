//! HTTP hooks, from the webhook to a real HTTP receiver on a real socket
//! (wiremock, or a bare TCP server where the test counts bytes), each
//! request's signature checked by the `standardwebhooks` package from PyPI:
//! a verifier this project did not write.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use steerhook::dispatch::Outcome;
use steerhook::store::JobNext;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::prelude::*;
use crate::support::tools::skip_or_fail;
use crate::{app_on, succeeded_body};

/// The receiver's Standard Webhooks secret (`whsec_` + base64 of 24 bytes).
const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const HOOK: &str = "orchestrator";
const TOKEN: &str = "tok_airflow_secret";
/// The pinned verifier; `.ci/run` installs the same.
const VERIFIER: &str = "standardwebhooks==1.3.0";

/// An http hook named [`HOOK`] POSTing to `url`, signed, with a token and a
/// header, plus `extra` lines.
fn http_hook(url: &str, extra: &str) -> String {
    format!(
        "[[hook]]\nname = \"{HOOK}\"\nkind = \"http\"\nevents = [\"run.succeeded\"]\n\
         url = {}\nsecret = \"{SIGNING_SECRET}\"\nbearer_token = \"{TOKEN}\"\n\
         headers = {{ \"X-Source\" = \"steerhook\" }}\nmax_attempts = 5\n{extra}\n",
        toml_str(url)
    )
}

/// The POSTs the receiver got, in order.
async fn posts(server: &MockServer) -> Vec<Request> {
    server
        .received_requests()
        .await
        .expect("wiremock records requests")
        .into_iter()
        .filter(|r| r.method.as_str() == "POST")
        .collect()
}

fn header<'a>(request: &'a Request, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {:?}", request.headers))
        .to_str()
        .expect("ASCII header")
}

/// A Python that can import `standardwebhooks`: `$STEERHOOK_TEST_PYTHON`, the
/// virtualenv `.ci/run` makes under target/, or `python3`.
fn verifier_python() -> Option<PathBuf> {
    let venv =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/standardwebhooks-venv/bin/python3");
    std::env::var_os("STEERHOOK_TEST_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([venv, PathBuf::from("python3")])
        .find(|python| {
            Command::new(python)
                .args(["-c", "import standardwebhooks"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// Verifies every request with the PyPI `standardwebhooks` library; returns
/// its error for the first that fails. Without the library: a failure in
/// CI (`STEERHOOK_CI=1`), a printed skip of this check elsewhere.
fn verify_with_standardwebhooks(requests: &[Request]) -> Option<Result<(), String>> {
    let Some(python) = verifier_python() else {
        skip_or_fail(
            "the signature check with PyPI's standardwebhooks",
            &format!("the verifier is not installed (python3 -m venv target/standardwebhooks-venv && target/standardwebhooks-venv/bin/pip install {VERIFIER}, as .ci/run does)"),
        );
        return None;
    };
    let requests: Vec<Value> = requests
        .iter()
        .map(|r| {
            let headers: serde_json::Map<String, Value> = r
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or_default())))
                .collect();
            json!({
                "headers": headers,
                "body": base64::engine::general_purpose::STANDARD.encode(&r.body),
            })
        })
        .collect();
    let script = "import base64, json, sys\n\
                  from standardwebhooks import Webhook\n\
                  hook = Webhook(sys.argv[1])\n\
                  for r in json.load(sys.stdin):\n    \
                      hook.verify(base64.b64decode(r['body']), r['headers'])\n";
    let mut child = Command::new(python)
        .args(["-c", script, SIGNING_SECRET])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    {
        // Dropped at the end of the block: python reads to end of file.
        let mut stdin = child.stdin.take().expect("stdin");
        std::io::Write::write_all(&mut stdin, &serde_json::to_vec(&requests).expect("json"))
            .expect("write to python");
    }
    let out = child.wait_with_output().expect("python ends");
    Some(if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    })
}

fn assert_verified(requests: &[Request]) {
    if let Some(result) = verify_with_standardwebhooks(requests) {
        result.unwrap_or_else(|e| panic!("the PyPI verifier refused a request: {e}"));
    }
}

#[tokio::test]
async fn the_document_is_posted_signed_and_the_pypi_verifier_accepts_it() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/dags/load/dagRuns"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"dag_run_id\":\"r1\"}"))
        .expect(1)
        .mount(&receiver)
        .await;
    let sandbox = Sandbox::new();
    let url = format!("{}/api/v1/dags/load/dagRuns", receiver.uri());
    let app = app_on(&sandbox)
        .tail(&http_hook(&url, ""))
        .stepped()
        .spawn()
        .await;
    let (event_id, run_id) = (unique("evt"), unique("run"));
    // Larger than a read chunk, so the file is signed and sent in pieces.
    let mut payload: Value = serde_json::from_str(&succeeded_body(&event_id, &run_id)).unwrap();
    payload["data"]["notes"] = json!("é".repeat(150_000));
    app.post_accepted(payload.to_string()).await;

    let (job, next) = app.step_ran().await;

    let db = app.db();
    let attempts = db.attempts(job.id);
    assert_eq!(next, JobNext::Succeeded, "attempts: {attempts:?}");
    let requests = posts(&receiver).await;
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    let document: Value = serde_json::from_slice(&request.body).expect("a JSON body");
    assert_eq!(document["event"]["id"], event_id.as_str());
    assert_eq!(document["event"]["type"], "run.succeeded");
    assert_eq!(document["event"]["payload"], payload);
    assert_eq!(document["run"], Value::Null);
    assert_eq!(document["enrichment"]["status"], "none");
    assert_eq!(header(request, "content-type"), "application/json");
    assert_eq!(
        header(request, "content-length"),
        request.body.len().to_string(),
        "streamed with its length, not chunked"
    );
    assert!(request.headers.get("transfer-encoding").is_none());
    assert_eq!(header(request, "authorization"), format!("Bearer {TOKEN}"));
    assert_eq!(header(request, "x-source"), "steerhook");
    assert!(header(request, "user-agent").starts_with("steerhook/"));
    assert!(header(request, "webhook-id").starts_with("msg_"));
    assert!(header(request, "webhook-signature").starts_with("v1,"));
    assert_verified(&requests);
    // The verifier is not a rubber stamp: one byte changed and it refuses.
    let mut tampered = request.clone();
    tampered.body[20] ^= 1;
    if let Some(result) = verify_with_standardwebhooks(&[tampered]) {
        let error = result.expect_err("a tampered body must not verify");
        assert!(error.contains("No matching signature"), "{error}");
    }

    assert_eq!(attempts[0].outcome, "ok");
    assert_eq!(
        String::from_utf8_lossy(attempts[0].stdout.as_deref().unwrap_or_default()),
        "HTTP/1.1 200 OK\n{\"dag_run_id\":\"r1\"}"
    );
    assert_eq!(db.event_status(&event_id), "done");
    assert!(sandbox.payload_files_left().is_empty());
}

#[tokio::test]
async fn body_run_sends_only_the_fetched_run_under_body_key() {
    let api = MockServer::start().await;
    let run_id = unique("run");
    let run = json!({"id": run_id, "status": "succeeded", "scraperName": "products"});
    Mock::given(method("GET"))
        .and(path(format!("/runs/{run_id}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "run": run })))
        .mount(&api)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/runs/{run_id}/logs")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"logs": [{"message": "x"}]})))
        .mount(&api)
        .await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let sandbox = Sandbox::new();
    let config = app_on(&sandbox).tail(&format!(
        "[opensteer]\nbase_url = {}\napi_key = \"osk_test\"\n{}",
        toml_str(&api.uri()),
        http_hook(&receiver.uri(), "body = \"run\"\nbody_key = \"conf\"")
    ));
    let app = config.clone().stepped().spawn().await;
    app.post_accepted(&succeeded_body(&unique("evt"), &run_id))
        .await;

    let (fetch, _) = app.step_ran().await;
    assert_eq!(fetch.kind.as_str(), "fetch");
    let (_, next) = app.step_ran().await;

    assert_eq!(next, JobNext::Succeeded);
    let requests = posts(&receiver).await;
    let body: Value = serde_json::from_slice(&requests[0].body).expect("JSON");
    assert_eq!(body, json!({ "conf": run }), "only the run, under conf");
    assert_verified(&requests);
}

#[tokio::test]
async fn a_503_is_retried_with_the_same_webhook_id_and_counted_in_metrics() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_string("busy"))
        .up_to_n_times(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(202))
        .mount(&receiver)
        .await;
    let sandbox = Sandbox::new();
    let app = app_on(&sandbox)
        .tail(&http_hook(&receiver.uri(), ""))
        .stepped()
        .spawn()
        .await;
    let event_id = app
        .post_accepted(&succeeded_body(&unique("evt"), &unique("run")))
        .await;

    let (job, first) = app.step_ran().await;
    assert!(matches!(first, JobNext::RetryAt(_)), "{first:?}");
    app.advance(Duration::from_secs(3_600));
    let (_, second) = app.step_ran().await;

    assert_eq!(second, JobNext::Succeeded);
    let attempts = app.db().attempts(job.id);
    let summary: Vec<_> = attempts
        .iter()
        .map(|a| (a.outcome.as_str(), a.error_code.as_deref()))
        .collect();
    assert_eq!(
        summary,
        [("retry", Some("HTTP_SERVER_ERROR")), ("ok", None)]
    );
    assert!(
        attempts[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("503"),
        "{:?}",
        attempts[0].error
    );
    let requests = posts(&receiver).await;
    assert_eq!(requests.len(), 2);
    assert_eq!(
        header(&requests[0], "webhook-id"),
        header(&requests[1], "webhook-id"),
        "a retry is the same message"
    );
    assert_verified(&requests);
    assert_eq!(app.db().event_status(&event_id), "done");

    let metrics = reqwest::get(format!("http://{}/metrics", app.addr))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    for outcome in ["retry", "ok"] {
        assert!(
            metrics.lines().any(|l| l.contains("deliveries_total{")
                && l.contains(&format!("hook=\"{HOOK}\""))
                && l.contains(&format!("outcome=\"{outcome}\""))
                && l.ends_with(" 1")),
            "one {outcome} delivery of {HOOK} in:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn a_429_with_retry_after_2_is_retried_no_sooner_than_2_seconds_later() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "2"))
        .up_to_n_times(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let sandbox = Sandbox::new();
    // No backoff of our own: a wait can only come from Retry-After.
    let config = app_on(&sandbox).tail(&format!(
        "[queue]\nbackoff_base_secs = 0\n{}",
        http_hook(&receiver.uri(), "")
    ));
    let app = config.clone().stepped().spawn().await;
    let event_id = app
        .post_accepted(&succeeded_body(&unique("evt"), &unique("run")))
        .await;
    let asked_at = app.now_ms();

    let (job, first) = app.step_ran().await;

    assert_eq!(first, JobNext::RetryAt(asked_at + 2_000));
    let row = app.db().delivery_job(&event_id, HOOK);
    assert_eq!(row.due_at, asked_at + 2_000);
    assert_eq!(row.last_error_code.as_deref(), Some("HTTP_RATE_LIMITED"));
    app.advance(Duration::from_millis(1_999));
    assert!(
        matches!(app.step().await, Outcome::Idle { next_due_at: Some(at) } if at == asked_at + 2_000),
        "not due before 2 s"
    );
    assert_eq!(posts(&receiver).await.len(), 1);
    app.advance(Duration::from_millis(1));
    let (again, second) = app.step_ran().await;
    assert_eq!((again.id, second), (job.id, JobNext::Succeeded));
    assert_eq!(posts(&receiver).await.len(), 2);
}

#[tokio::test]
async fn a_404_fails_at_once_and_events_show_gives_the_status_and_the_answer() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_string("{\"title\":\"DAG not found\",\"detail\":\"DAG opensteer_load\"}"),
        )
        .expect(1)
        .mount(&receiver)
        .await;
    let sandbox = Sandbox::new();
    let config = app_on(&sandbox).tail(&http_hook(&receiver.uri(), ""));
    let app = config.clone().stepped().spawn().await;
    let event_id = app
        .post_accepted(&succeeded_body(&unique("evt"), &unique("run")))
        .await;

    let (job, next) = app.step_ran().await;

    assert_eq!(next, JobNext::Failed, "max_attempts is 5, yet not retried");
    let db = app.db();
    let attempts = db.attempts(job.id);
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "failed");
    assert_eq!(attempts[0].error_code.as_deref(), Some("HTTP_CLIENT_ERROR"));
    assert_eq!(
        String::from_utf8_lossy(attempts[0].stdout.as_deref().unwrap_or_default()),
        "HTTP/1.1 404 Not Found\n{\"title\":\"DAG not found\",\"detail\":\"DAG opensteer_load\"}"
    );
    assert_eq!(db.event_status(&event_id), "failed");
    assert!(matches!(
        app.step().await,
        Outcome::Idle { next_due_at: None }
    ));

    let (code, shown, _) = cli(
        &sandbox.write_config(config.config()),
        &["events", "show", &event_id],
    );
    assert_eq!(code, 0, "{shown}");
    for expected in [
        "HTTP_CLIENT_ERROR",
        "answered HTTP 404 Not Found",
        "HTTP/1.1 404 Not Found",
        "DAG not found",
    ] {
        assert!(shown.contains(expected), "{expected:?} in:\n{shown}");
    }
    assert!(!shown.contains(TOKEN), "{shown}");
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_fails_the_delivery() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/old"))
        .respond_with(ResponseTemplate::new(302).insert_header("Location", "/new"))
        .mount(&receiver)
        .await;
    // A client that follows a 302 would GET this (a 307 or 308 it could not
    // follow anyway: the streamed body cannot be sent twice).
    Mock::given(path("/new"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&receiver)
        .await;
    let sandbox = Sandbox::new();
    let app = app_on(&sandbox)
        .tail(&http_hook(&format!("{}/old", receiver.uri()), ""))
        .stepped()
        .spawn()
        .await;
    app.post_accepted(&succeeded_body(&unique("evt"), &unique("run")))
        .await;

    let (job, next) = app.step_ran().await;

    assert_eq!(next, JobNext::Failed);
    let attempt = &app.db().attempts(job.id)[0];
    assert_eq!(attempt.error_code.as_deref(), Some("HTTP_REDIRECT"));
    assert!(
        attempt
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("to /new"),
        "{:?}",
        attempt.error
    );
    assert_eq!(receiver.received_requests().await.map(|r| r.len()), Some(1));
}

#[tokio::test]
async fn a_receiver_that_hangs_is_cut_off_at_timeout_secs_and_retried() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(120)))
        .mount(&receiver)
        .await;
    let sandbox = Sandbox::new();
    let app = app_on(&sandbox)
        .tail(&http_hook(&receiver.uri(), "timeout_secs = 1"))
        .stepped()
        .spawn()
        .await;
    app.post_accepted(&succeeded_body(&unique("evt"), &unique("run")))
        .await;

    let started = Instant::now();
    let (job, next) = app.step_ran().await;
    let took = started.elapsed();

    assert!(matches!(next, JobNext::RetryAt(_)), "{next:?}");
    let attempt = &app.db().attempts(job.id)[0];
    assert_eq!(attempt.error_code.as_deref(), Some("TIMEOUT"));
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "the attempt took {took:?}"
    );
}

#[tokio::test]
async fn a_receiver_that_is_down_is_retried() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let sandbox = Sandbox::new();
    let app = app_on(&sandbox)
        .tail(&http_hook(&format!("http://127.0.0.1:{port}/"), ""))
        .stepped()
        .spawn()
        .await;
    app.post_accepted(&succeeded_body(&unique("evt"), &unique("run")))
        .await;

    let (job, next) = app.step_ran().await;

    assert!(matches!(next, JobNext::RetryAt(_)), "{next:?}");
    let attempt = &app.db().attempts(job.id)[0];
    assert_eq!(attempt.error_code.as_deref(), Some("CONNECT_FAILED"));
    assert!(
        attempt
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("refused"),
        "{:?}",
        attempt.error
    );
}

/// A bare HTTP server on a real socket: reads one request, answers 200
/// with a body of `size` bytes, and returns how many of them the socket
/// took before the client hung up.
async fn huge_answer_server(size: u64) -> (SocketAddr, tokio::task::JoinHandle<u64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        let body_len = loop {
            let n = socket.read(&mut buf).await.expect("read the request");
            assert!(n > 0, "the request ended early");
            request.extend_from_slice(&buf[..n]);
            if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("a content-length");
                break end + 4 + len;
            }
        };
        while request.len() < body_len {
            let n = socket.read(&mut buf).await.expect("read the body");
            assert!(n > 0, "the body ended early");
            request.extend_from_slice(&buf[..n]);
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {size}\r\n\r\n"
        );
        socket
            .write_all(head.as_bytes())
            .await
            .expect("write the head");
        let chunk = vec![b'x'; 64 * 1024];
        let mut written = 0u64;
        while written < size {
            let n = (size - written).min(chunk.len() as u64) as usize;
            match socket.write(&chunk[..n]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n as u64,
            }
        }
        written
    });
    (addr, task)
}

#[tokio::test]
async fn a_50_mb_answer_is_read_only_up_to_its_first_kib() {
    const SIZE: u64 = 50 << 20;
    let (addr, server) = huge_answer_server(SIZE).await;
    let sandbox = Sandbox::new();
    let app = app_on(&sandbox)
        .tail(&http_hook(&format!("http://{addr}/"), "timeout_secs = 30"))
        .stepped()
        .spawn()
        .await;
    app.post_accepted(&succeeded_body(&unique("evt"), &unique("run")))
        .await;

    let started = Instant::now();
    let (job, next) = app.step_ran().await;
    let took = started.elapsed();
    let written = tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the server stops writing once the client hangs up")
        .expect("server task");

    assert_eq!(next, JobNext::Succeeded);
    let output = app.db().attempts(job.id)[0]
        .stdout
        .clone()
        .unwrap_or_default();
    let expected = format!(
        "HTTP/1.1 200 OK\n{}\n[answer cut: only its first 1024 bytes are kept]",
        "x".repeat(1024)
    );
    assert_eq!(String::from_utf8_lossy(&output), expected);
    assert!(
        written < SIZE,
        "the client hung up after {written} of {SIZE} bytes"
    );
    eprintln!(
        "50 MB answer: attempt took {took:?}; the socket took {} KiB before the client hung up",
        written / 1024
    );
}

#[tokio::test]
async fn a_replayed_delivery_carries_the_same_webhook_id() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let sandbox = Sandbox::new();
    let config = app_on(&sandbox).tail(&http_hook(&receiver.uri(), ""));
    let app = config.clone().stepped().spawn().await;
    let event_id = app
        .post_accepted(&succeeded_body(&unique("evt"), &unique("run")))
        .await;
    let (_, first) = app.step_ran().await;
    assert_eq!(first, JobNext::Succeeded);

    let (code, stdout, _) = cli(
        &sandbox.write_config(config.config()),
        &["replay", &event_id],
    );
    assert_eq!(code, 0, "{stdout}");
    let (_, again) = app.step_ran().await;

    assert_eq!(again, JobNext::Succeeded);
    let requests = posts(&receiver).await;
    assert_eq!(requests.len(), 2);
    assert_eq!(
        header(&requests[0], "webhook-id"),
        header(&requests[1], "webhook-id")
    );
    assert_eq!(requests[0].body, requests[1].body);
    assert_verified(&requests);
}

#[tokio::test]
async fn doctor_proves_the_url_answers_without_sending_an_event() {
    let receiver = MockServer::start().await;
    Mock::given(method("HEAD"))
        .respond_with(ResponseTemplate::new(405))
        .mount(&receiver)
        .await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let sandbox = Sandbox::new();
    let down = format!(
        "[[hook]]\nname = \"down\"\nkind = \"http\"\nevents = [\"run.failed\"]\nurl = \"http://127.0.0.1:{closed}/hook\"\n"
    );
    let config = app_on(&sandbox).tail(&format!(
        "{}{down}",
        http_hook(&format!("{}/dagRuns?token=qs_secret", receiver.uri()), "")
    ));

    let (code, stdout, _) = cli(&sandbox.write_config(config.config()), &["doctor"]);

    assert_eq!(code, 1, "one hook is down:\n{stdout}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.contains(&format!("hook {name} ")))
            .unwrap_or_else(|| panic!("no line for hook {name}:\n{stdout}"))
            .to_owned()
    };
    let ok = line(HOOK);
    assert!(ok.starts_with("ok "), "{ok}");
    assert!(
        ok.contains("resolves") && ok.contains("answers HEAD with HTTP 405"),
        "{ok}"
    );
    let fail = line("down");
    assert!(fail.starts_with("FAIL"), "{fail}");
    assert!(fail.contains("does not answer"), "{fail}");
    for secret in ["qs_secret", TOKEN, SIGNING_SECRET] {
        assert!(!stdout.contains(secret), "doctor shows {secret}:\n{stdout}");
    }
    let received = receiver.received_requests().await.expect("recorded");
    assert!(
        received.iter().all(|r| r.method.as_str() == "HEAD"),
        "no event sent: {:?}",
        received
            .iter()
            .map(|r| r.method.to_string())
            .collect::<Vec<_>>()
    );
    assert_eq!(received.len(), 1);
    assert_eq!(
        header(&received[0], "authorization"),
        format!("Bearer {TOKEN}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_in_flight_at_sigterm_is_interrupted_and_sent_again_on_the_next_start() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(120)))
        .up_to_n_times(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let sandbox = Sandbox::new();
    let config = app_on(&sandbox).tail(&format!(
        "[queue]\nshutdown_grace_secs = 0\n{}",
        http_hook(&receiver.uri(), "timeout_secs = 300")
    ));
    let app = config.clone().spawn().await;
    let event_id = app
        .post_accepted(&succeeded_body(&unique("evt"), &unique("run")))
        .await;
    wait_for_async(DEADLINE, "the first POST to arrive", || async {
        (posts(&receiver).await.len() == 1).then_some(())
    })
    .await;
    let db = sandbox.db();

    let stopping = Instant::now();
    app.stop().await;

    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(5), "stopped after {took:?}");
    let job = db.delivery_job(&event_id, HOOK);
    assert_eq!(job.state, "pending", "left for the next start, not failed");
    let app = config.clone().spawn().await;
    poll_until(DEADLINE, "the delivery to be sent again", || {
        db.delivery_job(&event_id, HOOK).state == "succeeded"
    })
    .await;
    app.stop().await;
    let attempts: Vec<_> = db
        .attempts(job.id)
        .into_iter()
        .map(|a| (a.outcome, a.error_code))
        .collect();
    assert_eq!(
        attempts,
        [
            ("interrupted".to_owned(), Some("INTERRUPTED".to_owned())),
            ("ok".to_owned(), None)
        ]
    );
    let requests = posts(&receiver).await;
    assert_eq!(requests.len(), 2);
    assert_eq!(
        header(&requests[0], "webhook-id"),
        header(&requests[1], "webhook-id")
    );
}
