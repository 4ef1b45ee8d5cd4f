//! holdfastd's shutdown, the reverse of start-up: no more restarts or
//! scheduled checkpoints (the monitor stops, pending restarts and
//! checkpoint schedules are cancelled, operations in flight, a scheduled
//! dump included, finish: [`QUIESCE_TIMEOUT`]), then, with live restore
//! off, every running container is stopped in parallel, each with its own
//! stop signal and timeout, under one deadline ([`crate::stop`]).
//!
//! A stop at shutdown is not a stop by the user: an `unless-stopped` or
//! `always` container comes back when holdfastd starts again, as with
//! Docker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_api::v1::ContainerStatus;
use tracing::{info, info_span, warn, Instrument};

use super::lifecycle::Phase;
use super::monitor::Monitor;
use super::Manager;
use crate::stop::effective_shutdown_deadline;

/// How long shutdown waits for operations in flight (a policy restart, an
/// exit being recorded) before it goes on.
pub const QUIESCE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the shutdown did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Containers stopped (live restore off).
    pub stopped: usize,
    /// Containers whose stop failed or was still running at the deadline.
    pub not_stopped: Vec<String>,
    /// The deadline used (`None`: none).
    pub deadline: Option<Duration>,
}

impl Manager {
    /// Shuts the lifecycle down: stops `monitor` and pending restarts; with
    /// `live_restore` off, stops every running container within the
    /// deadline (`shutdown_timeout` seconds when set, else the largest stop
    /// timeout plus 5 s, none if one is -1). With it on, containers, their
    /// shims and tasks are left untouched.
    pub async fn shut_down(
        self: &Arc<Self>,
        monitor: Option<Monitor>,
        live_restore: bool,
        shutdown_timeout: Option<u64>,
    ) -> ShutdownReport {
        self.life.set_phase(Phase::ShuttingDown);
        drop(monitor);
        self.life.cancel_all_restarts();
        self.disarm_all_schedules();
        self.quiesce(QUIESCE_TIMEOUT).await;
        if live_restore {
            info!("live restore: leaving every container running");
            return ShutdownReport::default();
        }
        self.stop_all(shutdown_timeout).await
    }

    /// Waits until no operation holds a container's lock (a restart or an
    /// exit being handled finishes its containerd calls and its record
    /// write), up to `timeout`. New ones see the phase and do nothing.
    async fn quiesce(&self, timeout: Duration) {
        let locks: Vec<_> = match self.locks.lock() {
            Ok(map) => map.values().cloned().collect(),
            Err(_) => return,
        };
        let all = futures::future::join_all(locks.into_iter().map(|l| async move {
            drop(l.lock_owned().await);
        }));
        if tokio::time::timeout(timeout, all).await.is_err() {
            warn!(
                timeout_ms = timeout.as_millis() as u64,
                "operations still running at shutdown; leaving them"
            );
        }
    }

    async fn stop_all(self: &Arc<Self>, shutdown_timeout: Option<u64>) -> ShutdownReport {
        let running = match self.list(false).await {
            Ok(list) => list,
            Err(e) => {
                warn!(error = %e, "cannot list the containers to stop them");
                return ShutdownReport::default();
            }
        };
        let specs: Vec<_> = running
            .into_iter()
            .filter(|c| {
                c.state
                    .as_ref()
                    .is_some_and(|s| s.status == ContainerStatus::Running as i32)
            })
            .filter_map(|c| c.spec)
            .collect();
        let timeouts: Vec<i64> = specs.iter().map(|s| s.stop_timeout_seconds).collect();
        let deadline = effective_shutdown_deadline(shutdown_timeout, &timeouts);
        info!(
            containers = specs.len(),
            deadline_ms = deadline.map(|d| d.as_millis() as u64),
            "live restore off: stopping the containers"
        );
        let t = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for spec in specs {
            let me = self.clone();
            set.spawn(async move {
                let name = spec.name;
                let result = async {
                    let _guard = me.lock(&name).await?;
                    me.stop_locked(&name, None, false).await
                }
                .instrument(info_span!("stop at shutdown", container = %name))
                .await;
                if let Err(e) = &result {
                    warn!(container = %name, error = %e, "stop at shutdown failed");
                }
                (name, result.is_ok())
            });
        }
        let mut report = ShutdownReport {
            deadline,
            ..Default::default()
        };
        let collect = async {
            while let Some(joined) = set.join_next().await {
                match joined {
                    Ok((_, true)) => report.stopped += 1,
                    Ok((name, false)) => report.not_stopped.push(name),
                    Err(e) => warn!(error = %e, "a stop task failed"),
                }
            }
        };
        let timed_out = match deadline {
            None => {
                collect.await;
                false
            }
            Some(d) => tokio::time::timeout(d, collect).await.is_err(),
        };
        if timed_out {
            warn!(
                deadline_ms = deadline.map(|d| d.as_millis() as u64),
                "containers still stopping at the shutdown deadline; leaving them"
            );
            set.abort_all();
        }
        info!(
            stopped = report.stopped,
            failed = report.not_stopped.len(),
            elapsed_ms = t.elapsed().as_millis() as u64,
            "containers stopped"
        );
        report
    }
}
