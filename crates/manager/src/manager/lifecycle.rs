//! What happens when a container's task exits: the observed state is
//! written, waiters are answered, then the restart policy (with its
//! back-off) or auto-remove applies.
//!
//! [`Life`] is the manager's in-memory side of this: the phase holdfastd
//! is in, and per container the back-off, the pending restart and the
//! exits its waiters watch. Nothing in it needs to survive a restart of
//! holdfastd: the record holds the state, and a fresh back-off at start-up
//! is Docker's behaviour too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use holdfast_api::v1::{Container, ContainerStatus};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::{now, status_of, Manager};
use crate::containerd::{ExitStatus, TaskStatus};
use crate::error::{Error, Result};
use crate::restart::{should_restart, Backoff};
use crate::store::Loaded;

/// The exit code recorded when a task vanished without telling how it
/// ended (e.g. its shim died with the host or was killed).
pub const UNKNOWN_EXIT_CODE: i32 = 255;

/// Where holdfastd is in its life. The API serves only reads until
/// [`Phase::Ready`] and again from [`Phase::ShuttingDown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Phase 1: loading and registering the records.
    Loading,
    /// Phase 2: reconciling with containerd's task list.
    Reconciling,
    /// Phase 3: restart policies and auto-remove.
    Restarting,
    /// Start-up is done; exits are monitored.
    Ready,
    /// Shutting down: no more restarts, mutations refused.
    ShuttingDown,
}

impl Phase {
    /// A short name for logs and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Loading => "loading records (phase 1 of 3)",
            Phase::Reconciling => "reconciling with containerd (phase 2 of 3)",
            Phase::Restarting => "applying restart policies (phase 3 of 3)",
            Phase::Ready => "ready",
            Phase::ShuttingDown => "shutting down",
        }
    }
}

/// The last exit of a container that its waiters see.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ExitNote {
    /// Bumped at every exit.
    pub seq: u64,
    /// The exit code.
    pub code: i32,
    /// When.
    pub at: Option<prost_types::Timestamp>,
}

/// A note for the monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hint {
    /// A task started: watch it (per-task wait).
    Started {
        /// Container name.
        name: String,
        /// Init pid.
        pid: u32,
    },
}

#[derive(Debug)]
struct Entry {
    backoff: Backoff,
    exits: watch::Sender<ExitNote>,
    /// The token and task of the pending restart.
    restart: Option<(u64, tokio::task::AbortHandle)>,
}

impl Default for Entry {
    fn default() -> Entry {
        Entry {
            backoff: Backoff::new(),
            exits: watch::Sender::new(ExitNote::default()),
            restart: None,
        }
    }
}

/// The manager's in-memory lifecycle state.
#[derive(Debug)]
pub(crate) struct Life {
    phase: watch::Sender<Phase>,
    entries: Mutex<HashMap<String, Entry>>,
    tokens: std::sync::atomic::AtomicU64,
    hints: mpsc::UnboundedSender<Hint>,
    hints_rx: Mutex<Option<mpsc::UnboundedReceiver<Hint>>>,
}

impl Default for Life {
    fn default() -> Life {
        let (hints, rx) = mpsc::unbounded_channel();
        Life {
            phase: watch::Sender::new(Phase::Loading),
            entries: Mutex::new(HashMap::new()),
            tokens: std::sync::atomic::AtomicU64::new(1),
            hints,
            hints_rx: Mutex::new(Some(rx)),
        }
    }
}

impl Life {
    pub(crate) fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    pub(crate) fn watch_phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// The hint receiver; the monitor takes it once.
    pub(crate) fn take_hints(&self) -> Option<mpsc::UnboundedReceiver<Hint>> {
        self.hints_rx.lock().ok()?.take()
    }

    fn with<T>(&self, name: &str, f: impl FnOnce(&mut Entry) -> T) -> Option<T> {
        let mut map = self.entries.lock().ok()?;
        Some(f(map.entry(name.to_owned()).or_default()))
    }

