//! Scheduled checkpoints, the running part: one timer task per running
//! container with a schedule (see [`crate::schedule`] for the rules).
//!
//! - **Armed** when a run starts (start, a policy restart, restore), when
//!   an update sets a schedule, and in start-up phase 3 for the containers
//!   reconcile found running (never before reconcile). **Disarmed** by an
//!   exit, stop, restart, remove, an update that clears the schedule, and
//!   shutdown; arming again replaces the timer.
//! - A tick takes the container's lock, so it never overlaps another tick,
//!   a stop, a remove or a user's checkpoint: a stop or remove waits for a
//!   dump in flight, and a tick that waited for the lock checks that its
//!   timer is still the armed one before it does anything. Cancelling a
//!   timer never cuts a tick short; the timer ends at its next wait.
//! - Each tick checkpoints a RUNNING container with `--leave-running` and
//!   a generated name, marks the checkpoint scheduled, then removes the
//!   oldest scheduled checkpoints beyond `keep`. What it did (time, name,
//!   error, failures in a row) goes into the record's
//!   `state.checkpoint_schedule`; a failure is logged and the next tick
//!   tries again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use holdfast_api::v1::{Container, ContainerStatus};
use tokio::sync::oneshot;
use tracing::{debug, info, info_span, warn, Instrument};

use super::checkpoint::{generated_name, CheckpointRequest};
use super::lifecycle::Phase;
use super::{status_of, Manager};
use crate::containerd::TaskStatus;
use crate::error::Result;
use crate::schedule::{next_tick_delay, parse_schedule, tick_base, to_prune, Schedule};
use crate::store::Loaded;

/// The armed timers, by container.
#[derive(Debug, Default)]
pub(crate) struct Schedules {
    armed: Mutex<HashMap<String, Armed>>,
    ids: AtomicU64,
}

/// One armed timer; dropping it (its cancel sender) ends the timer at its
/// next wait.
#[derive(Debug)]
struct Armed {
    id: u64,
    _cancel: oneshot::Sender<()>,
}

impl Schedules {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Armed>> {
        match self.armed.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Registers a new timer of `name` (replacing, so cancelling, any
    /// other); its id and cancel receiver.
    fn arm(&self, name: &str) -> (u64, oneshot::Receiver<()>) {
        let id = self.ids.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        self.map()
            .insert(name.to_owned(), Armed { id, _cancel: tx });
        (id, rx)
    }

    /// Cancels `name`'s timer; whether there was one.
    fn disarm(&self, name: &str) -> bool {
        self.map().remove(name).is_some()
    }

    /// Cancels every timer; how many there were.
    fn disarm_all(&self) -> usize {
        let mut map = self.map();
        let n = map.len();
        map.clear();
        n
    }

    fn is_current(&self, name: &str, id: u64) -> bool {
        self.map().get(name).is_some_and(|a| a.id == id)
    }

    fn is_armed(&self, name: &str) -> bool {
        self.map().contains_key(name)
    }
}

/// A record's valid schedule, if it has one.
fn schedule_of(c: &Container) -> Option<Schedule> {
    c.spec
        .as_ref()
        .and_then(|s| s.checkpoint_schedule.as_ref())
        .and_then(|s| parse_schedule(s).ok())
}

fn to_system(ts: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    ts.and_then(|t| SystemTime::try_from(t).ok())
}

/// What a record's next tick counts from: the later of its last tick and
/// the start of its run.
fn base_of(c: &Container) -> Option<SystemTime> {
    let state = c.state.as_ref();
    tick_base(
        to_system(
            state
                .and_then(|s| s.checkpoint_schedule.as_ref())
                .and_then(|s| s.last_tick_at),
        ),
        to_system(state.and_then(|s| s.started_at)),
    )
}

/// Shows when a running container's next scheduled checkpoint is due
/// (`state.checkpoint_schedule.next_tick_at`, never stored).
pub(super) fn with_next_tick(mut c: Container, now: SystemTime) -> Container {
    if status_of(&c) != ContainerStatus::Running {
        return c;
    }
    let Some(schedule) = schedule_of(&c) else {
        return c;
    };
    let next = now + next_tick_delay(base_of(&c), now, schedule.every);
    if let Some(state) = c.state.as_mut() {
        state
            .checkpoint_schedule
            .get_or_insert_with(Default::default)
            .next_tick_at = Some(next.into());
    }
    c
}

impl Manager {
    /// Arms the checkpoint schedule of a container whose run started (or
    /// whose schedule changed), replacing its timer; disarms it when the
    /// record has no schedule. Nothing before start-up phase 3 (reconcile
    /// first) or once shutdown began.
    pub(super) fn arm_schedule(self: &Arc<Self>, record: &Container) {
        if !matches!(self.life.phase(), Phase::Restarting | Phase::Ready) {
            return;
        }
        let Some(name) = record.spec.as_ref().map(|s| s.name.clone()) else {
            return;
        };
        let Some(schedule) = schedule_of(record) else {
            self.disarm_schedule(&name);
            return;
        };
        let base = base_of(record);
        let (id, cancel) = self.schedules.arm(&name);
        let first_in = next_tick_delay(base, SystemTime::now(), schedule.every);
        info!(
            container = %name,
            every_ms = schedule.every.as_millis() as u64,
            keep = schedule.keep,
            first_in_ms = first_in.as_millis() as u64,
            "checkpoint schedule armed"
        );
        let me = self.clone();
        tokio::spawn(async move {
            me.schedule_loop(name, id, schedule.every, base, cancel)
                .await
        });
    }

