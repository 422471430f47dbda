//! SPEC §7: an answered event is on disk, with its jobs; one row per dedupe
//! key under concurrency; storage failures answer 503 and store nothing.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::join_all;

use crate::support::fault::StoreFault;
use crate::support::prelude::*;

#[derive(Debug, PartialEq)]
struct EventRow {
    id: String,
    event_type: String,
    run_id: String,
    signed_at: i64,
    received_at: i64,
    client_addr: Option<String>,
    body: Vec<u8>,
    status: String,
}

fn event_row(db: &TestDb, id: &str) -> Option<EventRow> {
    db.query_opt(
        "SELECT id, event_type, run_id, signed_at, received_at, client_addr, body, status
         FROM events WHERE id = $1",
        &[&id],
    )
    .map(
        |(id, event_type, run_id, signed_at, received_at, client_addr, body, status)| EventRow {
            id,
            event_type,
            run_id,
            signed_at,
            received_at,
            client_addr,
            body,
            status,
        },
    )
}

fn jobs_of(db: &TestDb, id: &str) -> Vec<(String, String)> {
    db.jobs(id)
        .into_iter()
        .map(|j| (j.kind, j.hook.unwrap_or_default()))
        .collect()
}

crate::backends! {
    #[tokio::test]
    async fn an_accepted_event_is_readable_from_another_connection_when_the_answer_arrives(backend) {
        let app = TestApp::builder().backend(backend).spawn().await;
        // Opened before the request, as an independent reader would be.
        let reader = app.db();
        // Odd but valid JSON bytes: key order, spacing and unicode escapes must survive.
        let body = br#"{ "type" : "run.succeeded", "id":"evt_disk", "data":{"run":{"id":"run_disk","note":"caf\u00e9 \u2603"}} }"#;
        let resp = app.post_signed(body).await;
        assert_eq!(resp.status().as_u16(), 202);
        // No poll: the row must already be committed.
        let row = event_row(reader, "evt_disk").expect("the row is committed before the answer");
        assert_eq!(row.body, body.to_vec(), "raw body, byte for byte");
        assert_eq!(row.event_type, "run.succeeded");
        assert_eq!(row.run_id, "run_disk");
        assert_eq!(row.signed_at, NOW_SECS as i64);
        assert_eq!(row.received_at, NOW_SECS as i64 * 1000, "the app's clock");
        assert!(
            row.client_addr
                .as_deref()
                .is_some_and(|c| c.starts_with("127.0.0.1:")),
            "client {:?}",
            row.client_addr
        );
        // No hook and no [opensteer]: nothing to do, so the event is finished.
        assert_eq!(row.status, "done");
        assert!(jobs_of(reader, "evt_disk").is_empty());
    }

    #[tokio::test]
    async fn an_accepted_event_has_a_deliver_job_for_each_hook_that_wants_its_type(backend) {
        let app = TestApp::builder()
            .backend(backend)
            .hook(
                r#"
    [[hook]]
    name = "etl"
    kind = "shell"
    events = ["run.succeeded"]
    command = ["/bin/true"]
    "#,
            )
            .spawn()
            .await;
        let reader = app.db();
        let resp = app
            .post_signed(&run_event("run.succeeded", "evt_hooked", "run_h"))
            .await;
        assert_eq!(resp.status().as_u16(), 202);
        // Its work is written in the same transaction as the event (on
        // SQLite as a row the worker turns into jobs when it next claims):
        // `events show`, reading the database right after the answer, names
        // the delivery. A worker may already have run it, so only its
        // existence is asserted, not its state.
        let (code, shown, stderr) = crate::support::daemon::cli(
            &app.write_config(),
            &["events", "show", "evt_hooked", "--json"],
        );
        assert_eq!(code, 0, "{stderr}");
        let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
        let deliveries: Vec<(&str, &str)> = shown["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| (j["kind"].as_str().unwrap(), j["hook"].as_str().unwrap()))
            .collect();
        assert_eq!(deliveries, [("deliver", "etl")]);

        // A type the hook does not want gets no job and is finished at once.
        let resp = app
            .post_signed(&run_event("run.failed", "evt_unhooked", "run_h"))
            .await;
        assert_eq!(resp.status().as_u16(), 202);
        assert!(jobs_of(reader, "evt_unhooked").is_empty());
        assert_eq!(
            event_row(reader, "evt_unhooked").unwrap().status,
            "done",
            "an event with no job is done"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn fifty_concurrent_identical_deliveries_store_one_row_and_answer_one_202(backend) {
        let app = TestApp::builder().backend(backend).spawn().await;
        let body = run_event("run.succeeded", "evt_storm", "run_storm");
        let header = app.signature(&body);
        let answers = join_all((0..50).map(|_| {
            let client = app.client.clone();
            let url = app.webhook_url.clone();
            let body = body.clone();
            let header = header.clone();
            async move {
                let resp = client
                    .post(url)
                    .header("x-opensteer-signature", header)
                    .body(body)
                    .send()
                    .await
                    .expect("answered");
                let status = resp.status().as_u16();
                (status, json_body(resp).await)
            }
        }))
        .await;
        let accepted: Vec<_> = answers.iter().filter(|(s, _)| *s == 202).collect();
        let duplicates: Vec<_> = answers.iter().filter(|(s, _)| *s == 200).collect();
        assert_eq!(accepted.len(), 1, "{answers:?}");
        assert_eq!(duplicates.len(), 49, "{answers:?}");
        assert_eq!(accepted[0].1["id"], "evt_storm");
        for (_, b) in duplicates {
            assert_eq!(
                b,
                &serde_json::json!({"status": "duplicate", "id": "evt_storm"})
            );
        }
        assert_eq!(app.db().count_rows("events"), 1);
    }
}

crate::backends! {
    /// The sender's retry of a run carries a new event id (SPEC §5: the
    /// dedupe key is the type and the run). Sent while the first is still
    /// in flight, the two are stored once, and both answers name the event
    /// that was stored: the 202 its own id, the `200 duplicate` the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_retry_with_a_new_id_racing_the_first_is_stored_once_and_both_answers_name_the_stored_id(backend) {
        const RUNS: usize = 40;
        let app = TestApp::builder().backend(backend).spawn().await;
        let answers = join_all((0..RUNS).flat_map(|n| {
            ["first", "retry"].map(|try_| {
                let webhook = app.webhook();
                let id = format!("evt_{n}_{try_}");
                let body = run_event("run.succeeded", &id, &format!("run_{n}"));
                async move {
                    let answer = webhook.try_post_signed(&body).await.expect("answered");
                    (n, answer.status, answer.json())
                }
            })
        }))
        .await;
        let stored: HashMap<String, String> = app
            .db()
            .query::<(String, String)>("SELECT run_id, id FROM events", &[])
            .into_iter()
            .collect();
        assert_eq!(stored.len(), RUNS, "one row per run");
        for n in 0..RUNS {
            let stored_id = &stored[&format!("run_{n}")];
            let mut mine: Vec<(u16, &serde_json::Value)> = answers
                .iter()
                .filter(|(m, _, _)| *m == n)
                .map(|(_, status, body)| (*status, body))
                .collect();
            mine.sort_by_key(|(status, _)| *status);
            assert_eq!(
                mine,
                [
                    (200, &serde_json::json!({"status": "duplicate", "id": stored_id})),
                    (202, &serde_json::json!({"status": "accepted", "id": stored_id})),
                ],
                "run_{n}: the stored event is {stored_id}"
            );
        }
    }
}

#[tokio::test]
async fn an_oversized_body_stores_nothing() {
    let app = TestApp::builder()
        .server("max_body_bytes = 2048")
        .spawn()
        .await;
    let mut body = run_event("run.succeeded", "evt_big", "run_big");
    body.extend(std::iter::repeat_n(b' ', 4096));
    assert_error(app.post_signed(&body).await, 413, "PAYLOAD_TOO_LARGE").await;
    assert_eq!(app.db().count_rows("events"), 0);
    assert_eq!(app.db().count_rows("quarantine"), 0);
    assert_eq!(app.db().count_rows("jobs"), 0);
}

/// Sabotage: another connection holds the write lock for longer than
/// `busy_timeout`, so the app's commit fails with SQLITE_BUSY. Works as root,
/// unlike a read-only file. SQLite only: `BEGIN EXCLUSIVE` and
/// `busy_timeout` are SQLite's locking; PostgreSQL locks rows, and its
/// refusal is tested with the server cut away (below).
#[tokio::test]
async fn webhook_returns_503_with_retry_after_while_the_database_is_locked() {
    let app = TestApp::builder()
        .storage("busy_timeout_ms = 200")
        .spawn()
        .await;
    let blocker = app.db().sqlite_connection();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let body = run_event("run.succeeded", "evt_locked", "run_locked");
    let resp = app.post_signed(&body).await;
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        retry_after.is_some_and(|s| s > 0),
        "Retry-After {retry_after:?}"
    );
    assert_error(resp, 503, "STORAGE_UNAVAILABLE").await;
    blocker.execute_batch("ROLLBACK").unwrap();
    assert_eq!(app.db().count_rows("events"), 0, "nothing stored");
    // The lock is gone: the sender's retry succeeds without a restart.
    let resp = app.post_signed(&body).await;
    assert_eq!(resp.status().as_u16(), 202);
    assert_eq!(app.db().count_rows("events"), 1);
}

crate::backends! {
    /// The database refuses (SQLite: a trigger fails every insert as a full
    /// disk would; PostgreSQL: the server is cut away): 503 with
    /// Retry-After, nothing stored, and the sender's retry is taken once the
    /// fault is gone, without a restart.
    #[tokio::test]
    async fn webhook_returns_503_and_stores_nothing_while_the_store_refuses_then_recovers(backend) {
        let sandbox = Sandbox::with_backend(backend);
        let (builder, fault) =
            StoreFault::around(TestApp::builder().sandbox(&sandbox), sandbox.db()).await;
        let app = builder.spawn().await;
        let db = app.db();
        fault.start(db).await;
        let body = run_event("run.failed", "evt_full", "run_full");
        let resp = app.post_signed(&body).await;
        assert!(resp.headers().contains_key("retry-after"), "Retry-After");
        let err = assert_error(resp, 503, "STORAGE_UNAVAILABLE").await;
        assert_eq!(
            err["error"], "the event could not be stored; retry later",
            "the database error stays in the log, not in the answer"
        );
        fault.clear(db).await;
        assert_eq!(db.count_rows("events"), 0);
        assert_eq!(db.count_rows("jobs"), 0);
        wait_for_async(DEADLINE, "a 202 once the store accepts again", || async {
            (app.try_post_run("run_full").await.status == 202).then_some(())
        })
        .await;
        assert_eq!(db.count_rows("events"), 1, "recovers without a restart");
    }

    /// The same fault on the quarantine: an invalid payload that cannot be
    /// kept is a 503 (retry), not a 400 (drop).
    #[tokio::test]
    async fn an_invalid_payload_that_cannot_be_quarantined_gets_503(backend) {
        let sandbox = Sandbox::with_backend(backend);
        let (builder, fault) =
            StoreFault::around(TestApp::builder().sandbox(&sandbox), sandbox.db()).await;
        let app = builder.spawn().await;
        fault.start(app.db()).await;
        let resp = app.post_signed(b"not json").await;
        assert!(resp.headers().contains_key("retry-after"), "Retry-After");
        assert_error(resp, 503, "STORAGE_UNAVAILABLE").await;
        fault.clear(app.db()).await;
        assert_eq!(app.db().count_rows("quarantine"), 0);
    }

    /// Group commit (SQLite's writer, PostgreSQL's batches): a burst of
    /// different events, all answered 202, all stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_burst_of_distinct_events_is_all_stored(backend) {
        let app = TestApp::builder().backend(backend).spawn().await;
        let reader = app.db();
        let answers = join_all((0..100).map(|i| {
            let body = run_event("run.succeeded", &format!("evt_b{i}"), &format!("run_b{i}"));
            let header = app.signature(&body);
            let client = app.client.clone();
            let url = app.webhook_url.clone();
            async move {
                client
                    .post(url)
                    .header("x-opensteer-signature", header)
                    .body(body)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                    .expect("answered")
                    .status()
                    .as_u16()
            }
        }))
        .await;
        assert!(answers.iter().all(|s| *s == 202), "{answers:?}");
        assert_eq!(reader.count_rows("events"), 100);
    }
}

