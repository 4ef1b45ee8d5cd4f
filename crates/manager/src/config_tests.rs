use super::*;
use holdfast_journal::{ByteSize, FullPolicy};

fn parse(text: &str) -> Result<Config> {
    Config::from_toml_str(text, Path::new("/etc/holdfast/holdfastd.toml"))
}

fn config_error_key(text: &str) -> String {
    match parse(text) {
        Err(Error::Config { key, .. }) => key,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn an_empty_file_gives_the_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.root, Path::new("/var/lib/holdfast"));
    assert_eq!(c.socket, Path::new("/run/holdfast/holdfastd.sock"));
    assert_eq!(
        c.containerd.address,
        Path::new("/run/containerd/containerd.sock")
    );
    assert_eq!(c.containerd.namespace, "holdfast");
    assert!(c.live_restore);
    assert_eq!(c.shutdown_timeout, None);
    assert_eq!(c.log, JournalOptions::default());
    assert_eq!(c.log_level, LogLevel::Info);
}

#[test]
fn every_key_is_read() {
    let c = parse(
        r#"
        root = "/srv/holdfast"
        socket = "/run/h.sock"
        live_restore = false
        shutdown_timeout = 30
        log_level = "debug"

        [containerd]
        address = "/run/k3s/containerd.sock"
        namespace = "hf-test.1"

        [log]
        budget_bytes = "64MiB"
        segment_bytes = "8MiB"
        max_segments = 3
        policy = "drop"
        "#,
    )
    .unwrap();
    assert_eq!(c.root, Path::new("/srv/holdfast"));
    assert_eq!(c.socket, Path::new("/run/h.sock"));
    assert!(!c.live_restore);
    assert_eq!(c.shutdown_timeout, Some(30));
    assert_eq!(c.log_level, LogLevel::Debug);
    assert_eq!(c.log_level.as_tracing(), tracing::Level::DEBUG);
    assert_eq!(c.log_level.to_string(), "debug");
    assert_eq!(c.containerd.address, Path::new("/run/k3s/containerd.sock"));
    assert_eq!(c.containerd.namespace, "hf-test.1");
    assert_eq!(c.log.budget_bytes, ByteSize(64 << 20));
    assert_eq!(c.log.segment_bytes, ByteSize(8 << 20));
    assert_eq!(c.log.max_segments, 3);
    assert_eq!(c.log.policy, FullPolicy::Drop);
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    for (text, key) in [
        ("roots = \"/x\"", "roots"),
        ("[containerd]\nadress = \"/x\"", "adress"),
        ("[log]\nbudget = 5", "budget"),
    ] {
        match parse(text) {
            Err(e @ Error::ConfigParse { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(key), "{msg}");
                assert!(msg.starts_with("config /etc/holdfast/holdfastd.toml: "));
            }
            other => panic!("{text}: expected a parse error, got {other:?}"),
        }
    }
}

#[test]
fn bad_types_and_levels_are_parse_errors() {
    for text in [
        "live_restore = \"yes\"",
        "shutdown_timeout = -1",
        "log_level = \"loud\"",
    ] {
        assert!(
            matches!(parse(text), Err(Error::ConfigParse { .. })),
            "{text}"
        );
    }
}

#[test]
fn invalid_values_name_their_key() {
    let cases = [
        ("root = \"var/lib\"", "root"),
        ("socket = \"h.sock\"", "socket"),
        ("[containerd]\naddress = \"c.sock\"", "containerd.address"),
        ("[containerd]\nnamespace = \"\"", "containerd.namespace"),
        ("[containerd]\nnamespace = \"a/b\"", "containerd.namespace"),
        ("[containerd]\nnamespace = \"-a\"", "containerd.namespace"),
        ("[containerd]\nnamespace = \"a..b\"", "containerd.namespace"),
        ("[log]\nsegment_bytes = 10", "log"),
        ("[log]\ndir = \"logs\"", "log"),
    ];
    for (text, key) in cases {
        assert_eq!(config_error_key(text), key, "{text}");
    }
    let long = format!("[containerd]\nnamespace = \"{}\"", "a".repeat(77));
    assert_eq!(config_error_key(&long), "containerd.namespace");
    let msg = parse("[log]\nsegment_bytes = 10").unwrap_err().to_string();
    assert!(msg.contains("segment_bytes"), "{msg}");
}

#[test]
fn a_missing_default_file_means_defaults_but_a_given_one_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.toml");
    assert!(matches!(
        Config::load(Some(&missing)),
        Err(Error::Io { .. })
    ));
    let file = dir.path().join("h.toml");
    std::fs::write(&file, "live_restore = false\n").unwrap();
    assert!(!Config::load(Some(&file)).unwrap().live_restore);
    if !Path::new(DEFAULT_CONFIG_PATH).exists() {
        assert_eq!(Config::load(None).unwrap(), Config::default());
    }
}

#[test]
fn reload_applies_live_keys_and_lists_the_others() {
    let current = Config::default();
    let new = parse(
        r#"
        root = "/srv/h"
        socket = "/run/other.sock"
        live_restore = false
        log_level = "trace"
        shutdown_timeout = 9
        [containerd]
        address = "/run/c.sock"
        namespace = "other"
        [log]
        max_segments = 2
        dir = "/srv/logs"
        "#,
    )
    .unwrap();
    let r = reload(&current, new.clone());
    assert_eq!(
        r.applied,
        ["live_restore", "shutdown_timeout", "log_level", "log"]
    );
    assert_eq!(
        r.needs_restart,
        [
            "log.dir",
            "root",
            "socket",
            "containerd.address",
            "containerd.namespace"
        ]
    );
    assert!(!r.config.live_restore);
    assert_eq!(r.config.log_level, LogLevel::Trace);
    assert_eq!(r.config.shutdown_timeout, Some(9));
    assert_eq!(r.config.log.max_segments, 2);
    assert_eq!(r.config.log.dir, current.log.dir);
    assert_eq!(r.config.root, current.root);
    assert_eq!(r.config.socket, current.socket);
    assert_eq!(r.config.containerd, current.containerd);

    let same = reload(&current, current.clone());
    assert!(same.applied.is_empty() && same.needs_restart.is_empty());
    assert_eq!(same.config, current);
}
