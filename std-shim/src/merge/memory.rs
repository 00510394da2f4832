//! The default memory budget (`--memory`): a share of the memory this process may still use.
//!
//! Activations that stay live between data passes spill to a file beyond the budget, and the
//! spill costs a write and a read of every stored value per pass (on a 2-core machine, a fifth
//! of a ResNet-20 merge's time with a 128 MiB budget). So the default follows the machine:
//! a quarter of the memory available when the merge starts, shared by the MPI ranks on this
//! node, never below [`FLOOR`]. "Available" is the smaller of the kernel's estimate
//! (`MemAvailable` in `/proc/meminfo`) and the room left under the process's cgroup limit
//! (containers see the host's `MemAvailable`). Where neither can be read (other systems),
//! the default is [`FLOOR`]. The budget is a ceiling, not an allocation: a merge whose live
//! activations are smaller uses less.

use std::path::Path;

/// The smallest default budget, and the default where the memory cannot be probed.
pub const FLOOR: usize = 128 << 20;

/// The default budget is the available memory divided by this (and by the ranks per node).
pub const SHARE: u64 = 4;

/// Environment variables that name the number of processes of an MPI job on this node
/// (OpenMPI, MPICH / Intel MPI, Slurm), read in this order.
const LOCAL_RANK_VARS: [&str; 3] = [
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "MPI_LOCALNRANKS",
    "SLURM_NTASKS_PER_NODE",
];

/// The default budget in bytes on this machine, for this process.
pub fn default_budget() -> usize {
    let local = LOCAL_RANK_VARS
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse::<u64>().ok())
        .unwrap_or(1);
    budget(available_bytes(), local)
}

/// The budget for `available` bytes (if known) shared by `local` processes.
pub fn budget(available: Option<u64>, local: u64) -> usize {
    let Some(bytes) = available else {
        return FLOOR;
    };
    let share = bytes / SHARE / local.max(1);
    usize::try_from(share).unwrap_or(usize::MAX).max(FLOOR)
}

/// The memory this process may still use: the smaller of `MemAvailable` and the room under
/// its cgroup's limit, or `None` where neither is known.
fn available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let system = meminfo.as_deref().and_then(mem_available);
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|c| cgroup_room(&c, Path::new("/sys/fs/cgroup")));
    match (system, cgroup) {
        (Some(s), Some(c)) => Some(s.min(c)),
        (s, c) => s.or(c),
    }
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
pub fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// The room (limit less usage) of the cgroup named in a `/proc/self/cgroup` text, under the
/// cgroup file system mounted at `root`: v2 (`0::/path`: `memory.max`, `memory.current`) or
/// v1 (`N:...memory...:/path`: `memory/path/memory.limit_in_bytes`, `memory.usage_in_bytes`).
/// `None` without a limit ("max", or v1's page-rounded `i64::MAX`) or where the files are
/// missing. A limit set on an ancestor of a nested cgroup is not seen.
pub fn cgroup_room(proc_cgroup: &str, root: &Path) -> Option<u64> {
    let read = |dir: &Path, file: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        let (dir, limit, usage) = if controllers.is_empty() {
            (root.join(rel), "memory.max", "memory.current")
        } else if controllers.split(',').any(|c| c == "memory") {
            let dir = root.join("memory").join(rel);
            (dir, "memory.limit_in_bytes", "memory.usage_in_bytes")
        } else {
            continue;
        };
        let Some(limit) = read(&dir, limit) else {
            continue; // "max" (no limit) or no such file
        };
        if limit >= 1 << 62 {
            continue; // v1's "no limit"
        }
        let used = read(&dir, usage).unwrap_or(0);
        return Some(limit.saturating_sub(used));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_available_reads_kilobytes() {
        let text = "MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   24130904 kB\n";
        assert_eq!(mem_available(text), Some(24_130_904 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
        assert_eq!(mem_available("MemAvailable: lots kB\n"), None);
    }

    #[test]
    fn budget_is_a_share_never_below_the_floor() {
        let gib = 1u64 << 30;
        assert_eq!(budget(Some(24 * gib), 1), 6 << 30);
        assert_eq!(budget(Some(24 * gib), 3), 2 << 30);
        assert_eq!(budget(Some(24 * gib), 0), 6 << 30);
        assert_eq!(budget(Some(256 << 20), 1), FLOOR);
        assert_eq!(budget(None, 1), FLOOR);
    }

    #[test]
    fn cgroup_room_reads_v2_and_v1_limits() {
        let root = tempfile::tempdir().expect("temp dir");
        let v2 = root.path().join("job");
        std::fs::create_dir_all(&v2).expect("mkdir");
        std::fs::write(v2.join("memory.max"), "2147483648\n").expect("write");
        std::fs::write(v2.join("memory.current"), "1073741824\n").expect("write");
        assert_eq!(cgroup_room("0::/job\n", root.path()), Some(1 << 30));
        std::fs::write(v2.join("memory.max"), "max\n").expect("write");
        assert_eq!(cgroup_room("0::/job\n", root.path()), None);

        let v1 = root.path().join("memory/box");
        std::fs::create_dir_all(&v1).expect("mkdir");
        std::fs::write(v1.join("memory.limit_in_bytes"), "536870912\n").expect("write");
        std::fs::write(v1.join("memory.usage_in_bytes"), "805306368\n").expect("write");
        let text = "12:cpu,cpuacct:/box\n11:memory:/box\n";
        assert_eq!(cgroup_room(text, root.path()), Some(0));
        std::fs::write(v1.join("memory.limit_in_bytes"), "9223372036854771712\n").expect("write");
        assert_eq!(cgroup_room(text, root.path()), None);
        assert_eq!(cgroup_room("garbage\n", root.path()), None);
    }
}
