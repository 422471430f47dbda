//! The e-mail hook's `Mailer` on its own, against a real SMTP server on a
//! real socket.

use std::time::Duration;

use serde_json::{json, Value};
use steerhook::hooks::email::{
    EmailError, EmailHookSettings, EmailSpec, Mailer, SmtpSecurity, SmtpSettings,
};
use steerhook::secret::Secret;
use tokio::net::TcpListener;

use crate::support::prelude::*;

fn smtp_settings(port: u16) -> SmtpSettings {
    SmtpSettings {
        host: "127.0.0.1".into(),
        port,
        security: SmtpSecurity::None,
        username: None,
        password: None,
        from: "steerhook <steerhook@example.test>".into(),
        timeout: Duration::from_secs(10),
    }
}

fn spec(to: &[&str]) -> EmailSpec {
    EmailSpec {
        hook: "ops-mail".into(),
        settings: EmailHookSettings {
            to: to.iter().map(|s| s.to_string()).collect(),
            subject: None,
            log_lines: 3,
        },
    }
}

fn failed_run_doc(event_id: &str, run_id: &str) -> Value {
    json!({
        "event": {
            "id": event_id,
            "type": "run.failed",
            "runId": run_id,
            "receivedAt": "2025-03-01T10:00:05Z",
            "payload": {"type": "run.failed", "id": event_id, "data": {"runId": run_id}}
        },
        "run": {
            "id": run_id,
            "status": "failed",
            "scraperName": "price-watch",
            "startedAt": "2025-03-01T10:00:00Z",
            "finishedAt": "2025-03-01T10:00:04Z",
            "error": {"message": "navigation timeout after 30s", "code": "NAV_TIMEOUT"}
        },
        "logs": [
            {"timestamp": "2025-03-01T10:00:00Z", "level": "info", "message": "log-line-1 starting"},
            {"timestamp": "2025-03-01T10:00:01Z", "level": "info", "message": "log-line-2 opened page"},
            {"timestamp": "2025-03-01T10:00:02Z", "level": "info", "message": "log-line-3 clicked"},
            {"timestamp": "2025-03-01T10:00:03Z", "level": "warn", "message": "log-line-4 slow"},
            {"timestamp": "2025-03-01T10:00:04Z", "level": "error", "message": ".log-line-5 gave up"}
        ]
    })
}

fn mailer(settings: &SmtpSettings) -> Mailer {
    Mailer::new(settings).expect("valid settings")
}

#[tokio::test]
async fn email_reaches_the_server_with_recipients_subject_summary_and_last_log_lines() {
    let server = SmtpServer::start().await;
    let mailer = mailer(&smtp_settings(server.port()));
    let doc = failed_run_doc("evt_100", "run_123");

    let sent = mailer
        .send_event(
            &spec(&["ops@example.com", "Dev Team <dev@example.com>"]),
            &doc,
            "evt_100",
        )
        .await
        .expect("sent");

    let messages = server.wait_for_messages(1, DEADLINE).await;
    let m = &messages[0];
    assert_eq!(m.mail_from, "steerhook@example.test");
    assert_eq!(m.rcpt_to, ["ops@example.com", "dev@example.com"]);
    assert_eq!(
        m.header("Subject").as_deref(),
        Some("[steerhook] run.failed run_123 (failed)")
    );
    assert_eq!(sent.subject, "[steerhook] run.failed run_123 (failed)");
    assert_eq!(
        m.header("Message-ID").as_deref(),
        Some(sent.message_id.as_str())
    );
    assert_eq!(sent.message_id, "<steerhook.evt_100.ops-mail@example.test>");
    assert!(m.header("Date").is_some(), "no Date header: {}", m.data);
    assert!(
        sent.server_reply.starts_with("250"),
        "{}",
        sent.server_reply
    );

    let body = m.body();
    for expected in [
        "evt_100",
        "run.failed",
        "run_123",
        "Status:    failed",
        "price-watch",
        "2025-03-01T10:00:04Z",
        "navigation timeout after 30s [NAV_TIMEOUT]",
        "Last 3 log lines (of 5):",
        "log-line-3 clicked",
        "WARN log-line-4 slow",
        // The leading dot survives SMTP dot-stuffing.
        "ERROR .log-line-5 gave up",
        "steerhook events show evt_100",
    ] {
        assert!(
            body.contains(expected),
            "missing {expected:?} in body:\n{body}"
        );
    }
    for older in ["log-line-1", "log-line-2"] {
        assert!(
            !body.contains(older),
            "older line {older:?} in body:\n{body}"
        );
    }
}

