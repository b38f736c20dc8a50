//! `chat.*`, `agent` and `agent.wait`: messages into sessions, and their runs.

use std::sync::Arc;
use std::time::Duration;

use molt_protocol::frame::{ErrorShape, ResponseFrame};
use molt_protocol::methods::chat::{
    Agent as AgentMethod, AgentMeta, AgentParams, AgentResult, AgentWait, AgentWaitParams,
    AgentWaitResult, ChatAbort, ChatAbortParams, ChatAbortResult, ChatHistory, ChatHistoryParams,
    ChatHistoryResult, ChatInject, ChatInjectParams, ChatInjectResult, ChatSend, ChatSendParams,
    ChatSendResult, PendingInputs, QueueMode, ReplyPayload, RunMeta, RunOutput, SessionInfo,
    TerminalReply, message_view,
};
use molt_protocol::transcript::Message;
use molt_store::{RunState, Submitted, TurnRecord};

use super::sessions::{defaults_for, resolve_key, store_err};
use crate::agent::{Agent, TurnRequest};
use crate::app::{Outbound, now_ms};
use crate::router::{Caller, Router};

/// Default page of `chat.history`.
const HISTORY_DEFAULT: u32 = 200;
/// How long `agent` waits for its final answer when the caller gives no `timeout`.
const AGENT_DEFAULT_WAIT: Duration = Duration::from_secs(600);
/// `agent.wait`'s default, as OpenClaw's.
const WAIT_DEFAULT_MS: u64 = 30_000;

pub fn register(r: &mut Router, agent: &Arc<Agent>) {
    r.with(agent)
        .on::<ChatSend>(send)
        .on::<ChatHistory>(history)
        .on::<ChatAbort>(abort)
        .on::<ChatInject>(inject)
        .on::<AgentMethod>(run_agent)
        .on::<AgentWait>(wait);
}

pub(super) fn store_mode(m: Option<QueueMode>) -> molt_store::QueueMode {
    match m.unwrap_or_default() {
        QueueMode::Steer => molt_store::QueueMode::Steer,
        QueueMode::Followup | QueueMode::Collect => molt_store::QueueMode::Followup,
        QueueMode::Interrupt => molt_store::QueueMode::Interrupt,
    }
}

pub(super) fn need(field: &str, value: &str) -> Result<(), ErrorShape> {
    if value.trim().is_empty() {
        return Err(ErrorShape::invalid(format!("{field} must not be empty")));
    }
    Ok(())
}

/// What `chat.send` and `sessions.send` share: submit, and answer with the run's status.
pub(super) async fn submit(
    agent: &Arc<Agent>,
    req: TurnRequest,
) -> Result<ChatSendResult, ErrorShape> {
    let run_id = req.run_id.clone();
    let out = agent.submit(req).await.map_err(store_err)?;
    Ok(ChatSendResult {
        run_id,
        status: match out {
            Submitted::Queued | Submitted::Started(_) | Submitted::Steered { .. } => {
                "started".into()
            }
            Submitted::Duplicate(t) => wait_status(&t).into(),
        },
    })
}

async fn send(
    agent: Arc<Agent>,
    _: Caller,
    p: ChatSendParams,
) -> Result<ChatSendResult, ErrorShape> {
    need("message", &p.message)?;
    need("idempotencyKey", &p.idempotency_key)?;
    let (agent_id, key) = resolve_key(&agent, p.agent_id.as_deref(), &p.session_key)?;
    submit(
        &agent,
        TurnRequest {
            run_id: p.idempotency_key,
            session_key: key,
            agent_id,
            text: p.message,
            mode: store_mode(p.queue_mode),
            origin: "chat",
        },
    )
    .await
}

