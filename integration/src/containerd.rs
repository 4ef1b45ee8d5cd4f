//! The fixture: a private containerd with its own root, state, sockets,
//! namespace, cgroup parent and busybox rootfs, torn down on drop.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::{self, Output, DEFAULT_TIMEOUT};
use crate::events::Events;
use crate::shim_client::ShimClient;
use crate::{procs, rootfs, runtime, system, Version};

static FIXTURES: AtomicUsize = AtomicUsize::new(0);

/// How long containerd may take to answer after (re)start.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One row of `ctr t ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    /// Container id.
    pub id: String,
    /// Init pid (as containerd reports it).
    pub pid: u32,
    /// `RUNNING`, `STOPPED`, `PAUSED`, `CREATED`, ...
    pub status: String,
}

/// A private containerd for one test. See the crate docs.
pub struct Containerd {
    version: Version,
    dir: PathBuf,
    ns: String,
    uniq: String,
    cgroup_parent: String,
    rootfs: PathBuf,
    child: Mutex<Option<Child>>,
    counter: AtomicUsize,
    /// Container and exec ids handed out, for the leak check and teardown.
    names: Mutex<Vec<String>>,
    /// Exec ids started with `ctr t exec -d`: ctr exits without removing
    /// their client FIFOs, so [`remove_all`](Self::remove_all) does.
    detached_execs: Mutex<Vec<(String, String)>>,
    /// Shim addresses seen in bundles (`unix:///run/containerd/s/...`).
    shim_addresses: Mutex<Vec<String>>,
    /// Extra plugin configuration (the CRI plugin's, see
    /// [`crate::cri`]); `None` keeps the CRI plugin disabled.
    plugins: Option<String>,
    /// Set once [`teardown`](Self::teardown) removed the fixture folder, so
    /// a later drop does not print an empty log tail.
    torn_down: AtomicBool,
}

fn sanitize(name: &str) -> String {
    let last = name.rsplit("::").next().unwrap_or(name);
    let mut s: String = last
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.truncate(24);
    let parts: Vec<&str> = s.split('-').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        "t".to_string()
    } else {
        parts.join("-")
    }
}

impl Containerd {
    /// Starts a private containerd of `version`, named after the current
    /// test thread (the test's name).
    pub fn start(version: Version) -> Result<Containerd> {
        let name = thread::current().name().unwrap_or("test").to_string();
        Self::start_named(version, &name)
    }

    /// Starts a private containerd of `version` for the test `name`.
    pub fn start_named(version: Version, name: &str) -> Result<Containerd> {
        Self::start_with(version, name, |_| Ok(None))
    }

    /// Starts a private containerd of `version` for the test `name`;
    /// `plugins` gets the fixture (its folder, cgroup parent and unique
    /// suffix are set; containerd does not run yet) and returns extra TOML
    /// for containerd's `[plugins]` table, which enables the CRI plugin
    /// (`None`: it stays disabled). It may write files into the folder.
    pub fn start_with(
        version: Version,
        name: &str,
        plugins: impl FnOnce(&Containerd) -> Result<Option<String>>,
    ) -> Result<Containerd> {
        let n = FIXTURES.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let uniq = format!("{pid}x{n}");
        let dir = tempfile::Builder::new()
            .prefix("hf-it-")
            .tempdir_in("/tmp")
            .context("create the fixture folder")?
            .keep();
        let cd = Containerd {
            version,
            ns: format!("hf-{}-{uniq}", sanitize(name)),
            cgroup_parent: format!("/holdfast-it-{uniq}"),
            rootfs: dir.join("rootfs"),
            dir,
            uniq,
            child: Mutex::new(None),
            counter: AtomicUsize::new(0),
            names: Mutex::new(Vec::new()),
            detached_execs: Mutex::new(Vec::new()),
            shim_addresses: Mutex::new(Vec::new()),
            plugins: None,
            torn_down: AtomicBool::new(false),
        };
        // A failure from here on drops `cd`, which removes the folder.
        let mut cd = cd;
        cd.plugins = plugins(&cd)?;
        rootfs::busybox(&cd.rootfs)?;
        cd.write_config()?;
        cd.spawn()?;
        // Make the namespace exist, so `ctr events` probes can label it.
        cd.ctr(&["namespaces", "create", &cd.ns.clone()])?.ok()?;
        Ok(cd)
    }

