//! The validating importer: stream in, check everything, extract into a
//! fresh 0700 staging folder, and rename it into place only when all is well.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::manifest::{check_parent, hex, sha256_hex, Entry, EntryKind, Manifest, Trailer};
use crate::path::{check_path, parent, Root};
use crate::{ArchiveError, FORMAT_VERSION, MANIFEST_NAME, TRAILER_NAME};

/// Limits and choices of [`import`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// Largest single file accepted, in bytes.
    pub max_file_bytes: u64,
    /// Largest sum of all file sizes accepted, in bytes.
    pub max_total_bytes: u64,
    /// Most entries (files, folders, links) accepted.
    pub max_entries: usize,
    /// Largest manifest (and checksum trailer) accepted, in bytes.
    pub max_manifest_bytes: u64,
    /// Apply the recorded owner and group to `rootfs-diff/` entries (needs
    /// root). Entries under `criu/` always belong to the importing user.
    pub preserve_ownership: bool,
}

impl Default for ImportOptions {
    /// 16 GiB per file, 64 GiB in total, a million entries, a 64 MiB
    /// manifest, ownership preserved.
    fn default() -> Self {
        Self {
            max_file_bytes: 16 << 30,
            max_total_bytes: 64 << 30,
            max_entries: 1_000_000,
            max_manifest_bytes: 64 << 20,
            preserve_ownership: true,
        }
    }
}

impl ImportOptions {
    /// No limits: what the writer checks its own manifest against.
    pub(crate) fn unlimited() -> Self {
        Self {
            max_file_bytes: u64::MAX,
            max_total_bytes: u64::MAX,
            max_entries: usize::MAX,
            max_manifest_bytes: u64::MAX,
            preserve_ownership: false,
        }
    }
}

/// Most zero bytes accepted after the tar end marker (tar record padding).
const MAX_PADDING: u64 = 1 << 20;

/// Reads an archive from `input` and creates `dest` holding `criu/`,
/// `rootfs-diff/` (if the archive has one) and the manifest
/// `holdfast-archive.json`, all below a 0700 `dest`.
///
/// Everything is extracted into a new 0700 staging folder next to `dest`
/// (`.<name>.import-XXXXXX`), each entry checked before it is written; only
/// when the whole archive validated (manifest, every entry, every size and
/// sha256, the checksum trailer, the zstd checksum) is the staging folder
/// renamed to `dest` (never replacing anything). On any error the staging
/// folder is removed and `dest` does not exist. Nothing is logged.
///
/// To show progress, wrap `input` in a reader that counts bytes.
pub fn import<R: Read>(
    input: R,
    dest: &Path,
    options: &ImportOptions,
) -> Result<Manifest, ArchiveError> {
    if fs::symlink_metadata(dest).is_ok() {
        return Err(ArchiveError::DestinationExists(dest.to_owned()));
    }
    let (Some(parent_dir), Some(name)) = (dest.parent(), dest.file_name()) else {
        return Err(ArchiveError::NoParent(dest.to_owned()));
    };
    let parent_dir = if parent_dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent_dir
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".import-");
    // Created 0700 (not chmod-ed later) and removed on drop.
    let staging = tempfile::Builder::new()
        .prefix(&prefix)
        .permissions(Permissions::from_mode(0o700))
        .tempdir_in(parent_dir)
        .map_err(ArchiveError::io("create staging folder in", parent_dir))?;
    let manifest = Extractor::new(staging.path(), options).run(input)?;
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        staging.path(),
        nix::fcntl::AT_FDCWD,
        dest,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    )
    .map_err(|errno| match errno {
        nix::errno::Errno::EEXIST => ArchiveError::DestinationExists(dest.to_owned()),
        errno => ArchiveError::Io {
            op: "rename staging folder to",
            path: dest.to_owned(),
            source: errno.into(),
        },
    })?;
    // Renamed: nothing left for the guard to remove.
    let _ = staging.keep();
    Ok(manifest)
}

/// How the zstd decoder failed, if it did: tells a corrupt or truncated
/// stream from a bad tar inside a good one.
type DecodeFailure = Rc<Cell<Option<io::ErrorKind>>>;

/// The decompressed stream, noting decoder failures.
struct Decoded<R> {
    inner: R,
    failure: DecodeFailure,
}

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner
            .read(buf)
            .inspect_err(|e| self.failure.set(Some(e.kind())))
    }
}

/// Turns an I/O error from reading the archive into the variant that says
/// where it came from.
fn stream_error(error: io::Error, failure: &DecodeFailure) -> ArchiveError {
    match failure.get() {
        Some(io::ErrorKind::UnexpectedEof) => ArchiveError::Truncated,
        Some(_) => ArchiveError::Decompress(error),
        None if error.kind() == io::ErrorKind::UnexpectedEof => ArchiveError::Truncated,
        None => ArchiveError::Malformed {
            reason: error.to_string(),
        },
    }
}

