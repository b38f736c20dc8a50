//! What clients read to set up a conversation: agents, models, identity, commands, the
//! redacted config, and the empty lists OpenClaw's TUI asks for.

use std::sync::Arc;

use molt_protocol::frame::ErrorShape;
use molt_protocol::method::AnyParams;
use molt_protocol::methods::agents::{
    AgentIdentityGet, AgentIdentityParams, AgentIdentityResult, AgentModel, AgentSummary,
    AgentsList, AgentsListResult, CommandInfo, CommandsList, CommandsListResult, ConfigGet,
    ConfigGetResult, ModelChoice, ModelsList, ModelsListResult, PluginApprovalList, QuestionList,
    QuestionListResult, TaskSuggestionsList, TaskSuggestionsListResult,
};
use serde_json::Value;

use crate::agent::Agent;
use crate::router::{Caller, Router};

/// The config as `config.get` shows it: secrets already replaced.
pub struct ConfigView {
    pub path: String,
    pub exists: bool,
    /// The effective config as TOML, masked.
    pub raw: String,
    /// The same as data.
    pub config: Value,
}

/// The slash commands `molt chat` understands.
const COMMANDS: &[(&str, &str)] = &[
    ("new", "Start a fresh session"),
    (
        "reset",
        "Start over in this session; the old transcript is kept",
    ),
    ("abort", "Stop the turn that is running"),
    ("history", "Show the latest messages of this session"),
];

pub fn register(r: &mut Router, agent: &Arc<Agent>, config: &Arc<ConfigView>) {
    r.with(agent)
        .on::<AgentsList>(agents_list)
        .on::<ModelsList>(models_list)
        .on::<AgentIdentityGet>(identity);
    r.with(config).on::<ConfigGet>(config_get);
    r.with(&Arc::new(()))
        .on::<CommandsList>(commands)
        .on::<QuestionList>(|_: Arc<()>, _: Caller, _: AnyParams| async {
            Ok(QuestionListResult::default())
        })
        .on::<PluginApprovalList>(|_: Arc<()>, _: Caller, _: AnyParams| async { Ok(Vec::new()) })
        .on::<TaskSuggestionsList>(|_: Arc<()>, _: Caller, _: AnyParams| async {
            Ok(TaskSuggestionsListResult::default())
        });
}

async fn agents_list(
    agent: Arc<Agent>,
    _: Caller,
    _: AnyParams,
) -> Result<AgentsListResult, ErrorShape> {
    let agents = agent
        .env
        .agents
        .ids()
        .into_iter()
        .filter_map(|id| agent.profile(&id))
        .map(|p| AgentSummary {
            id: p.id.clone(),
            name: p.name.clone(),
            workspace: Some(p.workspace.display().to_string()),
            model: p.model.as_ref().map(|m| AgentModel {
                primary: m.to_string(),
            }),
        })
        .collect();
    Ok(AgentsListResult {
        default_id: molt_config::MAIN_AGENT.into(),
        main_key: "main".into(),
        scope: "per-sender".into(),
        agents,
    })
}

async fn models_list(
    agent: Arc<Agent>,
    _: Caller,
    _: AnyParams,
) -> Result<ModelsListResult, ErrorShape> {
    let default = agent.profile(molt_config::MAIN_AGENT).and_then(|p| p.model);
    let mut models = Vec::new();
    for (provider, cfg) in &agent.env.models.providers {
        let available = agent.profile(molt_config::MAIN_AGENT).is_some_and(|p| {
            let r = format!("{provider}/x");
            agent.model_for(&p, Some(&r)).is_ok()
        });
        for m in &cfg.models {
            let is_default = default
                .as_ref()
                .is_some_and(|d| d.provider == *provider && d.model == m.id);
            models.push(ModelChoice {
                id: m.id.clone(),
                name: m.name.clone().unwrap_or_else(|| m.id.clone()),
                provider: provider.clone(),
                context_window: m.context_window.max(1),
                available,
                supports_tools: true,
                tags: if is_default {
                    vec!["default".into()]
                } else {
                    Vec::new()
                },
            });
        }
    }
    Ok(ModelsListResult { models })
}

async fn identity(
    agent: Arc<Agent>,
    _: Caller,
    p: AgentIdentityParams,
) -> Result<AgentIdentityResult, ErrorShape> {
    let id = p
        .agent_id
        .or_else(|| {
            p.session_key.as_deref().and_then(|k| {
                k.strip_prefix("agent:")
                    .and_then(|r| r.split_once(':'))
                    .map(|(a, _)| a.to_owned())
            })
        })
        .unwrap_or_else(|| molt_config::MAIN_AGENT.into());
    let profile = agent
        .profile(&id)
        .ok_or_else(|| ErrorShape::invalid(format!("unknown agent {id:?}")))?;
    let (name, source) = match profile.name {
        Some(n) => (n, "config"),
        None => ("Assistant".to_owned(), "default"),
    };
    Ok(AgentIdentityResult {
        agent_id: id,
        avatar: name.chars().next().map(|c| c.to_uppercase().to_string()),
        name,
        name_source: source.into(),
        emoji: profile.emoji,
    })
}

async fn commands(_: Arc<()>, _: Caller, _: AnyParams) -> Result<CommandsListResult, ErrorShape> {
    Ok(CommandsListResult {
        commands: COMMANDS
            .iter()
            .map(|(name, description)| CommandInfo {
                name: (*name).into(),
                description: (*description).into(),
                source: "native".into(),
                scope: "text".into(),
                accepts_args: false,
                category: Some("session".into()),
            })
            .collect(),
    })
}

async fn config_get(
    c: Arc<ConfigView>,
    _: Caller,
    _: AnyParams,
) -> Result<ConfigGetResult, ErrorShape> {
    Ok(ConfigGetResult {
        path: c.path.clone(),
        exists: c.exists,
        raw: c.raw.clone(),
        config: c.config.clone(),
        valid: true,
        issues: Vec::new(),
        warnings: Vec::new(),
    })
}
