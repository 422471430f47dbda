//! `hooks::shell` on its own: every test runs real child processes.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use steerhook::hooks::shell::{
    run_shell_hook, truncation_marker, Invocation, ShellFailure, ShellHookSettings, ShellHookSpec,
    ShellOutcome,
};
use steerhook::hooks::PayloadFile;
use tokio_util::sync::CancellationToken;

use crate::support::prelude::*;

/// How long one attempt may take before the test fails: well below the
/// spec's 30 s timeout, so an attempt that hangs is caught, not timed out.
const ATTEMPT_DEADLINE: Duration = Duration::from_secs(10);
const DOCUMENT: &[u8] =
    br#"{"event":{"id":"evt_1","type":"run.succeeded","runId":"run_1"},"run":null,"logs":null}"#;

/// A sandbox whose payload directory exists, as the dispatcher makes it.
fn new_sandbox() -> Sandbox {
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.payload_dir()).expect("payloads dir");
    sandbox
}

/// A spec running `command`, with `OUT` set to the sandbox's `out/`.
fn hook_spec(sandbox: &Sandbox, command: &[&str]) -> ShellHookSpec {
    let mut env = BTreeMap::new();
    env.insert("OUT".to_string(), sandbox.out().display().to_string());
    ShellHookSpec {
        name: "test-hook".to_string(),
        settings: ShellHookSettings {
            command: command.iter().map(|arg| arg.to_string()).collect(),
            working_dir: None,
            env,
            env_passthrough: Vec::new(),
            timeout: Duration::from_secs(30),
            kill_grace: Duration::from_millis(300),
            max_output_bytes: 1024 * 1024,
        },
    }
}

fn sh(script: &str) -> Vec<&str> {
    vec!["/bin/sh", "-c", script, "hook"]
}

