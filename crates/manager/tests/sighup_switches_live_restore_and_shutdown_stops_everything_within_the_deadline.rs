//! SIGHUP reloads holdfastd's config: live restore switched on without a
//! restart leaves every container running at SIGTERM; switched off, SIGTERM
//! stops them all in parallel, each with its own signal and timeout,
//! within the deadline (largest stop timeout + 5 s), and a stop at
//! shutdown is not a stop by the user: `unless-stopped` comes back when
//! holdfastd starts again. Needs root.

mod common;

use std::time::Duration;

use anyhow::{ensure, Result};
use common::{connect_ready, policy, run, sh_spec, state, status, Daemon, Paths, LOGGING};
use holdfast_api::v1::{ContainerSpec, ContainerStatus, RestartPolicyKind};
use holdfast_integration::{procs, Containerd as Fixture};
use nix::sys::signal::Signal;

/// Ignores SIGTERM: stopped by SIGKILL after its timeout.
const DEAF: &str = "trap '' TERM; while true; do echo tick; sleep 0.1; done";

async fn scenario(cd: &Fixture, paths: &Paths) -> Result<()> {
    paths.write_config(cd, false, "")?;
    let mut daemon = Daemon::spawn(paths)?;
    let (mut client, _) = connect_ready(&paths.socket, &daemon).await?;
    let (polite, deaf, unless) = (cd.id(), cd.id(), cd.id());
    let mut pids = Vec::new();
    for spec in [
        ContainerSpec {
            stop_timeout_seconds: 1,
            ..sh_spec(cd, &polite, LOGGING)
        },
        ContainerSpec {
            stop_timeout_seconds: 2,
            ..sh_spec(cd, &deaf, DEAF)
        },
        ContainerSpec {
            stop_timeout_seconds: 1,
            restart: policy(RestartPolicyKind::UnlessStopped, 0),
            ..sh_spec(cd, &unless, LOGGING)
        },
    ] {
        pids.push(run(&mut client, spec).await?.state.map_or(0, |s| s.pid));
    }

    // Live restore switched on by SIGHUP: SIGTERM leaves them running.
    paths.write_config(cd, true, "")?;
    daemon.signal(Signal::SIGHUP)?;
    daemon.wait_log("SIGHUP: config reloaded", 1, Duration::from_secs(10))?;
    let line = daemon
        .log()
        .lines()
        .rev()
        .find(|l| l.contains("SIGHUP: config reloaded"))
        .unwrap_or_default()
        .to_owned();
    ensure!(
        line.contains("live_restore") && line.contains("live_restore=true"),
        "{line}"
    );
    drop(client);
    daemon.terminate()?;
    for pid in &pids {
        ensure!(procs::alive(*pid), "pid {pid} stopped with live restore on");
    }

    // Again, adopted; live restore switched off by SIGHUP.
    let mut daemon = Daemon::spawn(paths)?;
    let (client, _) = connect_ready(&paths.socket, &daemon).await?;
    paths.write_config(cd, false, "")?;
    daemon.signal(Signal::SIGHUP)?;
    daemon.wait_log("SIGHUP: config reloaded", 2, Duration::from_secs(10))?;
    drop(client);
    daemon.signal(Signal::SIGTERM)?;
    // Deadline: the largest stop timeout (2 s) + 5 s.
    let took = daemon.wait_exit(Duration::from_secs(7))?;
    eprintln!("shutdown took {took:?}");
    ensure!(
        took >= Duration::from_secs(2),
        "the deaf one was not given its 2 s: {took:?}"
    );
    for pid in &pids {
        ensure!(
            procs::wait_gone(*pid, Duration::from_secs(2)),
            "pid {pid} survived the shutdown"
        );
    }
    ensure!(cd.tasks()?.is_empty(), "tasks left: {:?}", cd.tasks()?);
    ensure!(
        daemon.log().contains("deadline_ms=7000"),
        "deadline not logged"
    );

    // holdfastd starts again: the stopped ones show their exits;
    // unless-stopped was not stopped by the user, so it runs again.
    let daemon = Daemon::spawn(paths)?;
    let (mut client, _) = connect_ready(&paths.socket, &daemon).await?;
    let s = state(&mut client, &polite).await?;
    ensure!(
        status(&s) == ContainerStatus::Exited && s.exit_code == 3 && !s.stopped_by_user,
        "{s:?}"
    );
    let s = state(&mut client, &deaf).await?;
    ensure!(
        status(&s) == ContainerStatus::Exited && s.exit_code == 137,
        "{s:?}"
    );
    let s = state(&mut client, &unless).await?;
    ensure!(
        status(&s) == ContainerStatus::Running && procs::alive(s.pid),
        "{s:?}"
    );

    // A config that does not parse is refused; the running one stays.
    std::fs::write(&paths.config, "live_restore = maybe\n")?;
    daemon.signal(Signal::SIGHUP)?;
    daemon.wait_log("keeping the running one", 1, Duration::from_secs(10))?;
    drop(client);
    let mut daemon = daemon;
    // Still live restore off (the last good config): unless-stopped stops.
    daemon.terminate()?;
    ensure!(cd.tasks()?.is_empty(), "tasks left: {:?}", cd.tasks()?);
    Ok(())
}

#[test]
fn sighup_switches_live_restore_and_shutdown_stops_everything_within_the_deadline() {
    common::each_version_with_holdfastd(|cd, paths| Box::pin(scenario(cd, paths)));
}
