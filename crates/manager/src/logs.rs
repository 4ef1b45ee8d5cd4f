//! `Logs`: a container's output read straight from its journal (the shim
//! writes it; holdfastd only reads the files), with `tail`, `since` and
//! `follow`.
//!
//! - **Lines.** A line is the journal's `P` records joined with the `F`
//!   record that ends it, sent as one piece of at most [`CHUNK_BYTES`] (a
//!   longer line, or one still open, goes in several pieces of the same
//!   stream). Bytes arrive exactly as the container wrote them.
//! - **Order.** stdout and stderr are separate journal streams; their
//!   lines are merged by the time the shim read each line's first bytes
//!   (stdout first on a tie).
//! - **Tail.** [`LineStarts`] walks each stream's line starts backwards
//!   from its newest segment; the two walks are merged newest first until
//!   `tail` lines are taken ([`tail_starts`]), so only the end of the
//!   journal is read. Without `follow`, reading stops at the end the
//!   streams had when the call came, so a busy container cannot keep it
//!   going.
//! - **Since.** Each stream starts in the newest segment whose first
//!   record is older than `since` ([`since_start`]); lines that began
//!   before it are skipped.
//! - **Follow.** After what is there, the streams are polled every
//!   [`POLL_INTERVAL`]. The follow ends once the task has exited and what
//!   the journal holds was sent (the shim journals a process's output to
//!   its end before it reports the exit), or when the client goes away.
//! - **Gaps.** Bytes the journal lost (segments deleted before they were
//!   read, torn or malformed records) are reported as a gap piece.

use std::time::Duration;

use holdfast_api::v1::{LogStream, LogsResponse};
use holdfast_journal::{
    since_start, Cursor, Entry, JournalError, LineStart, LineStarts, Reader, Stream,
};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info_span, warn, Instrument};

use crate::containerd::{Containerd, TaskStatus};
use crate::error::{Error, Result};
use crate::manager::Manager;
use crate::validate::validate_name;

/// The journal's name for a container's init process.
pub const INIT_PROCESS: &str = "init";
/// Largest piece of output in one message (well under gRPC's 4 MiB).
pub const CHUNK_BYTES: usize = 256 << 10;
/// How much output one read of the journal gathers before sending it.
const BATCH_BYTES: usize = 1 << 20;
/// How often a follow looks for new output.
pub const POLL_INTERVAL: Duration = holdfast_journal::POLL_INTERVAL;
/// Messages in flight to one client.
const CHANNEL_DEPTH: usize = 16;

/// What a Logs call asks for, validated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogsOptions {
    /// Keep streaming until the task exits.
    pub follow: bool,
    /// Only the last this many lines (`None`: all).
    pub tail: Option<u64>,
    /// Only lines that began at or after this time.
    pub since: Option<OffsetDateTime>,
}

impl LogsOptions {
    /// Options from the request's fields: `tail` 0 means all; `since` must
    /// be a valid time.
    pub fn new(
        follow: bool,
        tail: u64,
        since: Option<prost_types::Timestamp>,
    ) -> Result<LogsOptions> {
        Ok(LogsOptions {
            follow,
            tail: (tail > 0).then_some(tail),
            since: since.map(|ts| parse_since(&ts)).transpose()?,
        })
    }
}

/// A protobuf timestamp as a time: nanos in 0..1e9, a year OffsetDateTime
/// can hold.
pub fn parse_since(ts: &prost_types::Timestamp) -> Result<OffsetDateTime> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(Error::invalid(
            "since",
            format!("nanos {} is not in 0..1000000000", ts.nanos),
        ));
    }
    let nanos = i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| {
        Error::invalid(
            "since",
            format!("{} seconds is not a representable time", ts.seconds),
        )
    })
}

/// One piece of output, or a gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogChunk {
    /// Bytes of one stream: a whole line or part of one.
    Output {
        /// The stream.
        stream: Stream,
        /// When its first bytes were read.
        time: OffsetDateTime,
        /// The bytes, with the newline when the line ends here.
        data: Vec<u8>,
    },
    /// The journal lost output of `stream` here.
    Gap {
        /// The stream.
        stream: Stream,
    },
}

impl LogChunk {
    fn len(&self) -> usize {
        match self {
            LogChunk::Output { data, .. } => data.len(),
            LogChunk::Gap { .. } => 0,
        }
    }

    /// The message that carries it.
    pub fn into_response(self) -> LogsResponse {
        let wire = |s: Stream| match s {
            Stream::Stdout => LogStream::Stdout as i32,
            Stream::Stderr => LogStream::Stderr as i32,
        };
        match self {
            LogChunk::Output { stream, time, data } => LogsResponse {
                stream: wire(stream),
                time: Some(prost_types::Timestamp {
                    seconds: time.unix_timestamp(),
                    nanos: time.nanosecond() as i32,
                }),
                data,
                gap: false,
            },
            LogChunk::Gap { stream } => LogsResponse {
                stream: wire(stream),
                time: None,
                data: Vec::new(),
                gap: true,
            },
        }
    }
}

