//! The values the daemon's ingest and worker give the store and get back,
//! shared by every backend; what the CLI and `/metrics` see is in
//! [`super::views`].
//!
//! Job kinds, job states and attempt outcomes are enums here and the same
//! lowercase words in the database, so a row written by an older binary reads
//! back unchanged.

use serde::Serialize;

use crate::domain::{Enrichment, EventType, IncomingEvent};

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
    /// For a fetch that ends (succeeded or failed): what the hooks are told
    /// (SPEC §6), stored on the event in the same transaction.
    pub enrichment: Option<Enrichment>,
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
    /// Event id, unique among stored events.
    pub id: String,
    /// The id the sender gave, when it gave one.
    pub sender_id: Option<String>,
    /// Event type, as stored.
    pub event_type: String,
    /// Run id.
    pub run_id: String,
    /// Unix ms.
    pub received_at: i64,
    /// The webhook body, byte for byte as received.
    pub body: Vec<u8>,
    /// The run object, once the fetch has accepted it (settled, or the
    /// settle window is over).
    pub run_json: Option<String>,
    /// Where log paging resumes.
    pub logs_cursor: Option<String>,
    /// Pages stored so far.
    pub logs_pages: u32,
    /// Whether paging has finished.
    pub logs_complete: bool,
    /// Bytes of log entries stored so far (for `opensteer.max_log_bytes`).
    pub logs_bytes: u64,
    /// How many times the fetch asked for the run again while it had not
    /// settled (SPEC §5); these are not failures.
    pub settle_polls: u32,
    /// What the fetch found, once known: partial as soon as a reason is
    /// known (an unsettled run, a paging limit), final when the fetch ends;
    /// `None` before that, and for events stored without `[opensteer]`.
    pub enrichment: Option<Enrichment>,
}

/// One page of logs to store, and where paging goes next.
#[derive(Debug, Clone)]
pub struct LogPage {
    /// Page number, 0 for the newest.
    pub page: u32,
    /// The page's text (the API's body): each entry is a slice of it, so
    /// the page is stored without copying it entry by entry.
    pub text: String,
    /// The entries, in the order the API sent them.
    pub entries: Vec<LogEntry>,
    /// The cursor that fetched this page (none for the first).
    pub followed_cursor: Option<String>,
    /// Where the next page starts; none when paging is over.
    pub next_cursor: Option<String>,
    /// Whether this is the last page.
    pub complete: bool,
    /// Leave out entries already stored for the event (the API repeated a
    /// cursor, and may have sent a page again).
    pub skip_stored: bool,
    /// Why paging stops here early, if it does: the enrichment becomes
    /// partial for this reason, in the same transaction.
    pub stopped: Option<crate::domain::EnrichmentError>,
}

impl LogPage {
    /// Bytes of entry text the page adds.
    pub fn entry_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.span.len() as u64).sum()
    }
}

/// One log entry of a [`LogPage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Where its JSON text is in [`LogPage::text`].
    pub span: std::ops::Range<usize>,
    /// Its timestamp (SPEC §5), unix microseconds, when it has one.
    pub ts_us: Option<i64>,
}

/// The newest log entries of an event, for a summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewestLogs {
    /// The entries, oldest first, as JSON text; an entry too large for a
    /// summary is replaced by a JSON string saying so.
    pub entries: Vec<String>,
    /// How many entries the event has in all.
    pub total: u64,
}

/// How much of the newest logs a summary may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SummaryBounds {
    /// At most this many entries.
    pub entries: usize,
    /// At most this many bytes of entries in all (at least one entry is kept).
    pub total_bytes: usize,
    /// An entry larger than this is replaced by a note of its size.
    pub entry_bytes: usize,
}

/// How many ids derived from a sender's id are tried before one is made
/// unique with a random part.
pub const MAX_DERIVED_IDS: u32 = 8;

/// The ids an event may be stored under, in order (SPEC §5): the sender's
/// (or the generated) `id`; then `<id>~<h>`, where `<h>` is 12 hex digits of
/// SHA-256 over the dedupe key (`<type>\n<run id>`), so the same event gets
/// the same derived id each time; then `<id>~<h>.2` ... `.8`; and last
/// `<id>~<random>`, which cannot be taken. Each is tried while the previous
/// one is held by an event of another dedupe key.
///
/// Lazy: nearly every event is stored under its first id, and the derived
/// ones (a hash, a random part) are made on the writer's thread, so they
/// are made only when asked for.
pub fn event_id_candidates<'a>(
    id: &'a str,
    event_type: &'a str,
    run_id: &'a str,
) -> impl Iterator<Item = String> + 'a {
    let mut hash: Option<String> = None;
    (0..=MAX_DERIVED_IDS + 1).map(move |n| {
        if n == 0 {
            return id.to_owned();
        }
        if n == MAX_DERIVED_IDS + 1 {
            return format!("{id}~{}", uuid::Uuid::new_v4().simple());
        }
        let h = hash.get_or_insert_with(|| {
            use sha2::{Digest, Sha256};
            let digest = Sha256::digest(format!("{event_type}\n{run_id}").as_bytes());
            hex::encode(&digest[..6])
        });
        if n == 1 {
            format!("{id}~{h}")
        } else {
            format!("{id}~{h}.{n}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_for_one_dedupe_key_and_differ_between_keys() {
        let ids = |run| event_id_candidates("evt_1", "run.succeeded", run).collect::<Vec<_>>();
        let (a, again, b) = (ids("run_a"), ids("run_a"), ids("run_b"));
        assert_eq!(a[0], "evt_1");
        assert_eq!(a[..9], again[..9], "deterministic but for the last resort");
        assert_ne!(a[1], b[1]);
        // sha256("run.succeeded\nrun_a") begins 03e57f5b5592.
        assert_eq!(a[1], "evt_1~03e57f5b5592");
        assert_eq!(a[2], format!("{}.2", a[1]));
        assert_eq!(a.len(), 10);
        assert_ne!(a[9], again[9]);
    }

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
