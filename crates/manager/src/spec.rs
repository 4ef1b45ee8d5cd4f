//! Builds the OCI runtime spec of a container from what the user declared
//! (`holdfast.v1.ContainerSpec`) and, for an image, the image's config.
//!
//! The result follows containerd's `oci.WithDefaultSpec` for Linux: pid,
//! ipc, uts and mount namespaces, the standard mounts, Docker's default
//! capabilities, masked and read-only `/proc` paths, a deny-all device
//! cgroup (runc adds the standard devices back).
//!
//! Networking: v1 containers share the host's network namespace (no
//! network namespace in the spec, no CNI), so they see the host's
//! interfaces and ports; `/etc/hosts` and `/etc/resolv.conf` are the
//! rootfs's own.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use holdfast_api::v1::ContainerSpec;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use serde::Deserialize;

/// The label on every containerd container holdfastd creates.
pub const MANAGED_LABEL: &str = "io.holdfast.managed";
/// The label keeping a container's stop signal (e.g. `SIGTERM`).
pub const STOP_SIGNAL_LABEL: &str = "io.holdfast.stop-signal";
/// The `PATH` a process gets when neither the image nor the user sets one.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The CFS period used to turn `cpus` into a quota, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Why a spec could not be built. Messages name the field.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A declared value is not acceptable.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field, as in `holdfast.v1.ContainerSpec` (e.g. `mounts[0].source`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The image's config JSON could not be parsed.
    #[error("image config: {0}")]
    ImageConfig(#[from] serde_json::Error),
    /// oci-spec refused a value.
    #[error("oci spec: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The parts of an image's config (`application/vnd.oci.image.config.v1+json`)
/// a container's process takes its defaults from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ImageConfig {
    /// `Entrypoint`.
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`.
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    /// `Env`, K=V.
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    /// `WorkingDir`.
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    /// `User`: `uid[:gid]` (names other than `root` are not resolved in v1).
    #[serde(rename = "User", default)]
    pub user: Option<String>,
    /// `StopSignal`.
    #[serde(rename = "StopSignal", default)]
    pub stop_signal: Option<String>,
}

#[derive(Deserialize)]
struct ImageConfigFile {
    #[serde(default)]
    config: Option<ImageConfig>,
}

impl ImageConfig {
    /// Parses an image config blob (the whole JSON document; its `config`
    /// object holds the process defaults).
    pub fn from_json(bytes: &[u8]) -> Result<ImageConfig, Error> {
        let file: ImageConfigFile = serde_json::from_slice(bytes)?;
        Ok(file.config.unwrap_or_default())
    }
}

/// Host-side choices that are not part of the user's declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecOptions {
    /// The containerd namespace (the default cgroup parent is `/<namespace>`).
    pub namespace: String,
    /// The cgroup parent; `None`: `/<namespace>`. The container's cgroup is
    /// `<parent>/<name>`.
    pub cgroup_parent: Option<String>,
}

impl SpecOptions {
    /// Options for `namespace` with the default cgroup parent.
    pub fn new(namespace: impl Into<String>) -> SpecOptions {
        SpecOptions {
            namespace: namespace.into(),
            cgroup_parent: None,
        }
    }

    /// The cgroups path of container `name`.
    pub fn cgroups_path(&self, name: &str) -> PathBuf {
        let parent = match &self.cgroup_parent {
            Some(p) => p.trim_end_matches('/').to_string(),
            None => format!("/{}", self.namespace),
        };
        PathBuf::from(format!("{parent}/{name}"))
    }
}

/// The labels of the containerd container: the user's, [`MANAGED_LABEL`]
/// and [`STOP_SIGNAL_LABEL`] (the declared stop signal, else the image's,
/// else `SIGTERM`).
pub fn container_labels(
    spec: &ContainerSpec,
    image: Option<&ImageConfig>,
) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
    labels.insert(MANAGED_LABEL.to_string(), "true".to_string());
    let signal = Some(spec.stop_signal.as_str())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            image
                .and_then(|i| i.stop_signal.as_deref())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("SIGTERM");
    labels.insert(STOP_SIGNAL_LABEL.to_string(), signal.to_string());
    labels
}

/// Docker's default capabilities (bounding, effective and permitted sets).
pub fn default_capabilities() -> HashSet<Capability> {
    [
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fsetid,
        Capability::Fowner,
        Capability::Mknod,
        Capability::NetRaw,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setfcap,
        Capability::Setpcap,
        Capability::NetBindService,
        Capability::SysChroot,
        Capability::Kill,
        Capability::AuditWrite,
    ]
    .into_iter()
    .collect()
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, Error> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// containerd's default Linux mounts.
pub fn default_mounts() -> Result<Vec<Mount>, Error> {
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/run",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
    ])
}

fn parse_user(user: &str) -> Result<(u32, u32), Error> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let num = |s: &str, part: &str| -> Result<u32, Error> {
        if s == "root" {
            return Ok(0);
        }
        s.parse::<u32>().map_err(|_| {
            invalid(
                "image user",
                format!("{part} {s:?} is not numeric (user names are not resolved in v1)"),
            )
        })
    };
    let uid = num(u, "user")?;
    let gid = match g {
        Some(g) => num(g, "group")?,
        None => 0,
    };
    Ok((uid, gid))
}

fn merge_env(image: &[String], user: &[String], tty: bool) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::new();
    let mut set = |kv: &str, field: &str| -> Result<(), Error> {
        let Some((key, _)) = kv.split_once('=') else {
            // Never echo the value: it may be a secret.
            return Err(invalid(field, "an entry is not of the form K=V"));
        };
        if key.is_empty() {
            return Err(invalid(field, "an entry has an empty name"));
        }
        let prefix = format!("{key}=");
        out.retain(|e| !e.starts_with(&prefix));
        out.push(kv.to_string());
        Ok(())
    };
    set(DEFAULT_PATH, "env")?;
    if tty {
        set("TERM=xterm", "env")?;
    }
    for kv in image {
        set(kv, "image env")?;
    }
    for kv in user {
        set(kv, "env")?;
    }
    Ok(out)
}

fn check_absolute(field: &str, path: &str) -> Result<(), Error> {
    if !Path::new(path).is_absolute() {
        return Err(invalid(field, format!("{path:?} is not an absolute path")));
    }
    Ok(())
}

/// Builds the runtime spec of `spec` (with `image`'s defaults when it comes
/// from an image). The root is `rootfs` in the bundle: containerd's task
/// Create mounts the container's root filesystem there.
pub fn build(
    spec: &ContainerSpec,
    image: Option<&ImageConfig>,
    opts: &SpecOptions,
) -> Result<Spec, Error> {
    let default_image = ImageConfig::default();
    let image = image.unwrap_or(&default_image);

    // Docker's semantics: the entrypoint stays, the command replaces Cmd.
    let mut args: Vec<String> = image.entrypoint.clone().unwrap_or_default();
    if spec.command.is_empty() {
        args.extend(image.cmd.clone().unwrap_or_default());
    } else {
        args.extend(spec.command.iter().cloned());
    }
    if args.is_empty() {
        return Err(invalid(
            "command",
            "empty, and the image has no entrypoint or cmd",
        ));
    }

    let cwd = if !spec.working_dir.is_empty() {
        spec.working_dir.clone()
    } else {
        image
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_string())
    };
    check_absolute("working_dir", &cwd)?;

    let (uid, gid) = match image.user.as_deref().filter(|u| !u.is_empty()) {
        Some(u) => parse_user(u)?,
        None => (0, 0),
    };
    let env = merge_env(image.env.as_deref().unwrap_or(&[]), &spec.env, spec.tty)?;

    let caps = default_capabilities();
    let process = ProcessBuilder::default()
        .terminal(spec.tty)
        .user(UserBuilder::default().uid(uid).gid(gid).build()?)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .build()?,
        )
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(1024u64)
            .soft(1024u64)
            .build()?])
        .no_new_privileges(false)
        .build()?;

    let mut mounts = default_mounts()?;
    for (i, m) in spec.mounts.iter().enumerate() {
        check_absolute(&format!("mounts[{i}].source"), &m.source)?;
        check_absolute(&format!("mounts[{i}].destination"), &m.destination)?;
        let rw = if m.read_only { "ro" } else { "rw" };
        mounts.push(mount(
            &m.destination,
            "bind",
            &m.source,
            &["rbind", "rprivate", rw],
        )?);
    }

    let mut resources =
        LinuxResourcesBuilder::default().devices(vec![LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()?]);
    if let Some(r) = &spec.resources {
        if r.memory_bytes < 0 {
            return Err(invalid("resources.memory_bytes", "negative"));
        }
        if r.memory_bytes > 0 {
            resources = resources.memory(
                LinuxMemoryBuilder::default()
                    .limit(r.memory_bytes)
                    .build()?,
            );
        }
        if !r.cpus.is_finite() || r.cpus < 0.0 {
            return Err(invalid("resources.cpus", "not a non-negative number"));
        }
        if r.cpus > 0.0 {
            let quota = (r.cpus * CPU_PERIOD_US as f64).round() as i64;
            // The kernel's smallest quota is 1 ms.
            if quota < 1000 {
                return Err(invalid("resources.cpus", "below 0.01"));
            }
            resources = resources.cpu(
                LinuxCpuBuilder::default()
                    .quota(quota)
                    .period(CPU_PERIOD_US)
                    .build()?,
            );
        }
        if r.pids_limit < 0 {
            return Err(invalid("resources.pids_limit", "negative"));
        }
        if r.pids_limit > 0 {
            resources = resources.pids(LinuxPidsBuilder::default().limit(r.pids_limit).build()?);
        }
    }

    // Host network: no network namespace (see the module docs); no cgroup
    // namespace, as containerd's default on cgroup v1.
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ]
    .into_iter()
    .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
    .collect::<Result<Vec<_>, _>>()?;

    let linux = LinuxBuilder::default()
        .cgroups_path(opts.cgroups_path(&spec.name))
        .namespaces(namespaces)
        .resources(resources.build()?)
        .masked_paths(oci_spec::runtime::get_default_maskedpaths())
        .readonly_paths(oci_spec::runtime::get_default_readonly_paths())
        .build()?;

    Ok(SpecBuilder::default()
        .version("1.0.2-dev")
        .hostname(spec.name.clone())
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(false)
                .build()?,
        )
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()?)
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
