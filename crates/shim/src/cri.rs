//! Tasks that containerd's CRI plugin (Kubernetes) creates.
//!
//! - Which pod a task belongs to, from the annotations CRI puts in its
//!   spec: `start` groups a pod's tasks in one shim ([`pod_of`]).
//! - The container's log file: CRI keeps the path kubelet chose in the
//!   container's metadata extension, which the shim reads from containerd
//!   at Create ([`log_path`]); the shim then writes the file itself, from
//!   the journal ([`CriLogFile`]), so a line containerd had read but not
//!   written when it died is not lost, and every line carries the time the
//!   container wrote it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::GetContainerRequest;
use containerd_client::tonic;
use serde::Deserialize;

use crate::error::{Error, Result};

/// CRI's annotation: `sandbox` or `container`.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI's annotation: the id of the pod's sandbox (on the sandbox too).
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// The containerd container extension holding CRI's container metadata
/// (JSON, `{"Version":"v1","Metadata":{…,"LogPath":…}}`), in 1.6 and 1.7.
pub const METADATA_EXTENSION: &str = "io.cri-containerd.container.metadata";
/// How long Create waits for containerd to answer.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The sandbox id of the pod a task belongs to, if CRI created it.
pub fn pod_of(annotations: &HashMap<String, String>) -> Option<&str> {
    annotations
        .get(SANDBOX_ID)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// Whether CRI created the task as an application container (not the
/// sandbox): only those have a log file.
pub fn is_app_container(annotations: Option<&HashMap<String, String>>) -> bool {
    annotations
        .and_then(|a| a.get(CONTAINER_TYPE))
        .is_some_and(|t| t == "container")
}

/// The annotations of the spec in `bundle` (`config.json`), or none; `start`
/// reads only these, before any task exists.
pub fn bundle_annotations(bundle: &Path) -> HashMap<String, String> {
    #[derive(Deserialize)]
    struct Annotated {
        #[serde(default)]
        annotations: HashMap<String, String>,
    }
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Annotated>(&b).ok())
        .map(|a| a.annotations)
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct Versioned {
    #[serde(rename = "Version")]
    version: String,
    #[serde(rename = "Metadata")]
    metadata: Metadata,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(rename = "LogPath", default)]
    log_path: String,
}

/// The log path in CRI's container metadata (`None`: kubelet gave none).
fn parse_log_path(json: &[u8]) -> Result<Option<PathBuf>> {
    let v: Versioned = serde_json::from_slice(json)
        .map_err(|e| Error::Other(format!("CRI container metadata: {e}")))?;
    if v.version != "v1" {
        return Err(Error::Other(format!(
            "CRI container metadata version {:?} is not v1",
            v.version
        )));
    }
    if v.metadata.log_path.is_empty() {
        return Ok(None);
    }
    let path = PathBuf::from(v.metadata.log_path);
    if !path.is_absolute() || path.components().any(|c| c.as_os_str() == "..") {
        return Err(Error::Other(format!(
            "CRI log path {} is not a plain absolute path",
            path.display()
        )));
    }
    Ok(Some(path))
}

/// The log file CRI chose for container `id`, asked from containerd
/// (`address`, its gRPC socket) in `namespace`.
pub async fn log_path(address: &str, namespace: &str, id: &str) -> Result<Option<PathBuf>> {
    let socket = address.strip_prefix("unix://").unwrap_or(address);
    let lookup = async {
        let channel = containerd_client::connect(socket)
            .await
            .map_err(|e| Error::Other(format!("connect to containerd at {socket}: {e}")))?;
        let mut client = ContainersClient::new(channel);
        let mut req = tonic::Request::new(GetContainerRequest { id: id.to_string() });
        let ns = namespace
            .parse()
            .map_err(|_| Error::InvalidArgument(format!("namespace {namespace:?}")))?;
        req.metadata_mut().insert("containerd-namespace", ns);
        let container = client
            .get(req)
            .await
            .map_err(|s| Error::Other(format!("containerd container {id}: {}", s.message())))?
            .into_inner()
            .container
            .ok_or_else(|| Error::Other(format!("containerd returned no container {id}")))?;
        match container.extensions.get(METADATA_EXTENSION) {
            Some(any) => parse_log_path(&any.value),
            None => Ok(None),
        }
    };
    tokio::time::timeout(LOOKUP_TIMEOUT, lookup)
        .await
        .map_err(|_| {
            Error::Other(format!(
                "containerd did not answer within {LOOKUP_TIMEOUT:?}"
            ))
        })?
}

