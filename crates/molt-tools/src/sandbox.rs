//! A Landlock sandbox and `no_new_privs` for the processes `exec` starts.
//!
//! Landlock is an unprivileged Linux security module: a process restricts itself (and
//! every process it later starts) to a set of file hierarchies and, from ABI 4, TCP
//! ports. It applies to root too, cannot be lifted, and survives `execve`. The ruleset is
//! built here, in the gateway, where allocating and opening paths is fine ([`prepare`]);
//! the forked child, between `fork` and `exec`, only makes two system calls on the
//! prepared descriptor ([`Prepared::install`]): `prctl(PR_SET_NO_NEW_PRIVS)` and
//! `landlock_restrict_self`. Both are async-signal-safe, as code in that window must be.
//!
//! The rules: the workspace, a private temp dir and a few device files are writable;
//! system directories ([`default_readable`]) are readable and executable; everything
//! else — the gateway's home, config and state, `/tmp`, other agents' workspaces — is out
//! of reach. With [`SandboxSpec::deny_network`], TCP `connect` and `bind` are denied
//! too (Landlock ABI 4 and later; asked for on an older kernel, [`prepare`] fails rather
//! than silently not enforcing it). With [`SandboxSpec::isolate_ipc`] (ABI 6), the
//! sandboxed processes cannot signal processes outside the sandbox (the gateway) or
//! connect to abstract UNIX sockets made outside it.
//!
//! Handled rights: every filesystem right that the kernel supports, up to the newest
//! ABI the `landlock` crate knows; rights the kernel lacks are left out and listed in
//! [`Prepared::limitations`], so doctor and the audit can say what is not enforced.
//!
//! `no_new_privs` is set whether or not Landlock is available
//! ([`no_new_privs_only`] when it is not): setuid programs then cannot gain privileges.

use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, Scope,
};

/// Whether this kernel has Landlock, for doctor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// Landlock is enabled, with this ABI version.
    Available {
        /// The kernel's Landlock ABI version (1 = Linux 5.13, 4 = 6.7 adds TCP, 6 = 6.12
        /// adds scoping).
        abi: u32,
    },
    /// The kernel was built without Landlock (`ENOSYS`).
    NotInKernel,
    /// The kernel has Landlock but it is not enabled (`EOPNOTSUPP`: not in the `lsm=`
    /// boot parameter).
    Disabled,
    /// The probe failed otherwise.
    Unknown(String),
}

impl Support {
    /// The ABI version, if Landlock is available.
    pub fn abi(&self) -> Option<u32> {
        match self {
            Support::Available { abi } => Some(*abi),
            _ => None,
        }
    }
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Support::Available { abi } => write!(f, "Landlock ABI {abi}"),
            Support::NotInKernel => f.write_str("the kernel is built without Landlock"),
            Support::Disabled => f.write_str(
                "Landlock is built in but not enabled (add landlock to the lsm= boot parameter)",
            ),
            Support::Unknown(e) => write!(f, "Landlock support could not be determined: {e}"),
        }
    }
}

/// Asks the kernel for its Landlock ABI version.
pub fn support() -> Support {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag,
    // landlock_create_ruleset only returns the ABI version; it reads no memory and
    // creates no descriptor.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if r >= 0 {
        return Support::Available { abi: r as u32 };
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOSYS) => Support::NotInKernel,
        Some(libc::EOPNOTSUPP) => Support::Disabled,
        _ => Support::Unknown(e.to_string()),
    }
}

/// The system directories a sandboxed command may read and execute, those that exist:
/// `/usr /bin /sbin /lib /lib32 /lib64 /etc /opt /proc /sys /dev /run /var /nix /snap`.
/// Not `$HOME` and not `/tmp`, where the gateway's config, state and secrets live.
pub fn default_readable() -> Vec<PathBuf> {
    [
        "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc", "/opt", "/proc", "/sys",
        "/dev", "/run", "/var", "/nix", "/snap",
    ]
    .iter()
    .map(PathBuf::from)
    .filter(|p| p.exists())
    .collect()
}

/// The device files a sandboxed command may always write, those that exist:
/// `/dev/null`, `/dev/zero`, `/dev/full`, `/dev/tty`.
pub fn default_writable_devices() -> Vec<PathBuf> {
    ["/dev/null", "/dev/zero", "/dev/full", "/dev/tty"]
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect()
}

/// What a sandboxed command may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSpec {
    /// Hierarchies (or single files) with every filesystem right: read, write, create,
    /// remove, execute. Each must exist.
    pub writable: Vec<PathBuf>,
    /// Hierarchies (or single files) that may be read, listed and executed. Each must
    /// exist.
    pub readable: Vec<PathBuf>,
    /// Deny TCP `connect` and `bind` (needs Landlock ABI 4).
    pub deny_network: bool,
    /// Deny signals to, and abstract UNIX socket connections to, processes outside the
    /// sandbox (Landlock ABI 6; not enforced on older kernels, see
    /// [`Prepared::limitations`]).
    pub isolate_ipc: bool,
}

