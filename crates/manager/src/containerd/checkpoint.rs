//! Checkpoint and restore of a task through containerd (checked against
//! containerd 1.6.20 and 1.7.24 with holdfast's shim):
//!
//! - **Checkpoint**: `Tasks.Checkpoint` with runc's `CheckpointOptions`
//!   ([`CheckpointOptions`], type [`CHECKPOINT_OPTIONS_TYPE`]). containerd
//!   hands them to the shim unchanged; the shim writes CRIU's images to
//!   `image_path` (holdfastd's folder). After the dump containerd still
//!   writes a tar of the (empty) temporary folder it made and the
//!   container's spec into its content store, blobs of the same digest at
//!   every checkpoint of a container: holdfastd deletes them right after
//!   each checkpoint, and a call that failed only because such a blob was
//!   already there (`content sha256:...: already exists`, e.g. two
//!   containers at once, or one left by a holdfastd that died) is a
//!   success when the images are in holdfastd's folder
//!   ([`is_content_already_exists`]).
//! - **Restore**: containerd passes a checkpoint folder to a shim only for
//!   runtimes named `io.containerd.runc.*`; for any other it unpacks the
//!   `CreateTaskRequest.checkpoint` descriptor (a tar of the images in its
//!   content store, media type [`CHECKPOINT_MEDIA_TYPE`]) into a temporary
//!   folder and hands that to the shim. So holdfastd packs its folder into
//!   a tar ([`pack`]), writes it to the content store under a lease (so
//!   containerd's garbage collector cannot take it before Create reads
//!   it), creates the task from it and drops the lease. The shim's Create
//!   only checks the folder; Start runs `runc restore`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use containerd_client::services::v1::snapshots::MountsRequest;
use containerd_client::services::v1::{
    CheckpointTaskRequest, CreateRequest as CreateLeaseRequest, CreateTaskRequest,
    DeleteContentRequest, DeleteRequest as DeleteLeaseRequest, WriteAction, WriteContentRequest,
};
use containerd_client::types::{Descriptor, Mount};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::{Containerd, Error, Result, DEFAULT_SNAPSHOTTER};

/// The type URL of runc's checkpoint options, which holdfast's shim takes.
pub const CHECKPOINT_OPTIONS_TYPE: &str = "containerd.runc.v1.CheckpointOptions";
/// The media type containerd unpacks a checkpoint from on task Create.
pub const CHECKPOINT_MEDIA_TYPE: &str =
    "application/vnd.containerd.container.criu.checkpoint.criu.tar";
/// The header that puts content written to containerd under a lease.
const LEASE_HEADER: &str = "containerd-lease";
/// containerd's label saying when a lease expires.
const LEASE_EXPIRE_LABEL: &str = "containerd.io/gc.expire";
/// How long an upload's lease lives if holdfastd dies before deleting it.
const LEASE_TTL: Duration = Duration::from_secs(3600);
/// Bytes per content write message.
const UPLOAD_CHUNK: u64 = 1 << 20;

/// Whether `Tasks.Checkpoint` failed only when containerd stored its own
/// copy after the dump: a blob of that digest was already in its content
/// store (containerd 1.6 and 1.7 answer `content sha256:...: already
/// exists`, not always with the AlreadyExists code).
pub fn is_content_already_exists(status: &tonic::Status) -> bool {
    let m = status.message();
    m.starts_with("content sha256:") && m.ends_with("already exists")
}

/// containerd's runc `CheckpointOptions` (`containerd.runc.v1`, field
/// numbers of its `oci.proto`), as the shim reads them.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckpointOptions {
    /// Stop the task after the dump.
    #[prost(bool, tag = "1")]
    pub exit: bool,
    /// Dump established TCP connections.
    #[prost(bool, tag = "2")]
    pub open_tcp: bool,
    /// Dump external unix sockets.
    #[prost(bool, tag = "3")]
    pub external_unix_sockets: bool,
    /// Dump a terminal (shell job).
    #[prost(bool, tag = "4")]
    pub terminal: bool,
    /// Dump file locks.
    #[prost(bool, tag = "5")]
    pub file_locks: bool,
    /// Namespaces restored empty.
    #[prost(string, repeated, tag = "6")]
    pub empty_namespaces: Vec<String>,
    /// CRIU's cgroups mode.
    #[prost(string, tag = "7")]
    pub cgroups_mode: String,
    /// Where the images go.
    #[prost(string, tag = "8")]
    pub image_path: String,
    /// CRIU's work folder (its logs).
    #[prost(string, tag = "9")]
    pub work_path: String,
}

