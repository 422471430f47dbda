//! Shell hooks, from the webhook to the finished process (SPEC §6, §7).

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use steerhook::dispatch::Outcome;
use steerhook::hooks::shell::truncation_marker;
use steerhook::store::JobNext;

use crate::support::prelude::*;
use crate::{app_on, succeeded_body};

/// Enough to pass any backoff of the first attempts with `backoff_base_secs = 1`.
const PAST_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct Document {
    event: DocumentEvent,
    run: Value,
    logs: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DocumentEvent {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    run_id: String,
    received_at: String,
    payload: Box<RawValue>,
}

#[tokio::test]
async fn hook_gets_the_stored_event_on_stdin_in_the_payload_file_and_in_its_environment() {
    let sandbox = Sandbox::new();
    let app = app_on(&sandbox)
        .hook(&sandbox.shell_hook(
            "etl",
            &["run.succeeded"],
            r#"cat > "$OUT/stdin"
           cat "$STEERHOOK_PAYLOAD_FILE" > "$OUT/file"
           env -0 > "$OUT/env""#,
            "",
        ))
        .stepped()
        .spawn()
        .await;
    let (event_id, run_id) = (unique("evt"), unique("run"));
    // Spacing, key order, a trailing zero and a \u escape: any re-encoding shows.
    let body = format!(
        r#"{{"type": "run.succeeded",  "id": "{event_id}", "data": {{"runId": "{run_id}", "status": "succeeded", "price": 2.50, "name": "caf\u00e9", "z": {{}}, "a": [1 , 2]}}}}"#
    );
    assert_eq!(app.post_accepted(body.to_string()).await, event_id);

    let (job, next) = app.step_ran().await;

    assert_eq!((job.kind.as_str(), job.hook.as_str()), ("deliver", "etl"));
    let db = app.db();
    let attempts = db.attempts(job.id);
    assert_eq!(next, JobNext::Succeeded, "attempts: {attempts:?}");
    let stdin = sandbox.read_out("stdin");
    assert!(!stdin.is_empty(), "the hook got a document on stdin");
    assert_eq!(
        sandbox.read_out("file"),
        stdin,
        "payload file and stdin are the same bytes"
    );
    let doc: Document = serde_json::from_slice(&stdin).expect("stdin is the JSON document");
    assert_eq!(doc.event.id, event_id);
    assert_eq!(doc.event.event_type, "run.succeeded");
    assert_eq!(doc.event.run_id, run_id);
    assert!(
        doc.event.received_at.ends_with('Z'),
        "receivedAt is RFC 3339 UTC: {}",
        doc.event.received_at
    );
    assert_eq!(
        doc.event.payload.get(),
        body,
        "event.payload is the posted body, byte for byte"
    );
    assert_eq!(
        doc.event.payload.get().as_bytes(),
        db.event_body(&event_id),
        "and what was stored"
    );
    assert_eq!(doc.run, Value::Null, "no [opensteer]: run is null");
    assert_eq!(doc.logs, Value::Null, "no [opensteer]: logs are null");

    let env = parse_env(&sandbox.read_out("env"));
    let expected = [
        ("STEERHOOK_EVENT_ID", event_id.as_str()),
        ("STEERHOOK_EVENT_TYPE", "run.succeeded"),
        ("STEERHOOK_RUN_ID", run_id.as_str()),
        ("STEERHOOK_RUN_STATUS", "succeeded"),
        ("STEERHOOK_HOOK", "etl"),
        ("STEERHOOK_ATTEMPT", "1"),
    ];
    for (name, value) in expected {
        assert_eq!(env.get(name).map(String::as_str), Some(value), "{name}");
    }
    let payload_file = std::path::PathBuf::from(&env["STEERHOOK_PAYLOAD_FILE"]);
    assert_eq!(
        payload_file.parent(),
        Some(sandbox.payload_dir().as_path()),
        "the payload file lives in the app's private payload directory"
    );
    assert!(
        !payload_file.exists(),
        "payload file {} removed after the attempt",
        payload_file.display()
    );
    assert!(sandbox.payload_files_left().is_empty());
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "ok");
    assert_eq!(attempts[0].exit_code, Some(0));
    assert_eq!(db.delivery_job(&event_id, "etl").state, "succeeded");
    assert_eq!(db.event_status(&event_id), "done");
}

