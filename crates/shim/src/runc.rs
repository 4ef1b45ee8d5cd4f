//! Everything that runs `runc` lives here.
//!
//! The `runc` crate builds the command lines; this module gives it a spawner
//! that cooperates with the shim's [`Reaper`] (the shim reaps every child
//! with `waitpid(-1)`, so nobody else may wait for a runc process), and turns
//! runc's failures into errors that carry runc's own message.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;

use async_trait::async_trait;
use oci_spec::runtime::{LinuxResources, Process as ProcessSpec};
use runc::options::{CreateOpts, DeleteOpts, ExecOpts, GlobalOpts, KillOpts};
use runc::{Command, Spawner};
use tokio::io::AsyncReadExt;

use crate::error::{Error, Result};
use crate::reaper::Reaper;

/// Where runc keeps container state, per namespace (as the Go shim does).
pub const RUNC_ROOT: &str = "/run/containerd/runc";

/// The CRIU runc is given for checkpoint and restore (`runc --criu`):
/// `make setup` builds CRIU 4.1.1 there, since Debian 12's criu 3.17 cannot
/// dump on current kernels.
pub const CRIU: &str = "/usr/local/sbin/criu";

/// Runs runc commands and waits for them through the shim's reaper.
#[derive(Debug)]
struct ReapedSpawner {
    reaper: Reaper,
}

#[async_trait]
impl Spawner for ReapedSpawner {
    async fn execute(&self, mut cmd: Command) -> runc::Result<(ExitStatus, u32, String, String)> {
        let mut child = cmd
            .spawn()
            .map_err(runc::error::Error::ProcessSpawnFailed)?;
        let pid = child.id().unwrap_or_default();
        let exited = self.reaper.subscribe(pid as i32);
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let read_out = async {
            if let Some(s) = stdout.as_mut() {
                let _ = s.read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(s) = stderr.as_mut() {
                let _ = s.read_to_end(&mut err).await;
            }
        };
        tokio::join!(read_out, read_err);
        let exit = exited.await.map_err(|_| {
            runc::error::Error::InvalidCommand(std::io::Error::other("reaper gone"))
        })?;
        // Keep `child` alive until the reaper has it, so tokio never waits
        // for this pid itself.
        drop(child);
        let status = if exit.status > 128 {
            ExitStatus::from_raw(exit.status - 128)
        } else {
            ExitStatus::from_raw(exit.status << 8)
        };
        Ok((
            status,
            pid,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        ))
    }
}

/// A runc client bound to one namespace's state root and one bundle's log.
#[derive(Clone)]
pub struct Runc {
    inner: runc::Runc,
    log: PathBuf,
    binary: String,
    root: PathBuf,
    criu: PathBuf,
    spawner: Arc<ReapedSpawner>,
}

/// What CRIU is asked to handle, for `runc checkpoint` and `runc restore`
/// alike (a restore needs the same permissions its dump had).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CriuFlags {
    /// `--tcp-established`: established TCP connections.
    pub tcp_established: bool,
    /// `--ext-unix-sk`: unix sockets connected outside the container.
    pub ext_unix_sk: bool,
    /// `--shell-job`: a terminal (pty) of the container.
    pub shell_job: bool,
    /// `--file-locks`: file locks.
    pub file_locks: bool,
    /// `--manage-cgroups-mode`: `soft`, `full` or `strict` (None: runc's).
    pub cgroups_mode: Option<String>,
    /// `--empty-ns`: namespaces restored empty.
    pub empty_ns: Vec<String>,
}

impl CriuFlags {
    fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        for (on, flag) in [
            (self.tcp_established, "--tcp-established"),
            (self.ext_unix_sk, "--ext-unix-sk"),
            (self.shell_job, "--shell-job"),
            (self.file_locks, "--file-locks"),
        ] {
            if on {
                a.push(flag.to_string());
            }
        }
        if let Some(mode) = &self.cgroups_mode {
            a.push("--manage-cgroups-mode".into());
            a.push(mode.clone());
        }
        for ns in &self.empty_ns {
            a.push("--empty-ns".into());
            a.push(ns.clone());
        }
        a
    }
}