/// A folder whose final owner and mode are applied after extraction, so a
/// read-only folder can still receive its children.
struct PendingDir {
    local: PathBuf,
    entry: Entry,
}

struct Extractor<'a> {
    staging: &'a Path,
    options: &'a ImportOptions,
    /// sha256 of each file extracted so far.
    hashes: BTreeMap<String, String>,
    dirs: Vec<PendingDir>,
}

impl<'a> Extractor<'a> {
    fn new(staging: &'a Path, options: &'a ImportOptions) -> Self {
        Self {
            staging,
            options,
            hashes: BTreeMap::new(),
            dirs: Vec::new(),
        }
    }

    fn run<R: Read>(mut self, input: R) -> Result<Manifest, ArchiveError> {
        let failure = DecodeFailure::default();
        let decoder = zstd::Decoder::new(input).map_err(ArchiveError::Decompress)?;
        let mut archive = tar::Archive::new(Decoded {
            inner: decoder,
            failure: failure.clone(),
        });
        let (manifest, trailer) = {
            let mut entries = archive.entries().map_err(|e| stream_error(e, &failure))?;
            let mut next = || {
                entries
                    .next()
                    .transpose()
                    .map_err(|e| stream_error(e, &failure))
            };

            let mut first = next()?.ok_or_else(|| ArchiveError::MissingManifest {
                found: "(none)".to_owned(),
            })?;
            let found = entry_path(&first)?;
            if found != MANIFEST_NAME || first.header().entry_type() != tar::EntryType::Regular {
                return Err(ArchiveError::MissingManifest { found });
            }
            let manifest_bytes = self.read_small(&mut first, &failure)?;
            let manifest = parse_manifest(&manifest_bytes)?;
            let index = manifest.index(self.options)?;
            self.write_manifest(&manifest_bytes)?;

            let mut seen: HashMap<&str, &Entry> = HashMap::with_capacity(index.len());
            let trailer = loop {
                let Some(mut entry) = next()? else {
                    return Err(ArchiveError::MissingTrailer);
                };
                let path = entry_path(&entry)?;
                if path == TRAILER_NAME && entry.header().entry_type() == tar::EntryType::Regular {
                    let bytes = self.read_small(&mut entry, &failure)?;
                    break parse_trailer(&bytes, &manifest_bytes)?;
                }
                let expected = self.check_entry(&entry, &path, &index, &seen)?;
                self.extract(&mut entry, expected, &failure)?;
                seen.insert(expected.path.as_str(), expected);
            };
            if let Some(extra) = next()? {
                return Err(ArchiveError::TrailingData {
                    what: format!("entry {:?}", String::from_utf8_lossy(&extra.path_bytes())),
                });
            }
            if seen.len() != index.len() {
                let missing: Vec<&Entry> = manifest
                    .entries
                    .iter()
                    .filter(|e| !seen.contains_key(e.path.as_str()))
                    .collect();
                return Err(ArchiveError::MissingEntries {
                    count: missing.len(),
                    first: missing.first().map(|e| e.path.clone()).unwrap_or_default(),
                });
            }
            (manifest, trailer)
        };
        self.verify_hashes(&trailer)?;
        drain_padding(archive.into_inner(), &failure)?;
        self.finish_dirs()?;
        Ok(manifest)
    }

