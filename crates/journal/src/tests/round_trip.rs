use super::*;
use crate::reconstruct;

/// Random output: text lines, binary noise with `\r`, `\0` and invalid
/// UTF-8, and long runs without a newline.
fn random_output(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        match rng.below(4) {
            0 => {
                let n = rng.below(200) as usize;
                out.extend((0..n).map(|i| b'a' + (i % 26) as u8));
                out.push(b'\n');
            }
            1 => {
                let n = rng.below(4000) as usize;
                out.extend((0..n).map(|_| rng.next_u64() as u8));
            }
            2 => out.extend_from_slice(b"\r\0\xff\xfe\xc3(\n\n"),
            _ => {
                let n = 100_000 + rng.below(200_000) as usize;
                out.extend((0..n).map(|_| b'x' ^ (rng.below(2) as u8 * 0x20)));
            }
        }
    }
    out.truncate(len);
    out
}

fn append_in_random_chunks(
    w: &mut crate::StreamWriter,
    rng: &mut Rng,
    data: &[u8],
    max_chunk: u64,
) {
    let mut pos = 0;
    while pos < data.len() {
        let n = (1 + rng.below(max_chunk) as usize).min(data.len() - pos);
        assert!(written(w.append(&data[pos..pos + n], now()).unwrap()));
        pos += n;
    }
}

#[test]
fn random_binary_output_round_trips_byte_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let j = Journal::open(config(
        tmp.path(),
        64 << 20,
        1 << 20,
        1000,
        FullPolicy::Block,
    ))
    .unwrap();
    let mut rng = Rng::new(7);
    for stream in Stream::ALL {
        let data = random_output(&mut rng, 3 << 20);
        let mut w = j.writer("init", stream).unwrap();
        append_in_random_chunks(&mut w, &mut rng, &data, 70_000);
        let recs = read_all(tmp.path(), "init", stream);
        assert!(recs.iter().all(|r| r.stream == stream));
        assert!(recs.iter().all(|r| r.text.len() <= (64 << 10) - 64));
        assert!(recs.iter().all(|r| !r.text.contains(&b'\n')));
        assert!(reconstruct(&recs) == data, "{stream} differs");
    }
    assert!(
        segments(tmp.path(), "init", Stream::Stdout).len() > 3,
        "rotated"
    );
}

#[test]
fn a_64_mib_line_without_newline_becomes_partial_records() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(tmp.path(), 160 << 20, 16 << 20, 1000, FullPolicy::Block);
    c.max_record_bytes = 64 << 10;
    let j = Journal::open(c).unwrap();
    let mut rng = Rng::new(64);
    let mut data = vec![0u8; 64 << 20];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i % 251) as u8 | 1;
        if *b == b'\n' {
            *b = b'\r';
        }
    }
    let mut w = j.writer("init", Stream::Stdout).unwrap();
    append_in_random_chunks(&mut w, &mut rng, &data, 1 << 20);
    drop(w);
    let recs = read_all(tmp.path(), "init", Stream::Stdout);
    assert!(recs.iter().all(|r| r.partial));
    assert!(recs.iter().all(|r| r.text.len() <= 64 << 10));
    assert!(recs.len() >= 1024);
    assert!(reconstruct(&recs) == data);
}
