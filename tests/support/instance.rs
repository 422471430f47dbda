//! Restarting an app on the same database inside one test binary.

use std::time::Duration;
use steerhook::config::{Settings, StorageBackend};

use super::poll::wait_for;

/// Waits until nothing holds the instance lock the app built from
/// `settings` takes (`<db>.lock` beside the SQLite file, or `.lock` in the
/// payload directory on PostgreSQL), so that a restarted app can take it.
/// Stopping the previous app closes its lock, but in a test binary that is
/// not always the last copy: a child process that another test is starting
/// at that moment holds a copy of every open file until it execs, and the
/// lock lasts until the last copy is closed.
pub async fn wait_for_instance_lock_release(settings: &Settings) {
    let lock = match settings.storage.backend {
        StorageBackend::Sqlite => steerhook::instance::lock_path(&settings.storage.path).ok(),
        StorageBackend::Postgres => {
            std::fs::canonicalize(steerhook::startup::payload_dir(settings))
                .ok()
                .map(|dir| dir.join(".lock"))
        }
    };
    // Not resolvable: no app can have started on it either.
    let Some(lock) = lock else {
        return;
    };
    wait_for(
        Duration::from_secs(10),
        "the previous app's instance lock to be released",
        || match std::fs::OpenOptions::new().write(true).open(&lock) {
            // Never started here, or free: dropping the file unlocks it again.
            Err(_) => Some(()),
            Ok(file) => file.try_lock().ok(),
        },
    )
    .await
}
