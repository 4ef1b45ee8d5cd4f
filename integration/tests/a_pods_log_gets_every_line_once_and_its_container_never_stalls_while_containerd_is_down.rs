//! Issue 6, the point of it: a pod on holdfast (handler `holdfast`, through
//! containerd's CRI plugin) writes numbered lines as fast as it can;
//! containerd is killed with `kill -9` and kept down 60 s
//! (`HOLDFAST_LOG_OUTAGE_SECS`). The container never stalls more than a
//! second meanwhile, and once containerd is back the pod's CRI log file
//! holds every line exactly once, in order, with timestamps that never go
//! back. The same scenario with the Go runc shim is in `make bench`.

use std::time::Duration;

use anyhow::ensure;
use holdfast_integration::cri::{Cri, HANDLER};
use holdfast_integration::{cri_outage, each_version_of, env_usize};

/// Longest time the container may go without progress.
const MAX_STALL: f64 = 1.0;

#[test]
fn a_pods_log_gets_every_line_once_and_its_container_never_stalls_while_containerd_is_down() {
    each_version_of(|cri: &Cri| {
        let down = Duration::from_secs(env_usize("HOLDFAST_LOG_OUTAGE_SECS", 60) as u64);
        let r = cri_outage::run(cri, HANDLER, down)?;
        eprintln!("{r:?}");
        ensure!(
            r.written_while_down > 0,
            "the container wrote nothing while containerd was down: {r:?}"
        );
        ensure!(
            r.max_stall <= MAX_STALL,
            "the container stalled {:.2} s while containerd was down: {r:?}",
            r.max_stall
        );
        ensure!(
            r.exact(),
            "the CRI log does not hold every line exactly once in order: {r:?}"
        );
        ensure!(
            r.log.times_ordered,
            "the CRI log's timestamps go back: {r:?}"
        );
        cri.assert_clean()
    });
}
