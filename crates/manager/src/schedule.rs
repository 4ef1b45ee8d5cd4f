//! Scheduled checkpoints, the pure part: what a schedule may be, when its
//! next tick is due, and which scheduled checkpoints a tick removes. The
//! ticks themselves are `manager/scheduled.rs`.
//!
//! A schedule (`--checkpoint-every DURATION --checkpoint-keep N`) is part
//! of the container's spec. While the container runs, each tick takes a
//! checkpoint that leaves it running, then removes the oldest scheduled
//! checkpoints so that `keep` of them remain; checkpoints made by hand are
//! never removed. Ticks are one period apart, counted from the later of the
//! last tick and the start of the current run, so a holdfastd that starts
//! again goes on with the cadence, and an overdue tick runs at once (one
//! tick, not one per missed period).

use std::time::{Duration, SystemTime};

use holdfast_api::v1::{Checkpoint, CheckpointSchedule};

use crate::error::{Error, Result};

/// The shortest period a schedule may have.
pub const MIN_EVERY: Duration = Duration::from_secs(1);

/// A checked schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// The period of the ticks.
    pub every: Duration,
    /// How many scheduled checkpoints are kept.
    pub keep: u32,
}

/// Checks a schedule from a spec or an update: `every` must parse (see
/// [`holdfast_api::duration`]) and be at least [`MIN_EVERY`], `keep` at
/// least 1. Errors name the field and its flag.
pub fn parse_schedule(s: &CheckpointSchedule) -> Result<Schedule> {
    let what = format!(
        "checkpoint_schedule.every (--checkpoint-every) {:?}",
        s.every
    );
    let every = holdfast_api::duration::parse(&s.every).ok_or_else(|| {
        Error::invalid(
            what.clone(),
            "is not a duration (e.g. 30s, 10m, 1h30m; units ms, s, m, h, d)",
        )
    })?;
    if every < MIN_EVERY {
        return Err(Error::invalid(what, "must be at least 1s"));
    }
    if s.keep == 0 {
        return Err(Error::invalid(
            "checkpoint_schedule.keep (--checkpoint-keep) 0",
            "must be at least 1",
        ));
    }
    Ok(Schedule {
        every,
        keep: s.keep,
    })
}

