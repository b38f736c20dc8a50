//! `[tools]`: what an agent's tools may do. The same table can appear at the top level (every
//! agent), in `[agents.defaults.tools]` and in `[agents.<id>.tools]`; each key is taken from the
//! most specific table that sets it.
//!
//! ```toml
//! [tools]
//! deny = ["web_fetch"]
//! [tools.exec]
//! security = "allowlist"      # deny | allowlist | full
//! allowlist = ["git", "ls"]
//! ask = "on-miss"             # off | on-miss | always
//! sandbox = "on"              # on | off
//! network = "deny"            # allow | deny
//! [tools.web_fetch]
//! allow_private = false
//! ```

use serde::{Deserialize, Serialize};

/// Every tool an agent can be given, by the name the model sees.
pub const TOOL_NAMES: &[&str] = &[
    "read",
    "write",
    "edit",
    "ls",
    "exec",
    "web_fetch",
    "gateway",
    "cron",
];

/// Who may run a command at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExecSecurity {
    /// No command runs.
    Deny,
    /// Only commands whose every program is in `allowlist`.
    Allowlist,
    /// Any command (inside the sandbox, when it is on).
    #[default]
    Full,
}

/// When a command waits for an operator's approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ExecAsk {
    /// Never: the security mode alone decides.
    #[default]
    #[serde(rename = "off")]
    Off,
    /// When `security = "allowlist"` would refuse the command; approval lets it run.
    #[serde(rename = "on-miss")]
    OnMiss,
    /// Every command.
    #[serde(rename = "always")]
    Always,
}

/// A switch written as `on`/`off` (or `true`/`false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnOff {
    #[serde(alias = "true")]
    On,
    #[serde(alias = "false")]
    Off,
}

/// Whether a command may open TCP connections or listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExecNetwork {
    #[default]
    Allow,
    /// TCP connect and bind are denied by Landlock (kernel ABI 4 or later).
    Deny,
}

/// `[tools.exec]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ExecSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security: Option<ExecSecurity>,
    /// Program names (the first word of each command of a line) that `allowlist` admits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowlist: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ask: Option<ExecAsk>,
    /// Landlock and no_new_privs around every command. On by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<OnOff>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<ExecNetwork>,
    /// More directories a sandboxed command may read (system directories always are).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_read: Option<Vec<String>>,
    /// More directories a sandboxed command may write (the workspace and a private temp
    /// directory always are).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_write: Option<Vec<String>>,
}

/// `[tools.web_fetch]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WebFetchSettings {
    /// Allow loopback, private and link-local addresses. Off by default: an agent that can
    /// fetch `http://127.0.0.1:18789` can reach services that trust the local machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_private: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Bytes of body read at most.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<usize>,
    /// Characters of text returned at most.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_chars: Option<usize>,
}

/// One `[tools]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ToolSettings {
    /// Only these tools are offered (all when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// Never offered, even when `allow` names them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny: Option<Vec<String>>,
    #[serde(skip_serializing_if = "is_default")]
    pub exec: ExecSettings,
    #[serde(skip_serializing_if = "is_default")]
    pub web_fetch: WebFetchSettings,
}

pub(crate) fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

/// What an agent's tools may do, every layer applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolPolicy {
    pub allow: Option<Vec<String>>,
    pub deny: Vec<String>,
    pub exec: ExecPolicy,
    pub web_fetch: WebFetchPolicy,
}

/// `exec`'s resolved settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecPolicy {
    pub security: ExecSecurity,
    pub allowlist: Vec<String>,
    pub ask: ExecAsk,
    pub sandbox: bool,
    pub network: ExecNetwork,
    pub allow_read: Vec<String>,
    pub allow_write: Vec<String>,
}

/// `web_fetch`'s resolved settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebFetchPolicy {
    pub allow_private: bool,
    pub timeout_ms: u64,
    pub max_bytes: usize,
    pub max_chars: usize,
}

impl ToolPolicy {
    /// Whether the tool `name` is offered to the model and may be called.
    pub fn allows(&self, name: &str) -> bool {
        !self.deny.iter().any(|d| d == name)
            && self
                .allow
                .as_ref()
                .is_none_or(|a| a.iter().any(|x| x == name))
    }
}

