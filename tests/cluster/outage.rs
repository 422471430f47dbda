//! The database away and back (SPEC §7): 503 with Retry-After, /healthz
//! 503, and the daemon reconnects by itself; nothing answered 2xx is lost.

use crate::daemon;
use crate::support::prelude::*;
use crate::support::proxy::TcpProxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_away_webhooks_get_503_and_the_daemon_reconnects_by_itself() {
    let Some(sandbox) = Sandbox::postgres() else {
        return;
    };
    let db = sandbox.db();
    let mut url = reqwest::Url::parse(db.url()).unwrap();
    let server = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let proxy = TcpProxy::start(server.parse().unwrap()).await;
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(proxy.addr().port())).unwrap();
    let daemon = daemon(&sandbox, "a")
        .storage(&format!("url = {}", toml_str(url.as_str())))
        .queue("paused = true")
        .spawn()
        .await;
    let status = daemon.try_post_run("run_before").await.status;
    assert_eq!(status, 202);

    proxy.cut().await;
    let answer = daemon.try_post_run("run_during").await;
    let (status, body, retry_after) = (answer.status, answer.json(), answer.retry_after);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "STORAGE_UNAVAILABLE");
    assert!(retry_after.is_some(), "503 carries Retry-After");
    assert_eq!(daemon.health().await, 503);

    proxy.restore().await;
    // No restart: the next requests find a new connection.
    wait_for_async(DEADLINE, "a 202 once the database is back", || async {
        (daemon.try_post_run("run_during").await.status == 202).then_some(())
    })
    .await;
    assert_eq!(daemon.health().await, 200);
    let stored =
        db.count("SELECT count(*) FROM events WHERE run_id IN ('run_before', 'run_during')");
    assert_eq!(
        stored, 2,
        "the event acknowledged before the outage is kept"
    );
    daemon.stop().await;
}
