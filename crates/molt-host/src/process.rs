//! Whether a lease holder still lives: a pid that exists and was started no later than the
//! boot it claims to be (so a reused pid does not keep a dead process's runs).

/// Slack between a process's start and the moment it recorded its boot, and clock noise.
const START_SLACK_MS: i64 = 2_000;

/// `true` if `pid` exists and started before `boot_started_at_ms` (+ slack).
pub fn holder_alive(pid: u32, boot_started_at_ms: i64) -> bool {
    let Ok(p) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 performs only the existence and permission check.
    let rc = unsafe { libc::kill(p, 0) };
    let exists = rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    match proc_stat(pid) {
        // An exited process not yet reaped by its parent is a zombie: dead for us.
        Some(('Z', _)) => false,
        Some((_, started)) => started <= boot_started_at_ms.saturating_add(START_SLACK_MS),
        // Cannot tell (no /proc): trust the pid rather than re-run a live step.
        None => true,
    }
}

/// `true` if `pid` exists and is not a zombie (whenever it started).
pub fn pid_alive(pid: u32) -> bool {
    holder_alive(pid, i64::MAX)
}

/// (state, start time in ms) of a process.
fn proc_stat(pid: u32) -> Option<(char, i64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let state = rest.split_whitespace().next()?.chars().next()?;
    Some((state, process_started_at_ms(pid)?))
}

/// Wall-clock start time of a process, from `/proc/<pid>/stat` (field 22, clock ticks since
/// boot) and `btime` in `/proc/stat`.
pub fn process_started_at_ms(pid: u32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let ticks: i64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let btime: i64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return None;
    }
    Some(btime * 1000 + ticks * 1000 / hz as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_started_recently() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let started = process_started_at_ms(std::process::id()).unwrap();
        assert!(
            started <= now + 1000 && started > now - 3_600_000,
            "{started} vs {now}"
        );
        assert!(holder_alive(std::process::id(), now));
        // A boot recorded long before this process started: the pid was reused.
        assert!(!holder_alive(std::process::id(), started - 60_000));
        assert!(!holder_alive(u32::MAX - 1, now));
    }
}