/// A tar of a checkpoint folder, ready to be written to containerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// The tar file.
    pub path: PathBuf,
    /// `sha256:<hex>` of it.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A writer that hashes and counts what goes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Packs the checkpoint folder `dir` into the tar file `out` (mode 0600;
/// entries relative to the folder, symlinks stored as links, never
/// followed). Blocking: run it off the async threads.
pub fn pack(dir: &Path, out: &Path) -> std::io::Result<Packed> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(out)?;
    let mut builder = tar::Builder::new(Hashing {
        inner: std::io::BufWriter::new(file),
        hash: Sha256::new(),
        size: 0,
    });
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    builder.append_dir_all(".", dir)?;
    let mut hashing = builder.into_inner()?;
    hashing.flush()?;
    hashing.inner.get_ref().sync_all()?;
    let digest: String = hashing
        .hash
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Packed {
        path: out.to_owned(),
        digest: format!("sha256:{digest}"),
        size: hashing.size,
    })
}

impl Containerd {
    /// Checkpoints task `id` with runc's `options` (the shim writes the
    /// images to `options.image_path`).
    pub async fn checkpoint(&self, id: &str, options: &CheckpointOptions) -> Result<()> {
        let any = prost_types::Any {
            type_url: CHECKPOINT_OPTIONS_TYPE.to_string(),
            value: prost::Message::encode_to_vec(options),
        };
        let answer = self
            .tasks()
            .checkpoint(self.req(CheckpointTaskRequest {
                container_id: id.to_string(),
                parent_checkpoint: String::new(),
                options: Some(any),
            }))
            .await;
        match answer {
            Ok(resp) => {
                for d in resp.into_inner().descriptors {
                    self.delete_content(id, &d.digest).await;
                }
            }
            Err(status)
                if is_content_already_exists(&status)
                    && Path::new(&options.image_path)
                        .join("inventory.img")
                        .is_file() =>
            {
                tracing::debug!(container = id, message = status.message(), "containerd's copy of the checkpoint was already in its content store; the dump is done");
            }
            Err(status) => return Err(Error::from_status("tasks.checkpoint", id, status)),
        }
        tracing::info!(container = id, exit = options.exit, "task checkpointed");
        Ok(())
    }

    /// Deletes a blob containerd stored for a checkpoint of `id` (its
    /// temporary folder's tar, the spec); failures are only logged (its
    /// garbage collector takes what is left).
    async fn delete_content(&self, id: &str, digest: &str) {
        let request = self.req(DeleteContentRequest {
            digest: digest.to_string(),
        });
        match self.content().delete(request).await {
            Ok(_) => tracing::debug!(container = id, digest, "deleted containerd's copy"),
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => {
                tracing::debug!(container = id, digest, error = %s.message(), "delete containerd's copy")
            }
        }
    }

    /// The root filesystem mounts of container `id` as it stands: its
    /// snapshot's mounts (the snapshot keeps what the container changed),
    /// or a bind mount of `folder` for a rootfs container. NotFound
    /// without the container.
    pub async fn rootfs_mounts(&self, id: &str, folder: &Path) -> Result<Vec<Mount>> {
        let container = self.container(id).await?;
        if container.snapshot_key.is_empty() {
            return Ok(vec![super::folder_mount(folder)]);
        }
        let snapshotter = if container.snapshotter.is_empty() {
            DEFAULT_SNAPSHOTTER.to_string()
        } else {
            container.snapshotter
        };
        let resp = self
            .snapshots()
            .mounts(self.req(MountsRequest {
                snapshotter,
                key: container.snapshot_key,
            }))
            .await
            .map_err(|s| Error::from_status("snapshots.mounts", id, s))?;
        Ok(resp.into_inner().mounts)
    }

