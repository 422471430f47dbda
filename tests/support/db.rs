//! The database a test's app runs on, and reading it for assertions.
//!
//! [`TestDb`] is a SQLite file in the test's sandbox or a fresh PostgreSQL
//! database on a real server (created for the test, dropped after it). Its
//! queries take the same SQL and `$1`-style parameters on either backend and
//! hand back plain Rust values, so one test body asserts on either.
//!
//! ```ignore
//! let n: i64 = db.query_one("SELECT count(*) FROM events WHERE status = $1", &[&"done"]);
//! let rows: Vec<(String, Option<String>)> = db.query("SELECT id, enrichment_error FROM events", &[]);
//! ```

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::Duration;

use rusqlite::types::{Value as SqliteValue, ValueRef};
use rusqlite::OpenFlags;
use steerhook::config::{StorageBackend, StorageSettings, Synchronous};
use steerhook::secret::Secret;
use steerhook::store::{Routing, Store};
use tokio_postgres::types::private::BytesMut;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};

/// The server the PostgreSQL variant of a test creates its database on.
pub const DATABASE_URL_VAR: &str = "STEERHOOK_TEST_DATABASE_URL";
/// Set to `1` to skip the PostgreSQL variants when no server can be reached.
pub const SKIP_POSTGRES_VAR: &str = "STEERHOOK_TEST_SKIP_POSTGRES";
/// Where the PostgreSQL variants look without [`DATABASE_URL_VAR`].
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// How long connecting to the PostgreSQL server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which storage backend a test's app runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `[storage] path`: a file in the sandbox (the default).
    Sqlite,
    /// `[storage] backend = "postgres"`: a database of its own on the test server.
    Postgres,
}

/// One value sent to or read from the database, whatever the backend.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// Any integer column (and booleans, as 0 or 1).
    Int(i64),
    /// A floating-point column.
    Real(f64),
    /// A text column (JSON columns too).
    Text(String),
    /// A BLOB / BYTEA column.
    Bytes(Vec<u8>),
}

/// A query parameter: `&"done"`, `&event_id`, `&job_id`, `&Some(3)`...
pub trait SqlParam {
    /// The value to bind.
    fn cell(&self) -> Cell;
}

impl SqlParam for str {
    fn cell(&self) -> Cell {
        Cell::Text(self.to_owned())
    }
}
impl SqlParam for &str {
    fn cell(&self) -> Cell {
        Cell::Text((*self).to_owned())
    }
}
impl SqlParam for String {
    fn cell(&self) -> Cell {
        Cell::Text(self.clone())
    }
}
impl SqlParam for [u8] {
    fn cell(&self) -> Cell {
        Cell::Bytes(self.to_vec())
    }
}
impl SqlParam for Vec<u8> {
    fn cell(&self) -> Cell {
        Cell::Bytes(self.clone())
    }
}
impl SqlParam for bool {
    fn cell(&self) -> Cell {
        Cell::Int(i64::from(*self))
    }
}
impl SqlParam for f64 {
    fn cell(&self) -> Cell {
        Cell::Real(*self)
    }
}
impl<T: SqlParam> SqlParam for Option<T> {
    fn cell(&self) -> Cell {
        self.as_ref().map_or(Cell::Null, SqlParam::cell)
    }
}
macro_rules! int_params {
    ($($t:ty),*) => {$(
        impl SqlParam for $t {
            fn cell(&self) -> Cell {
                Cell::Int(i64::try_from(*self).expect("an integer parameter fits in i64"))
            }
        }
    )*};
}
int_params!(i16, i32, i64, u16, u32, u64, usize);

/// A Rust value read from one column.
pub trait FromCell: Sized {
    /// Converts, or says why not.
    fn from_cell(cell: Cell) -> Result<Self, String>;
}

fn mismatch<T>(cell: &Cell) -> Result<T, String> {
    Err(format!(
        "cannot read {cell:?} as {}",
        std::any::type_name::<T>()
    ))
}

