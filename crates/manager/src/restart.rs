//! Restart-policy decisions, as pure functions (Docker's semantics).
//!
//! - `no`: never restarted.
//! - `on-failure[:max]`: restarted when it exits with a non-zero code, as
//!   long as `restart_count` (the restarts in a row, which the caller resets
//!   when the user starts the container) is below `max` (0: no limit).
//! - `always`: always restarted; after a stop by the user, only when
//!   holdfastd starts.
//! - `unless-stopped`: like `always`, except after a stop by the user, also
//!   when holdfastd starts.
//!
//! A stop by the user is never a failure: `on-failure` does not restart a
//! container the user stopped (Docker would on its daemon's start, seeing
//! the SIGTERM exit code; holdfast does not).

use std::time::Duration;

use holdfast_api::v1::{RestartPolicy, RestartPolicyKind};

/// Whether a container whose task exited should be started again.
///
/// `policy` is the spec's (unset: `no`); `exit_code` the last run's;
/// `restart_count` the restarts done in a row by the policy;
/// `stopped_by_user` whether the user stopped it; `daemon_starting` whether
/// this is holdfastd's start-up (phase 3) rather than an exit event. The
/// caller asks only for containers that have run (not ones merely created).
pub fn should_restart(
    policy: Option<&RestartPolicy>,
    exit_code: i32,
    restart_count: u32,
    stopped_by_user: bool,
    daemon_starting: bool,
) -> bool {
    let Some(policy) = policy else {
        return false;
    };
    let kind = RestartPolicyKind::try_from(policy.kind).unwrap_or(RestartPolicyKind::No);
    match kind {
        RestartPolicyKind::Unspecified | RestartPolicyKind::No => false,
        RestartPolicyKind::Always => daemon_starting || !stopped_by_user,
        RestartPolicyKind::UnlessStopped => !stopped_by_user,
        RestartPolicyKind::OnFailure => {
            !stopped_by_user
                && exit_code != 0
                && (policy.max_retries == 0 || restart_count < policy.max_retries)
        }
    }
}

/// Docker's restart delay: 100 ms, doubled at each restart up to 1 minute,
/// and back to 100 ms after a run of at least 10 seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    current: Option<Duration>,
}

impl Backoff {
    /// The first delay.
    pub const INITIAL: Duration = Duration::from_millis(100);
    /// The longest delay.
    pub const MAX: Duration = Duration::from_secs(60);
    /// A run at least this long resets the delay to [`Backoff::INITIAL`].
    pub const RESET_AFTER: Duration = Duration::from_secs(10);

    /// A backoff that has not delayed yet.
    pub fn new() -> Backoff {
        Backoff::default()
    }

    /// The delay before the next restart, given how long the last run
    /// lasted.
    pub fn next_delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= Self::RESET_AFTER {
            self.current = None;
        }
        let next = match self.current {
            None => Self::INITIAL,
            Some(d) => d.saturating_mul(2).min(Self::MAX),
        };
        self.current = Some(next);
        next
    }

    /// The last delay given, if any.
    pub fn current(&self) -> Option<Duration> {
        self.current
    }

    /// Forgets past delays (e.g. when the user starts the container).
    pub fn reset(&mut self) {
        self.current = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RestartPolicyKind::*;

    fn policy(kind: RestartPolicyKind, max_retries: u32) -> RestartPolicy {
        RestartPolicy {
            kind: kind as i32,
            max_retries,
        }
    }

    #[test]
    fn should_restart_follows_dockers_table() {
        // (kind, max, exit code, restart count, stopped by user, daemon starting, restart?)
        let table: &[(RestartPolicyKind, u32, i32, u32, bool, bool, bool)] = &[
            (No, 0, 1, 0, false, false, false),
            (No, 0, 0, 0, false, true, false),
            (Unspecified, 0, 1, 0, false, true, false),
            (OnFailure, 0, 1, 0, false, false, true),
            (OnFailure, 0, 0, 0, false, false, false),
            (OnFailure, 0, 137, 1000, false, false, true),
            (OnFailure, 3, 1, 2, false, false, true),
            (OnFailure, 3, 1, 3, false, false, false),
            (OnFailure, 3, 1, 4, false, false, false),
            (OnFailure, 3, 1, 0, false, true, true),
            (OnFailure, 3, 0, 0, false, true, false),
            (OnFailure, 0, 143, 0, true, false, false),
            (OnFailure, 0, 143, 0, true, true, false),
            (Always, 0, 0, 0, false, false, true),
            (Always, 0, 1, 99, false, false, true),
            (Always, 0, 0, 0, true, false, false),
            (Always, 0, 0, 0, true, true, true),
            (Always, 0, 0, 0, false, true, true),
            (UnlessStopped, 0, 0, 0, false, false, true),
            (UnlessStopped, 0, 1, 0, false, true, true),
            (UnlessStopped, 0, 0, 0, true, false, false),
            (UnlessStopped, 0, 0, 0, true, true, false),
        ];
        for &(kind, max, code, count, user, starting, want) in table {
            let p = policy(kind, max);
            assert_eq!(
                should_restart(Some(&p), code, count, user, starting),
                want,
                "{kind:?} max={max} exit={code} count={count} user={user} starting={starting}"
            );
        }
    }

    #[test]
    fn no_policy_or_an_unknown_kind_means_no() {
        assert!(!should_restart(None, 1, 0, false, true));
        let unknown = RestartPolicy {
            kind: 42,
            max_retries: 0,
        };
        assert!(!should_restart(Some(&unknown), 1, 0, false, true));
    }

    #[test]
    fn backoff_doubles_up_to_a_minute_and_resets_after_a_long_run() {
        let short = Duration::from_secs(1);
        let mut b = Backoff::new();
        assert_eq!(b.current(), None);
        let delays: Vec<u64> = (0..12)
            .map(|_| b.next_delay(short).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 60000, 60000]
        );
        assert_eq!(b.next_delay(Duration::from_secs(10)), Backoff::INITIAL);
        assert_eq!(
            b.next_delay(Duration::from_millis(9999)),
            Duration::from_millis(200)
        );
        b.reset();
        assert_eq!(b.next_delay(short), Backoff::INITIAL);
    }
}
