//! The stdio of a container process: pipes or a pty owned by the shim, and
//! the copies between them and the sinks containerd handed over.
//!
//! The container never gets containerd's FIFOs directly; it writes into pipes
//! (or a pty) whose read ends the shim owns, so the shim decides what happens
//! to every byte.

use std::fmt;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::sys;

/// Size of one read from a container pipe.
const CHUNK: usize = 64 * 1024;

/// The stdio paths of a Create or Exec request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    /// FIFO the client writes the process's input into ("" for none).
    pub stdin: String,
    /// Where stdout goes: a FIFO path, `file://PATH` or `binary://...`.
    pub stdout: String,
    /// Where stderr goes (unused with a terminal).
    pub stderr: String,
    /// Whether the process gets a pty.
    pub terminal: bool,
}

/// Where one output stream goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// A FIFO opened by a reader such as ctr or the CRI plugin.
    Fifo(PathBuf),
    /// A plain file the shim appends raw bytes to (`file://`).
    File(PathBuf),
}

impl Sink {
    /// Parses containerd's stdio string; `None` means the stream is discarded.
    pub fn parse(s: &str) -> Result<Option<Sink>> {
        if s.is_empty() {
            return Ok(None);
        }
        if let Some(rest) = s.strip_prefix("file://") {
            let path = PathBuf::from(rest);
            if !path.is_absolute() {
                return Err(Error::InvalidArgument(format!(
                    "log uri {s:?}: file path must be absolute"
                )));
            }
            return Ok(Some(Sink::File(path)));
        }
        if s.starts_with("binary://") {
            return Err(Error::Unimplemented(format!(
                "log uri {s:?}: binary:// logging is not supported by this shim yet"
            )));
        }
        let path = s.strip_prefix("fifo://").unwrap_or(s);
        if !path.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "stdio {s:?}: expected an absolute FIFO path or file:// uri"
            )));
        }
        Ok(Some(Sink::Fifo(PathBuf::from(path))))
    }

    fn open(&self) -> Result<Writer> {
        match self {
            Sink::Fifo(path) => {
                // Read-write: opening never waits for a reader, and writes
                // never fail with EPIPE while the reader is away.
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(path)
                    .map_err(|e| Error::io(format!("open stdio fifo {}", path.display()), e))?;
                Ok(Writer::Fd(async_fd(file.into())?))
            }
            Sink::File(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        Error::io(format!("create log folder {}", dir.display()), e)
                    })?;
                }
                let file = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o640)
                    .open(path)
                    .map_err(|e| Error::io(format!("open log file {}", path.display()), e))?;
                Ok(Writer::File(file))
            }
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(std::io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(std::io::Error::from)?;
    Ok(())
}

fn async_fd(fd: OwnedFd) -> Result<AsyncFd<OwnedFd>> {
    set_nonblocking(&fd).map_err(|e| Error::io("set O_NONBLOCK", e))?;
    sys::async_fd(fd).map_err(|e| Error::io("register fd with the reactor", e))
}

/// Reads from a non-blocking fd; a pty whose other side is gone (EIO) reads
/// as end of file.
async fn read_fd(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|inner| match nix::unistd::read(inner.get_ref(), buf) {
            Ok(n) => Ok(n),
            Err(Errno::EIO) => Ok(0),
            Err(e) => Err(std::io::Error::from(e)),
        }) {
            Ok(res) => return res,
            Err(_would_block) => continue,
        }
    }
}

/// The writing side of a copy.
enum Writer {
    /// A FIFO, pipe or pty: written without blocking the runtime.
    Fd(AsyncFd<OwnedFd>),
    /// A regular file (epoll cannot watch those; writes land in the page cache).
    File(std::fs::File),
}

impl Writer {
    async fn write_all(&mut self, mut buf: &[u8]) -> std::io::Result<()> {
        match self {
            Writer::File(f) => std::io::Write::write_all(f, buf),
            Writer::Fd(fd) => {
                while !buf.is_empty() {
                    let mut guard = fd.writable().await?;
                    match guard.try_io(|inner| {
                        nix::unistd::write(inner.get_ref(), buf).map_err(std::io::Error::from)
                    }) {
                        Ok(Ok(n)) => buf = &buf[n..],
                        Ok(Err(e)) => return Err(e),
                        Err(_would_block) => continue,
                    }
                }
                Ok(())
            }
        }
    }
}

/// Copies `from` into `to` until end of file; returns the bytes copied.
async fn copy(from: AsyncFd<OwnedFd>, mut to: Writer, what: &'static str) -> u64 {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        match read_fd(&from, &mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if let Err(e) = to.write_all(&buf[..n]).await {
                    tracing::warn!(stream = what, error = %e, "stdio copy: write failed");
                    break;
                }
                total += n as u64;
            }
            Err(e) => {
                tracing::warn!(stream = what, error = %e, "stdio copy: read failed");
                break;
            }
        }
    }
    total
}

/// The container-side ends of the stdio pipes, handed to runc.
struct ChildStdio {
    stdin: Mutex<Option<OwnedFd>>,
    stdout: Mutex<Option<OwnedFd>>,
    stderr: Mutex<Option<OwnedFd>>,
}

