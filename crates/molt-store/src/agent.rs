//! The agent's durable state: sessions, their transcripts, turns and the inputs waiting for
//! them, and events relayed from a draining process to its successor.
//!
//! A turn is a run of kind `turn` whose id is the client's runId. Its steps are model calls and
//! tool calls, appended as the model asks for tools, and each step boundary commits together
//! with the transcript messages it produced, in one transaction that checks the lease. So a
//! process that lost a turn's lease can neither record a model answer nor a tool result, and a
//! tool call whose result is in the transcript is never run again.
//!
//! Inputs (the message that starts a turn, and messages that steer an active one) wait in
//! `turn_inputs` until the turn's next model step starts; that step moves them into the
//! transcript, so a message never lands between a tool call and its result.

use molt_protocol::methods::tasks::{RunId, RunState, StepRecord, StepSpec};
use molt_protocol::transcript::{Message, SystemMessage, TextBlock, Usage};
use rusqlite::{OptionalExtension, Row, Transaction, params};

use crate::runs::check_lease;
use crate::{Boot, Ctx, FromWord, Result, Store, StoreError, now_ms};

/// A session as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    /// `agent:<agentId>:<rest>`.
    pub key: String,
    pub agent_id: String,
    /// Changes on reset; the transcript of each id is kept.
    pub session_id: String,
    pub label: Option<String>,
    /// A `provider/model` override.
    pub model: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub last_run_id: Option<String>,
}

/// A transcript message with its place.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// Unique across the database.
    pub id: i64,
    /// Position in its session key's transcript, from 1.
    pub seq: i64,
    pub session_id: String,
    pub run_id: Option<String>,
    pub message: Message,
}

/// A turn as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRecord {
    pub run_id: String,
    pub session_key: String,
    pub agent_id: String,
    /// `chat` (chat.send), `agent` (the agent method), `sessions` (sessions.send/create).
    pub origin: String,
    pub state: RunState,
    /// The highest event `seq` this turn's events used, as of its last checkpoint.
    pub event_seq: u64,
    pub final_text: Option<String>,
    pub stop_reason: Option<String>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub usage: Usage,
    /// `provider/model` of its last model call.
    pub model: Option<String>,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

/// What to do with a message sent to a session that has an active turn (`queueMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueMode {
    /// Join the active turn at its next model call.
    Steer,
    /// Become the next turn.
    Followup,
    /// Cancel the active turn and start a new one.
    Interrupt,
}

/// A turn to submit.
#[derive(Debug, Clone)]
pub struct NewTurn<'a> {
    pub run_id: &'a str,
    pub session_key: &'a str,
    pub agent_id: &'a str,
    pub text: &'a str,
    pub mode: QueueMode,
    pub origin: &'a str,
}

/// What became of a submitted message.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    /// A new turn was queued.
    Queued,
    /// It joins the active turn `into` at its next model call.
    Steered { into: String },
    /// A run with this id exists already; nothing was started.
    Duplicate(Box<TurnRecord>),
    /// A new turn, leased to the submitting boot with its first model step started, in the
    /// same commit as the submission (the session had no running turn).
    Started(Box<StartedTurn>),
}

/// A turn whose first step the submitting process started.
#[derive(Debug, Clone, PartialEq)]
pub struct StartedTurn {
    pub turn: TurnRecord,
    pub session_id: String,
    pub step: StepRecord,
    /// The turn's message, now in the transcript.
    pub moved: Vec<StoredMessage>,
}

/// What a finished model step leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnProgress {
    /// More steps follow (tool calls, then another model call).
    Continues,
    /// The turn ended with this answer.
    Finished,
}

const SESSION_COLUMNS: &str = "key, agent_id, session_id, label, model, created_at_ms, \
     updated_at_ms, input_tokens, output_tokens, total_tokens, last_run_id";

fn session_from_row(r: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        key: r.get(0)?,
        agent_id: r.get(1)?,
        session_id: r.get(2)?,
        label: r.get(3)?,
        model: r.get(4)?,
        created_at_ms: r.get(5)?,
        updated_at_ms: r.get(6)?,
        input_tokens: r.get::<_, i64>(7)? as u64,
        output_tokens: r.get::<_, i64>(8)? as u64,
        total_tokens: r.get::<_, i64>(9)? as u64,
        last_run_id: r.get(10)?,
    })
}

const TURN_COLUMNS: &str = "t.run_id, t.session_key, t.agent_id, t.origin, r.state, t.event_seq, \
     t.final_text, t.stop_reason, t.error_kind, r.error, t.usage, t.model, r.created_at_ms, \
     r.finished_at_ms";

fn turn_from_row(r: &Row<'_>) -> rusqlite::Result<(TurnRecord, String, Option<String>)> {
    Ok((
        TurnRecord {
            run_id: r.get(0)?,
            session_key: r.get(1)?,
            agent_id: r.get(2)?,
            origin: r.get(3)?,
            state: RunState::Queued,
            event_seq: r.get::<_, i64>(5)? as u64,
            final_text: r.get(6)?,
            stop_reason: r.get(7)?,
            error_kind: r.get(8)?,
            error: r.get(9)?,
            usage: Usage::default(),
            model: r.get(11)?,
            created_at_ms: r.get(12)?,
            finished_at_ms: r.get(13)?,
        },
        r.get(4)?,
        r.get(10)?,
    ))
}

