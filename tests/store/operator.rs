//! The operator's operations on both backends (SPEC §2): skipped deliveries,
//! event status, hooks paused and resumed, failed deliveries replayed in
//! bulk and marked as replays, prune's counts, quarantine, ids never reused.

use steerhook::store::{
    AttemptOutcome, AttemptRecord, ClaimedJob, FailedDeliveries, HookActivity, JobKind, JobNext,
    QuarantinedBody, Store,
};

use crate::support::db::TestDb;
use crate::support::store::{claim, event, failed, ok, register, routing, T0};

/// Claims the next job and records `next` for it (failed, succeeded...).
async fn run_next(store: &Store, hooks: &[&str], rec: AttemptRecord, next: JobNext) -> ClaimedJob {
    let job = claim(store, T0, hooks).await.expect("a job to claim");
    store
        .record_attempt(job.clone(), rec, next, T0)
        .await
        .unwrap();
    job
}

fn skipped() -> AttemptRecord {
    AttemptRecord {
        outcome: AttemptOutcome::Skipped,
        error_code: Some("NOT_MATCHED".into()),
        error: Some("run did not match /run/scraper = products".into()),
        exit_code: None,
        stdout: None,
        ..ok(T0)
    }
}

async fn status(store: &Store, id: &str) -> String {
    store.find_event(id.into()).await.unwrap().unwrap().status
}

async fn activity(store: &Store, name: &str) -> HookActivity {
    store
        .hook_activity(T0 - 3_600_000)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("no activity for {name}"))
}

