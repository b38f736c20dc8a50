//! A job's spec: what fires (`payload`), where (`sessionTarget`) and when (`schedule`), in
//! OpenClaw's `CronJob` field names. The gateway stores it as JSON; the importer writes it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Schedule;

/// What a job does when it fires (`CronJob.payload`); unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Payload {
    /// A command (argv, no shell), as a durable exec run.
    #[serde(rename_all = "camelCase")]
    Command {
        /// The program and its arguments.
        argv: Vec<String>,
        /// The working directory (the agent's workspace when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
        /// Variables added to the command's environment.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
        /// How long the command may run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_seconds: Option<f64>,
    },
    /// A note in a session's transcript (the agent's main session by default); no model
    /// call by itself: the agent reads it at its next turn there.
    SystemEvent {
        /// The note, shown to the model as `System: <text>`.
        text: String,
    },
    /// An agent turn, in a session of its own by default.
    #[serde(rename_all = "camelCase")]
    AgentTurn {
        /// What the turn is asked.
        message: String,
        /// A `provider/model` for this turn instead of the agent's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
    },
}

/// What the store keeps of a job besides its name, agent and state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    /// When it fires.
    pub schedule: Schedule,
    /// What it does.
    pub payload: Payload,
    /// `main`, `isolated` or `session:<key>`.
    pub session_target: String,
    /// `now` or `next-heartbeat` (molt has no heartbeat: both fire on time).
    pub wake_mode: String,
    /// A note for people; not sent to the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Remove the job after its one fire (an `at` job).
    #[serde(default)]
    pub delete_after_run: bool,
}

impl JobSpec {
    /// Checks the parts that a schedule check does not: the payload and its target.
    pub fn check(&self) -> Result<(), String> {
        match &self.payload {
            Payload::Command { argv, .. } if argv.first().is_none_or(|a| a.is_empty()) => {
                return Err("a command payload needs a non-empty argv".into());
            }
            Payload::SystemEvent { text } if text.trim().is_empty() => {
                return Err("a systemEvent payload needs text".into());
            }
            Payload::AgentTurn { message, .. } if message.trim().is_empty() => {
                return Err("an agentTurn payload needs a message".into());
            }
            Payload::SystemEvent { .. } if self.session_target == "isolated" => {
                return Err(
                    "a systemEvent goes to an existing session: use sessionTarget \"main\" or \
                     \"session:<key>\""
                        .into(),
                );
            }
            _ => {}
        }
        match self.session_target.as_str() {
            "main" | "isolated" => Ok(()),
            t if t.strip_prefix("session:").is_some_and(|k| !k.is_empty()) => Ok(()),
            "current" => Err(
                "sessionTarget \"current\" is not supported: name the session as \
                 \"session:<key>\""
                    .into(),
            ),
            t => Err(format!(
                "sessionTarget {t:?}: use \"main\", \"isolated\" or \"session:<key>\""
            )),
        }
    }
}
