//! Readers that follow a stream across rotations (like `tail -F`), and
//! consumers whose cursor holds back deletion.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::{JournalError, ParseError, Result};
use crate::journal::{Key, Shared};
use crate::record::{parse_line, parse_line_raw, Record, Stream};
use crate::segment::{next_segment_after, segment_path, validate_process_id};

/// How often a reader without a writer in its process looks for new data.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A position in a stream: a segment and a byte offset in it. Cursors order
/// as the records they point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cursor {
    /// The segment's sequence number.
    pub segment: u64,
    /// Byte offset in the segment.
    pub offset: u64,
}

impl Cursor {
    /// Before everything: reading starts at the oldest existing segment.
    pub const START: Cursor = Cursor {
        segment: 0,
        offset: 0,
    };
}

/// What a reader read next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A record, and the cursor just after it.
    Record {
        /// The record.
        record: Record,
        /// Where the next read starts; commit this after handling the record.
        next: Cursor,
    },
    /// Bytes between `from` and `to` are gone: their segment was deleted
    /// (by the budget or retention) before it was read, or a finished
    /// segment ended in a torn record.
    Gap {
        /// Where reading stopped.
        from: Cursor,
        /// Where reading resumes.
        to: Cursor,
    },
}

impl Entry {
    /// The cursor after this entry.
    pub fn cursor(&self) -> Cursor {
        match self {
            Entry::Record { next, .. } => *next,
            Entry::Gap { to, .. } => *to,
        }
    }
}

/// What [`Reader::read_raw`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawRead {
    /// `records` consecutive records were appended to the buffer, as the
    /// bytes the container wrote; `next` is the cursor after the last one.
    Records {
        /// How many records.
        records: usize,
        /// Where the next read starts; commit this once the bytes are handled.
        next: Cursor,
    },
    /// Bytes between `from` and `to` are gone (see [`Entry::Gap`]); nothing
    /// was appended.
    Gap {
        /// Where reading stopped.
        from: Cursor,
        /// Where reading resumes.
        to: Cursor,
    },
}

/// How [`Reader::read_batch`] appends a record.
#[derive(Clone, Copy)]
enum RawFormat {
    /// The bytes the container wrote.
    Bytes,
    /// The journal's line, as is.
    Lines,
}

/// The next thing in the files: a line (by its place in `pending`) or a gap.
enum Step {
    Line {
        start: usize,
        end: usize,
        at: Cursor,
    },
    Gap {
        from: Cursor,
        to: Cursor,
    },
}

/// Something found after records a batch already holds: returned by the
/// next call instead of splitting it from the records before it.
enum Held {
    Gap { from: Cursor, to: Cursor },
    Malformed { at: Cursor, source: ParseError },
}

/// Reads one stream's records in order, following rotation: at the end of
/// segment N it continues in the next existing segment once there is one.
///
/// It reads the files only, so another process (the manager) can use it with
/// [`Reader::open`]; [`Reader::next`] then polls every [`POLL_INTERVAL`].
/// A reader from [`crate::Journal::reader`] is woken by the writer instead.
pub struct Reader {
    dir: PathBuf,
    process: String,
    stream: Stream,
    pos: Cursor,
    file: Option<File>,
    /// The read buffer: `pending[head..filled]` holds bytes read from the
    /// file at `pos.offset..`, not yet returned. Its length is its size (it
    /// is zeroed once, when it grows, not at every read).
    pending: Vec<u8>,
    /// End of the bytes read into `pending`.
    filled: usize,
    /// Where the unread part of `pending` starts (records before it were
    /// returned; the buffer is compacted once per fill, not per record).
    head: usize,
    /// Up to where `pending` is known to hold no `\n` (absolute index).
    scanned: usize,
    /// A gap or bad line found behind records a batch returned.
    held: Option<Held>,
    /// The journal's segment index, for a reader made by [`crate::Journal`].
    index: Option<(Arc<Shared>, Key)>,
    notify: Option<watch::Receiver<u64>>,
    poll: Duration,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("dir", &self.dir)
            .field("process", &self.process)
            .field("stream", &self.stream)
            .field("pos", &self.pos)
            .finish()
    }
}

const READ_CHUNK: usize = 64 << 10;

impl Reader {
    /// A reader of the journal in `dir` (a task's folder) from its oldest
    /// segment.
    pub fn open(dir: impl Into<PathBuf>, process: &str, stream: Stream) -> Result<Reader> {
        Reader::open_at(dir, process, stream, Cursor::START)
    }

