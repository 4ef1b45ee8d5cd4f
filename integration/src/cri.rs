//! The CRI fixture: a private [`Containerd`] with its CRI plugin enabled,
//! driven by a CRI client acting as kubelet.
//!
//! Its config is built from the shipped snippet of its version
//! (`contrib/cri/containerd-<v>.toml`, handler `holdfast`, with `ConfigPath`
//! pointed at the fixture's own copy of `contrib/cri/shim.toml`), plus a
//! handler `runc` (containerd's Go shim) and a handler
//! [`MISSING_CONFIG_HANDLER`] whose shim TOML does not exist. Everything
//! lives under the fixture's folder: the CRI plugin's root and state, the
//! pods' network namespaces (`netns_mounts_under_state_dir`), the CNI
//! config and IPAM data, the shim journals and the pod log folders. What
//! cannot (the bridge link, CNI's result cache in /var/lib/cni, runc's state
//! in /run/containerd/runc/k8s.io, shim sockets) is named uniquely and
//! removed by [`Cri::teardown`]; [`Cri::leaks`] reports all of it.
//!
//! Images are built on the spot ([`crate::image`]) and imported with
//! `ctr -n k8s.io images import`: a pause image (busybox `sleep infinity`)
//! set as `sandbox_image`, and an app image of the busybox rootfs.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::api::ApiError;
use crate::image::{self, Image};
use crate::logs::{self, CriRecord, Progress};
use crate::{cmd, system, Containerd, Fixture, Version};

/// The handler of holdfast's shim (the shipped snippet's).
pub const HANDLER: &str = "holdfast";
/// The handler of containerd's Go shim (`io.containerd.runc.v2`).
pub const RUNC_HANDLER: &str = "runc";
/// A holdfast handler whose `ConfigPath` names a file that does not exist.
pub const MISSING_CONFIG_HANDLER: &str = "holdfast-missing-config";
/// A holdfast handler whose shim TOML sets `shim_per = "container"`.
pub const PER_CONTAINER_HANDLER: &str = "holdfast-per-container";
/// The handler the tests run pods on: [`HANDLER`], or [`RUNC_HANDLER`]
/// when `HOLDFAST_TEST_RUNTIME` names the Go shim (to check the tests
/// themselves).
pub fn handler_under_test() -> &'static str {
    if crate::is_go_shim() {
        RUNC_HANDLER
    } else {
        HANDLER
    }
}

/// CRI's containerd namespace.
pub const CRI_NAMESPACE: &str = "k8s.io";
/// Where Debian's containernetworking-plugins installs the CNI plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// Where libcni caches each attachment's result, whatever containerd's
/// config says (`<network>-<sandbox id>-<ifname>`).
pub const CNI_RESULTS_DIR: &str = "/var/lib/cni/results";
/// The loopback network containerd adds to every pod (go-cni).
const LOOPBACK_NETWORK: &str = "cni-loopback";
/// The shim TOML path the shipped snippets name.
const SHIPPED_CONFIG_PATH: &str = "/etc/holdfast/shim.toml";
/// The shipped shim TOML's grouping line.
const SHIPPED_SHIM_PER: &str = "shim_per = \"pod\"";
/// The journal dir the shipped shim TOML names.
const SHIPPED_JOURNAL_DIR: &str = "dir = \"/var/lib/holdfast/logs\"";
/// The Kubernetes namespace of the fixture's pods.
pub const POD_NAMESPACE: &str = "hf-it";
/// How long one CRI call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The shipped CRI snippet for `version`.
pub fn snippet_path(version: Version) -> PathBuf {
    crate::repo_root()
        .join("contrib/cri")
        .join(format!("containerd-{version}.toml"))
}

/// The fixture's network: a bridge, a subnet and an IPAM folder of its own.
#[derive(Debug, Clone)]
pub struct Net {
    /// The CNI network name (also the prefix of its result cache files).
    pub name: String,
    /// The bridge link.
    pub bridge: String,
    /// The subnet's first three octets, e.g. `10.213.57`.
    pub prefix: String,
    /// host-local's `dataDir`.
    pub ipam_dir: PathBuf,
    /// The CNI config folder.
    pub conf_dir: PathBuf,
}

impl Net {
    fn for_fixture(cd: &Containerd) -> Net {
        let uniq = cd.uniq();
        // No gateway on the bridge, so the host gets no route to the
        // subnet: two fixtures that pick the same one cannot disturb each
        // other or the host; the spread only makes the checks sharper.
        let h = uniq
            .bytes()
            .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
        Net {
            name: format!("hf-it-{uniq}"),
            bridge: format!("hf{uniq}"),
            prefix: format!("10.213.{}", 16 + h % 224),
            ipam_dir: cd.dir().join("cni/ipam"),
            conf_dir: cd.dir().join("cni/net.d"),
        }
    }

    /// The subnet in CIDR form.
    pub fn subnet(&self) -> String {
        format!("{}.0/24", self.prefix)
    }

    fn conflist(&self) -> String {
        serde_json::json!({
            "cniVersion": "0.4.0",
            "name": self.name,
            "plugins": [{
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": false,
                "ipMasq": false,
                "hairpinMode": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": self.subnet() }]],
                    "dataDir": self.ipam_dir,
                },
            }],
        })
        .to_string()
    }
}

