//! Wake-ups across daemons on PostgreSQL: a `NOTIFY` when work is queued,
//! and a `LISTEN` connection of its own in every daemon.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::GenericClient;
use tokio::sync::{mpsc, Notify};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use super::{error_text, pg_error, PgStore};
use crate::store::StoreError;

/// The channel work is announced on.
const WORK_CHANNEL: &str = "steerhook_work";

impl PgStore {
    /// Wakes `wake` whenever any daemon announces work, until `stop`; on its
    /// own connection, reconnecting after a failure.
    pub fn watch_for_work(&self, wake: Arc<Notify>, stop: CancellationToken) {
        let config = self.inner.config.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    ended = listen(&config, &wake) => {
                        if let Err(e) = ended {
                            tracing::warn!(error = %e, "lost the database notification connection; reconnecting in a second (polling meanwhile)");
                        }
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                // Something may have been queued while nobody listened.
                wake.notify_one();
            }
        });
    }
}

/// LISTENs until the connection fails.
async fn listen(config: &tokio_postgres::Config, wake: &Notify) -> Result<(), String> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(|e| error_text(&e))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match futures_util::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => {
                    let _ = tx.send(());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return error_text(&e),
                None => return "the server closed the connection".to_owned(),
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {WORK_CHANNEL}"))
        .await
        .map_err(|e| error_text(&e))?;
    while rx.recv().await.is_some() {
        wake.notify_one();
    }
    Err(driver
        .await
        .unwrap_or_else(|e| format!("the notification task failed: {e}")))
}

/// Tells every listening daemon that there is work (delivered at commit).
pub(super) async fn notify_work(tx: &impl GenericClient) -> Result<(), StoreError> {
    tx.execute(&format!("NOTIFY {WORK_CHANNEL}"), &[])
        .await
        .map_err(pg_error)?;
    Ok(())
}
