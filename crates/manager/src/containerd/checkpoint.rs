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
//! - **Restore**: containerd passes a checkpoint folder to a shim as is
//!   only for runtimes named `io.containerd.runc.*`; for any other it
//!   unpacks the `CreateTaskRequest.checkpoint` descriptor (a tar of the
//!   images in its content store) into a temporary folder it never
//!   removes. Packing, uploading and unpacking cost more than the restore
//!   itself (256 MiB: 5.9 s against runc's 0.5 s), so holdfastd instead
//!   creates the task with holdfast's shim options plus `restore_from`, its
//!   own image folder, in `CreateTaskRequest.options`; the shim's Create
//!   checks the folder and Start runs `runc restore` on it.

use std::path::{Path, PathBuf};

use containerd_client::services::v1::snapshots::MountsRequest;
use containerd_client::services::v1::{
    CheckpointTaskRequest, CreateTaskRequest, DeleteContentRequest,
};
use containerd_client::types::Mount;

use super::{Containerd, Error, Result, DEFAULT_SNAPSHOTTER};

/// The type URL of runc's checkpoint options, which holdfast's shim takes.
pub const CHECKPOINT_OPTIONS_TYPE: &str = "containerd.runc.v1.CheckpointOptions";
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

    /// Creates task `id` (its container exists) on `rootfs`, not started:
    /// the shim's Start restores it from the CRIU images in `images`
    /// (holdfast's `restore_from` task option, next to the container's
    /// own shim options). Nothing goes through containerd's content store:
    /// for a runtime not named `io.containerd.runc.*` containerd would
    /// unpack a copy of a checkpoint it was handed.
    pub async fn create_task_restoring(
        &self,
        id: &str,
        rootfs: Vec<Mount>,
        terminal: bool,
        images: &Path,
    ) -> Result<()> {
        let mut options = self.shim_options(id).await?.ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "container {id} was not created with holdfast's shim options; it cannot be restored by holdfastd"
            ))
        })?;
        options.restore_from = images.display().to_string();
        self.tasks()
            .create(self.req(CreateTaskRequest {
                container_id: id.to_string(),
                rootfs,
                terminal,
                options: Some(super::options::to_any(&options)),
                ..Default::default()
            }))
            .await
            .map_err(|s| Error::from_status("tasks.create", id, s))?;
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
}
