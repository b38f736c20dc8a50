//! The Discord channel's durable state (migration 7): inbound message ids, queued replies,
//! pairing requests and approved senders, and the gateway session.
//!
//! Exactly once: an inbound message id is inserted in the transaction that creates its turn
//! ([`Store::discord_accept`]), so a message Discord delivers twice (a replay on RESUME, two
//! processes overlapping in a handover) starts one turn. A reply is queued in the
//! transaction that marks its message answered ([`Store::discord_queue_reply`]), claimed by
//! one boot at a time, and posted chunk by chunk with the nonce `<nonce>.<chunk>`; a claim of
//! a dead boot goes back to the queue with the chunks already posted counted. A message of
//! `send` is queued under its idempotency key ([`Store::discord_queue_send`]): the same key
//! finds the same row, so a retried `send` never queues twice.

use rusqlite::{OptionalExtension, params};

use crate::agent::{NewTurn, collect, submit_turn_tx};
use crate::{Ctx, Result, Store, StoreError, now_ms};

/// An inbound message to record.
#[derive(Debug, Clone)]
pub struct DiscordInbound<'a> {
    pub message_id: &'a str,
    pub channel_id: &'a str,
    pub author_id: &'a str,
}

/// The persisted gateway session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscordSession {
    pub session_id: Option<String>,
    pub seq: u64,
    pub resume_url: Option<String>,
    /// The boot that holds the live connection, if any.
    pub owner_epoch: Option<i64>,
    /// That boot's pid and start time (to tell whether it still lives).
    pub owner_pid: Option<u32>,
    pub owner_started_at_ms: i64,
}

/// A message whose turn ended and whose reply is not queued yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueReply {
    pub message_id: String,
    pub channel_id: String,
    pub run_id: String,
    /// The run's state: `succeeded`, `failed` or `cancelled`.
    pub run_state: String,
    pub final_text: Option<String>,
    pub error: Option<String>,
}

/// A reply claimed for posting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscordOutbound {
    pub id: i64,
    pub channel_id: String,
    pub content: String,
    pub nonce: String,
    /// Chunks already posted by an earlier attempt.
    pub chunks_sent: u32,
    pub attempts: u32,
}

/// What [`Store::discord_queue_send`] did with an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueuedSend {
    /// The key was new: a row was queued (its id).
    New(i64),
    /// The key names a row queued earlier for the same channel and text (its id).
    Existing(i64),
    /// The key names a row queued earlier for another channel or text; nothing was queued.
    Conflict { channel_id: String },
}

/// Where a queued message stands, for whoever waits for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundStatus {
    /// `pending`, `sending`, `sent` or `failed`.
    pub state: String,
    pub error: Option<String>,
    /// The ids of the chunks posted so far, in order.
    pub message_ids: Vec<String>,
}

/// A pending pairing request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscordPairingRequest {
    pub code: String,
    pub user_id: String,
    pub username: String,
    pub created_at_ms: i64,
    pub last_seen_ms: i64,
    pub expires_at_ms: i64,
}

/// What a message from an unknown sender led to under `pairing`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairingOutcome {
    /// A new request with this code: tell the sender.
    Created(String),
    /// The sender has a pending request already (its code).
    Pending(String),
    /// Too many requests are pending; nothing was created.
    Full,
    /// The message was seen before (a redelivery).
    Duplicate,
}

impl Store {
    /// Records `msg` and, when `turn` is given, queues its turn, in one transaction, and
    /// notes `seq` as the session's sequence. Returns `false` (and changes nothing but the
    /// sequence) when the message was recorded before.
    pub fn discord_accept(
        &mut self,
        msg: &DiscordInbound<'_>,
        turn: &NewTurn<'_>,
        seq: Option<u64>,
    ) -> Result<bool> {
        let tx = self.write_tx().ctx("starting discord_accept")?;
        let now = now_ms();
        let fresh = tx
            .execute(
                "INSERT OR IGNORE INTO discord_inbound
                     (message_id, channel_id, author_id, session_key, run_id, state, received_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'turn', ?6)",
                params![
                    msg.message_id,
                    msg.channel_id,
                    msg.author_id,
                    turn.session_key,
                    turn.run_id,
                    now
                ],
            )
            .ctx("recording the inbound message")?
            == 1;
        if fresh {
            submit_turn_tx(&tx, turn, None)?;
        }
        if let Some(s) = seq {
            note_seq(&tx, s)?;
        }
        tx.commit().ctx("committing the inbound message")?;
        Ok(fresh)
    }

