//! The agent's tools: a registry the model sees as function specs, filtered by each agent's
//! policy (`[tools]`, `[agents.<id>.tools]`), and the tools themselves, one file each.
//!
//! A tool call runs as a step of its turn. Its effect key (`<runId>:<step>`) is stable across
//! attempts: a call interrupted by a crash and run again (attempt 2) can recognise work it
//! already did. `exec` hands it to the command as `MOLT_EFFECT_KEY`; the approval an `exec`
//! waits for and the update `gateway` starts are recorded under it, so neither is asked for
//! or started twice.

mod cron;
mod exec;
mod files;
mod gateway;
mod web;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use molt_config::AgentProfile;
use molt_model::ToolSpec;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::Agent;

pub use exec::{OUTPUT_CAP, approval_of, approval_view};
pub use gateway::GatewayControl;

/// What a tool call runs with.
pub struct ToolContext<'a> {
    pub host: &'a Arc<Agent>,
    pub agent: &'a AgentProfile,
    pub run_id: &'a str,
    pub session_key: &'a str,
    /// `<runId>:<step>`: the same for every attempt of this call.
    pub effect_key: &'a str,
    /// The longest a command may run.
    pub timeout: Duration,
    /// Variables set for a command (`MOLT_RUN_ID`, `MOLT_EFFECT_KEY`, …).
    pub env: Vec<(&'static str, String)>,
    /// Variables of the gateway's own environment that hold secrets (model keys, the
    /// gateway's auth): removed, so a command cannot print them into a transcript.
    pub scrub: Vec<String>,
    /// Output as it is produced (for `command_output` events).
    pub output: mpsc::UnboundedSender<String>,
}

impl ToolContext<'_> {
    /// The gateway's parts, for the tools that act on them; set once the gateway serves.
    fn control(&self) -> Result<&GatewayControl, ToolOutput> {
        self.host
            .control
            .get()
            .ok_or_else(|| ToolOutput::error("the gateway is still starting; try again"))
    }
}

/// Why a tool call was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The person aborted the turn.
    Cancel,
    /// The gateway stops; the call re-runs at the next start.
    Abort,
    /// The call only waits (for an operator) and the gateway closed admission for a
    /// handover or a stop: the turn is released now, and the call re-runs in the next
    /// process and finds what it waited for.
    Yield,
}

/// What the driver does once a call's result is checkpointed. A restart must not begin
/// before: the step would be interrupted, run again, and restart again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowUp {
    /// A handover restart of this gateway.
    Handover,
}

/// A finished call: the text the model reads, details for clients, and whether it failed.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    pub text: String,
    pub details: Value,
    pub is_error: bool,
    pub then: Option<FollowUp>,
}

impl ToolOutput {
    pub fn ok(text: impl Into<String>, details: Value) -> Self {
        Self {
            text: text.into(),
            details,
            is_error: false,
            then: None,
        }
    }

    /// A failed call; `text` tells the model what went wrong and what it can do instead.
    pub fn error(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            details: json!({"status": "failed"}),
            is_error: true,
            then: None,
        }
    }
}

/// How a tool call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolEnd {
    Done(ToolOutput),
    Stopped(Stop),
}

impl From<ToolOutput> for ToolEnd {
    fn from(o: ToolOutput) -> Self {
        Self::Done(o)
    }
}

/// One tool.
pub trait Tool: Send + Sync {
    fn spec(&self) -> ToolSpec;
    /// Runs one call. `stop` resolves when the call must end early.
    fn run<'a>(
        &'a self,
        ctx: &'a ToolContext<'a>,
        args: &'a Value,
        stop: BoxFuture<'a, Stop>,
    ) -> BoxFuture<'a, ToolEnd>;
}

/// The tools an agent may call, by name.
pub struct Registry {
    tools: BTreeMap<&'static str, Box<dyn Tool>>,
}

impl Registry {
    /// The built-in tools: the names of [`molt_config::tools::TOOL_NAMES`].
    pub fn builtin() -> Self {
        let all: [(&'static str, Box<dyn Tool>); 8] = [
            ("read", Box::new(files::Read)),
            ("write", Box::new(files::Write)),
            ("edit", Box::new(files::Edit)),
            ("ls", Box::new(files::Ls)),
            ("exec", Box::new(exec::Exec)),
            ("web_fetch", Box::new(web::WebFetch)),
            ("gateway", Box::new(gateway::Gateway)),
            ("cron", Box::new(cron::Cron)),
        ];
        Self {
            tools: all.into_iter().collect(),
        }
    }

    /// The tool `name` if `agent` may call it; otherwise what the model is told instead.
    pub fn get(&self, agent: &AgentProfile, name: &str) -> Result<&dyn Tool, String> {
        match self.tools.get(name) {
            Some(t) if agent.tools.allows(name) => Ok(t.as_ref()),
            Some(_) => Err(format!(
                "the tool {name:?} is not allowed for agent {:?} by its tool policy \
                 ([tools] allow/deny); do without it or ask the operator",
                agent.id
            )),
            None => Err(format!(
                "there is no tool named {name:?}; available: {}",
                self.names(agent).join(", ")
            )),
        }
    }

    /// The specs `agent` is offered: a denied tool is never shown to the model.
    pub fn specs(&self, agent: &AgentProfile) -> Vec<ToolSpec> {
        self.tools
            .iter()
            .filter(|(n, _)| agent.tools.allows(n))
            .map(|(_, t)| t.spec())
            .collect()
    }

    pub fn names(&self, agent: &AgentProfile) -> Vec<&'static str> {
        self.tools
            .keys()
            .copied()
            .filter(|n| agent.tools.allows(n))
            .collect()
    }
}

/// A string argument, or the message for the model when it is missing.
fn str_arg<'a>(args: &'a Value, tool: &str, name: &str) -> Result<&'a str, ToolOutput> {
    args.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| ToolOutput::error(format!("{tool} needs a `{name}` string")))
}

/// An optional non-negative integer argument (models send numbers as floats, too).
fn uint_arg(args: &Value, name: &str) -> Option<u64> {
    let v = args.get(name)?;
    v.as_u64()
        .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_holds_every_configurable_tool() {
        let r = Registry::builtin();
        let mut names: Vec<&str> = r.tools.keys().copied().collect();
        let mut known = molt_config::tools::TOOL_NAMES.to_vec();
        names.sort_unstable();
        known.sort_unstable();
        assert_eq!(names, known);
        for (name, t) in &r.tools {
            assert_eq!(t.spec().name, *name);
        }
    }
}
