//! The shim's own log: tracing records written to the `log` FIFO containerd
//! creates in the bundle. Writes never block: when containerd is away and the
//! FIFO is full, records are dropped rather than stalling a task.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// A writer that drops what does not fit instead of blocking.
#[derive(Clone)]
struct NonBlocking(Option<Arc<File>>);

impl Write for NonBlocking {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(f) = &self.0 {
            // EAGAIN (FIFO full) and EPIPE are both "drop this record".
            let _ = (&**f).write(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for NonBlocking {
    type Writer = NonBlocking;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Sends the shim's tracing output to `bundle/log` (read by containerd).
/// `HOLDFAST_SHIM_LOG` overrides the level filter (e.g. `debug`).
pub fn init(bundle: &Path, debug: bool) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(bundle.join("log"))
        .ok()
        .map(Arc::new);
    let default = if debug { "debug" } else { "info" };
    let filter =
        EnvFilter::try_from_env("HOLDFAST_SHIM_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(NonBlocking(file))
        .with_ansi(false)
        .json()
        .try_init();
}