    /// The folder holding what container `id`'s processes changed on its
    /// rootfs: the `upperdir` of its overlayfs snapshot (a snapshot without
    /// parent is a bind mount of that folder). `None` for a rootfs-folder
    /// container; FailedPrecondition for a snapshot of another kind.
    pub async fn rootfs_changes_dir(&self, id: &str) -> Result<Option<PathBuf>> {
        let container = self.container(id).await?;
        if container.snapshot_key.is_empty() {
            return Ok(None);
        }
        let mounts = self.rootfs_mounts(id, Path::new("/")).await?;
        changes_dir(&mounts).map(Some).ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "container {id}: its snapshot is not an overlayfs one; its rootfs changes cannot be found"
            ))
        })
    }

    /// Creates task `id` (its container exists) from the checkpoint
    /// `packed` on `rootfs`, not started: the shim's Start restores it.
    /// The tar goes to the content store under a lease that is deleted
    /// afterwards, whatever happened.
    pub async fn create_task_from(
        &self,
        id: &str,
        rootfs: Vec<Mount>,
        terminal: bool,
        packed: &Packed,
    ) -> Result<()> {
        let lease = self.create_lease(id).await?;
        let created = async {
            self.upload(id, &lease, packed).await?;
            self.tasks()
                .create(self.req(CreateTaskRequest {
                    container_id: id.to_string(),
                    rootfs,
                    terminal,
                    checkpoint: Some(Descriptor {
                        media_type: CHECKPOINT_MEDIA_TYPE.to_string(),
                        digest: packed.digest.clone(),
                        size: packed.size as i64,
                        annotations: HashMap::new(),
                    }),
                    ..Default::default()
                }))
                .await
                .map_err(|s| Error::from_status("tasks.create", id, s))?;
            Ok(())
        }
        .await;
        if let Err(e) = self.delete_lease(&lease).await {
            tracing::warn!(container = id, lease = %lease, error = %e, "delete lease (it expires in an hour)");
        }
        created
    }

    async fn create_lease(&self, id: &str) -> Result<String> {
        let now = SystemTime::now();
        let nanos = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let lease = format!("holdfast-restore-{id}-{nanos}");
        let expire = time::OffsetDateTime::from(now + LEASE_TTL)
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| Error::FailedPrecondition(format!("lease expiry: {e}")))?;
        self.leases()
            .create(self.req(CreateLeaseRequest {
                id: lease.clone(),
                labels: HashMap::from([(LEASE_EXPIRE_LABEL.to_string(), expire)]),
            }))
            .await
            .map_err(|s| Error::from_status("leases.create", id, s))?;
        Ok(lease)
    }

    async fn delete_lease(&self, lease: &str) -> Result<()> {
        self.leases()
            .delete(self.req(DeleteLeaseRequest {
                id: lease.to_string(),
                sync: false,
            }))
            .await
            .map_err(|s| Error::from_status("leases.delete", lease, s))?;
        Ok(())
    }

    /// Writes the tar to containerd's content store under `lease`, in
    /// [`UPLOAD_CHUNK`] messages, the last one committing with the digest.
    async fn upload(&self, id: &str, lease: &str, packed: &Packed) -> Result<()> {
        let file = tokio::fs::File::open(&packed.path)
            .await
            .map_err(|source| Error::Io {
                path: packed.path.clone(),
                source,
            })?;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let reader = tokio::spawn(send_chunks(file, packed.clone(), lease.to_string(), tx));
        let messages = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut request = self.req(messages);
        let header = lease
            .parse()
            .map_err(|_| Error::FailedPrecondition(format!("lease id {lease:?}")))?;
        request.metadata_mut().insert(LEASE_HEADER, header);
        let mut responses = match self.content().write(request).await {
            Ok(r) => r.into_inner(),
            // The same images were written before and are still there.
            Err(s) if s.code() == tonic::Code::AlreadyExists => return Ok(()),
            Err(s) => return Err(Error::from_status("content.write", id, s)),
        };
        let mut committed = false;
        loop {
            match responses.message().await {
                Ok(Some(r)) => committed |= r.action == WriteAction::Commit as i32,
                Ok(None) => break,
                Err(s) if s.code() == tonic::Code::AlreadyExists => return Ok(()),
                Err(s) => return Err(Error::from_status("content.write", id, s)),
            }
        }
        if let Ok(Err(e)) = reader.await {
            return Err(Error::Io {
                path: packed.path.clone(),
                source: e,
            });
        }
        if !committed {
            return Err(Error::FailedPrecondition(format!(
                "content.write {id}: the checkpoint {} was not committed",
                packed.path.display()
            )));
        }
        tracing::debug!(container = id, size = packed.size, digest = %packed.digest, "checkpoint written to the content store");
        Ok(())
    }
}

/// The upper folder of an overlay mount (`upperdir=`), or the source of a
/// lone bind mount (a snapshot with no parent layer).
pub fn changes_dir(mounts: &[Mount]) -> Option<PathBuf> {
    match mounts {
        [m] if m.r#type == "overlay" => m
            .options
            .iter()
            .find_map(|o| o.strip_prefix("upperdir="))
            .map(PathBuf::from),
        [m] if m.r#type == "bind" => Some(PathBuf::from(&m.source)),
        _ => None,
    }
}

