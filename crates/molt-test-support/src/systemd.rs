use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::gateway::Home;
use crate::poll::wait_for;

/// Whether a systemd user manager is available (the test runs under
/// `scripts/with-systemd-user.sh`, which sets `MOLT_TEST_SYSTEMD`). In CI its absence is a
/// failure, never a skip.
pub fn systemd_available() -> bool {
    if std::env::var_os("MOLT_TEST_SYSTEMD").is_some() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "this test needs a systemd user manager: run it under scripts/with-systemd-user.sh"
    );
    eprintln!("no systemd user manager (run under scripts/with-systemd-user.sh); skipping");
    false
}

/// Checks that a systemd user manager answers (the benches that run molt as a service need
/// one); returns its unit directory, or the reason it cannot be used, with the command line
/// that runs bench `bench` under one.
pub fn user_manager_unit_dir(bench: &str) -> Result<PathBuf, String> {
    let hint = format!(
        "run this bench under scripts/with-systemd-user.sh \
         (scripts/with-systemd-user.sh cargo run --release -p molt-bench --bin {bench})"
    );
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .ok_or_else(|| format!("XDG_RUNTIME_DIR is not set: {hint}"))?;
    if !runtime.is_dir() {
        return Err(format!(
            "XDG_RUNTIME_DIR={} is not a directory: {hint}",
            runtime.display()
        ));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .ok_or_else(|| format!("XDG_CONFIG_HOME is not set: {hint}"))?;
    let out = Command::new("systemctl")
        .args(["--user", "is-system-running"])
        .output()
        .map_err(|e| format!("cannot run systemctl ({e}): {hint}"))?;
    let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if state != "running" && state != "degraded" {
        return Err(format!(
            "no systemd user manager (is-system-running: {state:?}; {}): {hint}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(config.join("systemd/user"))
}

/// `systemctl --user ARGS`.
pub fn systemctl(args: &[&str]) -> Output {
    Command::new("systemctl")
        .arg("--user")
        .args(args)
        .output()
        .expect("run systemctl")
}

/// `systemctl --user show` of the given properties.
pub fn unit_show(unit: &str, props: &[&str]) -> BTreeMap<String, String> {
    let mut args = vec!["show", unit];
    for p in props {
        args.push("-p");
        args.push(p);
    }
    let out = systemctl(&args);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

/// The text of a `Type=notify` user unit that runs `home`'s gateway, as molt's own unit does
/// (`NotifyAccess=all` for the handover successor, `KillMode=mixed`, no restart on exit 78).
/// `unit_extra` ends the `[Unit]` section, `service_extra` the `[Service]` section.
pub fn unit_text(home: &Home, description: &str, unit_extra: &str, service_extra: &str) -> String {
    format!(
        "[Unit]\nDescription={description}\n{unit_extra}\n[Service]\nType=notify\nNotifyAccess=all\n\
         ExecStart={bin} gateway run\nEnvironment=HOME={home} MOLT_GATEWAY_PORT={port} MOLT_LOG=info\n\
         Restart=always\nRestartPreventExitStatus=78\nTimeoutStopSec=15\nKillMode=mixed\n{service_extra}\n",
        bin = home.bin().display(),
        home = home.path().display(),
        port = home.port,
    )
}

/// Writes a user unit for this home's gateway into the manager's unit directory
/// (`$XDG_CONFIG_HOME/systemd/user`) and reloads the manager.
pub fn write_unit(home: &Home, unit: &str, extra: &str) {
    let dir = PathBuf::from(std::env::var("XDG_CONFIG_HOME").expect("XDG_CONFIG_HOME"))
        .join("systemd/user");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(unit),
        unit_text(home, "molt test gateway", "", extra),
    )
    .unwrap();
    let out = systemctl(&["daemon-reload"]);
    assert!(out.status.success(), "{out:?}");
}

/// A home for a profiled gateway run as a service: the config lives where the service will
/// look for it (`$XDG_CONFIG_HOME/molt-P/molt.toml`, the user manager's XDG_CONFIG_HOME).
pub struct ServiceHome {
    /// The HOME and port of the profile's gateway.
    pub home: Home,
    /// The profile name, `<prefix><port>`.
    pub profile: String,
}

impl ServiceHome {
    /// A profile `<prefix><port>` of `bin`, its `[gateway]` section starting with the port
    /// and going on with `config`.
    pub fn new(bin: impl Into<PathBuf>, prefix: &str, config: &str) -> Self {
        let home = Home::new(bin, "");
        let profile = format!("{prefix}{}", home.port);
        let xdg = PathBuf::from(std::env::var("XDG_CONFIG_HOME").expect("XDG_CONFIG_HOME"));
        let dir = xdg.join(format!("molt-{profile}"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("molt.toml");
        std::fs::write(&path, format!("[gateway]\nport = {}\n{config}", home.port)).unwrap();
        // It may hold a model key: the gateway refuses such a file unless it is private.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        Self { home, profile }
    }

    /// `molt-gateway-<profile>.service`.
    pub fn unit(&self) -> String {
        format!("molt-gateway-{}.service", self.profile)
    }

    /// Client options for this profile's gateway, with the token the owner's CLI reveals.
    pub fn client_options(&self) -> molt_client::ClientOptions {
        let path = self
            .home
            .path()
            .join(format!(".local/state/molt-{}/gateway.token", self.profile));
        wait_for("the gateway token file", Duration::from_secs(20), || {
            path.exists().then_some(())
        });
        let token = self.molt_ok(&["config", "show", "--reveal-token"]);
        let mut o = molt_client::ClientOptions::new(format!("ws://127.0.0.1:{}", self.home.port));
        o.token = Some(token.trim().to_owned());
        o
    }

    /// Where `molt service install` writes the profile's unit.
    pub fn unit_file(&self) -> PathBuf {
        PathBuf::from(std::env::var("XDG_CONFIG_HOME").unwrap())
            .join("systemd/user")
            .join(self.unit())
    }

    /// `molt --profile P ARGS` with the user manager's environment.
    pub fn molt(&self, args: &[&str]) -> Output {
        let mut c = Command::new(self.home.bin());
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("MOLT_LOG", "info");
        for k in ["XDG_RUNTIME_DIR", "XDG_CONFIG_HOME"] {
            if let Some(v) = std::env::var_os(k) {
                c.env(k, v);
            }
        }
        c.arg("--profile")
            .arg(&self.profile)
            .args(args)
            .output()
            .expect("spawn molt")
    }

    /// As [`ServiceHome::molt`]; must succeed; returns stdout.
    pub fn molt_ok(&self, args: &[&str]) -> String {
        let out = self.molt(args);
        assert!(
            out.status.success(),
            "molt {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// As [`ServiceHome::molt`], parsing stdout as JSON whatever the exit code.
    pub fn molt_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.molt(args);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("molt {args:?}: {e}: {out:?}"))
    }

    /// `systemctl --user show` of the profile's unit.
    pub fn show(&self, props: &[&str]) -> BTreeMap<String, String> {
        unit_show(&self.unit(), props)
    }
}

/// A test's profile leaves nothing behind in the shared user manager: its unit is stopped and
/// removed, and its config dir goes, so a later run cannot see a stale profile (doctor's port
/// check would count a stale config that names a reused port).
impl Drop for ServiceHome {
    fn drop(&mut self) {
        // No panics here: this may run while a failed test unwinds.
        let quiet = |args: &[&str]| {
            let _ = Command::new("systemctl").arg("--user").args(args).output();
        };
        quiet(&["stop", &self.unit()]);
        if std::fs::remove_file(self.unit_file()).is_ok() {
            quiet(&["daemon-reload"]);
        }
        if let Some(xdg) = std::env::var_os("XDG_CONFIG_HOME") {
            let _ =
                std::fs::remove_dir_all(PathBuf::from(xdg).join(format!("molt-{}", self.profile)));
        }
    }
}
