//! The operator's side: the CLI against a database filled by the real
//! server, `replay` while the server runs, retention, `/metrics`, `doctor`,
//! and the client address behind a trusted proxy.

use serde_json::Value;

use crate::support::prelude::*;

/// A hook that records each attempt in `$OUT/attempts` and prints a line.
fn recording_hook(sandbox: &Sandbox, name: &str, events: &[&str], extra: &str) -> String {
    sandbox.shell_hook_with(
        name,
        events,
        &[
            "/bin/sh",
            "-c",
            "echo \"$STEERHOOK_EVENT_ID $STEERHOOK_ATTEMPT\" >> \"$OUT/attempts\"; echo delivered $STEERHOOK_EVENT_ID",
        ],
        &[],
        extra,
    )
}

/// The default app with the recording hook `etl` for both run events.
async fn recording_app(sandbox: &Sandbox) -> TestApp {
    TestApp::builder()
        .sandbox(sandbox)
        .hook(&recording_hook(
            sandbox,
            "etl",
            &["run.succeeded", "run.failed"],
            "",
        ))
        .spawn()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_list_and_show_describe_what_the_server_stored_and_delivered() {
    let sandbox = Sandbox::new();
    let app = recording_app(&sandbox).await;
    for (ty, id, run) in [
        ("run.succeeded", "evt_a", "run_a"),
        ("run.failed", "evt_b", "run_b"),
    ] {
        assert_eq!(app.post_signed(&run_event(ty, id, run)).await.status(), 202);
    }
    poll_until(DEADLINE, "both delivered", || {
        app.db().event_status_opt("evt_a").as_deref() == Some("done")
            && app.db().event_status_opt("evt_b").as_deref() == Some("done")
    })
    .await;
    let config = app.write_config();

    let (code, stdout, stderr) = cli(&config, &["events", "list", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let list: Value = serde_json::from_str(&stdout).expect("events list --json is JSON");
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["evt_b", "evt_a"], "newest first");
    assert_eq!(list[0]["type"], "run.failed");
    assert_eq!(list[0]["runId"], "run_b");
    assert_eq!(list[0]["status"], "done");

    let (code, stdout, _) = cli(
        &config,
        &["events", "list", "--type", "run.succeeded", "--json"],
    );
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{stdout}");

    let (code, stdout, _) = cli(&config, &["events", "list"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("ID "), "a table with a header: {stdout}");
    assert!(
        stdout.contains("evt_a") && stdout.contains("run_b"),
        "{stdout}"
    );

    let (code, stdout, stderr) = cli(&config, &["events", "show", "evt_a", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let ev: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(ev["payload"]["data"]["run"]["id"], "run_a");
    let job = &ev["jobs"][0];
    assert_eq!(job["hook"], "etl");
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["attemptLog"][0]["outcome"], "ok");
    assert_eq!(job["attemptLog"][0]["exitCode"], 0);
    assert_eq!(job["attemptLog"][0]["stdout"], "delivered evt_a\n");

    let (code, stdout, _) = cli(&config, &["events", "show", "evt_a"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("hook etl: succeeded after 1 attempt\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("delivered evt_a"),
        "output tail shown: {stdout}"
    );

    let (code, _, stderr) = cli(&config, &["events", "show", "evt_nope"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no event with id"), "{stderr}");
}

/// Characters a terminal obeys or reorders by: controls (C0, DEL, C1) other
/// than the line breaks of the output itself, and bidirectional controls.
fn raw_terminal_controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| {
            (c.is_control() && *c != '\n')
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_list_and_show_print_control_characters_from_a_signed_payload_as_visible_escapes() {
    let sandbox = Sandbox::new();
    let app = recording_app(&sandbox).await;
    // Clear the screen, retitle the window, break the table's line; the
    // hook echoes the id, so its output tail carries the same bytes.
    let id = "evt_\u{1b}[2J\u{1b}]0;owned\u{7}\nsecond line";
    let body = serde_json::to_vec(&serde_json::json!({
        "id": id,
        "type": "run.succeeded",
        "data": {"run": {
            "id": "run_\u{1b}[31mred\r",
            "note": "\u{9b}2J \u{7f} \u{202e}exe.txt \u{1b}]52;c;Y2xpcA==\u{7}",
        }}
    }))
    .unwrap();
    assert_eq!(app.post_signed(&body).await.status(), 202);
    let plain = run_event("run.succeeded", "evt_plain", "run_plain");
    assert_eq!(app.post_signed(&plain).await.status(), 202);
    poll_until(DEADLINE, "both delivered", || {
        app.db().event_status_opt(id).as_deref() == Some("done")
            && app.db().event_status_opt("evt_plain").as_deref() == Some("done")
    })
    .await;
    let config = app.write_config();

    let (code, stdout, stderr) = cli(&config, &["events", "list"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        raw_terminal_controls(&stdout),
        Vec::<char>::new(),
        "{stdout:?}"
    );
    assert_eq!(
        stdout.lines().count(),
        3,
        "a header and one line per event: {stdout}"
    );
    assert!(
        stdout.contains("evt_\\u{1b}[2J\\u{1b}]0;owned\\u{7}\\nsecond line"),
        "the id, escaped: {stdout}"
    );
    assert!(stdout.contains("run_\\u{1b}[31mred\\r"), "{stdout}");

    let (code, stdout, stderr) = cli(&config, &["events", "show", id]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        raw_terminal_controls(&stdout),
        Vec::<char>::new(),
        "{stdout:?}"
    );
    for shown in [
        "event     evt_\\u{1b}[2J\\u{1b}]0;owned\\u{7}\\nsecond line\n",
        "\\u{9b}2J \\u{7f} \\u{202e}exe.txt",
        // The hook's unquoted echo turned the newline into a space.
        "    delivered evt_\\u{1b}[2J\\u{1b}]0;owned\\u{7} second line\n",
    ] {
        assert!(stdout.contains(shown), "{shown:?} in {stdout}");
    }

    // --json was already safe and stays as it was: the exact id.
    let (code, stdout, _) = cli(&config, &["events", "show", id, "--json"]);
    assert_eq!(code, 0);
    let ev: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(ev["id"], id);
}

crate::backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replay_while_the_server_runs_delivers_the_event_again(backend) {
        let sandbox = Sandbox::with_backend(backend);
        let app = recording_app(&sandbox).await;
        assert_eq!(
            app.post_signed(&run_event("run.succeeded", "evt_r", "run_r"))
                .await
                .status(),
            202
        );
        poll_until(DEADLINE, "first delivery", || {
            sandbox.out_lines("attempts").len() == 1
        })
        .await;
        let config = app.write_config();

        let (code, stdout, stderr) = cli(&config, &["replay", "evt_r"]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("queued evt_r for hook etl"), "{stdout}");
        poll_until(DEADLINE, "the replayed delivery", || {
            sandbox.out_lines("attempts").len() == 2
        })
        .await;
        assert_eq!(
            sandbox.out_lines("attempts"),
            ["evt_r 1", "evt_r 1"],
            "replay starts a fresh attempt count"
        );
        poll_until(DEADLINE, "done again", || {
            app.db().event_status_opt("evt_r").as_deref() == Some("done")
        })
        .await;

        let (code, _, stderr) = cli(&config, &["replay", "evt_r", "--hook", "nope"]);
        assert_eq!(code, 1);
        assert!(stderr.contains("no hook named \"nope\""), "{stderr}");
    }
}

crate::backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prune_never_removes_an_event_with_unfinished_deliveries(backend) {
        let sandbox = Sandbox::with_backend(backend);
        // The failing hook's retry is due after the manual clock's now, which
        // never moves: its delivery stays pending.
        let app = TestApp::builder()
            .sandbox(&sandbox)
            .hook(
                "[[hook]]\nname = \"flaky\"\nkind = \"shell\"\nevents = [\"run.failed\"]\n\
                 command = [\"/bin/false\"]\nmax_attempts = 5\n",
            )
            .queue("backoff_base_secs = 60")
            .hook(&recording_hook(&sandbox, "etl", &["run.succeeded"], ""))
            .spawn()
            .await;
        assert_eq!(
            app.post_signed(&run_event("run.succeeded", "evt_done", "run_1"))
                .await
                .status(),
            202
        );
        assert_eq!(
            app.post_signed(&run_event("run.failed", "evt_waiting", "run_2"))
                .await
                .status(),
            202
        );
        poll_until(DEADLINE, "one done, one retrying", || {
            app.db().event_status_opt("evt_done").as_deref() == Some("done")
                && app
                    .db()
                    .query_opt::<i64>("SELECT attempts FROM jobs WHERE hook = 'flaky'", &[])
                    .is_some_and(|n| n >= 1)
        })
        .await;
        let config = app.write_config();
        // Both were received at the manual clock's 2026-01-01: long past one day.
        let (code, stdout, stderr) = cli(&config, &["prune", "--older-than", "1d"]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("deleted 1 finished event"), "{stdout}");
        assert_eq!(
            app.db().event_status_opt("evt_done"),
            None,
            "the finished event is gone"
        );
        assert_eq!(
            app.db().event_status_opt("evt_waiting").as_deref(),
            Some("pending"),
            "unfinished work is kept"
        );
        assert_eq!(
            app.db().count_rows("attempts"),
            1,
            "the deleted event's attempts went with it; the waiting one's stay"
        );
    }
}

pub(crate) fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_webhooks_by_outcome_and_deliveries_by_hook() {
    let sandbox = Sandbox::new();
    let app = recording_app(&sandbox).await;
    let body = run_event("run.succeeded", "evt_m", "run_m");
    assert_eq!(app.post_signed(&body).await.status(), 202);
    assert_eq!(app.post_signed(&body).await.status(), 200);
    assert_eq!(app.post_webhook(&body, None).await.status(), 401);
    assert_eq!(
        app.post_webhook(&body, Some("t=1,v1=00")).await.status(),
        401
    );
    assert_eq!(app.post_signed(b"not json").await.status(), 400);
    poll_until(DEADLINE, "delivered", || {
        sandbox.out_lines("attempts").len() == 1
    })
    .await;
    poll_until(DEADLINE, "recorded", || {
        app.db().event_status_opt("evt_m").as_deref() == Some("done")
    })
    .await;

    let resp = app.get("/metrics").await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    for (series, want) in [
        ("steerhook_webhooks_total{code=\"ACCEPTED\"}", 1.0),
        ("steerhook_webhooks_total{code=\"DUPLICATE\"}", 1.0),
        ("steerhook_webhooks_total{code=\"SIGNATURE_MISSING\"}", 1.0),
        (
            "steerhook_webhooks_total{code=\"TIMESTAMP_OUT_OF_TOLERANCE\"}",
            1.0,
        ),
        ("steerhook_webhooks_total{code=\"PAYLOAD_INVALID\"}", 1.0),
        (
            "steerhook_deliveries_total{hook=\"etl\",outcome=\"ok\"}",
            1.0,
        ),
        (
            "steerhook_queue_jobs{kind=\"deliver\",state=\"succeeded\"}",
            1.0,
        ),
        ("steerhook_webhook_duration_seconds_count", 5.0),
        ("steerhook_hook_duration_seconds_count{hook=\"etl\"}", 1.0),
    ] {
        assert_eq!(metric(&text, series), Some(want), "{series} in\n{text}");
    }
    assert!(
        text.contains("steerhook_queue_oldest_due_age_seconds"),
        "{text}"
    );
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_prints_a_line_per_check_and_fails_on_an_unsafe_hook_program() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("hook.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let hook = |name: &str, program: &str| {
        format!(
            "[[hook]]\nname = \"{name}\"\nkind = \"shell\"\nevents = [\"run.failed\"]\ncommand = [{}]\n",
            toml_str(program)
        )
    };
    let config = dir.path().join("steerhook.toml");
    let db = dir.path().join("steerhook.db");
    let good = Config::default().hook(&hook("good", &script.display().to_string()));
    std::fs::write(&config, good.toml_at(&db)).unwrap();
    let (code, stdout, stderr) = cli(&config, &["doctor"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    for check in [
        "config",
        "database",
        "webhook secrets",
        "hook good",
        "opensteer api",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(check)),
            "an ok line for {check}: {stdout}"
        );
    }

    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o777)).unwrap();
    let bad = Config::default()
        .hook(&hook("writable", &script.display().to_string()))
        .hook(&hook("missing", "/nonexistent/etl.sh"))
        // The shape of the shipped example hook: the interpreter exists,
        // the script it is given does not.
        .hook(&format!(
            "[[hook]]\nname = \"script\"\nkind = \"shell\"\nevents = [\"run.failed\"]\n\
             command = [\"/bin/sh\", \"does-not-exist.sh\"]\nworking_dir = {}\n",
            toml_str(&dir.path().display().to_string())
        ))
        .secrets(&["whsec_with_a_newline\n"]);
    std::fs::write(&config, bad.toml_at(&db)).unwrap();
    let (code, stdout, _) = cli(&config, &["doctor"]);
    assert_eq!(code, 1, "{stdout}");
    let fail = |what: &str, why: &str| {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("FAIL") && l.contains(what) && l.contains(why)),
            "FAIL line for {what} mentioning {why:?}: {stdout}"
        );
    };
    fail("hook writable", "writable by group or others");
    fail("hook missing", "No such file");
    fail("hook script", "does-not-exist.sh: No such file");
    fail("hook script", "relative to working_dir");
    fail("webhook secrets", "whitespace");
    assert!(
        !stdout.contains("whsec_with_a_newline"),
        "doctor never prints a secret"
    );
}

#[tokio::test]
async fn the_logged_client_is_the_forwarded_one_only_behind_a_trusted_proxy() {
    for (trusted, want_forwarded) in [("[\"127.0.0.1\"]", true), ("[]", false)] {
        let app = TestApp::builder()
            .server(&format!("trusted_proxies = {trusted}"))
            .spawn()
            .await;
        let body = run_event("run.succeeded", "evt_x", "run_x");
        let resp = app
            .client
            .post(&app.webhook_url)
            .header("x-opensteer-signature", app.signature(&body))
            .header("x-forwarded-for", "198.51.100.7, 203.0.113.9")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let client: String = app.db().query_one("SELECT client_addr FROM events", &[]);
        if want_forwarded {
            assert_eq!(client, "203.0.113.9", "the entry our proxy added");
        } else {
            assert!(client.starts_with("127.0.0.1:"), "the peer: {client}");
        }
    }
}