    /// Cancels a container's checkpoint schedule (a tick in flight
    /// finishes; none starts after it).
    pub(super) fn disarm_schedule(&self, name: &str) {
        if self.schedules.disarm(name) {
            info!(container = name, "checkpoint schedule stopped");
        }
    }

    /// Cancels every checkpoint schedule (shutdown).
    pub(super) fn disarm_all_schedules(&self) {
        let n = self.schedules.disarm_all();
        if n > 0 {
            info!(schedules = n, "checkpoint schedules stopped");
        }
    }

    /// Start-up phase 3: arms the schedules of the containers that run
    /// (reconcile adopted them) and are not armed yet; how many.
    pub(super) async fn resume_schedules(self: &Arc<Self>) -> Result<usize> {
        let records = self.store(|s| s.load_all()).await?;
        let mut armed = 0;
        for loaded in records {
            let Loaded::Ok(c) = loaded else { continue };
            let name = c.spec.as_ref().map_or("", |s| s.name.as_str());
            if status_of(&c) == ContainerStatus::Running
                && schedule_of(&c).is_some()
                && !self.schedules.is_armed(name)
            {
                self.arm_schedule(&c);
                armed += 1;
            }
        }
        Ok(armed)
    }

    /// A container's timer: waits for each tick and runs it, until
    /// cancelled or its tick finds it is no longer wanted.
    async fn schedule_loop(
        self: Arc<Self>,
        name: String,
        id: u64,
        every: Duration,
        mut base: Option<SystemTime>,
        mut cancel: oneshot::Receiver<()>,
    ) {
        loop {
            let delay = next_tick_delay(base, SystemTime::now(), every);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = &mut cancel => return,
            }
            let at = SystemTime::now();
            if !self.scheduled_tick(&name, id, at).await {
                debug!(container = %name, "checkpoint schedule timer ended");
                return;
            }
            base = Some(at);
        }
    }

    /// One tick at `at`; false when the timer should end (cancelled,
    /// container gone, schedule removed, shutdown).
    async fn scheduled_tick(self: &Arc<Self>, name: &str, id: u64, at: SystemTime) -> bool {
        let Ok(_guard) = self.lock(name).await else {
            return false;
        };
        if !self.schedules.is_current(name, id) || self.life.phase() == Phase::ShuttingDown {
            return false;
        }
        let record = match self.get(name).await {
            Ok(Some(Loaded::Ok(c))) => c,
            Ok(_) => return false,
            Err(e) => {
                warn!(container = name, error = %e, "scheduled checkpoint: reading the record failed; the next tick tries again");
                return true;
            }
        };
        let Some(schedule) = schedule_of(&record) else {
            return false;
        };
        let checkpoint = generated_name(at);
        let span = info_span!("scheduled checkpoint", container = name, checkpoint = %checkpoint);
        let outcome = self
            .tick_locked(name, &checkpoint, schedule)
            .instrument(span)
            .await;
        let outcome = match outcome {
            Ok(None) => return true,
            Ok(Some(pruned)) => Ok(pruned),
            Err(e) => Err(e),
        };
        if let Err(e) = self.record_tick(name, &checkpoint, at, &outcome).await {
            warn!(container = name, error = %e, "scheduled checkpoint: writing its state to the record failed");
        }
        match outcome {
            Ok(pruned) => info!(
                container = name,
                checkpoint = %checkpoint,
                pruned = pruned.len(),
                keep = schedule.keep,
                "scheduled checkpoint taken"
            ),
            Err(e) => warn!(
                container = name,
                checkpoint = %checkpoint,
                every_ms = schedule.every.as_millis() as u64,
                error = %e,
                "scheduled checkpoint failed; the next tick tries again"
            ),
        }
        true
    }

