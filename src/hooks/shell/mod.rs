//! One attempt of a shell hook (SPEC.md §6), run as a real child process.
//!
//! The hook gets its configured argv (never a shell), a cleared environment,
//! the hook document on stdin and in a private payload file, and its own
//! process group so that everything it starts can be stopped together.
//!
//! What "bounded" means here:
//! - time: `timeout` after the spawn the group gets SIGTERM, then after
//!   `kill_grace` SIGKILL; the daemon's cancel token does the same;
//! - memory: stdout and stderr are drained completely but only their last
//!   `max_output_bytes` are kept;
//! - stragglers: once the hook has exited, a background process that still
//!   holds our pipes gets `kill_grace` to let go, then its group is killed.

mod check;
mod process;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::{Delivery, FailureKind, Sink, SinkFailure, SinkOutcome};
pub use process::truncation_marker;

/// PATH given to hooks (and used to find their program) when the daemon has none.
pub const DEFAULT_HOOK_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Name of the variable that points the hook at its payload file.
pub const PAYLOAD_FILE_VAR: &str = "STEERHOOK_PAYLOAD_FILE";

/// A shell hook's own settings, as its `[[hook]]` table configures them.
#[derive(Debug, Clone)]
pub struct ShellHookSettings {
    /// argv; `command[0]` is the program, absolute or looked up in the hook's PATH.
    pub command: Vec<String>,
    /// Working directory of the hook; the daemon's own when `None`.
    pub working_dir: Option<PathBuf>,
    /// Extra variables set for this hook (values may be secrets: never logged).
    pub env: BTreeMap<String, String>,
    /// Names of daemon environment variables passed through when they are set.
    pub env_passthrough: Vec<String>,
    /// Wall-clock limit of one attempt, counted from the spawn.
    pub timeout: Duration,
    /// Time between SIGTERM and SIGKILL to the hook's process group.
    pub kill_grace: Duration,
    /// Per stream: only the last this-many bytes of stdout/stderr are kept.
    pub max_output_bytes: usize,
}

/// How to run one shell hook.
#[derive(Debug, Clone)]
pub struct ShellHookSpec {
    /// The hook's configured name, used in logs and `STEERHOOK_HOOK`.
    pub name: String,
    /// What its `[[hook]]` table says.
    pub settings: ShellHookSettings,
}

/// What one attempt is given: the document and the caller's `STEERHOOK_*` variables.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    /// The private file holding the JSON document: copied to stdin, and
    /// named by `STEERHOOK_PAYLOAD_FILE`.
    pub payload: &'a std::path::Path,
    /// `STEERHOOK_EVENT_ID`, `_EVENT_TYPE`, `_RUN_ID`, `_RUN_STATUS`, `_HOOK`,
    /// `_ATTEMPT`, `_ENRICHMENT`; `run_shell_hook` adds `STEERHOOK_PAYLOAD_FILE`.
    pub vars: Vec<(String, String)>,
}

/// How one attempt ended, with its bounded output.
#[derive(Debug, Clone)]
pub struct ShellOutcome {
    /// `Ok` when the hook exited 0.
    pub result: Result<(), ShellFailure>,
    /// The hook's exit code, when it exited by itself.
    pub exit_code: Option<i32>,
    /// The signal that ended the hook (ours too, on timeout or interrupt).
    pub signal: Option<i32>,
    /// Tail of stdout, prefixed with a marker line when bytes were dropped.
    pub stdout: Vec<u8>,
    /// Tail of stderr, prefixed with a marker line when bytes were dropped.
    pub stderr: Vec<u8>,
    /// From just before the spawn to the end of the attempt.
    pub duration: Duration,
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ShellFailure {
    /// The hook could not be started (program missing, not executable,
    /// payload file not writable); the message names the program.
    #[error("hook could not be started: {0}")]
    Spawn(String),
    /// The hook exited with a non-zero code.
    #[error("hook exited with code {0}")]
    Exit(i32),
    /// The hook was killed by a signal that steerhook did not send.
    #[error("hook was killed by signal {0}")]
    Signal(i32),
    /// The hook ran longer than its timeout; its process group was killed.
    #[error("hook timed out after {0:?}; its process group was killed")]
    Timeout(Duration),
    /// The daemon is shutting down; the hook's process group was killed and
    /// the attempt will run again.
    #[error("hook was interrupted by shutdown; its process group was killed")]
    Interrupted,
}

impl ShellFailure {
    /// Stable machine-readable code, stored with the delivery attempt.
    pub fn code(&self) -> &'static str {
        match self {
            ShellFailure::Spawn(_) => "SPAWN_FAILED",
            ShellFailure::Exit(_) => "EXIT_NONZERO",
            ShellFailure::Signal(_) => "KILLED_BY_SIGNAL",
            ShellFailure::Timeout(_) => "TIMEOUT",
            ShellFailure::Interrupted => "INTERRUPTED",
        }
    }
}

