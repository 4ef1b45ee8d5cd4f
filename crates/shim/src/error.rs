//! The shim's error type and its one mapping to ttrpc status codes.

use containerd_shim_protos::ttrpc::{self, Code};

/// Everything that can go wrong inside the shim.
///
/// Each variant names what was wrong (the id, the path, the command) so the
/// message containerd shows the user is useful on its own.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is malformed (bad id, bad spec, bad option).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A container, exec process or file the request names does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The thing the request wants to create exists already.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The request is valid but the object is in the wrong state for it.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// The request names something the shim does not support.
    #[error("unimplemented: {0}")]
    Unimplemented(String),
    /// runc (or another helper binary) ran and failed.
    #[error("{command} failed: {message}")]
    Command {
        /// What was run, e.g. `runc create c1`.
        command: String,
        /// runc's own error message (from its log or stderr).
        message: String,
    },
    /// An OS call failed.
    #[error("{context}: {source}")]
    Io {
        /// What the shim was doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Anything else, with a message.
    #[error("{0}")]
    Other(String),
}

/// Result alias for the shim.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with what the shim was doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The ttrpc code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            Error::NotFound(_) => Code::NOT_FOUND,
            Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Error::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            Error::Unimplemented(_) => Code::UNIMPLEMENTED,
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Code::NOT_FOUND
            }
            Error::Command { .. } | Error::Io { .. } | Error::Other(_) => Code::UNKNOWN,
        }
    }

    /// The message without the code prefix (containerd adds its own).
    pub fn message(&self) -> String {
        match self {
            Error::InvalidArgument(m)
            | Error::NotFound(m)
            | Error::AlreadyExists(m)
            | Error::FailedPrecondition(m)
            | Error::Unimplemented(m)
            | Error::Other(m) => m.clone(),
            other => other.to_string(),
        }
    }
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.message()))
    }
}

impl From<runc::error::Error> for Error {
    fn from(e: runc::error::Error) -> Self {
        Error::Other(e.to_string())
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::Io {
            context: "system call".into(),
            source: std::io::Error::from(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(e: Error) -> (Code, String) {
        match ttrpc::Error::from(e) {
            ttrpc::Error::RpcStatus(s) => (s.code(), s.message().to_string()),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn every_variant_maps_to_its_ttrpc_code() {
        let cases = [
            (Error::InvalidArgument("x".into()), Code::INVALID_ARGUMENT),
            (Error::NotFound("x".into()), Code::NOT_FOUND),
            (Error::AlreadyExists("x".into()), Code::ALREADY_EXISTS),
            (
                Error::FailedPrecondition("x".into()),
                Code::FAILED_PRECONDITION,
            ),
            (Error::Unimplemented("x".into()), Code::UNIMPLEMENTED),
            (
                Error::Command {
                    command: "runc start".into(),
                    message: "boom".into(),
                },
                Code::UNKNOWN,
            ),
            (
                Error::io("open", std::io::Error::from(std::io::ErrorKind::NotFound)),
                Code::NOT_FOUND,
            ),
            (Error::Other("x".into()), Code::UNKNOWN),
        ];
        for (err, code) in cases {
            assert_eq!(status_of(err).0, code);
        }
    }

    #[test]
    fn message_names_the_object_without_a_code_prefix() {
        let (_, msg) = status_of(Error::NotFound("exec process \"e1\" in task c1".into()));
        assert_eq!(msg, "exec process \"e1\" in task c1");
    }
}
