//! Upstream chaos: a fake Opensteer API failing 30 % of calls (500, 429
//! with Retry-After, a hang past the request timeout, truncated JSON) and
//! an SMTP server that is down when the events arrive. Every event reaches
//! the shell hook once and the e-mail hook once: one 'succeeded' delivery
//! per hook per event, one message per event, Message-IDs unique.
//!
//! The short version (100 events, SMTP down 3 s) runs in the default suite;
//! `long_` (1,000 events, SMTP down 60 s) is ignored and run by
//! `scripts/chaos-drill.sh`. tests/queue/load.rs covers the API faults alone.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use rand::Rng;
use serde_json::json;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::prelude::*;

/// Counts of what the fake did.
#[derive(Default)]
struct Faults {
    calls: AtomicUsize,
    errors_500: AtomicUsize,
    rate_limited: AtomicUsize,
    hangs: AtomicUsize,
    truncated: AtomicUsize,
}

struct ChaosApi(Arc<Faults>);

impl Respond for ChaosApi {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let f = &self.0;
        f.calls.fetch_add(1, Ordering::Relaxed);
        let roll: f64 = rand::thread_rng().gen();
        if roll < 0.10 {
            f.errors_500.fetch_add(1, Ordering::Relaxed);
            return api_error(500, "CLOUD_INTERNAL_ERROR");
        }
        if roll < 0.18 {
            f.rate_limited.fetch_add(1, Ordering::Relaxed);
            // Retry-After: 1 pauses every fetch for a real second: one in four.
            let wait = if roll < 0.12 { "1" } else { "0" };
            return api_error(429, "CLOUD_RATE_LIMITED").insert_header("retry-after", wait);
        }
        if roll < 0.22 {
            f.hangs.fetch_add(1, Ordering::Relaxed);
            // Past opensteer.request_timeout_secs = 1.
            return ResponseTemplate::new(200)
                .set_delay(Duration::from_millis(2500))
                .set_body_json(json!({"id": "late"}));
        }
        if roll < 0.30 {
            f.truncated.fetch_add(1, Ordering::Relaxed);
            return ResponseTemplate::new(200)
                .insert_header("content-type", "application/json")
                .set_body_string(r#"{"logs": [{"id": "l1", "mess"#);
        }
        let segments: Vec<&str> = request.url.path().trim_matches('/').split('/').collect();
        match segments.as_slice() {
            ["runs", run_id] => ResponseTemplate::new(200).set_body_json(
                json!({"id": run_id, "status": "failed", "error": {"message": "boom"}}),
            ),
            ["runs", _, "logs"] => ResponseTemplate::new(200).set_body_json(json!({
                "logs": [{"id": "l1", "message": "started"}, {"id": "l2", "message": "failed"}]
            })),
            _ => ResponseTemplate::new(404),
        }
    }
}

struct Plan {
    events: usize,
    smtp_down: Duration,
    backoff_base_secs: u64,
    backoff_max_secs: u64,
    deadline: Duration,
}

