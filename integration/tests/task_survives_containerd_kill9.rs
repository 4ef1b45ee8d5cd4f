//! Issue #2, "Outlives containerd": after `kill -9` of containerd and a
//! restart, running tasks are still RUNNING with the same pid and every call
//! works; a task that exited meanwhile reports its real exit status.

use std::time::Duration;

use anyhow::{ensure, Context};
use holdfast_integration::{
    deleted_exit_status, each_version, is_go_shim, procs, Containerd, Version,
};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn running_tasks_survive_a_containerd_kill9_and_stay_usable() {
    each_version(|cd| {
        let a = cd.id();
        let b = cd.id();
        let pid_a = cd.run_detached(&a, &["/bin/sleep", "1000"])?;
        let pid_b = cd.run_detached(&b, &["/bin/sleep", "1000"])?;
        let shims = cd.shim_pids();

        cd.kill9()?;
        ensure!(
            procs::alive(pid_a) && procs::alive(pid_b),
            "a container died with containerd"
        );
        for s in &shims {
            ensure!(procs::alive(*s), "shim {s} died with containerd");
        }
        cd.restart()?;

        for (id, pid) in [(&a, pid_a), (&b, pid_b)] {
            let row = cd
                .task(id)?
                .with_context(|| format!("{id} lost after restart"))?;
            ensure!(
                row.status == "RUNNING" && row.pid == pid,
                "after restart: {row:?}, want RUNNING pid {pid}"
            );
        }

        // exec
        let e = cd.exec_id();
        let out = cd.exec(&[], &a, &e, &["/bin/sh", "-c", "echo still-here; exit 3"])?;
        ensure!(
            out.code == Some(3) && out.stdout == "still-here\n",
            "exec after restart:\n{out}"
        );
        // pause / resume
        cd.ctr(&["t", "pause", &a])?.ok()?;
        cd.wait_status(&a, "PAUSED", WAIT)?;
        cd.ctr(&["t", "resume", &a])?.ok()?;
        cd.wait_status(&a, "RUNNING", WAIT)?;
        // kill / delete
        cd.kill(&a, "SIGKILL")?.ok()?;
        cd.wait_status(&a, "STOPPED", WAIT)?;
        let out = cd.delete_task(&a)?;
        ensure!(deleted_exit_status(&out) == Some(137), "delete a:\n{out}");
        // b still untouched
        ensure!(
            cd.task_pid(&b)? == Some(pid_b) && procs::alive(pid_b),
            "b changed"
        );
        cd.assert_clean()
    });
}

#[test]
fn a_task_that_exits_while_containerd_is_down_reports_its_real_status() {
    each_version(|cd| {
        let id = cd.id();
        let pid = cd.run_detached(&id, &["/bin/sh", "-c", &Containerd::trigger_script(&id, 5)])?;
        cd.kill9()?;
        cd.fire(&id)?;
        ensure!(procs::wait_gone(pid, WAIT), "container {pid} did not exit");
        cd.restart()?;
        if is_go_shim() && cd.version() == Version::V1_7 && cd.task(&id)?.is_none() {
            // Known weakness of the Go shim of containerd 1.7: it is gone by
            // the time containerd returns ("cleaning up dead shim"), and the
            // task with it, status and all. holdfast must keep it.
            ensure!(
                cd.log().contains("cleaning up dead shim"),
                "task {id} vanished"
            );
            cd.remove_all()?;
            cd.remove_client_fifos(&id);
            return cd.assert_clean();
        }
        cd.wait_status(&id, "STOPPED", WAIT)?;
        let out = cd.delete_task(&id)?;
        ensure!(
            deleted_exit_status(&out) == Some(5),
            "want the real exit status 5:\n{out}"
        );
        cd.assert_clean()
    });
}

#[test]
fn a_task_can_be_started_killed_and_deleted_across_two_restarts() {
    each_version(|cd| {
        let id = cd.id();
        let pid = cd.run_detached(&id, &["/bin/sleep", "1000"])?;
        for round in 0..2 {
            cd.kill9()?;
            cd.restart()?;
            ensure!(
                cd.task_pid(&id)? == Some(pid),
                "round {round}: pid changed or task lost"
            );
        }
        cd.kill(&id, "SIGKILL")?.ok()?;
        cd.wait_status(&id, "STOPPED", WAIT)?;
        let out = cd.delete_task(&id)?;
        ensure!(deleted_exit_status(&out) == Some(137), "{out}");
        cd.assert_clean()
    });
}
