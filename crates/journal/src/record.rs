//! The Kubernetes CRI log format: one record per line,
//! `<RFC3339Nano UTC timestamp> <stdout|stderr> <P|F> <text>\n`.
//!
//! `F` marks the end of a line (the text is the line without its `\n`), `P`
//! a piece of a line that continues in the next record of the same stream.
//! The text may hold any byte but `\n`, so binary output round-trips: an `F`
//! record stands for `text + "\n"`, a `P` record for `text`.

use std::fmt;

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use crate::error::ParseError;

/// One of a process's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    /// Standard output (also the pty of a terminal process).
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// Both streams, stdout first.
    pub const ALL: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

    /// The name used in records and file names: `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// The stream named `name` (`stdout` or `stderr`).
    pub fn from_name(name: &[u8]) -> Option<Stream> {
        match name {
            b"stdout" => Some(Stream::Stdout),
            b"stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When the shim read the bytes from the container (UTC).
    pub timestamp: OffsetDateTime,
    /// The stream the bytes came from.
    pub stream: Stream,
    /// `true` for a `P` record: the line continues in the next record.
    pub partial: bool,
    /// The bytes, without the line's `\n`.
    pub text: Vec<u8>,
}

impl Record {
    /// The bytes the container wrote that this record stands for: the text,
    /// plus `\n` for a full (`F`) record.
    pub fn raw_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len() + 1);
        self.write_raw(&mut out);
        out
    }

    /// Appends [`Record::raw_bytes`] to `out`.
    pub fn write_raw(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.text);
        if !self.partial {
            out.push(b'\n');
        }
    }

    /// The record as one CRI line, `\n` included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len() + 48);
        push_record(
            &mut out,
            &format_timestamp(self.timestamp),
            self.stream,
            self.partial,
            &self.text,
        );
        out
    }
}

/// The bytes the records stand for, concatenated: what the container wrote.
pub fn reconstruct<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        r.write_raw(&mut out);
    }
    out
}

/// Length of a formatted timestamp: `2006-01-02T15:04:05.000000000Z`.
pub const TIMESTAMP_LEN: usize = 30;

/// Formats `ts` in UTC with nine fraction digits, as containerd's CRI plugin
/// does (fixed width, so lines sort as text):
/// `2024-05-01T12:00:00.123456789Z`.
pub fn format_timestamp(ts: OffsetDateTime) -> String {
    let ts = ts.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        ts.year().clamp(0, 9999),
        u8::from(ts.month()),
        ts.day(),
        ts.hour(),
        ts.minute(),
        ts.second(),
        ts.nanosecond()
    )
}

/// Appends one record line (with its `\n`) to `out`. `text` must not hold `\n`.
pub(crate) fn push_record(out: &mut Vec<u8>, ts: &str, stream: Stream, partial: bool, text: &[u8]) {
    out.extend_from_slice(ts.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(text);
    out.push(b'\n');
}

/// Encodes what one append was given as records into `out`, and pushes,
/// for every record, its end offset in `out` and how many bytes of `bytes`
/// it (and everything before it) stands for, onto `ends`.
///
/// Each complete line becomes an `F` record; the bytes after the last `\n`
/// a `P` record; text longer than `max_text` is cut into `P` records of
/// `max_text` bytes (the last piece of a complete line stays `F`).
pub(crate) fn encode_append(
    out: &mut Vec<u8>,
    ends: &mut Vec<(usize, usize)>,
    ts: &str,
    stream: Stream,
    bytes: &[u8],
    max_text: usize,
) {
    let max_text = max_text.max(1);
    let mut pos = 0;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let (line, complete) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], true),
            None => (rest, false),
        };
        if line.is_empty() {
            // An empty line: one `F` record with empty text.
            push_record(out, ts, stream, false, b"");
            pos += 1;
            ends.push((out.len(), pos));
            continue;
        }
        let mut pieces = line.chunks(max_text).peekable();
        while let Some(piece) = pieces.next() {
            let last = pieces.peek().is_none();
            push_record(out, ts, stream, !(last && complete), piece);
            pos += piece.len() + usize::from(last && complete);
            ends.push((out.len(), pos));
        }
    }
}

/// One journal record, borrowed from the line it was parsed from; what
/// [`parse_line_raw`] returns. The timestamp is checked but not converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// The timestamp as written (an RFC 3339 time, so ASCII).
    pub timestamp: &'a [u8],
    /// The stream the bytes came from.
    pub stream: Stream,
    /// `true` for a `P` record: the line continues in the next record.
    pub partial: bool,
    /// The bytes, without the line's `\n`.
    pub text: &'a [u8],
}

