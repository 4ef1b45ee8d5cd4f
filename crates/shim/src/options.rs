//! The shim's runtime options: where a task's journal lives, its budget and
//! full policy, and whether it outlives the task.
//!
//! They arrive in `CreateTaskRequest.options` as one of:
//! - `holdfast.shim.v1.Options` (`proto/holdfast/shim/v1/options.proto`);
//! - CRI's `runtimeoptions.v1.Options`, whose `config_path` (or
//!   `config_body`) is a TOML file with the same keys;
//! - nothing (plain `ctr`): the defaults.

use std::path::Path;

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use holdfast_journal::{ByteSize, FullPolicy, JournalOptions};
use prost::Message;

use crate::error::{Error, Result};

/// Generated from `proto/holdfast/shim/v1/options.proto`.
pub mod proto {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/holdfast.shim.v1.rs"));
}

/// Generated from `proto/runtimeoptions/v1/api.proto` (containerd's).
pub mod runtimeoptions {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/runtimeoptions.v1.rs"));
}

/// The type URL of holdfast's options message.
pub const OPTIONS_TYPE: &str = "holdfast.shim.v1.Options";
/// The type URL of CRI's runtime options message.
pub const CRI_OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";
/// The TOML keys that are the shim's own, not the journal's.
const KEEP_KEY: &str = "keep_after_delete";
const SHIM_PER_KEY: &str = "shim_per";
const CRI_LOG_KEY: &str = "cri_log";

/// How the tasks of a Kubernetes pod (containers whose spec carries CRI's
/// `io.kubernetes.cri.sandbox-id` annotation) are spread over shims.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ShimPer {
    /// One shim serves the sandbox and every container of its pod, as the
    /// Go runc shim does (`shim_per = "pod"`, the default).
    #[default]
    Pod,
    /// One shim per container (`shim_per = "container"`): a shim's failure
    /// touches one container only, at the cost of one process each.
    Container,
}

/// Who writes a CRI container's log file (`<log_directory>/<log_path>`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CriLog {
    /// The shim, from the journal (`cri_log = "shim"`, the default): every
    /// line once, in order, with the time the container wrote it, whatever
    /// happens to containerd. containerd's FIFOs get no output (so
    /// `kubectl attach` shows none); stdin works as before.
    #[default]
    Shim,
    /// containerd's CRI plugin, from the stdout/stderr FIFOs the shim
    /// forwards to (`cri_log = "containerd"`): lines containerd had read
    /// but not yet written when it died are lost.
    Containerd,
}

/// Options resolved for one task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShimOptions {
    /// The journal's options.
    pub journal: JournalOptions,
    /// Keep the journal after Delete.
    pub keep_after_delete: bool,
    /// Shims per pod (read by `start`).
    pub shim_per: ShimPer,
    /// Who writes CRI log files.
    pub cri_log: CriLog,
    /// A folder of CRIU images to restore the task from (holdfast's
    /// `restore_from`; checked by [`crate::container::Restore`]).
    pub restore_from: String,
}

/// Removes `key` from `table`: one of the strings `allowed`, or an error
/// naming the key and what it may be.
fn take_word(
    table: &mut toml::Table,
    key: &str,
    allowed: &[&'static str],
    origin: &str,
) -> Result<Option<&'static str>> {
    let Some(value) = table.remove(key) else {
        return Ok(None);
    };
    match value
        .as_str()
        .and_then(|v| allowed.iter().find(|a| **a == v))
    {
        Some(word) => Ok(Some(*word)),
        None => Err(Error::InvalidArgument(format!(
            "runtime options {origin}: {key} must be one of {allowed:?}, not {value:?}"
        ))),
    }
}

fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

