use std::sync::Arc;

use holdfast_api::v1::{
    ContainerSpec, ContainerState, ContainerStatus, RestartPolicy, RestartPolicyKind,
};
use prost_types::Timestamp;

use super::*;

fn container(name: &str) -> Container {
    Container {
        spec: Some(ContainerSpec {
            name: name.into(),
            image: "docker.io/library/alpine:3".into(),
            command: vec!["sleep".into(), "inf".into()],
            env: vec!["A=1".into()],
            restart: Some(RestartPolicy {
                kind: RestartPolicyKind::Always as i32,
                max_retries: 0,
            }),
            stop_timeout_seconds: 20,
            ..Default::default()
        }),
        state: Some(ContainerState {
            status: ContainerStatus::Running as i32,
            pid: 4242,
            restart_count: 2,
            ..Default::default()
        }),
        created_at: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        }),
        log_dir: format!("/var/lib/holdfast/logs/holdfast/{name}"),
    }
}

fn ok(loaded: Option<Loaded>) -> Container {
    match loaded {
        Some(Loaded::Ok(c)) => c,
        other => panic!("expected a loaded record, got {other:?}"),
    }
}

/// Writes a raw value for `name` through redb directly.
fn write_raw(path: &Path, name: &str, raw: &[u8]) {
    let db = Database::create(path).unwrap();
    let tx = db.begin_write().unwrap();
    tx.open_table(CONTAINERS)
        .unwrap()
        .insert(name, raw)
        .unwrap();
    tx.commit().unwrap();
}

#[test]
fn records_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_in_root(&dir.path().join("root")).unwrap();
    assert_eq!(store.path(), dir.path().join("root").join(DB_FILE));
    assert_eq!(store.get("web").unwrap(), None);

    let web = container("web");
    store.put(&web).unwrap();
    assert_eq!(ok(store.get("web").unwrap()), web);

    let mut changed = web.clone();
    if let Some(state) = changed.state.as_mut() {
        state.status = ContainerStatus::Exited as i32;
        state.exit_code = 3;
    }
    store.put(&changed).unwrap();
    assert_eq!(ok(store.get("web").unwrap()), changed);

    store.put(&container("db")).unwrap();
    let names: Vec<String> = store
        .load_all()
        .unwrap()
        .iter()
        .map(|l| l.name().to_owned())
        .collect();
    assert_eq!(names, ["db", "web"]);

    assert!(store.delete("web").unwrap());
    assert!(!store.delete("web").unwrap());
    assert_eq!(store.get("web").unwrap(), None);
    assert_eq!(store.load_all().unwrap().len(), 1);
}

#[test]
fn put_refuses_a_record_without_a_valid_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join(DB_FILE)).unwrap();
    let mut c = container("web");
    c.spec = None;
    assert!(matches!(store.put(&c), Err(Error::Invalid { .. })));
    let c = container("a/b");
    assert!(matches!(store.put(&c), Err(Error::Invalid { .. })));
    assert!(store.load_all().unwrap().is_empty());
}

#[test]
fn records_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    {
        let store = Store::open(&path).unwrap();
        store.put(&container("web")).unwrap();
        store.put(&container("db")).unwrap();
        store.delete("db").unwrap();
    }
    let store = Store::open(&path).unwrap();
    let all = store.load_all().unwrap();
    assert_eq!(all, [Loaded::Ok(container("web"))]);
}

#[test]
fn a_corrupted_record_is_quarantined_while_the_others_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    {
        let store = Store::open(&path).unwrap();
        store.put(&container("a")).unwrap();
        store.put(&container("c")).unwrap();
    }
    let garbage = [0xff_u8, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02];
    write_raw(&path, "b", &garbage);
    let store = Store::open(&path).unwrap();

    let all = store.load_all().unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0], Loaded::Ok(container("a")));
    assert_eq!(all[2], Loaded::Ok(container("c")));
    match &all[1] {
        Loaded::Quarantined {
            name,
            reason,
            raw_len,
        } => {
            assert_eq!(name, "b");
            assert!(reason.starts_with("cannot decode"), "{reason}");
            assert_eq!(*raw_len, garbage.len());
        }
        other => panic!("expected quarantine, got {other:?}"),
    }
    assert_eq!(all[1].name(), "b");
    assert_eq!(store.names().unwrap(), ["a", "b", "c"]);
    // Kept untouched: loading again sees it again.
    assert_eq!(store.load_all().unwrap()[1], all[1]);
    assert!(matches!(
        store.get("b").unwrap(),
        Some(Loaded::Quarantined { .. })
    ));
    // Removable.
    assert!(store.delete("b").unwrap());
    assert_eq!(store.load_all().unwrap().len(), 2);
}

