//! Issue 5, scheduled checkpoints: through the built `holdfast` CLI and
//! `holdfastd`, a private containerd (1.6 and/or 1.7, see
//! `HOLDFAST_CONTAINERD`), our shim, runc and CRIU.
//!
//! A counting container runs with `--checkpoint-every 1s
//! --checkpoint-keep 2` next to a checkpoint made by hand. After several
//! ticks exactly the 2 newest scheduled checkpoints remain (records and
//! folders), the hand-made one too; `inspect` shows the schedule and its
//! last checkpoint. `kill -9` of holdfastd and a new start: the schedule
//! goes on from the database (new names) and still keeps exactly 2;
//! restoring the newest continues the count. `update` changes the restart
//! policy (a signal death is then restarted) and switches the schedule off
//! and on; `stop` and holdfastd's shutdown cancel it (no checkpoint while
//! stopped, none left half-made), `start` arms it again. Bad values
//! (`--checkpoint-every 500ms`, `soon`, `10`, `--checkpoint-keep 0`) get
//! INVALID_ARGUMENT naming the flag and change nothing. Needs root.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use common::cli::{entries, Holdfastd};
use common::count::{counts, inspect, wait_counts, wait_status, COUNTER, WAIT};
use holdfast_api::v1::{CheckpointSchedule, UpdateRequest};
use holdfast_integration::{each_version, Containerd as Fixture};
use serde_json::Value;
use tonic::Code;

const KEEP: usize = 2;
const HAND: &str = "by-hand";

/// `checkpoint ls --json NAME`: (name, scheduled) pairs, oldest first.
fn listed(hd: &Holdfastd, name: &str) -> Result<Vec<(String, bool)>> {
    let out = hd.run(&["checkpoint", "ls", "--json", name], None)?.ok()?;
    let json: Value = serde_json::from_str(&out)?;
    json.as_array()
        .context("not an array")?
        .iter()
        .map(|c| {
            Ok((
                c["name"].as_str().context("no name")?.to_owned(),
                c["scheduled"].as_bool().context("no scheduled")?,
            ))
        })
        .collect()
}

/// The scheduled checkpoints listed, oldest first.
fn scheduled(hd: &Holdfastd, name: &str) -> Result<Vec<String>> {
    Ok(listed(hd, name)?
        .into_iter()
        .filter(|(_, s)| *s)
        .map(|(n, _)| n)
        .collect())
}