/// Where CRIU writes (or reads) a checkpoint.
#[derive(Debug, Clone)]
pub struct CriuPaths {
    /// The image folder.
    pub image: PathBuf,
    /// CRIU's work folder (its logs: `dump.log`, `restore.log`).
    pub work: PathBuf,
}

impl std::fmt::Debug for Runc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runc").field("log", &self.log).finish()
    }
}

/// Pid file, console socket and stdio of a process runc starts.
#[derive(Debug, Default)]
pub struct LaunchOpts {
    /// Where runc writes the process's pid.
    pub pid_file: PathBuf,
    /// Unix socket runc sends the pty master to (terminal mode).
    pub console_socket: Option<PathBuf>,
    /// The process's stdio (non-terminal mode).
    pub io: Option<Arc<dyn runc::Io>>,
}

impl Runc {
    /// A client using `binary` (a name on PATH or a path) with state under
    /// `root` and runc's log in `bundle/log.json`.
    pub fn new(binary: &str, root: &Path, bundle: &Path, reaper: Reaper) -> Result<Self> {
        let log = bundle.join("log.json");
        let spawner = Arc::new(ReapedSpawner { reaper });
        let mut opts = GlobalOpts::new()
            .command(binary)
            .root(root)
            .log(&log)
            .log_json();
        opts.custom_spawner(spawner.clone());
        let inner = opts
            .build()
            .map_err(|e| Error::NotFound(format!("runc binary {binary:?}: {e}")))?;
        Ok(Runc {
            inner,
            log,
            binary: binary.to_string(),
            root: root.to_path_buf(),
            criu: PathBuf::from(CRIU),
            spawner,
        })
    }

    /// The same client with another CRIU binary.
    pub fn with_criu(mut self, criu: &Path) -> Self {
        self.criu = criu.to_path_buf();
        self
    }

    /// The CRIU binary given to runc.
    pub fn criu(&self) -> &Path {
        &self.criu
    }

    /// Whether runc has state for container `id` (`runc checkpoint`
    /// without `--leave-running` removes it, with the container).
    pub fn exists(&self, id: &str) -> bool {
        self.root.join(id).join("state.json").exists()
    }

    /// `runc create`.
    pub async fn create(&self, id: &str, bundle: &Path, launch: LaunchOpts) -> Result<()> {
        let mut opts = CreateOpts::new().pid_file(&launch.pid_file);
        if let Some(sock) = &launch.console_socket {
            opts = opts.console_socket(sock);
        }
        opts.io = launch.io;
        self.call("create", id, self.inner.create(id, bundle, Some(&opts)))
            .await
            .map(drop)
    }

    /// `runc start`.
    pub async fn start(&self, id: &str) -> Result<()> {
        self.call("start", id, self.inner.start(id)).await.map(drop)
    }

    /// `runc exec --detach`.
    pub async fn exec(&self, id: &str, spec: &ProcessSpec, launch: LaunchOpts) -> Result<()> {
        let mut opts = ExecOpts::new().detach(true).pid_file(&launch.pid_file);
        if let Some(sock) = &launch.console_socket {
            opts = opts.console_socket(sock);
        }
        opts.io = launch.io;
        self.call("exec", id, self.inner.exec(id, spec, Some(&opts)))
            .await
    }

