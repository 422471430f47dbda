//! The schema, as versioned migrations applied on every open.

use rusqlite_migration::{Migrations, M};

/// Every migration, oldest first. Never edit one that has shipped: add a new one.
pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            r#"
CREATE TABLE events (
    seq              INTEGER PRIMARY KEY,
    id               TEXT    NOT NULL,          -- the sender's id, or one we generated
    event_type       TEXT    NOT NULL,
    run_id           TEXT    NOT NULL,
    signed_at        INTEGER NOT NULL,          -- the signature's t, unix seconds
    received_at      INTEGER NOT NULL,          -- unix ms
    client_addr      TEXT,
    body             BLOB    NOT NULL,          -- the raw body, byte for byte
    status           TEXT    NOT NULL DEFAULT 'pending', -- pending | done | failed
    run_json         TEXT,                      -- the run object from the API
    logs_cursor      TEXT,                      -- where log paging resumes
    logs_pages       INTEGER NOT NULL DEFAULT 0,
    logs_complete    INTEGER NOT NULL DEFAULT 0,
    enrichment_error TEXT,
    -- The dedupe key (SPEC §5). The constraint, not a read-then-write, makes
    -- concurrent deliveries of one event store one row.
    UNIQUE (event_type, run_id)
);
CREATE INDEX events_by_id ON events (id);
CREATE INDEX events_by_received ON events (received_at);

-- Log entries as fetched, one row per entry. Page 0 is the newest page; within
-- a page entries keep the API's (chronological) order. Re-fetching a page
-- replaces its rows, so each entry is stored once even after a retry.
CREATE TABLE log_entries (
    event_seq INTEGER NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    page      INTEGER NOT NULL,
    pos       INTEGER NOT NULL,
    entry     TEXT    NOT NULL,
    PRIMARY KEY (event_seq, page, pos)
) WITHOUT ROWID;

-- Cursors already followed for an event, to stop on a repeated cursor.
CREATE TABLE log_cursors (
    event_seq INTEGER NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    cursor    TEXT    NOT NULL,
    PRIMARY KEY (event_seq, cursor)
) WITHOUT ROWID;

-- The work queue (outbox): written in the same transaction as the event.
CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY,
    event_seq       INTEGER NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    kind            TEXT    NOT NULL,          -- fetch | deliver
    hook            TEXT    NOT NULL DEFAULT '',
    state           TEXT    NOT NULL,          -- blocked | pending | running | succeeded | failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    due_at          INTEGER NOT NULL,          -- unix ms
    lease_until     INTEGER,                   -- unix ms, while running
    last_error_code TEXT,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    UNIQUE (event_seq, kind, hook)
);
CREATE INDEX jobs_by_state_due ON jobs (state, due_at);

CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY,
    job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    outcome     TEXT    NOT NULL,              -- ok | retry | failed | interrupted
    error_code  TEXT,
    error       TEXT,
    exit_code   INTEGER,
    stdout      BLOB,
    stderr      BLOB
);
CREATE INDEX attempts_by_job ON attempts (job_id);

