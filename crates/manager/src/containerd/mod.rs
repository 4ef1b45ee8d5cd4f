//! holdfastd's containerd layer: a small client over `containerd-client`
//! that creates containers on holdfast's shim, drives their tasks, lists
//! them for reconcile, subscribes to task events and runs execs.
//!
//! Every request carries the `containerd-namespace` header of the
//! namespace given to [`Containerd::connect`].
//!
//! How containers are created (checked against containerd 1.6.20 and
//! 1.7.24):
//! - the containerd container has runtime `io.rust.shim.v2` with runtime
//!   options `holdfast.shim.v1.Options` ([`options`]: every `[log]` key of
//!   holdfastd's config, `dir` = holdfastd's journal root,
//!   `keep_after_delete` = true), which containerd hands to the shim on
//!   task create; so the journal of task `<id>` is
//!   `<dir>/<namespace>/<id>`, rotated and budgeted as `[log]` says, and
//!   outlives the task;
//! - the spec's root is `rootfs` in the bundle; the task's rootfs is given
//!   as mounts: a bind mount of the folder for a rootfs container, the
//!   snapshot's mounts for an image;
//! - the task's stdin/stdout/stderr are empty: the shim journals the output
//!   itself, no FIFOs are involved.

pub mod checkpoint;
mod error;
pub mod events;
mod exec;
mod image;
pub mod options;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetContainerRequest, GetRequest, KillRequest, ListContainersRequest,
    ListTasksRequest, StartRequest, WaitRequest,
};
use containerd_client::types::v1::Status;
use containerd_client::types::Mount;
use holdfast_api::shim::v1::Options as ShimOptions;
use oci_spec::runtime::Spec;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::Request;

pub use checkpoint::CheckpointOptions;
pub use error::{Error, Result};
pub use events::{TaskEvent, TaskEvents};
pub use exec::{Exec, ExecProcess};
pub use image::ImageInfo;

/// The runtime holdfastd creates containers with (holdfast's shim).
pub const RUNTIME: &str = "io.rust.shim.v2";
/// The type URL containerd stores runtime specs under.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// The type URL of an exec's process spec.
pub const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// The snapshotter used for images.
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";
/// The namespace header containerd reads.
const NAMESPACE_HEADER: &str = "containerd-namespace";

/// Where a container's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSource {
    /// An absolute path to a folder, bind-mounted as is.
    Folder(PathBuf),
    /// An image in containerd's store, unpacked for [`DEFAULT_SNAPSHOTTER`];
    /// the container gets a snapshot named after it.
    Image(String),
}

/// A task's exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit status containerd reports (128+signal for a signal).
    pub code: u32,
    /// When it exited, if containerd knows.
    pub exited_at: Option<SystemTime>,
}

/// A task's status, as containerd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    /// Unknown.
    Unknown,
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited, not deleted.
    Stopped,
    /// Paused.
    Paused,
    /// Being paused.
    Pausing,
}

impl TaskStatus {
    fn from_i32(v: i32) -> TaskStatus {
        match Status::try_from(v) {
            Ok(Status::Created) => TaskStatus::Created,
            Ok(Status::Running) => TaskStatus::Running,
            Ok(Status::Stopped) => TaskStatus::Stopped,
            Ok(Status::Paused) => TaskStatus::Paused,
            Ok(Status::Pausing) => TaskStatus::Pausing,
            _ => TaskStatus::Unknown,
        }
    }
}

/// One task of [`Containerd::list_tasks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    /// The container id.
    pub id: String,
    /// The init process's pid on the host.
    pub pid: u32,
    /// Its status.
    pub status: TaskStatus,
    /// The exit status (valid when stopped).
    pub exit_status: u32,
    /// When it exited (when stopped).
    pub exited_at: Option<SystemTime>,
}

/// One container of [`Containerd::list_containers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The container id (holdfast's name).
    pub id: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// Its image ("" for a rootfs folder).
    pub image: String,
    /// Its runtime name.
    pub runtime: String,
    /// Its snapshotter and snapshot key, for an image.
    pub snapshot: Option<(String, String)>,
}

/// What [`Containerd::create`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The pid of the created (not yet started) init process.
    pub pid: u32,
    /// The folder of the task's journal: `<journal_root>/<namespace>/<id>`.
    pub journal_dir: PathBuf,
}

pub(crate) fn to_system_time(ts: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    let ts = ts?;
    if ts.seconds <= 0 {
        return None;
    }
    let d = Duration::new(ts.seconds as u64, ts.nanos.clamp(0, 999_999_999) as u32);
    SystemTime::UNIX_EPOCH.checked_add(d)
}

/// The journal folder the shim uses for task `id` of `namespace` when its
/// options say `dir = journal_root`.
pub fn journal_dir(journal_root: &Path, namespace: &str, id: &str) -> PathBuf {
    journal_root.join(namespace).join(id)
}

