//! Watching running tasks for exits, three ways, all landing in
//! [`Manager::on_exit`] (which checks containerd, so a duplicate changes
//! nothing):
//!
//! 1. containerd's TaskExit events: the fast path. The stream ends when
//!    containerd goes away; it is subscribed again with a back-off.
//! 2. a resync with containerd's task list after every (re)subscription and
//!    every [`RESYNC_INTERVAL`]: exits published while the stream was down
//!    (containerd restarting, or a shim that gave up publishing) are found
//!    there, with their real exit status, since the shim keeps an exited
//!    task until it is deleted;
//! 3. one containerd `Wait` per running task, retried across containerd
//!    restarts: the safety net if an event is lost while the stream looks
//!    healthy.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use holdfast_api::v1::ContainerStatus;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::lifecycle::Hint;
use super::{status_of, Manager};
use crate::containerd::{ExitStatus, TaskEvent, TaskStatus};
use crate::store::Loaded;

/// How often the task list is compared with the records even when events
/// flow.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(30);
/// The longest wait before subscribing again or retrying a `Wait`.
const MAX_RETRY: Duration = Duration::from_secs(2);

/// The tasks watching exits (events, resync, per-task waits); dropping
/// it stops them.
#[derive(Debug, Default)]
pub struct Monitor {
    tasks: JoinSet<()>,
}

impl Monitor {
    /// Stops every task of the monitor.
    pub fn stop(&mut self) {
        self.tasks.abort_all();
    }
}

fn next_retry(d: Duration) -> Duration {
    (d * 2).min(MAX_RETRY)
}

impl Manager {
    /// Starts the monitor (after phase 3). Returns `None` if it was already
    /// started.
    pub(crate) fn start_monitor(self: &Arc<Self>) -> Option<Monitor> {
        let mut hints = self.life.take_hints()?;
        let mut monitor = Monitor::default();
        let me = self.clone();
        monitor.tasks.spawn(async move { me.event_loop().await });
        let me = self.clone();
        monitor.tasks.spawn(async move {
            let mut waiters = JoinSet::new();
            loop {
                tokio::select! {
                    hint = hints.recv() => match hint {
                        Some(Hint::Started { name, pid }) => {
                            let me = me.clone();
                            waiters.spawn(async move { me.wait_task(name, pid).await });
                        }
                        None => return,
                    },
                    Some(_) = waiters.join_next(), if !waiters.is_empty() => {}
                }
            }
        });
        let me = self.clone();
        monitor.tasks.spawn(async move {
            let mut tick = tokio::time::interval(RESYNC_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                me.resync("periodic").await;
            }
        });
        Some(monitor)
    }

    /// Subscribes to task events, resyncs, handles exits until the stream
    /// ends, and again.
    async fn event_loop(self: Arc<Self>) {
        let mut retry = Duration::from_millis(100);
        loop {
            let mut events = self.containerd.events();
            self.resync("subscribed").await;
            let mut handled = 0u64;
            while let Some(item) = events.next().await {
                match item {
                    Ok(TaskEvent::Exit {
                        id,
                        exec_id,
                        pid,
                        exit_status,
                        exited_at,
                    }) if exec_id.is_empty() || exec_id == id => {
                        handled += 1;
                        let me = self.clone();
                        let hint = ExitStatus {
                            code: exit_status,
                            exited_at,
                        };
                        tokio::spawn(async move {
                            me.on_exit(&id, Some(pid), Some(hint), "event").await
                        });
                    }
                    Ok(TaskEvent::Oom { id }) => self.event(&id, "oom", 0, ""),
                    Ok(_) => {}
                    Err(e) => {
                        warn!(error = %e, "containerd's event stream failed");
                        break;
                    }
                }
            }
            if handled > 0 {
                retry = Duration::from_millis(100);
            }
            debug!(
                retry_ms = retry.as_millis() as u64,
                "subscribing to containerd's events again"
            );
            tokio::time::sleep(retry).await;
            retry = next_retry(retry);
        }
    }

    /// Compares running records with containerd's task list; hands each
    /// that no longer runs (as recorded) to [`Manager::on_exit`].
    pub(crate) async fn resync(self: &Arc<Self>, why: &'static str) {
        let records = match self.store(|s| s.load_all()).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, why, "resync: cannot read the records");
                return;
            }
        };
        let tasks = match self.containerd.list_tasks().await {
            Ok(t) => t,
            Err(e) => {
                debug!(error = %e, why, "resync: containerd does not answer");
                return;
            }
        };
        let mut exited = 0;
        for loaded in records {
            let Loaded::Ok(c) = loaded else { continue };
            if !matches!(
                status_of(&c),
                ContainerStatus::Running | ContainerStatus::Paused
            ) {
                continue;
            }
            let name = c.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
            let pid = c.state.as_ref().map_or(0, |s| s.pid);
            let task = tasks.iter().find(|t| t.id == name);
            let runs = task.is_some_and(|t| t.status != TaskStatus::Stopped && t.pid == pid);
            if !runs {
                exited += 1;
                let me = self.clone();
                tokio::spawn(async move { me.on_exit(&name, None, None, "resync").await });
            }
        }
        if exited > 0 {
            info!(why, exited, "resync found exits");
        } else {
            debug!(why, "resync: nothing missed");
        }
    }

    /// containerd's `Wait` on task `name` (run `pid`), retried while
    /// containerd is unreachable and the record still shows that run.
    async fn wait_task(self: Arc<Self>, name: String, pid: u32) {
        let mut retry = Duration::from_millis(100);
        loop {
            match self.containerd.wait(&name).await {
                Ok(exit) => return self.on_exit(&name, Some(pid), Some(exit), "wait").await,
                Err(e) if e.is_not_found() => {
                    return self.on_exit(&name, Some(pid), None, "wait").await
                }
                Err(e) => debug!(container = %name, error = %e, "wait failed; retrying"),
            }
            tokio::time::sleep(retry).await;
            retry = next_retry(retry);
            let current = match self.get(&name).await {
                Ok(Some(Loaded::Ok(c))) => c,
                _ => return,
            };
            let same_run = matches!(
                status_of(&current),
                ContainerStatus::Running | ContainerStatus::Paused
            ) && current.state.as_ref().map_or(0, |s| s.pid) == pid;
            if !same_run {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_up_to_a_bound() {
        let mut d = Duration::from_millis(100);
        for _ in 0..10 {
            d = next_retry(d);
        }
        assert_eq!(d, MAX_RETRY);
        assert_eq!(
            next_retry(Duration::from_millis(100)),
            Duration::from_millis(200)
        );
    }
}
