//! Durable runs: creation, leasing, step checkpoints and re-queueing.

pub use molt_protocol::methods::tasks::{
    ExecSpec, Lease, RunCounts, RunId, RunRecord, RunState, StepRecord, StepSpec, StepState,
};
use rusqlite::{OptionalExtension, Row, Transaction, params};

use crate::{Boot, Ctx, FromWord, Result, Store, StoreError, now_ms};

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    Succeeded {
        exit_code: i32,
        output_tail: String,
    },
    Failed {
        exit_code: Option<i32>,
        output_tail: String,
        error: String,
    },
    Cancelled {
        output_tail: String,
    },
}

const RUN_COLUMNS: &str = "id, title, state, created_at_ms, updated_at_ms, finished_at_ms, \
     next_step, lease_epoch, lease_pid, cancel_requested, error";

fn run_from_row(r: &Row<'_>) -> rusqlite::Result<(RunRecord, String)> {
    let state: String = r.get(2)?;
    let lease_epoch: Option<i64> = r.get(7)?;
    let lease_pid: Option<u32> = r.get(8)?;
    Ok((
        RunRecord {
            id: RunId(r.get(0)?),
            title: r.get(1)?,
            state: RunState::Queued,
            created_at_ms: r.get(3)?,
            updated_at_ms: r.get(4)?,
            finished_at_ms: r.get(5)?,
            next_step: r.get(6)?,
            lease: lease_epoch
                .zip(lease_pid)
                .map(|(epoch, pid)| Lease { epoch, pid }),
            cancel_requested: r.get(9)?,
            error: r.get(10)?,
            steps: Vec::new(),
        },
        state,
    ))
}

impl Store {
    /// Creates a run and commits it before returning its id. With an idempotency key, a
    /// repeated call returns the first run's id instead of creating another.
    pub fn create_run(
        &mut self,
        title: Option<&str>,
        steps: &[StepSpec],
        idempotency_key: Option<&str>,
    ) -> Result<RunId> {
        let tx = self.write_tx().ctx("starting create_run")?;
        let id = create_run_tx(&tx, title, steps, idempotency_key)?;
        tx.commit().ctx("committing run")?;
        Ok(id)
    }

