//! `molt sessions list|history|reset|delete`, and how a transcript message reads as a line
//! (`molt chat`'s `/history` shows them the same way).

use clap::Subcommand;
use molt_client::profile::{Access, with_client};
use molt_config::Context;
use molt_protocol::methods::chat::{ChatHistory, ChatHistoryParams};
use molt_protocol::methods::sessions::{
    SessionKeyParams, SessionRow, SessionsDelete, SessionsList, SessionsListParams, SessionsReset,
};
use serde_json::Value;

use crate::output::{Failure, print_json};

#[derive(Subcommand, Debug)]
pub enum SessionsCommand {
    /// List sessions: key, agent, last update, tokens used, whether a turn is running.
    List {
        /// Only this agent's sessions.
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show the last messages of a session, oldest first.
    History {
        /// The session key (`agent:main:main`; a bare key belongs to the default agent).
        key: String,
        /// How many messages.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Start the session afresh; the old transcript is kept.
    Reset {
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Abort the session's turns, then delete it and its transcripts.
    Delete {
        key: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn exec(ctx: &Context, access: &Access, cmd: &SessionsCommand) -> Result<(), Failure> {
    match cmd {
        SessionsCommand::List {
            agent,
            json: as_json,
        } => {
            let p = SessionsListParams {
                agent_id: agent.clone(),
                ..Default::default()
            };
            let r = with_client(ctx, access, async |c| {
                Ok::<_, Failure>(c.request::<SessionsList>(&p).await?)
            })?;
            if *as_json {
                print_json(&r);
                return Ok(());
            }
            if r.sessions.is_empty() {
                println!("no sessions");
            }
            for line in session_table(&r.sessions, now_ms()) {
                println!("{line}");
            }
            if r.has_more {
                println!("({} of {} shown)", r.sessions.len(), r.total_count);
            }
        }
        SessionsCommand::History {
            key,
            limit,
            json: as_json,
        } => {
            let p = ChatHistoryParams {
                session_key: key.clone(),
                limit: Some(*limit),
                ..Default::default()
            };
            let r = with_client(ctx, access, async |c| {
                Ok::<_, Failure>(c.request::<ChatHistory>(&p).await?)
            })?;
            if *as_json {
                print_json(&r);
                return Ok(());
            }
            if r.has_more {
                let earlier = r.total_messages.saturating_sub(r.messages.len() as u64);
                println!("({earlier} earlier messages; see more with --limit)");
            }
            if r.messages.is_empty() {
                println!("no messages in {}", r.session_key);
            }
            for m in &r.messages {
                for line in message_lines(m) {
                    println!("{line}");
                }
            }
        }
        SessionsCommand::Reset { key, json: as_json } => {
            let p = SessionKeyParams {
                key: key.clone(),
                agent_id: None,
            };
            let r = with_client(ctx, access, async |c| {
                Ok::<_, Failure>(c.request::<SessionsReset>(&p).await?)
            })?;
            if *as_json {
                print_json(&r);
            } else {
                println!("reset {}", r.key);
            }
        }
        SessionsCommand::Delete { key, json: as_json } => {
            let p = SessionKeyParams {
                key: key.clone(),
                agent_id: None,
            };
            let r = with_client(ctx, access, async |c| {
                Ok::<_, Failure>(c.request::<SessionsDelete>(&p).await?)
            })?;
            if *as_json {
                print_json(&r);
            } else if r.deleted {
                println!("deleted {}", r.key);
            } else {
                return Err(Failure::failed(format!(
                    "no session {key}; `molt sessions list` shows the keys"
                )));
            }
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The session list as aligned lines under a header.
fn session_table(rows: &[SessionRow], now_ms: i64) -> Vec<String> {
    if rows.is_empty() {
        return Vec::new();
    }
    let key_w = rows.iter().map(|r| r.key.len()).max().unwrap_or(0).max(3);
    let agent_w = rows
        .iter()
        .map(|r| r.agent_id.len())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut lines = vec![format!(
        "{:<key_w$}  {:<agent_w$}  {:<8}  {:>8}  ACTIVE",
        "KEY", "AGENT", "UPDATED", "TOKENS"
    )];
    for r in rows {
        lines.push(format!(
            "{:<key_w$}  {:<agent_w$}  {:<8}  {:>8}  {}",
            r.key,
            r.agent_id,
            ago(r.updated_at, now_ms),
            r.total_tokens,
            if r.has_active_run { "yes" } else { "-" }
        ));
    }
    lines
}

/// `12s ago`, `5m ago`, `3h ago`, `2d ago`; `-` for no time.
fn ago(then_ms: i64, now_ms: i64) -> String {
    if then_ms <= 0 {
        return "-".into();
    }
    let s = (now_ms - then_ms).max(0) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// One transcript message (as `chat.history` gives it) as `role: text` lines: an assistant's
/// tool calls as `assistant: [tool exec: <command>]`, a tool result as `tool(exec): <its first
/// line>`.
pub(super) fn message_lines(m: &Value) -> Vec<String> {
    let role = m.get("role").and_then(Value::as_str).unwrap_or("?");
    let content = m.get("content").unwrap_or(&Value::Null);
    match role {
        "assistant" => {
            let mut lines = Vec::new();
            let mut text = String::new();
            let blocks = match content {
                Value::String(s) => {
                    text.push_str(s);
                    &[][..]
                }
                Value::Array(a) => a.as_slice(),
                _ => &[][..],
            };
            for b in blocks {
                match b.get("type").and_then(Value::as_str) {
                    Some("toolCall") => {
                        if !text.is_empty() {
                            lines.push(format!("assistant: {}", std::mem::take(&mut text)));
                        }
                        let name = b.get("name").and_then(Value::as_str).unwrap_or("?");
                        let args = b.get("arguments").unwrap_or(&Value::Null);
                        lines.push(format!(
                            "assistant: [tool {name}: {}]",
                            tool_call_summary(name, args)
                        ));
                    }
                    _ => {
                        if let Some(t) = b.get("text").and_then(Value::as_str) {
                            text.push_str(t);
                        }
                    }
                }
            }
            if !text.is_empty() || lines.is_empty() {
                lines.push(format!("assistant: {text}"));
            }
            lines
        }
        "toolResult" => {
            let name = m.get("toolName").and_then(Value::as_str).unwrap_or("?");
            let text = text_of(content);
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            let first = if first.is_empty() {
                "(no output)"
            } else {
                first
            };
            vec![format!("tool({name}): {}", clip(first, 200))]
        }
        other => vec![format!("{other}: {}", text_of(content))],
    }
}

/// A message's text: a string, or the text blocks of a list.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// What a tool call does, in a few words: `exec`'s command line, else its arguments.
fn tool_call_summary(name: &str, args: &Value) -> String {
    if name == "exec" {
        if let Some(cmd) = args.get("command").and_then(Value::as_str) {
            return clip(cmd.lines().next().unwrap_or(""), 200);
        }
    }
    let text = match args {
        Value::Object(o) if o.is_empty() => String::new(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    clip(&text, 120)
}

/// `s` cut to `max` characters, with `…` when cut.
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_read_as_role_and_text() {
        let user = json!({"role": "user", "content": "hi there", "timestamp": 1});
        assert_eq!(message_lines(&user), ["user: hi there"]);
        let assistant = json!({"role": "assistant", "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "toolCall", "id": "c1", "name": "exec", "arguments": {"command": "ls -la\necho x"}}
        ], "__openclaw": {"id": "msg_2", "seq": 2}});
        assert_eq!(
            message_lines(&assistant),
            ["assistant: Let me look.", "assistant: [tool exec: ls -la]"]
        );
        let result = json!({"role": "toolResult", "toolCallId": "c1", "toolName": "exec",
            "content": [{"type": "text", "text": "\ntotal 0\nfile"}], "isError": false});
        assert_eq!(message_lines(&result), ["tool(exec): total 0"]);
        let empty = json!({"role": "toolResult", "toolName": "exec", "content": []});
        assert_eq!(message_lines(&empty), ["tool(exec): (no output)"]);
        let reset = json!({"role": "system", "content": [{"type": "text", "text": "Reset"}],
            "__openclaw": {"kind": "reset"}});
        assert_eq!(message_lines(&reset), ["system: Reset"]);
    }

    #[test]
    fn other_tools_show_their_arguments_clipped() {
        let a = json!({"role": "assistant", "content": [
            {"type": "toolCall", "id": "c", "name": "read", "arguments": {"path": "a.txt"}}
        ]});
        assert_eq!(
            message_lines(&a),
            [r#"assistant: [tool read: {"path":"a.txt"}]"#]
        );
        assert_eq!(clip("héllo", 2), "hé…");
        assert_eq!(clip("hé", 2), "hé");
    }

    #[test]
    fn the_session_table_aligns_its_columns() {
        let row = |key: &str, updated: i64, tokens: u64, active: bool| SessionRow {
            key: key.into(),
            agent_id: "main".into(),
            updated_at: updated,
            total_tokens: tokens,
            has_active_run: active,
            ..Default::default()
        };
        let now = 10_000_000;
        let lines = session_table(
            &[
                row("agent:main:main", now - 5_000, 1234, true),
                row("agent:main:cli-1", now - 7_200_000, 0, false),
            ],
            now,
        );
        assert_eq!(
            lines,
            [
                "KEY               AGENT  UPDATED     TOKENS  ACTIVE",
                "agent:main:main   main   5s ago        1234  yes",
                "agent:main:cli-1  main   2h ago           0  -",
            ]
        );
    }

    #[test]
    fn ages_are_relative() {
        assert_eq!(ago(0, 5), "-");
        assert_eq!(ago(1_000, 500), "0s ago");
        assert_eq!(ago(1, 1 + 90_000), "1m ago");
        assert_eq!(ago(1, 1 + 3 * 86_400_000), "3d ago");
    }
}