fn finish_turn_row(
    (mut t, state, usage): (TurnRecord, String, Option<String>),
) -> Result<TurnRecord> {
    t.state = RunState::from_word(&state)?;
    t.usage = usage
        .and_then(|u| serde_json::from_str(&u).ok())
        .unwrap_or_default();
    Ok(t)
}

/// Runs `sql` with `params` and collects every row mapped by `map`.
/// Every row of `sql`, mapped; `what` names the query in errors. The store's one way to
/// read a list.
pub(crate) fn collect<T, P: rusqlite::Params>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: P,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    what: &'static str,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).ctx(what)?;
    let rows = stmt.query_map(params, map).ctx(what)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.ctx(what)?);
    }
    Ok(out)
}

fn encode<T: serde::Serialize>(v: &T, what: &str) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("cannot encode {what}: {e}")))
}

fn new_session_id(tx: &Transaction<'_>) -> Result<String> {
    tx.query_row("SELECT lower(hex(randomblob(16)))", [], |r| r.get(0))
        .ctx("making a session id")
}

fn get_session_tx(tx: &rusqlite::Connection, key: &str) -> Result<Option<SessionRecord>> {
    tx.query_row(
        &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE key = ?1"),
        [key],
        session_from_row,
    )
    .optional()
    .ctx("reading session")
}

pub(crate) fn ensure_session_tx(
    tx: &Transaction<'_>,
    key: &str,
    agent_id: &str,
) -> Result<SessionRecord> {
    if let Some(s) = get_session_tx(tx, key)? {
        return Ok(s);
    }
    let now = now_ms();
    let sid = new_session_id(tx)?;
    tx.execute(
        "INSERT INTO sessions(key, agent_id, session_id, created_at_ms, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?4)",
        params![key, agent_id, sid, now],
    )
    .ctx("creating session")?;
    get_session_tx(tx, key)?.ok_or_else(|| StoreError::Corrupt(format!("session {key} vanished")))
}

/// Appends `message` to the current transcript of `key`.
pub(crate) fn append_tx(
    tx: &Transaction<'_>,
    key: &str,
    run_id: Option<&str>,
    message: &Message,
) -> Result<StoredMessage> {
    let session_id: String = tx
        .query_row(
            "SELECT session_id FROM sessions WHERE key = ?1",
            [key],
            |r| r.get(0),
        )
        .optional()
        .ctx("reading session id")?
        .ok_or_else(|| StoreError::NoSuchSession(key.to_owned()))?;
    let role = match message {
        Message::User(_) => "user",
        Message::Assistant(_) => "assistant",
        Message::ToolResult(_) => "toolResult",
        Message::System(_) => "system",
    };
    let body = encode(message, "message")?;
    let now = now_ms();
    let (id, seq): (i64, i64) = tx
        .query_row(
            "INSERT INTO messages(session_key, session_id, seq, run_id, role, body, created_at_ms)
             VALUES (?1, ?2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE session_key = ?1),
                     ?3, ?4, ?5, ?6)
             RETURNING id, seq",
            params![key, session_id, run_id, role, body, now],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ctx("appending message")?;
    tx.execute(
        "UPDATE sessions SET updated_at_ms = ?2 WHERE key = ?1",
        params![key, now],
    )
    .ctx("touching session")?;
    Ok(StoredMessage {
        id,
        seq,
        session_id,
        run_id: run_id.map(str::to_owned),
        message: message.clone(),
    })
}

fn message_from_parts(
    id: i64,
    seq: i64,
    session_id: String,
    run_id: Option<String>,
    body: &str,
) -> Result<StoredMessage> {
    Ok(StoredMessage {
        id,
        seq,
        session_id,
        run_id,
        message: serde_json::from_str(body)
            .map_err(|e| StoreError::Corrupt(format!("message {id}: {e}")))?,
    })
}

fn turn_tx(tx: &rusqlite::Connection, run_id: &str) -> Result<Option<TurnRecord>> {
    tx.query_row(
        &format!(
            "SELECT {TURN_COLUMNS} FROM turns t JOIN runs r ON r.id = t.run_id WHERE t.run_id = ?1"
        ),
        [run_id],
        turn_from_row,
    )
    .optional()
    .ctx("reading turn")?
    .map(finish_turn_row)
    .transpose()
}

fn append_steps(tx: &Transaction<'_>, run: &RunId, specs: &[StepSpec]) -> Result<()> {
    let count: u32 = tx
        .query_row("SELECT step_count FROM runs WHERE id = ?1", [&run.0], |r| {
            r.get(0)
        })
        .ctx("reading step count")?;
    for (i, spec) in specs.iter().enumerate() {
        let idx = count + i as u32;
        tx.execute(
            "INSERT INTO steps(run_id, idx, spec, state, effect_key)
             VALUES (?1, ?2, ?3, 'pending', ?1 || ':' || ?2)",
            params![run.0, idx, encode(spec, "step")?],
        )
        .ctx("appending step")?;
    }
    tx.execute(
        "UPDATE runs SET step_count = ?2 WHERE id = ?1",
        params![run.0, count + specs.len() as u32],
    )
    .ctx("counting steps")?;
    Ok(())
}

