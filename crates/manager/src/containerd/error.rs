//! The containerd layer's error.

use std::path::PathBuf;

use tonic::Code;

/// What went wrong talking to containerd. Messages are lower-case and name
/// the container, image or path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// containerd's socket did not answer within the retry budget.
    #[error("connect to containerd at {address}: {reason}")]
    Connect {
        /// The socket path.
        address: PathBuf,
        /// The last failure.
        reason: String,
    },
    /// The namespace is not a valid gRPC header value.
    #[error("invalid containerd namespace {0:?}")]
    Namespace(String),
    /// A container, task, process or image does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A container or exec id is taken.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The operation does not fit the current state (e.g. delete a running task).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The image exists but has no snapshot for its layers: it was pulled or
    /// imported without unpacking (`ctr images unpack` or `ctr images pull`
    /// unpack it for the snapshotter).
    #[error("image {image} is not unpacked for snapshotter {snapshotter}")]
    ImageNotUnpacked {
        /// The image name.
        image: String,
        /// The snapshotter.
        snapshotter: String,
    },
    /// An image's manifest or config could not be understood.
    #[error("image {image}: {reason}")]
    Image {
        /// The image name.
        image: String,
        /// What is wrong.
        reason: String,
    },
    /// A containerd call failed otherwise.
    #[error("containerd {op} {id}: {status}", status = .status.message())]
    Rpc {
        /// The call, e.g. `tasks.create`.
        op: &'static str,
        /// The container (or image) it was about.
        id: String,
        /// containerd's status.
        status: tonic::Status,
    },
    /// The spec could not be built or encoded.
    #[error(transparent)]
    Spec(#[from] crate::spec::Error),
    /// A file operation (FIFOs) failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// The layer's result.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Maps a containerd status for `op` on `id`: NotFound, AlreadyExists and
    /// FailedPrecondition become their own variants, the rest [`Error::Rpc`].
    pub fn from_status(op: &'static str, id: &str, status: tonic::Status) -> Error {
        match status.code() {
            Code::NotFound => Error::NotFound(format!("{op} {id}: {}", status.message())),
            Code::AlreadyExists => Error::AlreadyExists(id.to_string()),
            Code::FailedPrecondition => {
                Error::FailedPrecondition(format!("{op} {id}: {}", status.message()))
            }
            _ => Error::Rpc {
                op,
                id: id.to_string(),
                status,
            },
        }
    }

    /// True for [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_their_variants_and_name_the_id() {
        let e = Error::from_status("tasks.get", "web", tonic::Status::not_found("no such task"));
        assert!(e.is_not_found());
        assert!(e.to_string().contains("web"));
        let e = Error::from_status(
            "containers.create",
            "web",
            tonic::Status::already_exists("x"),
        );
        assert!(matches!(e, Error::AlreadyExists(ref id) if id == "web"));
        let e = Error::from_status(
            "tasks.delete",
            "web",
            tonic::Status::failed_precondition("running"),
        );
        assert!(matches!(e, Error::FailedPrecondition(_)));
        let e = Error::from_status("tasks.start", "web", tonic::Status::internal("boom"));
        assert_eq!(e.to_string(), "containerd tasks.start web: boom");
    }
}