impl FromCell for Cell {
    fn from_cell(cell: Cell) -> Result<Self, String> {
        Ok(cell)
    }
}
impl FromCell for String {
    fn from_cell(cell: Cell) -> Result<Self, String> {
        match cell {
            Cell::Text(s) => Ok(s),
            other => mismatch(&other),
        }
    }
}
impl FromCell for Vec<u8> {
    fn from_cell(cell: Cell) -> Result<Self, String> {
        match cell {
            Cell::Bytes(b) => Ok(b),
            // SQLite keeps what was bound: text stays text in a BLOB column.
            Cell::Text(s) => Ok(s.into_bytes()),
            other => mismatch(&other),
        }
    }
}
impl FromCell for f64 {
    fn from_cell(cell: Cell) -> Result<Self, String> {
        match cell {
            Cell::Real(v) => Ok(v),
            Cell::Int(v) => Ok(v as f64),
            other => mismatch(&other),
        }
    }
}
impl FromCell for bool {
    fn from_cell(cell: Cell) -> Result<Self, String> {
        match cell {
            Cell::Int(v) => Ok(v != 0),
            other => mismatch(&other),
        }
    }
}
impl<T: FromCell> FromCell for Option<T> {
    fn from_cell(cell: Cell) -> Result<Self, String> {
        match cell {
            Cell::Null => Ok(None),
            cell => T::from_cell(cell).map(Some),
        }
    }
}
macro_rules! int_cells {
    ($($t:ty),*) => {$(
        impl FromCell for $t {
            fn from_cell(cell: Cell) -> Result<Self, String> {
                match cell {
                    Cell::Int(v) => <$t>::try_from(v).map_err(|e| format!("{v}: {e}")),
                    other => mismatch(&other),
                }
            }
        }
    )*};
}
int_cells!(i16, i32, i64, u16, u32, u64, usize);

/// A Rust value read from one row: a [`FromCell`] for a one-column query,
/// or a tuple with one element per column.
pub trait FromRow: Sized {
    /// Converts, or says why not.
    fn from_row(row: Vec<Cell>) -> Result<Self, String>;
}

impl<T: FromCell> FromRow for T {
    fn from_row(row: Vec<Cell>) -> Result<Self, String> {
        let [cell]: [Cell; 1] = row
            .try_into()
            .map_err(|row: Vec<Cell>| format!("one column expected, got {}", row.len()))?;
        T::from_cell(cell)
    }
}
macro_rules! tuple_rows {
    ($($n:literal: ($($t:ident),+);)*) => {$(
        impl<$($t: FromCell),+> FromRow for ($($t,)+) {
            fn from_row(row: Vec<Cell>) -> Result<Self, String> {
                if row.len() != $n {
                    return Err(format!("{} columns expected, got {}", $n, row.len()));
                }
                let mut cells = row.into_iter();
                Ok(($($t::from_cell(cells.next().expect("counted"))?,)+))
            }
        }
    )*};
}
tuple_rows! {
    2: (A, B);
    3: (A, B, C);
    4: (A, B, C, D);
    5: (A, B, C, D, E);
    6: (A, B, C, D, E, F);
    7: (A, B, C, D, E, F, G);
    8: (A, B, C, D, E, F, G, H);
    9: (A, B, C, D, E, F, G, H, I);
}

/// One row of `jobs`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub id: i64,
    /// `fetch` or `deliver`.
    pub kind: String,
    /// The hook of a delivery; empty for a fetch.
    pub hook: Option<String>,
    pub state: String,
    pub attempts: i64,
    pub due_at: i64,
    pub last_error_code: Option<String>,
    pub last_error: Option<String>,
}

/// One row of `attempts`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    pub attempt: i64,
    pub outcome: String,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub exit_code: Option<i64>,
    pub stdout: Option<Vec<u8>>,
    pub stderr: Option<Vec<u8>>,
}

const JOB_COLUMNS: &str =
    "j.id, j.kind, j.hook, j.state, j.attempts, j.due_at, j.last_error_code, j.last_error";

type JobTuple = (
    i64,
    String,
    Option<String>,
    String,
    i64,
    i64,
    Option<String>,
    Option<String>,
);

fn job_row(
    (id, kind, hook, state, attempts, due_at, last_error_code, last_error): JobTuple,
) -> JobRow {
    JobRow {
        id,
        kind,
        hook,
        state,
        attempts,
        due_at,
        last_error_code,
        last_error,
    }
}

