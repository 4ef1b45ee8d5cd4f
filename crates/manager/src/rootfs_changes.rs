//! Applying an imported container's rootfs changes (the `rootfs-diff/`
//! folder holdfast-archive extracted) to the empty upper folder of its new
//! overlayfs snapshot, before a task is created on it.
//!
//! Folders, files and symbolic links are moved (copied when the two
//! folders are on different filesystems) with their modes and owners; an
//! OCI whiteout `.wh.NAME` becomes the overlay whiteout `NAME`, a 0/0
//! character device, which hides the image's `NAME`. Every entry is
//! created new (never over an existing name) below folders made here, and
//! links are created, never followed, so nothing is written outside the
//! upper folder.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use holdfast_archive::WHITEOUT_PREFIX;

/// What [`apply`] moved into the upper folder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Folders, files and links.
    pub entries: u64,
    /// Whiteouts.
    pub whiteouts: u64,
}

/// Applies the changes in `src` to `upper`, which must exist and be empty.
/// Blocking: run it off the async threads.
pub fn apply(src: &Path, upper: &Path) -> io::Result<Applied> {
    if fs::read_dir(upper)?.next().is_some() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} is not empty", upper.display()),
        ));
    }
    let mut applied = Applied::default();
    apply_dir(src, upper, &mut applied)?;
    Ok(applied)
}

fn apply_dir(src: &Path, dst: &Path, applied: &mut Applied) -> io::Result<()> {
    let mut entries = fs::read_dir(src)?.collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let from = entry.path();
        if let Some(hidden) = name.to_str().and_then(|n| n.strip_prefix(WHITEOUT_PREFIX)) {
            if hidden.is_empty() || hidden.starts_with(WHITEOUT_PREFIX) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: not a whiteout holdfast can apply", from.display()),
                ));
            }
            whiteout(&dst.join(hidden))?;
            applied.whiteouts += 1;
            continue;
        }
        let to = dst.join(&name);
        let meta = fs::symlink_metadata(&from)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            fs::create_dir(&to)?;
            apply_dir(&from, &to, applied)?;
            // After the children: a read-only folder can still receive them.
            std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))?;
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
            std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))?;
        } else if kind.is_file() {
            move_file(&from, &to, &meta)?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a file, folder or link", from.display()),
            ));
        }
        applied.entries += 1;
    }
    Ok(())
}

/// Renames `from` to `to` (which must not exist), or copies it when they
/// are on different filesystems; the owner and mode follow.
fn move_file(from: &Path, to: &Path, meta: &fs::Metadata) -> io::Result<()> {
    if fs::symlink_metadata(to).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists", to.display()),
        ));
    }
    match fs::rename(from, to) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => {}
        Err(e) => return Err(e),
    }
    let mut input = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(from)?;
    let mut output = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    io::copy(&mut input, &mut output)?;
    output.sync_all()?;
    std::os::unix::fs::fchown(&output, Some(meta.uid()), Some(meta.gid()))?;
    output.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    Ok(())
}

/// An overlayfs whiteout at `path`: a character device 0/0.
fn whiteout(path: &Path) -> io::Result<()> {
    use nix::sys::stat::{mknod, Mode, SFlag};
    mknod(path, SFlag::S_IFCHR, Mode::empty(), 0).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn files_folders_links_and_whiteouts_land_in_the_upper_folder() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("diff");
        let upper = tmp.path().join("upper");
        fs::create_dir_all(src.join("etc/ro")).expect("mkdir");
        fs::create_dir(&upper).expect("mkdir");
        fs::write(src.join("etc/app.conf"), b"x=1").expect("write");
        fs::set_permissions(src.join("etc/app.conf"), fs::Permissions::from_mode(0o640))
            .expect("chmod");
        fs::write(src.join("etc/ro/inner"), b"in").expect("write");
        fs::set_permissions(src.join("etc/ro"), fs::Permissions::from_mode(0o555)).expect("chmod");
        std::os::unix::fs::symlink("/etc/shadow", src.join("link")).expect("symlink");
        fs::write(src.join(".wh.gone"), b"").expect("write");
        let applied = apply(&src, &upper).expect("apply");
        assert_eq!(
            applied,
            Applied {
                entries: 5,
                whiteouts: 1
            }
        );
        assert_eq!(fs::read(upper.join("etc/app.conf")).expect("read"), b"x=1");
        let mode = |p: &str| {
            fs::symlink_metadata(upper.join(p))
                .expect("stat")
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("etc/app.conf"), 0o640);
        assert_eq!(mode("etc/ro"), 0o555);
        assert_eq!(fs::read(upper.join("etc/ro/inner")).expect("read"), b"in");
        assert_eq!(
            fs::read_link(upper.join("link")).expect("link"),
            Path::new("/etc/shadow"),
            "the link is made, not followed"
        );
        let gone = fs::symlink_metadata(upper.join("gone")).expect("whiteout");
        assert!(gone.file_type().is_char_device());
        assert_eq!(gone.rdev(), 0);
        assert!(!upper.join(".wh.gone").exists());
        fs::set_permissions(upper.join("etc/ro"), fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }

    #[test]
    fn a_non_empty_upper_folder_or_a_bad_whiteout_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("diff");
        let upper = tmp.path().join("upper");
        fs::create_dir(&src).expect("mkdir");
        fs::create_dir(&upper).expect("mkdir");
        fs::write(upper.join("there"), b"").expect("write");
        assert!(apply(&src, &upper).is_err(), "a non-empty upper folder");
        fs::remove_file(upper.join("there")).expect("rm");
        fs::write(src.join(".wh..wh..opq"), b"").expect("write");
        assert!(apply(&src, &upper).is_err(), "an opaque marker");
    }
}