    /// Makes container `name` known (phase 1).
    pub(crate) fn register(&self, name: &str) {
        self.with(name, |_| ());
    }

    /// Forgets a removed container: cancels its restart; its waiters see
    /// the channel close.
    pub(crate) fn forget(&self, name: &str) {
        self.cancel_restart(name);
        if let Ok(mut map) = self.entries.lock() {
            map.remove(name);
        }
    }

    /// A task of `name` started with `pid`.
    pub(crate) fn started(&self, name: &str, pid: u32) {
        let _ = self.hints.send(Hint::Started {
            name: name.to_owned(),
            pid,
        });
    }

    /// Resets the back-off (the user started the container).
    pub(crate) fn reset_backoff(&self, name: &str) {
        self.with(name, |e| e.backoff.reset());
    }

    /// The delay before the next policy restart of `name`.
    pub(crate) fn next_delay(&self, name: &str, ran_for: Duration) -> Duration {
        self.with(name, |e| e.backoff.next_delay(ran_for))
            .unwrap_or(Backoff::INITIAL)
    }

    /// Watches `name`'s exits.
    pub(crate) fn exits(&self, name: &str) -> Option<watch::Receiver<ExitNote>> {
        self.with(name, |e| e.exits.subscribe())
    }

    /// Answers `name`'s waiters.
    pub(crate) fn notify_exit(&self, name: &str, code: i32, at: Option<prost_types::Timestamp>) {
        self.with(name, |e| {
            e.exits.send_modify(|n| {
                n.seq += 1;
                n.code = code;
                n.at = at;
            })
        });
    }

    fn set_restart(&self, name: &str, token: u64, handle: tokio::task::AbortHandle) {
        self.with(name, |e| {
            if let Some((_, old)) = e.restart.replace((token, handle)) {
                old.abort();
            }
        });
    }

    /// True (and forgets it) if `token` is `name`'s pending restart.
    fn take_restart(&self, name: &str, token: u64) -> bool {
        self.with(name, |e| match &e.restart {
            Some((t, _)) if *t == token => {
                e.restart = None;
                true
            }
            _ => false,
        })
        .unwrap_or(false)
    }

    /// Cancels `name`'s pending restart, if any (a user's start, stop,
    /// restart or remove).
    pub(crate) fn cancel_restart(&self, name: &str) {
        if let Ok(mut map) = self.entries.lock() {
            if let Some((_, h)) = map.get_mut(name).and_then(|e| e.restart.take()) {
                h.abort();
                debug!(container = name, "pending restart cancelled");
            }
        }
    }

    /// Cancels every pending restart (shutdown).
    pub(crate) fn cancel_all_restarts(&self) {
        if let Ok(mut map) = self.entries.lock() {
            for e in map.values_mut() {
                if let Some((_, h)) = e.restart.take() {
                    h.abort();
                }
            }
        }
    }
}

/// Who starts a container: the user resets the restart count and
/// back-off; a restart policy counts one more restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Starter {
    /// A `start` or `restart` call.
    User,
    /// The restart policy.
    Policy,
}

/// How long a run lasted, from its record.
fn ran_for(c: &Container) -> Duration {
    let state = c.state.clone().unwrap_or_default();
    let (Some(start), Some(end)) = (state.started_at, state.finished_at) else {
        return Duration::ZERO;
    };
    let start = SystemTime::try_from(start).unwrap_or(SystemTime::UNIX_EPOCH);
    let end = SystemTime::try_from(end).unwrap_or(SystemTime::UNIX_EPOCH);
    end.duration_since(start).unwrap_or_default()
}

impl Manager {
    /// The phase holdfastd is in.
    pub fn phase(&self) -> Phase {
        self.life.phase()
    }

    /// Watches the phase (the API gate and the health service use it).
    pub fn watch_phase(&self) -> watch::Receiver<Phase> {
        self.life.watch_phase()
    }

