//! Issue 5, the manager: through the built `holdfast` CLI and `holdfastd`,
//! a private containerd (1.6 and/or 1.7, see `HOLDFAST_CONTAINERD`), our
//! shim, runc and CRIU. A busybox shell counts in a variable and prints
//! each count. `checkpoint create --leave-running`, `kill`, `restore`: the
//! count goes on from the checkpoint's, not from 1, and `holdfast logs`
//! holds one ordered stream (the first run's lines, then the restored
//! run's). A checkpoint without `--leave-running` stops the container and
//! the restored count continues exactly after its last line; the same for
//! a container with a terminal (`run -t`). `checkpoint
//! ls` / `rm` work; checkpoint folders are root-only. Bad input (unknown
//! container or checkpoint, `../x`, restore while running, checkpoint of a
//! stopped container, a taken name) gets a clear error with the right gRPC
//! code and changes nothing. Needs root.

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use common::cli::{entries, Holdfastd};
use common::count::{
    check_consecutive, check_private, code, counts, run_counter, wait_counts, wait_status, COUNTER,
    WAIT,
};
use holdfast_api::v1::{
    CreateCheckpointRequest, ListCheckpointsRequest, RemoveCheckpointRequest, RestoreRequest,
};
use holdfast_integration::{each_version, Containerd as Fixture};
use tonic::Code;

/// `1..=k` followed by `from, from+1, ...` (at least 10 of them): the
/// first run's lines, then the restored run's. Returns `k`.
fn check_one_stream(counts: &[u64], from: u64) -> Result<usize> {
    let k = counts
        .windows(2)
        .position(|w| w[1] != w[0] + 1)
        .map(|i| i + 1)
        .context("the restored run's lines are missing: the counts never restart")?;
    for (i, c) in counts[..k].iter().enumerate() {
        ensure!(*c == i as u64 + 1, "first run: line {i} is {c}");
    }
    let rest = &counts[k..];
    ensure!(
        rest[0] != 1,
        "the restored container counts from 1 again: it was not restored from the checkpoint"
    );
    ensure!(
        rest[0] == from,
        "the restored run starts at {}, not at {from}: {counts:?}",
        rest[0]
    );
    for w in rest.windows(2) {
        ensure!(
            w[1] == w[0] + 1,
            "restored run: after {} comes {}",
            w[0],
            w[1]
        );
    }
    ensure!(rest.len() >= 10, "only {} restored lines", rest.len());
    Ok(k)
}

