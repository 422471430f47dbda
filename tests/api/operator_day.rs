//! The operator's day against the real server and the real binary: hooks
//! routed by `match`, a hook paused and resumed while `serve` runs, failed
//! deliveries replayed in bulk after the fix, the quarantine read, prune's
//! dry run, and reading commands on a database that does not exist.

use serde_json::Value;

use crate::operate::metric;
use crate::support::prelude::*;

/// A shell hook appending "<event id> <attempt>" to `$OUT/<name>` on every
/// attempt; it fails (exit 3) while `$OUT/broken` exists.
fn hook(sandbox: &Sandbox, name: &str, extra: &str) -> String {
    sandbox.shell_hook(
        name,
        &["run.succeeded", "run.failed"],
        "echo \"$STEERHOOK_EVENT_ID $STEERHOOK_ATTEMPT\" >> \"$OUT/$STEERHOOK_HOOK\"; test ! -e \"$OUT/broken\" || exit 3",
        extra,
    )
}

/// The lines hook `name` appended.
fn runs_of(sandbox: &Sandbox, name: &str) -> Vec<String> {
    sandbox.out_lines(name)
}

crate::backends! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_with_match_gets_only_its_runs_and_the_others_show_skipped(backend) {
    let sandbox = Sandbox::with_backend(backend);
    let app = TestApp::builder()
        .sandbox(&sandbox)
        // `hooks list` counts the last 24 h of the wall clock.
        .clock(steerhook::clock::ManualClock::at_unix_secs(system_now_secs()))
        .hook(&hook(&sandbox, "every", ""))
        .hook(&hook(
            &sandbox,
            "products",
            "match = { \"/event/payload/data/run/id\" = [\"run_a\", \"run_c\"], \"/event/type\" = \"run.succeeded\" }",
        ))
        .spawn()
        .await;
    app.post_accepted(run_event("run.succeeded", "evt_a", "run_a"))
        .await;
    app.post_accepted(run_event("run.succeeded", "evt_b", "run_b"))
        .await;
    poll_until(DEADLINE, "both events done", || {
        app.db().event_status_opt("evt_a").as_deref() == Some("done")
            && app.db().event_status_opt("evt_b").as_deref() == Some("done")
    })
    .await;
    assert_eq!(runs_of(&sandbox, "every"), ["evt_a 1", "evt_b 1"]);
    assert_eq!(
        runs_of(&sandbox, "products"),
        ["evt_a 1"],
        "the hook was never started for run_b"
    );

    let config = app.write_config();
    let (code, stdout, stderr) = cli(&config, &["events", "show", "evt_b"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(
            "hook products: skipped, the hook was not started: run did not match /event/payload/data/run/id = one of run_a, run_c (it is \"run_b\")"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("status    done"), "{stdout}");
    let (_, json, _) = cli(&config, &["events", "show", "evt_b", "--json"]);
    let ev: Value = serde_json::from_str(&json).unwrap();
    let skipped: Vec<&Value> = ev["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["state"] == "skipped")
        .collect();
    assert_eq!(skipped.len(), 1, "{json}");
    assert_eq!(skipped[0]["attemptLog"][0]["outcome"], "skipped");

    let metrics = app.get("/metrics").await.text().await.unwrap();
    for (series, want) in [
        (
            "steerhook_deliveries_total{hook=\"products\",outcome=\"skipped\"}",
            1.0,
        ),
        (
            "steerhook_deliveries_total{hook=\"products\",outcome=\"ok\"}",
            1.0,
        ),
        (
            "steerhook_hook_duration_seconds_count{hook=\"products\"}",
            1.0,
        ),
    ] {
        assert_eq!(
            metric(&metrics, series),
            Some(want),
            "{series} in\n{metrics}"
        );
    }

    let (code, stdout, _) = cli(&config, &["hooks", "list", "--json"]);
    assert_eq!(code, 0);
    let hooks: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(hooks[1]["name"], "products");
    assert_eq!(hooks[1]["skippedLast24h"], 1, "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_hook_waits_while_serve_runs_and_its_deliveries_start_on_resume(backend) {
    let sandbox = Sandbox::with_backend(backend);
    let app = TestApp::builder()
        .sandbox(&sandbox)
        .hook(&hook(&sandbox, "warehouse", ""))
        .hook(&hook(&sandbox, "audit", ""))
        .spawn()
        .await;
    let config = app.write_config();
    let (code, stdout, stderr) = cli(&config, &["hooks", "pause", "warehouse"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("hook warehouse paused") && stdout.contains("still accepted"),
        "{stdout}"
    );
    let (_, again, _) = cli(&config, &["hooks", "pause", "warehouse"]);
    assert!(again.contains("already paused"), "{again}");

    app.post_accepted(run_event("run.succeeded", "evt_1", "run_1"))
        .await;
    app.post_accepted(run_event("run.succeeded", "evt_2", "run_2"))
        .await;
    // The other hook is the clock: once it has both, the worker has been
    // round the queue with the paused hook's deliveries in it.
    poll_until(DEADLINE, "the other hook delivered both", || {
        runs_of(&sandbox, "audit").len() == 2
    })
    .await;
    let (code, stdout, _) = cli(&config, &["hooks", "list"]);
    assert_eq!(code, 0);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("warehouse"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        columns[..5],
        ["warehouse", "shell", "yes", "2", "0"],
        "{stdout}"
    );
    assert!(
        runs_of(&sandbox, "warehouse").is_empty(),
        "a paused hook ran"
    );
    assert_eq!(app.db().event_status_opt("evt_1").as_deref(), Some("pending"));

    let (code, stdout, _) = cli(&config, &["hooks", "resume", "warehouse"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("hook warehouse resumed: 2 waiting deliveries start"),
        "{stdout}"
    );
    poll_until(
        DEADLINE,
        "the resumed hook's deliveries, in arrival order",
        || runs_of(&sandbox, "warehouse").len() == 2,
    )
    .await;
    assert_eq!(runs_of(&sandbox, "warehouse"), ["evt_1 1", "evt_2 1"]);

    let (code, _, stderr) = cli(&config, &["hooks", "pause", "nope"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no hook named \"nope\""), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_replayed_in_one_command_once_the_hook_is_fixed(backend) {
    let sandbox = Sandbox::with_backend(backend);
    std::fs::write(sandbox.out().join("broken"), "").unwrap();
    let app = TestApp::builder()
        .sandbox(&sandbox)
        .hook(&hook(&sandbox, "etl", "max_attempts = 1"))
        .spawn()
        .await;
    for n in 1..=3 {
        app.post_accepted(run_event("run.succeeded", &format!("evt_{n}"), &format!("run_{n}")))
        .await;
    }
    poll_until(DEADLINE, "all three failed", || {
        (1..=3).all(|n| app.db().event_status_opt(&format!("evt_{n}")).as_deref() == Some("failed"))
    })
    .await;
    let config = app.write_config();

    let (code, stdout, stderr) = cli(&config, &["replay", "--status", "failed", "--dry-run"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("would queue 3 failed deliveries (3 events) again")
            && stdout.contains("nothing was changed"),
        "{stdout}"
    );
    assert_eq!(app.db().event_status_opt("evt_1").as_deref(), Some("failed"));

    std::fs::remove_file(sandbox.out().join("broken")).unwrap();
    let (code, stdout, stderr) = cli(&config, &["replay", "--status", "failed", "--hook", "etl"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("queued 3 failed deliveries of hook etl (3 events) again"),
        "{stdout}"
    );
    poll_until(DEADLINE, "all three done", || {
        (1..=3).all(|n| app.db().event_status_opt(&format!("evt_{n}")).as_deref() == Some("done"))
    })
    .await;
    assert_eq!(runs_of(&sandbox, "etl").len(), 6, "each ran once more");

    let (_, stdout, _) = cli(&config, &["events", "show", "evt_2"]);
    assert!(stdout.contains("  replayed 1 time\n"), "{stdout}");
    // Two attempts numbered #1: the first run's, and the replay's, marked.
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("  #1 2026-"))
            .count(),
        1,
        "{stdout}"
    );
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("  #1 (replay 1) 2026-"))
            .count(),
        1,
        "the replay's attempt is marked: {stdout}"
    );

    let (_, stdout, _) = cli(&config, &["replay", "--status", "failed"]);
    assert!(
        stdout.contains("no failed deliveries; nothing to replay"),
        "{stdout}"
    );

    for usage in [
        &["replay"][..],
        &["replay", "evt_1", "--status", "failed"],
        &["replay", "evt_1", "--dry-run"],
        &["replay", "evt_1", "--since", "1d"],
        &["replay", "--status", "succeeded"],
    ] {
        let (code, _, stderr) = cli(&config, usage);
        assert_eq!(code, 2, "{usage:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quarantine_lists_and_shows_refused_bodies_with_controls_escaped(backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let body = b"{\"type\": \"run.succeeded\", \"note\": \"\x1b[2J\"}".to_vec();
    assert_eq!(app.post_signed(&body).await.status(), 400);
    assert_eq!(app.post_signed(b"\xff\xfe not json").await.status(), 400);
    let config = app.write_config();

    let (code, stdout, stderr) = cli(&config, &["quarantine", "list", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let list: Value = serde_json::from_str(&stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let (newest, oldest) = (
        list[0]["id"].as_i64().unwrap(),
        list[1]["id"].as_i64().unwrap(),
    );
    assert!(newest > oldest, "newest first: {stdout}");
    assert_eq!(list[1]["size"], body.len());
    assert!(
        list[1]["reason"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{stdout}"
    );

    let (code, stdout, _) = cli(&config, &["quarantine", "list"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("ID "), "{stdout}");
    assert_eq!(stdout.lines().count(), 3, "{stdout}");

    let (code, stdout, _) = cli(&config, &["quarantine", "show", &oldest.to_string()]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("\"note\": \"\\u{1b}[2J\""),
        "escaped: {stdout}"
    );
    assert!(!stdout.contains('\x1b'), "{stdout:?}");
    assert!(stdout.contains("from 127.0.0.1"), "{stdout}");

    let (_, stdout, _) = cli(
        &config,
        &["quarantine", "show", &newest.to_string(), "--json"],
    );
    let shown: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shown["body"], Value::Null, "not UTF-8");
    assert_eq!(shown["bodyBase64"], "//4gbm90IGpzb24=", "the exact bytes");

    let (code, _, stderr) = cli(&config, &["quarantine", "show", "999999"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("no quarantined body with id 999999"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_dry_run_counts_and_prune_names_the_failed_deliveries_it_deletes(backend) {
    let sandbox = Sandbox::with_backend(backend);
    std::fs::write(sandbox.out().join("broken"), "").unwrap();
    let app = TestApp::builder()
        .sandbox(&sandbox)
        .hook(&hook(&sandbox, "etl", "max_attempts = 1"))
        .spawn()
        .await;
    app.post_accepted(run_event("run.succeeded", "evt_failed", "run_1"))
        .await;
    poll_until(DEADLINE, "failed", || {
        app.db().event_status_opt("evt_failed").as_deref() == Some("failed")
    })
    .await;
    std::fs::remove_file(sandbox.out().join("broken")).unwrap();
    app.post_accepted(run_event("run.succeeded", "evt_ok", "run_2"))
        .await;
    poll_until(DEADLINE, "done", || {
        app.db().event_status_opt("evt_ok").as_deref() == Some("done")
    })
    .await;
    let config = app.write_config();
    // The manual clock stands at 2026-01-01: long past one day.
    let (code, stdout, stderr) = cli(&config, &["prune", "--older-than", "1d", "--dry-run"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("would delete 2 finished events"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 of those events had a delivery that failed and was never replayed; `steerhook replay --status failed` first"),
        "{stdout}"
    );
    assert_eq!(app.db().count_rows("events"), 2, "a dry run deletes nothing");
    let (code, stdout, _) = cli(&config, &["prune", "--older-than", "1d"]);
    assert_eq!(code, 0);
    assert!(
        stdout.starts_with("deleted 2 finished events")
            && stdout
                .contains("1 of those events had a delivery that failed and was never replayed"),
        "{stdout}"
    );
    assert_eq!(app.db().count_rows("events"), 0);
}
}

#[test]
fn reading_commands_on_a_missing_database_name_it_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("steerhook.db");
    let config = dir.path().join("steerhook.toml");
    let with_hook = Config::default().hook(
        "[[hook]]\nname = \"etl\"\nkind = \"shell\"\nevents = [\"run.succeeded\"]\ncommand = [\"/bin/true\"]\n",
    );
    std::fs::write(&config, with_hook.toml_at(&db)).unwrap();
    for args in [
        &["events", "list"][..],
        &["events", "show", "evt_1"],
        &["replay", "evt_1"],
        &["replay", "--status", "failed"],
        &["hooks", "list"],
        &["hooks", "pause", "etl"],
        &["quarantine", "list"],
        &["prune", "--dry-run"],
        &["prune"],
    ] {
        let out = steerhook_command()
            .current_dir(dir.path())
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("there is no database at {}", db.display()))
                && stderr.contains("has `steerhook serve` run with this configuration?"),
            "{args:?}: {stderr}"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            [std::ffi::OsString::from("steerhook.toml")],
            "{args:?} created a file"
        );
    }
}

#[test]
fn usage_errors_exit_2_and_help_lists_the_accepted_values() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("steerhook.toml");
    for args in [
        &["events", "list", "--status", "finished"][..],
        &["events", "list", "--type", "run.started"],
        &["send-test", "--event", "run.started"],
        &["replay", "--status", "done"],
        &["completions", "tcsh"],
        &["quarantine", "show", "not-a-number"],
    ] {
        let out = steerhook_command()
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("invalid value"), "{args:?}: {stderr}");
    }
    for (args, values) in [
        (
            &["events", "list", "--help"][..],
            &["pending", "done", "failed", "run.succeeded", "run.failed"][..],
        ),
        (&["send-test", "--help"], &["run.succeeded", "run.failed"]),
        (&["replay", "--help"], &["failed"]),
    ] {
        let out = steerhook_command().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        for v in values {
            assert!(help.contains(v), "{args:?} lists {v}: {help}");
        }
    }
}

/// `serve` with the example secret warns when others can reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_warns_when_the_example_secret_is_used_on_a_public_address() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    for (host, warned) in [("0.0.0.0", true), ("127.0.0.1", false)] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("steerhook.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"{host}:{port}\"\n[webhook]\nsecrets = [\"{}\"]\n[storage]\npath = {}\n",
                steerhook::config::EXAMPLE_WEBHOOK_SECRET,
                toml_str(&dir.path().join("steerhook.db").display().to_string())
            ),
        )
        .unwrap();
        let mut serve = Daemon(
            steerhook_command()
                .arg("--config")
                .arg(&config)
                .arg("serve")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let client = reqwest::Client::new();
        wait_for_async(DEADLINE, "serve to come up", || {
            let probe = client
                .get(format!("http://127.0.0.1:{port}/healthz"))
                .send();
            async move { probe.await.ok().map(drop) }
        })
        .await;
        kill(Pid::from_raw(serve.0.id() as i32), Signal::SIGTERM).unwrap();
        // Read to the end (the daemon's exit closes it), then reap.
        let mut log = String::new();
        std::io::Read::read_to_string(&mut serve.0.stderr.take().unwrap(), &mut log).unwrap();
        assert_eq!(serve.0.wait().unwrap().code(), Some(0), "{log}");
        assert_eq!(
            log.contains("example secret of config.example.toml"),
            warned,
            "{host}: {log}"
        );
        assert!(
            !log.contains(steerhook::config::EXAMPLE_WEBHOOK_SECRET),
            "the secret itself is not logged: {log}"
        );
    }
}

crate::backends! {
/// SPEC §2: the fetch giving up does not fail the event; `events show` puts
/// the enrichment beside the status, and explains a delivery still waiting
/// for its fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_show_explains_enrichment_beside_the_status_and_a_blocked_delivery(backend) {
    use wiremock::matchers::{method, path_regex};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let api = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex("^/runs/run_gone"))
        .respond_with(ResponseTemplate::new(409).set_body_json(serde_json::json!({
            "error": "the run belongs to another contract", "code": "CLOUD_CONTRACT_MISMATCH"
        })))
        .mount(&api)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/runs/run_busy"))
        .respond_with(ResponseTemplate::new(503).set_body_json(serde_json::json!({
            "error": "busy", "code": "CLOUD_CAPACITY_FULL"
        })))
        .mount(&api)
        .await;
    let sandbox = Sandbox::with_backend(backend);
    let app = TestApp::builder()
        .sandbox(&sandbox)
        .opensteer(&api.uri())
        .queue("backoff_base_secs = 600\nbackoff_max_secs = 600")
        .hook(&hook(&sandbox, "etl", ""))
        .spawn()
        .await;
    app.post_accepted(run_event("run.succeeded", "evt_gone", "run_gone"))
        .await;
    app.post_accepted(run_event("run.succeeded", "evt_busy", "run_busy"))
        .await;
    poll_until(DEADLINE, "the hook ran without the run", || {
        app.db().event_status_opt("evt_gone").as_deref() == Some("done")
    })
    .await;
    poll_until(
        DEADLINE,
        "the busy run's fetch to wait for its retry",
        || {
            app.db()
                .query_opt::<i64>(
                    "SELECT j.attempts FROM jobs j JOIN events e ON e.seq = j.event_seq
                     WHERE e.id = 'evt_busy' AND j.kind = 'fetch' AND j.state = 'pending'",
                    &[],
                )
                .is_some_and(|n| n >= 1)
        },
    )
    .await;
    let config = app.write_config();

    let (code, stdout, stderr) = cli(&config, &["events", "show", "evt_gone"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("status    done\nenrichment none (CLOUD_CONTRACT_MISMATCH): ")
            && stdout.contains("CLOUD_CONTRACT_MISMATCH"),
        "done, with the reason for no enrichment: {stdout}"
    );
    assert!(
        stdout.contains("fetch run and logs: gave up after 1 attempt; hooks ran with enrichment none"),
        "{stdout}"
    );
    assert_eq!(runs_of(&sandbox, "etl"), ["evt_gone 1"]);

    let (code, stdout, _) = cli(&config, &["events", "show", "evt_busy"]);
    assert_eq!(code, 0);
    let due: i64 = app.db().query_one(
        "SELECT due_at FROM jobs WHERE kind = 'fetch' AND state = 'pending'",
        &[],
    );
    assert!(
        stdout.contains(&format!(
            "hook etl: blocked: waits for the run and its logs to be fetched (next fetch attempt at {})",
            steerhook::clock::format_rfc3339_ms(due)
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("status    pending\nenrichment pending (the fetch has not finished)"),
        "{stdout}"
    );
    let (_, json, _) = cli(&config, &["events", "show", "evt_gone", "--json"]);
    let ev: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(ev["enrichment"]["status"], "none", "{json}");
}
}