impl RawRecord<'_> {
    /// Appends the bytes the container wrote that this record stands for
    /// (the text, plus `\n` for an `F` record) to `out`.
    pub fn write_raw(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.text);
        if !self.partial {
            out.push(b'\n');
        }
    }
}

/// Whether `ts` has exactly the shape [`format_timestamp`] writes
/// (`2024-05-01T12:00:00.123456789Z`), checked byte by byte: the common case
/// needs no full RFC 3339 parse.
fn is_canonical_timestamp(ts: &[u8]) -> bool {
    const SHAPE: &[u8; TIMESTAMP_LEN] = b"0000-00-00T00:00:00.000000000Z";
    // Digits are the bytes whose shape is '0': compare them minus '0' < 10,
    // the rest exactly; no early exit, so the loop vectorizes.
    ts.len() == TIMESTAMP_LEN
        && ts.iter().zip(SHAPE).fold(true, |ok, (&b, &s)| {
            ok & if s == b'0' {
                b.wrapping_sub(b'0') < 10
            } else {
                b == s
            }
        })
}

/// Parses one CRI log line (a trailing `\n`, if any, is ignored) without
/// copying it: the text is borrowed. It accepts exactly the lines
/// [`parse_line`] accepts.
///
/// Like kubelet, the tag field may carry further `:`-separated tags after
/// the first; only the first (`P` or `F`) is looked at. The timestamp may be
/// any RFC 3339 time.
pub fn parse_line_raw(line: &[u8]) -> Result<RawRecord<'_>, ParseError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    if let Some(r) = parse_canonical(line) {
        return Ok(r);
    }
    let (timestamp, rest) = split_space(line).ok_or(ParseError::MissingTimestamp)?;
    if !is_canonical_timestamp(timestamp) {
        parse_timestamp(timestamp)?;
    }
    let (stream, rest) = split_space(rest).ok_or(ParseError::MissingStream)?;
    let stream = Stream::from_name(stream)
        .ok_or_else(|| ParseError::BadStream(String::from_utf8_lossy(stream).into_owned()))?;
    let (tag, text) = split_space(rest).ok_or(ParseError::MissingTag)?;
    let first = tag.split(|&b| b == b':').next().unwrap_or(tag);
    let partial = match first {
        b"P" => true,
        b"F" => false,
        _ => {
            return Err(ParseError::BadTag(
                String::from_utf8_lossy(tag).into_owned(),
            ))
        }
    };
    Ok(RawRecord {
        timestamp,
        stream,
        partial,
        text,
    })
}

/// The fast path of [`parse_line_raw`]: a line exactly as this crate writes
/// it (`<canonical timestamp> <stdout|stderr> <P|F> <text>`), checked at
/// fixed offsets. `None` sends the line down the general path.
fn parse_canonical(line: &[u8]) -> Option<RawRecord<'_>> {
    // "<ts> stdout F " is 30 + 1 + 6 + 3 bytes.
    const HEAD: usize = TIMESTAMP_LEN + 10;
    let head = line.get(..HEAD)?;
    let (ts, tail) = head.split_at(TIMESTAMP_LEN);
    if !is_canonical_timestamp(ts) || tail[0] != b' ' || tail[7] != b' ' || tail[9] != b' ' {
        return None;
    }
    let stream = Stream::from_name(&tail[1..7])?;
    let partial = match tail[8] {
        b'P' => true,
        b'F' => false,
        _ => return None,
    };
    Some(RawRecord {
        timestamp: ts,
        stream,
        partial,
        text: &line[HEAD..],
    })
}

pub(crate) fn parse_timestamp(ts: &[u8]) -> Result<OffsetDateTime, ParseError> {
    let bad = || ParseError::BadTimestamp(String::from_utf8_lossy(ts).into_owned());
    let text = std::str::from_utf8(ts).map_err(|_| bad())?;
    OffsetDateTime::parse(text, &Rfc3339).map_err(|_| bad())
}

/// Parses one CRI log line (a trailing `\n`, if any, is ignored) into an
/// owned [`Record`]; see [`parse_line_raw`] for what it accepts.
pub fn parse_line(line: &[u8]) -> Result<Record, ParseError> {
    let raw = parse_line_raw(line)?;
    Ok(Record {
        timestamp: parse_timestamp(raw.timestamp)?,
        stream: raw.stream,
        partial: raw.partial,
        text: raw.text.to_vec(),
    })
}

fn split_space(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = memchr::memchr(b' ', s)?;
    Some((&s[..i], &s[i + 1..]))
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
