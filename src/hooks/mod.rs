//! Outputs: the [`Sink`] interface every hook kind implements, and the kinds
//! (shell programs, e-mail, HTTP requests).
//!
//! The worker knows only this interface: it hands a sink the hook document
//! and the attempt number and gets back a typed result. Everything particular
//! to a kind (the `STEERHOOK_*` variables, SMTP reply classes) stays in its
//! module, so a new kind touches only this directory and the configuration.

pub mod email;
pub mod http;
pub mod shell;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::config::{HookKind, HookSettings, Settings};
use crate::domain::HookDocument;

/// One attempt to hand an event to a hook.
#[derive(Debug)]
pub struct Delivery<'a> {
    /// The hook's configured name.
    pub hook: &'a str,
    /// What the hook receives (SPEC §6), without its logs: their newest
    /// entries are in `document.logs` only as far as a summary needs them.
    pub document: &'a HookDocument,
    /// A private file holding the whole document, logs included, as JSON:
    /// what a hook that takes everything reads (streamed, never in memory).
    pub payload: &'a Path,
    /// This attempt's number, 1-based.
    pub attempt: u32,
    /// Fired when the daemon stops and running hooks must end; the attempt
    /// then ends [`FailureKind::Interrupted`] and runs again on the next start.
    pub cancel: CancellationToken,
}

/// How a failed attempt should be followed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// May succeed later: retried with backoff until `max_attempts`.
    Retryable,
    /// Will not succeed as configured: the delivery fails at once.
    Permanent,
    /// The daemon stopped it; it runs again, not counted as a failure.
    Interrupted,
}

/// Why an attempt did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkFailure {
    /// What to do next.
    pub kind: FailureKind,
    /// A stable code for `events show` and metrics, e.g. `EXIT_NONZERO`.
    pub code: &'static str,
    /// What happened, for a human.
    pub message: String,
    /// The far side asked for this wait before the next attempt (429).
    pub retry_after: Option<Duration>,
}

impl SinkFailure {
    /// A failure without a requested wait.
    pub fn new(kind: FailureKind, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// How one attempt ended, with what it produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkOutcome {
    /// `Ok` when the hook took the event.
    pub result: Result<(), SinkFailure>,
    /// A program's exit code, when it exited by itself.
    pub exit_code: Option<i32>,
    /// What the hook said: a program's stdout tail, a server's reply.
    pub output: Option<Vec<u8>>,
    /// A program's stderr tail.
    pub error_output: Option<Vec<u8>>,
}

/// A hook kind: takes one event per call.
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// Runs one attempt. Never panics on the far side's behaviour; bounded
    /// in time by the kind's own limits; stops promptly when
    /// [`Delivery::cancel`] fires.
    fn deliver<'a>(&'a self, delivery: Delivery<'a>) -> BoxFuture<'a, SinkOutcome>;

    /// The longest one attempt can take, stopping included: the worker's
    /// lease on a delivery must outlast it.
    fn max_attempt_duration(&self) -> Duration;

    /// How many of the newest log entries this kind reads from
    /// [`Delivery::document`] (a summary's); the whole log is in the
    /// payload file. The worker loads no more than this.
    fn summary_log_lines(&self) -> usize {
        0
    }

    /// What `doctor` can prove about the hook without sending an event: `Ok`
    /// with what was checked, or `Err` with what is wrong.
    fn check(&self) -> BoxFuture<'_, Result<String, String>>;
}