/// Reads the tar in [`UPLOAD_CHUNK`] pieces into content write messages,
/// the last one committing with the digest; stops when the receiver goes.
async fn send_chunks(
    mut file: tokio::fs::File,
    packed: Packed,
    reference: String,
    tx: tokio::sync::mpsc::Sender<WriteContentRequest>,
) -> std::io::Result<()> {
    let mut offset = 0u64;
    while offset < packed.size {
        let n = UPLOAD_CHUNK.min(packed.size - offset);
        let mut data = vec![0u8; n as usize];
        file.read_exact(&mut data).await?;
        let last = offset + n >= packed.size;
        let msg = WriteContentRequest {
            action: if last {
                WriteAction::Commit
            } else {
                WriteAction::Write
            } as i32,
            r#ref: reference.clone(),
            total: packed.size as i64,
            expected: if last {
                packed.digest.clone()
            } else {
                String::new()
            },
            offset: offset as i64,
            data,
            labels: HashMap::new(),
        };
        if tx.send(msg).await.is_err() {
            break;
        }
        offset += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_changes_of_a_snapshot_are_its_upper_folder() {
        let overlay = Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                "index=off".into(),
                "workdir=/s/2/work".into(),
                "upperdir=/s/2/fs".into(),
                "lowerdir=/s/1/fs".into(),
            ],
            ..Default::default()
        };
        assert_eq!(
            changes_dir(std::slice::from_ref(&overlay)),
            Some(PathBuf::from("/s/2/fs"))
        );
        let bind = Mount {
            r#type: "bind".into(),
            source: "/s/3/fs".into(),
            options: vec!["rbind".into(), "rw".into()],
            ..Default::default()
        };
        assert_eq!(changes_dir(&[bind]), Some(PathBuf::from("/s/3/fs")));
        let other = Mount {
            r#type: "btrfs".into(),
            ..Default::default()
        };
        assert_eq!(changes_dir(&[other]), None);
        assert_eq!(changes_dir(&[overlay.clone(), overlay]), None);
        assert_eq!(changes_dir(&[]), None);
    }

    #[test]
    fn checkpoint_options_encode_with_runcs_field_numbers() {
        let o = CheckpointOptions {
            exit: true,
            file_locks: true,
            image_path: "/i".into(),
            work_path: "/w".into(),
            ..Default::default()
        };
        let bytes = prost::Message::encode_to_vec(&o);
        // exit=1 (tag 1, varint), file_locks (tag 5), image_path (tag 8,
        // length-delimited), work_path (tag 9).
        assert_eq!(
            bytes,
            [0x08, 1, 0x28, 1, 0x42, 2, b'/', b'i', 0x4a, 2, b'/', b'w']
        );
    }

    #[test]
    fn only_containerds_content_copy_already_existing_is_recognised() {
        let seen = tonic::Status::unknown(
            "content sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef: already exists",
        );
        assert!(is_content_already_exists(&seen));
        let coded = tonic::Status::already_exists("content sha256:ab: already exists");
        assert!(is_content_already_exists(&coded));
        for other in [
            tonic::Status::unknown("criu failed: already exists"),
            tonic::Status::already_exists("task web: already exists"),
            tonic::Status::internal("content sha256:ab: not found"),
        ] {
            assert!(!is_content_already_exists(&other), "{other:?}");
        }
    }

    #[test]
    fn a_packed_folder_is_a_private_tar_with_its_digest_and_size() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let images = dir.path().join("cp");
        std::fs::create_dir(&images).expect("mkdir");
        std::fs::write(images.join("inventory.img"), b"inv").expect("write");
        std::fs::write(images.join("pages-1.img"), vec![7u8; 5000]).expect("write");
        std::os::unix::fs::symlink("/etc/shadow", images.join("link")).expect("symlink");
        let out = dir.path().join("cp.tar");
        let packed = pack(&images, &out).expect("pack");
        let bytes = std::fs::read(&out).expect("read");
        assert_eq!(packed.size, bytes.len() as u64);
        let want: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(packed.digest, format!("sha256:{want}"));
        let mode = std::fs::metadata(&out).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut names = Vec::new();
        for entry in archive.entries().expect("entries") {
            let entry = entry.expect("entry");
            let path = entry.path().expect("path").display().to_string();
            if entry.header().entry_type().is_symlink() {
                assert_eq!(path, "link", "the link is stored, not followed");
            }
            names.push(path);
        }
        names.sort();
        assert_eq!(names, ["./", "inventory.img", "link", "pages-1.img"]);
    }
}