-- Signed bodies that were not usable events (400 PAYLOAD_INVALID), kept for inspection.
CREATE TABLE quarantine (
    id          INTEGER PRIMARY KEY,
    received_at INTEGER NOT NULL,
    client_addr TEXT,
    signed_at   INTEGER,
    reason      TEXT    NOT NULL,
    body        BLOB    NOT NULL
);
"#,
        ),
        // The claim walks pending fetches and pending deliveries each in id
        // order and stops at the first it may take; with only (state, due_at)
        // it sorted every due job on each claim, which made draining a
        // backlog of 10,000 events quadratic. Partial, so ingest pays for
        // one entry per pending job, not for blocked ones.
        M::up("CREATE INDEX jobs_pending_by_kind ON jobs (kind, id) WHERE state = 'pending';"),
        // Ingest wrote three (state, due_at) entries per event, one per job,
        // for queries that only ask about pending or running jobs: partial
        // indexes answer them and cost nothing for a blocked job.
        M::up(
            "DROP INDEX jobs_by_state_due;
             CREATE INDEX jobs_pending_by_due ON jobs (due_at) WHERE state = 'pending';
             CREATE INDEX jobs_running ON jobs (id) WHERE state = 'running';",
        ),
        M::up(ENRICHMENT_AND_UNIQUE_IDS),
        // Operator commands (SPEC §2) and ids that are never reused.
        // Runs with foreign keys off (see `migrate`): rebuilding `jobs`
        // drops the old table, which would otherwise delete every attempt.
        M::up(
            r#"
-- `hooks pause`: a row per hook ever paused; claims skip a paused hook's deliveries.
CREATE TABLE hooks (
    name   TEXT    PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Which run of a delivery an attempt belongs to: 0 the first, n the n-th replay.
ALTER TABLE attempts ADD COLUMN replay INTEGER NOT NULL DEFAULT 0;

-- An INTEGER PRIMARY KEY takes the largest id + 1, so after `prune` deleted
-- the newest jobs their ids came back (two jobs logged as job_id=1).
-- AUTOINCREMENT never gives an id twice. SQLite cannot change a key in
-- place: the table is rebuilt (https://sqlite.org/lang_altertable.html#otheralter).
CREATE TABLE jobs_rebuilt (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq       INTEGER NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    kind            TEXT    NOT NULL,          -- fetch | deliver
    hook            TEXT    NOT NULL DEFAULT '',
    state           TEXT    NOT NULL,          -- blocked | pending | running | succeeded | failed | skipped
    attempts        INTEGER NOT NULL DEFAULT 0,
    due_at          INTEGER NOT NULL,          -- unix ms
    lease_until     INTEGER,                   -- unix ms, while running
    last_error_code TEXT,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    replays         INTEGER NOT NULL DEFAULT 0, -- times `replay` queued it again
    UNIQUE (event_seq, kind, hook)
);
INSERT INTO jobs_rebuilt (id, event_seq, kind, hook, state, attempts, due_at, lease_until,
                          last_error_code, last_error, created_at, updated_at, finished_at)
    SELECT id, event_seq, kind, hook, state, attempts, due_at, lease_until,
           last_error_code, last_error, created_at, updated_at, finished_at
    FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_rebuilt RENAME TO jobs;
CREATE INDEX jobs_pending_by_kind ON jobs (kind, id) WHERE state = 'pending';
CREATE INDEX jobs_pending_by_due ON jobs (due_at) WHERE state = 'pending';
CREATE INDEX jobs_running ON jobs (id) WHERE state = 'running';

-- Quarantined bodies are named by id (`quarantine show ID`): never twice either.
CREATE TABLE quarantine_rebuilt (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at INTEGER NOT NULL,
    client_addr TEXT,
    signed_at   INTEGER,
    reason      TEXT    NOT NULL,
    body        BLOB    NOT NULL
);
INSERT INTO quarantine_rebuilt SELECT id, received_at, client_addr, signed_at, reason, body FROM quarantine;
DROP TABLE quarantine;
ALTER TABLE quarantine_rebuilt RENAME TO quarantine;

-- SPEC §2: a fetch that gave up does not make an event failed; only a
-- delivery does. Events stored before said otherwise.
UPDATE events SET status = 'done'
WHERE status = 'failed'
  AND NOT EXISTS (SELECT 1 FROM jobs
                  WHERE jobs.event_seq = events.seq AND jobs.kind = 'deliver' AND jobs.state = 'failed');
"#,
        )
        .foreign_key_check(),
        // Jobs made after the answer (see `super::expand`): an event with
        // work ahead of it waits here until the worker makes its jobs.
        M::up(
            "CREATE TABLE unexpanded (
                 seq INTEGER PRIMARY KEY REFERENCES events (seq) ON DELETE CASCADE
             );",
        ),
    ])
}

/// Brings the schema up to date. Foreign keys are off meanwhile, as SQLite
/// requires for rebuilding a table others refer to, and checked before each
/// migration commits.
pub fn migrate(conn: &mut rusqlite::Connection) -> Result<(), crate::store::StoreError> {
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let migrated = migrations().to_latest(conn);
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(migrated?)
}

/// What the hooks are told about enrichment (SPEC §6), recorded rather than
/// guessed; unique event ids and the sender's own (SPEC §5); the bookkeeping
/// of `max_log_bytes` and of the settle window; each log entry's timestamp,
/// for the order of SPEC §5.
const ENRICHMENT_AND_UNIQUE_IDS: &str = r#"
ALTER TABLE events ADD COLUMN sender_id TEXT;          -- the id the sender gave, when it gave one
ALTER TABLE events ADD COLUMN enrichment_status TEXT;  -- complete | partial | none; NULL until the fetch decides
ALTER TABLE events ADD COLUMN enrichment_code TEXT;    -- with enrichment_error (the message): why not complete
ALTER TABLE events ADD COLUMN logs_bytes INTEGER NOT NULL DEFAULT 0;   -- bytes of log entries stored
ALTER TABLE events ADD COLUMN settle_polls INTEGER NOT NULL DEFAULT 0; -- run fetches while it had not settled

