//! The built `holdfast` CLI against the built `holdfastd`, a private
//! containerd (1.6 and/or 1.7, see `HOLDFAST_CONTAINERD`) and holdfast's
//! shim: `events` streams create/start/exit in order; `run` prints a
//! container's output and exits with its code; `logs` reads the journal
//! byte-exactly (binary bytes, a line longer than a journal segment,
//! `--tail`, `--since`, `--timestamps`) and `logs -f` ends once the task
//! exited; `exec` returns the command's exit code, forwards stdin and
//! separates stdout from stderr, with a terminal when asked; bad input gets
//! a clear error and changes nothing. Needs root.

mod common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::cli::{entries, Holdfastd};
use holdfast_api::v1::{exec_request, ExecRequest, ExecStart, ListRequest, LogsRequest, Resize};
use holdfast_integration::{each_version, Containerd as Fixture};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tonic::Code;

/// Lines `prefix 1` .. `prefix n`, each with its newline.
fn numbered(prefix: &str, n: usize) -> String {
    (1..=n).map(|i| format!("{prefix} {i}\n")).collect()
}

/// `holdfast VERB... --name NAME --rootfs ROOTFS -- COMMAND...`: `run`,
/// `run -d` or `create` of a busybox container.
fn container(
    hd: &Holdfastd,
    verb: &[&str],
    name: &str,
    rootfs: &str,
    command: &[&str],
) -> Result<common::cli::CliOutput> {
    let mut args = verb.to_vec();
    args.extend(["--name", name, "--rootfs", rootfs, "--"]);
    args.extend(command);
    hd.run(&args, None)
}

/// Runs a busybox container in the background.
fn run_detached(hd: &Holdfastd, name: &str, rootfs: &str, command: &[&str]) -> Result<()> {
    container(hd, &["run", "-d"], name, rootfs, command)?.ok()?;
    Ok(())
}

/// The actions of `name`'s lines in `holdfast events` output, in order.
fn actions_of(events: &str, name: &str) -> Vec<String> {
    events
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (_time, n, action) = (words.next()?, words.next()?, words.next()?);
            (n == name).then(|| action.to_owned())
        })
        .collect()
}

fn events_and_run(cd: &Fixture, hd: &Holdfastd, rootfs: &str) -> Result<()> {
    let events = hd.spawn(&["events"])?;
    hd.wait_log("events subscribed", 1, Duration::from_secs(10))?;
    let name = cd.id();
    let run = container(
        hd,
        &["run"],
        &name,
        rootfs,
        &["/bin/sh", "-c", "echo one; echo two >&2; exit 7"],
    )?;
    run.expect_code(7)?;
    ensure!(run.text() == "one\n" && run.stderr == "two\n", "{run:?}");
    hd.run(&["rm", &name], None)?.ok()?;
    events.wait_stdout("remove event", Duration::from_secs(15), |out| {
        actions_of(out, &name).contains(&"remove".to_owned())
    })?;
    let out = String::from_utf8_lossy(&events.stdout()).into_owned();
    let actions = actions_of(&out, &name);
    let order: Vec<&str> = actions
        .iter()
        .map(String::as_str)
        .filter(|a| ["create", "start", "exit"].contains(a))
        .collect();
    ensure!(order == ["create", "start", "exit"], "events:\n{out}");
    ensure!(
        out.lines()
            .any(|l| l.contains(&format!(" {name} exit (exit code 7)"))),
        "events:\n{out}"
    );
    // Only that container's events with --name.
    let only = hd.spawn(&["events", "--name", &name])?;
    hd.wait_log("events subscribed", 2, Duration::from_secs(10))?;
    let other = cd.id();
    container(hd, &["create"], &other, rootfs, &["/bin/true"])?.ok()?;
    hd.run(&["rm", &other], None)?.ok()?;
    // (Removing a created task kills it: containerd reports that exit too.)
    events.wait_stdout("the other's remove", Duration::from_secs(15), |out| {
        let actions = actions_of(out, &other);
        actions.first().map(String::as_str) == Some("create")
            && actions.last().map(String::as_str) == Some("remove")
    })?;
    ensure!(only.stdout().is_empty(), "{:?}", only.output());
    drop(only);
    Ok(())
}

