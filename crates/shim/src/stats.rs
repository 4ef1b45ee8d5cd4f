//! Converts `runc events --stats` output to containerd's cgroup metrics
//! messages (`io.containerd.cgroups.v1.Metrics` on cgroup v1 hosts,
//! `io.containerd.cgroups.v2.Metrics` on unified hosts).

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use serde_json::Value;

use crate::error::{Error, Result};

/// Whether the host runs the unified (v2-only) cgroup hierarchy.
pub fn unified_cgroups() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

fn u(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for key in path {
        match cur.get(key) {
            Some(next) => cur = next,
            None => return 0,
        }
    }
    cur.as_u64().unwrap_or(0)
}

fn entry(v: &Value, key: &str) -> MessageField<v1::MemoryEntry> {
    match v.get(key) {
        Some(e) => MessageField::some(v1::MemoryEntry {
            limit: u(e, &["limit"]),
            usage: u(e, &["usage"]),
            max: u(e, &["max"]),
            failcnt: u(e, &["failcnt"]),
            ..Default::default()
        }),
        None => MessageField::none(),
    }
}

fn blkio(v: &Value, key: &str) -> Vec<v1::BlkIOEntry> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| v1::BlkIOEntry {
                    op: e
                        .get("op")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    major: u(e, &["major"]),
                    minor: u(e, &["minor"]),
                    value: u(e, &["value"]),
                    ..Default::default()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// cgroup v1 metrics from runc's stats `data` object.
pub fn v1_metrics(data: &Value) -> v1::Metrics {
    let null = Value::Null;
    let cpu = data.get("cpu").unwrap_or(&null);
    let mem = data.get("memory").unwrap_or(&null);
    let raw = mem.get("raw").unwrap_or(&null);
    let blk = data.get("blkio").unwrap_or(&null);
    let r = |k: &str| u(raw, &[k]);
    let hugetlb = data
        .get("hugetlb")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(size, e)| v1::HugetlbStat {
                    usage: u(e, &["usage"]),
                    max: u(e, &["max"]),
                    failcnt: u(e, &["failcnt"]),
                    pagesize: size.clone(),
                    ..Default::default()
                })
                .collect()
        })
        .unwrap_or_default();
    v1::Metrics {
        hugetlb,
        pids: MessageField::some(v1::PidsStat {
            current: u(data, &["pids", "current"]),
            limit: u(data, &["pids", "limit"]),
            ..Default::default()
        }),
        cpu: MessageField::some(v1::CPUStat {
            usage: MessageField::some(v1::CPUUsage {
                total: u(cpu, &["usage", "total"]),
                kernel: u(cpu, &["usage", "kernel"]),
                user: u(cpu, &["usage", "user"]),
                per_cpu: cpu
                    .pointer("/usage/percpu")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default(),
                ..Default::default()
            }),
            throttling: MessageField::some(v1::Throttle {
                periods: u(cpu, &["throttling", "periods"]),
                throttled_periods: u(cpu, &["throttling", "throttledPeriods"]),
                throttled_time: u(cpu, &["throttling", "throttledTime"]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        memory: MessageField::some(v1::MemoryStat {
            cache: r("cache"),
            rss: r("rss"),
            rss_huge: r("rss_huge"),
            mapped_file: r("mapped_file"),
            dirty: r("dirty"),
            writeback: r("writeback"),
            pg_pg_in: r("pgpgin"),
            pg_pg_out: r("pgpgout"),
            pg_fault: r("pgfault"),
            pg_maj_fault: r("pgmajfault"),
            inactive_anon: r("inactive_anon"),
            active_anon: r("active_anon"),
            inactive_file: r("inactive_file"),
            active_file: r("active_file"),
            unevictable: r("unevictable"),
            hierarchical_memory_limit: r("hierarchical_memory_limit"),
            hierarchical_swap_limit: r("hierarchical_memsw_limit"),
            total_cache: r("total_cache"),
            total_rss: r("total_rss"),
            total_rss_huge: r("total_rss_huge"),
            total_mapped_file: r("total_mapped_file"),
            total_dirty: r("total_dirty"),
            total_writeback: r("total_writeback"),
            total_pg_pg_in: r("total_pgpgin"),
            total_pg_pg_out: r("total_pgpgout"),
            total_pg_fault: r("total_pgfault"),
            total_pg_maj_fault: r("total_pgmajfault"),
            total_inactive_anon: r("total_inactive_anon"),
            total_active_anon: r("total_active_anon"),
            total_inactive_file: r("total_inactive_file"),
            total_active_file: r("total_active_file"),
            total_unevictable: r("total_unevictable"),
            usage: entry(mem, "usage"),
            swap: entry(mem, "swap"),
            kernel: entry(mem, "kernel"),
            kernel_tcp: entry(mem, "kernelTCP"),
            ..Default::default()
        }),
        blkio: MessageField::some(v1::BlkIOStat {
            io_service_bytes_recursive: blkio(blk, "ioServiceBytesRecursive"),
            io_serviced_recursive: blkio(blk, "ioServicedRecursive"),
            io_queued_recursive: blkio(blk, "ioQueueRecursive"),
            io_service_time_recursive: blkio(blk, "ioServiceTimeRecursive"),
            io_wait_time_recursive: blkio(blk, "ioWaitTimeRecursive"),
            io_merged_recursive: blkio(blk, "ioMergedRecursive"),
            io_time_recursive: blkio(blk, "ioTimeRecursive"),
            sectors_recursive: blkio(blk, "sectorsRecursive"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// cgroup v2 metrics from runc's stats `data` object.
pub fn v2_metrics(data: &Value) -> v2::Metrics {
    let null = Value::Null;
    let cpu = data.get("cpu").unwrap_or(&null);
    let mem = data.get("memory").unwrap_or(&null);
    let raw = mem.get("raw").unwrap_or(&null);
    let r = |k: &str| u(raw, &[k]);
    v2::Metrics {
        pids: MessageField::some(v2::PidsStat {
            current: u(data, &["pids", "current"]),
            limit: u(data, &["pids", "limit"]),
            ..Default::default()
        }),
        cpu: MessageField::some(v2::CPUStat {
            usage_usec: u(cpu, &["usage", "total"]) / 1000,
            user_usec: u(cpu, &["usage", "user"]) / 1000,
            system_usec: u(cpu, &["usage", "kernel"]) / 1000,
            nr_periods: u(cpu, &["throttling", "periods"]),
            nr_throttled: u(cpu, &["throttling", "throttledPeriods"]),
            throttled_usec: u(cpu, &["throttling", "throttledTime"]) / 1000,
            ..Default::default()
        }),
        memory: MessageField::some(v2::MemoryStat {
            anon: r("anon"),
            file: r("file"),
            kernel_stack: r("kernel_stack"),
            slab: r("slab"),
            sock: r("sock"),
            shmem: r("shmem"),
            file_mapped: r("file_mapped"),
            file_dirty: r("file_dirty"),
            file_writeback: r("file_writeback"),
            inactive_anon: r("inactive_anon"),
            active_anon: r("active_anon"),
            inactive_file: r("inactive_file"),
            active_file: r("active_file"),
            unevictable: r("unevictable"),
            pgfault: r("pgfault"),
            pgmajfault: r("pgmajfault"),
            usage: u(mem, &["usage", "usage"]),
            usage_limit: u(mem, &["usage", "limit"]),
            swap_usage: u(mem, &["swap", "usage"]),
            swap_limit: u(mem, &["swap", "limit"]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Encodes runc's `events --stats` JSON as the metrics Any containerd expects.
pub fn metrics_any(runc_json: &str, unified: bool) -> Result<Any> {
    let v: Value = serde_json::from_str(runc_json)
        .map_err(|e| Error::Other(format!("parse runc stats: {e}")))?;
    let data = v.get("data").unwrap_or(&v);
    let (type_url, value) = if unified {
        let m = v2_metrics(data);
        ("io.containerd.cgroups.v2.Metrics", m.write_to_bytes())
    } else {
        let m = v1_metrics(data);
        ("io.containerd.cgroups.v1.Metrics", m.write_to_bytes())
    };
    Ok(Any {
        type_url: type_url.to_string(),
        value: value.map_err(|e| Error::Other(format!("encode metrics: {e}")))?,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"type":"stats","id":"c1","data":{"cpu":{"usage":{"total":5000,"percpu":[2000,3000],"kernel":1000,"user":4000},"throttling":{}},"memory":{"usage":{"limit":104857600,"usage":1048576,"max":2097152,"failcnt":0},"raw":{"cache":4096,"rss":8192,"total_rss":8192}},"pids":{"current":3,"limit":100},"blkio":{"ioServiceBytesRecursive":[{"major":8,"minor":0,"op":"Read","value":42}]}}}"#;

    #[test]
    fn v1_metrics_carry_cpu_memory_pids_and_blkio() {
        let v: Value = serde_json::from_str(SAMPLE).unwrap();
        let m = v1_metrics(&v["data"]);
        assert_eq!(m.cpu.usage.total, 5000);
        assert_eq!(m.cpu.usage.per_cpu, vec![2000, 3000]);
        assert_eq!(m.memory.usage.limit, 104857600);
        assert_eq!(m.memory.rss, 8192);
        assert_eq!(m.pids.current, 3);
        assert_eq!(m.pids.limit, 100);
        assert_eq!(m.blkio.io_service_bytes_recursive[0].value, 42);
    }

    #[test]
    fn any_names_the_cgroup_version() {
        assert_eq!(
            metrics_any(SAMPLE, false).unwrap().type_url,
            "io.containerd.cgroups.v1.Metrics"
        );
        let any = metrics_any(SAMPLE, true).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let m = v2::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.memory.usage, 1048576);
        assert_eq!(m.cpu.usage_usec, 5);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(metrics_any("not json", false).is_err());
    }
}