/// Resolves `layers`, most specific first.
pub fn resolve(layers: &[&ToolSettings]) -> ToolPolicy {
    fn pick<T: Clone>(
        layers: &[&ToolSettings],
        f: impl Fn(&ToolSettings) -> Option<&T>,
    ) -> Option<T> {
        layers.iter().find_map(|l| f(l)).cloned()
    }
    ToolPolicy {
        allow: pick(layers, |l| l.allow.as_ref()),
        deny: pick(layers, |l| l.deny.as_ref()).unwrap_or_default(),
        exec: ExecPolicy {
            security: pick(layers, |l| l.exec.security.as_ref()).unwrap_or_default(),
            allowlist: pick(layers, |l| l.exec.allowlist.as_ref()).unwrap_or_default(),
            ask: pick(layers, |l| l.exec.ask.as_ref()).unwrap_or_default(),
            sandbox: pick(layers, |l| l.exec.sandbox.as_ref()) != Some(OnOff::Off),
            network: pick(layers, |l| l.exec.network.as_ref()).unwrap_or_default(),
            allow_read: pick(layers, |l| l.exec.allow_read.as_ref()).unwrap_or_default(),
            allow_write: pick(layers, |l| l.exec.allow_write.as_ref()).unwrap_or_default(),
        },
        web_fetch: WebFetchPolicy {
            allow_private: pick(layers, |l| l.web_fetch.allow_private.as_ref()).unwrap_or(false),
            timeout_ms: pick(layers, |l| l.web_fetch.timeout_ms.as_ref()).unwrap_or(30_000),
            max_bytes: pick(layers, |l| l.web_fetch.max_bytes.as_ref()).unwrap_or(2 << 20),
            max_chars: pick(layers, |l| l.web_fetch.max_chars.as_ref()).unwrap_or(50_000),
        },
    }
}

/// Checks one table: tool names against `known`, and settings that contradict each other.
pub(crate) fn validate(
    at: &str,
    t: &ToolSettings,
    known: &[&str],
) -> Result<(), (&'static str, String)> {
    for (list, names) in [("allow", &t.allow), ("deny", &t.deny)] {
        for n in names.iter().flatten() {
            if !known.contains(&n.as_str()) {
                return Err((
                    "tools",
                    format!(
                        "{at}.{list} names {n:?}, which is not a tool; the tools are: {}",
                        known.join(", ")
                    ),
                ));
            }
        }
    }
    if t.exec.security == Some(ExecSecurity::Allowlist)
        && t.exec.allowlist.as_ref().is_some_and(Vec::is_empty)
        && t.exec.ask != Some(ExecAsk::OnMiss)
    {
        return Err((
            "tools.exec.allowlist",
            format!(
                "{at}.exec.security is \"allowlist\" but {at}.exec.allowlist is empty: no \
                 command could run. List program names, or set security = \"deny\""
            ),
        ));
    }
    for p in t
        .exec
        .allow_read
        .iter()
        .chain(t.exec.allow_write.iter())
        .flatten()
    {
        if !(p.starts_with('/') || p.starts_with("~/")) {
            return Err((
                "tools.exec",
                format!("{at}.exec: {p:?} must be an absolute path (or start with ~/)"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_table_wins_key_by_key() {
        let top: ToolSettings = toml::from_str(
            "deny = [\"web_fetch\"]\n[exec]\nsecurity = \"allowlist\"\nallowlist = [\"ls\"]\n",
        )
        .unwrap();
        let agent: ToolSettings =
            toml::from_str("[exec]\nask = \"always\"\nsandbox = \"off\"\nnetwork = \"deny\"\n")
                .unwrap();
        let p = resolve(&[&agent, &ToolSettings::default(), &top]);
        assert_eq!(p.exec.security, ExecSecurity::Allowlist);
        assert_eq!(p.exec.allowlist, vec!["ls"]);
        assert_eq!(p.exec.ask, ExecAsk::Always);
        assert!(!p.exec.sandbox);
        assert_eq!(p.exec.network, ExecNetwork::Deny);
        assert!(!p.allows("web_fetch"));
        assert!(p.allows("exec"));
        let d = resolve(&[]);
        assert!(d.exec.sandbox, "the sandbox is on by default");
        assert_eq!(d.exec.security, ExecSecurity::Full);
        assert!(!d.web_fetch.allow_private);
        let only: ToolSettings = toml::from_str("allow = [\"read\"]\n").unwrap();
        let p = resolve(&[&only]);
        assert!(p.allows("read") && !p.allows("exec"));
    }

    #[test]
    fn validation_names_the_key_and_the_fix() {
        let known = ["exec", "read"];
        let t: ToolSettings = toml::from_str("deny = [\"shell\"]\n").unwrap();
        let (_, m) = validate("agents.ops.tools", &t, &known).unwrap_err();
        assert!(
            m.contains("agents.ops.tools.deny") && m.contains("exec, read"),
            "{m}"
        );
        let t: ToolSettings =
            toml::from_str("[exec]\nsecurity = \"allowlist\"\nallowlist = []\n").unwrap();
        assert!(validate("tools", &t, &known).is_err());
        let t: ToolSettings = toml::from_str("[exec]\nallow_write = [\"data\"]\n").unwrap();
        assert!(validate("tools", &t, &known).is_err());
        assert!(toml::from_str::<ToolSettings>("[exec]\nsecurity = \"some\"\n").is_err());
    }
}
