//! Starting a command outside the caller's process tree and cgroup (design §1 invariant 5).
//!
//! With a user manager, the command runs as a transient unit (`systemd-run --user --unit NAME
//! --collect`), so stopping or restarting the gateway cannot take it down. Without one, it
//! runs as a detached process in its own session, logging to a file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::ServiceError;

/// How a command was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launched {
    /// A transient unit of the user manager.
    Unit(String),
    /// A detached process (no service manager answered); its output goes to `log`.
    Detached { pid: u32, log: PathBuf },
}

impl Launched {
    /// `systemd-run:<unit>` or `detached:<pid>`, as journalled.
    pub fn describe(&self) -> String {
        match self {
            Self::Unit(u) => format!("systemd-run:{u}"),
            Self::Detached { pid, .. } => format!("detached:{pid}"),
        }
    }

    /// The inverse of [`Launched::describe`] (a detached one's log path is not in it).
    pub fn parse(described: &str) -> Option<Self> {
        if let Some(u) = described.strip_prefix("systemd-run:") {
            return Some(Self::Unit(u.to_owned()));
        }
        let pid = described.strip_prefix("detached:")?.parse().ok()?;
        Some(Self::Detached {
            pid,
            log: PathBuf::new(),
        })
    }

    /// The transient unit's name, when it is one.
    pub fn unit(&self) -> Option<&str> {
        match self {
            Self::Unit(u) => Some(u),
            Self::Detached { .. } => None,
        }
    }
}

/// The environment a molt process started elsewhere needs to act on the same install as this
/// one (a transient unit gets the manager's environment, not ours): HOME, PATH, the XDG dirs,
/// the TLS trust and proxy settings, and every `MOLT_*` setting, except the markers of an exec
/// run (the new process does not run inside one).
pub fn inherited_env() -> Vec<(String, String)> {
    const PASS: &[&str] = &[
        "HOME",
        "PATH",
        "XDG_CONFIG_HOME",
        "XDG_STATE_HOME",
        "XDG_DATA_HOME",
        "XDG_RUNTIME_DIR",
        // How this host reaches and trusts an https release source.
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "NO_PROXY",
        "no_proxy",
    ];
    const KEEP_OUT: &[&str] = &[
        "MOLT_RUN_ID",
        "MOLT_STEP_INDEX",
        "MOLT_STEP_ATTEMPT",
        "MOLT_EFFECT_KEY",
    ];
    std::env::vars()
        .filter(|(k, v)| {
            !v.is_empty()
                && (PASS.contains(&k.as_str())
                    || (k.starts_with("MOLT_") && !KEEP_OUT.contains(&k.as_str())))
        })
        .collect()
}

/// Starts the updater for `job`: this very binary as `molt GLOBAL_ARGS update apply --job
/// JOB`, in unit `molt-update-<job>`, or detached with `<state_dir>/logs/update-<job>.log`.
/// The CLI and the gateway both start it here, so it is named and logged one way.
pub fn launch_updater(
    global_args: &[String],
    job: &str,
    state_dir: &Path,
) -> Result<Launched, ServiceError> {
    let exe = std::env::current_exe().map_err(|source| ServiceError::Io {
        what: "locating the running molt binary".into(),
        source,
    })?;
    let mut args = global_args.to_vec();
    args.extend(["update", "apply", "--job", job].map(str::to_owned));
    launch(
        &format!("molt-update-{job}"),
        &format!("molt update {job}"),
        &exe,
        &args,
        &inherited_env(),
        &state_dir.join("logs").join(format!("update-{job}.log")),
    )
}

/// Whether a user manager answers `systemctl --user`.
pub fn manager_answers() -> bool {
    Command::new("systemctl")
        .args(["--user", "show-environment"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts `exe args` as transient unit `unit` with `env` (the manager's environment is not
/// the caller's), or detached with `log` as its output when no user manager answers.
pub fn launch(
    unit: &str,
    description: &str,
    exe: &Path,
    args: &[String],
    env: &[(String, String)],
    log: &Path,
) -> Result<Launched, ServiceError> {
    if manager_answers() {
        let mut c = Command::new("systemd-run");
        c.args(["--user", "--collect", "--quiet", "--unit", unit])
            .arg(format!("--description={description}"))
            // The updater is short-lived and must finish a rollback even when asked to stop.
            .arg("--property=TimeoutStopSec=120");
        for (k, v) in env {
            c.arg(format!("--setenv={k}={v}"));
        }
        let out = c
            .arg("--")
            .arg(exe)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| ServiceError::Io {
                what: "running systemd-run --user".into(),
                source,
            })?;
        if !out.status.success() {
            return Err(ServiceError::Systemctl {
                args: format!("systemd-run --user --unit {unit}"),
                message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        return Ok(Launched::Unit(unit.to_owned()));
    }
    detach(exe, args, env, log)
}

fn detach(
    exe: &Path,
    args: &[String],
    env: &[(String, String)],
    log: &Path,
) -> Result<Launched, ServiceError> {
    use std::os::unix::process::CommandExt;
    if let Some(dir) = log.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| ServiceError::Io {
                what: format!("creating {}", dir.display()),
                source,
            })?;
    }
    let open_log = || {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(log)
            .map_err(|source| ServiceError::Io {
                what: format!("opening {}", log.display()),
                source,
            })
    };
    let mut c = Command::new(exe);
    c.args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(open_log()?)
        .stderr(open_log()?);
    // SAFETY: setsid(2) is async-signal-safe and touches no memory of the parent.
    unsafe {
        c.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = c.spawn().map_err(|source| ServiceError::Io {
        what: format!("starting {}", exe.display()),
        source,
    })?;
    let pid = child.id();
    // Reap it when it ends, so a long-lived caller (the gateway) keeps no zombie.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(Launched::Detached {
        pid,
        log: log.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_launch_description_parses_back() {
        for l in [
            Launched::Unit("molt-update-upd-1".into()),
            Launched::Detached {
                pid: 42,
                log: PathBuf::new(),
            },
        ] {
            assert_eq!(Launched::parse(&l.describe()), Some(l));
        }
        assert_eq!(Launched::parse("detached:x"), None);
        assert_eq!(Launched::parse("other"), None);
    }
}
