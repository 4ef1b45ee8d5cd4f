//! kubelet rotates a container's log as it grows: it renames the file and
//! calls ReopenContainerLog, after which containerd creates a new file at
//! the path. holdfast's shim writes the pod's log file itself, so it must
//! follow: while a pod's container writes numbered lines as fast as it
//! can, the log is rotated; the renamed file and the new one together hold
//! every line exactly once and in order, and the new file holds the lines
//! that follow the old one's (the shim writes the new file, not the
//! renamed one).

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context};
use holdfast_integration::cri::{self, file_len, handler_under_test, wait_until, Cri, LogCheck};
use holdfast_integration::each_version_of;

#[test]
fn kubelets_log_rotation_loses_no_line_and_the_new_file_gets_what_follows() {
    each_version_of(|cri: &Cri| {
        let handler = handler_under_test();
        let (pod, tag) = cri.run_writer(handler, "rotate")?;

        // kubelet's rotation: rename, then ReopenContainerLog.
        let mut rotated = pod.log.clone().into_os_string();
        rotated.push(".20261124-000000");
        let rotated = PathBuf::from(rotated);
        fs::rename(&pod.log, &rotated).context("rename the log file")?;
        cri.reopen_container_log(&pod.container)?;
        let reopened_at = pod.progress(&tag)?.samples.last().map_or(0, |s| s.0);
        wait_until(
            "the new log file to get lines",
            Duration::from_secs(30),
            || Ok(file_len(&pod.log) > 0),
        )?;
        wait_until(
            "the writer to write on after the reopen",
            Duration::from_secs(30),
            || {
                let p = pod.progress(&tag)?;
                Ok(p.samples.last().map_or(0, |s| s.0) > reopened_at + 10_000)
            },
        )?;

        let p = pod.stop_writer(cri, &tag, Duration::from_secs(60))?;
        let written = p.done.map(|(n, _)| n).unwrap_or(0);
        let records = cri::wait_log_lines(&[&rotated, &pod.log], written)?;
        let m = LogCheck::of(&records, written);
        eprintln!("{m:?}");
        ensure!(
            m.exact(),
            "the rotated and the new log file do not hold every line once in order: {m:?}"
        );
        let old = cri::whole_lines(&cri::read_pod_log(&rotated)?, "stdout");
        let new = cri::whole_lines(&cri::read_pod_log(&pod.log)?, "stdout");
        ensure!(
            !old.is_empty() && new.len() > 10_000,
            "the rotation split the log {} / {} lines",
            old.len(),
            new.len()
        );
        let last_old: u64 = old[old.len() - 1].parse()?;
        ensure!(
            new[0] == (last_old + 1).to_string(),
            "the new log file starts at {:?}, not after the renamed file's last line {last_old}",
            new[0]
        );
        pod.remove(cri)?;
        fs::remove_file(&rotated).context("remove the rotated log")?;
        cri.assert_clean()
    });
}