/// Waits until `n` scheduled checkpoints not in `seen` have been listed,
/// adding them to `seen`. While the schedule runs, at most one more than
/// KEEP is ever listed (between a tick's dump and its pruning).
fn wait_new(hd: &Holdfastd, name: &str, seen: &mut BTreeSet<String>, n: usize) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    let mut new = 0;
    loop {
        let now = scheduled(hd, name)?;
        ensure!(now.len() <= KEEP + 1, "{} scheduled: {now:?}", now.len());
        for cp in now {
            if seen.insert(cp) {
                new += 1;
            }
        }
        if new >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{new} new scheduled checkpoints in {WAIT:?}, not {n}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// With the schedule off: exactly KEEP scheduled checkpoints, the newest
/// ones made (none newer was seen, then pruned), plus the hand-made one;
/// their folders and nothing else under the container's checkpoints.
fn check_kept(hd: &Holdfastd, name: &str, seen: &mut BTreeSet<String>) -> Result<()> {
    let list = listed(hd, name)?;
    seen.extend(list.iter().filter(|(_, s)| *s).map(|(n, _)| n.clone()));
    let sched: Vec<&String> = list.iter().filter(|(_, s)| *s).map(|(n, _)| n).collect();
    let newest: Vec<&String> = seen.iter().rev().take(KEEP).rev().collect();
    ensure!(
        sched == newest,
        "scheduled checkpoints {sched:?}, not the {KEEP} newest {newest:?} (all: {list:?})"
    );
    ensure!(
        list.iter().any(|(n, s)| n == HAND && !s),
        "the hand-made checkpoint is gone: {list:?}"
    );
    ensure!(list.len() == KEEP + 1, "{list:?}");
    let mut folders = entries(&hd.root.join("checkpoints").join(name));
    folders.sort();
    let mut names: Vec<String> = list.into_iter().map(|(n, _)| n).collect();
    names.sort();
    ensure!(folders == names, "folders {folders:?}, records {names:?}");
    let work = entries(&hd.root.join("checkpoint-work").join(name));
    ensure!(work.is_empty(), "work folders left: {work:?}");
    Ok(())
}

/// Turns the schedule off (waiting for a tick in flight), then checks it
/// stays off.
fn schedule_off(hd: &Holdfastd, name: &str) -> Result<()> {
    hd.run(&["update", "--no-checkpoint-schedule", name], None)?
        .ok()?;
    let before = listed(hd, name)?;
    std::thread::sleep(Duration::from_millis(1500));
    ensure!(
        listed(hd, name)? == before,
        "checkpoints were made with the schedule off"
    );
    let json = inspect(hd, name)?;
    ensure!(json["spec"]["checkpoint_schedule"].is_null(), "{json:#}");
    Ok(())
}

fn schedule_on(hd: &Holdfastd, name: &str) -> Result<()> {
    hd.run(
        &[
            "update",
            "--checkpoint-every",
            "1s",
            "--checkpoint-keep",
            "2",
            name,
        ],
        None,
    )?
    .ok()?;
    Ok(())
}

/// Ticks, then `inspect` shows the schedule and what it last did.
fn ticks_and_inspect(hd: &Holdfastd, name: &str, seen: &mut BTreeSet<String>) -> Result<()> {
    wait_new(hd, name, seen, 4)?;
    let json = inspect(hd, name)?;
    ensure!(
        json["spec"]["checkpoint_schedule"] == serde_json::json!({ "every": "1s", "keep": 2 }),
        "{json:#}"
    );
    let state = &json["state"]["checkpoint_schedule"];
    let last = state["last_checkpoint"].as_str().context("no last")?;
    ensure!(seen.contains(last), "last checkpoint {last:?} unknown");
    ensure!(
        state["last_error"] == "" && state["failures"] == 0,
        "{state:#}"
    );
    ensure!(state["last_checkpoint_at"].is_string(), "{state:#}");
    ensure!(state["next_tick_at"].is_string(), "{state:#}");
    Ok(())
}

/// kill -9 of holdfastd and a new start: the schedule goes on from the
/// database.
fn across_a_restart(hd: &mut Holdfastd, name: &str, seen: &mut BTreeSet<String>) -> Result<()> {
    schedule_on(hd, name)?;
    wait_new(hd, name, seen, 1)?;
    hd.kill9_and_start_again()?;
    let log = hd.log();
    let phase3 = log
        .lines()
        .rfind(|l| l.contains("start-up phase 3 done"))
        .context("no phase 3")?;
    ensure!(phase3.contains("schedules_resumed=1"), "{phase3}");
    wait_new(hd, name, seen, 2)?;
    schedule_off(hd, name)?;
    check_kept(hd, name, seen)
}

/// Kill, restore the newest scheduled checkpoint: the count goes on.
fn restore_newest(hd: &Holdfastd, name: &str, seen: &BTreeSet<String>) -> Result<()> {
    let newest = seen.iter().next_back().context("no checkpoint")?;
    hd.run(&["kill", name], None)?.ok()?;
    wait_status(hd, name, "exited")?;
    let before = counts(hd, name)?;
    let last = *before.last().context("no counts")?;
    hd.run(&["restore", name, newest], None)?.ok()?;
    wait_status(hd, name, "running")?;
    let after = wait_counts(hd, name, before.len() + 5)?;
    ensure!(after[..before.len()] == before[..], "the lines changed");
    let restored = &after[before.len()..];
    ensure!(
        restored[0] > 1 && restored[0] <= last + 1,
        "the restored run starts at {}; the first run ended at {last}",
        restored[0]
    );
    for w in restored.windows(2) {
        ensure!(w[1] == w[0] + 1, "restored run: {} then {}", w[0], w[1]);
    }
    Ok(())
}

/// What bad input must not change: the container's spec, its
/// checkpoints, the containers' names.
type Snapshot = (Value, Vec<(String, bool)>, Vec<String>);

/// Bad schedules and updates: INVALID_ARGUMENT naming the flag, nothing
/// changed.
fn bad_input(hd: &Holdfastd, name: &str, rootfs: &str) -> Result<()> {
    let snapshot = |hd: &Holdfastd| -> Result<Snapshot> {
        let names = hd.run(&["ps", "-a", "--json"], None)?.ok()?;
        let names: Value = serde_json::from_str(&names)?;
        let names = names
            .as_array()
            .context("ps")?
            .iter()
            .map(|c| c["name"].to_string())
            .collect();
        Ok((inspect(hd, name)?["spec"].take(), listed(hd, name)?, names))
    };
    let before = snapshot(hd)?;
    let update = |every: &str, keep: &str| {
        hd.run(
            &[
                "update",
                "--checkpoint-every",
                every,
                "--checkpoint-keep",
                keep,
                name,
            ],
            None,
        )
    };
    update("500ms", "2")?.expect_error(
        125,
        "invalid argument: checkpoint_schedule.every (--checkpoint-every) \"500ms\": must be at least 1s",
    )?;
    update("soon", "2")?.expect_error(125, "(--checkpoint-every) \"soon\": is not a duration")?;
    update("1m", "0")?.expect_error(
        125,
        "invalid argument: checkpoint_schedule.keep (--checkpoint-keep) 0: must be at least 1",
    )?;
    hd.run(&["update", "--restart", "always", "nosuch"], None)?
        .expect_error(125, "no such container: nosuch")?;
    let other = format!("{name}-bad");
    hd.run(
        &[
            "run",
            "-d",
            "--name",
            &other,
            "--rootfs",
            rootfs,
            "--checkpoint-every",
            "10",
            "--checkpoint-keep",
            "1",
            "--",
            "/bin/true",
        ],
        None,
    )?
    .expect_error(125, "(--checkpoint-every) \"10\": is not a duration")?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let mut client = hd.client().await?;
            let cases = [
                (
                    UpdateRequest {
                        name: name.into(),
                        ..Default::default()
                    },
                    "nothing to change",
                ),
                (
                    UpdateRequest {
                        name: name.into(),
                        checkpoint_schedule: Some(CheckpointSchedule {
                            every: "1s".into(),
                            keep: 1,
                        }),
                        clear_checkpoint_schedule: true,
                        ..Default::default()
                    },
                    "set and cleared",
                ),
                (
                    UpdateRequest {
                        name: name.into(),
                        checkpoint_schedule: Some(CheckpointSchedule {
                            every: "999ms".into(),
                            keep: 1,
                        }),
                        ..Default::default()
                    },
                    "--checkpoint-every",
                ),
            ];
            for (request, words) in cases {
                match client.update(request).await {
                    Err(s) if s.code() == Code::InvalidArgument && s.message().contains(words) => {}
                    other => bail!("expected INVALID_ARGUMENT with {words:?}: {other:?}"),
                }
            }
            Ok(())
        })?;
    let after = snapshot(hd)?;
    ensure!(before == after, "before:\n{before:?}\nafter:\n{after:?}");
    Ok(())
}