/// Marks step `index` ended and, if `advance`, moves the run to the next one.
fn end_step(
    tx: &Transaction<'_>,
    run: &RunId,
    index: u32,
    state: &str,
    error: Option<&str>,
) -> Result<()> {
    tx.execute(
        "UPDATE steps SET state = ?3, error = ?4, finished_at_ms = ?5 WHERE run_id = ?1 AND idx = ?2",
        params![run.0, index, state, error, now_ms()],
    )
    .ctx("ending step")?;
    Ok(())
}

fn set_event_seq(tx: &Transaction<'_>, run: &RunId, seq: u64) -> Result<()> {
    tx.execute(
        "UPDATE turns SET event_seq = MAX(event_seq, ?2) WHERE run_id = ?1",
        params![run.0, seq as i64],
    )
    .ctx("recording event seq")?;
    Ok(())
}

/// Moves the inputs waiting for `run` into its session's transcript.
fn take_inputs(tx: &Transaction<'_>, run: &RunId, key: &str) -> Result<Vec<StoredMessage>> {
    let inputs: Vec<(i64, String, Option<String>, i64)> = collect(
        tx,
        "SELECT id, text, idempotency_key, created_at_ms FROM turn_inputs
         WHERE run_id = ?1 ORDER BY id",
        [&run.0],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        "reading a turn's inputs",
    )?;
    let mut out = Vec::new();
    for (id, text, key_, at) in inputs {
        let m = Message::User(molt_protocol::transcript::UserMessage {
            content: text,
            timestamp: at,
            idempotency_key: key_,
        });
        out.push(append_tx(tx, key, Some(&run.0), &m)?);
        tx.execute("DELETE FROM turn_inputs WHERE id = ?1", [id])
            .ctx("consuming input")?;
    }
    Ok(out)
}

/// Leases the just-created turn `t` to `boot` and starts its first (model) step.
fn start_now(tx: &Transaction<'_>, t: &NewTurn<'_>, boot: Boot, now: i64) -> Result<StartedTurn> {
    tx.execute(
        "UPDATE runs SET state = 'running', lease_epoch = ?2, lease_pid = ?3 WHERE id = ?1",
        params![t.run_id, boot.epoch, boot.pid],
    )
    .ctx("leasing the new turn")?;
    let run = RunId(t.run_id.to_owned());
    let moved = take_inputs(tx, &run, t.session_key)?;
    tx.execute(
        "UPDATE steps SET state = 'running', attempts = 1, started_at_ms = ?2
         WHERE run_id = ?1 AND idx = 0",
        params![t.run_id, now],
    )
    .ctx("starting the first step")?;
    let session_id = moved
        .first()
        .map(|m| m.session_id.clone())
        .unwrap_or_default();
    let turn = turn_tx(tx, t.run_id)?
        .ok_or_else(|| StoreError::Corrupt(format!("turn {} vanished", t.run_id)))?;
    Ok(StartedTurn {
        turn,
        session_id,
        step: StepRecord {
            index: 0,
            spec: StepSpec::Model {},
            state: molt_protocol::methods::tasks::StepState::Running,
            attempts: 1,
            effect_key: format!("{}:0", t.run_id),
            exit_code: None,
            output_tail: None,
            started_at_ms: Some(now),
            finished_at_ms: None,
            error: None,
        },
        moved,
    })
}

/// The session a turn belongs to.
fn turn_session_key(tx: &Transaction<'_>, run: &RunId) -> Result<String> {
    tx.query_row(
        "SELECT session_key FROM turns WHERE run_id = ?1",
        [&run.0],
        |r| r.get(0),
    )
    .ctx("reading the turn's session")
}

/// Ends a turn's run in `state` with `error` (none for success) and records its outcome.
#[allow(clippy::too_many_arguments)]
fn close_turn(
    tx: &Transaction<'_>,
    run: &RunId,
    state: RunState,
    error: Option<&str>,
    error_kind: Option<&str>,
    stop_reason: Option<&str>,
    final_text: Option<&str>,
) -> Result<()> {
    let now = now_ms();
    tx.execute(
        "UPDATE runs SET state = ?2, updated_at_ms = ?3, finished_at_ms = ?3, error = ?4,
             lease_epoch = NULL, lease_pid = NULL
         WHERE id = ?1",
        params![run.0, state.as_str(), now, error],
    )
    .ctx("closing turn run")?;
    tx.execute(
        "UPDATE steps SET state = 'cancelled' WHERE run_id = ?1 AND state IN ('pending','running')",
        [&run.0],
    )
    .ctx("closing remaining steps")?;
    tx.execute(
        "UPDATE turns SET error_kind = ?2, stop_reason = ?3, final_text = ?4 WHERE run_id = ?1",
        params![run.0, error_kind, stop_reason, final_text],
    )
    .ctx("recording turn outcome")?;
    // Nobody can act on an approval of an ended turn.
    tx.execute(
        "UPDATE approvals SET state = 'cancelled', decided_at_ms = ?2
         WHERE run_id = ?1 AND state = 'pending'",
        params![run.0, now],
    )
    .ctx("cancelling the turn's approvals")?;
    Ok(())
}

