//! Pure parsers of the purely syntactic command line values (restart
//! policies, `K=V`, bind mounts, sizes, durations, times). holdfastd
//! validates the rest (names, signals, paths that must exist).
//!
//! Each parser returns a `String` error; clap puts it after the flag's
//! name, e.g. `invalid value 'x' for '--restart <POLICY>': ...`.

use std::time::Duration;

use holdfast_api::v1::{Mount, RestartPolicy, RestartPolicyKind};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Parses `no`, `on-failure[:MAX]`, `always` or `unless-stopped`.
pub fn restart_policy(s: &str) -> Result<RestartPolicy, String> {
    let (kind, max) = match s.split_once(':') {
        Some((kind, max)) => (kind, Some(max)),
        None => (s, None),
    };
    let kind = match kind {
        "no" => RestartPolicyKind::No,
        "on-failure" => RestartPolicyKind::OnFailure,
        "always" => RestartPolicyKind::Always,
        "unless-stopped" => RestartPolicyKind::UnlessStopped,
        _ => {
            return Err(format!(
                "unknown restart policy {kind:?} (expected no, on-failure[:MAX], always or unless-stopped)"
            ))
        }
    };
    let max_retries = match max {
        None => 0,
        Some(max) if kind == RestartPolicyKind::OnFailure => max.parse::<u32>().map_err(|_| {
            format!("on-failure's maximum retry count {max:?} is not a non-negative integer")
        })?,
        Some(_) => {
            return Err(format!(
                "only on-failure takes a maximum retry count, not {s:?}"
            ))
        }
    };
    Ok(RestartPolicy {
        kind: kind as i32,
        max_retries,
    })
}

/// Parses `K=V` (an environment variable; V may be empty, K may not).
pub fn env_var(s: &str) -> Result<String, String> {
    key_value(s).map(|_| s.to_owned())
}

/// Parses `K=V` into its key and value (a label; V may be empty).
pub fn label(s: &str) -> Result<(String, String), String> {
    key_value(s).map(|(k, v)| (k.to_owned(), v.to_owned()))
}

fn key_value(s: &str) -> Result<(&str, &str), String> {
    match s.split_once('=') {
        Some(("", _)) => Err(format!("{s:?} has an empty key (expected K=V)")),
        Some((k, v)) if !k.contains('\0') && !v.contains('\0') => Ok((k, v)),
        Some(_) => Err("contains a NUL byte".to_owned()),
        None => Err(format!("{s:?} is not of the form K=V")),
    }
}

/// Parses a bind mount `SRC:DST[:ro|rw]`; both paths must be absolute.
pub fn mount(s: &str) -> Result<Mount, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (source, destination, read_only) = match parts.as_slice() {
        [src, dst] => (*src, *dst, false),
        [src, dst, "ro"] => (*src, *dst, true),
        [src, dst, "rw"] => (*src, *dst, false),
        [_, _, opt] => return Err(format!("unknown mount option {opt:?} (expected ro or rw)")),
        _ => return Err(format!("{s:?} is not of the form SRC:DST[:ro]")),
    };
    for (what, path) in [("source", source), ("destination", destination)] {
        if !path.starts_with('/') {
            return Err(format!("the {what} {path:?} is not an absolute path"));
        }
    }
    Ok(Mount {
        source: source.to_owned(),
        destination: destination.to_owned(),
        read_only,
    })
}

/// Parses a size in bytes: an integer with an optional unit `b`, `k`, `m`,
/// `g` or `t` (powers of 1024; case-insensitive, an optional trailing `b`
/// as in `512mb`), e.g. `512m` or `1g`. Must be positive.
pub fn size(s: &str) -> Result<i64, String> {
    let lower = s.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let number: i64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 512m, 1g)"))?;
    let shift = match unit {
        "" | "b" => 0,
        "k" | "kb" => 10,
        "m" | "mb" => 20,
        "g" | "gb" => 30,
        "t" | "tb" => 40,
        _ => {
            return Err(format!(
                "{s:?} has an unknown unit {unit:?} (expected b, k, m, g or t)"
            ))
        }
    };
    if number <= 0 {
        return Err(format!("{s:?} is not a positive size"));
    }
    number
        .checked_mul(1i64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses a positive, finite number of CPUs, e.g. `1.5`.
pub fn cpus(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err(format!("{s:?} is not a positive number of CPUs (e.g. 1.5)")),
    }
}

/// Parses a stop timeout in seconds: `-1` (wait forever) or more.
pub fn stop_timeout(s: &str) -> Result<i64, String> {
    match s.parse::<i64>() {
        Ok(n) if n >= -1 => Ok(n),
        _ => Err(format!(
            "{s:?} is not a number of seconds (-1: wait forever)"
        )),
    }
}