impl fmt::Debug for ChildStdio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildStdio").finish_non_exhaustive()
    }
}

fn clone_stdio(slot: &Mutex<Option<OwnedFd>>) -> std::io::Result<Stdio> {
    let guard = slot.lock().unwrap_or_else(|p| p.into_inner());
    match guard.as_ref() {
        Some(fd) => Ok(Stdio::from(fd.try_clone()?)),
        None => Ok(Stdio::null()),
    }
}

#[async_trait]
impl runc::Io for ChildStdio {
    async fn set(&self, cmd: &mut runc::Command) -> std::io::Result<()> {
        cmd.stdin(clone_stdio(&self.stdin)?);
        cmd.stdout(clone_stdio(&self.stdout)?);
        cmd.stderr(clone_stdio(&self.stderr)?);
        Ok(())
    }

    async fn close_after_start(&self) {
        for slot in [&self.stdin, &self.stdout, &self.stderr] {
            slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
    }
}

static CONSOLE_SEQ: AtomicU64 = AtomicU64::new(0);

/// A unix socket runc sends the pty master to.
struct ConsoleSocket {
    path: PathBuf,
    listener: std::os::unix::net::UnixListener,
}

impl ConsoleSocket {
    fn new() -> Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "hf-pty-{}-{}.sock",
            std::process::id(),
            CONSOLE_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path)
            .map_err(|e| Error::io(format!("bind console socket {}", path.display()), e))?;
        Ok(ConsoleSocket { path, listener })
    }

    /// Receives the pty master runc sent.
    async fn receive(self) -> Result<OwnedFd> {
        let path = self.path.clone();
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<OwnedFd> {
            self.listener.set_nonblocking(false)?;
            let (stream, _) = self.listener.accept()?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            sys::recv_fd(&stream)
        })
        .await
        .map_err(|e| Error::Other(format!("console socket task: {e}")))?;
        let _ = std::fs::remove_file(&path);
        res.map_err(|e| Error::io("receive pty master from runc", e))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The stdio of one container process, from creation to the last byte.
pub struct ProcessIo {
    paths: StdioPaths,
    child: Option<Arc<ChildStdio>>,
    console: Mutex<Option<ConsoleSocket>>,
    /// With a terminal, the stdout sink waits here until runc sends the pty.
    pending_stdout: Mutex<Option<Writer>>,
    /// The stdin FIFO's read side, waiting for its target (the pty).
    pending_stdin: Mutex<Option<AsyncFd<OwnedFd>>>,
    /// A write end of the stdin FIFO held by the shim, so the copy sees end
    /// of file only after CloseIO (the client may reopen the FIFO).
    stdin_hold: Mutex<Option<std::fs::File>>,
    master: Mutex<Option<OwnedFd>>,
    outputs: Mutex<Vec<JoinHandle<u64>>>,
}

impl fmt::Debug for ProcessIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessIo")
            .field("paths", &self.paths)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::io("create pipe", e.into()))
}

fn open_stdin_fifo(path: &Path) -> Result<(AsyncFd<OwnedFd>, std::fs::File)> {
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(format!("open stdin fifo {}", path.display()), e))?;
    let hold = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(format!("open stdin fifo {}", path.display()), e))?;
    Ok((async_fd(reader.into())?, hold))
}

impl ProcessIo {
    /// Opens the sinks and creates the pipes (or console socket) for a
    /// process, before runc runs: a bad stdio path fails here and changes
    /// nothing.
    pub fn prepare(paths: &StdioPaths) -> Result<Self> {
        let stdout = Sink::parse(&paths.stdout)?;
        let stderr = if paths.terminal {
            None
        } else {
            Sink::parse(&paths.stderr)?
        };
        let stdout_writer = stdout.as_ref().map(Sink::open).transpose()?;
        let stderr_writer = stderr.as_ref().map(Sink::open).transpose()?;
        let stdin = if paths.stdin.is_empty() {
            None
        } else {
            Some(open_stdin_fifo(Path::new(&paths.stdin))?)
        };

        let mut io = ProcessIo {
            paths: paths.clone(),
            child: None,
            console: Mutex::new(None),
            pending_stdout: Mutex::new(None),
            pending_stdin: Mutex::new(None),
            stdin_hold: Mutex::new(None),
            master: Mutex::new(None),
            outputs: Mutex::new(Vec::new()),
        };
        let (stdin_reader, hold) = match stdin {
            Some((r, h)) => (Some(r), Some(h)),
            None => (None, None),
        };
        *lock(&io.stdin_hold) = hold;

        if paths.terminal {
            *lock(&io.console) = Some(ConsoleSocket::new()?);
            *lock(&io.pending_stdout) = stdout_writer;
            *lock(&io.pending_stdin) = stdin_reader;
            return Ok(io);
        }

        let mut outputs = Vec::new();
        let mut child_out = None;
        if let Some(w) = stdout_writer {
            let (r, wr) = pipe()?;
            outputs.push(tokio::spawn(copy(async_fd(r)?, w, "stdout")));
            child_out = Some(wr);
        }
        let mut child_err = None;
        if let Some(w) = stderr_writer {
            let (r, wr) = pipe()?;
            outputs.push(tokio::spawn(copy(async_fd(r)?, w, "stderr")));
            child_err = Some(wr);
        }
        let mut child_in = None;
        if let Some(reader) = stdin_reader {
            let (r, wr) = pipe()?;
            tokio::spawn(copy(reader, Writer::Fd(async_fd(wr)?), "stdin"));
            child_in = Some(r);
        }
        *lock(&io.outputs) = outputs;
        io.child = Some(Arc::new(ChildStdio {
            stdin: Mutex::new(child_in),
            stdout: Mutex::new(child_out),
            stderr: Mutex::new(child_err),
        }));
        Ok(io)
    }

