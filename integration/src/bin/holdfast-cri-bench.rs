//! The CRI measurements of `make bench` (scripts/bench.sh, section `cri`),
//! each on a private containerd with its CRI plugin (the test fixture):
//!
//! - `outage VERSION HANDLER SECS`: the scenario of
//!   [`holdfast_integration::cri_outage`] — a pod writes numbered lines,
//!   containerd is killed for SECS seconds; prints the measurements;
//! - `pod-memory VERSION HANDLER N`: a pod of N idle app containers (plus
//!   its sandbox); prints the number of shim processes serving it and their
//!   memory (sums of RSS, PSS, private and anonymous KiB, from
//!   `smaps_rollup`).
//!
//! Each prints one line of `key=value` pairs for the script to parse.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use holdfast_integration::cri::Cri;
use holdfast_integration::{cri_outage, procs, Fixture, Version};
use k8s_cri::v1 as cri;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("holdfast-cri-bench: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(args: &[String]) -> Result<String> {
    let [what, version, handler, n] = args else {
        bail!("usage: holdfast-cri-bench outage|pod-memory VERSION HANDLER SECS|CONTAINERS");
    };
    let version = Version::parse(version)?;
    let n: u64 = n.parse().with_context(|| format!("not a number: {n}"))?;
    let cri = Cri::start_named(version, &format!("cri-bench-{what}"))?;
    let line = match what.as_str() {
        "outage" => {
            let r = cri_outage::run(&cri, handler, Duration::from_secs(n))?;
            format!(
                "handler={} down={:.1} written={} written_while_down={} max_stall={:.3} logged={} lost={} duplicated={} out_of_order={} foreign={} times_ordered={}",
                r.handler, r.down, r.log.written, r.written_while_down, r.max_stall, r.log.logged,
                r.log.lost, r.log.duplicated, r.log.out_of_order, r.log.foreign, r.log.times_ordered
            )
        }
        "pod-memory" => pod_memory(&cri, handler, n)?,
        other => bail!("unknown measurement {other:?}"),
    };
    let errors = Fixture::teardown(&cri);
    if !errors.is_empty() {
        bail!("teardown: {}", errors.join("; "));
    }
    Ok(line)
}

/// `(rss, pss, private, anonymous)` KiB and threads of `pid`.
fn memory(pid: u32) -> Result<(u64, u64, u64, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .with_context(|| format!("smaps_rollup of {pid}"))?;
    let field = |name: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("status of {pid}"))?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Ok((
        field("Rss:"),
        field("Pss:"),
        field("Private_Clean:") + field("Private_Dirty:"),
        field("Anonymous:"),
        threads,
    ))
}

fn pod_memory(cri: &Cri, handler: &str, containers: u64) -> Result<String> {
    let pod_cfg = cri.pod_config("mem");
    let pod = cri.run_pod(&pod_cfg, handler)?;
    let mut ids = Vec::new();
    for i in 0..containers {
        let cfg = cri.container_config(&format!("c{i}"), &["/bin/sleep", "infinity"]);
        let id = cri.create_container(&pod, &cfg, &pod_cfg)?;
        cri.start_container(&id)?;
        ids.push(id);
    }
    for id in &ids {
        cri.wait_container_state(
            id,
            cri::ContainerState::ContainerRunning,
            Duration::from_secs(30),
        )?;
    }
    // Let the shims trim their heaps after the starts.
    std::thread::sleep(Duration::from_secs(3));
    let shims = procs::shims_of(&cri.containerd().address());
    let (mut rss, mut pss, mut private, mut anon, mut threads) = (0, 0, 0, 0, 0);
    for pid in &shims {
        let (r, p, v, a, t) = memory(*pid)?;
        (rss, pss, private, anon, threads) = (rss + r, pss + p, private + v, anon + a, threads + t);
    }
    cri.stop_pod(&pod)?;
    cri.remove_pod(&pod)?;
    Ok(format!(
        "handler={handler} containers={containers} shims={} rss_kib={rss} pss_kib={pss} private_kib={private} anon_kib={anon} threads={threads}",
        shims.len()
    ))
}
