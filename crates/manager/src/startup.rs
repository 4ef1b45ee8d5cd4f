//! Start-up helpers: the concurrency bound of phase 1 (loading and
//! registering records).

use tracing::warn;

/// Open-file limit assumed when `getrlimit` fails.
pub const FALLBACK_NOFILE: u64 = 1024;

/// How many records phase 1 loads at once: `min(records, 4 × cores,
/// nofile / 8)`, at least 1. Each load may hold a few files open (the
/// database, a journal, containerd's connection), hence the share of the
/// open-file limit.
pub fn load_parallelism(records: usize, cores: usize, nofile_soft_limit: u64) -> usize {
    let by_files = usize::try_from(nofile_soft_limit / 8).unwrap_or(usize::MAX);
    records.min(cores.saturating_mul(4)).min(by_files).max(1)
}

/// The soft limit on open files (`RLIMIT_NOFILE`), or [`FALLBACK_NOFILE`]
/// if it cannot be read.
pub fn nofile_limit() -> u64 {
    use nix::sys::resource::{getrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _hard)) => soft,
        Err(errno) => {
            warn!(%errno, fallback = FALLBACK_NOFILE, "cannot read RLIMIT_NOFILE");
            FALLBACK_NOFILE
        }
    }
}

/// The number of cores holdfastd may use (at least 1).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_parallelism_takes_the_smallest_bound_and_at_least_one() {
        // (records, cores, nofile, want)
        let table: &[(usize, usize, u64, usize)] = &[
            (0, 8, 1024, 1),
            (1, 8, 1024, 1),
            (5, 8, 1024, 5),
            (1000, 2, 1024, 8),
            (1000, 64, 1024, 128),
            (1000, 64, 1_048_576, 256),
            (1000, 8, 64, 8),
            (1000, 8, 7, 1),
            (1000, 0, 1024, 1),
            (usize::MAX, usize::MAX, u64::MAX, (u64::MAX / 8) as usize),
        ];
        for &(records, cores, nofile, want) in table {
            assert_eq!(
                load_parallelism(records, cores, nofile),
                want,
                "records={records} cores={cores} nofile={nofile}"
            );
        }
    }

    #[test]
    fn nofile_limit_reads_the_soft_limit() {
        let (soft, _) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(nofile_limit(), soft);
        assert!(nofile_limit() > 0);
        assert!(cores() >= 1);
    }
}
