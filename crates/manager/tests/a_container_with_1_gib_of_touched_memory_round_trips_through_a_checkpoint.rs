//! Issue 5: a container whose process holds 1 GiB of touched, random
//! memory is checkpointed (stopping it) and restored through holdfastd,
//! a private containerd (1.6 and/or 1.7, see `HOLDFAST_CONTAINERD`), our
//! shim, runc and CRIU; the memory comes back intact and the process goes
//! on.
//!
//! What holds the memory: busybox's `dd bs=1024M count=1 iflag=fullblock`
//! reads 1 GiB from `/dev/urandom` (through `tee` into `sha256sum`, which
//! records the hash) into one anonymous buffer, then blocks writing it to
//! a pipe whose reader waits for a trigger file. So the gibibyte is
//! private anonymous memory of a process, which CRIU dumps page by page
//! into `pages-*.img` and maps back on restore: its memory dump and
//! restore, not a file copy (a tmpfs mount's files, e.g. a /dev/shm, CRIU
//! would dump as a gzipped tar of the mount instead). The test checks the
//! process's resident size before the dump and after the restore, that
//! the images hold at least 1 GiB of pages, and that the hash of what the
//! restored `dd` writes out equals the hash taken before. The images live
//! under the fixture's folder and go with the container. Needs root.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use common::cli::{entries, Holdfastd};
use common::count::wait_status;
use holdfast_integration::{each_version, Containerd as Fixture};
use serde_json::Value;

const GIB: u64 = 1 << 30;
/// How long generating, hashing and moving the gibibyte may take.
const SLOW: Duration = Duration::from_secs(240);

/// Fills dd's 1 GiB buffer with random bytes, prints their hash, and once
/// `/tmp/<name>.go` exists lets dd write the buffer to a hash; the
/// container's `/tmp` is the fixture's rootfs (on disk, not tmpfs).
fn script(name: &str) -> String {
    format!(
        "h=/tmp/{name}.h; b=/tmp/{name}.before; go=/tmp/{name}.go; rm -f $h $b $go; mkfifo $h; \
         sha256sum < $h > $b & \
         dd if=/dev/urandom bs=1M count=1024 2>/dev/null | tee $h \
           | dd bs=1024M count=1 iflag=fullblock 2>/dev/null \
           | {{ until [ -e $go ]; do sleep 0.1; done; echo \"after $(sha256sum)\"; }} & \
         until [ -s $b ]; do sleep 0.1; done; echo \"before $(cat $b)\"; \
         wait; echo done"
    )
}

/// The largest resident size (bytes) of the container's processes.
fn largest_rss(cd: &Fixture, name: &str) -> Result<u64> {
    let cgroup = cd.cgroup_of(name);
    let procs = [
        format!("/sys/fs/cgroup/memory{cgroup}/cgroup.procs"),
        format!("/sys/fs/cgroup{cgroup}/cgroup.procs"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .with_context(|| format!("no cgroup.procs for {cgroup}"))?;
    let mut largest = 0;
    for pid in procs.split_whitespace() {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        largest = largest.max(kib * 1024);
    }
    Ok(largest)
}

/// Polls the container's output until a line starts with `prefix`; that
/// line.
fn wait_line(hd: &Holdfastd, name: &str, prefix: &str) -> Result<String> {
    let deadline = Instant::now() + SLOW;
    loop {
        let out = hd.run(&["logs", name], None)?.ok()?;
        if let Some(line) = out.lines().find(|l| l.starts_with(prefix)) {
            return Ok(line.to_owned());
        }
        if Instant::now() > deadline {
            bail!("no {prefix:?} line after {SLOW:?}; output:\n{out}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until a process of the container holds at least 1 GiB.
fn wait_gib_resident(cd: &Fixture, name: &str) -> Result<()> {
    let deadline = Instant::now() + SLOW;
    loop {
        let rss = largest_rss(cd, name)?;
        if rss >= GIB {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no process of {name} holds 1 GiB after {SLOW:?} (largest: {rss} bytes)");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Bytes of CRIU's page images in a checkpoint folder.
fn pages_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for f in entries(dir) {
        if f.starts_with("pages-") && f.ends_with(".img") {
            total += std::fs::metadata(dir.join(&f))?.len();
        }
    }
    Ok(total)
}

fn scenario(cd: &Fixture, hd: &Holdfastd, name: &str) -> Result<()> {
    let rootfs = cd.rootfs().display().to_string();
    let script = script(name);
    hd.run(
        &[
            "run", "-d", "--name", name, "--rootfs", &rootfs, "--", "/bin/sh", "-c", &script,
        ],
        None,
    )?
    .ok()?;
    let before = wait_line(hd, name, "before ")?;
    wait_gib_resident(cd, name)?;

    let t = Instant::now();
    hd.run(&["checkpoint", "create", name, "big"], None)?.ok()?;
    let dumped_in = t.elapsed();
    wait_status(hd, name, "exited")?;
    let listed: Value =
        serde_json::from_str(&hd.run(&["checkpoint", "ls", "--json", name], None)?.ok()?)?;
    let size = listed[0]["size_bytes"].as_u64().context("no size")?;
    ensure!(size >= GIB, "the checkpoint holds {size} bytes");
    let dir = hd.root.join("checkpoints").join(name).join("big");
    let pages = pages_bytes(&dir)?;
    ensure!(pages >= GIB, "CRIU's page images hold {pages} bytes");

    let t = Instant::now();
    hd.run(&["restore", name, "big"], None)?.ok()?;
    let restored_in = t.elapsed();
    wait_status(hd, name, "running")?;
    wait_gib_resident(cd, name)?;
    std::fs::write(cd.rootfs().join("tmp").join(format!("{name}.go")), b"")?;
    let after = wait_line(hd, name, "after ")?;
    let hash = |line: &str| line.split_whitespace().nth(1).map(str::to_owned);
    ensure!(
        hash(&before).is_some() && hash(&before) == hash(&after),
        "the memory changed across the checkpoint: {before:?} vs {after:?}"
    );
    wait_line(hd, name, "done")?;
    eprintln!("1 GiB: checkpoint {dumped_in:?} ({pages} bytes of pages), restore {restored_in:?}");
    hd.run(&["rm", "-f", name], None)?.ok()?;
    ensure!(!dir.exists(), "rm left the images");
    for f in ["h", "before", "go"] {
        let _ = std::fs::remove_file(cd.rootfs().join("tmp").join(format!("{name}.{f}")));
    }
    Ok(())
}

#[test]
fn a_container_with_1_gib_of_touched_memory_round_trips_through_a_checkpoint() {
    each_version(|cd| {
        let mut hd = Holdfastd::start(cd)?;
        let name = cd.id();
        scenario(cd, &hd, &name)
            .and_then(|()| hd.terminate())
            .with_context(|| format!("holdfastd's log:\n{}", hd.log()))?;
        cd.assert_clean()
    });
}
