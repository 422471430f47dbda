//! A run's logs on PostgreSQL: the pages a fetch stores, streamed out as one
//! JSON array, and the newest entries for a summary.

use deadpool_postgres::{Client, GenericClient};
use tokio::sync::mpsc;

use super::enrichment::mark_partial;
use super::{pg_error, PgStore};
use crate::store::logs::{ChunkedArray, Newest, LOG_CHUNKS_AHEAD};
use crate::store::{LogChunks, LogPage, NewestLogs, StoreError, SummaryBounds};

/// Log rows fetched from the server at a time while streaming a log.
const LOG_ROWS_PER_FETCH: i32 = 64;

impl PgStore {
    /// The event's logs as a JSON array (see [`crate::store::Store::stream_logs_json`]).
    pub fn stream_logs_json(&self, seq: i64) -> LogChunks {
        use tracing::Instrument;
        let (tx, rx) = mpsc::channel(LOG_CHUNKS_AHEAD);
        let store = self.clone();
        tokio::spawn(
            async move {
                if let Err(e) = store.write_logs_json(seq, &tx).await {
                    let _ = tx.send(Err(e)).await;
                }
            }
            .instrument(tracing::Span::current()),
        );
        rx
    }

    /// Sends the chunks of [`PgStore::stream_logs_json`]: one read-only
    /// snapshot, rows fetched [`LOG_ROWS_PER_FETCH`] at a time through a
    /// portal (never the whole log in memory), in index order.
    async fn write_logs_json(
        &self,
        seq: i64,
        out: &mpsc::Sender<Result<Vec<u8>, StoreError>>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_error)?;
        let mut array = ChunkedArray::new();
        let by_time = every_entry_has_a_timestamp(&tx, seq).await?;
        let pages = if by_time {
            vec![None]
        } else {
            (0..stored_pages(&tx, seq).await?).rev().map(Some).collect()
        };
        for page in pages {
            let portal = match page {
                None => {
                    tx.bind(
                        "SELECT entry FROM log_entries WHERE event_seq = $1 ORDER BY ts, page DESC, pos",
                        &[&seq],
                    )
                    .await
                }
                Some(page) => {
                    tx.bind(
                        "SELECT entry FROM log_entries WHERE event_seq = $1 AND page = $2 ORDER BY pos",
                        &[&seq, &page],
                    )
                    .await
                }
            }
            .map_err(pg_error)?;
            loop {
                let rows = tx
                    .query_portal(&portal, LOG_ROWS_PER_FETCH)
                    .await
                    .map_err(pg_error)?;
                if rows.is_empty() {
                    break;
                }
                for row in rows {
                    let entry: &str = row.get(0);
                    if let Some(chunk) = array.push(entry.as_bytes()) {
                        if out.send(Ok(chunk)).await.is_err() {
                            // Nobody reads any more.
                            return Ok(());
                        }
                    }
                }
            }
        }
        let _ = out.send(Ok(array.finish())).await;
        tx.commit().await.map_err(pg_error)
    }

    /// The newest log entries within `bounds`.
    pub async fn newest_logs(
        &self,
        seq: i64,
        bounds: SummaryBounds,
    ) -> Result<NewestLogs, StoreError> {
        let mut client = self.client().await?;
        newest_logs(&mut client, seq, &bounds).await
    }

    /// Stores one page of logs.
    pub async fn save_log_page(&self, seq: i64, page: LogPage) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        save_log_page(&mut client, seq, &page).await
    }
}

