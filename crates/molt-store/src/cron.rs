//! Cron jobs and their fires. The store knows a job's name, agent, enabled flag, next run and
//! error count; its schedule and payload are the gateway's JSON (`spec`).
//!
//! The invariant: a fire is the row `(job_id, scheduled_at_ms)`, inserted in the same
//! transaction that creates what it runs (an exec run, a turn, or a system message) and that
//! advances the job's `next_run_at_ms`. An insert that conflicts means another process (a
//! handover's overlap) or an earlier attempt fired that time already: nothing else happens.

use rusqlite::{OptionalExtension, Row, Transaction, params};

use crate::agent::{NewTurn, QueueMode, collect};
use crate::{Ctx, Result, Store, StoreError, now_ms};
use molt_protocol::methods::tasks::StepSpec;
use molt_protocol::transcript::{Message, SystemMessage, TextBlock};

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronJobRecord {
    pub id: String,
    pub name: String,
    pub agent_id: String,
    pub enabled: bool,
    /// The gateway's JSON: schedule, payload, session target, …
    pub spec: String,
    pub next_run_at_ms: Option<i64>,
    pub consecutive_errors: u32,
    pub last_run_at_ms: Option<i64>,
    pub last_status: Option<String>,
    pub last_error: Option<String>,
    pub last_duration_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// When the job's latest fire started, while it runs.
    pub running_since_ms: Option<i64>,
}

const JOB_COLUMNS: &str = "j.id, j.name, j.agent_id, j.enabled, j.spec, j.next_run_at_ms, \
     j.consecutive_errors, j.last_run_at_ms, j.last_status, j.last_error, j.last_duration_ms, \
     j.created_at_ms, j.updated_at_ms, \
     (SELECT MAX(f.started_at_ms) FROM cron_fires f WHERE f.job_id = j.id AND f.state = 'started')";

fn job_from_row(r: &Row<'_>) -> rusqlite::Result<CronJobRecord> {
    Ok(CronJobRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        agent_id: r.get(2)?,
        enabled: r.get(3)?,
        spec: r.get(4)?,
        next_run_at_ms: r.get(5)?,
        consecutive_errors: r.get(6)?,
        last_run_at_ms: r.get(7)?,
        last_status: r.get(8)?,
        last_error: r.get(9)?,
        last_duration_ms: r.get(10)?,
        created_at_ms: r.get(11)?,
        updated_at_ms: r.get(12)?,
        running_since_ms: r.get(13)?,
    })
}

/// What a job's fields are set to by add or update.
#[derive(Debug, Clone)]
pub struct CronJobFields<'a> {
    pub name: &'a str,
    pub agent_id: &'a str,
    pub enabled: bool,
    pub spec: &'a str,
    pub next_run_at_ms: Option<i64>,
}

/// What one fire runs, created in the claiming transaction.
#[derive(Debug, Clone)]
pub enum FireAction {
    /// A durable exec run.
    Exec { title: String, step: StepSpec },
    /// An agent turn (queued for the agent's dispatcher) in `session_key`.
    Turn {
        run_id: String,
        session_key: String,
        agent_id: String,
        text: String,
    },
    /// A system message appended to `session_key`; the fire is done at once.
    SystemEvent {
        session_key: String,
        agent_id: String,
        text: String,
    },
}

/// One fire to claim.
#[derive(Debug, Clone)]
pub struct FireClaim {
    pub job_id: String,
    pub job_name: String,
    pub scheduled_at_ms: i64,
    /// `scheduled`, `catch-up` or `manual`.
    pub trigger: &'static str,
    pub action: FireAction,
    /// The job's next run after this fire; `None` leaves it (a manual fire).
    pub next_run_at_ms: Option<Option<i64>>,
}

/// What claiming one fire did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// Fired now; the run it created (none for a system event, which is done).
    Fired { run_id: Option<String> },
    /// That scheduled time was fired before (by this process or another).
    AlreadyFired,
    /// The job is gone.
    NoJob,
}

/// A fire as the run log shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FireRecord {
    pub job_id: String,
    pub job_name: String,
    pub scheduled_at_ms: i64,
    pub trigger: String,
    pub run_id: Option<String>,
    pub session_key: Option<String>,
    /// `started`, `ok`, `error` or `skipped`.
    pub state: String,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub error: Option<String>,
    pub summary: Option<String>,
}

const FIRE_COLUMNS: &str = "job_id, job_name, scheduled_at_ms, trigger, run_id, session_key, \
     state, started_at_ms, finished_at_ms, error, summary";

fn fire_from_row(r: &Row<'_>) -> rusqlite::Result<FireRecord> {
    Ok(FireRecord {
        job_id: r.get(0)?,
        job_name: r.get(1)?,
        scheduled_at_ms: r.get(2)?,
        trigger: r.get(3)?,
        run_id: r.get(4)?,
        session_key: r.get(5)?,
        state: r.get(6)?,
        started_at_ms: r.get(7)?,
        finished_at_ms: r.get(8)?,
        error: r.get(9)?,
        summary: r.get(10)?,
    })
}

