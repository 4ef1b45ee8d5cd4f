//! Issue 5, export, import and migrate: two holdfastds, each on its own
//! private containerd (own root, state, sockets, namespace, cgroup parent,
//! rootfs), containerd 1.6 and/or 1.7 (see `HOLDFAST_CONTAINERD`), our shim,
//! runc and CRIU. A busybox shell counts in a variable and prints each
//! count.
//!
//! - `export` of a checkpoint to a file, `import` of it into the second
//!   holdfastd (another name, that host's rootfs folder), `restore` there:
//!   the count goes on there from the checkpoint's, not from 1, also
//!   after a kill -9 of the target's holdfastd between import and
//!   restore. Images and
//!   the archive file are root-only. A truncated, a corrupt, a hostile
//!   (`../` path, absolute path), a newer-format and a non-archive file,
//!   and bad requests (unknown container or checkpoint, bad names, a taken
//!   name) get a clear error with the right code and change nothing on
//!   the target: no record, containerd container, checkpoint or file.
//! - a migration whose target fails after the source's checkpoint (its
//!   imports folder is a file) restores the container on the source, its
//!   count going on from the checkpoint;
//! - `migrate --keep-source` and `migrate`: the container runs on the
//!   target and continues exactly after its last count here; the source is
//!   kept (stopped, with its checkpoint) or removed, and removed only after
//!   the target runs it. A migration to a taken name, an unreachable or a
//!   malformed target leaves the source running as it was.
//!
//! Needs root.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use common::cli::{entries, Holdfastd};
use common::count::{
    check_consecutive, check_private, code, counts, inspect, mode, run_counter, wait_counts,
    wait_status,
};
use holdfast_api::v1::{EventsRequest, ExportRequest};
use holdfast_integration::{each_version, Containerd as Fixture};
use tonic::Code;

/// The source's and the target's holdfastd and fixture.
struct Pair<'a> {
    a: &'a Fixture,
    hd_a: Holdfastd,
    b: Fixture,
    hd_b: Holdfastd,
}