/// The shipped `snippet` (its comments dropped) as handler `name`, with
/// the shim TOML `toml` instead of `from`.
fn handler_copy(snippet: &str, name: &str, from: &Path, toml: &Path) -> String {
    snippet
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace(".runtimes.holdfast]", &format!(".runtimes.{name}]"))
        .replace(
            ".runtimes.holdfast.options]",
            &format!(".runtimes.{name}.options]"),
        )
        .replace(&from.display().to_string(), &toml.display().to_string())
}

/// The containerd config text of the CRI plugin for a fixture.
fn plugin_config(cd: &Containerd, net: &Net, pause: &str) -> Result<String> {
    let d = cd.dir();
    let shim_toml = d.join("shim.toml");
    let shipped_shim = crate::repo_root().join("contrib/cri/shim.toml");
    let text = fs::read_to_string(&shipped_shim)
        .with_context(|| format!("read {}", shipped_shim.display()))?;
    if !text.contains(SHIPPED_JOURNAL_DIR) {
        bail!(
            "{} has no line {SHIPPED_JOURNAL_DIR:?} to point at the fixture",
            shipped_shim.display()
        );
    }
    let ours = text.replace(
        SHIPPED_JOURNAL_DIR,
        &format!("dir = \"{}\"", d.join("journal").display()),
    );
    fs::write(&shim_toml, &ours).with_context(|| format!("write {}", shim_toml.display()))?;

    let snippet_file = snippet_path(cd.version());
    let snippet = fs::read_to_string(&snippet_file)
        .with_context(|| format!("read {}", snippet_file.display()))?;
    let quoted = format!("\"{SHIPPED_CONFIG_PATH}\"");
    if !snippet.contains(&quoted) {
        bail!(
            "{} does not name {quoted}: the fixture cannot point it at its own TOML",
            snippet_file.display()
        );
    }
    let snippet = snippet.replace(&quoted, &format!("\"{}\"", shim_toml.display()));
    // The same handler again under other names: with a TOML path that does
    // not exist, and with a TOML that gives each task its own shim.
    let per_container_toml = d.join("shim-per-container.toml");
    if !ours.contains(SHIPPED_SHIM_PER) {
        bail!(
            "{} has no line {SHIPPED_SHIM_PER:?}",
            shipped_shim.display()
        );
    }
    fs::write(
        &per_container_toml,
        ours.replace(SHIPPED_SHIM_PER, "shim_per = \"container\""),
    )
    .with_context(|| format!("write {}", per_container_toml.display()))?;
    let missing = handler_copy(
        &snippet,
        MISSING_CONFIG_HANDLER,
        &shim_toml,
        &d.join("missing.toml"),
    );
    let per_container = handler_copy(
        &snippet,
        PER_CONTAINER_HANDLER,
        &shim_toml,
        &per_container_toml,
    );

    fs::create_dir_all(&net.conf_dir)
        .with_context(|| format!("create {}", net.conf_dir.display()))?;
    fs::write(net.conf_dir.join("10-holdfast-it.conflist"), net.conflist())
        .context("write the CNI config")?;

    let cri = r#"plugins."io.containerd.grpc.v1.cri""#;
    Ok(format!(
        r#"  [{cri}]
    sandbox_image = "{pause}"
    # Root here lacks CAP_SYS_RESOURCE (see NOTES.md).
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    # Pod network namespaces under the CRI state dir, not /var/run/netns.
    netns_mounts_under_state_dir = true
    enable_selinux = false
    [{cri}.containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "{RUNC_HANDLER}"
      [{cri}.containerd.runtimes.{RUNC_HANDLER}]
        runtime_type = "io.containerd.runc.v2"
    [{cri}.cni]
      bin_dir = "{CNI_BIN_DIR}"
      conf_dir = "{conf}"
      max_conf_num = 1

# --- the shipped snippet ({snippet_file}) ---
{snippet}

# --- a handler whose shim TOML is missing ---
{missing}

# --- a handler with one shim per container ---
{per_container}
"#,
        conf = net.conf_dir.display(),
        snippet_file = snippet_file.display(),
    ))
}

/// A private containerd with the CRI plugin, and a CRI client. See the
/// module docs.
pub struct Cri {
    cd: Containerd,
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    net: Net,
    pause_image: String,
    app_image: String,
    counter: AtomicUsize,
    /// Every sandbox and container id CRI handed out or listed.
    ids: Mutex<Vec<String>>,
    /// Pod log folders made for pods (kubelet's job).
    log_dirs: Mutex<Vec<PathBuf>>,
}

/// A pod made by [`Cri::run_with_tmp`].
#[derive(Debug, Clone)]
pub struct TmpPod {
    /// The sandbox id.
    pub pod: String,
    /// The container id.
    pub container: String,
    /// The container's CRI log file.
    pub log: PathBuf,
    /// The host folder mounted at the container's `/tmp`.
    pub host: PathBuf,
}

impl TmpPod {
    /// The file `name` in the container's `/tmp`, seen from the host.
    pub fn tmp(&self, name: &str) -> PathBuf {
        self.host.join(name)
    }

    /// What the writer `tag` of [`Cri::run_writer`] recorded so far.
    pub fn progress(&self, tag: &str) -> Result<Progress> {
        Progress::read_file(&self.tmp(&format!("progress-{tag}")))
    }

    /// Makes the writer `tag` of [`Cri::run_writer`] stop; waits up to
    /// `timeout` for it to record that it did, then for its container to
    /// exit. Returns its progress.
    pub fn stop_writer(&self, cri: &Cri, tag: &str, timeout: Duration) -> Result<Progress> {
        fs::write(self.tmp(&format!("stop-{tag}")), b"").context("stop the writer")?;
        let p = Progress::wait_done_file(&self.tmp(&format!("progress-{tag}")), timeout)?;
        cri.wait_container_state(
            &self.container,
            cri::ContainerState::ContainerExited,
            Duration::from_secs(60),
        )?;
        Ok(p)
    }

    /// Stops and removes the pod, then its host folder.
    pub fn remove(&self, cri: &Cri) -> Result<()> {
        cri.stop_pod(&self.pod)?;
        cri.remove_pod(&self.pod)?;
        fs::remove_dir_all(&self.host).with_context(|| format!("remove {}", self.host.display()))
    }
}

impl Fixture for Cri {
    fn start(version: Version) -> Result<Self> {
        let name = thread::current().name().unwrap_or("test").to_string();
        Cri::start_named(version, &name)
    }
    fn teardown(&self) -> Vec<String> {
        Cri::teardown(self)
    }
}

fn connect(rt: &tokio::runtime::Runtime, socket: &Path) -> Result<Channel> {
    let path = socket.to_path_buf();
    rt.block_on(async move {
        Endpoint::try_from("http://[::]")
            .context("endpoint")?
            // The URI is not used: every connection goes to the socket.
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
            }))
            .await
            .context("connect to the CRI socket")
    })
}

