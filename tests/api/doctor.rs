//! `steerhook doctor` against a fake Opensteer API (wiremock) and a real SMTP
//! server: the key check, the clock-skew check from the API's Date header,
//! and the SMTP greeting.

use std::time::{Duration, SystemTime};

use wiremock::matchers::{header, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::prelude::*;
use crate::support::smtp::SmtpServer;

fn doctor(config: &Config) -> (i32, String) {
    let sandbox = Sandbox::new();
    let out = run_cli(&sandbox.write_config(config), &["doctor"], &[]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn doctor_config(api: &str, smtp_port: u16) -> Config {
    Config::default()
        .secrets(&["whsec_doctor"])
        .opensteer(api)
        .lines(
            "opensteer",
            "api_key = \"osk_doctor_key\"\nrequest_timeout_secs = 5",
        )
        .smtp(smtp_port)
}

fn line<'a>(stdout: &'a str, check: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l[6..].starts_with(check))
        .unwrap_or_else(|| panic!("no line for {check}:\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_with_an_accepted_key_a_close_clock_and_an_answering_smtp_server() {
    let api = MockServer::start().await;
    let date = httpdate::fmt_http_date(SystemTime::now());
    Mock::given(method("GET"))
        .and(header("x-api-key", "osk_doctor_key"))
        .respond_with(
            ResponseTemplate::new(404)
                .insert_header("date", date.as_str())
                .set_body_json(
                    serde_json::json!({"error": "run not found", "code": "RUN_NOT_FOUND"}),
                ),
        )
        .mount(&api)
        .await;
    let smtp = SmtpServer::start().await;
    let (code, stdout) = tokio::task::spawn_blocking({
        let cfg = doctor_config(&api.uri(), smtp.port());
        move || doctor(&cfg)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{stdout}");
    let key = line(&stdout, "opensteer api");
    assert!(
        key.starts_with("ok")
            && key.contains("key accepted")
            && key.contains("answered 404 RUN_NOT_FOUND"),
        "the status and code it saw: {key}"
    );
    assert!(line(&stdout, "clock").starts_with("ok"), "{stdout}");
    assert!(line(&stdout, "smtp").starts_with("ok"), "{stdout}");
    assert!(
        !stdout.contains("osk_doctor_key"),
        "the key is never printed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_on_a_rejected_key_a_skewed_clock_and_a_silent_smtp_port() {
    let api = MockServer::start().await;
    // Ten minutes ahead: every webhook would fail a 300 s tolerance soon.
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(600));
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(401)
                .insert_header("date", date.as_str())
                .set_body_json(
                    serde_json::json!({"error": "bad key", "code": "CLOUD_AUTH_FAILED"}),
                ),
        )
        .mount(&api)
        .await;
    let closed_port = free_port();
    let (code, stdout) = tokio::task::spawn_blocking({
        let cfg = doctor_config(&api.uri(), closed_port);
        move || doctor(&cfg)
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{stdout}");
    let key = line(&stdout, "opensteer api");
    assert!(
        key.starts_with("FAIL") && key.contains("opensteer.api_key"),
        "{key}"
    );
    let clock = line(&stdout, "clock");
    assert!(
        clock.starts_with("FAIL") && clock.contains("NTP"),
        "{clock}"
    );
    assert!(line(&stdout, "smtp").starts_with("FAIL"), "{stdout}");
    assert!(
        line(&stdout, "database").starts_with("ok"),
        "the other checks still run: {stdout}"
    );
}

/// A server that answers 404 with an empty body to every path is not the
/// API: "key accepted" there was a lie, and every fetch then failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_when_the_base_url_answers_an_empty_404_to_everything() {
    let api = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&api)
        .await;
    let smtp = SmtpServer::start().await;
    let (code, stdout) = tokio::task::spawn_blocking({
        let cfg = doctor_config(&api.uri(), smtp.port());
        move || doctor(&cfg)
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{stdout}");
    let key = line(&stdout, "opensteer api");
    assert!(
        key.starts_with("FAIL")
            && key.contains("answered 404 (empty body)")
            && key.contains("opensteer.base_url"),
        "{key}"
    );
    assert!(stdout.ends_with("1 check failed\n"), "{stdout}");
}

/// The example config's secret is public: `doctor` fails on it where the
/// daemon is reachable from elsewhere, and only notes it on loopback.
#[test]
fn doctor_fails_on_the_example_secret_on_a_public_address() {
    let config = |listen: &str| {
        Config::default()
            .listen(listen)
            .secrets(&[steerhook::config::EXAMPLE_WEBHOOK_SECRET])
    };
    let (code, stdout) = doctor(&config("0.0.0.0:8787"));
    assert_eq!(code, 1, "{stdout}");
    let secrets = line(&stdout, "webhook secrets");
    assert!(
        secrets.starts_with("FAIL")
            && secrets.contains("example secret")
            && secrets.contains("0.0.0.0:8787"),
        "{secrets}"
    );
    let (code, stdout) = doctor(&config("127.0.0.1:8787"));
    assert_eq!(code, 0, "{stdout}");
    let secrets = line(&stdout, "webhook secrets");
    assert!(
        secrets.starts_with("ok") && secrets.contains("example secret"),
        "{secrets}"
    );
    assert!(
        !stdout.contains(steerhook::config::EXAMPLE_WEBHOOK_SECRET),
        "{stdout}"
    );
}

/// A configuration that does not load is a failed check: exit 1 (SPEC §2).
#[test]
fn doctor_exits_1_with_a_fail_line_when_the_configuration_is_invalid() {
    let sandbox = Sandbox::new();
    let config = sandbox.path("steerhook.toml");
    std::fs::write(&config, "[server]\nlisten = \"nope\"\n").unwrap();
    let (code, stdout, _) = cli(&config, &["doctor"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(line(&stdout, "config").starts_with("FAIL"), "{stdout}");
    assert!(stdout.contains("server.listen"), "{stdout}");
}
