//! The JSON document a hook receives (SPEC §6), built once per delivery
//! attempt from the stored event and run. The logs are not in it: they are
//! streamed from the store into the attempt's payload file (a run may have
//! hundreds of megabytes of them); the document holds only the newest few
//! that a summary (an e-mail) shows.

use std::io::Write;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// The document every hook kind receives:
/// `{"event": {"id","senderId","type","runId","receivedAt","payload"}, "run": ..,
/// "logs": .., "enrichment": ..}`, written by [`HookDocument::write_to`].
///
/// The payload, the run and each log entry stay the JSON text they were
/// stored as (verified at ingest, or as the API sent them), so writing the
/// document never re-encodes them.
#[derive(Debug, Clone)]
pub struct HookDocument {
    /// The event.
    pub event: DocumentEvent,
    /// The run object from the API, or null without enrichment.
    pub run: Option<Box<RawValue>>,
    /// The newest log entries, oldest first, as many as a summary asked
    /// for (not all of them: see [`HookDocument::logs_total`]); `None` when
    /// the document's `logs` is null.
    pub logs: Option<Vec<Box<RawValue>>>,
    /// How many entries the document's `logs` holds in all; counted only
    /// for a hook that reads a summary (0 otherwise).
    pub logs_total: u64,
    /// Whether `run` and `logs` are all there is (SPEC §6).
    pub enrichment: Enrichment,
}

/// How much of the run and its logs the document holds (SPEC §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enrichment {
    /// complete | partial | none
    pub status: EnrichmentStatus,
    /// Why it is not complete; null when complete, or when no API is configured.
    pub error: Option<EnrichmentError>,
}

impl Enrichment {
    /// The run and every log page were fetched.
    pub fn complete() -> Self {
        Self {
            status: EnrichmentStatus::Complete,
            error: None,
        }
    }

    /// No `[opensteer]`: nothing was asked for, nothing is wrong.
    pub fn not_configured() -> Self {
        Self {
            status: EnrichmentStatus::None,
            error: None,
        }
    }

    /// `status` for the reason `code`, `message`.
    pub fn because(
        status: EnrichmentStatus,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error: Some(EnrichmentError {
                code: code.into(),
                message: message.into(),
            }),
        }
    }
}

/// See [`Enrichment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EnrichmentStatus {
    /// The run and every log page were fetched.
    Complete,
    /// The run had not settled, or paging stopped early: `logs` is not all of them.
    Partial,
    /// Nothing was fetched: `run` and `logs` are null.
    None,
}

impl EnrichmentStatus {
    /// The word of SPEC §6, as in `STEERHOOK_ENRICHMENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            EnrichmentStatus::Complete => "complete",
            EnrichmentStatus::Partial => "partial",
            EnrichmentStatus::None => "none",
        }
    }
}

impl std::str::FromStr for EnrichmentStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "complete" => Ok(Self::Complete),
            "partial" => Ok(Self::Partial),
            "none" => Ok(Self::None),
            other => Err(format!(
                "{other:?} is not an enrichment status (one of: complete, partial, none)"
            )),
        }
    }
}

impl std::fmt::Display for EnrichmentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why enrichment is not complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnrichmentError {
    /// A stable code, e.g. `RUN_NOT_SETTLED`, `MAX_LOG_PAGES`, or the API's.
    pub code: String,
    /// What happened, for a human.
    pub message: String,
}

/// The `event` part of [`HookDocument`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentEvent {
    /// Our event id, unique among stored events (`STEERHOOK_EVENT_ID`).
    pub id: String,
    /// The id the sender gave (`id`, else `eventId`), or null when it gave
    /// none. It differs from `id` when another stored event already held
    /// it (SPEC §5).
    pub sender_id: Option<String>,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The run id.
    pub run_id: String,
    /// When we received it, RFC 3339.
    pub received_at: String,
    /// The webhook body as sent (verified JSON).
    pub payload: Box<RawValue>,
}

impl HookDocument {
    /// Writes the whole document as JSON to `w`; `write_logs` writes its
    /// `logs` array (every entry, oldest first), and is called only when
    /// `logs` is not null.
    pub fn write_to(
        &self,
        w: &mut dyn Write,
        write_logs: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        w.write_all(b"{\"event\":")?;
        serde_json::to_writer(&mut *w, &self.event)?;
        w.write_all(b",\"run\":")?;
        match &self.run {
            Some(run) => w.write_all(run.get().as_bytes())?,
            None => w.write_all(b"null")?,
        }
        w.write_all(b",\"logs\":")?;
        match &self.logs {
            Some(_) => write_logs(w)?,
            None => w.write_all(b"null")?,
        }
        w.write_all(b",\"enrichment\":")?;
        serde_json::to_writer(&mut *w, &self.enrichment)?;
        w.write_all(b"}")
    }

