//! `systemctl --user` and `journalctl --user`, with errors that say what failed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use crate::ServiceError;

/// Runs `systemctl --user ARGS`; a non-zero exit is an error carrying its stderr.
pub fn run(args: &[&str]) -> Result<Output, ServiceError> {
    let out = Command::new("systemctl")
        .arg("--user")
        .args(args)
        .output()
        .map_err(|source| ServiceError::Io {
            what: "running systemctl --user".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(ServiceError::Systemctl {
            args: args.join(" "),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out)
}

/// `systemctl --user show UNIT -p ...` as a map.
pub fn show(unit: &str, props: &[&str]) -> Result<HashMap<String, String>, ServiceError> {
    let mut args = vec!["show", unit];
    for p in props {
        args.push("-p");
        args.push(p);
    }
    let out = run(&args)?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect())
}

/// Where the user manager reads unit files.
pub fn unit_dir() -> Result<PathBuf, ServiceError> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("systemd/user"));
    }
    let home =
        std::env::var_os("HOME").ok_or_else(|| ServiceError::Conflict("HOME is not set".into()))?;
    Ok(PathBuf::from(home).join(".config/systemd/user"))
}

/// The state of lingering for `user`: `Some(true)` lingers, `None` cannot be told.
pub fn linger(user: &str) -> Option<bool> {
    let out = Command::new("loginctl")
        .args(["show-user", user, "-p", "Linger", "--value"])
        .output()
        .ok()?;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// Whether `unit` is active (false when the manager cannot be asked).
pub fn is_active(unit: &str) -> bool {
    show(unit, &["ActiveState"])
        .map(|m| m.get("ActiveState").map(String::as_str) == Some("active"))
        .unwrap_or(false)
}

/// The user this process runs as, by name, for `loginctl`: `USER`, else `LOGNAME`, else root.
pub fn login_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "root".into())
}

/// Runs `loginctl enable-linger USER`; whether it succeeded.
pub fn enable_linger(user: &str) -> bool {
    Command::new("loginctl")
        .args(["enable-linger", user])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
