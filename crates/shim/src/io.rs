//! The stdio of a container process: pipes or a pty owned by the shim, the
//! journal every byte of output is drained into, and the forwarders that copy
//! each stream from its journal cursor to the sink containerd handed over.
//!
//! ```text
//! container ──pipe/pty──► drain ──► journal (segments on disk)
//!                                      │ consumer cursor
//!                                      ▼
//!                                  forwarder ──► FIFO | file:// | binary://
//! ```
//!
//! The container only ever waits for the drain, and the drain only for the
//! local disk (and, with the `block` policy, for the journal's budget): a
//! sink that is full, or has no reader, holds back its forwarder's cursor and
//! nothing else.

use std::fmt;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use holdfast_journal::{Appended, Consumer, Cursor, Journal, RawRead, Stream, StreamWriter};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use time::OffsetDateTime;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cri::CriLogFile;
use crate::error::{Error, Result};
use crate::reaper::Reaper;
use crate::sys;

/// Size of one read from a container pipe.
const CHUNK: usize = 256 * 1024;
/// How often a drain gives the journal a chance to fsync.
const SYNC_TICK: Duration = Duration::from_millis(500);
/// How long the logging binary may take to say it is ready.
const BINARY_READY_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// A logging program (`binary://PATH?key=value`), containerd's protocol.
    Binary {
        /// The program.
        path: PathBuf,
        /// Its arguments: each query key, then its value.
        args: Vec<String>,
    },
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Sink {
    /// Parses containerd's stdio string; `None` means no sink (the stream is
    /// still journaled).
    pub fn parse(s: &str) -> Result<Option<Sink>> {
        if s.is_empty() {
            return Ok(None);
        }
        if let Some(rest) = s.strip_prefix("file://") {
            let path = PathBuf::from(percent_decode(rest));
            if !path.is_absolute() {
                return Err(Error::InvalidArgument(format!(
                    "log uri {s:?}: file path must be absolute"
                )));
            }
            return Ok(Some(Sink::File(path)));
        }
        if let Some(rest) = s.strip_prefix("binary://") {
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            let path = PathBuf::from(percent_decode(path));
            if !path.is_absolute() {
                return Err(Error::InvalidArgument(format!(
                    "log uri {s:?}: binary path must be absolute"
                )));
            }
            let mut args = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                args.push(percent_decode(k));
                if !v.is_empty() {
                    args.push(percent_decode(v));
                }
            }
            return Ok(Some(Sink::Binary { path, args }));
        }
        let path = s.strip_prefix("fifo://").unwrap_or(s);
        if !path.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "stdio {s:?}: expected an absolute FIFO path, file:// or binary:// uri"
            )));
        }
        Ok(Some(Sink::Fifo(PathBuf::from(path))))
    }
}

fn open_fifo_sink(path: &Path) -> Result<Writer> {
    // Read-write: opening never waits for a reader, writes never fail with
    // EPIPE while the reader is away, and what sits in the FIFO's buffer is
    // kept for the next reader instead of being discarded.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(format!("open stdio fifo {}", path.display()), e))?;
    // A buffer as large as the container's pipe: the drain's chunks then
    // fit whole while the reader keeps up (see `Handoff`).
    enlarge_pipe(&file);
    Ok(Writer::Fd(async_fd(file.into())?))
}

fn open_file_sink(path: &Path) -> Result<Writer> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create log folder {}", dir.display()), e))?;
    }
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| Error::io(format!("open log file {}", path.display()), e))?;
    Ok(Writer::File(file))
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

