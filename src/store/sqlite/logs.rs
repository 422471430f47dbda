//! A run's logs on SQLite: the pages a fetch stores, streamed out as one
//! JSON array, and the newest entries for a summary.

use rusqlite::{params, Connection};
use tokio::sync::mpsc;

use super::enrichment::mark_partial;
use super::{read_blocking, SqliteStore};
use crate::store::logs::{ChunkedArray, Newest, LOG_CHUNKS_AHEAD};
use crate::store::{LogChunks, LogPage, NewestLogs, StoreError, SummaryBounds};

impl SqliteStore {
    /// The event's logs as a JSON array, streamed from a blocking thread.
    pub fn stream_logs_json(&self, seq: i64) -> LogChunks {
        let (tx, rx) = mpsc::channel(LOG_CHUNKS_AHEAD);
        let inner = self.inner.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _g = span.enter();
            let read = read_blocking(&inner, |c| {
                write_logs_json(c, seq, &mut |chunk| tx.blocking_send(Ok(chunk)).is_ok())
            });
            if let Err(e) = read {
                let _ = tx.blocking_send(Err(e));
            }
        });
        rx
    }

    /// The newest log entries within `bounds`.
    pub async fn newest_logs(
        &self,
        seq: i64,
        bounds: SummaryBounds,
    ) -> Result<NewestLogs, StoreError> {
        self.read(move |c| newest_logs(c, seq, &bounds)).await
    }

    /// Stores one page of logs (relaxed, as [`SqliteStore::save_run`]).
    pub async fn save_log_page(&self, seq: i64, page: LogPage) -> Result<(), StoreError> {
        self.write_relaxed(move |tx| save_log_page(tx, seq, &page))
            .await
    }
}

/// Whether every stored entry of the event has a timestamp: then they are
/// ordered by it (SPEC §5). Answered from `log_entries_by_ts`.
fn every_entry_has_a_timestamp(conn: &Connection, seq: i64) -> Result<bool, StoreError> {
    Ok(!conn
        .prepare_cached("SELECT 1 FROM log_entries WHERE event_seq = ?1 AND ts IS NULL")?
        .exists([seq])?)
}

/// How many pages' rows the event has (pages are numbered from 0, newest first).
fn stored_pages(conn: &Connection, seq: i64) -> Result<i64, StoreError> {
    let max: Option<i64> = conn
        .prepare_cached("SELECT max(page) FROM log_entries WHERE event_seq = ?1")?
        .query_row([seq], |r| r.get(0))?;
    Ok(max.map_or(0, |m| m + 1))
}

/// The log entries of event `seq` as one JSON array, oldest first in the
/// order of SPEC §5, handed to `emit` in chunks of about
/// 64 KiB (or one entry, if larger). Rows are read one by one
/// inside one read transaction (one snapshot): never the whole log in memory,
/// and no sort, since both orders are index orders. Stops early, without
/// error, when `emit` returns false (nobody reads any more).
pub(super) fn write_logs_json(
    conn: &Connection,
    seq: i64,
    emit: &mut dyn FnMut(Vec<u8>) -> bool,
) -> Result<(), StoreError> {
    let tx = conn.unchecked_transaction()?;
    let mut out = ChunkedArray::new();
    let mut push = |row: &rusqlite::Row<'_>| -> Result<bool, StoreError> {
        Ok(match out.push(entry_bytes(row)?) {
            Some(chunk) => emit(chunk),
            None => true,
        })
    };
    if every_entry_has_a_timestamp(&tx, seq)? {
        let mut stmt = tx.prepare_cached(
            "SELECT entry FROM log_entries WHERE event_seq = ?1 ORDER BY ts, page DESC, pos",
        )?;
        let mut rows = stmt.query([seq])?;
        while let Some(row) = rows.next()? {
            if !push(row)? {
                return Ok(());
            }
        }
    } else {
        let mut stmt = tx.prepare_cached(
            "SELECT entry FROM log_entries WHERE event_seq = ?1 AND page = ?2 ORDER BY pos",
        )?;
        for page in (0..stored_pages(&tx, seq)?).rev() {
            let mut rows = stmt.query(params![seq, page])?;
            while let Some(row) = rows.next()? {
                if !push(row)? {
                    return Ok(());
                }
            }
        }
    }
    emit(out.finish());
    tx.commit()?;
    Ok(())
}

/// The stored text of an entry (first column), without copying it.
fn entry_bytes<'r>(row: &'r rusqlite::Row<'_>) -> Result<&'r [u8], StoreError> {
    row.get_ref(0)?
        .as_bytes()
        .map_err(|e| StoreError::Database(format!("a log entry is not text: {e}")))
}

