use std::time::Duration;

use super::*;
use crate::{reconstruct, Consumer, FullCause};

const SEG: u64 = 4096;
const BUDGET: u64 = 3 * SEG;

fn line(i: usize) -> Vec<u8> {
    format!("record {i:05} {}\n", "b".repeat(100)).into_bytes()
}

/// Reads everything the consumer can read now, commits, returns the bytes.
fn drain(c: &mut Consumer) -> Vec<u8> {
    let mut recs = Vec::new();
    while let Some(e) = c.try_next().unwrap() {
        let at = e.cursor();
        match e {
            Entry::Record { record, .. } => recs.push(record),
            Entry::Gap { from, to } => panic!("consumer saw a gap {from:?} -> {to:?}"),
        }
        c.commit(at);
    }
    reconstruct(&recs)
}

/// Output without its drop markers, and the bytes the markers count.
fn split_markers(out: &[u8]) -> (Vec<u8>, u64) {
    let (mut rest, mut marked) = (Vec::new(), 0);
    for line in out.split_inclusive(|&b| b == b'\n') {
        let text = String::from_utf8_lossy(line);
        match text
            .strip_prefix("holdfast: dropped ")
            .and_then(|t| t.strip_suffix(" bytes (log budget full)\n"))
        {
            Some(n) => marked += n.parse::<u64>().unwrap(),
            None => rest.extend_from_slice(line),
        }
    }
    (rest, marked)
}

#[tokio::test]
async fn block_policy_reports_full_loses_nothing_and_resumes_after_a_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let j = Journal::open(config(tmp.path(), BUDGET, SEG, 0, FullPolicy::Block)).unwrap();
    let mut c = j.consumer("init", Stream::Stdout).unwrap();
    let mut w = j.writer("init", Stream::Stdout).unwrap();
    let mut sent = Vec::new();
    let mut i = 0;
    let outcome = loop {
        match w.append(&line(i), now()).unwrap() {
            Appended::Written { .. } => sent.extend(line(i)),
            other => break other,
        }
        i += 1;
    };
    assert_eq!(
        outcome,
        Appended::Full {
            accepted: 0,
            cause: FullCause::Budget
        }
    );
    let on_disk: u64 = segments(tmp.path(), "init", Stream::Stdout)
        .iter()
        .map(|s| s.1)
        .sum();
    assert_eq!(on_disk, j.used_bytes());
    assert!(on_disk <= BUDGET && on_disk > BUDGET - SEG, "{on_disk}");
    // Still full: nothing was read, nothing may go.
    assert!(matches!(
        w.append(&line(i), now()).unwrap(),
        Appended::Full { .. }
    ));
    assert_eq!(segments(tmp.path(), "init", Stream::Stdout)[0].0, 1);

    // The forwarder catches up; the writer is woken and succeeds.
    let waiter = tokio::time::timeout(Duration::from_millis(500), w.wait_for_space());
    assert_eq!(drain(&mut c), sent);
    waiter
        .await
        .expect("woken by the commit, not by the retry timeout");
    assert!(written(w.append(&line(i), now()).unwrap()));
    sent.extend(line(i));
    // Deletions run in the background.
    assert!(j.wait_idle(Duration::from_secs(10)));
    assert!(
        segments(tmp.path(), "init", Stream::Stdout)[0].0 > 1,
        "read segments were deleted"
    );
    drop(w);
    // Everything arrived, in order, exactly once.
    let mut c2 = j
        .consumer_at("init", Stream::Stdout, c.committed())
        .unwrap();
    let tail = drain(&mut c2);
    assert_eq!(tail, line(i));
}

#[test]
fn drop_policy_counts_exactly_and_writes_a_marker() {
    let tmp = tempfile::tempdir().unwrap();
    let j = Journal::open(config(tmp.path(), BUDGET, SEG, 0, FullPolicy::Drop)).unwrap();
    let mut c = j.consumer("init", Stream::Stderr).unwrap();
    let mut w = j.writer("init", Stream::Stderr).unwrap();
    let mut kept = Vec::new();
    let mut dropped = 0u64;
    for i in 0..200 {
        match w.append(&line(i), now()).unwrap() {
            Appended::Written { .. } => kept.extend(line(i)),
            Appended::Dropped {
                accepted,
                dropped: d,
                cause,
            } => {
                assert_eq!((accepted, cause), (0, FullCause::Budget));
                dropped += d;
            }
            Appended::Full { .. } => panic!("full under drop"),
        }
    }
    assert!(dropped > 0);
    assert_eq!(w.dropped_bytes(), dropped);
    assert_eq!(j.dropped_bytes(), dropped);
    // A marker is written as soon as it fits (before the next record that
    // does): the markers in the stream plus the pending one count every
    // dropped byte.
    let (got, marked) = split_markers(&drain(&mut c));
    assert_eq!(got, kept);
    let pending = w.pending_drop_marker();
    assert!(pending > 0);
    assert_eq!(marked + pending, dropped);
    assert!(written(w.append(b"back\n", now()).unwrap()));
    assert_eq!(w.pending_drop_marker(), 0);
    let marker = format!("holdfast: dropped {pending} bytes (log budget full)\nback\n");
    assert_eq!(drain(&mut c), marker.as_bytes());
}

