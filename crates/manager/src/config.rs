//! holdfastd's config file (TOML; `--config`, default
//! [`DEFAULT_CONFIG_PATH`]). Every key is optional; unknown keys are
//! rejected.
//!
//! ```toml
//! root = "/var/lib/holdfast"               # database and state
//! socket = "/run/holdfast/holdfastd.sock"  # the API's unix socket
//! live_restore = true                      # leave containers running on exit
//! shutdown_timeout = 30                    # seconds; default: from the containers
//! log_level = "info"                       # error, warn, info, debug, trace
//! cgroup_parent = "/holdfast"              # default: /<containerd.namespace>
//!
//! [containerd]
//! address = "/run/containerd/containerd.sock"
//! namespace = "holdfast"
//!
//! [log]                                    # journal defaults of new containers
//! dir = "/var/lib/holdfast/logs"
//! budget_bytes = "256MiB"
//! segment_bytes = "16MiB"
//! max_segments = 5
//! policy = "block"                         # or "drop"
//! fsync_interval_ms = 1000
//! max_record_bytes = "64KiB"
//! ```
//!
//! Every `[log]` key reaches the shim of each container holdfastd creates,
//! in the container's runtime options
//! ([`crate::containerd::options::shim_options`]); a container keeps them
//! for its whole life, restarts included.
//!
//! On SIGHUP the file is read again and [`reload`] tells which changes
//! apply at once and which wait for a restart.

use std::fmt;
use std::path::{Path, PathBuf};

use holdfast_journal::JournalOptions;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Where holdfastd looks for its config when `--config` is not given; a
/// missing file there means the defaults.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/holdfast/holdfastd.toml";
/// Default `root`.
pub const DEFAULT_ROOT: &str = "/var/lib/holdfast";
/// Default `socket`.
pub const DEFAULT_SOCKET: &str = "/run/holdfast/holdfastd.sock";
/// Default `containerd.address`.
pub const DEFAULT_CONTAINERD_ADDRESS: &str = "/run/containerd/containerd.sock";
/// Default `containerd.namespace`.
pub const DEFAULT_NAMESPACE: &str = "holdfast";
/// Longest containerd namespace.
pub const MAX_NAMESPACE_LEN: usize = 76;

/// holdfastd's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Folder of the database and holdfastd's state (`root`).
    pub root: PathBuf,
    /// The API's unix socket (`socket`).
    pub socket: PathBuf,
    /// How to reach containerd (`[containerd]`).
    pub containerd: ContainerdConfig,
    /// Leave containers running when holdfastd exits (`live_restore`).
    pub live_restore: bool,
    /// Overall deadline in seconds for stopping containers when live
    /// restore is off (`shutdown_timeout`); unset: the largest stop timeout
    /// plus a grace period (see [`crate::stop`]).
    pub shutdown_timeout: Option<u64>,
    /// Journal defaults of new containers (`[log]`, the journal's keys),
    /// all passed to the shim in the container's runtime options.
    pub log: JournalOptions,
    /// Lowest level of holdfastd's own log (`log_level`).
    pub log_level: LogLevel,
    /// The cgroup parent of the containers (`cgroup_parent`, absolute);
    /// unset: `/<containerd.namespace>`. A container's cgroup is
    /// `<parent>/<name>`.
    pub cgroup_parent: Option<String>,
}

/// The `[containerd]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerdConfig {
    /// containerd's gRPC socket (`address`).
    pub address: PathBuf,
    /// The containerd namespace of holdfast's containers (`namespace`).
    pub namespace: String,
}

/// A level of holdfastd's own log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// The default.
    #[default]
    Info,
    /// Debugging.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The `tracing` level.
    pub fn as_tracing(self) -> tracing::Level {
        match self {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Trace => tracing::Level::TRACE,
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        };
        f.write_str(s)
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            root: PathBuf::from(DEFAULT_ROOT),
            socket: PathBuf::from(DEFAULT_SOCKET),
            containerd: ContainerdConfig::default(),
            live_restore: true,
            shutdown_timeout: None,
            log: JournalOptions::default(),
            log_level: LogLevel::Info,
            cgroup_parent: None,
        }
    }
}

impl Default for ContainerdConfig {
    fn default() -> ContainerdConfig {
        ContainerdConfig {
            address: PathBuf::from(DEFAULT_CONTAINERD_ADDRESS),
            namespace: DEFAULT_NAMESPACE.to_owned(),
        }
    }
}

