//! The worker's own threads, `queue.nice` steps below the daemon's.
//!
//! A sender waits on our answer with a short timeout; a delivery waits in
//! the durable queue. So while webhooks arrive faster than one machine can
//! also run the hooks, the answers come first: the worker (fetches,
//! deliveries, the reads it makes) runs on a runtime of its own whose
//! threads have a higher nice value, and a hook, being started from one of
//! them, inherits it, and so does everything the hook starts. On Linux the
//! nice value belongs to a thread, so the daemon's HTTP workers, its
//! writer and its main runtime keep theirs. On an idle machine nothing is
//! slower.

use std::io;
use std::sync::Once;

use tokio::runtime::{Builder, Handle, Runtime};

/// The worker's runtime; dropping it stops its threads without waiting
/// (allowed inside async code, where dropping a [`Runtime`] is not).
#[derive(Debug)]
pub struct WorkerRuntime(Option<Runtime>);

impl WorkerRuntime {
    /// Two threads (and the blocking ones it starts) at `nice` above the
    /// calling thread's nice value, at most 19; `nice = 0` keeps it.
    pub fn start(nice: i32) -> io::Result<Self> {
        let target = (own_nice() + nice).min(19);
        let runtime = Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("steerhook-work")
            // Absolute, not an increment: a blocking thread is started by
            // a worker thread that already has the value.
            .on_thread_start(move || set_own_nice(target))
            .build()?;
        Ok(Self(Some(runtime)))
    }

    /// Where the worker's tasks go.
    pub fn handle(&self) -> &Handle {
        // Always Some until drop.
        #[allow(clippy::expect_used)]
        self.0
            .as_ref()
            .expect("the worker runtime is running")
            .handle()
    }
}

impl Drop for WorkerRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The calling thread's nice value (0 when it cannot be read).
fn own_nice() -> i32 {
    rustix::process::getpriority_process(None).unwrap_or(0)
}

fn set_own_nice(target: i32) {
    if own_nice() == target {
        return;
    }
    if let Err(err) = rustix::process::setpriority_process(None, target) {
        static SAID: Once = Once::new();
        // The worker still runs, at the daemon's own priority.
        SAID.call_once(|| {
            tracing::warn!(nice = target, error = %err, "cannot lower the worker's CPU priority (queue.nice)");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn its_threads_and_their_children_run_nice_steps_below_and_the_caller_keeps_its_own() {
        let before = own_nice();
        let worker = WorkerRuntime::start(7).unwrap();
        // block_on runs on this thread; the spawned task on the worker's.
        let handle = worker.handle();
        let (on_worker, on_blocking, child) = handle
            .block_on(handle.spawn(async {
                let on_blocking = tokio::task::spawn_blocking(own_nice).await.unwrap();
                let out = tokio::process::Command::new("nice").output().await.unwrap();
                let child: i32 = String::from_utf8(out.stdout)
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                (own_nice(), on_blocking, child)
            }))
            .unwrap();
        let want = (before + 7).min(19);
        assert_eq!((on_worker, on_blocking), (want, want));
        assert_eq!(child, want, "a child started by the worker");
        assert_eq!(own_nice(), before);
        drop(worker);
        assert_eq!(own_nice(), before);
    }
}
