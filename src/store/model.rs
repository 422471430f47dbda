//! The values the store takes and gives, shared by every backend.
//!
//! Job kinds, job states and attempt outcomes are enums here and the same
//! lowercase words in the database, so a row written by an older binary reads
//! back unchanged.

use serde::Serialize;

use crate::domain::{EventType, IncomingEvent};

/// Declares a closed set of words stored as text, with `as_str` and parsing.
macro_rules! stored_words {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word stored in the database and shown to users.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        concat!("{:?} is not a ", stringify!($name), " (one of: {})"),
                        other,
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

stored_words! {
    /// What a job does.
    JobKind {
        /// Fetch the run and its logs from the API; the event's deliveries wait for it.
        Fetch = "fetch",
        /// Hand the event to one hook.
        Deliver = "deliver",
    }
}

stored_words! {
    /// Where a job stands.
    JobState {
        /// A delivery waiting for its event's fetch.
        Blocked = "blocked",
        /// Waiting to run at `due_at`.
        Pending = "pending",
        /// Claimed by a worker, under a lease.
        Running = "running",
        /// Finished successfully.
        Succeeded = "succeeded",
        /// Given up; replayable.
        Failed = "failed",
        /// Finished without running: the hook's `match` did not hold (SPEC §3).
        Skipped = "skipped",
    }
}

impl JobState {
    /// Whether the job still has work ahead of it.
    pub fn is_unfinished(self) -> bool {
        matches!(
            self,
            JobState::Blocked | JobState::Pending | JobState::Running
        )
    }
}

stored_words! {
    /// How one attempt ended.
    AttemptOutcome {
        /// It did its work.
        Ok = "ok",
        /// It failed and runs again later.
        Retry = "retry",
        /// It failed and the job has given up.
        Failed = "failed",
        /// The daemon stopped while it ran; it runs again.
        Interrupted = "interrupted",
        /// The hook's `match` did not hold; the hook was not started.
        Skipped = "skipped",
    }
}

stored_words! {
    /// An event's status as `events list` shows it (SPEC §2).
    EventStatus {
        /// Its fetch or a delivery is unfinished.
        Pending = "pending",
        /// Every delivery succeeded or was skipped.
        Done = "done",
        /// At least one delivery ended failed.
        Failed = "failed",
    }
}

/// Which jobs a new event gets, decided by the configuration.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// Whether the run is fetched from the API first.
    pub enrich: bool,
    /// Hook names and the event types each receives.
    pub hooks: Vec<(String, Vec<EventType>)>,
}

impl Routing {
    /// Hooks that receive `event_type`.
    pub fn hooks_for(&self, event_type: EventType) -> impl Iterator<Item = &str> {
        self.hooks
            .iter()
            .filter(move |(_, ev)| ev.contains(&event_type))
            .map(|(n, _)| n.as_str())
    }
}

/// An event to store, with what the request told us about it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The parsed, verified event.
    pub event: IncomingEvent,
    /// Receipt time, unix ms.
    pub received_at: i64,
    /// The client's address as logged.
    pub client_addr: Option<String>,
}

/// The answer to an insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored now; committed before this was returned.
    Accepted {
        /// The event id.
        id: String,
    },
    /// The dedupe key was already stored.
    Duplicate {
        /// The id of the stored event.
        id: String,
    },
}

/// A signed body that was not a usable event.
#[derive(Debug, Clone)]
pub struct QuarantinedBody {
    /// Receipt time, unix ms.
    pub received_at: i64,
    /// The client's address.
    pub client_addr: Option<String>,
    /// The signature's `t`.
    pub signed_at: u64,
    /// Why it was refused.
    pub reason: String,
    /// The raw body.
    pub body: Vec<u8>,
}

/// A job claimed by the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    /// Job id.
    pub id: i64,
    /// The event's row.
    pub event_seq: i64,
    /// What the job does.
    pub kind: JobKind,
    /// Hook name (deliver jobs); empty for a fetch.
    pub hook: String,
    /// This attempt's number, 1-based.
    pub attempt: u32,
}