/// A client of one containerd, in one namespace.
#[derive(Debug, Clone)]
pub struct Containerd {
    channel: Channel,
    namespace: String,
    header: MetadataValue<tonic::metadata::Ascii>,
}

impl Containerd {
    /// Connects to containerd's socket `address` for `namespace`, retrying
    /// (the socket may not exist yet while containerd starts) until
    /// `timeout`; checks the connection with a Version call.
    pub async fn connect(
        address: impl AsRef<Path>,
        namespace: &str,
        timeout: Duration,
    ) -> Result<Containerd> {
        let address = address.as_ref().to_path_buf();
        let header: MetadataValue<tonic::metadata::Ascii> = namespace
            .parse()
            .map_err(|_| Error::Namespace(namespace.to_string()))?;
        if namespace.is_empty() {
            return Err(Error::Namespace(namespace.to_string()));
        }
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(20);
        loop {
            let reason = match containerd_client::connect(&address).await {
                Ok(channel) => {
                    let mut version =
                        containerd_client::services::v1::version_client::VersionClient::new(
                            channel.clone(),
                        );
                    match version.version(()).await {
                        Ok(v) => {
                            let v = v.into_inner();
                            tracing::info!(address = %address.display(), namespace, version = %v.version, "connected to containerd");
                            return Ok(Containerd {
                                channel,
                                namespace: namespace.to_string(),
                                header,
                            });
                        }
                        Err(s) => s.message().to_string(),
                    }
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() + delay > deadline {
                return Err(Error::Connect { address, reason });
            }
            tracing::debug!(address = %address.display(), %reason, "containerd not ready; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    /// The namespace every request is made in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A request carrying the namespace header.
    fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut()
            .insert(NAMESPACE_HEADER, self.header.clone());
        r
    }

    fn containers(
        &self,
    ) -> containerd_client::services::v1::containers_client::ContainersClient<Channel> {
        containerd_client::services::v1::containers_client::ContainersClient::new(
            self.channel.clone(),
        )
    }
    fn tasks(&self) -> containerd_client::services::v1::tasks_client::TasksClient<Channel> {
        containerd_client::services::v1::tasks_client::TasksClient::new(self.channel.clone())
    }
    fn snapshots(
        &self,
    ) -> containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient<Channel>
    {
        containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient::new(
            self.channel.clone(),
        )
    }

    /// Creates container `id` (runtime [`RUNTIME`] with the shim's
    /// `options`, `spec`, `labels` plus the managed label) and its task,
    /// not started. The task's journal is under `options.dir`. On failure
    /// nothing is left behind.
    pub async fn create(
        &self,
        id: &str,
        spec: &Spec,
        root: &RootSource,
        labels: HashMap<String, String>,
        options: &ShimOptions,
    ) -> Result<Created> {
        self.create_inner(id, spec, root, labels, options, true)
            .await
    }

    /// Like [`Containerd::create`] but without a task: the container and,
    /// for an image, its snapshot (prepared, so it can receive rootfs
    /// changes before a task is created from a checkpoint). `pid` is 0.
    pub async fn create_without_task(
        &self,
        id: &str,
        spec: &Spec,
        root: &RootSource,
        labels: HashMap<String, String>,
        options: &ShimOptions,
    ) -> Result<Created> {
        self.create_inner(id, spec, root, labels, options, false)
            .await
    }

    async fn create_inner(
        &self,
        id: &str,
        spec: &Spec,
        root: &RootSource,
        labels: HashMap<String, String>,
        options: &ShimOptions,
        with_task: bool,
    ) -> Result<Created> {
        let span = tracing::info_span!("containerd.create", container = id);
        let _enter = span.enter();
        let spec_json = serde_json::to_vec(spec).map_err(crate::spec::Error::ImageConfig)?;
        tracing::debug!(
            journal_root = %options.dir,
            budget_bytes = options.budget_bytes,
            segment_bytes = options.segment_bytes,
            max_segments = ?options.max_segments,
            policy = %options.policy,
            "shim options"
        );
        let mut labels = labels;
        labels.insert(crate::spec::MANAGED_LABEL.to_string(), "true".to_string());
        let mut container = Container {
            id: id.to_string(),
            labels,
            runtime: Some(Runtime {
                name: RUNTIME.to_string(),
                options: Some(options::to_any(options)),
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE_URL.to_string(),
                value: spec_json,
            }),
            ..Default::default()
        };
        let image_chain = match root {
            RootSource::Folder(dir) => {
                if !dir.is_absolute() || !dir.is_dir() {
                    return Err(Error::NotFound(format!("rootfs folder {}", dir.display())));
                }
                None
            }
            RootSource::Image(name) => {
                let info = self.image(name).await?;
                container.image = name.clone();
                container.snapshotter = DEFAULT_SNAPSHOTTER.to_string();
                container.snapshot_key = id.to_string();
                Some((name.clone(), info.chain_id))
            }
        };
        self.containers()
            .create(self.req(CreateContainerRequest {
                container: Some(container),
            }))
            .await
            .map_err(|s| Error::from_status("containers.create", id, s))?;
        let made = async {
            let rootfs = self.prepare_rootfs(id, root, image_chain).await?;
            if !with_task {
                return Ok(0);
            }
            self.create_task(id, spec, rootfs).await
        };
        match made.await {
            Ok(pid) => {
                tracing::info!(pid, with_task, "container created");
                Ok(Created {
                    pid,
                    journal_dir: journal_dir(Path::new(&options.dir), &self.namespace, id),
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "create failed; removing the container");
                if let Err(e2) = self.delete_container(id).await {
                    tracing::warn!(error = %e2, "could not remove the container after a failed create");
                }
                Err(e)
            }
        }
    }

    /// The rootfs mounts of a new task: a bind mount of the folder, or a
    /// new snapshot of the image (key `id`) prepared on its chain id.
    async fn prepare_rootfs(
        &self,
        id: &str,
        root: &RootSource,
        image_chain: Option<(String, String)>,
    ) -> Result<Vec<Mount>> {
        match (root, image_chain) {
            (RootSource::Folder(dir), _) => Ok(vec![folder_mount(dir)]),
            (RootSource::Image(_), Some((image, chain_id))) => {
                let resp = self
                    .snapshots()
                    .prepare(self.req(PrepareSnapshotRequest {
                        snapshotter: DEFAULT_SNAPSHOTTER.to_string(),
                        key: id.to_string(),
                        parent: chain_id,
                        labels: HashMap::new(),
                    }))
                    .await;
                match resp {
                    Ok(r) => Ok(r.into_inner().mounts),
                    Err(s) if s.code() == tonic::Code::NotFound => Err(Error::ImageNotUnpacked {
                        image,
                        snapshotter: DEFAULT_SNAPSHOTTER.to_string(),
                    }),
                    Err(s) => Err(Error::from_status("snapshots.prepare", id, s)),
                }
            }
            (RootSource::Image(image), None) => Err(Error::Image {
                image: image.clone(),
                reason: "no chain id".to_string(),
            }),
        }
    }

    async fn create_task(&self, id: &str, spec: &Spec, rootfs: Vec<Mount>) -> Result<u32> {
        let terminal = spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        let resp = self
            .tasks()
            .create(self.req(CreateTaskRequest {
                container_id: id.to_string(),
                rootfs,
                terminal,
                ..Default::default()
            }))
            .await
            .map_err(|s| Error::from_status("tasks.create", id, s))?;
        Ok(resp.into_inner().pid)
    }

    /// Starts task `id`'s init process; returns its pid.
    pub async fn start(&self, id: &str) -> Result<u32> {
        let resp = self
            .tasks()
            .start(self.req(StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| Error::from_status("tasks.start", id, s))?;
        let pid = resp.into_inner().pid;
        tracing::info!(container = id, pid, "task started");
        Ok(pid)
    }

    /// Sends `signal` to task `id`'s init process, or to all its processes.
    pub async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        self.tasks()
            .kill(self.req(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal,
                all,
            }))
            .await
            .map_err(|s| Error::from_status("tasks.kill", id, s))?;
        tracing::info!(container = id, signal, all, "task signalled");
        Ok(())
    }

    /// Waits until task `id`'s init process exits.
    pub async fn wait(&self, id: &str) -> Result<ExitStatus> {
        self.wait_process(id, "").await
    }

    pub(crate) async fn wait_process(&self, id: &str, exec_id: &str) -> Result<ExitStatus> {
        let resp = self
            .tasks()
            .wait(self.req(WaitRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
            .map_err(|s| Error::from_status("tasks.wait", id, s))?
            .into_inner();
        Ok(ExitStatus {
            code: resp.exit_status,
            exited_at: to_system_time(resp.exited_at),
        })
    }

    /// Deletes task `id` (it must have exited); returns its exit status.
    pub async fn delete_task(&self, id: &str) -> Result<ExitStatus> {
        let resp = self
            .tasks()
            .delete(self.req(DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await
            .map_err(|s| Error::from_status("tasks.delete", id, s))?
            .into_inner();
        tracing::info!(
            container = id,
            exit_status = resp.exit_status,
            "task deleted"
        );
        Ok(ExitStatus {
            code: resp.exit_status,
            exited_at: to_system_time(resp.exited_at),
        })
    }

    /// Deletes container `id` and, for an image, its snapshot. The task must
    /// be deleted first.
    pub async fn delete_container(&self, id: &str) -> Result<()> {
        let container = Some(self.container(id).await?);
        self.containers()
            .delete(self.req(DeleteContainerRequest { id: id.to_string() }))
            .await
            .map_err(|s| Error::from_status("containers.delete", id, s))?;
        if let Some(c) = container.filter(|c| !c.snapshot_key.is_empty()) {
            let snapshotter = if c.snapshotter.is_empty() {
                DEFAULT_SNAPSHOTTER.to_string()
            } else {
                c.snapshotter
            };
            match self
                .snapshots()
                .remove(self.req(RemoveSnapshotRequest {
                    snapshotter,
                    key: c.snapshot_key,
                }))
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => return Err(Error::from_status("snapshots.remove", id, s)),
            }
        }
        tracing::info!(container = id, "container deleted");
        Ok(())
    }

    /// Every task of the namespace (init processes).
    pub async fn list_tasks(&self) -> Result<Vec<TaskInfo>> {
        let resp = self
            .tasks()
            .list(self.req(ListTasksRequest {
                filter: String::new(),
            }))
            .await
            .map_err(|s| Error::from_status("tasks.list", "", s))?
            .into_inner();
        Ok(resp
            .tasks
            .into_iter()
            .map(|p| TaskInfo {
                // containerd 1.6/1.7 put the container id in `id` and leave
                // `container_id` empty in ListTasks.
                id: if p.container_id.is_empty() {
                    p.id
                } else {
                    p.container_id
                },
                pid: p.pid,
                status: TaskStatus::from_i32(p.status),
                exit_status: p.exit_status,
                exited_at: to_system_time(p.exited_at),
            })
            .collect())
    }

    /// Task `id` (its init process), if there is one: one call to
    /// containerd, not a listing of every task.
    pub async fn get_task(&self, id: &str) -> Result<Option<TaskInfo>> {
        let resp = self
            .tasks()
            .get(self.req(GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await;
        match resp {
            Ok(r) => Ok(r.into_inner().process.map(|p| TaskInfo {
                id: id.to_string(),
                pid: p.pid,
                status: TaskStatus::from_i32(p.status),
                exit_status: p.exit_status,
                exited_at: to_system_time(p.exited_at),
            })),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(Error::from_status("tasks.get", id, s)),
        }
    }

    /// The containers of the namespace matching containerd `filters`
    /// (e.g. [`managed_filter`]); all of them when empty.
    pub async fn list_containers(&self, filters: &[String]) -> Result<Vec<ContainerInfo>> {
        let resp = self
            .containers()
            .list(self.req(ListContainersRequest {
                filters: filters.to_vec(),
            }))
            .await
            .map_err(|s| Error::from_status("containers.list", "", s))?
            .into_inner();
        Ok(resp
            .containers
            .into_iter()
            .map(|c| ContainerInfo {
                snapshot: (!c.snapshot_key.is_empty())
                    .then(|| (c.snapshotter.clone(), c.snapshot_key.clone())),
                id: c.id,
                labels: c.labels,
                image: c.image,
                runtime: c.runtime.map(|r| r.name).unwrap_or_default(),
            })
            .collect())
    }

    /// containerd's container `id`; NotFound without it.
    async fn container(&self, id: &str) -> Result<Container> {
        self.containers()
            .get(self.req(GetContainerRequest { id: id.to_string() }))
            .await
            .map_err(|s| Error::from_status("containers.get", id, s))?
            .into_inner()
            .container
            .ok_or_else(|| Error::NotFound(format!("container {id}")))
    }

    /// The shim options container `id` was created with: `None` when they
    /// are not holdfast's (or do not decode); NotFound without the
    /// container.
    pub async fn shim_options(&self, id: &str) -> Result<Option<ShimOptions>> {
        let c = self.container(id).await?;
        Ok(c.runtime
            .and_then(|r| r.options)
            .and_then(|any| options::from_any(&any)))
    }

    /// The runtime spec stored with container `id`.
    pub async fn spec(&self, id: &str) -> Result<Spec> {
        let c = self.container(id).await?;
        let any = c
            .spec
            .ok_or_else(|| Error::NotFound(format!("spec of container {id}")))?;
        Ok(serde_json::from_slice(&any.value).map_err(crate::spec::Error::ImageConfig)?)
    }
}

/// The task rootfs of a folder container: a bind mount of it.
fn folder_mount(dir: &Path) -> Mount {
    Mount {
        r#type: "bind".to_string(),
        source: dir.display().to_string(),
        options: vec!["rbind".to_string(), "rw".to_string()],
        ..Default::default()
    }
}

/// The containerd filter selecting the containers holdfastd created.
pub fn managed_filter() -> String {
    format!("labels.\"{}\"==true", crate::spec::MANAGED_LABEL)
}
