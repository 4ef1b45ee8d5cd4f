//! The forwarders' fast path (`read_raw`) and the background work
//! (deletions, fsyncs, unused claims) that keeps appends fast.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use super::*;
use crate::{reconstruct, Cursor, RawRead};

fn line(i: usize) -> Vec<u8> {
    format!("line {i:05} {}\n", "y".repeat(i % 50)).into_bytes()
}

#[test]
fn read_raw_returns_what_the_container_wrote_in_bounded_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let j = Journal::open(config(tmp.path(), 4 << 20, 8192, 100, FullPolicy::Block)).unwrap();
    let mut w = j.writer("init", Stream::Stdout).unwrap();
    let mut wrote = Vec::new();
    for i in 0..500 {
        let mut b = line(i);
        if i % 7 == 0 {
            b.pop(); // a partial line, continued by the next append
        }
        assert!(written(w.append(&b, now()).unwrap()));
        wrote.extend_from_slice(&b);
    }
    let mut c = j.consumer("init", Stream::Stdout).unwrap();
    let (mut got, mut batches) = (Vec::new(), 0);
    loop {
        let mut batch = Vec::new();
        match c.read_raw(&mut batch, 300).unwrap() {
            None => break,
            Some(RawRead::Records { records, next }) => {
                assert!(
                    records > 0 && batch.len() < 300 + 80,
                    "{records} {}",
                    batch.len()
                );
                assert_eq!(next, c.position());
                c.commit(next);
            }
            Some(RawRead::Gap { from, to }) => panic!("gap {from:?} -> {to:?}"),
        }
        got.extend_from_slice(&batch);
        batches += 1;
    }
    assert_eq!(got, wrote);
    assert!(batches > 20, "{batches} batches");
    // The slow path reads the same records.
    assert_eq!(
        reconstruct(&read_all(tmp.path(), "init", Stream::Stdout)),
        wrote
    );
}

#[test]
fn read_raw_returns_a_gap_by_itself_after_the_records_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    // No consumer and no retention: finished segments go at rotation.
    let j = Journal::open(config(tmp.path(), 1 << 20, 4096, 0, FullPolicy::Block)).unwrap();
    let mut w = j.writer("init", Stream::Stdout).unwrap();
    let mut r = j.reader("init", Stream::Stdout, Cursor::START).unwrap();
    assert!(written(w.append(b"first\n", now()).unwrap()));
    let mut out = Vec::new();
    assert!(matches!(
        r.read_raw(&mut out, 1).unwrap(),
        Some(RawRead::Records { records: 1, .. })
    ));
    for i in 0..200 {
        assert!(written(w.append(&line(i), now()).unwrap()));
    }
    // The reader holds segment 1 open: its rest comes first, alone...
    out.clear();
    let Some(RawRead::Records { next, .. }) = r.read_raw(&mut out, usize::MAX).unwrap() else {
        panic!("no records");
    };
    assert_eq!(next.segment, 1);
    assert!(out.starts_with(&line(0)));
    // ... then the gap, by itself, starting where the records ended ...
    let before = out.len();
    let Some(RawRead::Gap { from, to }) = r.read_raw(&mut out, usize::MAX).unwrap() else {
        panic!("no gap");
    };
    assert_eq!(out.len(), before, "a gap appends nothing");
    assert_eq!(from, next);
    assert!(to.segment > 1 && to.offset == 0);
    // ... then the records after it.
    assert!(matches!(
        r.read_raw(&mut out, usize::MAX).unwrap(),
        Some(RawRead::Records { .. })
    ));
    assert!(out.ends_with(&line(199)));
}

#[test]
fn read_raw_stops_before_a_malformed_line_and_reports_it_next() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("init");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("stdout.0000000001.log"),
        b"2024-05-01T12:00:00Z stdout F a\ngarbage\n2024-05-01T12:00:00Z stdout P b\n",
    )
    .unwrap();
    let mut r = Reader::open(tmp.path(), "init", Stream::Stdout).unwrap();
    let mut out = Vec::new();
    assert_eq!(
        r.read_raw(&mut out, usize::MAX).unwrap(),
        Some(RawRead::Records {
            records: 1,
            next: Cursor {
                segment: 1,
                offset: 32
            }
        })
    );
    let err = r.read_raw(&mut out, usize::MAX).unwrap_err();
    assert!(
        err.to_string().contains("stdout.0000000001.log:32"),
        "{err}"
    );
    assert!(matches!(
        r.read_raw(&mut out, usize::MAX).unwrap(),
        Some(RawRead::Records { records: 1, .. })
    ));
    assert_eq!(out, b"a\nb");
    assert_eq!(r.read_raw(&mut out, usize::MAX).unwrap(), None);
}

