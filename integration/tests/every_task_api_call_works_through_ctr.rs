//! Issue #2, "The whole task API": State, Pids, Pause/Resume, Kill (and
//! `all`), Exec with its own lifecycle (also with a terminal), Stats,
//! Update and Delete's exit status, driven through `ctr` (and, for Update
//! and a direct Start, which `ctr` cannot send, through the shim's socket).

use std::fs;
use std::time::Duration;

use anyhow::{ensure, Context};
use holdfast_integration::{deleted_exit_status, each_version, procs, Containerd, ShimClient};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn state_and_pids_show_the_running_task_and_its_execs() {
    each_version(|cd| {
        let id = cd.id();
        let pid = cd.run_detached(&id, &["/bin/sleep", "1000"])?;
        ensure!(procs::alive(pid), "init pid {pid} is not alive on the host");
        let row = cd.task(&id)?.context("task missing from ctr t ls")?;
        ensure!(row.status == "RUNNING" && row.pid == pid, "{row:?}");

        let e = cd.exec_id();
        cd.exec_detached(&id, &e, &["/bin/sleep", "1000"])?;
        let ps = cd.ctr(&["t", "ps", &id])?;
        let pids: Vec<u32> = ps
            .ok()?
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        ensure!(pids.contains(&pid), "ctr t ps lacks init {pid}:\n{ps}");
        ensure!(pids.len() == 2, "want init and the exec in ctr t ps:\n{ps}");
        cd.assert_clean()
    });
}

#[test]
fn pause_and_resume_freeze_and_thaw_the_task() {
    each_version(|cd| {
        let id = cd.id();
        cd.run_detached(&id, &["/bin/sleep", "1000"])?;
        cd.ctr(&["t", "pause", &id])?.ok()?;
        cd.wait_status(&id, "PAUSED", WAIT)?;
        let freezer = format!("/sys/fs/cgroup/freezer{}/freezer.state", cd.cgroup_of(&id));
        if let Ok(state) = fs::read_to_string(&freezer) {
            ensure!(state.trim() == "FROZEN", "{freezer}: {state}");
        }
        cd.ctr(&["t", "resume", &id])?.ok()?;
        cd.wait_status(&id, "RUNNING", WAIT)?;
        if let Ok(state) = fs::read_to_string(&freezer) {
            ensure!(state.trim() == "THAWED", "{freezer}: {state}");
        }
        cd.assert_clean()
    });
}

#[test]
fn kill_signals_the_init_process_and_delete_returns_its_status() {
    each_version(|cd| {
        let id = cd.id();
        // The init of a pid namespace ignores signals it has no handler for.
        cd.run_detached(
            &id,
            &[
                "/bin/sh",
                "-c",
                "trap 'exit 9' TERM; while true; do sleep 0.05; done",
            ],
        )?;
        cd.kill(&id, "SIGTERM")?.ok()?;
        cd.wait_status(&id, "STOPPED", WAIT)?;
        let out = cd.delete_task(&id)?;
        ensure!(
            deleted_exit_status(&out) == Some(9),
            "want status 9:\n{out}"
        );
        ensure!(cd.task(&id)?.is_none(), "task still listed after delete");

        // A clean exit reports 0.
        let id = cd.id();
        cd.run_detached(&id, &["/bin/sh", "-c", &Containerd::trigger_script(&id, 0)])?;
        cd.fire(&id)?;
        cd.wait_status(&id, "STOPPED", WAIT)?;
        let out = cd.delete_task(&id)?;
        ensure!(
            deleted_exit_status(&out) == Some(0),
            "want status 0:\n{out}"
        );
        cd.assert_clean()
    });
}

