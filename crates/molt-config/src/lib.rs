//! molt's configuration: profiles, XDG paths, the TOML file and its `MOLT_*` overrides.
//!
//! Every key is optional. The effective config is built in three layers, each overriding the
//! last: embedded defaults, then `molt.toml`, then `MOLT_<UPPER_CASE_PATH>` environment variables
//! (for example `MOLT_GATEWAY_STOP_BUDGET_MS`). Command-line flags are applied by the caller on
//! top of that. [`Config::validate`] enforces the rules that no single key can express, such as
//! "a non-loopback bind needs auth".

mod agents;
pub mod channels;
mod context;
mod control_ui;
pub mod tools;

pub use agents::{
    AgentProfile, AgentSettings, AgentsConfig, CallLimits, MAIN_AGENT, ModelConfig, ModelRef,
    ModelsConfig, ProviderApi, ProviderConfig, expand_home,
};
pub use context::{Context, Overrides};
pub use control_ui::ControlUiConfig;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The port of the default profile.
pub const DEFAULT_PORT: u16 = 18789;
/// Default stop budget. The unit's `TimeoutStopSec` is derived from it plus a margin.
pub const DEFAULT_STOP_BUDGET_MS: u64 = 10_000;
/// Default cap on how long an old process drains after a handover. The new process already
/// serves during this time, so it never delays a restart.
pub const DEFAULT_HANDOVER_DRAIN_CAP_MS: u64 = 600_000;
/// Default time a new process gets to report ready before a handover is called off.
pub const DEFAULT_HANDOVER_TIMEOUT_MS: u64 = 30_000;
/// Default cap on runs that execute at once; more wait queued.
pub const DEFAULT_MAX_PARALLEL_RUNS: u32 = 64;
/// Default time a connection has to send a complete HTTP request (nginx's
/// `client_header_timeout` is 60 s; a gateway's clients are local and quick).
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;

/// An error in the configuration. Its message names the key (or file) and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid environment override {var}={value:?}: {message}")]
    Env {
        var: String,
        value: String,
        message: String,
    },
    #[error("invalid config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("invalid profile name {0:?}: use 1-32 characters of a-z, 0-9 and '-'")]
    Profile(String),
    #[error("cannot locate the home directory: set HOME")]
    NoHome,
}

/// A named, isolated instance of molt: its own config, state dir, port and unit.
/// The default profile has no name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Profile(Option<String>);

impl Profile {
    /// Parses a profile name. `None` or an empty string is the default profile.
    pub fn new(name: Option<&str>) -> Result<Self, ConfigError> {
        match name {
            None | Some("") => Ok(Self(None)),
            Some(n) => {
                let ok = n.len() <= 32
                    && n.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !n.starts_with('-');
                if ok {
                    Ok(Self(Some(n.to_owned())))
                } else {
                    Err(ConfigError::Profile(n.to_owned()))
                }
            }
        }
    }

    pub fn name(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// `""` for the default profile, `"-P"` otherwise: appended to every directory and unit.
    pub fn suffix(&self) -> String {
        self.0.as_ref().map(|n| format!("-{n}")).unwrap_or_default()
    }

    /// The systemd user unit that runs this profile's gateway.
    pub fn unit_name(&self) -> String {
        format!("molt-gateway{}.service", self.suffix())
    }

    /// The default port: 18789 for the default profile; a stable port derived from the name
    /// for the others (19000-19999), so that several profiles can run side by side without
    /// configuration. An explicit `gateway.port` always wins.
    pub fn default_port(&self) -> u16 {
        match &self.0 {
            None => DEFAULT_PORT,
            Some(name) => {
                // FNV-1a: stable across builds and platforms, unlike std's hasher.
                let mut h: u32 = 0x811c_9dc5;
                for b in name.bytes() {
                    h ^= u32::from(b);
                    h = h.wrapping_mul(0x0100_0193);
                }
                19_000 + (h % 1000) as u16
            }
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_deref().unwrap_or("default"))
    }
}

/// Where a profile's files live (design §3).
#[derive(Debug, Clone)]
pub struct Paths {
    pub config_file: PathBuf,
    pub config_dir: PathBuf,
    pub state_dir: PathBuf,
    /// `~/.local/share/molt[-P]`: versions, `current`.
    pub share_dir: PathBuf,
}

impl Paths {
    /// Resolves the XDG locations of `profile` from the environment.
    pub fn for_profile(profile: &Profile) -> Result<Self, ConfigError> {
        Self::from_env(profile, |k| std::env::var_os(k).filter(|v| !v.is_empty()))
    }

