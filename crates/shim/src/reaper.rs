//! The shim is a child subreaper: every process of its containers that loses
//! its parent (the container's init once `runc create` exits, every exec) is
//! reparented to the shim, and so is every `runc` command it runs. One reaper
//! collects all of them with `waitpid(-1)` and hands each exit status to
//! whoever waits for that pid.
//!
//! A process may exit before anyone has asked for it (a fast exec, a `runc`
//! command that fails at once), so statuses nobody has claimed yet are kept
//! for a while and handed out when the waiter arrives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use time::OffsetDateTime;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How long an unclaimed exit status is kept before it is forgotten.
const UNCLAIMED_TTL: Duration = Duration::from_secs(300);

/// The exit of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The pid that exited.
    pub pid: i32,
    /// The exit status as containerd reports it: the exit code, or 128 plus
    /// the signal number when the process was killed by a signal.
    pub status: i32,
    /// When the shim reaped it.
    pub at: OffsetDateTime,
}

#[derive(Default)]
struct State {
    waiters: HashMap<i32, Vec<oneshot::Sender<Exit>>>,
    unclaimed: HashMap<i32, (Exit, Instant)>,
}

/// Collects exit statuses of the shim's children and dispatches them by pid.
#[derive(Clone, Default)]
pub struct Reaper {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Reaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reaper").finish_non_exhaustive()
    }
}

impl Reaper {
    /// A reaper with no waiters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reaps on every SIGCHLD until the runtime stops. Call once.
    pub fn spawn_sigchld_loop(&self) -> std::io::Result<()> {
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = self.clone();
        tokio::spawn(async move {
            // A SIGCHLD may have arrived before the stream existed.
            reaper.reap_all();
            while sigchld.recv().await.is_some() {
                reaper.reap_all();
            }
        });
        Ok(())
    }

    /// Reaps every child that has exited so far.
    pub fn reap_all(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.deliver(pid.as_raw(), code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.deliver(pid.as_raw(), 128 + sig as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "waitpid failed");
                    return;
                }
            }
        }
    }

    /// Records the exit of `pid` and wakes its waiters.
    pub fn deliver(&self, pid: i32, status: i32) {
        let exit = Exit {
            pid,
            status,
            at: OffsetDateTime::now_utc(),
        };
        let mut state = self.lock();
        match state.waiters.remove(&pid) {
            Some(waiters) => {
                for w in waiters {
                    let _ = w.send(exit);
                }
            }
            None => {
                let now = Instant::now();
                state
                    .unclaimed
                    .retain(|_, (_, since)| now.duration_since(*since) < UNCLAIMED_TTL);
                state.unclaimed.insert(pid, (exit, now));
            }
        }
    }

    /// Registers interest in `pid` and returns a receiver for its exit.
    ///
    /// Register before the process can possibly be reaped by someone else's
    /// wait; an exit that already happened is returned at once.
    pub fn subscribe(&self, pid: i32) -> oneshot::Receiver<Exit> {
        let (tx, rx) = oneshot::channel();
        let mut state = self.lock();
        if let Some((exit, _)) = state.unclaimed.remove(&pid) {
            let _ = tx.send(exit);
        } else {
            state.waiters.entry(pid).or_default().push(tx);
        }
        rx
    }

    /// Waits for `pid` to exit.
    pub async fn wait(&self, pid: i32) -> Option<Exit> {
        self.subscribe(pid).await.ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a waiter panicked; the map is still valid.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exit_before_subscribe_is_kept_for_the_waiter() {
        let r = Reaper::new();
        r.deliver(4242, 7);
        let exit = r.wait(4242).await.unwrap();
        assert_eq!((exit.pid, exit.status), (4242, 7));
    }

    #[tokio::test]
    async fn every_waiter_of_a_pid_is_woken() {
        let r = Reaper::new();
        let a = r.subscribe(10);
        let b = r.subscribe(10);
        r.deliver(10, 137);
        assert_eq!(a.await.unwrap().status, 137);
        assert_eq!(b.await.unwrap().status, 137);
    }

    #[tokio::test]
    // The reaper under test waits for the child, not `Child::wait`.
    #[allow(clippy::zombie_processes)]
    async fn reaps_a_real_child() {
        let r = Reaper::new();
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        let mut rx = r.subscribe(child.id() as i32);
        let deadline = Instant::now() + Duration::from_secs(10);
        let exit = loop {
            r.reap_all();
            if let Ok(e) = rx.try_recv() {
                break e;
            }
            assert!(Instant::now() < deadline, "child was never reaped");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(exit.status, 3);
    }
}
