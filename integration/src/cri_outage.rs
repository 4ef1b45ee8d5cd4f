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

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_cri::v1 as cri;

use crate::cri::{wait_log_lines, whole_lines, Cri, TmpPod};
use crate::logs::{self, uptime, CriRecord, Progress};

/// What one run of the scenario measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Outage {
    /// The runtime handler of the pod.
    pub handler: String,
    /// How long containerd was down, in seconds.
    pub down: f64,
    /// Lines the container wrote in all.
    pub written: u64,
    /// Lines it wrote while containerd was down.
    pub written_while_down: u64,
    /// The longest time, in seconds, the writer made no progress, from the
    /// kill to the restart.
    pub max_stall: f64,
    /// `stdout` records in the log file.
    pub logged: u64,
    /// Numbers the container wrote that the log file lacks.
    pub lost: u64,
    /// Log records beyond the first of their number.
    pub duplicated: u64,
    /// Records whose number is not the one after the previous record's.
    pub out_of_order: u64,
    /// Log records that are not a number the container wrote.
    pub foreign: u64,
    /// Whether the log's timestamps never go back.
    pub times_ordered: bool,
}

impl Outage {
    /// Every line once, in order, and nothing else.
    pub fn exact(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.out_of_order == 0
            && self.foreign == 0
            && self.logged == self.written
    }
}

/// How long the writer may take to finish after containerd is back (the Go
/// shim's container first waits for containerd to drain its backlog).
const FINISH_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs the scenario on a new pod of `handler`, with containerd down for
/// `down`; removes the pod afterwards.
pub fn run(cri: &Cri, handler: &str, down: Duration) -> Result<Outage> {
    let cd = cri.containerd();
    let (pod, tag) = run_writer(cri, handler, "outage")?;

    let killed_at = uptime()?;
    cd.kill9()?;
    thread::sleep(down);
    let back_at = uptime()?;
    cd.restart()?;
    cri.wait_ready(Duration::from_secs(60))?;

    let p = stop_writer(&pod, &tag, FINISH_TIMEOUT)?;
    let written = p.done.map(|(n, _)| n).unwrap_or(0);
    cri.wait_container_state(
        &pod.container,
        cri::ContainerState::ContainerExited,
        Duration::from_secs(60),
    )?;
    let records = wait_log_lines(&[&pod.log], written)?;
    let mut out = measure(handler, &records, written)?;
    out.down = back_at - killed_at;
    out.written_while_down = p.count_at(back_at).saturating_sub(p.count_at(killed_at));
    out.max_stall = p.longest_stall(killed_at, back_at).0;
    pod.remove(cri)?;
    Ok(out)
}

/// Runs a pod of `handler` whose container writes numbered lines as fast
/// as it can ([`logs::numbered_lines_script`]); returns it and the
/// writer's tag once the writer made progress and its log file grew.
pub fn run_writer(cri: &Cri, handler: &str, name: &str) -> Result<(TmpPod, String)> {
    let tag = format!("w{}", cri.containerd().uniq());
    let script = logs::numbered_lines_script(&tag, None, false, false);
    let pod = cri.run_with_tmp(handler, name, &script)?;
    let progress = pod.tmp(&format!("progress-{tag}"));
    wait_until(
        "the writer to make progress and its log to grow",
        Duration::from_secs(30),
        || Ok(Progress::read_file(&progress)?.samples.len() >= 3 && file_len(&pod.log) > 0),
    )?;
    Ok((pod, tag))
}

/// Makes the writer of [`logs::numbered_lines_script`] with `tag` in `pod`
/// stop, and waits up to `timeout` for it to record that it did.
pub fn stop_writer(pod: &TmpPod, tag: &str, timeout: Duration) -> Result<Progress> {
    fs::write(pod.tmp(&format!("stop-{tag}")), b"").context("stop the writer")?;
    let progress = pod.tmp(&format!("progress-{tag}"));
    let deadline = Instant::now() + timeout;
    loop {
        let p = Progress::read_file(&progress)?;
        if p.done.is_some() {
            return Ok(p);
        }
        if Instant::now() >= deadline {
            bail!("the writer did not finish within {timeout:?} of being told to stop");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The size of the file at `p` (0 when missing).
pub fn file_len(p: &Path) -> u64 {
    fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Polls `f` every 50 ms until it returns true; fails after `timeout`.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !f()? {
        if Instant::now() >= deadline {
            bail!("waited {timeout:?} for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A CRI timestamp in a form that sorts as the time does: RFC3339Nano
/// drops trailing zeros of the fraction (containerd writes it so), which
/// breaks a plain string comparison.
fn sortable(ts: &str) -> String {
    let body = ts.trim_end_matches('Z');
    let (secs, frac) = body.split_once('.').unwrap_or((body, ""));
    format!("{secs}.{frac:0<9}")
}

/// Compares the log's stdout lines with the numbers `0..written`.
pub fn measure(handler: &str, records: &[CriRecord], written: u64) -> Result<Outage> {
    let texts = whole_lines(records, "stdout");
    let mut seen = HashSet::new();
    let (mut duplicated, mut out_of_order, mut foreign) = (0, 0, 0);
    let mut prev: Option<u64> = None;
    for t in &texts {
        match t.parse::<u64>() {
            Ok(n) if n < written => {
                if !seen.insert(n) {
                    duplicated += 1;
                }
                if prev.map_or(n != 0, |p| n != p + 1) {
                    out_of_order += 1;
                }
                prev = Some(n);
            }
            _ => foreign += 1,
        }
    }
    let times: Vec<String> = records.iter().map(|r| sortable(&r.time)).collect();
    let times_ordered = times.windows(2).all(|w| w[0] <= w[1]);
    Ok(Outage {
        handler: handler.to_string(),
        down: 0.0,
        written,
        written_while_down: 0,
        max_stall: 0.0,
        logged: texts.len() as u64,
        lost: written - seen.len() as u64,
        duplicated,
        out_of_order,
        foreign,
        times_ordered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(time: &str, text: &str, partial: bool) -> CriRecord {
        CriRecord {
            time: time.into(),
            stream: "stdout".into(),
            partial,
            text: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn lost_repeated_and_reordered_lines_are_counted() {
        let t = "2026-11-24T01:02:03.1Z";
        let exact = [rec(t, "0", false), rec(t, "1", true), rec(t, "", false)];
        let m = measure("h", &exact, 2).unwrap();
        assert!(m.exact() && m.times_ordered, "{m:?}");
        let bad = [
            rec(t, "0", false),
            rec(t, "2", false),
            rec(t, "2", false),
            rec(t, "x", false),
        ];
        let m = measure("h", &bad, 4).unwrap();
        assert_eq!(
            (m.lost, m.duplicated, m.out_of_order, m.foreign),
            (2, 1, 2, 1)
        );
        assert!(!m.exact());
        let back = [
            rec("2026-11-24T01:02:03.5Z", "0", false),
            rec("2026-11-24T01:02:03.45Z", "1", false),
        ];
        assert!(!measure("h", &back, 2).unwrap().times_ordered);
    }
}
