//! Validation of a [`ContainerSpec`] before anything is created.
//!
//! [`validate_spec`] checks the fields and that a rootfs exists;
//! [`validate_spec_fields`] checks the fields alone (no filesystem access),
//! as the store does for records it loads. Errors name the field; they
//! never carry an environment value.

use std::path::{Component, Path};
use std::str::FromStr;

use holdfast_api::v1::{ContainerSpec, RestartPolicyKind};
use nix::sys::signal::Signal;

use crate::error::{Error, Result};

/// Longest container name.
pub const MAX_NAME_LEN: usize = 128;

/// Highest signal number accepted (Linux's `SIGRTMAX`).
pub const MAX_SIGNAL: i32 = 64;

/// Linux's `SIGRTMIN` as seen by programs linked with glibc or musl (the
/// C library keeps 32 and 33 for itself).
const SIGRTMIN: i32 = 34;

/// Checks a spec's fields and that its rootfs (if any) is an existing
/// folder: [`Error::Invalid`] naming the field, or [`Error::NotFound`] for a
/// missing rootfs.
pub fn validate_spec(spec: &ContainerSpec) -> Result<()> {
    validate_spec_fields(spec)?;
    if !spec.rootfs.is_empty() {
        check_rootfs_exists(Path::new(&spec.rootfs))?;
    }
    Ok(())
}

/// Checks a spec's fields without touching the filesystem.
pub fn validate_spec_fields(spec: &ContainerSpec) -> Result<()> {
    validate_name(&spec.name)?;
    match (spec.image.is_empty(), spec.rootfs.is_empty()) {
        (true, true) => return Err(Error::invalid("image/rootfs", "one of them is required")),
        (false, false) => {
            return Err(Error::invalid(
                "image/rootfs",
                "give either an image or a rootfs, not both",
            ))
        }
        (false, true) => check_image(&spec.image)?,
        (true, false) => {
            check_abs_path("rootfs", &spec.rootfs)?;
            if spec.command.is_empty() {
                return Err(Error::invalid(
                    "command",
                    "required with a rootfs (only an image supplies a default)",
                ));
            }
        }
    }
    check_command(&spec.command)?;
    check_env_list(&spec.env)?;
    if !spec.working_dir.is_empty() {
        check_abs_path("working_dir", &spec.working_dir)?;
    }
    for (i, m) in spec.mounts.iter().enumerate() {
        check_abs_path(&format!("mounts[{i}].source"), &m.source)?;
        check_abs_path(&format!("mounts[{i}].destination"), &m.destination)?;
    }
    for key in spec.labels.keys() {
        if key.is_empty() {
            return Err(Error::invalid("labels", "a key is empty"));
        }
        if key.contains('\0') {
            return Err(Error::invalid(
                format!("labels key {key:?}"),
                "contains a NUL byte",
            ));
        }
    }
    if spec.labels.values().any(|v| v.contains('\0')) {
        return Err(Error::invalid("labels", "a value contains a NUL byte"));
    }
    if let Some(r) = &spec.resources {
        if r.memory_bytes < 0 {
            return Err(Error::invalid(
                format!("resources.memory_bytes {}", r.memory_bytes),
                "must not be negative (0: no limit)",
            ));
        }
        if !r.cpus.is_finite() || r.cpus < 0.0 {
            return Err(Error::invalid(
                format!("resources.cpus {}", r.cpus),
                "must be a finite number, not negative (0: no limit)",
            ));
        }
        if r.pids_limit < 0 {
            return Err(Error::invalid(
                format!("resources.pids_limit {}", r.pids_limit),
                "must not be negative (0: no limit)",
            ));
        }
    }
    let kind = restart_kind(spec)?;
    if let Some(policy) = &spec.restart {
        if policy.max_retries != 0 && kind != RestartPolicyKind::OnFailure {
            return Err(Error::invalid(
                "restart.max_retries",
                "only allowed with the on-failure policy",
            ));
        }
    }
    if spec.auto_remove && !matches!(kind, RestartPolicyKind::No) {
        return Err(Error::invalid(
            "auto_remove",
            format!(
                "cannot be combined with restart policy {}",
                restart_kind_name(kind)
            ),
        ));
    }
    if !spec.stop_signal.is_empty() {
        parse_signal(&spec.stop_signal).map_err(|_| {
            Error::invalid(
                format!("stop_signal {:?}", spec.stop_signal),
                "not a signal name (e.g. SIGTERM or TERM) or number 1-64",
            )
        })?;
    }
    if spec.stop_timeout_seconds < -1 {
        return Err(Error::invalid(
            format!("stop_timeout_seconds {}", spec.stop_timeout_seconds),
            "must be -1 (wait forever), 0 (the default, 10) or more",
        ));
    }
    if let Some(schedule) = &spec.checkpoint_schedule {
        crate::schedule::parse_schedule(schedule)?;
    }
    Ok(())
}

/// Checks a container name: 1 to [`MAX_NAME_LEN`] of `[A-Za-z0-9_.-]`,
/// starting with a letter or digit (so no `/`, `..` as a whole, or NUL).
pub fn validate_name(name: &str) -> Result<()> {
    check_id("name", name)
}

/// Checks a checkpoint's name, which names its folder: the rules of a
/// container name ([`validate_name`]); the error names `checkpoint`.
pub fn validate_checkpoint_name(name: &str) -> Result<()> {
    check_id("checkpoint", name)
}