    /// `runc kill [--all]`.
    pub async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        self.call(
            "kill",
            id,
            self.inner.kill(id, signal, Some(&KillOpts::new().all(all))),
        )
        .await
    }

    /// `runc delete [--force]`.
    pub async fn delete(&self, id: &str, force: bool) -> Result<()> {
        self.call(
            "delete",
            id,
            self.inner.delete(id, Some(&DeleteOpts::new().force(force))),
        )
        .await
    }

    /// `runc pause`.
    pub async fn pause(&self, id: &str) -> Result<()> {
        self.call("pause", id, self.inner.pause(id)).await
    }

    /// `runc resume`.
    pub async fn resume(&self, id: &str) -> Result<()> {
        self.call("resume", id, self.inner.resume(id)).await
    }

    /// `runc ps`: the host pids of the container's processes.
    pub async fn ps(&self, id: &str) -> Result<Vec<usize>> {
        self.call("ps", id, self.inner.ps(id)).await
    }

    /// `runc update --resources`.
    pub async fn update(&self, id: &str, resources: &LinuxResources) -> Result<()> {
        self.call("update", id, self.inner.update(id, resources))
            .await
    }

    /// `runc events --stats`: runc's JSON, parsed by [`crate::stats`] (the
    /// `runc` crate's own stats types do not match runc's output).
    pub async fn stats_json(&self, id: &str) -> Result<String> {
        let args = ["events", "--stats", id].map(String::from);
        self.direct("events --stats", id, &args, None).await
    }

    /// `runc checkpoint`: CRIU dumps the container into `paths.image`;
    /// with `leave_running` it goes on, else it is killed and runc forgets
    /// it. The `runc` crate has no checkpoint, so the binary is run directly.
    pub async fn checkpoint(
        &self,
        id: &str,
        paths: &CriuPaths,
        flags: &CriuFlags,
        leave_running: bool,
    ) -> Result<()> {
        let mut args = vec!["checkpoint".to_string()];
        args.extend(criu_path_args(paths)?);
        if leave_running {
            args.push("--leave-running".into());
        }
        args.extend(flags.args());
        args.push(id.to_string());
        self.direct("checkpoint", id, &args, None)
            .await
            .map_err(|e| with_criu_error(e, &paths.work.join("dump.log")))
            .map(drop)
    }

    /// `runc restore --detach`: the container `id` of `bundle` comes back
    /// from the images in `paths.image`, its stdio from `launch` (its
    /// earlier stdout/stderr pipes are replaced by these), its pid in
    /// `launch.pid_file`. runc is no subreaper: the restored init is
    /// reparented to the shim.
    pub async fn restore(
        &self,
        id: &str,
        bundle: &Path,
        paths: &CriuPaths,
        flags: &CriuFlags,
        launch: LaunchOpts,
    ) -> Result<()> {
        let mut args = vec![
            "restore".to_string(),
            "--detach".into(),
            "--no-subreaper".into(),
            "--bundle".into(),
            path_arg(bundle)?,
            "--pid-file".into(),
            path_arg(&launch.pid_file)?,
        ];
        if let Some(sock) = &launch.console_socket {
            args.push("--console-socket".into());
            args.push(path_arg(sock)?);
        }
        args.extend(criu_path_args(paths)?);
        args.extend(flags.args());
        args.push(id.to_string());
        self.direct("restore", id, &args, launch.io.as_deref())
            .await
            .map_err(|e| with_criu_error(e, &paths.work.join("restore.log")))
            .map(drop)
    }

    /// Runs `runc <global flags> <args>` without the `runc` crate (for what
    /// it lacks); `io` gives the command the container's stdio. Its stdout
    /// on success; on failure runc's own message (from its JSON log).
    async fn direct(
        &self,
        verb: &str,
        id: &str,
        args: &[String],
        io: Option<&dyn runc::Io>,
    ) -> Result<String> {
        let command = format!("runc {verb} {id}");
        let failed = |message: String| Error::Command {
            command: command.clone(),
            message,
        };
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .args(["--log-format", "json", "--criu"])
            .arg(&self.criu)
            .args(args)
            .env_remove("NOTIFY_SOCKET")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(io) = io {
            io.set(&mut cmd)
                .await
                .map_err(|e| failed(format!("stdio: {e}")))?;
        }
        let mark = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let res = self.spawner.execute(cmd).await;
        if let Some(io) = io {
            io.close_after_start().await;
        }
        let (status, _, stdout, stderr) = res.map_err(|e| failed(e.to_string()))?;
        if !status.success() {
            return Err(failed(
                last_runc_error(&self.log, mark)
                    .or_else(|| last_line(&stderr))
                    .unwrap_or_else(|| status.to_string()),
            ));
        }
        Ok(stdout)
    }

    async fn call<T>(
        &self,
        verb: &str,
        id: &str,
        fut: impl std::future::Future<Output = runc::Result<T>>,
    ) -> Result<T> {
        let mark = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        fut.await.map_err(|e| {
            let message = match &e {
                runc::error::Error::CommandFailed { stderr, stdout, .. } => {
                    last_runc_error(&self.log, mark)
                        .or_else(|| last_line(stderr))
                        .or_else(|| last_line(stdout))
                        .unwrap_or_else(|| e.to_string())
                }
                other => other.to_string(),
            };
            Error::Command {
                command: format!("runc {verb} {id}"),
                message,
            }
        })
    }
}

