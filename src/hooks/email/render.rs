//! The message: subject, body and Message-ID, read tolerantly from the
//! document (the run and log shapes are not published).

use serde_json::Value;

/// Longest subject we send, in characters; longer ones are cut.
pub const MAX_SUBJECT_CHARS: usize = 200;
/// Longest rendering of one log entry, in characters; longer ones are cut.
pub const MAX_LOG_LINE_CHARS: usize = 500;
/// Longest rendering of the run's error, in characters.
pub const MAX_ERROR_CHARS: usize = 2000;
/// Longest part of a Message-ID taken from the event id or the hook name.
const MAX_MESSAGE_ID_PART_CHARS: usize = 64;
/// The subject used when the hook sets no `subject`.
pub const DEFAULT_SUBJECT_TEMPLATE: &str = "[steerhook] {type} {runId} ({status})";

/// The Message-ID for one event sent by one hook:
/// `<steerhook.{event id}.{hook}@{domain}>`, each part reduced to characters
/// that are safe in a Message-ID. The same inputs always give the same id.
pub fn message_id_for(event_id: &str, hook: &str, from_domain: &str) -> String {
    fn part(value: &str, fallback: &str) -> String {
        let cleaned: String = value
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .take(MAX_MESSAGE_ID_PART_CHARS)
            .collect();
        if cleaned.is_empty() {
            fallback.to_owned()
        } else {
            cleaned
        }
    }
    let domain: String = from_domain
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        .collect();
    let domain = if domain.is_empty() {
        "localhost".to_owned()
    } else {
        domain
    };
    format!(
        "<steerhook.{}.{}@{}>",
        part(event_id, "event"),
        part(hook, "hook"),
        domain
    )
}

/// The subject for an event. `template` may use `{type}`, `{runId}`,
/// `{status}`, `{eventId}`, `{scraper}` and `{hook}` (empty here; filled by
/// [`super::Mailer::send_event`]); unknown placeholders are kept as written. Control
/// characters are removed, so no value can start a new header line, and the
/// result is cut to [`MAX_SUBJECT_CHARS`].
pub fn render_subject(template: Option<&str>, doc: &Value) -> String {
    render_subject_for_hook(template, doc, "")
}

