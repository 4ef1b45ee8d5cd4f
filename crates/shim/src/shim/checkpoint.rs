//! Checkpoint and restore with CRIU, through runc: the Checkpoint call, and
//! Start of a task that Create made from a checkpoint.
//!
//! A checkpoint folder holds CRIU's images, runc's `descriptors.json` and
//! the shim's [`RECORD_FILE`] (what the dump was allowed to handle, which
//! the restore must be allowed too). A restored task keeps its journal: its
//! stdout/stderr are new pipes of this shim, the drains append after what
//! the journal holds, and the forwarders send only what comes after it.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use containerd_shim_protos::events::task::{TaskCheckpointed, TaskStart};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::CheckpointOptions;

use super::{launch, TaskShim, INIT_OUTPUT_GRACE};
use crate::container::{Container, Restore};
use crate::error::{Error, Result};
use crate::process::{Process, Status};
use crate::publisher::Event;
use crate::runc::{CriuFlags, CriuPaths};

/// The type of containerd's runc checkpoint options, which the shim takes
/// (`ctr` sends none for other runtimes; the manager sends these).
pub const CHECKPOINT_OPTIONS_TYPE: &str = "containerd.runc.v1.CheckpointOptions";
/// The shim's record in a checkpoint folder: the [`CriuFlags`] of the dump.
pub const RECORD_FILE: &str = "holdfast-checkpoint.json";
/// A file every CRIU image folder holds.
const INVENTORY: &str = "inventory.img";
/// CRIU's work folder in the bundle, unless the request names one.
const WORK_DIR: &str = "criu-work";
/// Values runc takes for `--manage-cgroups-mode`.
const CGROUPS_MODES: [&str; 3] = ["soft", "full", "strict"];
/// Namespaces CRIU can restore empty (`--empty-ns`).
const EMPTY_NAMESPACES: [&str; 1] = ["network"];

/// A Checkpoint request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRequest {
    /// Where the images go: the options' `image_path`, else containerd's
    /// path (a temporary folder it then stores in its content store).
    pub image: PathBuf,
    /// CRIU's work folder when the caller named one (kept); else a folder
    /// in the bundle, removed after a successful dump.
    pub work: Option<PathBuf>,
    /// Stop the task after the dump (else it goes on running).
    pub exit: bool,
    /// What CRIU may handle.
    pub flags: CriuFlags,
}

fn absolute(what: &str, path: &str) -> Result<PathBuf> {
    let p = PathBuf::from(path);
    if !p.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "{what} {path:?} must be an absolute path"
        )));
    }
    if p.components().any(|c| c == std::path::Component::ParentDir) {
        return Err(Error::InvalidArgument(format!(
            "{what} {path:?} must not contain \"..\""
        )));
    }
    Ok(p)
}

impl CheckpointRequest {
    /// From containerd's `CheckpointTaskRequest`: `path` and `options`
    /// (none, or containerd's runc `CheckpointOptions`).
    pub fn new(id: &str, path: &str, options: Option<&Any>) -> Result<Self> {
        let opts = match options.filter(|a| !a.type_url.is_empty()) {
            None => CheckpointOptions::default(),
            Some(any) => {
                let name = any.type_url.rsplit('/').next().unwrap_or(&any.type_url);
                if name != CHECKPOINT_OPTIONS_TYPE {
                    return Err(Error::InvalidArgument(format!(
                        "checkpoint options of task {id}: unknown type {name:?}, expected {CHECKPOINT_OPTIONS_TYPE}"
                    )));
                }
                CheckpointOptions::parse_from_bytes(&any.value).map_err(|e| {
                    Error::InvalidArgument(format!("checkpoint options of task {id}: {e}"))
                })?
            }
        };
        let image = if !opts.image_path.is_empty() {
            absolute("checkpoint image_path", &opts.image_path)?
        } else if !path.is_empty() {
            absolute("checkpoint path", path)?
        } else {
            return Err(Error::InvalidArgument(format!(
                "checkpoint of task {id}: no path and no image_path to write the images to"
            )));
        };
        let work = match opts.work_path.as_str() {
            "" => None,
            w => Some(absolute("checkpoint work_path", w)?),
        };
        let cgroups_mode = match opts.cgroups_mode.as_str() {
            "" => None,
            m if CGROUPS_MODES.contains(&m) => Some(m.to_string()),
            m => {
                return Err(Error::InvalidArgument(format!(
                    "checkpoint cgroups_mode {m:?}: expected one of {CGROUPS_MODES:?}"
                )))
            }
        };
        if let Some(ns) = opts
            .empty_namespaces
            .iter()
            .find(|ns| !EMPTY_NAMESPACES.contains(&ns.as_str()))
        {
            return Err(Error::InvalidArgument(format!(
                "checkpoint empty_namespaces: {ns:?} cannot be restored empty (only {EMPTY_NAMESPACES:?})"
            )));
        }
        Ok(CheckpointRequest {
            image,
            work,
            exit: opts.exit,
            flags: CriuFlags {
                tcp_established: opts.open_tcp,
                ext_unix_sk: opts.external_unix_sockets,
                shell_job: opts.terminal,
                file_locks: opts.file_locks,
                cgroups_mode,
                empty_ns: opts.empty_namespaces.clone(),
            },
        })
    }
}

