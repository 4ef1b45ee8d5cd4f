//! The built `holdfast` CLI against a built `holdfastd` on a fixture's
//! private containerd. Every process started here is killed when its guard
//! drops.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use holdfast_api::v1::containers_client::ContainersClient;
use holdfast_integration::Containerd as Fixture;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// How long one CLI call may take.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// The built `holdfast` CLI (`$HOLDFAST_BIN_DIR/holdfast`).
pub fn cli_binary() -> Result<PathBuf> {
    let path = holdfast_integration::bin_dir().join("holdfast");
    ensure!(
        path.exists(),
        "{} is missing: build it (cargo build --release -p holdfast-cli) or point HOLDFAST_BIN_DIR at it",
        path.display()
    );
    Ok(path)
}

/// A running `holdfastd`, killed (SIGKILL) when dropped unless it exited.
pub struct Holdfastd {
    child: Option<Child>,
    log: PathBuf,
    config: PathBuf,
    /// Its API socket.
    pub socket: PathBuf,
    /// Its `root`.
    pub root: PathBuf,
    /// Its journal root (`[log] dir`).
    pub journals: PathBuf,
    cli: PathBuf,
}

impl Holdfastd {
    /// Writes a config for `cd` (debug log, the fixture's cgroup parent,
    /// containerd and namespace) and starts holdfastd; returns once its
    /// socket accepts connections.
    pub fn start(cd: &Fixture) -> Result<Holdfastd> {
        let cli = cli_binary()?;
        let root = cd.dir().join("hd");
        let socket = root.join("run/holdfastd.sock");
        let journals = cd.dir().join("hd-logs");
        let config = cd.dir().join("holdfastd.toml");
        std::fs::write(
            &config,
            format!(
                "root = {root:?}\nsocket = {socket:?}\nlog_level = \"debug\"\ncgroup_parent = {parent:?}\n\
                 \n[containerd]\naddress = {address:?}\nnamespace = {ns:?}\n\n[log]\ndir = {journals:?}\n",
                parent = cd.cgroup_parent(),
                address = cd.address(),
                ns = cd.namespace(),
            ),
        )?;
        let log = cd.dir().join("holdfastd.log");
        std::fs::File::create(&log)?;
        let mut hd = Holdfastd {
            child: None,
            log,
            config,
            socket,
            root,
            journals,
            cli,
        };
        hd.spawn_daemon()?;
        Ok(hd)
    }

    /// `kill -9` of holdfastd (if it runs), then starts it again with the
    /// same config (its log appended); returns once start-up is done (the
    /// log says phase 3 is).
    pub fn kill9_and_start_again(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        let done = "start-up phase 3 done";
        let before = self.log().matches(done).count();
        self.spawn_daemon()?;
        self.wait_log(done, before + 1, Duration::from_secs(30))
    }