pub(super) fn render_subject_for_hook(template: Option<&str>, doc: &Value, hook: &str) -> String {
    let summary = Summary::from_doc(doc);
    let template = template.unwrap_or(DEFAULT_SUBJECT_TEMPLATE);
    let mut out = String::new();
    let mut rest = template;
    // One pass over the template: a substituted value is never expanded again.
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        let close = after.find('}');
        let value = close.and_then(|close| match &after[1..close] {
            "type" => Some(summary.event_type.clone()),
            "runId" => Some(summary.run_id.clone()),
            "status" => Some(summary.status.clone()),
            "eventId" => Some(summary.event_id.clone()),
            "scraper" => Some(summary.scraper.clone().unwrap_or_default()),
            "hook" => Some(hook.to_owned()),
            _ => None,
        });
        match (value, close) {
            (Some(value), Some(close)) => {
                out.push_str(&value);
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    let subject = strip_controls(&out);
    truncate_chars(subject.trim(), MAX_SUBJECT_CHARS)
}

/// The plain-text body: run summary, the run's error, whether the logs are
/// incomplete (or the run was not fetched) and why, the newest `log_lines`
/// log entries, and where to look for more.
pub fn render_body(doc: &Value, log_lines: usize) -> String {
    let s = Summary::from_doc(doc);
    let mut body = String::new();
    let mut line = |label: &str, value: &str| {
        body.push_str(&format!("{label:<10} {value}\n"));
    };
    line("Event:", &s.event_id);
    line("Type:", &s.event_type);
    line("Run:", &s.run_id);
    line("Status:", &s.status);
    if let Some(scraper) = &s.scraper {
        line("Scraper:", scraper);
    }
    if let Some(v) = &s.created_at {
        line("Created:", v);
    }
    if let Some(v) = &s.started_at {
        line("Started:", v);
    }
    if let Some(v) = &s.finished_at {
        line("Finished:", v);
    }
    if let Some(v) = &s.duration {
        line("Duration:", v);
    }
    if let Some(v) = &s.received_at {
        line("Received:", v);
    }
    if let Some(error) = &s.error {
        body.push_str("\nError:\n  ");
        body.push_str(&error.replace('\n', "\n  "));
        body.push('\n');
    }

    body.push('\n');
    let enrichment = doc.get("enrichment").unwrap_or(&Value::Null);
    // "CODE: message", when enrichment is not complete.
    let reason = enrichment.get("error").filter(|e| e.is_object()).map(|e| {
        let code = first_scalar(e, &["code"]).unwrap_or_default();
        let message = first_scalar(e, &["message"]).unwrap_or_default();
        truncate_chars(&one_line(&format!("{code}: {message}")), MAX_ERROR_CHARS)
    });
    let partial = enrichment.get("status").and_then(Value::as_str) == Some("partial");
    if partial {
        body.push_str(&format!(
            "Logs incomplete: {}.\n",
            reason.as_deref().unwrap_or("paging stopped early")
        ));
    }
    match doc.get("logs") {
        Some(Value::Array(entries)) if log_lines > 0 && !entries.is_empty() => {
            let shown = &entries[entries.len().saturating_sub(log_lines)..];
            // The document holds only the newest entries; logsTotal counts them all.
            let total = doc
                .get("logsTotal")
                .and_then(Value::as_u64)
                .map_or(entries.len(), |t| t as usize)
                .max(entries.len());
            if shown.len() < total {
                body.push_str(&format!(
                    "Last {} log lines (of {total}{}):\n",
                    shown.len(),
                    if partial { " fetched" } else { "" }
                ));
            } else {
                body.push_str(&format!("Last {} log lines:\n", shown.len()));
            }
            for entry in shown {
                body.push_str("  ");
                body.push_str(&render_log_entry(entry));
                body.push('\n');
            }
        }
        Some(Value::Array(entries)) if entries.is_empty() => {
            body.push_str(if partial {
                "No log lines were fetched.\n"
            } else {
                "The run has no log lines.\n"
            });
        }
        Some(Value::Array(_)) => {
            body.push_str("Log lines are not included (log_lines = 0).\n");
        }
        _ => match &reason {
            Some(reason) => body.push_str(&format!(
                "Run not fetched: {reason}. The mail shows what the webhook said.\n"
            )),
            None => body.push_str("No logs: the Opensteer API is not configured ([opensteer]).\n"),
        },
    }

    body.push_str(&format!(
        "\nMore: steerhook events show {}\n",
        if s.event_id.is_empty() {
            "<id>"
        } else {
            &s.event_id
        }
    ));
    body
}

/// One log entry on one line: `timestamp level message`, or the entry's
/// compact JSON when it has no message field.
fn render_log_entry(entry: &Value) -> String {
    let text = match entry {
        Value::String(s) => s.clone(),
        Value::Object(_) => {
            let ts = first_scalar(entry, &["timestamp", "ts", "time", "createdAt"]);
            let level = first_scalar(entry, &["level", "severity"]);
            let message = first_scalar(entry, &["message", "msg", "text", "line"]);
            match message {
                Some(message) => [ts, level.map(|l| l.to_uppercase()), Some(message)]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" "),
                None => entry.to_string(),
            }
        }
        other => other.to_string(),
    };
    truncate_chars(&one_line(&text), MAX_LOG_LINE_CHARS)
}

/// What the e-mail says about the run, each field found under any of the
/// names the tolerant reader knows.
struct Summary {
    event_id: String,
    event_type: String,
    run_id: String,
    status: String,
    scraper: Option<String>,
    created_at: Option<String>,
    started_at: Option<String>,
    finished_at: Option<String>,
    duration: Option<String>,
    received_at: Option<String>,
    error: Option<String>,
}

impl Summary {
    fn from_doc(doc: &Value) -> Self {
        let event = doc.get("event").unwrap_or(&Value::Null);
        let payload = event.get("payload").unwrap_or(&Value::Null);
        let data = payload.get("data").unwrap_or(&Value::Null);
        // Where run fields may be, best first: the fetched run, then what the
        // webhook carried. A field missing from the fetched run is still
        // taken from the webhook.
        let sources: Vec<&Value> = [doc.get("run"), data.get("run"), Some(data), Some(payload)]
            .into_iter()
            .flatten()
            .filter(|v| v.is_object())
            .collect();
        let find = |keys: &[&str]| {
            sources
                .iter()
                .find_map(|source| first_scalar(source, keys))
                .map(|v| one_line(&v))
        };

        let event_type = first_scalar(event, &["type"])
            .or_else(|| first_scalar(payload, &["type", "event"]))
            .unwrap_or_default();
        let run_id = first_scalar(event, &["runId"])
            .or_else(|| {
                doc.get("run")
                    .and_then(|r| first_scalar(r, &["id", "runId"]))
            })
            .unwrap_or_default();
        let status = find(&["status", "state"])
            .or_else(|| {
                event_type
                    .strip_prefix("run.")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "unknown".to_owned());

        let scraper_obj = sources
            .iter()
            .find_map(|s| s.get("scraper").filter(|v| v.is_object()));
        let scraper_name = find(&["scraperName"])
            .or_else(|| scraper_obj.and_then(|o| first_scalar(o, &["name"])))
            .or_else(|| find(&["scraper"]))
            .or_else(|| {
                doc.get("run")
                    .and_then(|r| first_scalar(r, &["name"]))
                    .map(|v| one_line(&v))
            });
        let scraper_id =
            find(&["scraperId"]).or_else(|| scraper_obj.and_then(|o| first_scalar(o, &["id"])));
        let scraper = match (scraper_name, scraper_id) {
            (Some(name), Some(id)) if name != id => Some(format!("{name} ({id})")),
            (Some(name), _) => Some(name),
            (None, id) => id,
        };

        let duration = sources
            .iter()
            .find_map(|s| s.get("durationMs"))
            .and_then(|v| {
                v.as_f64()
                    .map(|ms| format_duration_ms(ms.max(0.0)))
                    .or_else(|| v.as_str().map(one_line))
            });

        let error = sources
            .iter()
            .find_map(|s| error_text(s))
            .map(|e| truncate_chars(&e, MAX_ERROR_CHARS));

        Summary {
            event_id: first_scalar(event, &["id"]).unwrap_or_default(),
            event_type: one_line(&event_type),
            run_id: one_line(&run_id),
            status,
            scraper,
            created_at: find(&["createdAt"]),
            started_at: find(&["startedAt"]),
            finished_at: find(&["finishedAt", "completedAt", "endedAt"]),
            duration,
            received_at: first_scalar(event, &["receivedAt"]).map(|v| one_line(&v)),
            error,
        }
    }
}

/// The run's error: `error` as a string, or an object's `message` and `code`;
/// else `errorMessage`/`errorCode`.
fn error_text(source: &Value) -> Option<String> {
    match source.get("error") {
        Some(Value::String(s)) if !s.trim().is_empty() => return Some(s.clone()),
        Some(obj @ Value::Object(_)) => {
            let message = first_scalar(obj, &["message", "error", "detail"]);
            let code = first_scalar(obj, &["code", "type"]);
            return match (message, code) {
                (Some(m), Some(c)) => Some(format!("{m} [{c}]")),
                (Some(m), None) => Some(m),
                (None, Some(c)) => Some(c),
                (None, None) => Some(obj.to_string()),
            };
        }
        _ => {}
    }
    let message = first_scalar(source, &["errorMessage"]);
    let code = first_scalar(source, &["errorCode"]);
    match (message, code) {
        (Some(m), Some(c)) => Some(format!("{m} [{c}]")),
        (m, c) => m.or(c),
    }
}

/// The first of `keys` whose value is a non-empty string, a number or a bool.
fn first_scalar(value: &Value, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|key| match value.get(*key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

fn format_duration_ms(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        let secs = ms / 1000.0;
        if secs < 120.0 {
            format!("{secs:.1} s")
        } else {
            let whole = secs.round() as u64;
            format!("{}m {:02}s", whole / 60, whole % 60)
        }
    }
}

/// Removes every control character (CR, LF, TAB, ...): such a value can then
/// never end a header line or start another.
pub(super) fn strip_controls(value: &str) -> String {
    value.chars().filter(|c| !c.is_control()).collect()
}

/// Keeps a value on one line: line breaks become a visible `\n`, other
/// control characters are dropped.
fn one_line(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.replace("\r\n", "\n").chars() {
        match c {
            '\n' | '\r' => out.push_str("\\n"),
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// `value` cut to at most `max` characters (never inside a character), with
/// `...` marking the cut.
fn truncate_chars(value: &str, max: usize) -> String {
    if value.chars().count() <= max {
        return value.to_owned();
    }
    let keep = max.saturating_sub(3);
    let mut out: String = value.chars().take(keep).collect();
    out.push_str("...");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc_with_run() -> Value {
        json!({
            "event": {
                "id": "evt_1",
                "type": "run.failed",
                "runId": "run_123",
                "receivedAt": "2025-01-01T00:00:05Z",
                "payload": {"type": "run.failed", "data": {"runId": "run_123"}}
            },
            "run": {
                "id": "run_123",
                "status": "failed",
                "scraperName": "prices",
                "scraperId": "scr_9",
                "createdAt": "2025-01-01T00:00:00Z",
                "startedAt": "2025-01-01T00:00:01Z",
                "finishedAt": "2025-01-01T00:00:04Z",
                "durationMs": 3000,
                "error": {"message": "selector not found", "code": "E_SELECTOR"}
            },
            "logs": [
                {"timestamp": "t1", "level": "info", "message": "first"},
                {"ts": "t2", "level": "warn", "msg": "second"},
                {"time": "t3", "text": "third"},
                {"createdAt": "t4", "level": "error", "line": "fourth"},
                {"weird": true}
            ]
        })
    }

    #[test]
    fn default_subject_has_type_run_id_and_status() {
        assert_eq!(
            render_subject(None, &doc_with_run()),
            "[steerhook] run.failed run_123 (failed)"
        );
    }

    #[test]
    fn subject_template_substitutes_every_placeholder_once() {
        let subject = render_subject(
            Some("{scraper}: {status} {eventId} {runId} {type} {hook}{unknown} {"),
            &doc_with_run(),
        );
        assert_eq!(
            subject,
            "prices (scr_9): failed evt_1 run_123 run.failed {unknown} {"
        );
        // A value that looks like a placeholder is not expanded again.
        let mut doc = doc_with_run();
        doc["event"]["runId"] = json!("{status}");
        assert_eq!(render_subject(Some("{runId}"), &doc), "{status}");
        assert_eq!(
            render_subject_for_hook(Some("[{hook}] {type}"), &doc, "ops"),
            "[ops] run.failed"
        );
    }

    #[test]
    fn subject_strips_line_breaks_and_is_bounded() {
        let mut doc = doc_with_run();
        doc["event"]["runId"] = json!("run_1\r\nBcc: evil@example.com");
        let subject = render_subject(None, &doc);
        assert!(
            !subject.contains('\r') && !subject.contains('\n'),
            "{subject:?}"
        );
        // The value is kept, visibly, on the one subject line.
        assert!(
            subject.contains(r"run_1\nBcc: evil@example.com"),
            "{subject:?}"
        );

        doc["event"]["runId"] = json!("x".repeat(1000));
        let subject = render_subject(None, &doc);
        assert_eq!(subject.chars().count(), MAX_SUBJECT_CHARS);
        assert!(subject.ends_with("..."));
    }

    #[test]
    fn subject_status_falls_back_to_the_event_type_when_nothing_says_it() {
        let doc = json!({"event": {"id": "e", "type": "run.succeeded", "runId": "r", "payload": {}},
                         "run": null, "logs": null});
        assert_eq!(
            render_subject(None, &doc),
            "[steerhook] run.succeeded r (succeeded)"
        );
        let doc = json!({});
        assert_eq!(render_subject(None, &doc), "[steerhook]   (unknown)");
    }

    #[test]
    fn body_has_summary_error_and_only_the_last_log_lines() {
        let body = render_body(&doc_with_run(), 3);
        for expected in [
            "Event:     evt_1",
            "Type:      run.failed",
            "Run:       run_123",
            "Status:    failed",
            "Scraper:   prices (scr_9)",
            "Started:   2025-01-01T00:00:01Z",
            "Finished:  2025-01-01T00:00:04Z",
            "Duration:  3.0 s",
            "selector not found [E_SELECTOR]",
            "Last 3 log lines (of 5):",
            "  t3 third\n",
            "  t4 ERROR fourth\n",
            "  {\"weird\":true}\n",
            "steerhook events show evt_1",
        ] {
            assert!(body.contains(expected), "missing {expected:?} in:\n{body}");
        }
        assert!(!body.contains("first"), "{body}");
        assert!(!body.contains("second"), "{body}");
    }

    #[test]
    fn body_reads_the_run_from_the_webhook_payload_when_run_is_null() {
        let shapes = [
            json!({"data": {"run": {"status": "failed", "scraper": "news", "error": "boom"}}}),
            json!({"data": {"status": "failed", "scraperName": "news", "error": "boom"}}),
            json!({"status": "failed", "scraper": {"name": "news"}, "error": {"message": "boom"}}),
        ];
        for payload in shapes {
            let doc = json!({
                "event": {"id": "evt_2", "type": "run.failed", "runId": "run_9", "payload": payload},
                "run": null,
                "logs": null
            });
            let body = render_body(&doc, 20);
            for expected in [
                "Status:    failed",
                "Scraper:   news",
                "boom",
                "No logs: the Opensteer API is not configured",
            ] {
                assert!(
                    body.contains(expected),
                    "missing {expected:?} for {payload}:\n{body}"
                );
            }
            assert_eq!(
                render_subject(None, &doc),
                "[steerhook] run.failed run_9 (failed)"
            );
        }
    }

    #[test]
    fn body_keeps_each_log_entry_on_one_bounded_line() {
        let doc = json!({
            "event": {"id": "e", "type": "run.failed", "runId": "r"},
            "run": {"status": "failed", "completedAt": "done-at"},
            "logs": ["plain string\nsecond line", {"message": "y".repeat(2000)}]
        });
        let body = render_body(&doc, 10);
        assert!(body.contains("  plain string\\nsecond line\n"), "{body}");
        assert!(body.contains("Finished:  done-at"), "{body}");
        let long = body.lines().find(|l| l.contains("yyy")).unwrap_or_default();
        assert_eq!(long.trim().chars().count(), MAX_LOG_LINE_CHARS);
    }

    #[test]
    fn body_says_when_logs_are_incomplete_or_the_run_was_not_fetched() {
        let mut doc = doc_with_run();
        doc["logsTotal"] = json!(450);
        doc["enrichment"] = json!({"status": "partial",
            "error": {"code": "HTTP_500", "message": "page 2 answered 500"}});
        let body = render_body(&doc, 2);
        assert!(
            body.contains("Logs incomplete: HTTP_500: page 2 answered 500."),
            "{body}"
        );
        assert!(
            body.contains("Last 2 log lines (of 450 fetched):"),
            "{body}"
        );

        let doc = json!({
            "event": {"id": "e", "type": "run.failed", "runId": "r", "payload": {}},
            "run": null, "logs": null,
            "enrichment": {"status": "none", "error": {"code": "HTTP_404", "message": "no such run"}}
        });
        let body = render_body(&doc, 2);
        assert!(
            body.contains("Run not fetched: HTTP_404: no such run."),
            "{body}"
        );
        assert!(!body.contains("Logs incomplete"), "{body}");
    }

    #[test]
    fn body_says_when_there_are_no_log_lines() {
        let mut doc = doc_with_run();
        doc["logs"] = json!([]);
        assert!(render_body(&doc, 5).contains("The run has no log lines."));
        assert!(render_body(&doc_with_run(), 0).contains("log_lines = 0"));
    }

    #[test]
    fn message_id_is_stable_and_sanitised() {
        let a = message_id_for("evt_1", "ops-mail", "example.com");
        assert_eq!(a, "<steerhook.evt_1.ops-mail@example.com>");
        assert_eq!(a, message_id_for("evt_1", "ops-mail", "example.com"));
        assert_ne!(a, message_id_for("evt_1", "other", "example.com"));
        assert_eq!(
            message_id_for("a b>\r\n<c", "", ""),
            "<steerhook.a-b----c.hook@localhost>"
        );
    }
}
