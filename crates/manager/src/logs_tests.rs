use std::path::Path;

use holdfast_journal::{Appended, ByteSize, FullPolicy, Journal, JournalOptions, StreamWriter};
use time::Duration;

use super::*;

fn t(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap() + Duration::milliseconds(ms)
}

fn start(ms: i64, segment: u64, offset: u64) -> LineStart {
    LineStart {
        at: Cursor { segment, offset },
        timestamp: t(ms),
    }
}

fn journal(dir: &Path, segment: u64, max_record: u64) -> Journal {
    let config = JournalOptions {
        dir: "/unused".into(),
        budget_bytes: ByteSize(1 << 30),
        segment_bytes: ByteSize(segment),
        max_segments: 1000,
        policy: FullPolicy::Block,
        max_record_bytes: ByteSize(max_record),
        ..JournalOptions::default()
    }
    .for_dir(dir)
    .unwrap();
    Journal::open(config).unwrap()
}

/// Appends `bytes`, which must fit.
fn put(w: &mut StreamWriter, bytes: &[u8], at: OffsetDateTime) {
    let appended = w.append(bytes, at).unwrap();
    assert!(matches!(appended, Appended::Written { .. }), "{appended:?}");
}

fn read_all(dir: &Path, options: LogsOptions) -> Vec<LogChunk> {
    let mut r = LogReader::open(dir, &options).unwrap();
    let mut out = Vec::new();
    loop {
        let batch = r.read_now(100).unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

/// The output as `(stream, text)` pieces.
fn texts(chunks: &[LogChunk]) -> Vec<(Stream, String)> {
    chunks
        .iter()
        .map(|c| match c {
            LogChunk::Output { stream, data, .. } => {
                (*stream, String::from_utf8_lossy(data).into_owned())
            }
            LogChunk::Gap { stream } => (*stream, "<gap>".to_owned()),
        })
        .collect()
}

#[test]
fn tail_takes_the_newest_lines_of_both_streams() {
    let out = vec![start(50, 1, 50), start(30, 1, 30), start(10, 1, 10)];
    let err = vec![start(40, 2, 40), start(20, 2, 20)];
    let walk = |v: &Vec<LineStart>| v.clone().into_iter().map(Ok);
    assert_eq!(
        tail_starts([walk(&out), walk(&err)], 1).unwrap(),
        [
            Some(Cursor {
                segment: 1,
                offset: 50
            }),
            None
        ]
    );
    assert_eq!(
        tail_starts([walk(&out), walk(&err)], 2).unwrap(),
        [
            Some(Cursor {
                segment: 1,
                offset: 50
            }),
            Some(Cursor {
                segment: 2,
                offset: 40
            })
        ]
    );
    assert_eq!(
        tail_starts([walk(&out), walk(&err)], 4).unwrap(),
        [
            Some(Cursor {
                segment: 1,
                offset: 30
            }),
            Some(Cursor {
                segment: 2,
                offset: 20
            })
        ]
    );
    // More than there are: everything.
    assert_eq!(
        tail_starts([walk(&out), walk(&err)], 100).unwrap(),
        [
            Some(Cursor {
                segment: 1,
                offset: 10
            }),
            Some(Cursor {
                segment: 2,
                offset: 20
            })
        ]
    );
    assert_eq!(
        tail_starts([walk(&vec![]), walk(&vec![])], 3).unwrap(),
        [None, None]
    );
    // On a tie stdout counts as older (it is sent first).
    let same_out = vec![start(10, 1, 0)];
    let same_err = vec![start(10, 2, 0)];
    assert_eq!(
        tail_starts([walk(&same_out), walk(&same_err)], 1).unwrap(),
        [
            None,
            Some(Cursor {
                segment: 2,
                offset: 0
            })
        ]
    );
}

#[test]
fn since_must_be_a_valid_time() {
    let ok = prost_types::Timestamp {
        seconds: 1_700_000_000,
        nanos: 5,
    };
    assert_eq!(parse_since(&ok).unwrap(), t(0) + Duration::nanoseconds(5));
    for bad in [
        prost_types::Timestamp {
            seconds: 1,
            nanos: -1,
        },
        prost_types::Timestamp {
            seconds: 1,
            nanos: 1_000_000_000,
        },
        prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        },
    ] {
        let err = parse_since(&bad).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}");
        assert!(err.to_string().starts_with("since: "), "{err}");
    }
    let opts = LogsOptions::new(true, 0, None).unwrap();
    assert_eq!(opts.tail, None);
    assert_eq!(LogsOptions::new(false, 7, None).unwrap().tail, Some(7));
}