#[tokio::test]
async fn hook_environment_is_cleaned_except_for_passthrough_and_configured_env() {
    // Unique names: no other test reads or writes them.
    std::env::set_var("HOOKS_TEST_DAEMON_ONLY_SECRET", "must-not-leak");
    std::env::set_var("HOOKS_TEST_PASSED_THROUGH", "passed");
    let sandbox = Sandbox::new();
    let app = app_on(&sandbox)
        .hook(&sandbox.shell_hook_with(
            "env-dump",
            &["run.succeeded"],
            &["env", "-0"],
            &[("ETL_TARGET", "warehouse")],
            r#"env_passthrough = ["HOOKS_TEST_PASSED_THROUGH", "HOOKS_TEST_NEVER_SET"]"#,
        ))
        .stepped()
        .spawn()
        .await;
    let event_id = app
        .post_accepted(&succeeded_body(&unique("evt"), &unique("run")))
        .await;

    let (job, next) = app.step_ran().await;

    assert_eq!(next, JobNext::Succeeded);
    let attempts = app.db().attempts(job.id);
    let env = parse_env(attempts[0].stdout.as_deref().expect("stdout kept"));
    let names: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "ETL_TARGET",
            "HOOKS_TEST_PASSED_THROUGH",
            "OUT",
            "PATH",
            "STEERHOOK_ATTEMPT",
            "STEERHOOK_ENRICHMENT",
            "STEERHOOK_EVENT_ID",
            "STEERHOOK_EVENT_TYPE",
            "STEERHOOK_HOOK",
            "STEERHOOK_PAYLOAD_FILE",
            "STEERHOOK_RUN_ID",
            "STEERHOOK_RUN_STATUS",
        ],
        "exactly these variables; the daemon's own never leak"
    );
    assert_eq!(env["HOOKS_TEST_PASSED_THROUGH"], "passed");
    assert_eq!(env["ETL_TARGET"], "warehouse");
    assert_eq!(env["STEERHOOK_EVENT_ID"], event_id);
    assert_eq!(env["STEERHOOK_ENRICHMENT"], "none", "no [opensteer] here");
}

#[tokio::test]
async fn payload_values_that_look_like_shell_never_change_the_argv_or_the_variables() {
    let sandbox = Sandbox::new();
    let script = r#"printf '%s\0' "$0" "$@" > "$OUT/argv"
        printf %s "$STEERHOOK_RUN_ID" > "$OUT/run_id"
        printf %s "$STEERHOOK_EVENT_ID" > "$OUT/event_id""#;
    let argv = [
        "sh",
        "-c",
        script,
        "hook-argv0",
        "--source",
        "$(touch pwned-dollar)",
        "`touch pwned-tick`",
        "a; touch pwned-semi",
        "-rf",
        "line1\nline2",
        "$STEERHOOK_RUN_ID",
    ];
    let out = sandbox.out().display().to_string();
    let hook = sandbox.shell_hook_with(
        "argv",
        &["run.succeeded"],
        &argv,
        &[],
        &format!("working_dir = {}", toml_str(&out)),
    );
    let app = app_on(&sandbox).hook(&hook).stepped().spawn().await;
    let tag = unique("x");
    let run_id = format!(
        "-{tag}$(touch pwned-run);`touch pwned-run2` 'q' \"dq\" $HOME\n--second-line; rm -rf pwned"
    );
    let event_id = format!("--evt-{tag}\n$(touch pwned-evt);`id`");
    let body = json!({
        "type": "run.succeeded",
        "id": event_id,
        "data": {"runId": run_id, "status": "succeeded", "note": "$(touch pwned-note); `id`"}
    });
    assert_eq!(app.post_accepted(body.to_string()).await, event_id);

    let (job, next) = app.step_ran().await;

    let attempts = app.db().attempts(job.id);
    assert_eq!(next, JobNext::Succeeded, "attempts: {attempts:?}");
    let expected: Vec<u8> = argv[3..]
        .iter()
        .flat_map(|arg| arg.bytes().chain([0]))
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&sandbox.read_out("argv")),
        String::from_utf8_lossy(&expected),
        "argv is exactly the configured one"
    );
    assert_eq!(sandbox.read_out_string("run_id"), run_id);
    assert_eq!(sandbox.read_out_string("event_id"), event_id);
    let planted: Vec<_> = std::fs::read_dir(sandbox.out())
        .expect("read out dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("pwned"))
        .collect();
    assert!(planted.is_empty(), "nothing was executed: {planted:?}");
}

