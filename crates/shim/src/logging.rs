//! The shim's own log: tracing records written to the `log` FIFO containerd
//! creates in the bundle. Writes never block: when containerd is away and the
//! FIFO is full, records are dropped rather than stalling a task.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

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
/// `HOLDFAST_SHIM_LOG` overrides the level (`error` ... `trace`).
pub fn init(bundle: &Path, debug: bool) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(bundle.join("log"))
        .ok()
        .map(Arc::new);
    // A plain level, not an EnvFilter: its regex engine would cost every
    // shim a few hundred KiB.
    let level = std::env::var("HOLDFAST_SHIM_LOG")
        .ok()
        .and_then(|v| v.parse::<LevelFilter>().ok())
        .unwrap_or(if debug {
            LevelFilter::DEBUG
        } else {
            LevelFilter::INFO
        });
    // The gRPC client of a CRI Create (h2, hyper, tower, tonic) logs every
    // frame at debug: keep it to warnings. A prefix match, no regex.
    let filter = Targets::new().with_default(level).with_targets(
        ["h2", "hyper", "hyper_util", "tower", "tonic"].map(|t| (t, LevelFilter::WARN.min(level))),
    );
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(NonBlocking(file))
        .with_ansi(false)
        .json()
        .finish()
        .with(filter)
        .try_init();
}