#[test]
fn records_with_an_invalid_or_mismatched_spec_are_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    drop(Store::open(&path).unwrap());

    let mut bad_spec = container("bad");
    if let Some(spec) = bad_spec.spec.as_mut() {
        spec.image.clear();
    }
    let mut no_spec = container("nospec");
    no_spec.spec = None;
    write_raw(&path, "bad", &bad_spec.encode_to_vec());
    write_raw(&path, "nospec", &no_spec.encode_to_vec());
    write_raw(&path, "other", &container("web").encode_to_vec());
    write_raw(&path, "empty", &[]);

    let store = Store::open(&path).unwrap();
    let reasons: Vec<(String, String)> = store
        .load_all()
        .unwrap()
        .into_iter()
        .map(|l| match l {
            Loaded::Quarantined { name, reason, .. } => (name, reason),
            Loaded::Ok(c) => panic!("loaded {c:?}"),
        })
        .collect();
    assert_eq!(reasons.len(), 4);
    assert_eq!(reasons[0].0, "bad");
    assert!(
        reasons[0].1.contains("invalid spec: image/rootfs"),
        "{reasons:?}"
    );
    assert_eq!(reasons[1].0, "empty");
    assert!(reasons[1].1.contains("no spec"), "{reasons:?}");
    assert_eq!(reasons[2].0, "nospec");
    assert!(reasons[2].1.contains("no spec"), "{reasons:?}");
    assert_eq!(reasons[3].0, "other");
    assert!(reasons[3].1.contains("not its key"), "{reasons:?}");
}

#[test]
fn a_new_database_gets_the_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    drop(Store::open(&path).unwrap());
    let db = Database::create(&path).unwrap();
    let tx = db.begin_read().unwrap();
    let meta = tx.open_table(META).unwrap();
    assert_eq!(
        meta.get(SCHEMA_KEY).unwrap().map(|v| v.value()),
        Some(SCHEMA_VERSION)
    );
}

#[test]
fn a_database_from_a_newer_holdfastd_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    {
        let store = Store::open(&path).unwrap();
        store.put(&container("web")).unwrap();
    }
    {
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert(SCHEMA_KEY, SCHEMA_VERSION + 1)
            .unwrap();
        tx.commit().unwrap();
    }
    match Store::open(&path) {
        Err(e @ Error::SchemaTooNew { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("schema version 2 is newer"), "{msg}");
            assert_eq!(
                tonic::Status::from(e).code(),
                tonic::Code::FailedPrecondition
            );
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    // Refusing changed nothing.
    let db = Database::create(&path).unwrap();
    let tx = db.begin_read().unwrap();
    assert_eq!(
        tx.open_table(META)
            .unwrap()
            .get(SCHEMA_KEY)
            .unwrap()
            .map(|v| v.value()),
        Some(SCHEMA_VERSION + 1)
    );
    assert!(tx
        .open_table(CONTAINERS)
        .unwrap()
        .get("web")
        .unwrap()
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_used_from_tokio_through_spawn_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join(DB_FILE)).unwrap());
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = Arc::clone(&store);
        tasks.push(tokio::task::spawn_blocking(move || {
            let name = format!("c{i:02}");
            store.put(&container(&name))?;
            if i % 4 == 0 {
                store.delete(&name)?;
            }
            store.load_all().map(|all| all.len())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let all = tokio::task::spawn_blocking(move || store.load_all())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(all.len(), 12);
    assert!(all.iter().all(|l| matches!(l, Loaded::Ok(_))));
}

/// The writer half of `a_kill_9_mid_write_leaves_whole_records`: run in a
/// child process, it writes records until it is killed.
#[test]
#[ignore = "run by a_kill_9_mid_write_leaves_whole_records in a child process"]
fn crash_writer() {
    let Some(dir) = std::env::var_os("HOLDFAST_CRASH_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let store = Store::open(&dir.join(DB_FILE)).unwrap();
    for i in 0.. {
        let mut c = container(&format!("c{}", i % 50));
        c.log_dir = "x".repeat(i % 4096);
        store.put(&c).unwrap();
        std::fs::write(dir.join("progress.tmp"), i.to_string()).unwrap();
        std::fs::rename(dir.join("progress.tmp"), dir.join("progress")).unwrap();
    }
}

#[test]
fn a_kill_9_mid_write_leaves_whole_records() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::tests::crash_writer",
            "--ignored",
            "--nocapture",
        ])
        .env("HOLDFAST_CRASH_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let progress = || -> u64 {
        std::fs::read_to_string(dir.path().join("progress"))
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    while progress() < 60 {
        assert!(Instant::now() < deadline, "the writer made no progress");
        assert!(child.try_wait().unwrap().is_none(), "the writer exited");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let store = Store::open(&dir.path().join(DB_FILE)).unwrap();
    let all = store.load_all().unwrap();
    assert_eq!(all.len(), 50, "every name was written at least once");
    for loaded in &all {
        match loaded {
            Loaded::Ok(c) => assert!(c.log_dir.bytes().all(|b| b == b'x')),
            other => panic!("torn record: {other:?}"),
        }
    }
}
