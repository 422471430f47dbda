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

/// Checks that a hook's command can be started and finds what it runs: its
/// program exists, is executable and is not writable by group or others;
/// so is the script an interpreter is given (`/bin/sh etl.sh`: a missing
/// `etl.sh` would otherwise only show when the first event fails), and any
/// other argument that names a script file.
pub(super) fn check_command(
    command: &[String],
    working_dir: Option<&std::path::Path>,
) -> Result<String, String> {
    let program = command.first().ok_or("the command is empty")?;
    let mut proved = vec![check_program(program, working_dir)?];
    for (i, arg) in script_arguments(command) {
        proved.push(check_script(arg, working_dir).map_err(|e| format!("argument {i}: {e}"))?);
    }
    Ok(proved.join("; "))
}

/// Interpreters whose first operand is the script they run (by the name
/// without a version: `python3.11` is `python`).
const INTERPRETERS: [&str; 13] = [
    "sh", "bash", "dash", "zsh", "ksh", "python", "perl", "ruby", "node", "nodejs", "php", "lua",
    "Rscript",
];

/// Options of `interpreter` after which the command runs code given on the
/// command line (`sh -c '...'`, `perl -e '...'`, `python -m module`): it
/// then has no script file.
fn runs_inline_code(interpreter: &str, option: &str) -> bool {
    let shell = matches!(interpreter, "sh" | "bash" | "dash" | "zsh" | "ksh");
    match option {
        "-c" => shell || interpreter == "python",
        "-m" => interpreter == "python",
        "-e" | "--eval" | "-p" | "--print" => !shell,
        "-E" => interpreter == "perl",
        "-r" => interpreter == "php",
        _ => false,
    }
}

/// Options of `interpreter` whose value is the next argument (not a script).
fn takes_a_value(interpreter: &str, option: &str) -> bool {
    match interpreter {
        "sh" | "bash" | "dash" | "zsh" | "ksh" => matches!(option, "-o" | "+o" | "-O" | "+O"),
        "python" => matches!(option, "-W" | "-X" | "-Q"),
        "node" | "nodejs" => matches!(option, "-r" | "--require" | "--import" | "--loader"),
        "ruby" | "perl" => matches!(option, "-I" | "-r"),
        _ => false,
    }
}

/// The name an interpreter is known by: `/usr/bin/python3.11` -> `python`.
fn interpreter_name(program: &str) -> Option<&'static str> {
    let base = program.rsplit('/').next().unwrap_or(program);
    let base = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    INTERPRETERS.iter().copied().find(|i| *i == base)
}

/// File extensions of scripts: an argument ending so names a file that
/// must exist (`--config etl.py` is read, not written).
const SCRIPT_EXTENSIONS: [&str; 10] = [
    ".sh", ".bash", ".py", ".pl", ".rb", ".js", ".mjs", ".cjs", ".php", ".lua",
];

/// The arguments of `command` that name a script file, with their index:
/// the first operand after an interpreter (through `env`, too), and any
/// argument ending in a script extension.
fn script_arguments(command: &[String]) -> Vec<(usize, &str)> {
    let mut found: Vec<(usize, &str)> = Vec::new();
    // The code of `sh -c CODE`: it may well mention a file.
    let mut inline_code = None;
    let mut i = 0;
    // `/usr/bin/env [-i] [-u NAME] [VAR=value...] interpreter ...`
    if command
        .first()
        .is_some_and(|p| p.rsplit('/').next() == Some("env"))
    {
        i = 1;
        while let Some(arg) = command.get(i) {
            if arg == "-u" || arg == "--unset" {
                i += 2;
            } else if arg.starts_with('-') || arg.contains('=') {
                i += 1;
            } else {
                break;
            }
        }
    }
    if let Some(interpreter) = command.get(i).and_then(|p| interpreter_name(p)) {
        let mut j = i + 1;
        while let Some(arg) = command.get(j) {
            if arg == "--" {
                j += 1;
                if let Some(script) = command.get(j) {
                    found.push((j, script));
                }
                break;
            }
            if runs_inline_code(interpreter, arg) {
                inline_code = Some(j + 1);
                break;
            }
            if arg.starts_with('-') || (arg.starts_with('+') && arg.len() > 1) {
                j += if takes_a_value(interpreter, arg) {
                    2
                } else {
                    1
                };
                continue;
            }
            found.push((j, arg));
            break;
        }
    }
    for (k, arg) in command.iter().enumerate().skip(1) {
        let named = Some(k) != inline_code
            && !arg.starts_with('-')
            && !arg.contains('=')
            && !arg.contains(char::is_whitespace)
            && SCRIPT_EXTENSIONS.iter().any(|ext| arg.ends_with(ext));
        if named && !found.iter().any(|(f, _)| *f == k) {
            found.push((k, arg));
        }
    }
    found.sort_unstable();
    found
}