fn path_arg(p: &Path) -> Result<String> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| Error::InvalidArgument(format!("path {} is not UTF-8", p.display())))
}

fn criu_path_args(paths: &CriuPaths) -> Result<Vec<String>> {
    Ok(vec![
        "--image-path".into(),
        path_arg(&paths.image)?,
        "--work-path".into(),
        path_arg(&paths.work)?,
    ])
}

/// Adds CRIU's own reason (the last `Error` line of its log) to a failed
/// checkpoint or restore: runc only says that CRIU failed. The log holds
/// CRIU's diagnostics, never the checkpoint's contents.
fn with_criu_error(e: Error, criu_log: &Path) -> Error {
    match e {
        Error::Command { command, message } => {
            let message = match last_criu_error(criu_log) {
                Some(reason) => format!("{message}: {reason} (log: {})", criu_log.display()),
                None => message,
            };
            Error::Command { command, message }
        }
        other => other,
    }
}

/// The last `Error (file:line): ...` line of a CRIU log, without CRIU's
/// timestamp prefix.
fn last_criu_error(log: &Path) -> Option<String> {
    let content = std::fs::read(log).ok()?;
    let content = String::from_utf8_lossy(&content);
    content.lines().rev().find_map(|line| {
        let at = line.find("Error (")?;
        Some(line[at..].trim().to_string())
    })
}

fn last_line(s: &str) -> Option<String> {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::to_string)
}

/// The message of the last `"level":"error"` record in runc's JSON log.
fn last_runc_error(log: &Path, from: u64) -> Option<String> {
    let content = std::fs::read(log).ok()?;
    let content = String::from_utf8_lossy(content.get(from as usize..)?);
    content.lines().rev().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        if v.get("level")?.as_str()? == "error" {
            Some(v.get("msg")?.as_str()?.to_string())
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_last_error_from_runcs_json_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.json");
        std::fs::write(
            &log,
            "{\"level\":\"error\",\"msg\":\"old\"}\n{\"level\":\"info\",\"msg\":\"x\"}\n{\"level\":\"error\",\"msg\":\"container does not exist\"}\n",
        )
        .unwrap();
        assert_eq!(
            last_runc_error(&log, 0).as_deref(),
            Some("container does not exist")
        );
    }

    #[test]
    fn errors_before_the_mark_belong_to_earlier_commands() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.json");
        let old = "{\"level\":\"error\",\"msg\":\"old\"}\n";
        std::fs::write(&log, old).unwrap();
        assert_eq!(last_runc_error(&log, old.len() as u64), None);
    }

    #[test]
    fn criu_flags_become_runc_arguments() {
        let flags = CriuFlags {
            tcp_established: true,
            file_locks: true,
            cgroups_mode: Some("soft".into()),
            empty_ns: vec!["network".into()],
            ..Default::default()
        };
        assert_eq!(
            flags.args(),
            [
                "--tcp-established",
                "--file-locks",
                "--manage-cgroups-mode",
                "soft",
                "--empty-ns",
                "network"
            ]
        );
        assert!(CriuFlags::default().args().is_empty());
    }

    #[test]
    fn a_failed_dump_names_crius_last_error() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("dump.log");
        std::fs::write(
            &log,
            "(00.1) Error (criu/util.c:1533): rlimit: not fatal\n(00.2) x\n(00.19) Error (criu/net.c:3282): net: Locking network failed\n(00.2) Dumping FAILED.\n",
        )
        .unwrap();
        let e = with_criu_error(
            Error::Command {
                command: "runc checkpoint c1".into(),
                message: "criu failed: type NOTIFY errno 0".into(),
            },
            &log,
        );
        let text = e.to_string();
        assert!(
            text.contains("Error (criu/net.c:3282): net: Locking network failed"),
            "{text}"
        );
        assert!(text.contains(&log.display().to_string()), "{text}");
        let missing = with_criu_error(
            Error::Command {
                command: "runc restore c1".into(),
                message: "m".into(),
            },
            &dir.path().join("none.log"),
        );
        assert_eq!(missing.to_string(), "runc restore c1 failed: m");
    }

    #[test]
    fn missing_log_gives_none() {
        assert_eq!(last_runc_error(Path::new("/nonexistent/log.json"), 0), None);
    }
}
