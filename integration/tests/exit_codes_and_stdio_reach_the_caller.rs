//! Issue #2, "Exit codes propagate" and Create's stdio: non-terminal stdout
//! and stderr, stdin, and terminal mode.

use anyhow::{ensure, Context};
use holdfast_integration::each_version;

#[test]
fn ctr_run_rm_exits_with_the_containers_exit_code() {
    each_version(|cd| {
        let id = cd.id();
        let out = cd.run(&["--rm"], &id, &["/bin/sh", "-c", "exit 7"])?;
        ensure!(out.code == Some(7), "want exit code 7:\n{out}");
        let id = cd.id();
        let out = cd.run(&["--rm"], &id, &["/bin/true"])?;
        ensure!(out.code == Some(0), "want exit code 0:\n{out}");
        cd.assert_clean()
    });
}

#[test]
fn stdout_and_stderr_of_a_non_terminal_container_arrive() {
    each_version(|cd| {
        let id = cd.id();
        let out = cd.run(
            &["--rm"],
            &id,
            &["/bin/sh", "-c", "echo hello; echo oops >&2"],
        )?;
        out.ok().context("echo container")?;
        ensure!(out.stdout == "hello\n", "stdout:\n{out}");
        ensure!(out.stderr.contains("oops"), "stderr:\n{out}");
        cd.assert_clean()
    });
}

#[test]
fn stdin_is_piped_into_the_container() {
    each_version(|cd| {
        let id = cd.id();
        // `head -n1`, not `cat`: ctr never sends CloseIO when its stdin ends
        // (`echo abc | ctr run ... cat` hangs with the Go shim too), so the
        // container must end by itself once it has read the line.
        let args = cd.run_args(&["--rm"], &id, &["/bin/head", "-n1"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cd.ctr_stdin(&args, b"abc\n")?;
        out.ok().context("head container")?;
        ensure!(out.stdout == "abc\n", "want abc back:\n{out}");
        cd.assert_clean()
    });
}

#[test]
fn terminal_mode_gives_the_container_a_pty() {
    each_version(|cd| {
        let id = cd.id();
        let args = cd.run_args(&["--rm", "-t"], &id, &["/bin/sh", "-c", "tty; exit 4"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cd.ctr_pty(&args)?;
        ensure!(out.stdout.contains("/dev/pts/"), "tty output:\n{out}");
        ensure!(out.code == Some(4), "want exit code 4:\n{out}");
        cd.assert_clean()
    });
}
