//! Sessions and transcripts, from the per-agent SQLite store (2026.7 and later) or from
//! `sessions.json` plus `<sessionId>.jsonl` files (older).
//!
//! A transcript is a list of events; only `message` events are conversation. Their
//! `message` objects have nearly molt's shapes already (molt took them from OpenClaw's
//! clients), so the conversion keeps order, ids and text, and drops only what molt has no
//! place for (thinking blocks, attachments), counting it for the report.

use std::path::{Path, PathBuf};

use molt_protocol::transcript::{
    AssistantMessage, ContentBlock, Cost, Message, StopReason, SystemMessage, TextBlock,
    ToolResultMessage, Usage, UserMessage,
};
use molt_store::ImportedSession;
use serde_json::Value;

use super::sqlite::{self, Db};
use crate::ImportError;

/// The newest per-agent schema this importer knows (OpenClaw 2026.9).
pub const AGENT_SCHEMA_MAX: i64 = 23;

/// One session as read from the source: what molt stores, and what the report says of it.
#[derive(Debug, Clone)]
pub struct SourceSession {
    pub session: ImportedSession,
    /// Parts of messages molt cannot keep (thinking blocks, attachments, unknown roles).
    pub dropped: Vec<String>,
    /// Where it came from, for the report.
    pub source: PathBuf,
}

/// What was found for one agent.
#[derive(Debug, Default)]
pub struct AgentSessions {
    pub sessions: Vec<SourceSession>,
    /// Things not imported, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// Reads agent `agent_id`'s sessions from `agent_dir` (`<state>/agents/<id>`), whichever
/// layout it has. Both present: the database wins and the files are reported.
pub fn read_agent(agent_dir: &Path, agent_id: &str) -> Result<AgentSessions, ImportError> {
    let db = agent_dir.join("agent").join("openclaw-agent.sqlite");
    let legacy = agent_dir.join("sessions").join("sessions.json");
    if db.exists() {
        let mut out = read_db(&db, agent_id)?;
        if legacy.exists() {
            out.skipped.push((
                legacy.display().to_string(),
                "superseded by the SQLite session store next to it".into(),
            ));
        }
        Ok(out)
    } else if legacy.exists() {
        read_files(&legacy, agent_id)
    } else {
        Ok(AgentSessions::default())
    }
}

fn read_db(path: &Path, agent_id: &str) -> Result<AgentSessions, ImportError> {
    let db = Db::open_copy(path)?;
    db.check_schema("agent", AGENT_SCHEMA_MAX)?;
    let rows = db.rows(
        "SELECT session_key, current_session_id, entry_json, label, display_name,
                created_at, updated_at, archived_at
         FROM session_nodes ORDER BY created_at, session_key",
        &[],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<i64>>(5)?,
                r.get::<_, Option<i64>>(6)?,
                r.get::<_, Option<i64>>(7)?,
            ))
        },
    )?;
    let mut out = AgentSessions::default();
    for (key, current, entry, label, display, created, updated, archived) in rows {
        if archived.is_some() {
            out.skipped.push((key, "archived in OpenClaw".into()));
            continue;
        }
        let Some(session_id) = current else {
            out.skipped.push((key, "has no transcript".into()));
            continue;
        };
        let entry: Value = entry
            .as_deref()
            .and_then(|e| serde_json::from_str(e).ok())
            .unwrap_or(Value::Null);
        let events = db.rows(
            "SELECT event_json, event_zstd FROM transcript_events
             WHERE session_id = ?1 ORDER BY seq",
            &[&session_id],
            |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, Option<Vec<u8>>>(1)?,
                ))
            },
        )?;
        let mut lines = Vec::with_capacity(events.len());
        for (text, packed) in events {
            let text = match (text, packed) {
                (Some(t), _) => t,
                (None, Some(z)) => sqlite::unzstd(&z).map_err(|e| {
                    ImportError::at(
                        path,
                        format!("a transcript event of session {key} does not decompress: {e}"),
                    )
                })?,
                (None, None) => continue,
            };
            lines.push(text);
        }
        let windows: i64 = db.one(
            "SELECT COUNT(*) FROM session_windows WHERE session_key = ?1 AND session_id != ?2",
            &[&key, &session_id],
        )?;
        if windows > 0 {
            out.skipped.push((
                key.clone(),
                format!(
                    "{windows} earlier transcript(s) (before a reset or compaction); the \
                     current one is imported"
                ),
            ));
        }
        let session = build(
            path,
            &key,
            agent_id,
            &session_id,
            &entry,
            label.or(display),
            created,
            updated,
            lines.iter().map(String::as_str),
        )?;
        out.sessions.push(session);
    }
    Ok(out)
}

