use time::{Duration, OffsetDateTime};

use super::*;
use crate::tests::{config, Rng};
use crate::{Entry, FullPolicy, Journal, Reader};

fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
}

/// The line starts of a stream found by reading it forwards, newest first.
fn forward_line_starts(dir: &Path, stream: Stream) -> Vec<LineStart> {
    let mut r = Reader::open(dir, "init", stream).unwrap();
    let mut out = Vec::new();
    let mut at = r.position();
    let mut mid_line = false;
    while let Some(e) = r.try_next().unwrap() {
        let Entry::Record { record, next } = e else {
            panic!("gap")
        };
        if !mid_line {
            out.push(LineStart {
                at,
                timestamp: record.timestamp,
            });
        }
        mid_line = record.partial;
        at = next;
    }
    // A record that opens a segment is at offset 0 of it, not at the end
    // of the one before (the cursor a reader returns after that one).
    let segs = crate::tests::segments(dir, "init", stream);
    for s in &mut out {
        let ended = s.at.segment == 0
            || segs
                .iter()
                .any(|&(seq, size)| seq == s.at.segment && size == s.at.offset);
        if ended {
            let next = segs.iter().find(|&&(seq, _)| seq > s.at.segment).unwrap();
            s.at = Cursor {
                segment: next.0,
                offset: 0,
            };
        }
    }
    out.reverse();
    out
}

fn backward(dir: &Path, stream: Stream) -> Vec<LineStart> {
    LineStarts::open(dir, "init", stream)
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn the_backward_scan_finds_every_line_start_across_segments_and_long_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(tmp.path(), 64 << 20, 8192, 1000, FullPolicy::Block);
    c.max_record_bytes = 1000;
    let j = Journal::open(c).unwrap();
    let mut w = j.writer("init", Stream::Stdout).unwrap();
    let mut rng = Rng::new(7);
    for i in 0..2000 {
        let len = match rng.below(10) {
            0 => 3000 + rng.below(20000) as usize, // many P records, several segments
            1 => 0,
            _ => rng.below(80) as usize,
        };
        let mut data = vec![b'a' + (i % 26) as u8; len];
        // Some appends end mid-line, some hold several lines.
        match rng.below(4) {
            0 => {}
            1 => data.extend_from_slice(b"\nmore\n"),
            _ => data.push(b'\n'),
        }
        let ts = t0() + Duration::milliseconds(i);
        assert!(crate::tests::written(w.append(&data, ts).unwrap()));
    }
    drop(w);
    let segs = crate::tests::segments(tmp.path(), "init", Stream::Stdout);
    assert!(segs.len() > 20, "{}", segs.len());
    let forward = forward_line_starts(tmp.path(), Stream::Stdout);
    let back = backward(tmp.path(), Stream::Stdout);
    assert_eq!(back.len(), forward.len());
    assert_eq!(back, forward);
    let end = LineStarts::open(tmp.path(), "init", Stream::Stdout)
        .unwrap()
        .end();
    let last = segs.last().unwrap();
    assert_eq!(
        end,
        Some(Cursor {
            segment: last.0,
            offset: last.1
        })
    );
}

#[test]
fn an_open_last_line_counts_and_a_torn_tail_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("init");
    std::fs::create_dir_all(&dir).unwrap();
    let a = "2024-05-01T12:00:00.000000000Z";
    let b = "2024-05-01T12:00:01.000000000Z";
    let text = format!(
        "{a} stdout F one\n{a} stdout P tw\n{b} stdout F o\ngarbage\n{b} stdout P thr\n{b} stdout P ee\n{b} stdout F fo"
    );
    std::fs::write(dir.join("stdout.0000000003.log"), &text).unwrap();
    let starts = backward(tmp.path(), Stream::Stdout);
    let offsets: Vec<u64> = starts.iter().map(|s| s.at.offset).collect();
    let line = a.len() as u64 + " stdout F one\n".len() as u64;
    let two = line + a.len() as u64 + " stdout P tw\n".len() as u64;
    let three = two + b.len() as u64 + " stdout F o\n".len() as u64 + "garbage\n".len() as u64;
    assert_eq!(offsets, [three, line, 0]);
    assert!(starts.iter().all(|s| s.at.segment == 3));
    assert_eq!(starts[2].timestamp.unix_timestamp(), 1_714_564_800);
    assert_eq!(starts[0].timestamp.unix_timestamp(), 1_714_564_801);
}

#[test]
fn a_missing_journal_has_no_lines_and_no_end() {
    let tmp = tempfile::tempdir().unwrap();
    let starts = LineStarts::open(tmp.path().join("none"), "init", Stream::Stderr).unwrap();
    assert_eq!(starts.end(), None);
    assert_eq!(starts.count(), 0);
    assert!(LineStarts::open(tmp.path(), "../x", Stream::Stdout).is_err());
}

#[test]
fn since_starts_at_the_newest_segment_older_than_the_time() {
    let tmp = tempfile::tempdir().unwrap();
    let j = Journal::open(config(tmp.path(), 64 << 20, 4096, 1000, FullPolicy::Block)).unwrap();
    let mut w = j.writer("init", Stream::Stdout).unwrap();
    for i in 0..400 {
        let line = format!("line {i:04} {}\n", "x".repeat(40));
        let at = t0() + Duration::seconds(i);
        assert!(crate::tests::written(
            w.append(line.as_bytes(), at).unwrap()
        ));
    }
    drop(w);
    let segs = crate::tests::segments(tmp.path(), "init", Stream::Stdout);
    assert!(segs.len() > 4);
    let dir = tmp.path();
    assert_eq!(
        since_start(dir, "init", Stream::Stdout, t0()).unwrap(),
        Cursor::START
    );
    let late = since_start(dir, "init", Stream::Stdout, t0() + Duration::seconds(399)).unwrap();
    assert_eq!(late.segment, segs.last().unwrap().0);
    let mid = since_start(dir, "init", Stream::Stdout, t0() + Duration::seconds(200)).unwrap();
    // Reading from there, the first record at or after the time is line 200
    // and nothing before it was skipped.
    let mut r = Reader::open_at(dir, "init", Stream::Stdout, mid).unwrap();
    let mut first_new = None;
    let mut first_seen = None;
    while let Some(Entry::Record { record, .. }) = r.try_next().unwrap() {
        first_seen.get_or_insert(record.timestamp);
        if record.timestamp >= t0() + Duration::seconds(200) {
            first_new = Some(String::from_utf8_lossy(&record.text).into_owned());
            break;
        }
    }
    assert!(first_seen.unwrap() < t0() + Duration::seconds(200));
    assert!(first_new.unwrap().starts_with("line 0200"));
    assert_eq!(
        since_start(&dir.join("none"), "init", Stream::Stdout, t0()).unwrap(),
        Cursor::START
    );
}