/// One `read(2)`; a pty whose other side is gone (EIO) reads as end of file.
fn read_or_eof(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<usize> {
    match nix::unistd::read(fd, buf) {
        Err(Errno::EIO) => Ok(0),
        res => res.map_err(std::io::Error::from),
    }
}

/// Reads from a non-blocking fd, waiting until it is readable.
async fn read_fd(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|inner| read_or_eof(inner.get_ref(), buf)) {
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
    /// Writes as much of `buf` as the sink takes now, without waiting: the
    /// bytes written (fewer when a FIFO or pipe is full). An error only when
    /// nothing was written.
    fn write_now(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let res = match self {
                Writer::File(f) => std::io::Write::write(f, &buf[done..]),
                Writer::Fd(fd) => {
                    nix::unistd::write(fd.get_ref(), &buf[done..]).map_err(std::io::Error::from)
                }
            };
            match res {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || done > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

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

/// Copies the client's input into the process (stdin is not journaled).
async fn copy_stdin(from: AsyncFd<OwnedFd>, mut to: Writer) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match read_fd(&from, &mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                if let Err(e) = to.write_all(&buf[..n]).await {
                    tracing::debug!(error = %e, "stdin: process closed its input");
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "stdin: read failed");
                return;
            }
        }
    }
}

/// Goes on from the result of appending `data`: logs a drop, or appends
/// the rest once the journal has room again (`block`: the container's pipe
/// is not read meanwhile). A forwarder parked with the drain gets its sink
/// back after each of these appends: live mode covers only the first one.
async fn finish_append(
    w: &mut StreamWriter,
    mut data: &[u8],
    mut result: holdfast_journal::Result<Appended>,
    handoff: &Handoff,
) {
    let mut warned = false;
    loop {
        match result {
            Ok(Appended::Written { .. }) => return,
            Ok(Appended::Dropped { dropped, cause, .. }) => {
                tracing::warn!(process = w.process(), stream = ?w.stream(), dropped, ?cause,
                    "log budget full: dropped output (policy drop)");
                return;
            }
            Ok(Appended::Full { accepted, cause }) => {
                data = &data[accepted..];
                if !warned {
                    tracing::warn!(process = w.process(), stream = ?w.stream(), ?cause,
                        "log budget full: container output paused until forwarded (policy block)");
                    warned = true;
                }
                w.wait_for_space().await;
            }
            Err(e) => {
                tracing::error!(process = w.process(), stream = ?w.stream(), error = %e,
                    "journal append failed; output lost");
                return;
            }
        }
        result = w.append(data, OffsetDateTime::now_utc());
        // The forwarder may have parked while this waited for room.
        handoff.appended();
    }
}

/// A forwarder's consumer and sink, parked with the drain while the sink
/// keeps up (see [`Handoff`]).
struct Live {
    consumer: Consumer,
    sink: Writer,
    /// The journal cursor after the last byte the sink has.
    resume: Cursor,
}

/// What the drain gives back to the forwarder: its consumer and sink, the
/// journal cursor to go on from, and how many bytes after it the sink
/// already has.
struct Returned {
    live: Live,
    skip: usize,
}

#[derive(Default)]
struct HandoffState {
    /// Appends so far: a forwarder parks only if none came since it read.
    appends: u64,
    /// The drain reached end of file and closed its writer: once a
    /// forwarder read everything, it is done.
    closed: bool,
    live: Option<Live>,
    returned: Option<Returned>,
}

/// The hand-over between a stream's drain and its forwarder.
///
/// While the sink is behind the journal, the forwarder owns it and copies
/// from its journal cursor. Once it has read everything there, it parks its
/// consumer and sink here; from then on the drain, right after journaling a
/// chunk, writes the same bytes to the sink itself (no read back, no parse)
/// and commits the consumer. The first chunk the sink does not take whole
/// (a full FIFO, no reader, a failed write), or that the journal did not
/// take cleanly (budget full, a drop marker due), gives them back with the
/// cursor to go on from and the bytes the sink already has after it. The
/// journal stays the source of truth: live mode only saves reading it back.
#[derive(Default)]
struct Handoff {
    state: Mutex<HandoffState>,
    back: tokio::sync::Notify,
    /// Notified after every append and at the end (see [`Handoff::wait_append`]).
    more: tokio::sync::Notify,
}

impl Handoff {
    /// Appends so far (read before a forwarder's read).
    fn appends(&self) -> u64 {
        lock(&self.state).appends
    }

    /// Parks the forwarder's consumer and sink, which read everything
    /// journaled up to `seen` appends. Refused when the drain appended more
    /// since (read again) or is done ([`Park::Done`]).
    fn park(&self, consumer: Consumer, sink: Writer, seen: u64) -> Park {
        let mut st = lock(&self.state);
        if st.appends != seen {
            return Park::Refused(Box::new((consumer, sink)));
        }
        if st.closed {
            return Park::Done;
        }
        let resume = consumer.position();
        st.live = Some(Live {
            consumer,
            sink,
            resume,
        });
        Park::Parked
    }

    /// Whether the drain is done.
    fn closed(&self) -> bool {
        lock(&self.state).closed
    }

    /// After the drain appended `data` to the journal (from cursor `start`
    /// to `end`; `clean`: all of it, no drop marker before it): writes it to
    /// a parked sink if it follows the sink's last byte, and gives the sink
    /// back unless it took every byte.
    fn after_append(&self, data: &[u8], start: Option<Cursor>, end: Option<Cursor>, clean: bool) {
        self.write_live(data, start, end, clean);
        self.more.notify_waiters();
    }

    fn write_live(&self, data: &[u8], start: Option<Cursor>, end: Option<Cursor>, clean: bool) {
        let mut st = lock(&self.state);
        st.appends += 1;
        let Some(live) = st.live.as_mut() else {
            return;
        };
        let mut sent = 0;
        if clean && start == Some(live.resume) {
            sent = live.sink.write_now(data).unwrap_or_else(|e| {
                tracing::debug!(error = %e, "sink write failed; the forwarder retries");
                0
            });
            if let (true, Some(end)) = (sent == data.len(), end) {
                // Committing the chunk's start, not its end, keeps the
                // segment the cursor is in from being deleted under it.
                live.consumer.commit(live.resume);
                live.resume = end;
                return;
            }
        }
        self.give_back(&mut st, sent);
    }

    /// Counts an append the drain made outside live mode and gives a
    /// parked forwarder its sink back, to read it from the journal.
    fn appended(&self) {
        {
            let mut st = lock(&self.state);
            st.appends += 1;
            self.give_back(&mut st, 0);
        }
        self.more.notify_waiters();
    }

    /// The drain is done and its writer closed (which may have written a
    /// drop marker): gives a parked forwarder its sink back for good.
    fn close(&self) {
        {
            let mut st = lock(&self.state);
            st.appends += 1;
            st.closed = true;
            self.give_back(&mut st, 0);
        }
        self.more.notify_waiters();
    }

    /// Waits until the drain appended after `seen` appends, or is done.
    async fn wait_append(&self, seen: u64) {
        let notified = self.more.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let st = lock(&self.state);
            if st.appends != seen || st.closed {
                return;
            }
        }
        notified.await;
    }

    /// Gives them back (if parked), `skip` bytes after their resume cursor
    /// already written to the sink.
    fn give_back(&self, st: &mut HandoffState, skip: usize) {
        if let Some(live) = st.live.take() {
            st.returned = Some(Returned { live, skip });
            self.back.notify_one();
        }
    }

    /// Waits until the drain gives them back.
    async fn wait_back(&self) -> Returned {
        loop {
            if let Some(r) = lock(&self.state).returned.take() {
                return r;
            }
            self.back.notified().await;
        }
    }
}