async fn history(
    agent: Arc<Agent>,
    _: Caller,
    p: ChatHistoryParams,
) -> Result<ChatHistoryResult, ErrorShape> {
    let (agent_id, key) = resolve_key(&agent, p.agent_id.as_deref(), &p.session_key)?;
    let limit = p.limit.unwrap_or(HISTORY_DEFAULT).clamp(1, 1000);
    let before = p.cursor.as_ref().and_then(|c| match c {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    });
    let k = key.clone();
    let a = agent_id.clone();
    let (session, (messages, has_more, total), active, waiting) = agent
        .store
        .call(move |s| -> Result<_, molt_store::StoreError> {
            let session = s.ensure_session(&k, &a)?;
            Ok((
                session,
                s.history(&k, limit, before)?,
                s.active_turns(&k)?,
                s.waiting_inputs(&k)?,
            ))
        })
        .await
        .map_err(store_err)?;
    let max = p.max_chars.unwrap_or(usize::MAX);
    let messages = messages
        .iter()
        .map(|m| {
            let mut v = message_view(&m.message, m.id, m.seq, m.run_id.as_deref());
            clip_text(&mut v, max);
            v
        })
        .collect();
    Ok(ChatHistoryResult {
        session_key: key.clone(),
        session_id: session.session_id.clone(),
        messages,
        pending_inputs: PendingInputs {
            total: waiting.len() as u64,
            items: waiting
                .into_iter()
                .map(|(run, text, at)| {
                    serde_json::json!({"runId": run, "text": text, "createdAt": at})
                })
                .collect(),
        },
        has_more,
        total_messages: total,
        defaults: defaults_for(&agent, &agent_id, session.model.as_deref()),
        session_info: SessionInfo {
            key,
            session_id: session.session_id,
            has_active_run: !active.is_empty(),
            active_run_ids: active,
            effective_queue_mode: "steer".into(),
        },
    })
}

/// Shortens long text fields of a history message to `max` characters.
fn clip_text(v: &mut serde_json::Value, max: usize) {
    if max == usize::MAX {
        return;
    }
    let clip = |t: &mut serde_json::Value| {
        if let Some(s) = t.as_str()
            && s.chars().count() > max
        {
            *t = serde_json::Value::from(format!("{}…", s.chars().take(max).collect::<String>()));
        }
    };
    match v.get_mut("content") {
        Some(serde_json::Value::Array(blocks)) => {
            for b in blocks {
                if let Some(t) = b.get_mut("text") {
                    clip(t);
                }
            }
        }
        Some(t) => clip(t),
        None => {}
    }
}

async fn abort(
    agent: Arc<Agent>,
    _: Caller,
    p: ChatAbortParams,
) -> Result<ChatAbortResult, ErrorShape> {
    let (_, key) = resolve_key(&agent, p.agent_id.as_deref(), &p.session_key)?;
    let ids = agent
        .cancel(&key, p.run_id.as_deref())
        .await
        .map_err(store_err)?;
    Ok(ChatAbortResult {
        ok: true,
        aborted: !ids.is_empty(),
        run_ids: ids,
    })
}

async fn inject(
    agent: Arc<Agent>,
    _: Caller,
    p: ChatInjectParams,
) -> Result<ChatInjectResult, ErrorShape> {
    need("message", &p.message)?;
    let (agent_id, key) = resolve_key(&agent, p.agent_id.as_deref(), &p.session_key)?;
    let text = match &p.label {
        Some(l) => format!("[{l}]\n\n{}", p.message),
        None => p.message.clone(),
    };
    let message = crate::agent::note_message(text);
    let (k, a, m) = (
        key.clone(),
        agent_id.clone(),
        Message::Assistant(message.clone()),
    );
    let stored = agent
        .store
        .call(move |s| -> Result<_, molt_store::StoreError> {
            s.ensure_session(&k, &a)?;
            s.append_message(&k, None, &m)
        })
        .await
        .map_err(store_err)?;
    let message_id = format!("msg_{}", stored.id);
    agent.announce(&key, &agent_id, &stored, message);
    Ok(ChatInjectResult {
        ok: true,
        message_id,
    })
}

/// `agent`: accepted now, the final answer later on the same request id.
async fn run_agent(
    agent: Arc<Agent>,
    caller: Caller,
    p: AgentParams,
) -> Result<AgentResult, ErrorShape> {
    need("message", &p.message)?;
    need("idempotencyKey", &p.idempotency_key)?;
    let key_in = p.session_key.clone().unwrap_or_else(|| "main".into());
    let (agent_id, key) = resolve_key(&agent, p.agent_id.as_deref(), &key_in)?;
    let run_id = p.idempotency_key.clone();
    agent
        .submit(TurnRequest {
            run_id: run_id.clone(),
            session_key: key.clone(),
            agent_id: agent_id.clone(),
            text: p.message,
            mode: molt_store::QueueMode::Followup,
            origin: "agent",
        })
        .await
        .map_err(store_err)?;
    let wait_for = p
        .timeout
        .filter(|t| *t > 0)
        .map(Duration::from_secs)
        .unwrap_or(AGENT_DEFAULT_WAIT);
    let answered = caller.after_answer();
    // Weak: a waiting final answer must not keep a closed connection's writer alive.
    let (out, request_id) = (caller.out.downgrade(), caller.request_id.clone());
    drop(caller);
    let (me, rid, started) = (agent.clone(), run_id.clone(), now_ms());
    tokio::spawn(async move {
        let ended = me.wait(&rid, wait_for).await;
        let result = match ended {
            Some(t) if t.state.is_terminal() => final_result(&me, &t, started).await,
            _ => AgentResult {
                run_id: rid.clone(),
                status: "timeout".into(),
                summary: Some("the run is still going; use agent.wait".into()),
                ..AgentResult::default()
            },
        };
        // The final answer must follow the accepted one on the wire.
        let _ = answered.await;
        if let (Ok(v), Some(out)) = (serde_json::to_value(result), out.upgrade()) {
            let frame = ResponseFrame::ok(request_id, v);
            let _ = out.send(Outbound::Text(frame.to_text())).await;
        }
    });
    Ok(AgentResult {
        run_id,
        status: "accepted".into(),
        session_key: Some(key),
        agent_id: Some(agent_id),
        accepted_at: Some(now_ms()),
        ..AgentResult::default()
    })
}