/// The newest entries of event `seq`, oldest first, within `bounds`, and
/// how many it has in all. An entry over `bounds.entry_bytes` is replaced by
/// a JSON string saying how large it was, without reading it.
pub(super) fn newest_logs(
    conn: &Connection,
    seq: i64,
    bounds: &SummaryBounds,
) -> Result<NewestLogs, StoreError> {
    let tx = conn.unchecked_transaction()?;
    let total: i64 = tx
        .prepare_cached("SELECT count(*) FROM log_entries WHERE event_seq = ?1")?
        .query_row([seq], |r| r.get(0))?;
    let mut newest = Newest::new(bounds);
    if newest.wanted() > 0 && total > 0 {
        if every_entry_has_a_timestamp(&tx, seq)? {
            let mut stmt = tx.prepare_cached(
                "SELECT CASE WHEN octet_length(entry) <= ?3 THEN entry END, octet_length(entry)
                 FROM log_entries WHERE event_seq = ?1
                 ORDER BY ts DESC, page, pos DESC LIMIT ?2",
            )?;
            let mut rows = stmt.query(params![
                seq,
                newest.wanted() as i64,
                bounds.entry_bytes as i64
            ])?;
            while let Some(row) = rows.next()? {
                if !newest.add(row.get(0)?, row.get(1)?) {
                    break;
                }
            }
        } else {
            let mut stmt = tx.prepare_cached(
                "SELECT CASE WHEN octet_length(entry) <= ?4 THEN entry END, octet_length(entry)
                 FROM log_entries WHERE event_seq = ?1 AND page = ?2
                 ORDER BY pos DESC LIMIT ?3",
            )?;
            'pages: for page in 0..stored_pages(&tx, seq)? {
                let mut rows = stmt.query(params![
                    seq,
                    page,
                    newest.wanted() as i64,
                    bounds.entry_bytes as i64
                ])?;
                while let Some(row) = rows.next()? {
                    if !newest.add(row.get(0)?, row.get(1)?) {
                        break 'pages;
                    }
                }
            }
        }
    }
    tx.commit()?;
    Ok(NewestLogs {
        entries: newest.oldest_first(),
        total: total as u64,
    })
}

/// Stores one page of logs and where paging goes next; replaces the page if it
/// was stored before (a retried fetch), so entries are never doubled.
pub(super) fn save_log_page(tx: &Connection, seq: i64, p: &LogPage) -> Result<(), StoreError> {
    let replaced: i64 = tx
        .prepare_cached(
            "SELECT coalesce(sum(octet_length(entry)), 0) FROM log_entries
             WHERE event_seq = ?1 AND page = ?2",
        )?
        .query_row(params![seq, p.page], |r| r.get(0))?;
    tx.prepare_cached("DELETE FROM log_entries WHERE event_seq = ?1 AND page = ?2")?
        .execute(params![seq, p.page])?;
    let mut added: i64 = 0;
    {
        // With `skip_stored`, an entry equal to one of another page is left
        // out. That compares it with each of the event's rows, which is
        // slow for a large log, but only a looping API gets here.
        let mut ins = tx.prepare_cached(if p.skip_stored {
            "INSERT INTO log_entries (event_seq, page, pos, entry, ts)
             SELECT ?1, ?2, ?3, ?4, ?5
             WHERE NOT EXISTS (SELECT 1 FROM log_entries
                               WHERE event_seq = ?1 AND page <> ?2 AND entry = ?4)"
        } else {
            "INSERT INTO log_entries (event_seq, page, pos, entry, ts) VALUES (?1, ?2, ?3, ?4, ?5)"
        })?;
        for (pos, e) in p.entries.iter().enumerate() {
            let text = p.text.get(e.span.clone()).ok_or_else(|| {
                StoreError::Database(format!("log entry {pos} is outside its page"))
            })?;
            let n = ins.execute(params![seq, p.page, pos as i64, text, e.ts_us])?;
            if n == 1 {
                added += text.len() as i64;
            }
        }
    }
    if let Some(c) = &p.followed_cursor {
        tx.prepare_cached(
            "INSERT INTO log_cursors (event_seq, cursor) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        )?
        .execute(params![seq, c])?;
    }
    let next = if p.complete {
        None
    } else {
        p.next_cursor.as_deref()
    };
    tx.prepare_cached(
        "UPDATE events SET logs_cursor = ?2, logs_pages = ?3, logs_complete = ?4,
                logs_bytes = logs_bytes - ?5 + ?6
         WHERE seq = ?1",
    )?
    .execute(params![seq, next, p.page + 1, p.complete, replaced, added])?;
    if let Some(why) = &p.stopped {
        mark_partial(tx, seq, why)?;
    }
    Ok(())
}
