use super::*;
use holdfast_api::v1::{Mount as ApiMount, Resources};
use oci_spec::runtime::LinuxNamespaceType;

fn declared() -> ContainerSpec {
    ContainerSpec {
        name: "web".into(),
        rootfs: "/srv/rootfs".into(),
        command: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
        ..Default::default()
    }
}

fn opts() -> SpecOptions {
    SpecOptions::new("holdfast")
}

#[test]
fn a_rootfs_container_gets_its_command_the_default_path_and_root_cwd() {
    let spec = build(&declared(), None, &opts()).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(
        p.args().as_ref().unwrap(),
        &vec!["/bin/sh", "-c", "echo hi"]
    );
    assert_eq!(p.env().as_ref().unwrap(), &vec![DEFAULT_PATH.to_string()]);
    assert_eq!(p.cwd(), Path::new("/"));
    assert_eq!(p.terminal(), Some(false));
    assert_eq!(spec.root().as_ref().unwrap().path(), Path::new("rootfs"));
    assert_eq!(spec.hostname().as_deref(), Some("web"));
}

#[test]
fn the_namespaces_are_pid_ipc_uts_mount_and_the_network_is_the_hosts() {
    let spec = build(&declared(), None, &opts()).unwrap();
    let ns: Vec<LinuxNamespaceType> = spec
        .linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    assert_eq!(
        ns,
        vec![
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Mount
        ]
    );
}

#[test]
fn the_standard_mounts_masked_paths_and_docker_capabilities_are_set() {
    let spec = build(&declared(), None, &opts()).unwrap();
    let dests: Vec<String> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.destination().display().to_string())
        .collect();
    for d in [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
    ] {
        assert!(dests.iter().any(|x| x == d), "{d} missing from {dests:?}");
    }
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux
        .masked_paths()
        .as_ref()
        .unwrap()
        .contains(&"/proc/kcore".to_string()));
    assert!(linux
        .readonly_paths()
        .as_ref()
        .unwrap()
        .contains(&"/proc/sys".to_string()));
    let caps = spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .as_ref()
        .unwrap();
    let bounding = caps.bounding().as_ref().unwrap();
    assert_eq!(bounding.len(), 14);
    assert!(bounding.contains(&Capability::NetBindService));
    assert!(!bounding.contains(&Capability::SysAdmin));
}

#[test]
fn bind_mounts_resources_and_the_cgroup_path_follow_the_declaration() {
    let mut d = declared();
    d.mounts = vec![ApiMount {
        source: "/data".into(),
        destination: "/var/data".into(),
        read_only: true,
    }];
    d.resources = Some(Resources {
        memory_bytes: 64 << 20,
        cpus: 1.5,
        pids_limit: 100,
    });
    let spec = build(&d, None, &opts()).unwrap();
    let m = spec.mounts().as_ref().unwrap().last().unwrap().clone();
    assert_eq!(m.destination(), Path::new("/var/data"));
    assert_eq!(m.source().as_deref(), Some(Path::new("/data")));
    assert_eq!(m.typ().as_deref(), Some("bind"));
    assert!(m.options().as_ref().unwrap().contains(&"ro".to_string()));

    let linux = spec.linux().as_ref().unwrap();
    let r = linux.resources().as_ref().unwrap();
    assert_eq!(r.memory().unwrap().limit(), Some(64 << 20));
    assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(150_000));
    assert_eq!(r.cpu().as_ref().unwrap().period(), Some(CPU_PERIOD_US));
    assert_eq!(r.pids().unwrap().limit(), 100);
    assert_eq!(
        linux.cgroups_path().as_deref(),
        Some(Path::new("/holdfast/web"))
    );

    let mut o = opts();
    o.cgroup_parent = Some("/machine/".into());
    let spec = build(&d, None, &o).unwrap();
    assert_eq!(
        spec.linux().as_ref().unwrap().cgroups_path().as_deref(),
        Some(Path::new("/machine/web"))
    );
}

#[test]
fn the_image_config_supplies_defaults_that_the_declaration_overrides() {
    let image = ImageConfig::from_json(
        br#"{"architecture":"amd64","config":{"Entrypoint":["/entry"],"Cmd":["serve"],
            "Env":["PATH=/opt/bin","A=image"],"WorkingDir":"/app","User":"1000:1000",
            "StopSignal":"SIGQUIT"}}"#,
    )
    .unwrap();
    let mut d = declared();
    d.command = vec![];
    d.env = vec!["A=user".into(), "B=2".into()];
    let spec = build(&d, Some(&image), &opts()).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.args().as_ref().unwrap(), &vec!["/entry", "serve"]);
    assert_eq!(
        p.env().as_ref().unwrap(),
        &vec!["PATH=/opt/bin", "A=user", "B=2"]
    );
    assert_eq!(p.cwd(), Path::new("/app"));
    assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));

    d.command = vec!["migrate".into()];
    d.working_dir = "/tmp".into();
    let spec = build(&d, Some(&image), &opts()).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.args().as_ref().unwrap(), &vec!["/entry", "migrate"]);
    assert_eq!(p.cwd(), Path::new("/tmp"));

    let labels = container_labels(&d, Some(&image));
    assert_eq!(
        labels.get(STOP_SIGNAL_LABEL).map(String::as_str),
        Some("SIGQUIT")
    );
    assert_eq!(labels.get(MANAGED_LABEL).map(String::as_str), Some("true"));
}

#[test]
fn a_tty_gets_a_terminal_and_term() {
    let mut d = declared();
    d.tty = true;
    let spec = build(&d, None, &opts()).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.terminal(), Some(true));
    assert!(p
        .env()
        .as_ref()
        .unwrap()
        .contains(&"TERM=xterm".to_string()));
}

#[test]
fn bad_declarations_name_the_field_and_never_echo_env_values() {
    let mut d = declared();
    d.command = vec![];
    assert!(build(&d, None, &opts())
        .unwrap_err()
        .to_string()
        .contains("command"));

    let mut d = declared();
    d.env = vec!["SECRET".into()];
    let e = build(&d, None, &opts()).unwrap_err().to_string();
    assert!(e.contains("env") && !e.contains("SECRET"), "{e}");

    let mut d = declared();
    d.mounts = vec![ApiMount {
        source: "rel".into(),
        destination: "/x".into(),
        read_only: false,
    }];
    assert!(build(&d, None, &opts())
        .unwrap_err()
        .to_string()
        .contains("mounts[0].source"));

    let mut d = declared();
    d.working_dir = "tmp".into();
    assert!(build(&d, None, &opts())
        .unwrap_err()
        .to_string()
        .contains("working_dir"));

    let image = ImageConfig {
        user: Some("nobody".into()),
        ..Default::default()
    };
    assert!(build(&declared(), Some(&image), &opts())
        .unwrap_err()
        .to_string()
        .contains("user"));
}

#[test]
fn the_spec_serializes_to_the_json_containerd_stores() {
    let spec = build(&declared(), None, &opts()).unwrap();
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["root"]["path"], "rootfs");
    assert_eq!(json["linux"]["cgroupsPath"], "/holdfast/web");
    assert!(json["process"]["capabilities"]["bounding"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "CAP_KILL"));
}
