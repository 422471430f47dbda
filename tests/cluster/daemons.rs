//! Two daemons sharing the work of one database.

use std::time::{Duration, Instant};

use crate::support::db::TestDb;
use crate::support::poll::{wait_for, wait_for_async};
use crate::{config, lines, sandbox, shell_hook, Daemon, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_sent_to_two_daemons_at_once_gets_exactly_one_202() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let (dir, _) = sandbox();
    let a = Daemon::start(&config(
        db.url(),
        &dir.path().join("a"),
        "[queue]\npaused = true",
    ))
    .await;
    let b = Daemon::start(&config(
        db.url(),
        &dir.path().join("b"),
        "[queue]\npaused = true",
    ))
    .await;
    for n in 0..20 {
        let run = format!("run_{n}");
        let ((sa, _, ja), (sb, _, jb)) = tokio::join!(a.post(&run), b.post(&run));
        let mut statuses = [sa, sb];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 202], "run {run}: {ja} / {jb}");
        let dup = if sa == 200 { &ja } else { &jb };
        assert_eq!(dup["status"], "duplicate");
        assert_eq!(dup["id"], format!("evt_{run}"));
    }
    assert_eq!(db.query_i64("SELECT count(*) FROM events").await, 20);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_daemon_starts_work_queued_by_the_other_within_a_second() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let (dir, out) = sandbox();
    let hook = shell_hook(
        "etl",
        r#"echo "$STEERHOOK_EVENT_ID" >> "$OUT/ids""#,
        &out,
        "",
    );
    // `a` only takes webhooks; `b`'s worker idles and polls only every few
    // seconds: only the notification can make it start within a second.
    let a = Daemon::start(&config(
        db.url(),
        &dir.path().join("a"),
        &format!("[queue]\npaused = true\n{hook}"),
    ))
    .await;
    let b = Daemon::start(&config(db.url(), &dir.path().join("b"), &hook)).await;
    // `b` listens for notifications on a connection of its own.
    wait_for_async(DEADLINE, "b to LISTEN", || async {
        let listening = db
            .query_i64(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND query LIKE 'LISTEN%'",
            )
            .await;
        (listening > 0).then_some(())
    })
    .await;
    for n in 0..3 {
        let started = Instant::now();
        let (status, _, _) = a.post(&format!("run_idle_{n}")).await;
        assert_eq!(status, 202);
        let expected = n + 1;
        wait_for(Duration::from_secs(10), "b to deliver", || {
            (lines(&out, "ids").len() >= expected).then_some(())
        })
        .await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "delivery {n} took {took:?}: the idle daemon waited for its poll"
        );
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_cut_by_a_killed_daemon_is_finished_by_the_other_after_its_lease() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let (dir, out) = sandbox();
    // The first attempt hangs (the daemon running it is killed meanwhile);
    // any later one finishes at once.
    let hook = shell_hook(
        "etl",
        r#"echo "$STEERHOOK_ATTEMPT" >> "$OUT/attempts"; [ "$STEERHOOK_ATTEMPT" = 1 ] && sleep 60; echo done >> "$OUT/done""#,
        &out,
        "",
    );
    let queue = "[queue]\nlease_secs = 3\n";
    let a = Daemon::start(&config(
        db.url(),
        &dir.path().join("a"),
        &format!("{queue}{hook}"),
    ))
    .await;
    let (status, _, _) = a.post("run_killed").await;
    assert_eq!(status, 202);
    wait_for(DEADLINE, "a to start the hook", || {
        (lines(&out, "attempts") == ["1"]).then_some(())
    })
    .await;
    let killed_at = Instant::now();
    a.kill();
    let b = Daemon::start(&config(
        db.url(),
        &dir.path().join("b"),
        &format!("{queue}{hook}"),
    ))
    .await;
    wait_for(DEADLINE, "b to finish the delivery", || {
        (lines(&out, "done") == ["done"]).then_some(())
    })
    .await;
    assert!(
        killed_at.elapsed() >= Duration::from_secs(2),
        "b took the job before a's lease could have run out"
    );
    assert_eq!(lines(&out, "attempts"), ["1", "2"]);
    let interrupted = db
        .query_i64("SELECT count(*) FROM attempts WHERE outcome = 'interrupted'")
        .await;
    assert_eq!(interrupted, 1, "the killed attempt is on record");
    wait_for_async(DEADLINE, "the event to be done", || async {
        (db.query_i64("SELECT count(*) FROM events WHERE status = 'done'")
            .await
            == 1)
            .then_some(())
    })
    .await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_1_never_overlaps_and_keeps_arrival_order_across_two_daemons() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let (dir, out) = sandbox();
    // mkdir is atomic: a second delivery running at the same time fails it.
    let hook = shell_hook(
        "etl",
        r#"mkdir "$OUT/running" || echo "$STEERHOOK_EVENT_ID" >> "$OUT/overlaps"; echo "$STEERHOOK_EVENT_ID" >> "$OUT/order"; sleep 0.05; rmdir "$OUT/running""#,
        &out,
        "concurrency = 1",
    );
    let a = Daemon::start(&config(db.url(), &dir.path().join("a"), &hook)).await;
    let b = Daemon::start(&config(db.url(), &dir.path().join("b"), &hook)).await;
    let mut sent = Vec::new();
    for n in 0..16 {
        let run = format!("run_{n:02}");
        let daemon = if n % 2 == 0 { &a } else { &b };
        let (status, _, _) = daemon.post(&run).await;
        assert_eq!(status, 202);
        sent.push(format!("evt_{run}"));
    }
    wait_for(DEADLINE, "every delivery", || {
        (lines(&out, "order").len() == sent.len()).then_some(())
    })
    .await;
    assert!(
        lines(&out, "overlaps").is_empty(),
        "overlapping deliveries: {:?}",
        lines(&out, "overlaps")
    );
    assert_eq!(lines(&out, "order"), sent, "arrival order");
    a.stop().await;
    b.stop().await;
}
