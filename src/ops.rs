//! The operator's commands: `events list|show`, `replay`, `prune`, `doctor`.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};

use crate::clock::{format_rfc3339_ms, to_unix_ms};
use crate::config::Settings;
use crate::store::{EventDetail, EventFilter, Store};
use crate::terminal::{escape, escape_lines};

/// Clock skew `doctor` tolerates before warning, in seconds.
pub const MAX_CLOCK_SKEW_SECS: u64 = 5;

fn now_ms() -> i64 {
    to_unix_ms(SystemTime::now())
}

/// `events list`.
pub async fn events_list(
    store: &Store,
    filter: EventFilter,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let events = store
        .list_events(filter)
        .await
        .context("cannot read events")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&events)?);
        return Ok(ExitCode::SUCCESS);
    }
    if events.is_empty() {
        println!("no events");
        return Ok(ExitCode::SUCCESS);
    }
    // Escaped first (one line per event, nothing the terminal obeys), then
    // measured in characters, which is what the padding counts.
    let rows: Vec<[String; 4]> = events
        .iter()
        .map(|e| [&e.id, &e.event_type, &e.run_id, &e.status].map(|text| escape(text).into_owned()))
        .collect();
    let width = |column: usize, min: usize| {
        rows.iter()
            .map(|r| r[column].chars().count())
            .max()
            .unwrap_or(min)
            .max(min)
    };
    let (w_id, w_run) = (width(0, 2), width(2, 6));
    println!(
        "{:<w_id$}  {:<13}  {:<w_run$}  {:<24}  STATUS",
        "ID", "TYPE", "RUN ID", "RECEIVED"
    );
    for (e, [id, event_type, run_id, status]) in events.iter().zip(&rows) {
        println!(
            "{:<w_id$}  {:<13}  {:<w_run$}  {:<24}  {}",
            id,
            event_type,
            run_id,
            format_rfc3339_ms(e.received_at_ms),
            status
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn field<'a>(v: &'a serde_json::Value, keys: &[&str]) -> Option<&'a serde_json::Value> {
    keys.iter().find_map(|k| v.get(*k)).filter(|v| !v.is_null())
}

fn show_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => escape(s).into_owned(),
        other => escape(&other.to_string()).into_owned(),
    }
}

/// Renders `events show` for a terminal. Every text that came from outside
/// is escaped ([`escape`]): a payload must not drive the terminal.
pub fn render_event(ev: &EventDetail) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "event     {}", escape(&ev.id));
    if let Some(sender) = ev.sender_id.as_deref().filter(|s| *s != ev.id) {
        // SPEC §5: another stored event already held the sender's id.
        let _ = writeln!(
            s,
            "sent as   {} (an id another event holds)",
            escape(sender)
        );
    }
    let _ = writeln!(s, "type      {}", escape(&ev.event_type));
    let _ = writeln!(s, "run       {}", escape(&ev.run_id));
    let _ = writeln!(s, "status    {}", escape(&ev.status));
    let _ = writeln!(
        s,
        "received  {} from {}",
        format_rfc3339_ms(ev.received_at_ms),
        escape(ev.client_addr.as_deref().unwrap_or("?"))
    );
    let _ = writeln!(s, "signed    t={}", ev.signed_at);
    match &ev.run {
        Some(run) => {
            let _ = writeln!(s, "\nrun (from the API)");
            for (label, keys) in [
                ("status", &["status"][..]),
                ("scraper", &["scraper", "scraperName", "scraperId", "name"]),
                ("started", &["startedAt"]),
                ("finished", &["finishedAt", "completedAt"]),
                ("error", &["error"]),
            ] {
                if let Some(v) = field(run, keys) {
                    let _ = writeln!(s, "  {label:<9} {}", show_value(v));
                }
            }
            let _ = writeln!(s, "  logs      {} entries", ev.log_count);
        }
        None => {
            let _ = writeln!(s, "\nrun       not fetched");
        }
    }
    match &ev.enrichment {
        Some(e) => {
            let _ = write!(s, "enrichment {}", e.status);
            if let Some(error) = &e.error {
                let _ = write!(s, " ({}): {}", escape(&error.code), escape(&error.message));
            }
            let _ = writeln!(s);
        }
        None if ev.run.is_none() && !ev.jobs.iter().any(|j| j.kind == "fetch") => {
            let _ = writeln!(s, "enrichment none (no [opensteer] when it arrived)");
        }
        None => {}
    }
    // Pretty JSON escapes C0 controls inside strings, but not DEL, C1 or
    // bidirectional controls.
    let _ = writeln!(
        s,
        "\npayload\n{}",
        escape_lines(&serde_json::to_string_pretty(&ev.payload).unwrap_or_default())
    );
    if ev.jobs.is_empty() {
        let _ = writeln!(
            s,
            "\nno deliveries (no hook receives {})",
            escape(&ev.event_type)
        );
    }
    for job in &ev.jobs {
        let name = if job.kind == "fetch" {
            "fetch run and logs".to_owned()
        } else {
            format!("hook {}", escape(&job.hook))
        };
        if job.kind == "fetch" && job.state == "failed" {
            // What happened next, not only that it failed (SPEC §2).
            let status = ev.enrichment.as_ref().map_or("none", |e| e.status.as_str());
            let _ = write!(
                s,
                "\n{name}: gave up after {} attempt(s); hooks ran with enrichment {status}",
                job.attempts
            );
        } else {
            let _ = write!(
                s,
                "\n{name}: {} after {} attempt(s)",
                escape(&job.state),
                job.attempts
            );
        }
        if let Some(due) = job.due_at_ms {
            let _ = write!(s, ", next at {}", format_rfc3339_ms(due));
        }
        let _ = writeln!(s);
        for a in &job.attempt_log {
            let _ = write!(
                s,
                "  #{} {} {} ms  {}",
                a.attempt,
                format_rfc3339_ms(a.started_at_ms),
                a.duration_ms,
                escape(&a.outcome)
            );
            if let Some(code) = &a.exit_code {
                let _ = write!(s, " exit={code}");
            }
            if let Some(c) = &a.error_code {
                let _ = write!(s, " {}", escape(c));
            }
            if let Some(e) = &a.error {
                let _ = write!(s, ": {}", escape(e));
            }
            let _ = writeln!(s);
        }
        if let Some(last) = job.attempt_log.last() {
            for (label, out) in [("stdout", &last.stdout), ("stderr", &last.stderr)] {
                if let Some(out) = out.as_deref().filter(|o| !o.trim().is_empty()) {
                    let tail: Vec<&str> = out.lines().rev().take(10).collect();
                    let _ = writeln!(s, "  {label} (last lines):");
                    for line in tail.iter().rev() {
                        let _ = writeln!(s, "    {}", escape(line));
                    }
                }
            }
        }
    }
    s
}

