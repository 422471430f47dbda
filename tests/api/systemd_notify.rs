//! `Type=notify`: READY=1 only once the listener is bound and the database
//! open, WATCHDOG=1 while the daemon's parts live, STOPPING=1 on SIGTERM.
//! systemd's side is played by a real datagram socket in NOTIFY_SOCKET.

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::prelude::*;

fn next_message(sock: &UnixDatagram, deadline: Instant) -> Option<String> {
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match sock.recv(&mut buf) {
            Ok(n) => return Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("notify socket: {e}"),
        }
    }
    None
}

#[test]
fn serve_notifies_ready_then_feeds_the_watchdog_then_says_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let port = free_port();
    let sandbox = Sandbox::new();
    let config_path = sandbox.write_config(&Config::default().listen(format!("127.0.0.1:{port}")));
    let db_path = sandbox.db_path();
    // systemd names the watched process in WATCHDOG_PID; `exec` keeps the
    // shell's pid, so the daemon is the process named.
    let mut daemon = Daemon(
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg("WATCHDOG_PID=$$ exec \"$0\" serve --config \"$1\"")
            .arg(steerhook_bin())
            .arg(&config_path)
            .env_remove("STEERHOOK_CONFIG")
            .env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "1500000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + DEADLINE;

    let first = next_message(&sock, deadline).expect("a notification");
    assert_eq!(first.trim(), "READY=1");
    // READY means serving: the listener answers and the database exists.
    let health = reqwest::blocking::get(format!("http://127.0.0.1:{port}/healthz")).unwrap();
    assert_eq!(health.status(), 200);
    assert!(db_path.exists());

    let mut beats = 0;
    while beats < 2 {
        let m = next_message(&sock, deadline).expect("watchdog keep-alives");
        assert_eq!(m.trim(), "WATCHDOG=1");
        beats += 1;
    }

    kill(Pid::from_raw(daemon.0.id() as i32), Signal::SIGTERM).unwrap();
    let mut stopping = false;
    while let Some(m) = next_message(&sock, deadline) {
        if m.trim() == "STOPPING=1" {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "STOPPING=1 on SIGTERM");
    let status = daemon.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
