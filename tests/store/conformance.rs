//! What every backend must do the same way: dedupe, the jobs of a new
//! event, claim order, retries, replay, prune, the views of `events`.

use steerhook::domain::{Enrichment, EnrichmentError, EnrichmentStatus};
use steerhook::store::{
    AttemptOutcome, AttemptRecord, ClaimFilter, EventFilter, EventStatus, InsertOutcome, JobKind,
    JobNext, JobState, LogEntry, LogPage, Store, SummaryBounds,
};

use crate::support::db::TestDb;
use crate::support::store::{claim, claim_at, event, failed, ok, register, routing, LEASE_MS, T0};

/// Jobs queued, as `/metrics` counts them: on SQLite an event's jobs are
/// made when the worker needs them, and counted meanwhile as they will be.
async fn queued_jobs(store: &Store) -> i64 {
    store
        .queue_counts(T0)
        .await
        .unwrap()
        .by_kind_state
        .iter()
        .map(|(_, _, n)| n)
        .sum()
}

crate::backends! {
    /// SPEC §4 step 8: the same dedupe key twice gives the stored event's id.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_event_is_stored_once_and_its_duplicate_names_it(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(false, &[])).await;
        let first = store.insert_event(event(1)).await.unwrap();
        assert_eq!(first, InsertOutcome::Accepted { id: "evt_1".into() });
        let mut again = event(1);
        again.event.id = "evt_retry_with_a_new_id".into();
        assert_eq!(
            store.insert_event(again).await.unwrap(),
            InsertOutcome::Duplicate { id: "evt_1".into() }
        );
        assert_eq!(db.count("SELECT count(*) FROM events"), 1);
    }

    /// Concurrent inserts share commits; each still gets its own answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_inserts_each_get_their_own_answer(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(true, &["etl"])).await;
        let calls = (0..96).map(|i| {
            let store = store.clone();
            tokio::spawn(async move { (i, store.insert_event(event(i % 64)).await.unwrap()) })
        });
        let outcomes = futures_util::future::join_all(calls).await;
        let mut accepted = 0;
        for r in outcomes {
            let (i, outcome) = r.unwrap();
            let id = format!("evt_{}", i % 64);
            match outcome {
                InsertOutcome::Accepted { id: got } => {
                    accepted += 1;
                    assert_eq!(got, id, "call {i}");
                }
                InsertOutcome::Duplicate { id: got } => assert_eq!(got, id, "call {i}"),
            }
        }
        assert_eq!(accepted, 64, "one 202 per dedupe key");
        assert_eq!(db.count("SELECT count(*) FROM events"), 64);
        assert_eq!(queued_jobs(&store).await, 128, "a fetch and a delivery each");
    }

    /// An event no hook receives and that needs no fetch is done when stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_event_with_nothing_to_do_is_done_at_once(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(false, &[])).await;
        store.insert_event(event(1)).await.unwrap();
        let listed = store.list_events(EventFilter { limit: 10, ..Default::default() }).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].status, "done");
    }

    /// The fetch runs first; its end releases the deliveries, which run in arrival order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_fetch_runs_first_and_releases_the_deliveries_in_arrival_order(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(true, &["etl"])).await;
        register(&store, &["etl"]).await;
        store.insert_event(event(1)).await.unwrap();
        store.insert_event(event(2)).await.unwrap();
        let now = T0 + 1_000;
        // Both fetches come before any delivery: the deliveries are blocked.
        let f1 = claim(&store, now, &["etl"]).await.unwrap();
        assert_eq!((f1.kind, f1.attempt), (JobKind::Fetch, 1));
        let f2 = claim(&store, now, &["etl"]).await.unwrap();
        assert_eq!(f2.kind, JobKind::Fetch);
        assert!(claim(&store, now, &["etl"]).await.is_none(), "deliveries wait for their fetch");
        // The second event's fetch ends first: its delivery is released first,
        // and arrival order is among due deliveries.
        store.record_attempt(f2.clone(), ok(now), JobNext::Succeeded, now).await.unwrap();
        store.record_attempt(f1.clone(), ok(now), JobNext::Succeeded, now).await.unwrap();
        let d1 = claim(&store, now, &["etl"]).await.unwrap();
        assert_eq!((d1.kind, d1.hook.as_str(), d1.event_seq), (JobKind::Deliver, "etl", f1.event_seq));
        store.record_attempt(d1, ok(now), JobNext::Succeeded, now).await.unwrap();
        let d2 = claim(&store, now, &["etl"]).await.unwrap();
        assert_eq!(d2.event_seq, f2.event_seq);
        store.record_attempt(d2, ok(now), JobNext::Succeeded, now).await.unwrap();
        assert!(claim(&store, now, &["etl"]).await.is_none());
        let done = store
            .list_events(EventFilter { status: Some(EventStatus::Done), limit: 10, ..Default::default() })
            .await
            .unwrap();
        assert_eq!(done.len(), 2);
    }

    /// A retry waits for its due time; the last failure makes the event failed (SPEC §2).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_attempt_retries_when_due_and_the_last_one_fails_the_event(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(false, &["etl"])).await;
        register(&store, &["etl"]).await;
        store.insert_event(event(1)).await.unwrap();
        let job = claim(&store, T0, &["etl"]).await.unwrap();
        let retry_at = T0 + 5_000;
        store
            .record_attempt(job, failed(T0, AttemptOutcome::Retry), JobNext::RetryAt(retry_at), T0)
            .await
            .unwrap();
        assert!(claim(&store, T0 + 4_999, &["etl"]).await.is_none(), "not due yet");
        assert_eq!(store.next_due_at().await.unwrap(), Some(retry_at));
        let again = claim(&store, retry_at, &["etl"]).await.unwrap();
        assert_eq!(again.attempt, 2);
        store
            .record_attempt(again, failed(retry_at, AttemptOutcome::Failed), JobNext::Failed, retry_at)
            .await
            .unwrap();
        let ev = store.find_event("evt_1".into()).await.unwrap().unwrap();
        assert_eq!(ev.status, "failed");
        let job = &ev.jobs[0];
        assert_eq!((job.state.as_str(), job.attempts), (JobState::Failed.as_str(), 2));
        let outcomes: Vec<&str> = job.attempt_log.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(outcomes, ["retry", "failed"]);
        assert_eq!(job.attempt_log[0].stdout.as_deref(), Some("out"));
    }

    /// `replay` queues a failed delivery again, due at once, attempts from zero.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replay_queues_a_failed_delivery_again(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(false, &["etl"])).await;
        register(&store, &["etl"]).await;
        store.insert_event(event(1)).await.unwrap();
        let job = claim(&store, T0, &["etl"]).await.unwrap();
        store
            .record_attempt(job, failed(T0, AttemptOutcome::Failed), JobNext::Failed, T0)
            .await
            .unwrap();
        let ev = store.find_event("evt_1".into()).await.unwrap().unwrap();
        let report = store.replay(ev.seq, vec!["etl".into()], false, T0 + 10).await.unwrap();
        assert_eq!(report.queued, ["etl"]);
        let ev = store.find_event("evt_1".into()).await.unwrap().unwrap();
        assert_eq!(ev.status, "pending");
        let again = claim(&store, T0 + 10, &["etl"]).await.unwrap();
        assert_eq!(again.attempt, 1);
    }

    /// Retention deletes finished events only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prune_deletes_finished_events_and_keeps_unfinished_ones(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(false, &["etl"])).await;
        register(&store, &["etl"]).await;
        store.insert_event(event(1)).await.unwrap();
        store.insert_event(event(2)).await.unwrap();
        let job = claim(&store, T0, &["etl"]).await.unwrap();
        store.record_attempt(job, ok(T0), JobNext::Succeeded, T0).await.unwrap();
        let pruned = store.prune(T0, true).await.unwrap();
        assert_eq!(pruned.events, 1, "the finished one");
        assert_eq!(db.count("SELECT count(*) FROM events"), 1);
        assert_eq!(db.count("SELECT count(*) FROM attempts"), 0, "with its attempts");
    }

    /// The queue gauges count jobs by kind and state.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queue_counts_count_jobs_by_kind_and_state(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(true, &["etl", "mail"])).await;
        store.insert_event(event(1)).await.unwrap();
        let counts = store.queue_counts(T0).await.unwrap();
        let mut seen: Vec<(JobKind, JobState, i64)> = counts.by_kind_state.clone();
        seen.sort_by_key(|(k, s, _)| (k.as_str(), s.as_str()));
        assert_eq!(
            seen,
            [(JobKind::Deliver, JobState::Blocked, 2), (JobKind::Fetch, JobState::Pending, 1)]
        );
        assert_eq!(counts.oldest_due_age_ms, Some(999));
    }

    /// A lease renewed by its daemon keeps the job; one that ran out lets
    /// another claim take it, and the interrupted attempt shows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_whose_lease_ran_out_is_claimed_again(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(false, &["etl"])).await;
        register(&store, &["etl"]).await;
        store.insert_event(event(1)).await.unwrap();
        let job = claim(&store, T0, &["etl"]).await.unwrap();
        store.extend_leases(vec![job.id], T0 + 2 * LEASE_MS).await.unwrap();
        assert!(claim(&store, T0 + LEASE_MS + 1, &["etl"]).await.is_none(), "renewed");
        let taken = claim(&store, T0 + 2 * LEASE_MS + 1, &["etl"]).await.unwrap();
        assert_eq!((taken.id, taken.attempt), (job.id, 2));
    }
}

