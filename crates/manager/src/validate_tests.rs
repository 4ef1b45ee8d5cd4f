use super::*;
use holdfast_api::v1::{Mount, Resources, RestartPolicy};

fn image_spec(name: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: "docker.io/library/alpine:3".into(),
        ..Default::default()
    }
}

fn rootfs_spec(rootfs: &str) -> ContainerSpec {
    ContainerSpec {
        name: "web".into(),
        rootfs: rootfs.into(),
        command: vec!["/bin/sh".into()],
        ..Default::default()
    }
}

fn invalid_message(spec: &ContainerSpec) -> String {
    match validate_spec_fields(spec) {
        Err(err @ Error::Invalid { .. }) => err.to_string(),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn restart(kind: RestartPolicyKind, max_retries: u32) -> Option<RestartPolicy> {
    Some(RestartPolicy {
        kind: kind as i32,
        max_retries,
    })
}

#[test]
fn a_minimal_image_spec_is_valid() {
    assert!(validate_spec(&image_spec("web")).is_ok());
}

#[test]
fn good_names_pass() {
    for name in ["a", "A9", "web-1", "web_1.v2", "0abc", &"x".repeat(128)] {
        assert!(validate_name(name).is_ok(), "{name}");
    }
}

#[test]
fn bad_names_are_rejected_with_a_message_naming_the_field() {
    let long = "x".repeat(129);
    let cases: &[(&str, &str)] = &[
        ("", "must not be empty"),
        ("a/b", "must not contain '/'"),
        ("..", "must start with a letter or a digit"),
        ("a\0b", "NUL"),
        (".hidden", "must start with a letter or a digit"),
        ("-x", "must start with a letter or a digit"),
        ("a b", "character ' ' is not allowed"),
        ("é", "must start with a letter or a digit"),
        (&long, "longer than 128"),
    ];
    for (name, want) in cases {
        let msg = match validate_name(name) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("{name:?} accepted"),
        };
        assert!(msg.starts_with(&format!("name {name:?}: ")), "{msg}");
        assert!(msg.contains(want), "{msg} lacks {want}");
    }
}

#[test]
fn checkpoint_names_follow_the_same_rules_and_name_their_field() {
    assert!(validate_checkpoint_name("cp-20250101T000000.000Z").is_ok());
    for name in ["../x", "..", "a/b", "", ".x", "x y"] {
        let msg = match validate_checkpoint_name(name) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("{name:?} accepted"),
        };
        assert!(msg.starts_with(&format!("checkpoint {name:?}: ")), "{msg}");
    }
}

#[test]
fn exactly_one_of_image_and_rootfs() {
    let mut spec = image_spec("web");
    spec.image.clear();
    assert!(invalid_message(&spec).contains("one of them is required"));
    let mut spec = image_spec("web");
    spec.rootfs = "/".into();
    spec.command = vec!["/bin/true".into()];
    assert!(invalid_message(&spec).contains("not both"));
}