/// What [`Handoff::park`] did.
enum Park {
    Parked,
    /// The drain appended since the forwarder's read: they are handed back.
    Refused(Box<(Consumer, Writer)>),
    /// The drain is done and nothing was appended since the read.
    Done,
}

/// Journals one chunk of output and, in live mode, writes it to the sink;
/// with `block` and a full journal, waits until all of it is journaled.
async fn journal_chunk(w: &mut StreamWriter, data: &[u8], handoff: &Handoff) {
    let start = w.end();
    let marker = w.pending_drop_marker() > 0;
    let result = w.append(data, OffsetDateTime::now_utc());
    let clean = !marker && matches!(result, Ok(Appended::Written { .. }));
    handoff.after_append(data, start, w.end(), clean);
    if !clean {
        finish_append(w, data, result, handoff).await;
    }
    // Let the forwarder send this chunk on before the next.
    tokio::task::yield_now().await;
}

/// Reads a container pipe (or pty) into the journal until end of file.
async fn drain(from: AsyncFd<OwnedFd>, mut w: StreamWriter, handoff: Arc<Handoff>) {
    // The buffer exists only while output flows (it goes after a quiet
    // tick): an idle container costs no 64 KiB per stream.
    let mut buf: Option<Vec<u8>> = None;
    let mut busy = false;
    let mut tick = tokio::time::interval(SYNC_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ready = from.readable() => {
                let mut guard = match ready {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::warn!(error = %e, "drain: poll failed");
                        break;
                    }
                };
                let b = buf.get_or_insert_with(|| vec![0u8; CHUNK]);
                let res = guard.try_io(|inner| read_or_eof(inner.get_ref(), b));
                match res {
                    Ok(Ok(0)) => break,
                    Ok(Ok(n)) => {
                        busy = true;
                        journal_chunk(&mut w, &b[..n], &handoff).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "drain: read failed");
                        break;
                    }
                    Err(_would_block) => {}
                }
            }
            _ = tick.tick() => {
                // Quiet for a whole tick: give the buffer back.
                if !busy && buf.take().is_some() {
                    w.release_buffers();
                    crate::sys::trim_heap();
                }
                busy = false;
                if let Err(e) = w.sync_if_due(Instant::now()) {
                    tracing::warn!(error = %e, "journal fsync failed");
                }
            }
        }
    }
    if let Err(e) = w.close() {
        tracing::warn!(error = %e, "closing journal stream failed");
    }
    handoff.close();
}

fn warn_gap(from: holdfast_journal::Cursor, to: holdfast_journal::Cursor) {
    tracing::warn!(
        ?from,
        ?to,
        "forwarder: journal data gone before it was forwarded"
    );
}

/// How long a forwarder waits before reading again after a read error.
const READ_RETRY: Duration = Duration::from_millis(100);

/// Most bytes a forwarder hands to its sink in one write.
const BATCH: usize = 64 * 1024;

/// Copies one stream from its journal cursor to a sink, in order, exactly
/// once; ends when the drain is done and everything was forwarded.
///
/// Records already in the journal are batched (up to [`BATCH`] bytes) into
/// one write; the cursor is committed only once the sink took the whole
/// batch, so a sink that is full or away holds the cursor back.
async fn forward(
    consumer: Consumer,
    sink: Writer,
    handoff: Arc<Handoff>,
    finished: watch::Sender<bool>,
) {
    forward_all(consumer, sink, &handoff).await;
    finished.send_replace(true);
}

