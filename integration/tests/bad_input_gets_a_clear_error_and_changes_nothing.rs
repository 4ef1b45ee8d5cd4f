//! Issue #2, "Bad input": an invalid config.json, a missing rootfs, an
//! unknown exec id, a second Start, a Kill of an exited process each fail
//! with a clear error carrying the right code and leave nothing behind.
//!
//! Where containerd's Go shim answers with a different (vaguer) code than
//! holdfast must, the expectation for it is relaxed and says so; the
//! strict one applies to `io.rust.shim.v2`.

use std::fs;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use holdfast_integration::{
    each_version, expect_failure, is_go_shim, runtime, Containerd, ShimClient,
};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn an_invalid_config_json_is_rejected_and_leaves_nothing() {
    each_version(|cd| {
        let id = cd.id();
        // A spec containerd accepts (it is well-typed JSON) but that no
        // runtime can run: the process's cwd must be absolute (OCI spec).
        let base = cd.ctr(&["oci", "spec"])?;
        let mut spec: serde_json::Value = serde_json::from_str(base.ok()?).context("oci spec")?;
        spec["root"] = serde_json::json!({ "path": cd.rootfs().display().to_string() });
        spec["process"]["args"] = serde_json::json!(["/bin/true"]);
        spec["process"]["cwd"] = serde_json::json!("relative/dir");
        spec["linux"]["cgroupsPath"] = serde_json::json!(cd.cgroup_of(&id));
        let path = cd.dir().join(format!("{id}.json"));
        fs::write(&path, serde_json::to_vec(&spec)?)?;
        let out = cd.ctr(&[
            "run",
            "--rm",
            "--runtime",
            &runtime(),
            "--config",
            &path.display().to_string(),
            &id,
        ])?;
        if is_go_shim() {
            // Go shim: runc's message with code Unknown.
            expect_failure(&out, &["cwd"])?;
        } else {
            expect_failure(&out, &["invalid argument"])?;
            expect_failure(&out, &["cwd"])?;
        }
        ensure!(cd.task(&id)?.is_none(), "a task was left for {id}");
        cd.assert_clean()
    });
}

#[test]
fn a_bundle_whose_config_json_does_not_parse_is_rejected_by_the_shim() {
    each_version(|cd| {
        // containerd always writes a well-formed config.json, so hand the
        // shim a broken one ourselves: start it as containerd would and
        // send Create for a bundle we made.
        let id = cd.id();
        let bundle = cd.dir().join("bundles").join(&id);
        fs::create_dir_all(bundle.join("rootfs"))?;
        fs::write(
            bundle.join("config.json"),
            b"{ \"ociVersion\": \"1.0.2\", this is not json",
        )?;
        let started = cd.start_shim_by_hand(&id, &bundle)?;
        if is_go_shim() && !started.success() {
            // The Go shim already reads config.json in `start` and fails
            // there ("invalid character ..."): a rejection too.
            ensure!(started.stderr.contains("invalid character"), "{started}");
            return cd.wait_no_leaks(Duration::from_secs(10));
        }
        let shim = ShimClient::connect(started.ok()?.trim())?;
        match shim.create(&id, &bundle.display().to_string()) {
            Ok(pid) => bail!("Create of a broken config.json answered pid {pid}"),
            // Go shim: runc's parse error with code Unknown.
            Err(e) if is_go_shim() => ensure!(!e.message.is_empty(), "{e}"),
            Err(e) => ensure!(
                e.code == "INVALID_ARGUMENT" && e.message.contains("config.json"),
                "Create of a broken config.json: want INVALID_ARGUMENT naming config.json, got {e}"
            ),
        }
        cd.end_shim_by_hand(shim, &id, &bundle)?;
        cd.wait_no_leaks(Duration::from_secs(10))
    });
}

#[test]
fn a_missing_rootfs_is_rejected_and_leaves_nothing() {
    each_version(|cd| {
        let id = cd.id();
        let missing = format!("/nonexistent-{id}");
        let out = cd.ctr(&[
            "run",
            "--rm",
            "--runtime",
            &runtime(),
            "--cgroup",
            &cd.cgroup_of(&id),
            "--rootfs",
            &missing,
            &id,
            "/bin/true",
        ])?;
        if is_go_shim() {
            // Go shim: runc's "no such file or directory" with code Unknown.
            expect_failure(&out, &["no such file or directory"])?;
        } else {
            expect_failure(&out, &["not found", "invalid argument"])?;
            expect_failure(&out, &[&missing])?;
        }
        ensure!(cd.task(&id)?.is_none(), "a task was left for {id}");
        cd.assert_clean()
    });
}

