//! A container managed by the shim: its bundle, rootfs mounts, init process
//! and exec processes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use containerd_shim_protos::types::mount::Mount;
use holdfast_journal::Journal;
use oci_spec::runtime::Spec;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::process::Process;
use crate::runc::{CriuFlags, Runc};

/// A checkpoint a created task is restored from when it is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    /// The folder of CRIU images.
    pub image: PathBuf,
    /// What the dump handled (the restore must handle the same).
    pub flags: CriuFlags,
}

/// A container: one init process and any number of exec processes.
#[derive(Debug)]
pub struct Container {
    /// containerd's id for it.
    pub id: String,
    /// Its OCI bundle folder.
    pub bundle: PathBuf,
    /// runc bound to this container's namespace and bundle.
    pub runc: Runc,
    /// The init process.
    pub init: Arc<Process>,
    /// Whether the shim mounted `bundle/rootfs` (and so must unmount it).
    pub mounted_rootfs: bool,
    /// The log journal of every process of the container.
    pub journal: Journal,
    /// Keep the journal after Delete (runtime option).
    pub keep_journal: bool,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    oom: Mutex<Option<JoinHandle<()>>>,
    restore: Mutex<Option<Restore>>,
}

impl Container {
    /// A container whose init process runc has not created yet.
    pub fn new(
        id: &str,
        bundle: &Path,
        runc: Runc,
        init: Arc<Process>,
        mounted: bool,
        journal: Journal,
        keep_journal: bool,
    ) -> Self {
        Container {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            runc,
            init,
            mounted_rootfs: mounted,
            journal,
            keep_journal,
            execs: Mutex::new(HashMap::new()),
            oom: Mutex::new(None),
            restore: Mutex::new(None),
        }
    }

    /// Makes Start restore the init process from `restore` instead of
    /// starting a created one.
    pub fn set_restore(&self, restore: Restore) {
        *self.restore.lock().unwrap_or_else(|p| p.into_inner()) = Some(restore);
    }

    /// The checkpoint Start must restore from, once.
    pub fn take_restore(&self) -> Option<Restore> {
        self.restore
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn execs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Process>>> {
        self.execs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The process named by `exec_id` ("" for init).
    pub fn process(&self, exec_id: &str) -> Result<Arc<Process>> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        self.execs().get(exec_id).cloned().ok_or_else(|| {
            Error::NotFound(format!(
                "exec process {exec_id:?} does not exist in task {}",
                self.id
            ))
        })
    }

    /// Adds an exec process; fails if the id is taken.
    pub fn add_exec(&self, process: Arc<Process>) -> Result<()> {
        let mut execs = self.execs();
        if execs.contains_key(&process.exec_id) {
            return Err(Error::AlreadyExists(format!(
                "exec process {:?} already exists in task {}",
                process.exec_id, self.id
            )));
        }
        execs.insert(process.exec_id.clone(), process);
        Ok(())
    }

    /// Removes an exec process.
    pub fn remove_exec(&self, exec_id: &str) -> Option<Arc<Process>> {
        self.execs().remove(exec_id)
    }

    /// Every exec process.
    pub fn exec_processes(&self) -> Vec<Arc<Process>> {
        self.execs().values().cloned().collect()
    }

    /// Keeps the OOM watcher so Delete can stop it.
    pub fn set_oom_watcher(&self, handle: JoinHandle<()>) {
        *self.oom.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    }

    /// Stops the OOM watcher.
    pub fn stop_oom_watcher(&self) {
        if let Some(h) = self.oom.lock().unwrap_or_else(|p| p.into_inner()).take() {
            h.abort();
        }
    }
}

/// Reads and checks the bundle's `config.json`.
pub fn load_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    if !path.exists() {
        return Err(Error::NotFound(format!(
            "bundle {} has no config.json",
            bundle.display()
        )));
    }
    let spec = Spec::load(&path).map_err(|e| {
        Error::InvalidArgument(format!(
            "invalid config.json in bundle {}: {e}",
            bundle.display()
        ))
    })?;
    check_spec(&spec).map_err(|what| {
        Error::InvalidArgument(format!(
            "invalid config.json in bundle {}: {what}",
            bundle.display()
        ))
    })?;
    Ok(spec)
}

/// What runc would refuse anyway, checked up front so the error names the
/// field (and is InvalidArgument, not runc's "unknown").
fn check_spec(spec: &Spec) -> std::result::Result<(), String> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| "no process section".to_string())?;
    if !process.cwd().is_absolute() {
        return Err(format!(
            "process.cwd {:?} must be an absolute path",
            process.cwd()
        ));
    }
    match process.args() {
        Some(args) if !args.is_empty() && !args[0].is_empty() => {}
        _ => return Err("process.args is empty: there is nothing to run".into()),
    }
    if spec.root().is_none() {
        return Err("no root section".into());
    }
    Ok(())
}