impl Cri {
    /// Starts a private containerd of `version` with the CRI plugin for the
    /// test `name`, imports the images and waits until CRI reports the
    /// runtime and the network ready.
    pub fn start_named(version: Version, name: &str) -> Result<Cri> {
        let mut net = None;
        let mut images = None;
        let cd = Containerd::start_with(version, name, |cd| {
            let n = Net::for_fixture(cd);
            let uniq = cd.uniq();
            let pause = format!("localhost/holdfast-it/pause:{uniq}");
            let app = format!("localhost/holdfast-it/busybox:{uniq}");
            let cfg = plugin_config(cd, &n, &pause)?;
            net = Some(n);
            images = Some((pause, app));
            Ok(Some(cfg))
        })?;
        let (net, (pause_image, app_image)) = match (net, images) {
            (Some(n), Some(i)) => (n, i),
            _ => bail!("the fixture's plugin config was not made"),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime for the CRI client")?;
        let channel = connect(&rt, &cd.address())?;
        let cri = Cri {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            net,
            pause_image,
            app_image,
            counter: AtomicUsize::new(0),
            ids: Mutex::new(Vec::new()),
            log_dirs: Mutex::new(Vec::new()),
            cd,
        };
        cri.import_images()?;
        cri.wait_ready(Duration::from_secs(30))?;
        Ok(cri)
    }

    /// The containerd under CRI (its ctr helpers use the fixture's own
    /// namespace; [`Containerd::ctr_in`] reaches `k8s.io`).
    pub fn containerd(&self) -> &Containerd {
        &self.cd
    }
    /// The fixture's network.
    pub fn net(&self) -> &Net {
        &self.net
    }
    /// The app image (the busybox rootfs; no entrypoint).
    pub fn app_image(&self) -> &str {
        &self.app_image
    }
    /// The pause image (`sandbox_image`).
    pub fn pause_image(&self) -> &str {
        &self.pause_image
    }
    /// The journal root of the fixture's shim TOML.
    pub fn journal_dir(&self) -> PathBuf {
        self.cd.dir().join("journal")
    }
    /// The CRI plugin's state folder (under the fixture).
    pub fn cri_state_dir(&self) -> PathBuf {
        self.cd.dir().join("state/io.containerd.grpc.v1.cri")
    }
    /// The CRI plugin's root folder (under the fixture).
    pub fn cri_root_dir(&self) -> PathBuf {
        self.cd.dir().join("root/io.containerd.grpc.v1.cri")
    }
    /// Where the pods' network namespaces are mounted.
    pub fn netns_dir(&self) -> PathBuf {
        self.cri_state_dir().join("netns")
    }

    fn import_images(&self) -> Result<()> {
        let pause = Image {
            name: self.pause_image.clone(),
            entrypoint: vec!["/bin/sleep".into()],
            cmd: vec!["infinity".into()],
            layer: image::busybox_layer(&["sleep", "sh"])?,
        };
        let app = Image {
            name: self.app_image.clone(),
            entrypoint: Vec::new(),
            cmd: vec!["/bin/sh".into()],
            layer: image::layer_from_dir(self.cd.rootfs())?,
        };
        let archive = self.cd.dir().join("images.tar");
        image::write_docker_archive(&archive, &[pause, app])?;
        let path = archive.display().to_string();
        self.cd
            .ctr_in(CRI_NAMESPACE, &["images", "import", &path])?
            .ok()
            .context("ctr images import")?;
        let _ = fs::remove_file(&archive);
        // CRI learns about images from containerd's events: wait for both.
        for name in [&self.pause_image, &self.app_image] {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let found = self
                    .call(self.images.clone().image_status(cri::ImageStatusRequest {
                        image: Some(cri::ImageSpec {
                            image: name.clone(),
                            ..Default::default()
                        }),
                        verbose: false,
                    }))
                    .map_err(anyhow::Error::from)
                    .with_context(|| format!("ImageStatus {name}"))?
                    .image
                    .is_some();
                if found {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("CRI does not see the imported image {name} after 20 s");
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Waits until CRI reports the runtime and the network ready (after a
    /// start or a restart of containerd).
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.call(
                self.runtime
                    .clone()
                    .status(cri::StatusRequest { verbose: false }),
            );
            let last = match &status {
                Ok(s) => {
                    let conds = s
                        .status
                        .as_ref()
                        .map(|s| s.conditions.clone())
                        .unwrap_or_default();
                    let ready = |t: &str| conds.iter().any(|c| c.r#type == t && c.status);
                    if ready("RuntimeReady") && ready("NetworkReady") {
                        return Ok(());
                    }
                    format!("{conds:?}")
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                bail!("CRI not ready after {timeout:?}: {last}");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs one CRI call on the client's runtime, bounded by
    /// [`CALL_TIMEOUT`].
    fn call<T>(
        &self,
        fut: impl std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    ) -> std::result::Result<T, ApiError> {
        match self
            .rt
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, fut).await })
        {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(ApiError::from(s)),
            Err(_) => Err(ApiError {
                code: tonic::Code::DeadlineExceeded,
                message: format!("no answer from CRI within {CALL_TIMEOUT:?}"),
            }),
        }
    }

    fn remember(&self, id: &str) {
        if let Ok(mut v) = self.ids.lock() {
            if !v.iter().any(|x| x == id) {
                v.push(id.to_string());
            }
        }
    }

    fn known_ids(&self) -> Vec<String> {
        self.ids.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// A pod config as kubelet would make it: a unique name and uid, a log
    /// folder of its own under the fixture, the fixture's cgroup parent,
    /// the pod network, and a PID namespace per container.
    pub fn pod_config(&self, name: &str) -> cri::PodSandboxConfig {
        let k = self.counter.fetch_add(1, Ordering::SeqCst);
        let uniq = self.cd.uniq();
        let uid = format!("uid-{uniq}-{k}");
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: format!("{name}-{uniq}-{k}"),
                uid: uid.clone(),
                namespace: POD_NAMESPACE.into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: self
                .cd
                .dir()
                .join("pods")
                .join(format!("{POD_NAMESPACE}_{name}_{uid}"))
                .display()
                .to_string(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: self.cd.cgroup_parent().to_string(),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: cri::NamespaceMode::Pod as i32,
                        pid: cri::NamespaceMode::Container as i32,
                        ipc: cri::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A container config of the app image running `command` (argv), its
    /// log at `<name>/0.log` in the pod's log folder (kubelet's layout).
    pub fn container_config(&self, name: &str, command: &[&str]) -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: self.app_image.clone(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}/0.log"),
            linux: Some(cri::LinuxContainerConfig::default()),
            ..Default::default()
        }
    }

    /// RunPodSandbox with `handler`; makes the pod's log folder first (as
    /// kubelet does) and remembers it and the sandbox id for the cleanup.
    pub fn run_pod(
        &self,
        config: &cri::PodSandboxConfig,
        handler: &str,
    ) -> std::result::Result<String, ApiError> {
        let dir = PathBuf::from(&config.log_directory);
        let made = !config.log_directory.is_empty() && !dir.exists();
        if made {
            let _ = fs::create_dir_all(&dir);
            if let Ok(mut v) = self.log_dirs.lock() {
                v.push(dir.clone());
            }
        }
        let r = self.call(
            self.runtime
                .clone()
                .run_pod_sandbox(cri::RunPodSandboxRequest {
                    config: Some(config.clone()),
                    runtime_handler: handler.into(),
                }),
        );
        match r {
            Ok(r) => {
                self.remember(&r.pod_sandbox_id);
                Ok(r.pod_sandbox_id)
            }
            Err(e) => {
                // kubelet removes the folder of a pod that never ran.
                if made {
                    let _ = fs::remove_dir_all(&dir);
                }
                Err(e)
            }
        }
    }

    /// PodSandboxStatus.
    pub fn pod_status(&self, id: &str) -> std::result::Result<cri::PodSandboxStatus, ApiError> {
        let r = self.call(self.runtime.clone().pod_sandbox_status(
            cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            },
        ))?;
        r.status.ok_or_else(|| ApiError {
            code: tonic::Code::Internal,
            message: format!("PodSandboxStatus of {id} has no status"),
        })
    }

    /// The pod's IP (PodSandboxStatus.network.ip).
    pub fn pod_ip(&self, id: &str) -> Result<String> {
        let st = self.pod_status(id)?;
        st.network
            .map(|n| n.ip)
            .filter(|ip| !ip.is_empty())
            .with_context(|| format!("pod {id} has no IP"))
    }

    /// CreateContainer in pod `pod_id` (created with `pod_config`).
    pub fn create_container(
        &self,
        pod_id: &str,
        config: &cri::ContainerConfig,
        pod_config: &cri::PodSandboxConfig,
    ) -> std::result::Result<String, ApiError> {
        let r = self.call(
            self.runtime
                .clone()
                .create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: pod_id.into(),
                    config: Some(config.clone()),
                    sandbox_config: Some(pod_config.clone()),
                }),
        )?;
        self.remember(&r.container_id);
        Ok(r.container_id)
    }

    /// StartContainer.
    pub fn start_container(&self, id: &str) -> std::result::Result<(), ApiError> {
        self.call(
            self.runtime
                .clone()
                .start_container(cri::StartContainerRequest {
                    container_id: id.into(),
                }),
        )
        .map(|_| ())
    }

    /// ContainerStatus (verbose: its `info` has containerd's view, with
    /// the pid).
    pub fn container_status(
        &self,
        id: &str,
    ) -> std::result::Result<cri::ContainerStatusResponse, ApiError> {
        self.call(
            self.runtime
                .clone()
                .container_status(cri::ContainerStatusRequest {
                    container_id: id.into(),
                    verbose: true,
                }),
        )
    }

    /// The state of container `id` and its pid (from the verbose info).
    pub fn container_state(&self, id: &str) -> Result<(cri::ContainerState, u32)> {
        let r = self.container_status(id)?;
        let st = r
            .status
            .with_context(|| format!("ContainerStatus of {id} has no status"))?;
        let state = cri::ContainerState::try_from(st.state)
            .with_context(|| format!("unknown container state {}", st.state))?;
        let pid = r
            .info
            .get("info")
            .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
            .and_then(|v| v.get("pid").and_then(|p| p.as_u64()))
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0);
        Ok((state, pid))
    }

    /// Waits until container `id` is in `state`.
    pub fn wait_container_state(
        &self,
        id: &str,
        state: cri::ContainerState,
        timeout: Duration,
    ) -> Result<u32> {
        let deadline = Instant::now() + timeout;
        loop {
            let (now, pid) = self.container_state(id)?;
            if now == state {
                return Ok(pid);
            }
            if Instant::now() >= deadline {
                bail!("container {id} is {now:?}, not {state:?}, after {timeout:?}");
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// ExecSync of `cmd` in container `id` (CRI's own timeout:
    /// `timeout_s` seconds).
    pub fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout_s: i64,
    ) -> std::result::Result<cri::ExecSyncResponse, ApiError> {
        self.call(self.runtime.clone().exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: timeout_s,
        }))
    }

    /// ReopenContainerLog, as kubelet calls it after renaming the log file.
    pub fn reopen_container_log(&self, id: &str) -> std::result::Result<(), ApiError> {
        self.call(
            self.runtime
                .clone()
                .reopen_container_log(cri::ReopenContainerLogRequest {
                    container_id: id.into(),
                }),
        )
        .map(|_| ())
    }

    /// Runs a pod of `handler` with one container running `sh -c script`,
    /// a new host folder of the fixture's mounted at its `/tmp` (where a
    /// writer of [`logs::numbered_lines_script`] keeps its progress and
    /// looks for its stop file); returns once the container runs.
    pub fn run_with_tmp(&self, handler: &str, name: &str, script: &str) -> Result<TmpPod> {
        let host = self.cd.dir().join(format!(
            "tmp-{name}-{}",
            self.counter.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&host).with_context(|| format!("create {}", host.display()))?;
        let pod_cfg = self.pod_config(name);
        let pod = self.run_pod(&pod_cfg, handler)?;
        let mut cfg = self.container_config(name, &["/bin/sh", "-c", script]);
        cfg.mounts.push(cri::Mount {
            container_path: "/tmp".into(),
            host_path: host.display().to_string(),
            ..Default::default()
        });
        let log = PathBuf::from(&pod_cfg.log_directory).join(&cfg.log_path);
        let container = self.create_container(&pod, &cfg, &pod_cfg)?;
        self.start_container(&container)?;
        self.wait_container_state(
            &container,
            cri::ContainerState::ContainerRunning,
            Duration::from_secs(30),
        )?;
        Ok(TmpPod {
            pod,
            container,
            log,
            host,
        })
    }

    /// Runs a pod of `handler` whose container writes numbered lines as fast
    /// as it can ([`logs::numbered_lines_script`]); returns it and the
    /// writer's tag once the writer made progress and its log file grew.
    pub fn run_writer(&self, handler: &str, name: &str) -> Result<(TmpPod, String)> {
        let tag = format!("w{}", self.cd.uniq());
        let script = logs::numbered_lines_script(&tag, None, false, false);
        let pod = self.run_with_tmp(handler, name, &script)?;
        wait_until(
            "the writer to make progress and its log to grow",
            Duration::from_secs(30),
            || Ok(pod.progress(&tag)?.samples.len() >= 3 && file_len(&pod.log) > 0),
        )?;
        Ok((pod, tag))
    }

    /// StopPodSandbox.
    pub fn stop_pod(&self, id: &str) -> std::result::Result<(), ApiError> {
        self.call(
            self.runtime
                .clone()
                .stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: id.into(),
                }),
        )
        .map(|_| ())
    }

    /// RemovePodSandbox (the pod log folder is kubelet's: see
    /// [`remove_log_dirs`](Self::remove_log_dirs)).
    pub fn remove_pod(&self, id: &str) -> std::result::Result<(), ApiError> {
        self.call(
            self.runtime
                .clone()
                .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: id.into(),
                }),
        )?;
        Ok(())
    }

    /// Removes the pod log folders this fixture made (kubelet does this
    /// after RemovePodSandbox).
    pub fn remove_log_dirs(&self) {
        if let Ok(v) = self.log_dirs.lock() {
            for d in v.iter() {
                let _ = fs::remove_dir_all(d);
            }
        }
    }

    /// ListPodSandbox (all states).
    pub fn list_pods(&self) -> std::result::Result<Vec<cri::PodSandbox>, ApiError> {
        let r = self.call(
            self.runtime
                .clone()
                .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }),
        )?;
        for p in &r.items {
            self.remember(&p.id);
        }
        Ok(r.items)
    }

    /// ListContainers (all states).
    pub fn list_containers(&self) -> std::result::Result<Vec<cri::Container>, ApiError> {
        let r = self.call(
            self.runtime
                .clone()
                .list_containers(cri::ListContainersRequest { filter: None }),
        )?;
        for c in &r.containers {
            self.remember(&c.id);
        }
        Ok(r.containers)
    }

    /// Stops and removes every pod CRI lists, then the pod log folders.
    pub fn remove_all_pods(&self) -> Result<()> {
        let mut errors = Vec::new();
        for p in self.list_pods()? {
            if let Err(e) = self.stop_pod(&p.id) {
                errors.push(format!("stop pod {}: {e}", p.id));
            }
            if let Err(e) = self.remove_pod(&p.id) {
                errors.push(format!("remove pod {}: {e}", p.id));
            }
        }
        self.remove_log_dirs();
        if !errors.is_empty() {
            bail!("{}", errors.join("; "));
        }
        Ok(())
    }

    /// Lines of `ctr -n k8s.io <args>` but the header.
    fn ctr_rows(&self, args: &[&str]) -> Result<Vec<String>> {
        let out = self.cd.ctr_in(CRI_NAMESPACE, args)?;
        Ok(out
            .ok()?
            .lines()
            .skip(1)
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// runc state folders in /run/containerd/runc/k8s.io of this fixture's
    /// containers (their state.json names the fixture's folder).
    fn runc_states(&self) -> Vec<PathBuf> {
        let dir = Path::new(system::RUNC_STATE_DIR).join(CRI_NAMESPACE);
        let mine = self.cd.dir().display().to_string();
        let known = self.known_ids();
        let Ok(rd) = fs::read_dir(&dir) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                let named = p
                    .file_name()
                    .is_some_and(|n| known.iter().any(|k| n.to_string_lossy() == *k));
                named
                    || fs::read_to_string(p.join("state.json"))
                        .map(|s| s.contains(&mine))
                        .unwrap_or(false)
            })
            .collect()
    }

    /// libcni's cached results of this fixture's pods: its network's, and
    /// the loopback network's of the sandbox ids it saw.
    fn cni_cache_files(&self) -> Vec<PathBuf> {
        let known = self.known_ids();
        let own = format!("{}-", self.net.name);
        let Ok(rd) = fs::read_dir(CNI_RESULTS_DIR) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                let n = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                n.starts_with(&own)
                    || n.strip_prefix(&format!("{LOOPBACK_NETWORK}-"))
                        .is_some_and(|rest| known.iter().any(|k| rest.starts_with(k.as_str())))
            })
            .collect()
    }

    /// IP addresses host-local still has allocated.
    fn ipam_allocations(&self) -> Vec<PathBuf> {
        let dir = self.net.ipam_dir.join(&self.net.name);
        let Ok(rd) = fs::read_dir(&dir) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().parse::<std::net::IpAddr>().is_ok())
                    .unwrap_or(false)
            })
            .collect()
    }

    /// Links enslaved to the fixture's bridge (a pod's veth outlived it).
    fn bridge_ports(&self) -> Vec<String> {
        let dir = PathBuf::from("/sys/class/net")
            .join(&self.net.bridge)
            .join("brif");
        fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn bridge_exists(&self) -> bool {
        Path::new("/sys/class/net").join(&self.net.bridge).exists()
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        fs::read_dir(dir)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// Everything this fixture's pods left: the [`Containerd::leaks`]
    /// (shims, mounts incl. network namespaces, cgroups), containers,
    /// tasks and container snapshots in k8s.io, CRI's sandbox and container
    /// folders, network namespace files, runc state, shim sockets, CNI
    /// result caches, IPAM allocations, bridge ports, shim journals and pod
    /// log folders. Empty when clean; needs containerd up.
    pub fn leaks(&self) -> Vec<String> {
        let mut out = self.cd.leaks();
        for (what, args) in [
            ("container", &["c", "ls", "-q"][..]),
            ("task", &["t", "ls"][..]),
        ] {
            match self.cd.ctr_in(CRI_NAMESPACE, args) {
                Ok(o) if o.success() => {
                    let rows: Vec<&str> = o
                        .stdout
                        .lines()
                        .skip(usize::from(what == "task"))
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .collect();
                    out.extend(rows.iter().map(|r| format!("k8s.io {what} {r}")));
                }
                Ok(o) => out.push(format!("ctr {args:?}: {o}")),
                Err(e) => out.push(format!("ctr {args:?}: {e:#}")),
            }
        }
        match self.ctr_rows(&["snapshots", "ls"]) {
            Ok(rows) => out.extend(
                rows.iter()
                    .filter(|r| r.split_whitespace().nth(2) == Some("Active"))
                    .map(|r| format!("k8s.io active snapshot {r}")),
            ),
            Err(e) => out.push(format!("ctr snapshots ls: {e:#}")),
        }
        for sub in ["sandboxes", "containers"] {
            for d in [self.cri_state_dir(), self.cri_root_dir()] {
                for e in Self::entries(&d.join(sub)) {
                    out.push(format!("CRI {sub} folder {}", e.display()));
                }
            }
        }
        for e in Self::entries(&self.netns_dir()) {
            out.push(format!("netns {}", e.display()));
        }
        for p in self.runc_states() {
            out.push(format!("runc state {}", p.display()));
        }
        for id in self.known_ids() {
            let s = system::shim_socket_path(&self.cd.address(), CRI_NAMESPACE, &id);
            if fs::symlink_metadata(&s).is_ok() {
                out.push(format!("shim socket {} ({id})", s.display()));
            }
        }
        for f in self.cni_cache_files() {
            out.push(format!("CNI cache {}", f.display()));
        }
        for f in self.ipam_allocations() {
            out.push(format!("IPAM allocation {}", f.display()));
        }
        for p in self.bridge_ports() {
            out.push(format!("bridge {} port {p}", self.net.bridge));
        }
        for e in Self::entries(&self.journal_dir().join(CRI_NAMESPACE)) {
            out.push(format!("journal {}", e.display()));
        }
        if let Ok(v) = self.log_dirs.lock() {
            for d in v.iter().filter(|d| d.exists()) {
                out.push(format!("pod log folder {}", d.display()));
            }
        }
        out
    }

    /// Waits (up to `timeout`) until [`leaks`](Self::leaks) is empty.
    pub fn wait_no_leaks(&self, timeout: Duration) -> Result<()> {
        system::wait_empty(timeout, || self.leaks())
    }

    /// Removes every pod as kubelet would, then checks nothing is left.
    pub fn assert_clean(&self) -> Result<()> {
        self.remove_all_pods()?;
        self.wait_no_leaks(Duration::from_secs(15))
    }

    /// Tears everything down (the [`Drop`] guard calls this too): every pod
    /// through CRI while containerd is up, then [`Containerd::teardown`],
    /// then what lives outside the fixture folder. Returns what could not
    /// be cleaned.
    pub fn teardown(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.cd.is_up() {
            if let Err(e) = self.remove_all_pods() {
                errors.push(format!("remove pods: {e:#}"));
            }
            let _ = self.list_containers();
        }
        let runc_states = self.runc_states();
        errors.extend(self.cd.teardown());
        for p in runc_states {
            let _ = fs::remove_dir_all(&p);
        }
        for id in self.known_ids() {
            let _ = fs::remove_file(system::shim_socket_path(
                &self.cd.address(),
                CRI_NAMESPACE,
                &id,
            ));
        }
        for f in self.cni_cache_files() {
            if let Err(e) = fs::remove_file(&f) {
                errors.push(format!("remove {}: {e}", f.display()));
            }
        }
        if self.bridge_exists() {
            let mut c = Command::new("ip");
            c.args(["link", "del", &self.net.bridge]);
            match cmd::run(c, None, Duration::from_secs(10)) {
                Ok(o) if o.success() => {}
                Ok(o) => errors.push(format!("{o}")),
                Err(e) => errors.push(format!("ip link del {}: {e:#}", self.net.bridge)),
            }
            if self.bridge_exists() {
                errors.push(format!("bridge {} still exists", self.net.bridge));
            }
        }
        errors
    }
}

impl Drop for Cri {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- containerd {} (CRI) log tail ({}) ---\n{}\n---",
                self.cd.version(),
                self.cd.log_path().display(),
                self.cd.log_tail(60)
            );
        }
        let errors = self.teardown();
        if !errors.is_empty() {
            eprintln!(
                "holdfast-integration CRI teardown of {}: {}",
                self.cd.dir().display(),
                errors.join("; ")
            );
        }
    }
}