impl Store {
    /// The session `key`, if it exists.
    pub fn session(&self, key: &str) -> Result<Option<SessionRecord>> {
        self.conn
            .query_row(
                &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE key = ?1"),
                [key],
                session_from_row,
            )
            .optional()
            .ctx("reading session")
    }

    /// The session `key`, created for `agent_id` if it does not exist.
    pub fn ensure_session(&mut self, key: &str, agent_id: &str) -> Result<SessionRecord> {
        // Most calls find it: a read, and a write transaction (a commit) only to create it.
        if let Some(s) = self.session(key)? {
            return Ok(s);
        }
        let tx = self.write_tx().ctx("starting ensure_session")?;
        let s = ensure_session_tx(&tx, key, agent_id)?;
        tx.commit().ctx("committing session")?;
        Ok(s)
    }

    /// Sessions, most recently active first, optionally of one agent; and the total count.
    pub fn list_sessions(
        &self,
        agent_id: Option<&str>,
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<SessionRecord>, u64)> {
        let total: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM sessions WHERE ?1 IS NULL OR agent_id = ?1",
                [agent_id],
                |r| r.get(0),
            )
            .ctx("counting sessions")?;
        let out = collect(
            &self.conn,
            &format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE ?1 IS NULL OR agent_id = ?1
                 ORDER BY updated_at_ms DESC, key LIMIT ?2 OFFSET ?3"
            ),
            params![agent_id, limit, offset],
            session_from_row,
            "listing sessions",
        )?;
        Ok((out, total as u64))
    }

    /// Sets (`Some(Some)`) or clears (`Some(None)`) a session's label and model override.
    pub fn patch_session(
        &mut self,
        key: &str,
        label: Option<Option<&str>>,
        model: Option<Option<&str>>,
    ) -> Result<SessionRecord> {
        let tx = self.write_tx().ctx("starting patch_session")?;
        if get_session_tx(&tx, key)?.is_none() {
            return Err(StoreError::NoSuchSession(key.to_owned()));
        }
        let now = now_ms();
        if let Some(l) = label {
            tx.execute(
                "UPDATE sessions SET label = ?2, updated_at_ms = ?3 WHERE key = ?1",
                params![key, l, now],
            )
            .ctx("setting label")?;
        }
        if let Some(m) = model {
            tx.execute(
                "UPDATE sessions SET model = ?2, updated_at_ms = ?3 WHERE key = ?1",
                params![key, m, now],
            )
            .ctx("setting model")?;
        }
        let s =
            get_session_tx(&tx, key)?.ok_or_else(|| StoreError::NoSuchSession(key.to_owned()))?;
        tx.commit().ctx("committing patch")?;
        Ok(s)
    }

    /// Starts a new session id for `key`, keeping the old transcript, and writes a reset
    /// marker as the new transcript's first entry. Returns the session and the marker.
    pub fn reset_session(&mut self, key: &str) -> Result<(SessionRecord, StoredMessage)> {
        let tx = self.write_tx().ctx("starting reset_session")?;
        if get_session_tx(&tx, key)?.is_none() {
            return Err(StoreError::NoSuchSession(key.to_owned()));
        }
        let sid = new_session_id(&tx)?;
        tx.execute(
            "UPDATE sessions SET session_id = ?2, input_tokens = 0, output_tokens = 0,
                 total_tokens = 0, updated_at_ms = ?3 WHERE key = ?1",
            params![key, sid, now_ms()],
        )
        .ctx("resetting session")?;
        let marker = Message::System(SystemMessage {
            content: vec![TextBlock {
                text: "Reset".into(),
            }],
            timestamp: now_ms(),
            kind: "reset".into(),
        });
        let m = append_tx(&tx, key, None, &marker)?;
        let s =
            get_session_tx(&tx, key)?.ok_or_else(|| StoreError::NoSuchSession(key.to_owned()))?;
        tx.commit().ctx("committing reset")?;
        Ok((s, m))
    }

    /// Deletes a session with every transcript it had and its waiting inputs. Returns
    /// whether it existed. Cancel its active turns first.
    pub fn delete_session(&mut self, key: &str) -> Result<bool> {
        let tx = self.write_tx().ctx("starting delete_session")?;
        let n = tx
            .execute("DELETE FROM sessions WHERE key = ?1", [key])
            .ctx("deleting session")?;
        tx.execute("DELETE FROM messages WHERE session_key = ?1", [key])
            .ctx("deleting transcript")?;
        tx.execute("DELETE FROM turn_inputs WHERE session_key = ?1", [key])
            .ctx("deleting inputs")?;
        tx.commit().ctx("committing delete")?;
        Ok(n > 0)
    }

    /// Appends a message to the current transcript of `key` (which must exist).
    pub fn append_message(
        &mut self,
        key: &str,
        run_id: Option<&str>,
        message: &Message,
    ) -> Result<StoredMessage> {
        let tx = self.write_tx().ctx("starting append_message")?;
        let m = append_tx(&tx, key, run_id, message)?;
        tx.commit().ctx("committing message")?;
        Ok(m)
    }

    /// Up to `limit` messages of the current transcript of `key` before `before_seq` (all
    /// when `None`), oldest first; whether older ones exist; and the transcript's length.
    pub fn history(
        &self,
        key: &str,
        limit: u32,
        before_seq: Option<i64>,
    ) -> Result<(Vec<StoredMessage>, bool, u64)> {
        let Some(session) = self.session(key)? else {
            return Ok((Vec::new(), false, 0));
        };
        let total: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM messages WHERE session_key = ?1 AND session_id = ?2",
                params![key, session.session_id],
                |r| r.get(0),
            )
            .ctx("counting messages")?;
        let rows: Vec<(i64, i64, String, Option<String>, String)> = collect(
            &self.conn,
            "SELECT id, seq, session_id, run_id, body FROM messages
             WHERE session_key = ?1 AND session_id = ?2 AND seq < ?3
             ORDER BY seq DESC LIMIT ?4",
            params![
                key,
                session.session_id,
                before_seq.unwrap_or(i64::MAX),
                limit.saturating_add(1)
            ],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            "reading history",
        )?;
        let mut out = rows
            .into_iter()
            .map(|(id, seq, sid, run, body)| message_from_parts(id, seq, sid, run, &body))
            .collect::<Result<Vec<_>>>()?;
        let has_more = out.len() > limit as usize;
        out.truncate(limit as usize);
        out.reverse();
        Ok((out, has_more, total as u64))
    }

    /// The current transcript of `key`, oldest first, as a model sees it.
    pub fn transcript(&self, key: &str) -> Result<Vec<Message>> {
        Ok(self
            .history(key, u32::MAX - 1, None)?
            .0
            .into_iter()
            .map(|m| m.message)
            .collect())
    }

    /// Submits a message to a session: a new turn, or input for the active one, by `mode`.
    /// Commits before returning, so the runId it answers with is durable. With `start_as`,
    /// a new turn in a session with no active turn is leased to that boot and its first step
    /// started in the same commit, so nothing else stands between the submission and the
    /// model call.
    pub fn submit_turn(&mut self, t: &NewTurn<'_>, start_as: Option<Boot>) -> Result<Submitted> {
        let tx = self.write_tx().ctx("starting submit_turn")?;
        let out = submit_turn_tx(&tx, t, start_as)?;
        if !matches!(out, Submitted::Duplicate(_)) {
            tx.commit().ctx("committing turn")?;
        }
        Ok(out)
    }
}

