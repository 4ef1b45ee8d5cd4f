//! holdfastd's errors, and their one mapping to gRPC statuses.
//!
//! Messages are lower-case and name the field, container, key or path they
//! are about; they never carry environment values.

use std::path::PathBuf;

/// A result of holdfastd's library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in holdfastd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input from a client: `what` names the field (and its value when
    /// that is safe to show), e.g. `name "a/b"`.
    #[error("{what}: {reason}")]
    Invalid {
        /// The field, e.g. `name "a/b"` or `env[2]`.
        what: String,
        /// Why it was rejected.
        reason: String,
    },
    /// An unknown container, image or rootfs.
    #[error("{what} not found")]
    NotFound {
        /// What is missing, e.g. `container "web"` or `rootfs /srv/x`.
        what: String,
    },
    /// A name that is taken.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What exists, e.g. `container "web"`.
        what: String,
    },
    /// An operation that the container's state does not allow.
    #[error("{0}")]
    FailedPrecondition(String),
    /// holdfastd (or something it needs) is not ready, e.g. during start-up.
    #[error("{0}")]
    Unavailable(String),
    /// A config file key with a value that cannot be used.
    #[error("config {}: key `{key}`: {reason}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// The key, dotted for tables (`log.budget_bytes`).
        key: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A config file that is not TOML or has unknown keys.
    #[error("config {}: {source}", path.display())]
    ConfigParse {
        /// The config file.
        path: PathBuf,
        /// The parser's error, which names the key and line.
        #[source]
        source: toml::de::Error,
    },
    /// A metadata database written by a newer holdfastd.
    #[error(
        "database {}: schema version {found} is newer than this holdfastd supports ({supported}); \
         run a newer holdfastd or restore a backup",
        path.display()
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// A database operation failed.
    #[error("database {op}: {source}")]
    Db {
        /// What was being done (`open`, `put "web"`, ...).
        op: String,
        /// redb's error.
        #[source]
        source: redb::Error,
    },
    /// An I/O error on a file or folder.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`read`, `create`, ...).
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// containerd refused or failed an operation.
    #[error(transparent)]
    Containerd(#[from] crate::containerd::Error),
    /// A container's runtime spec could not be built.
    #[error(transparent)]
    Spec(#[from] crate::spec::Error),
    /// A container's log journal could not be read.
    #[error("journal: {0}")]
    Journal(#[from] holdfast_journal::JournalError),
    /// A checkpoint archive that cannot be imported (corrupt, hostile, too
    /// large, of another format version) or written.
    #[error("archive: {0}")]
    Archive(#[from] holdfast_archive::ArchiveError),
    /// Another holdfastd (a migration's target) refused or failed a call.
    #[error("holdfastd at {target}: {op}: {}", status.message())]
    Remote {
        /// Its address, `unix:///path`.
        target: String,
        /// The call, e.g. `import`.
        op: &'static str,
        /// Its answer (the code is passed on).
        status: tonic::Status,
    },
    /// A bug or an unexpected state.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// An [`Error::Invalid`] about `what`.
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Db`] for `op`, from any of redb's error types.
    pub fn db(op: impl Into<String>, source: impl Into<redb::Error>) -> Error {
        Error::Db {
            op: op.into(),
            source: source.into(),
        }
    }

    /// An [`Error::Io`] for `op` on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Remote`] for call `op` of the holdfastd at `target`.
    pub fn remote(target: &str, op: &'static str, status: tonic::Status) -> Error {
        Error::Remote {
            target: target.to_owned(),
            op,
            status,
        }
    }

    /// The gRPC code this error is reported with.
    pub fn code(&self) -> tonic::Code {
        match self {
            Error::Invalid { .. } | Error::Config { .. } | Error::ConfigParse { .. } => {
                tonic::Code::InvalidArgument
            }
            Error::NotFound { .. } => tonic::Code::NotFound,
            Error::AlreadyExists { .. } => tonic::Code::AlreadyExists,
            Error::FailedPrecondition(_) | Error::SchemaTooNew { .. } => {
                tonic::Code::FailedPrecondition
            }
            Error::Unavailable(_) => tonic::Code::Unavailable,
            Error::Containerd(e) => containerd_code(e),
            Error::Archive(e) => archive_code(e),
            Error::Remote { status, .. } => status.code(),
            Error::Spec(crate::spec::Error::Invalid { .. }) => tonic::Code::InvalidArgument,
            Error::Spec(crate::spec::Error::ImageConfig(_)) => tonic::Code::FailedPrecondition,
            Error::Spec(crate::spec::Error::Oci(_))
            | Error::Journal(_)
            | Error::Db { .. }
            | Error::Io { .. }
            | Error::Internal(_) => tonic::Code::Internal,
        }
    }
}

/// The code of a containerd layer error: its kind where it has one,
/// `Unavailable` when containerd cannot be reached.
fn containerd_code(e: &crate::containerd::Error) -> tonic::Code {
    use crate::containerd::Error as E;
    match e {
        E::NotFound(_) => tonic::Code::NotFound,
        E::AlreadyExists(_) => tonic::Code::AlreadyExists,
        E::FailedPrecondition(_) | E::ImageNotUnpacked { .. } | E::Image { .. } => {
            tonic::Code::FailedPrecondition
        }
        E::Connect { .. } => tonic::Code::Unavailable,
        E::Rpc { status, .. } if status.code() == tonic::Code::Unavailable => {
            tonic::Code::Unavailable
        }
        E::Spec(crate::spec::Error::Invalid { .. }) => tonic::Code::InvalidArgument,
        E::Namespace(_) | E::Rpc { .. } | E::Spec(_) | E::Io { .. } => tonic::Code::Internal,
    }
}

/// The code of an archive error: the archive's fault (corrupt, hostile,
/// over a limit) is `InvalidArgument`, a format this holdfast does not read
/// `FailedPrecondition`, a local file problem `Internal`.
fn archive_code(e: &holdfast_archive::ArchiveError) -> tonic::Code {
    use holdfast_archive::ArchiveError as A;
    match e {
        A::Io { .. } | A::Output(_) | A::NoParent(_) | A::NonUtf8Path(_) => tonic::Code::Internal,
        A::UnsupportedVersion { .. } => tonic::Code::FailedPrecondition,
        A::DestinationExists(_) => tonic::Code::AlreadyExists,
        A::SourceChanged { .. } => tonic::Code::Aborted,
        _ => tonic::Code::InvalidArgument,
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> tonic::Status {
        tonic::Status::new(err.code(), err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn io_err() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied")
    }

    #[test]
    fn each_error_maps_to_its_grpc_code_with_its_message() {
        let toml_err = match toml::from_str::<toml::Table>("x = ") {
            Err(e) => e,
            Ok(_) => panic!("bad toml parsed"),
        };
        let cases: Vec<(Error, Code, &str)> = vec![
            (
                Error::invalid("name \"a/b\"", "must not contain '/'"),
                Code::InvalidArgument,
                "name \"a/b\": must not contain '/'",
            ),
            (
                Error::NotFound {
                    what: "container \"web\"".into(),
                },
                Code::NotFound,
                "container \"web\" not found",
            ),
            (
                Error::NotFound {
                    what: "checkpoint \"cp1\" of container \"web\"".into(),
                },
                Code::NotFound,
                "checkpoint \"cp1\" of container \"web\" not found",
            ),
            (
                crate::validate::validate_checkpoint_name("../x")
                    .err()
                    .unwrap_or_else(|| Error::Internal("../x accepted".into())),
                Code::InvalidArgument,
                "checkpoint \"../x\": must not contain '/'",
            ),
            (
                Error::AlreadyExists {
                    what: "container \"web\"".into(),
                },
                Code::AlreadyExists,
                "container \"web\" already exists",
            ),
            (
                Error::FailedPrecondition("container \"web\" is running".into()),
                Code::FailedPrecondition,
                "container \"web\" is running",
            ),
            (
                Error::Unavailable("holdfastd is starting".into()),
                Code::Unavailable,
                "holdfastd is starting",
            ),
            (
                Error::Config {
                    path: "/etc/h.toml".into(),
                    key: "root".into(),
                    reason: "not absolute".into(),
                },
                Code::InvalidArgument,
                "config /etc/h.toml: key `root`: not absolute",
            ),
            (
                Error::ConfigParse {
                    path: "/etc/h.toml".into(),
                    source: toml_err,
                },
                Code::InvalidArgument,
                "config /etc/h.toml: ",
            ),
            (
                Error::SchemaTooNew {
                    path: "/x.redb".into(),
                    found: 9,
                    supported: 1,
                },
                Code::FailedPrecondition,
                "database /x.redb: schema version 9 is newer",
            ),
            (
                Error::db("open", redb::Error::DatabaseAlreadyOpen),
                Code::Internal,
                "database open: ",
            ),
            (
                Error::io("read", "/x", io_err()),
                Code::Internal,
                "read /x: denied",
            ),
            (
                Error::Containerd(crate::containerd::Error::NotFound("image x".into())),
                Code::NotFound,
                "image x not found",
            ),
            (
                Error::Containerd(crate::containerd::Error::Connect {
                    address: "/c.sock".into(),
                    reason: "refused".into(),
                }),
                Code::Unavailable,
                "connect to containerd at /c.sock: refused",
            ),
            (
                Error::Containerd(crate::containerd::Error::from_status(
                    "tasks.start",
                    "web",
                    tonic::Status::internal("boom"),
                )),
                Code::Internal,
                "containerd tasks.start web: boom",
            ),
            (
                Error::Journal(holdfast_journal::JournalError::Io {
                    op: "read",
                    path: "/j/init/stdout.0000000001.log".into(),
                    source: io_err(),
                }),
                Code::Internal,
                "journal: read /j/init/stdout.0000000001.log: denied",
            ),
            (
                Error::Archive(holdfast_archive::ArchiveError::Truncated),
                Code::InvalidArgument,
                "archive: corrupt archive: the stream ends early (truncated)",
            ),
            (
                Error::Archive(holdfast_archive::ArchiveError::UnsafePath {
                    path: "../x".into(),
                    reason: "has a '..' component",
                }),
                Code::InvalidArgument,
                "archive: unsafe entry path \"../x\"",
            ),
            (
                Error::Archive(holdfast_archive::ArchiveError::UnsupportedVersion {
                    found: 9,
                    supported: 1,
                }),
                Code::FailedPrecondition,
                "archive: archive format version 9 is not supported",
            ),
            (
                Error::Archive(holdfast_archive::ArchiveError::Io {
                    op: "create",
                    path: "/x".into(),
                    source: io_err(),
                }),
                Code::Internal,
                "archive: create /x: denied",
            ),
            (
                Error::remote(
                    "unix:///t.sock",
                    "import",
                    tonic::Status::already_exists("container \"web\" already exists"),
                ),
                Code::AlreadyExists,
                "holdfastd at unix:///t.sock: import: container \"web\" already exists",
            ),
            (
                Error::Internal("oops".into()),
                Code::Internal,
                "internal error: oops",
            ),
        ];
        for (err, code, message) in cases {
            let status = tonic::Status::from(err);
            assert_eq!(status.code(), code, "{}", status.message());
            assert!(
                status.message().starts_with(message),
                "{:?} does not start with {message:?}",
                status.message()
            );
        }
    }
}
