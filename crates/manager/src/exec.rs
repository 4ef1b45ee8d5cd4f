//! `Exec`: a process run in a running container through containerd (the
//! shim runs it with `runc exec`), its stdio on FIFOs holdfastd owns
//! (`<root>/exec/<name>-<exec id>/`, see [`crate::containerd::Exec`]).
//!
//! - Input messages go to the stdin FIFO in order; `close_stdin` (or the
//!   end of the client's messages) closes it and tells the shim, so the
//!   process sees end of file.
//! - stdout and stderr (one terminal stream with a tty) are read until end
//!   of file: the shim closes its FIFO ends once it has forwarded all the
//!   process wrote. Then the exit code is sent, last.
//! - After the exit, output gets [`OUTPUT_GRACE`] to reach end of file (a
//!   background child of the process may hold it open); then the exec is
//!   deleted, which ends the shim's forwarding.
//! - A client that goes away does not stop the process (like `docker
//!   exec`), except a terminal's: it gets SIGHUP, as on a hang-up. Either
//!   way the exec is deleted once it exits.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::containerd::{Exec, ExecProcess, TaskStatus};
use crate::error::{Error, Result};
use crate::manager::Manager;
use crate::validate::{check_abs_path, check_command, check_env_list, validate_name};

/// How long output may go on after the process exited before the exec is
/// deleted.
pub const OUTPUT_GRACE: Duration = Duration::from_secs(5);
/// How long output may go on after the exec was deleted.
const DELETE_GRACE: Duration = Duration::from_secs(3);
/// SIGHUP's number.
const SIGHUP: u32 = 1;
/// Largest piece of output per message.
const READ_BYTES: usize = 32 << 10;
/// Messages in flight to one client.
const CHANNEL_DEPTH: usize = 16;

/// What an Exec call runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    /// The command and its arguments (required).
    pub command: Vec<String>,
    /// Extra environment, K=V (never logged).
    pub env: Vec<String>,
    /// Allocate a terminal.
    pub tty: bool,
    /// Forward the client's input.
    pub stdin: bool,
    /// Working directory (empty: the container's).
    pub working_dir: String,
    /// Initial terminal size (columns, rows), tty only.
    pub size: Option<(u32, u32)>,
}

impl ExecOptions {
    /// Checks the fields; messages name the field, never an env value.
    pub fn validate(&self) -> Result<()> {
        if self.command.is_empty() {
            return Err(Error::invalid("command", "is required"));
        }
        check_command(&self.command)?;
        check_env_list(&self.env)?;
        if !self.working_dir.is_empty() {
            check_abs_path("working_dir", &self.working_dir)?;
        }
        Ok(())
    }
}

/// A message from the client after the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecInput {
    /// Bytes for the process's stdin.
    Stdin(Vec<u8>),
    /// The end of the input.
    CloseStdin,
    /// The client's terminal has a new size.
    Resize {
        /// Columns.
        width: u32,
        /// Rows.
        height: u32,
    },
}

/// A message to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutput {
    /// Bytes the process wrote to stdout (or its terminal).
    Stdout(Vec<u8>),
    /// Bytes the process wrote to stderr.
    Stderr(Vec<u8>),
    /// The process exited with this code: the last message.
    Exit(i32),
}

/// The stream of an Exec call.
pub type ExecStream = ReceiverStream<Result<ExecOutput>>;

/// A new exec id: `exec-` and 16 hex digits, unique in this holdfastd.
fn new_exec_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("exec-{:016x}", nanos.rotate_left(20) ^ n)
}

impl Manager {
    /// The folder of exec FIFOs.
    fn exec_fifo_dir(&self) -> PathBuf {
        self.config().root.join("exec")
    }

    /// Runs `options.command` in running container `name`, feeding it
    /// `input`; its output and, last, its exit code come back on the
    /// stream. Bad input, an unknown or not running container are refused
    /// before anything runs.
    pub async fn exec<S>(&self, name: &str, options: ExecOptions, input: S) -> Result<ExecStream>
    where
        S: Stream<Item = ExecInput> + Send + Unpin + 'static,
    {
        validate_name(name)?;
        options.validate()?;
        let exec_id = new_exec_id();
        let span = info_span!("exec", container = %name, exec_id = %exec_id, tty = options.tty);
        async {
            self.record(name).await?;
            match self.containerd.get_task(name).await? {
                Some(t) if t.status == TaskStatus::Running => {}
                _ => {
                    return Err(Error::FailedPrecondition(format!(
                        "container {name:?} is not running"
                    )))
                }
            }
            let process = ExecProcess {
                args: options.command.clone(),
                env: options.env.clone(),
                cwd: options.working_dir.clone(),
                tty: options.tty,
                stdin: options.stdin,
                // runc sizes the terminal before the process runs.
                console_size: options.size,
            };
            let exec = self
                .containerd
                .exec(name, &exec_id, &process, &self.exec_fifo_dir())
                .await?;
            let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
            tokio::spawn(drive(exec, input, tx, options.tty).instrument(tracing::Span::current()));
            Ok(ReceiverStream::new(rx))
        }
        .instrument(span)
        .await
    }
}

