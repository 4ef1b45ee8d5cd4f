//! Shared by holdfastd's end-to-end tests: a config for a fixture's private
//! containerd, the built `holdfastd` under a kill-on-drop guard, clients of
//! its socket (API and health), and container specs.
#![allow(dead_code)]

pub mod cli;
pub mod count;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use holdfast_api::v1::containers_client::ContainersClient;
use holdfast_api::v1::{
    Container, ContainerSpec, ContainerState, ContainerStatus, CreateRequest, InspectRequest,
    ListRequest, LogStream, LogsRequest, RestartPolicy, RestartPolicyKind, StartRequest,
};
use holdfast_integration::Containerd as Fixture;
use hyper_util::rt::TokioIo;
use nix::sys::signal::Signal;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Where one holdfastd of a fixture keeps things.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The config file.
    pub config: PathBuf,
    /// holdfastd's root (database).
    pub root: PathBuf,
    /// The API socket.
    pub socket: PathBuf,
    /// The journal root.
    pub logs: PathBuf,
    /// holdfastd's stderr.
    pub log: PathBuf,
}

impl Paths {
    /// The paths of holdfastd in fixture `cd`.
    pub fn new(cd: &Fixture) -> Paths {
        let root = cd.dir().join("hd");
        Paths {
            config: cd.dir().join("holdfastd.toml"),
            socket: root.join("run/holdfastd.sock"),
            root,
            logs: cd.dir().join("hd-logs"),
            log: cd.dir().join("holdfastd.log"),
        }
    }

    /// The database file.
    pub fn db(&self) -> PathBuf {
        self.root.join(holdfast_manager::store::DB_FILE)
    }

    /// Writes the config: the fixture's containerd, namespace and cgroup
    /// parent, debug logging, `live_restore`, plus `extra` top-level keys.
    pub fn write_config(&self, cd: &Fixture, live_restore: bool, extra: &str) -> Result<()> {
        self.write_config_with_log(cd, live_restore, extra, "")
    }

    /// [`Paths::write_config`], plus `log` keys in the `[log]` table (after
    /// its `dir`).
    pub fn write_config_with_log(
        &self,
        cd: &Fixture,
        live_restore: bool,
        extra: &str,
        log: &str,
    ) -> Result<()> {
        std::fs::write(
            &self.config,
            format!(
                "root = {root:?}\nsocket = {socket:?}\nlog_level = \"debug\"\ncgroup_parent = {parent:?}\n\
                 live_restore = {live_restore}\n{extra}\n\
                 \n[containerd]\naddress = {address:?}\nnamespace = {ns:?}\n\n[log]\ndir = {logs:?}\n{log}\n",
                root = self.root,
                socket = self.socket,
                logs = self.logs,
                parent = cd.cgroup_parent(),
                address = cd.address(),
                ns = cd.namespace(),
            ),
        )
        .context("write holdfastd.toml")
    }
}

/// `holdfastd`, killed (SIGKILL) when dropped unless it already exited.
pub struct Daemon {
    child: Option<Child>,
    /// Its stderr (appended to across restarts).
    pub stderr: PathBuf,
}

