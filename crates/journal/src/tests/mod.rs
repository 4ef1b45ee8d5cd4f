//! Tests of the journal through its public API, on real files.

mod budget;
mod fs_full;
mod raw;
mod rotation;
mod round_trip;

use std::path::Path;

use time::OffsetDateTime;

use crate::{
    Appended, Entry, FullPolicy, Journal, JournalConfig, JournalOptions, Reader, Record, Stream,
};

/// A small deterministic PRNG (xorshift64*), so tests need no crate.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

pub(crate) fn config(
    dir: &Path,
    budget: u64,
    segment: u64,
    max_segments: u32,
    policy: FullPolicy,
) -> JournalConfig {
    JournalOptions {
        dir: "/unused".into(),
        budget_bytes: crate::ByteSize(budget),
        segment_bytes: crate::ByteSize(segment),
        max_segments,
        policy,
        max_record_bytes: crate::ByteSize(segment.min(64 << 10) - 64),
        ..JournalOptions::default()
    }
    .for_dir(dir)
    .unwrap()
}

pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Every record of a stream, read by a standalone reader, failing on gaps.
pub(crate) fn read_all(dir: &Path, process: &str, stream: Stream) -> Vec<Record> {
    let mut r = Reader::open(dir, process, stream).unwrap();
    let mut out = Vec::new();
    while let Some(e) = r.try_next().unwrap() {
        match e {
            Entry::Record { record, .. } => out.push(record),
            Entry::Gap { from, to } => panic!("unexpected gap {from:?} -> {to:?}"),
        }
    }
    out
}

/// The stream's segment files: (seq, size), oldest first.
pub(crate) fn segments(dir: &Path, process: &str, stream: Stream) -> Vec<(u64, u64)> {
    crate::segment::list_segments(dir, process, stream).unwrap()
}

pub(crate) fn written(a: Appended) -> bool {
    matches!(a, Appended::Written { .. })
}

#[test]
fn one_writer_per_stream_and_process_ids_are_validated() {
    let tmp = tempfile::tempdir().unwrap();
    let j = Journal::open(config(tmp.path(), 1 << 20, 64 << 10, 5, FullPolicy::Block)).unwrap();
    let w = j.writer("init", Stream::Stdout).unwrap();
    assert!(matches!(
        j.writer("init", Stream::Stdout),
        Err(crate::JournalError::WriterBusy { .. })
    ));
    let _e = j.writer("init", Stream::Stderr).unwrap();
    drop(w);
    let _w = j.writer("init", Stream::Stdout).unwrap();
    for bad in [
        "",
        ".",
        "..",
        "../init",
        "a/b",
        "exec 1",
        "ünï",
        &"x".repeat(77),
    ] {
        let err = j.writer(bad, Stream::Stdout).unwrap_err();
        assert!(
            err.to_string().contains("invalid process id"),
            "{bad:?}: {err}"
        );
        assert!(Reader::open(tmp.path(), bad, Stream::Stdout).is_err());
    }
    j.writer("exec-1.a_B", Stream::Stdout).unwrap();
    j.writer(&"x".repeat(76), Stream::Stdout).unwrap();
}

#[test]
fn sync_if_due_respects_the_interval() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(tmp.path(), 1 << 20, 64 << 10, 5, FullPolicy::Block);
    c.fsync_interval = std::time::Duration::from_secs(3600);
    let j = Journal::open(c).unwrap();
    let mut w = j.writer("init", Stream::Stdout).unwrap();
    let t0 = std::time::Instant::now();
    assert!(!w.sync_if_due(t0).unwrap(), "nothing to sync");
    assert!(written(w.append(b"x\n", now()).unwrap()));
    assert!(!w.sync_if_due(t0).unwrap(), "interval not over");
    assert!(w
        .sync_if_due(t0 + std::time::Duration::from_secs(3601))
        .unwrap());
    assert!(
        !w.sync_if_due(t0 + std::time::Duration::from_secs(7200))
            .unwrap(),
        "clean"
    );
}

#[test]
fn a_malformed_line_is_reported_and_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("init");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("stdout.0000000001.log"),
        b"2024-05-01T12:00:00Z stdout F a\ngarbage\n2024-05-01T12:00:00Z stdout F b\n",
    )
    .unwrap();
    let mut r = Reader::open(tmp.path(), "init", Stream::Stdout).unwrap();
    assert!(matches!(r.try_next().unwrap(), Some(Entry::Record { .. })));
    let err = r.try_next().unwrap_err();
    assert!(
        err.to_string().contains("stdout.0000000001.log:32"),
        "{err}"
    );
    let Some(Entry::Record { record, next }) = r.try_next().unwrap() else {
        panic!("no record after the bad line");
    };
    assert_eq!(record.text, b"b");
    assert_eq!(next.offset, 72);
    assert_eq!(r.try_next().unwrap(), None);
}
