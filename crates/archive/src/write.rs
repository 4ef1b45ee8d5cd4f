//! The streaming writer: scan the source folders into a manifest, then
//! stream manifest, entries and checksum trailer through zstd into any
//! [`Write`].

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::manifest::{hex, sha256_hex, Entry, EntryKind, Manifest, Trailer};
use crate::path::Root;
use crate::{
    ArchiveError, ImportOptions, CRIU_DIR, FORMAT_VERSION, MANIFEST_NAME, ROOTFS_DIFF_DIR,
    TRAILER_NAME,
};

/// zstd level: the default, fast enough for 2 cores and a live migration.
const ZSTD_LEVEL: i32 = 3;
/// How much of a file is read (and hashed) per step.
const CHUNK: usize = 256 * 1024;
/// The prefix that marks an overlayfs whiteout (OCI image layer convention).
pub const WHITEOUT_PREFIX: &str = ".wh.";

/// What to export: who it is, and the two source folders.
#[derive(Debug, Clone)]
pub struct ExportSpec {
    /// The container's name (one path component).
    pub container: String,
    /// The checkpoint's name (one path component).
    pub checkpoint: String,
    /// The container's declared config, opaque to this crate.
    pub config: serde_json::Value,
    /// The CRIU image folder of the checkpoint; stored as `criu/`.
    pub criu_dir: PathBuf,
    /// The rootfs changes (an overlay upper folder); stored as
    /// `rootfs-diff/`. `None` for a container without writable rootfs
    /// changes.
    pub rootfs_diff_dir: Option<PathBuf>,
}

/// How far a write has come, in file content bytes (not compressed bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// File bytes streamed so far.
    pub done: u64,
    /// File bytes in the whole export ([`Export::total_bytes`]).
    pub total: u64,
}

/// A scanned export, ready to be written (possibly more than once).
///
/// ```no_run
/// # fn demo(out: std::fs::File) -> Result<(), holdfast_archive::ArchiveError> {
/// use holdfast_archive::{Export, ExportSpec};
/// let export = Export::scan(ExportSpec {
///     container: "web".into(),
///     checkpoint: "cp1".into(),
///     config: serde_json::json!({"image": "busybox"}),
///     criu_dir: "/var/lib/holdfast/checkpoints/web/cp1/criu".into(),
///     rootfs_diff_dir: None,
/// })?;
/// let total = export.total_bytes();
/// export.write(out, |p| eprintln!("{}/{}", p.done, total))?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Export {
    manifest: Manifest,
    /// Per manifest entry: the local file to stream (regular files only;
    /// `None` for folders, links and whiteouts).
    sources: Vec<Option<PathBuf>>,
}

