//! `sessions.*`: list, describe, read, create, send, patch, reset, delete, abort, and the
//! subscriptions to `sessions.changed` and `session.message`.

use std::sync::Arc;

use molt_protocol::frame::ErrorShape;
use molt_protocol::methods::chat::{ChatSendResult, ModelDefaults, message_view};
use molt_protocol::methods::sessions::{
    Patch, SessionKeyParams, SessionRow, SessionsAbort, SessionsAbortParams, SessionsAbortResult,
    SessionsCreate, SessionsCreateParams, SessionsCreateResult, SessionsDelete,
    SessionsDeleteResult, SessionsDescribe, SessionsDescribeResult, SessionsGet, SessionsGetResult,
    SessionsList, SessionsListParams, SessionsListResult, SessionsMessagesSubscribe,
    SessionsMessagesUnsubscribe, SessionsPatch, SessionsPatchParams, SessionsPatchResult,
    SessionsReset, SessionsSend, SessionsSendParams, SessionsSubscribe, SubscribeResult,
};
use molt_store::{SessionRecord, StoreError};

use crate::agent::events::publish_message;
use crate::agent::{Agent, TurnRequest};
use crate::app::now_ms;
use crate::router::{Caller, Router};

/// `sessions.list` without a limit.
const LIST_DEFAULT: u32 = 100;

pub fn register(r: &mut Router, agent: &Arc<Agent>) {
    r.with(agent)
        .on::<SessionsList>(list)
        .on::<SessionsDescribe>(describe)
        .on::<SessionsGet>(get)
        .on::<SessionsCreate>(create)
        .on::<SessionsSend>(send)
        .on::<SessionsPatch>(patch)
        .on::<SessionsReset>(reset)
        .on::<SessionsDelete>(delete)
        .on::<SessionsAbort>(abort)
        .on::<SessionsSubscribe>(subscribe)
        .on::<SessionsMessagesSubscribe>(messages_subscribe)
        .on::<SessionsMessagesUnsubscribe>(messages_unsubscribe);
}

/// A store failure as a protocol error: unknown things are the caller's mistake.
pub(super) fn store_err(e: StoreError) -> ErrorShape {
    match e {
        StoreError::NoSuchSession(k) => ErrorShape::invalid(format!("no session {k:?}")),
        e => crate::store_handle::to_error_shape(e),
    }
}

/// 128 random bits as hex, for ids the client did not give (`what` names it in the error).
fn fresh_id(what: &str) -> Result<String, ErrorShape> {
    crate::fsutil::random_hex(16)
        .map_err(|e| ErrorShape::unavailable(format!("no randomness for {what}: {e}"), 1000))
}

/// The agent and full key a client's session key means: `agent:<id>:<rest>` as is; `main`
/// or a bare key under `agent_id` (or `main`). Unknown agents are refused.
pub(super) fn resolve_key(
    agent: &Agent,
    agent_id: Option<&str>,
    key: &str,
) -> Result<(String, String), ErrorShape> {
    let key = key.trim();
    if key.is_empty() || key.len() > 512 {
        return Err(ErrorShape::invalid("a session key is 1-512 characters"));
    }
    let (id, full) = match key.strip_prefix("agent:").and_then(|r| r.split_once(':')) {
        Some((id, rest)) if !id.is_empty() && !rest.is_empty() => (id.to_owned(), key.to_owned()),
        _ => {
            let id = agent_id.unwrap_or(molt_config::MAIN_AGENT).to_owned();
            let full = format!("agent:{id}:{key}");
            (id, full)
        }
    };
    if agent.profile(&id).is_none() {
        return Err(ErrorShape::invalid(format!(
            "unknown agent {id:?}: configure [agents.{id}] or use \"main\""
        )));
    }
    Ok((id, full))
}

/// The model a session of `agent_id` uses, with its override.
pub(super) fn defaults_for(agent: &Agent, agent_id: &str, model: Option<&str>) -> ModelDefaults {
    let profile = agent.profile(agent_id);
    match profile.as_ref().map(|p| agent.model_for(p, model)) {
        Some(Ok(m)) => ModelDefaults {
            model_provider: Some(m.reference.provider),
            model: Some(m.reference.model),
            context_tokens: Some(m.config.context_window),
        },
        _ => ModelDefaults::default(),
    }
}

