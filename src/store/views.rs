//! What the CLI and `/metrics` ask the store and get back, shared by every
//! backend: queue counts, events and their jobs, each hook's activity,
//! quarantined bodies, and the reports of `replay` and `prune`.

use serde::Serialize;

use super::{EventStatus, JobKind, JobState};
use crate::domain::{Enrichment, EventType};

/// Queue depth, for `/metrics`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct QueueCounts {
    /// Jobs per (kind, state).
    pub by_kind_state: Vec<(JobKind, JobState, i64)>,
    /// Age of the oldest due pending job, ms.
    pub oldest_due_age_ms: Option<i64>,
}

/// Filters for `events list`.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only events with this status.
    pub status: Option<EventStatus>,
    /// Only events of this type.
    pub event_type: Option<EventType>,
    /// Received at or after, unix ms.
    pub since: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// One line of `events list`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EventSummary {
    /// Event id.
    pub id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Run id.
    pub run_id: String,
    /// Unix ms.
    pub received_at_ms: i64,
    /// pending | done | failed
    pub status: String,
}

/// One attempt, for `events show`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AttemptDetail {
    /// 1-based.
    pub attempt: u32,
    /// Unix ms.
    pub started_at_ms: i64,
    /// How long it ran.
    pub duration_ms: i64,
    /// ok | retry | failed | interrupted | skipped
    pub outcome: String,
    /// 0 for the delivery's first run; n for the attempts of its n-th replay.
    pub replay: u32,
    /// Error code.
    pub error_code: Option<String>,
    /// Error message.
    pub error: Option<String>,
    /// Exit code of a shell hook.
    pub exit_code: Option<i32>,
    /// Output tail (lossy UTF-8).
    pub stdout: Option<String>,
    /// Error output tail (lossy UTF-8).
    pub stderr: Option<String>,
}

/// One job, for `events show`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct JobDetail {
    /// fetch | deliver
    pub kind: String,
    /// Hook name; empty for fetch.
    pub hook: String,
    /// blocked | pending | running | succeeded | failed | skipped
    pub state: String,
    /// How many times `replay` queued it again.
    pub replays: u32,
    /// Attempts made.
    pub attempts: u32,
    /// Next attempt, unix ms (pending jobs).
    pub due_at_ms: Option<i64>,
    /// Last error code.
    pub last_error_code: Option<String>,
    /// Last error.
    pub last_error: Option<String>,
    /// Every attempt, oldest first.
    pub attempt_log: Vec<AttemptDetail>,
}

/// Everything about one event, for `events show`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventDetail {
    /// The row's key, for `replay`.
    #[serde(skip)]
    pub seq: i64,
    /// Event id.
    pub id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Run id.
    pub run_id: String,
    /// Unix ms.
    pub received_at_ms: i64,
    /// The signature's t.
    pub signed_at: i64,
    /// Who sent it.
    pub client_addr: Option<String>,
    /// pending | done | failed
    pub status: String,
    /// The id the sender gave (null when it gave none); it differs from
    /// `id` when another stored event already held it (SPEC §5).
    pub sender_id: Option<String>,
    /// The webhook body (JSON).
    pub payload: serde_json::Value,
    /// The run from the API, if fetched.
    pub run: Option<serde_json::Value>,
    /// Log entries stored.
    pub log_count: i64,
    /// Why enrichment is not complete, if it is not (the message of `enrichment`).
    pub enrichment_error: Option<String>,
    /// What the hooks are (or were) told about enrichment; null until the
    /// fetch has decided, and for events stored without `[opensteer]`.
    pub enrichment: Option<Enrichment>,
    /// The fetch job and each delivery.
    pub jobs: Vec<JobDetail>,
}

/// What `replay` did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReplayReport {
    /// Hooks whose delivery was queued again.
    pub queued: Vec<String>,
    /// Hooks skipped because their delivery is running right now.
    pub running: Vec<String>,
    /// Whether the run is fetched again first (the earlier fetch failed).
    pub refetch: bool,
}

/// What `prune` deleted (or, counting only, would delete).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Finished events, with their jobs, attempts and logs.
    pub events: usize,
    /// Of those, events with a delivery that ended `failed` and was never
    /// replayed (or replayed and failed again): work the warehouse never got.
    pub failed_events: usize,
    /// Quarantined bodies.
    pub quarantined: usize,
}

/// Which failed deliveries `replay --status failed` queues again.
#[derive(Debug, Clone, Default)]
pub struct FailedDeliveries {
    /// Only deliveries to these hooks (the configured ones, or the one asked for).
    pub hooks: Vec<String>,
    /// Only events received at or after this time, unix ms.
    pub since: Option<i64>,
}

/// What `replay --status failed` did (or, counting only, would do).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BulkReplayReport {
    /// Deliveries queued again, per hook, by hook name.
    pub by_hook: Vec<(String, usize)>,
    /// Events they belong to.
    pub events: usize,
    /// Of those events, how many have their run fetched again first (the
    /// earlier fetch failed).
    pub refetch: usize,
    /// Failed deliveries left alone because their hook is not in the list
    /// (no longer configured).
    pub other_hooks: usize,
}

impl BulkReplayReport {
    /// Deliveries queued again, all hooks together.
    pub fn deliveries(&self) -> usize {
        self.by_hook.iter().map(|(_, n)| n).sum()
    }
}

/// One hook as the database knows it, for `hooks list`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HookActivity {
    /// The hook's name.
    pub name: String,
    /// Whether `hooks pause` stopped the starting of its deliveries.
    pub paused: bool,
    /// Deliveries waiting (for their fetch or their due time).
    pub pending: i64,
    /// Deliveries running now.
    pub running: i64,
    /// Deliveries that ended `failed` within the window.
    pub failed: i64,
    /// Deliveries that ended `succeeded` within the window.
    pub succeeded: i64,
    /// Deliveries that ended `skipped` within the window.
    pub skipped: i64,
}

/// One quarantined body, for `quarantine list`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineSummary {
    /// Its id, for `quarantine show`.
    pub id: i64,
    /// Unix ms.
    pub received_at_ms: i64,
    /// Who sent it.
    pub client_addr: Option<String>,
    /// The signature's t (it was signed correctly).
    pub signed_at: Option<i64>,
    /// Why it was refused.
    pub reason: String,
    /// The body's size in bytes.
    pub size: i64,
}

/// One quarantined body with its bytes, for `quarantine show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedDetail {
    /// When, from whom, why.
    pub summary: QuarantineSummary,
    /// The body as received.
    pub body: Vec<u8>,
}