/// Where each stream (stdout, stderr) starts so that together they hold
/// the last `n` lines: the oldest of the `n` newest line starts of each,
/// or `None` for a stream none of them is in. `walks` yield line starts
/// newest first.
pub fn tail_starts<I>(
    walks: [I; 2],
    n: u64,
) -> std::result::Result<[Option<Cursor>; 2], JournalError>
where
    I: Iterator<Item = std::result::Result<LineStart, JournalError>>,
{
    let [mut a, mut b] = walks;
    let mut heads = [a.next().transpose()?, b.next().transpose()?];
    let mut starts = [None, None];
    for _ in 0..n {
        // The newer head; stderr on a tie (stdout goes first forwards).
        let i = match (&heads[0], &heads[1]) {
            (Some(x), Some(y)) => usize::from(y.timestamp >= x.timestamp),
            (Some(_), None) => 0,
            (None, Some(_)) => 1,
            (None, None) => break,
        };
        starts[i] = heads[i].map(|h| h.at);
        heads[i] = if i == 0 { a.next() } else { b.next() }.transpose()?;
    }
    Ok(starts)
}

/// One stream being read forwards.
struct Source {
    stream: Stream,
    reader: Reader,
    /// Reading stops here (no follow): the end when the call came.
    end: Option<Cursor>,
    since: Option<OffsetDateTime>,
    /// The last record read was a `P` record: the next continues a line.
    mid_line: bool,
    /// The current line began before `since`.
    skipping: bool,
    /// A gap found after the bytes of the last piece.
    held_gap: bool,
    /// The next piece, read but not sent.
    peeked: Option<LogChunk>,
}

impl Source {
    /// The next piece there is now: a line, part of one (at most
    /// `cap` bytes, or what is written of an open line), or a gap.
    fn next_chunk(&mut self, cap: usize) -> Result<Option<LogChunk>, JournalError> {
        if std::mem::take(&mut self.held_gap) {
            return Ok(Some(LogChunk::Gap {
                stream: self.stream,
            }));
        }
        let mut piece: Option<(OffsetDateTime, Vec<u8>)> = None;
        loop {
            if self.end.is_some_and(|end| self.reader.position() >= end) {
                break;
            }
            let entry = match self.reader.try_next() {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e @ JournalError::Malformed { .. }) => {
                    warn!(stream = %self.stream, error = %e, "a malformed journal record; reporting a gap");
                    Entry::Gap {
                        from: self.reader.position(),
                        to: self.reader.position(),
                    }
                }
                Err(e) => return Err(e),
            };
            match entry {
                Entry::Gap { from, to } => {
                    debug!(stream = %self.stream, ?from, ?to, "journal gap");
                    self.mid_line = false;
                    self.skipping = false;
                    if piece.is_some() {
                        self.held_gap = true;
                        break;
                    }
                    return Ok(Some(LogChunk::Gap {
                        stream: self.stream,
                    }));
                }
                Entry::Record { record, .. } => {
                    if !self.mid_line {
                        self.skipping = self.since.is_some_and(|s| record.timestamp < s);
                    }
                    self.mid_line = record.partial;
                    if self.skipping {
                        continue;
                    }
                    let (_, data) = piece.get_or_insert_with(|| (record.timestamp, Vec::new()));
                    record.write_raw(data);
                    if !record.partial || data.len() >= cap {
                        break;
                    }
                }
            }
        }
        Ok(piece.map(|(time, data)| LogChunk::Output {
            stream: self.stream,
            time,
            data,
        }))
    }
}

/// stdout and stderr of one container, merged.
pub struct LogReader {
    sources: Vec<Source>,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("streams", &self.sources.len())
            .finish()
    }
}

impl LogReader {
    /// Opens the journal in `dir` where `options` say to start (reads the
    /// end of the segments for `tail`, one record per segment for `since`).
    pub fn open(dir: &std::path::Path, options: &LogsOptions) -> Result<LogReader, JournalError> {
        let walks = [
            LineStarts::open(dir, INIT_PROCESS, Stream::Stdout)?,
            LineStarts::open(dir, INIT_PROCESS, Stream::Stderr)?,
        ];
        let ends = [walks[0].end(), walks[1].end()];
        let starts = match options.tail {
            Some(n) => tail_starts(walks, n)?,
            None => [Some(Cursor::START); 2],
        };
        let mut sources = Vec::with_capacity(2);
        for (i, stream) in Stream::ALL.into_iter().enumerate() {
            // A stream none of the last lines is in starts at its end.
            let mut start = starts[i].or(ends[i]).unwrap_or(Cursor::START);
            if let Some(since) = options.since {
                start = start.max(since_start(dir, INIT_PROCESS, stream, since)?);
            }
            let end = if options.follow {
                None
            } else {
                Some(ends[i].unwrap_or(Cursor::START))
            };
            sources.push(Source {
                stream,
                reader: Reader::open_at(dir, INIT_PROCESS, stream, start)?,
                end,
                since: options.since,
                mid_line: false,
                skipping: false,
                held_gap: false,
                peeked: None,
            });
        }
        Ok(LogReader { sources })
    }

