//! A test's files: a temp dir with the database (or a PostgreSQL database of
//! its own), the hooks' output directory `out/`, config files. Apps that one
//! test starts one after the other share it, so a restart finds the data.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tempfile::TempDir;

use super::config::{toml_list, toml_str, write_config_file, Config};
use super::db::{Backend, TestDb};

/// A temp dir and a database; cheap to clone (clones share both). The dir
/// and the database go when the last clone does.
#[derive(Clone, Debug)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    // Dropped first: a PostgreSQL database is dropped before its dir goes.
    db: TestDb,
    dir: TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

impl Sandbox {
    /// A fresh sandbox on SQLite (`<dir>/steerhook.db`).
    pub fn new() -> Sandbox {
        Sandbox::with_backend(Backend::Sqlite)
    }

    /// A fresh sandbox on `backend`; PostgreSQL gets a new database.
    pub fn with_backend(backend: Backend) -> Sandbox {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("out")).expect("out dir");
        let db = TestDb::new(backend, dir.path().join("steerhook.db"));
        Sandbox {
            inner: Arc::new(Inner { db, dir }),
        }
    }

    /// A fresh sandbox on a PostgreSQL database of its own; `None`, with the
    /// reason printed, when there is no server and
    /// `STEERHOOK_TEST_SKIP_POSTGRES=1` (see [`super::backends::postgres_runs`]).
    pub fn postgres() -> Option<Sandbox> {
        super::backends::postgres_runs("this PostgreSQL test")
            .then(|| Sandbox::with_backend(Backend::Postgres))
    }

    /// The temp dir.
    pub fn dir(&self) -> &Path {
        self.inner.dir.path()
    }

    /// `name` in the temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// The database.
    pub fn db(&self) -> &TestDb {
        &self.inner.db
    }

    /// The SQLite file (whether or not the backend is SQLite: the instance
    /// lock and the payload directory are beside it).
    pub fn db_path(&self) -> PathBuf {
        self.path("steerhook.db")
    }

    /// Where hooks write what they saw (`$OUT`).
    pub fn out(&self) -> PathBuf {
        self.path("out")
    }

    /// Where the app writes hook payload files (beside the database file).
    pub fn payload_dir(&self) -> PathBuf {
        self.path("steerhook.db.payloads")
    }

    /// Payload files still present (none when the directory is missing).
    /// On PostgreSQL the directory also holds the daemon's instance lock,
    /// `.lock`, which is not a payload.
    pub fn payload_files_left(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.payload_dir()) {
            Ok(entries) => entries
                .filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| p.file_name().is_none_or(|n| n != ".lock"))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// A file from `$OUT`, or empty when it does not exist (yet).
    pub fn read_out(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.out().join(name)).unwrap_or_default()
    }

    /// A file from `$OUT` as text, empty when missing.
    pub fn read_out_string(&self, name: &str) -> String {
        String::from_utf8(self.read_out(name)).expect("utf-8 output file")
    }

    /// The lines of a file from `$OUT` (none when missing).
    pub fn out_lines(&self, name: &str) -> Vec<String> {
        self.read_out_string(name)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The JSON document a hook saved as `$OUT/<event id>.json`.
    pub fn hook_document(&self, event_id: &str) -> Value {
        let p = self.out().join(format!("{event_id}.json"));
        let text = std::fs::read(&p)
            .unwrap_or_else(|e| panic!("the hook wrote no document for {event_id}: {e}"));
        serde_json::from_slice(&text)
            .unwrap_or_else(|e| panic!("the hook's document for {event_id} is not JSON: {e}"))
    }

    /// A `[[hook]]` table for `sh -c script` with `$OUT` pointing at this
    /// sandbox's output directory, receiving `events`, plus `extra` lines.
    pub fn shell_hook(&self, name: &str, events: &[&str], script: &str, extra: &str) -> String {
        self.shell_hook_with(name, events, &["sh", "-c", script], &[], extra)
    }

    /// Like [`Sandbox::shell_hook`] with a full argv and more `env` entries.
    pub fn shell_hook_with(
        &self,
        name: &str,
        events: &[&str],
        argv: &[&str],
        env: &[(&str, &str)],
        extra: &str,
    ) -> String {
        let out = self.out().display().to_string();
        let env = std::iter::once(("OUT", out.as_str()))
            .chain(env.iter().copied())
            .map(|(k, v)| format!("{k} = {}", toml_str(v)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "[[hook]]\nname = {}\nkind = \"shell\"\nevents = {}\ncommand = {}\nenv = {{ {env} }}\n{extra}\n",
            toml_str(name),
            toml_list(events),
            toml_list(argv),
        )
    }

    /// `config` as a file (`steerhook.toml` in the temp dir) for the real
    /// binary, on this sandbox's database; returns its path.
    pub fn write_config(&self, config: &Config) -> PathBuf {
        write_config_file(self.dir(), &config.toml(&self.db().storage_toml()))
    }
}