impl Restore {
    /// Checks the checkpoint of a Create request: an absolute folder of
    /// CRIU images. `None` when the request carries none. A folder that
    /// does not exist is NotFound; one that holds no CRIU images is an
    /// invalid argument.
    pub fn from_request(id: &str, checkpoint: &str, parent: &str) -> Result<Option<Restore>> {
        if checkpoint.is_empty() {
            return Ok(None);
        }
        if !parent.is_empty() {
            return Err(Error::Unimplemented(format!(
                "task {id}: restoring on top of a parent checkpoint (pre-dump) is not supported"
            )));
        }
        let image = absolute("checkpoint", checkpoint)?;
        match std::fs::metadata(&image) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::InvalidArgument(format!(
                    "checkpoint {} of task {id} is not a folder",
                    image.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!(
                    "checkpoint {} of task {id} does not exist",
                    image.display()
                )))
            }
            Err(e) => {
                return Err(Error::io(
                    format!("checkpoint {} of task {id}", image.display()),
                    e,
                ))
            }
        }
        if !image.join(INVENTORY).is_file() {
            return Err(Error::InvalidArgument(format!(
                "checkpoint {} of task {id} holds no CRIU images (no {INVENTORY})",
                image.display()
            )));
        }
        let flags = read_record(&image)?;
        Ok(Some(Restore { image, flags }))
    }
}

/// The flags recorded with a checkpoint; the defaults for a checkpoint the
/// shim did not make (e.g. `runc checkpoint` by hand).
fn read_record(image: &Path) -> Result<CriuFlags> {
    let path = image.join(RECORD_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Error::InvalidArgument(format!("checkpoint record {}: {e}", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CriuFlags::default()),
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}

fn write_record(image: &Path, flags: &CriuFlags) -> Result<()> {
    let path = image.join(RECORD_FILE);
    let json = serde_json::to_vec(flags)
        .map_err(|e| Error::Other(format!("encode checkpoint record: {e}")))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    std::io::Write::write_all(&mut f, &json)
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

/// Creates `dir` (and its parents) if it is missing, and makes it
/// accessible to root only (also when it existed): checkpoint images hold
/// the container's memory. Whether it was created.
fn private_dir(dir: &Path) -> Result<bool> {
    let created = !dir.exists();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("chmod 0700 {}", dir.display()), e))?;
    Ok(created)
}

/// Makes what CRIU wrote in `dir` unreadable to others: files 0600,
/// folders 0700 (CRIU creates its images world-readable). Symlinks are
/// left alone, never followed.
fn restrict_images(dir: &Path) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
        let mode = if kind.is_dir() {
            restrict_images(&path)?;
            0o700
        } else if kind.is_file() {
            0o600
        } else {
            continue;
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(format!("chmod {mode:o} {}", path.display()), e))?;
    }
    Ok(())
}

/// A fresh CRIU work folder in the bundle (the last run's logs go).
fn fresh_work_dir(bundle: &Path) -> Result<PathBuf> {
    let work = bundle.join(WORK_DIR);
    match std::fs::remove_dir_all(&work) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("clear {}", work.display()), e)),
    }
    private_dir(&work)?;
    Ok(work)
}

