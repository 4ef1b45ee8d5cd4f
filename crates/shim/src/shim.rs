//! The task lifecycle, independent of the wire: what each task API call does
//! to containers and processes. [`crate::service`] adapts it to ttrpc.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::types::mount::Mount;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxResources, Process as ProcessSpec};
use tokio::sync::{oneshot, Notify};

use crate::container::{self, Container, Restore};
use crate::cri::{self, CriLogFile};
use crate::error::{Error, Result};
use crate::io::{IoContext, ProcessIo, Sink, StdioPaths};
use crate::options::{CriLog, ShimOptions};
use crate::process::{Process, Status};
use crate::publisher::{timestamp, Event, EventSink};
use crate::reaper::{Exit, Reaper};
use crate::runc::{LaunchOpts, Runc, RUNC_ROOT};
use crate::{oom, stats, validate};
use holdfast_journal::Journal;

mod checkpoint;
pub use checkpoint::{CheckpointRequest, CHECKPOINT_OPTIONS_TYPE, RECORD_FILE};

/// How long an init's output may stay open after it exited (its pid
/// namespace is gone, so only a shared namespace keeps it open).
const INIT_OUTPUT_GRACE: Duration = Duration::from_secs(5);
/// How long an exec's output may stay open after it exited (a background
/// child of the exec may hold it).
const EXEC_OUTPUT_GRACE: Duration = Duration::from_secs(2);
/// How long Delete lets forwarders finish writing to their sinks.
const SINK_GRACE: Duration = Duration::from_secs(2);
/// The journal's name for a task's own (init) process.
pub const INIT_PROCESS: &str = "init";
/// How long a shim with no task left waits for containerd's Shutdown.
const FORGOTTEN_EXIT_AFTER: Duration = Duration::from_secs(60);

/// What Create needs.
#[derive(Debug, Default)]
pub struct CreateTask {
    /// Container id.
    pub id: String,
    /// Bundle folder.
    pub bundle: PathBuf,
    /// Rootfs mounts to set up on `bundle/rootfs`.
    pub rootfs: Vec<Mount>,
    /// Stdio.
    pub stdio: StdioPaths,
    /// Runtime options (`holdfast.shim.v1.Options` or CRI's).
    pub options: Option<Any>,
    /// A folder of CRIU images to restore the task from at Start ("" for
    /// none).
    pub checkpoint: String,
    /// The parent of `checkpoint` (pre-dump; unsupported).
    pub parent_checkpoint: String,
}

/// The answer to State.
#[derive(Debug, Clone)]
pub struct ProcessState {
    /// Host pid.
    pub pid: u32,
    /// Lifecycle status.
    pub status: Status,
    /// Stdio as given.
    pub stdio: StdioPaths,
    /// Exit, once exited.
    pub exit: Option<Exit>,
    /// The container's bundle.
    pub bundle: PathBuf,
}

/// Everything the shim serves.
pub struct TaskShim {
    namespace: String,
    runc_binary: String,
    reaper: Reaper,
    events: Arc<dyn EventSink>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    shutdown: Arc<Notify>,
    /// The task socket's file, unlinked as soon as shutdown begins.
    socket: Option<SocketFile>,
    /// containerd's gRPC socket (asked for CRI containers' log paths).
    containerd_address: String,
}

/// The task socket's path and the identity (device, inode, change time)
/// of the file this shim's `start` bound there. Only that file is ever
/// unlinked: once this shim has unlinked it, a shim started for the same
/// id binds a new socket at the same path, and this one must not take it
/// away (containerd's dial then fails with "no such file or directory").
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    identity: Option<(u64, u64, i64, i64)>,
}

impl SocketFile {
    fn new(path: PathBuf) -> Self {
        let identity = file_identity(&path);
        SocketFile { path, identity }
    }

    /// Unlinks the file if it is still the one this shim was given.
    fn unlink_if_ours(&self) {
        if self.identity.is_none() || file_identity(&self.path) != self.identity {
            return;
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "remove task socket");
            }
        }
    }
}

fn file_identity(path: &Path) -> Option<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