#[test]
fn an_unknown_exec_id_is_not_found_and_a_duplicate_one_already_exists() {
    each_version(|cd| {
        let id = cd.id();
        let pid = cd.run_detached(&id, &["/bin/sleep", "1000"])?;
        let nope = format!("nope{}", cd.exec_id());
        let out = cd.ctr(&["t", "kill", "--exec-id", &nope, &id])?;
        expect_failure(&out, &["not found"])?;

        let shim = ShimClient::connect(&cd.shim_address(&id)?)?;
        match shim.state(&id, &nope) {
            Ok(s) => bail!("State of unknown exec {nope} answered {s:?}"),
            Err(e) => ensure!(e.code == "NOT_FOUND", "State of unknown exec: {e}"),
        }
        match shim.start(&id, &nope) {
            Ok(p) => bail!("Start of unknown exec {nope} answered pid {p}"),
            Err(e) => ensure!(e.code == "NOT_FOUND", "Start of unknown exec: {e}"),
        }
        drop(shim);

        let e = cd.exec_id();
        cd.exec_detached(&id, &e, &["/bin/sleep", "1000"])?;
        let out = cd.exec(&[], &id, &e, &["/bin/true"])?;
        expect_failure(&out, &["already exists"])?;

        let row = cd.task(&id)?.context("task gone")?;
        ensure!(
            row.status == "RUNNING" && row.pid == pid,
            "task changed: {row:?}"
        );
        cd.assert_clean()
    });
}

#[test]
fn a_second_start_fails_and_the_task_keeps_running() {
    each_version(|cd| {
        let id = cd.id();
        let pid = cd.run_detached(&id, &["/bin/sleep", "1000"])?;
        // Through containerd: it refuses before asking the shim.
        let out = cd.ctr(&["t", "start", &id])?;
        expect_failure(&out, &["already exists"])?;
        // Straight to the shim: Start of a running init.
        let shim = ShimClient::connect(&cd.shim_address(&id)?)?;
        match shim.start(&id, "") {
            Ok(p) => bail!("a second Start answered pid {p}"),
            Err(e) if is_go_shim() => {
                // Go shim: "cannot start a running process", code Unknown.
                ensure!(e.message.contains("running"), "second Start: {e}");
            }
            Err(e) => ensure!(
                e.code == "FAILED_PRECONDITION" || e.code == "ALREADY_EXISTS",
                "second Start: want FAILED_PRECONDITION or ALREADY_EXISTS, got {e}"
            ),
        }
        drop(shim);
        let row = cd.task(&id)?.context("task gone")?;
        ensure!(
            row.status == "RUNNING" && row.pid == pid,
            "task changed: {row:?}"
        );
        cd.assert_clean()
    });
}

#[test]
fn killing_an_exited_process_fails_cleanly() {
    each_version(|cd| {
        let id = cd.id();
        cd.run_detached(&id, &["/bin/sh", "-c", &Containerd::trigger_script(&id, 0)])?;
        cd.fire(&id)?;
        cd.wait_status(&id, "STOPPED", WAIT)?;
        let out = cd.kill(&id, "SIGKILL")?;
        expect_failure(&out, &["not found", "failed precondition"])?;

        let shim = ShimClient::connect(&cd.shim_address(&id)?)?;
        match shim.kill(&id, "", 9, false) {
            Ok(()) => bail!("Kill of an exited process succeeded"),
            Err(e) => ensure!(
                e.code == "NOT_FOUND" || e.code == "FAILED_PRECONDITION",
                "Kill of an exited process: {e}"
            ),
        }
        drop(shim);
        ensure!(
            cd.task_status(&id)?.as_deref() == Some("STOPPED"),
            "task state changed"
        );
        cd.delete_task(&id)?.ok()?;
        cd.assert_clean()
    });
}
