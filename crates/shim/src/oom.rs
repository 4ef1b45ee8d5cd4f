//! Watches a container's memory cgroup for OOM kills and reports them.
//!
//! cgroup v1: an eventfd registered on `memory.oom_control` through
//! `cgroup.event_control`. cgroup v2: inotify on `memory.events`, reporting
//! each increase of `oom_kill`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::sys;

/// The memory cgroup directory of `pid`.
pub fn memory_cgroup_of(pid: u32, unified: bool) -> Result<PathBuf> {
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| Error::io(format!("read /proc/{pid}/cgroup"), e))?;
    let rel = cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let wanted = if unified {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == "memory")
        };
        wanted.then(|| path.to_string())
    });
    let rel = rel.ok_or_else(|| Error::NotFound(format!("memory cgroup of pid {pid}")))?;
    let mount = if unified {
        PathBuf::from("/sys/fs/cgroup")
    } else {
        memory_mount()?
    };
    Ok(mount.join(rel.trim_start_matches('/')))
}

/// Where the v1 memory controller is mounted.
fn memory_mount() -> Result<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("read /proc/self/mountinfo", e))?;
    info.lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let _source = r.next()?;
            let opts = r.next()?;
            if fstype == "cgroup" && opts.split(',').any(|o| o == "memory") {
                left.split(' ').nth(4).map(PathBuf::from)
            } else {
                None
            }
        })
        .ok_or_else(|| Error::NotFound("cgroup v1 memory controller mount".into()))
}

/// Starts watching `cgroup`; `on_oom` runs for every OOM kill until the
/// cgroup goes away or the handle is aborted.
pub fn watch(
    cgroup: &Path,
    unified: bool,
    on_oom: impl Fn() + Send + Sync + 'static,
) -> Result<JoinHandle<()>> {
    if unified {
        watch_v2(cgroup, on_oom)
    } else {
        watch_v1(cgroup, on_oom)
    }
}

fn watch_v1(cgroup: &Path, on_oom: impl Fn() + Send + Sync + 'static) -> Result<JoinHandle<()>> {
    let control = std::fs::File::open(cgroup.join("memory.oom_control"))
        .map_err(|e| Error::io(format!("open {}/memory.oom_control", cgroup.display()), e))?;
    let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(|e| Error::io("eventfd", e.into()))?;
    let efd: OwnedFd = efd.into();
    std::fs::write(
        cgroup.join("cgroup.event_control"),
        format!("{} {}", efd.as_raw_fd(), control.as_raw_fd()),
    )
    .map_err(|e| Error::io(format!("register oom eventfd in {}", cgroup.display()), e))?;
    let afd = sys::async_fd(efd).map_err(|e| Error::io("register eventfd", e))?;
    let cgroup = cgroup.to_path_buf();
    Ok(tokio::spawn(async move {
        let _control = control;
        loop {
            let Ok(mut guard) = afd.readable().await else {
                return;
            };
            let mut buf = [0u8; 8];
            match guard.try_io(|fd| {
                nix::unistd::read(fd.get_ref(), &mut buf).map_err(std::io::Error::from)
            }) {
                Ok(Ok(8)) => {
                    // The eventfd also fires when the cgroup is removed.
                    if !cgroup.exists() {
                        return;
                    }
                    on_oom();
                }
                Ok(_) => return,
                Err(_would_block) => continue,
            }
        }
    }))
}

fn oom_kills(events: &Path) -> u64 {
    std::fs::read_to_string(events)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("oom_kill ").map(|v| v.trim().parse().ok()))
                .flatten()
        })
        .unwrap_or(0)
}

fn watch_v2(cgroup: &Path, on_oom: impl Fn() + Send + Sync + 'static) -> Result<JoinHandle<()>> {
    let events = cgroup.join("memory.events");
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .map_err(|e| Error::io("inotify_init", e.into()))?;
    inotify
        .add_watch(&events, AddWatchFlags::IN_MODIFY)
        .map_err(|e| Error::io(format!("watch {}", events.display()), e.into()))?;
    let afd =
        sys::async_fd(OwnedFd::from(inotify)).map_err(|e| Error::io("register inotify", e))?;
    Ok(tokio::spawn(async move {
        let mut seen = oom_kills(&events);
        loop {
            let Ok(mut guard) = afd.readable().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            match guard.try_io(|fd| {
                nix::unistd::read(fd.get_ref(), &mut buf).map_err(std::io::Error::from)
            }) {
                Ok(Ok(_)) => {
                    if !events.exists() {
                        return;
                    }
                    let now = oom_kills(&events);
                    if now > seen {
                        on_oom();
                    }
                    seen = now;
                }
                Ok(Err(_)) => return,
                Err(_would_block) => continue,
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_oom_kill_counter() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("memory.events");
        std::fs::write(&f, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n").unwrap();
        assert_eq!(oom_kills(&f), 2);
        assert_eq!(oom_kills(&dir.path().join("missing")), 0);
    }

    #[test]
    fn finds_our_own_memory_cgroup() {
        let unified = crate::stats::unified_cgroups();
        let path = memory_cgroup_of(std::process::id(), unified).unwrap();
        assert!(path.exists(), "{}", path.display());
    }
}
