//! `molt agent -m TEXT`: one turn, its reply on stdout. Also what `molt chat` shares with it:
//! a connection that outlives a gateway handover ([`Link`]) and following a run to its end
//! ([`follow`]).
//!
//! A turn is sent with `chat.send` and an idempotency key of our own, which is also its run
//! id. The run's `chat` events show its reply; when the connection goes (a handover closes
//! it with 1012), a new one reaches the successor, which carries on with the same run, and
//! `agent.wait` tells whether the run ended while no connection was listening.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::Args;
use molt_client::profile::{Access, client_failure, client_options, runtime};
use molt_client::{Client, ClientError, ClientOptions};
use molt_config::Context;
use molt_protocol::method::Method;
use molt_protocol::methods::chat::{
    AgentWait, AgentWaitParams, AgentWaitResult, ChatAbort, ChatAbortParams, ChatEvent, ChatSend,
    ChatSendParams, ChatState, QueueMode,
};
use serde::Serialize;
use serde_json::Value;
use tokio::signal::unix::Signal;

use crate::output::{Failure, print_json};

/// How long a lost connection is retried before the command gives up.
const RECONNECT_FOR: Duration = Duration::from_secs(30);
/// After this long without an event of the run, ask the gateway whether it ended.
const QUIET_CHECK: Duration = Duration::from_secs(15);
/// How long one `agent.wait` check waits: a look, not a wait.
const WAIT_CHECK_MS: u64 = 200;