/// A page of `entries` (JSON texts), each with a timestamp when `ts` gives one.
fn page(n: u32, entries: &[(&str, Option<i64>)], next: Option<&str>) -> LogPage {
    let mut text = String::new();
    let mut spans = Vec::new();
    for (e, ts) in entries {
        let start = text.len();
        text.push_str(e);
        spans.push(LogEntry {
            span: start..text.len(),
            ts_us: *ts,
        });
        text.push(' ');
    }
    LogPage {
        page: n,
        text,
        entries: spans,
        followed_cursor: (n > 0).then(|| format!("c{n}")),
        next_cursor: next.map(str::to_owned),
        complete: next.is_none(),
        skip_stored: false,
        stopped: None,
    }
}

/// Everything `stream_logs_json` sends, as one text.
async fn streamed(store: &Store, seq: i64) -> String {
    let mut rx = store.stream_logs_json(seq);
    let mut out = Vec::new();
    while let Some(chunk) = rx.recv().await {
        out.extend(chunk.unwrap());
    }
    String::from_utf8(out).unwrap()
}

crate::backends! {
    /// SPEC §5: an id another dedupe key holds gets a derived id, the same
    /// each time for that key; the sender's is kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_id_another_run_holds_gets_a_derived_one_and_the_senders_is_kept(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(false, &[])).await;
        assert_eq!(
            store.insert_event(event(1)).await.unwrap(),
            InsertOutcome::Accepted { id: "evt_1".into() }
        );
        let mut other_run = event(2);
        other_run.event.id = "evt_1".into();
        other_run.event.sender_id = Some("evt_1".into());
        let InsertOutcome::Accepted { id: derived } =
            store.insert_event(other_run.clone()).await.unwrap()
        else {
            panic!("another run is a new event")
        };
        assert!(derived.starts_with("evt_1~"), "{derived}");
        assert_eq!(
            store.insert_event(other_run).await.unwrap(),
            InsertOutcome::Duplicate { id: derived.clone() },
            "the sender's retry is still a duplicate"
        );
        let shown = store.find_event(derived.clone()).await.unwrap().unwrap();
        assert_eq!((shown.run_id.as_str(), shown.sender_id.as_deref()), ("run_2", Some("evt_1")));
        let first = store.find_event("evt_1".into()).await.unwrap().unwrap();
        assert_eq!(first.run_id, "run_1");
        assert_eq!(db.count("SELECT count(*) FROM events"), 2);
    }

    /// Many runs sent at once under one id (a batch on PostgreSQL, a group
    /// commit on SQLite): each is stored once, each under an id of its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_runs_sharing_one_id_each_get_an_id_of_their_own(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(true, &["etl"])).await;
        let calls = (0..40).map(|i| {
            let store = store.clone();
            let mut ev = event(i % 20);
            ev.event.id = "evt_shared".into();
            ev.event.sender_id = Some("evt_shared".into());
            tokio::spawn(async move { store.insert_event(ev).await.unwrap() })
        });
        let outcomes = futures_util::future::join_all(calls).await;
        let mut accepted = std::collections::HashSet::new();
        for o in outcomes {
            if let InsertOutcome::Accepted { id } = o.unwrap() {
                assert!(accepted.insert(id.clone()), "{id} given twice");
            }
        }
        assert_eq!(accepted.len(), 20, "one 202 per run");
        assert!(accepted.contains("evt_shared"));
        assert_eq!(db.count("SELECT count(DISTINCT id) FROM events"), 20);
        assert_eq!(queued_jobs(&store).await, 40, "a fetch and a delivery each");
    }

    /// SPEC §5: logs oldest first, by timestamp when every entry has one
    /// (ties oldest page first), else oldest page first as sent; the newest
    /// for a summary the same way round.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn logs_stream_oldest_first_by_timestamp_else_by_page(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(true, &[])).await;
        store.insert_event(event(1)).await.unwrap();
        store.insert_event(event(2)).await.unwrap();
        // Pages newest first, entries newest first within each.
        store.save_log_page(1, page(0, &[("4", Some(40)), ("3", Some(30))], Some("c1"))).await.unwrap();
        store.save_log_page(1, page(1, &[("2", Some(30)), ("1", Some(10))], None)).await.unwrap();
        assert_eq!(streamed(&store, 1).await, "[1,2,3,4]", "by time, the tie oldest page first");
        let bounds = SummaryBounds { entries: 2, total_bytes: 1 << 20, entry_bytes: 1 << 10 };
        let newest = store.newest_logs(1, bounds).await.unwrap();
        assert_eq!((newest.entries, newest.total), (vec!["3".to_owned(), "4".to_owned()], 4));

        store.save_log_page(2, page(0, &[("4", None), ("3", Some(30))], Some("c1"))).await.unwrap();
        store.save_log_page(2, page(1, &[("2", Some(20)), ("1", Some(10))], None)).await.unwrap();
        assert_eq!(streamed(&store, 2).await, "[2,1,4,3]", "one entry without a time: as sent");
        let newest = store.newest_logs(2, bounds).await.unwrap();
        assert_eq!(newest.entries, ["4", "3"]);
        assert_eq!(streamed(&store, 3).await, "[]", "no logs");
        assert_eq!(
            db.query_one::<i64>("SELECT logs_bytes FROM events WHERE seq = $1", &[&2i64]),
            4
        );
    }

    /// A fetch that ends stores what the hooks are told with its attempt;
    /// a limit reached along the way makes it partial, for the first reason.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fetch_records_its_enrichment_with_its_attempt(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(true, &["etl"])).await;
        register(&store, &["etl"]).await;
        store.insert_event(event(1)).await.unwrap();
        let fetch = claim(&store, T0, &["etl"]).await.unwrap();
        let seq = fetch.event_seq;
        let why = |code: &str| EnrichmentError { code: code.into(), message: format!("{code} here") };
        store.save_run(seq, "{}".into(), Some(why("RUN_NOT_SETTLED"))).await.unwrap();
        store.finish_logs(seq, Some(why("MAX_LOG_PAGES"))).await.unwrap();
        let ev = store.load_event(seq).await.unwrap();
        assert_eq!(
            ev.enrichment,
            Some(Enrichment::because(EnrichmentStatus::Partial, "RUN_NOT_SETTLED", "RUN_NOT_SETTLED here"))
        );
        let rec = AttemptRecord { enrichment: ev.enrichment.clone(), ..ok(T0) };
        store.record_attempt(fetch, rec, JobNext::Succeeded, T0).await.unwrap();
        let shown = store.find_event("evt_1".into()).await.unwrap().unwrap();
        assert_eq!(shown.enrichment.unwrap().status, EnrichmentStatus::Partial);
        assert_eq!(shown.enrichment_error.as_deref(), Some("RUN_NOT_SETTLED here"));
    }

    /// SPEC §2: a fetch that gave up does not fail the event; a failed
    /// delivery does.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fetch_that_gave_up_does_not_fail_the_event(backend) {
        let db = TestDb::fresh(backend);
        let store = db.open(routing(true, &["etl"])).await;
        register(&store, &["etl"]).await;
        store.insert_event(event(1)).await.unwrap();
        let fetch = claim(&store, T0, &["etl"]).await.unwrap();
        store.record_attempt(fetch, failed(T0, AttemptOutcome::Failed), JobNext::Failed, T0).await.unwrap();
        let delivery = claim(&store, T0, &["etl"]).await.unwrap();
        store.record_attempt(delivery, ok(T0), JobNext::Succeeded, T0).await.unwrap();
        let shown = store.find_event("evt_1".into()).await.unwrap().unwrap();
        assert_eq!(shown.status, "done");
        // Without a record of its own (it panicked), none for a fetch with no run.
        assert_eq!(shown.enrichment.unwrap().status, EnrichmentStatus::None);
    }
}

