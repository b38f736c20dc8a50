//! Importing another gateway's sessions and cron jobs, in one transaction.
//!
//! The importer reads the source (OpenClaw's state dir) into an [`ImportBatch`]; this module
//! writes it. Everything in a batch commits together or not at all, so a failed import leaves
//! nothing half imported. What was imported is remembered in `meta` (one key per session and
//! per job, under the batch's `origin`), which makes a second import add only what is new:
//!
//! - a session seen before gets the source's messages past the ones imported last time,
//!   provided molt's copy has not moved on since (a turn in molt, or a reset); otherwise it is
//!   reported as a conflict and left alone;
//! - a session or job imported before and then deleted in molt is not brought back.

use molt_protocol::transcript::Message;
use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};

use crate::{Ctx, Result, Store, StoreError, now_ms};

/// One session to import: its key, its current transcript in order, and its facts.
#[derive(Debug, Clone)]
pub struct ImportedSession {
    /// `agent:<agentId>:<rest>`.
    pub key: String,
    pub agent_id: String,
    /// The source's id for the transcript (OpenClaw's `sessionId`); molt keeps it.
    pub session_id: String,
    pub label: Option<String>,
    /// A `provider/model` override.
    pub model: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The whole transcript of `session_id`, oldest first.
    pub messages: Vec<Message>,
}

/// One cron job to import, in molt's shape (the spec is molt's JSON).
#[derive(Debug, Clone)]
pub struct ImportedCronJob {
    /// The source's id, kept so a second import recognizes the job.
    pub id: String,
    pub name: String,
    pub agent_id: String,
    pub enabled: bool,
    pub spec: String,
    pub next_run_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

/// What one import writes.
#[derive(Debug, Clone, Default)]
pub struct ImportBatch {
    /// Names the source in the `meta` keys (`openclaw`), so imports from two sources never
    /// mistake each other's records.
    pub origin: String,
    pub sessions: Vec<ImportedSession>,
    pub cron_jobs: Vec<ImportedCronJob>,
}

/// What happened to one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum SessionOutcome {
    /// Created with this many messages.
    New { messages: usize },
    /// Imported before; this many newer messages were appended.
    Appended { messages: usize },
    /// Imported before, and nothing new.
    Unchanged,
    /// Not imported, for the reason given.
    Skipped { reason: String },
}

/// What happened to one cron job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum JobOutcome {
    New,
    Unchanged,
    Skipped { reason: String },
}

/// The result of [`Store::import_batch`], in the batch's order.
#[derive(Debug, Clone, Default)]
pub struct ImportResult {
    pub sessions: Vec<(String, SessionOutcome)>,
    pub cron_jobs: Vec<(String, JobOutcome)>,
}

/// What `meta` remembers of an imported session.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionMark {
    session_id: String,
    /// Source messages imported so far.
    imported: usize,
}

impl Store {
    /// Writes `batch` in one transaction, or, with `commit = false`, works out the same result
    /// and rolls back (a dry run that reports exactly what a real run would do).
    pub fn import_batch(&mut self, batch: &ImportBatch, commit: bool) -> Result<ImportResult> {
        if batch.origin.is_empty() || batch.origin.contains('.') {
            return Err(StoreError::Corrupt(format!(
                "import origin {:?} must be a plain word",
                batch.origin
            )));
        }
        let tx = self.write_tx().ctx("starting import")?;
        let mut result = ImportResult::default();
        for s in &batch.sessions {
            let outcome = import_session(&tx, &batch.origin, s)?;
            result.sessions.push((s.key.clone(), outcome));
        }
        for j in &batch.cron_jobs {
            let outcome = import_job(&tx, &batch.origin, j)?;
            result.cron_jobs.push((j.id.clone(), outcome));
        }
        if commit {
            tx.commit().ctx("committing import")?;
        }
        Ok(result)
    }
}

fn mark_key(origin: &str, kind: &str, id: &str) -> String {
    format!("import.{origin}.{kind}.{id}")
}

fn read_mark(tx: &Transaction<'_>, key: &str) -> Result<Option<String>> {
    tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
        .ctx("reading import record")
}

fn write_mark(tx: &Transaction<'_>, key: &str, value: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = ?2",
        params![key, value],
    )
    .ctx("writing import record")?;
    Ok(())
}

fn role(m: &Message) -> &'static str {
    match m {
        Message::User(_) => "user",
        Message::Assistant(_) => "assistant",
        Message::ToolResult(_) => "toolResult",
        Message::System(_) => "system",
    }
}

fn insert_messages(
    tx: &Transaction<'_>,
    key: &str,
    session_id: &str,
    messages: &[Message],
) -> Result<()> {
    let mut seq: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE session_key = ?1",
            [key],
            |r| r.get(0),
        )
        .ctx("reading transcript length")?;
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO messages(session_key, session_id, seq, run_id, role, body, created_at_ms)
             VALUES (?1, ?2, ?3, NULL, ?4, ?5, ?6)",
        )
        .ctx("preparing message insert")?;
    for m in messages {
        seq += 1;
        let body = serde_json::to_string(m)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode an imported message: {e}")))?;
        stmt.execute(params![key, session_id, seq, role(m), body, m.timestamp()])
            .ctx("importing a message")?;
    }
    Ok(())
}

