//! Driving one turn: start its next step, run it (a model call or a tool call), checkpoint
//! it, and publish what happened, until the turn ends or this process must let go of it.

use std::sync::Arc;
use std::time::Duration;

use molt_config::AgentProfile;
use molt_model::{CallRequest, ModelError, StreamEvent};
use molt_protocol::methods::chat::ChatState;
use molt_protocol::methods::tasks::StepSpec;
use molt_protocol::transcript::{AssistantMessage, Message, TextBlock, ToolResultMessage};
use molt_store::{RunId, StepRecord, StoreError, TurnProgress, TurnRecord};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use super::Agent;
use super::events::Emitter;
use super::tools::{FollowUp, Stop, ToolContext, ToolEnd, ToolOutput};
use crate::app::now_ms;

/// What a driver starts from when its caller already holds it.
pub(super) struct Resume {
    pub turn: TurnRecord,
    pub session_id: String,
    /// The first step, already started (attempt 1), with the messages it moved into the
    /// transcript.
    pub first: Option<(StepRecord, Vec<molt_store::StoredMessage>)>,
}

/// How a model call ended. Lives on the stack for one match: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
enum Called {
    Answered(Result<AssistantMessage, ModelError>),
    Cancelled,
    Aborted,
}

/// How a step ended, from the driver's point of view.
enum StepEnd {
    /// Checkpointed; the turn goes on.
    Continue,
    /// The turn ended (answered, failed or cancelled) and its end was published.
    TurnOver,
    /// This process let the turn go (stop, handover); the next holder resumes the step.
    Released,
}

impl Agent {
    /// Drives a leased turn until it ends or must be released. `resume` carries what the
    /// submitting call already holds (the turn, and its first step if it started it).
    pub(super) async fn drive(self: &Arc<Self>, run: RunId, resume: Option<Resume>) {
        let cancel = self.track(&run.0);
        if let Err(e) = self.drive_steps(&run, &cancel, resume).await {
            match e {
                StoreError::LeaseLost { .. } => {
                    tracing::warn!(run = %run, error = %e, "turn lost its lease; another process continues it")
                }
                e => {
                    tracing::error!(run = %run, error = %e, "turn stopped on a store error; it resumes at the next start")
                }
            }
        }
        self.untrack(&run.0);
    }

    async fn drive_steps(
        self: &Arc<Self>,
        run: &RunId,
        cancel: &Notify,
        resume: Option<Resume>,
    ) -> Result<(), StoreError> {
        let boot = self.boot;
        let Resume {
            turn,
            session_id,
            mut first,
        } = match resume {
            Some(r) => r,
            None => {
                let rid = run.0.clone();
                self.store
                    .call(move |s| -> Result<_, StoreError> {
                        let t = s
                            .turn(&rid)?
                            .ok_or_else(|| StoreError::NoSuchRun(rid.clone()))?;
                        let sess = s.ensure_session(&t.session_key, &t.agent_id)?;
                        Ok(Resume {
                            turn: t,
                            session_id: sess.session_id,
                            first: None,
                        })
                    })
                    .await?
            }
        };
        let mut em = Emitter::new(
            self.sink.clone(),
            &turn.run_id,
            &turn.session_key,
            &turn.agent_id,
            &session_id,
            turn.event_seq,
        );
        let agent = self.profile(&turn.agent_id);
        if let Some(a) = &agent {
            let _ = std::fs::create_dir_all(&a.workspace);
        }
        loop {
            let (step, moved) = match first.take() {
                Some(started) => started,
                None => {
                    if !*self.admitting.borrow() || *self.abort.borrow() {
                        return self
                            .release(
                                run,
                                &em,
                                "gateway stopping or handing over: step not started",
                            )
                            .await;
                    }
                    // A cancel asked for meanwhile wins over the next step.
                    let rid = run.clone();
                    let next = self
                        .store
                        .call(move |s| -> Result<_, StoreError> {
                            if s.cancel_requested(&rid)? {
                                return Ok(None);
                            }
                            Ok(Some(s.start_turn_step(&rid, boot)?))
                        })
                        .await?;
                    match next {
                        None => {
                            self.end_cancelled(run, None, &mut em).await?;
                            return Ok(());
                        }
                        Some(None) => return Ok(()),
                        Some(Some(started)) => started,
                    }
                }
            };
            if step.index == 0 && step.attempts == 1 {
                em.agent(
                    "lifecycle",
                    json!({"phase": "start", "startedAt": now_ms()}),
                );
                em.changed("start");
            }
            for m in &moved {
                em.message(m);
            }
            let Some(agent) = &agent else {
                let msg = format!(
                    "agent {:?} is not configured: add an [agents.{}] table or use \"main\"",
                    turn.agent_id, turn.agent_id
                );
                self.end_failed(run, &step, &msg, "unknown", None, &mut em)
                    .await?;
                return Ok(());
            };
            let end = match &step.spec {
                StepSpec::Model {} => {
                    self.model_step(run, agent, &turn, &step, cancel, &mut em)
                        .await?
                }
                StepSpec::Tool {
                    call_id,
                    name,
                    arguments,
                } => {
                    self.tool_step(
                        run,
                        agent,
                        &turn.session_key,
                        &step,
                        (call_id, name, arguments),
                        cancel,
                        &mut em,
                    )
                    .await?
                }
                StepSpec::Exec(_) => {
                    self.end_failed(
                        run,
                        &step,
                        "an exec step in a turn",
                        "unknown",
                        None,
                        &mut em,
                    )
                    .await?;
                    StepEnd::TurnOver
                }
            };
            match end {
                StepEnd::Continue => {}
                StepEnd::TurnOver | StepEnd::Released => return Ok(()),
            }
        }
    }

