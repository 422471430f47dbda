//! The command line of SPEC §2.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::DEFAULT_CONFIG_PATH;
use crate::domain::EventType;
use crate::store::EventStatus;

/// steerhook: Opensteer Cloud run webhooks, stored durably and fanned out to hooks.
#[derive(Debug, Parser)]
#[command(name = "steerhook", version, about)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "STEERHOOK_CONFIG",
        default_value = DEFAULT_CONFIG_PATH
    )]
    pub config: PathBuf,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve,
    /// Load and validate the configuration and print a summary (secrets redacted).
    CheckConfig,
    /// Inspect stored events.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Queue deliveries again: one event's (all hooks, or one), or every
    /// failed one with --status failed. Works while `serve` runs.
    #[command(
        after_help = "Examples:\n  steerhook replay evt_123\n  steerhook replay --status failed --hook etl --since 2d --dry-run"
    )]
    Replay {
        /// Event id.
        #[arg(required_unless_present = "status", conflicts_with = "status")]
        id: Option<String>,
        /// Queue every delivery in this state again, instead of one event's.
        #[arg(long, value_enum)]
        status: Option<ReplayStatusArg>,
        /// Only this hook.
        #[arg(long, value_name = "NAME")]
        hook: Option<String>,
        /// With --status: only events received within this long, e.g. 2h, 7d.
        #[arg(long, value_name = "DURATION", conflicts_with = "id")]
        since: Option<humantime::Duration>,
        /// With --status: count what would be queued; change nothing.
        #[arg(long, conflicts_with = "id")]
        dry_run: bool,
    },
    /// The configured hooks: list them, pause or resume one.
    #[command(subcommand)]
    Hooks(HooksCommand),
    /// The signed bodies refused with PAYLOAD_INVALID, kept for inspection.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// Print the x-opensteer-signature value for a body (stdin when no FILE).
    Sign {
        /// The webhook secret.
        #[arg(long)]
        secret: String,
        /// Unix seconds [default: now].
        #[arg(long)]
        timestamp: Option<u64>,
        /// The body.
        file: Option<PathBuf>,
    },
    /// Send one correctly signed sample webhook and print the answer.
    SendTest {
        /// Where to send it [default: the config's listen address and webhook path].
        #[arg(long)]
        url: Option<String>,
        /// The secret [default: the config's first webhook secret].
        #[arg(long)]
        secret: Option<String>,
        /// The event type.
        #[arg(long, value_enum, default_value_t = EventTypeArg::RunSucceeded)]
        event: EventTypeArg,
        /// The run id [default: a new one].
        #[arg(long)]
        run_id: Option<String>,
    },
    /// Delete finished events older than the retention.
    Prune {
        /// e.g. 30d, 12h [default: storage.retention_days].
        #[arg(long, value_name = "DURATION")]
        older_than: Option<humantime::Duration>,
        /// Count what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check a saved request offline; prints ok or the error code.
    Verify {
        /// The webhook secret.
        #[arg(long)]
        secret: String,
        /// The x-opensteer-signature header value.
        #[arg(long)]
        header: String,
        /// Check the tolerance as of this unix time [default: now].
        #[arg(long)]
        at: Option<u64>,
        /// Tolerance in seconds.
        #[arg(long, default_value_t = crate::config::DEFAULT_TOLERANCE_SECS)]
        tolerance: u64,
        /// The body (stdin when absent).
        file: Option<PathBuf>,
    },
    /// Check config, database, secrets, hook programs, API key, clock skew and SMTP.
    Doctor,
    /// Print a completion script for bash, zsh or fish (also elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (run by scripts/package.sh).
    #[command(hide = true)]
    Man {
        /// Write steerhook.1 and a page per subcommand into DIR [default: steerhook.1 on stdout].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// `steerhook events ...`
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Newest first: id, type, run id, received, status.
    List {
        /// Only events with this status.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// Only events of this type.
        #[arg(long = "type", value_enum)]
        event_type: Option<EventTypeArg>,
        /// Only events received within this long, e.g. 2h, 7d.
        #[arg(long)]
        since: Option<humantime::Duration>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// One event: payload, run summary, log count, deliveries with attempts.
    Show {
        /// Event id.
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// `steerhook hooks ...`
#[derive(Debug, Subcommand)]
pub enum HooksCommand {
    /// One line per configured hook: kind, paused, deliveries pending, running,
    /// and failed, succeeded, skipped in the last 24 h.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Stop starting this hook's deliveries (every daemon on the database);
    /// running ones finish, events keep being accepted and queued.
    Pause {
        /// The hook's name.
        name: String,
    },
    /// Start this hook's deliveries again, the queued ones first.
    Resume {
        /// The hook's name.
        name: String,
    },
}

/// `steerhook quarantine ...`
#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// Newest first: id, received, from, size, why.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// One body: when, from which client, why, and the body itself.
    Show {
        /// Its id, from `quarantine list`.
        id: i64,
        /// Machine-readable output (the body as sent, and base64).
        #[arg(long)]
        json: bool,
    },
}

/// Which deliveries `replay --status` queues again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReplayStatusArg {
    /// Deliveries that ended failed (every attempt used).
    Failed,
}

/// An event type on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventTypeArg {
    /// `run.succeeded`
    #[value(name = "run.succeeded")]
    RunSucceeded,
    /// `run.failed`
    #[value(name = "run.failed")]
    RunFailed,
}

impl From<EventTypeArg> for EventType {
    fn from(a: EventTypeArg) -> Self {
        match a {
            EventTypeArg::RunSucceeded => EventType::RunSucceeded,
            EventTypeArg::RunFailed => EventType::RunFailed,
        }
    }
}

/// An event status on the command line (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    /// Its fetch or a delivery is unfinished.
    Pending,
    /// Every delivery succeeded or was skipped.
    Done,
    /// At least one delivery ended failed.
    Failed,
}

impl From<StatusArg> for EventStatus {
    fn from(a: StatusArg) -> Self {
        match a {
            StatusArg::Pending => EventStatus::Pending,
            StatusArg::Done => EventStatus::Done,
            StatusArg::Failed => EventStatus::Failed,
        }
    }
}