impl ShimOptions {
    /// Resolves the options of a Create request (`None`: defaults).
    pub fn from_any(any: Option<&Any>) -> Result<ShimOptions> {
        let Some(any) = any.filter(|a| !a.type_url.is_empty()) else {
            return Ok(ShimOptions::default());
        };
        match type_name(&any.type_url) {
            OPTIONS_TYPE => {
                let msg = proto::Options::decode(any.value.as_slice()).map_err(|e| {
                    Error::InvalidArgument(format!("runtime options {OPTIONS_TYPE}: {e}"))
                })?;
                ShimOptions::from_message(&msg)
            }
            CRI_OPTIONS_TYPE => {
                let msg = runtimeoptions::Options::decode(any.value.as_slice()).map_err(|e| {
                    Error::InvalidArgument(format!("runtime options {CRI_OPTIONS_TYPE}: {e}"))
                })?;
                if !msg.config_path.is_empty() {
                    ShimOptions::from_toml_file(Path::new(&msg.config_path))
                } else if !msg.config_body.is_empty() {
                    let text = String::from_utf8(msg.config_body).map_err(|_| {
                        Error::InvalidArgument("runtime options config_body is not UTF-8".into())
                    })?;
                    ShimOptions::from_toml_str(&text, "config_body")
                } else {
                    Ok(ShimOptions::default())
                }
            }
            // The runc shims' options (e.g. when a CRI handler is configured
            // with runc's options type): nothing in them concerns holdfast.
            "containerd.runc.v1.Options" | "containerd.linux.runc.RuncOptions" => {
                Ok(ShimOptions::default())
            }
            other => Err(Error::InvalidArgument(format!(
                "unknown runtime options type {other:?}: expected {OPTIONS_TYPE} or {CRI_OPTIONS_TYPE}"
            ))),
        }
    }