fn row(agent: &Agent, s: &SessionRecord, active: Vec<String>) -> SessionRow {
    let d = defaults_for(agent, &s.agent_id, s.model.as_deref());
    SessionRow {
        key: s.key.clone(),
        kind: "direct".into(),
        session_id: s.session_id.clone(),
        agent_id: s.agent_id.clone(),
        label: s.label.clone(),
        display_name: s.label.clone(),
        updated_at: s.updated_at_ms,
        model_provider: d.model_provider,
        model: d.model,
        input_tokens: s.input_tokens,
        output_tokens: s.output_tokens,
        total_tokens: s.total_tokens,
        context_tokens: d.context_tokens,
        last_run_id: s.last_run_id.clone(),
        status: Some(if active.is_empty() { "done" } else { "running" }.into()),
        has_active_run: !active.is_empty(),
        active_run_ids: active,
    }
}

async fn row_of(agent: &Agent, key: &str) -> Result<SessionRow, ErrorShape> {
    let k = key.to_owned();
    let (s, active) = agent
        .store
        .call(move |s| -> Result<_, StoreError> {
            let sess = s
                .session(&k)?
                .ok_or_else(|| StoreError::NoSuchSession(k.clone()))?;
            Ok((sess, s.active_turns(&k)?))
        })
        .await
        .map_err(store_err)?;
    Ok(row(agent, &s, active))
}

async fn list_sessions(
    agent: &Agent,
    p: SessionsListParams,
) -> Result<SessionsListResult, ErrorShape> {
    let limit = p.limit.unwrap_or(LIST_DEFAULT).clamp(1, 1000);
    let offset = p.offset.unwrap_or(0);
    let agent_id = p.agent_id.clone();
    let (rows, total) = agent
        .store
        .call(move |s| -> Result<_, StoreError> {
            let (list, total) = s.list_sessions(agent_id.as_deref(), limit, offset)?;
            let mut rows = Vec::with_capacity(list.len());
            for sess in list {
                let active = s.active_turns(&sess.key)?;
                rows.push((sess, active));
            }
            Ok((rows, total))
        })
        .await
        .map_err(store_err)?;
    let sessions: Vec<SessionRow> = rows.iter().map(|(s, a)| row(agent, s, a.clone())).collect();
    let next = offset + sessions.len() as u32;
    let has_more = u64::from(next) < total;
    Ok(SessionsListResult {
        ts: now_ms(),
        count: sessions.len() as u64,
        total_count: total,
        limit_applied: limit,
        next_offset: has_more.then_some(next),
        has_more,
        defaults: defaults_for(
            agent,
            p.agent_id.as_deref().unwrap_or(molt_config::MAIN_AGENT),
            None,
        ),
        sessions,
    })
}

async fn list(
    agent: Arc<Agent>,
    _: Caller,
    p: SessionsListParams,
) -> Result<SessionsListResult, ErrorShape> {
    list_sessions(&agent, p).await
}

async fn describe(
    agent: Arc<Agent>,
    _: Caller,
    p: SessionKeyParams,
) -> Result<SessionsDescribeResult, ErrorShape> {
    let (_, key) = resolve_key(&agent, p.agent_id.as_deref(), &p.key)?;
    Ok(SessionsDescribeResult {
        session: row_of(&agent, &key).await?,
    })
}

async fn get(
    agent: Arc<Agent>,
    _: Caller,
    p: SessionKeyParams,
) -> Result<SessionsGetResult, ErrorShape> {
    let (_, key) = resolve_key(&agent, p.agent_id.as_deref(), &p.key)?;
    let (messages, _, _) = agent
        .store
        .call(move |s| s.history(&key, u32::MAX - 1, None))
        .await
        .map_err(store_err)?;
    Ok(SessionsGetResult {
        messages: messages
            .iter()
            .map(|m| message_view(&m.message, m.id, m.seq, m.run_id.as_deref()))
            .collect(),
    })
}

