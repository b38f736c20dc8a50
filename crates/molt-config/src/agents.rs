//! `[models]` and `[agents]`: the model providers an agent calls and the agents themselves.
//!
//! Every key is optional except what a model call needs: a provider's `base_url` and a key
//! (inline `api_key`, or `api_key_env` naming the variable that holds it), and a default model.
//! A gateway with no provider serves everything but agent turns, which fail with a message
//! that names the missing key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::tools::{ToolPolicy, ToolSettings};

/// The agent that exists without any `[agents.<id>]` table.
pub const MAIN_AGENT: &str = "main";
/// Default per-file cap on a workspace file injected into the system prompt.
pub const DEFAULT_PROMPT_FILE_MAX_CHARS: usize = 20_000;
/// Default cap on all injected workspace files together.
pub const DEFAULT_PROMPT_TOTAL_MAX_CHARS: usize = 60_000;
/// Default cap on steps (model calls plus tool calls) in one turn.
pub const DEFAULT_MAX_STEPS: u32 = 32;

/// The wire API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ProviderApi {
    /// `POST {base_url}/chat/completions`, streamed.
    #[default]
    #[serde(rename = "openai-completions")]
    OpenAiCompletions,
    /// `POST {base_url}/v1/messages`, streamed.
    #[serde(rename = "anthropic-messages")]
    AnthropicMessages,
}

impl ProviderApi {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAiCompletions => "openai-completions",
            Self::AnthropicMessages => "anthropic-messages",
        }
    }
}

/// One model of a provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub id: String,
    /// A display name; the id when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default = "default_context_window")]
    pub context_window: u64,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u64,
}

impl ModelConfig {
    /// A model the config does not list: the defaults a listed one gets.
    pub fn unlisted(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            name: None,
            context_window: default_context_window(),
            max_tokens: default_max_tokens(),
        }
    }
}

fn default_context_window() -> u64 {
    128_000
}

fn default_max_tokens() -> u64 {
    4096
}

/// `[models.providers.<name>]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    #[serde(default)]
    pub api: ProviderApi,
    /// For OpenAI-compatible APIs this includes the `/v1` (as OpenAI's SDK takes it); for
    /// Anthropic it is the origin (`https://api.anthropic.com`).
    pub base_url: String,
    /// The key, inline. The config file must then be 0600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// The environment variable that holds the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// Extra request headers (no secrets here: they are not redacted).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Timeouts and retries of a model call; every field has a default.
    #[serde(default)]
    pub limits: CallLimits,
}

/// How long a model call may take, and how often it is retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallLimits {
    pub connect_timeout_ms: u64,
    /// From the request to the response's first byte.
    pub first_byte_timeout_ms: u64,
    /// The longest silence allowed between two chunks of a stream.
    pub idle_timeout_ms: u64,
    /// The whole call, retries excluded.
    pub total_timeout_ms: u64,
    /// Attempts after the first, on 429, 5xx and connection errors.
    pub max_retries: u32,
    /// The first backoff; it doubles per retry, with jitter, and `Retry-After` wins.
    pub retry_base_ms: u64,
    /// The longest single backoff.
    pub retry_max_ms: u64,
}

impl Default for CallLimits {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 10_000,
            first_byte_timeout_ms: 120_000,
            idle_timeout_ms: 120_000,
            total_timeout_ms: 900_000,
            max_retries: 4,
            retry_base_ms: 1_000,
            retry_max_ms: 30_000,
        }
    }
}

impl ProviderConfig {
    /// The key: inline, else from `api_key_env` in `env`. `Err` names what to set.
    pub fn api_key(
        &self,
        provider: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<String, String> {
        if let Some(k) = self.api_key.as_deref().filter(|k| !k.is_empty()) {
            return Ok(k.to_owned());
        }
        match self.api_key_env.as_deref() {
            Some(var) => env(var).filter(|k| !k.is_empty()).ok_or_else(|| {
                format!(
                    "models.providers.{provider}.api_key_env names {var}, but {var} is not set \
                     in the gateway's environment"
                )
            }),
            None => Err(format!(
                "models.providers.{provider} has no key: set api_key (in a 0600 config) or \
                 api_key_env"
            )),
        }
    }
}

/// `[models]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    pub providers: BTreeMap<String, ProviderConfig>,
}

