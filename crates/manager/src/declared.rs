//! The `config` an export archive carries: the container's declared spec
//! and its checkpoint's CRIU flags, as JSON with named fields (so a person
//! can read an archive's manifest), and back.
//!
//! Unknown fields are ignored (a newer holdfast may add some); a missing
//! field is its default. What comes back is checked by the caller like any
//! client's spec. The environment is part of it: the manifest is kept 0600
//! and never logged.

use std::collections::HashMap;

use holdfast_api::v1::{
    CheckpointSchedule, ContainerSpec, Mount, Resources, RestartPolicy, RestartPolicyKind,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The archive's `config`: what is needed to make the container again on
/// another host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Declared {
    /// The container's declared spec.
    pub spec: Spec,
    /// How its checkpoint was taken.
    pub checkpoint: CheckpointFlags,
}

/// The CRIU flags a checkpoint was taken with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckpointFlags {
    /// The task went on running after the dump.
    pub leave_running: bool,
    /// Established TCP connections were dumped.
    pub tcp_established: bool,
    /// File locks were dumped.
    pub file_locks: bool,
}

/// [`ContainerSpec`] with named fields (the restart policy by its CLI name).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Spec {
    /// See [`ContainerSpec::name`].
    pub name: String,
    /// See [`ContainerSpec::image`].
    pub image: String,
    /// See [`ContainerSpec::rootfs`].
    pub rootfs: String,
    /// See [`ContainerSpec::command`].
    pub command: Vec<String>,
    /// See [`ContainerSpec::env`].
    pub env: Vec<String>,
    /// See [`ContainerSpec::working_dir`].
    pub working_dir: String,
    /// See [`ContainerSpec::mounts`]: `(source, destination, read_only)`.
    pub mounts: Vec<BindMount>,
    /// See [`ContainerSpec::labels`].
    pub labels: HashMap<String, String>,
    /// Memory limit in bytes (0: none).
    pub memory_bytes: i64,
    /// CPUs (0: no limit).
    pub cpus: f64,
    /// Most processes (0: no limit).
    pub pids_limit: i64,
    /// `no`, `on-failure`, `always` or `unless-stopped`.
    pub restart: String,
    /// on-failure: most restarts in a row (0: no limit).
    pub restart_max_retries: u32,
    /// See [`ContainerSpec::auto_remove`].
    pub auto_remove: bool,
    /// See [`ContainerSpec::stop_signal`].
    pub stop_signal: String,
    /// See [`ContainerSpec::stop_timeout_seconds`].
    pub stop_timeout_seconds: i64,
    /// See [`ContainerSpec::tty`].
    pub tty: bool,
    /// See [`ContainerSpec::stdin_open`].
    pub stdin_open: bool,
    /// The checkpoint schedule's period, as `--checkpoint-every` (empty:
    /// no schedule).
    pub checkpoint_every: String,
    /// How many scheduled checkpoints are kept.
    pub checkpoint_keep: u32,
}

/// A bind mount of [`Spec`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BindMount {
    /// Absolute path on the host.
    pub source: String,
    /// Absolute path in the container.
    pub destination: String,
    /// Mounted read-only.
    pub read_only: bool,
}

impl From<&ContainerSpec> for Spec {
    fn from(s: &ContainerSpec) -> Spec {
        let resources = s.resources.unwrap_or_default();
        let restart = s.restart.unwrap_or_default();
        let kind = RestartPolicyKind::try_from(restart.kind).unwrap_or(RestartPolicyKind::No);
        Spec {
            name: s.name.clone(),
            image: s.image.clone(),
            rootfs: s.rootfs.clone(),
            command: s.command.clone(),
            env: s.env.clone(),
            working_dir: s.working_dir.clone(),
            mounts: s
                .mounts
                .iter()
                .map(|m| BindMount {
                    source: m.source.clone(),
                    destination: m.destination.clone(),
                    read_only: m.read_only,
                })
                .collect(),
            labels: s.labels.clone(),
            memory_bytes: resources.memory_bytes,
            cpus: resources.cpus,
            pids_limit: resources.pids_limit,
            restart: crate::validate::restart_kind_name(kind).to_owned(),
            restart_max_retries: restart.max_retries,
            auto_remove: s.auto_remove,
            stop_signal: s.stop_signal.clone(),
            stop_timeout_seconds: s.stop_timeout_seconds,
            tty: s.tty,
            stdin_open: s.stdin_open,
            checkpoint_every: s
                .checkpoint_schedule
                .as_ref()
                .map(|c| c.every.clone())
                .unwrap_or_default(),
            checkpoint_keep: s.checkpoint_schedule.as_ref().map_or(0, |c| c.keep),
        }
    }
}

