//! `doctor`: a line per check, `ok` only for what it proved (SPEC §2); exit
//! 0 when every check passed, 1 otherwise.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;

use crate::config::Settings;
use crate::opensteer::{KeyCheck, ProbeResult, PROBE_RUN_ID};
use crate::terminal::escape;

/// Clock skew `doctor` tolerates before failing, in seconds.
pub const MAX_CLOCK_SKEW_SECS: u64 = 5;

struct Checks {
    failed: usize,
}

impl Checks {
    fn report(&mut self, name: &str, result: Result<String, String>) {
        match result {
            Ok(msg) => println!("ok    {name:<22} {msg}"),
            Err(msg) => {
                self.failed += 1;
                println!("FAIL  {name:<22} {msg}");
            }
        }
    }
}

/// `doctor` when the configuration cannot be loaded: that one check fails.
pub fn doctor_config_failed(error: &anyhow::Error) -> ExitCode {
    println!("FAIL  {:<22} {error:#}", "config");
    println!("\n1 check failed; the others need a valid configuration");
    ExitCode::from(1)
}

/// The webhook secrets: stray whitespace (a copy-paste accident), and the
/// public example secret where others can reach the daemon.
fn check_secrets(settings: &Settings) -> Result<String, String> {
    let secrets = &settings.webhook.secrets;
    let stray = secrets
        .iter()
        .filter(|s| s.expose().trim() != s.expose() || s.expose().contains(char::is_whitespace))
        .count();
    if stray > 0 {
        return Err(format!(
            "{stray} secret(s) contain whitespace; signatures made with the real secret will not match"
        ));
    }
    if settings.example_secret_exposed() {
        return Err(format!(
            "webhook.secrets holds the example secret of config.example.toml, which anyone can read, \
             and server.listen {} is not a loopback address: anyone can sign webhooks; \
             use the secret your Opensteer runs are queued with",
            settings.server.listen
        ));
    }
    let mut msg = format!("{} configured, no stray whitespace", secrets.len());
    if settings.uses_example_secret() {
        msg.push_str(
            "; one is the example secret of config.example.toml (fine on loopback for the tour, replace it before exposing the port)",
        );
    }
    Ok(msg)
}

/// What the probe proved about the key, with the status and code it saw.
fn key_verdict(p: &ProbeResult, base_url: &str) -> Result<String, String> {
    let answer = format!(
        "GET {}/runs/{PROBE_RUN_ID} answered {}{}",
        base_url.trim_end_matches('/'),
        p.status,
        p.code
            .as_deref()
            .map(|c| format!(" {c}"))
            .unwrap_or_default()
    );
    let said = match &p.message {
        // An HTML error page, flattened to one line.
        Some(m) => format!(
            " ({})",
            escape(&m.split_whitespace().collect::<Vec<_>>().join(" "))
        ),
        None => " (empty body)".to_owned(),
    };
    match p.key {
        KeyCheck::Accepted => Ok(format!(
            "key accepted: {answer}, Opensteer's error for a run that does not exist ({} ms)",
            p.round_trip.as_millis()
        )),
        KeyCheck::Rejected => Err(format!(
            "the API refused the key: {answer}{said}; check opensteer.api_key"
        )),
        KeyCheck::Unknown => Err(format!(
            "the API is there but proved nothing about the key: {answer}{said}; run doctor again later"
        )),
        KeyCheck::NotOpensteer => Err(format!(
            "not an Opensteer API: {answer}{said}, not Opensteer's JSON error for a run that does not exist; \
             check opensteer.base_url (e.g. https://api.opensteer.com)"
        )),
    }
}

/// `doctor`: a line per check; exit 1 if any fails.
pub async fn doctor(settings: &Settings) -> anyhow::Result<ExitCode> {
    let mut c = Checks { failed: 0 };
    c.report("config", Ok("valid".into()));

    // Database: writable and intact.
    let db_check = match crate::startup::open_store(settings).await {
        Ok(store) => store.check().await.map_err(|e| e.to_string()),
        Err(e) => Err(format!("{e:#}")),
    };
    c.report("database", db_check);

    c.report("webhook secrets", check_secrets(settings));

    // Hooks: what each kind can prove without sending an event.
    match crate::hooks::build_sinks(settings, crate::startup::payload_dir(settings)) {
        Ok(sinks) => {
            for h in &settings.hooks {
                if let Some(sink) = sinks.get(&h.name) {
                    c.report(&format!("hook {}", h.name), sink.check().await);
                }
            }
        }
        Err(e) => c.report("hooks", Err(e.to_string())),
    }

    if let Some(opensteer) = &settings.opensteer {
        let client = opensteer
            .client(std::sync::Arc::new(crate::clock::SystemClock))
            .context("opensteer client")?;
        match client.probe().await {
            Ok(p) => {
                c.report("opensteer api", key_verdict(&p, &opensteer.base_url));
                c.report("clock", match p.server_date {
                    None => Err("the API sent no Date header; cannot compare clocks".into()),
                    Some(date) => {
                        let ours = SystemTime::now();
                        let skew = match ours.duration_since(date) {
                            Ok(d) => d,
                            Err(e) => e.duration(),
                        };
                        let allowed = Duration::from_secs(MAX_CLOCK_SKEW_SECS) + p.round_trip;
                        if skew <= allowed {
                            Ok(format!("within {} ms of the API's clock", skew.as_millis()))
                        } else {
                            Err(format!("{} s off the API's clock; webhooks will fail the {} s tolerance if this grows; run an NTP client (systemd-timesyncd, chrony)", skew.as_secs(), settings.webhook.tolerance_secs))
                        }
                    }
                });
            }
            Err(e) => c.report("opensteer api", Err(e.to_string())),
        }
    } else {
        c.report("opensteer api", Ok("not configured (no enrichment)".into()));
    }

    if let Some(smtp) = &settings.smtp {
        let server = format!("{}:{}", smtp.host, smtp.port);
        let result = match smtp.mailer() {
            Ok(mailer) => mailer
                .check()
                .await
                .map(|()| {
                    format!(
                        "{server} answers EHLO{}",
                        if smtp.username.is_some() {
                            " and accepts the login"
                        } else {
                            ""
                        }
                    )
                })
                .map_err(|e| format!("{server}: {e}")),
            Err(e) => Err(e.to_string()),
        };
        c.report("smtp", result);
    }
    if c.failed > 0 {
        println!(
            "\n{}",
            super::count(c.failed, "check failed", "checks failed")
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