    fn from_env(
        profile: &Profile,
        var: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Self, ConfigError> {
        let home = var("HOME").map(PathBuf::from);
        let xdg = |name: &str, fallback: &str| -> Result<PathBuf, ConfigError> {
            match var(name) {
                Some(v) => Ok(PathBuf::from(v)),
                None => home
                    .as_ref()
                    .map(|h| h.join(fallback))
                    .ok_or(ConfigError::NoHome),
            }
        };
        let dir = format!("molt{}", profile.suffix());
        let config_dir = xdg("XDG_CONFIG_HOME", ".config")?.join(&dir);
        Ok(Self {
            config_file: config_dir.join("molt.toml"),
            config_dir,
            state_dir: xdg("XDG_STATE_HOME", ".local/state")?.join(&dir),
            share_dir: xdg("XDG_DATA_HOME", ".local/share")?.join(&dir),
        })
    }
}

/// How clients authenticate to the gateway, as written in `gateway.auth.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No secret at all. Only ever in effect when written explicitly, and only on loopback.
    None,
    Token,
    Password,
}

impl AuthMode {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Self::None),
            "token" => Some(Self::Token),
            "password" => Some(Self::Password),
            _ => None,
        }
    }
}

/// `[gateway.auth]`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `None` when the key is not written: see [`Config::auth_source`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<AuthMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// `[gateway]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// `None` means the profile's default port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub bind: IpAddr,
    pub stop_budget_ms: u64,
    pub handover_drain_cap_ms: u64,
    pub handover_timeout_ms: u64,
    /// A connection that has not sent a complete HTTP request (the first one, or the next one
    /// on a kept-alive connection) within this time is closed.
    pub header_timeout_ms: u64,
    /// How many runs execute at once; more wait queued, in order.
    pub max_parallel_runs: u32,
    /// Cap on connections that have not authenticated yet. `None`: a quarter of the open-file
    /// limit, at most 1024. When full, the oldest idle one is shed to admit a new one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unauthenticated: Option<u32>,
    /// The same cap per client address. `None`: a quarter of `max_unauthenticated`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unauthenticated_per_address: Option<u32>,
    pub auth: AuthConfig,
    /// `[gateway.control_ui]`: the web chat page and the WebSocket origins it allows.
    #[serde(skip_serializing_if = "tools::is_default")]
    pub control_ui: ControlUiConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            port: None,
            bind: IpAddr::from([127, 0, 0, 1]),
            stop_budget_ms: DEFAULT_STOP_BUDGET_MS,
            handover_drain_cap_ms: DEFAULT_HANDOVER_DRAIN_CAP_MS,
            handover_timeout_ms: DEFAULT_HANDOVER_TIMEOUT_MS,
            header_timeout_ms: DEFAULT_HEADER_TIMEOUT_MS,
            max_parallel_runs: DEFAULT_MAX_PARALLEL_RUNS,
            max_unauthenticated: None,
            max_unauthenticated_per_address: None,
            auth: AuthConfig::default(),
            control_ui: ControlUiConfig::default(),
        }
    }
}

/// Default `update.verify_timeout_ms`: how long a new version has to serve and report itself.
pub const DEFAULT_VERIFY_TIMEOUT_MS: u64 = 30_000;

