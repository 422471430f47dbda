//! `events list` and `events show`.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::clock::format_rfc3339_ms;
use crate::store::{EventDetail, EventFilter, JobDetail, JobKind, JobState, Store};
use crate::terminal::{escape, escape_lines};

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

/// What the event's hooks are told about enrichment (SPEC §6) and why not
/// more, as `events show` puts it beside the status, which only the
/// deliveries decide (SPEC §2). `None` when there is nothing to say.
pub fn enrichment_line(ev: &EventDetail) -> Option<String> {
    let fetch = ev.jobs.iter().find(|j| j.kind == JobKind::Fetch.as_str());
    match (&ev.enrichment, fetch) {
        (Some(e), _) => Some(match &e.error {
            Some(error) => format!(
                "enrichment {} ({}): {}",
                e.status,
                escape(&error.code),
                escape(&error.message)
            ),
            None => format!("enrichment {}", e.status),
        }),
        (None, None) if ev.run.is_none() => {
            Some("enrichment none (no [opensteer] when it arrived)".into())
        }
        (None, Some(f)) if is_unfinished(&f.state) => {
            Some("enrichment pending (the fetch has not finished)".into())
        }
        (None, _) => None,
    }
}

fn is_unfinished(state: &str) -> bool {
    state.parse::<JobState>().is_ok_and(JobState::is_unfinished)
}