/// Why the sinks could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SinkSetupError {
    /// The SMTP settings were refused.
    #[error("smtp: {0}")]
    Email(#[from] email::EmailError),
    /// The payload directory could not be made.
    #[error("cannot create the hook payload directory {0}: {1}")]
    PayloadDir(PathBuf, std::io::Error),
    /// An HTTP hook's client could not be built.
    #[error(transparent)]
    Http(#[from] http::HttpSetupError),
}

/// Builds one sink per configured hook, by name, and makes the private
/// directory the payload files of their attempts go in.
pub fn build_sinks(
    settings: &Settings,
    payload_dir: PathBuf,
) -> Result<HashMap<String, Arc<dyn Sink>>, SinkSetupError> {
    let mailer = settings.smtp.as_ref().map(|s| s.mailer()).transpose()?;
    create_private_dir(&payload_dir)
        .map_err(|e| SinkSetupError::PayloadDir(payload_dir.clone(), e))?;
    let mut sinks = HashMap::new();
    for hook in &settings.hooks {
        sinks.insert(hook.name.clone(), sink_for(hook, mailer.as_ref())?);
    }
    Ok(sinks)
}

fn sink_for(
    hook: &HookSettings,
    mailer: Option<&email::Mailer>,
) -> Result<Arc<dyn Sink>, SinkSetupError> {
    Ok(match &hook.kind {
        HookKind::Shell(settings) => Arc::new(shell::ShellSink::new(shell::ShellHookSpec {
            name: hook.name.clone(),
            settings: settings.clone(),
        })),
        HookKind::Email(settings) => Arc::new(email::EmailSink::new(
            email::EmailSpec {
                hook: hook.name.clone(),
                settings: settings.clone(),
            },
            mailer.cloned(),
        )),
        HookKind::Http(settings) => {
            Arc::new(http::HttpSink::new(hook.name.clone(), settings.clone())?)
        }
    })
}

/// Makes `dir` (and its parents) readable by this user only: payload files
/// hold the whole event.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Payload files are named `steerhook-payload-<uuid>.json`.
const PAYLOAD_FILE_PREFIX: &str = "steerhook-payload-";
const PAYLOAD_FILE_SUFFIX: &str = ".json";

/// Whether `name` is one [`PayloadFile::create`] makes.
fn is_payload_file_name(name: &str) -> bool {
    name.strip_prefix(PAYLOAD_FILE_PREFIX)
        .and_then(|rest| rest.strip_suffix(PAYLOAD_FILE_SUFFIX))
        .is_some_and(|id| id.len() == 36 && uuid::Uuid::try_parse(id).is_ok())
}

/// Removes the payload files in `dir` that no attempt owns any more: those
/// an attempt cut short by `kill -9` left (a normal end removes its own).
/// Call it at startup, before any attempt runs, and only while no other
/// process can be running attempts with this directory (the instance lock).
/// Only regular files named as [`PayloadFile::create`] names them are
/// touched. Returns how many were removed.
pub fn remove_orphan_payload_files(dir: &Path) -> std::io::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let ours = entry.file_name().to_str().is_some_and(is_payload_file_name);
        // file_type does not follow symlinks: a link is never ours.
        if ours && entry.file_type()?.is_file() {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// The private file holding one attempt's document (mode 0600 from its
/// creation, never an existing file); removed when dropped, which also
/// happens when the attempt's future is dropped.
#[derive(Debug)]
pub struct PayloadFile {
    path: PathBuf,
}

impl PayloadFile {
    /// A new file in `dir` (made by [`build_sinks`]) filled by `write`, on a
    /// blocking thread: a document may be large and streamed from the store.
    pub async fn create<F>(dir: &Path, write: F) -> std::io::Result<Self>
    where
        F: FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send + 'static,
    {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(format!(
            "{PAYLOAD_FILE_PREFIX}{}{PAYLOAD_FILE_SUFFIX}",
            uuid::Uuid::new_v4()
        ));
        let payload = PayloadFile { path: path.clone() };
        tokio::task::spawn_blocking(move || {
            // create_new: never follow or reuse a file someone planted (O_EXCL).
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            let mut out = std::io::BufWriter::new(file);
            write(&mut out)?;
            std::io::Write::flush(&mut out)
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(payload)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PayloadFile {
    fn drop(&mut self) {
        // A single unlink: cheap enough to do inline, and Drop is the only
        // place that also runs when the attempt's future is dropped.
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(path = %self.path.display(), error = %err, "removing the payload file failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_the_worker_makes_are_payload_files() {
        let ours = format!("steerhook-payload-{}.json", uuid::Uuid::new_v4());
        assert!(is_payload_file_name(&ours));
        for other in [
            "steerhook-payload-.json",
            "steerhook-payload-x.json",
            "steerhook-payload-0123456789abcdef0123456789abcdef.json",
            &format!("{ours}.bak"),
            &format!("x{ours}"),
            "notes.txt",
        ] {
            assert!(!is_payload_file_name(other), "{other}");
        }
    }
}