#[tokio::test]
async fn timeout_kills_the_hook_and_its_children_and_records_timeout() {
    let sandbox = Sandbox::new();
    let hook = sandbox.shell_hook(
        "slow",
        &["run.succeeded"],
        r#"echo $$ > "$OUT/pids.tmp"
           sleep 1000 &
           echo $! >> "$OUT/pids.tmp"
           mv "$OUT/pids.tmp" "$OUT/pids"
           sleep 1000
           wait"#,
        "timeout_secs = 1\nkill_grace_secs = 1\nmax_attempts = 1",
    );
    let app = app_on(&sandbox).hook(&hook).stepped().spawn().await;
    let event_id = app
        .post_accepted(&succeeded_body(&unique("evt"), &unique("run")))
        .await;

    let (job, next) = app.step_ran().await;

    let db = app.db();
    let attempts = db.attempts(job.id);
    assert_eq!(next, JobNext::Failed, "attempts: {attempts:?}");
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].error_code.as_deref(), Some("TIMEOUT"));
    assert_eq!(attempts[0].outcome, "failed");
    let job_row = db.delivery_job(&event_id, "slow");
    assert_eq!(
        (job_row.state.as_str(), job_row.last_error_code.as_deref()),
        ("failed", Some("TIMEOUT"))
    );
    let pids: Vec<i32> = sandbox
        .out_lines("pids")
        .iter()
        .map(|l| l.trim().parse().expect("a pid"))
        .collect();
    assert_eq!(pids.len(), 2, "the hook recorded $$ and $!");
    wait_until_gone(&pids, pids[0]).await;
}

#[tokio::test]
async fn hundred_mib_of_output_is_stored_truncated_without_growing_the_daemon() {
    const LIMIT: usize = 65_536;
    const HUNDRED_MIB: usize = 100 * 1024 * 1024;
    let sandbox = Sandbox::new();
    let hook = sandbox.shell_hook(
        "noisy",
        &["run.succeeded"],
        "head -c 104857600 /dev/zero; printf END",
        &format!("max_output_bytes = {LIMIT}"),
    );
    // Alone, so other tests' allocations do not count as ours.
    let app = app_on(&sandbox)
        .hook(&hook)
        .stepped()
        .exclusive()
        .spawn()
        .await;
    app.post_accepted(&succeeded_body(&unique("evt"), &unique("run")))
        .await;
    let rss_before = vm_kib("self", "VmRSS:");

    let (job, next) = app.step_ran().await;

    let rss_growth_kib = vm_kib("self", "VmRSS:").saturating_sub(rss_before);
    assert_eq!(next, JobNext::Succeeded);
    let attempts = app.db().attempts(job.id);
    let stdout = attempts[0].stdout.clone().expect("stdout kept");
    let marker = truncation_marker((HUNDRED_MIB + 3 - LIMIT) as u64);
    assert!(
        stdout.len() <= LIMIT + marker.len(),
        "stored stdout is {} bytes",
        stdout.len()
    );
    assert!(
        stdout.starts_with(marker.as_bytes()),
        "stored stdout starts with {marker:?}"
    );
    assert!(stdout.ends_with(b"\0\0END"), "the tail is kept");
    assert!(
        rss_growth_kib < 16 * 1024,
        "RSS grew by {rss_growth_kib} KiB"
    );
}

