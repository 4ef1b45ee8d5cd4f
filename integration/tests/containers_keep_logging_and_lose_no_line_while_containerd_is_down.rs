//! Issue #3, the heart of it: containers write numbered lines as fast as
//! they can and record their own progress; their FIFO reader stops reading
//! and closes, containerd is killed with `kill -9` and kept down for 60 s
//! (`HOLDFAST_LOG_OUTAGE_SECS`). No container's progress stalls more than
//! one second meanwhile; afterwards a new FIFO reader receives every line
//! exactly once and in order (together with what the first reader got), the
//! `file://` and `binary://` sinks hold every line, and so does the journal.
//! One outage serves the three sinks.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use holdfast_integration::logs::{self, numbered_lines_len, FifoReader, NumberedLines, Progress};
use holdfast_integration::{each_version, env_usize, Containerd};

/// Longest time a container may go without progress.
const MAX_STALL: f64 = 1.0;
const WAIT: Duration = Duration::from_secs(120);

struct Writer {
    sink: &'static str,
    id: String,
}

fn start(cd: &Containerd, opts: &Path, sink: &'static str, uri: &str) -> Result<Writer> {
    let id = cd.id();
    let flags = logs::run_flags(opts, uri);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let script = logs::numbered_lines_script(&id, None, false, false);
    cd.run_detached_with(&flags, &id, &["/bin/sh", "-c", &script])
        .with_context(|| format!("start the {sink} writer"))?;
    Ok(Writer { sink, id })
}

/// Checks a sink file holds exactly the lines `0` .. `n-1`, waiting for the
/// forwarder to write them.
fn check_file(path: &Path, n: u64, what: &str) -> Result<()> {
    let data = logs::wait_file_len(path, numbered_lines_len(n), WAIT)?;
    logs::check_numbered_lines(&data, n).with_context(|| format!("{what} ({})", path.display()))
}

#[test]
fn containers_never_stall_and_every_line_arrives_once_after_a_containerd_outage() {
    each_version(|cd| {
        let outage = Duration::from_secs(env_usize("HOLDFAST_LOG_OUTAGE_SECS", 60) as u64);
        let root = cd.dir().join("journal");
        // A budget that holds the whole outage's output (the FIFO's reader is
        // away all along), and every forwarded segment kept, so the journal
        // can be checked for every line.
        let opts = logs::write_options(
            cd,
            "outage",
            &format!(
                "dir = \"{}\"\nbudget_bytes = \"2GiB\"\nsegment_bytes = \"16MiB\"\nmax_segments = 1000\npolicy = \"block\"\nkeep_after_delete = true\n",
                root.display()
            ),
        )?;
        let fifo = cd.dir().join("out.fifo");
        logs::mkfifo(&fifo)?;
        let file = cd.dir().join("sink/file.log");
        let logger = logs::write_logging_binary(cd.dir())?;
        let bin_out = cd.dir().join("bin-out.log");
        let bin_err = cd.dir().join("bin-err.log");

        // The first reader is there before the task, as CRI's and ctr's are
        // (the Go shim, when checking this test, needs one at Create).
        let first = FifoReader::open(&fifo)?;
        let w_fifo = start(cd, &opts, "fifo", &fifo.display().to_string())?;
        let w_file = start(cd, &opts, "file://", &format!("file://{}", file.display()))?;
        let w_bin = start(
            cd,
            &opts,
            "binary://",
            &format!(
                "binary://{}?out={}&err={}",
                logger.display(),
                bin_out.display(),
                bin_err.display()
            ),
        )?;
        let writers = [&w_fifo, &w_file, &w_bin];

        // The first reader reads a while, stops reading, then closes.
        first.wait_len(1, Duration::from_secs(10))?;
        thread::sleep(Duration::from_secs(2));
        first.pause();
        let from = logs::uptime()?;
        thread::sleep(Duration::from_secs(1));
        let first = first.close()?;
        ensure!(!first.is_empty(), "the first reader got nothing");

        cd.kill9()?;
        let down = Instant::now();
        while down.elapsed() < outage {
            thread::sleep(Duration::from_millis(200));
        }
        cd.restart()?;
        let to = logs::uptime()?;

        for w in writers {
            let p = Progress::read(cd, &w.id)?;
            ensure!(
                p.done.is_none(),
                "the {} writer ended by itself: {:?}",
                w.sink,
                p.done
            );
            let (stall, at) = p.longest_stall(from, to);
            let written = p.count_at(to) - p.count_at(from);
            eprintln!(
                "{} writer: {written} lines in the {:.1} s without a reader or containerd, longest stall {stall:.2} s",
                w.sink,
                to - from
            );
            ensure!(
                stall <= MAX_STALL,
                "the {} writer made no progress for {stall:.2} s from uptime {at:.2} (reader gone at {from:.2}, containerd back at {to:.2})",
                w.sink
            );
            ensure!(
                cd.task_status(&w.id)?.as_deref() == Some("RUNNING"),
                "the {} writer is not RUNNING after the outage",
                w.sink
            );
        }

        // A new reader, then the writers stop.
        let second = FifoReader::open(&fifo)?;
        for w in writers {
            logs::stop_writer(cd, &w.id)?;
        }
        let mut totals = Vec::new();
        for w in writers {
            let p = Progress::wait_done(cd, &w.id, WAIT)?;
            totals.push(p.done.map(|d| d.0).unwrap_or(0));
            cd.wait_status(&w.id, "STOPPED", WAIT)?;
        }
        let (n_fifo, n_file, n_bin) = (totals[0], totals[1], totals[2]);

        // FIFO: the first reader's bytes, then the second's, are every line
        // once and in order.
        let want = numbered_lines_len(n_fifo) as usize;
        second.wait_len(want.saturating_sub(first.len()), WAIT)?;
        // Whatever else arrives would be a duplicate.
        thread::sleep(Duration::from_millis(300));
        let second = second.close()?;
        let mut check = NumberedLines::new();
        check
            .feed(&first)
            .context("what the first FIFO reader received")?;
        let first_lines = check.count();
        check.feed(&second).with_context(|| {
            format!(
                "what the second FIFO reader received after the first's {} bytes ({first_lines} lines)",
                first.len()
            )
        })?;
        check.finish(n_fifo).context("FIFO sink")?;
        eprintln!(
            "fifo: {n_fifo} lines, {} bytes by the first reader, {} by the second",
            first.len(),
            second.len()
        );

        check_file(&file, n_file, "the file:// sink")?;
        check_file(&bin_out, n_bin, "the binary:// sink's stdout")?;
        let err = std::fs::read(&bin_err).context("the binary:// sink's stderr")?;
        ensure!(err.is_empty(), "stderr reached the logging binary: {err:?}");
        let env = std::fs::read_to_string(bin_out.with_extension("log.env"))?;
        ensure!(
            env.trim() == format!("{} {}", cd.namespace(), w_bin.id),
            "the logging binary saw CONTAINER_NAMESPACE CONTAINER_ID {env:?}"
        );

        for (w, n) in writers.iter().zip(&totals) {
            let task = logs::task_journal(cd, &root, &w.id);
            logs::wait_journal_numbered(&task, *n, WAIT)
                .with_context(|| format!("the {} writer's journal", w.sink))?;
            ensure!(
                logs::journal_bytes(&task, "init", "stderr")?.is_empty(),
                "the {} writer's stderr journal is not empty",
                w.sink
            );
        }
        cd.assert_clean()
    });
}