fn import_session(
    tx: &Transaction<'_>,
    origin: &str,
    s: &ImportedSession,
) -> Result<SessionOutcome> {
    let mark_key = mark_key(origin, "session", &s.key);
    let mark: Option<SessionMark> = read_mark(tx, &mark_key)?
        .map(|v| serde_json::from_str(&v))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("import record {mark_key}: {e}")))?;
    let current: Option<String> = tx
        .query_row(
            "SELECT session_id FROM sessions WHERE key = ?1",
            [&s.key],
            |r| r.get(0),
        )
        .optional()
        .ctx("reading session")?;
    let skipped = |reason: &str| {
        Ok(SessionOutcome::Skipped {
            reason: reason.to_owned(),
        })
    };
    match (mark, current) {
        (None, None) => {
            tx.execute(
                "INSERT INTO sessions(key, agent_id, session_id, label, model, created_at_ms,
                    updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    s.key,
                    s.agent_id,
                    s.session_id,
                    s.label,
                    s.model,
                    s.created_at_ms,
                    s.updated_at_ms
                ],
            )
            .ctx("creating an imported session")?;
            insert_messages(tx, &s.key, &s.session_id, &s.messages)?;
            let mark = SessionMark {
                session_id: s.session_id.clone(),
                imported: s.messages.len(),
            };
            write_mark(tx, &mark_key, &encode_mark(&mark)?)?;
            Ok(SessionOutcome::New {
                messages: s.messages.len(),
            })
        }
        (None, Some(_)) => skipped(
            "molt already has a session with this key (not from an import); delete it \
             (`molt sessions delete KEY`) and import again to bring the OpenClaw one over",
        ),
        (Some(_), None) => skipped("imported before and since deleted in molt; not brought back"),
        (Some(mark), Some(current)) => {
            if mark.session_id != s.session_id {
                return skipped(
                    "OpenClaw started a new transcript for this key (a reset) after the last \
                     import; molt keeps the one it imported",
                );
            }
            if current != mark.session_id {
                return skipped("reset in molt since the last import; nothing appended");
            }
            if s.messages.len() <= mark.imported {
                return Ok(SessionOutcome::Unchanged);
            }
            let in_molt: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM messages WHERE session_key = ?1 AND session_id = ?2",
                    params![s.key, current],
                    |r| r.get(0),
                )
                .ctx("counting messages")?;
            if in_molt as usize != mark.imported {
                return skipped(
                    "continued in both molt and OpenClaw since the last import; the newer \
                     OpenClaw messages are not appended",
                );
            }
            let new = &s.messages[mark.imported..];
            insert_messages(tx, &s.key, &s.session_id, new)?;
            tx.execute(
                "UPDATE sessions SET updated_at_ms = MAX(updated_at_ms, ?2) WHERE key = ?1",
                params![s.key, s.updated_at_ms],
            )
            .ctx("touching session")?;
            let mark = SessionMark {
                session_id: s.session_id.clone(),
                imported: s.messages.len(),
            };
            write_mark(tx, &mark_key, &encode_mark(&mark)?)?;
            Ok(SessionOutcome::Appended {
                messages: new.len(),
            })
        }
    }
}

fn encode_mark(mark: &SessionMark) -> Result<String> {
    serde_json::to_string(mark)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode an import record: {e}")))
}

fn import_job(tx: &Transaction<'_>, origin: &str, j: &ImportedCronJob) -> Result<JobOutcome> {
    let mark_key = mark_key(origin, "cron", &j.id);
    let marked = read_mark(tx, &mark_key)?.is_some();
    let exists: bool = tx
        .query_row("SELECT 1 FROM cron_jobs WHERE id = ?1", [&j.id], |_| Ok(()))
        .optional()
        .ctx("reading cron job")?
        .is_some();
    match (marked, exists) {
        (true, true) => Ok(JobOutcome::Unchanged),
        (true, false) => Ok(JobOutcome::Skipped {
            reason: "imported before and since removed in molt; not brought back".into(),
        }),
        (false, true) => Ok(JobOutcome::Skipped {
            reason: "molt already has a job with this id".into(),
        }),
        (false, false) => {
            let now = now_ms();
            tx.execute(
                "INSERT INTO cron_jobs(id, name, agent_id, enabled, spec, next_run_at_ms,
                    created_at_ms, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    j.id,
                    j.name,
                    j.agent_id,
                    j.enabled,
                    j.spec,
                    j.next_run_at_ms,
                    j.created_at_ms,
                    now
                ],
            )
            .ctx("creating an imported cron job")?;
            write_mark(tx, &mark_key, "{}")?;
            Ok(JobOutcome::New)
        }
    }
}
