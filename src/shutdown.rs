//! One cancellation token for the whole process, fired by SIGTERM or SIGINT.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or SIGINT. A second signal while
/// stopping exits at once with code 1: the operator asked twice.
pub fn cancel_on_signals(token: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        token.cancel();
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second signal: exiting now; unfinished work resumes on the next start");
        crate::telemetry::flush();
        std::process::exit(1);
    });
    Ok(())
}
