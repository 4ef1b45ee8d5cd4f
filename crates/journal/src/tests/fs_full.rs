use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::*;
use crate::{reconstruct, FullCause};

/// A 1 MiB tmpfs, unmounted when dropped (also when the test panics).
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Option<Tmpfs> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        if let Err(e) = mount(
            Some("tmpfs"),
            &path,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=1m"),
        ) {
            eprintln!("skipped: cannot mount a tmpfs: {e}");
            return None;
        }
        Some(Tmpfs { path, _dir: dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
    }
}

fn line(i: usize) -> Vec<u8> {
    format!("{i:06} {}\n", "f".repeat(3000)).into_bytes()
}

/// Fills the filesystem with a journal under `policy`; returns what was
/// written, and what the appends said after the first refusal.
fn fill(dir: &Path, policy: FullPolicy) -> (Journal, crate::StreamWriter, Vec<u8>, Vec<Appended>) {
    // A budget far above the filesystem: the filesystem fills first.
    let j = Journal::open(config(dir, 64 << 20, 64 << 10, 1000, policy)).unwrap();
    let _c = j.consumer("init", Stream::Stdout).unwrap();
    let mut w = j.writer("init", Stream::Stdout).unwrap();
    let mut sent = Vec::new();
    let mut refused = Vec::new();
    for i in 0..600 {
        match w.append(&line(i), now()).unwrap() {
            Appended::Written { .. } if refused.is_empty() => sent.extend(line(i)),
            other => refused.push(other),
        }
    }
    (j, w, sent, refused)
}

#[test]
fn a_full_filesystem_applies_the_policy_and_keeps_the_journal_readable() {
    let Some(fs) = Tmpfs::mount() else {
        return;
    };
    // Space to give back later.
    let filler = fs.path.join("filler");
    std::fs::write(&filler, vec![0u8; 256 << 10]).unwrap();

    // block: refused, nothing half-written, readable, and resumes.
    let dir = fs.path.join("block");
    let (_j, mut w, sent, refused) = fill(&dir, FullPolicy::Block);
    assert!(!sent.is_empty());
    assert!(!refused.is_empty());
    assert!(
        refused.iter().all(|a| *a
            == Appended::Full {
                accepted: 0,
                cause: FullCause::Filesystem
            }),
        "{refused:?}"
    );
    assert_eq!(reconstruct(&read_all(&dir, "init", Stream::Stdout)), sent);
    std::fs::remove_file(&filler).unwrap();
    assert!(written(w.append(b"room again\n", now()).unwrap()));
    let mut want = sent.clone();
    want.extend(b"room again\n");
    assert_eq!(reconstruct(&read_all(&dir, "init", Stream::Stdout)), want);
    drop(w);
    std::fs::remove_dir_all(&dir).unwrap();

    // drop: counted exactly, then a marker once there is room.
    std::fs::write(&filler, vec![0u8; 256 << 10]).unwrap();
    let dir = fs.path.join("drop");
    let (j, mut w, sent, refused) = fill(&dir, FullPolicy::Drop);
    let mut dropped = 0;
    for a in &refused {
        match a {
            Appended::Dropped {
                accepted: 0,
                dropped: d,
                cause: FullCause::Filesystem,
            } => dropped += d,
            // Appends that fit again after a drop carry the marker.
            Appended::Written { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(dropped > 0);
    assert_eq!(j.dropped_bytes(), dropped);
    let recs = read_all(&dir, "init", Stream::Stdout);
    assert!(reconstruct(&recs).starts_with(&sent));
    std::fs::remove_file(&filler).unwrap();
    assert!(written(w.append(b"room again\n", now()).unwrap()));
    let recs = read_all(&dir, "init", Stream::Stdout);
    let tail = reconstruct(&recs[recs.len() - 2..]);
    assert!(
        tail.starts_with(b"holdfast: dropped "),
        "{}",
        String::from_utf8_lossy(&tail)
    );
    assert!(tail.ends_with(b" bytes (log budget full)\nroom again\n"));
}