    /// Whether the process has a pty.
    pub fn terminal(&self) -> bool {
        self.paths.terminal
    }

    /// The stdio paths as containerd gave them.
    pub fn paths(&self) -> &StdioPaths {
        &self.paths
    }

    /// What runc needs to wire the process up.
    pub fn runc_io(&self) -> Option<Arc<dyn runc::Io>> {
        self.child.clone().map(|c| c as Arc<dyn runc::Io>)
    }

    /// The console socket path to give runc, with a terminal.
    pub fn console_socket(&self) -> Option<PathBuf> {
        lock(&self.console).as_ref().map(|c| c.path.clone())
    }

    /// After runc created the process: with a terminal, receive the pty
    /// master and start copying.
    pub async fn connect_console(&self) -> Result<()> {
        let Some(console) = lock(&self.console).take() else {
            return Ok(());
        };
        let master = console.receive().await?;
        let read_side = async_fd(
            master
                .try_clone()
                .map_err(|e| Error::io("dup pty master", e))?,
        )?;
        if let Some(w) = lock(&self.pending_stdout).take() {
            lock(&self.outputs).push(tokio::spawn(copy(read_side, w, "pty")));
        }
        if let Some(stdin) = lock(&self.pending_stdin).take() {
            let write_side = async_fd(
                master
                    .try_clone()
                    .map_err(|e| Error::io("dup pty master", e))?,
            )?;
            tokio::spawn(copy(stdin, Writer::Fd(write_side), "stdin"));
        }
        *lock(&self.master) = Some(master);
        Ok(())
    }

    /// Waits (up to `timeout`) until every output stream reached end of file
    /// and was written out.
    pub async fn wait_output(&self, timeout: Duration) {
        let handles: Vec<_> = lock(&self.outputs).drain(..).collect();
        let all = futures::future::join_all(handles);
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!(
                ?timeout,
                "output still open after the process exited (a child holds it?)"
            );
        }
    }

    /// Closes the process's stdin once the client's data is through.
    pub fn close_stdin(&self) {
        lock(&self.stdin_hold).take();
    }

    /// Resizes the pty.
    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let guard = lock(&self.master);
        let Some(master) = guard.as_ref() else {
            return Err(Error::FailedPrecondition(
                "process has no terminal to resize".into(),
            ));
        };
        let w = u16::try_from(width)
            .map_err(|_| Error::InvalidArgument(format!("terminal width {width} too large")))?;
        let h = u16::try_from(height)
            .map_err(|_| Error::InvalidArgument(format!("terminal height {height} too large")))?;
        sys::set_winsize(master, w, h).map_err(|e| Error::io("resize pty", e))
    }

    /// Drops every fd the shim holds for this process.
    pub fn close(&self) {
        lock(&self.stdin_hold).take();
        lock(&self.master).take();
        lock(&self.pending_stdout).take();
        lock(&self.pending_stdin).take();
        lock(&self.console).take();
        if let Some(child) = &self.child {
            for slot in [&child.stdin, &child.stdout, &child.stderr] {
                lock(slot).take();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_containerd_stdio_strings() {
        assert_eq!(Sink::parse("").unwrap(), None);
        assert_eq!(
            Sink::parse("/run/containerd/fifo/1/c-stdout").unwrap(),
            Some(Sink::Fifo("/run/containerd/fifo/1/c-stdout".into()))
        );
        assert_eq!(
            Sink::parse("file:///var/log/c.log").unwrap(),
            Some(Sink::File("/var/log/c.log".into()))
        );
        assert!(matches!(
            Sink::parse("file://relative/x"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            Sink::parse("tcp://1.2.3.4"),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipe_output_reaches_a_file_sink_byte_exact() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("out.log");
        let paths = StdioPaths {
            stdout: format!("file://{}", log.display()),
            ..Default::default()
        };
        let io = ProcessIo::prepare(&paths).unwrap();
        let child = io.child.clone().unwrap();
        let w = child.stdout.lock().unwrap().take().unwrap();
        let data: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
        let expected = data[..100_000].to_vec();
        tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::from(w);
            std::io::Write::write_all(&mut f, &expected).unwrap();
        })
        .await
        .unwrap();
        io.wait_output(Duration::from_secs(5)).await;
        assert_eq!(std::fs::read(&log).unwrap(), &data[..100_000]);
    }
}
