//! holdfastd's `[log]` keys reach the shim of each container it creates:
//! with a 4 KiB rotation size, 2 kept segments and 1000-byte records, a
//! container's journal folder holds at most 3 stdout segments of at most
//! 4 KiB after many rotations, and a 2 KiB line is journaled as records of
//! at most 1000 bytes (and read back whole through `Logs`); containerd
//! keeps every key, budget and policy included, in the container's runtime
//! options. After a SIGHUP with other `[log]` keys, a new container gets
//! them while the first keeps its own, across a restart too. Needs root.

mod common;

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::{connect_ready, run, sh_spec, status, wait_state, Daemon, Paths};
use holdfast_api::shim::v1::Options;
use holdfast_api::v1::containers_client::ContainersClient;
use holdfast_api::v1::{ContainerStatus, LogsRequest, RemoveRequest, StartRequest};
use holdfast_integration::Containerd as Fixture;
use holdfast_journal::{Entry, Reader, Stream};
use holdfast_manager::containerd::Containerd;
use nix::sys::signal::Signal;
use tonic::transport::Channel;

/// The first `[log]` keys.
const LOG_FIRST: &str = "budget_bytes = \"64KiB\"\nsegment_bytes = \"4KiB\"\nmax_segments = 2\n\
                         policy = \"drop\"\nfsync_interval_ms = 0\nmax_record_bytes = 1000\n";
/// The `[log]` keys after the reload.
const LOG_RELOADED: &str = "budget_bytes = \"128KiB\"\nsegment_bytes = \"8KiB\"\nmax_segments = 4\n\
                            policy = \"block\"\nfsync_interval_ms = 250\nmax_record_bytes = \"4KiB\"\n";

/// Length of the long line.
const LONG: usize = 2048;

/// 1500 numbered lines (about 72 KiB of records: many segments), then
/// one line of [`LONG`] `x`, then exit.
fn script() -> String {
    "i=1; while [ $i -le 1500 ]; do echo \"line $i\"; i=$((i+1)); done; \
     s=x; for k in 1 2 3 4 5 6 7 8 9 10 11; do s=$s$s; done; echo \"$s\""
        .to_owned()
}

/// The stdout segment files of a journal folder: (sequence, size).
fn segments(journal: &Path) -> Result<Vec<(u64, u64)>> {
    let dir = journal.join("init");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(seq) = name
            .strip_prefix("stdout.")
            .and_then(|r| r.strip_suffix(".log"))
        else {
            continue;
        };
        out.push((seq.parse::<u64>()?, entry.metadata()?.len()));
    }
    out.sort_unstable();
    Ok(out)
}

/// The lengths of the stdout records after the last numbered line.
fn long_line_records(journal: &Path) -> Result<Vec<usize>> {
    let mut reader = Reader::open(journal, "init", Stream::Stdout)?;
    let mut after = Vec::new();
    while let Some(entry) = reader.try_next()? {
        if let Entry::Record { record, .. } = entry {
            if record.text.starts_with(b"line ") {
                after.clear();
            } else {
                ensure!(
                    record.text.iter().all(|&b| b == b'x'),
                    "unexpected record {:?}",
                    String::from_utf8_lossy(&record.text)
                );
                after.push(record.text.len());
            }
        }
    }
    Ok(after)
}

/// Checks a finished run's journal: rotated at `segment` bytes, at most
/// `kept` finished segments plus the current one, the long line cut in
/// records of at most `record` bytes.
fn check_journal(journal: &Path, segment: u64, kept: usize, record: usize) -> Result<()> {
    let segs = segments(journal)?;
    let (newest, _) = *segs.last().context("no stdout segment")?;
    ensure!(
        newest > kept as u64 + 1,
        "{segs:?}: fewer rotations than 1500 lines need at {segment} bytes"
    );
    ensure!(
        segs.len() <= kept + 1,
        "{segs:?}: more than {kept} finished segments kept"
    );
    ensure!(
        segs.iter().all(|&(_, size)| size <= segment),
        "{segs:?}: a segment is larger than {segment} bytes"
    );
    let parts = long_line_records(journal)?;
    ensure!(
        parts.iter().sum::<usize>() == LONG && parts.iter().all(|&n| n <= record),
        "long line journaled as {parts:?}, records of at most {record} wanted"
    );
    ensure!(
        parts.len() >= LONG.div_ceil(record),
        "long line journaled as {parts:?}"
    );
    Ok(())
}

