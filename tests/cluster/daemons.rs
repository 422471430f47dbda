//! Two daemons sharing the work of one database.

use std::time::{Duration, Instant};

use crate::support::prelude::*;
use crate::{daemon, etl_hook};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_sent_to_two_daemons_at_once_gets_exactly_one_202() {
    let Some(sandbox) = Sandbox::postgres() else {
        return;
    };
    let db = sandbox.db();
    let a = daemon(&sandbox, "a").queue("paused = true").spawn().await;
    let b = daemon(&sandbox, "b").queue("paused = true").spawn().await;
    for n in 0..20 {
        let run = format!("run_{n}");
        let (ra, rb) = tokio::join!(a.try_post_run(&run), b.try_post_run(&run));
        let ((sa, ja), (sb, jb)) = ((ra.status, ra.json()), (rb.status, rb.json()));
        let mut statuses = [sa, sb];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 202], "run {run}: {ja} / {jb}");
        let dup = if sa == 200 { &ja } else { &jb };
        assert_eq!(dup["status"], "duplicate");
        assert_eq!(dup["id"], format!("evt_{run}"));
    }
    assert_eq!(db.count("SELECT count(*) FROM events"), 20);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_daemon_starts_work_queued_by_the_other_within_a_second() {
    let Some(sandbox) = Sandbox::postgres() else {
        return;
    };
    let db = sandbox.db();
    let hook = etl_hook(&sandbox, r#"echo "$STEERHOOK_EVENT_ID" >> "$OUT/ids""#, "");
    // `a` only takes webhooks; `b`'s worker idles and polls only every few
    // seconds: only the notification can make it start within a second.
    let a = daemon(&sandbox, "a")
        .queue("paused = true")
        .hook(&hook)
        .spawn()
        .await;
    let b = daemon(&sandbox, "b").hook(&hook).spawn().await;
    // `b` listens for notifications on a connection of its own.
    wait_for_async(DEADLINE, "b to LISTEN", || async {
        let listening = db.count(
            "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        );
        (listening > 0).then_some(())
    })
    .await;
    for n in 0..3 {
        let started = Instant::now();
        let status = a.try_post_run(&format!("run_idle_{n}")).await.status;
        assert_eq!(status, 202);
        let expected = n + 1;
        wait_for(Duration::from_secs(10), "b to deliver", || {
            (sandbox.out_lines("ids").len() >= expected).then_some(())
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
    let Some(sandbox) = Sandbox::postgres() else {
        return;
    };
    let db = sandbox.db();
    // The first attempt hangs (the daemon running it is killed meanwhile);
    // any later one finishes at once.
    let hook = etl_hook(
        &sandbox,
        r#"echo "$STEERHOOK_ATTEMPT" >> "$OUT/attempts"; [ "$STEERHOOK_ATTEMPT" = 1 ] && sleep 60; echo done >> "$OUT/done""#,
        "",
    );
    let queue = "lease_secs = 3";
    let a = daemon(&sandbox, "a").queue(queue).hook(&hook).spawn().await;
    let status = a.try_post_run("run_killed").await.status;
    assert_eq!(status, 202);
    wait_for(DEADLINE, "a to start the hook", || {
        (sandbox.out_lines("attempts") == ["1"]).then_some(())
    })
    .await;
    let killed_at = Instant::now();
    a.kill().await;
    let b = daemon(&sandbox, "b").queue(queue).hook(&hook).spawn().await;
    wait_for(DEADLINE, "b to finish the delivery", || {
        (sandbox.out_lines("done") == ["done"]).then_some(())
    })
    .await;
    assert!(
        killed_at.elapsed() >= Duration::from_secs(2),
        "b took the job before a's lease could have run out"
    );
    assert_eq!(sandbox.out_lines("attempts"), ["1", "2"]);
    let interrupted = db.count("SELECT count(*) FROM attempts WHERE outcome = 'interrupted'");
    assert_eq!(interrupted, 1, "the killed attempt is on record");
    wait_for_async(DEADLINE, "the event to be done", || async {
        (db.count("SELECT count(*) FROM events WHERE status = 'done'") == 1).then_some(())
    })
    .await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_1_never_overlaps_and_keeps_arrival_order_across_two_daemons() {
    let Some(sandbox) = Sandbox::postgres() else {
        return;
    };
    // mkdir is atomic: a second delivery running at the same time fails it.
    let hook = etl_hook(
        &sandbox,
        r#"mkdir "$OUT/running" || echo "$STEERHOOK_EVENT_ID" >> "$OUT/overlaps"; echo "$STEERHOOK_EVENT_ID" >> "$OUT/order"; sleep 0.05; rmdir "$OUT/running""#,
        "concurrency = 1",
    );
    let a = daemon(&sandbox, "a").hook(&hook).spawn().await;
    let b = daemon(&sandbox, "b").hook(&hook).spawn().await;
    let mut sent = Vec::new();
    for n in 0..16 {
        let run = format!("run_{n:02}");
        let daemon = if n % 2 == 0 { &a } else { &b };
        let status = daemon.try_post_run(&run).await.status;
        assert_eq!(status, 202);
        sent.push(format!("evt_{run}"));
    }
    wait_for(DEADLINE, "every delivery", || {
        (sandbox.out_lines("order").len() == sent.len()).then_some(())
    })
    .await;
    assert!(
        sandbox.out_lines("overlaps").is_empty(),
        "overlapping deliveries: {:?}",
        sandbox.out_lines("overlaps")
    );
    assert_eq!(sandbox.out_lines("order"), sent, "arrival order");
    a.stop().await;
    b.stop().await;
}