/// `update --restart always`: an exit is then restarted.
fn restart_policy(hd: &Holdfastd, name: &str, rootfs: &str) -> Result<()> {
    let name = &format!("{name}-policy");
    let script = "trap 'exit 3' USR1; while true; do sleep 0.1; done";
    run_sh(hd, name, rootfs, &[], script)?;
    hd.run(&["update", "--restart", "always", name], None)?
        .ok()?;
    let json = inspect(hd, name)?;
    ensure!(json["spec"]["restart"]["name"] == "always", "{json:#}");
    // SIGUSR1 is neither SIGKILL nor the stop signal: not a user's stop.
    hd.run(&["kill", "-s", "USR1", name], None)?.ok()?;
    let deadline = Instant::now() + WAIT;
    loop {
        let json = inspect(hd, name)?;
        if json["state"]["status"] == "running" && json["state"]["restart_count"] == 1 {
            hd.run(&["rm", "-f", name], None)?.ok()?;
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not restarted by its new policy: {json:#}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `stop` cancels the schedule, `start` arms it again.
fn stop_and_start(hd: &Holdfastd, name: &str, seen: &mut BTreeSet<String>) -> Result<()> {
    schedule_on(hd, name)?;
    wait_new(hd, name, seen, 1)?;
    hd.run(&["stop", "-t", "1", name], None)?.ok()?;
    let stopped = listed(hd, name)?;
    std::thread::sleep(Duration::from_millis(2500));
    ensure!(
        listed(hd, name)? == stopped,
        "checkpoints were made while the container was stopped"
    );
    ensure!(inspect(hd, name)?["state"]["checkpoint_schedule"]["next_tick_at"].is_null());
    hd.run(&["start", name], None)?.ok()?;
    wait_new(hd, name, seen, 1)
}

/// SIGTERM with the schedule armed: holdfastd exits cleanly, no
/// checkpoint is left half-made; started again, the schedule resumes.
fn shutdown(hd: &mut Holdfastd, name: &str, seen: &mut BTreeSet<String>) -> Result<()> {
    hd.terminate()?;
    ensure!(
        hd.log().contains("checkpoint schedules stopped"),
        "shutdown did not stop the schedules"
    );
    hd.kill9_and_start_again()?;
    wait_new(hd, name, seen, 1)?;
    schedule_off(hd, name)?;
    check_kept(hd, name, seen)
}

/// `holdfast run -d --name NAME --rootfs ROOTFS FLAGS -- /bin/sh -c
/// SCRIPT`.
fn run_sh(hd: &Holdfastd, name: &str, rootfs: &str, flags: &[&str], script: &str) -> Result<()> {
    let mut args = vec!["run", "-d", "--name", name, "--rootfs", rootfs];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--", "/bin/sh", "-c", script]);
    hd.run(&args, None)?.ok()?;
    Ok(())
}

fn scenario(hd: &mut Holdfastd, name: &str, rootfs: &str) -> Result<()> {
    let schedule = ["--checkpoint-every", "1s", "--checkpoint-keep", "2"];
    run_sh(hd, name, rootfs, &schedule, COUNTER)?;
    wait_counts(hd, name, 3)?;
    hd.run(
        &["checkpoint", "create", "--leave-running", name, HAND],
        None,
    )?
    .ok()?;
    let mut seen = BTreeSet::new();
    ticks_and_inspect(hd, name, &mut seen).context("ticks")?;
    schedule_off(hd, name)?;
    check_kept(hd, name, &mut seen).context("kept before the restart")?;
    across_a_restart(hd, name, &mut seen).context("across a restart")?;
    restore_newest(hd, name, &seen).context("restore the newest")?;
    bad_input(hd, name, rootfs).context("bad input")?;
    restart_policy(hd, name, rootfs).context("restart policy")?;
    stop_and_start(hd, name, &mut seen).context("stop and start")?;
    shutdown(hd, name, &mut seen).context("shutdown")?;
    hd.run(&["rm", "-f", name], None)?.ok()?;
    ensure!(
        !hd.root.join("checkpoints").join(name).exists(),
        "rm left the container's checkpoints"
    );
    hd.terminate()
}

#[test]
fn scheduled_checkpoints_keep_exactly_n_across_a_holdfastd_restart_and_the_newest_restores() {
    each_version(|cd: &Fixture| {
        let mut hd = Holdfastd::start(cd)?;
        let rootfs = cd.rootfs().display().to_string();
        let name = cd.id();
        scenario(&mut hd, &name, &rootfs)
            .with_context(|| format!("holdfastd's log:\n{}", hd.log()))?;
        cd.assert_clean()
    });
}