    /// The pieces there are now, in order, until about `budget` bytes.
    pub fn read_now(&mut self, budget: usize) -> Result<Vec<LogChunk>, JournalError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        while bytes < budget {
            for s in &mut self.sources {
                if s.peeked.is_none() {
                    s.peeked = s.next_chunk(CHUNK_BYTES)?;
                }
            }
            // The oldest piece; a gap goes at once.
            let next = self
                .sources
                .iter()
                .enumerate()
                .filter_map(|(i, s)| match &s.peeked {
                    Some(LogChunk::Output { time, .. }) => Some((Some(*time), i)),
                    Some(LogChunk::Gap { .. }) => Some((None, i)),
                    None => None,
                })
                .min();
            let Some((_, i)) = next else { break };
            if let Some(chunk) = self.sources[i].peeked.take() {
                bytes += chunk.len();
                out.push(chunk);
            }
        }
        Ok(out)
    }
}

/// Reads what is there on the blocking pool (journal reads are file I/O).
async fn read_batch(mut reader: LogReader) -> Result<(LogReader, Vec<LogChunk>)> {
    tokio::task::spawn_blocking(move || {
        let chunks = reader.read_now(BATCH_BYTES);
        (reader, chunks)
    })
    .await
    .map_err(|e| Error::Internal(format!("journal read task: {e}")))
    .and_then(|(r, chunks)| Ok((r, chunks.map_err(Error::from)?)))
}

/// Resolves once task `name` has exited or is gone. A failed wait (e.g.
/// containerd restarting) falls back to looking at the task every second.
async fn task_exited(containerd: Containerd, name: String) {
    loop {
        match containerd.wait(&name).await {
            Ok(_) => return,
            Err(e) if e.is_not_found() => return,
            Err(e) => {
                debug!(container = %name, error = %e, "waiting for the task failed; polling it")
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        match containerd.get_task(&name).await {
            Ok(None) => return,
            Ok(Some(t)) if t.status == TaskStatus::Stopped => return,
            _ => {}
        }
    }
}

/// The stream of a Logs call.
pub type LogsStream = ReceiverStream<Result<LogChunk>>;

impl Manager {
    /// Container `name`'s output from its journal (see the module docs).
    /// Bad input and an unknown container are refused before anything is
    /// read; errors while reading end the stream.
    pub async fn logs(&self, name: &str, options: LogsOptions) -> Result<LogsStream> {
        validate_name(name)?;
        let span =
            info_span!("logs", container = %name, follow = options.follow, tail = ?options.tail);
        async {
            if self.get(name).await?.is_none() {
                return Err(Error::NotFound {
                    what: format!("container {name:?}"),
                });
            }
            // Whether the task can still write, asked before reading: if it
            // already exited, the journal has all it wrote.
            let live = if options.follow {
                matches!(
                    self.containerd.get_task(name).await?,
                    Some(t) if t.status != TaskStatus::Stopped
                )
            } else {
                false
            };
            let dir = self.journal_dir(name);
            let opts = options;
            let reader = tokio::task::spawn_blocking(move || LogReader::open(&dir, &opts))
                .await
                .map_err(|e| Error::Internal(format!("journal open task: {e}")))??;
            let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
            let exited = live.then(|| task_exited(self.containerd.clone(), name.to_owned()));
            tokio::spawn(
                pump(reader, tx, options.follow, exited).instrument(tracing::Span::current()),
            );
            Ok(ReceiverStream::new(rx))
        }
        .instrument(span)
        .await
    }
}

/// Sends the reader's pieces; with `follow`, polls for more until `exited`
/// resolved and all was sent (no `exited`: the task cannot write any more).
async fn pump(
    mut reader: LogReader,
    tx: mpsc::Sender<Result<LogChunk>>,
    follow: bool,
    exited: Option<impl std::future::Future<Output = ()>>,
) {
    let mut exited = exited.map(Box::pin);
    let mut sent = 0usize;
    loop {
        let chunks = match read_batch(reader).await {
            Ok((r, chunks)) => {
                reader = r;
                chunks
            }
            Err(e) => {
                warn!(error = %e, "reading the journal failed");
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let idle = chunks.is_empty();
        for c in chunks {
            sent += 1;
            if tx.send(Ok(c)).await.is_err() {
                debug!(sent, "the client went away");
                return;
            }
        }
        if !idle {
            continue;
        }
        // Everything there now was sent.
        let Some(exit) = exited.as_mut().filter(|_| follow) else {
            break;
        };
        tokio::select! {
            () = tokio::time::sleep(POLL_INTERVAL) => {}
            () = exit => {
                // One more pass reads what the task wrote before it exited.
                exited = None;
            }
            () = tx.closed() => {
                debug!(sent, "the client went away");
                return;
            }
        }
    }
    debug!(sent, "logs sent");
}

#[cfg(test)]
#[path = "logs_tests.rs"]
mod tests;