/// Parses a pod log file that the CRI plugin wrote
/// (`<RFC3339Nano> <stdout|stderr> <P|F> <text>` lines); an error names the
/// first malformed line.
pub fn parse_pod_log(text: &str) -> Result<Vec<CriRecord>> {
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            logs::parse_pod_log_line(l.as_bytes())
                .with_context(|| format!("pod log line {}", i + 1))
        })
        .collect()
}

/// The texts of `stream`'s records, in order.
pub fn stream_texts(records: &[CriRecord], stream: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.stream == stream)
        .map(|r| String::from_utf8_lossy(&r.text).into_owned())
        .collect()
}

/// The lines of `stream`, as kubelet reads them: a `P` record's text is
/// joined with the records after it up to the next `F`.
pub fn whole_lines(records: &[CriRecord], stream: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = Vec::new();
    for r in records.iter().filter(|r| r.stream == stream) {
        pending.extend_from_slice(&r.text);
        if !r.partial {
            out.push(String::from_utf8_lossy(&pending).into_owned());
            pending.clear();
        }
    }
    out
}

/// The records of the whole lines of the pod log file at `path` (a writer
/// may be in the middle of the last one); a missing file has none.
pub fn read_pod_log(path: &Path) -> Result<Vec<CriRecord>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    parse_pod_log(&text[..text.rfind('\n').map_or(0, |i| i + 1)])
}

