//! The tracing subscriber: text or JSON lines, a level filter from config
//! unless `RUST_LOG` is set.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

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