    /// Spawns holdfastd (stderr appended to its log) and waits until its
    /// socket accepts connections.
    fn spawn_daemon(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().append(true).open(&self.log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_holdfastd"))
            .arg("--config")
            .arg(&self.config)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawn holdfastd")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "holdfastd's socket did not answer in 30 s; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// holdfastd's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until holdfastd's log holds `needle` `count` times.
    pub fn wait_log(&self, needle: &str, count: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.log().matches(needle).count() < count {
            if Instant::now() > deadline {
                bail!("{needle:?} not {count} times in holdfastd's log after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The `holdfast` command for this holdfastd, with `args`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.cli);
        cmd.arg("--host")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args);
        cmd
    }

    /// Runs `holdfast ARGS` with `stdin` (or /dev/null) until it exits.
    pub fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<CliOutput> {
        let mut bg = Background::spawn(self.command(args), stdin)?;
        bg.wait(CLI_TIMEOUT)?;
        Ok(bg.output())
    }

    /// Starts `holdfast ARGS` in the background.
    pub fn spawn(&self, args: &[&str]) -> Result<Background> {
        Background::spawn(self.command(args), None)
    }

    /// A client of the API socket (the generated one).
    pub async fn client(&self) -> Result<ContainersClient<Channel>> {
        let path = self.socket.clone();
        let channel = Endpoint::try_from("http://[::]:0")?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await?;
        Ok(ContainersClient::new(channel))
    }

    /// SIGTERM, then waits up to 15 s for a clean exit.
    pub fn terminate(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            bail!("holdfastd is not running");
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let status = holdfast_integration::cmd::wait_deadline(
            &mut child,
            Instant::now() + Duration::from_secs(15),
            "holdfastd after SIGTERM",
        )?;
        ensure!(status.success(), "holdfastd exited with {status}");
        Ok(())
    }
}

impl Drop for Holdfastd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a finished CLI call did.
#[derive(Clone)]
pub struct CliOutput {
    /// The command line.
    pub command: String,
    /// Its exit code (`None`: killed).
    pub code: Option<i32>,
    /// Its stdout, byte for byte.
    pub stdout: Vec<u8>,
    /// Its stderr.
    pub stderr: String,
}

impl CliOutput {
    /// stdout as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// An error unless it exited with `code`.
    pub fn expect_code(&self, code: i32) -> Result<&Self> {
        ensure!(
            self.code == Some(code),
            "expected exit code {code}: {self:?}"
        );
        Ok(self)
    }

    /// An error unless it exited 0; its stdout as text.
    pub fn ok(&self) -> Result<String> {
        self.expect_code(0)?;
        Ok(self.text())
    }

    /// An error unless it failed with `code` and its stderr holds `words`.
    pub fn expect_error(&self, code: i32, words: &str) -> Result<()> {
        self.expect_code(code)?;
        ensure!(
            self.stderr.contains(words),
            "expected {words:?} in stderr: {self:?}"
        );
        Ok(())
    }
}

impl std::fmt::Debug for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = self.text();
        if out.len() > 2000 {
            let cut: String = out.chars().take(2000).collect();
            out = format!("{cut}… ({} bytes)", self.stdout.len());
        }
        write!(
            f,
            "`{}` exited {:?}\n--- stdout ---\n{out}\n--- stderr ---\n{}",
            self.command,
            self.code,
            self.stderr.trim_end()
        )
    }
}

/// A command running in the background with its stdout and stderr
/// collected; killed when dropped.
pub struct Background {
    command: String,
    child: Option<Child>,
    status: Option<ExitStatus>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if let Ok(mut v) = into.lock() {
                        v.extend_from_slice(&buf[..n]);
                    }
                }
            }
        }
    })
}

impl Background {
    /// Spawns `cmd` with piped output and `stdin` written to it (then
    /// closed; /dev/null without).
    pub fn spawn(mut cmd: Command, stdin: Option<&[u8]>) -> Result<Background> {
        let command = holdfast_integration::cmd::describe(&cmd);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd.spawn().with_context(|| format!("spawn `{command}`"))?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = vec![
            collect(child.stdout.take().context("stdout")?, stdout.clone()),
            collect(child.stderr.take().context("stderr")?, stderr.clone()),
        ];
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            let data = data.to_vec();
            readers.push(std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            }));
        }
        Ok(Background {
            command,
            child: Some(child),
            status: None,
            stdout,
            stderr,
            readers,
        })
    }

    /// What it wrote to stdout so far.
    pub fn stdout(&self) -> Vec<u8> {
        self.stdout.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Waits until its stdout satisfies `pred`.
    pub fn wait_stdout(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = String::from_utf8_lossy(&self.stdout()).into_owned();
            if pred(&out) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "`{}`: no {what} after {timeout:?}; stdout:\n{out}",
                    self.command
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for it to exit on its own (killing it after `timeout`, which
    /// is an error).
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let mut child = self.child.take().context("not running")?;
        let status = holdfast_integration::cmd::wait_deadline(
            &mut child,
            Instant::now() + timeout,
            &self.command,
        )?;
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        self.status = Some(status);
        Ok(status)
    }

    /// Its output once it exited.
    pub fn output(&self) -> CliOutput {
        CliOutput {
            command: self.command.clone(),
            code: self.status.and_then(|s| s.code()),
            stdout: self.stdout(),
            stderr: self
                .stderr
                .lock()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default(),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The names of the files in `dir` (none if it does not exist).
pub fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}
