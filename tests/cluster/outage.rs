//! The database away and back (SPEC §7): 503 with Retry-After, /healthz
//! 503, and the daemon reconnects by itself; nothing answered 2xx is lost.

use crate::support::db::TestDb;
use crate::support::poll::wait_for_async;
use crate::support::proxy::TcpProxy;
use crate::{config, sandbox, Daemon, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_away_webhooks_get_503_and_the_daemon_reconnects_by_itself() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let mut url = reqwest::Url::parse(db.url()).unwrap();
    let server = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let proxy = TcpProxy::start(server.parse().unwrap()).await;
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(proxy.addr().port())).unwrap();
    let (dir, _) = sandbox();
    let daemon = Daemon::start(&config(url.as_str(), dir.path(), "[queue]\npaused = true")).await;
    let (status, _, _) = daemon.post("run_before").await;
    assert_eq!(status, 202);

    proxy.cut().await;
    let (status, retry_after, body) = daemon.post("run_during").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "STORAGE_UNAVAILABLE");
    assert!(retry_after.is_some(), "503 carries Retry-After");
    assert_eq!(daemon.health().await, 503);

    proxy.restore().await;
    // No restart: the next requests find a new connection.
    wait_for_async(DEADLINE, "a 202 once the database is back", || async {
        (daemon.post("run_during").await.0 == 202).then_some(())
    })
    .await;
    assert_eq!(daemon.health().await, 200);
    let stored = db
        .query_i64("SELECT count(*) FROM events WHERE run_id IN ('run_before', 'run_during')")
        .await;
    assert_eq!(
        stored, 2,
        "the event acknowledged before the outage is kept"
    );
    daemon.stop().await;
}