impl SandboxSpec {
    /// The usual spec for an `exec`: `workspace` and `tmp` writable with the default
    /// devices, the default system directories readable, IPC isolated, network allowed.
    pub fn for_workspace(workspace: &Path, tmp: &Path) -> Self {
        let mut writable = vec![workspace.to_path_buf(), tmp.to_path_buf()];
        writable.extend(default_writable_devices());
        Self {
            writable,
            readable: default_readable(),
            deny_network: false,
            isolate_ipc: true,
        }
    }

    /// Keeps `hidden` paths out of the readable set. Landlock can only grant, never carve
    /// out, so a readable directory that contains a hidden path is replaced by its
    /// entries, recursively down to the hidden path (e.g. hiding `/var/lib/molt` turns
    /// `/var` into `/var/cache`, `/var/log`, …, `/var/lib/apt`, … without
    /// `/var/lib/molt`). Paths are compared as given, so pass canonical paths.
    pub fn hide_readable(&mut self, hidden: &[PathBuf]) -> std::io::Result<()> {
        let mut out = Vec::new();
        for root in std::mem::take(&mut self.readable) {
            split_around(&root, hidden, &mut out, 0)?;
        }
        self.readable = out;
        Ok(())
    }
}

/// Pushes `root` to `out`, or, if a hidden path is inside it, its entries split likewise.
fn split_around(
    root: &Path,
    hidden: &[PathBuf],
    out: &mut Vec<PathBuf>,
    depth: usize,
) -> std::io::Result<()> {
    if hidden.iter().any(|h| h == root) {
        return Ok(());
    }
    let contains_hidden = hidden.iter().any(|h| h.starts_with(root));
    if !contains_hidden || depth > 64 {
        out.push(root.to_path_buf());
        return Ok(());
    }
    let meta = std::fs::symlink_metadata(root)?;
    if !meta.is_dir() {
        out.push(root.to_path_buf());
        return Ok(());
    }
    let mut children: Vec<PathBuf> = std::fs::read_dir(root)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    children.sort();
    for child in children {
        split_around(&child, hidden, out, depth + 1)?;
    }
    Ok(())
}

/// Why a sandbox could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The kernel has no usable Landlock; use [`no_new_privs_only`] or refuse.
    #[error("Landlock is not available: {0}")]
    Unsupported(Support),
    /// `deny_network` was asked for, but the kernel's Landlock cannot restrict TCP.
    #[error(
        "network deny needs Landlock ABI 4 (Linux 6.7) but this kernel has ABI {abi}; the command would not be confined, so it is not run"
    )]
    NetworkUnsupported {
        /// The kernel's ABI.
        abi: u32,
    },
    /// A writable or readable path could not be opened.
    #[error("sandbox path {path}: {source}")]
    Path {
        /// The path.
        path: PathBuf,
        /// Why it could not be opened.
        source: std::io::Error,
    },
    /// The kernel refused the ruleset.
    #[error("building the Landlock ruleset failed: {0}")]
    Ruleset(#[from] landlock::RulesetError),
}

/// A ruleset built in the parent, ready to be applied to children.
#[derive(Debug)]
pub struct Prepared {
    ruleset: OwnedFd,
    abi: u32,
    limitations: Vec<String>,
}

/// The newest ABI the `landlock` crate knows; the kernel's own subset is handled.
const NEWEST_KNOWN: ABI = ABI::V10;

/// Refuses `deny_network` on a kernel that cannot enforce it.
fn check_network(abi: u32, deny_network: bool) -> Result<(), SandboxError> {
    if deny_network && abi < 4 {
        return Err(SandboxError::NetworkUnsupported { abi });
    }
    Ok(())
}

/// What a ruleset built on a kernel with `abi` does not enforce.
fn limitations(abi: u32, spec: &SandboxSpec) -> Vec<String> {
    let mut notes = Vec::new();
    if abi < 2 {
        notes.push(
            "ABI 1: renaming or linking files between directories is always refused".to_owned(),
        );
    }
    if abi < 3 {
        notes.push(
            "truncating files outside the writable paths is not prevented (needs ABI 3)".to_owned(),
        );
    }
    if abi < 5 {
        notes.push("ioctl on device files is not restricted (needs ABI 5)".to_owned());
    }
    if spec.isolate_ipc && abi < 6 {
        notes.push(
            "signals and abstract UNIX sockets outside the sandbox are not isolated (needs ABI 6)"
                .to_owned(),
        );
    }
    if abi < 9 {
        notes.push("connecting to UNIX sockets by path is not restricted (needs ABI 9)".to_owned());
    }
    if spec.deny_network {
        notes.push("network deny covers TCP only; UDP (and so DNS) stays open".to_owned());
    }
    notes
}