/// A started fire whose run has ended: what the scheduler records next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedFire {
    pub job_id: String,
    pub scheduled_at_ms: i64,
    pub run_id: String,
    /// The run's state: `succeeded`, `failed` or `cancelled`.
    pub run_state: String,
    pub error: Option<String>,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    /// A turn's final text, for the log's summary.
    pub final_text: Option<String>,
}

/// How a finished fire changes its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FireOutcome {
    /// `ok` or `error`.
    pub status: &'static str,
    pub error: Option<String>,
    pub summary: Option<String>,
    pub finished_at_ms: i64,
    pub consecutive_errors: u32,
    /// Set when the job's next run moves (a backoff, or none after a one-shot).
    pub next_run_at_ms: Option<Option<i64>>,
    /// The one-shot job deletes itself.
    pub delete_job: bool,
    /// The job is disabled (a one-shot that failed).
    pub disable_job: bool,
}

fn claim_one(tx: &Transaction<'_>, c: &FireClaim, now: i64) -> Result<Claimed> {
    let exists: bool = tx
        .query_row("SELECT 1 FROM cron_jobs WHERE id = ?1", [&c.job_id], |_| {
            Ok(true)
        })
        .optional()
        .ctx("reading cron job")?
        .unwrap_or(false);
    if !exists {
        return Ok(Claimed::NoJob);
    }
    let inserted = tx
        .execute(
            "INSERT INTO cron_fires(job_id, scheduled_at_ms, job_name, trigger, state,
                started_at_ms)
             VALUES (?1, ?2, ?3, ?4, 'started', ?5)
             ON CONFLICT(job_id, scheduled_at_ms) DO NOTHING",
            params![c.job_id, c.scheduled_at_ms, c.job_name, c.trigger, now],
        )
        .ctx("claiming cron fire")?;
    if inserted == 0 {
        // Whoever fired it advanced the job in the same commit; a job still on this time
        // (a manual fire took the very millisecond) moves on, so it is not found due again.
        if let Some(next) = c.next_run_at_ms {
            tx.execute(
                "UPDATE cron_jobs SET next_run_at_ms = ?2 WHERE id = ?1 AND next_run_at_ms = ?3",
                params![c.job_id, next, c.scheduled_at_ms],
            )
            .ctx("advancing cron job")?;
        }
        return Ok(Claimed::AlreadyFired);
    }
    let (run_id, session_key, done) = match &c.action {
        FireAction::Exec { title, step } => {
            let id = crate::runs::create_run_tx(tx, Some(title), std::slice::from_ref(step), None)?;
            (Some(id.0), None, false)
        }
        FireAction::Turn {
            run_id,
            session_key,
            agent_id,
            text,
        } => {
            crate::agent::submit_turn_tx(
                tx,
                &NewTurn {
                    run_id,
                    session_key,
                    agent_id,
                    text,
                    mode: QueueMode::Followup,
                    origin: "cron",
                },
                None,
            )?;
            (Some(run_id.clone()), Some(session_key.clone()), false)
        }
        FireAction::SystemEvent {
            session_key,
            agent_id,
            text,
        } => {
            crate::agent::ensure_session_tx(tx, session_key, agent_id)?;
            let m = Message::System(SystemMessage {
                content: vec![TextBlock { text: text.clone() }],
                timestamp: now,
                kind: "event".into(),
            });
            crate::agent::append_tx(tx, session_key, None, &m)?;
            (None, Some(session_key.clone()), true)
        }
    };
    tx.execute(
        "UPDATE cron_fires SET run_id = ?3, session_key = ?4, state = ?5, finished_at_ms = ?6
         WHERE job_id = ?1 AND scheduled_at_ms = ?2",
        params![
            c.job_id,
            c.scheduled_at_ms,
            run_id,
            session_key,
            if done { "ok" } else { "started" },
            done.then_some(now)
        ],
    )
    .ctx("recording the fire's run")?;
    if done {
        tx.execute(
            "UPDATE cron_jobs SET last_run_at_ms = ?2, last_status = 'ok', last_error = NULL,
                last_duration_ms = 0, consecutive_errors = 0 WHERE id = ?1",
            params![c.job_id, now],
        )
        .ctx("recording the system event")?;
    } else {
        tx.execute(
            "UPDATE cron_jobs SET last_run_at_ms = ?2 WHERE id = ?1",
            params![c.job_id, now],
        )
        .ctx("recording the fire")?;
    }
    if let Some(next) = c.next_run_at_ms {
        tx.execute(
            "UPDATE cron_jobs SET next_run_at_ms = ?2 WHERE id = ?1",
            params![c.job_id, next],
        )
        .ctx("advancing cron job")?;
    }
    Ok(Claimed::Fired { run_id })
}