#[test]
fn a_drop_marker_is_written_by_sync_once_there_is_room() {
    let tmp = tempfile::tempdir().unwrap();
    let j = Journal::open(config(tmp.path(), BUDGET, SEG, 0, FullPolicy::Drop)).unwrap();
    let mut c = j.consumer("init", Stream::Stdout).unwrap();
    let mut w = j.writer("init", Stream::Stdout).unwrap();
    let mut i = 0;
    while written(w.append(&line(i), now()).unwrap()) {
        i += 1;
    }
    drain(&mut c);
    w.sync_if_due(std::time::Instant::now()).unwrap();
    assert_eq!(w.pending_drop_marker(), 0);
    let want = format!(
        "holdfast: dropped {} bytes (log budget full)\n",
        line(i).len()
    );
    assert_eq!(drain(&mut c), want.as_bytes());
}

#[test]
fn read_segments_make_room_and_unread_ones_are_never_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let j = Journal::open(config(tmp.path(), 6 * SEG, SEG, 100, FullPolicy::Block)).unwrap();
    // stdout is forwarded as it is written; stderr's forwarder is stuck.
    let mut out_c = j.consumer("init", Stream::Stdout).unwrap();
    let _err_c = j.consumer("init", Stream::Stderr).unwrap();
    let mut out = j.writer("init", Stream::Stdout).unwrap();
    let mut err = j.writer("init", Stream::Stderr).unwrap();
    let mut err_sent = Vec::new();
    for i in 0..60 {
        assert!(written(err.append(&line(i), now()).unwrap()));
        err_sent.extend(line(i));
    }
    let err_segs = segments(tmp.path(), "init", Stream::Stderr);
    // Ten times the budget through stdout: only read segments are deleted.
    let mut out_sent = Vec::new();
    let mut out_read = Vec::new();
    for i in 0..2000 {
        assert!(
            written(out.append(&line(i), now()).unwrap()),
            "stdout append {i}"
        );
        out_sent.extend(line(i));
        out_read.extend(drain(&mut out_c));
        assert!(j.used_bytes() <= 6 * SEG);
    }
    assert_eq!(out_read, out_sent);
    assert_eq!(segments(tmp.path(), "init", Stream::Stderr), err_segs);
    assert!(segments(tmp.path(), "init", Stream::Stdout)[0].0 > 1);
    // stderr fills the budget and then blocks; all of it is still there.
    let mut i = 60;
    while written(err.append(&line(i), now()).unwrap()) {
        err_sent.extend(line(i));
        i += 1;
    }
    assert_eq!(
        reconstruct(&read_all(tmp.path(), "init", Stream::Stderr)),
        err_sent
    );
    assert_eq!(segments(tmp.path(), "init", Stream::Stderr)[0].0, 1);
}

#[test]
fn retention_keeps_max_segments_read_segments_per_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let j = Journal::open(config(tmp.path(), 1 << 20, SEG, 2, FullPolicy::Block)).unwrap();
    let mut c = j.consumer("init", Stream::Stdout).unwrap();
    let mut w = j.writer("init", Stream::Stdout).unwrap();
    for i in 0..400 {
        assert!(written(w.append(&line(i), now()).unwrap()));
    }
    // Unread: everything is kept.
    let all = segments(tmp.path(), "init", Stream::Stdout);
    assert!(all.len() > 8 && all[0].0 == 1);
    drain(&mut c);
    let left = segments(tmp.path(), "init", Stream::Stdout);
    assert_eq!(
        left.len(),
        3,
        "two read segments and the current one: {left:?}"
    );
    assert_eq!(left, all[all.len() - 3..]);
    // A closed consumer no longer holds anything back.
    drop(c);
    let _c2 = j.consumer("init", Stream::Stderr).unwrap();
    assert_eq!(segments(tmp.path(), "init", Stream::Stdout).len(), 3);
}

#[test]
fn one_append_larger_than_the_budget_is_kept_when_its_own_rotations_make_room() {
    // No consumer: finished segments beyond `max_segments` go at rotation.
    // One append of five budgets (a full pipe read under a small budget)
    // is written whole, not cut at the room that was left before it.
    let tmp = tempfile::tempdir().unwrap();
    let j = Journal::open(config(tmp.path(), BUDGET, SEG, 1, FullPolicy::Drop)).unwrap();
    let mut w = j.writer("init", Stream::Stdout).unwrap();
    let mut chunk = Vec::new();
    let mut i = 0;
    while (chunk.len() as u64) < 5 * BUDGET {
        chunk.extend(line(i));
        i += 1;
    }
    match w.append(&chunk, now()).unwrap() {
        Appended::Written { .. } => {}
        other => panic!("a chunk its rotations make room for: {other:?}"),
    }
    assert_eq!(w.dropped_bytes(), 0);
    assert!(j.used_bytes() <= BUDGET);
    let tail = reconstruct(&read_all(tmp.path(), "init", Stream::Stdout));
    assert!(!tail.is_empty() && chunk.ends_with(&tail));
    // A consumer that has not read them holds segments back: the same
    // append is then cut at the budget and the rest counted as dropped.
    let _c = j.consumer("init", Stream::Stdout).unwrap();
    match w.append(&chunk, now()).unwrap() {
        Appended::Dropped {
            accepted, dropped, ..
        } => {
            assert!(accepted > 0 && accepted < chunk.len());
            assert_eq!(accepted as u64 + dropped, chunk.len() as u64);
        }
        other => panic!("unread segments must hold the budget: {other:?}"),
    }
}