/// `path` written relative to the working directory (`../../tmp/...`), as an
/// operator's `./x.db` or `../x.db` would be, without changing the working
/// directory of the test process.
fn relative_to_cwd(path: &std::path::Path) -> std::path::PathBuf {
    let cwd = std::fs::canonicalize(std::env::current_dir().unwrap()).unwrap();
    let path = std::fs::canonicalize(path.parent().unwrap())
        .unwrap()
        .join(path.file_name().unwrap());
    let mut relative = std::path::PathBuf::from(".");
    for _ in cwd.components().skip(1) {
        relative.push("..");
    }
    relative.join(path.strip_prefix("/").unwrap())
}

/// SQLite only: the instance lock sits beside the database file, which
/// links and relative paths can name in several ways; several daemons on
/// one PostgreSQL database are allowed (tests/cluster).
#[tokio::test]
async fn a_second_serve_reaching_the_same_database_by_another_path_is_refused() {
    let app = TestApp::spawn().await;
    let db_path = app.sandbox().db_path();
    let dir = app.sandbox().dir().to_path_buf();
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::os::unix::fs::symlink(&db_path, dir.join("link.db")).unwrap();
    for other in [
        dir.join("link.db"),
        relative_to_cwd(&db_path),
        dir.join("sub/../steerhook.db"),
    ] {
        let settings =
            steerhook::config::Settings::from_toml(&Config::default().toml_at(&other)).unwrap();
        let second = steerhook::startup::Application::build(settings).await;
        let Err(e) = second else {
            panic!(
                "a second app started on {} while the first serves {}",
                other.display(),
                db_path.display()
            );
        };
        assert!(
            format!("{e:#}").contains("another `steerhook serve` is already using"),
            "{}: {e:#}",
            other.display()
        );
    }
    // The first one is untouched and still answers.
    let resp = app
        .post_signed(&run_event("run.succeeded", "evt_locked", "run_locked"))
        .await;
    assert_eq!(resp.status().as_u16(), 202);
}