/// A hook as this daemon configured it, for comparing daemons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookConfig {
    /// Its name.
    pub name: String,
    /// A digest of everything that decides what it does.
    pub config_hash: String,
}

/// What the claim may take.
#[derive(Debug, Clone)]
pub struct ClaimFilter {
    /// Now, unix ms.
    pub now: i64,
    /// How long the claim holds, ms.
    pub lease_ms: i64,
    /// Hooks at their concurrency limit.
    pub busy_hooks: Vec<String>,
    /// Whether fetch jobs may be taken (false while the API asked us to wait).
    pub fetch_allowed: bool,
    /// Whether pending deliveries may be taken at all (false while every
    /// configured hook is at its concurrency limit; a delivery for a hook no
    /// longer configured then waits until one frees).
    pub deliveries_allowed: bool,
    /// Jobs this process is running: never reclaimed as expired, even if the
    /// wall clock jumped past their lease.
    pub in_flight: Vec<i64>,
    /// The hooks this daemon runs and their `concurrency`, which a shared
    /// database enforces across daemons.
    pub hook_limits: Vec<(String, usize)>,
}

/// What happened in one attempt.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// Started, unix ms.
    pub started_at: i64,
    /// How long it took.
    pub duration_ms: i64,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// Error code, if it failed.
    pub error_code: Option<String>,
    /// Error message, if it failed.
    pub error: Option<String>,
    /// A shell hook's exit code.
    pub exit_code: Option<i32>,
    /// Output tail (or, for other kinds, what the far side answered).
    pub stdout: Option<Vec<u8>>,
    /// Error output tail.
    pub stderr: Option<Vec<u8>>,
}

/// Where the job goes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobNext {
    /// Done.
    Succeeded,
    /// Run again at this time (unix ms).
    RetryAt(i64),
    /// Given up; replayable.
    Failed,
    /// Not run: the hook's `match` did not hold. Finished.
    Skipped,
}

/// The stored event, as the worker needs it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The row's key.
    pub seq: i64,
    /// Event id.
    pub id: String,
    /// Event type, as stored.
    pub event_type: String,
    /// Run id.
    pub run_id: String,
    /// Unix ms.
    pub received_at: i64,
    /// The webhook body, byte for byte as received.
    pub body: Vec<u8>,
    /// The run object, once fetched.
    pub run_json: Option<String>,
    /// Where log paging resumes.
    pub logs_cursor: Option<String>,
    /// Pages stored so far.
    pub logs_pages: u32,
    /// Whether paging has finished.
    pub logs_complete: bool,
    /// Why the fetch gave up, if it did.
    pub enrichment_error: Option<String>,
}

/// One page of logs to store, and where paging goes next.
#[derive(Debug, Clone)]
pub struct LogPage {
    /// Page number, 0 for the newest.
    pub page: u32,
    /// The entries, as JSON text, in the order the API sent them.
    pub entries: Vec<String>,
    /// The cursor that fetched this page (none for the first).
    pub followed_cursor: Option<String>,
    /// Where the next page starts; none when paging is over.
    pub next_cursor: Option<String>,
    /// Whether this is the last page.
    pub complete: bool,
}

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
    /// The webhook body (JSON).
    pub payload: serde_json::Value,
    /// The run from the API, if fetched.
    pub run: Option<serde_json::Value>,
    /// Log entries stored.
    pub log_count: i64,
    /// Why enrichment failed, if it did.
    pub enrichment_error: Option<String>,
    /// Whether log paging finished.
    pub logs_complete: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_words_read_back_what_they_write() {
        for k in JobKind::ALL {
            assert_eq!(k.as_str().parse::<JobKind>(), Ok(*k));
        }
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>(), Ok(*s));
        }
        for o in AttemptOutcome::ALL {
            assert_eq!(o.as_str().parse::<AttemptOutcome>(), Ok(*o));
        }
        assert!("nope".parse::<JobState>().unwrap_err().contains("pending"));
    }
}