impl<'a> Pair<'a> {
    /// A second private containerd next to `a`, and a holdfastd on each.
    fn start(a: &'a Fixture) -> Result<Pair<'a>> {
        let name = format!("{}-target", std::thread::current().name().unwrap_or("test"));
        let b = Fixture::start_named(a.version(), &name)?;
        let hd_a = Holdfastd::start(a)?;
        let hd_b = Holdfastd::start(&b)?;
        Ok(Pair { a, hd_a, b, hd_b })
    }

    /// The target's address for `--to`.
    fn target(&self) -> String {
        format!("unix://{}", self.hd_b.socket.display())
    }

    /// Removes `names` on both sides (if there), stops both holdfastds and
    /// checks neither containerd has anything left.
    fn finish(mut self, names: &[&str]) -> Result<()> {
        for hd in [&self.hd_a, &self.hd_b] {
            for name in names {
                let _ = hd.run(&["rm", "-f", name], None)?;
            }
        }
        self.hd_a.terminate()?;
        self.hd_b.terminate()?;
        self.a.assert_clean()?;
        self.b.assert_clean()
    }

    /// Both holdfastds' logs, for a failure.
    fn logs(&self) -> String {
        format!(
            "source holdfastd's log:\n{}\ntarget holdfastd's log:\n{}",
            self.hd_a.log(),
            self.hd_b.log()
        )
    }
}

/// What a refused import must leave unchanged on a holdfastd: its
/// containers, containerd's containers, its checkpoint and import folders.
fn target_state(hd: &Holdfastd, cd: &Fixture) -> Result<Vec<String>> {
    let mut state = vec![
        hd.run(&["ps", "-a", "--json"], None)?.ok()?,
        cd.ctr(&["c", "ls", "-q"])?.ok()?.to_owned(),
        cd.ctr(&["snapshots", "ls"])?.ok()?.to_owned(),
    ];
    let mut files = entries(&hd.root.join("checkpoints"));
    files.extend(entries(&hd.root.join("imports")));
    files.extend(entries(&hd.root));
    files.sort();
    state.push(files.join(" "));
    Ok(state)
}

/// Writes a zstd tar whose manifest (format `version`) lists a `criu`
/// folder and a file at `path`, followed by those entries (the file's name
/// written raw, as a hostile tool would). No trailer: the importer must
/// refuse it before.
fn crafted_archive(out: &Path, path: &str, version: u32) -> Result<()> {
    let manifest = serde_json::json!({
        "format_version": version,
        "holdfast_version": "0.1.0",
        "created": "2025-01-01T00:00:00Z",
        "container": "evil",
        "checkpoint": "cp1",
        "config": {},
        "entries": [
            {"path": "criu", "kind": {"type": "dir"}, "mode": 448, "uid": 0, "gid": 0, "mtime": 0},
            {"path": path, "kind": {"type": "file", "size": 5}, "mode": 420, "uid": 0, "gid": 0, "mtime": 0},
        ],
    });
    let manifest = serde_json::to_vec(&manifest)?;
    let mut tar = tar::Builder::new(zstd::Encoder::new(std::fs::File::create(out)?, 3)?);
    let mut append = |name: &str, kind: tar::EntryType, data: &[u8]| -> Result<()> {
        let mut header = tar::Header::new_gnu();
        let raw = name.as_bytes();
        ensure!(raw.len() < 100, "name too long for the test");
        header.as_old_mut().name[..raw.len()].copy_from_slice(raw);
        header.set_entry_type(kind);
        header.set_mode(if kind == tar::EntryType::Directory {
            0o700
        } else {
            0o600
        });
        header.set_size(data.len() as u64);
        header.set_cksum();
        tar.append(&header, data)?;
        Ok(())
    };
    append("holdfast-archive.json", tar::EntryType::Regular, &manifest)?;
    append("criu/", tar::EntryType::Directory, b"")?;
    append(path, tar::EntryType::Regular, b"evil\n")?;
    tar.into_inner()?.finish()?;
    Ok(())
}

fn export_import_restore(p: &mut Pair, name: &str) -> Result<()> {
    let (a, hd_a, hd_b) = (p.a, &p.hd_a, &p.hd_b);
    run_counter(hd_a, name, &a.rootfs().display().to_string())?;
    // The dump happens between these two reads (the container keeps
    // counting: --leave-running).
    let before_checkpoint = counts(hd_a, name)?.len() as u64;
    hd_a.run(
        &["checkpoint", "create", "--leave-running", name, "cp1"],
        None,
    )?
    .ok()?;
    let at_checkpoint = counts(hd_a, name)?.len() as u64;
    let file = a.dir().join("web.hfa");
    let file_s = file.display().to_string();
    let out = hd_a
        .run(&["export", name, "cp1", "-o", &file_s], None)?
        .ok()?;
    ensure!(out.trim() == file_s, "{out:?}");
    ensure!(mode(&file)? == 0o600, "the archive is {:o}", mode(&file)?);
    ensure!(
        entries(a.dir()).iter().all(|e| !e.ends_with(".partial")),
        "a partial export is left: {:?}",
        entries(a.dir())
    );

    // Into the second holdfastd, under another name, on that host's rootfs.
    let moved = format!("{name}-moved");
    let rootfs_b = p.b.rootfs().display().to_string();
    let out = hd_b
        .run(
            &["import", &file_s, "--name", &moved, "--rootfs", &rootfs_b],
            None,
        )?
        .ok()?;
    ensure!(out.trim() == format!("{moved} cp1"), "{out:?}");
    check_private(hd_b, &moved, "cp1")?;
    ensure!(
        entries(&hd_b.root.join("imports")).is_empty(),
        "the import's staging folder is left: {:?}",
        entries(&hd_b.root.join("imports"))
    );
    let listed = hd_b.run(&["checkpoint", "ls", &moved], None)?.ok()?;
    ensure!(
        listed.lines().nth(1).is_some_and(|l| l.starts_with("cp1 ")),
        "{listed}"
    );
    let spec = &inspect(hd_b, &moved)?["spec"];
    ensure!(spec["rootfs"] == rootfs_b.as_str(), "{spec}");
    ensure!(spec["command"][2] == common::count::COUNTER, "{spec}");
    let status = inspect(hd_b, &moved)?["state"]["status"].clone();

    // A kill -9 of the target's holdfastd before the restore: start-up
    // takes the imported container (no task yet) as it was.
    p.hd_b.kill9_and_start_again()?;
    let hd_b = &p.hd_b;
    let again = inspect(hd_b, &moved)?;
    ensure!(again["state"]["status"] == status, "{again}");
    let listed_again = hd_b.run(&["checkpoint", "ls", &moved], None)?.ok()?;
    ensure!(listed_again == listed, "{listed_again}");

    hd_b.run(&["restore", &moved, "cp1"], None)?.ok()?;
    wait_status(hd_b, &moved, "running")?;
    let there = wait_counts(hd_b, &moved, 10)?;
    // The restored shell prints the count after the one it had at the
    // dump, give or take the line in flight.
    let first = there[0];
    ensure!(
        first != 1 && first >= before_checkpoint && first <= at_checkpoint + 2,
        "the imported container starts at {first}; the checkpoint was taken between {before_checkpoint} and {at_checkpoint}"
    );
    check_consecutive(&there, first, 10)?;
    // The source went on running (--leave-running) and counting.
    ensure!(inspect(hd_a, name)?["state"]["status"] == "running");
    hd_b.run(&["rm", "-f", &moved], None)?.ok()?;
    ensure!(!hd_b.root.join("checkpoints").join(&moved).exists());
    Ok(())
}

fn bad_archives_change_nothing(p: &Pair, name: &str) -> Result<()> {
    let (a, hd_a, hd_b) = (p.a, &p.hd_a, &p.hd_b);
    let file = a.dir().join("web.hfa");
    let good = std::fs::read(&file)?;
    // The good archive stays imported under a name, to test a taken name.
    let kept = format!("{name}-kept");
    hd_b.run(
        &[
            "import",
            &file.display().to_string(),
            "--name",
            &kept,
            "--rootfs",
            &p.b.rootfs().display().to_string(),
        ],
        None,
    )?
    .ok()?;
    let before = target_state(hd_b, &p.b)?;

    let bad = |what: &str, bytes: &[u8]| -> Result<PathBuf> {
        let path = a.dir().join(format!("{what}.hfa"));
        std::fs::write(&path, bytes)?;
        Ok(path)
    };
    let truncated = bad("truncated", &good[..good.len() / 2])?;
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    for b in &mut flipped[mid..mid + 64] {
        *b ^= 0x5a;
    }
    let corrupt = bad("corrupt", &flipped)?;
    let garbage = bad("garbage", b"this is not an archive\n")?;
    let escape = a.dir().join("escape.hfa");
    let marker = format!("hf-escape-{}", std::process::id());
    crafted_archive(&escape, &format!("criu/../../{marker}"), 1)?;
    let absolute = a.dir().join("absolute.hfa");
    crafted_archive(&absolute, &format!("/tmp/{marker}"), 1)?;
    let newer = a.dir().join("newer.hfa");
    crafted_archive(&newer, "criu/inventory.img", 99)?;

    let rootfs_b = p.b.rootfs().display().to_string();
    let import = |path: &Path, name: &str| {
        hd_b.run(
            &[
                "import",
                &path.display().to_string(),
                "--name",
                name,
                "--rootfs",
                &rootfs_b,
            ],
            None,
        )
    };
    let fresh = format!("{name}-fresh");
    import(&truncated, &fresh)?.expect_error(125, "invalid argument: archive: corrupt archive")?;
    import(&corrupt, &fresh)?.expect_error(125, "invalid argument: archive: ")?;
    import(&garbage, &fresh)?.expect_error(125, "invalid argument: archive: corrupt archive")?;
    import(&escape, &fresh)?.expect_error(125, "invalid argument: archive: unsafe entry path")?;
    import(&absolute, &fresh)?.expect_error(125, "invalid argument: archive: unsafe entry path")?;
    import(&newer, &fresh)?.expect_error(125, "archive format version 99 is not supported")?;
    import(&file, &kept)?.expect_error(125, "already exists: container")?;
    import(&file, "../x")?.expect_error(125, "invalid argument: name \"../x\"")?;
    hd_b.run(
        &[
            "import",
            &file.display().to_string(),
            "--name",
            &fresh,
            "--rootfs",
            "rel/dir",
        ],
        None,
    )?
    .expect_error(125, "invalid argument: rootfs")?;
    hd_b.run(
        &[
            "import",
            &file.display().to_string(),
            "--name",
            &fresh,
            "--rootfs",
            "/nonexistent/rootfs",
        ],
        None,
    )?
    .expect_error(125, "/nonexistent/rootfs")?;
    for escaped in [
        hd_b.root.join(&marker),
        hd_b.root
            .parent()
            .map(|d| d.join(&marker))
            .unwrap_or_default(),
        PathBuf::from("/tmp").join(&marker),
    ] {
        ensure!(!escaped.exists(), "{} was written", escaped.display());
    }
    let after = target_state(hd_b, &p.b)?;
    ensure!(before == after, "before:\n{before:?}\nafter:\n{after:?}");

    // Export: bad requests, with their codes.
    hd_a.run(&["export", "nosuch", "cp1", "-o", "/tmp/x.hfa"], None)?
        .expect_error(125, "container \"nosuch\" not found")?;
    hd_a.run(&["export", name, "missing", "-o", "/tmp/x.hfa"], None)?
        .expect_error(125, "checkpoint \"missing\" of container")?;
    ensure!(!Path::new("/tmp/x.hfa").exists());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let mut client = hd_a.client().await?;
            let export = |c: &str, cp: &str| ExportRequest {
                container: c.into(),
                checkpoint: cp.into(),
            };
            for (request, want) in [
                (export(name, "../x"), Code::InvalidArgument),
                (export("a/b", "cp1"), Code::InvalidArgument),
                (export("nosuch", "cp1"), Code::NotFound),
                (export(name, "missing"), Code::NotFound),
            ] {
                let what = format!("{request:?}");
                let got = code(client.export(request).await);
                ensure!(got == want, "{what}: {got:?}, expected {want:?}");
            }
            Ok(())
        })?;
    hd_b.run(&["rm", "-f", &kept], None)?.ok()?;
    Ok(())
}