/// Checks a signal name or number (e.g. `SIGTERM`, `TERM`, `15`)
/// syntactically; holdfastd knows which signals exist.
pub fn signal(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-')
    {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not a signal name or number"))
    }
}

/// Parses a duration made of integer-and-unit parts, e.g. `10m`, `2h`,
/// `1h30m`, `500ms`; units `ms`, `s`, `m`, `h`, `d`.
pub fn duration(s: &str) -> Result<Duration, String> {
    holdfast_api::duration::parse(s)
        .ok_or_else(|| format!("{s:?} is not a duration (e.g. 30s, 10m, 1h30m)"))
}

/// Parses `--tail`: a number of lines, or `all` (0, as holdfastd takes
/// it).
pub fn tail(s: &str) -> Result<u64, String> {
    if s == "all" {
        return Ok(0);
    }
    s.parse::<u64>()
        .map_err(|_| format!("{s:?} is not a number of lines (or all)"))
}

/// Parses `--since`: an RFC 3339 time, a Unix time in seconds, or a
/// duration (see [`duration`]) before `now`.
pub fn since(s: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        let secs: i64 = s.parse().map_err(|_| format!("{s:?} is too large"))?;
        return OffsetDateTime::from_unix_timestamp(secs).map_err(|e| format!("{s:?}: {e}"));
    }
    let ago = duration(s).map_err(|_| {
        format!("{s:?} is neither an RFC 3339 time (2024-05-01T12:00:00Z) nor a duration (10m, 2h)")
    })?;
    now.checked_sub(time::Duration::try_from(ago).map_err(|e| format!("{s:?}: {e}"))?)
        .ok_or_else(|| format!("{s:?} is too far in the past"))
}

/// The daemon address of `--host`: `unix:///PATH`, `unix:PATH` or an
/// absolute path; returns the socket's path.
pub fn host(s: &str) -> Result<String, String> {
    let path = s
        .strip_prefix("unix://")
        .or_else(|| s.strip_prefix("unix:"))
        .unwrap_or(s);
    if path.starts_with('/') {
        Ok(path.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a unix socket address (expected unix:///PATH)"
        ))
    }
}