impl Store {
    /// Creates a job with a fresh id (`cron-<8 hex>`).
    pub fn cron_add(&mut self, f: &CronJobFields<'_>) -> Result<CronJobRecord> {
        let now = now_ms();
        let id: String = self
            .conn
            .query_row(
                "INSERT INTO cron_jobs(id, name, agent_id, enabled, spec, next_run_at_ms,
                    created_at_ms, updated_at_ms)
                 VALUES ('cron-' || lower(hex(randomblob(4))), ?1, ?2, ?3, ?4, ?5, ?6, ?6)
                 RETURNING id",
                params![f.name, f.agent_id, f.enabled, f.spec, f.next_run_at_ms, now],
                |r| r.get(0),
            )
            .ctx("creating cron job")?;
        self.cron_job(&id)?
            .ok_or_else(|| StoreError::Corrupt(format!("cron job {id} vanished")))
    }

    /// Replaces a job's fields; a change of schedule resets its error count. `None` if
    /// there is no such job.
    pub fn cron_update(
        &mut self,
        id: &str,
        f: &CronJobFields<'_>,
        reset_errors: bool,
    ) -> Result<Option<CronJobRecord>> {
        let n = self
            .conn
            .execute(
                "UPDATE cron_jobs SET name = ?2, agent_id = ?3, enabled = ?4, spec = ?5,
                    next_run_at_ms = ?6, updated_at_ms = ?7,
                    consecutive_errors = CASE WHEN ?8 THEN 0 ELSE consecutive_errors END
                 WHERE id = ?1",
                params![
                    id,
                    f.name,
                    f.agent_id,
                    f.enabled,
                    f.spec,
                    f.next_run_at_ms,
                    now_ms(),
                    reset_errors
                ],
            )
            .ctx("updating cron job")?;
        if n == 0 {
            return Ok(None);
        }
        self.cron_job(id)
    }

    /// Moves a job's next run without firing it (missed times skipped), or with `keep`
    /// false disables it (a job the scheduler cannot read).
    pub fn cron_set_next(&mut self, id: &str, next: Option<i64>, keep: bool) -> Result<()> {
        self.conn
            .execute(
                "UPDATE cron_jobs SET next_run_at_ms = ?2,
                    enabled = CASE WHEN ?3 THEN enabled ELSE 0 END
                 WHERE id = ?1",
                params![id, next, keep],
            )
            .ctx("moving a cron job's next run")?;
        Ok(())
    }

    /// Deletes a job (its fires stay in the log); whether it existed.
    pub fn cron_remove(&mut self, id: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM cron_jobs WHERE id = ?1", [id])
            .ctx("removing cron job")?
            > 0)
    }

    pub fn cron_job(&self, id: &str) -> Result<Option<CronJobRecord>> {
        self.conn
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM cron_jobs j WHERE j.id = ?1"),
                [id],
                job_from_row,
            )
            .optional()
            .ctx("reading cron job")
    }

    /// Jobs, soonest next run first (jobs without one last), and the total count.
    pub fn cron_jobs(
        &self,
        include_disabled: bool,
        agent_id: Option<&str>,
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<CronJobRecord>, u64)> {
        let filter = "(?1 OR j.enabled = 1) AND (?2 IS NULL OR j.agent_id = ?2)";
        let total: i64 = self
            .conn
            .query_row(
                &format!("SELECT COUNT(*) FROM cron_jobs j WHERE {filter}"),
                params![include_disabled, agent_id],
                |r| r.get(0),
            )
            .ctx("counting cron jobs")?;
        let jobs = collect(
            &self.conn,
            &format!(
                "SELECT {JOB_COLUMNS} FROM cron_jobs j WHERE {filter}
                 ORDER BY j.next_run_at_ms IS NULL, j.next_run_at_ms, j.name LIMIT ?3 OFFSET ?4"
            ),
            params![include_disabled, agent_id, limit, offset],
            job_from_row,
            "reading cron jobs",
        )?;
        Ok((jobs, total as u64))
    }

    /// The earliest next run of an enabled job.
    pub fn cron_next_wake(&self) -> Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT MIN(next_run_at_ms) FROM cron_jobs WHERE enabled = 1",
                [],
                |r| r.get(0),
            )
            .ctx("reading the next cron wake")
    }

    /// Enabled jobs due at `now`, soonest first, at most `limit`.
    pub fn cron_due(&self, now: i64, limit: u32) -> Result<Vec<CronJobRecord>> {
        collect(
            &self.conn,
            &format!(
                "SELECT {JOB_COLUMNS} FROM cron_jobs j
                 WHERE j.enabled = 1 AND j.next_run_at_ms <= ?1
                 ORDER BY j.next_run_at_ms LIMIT ?2"
            ),
            params![now, limit],
            job_from_row,
            "reading due cron jobs",
        )
    }

    /// Claims fires, each with what it runs, in one transaction (one commit for many due
    /// jobs).
    pub fn claim_cron_fires(&mut self, claims: &[FireClaim]) -> Result<Vec<Claimed>> {
        let now = now_ms();
        let tx = self.write_tx().ctx("starting claim_cron_fires")?;
        let mut out = Vec::with_capacity(claims.len());
        for c in claims {
            out.push(claim_one(&tx, c, now)?);
        }
        tx.commit().ctx("committing cron fires")?;
        Ok(out)
    }

    /// Started fires whose run has ended.
    pub fn cron_ended_fires(&self) -> Result<Vec<EndedFire>> {
        collect(
            &self.conn,
            "SELECT f.job_id, f.scheduled_at_ms, f.run_id, r.state, r.error, f.started_at_ms,
                COALESCE(r.finished_at_ms, r.updated_at_ms), t.final_text
             FROM cron_fires f JOIN runs r ON r.id = f.run_id
             LEFT JOIN turns t ON t.run_id = f.run_id
             WHERE f.state = 'started' AND r.state IN ('succeeded', 'failed', 'cancelled')",
            [],
            |r| {
                Ok(EndedFire {
                    job_id: r.get(0)?,
                    scheduled_at_ms: r.get(1)?,
                    run_id: r.get(2)?,
                    run_state: r.get(3)?,
                    error: r.get(4)?,
                    started_at_ms: r.get(5)?,
                    finished_at_ms: r.get(6)?,
                    final_text: r.get(7)?,
                })
            },
            "reading ended fires",
        )
    }

    /// How many fires are still running.
    pub fn cron_open_fires(&self) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM cron_fires WHERE state = 'started'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .ctx("counting running fires")
    }

    /// Records how a fire ended and what it does to its job, once: `false` if the fire was
    /// finished already.
    pub fn finish_cron_fire(
        &mut self,
        job_id: &str,
        scheduled_at_ms: i64,
        o: &FireOutcome,
    ) -> Result<bool> {
        let tx = self.write_tx().ctx("starting finish_cron_fire")?;
        let n = tx
            .execute(
                "UPDATE cron_fires SET state = ?3, finished_at_ms = ?4, error = ?5, summary = ?6
                 WHERE job_id = ?1 AND scheduled_at_ms = ?2 AND state = 'started'",
                params![
                    job_id,
                    scheduled_at_ms,
                    o.status,
                    o.finished_at_ms,
                    o.error,
                    o.summary
                ],
            )
            .ctx("finishing cron fire")?;
        if n == 0 {
            return Ok(false);
        }
        tx.execute(
            "UPDATE cron_jobs SET last_status = ?2, last_error = ?3,
                last_duration_ms = ?4 - (SELECT started_at_ms FROM cron_fires
                                          WHERE job_id = ?1 AND scheduled_at_ms = ?5),
                consecutive_errors = ?6
             WHERE id = ?1",
            params![
                job_id,
                o.status,
                o.error,
                o.finished_at_ms,
                scheduled_at_ms,
                o.consecutive_errors
            ],
        )
        .ctx("recording the fire on its job")?;
        if let Some(next) = o.next_run_at_ms {
            tx.execute(
                "UPDATE cron_jobs SET next_run_at_ms = ?2 WHERE id = ?1",
                params![job_id, next],
            )
            .ctx("moving the next run")?;
        }
        if o.disable_job {
            tx.execute(
                "UPDATE cron_jobs SET enabled = 0, next_run_at_ms = NULL WHERE id = ?1",
                [job_id],
            )
            .ctx("disabling cron job")?;
        }
        if o.delete_job {
            tx.execute("DELETE FROM cron_jobs WHERE id = ?1", [job_id])
                .ctx("deleting one-shot cron job")?;
        }
        tx.commit().ctx("committing cron fire")?;
        Ok(true)
    }

    /// The run log (of one job, or all), newest first, and its total.
    pub fn cron_fires(
        &self,
        job_id: Option<&str>,
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<FireRecord>, u64)> {
        let total: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM cron_fires WHERE ?1 IS NULL OR job_id = ?1",
                [job_id],
                |r| r.get(0),
            )
            .ctx("counting cron fires")?;
        let fires = collect(
            &self.conn,
            &format!(
                "SELECT {FIRE_COLUMNS} FROM cron_fires WHERE ?1 IS NULL OR job_id = ?1
                 ORDER BY started_at_ms DESC, scheduled_at_ms DESC LIMIT ?2 OFFSET ?3"
            ),
            params![job_id, limit, offset],
            fire_from_row,
            "reading cron fires",
        )?;
        Ok((fires, total as u64))
    }
}
