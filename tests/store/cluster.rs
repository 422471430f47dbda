//! Several daemons on one PostgreSQL database (SPEC §7), at the store:
//! each `Store` opened on the same database stands for one daemon.

use std::sync::Arc;
use std::time::Duration;

use steerhook::store::{InsertOutcome, JobKind, JobNext, Store, StoreError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::support::db::TestDb;
use crate::support::store::{claim_at, event, ok, register, routing, LEASE_MS, T0};

/// Two daemons (two stores) on `db` with the same hooks, registered.
async fn two_daemons(db: &TestDb, hooks: &[&str]) -> (Store, Store) {
    let a = db.open(routing(false, hooks)).await;
    let b = db.open(routing(false, hooks)).await;
    register(&a, hooks).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_sent_to_two_daemons_at_once_is_accepted_by_exactly_one() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let a = db.open(routing(true, &["etl"])).await;
    let b = db.open(routing(true, &["etl"])).await;
    for round in 0..50 {
        let (x, y) = tokio::join!(a.insert_event(event(round)), b.insert_event(event(round)));
        let accepted = [x.unwrap(), y.unwrap()]
            .into_iter()
            .filter(|o| matches!(o, InsertOutcome::Accepted { .. }))
            .count();
        assert_eq!(accepted, 1, "round {round}");
    }
    assert_eq!(db.count("SELECT count(*) FROM events"), 50);
    assert_eq!(db.count("SELECT count(*) FROM jobs"), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hooks_concurrency_is_a_limit_across_daemons() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let (a, b) = two_daemons(&db, &["etl"]).await;
    for n in 0..3 {
        a.insert_event(event(n)).await.unwrap();
    }
    let first = a
        .claim_due_job(claim_at(T0, &["etl"]))
        .await
        .unwrap()
        .unwrap();
    assert!(
        b.claim_due_job(claim_at(T0, &["etl"]))
            .await
            .unwrap()
            .is_none(),
        "concurrency = 1: the other daemon must not start a second delivery"
    );
    a.record_attempt(first.clone(), ok(T0), JobNext::Succeeded, T0)
        .await
        .unwrap();
    let second = b
        .claim_due_job(claim_at(T0, &["etl"]))
        .await
        .unwrap()
        .unwrap();
    assert!(second.id > first.id, "arrival order across daemons");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_daemons_delivery_goes_to_another_once_its_lease_runs_out() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let (a, b) = two_daemons(&db, &["etl"]).await;
    a.insert_event(event(1)).await.unwrap();
    let lost = a
        .claim_due_job(claim_at(T0, &["etl"]))
        .await
        .unwrap()
        .unwrap();
    drop(a); // kill -9: no more renewals
    let lease = LEASE_MS;
    assert!(b
        .claim_due_job(claim_at(T0 + lease - 1, &["etl"]))
        .await
        .unwrap()
        .is_none());
    let taken = b
        .claim_due_job(claim_at(T0 + lease, &["etl"]))
        .await
        .unwrap()
        .expect("the lease ran out");
    assert_eq!((taken.id, taken.attempt), (lost.id, 2));
    let interrupted = db
        .count("SELECT count(*) FROM attempts WHERE outcome = 'interrupted' AND error_code = 'INTERRUPTED'");
    assert_eq!(interrupted, 1, "the cut attempt is on record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_whose_lease_was_taken_does_not_overwrite_the_new_owner() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let (a, b) = two_daemons(&db, &["etl"]).await;
    a.insert_event(event(1)).await.unwrap();
    let old = a
        .claim_due_job(claim_at(T0, &["etl"]))
        .await
        .unwrap()
        .unwrap();
    let lease = LEASE_MS;
    let new = b
        .claim_due_job(claim_at(T0 + lease, &["etl"]))
        .await
        .unwrap()
        .unwrap();
    // The slow daemon finally reports: its attempt is kept, the job stays b's.
    a.record_attempt(old, ok(T0), JobNext::Succeeded, T0 + lease)
        .await
        .unwrap();
    assert_eq!(
        db.count("SELECT count(*) FROM jobs WHERE state = 'running'"),
        1
    );
    b.record_attempt(new, ok(T0 + lease), JobNext::Succeeded, T0 + lease)
        .await
        .unwrap();
    assert_eq!(
        db.count("SELECT count(*) FROM jobs WHERE state = 'succeeded'"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_pause_seen_by_one_daemon_holds_every_daemons_fetches() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let a = db.open(routing(true, &[])).await;
    let b = db.open(routing(true, &[])).await;
    a.insert_event(event(1)).await.unwrap();
    a.pause_fetches_until(T0 + 30_000).await.unwrap();
    assert!(b
        .claim_due_job(claim_at(T0 + 29_999, &[]))
        .await
        .unwrap()
        .is_none());
    let fetch = b
        .claim_due_job(claim_at(T0 + 30_000, &[]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fetch.kind, JobKind::Fetch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_daemon_hears_of_work_queued_by_another_at_once() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let a = db.open(routing(false, &["etl"])).await;
    let b = db.open(routing(false, &["etl"])).await;
    let wake = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    b.watch_for_work(wake.clone(), stop.clone());
    // The listener may not be listening yet: keep queueing until one is heard.
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        let mut n = 0;
        loop {
            a.insert_event(event(n)).await.unwrap();
            n += 1;
            if tokio::time::timeout(Duration::from_millis(500), wake.notified())
                .await
                .is_ok()
            {
                return n;
            }
        }
    })
    .await;
    stop.cancel();
    assert!(heard.is_ok(), "no notification within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_the_binary_stops_the_daemon_with_a_message() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    drop(db.open(routing(false, &[])).await);
    db.execute_batch("UPDATE steerhook_schema SET version = 999");
    let err = steerhook::store::Store::open(&db.settings(), routing(false, &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 999, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade steerhook"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_that_start_together_migrate_the_schema_once() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let opens = (0..4).map(|_| db.open(routing(false, &[])));
    let stores = futures_util::future::join_all(opens).await;
    assert_eq!(stores.len(), 4);
    assert_eq!(db.count("SELECT count(*) FROM steerhook_schema"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_taking_the_same_events_in_opposite_orders_never_deadlock() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let a = db.open(routing(true, &["etl"])).await;
    let b = db.open(routing(true, &["etl"])).await;
    // Many inserts at once on each daemon make big batches; the same keys
    // in opposite orders would make each batch wait for the other's locks.
    let spawn_all = |store: steerhook::store::Store, order: Vec<usize>| {
        order
            .into_iter()
            .map(move |n| {
                let store = store.clone();
                tokio::spawn(async move { store.insert_event(event(n)).await })
            })
            .collect::<Vec<_>>()
    };
    let forward = spawn_all(a, (0..200).collect());
    let backward = spawn_all(b, (0..200).rev().collect());
    let mut accepted = 0;
    for task in forward.into_iter().chain(backward) {
        match task.await.unwrap() {
            Ok(InsertOutcome::Accepted { .. }) => accepted += 1,
            Ok(InsertOutcome::Duplicate { .. }) => {}
            Err(e) => panic!("an insert failed (a 503 for the whole batch): {e}"),
        }
    }
    assert_eq!(accepted, 200);
}

/// `hooks pause` on one daemon's database pauses the hook for every daemon;
/// `hooks resume` wakes the idle ones (NOTIFY) instead of waiting for a poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_paused_through_one_daemon_is_paused_for_all_and_resume_wakes_them() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let (a, b) = two_daemons(&db, &["etl"]).await;
    a.insert_event(event(1)).await.unwrap();
    // What the CLI does: its own store on the database.
    let cli = db.open(routing(false, &[])).await;
    assert!(cli.set_hook_paused("etl".into(), true).await.unwrap());
    for daemon in [&a, &b] {
        assert!(
            daemon
                .claim_due_job(claim_at(T0, &["etl"]))
                .await
                .unwrap()
                .is_none(),
            "a paused hook's delivery was started"
        );
    }
    let wake = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    b.watch_for_work(wake.clone(), stop.clone());
    // The listener may not be listening yet: resume until one is heard.
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            cli.set_hook_paused("etl".into(), false).await.unwrap();
            if tokio::time::timeout(Duration::from_millis(500), wake.notified())
                .await
                .is_ok()
            {
                return;
            }
        }
    })
    .await;
    stop.cancel();
    assert!(heard.is_ok(), "resume woke no idle daemon within 10 s");
    let job = b
        .claim_due_job(claim_at(T0, &["etl"]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.hook, "etl");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_runs_on_one_daemon_at_a_time() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let a = db.open(routing(false, &[])).await;
    a.insert_event(event(1)).await.unwrap(); // nothing to do: done at once
                                             // Another daemon is pruning: it holds the lock in a session of its own.
    let (other, conn) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    other
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&steerhook::store::POSTGRES_PRUNE_LOCK],
        )
        .await
        .unwrap();
    let skipped = a.prune(T0, false).await.unwrap();
    assert_eq!(
        skipped.events, 0,
        "the timer skips while another daemon prunes"
    );
    other
        .execute(
            "SELECT pg_advisory_unlock($1)",
            &[&steerhook::store::POSTGRES_PRUNE_LOCK],
        )
        .await
        .unwrap();
    assert_eq!(a.prune(T0, false).await.unwrap().events, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_is_told_at_start_how_its_hooks_differ_from_the_others() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = db.open(routing(false, &[])).await;
    let hook = |name: &str, hash: &str| steerhook::store::HookConfig {
        name: name.into(),
        config_hash: hash.into(),
    };
    let first = store
        .register_hooks(vec![hook("etl", "v1")], "host-a/10.0.0.11:8787".into(), T0)
        .await
        .unwrap();
    assert!(
        first.is_empty(),
        "the first daemon has nobody to differ from: {first:?}"
    );
    let second = store
        .register_hooks(
            vec![hook("etl", "v2"), hook("mail", "v1")],
            "host-b/10.0.0.12:8787".into(),
            T0 + 1,
        )
        .await
        .unwrap();
    assert_eq!(second.len(), 2, "{second:?}");
    assert!(
        second
            .iter()
            .any(|d| d.contains("\"etl\" is configured differently on daemon host-a")),
        "{second:?}"
    );
    assert!(
        second
            .iter()
            .any(|d| d.contains("\"mail\" is configured on this daemon but not on daemon host-a")),
        "{second:?}"
    );
    // The same daemon restarting with the same hooks replaces its own record.
    let again = store
        .register_hooks(
            vec![hook("etl", "v1")],
            "host-a/10.0.0.11:8787".into(),
            T0 + 2,
        )
        .await
        .unwrap();
    assert_eq!(again.len(), 2, "host-b still differs: {again:?}");
    assert_eq!(
        db.count("SELECT count(*) FROM hook_configs WHERE daemon LIKE 'host-a%'"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_schema_version_1_gets_unique_ids_and_keeps_what_hooks_were_told() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    drop(db.open(routing(false, &[])).await);
    // Back to version 1, as a daemon before the second migration left it
    // (and without the third's columns):
    // a non-unique id index, and rows sharing an id.
    db.execute_batch(
        "DROP INDEX events_by_id;
         CREATE INDEX events_by_id ON events (id);
         DROP INDEX log_entries_by_ts;
         ALTER TABLE log_entries DROP COLUMN ts;
         ALTER TABLE events DROP COLUMN sender_id, DROP COLUMN enrichment_status,
             DROP COLUMN enrichment_code, DROP COLUMN logs_bytes, DROP COLUMN settle_polls;
         ALTER TABLE jobs DROP COLUMN replays;
         ALTER TABLE attempts DROP COLUMN replay;
         UPDATE steerhook_schema SET version = 1;
         INSERT INTO events (seq, id, event_type, run_id, signed_at, received_at, body, run_json, logs_complete, enrichment_error)
         VALUES (1, 'evt_a', 'run.succeeded', 'r1', 0, 0, convert_to('{\"id\":\"evt_a\"}', 'UTF8'), '{}', true, NULL),
                (2, 'evt_a', 'run.succeeded', 'r2', 0, 0, convert_to('{\"id\":\"evt_a\"}', 'UTF8'), NULL, false, 'gone'),
                (3, 'evt_gen', 'run.succeeded', 'r3', 0, 0, convert_to('{\"n\":1e99999}', 'UTF8'), NULL, false, NULL);
         INSERT INTO jobs (event_seq, kind, state, due_at, created_at, updated_at, last_error_code)
         VALUES (1, 'fetch', 'succeeded', 0, 0, 0, NULL), (2, 'fetch', 'failed', 0, 0, 0, 'HTTP_404');
         INSERT INTO log_entries (event_seq, page, pos, entry) VALUES (1, 0, 0, '{\"a\":1}');",
    );
    drop(db.open(routing(false, &[])).await);
    let rows = db.query::<(String, Option<String>, Option<String>, Option<String>, i64)>(
        "SELECT id, sender_id, enrichment_status, enrichment_code, logs_bytes FROM events ORDER BY seq",
        &[],
    );
    assert_eq!(
        rows,
        [
            (
                "evt_a".into(),
                Some("evt_a".into()),
                Some("complete".into()),
                None,
                7
            ),
            (
                "evt_a~2".into(),
                Some("evt_a".into()),
                Some("none".into()),
                Some("HTTP_404".into()),
                0
            ),
            ("evt_gen".into(), None, None, None, 0),
        ]
    );
    assert_eq!(
        db.count("SELECT version FROM steerhook_schema"),
        3,
        "migrated to the latest"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deliveries_of_one_event_finishing_on_two_daemons_at_once_leave_it_done() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let hooks = ["etl", "mail"];
    let (a, b) = two_daemons(&db, &hooks).await;
    for round in 0..30 {
        a.insert_event(event(round)).await.unwrap();
        let x = a
            .claim_due_job(claim_at(T0, &["etl"]))
            .await
            .unwrap()
            .unwrap();
        let y = b
            .claim_due_job(claim_at(T0, &["mail"]))
            .await
            .unwrap()
            .unwrap();
        let (rx, ry) = tokio::join!(
            a.record_attempt(x, ok(T0), JobNext::Succeeded, T0),
            b.record_attempt(y, ok(T0), JobNext::Succeeded, T0)
        );
        rx.unwrap();
        ry.unwrap();
        let status = db.query_one::<String>(
            "SELECT status FROM events WHERE run_id = $1",
            &[&format!("run_{round}")],
        );
        assert_eq!(
            status, "done",
            "round {round}: a status computed from a stale view"
        );
    }
}
