//! Slow filesystem work kept off the appending thread.
//!
//! `fdatasync` of a segment and `unlink` of a segment whose pages are still
//! in the page cache each take tens of milliseconds on a busy disk; done
//! inline, they stall the drain of a fast-logging container at every
//! rotation. They run on tokio's blocking pool instead (whose threads exist
//! only while there is work, then go after a few idle seconds), or inline
//! when there is no runtime (tools, tests).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Counts a journal's jobs in flight so that removing its folder can wait
/// for them.
#[derive(Debug, Default)]
pub(crate) struct Jobs {
    pending: Mutex<usize>,
    idle: Condvar,
}

impl Jobs {
    fn lock(&self) -> MutexGuard<'_, usize> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn done(&self) {
        let mut n = self.lock();
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.idle.notify_all();
        }
    }

    /// Waits until no job is in flight, or `timeout`; `true` when idle.
    pub(crate) fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut n = self.lock();
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            n = self
                .idle
                .wait_timeout(n, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// Runs `job` off the caller's thread when a tokio runtime is there (else
/// now), counting it in `jobs` until it finished.
pub(crate) fn run(jobs: &std::sync::Arc<Jobs>, job: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            *jobs.lock() += 1;
            // Counted done when the job ran, or was dropped unrun by a
            // runtime shutting down.
            let guard = Done(jobs.clone());
            // Dropping the handle detaches the job; it ends on its own.
            drop(rt.spawn_blocking(move || {
                job();
                drop(guard);
            }));
        }
        Err(_) => job(),
    }
}

struct Done(std::sync::Arc<Jobs>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.done();
    }
}