/// The records of the log files `paths` (oldest first, as after a
/// rotation), once they hold `lines` whole stdout lines between them or
/// stopped growing for 3 s (lines were lost).
pub fn wait_log_lines(paths: &[&Path], lines: u64) -> Result<Vec<CriRecord>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let size = || -> u64 { paths.iter().map(|p| file_len(p)).sum() };
    let (mut len, mut since) = (size(), Instant::now());
    loop {
        let mut records = Vec::new();
        for p in paths {
            records.extend(read_pod_log(p)?);
        }
        let have = whole_lines(&records, "stdout").len() as u64;
        if have >= lines || since.elapsed() >= Duration::from_secs(3) {
            return Ok(records);
        }
        if Instant::now() >= deadline {
            bail!("{paths:?} hold {have} of {lines} lines after 120 s");
        }
        thread::sleep(Duration::from_millis(200));
        let now = size();
        if now != len {
            (len, since) = (now, Instant::now());
        }
    }
}

/// The size of the file at `p` (0 when missing).
pub fn file_len(p: &Path) -> u64 {
    fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Polls `f` every 50 ms until it returns `Some`; fails after `timeout`.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("{what}: not within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// [`poll`] for a condition.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<bool>,
) -> Result<()> {
    poll(what, timeout, || Ok(f()?.then_some(())))
}

/// A pod log's stdout lines checked against the numbers `0..written` a
/// writer of [`logs::numbered_lines_script`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct LogCheck {
    /// Lines the container wrote.
    pub written: u64,
    /// `stdout` lines in the log.
    pub logged: u64,
    /// Numbers the container wrote that the log lacks.
    pub lost: u64,
    /// Lines beyond the first of their number.
    pub duplicated: u64,
    /// Lines whose number is not the one after the previous line's.
    pub out_of_order: u64,
    /// Lines that are not a number the container wrote.
    pub foreign: u64,
    /// Whether the log's timestamps never go back.
    pub times_ordered: bool,
}

