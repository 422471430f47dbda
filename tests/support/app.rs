//! An app built through the startup seam and run on a task, as `main` runs it.

use std::time::Duration;

use steerhook::startup::Application;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// `run_until_stopped` on a task, and the token that stops it as SIGTERM
/// does. Dropping it does not stop the app, so that a test can drop its app
/// to play a kill -9; an owner that wants a dropped app to shut down calls
/// [`Running::cancel`] from its own `Drop`.
pub struct Running {
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    pub fn start(app: Application) -> Running {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Running {
            shutdown,
            task: Some(task),
        }
    }

    /// Aborts the app's task, as kill -9 ends the process: every task it
    /// owns (server, worker, running hooks, lease renewals) stops at once,
    /// with no shutdown.
    pub fn kill(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Starts the shutdown without waiting for it.
    pub fn cancel(&self) {
        self.shutdown.cancel();
    }

    /// Stops the app as SIGTERM would and waits, up to `deadline`, until
    /// `run_until_stopped` returns; it must return `Ok`.
    pub async fn stop(&mut self, deadline: Duration) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(deadline, task)
                .await
                .expect("the app stops within the deadline")
                .expect("the app task did not panic")
                .expect("run_until_stopped returns Ok");
        }
    }
}
