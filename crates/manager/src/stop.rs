//! Shutdown and stop timeouts.
//!
//! A spec's `stop_timeout_seconds` is 0 when unset (the default, 10 s), -1
//! to wait forever, or a number of seconds.

use std::time::Duration;

/// The stop timeout of a spec that does not set one.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Added to the largest stop timeout for holdfastd's overall deadline.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The time a stop waits before SIGKILL for a spec's
/// `stop_timeout_seconds`: `None` to wait forever (-1, or any negative).
pub fn stop_timeout(stop_timeout_seconds: i64) -> Option<Duration> {
    match stop_timeout_seconds {
        0 => Some(DEFAULT_STOP_TIMEOUT),
        n => u64::try_from(n).ok().map(Duration::from_secs),
    }
}

/// holdfastd's deadline for stopping every container (with live restore
/// off): the largest stop timeout plus [`SHUTDOWN_GRACE`], or `None` (no
/// deadline) if any container waits forever. `stop_timeouts` are the specs'
/// `stop_timeout_seconds`, read as [`stop_timeout`] does.
pub fn shutdown_deadline(stop_timeouts: &[i64]) -> Option<Duration> {
    let mut largest = Duration::ZERO;
    for &t in stop_timeouts {
        largest = largest.max(stop_timeout(t)?);
    }
    Some(largest.saturating_add(SHUTDOWN_GRACE))
}

/// The deadline to use: the config's `shutdown_timeout` (seconds) when set,
/// else the one computed by [`shutdown_deadline`].
pub fn effective_shutdown_deadline(
    configured_seconds: Option<u64>,
    stop_timeouts: &[i64],
) -> Option<Duration> {
    match configured_seconds {
        Some(s) => Some(Duration::from_secs(s)),
        None => shutdown_deadline(stop_timeouts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    #[test]
    fn shutdown_deadline_is_the_largest_timeout_plus_grace() {
        let table: &[(&[i64], Option<Duration>)] = &[
            (&[], secs(5)),
            (&[0], secs(15)),
            (&[1, 30, 2], secs(35)),
            (&[0, 3], secs(15)),
            (&[100, -1, 3], None),
            (&[-1], None),
            (&[-7], None),
            (&[i64::MAX], secs(i64::MAX as u64 + 5)),
        ];
        for (timeouts, want) in table {
            assert_eq!(shutdown_deadline(timeouts), *want, "{timeouts:?}");
        }
    }

    #[test]
    fn stop_timeout_reads_the_spec_value() {
        assert_eq!(stop_timeout(0), Some(DEFAULT_STOP_TIMEOUT));
        assert_eq!(stop_timeout(-1), None);
        assert_eq!(stop_timeout(3), secs(3));
    }

    #[test]
    fn a_configured_shutdown_timeout_wins() {
        assert_eq!(effective_shutdown_deadline(Some(7), &[-1]), secs(7));
        assert_eq!(effective_shutdown_deadline(None, &[20]), secs(25));
        assert_eq!(effective_shutdown_deadline(None, &[-1]), None);
    }
}