async fn forward_all(mut consumer: Consumer, mut sink: Writer, handoff: &Handoff) {
    let mut batch: Vec<u8> = Vec::new();
    // Bytes at the cursor the sink already has (written by the drain).
    let mut skip = 0usize;
    loop {
        let seen = handoff.appends();
        let read = match consumer.read_raw(&mut batch, BATCH) {
            Ok(Some(r)) => r,
            // The sink has everything journaled so far: the drain writes
            // to it directly until it falls behind again.
            Ok(None) => match handoff.park(consumer, sink, seen) {
                Park::Parked => {
                    let back = handoff.wait_back().await;
                    (consumer, sink, skip) = (back.live.consumer, back.live.sink, back.skip);
                    consumer.seek(back.live.resume);
                    continue;
                }
                Park::Refused(back) => {
                    (consumer, sink) = *back;
                    continue;
                }
                Park::Done => break,
            },
            // The reader skips a malformed line: go on after it.
            Err(e @ holdfast_journal::JournalError::Malformed { .. }) => {
                tracing::warn!(error = %e, "forwarder: malformed journal line skipped");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "forwarder: journal read failed");
                if handoff.closed() {
                    break;
                }
                tokio::time::sleep(READ_RETRY).await;
                continue;
            }
        };
        let commit_to = match read {
            RawRead::Records { next, .. } => next,
            RawRead::Gap { from, to } => {
                warn_gap(from, to);
                consumer.commit(to);
                continue;
            }
        };
        let from = skip.min(batch.len());
        skip -= from;
        if let Err(e) = sink.write_all(&batch[from..]).await {
            tracing::warn!(error = %e, "forwarder: sink write failed; stopping");
            break;
        }
        consumer.commit(commit_to);
        // Not kept between batches: an idle forwarder holds no buffer.
        batch = Vec::new();
    }
}

/// How long a CRI log forwarder waits before writing again after the file
/// refused a write (a full disk).
const CRI_WRITE_RETRY: Duration = Duration::from_secs(1);

/// Copies one stream's journal records, as CRI log lines, to the
/// container's log file, in order, exactly once; ends when the drain is
/// done and everything was written. `hold` is the FIFO containerd gave for
/// the stream: nothing is written to it, and it is closed at the end, so
/// containerd's reader sees end of file when the stream ends.
async fn forward_cri_lines(
    mut consumer: Consumer,
    file: Arc<CriLogFile>,
    hold: Option<Writer>,
    handoff: Arc<Handoff>,
    finished: watch::Sender<bool>,
) {
    let mut batch: Vec<u8> = Vec::new();
    loop {
        let seen = handoff.appends();
        match consumer.read_lines(&mut batch, BATCH) {
            Ok(Some(RawRead::Records { next, .. })) => {
                write_cri_lines(&file, &batch).await;
                consumer.commit(next);
                batch = Vec::new();
            }
            Ok(Some(RawRead::Gap { from, to })) => {
                warn_gap(from, to);
                consumer.commit(to);
            }
            Ok(None) => {
                if handoff.closed() && handoff.appends() == seen {
                    break;
                }
                handoff.wait_append(seen).await;
            }
            Err(e @ holdfast_journal::JournalError::Malformed { .. }) => {
                tracing::warn!(error = %e, "CRI log forwarder: malformed journal line skipped");
            }
            Err(e) => {
                tracing::warn!(error = %e, "CRI log forwarder: journal read failed");
                if handoff.closed() {
                    break;
                }
                tokio::time::sleep(READ_RETRY).await;
            }
        }
    }
    drop(hold);
    finished.send_replace(true);
}

/// Writes all of `lines` to the log file, retrying what it refused (the
/// journal keeps the lines meanwhile; Delete stops the retries).
async fn write_cri_lines(file: &CriLogFile, mut lines: &[u8]) {
    let mut warned = false;
    while !lines.is_empty() {
        let (written, err) = file.append(lines);
        lines = &lines[written..];
        if let Some(e) = err {
            if !warned {
                tracing::warn!(path = %file.path().display(), error = %e,
                    "CRI log file write failed; retrying (the journal keeps the lines)");
                warned = true;
            }
            tokio::time::sleep(CRI_WRITE_RETRY).await;
        }
    }
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
    let guard = lock(slot);
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
            lock(slot).take();
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

/// A running logging binary (`binary://`).
struct LogBinary {
    pid: u32,
    exited: Option<tokio::sync::oneshot::Receiver<crate::reaper::Exit>>,
}

/// Starts a logging binary: its fd 3 and 4 are the read ends of the stdout
/// and stderr pipes, fd 5 the write end of a pipe it closes (or writes to)
/// when it is ready; it sees `CONTAINER_ID` and `CONTAINER_NAMESPACE`.
async fn start_log_binary(
    path: &Path,
    args: &[String],
    ctx: &IoContext<'_>,
) -> Result<(LogBinary, Writer, Writer)> {
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (ready_r, ready_w) = pipe()?;
    let mut cmd = std::process::Command::new(path);
    cmd.args(args)
        .env_clear()
        .env("CONTAINER_ID", ctx.container_id)
        .env("CONTAINER_NAMESPACE", ctx.namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = sys::spawn_with_fds(cmd, vec![out_r, err_r, ready_w])
        .map_err(|e| Error::io(format!("start logging binary {}", path.display()), e))?;
    let pid = child.id();
    let exited = ctx.reaper.subscribe(pid as i32);
    drop(child);
    let ready = async_fd(ready_r)?;
    let mut byte = [0u8; 1];
    match tokio::time::timeout(BINARY_READY_TIMEOUT, read_fd(&ready, &mut byte)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return Err(Error::io(
                format!("logging binary {} readiness", path.display()),
                e,
            ))
        }
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            return Err(Error::Other(format!(
                "logging binary {} did not signal readiness within {BINARY_READY_TIMEOUT:?}",
                path.display()
            )));
        }
    }
    Ok((
        LogBinary {
            pid,
            exited: Some(exited),
        },
        Writer::Fd(async_fd(out_w)?),
        Writer::Fd(async_fd(err_w)?),
    ))
}