    /// The checkpoint of a tick and the pruning after it (lock held);
    /// `None` when the container's task does not run (nothing to do), else
    /// the names pruned.
    async fn tick_locked(
        self: &Arc<Self>,
        name: &str,
        checkpoint: &str,
        schedule: Schedule,
    ) -> Result<Option<Vec<String>>> {
        match self.task(name).await?.map(|t| t.status) {
            Some(TaskStatus::Running) => {}
            status => {
                debug!(?status, "the task does not run; tick skipped");
                return Ok(None);
            }
        }
        let request = CheckpointRequest {
            container: name.to_owned(),
            name: checkpoint.to_owned(),
            leave_running: true,
            scheduled: true,
            ..Default::default()
        };
        self.create_checkpoint_locked(request, checkpoint.to_owned())
            .await?;
        let c = name.to_owned();
        let all = self.store(move |s| s.checkpoints(&c)).await?;
        let pruned = to_prune(&all, schedule.keep);
        for old in &pruned {
            self.remove_checkpoint_locked(name, old).await?;
        }
        Ok(Some(pruned))
    }

    /// Writes what a tick did into the record (lock held).
    async fn record_tick(
        &self,
        name: &str,
        checkpoint: &str,
        at: SystemTime,
        outcome: &Result<Vec<String>>,
    ) -> Result<()> {
        let mut record = self.record(name).await?;
        let state = record
            .state
            .get_or_insert_with(Default::default)
            .checkpoint_schedule
            .get_or_insert_with(Default::default);
        state.last_tick_at = Some(at.into());
        state.next_tick_at = None;
        match outcome {
            Ok(_) => {
                state.last_checkpoint = checkpoint.to_owned();
                state.last_checkpoint_at = Some(at.into());
                state.last_error.clear();
                state.failures = 0;
            }
            Err(e) => {
                state.last_error = e.to_string();
                state.failures = state.failures.saturating_add(1);
            }
        }
        self.put(&record).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_api::v1::{CheckpointSchedule, ContainerSpec, ContainerState};

    fn ts(t: SystemTime) -> Option<prost_types::Timestamp> {
        Some(t.into())
    }

    #[test]
    fn a_running_container_shows_its_next_tick() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut c = Container {
            spec: Some(ContainerSpec {
                name: "web".into(),
                checkpoint_schedule: Some(CheckpointSchedule {
                    every: "1m".into(),
                    keep: 2,
                }),
                ..Default::default()
            }),
            state: Some(ContainerState {
                status: ContainerStatus::Running as i32,
                started_at: ts(t0),
                ..Default::default()
            }),
            ..Default::default()
        };
        let next = |c: &Container, now| {
            with_next_tick(c.clone(), now)
                .state
                .and_then(|s| s.checkpoint_schedule)
                .and_then(|s| s.next_tick_at)
        };
        assert_eq!(
            next(&c, t0 + Duration::from_secs(10)),
            ts(t0 + Duration::from_secs(60))
        );
        if let Some(s) = c.state.as_mut() {
            s.checkpoint_schedule = Some(holdfast_api::v1::CheckpointScheduleState {
                last_tick_at: ts(t0 + Duration::from_secs(100)),
                ..Default::default()
            });
        }
        assert_eq!(
            next(&c, t0 + Duration::from_secs(130)),
            ts(t0 + Duration::from_secs(160))
        );
        if let Some(s) = c.state.as_mut() {
            s.status = ContainerStatus::Exited as i32;
        }
        assert_eq!(next(&c, t0), None, "not running: no next tick");
    }
}
