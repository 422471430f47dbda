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
    /// Queue an event's deliveries again (all hooks, or one). Works while `serve` runs.
    Replay {
        /// Event id.
        id: String,
        /// Only this hook.
        #[arg(long, value_name = "NAME")]
        hook: Option<String>,
    },
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
    /// Every delivery succeeded.
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
