//! Which processes hold a socket: the `socket:[INODE]` targets of `/proc/<pid>/fd/*` links.
//!
//! The I/O stays with the caller: [`owners`] takes the pids to look at and a function that
//! lists one pid's fd link targets (`readlink` of every entry of `/proc/<pid>/fd`), so it can be
//! tested with a table. Processes that vanish or cannot be read (another user's, without root)
//! are collected in [`InodeOwners::unreadable`] rather than failing the whole mapping.

use std::collections::BTreeMap;

use serde::Serialize;

/// The socket inode of an fd link target: `"socket:[12345]"` gives `Some(12345)`; anything
/// else (files, pipes, `anon_inode:`) gives `None`.
pub fn socket_inode(link_target: &str) -> Option<u64> {
    let digits = link_target.strip_prefix("socket:[")?.strip_suffix(']')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A pid from a `/proc` directory entry name: `"4242"` gives `Some(4242)`; `"self"`, `"net"`
/// and the like give `None`.
pub fn parse_pid(entry_name: &str) -> Option<u32> {
    if entry_name.is_empty() || !entry_name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    entry_name.parse().ok()
}

/// A process's command line from `/proc/<pid>/cmdline` (NUL-separated, possibly ending in a
/// NUL); invalid UTF-8 is replaced. Empty for kernel threads.
pub fn parse_cmdline(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// The real uid from `/proc/<pid>/status` (the first number of its `Uid:` line).
pub fn parse_status_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
}

/// The systemd unit a process runs in, from `/proc/<pid>/cgroup`: the innermost path component
/// that names a `.service` (or `.scope`) unit, skipping the per-user manager's own
/// `user@UID.service`. `None` outside any unit.
pub fn unit_from_cgroup(cgroup: &str) -> Option<String> {
    // cgroup v2 has one line `0::/path`; with v1 the name=systemd hierarchy carries the units.
    let path = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .or_else(|| {
            cgroup
                .lines()
                .find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p))
        })?;
    path.split('/')
        .rev()
        .find(|c| (c.ends_with(".service") || c.ends_with(".scope")) && !c.starts_with("user@"))
        .map(str::to_owned)
}

/// Socket inodes mapped to the pids holding them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InodeOwners {
    /// Inode → pids, each list ascending and without duplicates.
    pub owners: BTreeMap<u64, Vec<u32>>,
    /// Pids whose fds could not be listed (gone, or not ours to read).
    pub unreadable: Vec<u32>,
}

impl InodeOwners {
    /// The pids holding `inode`; empty when none was found.
    pub fn pids(&self, inode: u64) -> &[u32] {
        self.owners.get(&inode).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Maps socket inodes to pids. `list_fd_targets(pid)` returns the link targets of the pid's
/// fds (`"socket:[123]"`, `"/dev/null"`, ...); an error puts the pid in
/// [`InodeOwners::unreadable`].
pub fn owners<I, F, E>(pids: I, mut list_fd_targets: F) -> InodeOwners
where
    I: IntoIterator<Item = u32>,
    F: FnMut(u32) -> Result<Vec<String>, E>,
{
    let mut out = InodeOwners::default();
    for pid in pids {
        match list_fd_targets(pid) {
            Ok(targets) => {
                for inode in targets.iter().filter_map(|t| socket_inode(t)) {
                    let pids = out.owners.entry(inode).or_default();
                    if let Err(at) = pids.binary_search(&pid) {
                        pids.insert(at, pid);
                    }
                }
            }
            Err(_) => out.unreadable.push(pid),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_link_targets() {
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        assert_eq!(socket_inode("socket:[]"), None);
        assert_eq!(socket_inode("socket:[12a]"), None);
        assert_eq!(socket_inode("socket:[99999999999999999999999]"), None);
        assert_eq!(socket_inode("pipe:[7]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(socket_inode("socket:[1"), None);
    }

    #[test]
    fn pids_and_cmdlines() {
        assert_eq!(parse_pid("4242"), Some(4242));
        assert_eq!(parse_pid("self"), None);
        assert_eq!(parse_pid(""), None);
        assert_eq!(parse_pid("99999999999"), None);
        assert_eq!(
            parse_cmdline(b"node\0/opt/gw.js\0--port\x0057725\0"),
            ["node", "/opt/gw.js", "--port", "57725"]
        );
        assert!(parse_cmdline(b"").is_empty());
        assert_eq!(
            parse_status_uid("Name:\tnode\nUid:\t1000\t1000\t1000\t1000\n"),
            Some(1000)
        );
        assert_eq!(parse_status_uid("Uid:\tx\n"), None);
        assert_eq!(
            unit_from_cgroup(
                "0::/user.slice/user-0.slice/user@0.service/app.slice/molt-gateway-a.service\n"
            ),
            Some("molt-gateway-a.service".into())
        );
        assert_eq!(
            unit_from_cgroup("0::/user.slice/user-0.slice/user@0.service/init.scope\n"),
            Some("init.scope".into())
        );
        assert_eq!(unit_from_cgroup("0::/\n"), None);
        assert_eq!(
            unit_from_cgroup("12:pids:/x\n1:name=systemd:/system.slice/ssh.service\n"),
            Some("ssh.service".into())
        );
    }

    #[test]
    fn maps_inodes_to_sorted_unique_pids() {
        let table = |pid: u32| -> Result<Vec<String>, ()> {
            match pid {
                10 => Ok(vec![
                    "socket:[5]".into(),
                    "/dev/null".into(),
                    "socket:[5]".into(),
                ]),
                7 => Ok(vec!["socket:[5]".into(), "socket:[6]".into()]),
                _ => Err(()),
            }
        };
        let o = owners([10, 7, 99], table);
        assert_eq!(o.pids(5), [7, 10]);
        assert_eq!(o.pids(6), [7]);
        assert!(o.pids(1).is_empty());
        assert_eq!(o.unreadable, [99]);
    }
}