/// The database of one test: a SQLite file or a PostgreSQL database of its own.
pub struct TestDb {
    kind: Kind,
}

enum Kind {
    Sqlite {
        path: PathBuf,
        /// Opened at the first query (the app creates the file).
        conn: Mutex<Option<rusqlite::Connection>>,
        /// The temp dir of [`TestDb::sqlite`], removed with it.
        _dir: Option<tempfile::TempDir>,
    },
    Postgres(PgDatabase),
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Sqlite { path, .. } => write!(f, "TestDb::Sqlite({})", path.display()),
            Kind::Postgres(pg) => write!(f, "TestDb::Postgres({})", pg.name),
        }
    }
}

impl TestDb {
    /// The SQLite file at `path` (created by the app that opens it first).
    pub fn sqlite_at(path: PathBuf) -> TestDb {
        TestDb {
            kind: Kind::Sqlite {
                path,
                conn: Mutex::new(None),
                _dir: None,
            },
        }
    }

    /// A SQLite file in a temp dir of its own (for store tests without a sandbox).
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        TestDb {
            kind: Kind::Sqlite {
                path: dir.path().join("t.db"),
                conn: Mutex::new(None),
                _dir: Some(dir),
            },
        }
    }

    /// A new database on the test server; `None`, with the reason printed,
    /// when no server answers and `STEERHOOK_TEST_SKIP_POSTGRES=1` (without
    /// a server and without that, the test fails saying how to get one).
    pub async fn postgres() -> Option<TestDb> {
        super::backends::postgres_runs("this PostgreSQL test").then(TestDb::create_postgres)
    }

    /// A fresh, empty database of `backend`, of its own.
    pub fn fresh(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => TestDb::sqlite(),
            Backend::Postgres => TestDb::create_postgres(),
        }
    }

    /// A new, empty database on the test server, dropped with the `TestDb`.
    /// Panics, saying how to get a server, when none can be reached.
    pub fn create_postgres() -> TestDb {
        if let Err(why) = postgres_server() {
            panic!("{}", no_server_message(why));
        }
        let admin = admin_url();
        let name = format!("steerhook_test_{}", uuid::Uuid::new_v4().simple());
        on_pg_thread(&admin, {
            let sql = format!("CREATE DATABASE \"{name}\"");
            move |client| Box::pin(async move { client.batch_execute(&sql).await })
        })
        .unwrap_or_else(|e| panic!("cannot create the test database {name}: {e}"));
        let url = database_url(&admin, &name);
        let worker = PgWorker::start(url.clone())
            .unwrap_or_else(|e| panic!("cannot connect to the test database {name}: {e}"));
        TestDb {
            kind: Kind::Postgres(PgDatabase {
                admin,
                name,
                url,
                payload_dir: None,
                worker: Some(worker),
            }),
        }
    }

    /// A connection to an existing PostgreSQL database at `url`, which is
    /// left as it is (for looking at the server, or at another test
    /// database the way a second client would).
    pub fn postgres_at(url: &str) -> TestDb {
        let worker =
            PgWorker::start(url.to_owned()).unwrap_or_else(|e| panic!("{}", no_server_message(e)));
        TestDb {
            kind: Kind::Postgres(PgDatabase {
                admin: String::new(),
                name: String::new(),
                url: url.to_owned(),
                payload_dir: None,
                worker: Some(worker),
            }),
        }
    }

    /// A database of the given backend: on SQLite the file at `sqlite_path`.
    pub fn new(backend: Backend, sqlite_path: PathBuf) -> TestDb {
        match backend {
            Backend::Sqlite => TestDb::sqlite_at(sqlite_path),
            Backend::Postgres => {
                let mut db = TestDb::create_postgres();
                if let Kind::Postgres(pg) = &mut db.kind {
                    // Where SQLite's would be, so a sandbox finds it either way.
                    let mut dir = sqlite_path.into_os_string();
                    dir.push(".payloads");
                    pg.payload_dir = Some(dir.into());
                }
                db
            }
        }
    }

    /// `[storage]` for this database, as `serve` reads it.
    pub fn settings(&self) -> StorageSettings {
        let (backend, path, url) = match &self.kind {
            Kind::Sqlite { path, .. } => (StorageBackend::Sqlite, path.clone(), None),
            Kind::Postgres(pg) => (
                StorageBackend::Postgres,
                PathBuf::default(),
                Some(Secret::new(pg.url.clone())),
            ),
        };
        StorageSettings {
            backend,
            path,
            url,
            pool_size: 8,
            payload_dir: None,
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            retention: Duration::from_secs(30 * 86_400),
            prune_interval: Duration::from_secs(3_600),
        }
    }

    /// The store `serve` would open, making new events' jobs as `routing` says.
    pub async fn open(&self, routing: Routing) -> Store {
        Store::open(&self.settings(), routing)
            .await
            .unwrap_or_else(|e| panic!("the store opens: {e:#}"))
    }

    /// Opens the test's own connection now (SQLite opens it at the first
    /// query otherwise), so that it is older than what the test does next.
    pub fn connect(&self) {
        if let Kind::Sqlite { path, conn, .. } = &self.kind {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            if guard.is_none() {
                *guard = Some(open_sqlite(path).unwrap_or_else(|e| panic!("{e}")));
            }
        }
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self.kind {
            Kind::Sqlite { .. } => Backend::Sqlite,
            Kind::Postgres(_) => Backend::Postgres,
        }
    }

    /// The lines of `[storage]` that point an app at this database.
    pub fn storage_toml(&self) -> String {
        match &self.kind {
            Kind::Sqlite { path, .. } => sqlite_storage_toml(path),
            Kind::Postgres(pg) => {
                let mut lines = format!(
                    "backend = \"postgres\"\nurl = {}\n",
                    super::config::toml_str(&pg.url)
                );
                if let Some(dir) = &pg.payload_dir {
                    lines.push_str(&format!(
                        "payload_dir = {}\n",
                        super::config::toml_str(&dir.display().to_string())
                    ));
                }
                lines
            }
        }
    }

    /// The SQLite file; panics on PostgreSQL.
    pub fn sqlite_path(&self) -> &Path {
        match &self.kind {
            Kind::Sqlite { path, .. } => path,
            Kind::Postgres(pg) => panic!(
                "{} is a PostgreSQL database: this test reads SQLite's own file",
                pg.name
            ),
        }
    }

    /// The PostgreSQL connection URL; panics on SQLite.
    pub fn url(&self) -> &str {
        match &self.kind {
            Kind::Postgres(pg) => &pg.url,
            Kind::Sqlite { path, .. } => panic!("{} is a SQLite file", path.display()),
        }
    }

    /// A new read-write connection to the SQLite file, as another process
    /// would open it (for SQLite-only sabotage: triggers, locks, pragmas).
    /// Panics on PostgreSQL.
    pub fn sqlite_connection(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(self.sqlite_path()).expect("open the test database");
        conn.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        conn
    }

    /// Every row of `sql` with `params` (`$1`, `$2`... on both backends).
    pub fn query<T: FromRow>(&self, sql: &str, params: &[&dyn SqlParam]) -> Vec<T> {
        let rows = self
            .run(Op::Query, sql, params)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let Reply::Rows(rows) = rows else {
            unreachable!("a query answers rows")
        };
        rows.into_iter()
            .map(|row| T::from_row(row).unwrap_or_else(|e| panic!("{sql}: {e}")))
            .collect()
    }

    /// The one row of `sql`; panics when there is none or more than one.
    pub fn query_one<T: FromRow>(&self, sql: &str, params: &[&dyn SqlParam]) -> T {
        self.query_opt(sql, params)
            .unwrap_or_else(|| panic!("{sql}: no row"))
    }

    /// The row of `sql`, if any; panics when there is more than one.
    pub fn query_opt<T: FromRow>(&self, sql: &str, params: &[&dyn SqlParam]) -> Option<T> {
        let mut rows = self.query::<T>(sql, params);
        assert!(rows.len() <= 1, "{sql}: {} rows, expected one", rows.len());
        rows.pop()
    }

    /// Runs a statement; returns the rows it changed.
    pub fn execute(&self, sql: &str, params: &[&dyn SqlParam]) -> u64 {
        match self.run(Op::Execute, sql, params) {
            Ok(Reply::Changed(n)) => n,
            Ok(Reply::Rows(_)) => unreachable!("a statement answers a count"),
            Err(e) => panic!("{sql}: {e}"),
        }
    }

    /// Runs statements separated by `;`, without parameters.
    pub fn execute_batch(&self, sql: &str) {
        if let Err(e) = self.run(Op::Batch, sql, &[]) {
            panic!("{sql}: {e}");
        }
    }

    /// `SELECT count(*)` (or any one integer) of `sql`.
    pub fn count(&self, sql: &str) -> i64 {
        self.query_one(sql, &[])
    }

    /// Rows in `table`.
    pub fn count_rows(&self, table: &str) -> i64 {
        self.count(&format!("SELECT count(*) FROM {table}"))
    }

    /// Jobs not finished yet (blocked, pending or running).
    pub fn unfinished_jobs(&self) -> i64 {
        self.count("SELECT count(*) FROM jobs WHERE state IN ('blocked', 'pending', 'running')")
    }

    /// The event's `status`; panics when it is not stored.
    pub fn event_status(&self, event_id: &str) -> String {
        self.query_opt("SELECT status FROM events WHERE id = $1", &[&event_id])
            .unwrap_or_else(|| panic!("event {event_id} is not stored"))
    }

    /// The event's `status`, or `None` when it is not stored (or was pruned).
    pub fn event_status_opt(&self, event_id: &str) -> Option<String> {
        self.query_opt("SELECT status FROM events WHERE id = $1", &[&event_id])
    }

    /// Why the event has no run (`events.enrichment_error`).
    pub fn enrichment_error(&self, event_id: &str) -> Option<String> {
        self.query_opt::<Option<String>>(
            "SELECT enrichment_error FROM events WHERE id = $1",
            &[&event_id],
        )
        .unwrap_or_else(|| panic!("event {event_id} is not stored"))
    }

    /// The stored raw body of the event.
    pub fn event_body(&self, event_id: &str) -> Vec<u8> {
        self.query_opt("SELECT body FROM events WHERE id = $1", &[&event_id])
            .unwrap_or_else(|| panic!("event {event_id} is not stored"))
    }

    /// The event's jobs, in id order.
    pub fn jobs(&self, event_id: &str) -> Vec<JobRow> {
        self.query::<JobTuple>(
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs j JOIN events e ON e.seq = j.event_seq
                 WHERE e.id = $1 ORDER BY j.id"
            ),
            &[&event_id],
        )
        .into_iter()
        .map(job_row)
        .collect()
    }

    /// The event's first job of `kind` (`fetch` or `deliver`).
    pub fn job(&self, event_id: &str, kind: &str) -> JobRow {
        self.jobs(event_id)
            .into_iter()
            .find(|j| j.kind == kind)
            .unwrap_or_else(|| panic!("event {event_id} has no {kind} job"))
    }

    /// The delivery job of `hook` for the event.
    pub fn delivery_job(&self, event_id: &str, hook: &str) -> JobRow {
        self.jobs(event_id)
            .into_iter()
            .find(|j| j.kind == "deliver" && j.hook.as_deref() == Some(hook))
            .unwrap_or_else(|| panic!("no delivery job of {hook:?} for event {event_id:?}"))
    }

    /// The attempts of a job, oldest first.
    pub fn attempts(&self, job_id: i64) -> Vec<AttemptRow> {
        self.query::<(
            i64,
            String,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
        )>(
            "SELECT attempt, outcome, error_code, error, exit_code, stdout, stderr
             FROM attempts WHERE job_id = $1 ORDER BY id",
            &[&job_id],
        )
        .into_iter()
        .map(
            |(attempt, outcome, error_code, error, exit_code, stdout, stderr)| AttemptRow {
                attempt,
                outcome,
                error_code,
                error,
                exit_code,
                stdout,
                stderr,
            },
        )
        .collect()
    }

    /// `PRAGMA integrity_check` on SQLite; `ok` on PostgreSQL, whose
    /// write-ahead log keeps a killed server's files consistent and which
    /// has no such check without an extension.
    pub fn integrity_check(&self) -> String {
        match self.backend() {
            Backend::Sqlite => self.query_one("PRAGMA integrity_check", &[]),
            Backend::Postgres => "ok".to_owned(),
        }
    }

    fn run(&self, op: Op, sql: &str, params: &[&dyn SqlParam]) -> Result<Reply, String> {
        let params: Vec<Cell> = params.iter().map(|p| p.cell()).collect();
        match &self.kind {
            Kind::Sqlite { path, conn, .. } => {
                let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
                if guard.is_none() {
                    *guard = Some(open_sqlite(path)?);
                }
                let conn = guard.as_ref().expect("opened above");
                run_sqlite(conn, op, sql, &params).map_err(|e| e.to_string())
            }
            Kind::Postgres(pg) => pg
                .worker
                .as_ref()
                .expect("the worker lives as long as the database")
                .run(op, sql.to_owned(), params),
        }
    }
}

