//! Export of a checkpoint as one archive (holdfast-archive), and import of
//! such an archive as a new container with that checkpoint.
//!
//! - **Export** writes the checkpoint's CRIU images, the container's rootfs
//!   changes (for an image: its overlayfs snapshot's upper folder; a
//!   rootfs-folder container has none, its folder must exist on the target)
//!   and its declared config ([`crate::declared`]) into a byte stream of
//!   [`ExportChunk`]s, on a blocking thread that holds the container's lock
//!   until the archive is written.
//! - **Import** extracts the archive into `<root>/imports/` (0700), where
//!   holdfast-archive validates all of it before anything else happens;
//!   then it creates the container from the declared config (without a
//!   task), applies the rootfs changes to its new snapshot, moves the
//!   images to `<root>/checkpoints/<name>/<checkpoint>/` and records the
//!   checkpoint. Any failure undoes what was made: no record, containerd
//!   container, snapshot or file is left.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use holdfast_api::v1::{Checkpoint, Container};
use holdfast_archive::{Export, ExportSpec, ImportOptions, CRIU_DIR, ROOTFS_DIFF_DIR};
use tokio::sync::mpsc;
use tracing::{info, info_span, warn, Instrument};

use super::checkpoint::{checkpoint_not_found, describe, private_dirs, INVENTORY};
use super::{remove_dir_if_any, Manager};
use crate::declared::{CheckpointFlags, Declared, Spec};
use crate::error::{Error, Result};
use crate::rootfs_changes;
use crate::validate::{check_abs_path, validate_checkpoint_name, validate_name, validate_spec};

/// The folder of imports being extracted, under holdfastd's root.
pub const IMPORTS_DIR: &str = "imports";
/// Bytes of archive per [`ExportChunk`] (gRPC's message limit is 4 MiB).
const CHUNK_BYTES: usize = 256 << 10;

/// One piece of an export's archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportChunk {
    /// The next bytes of the archive.
    pub data: Vec<u8>,
    /// File content bytes written so far (uncompressed), for progress.
    pub done: u64,
    /// File content bytes of the whole archive.
    pub total: u64,
}

/// The archive of an export, as it is written.
pub type ExportStream = tokio_stream::wrappers::ReceiverStream<Result<ExportChunk>>;

/// What [`Manager::import`] makes of an archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportRequest {
    /// The new container's name (empty: the archive's).
    pub name: String,
    /// For a rootfs-folder container: the folder on this host (empty: the
    /// archive's path).
    pub rootfs: String,
}

/// The bytes of an archive being imported: each item the next bytes, or
/// the error that ended the sender's stream.
pub type ImportData = mpsc::Receiver<std::io::Result<Vec<u8>>>;

/// A `Write` that sends what it is given as [`ExportChunk`]s.
struct ChunkWriter {
    tx: mpsc::Sender<Result<ExportChunk>>,
    buf: Vec<u8>,
    done: Arc<AtomicU64>,
    total: u64,
    sent: u64,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
        self.sent += data.len() as u64;
        let chunk = ExportChunk {
            data,
            done: self.done.load(Ordering::Relaxed),
            total: self.total,
        };
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the export's reader went away",
            )
        })
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A blocking `Read` over [`ImportData`].
struct ChannelReader {
    rx: ImportData,
    buf: Vec<u8>,
    pos: usize,
    read: u64,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(Ok(data)) => {
                    self.buf = data;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        self.read += n as u64;
        Ok(n)
    }
}