#[derive(Args, Debug)]
#[command(
    after_help = "With --json, prints one object: {\"runId\", \"status\", \"text\", \
    \"sessionKey\", \"errorKind\"?, \"error\"?}. status is ok, error, aborted or timeout \
    (no end within --timeout; the turn goes on in the gateway). Exit 0 only for ok."
)]
pub struct AgentArgs {
    /// The message to send.
    #[arg(short, long)]
    message: String,
    /// The agent to talk to (default: main).
    #[arg(long)]
    agent: Option<String>,
    /// The session to talk in (default: agent:<agent>:main).
    #[arg(long)]
    session_key: Option<String>,
    /// Print the outcome as one JSON object (see below).
    #[arg(long)]
    json: bool,
    /// Seconds to wait for the reply. The turn itself is not limited by it.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

pub fn exec(ctx: &Context, access: &Access, args: &AgentArgs) -> Result<(), Failure> {
    if args.message.trim().is_empty() {
        return Err(Failure::config("-m needs a message to send"));
    }
    let session_key = args
        .session_key
        .clone()
        .unwrap_or_else(|| default_session_key(args.agent.as_deref()));
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    // Live text only for a person watching; a pipe gets the reply once, whole.
    let live = !args.json && std::io::stdout().is_terminal();
    let outcome = runtime()?.block_on(async {
        let mut link = Link::open(ctx, access).await?;
        let result = async {
            let turn = send_turn(
                &mut link,
                &session_key,
                args.agent.as_deref(),
                &args.message,
                deadline,
            )
            .await?;
            follow(&mut link, &turn, live, deadline, &mut None).await
        }
        .await;
        link.close().await;
        result
    })?;
    if args.json {
        print_json(&outcome);
    } else if !live && !outcome.text.is_empty() {
        println!("{}", outcome.text);
    }
    match outcome.status {
        TurnStatus::Ok => Ok(()),
        _ => Err(Failure::failed(outcome.problem(args.timeout))),
    }
}

/// `agent:<agent>:main`, the session a turn without `--session-key` goes to.
pub(super) fn default_session_key(agent: Option<&str>) -> String {
    format!("agent:{}:main", agent.unwrap_or("main"))
}

/// A fresh id for an idempotency key or a session name.
pub(super) fn new_id() -> Result<String, Failure> {
    molt_client::new_idempotency_key()
        .map_err(|e| Failure::failed(format!("cannot make a run id: {e}")))
}

/// A run this command started and follows.
pub(super) struct Turn {
    pub run_id: String,
    pub session_key: String,
    pub agent_id: Option<String>,
    /// The gateway said at once that the run already ended (a repeated key).
    pub already_ended: bool,
}

/// Sends `message` as a new turn. The idempotency key makes a resend after a lost connection
/// the same run. A session busy with another turn runs this one after it (`followup`), so
/// the reply that comes back is this message's.
pub(super) async fn send_turn(
    link: &mut Link<'_>,
    session_key: &str,
    agent: Option<&str>,
    message: &str,
    deadline: Instant,
) -> Result<Turn, Failure> {
    let params = ChatSendParams {
        session_key: session_key.to_owned(),
        message: message.to_owned(),
        idempotency_key: new_id()?,
        agent_id: agent.map(str::to_owned),
        queue_mode: Some(QueueMode::Followup),
        ..Default::default()
    };
    let r = link
        .call::<ChatSend>(&params, outage_deadline(deadline))
        .await?;
    Ok(Turn {
        already_ended: matches!(r.status.as_str(), "ok" | "error" | "timeout" | "aborted"),
        run_id: r.run_id,
        session_key: session_key.to_owned(),
        agent_id: agent.map(str::to_owned),
    })
}

/// How a followed run ended, as `molt agent --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TurnOutcome {
    pub run_id: String,
    pub status: TurnStatus,
    /// The reply: the text of the run's last assistant message.
    pub text: String,
    pub session_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum TurnStatus {
    Ok,
    Error,
    Aborted,
    /// The command stopped waiting; the run goes on.
    Timeout,
}

impl TurnOutcome {
    /// What went wrong and what to do next, for stderr.
    pub fn problem(&self, timeout_secs: u64) -> String {
        let key = &self.session_key;
        match self.status {
            TurnStatus::Ok => String::new(),
            TurnStatus::Error => {
                let what = self.error.as_deref().unwrap_or("the turn failed");
                let kind = self.error_kind.as_deref().unwrap_or("unknown");
                let next = match kind {
                    "context_length" => format!(
                        "the conversation is too long for the model: start afresh with `molt sessions reset {key}`"
                    ),
                    "rate_limit" => {
                        "the model's provider is limiting requests: try again later".into()
                    }
                    _ => format!("see `molt sessions history {key}` and the gateway's log"),
                };
                format!("{what} ({kind}); {next}")
            }
            TurnStatus::Aborted => format!("the turn was aborted (run {})", self.run_id),
            TurnStatus::Timeout => format!(
                "no reply within {timeout_secs}s; the turn goes on in the gateway. Read it later \
                 with `molt sessions history {key}`, or wait longer with --timeout"
            ),
        }
    }
}

/// How a run ended, from its terminal `chat` event or from `agent.wait`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ending {
    Ok,
    Aborted,
    Error { message: String, kind: String },
}

/// What of a run's reply is already out, so that each piece of text is shown once: after
/// duplicate events, after events missed during a reconnect, and when the final text comes
/// from `agent.wait` instead of the events.
///
/// A delta carries the whole text of the assistant message it belongs to; a turn with tool
/// calls has several assistant messages, each starting from empty.
#[derive(Debug, Default)]
pub(super) struct ReplyView {
    /// The text of the assistant message being shown, as far as it is shown.
    shown: String,
    /// Whether any text of this run is out (later messages are set apart from it).
    started: bool,
    /// The highest `seq` of a delta seen.
    last_seq: u64,
    /// The reply's final text, once known.
    final_text: Option<String>,
}