/// `[storage]`'s `path` line for a SQLite file.
pub fn sqlite_storage_toml(path: &Path) -> String {
    format!(
        "path = {}\n",
        super::config::toml_str(&path.display().to_string())
    )
}

// ---------------------------------------------------------------- SQLite ----

#[derive(Debug, Clone, Copy)]
enum Op {
    Query,
    Execute,
    Batch,
}

enum Reply {
    Rows(Vec<Vec<Cell>>),
    Changed(u64),
}

fn open_sqlite(path: &Path) -> Result<rusqlite::Connection, String> {
    // Not created here: a query before the app made the file is a test bug.
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// `$1` → `?1` outside quotes: SQLite reads `$1` as a *named* parameter and
/// numbers named ones in order of first appearance, so `... $2 ... $1`
/// would bind the wrong values; `?1` is the number itself.
pub fn sqlite_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
                out.push(c);
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) => out.push('?'),
            None => out.push(c),
        }
    }
    out
}

fn run_sqlite(
    conn: &rusqlite::Connection,
    op: Op,
    sql: &str,
    params: &[Cell],
) -> rusqlite::Result<Reply> {
    if let Op::Batch = op {
        conn.execute_batch(sql)?;
        return Ok(Reply::Changed(0));
    }
    let sql = sqlite_placeholders(sql);
    let mut stmt = conn.prepare(&sql)?;
    let values = params.iter().map(|p| match p {
        Cell::Null => SqliteValue::Null,
        Cell::Int(v) => SqliteValue::Integer(*v),
        Cell::Real(v) => SqliteValue::Real(*v),
        Cell::Text(s) => SqliteValue::Text(s.clone()),
        Cell::Bytes(b) => SqliteValue::Blob(b.clone()),
    });
    let params = rusqlite::params_from_iter(values);
    if let Op::Execute = op {
        return Ok(Reply::Changed(stmt.execute(params)? as u64));
    }
    let columns = stmt.column_count();
    let rows = stmt.query_map(params, |row| {
        (0..columns)
            .map(|i| {
                Ok(match row.get_ref(i)? {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(v) => Cell::Int(v),
                    ValueRef::Real(v) => Cell::Real(v),
                    ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Cell::Bytes(b.to_vec()),
                })
            })
            .collect::<rusqlite::Result<Vec<Cell>>>()
    })?;
    Ok(Reply::Rows(rows.collect::<rusqlite::Result<_>>()?))
}