    async fn model_step(
        self: &Arc<Self>,
        run: &RunId,
        agent: &AgentProfile,
        turn: &TurnRecord,
        step: &StepRecord,
        cancel: &Notify,
        em: &mut Emitter,
    ) -> Result<StepEnd, StoreError> {
        if step.index >= agent.max_steps {
            let msg = format!(
                "the turn reached its limit of {} steps; raise agents.{}.max_steps (or \
                 agents.defaults.max_steps) if it needs more",
                agent.max_steps, agent.id
            );
            self.end_failed(run, step, &msg, "unknown", None, em)
                .await?;
            return Ok(StepEnd::TurnOver);
        }
        let key = turn.session_key.clone();
        let (session, transcript) = self
            .store
            .call(move |s| -> Result<_, StoreError> { Ok((s.session(&key)?, s.transcript(&key)?)) })
            .await?;
        let model = match self.model_for(agent, session.as_ref().and_then(|s| s.model.as_deref())) {
            Ok(m) => m,
            Err(msg) => {
                self.end_failed(run, step, &msg, "unknown", None, em)
                    .await?;
                return Ok(StepEnd::TurnOver);
            }
        };
        let specs = self.tools.specs(agent);
        let system = super::prompt::system_prompt(
            agent,
            &turn.session_key,
            &model.reference.to_string(),
            &self.tools.names(agent),
        );
        em.chat(ChatState::Status {
            phase: "starting_model".into(),
        });
        em.agent(
            "lifecycle",
            json!({"phase": "model", "provider": model.reference.provider, "model": model.reference.model}),
        );
        em.changed("model");
        let request = CallRequest {
            model: &model.config.id,
            max_tokens: model.config.max_tokens,
            system: &system,
            messages: &transcript,
            tools: &specs,
        };
        let mut text = String::new();
        let item = step.index;
        let result = {
            let mut on_event = |e: StreamEvent| match e {
                StreamEvent::TextDelta(d) => {
                    text.push_str(&d);
                    em.delta(&d, &text, item);
                }
                StreamEvent::Retrying {
                    attempt,
                    max_retries,
                    delay_ms,
                    reason,
                } => em.agent(
                    "run_status",
                    json!({
                        "phase": "starting_model", "reason": "provider_retry",
                        "attempt": attempt, "maxAttempts": max_retries + 1,
                        "retryAttempt": attempt, "maxRetries": max_retries,
                        "delayMs": delay_ms, "message": reason,
                    }),
                ),
                StreamEvent::Usage(u) => em.agent("usage", json!({"outputTokens": u.output})),
                StreamEvent::ToolCallStarted { .. } => {}
            };
            let mut abort = self.abort.subscribe();
            tokio::select! {
                r = model.provider.stream(&request, &mut on_event) => Called::Answered(r),
                _ = cancel.notified() => Called::Cancelled,
                _ = abort.wait_for(|a| *a) => Called::Aborted,
            }
        };
        let answer = match result {
            Called::Aborted => {
                self.interrupted(
                    run,
                    em,
                    "interrupted: the gateway stopped mid-stream; the model call is issued again",
                )
                .await?;
                return Ok(StepEnd::Released);
            }
            Called::Cancelled => {
                self.end_cancelled(run, Some(step.index), em).await?;
                return Ok(StepEnd::TurnOver);
            }
            Called::Answered(Err(e)) => {
                self.end_model_error(run, step, &e, &model.reference, em)
                    .await?;
                return Ok(StepEnd::TurnOver);
            }
            Called::Answered(Ok(a)) => a,
        };
        let message = Message::Assistant(answer.clone());
        let (rid, index, boot, seq) = (run.clone(), step.index, self.boot, em.seq());
        let (stored, progress) = self
            .store
            .call(move |s| s.finish_model_step(&rid, index, boot, &message, seq))
            .await?;
        em.message(&stored);
        match progress {
            TurnProgress::Continues => Ok(StepEnd::Continue),
            TurnProgress::Finished => {
                self.end_answered(run, answer, em).await;
                Ok(StepEnd::TurnOver)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn tool_step(
        self: &Arc<Self>,
        run: &RunId,
        agent: &AgentProfile,
        session_key: &str,
        step: &StepRecord,
        (call_id, name, args): (&String, &String, &Value),
        cancel: &Notify,
        em: &mut Emitter,
    ) -> Result<StepEnd, StoreError> {
        let started = now_ms();
        let title = match args.get("command").and_then(Value::as_str) {
            Some(c) => format!("{} {}", capitalize(name), first_line(c, 80)),
            None => capitalize(name),
        };
        em.agent(
            "item",
            json!({
                "itemId": format!("tool:{call_id}"), "toolCallId": call_id, "name": name,
                "kind": "tool", "phase": "start", "title": title, "status": "running",
                "startedAt": started, "attempt": step.attempts,
            }),
        );
        em.agent(
            "tool",
            json!({"phase": "start", "name": name, "toolCallId": call_id, "args": args}),
        );
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
        let mut env = vec![
            ("MOLT_RUN_ID", run.0.clone()),
            ("MOLT_STEP_INDEX", step.index.to_string()),
            ("MOLT_STEP_ATTEMPT", step.attempts.to_string()),
            ("MOLT_EFFECT_KEY", step.effect_key.clone()),
            ("MOLT_TOOL_CALL_ID", call_id.clone()),
        ];
        if let Some(p) = &self.env.profile {
            env.push(("MOLT_PROFILE", p.clone()));
        }
        let ctx = ToolContext {
            host: self,
            agent,
            run_id: &run.0,
            session_key,
            effect_key: &step.effect_key,
            timeout: Duration::from_millis(agent.exec_timeout_ms),
            env,
            scrub: self.secret_env(),
            output: out_tx,
        };
        let end = match self.tools.get(agent, name) {
            Err(refused) => ToolEnd::Done(ToolOutput::error(refused)),
            Ok(tool) => {
                let mut abort = self.abort.subscribe();
                let stop = Box::pin(async move {
                    tokio::select! {
                        _ = cancel.notified() => Stop::Cancel,
                        _ = abort.wait_for(|a| *a) => Stop::Abort,
                    }
                });
                let fut = tool.run(&ctx, args, stop);
                tokio::pin!(fut);
                loop {
                    tokio::select! {
                        end = &mut fut => break end,
                        Some(chunk) = out_rx.recv() => output_delta(em, call_id, name, &chunk),
                    }
                }
            }
        };
        drop(ctx);
        while let Ok(chunk) = out_rx.try_recv() {
            output_delta(em, call_id, name, &chunk);
        }
        let ToolOutput {
            text,
            details,
            is_error,
            then,
        } = match end {
            ToolEnd::Stopped(Stop::Cancel) => {
                self.end_cancelled(run, Some(step.index), em).await?;
                return Ok(StepEnd::TurnOver);
            }
            ToolEnd::Stopped(Stop::Abort) => {
                self.interrupted(
                    run,
                    em,
                    "interrupted: the gateway stopped during a tool call; it runs again with its effect key",
                )
                .await?;
                return Ok(StepEnd::Released);
            }
            ToolEnd::Stopped(Stop::Yield) => {
                self.release(run, em, "waiting for approval: handed to the next process")
                    .await?;
                return Ok(StepEnd::Released);
            }
            ToolEnd::Done(out) => out,
        };
        let status = if is_error { "failed" } else { "completed" };
        em.agent(
            "command_output",
            json!({
                "itemId": format!("command:{call_id}"), "toolCallId": call_id, "name": name,
                "phase": "end", "status": status, "exitCode": details.get("exitCode"),
                "durationMs": details.get("durationMs"), "cwd": details.get("cwd"),
            }),
        );
        em.agent(
            "item",
            json!({
                "itemId": format!("tool:{call_id}"), "toolCallId": call_id, "name": name,
                "kind": "tool", "phase": "end", "title": title, "status": status,
                "startedAt": started, "endedAt": now_ms(),
            }),
        );
        em.agent(
            "tool",
            json!({
                "phase": "result", "name": name, "toolCallId": call_id, "isError": is_error,
                "result": {"content": [{"type": "text", "text": text}], "details": details},
            }),
        );
        let result = Message::ToolResult(ToolResultMessage {
            tool_call_id: call_id.clone(),
            tool_name: name.clone(),
            content: vec![TextBlock { text }],
            details,
            is_error,
            timestamp: now_ms() as i64,
        });
        let (rid, index, boot, seq) = (run.clone(), step.index, self.boot, em.seq());
        self.store
            .call(move |s| s.finish_tool_step(&rid, index, boot, &result, seq))
            .await?;
        // Only now: a restart begun before the result was saved would interrupt this step,
        // which would run again and restart again.
        if then == Some(FollowUp::Handover) {
            self.request_handover(run);
        }
        Ok(StepEnd::Continue)
    }

    /// Starts a handover restart on its own task; this turn goes on, and is handed over with
    /// everything else in flight.
    fn request_handover(&self, run: &RunId) {
        let Some(c) = self.control.get() else {
            tracing::warn!(run = %run, "restart asked for before the gateway was ready; ignored");
            return;
        };
        let handover = c.handover.clone();
        let run = run.clone();
        tokio::spawn(async move {
            let (outcome, _) = handover.request().await;
            match outcome {
                Ok(_) => tracing::info!(run = %run, "handover restart asked for by the agent done"),
                Err(e) => {
                    tracing::error!(run = %run, error = %e, "handover restart asked for by the agent failed; still serving")
                }
            }
        });
    }

    /// A step cut short by `abort`. For a successor, the turn is released now; on a stop it
    /// stays leased to this boot, and the next start re-queues it (the step runs again, its
    /// attempt counted), so the stop path commits nothing for it.
    async fn interrupted(&self, run: &RunId, em: &Emitter, why: &str) -> Result<(), StoreError> {
        if self
            .release_on_abort
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return self.release(run, em, why).await;
        }
        tracing::info!(run = %run, why, "turn left for the next start");
        Ok(())
    }

    /// Gives the turn back to the queue at this boundary; its next holder resumes it.
    async fn release(&self, run: &RunId, em: &Emitter, why: &str) -> Result<(), StoreError> {
        let (rid, boot, seq, why_s) = (run.clone(), self.boot, em.seq(), why.to_owned());
        self.store
            .call(move |s| -> Result<(), StoreError> {
                s.note_event_seq(&rid, seq)?;
                s.release_run(&rid, boot, &why_s)
            })
            .await?;
        tracing::info!(run = %run, why, "turn released");
        Ok(())
    }

    async fn end_answered(&self, run: &RunId, answer: AssistantMessage, em: &mut Emitter) {
        let rid = run.0.clone();
        let total = self
            .store
            .call(move |s| s.turn(&rid))
            .await
            .ok()
            .flatten()
            .map(|t| t.usage);
        let stop = answer.stop_reason.as_str().to_owned();
        let text = answer.text();
        em.agent(
            "lifecycle",
            json!({
                "phase": "end", "endedAt": now_ms(), "stopReason": stop, "aborted": false,
                "livenessState": "settled", "executionSettled": true,
                "terminalReply": {"disposition": "visible", "text": text},
            }),
        );
        em.chat(ChatState::Final {
            message: Some(Box::new(answer)),
            usage: total,
            stop_reason: Some(stop),
        });
        em.changed("end");
        let _ = self.ended.send(run.0.clone());
    }

    async fn end_model_error(
        &self,
        run: &RunId,
        step: &StepRecord,
        e: &ModelError,
        model: &molt_config::ModelRef,
        em: &mut Emitter,
    ) -> Result<(), StoreError> {
        let kind = e.kind.error_kind();
        let message = match e.kind {
            molt_model::ModelErrorKind::ContextLength => format!(
                "Context overflow: the conversation is too long for {model}. Start a new \
                 session (/new) or reset this one (/reset). ({})",
                e.message
            ),
            _ => format!("The model call failed: {}", e.message),
        };
        let detail = json!({
            "provider": model.provider, "model": model.model,
            "httpStatus": e.http_status,
            "failoverReason": if kind == "context_length" { "context_overflow" } else { kind },
        });
        self.end_failed(run, step, &message, kind, Some(detail), em)
            .await
    }

    /// Ends the turn with an error at `step`: recorded, then published as a `chat` error
    /// of `kind` (with the provider's `detail`, if any) and a `lifecycle` error.
    async fn end_failed(
        &self,
        run: &RunId,
        step: &StepRecord,
        message: &str,
        kind: &str,
        detail: Option<Value>,
        em: &mut Emitter,
    ) -> Result<(), StoreError> {
        tracing::warn!(run = %run, "{message}");
        self.record_failure(run, Some(step.index), message, kind, em)
            .await?;
        em.agent(
            "lifecycle",
            json!({"phase": "error", "error": message, "endedAt": now_ms()}),
        );
        em.chat(ChatState::Error {
            error_message: message.to_owned(),
            error_kind: kind.to_owned(),
            error_detail: detail,
        });
        em.changed("end");
        let _ = self.ended.send(run.0.clone());
        Ok(())
    }

    async fn record_failure(
        &self,
        run: &RunId,
        index: Option<u32>,
        message: &str,
        kind: &str,
        em: &mut Emitter,
    ) -> Result<(), StoreError> {
        let (rid, boot, seq, m, k) = (
            run.clone(),
            self.boot,
            em.seq() + 2,
            message.to_owned(),
            kind.to_owned(),
        );
        let moved = self
            .store
            .call(move |s| s.fail_turn(&rid, index, boot, false, &m, &k, seq))
            .await?;
        for m in &moved {
            em.message(m);
        }
        Ok(())
    }

    async fn end_cancelled(
        &self,
        run: &RunId,
        index: Option<u32>,
        em: &mut Emitter,
    ) -> Result<(), StoreError> {
        let (rid, boot, seq) = (run.clone(), self.boot, em.seq() + 2);
        let moved = self
            .store
            .call(move |s| s.fail_turn(&rid, index, boot, true, "aborted", "aborted", seq))
            .await?;
        for m in &moved {
            em.message(m);
        }
        em.agent(
            "lifecycle",
            json!({
                "phase": "end", "status": "cancelled", "aborted": true, "stopReason": "rpc",
                "endedAt": now_ms(),
            }),
        );
        em.chat(ChatState::Aborted {
            stop_reason: Some("rpc".into()),
        });
        em.changed("end");
        let _ = self.ended.send(run.0.clone());
        Ok(())
    }
}

/// A `command_output` delta: a piece of a tool's output as it runs.
fn output_delta(em: &mut Emitter, call_id: &str, name: &str, chunk: &str) {
    em.agent(
        "command_output",
        json!({
            "itemId": format!("command:{call_id}"), "toolCallId": call_id, "name": name,
            "phase": "delta", "output": chunk,
        }),
    );
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn first_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    line.chars().take(max).collect()
}