-- The sender's id, for rows stored before: the id came from the body
-- (rather than being generated) when the body's "id" or "eventId" is it.
UPDATE events SET sender_id = id
WHERE json_valid(CAST(body AS TEXT))
  AND id IN (json_extract(CAST(body AS TEXT), '$.id'), json_extract(CAST(body AS TEXT), '$.eventId'));

-- Rows that shared an id with an older row get an id of their own; the
-- oldest keeps it.
UPDATE events SET id = id || '~' || seq
WHERE EXISTS (SELECT 1 FROM events AS older WHERE older.id = events.id AND older.seq < events.seq);
DROP INDEX events_by_id;
CREATE UNIQUE INDEX events_by_id ON events (id);

-- Finished fetches of rows stored before: what the hook document said then.
UPDATE events SET
    enrichment_status = CASE
        WHEN run_json IS NULL THEN 'none'
        WHEN enrichment_error IS NOT NULL OR logs_complete = 0 THEN 'partial'
        ELSE 'complete' END,
    enrichment_code = CASE
        WHEN enrichment_error IS NULL THEN NULL
        ELSE (SELECT coalesce(last_error_code, 'FETCH_FAILED') FROM jobs
              WHERE jobs.event_seq = events.seq AND jobs.kind = 'fetch') END
WHERE EXISTS (SELECT 1 FROM jobs WHERE jobs.event_seq = events.seq AND jobs.kind = 'fetch'
                AND jobs.state IN ('succeeded', 'failed'));
UPDATE events SET logs_bytes = (SELECT coalesce(sum(length(CAST(entry AS BLOB))), 0)
                                FROM log_entries WHERE log_entries.event_seq = events.seq);

-- The entry's timestamp (SPEC §5), unix microseconds; NULL when it has none.
ALTER TABLE log_entries ADD COLUMN ts INTEGER;
-- The order hooks get when every entry of an event has a timestamp, read
-- in index order rather than sorted: by time, ties oldest page first (page
-- 0 is the newest), then as sent.
CREATE INDEX log_entries_by_ts ON log_entries (event_seq, ts, page DESC, pos);
"#;

#[cfg(test)]
mod migration_tests {
    use rusqlite::Connection;

