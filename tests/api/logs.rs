//! Logs: one line per request with the outcome code, event id and latency;
//! `[log] format = "json"` gives one JSON object per line; never a secret
//! or a signature.

use serde_json::Value;

use crate::support::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_a_line_per_request_and_no_secret_or_signature() {
    let sandbox = Sandbox::new();
    let port = free_port();
    let config = sandbox.write_config(
        &Config::default()
            .listen(format!("127.0.0.1:{port}"))
            .lines("log", "format = \"json\"\nlevel = \"info\""),
    );
    let log_path = sandbox.path("serve.log");
    let mut child = serve_logging_to(&config, &log_path);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_for_async(DEADLINE, "serve to come up", || {
        let probe = client.get(format!("{base}/healthz")).send();
        async move { probe.await.ok().map(drop) }
    })
    .await;
    let body = run_event("run.succeeded", "evt_log_1", "run_log_1");
    let header = steerhook::signature::sign(SECRET, system_now_secs(), &body);
    let resp = client
        .post(format!("{base}{WEBHOOK_PATH}"))
        .header("x-opensteer-signature", &header)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let resp = client
        .post(format!("{base}{WEBHOOK_PATH}"))
        .header("x-opensteer-signature", "t=1,v1=abcd")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    child.sigterm();
    let status = child
        .exit_status(DEADLINE, "serve to exit after SIGTERM")
        .await;
    assert_eq!(status.code(), Some(0));

    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    // Lines are written by a log thread; the last ones before the exit too.
    assert_eq!(
        lines.last().map(|l| &l["message"]),
        Some(&Value::from("stopped")),
        "the last line:\n{log}"
    );
    let requests: Vec<&Value> = lines.iter().filter(|l| l["message"] == "webhook").collect();
    assert_eq!(requests.len(), 2, "one line per request:\n{log}");
    assert_eq!(requests[0]["code"], "ACCEPTED");
    assert_eq!(requests[0]["status"], 202);
    assert!(
        requests[0]["latency_us"].is_u64(),
        "latency: {}",
        requests[0]
    );
    assert!(log.contains("evt_log_1"), "the event id is logged:\n{log}");
    assert_eq!(requests[1]["code"], "TIMESTAMP_OUT_OF_TOLERANCE");
    let v1 = header.split("v1=").nth(1).unwrap();
    assert!(!log.contains(v1), "a signature was logged:\n{log}");
    assert!(!log.contains(SECRET), "the secret was logged:\n{log}");
}