    /// One run with its steps.
    pub fn get_run(&self, id: &str) -> Result<RunRecord> {
        let (mut run, state) = self
            .conn
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                [id],
                run_from_row,
            )
            .optional()
            .ctx("reading run")?
            .ok_or_else(|| StoreError::NoSuchRun(id.to_owned()))?;
        run.state = RunState::from_word(&state)?;
        run.steps = self.steps_of(id)?;
        Ok(run)
    }

    fn steps_of(&self, id: &str) -> Result<Vec<StepRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT idx, spec, state, attempts, effect_key, exit_code, output_tail, \
                 started_at_ms, finished_at_ms, error FROM steps WHERE run_id = ?1 ORDER BY idx",
            )
            .ctx("preparing steps query")?;
        let rows = stmt
            .query_map([id], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, u32>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<i32>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<i64>>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                    r.get::<_, Option<String>>(9)?,
                ))
            })
            .ctx("reading steps")?;
        let mut steps = Vec::new();
        for row in rows {
            let (index, spec, state, attempts, effect_key, exit_code, output_tail, s, f, error) =
                row.ctx("reading step")?;
            steps.push(StepRecord {
                index,
                spec: serde_json::from_str(&spec)
                    .map_err(|e| StoreError::Corrupt(format!("step {id}:{index}: {e}")))?,
                state: StepState::from_word(&state)?,
                attempts,
                effect_key,
                exit_code,
                output_tail,
                started_at_ms: s,
                finished_at_ms: f,
                error,
            });
        }
        Ok(steps)
    }

    /// Runs, newest first, optionally only those in `state`.
    pub fn list_runs(&self, state: Option<RunState>, limit: u32) -> Result<Vec<RunRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE (?1 IS NULL OR state = ?1) \
                 ORDER BY created_at_ms DESC, rowid DESC LIMIT ?2"
            ))
            .ctx("preparing runs query")?;
        let rows = stmt
            .query_map(params![state.map(RunState::as_str), limit], run_from_row)
            .ctx("listing runs")?;
        let mut runs = Vec::new();
        for row in rows {
            let (mut run, state) = row.ctx("reading run")?;
            run.state = RunState::from_word(&state)?;
            runs.push(run);
        }
        drop(stmt);
        for run in &mut runs {
            run.steps = self.steps_of(&run.id.0)?;
        }
        Ok(runs)
    }

    /// Number of runs in each state.
    pub fn run_counts(&self) -> Result<RunCounts> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT state, COUNT(*) FROM runs GROUP BY state")
            .ctx("preparing counts")?;
        let mut counts = RunCounts::default();
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .ctx("counting runs")?;
        for row in rows {
            let (state, n) = row.ctx("reading count")?;
            match RunState::from_word(&state)? {
                RunState::Queued => counts.queued = n,
                RunState::Running => counts.running = n,
                RunState::Succeeded => counts.succeeded = n,
                RunState::Failed => counts.failed = n,
                RunState::Cancelled => counts.cancelled = n,
            }
        }
        Ok(counts)
    }

    /// Leases the oldest queued exec run to `boot`, or returns `None` when the queue is empty.
    pub fn claim_next(&mut self, boot: Boot) -> Result<Option<RunId>> {
        self.conn
            .query_row(
                "UPDATE runs SET state = 'running', lease_epoch = ?1, lease_pid = ?2, updated_at_ms = ?3
                 WHERE id = (SELECT id FROM runs WHERE state = 'queued' AND kind = 'exec'
                             ORDER BY created_at_ms, rowid LIMIT 1)
                 RETURNING id",
                params![boot.epoch, boot.pid, now_ms()],
                |r| r.get(0),
            )
            .optional()
            .ctx("claiming a run")
            .map(|id| id.map(RunId))
    }

    /// Marks the run's next step as started and returns it. The attempt count is bumped and
    /// committed first, so an interruption is visible after a crash. `None` means the run has no
    /// step left to start (it was cancelled or completed).
    pub fn start_step(&mut self, run: &RunId, boot: Boot) -> Result<Option<StepRecord>> {
        let tx = self.write_tx().ctx("starting start_step")?;
        let next = check_lease(&tx, run, boot)?;
        let changed = tx
            .execute(
                "UPDATE steps SET state = 'running', attempts = attempts + 1, started_at_ms = ?3,
                     finished_at_ms = NULL, error = NULL
                 WHERE run_id = ?1 AND idx = ?2 AND state = 'pending'",
                params![run.0, next, now_ms()],
            )
            .ctx("starting step")?;
        tx.commit().ctx("committing step start")?;
        if changed == 0 {
            return Ok(None);
        }
        Ok(self.steps_of(&run.0)?.into_iter().nth(next as usize))
    }

    /// Checkpoints the end of step `index`. Returns the run's state afterwards: `Running` means
    /// the lease holder should start the next step.
    pub fn finish_step(
        &mut self,
        run: &RunId,
        index: u32,
        boot: Boot,
        outcome: &StepOutcome,
    ) -> Result<RunState> {
        let tx = self.write_tx().ctx("starting finish_step")?;
        let next = check_lease(&tx, run, boot)?;
        if next != index {
            return Err(StoreError::Corrupt(format!(
                "run {run} is at step {next}, not {index}"
            )));
        }
        let now = now_ms();
        let step_count: u32 = tx
            .query_row("SELECT step_count FROM runs WHERE id = ?1", [&run.0], |r| {
                r.get(0)
            })
            .ctx("reading step count")?;
        let (step_state, exit_code, tail, error) = match outcome {
            StepOutcome::Succeeded {
                exit_code,
                output_tail,
            } => (StepState::Succeeded, Some(*exit_code), output_tail, None),
            StepOutcome::Failed {
                exit_code,
                output_tail,
                error,
            } => (
                StepState::Failed,
                *exit_code,
                output_tail,
                Some(error.as_str()),
            ),
            StepOutcome::Cancelled { output_tail } => {
                (StepState::Cancelled, None, output_tail, Some("cancelled"))
            }
        };
        tx.execute(
            "UPDATE steps SET state = ?3, exit_code = ?4, output_tail = ?5, error = ?6, finished_at_ms = ?7
             WHERE run_id = ?1 AND idx = ?2",
            params![run.0, index, step_state.as_str(), exit_code, tail, error, now],
        )
        .ctx("checkpointing step")?;
        let run_state = match step_state {
            StepState::Succeeded if index + 1 < step_count => RunState::Running,
            StepState::Succeeded => RunState::Succeeded,
            StepState::Cancelled => RunState::Cancelled,
            _ => RunState::Failed,
        };
        if run_state == RunState::Running {
            tx.execute(
                "UPDATE runs SET next_step = ?2, updated_at_ms = ?3 WHERE id = ?1",
                params![run.0, index + 1, now],
            )
            .ctx("advancing run")?;
        } else {
            let run_error = error.map(|e| format!("step {index}: {e}"));
            tx.execute(
                "UPDATE runs SET state = ?2, updated_at_ms = ?3, finished_at_ms = ?3, error = ?4,
                     lease_epoch = NULL, lease_pid = NULL
                 WHERE id = ?1",
                params![run.0, run_state.as_str(), now, run_error],
            )
            .ctx("finishing run")?;
            if run_state == RunState::Cancelled {
                skip_remaining_steps(&tx, run)?;
            }
        }
        tx.commit().ctx("committing checkpoint")?;
        Ok(run_state)
    }

    /// Gives a leased run back to the queue: its in-flight step (if any) returns to `pending`
    /// with its attempt count kept, so the next lease holder re-runs it. `why` is recorded on
    /// the step.
    pub fn release_run(&mut self, run: &RunId, boot: Boot, why: &str) -> Result<()> {
        let tx = self.write_tx().ctx("starting release_run")?;
        check_lease(&tx, run, boot)?;
        requeue(&tx, &run.0, why)?;
        tx.commit().ctx("committing release")?;
        Ok(())
    }

    /// Re-queues runs leased by another epoch whose process is gone, judged by
    /// `is_alive(pid, boot_started_at_ms)`: a crash, a SIGKILL, a handover parent killed while
    /// draining. A live holder (an older process still draining after a handover) keeps its
    /// runs. Call at start-up and now and then. Returns the re-queued run ids.
    pub fn requeue_dead_leases(
        &mut self,
        current: i64,
        is_alive: impl Fn(u32, i64) -> bool,
    ) -> Result<Vec<RunId>> {
        let tx = self.write_tx().ctx("starting dead-lease sweep")?;
        let leased: Vec<(String, i64, u32, i64)> = {
            let mut stmt = tx
                .prepare(
                    "SELECT r.id, r.lease_epoch, r.lease_pid, COALESCE(b.started_at_ms, 0)
                     FROM runs r LEFT JOIN boots b ON b.epoch = r.lease_epoch
                     WHERE r.state = 'running' AND r.lease_epoch IS NOT ?1",
                )
                .ctx("preparing sweep")?;
            let rows = stmt
                .query_map([current], |r| {
                    Ok((
                        r.get(0)?,
                        r.get::<_, Option<i64>>(1)?.unwrap_or(0),
                        r.get::<_, Option<u32>>(2)?.unwrap_or(0),
                        r.get(3)?,
                    ))
                })
                .ctx("finding leases")?;
            let mut v = Vec::new();
            for row in rows {
                v.push(row.ctx("reading lease")?);
            }
            v
        };
        let mut out = Vec::new();
        for (id, epoch, pid, started) in leased {
            if pid == 0 || !is_alive(pid, started) {
                requeue(
                    &tx,
                    &id,
                    &format!(
                        "interrupted: the process of boot epoch {epoch} (pid {pid}) died mid-step"
                    ),
                )?;
                out.push(RunId(id));
            }
        }
        tx.commit().ctx("committing sweep")?;
        Ok(out)
    }

    /// Asks for a run to be cancelled. A queued run is cancelled at once; a running one is
    /// flagged, and its lease holder stops the step. Returns the state after the request.
    pub fn request_cancel(&mut self, id: &str) -> Result<RunState> {
        let tx = self.write_tx().ctx("starting cancel")?;
        let state: String = tx
            .query_row("SELECT state FROM runs WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .ctx("reading run")?
            .ok_or_else(|| StoreError::NoSuchRun(id.to_owned()))?;
        let state = RunState::from_word(&state)?;
        let now = now_ms();
        let after = match state {
            RunState::Queued => {
                tx.execute(
                    "UPDATE runs SET state = 'cancelled', cancel_requested = 1, updated_at_ms = ?2,
                         finished_at_ms = ?2, error = 'cancelled before it started' WHERE id = ?1",
                    params![id, now],
                )
                .ctx("cancelling run")?;
                skip_remaining_steps(&tx, &RunId(id.to_owned()))?;
                RunState::Cancelled
            }
            RunState::Running => {
                tx.execute(
                    "UPDATE runs SET cancel_requested = 1, updated_at_ms = ?2 WHERE id = ?1",
                    params![id, now],
                )
                .ctx("flagging run for cancel")?;
                RunState::Running
            }
            terminal => terminal,
        };
        tx.commit().ctx("committing cancel")?;
        Ok(after)
    }

    /// Whether a cancel was requested for `id`.
    pub fn cancel_requested(&self, id: &RunId) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT cancel_requested FROM runs WHERE id = ?1",
                [&id.0],
                |r| r.get(0),
            )
            .ctx("reading cancel flag")
    }
}