/// Runs one attempt of `spec` with `inv`, until it exits, times out or
/// `cancel` fires. Never panics on hook behaviour and never leaves the
/// payload file behind; dropping the returned future kills the process group.
#[tracing::instrument(skip_all, fields(hook = %spec.name))]
pub async fn run_shell_hook(
    spec: &ShellHookSpec,
    inv: Invocation<'_>,
    cancel: CancellationToken,
) -> ShellOutcome {
    let started = Instant::now();
    let outcome = process::run_attempt(spec, inv, cancel, started).await;
    tracing::debug!(
        stdout = %String::from_utf8_lossy(&outcome.stdout),
        stderr = %String::from_utf8_lossy(&outcome.stderr),
        "hook output (tails)"
    );
    outcome
}

/// A shell hook as a [`Sink`]: its program started once per attempt with
/// the `STEERHOOK_*` variables of SPEC §6.
#[derive(Debug)]
pub struct ShellSink {
    spec: ShellHookSpec,
}

impl ShellSink {
    /// A sink running `spec`.
    pub fn new(spec: ShellHookSpec) -> Self {
        Self { spec }
    }

    async fn run(&self, d: Delivery<'_>) -> SinkOutcome {
        let doc = d.document;
        let vars = vec![
            ("STEERHOOK_EVENT_ID".to_owned(), doc.event.id.clone()),
            (
                "STEERHOOK_EVENT_TYPE".to_owned(),
                doc.event.event_type.clone(),
            ),
            ("STEERHOOK_RUN_ID".to_owned(), doc.event.run_id.clone()),
            ("STEERHOOK_RUN_STATUS".to_owned(), doc.run_status()),
            ("STEERHOOK_HOOK".to_owned(), d.hook.to_owned()),
            ("STEERHOOK_ATTEMPT".to_owned(), d.attempt.to_string()),
            (
                "STEERHOOK_ENRICHMENT".to_owned(),
                doc.enrichment.status.as_str().to_owned(),
            ),
        ];
        let out = run_shell_hook(
            &self.spec,
            Invocation {
                payload: d.payload,
                vars,
            },
            d.cancel,
        )
        .await;
        let result = out.result.map_err(|f| {
            let kind = match f {
                ShellFailure::Interrupted => FailureKind::Interrupted,
                // A missing program or a crash may be fixed by the operator
                // between attempts, so every failure is worth a retry.
                _ => FailureKind::Retryable,
            };
            SinkFailure::new(kind, f.code(), f.to_string())
        });
        SinkOutcome {
            result,
            exit_code: out.exit_code,
            output: Some(out.stdout),
            error_output: Some(out.stderr),
        }
    }
}

impl Sink for ShellSink {
    fn deliver<'a>(&'a self, delivery: Delivery<'a>) -> BoxFuture<'a, SinkOutcome> {
        Box::pin(self.run(delivery))
    }

    fn max_attempt_duration(&self) -> Duration {
        // The timeout, then TERM -> KILL, then children holding its pipes.
        self.spec.settings.timeout + self.spec.settings.kill_grace * 2
    }

    fn check(&self) -> BoxFuture<'_, Result<String, String>> {
        let settings = self.spec.settings.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                check::check_command(&settings.command, settings.working_dir.as_deref())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
        })
    }
}
