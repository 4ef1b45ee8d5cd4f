//! Helpers for the log path tests (issue 3): runtime option files, FIFO
//! sinks and their readers, a container that writes numbered lines and
//! records its own progress, stall measurement from that progress, an
//! independent reader of the CRI-format journal, and exact checks of what
//! arrived.
//!
//! The checks here do not use `holdfast-journal`: the journal's format is
//! parsed again from its documented definition, so a test cannot pass
//! because writer and reader share a bug.

use std::ffi::CString;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};

use crate::Containerd;

/// Lines written between two progress records of [`numbered_lines_script`].
pub const PROGRESS_EVERY: u64 = 256;

/// Writes a runtime options file (the TOML of CRI's `config_path`, given to
/// `ctr run --runtime-config-path`) into the fixture folder and returns its
/// path.
pub fn write_options(cd: &Containerd, name: &str, toml: &str) -> Result<PathBuf> {
    let p = cd.dir().join(format!("{name}.toml"));
    fs::write(&p, toml).with_context(|| format!("write {}", p.display()))?;
    Ok(p)
}

/// The journal folder of task `id` under the journal root `root` (the
/// options' `dir`): `<root>/<namespace>/<id>`.
pub fn task_journal(cd: &Containerd, root: &Path, id: &str) -> PathBuf {
    root.join(cd.namespace()).join(id)
}

/// `ctr run` flags giving task output to `log_uri` with the options file
/// `options`. Against the Go shim (checking the tests themselves) the
/// options are left out: ctr would read the file as runc's options.
pub fn run_flags(options: &Path, log_uri: &str) -> Vec<String> {
    let mut f = Vec::new();
    if !crate::is_go_shim() {
        f.push("--runtime-config-path".into());
        f.push(options.display().to_string());
    }
    f.push("--log-uri".into());
    f.push(log_uri.into());
    f
}

/// Makes a FIFO at `path` (mode 0600).
pub fn mkfifo(path: &Path) -> Result<()> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .with_context(|| format!("mkfifo {}", path.display()))
}

/// Host uptime in seconds (`/proc/uptime`): the clock the container's
/// progress records use (containers share it; 10 ms resolution).
pub fn uptime() -> Result<f64> {
    let s = fs::read_to_string("/proc/uptime").context("read /proc/uptime")?;
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .context("parse /proc/uptime")
}

/// A `/bin/sh -c` script for busybox that writes the lines `0`, `1`, ...
/// to stdout as fast as it can and, every [`PROGRESS_EVERY`] lines, appends
/// `<lines written> <uptime>` to `/tmp/progress-<tag>` in its rootfs (all
/// shell builtins: no fork per line or per record).
///
/// It stops after `max` lines (if given) or once `/tmp/stop-<tag>` exists,
/// then appends `done <lines> <uptime>`. With `hold`, it then waits for
/// `/tmp/hold-<tag>`, writes the line `end` and exits; with `linger` it
/// sleeps until killed instead of exiting.
pub fn numbered_lines_script(tag: &str, max: Option<u64>, hold: bool, linger: bool) -> String {
    let limit = max
        .map(|m| format!("[ $i -ge {m} ] && break; "))
        .unwrap_or_default();
    // The inner loop never passes `max`: batches are cut at it.
    let batch_end = match max {
        Some(m) => format!("j=$((i+{PROGRESS_EVERY})); [ $j -gt {m} ] && j={m}; "),
        None => format!("j=$((i+{PROGRESS_EVERY})); "),
    };
    let mut s = format!(
        "p=/tmp/progress-{tag}; i=0; \
         while :; do \
           {batch_end}\
           while [ $i -lt $j ]; do echo $i; i=$((i+1)); done; \
           read up rest < /proc/uptime; echo \"$i $up\" >> $p; \
           {limit}[ -e /tmp/stop-{tag} ] && break; \
         done; \
         read up rest < /proc/uptime; echo \"done $i $up\" >> $p; "
    );
    if hold {
        s.push_str(&format!(
            "while [ ! -e /tmp/hold-{tag} ]; do sleep 0.05; done; echo end; "
        ));
    }
    if linger {
        s.push_str("while :; do sleep 1; done; ");
    }
    s.push_str("exit 0");
    s
}

