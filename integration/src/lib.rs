//! Test harness for holdfast's end-to-end tests: a private containerd per
//! test, a busybox rootfs, `ctr` helpers, a direct shim client and leak
//! checks.
//!
//! ```no_run
//! use holdfast_integration::each_version;
//! #[test]
//! fn a_task_runs() {
//!     each_version(|cd| {
//!         let id = cd.id();
//!         cd.run_detached(&id, &["/bin/sleep", "100"])?;
//!         cd.assert_clean()
//!     });
//! }
//! ```
//!
//! Environment:
//! - `HOLDFAST_CONTAINERD`: containerd versions to run against, `1.6`,
//!   `1.7` or `1.6,1.7` (default `1.6`).
//! - `HOLDFAST_TEST_RUNTIME`: the runtime under test (default
//!   `io.rust.shim.v2`; `io.containerd.runc.v2` runs the same tests against
//!   the Go shim, to check the tests themselves).
//! - `HOLDFAST_BIN_DIR`: where the built shim is (default
//!   `<repo>/target/release`), put first on containerd's PATH.
//! - `HOLDFAST_CACHE`: where `make setup` unpacked containerd 1.7 (default
//!   `<repo>/.cache`).
//! - `HOLDFAST_KEEP_FIXTURE=1`: keep the fixture folders for debugging.
//!
//! Every fixture has its own folder under /tmp (short socket paths), its
//! own namespace, ids, cgroup parent and rootfs, so tests may run in
//! parallel; its drop guard tears everything down even when the test panics.

pub mod api;
pub mod cmd;
pub mod containerd;
pub mod counter;
pub mod cri;
pub mod cri_outage;
pub mod events;
pub mod image;
pub mod logs;
pub mod procs;
pub mod rootfs;
pub mod shim_client;
pub mod system;

use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, Result};

pub use cmd::Output;
pub use containerd::{deleted_exit_status, Containerd, TaskRow};
pub use events::{Event, Events};
pub use shim_client::{RpcError, ShimClient};

/// The runtime name of holdfast's shim.
pub const RUST_RUNTIME: &str = "io.rust.shim.v2";
/// The runtime name of containerd's Go shim.
pub const GO_RUNTIME: &str = "io.containerd.runc.v2";
/// The binary containerd runs for [`RUST_RUNTIME`].
pub const RUST_SHIM_BINARY: &str = "containerd-shim-shim-v2";

/// A containerd version the suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Debian 12's containerd 1.6.20, installed in /usr/bin.
    V1_6,
    /// Debian 13's containerd 1.7.24, unpacked by `make setup` into the cache.
    V1_7,
}

impl Version {
    /// Parses `1.6` or `1.7`.
    pub fn parse(s: &str) -> Result<Version> {
        match s.trim() {
            "1.6" => Ok(Version::V1_6),
            "1.7" => Ok(Version::V1_7),
            other => bail!("unknown containerd version {other:?} (want 1.6 or 1.7)"),
        }
    }

    /// The folder holding this version's containerd, ctr and Go shim.
    pub fn bin_dir(self) -> PathBuf {
        match self {
            Version::V1_6 => PathBuf::from("/usr/bin"),
            Version::V1_7 => cache_dir().join("containerd-1.7.24/usr/bin"),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1_6 => "1.6",
            Version::V1_7 => "1.7",
        })
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// `$HOLDFAST_CACHE`, default `<repo>/.cache`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("HOLDFAST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache"))
}

/// `$HOLDFAST_BIN_DIR`, default `<repo>/target/release`.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("HOLDFAST_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release"))
}

/// The versions named by `HOLDFAST_CONTAINERD` (default `1.6`).
pub fn versions() -> Result<Vec<Version>> {
    let raw = std::env::var("HOLDFAST_CONTAINERD").unwrap_or_else(|_| "1.6".to_string());
    raw.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(Version::parse)
        .collect()
}

