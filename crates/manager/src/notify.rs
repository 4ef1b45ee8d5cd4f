//! systemd's readiness protocol (`sd_notify`), without libsystemd: a
//! datagram with `READY=1`, `STOPPING=1`, `RELOADING=1` or `STATUS=...`
//! to the socket named by `$NOTIFY_SOCKET` (a path, or `@name` for an
//! abstract socket). Without the variable nothing is sent, so holdfastd
//! runs the same outside systemd (`Type=simple`).

use std::os::unix::net::UnixDatagram;
use std::path::Path;

use tracing::debug;

/// The variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` to systemd if it asked for notifications; failures are
/// logged at debug level (systemd not listening is not holdfastd's
/// problem).
pub fn notify(state: &str) {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    if let Err(e) = notify_to(Path::new(&socket), state) {
        debug!(error = %e, state, "sd_notify failed");
    }
}

/// Sends `state` to the notification socket `socket`.
pub fn notify_to(socket: &Path, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let bytes = socket.as_os_str().as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), socket)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_reaches_a_path_socket() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("{e}"));
        notify_to(&path, "READY=1").unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buf[..n], b"READY=1");
        assert!(notify_to(&dir.path().join("none.sock"), "READY=1").is_err());
    }
}
