//! Journal options: what the shim reads from a TOML file (CRI's
//! `config_path`) or from its runtime options message, with defaults and
//! validation.
//!
//! ```toml
//! dir = "/var/lib/holdfast/logs"   # root; a task's journal is <dir>/<namespace>/<id>
//! budget_bytes = "256MiB"          # all processes and streams of a task together
//! segment_bytes = "16MiB"          # rotation size
//! max_segments = 5                 # forwarded segments kept per stream
//! policy = "block"                 # or "drop"
//! fsync_interval_ms = 1000
//! ```
//!
//! Sizes are integers (bytes) or strings with a unit: `B`, `KiB`/`Ki`,
//! `MiB`/`Mi`, `GiB`/`Gi` (powers of 1024) or `KB`/`K`, `MB`/`M`, `GB`/`G`
//! (powers of 1000).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::error::{JournalError, Result};
use crate::segment::validate_name;

/// Default root folder of all journals.
pub const DEFAULT_DIR: &str = "/var/lib/holdfast/logs";
/// Default per-task budget: 256 MiB.
pub const DEFAULT_BUDGET_BYTES: u64 = 256 << 20;
/// Default segment (rotation) size: 16 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;
/// Default number of forwarded segments kept per stream.
pub const DEFAULT_MAX_SEGMENTS: u32 = 5;
/// Default interval between fsyncs of a stream's current segment.
pub const DEFAULT_FSYNC_INTERVAL_MS: u64 = 1000;
/// Default largest record text: 64 KiB (longer text is cut into `P` records).
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 64 << 10;
/// Smallest segment size accepted.
pub const MIN_SEGMENT_BYTES: u64 = 4096;

/// What an append does when the budget (or the filesystem) is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FullPolicy {
    /// Write nothing and say so ([`crate::Appended::Full`]): the caller stops
    /// reading the container's pipe, so the container blocks in `write()`
    /// and nothing is lost.
    #[default]
    Block,
    /// Write nothing, count the bytes, and later write one marker record
    /// saying how many were dropped: the container never blocks.
    Drop,
}

impl FullPolicy {
    /// `block` or `drop`.
    pub fn as_str(self) -> &'static str {
        match self {
            FullPolicy::Block => "block",
            FullPolicy::Drop => "drop",
        }
    }

    /// Parses `block` or `drop` (as in the TOML file and the options message).
    pub fn from_name(name: &str) -> Result<FullPolicy> {
        match name {
            "block" => Ok(FullPolicy::Block),
            "drop" => Ok(FullPolicy::Drop),
            other => Err(JournalError::InvalidOption {
                key: "policy",
                reason: format!("{other:?} is neither \"block\" nor \"drop\""),
            }),
        }
    }
}

/// A size in bytes, written in TOML as an integer or as a string with a unit
/// (`"256MiB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `"123"`, `"64KiB"`, `"16 MiB"`, `"1GB"`, ...
    pub fn parse(s: &str) -> std::result::Result<ByteSize, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let num: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a size (expected e.g. 1048576 or \"256MiB\")"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "Ki" | "KiB" => 1 << 10,
            "Mi" | "MiB" => 1 << 20,
            "Gi" | "GiB" => 1 << 30,
            "K" | "KB" | "k" | "kB" => 1_000,
            "M" | "MB" => 1_000_000,
            "G" | "GB" => 1_000_000_000,
            other => return Err(format!("unknown size unit {other:?} in {s:?}")),
        };
        num.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes, or a string such as \"256MiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("size {v} is negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// The journal options as a user writes them (TOML keys in parentheses).
/// Every key is optional; [`JournalOptions::default`] gives the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalOptions {
    /// Root folder (`dir`); a task's journal is `<dir>/<namespace>/<id>`.
    pub dir: PathBuf,
    /// Disk budget of one task, all processes and streams together
    /// (`budget_bytes`): the sum of the sizes of its segment files.
    pub budget_bytes: ByteSize,
    /// Rotation size of a segment (`segment_bytes`).
    pub segment_bytes: ByteSize,
    /// How many fully forwarded segments to keep per stream (`max_segments`),
    /// like kubelet's `containerLogMaxFiles`; segments not yet read by every
    /// consumer are kept regardless.
    pub max_segments: u32,
    /// What happens when the budget is full (`policy`: `block` or `drop`).
    pub policy: FullPolicy,
    /// Longest interval between fsyncs of a current segment
    /// (`fsync_interval_ms`); 0 syncs at every [`crate::StreamWriter::sync_if_due`].
    pub fsync_interval_ms: u64,
    /// Longest record text (`max_record_bytes`); longer text is cut into
    /// `P` records.
    pub max_record_bytes: ByteSize,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            dir: PathBuf::from(DEFAULT_DIR),
            budget_bytes: ByteSize(DEFAULT_BUDGET_BYTES),
            segment_bytes: ByteSize(DEFAULT_SEGMENT_BYTES),
            max_segments: DEFAULT_MAX_SEGMENTS,
            policy: FullPolicy::Block,
            fsync_interval_ms: DEFAULT_FSYNC_INTERVAL_MS,
            max_record_bytes: ByteSize(DEFAULT_MAX_RECORD_BYTES),
        }
    }
}