impl Config {
    /// Reads the config: `path` from `--config` (it must exist), or `None`
    /// for [`DEFAULT_CONFIG_PATH`] (a missing file means the defaults).
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let (path, required) = match path {
            Some(p) => (p, true),
            None => (Path::new(DEFAULT_CONFIG_PATH), false),
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Config::from_toml_str(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                tracing::info!(path = %path.display(), "no config file: using the defaults");
                Ok(Config::default())
            }
            Err(e) => Err(Error::io("read config", path, e)),
        }
    }

    /// Parses and validates a config file's text; `path` is for messages.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|source| Error::ConfigParse {
            path: path.to_owned(),
            source,
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks the values; errors name the key. `path` is for messages.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |key: &str, reason: String| {
            Err(Error::Config {
                path: path.to_owned(),
                key: key.to_owned(),
                reason,
            })
        };
        for (key, value) in [
            ("root", &self.root),
            ("socket", &self.socket),
            ("containerd.address", &self.containerd.address),
        ] {
            if !value.is_absolute() {
                return bad(key, format!("{} is not an absolute path", value.display()));
            }
        }
        if let Err(reason) = check_namespace(&self.containerd.namespace) {
            return bad(
                "containerd.namespace",
                format!("{:?} {reason}", self.containerd.namespace),
            );
        }
        if let Some(parent) = &self.cgroup_parent {
            if !parent.starts_with('/') || parent.split('/').any(|c| c == "..") {
                return bad(
                    "cgroup_parent",
                    format!("{parent:?} is not an absolute path without '..'"),
                );
            }
        }
        if let Err(e) = self.log.validate() {
            return bad("log", e.to_string());
        }
        Ok(())
    }

    /// The root of the containers' journals: `log.dir` when set, else
    /// `<root>/logs` (so a non-default `root` keeps everything together).
    pub fn journal_root(&self) -> PathBuf {
        if self.log.dir == Path::new(holdfast_journal::config::DEFAULT_DIR)
            && self.root != Path::new(DEFAULT_ROOT)
        {
            self.root.join("logs")
        } else {
            self.log.dir.clone()
        }
    }
}

/// containerd's identifier rules: 1 to 76 of `[A-Za-z0-9._-]`, starting and
/// ending with a letter or digit, no two separators in a row.
fn check_namespace(ns: &str) -> std::result::Result<(), &'static str> {
    if ns.is_empty() || ns.len() > MAX_NAMESPACE_LEN {
        return Err("must be 1 to 76 characters");
    }
    let sep = |c: char| matches!(c, '.' | '_' | '-');
    if !ns.chars().all(|c| c.is_ascii_alphanumeric() || sep(c)) {
        return Err("may only contain A-Z a-z 0-9 . _ -");
    }
    if ns.starts_with(sep) || ns.ends_with(sep) {
        return Err("must start and end with a letter or a digit");
    }
    if ns
        .as_bytes()
        .windows(2)
        .any(|w| sep(w[0] as char) && sep(w[1] as char))
    {
        return Err("must not have two separators in a row");
    }
    Ok(())
}

/// The outcome of reading the config again: the config to use now and
/// which keys changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reload {
    /// The running config with the changes that apply at once.
    pub config: Config,
    /// Changed keys now in effect (`live_restore`, `shutdown_timeout`,
    /// `log_level`; `log`: the `[log]` keys but `dir`, for containers
    /// created from now on).
    pub applied: Vec<&'static str>,
    /// Changed keys that keep their old value until holdfastd restarts
    /// (`log.dir`, `root`, `socket`, `containerd.address`,
    /// `containerd.namespace`, `cgroup_parent`).
    pub needs_restart: Vec<&'static str>,
}

/// Compares the running config with a newly read one: live keys are taken
/// from `new`, the others stay as they are and are listed as needing a
/// restart.
pub fn reload(current: &Config, new: Config) -> Reload {
    let mut config = current.clone();
    let mut applied = Vec::new();
    let mut needs_restart = Vec::new();
    if current.live_restore != new.live_restore {
        config.live_restore = new.live_restore;
        applied.push("live_restore");
    }
    if current.shutdown_timeout != new.shutdown_timeout {
        config.shutdown_timeout = new.shutdown_timeout;
        applied.push("shutdown_timeout");
    }
    if current.log_level != new.log_level {
        config.log_level = new.log_level;
        applied.push("log_level");
    }
    // The journal folder of existing containers is where they were
    // created: `log.dir` waits for a restart, the other `[log]` keys
    // apply to containers created from now on (existing ones keep the
    // options they were created with).
    let mut log = new.log;
    if current.log.dir != log.dir {
        needs_restart.push("log.dir");
        log.dir = current.log.dir.clone();
    }
    if current.log != log {
        config.log = log;
        applied.push("log");
    }
    if current.root != new.root {
        needs_restart.push("root");
    }
    if current.socket != new.socket {
        needs_restart.push("socket");
    }
    if current.containerd.address != new.containerd.address {
        needs_restart.push("containerd.address");
    }
    if current.containerd.namespace != new.containerd.namespace {
        needs_restart.push("containerd.namespace");
    }
    if current.cgroup_parent != new.cgroup_parent {
        needs_restart.push("cgroup_parent");
    }
    Reload {
        config,
        applied,
        needs_restart,
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