/// `[cron]`: the scheduler.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CronConfig {
    /// Whether jobs fire at all (`false`: they are kept, and fire again once it is `true`).
    pub enabled: bool,
    /// After downtime, move recurring jobs past the times they missed instead of firing
    /// each once. One-shot `at` jobs always catch up.
    pub skip_missed: bool,
}

impl Default for CronConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            skip_missed: false,
        }
    }
}

/// `[update]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct UpdateConfig {
    /// Release public keys (lines of `molt release keygen`'s `PREFIX.pub`). Updates are
    /// refused while this is empty: molt has no built-in key.
    pub trusted_keys: Vec<String>,
    /// Where releases come from when `--source` is not given (and for `update.run`): a
    /// directory, or an `https://` base URL (`http://` only on loopback).
    pub source: Option<String>,
    /// After the handover, the new version must answer `/readyz` and the protocol with its
    /// exact version and build within this many milliseconds, or the update rolls back.
    pub verify_timeout_ms: u64,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        Self {
            trusted_keys: Vec::new(),
            source: None,
            verify_timeout_ms: DEFAULT_VERIFY_TIMEOUT_MS,
        }
    }
}

/// The name of the token file the gateway creates in its state dir when no auth is configured.
pub const TOKEN_FILE_NAME: &str = "gateway.token";

/// Where a profile's generated gateway token lives: `<state_dir>/gateway.token` (0600, in the
/// 0700 state dir).
pub fn token_file(state_dir: &Path) -> PathBuf {
    state_dir.join(TOKEN_FILE_NAME)
}

/// Reads a token file: its one line, trimmed. An empty file is an error, so a truncated file
/// is never taken for "no token".
pub fn read_token_file(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let token = text.trim();
    if token.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} is empty; delete it and restart the gateway to create a new token",
                path.display()
            ),
        ));
    }
    Ok(token.to_owned())
}

/// How the gateway authenticates once the config is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthSource<'a> {
    /// `gateway.auth.mode = "none"`, written explicitly: no secret (loopback only).
    None,
    /// A token from the config or `MOLT_GATEWAY_AUTH_TOKEN`.
    Token(&'a str),
    /// A password from the config or `MOLT_GATEWAY_AUTH_PASSWORD`.
    Password(&'a str),
    /// Nothing configured: the token in [`token_file`], created by the gateway on first start.
    TokenFile,
}

/// The whole `molt.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub update: UpdateConfig,
    pub models: ModelsConfig,
    pub agents: AgentsConfig,
    #[serde(skip_serializing_if = "tools::is_default")]
    pub cron: CronConfig,
    /// `[tools]`: what every agent's tools may do, under `[agents.*.tools]`.
    #[serde(skip_serializing_if = "tools::is_default")]
    pub tools: tools::ToolSettings,
    /// `[channels]`: Discord and the other chat channels.
    #[serde(skip_serializing_if = "tools::is_default")]
    pub channels: channels::ChannelsConfig,
}

/// The type of one overridable key; drives how its environment value is parsed.
#[derive(Clone, Copy)]
enum Kind {
    Port,
    Millis,
    Addr,
    Mode,
    Secret,
    Count,
    /// Several values, separated by newlines or `;`.
    List,
    Text,
}

/// Every key and its environment override. One list, so `MOLT_*` support cannot drift from
/// the file format.
const KEYS: &[(&str, Kind)] = &[
    ("gateway.port", Kind::Port),
    ("gateway.bind", Kind::Addr),
    ("gateway.stop_budget_ms", Kind::Millis),
    ("gateway.handover_drain_cap_ms", Kind::Millis),
    ("gateway.handover_timeout_ms", Kind::Millis),
    ("gateway.header_timeout_ms", Kind::Millis),
    ("gateway.max_parallel_runs", Kind::Count),
    ("gateway.max_unauthenticated", Kind::Count),
    ("gateway.max_unauthenticated_per_address", Kind::Count),
    ("gateway.auth.mode", Kind::Mode),
    ("gateway.auth.token", Kind::Secret),
    ("gateway.auth.password", Kind::Secret),
    ("update.trusted_keys", Kind::List),
    ("update.source", Kind::Text),
    ("update.verify_timeout_ms", Kind::Millis),
];