fn logs(cd: &Fixture, hd: &Holdfastd, rootfs: &str, started: OffsetDateTime) -> Result<()> {
    let name = cd.id();
    let script = r#"i=1; while [ $i -le 300 ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done
printf 'bin\000\001\377\r\n'; sleep 0.3
for k in 1 2 3 4 5 6 7 8; do echo "tail $k"; done; sleep 0.2; printf 'no newline'; exit 3"#;
    run_detached(hd, &name, rootfs, &["/bin/sh", "-c", script])?;
    ensure!(hd.run(&["wait", &name], None)?.ok()? == "3\n");
    let tail_lines = format!("{}no newline", numbered("tail", 8));
    let mut want_out = numbered("out", 300).into_bytes();
    want_out.extend_from_slice(b"bin\x00\x01\xff\r\n");
    want_out.extend_from_slice(tail_lines.as_bytes());

    // Everything, byte for byte, each stream to its own output.
    let all = hd.run(&["logs", &name], None)?;
    all.expect_code(0)?;
    ensure!(all.stdout == want_out, "{all:?}");
    ensure!(all.stderr == numbered("err", 300), "{all:?}");
    let same = hd.run(&["logs", "--tail", "all", &name], None)?;
    ensure!(same.stdout == want_out, "--tail all: {same:?}");

    // The last lines of both streams together (the open line counts).
    let tail3 = hd.run(&["logs", "--tail", "3", &name], None)?;
    ensure!(
        tail3.ok()? == "tail 7\ntail 8\nno newline" && tail3.stderr.is_empty(),
        "{tail3:?}"
    );
    let tail9 = hd.run(&["logs", "-n", "9", &name], None)?;
    ensure!(tail9.ok()? == tail_lines, "{tail9:?}");

    // Timestamps: each line starts with its time, from this run.
    let stamped = hd.run(&["logs", "--timestamps", "--tail", "9", &name], None)?;
    let text = stamped.ok()?;
    let mut first_time = None;
    let mut previous = started;
    for (line, want) in text
        .split_inclusive('\n')
        .zip(tail_lines.split_inclusive('\n'))
    {
        let (stamp, rest) = line.split_once(' ').context("no timestamp")?;
        let t = OffsetDateTime::parse(stamp, &Rfc3339).with_context(|| format!("{line:?}"))?;
        ensure!(rest == want, "{line:?}");
        ensure!(t >= previous && t <= OffsetDateTime::now_utc(), "{line:?}");
        previous = t;
        first_time.get_or_insert(stamp.to_owned());
    }
    ensure!(text.lines().count() == 9, "{stamped:?}");

    // Since the first tail line: those lines only (stderr is older).
    let since_time = first_time.context("no stamped line")?;
    let since = hd.run(&["logs", "--since", &since_time, &name], None)?;
    ensure!(
        since.ok()? == tail_lines && since.stderr.is_empty(),
        "{since:?}"
    );
    // A follow of an exited container ends with what there is.
    let follow = hd.run(&["logs", "-f", "--tail", "2", &name], None)?;
    ensure!(follow.ok()? == "tail 8\nno newline", "{follow:?}");

    // A line longer than a journal segment (16 MiB) comes back whole.
    let long = cd.id();
    let long_script = "head -c 17000000 /dev/zero | tr '\\0' x; echo; echo after";
    run_detached(hd, &long, rootfs, &["/bin/sh", "-c", long_script])?;
    ensure!(hd.run(&["wait", &long], None)?.ok()? == "0\n");
    let segments = entries(&hd.journals.join(cd.namespace()).join(&long).join("init"))
        .into_iter()
        .filter(|f| f.starts_with("stdout."))
        .count();
    ensure!(
        segments >= 2,
        "the long line did not rotate: {segments} segment(s)"
    );
    let mut want_long = vec![b'x'; 17_000_000];
    want_long.extend_from_slice(b"\nafter\n");
    let got = hd.run(&["logs", &long], None)?;
    ensure!(
        got.code == Some(0) && got.stdout == want_long,
        "long line: exit {:?}, {} bytes, stderr {}",
        got.code,
        got.stdout.len(),
        got.stderr
    );
    ensure!(hd.run(&["logs", "--tail", "1", &long], None)?.ok()? == "after\n");
    let two = hd.run(&["logs", "--tail", "2", &long], None)?;
    ensure!(
        two.stdout == want_long,
        "--tail 2: {} bytes",
        two.stdout.len()
    );

    // A follow started before the output ends once the task exited, with
    // every line.
    let fol = cd.id();
    let fol_script =
        "sleep 1; i=1; while [ $i -le 40 ]; do echo \"f $i\"; sleep 0.05; i=$((i+1)); done; exit 4";
    run_detached(hd, &fol, rootfs, &["/bin/sh", "-c", fol_script])?;
    let mut following = hd.spawn(&["logs", "-f", &fol])?;
    following.wait_stdout("f 5", Duration::from_secs(15), |o| o.contains("f 5\n"))?;
    ensure!(
        hd.run(&["inspect", &fol], None)?
            .ok()?
            .contains("\"running\""),
        "the follow saw output of a container that is not running"
    );
    let status = following.wait(Duration::from_secs(30))?;
    let out = following.output();
    ensure!(
        status.success() && out.text() == numbered("f", 40),
        "{out:?}"
    );

    for n in [&name, &long, &fol] {
        hd.run(&["rm", n], None)?.ok()?;
    }
    Ok(())
}