/// SQLite makes an event's jobs after the answer, when the worker next
/// claims: the commit the sender waits for holds the event and one small
/// row. A stop in between loses nothing: the next start makes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_makes_an_events_jobs_when_the_worker_claims_even_after_a_restart() {
    let db = TestDb::fresh(crate::support::db::Backend::Sqlite);
    let store = db.open(routing(true, &["etl", "mail"])).await;
    store.insert_event(event(1)).await.unwrap();
    assert_eq!(
        db.count("SELECT count(*) FROM jobs"),
        0,
        "no job row at ingest"
    );
    assert_eq!(db.count("SELECT count(*) FROM unexpanded"), 1);
    let shown = store.find_event("evt_1".into()).await.unwrap().unwrap();
    let projected: Vec<(&str, &str, &str)> = shown
        .jobs
        .iter()
        .map(|j| (j.kind.as_str(), j.hook.as_str(), j.state.as_str()))
        .collect();
    assert_eq!(
        projected,
        [
            ("fetch", "", "pending"),
            ("deliver", "etl", "blocked"),
            ("deliver", "mail", "blocked")
        ],
        "events show names the jobs to come"
    );
    assert_eq!(
        store.next_due_at().await.unwrap(),
        Some(T0 - 1_000 + 1),
        "due since it arrived"
    );
    // A prune past its arrival keeps it: its work is not done.
    assert_eq!(store.prune(T0 + 1, true).await.unwrap().events, 0);
    drop(store);

    // The next start: the first claim makes the jobs, oldest event first.
    let store = db.open(routing(true, &["etl", "mail"])).await;
    let fetch = claim(&store, T0, &["etl", "mail"]).await.unwrap();
    assert_eq!(fetch.kind, JobKind::Fetch);
    assert_eq!(db.count("SELECT count(*) FROM jobs"), 3);
    assert_eq!(db.count("SELECT count(*) FROM unexpanded"), 0);
}