    /// Reports a lifecycle event: to holdfastd's log and to the Events
    /// stream. A task's `start`, `exit` and `oom` reach the stream from
    /// containerd's own events (with containerd's times,
    /// [`crate::events::from_task_event`]), so they are logged here only.
    pub(crate) fn event(&self, name: &str, action: &str, exit_code: i32, message: &str) {
        info!(
            container = name,
            action, exit_code, message, "container event"
        );
        if matches!(action, "start" | "exit" | "oom") {
            return;
        }
        self.publish(holdfast_api::v1::Event {
            exit_code,
            message: message.to_owned(),
            ..crate::events::event(name, action)
        });
    }

    /// Handles an exit `source` saw for task `name` (`pid`: the run it was
    /// about, if known; `hint`: the exit status it carried). Checks with
    /// containerd, so a stale or duplicate hint changes nothing.
    pub(crate) async fn on_exit(
        self: &Arc<Self>,
        name: &str,
        pid: Option<u32>,
        hint: Option<ExitStatus>,
        source: &'static str,
    ) {
        let Ok(_guard) = self.lock(name).await else {
            return;
        };
        if let Err(e) = self.on_exit_locked(name, pid, hint).await {
            warn!(container = name, source, error = %e, "handling an exit failed; the next resync retries");
        }
    }

    async fn on_exit_locked(
        self: &Arc<Self>,
        name: &str,
        pid: Option<u32>,
        hint: Option<ExitStatus>,
    ) -> Result<()> {
        let Some(Loaded::Ok(mut record)) = self.get(name).await? else {
            return Ok(());
        };
        if !matches!(
            status_of(&record),
            ContainerStatus::Running | ContainerStatus::Paused
        ) {
            return Ok(());
        }
        let recorded_pid = record.state.as_ref().map_or(0, |s| s.pid);
        if matches!(pid, Some(p) if recorded_pid != 0 && p != recorded_pid) {
            debug!(
                container = name,
                ?pid,
                recorded_pid,
                "exit of an earlier run"
            );
            return Ok(());
        }
        let exit = match self.task(name).await? {
            Some(t) if t.status == TaskStatus::Stopped => {
                match self.containerd.delete_task(name).await {
                    Ok(e) => e,
                    Err(e) if e.is_not_found() => ExitStatus {
                        code: t.exit_status,
                        exited_at: t.exited_at,
                    },
                    Err(e) => return Err(e.into()),
                }
            }
            Some(t) if t.pid == recorded_pid || recorded_pid == 0 => return Ok(()),
            Some(t) => {
                warn!(
                    container = name,
                    pid = t.pid,
                    recorded_pid,
                    "the task runs with another pid; adopting it"
                );
                if let Some(s) = record.state.as_mut() {
                    s.pid = t.pid;
                }
                self.put(&record).await?;
                return Ok(());
            }
            None => match hint {
                Some(h) => h,
                None => {
                    if let Some(s) = record.state.as_mut() {
                        s.error = "the task is gone; its exit status is unknown".into();
                    }
                    ExitStatus {
                        code: UNKNOWN_EXIT_CODE as u32,
                        exited_at: None,
                    }
                }
            },
        };
        self.record_exit(record, exit, true).await
    }

    /// Writes an exit into the record (status, code, time, pid 0), answers
    /// the waiters, and with `apply_policy` schedules the policy's restart
    /// or auto-removes. The caller holds the container's lock and has
    /// deleted its task.
    pub(crate) async fn record_exit(
        self: &Arc<Self>,
        mut record: Container,
        exit: ExitStatus,
        apply_policy: bool,
    ) -> Result<()> {
        let spec = record.spec.clone().unwrap_or_default();
        let name = spec.name.clone();
        let state = record.state.get_or_insert_with(Default::default);
        state.status = ContainerStatus::Exited as i32;
        state.pid = 0;
        state.exit_code = exit.code as i32;
        state.finished_at = exit.exited_at.map(Into::into).or_else(now);
        let code = state.exit_code;
        let at = state.finished_at;
        let restart = apply_policy
            && self.life.phase() != Phase::ShuttingDown
            && should_restart(
                spec.restart.as_ref(),
                code,
                state.restart_count,
                state.stopped_by_user,
                false,
            );
        if restart {
            state.status = ContainerStatus::Restarting as i32;
        }
        self.put(&record).await?;
        self.disarm_schedule(&name);
        self.life.notify_exit(&name, code, at);
        info!(container = %name, exit_code = code, restart, "container exited");
        self.event(&name, "exit", code, "");
        if restart {
            let delay = self.life.next_delay(&name, ran_for(&record));
            self.schedule_restart(&name, delay);
        } else if apply_policy && spec.auto_remove {
            self.auto_remove(&name).await;
        }
        Ok(())
    }