fn exec(cd: &Fixture, hd: &Holdfastd, rootfs: &str) -> Result<()> {
    let name = cd.id();
    run_detached(hd, &name, rootfs, &["/bin/sleep", "1000"])?;
    let out = hd.run(
        &[
            "exec",
            &name,
            "/bin/sh",
            "-c",
            "echo out; echo err >&2; exit 9",
        ],
        None,
    )?;
    out.expect_code(9)?;
    ensure!(out.text() == "out\n" && out.stderr == "err\n", "{out:?}");
    ensure!(hd
        .run(&["exec", &name, "/bin/true"], None)?
        .ok()?
        .is_empty());

    // stdin, binary and larger than a FIFO's buffer, comes back exactly.
    let input: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let cat = hd.run(&["exec", "-i", &name, "/bin/cat"], Some(&input))?;
    ensure!(
        cat.code == Some(0) && cat.stdout == input,
        "cat: exit {:?}, {} of {} bytes, stderr {}",
        cat.code,
        cat.stdout.len(),
        input.len(),
        cat.stderr
    );
    let read = hd.run(
        &[
            "exec",
            "-i",
            &name,
            "/bin/sh",
            "-c",
            "read a; echo got:$a; exit 2",
        ],
        Some(b"hello\n"),
    )?;
    read.expect_code(2)?;
    ensure!(read.text() == "got:hello\n", "{read:?}");

    // A terminal, sized like the client's.
    let tty = holdfast_integration::cmd::run_in_pty(
        hd.command(&[
            "exec",
            "-t",
            &name,
            "/bin/sh",
            "-c",
            "stty size; tty; exit 5",
        ]),
        Duration::from_secs(30),
    )?;
    ensure!(tty.code == Some(5), "{tty}");
    ensure!(
        tty.stdout.contains("24 80") && tty.stdout.contains("/dev/pts/"),
        "{tty}"
    );

    // A program that does not exist: an error, and no exec left over.
    let missing = hd.run(&["exec", &name, "/nonexistent"], None)?;
    ensure!(missing.code == Some(125), "{missing:?}");
    ensure!(
        entries(&hd.root.join("exec")).is_empty(),
        "exec FIFOs left: {:?}",
        entries(&hd.root.join("exec"))
    );
    hd.run(&["rm", "-f", &name], None)?.ok()?;
    Ok(())
}

