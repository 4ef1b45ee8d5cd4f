//! Execs: extra processes in a running task, with FIFOs for their stdio in
//! a folder holdfastd owns.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, KillRequest, ResizePtyRequest,
    StartRequest,
};
use nix::sys::stat::Mode;

use super::{Containerd, Error, ExitStatus, Result, PROCESS_TYPE_URL};

/// The process an exec runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecProcess {
    /// The command and its arguments.
    pub args: Vec<String>,
    /// Extra environment, K=V (never logged).
    pub env: Vec<String>,
    /// Working directory; empty: the container's.
    pub cwd: String,
    /// Allocate a terminal (then there is no separate stderr).
    pub tty: bool,
    /// Give it a stdin FIFO.
    pub stdin: bool,
    /// The terminal's size (columns, rows), set before the process runs
    /// (tty only).
    pub console_size: Option<(u32, u32)>,
}

/// A started exec: its FIFOs (the read ends of stdout/stderr and the write
/// end of stdin are already open, so the shim's opens never block) and a
/// handle to wait for it and clean it up.
#[derive(Debug)]
pub struct Exec {
    /// The container id.
    pub id: String,
    /// The exec id.
    pub exec_id: String,
    /// The exec's pid.
    pub pid: u32,
    /// The folder holding its FIFOs (removed by [`Exec::delete`]).
    pub dir: PathBuf,
    /// stdin FIFO and its write end (opened read-write so it never blocks).
    pub stdin: Option<(PathBuf, File)>,
    /// stdout FIFO and its non-blocking read end.
    pub stdout: (PathBuf, File),
    /// stderr FIFO and its non-blocking read end (none with a tty).
    pub stderr: Option<(PathBuf, File)>,
    client: Containerd,
}

fn fifo(path: &Path) -> Result<()> {
    nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o600)).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::from(e),
    })
}

fn open_read(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc_nonblock())
        .open(path)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn libc_nonblock() -> i32 {
    nix::fcntl::OFlag::O_NONBLOCK.bits()
}

impl Exec {
    /// Waits until the exec exits.
    pub async fn wait(&self) -> Result<ExitStatus> {
        self.client.wait_process(&self.id, &self.exec_id).await
    }

    /// Resizes the exec's terminal (tty execs only).
    pub async fn resize(&self, width: u32, height: u32) -> Result<()> {
        self.client
            .tasks()
            .resize_pty(self.client.req(ResizePtyRequest {
                container_id: self.id.clone(),
                exec_id: self.exec_id.clone(),
                width,
                height,
            }))
            .await
            .map_err(|s| Error::from_status("tasks.resize_pty", &self.id, s))?;
        Ok(())
    }

    /// Tells the shim the exec's input is over: its copy into the process
    /// ends once the write end of [`Exec::stdin`] is closed too.
    pub async fn close_stdin(&self) -> Result<()> {
        self.client
            .tasks()
            .close_io(self.client.req(CloseIoRequest {
                container_id: self.id.clone(),
                exec_id: self.exec_id.clone(),
                stdin: true,
            }))
            .await
            .map_err(|s| Error::from_status("tasks.close_io", &self.id, s))?;
        Ok(())
    }

    /// Sends `signal` to the exec's process.
    pub async fn kill(&self, signal: u32) -> Result<()> {
        self.client
            .tasks()
            .kill(self.client.req(KillRequest {
                container_id: self.id.clone(),
                exec_id: self.exec_id.clone(),
                signal,
                all: false,
            }))
            .await
            .map_err(|s| Error::from_status("tasks.kill", &self.id, s))?;
        Ok(())
    }

    /// Deletes the exited exec process in containerd and removes its FIFOs.
    pub async fn delete(self) -> Result<()> {
        let res = self
            .client
            .tasks()
            .delete_process(self.client.req(DeleteProcessRequest {
                container_id: self.id.clone(),
                exec_id: self.exec_id.clone(),
            }))
            .await;
        let _ = std::fs::remove_dir_all(&self.dir);
        res.map_err(|s| Error::from_status("tasks.delete_process", &self.id, s))?;
        Ok(())
    }
}

