//! The test harness's own parts. Its database helpers (tests/support/db.rs)
//! on both backends: the same SQL, `$n` parameters and Rust types on SQLite
//! and on a fresh PostgreSQL database, which is dropped afterwards; these
//! run against the PostgreSQL server now, whether or not steerhook has the
//! backend yet. And the test SMTP server's AUTH decoding.

use crate::support::backends::postgres_runs;
use crate::support::db::{sqlite_placeholders, Cell};
use crate::support::prelude::*;
use crate::support::smtp::base64_decode;

/// A table shaped like the app's (integers, text, bytes, NULLs), filled.
fn fill(db: &TestDb) {
    let bytes = match db.backend() {
        Backend::Sqlite => "BLOB",
        Backend::Postgres => "BYTEA",
    };
    db.execute_batch(&format!(
        "CREATE TABLE events (seq BIGINT PRIMARY KEY, id TEXT NOT NULL, status TEXT NOT NULL,
                              attempts INTEGER NOT NULL, body {bytes}, error TEXT)"
    ));
    for (seq, id, status, attempts, body, error) in [
        (
            1i64,
            "evt_a",
            "done",
            1i64,
            Some(b"{\"a\":1}".to_vec()),
            None,
        ),
        (2, "evt_b", "pending", 3, None, Some("HTTP_500")),
        (3, "evt_c", "done", 2, Some(vec![0, 255, 10]), None),
    ] {
        let changed = db.execute(
            "INSERT INTO events (seq, id, status, attempts, body, error) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&seq, &id, &status, &attempts, &body, &error],
        );
        assert_eq!(changed, 1);
    }
}

/// The same assertions, whatever the backend.
fn check_queries(db: &TestDb) {
    fill(db);
    assert_eq!(
        db.query_one::<i64>("SELECT count(*) FROM events WHERE status = $1", &[&"done"]),
        2
    );
    assert_eq!(db.count_rows("events"), 3);
    // Parameters by number, not by order of appearance.
    assert_eq!(
        db.query::<String>(
            "SELECT id FROM events WHERE attempts > $2 AND status = $1 ORDER BY seq",
            &[&"done", &1i64]
        ),
        ["evt_c"]
    );
    // One parameter used twice; an INTEGER column compared with an i64.
    assert_eq!(
        db.query::<(String, i64)>(
            "SELECT id, attempts FROM events WHERE attempts = $1 OR seq = $1 ORDER BY seq",
            &[&1i64]
        ),
        [("evt_a".to_owned(), 1)]
    );
    let rows: Vec<(String, Option<Vec<u8>>, Option<String>)> =
        db.query("SELECT id, body, error FROM events ORDER BY seq", &[]);
    assert_eq!(
        rows,
        [
            ("evt_a".to_owned(), Some(b"{\"a\":1}".to_vec()), None),
            ("evt_b".to_owned(), None, Some("HTTP_500".to_owned())),
            ("evt_c".to_owned(), Some(vec![0, 255, 10]), None),
        ]
    );
    // A literal `$1` inside quotes is text, not a parameter.
    assert_eq!(
        db.query_one::<String>("SELECT '$1' || id FROM events WHERE seq = $1", &[&2i64]),
        "$1evt_b"
    );
    assert_eq!(
        db.query_opt::<String>("SELECT id FROM events WHERE seq = $1", &[&9i64]),
        None
    );
    assert_eq!(
        db.query_one::<Cell>("SELECT sum(attempts) FROM events", &[]),
        Cell::Int(6),
        "sum() is a NUMERIC on PostgreSQL"
    );
    assert_eq!(
        db.execute(
            "UPDATE events SET status = $1 WHERE status = $2",
            &[&"done", &"pending"]
        ),
        1
    );
    assert_eq!(
        db.count("SELECT count(*) FROM events WHERE status = 'done'"),
        3
    );
}

#[test]
fn the_database_helpers_read_sqlite_with_dollar_parameters() {
    let sandbox = Sandbox::new();
    rusqlite::Connection::open(sandbox.db_path()).unwrap();
    check_queries(sandbox.db());
    assert!(sandbox.db().storage_toml().starts_with("path = "));
}

#[test]
fn sqlite_placeholders_are_numbered_and_quotes_are_left_alone() {
    assert_eq!(
        sqlite_placeholders("SELECT '$1', \"$2\" FROM t WHERE a = $2 AND b = $10"),
        "SELECT '$1', \"$2\" FROM t WHERE a = ?2 AND b = ?10"
    );
}

#[test]
fn the_database_helpers_read_a_fresh_postgres_database_which_is_dropped_afterwards() {
    if !postgres_runs(
        "harness::the_database_helpers_read_a_fresh_postgres_database_which_is_dropped_afterwards",
    ) {
        return;
    }
    let db = TestDb::create_postgres();
    let name = db.url().rsplit('/').next().unwrap().to_owned();
    assert!(name.starts_with("steerhook_test_"), "{name}");
    assert!(
        db.storage_toml().contains("backend = \"postgres\""),
        "{}",
        db.storage_toml()
    );
    check_queries(&db);
    // The app would hold connections of its own: dropping ends them too.
    let app_connection = TestDb::postgres_at(db.url());
    assert_eq!(app_connection.count_rows("events"), 3);
    drop(db);

    let server = TestDb::postgres_at(&crate::support::db::admin_url());
    let left: i64 = server.query_one(
        "SELECT count(*) FROM pg_database WHERE datname = $1",
        &[&name],
    );
    assert_eq!(left, 0, "the test database {name} was dropped");
}

#[test]
fn two_postgres_test_databases_are_apart() {
    if !postgres_runs("harness::two_postgres_test_databases_are_apart") {
        return;
    }
    let (one, two) = (TestDb::create_postgres(), TestDb::create_postgres());
    assert_ne!(one.url(), two.url());
    one.execute_batch("CREATE TABLE t (x INTEGER)");
    two.execute_batch("CREATE TABLE t (x INTEGER)");
    one.execute("INSERT INTO t VALUES ($1)", &[&7i64]);
    assert_eq!(one.count_rows("t"), 1);
    assert_eq!(two.count_rows("t"), 0);
}

#[test]
fn the_test_smtp_server_decodes_auth_plain() {
    assert_eq!(
        base64_decode("AHVzZXIAcGFzcw==").as_deref(),
        Some(&b"\0user\0pass"[..])
    );
    assert_eq!(base64_decode("Zm9vYg").as_deref(), Some(&b"foob"[..]));
    assert_eq!(base64_decode("!!"), None);
}