/// [`Store::submit_turn`] inside a caller's transaction (which the caller commits).
pub(crate) fn submit_turn_tx(
    tx: &Transaction<'_>,
    t: &NewTurn<'_>,
    start_as: Option<Boot>,
) -> Result<Submitted> {
    if let Some(existing) = turn_tx(tx, t.run_id)? {
        return Ok(Submitted::Duplicate(Box::new(existing)));
    }
    let exists: bool = tx
        .query_row("SELECT 1 FROM runs WHERE id = ?1", [t.run_id], |_| Ok(true))
        .optional()
        .ctx("checking run id")?
        .unwrap_or(false);
    if exists {
        return Err(StoreError::Corrupt(format!(
            "run id {} is taken by a run that is not a turn",
            t.run_id
        )));
    }
    ensure_session_tx(tx, t.session_key, t.agent_id)?;
    let active: Option<String> = tx
        .query_row(
            "SELECT r.id FROM turns t JOIN runs r ON r.id = t.run_id
                 WHERE t.session_key = ?1 AND r.state IN ('queued','running')
                 ORDER BY r.created_at_ms DESC, r.rowid DESC LIMIT 1",
            [t.session_key],
            |r| r.get(0),
        )
        .optional()
        .ctx("finding the active turn")?;
    let now = now_ms();
    let user_key = format!("{}:user", t.run_id);
    if let (Some(into), QueueMode::Steer) = (&active, t.mode) {
        tx.execute(
            "INSERT INTO turn_inputs(run_id, session_key, text, idempotency_key, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            params![into, t.session_key, t.text, user_key, now],
        )
        .ctx("queueing steer input")?;
        return Ok(Submitted::Steered { into: into.clone() });
    }
    if active.is_some() && t.mode == QueueMode::Interrupt {
        tx.execute(
            "UPDATE runs SET cancel_requested = 1, updated_at_ms = ?2
                 WHERE kind = 'turn' AND state IN ('queued','running')
                   AND id IN (SELECT run_id FROM turns WHERE session_key = ?1)",
            params![t.session_key, now],
        )
        .ctx("interrupting the active turn")?;
    }
    tx.execute(
        "INSERT INTO runs(id, title, state, created_at_ms, updated_at_ms, step_count, kind)
             VALUES (?1, ?2, 'queued', ?3, ?3, 1, 'turn')",
        params![t.run_id, format!("turn in {}", t.session_key), now],
    )
    .ctx("creating turn run")?;
    tx.execute(
        "INSERT INTO steps(run_id, idx, spec, state, effect_key)
             VALUES (?1, 0, ?2, 'pending', ?1 || ':0')",
        params![t.run_id, encode(&StepSpec::Model {}, "step")?],
    )
    .ctx("creating the first model step")?;
    tx.execute(
        "INSERT INTO turns(run_id, session_key, agent_id, origin) VALUES (?1, ?2, ?3, ?4)",
        params![t.run_id, t.session_key, t.agent_id, t.origin],
    )
    .ctx("creating turn")?;
    tx.execute(
        "INSERT INTO turn_inputs(run_id, session_key, text, idempotency_key, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        params![t.run_id, t.session_key, t.text, user_key, now],
    )
    .ctx("queueing the turn's message")?;
    tx.execute(
        "UPDATE sessions SET last_run_id = ?2, updated_at_ms = ?3 WHERE key = ?1",
        params![t.session_key, t.run_id, now],
    )
    .ctx("touching session")?;
    let started = match start_as {
        Some(boot) if active.is_none() => Some(start_now(tx, t, boot, now)?),
        _ => None,
    };
    Ok(match started {
        Some(s) => Submitted::Started(Box::new(s)),
        None => Submitted::Queued,
    })
}

