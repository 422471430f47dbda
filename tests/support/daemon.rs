//! The real `steerhook` binary as a child process, for what only a process
//! shows: exit codes, signals, kill -9, systemd notifications, logs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use super::poll::{wait_for, wait_for_async};

/// The real binary.
pub fn steerhook_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_steerhook"))
}

/// `Command` for the binary, with no inherited `STEERHOOK*` or
/// `CREDENTIALS_DIRECTORY` variable that could change its behaviour.
pub fn steerhook_command() -> Command {
    let mut cmd = Command::new(steerhook_bin());
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str() {
            if k.starts_with("STEERHOOK") || k == "CREDENTIALS_DIRECTORY" {
                cmd.env_remove(k);
            }
        }
    }
    cmd
}

/// `steerhook serve --config <config>`, output discarded, `RUST_LOG` unset.
pub fn serve_command(config: &Path) -> Command {
    let mut cmd = steerhook_command();
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// `steerhook serve --config <config>` started, its stderr (the log) going
/// to the file `log`, `RUST_LOG` unset.
pub fn serve_logging_to(config: &Path, log: &Path) -> Daemon {
    let mut cmd = serve_command(config);
    cmd.stderr(std::fs::File::create(log).expect("create the log file"));
    Daemon::spawn(cmd)
}

/// `steerhook --config <config> <args...>` with `env` set, run to its end.
pub fn run_cli(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = steerhook_command();
    cmd.arg("--config").arg(config).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run steerhook")
}

/// `steerhook --config <config> <args...>`: its exit code (-1 when a signal
/// ended it), stdout and stderr.
pub fn cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = run_cli(config, args, &[]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A finished process's exit code and output, for a failure message.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A child process, killed (SIGKILL) if the test ends before it exits.
pub struct Daemon(pub Child);

impl Daemon {
    /// Starts `cmd`.
    pub fn spawn(mut cmd: Command) -> Daemon {
        Daemon(cmd.spawn().expect("start steerhook"))
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Its exit status, once it has exited; fails the test, naming `what`
    /// it waited for, if that takes longer than `deadline`.
    pub async fn exit_status(&mut self, deadline: Duration, what: &str) -> ExitStatus {
        wait_for(deadline, what, || {
            self.0.try_wait().expect("wait for steerhook")
        })
        .await
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("send SIGTERM");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    free_addr().port()
}

/// A free address on 127.0.0.1 (bound, read, released).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind port 0")
        .local_addr()
        .expect("local addr")
}

/// Waits until `http://addr/healthz` answers 2xx.
pub async fn wait_healthy(addr: SocketAddr, deadline: Duration) {
    let client = reqwest::Client::new();
    wait_for_async(deadline, "the daemon to serve /healthz", || {
        let probe = client.get(format!("http://{addr}/healthz")).send();
        async move {
            probe
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(drop)
        }
    })
    .await;
}

/// A file of the repository, e.g. `config.example.toml`.
pub fn repo_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The text of a file of the repository.
pub fn read_repo(path: &str) -> String {
    std::fs::read_to_string(repo_path(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}