/// Builds the ruleset for `spec` on this kernel.
pub fn prepare(spec: &SandboxSpec) -> Result<Prepared, SandboxError> {
    let abi = match support() {
        Support::Available { abi } => abi,
        other => return Err(SandboxError::Unsupported(other)),
    };
    check_network(abi, spec.deny_network)?;

    let all = AccessFs::from_all(NEWEST_KNOWN);
    let read = AccessFs::from_read(NEWEST_KNOWN);
    let file_only = AccessFs::from_file(NEWEST_KNOWN);

    // Best effort for filesystem rights the kernel lacks (reported in `limitations`),
    // hard requirement for the network.
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)?;
    if spec.deny_network {
        ruleset = ruleset
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)?
            .set_compatibility(CompatLevel::BestEffort);
    }
    if spec.isolate_ipc && abi >= 6 {
        ruleset = ruleset.scope(Scope::from_all(NEWEST_KNOWN))?;
    }
    let mut created = ruleset.create()?;
    for (paths, access) in [(&spec.writable, all), (&spec.readable, read)] {
        for path in paths {
            let fd = PathFd::new(path).map_err(|e| SandboxError::Path {
                path: path.clone(),
                source: std::io::Error::other(e),
            })?;
            let is_dir = std::fs::metadata(path)
                .map_err(|source| SandboxError::Path {
                    path: path.clone(),
                    source,
                })?
                .is_dir();
            let access = if is_dir { access } else { access & file_only };
            created = created.add_rule(PathBeneath::new(fd, access))?;
        }
    }
    let fd: Option<OwnedFd> = created.into();
    let ruleset = fd.ok_or(SandboxError::Unsupported(Support::Unknown(
        "the kernel did not create a ruleset".to_owned(),
    )))?;
    Ok(Prepared {
        ruleset,
        abi,
        limitations: limitations(abi, spec),
    })
}

impl Prepared {
    /// The kernel's Landlock ABI the ruleset was built for.
    pub fn abi(&self) -> u32 {
        self.abi
    }

    /// What this kernel's Landlock cannot enforce of the spec, one sentence each.
    pub fn limitations(&self) -> &[String] {
        &self.limitations
    }

    /// Makes `cmd` start its process under the sandbox, with `no_new_privs`. The ruleset
    /// descriptor moves into the hook, so it lives as long as `cmd`; it is close-on-exec,
    /// so the command never sees it. For a `tokio::process::Command`, pass
    /// `cmd.as_std_mut()`.
    pub fn install(self, cmd: &mut Command) {
        let ruleset = self.ruleset;
        // SAFETY: the hook runs in the child between fork and exec. It only calls prctl and
        // landlock_restrict_self (raw system calls, async-signal-safe), allocates nothing,
        // takes no lock, and reads only the descriptor number owned by the closure.
        unsafe {
            cmd.pre_exec(move || {
                set_no_new_privs()?;
                restrict_self(ruleset.as_raw_fd())
            });
        }
    }
}

/// Makes `cmd` start its process with `no_new_privs` only: for kernels without Landlock,
/// or when the sandbox is turned off.
pub fn no_new_privs_only(cmd: &mut Command) {
    // SAFETY: the hook only makes the prctl system call, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(set_no_new_privs);
    }
}

/// `prctl(PR_SET_NO_NEW_PRIVS, 1)`; async-signal-safe.
fn set_no_new_privs() -> std::io::Result<()> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `landlock_restrict_self(fd, 0)`; async-signal-safe.
fn restrict_self(fd: libc::c_int) -> std::io::Result<()> {
    // SAFETY: landlock_restrict_self takes a descriptor and flags; it reads no memory of
    // ours. An invalid descriptor fails with EBADF.
    let r = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd, 0 as libc::c_uint) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_deny_is_refused_below_abi_4() {
        assert!(matches!(
            check_network(3, true),
            Err(SandboxError::NetworkUnsupported { abi: 3 })
        ));
        assert!(check_network(3, false).is_ok());
        assert!(check_network(4, true).is_ok());
        let msg = check_network(1, true).err().map(|e| e.to_string());
        assert!(msg.is_some_and(|m| m.contains("ABI 4") && m.contains("ABI 1")));
    }

    #[test]
    fn limitations_are_reported_per_abi() {
        let mut spec = SandboxSpec::for_workspace(Path::new("/w"), Path::new("/t"));
        spec.deny_network = true;
        let old = limitations(1, &spec);
        assert!(old.iter().any(|n| n.contains("truncating")));
        assert!(old.iter().any(|n| n.contains("signals")));
        let new = limitations(9, &spec);
        assert_eq!(new.len(), 1, "{new:?}");
        assert!(new[0].contains("TCP only"));
    }

    #[test]
    fn hide_readable_splits_the_containing_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let base = tmp.path().to_path_buf();
        for d in ["a/secret/deep", "a/other", "b"] {
            std::fs::create_dir_all(base.join(d)).expect("mkdir");
        }
        std::fs::write(base.join("a/file"), "x").expect("write");
        let mut spec = SandboxSpec {
            writable: vec![],
            readable: vec![base.clone(), PathBuf::from("/usr")],
            deny_network: false,
            isolate_ipc: false,
        };
        spec.hide_readable(&[base.join("a/secret")]).expect("hide");
        assert_eq!(
            spec.readable,
            vec![
                base.join("a/file"),
                base.join("a/other"),
                base.join("b"),
                PathBuf::from("/usr")
            ]
        );
    }
}