    /// Removes an exited `--rm` container (lock held), after its waiters
    /// were answered.
    pub(crate) async fn auto_remove(&self, name: &str) {
        // Let the waiters' tasks take their answer first.
        tokio::task::yield_now().await;
        match self.remove_locked(name, false).await {
            Ok(()) => info!(container = name, "auto-removed"),
            Err(e) => warn!(container = name, error = %e, "auto-remove failed"),
        }
    }

    /// Restarts `name` by its policy after `delay`, unless cancelled.
    pub(crate) fn schedule_restart(self: &Arc<Self>, name: &str, delay: Duration) {
        let token = self
            .life
            .tokens
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let me = self.clone();
        let n = name.to_owned();
        info!(
            container = name,
            delay_ms = delay.as_millis() as u64,
            "restart scheduled"
        );
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if !me.life.take_restart(&n, token) {
                return;
            }
            me.policy_restart(&n).await;
        });
        self.life.set_restart(name, token, task.abort_handle());
    }

    /// A restart by the policy: the record must still be RESTARTING. A
    /// failed start counts as a restart and is tried again after the next
    /// delay while the policy allows.
    async fn policy_restart(self: &Arc<Self>, name: &str) {
        let Ok(_guard) = self.lock(name).await else {
            return;
        };
        if self.life.phase() == Phase::ShuttingDown {
            return;
        }
        let record = match self.get(name).await {
            Ok(Some(Loaded::Ok(c))) if status_of(&c) == ContainerStatus::Restarting => c,
            _ => return,
        };
        match self.start_locked(name, Starter::Policy).await {
            Ok(c) => {
                let count = c.state.as_ref().map_or(0, |s| s.restart_count);
                self.event(name, "restart", 0, &format!("restart {count}"));
            }
            Err(e) => {
                warn!(container = name, error = %e, "restart by policy failed");
                self.event(name, "restart", 0, &format!("failed: {e}"));
                if let Err(e) = self.after_failed_restart(record, &e).await {
                    warn!(container = name, error = %e, "recording a failed restart");
                }
            }
        }
    }

    pub(crate) async fn after_failed_restart(
        self: &Arc<Self>,
        mut record: Container,
        err: &Error,
    ) -> Result<()> {
        let spec = record.spec.clone().unwrap_or_default();
        let state = record.state.get_or_insert_with(Default::default);
        state.restart_count += 1;
        state.error = err.to_string();
        let again = should_restart(
            spec.restart.as_ref(),
            state.exit_code,
            state.restart_count,
            state.stopped_by_user,
            false,
        );
        state.status = if again {
            ContainerStatus::Restarting
        } else {
            ContainerStatus::Exited
        } as i32;
        self.put(&record).await?;
        if again {
            let delay = self.life.next_delay(&spec.name, Duration::ZERO);
            self.schedule_restart(&spec.name, delay);
        }
        Ok(())
    }

    /// `stop` of a container waiting for its policy's restart: the restart
    /// is cancelled and the container stays exited, stopped by the user.
    pub(crate) async fn stop_restarting(&self, mut record: Container) -> Result<Container> {
        if status_of(&record) != ContainerStatus::Restarting {
            return Ok(record);
        }
        let state = record.state.get_or_insert_with(Default::default);
        state.status = ContainerStatus::Exited as i32;
        state.stopped_by_user = true;
        self.put(&record).await?;
        Ok(record)
    }

    /// After a user's `kill` with SIGKILL or the container's stop signal:
    /// the exit that follows is the user's doing, so no policy restarts it
    /// (Docker's `ExitOnNext`). Other signals are not a stop.
    pub(crate) async fn mark_killed_by_user(&self, name: &str, signal: u32) -> Result<()> {
        let mut record = self.record(name).await?;
        let spec = record.spec.clone().unwrap_or_default();
        let stop_signal = super::stop_signal_of(&spec)?;
        if signal != super::SIGKILL && signal != stop_signal {
            return Ok(());
        }
        let state = record.state.get_or_insert_with(Default::default);
        if !state.stopped_by_user {
            state.stopped_by_user = true;
            self.put(&record).await?;
        }
        Ok(())
    }

    /// Waits for the next exit of a running container; a container that
    /// is not running answers with its last exit at once. NotFound when it
    /// is removed meanwhile without an exit.
    pub(crate) async fn wait_exit(
        &self,
        name: &str,
    ) -> Result<(i32, Option<prost_types::Timestamp>)> {
        self.record(name).await?;
        let mut rx = self
            .life
            .exits(name)
            .ok_or_else(|| Error::Internal("the lifecycle table is poisoned".into()))?;
        let seen = rx.borrow_and_update().seq;
        // Read after subscribing: an exit recorded in between shows here.
        let record = self.record(name).await?;
        let state = record.state.clone().unwrap_or_default();
        if !matches!(
            ContainerStatus::try_from(state.status),
            Ok(ContainerStatus::Running | ContainerStatus::Paused)
        ) {
            return Ok((state.exit_code, state.finished_at));
        }
        loop {
            if rx.changed().await.is_err() {
                return Err(super::not_found(name));
            }
            let note = rx.borrow_and_update().clone();
            if note.seq > seen {
                return Ok((note.code, note.at));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_lasts_from_start_to_finish() {
        let t = |s: i64| {
            Some(prost_types::Timestamp {
                seconds: s,
                nanos: 0,
            })
        };
        let c = |start, end| Container {
            state: Some(holdfast_api::v1::ContainerState {
                started_at: start,
                finished_at: end,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(ran_for(&c(t(100), t(112))), Duration::from_secs(12));
        assert_eq!(ran_for(&c(t(100), None)), Duration::ZERO);
        assert_eq!(ran_for(&c(t(100), t(90))), Duration::ZERO);
    }

    #[tokio::test]
    async fn waiters_see_each_exit_and_a_cancelled_restart_does_not_fire() {
        let life = Life::default();
        let mut rx = life.exits("web").unwrap_or_else(|| panic!("no entry"));
        let seen = rx.borrow_and_update().seq;
        life.notify_exit("web", 3, None);
        rx.changed().await.unwrap_or_else(|e| panic!("{e}"));
        let note = rx.borrow_and_update().clone();
        assert!(note.seq > seen);
        assert_eq!(note.code, 3);

        let task = tokio::spawn(std::future::pending::<()>());
        life.set_restart("web", 7, task.abort_handle());
        life.cancel_restart("web");
        assert!(task.await.is_err_and(|e| e.is_cancelled()));
        assert!(!life.take_restart("web", 7));

        life.forget("web");
        assert!(rx.changed().await.is_err(), "waiters see a removal");
    }

    #[test]
    fn the_backoff_grows_per_container_and_resets() {
        let life = Life::default();
        let short = Duration::from_millis(10);
        assert_eq!(life.next_delay("a", short), Duration::from_millis(100));
        assert_eq!(life.next_delay("a", short), Duration::from_millis(200));
        assert_eq!(life.next_delay("b", short), Duration::from_millis(100));
        life.reset_backoff("a");
        assert_eq!(life.next_delay("a", short), Duration::from_millis(100));
    }
}