#[test]
fn a_rootfs_must_be_an_existing_absolute_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    assert!(validate_spec(&rootfs_spec(root)).is_ok());

    assert!(invalid_message(&rootfs_spec("rel/path")).contains("absolute"));
    assert!(invalid_message(&rootfs_spec("/a/../b")).contains(".."));

    let missing = dir.path().join("missing");
    match validate_spec(&rootfs_spec(missing.to_str().unwrap())) {
        Err(Error::NotFound { what }) => assert!(what.starts_with("rootfs "), "{what}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    match validate_spec(&rootfs_spec(file.to_str().unwrap())) {
        Err(e @ Error::Invalid { .. }) => assert!(e.to_string().contains("not a folder")),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn a_rootfs_needs_a_command_but_an_image_does_not() {
    let mut spec = rootfs_spec("/");
    spec.command.clear();
    assert!(invalid_message(&spec).starts_with("command: "));
    assert!(validate_spec_fields(&image_spec("web")).is_ok());
    let mut spec = image_spec("web");
    spec.command = vec![String::new()];
    assert!(invalid_message(&spec).starts_with("command[0]: "));
}

#[test]
fn env_entries_are_checked_without_showing_values() {
    let mut spec = image_spec("web");
    spec.env = vec!["A=1".into(), "EMPTY=".into(), "B=x=y".into()];
    assert!(validate_spec_fields(&spec).is_ok());
    for (entry, want) in [
        ("SECRET_ONLY", "KEY=VALUE"),
        ("=hunter2", "key is empty"),
        ("K=hunter2\0", "NUL"),
    ] {
        spec.env = vec!["A=1".into(), entry.into()];
        let msg = invalid_message(&spec);
        assert!(msg.starts_with("env[1]: "), "{msg}");
        assert!(msg.contains(want), "{msg}");
        assert!(!msg.contains("hunter2"), "value leaked: {msg}");
        assert!(!msg.contains("SECRET_ONLY"), "entry leaked: {msg}");
    }
}

#[test]
fn mounts_need_absolute_paths() {
    let mut spec = image_spec("web");
    spec.mounts = vec![Mount {
        source: "/srv/data".into(),
        destination: "/data".into(),
        read_only: true,
    }];
    assert!(validate_spec_fields(&spec).is_ok());
    spec.mounts[0].destination = "data".into();
    assert!(invalid_message(&spec).starts_with("mounts[0].destination \"data\": "));
    spec.mounts[0].destination = "/data".into();
    spec.mounts[0].source = "./x".into();
    assert!(invalid_message(&spec).starts_with("mounts[0].source"));
}

#[test]
fn working_dir_must_be_absolute() {
    let mut spec = image_spec("web");
    spec.working_dir = "/app".into();
    assert!(validate_spec_fields(&spec).is_ok());
    spec.working_dir = "app".into();
    assert!(invalid_message(&spec).starts_with("working_dir"));
}

#[test]
fn label_keys_must_not_be_empty() {
    let mut spec = image_spec("web");
    spec.labels.insert("team".into(), "a".into());
    spec.labels.insert("empty-value".into(), String::new());
    assert!(validate_spec_fields(&spec).is_ok());
    spec.labels.insert(String::new(), "x".into());
    assert!(invalid_message(&spec).starts_with("labels: "));
}

#[test]
fn resources_must_not_be_negative() {
    let ok = Resources {
        memory_bytes: 1 << 20,
        cpus: 1.5,
        pids_limit: 100,
    };
    let mut spec = image_spec("web");
    spec.resources = Some(ok);
    assert!(validate_spec_fields(&spec).is_ok());
    let bad = [
        (
            Resources {
                memory_bytes: -1,
                ..ok
            },
            "resources.memory_bytes -1",
        ),
        (Resources { cpus: -0.5, ..ok }, "resources.cpus -0.5"),
        (
            Resources {
                cpus: f64::NAN,
                ..ok
            },
            "resources.cpus NaN",
        ),
        (
            Resources {
                pids_limit: -1,
                ..ok
            },
            "resources.pids_limit -1",
        ),
    ];
    for (r, want) in bad {
        spec.resources = Some(r);
        let msg = invalid_message(&spec);
        assert!(msg.starts_with(want), "{msg}");
    }
}

#[test]
fn restart_policies_and_auto_remove() {
    use RestartPolicyKind::*;
    let mut spec = image_spec("web");
    for kind in [Unspecified, No, OnFailure, Always, UnlessStopped] {
        spec.restart = restart(kind, 0);
        assert!(validate_spec_fields(&spec).is_ok(), "{kind:?}");
    }
    spec.restart = restart(OnFailure, 3);
    assert!(validate_spec_fields(&spec).is_ok());
    spec.restart = restart(Always, 3);
    assert!(invalid_message(&spec).starts_with("restart.max_retries"));
    spec.restart = Some(RestartPolicy {
        kind: 42,
        max_retries: 0,
    });
    assert!(invalid_message(&spec).starts_with("restart.kind 42"));

    spec.auto_remove = true;
    for kind in [Unspecified, No] {
        spec.restart = restart(kind, 0);
        assert!(validate_spec_fields(&spec).is_ok(), "{kind:?}");
    }
    spec.restart = None;
    assert!(validate_spec_fields(&spec).is_ok());
    for kind in [OnFailure, Always, UnlessStopped] {
        spec.restart = restart(kind, 0);
        let msg = invalid_message(&spec);
        assert!(msg.starts_with("auto_remove: "), "{msg}");
        assert!(msg.contains(restart_kind_name(kind)), "{msg}");
    }
}

#[test]
fn stop_timeout_and_signal() {
    let mut spec = image_spec("web");
    for t in [-1, 0, 10, 3600] {
        spec.stop_timeout_seconds = t;
        assert!(validate_spec_fields(&spec).is_ok(), "{t}");
    }
    spec.stop_timeout_seconds = -2;
    assert!(invalid_message(&spec).starts_with("stop_timeout_seconds -2"));
    spec.stop_timeout_seconds = 0;
    for s in ["", "SIGTERM", "TERM", "sigquit", "9", "SIGRTMIN+2"] {
        spec.stop_signal = s.into();
        assert!(validate_spec_fields(&spec).is_ok(), "{s}");
    }
    spec.stop_signal = "SIGNOPE".into();
    assert!(invalid_message(&spec).starts_with("stop_signal \"SIGNOPE\""));
}

#[test]
fn a_checkpoint_schedule_is_part_of_the_spec_check() {
    let mut spec = image_spec("web");
    spec.checkpoint_schedule = Some(holdfast_api::v1::CheckpointSchedule {
        every: "10m".into(),
        keep: 3,
    });
    assert!(validate_spec_fields(&spec).is_ok());
    spec.checkpoint_schedule = Some(holdfast_api::v1::CheckpointSchedule {
        every: "100ms".into(),
        keep: 3,
    });
    assert!(invalid_message(&spec).starts_with(
        "checkpoint_schedule.every (--checkpoint-every) \"100ms\": must be at least 1s"
    ));
}

#[test]
fn signals_parse_by_name_and_number() {
    let ok: &[(&str, i32)] = &[
        ("SIGTERM", 15),
        ("TERM", 15),
        ("term", 15),
        ("SigKill", 9),
        ("HUP", 1),
        ("SIGUSR1", 10),
        ("SIGWINCH", 28),
        ("1", 1),
        ("15", 15),
        ("64", 64),
        (" 9 ", 9),
        ("RTMIN", 34),
        ("SIGRTMIN+3", 37),
        ("RTMAX", 64),
        ("SIGRTMAX-4", 60),
    ];
    for (s, n) in ok {
        assert_eq!(parse_signal(s).unwrap(), *n, "{s}");
    }
    for s in [
        "", "0", "65", "-9", "SIG", "NOPE", "SIGTERMX", "RTMIN+40", "RTMAX+1", "RTMIN-1", "RTMINx",
    ] {
        match parse_signal(s) {
            Err(e) => assert!(e.to_string().starts_with("signal "), "{e}"),
            Ok(n) => panic!("{s:?} parsed as {n}"),
        }
    }
}
