//! Errors of the journal.

use std::path::PathBuf;

/// What went wrong in the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A process id (`init` or an exec id) that cannot name a folder.
    #[error("invalid process id {id:?}: {reason}")]
    InvalidProcessId {
        /// The rejected id.
        id: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A namespace or container id that cannot name a folder.
    #[error("invalid {what} {id:?}: {reason}")]
    InvalidId {
        /// `namespace` or `container id`.
        what: &'static str,
        /// The rejected id.
        id: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Options that do not make sense together or alone.
    #[error("invalid journal option `{key}`: {reason}")]
    InvalidOption {
        /// The option key, as written in the TOML file.
        key: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// The options file is not valid TOML or has unknown keys.
    #[error("cannot parse journal options: {0}")]
    Toml(#[from] toml::de::Error),
    /// A stream already has a writer in this journal.
    #[error("process {process:?} stream {stream} already has a writer")]
    WriterBusy {
        /// The process id.
        process: String,
        /// The stream.
        stream: crate::Stream,
    },
    /// An I/O error on a journal file or folder.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`open`, `write`, `fsync`, ...).
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A journal line that is not in the CRI log format.
    #[error("malformed record at {}:{offset}: {source}", path.display())]
    Malformed {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the line in the segment.
        offset: u64,
        /// What is wrong with it.
        #[source]
        source: ParseError,
    },
}

impl JournalError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        JournalError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Why a line is not a CRI log record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No space after the timestamp.
    #[error("timestamp is not found")]
    MissingTimestamp,
    /// The timestamp is not RFC 3339.
    #[error("invalid timestamp {0:?}")]
    BadTimestamp(String),
    /// No space after the stream name.
    #[error("stream type is not found")]
    MissingStream,
    /// The stream is neither `stdout` nor `stderr`.
    #[error("unexpected stream type {0:?}")]
    BadStream(String),
    /// No space after the tag.
    #[error("log tag is not found")]
    MissingTag,
    /// The tag is neither `P` nor `F`.
    #[error("unexpected log tag {0:?}")]
    BadTag(String),
}

/// The journal's result type.
pub type Result<T, E = JournalError> = std::result::Result<T, E>;