#[tokio::test]
async fn deletions_and_fsyncs_run_in_the_background_and_can_be_waited_for() {
    let tmp = tempfile::tempdir().unwrap();
    let j = Journal::open(config(tmp.path(), 1 << 20, 4096, 0, FullPolicy::Block)).unwrap();
    let mut w = j.writer("init", Stream::Stdout).unwrap();
    for i in 0..300 {
        assert!(written(w.append(&line(i), now()).unwrap()));
    }
    assert!(w
        .sync_if_due(std::time::Instant::now() + Duration::from_secs(5))
        .unwrap());
    assert!(
        j.wait_idle(Duration::from_secs(10)),
        "background work did not finish"
    );
    let segs = segments(tmp.path(), "init", Stream::Stdout);
    assert_eq!(segs.len(), 1, "finished segments are deleted: {segs:?}");
    assert!(j.used_bytes() <= 4096);
}

#[tokio::test]
async fn blocks_claimed_ahead_are_given_back_when_a_segment_is_finished() {
    let tmp = tempfile::tempdir().unwrap();
    let j = Journal::open(config(
        tmp.path(),
        4 << 20,
        256 << 10,
        10,
        FullPolicy::Block,
    ))
    .unwrap();
    let mut w = j.writer("init", Stream::Stdout).unwrap();
    assert!(written(w.append(b"short\n", now()).unwrap()));
    let path = crate::segment_path(tmp.path(), "init", Stream::Stdout, 1);
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.len() < 100);
    assert!(
        meta.blocks() * 512 >= 128 << 10,
        "blocks are claimed ahead: {}",
        meta.blocks()
    );
    w.close().unwrap();
    assert!(j.wait_idle(Duration::from_secs(10)));
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.len() < 100, "the size is the data's");
    assert!(
        meta.blocks() * 512 <= 8192,
        "unused blocks are released: {}",
        meta.blocks()
    );
}

#[test]
fn read_lines_returns_the_journaled_cri_lines_as_they_are_in_the_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let j = Journal::open(config(tmp.path(), 4 << 20, 8192, 100, FullPolicy::Block)).unwrap();
    let mut w = j.writer("init", Stream::Stderr).unwrap();
    for i in 0..200 {
        let mut b = line(i);
        if i % 5 == 0 {
            b.pop(); // a partial line: a P record
        }
        assert!(written(w.append(&b, now()).unwrap()));
    }
    w.close().unwrap();
    let mut c = j.consumer("init", Stream::Stderr).unwrap();
    let mut got = Vec::new();
    loop {
        let mut batch = Vec::new();
        match c.read_lines(&mut batch, 500).unwrap() {
            None => break,
            Some(RawRead::Records { next, .. }) => c.commit(next),
            Some(RawRead::Gap { from, to }) => panic!("gap {from:?} -> {to:?}"),
        }
        assert!(batch.ends_with(b"\n"));
        got.extend_from_slice(&batch);
    }
    // Exactly the segment files' bytes, in order: each record's line.
    let on_disk: Vec<u8> = segments(tmp.path(), "init", Stream::Stderr)
        .iter()
        .flat_map(|&(seq, _)| {
            std::fs::read(crate::segment::segment_path(
                tmp.path(),
                "init",
                Stream::Stderr,
                seq,
            ))
            .unwrap()
        })
        .collect();
    assert!(!on_disk.is_empty());
    assert_eq!(got, on_disk);
    // And every line parses as a CRI line of stderr, P or F as written.
    let records: Vec<_> = got
        .split_inclusive(|&b| b == b'\n')
        .map(|l| crate::parse_line(l).unwrap())
        .collect();
    assert_eq!(
        records.len(),
        read_all(tmp.path(), "init", Stream::Stderr).len()
    );
    assert!(records.iter().all(|r| r.stream == Stream::Stderr));
    assert!(records.iter().any(|r| r.partial));
    assert!(records.iter().any(|r| !r.partial));
}