impl std::fmt::Debug for TaskShim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskShim")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl TaskShim {
    /// A shim for `namespace` publishing to `events`; `shutdown` is notified
    /// when the shim should exit.
    pub fn new(
        namespace: &str,
        runc_binary: &str,
        reaper: Reaper,
        events: Arc<dyn EventSink>,
        shutdown: Arc<Notify>,
    ) -> Self {
        TaskShim {
            namespace: namespace.to_string(),
            runc_binary: runc_binary.to_string(),
            reaper,
            events,
            containers: Mutex::new(HashMap::new()),
            shutdown,
            socket: None,
            containerd_address: String::new(),
        }
    }

    /// containerd's gRPC address (`-address`): Create asks it for the log
    /// file of a CRI container (see [`crate::cri`]).
    #[must_use]
    pub fn with_containerd_address(mut self, address: &str) -> Self {
        self.containerd_address = address.to_string();
        self
    }

    /// The log file the shim writes for a CRI application container, when
    /// the options leave it to the shim (`cri_log = "shim"`) and containerd
    /// gave FIFOs: CRI's log path, opened. `None` otherwise, or when the
    /// path cannot be had (containerd's CRI plugin then writes the file
    /// from the FIFOs, as with `cri_log = "containerd"`).
    async fn cri_log_file(
        &self,
        req: &CreateTask,
        spec: &oci_spec::runtime::Spec,
        options: &ShimOptions,
    ) -> Option<Arc<CriLogFile>> {
        let fifo = matches!(Sink::parse(&req.stdio.stdout), Ok(Some(Sink::Fifo(_))));
        if options.cri_log != CriLog::Shim
            || !fifo
            || self.containerd_address.is_empty()
            || !cri::is_app_container(spec.annotations().as_ref())
        {
            return None;
        }
        let path = match cri::log_path(&self.containerd_address, &self.namespace, &req.id).await {
            Ok(Some(p)) => p,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(id = %req.id, error = %e,
                    "CRI log path unknown: containerd writes the log from the FIFOs");
                return None;
            }
        };
        match CriLogFile::open(&path) {
            Ok(f) => {
                tracing::info!(id = %req.id, path = %path.display(), "the shim writes the CRI log file");
                Some(Arc::new(f))
            }
            Err(e) => {
                tracing::warn!(id = %req.id, error = %e,
                    "CRI log file cannot be opened: containerd writes it from the FIFOs");
                None
            }
        }
    }

    /// The path of the socket this shim serves on. It is unlinked the
    /// moment shutdown begins, before Shutdown is answered: a task created
    /// again under the same id right after (a restart policy) must get a
    /// new shim, not connect to this one while it drains and exits.
    #[must_use]
    pub fn with_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket = Some(SocketFile::new(path.into()));
        self
    }

    /// Unlinks the socket and wakes the serve loop.
    fn begin_shutdown(&self) {
        if let Some(socket) = &self.socket {
            socket.unlink_if_ours();
        }
        self.shutdown.notify_one();
    }

    fn containers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Container>>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The container `id`.
    pub fn container(&self, id: &str) -> Result<Arc<Container>> {
        self.containers()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("task {id:?} does not exist in this shim")))
    }

    fn process(&self, id: &str, exec_id: &str) -> Result<(Arc<Container>, Arc<Process>)> {
        let c = self.container(id)?;
        let p = c.process(exec_id)?;
        Ok((c, p))
    }

    fn runc_root(&self) -> PathBuf {
        Path::new(RUNC_ROOT).join(&self.namespace)
    }

    /// Create: validate, mount the rootfs, wire stdio, `runc create`. With
    /// a checkpoint, no process is created: Start restores it, and its
    /// journal goes on where it ended.
    pub async fn create(self: &Arc<Self>, req: CreateTask) -> Result<u32> {
        validate::id("task", &req.id)?;
        if self.containers().contains_key(&req.id) {
            return Err(Error::AlreadyExists(format!(
                "task {:?} already exists",
                req.id
            )));
        }
        if !req.bundle.is_absolute() || !req.bundle.is_dir() {
            return Err(Error::NotFound(format!(
                "bundle {} does not exist",
                req.bundle.display()
            )));
        }
        let options = ShimOptions::from_any(req.options.as_ref())?;
        let checkpoint = match (req.checkpoint.as_str(), options.restore_from.as_str()) {
            (c, "") => c,
            ("", folder) => folder,
            (_, _) => {
                return Err(Error::InvalidArgument(format!(
                    "task {}: a checkpoint and the restore_from option were both given; give one",
                    req.id
                )))
            }
        };
        let restore = Restore::from_request(&req.id, checkpoint, &req.parent_checkpoint)?;
        let spec = container::load_spec(&req.bundle)?;
        let journal_config = options
            .journal
            .for_task(&self.namespace, &req.id)
            .map_err(|e| Error::InvalidArgument(format!("log journal: {e}")))?;
        let mounted = container::mount_rootfs(&req.bundle, &req.rootfs)?;
        let undo_mount = |bundle: &Path| {
            if mounted {
                container::unmount_rootfs(bundle);
            }
        };
        let rootfs = container::rootfs_path(&req.bundle, &spec)?;
        if !rootfs.is_dir() {
            undo_mount(&req.bundle);
            return Err(Error::NotFound(format!(
                "rootfs {} does not exist",
                rootfs.display()
            )));
        }
        let journal = match Journal::open(journal_config) {
            Ok(j) => j,
            Err(e) => {
                undo_mount(&req.bundle);
                return Err(Error::Other(format!("open log journal: {e}")));
            }
        };
        let undo = |bundle: &Path| {
            undo_mount(bundle);
            if !options.keep_after_delete {
                container::remove_journal_now(&journal, None);
            }
        };
        let ctx = IoContext {
            journal: &journal,
            process: INIT_PROCESS,
            namespace: &self.namespace,
            container_id: &req.id,
            reaper: &self.reaper,
            restored: restore.is_some(),
            cri_log: self.cri_log_file(&req, &spec, &options).await,
        };
        let io = match ProcessIo::prepare(&req.stdio, &ctx).await {
            Ok(io) => io,
            Err(e) => {
                undo(&req.bundle);
                return Err(e);
            }
        };
        let runc = match Runc::new(
            &self.runc_binary,
            &self.runc_root(),
            &req.bundle,
            self.reaper.clone(),
        ) {
            Ok(r) => r,
            Err(e) => {
                io.shutdown(Duration::ZERO).await;
                undo(&req.bundle);
                return Err(e);
            }
        };
        let init = Arc::new(Process::new(&req.id, "", io, None));
        if let Some(restore) = restore {
            let c = Arc::new(Container::new(
                &req.id,
                &req.bundle,
                runc,
                init,
                mounted,
                journal,
                options.keep_after_delete,
            ));
            tracing::info!(id = %req.id, checkpoint = %restore.image.display(),
                "task created from a checkpoint; Start restores it");
            c.set_restore(restore);
            self.containers().insert(req.id.clone(), c);
            self.publish_create(&req, 0);
            return Ok(0);
        }
        let pid_file = req.bundle.join("init.pid");
        let created = launch(&init.io, &pid_file, |opts| {
            runc.create(&req.id, &req.bundle, opts)
        })
        .await;
        let pid = match created {
            Ok(pid) => pid,
            Err(e) => {
                if let Err(del) = runc.delete(&req.id, true).await {
                    tracing::debug!(error = %del, "cleanup after failed create");
                }
                undo(&req.bundle);
                return Err(e);
            }
        };
        init.set_pid(pid);
        let exited = self.reaper.subscribe(pid as i32);
        let c = Arc::new(Container::new(
            &req.id,
            &req.bundle,
            runc,
            init.clone(),
            mounted,
            journal,
            options.keep_after_delete,
        ));
        self.containers().insert(req.id.clone(), c.clone());
        self.publish_create(&req, pid);
        self.watch_exit(init, exited, INIT_OUTPUT_GRACE);
        self.watch_oom(&c);
        tracing::info!(id = %req.id, pid, "task created");
        Ok(pid)
    }

    fn publish_create(&self, req: &CreateTask, pid: u32) {
        self.events.publish(Event::Create(TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.display().to_string(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(TaskIO {
                stdin: req.stdio.stdin.clone(),
                stdout: req.stdio.stdout.clone(),
                stderr: req.stdio.stderr.clone(),
                terminal: req.stdio.terminal,
                ..Default::default()
            }),
            checkpoint: req.checkpoint.clone(),
            pid,
            ..Default::default()
        }));
    }

    fn watch_oom(&self, c: &Arc<Container>) {
        let unified = stats::unified_cgroups();
        let cgroup = match oom::memory_cgroup_of(c.init.pid(), unified) {
            Ok(cg) => cg,
            Err(e) => {
                tracing::warn!(id = %c.id, error = %e, "no memory cgroup; OOM events off");
                return;
            }
        };
        let events = self.events.clone();
        let id = c.id.clone();
        match oom::watch(&cgroup, unified, move || {
            tracing::warn!(id = %id, "container hit its memory limit (OOM kill)");
            events.publish(Event::Oom(TaskOOM {
                container_id: id.clone(),
                ..Default::default()
            }));
        }) {
            Ok(h) => c.set_oom_watcher(h),
            Err(e) => tracing::warn!(id = %c.id, error = %e, "cannot watch for OOM"),
        }
    }

    /// Waits for a process to exit, lets its output drain, records the exit
    /// and publishes it (always after its start event).
    fn watch_exit(
        self: &Arc<Self>,
        process: Arc<Process>,
        exited: oneshot::Receiver<Exit>,
        grace: Duration,
    ) {
        let events = self.events.clone();
        tokio::spawn(async move {
            let Ok(exit) = exited.await else { return };
            process.io.wait_output(grace).await;
            // A client such as `ctr run` stops reading once it learns of the
            // exit: let the sinks catch up first (bounded).
            process.io.wait_forwarded(grace * 2).await;
            let _started = process.start_lock.lock().await;
            process.set_exited(exit);
            tracing::info!(id = %process.container_id, exec_id = %process.exec_id,
                pid = exit.pid, status = exit.status, "process exited");
            events.publish(Event::Exit(TaskExit {
                container_id: process.container_id.clone(),
                id: process.event_id().to_string(),
                pid: exit.pid as u32,
                exit_status: exit.status as u32,
                exited_at: MessageField::some(timestamp(exit.at)),
                ..Default::default()
            }));
            crate::sys::trim_heap();
        });
    }

    /// Start: `runc start` for init, `runc exec` for an exec process.
    pub async fn start(self: &Arc<Self>, id: &str, exec_id: &str) -> Result<u32> {
        let (c, p) = self.process(id, exec_id)?;
        let _guard = p.start_lock.lock().await;
        if p.status() != Status::Created || (exec_id.is_empty() && p.exit().is_some()) {
            return Err(Error::FailedPrecondition(format!(
                "{} is {:?}, not created: it can only be started once",
                describe(id, exec_id),
                p.status()
            )));
        }
        if exec_id.is_empty() {
            if let Some(restore) = c.take_restore() {
                return self.start_restored(&c, &p, restore).await;
            }
            if !c.runc.exists(id) {
                // Only a task created from a checkpoint has no runc state
                // before its start: its restore failed (and took its stdio).
                return Err(Error::FailedPrecondition(format!(
                    "task {id} cannot be started: its restore from a checkpoint failed; delete it and create it again"
                )));
            }
            c.runc.start(id).await?;
            p.set_status(Status::Running);
            self.events.publish(Event::Start(TaskStart {
                container_id: id.to_string(),
                pid: p.pid(),
                ..Default::default()
            }));
            tracing::info!(id, pid = p.pid(), "task started");
            crate::sys::trim_heap();
            return Ok(p.pid());
        }
        match c.init.status() {
            Status::Running => {}
            other => {
                return Err(Error::FailedPrecondition(format!(
                    "cannot start exec {exec_id:?}: task {id} is {other:?}"
                )))
            }
        }
        let spec = p
            .spec
            .as_ref()
            .ok_or_else(|| Error::Other(format!("exec {exec_id:?} has no process spec")))?;
        let pid_file = c.bundle.join(format!("{exec_id}.pid"));
        let started = launch(&p.io, &pid_file, |opts| c.runc.exec(id, spec, opts)).await;
        let _ = std::fs::remove_file(&pid_file);
        let pid = started?;
        p.set_pid(pid);
        let exited = self.reaper.subscribe(pid as i32);
        p.set_status(Status::Running);
        self.events.publish(Event::ExecStarted(TaskExecStarted {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            pid,
            ..Default::default()
        }));
        self.watch_exit(p.clone(), exited, EXEC_OUTPUT_GRACE);
        tracing::info!(id, exec_id, pid, "exec started");
        Ok(pid)
    }

    /// State of a process.
    pub fn state(&self, id: &str, exec_id: &str) -> Result<ProcessState> {
        let (c, p) = self.process(id, exec_id)?;
        Ok(ProcessState {
            pid: p.pid(),
            status: p.status(),
            stdio: p.io.paths().clone(),
            exit: p.exit(),
            bundle: c.bundle.clone(),
        })
    }

    /// Kill: signal init (through runc, `all` for every process of the
    /// container) or an exec process.
    pub async fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let (c, p) = self.process(id, exec_id)?;
        let sig = i32::try_from(signal)
            .ok()
            .and_then(|s| Signal::try_from(s).ok())
            .ok_or_else(|| Error::InvalidArgument(format!("invalid signal {signal}")))?;
        if p.status() == Status::Stopped {
            return Err(Error::NotFound(format!(
                "{} has already exited",
                describe(id, exec_id)
            )));
        }
        if exec_id.is_empty() {
            if p.status() == Status::Created && !c.runc.exists(id) {
                return Err(Error::NotFound(format!(
                    "task {id} has no process to signal: it was created from a checkpoint and not restored"
                )));
            }
            return c.runc.kill(id, signal, all).await.map_err(|e| {
                if p.status() == Status::Stopped {
                    Error::NotFound(format!("{} has already exited", describe(id, exec_id)))
                } else {
                    e
                }
            });
        }
        if p.status() == Status::Created {
            return Err(Error::FailedPrecondition(format!(
                "{} has not been started",
                describe(id, exec_id)
            )));
        }
        nix::sys::signal::kill(Pid::from_raw(p.pid() as i32), sig).map_err(|e| match e {
            nix::errno::Errno::ESRCH => {
                Error::NotFound(format!("{} has already exited", describe(id, exec_id)))
            }
            e => Error::io(format!("kill {}", describe(id, exec_id)), e.into()),
        })
    }

    /// Exec: record an exec process (started by a later Start).
    pub async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        stdio: StdioPaths,
        spec: &[u8],
    ) -> Result<()> {
        validate::id("exec", exec_id)?;
        let c = self.container(id)?;
        if c.process(exec_id).is_ok() {
            return Err(Error::AlreadyExists(format!(
                "exec process {exec_id:?} already exists in task {id}"
            )));
        }
        if c.init.status() == Status::Stopped {
            return Err(Error::FailedPrecondition(format!(
                "cannot exec in task {id}: it has exited"
            )));
        }
        let spec: ProcessSpec = serde_json::from_slice(spec).map_err(|e| {
            Error::InvalidArgument(format!("invalid process spec for exec {exec_id:?}: {e}"))
        })?;
        if exec_id == INIT_PROCESS {
            return Err(Error::InvalidArgument(format!(
                "exec id {INIT_PROCESS:?} is reserved for the task's own process"
            )));
        }
        let ctx = IoContext {
            journal: &c.journal,
            process: exec_id,
            namespace: &self.namespace,
            container_id: id,
            reaper: &self.reaper,
            restored: false,
            cri_log: None,
        };
        let io = ProcessIo::prepare(&stdio, &ctx).await?;
        c.add_exec(Arc::new(Process::new(id, exec_id, io, Some(spec))))?;
        self.events.publish(Event::ExecAdded(TaskExecAdded {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        }));
        Ok(())
    }

    /// Delete a stopped process; for init, the whole container.
    pub async fn delete(self: &Arc<Self>, id: &str, exec_id: &str) -> Result<(u32, Option<Exit>)> {
        let (c, p) = self.process(id, exec_id)?;
        match p.status() {
            Status::Running | Status::Paused => {
                return Err(Error::FailedPrecondition(format!(
                    "cannot delete {}: it is still running",
                    describe(id, exec_id)
                )))
            }
            Status::Created | Status::Stopped => {}
        }
        if !exec_id.is_empty() {
            c.remove_exec(exec_id);
            p.io.shutdown(SINK_GRACE).await;
            if !c.keep_journal {
                container::remove_journal(&c.journal, Some(exec_id)).await;
            }
            crate::sys::trim_heap();
            return Ok((p.pid(), p.exit()));
        }
        let never_started = p.status() == Status::Created;
        // runc has no state for a task a checkpoint stopped (runc removed
        // it), nor for one created from a checkpoint and never restored.
        if c.runc.exists(id) {
            if let Err(e) = c.runc.delete(id, never_started).await {
                c.runc.delete(id, true).await.map_err(|_| e)?;
            }
            if never_started {
                // runc killed the created init: wait for the reaper so the
                // exit event comes before the delete event.
                let _ = tokio::time::timeout(Duration::from_secs(5), p.wait()).await;
            }
        }
        c.stop_oom_watcher();
        for exec in c.exec_processes() {
            exec.io.shutdown(SINK_GRACE).await;
        }
        p.io.shutdown(SINK_GRACE).await;
        if !c.keep_journal {
            container::remove_journal(&c.journal, None).await;
        }
        if c.mounted_rootfs {
            container::unmount_rootfs(&c.bundle);
        }
        let _ = std::fs::remove_file(c.bundle.join("init.pid"));
        let none_left = {
            let mut containers = self.containers();
            containers.remove(id);
            containers.is_empty()
        };
        if none_left {
            self.exit_if_forgotten();
        }
        let exit = p.exit();
        self.events.publish(Event::Delete(TaskDelete {
            container_id: id.to_string(),
            pid: p.pid(),
            exit_status: exit.map(|e| e.status as u32).unwrap_or(0),
            exited_at: exit.map(|e| timestamp(e.at)).into(),
            id: id.to_string(),
            ..Default::default()
        }));
        tracing::info!(id, "task deleted");
        Ok((p.pid(), exit))
    }

    /// Pids of every process in the container, with exec ids where known.
    pub async fn pids(&self, id: &str) -> Result<Vec<(u32, String)>> {
        let c = self.container(id)?;
        if c.init.status() == Status::Stopped {
            // runc has no processes to list, but the task is not deleted:
            // report its init so containerd (1.7 on restart) keeps the task
            // and its exit status instead of treating the shim as leaked.
            return Ok(vec![(c.init.pid(), String::new())]);
        }
        if c.init.status() == Status::Created && !c.runc.exists(id) {
            // Created from a checkpoint, not restored yet: no process.
            return Ok(Vec::new());
        }
        let pids = c.runc.ps(id).await?;
        let execs: HashMap<u32, String> = c
            .exec_processes()
            .iter()
            .map(|p| (p.pid(), p.exec_id.clone()))
            .collect();
        Ok(pids
            .into_iter()
            .map(|pid| {
                let pid = pid as u32;
                (pid, execs.get(&pid).cloned().unwrap_or_default())
            })
            .collect())
    }

    /// Pause: freeze the container.
    pub async fn pause(&self, id: &str) -> Result<()> {
        let c = self.container(id)?;
        if c.init.status() != Status::Running {
            return Err(Error::FailedPrecondition(format!(
                "cannot pause task {id}: it is {:?}",
                c.init.status()
            )));
        }
        c.runc.pause(id).await?;
        c.init.set_status(Status::Paused);
        self.events.publish(Event::Paused(TaskPaused {
            container_id: id.to_string(),
            ..Default::default()
        }));
        Ok(())
    }

    /// Resume: thaw the container.
    pub async fn resume(&self, id: &str) -> Result<()> {
        let c = self.container(id)?;
        if c.init.status() != Status::Paused {
            return Err(Error::FailedPrecondition(format!(
                "cannot resume task {id}: it is {:?}, not paused",
                c.init.status()
            )));
        }
        c.runc.resume(id).await?;
        c.init.set_status(Status::Running);
        self.events.publish(Event::Resumed(TaskResumed {
            container_id: id.to_string(),
            ..Default::default()
        }));
        Ok(())
    }

    /// CloseIO: close the process's stdin once its data is through.
    pub fn close_io(&self, id: &str, exec_id: &str, stdin: bool) -> Result<()> {
        let (_, p) = self.process(id, exec_id)?;
        if stdin {
            p.io.close_stdin();
        }
        Ok(())
    }

    /// ResizePty.
    pub fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let (_, p) = self.process(id, exec_id)?;
        p.io.resize(width, height)
    }

    /// Update: new cgroup resources (JSON `LinuxResources`).
    pub async fn update(&self, id: &str, resources: &[u8]) -> Result<()> {
        let c = self.container(id)?;
        let res: LinuxResources = serde_json::from_slice(resources)
            .map_err(|e| Error::InvalidArgument(format!("invalid resources for task {id}: {e}")))?;
        if c.init.status() == Status::Stopped {
            return Err(Error::FailedPrecondition(format!(
                "cannot update task {id}: it has exited"
            )));
        }
        c.runc.update(id, &res).await
    }

    /// Wait for a process to exit.
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<Exit> {
        let (_, p) = self.process(id, exec_id)?;
        Ok(p.wait().await)
    }

    /// Stats: cgroup metrics.
    pub async fn stats(&self, id: &str) -> Result<Any> {
        let c = self.container(id)?;
        let json = c.runc.stats_json(id).await?;
        stats::metrics_any(&json, stats::unified_cgroups())
    }

    /// The init pid of `id` (0 if unknown).
    pub fn task_pid(&self, id: &str) -> u32 {
        self.container(id).map(|c| c.init.pid()).unwrap_or(0)
    }

    /// containerd sends Shutdown right after the last Delete; should it die
    /// in between, the shim must not linger forever with nothing to serve.
    fn exit_if_forgotten(self: &Arc<Self>) {
        let shim = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(FORGOTTEN_EXIT_AFTER).await;
            if let Some(shim) = shim.upgrade() {
                if shim.containers().is_empty() {
                    tracing::info!("no task left and no Shutdown received; exiting");
                    shim.begin_shutdown();
                }
            }
        });
    }

    /// Shutdown: exit once no container is left (or at once with `now`).
    pub fn shutdown(&self, now: bool) {
        if now || self.containers().is_empty() {
            tracing::info!("shutting down");
            self.begin_shutdown();
        }
    }
}

