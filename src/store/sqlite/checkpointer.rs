//! Checkpoints on a thread and a connection of their own, off the commit
//! path: the writer never checkpoints (its `wal_autocheckpoint` is 0), so no
//! commit, and no answer waiting for it, includes copying the WAL into the
//! database file.
//!
//! After each commit the writer nudges this thread. It waits for
//! [`INTERVAL`] to gather more commits, then runs a PASSIVE checkpoint,
//! which copies what it can without waiting for the writer or for readers;
//! once everything is copied, the writer's next transaction starts the WAL
//! over. Two things keep it from starting over: writes that never pause
//! (a pass never copies the commits made while it ran), and a reader holding
//! an old snapshot (a long `events` listing). So when the WAL passes
//! [`MAX_WAL_PAGES`] this thread copies back to back until little is left,
//! then runs a RESTART checkpoint, which waits for readers and makes the
//! writer wait while it copies that little: the WAL cannot grow without
//! bound, and a commit waits for a few hundred pages, not for everything
//! written since the last pass. While a reader keeps the RESTART from
//! finishing, it is tried once a second.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::store::StoreError;

/// Commits gathered into one checkpoint. A checkpoint ends with an fsync of
/// the database file, and the writer's commit fsyncs queue behind it on the
/// disk: the interval bounds how much that fsync has to write, so it is
/// short. Longer intervals copy a page that many commits change fewer
/// times, at the cost of the tail (figures in docs/PERFORMANCE.md).
pub(super) const INTERVAL: Duration = Duration::from_millis(20);
/// WAL size (4 KiB pages, so 64 MiB) past which readers are waited for.
pub(super) const MAX_WAL_PAGES: i64 = 16_000;
/// The longest a RESTART waits for readers, writers waiting with it; it is
/// tried again at the next interval, so a reader that never lets go (an
/// open `sqlite3` shell) costs writes this much now and then, not its
/// whole `busy_timeout` each time.
const RESTART_WAIT: Duration = Duration::from_millis(100);
/// Pages left to copy at which a RESTART is short enough to make the
/// writer wait for it (about 2 MiB).
const RESTART_SLACK: i64 = 512;
/// After a RESTART that a reader kept from finishing, the next one comes
/// this much later; passes go on meanwhile. So while a reader holds an old
/// snapshot (a long listing, a large log streamed into a payload file),
/// writes wait [`RESTART_WAIT`] once a second, not at every pass.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// Most PASSIVE passes made back to back to get within [`RESTART_SLACK`];
/// a reader holding an old snapshot keeps any number from getting there.
const CATCH_UP_PASSES: usize = 8;

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
    let mut restarts = Restarts::new(last);
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
            Ok(pass) if pass.wal_pages >= MAX_WAL_PAGES && restarts.due(Instant::now()) => {
                let blocked = start_over(conn, pass, busy_timeout);
                if restarts.after(blocked.is_some(), Instant::now()) {
                    tracing::info!(
                        wal_pages = blocked,
                        "the WAL passed its bound and a reader holds an old snapshot; it starts over once the reader lets go"
                    );
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "checkpoint failed; the WAL keeps the data"),
        }
        last = Instant::now();
    }
    tracing::debug!("checkpointer stopped");
}

/// When the next RESTART may run: at once, or [`RESTART_BACKOFF`] after
/// one that a reader kept from finishing.
#[derive(Debug)]
struct Restarts {
    next: Instant,
    reader_in_the_way: bool,
}

impl Restarts {
    fn new(now: Instant) -> Self {
        Self {
            next: now,
            reader_in_the_way: false,
        }
    }

    fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// Notes how a RESTART ended at `now`; true when a reader has just
    /// begun to keep the WAL from starting over (worth saying once, not at
    /// every try while it reads).
    fn after(&mut self, blocked: bool, now: Instant) -> bool {
        let newly = blocked && !self.reader_in_the_way;
        self.reader_in_the_way = blocked;
        if blocked {
            self.next = now + RESTART_BACKOFF;
        }
        newly
    }
}

/// Copies what is left of a WAL past its bound and starts it over. When a
/// reader kept it from starting over, the WAL's size in pages.
fn start_over(conn: &Connection, mut pass: Pass, busy_timeout: Duration) -> Option<i64> {
    for _ in 0..CATCH_UP_PASSES {
        if pass.left() <= RESTART_SLACK {
            break;
        }
        match checkpoint(conn, "PASSIVE") {
            Ok(next) => pass = next,
            Err(e) => {
                tracing::warn!(error = %e, "checkpoint failed; the WAL keeps the data");
                return None;
            }
        }
    }
    tracing::debug!(
        wal_pages = pass.wal_pages,
        left = pass.left(),
        "the WAL passed its bound; starting it over"
    );
    let restarted = conn
        .busy_timeout(RESTART_WAIT)
        .and_then(|()| checkpoint(conn, "RESTART"));
    if let Err(e) = conn.busy_timeout(busy_timeout) {
        tracing::warn!(error = %e, "cannot reset the checkpointer's busy timeout");
    }
    match restarted {
        Ok(done) if done.busy => Some(done.wal_pages),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "checkpoint failed; the WAL keeps the data");
            None
        }
    }
}

/// What one `PRAGMA wal_checkpoint` did.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pass {
    /// It could not finish: a reader or the writer was in the way.
    pub(super) busy: bool,
    /// The WAL's size in pages.
    pub(super) wal_pages: i64,
    /// Of those, the pages now copied into the database file.
    pub(super) copied: i64,
}

impl Pass {
    fn left(&self) -> i64 {
        self.wal_pages - self.copied
    }
}

/// Runs `PRAGMA wal_checkpoint(mode)`.
pub(super) fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<Pass> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok(Pass {
            busy: r.get::<_, i64>(0)? != 0,
            wal_pages: r.get(1)?,
            copied: r.get(2)?,
        })
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Restarts, RESTART_BACKOFF};

    #[test]
    fn a_restart_a_reader_blocked_is_tried_again_a_backoff_later_and_said_once() {
        let t0 = Instant::now();
        let mut r = Restarts::new(t0);
        assert!(r.due(t0), "the first one runs at once");
        assert!(r.after(true, t0), "a reader in the way is said");
        for ms in [20, 40, 500, 999] {
            assert!(!r.due(t0 + Duration::from_millis(ms)), "{ms} ms later");
        }
        let t1 = t0 + RESTART_BACKOFF;
        assert!(r.due(t1));
        assert!(!r.after(true, t1), "the same reader is not said again");
        assert!(!r.due(t1 + Duration::from_millis(20)));
        let t2 = t1 + RESTART_BACKOFF;
        assert!(!r.after(false, t2), "the WAL started over");
        assert!(
            r.due(t2 + Duration::from_millis(20)),
            "no wait after a restart that finished"
        );
        assert!(r.after(true, t2), "a new reader in the way is said again");
    }
}