impl Containerd {
    /// Runs `process` as exec `exec_id` in task `id`, with FIFOs created
    /// in `fifo_dir/<id>-<exec_id>` (mode 0700); the process inherits the
    /// container's spec (user, capabilities, environment) with the args,
    /// extra env, cwd and terminal replaced. On failure the FIFOs are
    /// removed and no exec is left.
    pub async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process: &ExecProcess,
        fifo_dir: &Path,
    ) -> Result<Exec> {
        let spec = self.spec(id).await?;
        let mut p = spec.process().clone().ok_or_else(|| {
            Error::FailedPrecondition(format!("container {id} has no process in its spec"))
        })?;
        p.set_args(Some(process.args.clone()));
        let mut env = p.env().clone().unwrap_or_default();
        for kv in &process.env {
            if let Some((k, _)) = kv.split_once('=') {
                let prefix = format!("{k}=");
                env.retain(|e| !e.starts_with(&prefix));
            }
            env.push(kv.clone());
        }
        p.set_env(Some(env));
        if !process.cwd.is_empty() {
            p.set_cwd(PathBuf::from(&process.cwd));
        }
        p.set_terminal(Some(process.tty));
        let size = match process.console_size.filter(|_| process.tty) {
            Some((w, h)) => Some(
                oci_spec::runtime::BoxBuilder::default()
                    .width(w)
                    .height(h)
                    .build()
                    .map_err(crate::spec::Error::Oci)?,
            ),
            None => None,
        };
        p.set_console_size(size);
        let process_json = serde_json::to_vec(&p).map_err(crate::spec::Error::ImageConfig)?;

        let dir = fifo_dir.join(format!("{id}-{exec_id}"));
        std::fs::create_dir_all(fifo_dir).map_err(|source| Error::Io {
            path: fifo_dir.to_path_buf(),
            source,
        })?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?;
        match self.exec_in(id, exec_id, process, process_json, &dir).await {
            Ok(exec) => Ok(exec),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    async fn exec_in(
        &self,
        id: &str,
        exec_id: &str,
        process: &ExecProcess,
        process_json: Vec<u8>,
        dir: &Path,
    ) -> Result<Exec> {
        let stdout_path = dir.join("stdout");
        fifo(&stdout_path)?;
        let stdout = (stdout_path.clone(), open_read(&stdout_path)?);
        let stderr = if process.tty {
            None
        } else {
            let p = dir.join("stderr");
            fifo(&p)?;
            Some((p.clone(), open_read(&p)?))
        };
        let stdin = if process.stdin {
            let p = dir.join("stdin");
            fifo(&p)?;
            // Read-write: opening never blocks, and writes succeed once the
            // shim opens its read end.
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .map_err(|source| Error::Io {
                    path: p.clone(),
                    source,
                })?;
            Some((p, f))
        } else {
            None
        };
        let path_str = |o: &Option<(PathBuf, File)>| {
            o.as_ref()
                .map(|(p, _)| p.display().to_string())
                .unwrap_or_default()
        };
        self.tasks()
            .exec(self.req(ExecProcessRequest {
                container_id: id.to_string(),
                stdin: path_str(&stdin),
                stdout: stdout_path.display().to_string(),
                stderr: path_str(&stderr),
                terminal: process.tty,
                spec: Some(prost_types::Any {
                    type_url: PROCESS_TYPE_URL.to_string(),
                    value: process_json,
                }),
                exec_id: exec_id.to_string(),
            }))
            .await
            .map_err(|s| Error::from_status("tasks.exec", id, s))?;
        let started = self
            .tasks()
            .start(self.req(StartRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await;
        let pid = match started {
            Ok(r) => r.into_inner().pid,
            Err(s) => {
                let _ = self
                    .tasks()
                    .delete_process(self.req(DeleteProcessRequest {
                        container_id: id.to_string(),
                        exec_id: exec_id.to_string(),
                    }))
                    .await;
                return Err(Error::from_status("tasks.start", id, s));
            }
        };
        tracing::info!(
            container = id,
            exec_id,
            pid,
            tty = process.tty,
            "exec started"
        );
        Ok(Exec {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            pid,
            dir: dir.to_path_buf(),
            stdin,
            stdout,
            stderr,
            client: self.clone(),
        })
    }
}
