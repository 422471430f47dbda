//! The child process of one shell hook attempt: spawn, feed, watch, stop.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{
    Invocation, ShellFailure, ShellHookSpec, ShellOutcome, DEFAULT_HOOK_PATH, PAYLOAD_FILE_VAR,
};

/// Size of one read from a hook's stdout or stderr.
const READ_CHUNK_BYTES: usize = 64 * 1024;

pub(super) async fn run_attempt(
    spec: &ShellHookSpec,
    inv: Invocation<'_>,
    cancel: CancellationToken,
    started: Instant,
) -> ShellOutcome {
    let fail_early = |failure: ShellFailure| ShellOutcome {
        result: Err(failure),
        exit_code: None,
        signal: None,
        stdout: Vec::new(),
        stderr: Vec::new(),
        duration: started.elapsed(),
    };

    let Some(program) = spec.settings.command.first() else {
        return fail_early(ShellFailure::Spawn("the hook's command is empty".into()));
    };
    if cancel.is_cancelled() {
        return fail_early(ShellFailure::Interrupted);
    }

    // Opened before the spawn: a hook must never start without its document.
    let document = match tokio::fs::File::open(inv.payload).await {
        Ok(file) => file,
        Err(err) => {
            return fail_early(ShellFailure::Spawn(format!(
                "cannot read the payload file {} for `{program}`: {err}",
                inv.payload.display()
            )))
        }
    };

    let mut command = build_command(spec, &inv);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => return fail_early(ShellFailure::Spawn(describe_spawn_error(spec, &err))),
    };
    let group = ProcessGroup::of(&child);
    // Stops the readers and the stdin writer however this function ends,
    // including when its future is dropped.
    let stop_io = CancellationToken::new();
    let _stop_io_on_drop = stop_io.clone().drop_guard();

    let writer = child
        .stdin
        .take()
        .map(|stdin| tokio::spawn(write_stdin(stdin, document, stop_io.clone())));
    let stdout = spawn_reader(
        child.stdout.take(),
        spec.settings.max_output_bytes,
        stop_io.clone(),
    );
    let stderr = spawn_reader(
        child.stderr.take(),
        spec.settings.max_output_bytes,
        stop_io.clone(),
    );

    // `Err` here means we stop the hook ourselves, for that reason.
    let waited = tokio::select! {
        // An exit that races the timer or the token counts as an exit.
        biased;
        status = child.wait() => Ok(status),
        () = tokio::time::sleep(spec.settings.timeout) => Err(ShellFailure::Timeout(spec.settings.timeout)),
        () = cancel.cancelled() => Err(ShellFailure::Interrupted),
    };
    let (status, stopped_because) = match waited {
        Ok(status) => (status, None),
        Err(reason) => {
            tracing::debug!(reason = reason.code(), "stopping the hook's process group");
            (
                terminate(&mut child, &group, spec.settings.kill_grace).await,
                Some(reason),
            )
        }
    };

    let (stdout, stderr) =
        collect_output(stdout, stderr, &group, spec.settings.kill_grace, &stop_io).await;
    if let Some(writer) = writer {
        writer.abort();
    }
    // The leader has been reaped and the group waited for or killed: from
    // here on a drop must not signal a pgid that the kernel may reuse.
    group.disarm();

    let (exit_code, signal) = match &status {
        Ok(status) => (status.code(), status.signal()),
        Err(_) => (None, None),
    };
    let result = match (stopped_because, status) {
        (Some(reason), _) => Err(reason),
        (None, Ok(status)) => classify(status),
        // Only possible if the daemon's own wait machinery breaks; the hook
        // may have run, so this is reported, not hidden.
        (None, Err(err)) => Err(ShellFailure::Spawn(format!(
            "lost track of `{program}` while waiting for it: {err}"
        ))),
    };
    ShellOutcome {
        result,
        exit_code,
        signal,
        stdout,
        stderr,
        duration: started.elapsed(),
    }
}

fn classify(status: ExitStatus) -> Result<(), ShellFailure> {
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(code), _) => Err(ShellFailure::Exit(code)),
        (None, Some(signal)) => Err(ShellFailure::Signal(signal)),
        // Neither an exit code nor a signal (stopped/continued are not
        // reported by wait): treat as a crash we cannot name.
        (None, None) => Err(ShellFailure::Signal(0)),
    }
}

/// The hook's PATH: the daemon's, or a conventional one when it has none.
fn hook_path(daemon_path: Option<OsString>) -> OsString {
    daemon_path
        .filter(|path| !path.is_empty())
        .unwrap_or_else(|| OsString::from(DEFAULT_HOOK_PATH))
}