/// `events show`.
pub async fn events_show(store: &Store, id: String, json: bool) -> anyhow::Result<ExitCode> {
    let ev = store
        .find_event(id.clone())
        .await
        .context("cannot read the event")?;
    let Some(ev) = ev else {
        bail!("no event with id {id:?}; `steerhook events list` shows the stored ids");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&ev)?);
    } else {
        print!("{}", render_event(&ev));
    }
    Ok(ExitCode::SUCCESS)
}

/// `replay`.
pub async fn replay(
    store: &Store,
    settings: &Settings,
    id: String,
    hook: Option<String>,
) -> anyhow::Result<ExitCode> {
    let ev = store
        .find_event(id.clone())
        .await?
        .with_context(|| format!("no event with id {id:?}"))?;
    let hooks: Vec<String> = match &hook {
        Some(h) => {
            if settings.hook(h).is_none() {
                bail!("no hook named {h:?} in the configuration");
            }
            vec![h.clone()]
        }
        None => settings
            .hooks
            .iter()
            .filter(|h| h.events.iter().any(|e| e.as_str() == ev.event_type))
            .map(|h| h.name.clone())
            .collect(),
    };
    if hooks.is_empty() {
        bail!(
            "no configured hook receives {}; nothing to replay",
            ev.event_type
        );
    }
    let enrich = settings.opensteer.is_some();
    let seq = ev.seq;
    let now = now_ms();
    let report = store
        .replay(seq, hooks, enrich, now)
        .await
        .context("cannot queue the replay")?;
    if report.refetch {
        println!("the run is fetched again first (the earlier fetch failed)");
    }
    for h in &report.queued {
        println!("queued {id} for hook {h}");
    }
    for h in &report.running {
        println!("hook {h} is delivering {id} right now; left alone");
    }
    println!("a running `steerhook serve` picks it up within a second");
    Ok(ExitCode::SUCCESS)
}

/// `prune`.
pub async fn prune(store: &Store, older_than: Duration) -> anyhow::Result<ExitCode> {
    let cutoff = now_ms() - older_than.as_millis() as i64;
    let pruned = store.prune(cutoff, true).await.context("cannot prune")?;
    println!(
        "deleted {} finished event(s) and {} quarantined body(ies) received before {}",
        pruned.events,
        pruned.quarantined,
        format_rfc3339_ms(cutoff)
    );
    Ok(ExitCode::SUCCESS)
}

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

/// `doctor`: a line per check; non-zero exit if any fails.
pub async fn doctor(settings: &Settings) -> anyhow::Result<ExitCode> {
    let mut c = Checks { failed: 0 };
    c.report("config", Ok("valid".into()));

    // Database: writable and intact.
    let db_check = match crate::startup::open_store(settings).await {
        Ok(store) => store.check().await.map_err(|e| e.to_string()),
        Err(e) => Err(format!("{e:#}")),
    };
    c.report("database", db_check);

    // Secrets: stray whitespace is almost always a copy-paste accident.
    let stray = settings
        .webhook
        .secrets
        .iter()
        .filter(|s| s.expose().trim() != s.expose() || s.expose().contains(char::is_whitespace))
        .count();
    c.report(
        "webhook secrets",
        if stray == 0 {
            Ok(format!("{} configured, no stray whitespace", settings.webhook.secrets.len()))
        } else {
            Err(format!("{stray} secret(s) contain whitespace; signatures made with the real secret will not match"))
        },
    );

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
                c.report(
                    "opensteer api",
                    match p.key {
                        crate::opensteer::KeyCheck::Accepted => Ok(format!(
                            "reachable, key accepted ({} ms)",
                            p.round_trip.as_millis()
                        )),
                        crate::opensteer::KeyCheck::Rejected => Err(format!(
                            "the API refused the key (HTTP {}); check opensteer.api_key",
                            p.status
                        )),
                        crate::opensteer::KeyCheck::Unknown => Err(format!(
                            "unexpected answer HTTP {} {}",
                            p.status,
                            p.code.unwrap_or_default()
                        )),
                    },
                );
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
        println!("\n{} check(s) failed", c.failed);
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
