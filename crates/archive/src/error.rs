//! What can go wrong writing or importing an archive.
//!
//! Every variant names what was wrong (the entry path, the limit, the
//! expected and actual value) and never carries file contents: checkpoint
//! images hold process memory.

use std::io;
use std::path::PathBuf;

/// An error of [`crate::Export`] or [`crate::import`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// A local file or folder (a source of an export, the staging folder or
    /// the destination of an import) could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`read`, `create`, `rename`, ...).
        op: &'static str,
        /// The local path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },

    /// Writing the archive stream failed (the output file or the byte
    /// stream it feeds).
    #[error("write archive stream: {0}")]
    Output(#[source] io::Error),

    /// The stream is not valid zstd, or its content checksum does not match.
    #[error("corrupt archive: not a valid zstd stream: {0}")]
    Decompress(#[source] io::Error),

    /// The stream ended before the archive did.
    #[error("corrupt archive: the stream ends early (truncated)")]
    Truncated,

    /// The decompressed stream is not a valid tar archive.
    #[error("corrupt archive: invalid tar structure: {reason}")]
    Malformed {
        /// What the tar reader reported.
        reason: String,
    },

    /// The first entry is not the manifest `holdfast-archive.json`.
    #[error("not a holdfast archive: the first entry is {found:?}, expected the manifest holdfast-archive.json")]
    MissingManifest {
        /// The first entry's path, or `(none)` for an empty archive.
        found: String,
    },

    /// The manifest is larger than the importer accepts.
    #[error("manifest of {size} bytes exceeds the limit of {limit} bytes")]
    ManifestTooLarge {
        /// Its size in the archive.
        size: u64,
        /// `ImportOptions::max_manifest_bytes`.
        limit: u64,
    },

    /// The archive uses a format version this holdfast does not read.
    #[error("archive format version {found} is not supported (this holdfast reads version {supported}); import it with a newer holdfast")]
    UnsupportedVersion {
        /// The manifest's `format_version`.
        found: u32,
        /// [`crate::FORMAT_VERSION`].
        supported: u32,
    },

    /// The manifest (or the checksum trailer) cannot be parsed or breaks a
    /// rule that is not about one entry.
    #[error("invalid {what}: {reason}")]
    InvalidManifest {
        /// `manifest` or `checksum trailer`.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },

    /// An entry path is absolute, has `..`, `.` or empty components, is not
    /// UTF-8, too long, or lies outside `criu/` and `rootfs-diff/`.
    #[error("unsafe entry path {path:?}: {reason}")]
    UnsafePath {
        /// The path as found (lossily decoded).
        path: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// A symbolic link under `criu/` points outside `criu/` (or is absolute).
    #[error("symbolic link {path:?} points outside the archive folder: {target:?}")]
    SymlinkEscape {
        /// The link.
        path: String,
        /// Its target.
        target: String,
    },

    /// An entry would be created below a symbolic link.
    #[error("entry {path:?} lies below the symbolic link {link:?}")]
    PathThroughSymlink {
        /// The entry.
        path: String,
        /// The link among its parents.
        link: String,
    },

    /// An entry's parent folder is not (or not yet) in the archive as a folder.
    #[error("entry {path:?} has no parent folder {parent:?} before it")]
    MissingParent {
        /// The entry.
        path: String,
        /// Its parent.
        parent: String,
    },

    /// A hard link entry: the format has none.
    #[error("entry {path:?} is a hard link (to {target:?}): not allowed")]
    HardLink {
        /// The entry.
        path: String,
        /// What it links to.
        target: String,
    },

    /// A device node, FIFO or socket entry (or, when exporting, such a file
    /// in a source folder).
    #[error("entry {path:?} is a {kind}: only files, folders and symbolic links are allowed")]
    SpecialFile {
        /// The entry (or the local path, when exporting).
        path: String,
        /// `character device`, `block device`, `fifo`, `socket`.
        kind: &'static str,
    },

    /// An entry type the format does not use (sparse files, PAX global
    /// headers, ...).
    #[error("entry {path:?} has an unsupported tar entry type {kind:?}")]
    UnsupportedEntry {
        /// The entry.
        path: String,
        /// The tar type flag.
        kind: char,
    },

    /// A file is larger than the per-file limit.
    #[error("file {path:?} of {size} bytes exceeds the per-file limit of {limit} bytes")]
    FileTooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
        /// `ImportOptions::max_file_bytes`.
        limit: u64,
    },

    /// The files together are larger than the total limit.
    #[error("files of {total} bytes in total exceed the limit of {limit} bytes")]
    TotalTooLarge {
        /// The sum of the manifest's file sizes.
        total: u64,
        /// `ImportOptions::max_total_bytes`.
        limit: u64,
    },

    /// The archive lists more entries than allowed.
    #[error("{count} entries exceed the limit of {limit}")]
    TooManyEntries {
        /// The manifest's entry count.
        count: usize,
        /// `ImportOptions::max_entries`.
        limit: usize,
    },

    /// An entry is in the tar stream but not in the manifest.
    #[error("entry {path:?} is not listed in the manifest")]
    NotInManifest {
        /// The entry.
        path: String,
    },

    /// An entry appears twice (in the stream or in the manifest).
    #[error("entry {path:?} appears more than once")]
    Duplicate {
        /// The entry.
        path: String,
    },

    /// An entry's type or link target differs from its manifest record.
    #[error("entry {path:?} does not match the manifest: {reason}")]
    EntryMismatch {
        /// The entry.
        path: String,
        /// What differs.
        reason: String,
    },

    /// A file's size differs from its manifest record.
    #[error("file {path:?} has {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        /// The file.
        path: String,
        /// The manifest's size.
        expected: u64,
        /// The size found.
        actual: u64,
    },

    /// A file's (or the manifest's) sha256 differs from the checksum trailer.
    #[error("{path:?} has sha256 {actual}, the archive says {expected}")]
    HashMismatch {
        /// The file, or `holdfast-archive.json` for the manifest.
        path: String,
        /// The recorded hash (hex).
        expected: String,
        /// The computed hash (hex).
        actual: String,
    },

    /// Entries listed in the manifest never came.
    #[error("{count} entries listed in the manifest are missing from the archive, e.g. {first:?}")]
    MissingEntries {
        /// How many are missing.
        count: usize,
        /// One of them.
        first: String,
    },

    /// The archive ends without its checksum trailer.
    #[error("corrupt archive: the checksum trailer holdfast-archive.sha256.json is missing")]
    MissingTrailer,

    /// Something follows the checksum trailer.
    #[error("corrupt archive: data after the checksum trailer ({what})")]
    TrailingData {
        /// The entry path, or a description of the extra bytes.
        what: String,
    },

    /// The import destination already exists.
    #[error("destination {0} already exists")]
    DestinationExists(PathBuf),

    /// The import destination has no parent folder (or it is not usable).
    #[error("destination {0} has no parent folder")]
    NoParent(PathBuf),

    /// A source file changed size while it was being exported.
    #[error("source file {path} changed while it was exported (expected {expected} bytes)")]
    SourceChanged {
        /// The local file.
        path: PathBuf,
        /// The size when the export was planned.
        expected: u64,
    },

    /// A source path cannot be stored (its name is not UTF-8).
    #[error("source path {0} is not valid UTF-8")]
    NonUtf8Path(PathBuf),
}

impl ArchiveError {
    /// An [`ArchiveError::Io`] for `op` on `path`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }
}