fn describe(id: &str, exec_id: &str) -> String {
    if exec_id.is_empty() {
        format!("task {id}")
    } else {
        format!("exec process {exec_id:?} of task {id}")
    }
}

/// Runs the runc command `run` that starts a process with `io` as its
/// stdio (`run` gets the [`LaunchOpts`]), connects its console and reads
/// its pid from `pid_file`. On failure `io` is shut down: runc took it, so
/// the launch cannot be retried.
async fn launch<F, Fut>(io: &ProcessIo, pid_file: &Path, run: F) -> Result<u32>
where
    F: FnOnce(LaunchOpts) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let launch = LaunchOpts {
        pid_file: pid_file.to_path_buf(),
        console_socket: io.console_socket(),
        io: io.runc_io(),
    };
    let launched = async {
        run(launch).await?;
        io.connect_console().await?;
        read_pid(pid_file).await
    }
    .await;
    if launched.is_err() {
        io.shutdown(Duration::ZERO).await;
    }
    launched
}

async fn read_pid(path: &Path) -> Result<u32> {
    // A few bytes on a tmpfs: read inline rather than on a blocking thread.
    let s = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("read pid file {}", path.display()), e))?;
    s.trim()
        .parse()
        .map_err(|_| Error::Other(format!("pid file {} holds {s:?}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoEvents;
    impl EventSink for NoEvents {
        fn publish(&self, _event: crate::publisher::Event) {}
    }

    #[tokio::test]
    async fn shutdown_unlinks_the_task_socket_before_it_answers() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let notify = Arc::new(Notify::new());
        let shim = TaskShim::new(
            "ns",
            "runc",
            Reaper::new(),
            Arc::new(NoEvents),
            notify.clone(),
        )
        .with_socket(&socket);
        shim.shutdown(false);
        // A `start` for the same id right now must bind its own socket
        // rather than find this shim still listening there.
        assert!(!socket.exists());
        tokio::time::timeout(Duration::from_secs(1), notify.notified())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_socket_bound_again_at_the_same_path_by_the_next_shim_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s");
        let first = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let shim = TaskShim::new(
            "ns",
            "runc",
            Reaper::new(),
            Arc::new(NoEvents),
            Arc::new(Notify::new()),
        )
        .with_socket(&socket);
        shim.shutdown(false);
        assert!(!socket.exists());
        drop(first);
        // The next shim for the same id (a restore, a restart) binds there.
        let _next = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        // A late second shutdown of the first shim (its forgotten-exit
        // timer) must not unlink the next shim's socket.
        shim.shutdown(true);
        assert!(socket.exists(), "the next shim's socket was unlinked");
    }
}