/// The runtime under test (`HOLDFAST_TEST_RUNTIME`, default
/// [`RUST_RUNTIME`]).
pub fn runtime() -> String {
    std::env::var("HOLDFAST_TEST_RUNTIME").unwrap_or_else(|_| RUST_RUNTIME.to_string())
}

/// True when the tests run against containerd's Go shim (to validate the
/// tests); expectations where holdfast must do better than it are relaxed
/// or inverted then, and say so.
pub fn is_go_shim() -> bool {
    runtime().starts_with("io.containerd.runc.")
}

/// The binary containerd runs for [`runtime()`]: `containerd-shim-` and
/// the runtime name's last two dot-separated parts joined by `-`.
pub fn shim_binary() -> String {
    let rt = runtime();
    let parts: Vec<&str> = rt.rsplitn(3, '.').collect();
    match parts.as_slice() {
        [version, name, _] => format!("containerd-shim-{name}-{version}"),
        _ => format!("containerd-shim-{rt}"),
    }
}

/// True when running as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A number from the environment, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// A private containerd fixture [`each_version_of`] can start and tear
/// down: [`Containerd`], or [`cri::Cri`] (the same with the CRI plugin).
pub trait Fixture: Sized {
    /// Starts one for the current test (named after its thread).
    fn start(version: Version) -> Result<Self>;
    /// Tears everything down; what could not be cleaned.
    fn teardown(&self) -> Vec<String>;
}

impl Fixture for Containerd {
    fn start(version: Version) -> Result<Self> {
        Containerd::start(version)
    }
    fn teardown(&self) -> Vec<String> {
        Containerd::teardown(self)
    }
}

/// Runs `test` once per containerd version of `HOLDFAST_CONTAINERD`, each
/// time on a fresh [`Containerd`]. Skips (with a message) when not root;
/// panics with the error chain (after the fixture's log tail) on failure.
pub fn each_version(test: impl Fn(&Containerd) -> Result<()>) {
    each_version_of(test)
}

/// [`each_version`] on any [`Fixture`], e.g. `each_version_of(|cri:
/// &cri::Cri| ...)`.
pub fn each_version_of<F: Fixture>(test: impl Fn(&F) -> Result<()>) {
    let name = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    if !is_root() {
        eprintln!(
            "skipped {name}: needs root (a private containerd, runc, mounts and cgroups); CI runs as root"
        );
        return;
    }
    let versions = match versions() {
        Ok(v) => v,
        Err(e) => panic!("HOLDFAST_CONTAINERD: {e:#}"),
    };
    let rt = runtime();
    if rt == RUST_RUNTIME {
        let shim = bin_dir().join(RUST_SHIM_BINARY);
        if !shim.exists() {
            panic!(
                "{} is missing: build it first (make build) or point HOLDFAST_BIN_DIR at it",
                shim.display()
            );
        }
    }
    for v in versions {
        eprintln!("{name}: containerd {v}, runtime {rt}");
        let cd = match F::start(v) {
            Ok(cd) => cd,
            Err(e) => panic!("start containerd {v}: {e:#}"),
        };
        if let Err(e) = test(&cd) {
            panic!("containerd {v}, runtime {rt}: {e:#}");
        }
        let errors = cd.teardown();
        if !errors.is_empty() {
            panic!("containerd {v}: teardown left: {}", errors.join("; "));
        }
    }
}

/// Checks that `out` is a failure whose text names at least one of `words`
/// (lower-case gRPC code words such as `not found`, `already exists`,
/// `failed precondition`, `invalid argument`, or a path).
pub fn expect_failure(out: &Output, words: &[&str]) -> Result<()> {
    if out.success() {
        bail!("expected a failure naming one of {words:?}, but it succeeded:\n{out}");
    }
    let text = out.text_lower();
    if !words.iter().any(|w| text.contains(&w.to_lowercase())) {
        bail!("expected an error naming one of {words:?}, got:\n{out}");
    }
    Ok(())
}
