//! holdfastd's phased start-up ([`Manager::start_up`]):
//!
//! 1. **load**: every record is read and registered, at most
//!    [`crate::startup::load_parallelism`] at once; a record that cannot be
//!    used is quarantined (kept, listed, removable);
//! 2. **reconcile** with containerd's task list, per record ([`decide`]):
//!    a running task with the recorded pid is adopted; a task that exited
//!    while holdfastd was down has its real exit status and time recorded
//!    (the shim keeps it until Delete) and is deleted; a vanished task is
//!    recorded as exited with [`UNKNOWN_EXIT_CODE`]; containers labelled as
//!    holdfast's with no record are reported;
//! 3. **restart policies and auto-remove**, as Docker does when its daemon
//!    starts, and the checkpoint schedules of running containers resume;
//!    then the monitor starts.
//!
//! Each phase logs how long it took (`elapsed_ms`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_api::v1::{Container, ContainerStatus};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::lifecycle::{Phase, Starter, UNKNOWN_EXIT_CODE};
use super::monitor::Monitor;
use super::{status_of, Manager};
use crate::containerd::{managed_filter, ExitStatus, TaskInfo, TaskStatus};
use crate::error::{Error, Result};
use crate::restart::should_restart;
use crate::startup::{cores, load_parallelism, nofile_limit};
use crate::store::Loaded;

/// What phase 2 does with one record, given containerd's task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing to change.
    Keep,
    /// The task runs: the record shows it running with this pid.
    Adopt {
        /// The task's pid.
        pid: u32,
    },
    /// The task exited while holdfastd was down: record the exit (after
    /// deleting the task, whose delete answer carries the status).
    RecordExit {
        /// The exit status containerd's task list shows.
        code: u32,
        /// When, if known.
        exited_at: Option<std::time::SystemTime>,
    },
    /// The recorded run's task is gone: exited, status unknown.
    Vanished,
    /// An exited task of a record that already shows the exit: delete it
    /// (holdfastd died between the exit and its delete).
    DeleteStale,
}

/// Phase 2's rule for one record of `status` and `pid`.
pub fn decide(status: ContainerStatus, pid: u32, task: Option<&TaskInfo>) -> Action {
    use ContainerStatus as S;
    let was_running = matches!(status, S::Running | S::Paused);
    match task {
        Some(t)
            if matches!(
                t.status,
                TaskStatus::Running | TaskStatus::Paused | TaskStatus::Pausing
            ) =>
        {
            if was_running && t.pid == pid {
                Action::Keep
            } else {
                // A run holdfastd did not record (it died between starting
                // the task and writing the record), or a new pid.
                Action::Adopt { pid: t.pid }
            }
        }
        Some(t) if t.status == TaskStatus::Stopped => {
            if was_running {
                Action::RecordExit {
                    code: t.exit_status,
                    exited_at: t.exited_at,
                }
            } else if status == S::Created {
                Action::Keep
            } else {
                Action::DeleteStale
            }
        }
        // Created (not started) or unknown: start handles them.
        Some(_) => Action::Keep,
        None if was_running => Action::Vanished,
        None => Action::Keep,
    }
}

/// What [`Manager::apply`] did, for the report.
enum Outcome {
    Adopted,
    Exited,
    Unchanged,
}

/// What start-up found, for the log and the tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartupReport {
    /// Records loaded and usable.
    pub loaded: usize,
    /// Records quarantined.
    pub quarantined: Vec<String>,
    /// Running tasks adopted (same or new pid).
    pub adopted: usize,
    /// Exits that happened while holdfastd was down.
    pub exited_while_down: usize,
    /// containerd containers labelled as holdfast's without a record.
    pub orphans: Vec<String>,
    /// Containers restarted by their policy in phase 3.
    pub restarted: usize,
    /// Containers auto-removed in phase 3.
    pub removed: usize,
    /// Checkpoint schedules of adopted running containers armed again in
    /// phase 3.
    pub schedules_resumed: usize,
    /// Checkpoint folders without a record (dumps holdfastd did not
    /// finish) removed in phase 3.
    pub unrecorded_checkpoints: usize,
    /// How long each phase took.
    pub phase_times: [Duration; 3],
}