/// containerd unpacks the images a task is restored from into
/// `$XDG_RUNTIME_DIR/ctrd-checkpoint*` (the fixture's `xdg` folder) and
/// never removes them: holdfastd does once the task started.
fn wait_unpacked_removed(cd: &Fixture) -> Result<()> {
    let xdg = cd.dir().join("xdg");
    let deadline = Instant::now() + WAIT;
    loop {
        let left: Vec<String> = entries(&xdg)
            .into_iter()
            .filter(|e| e.starts_with("ctrd-checkpoint"))
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "containerd's unpacked checkpoints are left in {}: {left:?}",
                xdg.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn checkpoint_and_restore(cd: &Fixture, hd: &Holdfastd, name: &str, rootfs: &str) -> Result<()> {
    run_counter(hd, name, rootfs)?;

    // Leave running, kill, restore: the count goes on from the checkpoint.
    // The dump happens between the two reads around it.
    let before_checkpoint = counts(hd, name)?.len() as u64;
    let made = hd
        .run(
            &["checkpoint", "create", "--leave-running", name, "cp1"],
            None,
        )?
        .ok()?;
    ensure!(made.trim() == "cp1", "{made:?}");
    let at_checkpoint = counts(hd, name)?.len() as u64;
    wait_status(hd, name, "running")?;
    check_private(hd, name, "cp1")?;
    wait_counts(hd, name, at_checkpoint as usize + 10)?;
    hd.run(&["kill", name], None)?.ok()?;
    wait_status(hd, name, "exited")?;
    let before = counts(hd, name)?;
    hd.run(&["restore", name, "cp1"], None)?.ok()?;
    wait_status(hd, name, "running")?;
    wait_unpacked_removed(cd)?;
    let after = wait_counts(hd, name, before.len() + 10)?;
    ensure!(
        after[..before.len()] == before[..],
        "the first run's lines changed"
    );
    // The restored shell prints the count after the one it had at the
    // dump, give or take the line in flight.
    let first_restored = after[before.len()];
    ensure!(
        first_restored != 1 && first_restored >= before_checkpoint && first_restored <= at_checkpoint + 2,
        "the restored run starts at {first_restored}; the checkpoint was taken between {before_checkpoint} and {at_checkpoint}"
    );
    check_one_stream(&after, first_restored)?;

    // Without --leave-running the container stops at the dump, and the
    // restored count continues right after its last line.
    let generated = hd.run(&["checkpoint", "create", name], None)?.ok()?;
    let generated = generated.trim().to_owned();
    ensure!(generated.starts_with("cp-"), "{generated:?}");
    wait_status(hd, name, "exited")?;
    let stopped = counts(hd, name)?;
    let last = *stopped.last().context("no counts")?;
    std::thread::sleep(Duration::from_millis(300));
    ensure!(
        counts(hd, name)? == stopped,
        "the container went on counting after the dump"
    );
    let listed = hd.run(&["checkpoint", "ls", name], None)?.ok()?;
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    ensure!(rows.len() == 3, "{listed}");
    ensure!(
        rows[1][0] == "cp1" && rows[1].last() == Some(&"true"),
        "{listed}"
    );
    ensure!(
        rows[2][0] == generated && rows[2].last() == Some(&"false"),
        "{listed}"
    );
    hd.run(&["restore", name, &generated], None)?.ok()?;
    wait_unpacked_removed(cd)?;
    let resumed = wait_counts(hd, name, stopped.len() + 10)?;
    ensure!(
        resumed[stopped.len()] == last + 1,
        "after the stopping checkpoint at {last} the restored run starts at {}",
        resumed[stopped.len()]
    );

    // rm: the images and the record go.
    hd.run(&["checkpoint", "rm", name, "cp1"], None)?.ok()?;
    ensure!(!hd.root.join("checkpoints").join(name).join("cp1").exists());
    let listed = hd.run(&["checkpoint", "ls", name], None)?.ok()?;
    ensure!(
        listed.lines().count() == 2 && !listed.contains("cp1"),
        "{listed}"
    );
    Ok(())
}

/// A container with a terminal (`run -t`): runc hands the restored
/// process a new pty through the shim's console socket, and its output
/// reaches the same journal.
fn terminal_round_trip(hd: &Holdfastd, name: &str, rootfs: &str) -> Result<()> {
    let tty = format!("{name}-tty");
    hd.run(
        &[
            "run", "-d", "-t", "--name", &tty, "--rootfs", rootfs, "--", "/bin/sh", "-c", COUNTER,
        ],
        None,
    )?
    .ok()?;
    wait_counts(hd, &tty, 10)?;
    hd.run(&["checkpoint", "create", &tty, "cp1"], None)?.ok()?;
    wait_status(hd, &tty, "exited")?;
    let stopped = counts(hd, &tty)?;
    let last = *stopped.last().context("no counts")?;
    hd.run(&["restore", &tty, "cp1"], None)?.ok()?;
    wait_status(hd, &tty, "running")?;
    let resumed = wait_counts(hd, &tty, stopped.len() + 10)?;
    ensure!(
        resumed[stopped.len()] == last + 1,
        "after the checkpoint at {last} the restored terminal container starts at {}",
        resumed[stopped.len()]
    );
    check_consecutive(&resumed, 1, stopped.len() + 10)?;
    hd.run(&["rm", "-f", &tty], None)?.ok()?;
    Ok(())
}

fn bad_input(hd: &Holdfastd, name: &str, rootfs: &str) -> Result<()> {
    let created = format!("{name}-created");
    hd.run(
        &[
            "create",
            "--name",
            &created,
            "--rootfs",
            rootfs,
            "--",
            "/bin/true",
        ],
        None,
    )?
    .ok()?;
    let snapshot = |hd: &Holdfastd| -> Result<(String, String, Vec<String>)> {
        Ok((
            hd.run(&["ps", "-a", "--json"], None)?.ok()?,
            hd.run(&["checkpoint", "ls", "--json", name], None)?.ok()?,
            entries(&hd.root.join("checkpoints")),
        ))
    };
    let before = snapshot(hd)?;

    hd.run(&["checkpoint", "create", "nosuch", "x"], None)?
        .expect_error(125, "container \"nosuch\" not found")?;
    hd.run(&["checkpoint", "create", name, "../x"], None)?
        .expect_error(125, "invalid argument: checkpoint \"../x\"")?;
    hd.run(&["checkpoint", "create", "a/b"], None)?
        .expect_error(125, "invalid argument: name \"a/b\"")?;
    hd.run(&["checkpoint", "create", &created, "y"], None)?
        .expect_error(125, "is not running")?;
    hd.run(&["restore", name, "cp1"], None)?
        .expect_error(125, "checkpoint \"cp1\" of container")?;
    hd.run(&["checkpoint", "rm", name, "missing"], None)?
        .expect_error(125, "checkpoint \"missing\" of container")?;
    hd.run(&["checkpoint", "ls", "nosuch"], None)?
        .expect_error(125, "no such container: nosuch")?;

    let generated = entries(&hd.root.join("checkpoints").join(name))
        .into_iter()
        .next()
        .context("no checkpoint left")?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let mut client = hd.client().await?;
            let restore = |c: &str, cp: &str| RestoreRequest {
                container: c.into(),
                checkpoint: cp.into(),
            };
            let create = |c: &str, cp: &str| CreateCheckpointRequest {
                container: c.into(),
                name: cp.into(),
                leave_running: true,
                ..Default::default()
            };
            let rm = RemoveCheckpointRequest {
                container: name.into(),
                name: "missing".into(),
            };
            let ls = ListCheckpointsRequest {
                container: "../x".into(),
            };
            let cases = [
                (
                    code(client.restore(restore(name, &generated)).await),
                    Code::FailedPrecondition,
                    "restore while running",
                ),
                (
                    code(client.restore(restore("nosuch", "x")).await),
                    Code::NotFound,
                    "restore of an unknown container",
                ),
                (
                    code(client.restore(restore(name, "../x")).await),
                    Code::InvalidArgument,
                    "restore of ../x",
                ),
                (
                    code(client.create_checkpoint(create(name, "../x")).await),
                    Code::InvalidArgument,
                    "checkpoint ../x",
                ),
                (
                    code(client.create_checkpoint(create(name, &generated)).await),
                    Code::AlreadyExists,
                    "a taken checkpoint name",
                ),
                (
                    code(client.create_checkpoint(create(&created, "y")).await),
                    Code::FailedPrecondition,
                    "checkpoint of a created container",
                ),
                (
                    code(client.remove_checkpoint(rm).await),
                    Code::NotFound,
                    "rm of a missing checkpoint",
                ),
                (
                    code(client.list_checkpoints(ls).await),
                    Code::InvalidArgument,
                    "ls of ../x",
                ),
            ];
            for (got, want, what) in cases {
                ensure!(got == want, "{what}: {got:?}, expected {want:?}");
            }
            Ok(())
        })?;

    let after = snapshot(hd)?;
    ensure!(before == after, "before:\n{before:?}\nafter:\n{after:?}");
    for stray in ["x", "../x", "y"] {
        ensure!(
            !hd.root.join("checkpoints").join(name).join(stray).exists(),
            "{stray}"
        );
    }
    ensure!(!hd.root.join("x").exists() && !hd.root.join("checkpoints/x").exists());
    hd.run(&["rm", &created], None)?.ok()?;
    Ok(())
}