fn export_scenario(cd: &Fixture) -> Result<()> {
    let mut p = Pair::start(cd)?;
    let name = cd.id();
    let result = export_import_restore(&mut p, &name)
        .context("export, import, restore")
        .and_then(|()| bad_archives_change_nothing(&p, &name).context("bad archives"));
    if let Err(e) = result {
        return Err(e.context(p.logs()));
    }
    p.finish(&[&name])
}

#[test]
fn an_exported_checkpoint_imported_into_another_holdfastd_continues_its_count_there() {
    each_version(export_scenario);
}

/// The time of container `name`'s first `action` event on `hd`'s stream.
fn event_time(events: &[holdfast_api::v1::Event], name: &str, action: &str) -> Option<Duration> {
    events
        .iter()
        .find(|e| e.name == name && e.action == action)
        .and_then(|e| e.time)
        .map(|t| Duration::new(t.seconds as u64, t.nanos as u32))
}

/// Migrates `name` to the target; checks it continues there exactly after
/// its last count here; returns the target's view of it.
fn migrate_one(p: &Pair, name: &str, keep: bool) -> Result<serde_json::Value> {
    let (hd_a, hd_b) = (&p.hd_a, &p.hd_b);
    let target = p.target();
    let mut args = vec!["migrate", name, "--to", &target];
    if keep {
        args.push("--keep-source");
    }
    let out = hd_a.run(&args, None)?.ok()?;
    ensure!(out.trim() == name, "{out:?}");
    let view = inspect(hd_b, name)?;
    ensure!(view["state"]["status"] == "running", "{view}");
    let there = wait_counts(hd_b, name, 10)?;
    ensure!(
        there[0] != 1,
        "{name} counts from 1 on the target: it was not restored"
    );
    check_consecutive(&there, there[0], 10)?;
    Ok(view)
}