    /// The run's status: the run object's `status`, else the payload's, else
    /// what the event type implies.
    pub fn run_status(&self) -> String {
        let from = |raw: Option<&RawValue>, paths: &[&[&str]]| -> Option<String> {
            let v: Value = serde_json::from_str(raw?.get()).ok()?;
            paths.iter().find_map(|p| {
                p.iter()
                    .try_fold(&v, |v, k| v.get(k))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
        };
        from(self.run.as_deref(), &[&["status"]])
            .or_else(|| {
                from(
                    Some(&self.event.payload),
                    &[
                        &["data", "run", "status"][..],
                        &["data", "status"],
                        &["run", "status"],
                        &["status"],
                    ],
                )
            })
            .unwrap_or_else(|| match self.event.event_type.as_str() {
                "run.succeeded" => "succeeded".into(),
                "run.failed" => "failed".into(),
                _ => "unknown".into(),
            })
    }

    /// The document as a JSON value with at most the newest `last_logs` log
    /// entries (of those it holds), and `logsTotal`, the number of entries
    /// in all: what a summary (an e-mail) reads.
    pub fn summary_value(&self, last_logs: usize) -> Value {
        let parse = |raw: &RawValue| serde_json::from_str(raw.get()).unwrap_or(Value::Null);
        let logs = self.logs.as_ref().map(|logs| {
            let skip = logs.len().saturating_sub(last_logs);
            Value::Array(logs[skip..].iter().map(|l| parse(l)).collect())
        });
        serde_json::json!({
            "event": {
                "id": self.event.id,
                "senderId": self.event.sender_id,
                "type": self.event.event_type,
                "runId": self.event.run_id,
                "receivedAt": self.event.received_at,
                "payload": parse(&self.event.payload),
            },
            "run": self.run.as_deref().map(parse),
            "logs": logs,
            "logsTotal": self.logs_total,
            "enrichment": self.enrichment,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn doc(run: Option<&str>, logs: Option<Vec<&str>>) -> HookDocument {
        HookDocument {
            event: DocumentEvent {
                id: "evt_1".into(),
                sender_id: Some("evt_1".into()),
                event_type: "run.failed".into(),
                run_id: "run_1".into(),
                received_at: "2026-01-01T00:00:00.000Z".into(),
                payload: raw(r#"{"type":"run.failed","data":{"status":"errored"}}"#),
            },
            run: run.map(raw),
            logs_total: logs.as_ref().map_or(0, |l| l.len() as u64),
            logs: logs.map(|l| l.into_iter().map(raw).collect()),
            enrichment: Enrichment::complete(),
        }
    }

    fn written(d: &HookDocument, logs: &'static str) -> String {
        let mut out = Vec::new();
        d.write_to(&mut out, |w| w.write_all(logs.as_bytes()))
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_document_embeds_payload_run_and_the_streamed_logs_as_sent() {
        let d = doc(Some(r#"{"status":"failed","n":1.50}"#), Some(vec!["2"]));
        let text = written(&d, "[1,2]");
        serde_json::from_str::<Value>(&text).unwrap();
        assert!(
            text.contains(r#""run":{"status":"failed","n":1.50}"#),
            "{text}"
        );
        assert!(text.contains(r#""logs":[1,2]"#), "{text}");
        assert!(text.contains(r#""senderId":"evt_1""#), "{text}");
        assert!(text.contains(r#""runId":"run_1""#), "{text}");
        assert!(
            text.contains(r#""enrichment":{"status":"complete","error":null}"#),
            "{text}"
        );
    }

    #[test]
    fn run_status_prefers_the_run_then_the_payload_then_the_event_type() {
        assert_eq!(
            doc(Some(r#"{"status":"failed"}"#), None).run_status(),
            "failed"
        );
        assert_eq!(doc(None, None).run_status(), "errored");
        let mut d = doc(None, None);
        d.event.payload = raw("{}");
        assert_eq!(d.run_status(), "failed");
    }

    #[test]
    fn null_logs_are_written_without_asking_for_them() {
        let text = written(&doc(None, None), "[never]");
        assert!(text.contains(r#""run":null,"logs":null"#), "{text}");
        serde_json::from_str::<Value>(&text).unwrap();
    }

    #[test]
    fn the_summary_keeps_only_the_newest_logs_and_counts_them_all() {
        let mut d = doc(None, Some(vec!["1", "2", "3"]));
        d.logs_total = 450;
        assert_eq!(d.summary_value(2)["logs"], serde_json::json!([2, 3]));
        assert_eq!(d.summary_value(2)["logsTotal"], serde_json::json!(450));
        assert_eq!(doc(None, None).summary_value(2)["logs"], Value::Null);
    }
}
