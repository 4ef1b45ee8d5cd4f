//! The manager's domain layer: what each `holdfast.v1` call does, in terms
//! of the store, containerd and the journal folders, with no gRPC in
//! sight (the tonic adapter, `server`, only converts).
//!
//! Every operation that changes a container holds that container's lock
//! (one async mutex per name), so two calls on one name never interleave;
//! calls on different names run in parallel. [`Manager::wait`] holds no
//! lock while it waits.
//!
//! The record is the declared state; the observed state is refreshed from
//! containerd's task list when it is read (a task that exited on its own
//! shows as exited), until event handling keeps it current.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use holdfast_api::shim::v1::Options as ShimOptions;
use holdfast_api::v1::{Container, ContainerSpec, ContainerState, ContainerStatus};
use holdfast_journal::JournalOptions;
use tokio::sync::OwnedMutexGuard;
use tracing::{info, info_span, warn, Instrument};

use crate::config::Config;
use crate::containerd::{self, Containerd, RootSource, TaskInfo, TaskStatus};
use crate::error::{Error, Result};
use crate::events::EventHub;
use crate::spec::{self, SpecOptions, STOP_SIGNAL_LABEL};
use crate::stop::stop_timeout;
use crate::store::{Loaded, Store};
use crate::validate::{parse_signal, validate_name, validate_spec};

mod checkpoint;
mod lifecycle;
mod migrate;
mod monitor;
mod reconcile;
mod scheduled;
mod shutdown;
mod transfer;
mod update;

pub use checkpoint::{generated_name, CheckpointRequest, CHECKPOINTS_DIR, CHECKPOINT_WORK_DIR};
use lifecycle::{Life, Starter};
pub use lifecycle::{Phase, UNKNOWN_EXIT_CODE};
pub use migrate::{MigrateRequest, Migrated};
pub use monitor::Monitor;
pub use reconcile::{decide, Action, StartupReport};
pub use shutdown::{ShutdownReport, QUIESCE_TIMEOUT};
pub use transfer::{ExportChunk, ExportStream, ImportData, ImportRequest, IMPORTS_DIR};
pub use update::ContainerUpdate;

/// SIGKILL's number.
const SIGKILL: u32 = 9;

/// holdfastd's containers: the store, containerd and a lock per name.
pub struct Manager {
    config: Config,
    /// The `[log]` defaults of containers created from now on (SIGHUP may
    /// change them; `dir` stays the start-up one).
    log_defaults: RwLock<JournalOptions>,
    store: Arc<Store>,
    pub(crate) containerd: Containerd,
    spec_opts: SpecOptions,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    life: Life,
    pub(crate) events: EventHub,
    /// The armed checkpoint schedules.
    schedules: scheduled::Schedules,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("store", &self.store)
            .field("namespace", &self.containerd.namespace())
            .finish()
    }
}

fn now() -> Option<prost_types::Timestamp> {
    Some(SystemTime::now().into())
}

fn not_found(name: &str) -> Error {
    Error::NotFound {
        what: format!("container {name:?}"),
    }
}

/// The status of a record.
fn status_of(c: &Container) -> ContainerStatus {
    c.state
        .as_ref()
        .and_then(|s| ContainerStatus::try_from(s.status).ok())
        .unwrap_or(ContainerStatus::Unspecified)
}

