//! Round trips through the real writer, and hostile archives built by hand
//! with the tar crate: each must get its specific error and leave neither
//! the staging folder nor the destination behind.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::manifest::{sha256_hex, Trailer};
use crate::*;

// ---------------------------------------------------------------- helpers

fn entry(path: &str, kind: EntryKind) -> Entry {
    Entry {
        path: path.to_owned(),
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 1_700_000_000,
    }
}

fn dir(path: &str) -> Entry {
    entry(path, EntryKind::Dir)
}

fn file(path: &str, size: u64) -> Entry {
    entry(path, EntryKind::File { size })
}

fn link(path: &str, target: &str) -> Entry {
    entry(
        path,
        EntryKind::Symlink {
            target: target.to_owned(),
        },
    )
}

fn manifest(entries: Vec<Entry>) -> Manifest {
    Manifest {
        format_version: FORMAT_VERSION,
        holdfast_version: "test".to_owned(),
        created: "2024-01-01T00:00:00Z".to_owned(),
        container: "web".to_owned(),
        checkpoint: "cp1".to_owned(),
        config: serde_json::json!({"env": ["SECRET=1"]}),
        entries,
    }
}

/// An archive written entry by entry, with no checks: names go straight
/// into the header, so `../x` and `/etc/x` are possible.
struct Hand {
    tar: tar::Builder<Vec<u8>>,
    manifest_bytes: Vec<u8>,
}

impl Hand {
    fn new() -> Self {
        Self {
            tar: tar::Builder::new(Vec::new()),
            manifest_bytes: Vec::new(),
        }
    }

    /// Starts with `manifest` as the first entry.
    fn with(manifest: &Manifest) -> Self {
        let mut hand = Self::new();
        hand.manifest_bytes = serde_json::to_vec(manifest).unwrap();
        let bytes = hand.manifest_bytes.clone();
        hand.raw(MANIFEST_NAME, tar::EntryType::Regular, &bytes, None);
        hand
    }

    fn raw(
        &mut self,
        path: &str,
        kind: tar::EntryType,
        data: &[u8],
        link: Option<&str>,
    ) -> &mut Self {
        let mut header = tar::Header::new_gnu();
        header.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        if let Some(target) = link {
            header.as_gnu_mut().unwrap().linkname[..target.len()]
                .copy_from_slice(target.as_bytes());
        }
        header.set_cksum();
        self.tar.append(&header, data).unwrap();
        self
    }

    fn dir(&mut self, path: &str) -> &mut Self {
        self.raw(path, tar::EntryType::Directory, b"", None)
    }

    fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.raw(path, tar::EntryType::Regular, data, None)
    }

    /// The checksum trailer for the manifest and `files`.
    fn trailer(&mut self, files: &[(&str, &[u8])]) -> &mut Self {
        let trailer = Trailer {
            manifest_sha256: sha256_hex(&self.manifest_bytes),
            files: files
                .iter()
                .map(|(p, d)| ((*p).to_owned(), sha256_hex(d)))
                .collect(),
        };
        let bytes = serde_json::to_vec(&trailer).unwrap();
        self.file(TRAILER_NAME, &bytes)
    }

    /// The finished tar, uncompressed.
    fn tar(&mut self) -> Vec<u8> {
        let tar = std::mem::replace(&mut self.tar, tar::Builder::new(Vec::new()));
        tar.into_inner().unwrap()
    }

    /// The finished archive: the tar in one zstd frame with checksum.
    fn finish(&mut self) -> Vec<u8> {
        compress(&self.tar())
    }
}

fn compress(tar: &[u8]) -> Vec<u8> {
    let mut encoder = zstd::Encoder::new(Vec::new(), 3).unwrap();
    encoder.include_checksum(true).unwrap();
    std::io::Write::write_all(&mut encoder, tar).unwrap();
    encoder.finish().unwrap()
}

