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
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        super::migrations().validate().unwrap();
    }
}
