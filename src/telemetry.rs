//! The tracing subscriber: text or JSON lines, a level filter from config
//! unless `RUST_LOG` is set.

use std::sync::Mutex;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Lines formatted and not yet written past which loggers wait. The queue
/// is allocated whole (32 bytes a line), so it is kept small: 4,096 lines
/// are a quarter of a second at the fastest ingest measured.
const LOG_LINES_WAITING: usize = 4096;

/// The daemon's log thread, kept until [`flush`].
static LOG_THREAD: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// Installs the daemon's subscriber on stderr (the journal under systemd).
///
/// Each line is formatted on the thread that logs it and written by a log
/// thread of its own, which writes whatever lines are waiting in one
/// `write`: under load that is one system call for many lines instead of one
/// each on the thread answering webhooks (docs/PERFORMANCE.md). No line is
/// dropped: when the log thread is [`LOG_LINES_WAITING`] lines behind, loggers wait for
/// it. Lines are written as soon as the log thread runs; [`flush`] writes
/// the last ones and must be called before the process exits.
pub fn init_daemon(format: LogFormat, level: &str) {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_LINES_WAITING)
        .thread_name("steerhook-log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    init(format, level, writer, ansi);
    if let Ok(mut kept) = LOG_THREAD.lock() {
        *kept = Some(guard);
    }
}

/// Writes the lines the log thread still holds and stops it; later lines
/// are dropped. A no-op unless [`init_daemon`] ran.
pub fn flush() {
    let guard = LOG_THREAD.lock().ok().and_then(|mut kept| kept.take());
    drop(guard);
}

/// Installs the global subscriber writing to `writer`, with colours only if
/// `ansi` (a terminal: escape codes are noise in a file or the journal, and
/// cost bytes on every line). Safe to call twice (the second call is
/// ignored), which tests rely on.
pub fn init<W>(format: LogFormat, level: &str, writer: W, ansi: bool)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