/// The listing of a quarantined record.
fn quarantined(name: &str, reason: &str) -> Container {
    Container {
        spec: Some(ContainerSpec {
            name: name.to_owned(),
            ..Default::default()
        }),
        state: Some(ContainerState {
            status: ContainerStatus::Quarantined as i32,
            error: reason.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Applies what containerd's task says to a record's observed state (not
/// written back): a RUNNING record whose task exited or is gone shows as
/// exited.
fn observe(mut c: Container, task: Option<&TaskInfo>) -> Container {
    if status_of(&c) != ContainerStatus::Running {
        return c;
    }
    let state = c.state.get_or_insert_with(Default::default);
    match task {
        Some(t) if t.status == TaskStatus::Stopped => {
            state.status = ContainerStatus::Exited as i32;
            state.pid = 0;
            state.exit_code = t.exit_status as i32;
            state.finished_at = t.exited_at.map(Into::into);
        }
        Some(t) if t.status == TaskStatus::Paused => {
            state.status = ContainerStatus::Paused as i32;
        }
        Some(_) => {}
        None => {
            state.status = ContainerStatus::Exited as i32;
            state.pid = 0;
            state.exit_code = UNKNOWN_EXIT_CODE;
            state.finished_at = None;
            state.error = "the task is gone; its exit status is unknown".into();
        }
    }
    c
}

/// How long a read waits for a container's lock to see an exit that is
/// being recorded.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A record that says RUNNING while containerd has no task for it: an exit
/// being recorded right now (its handler deleted the task and holds the
/// container's lock until the record is written), or a task lost with
/// containerd's state.
fn task_vanished(c: &Container, task: Option<&TaskInfo>) -> bool {
    task.is_none() && status_of(c) == ContainerStatus::Running
}

impl Manager {
    /// A manager over an open store and a connected containerd.
    pub fn new(config: Config, store: Arc<Store>, containerd: Containerd) -> Manager {
        let spec_opts = SpecOptions {
            namespace: config.containerd.namespace.clone(),
            cgroup_parent: config.cgroup_parent.clone(),
        };
        Manager {
            log_defaults: RwLock::new(config.log.clone()),
            config,
            store,
            containerd,
            spec_opts,
            locks: Mutex::new(HashMap::new()),
            life: Life::default(),
            events: EventHub::new(),
            schedules: scheduled::Schedules::default(),
        }
    }

    /// The config the manager runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Takes new `[log]` defaults (a SIGHUP's): containers created from
    /// now on get them; existing ones keep theirs, across restarts too.
    /// The journal root stays the start-up one.
    pub fn set_log_defaults(&self, log: JournalOptions) {
        match self.log_defaults.write() {
            Ok(mut current) => *current = log,
            Err(poisoned) => *poisoned.into_inner() = log,
        }
    }

    /// The shim options of a container created now: the current `[log]`
    /// defaults under the journal root.
    fn new_shim_options(&self) -> ShimOptions {
        let log = match self.log_defaults.read() {
            Ok(log) => log.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        containerd::options::shim_options(&log, &self.config.journal_root())
    }

    /// The journal folder of container `name`.
    pub fn journal_dir(&self, name: &str) -> PathBuf {
        containerd::journal_dir(
            &self.config.journal_root(),
            self.containerd.namespace(),
            name,
        )
    }

    /// Takes container `name`'s lock (after checking the name, so no lock
    /// is made for a bad one).
    async fn lock(&self, name: &str) -> Result<OwnedMutexGuard<()>> {
        validate_name(name)?;
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .map_err(|_| Error::Internal("the lock table is poisoned".into()))?;
            locks.entry(name.to_owned()).or_default().clone()
        };
        Ok(lock.lock_owned().await)
    }

    /// Forgets the lock of a removed container (while holding it).
    fn forget_lock(&self, name: &str) {
        if let Ok(mut locks) = self.locks.lock() {
            locks.remove(name);
        }
    }

    /// Runs a store call off the async threads.
    async fn store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Error::Internal(format!("store task: {e}")))?
    }

    pub(crate) async fn get(&self, name: &str) -> Result<Option<Loaded>> {
        let n = name.to_owned();
        self.store(move |s| s.get(&n)).await
    }

    async fn put(&self, c: &Container) -> Result<()> {
        let c = c.clone();
        self.store(move |s| s.put(&c)).await
    }

    /// A usable record: NotFound if none, FailedPrecondition if quarantined.
    pub(crate) async fn record(&self, name: &str) -> Result<Container> {
        match self.get(name).await? {
            None => Err(not_found(name)),
            Some(Loaded::Quarantined { reason, .. }) => Err(Error::FailedPrecondition(format!(
                "container {name:?} is quarantined ({reason}); remove it"
            ))),
            Some(Loaded::Ok(c)) => Ok(c),
        }
    }

    /// containerd's task of `name`, if there is one.
    async fn task(&self, name: &str) -> Result<Option<TaskInfo>> {
        Ok(self
            .containerd
            .list_tasks()
            .await?
            .into_iter()
            .find(|t| t.id == name))
    }

    /// Creates a container (record, containerd container and task) without
    /// starting it. Bad input is refused before anything is made; a failure
    /// later undoes what was made.
    pub async fn create(&self, spec: ContainerSpec) -> Result<Container> {
        validate_name(&spec.name)?;
        let name = spec.name.clone();
        async {
            validate_spec(&spec)?;
            let _guard = self.lock(&name).await?;
            self.create_locked(spec, true).await
        }
        .instrument(info_span!("create", container = %name))
        .await
    }

    /// [`Manager::create`] of a validated spec, the container's lock held;
    /// without `with_task` only the containerd container (and an image's
    /// snapshot) is made, for a task created later from a checkpoint.
    async fn create_locked(&self, spec: ContainerSpec, with_task: bool) -> Result<Container> {
        let name = spec.name.clone();
        if self.get(&name).await?.is_some() {
            return Err(Error::AlreadyExists {
                what: format!("container {name:?}"),
            });
        }
        let image = if spec.image.is_empty() {
            None
        } else {
            Some(self.containerd.image(&spec.image).await?)
        };
        let image_config = image.as_ref().map(|i| &i.config);
        let oci = spec::build(&spec, image_config, &self.spec_opts)?;
        let labels = spec::container_labels(&spec, image_config);
        let root = if spec.image.is_empty() {
            RootSource::Folder(PathBuf::from(&spec.rootfs))
        } else {
            RootSource::Image(spec.image.clone())
        };
        // containerd's AlreadyExists (a container without a record) is
        // not ours to undo.
        let options = self.new_shim_options();
        let created = if with_task {
            self.containerd
                .create(&name, &oci, &root, labels, &options)
                .await?
        } else {
            self.containerd
                .create_without_task(&name, &oci, &root, labels, &options)
                .await?
        };
        let record = Container {
            spec: Some(spec),
            state: Some(ContainerState {
                status: ContainerStatus::Created as i32,
                ..Default::default()
            }),
            created_at: now(),
            log_dir: created.journal_dir.display().to_string(),
        };
        if let Err(e) = self.put(&record).await {
            warn!(error = %e, "writing the record failed; undoing the create");
            self.undo_create(&name).await;
            return Err(e);
        }
        info!(pid = created.pid, "container created");
        self.event(&name, "create", 0, "");
        Ok(record)
    }

    /// Removes the task, container and journal of a create that failed
    /// after containerd made them; failures are logged.
    async fn undo_create(&self, name: &str) {
        if let Err(e) = self.containerd.delete_task(name).await {
            warn!(error = %e, "undo: delete task");
        }
        if let Err(e) = self.containerd.delete_container(name).await {
            warn!(error = %e, "undo: delete container");
        }
        remove_dir_if_any(&self.journal_dir(name)).await;
    }

    /// Starts a created or exited container.
    pub async fn start(self: &Arc<Self>, name: &str) -> Result<Container> {
        let _guard = self.lock(name).await?;
        self.life.cancel_restart(name);
        self.start_locked(name, Starter::User)
            .instrument(info_span!("start", container = %name))
            .await
    }

    async fn start_locked(self: &Arc<Self>, name: &str, by: Starter) -> Result<Container> {
        let mut record = self.record(name).await?;
        let task = self.task(name).await?;
        match task.as_ref().map(|t| t.status) {
            Some(TaskStatus::Created) => {}
            Some(TaskStatus::Stopped) | None => {
                // A run ended: its task goes, a new one is made from the
                // record.
                if task.is_some() {
                    self.containerd.delete_task(name).await?;
                }
                self.recreate(&record).await?;
            }
            Some(_) => {
                return Err(Error::FailedPrecondition(format!(
                    "container {name:?} is already running"
                )))
            }
        }
        let pid = match self.containerd.start(name).await {
            Ok(pid) => pid,
            Err(e) => {
                let state = record.state.get_or_insert_with(Default::default);
                state.error = e.to_string();
                self.put(&record).await?;
                return Err(e.into());
            }
        };
        let state = mark_running(&mut record, pid);
        match by {
            Starter::User => {
                state.restart_count = 0;
                self.life.reset_backoff(name);
            }
            Starter::Policy => state.restart_count += 1,
        }
        self.put(&record).await?;
        self.life.started(name, pid);
        self.arm_schedule(&record);
        info!(pid, ?by, "container started");
        Ok(record)
    }

    /// Makes containerd's container and task again from a record (after a
    /// run ended, its task was deleted). The container keeps the shim
    /// options it was created with (its `[log]` settings), in the journal
    /// root holdfastd reads; without them (containerd lost the container)
    /// it gets the current defaults.
    async fn recreate(&self, record: &Container) -> Result<()> {
        let spec = record
            .spec
            .as_ref()
            .ok_or_else(|| Error::Internal("a loaded record has no spec".into()))?;
        let options = match self.containerd.shim_options(&spec.name).await {
            Ok(Some(mut kept)) => {
                kept.dir = self.config.journal_root().display().to_string();
                kept.keep_after_delete = true;
                kept
            }
            Ok(None) => self.new_shim_options(),
            Err(e) if e.is_not_found() => self.new_shim_options(),
            Err(e) => return Err(e.into()),
        };
        match self.containerd.delete_container(&spec.name).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let image = if spec.image.is_empty() {
            None
        } else {
            Some(self.containerd.image(&spec.image).await?)
        };
        let image_config = image.as_ref().map(|i| &i.config);
        let oci = spec::build(spec, image_config, &self.spec_opts)?;
        let labels = spec::container_labels(spec, image_config);
        let root = if spec.image.is_empty() {
            RootSource::Folder(PathBuf::from(&spec.rootfs))
        } else {
            RootSource::Image(spec.image.clone())
        };
        self.containerd
            .create(&spec.name, &oci, &root, labels, &options)
            .await?;
        Ok(())
    }

    /// Stops a running container: its stop signal, then SIGKILL to all its
    /// processes after `timeout_seconds` (unset: the spec's stop timeout;
    /// negative: wait forever); deletes its task and records the exit.
    /// A container that is not running is returned as is.
    pub async fn stop(&self, name: &str, timeout_seconds: Option<i64>) -> Result<Container> {
        let _guard = self.lock(name).await?;
        self.life.cancel_restart(name);
        self.disarm_schedule(name);
        self.stop_locked(name, timeout_seconds, true)
            .instrument(info_span!("stop", container = %name))
            .await
    }

    /// `by_user`: a user's stop (no policy restarts it); holdfastd's own
    /// stop at shutdown is not.
    async fn stop_locked(
        &self,
        name: &str,
        timeout_seconds: Option<i64>,
        by_user: bool,
    ) -> Result<Container> {
        let mut record = self.record(name).await?;
        let spec = record.spec.clone().unwrap_or_default();
        let task = self.task(name).await?;
        let Some(task) = task.filter(|t| t.status != TaskStatus::Created) else {
            return self.stop_restarting(observe(record, None)).await;
        };
        let exit = if task.status == TaskStatus::Stopped {
            self.containerd.delete_task(name).await?
        } else {
            let signal = stop_signal_of(&spec)?;
            let timeout = stop_timeout(timeout_seconds.unwrap_or(spec.stop_timeout_seconds));
            self.signal_ignoring_exited(name, signal, false).await?;
            let waited = match timeout {
                None => Some(self.containerd.wait(name).await?),
                Some(t) => tokio::time::timeout(t, self.containerd.wait(name))
                    .await
                    .ok()
                    .transpose()?,
            };
            if waited.is_none() {
                info!(?timeout, "stop timeout passed; sending SIGKILL");
                self.signal_ignoring_exited(name, SIGKILL, true).await?;
                self.containerd.wait(name).await?;
            }
            self.containerd.delete_task(name).await?
        };
        let state = record.state.get_or_insert_with(Default::default);
        state.status = ContainerStatus::Exited as i32;
        state.pid = 0;
        state.exit_code = exit.code as i32;
        state.finished_at = exit.exited_at.map(Into::into).or_else(now);
        state.stopped_by_user |= by_user;
        let (code, at) = (state.exit_code, state.finished_at);
        self.put(&record).await?;
        self.life.notify_exit(name, code, at);
        self.event(name, "stop", code, "");
        info!(exit_code = exit.code, "container stopped");
        Ok(record)
    }

    /// Signals a task; a task that already exited is not an error.
    async fn signal_ignoring_exited(&self, name: &str, signal: u32, all: bool) -> Result<()> {
        match self.containerd.kill(name, signal, all).await {
            Ok(()) => Ok(()),
            Err(containerd::Error::NotFound(_) | containerd::Error::FailedPrecondition(_)) => {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Stops (if running) and starts a container again.
    pub async fn restart(
        self: &Arc<Self>,
        name: &str,
        timeout_seconds: Option<i64>,
    ) -> Result<Container> {
        let _guard = self.lock(name).await?;
        self.life.cancel_restart(name);
        self.disarm_schedule(name);
        async {
            self.stop_locked(name, timeout_seconds, true).await?;
            self.start_locked(name, Starter::User).await
        }
        .instrument(info_span!("restart", container = %name))
        .await
    }

    /// Sends `signal` (a name or number; empty: SIGKILL) to a running
    /// container's init process, or to all its processes.
    pub async fn kill(&self, name: &str, signal: &str, all: bool) -> Result<()> {
        let signal = if signal.is_empty() {
            SIGKILL
        } else {
            parse_signal(signal)? as u32
        };
        let _guard = self.lock(name).await?;
        async {
            self.record(name).await?;
            match self.task(name).await? {
                Some(t) if matches!(t.status, TaskStatus::Running | TaskStatus::Paused) => {
                    self.containerd.kill(name, signal, all).await?;
                    self.event(name, "kill", 0, &format!("signal {signal}"));
                    self.mark_killed_by_user(name, signal).await
                }
                _ => Err(Error::FailedPrecondition(format!(
                    "container {name:?} is not running"
                ))),
            }
        }
        .instrument(info_span!("kill", container = %name, signal, all))
        .await
    }

    /// Removes a container: its task (killed first with `force` if it
    /// runs), containerd container, journal folder, checkpoints and record. A
    /// quarantined record is removable.
    pub async fn remove(&self, name: &str, force: bool) -> Result<()> {
        let _guard = self.lock(name).await?;
        self.life.cancel_restart(name);
        self.disarm_schedule(name);
        self.remove_locked(name, force)
            .instrument(info_span!("remove", container = %name, force))
            .await
    }

    /// [`Manager::remove`] with the container's lock held.
    async fn remove_locked(&self, name: &str, force: bool) -> Result<()> {
        {
            if self.get(name).await?.is_none() {
                return Err(not_found(name));
            }
            if let Some(task) = self.task(name).await? {
                match task.status {
                    TaskStatus::Stopped => {}
                    TaskStatus::Created => {
                        self.signal_ignoring_exited(name, SIGKILL, false).await?;
                        self.containerd.wait(name).await?;
                    }
                    _ if !force => {
                        return Err(Error::FailedPrecondition(format!(
                            "container {name:?} is running: stop it first or remove it with force"
                        )))
                    }
                    _ => {
                        self.signal_ignoring_exited(name, SIGKILL, true).await?;
                        let exit = self.containerd.wait(name).await?;
                        let at = exit.exited_at.map(Into::into).or_else(now);
                        self.life.notify_exit(name, exit.code as i32, at);
                    }
                }
                self.containerd.delete_task(name).await?;
            }
            match self.containerd.delete_container(name).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
            let dir = self.journal_dir(name);
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove journal", dir, e)),
            }
            self.remove_checkpoints_locked(name).await?;
            let n = name.to_owned();
            self.store(move |s| s.delete(&n)).await?;
            self.forget_lock(name);
            self.life.forget(name);
            self.disarm_schedule(name);
            self.event(name, "remove", 0, "");
            info!("container removed");
            Ok(())
        }
    }

    /// The containers by name: running ones, or all (created, exited and
    /// quarantined too).
    pub async fn list(&self, all: bool) -> Result<Vec<Container>> {
        let loaded = self.store(|s| s.load_all()).await?;
        let tasks: HashMap<String, TaskInfo> = self
            .containerd
            .list_tasks()
            .await?
            .into_iter()
            .map(|t| (t.id.clone(), t))
            .collect();
        let mut out = Vec::with_capacity(loaded.len());
        for l in loaded {
            let c = match l {
                Loaded::Ok(c) => {
                    let name = c.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
                    let task = tasks.get(&name);
                    let c = if task_vanished(&c, task) {
                        match self.settled(&name, c).await? {
                            Some(c) => c,
                            None => continue,
                        }
                    } else {
                        observe(c, task)
                    };
                    scheduled::with_next_tick(c, SystemTime::now())
                }
                Loaded::Quarantined { name, reason, .. } => quarantined(&name, &reason),
            };
            if all || status_of(&c) == ContainerStatus::Running {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// One container read again under its lock, so that an exit being
    /// recorded shows with its real exit code; `None` once removed. Should
    /// the lock stay held (a stuck operation), `seen` shows as it is.
    async fn settled(&self, name: &str, seen: Container) -> Result<Option<Container>> {
        let Ok(guard) = tokio::time::timeout(SETTLE_WAIT, self.lock(name)).await else {
            return Ok(Some(observe(seen, None)));
        };
        let _guard = guard?;
        Ok(match self.get(name).await? {
            None => None,
            Some(Loaded::Quarantined { reason, .. }) => Some(quarantined(name, &reason)),
            Some(Loaded::Ok(c)) => {
                let task = self.task(name).await?;
                Some(observe(c, task.as_ref()))
            }
        })
    }

    /// Everything known about one container.
    pub async fn inspect(&self, name: &str) -> Result<Container> {
        validate_name(name)?;
        match self.get(name).await? {
            None => Err(not_found(name)),
            Some(Loaded::Quarantined { reason, .. }) => Ok(quarantined(name, &reason)),
            Some(Loaded::Ok(c)) => {
                let task = self.task(name).await?;
                let c = if task_vanished(&c, task.as_ref()) {
                    self.settled(name, c)
                        .await?
                        .ok_or_else(|| not_found(name))?
                } else {
                    observe(c, task.as_ref())
                };
                Ok(scheduled::with_next_tick(c, SystemTime::now()))
            }
        }
    }

    /// Waits until a container's task exits; its exit code and time. A
    /// container that is not running answers with its last exit at once.
    /// Waiters are answered before auto-remove removes the container.
    pub async fn wait(&self, name: &str) -> Result<(i32, Option<prost_types::Timestamp>)> {
        self.wait_exit(name)
            .await
            .inspect(|(code, _)| info!(container = name, exit_code = code, "wait answered"))
    }
}

/// Writes a new run of `pid` into a record's observed state (not stored);
/// the state, for more changes.
fn mark_running(record: &mut Container, pid: u32) -> &mut ContainerState {
    let state = record.state.get_or_insert_with(Default::default);
    state.status = ContainerStatus::Running as i32;
    state.pid = pid;
    state.started_at = now();
    state.finished_at = None;
    state.exit_code = 0;
    state.stopped_by_user = false;
    state.error.clear();
    state
}

/// The signal `stop` sends first: the spec's, else the image's (label),
/// else SIGTERM.
fn stop_signal_of(spec: &ContainerSpec) -> Result<u32> {
    let signal = if spec.stop_signal.is_empty() {
        let labels = spec::container_labels(spec, None);
        labels
            .get(STOP_SIGNAL_LABEL)
            .cloned()
            .unwrap_or_else(|| "SIGTERM".into())
    } else {
        spec.stop_signal.clone()
    };
    Ok(parse_signal(&signal)? as u32)
}

async fn remove_dir_if_any(dir: &std::path::Path) {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(error = %e, dir = %dir.display(), "remove folder"),
    }
}
