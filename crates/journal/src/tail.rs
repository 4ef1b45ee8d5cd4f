//! Where to start reading without reading everything: the starts of a
//! stream's last lines, found by reading its segments backwards from the
//! newest one, and the first segment that can hold output since a time.
//!
//! A line of output is a run of `P` records ended by an `F` record (the
//! last line may still be open: `P` records only). Reading backwards, a
//! record starts a line when the record before it is an `F` record or
//! there is none, so `tail -n 100` of a 1 GiB journal reads a few chunks of
//! its newest segment, not the journal.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::error::{JournalError, Result};
use crate::reader::Cursor;
use crate::record::{parse_line_raw, parse_timestamp, Stream};
use crate::segment::{list_segments, segment_path, validate_process_id};

/// How much of a segment is read at a time, backwards.
const CHUNK: u64 = 64 << 10;
/// Enough bytes for any RFC 3339 timestamp and the space after it.
const HEAD_BYTES: usize = 64;

/// Where one line of output starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineStart {
    /// The cursor of the line's first record.
    pub at: Cursor,
    /// When the shim read the line's first bytes.
    pub timestamp: OffsetDateTime,
}

/// The starts of a stream's lines, newest first, read backwards from the
/// segments that existed when it was opened. Malformed lines are skipped;
/// a segment deleted meanwhile ends the walk (older ones are gone too).
pub struct LineStarts {
    dir: PathBuf,
    process: String,
    stream: Stream,
    /// Segments not yet scanned, oldest first (scanned from the back).
    segments: Vec<(u64, u64)>,
    end: Option<Cursor>,
    seg: Option<SegmentScan>,
    /// The record after the one being looked at (in reading order), and its
    /// timestamp: a line start once the record before it is known.
    newer: Option<Cursor>,
    newer_ts: Vec<u8>,
    record_ts: Vec<u8>,
    done: bool,
}

impl std::fmt::Debug for LineStarts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineStarts")
            .field("dir", &self.dir)
            .field("process", &self.process)
            .field("stream", &self.stream)
            .field("end", &self.end)
            .finish()
    }
}

impl LineStarts {
    /// The line starts of `stream` of `process` in journal `dir`, as its
    /// segments are now. A missing folder holds no lines.
    pub fn open(dir: impl Into<PathBuf>, process: &str, stream: Stream) -> Result<LineStarts> {
        validate_process_id(process)?;
        let dir = dir.into();
        let segments = list_segments(&dir, process, stream)?;
        let end = segments
            .last()
            .map(|&(segment, offset)| Cursor { segment, offset });
        Ok(LineStarts {
            dir,
            process: process.to_owned(),
            stream,
            segments,
            end,
            seg: None,
            newer: None,
            newer_ts: Vec::new(),
            record_ts: Vec::new(),
            done: false,
        })
    }

    /// The end of the stream when it was opened: the newest segment and
    /// its size (`None`: no segment). Lines after it are not returned.
    pub fn end(&self) -> Option<Cursor> {
        self.end
    }

    /// The record before the last one returned, walking back through the
    /// segments; its timestamp is left in `record_ts`.
    fn prev_record(&mut self) -> Result<Option<(Cursor, bool)>> {
        loop {
            if self.seg.is_none() {
                let Some((seq, size)) = self.segments.pop() else {
                    return Ok(None);
                };
                let path = segment_path(&self.dir, &self.process, self.stream, seq);
                match File::open(&path) {
                    Ok(file) => self.seg = Some(SegmentScan::new(file, path, seq, size)),
                    // Deleted since it was listed: so are the older ones.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(JournalError::io("open", &path, e)),
                }
            }
            if let Some(seg) = self.seg.as_mut() {
                match seg.prev_line(&mut self.record_ts)? {
                    Some(found) => return Ok(Some(found)),
                    None => self.seg = None,
                }
            }
        }
    }

    fn line_start(&self, at: Cursor) -> Option<LineStart> {
        // A timestamp parse_line_raw accepted parses.
        parse_timestamp(&self.newer_ts)
            .ok()
            .map(|timestamp| LineStart { at, timestamp })
    }
}

impl Iterator for LineStarts {
    type Item = Result<LineStart>;

