use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::net::http_status;
use crate::poll::{poll, wait_for, wait_for_every};
use crate::procs::{kill_processes_of, proc_status_kib};

/// A private HOME for one or more gateway processes of one binary: the config is
/// `$HOME/.config/molt/molt.toml`, state goes to `$HOME/.local/state/molt`, and the gateway
/// listens on a free loopback port. Dropping it kills every process still running under it,
/// so a failing test or bench leaves nothing behind.
pub struct Home {
    /// The HOME directory, removed on drop.
    pub dir: tempfile::TempDir,
    /// The loopback port its gateways listen on (`MOLT_GATEWAY_PORT`).
    pub port: u16,
    bin: PathBuf,
    stop_grace: Option<Duration>,
}

impl Home {
    /// A home for `bin` with `config` as its molt.toml (an empty file for "").
    pub fn new(bin: impl Into<PathBuf>, config: &str) -> Self {
        let h = Self::without_config(bin);
        let path = h.config_path();
        std::fs::create_dir_all(path.parent().expect("config dir")).expect("create config dir");
        std::fs::write(&path, config).expect("write molt.toml");
        h
    }

    /// As [`Home::new`], with the config made 0600: for a config that holds a secret (molt
    /// refuses to load one that others can read).
    pub fn new_private(bin: impl Into<PathBuf>, config: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let h = Self::new(bin, config);
        std::fs::set_permissions(h.config_path(), std::fs::Permissions::from_mode(0o600))
            .expect("chmod 600 molt.toml");
        h
    }

    /// A home for `bin` with no config file at all.
    pub fn without_config(bin: impl Into<PathBuf>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("molt-home-")
            .tempdir()
            .expect("create a temp HOME");
        Self {
            dir,
            port: crate::net::free_port(),
            bin: bin.into(),
            stop_grace: None,
        }
    }

    /// Gateways of this home are stopped on drop with SIGTERM, then SIGKILL after `grace`
    /// (a bench that measures stops wants a clean one). By default they are SIGKILLed at once:
    /// tests rely on a dropped gateway dying like a crash, and on not waiting for a stop budget.
    pub fn stop_gracefully(mut self, grace: Duration) -> Self {
        self.stop_grace = Some(grace);
        self
    }

    /// The `molt` binary this home runs.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The HOME directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `$HOME/.config/molt/molt.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.path().join(".config/molt/molt.toml")
    }

    /// `$HOME/.local/state/molt`.
    pub fn state_dir(&self) -> PathBuf {
        self.path().join(".local/state/molt")
    }

    /// Where spawned gateways write their stderr: `$HOME/gateway.stderr`.
    pub fn log_path(&self) -> PathBuf {
        self.path().join("gateway.stderr")
    }

    /// A `molt` command with only this home's environment.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("MOLT_GATEWAY_PORT", self.port.to_string())
            .env("MOLT_LOG", "info");
        c
    }

    /// Runs a CLI command to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("spawn molt")
    }

    /// Runs a CLI command that must succeed; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "molt {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a CLI command that must succeed and print JSON; returns it.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli_ok(args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("molt {args:?} printed non-JSON ({e}): {out}"))
    }

    /// Starts `molt gateway run` and waits until `/readyz` is 200 (see [`Gateway::wait_ready`]).
    pub fn start(&self) -> Gateway {
        let g = self.spawn(&[]);
        g.wait_ready();
        g
    }

    /// Spawns `molt gateway run` with extra args, without waiting.
    pub fn spawn(&self, extra: &[&str]) -> Gateway {
        self.spawn_with(extra, |_| {})
    }

    /// As [`Home::spawn`], with `configure` applied to the command first (limits, say).
    /// stdout goes nowhere, stderr is appended to [`Home::log_path`].
    pub fn spawn_with(&self, extra: &[&str], configure: impl FnOnce(&mut Command)) -> Gateway {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open gateway.stderr");
        let mut cmd = self.cmd();
        cmd.args(["gateway", "run"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        configure(&mut cmd);
        let spawned_at = Instant::now();
        let child = cmd.spawn().expect("spawn molt gateway run");
        let mut g = Gateway::from_child(child, self);
        g.spawned_at = spawned_at;
        g
    }

    /// The token the gateway generated at its first start (`<state>/gateway.token`); waits
    /// up to 20 s for the file.
    pub fn token(&self) -> String {
        let path = self.state_dir().join("gateway.token");
        wait_for("the gateway token file", Duration::from_secs(20), || {
            std::fs::read_to_string(&path)
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
        })
    }

    /// Client options for this home's gateway (no device identity), with its generated token.
    pub fn client_options(&self) -> molt_client::ClientOptions {
        let mut o = molt_client::ClientOptions::new(format!("ws://127.0.0.1:{}", self.port));
        o.token = Some(self.token());
        o
    }

    /// What the home's gateways wrote to stderr so far.
    pub fn stderr_log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        kill_processes_of(self.dir.path());
    }
}

/// A gateway process. Dropped, it is SIGKILLed, or stopped gracefully when its home says so
/// ([`Home::stop_gracefully`]).
pub struct Gateway {
    /// The process; `None` once it has been waited for.
    pub child: Option<Child>,
    /// The loopback port it listens on.
    pub port: u16,
    home: PathBuf,
    stop_grace: Option<Duration>,
    spawned_at: Instant,
}

