//! The built `holdfastd`, against a private containerd (1.6 and/or 1.7, see
//! `HOLDFAST_CONTAINERD`), driven through its unix socket with the
//! generated client: bad input gets the right code and creates nothing; a
//! busybox-rootfs container is created, started, listed as running with a
//! pid, journals its output, is stopped with its stop signal and removed;
//! holdfastd exits on SIGTERM and removes its socket; nothing is left
//! behind. Needs root.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::{connect, journal_lines, with_log, Daemon, Paths};
use holdfast_api::v1::containers_client::ContainersClient;
use holdfast_api::v1::{
    ContainerSpec, ContainerStatus, CreateRequest, InspectRequest, ListRequest, RemoveRequest,
    RestartPolicy, RestartPolicyKind, StartRequest, StopRequest,
};
use holdfast_integration::{each_version, Containerd as Fixture};
use holdfast_manager::containerd::Containerd;
use tonic::transport::Channel;
use tonic::Code;

/// Nothing exists for holdfastd: no record, no containerd container, no
/// journal folder.
async fn assert_nothing(
    client: &mut ContainersClient<Channel>,
    containerd: &Containerd,
    journals: &Path,
    after: &str,
) -> Result<()> {
    let listed = client
        .list(ListRequest { all: true })
        .await?
        .into_inner()
        .containers;
    ensure!(listed.is_empty(), "{after}: records {listed:?}");
    let containers = containerd.list_containers(&[]).await?;
    ensure!(
        containers.is_empty(),
        "{after}: containerd containers {containers:?}"
    );
    let folders: Vec<_> = match std::fs::read_dir(journals) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    };
    ensure!(folders.is_empty(), "{after}: journals {folders:?}");
    Ok(())
}

async fn scenario(cd: &Fixture) -> Result<()> {
    let paths = Paths::new(cd);
    paths.write_config(cd, true, "")?;
    let mut daemon = Daemon::spawn(&paths)?;
    let result = steps(cd, &mut daemon, &paths.socket, &paths.logs).await;
    with_log(result, &paths)
}

