use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// The JSON document a hook receives on stdin and in its payload file (SPEC §6):
/// `{"event": {"id","type","runId","receivedAt","payload"}, "run": .., "logs": ..}`.
#[derive(Debug, Serialize)]
pub struct HookDocument<'a> {
    /// The event.
    pub event: HookEvent<'a>,
    /// The run object from the API, or null without enrichment.
    pub run: Option<&'a RawValue>,
    /// The log entries, oldest first, or null without enrichment.
    pub logs: Option<Vec<&'a RawValue>>,
}

/// The `event` part of [`HookDocument`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookEvent<'a> {
    /// Our event id.
    pub id: &'a str,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: &'a str,
    /// The run id.
    pub run_id: &'a str,
    /// When we received it, RFC 3339.
    pub received_at: String,
    /// The webhook body as sent (verified JSON), embedded without re-encoding.
    pub payload: &'a RawValue,
}

impl HookDocument<'_> {
    /// Serialises the document.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising borrowed strings and already-valid raw JSON cannot fail.
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
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
        from(self.run, &[&["status"]])
            .or_else(|| {
                from(
                    Some(self.event.payload),
                    &[
                        &["data", "run", "status"][..],
                        &["data", "status"],
                        &["run", "status"],
                        &["status"],
                    ],
                )
            })
            .unwrap_or_else(|| match self.event.event_type {
                "run.succeeded" => "succeeded".into(),
                "run.failed" => "failed".into(),
                _ => "unknown".into(),
            })
    }
}
