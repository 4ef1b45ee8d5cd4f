//! Validation of ids before any path is built from them.

use crate::error::{Error, Result};

/// containerd's limit on identifier length.
pub const MAX_ID_LEN: usize = 76;

/// Checks a container or exec id against containerd's identifier rules:
/// 1 to 76 characters, letters and digits separated by single `.`, `_` or
/// `-`. No `/`, no `..`, nothing a path could be escaped with.
pub fn id(kind: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{kind} id must not be empty"
        )));
    }
    if id.len() > MAX_ID_LEN {
        return Err(Error::InvalidArgument(format!(
            "{kind} id {:?}... is {} characters long, the limit is {MAX_ID_LEN}",
            &id[..16.min(id.len())],
            id.len()
        )));
    }
    let mut prev_sep = true;
    for c in id.chars() {
        let sep = matches!(c, '.' | '_' | '-');
        if !(c.is_ascii_alphanumeric() || sep) || (sep && prev_sep) {
            return Err(Error::InvalidArgument(format!(
                "{kind} id {id:?} is invalid: use letters and digits separated by single '.', '_' or '-'"
            )));
        }
        prev_sep = sep;
    }
    if prev_sep {
        return Err(Error::InvalidArgument(format!(
            "{kind} id {id:?} must not end with a separator"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_containerd_style_ids() {
        for ok in ["c1", "my-task.v2_x", "A0", &"a".repeat(76)] {
            id("task", ok).unwrap();
        }
    }

    #[test]
    fn rejects_paths_and_oddities() {
        for bad in [
            "",
            "../x",
            "a/b",
            "..",
            ".a",
            "a.",
            "a..b",
            "a b",
            "é",
            &"a".repeat(77),
        ] {
            assert!(
                matches!(id("task", bad), Err(Error::InvalidArgument(_))),
                "{bad:?} accepted"
            );
        }
    }
}