/// A `provider/model` reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelRef {
    pub provider: String,
    pub model: String,
}

impl ModelRef {
    /// Parses `provider/model`. The model part may itself hold slashes.
    pub fn parse(s: &str) -> Option<Self> {
        let (p, m) = s.split_once('/')?;
        (!p.is_empty() && !m.is_empty()).then(|| Self {
            provider: p.to_owned(),
            model: m.to_owned(),
        })
    }
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

/// Settings every agent inherits (`[agents.defaults]`) and may override (`[agents.<id>]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSettings {
    /// `provider/model`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The workspace directory (`~` is the home directory). Default:
    /// `<data dir>/workspace` for `main`, `<data dir>/workspace-<id>` for the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// A display name (`agent.identity.get`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
    /// Cap on one workspace file in the system prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_file_max_chars: Option<usize>,
    /// Cap on all workspace files in the system prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_total_max_chars: Option<usize>,
    /// Cap on steps (model calls plus tool calls) in one turn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
    /// Timeout of one `exec` tool call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec_timeout_ms: Option<u64>,
    /// What this agent's tools may do; see [`crate::tools`].
    #[serde(skip_serializing_if = "crate::tools::is_default")]
    pub tools: ToolSettings,
}

/// `[agents]`: `defaults` plus one table per agent id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct AgentsConfig {
    pub defaults: AgentSettings,
    #[serde(flatten)]
    pub agents: BTreeMap<String, AgentSettings>,
}

/// One agent with its settings resolved against the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentProfile {
    pub id: String,
    pub model: Option<ModelRef>,
    pub workspace: PathBuf,
    pub name: Option<String>,
    pub emoji: Option<String>,
    pub prompt_file_max_chars: usize,
    pub prompt_total_max_chars: usize,
    pub max_steps: u32,
    pub exec_timeout_ms: u64,
    pub tools: ToolPolicy,
}

impl AgentsConfig {
    /// Agent ids: `main` first, then the configured ones in order.
    pub fn ids(&self) -> Vec<String> {
        let mut ids = vec![MAIN_AGENT.to_owned()];
        ids.extend(self.agents.keys().filter(|k| *k != MAIN_AGENT).cloned());
        ids
    }

    /// The agent `id` resolved against the defaults, or `None` if no such agent exists.
    /// `home` expands `~`; `data_dir` holds the default workspaces.
    pub fn resolve(&self, id: &str, home: &Path, data_dir: &Path) -> Option<AgentProfile> {
        self.resolve_with(id, home, data_dir, &ToolSettings::default())
    }

    /// [`Self::resolve`], with the top-level `[tools]` table under the agents' own.
    pub fn resolve_with(
        &self,
        id: &str,
        home: &Path,
        data_dir: &Path,
        top_tools: &ToolSettings,
    ) -> Option<AgentProfile> {
        let own = match self.agents.get(id) {
            Some(a) => a.clone(),
            None if id == MAIN_AGENT => AgentSettings::default(),
            None => return None,
        };
        let d = &self.defaults;
        let workspace = match own.workspace.as_deref().or(d.workspace.as_deref()) {
            Some(w) if own.workspace.is_some() || id == MAIN_AGENT => expand_home(w, home),
            // A shared default workspace for a second agent would mix two agents' files.
            Some(w) => expand_home(w, home).join(id),
            None if id == MAIN_AGENT => data_dir.join("workspace"),
            None => data_dir.join(format!("workspace-{id}")),
        };
        Some(AgentProfile {
            id: id.to_owned(),
            model: own
                .model
                .as_deref()
                .or(d.model.as_deref())
                .and_then(ModelRef::parse),
            workspace,
            name: own.name.or_else(|| d.name.clone()),
            emoji: own.emoji.or_else(|| d.emoji.clone()),
            prompt_file_max_chars: own
                .prompt_file_max_chars
                .or(d.prompt_file_max_chars)
                .unwrap_or(DEFAULT_PROMPT_FILE_MAX_CHARS),
            prompt_total_max_chars: own
                .prompt_total_max_chars
                .or(d.prompt_total_max_chars)
                .unwrap_or(DEFAULT_PROMPT_TOTAL_MAX_CHARS),
            max_steps: own
                .max_steps
                .or(d.max_steps)
                .unwrap_or(DEFAULT_MAX_STEPS)
                .max(1),
            exec_timeout_ms: own.exec_timeout_ms.or(d.exec_timeout_ms).unwrap_or(120_000),
            tools: crate::tools::resolve(&[&own.tools, &d.tools, top_tools]),
        })
    }
}

