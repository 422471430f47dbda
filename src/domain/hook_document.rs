//! The JSON document a hook receives (SPEC §6), built once per delivery
//! attempt from the stored event, run and logs.

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// The document every hook kind receives:
/// `{"event": {"id","type","runId","receivedAt","payload"}, "run": .., "logs": ..}`.
///
/// The payload, the run and each log entry stay the JSON text they were
/// stored as (verified at ingest, or produced by serde when fetched), so
/// serialising the document never re-encodes them.
#[derive(Debug, Clone, Serialize)]
pub struct HookDocument {
    /// The event.
    pub event: DocumentEvent,
    /// The run object from the API, or null without enrichment.
    pub run: Option<Box<RawValue>>,
    /// The log entries, oldest first, or null without enrichment.
    pub logs: Option<Vec<Box<RawValue>>>,
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

/// See [`Enrichment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
    /// Our event id.
    pub id: String,
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
    /// Writes the document as JSON to `w`.
    pub fn write_to(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer(w, self).map_err(std::io::Error::from)
    }

    /// The serialised document.
    // Owned strings and raw JSON that was valid when stored: serde_json
    // cannot fail to write these to memory.
    #[allow(clippy::expect_used)]
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a hook document always serialises")
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

    /// The document as a JSON value with only the newest `last_logs` log
    /// entries: what a summary (an e-mail) reads, without the full log.
    pub fn summary_value(&self, last_logs: usize) -> Value {
        let parse = |raw: &RawValue| serde_json::from_str(raw.get()).unwrap_or(Value::Null);
        let logs = self.logs.as_ref().map(|logs| {
            let skip = logs.len().saturating_sub(last_logs);
            Value::Array(logs[skip..].iter().map(|l| parse(l)).collect())
        });
        serde_json::json!({
            "event": {
                "id": self.event.id,
                "type": self.event.event_type,
                "runId": self.event.run_id,
                "receivedAt": self.event.received_at,
                "payload": parse(&self.event.payload),
            },
            "run": self.run.as_deref().map(parse),
            "logs": logs,
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
                event_type: "run.failed".into(),
                run_id: "run_1".into(),
                received_at: "2026-01-01T00:00:00.000Z".into(),
                payload: raw(r#"{"type":"run.failed","data":{"status":"errored"}}"#),
            },
            run: run.map(raw),
            logs: logs.map(|l| l.into_iter().map(raw).collect()),
            enrichment: Enrichment {
                status: EnrichmentStatus::Complete,
                error: None,
            },
        }
    }

    #[test]
    fn the_document_embeds_payload_run_and_logs_as_sent() {
        let d = doc(
            Some(r#"{"status":"failed","n":1.50}"#),
            Some(vec!["1", "2"]),
        );
        let text = String::from_utf8(d.to_bytes()).unwrap();
        assert!(
            text.contains(r#""run":{"status":"failed","n":1.50}"#),
            "{text}"
        );
        assert!(text.contains(r#""logs":[1,2]"#), "{text}");
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
    fn the_summary_keeps_only_the_newest_logs() {
        let d = doc(None, Some(vec!["1", "2", "3"]));
        assert_eq!(d.summary_value(2)["logs"], serde_json::json!([2, 3]));
        assert_eq!(doc(None, None).summary_value(2)["logs"], Value::Null);
    }
}