impl Manager {
    /// Writes checkpoint `checkpoint` of `container` as an archive; the
    /// stream ends after the last chunk, or with the error that stopped
    /// the write. Unknown names are refused before anything is read.
    pub async fn export(&self, container: &str, checkpoint: &str) -> Result<ExportStream> {
        validate_name(container)?;
        validate_checkpoint_name(checkpoint)?;
        let guard = self.lock(container).await?;
        let span = info_span!("export", container, checkpoint);
        let export = self
            .export_spec(container, checkpoint)
            .instrument(span.clone())
            .await?;
        let export = tokio::task::spawn_blocking(move || Export::scan(export))
            .await
            .map_err(|e| Error::Internal(format!("export scan task: {e}")))??;
        let total = export.total_bytes();
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            // Held until the archive is written: no rm of the checkpoint
            // or the container meanwhile.
            let _guard = guard;
            let done = Arc::new(AtomicU64::new(0));
            let out = ChunkWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK_BYTES),
                done: done.clone(),
                total,
                sent: 0,
            };
            let written = export
                .write(out, |p| done.store(p.done, Ordering::Relaxed))
                .map_err(Error::from)
                .and_then(|mut out| {
                    out.flush()
                        .map_err(|e| Error::from(holdfast_archive::ArchiveError::Output(e)))?;
                    Ok(out.sent)
                });
            match written {
                Ok(bytes) => info!(bytes, content_bytes = total, "checkpoint exported"),
                Err(e) => {
                    warn!(error = %e, "export failed");
                    let _ = tx.blocking_send(Err(e));
                }
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    /// What an export of `checkpoint` holds (the container's lock held).
    async fn export_spec(&self, container: &str, checkpoint: &str) -> Result<ExportSpec> {
        let record = self.record(container).await?;
        let cp = self
            .get_checkpoint(container, checkpoint)
            .await?
            .ok_or_else(|| checkpoint_not_found(container, checkpoint))?;
        let dir = self.checkpoint_dir(container, checkpoint);
        if !dir.join(INVENTORY).is_file() {
            return Err(Error::FailedPrecondition(format!(
                "checkpoint {checkpoint:?} of container {container:?} has no CRIU images in {}",
                dir.display()
            )));
        }
        let spec = record
            .spec
            .ok_or_else(|| Error::Internal("a loaded record has no spec".into()))?;
        let changes = if spec.image.is_empty() {
            None
        } else {
            self.containerd.rootfs_changes_dir(container).await?
        };
        let declared = Declared {
            spec: Spec::from(&spec),
            checkpoint: CheckpointFlags {
                leave_running: cp.leave_running,
                tcp_established: cp.tcp_established,
                file_locks: cp.file_locks,
            },
        };
        Ok(ExportSpec {
            container: container.to_owned(),
            checkpoint: checkpoint.to_owned(),
            config: declared.to_json()?,
            criu_dir: dir,
            rootfs_diff_dir: changes,
        })
    }

    /// Imports an archive from `data`: validates all of it, then creates
    /// the container (not started) and its checkpoint. A bad archive or a
    /// failure on the way leaves nothing behind.
    pub async fn import(
        &self,
        req: ImportRequest,
        data: ImportData,
    ) -> Result<(Container, Checkpoint)> {
        if !req.name.is_empty() {
            validate_name(&req.name)?;
            if self.get(&req.name).await?.is_some() {
                return Err(Error::AlreadyExists {
                    what: format!("container {:?}", req.name),
                });
            }
        }
        if !req.rootfs.is_empty() {
            check_abs_path("rootfs", &req.rootfs)?;
        }
        let imports = self.config.root.join(IMPORTS_DIR);
        private_dirs(&self.config.root, &imports).await?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let dest = imports.join(format!("import-{}-{stamp}", std::process::id()));
        let span = info_span!("import", staging = %dest.display());
        let result = async {
            let extracted = {
                let dest = dest.clone();
                tokio::task::spawn_blocking(move || {
                    let mut reader = ChannelReader {
                        rx: data,
                        buf: Vec::new(),
                        pos: 0,
                        read: 0,
                    };
                    let manifest =
                        holdfast_archive::import(&mut reader, &dest, &ImportOptions::default())?;
                    Ok::<_, Error>((manifest, reader.read))
                })
                .await
                .map_err(|e| Error::Internal(format!("import task: {e}")))?
            };
            let (manifest, bytes) = extracted.inspect_err(|e| warn!(error = %e, "archive refused"))?;
            info!(bytes, container = %manifest.container, checkpoint = %manifest.checkpoint, "archive validated");
            self.import_extracted(&req, manifest, &dest).await
        }
        .instrument(span)
        .await;
        remove_dir_if_any(&dest).await;
        result
    }

    /// Makes the container and its checkpoint from a validated archive
    /// extracted into `dir`.
    async fn import_extracted(
        &self,
        req: &ImportRequest,
        manifest: holdfast_archive::Manifest,
        dir: &Path,
    ) -> Result<(Container, Checkpoint)> {
        let declared = Declared::from_json(manifest.config)?;
        let name = if req.name.is_empty() {
            manifest.container.clone()
        } else {
            req.name.clone()
        };
        validate_name(&name)?;
        let checkpoint = manifest.checkpoint.clone();
        validate_checkpoint_name(&checkpoint)?;
        let mut spec = declared.spec.to_container_spec()?;
        spec.name = name.clone();
        let changes = dir.join(ROOTFS_DIFF_DIR);
        let has_changes = changes.is_dir();
        if spec.image.is_empty() {
            if has_changes {
                return Err(Error::invalid(
                    "archive",
                    "it has rootfs changes, but its container uses a rootfs folder",
                ));
            }
            if !req.rootfs.is_empty() {
                spec.rootfs = req.rootfs.clone();
            }
        } else if !req.rootfs.is_empty() {
            return Err(Error::invalid(
                "rootfs",
                format!("the archive's container uses the image {:?}", spec.image),
            ));
        }
        validate_spec(&spec)?;
        let _guard = self.lock(&name).await?;
        let record = self.create_locked(spec, false).await?;
        let made = async {
            if has_changes {
                self.apply_rootfs_changes(&name, &changes).await?;
            }
            self.adopt_images(&name, &checkpoint, &dir.join(CRIU_DIR), declared.checkpoint)
                .await
        }
        .await;
        match made {
            Ok(cp) => {
                info!(container = %name, checkpoint = %checkpoint, "container imported");
                self.event(&name, "import", 0, &checkpoint);
                Ok((record, cp))
            }
            Err(e) => {
                warn!(container = %name, error = %e, "import failed; removing what it made");
                if let Err(e2) = self.remove_locked(&name, true).await {
                    warn!(container = %name, error = %e2, "undo import");
                }
                Err(e)
            }
        }
    }

    /// Applies an archive's rootfs changes to the new snapshot of `name`.
    async fn apply_rootfs_changes(&self, name: &str, changes: &Path) -> Result<()> {
        let upper = self
            .containerd
            .rootfs_changes_dir(name)
            .await?
            .ok_or_else(|| Error::Internal(format!("container {name:?} has no snapshot")))?;
        let applied = {
            let (changes, to) = (changes.to_path_buf(), upper.clone());
            tokio::task::spawn_blocking(move || rootfs_changes::apply(&changes, &to))
                .await
                .map_err(|e| Error::Internal(format!("apply task: {e}")))?
                .map_err(|e| Error::io("apply rootfs changes to", upper, e))?
        };
        info!(
            container = name,
            entries = applied.entries,
            whiteouts = applied.whiteouts,
            "rootfs changes applied"
        );
        Ok(())
    }

    /// Moves imported CRIU images to checkpoint `checkpoint` of `name` and
    /// records it.
    async fn adopt_images(
        &self,
        name: &str,
        checkpoint: &str,
        images: &Path,
        flags: CheckpointFlags,
    ) -> Result<Checkpoint> {
        let target = self.checkpoint_dir(name, checkpoint);
        let parent: PathBuf = target
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| Error::Internal("a checkpoint folder has no parent".into()))?;
        private_dirs(&self.config.root, &parent).await?;
        // A folder left by a container of this name that is gone.
        remove_dir_if_any(&target).await;
        tokio::fs::rename(images, &target)
            .await
            .map_err(|e| Error::io("move imported images to", &target, e))?;
        let cp = describe(name, checkpoint, &target, &flags).await?;
        let record = cp.clone();
        self.store(move |s| s.put_checkpoint(&record)).await?;
        Ok(cp)
    }
}