// ------------------------------------------------------------ PostgreSQL ----

struct PgDatabase {
    admin: String,
    name: String,
    url: String,
    /// `storage.payload_dir` of the apps on it (the sandbox's).
    payload_dir: Option<PathBuf>,
    worker: Option<PgWorker>,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Our own connection first; FORCE ends any the app left open.
        drop(self.worker.take());
        if self.name.is_empty() {
            return; // not ours (`TestDb::postgres_at`)
        }
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let dropped = on_pg_thread(&self.admin, move |client| {
            Box::pin(async move { client.batch_execute(&sql).await })
        });
        if let Err(e) = dropped {
            eprintln!(
                "warning: the test database {} was not dropped: {e}",
                self.name
            );
        }
    }
}

/// The server's URL: [`DATABASE_URL_VAR`], else [`DEFAULT_DATABASE_URL`].
pub fn admin_url() -> String {
    std::env::var(DATABASE_URL_VAR).unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned())
}

/// `admin` with its database replaced by `name`.
fn database_url(admin: &str, name: &str) -> String {
    let mut url = reqwest::Url::parse(admin)
        .unwrap_or_else(|e| panic!("{DATABASE_URL_VAR} = {admin:?} is not a postgres:// URL: {e}"));
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Whether the PostgreSQL server answers (asked once per test binary).
pub fn postgres_server() -> Result<(), String> {
    static ANSWER: OnceLock<Result<(), String>> = OnceLock::new();
    ANSWER
        .get_or_init(|| {
            on_pg_thread(&admin_url(), |client| {
                Box::pin(async move { client.batch_execute("SELECT 1").await })
            })
        })
        .clone()
}

/// What a test says when it needs PostgreSQL and there is none.
pub fn no_server_message(why: String) -> String {
    format!(
        "the PostgreSQL variants of the tests need a server, and none answers at {} ({why}).\n\
         Start one with trust authentication for the user of the URL, for example\n\
         \x20   apt-get install postgresql && pg_ctlcluster 15 main start   (then trust local TCP logins in pg_hba.conf)\n\
         \x20   docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:15\n\
         and set {DATABASE_URL_VAR} if it is not {DEFAULT_DATABASE_URL};\n\
         or set {SKIP_POSTGRES_VAR}=1 to skip these variants.",
        admin_url()
    )
}

type PgFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), tokio_postgres::Error>> + 'a>>;