impl ReplyView {
    /// Folds one event of the run: the text to show now, and how the run ended if it did.
    pub fn apply(&mut self, event: &ChatEvent) -> (String, Option<Ending>) {
        match &event.state {
            ChatState::Status { .. } => (String::new(), None),
            ChatState::Delta { message, .. } => {
                let full: String = message.content.iter().map(|b| b.text.as_str()).collect();
                let stale = event.seq <= self.last_seq && self.shown.starts_with(&full);
                self.last_seq = self.last_seq.max(event.seq);
                if stale {
                    return (String::new(), None);
                }
                (self.catch_up(&full), None)
            }
            ChatState::Final { message, .. } => {
                let out = match message {
                    Some(m) => self.finish(&m.text()),
                    None => String::new(),
                };
                (out, Some(Ending::Ok))
            }
            ChatState::Aborted { .. } => (String::new(), Some(Ending::Aborted)),
            ChatState::Error {
                error_message,
                error_kind,
                ..
            } => (
                String::new(),
                Some(Ending::Error {
                    message: error_message.clone(),
                    kind: error_kind.clone(),
                }),
            ),
        }
    }

    /// The final text of the reply, as the run's end reports it: what is still to show.
    pub fn finish(&mut self, text: &str) -> String {
        self.final_text = Some(text.to_owned());
        self.catch_up(text)
    }

    /// The text to show so that the current message reads `full`: the rest of it when `full`
    /// continues what is shown, else `full` as a new message.
    fn catch_up(&mut self, full: &str) -> String {
        let out = match full.strip_prefix(self.shown.as_str()) {
            Some(rest) => rest.to_owned(),
            None if self.started && !full.is_empty() => format!("\n\n{full}"),
            None => full.to_owned(),
        };
        self.shown = full.to_owned();
        if !out.is_empty() {
            self.started = true;
        }
        out
    }

    /// Whether any text is out.
    pub fn started(&self) -> bool {
        self.started
    }

    /// The reply: the final text, else what the last message showed.
    pub fn reply(&self) -> String {
        self.final_text
            .clone()
            .unwrap_or_else(|| self.shown.clone())
    }
}

/// How a run ended by `agent.wait`'s answer, `None` while it runs. `timeout` means "still
/// running" unless the run has an end time or an abort's stop reason: an aborted run reports
/// `timeout`, as OpenClaw's do.
pub(super) fn wait_ending(w: &AgentWaitResult) -> Option<Ending> {
    let aborted_reason = matches!(w.stop_reason.as_deref(), Some("rpc" | "aborted"));
    match w.status.as_str() {
        "ok" => Some(Ending::Ok),
        "error" => Some(Ending::Error {
            message: w.error.clone().unwrap_or_else(|| "the turn failed".into()),
            kind: w.error_kind.clone().unwrap_or_else(|| "unknown".into()),
        }),
        "aborted" | "cancelled" => Some(Ending::Aborted),
        "timeout" if aborted_reason || w.ended_at.is_some() => Some(Ending::Aborted),
        _ => None,
    }
}

/// The last part of a deadline that reconnecting may take.
fn outage_deadline(deadline: Instant) -> Instant {
    deadline.min(Instant::now() + RECONNECT_FOR)
}

/// What woke the follow loop.
enum Wake {
    Event(Result<(String, Value), ClientError>),
    Quiet,
    Interrupt,
}

/// Waits for the next Ctrl-C, or forever without a handler.
async fn interrupted(signal: &mut Option<Signal>) {
    let got = match signal {
        Some(s) => s.recv().await.is_some(),
        None => false,
    };
    if !got {
        std::future::pending::<()>().await;
    }
}

