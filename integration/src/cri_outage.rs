//! Issue 6's point, as a scenario a test and `make bench` both run: a pod's
//! container writes numbered lines as fast as it can and records its own
//! progress in a host folder (mounted at its `/tmp`); containerd is killed
//! with `kill -9` and kept down for a while; then it comes back, the writer
//! stops, and the pod's CRI log file is read back.
//!
//! With holdfast's shim (handler `holdfast`) the container never waits for
//! containerd and the shim writes the log file itself, so every line is
//! there once and in order. With the Go runc shim (handler `runc`) the
//! container blocks once the FIFO and its pipe are full, and the lines
//! containerd had read but not written when it was killed are lost.

use std::thread;
use std::time::Duration;

use anyhow::Result;

use crate::cri::{wait_log_lines, Cri, LogCheck};
use crate::logs::uptime;

/// What one run of the scenario measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Outage {
    /// The runtime handler of the pod.
    pub handler: String,
    /// How long containerd was down, in seconds.
    pub down: f64,
    /// Lines the container wrote while containerd was down.
    pub written_while_down: u64,
    /// The longest time, in seconds, the writer made no progress, from the
    /// kill to the restart.
    pub max_stall: f64,
    /// The pod's log file against the lines written.
    pub log: LogCheck,
}

impl Outage {
    /// Every line once, in order, and nothing else.
    pub fn exact(&self) -> bool {
        self.log.exact()
    }
}

/// How long the writer may take to finish after containerd is back (the Go
/// shim's container first waits for containerd to drain its backlog).
const FINISH_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs the scenario on a new pod of `handler`, with containerd down for
/// `down`; removes the pod afterwards.
pub fn run(cri: &Cri, handler: &str, down: Duration) -> Result<Outage> {
    let cd = cri.containerd();
    let (pod, tag) = cri.run_writer(handler, "outage")?;

    let killed_at = uptime()?;
    cd.kill9()?;
    thread::sleep(down);
    let back_at = uptime()?;
    cd.restart()?;
    cri.wait_ready(Duration::from_secs(60))?;

    let p = pod.stop_writer(cri, &tag, FINISH_TIMEOUT)?;
    let written = p.done.map(|(n, _)| n).unwrap_or(0);
    let records = wait_log_lines(&[&pod.log], written)?;
    let out = Outage {
        handler: handler.to_string(),
        down: back_at - killed_at,
        written_while_down: p.count_at(back_at).saturating_sub(p.count_at(killed_at)),
        max_stall: p.longest_stall(killed_at, back_at).0,
        log: LogCheck::of(&records, written),
    };
    pod.remove(cri)?;
    Ok(out)
}