fn contract_vars() -> Vec<(String, String)> {
    [
        ("STEERHOOK_EVENT_ID", "evt_1"),
        ("STEERHOOK_EVENT_TYPE", "run.succeeded"),
        ("STEERHOOK_RUN_ID", "run_1"),
        ("STEERHOOK_RUN_STATUS", "succeeded"),
        ("STEERHOOK_HOOK", "test-hook"),
        ("STEERHOOK_ATTEMPT", "1"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .collect()
}

/// The attempt's payload file, as the dispatcher writes it: in the
/// sandbox's payload directory, removed when dropped.
async fn payload_for(dir: &Path, document: &[u8]) -> PayloadFile {
    let document = document.to_vec();
    PayloadFile::create(dir, move |w| w.write_all(&document))
        .await
        .expect("the payload file is written")
}

/// One attempt with the contract's variables; the payload file lives as
/// long as the attempt, as in the dispatcher.
async fn run_attempt(sandbox: &Sandbox, spec: &ShellHookSpec, document: &[u8]) -> ShellOutcome {
    let payload = payload_for(&sandbox.payload_dir(), document).await;
    run_shell_hook(
        spec,
        Invocation {
            payload: payload.path(),
            vars: contract_vars(),
        },
        CancellationToken::new(),
    )
    .await
}

/// Waits until `out/pids` holds `count` pids (one per line) and returns them.
async fn wait_for_pids(sandbox: &Sandbox, count: usize) -> Vec<i32> {
    let path = sandbox.out().join("pids");
    let read = || -> Vec<i32> {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    };
    poll_until(DEADLINE, "the hook to record its pids", || {
        read().len() >= count
    })
    .await;
    read()
}

#[tokio::test]
async fn hook_receives_the_document_on_stdin_and_in_a_private_payload_file_that_is_removed_after() {
    let sandbox = new_sandbox();
    let spec = hook_spec(
        &sandbox,
        &sh(r#"cat > "$OUT/stdin"
        cat "$STEERHOOK_PAYLOAD_FILE" > "$OUT/file"
        stat -c %a "$STEERHOOK_PAYLOAD_FILE" > "$OUT/mode"
        printf %s "$STEERHOOK_PAYLOAD_FILE" > "$OUT/path""#),
    );

    let outcome = run_attempt(&sandbox, &spec, DOCUMENT).await;

    assert_eq!(
        outcome.result,
        Ok(()),
        "stderr: {}",
        String::from_utf8_lossy(&outcome.stderr)
    );
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(sandbox.read_out("stdin"), DOCUMENT, "stdin");
    assert_eq!(sandbox.read_out("file"), DOCUMENT, "payload file");
    assert_eq!(sandbox.read_out("mode"), b"600\n", "payload file mode");
    let path = PathBuf::from(String::from_utf8(sandbox.read_out("path")).expect("utf-8 path"));
    assert_eq!(path.parent(), Some(sandbox.payload_dir().as_path()));
    assert!(
        !path.exists(),
        "payload file {} still exists",
        path.display()
    );
    assert!(sandbox.payload_files_left().is_empty());
}

#[tokio::test]
async fn hook_environment_holds_only_path_contract_vars_passthrough_and_configured_env() {
    // Unique names: no other test reads or writes them.
    std::env::set_var("STEERHOOK_TEST_DAEMON_SECRET", "must-not-leak");
    std::env::set_var("STEERHOOK_TEST_PASSED_THROUGH", "passed");
    let sandbox = new_sandbox();
    let mut spec = hook_spec(&sandbox, &["env", "-0"]);
    spec.settings.env_passthrough = vec![
        "STEERHOOK_TEST_PASSED_THROUGH".to_string(),
        "STEERHOOK_TEST_NEVER_SET".to_string(),
    ];
    spec.settings
        .env
        .insert("ETL_TARGET".to_string(), "warehouse".to_string());

    let outcome = run_attempt(&sandbox, &spec, DOCUMENT).await;

    assert_eq!(outcome.result, Ok(()));
    let env = parse_env(&outcome.stdout);
    let names: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "ETL_TARGET",
            "OUT",
            "PATH",
            "STEERHOOK_ATTEMPT",
            "STEERHOOK_EVENT_ID",
            "STEERHOOK_EVENT_TYPE",
            "STEERHOOK_HOOK",
            "STEERHOOK_PAYLOAD_FILE",
            "STEERHOOK_RUN_ID",
            "STEERHOOK_RUN_STATUS",
            "STEERHOOK_TEST_PASSED_THROUGH",
        ],
        "exactly these variables"
    );
    for (name, value) in contract_vars() {
        assert_eq!(env.get(&name), Some(&value), "{name}");
    }
    assert_eq!(env["STEERHOOK_TEST_PASSED_THROUGH"], "passed");
    assert_eq!(env["ETL_TARGET"], "warehouse");
    assert_eq!(
        Some(env["PATH"].as_str()),
        std::env::var("PATH").ok().as_deref()
    );
    assert!(env["STEERHOOK_PAYLOAD_FILE"].starts_with(&sandbox.payload_dir().display().to_string()));
}

#[tokio::test]
async fn program_is_looked_up_in_the_hooks_path() {
    let sandbox = new_sandbox();
    let bin = sandbox.dir().join("bin");
    std::fs::create_dir(&bin).expect("bin dir");
    // A symlink, not a freshly written executable: writing one races with
    // other tests' forks (ETXTBSY).
    std::os::unix::fs::symlink("/usr/bin/env", bin.join("steerhook-test-only-hook"))
        .expect("symlink");
    let mut spec = hook_spec(&sandbox, &["steerhook-test-only-hook", "-0"]);
    spec.settings
        .env
        .insert("PATH".to_string(), bin.display().to_string());

    let outcome = run_attempt(&sandbox, &spec, DOCUMENT).await;

    assert_eq!(outcome.result, Ok(()));
    assert_eq!(
        parse_env(&outcome.stdout)["PATH"],
        bin.display().to_string()
    );
}

#[tokio::test]
async fn argv_and_variables_reach_the_hook_unaltered_whatever_they_contain() {
    let sandbox = new_sandbox();
    let hostile = [
        "$(touch pwned)",
        "`touch pwned`",
        "; touch pwned",
        "--help",
        "-",
        "line one\nline two",
        "'\"\\",
        "",
        "  spaced  ",
        "*",
    ];
    let mut command = sh(r#"printf '%s\0' "$@""#);
    command.extend(hostile);
    let mut spec = hook_spec(&sandbox, &command);
    spec.settings.working_dir = Some(sandbox.out());

    let outcome = run_attempt(&sandbox, &spec, DOCUMENT).await;

    assert_eq!(outcome.result, Ok(()));
    let mut expected = Vec::new();
    for arg in hostile {
        expected.extend_from_slice(arg.as_bytes());
        expected.push(0);
    }
    assert_eq!(outcome.stdout, expected, "argv printed NUL-separated");

    // The same strings as variable values.
    let vars: Vec<(String, String)> = hostile
        .iter()
        .enumerate()
        .map(|(i, value)| (format!("STEERHOOK_TEST_VALUE_{i}"), value.to_string()))
        .collect();
    let spec = hook_spec(&sandbox, &["env", "-0"]);
    let payload = payload_for(&sandbox.payload_dir(), DOCUMENT).await;
    let outcome = run_shell_hook(
        &spec,
        Invocation {
            payload: payload.path(),
            vars: vars.clone(),
        },
        CancellationToken::new(),
    )
    .await;
    assert_eq!(outcome.result, Ok(()));
    let env = parse_env(&outcome.stdout);
    for (name, value) in vars {
        assert_eq!(env.get(&name), Some(&value), "{name}");
    }
    assert!(
        !sandbox.out().join("pwned").exists(),
        "something was run through a shell"
    );
}

#[tokio::test]
async fn hook_runs_in_its_working_dir() {
    let sandbox = new_sandbox();
    let mut spec = hook_spec(&sandbox, &["pwd"]);
    spec.settings.working_dir = Some(sandbox.out());

    let outcome = run_attempt(&sandbox, &spec, DOCUMENT).await;

    assert_eq!(outcome.result, Ok(()));
    assert_eq!(
        outcome.stdout,
        format!("{}\n", sandbox.out().display()).into_bytes()
    );
}

#[tokio::test]
async fn non_zero_exit_is_exit_failure_with_its_output() {
    let sandbox = new_sandbox();
    let spec = hook_spec(&sandbox, &sh("echo to-stdout; echo to-stderr >&2; exit 3"));

    let outcome = run_attempt(&sandbox, &spec, DOCUMENT).await;

    assert_eq!(outcome.result, Err(ShellFailure::Exit(3)));
    assert_eq!(outcome.result.as_ref().unwrap_err().code(), "EXIT_NONZERO");
    assert_eq!(outcome.exit_code, Some(3));
    assert_eq!(outcome.signal, None);
    assert_eq!(outcome.stdout, b"to-stdout\n");
    assert_eq!(outcome.stderr, b"to-stderr\n");
    assert!(sandbox.payload_files_left().is_empty());
}

#[tokio::test]
async fn missing_program_is_a_spawn_failure_naming_it() {
    let sandbox = new_sandbox();
    for program in [
        "/nonexistent/steerhook-no-such-program",
        "steerhook-no-such-program",
    ] {
        let spec = hook_spec(&sandbox, &[program, "--flag"]);

        let outcome = run_attempt(&sandbox, &spec, DOCUMENT).await;

        match &outcome.result {
            Err(ShellFailure::Spawn(message)) => {
                assert!(
                    message.contains(program),
                    "{program}: message {message:?} does not name it"
                )
            }
            other => panic!("{program}: expected a spawn failure, got {other:?}"),
        }
        assert_eq!(outcome.result.as_ref().unwrap_err().code(), "SPAWN_FAILED");
        assert_eq!(outcome.exit_code, None);
        assert!(
            sandbox.payload_files_left().is_empty(),
            "{program}: payload file left"
        );
    }
}

#[tokio::test]
async fn non_executable_program_and_missing_working_dir_are_spawn_failures() {
    let sandbox = new_sandbox();
    let script = sandbox.dir().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let spec = hook_spec(&sandbox, &[script.to_str().expect("utf-8 path")]);
    let outcome = run_attempt(&sandbox, &spec, DOCUMENT).await;
    assert!(
        matches!(&outcome.result, Err(ShellFailure::Spawn(message)) if message.contains("not-executable.sh")),
        "{:?}",
        outcome.result
    );

    let mut spec = hook_spec(&sandbox, &["true"]);
    spec.settings.working_dir = Some(sandbox.dir().join("no-such-dir"));
    let outcome = run_attempt(&sandbox, &spec, DOCUMENT).await;
    assert!(
        matches!(&outcome.result, Err(ShellFailure::Spawn(message)) if message.contains("no-such-dir")),
        "{:?}",
        outcome.result
    );
    assert!(sandbox.payload_files_left().is_empty());
}

#[tokio::test]
async fn hook_killed_by_a_signal_is_a_signal_failure() {
    let sandbox = new_sandbox();
    let spec = hook_spec(&sandbox, &sh("kill -KILL $$"));

    let outcome = run_attempt(&sandbox, &spec, DOCUMENT).await;

    assert_eq!(outcome.result, Err(ShellFailure::Signal(9)));
    assert_eq!(
        outcome.result.as_ref().unwrap_err().code(),
        "KILLED_BY_SIGNAL"
    );
    assert_eq!(outcome.signal, Some(9));
    assert_eq!(outcome.exit_code, None);
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group_including_grandchildren() {
    let sandbox = new_sandbox();
    let mut spec = hook_spec(
        &sandbox,
        &sh(r#"echo $$ > "$OUT/pids.tmp"
        sleep 1000 & echo $! >> "$OUT/pids.tmp"
        sleep 1000 & echo $! >> "$OUT/pids.tmp"
        mv "$OUT/pids.tmp" "$OUT/pids"
        wait"#),
    );
    // Long enough for the script to record its pids even on a loaded machine.
    spec.settings.timeout = Duration::from_secs(2);

    let outcome = run_attempt(&sandbox, &spec, DOCUMENT).await;

    assert_eq!(
        outcome.result,
        Err(ShellFailure::Timeout(spec.settings.timeout))
    );
    assert_eq!(outcome.result.as_ref().unwrap_err().code(), "TIMEOUT");
    assert!(
        outcome.duration >= spec.settings.timeout,
        "{:?}",
        outcome.duration
    );
    let pids = wait_for_pids(&sandbox, 3).await;
    wait_until_gone(&pids, pids[0]).await;
    assert!(sandbox.payload_files_left().is_empty());
}

#[tokio::test]
async fn timeout_escalates_to_sigkill_when_the_group_ignores_sigterm() {
    let sandbox = new_sandbox();
    // Ignored signals stay ignored across fork and exec, so the sleeps ignore
    // SIGTERM too.
    let mut spec = hook_spec(
        &sandbox,
        &sh(r#"trap '' TERM
        echo $$ > "$OUT/pids.tmp"
        sleep 1000 & echo $! >> "$OUT/pids.tmp"
        mv "$OUT/pids.tmp" "$OUT/pids"
        while :; do wait; done"#),
    );
    spec.settings.timeout = Duration::from_secs(1);
    spec.settings.kill_grace = Duration::from_millis(300);

    let outcome = run_attempt(&sandbox, &spec, DOCUMENT).await;

    assert_eq!(
        outcome.result,
        Err(ShellFailure::Timeout(spec.settings.timeout))
    );
    assert_eq!(
        outcome.signal,
        Some(9),
        "the leader ignored SIGTERM, so SIGKILL ended it"
    );
    assert!(
        outcome.duration >= spec.settings.timeout + spec.settings.kill_grace,
        "{:?}",
        outcome.duration
    );
    let pids = wait_for_pids(&sandbox, 2).await;
    wait_until_gone(&pids, pids[0]).await;
}

#[tokio::test]
async fn background_process_holding_the_pipes_does_not_hang_a_finished_hook() {
    let sandbox = new_sandbox();
    let spec = hook_spec(
        &sandbox,
        &sh(r#"echo started
        sleep 1000 & echo $! > "$OUT/pids.tmp"
        mv "$OUT/pids.tmp" "$OUT/pids"
        exit 0"#),
    );

    let outcome = tokio::time::timeout(ATTEMPT_DEADLINE, run_attempt(&sandbox, &spec, DOCUMENT))
        .await
        .expect("the attempt ended although a grandchild held stdout open");

    assert_eq!(outcome.result, Ok(()));
    assert_eq!(outcome.stdout, b"started\n");
    let pids = wait_for_pids(&sandbox, 1).await;
    poll_until(DEADLINE, "the background sleep to be killed", || {
        !is_alive(pids[0])
    })
    .await;
}

#[tokio::test]
async fn output_is_drained_completely_but_only_a_bounded_tail_is_kept() {
    const HUNDRED_MIB: usize = 100 * 1024 * 1024;
    const LIMIT: usize = 64 * 1024;
    // Alone: no app of this binary allocates while the RSS is measured.
    let _alone = Guard::exclusive().await;
    let sandbox = new_sandbox();
    let mut spec = hook_spec(&sandbox, &sh(
        "head -c 104857600 /dev/zero; printf END; head -c 3000000 /dev/zero >&2; printf ERR >&2",
    ));
    spec.settings.max_output_bytes = LIMIT;
    let rss_before = vm_kib("self", "VmRSS:");
    let peak_before = vm_kib("self", "VmHWM:");

    let outcome = run_attempt(&sandbox, &spec, DOCUMENT).await;

    let rss_growth_kib = vm_kib("self", "VmRSS:").saturating_sub(rss_before);
    let peak_growth_kib = vm_kib("self", "VmHWM:").saturating_sub(peak_before);
    assert_eq!(outcome.result, Ok(()));
    let marker = truncation_marker((HUNDRED_MIB + 3 - LIMIT) as u64);
    assert!(
        outcome.stdout.starts_with(marker.as_bytes()),
        "stdout starts with {marker:?}"
    );
    assert_eq!(outcome.stdout.len(), marker.len() + LIMIT);
    assert!(outcome.stdout.ends_with(b"\0\0END"));
    let marker = truncation_marker((3_000_000 + 3 - LIMIT) as u64);
    assert!(
        outcome.stderr.starts_with(marker.as_bytes()),
        "stderr starts with {marker:?}"
    );
    assert_eq!(outcome.stderr.len(), marker.len() + LIMIT);
    assert!(outcome.stderr.ends_with(b"\0\0ERR"));
    assert!(
        rss_growth_kib < 16 * 1024,
        "RSS grew by {rss_growth_kib} KiB"
    );
    assert!(
        peak_growth_kib < 16 * 1024,
        "peak RSS grew by {peak_growth_kib} KiB"
    );
}

#[tokio::test]
async fn cancel_token_interrupts_a_running_hook_and_kills_its_group() {
    let sandbox = new_sandbox();
    let spec = hook_spec(
        &sandbox,
        &sh(r#"sleep 1000 & echo $! > "$OUT/pids.tmp"
        mv "$OUT/pids.tmp" "$OUT/pids"
        wait"#),
    );
    let cancel = CancellationToken::new();
    let attempt = {
        let spec = spec.clone();
        let cancel = cancel.clone();
        let payloads = sandbox.payload_dir();
        tokio::spawn(async move {
            let payload = payload_for(&payloads, DOCUMENT).await;
            run_shell_hook(
                &spec,
                Invocation {
                    payload: payload.path(),
                    vars: contract_vars(),
                },
                cancel,
            )
            .await
        })
    };
    let pids = wait_for_pids(&sandbox, 1).await;

    cancel.cancel();
    let outcome = tokio::time::timeout(ATTEMPT_DEADLINE, attempt)
        .await
        .expect("the attempt ended after cancel")
        .expect("the attempt did not panic");

    assert_eq!(outcome.result, Err(ShellFailure::Interrupted));
    assert_eq!(outcome.result.as_ref().unwrap_err().code(), "INTERRUPTED");
    assert!(outcome.duration < spec.settings.timeout);
    poll_until(DEADLINE, "the interrupted hook's sleep to be gone", || {
        !is_alive(pids[0])
    })
    .await;
    assert!(sandbox.payload_files_left().is_empty());
}

#[tokio::test]
async fn an_already_fired_cancel_token_does_not_start_the_hook() {
    let sandbox = new_sandbox();
    let spec = hook_spec(&sandbox, &sh(r#"touch "$OUT/ran""#));
    let cancel = CancellationToken::new();
    cancel.cancel();

    let payload = payload_for(&sandbox.payload_dir(), DOCUMENT).await;
    let outcome = run_shell_hook(
        &spec,
        Invocation {
            payload: payload.path(),
            vars: contract_vars(),
        },
        cancel,
    )
    .await;
    drop(payload);

    assert_eq!(outcome.result, Err(ShellFailure::Interrupted));
    assert!(!sandbox.out().join("ran").exists());
    assert!(sandbox.payload_files_left().is_empty());
}

#[tokio::test]
async fn hook_that_never_reads_stdin_still_succeeds_with_a_large_document() {
    let sandbox = new_sandbox();
    let document = vec![b'x'; 1024 * 1024];
    for command in [vec!["true"], sh("exec 0<&-; echo closed-stdin")] {
        let spec = hook_spec(&sandbox, &command);

        let outcome =
            tokio::time::timeout(ATTEMPT_DEADLINE, run_attempt(&sandbox, &spec, &document))
                .await
                .unwrap_or_else(|_| panic!("{command:?} blocked the attempt"));

        assert_eq!(outcome.result, Ok(()), "{command:?}");
    }
}

#[tokio::test]
async fn dropping_the_attempt_kills_the_group_and_removes_the_payload_file() {
    let sandbox = new_sandbox();
    let spec = hook_spec(
        &sandbox,
        &sh(r#"sleep 1000 & echo $! > "$OUT/pids.tmp"
        mv "$OUT/pids.tmp" "$OUT/pids"
        wait"#),
    );
    let attempt = {
        let (sandbox, spec) = (sandbox.clone(), spec.clone());
        tokio::spawn(async move { run_attempt(&sandbox, &spec, DOCUMENT).await })
    };
    let pids = wait_for_pids(&sandbox, 1).await;

    attempt.abort();
    assert!(attempt.await.expect_err("aborted").is_cancelled());

    poll_until(DEADLINE, "the dropped hook's sleep to be gone", || {
        !is_alive(pids[0])
    })
    .await;
    assert!(sandbox.payload_files_left().is_empty());
}