    /// Reads the manifest or the trailer into memory, bounded.
    fn read_small<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        failure: &DecodeFailure,
    ) -> Result<Vec<u8>, ArchiveError> {
        let size = entry.size();
        if size > self.options.max_manifest_bytes {
            return Err(ArchiveError::ManifestTooLarge {
                size,
                limit: self.options.max_manifest_bytes,
            });
        }
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| stream_error(e, failure))?;
        if bytes.len() as u64 != size {
            return Err(ArchiveError::Truncated);
        }
        Ok(bytes)
    }

    fn write_manifest(&self, bytes: &[u8]) -> Result<(), ArchiveError> {
        let local = self.staging.join(MANIFEST_NAME);
        let mut file = create_file(&local, 0o600)?;
        file.write_all(bytes)
            .map_err(ArchiveError::io("write", &local))
    }

    /// Every rule for one stream entry before anything is written: path,
    /// type, listed in the manifest, not seen before, parent already
    /// extracted as a folder, same type, size and link target as listed.
    fn check_entry<'m, R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        path: &str,
        index: &HashMap<&str, &'m Entry>,
        seen: &HashMap<&str, &Entry>,
    ) -> Result<&'m Entry, ArchiveError> {
        check_path(path)?;
        let header = entry.header();
        let kind = header.entry_type();
        match kind {
            tar::EntryType::Regular | tar::EntryType::Directory | tar::EntryType::Symlink => {}
            tar::EntryType::Link => {
                return Err(ArchiveError::HardLink {
                    path: path.to_owned(),
                    target: link_target(entry),
                })
            }
            tar::EntryType::Char => return Err(special(path, "character device")),
            tar::EntryType::Block => return Err(special(path, "block device")),
            tar::EntryType::Fifo => return Err(special(path, "fifo")),
            other => {
                return Err(ArchiveError::UnsupportedEntry {
                    path: path.to_owned(),
                    kind: char::from(other.as_byte()),
                })
            }
        }
        let expected = *index.get(path).ok_or_else(|| ArchiveError::NotInManifest {
            path: path.to_owned(),
        })?;
        if seen.contains_key(path) {
            return Err(ArchiveError::Duplicate {
                path: path.to_owned(),
            });
        }
        if let Some(parent) = parent(path) {
            check_parent(path, parent, seen.get(parent).copied())?;
        }
        let mismatch = |reason: String| ArchiveError::EntryMismatch {
            path: path.to_owned(),
            reason,
        };
        match (&expected.kind, kind) {
            (EntryKind::File { size }, tar::EntryType::Regular) => {
                if entry.size() != *size {
                    return Err(ArchiveError::SizeMismatch {
                        path: path.to_owned(),
                        expected: *size,
                        actual: entry.size(),
                    });
                }
            }
            (EntryKind::Dir, tar::EntryType::Directory) => {}
            (EntryKind::Symlink { target }, tar::EntryType::Symlink) => {
                if link_target(entry) != *target {
                    return Err(mismatch("symbolic link target differs".to_owned()));
                }
            }
            (listed, _) => {
                return Err(mismatch(format!(
                    "listed as {}, stored as tar type {:?}",
                    kind_name(listed),
                    kind
                )))
            }
        }
        if kind != tar::EntryType::Regular && entry.size() != 0 {
            return Err(mismatch(format!(
                "a {} with {} bytes of data",
                kind_name(&expected.kind),
                entry.size()
            )));
        }
        Ok(expected)
    }

    /// Creates one checked entry in the staging folder, never following a
    /// link: parents are folders this import created, and files are created
    /// exclusively with `O_NOFOLLOW`.
    fn extract<R: Read>(
        &mut self,
        data: &mut tar::Entry<'_, R>,
        entry: &Entry,
        failure: &DecodeFailure,
    ) -> Result<(), ArchiveError> {
        let local = self.staging.join(&entry.path);
        let root = check_path(&entry.path)?;
        let rootfs = root == Root::RootfsDiff;
        match &entry.kind {
            EntryKind::Dir => {
                DirBuilder::new()
                    .mode(0o700)
                    .create(&local)
                    .map_err(ArchiveError::io("create folder", &local))?;
                if rootfs {
                    self.dirs.push(PendingDir {
                        local,
                        entry: entry.clone(),
                    });
                }
            }
            EntryKind::Symlink { target } => {
                std::os::unix::fs::symlink(target, &local)
                    .map_err(ArchiveError::io("create link", &local))?;
                if rootfs && self.options.preserve_ownership {
                    std::os::unix::fs::lchown(&local, Some(entry.uid), Some(entry.gid))
                        .map_err(ArchiveError::io("chown", &local))?;
                }
            }
            EntryKind::File { size } => {
                let mut file = create_file(&local, 0o600)?;
                let hash = copy_hashed(data, &mut file, &local, failure)?;
                if hash.1 != *size {
                    return Err(ArchiveError::Truncated);
                }
                self.hashes.insert(entry.path.clone(), hash.0);
                file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(entry.mtime))
                    .map_err(ArchiveError::io("set time of", &local))?;
                if rootfs {
                    // Owner first: chown clears set-id bits.
                    if self.options.preserve_ownership {
                        std::os::unix::fs::fchown(&file, Some(entry.uid), Some(entry.gid))
                            .map_err(ArchiveError::io("chown", &local))?;
                    }
                    file.set_permissions(Permissions::from_mode(entry.mode))
                        .map_err(ArchiveError::io("chmod", &local))?;
                }
            }
        }
        Ok(())
    }

    fn verify_hashes(&self, trailer: &Trailer) -> Result<(), ArchiveError> {
        for (path, actual) in &self.hashes {
            let expected =
                trailer
                    .files
                    .get(path)
                    .ok_or_else(|| ArchiveError::InvalidManifest {
                        what: "checksum trailer",
                        reason: format!("no sha256 for {path:?}"),
                    })?;
            if expected != actual {
                return Err(ArchiveError::HashMismatch {
                    path: path.clone(),
                    expected: expected.clone(),
                    actual: actual.clone(),
                });
            }
        }
        if let Some(extra) = trailer.files.keys().find(|p| !self.hashes.contains_key(*p)) {
            return Err(ArchiveError::InvalidManifest {
                what: "checksum trailer",
                reason: format!("sha256 for {extra:?}, which is not a file of the archive"),
            });
        }
        Ok(())
    }

    /// Owners and modes of `rootfs-diff/` folders, deepest first.
    fn finish_dirs(&mut self) -> Result<(), ArchiveError> {
        for dir in self.dirs.iter().rev() {
            if self.options.preserve_ownership {
                std::os::unix::fs::lchown(&dir.local, Some(dir.entry.uid), Some(dir.entry.gid))
                    .map_err(ArchiveError::io("chown", &dir.local))?;
            }
            fs::set_permissions(&dir.local, Permissions::from_mode(dir.entry.mode))
                .map_err(ArchiveError::io("chmod", &dir.local))?;
        }
        Ok(())
    }
}

