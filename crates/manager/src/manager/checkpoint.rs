//! Checkpoints of a container's task (CRIU through containerd and the
//! shim): create, list, remove, restore.
//!
//! A checkpoint's images live in `<root>/checkpoints/<container>/<name>/`;
//! `<root>/checkpoints` and every folder under it are mode 0700 (the images
//! hold the container's memory; the shim makes each image file 0600).
//! CRIU's work folder and the tar a restore sends to containerd live in
//! `<root>/checkpoint-work/<container>/<name>/`, removed once the call is
//! done (a failed dump keeps CRIU's log there until the next attempt).
//! Names are validated before any path is built from them. The record of
//! each checkpoint is in the store's `checkpoints` table; removing the
//! container removes its checkpoints.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use holdfast_api::v1::{Checkpoint, Container};
use tracing::{info, info_span, warn, Instrument};

use super::{now, remove_dir_if_any, Manager};
use crate::containerd::{CheckpointOptions, TaskStatus};
use crate::declared::CheckpointFlags;
use crate::error::{Error, Result};
use crate::validate::{validate_checkpoint_name, validate_name};

/// The folder of every checkpoint, under holdfastd's root.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// The folder of CRIU's work files of a dump, under the root.
pub const CHECKPOINT_WORK_DIR: &str = "checkpoint-work";
/// The file every CRIU image folder holds.
pub(super) const INVENTORY: &str = "inventory.img";
/// What [`Manager::create_checkpoint`] is asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointRequest {
    /// The container.
    pub container: String,
    /// The checkpoint's name; empty: one made from the time.
    pub name: String,
    /// Leave the task running after the dump.
    pub leave_running: bool,
    /// Dump established TCP connections.
    pub tcp_established: bool,
    /// Dump file locks.
    pub file_locks: bool,
    /// Taken by the container's checkpoint schedule (which prunes these).
    pub scheduled: bool,
}

/// A checkpoint name made from the time: `cp-YYYYMMDDTHHMMSS.mmmZ` (UTC).
pub fn generated_name(at: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(at);
    format!(
        "cp-{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

pub(super) fn checkpoint_not_found(container: &str, name: &str) -> Error {
    Error::NotFound {
        what: format!("checkpoint {name:?} of container {container:?}"),
    }
}

/// Creates `dir` and its missing parents up to (not including) `base`,
/// each mode 0700, and sets 0700 on `dir` and the folders between (also
/// when they existed).
pub(super) async fn private_dirs(base: &Path, dir: &Path) -> Result<()> {
    tokio::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .await
        .map_err(|e| Error::io("create", dir, e))?;
    let owned: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|d| d.starts_with(base) && *d != base)
        .map(Path::to_path_buf)
        .collect();
    for d in owned {
        tokio::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))
            .await
            .map_err(|e| Error::io("chmod 0700", d, e))?;
    }
    Ok(())
}

/// The record of checkpoint `name` of `container` whose images are in
/// `dir`: their size (counted off the async threads), now, `flags`.
pub(super) async fn describe(
    container: &str,
    name: &str,
    dir: &Path,
    flags: &CheckpointFlags,
) -> Result<Checkpoint> {
    let size = {
        let d = dir.to_path_buf();
        tokio::task::spawn_blocking(move || dir_size(&d))
            .await
            .map_err(|e| Error::Internal(format!("size task: {e}")))?
            .map_err(|e| Error::io("size", dir, e))?
    };
    Ok(Checkpoint {
        container: container.to_owned(),
        name: name.to_owned(),
        created_at: now(),
        size_bytes: size,
        leave_running: flags.leave_running,
        tcp_established: flags.tcp_established,
        file_locks: flags.file_locks,
        path: dir.display().to_string(),
        scheduled: false,
    })
}

