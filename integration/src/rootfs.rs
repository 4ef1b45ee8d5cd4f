//! A busybox-static root filesystem, private to each fixture.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Where busybox-static installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Builds a rootfs at `dir`: `/bin/busybox` plus a symlink per applet, and
/// the folders runc and the tests expect.
pub fn busybox(dir: &Path) -> Result<()> {
    let out = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .with_context(|| format!("run {BUSYBOX} --list (install busybox-static)"))?;
    if !out.status.success() {
        bail!("{BUSYBOX} --list failed");
    }
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).with_context(|| format!("create {}", bin.display()))?;
    for d in ["proc", "sys", "dev", "tmp", "etc", "root", "run"] {
        fs::create_dir_all(dir.join(d)).with_context(|| format!("create {d} in rootfs"))?;
    }
    fs::copy(BUSYBOX, bin.join("busybox")).context("copy busybox into the rootfs")?;
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        symlink("busybox", bin.join(applet)).with_context(|| format!("link applet {applet}"))?;
    }
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
        .context("write etc/passwd")?;
    fs::write(dir.join("etc/group"), "root:x:0:\n").context("write etc/group")?;
    Ok(())
}