    /// A reader of the journal in `dir` from `from`.
    pub fn open_at(
        dir: impl Into<PathBuf>,
        process: &str,
        stream: Stream,
        from: Cursor,
    ) -> Result<Reader> {
        validate_process_id(process)?;
        Ok(Reader {
            dir: dir.into(),
            process: process.to_owned(),
            stream,
            pos: from,
            file: None,
            pending: Vec::new(),
            filled: 0,
            head: 0,
            scanned: 0,
            held: None,
            index: None,
            notify: None,
            poll: POLL_INTERVAL,
        })
    }

    /// Makes it a reader of a journal open in this process: woken by its
    /// writer, finding segments in its index.
    pub(crate) fn attach(&mut self, rx: watch::Receiver<u64>, shared: Arc<Shared>, key: Key) {
        self.notify = Some(rx);
        self.index = Some((shared, key));
    }

    /// Moves the read position to `at`; what was read ahead is dropped.
    pub fn seek(&mut self, at: Cursor) {
        self.held = None;
        self.move_to(at);
    }

    /// Sets how often [`Reader::next`] polls when no writer wakes it.
    pub fn set_poll_interval(&mut self, poll: Duration) {
        self.poll = poll;
    }

    /// The cursor of the next record to read.
    pub fn position(&self) -> Cursor {
        self.pos
    }