impl JournalOptions {
    /// Parses and validates a TOML options file's text.
    pub fn from_toml_str(text: &str) -> Result<JournalOptions> {
        let opts: JournalOptions = toml::from_str(text)?;
        opts.validate()?;
        Ok(opts)
    }

    /// Reads, parses and validates a TOML options file.
    pub fn from_toml_file(path: &Path) -> Result<JournalOptions> {
        let text = std::fs::read_to_string(path).map_err(|e| JournalError::io("read", path, e))?;
        JournalOptions::from_toml_str(&text)
    }

    /// Checks the options alone and together.
    pub fn validate(&self) -> Result<()> {
        let invalid = |key, reason: String| Err(JournalError::InvalidOption { key, reason });
        if !self.dir.is_absolute() {
            return invalid(
                "dir",
                format!("{} is not an absolute path", self.dir.display()),
            );
        }
        let (budget, segment) = (self.budget_bytes.0, self.segment_bytes.0);
        if segment < MIN_SEGMENT_BYTES {
            return invalid(
                "segment_bytes",
                format!("{segment} is below the minimum of {MIN_SEGMENT_BYTES}"),
            );
        }
        if segment.saturating_mul(2) > budget {
            return invalid(
                "budget_bytes",
                format!(
                    "{budget} must be at least twice segment_bytes ({segment}), so that one \
                     segment can be written while another waits to be forwarded"
                ),
            );
        }
        let record = self.max_record_bytes.0;
        if record == 0 || record.saturating_add(64) > segment {
            return invalid(
                "max_record_bytes",
                format!("{record} must be above 0 and fit in a segment ({segment})"),
            );
        }
        Ok(())
    }

    /// The validated configuration of one task's journal,
    /// `<dir>/<namespace>/<id>`; the namespace and id are checked like
    /// process ids before any path is built from them.
    pub fn for_task(&self, namespace: &str, id: &str) -> Result<JournalConfig> {
        validate_name(namespace).map_err(|reason| JournalError::InvalidId {
            what: "namespace",
            id: namespace.to_owned(),
            reason,
        })?;
        validate_name(id).map_err(|reason| JournalError::InvalidId {
            what: "container id",
            id: id.to_owned(),
            reason,
        })?;
        self.for_dir(self.dir.join(namespace).join(id))
    }

    /// The validated configuration of a journal in `dir` (a task's folder).
    pub fn for_dir(&self, dir: impl Into<PathBuf>) -> Result<JournalConfig> {
        self.validate()?;
        Ok(JournalConfig {
            dir: dir.into(),
            budget_bytes: self.budget_bytes.0,
            segment_bytes: self.segment_bytes.0,
            max_segments: self.max_segments,
            policy: self.policy,
            fsync_interval: Duration::from_millis(self.fsync_interval_ms),
            max_record_bytes: usize::try_from(self.max_record_bytes.0).unwrap_or(usize::MAX),
        })
    }
}

/// The validated configuration of one task's journal, as
/// [`crate::Journal::open`] takes it. Build it with
/// [`JournalOptions::for_task`] or [`JournalOptions::for_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// The task's folder.
    pub dir: PathBuf,
    /// Disk budget: the most bytes all segment files together may hold.
    pub budget_bytes: u64,
    /// Rotation size.
    pub segment_bytes: u64,
    /// Fully forwarded segments kept per stream.
    pub max_segments: u32,
    /// What happens when the budget is full.
    pub policy: FullPolicy,
    /// Longest interval between fsyncs of a current segment.
    pub fsync_interval: Duration,
    /// Longest record text.
    pub max_record_bytes: usize,
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