/// Checks that a script a hook runs exists, is a file, and is not writable
/// by group or others (whoever can write it runs code as steerhook).
fn check_script(arg: &str, working_dir: Option<&std::path::Path>) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let p = std::path::Path::new(arg);
    let (path, relative_to) = match (p.is_relative(), working_dir) {
        (false, _) => (p.to_path_buf(), String::new()),
        (true, Some(dir)) => (
            dir.join(p),
            format!(" (relative to working_dir {})", dir.display()),
        ),
        (true, None) => {
            let here = std::env::current_dir().unwrap_or_default();
            (
                here.join(p),
                format!(
                    " (relative to the daemon's working directory; here {}: set working_dir to be sure)",
                    here.display()
                ),
            )
        }
    };
    let meta =
        std::fs::metadata(&path).map_err(|e| format!("{}: {e}{relative_to}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file{relative_to}", path.display()));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(format!(
            "{} is writable by group or others (mode {:o}); anyone who can write it runs code as steerhook: chmod go-w",
            path.display(),
            mode & 0o777
        ));
    }
    Ok(format!("runs {}", path.display()))
}

/// Checks that a hook's program exists, is executable and is not writable by group or others.
fn check_program(program: &str, working_dir: Option<&std::path::Path>) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let path = if program.contains('/') {
        let p = std::path::PathBuf::from(program);
        match (p.is_relative(), working_dir) {
            (true, Some(dir)) => dir.join(p),
            _ => p,
        }
    } else {
        let search =
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        search
            .split(':')
            .map(|d| std::path::Path::new(d).join(program))
            .find(|p| p.is_file())
            .ok_or_else(|| format!("{program} not found in PATH"))?
    };
    let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.permissions().mode();
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    if mode & 0o111 == 0 {
        return Err(format!("{} is not executable (chmod +x)", path.display()));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "{} is writable by group or others (mode {:o}); anyone who can write it runs code as steerhook: chmod go-w",
            path.display(),
            mode & 0o777
        ));
    }
    Ok(format!("{} executable", path.display()))
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

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn the_script_an_interpreter_runs_is_found_and_inline_code_is_not() {
        let cases: [(&[&str], &[usize]); 13] = [
            (&["/bin/sh", "does-not-exist.sh"], &[1]),
            (&["/bin/sh", "-e", "etl"], &[2]),
            (&["/bin/bash", "-o", "pipefail", "etl"], &[3]),
            (&["/bin/sh", "-c", "echo hi > out.sh", "name"], &[]),
            (&["/bin/sh", "-c", "./etl.sh", "name"], &[]),
            (
                &["/usr/bin/python3.11", "-u", "load.py", "--target", "prod"],
                &[2],
            ),
            (&["python3", "-m", "etl.load"], &[]),
            (&["/usr/bin/perl", "-e", "print 1"], &[]),
            (
                &["/usr/bin/env", "-u", "HOME", "X=1", "node", "load.mjs"],
                &[5],
            ),
            (&["/usr/bin/node", "-r", "dotenv/config", "load.js"], &[3]),
            (&["/opt/etl/load", "--source", "opensteer"], &[]),
            (
                &["/opt/etl/load", "--hook", "extra/check.py", "--out=x.py"],
                &[2],
            ),
            (&["/bin/sh", "--", "-weird-name.sh"], &[2]),
        ];
        for (command, want) in cases {
            let got: Vec<usize> = script_arguments(&args(command))
                .iter()
                .map(|(i, _)| *i)
                .collect();
            assert_eq!(got, want, "{command:?}");
        }
    }

    #[test]
    fn a_missing_or_writable_script_fails_the_check_naming_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let missing =
            check_command(&args(&["/bin/sh", "does-not-exist.sh"]), Some(dir.path())).unwrap_err();
        assert!(
            missing.contains("does-not-exist.sh") && missing.contains("working_dir"),
            "{missing}"
        );
        let script = dir.path().join("etl.sh");
        std::fs::write(&script, "exit 0\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o666)).unwrap();
        let writable = check_command(&args(&["/bin/sh", "etl.sh"]), Some(dir.path())).unwrap_err();
        assert!(
            writable.contains("writable by group or others"),
            "{writable}"
        );
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
        let ok = check_command(&args(&["/bin/sh", "etl.sh"]), Some(dir.path())).unwrap();
        assert!(
            ok.contains("/bin/sh executable") && ok.contains("runs ") && ok.contains("etl.sh"),
            "{ok}"
        );
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