/// The final `agent` answer for a finished turn.
async fn final_result(agent: &Agent, t: &TurnRecord, started: u64) -> AgentResult {
    let k = t.session_key.clone();
    let session_id = agent
        .store
        .call(move |s| s.session(&k))
        .await
        .ok()
        .flatten()
        .map(|s| s.session_id)
        .unwrap_or_default();
    let (provider, model) = match t.model.as_deref().and_then(|m| m.split_once('/')) {
        Some((p, m)) => (Some(p.to_owned()), Some(m.to_owned())),
        None => (None, None),
    };
    let text = t.final_text.clone().unwrap_or_default();
    let aborted = t.state == RunState::Cancelled;
    AgentResult {
        run_id: t.run_id.clone(),
        status: wait_status(t).into(),
        summary: Some(
            match t.state {
                RunState::Succeeded => "completed",
                RunState::Cancelled => "aborted",
                _ => "failed",
            }
            .into(),
        ),
        result: (t.state == RunState::Succeeded).then(|| RunOutput {
            payloads: vec![ReplyPayload {
                text: text.clone(),
                media_url: None,
            }],
            meta: RunMeta {
                duration_ms: t
                    .finished_at_ms
                    .map(|f| (f - t.created_at_ms).max(0) as u64)
                    .unwrap_or_else(|| now_ms().saturating_sub(started)),
                agent_meta: AgentMeta {
                    session_id,
                    provider,
                    model,
                    usage: t.usage,
                },
                stop_reason: t.stop_reason.clone(),
                aborted,
                final_assistant_visible_text: Some(text),
            },
        }),
        stop_reason: if aborted {
            Some("rpc".into())
        } else {
            t.stop_reason.clone()
        },
        error: (t.state == RunState::Failed).then(|| t.error.clone().unwrap_or_default()),
        error_kind: t.error_kind.clone().filter(|_| t.state == RunState::Failed),
        ..AgentResult::default()
    }
}

/// A run's status as `agent.wait` and repeated keys report it. An abort reports `timeout`,
/// as OpenClaw does.
fn wait_status(t: &TurnRecord) -> &'static str {
    match t.state {
        RunState::Succeeded => "ok",
        RunState::Failed => "error",
        RunState::Cancelled | RunState::Queued | RunState::Running => "timeout",
    }
}

async fn wait(
    agent: Arc<Agent>,
    _: Caller,
    p: AgentWaitParams,
) -> Result<AgentWaitResult, ErrorShape> {
    let timeout = Duration::from_millis(
        p.timeout_ms
            .unwrap_or(WAIT_DEFAULT_MS)
            .min(24 * 3600 * 1000),
    );
    let Some(t) = agent.wait(&p.run_id, timeout).await else {
        return Ok(AgentWaitResult {
            run_id: p.run_id,
            status: "timeout".into(),
            ..AgentWaitResult::default()
        });
    };
    let done = t.state.is_terminal();
    Ok(AgentWaitResult {
        run_id: p.run_id,
        status: wait_status(&t).into(),
        ended_at: t.finished_at_ms,
        stop_reason: t.stop_reason.clone().filter(|_| done),
        error: t.error.clone().filter(|_| t.state == RunState::Failed),
        error_kind: t.error_kind.clone().filter(|_| t.state == RunState::Failed),
        terminal_reply: (t.state == RunState::Succeeded).then(|| TerminalReply {
            disposition: "visible".into(),
            text: t.final_text.clone().unwrap_or_default(),
        }),
    })
}