/// Stores one page of logs, replacing it if a retried fetch stored it before.
pub(super) async fn save_log_page(
    client: &mut Client,
    seq: i64,
    p: &LogPage,
) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    let page = p.page as i32;
    let replaced: i64 = tx
        .query_one(
            "WITH gone AS (DELETE FROM log_entries WHERE event_seq = $1 AND page = $2 RETURNING entry)
             SELECT coalesce(sum(octet_length(entry)), 0)::int8 FROM gone",
            &[&seq, &page],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    let mut positions = Vec::with_capacity(p.entries.len());
    let mut texts = Vec::with_capacity(p.entries.len());
    let mut stamps = Vec::with_capacity(p.entries.len());
    for (pos, e) in p.entries.iter().enumerate() {
        let text = p
            .text
            .get(e.span.clone())
            .ok_or_else(|| StoreError::Database(format!("log entry {pos} is outside its page")))?;
        positions.push(pos as i32);
        texts.push(text);
        stamps.push(e.ts_us);
    }
    // With `skip_stored`, an entry equal to one of another page is left out
    // (only a looping API gets here).
    let added: i64 = tx
        .query_one(
            "WITH added AS (
                INSERT INTO log_entries (event_seq, page, pos, entry, ts)
                SELECT $1, $2, t.pos, t.entry, t.ts
                FROM unnest($3::int4[], $4::text[], $5::int8[]) AS t(pos, entry, ts)
                WHERE NOT $6 OR NOT EXISTS (SELECT 1 FROM log_entries o
                                            WHERE o.event_seq = $1 AND o.page <> $2 AND o.entry = t.entry)
                RETURNING entry)
             SELECT coalesce(sum(octet_length(entry)), 0)::int8 FROM added",
            &[&seq, &page, &positions, &texts, &stamps, &p.skip_stored],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    if let Some(c) = &p.followed_cursor {
        tx.execute(
            "INSERT INTO log_cursors (event_seq, cursor) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&seq, c],
        )
        .await
        .map_err(pg_error)?;
    }
    let next = if p.complete {
        None
    } else {
        p.next_cursor.as_deref()
    };
    tx.execute(
        "UPDATE events SET logs_cursor = $2, logs_pages = $3, logs_complete = $4,
                logs_bytes = logs_bytes - $5 + $6
         WHERE seq = $1",
        &[&seq, &next, &(page + 1), &p.complete, &replaced, &added],
    )
    .await
    .map_err(pg_error)?;
    if let Some(why) = &p.stopped {
        mark_partial(&tx, seq, why).await?;
    }
    tx.commit().await.map_err(pg_error)
}

/// Whether every stored entry of the event has a timestamp (SPEC §5).
async fn every_entry_has_a_timestamp(
    client: &impl GenericClient,
    seq: i64,
) -> Result<bool, StoreError> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM log_entries WHERE event_seq = $1 AND ts IS NULL LIMIT 1",
            &[&seq],
        )
        .await
        .map_err(pg_error)?
        .is_none())
}

/// How many pages' rows the event has (numbered from 0, newest first).
async fn stored_pages(client: &impl GenericClient, seq: i64) -> Result<i32, StoreError> {
    let max: Option<i32> = client
        .query_one(
            "SELECT max(page) FROM log_entries WHERE event_seq = $1",
            &[&seq],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    Ok(max.map_or(0, |m| m + 1))
}

/// The newest entries of event `seq`, oldest first, within `bounds`, and
/// how many it has in all (one snapshot).
pub(super) async fn newest_logs(
    client: &mut Client,
    seq: i64,
    bounds: &SummaryBounds,
) -> Result<NewestLogs, StoreError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg_error)?;
    let total: i64 = tx
        .query_one(
            "SELECT count(*) FROM log_entries WHERE event_seq = $1",
            &[&seq],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    let mut newest = Newest::new(bounds);
    let entry_bytes = bounds.entry_bytes as i32;
    if newest.wanted() > 0 && total > 0 {
        if every_entry_has_a_timestamp(&tx, seq).await? {
            let rows = tx
                .query(
                    "SELECT CASE WHEN octet_length(entry) <= $3 THEN entry END, octet_length(entry)::int8
                     FROM log_entries WHERE event_seq = $1
                     ORDER BY ts DESC, page, pos DESC LIMIT $2",
                    &[&seq, &(newest.wanted() as i64), &entry_bytes],
                )
                .await
                .map_err(pg_error)?;
            for row in rows {
                if !newest.add(row.get(0), row.get(1)) {
                    break;
                }
            }
        } else {
            'pages: for page in 0..stored_pages(&tx, seq).await? {
                let rows = tx
                    .query(
                        "SELECT CASE WHEN octet_length(entry) <= $4 THEN entry END, octet_length(entry)::int8
                         FROM log_entries WHERE event_seq = $1 AND page = $2
                         ORDER BY pos DESC LIMIT $3",
                        &[&seq, &page, &(newest.wanted() as i64), &entry_bytes],
                    )
                    .await
                    .map_err(pg_error)?;
                for row in rows {
                    if !newest.add(row.get(0), row.get(1)) {
                        break 'pages;
                    }
                }
            }
        }
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(NewestLogs {
        entries: newest.oldest_first(),
        total: total as u64,
    })
}
