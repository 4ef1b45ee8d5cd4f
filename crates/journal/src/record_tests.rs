use time::macros::datetime;

use super::*;

fn ts() -> OffsetDateTime {
    datetime!(2024-05-01 12:00:00.000001 UTC)
}

#[test]
fn timestamps_are_fixed_width_utc_with_nine_digits() {
    let s = format_timestamp(ts());
    assert_eq!(s, "2024-05-01T12:00:00.000001000Z");
    assert_eq!(s.len(), TIMESTAMP_LEN);
    let other = datetime!(2024-05-01 14:00:00 +2);
    assert_eq!(format_timestamp(other), "2024-05-01T12:00:00.000000000Z");
}

#[test]
fn record_lines_round_trip_through_the_parser() {
    let rec = Record {
        timestamp: ts(),
        stream: Stream::Stderr,
        partial: true,
        text: b"a b\r\0\xff\xfe".to_vec(),
    };
    let line = rec.to_line();
    assert!(line.ends_with(b"\n"));
    assert_eq!(parse_line(&line), Ok(rec.clone()));
    assert_eq!(rec.raw_bytes(), b"a b\r\0\xff\xfe");
}

#[test]
fn parser_handles_cri_edge_cases() {
    let r = parse_line(b"2024-05-01T12:00:00.5Z stdout F ").unwrap();
    assert_eq!((r.text.as_slice(), r.partial), (&b""[..], false));
    assert_eq!(r.raw_bytes(), b"\n");
    // Spaces in the text are kept, a trailing \r too.
    let r = parse_line(b"2024-05-01T12:00:00Z stdout P  two  spaces \r").unwrap();
    assert_eq!(r.text, b" two  spaces \r");
    assert!(r.partial);
    // Forward-compatible tags: only the first counts.
    let r = parse_line(b"2024-05-01T12:00:00Z stderr F:x:y text").unwrap();
    assert!(!r.partial);
    assert_eq!(r.stream, Stream::Stderr);
    // Offsets other than Z.
    let r = parse_line(b"2024-05-01T14:00:00.123456789+02:00 stdout F x\n").unwrap();
    assert_eq!(r.timestamp, datetime!(2024-05-01 12:00:00.123456789 UTC));
    assert_eq!(r.text, b"x");

    assert_eq!(parse_line(b""), Err(ParseError::MissingTimestamp));
    assert_eq!(
        parse_line(b"2024-05-01T12:00:00Z"),
        Err(ParseError::MissingTimestamp)
    );
    assert!(matches!(
        parse_line(b"yesterday stdout F x"),
        Err(ParseError::BadTimestamp(_))
    ));
    assert!(matches!(
        parse_line(b"\xff stdout F x"),
        Err(ParseError::BadTimestamp(_))
    ));
    assert_eq!(
        parse_line(b"2024-05-01T12:00:00Z stdout"),
        Err(ParseError::MissingStream)
    );
    assert_eq!(
        parse_line(b"2024-05-01T12:00:00Z stdin F x"),
        Err(ParseError::BadStream("stdin".into()))
    );
    assert_eq!(
        parse_line(b"2024-05-01T12:00:00Z stdout F"),
        Err(ParseError::MissingTag)
    );
    assert_eq!(
        parse_line(b"2024-05-01T12:00:00Z stdout X x"),
        Err(ParseError::BadTag("X".into()))
    );
}

fn encode(bytes: &[u8], max: usize) -> (Vec<Record>, Vec<(usize, usize)>) {
    let (mut out, mut ends) = (Vec::new(), Vec::new());
    encode_append(
        &mut out,
        &mut ends,
        &format_timestamp(ts()),
        Stream::Stdout,
        bytes,
        max,
    );
    let recs = out
        .split_inclusive(|&b| b == b'\n')
        .map(|l| parse_line(l).unwrap())
        .collect();
    (recs, ends)
}

#[test]
fn appends_become_full_partial_and_split_records() {
    let (recs, ends) = encode(b"one\n\ntwo\nthr", 100);
    let shape: Vec<(&[u8], bool)> = recs
        .iter()
        .map(|r| (r.text.as_slice(), r.partial))
        .collect();
    assert_eq!(
        shape,
        vec![
            (&b"one"[..], false),
            (b"", false),
            (b"two", false),
            (b"thr", true)
        ]
    );
    assert_eq!(
        ends.iter().map(|e| e.1).collect::<Vec<_>>(),
        vec![4, 5, 9, 12]
    );
    assert_eq!(reconstruct(&recs), b"one\n\ntwo\nthr");

    let (recs, ends) = encode(b"abcdefgh\nij", 3);
    let shape: Vec<(&[u8], bool)> = recs
        .iter()
        .map(|r| (r.text.as_slice(), r.partial))
        .collect();
    assert_eq!(
        shape,
        vec![
            (&b"abc"[..], true),
            (b"def", true),
            (b"gh", false),
            (b"ij", true)
        ]
    );
    assert_eq!(
        ends.iter().map(|e| e.1).collect::<Vec<_>>(),
        vec![3, 6, 9, 11]
    );
    // A line of exactly the record size stays one F record.
    let (recs, _) = encode(b"abc\n", 3);
    assert_eq!(recs.len(), 1);
    assert!(!recs[0].partial);
}

#[test]
fn the_raw_parser_agrees_with_the_full_parser() {
    let lines: &[&[u8]] = &[
        b"2024-05-01T12:00:00.123456789Z stdout F hello",
        b"2024-05-01T12:00:00.123456789Z stderr P part\n",
        b"2024-05-01T12:00:00.123456789Z stdout F ",
        b"2024-05-01T12:00:00.5Z stdout F short fraction",
        b"2024-05-01T14:00:00.123456789+02:00 stdout F offset",
        b"2024-05-01T12:00:00.123456789Z stdout F:x tagged",
        b"2024-05-01T12:00:00.123456789Z stdin F x",
        b"2024-05-01T12:00:00.123456789Z stdout X x",
        b"2024-05-01T12:00:00.123456789Z stdout F",
        b"2024-05-01T12:00:00.123456789Z",
        b"2024-05-01T12:00:00.12345678xZ stdout F x",
        b"yesterday stdout F x",
        b"\xff stdout F x",
        b"",
    ];
    for line in lines {
        let raw = parse_line_raw(line).map(|r| (r.stream, r.partial, r.text.to_vec()));
        let full = parse_line(line).map(|r| (r.stream, r.partial, r.text));
        assert_eq!(raw, full, "{}", String::from_utf8_lossy(line));
    }
    let r = parse_line_raw(b"2024-05-01T12:00:00.123456789Z stdout P abc").unwrap();
    assert_eq!(r.timestamp, b"2024-05-01T12:00:00.123456789Z");
    let mut out = Vec::new();
    r.write_raw(&mut out);
    assert_eq!(out, b"abc");
}
