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
    spawner: Arc<ReapedSpawner>,
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
            spawner,
        })
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
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.root)
            .args(["events", "--stats", id])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let (status, _, stdout, stderr) =
            self.spawner
                .execute(cmd)
                .await
                .map_err(|e| Error::Command {
                    command: format!("runc events --stats {id}"),
                    message: e.to_string(),
                })?;
        if !status.success() {
            return Err(Error::Command {
                command: format!("runc events --stats {id}"),
                message: last_line(&stderr).unwrap_or_else(|| status.to_string()),
            });
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
    fn missing_log_gives_none() {
        assert_eq!(last_runc_error(Path::new("/nonexistent/log.json"), 0), None);
    }
}