async fn create(
    agent: Arc<Agent>,
    _: Caller,
    p: SessionsCreateParams,
) -> Result<SessionsCreateResult, ErrorShape> {
    let raw = match &p.key {
        Some(k) => k.clone(),
        None => format!("dashboard:{}", fresh_id("a session key")?),
    };
    let (agent_id, key) = resolve_key(&agent, p.agent_id.as_deref(), &raw)?;
    if let Some(m) = &p.model
        && molt_config::ModelRef::parse(m).is_none()
    {
        return Err(ErrorShape::invalid(format!(
            "model {m:?} must be provider/model"
        )));
    }
    let (k, a, label, model) = (
        key.clone(),
        agent_id.clone(),
        p.label.clone(),
        p.model.clone(),
    );
    agent
        .store
        .call(move |s| -> Result<_, StoreError> {
            s.ensure_session(&k, &a)?;
            if label.is_some() || model.is_some() {
                s.patch_session(&k, label.as_deref().map(Some), model.as_deref().map(Some))?;
            }
            Ok(())
        })
        .await
        .map_err(store_err)?;
    let mut run_id = None;
    if let Some(text) = p.message.filter(|m| !m.trim().is_empty()) {
        let id = match p.idempotency_key {
            Some(k) => k,
            None => fresh_id("a run id")?,
        };
        super::chat::submit(
            &agent,
            TurnRequest {
                run_id: id.clone(),
                session_key: key.clone(),
                agent_id: agent_id.clone(),
                text,
                mode: molt_store::QueueMode::Followup,
                origin: "sessions",
            },
        )
        .await?;
        run_id = Some(id);
    }
    let entry = row_of(&agent, &key).await?;
    Ok(SessionsCreateResult {
        ok: true,
        key,
        session_id: entry.session_id.clone(),
        entry,
        run_started: run_id.is_some(),
        run_id,
    })
}

async fn send(
    agent: Arc<Agent>,
    _: Caller,
    p: SessionsSendParams,
) -> Result<ChatSendResult, ErrorShape> {
    super::chat::need("message", &p.message)?;
    let (agent_id, key) = resolve_key(&agent, p.agent_id.as_deref(), &p.key)?;
    let run_id = match p.idempotency_key {
        Some(k) if !k.is_empty() => k,
        _ => fresh_id("a run id")?,
    };
    super::chat::submit(
        &agent,
        TurnRequest {
            run_id,
            session_key: key,
            agent_id,
            text: p.message,
            mode: molt_store::QueueMode::Steer,
            origin: "sessions",
        },
    )
    .await
}

fn patch_arg(p: &Patch<String>) -> Option<Option<&str>> {
    match p {
        Patch::Keep => None,
        Patch::Clear => Some(None),
        Patch::Set(v) => Some(Some(v.as_str())),
    }
}

async fn patch(
    agent: Arc<Agent>,
    _: Caller,
    p: SessionsPatchParams,
) -> Result<SessionsPatchResult, ErrorShape> {
    let (agent_id, key) = resolve_key(&agent, p.agent_id.as_deref(), &p.key)?;
    if let Patch::Set(m) = &p.model {
        let profile = agent.profile(&agent_id);
        if let Some(Err(e)) = profile.map(|pr| agent.model_for(&pr, Some(m))) {
            return Err(ErrorShape::invalid(e));
        }
        if molt_config::ModelRef::parse(m).is_none() {
            return Err(ErrorShape::invalid(format!(
                "model {m:?} must be provider/model"
            )));
        }
    }
    let (k, a) = (key.clone(), agent_id.clone());
    let (label, model) = (p.label.clone(), p.model.clone());
    agent
        .store
        .call(move |s| -> Result<_, StoreError> {
            s.ensure_session(&k, &a)?;
            s.patch_session(&k, patch_arg(&label), patch_arg(&model))
        })
        .await
        .map_err(store_err)?;
    patched(&agent, &key).await
}

async fn patched(agent: &Agent, key: &str) -> Result<SessionsPatchResult, ErrorShape> {
    let entry = row_of(agent, key).await?;
    Ok(SessionsPatchResult {
        ok: true,
        key: key.to_owned(),
        resolved: ModelDefaults {
            model_provider: entry.model_provider.clone(),
            model: entry.model.clone(),
            context_tokens: entry.context_tokens,
        },
        entry,
    })
}

