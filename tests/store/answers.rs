//! SQLite only: the answers of one group commit reach each thread that
//! asked for them (an HTTP worker: one thread, a `LocalSet`) as one
//! message, and every insert still gets its own answer. PostgreSQL answers
//! each insert where it was made.

use steerhook::store::{InsertOutcome, Routing, Store};

use crate::support::db::TestDb;
use crate::support::store::event;

/// The store on a SQLite file of its own, opened outside the runtimes the
/// tests answer on.
fn open(db: &TestDb) -> Store {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(db.open(Routing::default()))
}

/// A current-thread runtime with a `LocalSet`, as an actix-web worker has.
fn on_a_worker_like_runtime<F: std::future::Future>(store: &Store, f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, async {
        store.serve_answers_on_this_thread();
        f.await
    })
}

#[test]
fn concurrent_inserts_on_one_thread_each_get_their_own_answer() {
    let db = TestDb::sqlite();
    let store = open(&db);
    let outcomes = on_a_worker_like_runtime(&store, async {
        // 64 new events and, interleaved, a second copy of the first 32.
        let calls = (0..96).map(|i| {
            let store = store.clone();
            async move { (i, store.insert_event(event(i % 64)).await.unwrap()) }
        });
        futures_util::future::join_all(calls).await
    });
    for (i, outcome) in outcomes {
        let id = format!("evt_{}", i % 64);
        match outcome {
            InsertOutcome::Accepted { id: got } => assert_eq!(got, id, "call {i}"),
            InsertOutcome::Duplicate { id: got } => {
                assert_eq!(got, id, "call {i}");
            }
        }
    }
    let stored = db.count("SELECT count(*) FROM events");
    assert_eq!(stored, 64);
}

#[test]
fn a_thread_whose_runtime_was_replaced_still_gets_answers() {
    let db = TestDb::sqlite();
    let store = open(&db);
    let first = on_a_worker_like_runtime(&store, store.insert_event(event(1)));
    assert_eq!(
        first.unwrap(),
        InsertOutcome::Accepted { id: "evt_1".into() }
    );
    // The first runtime, and the task behind this thread's route, are gone.
    let second = on_a_worker_like_runtime(&store, store.insert_event(event(2)));
    assert_eq!(
        second.unwrap(),
        InsertOutcome::Accepted { id: "evt_2".into() }
    );
    let again = on_a_worker_like_runtime(&store, store.insert_event(event(2)));
    assert_eq!(
        again.unwrap(),
        InsertOutcome::Duplicate { id: "evt_2".into() }
    );
}