/// [`Store::create_run`] inside a caller's transaction.
pub(crate) fn create_run_tx(
    tx: &Transaction<'_>,
    title: Option<&str>,
    steps: &[StepSpec],
    idempotency_key: Option<&str>,
) -> Result<RunId> {
    if let Some(key) = idempotency_key {
        let existing: Option<String> = tx
            .query_row(
                "SELECT id FROM runs WHERE idempotency_key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()
            .ctx("checking idempotency key")?;
        if let Some(id) = existing {
            return Ok(RunId(id));
        }
    }
    let now = now_ms();
    let id: String = tx
        .query_row(
            "INSERT INTO runs(id, title, state, created_at_ms, updated_at_ms, step_count, idempotency_key)
             VALUES ('run_' || lower(hex(randomblob(8))), ?1, 'queued', ?2, ?2, ?3, ?4)
             RETURNING id",
            params![title, now, steps.len() as i64, idempotency_key],
            |r| r.get(0),
        )
        .ctx("inserting run")?;
    for (i, spec) in steps.iter().enumerate() {
        let spec = serde_json::to_string(spec)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode step: {e}")))?;
        tx.execute(
            "INSERT INTO steps(run_id, idx, spec, state, effect_key) VALUES (?1, ?2, ?3, 'pending', ?1 || ':' || ?2)",
            params![id, i as i64, spec],
        )
        .ctx("inserting step")?;
    }
    Ok(RunId(id))
}

/// Verifies `boot` holds the run's lease; returns the run's next step index.
pub(crate) fn check_lease(tx: &Transaction<'_>, run: &RunId, boot: Boot) -> Result<u32> {
    let (epoch, next): (Option<i64>, u32) = tx
        .query_row(
            "SELECT lease_epoch, next_step FROM runs WHERE id = ?1",
            [&run.0],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .ctx("reading lease")?
        .ok_or_else(|| StoreError::NoSuchRun(run.0.clone()))?;
    if epoch != Some(boot.epoch) {
        return Err(StoreError::LeaseLost {
            run: run.0.clone(),
            holder: epoch,
            caller: boot.epoch,
        });
    }
    Ok(next)
}

fn requeue(tx: &Transaction<'_>, id: &str, why: &str) -> Result<()> {
    let now = now_ms();
    tx.execute(
        "UPDATE steps SET state = 'pending', error = ?2, finished_at_ms = ?3
         WHERE run_id = ?1 AND state = 'running'",
        params![id, why, now],
    )
    .ctx("re-queueing step")?;
    tx.execute(
        "UPDATE runs SET state = 'queued', lease_epoch = NULL, lease_pid = NULL, updated_at_ms = ?2
         WHERE id = ?1",
        params![id, now],
    )
    .ctx("re-queueing run")?;
    Ok(())
}

fn skip_remaining_steps(tx: &Transaction<'_>, run: &RunId) -> Result<()> {
    tx.execute(
        "UPDATE steps SET state = 'cancelled' WHERE run_id = ?1 AND state IN ('pending','running')",
        [&run.0],
    )
    .ctx("cancelling remaining steps")?;
    Ok(())
}