async fn run_chaos(plan: Plan) {
    let started = Instant::now();
    let api = MockServer::start().await;
    let faults = Arc::new(Faults::default());
    Mock::given(method("GET"))
        .and(path_regex(r"^/runs/"))
        .respond_with(ChaosApi(faults.clone()))
        .mount(&api)
        .await;
    let mut smtp = SmtpServer::start().await;
    smtp.stop().await; // down when the events arrive

    let sandbox = Sandbox::new();
    let rest = format!(
        "[queue]\nconcurrency = 16\nbackoff_base_secs = {base}\nbackoff_max_secs = {max}\n\
         retry_after_max_secs = 2\nfetch_max_attempts = 1000\n\
         [log]\nlevel = \"error\"\n\
         [opensteer]\nbase_url = {api}\napi_key = \"osk_chaos\"\nrequest_timeout_secs = 1\n\
         connect_timeout_secs = 1\nmax_concurrent_requests = 8\n\
         [smtp]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\n\
         from = \"steerhook <steerhook@drills.test>\"\ntimeout_secs = 2\n\
         [[hook]]\nname = \"etl\"\nkind = \"shell\"\nevents = [\"run.succeeded\", \"run.failed\"]\n\
         command = [\"/bin/sh\", \"-c\", \"echo \\\"$STEERHOOK_EVENT_ID\\\" >> \\\"$HOOK_LOG\\\"\"]\n\
         env = {{ HOOK_LOG = {log} }}\nconcurrency = 4\nmax_attempts = 1000\n\
         [[hook]]\nname = \"mail\"\nkind = \"email\"\nevents = [\"run.succeeded\", \"run.failed\"]\n\
         to = [\"ops@drills.test\"]\nconcurrency = 4\nmax_attempts = 1000\n",
        base = plan.backoff_base_secs,
        max = plan.backoff_max_secs,
        api = toml_str(&api.uri()),
        port = smtp.port(),
        log = toml_str(&sandbox.out().join("etl.log").display().to_string()),
    );
    let app = TestApp::builder()
        .sandbox(&sandbox)
        .system_clock()
        .tail(&rest)
        .spawn()
        .await;
    let ids: Vec<String> = stream::iter(0..plan.events)
        .map(|i| {
            let webhook = app.webhook();
            async move {
                let id = format!("evt_chaos_{i:04}");
                let answer = webhook
                    .try_post_signed(run_event("run.failed", &id, &format!("chaos_{i:04}")))
                    .await
                    .expect("answered");
                assert_eq!(answer.status, 202, "{}", answer.text);
                id
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;

    // SMTP comes back `smtp_down` after it went down, whatever the worker did meanwhile.
    let db = sandbox.db();
    let back_at = started + plan.smtp_down;
    // The outage's own length, not a synchronisation.
    tokio::time::sleep_until(back_at.into()).await;
    let mail_attempts_while_down = db.count(
        "SELECT count(*) FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE j.hook = 'mail'",
    );
    smtp.restart()
        .await
        .expect("the SMTP server comes back on its port");
    wait_for(plan.deadline, "every event done", || {
        (db.count("SELECT count(*) FROM events WHERE status <> 'done'") == 0).then_some(())
    })
    .await;
    app.stop().await;
    let took = started.elapsed();

    let n = plan.events as i64;
    assert_eq!(db.count("SELECT count(*) FROM events"), n);
    assert_eq!(
        db.count("SELECT count(*) FROM jobs WHERE state <> 'succeeded'"),
        0,
        "every fetch and delivery succeeded"
    );
    for hook in ["etl", "mail"] {
        assert_eq!(
            db.count(&format!("SELECT count(DISTINCT event_seq) FROM jobs WHERE kind = 'deliver' AND hook = '{hook}' AND state = 'succeeded'")
            ),
            n,
            "one succeeded {hook} delivery per event"
        );
        assert_eq!(
            db.count(&format!("SELECT count(*) FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE j.hook = '{hook}' AND a.outcome = 'ok'")
            ),
            n,
            "one successful {hook} attempt per event"
        );
    }
    assert_eq!(
        db.count(
            "SELECT count(*) FROM events WHERE run_json IS NULL OR enrichment_error IS NOT NULL"
        ),
        0,
        "every run was fetched in the end"
    );
    let ran = sandbox.out_lines("etl.log");
    assert_eq!(ran.len(), plan.events, "the shell hook ran once per event");
    assert_eq!(
        ran.iter().collect::<HashSet<_>>(),
        ids.iter().collect::<HashSet<_>>()
    );
    let messages = smtp.messages();
    assert_eq!(messages.len(), plan.events, "one message per event");
    let message_ids: HashSet<String> = messages
        .iter()
        .map(|m| m.header("Message-ID").expect("a Message-ID"))
        .collect();
    assert_eq!(message_ids.len(), plan.events, "Message-IDs are unique");
    let mut per_run: HashMap<String, usize> = HashMap::new();
    for m in &messages {
        let subject = m.header("Subject").expect("a subject");
        let run = subject
            .split_whitespace()
            .find(|w| w.starts_with("chaos_"))
            .unwrap_or_else(|| panic!("no run id in {subject:?}"))
            .to_owned();
        *per_run.entry(run).or_default() += 1;
    }
    assert_eq!(per_run.len(), plan.events, "every run mailed");
    assert!(per_run.values().all(|c| *c == 1), "no run mailed twice");

    let f = &faults;
    let injected = f.errors_500.load(Ordering::Relaxed)
        + f.rate_limited.load(Ordering::Relaxed)
        + f.hangs.load(Ordering::Relaxed)
        + f.truncated.load(Ordering::Relaxed);
    assert!(
        injected > 0 && mail_attempts_while_down > 0,
        "the chaos happened"
    );
    eprintln!(
        "chaos: {} events in {took:?}; API: {} calls, {injected} faults ({} 500, {} 429, {} hangs, {} truncated); \
         SMTP down {:?}: {mail_attempts_while_down} mail attempts failed meanwhile; {} messages, {} unique Message-IDs; \
         attempts: {} retry, {} ok",
        plan.events,
        f.calls.load(Ordering::Relaxed),
        f.errors_500.load(Ordering::Relaxed),
        f.rate_limited.load(Ordering::Relaxed),
        f.hangs.load(Ordering::Relaxed),
        f.truncated.load(Ordering::Relaxed),
        plan.smtp_down,
        messages.len(),
        message_ids.len(),
        db.count("SELECT count(*) FROM attempts WHERE outcome = 'retry'"),
        db.count("SELECT count(*) FROM attempts WHERE outcome = 'ok'"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_events_survive_a_flaky_api_and_an_smtp_outage_delivered_once_each() {
    run_chaos(Plan {
        events: 100,
        smtp_down: Duration::from_secs(3),
        backoff_base_secs: 1,
        backoff_max_secs: 1,
        deadline: Duration::from_secs(60),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long drill (minutes): scripts/chaos-drill.sh"]
async fn long_a_thousand_events_survive_a_flaky_api_and_a_minute_of_smtp_outage() {
    let events = std::env::var("CHAOS_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let down = std::env::var("CHAOS_SMTP_DOWN_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    run_chaos(Plan {
        events,
        smtp_down: Duration::from_secs(down),
        backoff_base_secs: 2,
        backoff_max_secs: 8,
        deadline: Duration::from_secs(600),
    })
    .await;
}
