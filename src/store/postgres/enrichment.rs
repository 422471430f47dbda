//! What a fetch keeps on PostgreSQL: the event row it works from, the run,
//! its progress (settle polls, cursors followed, logs finished) and the
//! enrichment the hooks are told.

use deadpool_postgres::{Client, GenericClient};

use super::{pg_error, PgStore};
use crate::domain::{Enrichment, EnrichmentError, EnrichmentStatus};
use crate::store::{StoreError, StoredEvent};

impl PgStore {
    /// Loads one event row.
    pub async fn load_event(&self, seq: i64) -> Result<StoredEvent, StoreError> {
        let client = self.client().await?;
        load_event(&client, seq).await
    }

    /// Stores the run object, and why it is taken although it has not settled.
    pub async fn save_run(
        &self,
        seq: i64,
        run_json: String,
        unsettled: Option<EnrichmentError>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute(
            "UPDATE events SET run_json = $2 WHERE seq = $1",
            &[&seq, &run_json],
        )
        .await
        .map_err(pg_error)?;
        if let Some(why) = &unsettled {
            mark_partial(&tx, seq, why).await?;
        }
        tx.commit().await.map_err(pg_error)
    }

    /// Counts a fetch of a run that had not settled.
    pub async fn count_settle_poll(&self, seq: i64) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE events SET settle_polls = settle_polls + 1 WHERE seq = $1",
                &[&seq],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    /// Whether paging already followed `cursor`.
    pub async fn cursor_seen(&self, seq: i64, cursor: String) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT 1 FROM log_cursors WHERE event_seq = $1 AND cursor = $2",
                &[&seq, &cursor],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.is_some())
    }

    /// Marks paging finished, and why it stopped early.
    pub async fn finish_logs(
        &self,
        seq: i64,
        stopped: Option<EnrichmentError>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute(
            "UPDATE events SET logs_complete = true, logs_cursor = NULL WHERE seq = $1",
            &[&seq],
        )
        .await
        .map_err(pg_error)?;
        if let Some(why) = &stopped {
            mark_partial(&tx, seq, why).await?;
        }
        tx.commit().await.map_err(pg_error)
    }
}

/// Loads one event row.
pub(super) async fn load_event(client: &Client, seq: i64) -> Result<StoredEvent, StoreError> {
    let row = client
        .query_opt(
            "SELECT seq, id, sender_id, event_type, run_id, received_at, body, run_json, logs_cursor,
                    logs_pages, logs_complete, logs_bytes, settle_polls,
                    enrichment_status, enrichment_code, enrichment_error
             FROM events WHERE seq = $1",
            &[&seq],
        )
        .await
        .map_err(pg_error)?
        .ok_or_else(|| StoreError::NotFound(format!("event #{seq}")))?;
    Ok(StoredEvent {
        seq: row.get(0),
        id: row.get(1),
        sender_id: row.get(2),
        event_type: row.get(3),
        run_id: row.get(4),
        received_at: row.get(5),
        body: row.get(6),
        run_json: row.get(7),
        logs_cursor: row.get(8),
        logs_pages: row.get::<_, i32>(9) as u32,
        logs_complete: row.get(10),
        logs_bytes: row.get::<_, i64>(11) as u64,
        settle_polls: row.get::<_, i32>(12) as u32,
        enrichment: enrichment_from(row.get(13), row.get(14), row.get(15))?,
    })
}

/// The enrichment of an event row's three columns.
pub(super) fn enrichment_from(
    status: Option<String>,
    code: Option<String>,
    message: Option<String>,
) -> Result<Option<Enrichment>, StoreError> {
    let Some(status) = status else {
        return Ok(None);
    };
    Ok(Some(Enrichment {
        status: status
            .parse::<EnrichmentStatus>()
            .map_err(StoreError::Database)?,
        error: code.map(|code| EnrichmentError {
            code,
            message: message.unwrap_or_default(),
        }),
    }))
}

/// Records what the hooks are told about enrichment.
pub(super) async fn save_enrichment(
    tx: &impl GenericClient,
    seq: i64,
    e: &Enrichment,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE events SET enrichment_status = $2, enrichment_code = $3, enrichment_error = $4
         WHERE seq = $1",
        &[
            &seq,
            &e.status.as_str(),
            &e.error.as_ref().map(|x| &x.code),
            &e.error.as_ref().map(|x| &x.message),
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Makes the event's enrichment partial for `why`, unless it already is for
/// an earlier reason (the first reason is the one hooks are told).
pub(super) async fn mark_partial(
    tx: &impl GenericClient,
    seq: i64,
    why: &EnrichmentError,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE events SET enrichment_status = 'partial',
            enrichment_error = CASE WHEN enrichment_code IS NULL THEN $3 ELSE enrichment_error END,
            enrichment_code = coalesce(enrichment_code, $2)
         WHERE seq = $1",
        &[&seq, &why.code, &why.message],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}