/// What a process's stdio needs from its container.
#[derive(Debug)]
pub struct IoContext<'a> {
    /// The task's journal.
    pub journal: &'a Journal,
    /// The journal's name for the process: `init` or the exec id.
    pub process: &'a str,
    /// containerd namespace (for logging binaries).
    pub namespace: &'a str,
    /// Container id (for logging binaries).
    pub container_id: &'a str,
    /// The shim's reaper (logging binaries are its children).
    pub reaper: &'a Reaper,
    /// The process comes back from a checkpoint: what its journal holds
    /// already reached the sinks of its earlier life, so forwarders start
    /// at the journal's end and the drains append after it.
    pub restored: bool,
    /// The CRI log file the shim writes itself (see [`crate::cri`]); the
    /// FIFOs containerd gave are then held open and silent.
    pub cri_log: Option<Arc<CriLogFile>>,
}

/// Where a stream's journal records go.
enum Forward {
    /// Their bytes, to the sink containerd gave.
    Sink(Consumer, Writer),
    /// Their CRI lines, to the container's log file; the sink containerd
    /// gave, if any, is held until the stream ends.
    CriLog(Consumer, Arc<CriLogFile>, Option<Writer>),
}

/// One output stream between the container and its sink, before the pty
/// exists (terminal mode) or always (pipe mode).
struct Output {
    writer: StreamWriter,
    forward: Option<Forward>,
}

/// The stdio of one container process, from creation to the last byte.
pub struct ProcessIo {
    paths: StdioPaths,
    process: String,
    child: Option<Arc<ChildStdio>>,
    console: Mutex<Option<ConsoleSocket>>,
    /// With a terminal, the output waits here until runc sends the pty.
    pending_output: Mutex<Option<Output>>,
    /// The stdin FIFO's read side, waiting for its target (the pty).
    pending_stdin: Mutex<Option<AsyncFd<OwnedFd>>>,
    /// A write end of the stdin FIFO held by the shim, so the copy sees end
    /// of file only after CloseIO (the client may reopen the FIFO).
    stdin_hold: Mutex<Option<std::fs::File>>,
    master: Mutex<Option<OwnedFd>>,
    drains: Mutex<Vec<JoinHandle<()>>>,
    forwarders: Mutex<Vec<JoinHandle<()>>>,
    forwarded: Mutex<Vec<watch::Receiver<bool>>>,
    binary: Mutex<Option<LogBinary>>,
}

impl fmt::Debug for ProcessIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessIo")
            .field("paths", &self.paths)
            .field("process", &self.process)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::io("create pipe", e.into()))
}

/// How much a container's stdout/stderr pipe buffers in the kernel (the
/// default is 64 KiB). The kernel allocates the pages only as output waits
/// in the pipe, so an idle or slow logger costs nothing; a fast one keeps
/// writing while the drain appends the previous chunk.
const OUTPUT_PIPE_BYTES: libc::c_int = 1 << 20;

/// A pipe for a container's stdout or stderr: [`pipe`] with a larger buffer
/// where the kernel allows it (`/proc/sys/fs/pipe-max-size`).
fn output_pipe() -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = pipe()?;
    enlarge_pipe(&r);
    Ok((r, w))
}