/// Makes the writer of [`numbered_lines_script`] with `tag` stop.
pub fn stop_writer(cd: &Containerd, tag: &str) -> Result<()> {
    cd.fire(&format!("stop-{tag}"))
}

/// Lets a held writer of [`numbered_lines_script`] write `end` and exit.
pub fn release_writer(cd: &Containerd, tag: &str) -> Result<()> {
    cd.fire(&format!("hold-{tag}"))
}

/// What a writer of [`numbered_lines_script`] recorded about itself.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// `(lines written, uptime)`, in order.
    pub samples: Vec<(u64, f64)>,
    /// `(lines written in all, uptime)` once it stopped writing.
    pub done: Option<(u64, f64)>,
}

impl Progress {
    /// Reads the progress file of writer `tag` in the fixture's rootfs.
    pub fn read(cd: &Containerd, tag: &str) -> Result<Progress> {
        Progress::read_file(&cd.rootfs().join("tmp").join(format!("progress-{tag}")))
    }

    /// Reads a writer's progress file at `path` (e.g. in a folder mounted
    /// at the container's `/tmp`).
    pub fn read_file(path: &Path) -> Result<Progress> {
        let text = fs::read_to_string(path).unwrap_or_default();
        let mut out = Progress::default();
        // Only whole lines: the writer may be in the middle of one.
        let complete = match text.rfind('\n') {
            Some(at) => &text[..at],
            None => "",
        };
        for line in complete.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let parse = |n: &str, t: &str| -> Result<(u64, f64)> {
                Ok((
                    n.parse()
                        .with_context(|| format!("progress line {line:?}"))?,
                    t.parse()
                        .with_context(|| format!("progress line {line:?}"))?,
                ))
            };
            match f.as_slice() {
                ["done", n, t] => out.done = Some(parse(n, t)?),
                [n, t] => out.samples.push(parse(n, t)?),
                _ => bail!("bad progress line {line:?} in {}", path.display()),
            }
        }
        Ok(out)
    }

    /// Lines written by the last record at or before `t`.
    pub fn count_at(&self, t: f64) -> u64 {
        self.samples
            .iter()
            .take_while(|(_, at)| *at <= t)
            .last()
            .map(|(n, _)| *n)
            .unwrap_or(0)
    }

    /// The time of the last record.
    pub fn last_time(&self) -> Option<f64> {
        self.done
            .map(|(_, t)| t)
            .or_else(|| self.samples.last().map(|(_, t)| *t))
    }

    /// The longest time in `[from, to]` without a progress record, and
    /// when it began. A writer that finished within the window is measured
    /// up to its `done` record only.
    pub fn longest_stall(&self, from: f64, to: f64) -> (f64, f64) {
        let end = match self.done {
            Some((_, t)) if t < to => t,
            _ => to,
        };
        let mut points = vec![from];
        points.extend(
            self.samples
                .iter()
                .map(|(_, t)| *t)
                .filter(|t| *t > from && *t < end),
        );
        points.push(end);
        points
            .windows(2)
            .map(|w| (w[1] - w[0], w[0]))
            .fold((0.0, from), |a, b| if b.0 > a.0 { b } else { a })
    }

    /// Waits until the writer `tag` recorded `done`; returns its progress.
    pub fn wait_done(cd: &Containerd, tag: &str, timeout: Duration) -> Result<Progress> {
        Progress::wait_done_file(
            &cd.rootfs().join("tmp").join(format!("progress-{tag}")),
            timeout,
        )
    }

    /// Waits until the writer whose progress file is `path` recorded
    /// `done`; returns its progress.
    pub fn wait_done_file(path: &Path, timeout: Duration) -> Result<Progress> {
        let deadline = Instant::now() + timeout;
        loop {
            let p = Progress::read_file(path)?;
            if p.done.is_some() {
                return Ok(p);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the writer of {} did not finish within {timeout:?}; last progress {:?}",
                    path.display(),
                    p.samples.last()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the writer `tag` made no progress for `quiet` without
    /// being done (it is blocked); returns its progress.
    pub fn wait_stalled(
        cd: &Containerd,
        tag: &str,
        quiet: Duration,
        timeout: Duration,
    ) -> Result<Progress> {
        let deadline = Instant::now() + timeout;
        loop {
            let p = Progress::read(cd, tag)?;
            if p.done.is_some() {
                bail!("writer {tag} finished ({:?}) instead of stalling", p.done);
            }
            if let Some(last) = p.last_time() {
                if uptime()? - last >= quiet.as_secs_f64() {
                    return Ok(p);
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "writer {tag} did not stall for {quiet:?} within {timeout:?}; last progress {:?}",
                    p.samples.last()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The bytes a writer of [`numbered_lines_script`] writes for `n` lines.
pub fn numbered_lines(n: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(numbered_lines_len(n) as usize);
    for i in 0..n {
        out.extend_from_slice(i.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// `numbered_lines(n).len()` without building it.
pub fn numbered_lines_len(n: u64) -> u64 {
    let mut total = 0;
    let mut start = 0u64;
    let mut digits = 1u64;
    let mut next = 10u64;
    while start < n {
        let end = next.min(n);
        total += (end - start) * (digits + 1);
        start = end;
        digits += 1;
        next = next.saturating_mul(10);
    }
    total
}

/// A streaming check that bytes are exactly the lines `0\n1\n2\n...`: it
/// names the first gap, duplicate or foreign line with its byte offset.
#[derive(Debug, Default)]
pub struct NumberedLines {
    next: u64,
    partial: Vec<u8>,
    offset: u64,
}

impl NumberedLines {
    /// A check expecting line `0` first.
    pub fn new() -> NumberedLines {
        NumberedLines::default()
    }

    /// Lines seen so far.
    pub fn count(&self) -> u64 {
        self.next
    }

    /// Feeds the next bytes.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<()> {
        while let Some(at) = data.iter().position(|b| *b == b'\n') {
            let line_start = self.offset - self.partial.len() as u64;
            self.partial.extend_from_slice(&data[..at]);
            let want = self.next.to_string();
            if self.partial != want.as_bytes() {
                let got = String::from_utf8_lossy(&self.partial);
                let got: String = got.chars().take(80).collect();
                let kind = match got.parse::<u64>() {
                    Ok(n) if n > self.next => {
                        format!("a gap: lines {}..{n} are missing", self.next)
                    }
                    Ok(_) => "a duplicate or out-of-order line".to_string(),
                    Err(_) => "a foreign line".to_string(),
                };
                bail!(
                    "at byte {line_start} (line {}): got {got:?}, want {want:?} ({kind})",
                    self.next
                );
            }
            self.partial.clear();
            self.next += 1;
            self.offset += at as u64 + 1;
            data = &data[at + 1..];
        }
        self.partial.extend_from_slice(data);
        self.offset += data.len() as u64;
        Ok(())
    }

    /// Checks that exactly `n` lines arrived and nothing after the last.
    pub fn finish(&self, n: u64) -> Result<()> {
        ensure!(
            self.partial.is_empty(),
            "an unterminated line {:?} after line {}",
            String::from_utf8_lossy(&self.partial),
            self.next
        );
        ensure!(self.next == n, "{} lines arrived, want {n}", self.next);
        Ok(())
    }
}

/// Checks that `data` is exactly the lines `0` .. `n-1`.
pub fn check_numbered_lines(data: &[u8], n: u64) -> Result<()> {
    let mut c = NumberedLines::new();
    c.feed(data)?;
    c.finish(n)
}

/// One record of a journal segment: `<time> <stream> <P|F>[:tags] <text>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriRecord {
    /// The timestamp as written.
    pub time: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// `P` (the text continues in the next record) or `F`.
    pub partial: bool,
    /// The text, without the line's `\n`.
    pub text: Vec<u8>,
}

impl CriRecord {
    /// The output bytes the record stands for: its text, plus `\n` for `F`.
    pub fn raw(&self) -> Vec<u8> {
        let mut v = self.text.clone();
        if !self.partial {
            v.push(b'\n');
        }
        v
    }
}

/// Parses one line of a holdfast journal segment (without its `\n`): CRI
/// format with a fixed-width timestamp (nine fraction digits).
pub fn parse_cri_line(line: &[u8]) -> Result<CriRecord> {
    parse_cri_record(line, true)
}

/// Parses one line of a pod log file that containerd's CRI plugin wrote
/// (without its `\n`): CRI format with Go's RFC3339Nano timestamp, whose
/// fraction drops trailing zeros.
pub fn parse_pod_log_line(line: &[u8]) -> Result<CriRecord> {
    parse_cri_record(line, false)
}

fn parse_cri_record(line: &[u8], fixed_width: bool) -> Result<CriRecord> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let (Some(time), Some(stream), Some(tag), Some(text)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        bail!("not a CRI log line: {:?}", String::from_utf8_lossy(line));
    };
    let time = String::from_utf8_lossy(time).into_owned();
    ensure!(
        if fixed_width {
            time.len() == 30 && time.ends_with('Z') && time.as_bytes()[10] == b'T'
        } else {
            is_rfc3339_nano(&time)
        },
        "bad timestamp {time:?}"
    );
    let stream = String::from_utf8_lossy(stream).into_owned();
    ensure!(
        stream == "stdout" || stream == "stderr",
        "bad stream {stream:?}"
    );
    let tag = tag.split(|b| *b == b':').next().unwrap_or_default();
    let partial = match tag {
        b"P" => true,
        b"F" => false,
        other => bail!("bad tag {:?}", String::from_utf8_lossy(other)),
    };
    Ok(CriRecord {
        time,
        stream,
        partial,
        text: text.to_vec(),
    })
}

/// `2026-01-02T03:04:05.123456789Z` or with a `+hh:mm` offset; the
/// fraction (1 to 9 digits) is optional.
fn is_rfc3339_nano(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let date = digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !date {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 || n > 9 {
            return false;
        }
        rest = &frac[n..];
    }
    rest == "Z"
        || (rest.len() == 6
            && (rest.starts_with('+') || rest.starts_with('-'))
            && rest.as_bytes()[3] == b':')
}

/// The segment files of one stream of one process of a task's journal,
/// in sequence order: `<task>/<process>/<stream>.<seq>.log`.
pub fn journal_segments(task: &Path, process: &str, stream: &str) -> Result<Vec<PathBuf>> {
    let dir = task.join(process);
    let mut segs: Vec<(u64, PathBuf)> = Vec::new();
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("list {}", dir.display())),
    };
    for e in rd {
        let e = e.with_context(|| format!("list {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&format!("{stream}.")) else {
            continue;
        };
        let Some(seq) = rest.strip_suffix(".log") else {
            continue;
        };
        let seq: u64 = seq
            .parse()
            .with_context(|| format!("segment name {name:?}"))?;
        segs.push((seq, e.path()));
    }
    segs.sort();
    Ok(segs.into_iter().map(|(_, p)| p).collect())
}

/// Calls `f` on every record of a stream of a task's journal, oldest
/// first; checks each record names `stream`.
pub fn for_each_journal_record(
    task: &Path,
    process: &str,
    stream: &str,
    mut f: impl FnMut(&CriRecord) -> Result<()>,
) -> Result<()> {
    for seg in journal_segments(task, process, stream)? {
        let file = fs::File::open(&seg).with_context(|| format!("open {}", seg.display()))?;
        let mut r = BufReader::with_capacity(1 << 20, file);
        let mut line = Vec::new();
        let mut n = 0usize;
        loop {
            line.clear();
            let got = r
                .read_until(b'\n', &mut line)
                .with_context(|| format!("read {}", seg.display()))?;
            if got == 0 {
                break;
            }
            n += 1;
            ensure!(
                line.last() == Some(&b'\n'),
                "{} ends in a torn record (line {n})",
                seg.display()
            );
            line.pop();
            let rec =
                parse_cri_line(&line).with_context(|| format!("{} line {n}", seg.display()))?;
            ensure!(
                rec.stream == stream,
                "{} line {n} names stream {}",
                seg.display(),
                rec.stream
            );
            f(&rec)?;
        }
    }
    Ok(())
}

/// The output a stream's journal stands for, reassembled from its records.
pub fn journal_bytes(task: &Path, process: &str, stream: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for_each_journal_record(task, process, stream, |r| {
        out.extend_from_slice(&r.text);
        if !r.partial {
            out.push(b'\n');
        }
        Ok(())
    })?;
    Ok(out)
}

/// Waits until the stdout journal of `task` holds exactly the lines
/// `0` .. `n-1` (the shim appends what is left in the pipe after the
/// writer's last progress record).
pub fn wait_journal_numbered(task: &Path, n: u64, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut c = NumberedLines::new();
        for_each_journal_record(task, "init", "stdout", |r| c.feed(&r.raw()))
            .with_context(|| format!("the journal {}", task.display()))?;
        // Still short by a tail: wait for the drain.
        if c.count() < n && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(200));
            continue;
        }
        return c
            .finish(n)
            .with_context(|| format!("the journal {}", task.display()));
    }
}

/// Waits until the file at `path` is at least `len` bytes long; returns its
/// contents.
pub fn wait_file_len(path: &Path, len: u64, timeout: Duration) -> Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    loop {
        let have = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if have >= len || Instant::now() >= deadline {
            return fs::read(path).with_context(|| format!("read {}", path.display()));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

const READING: u8 = 0;
const PAUSED: u8 = 1;
const CLOSING: u8 = 2;

/// A reader of a FIFO sink, in a thread: it opens the FIFO (non-blocking,
/// so it never waits for a writer), reads everything into memory until
/// paused or closed.
pub struct FifoReader {
    path: PathBuf,
    data: Arc<Mutex<Vec<u8>>>,
    state: Arc<AtomicU8>,
    handle: Option<JoinHandle<Result<()>>>,
}

impl FifoReader {
    /// Opens `path` for reading and starts reading it.
    pub fn open(path: &Path) -> Result<FifoReader> {
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .with_context(|| format!("open {} for reading", path.display()))?;
        let data = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(AtomicU8::new(READING));
        let (d, s) = (Arc::clone(&data), Arc::clone(&state));
        let handle = thread::spawn(move || -> Result<()> {
            let mut chunk = vec![0u8; 256 * 1024];
            loop {
                match s.load(Ordering::SeqCst) {
                    CLOSING => return Ok(()),
                    PAUSED => {
                        thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    _ => {}
                }
                let mut fds = [nix::poll::PollFd::new(
                    file.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(20u16)) {
                    Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                    Ok(_) => {}
                    Err(e) => return Err(anyhow!("poll fifo: {e}")),
                }
                match nix::unistd::read(&file, &mut chunk) {
                    // No writer (or it went away): wait for one.
                    Ok(0) => thread::sleep(Duration::from_millis(10)),
                    Ok(n) => d
                        .lock()
                        .map_err(|_| anyhow!("poisoned"))?
                        .extend_from_slice(&chunk[..n]),
                    Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(anyhow!("read fifo: {e}")),
                }
            }
        });
        Ok(FifoReader {
            path: path.to_path_buf(),
            data,
            state,
            handle: Some(handle),
        })
    }

    /// Bytes read so far.
    pub fn len(&self) -> usize {
        self.data.lock().map(|d| d.len()).unwrap_or(0)
    }

    /// True when nothing was read yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops reading; the FIFO stays open.
    pub fn pause(&self) {
        self.state.store(PAUSED, Ordering::SeqCst);
    }

    /// Waits until at least `len` bytes were read (up to `timeout`).
    pub fn wait_len(&self, len: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.len() < len {
            if Instant::now() >= deadline {
                bail!(
                    "{}: {} bytes read after {timeout:?}, want {len}",
                    self.path.display(),
                    self.len()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Waits until what was read ends with `suffix` (up to `timeout`).
    pub fn wait_suffix(&self, suffix: &[u8], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let done = self
                .data
                .lock()
                .map(|d| d.ends_with(suffix))
                .unwrap_or(false);
            if done {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{}: what was read ({} bytes) does not end with {:?} after {timeout:?}",
                    self.path.display(),
                    self.len(),
                    String::from_utf8_lossy(suffix)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Closes the FIFO and returns everything read.
    pub fn close(mut self) -> Result<Vec<u8>> {
        self.state.store(CLOSING, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join()
                .map_err(|_| anyhow!("fifo reader thread panicked"))??;
        }
        let data = std::mem::take(&mut *self.data.lock().map_err(|_| anyhow!("poisoned"))?);
        Ok(data)
    }
}

impl Drop for FifoReader {
    fn drop(&mut self) {
        self.state.store(CLOSING, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Writes a logging program for `binary://` sinks into `dir` and returns
/// its path. Called as `PROG out OUT err ERR` (the query of
/// `binary://PROG?out=OUT&err=ERR`), it copies fd 3 (stdout) to OUT and
/// fd 4 (stderr) to ERR, records `$CONTAINER_NAMESPACE $CONTAINER_ID` in
/// `OUT.env`, then closes fd 5 to say it is ready. Absolute paths only:
/// it gets no PATH.
pub fn write_logging_binary(dir: &Path) -> Result<PathBuf> {
    let p = dir.join("hf-logger.sh");
    let script = r#"#!/bin/sh
# holdfast integration test: a logging binary (containerd's protocol).
out=/dev/null; err=/dev/null
while [ $# -gt 0 ]; do
    case "$1" in
        out) out=$2; shift 2 ;;
        err) err=$2; shift 2 ;;
        *) shift ;;
    esac
done
/bin/cat <&3 >"$out" 4<&- 5>&- &
/bin/cat <&4 >"$err" 3<&- 5>&- &
exec 3<&- 4<&-
echo "$CONTAINER_NAMESPACE $CONTAINER_ID" >"$out.env"
exec 5>&-
wait
"#;
    fs::write(&p, script).with_context(|| format!("write {}", p.display()))?;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", p.display()))?;
    Ok(p)
}

/// A tmpfs of a fixed size mounted for a test, unmounted on drop (lazily
/// when still busy), even when the test fails.
pub struct TmpfsMount {
    path: PathBuf,
    mounted: bool,
}

impl TmpfsMount {
    /// Creates `path` and mounts a tmpfs of `size` bytes on it.
    pub fn new(path: &Path, size: u64) -> Result<TmpfsMount> {
        fs::create_dir_all(path).with_context(|| format!("create {}", path.display()))?;
        let data = format!("size={size},mode=0755");
        nix::mount::mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(data.as_str()),
        )
        .with_context(|| format!("mount a tmpfs ({size} bytes) on {}", path.display()))?;
        Ok(TmpfsMount {
            path: path.to_path_buf(),
            mounted: true,
        })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes free on the mount (`statvfs`).
    pub fn free_bytes(&self) -> Result<u64> {
        let c = CString::new(self.path.as_os_str().as_bytes()).context("mount path")?;
        let s = nix::sys::statvfs::statvfs(c.as_c_str())
            .with_context(|| format!("statvfs {}", self.path.display()))?;
        Ok(s.blocks_available() as u64 * s.fragment_size() as u64)
    }

    /// Unmounts now (lazily when busy).
    pub fn unmount(&mut self) -> Result<()> {
        if !self.mounted {
            return Ok(());
        }
        self.mounted = false;
        if nix::mount::umount2(&self.path, nix::mount::MntFlags::empty()).is_err() {
            nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH)
                .with_context(|| format!("umount {}", self.path.display()))?;
        }
        Ok(())
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("{e:#}");
        }
    }
}

/// The marker the shim writes where it dropped output (policy `drop`).
pub const DROP_MARKER_PREFIX: &[u8] = b"holdfast: dropped ";
const DROP_MARKER_SUFFIX: &[u8] = b" bytes (log budget full)\n";

/// What [`check_drops`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropReport {
    /// The byte counts of the markers, in order.
    pub markers: Vec<u64>,
    /// Bytes of `expected` that arrived.
    pub delivered: u64,
}

impl DropReport {
    /// The sum of the markers' counts.
    pub fn dropped(&self) -> u64 {
        self.markers.iter().sum()
    }
}

/// Checks that `received` is `expected` with some runs of bytes cut out,
/// each cut replaced by a drop marker naming exactly its length (and
/// nothing else changed, reordered or repeated).
pub fn check_drops(expected: &[u8], received: &[u8]) -> Result<DropReport> {
    let mut report = DropReport::default();
    let mut pos = 0usize; // in expected
    let mut rest = received;
    loop {
        let (chunk, marker) = match find(rest, DROP_MARKER_PREFIX) {
            Some(at) => (&rest[..at], Some(at)),
            None => (rest, None),
        };
        let end = pos + chunk.len();
        ensure!(
            end <= expected.len() && &expected[pos..end] == chunk,
            "{} bytes after output byte {pos} (marker {}) are not the expected ones: got {:?}..., want {:?}...",
            chunk.len(),
            report.markers.len(),
            String::from_utf8_lossy(&chunk[..chunk.len().min(60)]),
            String::from_utf8_lossy(&expected[pos.min(expected.len())..(pos + 60).min(expected.len())])
        );
        pos = end;
        report.delivered += chunk.len() as u64;
        let Some(at) = marker else { break };
        let after = &rest[at + DROP_MARKER_PREFIX.len()..];
        let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
        let n: u64 = std::str::from_utf8(&after[..digits])
            .ok()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("a drop marker without a count after output byte {pos}"))?;
        ensure!(
            after[digits..].starts_with(DROP_MARKER_SUFFIX),
            "a malformed drop marker after output byte {pos}: {:?}",
            String::from_utf8_lossy(&after[..after.len().min(80)])
        );
        report.markers.push(n);
        pos += usize::try_from(n).context("marker count")?;
        ensure!(
            pos <= expected.len(),
            "drop markers count {} bytes, more than the {} expected",
            report.dropped(),
            expected.len()
        );
        rest = &after[digits + DROP_MARKER_SUFFIX.len()..];
    }
    ensure!(
        pos == expected.len(),
        "{} of {} expected bytes are accounted for ({} delivered, {} in {} drop marker(s)): {} bytes are missing without a marker",
        pos,
        expected.len(),
        report.delivered,
        report.dropped(),
        report.markers.len(),
        expected.len() - pos
    );
    Ok(report)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Deterministic pseudo-random bytes (xorshift), `len` long; with
/// `newlines == false` every `\n` is replaced by `N`.
pub fn pseudo_random_bytes(len: usize, seed: u64, newlines: bool) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for b in x.to_le_bytes() {
            if out.len() < len {
                out.push(if !newlines && b == b'\n' { b'N' } else { b });
            }
        }
    }
    out
}

/// The first difference between `got` and `want`, for messages.
pub fn first_difference(got: &[u8], want: &[u8]) -> String {
    if got == want {
        return "identical".into();
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    format!(
        "{} bytes, want {}; first difference at byte {at}",
        got.len(),
        want.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_lines_len_matches() {
        for n in [0, 1, 9, 10, 11, 99, 100, 12345] {
            assert_eq!(numbered_lines(n).len() as u64, numbered_lines_len(n), "{n}");
        }
    }

    #[test]
    fn numbered_lines_check_finds_gaps_and_duplicates() {
        assert!(check_numbered_lines(b"0\n1\n2\n", 3).is_ok());
        let e = check_numbered_lines(b"0\n1\n3\n", 4).unwrap_err();
        assert!(format!("{e}").contains("gap"), "{e}");
        let e = check_numbered_lines(b"0\n1\n1\n", 3).unwrap_err();
        assert!(format!("{e}").contains("duplicate"), "{e}");
        assert!(check_numbered_lines(b"0\n1\n2", 3).is_err());
        let mut c = NumberedLines::new();
        c.feed(b"0\n1").unwrap();
        c.feed(b"0\n11\n").unwrap_err();
    }

    #[test]
    fn drop_check_accounts_exactly() {
        let exp = b"0\n1\n2\n3\n4\n";
        let r = check_drops(
            exp,
            b"0\n1\nholdfast: dropped 4 bytes (log budget full)\n4\n",
        )
        .unwrap();
        assert_eq!(r.markers, vec![4]);
        // A cut mid-line: the marker follows the partial line.
        let r = check_drops(
            exp,
            b"0\n1\n2holdfast: dropped 3 bytes (log budget full)\n4\n",
        )
        .unwrap();
        assert_eq!(r.dropped(), 3);
        assert!(check_drops(
            exp,
            b"0\n1\nholdfast: dropped 2 bytes (log budget full)\n4\n"
        )
        .is_err());
        assert!(check_drops(exp, b"0\n1\n4\n").is_err());
        assert!(check_drops(exp, exp).unwrap().markers.is_empty());
    }

    #[test]
    fn cri_lines_parse() {
        let r = parse_cri_line(b"2024-05-01T12:00:00.123456789Z stdout P a b").unwrap();
        assert!(r.partial);
        assert_eq!(r.text, b"a b");
        let r = parse_cri_line(b"2024-05-01T12:00:00.123456789Z stderr F:x ").unwrap();
        assert_eq!(r.raw(), b"\n");
        assert!(parse_cri_line(b"garbage").is_err());
        // Pod log files: Go's RFC3339Nano drops trailing zeros.
        let r = parse_pod_log_line(b"2024-05-01T12:00:00.1234Z stdout F x").unwrap();
        assert_eq!(r.text, b"x");
        assert!(parse_cri_line(b"2024-05-01T12:00:00.1234Z stdout F x").is_err());
        assert!(parse_pod_log_line(b"2024-05-01T12:00:00.Z stdout F x").is_err());
        assert!(parse_pod_log_line(b"yesterday stdout F x").is_err());
    }

    #[test]
    fn progress_stall_is_the_longest_gap_in_the_window() {
        let p = Progress {
            samples: vec![(1, 10.0), (2, 10.5), (3, 12.5), (4, 13.0)],
            done: None,
        };
        let (stall, at) = p.longest_stall(10.2, 13.4);
        assert!((stall - 2.0).abs() < 1e-9 && (at - 10.5).abs() < 1e-9);
        let (stall, _) = p.longest_stall(12.6, 15.0);
        assert!((stall - 2.0).abs() < 1e-9);
    }
}
