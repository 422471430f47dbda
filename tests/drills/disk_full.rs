//! Disk full, short version: the group-commit writer answers EVERY request
//! of a failed batch with 503 and Retry-After (not only the one whose insert
//! failed), stores nothing of it, and takes the senders' retries once the
//! fault is gone, without a restart. The fault is a trigger that fails every
//! insert the way SQLITE_FULL would; `scripts/disk-full-drill.sh` fills a
//! real tmpfs. (tests/api/storage.rs has the one-request version.) SQLite
//! only: a full disk is the local file's fault and the writer thread's group
//! commit is SQLite's; PostgreSQL's refusal (its server cut away) is in
//! tests/api/storage.rs on both backends.

use futures_util::future::join_all;

use crate::support::prelude::*;

const N: usize = 20;

async fn post_all(app: &TestApp, bodies: &[Vec<u8>]) -> Vec<(u16, Option<String>, String)> {
    join_all(bodies.iter().map(|b| {
        let webhook = app.webhook();
        async move {
            let answer = webhook
                .try_post_signed(b)
                .await
                .expect("the request is answered");
            (answer.status, answer.retry_after, answer.text)
        }
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_request_of_a_failed_group_commit_gets_503_and_all_succeed_once_the_disk_recovers() {
    let sandbox = Sandbox::new();
    let hook = "[[hook]]\nname = \"etl\"\nkind = \"shell\"\nevents = [\"run.succeeded\"]\n\
                command = [\"/bin/true\"]\n";
    let app = TestApp::builder()
        .sandbox(&sandbox)
        .system_clock()
        .hook(hook)
        .spawn()
        .await;
    let db = sandbox.db();
    db.execute_batch(
        "CREATE TRIGGER sabotage BEFORE INSERT ON events
         BEGIN SELECT RAISE(FAIL, 'database or disk is full (sabotage)'); END;",
    );
    let bodies: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            run_event(
                "run.succeeded",
                &format!("evt_full_{i:02}"),
                &format!("full_{i:02}"),
            )
        })
        .collect();

    let answers = post_all(&app, &bodies).await;
    for (i, (status, retry_after, text)) in answers.iter().enumerate() {
        assert_eq!(*status, 503, "request {i}: {text}");
        assert!(
            retry_after
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|s| s > 0),
            "request {i}: Retry-After {retry_after:?}"
        );
        assert!(text.contains("STORAGE_UNAVAILABLE"), "request {i}: {text}");
    }
    assert_eq!(db.count("SELECT count(*) FROM events"), 0, "nothing stored");
    assert_eq!(db.count("SELECT count(*) FROM jobs"), 0, "no job stored");

    // The disk has room again: every sender's retry is taken, no restart.
    db.execute_batch("DROP TRIGGER sabotage");
    let answers = post_all(&app, &bodies).await;
    for (i, (status, _, text)) in answers.iter().enumerate() {
        assert_eq!(*status, 202, "retry {i}: {text}");
        assert!(text.contains("accepted"), "retry {i}: {text}");
    }
    assert_eq!(db.count("SELECT count(*) FROM events"), N as i64);
    // An event's jobs are made when the worker next claims (until then the
    // event waits in `unexpanded`), so count both, in one statement.
    assert_eq!(
        db.count(
            "SELECT (SELECT count(*) FROM jobs WHERE kind = 'deliver')
                  + (SELECT count(*) FROM unexpanded)"
        ),
        N as i64,
        "each event stored with its job, made or still to be made"
    );
    app.stop().await;
}