    /// Records a message from an unknown sender under `pairing`: a request with a new code
    /// (made by `new_code`) unless one is pending for the sender or `max_pending` are
    /// pending. Expired requests are dropped first.
    #[allow(clippy::too_many_arguments)]
    pub fn discord_pairing_request(
        &mut self,
        msg: &DiscordInbound<'_>,
        username: &str,
        ttl_ms: i64,
        max_pending: u32,
        seq: Option<u64>,
        mut new_code: impl FnMut() -> String,
    ) -> Result<PairingOutcome> {
        let tx = self.write_tx().ctx("starting discord_pairing_request")?;
        let now = now_ms();
        let fresh = tx
            .execute(
                "INSERT OR IGNORE INTO discord_inbound
                     (message_id, channel_id, author_id, state, received_at_ms)
                 VALUES (?1, ?2, ?3, 'pairing', ?4)",
                params![msg.message_id, msg.channel_id, msg.author_id, now],
            )
            .ctx("recording the inbound message")?
            == 1;
        if let Some(s) = seq {
            note_seq(&tx, s)?;
        }
        if !fresh {
            tx.commit().ctx("committing the sequence")?;
            return Ok(PairingOutcome::Duplicate);
        }
        tx.execute(
            "DELETE FROM discord_pairing WHERE expires_at_ms <= ?1",
            [now],
        )
        .ctx("dropping expired pairing requests")?;
        let existing: Option<String> = tx
            .query_row(
                "SELECT code FROM discord_pairing WHERE user_id = ?1",
                [msg.author_id],
                |r| r.get(0),
            )
            .optional()
            .ctx("finding the sender's request")?;
        let out = if let Some(code) = existing {
            tx.execute(
                "UPDATE discord_pairing SET last_seen_ms = ?2, username = ?3 WHERE code = ?1",
                params![code, now, username],
            )
            .ctx("touching the pairing request")?;
            PairingOutcome::Pending(code)
        } else {
            let pending: u32 = tx
                .query_row("SELECT COUNT(*) FROM discord_pairing", [], |r| r.get(0))
                .ctx("counting pairing requests")?;
            if pending >= max_pending {
                PairingOutcome::Full
            } else {
                // A code collision is astronomically unlikely; try a few anyway.
                let mut code = new_code();
                for _ in 0..8 {
                    let taken: bool = tx
                        .query_row(
                            "SELECT 1 FROM discord_pairing WHERE code = ?1",
                            [&code],
                            |_| Ok(true),
                        )
                        .optional()
                        .ctx("checking the code")?
                        .unwrap_or(false);
                    if !taken {
                        break;
                    }
                    code = new_code();
                }
                tx.execute(
                    "INSERT INTO discord_pairing
                         (code, user_id, username, created_at_ms, last_seen_ms, expires_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
                    params![code, msg.author_id, username, now, now + ttl_ms],
                )
                .ctx("creating the pairing request")?;
                PairingOutcome::Created(code)
            }
        };
        tx.commit().ctx("committing the pairing request")?;
        Ok(out)
    }

    /// Pending (unexpired) pairing requests, oldest first.
    pub fn discord_pairing_list(&self) -> Result<Vec<DiscordPairingRequest>> {
        collect(
            &self.conn,
            &format!("{PAIRING_COLUMNS} WHERE expires_at_ms > ?1 ORDER BY created_at_ms"),
            [now_ms()],
            pairing_row,
            "listing pairing requests",
        )
    }

    /// Approves the pending request with `code` (case-insensitive): its sender may send
    /// direct messages from now on. Returns the request, or `None` if no unexpired request
    /// has that code.
    pub fn discord_pairing_approve(&mut self, code: &str) -> Result<Option<DiscordPairingRequest>> {
        let tx = self.write_tx().ctx("starting pairing approval")?;
        let now = now_ms();
        let req = pending_request(&tx, code, now)?;
        if let Some(r) = &req {
            tx.execute(
                "INSERT OR REPLACE INTO discord_allowed(user_id, username, code, approved_at_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![r.user_id, r.username, r.code, now],
            )
            .ctx("approving the sender")?;
            tx.execute("DELETE FROM discord_pairing WHERE code = ?1", [&r.code])
                .ctx("closing the pairing request")?;
        }
        tx.commit().ctx("committing the approval")?;
        Ok(req)
    }

    /// Drops the pending request with `code` without approving its sender, which frees its
    /// place among the pending ones; a later message from that sender asks again. Returns
    /// the request, or `None` if no unexpired request has that code.
    pub fn discord_pairing_dismiss(&mut self, code: &str) -> Result<Option<DiscordPairingRequest>> {
        let tx = self.write_tx().ctx("starting pairing dismissal")?;
        let req = pending_request(&tx, code, now_ms())?;
        if let Some(r) = &req {
            tx.execute("DELETE FROM discord_pairing WHERE code = ?1", [&r.code])
                .ctx("dismissing the pairing request")?;
        }
        tx.commit().ctx("committing the dismissal")?;
        Ok(req)
    }

    /// Whether `user_id` was approved by pairing.
    pub fn discord_is_approved(&self, user_id: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM discord_allowed WHERE user_id = ?1",
                [user_id],
                |_| Ok(true),
            )
            .optional()
            .ctx("checking an approved sender")?
            .unwrap_or(false))
    }

    /// Notes the sequence of the last dispatch handled.
    pub fn discord_note_seq(&mut self, seq: u64) -> Result<()> {
        let tx = self.write_tx().ctx("starting discord_note_seq")?;
        note_seq(&tx, seq)?;
        tx.commit().ctx("committing the sequence")
    }

    /// The persisted session and who owns it.
    pub fn discord_session(&self) -> Result<Option<DiscordSession>> {
        self.conn
            .query_row(
                "SELECT s.session_id, s.seq, s.resume_url, s.owner_epoch, b.pid,
                        COALESCE(b.started_at_ms, 0)
                 FROM discord_session s LEFT JOIN boots b ON b.epoch = s.owner_epoch
                 WHERE s.id = 1",
                [],
                |r| {
                    Ok(DiscordSession {
                        session_id: r.get(0)?,
                        seq: r.get::<_, i64>(1)?.max(0) as u64,
                        resume_url: r.get(2)?,
                        owner_epoch: r.get(3)?,
                        owner_pid: r.get(4)?,
                        owner_started_at_ms: r.get(5)?,
                    })
                },
            )
            .optional()
            .ctx("reading the discord session")
    }

    /// Makes `epoch` the owner of the connection if the owner is still `expected` (compare
    /// and set). Returns whether it did.
    pub fn discord_claim_session(&mut self, epoch: i64, expected: Option<i64>) -> Result<bool> {
        let tx = self.write_tx().ctx("starting discord_claim_session")?;
        let now = now_ms();
        tx.execute(
            "INSERT OR IGNORE INTO discord_session(id, seq, updated_at_ms) VALUES (1, 0, ?1)",
            [now],
        )
        .ctx("creating the session row")?;
        let n = tx
            .execute(
                "UPDATE discord_session SET owner_epoch = ?1, updated_at_ms = ?3
                 WHERE id = 1 AND owner_epoch IS ?2",
                params![epoch, expected, now],
            )
            .ctx("claiming the session")?;
        tx.commit().ctx("committing the claim")?;
        Ok(n == 1)
    }

    /// Saves the session (`None` forgets it: the next connection identifies) and, with
    /// `release`, gives up ownership; only the owner `epoch` may.
    pub fn discord_save_session(
        &mut self,
        epoch: i64,
        session: Option<(&str, u64, &str)>,
        release: bool,
    ) -> Result<()> {
        let tx = self.write_tx().ctx("starting discord_save_session")?;
        let (id, seq, url) = match session {
            Some((i, s, u)) => (Some(i), s as i64, Some(u)),
            None => (None, 0, None),
        };
        tx.execute(
            "UPDATE discord_session
             SET session_id = ?2, seq = ?3, resume_url = ?4, updated_at_ms = ?5,
                 owner_epoch = CASE WHEN ?6 THEN NULL ELSE owner_epoch END
             WHERE id = 1 AND owner_epoch IS ?1",
            params![epoch, id, seq, url, now_ms(), release],
        )
        .ctx("saving the session")?;
        tx.commit().ctx("committing the session")
    }

    /// Messages whose turn ended and whose reply is not queued yet, oldest first.
    pub fn discord_replies_due(&self, limit: u32) -> Result<Vec<DueReply>> {
        collect(
            &self.conn,
            "SELECT i.message_id, i.channel_id, i.run_id, r.state, t.final_text, r.error
             FROM discord_inbound i
             JOIN runs r ON r.id = i.run_id
             LEFT JOIN turns t ON t.run_id = i.run_id
             WHERE i.state = 'turn' AND r.state IN ('succeeded','failed','cancelled')
             ORDER BY i.received_at_ms, i.message_id LIMIT ?1",
            [limit],
            |r| {
                Ok(DueReply {
                    message_id: r.get(0)?,
                    channel_id: r.get(1)?,
                    run_id: r.get(2)?,
                    run_state: r.get(3)?,
                    final_text: r.get(4)?,
                    error: r.get(5)?,
                })
            },
            "finding due replies",
        )
    }

    /// Inbound messages whose turn has not ended: typing indicators and `status`.
    pub fn discord_open_turns(&self) -> Result<Vec<(String, String)>> {
        collect(
            &self.conn,
            "SELECT i.channel_id, i.run_id FROM discord_inbound i
             JOIN runs r ON r.id = i.run_id
             WHERE i.state = 'turn' AND r.state IN ('queued','running')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
            "finding open turns",
        )
    }

    /// Marks `message_id` answered and queues `content` (if any) for its channel, in one
    /// transaction. Returns whether this call did it (another process may have first).
    pub fn discord_queue_reply(
        &mut self,
        message_id: &str,
        channel_id: &str,
        content: Option<&str>,
    ) -> Result<bool> {
        let tx = self.write_tx().ctx("starting discord_queue_reply")?;
        let n = tx
            .execute(
                "UPDATE discord_inbound SET state = 'replied'
                 WHERE message_id = ?1 AND state = 'turn'",
                [message_id],
            )
            .ctx("marking the message answered")?;
        if n == 1 {
            if let Some(c) = content.filter(|c| !c.trim().is_empty()) {
                let now = now_ms();
                tx.execute(
                    "INSERT INTO discord_outbound
                         (channel_id, content, nonce, source, state, created_at_ms, updated_at_ms)
                     VALUES (?1, ?2, ?3, ?3, 'pending', ?4, ?4)",
                    params![channel_id, c, message_id, now],
                )
                .ctx("queueing the reply")?;
            }
        }
        tx.commit().ctx("committing the reply")?;
        Ok(n == 1)
    }

    /// Queues a message that answers no inbound message (a pairing code, `send`).
    pub fn discord_queue_message(
        &mut self,
        channel_id: &str,
        content: &str,
        nonce: &str,
    ) -> Result<i64> {
        let now = now_ms();
        self.conn
            .execute(
                "INSERT INTO discord_outbound
                     (channel_id, content, nonce, state, created_at_ms, updated_at_ms)
                 VALUES (?1, ?2, ?3, 'pending', ?4, ?4)",
                params![channel_id, content, nonce, now],
            )
            .ctx("queueing a message")?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Queues `content` for `channel_id` under the idempotency key `key` of a `send`, with
    /// the chunk nonces made from `nonce`, unless a row has that key already (see
    /// [`QueuedSend`]). One transaction: of two callers with the same key, one queues.
    pub fn discord_queue_send(
        &mut self,
        key: &str,
        channel_id: &str,
        content: &str,
        nonce: &str,
    ) -> Result<QueuedSend> {
        let tx = self.write_tx().ctx("starting discord_queue_send")?;
        let existing: Option<(i64, String, String)> = tx
            .query_row(
                "SELECT id, channel_id, content FROM discord_outbound WHERE send_key = ?1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .ctx("finding the message of an idempotency key")?;
        let out = match existing {
            Some((id, c, t)) if c == channel_id && t == content => QueuedSend::Existing(id),
            Some((_, c, _)) => QueuedSend::Conflict { channel_id: c },
            None => {
                let now = now_ms();
                tx.execute(
                    "INSERT INTO discord_outbound
                         (channel_id, content, nonce, send_key, state, created_at_ms,
                          updated_at_ms)
                     VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5)",
                    params![channel_id, content, nonce, key, now],
                )
                .ctx("queueing a message to send")?;
                QueuedSend::New(tx.last_insert_rowid())
            }
        };
        tx.commit().ctx("committing the queued message")?;
        Ok(out)
    }

    /// Where queued message `id` stands (`None` if there is no such row).
    pub fn discord_outbound_status(&self, id: i64) -> Result<Option<OutboundStatus>> {
        let row: Option<(String, Option<String>, String)> = self
            .conn
            .query_row(
                "SELECT state, error, message_ids FROM discord_outbound WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .ctx("reading a queued message")?;
        row.map(|(state, error, ids)| {
            Ok(OutboundStatus {
                state,
                error,
                message_ids: message_ids(id, &ids)?,
            })
        })
        .transpose()
    }

    /// Claims queued replies for `epoch`: pending ones, and those a dead boot was posting
    /// (`is_alive(pid, started_at_ms)` says which boots live).
    pub fn discord_claim_outbound(
        &mut self,
        epoch: i64,
        limit: u32,
        is_alive: impl Fn(u32, i64) -> bool,
    ) -> Result<Vec<DiscordOutbound>> {
        let tx = self.write_tx().ctx("starting discord_claim_outbound")?;
        // (id, state, claim epoch, claimer pid, claimer start)
        type Candidate = (i64, String, Option<i64>, Option<u32>, i64);
        let candidates: Vec<Candidate> = collect(
            &tx,
            "SELECT o.id, o.state, o.claim_epoch, b.pid, COALESCE(b.started_at_ms, 0)
             FROM discord_outbound o LEFT JOIN boots b ON b.epoch = o.claim_epoch
             WHERE o.state IN ('pending','sending') ORDER BY o.id LIMIT ?1",
            [limit],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            "finding queued replies",
        )?;
        let now = now_ms();
        let mut out = Vec::new();
        for (id, state, claim, pid, started) in candidates {
            let free = state == "pending"
                || (claim != Some(epoch) && !pid.is_some_and(|p| is_alive(p, started)));
            if !free {
                continue;
            }
            tx.execute(
                "UPDATE discord_outbound SET state = 'sending', claim_epoch = ?2,
                     attempts = attempts + 1, updated_at_ms = ?3 WHERE id = ?1",
                params![id, epoch, now],
            )
            .ctx("claiming a reply")?;
            let o = tx
                .query_row(
                    "SELECT id, channel_id, content, nonce, chunks_sent, attempts
                     FROM discord_outbound WHERE id = ?1",
                    [id],
                    |r| {
                        Ok(DiscordOutbound {
                            id: r.get(0)?,
                            channel_id: r.get(1)?,
                            content: r.get(2)?,
                            nonce: r.get(3)?,
                            chunks_sent: r.get(4)?,
                            attempts: r.get(5)?,
                        })
                    },
                )
                .ctx("reading a claimed reply")?;
            out.push(o);
        }
        tx.commit().ctx("committing the outbound claim")?;
        Ok(out)
    }

    /// Records that chunk `chunks_sent - 1` of reply `id` was posted as Discord message
    /// `message_id`. A chunk counted already is not recorded again.
    pub fn discord_outbound_progress(
        &mut self,
        id: i64,
        chunks_sent: u32,
        message_id: &str,
    ) -> Result<()> {
        let tx = self.write_tx().ctx("starting discord_outbound_progress")?;
        let row: Option<(u32, String)> = tx
            .query_row(
                "SELECT chunks_sent, message_ids FROM discord_outbound WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .ctx("reading a reply's progress")?;
        if let Some((_, ids)) = row.filter(|(done, _)| *done < chunks_sent) {
            let mut ids = message_ids(id, &ids)?;
            ids.push(message_id.to_owned());
            let text = serde_json::to_string(&ids)
                .map_err(|e| StoreError::Corrupt(format!("message ids of reply {id}: {e}")))?;
            tx.execute(
                "UPDATE discord_outbound SET chunks_sent = ?2, message_ids = ?3,
                     updated_at_ms = ?4 WHERE id = ?1",
                params![id, chunks_sent, text, now_ms()],
            )
            .ctx("recording a posted chunk")?;
        }
        tx.commit().ctx("committing a posted chunk")
    }

    /// Ends reply `id`: `sent`, `failed` (with `error`), or back to `pending` for a later
    /// attempt.
    pub fn discord_outbound_end(
        &mut self,
        id: i64,
        state: &str,
        error: Option<&str>,
    ) -> Result<()> {
        self.conn
            .execute(
                "UPDATE discord_outbound SET state = ?2, error = ?3, updated_at_ms = ?4,
                     claim_epoch = CASE WHEN ?2 = 'pending' THEN NULL ELSE claim_epoch END
                 WHERE id = ?1",
                params![id, state, error, now_ms()],
            )
            .ctx("ending a reply")?;
        Ok(())
    }

    /// Counts for `channels.status`: (replies queued or posting, replies failed, turns open).
    pub fn discord_counts(&self) -> Result<(u64, u64, u64)> {
        self.conn
            .query_row(
                "SELECT
                    (SELECT COUNT(*) FROM discord_outbound WHERE state IN ('pending','sending')),
                    (SELECT COUNT(*) FROM discord_outbound WHERE state = 'failed'),
                    (SELECT COUNT(*) FROM discord_inbound WHERE state = 'turn')",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, i64>(2)? as u64,
                    ))
                },
            )
            .ctx("counting discord state")
    }
}