fn migrate_scenario(cd: &Fixture) -> Result<()> {
    let p = Pair::start(cd)?;
    let names = [cd.id(), cd.id(), cd.id()];
    let result = migrations(&p, &names);
    if let Err(e) = result {
        return Err(e.context(p.logs()));
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    p.finish(&refs)
}

fn migrations(p: &Pair, names: &[String; 3]) -> Result<()> {
    let (hd_a, hd_b) = (&p.hd_a, &p.hd_b);
    let rootfs = p.a.rootfs().display().to_string();
    let [kept, moved, stays] = names;
    for name in names {
        run_counter(hd_a, name, &rootfs)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    // The source's events, to see when it removed the migrated container.
    let mut client = runtime.block_on(hd_a.client())?;
    let mut events = runtime
        .block_on(client.events(EventsRequest::default()))?
        .into_inner();

    // --keep-source: the source stays, stopped at its checkpoint.
    migrate_one(p, kept, true)?;
    let last_here = *counts(hd_a, kept)?.last().context("no counts")?;
    let there = counts(hd_b, kept)?;
    ensure!(
        there[0] == last_here + 1,
        "the target starts at {}, the source stopped at {last_here}",
        there[0]
    );
    let source = inspect(hd_a, kept)?;
    ensure!(source["state"]["status"] == "exited", "{source}");
    let listed = hd_a.run(&["checkpoint", "ls", kept], None)?.ok()?;
    ensure!(listed.lines().count() == 2, "{listed}");
    std::thread::sleep(Duration::from_millis(300));
    ensure!(
        *counts(hd_a, kept)?.last().context("no counts")? == last_here,
        "the kept source went on counting"
    );

    // Without: the source is removed, after the target runs it.
    let before = counts(hd_a, moved)?;
    let view = migrate_one(p, moved, false)?;
    hd_a.run(&["inspect", moved], None)?
        .expect_error(125, "no such container")?;
    ensure!(!hd_a.root.join("checkpoints").join(moved).exists());
    let there = counts(hd_b, moved)?;
    ensure!(
        there[0] > *before.last().context("no counts")?,
        "the target starts at {}, before the source's last count",
        there[0]
    );
    let started = view["state"]["started_at"]
        .as_str()
        .context("no started_at")?
        .to_owned();
    let started =
        time::OffsetDateTime::parse(&started, &time::format_description::well_known::Rfc3339)?;
    let started = Duration::from_nanos(u64::try_from(started.unix_timestamp_nanos())?);
    let seen = runtime.block_on(async {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while event_time(&seen, moved, "remove").is_none() {
            match tokio::time::timeout_at(deadline, events.message()).await {
                Ok(Ok(Some(e))) => seen.push(e),
                _ => bail!("no remove event of {moved}: {seen:?}"),
            }
        }
        Ok(seen)
    })?;
    let removed = event_time(&seen, moved, "remove").context("no remove event")?;
    let migrated = event_time(&seen, moved, "migrate").context("no migrate event")?;
    ensure!(
        started <= migrated && migrated <= removed,
        "the target started it at {started:?}, the source logged the migration at {migrated:?} and removed it at {removed:?}"
    );

    // Refused migrations change nothing: the source runs on, same pid.
    let pid = inspect(hd_a, stays)?["state"]["pid"].clone();
    let target = p.target();
    hd_a.run(&["migrate", stays, "--to", &target, "--name", kept], None)?
        .expect_error(125, "already exists")?;
    hd_a.run(&["migrate", stays, "--to", "tcp://127.0.0.1:1"], None)?
        .expect_error(125, "invalid argument: target")?;
    let nowhere = format!("unix://{}", p.a.dir().join("nowhere.sock").display());
    hd_a.run(&["migrate", stays, "--to", &nowhere], None)?
        .expect_error(125, "cannot reach holdfastd at")?;
    hd_a.run(&["migrate", "nosuch", "--to", &target], None)?
        .expect_error(125, "no such container")?;
    hd_a.run(&["migrate", kept, "--to", &target, "--name", "fresh"], None)?
        .expect_error(125, "is not running")?;
    let now = inspect(hd_a, stays)?;
    ensure!(
        now["state"]["status"] == "running" && now["state"]["pid"] == pid,
        "{now}"
    );
    ensure!(
        hd_a.run(&["checkpoint", "ls", stays], None)?
            .ok()?
            .lines()
            .count()
            == 1,
        "a refused migration left a checkpoint"
    );
    let listed = hd_b.run(&["ps", "-a", "--json"], None)?.ok()?;
    ensure!(
        !listed.contains(stays.as_str()) && !listed.contains("\"fresh\""),
        "{listed}"
    );

    // A target that fails after the source stopped at its checkpoint: the
    // source restores it here, and its count goes on from the checkpoint.
    let imports = hd_b.root.join("imports");
    if imports.exists() {
        std::fs::remove_dir_all(&imports)?;
    }
    std::fs::write(&imports, b"not a folder")?;
    let failed = hd_a.run(&["migrate", stays, "--to", &target], None);
    std::fs::remove_file(&imports)?;
    failed?.expect_error(125, "import")?;
    let back = inspect(hd_a, stays)?;
    ensure!(
        back["state"]["status"] == "running" && back["state"]["pid"] != pid,
        "the source was not restored here after the target failed: {back}"
    );
    let listed = hd_b.run(&["ps", "-a", "--json"], None)?.ok()?;
    ensure!(!listed.contains(stays.as_str()), "{listed}");
    let grown = wait_counts(hd_a, stays, counts(hd_a, stays)?.len() + 3)?;
    check_consecutive(&grown, 1, 3)?;
    Ok(())
}

#[test]
fn migrate_moves_a_running_container_to_another_holdfastd_and_removes_it_here_only_after_it_runs_there(
) {
    each_version(migrate_scenario);
}