    /// The containerd version under test.
    pub fn version(&self) -> Version {
        self.version
    }
    /// The fixture folder D (config, root, state, sockets, rootfs, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// This fixture's containerd namespace.
    pub fn namespace(&self) -> &str {
        &self.ns
    }
    /// The cgroup parent every container of this fixture lives under.
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }
    /// The fixture's unique suffix (`<pid>x<n>`), part of its namespace,
    /// ids and cgroup parent.
    pub fn uniq(&self) -> &str {
        &self.uniq
    }
    /// The busybox rootfs (writable: tests drop trigger files into it).
    pub fn rootfs(&self) -> &Path {
        &self.rootfs
    }
    /// containerd's gRPC socket.
    pub fn address(&self) -> PathBuf {
        self.dir.join("c.sock")
    }
    /// containerd's log (stdout and stderr, across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }
    /// The containerd log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }
    /// The cgroup path (under the parent) of container `id`.
    pub fn cgroup_of(&self, id: &str) -> String {
        format!("{}/{id}", self.cgroup_parent)
    }
    /// The bundle folder containerd made for task `id`.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.dir
            .join("state/io.containerd.runtime.v2.task")
            .join(&self.ns)
            .join(id)
    }

    /// A fresh container id, unique across parallel tests.
    pub fn id(&self) -> String {
        self.new_name("c")
    }
    /// A fresh exec id, unique across parallel tests (ctr names its exec
    /// FIFOs after it).
    pub fn exec_id(&self) -> String {
        self.new_name("e")
    }
    fn new_name(&self, prefix: &str) -> String {
        let k = self.counter.fetch_add(1, Ordering::SeqCst);
        let name = format!("{prefix}{}-{k}", self.uniq);
        if let Ok(mut v) = self.names.lock() {
            v.push(name.clone());
        }
        name
    }

    fn write_config(&self) -> Result<()> {
        let d = self.dir.display();
        let mut cfg = format!(
            r#"# holdfast integration test fixture: everything under {d}.
version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{d}/c.sock"

[ttrpc]
  address = "{d}/c.sock.ttrpc"

[debug]
  address = "{d}/d.sock"
  level = "debug"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d}/opt"
"#
        );
        if let Some(plugins) = &self.plugins {
            cfg = cfg.replacen("  \"io.containerd.grpc.v1.cri\",\n", "", 1);
            cfg.push('\n');
            cfg.push_str(plugins);
        }
        fs::write(self.dir.join("config.toml"), cfg).context("write config.toml")
    }

    fn path_env(&self) -> String {
        format!(
            "{}:{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            crate::bin_dir().display(),
            self.version.bin_dir().display()
        )
    }

    fn spawn(&self) -> Result<()> {
        let bin = self.version.bin_dir().join("containerd");
        if !bin.exists() {
            bail!(
                "containerd {} not found at {} (run make setup)",
                self.version,
                bin.display()
            );
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("open containerd.log")?;
        // containerd unpacks a checkpoint a task is created from into a
        // temporary folder under $XDG_RUNTIME_DIR and never removes it:
        // keep those in the fixture's folder, which teardown removes.
        let scratch = self.dir.join("xdg");
        fs::create_dir_all(&scratch).with_context(|| format!("create {}", scratch.display()))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--config")
            .arg(self.dir.join("config.toml"))
            .env("PATH", self.path_env())
            .env("XDG_RUNTIME_DIR", &scratch)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("dup log")?)
            .stderr(log);
        {
            use std::os::unix::process::CommandExt;
            // Its own process group: a ^C of the test run reaches us, not it.
            cmd.process_group(0);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let pid = child.id();
        *self.child.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let out = self.ctr_timeout(&["version"], Duration::from_secs(5));
            if matches!(&out, Ok(o) if o.success()) {
                return Ok(());
            }
            if !procs::alive(pid) {
                bail!(
                    "containerd {} exited during start-up; log tail:\n{}",
                    self.version,
                    self.log_tail(30)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "containerd {} did not answer within {READY_TIMEOUT:?}; log tail:\n{}",
                    self.version,
                    self.log_tail(30)
                );
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// The last `n` lines of containerd's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// containerd's pid, when it runs.
    pub fn pid(&self) -> Option<u32> {
        let guard = self.child.lock().ok()?;
        guard.as_ref().map(|c| c.id())
    }

    /// `kill -9` containerd and wait until it is gone. Shims stay.
    pub fn kill9(&self) -> Result<()> {
        let mut guard = self.child.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        if let Some(mut child) = guard.take() {
            let _ = child.kill();
            child.wait().context("wait for killed containerd")?;
        }
        Ok(())
    }

    /// SIGTERM containerd, SIGKILL after 10 s.
    pub fn stop(&self) -> Result<()> {
        let mut guard = self.child.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        if let Some(mut child) = guard.take() {
            if let Ok(raw) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(raw),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            if cmd::wait_deadline(
                &mut child,
                Instant::now() + Duration::from_secs(10),
                "containerd stop",
            )
            .is_err()
            {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        Ok(())
    }

    /// Starts containerd again on the same folders and sockets (after
    /// [`kill9`](Self::kill9) or [`stop`](Self::stop)) and waits until it
    /// answers.
    pub fn restart(&self) -> Result<()> {
        self.kill9()?;
        self.spawn()
    }

    /// True while containerd runs.
    pub fn is_up(&self) -> bool {
        self.pid().is_some_and(procs::alive)
    }

    fn ctr_command(&self, args: &[&str]) -> Command {
        self.ctr_command_in(&self.ns, args)
    }

    fn ctr_command_in(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new(self.version.bin_dir().join("ctr"));
        c.arg("--address")
            .arg(self.address())
            .arg("--namespace")
            .arg(ns)
            .args(args);
        c
    }

    /// `ctr <args>` against this containerd in namespace `ns` (e.g. CRI's
    /// `k8s.io`, which is private to this containerd too).
    pub fn ctr_in(&self, ns: &str, args: &[&str]) -> Result<Output> {
        cmd::run(self.ctr_command_in(ns, args), None, DEFAULT_TIMEOUT)
    }

    /// `ctr <args>` against this containerd, in this fixture's namespace.
    pub fn ctr(&self, args: &[&str]) -> Result<Output> {
        self.ctr_timeout(args, DEFAULT_TIMEOUT)
    }

    /// `ctr <args>` killed after `timeout`.
    pub fn ctr_timeout(&self, args: &[&str], timeout: Duration) -> Result<Output> {
        cmd::run(self.ctr_command(args), None, timeout)
    }

    /// `ctr <args>` with `input` on its standard input.
    pub fn ctr_stdin(&self, args: &[&str], input: &[u8]) -> Result<Output> {
        cmd::run(self.ctr_command(args), Some(input), DEFAULT_TIMEOUT)
    }

    /// `ctr <args>` on a fresh pseudo-terminal (for `-t`); the output is
    /// what the terminal showed.
    pub fn ctr_pty(&self, args: &[&str]) -> Result<Output> {
        cmd::run_in_pty(self.ctr_command(args), DEFAULT_TIMEOUT)
    }

    /// The arguments of `ctr run` for container `id` of this fixture with the
    /// runtime under test: `run --runtime R --cgroup P/id <flags> --rootfs
    /// ROOTFS id <cmd>`.
    pub fn run_args(&self, flags: &[&str], id: &str, command: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "run".into(),
            "--runtime".into(),
            runtime(),
            "--cgroup".into(),
            self.cgroup_of(id),
        ];
        a.extend(flags.iter().map(|s| s.to_string()));
        a.push("--rootfs".into());
        a.push(self.rootfs.display().to_string());
        a.push(id.into());
        a.extend(command.iter().map(|s| s.to_string()));
        a
    }

    /// `ctr run <flags> ... id command` in the foreground.
    pub fn run(&self, flags: &[&str], id: &str, command: &[&str]) -> Result<Output> {
        let args = self.run_args(flags, id, command);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ctr(&refs)
    }

    /// `ctr run -d ... id command`; waits until it is RUNNING and returns
    /// its pid.
    pub fn run_detached(&self, id: &str, command: &[&str]) -> Result<u32> {
        self.run_detached_with(&[], id, command)
    }

    /// [`run_detached`](Self::run_detached) with extra `ctr run` flags.
    pub fn run_detached_with(&self, flags: &[&str], id: &str, command: &[&str]) -> Result<u32> {
        let mut f = vec!["-d"];
        f.extend_from_slice(flags);
        self.run(&f, id, command)?
            .ok()
            .with_context(|| format!("run {id} detached"))?;
        self.remember_shim_address(id);
        self.wait_status(id, "RUNNING", Duration::from_secs(20))?;
        self.check_shim_binary(id)?;
        self.task_pid(id)?
            .with_context(|| format!("task {id} has no pid"))
    }

    /// A `/bin/sh -c` script that waits for the trigger file `/tmp/<name>`
    /// (see [`fire`](Self::fire)) and then exits with `code`.
    pub fn trigger_script(name: &str, code: i32) -> String {
        format!("while [ ! -e /tmp/{name} ]; do sleep 0.05; done; exit {code}")
    }

    /// Creates the trigger file `/tmp/<name>` in the fixture's rootfs (works
    /// without containerd).
    pub fn fire(&self, name: &str) -> Result<()> {
        let p = self.rootfs.join("tmp").join(name);
        fs::write(&p, b"go").with_context(|| format!("write {}", p.display()))
    }

    /// The pid of the shim serving task `id` (its argv holds `-id <id>`).
    pub fn shim_pid_of(&self, id: &str) -> Option<u32> {
        self.shim_pids().into_iter().find(|p| {
            procs::cmdline(*p)
                .windows(2)
                .any(|w| (w[0] == "-id" || w[0] == "--id") && w[1] == id)
        })
    }

    /// Checks that task `id` is served by the binary of the runtime under
    /// test (so a test cannot pass on the wrong shim).
    pub fn check_shim_binary(&self, id: &str) -> Result<()> {
        let want = crate::shim_binary();
        let pid = self
            .shim_pid_of(id)
            .with_context(|| format!("no shim process serves task {id}"))?;
        let argv0 = procs::cmdline(pid).first().cloned().unwrap_or_default();
        if Path::new(&argv0)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            != Some(want.clone())
        {
            bail!("task {id} is served by {argv0}, not {want}");
        }
        Ok(())
    }

    /// The shim binary of the runtime under test: holdfast's from
    /// `HOLDFAST_BIN_DIR`, the Go one from this containerd's folder.
    pub fn shim_binary_path(&self) -> PathBuf {
        let name = crate::shim_binary();
        let ours = crate::bin_dir().join(&name);
        if ours.exists() {
            ours
        } else {
            self.version.bin_dir().join(name)
        }
    }

    /// The shim binary with the environment and flags containerd gives it
    /// for task `id` in `bundle`; the caller adds the subcommand.
    fn shim_command(&self, id: &str, bundle: &Path) -> Command {
        let mut c = Command::new(self.shim_binary_path());
        c.current_dir(bundle)
            .env("PATH", self.path_env())
            .env("TTRPC_ADDRESS", self.dir.join("c.sock.ttrpc"))
            .env("GRPC_ADDRESS", self.address())
            .env("NAMESPACE", &self.ns)
            .args(["-namespace", &self.ns, "-id", id, "-address"])
            .arg(self.address())
            .arg("-publish-binary")
            .arg(self.version.bin_dir().join("containerd"));
        c
    }

    /// Runs the shim's `start` subcommand by hand, as containerd would, for
    /// task `id` with its cwd in `bundle`; on success its stdout is the
    /// address of the daemon it leaves, which serves this containerd (the
    /// leak check and teardown see it).
    pub fn start_shim_by_hand(&self, id: &str, bundle: &Path) -> Result<Output> {
        let mut c = self.shim_command(id, bundle);
        c.env("MAX_SHIM_VERSION", "2").arg("start");
        let out = cmd::run(c, Some(b""), Duration::from_secs(20))?;
        if out.success() {
            if let Ok(mut v) = self.shim_addresses.lock() {
                v.push(out.stdout.trim().to_string());
            }
        }
        Ok(out)
    }

    /// Runs the shim's `delete` subcommand (containerd's cleanup after a
    /// shim is gone) for task `id` with bundle `bundle`.
    pub fn delete_shim_by_hand(&self, id: &str, bundle: &Path) -> Result<Output> {
        let mut c = self.shim_command(id, bundle);
        c.arg("-bundle").arg(bundle).arg("delete");
        cmd::run(c, None, Duration::from_secs(20))
    }

    /// Ends a shim [`start_shim_by_hand`](Self::start_shim_by_hand) left
    /// for task `id`: Shutdown through `shim`, then the `delete`
    /// subcommand, which must succeed.
    pub fn end_shim_by_hand(&self, shim: ShimClient, id: &str, bundle: &Path) -> Result<()> {
        shim.shutdown(id)
            .map_err(|e| anyhow::anyhow!("shutdown of the shim of {id}: {e}"))?;
        drop(shim);
        let out = self.delete_shim_by_hand(id, bundle)?;
        if !out.success() {
            bail!("shim delete subcommand:\n{out}");
        }
        Ok(())
    }

    /// Records the shim address of `id` from its bundle, for the leak check.
    pub fn remember_shim_address(&self, id: &str) {
        if let Ok(a) = fs::read_to_string(self.bundle(id).join("address")) {
            if let Ok(mut v) = self.shim_addresses.lock() {
                if !v.contains(&a) {
                    v.push(a.trim().to_string());
                }
            }
        }
    }

    /// The shim address of task `id` (from its bundle's `address` file).
    pub fn shim_address(&self, id: &str) -> Result<String> {
        let a = fs::read_to_string(self.bundle(id).join("address"))
            .with_context(|| format!("read the shim address of {id}"))?;
        Ok(a.trim().to_string())
    }

    /// `ctr t ls`.
    pub fn tasks(&self) -> Result<Vec<TaskRow>> {
        let out = self.ctr(&["t", "ls"])?;
        let text = out.ok()?;
        Ok(text
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some(TaskRow {
                    id: it.next()?.to_string(),
                    pid: it.next()?.parse().ok()?,
                    status: it.next()?.to_string(),
                })
            })
            .collect())
    }

    /// The row of task `id` in `ctr t ls`.
    pub fn task(&self, id: &str) -> Result<Option<TaskRow>> {
        Ok(self.tasks()?.into_iter().find(|t| t.id == id))
    }

    /// The status of task `id` (`RUNNING`, `STOPPED`, ...).
    pub fn task_status(&self, id: &str) -> Result<Option<String>> {
        Ok(self.task(id)?.map(|t| t.status))
    }

    /// The pid of task `id`.
    pub fn task_pid(&self, id: &str) -> Result<Option<u32>> {
        Ok(self.task(id)?.map(|t| t.pid))
    }

    /// Waits until task `id` shows `status` in `ctr t ls`.
    pub fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.task_status(id)?;
            if now.as_deref() == Some(status) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("task {id} is {now:?}, not {status}, after {timeout:?}");
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// `ctr t exec --exec-id <exec_id> <flags> id command` in the foreground.
    pub fn exec(
        &self,
        flags: &[&str],
        id: &str,
        exec_id: &str,
        command: &[&str],
    ) -> Result<Output> {
        let mut a = vec!["t", "exec", "--exec-id", exec_id];
        a.extend_from_slice(flags);
        a.push(id);
        a.extend_from_slice(command);
        self.ctr(&a)
    }

    /// `ctr t exec -d --exec-id <exec_id> id command`: starts the exec and
    /// returns at once.
    pub fn exec_detached(&self, id: &str, exec_id: &str, command: &[&str]) -> Result<()> {
        if let Ok(mut v) = self.detached_execs.lock() {
            v.push((id.to_string(), exec_id.to_string()));
        }
        self.exec(&["-d"], id, exec_id, command)?
            .ok()
            .with_context(|| format!("exec {exec_id} in {id} detached"))?;
        Ok(())
    }

    /// `ctr t exec --exec-id <exec_id> id command` with `input` on its stdin.
    pub fn exec_stdin(
        &self,
        id: &str,
        exec_id: &str,
        command: &[&str],
        input: &[u8],
    ) -> Result<Output> {
        let mut a = vec!["t", "exec", "--exec-id", exec_id, id];
        a.extend_from_slice(command);
        self.ctr_stdin(&a, input)
    }

    /// `ctr t kill -s <signal> id`.
    pub fn kill(&self, id: &str, signal: &str) -> Result<Output> {
        self.ctr(&["t", "kill", "-s", signal, id])
    }

    /// `ctr t delete id`; returns the output (ctr prints a warning naming a
    /// non-zero exit status, see [`deleted_exit_status`]).
    pub fn delete_task(&self, id: &str) -> Result<Output> {
        self.ctr(&["t", "delete", id])
    }

    /// Kills task `id` with SIGKILL, waits until STOPPED, deletes the task
    /// and the container.
    pub fn remove(&self, id: &str) -> Result<()> {
        if self.task(id)?.is_some() {
            let _ = self.ctr(&["t", "kill", "-a", "-s", "SIGKILL", id])?;
            let _ = self.wait_status(id, "STOPPED", Duration::from_secs(10));
            self.ctr(&["t", "delete", "-f", id])?.ok()?;
        }
        // ctr leaves the FIFOs of detached execs to whoever deletes them.
        let detached: Vec<String> = self
            .detached_execs
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|(task, _)| task == id)
                    .map(|(_, e)| e.clone())
                    .collect()
            })
            .unwrap_or_default();
        system::remove_fifos_for(&detached);
        let out = self.ctr(&["c", "rm", id])?;
        if !out.success() && !out.text_lower().contains("not found") {
            bail!("{out}");
        }
        Ok(())
    }

    /// A `ctr events` subscriber that is known to be subscribed: it has seen
    /// the `/namespaces/update` of a probe label.
    pub fn events(&self) -> Result<Events> {
        let mut c = self.ctr_command(&["events"]);
        c.stdout(Stdio::piped())
            .stderr(Stdio::null())
            .stdin(Stdio::null());
        let child = c.spawn().context("spawn ctr events")?;
        let events = Events::collect(child)?;
        let probe = format!("hf-probe={}", self.counter.fetch_add(1, Ordering::SeqCst));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.ctr(&["namespaces", "label", &self.ns, &probe])?.ok()?;
            let value = probe.split('=').nth(1).unwrap_or_default().to_string();
            let seen = events.wait_for("probe", Duration::from_millis(500), |e| {
                e.topic == "/namespaces/update"
                    && e.body.pointer("/labels/hf-probe").and_then(|v| v.as_str())
                        == Some(value.as_str())
            });
            if seen.is_ok() {
                return Ok(events);
            }
            if Instant::now() >= deadline {
                bail!("ctr events did not subscribe within 20 s");
            }
        }
    }

    /// Removes ctr's client FIFOs of `id` (a container or exec id): for a
    /// task containerd dropped without a client deleting it (e.g. after its
    /// shim died), where nobody else would.
    pub fn remove_client_fifos(&self, id: &str) {
        system::remove_fifos_for(&[id.to_string()]);
    }

    /// Shim processes of this containerd still alive.
    pub fn shim_pids(&self) -> Vec<u32> {
        procs::shims_of(&self.address())
    }

    /// Kills and deletes every task and container of the namespace (through
    /// ctr, so containerd must be up).
    pub fn remove_all(&self) -> Result<()> {
        let ids: Vec<String> = self
            .ctr(&["c", "ls", "-q"])?
            .ok()?
            .lines()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let mut errors = Vec::new();
        for id in ids {
            if let Err(e) = self.remove(&id) {
                errors.push(format!("{id}: {e:#}"));
            }
        }
        if !errors.is_empty() {
            bail!("could not remove: {}", errors.join("; "));
        }
        Ok(())
    }

    /// Everything this fixture's ids left on the host: shim processes,
    /// mounts, cgroups, FIFOs, shim sockets. Empty when clean.
    pub fn leaks(&self) -> Vec<String> {
        let mut out = Vec::new();
        for pid in self.shim_pids() {
            out.push(format!(
                "shim process {pid}: {}",
                procs::cmdline(pid).join(" ")
            ));
        }
        for m in system::mounts_under(&self.dir) {
            out.push(format!("mount {}", m.display()));
        }
        for c in system::cgroups_below(&self.cgroup_parent) {
            out.push(format!("cgroup {}", c.display()));
        }
        let names = self.names.lock().map(|v| v.clone()).unwrap_or_default();
        for f in system::fifos_for(&names) {
            out.push(format!("fifo {}", f.display()));
        }
        let mut sockets: Vec<PathBuf> = names
            .iter()
            .map(|id| system::shim_socket_path(&self.address(), &self.ns, id))
            .collect();
        if let Ok(v) = self.shim_addresses.lock() {
            sockets.extend(
                v.iter()
                    .map(|a| PathBuf::from(a.trim_start_matches("unix://"))),
            );
        }
        sockets.sort();
        sockets.dedup();
        for s in sockets {
            if fs::symlink_metadata(&s).is_ok() {
                out.push(format!("shim socket {}", s.display()));
            }
        }
        let runc_state = Path::new(system::RUNC_STATE_DIR).join(&self.ns);
        if let Ok(rd) = fs::read_dir(&runc_state) {
            for e in rd.filter_map(|e| e.ok()) {
                out.push(format!("runc state {}", e.path().display()));
            }
        }
        out
    }

    /// Waits (up to `timeout`: shims exit shortly after their task is
    /// deleted) until [`leaks`](Self::leaks) is empty; an error listing them
    /// otherwise.
    pub fn wait_no_leaks(&self, timeout: Duration) -> Result<()> {
        system::wait_empty(timeout, || self.leaks())
    }

    /// Removes every task and container, then checks nothing is left.
    pub fn assert_clean(&self) -> Result<()> {
        self.remove_all()?;
        self.wait_no_leaks(Duration::from_secs(15))
    }

    /// Tears everything down; the [`Drop`] guard calls this too. Returns what
    /// could not be cleaned.
    pub fn teardown(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.is_up() {
            if let Err(e) = self.remove_all() {
                errors.push(format!("remove tasks: {e:#}"));
            }
        }
        // Shims that outlived their task or containerd, with their children.
        let shims = self.shim_pids();
        for pid in &shims {
            for child in procs::descendants(*pid) {
                procs::kill9(child);
            }
            procs::kill9(*pid);
        }
        for pid in &shims {
            if !procs::wait_gone(*pid, Duration::from_secs(5)) {
                errors.push(format!("shim {pid} survived kill -9"));
            }
        }
        if let Err(e) = self.stop() {
            errors.push(format!("stop containerd: {e:#}"));
        }
        errors.extend(system::unmount_under(&self.dir));
        errors.extend(system::remove_cgroups(&self.cgroup_parent));
        let _ = fs::remove_dir_all(Path::new(system::RUNC_STATE_DIR).join(&self.ns));
        let names = self.names.lock().map(|v| v.clone()).unwrap_or_default();
        system::remove_fifos_for(&names);
        for id in &names {
            let _ = fs::remove_file(system::shim_socket_path(&self.address(), &self.ns, id));
        }
        if let Ok(v) = self.shim_addresses.lock() {
            for a in v.iter() {
                let _ = fs::remove_file(a.trim_start_matches("unix://"));
            }
        }
        if std::env::var_os("HOLDFAST_KEEP_FIXTURE").is_none() {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                if self.dir.exists() {
                    errors.push(format!("remove {}: {e}", self.dir.display()));
                }
            }
        }
        self.torn_down.store(true, Ordering::SeqCst);
        errors
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if thread::panicking() && !self.torn_down.load(Ordering::SeqCst) {
            eprintln!(
                "--- containerd {} log tail ({}) ---\n{}\n---",
                self.version,
                self.log_path().display(),
                self.log_tail(40)
            );
        }
        let errors = self.teardown();
        if !errors.is_empty() {
            eprintln!(
                "holdfast-integration teardown of {}: {}",
                self.dir.display(),
                errors.join("; ")
            );
        }
    }
}

/// The exit status `ctr t delete` reported: ctr prints a warning
/// `task <id> exit with non-zero exit code N` and exits 0; no warning means 0.
pub fn deleted_exit_status(out: &Output) -> Option<u32> {
    if !out.success() {
        return None;
    }
    let text = format!("{}\n{}", out.stdout, out.stderr);
    match text.find("exit with non-zero exit code ") {
        Some(at) => text[at + "exit with non-zero exit code ".len()..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect::<String>()
            .parse()
            .ok(),
        None => Some(0),
    }
}
