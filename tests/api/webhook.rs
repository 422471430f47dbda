//! SPEC §4: every answer of the webhook endpoint, `/healthz`, 404 and 405.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::prelude::*;

crate::backends! {
    #[tokio::test]
    async fn webhook_returns_202_with_the_event_id_for_a_signed_run_event(backend) {
        let app = TestApp::builder().backend(backend).spawn().await;
        let resp = app
            .post_signed(&run_event("run.succeeded", "evt_1", "run_1"))
            .await;
        assert_eq!(resp.status().as_u16(), 202);
        let body = json_body(resp).await;
        assert_eq!(
            body,
            serde_json::json!({"status": "accepted", "id": "evt_1"})
        );
        assert_eq!(app.db().count_rows("events"), 1);
    }

    #[tokio::test]
    async fn webhook_returns_200_duplicate_with_the_first_id_for_the_same_delivery(backend) {
        let app = TestApp::builder().backend(backend).spawn().await;
        let body = run_event("run.failed", "evt_first", "run_dup");
        assert_eq!(app.post_signed(&body).await.status().as_u16(), 202);
        let resp = app.post_signed(&body).await;
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(
            json_body(resp).await,
            serde_json::json!({"status": "duplicate", "id": "evt_first"})
        );
        assert_eq!(app.db().count_rows("events"), 1);
    }
}

#[tokio::test]
async fn webhook_returns_413_when_content_length_is_over_max_body_bytes() {
    let app = TestApp::builder()
        .server("max_body_bytes = 4096")
        .spawn()
        .await;
    let body = vec![b'x'; 8192];
    let resp = app.post_signed(&body).await;
    assert_error(resp, 413, "PAYLOAD_TOO_LARGE").await;
    assert_eq!(app.db().count_rows("events"), 0, "nothing stored");
    assert_eq!(app.db().count_rows("quarantine"), 0, "nothing quarantined");
}

#[tokio::test]
async fn webhook_accepts_a_body_of_exactly_max_body_bytes() {
    let app = TestApp::builder()
        .server("max_body_bytes = 4096")
        .spawn()
        .await;
    let mut body = run_event("run.succeeded", "evt_edge", "run_edge");
    // Pad the JSON object with whitespace up to the limit exactly.
    body.extend(std::iter::repeat_n(b' ', 4096 - body.len()));
    assert_eq!(body.len(), 4096);
    let resp = app.post_signed(&body).await;
    assert_eq!(resp.status().as_u16(), 202);
}

#[tokio::test]
async fn webhook_checks_the_size_before_the_signature() {
    let app = TestApp::builder()
        .server("max_body_bytes = 4096")
        .spawn()
        .await;
    let resp = app.post_webhook(&vec![b'x'; 8192], None).await;
    assert_error(resp, 413, "PAYLOAD_TOO_LARGE").await;
}

/// A chunked request with no Content-Length whose body grows past the limit
/// and never ends: the answer must come as soon as the limit is passed, not
/// after the body timeout. reqwest's `stream` feature is not enabled in this
/// crate, so the request is written by hand on a real socket.
#[tokio::test]
async fn webhook_returns_413_when_a_chunked_body_grows_past_max_body_bytes() {
    let app = TestApp::builder()
        .server("max_body_bytes = 4096\nbody_timeout_ms = 30000")
        .spawn()
        .await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         x-opensteer-signature: t={NOW_SECS},v1={}\r\nTransfer-Encoding: chunked\r\n\r\n",
        app.addr,
        "00".repeat(32)
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // 3 × 2000 bytes = 6000 > 4096, and no terminating chunk.
    for _ in 0..3 {
        let chunk = format!("{:x}\r\n{}\r\n", 2000, "x".repeat(2000));
        stream.write_all(chunk.as_bytes()).await.unwrap();
    }
    let response = tokio::time::timeout(Duration::from_secs(10), read_response(&mut stream))
        .await
        .expect("answered before the body timeout (30 s) and before 10 s");
    let (status, body) = response;
    assert_eq!(status, 413, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["code"], "PAYLOAD_TOO_LARGE");
    assert_eq!(app.db().count_rows("events"), 0);
    assert_eq!(app.db().count_rows("quarantine"), 0);
}

