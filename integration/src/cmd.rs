//! Running external commands (mostly `ctr`) with a deadline, with piped or
//! pseudo-terminal stdio.

use std::fmt;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long a single `ctr` call may take before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The result of a finished command.
#[derive(Clone)]
pub struct Output {
    /// What was run, for messages.
    pub command: String,
    /// The exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// Standard output (for a pty run: everything the terminal showed).
    pub stdout: String,
    /// Standard error (empty for a pty run).
    pub stderr: String,
}

impl Output {
    /// True when the command exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The stdout when the command succeeded, an error naming the command,
    /// its code and its stderr otherwise.
    pub fn ok(&self) -> Result<&str> {
        if !self.success() {
            bail!("{self}");
        }
        Ok(&self.stdout)
    }

    /// stdout and stderr together, lower-cased, for matching error words.
    pub fn text_lower(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr).to_lowercase()
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.code,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A shell-like rendering of a command, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Waits for `child` until `deadline`; kills it (SIGKILL) when the deadline
/// passes and returns an error then.
pub fn wait_deadline(child: &mut Child, deadline: Instant, what: &str) -> Result<ExitStatus> {
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("wait for {what}"))?
        {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish in time and was killed");
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn read_all(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `cmd` with piped stdout/stderr, `stdin` written to its standard
/// input (then closed; /dev/null when `None`), killing it after `timeout`.
pub fn run(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<Output> {
    let command = describe(&cmd);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().with_context(|| format!("spawn `{command}`"))?;
    let out = read_all(child.stdout.take().context("stdout pipe")?);
    let err = read_all(child.stderr.take().context("stderr pipe")?);
    let writer = match (stdin, child.stdin.take()) {
        (Some(data), Some(mut pipe)) => {
            let data = data.to_vec();
            Some(thread::spawn(move || {
                let _ = pipe.write_all(&data);
            }))
        }
        _ => None,
    };
    let status = wait_deadline(&mut child, Instant::now() + timeout, &command)?;
    if let Some(w) = writer {
        let _ = w.join();
    }
    Ok(Output {
        command,
        code: status.code(),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Runs `cmd` with a fresh pseudo-terminal as its stdin, stdout and stderr
/// (so `ctr run -t` finds a console), and returns what the terminal showed
/// as `stdout`. Kills the command after `timeout`.
pub fn run_in_pty(mut cmd: Command, timeout: Duration) -> Result<Output> {
    let command = describe(&cmd);
    let ws = nix::pty::Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).context("openpty")?;
    let slave: OwnedFd = pty.slave;
    cmd.stdin(Stdio::from(slave.try_clone().context("dup pty")?))
        .stdout(Stdio::from(slave.try_clone().context("dup pty")?))
        .stderr(Stdio::from(slave));
    let spawned = cmd.spawn();
    // Drop our copies of the slave side so reads of the master end with EIO
    // once the command (the only other holder) has gone.
    drop(cmd);
    let mut child = spawned.with_context(|| format!("spawn `{command}` on a pty"))?;

    let master = pty.master;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_reader = Arc::clone(&stop);
    let reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let mut fds = [nix::poll::PollFd::new(
                master.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(50u16)) {
                Ok(0) => {
                    if stop_reader.load(Ordering::SeqCst) {
                        break;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
            match nix::unistd::read(&master, &mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
                // EIO: every slave side is closed.
                Err(_) => break,
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    });
    let status = wait_deadline(&mut child, Instant::now() + timeout, &command);
    stop.store(true, Ordering::SeqCst);
    let stdout = reader.join().unwrap_or_default();
    let status = status?;
    Ok(Output {
        command,
        code: status.code(),
        stdout,
        stderr: String::new(),
    })
}