/// Parses the manifest: the version first (so a newer format with fields
/// this holdfast does not know gets a version error), then strictly.
fn parse_manifest(bytes: &[u8]) -> Result<Manifest, ArchiveError> {
    #[derive(serde::Deserialize)]
    struct Version {
        format_version: u32,
    }
    let invalid = |e: serde_json::Error| ArchiveError::InvalidManifest {
        what: "manifest",
        reason: e.to_string(),
    };
    let version: Version = serde_json::from_slice(bytes).map_err(invalid)?;
    if version.format_version != FORMAT_VERSION {
        return Err(ArchiveError::UnsupportedVersion {
            found: version.format_version,
            supported: FORMAT_VERSION,
        });
    }
    serde_json::from_slice(bytes).map_err(invalid)
}

fn parse_trailer(bytes: &[u8], manifest_bytes: &[u8]) -> Result<Trailer, ArchiveError> {
    let trailer: Trailer =
        serde_json::from_slice(bytes).map_err(|e| ArchiveError::InvalidManifest {
            what: "checksum trailer",
            reason: e.to_string(),
        })?;
    let actual = sha256_hex(manifest_bytes);
    if trailer.manifest_sha256 != actual {
        return Err(ArchiveError::HashMismatch {
            path: MANIFEST_NAME.to_owned(),
            expected: trailer.manifest_sha256,
            actual,
        });
    }
    Ok(trailer)
}

/// The entry's path as UTF-8, one trailing `/` of a folder removed.
fn entry_path<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, ArchiveError> {
    let raw = entry.path_bytes();
    let path = std::str::from_utf8(&raw).map_err(|_| ArchiveError::UnsafePath {
        path: String::from_utf8_lossy(&raw).into_owned(),
        reason: "not UTF-8",
    })?;
    let path = match entry.header().entry_type() {
        tar::EntryType::Directory => path.strip_suffix('/').unwrap_or(path),
        _ => path,
    };
    Ok(path.to_owned())
}

fn link_target<R: Read>(entry: &tar::Entry<'_, R>) -> String {
    entry
        .link_name_bytes()
        .map(|t| String::from_utf8_lossy(&t).into_owned())
        .unwrap_or_default()
}

fn special(path: &str, kind: &'static str) -> ArchiveError {
    ArchiveError::SpecialFile {
        path: path.to_owned(),
        kind,
    }
}

fn kind_name(kind: &EntryKind) -> &'static str {
    match kind {
        EntryKind::File { .. } => "file",
        EntryKind::Dir => "folder",
        EntryKind::Symlink { .. } => "symbolic link",
    }
}

/// A new file, exclusively (never through an existing name or a link).
fn create_file(local: &Path, mode: u32) -> Result<File, ArchiveError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(local)
        .map_err(ArchiveError::io("create", local))
}

/// Copies an entry's data into `file`; returns its sha256 (hex) and length.
fn copy_hashed<R: Read>(
    data: &mut R,
    file: &mut File,
    local: &Path,
    failure: &DecodeFailure,
) -> Result<(String, u64), ArchiveError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut len = 0u64;
    loop {
        let n = data.read(&mut buf).map_err(|e| stream_error(e, failure))?;
        if n == 0 {
            return Ok((hex(hasher), len));
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(ArchiveError::io("write", local))?;
        len += n as u64;
    }
}

/// After the tar end marker: only zero padding may follow, then the end of
/// the zstd frame (reading to it checks the frame's content checksum).
fn drain_padding<R: Read>(mut rest: R, failure: &DecodeFailure) -> Result<(), ArchiveError> {
    let mut buf = [0u8; 8192];
    let mut total = 0u64;
    loop {
        let n = rest.read(&mut buf).map_err(|e| stream_error(e, failure))?;
        if n == 0 {
            return Ok(());
        }
        total += n as u64;
        if total > MAX_PADDING || buf[..n].iter().any(|b| *b != 0) {
            return Err(ArchiveError::TrailingData {
                what: "bytes after the tar end marker".to_owned(),
            });
        }
    }
}