/// `gateway.stop_budget_ms` -> `MOLT_GATEWAY_STOP_BUDGET_MS`.
pub fn env_var_for(key: &str) -> String {
    format!("MOLT_{}", key.replace('.', "_").to_ascii_uppercase())
}

impl Config {
    /// Loads `path` (a missing file means "all defaults") and applies `MOLT_*` overrides from
    /// the process environment. The result is validated.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, |k| std::env::var(k).ok())
    }

    /// As [`Config::load`], with the environment given as a lookup function.
    pub fn load_with_env(
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for &(key, kind) in KEYS {
            let var = env_var_for(key);
            let Some(value) = env(&var) else { continue };
            let bad = |message: &str| ConfigError::Env {
                var: var.clone(),
                value: value.clone(),
                message: message.to_owned(),
            };
            let g = &mut self.gateway;
            match (key, kind) {
                ("gateway.port", Kind::Port) => {
                    g.port = Some(value.parse().map_err(|_| bad("expected a port 1-65535"))?)
                }
                ("gateway.bind", Kind::Addr) => {
                    g.bind = value.parse().map_err(|_| bad("expected an IP address"))?
                }
                ("gateway.stop_budget_ms", Kind::Millis) => {
                    g.stop_budget_ms = value.parse().map_err(|_| bad("expected milliseconds"))?
                }
                ("gateway.handover_drain_cap_ms", Kind::Millis) => {
                    g.handover_drain_cap_ms =
                        value.parse().map_err(|_| bad("expected milliseconds"))?
                }
                ("gateway.handover_timeout_ms", Kind::Millis) => {
                    g.handover_timeout_ms =
                        value.parse().map_err(|_| bad("expected milliseconds"))?
                }
                ("gateway.header_timeout_ms", Kind::Millis) => {
                    g.header_timeout_ms = value.parse().map_err(|_| bad("expected milliseconds"))?
                }
                ("gateway.max_parallel_runs", Kind::Count) => {
                    g.max_parallel_runs = value.parse().map_err(|_| bad("expected a count"))?
                }
                ("gateway.max_unauthenticated", Kind::Count) => {
                    g.max_unauthenticated =
                        Some(value.parse().map_err(|_| bad("expected a count"))?)
                }
                ("gateway.max_unauthenticated_per_address", Kind::Count) => {
                    g.max_unauthenticated_per_address =
                        Some(value.parse().map_err(|_| bad("expected a count"))?)
                }
                ("gateway.auth.mode", Kind::Mode) => {
                    g.auth.mode = Some(
                        AuthMode::parse(&value)
                            .ok_or_else(|| bad("expected none, token or password"))?,
                    )
                }
                ("gateway.auth.token", Kind::Secret) => g.auth.token = Some(value),
                ("gateway.auth.password", Kind::Secret) => g.auth.password = Some(value),
                ("update.trusted_keys", Kind::List) => {
                    self.update.trusted_keys = value
                        .split(['\n', ';'])
                        .map(str::trim)
                        .filter(|k| !k.is_empty())
                        .map(str::to_owned)
                        .collect()
                }
                ("update.source", Kind::Text) => self.update.source = Some(value),
                ("update.verify_timeout_ms", Kind::Millis) => {
                    self.update.verify_timeout_ms =
                        value.parse().map_err(|_| bad("expected milliseconds"))?
                }
                _ => unreachable!("KEYS and apply_env disagree on {key}"),
            }
        }
        Ok(())
    }

    /// Checks the rules that span keys. Called by [`Config::load`]; call it again after
    /// applying command-line flags.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let g = &self.gateway;
        if g.port == Some(0) {
            return Err(ConfigError::Invalid {
                key: "gateway.port",
                message: "port 0 is not allowed; choose a fixed port".into(),
            });
        }
        if g.stop_budget_ms < 1000 {
            return Err(ConfigError::Invalid {
                key: "gateway.stop_budget_ms",
                message: format!("{} ms is too short; use at least 1000", g.stop_budget_ms),
            });
        }
        if g.header_timeout_ms < 100 {
            return Err(ConfigError::Invalid {
                key: "gateway.header_timeout_ms",
                message: format!("{} ms is too short; use at least 100", g.header_timeout_ms),
            });
        }
        for (key, n) in [
            ("gateway.max_parallel_runs", Some(g.max_parallel_runs)),
            ("gateway.max_unauthenticated", g.max_unauthenticated),
            (
                "gateway.max_unauthenticated_per_address",
                g.max_unauthenticated_per_address,
            ),
        ] {
            if n == Some(0) {
                return Err(ConfigError::Invalid {
                    key,
                    message: "0 would admit nothing; use at least 1, or remove the key".into(),
                });
            }
        }
        let secret_ok = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
        match g.auth.mode {
            Some(AuthMode::Token) if !secret_ok(&g.auth.token) => {
                return Err(ConfigError::Invalid {
                    key: "gateway.auth.token",
                    message: "auth mode is `token` but no token is set; set gateway.auth.token \
                              or MOLT_GATEWAY_AUTH_TOKEN"
                        .into(),
                });
            }
            Some(AuthMode::Password) if !secret_ok(&g.auth.password) => {
                return Err(ConfigError::Invalid {
                    key: "gateway.auth.password",
                    message: "auth mode is `password` but no password is set; set \
                              gateway.auth.password or MOLT_GATEWAY_AUTH_PASSWORD"
                        .into(),
                });
            }
            _ => {}
        }
        agents::validate(&self.models, &self.agents)
            .and_then(|()| tools::validate("tools", &self.tools, tools::TOOL_NAMES))
            .and_then(|()| g.control_ui.validate())
            .map_err(|(key, message)| ConfigError::Invalid { key, message })?;
        self.channels.validate()?;
        // The generated token is a secret too, but one a remote client has no way to learn:
        // a public bind asks for a secret chosen (and handed out) on purpose.
        let configured = matches!(
            self.auth_source(),
            AuthSource::Token(_) | AuthSource::Password(_)
        );
        if !g.bind.is_loopback() && !configured {
            return Err(ConfigError::Invalid {
                key: "gateway.bind",
                message: format!(
                    "refusing to bind {} without auth: anyone who can reach it could run \
                     commands, and remote clients have no way to learn the generated token. Set \
                     gateway.auth.mode = \"token\" with a gateway.auth.token, or bind 127.0.0.1",
                    g.bind
                ),
            });
        }
        Ok(())
    }

    /// How the gateway authenticates. An explicit `mode` wins; without one, a configured token
    /// (then a password) decides, and with neither the gateway requires the token in its token
    /// file. `none` is never the default.
    pub fn auth_source(&self) -> AuthSource<'_> {
        let a = &self.gateway.auth;
        let token = a.token.as_deref().filter(|t| !t.is_empty());
        let password = a.password.as_deref().filter(|p| !p.is_empty());
        match (a.mode, token, password) {
            (Some(AuthMode::None), _, _) => AuthSource::None,
            (Some(AuthMode::Token) | None, Some(t), _) => AuthSource::Token(t),
            (Some(AuthMode::Password) | None, _, Some(p)) => AuthSource::Password(p),
            // `validate` refuses an explicit mode without its secret.
            _ => AuthSource::TokenFile,
        }
    }

    /// Whether the file at `path` itself (not the environment) holds a secret. `Ok(false)`
    /// when there is no file.
    pub fn file_holds_secrets(path: &Path) -> Result<bool, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str::<Config>(&text)
                .map(|c| c.holds_inline_secrets())
                .map_err(|e| ConfigError::Parse {
                    path: path.to_owned(),
                    message: e.to_string().trim_end().replace('\n', " "),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Whether the file itself holds a secret (an auth token or password, or a model key), in
    /// which case it must be readable by its owner only.
    pub fn holds_inline_secrets(&self) -> bool {
        let a = &self.gateway.auth;
        a.token.is_some()
            || a.password.is_some()
            || self.models.providers.values().any(|p| p.api_key.is_some())
            || self.channels.holds_secret()
    }

    /// The port this config listens on for `profile`.
    pub fn port(&self, profile: &Profile) -> u16 {
        self.gateway.port.unwrap_or_else(|| profile.default_port())
    }

    /// The effective config with every secret replaced by `********` and the port filled in.
    pub fn masked(&self, profile: &Profile) -> Config {
        let mut shown = self.clone();
        shown.gateway.port = Some(self.port(profile));
        let mask = |s: &mut Option<String>| {
            if s.is_some() {
                *s = Some("********".into());
            }
        };
        mask(&mut shown.gateway.auth.token);
        mask(&mut shown.gateway.auth.password);
        for p in shown.models.providers.values_mut() {
            mask(&mut p.api_key);
        }
        if let Some(d) = shown.channels.discord.as_mut() {
            mask(&mut d.token);
        }
        shown
    }

    /// The effective config as TOML, secrets masked, every key present.
    pub fn to_masked_toml(&self, profile: &Profile) -> String {
        toml::to_string(&self.masked(profile))
            .unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("molt-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{:x}.toml", text.len() * 31 + env.len()));
        std::fs::write(&path, text).unwrap();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_with_env(&path, |k| env.get(k).cloned())
    }

    #[test]
    fn missing_file_is_all_defaults() {
        let c = Config::load_with_env(Path::new("/nonexistent/molt.toml"), |_| None).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.port(&Profile::default()), 18789);
        assert!(c.gateway.bind.is_loopback());
    }

    #[test]
    fn file_then_env_override() {
        let c = load(
            "[gateway]\nport = 1234\nstop_budget_ms = 5000\n",
            &[("MOLT_GATEWAY_STOP_BUDGET_MS", "7000")],
        )
        .unwrap();
        assert_eq!(c.gateway.port, Some(1234));
        assert_eq!(c.gateway.stop_budget_ms, 7000);
    }

    #[test]
    fn errors_name_the_key() {
        let e = load("[gateway]\nstop_budget_ms = \"soon\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("stop_budget_ms"), "{e}");
        let e = load("[gateway]\nprot = 1\n", &[]).unwrap_err();
        assert!(e.to_string().contains("prot"), "{e}");
        let e = load("", &[("MOLT_GATEWAY_PORT", "x")]).unwrap_err();
        assert!(e.to_string().contains("MOLT_GATEWAY_PORT"), "{e}");
    }

    #[test]
    fn public_bind_needs_auth() {
        let e = load("[gateway]\nbind = \"0.0.0.0\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("gateway.bind"), "{e}");
        load(
            "[gateway]\nbind = \"0.0.0.0\"\n[gateway.auth]\nmode = \"token\"\ntoken = \"t\"\n",
            &[],
        )
        .unwrap();
        let e = load("[gateway.auth]\nmode = \"token\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("gateway.auth.token"), "{e}");
    }

    #[test]
    fn auth_defaults_to_the_token_file_and_none_only_when_written() {
        assert_eq!(load("", &[]).unwrap().auth_source(), AuthSource::TokenFile);
        let c = load("[gateway.auth]\nmode = \"none\"\n", &[]).unwrap();
        assert_eq!(c.auth_source(), AuthSource::None);
        let c = load("", &[("MOLT_GATEWAY_AUTH_TOKEN", "t0k")]).unwrap();
        assert_eq!(c.auth_source(), AuthSource::Token("t0k"));
        let c = load("[gateway.auth]\npassword = \"pw\"\n", &[]).unwrap();
        assert_eq!(c.auth_source(), AuthSource::Password("pw"));
        // An explicit none wins over a stray secret.
        let c = load("[gateway.auth]\nmode = \"none\"\ntoken = \"x\"\n", &[]).unwrap();
        assert_eq!(c.auth_source(), AuthSource::None);
        // The generated token does not make a public bind acceptable.
        let e = load("[gateway]\nbind = \"0.0.0.0\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("generated token"), "{e}");
    }

    #[test]
    fn listener_limits_are_validated() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.gateway.header_timeout_ms, DEFAULT_HEADER_TIMEOUT_MS);
        let c = load(
            "[gateway]\nheader_timeout_ms = 2000\nmax_unauthenticated = 64\n",
            &[("MOLT_GATEWAY_MAX_UNAUTHENTICATED_PER_ADDRESS", "8")],
        )
        .unwrap();
        assert_eq!(c.gateway.header_timeout_ms, 2000);
        assert_eq!(c.gateway.max_unauthenticated, Some(64));
        assert_eq!(c.gateway.max_unauthenticated_per_address, Some(8));
        assert_eq!(c.gateway.max_parallel_runs, DEFAULT_MAX_PARALLEL_RUNS);
        let c = load("", &[("MOLT_GATEWAY_MAX_PARALLEL_RUNS", "2")]).unwrap();
        assert_eq!(c.gateway.max_parallel_runs, 2);
        let e = load("[gateway]\nmax_parallel_runs = 0\n", &[]).unwrap_err();
        assert!(e.to_string().contains("max_parallel_runs"), "{e}");
        let e = load("[gateway]\nmax_unauthenticated = 0\n", &[]).unwrap_err();
        assert!(e.to_string().contains("max_unauthenticated"), "{e}");
    }

    #[test]
    fn token_file_reads_trimmed_and_refuses_empty() {
        let dir = std::env::temp_dir().join(format!("molt-token-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = token_file(&dir);
        std::fs::write(&path, "abc\n").unwrap();
        assert_eq!(read_token_file(&path).unwrap(), "abc");
        std::fs::write(&path, "\n").unwrap();
        let e = read_token_file(&path).unwrap_err();
        assert!(e.to_string().contains("delete it"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn masked_output_hides_secrets() {
        let c = load(
            "",
            &[
                ("MOLT_GATEWAY_AUTH_MODE", "token"),
                ("MOLT_GATEWAY_AUTH_TOKEN", "hunter2"),
            ],
        )
        .unwrap();
        let shown = c.to_masked_toml(&Profile::default());
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("port = 18789"), "{shown}");
    }

    #[test]
    fn a_discord_token_in_the_file_is_a_secret_and_is_masked() {
        let c = load("[channels.discord]\ntoken = \"bot-sekrit\"\n", &[]).unwrap();
        assert!(c.holds_inline_secrets());
        let shown = c.to_masked_toml(&Profile::default());
        assert!(!shown.contains("bot-sekrit"), "{shown}");
        assert!(shown.contains("[channels.discord]"), "{shown}");
        let c = load("[channels.discord]\ntoken_env = \"BOT\"\n", &[]).unwrap();
        assert!(!c.holds_inline_secrets());
    }

    #[test]
    fn profiles() {
        let p = Profile::new(Some("work")).unwrap();
        assert_eq!(p.unit_name(), "molt-gateway-work.service");
        assert!((19000..20000).contains(&p.default_port()));
        assert!(Profile::new(Some("../x")).is_err());
        let paths = Paths::from_env(&p, |k| (k == "HOME").then(|| "/h".into())).unwrap();
        assert_eq!(paths.state_dir, PathBuf::from("/h/.local/state/molt-work"));
        assert_eq!(
            paths.config_file,
            PathBuf::from("/h/.config/molt-work/molt.toml")
        );
        assert_eq!(env_var_for("gateway.auth.mode"), "MOLT_GATEWAY_AUTH_MODE");
    }
}