impl Store {
    /// A turn by its run id.
    pub fn turn(&self, run_id: &str) -> Result<Option<TurnRecord>> {
        turn_tx(&self.conn, run_id)
    }

    /// Messages for `key` that wait for a turn's next model step: `(runId of the turn they
    /// wait for, text, created_at_ms)`, oldest first.
    pub fn waiting_inputs(&self, key: &str) -> Result<Vec<(String, String, i64)>> {
        collect(
            &self.conn,
            "SELECT run_id, text, created_at_ms FROM turn_inputs WHERE session_key = ?1 ORDER BY id",
            [key],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            "reading waiting inputs",
        )
    }

    /// Ids of the turns of `key` that are queued or running, oldest first.
    pub fn active_turns(&self, key: &str) -> Result<Vec<String>> {
        collect(
            &self.conn,
            "SELECT r.id FROM turns t JOIN runs r ON r.id = t.run_id
             WHERE t.session_key = ?1 AND r.state IN ('queued','running')
             ORDER BY r.created_at_ms, r.rowid",
            [key],
            |r| r.get(0),
            "reading active turns",
        )
    }

    /// Leases the oldest queued turn whose session has no running turn, or `None`.
    pub fn claim_next_turn(&mut self, boot: Boot) -> Result<Option<RunId>> {
        self.conn
            .query_row(
                "UPDATE runs SET state = 'running', lease_epoch = ?1, lease_pid = ?2, updated_at_ms = ?3
                 WHERE id = (
                    SELECT r.id FROM runs r JOIN turns t ON t.run_id = r.id
                    WHERE r.state = 'queued' AND r.kind = 'turn'
                      AND NOT EXISTS (
                        SELECT 1 FROM turns t2 JOIN runs r2 ON r2.id = t2.run_id
                        WHERE t2.session_key = t.session_key AND r2.state = 'running')
                    ORDER BY r.created_at_ms, r.rowid LIMIT 1)
                 RETURNING id",
                params![boot.epoch, boot.pid, now_ms()],
                |r| r.get(0),
            )
            .optional()
            .ctx("claiming a turn")
            .map(|id| id.map(RunId))
    }

