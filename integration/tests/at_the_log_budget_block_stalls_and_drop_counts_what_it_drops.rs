//! Issue #3, "at the budget": with a small journal budget and no reader
//! draining the FIFO sink, `policy = "block"` stalls the container and
//! loses nothing once a reader drains; `policy = "drop"` never stalls it and
//! the drop markers count exactly the bytes that are missing.

use std::time::Duration;

use anyhow::{ensure, Context};
use holdfast_integration::logs::{
    self, check_drops, numbered_lines, numbered_lines_len, FifoReader, Progress,
};
use holdfast_integration::{each_version, Containerd};

/// Lines the container writes: about 3.9 MB of output, about 23 MB of
/// journal records, far above the 2 MiB budget plus what the kernel buffers
/// (the shim enlarges the container's pipe to 1 MiB, and the FIFO holds
/// 64 KiB).
const LINES: u64 = 550_000;
const WAIT: Duration = Duration::from_secs(60);

fn options(cd: &Containerd, name: &str, policy: &str) -> anyhow::Result<std::path::PathBuf> {
    logs::write_options(
        cd,
        name,
        &format!(
            "dir = \"{}\"\nbudget_bytes = \"2MiB\"\nsegment_bytes = \"256KiB\"\npolicy = \"{policy}\"\nkeep_after_delete = true\n",
            cd.dir().join("journal").display()
        ),
    )
}

#[test]
fn block_stalls_the_container_at_the_budget_and_loses_nothing() {
    each_version(|cd| {
        let opts = options(cd, "block", "block")?;
        let fifo = cd.dir().join("block.fifo");
        logs::mkfifo(&fifo)?;
        let id = cd.id();
        let flags = logs::run_flags(&opts, &fifo.display().to_string());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let script = logs::numbered_lines_script(&id, Some(LINES), false, false);
        cd.run_detached_with(&flags, &id, &["/bin/sh", "-c", &script])?;

        // Nobody reads the FIFO: the journal fills its budget, then the
        // shim stops reading the container's pipe.
        let stalled = Progress::wait_stalled(cd, &id, Duration::from_secs(3), WAIT)
            .context("with policy block and no reader the container must stall")?;
        let at = stalled.samples.last().map(|s| s.0).unwrap_or(0);
        ensure!(at < LINES, "stalled only after {at} lines");
        let task = logs::task_journal(cd, &cd.dir().join("journal"), &id);
        let used: u64 = ["stdout", "stderr"]
            .iter()
            .flat_map(|s| logs::journal_segments(&task, "init", s).unwrap_or_default())
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        ensure!(
            used <= 2 << 20,
            "the journal holds {used} bytes, above its 2 MiB budget"
        );
        ensure!(
            cd.task_status(&id)?.as_deref() == Some("RUNNING"),
            "a stalled task must stay RUNNING"
        );

        // A reader drains: the container resumes and every line arrives,
        // once, in order.
        let reader = FifoReader::open(&fifo)?;
        let done = Progress::wait_done(cd, &id, WAIT).context("after a reader drained")?;
        ensure!(
            done.done.map(|d| d.0) == Some(LINES),
            "done: {:?}",
            done.done
        );
        reader.wait_len(numbered_lines_len(LINES) as usize, WAIT)?;
        cd.wait_status(&id, "STOPPED", WAIT)?;
        // Whatever else is in the FIFO would be a duplicate.
        std::thread::sleep(Duration::from_millis(300));
        let got = reader.close()?;
        logs::check_numbered_lines(&got, LINES).context("what the FIFO reader received")?;
        cd.assert_clean()
    });
}

#[test]
fn drop_never_stalls_the_container_and_counts_exactly_what_it_dropped() {
    each_version(|cd| {
        let opts = options(cd, "drop", "drop")?;
        let fifo = cd.dir().join("drop.fifo");
        logs::mkfifo(&fifo)?;
        let id = cd.id();
        let flags = logs::run_flags(&opts, &fifo.display().to_string());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        // After its lines the writer waits, so the last marker has a later
        // append to precede once a reader made room.
        let script = logs::numbered_lines_script(&id, Some(LINES), true, false);
        let start = logs::uptime()?;
        cd.run_detached_with(&flags, &id, &["/bin/sh", "-c", &script])?;

        let progress = Progress::wait_done(cd, &id, WAIT)
            .context("with policy drop the container must never block")?;
        let (stall, at) = progress.longest_stall(
            progress.samples.first().map(|s| s.1).unwrap_or(start),
            logs::uptime()?,
        );
        ensure!(
            stall <= 1.0,
            "the container made no progress for {stall:.2} s from uptime {at:.2} (policy drop)"
        );

        let reader = FifoReader::open(&fifo)?;
        // Let the reader take what the journal holds, then the last line.
        std::thread::sleep(Duration::from_millis(500));
        logs::release_writer(cd, &id)?;
        reader.wait_suffix(b"end\n", WAIT)?;
        cd.wait_status(&id, "STOPPED", WAIT)?;
        std::thread::sleep(Duration::from_millis(300));
        let got = reader.close()?;
        let mut want = numbered_lines(LINES);
        want.extend_from_slice(b"end\n");
        let report = check_drops(&want, &got).context("what the FIFO reader received")?;
        ensure!(
            report.dropped() > 0,
            "nothing was dropped: the budget was never reached ({} bytes delivered)",
            report.delivered
        );
        eprintln!(
            "drop: {} bytes delivered, {} dropped in {} marker(s)",
            report.delivered,
            report.dropped(),
            report.markers.len()
        );
        cd.assert_clean()
    });
}
