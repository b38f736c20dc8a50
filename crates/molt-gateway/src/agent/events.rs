//! How a turn's events reach clients: `chat` and `agent` events numbered by one per-run `seq`,
//! `session.message` and `sessions.changed` to subscribers.
//!
//! While this process serves, events go straight to its connections. Once it hands over, its
//! clients are gone (they reconnect to the successor), so the events of a step it is still
//! finishing are written to the store's relay table in order, and the successor sends them on.

use std::sync::Arc;

use molt_protocol::methods::chat::{AgentEvent, AssistantSnapshot, ChatEvent, ChatState};
use molt_protocol::transcript::{Message, TextBlock};
use molt_store::StoredMessage;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::app::{App, Audience, Lifecycle, now_ms};

/// Where events go: this process's connections, or the relay for a successor.
pub struct Sink {
    app: Arc<App>,
    relay: mpsc::UnboundedSender<(String, Value)>,
    /// Relayed events not yet written; the drain waits for them.
    pending: Arc<watch::Sender<usize>>,
}

impl Sink {
    pub fn new(
        app: Arc<App>,
        relay: mpsc::UnboundedSender<(String, Value)>,
        pending: Arc<watch::Sender<usize>>,
    ) -> Self {
        Self {
            app,
            relay,
            pending,
        }
    }

    pub fn publish(&self, audience: Audience<'_>, event: &'static str, payload: Value) {
        match self.app.state() {
            Lifecycle::Starting | Lifecycle::Serving => {
                self.app.broadcast_to(audience, event, payload)
            }
            Lifecycle::HandingOver => {
                self.pending.send_modify(|n| *n += 1);
                if self
                    .relay
                    .send((relay_tag(audience, event), payload))
                    .is_err()
                {
                    self.pending.send_modify(|n| *n = n.saturating_sub(1));
                }
            }
            // A stopping gateway has no clients left to tell, and no successor.
            Lifecycle::Stopping => {}
        }
    }

    /// Sends an event the predecessor relayed (see [`relay_tag`]).
    pub fn replay(&self, tag: &str, payload: Value) {
        let Some((audience, event)) = tag.split_once('|') else {
            return;
        };
        let Some(event) = molt_protocol::methods::EVENTS.iter().find(|e| **e == event) else {
            return;
        };
        let audience = match audience {
            "all" => Audience::All,
            "tool" => Audience::ToolEvents,
            "changed" => Audience::SessionsChanged,
            "approvers" => Audience::Approvers,
            a => match a.strip_prefix("msgs:") {
                Some(k) => Audience::SessionMessages(k),
                None => return,
            },
        };
        self.app.broadcast_to(audience, event, payload);
    }
}

/// `<audience>|<event>`, as relayed events are stored.
fn relay_tag(audience: Audience<'_>, event: &str) -> String {
    let a = match audience {
        Audience::All => "all".to_owned(),
        Audience::ToolEvents => "tool".to_owned(),
        Audience::Approvers => "approvers".to_owned(),
        Audience::SessionsChanged => "changed".to_owned(),
        Audience::SessionMessages(k) => format!("msgs:{k}"),
    };
    format!("{a}|{event}")
}

/// The events of one run, numbered with one `seq`.
pub struct Emitter {
    sink: Arc<Sink>,
    pub run_id: String,
    pub session_key: String,
    pub agent_id: String,
    pub session_id: String,
    seq: u64,
}

impl Emitter {
    /// Continues numbering after `seq`, the last number the run used.
    pub fn new(
        sink: Arc<Sink>,
        run_id: &str,
        session_key: &str,
        agent_id: &str,
        session_id: &str,
        seq: u64,
    ) -> Self {
        Self {
            sink,
            run_id: run_id.to_owned(),
            session_key: session_key.to_owned(),
            agent_id: agent_id.to_owned(),
            session_id: session_id.to_owned(),
            seq,
        }
    }

    /// The last `seq` used.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn chat(&mut self, state: ChatState) {
        self.seq += 1;
        let e = ChatEvent {
            run_id: self.run_id.clone(),
            session_key: self.session_key.clone(),
            agent_id: Some(self.agent_id.clone()),
            seq: self.seq,
            state,
        };
        if let Ok(v) = serde_json::to_value(e) {
            self.sink.publish(Audience::All, "chat", v);
        }
    }

    /// A delta: the new text and the whole text so far.
    pub fn delta(&mut self, delta: &str, cumulative: &str, item: u32) {
        let ts = now_ms() as i64;
        self.chat(ChatState::Delta {
            delta_text: delta.to_owned(),
            message: AssistantSnapshot {
                role: "assistant".into(),
                content: vec![TextBlock {
                    text: cumulative.to_owned(),
                }],
                timestamp: ts,
            },
        });
        self.agent(
            "assistant",
            json!({
                "text": cumulative,
                "delta": delta,
                "itemId": format!("{}:{item}", self.run_id),
            }),
        );
    }

    /// An `agent` event on `stream`; `tool` goes only to clients that asked for tool events.
    pub fn agent(&mut self, stream: &str, mut data: Value) {
        self.seq += 1;
        if let Value::Object(o) = &mut data {
            o.insert("sessionKey".into(), json!(self.session_key));
            o.insert("sessionId".into(), json!(self.session_id));
            o.insert("agentId".into(), json!(self.agent_id));
        }
        let e = AgentEvent {
            run_id: self.run_id.clone(),
            seq: self.seq,
            stream: stream.to_owned(),
            ts: now_ms(),
            data,
        };
        let audience = if stream == "tool" {
            Audience::ToolEvents
        } else {
            Audience::All
        };
        if let Ok(v) = serde_json::to_value(e) {
            self.sink.publish(audience, "agent", v);
        }
    }

    /// `session.message` for a message that joined the transcript.
    pub fn message(&self, m: &StoredMessage) {
        publish_message(&self.sink, &self.session_key, &self.agent_id, m);
    }

    /// `sessions.changed` with a `phase` (`start`, `model`, `end`) or a `reason`.
    pub fn changed(&self, phase: &str) {
        self.sink.publish(
            Audience::SessionsChanged,
            "sessions.changed",
            json!({
                "sessionKey": self.session_key,
                "agentId": self.agent_id,
                "sessionId": self.session_id,
                "phase": phase,
                "runId": self.run_id,
                "ts": now_ms(),
            }),
        );
    }
}

/// `session.message` for `m` in `key`.
pub fn publish_message(sink: &Sink, key: &str, agent_id: &str, m: &StoredMessage) {
    // Tool results are not published, as OpenClaw does not; history has them.
    if matches!(m.message, Message::ToolResult(_)) {
        return;
    }
    let view =
        molt_protocol::methods::chat::message_view(&m.message, m.id, m.seq, m.run_id.as_deref());
    sink.publish(
        Audience::SessionMessages(key),
        "session.message",
        json!({
            "sessionKey": key,
            "agentId": agent_id,
            "message": view,
            "messageId": format!("msg_{}", m.id),
            "messageSeq": m.seq,
        }),
    );
}