/// The smallest valid archive: `criu/` with `criu/a` = "abc", with
/// `tamper` applied between `criu/a` and the trailer.
fn valid_with(tamper: impl FnOnce(&mut Hand)) -> Vec<u8> {
    let mut hand = Hand::with(&manifest(vec![dir("criu"), file("criu/a", 3)]));
    hand.dir("criu").file("criu/a", b"abc");
    tamper(&mut hand);
    hand.trailer(&[("criu/a", b"abc")]).finish()
}

fn valid() -> Vec<u8> {
    valid_with(|_| {})
}

/// `refused!(archive [, options] => pattern)`: the import fails with an
/// error matching `pattern` (guards allowed) and leaves nothing behind.
macro_rules! refused {
    ($archive:expr, $options:expr => $($pattern:tt)+) => {{
        let err = refused_with(&$archive, &$options);
        assert!(matches!(&err, $($pattern)+), "unexpected error: {err}");
        err
    }};
    ($archive:expr => $($pattern:tt)+) => {
        refused!($archive, ImportOptions::default() => $($pattern)+)
    };
}

/// Imports `archive` with `options` into a fresh folder and returns the
/// error, after checking that the folder is still empty: no staging folder,
/// no destination.
fn refused_with(archive: &[u8], options: &ImportOptions) -> ArchiveError {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("imported");
    let err = import(archive, &dest, options).expect_err("hostile archive imported");
    let left: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind after {err}: {left:?}");
    err
}

// ------------------------------------------------------------- round trip

