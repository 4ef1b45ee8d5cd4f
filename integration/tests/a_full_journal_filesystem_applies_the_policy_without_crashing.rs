//! Issue #3: when the journal's filesystem runs full (a 1 MiB tmpfs as the
//! journal `dir`, far below the budget), the full policy applies (`block`
//! stalls the container, `drop` keeps it running and counts what it
//! dropped), the shim says so in a clear log line (in containerd's log), and
//! does not crash: the tasks stay RUNNING, Kill and Delete still work, and
//! once a reader drains the FIFO sink (and forwarded segments are deleted)
//! output flows again without loss beyond what the markers count.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use holdfast_integration::logs::{
    self, check_drops, numbered_lines, FifoReader, Progress, TmpfsMount,
};
use holdfast_integration::{deleted_exit_status, each_version, procs, Containerd};

/// About 2.7 MB of output, about 17 MB of records: far above the tmpfs plus
/// what the kernel buffers (the container's pipe is 1 MiB, the FIFO 64 KiB).
const LINES: u64 = 400_000;
const TMPFS_BYTES: u64 = 1 << 20;
const WAIT: Duration = Duration::from_secs(60);

struct Case {
    policy: &'static str,
    id: String,
    fifo: std::path::PathBuf,
    mount: TmpfsMount,
}

fn start(cd: &Containerd, policy: &'static str) -> Result<Case> {
    let mount = TmpfsMount::new(&cd.dir().join(format!("tmpfs-{policy}")), TMPFS_BYTES)?;
    // A budget far above the filesystem, so the filesystem is what fills;
    // one forwarded segment kept per stream, so draining frees space.
    let opts = logs::write_options(
        cd,
        policy,
        &format!(
            "dir = \"{}\"\nbudget_bytes = \"64MiB\"\nsegment_bytes = \"128KiB\"\nmax_segments = 1\npolicy = \"{policy}\"\n",
            mount.path().display()
        ),
    )?;
    let fifo = cd.dir().join(format!("{policy}.fifo"));
    logs::mkfifo(&fifo)?;
    let id = cd.id();
    let flags = logs::run_flags(&opts, &fifo.display().to_string());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    // The drop writer waits after its lines so that its task is RUNNING
    // when Kill comes; `end` follows once the reader drained.
    let script = logs::numbered_lines_script(&id, Some(LINES), true, true);
    cd.run_detached_with(&flags, &id, &["/bin/sh", "-c", &script])?;
    Ok(Case {
        policy,
        id,
        fifo,
        mount,
    })
}

#[test]
fn a_full_journal_filesystem_applies_the_policy_with_a_clear_log_line_and_no_crash() {
    each_version(|cd| {
        let mut block = start(cd, "block")?;
        let mut drop = start(cd, "drop")?;
        let shims = [
            cd.shim_pid_of(&block.id).context("block shim")?,
            cd.shim_pid_of(&drop.id).context("drop shim")?,
        ];

        // block: the container stalls once the filesystem is full.
        let stalled = Progress::wait_stalled(cd, &block.id, Duration::from_secs(3), WAIT)
            .context("policy block on a full filesystem must stall the container")?;
        let at = stalled.samples.last().map(|s| s.0).unwrap_or(0);
        ensure!(at < LINES, "block writer stalled only after {at} lines");
        ensure!(
            block.mount.free_bytes()? < 128 << 10,
            "the block journal's filesystem is not full: {} bytes free",
            block.mount.free_bytes()?
        );

        // drop: the container never stalls.
        let p = Progress::wait_done(cd, &drop.id, WAIT)
            .context("policy drop on a full filesystem must not stall the container")?;
        let first = p.samples.first().map(|s| s.1).unwrap_or(0.0);
        let (stall, from) = p.longest_stall(first, logs::uptime()?);
        ensure!(
            stall <= 1.0,
            "the drop writer made no progress for {stall:.2} s from uptime {from:.2}"
        );

        // A clear line in containerd's log (the shim's log reaches it).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = cd.log().to_lowercase();
            let clear = log
                .lines()
                .filter(|l| l.contains("filesystem is full") || l.contains("no space left"))
                .count();
            if clear >= 2 {
                break;
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "containerd's log has {clear} line(s) saying a journal filesystem is full, want one per task"
            );
            std::thread::sleep(Duration::from_millis(200));
        }

        // No crash: both shims alive, both tasks RUNNING.
        for (pid, c) in shims.iter().zip([&block, &drop]) {
            ensure!(procs::alive(*pid), "the {} shim {pid} died", c.policy);
            ensure!(
                cd.task_status(&c.id)?.as_deref() == Some("RUNNING"),
                "the {} task is not RUNNING",
                c.policy
            );
        }

        // A reader drains each FIFO: block loses nothing, drop counts
        // exactly what it dropped.
        let block_reader = FifoReader::open(&block.fifo)?;
        let drop_reader = FifoReader::open(&drop.fifo)?;
        let done = Progress::wait_done(cd, &block.id, WAIT)
            .context("the block writer after its FIFO was drained")?;
        ensure!(done.done.map(|d| d.0) == Some(LINES));
        for c in [&block, &drop] {
            logs::release_writer(cd, &c.id)?;
        }
        block_reader.wait_suffix(b"end\n", WAIT)?;
        drop_reader.wait_suffix(b"end\n", WAIT)?;
        std::thread::sleep(Duration::from_millis(300));
        let mut want = numbered_lines(LINES);
        want.extend_from_slice(b"end\n");
        let got = block_reader.close()?;
        ensure!(
            got == want,
            "block lost or changed output on a full filesystem: {}",
            logs::first_difference(&got, &want)
        );
        let report =
            check_drops(&want, &drop_reader.close()?).context("the drop writer's output")?;
        ensure!(report.dropped() > 0, "nothing was dropped");

        // Kill and Delete still work.
        for c in [&block, &drop] {
            cd.kill(&c.id, "SIGKILL")?.ok()?;
            cd.wait_status(&c.id, "STOPPED", WAIT)?;
            let out = cd.delete_task(&c.id)?;
            ensure!(
                deleted_exit_status(&out) == Some(137),
                "delete {}:\n{out}",
                c.policy
            );
        }
        cd.remove_all()?;
        for m in [&mut block.mount, &mut drop.mount] {
            m.unmount()?;
        }
        cd.assert_clean()
    });
}
