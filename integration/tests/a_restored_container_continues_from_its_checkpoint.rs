//! Issue #5, shim: a container that counts in memory is checkpointed
//! (CRIU through runc), its task is killed and deleted, and a task created
//! from the checkpoint goes on counting from the checkpoint's count, not
//! from 1. Its output lands in the same journal after the earlier output:
//! one ordered stream across the restore. The restored task's sink gets
//! only what the restored process writes.
//!
//! Two ways in: `ctr tasks checkpoint` (containerd pauses the task, the
//! shim dumps it and leaves it running, containerd stores the images in its
//! content store), and containerd's Checkpoint API with runc's options
//! (`exit`, a work path), which ctr does not send to other runtimes. The
//! restore goes through containerd's Create (with the checkpoint's
//! descriptor) and Start: ctr has no command for that with a `--rootfs`
//! container.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use holdfast_integration::api::{checkpoint_options, Api, Descriptor, CHECKPOINT_MEDIA_TYPE};
use holdfast_integration::counter::{self, Counter};
use holdfast_integration::{each_version, is_go_shim, logs, Containerd};

const WAIT: Duration = Duration::from_secs(30);

/// Runs the counter as task `id` with its output to the file `log`, its
/// journal under `<fixture>/journal` (kept after Delete, so that the
/// restored task continues it); returns the journal folder of the task.
fn run_counter(cd: &Containerd, id: &str, log: &Path) -> Result<PathBuf> {
    let root = cd.dir().join("journal");
    let options = logs::write_options(
        cd,
        id,
        &format!("dir = \"{}\"\nkeep_after_delete = true\n", root.display()),
    )?;
    let flags = logs::run_flags(&options, &format!("file://{}", log.display()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    cd.run_detached_with(&flags, id, &["/bin/sh", "-c", &counter::script(id)])?;
    Ok(logs::task_journal(cd, &root, id))
}

/// Creates task `id` from `checkpoint` through containerd, with its output
/// to the file `log`, starts it and waits until it runs.
fn restore(
    cd: &Containerd,
    api: &Api,
    id: &str,
    checkpoint: &Descriptor,
    log: &Path,
) -> Result<()> {
    api.create_from(id, checkpoint, &format!("file://{}", log.display()))
        .context("Create from the checkpoint")?;
    cd.remember_shim_address(id);
    api.start(id).context("Start of the restored task")?;
    cd.wait_status(id, "RUNNING", WAIT)?;
    cd.check_shim_binary(id)
}

/// After the restore: the restored sink starts right after `last` (the
/// count at the checkpoint) and goes on without a gap; the journal holds
/// one ordered stream, 1 to the latest count.
fn check_continues(journal: &Path, after: &Path, last: u64) -> Result<()> {
    let counts = counter::wait_counts(after, 20, WAIT)?;
    ensure!(
        counts[0] != 1,
        "the restored task counts from 1 again: it did not come back from the checkpoint"
    );
    counter::check_consecutive(&counts, last + 1, "the restored task's sink")?;
    if is_go_shim() {
        // The Go shim keeps no journal.
        return Ok(());
    }
    let journal = counter::counts_in_journal(journal)?;
    let numbers: Vec<u64> = journal.iter().map(|(_, n)| *n).collect();
    ensure!(
        numbers.len() as u64 > last,
        "the journal holds {} counts, fewer than the {} before the checkpoint plus the restored ones",
        numbers.len(),
        last
    );
    counter::check_consecutive(&numbers, 1, "the journal across the restore")?;
    ensure!(
        journal.windows(2).all(|w| w[0].0 <= w[1].0),
        "the journal's timestamps go backwards across the restore"
    );
    Ok(())
}

/// The images containerd unpacked for the restore (its temporary folders
/// under the fixture's `$XDG_RUNTIME_DIR`) are as private as the shim made
/// them at the dump: no file readable by others.
fn check_images_private(cd: &Containerd) -> Result<()> {
    let mut seen = 0;
    for dir in fs::read_dir(cd.dir().join("xdg"))? {
        let dir = dir?.path();
        for f in fs::read_dir(&dir)? {
            let f = f?.path();
            let mode = fs::symlink_metadata(&f)?.permissions().mode();
            ensure!(
                mode & 0o077 == 0,
                "{} is mode {:o}: checkpoint images must not be readable by others",
                f.display(),
                mode & 0o777
            );
            seen += 1;
        }
    }
    ensure!(seen > 0, "no unpacked checkpoint images to check");
    Ok(())
}

#[test]
fn ctr_checkpoint_leaves_it_running_and_a_restore_after_kill_continues_the_count() {
    each_version(|cd| {
        let id = cd.id();
        let before = cd.dir().join(format!("{id}-before.log"));
        let after = cd.dir().join(format!("{id}-after.log"));
        let journal = run_counter(cd, &id, &before)?;
        let count = Counter::new(cd, &id);
        count.go()?;
        counter::wait_counts(&before, 20, WAIT)?;
        // Stop counting (the count stays in the shell's memory), so the
        // count at the checkpoint is known exactly.
        count.hold()?;
        let last = *counter::wait_stable(&before, WAIT)?
            .last()
            .context("no count before the checkpoint")?;
        let pid = cd.task_pid(&id)?.context("no pid")?;

        let out = cd.ctr(&["tasks", "checkpoint", &id])?;
        let image = out.ok()?.trim().to_string();
        ensure!(
            !image.is_empty(),
            "ctr tasks checkpoint printed no image name"
        );
        // containerd paused the task for the dump and resumed it; the shim
        // left it running.
        let row = cd
            .task(&id)?
            .context("the task is gone after the checkpoint")?;
        ensure!(
            row.status == "RUNNING" && row.pid == pid,
            "after a checkpoint that leaves it running: {row:?}"
        );

        let out = cd.kill(&id, "SIGKILL")?;
        out.ok()?;
        cd.wait_status(&id, "STOPPED", WAIT)?;
        cd.delete_task(&id)?.ok()?;

        let api = Api::connect(cd)?;
        let checkpoint = api.checkpoint_of_image(&image)?;
        restore(cd, &api, &id, &checkpoint, &after)?;
        count.go()?;
        check_continues(&journal, &after, last)?;
        if !is_go_shim() {
            check_images_private(cd)?;
        }
        cd.assert_clean()
    });
}

#[test]
fn checkpoint_with_exit_through_the_api_stops_it_and_a_restore_continues_the_count() {
    each_version(|cd| {
        let id = cd.id();
        let before = cd.dir().join(format!("{id}-before.log"));
        let after = cd.dir().join(format!("{id}-after.log"));
        let work = cd.dir().join(format!("{id}-criu-work"));
        let journal = run_counter(cd, &id, &before)?;
        let count = Counter::new(cd, &id);
        count.go()?;
        counter::wait_counts(&before, 20, WAIT)?;
        let events = cd.events()?;

        // While it counts: the dump stops it mid-count.
        let api = Api::connect(cd)?;
        let descriptors = api
            .checkpoint(&id, Some(&checkpoint_options(true, Some(&work))))
            .context("Checkpoint with exit")?;
        cd.wait_status(&id, "STOPPED", WAIT)?;
        let last = *counter::wait_stable(&before, WAIT)?
            .last()
            .context("no count before the checkpoint")?;
        ensure!(
            work.join("dump.log").is_file(),
            "CRIU's dump.log is not in the work path {}",
            work.display()
        );
        if !is_go_shim() {
            // holdfast publishes the checkpoint, then the exit it caused.
            events.wait_for("checkpointed", WAIT, |e| {
                e.topic == "/tasks/checkpointed" && e.is_for(&id)
            })?;
            let topics = events.topics_for(&id);
            let at = |t: &str| topics.iter().position(|x| x == t);
            ensure!(
                at("/tasks/checkpointed") < at("/tasks/exit"),
                "events out of order: {topics:?}"
            );
        }
        cd.delete_task(&id)?.ok()?;

        let checkpoint = descriptors
            .iter()
            .find(|d| d.media_type == CHECKPOINT_MEDIA_TYPE)
            .with_context(|| format!("no {CHECKPOINT_MEDIA_TYPE} in {descriptors:?}"))?;
        restore(cd, &api, &id, checkpoint, &after)?;
        check_continues(&journal, &after, last)?;
        cd.assert_clean()
    });
}
