//! The manifest (first entry) and the checksum trailer (last entry).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::path::{check_link_target, check_path, parent};
use crate::{ArchiveError, ImportOptions, CRIU_DIR, FORMAT_VERSION};

/// The archive's first entry, `holdfast-archive.json`: what the archive is
/// and every entry that follows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The archive format version ([`FORMAT_VERSION`] when written by this
    /// crate). An importer refuses versions it does not know.
    pub format_version: u32,
    /// The version of holdfast that wrote the archive (informational).
    pub holdfast_version: String,
    /// When the archive was written, RFC 3339 UTC.
    pub created: String,
    /// The exported container's name.
    pub container: String,
    /// The exported checkpoint's name.
    pub checkpoint: String,
    /// The container's declared config as the manager stores it; opaque to
    /// this crate. May hold environment variables: the manifest is written
    /// 0600 on import and must never be logged.
    pub config: serde_json::Value,
    /// Every entry of the archive after the manifest, except the checksum
    /// trailer; parents before their children.
    pub entries: Vec<Entry>,
}

/// One file, folder or symbolic link of the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The path in the archive: `criu`, `rootfs-diff` or below them,
    /// `/`-separated, relative, no trailing slash.
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits (`0o7777` at most). Applied under `rootfs-diff/`;
    /// under `criu/` files are always created 0600 and folders 0700.
    pub mode: u32,
    /// Owner, applied under `rootfs-diff/` when the importer preserves
    /// ownership.
    pub uid: u32,
    /// Group, as `uid`.
    pub gid: u32,
    /// Modification time of a file, seconds since the epoch.
    pub mtime: u64,
}

/// The type of an [`Entry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum EntryKind {
    /// A regular file of `size` bytes; its sha256 is in the trailer.
    File {
        /// Its length in bytes.
        size: u64,
    },
    /// A folder.
    Dir,
    /// A symbolic link, kept as a link and never followed on import.
    Symlink {
        /// Where it points.
        target: String,
    },
}

/// The archive's last entry, `holdfast-archive.sha256.json`: hashes the
/// writer computed while streaming, so the manifest can come first without
/// reading every file twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Trailer {
    /// sha256 (hex) of the manifest entry's bytes.
    pub manifest_sha256: String,
    /// sha256 (hex) of every regular file, by path.
    pub files: BTreeMap<String, String>,
}

/// Lower-case hex of a finished sha256.
pub(crate) fn hex(digest: Sha256) -> String {
    digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// sha256 (hex) of a byte slice.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(Sha256::new_with_prefix(bytes))
}

fn invalid(reason: String) -> ArchiveError {
    ArchiveError::InvalidManifest {
        what: "manifest",
        reason,
    }
}

/// Container and checkpoint names become file names on import: one
/// component, bounded, printable.
fn check_name(what: &str, name: &str) -> Result<(), ArchiveError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} name {name:?} is empty, longer than 255 bytes, `.`/`..`, or has `/` or control characters"
        )))
    }
}

impl Manifest {
    /// Total bytes of all regular files.
    pub fn total_file_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::File { size } => size,
                _ => 0,
            })
            .fold(0, u64::saturating_add)
    }

    /// Checks every rule that needs no file data and indexes the entries by
    /// path: names, entry count, paths, duplicates, per-file and total
    /// sizes, link targets, parents listed as folders before children,
    /// top-level entries being folders, and `criu` being present.
    pub(crate) fn index(
        &self,
        limits: &ImportOptions,
    ) -> Result<HashMap<&str, &Entry>, ArchiveError> {
        if self.format_version != FORMAT_VERSION {
            return Err(ArchiveError::UnsupportedVersion {
                found: self.format_version,
                supported: FORMAT_VERSION,
            });
        }
        check_name("container", &self.container)?;
        check_name("checkpoint", &self.checkpoint)?;
        if self.entries.len() > limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                count: self.entries.len(),
                limit: limits.max_entries,
            });
        }
        let mut index: HashMap<&str, &Entry> = HashMap::with_capacity(self.entries.len());
        let mut total: u64 = 0;
        for entry in &self.entries {
            let path = entry.path.as_str();
            let root = check_path(path)?;
            if entry.mode > 0o7777 {
                return Err(invalid(format!(
                    "entry {path:?} has mode {:o} beyond 7777",
                    entry.mode
                )));
            }
            match &entry.kind {
                EntryKind::File { size } => {
                    if *size > limits.max_file_bytes {
                        return Err(ArchiveError::FileTooLarge {
                            path: path.to_owned(),
                            size: *size,
                            limit: limits.max_file_bytes,
                        });
                    }
                    total = total.saturating_add(*size);
                    if total > limits.max_total_bytes {
                        return Err(ArchiveError::TotalTooLarge {
                            total: self.total_file_bytes(),
                            limit: limits.max_total_bytes,
                        });
                    }
                }
                EntryKind::Symlink { target } => check_link_target(path, root, target)?,
                EntryKind::Dir => {}
            }
            match parent(path) {
                None if entry.kind != EntryKind::Dir => {
                    return Err(ArchiveError::EntryMismatch {
                        path: path.to_owned(),
                        reason: "a top-level entry must be a folder".to_owned(),
                    })
                }
                None => {}
                Some(parent) => check_parent(path, parent, index.get(parent).copied())?,
            }
            if index.insert(path, entry).is_some() {
                return Err(ArchiveError::Duplicate {
                    path: path.to_owned(),
                });
            }
        }
        if !index.contains_key(CRIU_DIR) {
            return Err(invalid("no criu folder".to_owned()));
        }
        Ok(index)
    }
}

/// An entry's parent must be a folder already seen (listed before it in the
/// manifest, extracted before it from the stream).
pub(crate) fn check_parent(
    path: &str,
    parent: &str,
    found: Option<&Entry>,
) -> Result<(), ArchiveError> {
    match found.map(|e| &e.kind) {
        Some(EntryKind::Dir) => Ok(()),
        Some(EntryKind::Symlink { .. }) => Err(ArchiveError::PathThroughSymlink {
            path: path.to_owned(),
            link: parent.to_owned(),
        }),
        _ => Err(ArchiveError::MissingParent {
            path: path.to_owned(),
            parent: parent.to_owned(),
        }),
    }
}
