//! One `serve` per database: the instance lock, taken on the file the
//! configured path resolves to, and the other files kept beside it.
//!
//! `serve` puts the jobs it finds `running` back in the queue at start, so a
//! second `serve` on the same database would interrupt the first one's
//! deliveries and run the same hook twice at once. The lock is on the
//! resolved path: a symlink, `./x.db` and the absolute path all reach the
//! same file, so they must take the same lock.

use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// How many symbolic links are followed to a database file that does not exist yet.
const MAX_SYMLINK_HOPS: usize = 40;

/// The database file `path` names, with every symbolic link and `.`/`..`
/// resolved, whether or not the file exists yet (the first `serve` creates
/// it): the file canonicalized when it exists; else, after following a
/// dangling link (SQLite would create its target), the directory
/// canonicalized plus the file name.
pub fn resolve_db_path(path: &Path) -> io::Result<PathBuf> {
    let mut path = path.to_path_buf();
    for _ in 0..MAX_SYMLINK_HOPS {
        match std::fs::canonicalize(&path) {
            Ok(resolved) => return Ok(resolved),
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            Err(_) => {}
        }
        let Ok(target) = std::fs::read_link(&path) else {
            break;
        };
        // A relative target is relative to the link's directory; joining an
        // absolute target gives the target.
        path = path.parent().unwrap_or(Path::new("")).join(target);
    }
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Ok(std::fs::canonicalize(dir)?.join(name))
}

/// `<resolved db>.lock`: the instance lock file of the database at `db`.
pub fn lock_path(db: &Path) -> io::Result<PathBuf> {
    Ok(beside(&resolve_db_path(db)?, ".lock"))
}

/// `<resolved db>.payloads`: the private directory of hook payload files,
/// the same whichever path reaches the database.
pub fn payload_dir(db: &Path) -> io::Result<PathBuf> {
    Ok(beside(&resolve_db_path(db)?, ".payloads"))
}

/// Takes the instance lock of the database at `db` (`storage.path`); it is
/// held until the returned file is closed.
pub fn lock(db: &Path) -> anyhow::Result<std::fs::File> {
    let p = lock_path(db).with_context(|| {
        format!(
            "cannot resolve the database path {} (storage.path); does its directory exist?",
            db.display()
        )
    })?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .with_context(|| format!("cannot open the lock file {p:?} (storage.path)"))?;
    file.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "another `steerhook serve` is already using {} (lock {p:?}); stop it first",
            db.display()
        )
    })?;
    Ok(file)
}

/// Takes the lock of the payload directory `dir` (`storage.payload_dir`),
/// made private if it does not exist: one daemon per directory, since each
/// removes the payload files it finds there at start. The lock is the file
/// `.lock` inside it, on the directory's resolved path.
pub fn lock_payload_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| {
            format!(
                "cannot create the payload directory {} (storage.payload_dir)",
                dir.display()
            )
        })?;
    let p = std::fs::canonicalize(dir)
        .with_context(|| format!("cannot resolve {} (storage.payload_dir)", dir.display()))?
        .join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .with_context(|| format!("cannot open the lock file {p:?} (storage.payload_dir)"))?;
    file.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "another `steerhook serve` on this host uses the payload directory {} (lock {p:?}); give each daemon its own storage.payload_dir",
            dir.display()
        )
    })?;
    Ok(file)
}

/// `path` with `suffix` appended to its file name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    p.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_database_path_resolves_to_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap().join("x.db");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link.db")).unwrap();
        std::os::unix::fs::symlink("x.db", dir.path().join("relative-link.db")).unwrap();
        // Before the file exists (dangling links) and after.
        for exists in [false, true] {
            if exists {
                std::fs::write(&real, b"").unwrap();
            }
            for spelling in [
                dir.path().join("x.db"),
                dir.path().join("sub/../x.db"),
                dir.path().join("./sub/.././x.db"),
                dir.path().join("link.db"),
                dir.path().join("relative-link.db"),
            ] {
                assert_eq!(
                    resolve_db_path(&spelling).unwrap(),
                    real,
                    "{} (file exists: {exists})",
                    spelling.display()
                );
            }
        }
    }

    #[test]
    fn a_database_in_a_missing_directory_does_not_resolve() {
        let dir = tempfile::tempdir().unwrap();
        assert!(resolve_db_path(&dir.path().join("nope/x.db")).is_err());
    }
}
