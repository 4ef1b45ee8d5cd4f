//! The shim's runtime options (`holdfast.shim.v1.Options`) holdfastd gives
//! each container: every `[log]` key, spelled out, so the shim's own
//! defaults never decide for a container holdfastd created.

use std::path::Path;

use holdfast_api::shim::v1::{Options, OPTIONS_TYPE_URL};
use holdfast_journal::JournalOptions;
use prost::Message;

/// The options of a new container: `log` (holdfastd's `[log]` defaults)
/// with its journal root `journal_root`, kept after the task is deleted
/// (holdfastd reads the journal after the container exits).
pub fn shim_options(log: &JournalOptions, journal_root: &Path) -> Options {
    Options {
        config_path: String::new(),
        dir: journal_root.display().to_string(),
        budget_bytes: log.budget_bytes.0,
        segment_bytes: log.segment_bytes.0,
        max_segments: Some(log.max_segments),
        policy: log.policy.as_str().to_owned(),
        fsync_interval_ms: Some(log.fsync_interval_ms),
        keep_after_delete: true,
        max_record_bytes: log.max_record_bytes.0,
        restore_from: String::new(),
    }
}

/// `options` packed for containerd's `Container.runtime.options` (which
/// containerd hands to the shim in `CreateTaskRequest.options`).
pub fn to_any(options: &Options) -> prost_types::Any {
    prost_types::Any {
        type_url: OPTIONS_TYPE_URL.to_owned(),
        value: options.encode_to_vec(),
    }
}

/// The options in a container's runtime options, if they are holdfast's
/// and decode.
pub fn from_any(any: &prost_types::Any) -> Option<Options> {
    let type_name = any.type_url.rsplit('/').next().unwrap_or(&any.type_url);
    if type_name != OPTIONS_TYPE_URL {
        return None;
    }
    Options::decode(any.value.as_slice()).ok()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use holdfast_journal::{ByteSize, FullPolicy};

    use super::*;

    #[test]
    fn every_log_key_is_spelled_out_and_round_trips() {
        let log = JournalOptions {
            dir: PathBuf::from("/ignored"),
            budget_bytes: ByteSize(64 << 10),
            segment_bytes: ByteSize(4 << 10),
            max_segments: 0,
            policy: FullPolicy::Drop,
            fsync_interval_ms: 0,
            max_record_bytes: ByteSize(1000),
        };
        let o = shim_options(&log, Path::new("/j"));
        assert_eq!(o.dir, "/j");
        assert_eq!(
            (o.budget_bytes, o.segment_bytes, o.max_record_bytes),
            (64 << 10, 4 << 10, 1000)
        );
        assert_eq!(o.max_segments, Some(0));
        assert_eq!(o.fsync_interval_ms, Some(0));
        assert_eq!(o.policy, "drop");
        assert!(o.keep_after_delete);
        let any = to_any(&o);
        assert_eq!(any.type_url, OPTIONS_TYPE_URL);
        assert_eq!(from_any(&any), Some(o));
    }

    #[test]
    fn other_options_are_not_ours() {
        let any = prost_types::Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![],
        };
        assert_eq!(from_any(&any), None);
        let ours = prost_types::Any {
            type_url: format!("type.googleapis.com/{OPTIONS_TYPE_URL}"),
            value: vec![0xff],
        };
        assert_eq!(from_any(&ours), None, "garbage does not decode");
    }
}