impl Spec {
    /// The [`ContainerSpec`] again; an unknown restart policy name is
    /// [`Error::Invalid`].
    pub fn to_container_spec(&self) -> Result<ContainerSpec> {
        let kind = match self.restart.as_str() {
            "" | "no" => RestartPolicyKind::No,
            "on-failure" => RestartPolicyKind::OnFailure,
            "always" => RestartPolicyKind::Always,
            "unless-stopped" => RestartPolicyKind::UnlessStopped,
            other => {
                return Err(Error::invalid(
                    format!("archive config restart {other:?}"),
                    "not a restart policy (no, on-failure, always, unless-stopped)",
                ))
            }
        };
        Ok(ContainerSpec {
            name: self.name.clone(),
            image: self.image.clone(),
            rootfs: self.rootfs.clone(),
            command: self.command.clone(),
            env: self.env.clone(),
            working_dir: self.working_dir.clone(),
            mounts: self
                .mounts
                .iter()
                .map(|m| Mount {
                    source: m.source.clone(),
                    destination: m.destination.clone(),
                    read_only: m.read_only,
                })
                .collect(),
            labels: self.labels.clone(),
            resources: Some(Resources {
                memory_bytes: self.memory_bytes,
                cpus: self.cpus,
                pids_limit: self.pids_limit,
            }),
            restart: Some(RestartPolicy {
                kind: kind as i32,
                max_retries: self.restart_max_retries,
            }),
            auto_remove: self.auto_remove,
            stop_signal: self.stop_signal.clone(),
            stop_timeout_seconds: self.stop_timeout_seconds,
            tty: self.tty,
            stdin_open: self.stdin_open,
            checkpoint_schedule: (!self.checkpoint_every.is_empty()).then(|| CheckpointSchedule {
                every: self.checkpoint_every.clone(),
                keep: self.checkpoint_keep,
            }),
        })
    }
}

impl Declared {
    /// As the archive's `config`.
    pub fn to_json(&self) -> Result<serde_json::Value> {
        serde_json::to_value(self)
            .map_err(|e| Error::Internal(format!("archive config to JSON: {e}")))
    }

    /// From an archive's `config`: [`Error::Invalid`] when it does not
    /// have this shape (the message names serde's path, never a value).
    pub fn from_json(value: serde_json::Value) -> Result<Declared> {
        serde_json::from_value(value).map_err(|e| {
            Error::invalid(
                "archive config",
                format!(
                    "not a container config (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_goes_through_json_unchanged() {
        let spec = ContainerSpec {
            name: "web".into(),
            rootfs: "/srv/rootfs".into(),
            command: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["A=1".into()],
            working_dir: "/tmp".into(),
            mounts: vec![Mount {
                source: "/srv/data".into(),
                destination: "/data".into(),
                read_only: true,
            }],
            labels: HashMap::from([("k".to_string(), "v".to_string())]),
            resources: Some(Resources {
                memory_bytes: 1 << 20,
                cpus: 0.5,
                pids_limit: 10,
            }),
            restart: Some(RestartPolicy {
                kind: RestartPolicyKind::OnFailure as i32,
                max_retries: 3,
            }),
            auto_remove: false,
            stop_signal: "SIGINT".into(),
            stop_timeout_seconds: 20,
            tty: true,
            stdin_open: true,
            ..Default::default()
        };
        let declared = Declared {
            spec: Spec::from(&spec),
            checkpoint: CheckpointFlags {
                leave_running: true,
                ..Default::default()
            },
        };
        let json = declared.to_json().expect("json");
        assert_eq!(json["spec"]["restart"], "on-failure");
        let back = Declared::from_json(json).expect("back");
        assert_eq!(back, declared);
        assert_eq!(back.spec.to_container_spec().expect("spec"), spec);
    }

    #[test]
    fn unknown_fields_are_ignored_and_bad_shapes_refused_without_values() {
        let json = serde_json::json!({"spec": {"name": "a", "future": 1}, "more": true});
        let d = Declared::from_json(json).expect("unknown fields");
        assert_eq!(d.spec.name, "a");
        let bad = serde_json::json!({"spec": {"env": "SECRET=1"}});
        let err = Declared::from_json(bad).expect_err("refused").to_string();
        assert!(!err.contains("SECRET"), "{err}");
        let restart = serde_json::json!({"spec": {"restart": "sometimes"}});
        let d = Declared::from_json(restart).expect("parses");
        assert!(d.spec.to_container_spec().is_err());
    }
}