/// The `message_ids` column of reply `id`: a JSON array of strings.
fn message_ids(id: i64, text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|e| {
        StoreError::Corrupt(format!(
            "discord_outbound row {id}: message_ids is not a JSON array of strings: {e}"
        ))
    })
}

const PAIRING_COLUMNS: &str = "SELECT code, user_id, username, created_at_ms, last_seen_ms, \
     expires_at_ms FROM discord_pairing";

fn pairing_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DiscordPairingRequest> {
    Ok(DiscordPairingRequest {
        code: r.get(0)?,
        user_id: r.get(1)?,
        username: r.get(2)?,
        created_at_ms: r.get(3)?,
        last_seen_ms: r.get(4)?,
        expires_at_ms: r.get(5)?,
    })
}

/// The unexpired request with `code` (any case, surrounding space ignored).
fn pending_request(
    tx: &rusqlite::Transaction<'_>,
    code: &str,
    now: i64,
) -> Result<Option<DiscordPairingRequest>> {
    let code = code.trim().to_ascii_uppercase();
    tx.query_row(
        &format!("{PAIRING_COLUMNS} WHERE code = ?1 AND expires_at_ms > ?2"),
        params![code, now],
        pairing_row,
    )
    .optional()
    .ctx("finding the pairing request")
}

fn note_seq(tx: &rusqlite::Transaction<'_>, seq: u64) -> Result<()> {
    tx.execute(
        "INSERT INTO discord_session(id, seq, updated_at_ms) VALUES (1, ?1, ?2)
         ON CONFLICT(id) DO UPDATE SET seq = MAX(seq, excluded.seq)",
        params![seq as i64, now_ms()],
    )
    .ctx("noting the gateway sequence")?;
    Ok(())
}
