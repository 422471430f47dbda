//! E-mail hooks, from the webhook to a real SMTP server on a real socket.

use std::time::Duration;

use serde_json::json;
use steerhook::dispatch::Outcome;
use steerhook::store::JobNext;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::prelude::*;
use crate::{app_on, failed_body};

/// `[smtp]` for the test server, and one e-mail hook for `run.failed`; the
/// worker stepped.
fn mail_app(sandbox: &Sandbox, smtp_port: u16) -> TestAppBuilder {
    app_on(sandbox)
        .queue("backoff_base_secs = 1")
        .smtp(smtp_port)
        .hook(
            "[[hook]]\nname = \"ops-mail\"\nkind = \"email\"\nevents = [\"run.failed\"]\n\
             to = [\"ops@example.com\"]\nlog_lines = 3\n",
        )
        .stepped()
}

#[tokio::test]
async fn failed_run_is_mailed_with_subject_recipient_error_and_the_log_tail() {
    let smtp = SmtpServer::start().await;
    let api = MockServer::start().await;
    let (event_id, run_id) = (unique("evt"), unique("run"));
    Mock::given(method("GET"))
        .and(path(format!("/runs/{run_id}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "run": {
                "id": run_id,
                "status": "failed",
                "scraperName": "price-watch",
                "error": {"message": "navigation timeout after 30s", "code": "NAV_TIMEOUT"}
            }
        })))
        .expect(1)
        .mount(&api)
        .await;
    let logs: Vec<_> = (1..=5)
        .map(|i| json!({"timestamp": format!("2025-03-01T10:00:0{i}Z"), "level": "info", "message": format!("log-line-{i}")}))
        .collect();
    Mock::given(method("GET"))
        .and(path(format!("/runs/{run_id}/logs")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"logs": logs})))
        .mount(&api)
        .await;
    let sandbox = Sandbox::new();
    let app = mail_app(&sandbox, smtp.port())
        .opensteer(&api.uri())
        .spawn()
        .await;
    app.post_accepted(&failed_body(&event_id, &run_id)).await;

    let (fetch, fetched) = app.step_ran().await;
    assert_eq!(
        (fetch.kind.as_str(), fetched),
        ("fetch", JobNext::Succeeded)
    );
    let (deliver, delivered) = app.step_ran().await;

    let attempts = app.db().attempts(deliver.id);
    assert_eq!(
        (deliver.kind.as_str(), delivered),
        ("deliver", JobNext::Succeeded),
        "attempts: {attempts:?}"
    );
    let messages = smtp.wait_for_messages(1, DEADLINE).await;
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.rcpt_to, ["ops@example.com"]);
    assert_eq!(
        message.header("Subject").as_deref(),
        Some(format!("[steerhook] run.failed {run_id} (failed)").as_str())
    );
    let body = message.body();
    assert!(
        body.contains("navigation timeout after 30s"),
        "the run's error: {body}"
    );
    for line in ["log-line-3", "log-line-4", "log-line-5"] {
        assert!(body.contains(line), "{line} in the log tail: {body}");
    }
    assert!(
        !body.contains("log-line-2"),
        "only the last log_lines lines: {body}"
    );
    assert!(body.contains(&event_id), "the event id: {body}");
    assert_eq!(attempts[0].outcome, "ok");
    assert_eq!(app.db().event_status(&event_id), "done");
}

#[tokio::test]
async fn mail_to_a_server_that_is_down_is_retried_and_delivered_once_when_it_is_back() {
    let mut smtp = SmtpServer::start().await;
    let sandbox = Sandbox::new();
    let app = mail_app(&sandbox, smtp.port()).spawn().await;
    smtp.stop().await;
    let event_id = app
        .post_accepted(&failed_body(&unique("evt"), &unique("run")))
        .await;

    let (job, first) = app.step_ran().await;

    assert!(
        matches!(first, JobNext::RetryAt(_)),
        "retried later: {first:?}"
    );
    let attempts = app.db().attempts(job.id);
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "retry");
    assert_eq!(attempts[0].error_code.as_deref(), Some("SMTP_TRANSIENT"));

    smtp.restart().await.expect("the SMTP server listens again");
    app.advance(Duration::from_secs(60));
    let (_, second) = app.step_ran().await;

    assert_eq!(second, JobNext::Succeeded);
    let messages = smtp.wait_for_messages(1, DEADLINE).await;
    assert!(matches!(
        app.step().await,
        Outcome::Idle { next_due_at: None }
    ));
    assert_eq!(messages.len(), 1, "delivered exactly once");
    assert_eq!(smtp.messages().len(), 1, "delivered exactly once");
    let db = app.db();
    let outcomes: Vec<_> = db.attempts(job.id).into_iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, ["retry", "ok"]);
    assert_eq!(db.delivery_job(&event_id, "ops-mail").state, "succeeded");
    assert_eq!(db.event_status(&event_id), "done");
}

