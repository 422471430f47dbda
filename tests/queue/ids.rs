//! Stored ids are unique (SPEC §5): a sender that reuses an event id for
//! another run gets a second id, and each hook run names exactly one event.

use serde_json::{json, Value};

use crate::helpers::*;

fn body(sender_id: &str, run_id: &str) -> Value {
    json!({
        "id": sender_id,
        "type": "run.succeeded",
        "data": {"run": {"id": run_id, "status": "succeeded"}}
    })
}

fn rows_with_id(sandbox: &Sandbox, id: &str) -> i64 {
    sandbox
        .db()
        .query_row("SELECT count(*) FROM events WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap()
}

#[tokio::test]
async fn two_runs_sent_with_one_event_id_are_stored_and_delivered_under_two_ids() {
    let sandbox = Sandbox::new();
    let app = spawn_app(&sandbox, &Setup::without_api(), Some(manual_clock())).await;

    let (status, first) = app.post_body(&body("evt_reused", "run_one")).await;
    assert_eq!(status, 202, "{first}");
    let (status, second) = app.post_body(&body("evt_reused", "run_two")).await;
    assert_eq!(status, 202, "{second}");
    let (first, second) = (
        first["id"].as_str().unwrap().to_owned(),
        second["id"].as_str().unwrap().to_owned(),
    );
    assert_eq!(first, "evt_reused", "the first keeps the sender's id");
    assert_ne!(second, first, "the second gets an id of its own");
    assert!(
        second.starts_with("evt_reused"),
        "derived from the sender's: {second}"
    );

    // The sender's retry of the second event is still a duplicate of it.
    let (status, again) = app.post_body(&body("evt_reused", "run_two")).await;
    assert_eq!((status, again["status"].clone()), (200, json!("duplicate")));
    assert_eq!(again["id"], json!(second));

    app.drain(5).await;
    for (id, run) in [(&first, "run_one"), (&second, "run_two")] {
        assert_eq!(rows_with_id(&sandbox, id), 1, "{id} names one event");
        let doc = sandbox.hook_document(id);
        assert_eq!(doc["event"]["id"], json!(id), "STEERHOOK_EVENT_ID is {id}");
        assert_eq!(doc["event"]["runId"], json!(run));
        assert_eq!(doc["event"]["senderId"], json!("evt_reused"));
    }
    app.stop().await;
}

#[tokio::test]
async fn an_event_without_an_id_has_no_sender_id() {
    let sandbox = Sandbox::new();
    let app = spawn_app(&sandbox, &Setup::without_api(), Some(manual_clock())).await;
    let (status, answer) = app
        .post_body(&json!({"type": "run.succeeded", "data": {"runId": "run_anon"}}))
        .await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["id"].as_str().unwrap().to_owned();
    app.drain(5).await;
    let doc = sandbox.hook_document(&id);
    assert_eq!(doc["event"]["senderId"], Value::Null, "{doc}");
    assert!(doc["event"].as_object().unwrap().contains_key("senderId"));
    app.stop().await;
}