/// The names of the folders in `dir` (none if it does not exist).
async fn dir_names(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut rd = match tokio::fs::read_dir(dir).await {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("read folder", dir, e)),
    };
    while let Some(entry) = rd
        .next_entry()
        .await
        .map_err(|e| Error::io("read folder", dir, e))?
    {
        let is_dir = entry
            .file_type()
            .await
            .map_err(|e| Error::io("stat", entry.path(), e))?
            .is_dir();
        if let (true, Some(name)) = (is_dir, entry.file_name().to_str()) {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

/// Bytes of the regular files under `dir` (symlinks not followed).
fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += dir_size(&entry.path())?;
        } else if kind.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

impl Manager {
    /// `<root>/checkpoints`.
    fn checkpoints_root(&self) -> PathBuf {
        self.config.root.join(CHECKPOINTS_DIR)
    }

    /// The image folder of checkpoint `name` of `container` (both already
    /// validated).
    pub fn checkpoint_dir(&self, container: &str, name: &str) -> PathBuf {
        self.checkpoints_root().join(container).join(name)
    }

    /// The scratch folder of a checkpoint's dump or restore.
    fn checkpoint_work_dir(&self, container: &str, name: &str) -> PathBuf {
        self.config
            .root
            .join(CHECKPOINT_WORK_DIR)
            .join(container)
            .join(name)
    }

    /// Checkpoints a running (or paused) container's task into a new
    /// checkpoint. Without `leave_running` the task stops after the dump;
    /// the exit is recorded as a stop by the user (no restart policy, no
    /// auto-remove: the checkpoint is there to be restored).
    pub async fn create_checkpoint(self: &Arc<Self>, req: CheckpointRequest) -> Result<Checkpoint> {
        validate_name(&req.container)?;
        let name = if req.name.is_empty() {
            generated_name(std::time::SystemTime::now())
        } else {
            req.name.clone()
        };
        validate_checkpoint_name(&name)?;
        let container = req.container.clone();
        let _guard = self.lock(&container).await?;
        self.create_checkpoint_locked(req, name.clone())
            .instrument(info_span!("checkpoint", container = %container, checkpoint = %name))
            .await
    }

    pub(super) async fn create_checkpoint_locked(
        self: &Arc<Self>,
        req: CheckpointRequest,
        name: String,
    ) -> Result<Checkpoint> {
        let container = req.container.as_str();
        self.record(container).await?;
        if self.get_checkpoint(container, &name).await?.is_some() {
            return Err(Error::AlreadyExists {
                what: format!("checkpoint {name:?} of container {container:?}"),
            });
        }
        match self.task(container).await?.map(|t| t.status) {
            Some(TaskStatus::Running | TaskStatus::Paused) => {}
            _ => {
                return Err(Error::FailedPrecondition(format!(
                    "container {container:?} is not running: only a running container can be checkpointed"
                )))
            }
        }
        let dir = self.checkpoint_dir(container, &name);
        let work = self.checkpoint_work_dir(container, &name);
        // Leftovers of an attempt holdfastd did not finish (no record).
        remove_dir_if_any(&dir).await;
        remove_dir_if_any(&work).await;
        private_dirs(&self.config.root, &dir).await?;
        private_dirs(&self.config.root, &work).await?;
        let options = CheckpointOptions {
            exit: !req.leave_running,
            open_tcp: req.tcp_established,
            file_locks: req.file_locks,
            image_path: dir.display().to_string(),
            work_path: work.display().to_string(),
            ..Default::default()
        };
        if let Err(e) = self.containerd.checkpoint(container, &options).await {
            remove_dir_if_any(&dir).await;
            warn!(error = %e, work = %work.display(), "checkpoint failed; CRIU's log is kept in the work folder");
            return Err(e.into());
        }
        remove_dir_if_any(&work).await;
        if !dir.join(INVENTORY).is_file() {
            remove_dir_if_any(&dir).await;
            return Err(Error::Internal(format!(
                "the dump of {container:?} left no CRIU images in {}",
                dir.display()
            )));
        }
        let flags = CheckpointFlags {
            leave_running: req.leave_running,
            tcp_established: req.tcp_established,
            file_locks: req.file_locks,
        };
        let checkpoint = match describe(container, &name, &dir, &flags).await {
            Ok(c) => Checkpoint {
                scheduled: req.scheduled,
                ..c
            },
            Err(e) => {
                remove_dir_if_any(&dir).await;
                return Err(e);
            }
        };
        let cp = checkpoint.clone();
        if let Err(e) = self.store(move |s| s.put_checkpoint(&cp)).await {
            remove_dir_if_any(&dir).await;
            return Err(e);
        }
        if !req.leave_running {
            self.record_checkpoint_exit(container).await?;
        }
        info!(
            size_bytes = checkpoint.size_bytes,
            leave_running = req.leave_running,
            scheduled = req.scheduled,
            "checkpoint created"
        );
        self.event(container, "checkpoint", 0, &name);
        Ok(checkpoint)
    }

    /// After a dump that stopped the task: deletes the task and records
    /// its exit as a stop by the user, without policy or auto-remove.
    async fn record_checkpoint_exit(self: &Arc<Self>, container: &str) -> Result<()> {
        self.containerd.wait(container).await?;
        let exit = self.containerd.delete_task(container).await?;
        let mut record = self.record(container).await?;
        record
            .state
            .get_or_insert_with(Default::default)
            .stopped_by_user = true;
        self.record_exit(record, exit, false).await
    }

    pub(super) async fn get_checkpoint(
        &self,
        container: &str,
        name: &str,
    ) -> Result<Option<Checkpoint>> {
        let (c, n) = (container.to_owned(), name.to_owned());
        self.store(move |s| s.get_checkpoint(&c, &n)).await
    }

    /// A container's checkpoints, oldest first.
    pub async fn list_checkpoints(&self, container: &str) -> Result<Vec<Checkpoint>> {
        validate_name(container)?;
        if self.get(container).await?.is_none() {
            return Err(super::not_found(container));
        }
        let c = container.to_owned();
        let mut list = self.store(move |s| s.checkpoints(&c)).await?;
        list.sort_by_key(|cp| {
            cp.created_at
                .map(|t| (t.seconds, t.nanos))
                .unwrap_or_default()
        });
        Ok(list)
    }

    /// Removes a checkpoint: its images, then its record.
    pub async fn remove_checkpoint(&self, container: &str, name: &str) -> Result<()> {
        validate_name(container)?;
        validate_checkpoint_name(name)?;
        let _guard = self.lock(container).await?;
        async {
            if self.get(container).await?.is_none() {
                return Err(super::not_found(container));
            }
            if self.get_checkpoint(container, name).await?.is_none() {
                return Err(checkpoint_not_found(container, name));
            }
            self.remove_checkpoint_locked(container, name).await
        }
        .instrument(info_span!(
            "checkpoint.remove",
            container,
            checkpoint = name
        ))
        .await
    }

    /// Removes a checkpoint's images, then its record (the container's
    /// lock held).
    pub(super) async fn remove_checkpoint_locked(&self, container: &str, name: &str) -> Result<()> {
        let dir = self.checkpoint_dir(container, name);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove checkpoint", dir, e)),
        }
        let (c, n) = (container.to_owned(), name.to_owned());
        self.store(move |s| s.delete_checkpoint(&c, &n)).await?;
        info!(container, checkpoint = name, "checkpoint removed");
        Ok(())
    }

    /// Start-up (phase 3, before the schedules resume): removes every
    /// checkpoint folder that has no record, with its work folder: a dump
    /// holdfastd did not finish because it was killed during it (the
    /// record is written last). How many.
    pub(super) async fn remove_unrecorded_checkpoints(&self) -> Result<usize> {
        let root = self.checkpoints_root();
        let mut removed = 0;
        for container in dir_names(&root).await? {
            if validate_name(&container).is_err() {
                continue;
            }
            let c = container.clone();
            let recorded: std::collections::HashSet<String> = self
                .store(move |s| s.checkpoints(&c))
                .await?
                .into_iter()
                .map(|cp| cp.name)
                .collect();
            for name in dir_names(&root.join(&container)).await? {
                if recorded.contains(&name) || validate_checkpoint_name(&name).is_err() {
                    continue;
                }
                warn!(
                    container = %container,
                    checkpoint = %name,
                    "a checkpoint folder without a record (a dump holdfastd did not finish); removed"
                );
                remove_dir_if_any(&self.checkpoint_dir(&container, &name)).await;
                remove_dir_if_any(&self.checkpoint_work_dir(&container, &name)).await;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes every checkpoint of a container being removed (its lock
    /// held): the folders, then the records.
    pub(super) async fn remove_checkpoints_locked(&self, container: &str) -> Result<()> {
        let c = container.to_owned();
        let list = self.store(move |s| s.checkpoints(&c)).await?;
        for d in [
            self.checkpoints_root().join(container),
            self.config.root.join(CHECKPOINT_WORK_DIR).join(container),
        ] {
            match tokio::fs::remove_dir_all(&d).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove checkpoints", d, e)),
            }
        }
        for cp in list {
            let c = container.to_owned();
            self.store(move |s| s.delete_checkpoint(&c, &cp.name))
                .await?;
        }
        Ok(())
    }

    /// Re-creates a container's task from one of its checkpoints and
    /// starts it: its processes go on from where the checkpoint left them,
    /// writing to the same journal. The container must not be running.
    pub async fn restore(self: &Arc<Self>, container: &str, checkpoint: &str) -> Result<Container> {
        validate_name(container)?;
        validate_checkpoint_name(checkpoint)?;
        let _guard = self.lock(container).await?;
        self.restore_locked(container, checkpoint)
            .instrument(info_span!("restore", container, checkpoint))
            .await
    }

    async fn restore_locked(self: &Arc<Self>, container: &str, name: &str) -> Result<Container> {
        let mut record = self.record(container).await?;
        if self.get_checkpoint(container, name).await?.is_none() {
            return Err(checkpoint_not_found(container, name));
        }
        let dir = self.checkpoint_dir(container, name);
        if !dir.join(INVENTORY).is_file() {
            return Err(Error::FailedPrecondition(format!(
                "checkpoint {name:?} of container {container:?} has no CRIU images in {}",
                dir.display()
            )));
        }
        match self.task(container).await?.map(|t| t.status) {
            None => {}
            Some(TaskStatus::Stopped) => {
                self.containerd.delete_task(container).await?;
            }
            Some(TaskStatus::Created) => self.discard_created_task(container).await?,
            Some(_) => {
                return Err(Error::FailedPrecondition(format!(
                    "container {container:?} is running: stop it before restoring a checkpoint"
                )))
            }
        }
        self.life.cancel_restart(container);
        let spec = record
            .spec
            .clone()
            .ok_or_else(|| Error::Internal("a loaded record has no spec".into()))?;
        // The container as containerd has it (its snapshot keeps what the
        // processes changed on the rootfs); made again from the record if
        // containerd lost it.
        let rootfs = Path::new(&spec.rootfs);
        let mounts = match self.containerd.rootfs_mounts(container, rootfs).await {
            Ok(m) => m,
            Err(e) if e.is_not_found() => {
                self.recreate(&record).await?;
                self.discard_created_task(container).await?;
                self.containerd.rootfs_mounts(container, rootfs).await?
            }
            Err(e) => return Err(e.into()),
        };
        let restored = async {
            self.containerd
                .create_task_restoring(container, mounts, spec.tty, &dir)
                .await?;
            match self.containerd.start(container).await {
                Ok(pid) => Ok(pid),
                Err(e) => {
                    if let Err(e2) = self.containerd.delete_task(container).await {
                        warn!(error = %e2, "delete the task whose restore failed");
                    }
                    Err(Error::from(e))
                }
            }
        }
        .await;
        let pid = restored?;
        super::mark_running(&mut record, pid).restart_count = 0;
        self.put(&record).await?;
        self.life.reset_backoff(container);
        self.life.started(container, pid);
        self.arm_schedule(&record);
        info!(pid, "container restored from its checkpoint");
        self.event(container, "restore", 0, name);
        Ok(record)
    }

    /// Kills, waits for and deletes a task that was created but never
    /// started.
    async fn discard_created_task(&self, container: &str) -> Result<()> {
        self.signal_ignoring_exited(container, super::SIGKILL, false)
            .await?;
        self.containerd.wait(container).await?;
        self.containerd.delete_task(container).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_are_valid_and_sort_by_time() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        let name = generated_name(t);
        assert_eq!(name, "cp-20231114T221320.123Z");
        assert!(validate_checkpoint_name(&name).is_ok());
        let later = generated_name(t + std::time::Duration::from_millis(1));
        assert!(later > name);
    }

    #[test]
    fn private_dirs_are_0700_from_the_root_down_and_sizes_count_files() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("checkpoints/web/cp1");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(private_dirs(root.path(), &dir)).expect("dirs");
        for d in ["checkpoints", "checkpoints/web", "checkpoints/web/cp1"] {
            let mode = std::fs::metadata(root.path().join(d))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{d}");
        }
        std::fs::set_permissions(
            root.path().join("checkpoints"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        rt.block_on(private_dirs(root.path(), &dir))
            .expect("dirs again");
        let mode = std::fs::metadata(root.path().join("checkpoints"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "an existing folder is made private");
        std::fs::write(dir.join("a.img"), vec![0u8; 100]).expect("write");
        std::fs::create_dir(dir.join("sub")).expect("mkdir");
        std::fs::write(dir.join("sub/b.img"), vec![0u8; 20]).expect("write");
        assert_eq!(dir_size(&dir).expect("size"), 120);
    }
}