impl Export {
    /// Walks `criu_dir` and `rootfs_diff_dir` (without following links)
    /// and builds the manifest. Device nodes, FIFOs and sockets are refused,
    /// except overlayfs whiteouts (character device 0/0) under
    /// `rootfs-diff/`, which become empty `.wh.<name>` files. Hard-linked
    /// files are stored once per name.
    pub fn scan(spec: ExportSpec) -> Result<Self, ArchiveError> {
        let mut entries = Vec::new();
        let mut sources = Vec::new();
        let roots = [
            (CRIU_DIR, Root::Criu, Some(&spec.criu_dir)),
            (
                ROOTFS_DIFF_DIR,
                Root::RootfsDiff,
                spec.rootfs_diff_dir.as_ref(),
            ),
        ];
        for (name, root, dir) in roots {
            let Some(dir) = dir else { continue };
            let meta = fs::metadata(dir).map_err(ArchiveError::io("stat", dir))?;
            if !meta.is_dir() {
                return Err(ArchiveError::Io {
                    op: "export",
                    path: dir.clone(),
                    source: io::Error::other("not a folder"),
                });
            }
            entries.push(entry(name.to_owned(), EntryKind::Dir, &meta));
            sources.push(None);
            walk(dir, name, root, &mut entries, &mut sources)?;
        }
        let created = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            holdfast_version: env!("CARGO_PKG_VERSION").to_owned(),
            created,
            container: spec.container,
            checkpoint: spec.checkpoint,
            config: spec.config,
            entries,
        };
        // Never write what an importer would refuse for its form.
        manifest.index(&ImportOptions::unlimited())?;
        Ok(Self { manifest, sources })
    }

    /// The manifest that [`Export::write`] puts first.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// File content bytes to stream: the `total` of every [`Progress`].
    pub fn total_bytes(&self) -> u64 {
        self.manifest.total_file_bytes()
    }

    /// Streams the archive into `out` and returns it (flushed, the zstd
    /// frame finished). `progress` is called as file bytes are streamed.
    /// A source file whose size changed since [`Export::scan`] is an error
    /// ([`ArchiveError::SourceChanged`]); what was written to `out` is then
    /// not a valid archive.
    pub fn write<W: Write, F: FnMut(Progress)>(
        &self,
        out: W,
        mut progress: F,
    ) -> Result<W, ArchiveError> {
        let mut encoder = zstd::Encoder::new(out, ZSTD_LEVEL).map_err(ArchiveError::Output)?;
        encoder
            .include_checksum(true)
            .map_err(ArchiveError::Output)?;
        let mut tar = tar::Builder::new(encoder);

        let manifest_bytes = serde_json::to_vec_pretty(&self.manifest).map_err(|e| {
            ArchiveError::InvalidManifest {
                what: "manifest",
                reason: e.to_string(),
            }
        })?;
        append_bytes(&mut tar, MANIFEST_NAME, &manifest_bytes)?;

        let mut counter = Counter {
            done: 0,
            total: self.total_bytes(),
            progress: &mut progress,
        };
        (counter.progress)(Progress {
            done: 0,
            total: counter.total,
        });
        let mut hashes = std::collections::BTreeMap::new();
        for (entry, source) in self.manifest.entries.iter().zip(&self.sources) {
            let mut header = header(entry);
            match (&entry.kind, source) {
                (EntryKind::Dir, _) => tar.append_data(&mut header, &entry.path, io::empty()),
                (EntryKind::Symlink { target }, _) => {
                    tar.append_link(&mut header, &entry.path, target)
                }
                (EntryKind::File { .. }, None) => {
                    tar.append_data(&mut header, &entry.path, io::empty())
                }
                (EntryKind::File { size }, Some(local)) => {
                    let hash =
                        append_file(&mut tar, &mut header, entry, *size, local, &mut counter)?;
                    hashes.insert(entry.path.clone(), hash);
                    continue;
                }
            }
            .map_err(ArchiveError::Output)?;
            if source.is_none() && matches!(entry.kind, EntryKind::File { .. }) {
                hashes.insert(entry.path.clone(), sha256_hex(b""));
            }
        }

        let trailer = Trailer {
            manifest_sha256: sha256_hex(&manifest_bytes),
            files: hashes,
        };
        let trailer_bytes =
            serde_json::to_vec_pretty(&trailer).map_err(|e| ArchiveError::InvalidManifest {
                what: "checksum trailer",
                reason: e.to_string(),
            })?;
        append_bytes(&mut tar, TRAILER_NAME, &trailer_bytes)?;
        let encoder = tar.into_inner().map_err(ArchiveError::Output)?;
        let mut out = encoder.finish().map_err(ArchiveError::Output)?;
        out.flush().map_err(ArchiveError::Output)?;
        Ok(out)
    }
}