/// Connects to `url` on a thread of its own (tests call this from inside
/// their runtime, where another cannot be started) and runs `work`.
fn on_pg_thread<F>(url: &str, work: F) -> Result<(), String>
where
    F: for<'c> FnOnce(&'c tokio_postgres::Client) -> PgFuture<'c> + Send + 'static,
{
    let url = url.to_owned();
    std::thread::spawn(move || {
        let rt = pg_runtime()?;
        rt.block_on(async {
            let client = pg_connect(&url).await?;
            work(&client).await.map_err(|e| pg_error(&e))
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the PostgreSQL thread panicked".to_owned()))
}

fn pg_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

async fn pg_connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_postgres::connect(url, tokio_postgres::NoTls),
    )
    .await
    .map_err(|_| format!("no answer within {CONNECT_TIMEOUT:?}"))?
    .map_err(|e| pg_error(&e))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The server's own message (with its code), not only "db error".
fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match e.source() {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

struct PgRequest {
    op: Op,
    sql: String,
    params: Vec<Cell>,
    reply: mpsc::Sender<Result<Reply, String>>,
}

/// One connection, served by a thread with its own runtime, so that the
/// synchronous query helpers work inside and outside a test's runtime.
struct PgWorker {
    requests: Option<mpsc::Sender<PgRequest>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PgWorker {
    fn start(url: String) -> Result<PgWorker, String> {
        let (requests, inbox) = mpsc::channel::<PgRequest>();
        let (ready, started) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = match pg_runtime() {
                Ok(rt) => rt,
                Err(e) => return drop(ready.send(Err(e))),
            };
            let client = match rt.block_on(pg_connect(&url)) {
                Ok(c) => c,
                Err(e) => return drop(ready.send(Err(e))),
            };
            let _ = ready.send(Ok(()));
            while let Ok(request) = inbox.recv() {
                let answer = rt.block_on(run_pg(&client, request.op, &request.sql, request.params));
                let _ = request.reply.send(answer);
            }
        });
        started
            .recv()
            .map_err(|_| "the PostgreSQL thread ended".to_owned())??;
        Ok(PgWorker {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    fn run(&self, op: Op, sql: String, params: Vec<Cell>) -> Result<Reply, String> {
        let (reply, answer) = mpsc::channel();
        self.requests
            .as_ref()
            .expect("open until dropped")
            .send(PgRequest {
                op,
                sql,
                params,
                reply,
            })
            .map_err(|_| "the PostgreSQL thread ended".to_owned())?;
        answer
            .recv()
            .map_err(|_| "the PostgreSQL thread ended".to_owned())?
    }
}

impl Drop for PgWorker {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn run_pg(
    client: &tokio_postgres::Client,
    op: Op,
    sql: &str,
    params: Vec<Cell>,
) -> Result<Reply, String> {
    let params: Vec<PgParam> = params.into_iter().map(PgParam).collect();
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    match op {
        Op::Batch => client
            .batch_execute(sql)
            .await
            .map(|()| Reply::Changed(0))
            .map_err(|e| pg_error(&e)),
        Op::Execute => client
            .execute(sql, &refs)
            .await
            .map(Reply::Changed)
            .map_err(|e| pg_error(&e)),
        Op::Query => {
            let rows = client.query(sql, &refs).await.map_err(|e| pg_error(&e))?;
            rows.iter()
                .map(|row| {
                    (0..row.len())
                        .map(|i| {
                            row.try_get::<_, PgCell>(i)
                                .map(|c| c.0)
                                .map_err(|e| format!("column {i}: {e}"))
                        })
                        .collect()
                })
                .collect::<Result<_, _>>()
                .map(Reply::Rows)
        }
    }
}

/// A parameter encoded as whatever type the server inferred for its `$n`,
/// so `$1` works against INT4, INT8, TEXT or BYTEA columns alike.
#[derive(Debug)]
struct PgParam(Cell);

impl ToSql for PgParam {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        let wrong = || format!("cannot send {:?} as a PostgreSQL {ty}", self.0).into();
        match &self.0 {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Int(v) => match *ty {
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT8 => v.to_sql(ty, out),
                Type::FLOAT4 | Type::FLOAT8 => (*v as f64).to_sql(&Type::FLOAT8, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    v.to_string().as_str().to_sql(ty, out)
                }
                _ => Err(wrong()),
            },
            Cell::Real(v) => match *ty {
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                Type::FLOAT8 => v.to_sql(ty, out),
                _ => Err(wrong()),
            },
            Cell::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    s.as_str().to_sql(ty, out)
                }
                Type::JSON => {
                    out.extend_from_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                Type::JSONB => {
                    out.extend_from_slice(&[1]);
                    out.extend_from_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                Type::BYTEA => s.as_bytes().to_sql(ty, out),
                _ => Err(wrong()),
            },
            Cell::Bytes(b) => match *ty {
                Type::BYTEA => b.as_slice().to_sql(ty, out),
                _ => Err(wrong()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A column read as a [`Cell`] by its type.
struct PgCell(Cell);

impl<'a> FromSql<'a> for PgCell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(PgCell(match *ty {
            Type::INT2 => Cell::Int(i16::from_sql(ty, raw)?.into()),
            Type::INT4 => Cell::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT8 => Cell::Int(i64::from_sql(ty, raw)?),
            Type::OID => Cell::Int(u32::from_sql(ty, raw)?.into()),
            Type::BOOL => Cell::Int(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT4 => Cell::Real(f32::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Cell::Real(f64::from_sql(ty, raw)?),
            Type::NUMERIC => numeric(raw)?,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                Cell::Text(String::from_sql(ty, raw)?)
            }
            Type::JSON => Cell::Text(std::str::from_utf8(raw)?.to_owned()),
            Type::JSONB => {
                Cell::Text(std::str::from_utf8(raw.get(1..).unwrap_or_default())?.to_owned())
            }
            Type::BYTEA => Cell::Bytes(raw.to_vec()),
            _ => {
                return Err(
                    format!("no test reading for PostgreSQL {ty}: cast it in the SQL").into(),
                )
            }
        }))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(PgCell(Cell::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A binary NUMERIC (what `sum(bigint)` answers) as an integer when it is
/// one, else as a float.
fn numeric(raw: &[u8]) -> Result<Cell, Box<dyn Error + Sync + Send>> {
    let word = |i: usize| -> Result<i16, Box<dyn Error + Sync + Send>> {
        let b = raw.get(2 * i..2 * i + 2).ok_or("a short NUMERIC")?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    };
    let (ndigits, weight, sign, dscale) = (word(0)?, word(1)?, word(2)? as u16, word(3)?);
    if sign == 0xC000 {
        return Ok(Cell::Real(f64::NAN));
    }
    let mut value = 0f64;
    for i in 0..ndigits as usize {
        let digit = f64::from(word(4 + i)?);
        value += digit * 10_000f64.powi(i32::from(weight) - i as i32);
    }
    if sign == 0x4000 {
        value = -value;
    }
    Ok(if dscale == 0 && value.abs() < 9.0e15 {
        Cell::Int(value as i64)
    } else {
        Cell::Real(value)
    })
}
