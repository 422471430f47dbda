//! The real worker loop under load: a flaky API delays work but never loses
//! or doubles it, and the API never sees more requests at once than allowed.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use rand::Rng;
use wiremock::{MockServer, Request, Respond, ResponseTemplate};

use crate::support::prelude::*;
use crate::{queue_app, save_hook, APPEND_ID};

const LINES: usize = 3;

/// The healthy fake, failing 30 % of calls at random: 500s, 429s with
/// `Retry-After: 0` (a few with `1`), and 200s with truncated JSON.
struct Flaky {
    healthy: FakeRuns,
    calls: AtomicUsize,
    faults: AtomicUsize,
    long_waits: AtomicUsize,
}

impl Respond for Flaky {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let roll: f64 = rand::thread_rng().gen();
        if roll >= 0.30 {
            return serve_run(request, self.healthy.total, &self.healthy.shape);
        }
        self.faults.fetch_add(1, Ordering::Relaxed);
        if roll < 0.12 {
            api_error(500, "CLOUD_INTERNAL_ERROR")
        } else if roll < 0.22 {
            ResponseTemplate::new(200)
                .insert_header("content-type", "application/json")
                .set_body_string(r#"{"logs": [{"id": "line-0", "seq": 0, "mess"#)
        } else {
            // Retry-After: 1 pauses every fetch for a (real) second: a few only.
            let wait = if self.long_waits.fetch_add(1, Ordering::Relaxed) < 3 {
                "1"
            } else {
                "0"
            };
            api_error(429, "CLOUD_RATE_LIMITED").insert_header("retry-after", wait)
        }
    }
}

/// Posts `n` events 16 at a time; returns their ids.
async fn post_many(app: &TestApp, n: usize) -> Vec<String> {
    stream::iter(0..n)
        .map(|i| async move { app.post_run(&format!("run_{i:04}")).await })
        .buffer_unordered(16)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_events_against_a_flaky_api_are_each_delivered_exactly_once() {
    let api = MockServer::start().await;
    let flaky = Arc::new(Flaky {
        healthy: FakeRuns::lines(LINES),
        calls: AtomicUsize::new(0),
        faults: AtomicUsize::new(0),
        long_waits: AtomicUsize::new(0),
    });
    struct Shared(Arc<Flaky>);
    impl Respond for Shared {
        fn respond(&self, request: &Request) -> ResponseTemplate {
            self.0.respond(request)
        }
    }
    mount_runs(&api, Shared(flaky.clone())).await;
    let sandbox = Sandbox::new();
    let setup = queue_app(&sandbox, Some(&api))
        .opensteer_lines("log_page_size = 2")
        .opensteer_lines("max_concurrent_requests = 8")
        .queue("concurrency = 16\nbackoff_base_secs = 0")
        .without_hooks()
        .hook(&save_hook(&sandbox, APPEND_ID, "concurrency = 4"));
    let app = setup.clone().system_clock().spawn().await;
    let started = Instant::now();
    let ids = post_many(&app, 1_000).await;
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 1_000);

    wait_for(Duration::from_secs(120), "1000 events done", || {
        (sandbox
            .db()
            .count("SELECT count(*) FROM events WHERE status <> 'done'")
            == 0)
            .then_some(())
    })
    .await;
    let took = started.elapsed();
    app.stop().await;

    assert_eq!(sandbox.db().count("SELECT count(*) FROM events"), 1_000);
    assert_eq!(
        sandbox
            .db()
            .count("SELECT count(*) FROM jobs WHERE state <> 'succeeded'"),
        0,
        "every fetch and delivery succeeded"
    );
    let delivered = sandbox.out_lines("ids");
    let unique: HashSet<&String> = delivered.iter().collect();
    assert_eq!(delivered.len(), 1_000, "one delivery per event");
    assert_eq!(unique.len(), 1_000);
    assert_eq!(unique, ids.iter().collect::<HashSet<_>>());
    assert_eq!(
        sandbox.db().count(
            "SELECT count(*) FROM attempts JOIN jobs ON jobs.id = attempts.job_id
             WHERE jobs.kind = 'deliver'"
        ),
        1_000,
        "no delivery ran twice"
    );
    assert_eq!(
        sandbox.db().count("SELECT count(*) FROM log_entries"),
        1_000 * LINES as i64,
        "no log entry stored twice"
    );
    assert_eq!(
        sandbox
            .db()
            .count("SELECT count(*) FROM (SELECT DISTINCT event_seq, entry FROM log_entries)"),
        1_000 * LINES as i64
    );
    let faults = flaky.faults.load(Ordering::Relaxed) as i64;
    assert!(faults > 300, "the fake failed often: {faults}");
    assert_eq!(
        sandbox
            .db()
            .count("SELECT count(*) FROM attempts WHERE outcome = 'retry'"),
        faults,
        "every fault is one retried attempt"
    );
    eprintln!(
        "1000 events, {} API calls ({faults} faults) in {took:?}",
        flaky.calls.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_never_sees_more_requests_at_once_than_max_concurrent_requests() {
    const DELAY: Duration = Duration::from_millis(200);
    let api = MockServer::start().await;
    let at = Arc::new(Mutex::new(Vec::new()));
    mount_runs(
        &api,
        Arrivals {
            at: at.clone(),
            delay: DELAY,
            answer: FakeRuns::lines(1),
        },
    )
    .await;
    let sandbox = Sandbox::new();
    let setup = queue_app(&sandbox, Some(&api))
        .opensteer_lines("max_concurrent_requests = 2")
        .queue("concurrency = 16")
        .without_hooks();
    let app = setup.clone().system_clock().spawn().await;
    post_many(&app, 50).await;
    wait_for(Duration::from_secs(60), "50 fetches done", || {
        (sandbox
            .db()
            .count("SELECT count(*) FROM events WHERE status <> 'done'")
            == 0)
            .then_some(())
    })
    .await;
    app.stop().await;

    let mut arrivals = at.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 100, "a run and a logs page per event");
    arrivals.sort();
    // A request holds its slot until its answer arrives, DELAY after it came
    // in; a margin absorbs the time between arrival and the fake's clock read.
    let window = DELAY - Duration::from_millis(20);
    let most = most_in_flight(&arrivals, window);
    assert_eq!(
        most, 2,
        "at most opensteer.max_concurrent_requests in flight, and the limit is used"
    );
}
