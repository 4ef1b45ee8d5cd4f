//! Segment files: `<dir>/<process>/<stream>.<seq:010>.log`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{JournalError, Result};
use crate::record::Stream;

/// Longest process id (and namespace or container id) accepted.
pub const MAX_NAME_LEN: usize = 76;

/// Checks that `name` can be used as one path component: 1 to 76 bytes of
/// `[A-Za-z0-9._-]`, not `.` or `..`.
pub(crate) fn validate_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("it is longer than 76 bytes");
    }
    if name == "." || name == ".." {
        return Err("it is a relative path component");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("only A-Z, a-z, 0-9, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// Checks a process id (`init` or an exec id) before a path is built from it.
pub fn validate_process_id(process: &str) -> Result<()> {
    validate_name(process).map_err(|reason| JournalError::InvalidProcessId {
        id: process.to_owned(),
        reason,
    })
}

/// The file name of segment `seq` of `stream`.
pub fn segment_file_name(stream: Stream, seq: u64) -> String {
    format!("{}.{seq:010}.log", stream.as_str())
}

/// The path of segment `seq` of `stream` of `process` in journal `dir`.
pub fn segment_path(dir: &Path, process: &str, stream: Stream, seq: u64) -> PathBuf {
    dir.join(process).join(segment_file_name(stream, seq))
}

/// The stream and sequence number of a segment file name, if it is one.
pub(crate) fn parse_segment_name(name: &str) -> Option<(Stream, u64)> {
    let rest = name.strip_suffix(".log")?;
    let (stream, seq) = rest.split_once('.')?;
    let stream = Stream::from_name(stream.as_bytes())?;
    if seq.len() != 10 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stream, seq.parse().ok()?))
}

/// The segment files of one stream in no particular order, by name only:
/// `(seq, entry)`. A missing process folder holds no segments.
fn segment_entries(
    dir: &Path,
    process: &str,
    stream: Stream,
) -> Result<Vec<(u64, std::fs::DirEntry)>> {
    let pdir = dir.join(process);
    let rd = match std::fs::read_dir(&pdir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(JournalError::io("read folder", pdir, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| JournalError::io("read folder", &pdir, e))?;
        let name = entry.file_name();
        match name.to_str().and_then(parse_segment_name) {
            Some((s, seq)) if s == stream => out.push((seq, entry)),
            _ => {}
        }
    }
    Ok(out)
}

/// The oldest segment of a stream after `after`, by name only (no `stat`).
pub(crate) fn next_segment_after(
    dir: &Path,
    process: &str,
    stream: Stream,
    after: u64,
) -> Result<Option<u64>> {
    Ok(segment_entries(dir, process, stream)?
        .into_iter()
        .map(|(seq, _)| seq)
        .filter(|&seq| seq > after)
        .min())
}

/// The segments of one stream, oldest first: `(seq, size)`. A missing
/// process folder holds no segments.
pub(crate) fn list_segments(dir: &Path, process: &str, stream: Stream) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for (seq, entry) in segment_entries(dir, process, stream)? {
        // A segment deleted between read_dir and metadata is simply gone.
        match entry.metadata() {
            Ok(m) if m.is_file() => out.push((seq, m.len())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(JournalError::io("stat", entry.path(), e)),
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Cuts a torn record (bytes after the last `\n`, left by a crash in the
/// middle of a write) off the end of `path`; returns the new size.
pub(crate) fn repair_tail(path: &Path) -> Result<u64> {
    let io = |op, e| JournalError::io(op, path, e);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io("open", e))?;
    let len = f.metadata().map_err(|e| io("stat", e))?.len();
    let keep = last_line_end(&mut f, len).map_err(|e| io("read", e))?;
    if keep != len {
        tracing::warn!(path = %path.display(), len, keep, "cutting a torn record off a journal segment");
        f.set_len(keep).map_err(|e| io("truncate", e))?;
        f.sync_data().map_err(|e| io("fsync", e))?;
    }
    Ok(keep)
}

/// The offset just after the last `\n` in the first `len` bytes of `f`.
fn last_line_end(f: &mut File, len: u64) -> std::io::Result<u64> {
    const CHUNK: u64 = 64 << 10;
    let mut end = len;
    let mut buf = vec![0u8; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}
