//! What a fetch keeps on SQLite: the event row it works from, the run, its
//! progress (settle polls, cursors followed, logs finished) and the
//! enrichment the hooks are told.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::SqliteStore;
use crate::domain::{Enrichment, EnrichmentError, EnrichmentStatus};
use crate::store::{AttemptRecord, ClaimedJob, JobNext, StoreError, StoredEvent};

impl SqliteStore {
    /// Loads one event row.
    pub async fn load_event(&self, seq: i64) -> Result<StoredEvent, StoreError> {
        self.read(move |c| load_event(c, seq)).await
    }

    /// Stores the run object. Relaxed, like every step of a fetch: the
    /// fetch's attempt record that follows makes it durable, and if a power
    /// failure loses it first, it is fetched again.
    pub async fn save_run(
        &self,
        seq: i64,
        run_json: String,
        unsettled: Option<EnrichmentError>,
    ) -> Result<(), StoreError> {
        self.write_relaxed(move |tx| save_run(tx, seq, &run_json, unsettled.as_ref()))
            .await
    }

    /// Counts a fetch of an unsettled run (relaxed, as [`SqliteStore::save_run`]).
    pub async fn count_settle_poll(&self, seq: i64) -> Result<(), StoreError> {
        self.write_relaxed(move |tx| count_settle_poll(tx, seq))
            .await
    }

    /// Whether paging already followed `cursor`.
    pub async fn cursor_seen(&self, seq: i64, cursor: String) -> Result<bool, StoreError> {
        self.read(move |c| cursor_seen(c, seq, &cursor)).await
    }

    /// Marks paging finished (relaxed, as [`SqliteStore::save_run`]).
    pub async fn finish_logs(
        &self,
        seq: i64,
        stopped: Option<EnrichmentError>,
    ) -> Result<(), StoreError> {
        self.write_relaxed(move |tx| finish_logs(tx, seq, stopped.as_ref()))
            .await
    }
}

/// The enrichment of a fetch that ended without saying (a panic): none
/// without a run, else partial when it failed, complete when it did not.
pub(super) fn fallback_enrichment(
    tx: &Transaction<'_>,
    job: &ClaimedJob,
    rec: &AttemptRecord,
    next: JobNext,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE events SET
            enrichment_status = CASE WHEN run_json IS NULL THEN 'none'
                                     WHEN ?2 THEN 'partial' ELSE 'complete' END,
            enrichment_code = CASE WHEN ?2 THEN ?3 END,
            enrichment_error = CASE WHEN ?2 THEN ?4 END
         WHERE seq = ?1 AND enrichment_status IS NULL",
    )?
    .execute(params![
        job.event_seq,
        next == JobNext::Failed,
        rec.error_code,
        rec.error
    ])?;
    Ok(())
}

/// Loads one event row.
pub(super) fn load_event(conn: &Connection, seq: i64) -> Result<StoredEvent, StoreError> {
    conn.prepare_cached(
        "SELECT seq, id, sender_id, event_type, run_id, received_at, body, run_json, logs_cursor,
                logs_pages, logs_complete, logs_bytes, settle_polls,
                enrichment_status, enrichment_code, enrichment_error
         FROM events WHERE seq = ?1",
    )?
    .query_row([seq], |r| {
        Ok(StoredEvent {
            seq: r.get(0)?,
            id: r.get(1)?,
            sender_id: r.get(2)?,
            event_type: r.get(3)?,
            run_id: r.get(4)?,
            received_at: r.get(5)?,
            body: r.get(6)?,
            run_json: r.get(7)?,
            logs_cursor: r.get(8)?,
            logs_pages: r.get(9)?,
            logs_complete: r.get(10)?,
            logs_bytes: r.get(11)?,
            settle_polls: r.get(12)?,
            enrichment: enrichment_from(r.get(13)?, r.get(14)?, r.get(15)?),
        })
    })
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("event #{seq}")))
}

/// The enrichment of an event row's three columns.
pub(super) fn enrichment_from(
    status: Option<EnrichmentStatus>,
    code: Option<String>,
    message: Option<String>,
) -> Option<Enrichment> {
    Some(Enrichment {
        status: status?,
        error: code.map(|code| EnrichmentError {
            code,
            message: message.unwrap_or_default(),
        }),
    })
}

/// Makes the event's enrichment partial for `why`, unless it already is for
/// an earlier reason (the first reason is the one hooks are told).
pub(super) fn mark_partial(
    tx: &Connection,
    seq: i64,
    why: &EnrichmentError,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE events SET enrichment_status = 'partial',
            enrichment_error = CASE WHEN enrichment_code IS NULL THEN ?3 ELSE enrichment_error END,
            enrichment_code = coalesce(enrichment_code, ?2)
         WHERE seq = ?1",
    )?
    .execute(params![seq, why.code, why.message])?;
    Ok(())
}

/// Stores the run object, and why it is taken although it has not settled.
pub(super) fn save_run(
    tx: &Connection,
    seq: i64,
    run_json: &str,
    unsettled: Option<&EnrichmentError>,
) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE events SET run_json = ?2 WHERE seq = ?1")?
        .execute(params![seq, run_json])?;
    if let Some(why) = unsettled {
        mark_partial(tx, seq, why)?;
    }
    Ok(())
}

/// Counts one more fetch of a run that had not settled.
pub(super) fn count_settle_poll(tx: &Connection, seq: i64) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE events SET settle_polls = settle_polls + 1 WHERE seq = ?1")?
        .execute([seq])?;
    Ok(())
}

/// Records what the hooks are told about enrichment.
pub(super) fn save_enrichment(tx: &Connection, seq: i64, e: &Enrichment) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE events SET enrichment_status = ?2, enrichment_code = ?3, enrichment_error = ?4
         WHERE seq = ?1",
    )?
    .execute(params![
        seq,
        e.status,
        e.error.as_ref().map(|x| &x.code),
        e.error.as_ref().map(|x| &x.message)
    ])?;
    Ok(())
}

/// Whether paging already followed `cursor` for this event.
pub(super) fn cursor_seen(conn: &Connection, seq: i64, cursor: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM log_cursors WHERE event_seq = ?1 AND cursor = ?2")?
        .exists(params![seq, cursor])?)
}

/// Marks paging finished without a new page (a page limit, or the next
/// page would pass `max_log_bytes`), and why it stopped early.
pub(super) fn finish_logs(
    tx: &Connection,
    seq: i64,
    stopped: Option<&EnrichmentError>,
) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE events SET logs_complete = 1, logs_cursor = NULL WHERE seq = ?1")?
        .execute([seq])?;
    if let Some(why) = stopped {
        mark_partial(tx, seq, why)?;
    }
    Ok(())
}