impl Manager {
    /// Runs the three start-up phases, then starts watching exits. The
    /// phase ([`Manager::phase`]) is [`Phase::Ready`] once this returns
    /// `Ok`. The returned monitor stops when dropped.
    pub async fn start_up(self: &Arc<Self>) -> Result<(StartupReport, Monitor)> {
        let mut report = StartupReport::default();
        let t = Instant::now();
        self.life.set_phase(Phase::Loading);
        // Staging folders of imports a killed holdfastd did not finish.
        super::remove_dir_if_any(&self.config.root.join(super::IMPORTS_DIR)).await;
        let (records, permits) = self.phase1_load(&mut report).await?;
        report.phase_times[0] = t.elapsed();
        info!(
            phase = 1,
            elapsed_ms = t.elapsed().as_millis() as u64,
            records = report.loaded,
            quarantined = report.quarantined.len(),
            parallelism = permits,
            "start-up phase 1 done: records loaded"
        );

        let t = Instant::now();
        self.life.set_phase(Phase::Reconciling);
        self.phase2_reconcile(&records, &mut report).await?;
        report.phase_times[1] = t.elapsed();
        info!(
            phase = 2,
            elapsed_ms = t.elapsed().as_millis() as u64,
            adopted = report.adopted,
            exited_while_down = report.exited_while_down,
            orphans = report.orphans.len(),
            "start-up phase 2 done: reconciled with containerd"
        );

        let t = Instant::now();
        self.life.set_phase(Phase::Restarting);
        self.phase3_policies(permits, &mut report).await?;
        report.unrecorded_checkpoints = self.remove_unrecorded_checkpoints().await?;
        report.schedules_resumed = self.resume_schedules().await?;
        let monitor = self
            .start_monitor()
            .ok_or_else(|| Error::Internal("start-up ran twice".into()))?;
        report.phase_times[2] = t.elapsed();
        info!(
            phase = 3,
            elapsed_ms = t.elapsed().as_millis() as u64,
            restarted = report.restarted,
            auto_removed = report.removed,
            unrecorded_checkpoints = report.unrecorded_checkpoints,
            schedules_resumed = report.schedules_resumed,
            "start-up phase 3 done: restart policies applied, checkpoint schedules resumed, exits monitored"
        );
        self.life.set_phase(Phase::Ready);
        Ok((report, monitor))
    }