/// The job's heading: its state, in words where the word alone says too little.
fn job_heading(ev: &EventDetail, job: &JobDetail, fetch: Option<&JobDetail>) -> String {
    let state = escape(&job.state);
    let attempts = super::count(job.attempts as usize, "attempt", "attempts");
    match job.state.parse::<JobState>() {
        // What happened next, not only that it failed (SPEC §2).
        Ok(JobState::Failed) if job.kind == JobKind::Fetch.as_str() => format!(
            "gave up after {attempts}; hooks ran with enrichment {}",
            ev.enrichment.as_ref().map_or("none", |e| e.status.as_str())
        ),
        Ok(JobState::Blocked) => {
            let when = match fetch {
                Some(f) if f.state == JobState::Running.as_str() => {
                    "the fetch is running now".to_owned()
                }
                Some(f) => match f.due_at_ms {
                    Some(due) => format!("next fetch attempt at {}", format_rfc3339_ms(due)),
                    None => format!("the fetch is {}", escape(&f.state)),
                },
                None => "no fetch is queued; `steerhook replay` queues it again".to_owned(),
            };
            format!("blocked: waits for the run and its logs to be fetched ({when})")
        }
        Ok(JobState::Skipped) => format!(
            "skipped, the hook was not started: {}",
            escape(
                job.last_error
                    .as_deref()
                    .unwrap_or("its match did not hold")
            )
        ),
        Ok(JobState::Pending) if job.attempts == 0 => match job.due_at_ms {
            Some(due) => format!("pending, due at {}", format_rfc3339_ms(due)),
            None => "pending".to_owned(),
        },
        Ok(JobState::Pending) => match job.due_at_ms {
            Some(due) => format!(
                "{state} after {attempts}, next at {}",
                format_rfc3339_ms(due)
            ),
            None => format!("{state} after {attempts}"),
        },
        _ => format!("{state} after {attempts}"),
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
    // The status is the deliveries' (SPEC §2); what the hooks got of the
    // run is beside it, not part of it.
    let _ = writeln!(s, "status    {}", escape(&ev.status));
    if let Some(line) = enrichment_line(ev) {
        let _ = writeln!(s, "{line}");
    }
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
            let _ = writeln!(s, "\nrun       not fetched (see enrichment above)");
        }
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
    let fetch = ev.jobs.iter().find(|j| j.kind == JobKind::Fetch.as_str());
    for job in &ev.jobs {
        let name = if job.kind == JobKind::Fetch.as_str() {
            "fetch run and logs".to_owned()
        } else {
            format!("hook {}", escape(&job.hook))
        };
        let _ = writeln!(s, "\n{name}: {}", job_heading(ev, job, fetch));
        if job.replays > 0 {
            let _ = writeln!(
                s,
                "  replayed {}",
                super::count(job.replays as usize, "time", "times")
            );
        }
        for a in &job.attempt_log {
            // Each replay numbers its attempts from 1 again: say which run an attempt was.
            let run = if a.replay > 0 {
                format!(" (replay {})", a.replay)
            } else {
                String::new()
            };
            let _ = write!(
                s,
                "  #{}{run} {} {} ms  {}",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job(kind: &str, state: &str) -> JobDetail {
        JobDetail {
            kind: kind.into(),
            hook: if kind == "fetch" {
                String::new()
            } else {
                "etl".into()
            },
            state: state.into(),
            replays: 0,
            attempts: 1,
            due_at_ms: None,
            last_error_code: None,
            last_error: None,
            attempt_log: Vec::new(),
        }
    }

    fn event(jobs: Vec<JobDetail>) -> EventDetail {
        EventDetail {
            seq: 1,
            id: "evt_1".into(),
            event_type: "run.succeeded".into(),
            run_id: "run_1".into(),
            received_at_ms: 0,
            signed_at: 0,
            client_addr: None,
            status: "done".into(),
            payload: serde_json::json!({}),
            run: None,
            log_count: 0,
            enrichment_error: None,
            enrichment: None,
            sender_id: None,
            jobs,
        }
    }

    #[test]
    fn the_enrichment_line_says_what_the_hooks_got_and_why_not_more() {
        use crate::domain::{Enrichment, EnrichmentStatus};
        let mut ev = event(vec![job("fetch", "failed")]);
        ev.enrichment = Some(Enrichment::because(
            EnrichmentStatus::Partial,
            "HTTP_500",
            "page 3 answered 500",
        ));
        assert_eq!(
            enrichment_line(&ev).as_deref(),
            Some("enrichment partial (HTTP_500): page 3 answered 500")
        );
        let text = render_event(&ev);
        assert!(
            text.contains("status    done\nenrichment partial (HTTP_500)"),
            "{text}"
        );
        assert!(
            text.contains(
                "fetch run and logs: gave up after 1 attempt; hooks ran with enrichment partial"
            ),
            "{text}"
        );
        ev.enrichment = Some(Enrichment::complete());
        assert_eq!(enrichment_line(&ev).as_deref(), Some("enrichment complete"));
        assert_eq!(
            enrichment_line(&event(vec![job("fetch", "running")])).as_deref(),
            Some("enrichment pending (the fetch has not finished)")
        );
        assert_eq!(
            enrichment_line(&event(vec![job("deliver", "succeeded")])).as_deref(),
            Some("enrichment none (no [opensteer] when it arrived)")
        );
    }

    #[test]
    fn a_skipped_delivery_says_why_and_a_replayed_attempt_says_which_replay() {
        let mut skipped = job("deliver", "skipped");
        skipped.last_error =
            Some("run did not match /run/scraper = products (it is \"news\")".into());
        let mut replayed = job("deliver", "succeeded");
        replayed.hook = "mail".into();
        replayed.replays = 1;
        for (n, replay) in [(1, 0), (1, 1)] {
            replayed.attempt_log.push(crate::store::AttemptDetail {
                attempt: n,
                started_at_ms: 0,
                duration_ms: 5,
                outcome: "ok".into(),
                replay,
                error_code: None,
                error: None,
                exit_code: Some(0),
                stdout: None,
                stderr: None,
            });
        }
        let text = render_event(&event(vec![skipped, replayed]));
        assert!(
            text.contains("hook etl: skipped, the hook was not started: run did not match /run/scraper = products (it is \"news\")\n"),
            "{text}"
        );
        assert!(
            text.contains("hook mail: succeeded after 1 attempt\n  replayed 1 time\n"),
            "{text}"
        );
        assert!(
            text.contains("\n  #1 1970-01-01T00:00:00.000Z 5 ms  ok exit=0\n"),
            "{text}"
        );
        assert!(
            text.contains("\n  #1 (replay 1) 1970-01-01T00:00:00.000Z 5 ms  ok exit=0\n"),
            "{text}"
        );
    }
}