impl Gateway {
    /// Adopts a `molt gateway run` process the caller spawned itself from `home`'s command.
    pub fn from_child(child: Child, home: &Home) -> Self {
        Self {
            child: Some(child),
            port: home.port,
            home: home.path().to_owned(),
            stop_grace: home.stop_grace,
            spawned_at: Instant::now(),
        }
    }

    /// The pid, or 0 once the process has been waited for.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// The instant just before the exec (for start-up figures).
    pub fn spawned_at(&self) -> Instant {
        self.spawned_at
    }

    /// Waits up to 20 s, polling every 25 ms, for `/readyz` 200; panics after that.
    ///
    /// It only watches the port, so it also sees a handover successor take over.
    pub fn wait_ready(&self) {
        wait_for_every(
            "readyz 200",
            Duration::from_secs(20),
            Duration::from_millis(25),
            || (http_status(self.port, "/readyz") == Some(200)).then_some(()),
        );
    }

    /// Polls `/readyz` every `every` until it answers 200; returns the time waited.
    /// Panics, naming the log, if the process exits first or `timeout` passes.
    pub fn wait_ready_within(&mut self, timeout: Duration, every: Duration) -> Duration {
        let t0 = Instant::now();
        let log = self.home.join("gateway.stderr");
        let mut exited = None;
        let ready = poll(timeout, every, || {
            if http_status(self.port, "/readyz") == Some(200) {
                return Some(true);
            }
            exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            exited.is_some().then_some(false)
        });
        if let Some(st) = exited {
            self.child = None;
            panic!("gateway exited before ready ({st}); log: {}", log.display());
        }
        assert!(
            ready == Some(true),
            "gateway not ready after {timeout:?}; log: {}",
            log.display()
        );
        t0.elapsed()
    }

    /// Sends `sig` to the process (nothing once it has been waited for).
    pub fn signal(&self, sig: i32) {
        let pid = self.pid();
        if pid > 0 {
            // SAFETY: kill(2) on our own child; no memory-safety preconditions.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// VmRSS of the gateway in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:").expect("read VmRSS of the gateway")
    }

    /// Waits for exit, polling every 1 ms; returns (exit code, or `None` if killed by a
    /// signal; time waited). `None` if it did not exit within `timeout`.
    pub fn wait_exit_within(&mut self, timeout: Duration) -> Option<(Option<i32>, Duration)> {
        let t0 = Instant::now();
        let child = self.child.as_mut()?;
        let status = poll(timeout, Duration::from_millis(1), || {
            child.try_wait().ok().flatten()
        })?;
        self.child = None;
        Some((status.code(), t0.elapsed()))
    }

    /// As [`Gateway::wait_exit_within`]; panics if it has not exited within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> (Option<i32>, Duration) {
        assert!(
            self.child.is_some(),
            "wait_exit: the gateway was already waited for"
        );
        self.wait_exit_within(timeout)
            .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for gateway exit"))
    }

    /// SIGTERM, then waits; returns (exit code, time from the signal to exit).
    pub fn terminate(&mut self, timeout: Duration) -> Option<(Option<i32>, Duration)> {
        let t0 = Instant::now();
        self.signal(libc::SIGTERM);
        self.wait_exit_within(timeout)
            .map(|(c, _)| (c, t0.elapsed()))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let Some(grace) = self.stop_grace else {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            return;
        };
        if self.child.is_some() && self.terminate(grace).is_none() {
            eprintln!(
                "gateway {} ignored SIGTERM for {grace:?}; killing it",
                self.pid()
            );
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // A graceful stop may leave steps behind; the next gateway of this home (a bench
        // restarting on the same state) must not find them.
        let n = kill_processes_of(&self.home);
        if n > 0 {
            eprintln!("killed {n} leftover process(es) that ran under the gateway's HOME");
        }
    }
}

/// A shell command whose first attempt blocks for `first_secs` and whose later attempts finish
/// at once. Each attempt appends a line to `marker`, so tests can count real executions.
pub fn attempt_aware(marker: &Path, first_secs: u32) -> Vec<String> {
    let m = marker.display();
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "echo start >> {m}; n=$(wc -l < {m}); if [ $n -eq 1 ]; then sleep {first_secs}; fi; echo done >> {m}.done"
        ),
    ]
}

/// `molt tasks get ID --json` of the home's gateway.
pub fn run_state(home: &Home, id: &str) -> Value {
    home.cli_json(&["tasks", "get", id, "--json"])
}

/// The agent's part of a molt.toml: the default model is `fake/fake-1` on an
/// OpenAI-compatible fake at `base_url` with `key` inline (so use [`Home::new_private`]), and
/// `extra` is appended (later tables may extend the provider's, such as
/// `[models.providers.fake.limits]`). No `[gateway]` table: `extra` may bring one.
pub fn fake_model_agent_config(base_url: &str, key: &str, extra: &str) -> String {
    format!(
        r#"[models.providers.fake]
api = "openai-completions"
base_url = "{base_url}"
api_key = "{key}"
[[models.providers.fake.models]]
id = "fake-1"
[agents.defaults]
model = "fake/fake-1"
{extra}
"#
    )
}

/// A molt.toml for tests of the agent: [`fake_model_agent_config`] with a stop budget of 4 s.
pub fn fake_model_config(base_url: &str, key: &str, extra: &str) -> String {
    format!(
        "[gateway]\nstop_budget_ms = 4000\n{}",
        fake_model_agent_config(base_url, key, extra)
    )
}
