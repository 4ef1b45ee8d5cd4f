//! While holdfastd is down (kill -9): a `--restart always` container exits
//! and is restarted in start-up phase 3; a `--restart no` one exits 7 and
//! shows 7 with the time it really exited; an `--rm` one exits and is
//! removed; a running one is adopted; a record corrupted on disk is
//! quarantined (listed by `ps -a`, refused by start, removable with `rm`)
//! while the others restore; a containerd container labelled as
//! holdfast's with no record is reported. The log says how long each
//! phase took. Needs root.

mod common;

use std::time::{Duration, Instant, SystemTime};

use anyhow::{ensure, Context, Result};
use common::{
    connect_ready, list_all, policy, run, sh_spec, state, status, wait_state, Daemon, Paths,
    LOGGING,
};
use holdfast_api::v1::{ContainerStatus, RemoveRequest, RestartPolicyKind, StartRequest};
use holdfast_integration::{procs, Containerd as Fixture};
use tonic::Code;

async fn scenario(cd: &Fixture, paths: &Paths) -> Result<()> {
    paths.write_config(cd, true, "")?;
    let mut daemon = Daemon::spawn(paths)?;
    let (mut client, _) = connect_ready(&paths.socket, &daemon).await?;

    let (always, no, rm, steady) = (cd.id(), cd.id(), cd.id(), cd.id());
    let always_pid = run(
        &mut client,
        holdfast_api::v1::ContainerSpec {
            restart: policy(RestartPolicyKind::Always, 0),
            ..sh_spec(cd, &always, &Fixture::trigger_script(&always, 5))
        },
    )
    .await?
    .state
    .map_or(0, |s| s.pid);
    run(
        &mut client,
        sh_spec(cd, &no, &Fixture::trigger_script(&no, 7)),
    )
    .await?;
    run(
        &mut client,
        holdfast_api::v1::ContainerSpec {
            auto_remove: true,
            ..sh_spec(cd, &rm, &Fixture::trigger_script(&rm, 0))
        },
    )
    .await?;
    let steady_pid = run(&mut client, sh_spec(cd, &steady, LOGGING))
        .await?
        .state
        .map_or(0, |s| s.pid);

    // holdfastd dies; the containers exit meanwhile.
    drop(client);
    daemon.kill9()?;
    for name in [&always, &no, &rm] {
        cd.fire(name)?;
    }
    for name in [&always, &no, &rm] {
        cd.wait_status(name, "STOPPED", Duration::from_secs(10))?;
    }
    let exited_by = SystemTime::now();
    // Restarted, `always` runs until fired again.
    std::fs::remove_file(cd.rootfs().join("tmp").join(&always))?;
    // A record that no longer decodes, and a labelled container without a
    // record.
    let broken = cd.id();
    {
        let db = redb::Database::create(paths.db())?;
        let tx = db.begin_write()?;
        tx.open_table(redb::TableDefinition::<&str, &[u8]>::new("containers"))?
            .insert(
                broken.as_str(),
                [0xff_u8, 0xff, 0xff, 0x0f, 0x01].as_slice(),
            )?;
        tx.commit()?;
    }
    let orphan = cd.id();
    cd.ctr(&[
        "c",
        "create",
        "--label",
        "io.holdfast.managed=true",
        "--rootfs",
        &cd.rootfs().display().to_string(),
        &orphan,
        "/bin/true",
    ])?
    .ok()?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let restarted_at = Instant::now();
    let mut daemon = Daemon::spawn(paths)?;
    let (mut client, took) = connect_ready(&paths.socket, &daemon).await?;
    eprintln!("ready in {took:?}");

    let s = state(&mut client, &always).await?;
    ensure!(
        status(&s) == ContainerStatus::Running
            && s.pid != always_pid
            && procs::alive(s.pid)
            && s.restart_count == 1,
        "always: {s:?}"
    );
    let s = state(&mut client, &no).await?;
    let finished = s
        .finished_at
        .map(SystemTime::try_from)
        .transpose()?
        .context("no finish time")?;
    ensure!(
        status(&s) == ContainerStatus::Exited && s.exit_code == 7 && finished <= exited_by,
        "no: {s:?} (exited before {exited_by:?})"
    );
    let gone = client
        .inspect(holdfast_api::v1::InspectRequest { name: rm.clone() })
        .await
        .err()
        .context("the --rm container is still there")?;
    ensure!(gone.code() == Code::NotFound, "{gone:?}");
    ensure!(cd.task(&rm)?.is_none(), "the --rm container's task is left");
    let s = state(&mut client, &steady).await?;
    ensure!(
        status(&s) == ContainerStatus::Running && s.pid == steady_pid,
        "steady: {s:?}"
    );

    // Quarantined: listed, refused, removable.
    let listed = list_all(&mut client).await?;
    let q = listed
        .iter()
        .find(|c| c.spec.as_ref().is_some_and(|s| s.name == broken))
        .context("the broken record is not listed")?;
    let qs = q.state.clone().unwrap_or_default();
    ensure!(
        status(&qs) == ContainerStatus::Quarantined && !qs.error.is_empty(),
        "{qs:?}"
    );
    ensure!(listed.len() == 4, "listed {}", listed.len());
    let refused = client
        .start(StartRequest {
            name: broken.clone(),
        })
        .await
        .err()
        .context("a quarantined container started")?;
    ensure!(refused.code() == Code::FailedPrecondition, "{refused:?}");
    client
        .remove(RemoveRequest {
            name: broken.clone(),
            force: false,
        })
        .await?;
    ensure!(list_all(&mut client).await?.len() == 3);

    let log = daemon.log();
    for phase in 1..=3 {
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains(&format!("start-up phase {phase} done")))
            .with_context(|| format!("no phase {phase} line"))?;
        ensure!(line.contains("elapsed_ms="), "{line}");
    }
    ensure!(
        log.contains("record quarantined") && log.contains(&orphan),
        "quarantine or orphan not reported"
    );
    eprintln!("restart to ready: {:?}", restarted_at.elapsed());

    // The restarted `always` container keeps its policy: it exits again
    // and comes back.
    cd.fire(&always)?;
    wait_state(&mut client, &always, Duration::from_secs(10), |s| {
        s.restart_count >= 2
    })
    .await?;

    drop(client);
    daemon.terminate()?;
    Ok(())
}

#[test]
fn exits_while_holdfastd_is_down_are_recorded_and_policies_apply_at_start_up() {
    common::each_version_with_holdfastd(|cd, paths| Box::pin(scenario(cd, paths)));
}
