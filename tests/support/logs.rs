//! What the product logged while this test binary ran: one global
//! subscriber (tokio tasks on other threads do not inherit a thread-local
//! default), installed by the first app built with
//! [`super::app::TestAppBuilder::capture_logs`]. Every app of the binary logs
//! into it from then on, so a test counts what is new, or looks for a line
//! only it can cause.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use steerhook::config::LogFormat;

/// Everything captured so far.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&buffer().lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

/// Installs the capture, at `debug`, once per test binary.
pub fn capture() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        steerhook::telemetry::init(
            LogFormat::Text,
            "debug",
            BufferWriter(buffer().clone()),
            false,
        )
    });
}

fn buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

#[derive(Clone)]
struct BufferWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufferWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BufferWriter {
    type Writer = BufferWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