/// The last line of `name`'s output through holdfastd's `Logs`.
async fn last_line(client: &mut ContainersClient<Channel>, name: &str) -> Result<Vec<u8>> {
    let mut stream = client
        .logs(LogsRequest {
            name: name.to_owned(),
            tail: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(msg) = stream.message().await? {
        out.extend_from_slice(&msg.data);
    }
    Ok(out)
}

/// Runs the script in a new container and waits for it to exit 0.
async fn run_to_exit(
    client: &mut ContainersClient<Channel>,
    cd: &Fixture,
) -> Result<(String, std::path::PathBuf)> {
    let c = run(client, sh_spec(cd, &cd.id(), &script())).await?;
    let name = c.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
    wait_exited(client, &name).await?;
    Ok((name, c.log_dir.into()))
}

async fn wait_exited(client: &mut ContainersClient<Channel>, name: &str) -> Result<()> {
    let s = wait_state(client, name, Duration::from_secs(20), |s| {
        status(s) == ContainerStatus::Exited
    })
    .await?;
    ensure!(s.exit_code == 0, "{name} exited {}", s.exit_code);
    Ok(())
}

fn want(
    budget: u64,
    segment: u64,
    kept: u32,
    policy: &str,
    fsync: u64,
    record: u64,
    p: &Paths,
) -> Options {
    Options {
        config_path: String::new(),
        dir: p.logs.display().to_string(),
        budget_bytes: budget,
        segment_bytes: segment,
        max_segments: Some(kept),
        policy: policy.to_owned(),
        fsync_interval_ms: Some(fsync),
        keep_after_delete: true,
        max_record_bytes: record,
        restore_from: String::new(),
    }
}

async fn scenario(cd: &Fixture, paths: &Paths) -> Result<()> {
    paths.write_config_with_log(cd, true, "", LOG_FIRST)?;
    let mut daemon = Daemon::spawn(paths)?;
    let (mut client, _) = connect_ready(&paths.socket, &daemon).await?;
    let containerd = Containerd::connect(cd.address(), cd.namespace(), Duration::from_secs(10))
        .await
        .context("connect to containerd")?;
    let first = want(64 << 10, 4 << 10, 2, "drop", 0, 1000, paths);

    let (a, a_journal) = run_to_exit(&mut client, cd).await?;
    check_journal(&a_journal, 4 << 10, 2, 1000).context("first container")?;
    let long = format!("{}\n", "x".repeat(LONG));
    ensure!(
        last_line(&mut client, &a).await? == long.as_bytes(),
        "Logs does not join the long line's records"
    );
    let kept = containerd.shim_options(&a).await?;
    ensure!(kept.as_ref() == Some(&first), "{a}: {kept:?}");

    // SIGHUP: new defaults for new containers.
    paths.write_config_with_log(cd, true, "", LOG_RELOADED)?;
    daemon.signal(Signal::SIGHUP)?;
    daemon.wait_log("SIGHUP: config reloaded", 1, Duration::from_secs(10))?;
    ensure!(
        daemon
            .log()
            .lines()
            .any(|l| l.contains("SIGHUP: config reloaded") && l.contains("\"log\"")),
        "the reload did not apply [log]"
    );
    let (b, b_journal) = run_to_exit(&mut client, cd).await?;
    check_journal(&b_journal, 8 << 10, 4, 4096).context("container after the reload")?;
    ensure!(
        segments(&b_journal)?
            .iter()
            .any(|&(_, size)| size > 4 << 10),
        "the new rotation size did not apply"
    );
    let second = want(128 << 10, 8 << 10, 4, "block", 250, 4096, paths);
    let got = containerd.shim_options(&b).await?;
    ensure!(got.as_ref() == Some(&second), "{b}: {got:?}");

    // The first container keeps its settings when it runs again.
    client.start(StartRequest { name: a.clone() }).await?;
    wait_exited(&mut client, &a).await?;
    let kept = containerd.shim_options(&a).await?;
    ensure!(
        kept.as_ref() == Some(&first),
        "{a} after a restart: {kept:?}"
    );
    check_journal(&a_journal, 4 << 10, 2, 1000).context("first container, second run")?;

    for name in [a, b] {
        client.remove(RemoveRequest { name, force: false }).await?;
    }
    drop(client);
    daemon.terminate()?;
    Ok(())
}

#[test]
fn holdfastd_log_settings_reach_the_shim_and_a_reload_applies_them_to_new_containers() {
    common::each_version_with_holdfastd(|cd, paths| Box::pin(scenario(cd, paths)));
}