    /// Whether any turn is running under another boot than `epoch` (a predecessor draining).
    pub fn turns_leased_elsewhere(&self, epoch: i64) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM runs WHERE kind = 'turn' AND state = 'running'
                               AND lease_epoch IS NOT ?1)",
                [epoch],
                |r| r.get(0),
            )
            .ctx("looking for turns leased elsewhere")
    }

    /// Starts the turn's next step (lease checked, attempt counted and committed). A model
    /// step first moves the inputs waiting for the turn into the transcript; they are
    /// returned with it. `None`: no step is left.
    pub fn start_turn_step(
        &mut self,
        run: &RunId,
        boot: Boot,
    ) -> Result<Option<(StepRecord, Vec<StoredMessage>)>> {
        let tx = self.write_tx().ctx("starting start_turn_step")?;
        let next = check_lease(&tx, run, boot)?;
        let spec: Option<String> = tx
            .query_row(
                "SELECT spec FROM steps WHERE run_id = ?1 AND idx = ?2 AND state = 'pending'",
                params![run.0, next],
                |r| r.get(0),
            )
            .optional()
            .ctx("reading next step")?;
        let Some(spec) = spec else {
            return Ok(None);
        };
        let spec: StepSpec = serde_json::from_str(&spec)
            .map_err(|e| StoreError::Corrupt(format!("step {run}:{next}: {e}")))?;
        let moved = if matches!(spec, StepSpec::Model {}) {
            let key = turn_session_key(&tx, run)?;
            take_inputs(&tx, run, &key)?
        } else {
            Vec::new()
        };
        tx.execute(
            "UPDATE steps SET state = 'running', attempts = attempts + 1, started_at_ms = ?3,
                 finished_at_ms = NULL, error = NULL
             WHERE run_id = ?1 AND idx = ?2",
            params![run.0, next, now_ms()],
        )
        .ctx("starting step")?;
        tx.commit().ctx("committing step start")?;
        let step = self
            .steps_of_run(&run.0)?
            .into_iter()
            .nth(next as usize)
            .ok_or_else(|| StoreError::Corrupt(format!("step {run}:{next} vanished")))?;
        Ok(Some((step, moved)))
    }

    /// Checkpoints a finished model step: the assistant message joins the transcript and the
    /// session's usage, and the turn either goes on (a tool step per call, then another model
    /// step; or another model step for inputs that arrived meanwhile) or finishes.
    pub fn finish_model_step(
        &mut self,
        run: &RunId,
        index: u32,
        boot: Boot,
        answer: &Message,
        event_seq: u64,
    ) -> Result<(StoredMessage, TurnProgress)> {
        let tx = self.write_tx().ctx("starting finish_model_step")?;
        let next = check_lease(&tx, run, boot)?;
        if next != index {
            return Err(StoreError::Corrupt(format!(
                "turn {run} is at step {next}, not {index}"
            )));
        }
        let Message::Assistant(a) = answer else {
            return Err(StoreError::Corrupt(
                "a model step must answer as the assistant".into(),
            ));
        };
        let (key, usage): (String, Option<String>) = tx
            .query_row(
                "SELECT session_key, usage FROM turns WHERE run_id = ?1",
                [&run.0],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ctx("reading turn")?;
        end_step(&tx, run, index, "succeeded", None)?;
        let stored = append_tx(&tx, &key, Some(&run.0), answer)?;
        let mut total: Usage = usage
            .and_then(|u| serde_json::from_str(&u).ok())
            .unwrap_or_default();
        total.add(&a.usage);
        tx.execute(
            "UPDATE turns SET usage = ?2, model = ?3 WHERE run_id = ?1",
            params![
                run.0,
                encode(&total, "usage")?,
                format!("{}/{}", a.provider, a.model)
            ],
        )
        .ctx("recording usage")?;
        tx.execute(
            "UPDATE sessions SET input_tokens = input_tokens + ?2, output_tokens = output_tokens + ?3,
                 total_tokens = total_tokens + ?4 WHERE key = ?1",
            params![
                key,
                a.usage.input as i64,
                a.usage.output as i64,
                a.usage.total_tokens as i64
            ],
        )
        .ctx("adding session usage")?;
        set_event_seq(&tx, run, event_seq)?;
        let mut more: Vec<StepSpec> = a
            .tool_calls()
            .map(|(id, name, args)| StepSpec::Tool {
                call_id: id.to_owned(),
                name: name.to_owned(),
                arguments: args.clone(),
            })
            .collect();
        let waiting: bool = tx
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM turn_inputs WHERE run_id = ?1)",
                [&run.0],
                |r| r.get(0),
            )
            .ctx("looking for waiting inputs")?;
        let progress = if more.is_empty() && !waiting {
            close_turn(
                &tx,
                run,
                RunState::Succeeded,
                None,
                None,
                Some(a.stop_reason.as_str()),
                Some(&a.text()),
            )?;
            TurnProgress::Finished
        } else {
            more.push(StepSpec::Model {});
            append_steps(&tx, run, &more)?;
            tx.execute(
                "UPDATE runs SET next_step = ?2, updated_at_ms = ?3 WHERE id = ?1",
                params![run.0, index + 1, now_ms()],
            )
            .ctx("advancing turn")?;
            TurnProgress::Continues
        };
        tx.commit().ctx("committing model step")?;
        Ok((stored, progress))
    }

    /// Checkpoints a finished tool step: its result joins the transcript, and the turn moves
    /// to its next step.
    pub fn finish_tool_step(
        &mut self,
        run: &RunId,
        index: u32,
        boot: Boot,
        result: &Message,
        event_seq: u64,
    ) -> Result<StoredMessage> {
        let tx = self.write_tx().ctx("starting finish_tool_step")?;
        let next = check_lease(&tx, run, boot)?;
        if next != index {
            return Err(StoreError::Corrupt(format!(
                "turn {run} is at step {next}, not {index}"
            )));
        }
        let key = turn_session_key(&tx, run)?;
        let is_error = matches!(result, Message::ToolResult(r) if r.is_error);
        end_step(
            &tx,
            run,
            index,
            if is_error { "failed" } else { "succeeded" },
            None,
        )?;
        let stored = append_tx(&tx, &key, Some(&run.0), result)?;
        set_event_seq(&tx, run, event_seq)?;
        tx.execute(
            "UPDATE runs SET next_step = ?2, updated_at_ms = ?3 WHERE id = ?1",
            params![run.0, index + 1, now_ms()],
        )
        .ctx("advancing turn")?;
        tx.commit().ctx("committing tool step")?;
        Ok(stored)
    }

    /// Ends a turn that failed or was cancelled at step `index`. Inputs still waiting for it
    /// join the transcript, so no message a person sent is lost. Returns those messages.
    #[allow(clippy::too_many_arguments)]
    pub fn fail_turn(
        &mut self,
        run: &RunId,
        index: Option<u32>,
        boot: Boot,
        cancelled: bool,
        error: &str,
        error_kind: &str,
        event_seq: u64,
    ) -> Result<Vec<StoredMessage>> {
        let tx = self.write_tx().ctx("starting fail_turn")?;
        check_lease(&tx, run, boot)?;
        let key = turn_session_key(&tx, run)?;
        if let Some(i) = index {
            end_step(
                &tx,
                run,
                i,
                if cancelled { "cancelled" } else { "failed" },
                Some(error),
            )?;
        }
        let moved = take_inputs(&tx, run, &key)?;
        set_event_seq(&tx, run, event_seq)?;
        let (state, stop) = if cancelled {
            (RunState::Cancelled, "aborted")
        } else {
            (RunState::Failed, "error")
        };
        close_turn(
            &tx,
            run,
            state,
            Some(error),
            Some(error_kind),
            Some(stop),
            None,
        )?;
        tx.commit().ctx("committing turn failure")?;
        Ok(moved)
    }

    /// Asks every active turn of `key` (or just `run_id`) to stop: queued ones are cancelled
    /// at once, running ones are flagged for their lease holder. Returns the affected ids.
    pub fn cancel_turns(&mut self, key: &str, run_id: Option<&str>) -> Result<Vec<String>> {
        let ids: Vec<String> = self
            .active_turns(key)?
            .into_iter()
            .filter(|id| run_id.is_none_or(|r| r == id))
            .collect();
        let tx = self.write_tx().ctx("starting cancel_turns")?;
        let now = now_ms();
        for id in &ids {
            tx.execute(
                "UPDATE runs SET cancel_requested = 1, updated_at_ms = ?2 WHERE id = ?1",
                params![id, now],
            )
            .ctx("flagging turn")?;
            let queued = tx
                .execute(
                    "UPDATE runs SET state = 'cancelled', finished_at_ms = ?2,
                         error = 'cancelled before it started'
                     WHERE id = ?1 AND state = 'queued' AND lease_epoch IS NULL",
                    params![id, now],
                )
                .ctx("cancelling queued turn")?;
            if queued > 0 {
                let run = RunId(id.clone());
                // The message that would have started it stays in the transcript.
                take_inputs(&tx, &run, key)?;
                close_turn(
                    &tx,
                    &run,
                    RunState::Cancelled,
                    Some("cancelled before it started"),
                    Some("aborted"),
                    Some("aborted"),
                    None,
                )?;
            }
        }
        tx.commit().ctx("committing cancel")?;
        Ok(ids)
    }

    /// Records that the turn's events reached `seq` (between checkpoints, e.g. at release).
    pub fn note_event_seq(&mut self, run: &RunId, seq: u64) -> Result<()> {
        let tx = self.write_tx().ctx("starting note_event_seq")?;
        set_event_seq(&tx, run, seq)?;
        tx.commit().ctx("committing event seq")?;
        Ok(())
    }

    /// Stores an event for the successor to send (see [`Store::relayed_since`]).
    pub fn relay_event(&mut self, event: &str, payload: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO relay_events(event, payload, created_at_ms) VALUES (?1, ?2, ?3)",
                params![event, payload, now_ms()],
            )
            .ctx("relaying event")?;
        Ok(())
    }

    /// Relayed events after `cursor`: `(id, event, payload)`, oldest first.
    pub fn relayed_since(&self, cursor: i64) -> Result<Vec<(i64, String, String)>> {
        collect(
            &self.conn,
            "SELECT id, event, payload FROM relay_events WHERE id > ?1 ORDER BY id LIMIT 1000",
            [cursor],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            "reading relayed events",
        )
    }

    /// Where a process that started at `started_at_ms` begins reading relayed events: after
    /// the newest one written before it started (0 when none). Drops events older than
    /// `keep_ms`.
    pub fn relay_cursor(&mut self, started_at_ms: i64, keep_ms: i64) -> Result<i64> {
        self.conn
            .execute(
                "DELETE FROM relay_events WHERE created_at_ms < ?1",
                [now_ms() - keep_ms],
            )
            .ctx("pruning relayed events")?;
        self.conn
            .query_row(
                "SELECT COALESCE(MAX(id), 0) FROM relay_events WHERE created_at_ms < ?1",
                [started_at_ms],
                |r| r.get(0),
            )
            .ctx("reading relay head")
    }

    fn steps_of_run(&self, id: &str) -> Result<Vec<StepRecord>> {
        Ok(self.get_run(id)?.steps)
    }
}
