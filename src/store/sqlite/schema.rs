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
    ])
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
    #[test]
    fn migrations_are_valid() {
        super::migrations().validate().unwrap();
    }
}
