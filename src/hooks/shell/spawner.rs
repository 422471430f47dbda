//! Hooks start from a thread whose nice value they inherit.
//!
//! On Linux the nice value belongs to a thread, and a child takes the value
//! of the thread that started it. A hook with `nice = N` is started from a
//! thread kept at N steps below the daemon, so the hook, everything it
//! starts, and the cost of starting it yield the CPU to the daemon's
//! answers: a sender waits on those with a short timeout, while a delivery
//! waits in a durable queue. One such thread exists per nice value in use,
//! for the life of the process; it holds no runtime of its own and spawns
//! inside the caller's (tokio's process driver reaps the child there).

use std::collections::HashMap;
use std::io;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use tokio::process::{Child, Command};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// One spawn asked of a nice thread: the caller's runtime, the command,
/// where the child goes.
type Request = (Handle, Command, oneshot::Sender<io::Result<Child>>);

/// The nice threads, by nice value.
static THREADS: OnceLock<Mutex<HashMap<u8, mpsc::Sender<Request>>>> = OnceLock::new();

/// Starts `command` `nice` steps below the daemon (0: from the calling thread).
pub(super) async fn spawn(mut command: Command, nice: u8) -> io::Result<Child> {
    if nice == 0 {
        return command.spawn();
    }
    let (reply, child) = oneshot::channel();
    thread_for(nice)?
        .send((Handle::current(), command, reply))
        .map_err(|_| io::Error::other("the thread that starts hooks has stopped"))?;
    child
        .await
        .map_err(|_| io::Error::other("the thread that starts hooks has stopped"))?
}

fn thread_for(nice: u8) -> io::Result<mpsc::Sender<Request>> {
    let mut threads = THREADS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(sender) = threads.get(&nice) {
        return Ok(sender.clone());
    }
    let (sender, requests) = mpsc::channel::<Request>();
    std::thread::Builder::new()
        .name(format!("hook-start-n{nice}"))
        .spawn(move || serve(nice, &requests))?;
    threads.insert(nice, sender.clone());
    Ok(sender)
}

fn serve(nice: u8, requests: &mpsc::Receiver<Request>) {
    if let Err(err) = rustix::process::nice(i32::from(nice)) {
        // Hooks still run, at the daemon's own priority.
        tracing::warn!(nice, error = %err, "cannot lower the priority hooks start at");
    }
    while let Ok((runtime, mut command, reply)) = requests.recv() {
        let _entered = runtime.enter();
        // The caller may have gone (its delivery cancelled): the child is
        // then dropped here, and `kill_on_drop` stops it.
        let _ = reply.send(command.spawn());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nice value of a process, from `/proc/PID/stat` (field 19).
    fn nice_of(pid: u32) -> i32 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // The command name (field 2) is in parentheses and may hold spaces.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    fn own_nice() -> i32 {
        rustix::process::getpriority_process(None).unwrap()
    }

    async fn nice_of_a_child(nice: u8) -> i32 {
        let mut command = Command::new("/bin/sleep");
        command.arg("5").kill_on_drop(true);
        let child = spawn(command, nice).await.unwrap();
        nice_of(child.id().unwrap())
    }

    #[tokio::test]
    async fn a_hook_starts_nice_steps_below_the_daemon_and_the_daemon_stays_where_it_was() {
        let before = own_nice();
        assert_eq!(nice_of_a_child(0).await, before);
        assert_eq!(nice_of_a_child(7).await, (before + 7).min(19));
        assert_eq!(
            nice_of_a_child(7).await,
            (before + 7).min(19),
            "again, same thread"
        );
        assert_eq!(nice_of_a_child(19).await, 19);
        assert_eq!(own_nice(), before);
    }

    /// Each test has its own runtime; the nice threads outlive them.
    #[test]
    fn the_thread_serves_runtimes_that_come_after_the_first() {
        for _ in 0..2 {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let nice = runtime.block_on(async {
                let mut child = spawn(Command::new("/bin/true"), 3).await.unwrap();
                let pid = child.id().unwrap();
                let nice = nice_of(pid);
                assert!(child.wait().await.unwrap().success());
                nice
            });
            assert_eq!(nice, (own_nice() + 3).min(19));
        }
    }
}
