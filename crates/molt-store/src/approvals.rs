//! Operator approvals of tool calls. A call that needs one records it by its step's effect
//! key, so a turn that waits across a restart finds the same approval (and its decision)
//! when the step runs again: the wait is durable, and an approved call runs once.

use rusqlite::{OptionalExtension, Row, params};

use crate::{Ctx, FromWord, Result, Store, StoreError, now_ms};

molt_protocol::word_enum!(
    /// Where an approval stands; `cancelled`: the turn ended before anyone decided.
    ApprovalState {
        Pending = "pending",
        Approved = "approved",
        Denied = "denied",
        Cancelled = "cancelled",
    }
);

/// What a tool call asks an operator to approve.
#[derive(Debug, Clone)]
pub struct NewApproval<'a> {
    pub effect_key: &'a str,
    pub run_id: &'a str,
    pub session_key: &'a str,
    pub agent_id: &'a str,
    pub tool: &'a str,
    pub command: &'a str,
    pub cwd: Option<&'a str>,
    /// Why it asks: `always`, or the program the allowlist lacks.
    pub reason: &'a str,
}

/// One approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRecord {
    /// `apr-<8 hex>`: short enough to type.
    pub id: String,
    pub effect_key: String,
    pub run_id: String,
    pub session_key: String,
    pub agent_id: String,
    pub tool: String,
    pub command: String,
    pub cwd: Option<String>,
    pub reason: String,
    pub state: ApprovalState,
    pub created_at_ms: i64,
    pub decided_at_ms: Option<i64>,
    pub decided_by: Option<String>,
}

const COLUMNS: &str = "id, effect_key, run_id, session_key, agent_id, tool, command, cwd, reason, \
                       state, created_at_ms, decided_at_ms, decided_by";

fn from_row(r: &Row<'_>) -> rusqlite::Result<(ApprovalRecord, String)> {
    Ok((
        ApprovalRecord {
            id: r.get(0)?,
            effect_key: r.get(1)?,
            run_id: r.get(2)?,
            session_key: r.get(3)?,
            agent_id: r.get(4)?,
            tool: r.get(5)?,
            command: r.get(6)?,
            cwd: r.get(7)?,
            reason: r.get(8)?,
            state: ApprovalState::Pending,
            created_at_ms: r.get(10)?,
            decided_at_ms: r.get(11)?,
            decided_by: r.get(12)?,
        },
        r.get(9)?,
    ))
}

fn finish(row: (ApprovalRecord, String)) -> Result<ApprovalRecord> {
    let (mut a, state) = row;
    a.state = ApprovalState::from_word(&state)?;
    Ok(a)
}

impl Store {
    /// The approval of a tool step, created `pending` if it has none yet.
    pub fn request_approval(&mut self, new: &NewApproval<'_>) -> Result<ApprovalRecord> {
        if let Some(a) = self.approval_for(new.effect_key)? {
            return Ok(a);
        }
        self.conn
            .execute(
                "INSERT INTO approvals(id, effect_key, run_id, session_key, agent_id, tool,
                    command, cwd, reason, state, created_at_ms)
                 VALUES ('apr-' || lower(hex(randomblob(4))), ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,
                    'pending', ?9)
                 ON CONFLICT(effect_key) DO NOTHING",
                params![
                    new.effect_key,
                    new.run_id,
                    new.session_key,
                    new.agent_id,
                    new.tool,
                    new.command,
                    new.cwd,
                    new.reason,
                    now_ms()
                ],
            )
            .ctx("recording approval request")?;
        self.approval_for(new.effect_key)?
            .ok_or_else(|| StoreError::Corrupt("approval vanished".into()))
    }

    /// The approval of the tool step with `effect_key`, if one was asked for.
    pub fn approval_for(&self, effect_key: &str) -> Result<Option<ApprovalRecord>> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM approvals WHERE effect_key = ?1"),
                [effect_key],
                from_row,
            )
            .optional()
            .ctx("reading approval")?
            .map(finish)
            .transpose()
    }

    /// The approval `id`.
    pub fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"),
                [id],
                from_row,
            )
            .optional()
            .ctx("reading approval")?
            .map(finish)
            .transpose()
    }

    /// Approvals, oldest first: the pending ones, or the newest `limit` of all.
    pub fn list_approvals(&self, pending_only: bool, limit: u32) -> Result<Vec<ApprovalRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM (SELECT *, rowid AS n FROM approvals {} ORDER BY created_at_ms DESC, \
             n DESC LIMIT ?1) ORDER BY created_at_ms, n",
            if pending_only {
                "WHERE state = 'pending'"
            } else {
                ""
            }
        );
        let mut st = self.conn.prepare(&sql).ctx("preparing approvals")?;
        let rows = st
            .query_map([limit], from_row)
            .ctx("reading approvals")?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx("reading approvals")?;
        rows.into_iter().map(finish).collect()
    }

    /// Decides a pending approval. Deciding one that is decided already is an error that
    /// says how it was decided.
    pub fn decide_approval(&mut self, id: &str, approve: bool, by: &str) -> Result<ApprovalRecord> {
        let state = if approve {
            ApprovalState::Approved
        } else {
            ApprovalState::Denied
        };
        let n = self
            .conn
            .execute(
                "UPDATE approvals SET state = ?2, decided_at_ms = ?3, decided_by = ?4
                 WHERE id = ?1 AND state = 'pending'",
                params![id, state.as_str(), now_ms(), by],
            )
            .ctx("deciding approval")?;
        let a = self
            .approval(id)?
            .ok_or_else(|| StoreError::NoSuchApproval(id.to_owned()))?;
        if n == 0 {
            return Err(StoreError::AlreadyDecided {
                id: id.to_owned(),
                state: a.state.as_str(),
            });
        }
        Ok(a)
    }
}
