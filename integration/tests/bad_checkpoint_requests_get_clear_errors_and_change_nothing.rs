//! Issue #5, shim, bad input: a Checkpoint with options the shim cannot
//! honour, a Checkpoint of a task that is not running, and a Create from a
//! checkpoint folder (containerd's `checkpoint`, or holdfast's
//! `restore_from` option) that is missing, relative, has `..`, holds no
//! CRIU images, or is given both ways, each fail with
//! the right code and a message naming what was wrong, and change nothing:
//! the task keeps running with the same pid, no image folder is made, no
//! task is created.
//!
//! Where containerd's Go shim answers differently (it hands any option to
//! runc and reports runc's failure as Unknown), the expectation for it is
//! relaxed and says so; the strict one applies to `io.rust.shim.v2`.

use std::fs;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use containerd_client::tonic::Code;
use containerd_shim_protos::shim::oci::CheckpointOptions;
use holdfast_integration::api::{Api, ApiError};
use holdfast_integration::{each_version, is_go_shim, ShimClient};

const WAIT: Duration = Duration::from_secs(20);

/// Checks that a Checkpoint failed with `code` and a message naming `word`
/// (any failure for the Go shim).
fn refused(
    res: Result<Vec<containerd_client::types::Descriptor>, ApiError>,
    code: Code,
    word: &str,
) -> Result<()> {
    match res {
        Ok(d) => bail!("the Checkpoint succeeded ({d:?}); expected {code:?} naming {word:?}"),
        Err(_) if is_go_shim() => Ok(()),
        Err(e) => {
            ensure!(
                e.code == code && e.message.contains(word),
                "expected {code:?} naming {word:?}, got {e}"
            );
            Ok(())
        }
    }
}

#[test]
fn bad_checkpoint_options_and_a_stopped_task_are_refused_and_change_nothing() {
    each_version(|cd| {
        let id = cd.id();
        let pid = cd.run_detached(&id, &["/bin/sleep", "1000"])?;
        let api = Api::connect(cd)?;
        let image = cd.dir().join(format!("{id}-images"));
        let bad_mode = CheckpointOptions {
            cgroups_mode: "loose".into(),
            image_path: image.display().to_string(),
            ..Default::default()
        };
        refused(
            api.checkpoint(&id, Some(&bad_mode)),
            Code::InvalidArgument,
            "cgroups_mode",
        )?;
        ensure!(
            !image.exists(),
            "a refused Checkpoint made {}",
            image.display()
        );
        if !is_go_shim() {
            // The Go shim would hand runc these paths as they are.
            let relative_paths = [
                CheckpointOptions {
                    image_path: "relative/images".into(),
                    ..Default::default()
                },
                CheckpointOptions {
                    work_path: "relative/work".into(),
                    ..Default::default()
                },
            ];
            for (options, field) in relative_paths.iter().zip(["image_path", "work_path"]) {
                refused(
                    api.checkpoint(&id, Some(options)),
                    Code::InvalidArgument,
                    field,
                )?;
            }
        }
        let row = cd.task(&id)?.context("the task is gone")?;
        ensure!(
            row.status == "RUNNING" && row.pid == pid,
            "a refused Checkpoint changed the task: {row:?}"
        );

        cd.kill(&id, "SIGKILL")?.ok()?;
        cd.wait_status(&id, "STOPPED", WAIT)?;
        refused(
            api.checkpoint(&id, None),
            Code::FailedPrecondition,
            "not running",
        )?;
        ensure!(
            cd.task_status(&id)?.as_deref() == Some("STOPPED"),
            "a refused Checkpoint changed the stopped task"
        );
        cd.assert_clean()
    });
}

#[test]
fn a_create_from_a_missing_or_empty_checkpoint_is_refused_and_creates_nothing() {
    each_version(|cd| {
        if is_go_shim() {
            // The Go shim's `start` needs a whole bundle; containerd itself
            // never sends a checkpoint folder that does not exist.
            return Ok(());
        }
        // containerd only sends folders it unpacked itself: talk to the
        // shim directly, as containerd would, with folders we choose.
        let id = cd.id();
        let bundle = cd.dir().join("bundles").join(&id);
        fs::create_dir_all(bundle.join("rootfs"))?;
        let started = cd.start_shim_by_hand(&id, &bundle)?;
        let shim = ShimClient::connect(started.ok()?.trim())?;
        let bundle_arg = bundle.display().to_string();
        let missing = cd.dir().join(format!("{id}-no-such-checkpoint"));
        let empty = cd.dir().join(format!("{id}-empty-checkpoint"));
        fs::create_dir_all(&empty)?;
        let missing_arg = missing.display().to_string();
        let empty_arg = empty.display().to_string();
        let dotted = format!("{}/../{id}-empty-checkpoint", cd.dir().display());
        // (checkpoint, holdfast's restore_from option, code, word)
        let cases = [
            (missing_arg.as_str(), "", "NOT_FOUND", missing_arg.as_str()),
            (empty_arg.as_str(), "", "INVALID_ARGUMENT", "inventory.img"),
            ("relative/checkpoint", "", "INVALID_ARGUMENT", "absolute"),
            ("", missing_arg.as_str(), "NOT_FOUND", missing_arg.as_str()),
            ("", empty_arg.as_str(), "INVALID_ARGUMENT", "inventory.img"),
            ("", "relative/checkpoint", "INVALID_ARGUMENT", "absolute"),
            ("", dotted.as_str(), "INVALID_ARGUMENT", ".."),
            (
                empty_arg.as_str(),
                empty_arg.as_str(),
                "INVALID_ARGUMENT",
                "restore_from",
            ),
        ];
        for (checkpoint, restore_from, code, word) in cases {
            match shim.create_from_checkpoint(&id, &bundle_arg, checkpoint, restore_from) {
                Ok(pid) => bail!("Create from {checkpoint:?}/{restore_from:?} answered pid {pid}"),
                Err(e) => ensure!(
                    e.code == code && e.message.contains(word),
                    "Create from {checkpoint:?}/{restore_from:?}: want {code} naming {word:?}, got {e}"
                ),
            }
            match shim.state(&id, "") {
                Ok(s) => bail!("a refused Create left a task: {s:?}"),
                Err(e) => ensure!(e.code == "NOT_FOUND", "State after a refused Create: {e}"),
            }
        }
        ensure!(
            !missing.exists(),
            "a refused Create made {}",
            missing.display()
        );
        cd.end_shim_by_hand(shim, &id, &bundle)?;
        cd.wait_no_leaks(Duration::from_secs(10))
    });
}