fn build_command(spec: &ShellHookSpec, inv: &Invocation<'_>) -> Command {
    let mut command = Command::new(spec.settings.command.first().map_or("", String::as_str));
    command.args(spec.settings.command.iter().skip(1));
    // Nothing of the daemon's environment leaks unless asked for: it may hold
    // the API key or SMTP password. Later `env` calls win, so the contract's
    // variables cannot be overridden by configuration.
    // std looks the program up in the PATH given here, not the daemon's.
    command.env_clear();
    command.env("PATH", hook_path(std::env::var_os("PATH")));
    for name in &spec.settings.env_passthrough {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command.envs(&spec.settings.env);
    command.envs(inv.vars.iter().map(|(name, value)| (name, value)));
    command.env(PAYLOAD_FILE_VAR, inv.payload);
    if let Some(dir) = &spec.settings.working_dir {
        command.current_dir(dir);
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // pgid = the child's pid, so the whole tree can be signalled at once.
        .process_group(0)
        .kill_on_drop(true);
    command
}

fn describe_spawn_error(spec: &ShellHookSpec, err: &io::Error) -> String {
    let program = spec.settings.command.first().map_or("", String::as_str);
    if let Some(dir) = &spec.settings.working_dir {
        // Blocking, but only on this failure path and only one stat.
        if !dir.is_dir() {
            return format!(
                "cannot start `{program}`: working directory {} does not exist or is not a directory",
                dir.display()
            );
        }
    }
    if err.kind() == io::ErrorKind::NotFound && !program.contains('/') {
        return format!("cannot start `{program}`: not found in the hook's PATH ({err})");
    }
    format!("cannot start `{program}`: {err}")
}

/// SIGTERM to the group, `grace` for the leader to exit, then SIGKILL to the
/// group, which also reaches grandchildren that outlived the leader.
async fn terminate(
    child: &mut Child,
    group: &ProcessGroup,
    grace: Duration,
) -> io::Result<ExitStatus> {
    group.signal(Signal::SIGTERM);
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_elapsed) => {
            group.signal(Signal::SIGKILL);
            // The leader may have left the group (setsid); it is still ours
            // to kill by pid because it has not been reaped.
            if let Err(err) = child.start_kill() {
                tracing::debug!(error = %err, "killing the hook's leader by pid failed");
            }
            child.wait().await
        }
    };
    group.signal(Signal::SIGKILL);
    status
}

/// Waits for both readers; if the pipes are still held open `grace` after the
/// hook ended (a background process inherited them), kills the group and
/// stops reading so the attempt cannot hang.
async fn collect_output(
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
    group: &ProcessGroup,
    grace: Duration,
    stop_io: &CancellationToken,
) -> (Vec<u8>, Vec<u8>) {
    let readers = async { (join_reader(stdout).await, join_reader(stderr).await) };
    tokio::pin!(readers);
    tokio::select! {
        output = &mut readers => output,
        () = tokio::time::sleep(grace) => {
            tracing::debug!("the hook's pipes are still open after it ended; killing its process group");
            group.signal(Signal::SIGKILL);
            stop_io.cancel();
            readers.await
        }
    }
}

async fn join_reader(reader: JoinHandle<Vec<u8>>) -> Vec<u8> {
    match reader.await {
        Ok(tail) => tail,
        Err(err) => {
            tracing::warn!(error = %err, "an output reader of the hook failed; its output is lost");
            Vec::new()
        }
    }
}

fn spawn_reader<R>(pipe: Option<R>, limit: usize, stop: CancellationToken) -> JoinHandle<Vec<u8>>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        match pipe {
            Some(pipe) => read_tail(pipe, limit, stop).await,
            None => Vec::new(),
        }
    })
}

/// Drains `pipe` to its end (or until `stop`), keeping only the last `limit`
/// bytes, so the hook never blocks on a full pipe and memory stays bounded.
async fn read_tail<R: AsyncRead + Unpin>(
    mut pipe: R,
    limit: usize,
    stop: CancellationToken,
) -> Vec<u8> {
    let mut tail = TailBuffer::new(limit);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        let read = tokio::select! {
            read = pipe.read(&mut chunk) => read,
            () = stop.cancelled() => break,
        };
        match read {
            Ok(0) => break,
            Ok(n) => tail.push(chunk.get(..n).unwrap_or(&chunk)),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                tracing::debug!(error = %err, "reading the hook's output failed");
                break;
            }
        }
    }
    tail.into_bytes()
}

/// Copies the document from its file to the hook's stdin, in chunks (it may
/// be large), then closes it. A hook that
/// exits without reading stdin is normal, so a broken pipe is not an error.
async fn write_stdin(
    mut stdin: ChildStdin,
    mut document: tokio::fs::File,
    stop: CancellationToken,
) {
    let write = async {
        tokio::io::copy(&mut document, &mut stdin).await?;
        stdin.flush().await
    };
    tokio::select! {
        written = write => match written {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {
                tracing::debug!("the hook closed stdin before reading the whole document");
            }
            Err(err) => tracing::debug!(error = %err, "writing the hook's stdin failed"),
        },
        () = stop.cancelled() => {}
    }
    // `stdin` is dropped here, which closes the pipe: the hook sees EOF.
}