/// Reads one HTTP/1.1 response with a Content-Length: (status, body).
async fn read_response(stream: &mut tokio::net::TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.expect("read the response");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("a content-length");
            if buf.len() >= end + 4 + len || n == 0 {
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .expect("a status line");
                let body = String::from_utf8_lossy(&buf[end + 4..]).to_string();
                return (status, body);
            }
        }
        assert!(n > 0, "connection closed before a full response: {buf:?}");
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn webhook_returns_401_when_the_signature_header_is_missing() {
    let app = TestApp::spawn().await;
    let resp = app
        .post_webhook(&run_event("run.succeeded", "e", "r"), None)
        .await;
    assert_error(resp, 401, "SIGNATURE_MISSING").await;
    assert_eq!(app.db().count_rows("events"), 0);
}

#[tokio::test]
async fn webhook_returns_401_when_the_signature_header_is_malformed() {
    let app = TestApp::spawn().await;
    for header in ["v1=abcd", "t=1,v1=zz", "t=,v1=00", "nonsense"] {
        let resp = app
            .post_webhook(&run_event("run.succeeded", "e", "r"), Some(header))
            .await;
        assert_error(resp, 401, "SIGNATURE_MALFORMED").await;
    }
    assert_eq!(app.db().count_rows("events"), 0);
}

#[tokio::test]
async fn webhook_returns_401_when_timestamp_is_outside_tolerance() {
    let app = TestApp::spawn().await;
    let body = run_event("run.succeeded", "evt_t", "run_t");
    for t in [NOW_SECS - 301, NOW_SECS + 301] {
        let header = steerhook::signature::sign(SECRET, t, &body);
        let resp = app.post_webhook(&body, Some(&header)).await;
        assert_error(resp, 401, "TIMESTAMP_OUT_OF_TOLERANCE").await;
    }
    // Exactly at the edge is inside.
    let header = steerhook::signature::sign(SECRET, NOW_SECS - 300, &body);
    let resp = app.post_webhook(&body, Some(&header)).await;
    assert_eq!(resp.status().as_u16(), 202);
}

#[tokio::test]
async fn webhook_uses_the_app_clock_for_the_tolerance() {
    let app = TestApp::spawn().await;
    let body = run_event("run.succeeded", "evt_c", "run_c");
    let header = app.signature(&body);
    app.advance(Duration::from_secs(301));
    assert_error(
        app.post_webhook(&body, Some(&header)).await,
        401,
        "TIMESTAMP_OUT_OF_TOLERANCE",
    )
    .await;
}

#[tokio::test]
async fn webhook_returns_401_when_no_signature_matches() {
    let app = TestApp::spawn().await;
    let body = run_event("run.succeeded", "evt_m", "run_m");
    let header = steerhook::signature::sign("whsec_someone_else", NOW_SECS, &body);
    assert_error(
        app.post_webhook(&body, Some(&header)).await,
        401,
        "SIGNATURE_MISMATCH",
    )
    .await;
    assert_eq!(app.db().count_rows("events"), 0);
}

#[tokio::test]
async fn webhook_never_parses_or_keeps_an_unsigned_body() {
    let app = TestApp::spawn().await;
    let header = steerhook::signature::sign("whsec_wrong", NOW_SECS, b"not json");
    assert_error(
        app.post_webhook(b"not json", Some(&header)).await,
        401,
        "SIGNATURE_MISMATCH",
    )
    .await;
    assert_eq!(
        app.db().count_rows("quarantine"),
        0,
        "an unsigned body is not kept"
    );
}

