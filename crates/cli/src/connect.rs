//! Connecting to holdfastd over its unix socket.

use anyhow::{anyhow, Result};
use holdfast_api::v1::containers_client::ContainersClient;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::parse;

/// Connects to holdfastd at `host` (`unix:///PATH`); the error says the
/// address and asks whether holdfastd runs.
pub async fn connect(host: &str) -> Result<ContainersClient<Channel>> {
    let path = parse::host(host).map_err(|e| anyhow!("invalid --host: {e}"))?;
    // The URI is not used: every connection goes to the socket.
    let endpoint = Endpoint::try_from("http://[::]:0")?;
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|e| {
            anyhow!(
                "cannot reach holdfastd at {host}: {} (is it running?)",
                root_cause(&e)
            )
        })?;
    Ok(ContainersClient::new(channel))
}

/// The innermost error of a chain: for a failed connect, the system's
/// message (e.g. "No such file or directory (os error 2)").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("holdfast-cli-test-{}", std::process::id()));
        let host = format!("unix://{}/none.sock", dir.display());
        let err = connect(&host)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with(&format!("cannot reach holdfastd at {host}: ")),
            "{err}"
        );
        assert!(err.contains("No such file or directory"), "{err}");
        assert!(err.ends_with("(is it running?)"), "{err}");
    }
}
