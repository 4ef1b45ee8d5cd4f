//! A container that counts in memory, read back through `holdfast logs`,
//! for the checkpoint tests: a restored count goes on from the
//! checkpoint's, a fresh start counts from 1.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use super::cli::{entries, Holdfastd};

/// How long a count or a status may take to show.
pub const WAIT: Duration = Duration::from_secs(30);
/// Counts in memory: nothing but the shell's variable holds the count.
pub const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo \"count $i\"; sleep 0.1; done";

/// Runs `holdfast run -d --name NAME --rootfs ROOTFS -- /bin/sh -c COUNTER`
/// and waits for its first 10 counts.
pub fn run_counter(hd: &Holdfastd, name: &str, rootfs: &str) -> Result<()> {
    hd.run(
        &[
            "run", "-d", "--name", name, "--rootfs", rootfs, "--", "/bin/sh", "-c", COUNTER,
        ],
        None,
    )?
    .ok()?;
    wait_counts(hd, name, 10)?;
    Ok(())
}

/// The counts of `holdfast logs NAME`, in order.
pub fn counts(hd: &Holdfastd, name: &str) -> Result<Vec<u64>> {
    let out = hd.run(&["logs", name], None)?.ok()?;
    out.lines()
        .map(|l| {
            // A terminal container's lines end in \r\n.
            l.trim_end_matches('\r')
                .strip_prefix("count ")
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("not a count line: {l:?}"))
        })
        .collect()
}

/// Polls the logs until they hold at least `n` counts.
pub fn wait_counts(hd: &Holdfastd, name: &str, n: usize) -> Result<Vec<u64>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let c = counts(hd, name)?;
        if c.len() >= n {
            return Ok(c);
        }
        if Instant::now() > deadline {
            bail!("{name} printed {} counts in {WAIT:?}, not {n}", c.len());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `holdfast inspect NAME`'s first (only) container, as JSON.
pub fn inspect(hd: &Holdfastd, name: &str) -> Result<serde_json::Value> {
    let out = hd.run(&["inspect", name], None)?.ok()?;
    let json: serde_json::Value = serde_json::from_str(&out)?;
    Ok(json[0].clone())
}

/// Polls `inspect` until the container's status is `status`.
pub fn wait_status(hd: &Holdfastd, name: &str, status: &str) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let json = inspect(hd, name)?;
        if json["state"]["status"] == status {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{name} is not {status} after {WAIT:?}: {json}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Consecutive counts, from `from` on (at least `min` of them).
pub fn check_consecutive(counts: &[u64], from: u64, min: usize) -> Result<()> {
    ensure!(
        counts.first() == Some(&from),
        "the count starts at {:?}, not at {from}",
        counts.first()
    );
    for w in counts.windows(2) {
        ensure!(w[1] == w[0] + 1, "after {} comes {}", w[0], w[1]);
    }
    ensure!(counts.len() >= min, "only {} counts", counts.len());
    Ok(())
}

/// The permission bits of `path`.
pub fn mode(path: &Path) -> Result<u32> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .permissions()
        .mode()
        & 0o777)
}

/// Checkpoint folders and images of holdfastd `hd` are root-only.
pub fn check_private(hd: &Holdfastd, name: &str, checkpoint: &str) -> Result<()> {
    let root = hd.root.join("checkpoints");
    let dir = root.join(name).join(checkpoint);
    for d in [&root, &root.join(name), &dir] {
        ensure!(mode(d)? == 0o700, "{} is {:o}", d.display(), mode(d)?);
    }
    ensure!(
        dir.join("inventory.img").is_file(),
        "no CRIU images in {}",
        dir.display()
    );
    for f in entries(&dir) {
        let m = mode(&dir.join(&f))?;
        ensure!(m & 0o077 == 0, "{f} in {} is {m:o}", dir.display());
    }
    Ok(())
}

/// The gRPC code of an answer.
pub fn code<T>(answer: Result<tonic::Response<T>, tonic::Status>) -> tonic::Code {
    match answer {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    }
}