impl LogCheck {
    /// Checks the stdout lines of `records` (kubelet's joining of `P`
    /// records) against `0..written`.
    pub fn of(records: &[CriRecord], written: u64) -> LogCheck {
        let texts = whole_lines(records, "stdout");
        let mut seen = HashSet::new();
        let (mut duplicated, mut out_of_order, mut foreign) = (0, 0, 0);
        let mut prev: Option<u64> = None;
        for t in &texts {
            match t.parse::<u64>() {
                Ok(n) if n < written => {
                    if !seen.insert(n) {
                        duplicated += 1;
                    }
                    if prev.map_or(n != 0, |p| n != p + 1) {
                        out_of_order += 1;
                    }
                    prev = Some(n);
                }
                _ => foreign += 1,
            }
        }
        let times: Vec<String> = records.iter().map(|r| sortable(&r.time)).collect();
        LogCheck {
            written,
            logged: texts.len() as u64,
            lost: written - seen.len() as u64,
            duplicated,
            out_of_order,
            foreign,
            times_ordered: times.windows(2).all(|w| w[0] <= w[1]),
        }
    }

    /// Every line once, in order, and nothing else.
    pub fn exact(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.out_of_order == 0
            && self.foreign == 0
            && self.logged == self.written
    }
}

/// A CRI timestamp in a form that sorts as the time does: RFC3339Nano
/// drops trailing zeros of the fraction (containerd writes it so), which
/// breaks a plain string comparison.
fn sortable(ts: &str) -> String {
    let body = ts.trim_end_matches('Z');
    let (secs, frac) = body.split_once('.').unwrap_or((body, ""));
    format!("{secs}.{frac:0<9}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_logs_parse() {
        let text = "2026-11-24T01:02:03.123456789Z stdout F hello world\n\
                    2026-11-24T01:02:03.2Z stderr P \n";
        let l = parse_pod_log(text).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(stream_texts(&l, "stdout"), vec!["hello world".to_string()]);
        assert!(l[1].partial);
        assert!(parse_pod_log("2026-11-24T01:02:03Z stdin F x\n").is_err());
        let split = parse_pod_log(
            "2026-11-24T01:02:03Z stdout P ab\n\
             2026-11-24T01:02:03Z stderr F e\n\
             2026-11-24T01:02:03Z stdout F c\n",
        )
        .unwrap();
        assert_eq!(whole_lines(&split, "stdout"), vec!["abc".to_string()]);
        assert_eq!(whole_lines(&split, "stderr"), vec!["e".to_string()]);
    }

    fn rec(time: &str, text: &str, partial: bool) -> CriRecord {
        CriRecord {
            time: time.into(),
            stream: "stdout".into(),
            partial,
            text: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn lost_repeated_and_reordered_lines_are_counted() {
        let t = "2026-11-24T01:02:03.1Z";
        let exact = [rec(t, "0", false), rec(t, "1", true), rec(t, "", false)];
        let m = LogCheck::of(&exact, 2);
        assert!(m.exact() && m.times_ordered, "{m:?}");
        let bad = [
            rec(t, "0", false),
            rec(t, "2", false),
            rec(t, "2", false),
            rec(t, "x", false),
        ];
        let m = LogCheck::of(&bad, 4);
        assert_eq!(
            (m.lost, m.duplicated, m.out_of_order, m.foreign),
            (2, 1, 2, 1)
        );
        assert!(!m.exact());
        let back = [
            rec("2026-11-24T01:02:03.5Z", "0", false),
            rec("2026-11-24T01:02:03.45Z", "1", false),
        ];
        assert!(!LogCheck::of(&back, 2).times_ordered);
    }

    #[test]
    fn the_shipped_snippets_name_the_handler_and_the_config_path() {
        for v in [Version::V1_6, Version::V1_7] {
            let s = fs::read_to_string(snippet_path(v)).unwrap();
            let table: toml::Table = s.parse().unwrap();
            let rt =
                &table["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"][HANDLER];
            assert_eq!(rt["runtime_type"].as_str(), Some(crate::RUST_RUNTIME));
            assert_eq!(
                rt["options"]["ConfigPath"].as_str(),
                Some(SHIPPED_CONFIG_PATH)
            );
        }
    }
}