crate::backends! {
    #[tokio::test]
    async fn failure_then_success_makes_two_attempts_and_a_delivered_event(backend) {
        let sandbox = Sandbox::with_backend(backend);
        let hook = sandbox.shell_hook(
            "flaky",
            &["run.succeeded"],
            r#"echo "$STEERHOOK_ATTEMPT" >> "$OUT/attempts"
               [ -e "$OUT/failed-once" ] && exit 0
               touch "$OUT/failed-once"
               exit 1"#,
            "",
        );
        let app = app_on(&sandbox)
            .queue("backoff_base_secs = 1")
            .hook(&hook)
            .stepped()
            .spawn()
            .await;
        let event_id = app
            .post_accepted(&succeeded_body(&unique("evt"), &unique("run")))
            .await;

        let (_, first) = app.step_ran().await;
        let JobNext::RetryAt(due) = first else {
            panic!("first attempt must be retried, got {first:?}")
        };
        assert!(
            due <= app.now_ms() + 1_000,
            "first backoff is at most backoff_base_secs"
        );
        app.advance(PAST_BACKOFF);
        let (job, second) = app.step_ran().await;

        assert_eq!(second, JobNext::Succeeded);
        assert!(matches!(
            app.step().await,
            Outcome::Idle { next_due_at: None }
        ));
        let db = app.db();
        let attempts = db.attempts(job.id);
        let summary: Vec<_> = attempts
            .iter()
            .map(|a| (a.attempt, a.outcome.as_str(), a.exit_code))
            .collect();
        assert_eq!(summary, [(1, "retry", Some(1)), (2, "ok", Some(0))]);
        assert_eq!(attempts[0].error_code.as_deref(), Some("EXIT_NONZERO"));
        assert_eq!(sandbox.out_lines("attempts"), ["1", "2"]);
        assert_eq!(db.delivery_job(&event_id, "flaky").state, "succeeded");
        assert_eq!(db.event_status(&event_id), "done");
    }
}

crate::backends! {
    #[tokio::test]
    async fn always_failing_hook_gets_exactly_max_attempts_then_the_delivery_fails(backend) {
        let sandbox = Sandbox::with_backend(backend);
        let hook = sandbox.shell_hook(
            "broken",
            &["run.succeeded"],
            r#"echo "$STEERHOOK_ATTEMPT" >> "$OUT/attempts"; echo "broken on purpose" >&2; exit 3"#,
            "max_attempts = 3",
        );
        let app = app_on(&sandbox)
            .queue("backoff_base_secs = 1")
            .hook(&hook)
            .stepped()
            .spawn()
            .await;
        let event_id = app
            .post_accepted(&succeeded_body(&unique("evt"), &unique("run")))
            .await;

        let mut nexts = Vec::new();
        loop {
            match app.step().await {
                Outcome::Ran { next, .. } => nexts.push(next),
                Outcome::Idle { next_due_at: None } => break,
                Outcome::Idle { .. } => {}
            }
            assert!(
                nexts.len() <= 3,
                "more than max_attempts attempts: {nexts:?}"
            );
            app.advance(PAST_BACKOFF);
        }

        assert_eq!(nexts.len(), 3);
        assert!(matches!(nexts[0], JobNext::RetryAt(_)));
        assert!(matches!(nexts[1], JobNext::RetryAt(_)));
        assert_eq!(nexts[2], JobNext::Failed);
        let db = app.db();
        let job = db.delivery_job(&event_id, "broken");
        assert_eq!(job.state, "failed");
        assert_eq!(job.attempts, 3);
        assert_eq!(job.last_error_code.as_deref(), Some("EXIT_NONZERO"));
        let attempts = db.attempts(job.id);
        let outcomes: Vec<_> = attempts.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(outcomes, ["retry", "retry", "failed"]);
        assert!(attempts
            .iter()
            .all(|a| a.exit_code == Some(3) && a.stderr.as_deref() == Some(b"broken on purpose\n")));
        assert_eq!(db.event_status(&event_id), "failed");
        assert_eq!(sandbox.out_lines("attempts"), ["1", "2", "3"]);
    }
}

