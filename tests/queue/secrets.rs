//! The API key goes to the API on every request and nowhere else.

use std::time::Duration;

use serde_json::json;
use wiremock::{MockServer, ResponseTemplate};

use crate::queue_app;
use crate::support::prelude::*;

#[tokio::test]
async fn the_api_key_is_sent_on_every_request_and_never_logged_or_stored() {
    let api = MockServer::start().await;
    // A hostile API echoes the key back in every error it can.
    let echo = format!("key {API_KEY} is not valid");
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "error": echo, "code": "CLOUD_AUTH_FAILED", "details": {"apiKey": API_KEY}
        })))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&api)
        .await;
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .respond_with(ResponseTemplate::new(500).set_body_string(format!("<h1>{echo}</h1>")))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&api)
        .await;
    mount_runs(&api, FakeRuns::lines(450)).await;
    let sandbox = Sandbox::new();
    let setup = queue_app(&sandbox, Some(&api)).queue("auth_retry_secs = 1");
    let app = setup.clone().stepped().spawn().await;
    let id = app.post_run("run_secret").await;
    app.step().await; // 401
    app.advance(Duration::from_secs(1));
    app.step().await; // 500
    app.advance(Duration::from_secs(1));
    app.drain(5).await;
    assert_eq!(sandbox.db().event_status(&id), "done");
    app.stop().await;

    let requests = api.received_requests().await.unwrap();
    assert_eq!(requests.len(), 6, "401, 500, run, three log pages");
    for r in &requests {
        assert_eq!(
            r.headers.get("x-api-key").and_then(|v| v.to_str().ok()),
            Some(API_KEY),
            "{} {} carries the key",
            r.method,
            r.url
        );
        assert!(
            !r.url.as_str().contains(API_KEY),
            "the key is not in the URL: {}",
            r.url
        );
    }

    let logs = captured_logs();
    assert!(
        logs.contains("Opensteer API answered") && logs.contains("[redacted]"),
        "the capture works and saw the echoed errors"
    );
    assert!(
        !logs.contains(API_KEY),
        "the key appears in the log:\n{}",
        logs.lines()
            .filter(|l| l.contains(API_KEY))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let errors: Vec<String> = sandbox.db().query(
        "SELECT coalesce(error, '') || coalesce(error_code, '') FROM attempts",
        &[],
    );
    assert!(errors.iter().any(|e| e.contains("CLOUD_AUTH_FAILED")));
    assert!(
        errors.iter().all(|e| !e.contains(API_KEY)),
        "attempts: {errors:?}"
    );
    // Nowhere in the database at all, whatever the table.
    for suffix in ["", "-wal"] {
        let mut p = sandbox.db_path().into_os_string();
        p.push(suffix);
        if let Ok(bytes) = std::fs::read(&p) {
            assert!(
                !bytes
                    .windows(API_KEY.len())
                    .any(|w| w == API_KEY.as_bytes()),
                "the key is stored in {p:?}"
            );
        }
    }
}
