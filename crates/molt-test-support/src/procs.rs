use std::path::Path;
use std::time::Duration;

/// Whether a process with this pid exists (signal 0).
pub fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// A `KiB` field (e.g. `VmRSS:`) of /proc/<pid>/status.
pub fn proc_status_kib(pid: i32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// A plain field (e.g. `Threads:`) of /proc/<pid>/status.
pub fn proc_status_field(pid: i32, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_owned())
}

/// Open file descriptors of a process.
pub fn fd_count(pid: i32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// Pids (other than this process) whose environment has `HOME=<home>`.
pub fn procs_with_home(home: &Path) -> Vec<i32> {
    let needle = format!("HOME={}", home.display()).into_bytes();
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_slice()))
                .unwrap_or(false)
        })
        .collect()
}

/// SIGKILLs every process whose environment names `home` as HOME: gateways, handover
/// successors (nobody's child), and the steps they started; returns how many it killed.
/// A few rounds, because a dying gateway may still fork a step between two scans.
pub fn kill_processes_of(home: &Path) -> usize {
    let mut killed = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let pids = procs_with_home(home);
        if pids.is_empty() {
            break;
        }
        for &pid in &pids {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        killed.extend(pids);
        std::thread::sleep(Duration::from_millis(20));
    }
    killed.len()
}

/// Raises this process's soft RLIMIT_NOFILE to the hard limit; returns (soft, hard) after.
pub fn raise_nofile_limit() -> (libc::rlim_t, libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write a valid, owned struct.
    unsafe {
        assert_eq!(
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim),
            0,
            "getrlimit"
        );
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0, "setrlimit");
        }
    }
    (lim.rlim_cur, lim.rlim_max)
}