#[tokio::test]
async fn mail_rejected_with_550_fails_the_delivery_with_the_servers_reply() {
    let smtp = SmtpServer::start().await;
    smtp.reject_rcpt("550 5.1.1 <ops@example.com>: Recipient address rejected: no such user");
    let sandbox = Sandbox::new();
    let app = mail_app(&sandbox, smtp.port()).spawn().await;
    let event_id = app
        .post_accepted(&failed_body(&unique("evt"), &unique("run")))
        .await;

    let (job, next) = app.step_ran().await;

    assert_eq!(next, JobNext::Failed, "a permanent refusal is not retried");
    let db = app.db();
    let attempts = db.attempts(job.id);
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "failed");
    assert_eq!(attempts[0].error_code.as_deref(), Some("SMTP_PERMANENT"));
    let error = attempts[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("no such user") && error.contains("550"),
        "attempts.error keeps the server's reply: {error}"
    );
    let job_row = db.delivery_job(&event_id, "ops-mail");
    assert_eq!(job_row.state, "failed");
    assert!(
        job_row
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("no such user")),
        "jobs.last_error keeps the server's reply: {:?}",
        job_row.last_error
    );
    assert_eq!(db.event_status(&event_id), "failed");
    assert!(smtp.messages().is_empty());
}

/// The mail of a `run.failed` event whose run and logs the fake answers as given.
async fn mail_for(
    run: ResponseTemplate,
    logs: Vec<(Option<&str>, ResponseTemplate)>,
    opensteer_extra: &str,
) -> String {
    let smtp = SmtpServer::start().await;
    let api = MockServer::start().await;
    let (event_id, run_id) = (unique("evt"), unique("run"));
    Mock::given(method("GET"))
        .and(path(format!("/runs/{run_id}")))
        .respond_with(run)
        .mount(&api)
        .await;
    for (cursor, answer) in logs {
        let mock = Mock::given(method("GET")).and(path(format!("/runs/{run_id}/logs")));
        let mock = match cursor {
            Some(c) => mock.and(wiremock::matchers::query_param("beforeLogCursor", c)),
            None => mock.and(wiremock::matchers::query_param_is_missing(
                "beforeLogCursor",
            )),
        };
        mock.respond_with(answer).mount(&api).await;
    }
    let sandbox = Sandbox::new();
    let app = mail_app(&sandbox, smtp.port())
        .opensteer(&api.uri())
        .opensteer_lines(opensteer_extra)
        .spawn()
        .await;
    app.post_accepted(&failed_body(&event_id, &run_id)).await;
    let (fetch, _) = app.step_ran().await;
    assert_eq!(fetch.kind.as_str(), "fetch");
    let (_, delivered) = app.step_ran().await;
    assert_eq!(delivered, JobNext::Succeeded);
    let messages = smtp.wait_for_messages(1, DEADLINE).await;
    messages[0].body().to_owned()
}

#[tokio::test]
async fn a_mail_whose_logs_stopped_early_says_they_are_incomplete_and_why() {
    let run = ResponseTemplate::new(200).set_body_json(json!({"status": "failed"}));
    let newest = ResponseTemplate::new(200).set_body_json(json!({
        "logs": [{"message": "newest-line"}],
        "nextCursor": "older"
    }));
    let gone = ResponseTemplate::new(409).set_body_json(
        json!({"error": "cursor format changed", "code": "CLOUD_CONTRACT_MISMATCH"}),
    );
    let body = mail_for(run, vec![(None, newest), (Some("older"), gone)], "").await;

    assert!(body.contains("newest-line"), "{body}");
    assert!(body.contains("Logs incomplete"), "{body}");
    assert!(
        body.contains("CLOUD_CONTRACT_MISMATCH"),
        "the reason: {body}"
    );
}

#[tokio::test]
async fn a_mail_whose_run_could_not_be_fetched_says_so_and_why() {
    let run = ResponseTemplate::new(404)
        .set_body_json(json!({"error": "no such run", "code": "NOT_FOUND"}));
    let body = mail_for(run, Vec::new(), "settle_secs = 0").await;

    assert!(body.contains("Run not fetched"), "{body}");
    assert!(body.contains("no such run"), "the reason: {body}");
}