    /// Options from a TOML file.
    pub fn from_toml_file(path: &Path) -> Result<ShimOptions> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let msg = format!("runtime options file {}: {e}", path.display());
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(msg)
            } else {
                Error::InvalidArgument(msg)
            }
        })?;
        ShimOptions::from_toml_str(&text, &path.display().to_string())
    }

    /// Options from TOML text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<ShimOptions> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e| Error::InvalidArgument(format!("runtime options {origin}: {e}")))?;
        let keep = match table.remove(KEEP_KEY) {
            None => false,
            Some(toml::Value::Boolean(b)) => b,
            Some(other) => {
                return Err(Error::InvalidArgument(format!(
                    "runtime options {origin}: {KEEP_KEY} must be true or false, not {other:?}"
                )))
            }
        };
        let shim_per = match take_word(&mut table, SHIM_PER_KEY, &["pod", "container"], origin)? {
            Some("container") => ShimPer::Container,
            _ => ShimPer::Pod,
        };
        let cri_log = match take_word(&mut table, CRI_LOG_KEY, &["shim", "containerd"], origin)? {
            Some("containerd") => CriLog::Containerd,
            _ => CriLog::Shim,
        };
        let journal: JournalOptions = toml::Value::Table(table)
            .try_into()
            .map_err(|e| Error::InvalidArgument(format!("runtime options {origin}: {e}")))?;
        journal
            .validate()
            .map_err(|e| Error::InvalidArgument(format!("runtime options {origin}: {e}")))?;
        Ok(ShimOptions {
            journal,
            keep_after_delete: keep,
            shim_per,
            cri_log,
            restore_from: String::new(),
        })
    }

    /// Options from holdfast's message: its `config_path` first, then the
    /// fields it sets.
    pub fn from_message(msg: &proto::Options) -> Result<ShimOptions> {
        let mut opts = if msg.config_path.is_empty() {
            ShimOptions::default()
        } else {
            ShimOptions::from_toml_file(Path::new(&msg.config_path))?
        };
        let j = &mut opts.journal;
        if !msg.dir.is_empty() {
            j.dir = msg.dir.clone().into();
        }
        if msg.budget_bytes > 0 {
            j.budget_bytes = ByteSize(msg.budget_bytes);
        }
        if msg.segment_bytes > 0 {
            j.segment_bytes = ByteSize(msg.segment_bytes);
        }
        if let Some(n) = msg.max_segments {
            j.max_segments = n;
        }
        if !msg.policy.is_empty() {
            j.policy = FullPolicy::from_name(&msg.policy)
                .map_err(|e| Error::InvalidArgument(format!("runtime options: {e}")))?;
        }
        if let Some(ms) = msg.fsync_interval_ms {
            j.fsync_interval_ms = ms;
        }
        if msg.max_record_bytes > 0 {
            j.max_record_bytes = ByteSize(msg.max_record_bytes);
        }
        opts.keep_after_delete |= msg.keep_after_delete;
        opts.restore_from = msg.restore_from.clone();
        opts.journal
            .validate()
            .map_err(|e| Error::InvalidArgument(format!("runtime options: {e}")))?;
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(type_url: &str, value: Vec<u8>) -> Any {
        Any {
            type_url: type_url.into(),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn no_options_means_defaults() {
        assert_eq!(ShimOptions::from_any(None).unwrap(), ShimOptions::default());
    }

    #[test]
    fn holdfast_message_sets_fields() {
        let msg = proto::Options {
            dir: "/tmp/j".into(),
            budget_bytes: 8 << 20,
            segment_bytes: 1 << 20,
            policy: "drop".into(),
            keep_after_delete: true,
            ..Default::default()
        };
        let o = ShimOptions::from_any(Some(&any(OPTIONS_TYPE, msg.encode_to_vec()))).unwrap();
        assert_eq!(o.journal.dir, Path::new("/tmp/j"));
        assert_eq!(o.journal.budget_bytes, ByteSize(8 << 20));
        assert_eq!(o.journal.policy, FullPolicy::Drop);
        assert!(o.keep_after_delete);
        assert_eq!(o.restore_from, "");
    }

    #[test]
    fn restore_from_passes_through_holdfast_options() {
        let msg = proto::Options {
            restore_from: "/var/lib/holdfastd/checkpoints/web/cp1".into(),
            ..Default::default()
        };
        let o = ShimOptions::from_any(Some(&any(OPTIONS_TYPE, msg.encode_to_vec()))).unwrap();
        assert_eq!(o.restore_from, "/var/lib/holdfastd/checkpoints/web/cp1");
        assert_eq!(o.journal, ShimOptions::default().journal);
    }

    #[test]
    fn every_journal_key_can_be_set_and_zero_is_a_value_where_it_means_something() {
        let msg = proto::Options {
            dir: "/tmp/j".into(),
            budget_bytes: 64 << 10,
            segment_bytes: 8 << 10,
            max_segments: Some(0),
            policy: "drop".into(),
            fsync_interval_ms: Some(0),
            keep_after_delete: true,
            max_record_bytes: 1000,
            ..Default::default()
        };
        let o = ShimOptions::from_any(Some(&any(OPTIONS_TYPE, msg.encode_to_vec()))).unwrap();
        let want = JournalOptions {
            dir: "/tmp/j".into(),
            budget_bytes: ByteSize(64 << 10),
            segment_bytes: ByteSize(8 << 10),
            max_segments: 0,
            policy: FullPolicy::Drop,
            fsync_interval_ms: 0,
            max_record_bytes: ByteSize(1000),
        };
        assert_eq!(o.journal, want);
        // Unset optional fields keep the defaults.
        let o = ShimOptions::from_any(Some(&any(
            OPTIONS_TYPE,
            proto::Options::default().encode_to_vec(),
        )))
        .unwrap();
        assert_eq!(o.journal, JournalOptions::default());
    }

    #[test]
    fn cri_config_path_is_a_toml_file_with_the_same_keys() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("holdfast.toml");
        std::fs::write(
            &f,
            "dir = \"/tmp/x\"\nbudget_bytes = \"64MiB\"\npolicy = \"drop\"\nkeep_after_delete = true\n",
        )
        .unwrap();
        let msg = runtimeoptions::Options {
            config_path: f.display().to_string(),
            ..Default::default()
        };
        let o = ShimOptions::from_any(Some(&any(
            "type.googleapis.com/runtimeoptions.v1.Options",
            msg.encode_to_vec(),
        )))
        .unwrap();
        assert_eq!(o.journal.budget_bytes, ByteSize(64 << 20));
        assert_eq!(o.journal.policy, FullPolicy::Drop);
        assert!(o.keep_after_delete);
    }

    #[test]
    fn pods_share_a_shim_and_the_shim_writes_cri_logs_unless_told_otherwise() {
        let o = ShimOptions::from_toml_str("", "t.toml").unwrap();
        assert_eq!((o.shim_per, o.cri_log), (ShimPer::Pod, CriLog::Shim));
        let o = ShimOptions::from_toml_str(
            "shim_per = \"container\"\ncri_log = \"containerd\"\npolicy = \"drop\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            (o.shim_per, o.cri_log, o.journal.policy),
            (ShimPer::Container, CriLog::Containerd, FullPolicy::Drop)
        );
        for bad in [
            "shim_per = \"node\"",
            "shim_per = 1",
            "cri_log = \"kubelet\"",
        ] {
            let err = ShimOptions::from_toml_str(bad, "t.toml").unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
            let key = bad.split(' ').next().unwrap();
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn bad_options_name_what_is_wrong() {
        let err = ShimOptions::from_toml_str("policy = \"maybe\"", "t.toml").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains("policy"), "{err}");
        let err = ShimOptions::from_toml_str("colour = 1", "t.toml").unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let err = ShimOptions::from_toml_file(Path::new("/nonexistent/h.toml")).unwrap_err();
        assert!(matches!(err, Error::NotFound(_)));
        let err = ShimOptions::from_any(Some(&any("example.Unknown", vec![]))).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
    }
}
