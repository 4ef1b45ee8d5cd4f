//! Through holdfastd's containerd layer, against a private containerd
//! (1.6 and/or 1.7, see `HOLDFAST_CONTAINERD`): a busybox-rootfs container
//! runs on holdfast's shim, its output lands in the journal folder the
//! manager chose, kill/wait/delete report its exit status, and nothing is
//! left behind. Needs root.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures::StreamExt;
use holdfast_api::v1::ContainerSpec;
use holdfast_integration::{each_version, Containerd as Fixture};
use holdfast_journal::JournalOptions;
use holdfast_manager::containerd::options::shim_options;
use holdfast_manager::containerd::{
    managed_filter, Containerd, ExecProcess, RootSource, TaskEvent, TaskStatus,
};
use holdfast_manager::spec::{self, SpecOptions, STOP_SIGNAL_LABEL};

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

async fn scenario(cd: &Fixture) -> Result<()> {
    let client = Containerd::connect(cd.address(), cd.namespace(), Duration::from_secs(10)).await?;
    let id = cd.id();
    let journal_root = cd.dir().join("journals");
    let options = shim_options(&JournalOptions::default(), &journal_root);
    let declared = ContainerSpec {
        name: id.clone(),
        rootfs: cd.rootfs().display().to_string(),
        command: vec![
            "/bin/sh".into(),
            "-c".into(),
            "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.05; done".into(),
        ],
        stop_signal: "SIGINT".into(),
        ..Default::default()
    };
    let opts = SpecOptions {
        namespace: cd.namespace().to_string(),
        cgroup_parent: Some(cd.cgroup_parent().to_string()),
    };
    let oci = spec::build(&declared, None, &opts)?;
    let labels: HashMap<String, String> = spec::container_labels(&declared, None);

    // Bad roots fail cleanly and leave nothing.
    let missing = client
        .create(
            &id,
            &oci,
            &RootSource::Folder("/nonexistent/rootfs".into()),
            labels.clone(),
            &options,
        )
        .await;
    ensure!(
        matches!(missing, Err(ref e) if e.is_not_found()),
        "missing rootfs: {missing:?}"
    );
    let missing = client
        .create(
            &id,
            &oci,
            &RootSource::Image("docker.io/library/none:latest".into()),
            labels.clone(),
            &options,
        )
        .await;
    ensure!(
        matches!(missing, Err(ref e) if e.is_not_found()),
        "missing image: {missing:?}"
    );
    ensure!(
        client.list_containers(&[]).await?.is_empty(),
        "a failed create left a container"
    );

    let mut events = client.events();
    // Give the subscription time to take effect (containerd says nothing
    // until the first event).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let created = client
        .create(
            &id,
            &oci,
            &RootSource::Folder(cd.rootfs().to_path_buf()),
            labels,
            &options,
        )
        .await?;
    ensure!(created.journal_dir == journal_root.join(cd.namespace()).join(&id));
    // containerd keeps the options with the container.
    let kept = client.shim_options(&id).await?;
    ensure!(kept.as_ref() == Some(&options), "{kept:?}");
    let pid = client.start(&id).await?;
    ensure!(
        pid == created.pid && pid > 0,
        "start pid {pid} vs created {}",
        created.pid
    );

    let tasks = client.list_tasks().await?;
    let task = tasks
        .iter()
        .find(|t| t.id == id)
        .context("task not listed")?;
    ensure!(
        task.status == TaskStatus::Running && task.pid == pid,
        "{task:?}"
    );
    cd.check_shim_binary(&id)?;

    let containers = client.list_containers(&[managed_filter()]).await?;
    ensure!(
        containers.len() == 1 && containers[0].id == id,
        "{containers:?}"
    );
    ensure!(containers[0].runtime == "io.rust.shim.v2");
    ensure!(
        containers[0]
            .labels
            .get(STOP_SIGNAL_LABEL)
            .map(String::as_str)
            == Some("SIGINT")
    );

    // Its output reaches the journal folder we chose, in order.
    let deadline = Instant::now() + Duration::from_secs(15);
    let lines = loop {
        let lines = common::journal_lines(&created.journal_dir)?;
        if lines.len() >= 5 {
            break lines;
        }
        if Instant::now() > deadline {
            bail!(
                "journal {} has {lines:?} after 15 s",
                created.journal_dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (i, l) in lines.iter().enumerate() {
        ensure!(*l == format!("line {}", i + 1), "line {i}: {l:?}");
    }

    // An exec with FIFOs in a folder we own.
    let fifo_dir = cd.dir().join("exec");
    let exec = client
        .exec(
            &id,
            "e1",
            &ExecProcess {
                args: vec!["/bin/echo".into(), "hello from exec".into()],
                ..Default::default()
            },
            &fifo_dir,
        )
        .await?;
    let status = exec.wait().await?;
    ensure!(status.code == 0, "exec exit {status:?}");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    {
        let mut f = &exec.stdout.1;
        while !String::from_utf8_lossy(&out).contains("hello from exec") {
            let mut buf = [0u8; 4096];
            match f.read(&mut buf) {
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
            if Instant::now() > deadline {
                bail!("exec stdout: {:?}", String::from_utf8_lossy(&out));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let exec_dir = exec.dir.clone();
    exec.delete().await?;
    ensure!(
        !exec_dir.exists(),
        "exec FIFOs left in {}",
        exec_dir.display()
    );

    client.kill(&id, 9, false).await?;
    let waited = client.wait(&id).await?;
    ensure!(
        waited.code == 137 && waited.exited_at.is_some(),
        "wait: {waited:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(deadline.into(), events.next())
            .await
            .context("no exit event within 10 s")?
            .context("event stream ended")??;
        if let TaskEvent::Exit {
            id: ref eid,
            ref exec_id,
            exit_status,
            ..
        } = ev
        {
            if *eid == id && *exec_id == id {
                ensure!(exit_status == 137, "{ev:?}");
                break;
            }
        }
    }
    let deleted = client.delete_task(&id).await?;
    ensure!(deleted.code == 137, "delete: {deleted:?}");
    client.delete_container(&id).await?;
    ensure!(client.list_tasks().await?.is_empty());
    ensure!(client.list_containers(&[]).await?.is_empty());

    // keep_after_delete: the journal is ours to read and remove.
    ensure!(created.journal_dir.is_dir(), "the shim removed the journal");
    std::fs::remove_dir_all(&journal_root)?;
    Ok(())
}

#[test]
fn a_container_created_through_containerd_runs_on_our_shim_and_journals_its_output() {
    each_version(|cd| {
        runtime()?.block_on(scenario(cd))?;
        cd.assert_clean()
    });
}