/// The rootfs folder the spec names, resolved against the bundle.
pub fn rootfs_path(bundle: &Path, spec: &Spec) -> Result<PathBuf> {
    let root = spec.root().as_ref().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "config.json in bundle {} has no root",
            bundle.display()
        ))
    })?;
    let path = root.path();
    Ok(if path.is_absolute() {
        path.clone()
    } else {
        bundle.join(path)
    })
}

/// Mounts the rootfs mounts containerd sent onto `bundle/rootfs`.
pub fn mount_rootfs(bundle: &Path, mounts: &[Mount]) -> Result<bool> {
    if mounts.is_empty() {
        return Ok(false);
    }
    let target = bundle.join("rootfs");
    std::fs::create_dir_all(&target)
        .map_err(|e| Error::io(format!("create {}", target.display()), e))?;
    for m in mounts {
        let res = containerd_shim::mount::mount_rootfs(
            Some(m.type_.as_str()).filter(|t| !t.is_empty()),
            Some(m.source.as_str()).filter(|s| !s.is_empty()),
            &m.options,
            &target,
        );
        if let Err(e) = res {
            unmount_rootfs(bundle);
            return Err(Error::Other(format!(
                "mount {} ({}) on {}: {e}",
                m.source,
                m.type_,
                target.display()
            )));
        }
    }
    Ok(true)
}

/// Unmounts everything under `bundle/rootfs`.
pub fn unmount_rootfs(bundle: &Path) {
    let target = bundle.join("rootfs");
    if let Some(t) = target.to_str() {
        if let Err(e) = containerd_shim::mount::umount_recursive(Some(t), libc::MNT_DETACH) {
            tracing::warn!(rootfs = %target.display(), error = %e, "unmount rootfs failed");
        }
    }
}

/// Removes a process's journal folder (or the task's, for `None`), on the
/// blocking pool: deleting hundreds of megabytes of segments (and waiting
/// for the journal's background fsyncs) must not stall the task service.
pub async fn remove_journal(journal: &Journal, process: Option<&str>) {
    let journal = journal.clone();
    let process = process.map(str::to_owned);
    let removal =
        tokio::task::spawn_blocking(move || remove_journal_now(&journal, process.as_deref()));
    if let Err(e) = removal.await {
        tracing::warn!(error = %e, "journal removal did not finish");
    }
}

/// [`remove_journal`], on the calling thread.
pub fn remove_journal_now(journal: &Journal, process: Option<&str>) {
    let dir = match process {
        Some(p) => journal.dir().join(p),
        None => journal.dir().to_path_buf(),
    };
    // Deletions and fsyncs still running in the background must not race
    // the removal of their folder.
    if !journal.wait_idle(std::time::Duration::from_secs(5)) {
        tracing::warn!(dir = %dir.display(), "journal work still running; removing its folder anyway");
    }
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove log journal");
        }
    }
    if process.is_none() {
        // The namespace folder goes with its last task (fails while not empty).
        if let Some(ns_dir) = dir.parent() {
            let _ = std::fs::remove_dir(ns_dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_with(config: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        dir
    }

    const GOOD: &str = r#"{"ociVersion":"1.0.2","process":{"cwd":"/","args":["/bin/true"],"user":{"uid":0,"gid":0}},"root":{"path":"rootfs"}}"#;

    #[test]
    fn a_sound_spec_loads() {
        let b = bundle_with(GOOD);
        let spec = load_spec(b.path()).unwrap();
        assert_eq!(
            rootfs_path(b.path(), &spec).unwrap(),
            b.path().join("rootfs")
        );
    }

    #[test]
    fn bad_specs_are_invalid_arguments_naming_the_field() {
        for (config, needle) in [
            (
                GOOD.replace(r#""cwd":"/""#, r#""cwd":"tmp""#),
                "process.cwd",
            ),
            (
                GOOD.replace(r#""args":["/bin/true"]"#, r#""args":[]"#),
                "process.args",
            ),
            ("{not json".to_string(), "config.json"),
        ] {
            let b = bundle_with(&config);
            let err = load_spec(b.path()).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
            assert!(err.to_string().contains(needle), "{err}");
        }
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(load_spec(empty.path()), Err(Error::NotFound(_))));
    }
}
