//! gRPC statuses from holdfastd as readable errors.

use std::fmt;

use tonic::{Code, Status};

/// An error holdfastd answered with; `holdfast` exits with 125 for it.
#[derive(Debug)]
pub struct DaemonError {
    message: String,
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DaemonError {}

impl DaemonError {
    /// Maps a status of a request about container `name` (if the request
    /// names one) to a message: `no such container: foo` for NOT_FOUND...
    pub fn from_status(status: &Status, name: Option<&str>) -> Self {
        let msg = status.message();
        let message = match (status.code(), name) {
            (Code::NotFound, Some(name)) => format!("no such container: {name}"),
            (Code::NotFound, None) => format!("not found: {msg}"),
            (Code::AlreadyExists, _) => format!("already exists: {msg}"),
            (Code::InvalidArgument, _) => format!("invalid argument: {msg}"),
            (Code::FailedPrecondition, _) => msg.to_owned(),
            (Code::Unavailable, _) => format!("holdfastd is unavailable (starting up?): {msg}"),
            (Code::Unimplemented, _) => format!("holdfastd does not support this request: {msg}"),
            (Code::Cancelled, _) => format!("cancelled: {msg}"),
            (Code::DeadlineExceeded, _) => format!("timed out: {msg}"),
            (code, _) => format!("holdfastd: {}: {msg}", code.description()),
        };
        DaemonError {
            message: message.trim_end_matches(": ").to_owned(),
        }
    }
}

/// Shorthand: `.map_err(status_err(Some(name)))`.
pub fn status_err(name: Option<&str>) -> impl Fn(Status) -> anyhow::Error + '_ {
    move |status| DaemonError::from_status(&status, name).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_readable_messages() {
        let msg =
            |code, m: &str, name| DaemonError::from_status(&Status::new(code, m), name).to_string();
        assert_eq!(
            msg(Code::NotFound, "container foo", Some("foo")),
            "no such container: foo"
        );
        assert_eq!(
            msg(Code::NotFound, "image alpine", None),
            "not found: image alpine"
        );
        assert_eq!(
            msg(Code::AlreadyExists, "name web is taken", None),
            "already exists: name web is taken"
        );
        assert_eq!(
            msg(Code::InvalidArgument, "name: too long", None),
            "invalid argument: name: too long"
        );
        assert_eq!(
            msg(Code::FailedPrecondition, "web is running", Some("web")),
            "web is running"
        );
        assert_eq!(
            msg(Code::Unavailable, "", None),
            "holdfastd is unavailable (starting up?)"
        );
        assert!(msg(Code::Internal, "boom", None).ends_with(": boom"));
    }
}
