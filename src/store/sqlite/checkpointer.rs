//! Checkpoints on a thread and a connection of their own, off the commit
//! path: the writer never checkpoints (its `wal_autocheckpoint` is 0), so no
//! commit, and no answer waiting for it, includes copying the WAL into the
//! database file.
//!
//! After each commit the writer nudges this thread. It waits for
//! [`INTERVAL`] to gather more commits, then runs a PASSIVE checkpoint,
//! which copies what it can without waiting for the writer or for readers;
//! once everything is copied, the writer's next transaction starts the WAL
//! over. A reader holding an old snapshot (a long `events` listing) keeps
//! the WAL from starting over, so when it passes [`MAX_WAL_PAGES`] this
//! thread runs a RESTART checkpoint, which waits for such readers and makes
//! the writer wait meanwhile: the WAL cannot grow without bound.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::store::StoreError;

/// Commits gathered into one checkpoint: small enough that a checkpoint is
/// short, large enough that a page many commits change is copied once.
pub(super) const INTERVAL: Duration = Duration::from_millis(100);
/// WAL size (4 KiB pages, so 64 MiB) past which readers are waited for.
pub(super) const MAX_WAL_PAGES: i64 = 16_000;
/// The longest a RESTART waits for readers, writers waiting with it; it is
/// tried again at the next interval, so a reader that never lets go (an
/// open `sqlite3` shell) costs writes this much now and then, not its
/// whole `busy_timeout` each time.
const RESTART_WAIT: Duration = Duration::from_millis(100);

/// The writer's side: nudges the checkpointer after a commit.
#[derive(Debug, Clone)]
pub(super) struct Nudge(SyncSender<()>);

impl Nudge {
    /// Says that a commit happened; never blocks (one pending nudge is
    /// enough: the checkpoint copies every commit before it).
    pub(super) fn committed(&self) {
        match self.0.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
        }
    }
}

/// Starts the checkpointer on `conn` (whose busy timeout is
/// `busy_timeout`); it stops when every [`Nudge`] is gone.
pub(super) fn spawn(conn: Connection, busy_timeout: Duration) -> Result<Nudge, StoreError> {
    let (tx, rx) = sync_channel(1);
    std::thread::Builder::new()
        .name("steerhook-checkpoint".into())
        .spawn(move || run(&conn, &rx, busy_timeout))
        .map_err(|e| StoreError::Task(format!("cannot start the checkpoint thread: {e}")))?;
    Ok(Nudge(tx))
}

fn run(conn: &Connection, rx: &Receiver<()>, busy_timeout: Duration) {
    let mut last = Instant::now();
    while rx.recv().is_ok() {
        // Gather the commits of one interval into this checkpoint.
        let until = last + INTERVAL;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(left) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        match checkpoint(conn, "PASSIVE") {
            Ok(wal_pages) if wal_pages >= MAX_WAL_PAGES => {
                tracing::info!(
                    wal_pages,
                    "the WAL passed its bound (a reader held an old snapshot); waiting for readers to start it over"
                );
                let restarted = conn
                    .busy_timeout(RESTART_WAIT)
                    .and_then(|()| checkpoint(conn, "RESTART"));
                if let Err(e) = restarted {
                    tracing::warn!(error = %e, "checkpoint failed; the WAL keeps the data");
                }
                if let Err(e) = conn.busy_timeout(busy_timeout) {
                    tracing::warn!(error = %e, "cannot reset the checkpointer's busy timeout");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "checkpoint failed; the WAL keeps the data"),
        }
        last = Instant::now();
    }
    tracing::debug!("checkpointer stopped");
}

/// Runs `PRAGMA wal_checkpoint(mode)`; the WAL's size in pages.
pub(super) fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<i64> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        r.get::<_, i64>(1)
    })
}
