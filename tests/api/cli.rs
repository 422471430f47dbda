//! `steerhook sign`, `verify` and `send-test` through the real binary.

use std::process::Output;

use steerhook::clock::ManualClock;

use crate::support::prelude::*;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn sign_then_verify_round_trips_and_refuses_a_tampered_body_or_a_far_clock() {
    let dir = tempfile::tempdir().unwrap();
    let body_path = dir.path().join("body.json");
    let body = run_event("run.succeeded", "evt_cli", "run_cli");
    std::fs::write(&body_path, &body).unwrap();
    let t = "1767225600";

    let out = steerhook_command()
        .args(["sign", "--secret", SECRET, "--timestamp", t])
        .arg(&body_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let header = stdout(&out);
    assert_eq!(
        header,
        steerhook::signature::sign(SECRET, NOW_SECS, &body),
        "the CLI signs like the library"
    );

    let verify = |file: &std::path::Path, at: &str| {
        steerhook_command()
            .args([
                "verify", "--secret", SECRET, "--header", &header, "--at", at,
            ])
            .arg(file)
            .output()
            .unwrap()
    };
    let out = verify(&body_path, t);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout(&out), "ok");

    let tampered = dir.path().join("tampered.json");
    let mut changed = body.clone();
    changed[10] ^= 1;
    std::fs::write(&tampered, &changed).unwrap();
    let out = verify(&tampered, t);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(stdout(&out), "SIGNATURE_MISMATCH");

    // `verify` runs offline: its words are about the command line.
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains("the --secret given") && !stderr.contains("configured"),
        "{stderr}"
    );

    let out = verify(&body_path, "1767236400"); // three hours later
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(stdout(&out), "TIMESTAMP_OUT_OF_TOLERANCE");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains("10800 s before the time given with --at") && !stderr.contains("server"),
        "{stderr}"
    );
}

#[test]
fn sign_reads_stdin_when_no_file_is_given() {
    use std::io::Write;
    let mut child = steerhook_command()
        .args(["sign", "--secret", SECRET, "--timestamp", "1767225600"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"{}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        stdout(&out),
        steerhook::signature::sign(SECRET, NOW_SECS, b"{}")
    );
}

#[test]
fn verify_prints_the_code_of_a_malformed_header() {
    let dir = tempfile::tempdir().unwrap();
    let body_path = dir.path().join("body");
    std::fs::write(&body_path, b"{}").unwrap();
    let out = steerhook_command()
        .args(["verify", "--secret", SECRET, "--header", "t=abc,v1=00"])
        .arg(&body_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(stdout(&out), "SIGNATURE_MALFORMED");
}

/// `send-test` signs with the system clock, so the app's manual clock is set to it.
async fn app_at_system_time() -> TestApp {
    TestApp::builder()
        .clock(ManualClock::at_unix_secs(system_now_secs()))
        .spawn()
        .await
}

#[tokio::test]
async fn send_test_delivers_a_sample_that_the_app_accepts() {
    let app = app_at_system_time().await;
    let out = tokio::process::Command::new(steerhook_bin())
        .args(["send-test", "--url", &app.webhook_url, "--secret", SECRET])
        .args(["--event", "run.failed", "--run-id", "run_sent"])
        .env_remove("STEERHOOK_CONFIG")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(stdout(&out).contains("202"), "{}", describe(&out));
    let (event_type, run_id): (String, String) = app
        .db()
        .query_opt("SELECT event_type, run_id FROM events", &[])
        .expect("the sample is stored");
    assert_eq!(
        (event_type.as_str(), run_id.as_str()),
        ("run.failed", "run_sent")
    );
}

#[tokio::test]
async fn send_test_exits_non_zero_when_the_secret_is_wrong() {
    let app = app_at_system_time().await;
    let out = tokio::process::Command::new(steerhook_bin())
        .args(["send-test", "--url", &app.webhook_url])
        .args(["--secret", "whsec_not_the_configured_one"])
        .env_remove("STEERHOOK_CONFIG")
        .output()
        .await
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("SIGNATURE_MISMATCH"),
        "the answer is printed: {}",
        describe(&out)
    );
    assert_eq!(app.db().count_rows("events"), 0);
}