fn scenario(cd: &Fixture) -> Result<()> {
    let mut hd = Holdfastd::start(cd)?;
    let rootfs = cd.rootfs().display().to_string();
    let name = cd.id();
    let result = checkpoint_and_restore(cd, &hd, &name, &rootfs)
        .context("checkpoint and restore")
        .and_then(|()| terminal_round_trip(&hd, &name, &rootfs).context("terminal"))
        .and_then(|()| bad_input(&hd, &name, &rootfs).context("bad input"))
        .and_then(|()| {
            hd.run(&["rm", "-f", &name], None)?.ok()?;
            ensure!(
                !hd.root.join("checkpoints").join(&name).exists(),
                "rm left the container's checkpoints"
            );
            hd.terminate()
        });
    result.with_context(|| format!("holdfastd's log:\n{}", hd.log()))
}

#[test]
fn a_container_restored_by_holdfastd_continues_its_count_from_the_checkpoint() {
    each_version(|cd| {
        scenario(cd)?;
        cd.assert_clean()
    });
}

/// The stream check fails for what a restore that did not happen looks
/// like (a fresh start counts from 1), and for gaps and reorderings.
#[test]
fn the_stream_check_rejects_a_fresh_start_and_gaps() {
    let restored: Vec<u64> = (1..=30).chain(21..=40).collect();
    assert_eq!(check_one_stream(&restored, 21).ok(), Some(30));
    let fresh: Vec<u64> = (1..=30).chain(1..=20).collect();
    assert!(check_one_stream(&fresh, 1).is_err(), "a fresh start passed");
    let gap: Vec<u64> = (1..=30).chain(21..=25).chain(27..=40).collect();
    assert!(check_one_stream(&gap, 21).is_err(), "a gap passed");
    let never: Vec<u64> = (1..=30).collect();
    assert!(
        check_one_stream(&never, 21).is_err(),
        "no restored lines passed"
    );
}