/// SQLite makes jobs as hooks take them: a claim makes the next waiting
/// events' jobs only when a free slot finds no job due, so a backlog is not
/// turned into job rows (in the commits webhooks wait for) faster than
/// hooks drain it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_makes_jobs_only_when_a_free_slot_finds_none_due() {
    let db = TestDb::fresh(crate::support::db::Backend::Sqlite);
    let store = db.open(routing(false, &["etl"])).await;
    for n in 1..=3 {
        store.insert_event(event(n)).await.unwrap();
    }
    let waiting = || db.count("SELECT count(*) FROM unexpanded");

    // The hook is at its concurrency limit: nothing could start, nothing is made.
    let busy = ClaimFilter {
        busy_hooks: vec!["etl".into()],
        deliveries_allowed: false,
        ..claim_at(T0, &["etl"])
    };
    assert!(store.claim_due_job(busy.clone()).await.unwrap().is_none());
    assert_eq!((waiting(), db.count("SELECT count(*) FROM jobs")), (3, 0));

    // A free slot and no job: the waiting events' jobs are made, oldest first.
    let first = claim(&store, T0, &["etl"]).await.unwrap();
    assert_eq!(first.event_seq, 1);
    assert_eq!((waiting(), db.count("SELECT count(*) FROM jobs")), (0, 3));

    // Jobs due: they are claimed, and newer events wait.
    store.insert_event(event(4)).await.unwrap();
    assert_eq!(claim(&store, T0, &["etl"]).await.unwrap().event_seq, 2);
    assert_eq!(claim(&store, T0, &["etl"]).await.unwrap().event_seq, 3);
    assert_eq!(waiting(), 1, "made only once the jobs before it are taken");
    assert_eq!(claim(&store, T0, &["etl"]).await.unwrap().event_seq, 4);
    assert_eq!(waiting(), 0);
    assert!(claim(&store, T0, &["etl"]).await.is_none());
}