#[tokio::test]
async fn custom_subject_template_is_rendered_with_hook_and_scraper() {
    let server = SmtpServer::start().await;
    let mailer = mailer(&smtp_settings(server.port()));
    let mut spec = spec(&["ops@example.com"]);
    spec.settings.subject = Some("{hook}: {scraper} {status} ({eventId}, {runId})".into());

    let sent = mailer
        .send_event(&spec, &failed_run_doc("evt_7", "run_7"), "evt_7")
        .await
        .expect("sent");

    let messages = server.wait_for_messages(1, DEADLINE).await;
    let expected = "ops-mail: price-watch failed (evt_7, run_7)";
    assert_eq!(messages[0].header("Subject").as_deref(), Some(expected));
    assert_eq!(sent.subject, expected);
}

#[tokio::test]
async fn resending_the_same_event_carries_the_same_message_id() {
    let server = SmtpServer::start().await;
    let mailer = mailer(&smtp_settings(server.port()));
    let doc = failed_run_doc("evt_same", "run_same");

    let first = mailer
        .send_event(&spec(&["ops@example.com"]), &doc, "evt_same")
        .await;
    let second = mailer
        .send_event(&spec(&["ops@example.com"]), &doc, "evt_same")
        .await;

    let messages = server.wait_for_messages(2, DEADLINE).await;
    let ids: Vec<_> = messages.iter().map(|m| m.header("Message-ID")).collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(
        first.expect("first").message_id,
        second.expect("second").message_id
    );
    let mut other_hook = spec(&["ops@example.com"]);
    other_hook.hook = "other".into();
    let third = mailer
        .send_event(&other_hook, &doc, "evt_same")
        .await
        .expect("third");
    assert_ne!(Some(third.message_id), ids[0]);
}