crate::backends! {
    #[tokio::test]
    async fn webhook_returns_400_and_quarantines_a_signed_body_that_is_not_json(backend) {
        let app = TestApp::builder().backend(backend).spawn().await;
        // Not UTF-8 either: the quarantine keeps bytes, not text.
        let body: &[u8] = b"definitely {not json\xff\x00\r\n";
        assert_error(app.post_signed(body).await, 400, "PAYLOAD_INVALID").await;
        let (stored, signed_at, reason, client): (Vec<u8>, i64, String, Option<String>) = app
            .db()
            .query_opt(
                "SELECT body, signed_at, reason, client_addr FROM quarantine",
                &[],
            )
            .expect("one quarantined row");
        assert_eq!(stored, body, "the exact raw bytes");
        assert_eq!(signed_at, NOW_SECS as i64);
        assert!(reason.contains("JSON"), "reason {reason:?}");
        assert!(
            client
                .as_deref()
                .is_some_and(|c| c.starts_with("127.0.0.1:")),
            "client {client:?}"
        );
        assert_eq!(app.db().count_rows("events"), 0);
    }
}

#[tokio::test]
async fn webhook_returns_400_for_each_unusable_signed_payload() {
    let app = TestApp::spawn().await;
    let cases: [(&str, &[u8]); 5] = [
        ("a JSON array", br#"[{"type":"run.succeeded","runId":"r"}]"#),
        ("a JSON string", br#""run.succeeded""#),
        ("an object without type", br#"{"id":"e","runId":"r"}"#),
        (
            "run.failed without run id",
            br#"{"type":"run.failed","id":"e","data":{"run":{"status":"failed"}}}"#,
        ),
        (
            "run.succeeded whose run id is not a string",
            br#"{"type":"run.succeeded","runId":42}"#,
        ),
    ];
    for (i, (what, body)) in cases.iter().enumerate() {
        let resp = app.post_signed(body).await;
        assert_eq!(resp.status().as_u16(), 400, "case {what}");
        assert_error(resp, 400, "PAYLOAD_INVALID").await;
        assert_eq!(
            app.db().count_rows("quarantine"),
            i as i64 + 1,
            "case {what} is quarantined"
        );
    }
    let bodies: Vec<Vec<u8>> = app
        .db()
        .query("SELECT body FROM quarantine ORDER BY id", &[]);
    let want: Vec<Vec<u8>> = cases.iter().map(|(_, b)| b.to_vec()).collect();
    assert_eq!(bodies, want);
    assert_eq!(app.db().count_rows("events"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_accepts_numbers_beyond_f64_and_hands_their_text_to_the_hook_unchanged() {
    let sandbox = Sandbox::new();
    let app = TestApp::builder()
        .sandbox(&sandbox)
        .hook(&sandbox.shell_hook_with(
            "save",
            &["run.succeeded"],
            &["/bin/sh", "-c", "cat > \"$OUT/doc.json\""],
            &[],
            "",
        ))
        .spawn()
        .await;
    let digits = "7".repeat(5_000);
    let body = format!(
        r#"{{"type":"run.succeeded","id":"evt_big","data":{{"run":{{"id":"run_big"}}}},"huge":1e99999,"long":{digits},"tiny":-1E-99999,"exact":0.1000000000000000000000000000001}}"#
    );
    let resp = app.post_signed(body.as_bytes()).await;
    assert_eq!(
        resp.status().as_u16(),
        202,
        "{}",
        resp.text().await.unwrap()
    );
    let stored: Vec<u8> = app.db().event_body("evt_big");
    assert_eq!(stored, body.as_bytes(), "the stored body is the raw body");
    // Done: the hook has exited, so its file is complete.
    poll_until(DEADLINE, "the delivery", || {
        app.db()
            .event_status_opt("evt_big")
            .is_some_and(|s| s == "done")
    })
    .await;
    let doc = sandbox.read_out_string("doc.json");
    for number in [
        "\"huge\":1e99999",
        &format!("\"long\":{digits}"),
        "\"tiny\":-1E-99999",
        "\"exact\":0.1000000000000000000000000000001",
    ] {
        assert!(
            doc.contains(number),
            "{} in the hook's document",
            &number[..number.len().min(40)]
        );
    }
}

#[tokio::test]
async fn webhook_refuses_a_body_nested_deeper_than_the_limit_with_a_message_saying_so() {
    let app = TestApp::spawn().await;
    let depth = 200;
    let body = format!(
        r#"{{"type":"run.succeeded","runId":"run_deep","deep":{}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let error = assert_error(
        app.post_signed(body.as_bytes()).await,
        400,
        "PAYLOAD_INVALID",
    )
    .await;
    let message = error["error"].as_str().unwrap();
    assert!(
        message.contains("nest deeper than 127 levels") && !message.contains("not valid JSON"),
        "{message}"
    );
    assert_eq!(
        app.db().count_rows("quarantine"),
        1,
        "the body is quarantined"
    );
}

#[tokio::test]
async fn webhook_returns_200_ignored_for_another_event_type() {
    let app = TestApp::spawn().await;
    let body = br#"{"id":"evt_x","type":"scraper.updated","data":{"id":"scr_1"}}"#;
    let resp = app.post_signed(body).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        json_body(resp).await,
        serde_json::json!({"status": "ignored"})
    );
    assert_eq!(app.db().count_rows("events"), 0);
    assert_eq!(app.db().count_rows("quarantine"), 0);
}

crate::backends! {
    #[tokio::test]
    async fn webhook_returns_the_first_id_when_the_sender_retries_with_a_new_id_and_timestamp(backend) {
        let app = TestApp::builder().backend(backend).spawn().await;
        let first = run_event("run.succeeded", "evt_try1", "run_retried");
        assert_eq!(app.post_signed(&first).await.status().as_u16(), 202);
        app.advance(Duration::from_secs(60));
        let retry = run_event("run.succeeded", "evt_try2", "run_retried");
        let resp = app.post_signed(&retry).await;
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(
            json_body(resp).await,
            serde_json::json!({"status": "duplicate", "id": "evt_try1"})
        );
        let (n, id, signed_at): (i64, String, i64) = app
            .db()
            .query_one("SELECT count(*), min(id), min(signed_at) FROM events", &[]);
        assert_eq!(
            (n, id.as_str(), signed_at),
            (1, "evt_try1", NOW_SECS as i64)
        );
        // The same run with the other type is another event.
        let other = run_event("run.failed", "evt_try3", "run_retried");
        assert_eq!(app.post_signed(&other).await.status().as_u16(), 202);
        assert_eq!(app.db().count_rows("events"), 2);
    }
}

#[tokio::test]
async fn healthz_returns_200_ok_while_the_database_answers() {
    let app = TestApp::spawn().await;
    let resp = app.get("/healthz").await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(json_body(resp).await, serde_json::json!({"status": "ok"}));
}

#[tokio::test]
async fn an_unknown_path_returns_404_not_found_as_json() {
    let app = TestApp::spawn().await;
    assert_error(app.get("/nope").await, 404, "NOT_FOUND").await;
    let resp = app
        .client
        .post(format!("{}/webhooks/other", app.base_url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn a_wrong_method_on_a_known_path_returns_405_method_not_allowed_as_json() {
    let app = TestApp::spawn().await;
    let cases = [
        (reqwest::Method::GET, WEBHOOK_PATH),
        (reqwest::Method::PUT, WEBHOOK_PATH),
        (reqwest::Method::DELETE, WEBHOOK_PATH),
        (reqwest::Method::POST, "/healthz"),
        (reqwest::Method::DELETE, "/healthz"),
    ];
    for (method, path) in cases {
        let resp = app
            .client
            .request(method.clone(), format!("{}{path}", app.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 405, "{method} {path}");
        assert_error(resp, 405, "METHOD_NOT_ALLOWED").await;
    }
}

#[tokio::test]
async fn the_app_stops_cleanly_when_its_token_is_cancelled() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz").await.status().as_u16(), 200);
    app.stop().await;
}