impl Daemon {
    /// Starts holdfastd with `paths`' config, its stderr appended to
    /// `paths.log`.
    pub fn spawn(paths: &Paths) -> Result<Daemon> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&paths.log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_holdfastd"))
            .arg("--config")
            .arg(&paths.config)
            .env("RUST_BACKTRACE", "0")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawn holdfastd")?;
        Ok(Daemon {
            child: Some(child),
            stderr: paths.log.clone(),
        })
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Its pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let pid = self.pid().context("holdfastd is not running")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(pid)?), signal)?;
        Ok(())
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Waits up to `timeout` for holdfastd to exit by itself; checks it
    /// exited 0 and returns how long it took.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Duration> {
        let t = Instant::now();
        let Some(mut child) = self.child.take() else {
            bail!("holdfastd is not running");
        };
        loop {
            if let Some(status) = child.try_wait()? {
                ensure!(status.success(), "holdfastd exited with {status}");
                return Ok(t.elapsed());
            }
            if t.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!("holdfastd did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits up to 15 s for a clean exit.
    pub fn terminate(&mut self) -> Result<Duration> {
        self.signal(Signal::SIGTERM)?;
        self.wait_exit(Duration::from_secs(15))
    }

    /// Waits until its log has `needle` at least `count` times.
    pub fn wait_log(&self, needle: &str, count: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.log().matches(needle).count() < count {
            ensure!(
                Instant::now() < deadline,
                "holdfastd's log has not {count} × {needle:?} after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn channel(socket: &Path, daemon: &Daemon) -> Result<Channel> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let path = socket.to_path_buf();
        let attempt = Endpoint::try_from("http://[::]:0")?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await;
        match attempt {
            Ok(channel) => return Ok(channel),
            Err(e) if Instant::now() > deadline => {
                bail!("holdfastd's socket: {e}; its log:\n{}", daemon.log())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A client of holdfastd's socket, retried while holdfastd starts.
pub async fn connect(socket: &Path, daemon: &Daemon) -> Result<ContainersClient<Channel>> {
    Ok(ContainersClient::new(channel(socket, daemon).await?))
}

/// Connects and waits until the health service says SERVING (start-up's
/// three phases done); the client and how long it took from the call.
pub async fn connect_ready(
    socket: &Path,
    daemon: &Daemon,
) -> Result<(ContainersClient<Channel>, Duration)> {
    let t = Instant::now();
    let ch = channel(socket, daemon).await?;
    let mut health = HealthClient::new(ch.clone());
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let status = health
            .check(HealthCheckRequest {
                service: "holdfast.v1.Containers".into(),
            })
            .await
            .map(|r| r.into_inner().status);
        if status.as_ref().ok() == Some(&(ServingStatus::Serving as i32)) {
            return Ok((ContainersClient::new(ch), t.elapsed()));
        }
        ensure!(
            Instant::now() < deadline,
            "holdfastd not SERVING after 40 s ({status:?}); its log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A spec of a busybox-rootfs container of fixture `cd` running `script`
/// with `/bin/sh -c`.
pub fn sh_spec(cd: &Fixture, name: &str, script: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.to_owned(),
        rootfs: cd.rootfs().display().to_string(),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

/// A script printing `line N` every 100 ms, exiting 3 on SIGTERM.
pub const LOGGING: &str =
    "trap 'exit 3' TERM; i=0; while true; do i=$((i+1)); echo line $i; sleep 0.1; done";

/// A restart policy.
pub fn policy(kind: RestartPolicyKind, max_retries: u32) -> Option<RestartPolicy> {
    Some(RestartPolicy {
        kind: kind as i32,
        max_retries,
    })
}

/// Creates and starts `spec`; the started container.
pub async fn run(client: &mut ContainersClient<Channel>, spec: ContainerSpec) -> Result<Container> {
    let name = spec.name.clone();
    client
        .create(CreateRequest { spec: Some(spec) })
        .await
        .with_context(|| format!("create {name}"))?;
    client
        .start(StartRequest { name: name.clone() })
        .await
        .with_context(|| format!("start {name}"))?
        .into_inner()
        .container
        .context("no container")
}

/// The state of container `name`.
pub async fn state(client: &mut ContainersClient<Channel>, name: &str) -> Result<ContainerState> {
    Ok(client
        .inspect(InspectRequest { name: name.into() })
        .await
        .with_context(|| format!("inspect {name}"))?
        .into_inner()
        .container
        .and_then(|c| c.state)
        .unwrap_or_default())
}

/// Every container, `ps -a`.
pub async fn list_all(client: &mut ContainersClient<Channel>) -> Result<Vec<Container>> {
    Ok(client
        .list(ListRequest { all: true })
        .await?
        .into_inner()
        .containers)
}

/// The status of a state.
pub fn status(s: &ContainerState) -> ContainerStatus {
    ContainerStatus::try_from(s.status).unwrap_or(ContainerStatus::Unspecified)
}

/// Polls container `name` until `check` holds (up to `timeout`); the last
/// state.
pub async fn wait_state(
    client: &mut ContainersClient<Channel>,
    name: &str,
    timeout: Duration,
    check: impl Fn(&ContainerState) -> bool,
) -> Result<ContainerState> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = state(client, name).await?;
        if check(&s) {
            return Ok(s);
        }
        ensure!(
            Instant::now() < deadline,
            "{name}: still {s:?} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `scenario` with a fresh holdfastd's paths once per containerd
/// version (see `holdfast_integration::each_version`), holdfastd's log
/// attached to a failure, then checks nothing is left.
pub fn each_version_with_holdfastd(
    scenario: impl for<'a> Fn(
        &'a Fixture,
        &'a Paths,
    )
        -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>>,
) {
    holdfast_integration::each_version(|cd| {
        let paths = Paths::new(cd);
        with_log(block_on(scenario(cd, &paths)), &paths)?;
        cd.assert_clean()
    });
}

/// Starts a `Wait` on container `name` in the background.
pub fn spawn_wait(
    client: &ContainersClient<Channel>,
    name: &str,
) -> tokio::task::JoinHandle<Result<i32>> {
    let mut client = client.clone();
    let name = name.to_owned();
    tokio::spawn(async move {
        Ok(client
            .wait(holdfast_api::v1::WaitRequest { name })
            .await?
            .into_inner()
            .exit_code)
    })
}

/// Runs `f` on a small multi-threaded runtime.
pub fn block_on<F: std::future::Future<Output = Result<()>>>(f: F) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(f)
}

/// `f`, with holdfastd's log attached to an error.
pub fn with_log<T>(result: Result<T>, paths: &Paths) -> Result<T> {
    result.with_context(|| {
        format!(
            "holdfastd's log:\n{}",
            std::fs::read_to_string(&paths.log).unwrap_or_default()
        )
    })
}

/// What holdfastd's `Logs` (not following) returns for container `name`:
/// its stdout bytes. A gap in either stream is an error.
pub async fn logs_stdout(client: &mut ContainersClient<Channel>, name: &str) -> Result<Vec<u8>> {
    let mut stream = client
        .logs(LogsRequest {
            name: name.to_owned(),
            ..Default::default()
        })
        .await
        .with_context(|| format!("logs {name}"))?
        .into_inner();
    let mut out = Vec::new();
    while let Some(msg) = stream
        .message()
        .await
        .with_context(|| format!("logs {name}"))?
    {
        ensure!(!msg.gap, "logs of {name} report a gap");
        if msg.stream == LogStream::Stdout as i32 {
            out.extend_from_slice(&msg.data);
        }
    }
    Ok(out)
}

/// Checks that `out` (a container's stdout, e.g. [`LOGGING`]'s) is
/// `{prefix} 1` to `{prefix} k`, one a line, each exactly once, in order,
/// with no gap (an unfinished last line is ignored); returns `k`.
pub fn every_numbered_line(out: &[u8], prefix: &str) -> Result<u64> {
    let text = String::from_utf8_lossy(out);
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => return Ok(0),
    };
    let mut k = 0u64;
    for line in complete.split('\n') {
        let want = format!("{prefix} {}", k + 1);
        ensure!(
            line == want,
            "after {k} good lines, got {line:?} where {want:?} belongs"
        );
        k += 1;
    }
    Ok(k)
}

/// The stdout lines in the journal folder `dir` so far.
pub fn journal_lines(dir: &Path) -> Result<Vec<String>> {
    use holdfast_journal::{Entry, Reader, Stream};
    let mut reader = match Reader::open(dir, "init", Stream::Stdout) {
        Ok(r) => r,
        Err(_) => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    while let Some(entry) = reader.try_next()? {
        if let Entry::Record { record, .. } = entry {
            out.push(String::from_utf8_lossy(&record.text).into_owned());
        }
    }
    Ok(out)
}