#[tokio::test]
async fn send_is_transient_while_the_server_is_down_and_succeeds_once_it_is_back() {
    let mut server = SmtpServer::start().await;
    let mailer = mailer(&smtp_settings(server.port()));
    let doc = failed_run_doc("evt_down", "run_down");
    server.stop().await;

    let err = mailer
        .send_event(&spec(&["ops@example.com"]), &doc, "evt_down")
        .await
        .expect_err("server is down");
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(err.code(), "SMTP_TRANSIENT");
    assert!(
        err.to_string().contains(&server.port().to_string()),
        "{err}"
    );
    assert!(err.to_string().to_lowercase().contains("refused"), "{err}");

    server.restart().await.expect("rebind the same port");
    mailer
        .send_event(&spec(&["ops@example.com"]), &doc, "evt_down")
        .await
        .expect("server is back");
    server.wait_for_messages(1, DEADLINE).await;
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn rcpt_rejected_with_550_is_permanent_and_keeps_the_server_text() {
    let server = SmtpServer::start().await;
    server.reject_rcpt("550 5.1.1 mailbox unavailable");
    let mailer = mailer(&smtp_settings(server.port()));

    let err = mailer
        .send_event(
            &spec(&["nobody@example.com"]),
            &failed_run_doc("e", "r"),
            "e",
        )
        .await
        .expect_err("rejected");

    assert!(matches!(err, EmailError::Permanent(_)), "{err:?}");
    assert!(!err.is_transient());
    assert_eq!(err.code(), "SMTP_PERMANENT");
    let text = err.to_string();
    assert!(text.contains("550"), "{text}");
    assert!(text.contains("mailbox unavailable"), "{text}");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn replies_451_are_transient_at_rcpt_and_at_data() {
    let server = SmtpServer::start().await;
    let mailer = mailer(&smtp_settings(server.port()));
    let doc = failed_run_doc("e", "r");

    server.reject_rcpt("451 4.3.0 try later");
    let err = mailer
        .send_event(&spec(&["ops@example.com"]), &doc, "e")
        .await
        .expect_err("deferred at RCPT");
    assert!(err.is_transient(), "{err:?}");
    assert!(
        err.to_string().contains("451") && err.to_string().contains("try later"),
        "{err}"
    );

    server.accept_all();
    server.reject_data("451 4.3.0 queue full");
    let err = mailer
        .send_event(&spec(&["ops@example.com"]), &doc, "e")
        .await
        .expect_err("deferred at DATA");
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("queue full"), "{err}");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn configured_credentials_reach_the_server_and_the_password_never_prints() {
    let server = SmtpServer::start().await;
    let mut settings = smtp_settings(server.port());
    settings.username = Some("mailer-user".into());
    settings.password = Some(Secret::new("pa55-w0rd-secret"));
    let mailer = mailer(&settings);

    mailer
        .send_event(&spec(&["ops@example.com"]), &failed_run_doc("e", "r"), "e")
        .await
        .expect("sent");
    server.wait_for_messages(1, DEADLINE).await;

    let auths = server.auths();
    assert_eq!(auths.len(), 1, "{auths:?}");
    assert_eq!(auths[0].username, "mailer-user");
    assert_eq!(auths[0].password, "pa55-w0rd-secret");

    server.reject_rcpt("550 5.7.1 relay denied");
    let err = mailer
        .send_event(&spec(&["ops@example.com"]), &failed_run_doc("e", "r"), "e")
        .await
        .expect_err("rejected");
    for printed in [
        format!("{settings:?}"),
        format!("{mailer:?}"),
        format!("{err:?}"),
        err.to_string(),
    ] {
        assert!(
            !printed.contains("pa55-w0rd-secret"),
            "password printed: {printed}"
        );
    }
}

#[tokio::test]
async fn no_auth_is_attempted_without_a_username() {
    let server = SmtpServer::start().await;
    mailer(&smtp_settings(server.port()))
        .send_event(&spec(&["ops@example.com"]), &failed_run_doc("e", "r"), "e")
        .await
        .expect("sent");
    server.wait_for_messages(1, DEADLINE).await;
    assert!(server.auths().is_empty());
}

#[tokio::test]
async fn a_run_id_with_crlf_cannot_inject_a_header() {
    let server = SmtpServer::start().await;
    let mailer = mailer(&smtp_settings(server.port()));
    let doc = failed_run_doc("evt_inj", "run_1\r\nBcc: attacker@evil.test");

    let sent = mailer
        .send_event(&spec(&["ops@example.com"]), &doc, "evt_inj")
        .await
        .expect("sent");

    let messages = server.wait_for_messages(1, DEADLINE).await;
    let m = &messages[0];
    assert_eq!(m.rcpt_to, ["ops@example.com"]);
    assert!(m.header("Bcc").is_none(), "injected header in:\n{}", m.data);
    assert!(
        !m.head().contains("\r\nBcc:"),
        "injected header line in:\n{}",
        m.head()
    );
    assert!(!sent.subject.contains(['\r', '\n']), "{:?}", sent.subject);
}

#[tokio::test]
async fn an_invalid_recipient_is_permanent_and_nothing_is_sent() {
    let server = SmtpServer::start().await;
    let mailer = mailer(&smtp_settings(server.port()));

    let err = mailer
        .send_event(&spec(&["not an address"]), &failed_run_doc("e", "r"), "e")
        .await
        .expect_err("invalid recipient");

    assert!(matches!(err, EmailError::Permanent(_)), "{err:?}");
    assert!(err.to_string().contains("not an address"), "{err}");
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn a_server_that_never_greets_is_transient_after_the_timeout() {
    // Bound but never accepted: the kernel completes the TCP handshake,
    // then nothing is ever said.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut settings = smtp_settings(silent.local_addr().expect("addr").port());
    settings.timeout = Duration::from_millis(300);

    let err = mailer(&settings)
        .send_event(&spec(&["ops@example.com"]), &failed_run_doc("e", "r"), "e")
        .await
        .expect_err("timed out");

    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("within"), "{err}");
}

#[tokio::test]
async fn implicit_tls_against_a_plaintext_server_is_a_transient_tls_failure() {
    let server = SmtpServer::start().await;
    let mut settings = smtp_settings(server.port());
    settings.security = SmtpSecurity::Tls;

    let err = mailer(&settings)
        .send_event(&spec(&["ops@example.com"]), &failed_run_doc("e", "r"), "e")
        .await
        .expect_err("handshake fails");

    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("smtp.security"), "{err}");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn required_starttls_not_offered_is_permanent_and_sends_nothing() {
    let server = SmtpServer::start().await;
    let mut settings = smtp_settings(server.port());
    settings.security = SmtpSecurity::StartTls;
    settings.username = Some("u".into());
    settings.password = Some(Secret::new("never-in-clear"));

    let err = mailer(&settings)
        .send_event(&spec(&["ops@example.com"]), &failed_run_doc("e", "r"), "e")
        .await
        .expect_err("no STARTTLS");

    assert!(matches!(err, EmailError::Permanent(_)), "{err:?}");
    assert!(err.to_string().contains("STARTTLS"), "{err}");
    assert!(server.auths().is_empty(), "credentials sent in clear");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn check_greets_and_authenticates_and_fails_transiently_when_down() {
    let mut server = SmtpServer::start().await;
    let mut settings = smtp_settings(server.port());
    settings.username = Some("doctor".into());
    settings.password = Some(Secret::new("s3cret"));
    let mailer = mailer(&settings);

    mailer.check().await.expect("server up");
    assert_eq!(server.auths().len(), 1);
    assert!(server.messages().is_empty());

    server.stop().await;
    let err = mailer.check().await.expect_err("server down");
    assert!(err.is_transient(), "{err:?}");
}
