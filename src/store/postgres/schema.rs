//! The PostgreSQL schema, as versioned migrations. The first daemon to start
//! applies them under an advisory lock; the others wait on the lock and then
//! find nothing to do. A schema newer than this binary stops the daemon.

use deadpool_postgres::Client;

use super::{pg_error, LOCK_MIGRATE};
use crate::store::StoreError;

/// Every migration, oldest first; the schema's version is how many have run.
/// Never edit one that has shipped: add a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE events (
    seq              BIGSERIAL PRIMARY KEY,
    id               TEXT    NOT NULL,
    event_type       TEXT    NOT NULL,
    run_id           TEXT    NOT NULL,
    signed_at        BIGINT  NOT NULL,          -- the signature's t, unix seconds
    received_at      BIGINT  NOT NULL,          -- unix ms
    client_addr      TEXT,
    body             BYTEA   NOT NULL,          -- the raw body, byte for byte
    status           TEXT    NOT NULL DEFAULT 'pending', -- pending | done | failed
    run_json         TEXT,
    logs_cursor      TEXT,
    logs_pages       INTEGER NOT NULL DEFAULT 0,
    logs_complete    BOOLEAN NOT NULL DEFAULT false,
    enrichment_error TEXT,
    -- The dedupe key (SPEC §5): the constraint, not a read-then-write, makes
    -- one row of the same event sent to two daemons at once.
    UNIQUE (event_type, run_id)
);
CREATE INDEX events_by_id ON events (id);
CREATE INDEX events_by_received ON events (received_at);

CREATE TABLE log_entries (
    event_seq BIGINT  NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    page      INTEGER NOT NULL,
    pos       INTEGER NOT NULL,
    entry     TEXT    NOT NULL,
    PRIMARY KEY (event_seq, page, pos)
);

CREATE TABLE log_cursors (
    event_seq BIGINT NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    cursor    TEXT   NOT NULL,
    PRIMARY KEY (event_seq, cursor)
);

CREATE TABLE jobs (
    id              BIGSERIAL PRIMARY KEY,
    event_seq       BIGINT  NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    kind            TEXT    NOT NULL,          -- fetch | deliver
    hook            TEXT    NOT NULL DEFAULT '',
    state           TEXT    NOT NULL,          -- blocked | pending | running | succeeded | failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    due_at          BIGINT  NOT NULL,          -- unix ms
    lease_until     BIGINT,                    -- unix ms, while running
    claimed_by      TEXT,                      -- the daemon running it
    last_error_code TEXT,
    last_error      TEXT,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    finished_at     BIGINT,
    UNIQUE (event_seq, kind, hook)
);
-- The claim walks each kind (and each hook) in id order: arrival order.
CREATE INDEX jobs_pending ON jobs (kind, hook, id) WHERE state = 'pending';
CREATE INDEX jobs_pending_due ON jobs (due_at) WHERE state = 'pending';
CREATE INDEX jobs_running ON jobs (kind, hook, lease_until) WHERE state = 'running';

CREATE TABLE attempts (
    id          BIGSERIAL PRIMARY KEY,
    job_id      BIGINT  NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    started_at  BIGINT  NOT NULL,
    duration_ms BIGINT  NOT NULL,
    outcome     TEXT    NOT NULL,              -- ok | retry | failed | interrupted
    error_code  TEXT,
    error       TEXT,
    exit_code   INTEGER,
    stdout      BYTEA,
    stderr      BYTEA
);
CREATE INDEX attempts_by_job ON attempts (job_id);

CREATE TABLE quarantine (
    id          BIGSERIAL PRIMARY KEY,
    received_at BIGINT NOT NULL,
    client_addr TEXT,
    signed_at   BIGINT,
    reason      TEXT   NOT NULL,
    body        BYTEA  NOT NULL
);

-- One row per hook any daemon has configured: the row every claim of that
-- hook locks (so `concurrency` holds across daemons) and its pause switch.
CREATE TABLE hooks (
    name   TEXT    PRIMARY KEY,
    paused BOOLEAN NOT NULL DEFAULT false
);

-- What each daemon last said its hooks are, to warn when daemons differ.
CREATE TABLE hook_configs (
    daemon      TEXT   NOT NULL,
    hook        TEXT   NOT NULL,
    config_hash TEXT   NOT NULL,
    seen_at     BIGINT NOT NULL,
    PRIMARY KEY (daemon, hook)
);

-- Waits every daemon honours, e.g. the API's Retry-After (name 'opensteer_api').
CREATE TABLE pauses (
    name     TEXT   PRIMARY KEY,
    until_ms BIGINT NOT NULL
);
"#,
    ENRICHMENT_AND_UNIQUE_IDS,
];