impl TaskShim {
    /// Checkpoint: CRIU dumps the running (or paused) task into the
    /// request's image folder; with `exit` the task then stops (its exit is
    /// published as usual), else it goes on. Publishes TaskCheckpointed.
    pub async fn checkpoint(&self, id: &str, req: CheckpointRequest) -> Result<()> {
        let c = self.container(id)?;
        // Held by Start too, and by the exit watcher before it publishes: a
        // task stopped by the dump has its exit published after the
        // checkpoint event.
        let _lock = c.init.start_lock.lock().await;
        match c.init.status() {
            Status::Running | Status::Paused => {}
            other => {
                return Err(Error::FailedPrecondition(format!(
                    "cannot checkpoint task {id}: it is {other:?}, not running"
                )))
            }
        }
        let criu = c.runc.criu();
        if !criu.is_file() {
            return Err(Error::FailedPrecondition(format!(
                "cannot checkpoint task {id}: CRIU is not installed at {} (make setup builds it)",
                criu.display()
            )));
        }
        let created = private_dir(&req.image)?;
        let began = Instant::now();
        let dumped = async {
            let work = match &req.work {
                Some(w) => {
                    private_dir(w)?;
                    w.clone()
                }
                None => fresh_work_dir(&c.bundle)?,
            };
            let paths = CriuPaths {
                image: req.image.clone(),
                work,
            };
            c.runc.checkpoint(id, &paths, &req.flags, !req.exit).await?;
            if req.work.is_none() {
                let _ = std::fs::remove_dir_all(&paths.work);
            }
            write_record(&req.image, &req.flags)?;
            restrict_images(&req.image)
        }
        .await;
        if let Err(e) = dumped {
            // A failed dump leaves no half-written image folder it made (a
            // work folder in the bundle keeps CRIU's log for diagnosis).
            if created {
                let _ = std::fs::remove_dir_all(&req.image);
            }
            return Err(e);
        }
        self.events.publish(Event::Checkpointed(TaskCheckpointed {
            container_id: id.to_string(),
            checkpoint: req.image.display().to_string(),
            ..Default::default()
        }));
        tracing::info!(id, image = %req.image.display(), exit = req.exit,
            took_ms = began.elapsed().as_millis() as u64, "task checkpointed");
        Ok(())
    }