async fn reset(
    agent: Arc<Agent>,
    _: Caller,
    p: SessionKeyParams,
) -> Result<SessionsPatchResult, ErrorShape> {
    let (agent_id, key) = resolve_key(&agent, p.agent_id.as_deref(), &p.key)?;
    agent.cancel(&key, None).await.map_err(store_err)?;
    let (k, a) = (key.clone(), agent_id.clone());
    let (_, marker) = agent
        .store
        .call(move |s| -> Result<_, StoreError> {
            s.ensure_session(&k, &a)?;
            s.reset_session(&k)
        })
        .await
        .map_err(store_err)?;
    publish_message(&agent.sink, &key, &agent_id, &marker);
    patched(&agent, &key).await
}

async fn delete(
    agent: Arc<Agent>,
    _: Caller,
    p: SessionKeyParams,
) -> Result<SessionsDeleteResult, ErrorShape> {
    let (_, key) = resolve_key(&agent, p.agent_id.as_deref(), &p.key)?;
    agent.cancel(&key, None).await.map_err(store_err)?;
    let k = key.clone();
    let deleted = agent
        .store
        .call(move |s| s.delete_session(&k))
        .await
        .map_err(store_err)?;
    Ok(SessionsDeleteResult {
        ok: true,
        key,
        deleted,
        archived: Vec::new(),
    })
}

async fn abort(
    agent: Arc<Agent>,
    _: Caller,
    p: SessionsAbortParams,
) -> Result<SessionsAbortResult, ErrorShape> {
    let key = match (&p.key, &p.run_id) {
        (Some(k), _) => resolve_key(&agent, p.agent_id.as_deref(), k)?.1,
        (None, Some(r)) => {
            let r = r.clone();
            agent
                .store
                .call(move |s| s.turn(&r))
                .await
                .map_err(store_err)?
                .map(|t| t.session_key)
                .ok_or_else(|| ErrorShape::invalid("no such run"))?
        }
        (None, None) => return Err(ErrorShape::invalid("give key or runId")),
    };
    let ids = agent
        .cancel(&key, p.run_id.as_deref())
        .await
        .map_err(store_err)?;
    Ok(SessionsAbortResult {
        ok: true,
        status: if ids.is_empty() { "idle" } else { "aborted" }.into(),
        aborted_run_id: ids.into_iter().next(),
    })
}

fn with_peer(agent: &Agent, caller: &Caller, f: impl FnOnce(&mut crate::app::Peer)) {
    let mut peers = agent.app.peers.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = peers.get_mut(&caller.conn_id) {
        f(p);
    }
}

async fn subscribe(
    agent: Arc<Agent>,
    caller: Caller,
    p: SessionsListParams,
) -> Result<SubscribeResult, ErrorShape> {
    with_peer(&agent, &caller, |peer| peer.sessions_changed = true);
    let asked = p != SessionsListParams::default();
    Ok(SubscribeResult {
        subscribed: true,
        key: None,
        list: if asked {
            Some(list_sessions(&agent, p).await?)
        } else {
            None
        },
    })
}

async fn messages_subscribe(
    agent: Arc<Agent>,
    caller: Caller,
    p: SessionKeyParams,
) -> Result<SubscribeResult, ErrorShape> {
    let (_, key) = resolve_key(&agent, p.agent_id.as_deref(), &p.key)?;
    let k = key.clone();
    with_peer(&agent, &caller, move |peer| {
        peer.message_keys.insert(k);
    });
    Ok(SubscribeResult {
        subscribed: true,
        key: Some(key),
        list: None,
    })
}

async fn messages_unsubscribe(
    agent: Arc<Agent>,
    caller: Caller,
    p: SessionKeyParams,
) -> Result<SubscribeResult, ErrorShape> {
    let (_, key) = resolve_key(&agent, p.agent_id.as_deref(), &p.key)?;
    let k = key.clone();
    with_peer(&agent, &caller, move |peer| {
        peer.message_keys.remove(&k);
    });
    Ok(SubscribeResult {
        subscribed: false,
        key: Some(key),
        list: None,
    })
}
