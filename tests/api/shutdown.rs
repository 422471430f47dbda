//! SPEC §7: SIGTERM while requests are in flight — every answered event is on
//! disk and the process exits 0. The real binary, a real signal.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::prelude::*;

const SENDERS: usize = 8;
/// Answers to collect before the signal, so it lands while requests run.
const ANSWERS_BEFORE_SIGNAL: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_requests_keeps_every_answered_event_and_exits_0() {
    let sandbox = Sandbox::new();
    let port = free_port();
    let config_path = sandbox.write_config(&Config::default().listen(format!("127.0.0.1:{port}")));
    let log_path = sandbox.path("serve.log");
    let mut daemon = serve_logging_to(&config_path, &log_path);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // Up when /healthz answers.
    let start = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(
            daemon.0.try_wait().unwrap().is_none(),
            "serve exited early:\n{}",
            log()
        );
        assert!(
            start.elapsed() < DEADLINE,
            "serve never came up:\n{}",
            log()
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }

    let answered = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let client = client.clone();
            let url = format!("{base}{WEBHOOK_PATH}");
            let answered = answered.clone();
            tokio::spawn(async move {
                let mut answers: Vec<(u16, Option<String>)> = Vec::new();
                let started = Instant::now();
                for i in 0.. {
                    let body = run_event(
                        "run.succeeded",
                        &format!("evt_{s}_{i}"),
                        &format!("run_{s}_{i}"),
                    );
                    let header = steerhook::signature::sign(SECRET, system_now_secs(), &body);
                    let sent = client
                        .post(&url)
                        .header("x-opensteer-signature", header)
                        .body(body)
                        .send()
                        .await;
                    // Once the daemon stops listening, requests fail: this sender is done.
                    let Ok(resp) = sent else { break };
                    let status = resp.status().as_u16();
                    let Ok(text) = resp.text().await else { break };
                    let id = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_owned));
                    answers.push((status, id));
                    answered.fetch_add(1, Ordering::SeqCst);
                    if started.elapsed() > Duration::from_secs(60) {
                        break;
                    }
                }
                answers
            })
        })
        .collect();

    poll_until(DEADLINE, "the first requests to be answered", || {
        answered.load(Ordering::SeqCst) >= ANSWERS_BEFORE_SIGNAL
    })
    .await;
    daemon.sigterm();
    let signalled = Instant::now();
    let status = daemon
        .exit_status(Duration::from_secs(20), "serve to exit after SIGTERM")
        .await;
    let exit_after = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "exit status; log:\n{}", log());

    let mut accepted = Vec::new();
    for sender in senders {
        for (status, id) in sender.await.unwrap() {
            assert_eq!(
                status, 202,
                "every answer is an acceptance (ids are unique)"
            );
            accepted.push(id.expect("a 202 carries an id"));
        }
    }
    assert!(accepted.len() >= ANSWERS_BEFORE_SIGNAL);

    let db = sandbox.db();
    let mut missing = Vec::new();
    for id in &accepted {
        let n: i64 = db.query_one("SELECT count(*) FROM events WHERE id = $1", &[id]);
        if n != 1 {
            missing.push(id.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} answered events are not on disk: {missing:?}",
        missing.len(),
        accepted.len()
    );
    eprintln!(
        "{} events answered; exit {:?} after SIGTERM",
        accepted.len(),
        exit_after
    );
}

/// A second SIGTERM while hooks get their grace period exits at once with
/// 1, and says so: the log's last line is written before the exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_1_at_once_and_its_log_line_is_written() {
    let sandbox = Sandbox::new();
    let port = free_port();
    let hook = sandbox.shell_hook(
        "etl",
        &["run.succeeded"],
        r#"echo started >> "$OUT/started"; sleep 1000"#,
        "",
    );
    let config_path = sandbox.write_config(
        &Config::default()
            .listen(format!("127.0.0.1:{port}"))
            .lines("queue", "shutdown_grace_secs = 600")
            .hook(&hook),
    );
    let log_path = sandbox.path("serve.log");
    let mut daemon = serve_logging_to(&config_path, &log_path);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_healthy(addr, DEADLINE).await;
    let body = run_event("run.succeeded", "evt_twice", "run_twice");
    let header = steerhook::signature::sign(SECRET, system_now_secs(), &body);
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}{WEBHOOK_PATH}"))
        .header("x-opensteer-signature", header)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    poll_until(DEADLINE, "the hook to start", || {
        sandbox.out_lines("started") == ["started"]
    })
    .await;

    daemon.sigterm();
    poll_until(DEADLINE, "the first signal to be logged", || {
        log().contains("SIGTERM received")
    })
    .await;
    daemon.sigterm();
    let status = daemon
        .exit_status(
            Duration::from_secs(20),
            "serve to exit on the second SIGTERM",
        )
        .await;
    assert_eq!(status.code(), Some(1), "log:\n{}", log());
    let text = log();
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.contains("second signal: exiting now"),
        "the last line says why it exited: {last:?}\n{text}"
    );
}
