//! What a client reads to set up a conversation: agents, models, identity, commands, the
//! config (redacted), and the empty lists OpenClaw's TUI asks for at start.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::method::AnyParams;

crate::declare_methods! {
    AgentsList = "agents.list", Read, reads, AnyParams => AgentsListResult;
    ModelsList = "models.list", Read, reads, AnyParams => ModelsListResult;
    AgentIdentityGet = "agent.identity.get", Read, reads, AgentIdentityParams => AgentIdentityResult;
    /// The slash commands `molt chat` and the TUI understand.
    CommandsList = "commands.list", Read, reads, AnyParams => CommandsListResult;
    /// The effective config, secrets redacted.
    ConfigGet = "config.get", Read, reads, AnyParams => ConfigGetResult;
    /// The schema asks for `operator.questions`, a scope molt does not grant; the list is
    /// always empty, so read suffices.
    QuestionList = "question.list", Read, reads, AnyParams => QuestionListResult;
    PluginApprovalList = "plugin.approval.list", Approvals, reads, AnyParams => Vec<Value>;
    TaskSuggestionsList = "taskSuggestions.list", Read, reads, AnyParams => TaskSuggestionsListResult;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AgentModel {
    pub primary: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentSummary {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<AgentModel>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentsListResult {
    pub default_id: String,
    pub main_key: String,
    /// `per-sender`.
    pub scope: String,
    pub agents: Vec<AgentSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ModelChoice {
    pub id: String,
    pub name: String,
    pub provider: String,
    pub context_window: u64,
    pub available: bool,
    pub supports_tools: bool,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ModelsListResult {
    pub models: Vec<ModelChoice>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentIdentityParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentIdentityResult {
    pub agent_id: String,
    pub name: String,
    /// `config` or `default`.
    pub name_source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CommandInfo {
    pub name: String,
    pub description: String,
    /// `native`.
    pub source: String,
    /// `text`.
    pub scope: String,
    pub accepts_args: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CommandsListResult {
    pub commands: Vec<CommandInfo>,
}

/// The config as data; `raw` is the file's text with secrets replaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConfigGetResult {
    pub path: String,
    pub exists: bool,
    pub raw: String,
    pub config: Value,
    pub valid: bool,
    pub issues: Vec<Value>,
    pub warnings: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct QuestionListResult {
    pub questions: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TaskSuggestionsListResult {
    pub suggestions: Vec<Value>,
}
