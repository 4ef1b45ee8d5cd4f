//! The rules for entry paths and symbolic link targets, shared by the
//! writer (so it never produces what the importer rejects) and the importer.

use crate::{ArchiveError, CRIU_DIR, ROOTFS_DIFF_DIR};

/// Longest entry path accepted, in bytes (Linux's `PATH_MAX`).
pub(crate) const MAX_PATH_BYTES: usize = 4096;
/// Longest path component accepted, in bytes (Linux's `NAME_MAX`).
pub(crate) const MAX_NAME_BYTES: usize = 255;

/// The top-level folder an entry lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Root {
    /// `criu/`: the CRIU images.
    Criu,
    /// `rootfs-diff/`: the container's filesystem changes.
    RootfsDiff,
}

/// Checks an entry path: relative, `/`-separated, no empty, `.` or `..`
/// components, bounded lengths, and under `criu` or `rootfs-diff` (or one
/// of them itself). Returns the root it is under.
pub(crate) fn check_path(path: &str) -> Result<Root, ArchiveError> {
    let unsafe_path = |reason| ArchiveError::UnsafePath {
        path: path.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Err(unsafe_path("empty path"));
    }
    if path.starts_with('/') {
        return Err(unsafe_path("absolute path"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(unsafe_path("path longer than 4096 bytes"));
    }
    if path.contains('\0') {
        return Err(unsafe_path("NUL byte in path"));
    }
    for component in path.split('/') {
        match component {
            "" => return Err(unsafe_path("empty path component")),
            "." => return Err(unsafe_path("`.` component")),
            ".." => return Err(unsafe_path("`..` component")),
            c if c.len() > MAX_NAME_BYTES => {
                return Err(unsafe_path("component longer than 255 bytes"))
            }
            _ => {}
        }
    }
    match path.split('/').next() {
        Some(CRIU_DIR) => Ok(Root::Criu),
        Some(ROOTFS_DIFF_DIR) => Ok(Root::RootfsDiff),
        _ => Err(unsafe_path("outside criu/ and rootfs-diff/")),
    }
}

/// The parent of a checked entry path, `None` for a top-level folder.
pub(crate) fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('/').map(|(parent, _)| parent)
}

/// Checks a symbolic link target. Under `criu/` a target must be relative
/// and have no `..` component, so it only reaches down from the link's
/// folder; as every link there obeys the same rule, no chain of links can
/// resolve outside `criu/` (a lexical check allowing `..` could be fooled by
/// a link among the components). Under `rootfs-diff/` targets are the
/// container's business (absolute ones are resolved in the container's
/// root); they only have to be non-empty, bounded and free of NUL bytes.
pub(crate) fn check_link_target(path: &str, root: Root, target: &str) -> Result<(), ArchiveError> {
    if target.is_empty() || target.len() > MAX_PATH_BYTES || target.contains('\0') {
        return Err(ArchiveError::EntryMismatch {
            path: path.to_owned(),
            reason: "symbolic link target is empty, longer than 4096 bytes or has a NUL byte"
                .to_owned(),
        });
    }
    if root == Root::Criu && (target.starts_with('/') || target.split('/').any(|c| c == "..")) {
        return Err(ArchiveError::SymlinkEscape {
            path: path.to_owned(),
            target: target.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_outside_the_two_roots_or_with_dot_components_are_refused() {
        for bad in [
            "",
            "/etc/x",
            "../x",
            "criu/../x",
            "criu/./x",
            "criu//x",
            "criu/",
            "other/x",
            "holdfast-archive.json",
            "criurootfs",
        ] {
            assert!(
                matches!(check_path(bad), Err(ArchiveError::UnsafePath { .. })),
                "{bad:?} accepted"
            );
        }
        assert_eq!(check_path("criu").ok(), Some(Root::Criu));
        assert_eq!(check_path("criu/pages-1.img").ok(), Some(Root::Criu));
        assert_eq!(
            check_path("rootfs-diff/etc/..x").ok(),
            Some(Root::RootfsDiff)
        );
        assert!(check_path(&format!("criu/{}", "a".repeat(256))).is_err());
    }

    #[test]
    fn criu_links_must_stay_inside_criu_and_rootfs_links_are_free() {
        assert!(check_link_target("criu/l", Root::Criu, "pages-1.img").is_ok());
        assert!(check_link_target("criu/a/l", Root::Criu, "b/./c").is_ok());
        // `up/..` would be inside `criu/` lexically, yet `up` may itself be a
        // link to `..`: any `..` is refused.
        for bad in ["/etc", "..", "../criu/x", "a/../../x", "up/../b", "a/.."] {
            assert!(
                matches!(
                    check_link_target("criu/l", Root::Criu, bad),
                    Err(ArchiveError::SymlinkEscape { .. })
                ),
                "{bad:?} accepted"
            );
        }
        assert!(check_link_target("rootfs-diff/bin/sh", Root::RootfsDiff, "/bin/busybox").is_ok());
        assert!(check_link_target("rootfs-diff/l", Root::RootfsDiff, "").is_err());
    }

    #[test]
    fn parent_of_a_top_level_folder_is_none() {
        assert_eq!(parent("criu"), None);
        assert_eq!(parent("criu/a/b"), Some("criu/a"));
    }
}