/// A Kubernetes container log file, written by the shim: whole CRI lines,
/// appended, following kubelet's rotation. kubelet renames the file and
/// asks containerd (ReopenContainerLog) to open a new one at the path; the
/// next write after a new file appeared there goes to it. While the path
/// is missing (between the rename and the reopen, or when kubelet renames
/// it back after a failed reopen) writes go on into the file held.
#[derive(Debug)]
pub struct CriLogFile {
    path: PathBuf,
    file: Mutex<(File, (u64, u64))>,
}

fn open_log(path: &Path) -> std::io::Result<(File, (u64, u64))> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)?;
    let m = file.metadata()?;
    Ok((file, (m.dev(), m.ino())))
}

impl CriLogFile {
    /// Opens (or creates) the log file at `path`.
    pub fn open(path: &Path) -> Result<CriLogFile> {
        let file = open_log(path)
            .map_err(|e| Error::io(format!("open CRI log file {}", path.display()), e))?;
        Ok(CriLogFile {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `lines` (whole CRI lines), in one write where the kernel
    /// takes it so: lines of the two streams never interleave within a
    /// line. Returns how many bytes were written, and the error that
    /// stopped it before the end (a full disk): the caller retries the rest.
    pub fn append(&self, lines: &[u8]) -> (usize, Option<std::io::Error>) {
        let mut held = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(m) = std::fs::metadata(&self.path) {
            if (m.dev(), m.ino()) != held.1 {
                match open_log(&self.path) {
                    Ok(reopened) => {
                        tracing::info!(path = %self.path.display(), "CRI log file rotated; writing the new one");
                        *held = reopened;
                    }
                    Err(e) => {
                        tracing::warn!(path = %self.path.display(), error = %e,
                            "CRI log file rotated but the new one cannot be opened; writing the old one");
                    }
                }
            }
        }
        let mut done = 0;
        while done < lines.len() {
            match held.0.write(&lines[done..]) {
                Ok(0) => {
                    let e = std::io::Error::new(std::io::ErrorKind::WriteZero, "wrote nothing");
                    return (done, Some(e));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return (done, Some(e)),
            }
        }
        (done, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_path_comes_from_cris_versioned_metadata() {
        let json = br#"{"Version":"v1","Metadata":{"ID":"c1","Name":"n","SandboxID":"s","Config":{},"LogPath":"/var/log/pods/ns_p_uid/app/0.log","StopSignal":""}}"#;
        assert_eq!(
            parse_log_path(json).unwrap(),
            Some(PathBuf::from("/var/log/pods/ns_p_uid/app/0.log"))
        );
        let none = br#"{"Version":"v1","Metadata":{"ID":"c1","LogPath":""}}"#;
        assert_eq!(parse_log_path(none).unwrap(), None);
        for bad in [
            &br#"{"Version":"v2","Metadata":{"LogPath":"/x"}}"#[..],
            br#"{"Version":"v1","Metadata":{"LogPath":"relative/0.log"}}"#,
            br#"{"Version":"v1","Metadata":{"LogPath":"/var/log/../../etc/x"}}"#,
            b"not json",
        ] {
            assert!(parse_log_path(bad).is_err());
        }
    }

    #[test]
    fn pods_are_told_by_cris_annotations() {
        let mut a = HashMap::new();
        assert_eq!(pod_of(&a), None);
        assert!(!is_app_container(Some(&a)));
        a.insert(SANDBOX_ID.to_string(), "sb1".to_string());
        a.insert(CONTAINER_TYPE.to_string(), "sandbox".to_string());
        assert_eq!(pod_of(&a), Some("sb1"));
        assert!(!is_app_container(Some(&a)));
        a.insert(CONTAINER_TYPE.to_string(), "container".to_string());
        assert!(is_app_container(Some(&a)));
        assert!(!is_app_container(None));
    }

    #[test]
    fn a_rotated_log_file_is_followed_once_a_new_file_is_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let f = CriLogFile::open(&path).unwrap();
        let append = |b: &[u8]| assert!(f.append(b).1.is_none());
        append(b"a\n");
        // kubelet renames it; until the new file exists, the old one grows.
        let rotated = dir.path().join("0.log.20261124-000000");
        std::fs::rename(&path, &rotated).unwrap();
        append(b"b\n");
        // containerd's ReopenContainerLog creates the new file.
        std::fs::write(&path, b"").unwrap();
        append(b"c\n");
        assert_eq!(std::fs::read(&rotated).unwrap(), b"a\nb\n");
        assert_eq!(std::fs::read(&path).unwrap(), b"c\n");
    }
}