fn read_files(index: &Path, agent_id: &str) -> Result<AgentSessions, ImportError> {
    let text = std::fs::read_to_string(index)
        .map_err(|e| ImportError::io(index, "cannot read the session index", &e))?;
    let entries: serde_json::Map<String, Value> = serde_json::from_str(&text)
        .map_err(|e| ImportError::at(index, format!("not a session index (JSON object): {e}")))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut out = AgentSessions::default();
    let mut ordered: Vec<_> = entries.into_iter().collect();
    ordered.sort_by_key(|(k, e)| (e.get("createdAt").and_then(Value::as_i64), k.clone()));
    for (key, entry) in ordered {
        let Some(session_id) = entry.get("sessionId").and_then(Value::as_str) else {
            out.skipped.push((key, "has no sessionId".into()));
            continue;
        };
        if session_id.contains('/') || session_id.contains("..") {
            out.skipped
                .push((key, format!("sessionId {session_id:?} is not a file name")));
            continue;
        }
        let file = dir.join(format!("{session_id}.jsonl"));
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                out.skipped
                    .push((key, format!("its transcript {} is missing", file.display())));
                continue;
            }
            Err(e) => return Err(ImportError::io(&file, "cannot read the transcript", &e)),
        };
        let label = entry
            .get("label")
            .or_else(|| entry.get("displayName"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let created = entry.get("createdAt").and_then(Value::as_i64);
        let updated = entry.get("updatedAt").and_then(Value::as_i64);
        let session = build(
            &file,
            &key,
            agent_id,
            session_id,
            &entry,
            label,
            created,
            updated,
            text.lines().filter(|l| !l.trim().is_empty()),
        )?;
        out.sessions.push(session);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn build<'a>(
    source: &Path,
    key: &str,
    agent_id: &str,
    session_id: &str,
    entry: &Value,
    label: Option<String>,
    created: Option<i64>,
    updated: Option<i64>,
    lines: impl Iterator<Item = &'a str>,
) -> Result<SourceSession, ImportError> {
    let mut messages = Vec::new();
    let mut dropped = Vec::new();
    for (n, line) in lines.enumerate() {
        let event: Value = serde_json::from_str(line).map_err(|e| {
            ImportError::at(
                source,
                format!("event {} of session {key} is not JSON: {e}", n + 1),
            )
        })?;
        if event.get("type").and_then(Value::as_str) != Some("message") {
            continue;
        }
        let fallback = event
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(|t| molt_cron::parse_at(t, "UTC").ok())
            .unwrap_or(0);
        match event
            .get("message")
            .map(|m| convert(m, fallback, &mut dropped))
        {
            Some(Some(m)) => messages.push(m),
            _ => dropped.push(format!("event {} (not a message molt knows)", n + 1)),
        }
    }
    // Session key `agent:<id>:...` names the agent; the directory it was found in agrees.
    let model = match (
        entry.get("modelProvider").and_then(Value::as_str),
        entry.get("modelOverride").and_then(Value::as_str),
    ) {
        (Some(p), Some(m)) => Some(format!("{p}/{m}")),
        _ => None,
    };
    let first = messages.first().map(Message::timestamp);
    let last = messages.last().map(Message::timestamp);
    let created_at_ms = created.or(first).unwrap_or(0);
    Ok(SourceSession {
        session: ImportedSession {
            key: key.to_owned(),
            agent_id: agent_id.to_owned(),
            session_id: session_id.to_owned(),
            label,
            model,
            created_at_ms,
            updated_at_ms: updated.or(last).unwrap_or(created_at_ms),
            messages,
        },
        dropped,
        source: source.to_owned(),
    })
}

fn text_of(v: &Value) -> Option<String> {
    v.get("text").and_then(Value::as_str).map(str::to_owned)
}

/// One `message` object into molt's shape; `None` for a role molt has no place for.
fn convert(m: &Value, fallback_ts: i64, dropped: &mut Vec<String>) -> Option<Message> {
    let timestamp = m
        .get("timestamp")
        .and_then(Value::as_i64)
        .unwrap_or(fallback_ts);
    match m.get("role")?.as_str()? {
        "user" => {
            let content = match m.get("content")? {
                Value::String(s) => s.clone(),
                Value::Array(parts) => {
                    let mut out = Vec::new();
                    for p in parts {
                        match p.get("type").and_then(Value::as_str) {
                            Some("text") => out.extend(text_of(p)),
                            other => {
                                dropped.push(format!(
                                    "a {} attachment of a user message",
                                    other.unwrap_or("untyped")
                                ));
                                out.push("[attachment not imported]".into());
                            }
                        }
                    }
                    out.join("\n")
                }
                _ => return None,
            };
            Some(Message::User(UserMessage {
                content,
                timestamp,
                idempotency_key: m
                    .get("idempotencyKey")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            }))
        }
        "assistant" => {
            let mut content = Vec::new();
            match m.get("content") {
                Some(Value::String(s)) => content.push(ContentBlock::Text { text: s.clone() }),
                Some(Value::Array(parts)) => {
                    for p in parts {
                        match p.get("type").and_then(Value::as_str) {
                            Some("text") => content.push(ContentBlock::Text {
                                text: text_of(p).unwrap_or_default(),
                            }),
                            Some("toolCall") => content.push(ContentBlock::ToolCall {
                                id: p.get("id")?.as_str()?.to_owned(),
                                name: p.get("name")?.as_str()?.to_owned(),
                                arguments: p.get("arguments").cloned().unwrap_or(Value::Null),
                            }),
                            other => dropped.push(format!(
                                "a {} block of an assistant message",
                                other.unwrap_or("untyped")
                            )),
                        }
                    }
                }
                _ => {}
            }
            let u = m.get("usage").cloned().unwrap_or(Value::Null);
            let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
            let c = u.get("cost").cloned().unwrap_or(Value::Null);
            let f = |k: &str| c.get(k).and_then(Value::as_f64).unwrap_or(0.0);
            let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            Some(Message::Assistant(AssistantMessage {
                content,
                api: s("api"),
                provider: s("provider"),
                model: s("model"),
                usage: Usage {
                    input: n("input"),
                    output: n("output"),
                    cache_read: n("cacheRead"),
                    cache_write: n("cacheWrite"),
                    total_tokens: n("totalTokens"),
                    cost: Cost {
                        input: f("input"),
                        output: f("output"),
                        cache_read: f("cacheRead"),
                        cache_write: f("cacheWrite"),
                        total: f("total"),
                    },
                },
                stop_reason: match m.get("stopReason").and_then(Value::as_str) {
                    Some("toolUse") => StopReason::ToolUse,
                    Some("length") => StopReason::Length,
                    Some("error") => StopReason::Error,
                    Some("aborted") => StopReason::Aborted,
                    _ => StopReason::Stop,
                },
                timestamp,
                response_id: m
                    .get("responseId")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            }))
        }
        "toolResult" => {
            let content = match m.get("content") {
                Some(Value::String(s)) => vec![TextBlock { text: s.clone() }],
                Some(Value::Array(parts)) => parts
                    .iter()
                    .map(|p| TextBlock {
                        text: text_of(p).unwrap_or_else(|| "[non-text output not imported]".into()),
                    })
                    .collect(),
                _ => Vec::new(),
            };
            Some(Message::ToolResult(ToolResultMessage {
                tool_call_id: m.get("toolCallId")?.as_str()?.to_owned(),
                tool_name: m
                    .get("toolName")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                content,
                details: m.get("details").cloned().unwrap_or(Value::Null),
                is_error: m.get("isError").and_then(Value::as_bool).unwrap_or(false),
                timestamp,
            }))
        }
        "system" => Some(Message::System(SystemMessage {
            content: match m.get("content") {
                Some(Value::String(s)) => vec![TextBlock { text: s.clone() }],
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(text_of)
                    .map(|text| TextBlock { text })
                    .collect(),
                _ => Vec::new(),
            },
            timestamp,
            kind: m
                .pointer("/__openclaw/kind")
                .and_then(Value::as_str)
                .unwrap_or("event")
                .to_owned(),
        })),
        other => {
            dropped.push(format!("a {other} message"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_keep_their_shape_and_unknown_parts_are_counted() {
        let mut dropped = Vec::new();
        let a = convert(
            &json!({"role":"assistant","content":[{"type":"thinking","thinking":"hm"},
                {"type":"text","text":"hi"},{"type":"toolCall","id":"c1","name":"exec",
                "arguments":{"command":"ls"}}],"api":"openai-completions","provider":"p",
                "model":"m","usage":{"input":3,"output":2,"totalTokens":5},
                "stopReason":"toolUse","timestamp":7}),
            0,
            &mut dropped,
        )
        .unwrap();
        let a = a.as_assistant().unwrap();
        assert_eq!(a.text(), "hi");
        assert_eq!(a.tool_calls().count(), 1);
        assert_eq!(
            (a.usage.total_tokens, a.stop_reason),
            (5, StopReason::ToolUse)
        );
        assert_eq!(dropped.len(), 1, "{dropped:?}");
        let u = convert(
            &json!({"role":"user","content":[{"type":"text","text":"see"},{"type":"image"}]}),
            42,
            &mut dropped,
        )
        .unwrap();
        assert!(
            matches!(&u, Message::User(m) if m.content.starts_with("see\n") && m.timestamp == 42)
        );
        assert!(convert(&json!({"role":"bashExecution"}), 0, &mut dropped).is_none());
    }
}
