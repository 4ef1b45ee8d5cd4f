//! Issue #2, "No leaks": the shim exits after its task is deleted (also
//! after execs, also after a tty exec); after many create/exec/delete
//! cycles no shim process, mount, FIFO, socket or cgroup is left.
//!
//! `HOLDFAST_IT_CYCLES` sets the number of cycles (default 100).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use holdfast_integration::{each_version, env_usize, procs};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn the_shim_exits_after_its_task_is_deleted() {
    each_version(|cd| {
        let id = cd.id();
        cd.run_detached(&id, &["/bin/sleep", "1000"])?;
        let shim = cd.shim_pid_of(&id).context("no shim for the task")?;
        cd.remove(&id)?;
        ensure!(
            procs::wait_gone(shim, Duration::from_secs(10)),
            "shim {shim} still runs after its task was deleted"
        );
        cd.wait_no_leaks(Duration::from_secs(10))
    });
}

#[test]
fn the_shim_exits_after_execs_and_a_tty_exec() {
    each_version(|cd| {
        let id = cd.id();
        cd.run_detached(&id, &["/bin/sleep", "1000"])?;
        let shim = cd.shim_pid_of(&id).context("no shim for the task")?;
        for _ in 0..3 {
            let e = cd.exec_id();
            cd.exec(&[], &id, &e, &["/bin/true"])?.ok()?;
        }
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
            "tty",
        ])?;
        ensure!(out.success() && out.stdout.contains("/dev/pts/"), "{out}");
        // One exec still running when the task goes.
        let e = cd.exec_id();
        cd.exec_detached(&id, &e, &["/bin/sleep", "1000"])?;
        cd.remove(&id)?;
        ensure!(
            procs::wait_gone(shim, Duration::from_secs(10)),
            "shim {shim} still runs after its task was deleted"
        );
        cd.wait_no_leaks(Duration::from_secs(10))
    });
}

#[test]
fn the_shim_of_a_tty_task_exits_after_delete() {
    each_version(|cd| {
        let id = cd.id();
        let args = cd.run_args(&["--rm", "-t"], &id, &["/bin/sh", "-c", "tty"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cd.ctr_pty(&args)?;
        ensure!(out.success() && out.stdout.contains("/dev/pts/"), "{out}");
        cd.wait_no_leaks(Duration::from_secs(10))
    });
}

#[test]
fn many_create_exec_delete_cycles_leave_nothing_behind() {
    each_version(|cd| {
        let cycles = env_usize("HOLDFAST_IT_CYCLES", 100);
        let started = Instant::now();
        for n in 0..cycles {
            let id = cd.id();
            cd.run_detached(&id, &["/bin/sleep", "1000"])
                .with_context(|| format!("cycle {n}: run"))?;
            let e = cd.exec_id();
            let out = cd.exec(&[], &id, &e, &["/bin/sh", "-c", "exit 1"])?;
            ensure!(out.code == Some(1), "cycle {n}: exec:\n{out}");
            cd.kill(&id, "SIGKILL")?.ok()?;
            cd.wait_status(&id, "STOPPED", WAIT)?;
            cd.delete_task(&id)?.ok()?;
            cd.ctr(&["c", "rm", &id])?.ok()?;
            // Shims must not pile up while the cycles run.
            let shims = cd.shim_pids().len();
            ensure!(shims <= 2, "cycle {n}: {shims} shims alive");
        }
        eprintln!("{cycles} cycles in {:?}", started.elapsed());
        cd.wait_no_leaks(Duration::from_secs(15))
    });
}
