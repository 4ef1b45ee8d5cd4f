//! Readers that follow a stream across rotations (like `tail -F`), and
//! consumers whose cursor holds back deletion.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::{JournalError, Result};
use crate::journal::{Key, Shared};
use crate::record::{parse_line, Record, Stream};
use crate::segment::{list_segments, segment_path, validate_process_id};

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
    /// Bytes read from the file at `pos.offset..`, not yet returned.
    pending: Vec<u8>,
    /// Where the unread part of `pending` starts (records before it were
    /// returned; the buffer is compacted once per fill, not per record).
    head: usize,
    /// Up to where `pending` is known to hold no `\n` (absolute index).
    scanned: usize,
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
            head: 0,
            scanned: 0,
            notify: None,
            poll: POLL_INTERVAL,
        })
    }

    pub(crate) fn set_notify(&mut self, rx: watch::Receiver<u64>) {
        self.notify = Some(rx);
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

    /// The oldest segment after `after`, if any.
    fn next_segment(&self, after: u64) -> Result<Option<u64>> {
        if self.path(after + 1).exists() {
            return Ok(Some(after + 1));
        }
        Ok(list_segments(&self.dir, &self.process, self.stream)?
            .into_iter()
            .map(|s| s.0)
            .find(|&s| s > after))
    }

    fn switch_to(&mut self, seq: u64) {
        self.file = None;
        self.pending.clear();
        self.head = 0;
        self.scanned = 0;
        self.pos = Cursor {
            segment: seq,
            offset: 0,
        };
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
            self.pending.drain(..self.head);
            self.scanned -= self.head;
            self.head = 0;
        }
        let len = self.pending.len();
        self.pending.resize(len + READ_CHUNK, 0);
        let n = loop {
            match f.read(&mut self.pending[len..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.pending.truncate(len);
                    return Err(JournalError::io("read", self.path(self.pos.segment), e));
                }
            }
        };
        self.pending.truncate(len + n);
        Ok(n)
    }

    /// The next entry if one is there now, without waiting. A malformed line
    /// is returned as [`JournalError::Malformed`] and skipped: the next call
    /// goes on after it.
    pub fn try_next(&mut self) -> Result<Option<Entry>> {
        loop {
            if self.file.is_none() {
                let gap = self.open_current()?;
                if gap.is_some() {
                    return Ok(gap);
                }
                if self.file.is_none() {
                    return Ok(None);
                }
            }
            if let Some(i) = self.pending[self.scanned..]
                .iter()
                .position(|&b| b == b'\n')
            {
                let end = self.scanned + i;
                let at = self.pos;
                let parsed = parse_line(&self.pending[self.head..end]);
                self.pos.offset += (end + 1 - self.head) as u64;
                self.head = end + 1;
                self.scanned = self.head;
                return match parsed {
                    Ok(record) => Ok(Some(Entry::Record {
                        record,
                        next: self.pos,
                    })),
                    Err(source) => Err(JournalError::Malformed {
                        path: self.path(at.segment),
                        offset: at.offset,
                        source,
                    }),
                };
            }
            self.scanned = self.pending.len();
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
            let from = Cursor {
                segment: self.pos.segment,
                offset: self.pos.offset,
            };
            let torn = self.pending.len() > self.head;
            self.switch_to(next);
            if torn || next != from.segment + 1 {
                return Ok(Some(Entry::Gap { from, to: self.pos }));
            }
        }
    }

    /// The next entry, waiting for it: woken by the writer when the reader
    /// came from [`crate::Journal`], else polling every poll interval.
    pub async fn next(&mut self) -> Result<Entry> {
        loop {
            if let Some(rx) = self.notify.as_mut() {
                rx.borrow_and_update();
            }
            if let Some(e) = self.try_next()? {
                return Ok(e);
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

    /// Unregisters the consumer (as dropping it does).
    pub fn close(self) {}
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.shared.unregister_consumer(&self.key, self.id);
    }
}