/// Runs `events` deliveries of a hook with `concurrency` through the real
/// loop; returns how many of its processes ran at once, as each saw at its start.
async fn overlaps_seen(concurrency: Option<usize>, events: usize) -> Vec<usize> {
    let sandbox = Sandbox::new();
    let extra = concurrency.map_or(String::new(), |n| format!("concurrency = {n}"));
    let hook = sandbox.shell_hook(
        "counted",
        &["run.succeeded"],
        r#"mkdir "$OUT/running.$$"
           ls -d "$OUT"/running.* | wc -l >> "$OUT/overlap"
           sleep 0.3
           rmdir "$OUT/running.$$""#,
        &extra,
    );
    let app = app_on(&sandbox).hook(&hook).spawn().await;
    let mut ids = Vec::new();
    for _ in 0..events {
        ids.push(
            app.post_accepted(&succeeded_body(&unique("evt"), &unique("run")))
                .await,
        );
    }
    let db = app.db();
    poll_until(DEADLINE, "every delivery to succeed", || {
        ids.iter()
            .all(|id| db.delivery_job(id, "counted").state == "succeeded")
    })
    .await;
    app.stop().await;
    let seen: Vec<usize> = sandbox
        .out_lines("overlap")
        .iter()
        .map(|l| l.trim().parse().expect("a count"))
        .collect();
    assert_eq!(seen.len(), events, "one start per event: {seen:?}");
    seen
}

#[tokio::test]
async fn hook_concurrency_caps_simultaneous_runs_of_one_hook_in_the_real_loop() {
    let seen = overlaps_seen(Some(2), 10).await;

    let max = seen.iter().copied().max().unwrap_or(0);
    assert!(max <= 2, "at most 2 at once, saw {seen:?}");
    assert_eq!(max, 2, "the two slots are used in parallel: {seen:?}");
}

#[tokio::test]
async fn hook_runs_one_at_a_time_by_default_in_the_real_loop() {
    let seen = overlaps_seen(None, 4).await;

    assert!(seen.iter().all(|n| *n == 1), "never two at once: {seen:?}");
}

