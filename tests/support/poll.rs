//! Waiting in tests: nothing sleeps to synchronise; a wait polls its
//! condition and fails the test, naming what it waited for, at a deadline.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `check` until it returns `Some`; fails after `deadline`.
pub async fn wait_for<T>(
    deadline: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    wait_for_async(deadline, what, || std::future::ready(check())).await
}

/// [`wait_for`] with an async check.
pub async fn wait_for_async<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls `done` until it holds; fails after `deadline`.
pub async fn poll_until(deadline: Duration, what: &str, mut done: impl FnMut() -> bool) {
    wait_for(deadline, what, || done().then_some(())).await
}

/// [`poll_until`] blocking the thread, for code that runs outside the runtime.
pub fn poll_until_blocking(deadline: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !done() {
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}