/// Follows `turn` until it ends or `deadline` passes, writing its reply text to stdout as it
/// comes when `live` (ending with a newline). Across a handover it reconnects and asks
/// `agent.wait` whether the run ended meanwhile. With `interrupt`, Ctrl-C aborts the run
/// (`chat.abort`) and the following goes on until the gateway reports the end.
pub(super) async fn follow(
    link: &mut Link<'_>,
    turn: &Turn,
    live: bool,
    deadline: Instant,
    interrupt: &mut Option<Signal>,
) -> Result<TurnOutcome, Failure> {
    let mut view = ReplyView::default();
    let mut out = std::io::stdout();
    let mut show = |text: &str| {
        if live && !text.is_empty() {
            // A closed stdout ends the process (SIGPIPE); nothing else is worth reporting.
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
    };
    let mut check_now = turn.already_ended;
    let mut heard = Instant::now();
    let ending = loop {
        if check_now || heard.elapsed() >= QUIET_CHECK {
            check_now = false;
            heard = Instant::now();
            let p = AgentWaitParams {
                run_id: turn.run_id.clone(),
                timeout_ms: Some(WAIT_CHECK_MS),
            };
            let w = link
                .call::<AgentWait>(&p, outage_deadline(deadline))
                .await?;
            if let Some(ending) = wait_ending(&w) {
                if let Some(reply) = w.terminal_reply.as_ref().filter(|r| !r.text.is_empty()) {
                    show(&view.finish(&reply.text));
                }
                break Some(ending);
            }
        }
        if Instant::now() >= deadline {
            break None;
        }
        let wake_at = deadline.min(heard + QUIET_CHECK);
        let client = link.client(outage_deadline(deadline)).await?;
        let wake = tokio::select! {
            r = client.next_event() => Wake::Event(r),
            _ = tokio::time::sleep_until(wake_at.into()) => Wake::Quiet,
            _ = interrupted(interrupt) => Wake::Interrupt,
        };
        match wake {
            Wake::Quiet => {}
            Wake::Interrupt => {
                let p = ChatAbortParams {
                    session_key: turn.session_key.clone(),
                    agent_id: turn.agent_id.clone(),
                    run_id: Some(turn.run_id.clone()),
                };
                let r = link
                    .call::<ChatAbort>(&p, outage_deadline(deadline))
                    .await?;
                if !r.aborted {
                    // Ended already, or not known: the gateway says which.
                    check_now = true;
                }
            }
            Wake::Event(Err(_)) => {
                // Handover (1012) or a lost connection: the next call reconnects, and the run
                // may have ended while nobody listened.
                link.drop_connection();
                check_now = true;
            }
            Wake::Event(Ok((name, payload))) => match name.as_str() {
                // The gateway hands over: the successor already serves, go to it now.
                "shutdown" => {
                    link.drop_connection();
                    check_now = true;
                }
                "chat" if payload.get("runId").and_then(Value::as_str) == Some(&turn.run_id) => {
                    heard = Instant::now();
                    match serde_json::from_value::<ChatEvent>(payload) {
                        Ok(event) => {
                            let (text, ending) = view.apply(&event);
                            show(&text);
                            if let Some(ending) = ending {
                                break Some(ending);
                            }
                        }
                        // A terminal event in a shape we do not know: ask how the run ended.
                        Err(_) => check_now = true,
                    }
                }
                _ => {}
            },
        }
    };
    if live && view.started() {
        show("\n");
    }
    let (status, error_kind, error) = match ending {
        None => (TurnStatus::Timeout, None, None),
        Some(Ending::Ok) => (TurnStatus::Ok, None, None),
        Some(Ending::Aborted) => (TurnStatus::Aborted, None, None),
        Some(Ending::Error { message, kind }) => (TurnStatus::Error, Some(kind), Some(message)),
    };
    Ok(TurnOutcome {
        run_id: turn.run_id.clone(),
        status,
        text: view.reply(),
        session_key: turn.session_key.clone(),
        error_kind,
        error,
    })
}

/// One command's way to the gateway: a connection, and a new one whenever a handover or a
/// network failure ends it. Every call it makes is safe to repeat (idempotency keys, reads,
/// aborts), so a call cut off by a lost connection is made again on the next.
pub(super) struct Link<'a> {
    ctx: &'a Context,
    access: &'a Access,
    opts: ClientOptions,
    client: Option<Client>,
}

impl<'a> Link<'a> {
    /// Connects once; a gateway that is not there is an error at once, with what to do.
    pub async fn open(ctx: &'a Context, access: &'a Access) -> Result<Self, Failure> {
        let opts = client_options(ctx, access);
        let client = Client::connect(opts.clone())
            .await
            .map_err(|e| Failure::failed(client_failure(ctx, access, e)))?;
        Ok(Self {
            ctx,
            access,
            opts,
            client: Some(client),
        })
    }