    async fn phase1_load(&self, report: &mut StartupReport) -> Result<(Vec<Container>, usize)> {
        let names = self.store(|s| s.names()).await?;
        let permits = load_parallelism(names.len(), cores(), nofile_limit());
        let sem = Arc::new(Semaphore::new(permits));
        let mut set = JoinSet::new();
        for name in names {
            let sem = sem.clone();
            let store = self.store.clone();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let n = name.clone();
                let got = tokio::task::spawn_blocking(move || store.get(&n)).await;
                (name, got)
            });
        }
        let mut records = Vec::new();
        while let Some(joined) = set.join_next().await {
            let (name, got) = joined.map_err(|e| Error::Internal(format!("load task: {e}")))?;
            let got = got.map_err(|e| Error::Internal(format!("load task: {e}")))??;
            self.life.register(&name);
            match got {
                Some(Loaded::Ok(c)) => records.push(c),
                Some(Loaded::Quarantined {
                    reason, raw_len, ..
                }) => {
                    warn!(container = %name, %reason, raw_len, "record quarantined: listed, removable with rm");
                    self.event(&name, "quarantine", 0, &reason);
                    report.quarantined.push(name);
                }
                None => {}
            }
        }
        records.sort_by(|a, b| name_of(a).cmp(name_of(b)));
        report.quarantined.sort();
        report.loaded = records.len();
        Ok((records, permits))
    }

    async fn phase2_reconcile(
        self: &Arc<Self>,
        records: &[Container],
        report: &mut StartupReport,
    ) -> Result<()> {
        let tasks = self.containerd.list_tasks().await?;
        for record in records {
            let name = name_of(record);
            let state = record.state.clone().unwrap_or_default();
            let status = status_of(record);
            let task = tasks.iter().find(|t| t.id == name);
            let action = decide(status, state.pid, task);
            let _guard = self.lock(name).await?;
            match self.apply(record.clone(), &action).await {
                Ok(Outcome::Adopted) => report.adopted += 1,
                Ok(Outcome::Exited) => report.exited_while_down += 1,
                Ok(Outcome::Unchanged) => {}
                Err(e) => {
                    warn!(container = name, error = %e, ?action, "reconcile failed for this container")
                }
            }
        }
        let known: HashSet<&str> = records
            .iter()
            .map(name_of)
            .chain(report.quarantined.iter().map(String::as_str))
            .collect();
        let managed = self.containerd.list_containers(&[managed_filter()]).await?;
        report.orphans = managed
            .into_iter()
            .map(|c| c.id)
            .filter(|id| !known.contains(id.as_str()))
            .collect();
        report.orphans.sort();
        for id in &report.orphans {
            let task = tasks.iter().find(|t| &t.id == id);
            warn!(
                container = %id,
                task = ?task.map(|t| t.status),
                pid = task.map_or(0, |t| t.pid),
                "containerd has a container labelled as holdfast's with no record; left alone (remove it with ctr)"
            );
        }
        Ok(())
    }

    /// Carries out phase 2's `action` for `record` (lock held).
    async fn apply(self: &Arc<Self>, mut record: Container, action: &Action) -> Result<Outcome> {
        let name = name_of(&record).to_owned();
        match action {
            Action::Keep => {
                let state = record.state.clone().unwrap_or_default();
                if !matches!(
                    status_of(&record),
                    ContainerStatus::Running | ContainerStatus::Paused
                ) {
                    return Ok(Outcome::Unchanged);
                }
                info!(container = %name, pid = state.pid, "adopted the running task");
                self.event(&name, "adopt", 0, "");
                self.life.started(&name, state.pid);
                Ok(Outcome::Adopted)
            }
            Action::Adopt { pid } => {
                let state = record.state.get_or_insert_with(Default::default);
                warn!(container = %name, pid, recorded_pid = state.pid, recorded_status = state.status, "adopted a running task the record did not show");
                state.status = ContainerStatus::Running as i32;
                state.pid = *pid;
                state.finished_at = None;
                self.put(&record).await?;
                self.event(&name, "adopt", 0, "");
                self.life.started(&name, *pid);
                Ok(Outcome::Adopted)
            }
            Action::RecordExit { code, exited_at } => {
                let exit = match self.containerd.delete_task(&name).await {
                    Ok(e) => ExitStatus {
                        code: e.code,
                        exited_at: e.exited_at.or(*exited_at),
                    },
                    Err(e) if e.is_not_found() => ExitStatus {
                        code: *code,
                        exited_at: *exited_at,
                    },
                    Err(e) => return Err(e.into()),
                };
                info!(container = %name, exit_code = exit.code, "the task exited while holdfastd was down");
                self.record_exit(record, exit, false).await?;
                Ok(Outcome::Exited)
            }
            Action::Vanished => {
                if let Some(s) = record.state.as_mut() {
                    s.error =
                        "the task was gone when holdfastd started; its exit status is unknown"
                            .into();
                }
                warn!(container = %name, "the task is gone; recorded as exited with an unknown status");
                self.record_exit(
                    record,
                    ExitStatus {
                        code: UNKNOWN_EXIT_CODE as u32,
                        exited_at: None,
                    },
                    false,
                )
                .await?;
                Ok(Outcome::Exited)
            }
            Action::DeleteStale => match self.containerd.delete_task(&name).await {
                Ok(_) => Ok(Outcome::Unchanged),
                Err(e) if e.is_not_found() => Ok(Outcome::Unchanged),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Phase 3: restart what the policies say (at once, as Docker does at
    /// its start), auto-remove exited `--rm` containers, in parallel.
    async fn phase3_policies(
        self: &Arc<Self>,
        permits: usize,
        report: &mut StartupReport,
    ) -> Result<()> {
        let records = self.store(|s| s.load_all()).await?;
        let sem = Arc::new(Semaphore::new(permits));
        let mut set = JoinSet::new();
        for loaded in records {
            let Loaded::Ok(c) = loaded else { continue };
            let status = status_of(&c);
            if !matches!(
                status,
                ContainerStatus::Exited | ContainerStatus::Restarting
            ) {
                continue;
            }
            let spec = c.spec.clone().unwrap_or_default();
            let state = c.state.clone().unwrap_or_default();
            let has_run = state.started_at.is_some();
            let restart = has_run
                && should_restart(
                    spec.restart.as_ref(),
                    state.exit_code,
                    state.restart_count,
                    state.stopped_by_user,
                    true,
                );
            if !restart && !spec.auto_remove && status != ContainerStatus::Restarting {
                continue;
            }
            let me = self.clone();
            let sem = sem.clone();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let Ok(_guard) = me.lock(&spec.name).await else {
                    return (false, false);
                };
                if restart {
                    match me.start_locked(&spec.name, Starter::Policy).await {
                        Ok(_) => {
                            me.event(&spec.name, "restart", 0, "at start-up");
                            return (true, false);
                        }
                        Err(e) => {
                            warn!(container = %spec.name, error = %e, "restart at start-up failed");
                            if let Err(e) = me.after_failed_restart(c, &e).await {
                                warn!(container = %spec.name, error = %e, "recording a failed restart");
                            }
                            return (false, false);
                        }
                    }
                }
                if spec.auto_remove {
                    return match me.remove_locked(&spec.name, false).await {
                        Ok(()) => (false, true),
                        Err(e) => {
                            warn!(container = %spec.name, error = %e, "auto-remove at start-up failed");
                            (false, false)
                        }
                    };
                }
                // RESTARTING but its policy no longer restarts it.
                let mut c = c;
                if let Some(s) = c.state.as_mut() {
                    s.status = ContainerStatus::Exited as i32;
                }
                if let Err(e) = me.put(&c).await {
                    warn!(container = %spec.name, error = %e, "record");
                }
                (false, false)
            });
        }
        while let Some(joined) = set.join_next().await {
            let (restarted, removed) =
                joined.map_err(|e| Error::Internal(format!("phase 3 task: {e}")))?;
            report.restarted += usize::from(restarted);
            report.removed += usize::from(removed);
        }
        Ok(())
    }
}

fn name_of(c: &Container) -> &str {
    c.spec.as_ref().map_or("", |s| s.name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContainerStatus as S;

    fn task(status: TaskStatus, pid: u32, code: u32) -> TaskInfo {
        TaskInfo {
            id: "web".into(),
            pid,
            status,
            exit_status: code,
            exited_at: None,
        }
    }

    #[test]
    fn phase_two_adopts_records_exits_and_cleans_up() {
        let run = task(TaskStatus::Running, 42, 0);
        let other = task(TaskStatus::Running, 43, 0);
        let stopped = task(TaskStatus::Stopped, 42, 7);
        let created = task(TaskStatus::Created, 42, 0);
        let exit7 = Action::RecordExit {
            code: 7,
            exited_at: None,
        };
        let table: Vec<(S, u32, Option<&TaskInfo>, Action)> = vec![
            (S::Running, 42, Some(&run), Action::Keep),
            (S::Paused, 42, Some(&run), Action::Keep),
            (S::Running, 42, Some(&other), Action::Adopt { pid: 43 }),
            (S::Exited, 0, Some(&run), Action::Adopt { pid: 42 }),
            (S::Created, 0, Some(&run), Action::Adopt { pid: 42 }),
            (S::Running, 42, Some(&stopped), exit7.clone()),
            (S::Paused, 42, Some(&stopped), exit7),
            (S::Exited, 0, Some(&stopped), Action::DeleteStale),
            (S::Restarting, 0, Some(&stopped), Action::DeleteStale),
            (S::Created, 0, Some(&stopped), Action::Keep),
            (S::Created, 0, Some(&created), Action::Keep),
            (S::Running, 42, None, Action::Vanished),
            (S::Exited, 0, None, Action::Keep),
            (S::Created, 0, None, Action::Keep),
            (S::Restarting, 0, None, Action::Keep),
        ];
        for (status, pid, t, want) in table {
            assert_eq!(
                decide(status, pid, t),
                want,
                "{status:?} pid {pid} task {t:?}"
            );
        }
    }
}
