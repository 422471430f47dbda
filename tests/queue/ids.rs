//! Stored ids are unique (SPEC §5): a sender that reuses an event id for
//! another run gets a second id, and each hook run names exactly one event.

use serde_json::{json, Value};

use crate::queue_app;
use crate::support::prelude::*;

fn body(sender_id: &str, run_id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": sender_id,
        "type": "run.succeeded",
        "data": {"run": {"id": run_id, "status": "succeeded"}}
    }))
    .unwrap()
}

/// Posts `body`; the status and the JSON answer.
async fn post(app: &TestApp, body: Vec<u8>) -> (u16, Value) {
    let r = app.post_signed(body).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

crate::backends! {
    #[tokio::test]
    async fn two_runs_sent_with_one_event_id_are_stored_and_delivered_under_two_ids(backend) {
        let sandbox = Sandbox::with_backend(backend);
        let app = queue_app(&sandbox, None).stepped().spawn().await;

        let (status, first) = post(&app, body("evt_reused", "run_one")).await;
        assert_eq!(status, 202, "{first}");
        let (status, second) = post(&app, body("evt_reused", "run_two")).await;
        assert_eq!(status, 202, "{second}");
        let (first, second) = (
            first["id"].as_str().unwrap().to_owned(),
            second["id"].as_str().unwrap().to_owned(),
        );
        assert_eq!(first, "evt_reused", "the first keeps the sender's id");
        assert_ne!(second, first, "the second gets an id of its own");
        assert!(
            second.starts_with("evt_reused~"),
            "derived from the sender's: {second}"
        );

        // The sender's retry of the second event is still a duplicate of it.
        let (status, again) = post(&app, body("evt_reused", "run_two")).await;
        assert_eq!((status, again["status"].clone()), (200, json!("duplicate")));
        assert_eq!(again["id"], json!(second));

        app.drain(5).await;
        for (id, run) in [(&first, "run_one"), (&second, "run_two")] {
            assert_eq!(
                sandbox
                    .db()
                    .query_one::<i64>("SELECT count(*) FROM events WHERE id = $1", &[id]),
                1,
                "{id} names one event"
            );
            let doc = sandbox.hook_document(id);
            assert_eq!(doc["event"]["id"], json!(id), "STEERHOOK_EVENT_ID is {id}");
            assert_eq!(doc["event"]["runId"], json!(run));
            assert_eq!(doc["event"]["senderId"], json!("evt_reused"));
        }
        app.stop().await;
    }
}

crate::backends! {
    #[tokio::test]
    async fn an_event_without_an_id_has_a_null_sender_id(backend) {
        let sandbox = Sandbox::with_backend(backend);
        let app = queue_app(&sandbox, None).stepped().spawn().await;
        let body = serde_json::to_vec(&json!({"type": "run.succeeded", "data": {"runId": "run_anon"}}))
            .unwrap();
        let id = app.post_accepted(body).await;
        app.drain(5).await;
        let doc = sandbox.hook_document(&id);
        assert_eq!(doc["event"]["senderId"], Value::Null, "{doc}");
        assert!(doc["event"].as_object().unwrap().contains_key("senderId"));
        app.stop().await;
    }
}