    /// The journal folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, seq: u64) -> PathBuf {
        segment_path(&self.dir, &self.process, self.stream, seq)
    }

    /// The oldest segment after `after`, if any: from the journal's index
    /// when the reader came from [`crate::Journal`] (no system call; called
    /// whenever a reader caught up), else from the folder.
    fn next_segment(&self, after: u64) -> Result<Option<u64>> {
        if let Some((shared, key)) = &self.index {
            let st = shared.lock();
            return Ok(st
                .streams
                .get(key)
                .and_then(|ss| ss.segments.range(after + 1..).next().map(|(&seq, _)| seq)));
        }
        if self.path(after + 1).exists() {
            return Ok(Some(after + 1));
        }
        next_segment_after(&self.dir, &self.process, self.stream, after)
    }

    fn switch_to(&mut self, seq: u64) {
        self.move_to(Cursor {
            segment: seq,
            offset: 0,
        });
    }

    fn move_to(&mut self, at: Cursor) {
        self.file = None;
        self.filled = 0;
        self.head = 0;
        self.scanned = 0;
        self.pos = at;
    }

    /// Opens the segment under the cursor or, if it is gone, the oldest
    /// one after it. `Some(gap)` when the cursor had to skip a segment that
    /// was deleted (leaving [`Cursor::START`] is no skip).
    fn open_current(&mut self) -> Result<Option<Entry>> {
        let mut gap_from: Option<Cursor> = None;
        loop {
            if self.pos.segment > 0 {
                let path = self.path(self.pos.segment);
                match File::open(&path) {
                    Ok(mut f) => {
                        f.seek(SeekFrom::Start(self.pos.offset))
                            .map_err(|e| JournalError::io("seek", &path, e))?;
                        self.file = Some(f);
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(JournalError::io("open", &path, e)),
                }
            }
            let Some(next) = self.next_segment(self.pos.segment)? else {
                break;
            };
            if self.pos != Cursor::START && gap_from.is_none() {
                gap_from = Some(self.pos);
            }
            self.switch_to(next);
        }
        Ok(gap_from.map(|from| Entry::Gap { from, to: self.pos }))
    }

    /// Reads more of the current file into `pending`; the number of bytes.
    fn fill(&mut self) -> Result<usize> {
        let Some(f) = self.file.as_mut() else {
            return Ok(0);
        };
        if self.head > 0 {
            self.pending.copy_within(self.head..self.filled, 0);
            self.filled -= self.head;
            self.scanned -= self.head;
            self.head = 0;
        }
        if self.pending.len() - self.filled < READ_CHUNK {
            self.pending.resize(self.filled + READ_CHUNK, 0);
        }
        let n = loop {
            match f.read(&mut self.pending[self.filled..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(JournalError::io("read", self.path(self.pos.segment), e)),
            }
        };
        self.filled += n;
        Ok(n)
    }

    /// The next line or gap in the files, if one is there now.
    fn step(&mut self) -> Result<Option<Step>> {
        loop {
            if self.file.is_none() {
                if let Some(Entry::Gap { from, to }) = self.open_current()? {
                    return Ok(Some(Step::Gap { from, to }));
                }
                if self.file.is_none() {
                    return Ok(None);
                }
            }
            if let Some(i) = memchr::memchr(b'\n', &self.pending[self.scanned..self.filled]) {
                let end = self.scanned + i;
                let (start, at) = (self.head, self.pos);
                self.pos.offset += (end + 1 - self.head) as u64;
                self.head = end + 1;
                self.scanned = self.head;
                return Ok(Some(Step::Line { start, end, at }));
            }
            self.scanned = self.filled;
            if self.fill()? > 0 {
                continue;
            }
            // End of this segment for now. Once a later one exists, this one
            // is finished: read what was written before the rotation, then
            // move on.
            let Some(next) = self.next_segment(self.pos.segment)? else {
                return Ok(None);
            };
            if self.fill()? > 0 {
                continue;
            }
            let from = self.pos;
            let torn = self.filled > self.head;
            self.switch_to(next);
            if torn || next != from.segment + 1 {
                return Ok(Some(Step::Gap { from, to: self.pos }));
            }
        }
    }

    fn malformed(&self, at: Cursor, source: ParseError) -> JournalError {
        JournalError::Malformed {
            path: self.path(at.segment),
            offset: at.offset,
            source,
        }
    }

    /// Returns what a previous batch held back, if anything.
    fn take_held(&mut self) -> Result<Option<Step>> {
        match self.held.take() {
            None => Ok(None),
            Some(Held::Gap { from, to }) => Ok(Some(Step::Gap { from, to })),
            Some(Held::Malformed { at, source }) => Err(self.malformed(at, source)),
        }
    }

    /// The next entry if one is there now, without waiting. A malformed line
    /// is returned as [`JournalError::Malformed`] and skipped: the next call
    /// goes on after it.
    pub fn try_next(&mut self) -> Result<Option<Entry>> {
        let step = match self.take_held()? {
            Some(s) => s,
            None => match self.step()? {
                Some(s) => s,
                None => return Ok(None),
            },
        };
        match step {
            Step::Gap { from, to } => Ok(Some(Entry::Gap { from, to })),
            Step::Line { start, end, at } => match parse_line(&self.pending[start..end]) {
                Ok(record) => Ok(Some(Entry::Record {
                    record,
                    next: self.pos,
                })),
                Err(source) => Err(self.malformed(at, source)),
            },
        }
    }

    /// Appends the bytes of the records that are there now (in order, as
    /// the container wrote them) to `out`, until `out` holds at least
    /// `limit` bytes or no record is left, without parsing timestamps or
    /// copying records one by one: the fast path of a forwarder.
    ///
    /// `None` when nothing is there now. A gap ends a batch (it is returned
    /// by itself, by the next call if records came first); so does a
    /// malformed line, returned as [`JournalError::Malformed`] (and skipped)
    /// by the call that meets it first in a batch.
    pub fn read_raw(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<Option<RawRead>> {
        self.read_batch(out, limit, RawFormat::Bytes)
    }

    /// [`Reader::read_raw`], but each record is appended as its whole CRI
    /// log line (`<time> <stream> <P|F> <text>\n`, as journaled): what a
    /// Kubernetes container log file holds.
    pub fn read_lines(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<Option<RawRead>> {
        self.read_batch(out, limit, RawFormat::Lines)
    }

    fn read_batch(
        &mut self,
        out: &mut Vec<u8>,
        limit: usize,
        format: RawFormat,
    ) -> Result<Option<RawRead>> {
        if let Some(Step::Gap { from, to }) = self.take_held()? {
            return Ok(Some(RawRead::Gap { from, to }));
        }
        let mut records = 0;
        while out.len() < limit {
            let Some(step) = self.step()? else { break };
            match step {
                Step::Gap { from, to } if records == 0 => {
                    return Ok(Some(RawRead::Gap { from, to }))
                }
                Step::Gap { from, to } => {
                    self.held = Some(Held::Gap { from, to });
                    break;
                }
                Step::Line { start, end, at } => match parse_line_raw(&self.pending[start..end]) {
                    Ok(r) => {
                        match format {
                            RawFormat::Bytes => r.write_raw(out),
                            RawFormat::Lines => {
                                out.extend_from_slice(&self.pending[start..end]);
                                out.push(b'\n');
                            }
                        }
                        records += 1;
                    }
                    Err(source) if records == 0 => return Err(self.malformed(at, source)),
                    Err(source) => {
                        self.held = Some(Held::Malformed { at, source });
                        break;
                    }
                },
            }
        }
        // The cursor after the last record: a held entry was already
        // stepped over, but it is not part of this batch.
        let next = match &self.held {
            Some(Held::Gap { from, .. }) => *from,
            Some(Held::Malformed { at, .. }) => *at,
            None => self.pos,
        };
        Ok((records > 0).then_some(RawRead::Records { records, next }))
    }

    /// Waits until `f` finds something: woken by the writer when the reader
    /// came from [`crate::Journal`], else polling every poll interval.
    async fn wait_for<T>(
        &mut self,
        mut f: impl FnMut(&mut Self) -> Result<Option<T>>,
    ) -> Result<T> {
        loop {
            if let Some(rx) = self.notify.as_mut() {
                rx.borrow_and_update();
            }
            if let Some(t) = f(self)? {
                return Ok(t);
            }
            match self.notify.as_mut() {
                Some(rx) => {
                    // The wake-up covers appends by this journal's writer; the
                    // timeout covers anything else (e.g. a writer in another
                    // process after a restart).
                    let _ = tokio::time::timeout(self.poll * 10, rx.changed()).await;
                }
                None => tokio::time::sleep(self.poll).await,
            }
        }
    }

    /// [`Reader::read_raw`], waiting until there is something.
    pub async fn next_raw(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<RawRead> {
        self.wait_for(|r| r.read_raw(out, limit)).await
    }

    /// The next entry, waiting for it: woken by the writer when the reader
    /// came from [`crate::Journal`], else polling every poll interval.
    pub async fn next(&mut self) -> Result<Entry> {
        self.wait_for(Reader::try_next).await
    }
}

/// A registered reader: segments it has not read past are never deleted.
/// Read with [`Consumer::next`] / [`Consumer::try_next`], handle the entry,
/// then [`Consumer::commit`] its cursor. Dropping it unregisters it.
pub struct Consumer {
    shared: Arc<Shared>,
    key: Key,
    id: u64,
    reader: Reader,
    committed: Cursor,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("process", &self.key.0)
            .field("stream", &self.key.1)
            .field("committed", &self.committed)
            .field("reader", &self.reader)
            .finish()
    }
}

impl Consumer {
    pub(crate) fn new(shared: Arc<Shared>, key: Key, id: u64, reader: Reader, at: Cursor) -> Self {
        Consumer {
            shared,
            key,
            id,
            reader,
            committed: at,
        }
    }

    /// The next entry if one is there now.
    pub fn try_next(&mut self) -> Result<Option<Entry>> {
        self.reader.try_next()
    }

    /// The next entry, waiting for it.
    pub async fn next(&mut self) -> Result<Entry> {
        self.reader.next().await
    }

    /// [`Reader::read_raw`]: the raw bytes of the records there now.
    pub fn read_raw(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<Option<RawRead>> {
        self.reader.read_raw(out, limit)
    }

    /// [`Reader::read_lines`]: the CRI log lines of the records there now.
    pub fn read_lines(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<Option<RawRead>> {
        self.reader.read_lines(out, limit)
    }

    /// [`Reader::next_raw`]: [`Consumer::read_raw`], waiting for something.
    pub async fn next_raw(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<RawRead> {
        self.reader.next_raw(out, limit).await
    }

    /// Marks everything before `at` as handled (forwarded): segments wholly
    /// before it may be deleted when space is needed, or beyond the
    /// retention count. A cursor behind the committed one is ignored.
    pub fn commit(&mut self, at: Cursor) {
        if at > self.committed {
            self.committed = at;
            self.shared.commit(&self.key, self.id, at);
        }
    }

    /// The last committed cursor.
    pub fn committed(&self) -> Cursor {
        self.committed
    }

    /// The cursor of the next entry the consumer will read.
    pub fn position(&self) -> Cursor {
        self.reader.position()
    }

    /// Moves the read position to `at` (a cursor a writer or a read
    /// returned; forward or back, as long as its segment was not deleted)
    /// and commits it.
    pub fn seek(&mut self, at: Cursor) {
        self.reader.seek(at);
        self.commit(at);
    }

    /// Unregisters the consumer (as dropping it does).
    pub fn close(self) {}
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.shared.unregister_consumer(&self.key, self.id);
    }
}
