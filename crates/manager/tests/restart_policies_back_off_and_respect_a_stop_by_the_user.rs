//! Restart policies while holdfastd runs: an `on-failure:4` container that
//! keeps failing is restarted with growing delays (100 ms doubling) and
//! stays exited after its 4 retries; `always` restarts after a clean exit
//! but not after the user's `kill` (SIGKILL) or `stop`; `unless-stopped`
//! stays stopped after `stop`; `wait` answers an exit; an `--rm`
//! container is removed after its waiter got the exit code. Needs root.

mod common;

use std::time::{Duration, SystemTime};

use anyhow::{ensure, Context, Result};
use common::{
    connect_ready, policy, run, sh_spec, state, status, wait_state, Daemon, Paths, LOGGING,
};
use holdfast_api::v1::containers_client::ContainersClient;
use holdfast_api::v1::{
    ContainerSpec, ContainerStatus, KillRequest, RestartPolicyKind, StopRequest,
};
use holdfast_integration::Containerd as Fixture;
use tonic::transport::Channel;
use tonic::Code;

/// Checks that `name` is still exited half a second later: no restart.
async fn stays_exited(
    client: &mut ContainersClient<Channel>,
    name: &str,
    what: &str,
) -> Result<()> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = state(client, name).await?;
    ensure!(
        status(&s) == ContainerStatus::Exited,
        "{what}: restarted: {s:?}"
    );
    Ok(())
}

async fn scenario(cd: &Fixture, paths: &Paths) -> Result<()> {
    paths.write_config(cd, true, "")?;
    let mut daemon = Daemon::spawn(paths)?;
    let (mut client, _) = connect_ready(&paths.socket, &daemon).await?;

    // on-failure:4 that fails at once: 4 restarts with growing delays.
    let failing = cd.id();
    run(
        &mut client,
        ContainerSpec {
            restart: policy(RestartPolicyKind::OnFailure, 4),
            ..sh_spec(cd, &failing, "exit 1")
        },
    )
    .await?;
    let mut starts: Vec<(u32, SystemTime)> = Vec::new();
    let final_state = loop {
        let s = state(&mut client, &failing).await?;
        if let Some(t) = s.started_at {
            let t = SystemTime::try_from(t)?;
            if starts.last().map_or(true, |(_, last)| *last != t) {
                starts.push((s.restart_count, t));
            }
        }
        if status(&s) == ContainerStatus::Exited && s.restart_count == 4 {
            break s;
        }
        ensure!(starts.len() <= 5, "more than 4 restarts: {starts:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    ensure!(final_state.exit_code == 1, "{final_state:?}");
    let gaps: Vec<Duration> = starts
        .windows(2)
        .map(|w| w[1].1.duration_since(w[0].1).unwrap_or_default())
        .collect();
    eprintln!("starts {starts:?}\ngaps {gaps:?}");
    ensure!(gaps.len() >= 3, "too few restarts seen: {starts:?}");
    // The delays are 100, 200, 400, 800 ms; each gap adds a short run and
    // a start. The last gaps are measured whole, so they must grow.
    for (i, g) in gaps.iter().enumerate().skip(1) {
        ensure!(*g > gaps[i - 1], "gap {i} did not grow: {gaps:?}");
    }
    let last = gaps.last().copied().unwrap_or_default();
    ensure!(last >= Duration::from_millis(800), "last gap {last:?}");
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let s = state(&mut client, &failing).await?;
    ensure!(
        status(&s) == ContainerStatus::Exited && s.restart_count == 4,
        "retried past its limit: {s:?}"
    );

    // always: a clean exit restarts it; the user's SIGKILL does not.
    let always = cd.id();
    let first = run(
        &mut client,
        ContainerSpec {
            restart: policy(RestartPolicyKind::Always, 0),
            ..sh_spec(cd, &always, &Fixture::trigger_script(&always, 0))
        },
    )
    .await?
    .state
    .unwrap_or_default();
    let waited = common::spawn_wait(&client, &always);
    tokio::time::sleep(Duration::from_millis(200)).await;
    cd.fire(&always)?;
    let code = waited.await??;
    ensure!(code == 0, "wait answered {code}");
    std::fs::remove_file(cd.rootfs().join("tmp").join(&always))?;
    let s = wait_state(&mut client, &always, Duration::from_secs(10), |s| {
        status(s) == ContainerStatus::Running && s.restart_count == 1
    })
    .await?;
    ensure!(s.pid != first.pid, "{s:?}");
    client
        .kill(KillRequest {
            name: always.clone(),
            signal: "SIGKILL".into(),
            all: false,
        })
        .await?;
    let s = wait_state(&mut client, &always, Duration::from_secs(10), |s| {
        status(s) == ContainerStatus::Exited
    })
    .await?;
    ensure!(s.exit_code == 137 && s.stopped_by_user, "{s:?}");
    stays_exited(&mut client, &always, "always, after the user's SIGKILL").await?;

    // unless-stopped: stop by the user, stays stopped.
    let unless = cd.id();
    run(
        &mut client,
        ContainerSpec {
            restart: policy(RestartPolicyKind::UnlessStopped, 0),
            ..sh_spec(cd, &unless, LOGGING)
        },
    )
    .await?;
    let s = client
        .stop(StopRequest {
            name: unless.clone(),
            timeout_seconds: Some(5),
        })
        .await?
        .into_inner()
        .container
        .and_then(|c| c.state)
        .context("no state")?;
    ensure!(s.exit_code == 3 && s.stopped_by_user, "{s:?}");
    stays_exited(
        &mut client,
        &unless,
        "unless-stopped, after the user's stop",
    )
    .await?;

    // --rm: the waiter gets the exit code, then it is gone.
    let rm = cd.id();
    run(
        &mut client,
        ContainerSpec {
            auto_remove: true,
            ..sh_spec(cd, &rm, &Fixture::trigger_script(&rm, 9))
        },
    )
    .await?;
    let waited = common::spawn_wait(&client, &rm);
    tokio::time::sleep(Duration::from_millis(200)).await;
    cd.fire(&rm)?;
    let code = waited.await??;
    ensure!(code == 9, "wait answered {code}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match client
            .inspect(holdfast_api::v1::InspectRequest { name: rm.clone() })
            .await
        {
            Err(e) if e.code() == Code::NotFound => break,
            other => ensure!(
                std::time::Instant::now() < deadline,
                "--rm container left: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(cd.task(&rm)?.is_none(), "--rm task left");

    drop(client);
    daemon.terminate()?;
    Ok(())
}

#[test]
fn restart_policies_back_off_and_respect_a_stop_by_the_user() {
    common::each_version_with_holdfastd(|cd, paths| Box::pin(scenario(cd, paths)));
}