    /// The live connection, reconnecting (until `deadline`) if there is none.
    pub async fn client(&mut self, deadline: Instant) -> Result<&mut Client, Failure> {
        if self.client.is_none() {
            self.client = Some(self.reconnect(deadline).await?);
        }
        self.client
            .as_mut()
            .ok_or_else(|| Failure::failed("no connection to the gateway"))
    }

    /// Forgets the connection; the next call makes a new one.
    pub fn drop_connection(&mut self) {
        self.client = None;
    }

    /// Calls `M`; when the connection is lost or the gateway asks to retry (it is handing
    /// over), calls again on a new connection until `deadline`.
    pub async fn call<M: Method>(
        &mut self,
        params: &M::Params,
        deadline: Instant,
    ) -> Result<M::Result, Failure> {
        loop {
            let client = self.client(deadline).await?;
            let e = match client.request_once::<M>(params).await {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            match retry_pause(&e) {
                Some(pause) if Instant::now() + pause < deadline => {
                    self.client = None;
                    tokio::time::sleep(pause).await;
                }
                _ => return Err(Failure::failed(client_failure(self.ctx, self.access, e))),
            }
        }
    }

    /// Connects again, retrying while the failure is one a handover or a restart explains.
    async fn reconnect(&self, deadline: Instant) -> Result<Client, Failure> {
        let mut pause = Duration::from_millis(100);
        loop {
            match Client::connect(self.opts.clone()).await {
                Ok(c) => return Ok(c),
                Err(e) if reconnectable(&e) && Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    return Err(Failure::failed(format!(
                        "lost the connection to the gateway and could not reconnect: {}",
                        client_failure(self.ctx, self.access, e)
                    )));
                }
            }
        }
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        if let Some(c) = self.client {
            c.close().await;
        }
    }
}

/// Whether a failed connect may succeed shortly: the gateway is restarting or handing over.
fn reconnectable(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. } | ClientError::Closed { .. } | ClientError::Timeout(_) => true,
        ClientError::Handshake(s) => s.code == "UNAVAILABLE",
        _ => false,
    }
}