#[tokio::test]
async fn worker_does_not_spin_while_every_due_delivery_waits_for_a_busy_hook() {
    let sandbox = Sandbox::new();
    let hook = sandbox.shell_hook(
        "busy",
        &["run.succeeded"],
        r#"echo started >> "$OUT/started"; sleep 2"#,
        "",
    );
    // Alone: the CPU time measured is the whole process's.
    let app = app_on(&sandbox).hook(&hook).exclusive().spawn().await;
    let first = app
        .post_accepted(&succeeded_body(&unique("evt"), &unique("run")))
        .await;
    let second = app
        .post_accepted(&succeeded_body(&unique("evt"), &unique("run")))
        .await;
    poll_until(DEADLINE, "the first delivery to start", || {
        !sandbox.read_out("started").is_empty()
    })
    .await;

    // The first runs for 2 s; the second is due but its hook is at its limit.
    let (cpu_before, wall_before) = (cpu_time("self"), std::time::Instant::now());
    poll_until(DEADLINE, "the first delivery to finish", || {
        app.db().delivery_job(&first, "busy").state == "succeeded"
    })
    .await;
    let (cpu, wall) = (cpu_time("self") - cpu_before, wall_before.elapsed());

    assert!(
        cpu < wall / 10,
        "the daemon used {cpu:?} of CPU in {wall:?} while only waiting"
    );
    let db = app.db();
    poll_until(
        DEADLINE,
        "the second delivery to run after the first",
        || db.delivery_job(&second, "busy").state == "succeeded",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn one_event_fans_out_to_every_matching_hook_independently_and_only_to_those() {
    let sandbox = Sandbox::new();
    let record = r#"echo "$STEERHOOK_HOOK $STEERHOOK_EVENT_TYPE" >> "$OUT/seen""#;
    let hooks = [
        sandbox.shell_hook("all", &["run.succeeded", "run.failed"], record, ""),
        sandbox.shell_hook("failures", &["run.failed"], record, ""),
        sandbox.shell_hook(
            "broken",
            &["run.failed"],
            &format!("{record}; exit 1"),
            "max_attempts = 1",
        ),
    ]
    .concat();
    let app = app_on(&sandbox).hook(&hooks).stepped().spawn().await;
    let succeeded = app
        .post_accepted(&succeeded_body(&unique("evt"), &unique("run")))
        .await;
    let failed_run = unique("run");
    let failed_body =
        json!({"type": "run.failed", "id": unique("evt"), "data": {"runId": failed_run}});
    let failed = app.post_accepted(failed_body.to_string()).await;
    // The sender's retry of the same run: stored once, delivered once.
    let response = app
        .post_signed(
            json!({"type": "run.failed", "id": unique("evt"), "data": {"runId": failed_run}})
                .to_string(),
        )
        .await;
    let status = response.status().as_u16();
    let answer = json_body(response).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("duplicate"))
    );

    let mut ran = Vec::new();
    while let Outcome::Ran { job, next } = app.step().await {
        ran.push((job.hook, next));
    }

    ran.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        ran,
        [
            ("all".to_owned(), JobNext::Succeeded),
            ("all".to_owned(), JobNext::Succeeded),
            ("broken".to_owned(), JobNext::Failed),
            ("failures".to_owned(), JobNext::Succeeded),
        ]
    );
    let mut seen = sandbox.out_lines("seen");
    seen.sort();
    assert_eq!(
        seen,
        [
            "all run.failed",
            "all run.succeeded",
            "broken run.failed",
            "failures run.failed"
        ]
    );
    let db = app.db();
    assert_eq!(db.event_status(&succeeded), "done");
    assert_eq!(
        db.event_status(&failed),
        "failed",
        "one failed delivery marks the event failed"
    );
    assert_eq!(db.delivery_job(&failed, "failures").state, "succeeded");
    assert_eq!(db.delivery_job(&failed, "all").state, "succeeded");
    let hooks_of_succeeded: Vec<String> = db.query(
        "SELECT j.hook FROM jobs j JOIN events e ON e.seq = j.event_seq WHERE e.id = $1",
        &[&succeeded],
    );
    assert_eq!(
        hooks_of_succeeded,
        ["all"],
        "only the hooks that want the type"
    );
}

/// The nice value this test runs at, which the app's own threads keep.
fn own_nice() -> i32 {
    let out = std::process::Command::new("nice")
        .output()
        .expect("coreutils nice");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn hooks_run_queue_nice_steps_below_the_daemon_ten_unless_configured() {
    let daemon = own_nice();
    for (queue, want) in [("", (daemon + 10).min(19)), ("nice = 0", daemon)] {
        let sandbox = Sandbox::new();
        let app = app_on(&sandbox)
            .queue(queue)
            .hook(&sandbox.shell_hook(
                "etl",
                &["run.succeeded"],
                r#"nice > "$OUT/nice.tmp" && mv "$OUT/nice.tmp" "$OUT/nice""#,
                "",
            ))
            .spawn()
            .await;
        app.post_accepted(succeeded_body(&unique("evt"), &unique("run")))
            .await;

        let seen = wait_for(DEADLINE, "the hook to write its nice value", || {
            Some(sandbox.read_out_string("nice")).filter(|s| !s.is_empty())
        })
        .await;

        assert_eq!(seen.trim(), want.to_string(), "[queue] {queue}");
        assert_eq!(own_nice(), daemon, "the daemon's threads keep theirs");
        app.stop().await;
    }
}