/// The last `limit` bytes of a stream, and how many came before them.
#[derive(Debug)]
struct TailBuffer {
    kept: VecDeque<u8>,
    limit: usize,
    dropped: u64,
}

impl TailBuffer {
    fn new(limit: usize) -> Self {
        TailBuffer {
            kept: VecDeque::new(),
            limit,
            dropped: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if bytes.len() >= self.limit {
            let skip = bytes.len() - self.limit;
            self.dropped += (self.kept.len() + skip) as u64;
            self.kept.clear();
            self.kept.extend(bytes.iter().skip(skip));
        } else {
            let overflow = (self.kept.len() + bytes.len()).saturating_sub(self.limit);
            self.kept.drain(..overflow);
            self.dropped += overflow as u64;
            self.kept.extend(bytes);
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        let marker = if self.dropped > 0 {
            truncation_marker(self.dropped)
        } else {
            String::new()
        };
        let mut bytes = Vec::with_capacity(marker.len() + self.kept.len());
        bytes.extend_from_slice(marker.as_bytes());
        bytes.extend(self.kept);
        bytes
    }
}

/// The line put before an output tail that lost `dropped` earlier bytes.
pub fn truncation_marker(dropped: u64) -> String {
    format!("[steerhook: {dropped} earlier bytes truncated]\n")
}

/// The hook's process group (pgid = the leader's pid). Until disarmed,
/// dropping it SIGKILLs the group, so a dropped attempt leaves no processes.
#[derive(Debug)]
struct ProcessGroup {
    pgid: Option<Pid>,
    armed: bool,
}

impl ProcessGroup {
    fn of(child: &Child) -> Self {
        // `id()` is `None` only once the child has been reaped, which cannot
        // have happened yet; without it there is nothing to signal.
        let pgid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .map(Pid::from_raw);
        ProcessGroup { pgid, armed: true }
    }

    fn signal(&self, signal: Signal) {
        let Some(pgid) = self.pgid else { return };
        match killpg(pgid, signal) {
            // ESRCH: every process of the group is already gone.
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(err) => {
                tracing::warn!(%pgid, signal = signal.as_str(), error = %err, "signalling the hook's process group failed")
            }
        }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.armed {
            self.signal(Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_of(limit: usize, chunks: &[&[u8]]) -> Vec<u8> {
        let mut tail = TailBuffer::new(limit);
        for chunk in chunks {
            tail.push(chunk);
        }
        tail.into_bytes()
    }

    #[test]
    fn tail_keeps_everything_when_under_the_limit() {
        assert_eq!(tail_of(10, &[b"abc", b"def"]), b"abcdef");
        assert_eq!(tail_of(6, &[b"abc", b"def"]), b"abcdef");
    }

    #[test]
    fn tail_keeps_the_last_bytes_and_counts_the_dropped_ones() {
        let mut expected = truncation_marker(4).into_bytes();
        expected.extend_from_slice(b"efghij");
        assert_eq!(
            tail_of(6, &[b"abc", b"def", b"ghij"]),
            expected,
            "small chunks"
        );
        assert_eq!(tail_of(6, &[b"abcdefghij"]), expected, "one big chunk");
        assert_eq!(
            tail_of(6, &[b"ab", b"cdefghij"]),
            expected,
            "big chunk after small"
        );
    }

    #[test]
    fn tail_with_zero_limit_keeps_only_the_marker() {
        assert_eq!(tail_of(0, &[b"abc"]), truncation_marker(3).into_bytes());
        assert_eq!(tail_of(0, &[]), b"");
    }

    #[test]
    fn hook_path_falls_back_when_the_daemon_has_no_path() {
        assert_eq!(hook_path(None), OsString::from(DEFAULT_HOOK_PATH));
        assert_eq!(
            hook_path(Some(OsString::new())),
            OsString::from(DEFAULT_HOOK_PATH)
        );
        assert_eq!(hook_path(Some("/x:/y".into())), OsString::from("/x:/y"));
    }

    #[test]
    fn failure_codes_are_stable() {
        let cases = [
            (ShellFailure::Spawn("x".into()), "SPAWN_FAILED"),
            (ShellFailure::Exit(3), "EXIT_NONZERO"),
            (ShellFailure::Signal(9), "KILLED_BY_SIGNAL"),
            (ShellFailure::Timeout(Duration::from_secs(1)), "TIMEOUT"),
            (ShellFailure::Interrupted, "INTERRUPTED"),
        ];
        for (failure, code) in cases {
            assert_eq!(failure.code(), code, "{failure:?}");
        }
    }
}