#[test]
fn a_folder_tree_survives_export_and_import_with_bytes_modes_and_links() {
    let src = tempfile::tempdir().unwrap();
    let criu = src.path().join("images");
    let rootfs = src.path().join("upper");
    fs::create_dir_all(criu.join("sub")).unwrap();
    fs::create_dir_all(rootfs.join("etc/ro")).unwrap();
    // Larger than one read chunk, not all zeros.
    let pages: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(criu.join("pages-1.img"), &pages).unwrap();
    fs::write(criu.join("sub/core.img"), b"core").unwrap();
    fs::write(criu.join("empty.img"), b"").unwrap();
    fs::set_permissions(criu.join("sub/core.img"), fs::Permissions::from_mode(0o644)).unwrap();
    symlink("pages-1.img", criu.join("pages.lnk")).unwrap();
    fs::write(rootfs.join("etc/app.sh"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(rootfs.join("etc/app.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(rootfs.join("etc/ro/conf"), b"x=1").unwrap();
    fs::set_permissions(rootfs.join("etc/ro"), fs::Permissions::from_mode(0o555)).unwrap();
    symlink("/bin/busybox", rootfs.join("sh")).unwrap();

    let export = Export::scan(ExportSpec {
        container: "web".into(),
        checkpoint: "cp1".into(),
        config: serde_json::json!({"image": "busybox", "env": ["A=1"]}),
        criu_dir: criu.clone(),
        rootfs_diff_dir: Some(rootfs.clone()),
    })
    .unwrap();
    assert_eq!(export.total_bytes(), pages.len() as u64 + 4 + 10 + 3);
    let mut seen = Vec::new();
    let archive = export.write(Vec::new(), |p| seen.push(p)).unwrap();
    assert!(
        seen.windows(2).all(|w| w[0].done <= w[1].done),
        "progress goes backwards"
    );
    assert_eq!(
        seen.last().map(|p| (p.done, p.total)),
        Some((export.total_bytes(), export.total_bytes()))
    );

    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("cp1");
    let manifest = import(archive.as_slice(), &dest, &ImportOptions::default()).unwrap();
    assert_eq!(&manifest, export.manifest());
    assert_eq!(manifest.config["image"], "busybox");

    let mode = |p: &str| fs::symlink_metadata(dest.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode(""), 0o700);
    assert_eq!(fs::read(dest.join("criu/pages-1.img")).unwrap(), pages);
    assert_eq!(fs::read(dest.join("criu/sub/core.img")).unwrap(), b"core");
    assert_eq!(fs::read(dest.join("criu/empty.img")).unwrap(), b"");
    // criu/: 0600 files and 0700 folders whatever the source said.
    assert_eq!(mode("criu"), 0o700);
    assert_eq!(mode("criu/sub"), 0o700);
    assert_eq!(mode("criu/sub/core.img"), 0o600);
    assert_eq!(mode("criu/pages-1.img"), 0o600);
    assert_eq!(
        fs::read_link(dest.join("criu/pages.lnk")).unwrap(),
        Path::new("pages-1.img")
    );
    // rootfs-diff/: modes as recorded.
    assert_eq!(
        fs::read(dest.join("rootfs-diff/etc/app.sh")).unwrap(),
        b"#!/bin/sh\n"
    );
    assert_eq!(mode("rootfs-diff/etc/app.sh"), 0o755);
    assert_eq!(mode("rootfs-diff/etc/ro"), 0o555);
    assert_eq!(
        fs::read(dest.join("rootfs-diff/etc/ro/conf")).unwrap(),
        b"x=1"
    );
    assert_eq!(
        fs::read_link(dest.join("rootfs-diff/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    // The manifest is kept, 0600 (it holds the config).
    assert_eq!(mode(MANIFEST_NAME), 0o600);
    let kept: Manifest =
        serde_json::from_slice(&fs::read(dest.join(MANIFEST_NAME)).unwrap()).unwrap();
    assert_eq!(kept, manifest);
    // Nothing else next to the destination.
    assert_eq!(fs::read_dir(out.path()).unwrap().count(), 1);
}

#[test]
fn an_overlay_whiteout_is_exported_as_an_empty_wh_file() {
    let src = tempfile::tempdir().unwrap();
    let criu = src.path().join("criu");
    let rootfs = src.path().join("upper");
    fs::create_dir_all(&criu).unwrap();
    fs::create_dir_all(&rootfs).unwrap();
    let made = nix::sys::stat::mknod(
        &rootfs.join("gone"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        0,
    );
    if made.is_err() {
        eprintln!("skipped: mknod needs CAP_MKNOD");
        return;
    }
    let export = Export::scan(ExportSpec {
        container: "web".into(),
        checkpoint: "cp1".into(),
        config: serde_json::Value::Null,
        criu_dir: criu,
        rootfs_diff_dir: Some(rootfs),
    })
    .unwrap();
    let archive = export.write(Vec::new(), |_| {}).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("cp");
    import(archive.as_slice(), &dest, &ImportOptions::default()).unwrap();
    let whiteout = fs::symlink_metadata(dest.join("rootfs-diff/.wh.gone")).unwrap();
    assert!(whiteout.is_file());
    assert_eq!(whiteout.len(), 0);
}

#[test]
fn export_refuses_a_fifo_in_the_image_folder() {
    let src = tempfile::tempdir().unwrap();
    nix::unistd::mkfifo(
        &src.path().join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let err = Export::scan(ExportSpec {
        container: "web".into(),
        checkpoint: "cp1".into(),
        config: serde_json::Value::Null,
        criu_dir: src.path().to_owned(),
        rootfs_diff_dir: None,
    })
    .unwrap_err();
    assert!(
        matches!(err, ArchiveError::SpecialFile { kind: "fifo", .. }),
        "{err}"
    );
}

#[test]
fn the_hand_built_valid_archive_imports() {
    let tmp = tempfile::tempdir().unwrap();
    import(
        valid().as_slice(),
        &tmp.path().join("d"),
        &ImportOptions::default(),
    )
    .unwrap();
    assert_eq!(fs::read(tmp.path().join("d/criu/a")).unwrap(), b"abc");
}

#[test]
fn an_existing_destination_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("d");
    fs::create_dir(&dest).unwrap();
    let err = import(valid().as_slice(), &dest, &ImportOptions::default()).unwrap_err();
    assert!(matches!(err, ArchiveError::DestinationExists(_)), "{err}");
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    assert_eq!(fs::read_dir(&dest).unwrap().count(), 0);
}

// ------------------------------------------------------- hostile archives

#[test]
fn dot_dot_and_absolute_paths_are_refused() {
    for (bad, why) in [("../x", "`..` component"), ("/etc/x", "absolute path")] {
        let archive = Hand::with(&manifest(vec![dir("criu")]))
            .dir("criu")
            .file(bad, b"x")
            .finish();
        refused!(archive => ArchiveError::UnsafePath { path, reason } if path == bad && *reason == why);
    }
}

#[test]
fn a_dot_dot_path_listed_in_the_manifest_is_refused() {
    let archive = Hand::with(&manifest(vec![dir("criu"), file("criu/../../x", 1)])).finish();
    refused!(archive => ArchiveError::UnsafePath { .. });
}

#[test]
fn a_criu_link_to_etc_followed_by_a_file_below_it_is_refused() {
    let m = manifest(vec![
        dir("criu"),
        link("criu/l", "/etc"),
        file("criu/l/passwd", 1),
    ]);
    let archive = Hand::with(&m)
        .dir("criu")
        .raw("criu/l", tar::EntryType::Symlink, b"", Some("/etc"))
        .file("criu/l/passwd", b"x")
        .finish();
    refused!(archive => ArchiveError::SymlinkEscape { path, target } if path == "criu/l" && target == "/etc");
}

#[test]
fn a_criu_link_climbing_out_with_dot_dot_is_refused() {
    let archive = Hand::with(&manifest(vec![dir("criu"), link("criu/l", "../../etc")])).finish();
    refused!(archive => ArchiveError::SymlinkEscape { .. });
}

#[test]
fn a_file_below_a_rootfs_link_is_refused() {
    let m = manifest(vec![
        dir("criu"),
        dir("rootfs-diff"),
        link("rootfs-diff/l", "/etc"),
        file("rootfs-diff/l/passwd", 1),
    ]);
    refused!(Hand::with(&m).finish() => ArchiveError::PathThroughSymlink { link, .. } if link == "rootfs-diff/l");
}

#[test]
fn a_link_in_the_stream_where_the_manifest_lists_a_folder_is_refused() {
    // The manifest is clean; the stream swaps the folder for a link to /etc.
    let m = manifest(vec![
        dir("criu"),
        dir("rootfs-diff"),
        dir("rootfs-diff/l"),
        file("rootfs-diff/l/passwd", 1),
    ]);
    let archive = Hand::with(&m)
        .dir("criu")
        .dir("rootfs-diff")
        .raw("rootfs-diff/l", tar::EntryType::Symlink, b"", Some("/etc"))
        .file("rootfs-diff/l/passwd", b"x")
        .finish();
    refused!(archive => ArchiveError::EntryMismatch { path, .. } if path == "rootfs-diff/l");
}

#[test]
fn an_entry_before_its_parent_folder_is_refused() {
    let m = manifest(vec![dir("criu"), dir("criu/sub"), file("criu/sub/a", 1)]);
    let archive = Hand::with(&m)
        .dir("criu")
        .file("criu/sub/a", b"x")
        .dir("criu/sub")
        .finish();
    refused!(archive => ArchiveError::MissingParent { parent, .. } if parent == "criu/sub");
}

#[test]
fn a_hard_link_is_refused() {
    let m = manifest(vec![dir("criu"), file("criu/a", 3), file("criu/h", 0)]);
    let archive = Hand::with(&m)
        .dir("criu")
        .file("criu/a", b"abc")
        .raw("criu/h", tar::EntryType::Link, b"", Some("criu/a"))
        .finish();
    refused!(archive => ArchiveError::HardLink { path, target } if path == "criu/h" && target == "criu/a");
}

#[test]
fn device_nodes_and_fifos_are_refused() {
    let m = manifest(vec![dir("criu"), file("criu/mem", 0)]);
    for (kind, name) in [
        (tar::EntryType::Char, "character device"),
        (tar::EntryType::Block, "block device"),
        (tar::EntryType::Fifo, "fifo"),
    ] {
        let archive = Hand::with(&m)
            .dir("criu")
            .raw("criu/mem", kind, b"", None)
            .finish();
        refused!(archive => ArchiveError::SpecialFile { path, kind } if path == "criu/mem" && *kind == name);
    }
}

#[test]
fn a_file_over_the_per_file_limit_is_refused() {
    let m = manifest(vec![dir("criu"), file("criu/big", 11)]);
    let archive = Hand::with(&m)
        .dir("criu")
        .file("criu/big", &[7; 11])
        .trailer(&[("criu/big", &[7; 11])])
        .finish();
    let options = ImportOptions {
        max_file_bytes: 10,
        ..ImportOptions::default()
    };
    refused!(archive, options => ArchiveError::FileTooLarge { path, size: 11, limit: 10 } if path == "criu/big");
}

#[test]
fn files_over_the_total_limit_are_refused() {
    let m = manifest(vec![dir("criu"), file("criu/a", 6), file("criu/b", 6)]);
    let archive = Hand::with(&m)
        .dir("criu")
        .file("criu/a", &[1; 6])
        .file("criu/b", &[2; 6])
        .trailer(&[("criu/a", &[1; 6]), ("criu/b", &[2; 6])])
        .finish();
    let options = ImportOptions {
        max_file_bytes: 10,
        max_total_bytes: 10,
        ..ImportOptions::default()
    };
    refused!(archive, options => ArchiveError::TotalTooLarge { total: 12, limit: 10 });
}

#[test]
fn too_many_entries_are_refused() {
    let m = manifest(vec![dir("criu"), file("criu/a", 0), file("criu/b", 0)]);
    let options = ImportOptions {
        max_entries: 2,
        ..ImportOptions::default()
    };
    refused!(Hand::with(&m).finish(), options => ArchiveError::TooManyEntries { count: 3, limit: 2 });
}

#[test]
fn a_file_larger_in_the_stream_than_in_the_manifest_is_refused() {
    let m = manifest(vec![dir("criu"), file("criu/a", 3)]);
    let archive = Hand::with(&m)
        .dir("criu")
        .file("criu/a", &[0; 5000])
        .finish();
    refused!(archive => ArchiveError::SizeMismatch { expected: 3, actual: 5000, .. });
}

#[test]
fn an_archive_without_manifest_is_refused() {
    let archive = Hand::new().dir("criu").file("criu/a", b"abc").finish();
    refused!(archive => ArchiveError::MissingManifest { found } if found == "criu");
    refused!(Hand::new().finish() => ArchiveError::MissingManifest { .. });
}

#[test]
fn a_newer_format_version_is_refused_with_both_versions_named() {
    let mut m = serde_json::to_value(manifest(vec![dir("criu")])).unwrap();
    m["format_version"] = 2.into();
    m["a_field_from_the_future"] = true.into();
    let archive = Hand::new()
        .file(MANIFEST_NAME, &serde_json::to_vec(&m).unwrap())
        .dir("criu")
        .finish();
    let err = refused!(archive => ArchiveError::UnsupportedVersion { found: 2, supported: 1 });
    assert!(err.to_string().contains("version 2"), "{err}");
}

#[test]
fn a_manifest_that_is_not_json_is_refused() {
    let archive = Hand::new().file(MANIFEST_NAME, b"{not json").finish();
    refused!(archive => ArchiveError::InvalidManifest { what: "manifest", .. });
}

#[test]
fn a_container_name_with_a_slash_is_refused() {
    let mut m = manifest(vec![dir("criu")]);
    m.container = "../web".to_owned();
    refused!(Hand::with(&m).finish() => ArchiveError::InvalidManifest { .. });
}

#[test]
fn an_oversized_manifest_is_refused() {
    let options = ImportOptions {
        max_manifest_bytes: 16,
        ..ImportOptions::default()
    };
    refused!(valid(), options => ArchiveError::ManifestTooLarge { limit: 16, .. });
}

#[test]
fn a_sha256_mismatch_is_refused() {
    let archive = Hand::with(&manifest(vec![dir("criu"), file("criu/a", 3)]))
        .dir("criu")
        .file("criu/a", b"abc")
        .trailer(&[("criu/a", b"abd")])
        .finish();
    refused!(archive => ArchiveError::HashMismatch { path, expected, actual }
            if path == "criu/a" && *expected == sha256_hex(b"abd") && *actual == sha256_hex(b"abc"));
}

#[test]
fn a_manifest_changed_after_the_trailer_was_made_is_refused() {
    let mut hand = Hand::with(&manifest(vec![dir("criu")]));
    hand.dir("criu");
    hand.manifest_bytes = b"another manifest".to_vec();
    refused!(hand.trailer(&[]).finish() => ArchiveError::HashMismatch { path, .. } if path == MANIFEST_NAME);
}

#[test]
fn an_extra_file_not_in_the_manifest_is_refused() {
    let archive = valid_with(|hand| {
        hand.file("criu/extra", b"x");
    });
    refused!(archive => ArchiveError::NotInManifest { path } if path == "criu/extra");
}

#[test]
fn a_duplicate_entry_is_refused() {
    let archive = valid_with(|hand| {
        hand.file("criu/a", b"abc");
    });
    refused!(archive => ArchiveError::Duplicate { path } if path == "criu/a");
}

#[test]
fn a_duplicate_in_the_manifest_is_refused() {
    let m = manifest(vec![dir("criu"), file("criu/a", 0), file("criu/a", 0)]);
    refused!(Hand::with(&m).finish() => ArchiveError::Duplicate { .. });
}

#[test]
fn an_entry_missing_from_the_stream_is_refused() {
    let archive = Hand::with(&manifest(vec![dir("criu"), file("criu/a", 3)]))
        .dir("criu")
        .trailer(&[])
        .finish();
    refused!(archive => ArchiveError::MissingEntries { count: 1, first } if first == "criu/a");
}

#[test]
fn an_archive_without_trailer_is_refused() {
    let archive = Hand::with(&manifest(vec![dir("criu"), file("criu/a", 3)]))
        .dir("criu")
        .file("criu/a", b"abc")
        .finish();
    refused!(archive => ArchiveError::MissingTrailer);
}

#[test]
fn an_entry_after_the_trailer_is_refused() {
    let archive = Hand::with(&manifest(vec![dir("criu")]))
        .dir("criu")
        .trailer(&[])
        .file("criu/late", b"x")
        .finish();
    refused!(archive => ArchiveError::TrailingData { .. });
}

#[test]
fn a_truncated_stream_is_refused() {
    let archive = valid();
    for cut in [archive.len() / 2, archive.len() - 5, 10] {
        refused!(archive[..cut] => ArchiveError::Truncated);
    }
}

#[test]
fn a_tar_cut_inside_a_file_is_refused_as_truncated() {
    let mut hand = Hand::with(&manifest(vec![dir("criu"), file("criu/a", 3000)]));
    hand.dir("criu").file("criu/a", &[9; 3000]);
    let tar = hand.tar();
    // Keep the header and the first 1024 data bytes of criu/a.
    let cut = tar.len() - 1024 /* end marker */ - 3072 /* data, padded */ + 1024;
    refused!(compress(&tar[..cut]) => ArchiveError::Truncated);
}

#[test]
fn a_flipped_zstd_checksum_is_refused() {
    let mut archive = valid();
    let last = archive.len() - 1;
    archive[last] ^= 0xff;
    refused!(archive => ArchiveError::Decompress(_));
}

#[test]
fn random_garbage_is_refused() {
    // A fixed xorshift sequence: no zstd magic, so the decoder refuses it.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let garbage: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    refused!(garbage => ArchiveError::Decompress(_));
    refused!([0u8; 0] => ArchiveError::Truncated | ArchiveError::Decompress(_));
}

#[test]
fn a_valid_zstd_frame_holding_no_tar_is_refused() {
    refused!(compress(&[0x41; 2048]) => ArchiveError::Malformed { .. });
}

#[test]
fn errors_never_carry_file_contents() {
    let secret = b"SECRET-MEMORY";
    let archive = Hand::with(&manifest(vec![
        dir("criu"),
        file("criu/a", secret.len() as u64),
    ]))
    .dir("criu")
    .file("criu/a", secret)
    .trailer(&[("criu/a", b"other")])
    .finish();
    let err = refused!(archive => ArchiveError::HashMismatch { .. });
    assert!(!format!("{err} {err:?}").contains("SECRET-MEMORY"));
}