#[test]
fn kill_all_reaches_every_process_of_the_task() {
    each_version(|cd| {
        let id = cd.id();
        let init = cd.run_detached(&id, &["/bin/sleep", "1000"])?;
        let e = cd.exec_id();
        cd.exec_detached(&id, &e, &["/bin/sleep", "1001"])?;
        let before = procs::descendants(init);
        let all = cd.ctr(&["t", "ps", &id])?;
        let exec_pid: u32 = all
            .ok()?
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .find(|p| *p != init)
            .with_context(|| format!("no exec pid in:\n{all}"))?;
        cd.ctr(&["t", "kill", "--all", "-s", "SIGKILL", &id])?
            .ok()?;
        cd.wait_status(&id, "STOPPED", WAIT)?;
        ensure!(
            procs::wait_gone(exec_pid, WAIT),
            "exec pid {exec_pid} survived kill --all (init children before: {before:?})"
        );
        let out = cd.delete_task(&id)?;
        ensure!(deleted_exit_status(&out) == Some(137), "want 137:\n{out}");
        cd.assert_clean()
    });
}

#[test]
fn exec_has_its_own_lifecycle_and_exit_code() {
    each_version(|cd| {
        let id = cd.id();
        let init = cd.run_detached(&id, &["/bin/sleep", "1000"])?;

        let e = cd.exec_id();
        let out = cd.exec(&[], &id, &e, &["/bin/sh", "-c", "exit 3"])?;
        ensure!(out.code == Some(3), "want exec exit code 3:\n{out}");

        let e = cd.exec_id();
        let out = cd.exec(
            &[],
            &id,
            &e,
            &["/bin/sh", "-c", "echo from-exec; echo err >&2"],
        )?;
        ensure!(
            out.success() && out.stdout == "from-exec\n" && out.stderr.contains("err"),
            "exec stdio:\n{out}"
        );

        let e = cd.exec_id();
        let out = cd.exec_stdin(&id, &e, &["/bin/head", "-n1"], b"to-exec\n")?;
        ensure!(
            out.success() && out.stdout == "to-exec\n",
            "exec stdin:\n{out}"
        );

        let e = cd.exec_id();
        let out = cd.ctr_pty(&[
            "t",
            "exec",
            "-t",
            "--exec-id",
            &e,
            &id,
            "/bin/sh",
            "-c",
            "tty; exit 5",
        ])?;
        ensure!(out.stdout.contains("/dev/pts/"), "exec -t output:\n{out}");
        ensure!(out.code == Some(5), "want exec -t exit code 5:\n{out}");

        // The execs came and went; the task is untouched.
        let row = cd.task(&id)?.context("task gone")?;
        ensure!(row.status == "RUNNING" && row.pid == init, "{row:?}");
        cd.assert_clean()
    });
}

#[test]
fn metrics_report_the_tasks_cgroup_stats() {
    each_version(|cd| {
        let id = cd.id();
        cd.run_detached(&id, &["/bin/sleep", "1000"])?;
        let out = cd.ctr(&["t", "metrics", &id])?;
        let text = out.ok()?;
        ensure!(text.contains("memory."), "no memory stats:\n{out}");
        ensure!(text.contains("pids.current"), "no pids stats:\n{out}");
        let json = cd.ctr(&["t", "metrics", "--format", "json", &id])?;
        let v: serde_json::Value =
            serde_json::from_str(json.ok()?).with_context(|| format!("metrics json:\n{json}"))?;
        ensure!(!v.is_null(), "empty metrics");
        cd.assert_clean()
    });
}

#[test]
fn update_changes_the_tasks_resources() {
    each_version(|cd| {
        let id = cd.id();
        cd.run_detached(&id, &["/bin/sleep", "1000"])?;
        // ctr 1.6 has no `tasks update`: send Update to the shim itself.
        let shim = ShimClient::connect(&cd.shim_address(&id)?)?;
        let limit: u64 = 64 * 1024 * 1024;
        shim.update(&id, &format!(r#"{{"memory":{{"limit":{limit}}}}}"#))
            .map_err(|e| anyhow::anyhow!("update: {e}"))?;
        let v1 = format!(
            "/sys/fs/cgroup/memory{}/memory.limit_in_bytes",
            cd.cgroup_of(&id)
        );
        let v2 = format!("/sys/fs/cgroup{}/memory.max", cd.cgroup_of(&id));
        let got = fs::read_to_string(&v1)
            .or_else(|_| fs::read_to_string(&v2))
            .with_context(|| format!("read {v1} or {v2}"))?;
        ensure!(got.trim() == limit.to_string(), "memory limit is {got}");
        drop(shim);
        cd.assert_clean()
    });
}