#[test]
fn lines_are_joined_merged_by_time_and_cut_by_tail_and_since() {
    let tmp = tempfile::tempdir().unwrap();
    let j = journal(tmp.path(), 4096, 100);
    let mut out = j.writer(INIT_PROCESS, Stream::Stdout).unwrap();
    let mut err = j.writer(INIT_PROCESS, Stream::Stderr).unwrap();
    put(&mut out, b"o1\no2 starts ", t(10));
    put(&mut err, b"e1\n", t(20));
    put(&mut out, b"and ends\n", t(30));
    // A line longer than a segment: many P records over several segments.
    let long = "x".repeat(10_000);
    put(&mut err, format!("{long}\n").as_bytes(), t(40));
    put(&mut out, b"o3\n", t(50));
    // Binary bytes, \r and an unfinished last line.
    put(&mut out, b"\x00\xff\r\n", t(60));
    put(&mut err, b"open", t(70));
    drop((out, err));

    let all = read_all(tmp.path(), LogsOptions::default());
    let expect_all = vec![
        (Stream::Stdout, "o1\n".to_owned()),
        (Stream::Stdout, "o2 starts and ends\n".to_owned()),
        (Stream::Stderr, "e1\n".to_owned()),
        (Stream::Stderr, format!("{long}\n")),
        (Stream::Stdout, "o3\n".to_owned()),
        (Stream::Stdout, "\u{0}\u{fffd}\r\n".to_owned()),
        (Stream::Stderr, "open".to_owned()),
    ];
    assert_eq!(texts(&all), expect_all);
    let LogChunk::Output { data, time, .. } = &all[5] else {
        panic!("not output")
    };
    assert_eq!(data, b"\x00\xff\r\n");
    assert_eq!(*time, t(60));
    let LogChunk::Output { time, .. } = &all[1] else {
        panic!("not output")
    };
    assert_eq!(*time, t(10), "a joined line has its first piece's time");

    for n in 1..=8u64 {
        let tail = read_all(
            tmp.path(),
            LogsOptions {
                tail: Some(n),
                ..Default::default()
            },
        );
        let want = &expect_all[expect_all.len().saturating_sub(n as usize)..];
        assert_eq!(texts(&tail), want, "tail {n}");
    }

    let since = read_all(
        tmp.path(),
        LogsOptions {
            since: Some(t(30)),
            ..Default::default()
        },
    );
    // o2 began at 10: skipped whole, though it ended at 30.
    assert_eq!(texts(&since), expect_all[3..]);
    let both = read_all(
        tmp.path(),
        LogsOptions {
            since: Some(t(30)),
            tail: Some(10),
            ..Default::default()
        },
    );
    assert_eq!(texts(&both), expect_all[3..]);
}

#[test]
fn a_long_line_comes_in_pieces_and_reading_stops_at_the_end_it_found() {
    let tmp = tempfile::tempdir().unwrap();
    let j = journal(tmp.path(), 64 << 10, 16 << 10);
    let mut out = j.writer(INIT_PROCESS, Stream::Stdout).unwrap();
    let line: Vec<u8> = (0..CHUNK_BYTES * 2 + 5).map(|i| (i % 251) as u8).collect();
    let mut with_nl = line.clone();
    with_nl.push(b'\n');
    put(&mut out, &with_nl, t(1));
    let mut r = LogReader::open(tmp.path(), &LogsOptions::default()).unwrap();
    // Written after the call came: not part of a non-follow read.
    put(&mut out, b"later\n", t(2));
    let mut got = Vec::new();
    let mut pieces = 0;
    loop {
        let batch = r.read_now(1).unwrap();
        if batch.is_empty() {
            break;
        }
        for c in batch {
            let LogChunk::Output { data, .. } = c else {
                panic!("gap")
            };
            assert!(data.len() <= CHUNK_BYTES + (16 << 10));
            pieces += 1;
            got.extend(data);
        }
    }
    assert_eq!(got, with_nl);
    assert!(pieces >= 3, "{pieces}");
    // A follow goes on past it.
    let follow = read_all(
        tmp.path(),
        LogsOptions {
            follow: true,
            tail: Some(1),
            ..Default::default()
        },
    );
    assert_eq!(texts(&follow), [(Stream::Stdout, "later\n".to_owned())]);
}

#[test]
fn a_deleted_segment_is_reported_as_a_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(INIT_PROCESS);
    std::fs::create_dir_all(&dir).unwrap();
    let ts = "2024-05-01T12:00:00.000000000Z";
    std::fs::write(
        dir.join("stdout.0000000001.log"),
        format!("{ts} stdout F a\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("stdout.0000000003.log"),
        format!("{ts} stdout F c\n"),
    )
    .unwrap();
    let chunks = read_all(tmp.path(), LogsOptions::default());
    assert_eq!(
        texts(&chunks),
        [
            (Stream::Stdout, "a\n".to_owned()),
            (Stream::Stdout, "<gap>".to_owned()),
            (Stream::Stdout, "c\n".to_owned()),
        ]
    );
    let wire = chunks[1].clone().into_response();
    assert!(wire.gap && wire.data.is_empty() && wire.time.is_none());
    assert_eq!(wire.stream, LogStream::Stdout as i32);
}