    /// Start of a task created from a checkpoint: `runc restore` with the
    /// stdio Create prepared, then the same bookkeeping as a started task.
    pub(super) async fn start_restored(
        self: &Arc<Self>,
        c: &Arc<Container>,
        p: &Arc<Process>,
        restore: Restore,
    ) -> Result<u32> {
        let pid_file = c.bundle.join("init.pid");
        let work = match fresh_work_dir(&c.bundle) {
            Ok(w) => w,
            Err(e) => {
                // Nothing was tried: a later Start may try again.
                c.set_restore(restore);
                return Err(e);
            }
        };
        let paths = CriuPaths {
            image: restore.image.clone(),
            work,
        };
        let began = Instant::now();
        let pid = launch(&p.io, &pid_file, |opts| {
            c.runc
                .restore(&c.id, &c.bundle, &paths, &restore.flags, opts)
        })
        .await?;
        let _ = std::fs::remove_dir_all(&paths.work);
        p.set_pid(pid);
        let exited = self.reaper.subscribe(pid as i32);
        p.set_status(Status::Running);
        self.events.publish(Event::Start(TaskStart {
            container_id: c.id.clone(),
            pid,
            ..Default::default()
        }));
        self.watch_exit(p.clone(), exited, INIT_OUTPUT_GRACE);
        self.watch_oom(c);
        tracing::info!(id = %c.id, pid, image = %restore.image.display(),
            took_ms = began.elapsed().as_millis() as u64, "task restored from checkpoint");
        Ok(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(o: &CheckpointOptions) -> Any {
        Any {
            type_url: CHECKPOINT_OPTIONS_TYPE.into(),
            value: o.write_to_bytes().unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn containerds_path_is_used_without_options() {
        let r = CheckpointRequest::new("c1", "/tmp/ctd-checkpoint1", None).unwrap();
        assert_eq!(r.image, Path::new("/tmp/ctd-checkpoint1"));
        assert!(!r.exit);
        assert_eq!(r.work, None);
        assert_eq!(r.flags, CriuFlags::default());
    }

    #[test]
    fn runc_checkpoint_options_are_honoured() {
        let o = CheckpointOptions {
            exit: true,
            open_tcp: true,
            file_locks: true,
            image_path: "/var/lib/x/img".into(),
            work_path: "/var/lib/x/work".into(),
            cgroups_mode: "full".into(),
            empty_namespaces: vec!["network".into()],
            ..Default::default()
        };
        let mut any = options(&o);
        any.type_url = format!("types.googleapis.com/{CHECKPOINT_OPTIONS_TYPE}");
        let r = CheckpointRequest::new("c1", "/tmp/ignored", Some(&any)).unwrap();
        assert_eq!(r.image, Path::new("/var/lib/x/img"));
        assert_eq!(r.work.as_deref(), Some(Path::new("/var/lib/x/work")));
        assert!(r.exit);
        assert!(r.flags.tcp_established && r.flags.file_locks);
        assert!(!r.flags.ext_unix_sk && !r.flags.shell_job);
        assert_eq!(r.flags.cgroups_mode.as_deref(), Some("full"));
        assert_eq!(r.flags.empty_ns, ["network"]);
    }

    #[test]
    fn bad_checkpoint_requests_are_invalid_arguments_naming_the_field() {
        let cases = [
            (
                CheckpointOptions {
                    image_path: "rel/img".into(),
                    ..Default::default()
                },
                "image_path",
            ),
            (
                CheckpointOptions {
                    work_path: "work".into(),
                    ..Default::default()
                },
                "work_path",
            ),
            (
                CheckpointOptions {
                    cgroups_mode: "loose".into(),
                    ..Default::default()
                },
                "cgroups_mode",
            ),
            (
                CheckpointOptions {
                    empty_namespaces: vec!["pid".into()],
                    ..Default::default()
                },
                "empty_namespaces",
            ),
        ];
        for (o, needle) in cases {
            let err = CheckpointRequest::new("c1", "/tmp/p", Some(&options(&o))).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
            assert!(err.to_string().contains(needle), "{err}");
        }
        let wrong = Any {
            type_url: "containerd.runc.v1.Options".into(),
            ..Default::default()
        };
        let err = CheckpointRequest::new("c1", "/tmp/p", Some(&wrong)).unwrap_err();
        assert!(err.to_string().contains("unknown type"), "{err}");
        let garbage = Any {
            type_url: CHECKPOINT_OPTIONS_TYPE.into(),
            value: vec![0xff, 0xff, 0xff],
            ..Default::default()
        };
        assert!(matches!(
            CheckpointRequest::new("c1", "/tmp/p", Some(&garbage)),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            CheckpointRequest::new("c1", "", None),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            CheckpointRequest::new("c1", "relative", None),
            Err(Error::InvalidArgument(_))
        ));
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn image_folders_and_files_are_private_to_root() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("a/img");
        assert!(private_dir(&image).unwrap(), "created");
        assert_eq!(mode(&image), 0o700);
        std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(!private_dir(&image).unwrap(), "existed");
        assert_eq!(
            mode(&image),
            0o700,
            "an existing folder is made private too"
        );
        std::fs::write(image.join("pages-1.img"), b"memory").unwrap();
        std::fs::create_dir(image.join("sub")).unwrap();
        std::fs::write(image.join("sub/x.img"), b"x").unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"o").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, image.join("link")).unwrap();
        for f in ["pages-1.img", "sub/x.img"] {
            std::fs::set_permissions(image.join(f), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
        restrict_images(&image).unwrap();
        assert_eq!(mode(&image.join("pages-1.img")), 0o600);
        assert_eq!(mode(&image.join("sub")), 0o700);
        assert_eq!(mode(&image.join("sub/x.img")), 0o600);
        assert_eq!(mode(&outside), 0o644, "a symlink's target is not touched");
    }

    #[test]
    fn a_restore_needs_an_existing_folder_of_criu_images() {
        assert_eq!(Restore::from_request("c1", "", "").unwrap(), None);
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = Restore::from_request("c1", missing.to_str().unwrap(), "").unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err}");
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
        let err = Restore::from_request("c1", dir.path().to_str().unwrap(), "").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains(INVENTORY), "{err}");
        assert!(matches!(
            Restore::from_request("c1", "relative/dir", ""),
            Err(Error::InvalidArgument(_))
        ));
        let dotted = dir.path().join("sub/..");
        assert!(matches!(
            Restore::from_request("c1", dotted.to_str().unwrap(), ""),
            Err(Error::InvalidArgument(_))
        ));
        std::fs::write(dir.path().join(INVENTORY), b"x").unwrap();
        assert!(matches!(
            Restore::from_request("c1", dir.path().to_str().unwrap(), "/parent"),
            Err(Error::Unimplemented(_))
        ));
        let plain = Restore::from_request("c1", dir.path().to_str().unwrap(), "")
            .unwrap()
            .unwrap();
        assert_eq!(plain.flags, CriuFlags::default(), "no record: defaults");
        let flags = CriuFlags {
            tcp_established: true,
            file_locks: true,
            ..Default::default()
        };
        write_record(dir.path(), &flags).unwrap();
        let recorded = Restore::from_request("c1", dir.path().to_str().unwrap(), "")
            .unwrap()
            .unwrap();
        assert_eq!(recorded.flags, flags);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(RECORD_FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
