//! holdfast's checkpoint export archive: one file (or byte stream) that
//! carries a checkpoint to another host — the CRIU images, the container's
//! rootfs changes and its declared config.
//!
//! # Format (version 1)
//!
//! A single zstd frame (with content checksum) holding a tar stream:
//!
//! ```text
//! holdfast-archive.json          the Manifest: version, names, config, every entry
//! criu/                          the CRIU image folder
//! criu/...
//! rootfs-diff/                   the rootfs changes (optional)
//! rootfs-diff/...
//! holdfast-archive.sha256.json   sha256 of the manifest and of every file
//! ```
//!
//! Entries are regular files, folders and symbolic links only. The checksum
//! trailer comes last so the writer streams every file once, hashing as it
//! goes; the importer only renames its staging folder into place after the
//! trailer matched. See `docs/checkpoint-archive.md` for every rule.
//!
//! # Use
//!
//! [`Export::scan`] then [`Export::write`] into any [`std::io::Write`] with a
//! [`Progress`] callback; [`import`] from any [`std::io::Read`] into a new
//! folder, with [`ImportOptions`] limits. Errors are [`ArchiveError`]s that
//! name the entry and the rule; nothing here logs, and no error carries
//! file contents (checkpoint images hold process memory).

#![deny(unsafe_code)]

mod error;
mod import;
mod manifest;
mod path;
mod write;

#[cfg(test)]
mod tests;

pub use error::ArchiveError;
pub use import::{import, ImportOptions};
pub use manifest::{Entry, EntryKind, Manifest};
pub use write::{Export, ExportSpec, Progress, WHITEOUT_PREFIX};

/// The format version this crate writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the first entry, the [`Manifest`] (also kept in an import's folder).
pub const MANIFEST_NAME: &str = "holdfast-archive.json";
/// Name of the last entry, the checksum trailer.
pub const TRAILER_NAME: &str = "holdfast-archive.sha256.json";
/// Folder of the CRIU images, in the archive and in an import's folder.
pub const CRIU_DIR: &str = "criu";
/// Folder of the rootfs changes, in the archive and in an import's folder.
pub const ROOTFS_DIFF_DIR: &str = "rootfs-diff";