/// What the next tick counts from: the later of the last tick and the
/// start of the current run (`None`: neither is known).
pub fn tick_base(
    last_tick: Option<SystemTime>,
    run_started: Option<SystemTime>,
) -> Option<SystemTime> {
    match (last_tick, run_started) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// How long until the next tick: one period after `base`; at once when
/// that is past (one tick, however many periods were missed); a full
/// period with no base, and never more than one period (a base in the
/// future means the clock went back).
pub fn next_tick_delay(base: Option<SystemTime>, now: SystemTime, every: Duration) -> Duration {
    let Some(base) = base else {
        return every;
    };
    let Some(due) = base.checked_add(every) else {
        return every;
    };
    match due.duration_since(now) {
        Ok(left) => left.min(every),
        Err(_) => Duration::ZERO,
    }
}

/// The scheduled checkpoints to remove so that `keep` remain: the oldest
/// ones (by creation time, then name), never one made by hand.
pub fn to_prune(checkpoints: &[Checkpoint], keep: u32) -> Vec<String> {
    let mut scheduled: Vec<&Checkpoint> = checkpoints.iter().filter(|c| c.scheduled).collect();
    scheduled.sort_by(|a, b| {
        let at = |c: &Checkpoint| c.created_at.map(|t| (t.seconds, t.nanos));
        at(a).cmp(&at(b)).then_with(|| a.name.cmp(&b.name))
    });
    let extra = scheduled.len().saturating_sub(keep as usize);
    scheduled
        .into_iter()
        .take(extra)
        .map(|c| c.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn schedule(every: &str, keep: u32) -> CheckpointSchedule {
        CheckpointSchedule {
            every: every.into(),
            keep,
        }
    }

    #[test]
    fn schedules_parse_and_bad_ones_name_their_flag() {
        assert_eq!(
            parse_schedule(&schedule("1m30s", 3)).ok(),
            Some(Schedule {
                every: Duration::from_secs(90),
                keep: 3
            })
        );
        assert_eq!(
            parse_schedule(&schedule("1s", 1)).map(|s| s.every).ok(),
            Some(MIN_EVERY)
        );
        let cases = [
            (
                schedule("soon", 2),
                "--checkpoint-every",
                "is not a duration",
            ),
            (schedule("", 2), "--checkpoint-every", "is not a duration"),
            (schedule("10", 2), "--checkpoint-every", "is not a duration"),
            (schedule("999ms", 2), "--checkpoint-every", "at least 1s"),
            (schedule("0s", 2), "--checkpoint-every", "at least 1s"),
            (schedule("1m", 0), "--checkpoint-keep", "at least 1"),
        ];
        for (s, flag, why) in cases {
            let err = match parse_schedule(&s) {
                Err(e) => e,
                Ok(ok) => panic!("{s:?} accepted as {ok:?}"),
            };
            assert_eq!(err.code(), Code::InvalidArgument, "{err}");
            let msg = err.to_string();
            assert!(msg.contains(flag) && msg.contains(why), "{s:?}: {msg}");
        }
    }

    #[test]
    fn the_next_tick_is_one_period_after_the_later_of_last_tick_and_start() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let s = Duration::from_secs;
        let every = s(60);
        // A fresh run: a full period.
        assert_eq!(next_tick_delay(None, t0, every), every);
        assert_eq!(next_tick_delay(tick_base(None, Some(t0)), t0, every), every);
        // holdfastd came back 20 s after the last tick: 40 s to go.
        let base = tick_base(Some(t0), Some(t0 - s(3600)));
        assert_eq!(next_tick_delay(base, t0 + s(20), every), s(40));
        // Overdue by many periods: one tick at once.
        assert_eq!(next_tick_delay(base, t0 + s(3600), every), Duration::ZERO);
        assert_eq!(next_tick_delay(base, t0 + every, every), Duration::ZERO);
        // A last tick of an earlier run counts from the new run's start.
        let base = tick_base(Some(t0), Some(t0 + s(500)));
        assert_eq!(base, Some(t0 + s(500)));
        assert_eq!(next_tick_delay(base, t0 + s(510), every), s(50));
        // A base in the future (the clock went back): one period at most.
        assert_eq!(next_tick_delay(Some(t0 + s(600)), t0, every), every);
        assert_eq!(tick_base(None, None), None);
        assert_eq!(tick_base(Some(t0), None), Some(t0));
    }

    fn cp(name: &str, secs: i64, scheduled: bool) -> Checkpoint {
        Checkpoint {
            name: name.into(),
            created_at: Some(prost_types::Timestamp {
                seconds: secs,
                nanos: 0,
            }),
            scheduled,
            ..Default::default()
        }
    }

    #[test]
    fn pruning_removes_the_oldest_scheduled_checkpoints_only() {
        let list = [
            cp("cp-5", 5, true),
            cp("hand-1", 1, false),
            cp("cp-2", 2, true),
            cp("cp-4", 4, true),
            cp("hand-9", 9, false),
            cp("cp-3", 3, true),
        ];
        assert_eq!(to_prune(&list, 2), ["cp-2", "cp-3"]);
        assert_eq!(to_prune(&list, 1), ["cp-2", "cp-3", "cp-4"]);
        assert!(to_prune(&list, 4).is_empty());
        assert!(to_prune(&list, 10).is_empty());
        assert!(to_prune(&[cp("hand", 1, false)], 1).is_empty());
        // Same time: by name.
        let tie = [cp("b", 1, true), cp("a", 1, true), cp("c", 2, true)];
        assert_eq!(to_prune(&tie, 1), ["a", "b"]);
    }
}