fn bad_input(cd: &Fixture, hd: &Holdfastd, rootfs: &str) -> Result<()> {
    let created = cd.id();
    container(hd, &["create"], &created, rootfs, &["/bin/true"])?.ok()?;
    let before = hd.run(&["ps", "-a", "--json"], None)?.ok()?;

    hd.run(&["logs", "nosuch"], None)?
        .expect_error(125, "no such container: nosuch")?;
    hd.run(&["logs", "a/b"], None)?
        .expect_error(125, "invalid argument: name")?;
    hd.run(&["logs", "--tail", "ten", &created], None)?
        .expect_error(2, "--tail")?;
    hd.run(&["logs", "--since", "yesterday", &created], None)?
        .expect_error(1, "--since")?;
    hd.run(&["exec", "nosuch", "/bin/true"], None)?
        .expect_error(125, "no such container: nosuch")?;
    hd.run(&["exec", &created, "/bin/true"], None)?
        .expect_error(125, "is not running")?;
    hd.run(&["events", "--name", "a/b"], None)?
        .expect_error(125, "invalid argument: name")?;
    // A created container has no output yet: nothing, and no error.
    ensure!(hd.run(&["logs", &created], None)?.ok()?.is_empty());

    // What the CLI cannot send, through the generated client.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let mut client = hd.client().await?;
            let bad_since = LogsRequest {
                name: created.clone(),
                since: Some(prost_types::Timestamp {
                    seconds: 1,
                    nanos: -1,
                }),
                ..Default::default()
            };
            let err = client.logs(bad_since).await.err().context("bad since")?;
            ensure!(
                err.code() == Code::InvalidArgument && err.message().starts_with("since: "),
                "{err:?}"
            );
            let exec_with = |msg| {
                let first = ExecRequest { msg: Some(msg) };
                tokio_stream::iter(vec![first])
            };
            let empty = exec_request::Msg::Start(ExecStart {
                name: created.clone(),
                ..Default::default()
            });
            let err = client
                .exec(exec_with(empty))
                .await
                .err()
                .context("no command")?;
            ensure!(
                err.code() == Code::InvalidArgument && err.message().contains("command"),
                "{err:?}"
            );
            let resize = exec_request::Msg::Resize(Resize {
                width: 1,
                height: 1,
            });
            let err = client
                .exec(exec_with(resize))
                .await
                .err()
                .context("no start")?;
            ensure!(err.code() == Code::InvalidArgument, "{err:?}");
            let listed = client.list(ListRequest { all: true }).await?.into_inner();
            ensure!(listed.containers.len() == 1, "{listed:?}");
            Ok(())
        })?;

    // Nothing changed.
    let after = hd.run(&["ps", "-a", "--json"], None)?.ok()?;
    ensure!(before == after, "before:\n{before}\nafter:\n{after}");
    ensure!(entries(&hd.root.join("exec")).is_empty());
    hd.run(&["rm", &created], None)?.ok()?;
    Ok(())
}

fn scenario(cd: &Fixture) -> Result<()> {
    let started = OffsetDateTime::now_utc();
    let mut hd = Holdfastd::start(cd)?;
    let rootfs = cd.rootfs().display().to_string();
    let t = Instant::now();
    let result = events_and_run(cd, &hd, &rootfs)
        .context("events and run")
        .and_then(|()| logs(cd, &hd, &rootfs, started).context("logs"))
        .and_then(|()| exec(cd, &hd, &rootfs).context("exec"))
        .and_then(|()| bad_input(cd, &hd, &rootfs).context("bad input"))
        .and_then(|()| hd.terminate());
    eprintln!("scenario took {:?}", t.elapsed());
    result.with_context(|| format!("holdfastd's log:\n{}", hd.log()))
}

#[test]
fn holdfast_logs_exec_and_events_work_from_the_cli_and_bad_input_changes_nothing() {
    each_version(|cd| {
        scenario(cd)?;
        cd.assert_clean()
    });
}