/// How long to wait before repeating a failed call on a new connection, `None` if repeating
/// cannot help.
fn retry_pause(e: &ClientError) -> Option<Duration> {
    match e {
        ClientError::Closed { .. } | ClientError::Timeout(_) => Some(Duration::ZERO),
        ClientError::Rpc(s) if s.retryable == Some(true) => Some(Duration::from_millis(
            s.retry_after_ms.unwrap_or(200).clamp(10, 2000),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use molt_protocol::frame::ErrorShape;
    use serde_json::json;

    fn event(seq: u64, state: Value) -> ChatEvent {
        let mut v = json!({"runId": "r1", "sessionKey": "agent:main:main", "seq": seq});
        if let (Value::Object(o), Value::Object(s)) = (&mut v, state) {
            o.extend(s);
        }
        serde_json::from_value(v).unwrap()
    }

    fn delta(seq: u64, full: &str) -> ChatEvent {
        event(
            seq,
            json!({"state": "delta", "deltaText": "", "message": {
                "role": "assistant", "content": [{"type": "text", "text": full}], "timestamp": seq
            }}),
        )
    }

    fn final_with(text: &str) -> ChatEvent {
        event(
            99,
            json!({"state": "final", "message": {
                "role": "assistant", "content": [{"type": "text", "text": text}],
                "api": "openai-completions", "provider": "fake", "model": "fake-1",
                "usage": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0, "totalTokens": 0},
                "stopReason": "stop", "timestamp": 1
            }}),
        )
    }

    #[test]
    fn the_default_session_is_the_agents_main_one() {
        assert_eq!(default_session_key(None), "agent:main:main");
        assert_eq!(default_session_key(Some("ops")), "agent:ops:main");
    }

    #[test]
    fn deltas_show_each_piece_of_text_once() {
        let mut v = ReplyView::default();
        assert_eq!(v.apply(&delta(1, "Hel")).0, "Hel");
        assert_eq!(v.apply(&delta(2, "Hello")).0, "lo");
        // A duplicate, and an older delta arriving late, show nothing.
        assert_eq!(v.apply(&delta(2, "Hello")).0, "");
        assert_eq!(v.apply(&delta(1, "Hel")).0, "");
        // Deltas missed during a reconnect: the next one brings the rest.
        assert_eq!(v.apply(&delta(7, "Hello, world")).0, ", world");
        let (text, end) = v.apply(&final_with("Hello, world!"));
        assert_eq!(text, "!");
        assert_eq!(end, Some(Ending::Ok));
        assert_eq!(v.reply(), "Hello, world!");
    }

    #[test]
    fn a_second_assistant_message_is_set_apart() {
        let mut v = ReplyView::default();
        assert_eq!(v.apply(&delta(1, "Let me look.")).0, "Let me look.");
        // After a tool call the next message starts from empty, even when it is a prefix.
        assert_eq!(v.apply(&delta(5, "Le")).0, "\n\nLe");
        assert_eq!(v.apply(&delta(6, "Left: 3")).0, "ft: 3");
        assert_eq!(v.apply(&final_with("Left: 3")).0, "");
        assert_eq!(v.reply(), "Left: 3");
    }

    #[test]
    fn a_final_text_never_seen_streaming_is_shown_whole() {
        let mut v = ReplyView::default();
        assert_eq!(v.finish("All done."), "All done.");
        let mut v = ReplyView::default();
        v.apply(&delta(1, "Checking"));
        assert_eq!(v.finish("Done."), "\n\nDone.");
    }

    #[test]
    fn aborts_and_errors_end_the_run() {
        let mut v = ReplyView::default();
        let (_, end) = v.apply(&event(3, json!({"state": "aborted", "stopReason": "rpc"})));
        assert_eq!(end, Some(Ending::Aborted));
        let (_, end) = v.apply(&event(
            4,
            json!({"state": "error", "errorMessage": "too long", "errorKind": "context_length"}),
        ));
        assert_eq!(
            end,
            Some(Ending::Error {
                message: "too long".into(),
                kind: "context_length".into()
            })
        );
        // A bare final (input absorbed by another turn) ends it without text.
        let (text, end) = v.apply(&event(1, json!({"state": "final"})));
        assert_eq!((text.as_str(), end), ("", Some(Ending::Ok)));
    }

    #[test]
    fn agent_wait_timeout_means_running_unless_the_run_was_aborted() {
        let w = |status: &str, stop: Option<&str>, ended: Option<i64>| AgentWaitResult {
            run_id: "r".into(),
            status: status.into(),
            stop_reason: stop.map(str::to_owned),
            ended_at: ended,
            ..Default::default()
        };
        assert_eq!(wait_ending(&w("timeout", None, None)), None);
        assert_eq!(wait_ending(&w("ok", None, Some(1))), Some(Ending::Ok));
        assert_eq!(
            wait_ending(&w("timeout", Some("rpc"), None)),
            Some(Ending::Aborted)
        );
        assert_eq!(
            wait_ending(&w("error", None, Some(1))),
            Some(Ending::Error {
                message: "the turn failed".into(),
                kind: "unknown".into()
            })
        );
    }

    #[test]
    fn lost_connections_and_draining_gateways_are_retried_other_errors_are_not() {
        let closed = ClientError::Closed {
            code: 1012,
            reason: "restart".into(),
        };
        assert_eq!(retry_pause(&closed), Some(Duration::ZERO));
        let mut draining = ErrorShape::new("UNAVAILABLE", "stopping");
        draining.retryable = Some(true);
        draining.retry_after_ms = Some(50);
        assert_eq!(
            retry_pause(&ClientError::Rpc(draining)),
            Some(Duration::from_millis(50))
        );
        let bad = ErrorShape::new("INVALID_REQUEST", "invalid params");
        assert_eq!(retry_pause(&ClientError::Rpc(bad.clone())), None);
        assert!(reconnectable(&closed));
        assert!(!reconnectable(&ClientError::Handshake(bad)));
    }

    /// A gateway of two processes on one port: the first accepts the turn, streams a little
    /// of it, then hands over (`shutdown`, close 1012); the second has finished the run.
    async fn handover_gateway() -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut calls = Vec::new();
            for process in 0..2 {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                let send = |v: Value| Message::Text(v.to_string().into());
                ws.send(send(json!({"type": "event", "event": "connect.challenge",
                    "payload": {"nonce": "n"}})))
                    .await
                    .unwrap();
                while let Some(Ok(Message::Text(t))) = ws.next().await {
                    let req: Value = serde_json::from_str(t.as_str()).unwrap();
                    let method = req["method"].as_str().unwrap().to_owned();
                    let id = req["id"].clone();
                    calls.push(format!("{process}:{method}"));
                    let run_id = req["params"]["idempotencyKey"].clone();
                    let payload = match method.as_str() {
                        "connect" => json!({"type": "hello-ok"}),
                        "chat.send" => json!({"runId": run_id, "status": "started"}),
                        "agent.wait" => json!({"runId": req["params"]["runId"], "status": "ok",
                            "endedAt": 5, "terminalReply": {"disposition": "visible",
                            "text": "Hello after the handover"}}),
                        other => panic!("unexpected {other}"),
                    };
                    ws.send(send(
                        json!({"type": "res", "id": id, "ok": true, "payload": payload}),
                    ))
                    .await
                    .unwrap();
                    if method == "chat.send" {
                        ws.send(send(json!({"type": "event", "event": "chat", "payload": {
                            "runId": run_id, "sessionKey": "agent:main:main", "seq": 1,
                            "state": "delta", "deltaText": "Hello", "message": {"role": "assistant",
                            "content": [{"type": "text", "text": "Hello"}], "timestamp": 1}}})))
                            .await
                            .unwrap();
                        ws.send(send(json!({"type": "event", "event": "shutdown",
                            "payload": {"reason": "restart"}})))
                            .await
                            .unwrap();
                        let _ = ws
                            .send(Message::Close(Some(CloseFrame {
                                code: CloseCode::Restart,
                                reason: "restart".into(),
                            })))
                            .await;
                        break;
                    }
                    if method == "agent.wait" {
                        break;
                    }
                }
            }
            calls
        });
        (addr, task)
    }

    #[tokio::test]
    async fn a_turn_rides_through_a_handover_and_ends_with_the_successors_answer() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context::resolve(
            None,
            Some(dir.path().join("molt.toml")),
            Some(dir.path().join("state")),
        )
        .unwrap();
        let (addr, gateway) = handover_gateway().await;
        let access = Access {
            url: Some(format!("ws://{addr}")),
            token: Some("t".into()),
            client_version: "test".into(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut link = Link::open(&ctx, &access).await.ok().unwrap();
        let turn = send_turn(&mut link, "agent:main:main", None, "hi", deadline)
            .await
            .ok()
            .unwrap();
        let outcome = follow(&mut link, &turn, false, deadline, &mut None)
            .await
            .ok()
            .unwrap();
        assert_eq!(outcome.status, TurnStatus::Ok);
        assert_eq!(outcome.text, "Hello after the handover");
        assert_eq!(outcome.run_id, turn.run_id);
        assert_eq!(
            gateway.await.unwrap(),
            ["0:connect", "0:chat.send", "1:connect", "1:agent.wait"]
        );
    }

    #[test]
    fn the_json_outcome_has_the_documented_fields() {
        let o = TurnOutcome {
            run_id: "r".into(),
            status: TurnStatus::Error,
            text: String::new(),
            session_key: "agent:main:main".into(),
            error_kind: Some("rate_limit".into()),
            error: Some("slow down".into()),
        };
        assert_eq!(
            serde_json::to_value(&o).unwrap(),
            json!({"runId": "r", "status": "error", "text": "", "sessionKey": "agent:main:main",
                   "errorKind": "rate_limit", "error": "slow down"})
        );
        assert!(o.problem(600).contains("try again later"));
    }
}
