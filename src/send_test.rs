//! `steerhook send-test`: one correctly signed, realistic sample webhook.

use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::cli::Cli;
use crate::commands::{load_settings, runtime, unix_now};
use crate::domain::EventType;
use crate::signature::{sign, SIGNATURE_HEADER};

/// A realistic body for `event_type` about `run_id`.
pub fn sample_body(event_type: EventType, run_id: &str, now_secs: u64) -> serde_json::Value {
    let finished = crate::clock::format_rfc3339_ms(now_secs as i64 * 1000);
    let started = crate::clock::format_rfc3339_ms((now_secs as i64 - 42) * 1000);
    let (status, error) = match event_type {
        EventType::RunSucceeded => ("succeeded", serde_json::Value::Null),
        EventType::RunFailed => (
            "failed",
            serde_json::json!({"code": "SCRAPER_ERROR", "message": "Timed out waiting for selector .price"}),
        ),
    };
    serde_json::json!({
        "id": format!("evt_test_{}", uuid::Uuid::new_v4().simple()),
        "type": event_type.as_str(),
        "createdAt": finished,
        "data": {
            "run": {
                "id": run_id,
                "status": status,
                "scraperId": "scr_steerhook_sample",
                "startedAt": started,
                "finishedAt": finished,
                "error": error,
            }
        }
    })
}

/// Sends the sample and prints the answer; exit 0 only on 2xx.
pub fn run(
    cli: &Cli,
    url: Option<String>,
    secret: Option<String>,
    event_type: EventType,
    run_id: Option<String>,
) -> anyhow::Result<ExitCode> {
    let (url, secret) = match (url, secret) {
        (Some(u), Some(s)) => (u, s),
        (url, secret) => {
            let settings = load_settings(cli)?;
            let url = url.unwrap_or_else(|| {
                let mut addr = settings.server.listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("http://{addr}{}", settings.server.webhook_path)
            });
            let secret = secret.unwrap_or_else(|| settings.webhook.secrets[0].expose().to_owned());
            (url, secret)
        }
    };
    let now = unix_now();
    let run_id = run_id.unwrap_or_else(|| format!("run_test_{}", uuid::Uuid::new_v4().simple()));
    let body = serde_json::to_vec(&sample_body(event_type, &run_id, now))?;
    let header = sign(&secret, now, &body);
    let (status, text) = runtime()?.block_on(async {
        let resp = reqwest::Client::new()
            .post(&url)
            .header(SIGNATURE_HEADER, header)
            .header("content-type", "application/json")
            .body(body)
            .timeout(std::time::Duration::from_secs(30))
            .send()
            .await
            .with_context(|| format!("cannot reach {url}; is `steerhook serve` running?"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        anyhow::Ok((status, text))
    })?;
    println!("POST {url}\nevent {event_type} run {run_id}\n{status}\n{text}");
    if !status.is_success() {
        bail!("the daemon answered {status}");
    }
    Ok(ExitCode::SUCCESS)
}