/// `p` with a leading `~` or `~/` read as `home`; any other path as it is.
pub fn expand_home(p: &str, home: &Path) -> PathBuf {
    match p.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None if p == "~" => home.to_owned(),
        None => PathBuf::from(p),
    }
}

/// Checks `[models]` and `[agents]`: references resolve, URLs parse, ids are sane.
pub(crate) fn validate(
    models: &ModelsConfig,
    agents: &AgentsConfig,
) -> Result<(), (&'static str, String)> {
    for (name, p) in &models.providers {
        if name.is_empty() || name.contains('/') {
            return Err((
                "models.providers",
                format!("provider name {name:?} must be non-empty and hold no '/'"),
            ));
        }
        let url = p.base_url.as_str();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err((
                "models.providers.base_url",
                format!(
                    "models.providers.{name}.base_url {url:?} must start with https:// or http://"
                ),
            ));
        }
        if p.api_key.is_none() && p.api_key_env.is_none() {
            return Err((
                "models.providers.api_key",
                format!("models.providers.{name} needs api_key or api_key_env"),
            ));
        }
        if p.models.iter().any(|m| m.id.is_empty()) {
            return Err((
                "models.providers.models",
                format!("models.providers.{name}.models has an entry without an id"),
            ));
        }
    }
    for (id, a) in std::iter::once(("defaults", &agents.defaults))
        .chain(agents.agents.iter().map(|(k, v)| (k.as_str(), v)))
    {
        crate::tools::validate(
            &format!("agents.{id}.tools"),
            &a.tools,
            crate::tools::TOOL_NAMES,
        )?;
        if id != "defaults"
            && (id.is_empty()
                || !id.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                }))
        {
            return Err((
                "agents",
                format!("agent id {id:?}: use a-z, 0-9, '-' and '_'"),
            ));
        }
        if let Some(m) = &a.model {
            let r = ModelRef::parse(m).ok_or_else(|| {
                (
                    "agents.model",
                    format!(
                        "agents.{id}.model {m:?} must be provider/model, e.g. \"openai/gpt-5\""
                    ),
                )
            })?;
            let Some(p) = models.providers.get(&r.provider) else {
                return Err((
                    "agents.model",
                    format!(
                        "agents.{id}.model names provider {:?}, which has no [models.providers.{}] table",
                        r.provider, r.provider
                    ),
                ));
            };
            if !p.models.is_empty() && !p.models.iter().any(|x| x.id == r.model) {
                return Err((
                    "agents.model",
                    format!(
                        "agents.{id}.model names {:?}, which models.providers.{}.models does not list",
                        r.model, r.provider
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_exists_without_a_table_and_inherits_defaults() {
        let a: AgentsConfig = toml::from_str(
            "[defaults]\nmodel = \"fake/fake-1\"\nmax_steps = 5\n[ops]\nworkspace = \"~/ops\"\n",
        )
        .unwrap();
        assert_eq!(a.ids(), vec!["main", "ops"]);
        let home = Path::new("/h");
        let main = a.resolve("main", home, Path::new("/d")).unwrap();
        assert_eq!(main.workspace, PathBuf::from("/d/workspace"));
        assert_eq!(main.model.unwrap().to_string(), "fake/fake-1");
        assert_eq!(main.max_steps, 5);
        let ops = a.resolve("ops", home, Path::new("/d")).unwrap();
        assert_eq!(ops.workspace, PathBuf::from("/h/ops"));
        assert!(a.resolve("nope", home, Path::new("/d")).is_none());
    }

    #[test]
    fn api_key_inline_or_from_env_with_a_message_naming_the_fix() {
        let p: ProviderConfig =
            toml::from_str("base_url = \"http://127.0.0.1:1/v1\"\napi_key_env = \"K\"\n").unwrap();
        assert_eq!(p.api_key("x", |_| Some("s".into())).unwrap(), "s");
        let e = p.api_key("x", |_| None).unwrap_err();
        assert!(e.contains("K is not set"), "{e}");
    }
}