    /// Up to, and not including, the migration at `index` (0-based).
    fn database_before(index: usize) -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        super::migrations().to_version(&mut conn, index).unwrap();
        conn
    }

    #[test]
    fn rows_that_shared_an_id_get_their_own_and_keep_the_senders() {
        let mut conn = database_before(3);
        for (id, run, body) in [
            ("evt_a", "run_1", r#"{"id":"evt_a","type":"run.succeeded"}"#),
            ("evt_a", "run_2", r#"{"id":"evt_a","type":"run.succeeded"}"#),
            ("evt_gen", "run_3", r#"{"type":"run.succeeded"}"#),
            (
                "evt_b",
                "run_4",
                r#"{"eventId":"evt_b","type":"run.succeeded"}"#,
            ),
        ] {
            conn.execute(
                "INSERT INTO events (id, event_type, run_id, signed_at, received_at, body)
                 VALUES (?1, 'run.succeeded', ?2, 0, 0, CAST(?3 AS BLOB))",
                [id, run, body],
            )
            .unwrap();
        }
        super::migrations().to_latest(&mut conn).unwrap();
        let rows: Vec<(String, Option<String>)> = conn
            .prepare("SELECT id, sender_id FROM events ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                ("evt_a".into(), Some("evt_a".into())),
                ("evt_a~2".into(), Some("evt_a".into())),
                ("evt_gen".into(), None),
                ("evt_b".into(), Some("evt_b".into())),
            ]
        );
        let again = conn.execute(
            "INSERT INTO events (id, event_type, run_id, signed_at, received_at, body)
             VALUES ('evt_a', 'run.failed', 'run_9', 0, 0, x'')",
            [],
        );
        assert!(again.is_err(), "ids are unique now");
    }

    #[test]
    fn finished_fetches_keep_what_the_hooks_were_told() {
        let mut conn = database_before(3);
        conn.execute_batch(
            "INSERT INTO events (seq, id, event_type, run_id, signed_at, received_at, body, run_json, logs_complete, enrichment_error)
             VALUES (1, 'e1', 'run.succeeded', 'r1', 0, 0, x'', '{}', 1, NULL),
                    (2, 'e2', 'run.succeeded', 'r2', 0, 0, x'', NULL, 0, 'gone'),
                    (3, 'e3', 'run.succeeded', 'r3', 0, 0, x'', NULL, 0, NULL);
             INSERT INTO jobs (event_seq, kind, state, due_at, created_at, updated_at, last_error_code)
             VALUES (1, 'fetch', 'succeeded', 0, 0, 0, NULL),
                    (2, 'fetch', 'failed', 0, 0, 0, 'HTTP_404'),
                    (3, 'fetch', 'pending', 0, 0, 0, NULL);
             INSERT INTO log_entries (event_seq, page, pos, entry) VALUES (1, 0, 0, '{\"a\":1}');",
        )
        .unwrap();
        super::migrations().to_latest(&mut conn).unwrap();
        let rows: Vec<(Option<String>, Option<String>, i64)> = conn
            .prepare(
                "SELECT enrichment_status, enrichment_code, logs_bytes FROM events ORDER BY seq",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                (Some("complete".into()), None, 7),
                (Some("none".into()), Some("HTTP_404".into()), 0),
                (None, None, 0),
            ]
        );
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;
    use rusqlite_migration::SchemaVersion;

    #[test]
    fn migrations_are_valid() {
        super::migrations().validate().unwrap();
    }

    /// A database of the shipped schema (version 3), with a finished event
    /// whose fetch gave up, migrated: nothing lost, ids not reused.
    #[test]
    fn the_rebuild_of_jobs_keeps_every_attempt_and_ids_are_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("t.db")).unwrap();
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        super::migrations().to_version(&mut conn, 3).unwrap();
        conn.execute_batch(
            "INSERT INTO events (seq, id, event_type, run_id, signed_at, received_at, body, status)
                 VALUES (1, 'evt_1', 'run.succeeded', 'run_1', 0, 0, x'7b7d', 'failed');
             INSERT INTO jobs (id, event_seq, kind, hook, state, attempts, due_at, created_at, updated_at)
                 VALUES (1, 1, 'fetch', '', 'failed', 3, 0, 0, 0),
                        (2, 1, 'deliver', 'etl', 'succeeded', 1, 0, 0, 0);
             INSERT INTO attempts (job_id, attempt, started_at, duration_ms, outcome)
                 VALUES (1, 3, 0, 1, 'failed'), (2, 1, 0, 1, 'ok');
             INSERT INTO quarantine (id, received_at, reason, body) VALUES (7, 0, 'x', x'00');",
        )
        .unwrap();
        super::migrate(&mut conn).unwrap();
        assert_eq!(
            super::migrations().current_version(&conn).unwrap(),
            SchemaVersion::Inside(std::num::NonZeroUsize::new(6).unwrap())
        );
        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
        assert_eq!(count("SELECT count(*) FROM attempts"), 2, "attempts kept");
        assert_eq!(
            count("SELECT count(*) FROM events WHERE status = 'done'"),
            1,
            "a given-up fetch no longer fails the event"
        );
        assert_eq!(count("PRAGMA foreign_keys"), 1, "foreign keys back on");
        conn.execute_batch(
            "DELETE FROM events; DELETE FROM quarantine;
             INSERT INTO events (seq, id, event_type, run_id, signed_at, received_at, body)
                 VALUES (2, 'evt_2', 'run.succeeded', 'run_2', 0, 0, x'7b7d');
             INSERT INTO jobs (event_seq, kind, state, due_at, created_at, updated_at)
                 VALUES (2, 'fetch', 'pending', 0, 0, 0);
             INSERT INTO quarantine (received_at, reason, body) VALUES (0, 'y', x'00');",
        )
        .unwrap();
        assert_eq!(
            count("SELECT count(*) FROM attempts"),
            0,
            "cascade still works"
        );
        assert_eq!(count("SELECT id FROM jobs"), 3, "not 1 again");
        assert_eq!(count("SELECT id FROM quarantine"), 8, "not 1 again");
    }
}