async fn steps(cd: &Fixture, daemon: &mut Daemon, socket: &Path, logs: &Path) -> Result<()> {
    let mut client = connect(socket, daemon).await?;
    let containerd =
        Containerd::connect(cd.address(), cd.namespace(), Duration::from_secs(10)).await?;
    let journals = logs.join(cd.namespace());
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(socket)?.permissions());
    ensure!(mode & 0o777 == 0o660, "socket mode {mode:o}");

    let name = cd.id();
    let good = ContainerSpec {
        name: name.clone(),
        rootfs: cd.rootfs().display().to_string(),
        command: vec![
            "/bin/sh".into(),
            "-c".into(),
            "trap 'echo bye; exit 3' TERM; i=0; while true; do i=$((i+1)); echo line $i; sleep 0.05; done"
                .into(),
        ],
        ..Default::default()
    };

    // Bad input: the right code, and nothing made.
    let bad: Vec<(&str, ContainerSpec, Code)> = vec![
        (
            "a name with /",
            ContainerSpec {
                name: "a/b".into(),
                ..good.clone()
            },
            Code::InvalidArgument,
        ),
        (
            "a 300-character name",
            ContainerSpec {
                name: "a".repeat(300),
                ..good.clone()
            },
            Code::InvalidArgument,
        ),
        (
            "a rootfs without a command",
            ContainerSpec {
                command: vec![],
                ..good.clone()
            },
            Code::InvalidArgument,
        ),
        (
            "a missing rootfs",
            ContainerSpec {
                rootfs: "/nonexistent/holdfast-rootfs".into(),
                ..good.clone()
            },
            Code::NotFound,
        ),
        (
            "auto_remove with restart always",
            ContainerSpec {
                auto_remove: true,
                restart: Some(RestartPolicy {
                    kind: RestartPolicyKind::Always as i32,
                    max_retries: 0,
                }),
                ..good.clone()
            },
            Code::InvalidArgument,
        ),
    ];
    for (what, spec, code) in bad {
        let got = client
            .create(CreateRequest { spec: Some(spec) })
            .await
            .err()
            .with_context(|| format!("{what} was accepted"))?;
        ensure!(got.code() == code, "{what}: {got:?}");
        ensure!(!got.message().is_empty(), "{what}: no message");
        assert_nothing(&mut client, &containerd, &journals, what).await?;
    }

    // Create and start.
    let created = client
        .create(CreateRequest {
            spec: Some(good.clone()),
        })
        .await?
        .into_inner()
        .container
        .context("no container")?;
    ensure!(
        created.state.as_ref().map(|s| s.status) == Some(ContainerStatus::Created as i32),
        "{created:?}"
    );
    let log_dir = PathBuf::from(&created.log_dir);
    ensure!(
        log_dir == journals.join(&name),
        "log_dir {}",
        log_dir.display()
    );
    let started = client
        .start(StartRequest { name: name.clone() })
        .await?
        .into_inner()
        .container
        .context("no container")?;
    let pid = started.state.as_ref().map_or(0, |s| s.pid);
    ensure!(pid > 0, "{started:?}");

    let running = client
        .list(ListRequest { all: false })
        .await?
        .into_inner()
        .containers;
    ensure!(running.len() == 1, "{running:?}");
    let state = running[0].state.clone().unwrap_or_default();
    ensure!(
        state.status == ContainerStatus::Running as i32 && state.pid == pid,
        "{state:?}"
    );

    // A taken name: refused, and the running one is untouched.
    let dup = client
        .create(CreateRequest {
            spec: Some(good.clone()),
        })
        .await
        .err()
        .context("a duplicate name was accepted")?;
    ensure!(dup.code() == Code::AlreadyExists, "{dup:?}");
    ensure!(containerd.list_containers(&[]).await?.len() == 1);

    // Its output reaches the journal, in order.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let lines = journal_lines(&log_dir)?;
        if lines.len() >= 5 {
            for (i, l) in lines.iter().enumerate() {
                ensure!(*l == format!("line {}", i + 1), "line {i}: {l:?}");
            }
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "journal has {lines:?} after 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A running container is not removed without force.
    let busy = client
        .remove(RemoveRequest {
            name: name.clone(),
            force: false,
        })
        .await
        .err()
        .context("removed a running container")?;
    ensure!(busy.code() == Code::FailedPrecondition, "{busy:?}");

    // Stop: SIGTERM, which the script traps to exit 3.
    let stopped = client
        .stop(StopRequest {
            name: name.clone(),
            timeout_seconds: Some(10),
        })
        .await?
        .into_inner()
        .container
        .context("no container")?;
    let state = stopped.state.clone().unwrap_or_default();
    ensure!(
        state.status == ContainerStatus::Exited as i32
            && state.exit_code == 3
            && state.stopped_by_user
            && state.pid == 0
            && state.finished_at.is_some(),
        "{state:?}"
    );
    let inspected = client
        .inspect(InspectRequest { name: name.clone() })
        .await?
        .into_inner()
        .container
        .context("no container")?;
    ensure!(inspected.state == stopped.state, "{inspected:?}");

    // Remove: record, containerd container and journal go.
    client
        .remove(RemoveRequest {
            name: name.clone(),
            force: false,
        })
        .await?;
    assert_nothing(&mut client, &containerd, &journals, "remove").await?;
    let gone = client
        .inspect(InspectRequest { name: name.clone() })
        .await
        .err()
        .context("inspect after remove")?;
    ensure!(gone.code() == Code::NotFound, "{gone:?}");

    drop(client);
    daemon.terminate()?;
    ensure!(!socket.exists(), "holdfastd left its socket");
    Ok(())
}

#[test]
fn holdfastd_creates_starts_stops_and_removes_a_container_and_refuses_bad_input_without_leaving_anything(
) {
    each_version(|cd| {
        common::block_on(scenario(cd))?;
        cd.assert_clean()
    });
}