crate::backends! {
    /// SPEC §2/§3: a skipped delivery is finished; an event whose deliveries
    /// were skipped or succeeded is done.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_skipped_delivery_finishes_and_the_event_is_done(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(false, &["etl", "mail"])).await;
        register(&store, &["etl", "mail"]).await;
        store.insert_event(event(1)).await.unwrap();
        run_next(&store, &["etl", "mail"], skipped(), JobNext::Skipped).await;
        assert_eq!(status(&store, "evt_1").await, "pending", "one delivery left");
        run_next(&store, &["etl", "mail"], ok(T0), JobNext::Succeeded).await;
        assert_eq!(status(&store, "evt_1").await, "done");
        assert!(claim(&store, T0, &["etl", "mail"]).await.is_none(), "a skipped job is not claimed again");
        let ev = store.find_event("evt_1".into()).await.unwrap().unwrap();
        let skipped_job = ev.jobs.iter().find(|j| j.state == "skipped").expect("a skipped job");
        assert_eq!(skipped_job.attempt_log[0].outcome, "skipped");
        assert_eq!(
            skipped_job.last_error.as_deref(),
            Some("run did not match /run/scraper = products")
        );
        assert_eq!(activity(&store, skipped_job.hook.as_str()).await.skipped, 1);
    }

    /// `hooks list`: an event just stored counts as each of its hooks'
    /// waiting deliveries at once, before the worker has claimed anything
    /// (SQLite makes the jobs at the next claim).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deliveries_of_an_event_just_stored_are_counted_as_pending(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(false, &["etl", "mail"])).await;
        register(&store, &["etl", "mail"]).await;
        store.insert_event(event(1)).await.unwrap();
        store.insert_event(event(2)).await.unwrap();
        for hook in ["etl", "mail"] {
            let a = activity(&store, hook).await;
            assert_eq!((a.pending, a.running), (2, 0), "{hook}: {a:?}");
        }
        // Once one is claimed the counts move, and nothing is counted twice.
        let job = claim(&store, T0, &["etl", "mail"]).await.expect("a job");
        let a = activity(&store, &job.hook).await;
        assert_eq!((a.pending, a.running), (1, 1), "{a:?}");
    }

    /// SPEC §2: a fetch that gave up does not make the event failed; only a
    /// failed delivery does.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fetch_that_gave_up_does_not_fail_the_event(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(true, &["etl"])).await;
        register(&store, &["etl"]).await;
        store.insert_event(event(1)).await.unwrap();
        store.insert_event(event(2)).await.unwrap();
        let fetches = [claim(&store, T0, &["etl"]).await.unwrap(), claim(&store, T0, &["etl"]).await.unwrap()];
        for fetch in fetches {
            assert_eq!(fetch.kind, JobKind::Fetch);
            store
                .record_attempt(fetch, failed(T0, AttemptOutcome::Failed), JobNext::Failed, T0)
                .await
                .unwrap();
        }
        run_next(&store, &["etl"], ok(T0), JobNext::Succeeded).await;
        run_next(&store, &["etl"], failed(T0, AttemptOutcome::Failed), JobNext::Failed).await;
        assert_eq!(status(&store, "evt_1").await, "done", "its hook succeeded");
        assert_eq!(status(&store, "evt_2").await, "failed", "its hook failed");
    }

    /// Two deliveries of one event finishing at the same moment (on two
    /// daemons, or a skipped one beside a fast hook): the event is done, not
    /// left `pending` because each saw the other still running.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deliveries_of_one_event_finishing_at_once_leave_it_done(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(false, &["etl", "mail"])).await;
        register(&store, &["etl", "mail"]).await;
        for n in 0..40 {
            store.insert_event(event(n)).await.unwrap();
            let a = claim(&store, T0, &["etl", "mail"]).await.unwrap();
            let b = claim(&store, T0, &["etl", "mail"]).await.unwrap();
            assert_eq!(a.event_seq, b.event_seq);
            let (x, y) = tokio::join!(
                store.record_attempt(a, ok(T0), JobNext::Succeeded, T0),
                store.record_attempt(b, skipped(), JobNext::Skipped, T0),
            );
            x.unwrap();
            y.unwrap();
            assert_eq!(status(&store, &format!("evt_{n}")).await, "done", "round {n}");
        }
    }

    /// `hooks pause`: no claim starts a paused hook's deliveries, a running
    /// one finishes, other hooks go on; `hooks resume` releases them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_paused_hook_starts_nothing_until_resumed_and_others_go_on(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(false, &["etl", "mail"])).await;
        register(&store, &["etl", "mail"]).await;
        store.insert_event(event(1)).await.unwrap();
        store.insert_event(event(2)).await.unwrap();
        let hooks = ["etl", "mail"];
        let running = claim(&store, T0, &hooks).await.unwrap();
        let paused_hook = running.hook.clone();
        assert!(store.set_hook_paused(paused_hook.clone(), true).await.unwrap(), "changed");
        assert!(!store.set_hook_paused(paused_hook.clone(), true).await.unwrap(), "already paused");
        store.record_attempt(running, ok(T0), JobNext::Succeeded, T0).await.unwrap();
        let mut others = Vec::new();
        while let Some(job) = claim(&store, T0, &hooks).await {
            assert_ne!(job.hook, paused_hook, "a paused hook's delivery was started");
            store.record_attempt(job.clone(), ok(T0), JobNext::Succeeded, T0).await.unwrap();
            others.push(job);
        }
        assert_eq!(others.len(), 2, "the other hook delivered both events");
        let a = activity(&store, &paused_hook).await;
        assert_eq!((a.paused, a.pending, a.running, a.succeeded), (true, 1, 0, 1));
        assert!(store.set_hook_paused(paused_hook.clone(), false).await.unwrap());
        let released = claim(&store, T0, &hooks).await.expect("the waiting delivery after resume");
        assert_eq!(released.hook, paused_hook);
        assert!(!activity(&store, &paused_hook).await.paused);
    }

    /// `replay --status failed`: every failed delivery of the hooks asked
    /// for, in one go; succeeded, running and other hooks' are left alone;
    /// a dry run changes nothing; `--since` limits by receipt.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_deliveries_are_replayed_in_bulk_and_only_they(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(false, &["etl"])).await;
        register(&store, &["etl"]).await;
        for n in 1..=4 {
            store.insert_event(event(n)).await.unwrap();
        }
        for _ in 0..3 {
            run_next(&store, &["etl"], failed(T0, AttemptOutcome::Failed), JobNext::Failed).await;
        }
        run_next(&store, &["etl"], ok(T0), JobNext::Succeeded).await;
        // A failed delivery of a hook no longer configured.
        db.execute_batch("UPDATE jobs SET hook = 'gone' WHERE id = (SELECT min(id) FROM jobs)");
        let all = FailedDeliveries { hooks: vec!["etl".into()], since: None };

        let dry = store.count_failed(all.clone(), false).await.unwrap();
        assert_eq!((dry.deliveries(), dry.events, dry.other_hooks), (2, 2, 1));
        assert_eq!(dry.by_hook, [("etl".to_owned(), 2)]);
        assert_eq!(status(&store, "evt_2").await, "failed", "a dry run changes nothing");

        // evt_3 (received 1 ms after evt_2) and later only.
        let recent = FailedDeliveries { since: Some(T0 - 1_000 + 3), ..all.clone() };
        assert_eq!(store.count_failed(recent, false).await.unwrap().deliveries(), 1);

        let done = store.replay_failed(all.clone(), false, T0 + 5).await.unwrap();
        assert_eq!(done, dry);
        assert_eq!(status(&store, "evt_2").await, "pending");
        assert_eq!(status(&store, "evt_3").await, "pending");
        assert_eq!(status(&store, "evt_1").await, "failed", "the other hook's is left alone");
        assert_eq!(status(&store, "evt_4").await, "done");
        let again = claim(&store, T0, &["etl"]).await.expect("a replayed delivery, due at once");
        assert_eq!(again.attempt, 1, "a fresh attempt count");
        store.record_attempt(again, ok(T0), JobNext::Succeeded, T0).await.unwrap();
        assert!(store.replay_failed(all, false, T0 + 6).await.unwrap().deliveries() == 0,
            "nothing failed is left but the other hook's");
        let ev = store.find_event("evt_2".into()).await.unwrap().unwrap();
        let job = &ev.jobs[0];
        assert_eq!(job.replays, 1);
        let runs: Vec<(u32, u32, &str)> = job
            .attempt_log
            .iter()
            .map(|a| (a.attempt, a.replay, a.outcome.as_str()))
            .collect();
        assert_eq!(runs, [(1, 0, "failed"), (1, 1, "ok")], "the second #1 is marked as a replay");
    }

    /// A running delivery is not failed: a bulk replay leaves it alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bulk_replay_leaves_a_running_delivery_alone(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(false, &["etl"])).await;
        register(&store, &["etl"]).await;
        store.insert_event(event(1)).await.unwrap();
        let job = claim(&store, T0, &["etl"]).await.unwrap();
        let all = FailedDeliveries { hooks: vec!["etl".into()], since: None };
        assert_eq!(store.replay_failed(all, false, T0).await.unwrap().deliveries(), 0);
        store.record_attempt(job, ok(T0), JobNext::Succeeded, T0).await.unwrap();
        assert_eq!(status(&store, "evt_1").await, "done");
    }

    /// Where the fetch failed, a bulk replay fetches the run again first,
    /// as a single replay does: the delivery waits for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bulk_replay_refetches_a_failed_fetch_first(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(true, &["etl"])).await;
        register(&store, &["etl"]).await;
        store.insert_event(event(1)).await.unwrap();
        let fetch = run_next(&store, &["etl"], failed(T0, AttemptOutcome::Failed), JobNext::Failed).await;
        assert_eq!(fetch.kind, JobKind::Fetch);
        run_next(&store, &["etl"], failed(T0, AttemptOutcome::Failed), JobNext::Failed).await;
        let all = FailedDeliveries { hooks: vec!["etl".into()], since: None };
        let report = store.replay_failed(all, true, T0).await.unwrap();
        assert_eq!((report.deliveries(), report.refetch), (1, 1));
        let next = claim(&store, T0, &["etl"]).await.unwrap();
        assert_eq!(next.kind, JobKind::Fetch, "the fetch runs first");
        assert!(claim(&store, T0, &["etl"]).await.is_none(), "the delivery waits for it");
        let ev = store.find_event("evt_1".into()).await.unwrap().unwrap();
        assert_eq!(ev.enrichment_error, None, "the old fetch's failure is forgotten");
    }

    /// A single replay is marked too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replayed_delivery_numbers_its_attempts_as_a_replay(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(false, &["etl"])).await;
        register(&store, &["etl"]).await;
        store.insert_event(event(1)).await.unwrap();
        run_next(&store, &["etl"], ok(T0), JobNext::Succeeded).await;
        let seq = store.find_event("evt_1".into()).await.unwrap().unwrap().seq;
        for _ in 0..2 {
            store.replay(seq, vec!["etl".into()], false, T0).await.unwrap();
            run_next(&store, &["etl"], ok(T0), JobNext::Succeeded).await;
        }
        let ev = store.find_event("evt_1".into()).await.unwrap().unwrap();
        let marks: Vec<u32> = ev.jobs[0].attempt_log.iter().map(|a| a.replay).collect();
        assert_eq!(marks, [0, 1, 2]);
    }

    /// `prune` says how many deleted events had failed deliveries never
    /// replayed; `--dry-run` counts the same and deletes nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prune_counts_events_with_failed_deliveries_and_a_dry_run_deletes_nothing(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(false, &["etl"])).await;
        register(&store, &["etl"]).await;
        for n in 1..=3 {
            store.insert_event(event(n)).await.unwrap();
        }
        run_next(&store, &["etl"], failed(T0, AttemptOutcome::Failed), JobNext::Failed).await;
        run_next(&store, &["etl"], ok(T0), JobNext::Succeeded).await;
        store.quarantine(QuarantinedBody {
            received_at: T0 - 10,
            client_addr: None,
            signed_at: 0,
            reason: "not an object".into(),
            body: b"[]".to_vec(),
        }).await.unwrap();
        let would = store.count_prunable(T0).await.unwrap();
        assert_eq!((would.events, would.failed_events, would.quarantined), (2, 1, 1));
        assert_eq!(db.count("SELECT count(*) FROM events"), 3, "nothing deleted");
        let pruned = store.prune(T0, true).await.unwrap();
        assert_eq!(pruned, would);
        assert_eq!(db.count("SELECT count(*) FROM events"), 1, "the pending one stays");
    }

    /// Job ids and quarantine ids are never given twice, even after `prune`
    /// deleted the newest.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ids_are_not_reused_after_prune(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(false, &["etl"])).await;
        register(&store, &["etl"]).await;
        store.insert_event(event(1)).await.unwrap();
        let first = run_next(&store, &["etl"], ok(T0), JobNext::Succeeded).await;
        let body = || QuarantinedBody {
            received_at: T0 - 10,
            client_addr: Some("192.0.2.1:4000".into()),
            signed_at: 1,
            reason: "no event type".into(),
            body: b"{\"x\":1}".to_vec(),
        };
        let q1 = store.quarantine(body()).await.unwrap();
        assert_eq!(store.prune(T0, true).await.unwrap().events, 1);
        assert_eq!(db.count("SELECT count(*) FROM jobs"), 0);
        store.insert_event(event(2)).await.unwrap();
        let second = claim(&store, T0, &["etl"]).await.unwrap();
        assert!(second.id > first.id, "job id {} given again", second.id);
        let q2 = store.quarantine(body()).await.unwrap();
        assert!(q2 > q1, "quarantine id {q2} given again");
    }

    /// `quarantine list` newest first; `show` has the body byte for byte.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quarantined_bodies_are_listed_newest_first_and_shown_exactly(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(false, &[])).await;
        let mut ids = Vec::new();
        for (i, body) in [b"not json".to_vec(), vec![0xff, 0x00, b'{']].into_iter().enumerate() {
            ids.push(store.quarantine(QuarantinedBody {
                received_at: T0 + i as i64,
                client_addr: Some("192.0.2.1:4000".into()),
                signed_at: 42,
                reason: format!("reason {i}"),
                body,
            }).await.unwrap());
        }
        let listed = store.list_quarantine(10).await.unwrap();
        let seen: Vec<(i64, &str, i64)> = listed.iter().map(|q| (q.id, q.reason.as_str(), q.size)).collect();
        assert_eq!(seen, [(ids[1], "reason 1", 3), (ids[0], "reason 0", 8)]);
        assert_eq!(store.list_quarantine(1).await.unwrap().len(), 1);
        let shown = store.find_quarantined(ids[1]).await.unwrap().unwrap();
        assert_eq!(shown.body, [0xff, 0x00, b'{']);
        assert_eq!(shown.summary.signed_at, Some(42));
        assert_eq!(shown.summary.client_addr.as_deref(), Some("192.0.2.1:4000"));
        assert!(store.find_quarantined(ids[1] + 100).await.unwrap().is_none());
    }
}
