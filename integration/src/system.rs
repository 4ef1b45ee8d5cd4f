//! Host state a test can leave behind: mounts, cgroups, FIFOs, shim sockets.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Where shims put their sockets, whatever containerd's config says.
pub const SHIM_SOCKET_DIR: &str = "/run/containerd/s";
/// Where `ctr` puts its client FIFOs.
pub const FIFO_DIR: &str = "/run/containerd/fifo";
/// Where runc keeps its state for shims (one folder per namespace).
pub const RUNC_STATE_DIR: &str = "/run/containerd/runc";

/// Waits (up to `timeout`) until `leaks` returns nothing; an error listing
/// what it still returns then.
pub fn wait_empty(timeout: Duration, leaks: impl Fn() -> Vec<String>) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = leaks();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("left behind after {timeout:?}:\n  {}", left.join("\n  "));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Mount points at or under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts everything at or under `dir`, deepest first (lazily when busy).
pub fn unmount_under(dir: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    for m in mounts_under(dir) {
        if nix::mount::umount2(&m, nix::mount::MntFlags::empty()).is_err() {
            if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
                errors.push(format!("umount {}: {e}", m.display()));
            }
        }
    }
    errors
}

/// The cgroup hierarchy roots: each v1 controller mount and the unified one
/// (or just /sys/fs/cgroup on a pure v2 host).
pub fn cgroup_roots() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base.to_path_buf()];
    }
    let Ok(dir) = fs::read_dir(base) else {
        return Vec::new();
    };
    let mut roots: Vec<PathBuf> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        // Skip the symlinks (cpu -> cpu,cpuacct) so each hierarchy is seen once.
        .filter(|p| {
            fs::symlink_metadata(p)
                .map(|m| m.file_type().is_dir())
                .unwrap_or(false)
        })
        .collect();
    roots.sort();
    roots
}

fn relative(parent: &str) -> &str {
    parent.trim_start_matches('/')
}

/// Every cgroup directory strictly below `parent` (e.g. `/holdfast-it-x`) in
/// any hierarchy.
pub fn cgroups_below(parent: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for root in cgroup_roots() {
        let top = root.join(relative(parent));
        let mut stack = vec![top];
        while let Some(d) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.filter_map(|e| e.ok()) {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    out.push(e.path());
                    stack.push(e.path());
                }
            }
        }
    }
    out
}

/// Every directory at or under `parent` in every hierarchy, deepest first.
fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = cgroup_roots()
        .into_iter()
        .map(|r| r.join(relative(parent)))
        .filter(|d| d.is_dir())
        .collect();
    dirs.extend(cgroups_below(parent));
    dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    dirs
}

/// Pids in any cgroup at or under `parent`.
pub fn cgroup_pids(parent: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = cgroup_dirs(parent)
        .iter()
        .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Thaws every frozen cgroup at or under `parent` (a frozen process cannot
/// die from SIGKILL), kills what runs there, and removes the directories,
/// deepest first, retrying while the processes exit.
pub fn remove_cgroups(parent: &str) -> Vec<String> {
    if !parent.starts_with("/holdfast-") {
        return vec![format!("refusing to remove cgroup {parent}")];
    }
    for d in cgroup_dirs(parent) {
        let state = d.join("freezer.state");
        if state.exists() {
            let _ = fs::write(&state, "THAWED");
        }
        let freeze = d.join("cgroup.freeze");
        if freeze.exists() {
            let _ = fs::write(&freeze, "0");
        }
    }
    for pid in cgroup_pids(parent) {
        crate::procs::kill9(pid);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut errors = Vec::new();
        for d in cgroup_dirs(parent) {
            if let Err(e) = fs::remove_dir(&d) {
                errors.push(format!("rmdir {}: {e}", d.display()));
            }
        }
        if errors.is_empty() || Instant::now() >= deadline {
            return errors;
        }
        for pid in cgroup_pids(parent) {
            crate::procs::kill9(pid);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The socket a shim of containerd `address` uses for task `id` in `ns`:
/// `/run/containerd/s/<sha256(address/ns/id)>` (both shims agree on it).
pub fn shim_socket_path(address: &Path, ns: &str, id: &str) -> PathBuf {
    let key = address.join(ns).join(id);
    let digest = Sha256::digest(key.as_os_str().as_encoded_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Path::new(SHIM_SOCKET_DIR).join(hex)
}

/// `ctr`'s FIFOs (under /run/containerd/fifo/*/) named after any of `names`
/// (`<id>-stdin`, `<exec-id>-stdout`, ...).
pub fn fifos_for(names: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(dirs) = fs::read_dir(FIFO_DIR) else {
        return out;
    };
    for d in dirs.filter_map(|e| e.ok()) {
        let Ok(files) = fs::read_dir(d.path()) else {
            continue;
        };
        for f in files.filter_map(|e| e.ok()) {
            let name = f.file_name().to_string_lossy().into_owned();
            if names.iter().any(|n| {
                name.strip_prefix(n.as_str())
                    .is_some_and(|rest| rest.starts_with('-'))
            }) {
                out.push(f.path());
            }
        }
    }
    out
}

/// Removes `ctr` FIFO folders that hold FIFOs of `names`.
pub fn remove_fifos_for(names: &[String]) {
    for f in fifos_for(names) {
        let _ = fs::remove_file(&f);
        if let Some(dir) = f.parent() {
            // Only succeeds once the folder is empty.
            let _ = fs::remove_dir(dir);
        }
    }
}