/// The rules of a name that becomes a path component: 1 to
/// [`MAX_NAME_LEN`] of `[A-Za-z0-9_.-]`, starting with a letter or digit.
fn check_id(field: &str, name: &str) -> Result<()> {
    let bad = |reason: &str| Err(Error::invalid(format!("{field} {name:?}"), reason));
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("is longer than 128 characters");
    }
    if name.contains('\0') {
        return bad("contains a NUL byte");
    }
    if name.contains('/') {
        return bad("must not contain '/'");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("must start with a letter or a digit");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(Error::invalid(
            format!("{field} {name:?}"),
            format!("character {c:?} is not allowed (only A-Z a-z 0-9 _ . -)"),
        ));
    }
    Ok(())
}

/// Parses a signal as a name (`SIGTERM`, `TERM`, `sigterm`, `SIGRTMIN+3`)
/// or a number from 1 to [`MAX_SIGNAL`]; returns its number.
pub fn parse_signal(s: &str) -> Result<i32> {
    let bad = || {
        Error::invalid(
            format!("signal {s:?}"),
            "not a signal name (e.g. SIGTERM or TERM) or number 1-64",
        )
    };
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=MAX_SIGNAL).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    let upper = s.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(rt) = parse_realtime(bare) {
        return rt.ok_or_else(bad);
    }
    Signal::from_str(&format!("SIG{bare}"))
        .map(|sig| sig as i32)
        .map_err(|_| bad())
}

/// `RTMIN`, `RTMIN+n`, `RTMAX`, `RTMAX-n`: `None` if not such a name,
/// `Some(None)` if out of range.
fn parse_realtime(bare: &str) -> Option<Option<i32>> {
    let (base, rest, sign) = if let Some(rest) = bare.strip_prefix("RTMIN") {
        (SIGRTMIN, rest, 1)
    } else if let Some(rest) = bare.strip_prefix("RTMAX") {
        (MAX_SIGNAL, rest, -1)
    } else {
        return None;
    };
    let offset = match rest {
        "" => 0,
        _ => {
            let digits = if sign == 1 {
                rest.strip_prefix('+')
            } else {
                rest.strip_prefix('-')
            };
            match digits.and_then(|d| d.parse::<i32>().ok()) {
                Some(n) => n,
                None => return Some(None),
            }
        }
    };
    let n = base + sign * offset;
    Some((SIGRTMIN..=MAX_SIGNAL).contains(&n).then_some(n))
}

/// The spec's restart policy kind (unset: `NO`), or an error for a number
/// that is no kind.
pub fn restart_kind(spec: &ContainerSpec) -> Result<RestartPolicyKind> {
    let Some(policy) = &spec.restart else {
        return Ok(RestartPolicyKind::No);
    };
    match RestartPolicyKind::try_from(policy.kind) {
        Ok(RestartPolicyKind::Unspecified) => Ok(RestartPolicyKind::No),
        Ok(kind) => Ok(kind),
        Err(_) => Err(Error::invalid(
            format!("restart.kind {}", policy.kind),
            "not a restart policy (no, on-failure, always, unless-stopped)",
        )),
    }
}

/// The CLI's name of a restart policy kind (`no`, `on-failure`, ...).
pub fn restart_kind_name(kind: RestartPolicyKind) -> &'static str {
    match kind {
        RestartPolicyKind::Unspecified | RestartPolicyKind::No => "no",
        RestartPolicyKind::OnFailure => "on-failure",
        RestartPolicyKind::Always => "always",
        RestartPolicyKind::UnlessStopped => "unless-stopped",
    }
}

fn check_image(image: &str) -> Result<()> {
    if image.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(
            format!("image {image:?}"),
            "must not contain spaces or control characters",
        ));
    }
    Ok(())
}

/// Checks a command's arguments: no NUL byte, a non-empty program (an
/// empty command is the caller's to allow or refuse).
pub fn check_command(command: &[String]) -> Result<()> {
    for (i, arg) in command.iter().enumerate() {
        if arg.contains('\0') {
            return Err(Error::invalid(
                format!("command[{i}]"),
                "contains a NUL byte",
            ));
        }
    }
    if command.first().is_some_and(|c| c.is_empty()) {
        return Err(Error::invalid("command[0]", "the program is empty"));
    }
    Ok(())
}

/// Checks `KEY=VALUE` entries; messages name the index, never a value.
pub fn check_env_list(env: &[String]) -> Result<()> {
    for (i, entry) in env.iter().enumerate() {
        check_env(i, entry)?;
    }
    Ok(())
}

fn check_env(i: usize, entry: &str) -> Result<()> {
    // Only the index and, when the entry is well formed, the key: never
    // the value.
    let what = format!("env[{i}]");
    let Some((key, value)) = entry.split_once('=') else {
        return Err(Error::invalid(what, "must be KEY=VALUE"));
    };
    if key.is_empty() {
        return Err(Error::invalid(what, "the key is empty (KEY=VALUE)"));
    }
    if key.contains('\0') || value.contains('\0') {
        return Err(Error::invalid(what, "contains a NUL byte"));
    }
    Ok(())
}

/// Checks that `path` is absolute and has no `..`.
pub fn check_abs_path(what: &str, path: &str) -> Result<()> {
    if path.contains('\0') {
        return Err(Error::invalid(what, "contains a NUL byte"));
    }
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(Error::invalid(
            format!("{what} {path:?}"),
            "must be an absolute path",
        ));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(Error::invalid(
            format!("{what} {path:?}"),
            "must not contain '..'",
        ));
    }
    Ok(())
}

fn check_rootfs_exists(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(Error::invalid(
            format!("rootfs {:?}", path.display().to_string()),
            "is not a folder",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound {
            what: format!("rootfs {}", path.display()),
        }),
        Err(e) => Err(Error::io("stat rootfs", path, e)),
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