/// A container name for `run`/`create` without `--name`: the last path
/// part of the image (without tag or digest) or rootfs, reduced to
/// `[A-Za-z0-9_.-]`, and `suffix` in hexadecimal.
pub fn default_name(image_or_rootfs: &str, suffix: u32) -> String {
    let base = image_or_rootfs.split('@').next().unwrap_or_default();
    let base = base
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    let base = base.split(':').next().unwrap_or_default();
    let base: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let base = base.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let base = if base.is_empty() { "container" } else { base };
    format!("{base}-{suffix:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_parse_like_docker() {
        let p = restart_policy("on-failure:5").unwrap();
        assert_eq!(
            (p.kind, p.max_retries),
            (RestartPolicyKind::OnFailure as i32, 5)
        );
        assert_eq!(restart_policy("on-failure").unwrap().max_retries, 0);
        assert_eq!(
            restart_policy("no").unwrap().kind,
            RestartPolicyKind::No as i32
        );
        assert_eq!(
            restart_policy("always").unwrap().kind,
            RestartPolicyKind::Always as i32
        );
        assert_eq!(
            restart_policy("unless-stopped").unwrap().kind,
            RestartPolicyKind::UnlessStopped as i32
        );
    }

    #[test]
    fn bad_restart_policies_are_refused() {
        assert!(restart_policy("sometimes")
            .unwrap_err()
            .contains("unknown restart policy"));
        assert!(restart_policy("always:3")
            .unwrap_err()
            .contains("only on-failure"));
        assert!(restart_policy("on-failure:-1").is_err());
        assert!(restart_policy("on-failure:x").is_err());
        assert!(restart_policy("").is_err());
    }

    #[test]
    fn key_values_need_a_key() {
        assert_eq!(env_var("A=b=c").unwrap(), "A=b=c");
        assert_eq!(env_var("EMPTY=").unwrap(), "EMPTY=");
        assert!(env_var("=v").unwrap_err().contains("empty key"));
        assert!(env_var("NOVALUE").unwrap_err().contains("K=V"));
        assert_eq!(
            label("app=web").unwrap(),
            ("app".to_owned(), "web".to_owned())
        );
        assert_eq!(label("flag=").unwrap(), ("flag".to_owned(), String::new()));
        assert!(label("x").is_err());
    }

    #[test]
    fn mounts_need_absolute_paths() {
        let m = mount("/data:/var/data:ro").unwrap();
        assert_eq!(
            (m.source.as_str(), m.destination.as_str(), m.read_only),
            ("/data", "/var/data", true)
        );
        assert!(!mount("/a:/b").unwrap().read_only);
        assert!(!mount("/a:/b:rw").unwrap().read_only);
        assert!(mount("data:/b").unwrap_err().contains("source \"data\""));
        assert!(mount("/a:b").unwrap_err().contains("destination"));
        assert!(mount("/a:/b:rx")
            .unwrap_err()
            .contains("unknown mount option"));
        assert!(mount("/a").is_err());
        assert!(mount("/a:/b:ro:x").is_err());
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(size("512m").unwrap(), 512 << 20);
        assert_eq!(size("1g").unwrap(), 1 << 30);
        assert_eq!(size("1G").unwrap(), 1 << 30);
        assert_eq!(size("64mb").unwrap(), 64 << 20);
        assert_eq!(size("4096").unwrap(), 4096);
        assert_eq!(size("10k").unwrap(), 10240);
        assert!(size("0").is_err());
        assert!(size("1.5g").is_err());
        assert!(size("12x").unwrap_err().contains("unknown unit"));
        assert!(size("m").is_err());
        assert!(size("99999999999t").unwrap_err().contains("too large"));
    }

    #[test]
    fn cpus_timeouts_and_signals() {
        assert_eq!(cpus("1.5").unwrap(), 1.5);
        assert!(cpus("0").is_err());
        assert!(cpus("NaN").is_err());
        assert!(cpus("-2").is_err());
        assert_eq!(stop_timeout("-1").unwrap(), -1);
        assert_eq!(stop_timeout("30").unwrap(), 30);
        assert!(stop_timeout("-2").is_err());
        assert_eq!(signal("SIGTERM").unwrap(), "SIGTERM");
        assert_eq!(signal("9").unwrap(), "9");
        assert_eq!(signal("SIGRTMIN+3").unwrap(), "SIGRTMIN+3");
        assert!(signal("").is_err());
        assert!(signal("SIG TERM").is_err());
    }

    #[test]
    fn durations_add_their_parts() {
        assert_eq!(duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("1d").unwrap(), Duration::from_secs(86400));
        assert!(duration("").is_err());
        assert!(duration("10").is_err());
        assert!(duration("m").is_err());
        assert!(duration("10y").is_err());
    }

    #[test]
    fn tail_takes_a_count_or_all() {
        assert_eq!(tail("100").unwrap(), 100);
        assert_eq!(tail("0").unwrap(), 0);
        assert_eq!(tail("all").unwrap(), 0);
        assert!(tail("-5").unwrap_err().contains("not a number of lines"));
        assert!(tail("ten").is_err());
        assert!(tail("").is_err());
    }

    #[test]
    fn since_takes_times_and_relative_durations() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(
            since("10m", now).unwrap().unix_timestamp(),
            1_700_000_000 - 600
        );
        assert_eq!(
            since("2024-05-01T12:00:00Z", now).unwrap().unix_timestamp(),
            1_714_564_800
        );
        assert_eq!(
            since("2024-05-01T14:00:00.5+02:00", now)
                .unwrap()
                .unix_timestamp(),
            1_714_564_800
        );
        assert_eq!(
            since("1714564800", now).unwrap().unix_timestamp(),
            1_714_564_800
        );
        assert!(since("yesterday", now).unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn default_names_come_from_the_image_or_rootfs() {
        assert_eq!(
            default_name("docker.io/library/alpine:3.20", 0xabc),
            "alpine-00000abc"
        );
        assert_eq!(default_name("ghcr.io/x/app@sha256:00ff", 1), "app-00000001");
        assert_eq!(default_name("/srv/roots/busy box/", 2), "busy_box-00000002");
        assert_eq!(default_name("/", 3), "container-00000003");
        assert_eq!(default_name("/srv/.hidden", 4), "hidden-00000004");
    }

    #[test]
    fn hosts_are_unix_socket_paths() {
        assert_eq!(
            host("unix:///run/holdfast/holdfastd.sock").unwrap(),
            "/run/holdfast/holdfastd.sock"
        );
        assert_eq!(host("unix:/tmp/h.sock").unwrap(), "/tmp/h.sock");
        assert_eq!(host("/tmp/h.sock").unwrap(), "/tmp/h.sock");
        assert!(host("tcp://127.0.0.1:1234").is_err());
        assert!(host("unix://relative").is_err());
    }
}
