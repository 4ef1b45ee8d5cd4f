use super::*;

#[test]
fn defaults_are_valid_and_documented_values() {
    let o = JournalOptions::default();
    o.validate().unwrap();
    assert_eq!(o.budget_bytes, ByteSize(256 << 20));
    assert_eq!(o.segment_bytes, ByteSize(16 << 20));
    assert_eq!(o.max_segments, 5);
    assert_eq!(o.policy, FullPolicy::Block);
    assert_eq!(o.fsync_interval_ms, 1000);
    assert_eq!(JournalOptions::from_toml_str("").unwrap(), o);
}

#[test]
fn toml_file_accepts_integers_and_human_sizes() {
    let o = JournalOptions::from_toml_str(
        r#"
        dir = "/srv/logs"
        budget_bytes = "64MiB"
        segment_bytes = 1048576
        max_segments = 2
        policy = "drop"
        fsync_interval_ms = 250
        "#,
    )
    .unwrap();
    assert_eq!(o.budget_bytes, ByteSize(64 << 20));
    assert_eq!(o.segment_bytes, ByteSize(1 << 20));
    assert_eq!(o.policy, FullPolicy::Drop);
    let c = o.for_task("k8s.io", "abc-123").unwrap();
    assert_eq!(c.dir, PathBuf::from("/srv/logs/k8s.io/abc-123"));
    assert_eq!(c.fsync_interval, Duration::from_millis(250));
}

#[test]
fn byte_sizes_parse_with_units() {
    assert_eq!(ByteSize::parse("12"), Ok(ByteSize(12)));
    assert_eq!(ByteSize::parse("4 KiB"), Ok(ByteSize(4096)));
    assert_eq!(ByteSize::parse("2Gi"), Ok(ByteSize(2 << 30)));
    assert_eq!(ByteSize::parse("3MB"), Ok(ByteSize(3_000_000)));
    assert!(ByteSize::parse("3 parsecs").is_err());
    assert!(ByteSize::parse("MiB").is_err());
    assert!(ByteSize::parse("99999999999999GiB").is_err());
}

#[test]
fn bad_options_get_errors_naming_the_key() {
    let err = |t: &str| JournalOptions::from_toml_str(t).unwrap_err().to_string();
    assert!(
        err("policy = \"maybe\"").contains("policy"),
        "{}",
        err("policy = \"maybe\"")
    );
    assert!(err("colour = 1").contains("colour"));
    assert!(err("budget_bytes = -5").contains("negative"));
    assert!(err("budget_bytes = \"20MiB\"\nsegment_bytes = \"16MiB\"").contains("budget_bytes"));
    assert!(err("segment_bytes = 100").contains("segment_bytes"));
    assert!(err("dir = \"relative\"").contains("dir"));
    assert!(err("max_record_bytes = 0").contains("max_record_bytes"));
    assert_eq!(FullPolicy::from_name("drop").unwrap(), FullPolicy::Drop);
    assert!(FullPolicy::from_name("Drop").is_err());
}

#[test]
fn task_ids_are_checked_before_building_paths() {
    let o = JournalOptions::default();
    for bad in ["..", ".", "", "a/b", "x y", &"a".repeat(77)] {
        assert!(o.for_task("default", bad).is_err(), "{bad:?}");
        assert!(o.for_task(bad, "id").is_err(), "{bad:?}");
    }
    assert!(o.for_task("default", &"a".repeat(76)).is_ok());
}
