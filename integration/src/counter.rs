//! A container whose state lives only in memory: a busybox shell counting
//! in a variable and printing each count. A checkpoint/restore test checks
//! that the restored process goes on from the checkpoint's count, not 1.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::logs::for_each_journal_record;
use crate::Containerd;

/// A `/bin/sh -c` script that counts in memory and prints `1`, `2`, ...
/// one line per step, while `/tmp/count-<tag>` exists in its rootfs
/// ([`Counter::go`] and [`Counter::hold`]); it never exits by itself.
pub fn script(tag: &str) -> String {
    format!(
        "i=0; while :; do \
           if [ -e /tmp/count-{tag} ]; then i=$((i+1)); echo $i; fi; \
           sleep 0.02; \
         done"
    )
}

/// The trigger file of the counter `tag`, in a fixture's rootfs.
pub struct Counter<'a> {
    cd: &'a Containerd,
    tag: String,
}

impl<'a> Counter<'a> {
    /// The counter `tag` of the fixture `cd` (see [`script`]).
    pub fn new(cd: &'a Containerd, tag: &str) -> Self {
        Counter {
            cd,
            tag: tag.to_string(),
        }
    }

    /// Lets it count.
    pub fn go(&self) -> Result<()> {
        self.cd.fire(&format!("count-{}", self.tag))
    }

    /// Stops its counting (it keeps running, with its count in memory).
    pub fn hold(&self) -> Result<()> {
        let p = self
            .cd
            .rootfs()
            .join("tmp")
            .join(format!("count-{}", self.tag));
        fs::remove_file(&p).with_context(|| format!("remove {}", p.display()))
    }
}

/// The counts in a file sink (whole lines only).
pub fn counts_in_file(path: &Path) -> Result<Vec<u64>> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    parse_counts(&data).with_context(|| format!("the counts in {}", path.display()))
}

fn parse_counts(data: &[u8]) -> Result<Vec<u64>> {
    let text = String::from_utf8_lossy(data);
    let mut lines: Vec<&str> = text.split('\n').collect();
    // The last piece is a line still being written (or "").
    lines.pop();
    lines
        .iter()
        .map(|l| {
            l.trim()
                .parse::<u64>()
                .with_context(|| format!("not a count: {l:?}"))
        })
        .collect()
}

/// The counts of the init's stdout in a task's journal folder, with each
/// record's timestamp.
pub fn counts_in_journal(task: &Path) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut pending = Vec::new();
    for_each_journal_record(task, "init", "stdout", |r| {
        pending.extend_from_slice(&r.text);
        if !r.partial {
            let n = parse_counts(&[pending.as_slice(), b"\n"].concat())?;
            out.extend(n.into_iter().map(|n| (r.time.clone(), n)));
            pending.clear();
        }
        Ok(())
    })
    .with_context(|| format!("the journal {}", task.display()))?;
    Ok(out)
}

/// Waits until the file sink at `path` holds at least `n` counts; returns
/// them.
pub fn wait_counts(path: &Path, n: usize, timeout: Duration) -> Result<Vec<u64>> {
    let deadline = Instant::now() + timeout;
    loop {
        let counts = counts_in_file(path)?;
        if counts.len() >= n {
            return Ok(counts);
        }
        if Instant::now() >= deadline {
            bail!(
                "{} holds {} counts, not {n}, after {timeout:?}",
                path.display(),
                counts.len()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the file sink at `path` stops growing (500 ms without a new
/// count) and returns its counts.
pub fn wait_stable(path: &Path, timeout: Duration) -> Result<Vec<u64>> {
    let deadline = Instant::now() + timeout;
    let mut last = counts_in_file(path)?;
    let mut since = Instant::now();
    loop {
        thread::sleep(Duration::from_millis(50));
        let now = counts_in_file(path)?;
        if now.len() != last.len() {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= Duration::from_millis(500) {
            return Ok(last);
        }
        if Instant::now() >= deadline {
            bail!("{} still grows after {timeout:?}", path.display());
        }
    }
}

/// Checks that `counts` is `first`, `first + 1`, ... without a gap, a
/// repeat or a restart.
pub fn check_consecutive(counts: &[u64], first: u64, what: &str) -> Result<()> {
    ensure!(!counts.is_empty(), "{what}: no count at all");
    for (i, &c) in counts.iter().enumerate() {
        let want = first + i as u64;
        ensure!(
            c == want,
            "{what}: count #{i} is {c}, expected {want} (counts {first}..: {:?})",
            &counts[i.saturating_sub(3)..(i + 3).min(counts.len())]
        );
    }
    Ok(())
}