/// Sets a pipe's (or FIFO's) buffer to [`OUTPUT_PIPE_BYTES`] where the
/// kernel allows it; keeps the default size otherwise.
fn enlarge_pipe(fd: &impl std::os::fd::AsFd) {
    if let Err(e) = fcntl(fd, FcntlArg::F_SETPIPE_SZ(OUTPUT_PIPE_BYTES)) {
        tracing::debug!(error = %e, "could not enlarge a pipe; keeping the default size");
    }
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

fn journal_err(e: holdfast_journal::JournalError) -> Error {
    Error::Other(format!("log journal: {e}"))
}

impl ProcessIo {
    /// Opens the sinks, the journal streams and the pipes (or console
    /// socket) of a process, before runc runs: a bad stdio path fails here
    /// and changes nothing.
    pub async fn prepare(paths: &StdioPaths, ctx: &IoContext<'_>) -> Result<Self> {
        let stdout = Sink::parse(&paths.stdout)?;
        let stderr = if paths.terminal {
            None
        } else {
            Sink::parse(&paths.stderr)?
        };
        let mut binary = None;
        let (stdout_sink, stderr_sink) = match (&stdout, &stderr) {
            (Some(Sink::Binary { path, args }), _) | (None, Some(Sink::Binary { path, args })) => {
                let (bin, out, err) = start_log_binary(path, args, ctx).await?;
                binary = Some(bin);
                (Some(out), (!paths.terminal).then_some(err))
            }
            _ => {
                let open = |s: &Option<Sink>| -> Result<Option<Writer>> {
                    match s {
                        None => Ok(None),
                        Some(Sink::Fifo(p)) => open_fifo_sink(p).map(Some),
                        Some(Sink::File(p)) => open_file_sink(p).map(Some),
                        Some(Sink::Binary { .. }) => Err(Error::InvalidArgument(
                            "binary:// must be given for both stdout and stderr".into(),
                        )),
                    }
                };
                (open(&stdout)?, open(&stderr)?)
            }
        };
        let stdin = if paths.stdin.is_empty() {
            None
        } else {
            Some(open_stdin_fifo(Path::new(&paths.stdin))?)
        };

        let output = |stream: Stream, sink: Option<Writer>| -> Result<Output> {
            let writer = ctx
                .journal
                .writer(ctx.process, stream)
                .map_err(journal_err)?;
            let consumer = || -> Result<Consumer> {
                let from = if ctx.restored {
                    ctx.journal.end(ctx.process, stream).map_err(journal_err)?
                } else {
                    Cursor::START
                };
                ctx.journal
                    .consumer_at(ctx.process, stream, from)
                    .map_err(journal_err)
            };
            let forward = match (&ctx.cri_log, sink) {
                (Some(file), hold) => Forward::CriLog(consumer()?, file.clone(), hold),
                (None, Some(w)) => Forward::Sink(consumer()?, w),
                (None, None) => {
                    return Ok(Output {
                        writer,
                        forward: None,
                    })
                }
            };
            Ok(Output {
                writer,
                forward: Some(forward),
            })
        };

        let mut io = ProcessIo {
            paths: paths.clone(),
            process: ctx.process.to_string(),
            child: None,
            console: Mutex::new(None),
            pending_output: Mutex::new(None),
            pending_stdin: Mutex::new(None),
            stdin_hold: Mutex::new(None),
            master: Mutex::new(None),
            drains: Mutex::new(Vec::new()),
            forwarders: Mutex::new(Vec::new()),
            forwarded: Mutex::new(Vec::new()),
            binary: Mutex::new(binary),
        };
        let (stdin_reader, hold) = match stdin {
            Some((r, h)) => (Some(r), Some(h)),
            None => (None, None),
        };
        *lock(&io.stdin_hold) = hold;

        if paths.terminal {
            *lock(&io.console) = Some(ConsoleSocket::new()?);
            *lock(&io.pending_output) = Some(output(Stream::Stdout, stdout_sink)?);
            *lock(&io.pending_stdin) = stdin_reader;
            return Ok(io);
        }

        let (out_r, out_w) = output_pipe()?;
        let (err_r, err_w) = output_pipe()?;
        io.start_output(async_fd(out_r)?, output(Stream::Stdout, stdout_sink)?);
        io.start_output(async_fd(err_r)?, output(Stream::Stderr, stderr_sink)?);
        let mut child_in = None;
        if let Some(reader) = stdin_reader {
            let (r, wr) = pipe()?;
            tokio::spawn(copy_stdin(reader, Writer::Fd(async_fd(wr)?)));
            child_in = Some(r);
        }
        io.child = Some(Arc::new(ChildStdio {
            stdin: Mutex::new(child_in),
            stdout: Mutex::new(Some(out_w)),
            stderr: Mutex::new(Some(err_w)),
        }));
        Ok(io)
    }

    fn start_output(&self, from: AsyncFd<OwnedFd>, output: Output) {
        let handoff = Arc::new(Handoff::default());
        lock(&self.drains).push(tokio::spawn(drain(from, output.writer, handoff.clone())));
        let Some(fwd) = output.forward else {
            return;
        };
        let (fin_tx, fin_rx) = watch::channel(false);
        lock(&self.forwarded).push(fin_rx);
        let task = match fwd {
            Forward::Sink(consumer, sink) => tokio::spawn(forward(consumer, sink, handoff, fin_tx)),
            Forward::CriLog(consumer, file, hold) => {
                tokio::spawn(forward_cri_lines(consumer, file, hold, handoff, fin_tx))
            }
        };
        lock(&self.forwarders).push(task);
    }

    /// Whether the process has a pty.
    pub fn terminal(&self) -> bool {
        self.paths.terminal
    }

    /// The stdio paths as containerd gave them.
    pub fn paths(&self) -> &StdioPaths {
        &self.paths
    }

    /// The journal's name for this process.
    pub fn process(&self) -> &str {
        &self.process
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
    /// master and start draining it.
    pub async fn connect_console(&self) -> Result<()> {
        let Some(console) = lock(&self.console).take() else {
            return Ok(());
        };
        let master = console.receive().await?;
        let dup = || {
            master
                .try_clone()
                .map_err(|e| Error::io("dup pty master", e))
        };
        if let Some(output) = lock(&self.pending_output).take() {
            self.start_output(async_fd(dup()?)?, output);
        }
        if let Some(stdin) = lock(&self.pending_stdin).take() {
            tokio::spawn(copy_stdin(stdin, Writer::Fd(async_fd(dup()?)?)));
        }
        *lock(&self.master) = Some(master);
        Ok(())
    }

    /// Waits (up to `timeout`) until every output stream reached end of file
    /// and is in the journal.
    pub async fn wait_output(&self, timeout: Duration) {
        let handles: Vec<_> = lock(&self.drains).drain(..).collect();
        if handles.is_empty() {
            return;
        }
        let all = futures::future::join_all(handles);
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!(
                ?timeout,
                process = %self.process,
                "output still open after the process exited (a child holds it?)"
            );
        }
    }

    /// Waits (up to `timeout`) until every sink got everything the journal
    /// holds. A reader that is away costs at most `timeout`: the journal
    /// keeps the rest and the forwarder goes on after it.
    pub async fn wait_forwarded(&self, timeout: Duration) {
        let mut pending: Vec<_> = lock(&self.forwarded).clone();
        let all = futures::future::join_all(
            pending
                .iter_mut()
                .map(|rx| async move { rx.wait_for(|d| *d).await.is_ok() }),
        );
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::info!(process = %self.process,
                "a sink has not taken all output yet; reporting the exit, forwarding goes on");
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

    /// Lets the forwarders finish (up to `grace`), then stops everything
    /// and drops every fd the shim holds for this process. The journal keeps
    /// whatever was not forwarded.
    pub async fn shutdown(&self, grace: Duration) {
        let forwarders: Vec<_> = lock(&self.forwarders).drain(..).collect();
        let aborts: Vec<_> = forwarders.iter().map(|h| h.abort_handle()).collect();
        if !forwarders.is_empty()
            && tokio::time::timeout(grace, futures::future::join_all(forwarders))
                .await
                .is_err()
        {
            tracing::info!(process = %self.process, "sink still not drained at delete; the journal keeps the rest");
            for a in aborts {
                a.abort();
            }
        }
        for h in lock(&self.drains).drain(..) {
            h.abort();
        }
        self.close();
        let bin = lock(&self.binary).take();
        if let Some(mut bin) = bin {
            // Its pipes are closed: it sees end of file and should exit.
            if let Some(rx) = bin.exited.take() {
                if tokio::time::timeout(grace, rx).await.is_err() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(bin.pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }

    /// Drops every fd the shim holds for this process.
    pub fn close(&self) {
        lock(&self.stdin_hold).take();
        lock(&self.master).take();
        lock(&self.pending_output).take();
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
    use holdfast_journal::{Entry, JournalOptions};

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
        assert_eq!(
            Sink::parse("binary:///usr/bin/logger?tag=x%20y&flag").unwrap(),
            Some(Sink::Binary {
                path: "/usr/bin/logger".into(),
                args: vec!["tag".into(), "x y".into(), "flag".into()],
            })
        );
        for bad in ["file://relative/x", "tcp://1.2.3.4", "binary://rel"] {
            assert!(
                matches!(Sink::parse(bad), Err(Error::InvalidArgument(_))),
                "{bad}"
            );
        }
    }

    /// The stdio of process "init" with its stdout going to `sink`, its
    /// journal in `dir`/j: the journal, the io, and the container's end of
    /// the stdout pipe (stderr closed).
    async fn stdout_to(dir: &Path, sink: String) -> (Journal, ProcessIo, OwnedFd) {
        let journal =
            Journal::open(JournalOptions::default().for_dir(dir.join("j")).unwrap()).unwrap();
        let reaper = Reaper::new();
        let ctx = IoContext {
            journal: &journal,
            process: "init",
            namespace: "ns",
            container_id: "c1",
            reaper: &reaper,
            restored: false,
            cri_log: None,
        };
        let paths = StdioPaths {
            stdout: sink,
            ..Default::default()
        };
        let io = ProcessIo::prepare(&paths, &ctx).await.unwrap();
        let child = io.child.clone().unwrap();
        let w = child.stdout.lock().unwrap().take().unwrap();
        child.stderr.lock().unwrap().take();
        (journal, io, w)
    }

    /// Output with lines of every length (and one far longer than a
    /// chunk), no newline at the end.
    fn varied_output(len: usize) -> Vec<u8> {
        let mut data = Vec::with_capacity(len);
        let mut line = 0usize;
        while data.len() < len {
            let n = if line % 97 == 0 {
                700_000
            } else {
                (line * 7919) % 3000
            };
            data.extend((0..n).map(|i| b'a' + ((i + line) % 26) as u8));
            data.push(b'\n');
            line += 1;
        }
        data.truncate(len);
        data
    }

    /// A FIFO reader that pauses now and then makes the forwarder switch
    /// between live mode (the drain writes to the FIFO) and catching up from
    /// the journal, many times: the reader still gets every byte once, in
    /// order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pausing_fifo_reader_gets_every_byte_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("out.fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (_journal, io, w) = stdout_to(dir.path(), fifo.display().to_string()).await;
        let data = varied_output(48 << 20);
        let total = data.len();
        let reader = std::thread::spawn(move || {
            let mut f = std::fs::File::open(&fifo).unwrap();
            let mut got = Vec::with_capacity(total);
            let mut buf = vec![0u8; 64 * 1024];
            let mut since_pause = 0;
            while got.len() < total {
                let n = std::io::Read::read(&mut f, &mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
                since_pause += n;
                if since_pause > 4 << 20 {
                    std::thread::sleep(Duration::from_millis(100));
                    since_pause = 0;
                }
            }
            got
        });
        let expected = data.clone();
        // Paced so that the forwarder catches up between the reader's pauses.
        tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::from(w);
            for piece in expected.chunks(256 * 1024) {
                std::io::Write::write_all(&mut f, piece).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        })
        .await
        .unwrap();
        io.wait_output(Duration::from_secs(10)).await;
        let got = tokio::task::spawn_blocking(move || reader.join().unwrap())
            .await
            .unwrap();
        io.shutdown(Duration::from_secs(5)).await;
        assert_eq!(got.len(), data.len());
        assert!(got == data, "the FIFO reader got other bytes than written");
    }

    /// Paced output keeps a file sink in live mode, where the drain writes
    /// each chunk to it right after journaling it: the file
    /// still gets every byte once, in order, and so does the journal.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipe_output_is_journaled_and_reaches_a_file_sink_byte_exact() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("out.log");
        let (_journal, io, w) = stdout_to(dir.path(), format!("file://{}", log.display())).await;
        let mut data = varied_output(16 << 20);
        data.extend((0..=255u8).cycle().take(300_000));
        let expected = data.clone();
        tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::from(w);
            for (i, piece) in expected.chunks(100_000).enumerate() {
                std::io::Write::write_all(&mut f, piece).unwrap();
                if i % 8 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })
        .await
        .unwrap();
        io.wait_output(Duration::from_secs(10)).await;
        io.shutdown(Duration::from_secs(5)).await;
        assert_eq!(std::fs::read(&log).unwrap(), data);
        let mut reader =
            holdfast_journal::Reader::open(dir.path().join("j"), "init", Stream::Stdout).unwrap();
        let mut records = Vec::new();
        while let Some(Entry::Record { record, .. }) = reader.try_next().unwrap() {
            records.push(record);
        }
        assert_eq!(holdfast_journal::reconstruct(&records), data);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_a_cri_log_file_both_streams_go_there_as_cri_lines_and_the_fifos_stay_silent() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(
            JournalOptions::default()
                .for_dir(dir.path().join("j"))
                .unwrap(),
        )
        .unwrap();
        let reaper = Reaper::new();
        let log = dir.path().join("pods/app/0.log");
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        let fifos: Vec<PathBuf> = ["out", "err"].iter().map(|n| dir.path().join(n)).collect();
        for f in &fifos {
            nix::unistd::mkfifo(f, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        }
        // containerd's readers of the FIFOs.
        let readers: Vec<std::fs::File> = fifos
            .iter()
            .map(|f| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(f)
                    .unwrap()
            })
            .collect();
        let ctx = IoContext {
            journal: &journal,
            process: "init",
            namespace: "k8s.io",
            container_id: "c1",
            reaper: &reaper,
            restored: false,
            cri_log: Some(Arc::new(CriLogFile::open(&log).unwrap())),
        };
        let paths = StdioPaths {
            stdout: fifos[0].display().to_string(),
            stderr: fifos[1].display().to_string(),
            ..Default::default()
        };
        let io = ProcessIo::prepare(&paths, &ctx).await.unwrap();
        let child = io.child.clone().unwrap();
        let out = child.stdout.lock().unwrap().take().unwrap();
        let err = child.stderr.lock().unwrap().take().unwrap();
        tokio::task::spawn_blocking(move || {
            let (mut out, mut err) = (std::fs::File::from(out), std::fs::File::from(err));
            for i in 0..2000 {
                std::io::Write::write_all(&mut out, format!("out {i}\n").as_bytes()).unwrap();
                if i % 100 == 0 {
                    std::io::Write::write_all(&mut err, format!("err {i}\n").as_bytes()).unwrap();
                }
            }
            // A last line without its end: a P record.
            std::io::Write::write_all(&mut out, b"tail").unwrap();
        })
        .await
        .unwrap();
        io.wait_output(Duration::from_secs(10)).await;
        io.wait_forwarded(Duration::from_secs(10)).await;
        let text = std::fs::read_to_string(&log).unwrap();
        let mut outs = Vec::new();
        let mut errs = Vec::new();
        for line in text.lines() {
            let r = holdfast_journal::parse_line(line.as_bytes()).unwrap();
            let body = String::from_utf8(r.text).unwrap();
            match r.stream {
                Stream::Stdout => outs.push((body, r.partial)),
                Stream::Stderr => errs.push((body, r.partial)),
            }
        }
        let want_out: Vec<(String, bool)> = (0..2000)
            .map(|i| (format!("out {i}"), false))
            .chain([("tail".to_string(), true)])
            .collect();
        assert_eq!(outs, want_out);
        let want_err: Vec<(String, bool)> = (0..2000)
            .step_by(100)
            .map(|i| (format!("err {i}"), false))
            .collect();
        assert_eq!(errs, want_err);
        // Nothing reached the FIFOs, and their readers see end of file once
        // the streams are done (the shim's write ends are closed).
        for mut r in readers {
            let mut buf = [0u8; 64];
            let n = std::io::Read::read(&mut r, &mut buf).unwrap();
            assert_eq!(n, 0, "the FIFO got {:?}", &buf[..n]);
        }
        io.shutdown(Duration::from_secs(1)).await;
    }
}
