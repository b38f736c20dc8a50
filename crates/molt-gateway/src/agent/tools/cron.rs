//! `cron`: the agent schedules its own work: `add`, `list` and `remove` jobs of its own
//! agent, with the shapes of `cron.add` (and shorthands: `every`, `cron` + `tz`, `at`, and
//! `message` for a turn of its own).

use futures_util::future::BoxFuture;
use molt_model::ToolSpec;
use serde_json::{Value, json};

use super::{Stop, Tool, ToolContext, ToolEnd, ToolOutput, str_arg};
use crate::cron::{JobSpec, Payload};

pub struct Cron;

impl Tool for Cron {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "cron".into(),
            description: "Schedule your own work. `add` a job: `name`, a schedule (`every`: \
                          \"30m\", or `cron`: \"0 9 * * 1-5\" with optional `tz`, or `at`: \
                          an ISO time for once), and what it does (`message`: a turn of yours \
                          in a fresh session; or `payload` as {kind:\"systemEvent\", text} \
                          for a note in your main session). \
                          `list` shows your jobs; `remove` deletes one by `id`."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "action": {"type": "string", "enum": ["add", "list", "remove"]},
                    "name": {"type": "string"},
                    "every": {"type": "string", "description": "An interval: 30s, 5m, 1h, 1d."},
                    "cron": {"type": "string", "description": "A cron expression (5 or 6 fields)."},
                    "tz": {"type": "string", "description": "An IANA time zone for `cron` and `at`."},
                    "at": {"type": "string", "description": "One time: 2026-12-24T09:00 (local) or with an offset."},
                    "message": {"type": "string", "description": "What you will be asked when it fires."},
                    "payload": {"type": "object"},
                    "schedule": {"type": "object"},
                    "id": {"type": "string", "description": "remove: the job's id."},
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
            let c = match ctx.control() {
                Ok(c) => c,
                Err(e) => return e.into(),
            };
            let cron = &c.cron;
            let action = match str_arg(args, "cron", "action") {
                Ok(a) => a,
                Err(e) => return e.into(),
            };
            match action {
                "list" => {
                    let agent = ctx.agent.id.clone();
                    match cron
                        .store
                        .call(move |s| s.cron_jobs(true, Some(&agent), 200, 0))
                        .await
                    {
                        Ok((jobs, _)) => {
                            let views: Vec<Value> = jobs
                                .iter()
                                .map(|j| serde_json::to_value(cron.view(j)).unwrap_or_default())
                                .collect();
                            let mut text = String::new();
                            for j in &jobs {
                                text.push_str(&format!(
                                    "{}  {}  {}  next {}\n",
                                    j.id,
                                    j.name,
                                    if j.enabled { "enabled" } else { "disabled" },
                                    j.next_run_at_ms
                                        .map(molt_cron::format_at)
                                        .unwrap_or_else(|| "-".into())
                                ));
                            }
                            if jobs.is_empty() {
                                text.push_str("no jobs\n");
                            }
                            ToolOutput::ok(text, json!({"status": "completed", "jobs": views}))
                        }
                        Err(e) => ToolOutput::error(format!("cannot read the jobs: {e}")),
                    }
                }
                "remove" => {
                    let id = match str_arg(args, "cron", "id") {
                        Ok(i) => i.to_owned(),
                        Err(e) => return e.into(),
                    };
                    let (i, agent) = (id.clone(), ctx.agent.id.clone());
                    let r = cron
                        .store
                        .call(move |s| -> Result<bool, molt_store::StoreError> {
                            // An agent removes only its own jobs.
                            match s.cron_job(&i)? {
                                Some(j) if j.agent_id == agent => s.cron_remove(&i),
                                _ => Ok(false),
                            }
                        })
                        .await;
                    match r {
                        Ok(true) => {
                            cron.event(&id, "removed", json!({}));
                            cron.poke();
                            ToolOutput::ok(
                                format!("Removed {id}."),
                                json!({"status": "completed", "id": id}),
                            )
                        }
                        Ok(false) => {
                            ToolOutput::error(format!("you have no job {id}; `list` shows yours"))
                        }
                        Err(e) => ToolOutput::error(format!("cannot remove {id}: {e}")),
                    }
                }
                "add" => match spec_from(args, &cron.host_tz) {
                    Ok((name, spec)) => {
                        match cron.add(name, ctx.agent.id.clone(), true, spec).await {
                            Ok(j) => ToolOutput::ok(
                                format!(
                                    "Added {} ({}); it first runs at {}.",
                                    j.id,
                                    j.name,
                                    j.next_run_at_ms
                                        .map(molt_cron::format_at)
                                        .unwrap_or_else(|| "never (the time has passed)".into())
                                ),
                                json!({"status": "completed", "job": cron.view(&j)}),
                            ),
                            Err(e) => ToolOutput::error(format!("the job was not added: {e}")),
                        }
                    }
                    Err(e) => ToolOutput::error(e),
                },
                other => {
                    ToolOutput::error(format!("unknown action {other:?}; use add, list or remove"))
                }
            }
            .into()
        })
    }
}

/// The job an `add` call describes.
fn spec_from(args: &Value, host_tz: &str) -> Result<(String, JobSpec), String> {
    let s = |k: &str| {
        args.get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    let name = s("name").ok_or("add needs a `name`")?.to_owned();
    let tz = s("tz").map(str::to_owned);
    let schedule = match (args.get("schedule"), s("every"), s("cron"), s("at")) {
        (Some(v), None, None, None) => {
            serde_json::from_value(v.clone()).map_err(|e| format!("schedule: {e}"))?
        }
        (None, Some(every), None, None) => molt_cron::Schedule::Every {
            every_ms: molt_cron::parse_every(every).map_err(|e| e.to_string())?,
            anchor_ms: None,
        },
        (None, None, Some(expr), None) => molt_cron::Schedule::Cron {
            expr: expr.to_owned(),
            tz,
            stagger_ms: None,
        },
        (None, None, None, Some(at)) => {
            let ms = molt_cron::parse_at(at, tz.as_deref().unwrap_or(host_tz))
                .map_err(|e| e.to_string())?;
            molt_cron::Schedule::At {
                at: molt_cron::format_at(ms),
            }
        }
        _ => return Err("give exactly one schedule: `every`, `cron`, `at` or `schedule`".into()),
    };
    let (payload, target) = match (args.get("payload"), s("message")) {
        (Some(p), None) => {
            let p: Payload =
                serde_json::from_value(p.clone()).map_err(|e| format!("payload: {e}"))?;
            // A command job runs outside any turn, so outside this agent's exec policy and
            // sandbox: an agent schedules turns of its own, which run commands under both.
            if matches!(p, Payload::Command { .. }) {
                return Err("your jobs cannot run a command directly: schedule a turn \
                            (`message`) that runs it with exec, under your exec policy"
                    .into());
            }
            let target = if matches!(p, Payload::AgentTurn { .. }) {
                "isolated"
            } else {
                "main"
            };
            (p, target)
        }
        (None, Some(m)) => (
            Payload::AgentTurn {
                message: m.to_owned(),
                model: None,
            },
            "isolated",
        ),
        _ => return Err("give what it does: `message`, or `payload`".into()),
    };
    let one_shot = matches!(schedule, molt_cron::Schedule::At { .. });
    Ok((
        name,
        JobSpec {
            schedule,
            payload,
            session_target: target.into(),
            wake_mode: "now".into(),
            description: None,
            delete_after_run: one_shot,
        },
    ))
}