/// Adds the folder `dir` (stored as `prefix`) recursively, sorted by name.
fn walk(
    dir: &Path,
    prefix: &str,
    root: Root,
    entries: &mut Vec<Entry>,
    sources: &mut Vec<Option<PathBuf>>,
) -> Result<(), ArchiveError> {
    let mut children = fs::read_dir(dir)
        .map_err(ArchiveError::io("read folder", dir))?
        .map(|child| child.map(|c| c.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ArchiveError::io("read folder", dir))?;
    children.sort();
    for local in children {
        let name = local
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| ArchiveError::NonUtf8Path(local.clone()))?;
        let path = format!("{prefix}/{name}");
        let meta = fs::symlink_metadata(&local).map_err(ArchiveError::io("stat", &local))?;
        let file_type = meta.file_type();
        if file_type.is_dir() {
            entries.push(entry(path.clone(), EntryKind::Dir, &meta));
            sources.push(None);
            walk(&local, &path, root, entries, sources)?;
        } else if file_type.is_file() {
            entries.push(entry(path, EntryKind::File { size: meta.len() }, &meta));
            sources.push(Some(local));
        } else if file_type.is_symlink() {
            let target = fs::read_link(&local).map_err(ArchiveError::io("read link", &local))?;
            let target = target
                .to_str()
                .ok_or_else(|| ArchiveError::NonUtf8Path(local.clone()))?
                .to_owned();
            entries.push(entry(path, EntryKind::Symlink { target }, &meta));
            sources.push(None);
        } else if root == Root::RootfsDiff && file_type.is_char_device() && meta.rdev() == 0 {
            // An overlayfs whiteout: the file was deleted in the container.
            entries.push(entry(
                format!("{prefix}/{WHITEOUT_PREFIX}{name}"),
                EntryKind::File { size: 0 },
                &meta,
            ));
            sources.push(None);
        } else {
            return Err(ArchiveError::SpecialFile {
                path: local.display().to_string(),
                kind: special_kind(&meta),
            });
        }
    }
    Ok(())
}

fn special_kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_fifo() {
        "fifo"
    } else {
        "socket"
    }
}

fn entry(path: String, kind: EntryKind, meta: &Metadata) -> Entry {
    Entry {
        path,
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: u64::try_from(meta.mtime()).unwrap_or(0),
    }
}

fn header(entry: &Entry) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    let (kind, size) = match entry.kind {
        EntryKind::File { size } => (tar::EntryType::Regular, size),
        EntryKind::Dir => (tar::EntryType::Directory, 0),
        EntryKind::Symlink { .. } => (tar::EntryType::Symlink, 0),
    };
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(entry.mode);
    header.set_uid(entry.uid.into());
    header.set_gid(entry.gid.into());
    header.set_mtime(entry.mtime);
    header
}

/// The manifest or the trailer: a 0600 regular file.
fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
) -> Result<(), ArchiveError> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(bytes.len() as u64);
    header.set_mode(0o600);
    tar.append_data(&mut header, path, bytes)
        .map_err(ArchiveError::Output)
}

/// Progress accounting across files.
struct Counter<'a> {
    done: u64,
    total: u64,
    progress: &'a mut dyn FnMut(Progress),
}

/// Reads a source file for the tar builder: hashes and counts what passes,
/// reports progress, and remembers whether a failure was the file's (not
/// the output's).
struct Tap<'a, 'b> {
    file: io::Take<File>,
    hasher: Sha256,
    read: u64,
    read_failed: bool,
    counter: &'a mut Counter<'b>,
}

impl Read for Tap<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let len = buf.len().min(CHUNK);
        let n = self
            .file
            .read(&mut buf[..len])
            .inspect_err(|_| self.read_failed = true)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        self.counter.done += n as u64;
        (self.counter.progress)(Progress {
            done: self.counter.done,
            total: self.counter.total,
        });
        Ok(n)
    }
}

/// Streams one regular file; returns its sha256 (hex).
fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    header: &mut tar::Header,
    entry: &Entry,
    size: u64,
    local: &Path,
    counter: &mut Counter<'_>,
) -> Result<String, ArchiveError> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(local)
        .map_err(ArchiveError::io("open", local))?;
    let mut tap = Tap {
        file: file.take(size),
        hasher: Sha256::new(),
        read: 0,
        read_failed: false,
        counter,
    };
    if let Err(e) = tar.append_data(header, &entry.path, &mut tap) {
        return Err(if tap.read_failed {
            ArchiveError::Io {
                op: "read",
                path: local.to_owned(),
                source: e,
            }
        } else {
            ArchiveError::Output(e)
        });
    }
    // The header promised `size` bytes: a shorter file leaves a broken
    // archive, a longer one would be silently cut.
    let grew = tap
        .file
        .get_mut()
        .read(&mut [0u8; 1])
        .map_err(ArchiveError::io("read", local))?
        > 0;
    if tap.read != size || grew {
        return Err(ArchiveError::SourceChanged {
            path: local.to_owned(),
            expected: size,
        });
    }
    Ok(hex(tap.hasher))
}
