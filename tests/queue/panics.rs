//! A panic in a job is an attempt that failed (code `PANIC`), retried like
//! any other; a panic in the worker loop itself stops `serve` with an error,
//! so the service manager restarts it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use steerhook::clock::Clock;
use steerhook::dispatch::Outcome;
use steerhook::hooks::{Delivery, Sink, SinkOutcome};
use steerhook::startup::Application;
use steerhook::store::JobNext;

use crate::queue_app;
use crate::support::prelude::*;

/// A hook whose first `panics` attempts panic; the next ones succeed.
#[derive(Debug)]
struct PanickingSink {
    panics: usize,
    calls: AtomicUsize,
}

impl Sink for PanickingSink {
    fn deliver<'a>(&'a self, _: Delivery<'a>) -> BoxFuture<'a, SinkOutcome> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let panics = call < self.panics;
        Box::pin(async move {
            if panics {
                panic!("the hook kind broke on purpose (call {call})");
            }
            SinkOutcome {
                result: Ok(()),
                exit_code: None,
                output: None,
                error_output: None,
            }
        })
    }

    fn max_attempt_duration(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn check(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async { Ok(String::new()) })
    }
}

fn panicking(panics: usize) -> impl Fn(&mut Application) + Send + Sync + 'static {
    move |app| {
        let sink = Arc::new(PanickingSink {
            panics,
            calls: AtomicUsize::new(0),
        });
        assert!(app.replace_sink("save", sink), "the test hook is there");
    }
}

#[tokio::test]
async fn a_delivery_that_panics_is_recorded_as_a_failed_attempt_and_retried() {
    let sandbox = Sandbox::new();
    let setup = queue_app(&sandbox, None);
    let app = setup.customize(panicking(1)).stepped().spawn().await;
    let id = app.post_run("run_panics").await;

    let (job, next) = match app.step().await {
        Outcome::Ran { job, next } => (job, next),
        idle => panic!("expected the delivery to run, got {idle:?}"),
    };
    assert!(matches!(next, JobNext::RetryAt(_)), "next: {next:?}");
    let tried = sandbox.db().attempts(job.id);
    assert_eq!(tried.len(), 1);
    assert_eq!(tried[0].outcome, "retry");
    assert_eq!(tried[0].error_code.as_deref(), Some("PANIC"));
    assert!(captured_logs().contains("panicked"), "the panic is logged");

    // Neither lost nor held: once due, it runs again, and succeeds.
    app.advance(Duration::from_secs(5));
    match app.step().await {
        Outcome::Ran { job: again, next } => {
            assert_eq!(again.id, job.id);
            assert_eq!(next, JobNext::Succeeded);
        }
        idle => panic!("expected the delivery to run again, got {idle:?}"),
    }
    assert_eq!(sandbox.db().event_status(&id), "done");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_loop_runs_a_delivery_again_after_it_panicked() {
    let sandbox = Sandbox::new();
    let setup = queue_app(&sandbox, None);
    let app = setup.customize(panicking(1)).system_clock().spawn().await;
    let id = app.post_run("run_panics_in_loop").await;
    wait_for(DEADLINE, "the delivery to succeed after its panic", || {
        (sandbox.db().event_status(&id) == "done").then_some(())
    })
    .await;
    let deliver = sandbox.db().job(&id, "deliver");
    let outcomes: Vec<String> = sandbox
        .db()
        .attempts(deliver.id)
        .into_iter()
        .map(|a| format!("{} {}", a.outcome, a.error_code.unwrap_or_default()))
        .collect();
    assert_eq!(outcomes, ["retry PANIC", "ok "]);
    app.stop().await;
}

/// The system clock, until it is told to panic.
#[derive(Debug, Default)]
struct Tripwire {
    armed: AtomicBool,
}

impl Clock for Tripwire {
    fn now(&self) -> SystemTime {
        if self.armed.load(Ordering::SeqCst) {
            panic!("the clock broke on purpose");
        }
        SystemTime::now()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_with_an_error_when_the_worker_loop_panics() {
    let sandbox = Sandbox::new();
    let toml = queue_app(&sandbox, None)
        .config()
        .toml(&sandbox.db().storage_toml());
    let settings = steerhook::config::Settings::from_toml(&toml).unwrap();
    let clock = Arc::new(Tripwire::default());
    let app = Application::build_with(settings, clock.clone())
        .await
        .unwrap();
    let served = tokio::spawn(app.run_until_stopped(tokio_util::sync::CancellationToken::new()));
    // The worker reads the clock each time it looks for work.
    clock.armed.store(true, Ordering::SeqCst);
    let ended = tokio::time::timeout(DEADLINE, served)
        .await
        .expect("serve stops by itself once its worker is gone")
        .expect("run_until_stopped does not panic itself");
    let err = ended.expect_err("serve returns an error, so the process exits non-zero");
    assert!(err.to_string().contains("worker"), "{err:#}");
}
