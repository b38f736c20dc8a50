//! `gateway`: the agent's view of and hands on its own gateway: `status`, `config.get`
//! (masked), `restart` (a handover, begun once the call's result is saved) and `update.run`
//! (an update outside this process, which the turn never waits for).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use molt_model::ToolSpec;
use molt_protocol::methods::update::UpdateRunParams;
use molt_store::TurnOrigin;
use serde_json::{Value, json};

use super::{FollowUp, Stop, Tool, ToolContext, ToolEnd, ToolOutput, str_arg};
use crate::handover::Handover;
use crate::methods::{ConfigView, GatewayFacts};
use crate::update::Updates;

/// What the `gateway` tool acts on.
pub struct GatewayControl {
    pub facts: Arc<GatewayFacts>,
    pub handover: Arc<Handover>,
    pub updates: Arc<Updates>,
    pub config: Arc<ConfigView>,
    pub cron: Arc<crate::cron::Cron>,
}

pub struct Gateway;

impl Tool for Gateway {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "gateway".into(),
            description: "Inspect or manage the molt gateway you run in. `status`: version, \
                          uptime and work in flight. `config.get`: the effective config with \
                          secrets masked (`path` picks one key, e.g. \"gateway.port\"). \
                          `restart`: a handover restart; nothing in flight is lost and your \
                          turn continues. `update.run`: update molt to the newest signed \
                          release; it runs outside the gateway, you do not wait for it, and \
                          this session gets a message when it ends saying which version runs \
                          (`continuationMessage` is added to it on success). Never update or \
                          restart molt through exec."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "action": {"type": "string", "enum": ["status", "config.get", "restart", "update.run"]},
                    "path": {"type": "string", "description": "config.get: a dotted key path."},
                    "note": {"type": "string", "description": "restart/update.run: why, for the log."},
                    "continuationMessage": {"type": "string", "description": "update.run: text for this session once the update succeeded."},
                },
                "required": ["action"],
            }),
        }
    }

    fn run<'a>(
        &'a self,
        ctx: &'a ToolContext<'a>,
        args: &'a Value,
        _stop: BoxFuture<'a, Stop>,
    ) -> BoxFuture<'a, ToolEnd> {
        Box::pin(async move {
            let action = match str_arg(args, "gateway", "action") {
                Ok(a) => a,
                Err(e) => return e.into(),
            };
            let c = match ctx.control() {
                Ok(c) => c,
                Err(e) => return e.into(),
            };
            match action {
                "status" => status(c).await,
                "config.get" => config_get(c, args.get("path").and_then(Value::as_str)),
                "restart" => {
                    let note = args.get("note").and_then(Value::as_str).unwrap_or("");
                    tracing::info!(run = ctx.run_id, note, "restart requested by the agent");
                    ToolOutput {
                        then: Some(FollowUp::Handover),
                        ..ToolOutput::ok(
                            "A handover restart begins as soon as this result is saved. \
                             Connections stay up and this turn continues in the new process.",
                            json!({"status": "scheduled"}),
                        )
                    }
                }
                "update.run" | "update" => update(ctx, c, args).await,
                other => ToolOutput::error(format!(
                    "unknown action {other:?}; use status, config.get, restart or update.run"
                )),
            }
            .into()
        })
    }
}

async fn status(c: &GatewayControl) -> ToolOutput {
    match crate::methods::status_of(&c.facts).await {
        Ok(s) => {
            let v = json!({
                "version": s.probe.version, "buildId": s.probe.build_id, "pid": s.probe.pid,
                "state": s.probe.state, "uptimeMs": s.probe.uptime_ms, "profile": s.profile,
                "port": s.port, "runs": s.runs, "subsystems": s.subsystems,
                "connections": s.connections, "lastHandover": s.last_handover,
            });
            ToolOutput::ok(pretty(&v), v)
        }
        Err(e) => ToolOutput::error(format!("cannot read the status: {}", e.message)),
    }
}

fn config_get(c: &GatewayControl, path: Option<&str>) -> ToolOutput {
    let Some(path) = path.filter(|p| !p.is_empty()) else {
        return ToolOutput::ok(
            c.config.raw.clone(),
            json!({"path": c.config.path, "exists": c.config.exists}),
        );
    };
    let found = path.split('.').try_fold(&c.config.config, |v, k| v.get(k));
    match found {
        Some(v) => ToolOutput::ok(pretty(v), json!({"path": path, "value": v})),
        None => ToolOutput::error(format!(
            "the config has no key {path:?} (unset keys take their defaults); call config.get \
             without a path to see it all"
        )),
    }
}

async fn update(ctx: &ToolContext<'_>, c: &GatewayControl, args: &Value) -> ToolOutput {
    let p = UpdateRunParams {
        note: args.get("note").and_then(Value::as_str).map(str::to_owned),
        continuation_message: args
            .get("continuationMessage")
            .and_then(Value::as_str)
            .map(str::to_owned),
        ..Default::default()
    };
    let origin = TurnOrigin {
        effect_key: ctx.effect_key.to_owned(),
        session_key: ctx.session_key.to_owned(),
        agent_id: ctx.agent.id.clone(),
    };
    match crate::update::start_for_turn(&c.updates, origin, &p).await {
        Ok(t) => {
            // Tests kill the gateway here, between starting the update and saving the call's
            // result, to prove that the replayed call starts no second update.
            if std::env::var("MOLT_FAILPOINT").as_deref() == Ok("gateway-tool-after-update") {
                tracing::warn!("MOLT_FAILPOINT: killing the gateway after starting an update");
                // SAFETY: kill(2) on this process's own pid has no memory effects.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            }
            let what = if t.started_now {
                "started"
            } else {
                "was already started by this call"
            };
            let text = format!(
                "Update job {} {what}{}. It runs outside the gateway and restarts it into \
                 the new version by itself; do not wait for it or start another. This session \
                 gets a message when it ends, saying which version runs.",
                t.job_id,
                t.launcher
                    .as_deref()
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default()
            );
            ToolOutput::ok(
                text,
                json!({
                    "status": if t.started_now { "started" } else { "already-started" },
                    "jobId": t.job_id, "launcher": t.launcher, "state": t.state.as_str(),
                }),
            )
        }
        Err(e) => ToolOutput::error(format!("the update was not started: {e}")),
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}
