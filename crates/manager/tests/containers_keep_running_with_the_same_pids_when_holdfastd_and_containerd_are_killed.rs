//! N logging containers (`HOLDFAST_LIFE_CONTAINERS`, default 20) keep
//! running, with the same pids, and keep logging through: `kill -9` of
//! holdfastd; `kill -9` of containerd and holdfastd together, restarted
//! containerd first; the same, restarted holdfastd first. After each
//! restart holdfastd's health says SERVING once start-up is done, its list
//! shows them running with the same pids, and its `Logs` of every container
//! has every numbered line from 1 on, each once, in order, with no gap
//! (those written while holdfastd and containerd were down included), and
//! more than the time before. Needs root.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::{
    connect_ready, every_numbered_line, list_all, logs_stdout, run, sh_spec, status, Daemon, Paths,
    LOGGING,
};
use holdfast_api::v1::containers_client::ContainersClient;
use holdfast_api::v1::ContainerStatus;
use holdfast_integration::{env_usize, procs, Containerd as Fixture};
use tonic::transport::Channel;

/// name → (pid, journal folder)
type Running = BTreeMap<String, (u32, std::path::PathBuf)>;

/// name → how many numbered lines its logs had at the last check.
type Seen = BTreeMap<String, u64>;

/// Checks every container runs with its pid, alive on the host, listed as
/// running by holdfastd, that its journal grows, and that holdfastd's logs
/// of it have every line so far (more than at the last check).
async fn check_same(
    client: &mut ContainersClient<Channel>,
    want: &Running,
    seen: &mut Seen,
    after: &str,
) -> Result<()> {
    let before: BTreeMap<&String, usize> = want
        .iter()
        .map(|(n, (_, dir))| Ok((n, common::journal_lines(dir)?.len())))
        .collect::<Result<_>>()?;
    let listed = list_all(client).await?;
    ensure!(
        listed.len() == want.len(),
        "{after}: {} listed",
        listed.len()
    );
    for c in &listed {
        let name = c.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
        let s = c.state.clone().unwrap_or_default();
        let (pid, _) = want
            .get(&name)
            .with_context(|| format!("{after}: unknown {name}"))?;
        ensure!(
            status(&s) == ContainerStatus::Running && s.pid == *pid,
            "{after}: {name} is {s:?}, want running with pid {pid}"
        );
        ensure!(procs::alive(*pid), "{after}: pid {pid} of {name} is gone");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (name, (_, dir)) in want {
        let now = common::journal_lines(dir)?.len();
        ensure!(
            now > before[name],
            "{after}: {name}'s journal stopped at {now} lines"
        );
    }
    for name in want.keys() {
        let out = logs_stdout(client, name).await?;
        let lines = every_numbered_line(&out, "line")
            .with_context(|| format!("{after}: the logs of {name}"))?;
        let last = seen.get(name).copied().unwrap_or(0);
        ensure!(
            lines > last,
            "{after}: the logs of {name} have {lines} lines, {last} before"
        );
        seen.insert(name.clone(), lines);
    }
    let fewest = seen.values().min().copied().unwrap_or(0);
    let most = seen.values().max().copied().unwrap_or(0);
    eprintln!(
        "{after}: the logs of {} containers have every line ({fewest} to {most} lines)",
        seen.len()
    );
    Ok(())
}

async fn scenario(cd: &Fixture, paths: &Paths) -> Result<()> {
    let n = env_usize("HOLDFAST_LIFE_CONTAINERS", 20);
    paths.write_config(cd, true, "")?;
    let mut daemon = Daemon::spawn(paths)?;
    let (mut client, _) = connect_ready(&paths.socket, &daemon).await?;
    let mut want = Running::new();
    for _ in 0..n {
        let c = run(&mut client, sh_spec(cd, &cd.id(), LOGGING)).await?;
        let name = c.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
        let pid = c.state.as_ref().map_or(0, |s| s.pid);
        want.insert(name, (pid, c.log_dir.clone().into()));
    }
    let mut seen = Seen::new();
    check_same(&mut client, &want, &mut seen, "started").await?;

    // kill -9 holdfastd alone.
    drop(client);
    daemon.kill9()?;
    for (name, (pid, _)) in &want {
        ensure!(procs::alive(*pid), "{name} died with holdfastd");
    }
    let mut daemon = Daemon::spawn(paths)?;
    let (mut client, took) = connect_ready(&paths.socket, &daemon).await?;
    eprintln!("holdfastd ready {took:?} after kill -9 with {n} containers");
    check_same(&mut client, &want, &mut seen, "holdfastd kill -9").await?;
    ensure!(
        daemon.log().contains("start-up phase 3 done"),
        "no phase log"
    );

    // kill -9 of both; containerd first.
    drop(client);
    cd.kill9()?;
    daemon.kill9()?;
    cd.restart()?;
    let mut daemon = Daemon::spawn(paths)?;
    let (mut client, _) = connect_ready(&paths.socket, &daemon).await?;
    check_same(
        &mut client,
        &want,
        &mut seen,
        "both kill -9, containerd first",
    )
    .await?;

    // kill -9 of both; holdfastd first (it waits for containerd).
    drop(client);
    cd.kill9()?;
    daemon.kill9()?;
    let mut daemon = Daemon::spawn(paths)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cd.restart()?;
    let (mut client, _) = connect_ready(&paths.socket, &daemon).await?;
    check_same(
        &mut client,
        &want,
        &mut seen,
        "both kill -9, holdfastd first",
    )
    .await?;

    drop(client);
    daemon.terminate()?;
    for (name, (pid, _)) in &want {
        ensure!(procs::alive(*pid), "{name} stopped with live restore on");
    }
    Ok(())
}

#[test]
fn containers_keep_running_with_the_same_pids_when_holdfastd_and_containerd_are_killed() {
    common::each_version_with_holdfastd(|cd, paths| Box::pin(scenario(cd, paths)));
}
