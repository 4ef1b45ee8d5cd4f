use std::time::Duration;

use super::*;
use crate::{reconstruct, Cursor};

fn line(i: usize) -> Vec<u8> {
    format!("line {i:05} {}\n", "z".repeat(i % 50)).into_bytes()
}

#[test]
fn segments_rotate_by_size_and_reopening_continues_the_numbering() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 1 << 20, 4096, 1000, FullPolicy::Block);
    let mut expected = Vec::new();
    {
        let j = Journal::open(cfg.clone()).unwrap();
        let mut w = j.writer("init", Stream::Stdout).unwrap();
        for i in 0..300 {
            expected.extend(line(i));
            assert!(written(w.append(&line(i), now()).unwrap()));
        }
    }
    let before = segments(tmp.path(), "init", Stream::Stdout);
    assert!(before.len() > 5, "{before:?}");
    assert!(before.iter().all(|s| s.1 <= 4096), "{before:?}");
    assert_eq!(
        before.iter().map(|s| s.0).collect::<Vec<_>>(),
        (1..=before.len() as u64).collect::<Vec<_>>()
    );
    let last = before.last().unwrap().0;
    {
        let j = Journal::open(cfg).unwrap();
        assert_eq!(j.used_bytes(), before.iter().map(|s| s.1).sum::<u64>());
        let mut w = j.writer("init", Stream::Stdout).unwrap();
        expected.extend(b"after restart\n");
        assert!(written(w.append(b"after restart\n", now()).unwrap()));
    }
    let after = segments(tmp.path(), "init", Stream::Stdout);
    assert_eq!(after[..before.len()], before[..], "old segments untouched");
    assert_eq!(after.last().unwrap().0, last + 1);
    assert_eq!(
        reconstruct(&read_all(tmp.path(), "init", Stream::Stdout)),
        expected
    );
}

#[test]
fn reopening_cuts_a_torn_last_record() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 1 << 20, 4096, 1000, FullPolicy::Block);
    {
        let j = Journal::open(cfg.clone()).unwrap();
        let mut w = j.writer("init", Stream::Stderr).unwrap();
        assert!(written(w.append(b"whole\n", now()).unwrap()));
    }
    let path = tmp.path().join("init/stderr.0000000001.log");
    let good = std::fs::read(&path).unwrap();
    let mut torn = good.clone();
    torn.extend_from_slice(b"2024-05-01T12:00:00.000000000Z stderr F hal");
    std::fs::write(&path, &torn).unwrap();
    let _j = Journal::open(cfg).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), good);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_started_before_rotation_see_every_record_once_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let j = Journal::open(config(tmp.path(), 4 << 20, 4096, 1000, FullPolicy::Block)).unwrap();
    const N: usize = 2000;
    // One follower woken by the writer, one polling the files like the
    // manager would from another process.
    let woken = j.reader("init", Stream::Stdout, Cursor::START).unwrap();
    let mut polling = Reader::open(tmp.path(), "init", Stream::Stdout).unwrap();
    polling.set_poll_interval(Duration::from_millis(5));
    let follow = |mut r: Reader| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < N {
                match tokio::time::timeout(Duration::from_secs(10), r.next()).await {
                    Ok(Ok(Entry::Record { record, .. })) => got.push(record.text),
                    other => panic!("follower: {other:?}"),
                }
            }
            got
        })
    };
    let (a, b) = (follow(woken), follow(polling));
    let mut w = j.writer("init", Stream::Stdout).unwrap();
    for i in 0..N {
        assert!(written(w.append(&line(i), now()).unwrap()));
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let want: Vec<Vec<u8>> = (0..N)
        .map(|i| line(i)[..line(i).len() - 1].to_vec())
        .collect();
    assert_eq!(a.await.unwrap(), want);
    assert_eq!(b.await.unwrap(), want);
    assert!(segments(tmp.path(), "init", Stream::Stdout).len() > 10);
}

#[test]
fn a_reader_overtaken_by_deletion_reports_the_gap() {
    let tmp = tempfile::tempdir().unwrap();
    // No consumer and no retention: finished segments go at rotation.
    let j = Journal::open(config(tmp.path(), 1 << 20, 4096, 0, FullPolicy::Block)).unwrap();
    let mut w = j.writer("init", Stream::Stdout).unwrap();
    let mut r = j.reader("init", Stream::Stdout, Cursor::START).unwrap();
    assert!(written(w.append(b"first\n", now()).unwrap()));
    let Some(Entry::Record { record, next }) = r.try_next().unwrap() else {
        panic!("no first record");
    };
    assert_eq!((record.text.as_slice(), next.segment), (&b"first"[..], 1));
    for i in 0..200 {
        assert!(written(w.append(&line(i), now()).unwrap()));
    }
    let segs = segments(tmp.path(), "init", Stream::Stdout);
    assert_eq!(segs.len(), 1, "only the current segment is kept: {segs:?}");
    // The reader still holds segment 1 open and reads it to its end.
    let mut gap = None;
    while let Some(e) = r.try_next().unwrap() {
        if let Entry::Gap { from, to } = e {
            gap = Some((from, to));
            break;
        }
    }
    let (from, to) = gap.expect("a gap");
    assert_eq!(from.segment, 1);
    assert_eq!(
        to,
        Cursor {
            segment: segs[0].0,
            offset: 0
        }
    );
    let rest: Vec<_> = std::iter::from_fn(|| r.try_next().unwrap()).collect();
    assert!(!rest.is_empty());
    assert!(rest.iter().all(|e| matches!(e, Entry::Record { .. })));
}

/// A reopened journal (a restored task's shim) can be consumed from its end:
/// the consumer gets what the new writer appends, not the earlier output,
/// and no gap in between.
#[tokio::test]
async fn a_consumer_from_the_end_of_a_reopened_journal_reads_only_new_output() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = || config(tmp.path(), 1 << 20, 64 << 10, 100, FullPolicy::Block);
    {
        let j = Journal::open(cfg()).unwrap();
        let mut w = j.writer("init", Stream::Stdout).unwrap();
        for i in 0..3000 {
            assert!(written(w.append(&line(i), now()).unwrap()));
        }
        w.close().unwrap();
    }
    let before = segments(tmp.path(), "init", Stream::Stdout);
    assert!(before.len() > 1, "rotated before the reopen");
    let j = Journal::open(cfg()).unwrap();
    let end = j.end("init", Stream::Stdout).unwrap();
    assert_eq!(end.segment, before.last().unwrap().0 + 1);
    assert_eq!(j.end("init", Stream::Stderr).unwrap(), Cursor::START);
    let mut c = j.consumer_at("init", Stream::Stdout, end).unwrap();
    assert!(c.try_next().unwrap().is_none(), "nothing new yet");
    let mut w = j.writer("init", Stream::Stdout).unwrap();
    for i in 3000..3100 {
        assert!(written(w.append(&line(i), now()).unwrap()));
    }
    for i in 3000..3100 {
        match c.next().await.unwrap() {
            Entry::Record { record, .. } => assert_eq!(record.text, line(i)[..line(i).len() - 1]),
            gap => panic!("unexpected {gap:?}"),
        }
    }
    assert!(c.try_next().unwrap().is_none());
    // The journal still holds one ordered stream: the old lines, then the new.
    let all = read_all(tmp.path(), "init", Stream::Stdout);
    assert_eq!(all.len(), 3100);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.text, line(i)[..line(i).len() - 1]);
    }
}