    fn next(&mut self) -> Option<Result<LineStart>> {
        while !self.done {
            let record = match self.prev_record() {
                Ok(r) => r,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            let Some((at, partial)) = record else {
                // The oldest record there is starts a line.
                self.done = true;
                let newer = self.newer.take()?;
                return self.line_start(newer).map(Ok);
            };
            // An `F` record ends a line, so the record after it starts one.
            let found = if partial {
                None
            } else {
                self.newer.take().and_then(|c| self.line_start(c))
            };
            self.newer = Some(at);
            std::mem::swap(&mut self.newer_ts, &mut self.record_ts);
            if let Some(found) = found {
                return Some(Ok(found));
            }
        }
        None
    }
}

/// One segment read backwards in chunks.
struct SegmentScan {
    file: File,
    path: PathBuf,
    seq: u64,
    /// File offset of `buf[0]`.
    base: u64,
    /// `buf[..end]`: bytes not yet returned, ending with `\n` once
    /// `trimmed`.
    buf: Vec<u8>,
    end: usize,
    /// A torn or unfinished last record was cut off.
    trimmed: bool,
}

impl SegmentScan {
    fn new(file: File, path: PathBuf, seq: u64, size: u64) -> SegmentScan {
        SegmentScan {
            file,
            path,
            seq,
            base: size,
            buf: Vec::new(),
            end: 0,
            trimmed: false,
        }
    }

    /// Reads the chunk before `base` in front of what is left.
    fn read_before(&mut self) -> Result<()> {
        let start = self.base.saturating_sub(CHUNK);
        let n = (self.base - start) as usize;
        self.buf.truncate(self.end);
        self.buf.splice(0..0, std::iter::repeat(0).take(n));
        self.file
            .read_exact_at(&mut self.buf[..n], start)
            .map_err(|e| JournalError::io("read", &self.path, e))?;
        self.base = start;
        self.end += n;
        Ok(())
    }

    /// The last record not yet returned: its cursor and whether it is `P`;
    /// its timestamp goes to `ts`. Malformed lines are skipped.
    fn prev_line(&mut self, ts: &mut Vec<u8>) -> Result<Option<(Cursor, bool)>> {
        loop {
            if !self.trimmed {
                if let Some(i) = memchr::memrchr(b'\n', &self.buf[..self.end]) {
                    self.end = i + 1;
                    self.trimmed = true;
                    continue;
                }
            } else if self.end > 0 {
                let start = match memchr::memrchr(b'\n', &self.buf[..self.end - 1]) {
                    Some(i) => Some(i + 1),
                    None if self.base == 0 => Some(0),
                    None => None,
                };
                if let Some(start) = start {
                    let line = &self.buf[start..self.end];
                    let at = Cursor {
                        segment: self.seq,
                        offset: self.base + start as u64,
                    };
                    self.end = start;
                    if let Ok(r) = parse_line_raw(line) {
                        ts.clear();
                        ts.extend_from_slice(r.timestamp);
                        return Ok(Some((at, r.partial)));
                    }
                    continue;
                }
            }
            if self.base == 0 {
                return Ok(None);
            }
            self.read_before()?;
        }
    }
}

/// Where to start reading `stream` to see all output since `since`: the
/// newest segment whose first record is older than `since` (the records
/// before `since` in it are the reader's to skip), or [`Cursor::START`]
/// when every segment is as new or newer. Reads one record head per
/// segment, newest first.
pub fn since_start(
    dir: &Path,
    process: &str,
    stream: Stream,
    since: OffsetDateTime,
) -> Result<Cursor> {
    validate_process_id(process)?;
    for &(seq, _) in list_segments(dir, process, stream)?.iter().rev() {
        let path = segment_path(dir, process, stream, seq);
        let first = match first_timestamp(&path) {
            Ok(t) => t,
            Err(JournalError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                // Deleted meanwhile: so are the older ones.
                break;
            }
            Err(e) => return Err(e),
        };
        if first.is_some_and(|t| t < since) {
            return Ok(Cursor {
                segment: seq,
                offset: 0,
            });
        }
    }
    Ok(Cursor::START)
}

/// The timestamp of a segment's first record (`None`: empty or not a
/// timestamp).
fn first_timestamp(path: &Path) -> Result<Option<OffsetDateTime>> {
    let file = File::open(path).map_err(|e| JournalError::io("open", path, e))?;
    let mut head = [0u8; HEAD_BYTES];
    let mut n = 0;
    while n < head.len() {
        match file.read_at(&mut head[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(JournalError::io("read", path, e)),
        }
    }
    let head = &head[..n];
    let Some(space) = memchr::memchr(b' ', head) else {
        return Ok(None);
    };
    Ok(parse_timestamp(&head[..space]).ok())
}

#[cfg(test)]
#[path = "tail_tests.rs"]
mod tests;