/// What the hooks are told about enrichment (SPEC §6), recorded rather than
/// guessed; unique event ids and the sender's own (SPEC §5); the bookkeeping
/// of `max_log_bytes` and of the settle window; each log entry's timestamp,
/// for the order of SPEC §5. The same as SQLite's fourth migration.
const ENRICHMENT_AND_UNIQUE_IDS: &str = r#"
ALTER TABLE events ADD COLUMN sender_id TEXT;          -- the id the sender gave, when it gave one
ALTER TABLE events ADD COLUMN enrichment_status TEXT;  -- complete | partial | none; NULL until the fetch decides
ALTER TABLE events ADD COLUMN enrichment_code TEXT;    -- with enrichment_error (the message): why not complete
ALTER TABLE events ADD COLUMN logs_bytes BIGINT NOT NULL DEFAULT 0;     -- bytes of log entries stored
ALTER TABLE events ADD COLUMN settle_polls INTEGER NOT NULL DEFAULT 0;  -- run fetches while it had not settled

-- The sender's id, for rows stored before: the id came from the body
-- (rather than being generated) when the body's "id" or "eventId" is it.
-- A body PostgreSQL's jsonb does not take (huge numbers) is left out.
CREATE FUNCTION pg_temp.steerhook_body_json(b BYTEA) RETURNS JSONB AS $$
BEGIN
    RETURN convert_from(b, 'UTF8')::jsonb;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
UPDATE events SET sender_id = id
WHERE id IN (pg_temp.steerhook_body_json(body) ->> 'id', pg_temp.steerhook_body_json(body) ->> 'eventId');
DROP FUNCTION pg_temp.steerhook_body_json(BYTEA);

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
        WHEN enrichment_error IS NOT NULL OR NOT logs_complete THEN 'partial'
        ELSE 'complete' END,
    enrichment_code = CASE
        WHEN enrichment_error IS NULL THEN NULL
        ELSE (SELECT coalesce(last_error_code, 'FETCH_FAILED') FROM jobs
              WHERE jobs.event_seq = events.seq AND jobs.kind = 'fetch') END
WHERE EXISTS (SELECT 1 FROM jobs WHERE jobs.event_seq = events.seq AND jobs.kind = 'fetch'
                AND jobs.state IN ('succeeded', 'failed'));
UPDATE events SET logs_bytes = (SELECT coalesce(sum(octet_length(entry)), 0)
                                FROM log_entries WHERE log_entries.event_seq = events.seq);

-- The entry's timestamp (SPEC §5), unix microseconds; NULL when it has none.
ALTER TABLE log_entries ADD COLUMN ts BIGINT;
-- The order hooks get when every entry of an event has a timestamp, read
-- in index order rather than sorted: by time, ties oldest page first (page
-- 0 is the newest), then as sent.
CREATE INDEX log_entries_by_ts ON log_entries (event_seq, ts, page DESC, pos);
"#;

/// The schema version this binary knows.
pub(super) fn known_version() -> i32 {
    MIGRATIONS.len() as i32
}

/// Brings the schema up to date under an advisory lock, or refuses a schema
/// newer than this binary knows.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    // Session-level: held across the migrations' own transactions, released
    // below (or when the connection ends, should this fail half-way). Even
    // `CREATE TABLE IF NOT EXISTS` races with itself, so it waits too.
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_MIGRATE])
        .await
        .map_err(migration_error)?;
    let result = match client
        .batch_execute("CREATE TABLE IF NOT EXISTS steerhook_schema (version INTEGER NOT NULL)")
        .await
    {
        Ok(()) => apply(client).await,
        Err(e) => Err(migration_error(e)),
    };
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_MIGRATE])
        .await;
    result?;
    unlocked.map_err(migration_error)?;
    Ok(())
}

async fn apply(client: &mut Client) -> Result<(), StoreError> {
    let current = version(client).await?.unwrap_or(0);
    let known = known_version();
    if current > known {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = client.transaction().await.map_err(migration_error)?;
        tx.batch_execute(sql).await.map_err(migration_error)?;
        tx.execute("DELETE FROM steerhook_schema", &[])
            .await
            .map_err(migration_error)?;
        tx.execute(
            "INSERT INTO steerhook_schema (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )
        .await
        .map_err(migration_error)?;
        tx.commit().await.map_err(migration_error)?;
        tracing::info!(version = i + 1, "database schema migrated");
    }
    Ok(())
}

/// The schema's version, or `None` where steerhook has never run.
pub(super) async fn version(client: &Client) -> Result<Option<i32>, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('steerhook_schema') IS NOT NULL", &[])
        .await
        .map_err(pg_error)?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_opt("SELECT version FROM steerhook_schema", &[])
        .await
        .map_err(pg_error)?;
    Ok(Some(row.map_or(0, |r| r.get(0))))
}

fn migration_error(e: tokio_postgres::Error) -> StoreError {
    StoreError::Migration(pg_error(e).to_string())
}