/// Copies one output FIFO to the client until end of file; stops early
/// when the client is gone.
async fn copy_output(
    fifo: Option<std::fs::File>,
    wrap: fn(Vec<u8>) -> ExecOutput,
    tx: &mpsc::Sender<Result<ExecOutput>>,
) {
    let Some(file) = fifo else { return };
    let mut rx = match pipe::Receiver::from_file(file) {
        Ok(rx) => rx,
        Err(e) => {
            warn!(error = %e, "reading an exec FIFO");
            return;
        }
    };
    let mut buf = vec![0u8; READ_BYTES];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                if tx.send(Ok(wrap(buf[..n].to_vec()))).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                warn!(error = %e, "reading an exec FIFO");
                return;
            }
        }
    }
}

/// Closes the stdin FIFO's write end and tells the shim.
async fn close_stdin(stdin: &mut Option<pipe::Sender>, exec: &Exec) {
    if stdin.take().is_some() {
        if let Err(e) = exec.close_stdin().await {
            debug!(error = %e, "closing the exec's stdin");
        }
    }
}

/// Feeds the client's messages to the process until they end.
async fn feed_input<S>(mut input: S, mut stdin: Option<pipe::Sender>, exec: &Exec, tty: bool)
where
    S: Stream<Item = ExecInput> + Unpin,
{
    while let Some(msg) = input.next().await {
        match msg {
            ExecInput::Stdin(data) => {
                if let Some(s) = stdin.as_mut() {
                    if let Err(e) = s.write_all(&data).await {
                        debug!(error = %e, "the process does not take input any more");
                        stdin = None;
                    }
                }
            }
            ExecInput::CloseStdin => close_stdin(&mut stdin, exec).await,
            ExecInput::Resize { width, height } if tty => {
                if let Err(e) = exec.resize(width, height).await {
                    debug!(error = %e, "resizing the exec's terminal");
                }
            }
            ExecInput::Resize { .. } => {}
        }
    }
    close_stdin(&mut stdin, exec).await;
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn clone_file(f: &std::fs::File) -> Option<std::fs::File> {
    f.try_clone()
        .map_err(|e| warn!(error = %e, "duplicating an exec FIFO"))
        .ok()
}

/// Runs an exec to its end: input in, output out, the exit code last,
/// then deletes it.
async fn drive<S>(mut exec: Exec, input: S, tx: mpsc::Sender<Result<ExecOutput>>, tty: bool)
where
    S: Stream<Item = ExecInput> + Send + Unpin + 'static,
{
    let stdout = clone_file(&exec.stdout.1);
    let stderr = exec.stderr.as_ref().and_then(|(_, f)| clone_file(f));
    let stdin = match exec.stdin.take().map(|(_, f)| pipe::Sender::from_file(f)) {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            warn!(error = %e, "opening the exec's stdin FIFO");
            None
        }
        None => None,
    };
    let mut outputs = Box::pin(async {
        tokio::join!(
            copy_output(stdout, ExecOutput::Stdout, &tx),
            copy_output(stderr, ExecOutput::Stderr, &tx)
        )
    });
    let mut outputs_done = false;
    let status = {
        let exec = &exec;
        let feed = feed_input(input, stdin, exec, tty);
        let wait = exec.wait();
        tokio::pin!(feed, wait);
        let (mut status, mut fed, mut client_gone) = (None, false, false);
        let mut grace_ends = None;
        while status.is_none() || !outputs_done {
            tokio::select! {
                s = &mut wait, if status.is_none() => {
                    status = Some(s);
                    grace_ends = Some(tokio::time::Instant::now() + OUTPUT_GRACE);
                }
                _ = &mut outputs, if !outputs_done => outputs_done = true,
                () = &mut feed, if !fed => fed = true,
                () = tx.closed(), if !client_gone => {
                    client_gone = true;
                    if tty && status.is_none() {
                        info!("the client went away; hanging up the terminal");
                        if let Err(e) = exec.kill(SIGHUP).await {
                            debug!(error = %e, "SIGHUP to the exec");
                        }
                    }
                }
                () = sleep_until(grace_ends), if grace_ends.is_some() => {
                    warn!(grace = ?OUTPUT_GRACE, "output still open after the exec exited");
                    break;
                }
            }
        }
        status
    };
    let (dir, exec_id) = (exec.dir.clone(), exec.exec_id.clone());
    if let Err(e) = exec.delete().await {
        warn!(error = %e, dir = %dir.display(), "deleting the exec");
    }
    if !outputs_done
        && tokio::time::timeout(DELETE_GRACE, &mut outputs)
            .await
            .is_err()
    {
        warn!("output still open after the exec was deleted");
    }
    let last = match status {
        Some(Ok(s)) => {
            info!(exec_id, exit_code = s.code, "exec exited");
            Ok(ExecOutput::Exit(s.code as i32))
        }
        Some(Err(e)) => Err(Error::from(e)),
        None => Err(Error::Internal(
            "the exec ended without an exit status".into(),
        )),
    };
    let _ = tx.send(last).await;
}
