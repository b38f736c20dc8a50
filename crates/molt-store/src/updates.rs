//! The update journal (design §5): one row per update transaction and one per step.
//!
//! The updater writes a step row *before* the step acts (`started`) and closes it after
//! (`ok`/`failed`/`skipped`). After a crash, the last `ok` step tells recovery how far the
//! transaction got, and a `started` row names the step that was in flight.

use rusqlite::{OptionalExtension, Row, params};

use crate::{Ctx, FromWord, Result, Store, StoreError, now_ms};

molt_protocol::word_enum!(
    /// What a job does.
    UpdateKind {
        Update = "update",
        Rollback = "rollback",
        Recover = "recover",
    }
);

molt_protocol::word_enum!(
    /// Where a job is. `Ok`, `RolledBack` and `Failed` are final.
    JobState {
        Pending = "pending",
        Running = "running",
        RollingBack = "rolling_back",
        Ok = "ok",
        RolledBack = "rolled_back",
        Failed = "failed",
    }
);

impl JobState {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Ok | Self::RolledBack | Self::Failed)
    }
}

molt_protocol::word_enum!(
    /// One journalled step.
    JournalStepState {
        Started = "started",
        Ok = "ok",
        Failed = "failed",
        Skipped = "skipped",
    }
);

/// What a new job is asked to do.
#[derive(Debug, Clone)]
pub struct NewUpdateJob {
    pub kind: UpdateKind,
    /// `cli`, `rpc` or `gateway` (start-up recovery).
    pub requester: String,
    /// The request as JSON (source, target version, downgrade permission).
    pub params: String,
    /// Delivered to operators after the restart.
    pub continuation: Option<String>,
    /// Set when an agent's tool asked for the update.
    pub origin: Option<TurnOrigin>,
}

/// What [`Store::deliver_update`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// Delivered before, or the job has not ended: nothing to tell anyone.
    NotNow,
    /// Marked delivered now; `session_message` is the message appended to the asking
    /// session, if an agent asked.
    Now {
        session_message: Option<Box<crate::StoredMessage>>,
    },
}

/// The tool call that asked for an update: its step's effect key (one job per key, however
/// often the step runs), and the session that hears the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnOrigin {
    pub effect_key: String,
    pub session_key: String,
    pub agent_id: String,
}

/// A journalled step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalStep {
    pub seq: i64,
    pub name: String,
    pub state: JournalStepState,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub detail: Option<String>,
}

/// A job with its steps, oldest step first.
#[derive(Debug, Clone)]
pub struct UpdateJob {
    pub id: String,
    pub kind: UpdateKind,
    pub state: JobState,
    pub requester: String,
    pub params: String,
    pub continuation: Option<String>,
    pub from: Option<(String, String)>,
    pub to: Option<(String, String)>,
    pub error: Option<String>,
    /// How the updater was started: `systemd-run:<unit>` or `detached:<pid>`.
    pub launcher: Option<String>,
    pub updater_pid: Option<u32>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub delivered_at_ms: Option<i64>,
    pub origin: Option<TurnOrigin>,
    pub steps: Vec<JournalStep>,
}

/// Pending jobs older than this whose updater never took the lock are abandoned.
pub const PENDING_STALE_MS: i64 = 60_000;

impl UpdateJob {
    /// Whether nobody will finish this job, for a caller that knows no updater holds the
    /// update lock: a started job's updater died; a pending job's updater died before it took
    /// the lock (`alive` says whether a pid runs), or never came within [`PENDING_STALE_MS`].
    pub fn is_abandoned(&self, now_ms: i64, alive: impl Fn(u32) -> bool) -> bool {
        match self.state {
            JobState::Running | JobState::RollingBack => true,
            JobState::Pending => {
                self.updater_pid.is_some_and(|p| !alive(p))
                    || now_ms - self.created_at_ms > PENDING_STALE_MS
            }
            JobState::Ok | JobState::RolledBack | JobState::Failed => false,
        }
    }

    /// Where the job's updater stopped: `during <step>`, `after <step>`, or `before its first
    /// step`.
    pub fn where_stopped(&self) -> String {
        in_flight(self)
            .map(|s| format!("during {s}"))
            .or_else(|| self.last_done().map(|s| format!("after {}", s.name)))
            .unwrap_or_else(|| "before its first step".into())
    }

    /// The last step that completed (`ok` or `skipped`), if any.
    pub fn last_done(&self) -> Option<&JournalStep> {
        self.steps
            .iter()
            .rev()
            .find(|s| matches!(s.state, JournalStepState::Ok | JournalStepState::Skipped))
    }

    /// Whether a step of this name completed.
    pub fn done(&self, name: &str) -> bool {
        self.steps.iter().any(|s| {
            s.name == name && matches!(s.state, JournalStepState::Ok | JournalStepState::Skipped)
        })
    }
}

const JOB_COLUMNS: &str = "id, kind, state, requester, params, continuation, from_version, \
     from_build, to_version, to_build, error, launcher, updater_pid, created_at_ms, \
     updated_at_ms, finished_at_ms, delivered_at_ms, effect_key, session_key, agent_id";

fn pair(v: Option<String>, b: Option<String>) -> Option<(String, String)> {
    Some((v?, b.unwrap_or_default()))
}

fn job_from_row(r: &Row<'_>) -> rusqlite::Result<(UpdateJob, String, String)> {
    Ok((
        UpdateJob {
            id: r.get(0)?,
            kind: UpdateKind::Update,
            state: JobState::Pending,
            requester: r.get(3)?,
            params: r.get(4)?,
            continuation: r.get(5)?,
            from: pair(r.get(6)?, r.get(7)?),
            to: pair(r.get(8)?, r.get(9)?),
            error: r.get(10)?,
            launcher: r.get(11)?,
            updater_pid: r.get(12)?,
            created_at_ms: r.get(13)?,
            updated_at_ms: r.get(14)?,
            finished_at_ms: r.get(15)?,
            delivered_at_ms: r.get(16)?,
            origin: match (r.get(17)?, r.get(18)?, r.get(19)?) {
                (Some(effect_key), Some(session_key), Some(agent_id)) => Some(TurnOrigin {
                    effect_key,
                    session_key,
                    agent_id,
                }),
                _ => None,
            },
            steps: Vec::new(),
        },
        r.get(1)?,
        r.get(2)?,
    ))
}

impl Store {
    /// Records a new `pending` job; its id is `upd-<12 hex>`.
    pub fn create_update_job(&mut self, new: &NewUpdateJob) -> Result<UpdateJob> {
        Ok(self.create_update_job_once(new)?.0)
    }

    /// Like [`Self::create_update_job`], but a job whose origin's effect key already has a job
    /// is not created again: that job comes back, with `false`.
    pub fn create_update_job_once(&mut self, new: &NewUpdateJob) -> Result<(UpdateJob, bool)> {
        let now = now_ms();
        let tx = self.write_tx().ctx("starting create_update_job")?;
        let o = new.origin.as_ref();
        let existing: Option<String> = match o {
            Some(o) => tx
                .query_row(
                    "SELECT id FROM update_jobs WHERE effect_key = ?1",
                    [&o.effect_key],
                    |r| r.get(0),
                )
                .optional()
                .ctx("looking up the job of an effect key")?,
            None => None,
        };
        let created = existing.is_none();
        let id: String = match existing {
            Some(id) => id,
            None => tx
                .query_row(
                    "INSERT INTO update_jobs(id, kind, state, requester, params, continuation,
                        created_at_ms, updated_at_ms, effect_key, session_key, agent_id)
                     VALUES ('upd-' || lower(hex(randomblob(6))), ?1, 'pending', ?2, ?3, ?4, ?5,
                        ?5, ?6, ?7, ?8)
                     RETURNING id",
                    params![
                        new.kind.as_str(),
                        new.requester,
                        new.params,
                        new.continuation,
                        now,
                        o.map(|o| &o.effect_key),
                        o.map(|o| &o.session_key),
                        o.map(|o| &o.agent_id),
                    ],
                    |r| r.get(0),
                )
                .ctx("creating update job")?,
        };
        tx.commit().ctx("committing update job")?;
        let job = self
            .update_job(&id)?
            .ok_or_else(|| StoreError::Corrupt(format!("update job {id} vanished")))?;
        Ok((job, created))
    }

    /// Ended jobs an agent asked for whose outcome its session has not heard yet.
    pub fn undelivered_turn_updates(&self) -> Result<Vec<UpdateJob>> {
        let ids: Vec<String> = {
            let mut st = self
                .conn
                .prepare(
                    "SELECT id FROM update_jobs WHERE delivered_at_ms IS NULL
                       AND session_key IS NOT NULL AND state IN ('ok', 'rolled_back', 'failed')
                     ORDER BY created_at_ms",
                )
                .ctx("preparing undelivered jobs")?;
            st.query_map([], |r| r.get(0))
                .ctx("reading undelivered jobs")?
                .collect::<rusqlite::Result<_>>()
                .ctx("reading undelivered jobs")?
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.update_job(&id)?);
        }
        Ok(out)
    }

    /// Marks an ended job delivered and, for a job an agent asked for, appends `message` to
    /// its session, in one transaction: the session hears each outcome exactly once.
    pub fn deliver_update(
        &mut self,
        id: &str,
        message: &molt_protocol::transcript::Message,
    ) -> Result<Delivery> {
        let tx = self.write_tx().ctx("starting deliver_update")?;
        let n = tx
            .execute(
                "UPDATE update_jobs SET delivered_at_ms = ?2 WHERE id = ?1
                   AND delivered_at_ms IS NULL AND state IN ('ok', 'rolled_back', 'failed')",
                params![id, now_ms()],
            )
            .ctx("marking update delivered")?;
        if n == 0 {
            return Ok(Delivery::NotNow);
        }
        let to: Option<(Option<String>, Option<String>)> = tx
            .query_row(
                "SELECT session_key, agent_id FROM update_jobs WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .ctx("reading the job's session")?;
        let stored = match to {
            Some((Some(key), Some(agent))) => {
                crate::agent::ensure_session_tx(&tx, &key, &agent)?;
                Some(crate::agent::append_tx(&tx, &key, None, message)?)
            }
            _ => None,
        };
        tx.commit().ctx("committing update delivery")?;
        Ok(Delivery::Now {
            session_message: stored.map(Box::new),
        })
    }

    /// One job with its steps.
    pub fn update_job(&self, id: &str) -> Result<Option<UpdateJob>> {
        let row = self
            .conn
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM update_jobs WHERE id = ?1"),
                [id],
                job_from_row,
            )
            .optional()
            .ctx("reading update job")?;
        row.map(|r| self.finish_job(r)).transpose()
    }

    /// The newest job, if any.
    pub fn latest_update_job(&self) -> Result<Option<UpdateJob>> {
        let row = self
            .conn
            .query_row(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM update_jobs ORDER BY created_at_ms DESC, rowid DESC LIMIT 1"
                ),
                [],
                job_from_row,
            )
            .optional()
            .ctx("reading the latest update job")?;
        row.map(|r| self.finish_job(r)).transpose()
    }

    /// Jobs that have not reached a final state, oldest first.
    pub fn unfinished_update_jobs(&self) -> Result<Vec<UpdateJob>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM update_jobs
                 WHERE state IN ('pending','running','rolling_back') ORDER BY created_at_ms, rowid"
            ))
            .ctx("preparing unfinished jobs query")?;
        let rows = stmt
            .query_map([], job_from_row)
            .ctx("listing unfinished update jobs")?;
        let mut raw = Vec::new();
        for r in rows {
            raw.push(r.ctx("reading update job")?);
        }
        raw.into_iter().map(|r| self.finish_job(r)).collect()
    }

    fn finish_job(&self, (mut job, kind, state): (UpdateJob, String, String)) -> Result<UpdateJob> {
        job.kind = UpdateKind::from_word(&kind)?;
        job.state = JobState::from_word(&state)?;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, name, state, started_at_ms, finished_at_ms, detail
                 FROM update_steps WHERE job_id = ?1 ORDER BY seq",
            )
            .ctx("preparing update steps query")?;
        let rows = stmt
            .query_map([&job.id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })
            .ctx("reading update steps")?;
        for r in rows {
            let (seq, name, state, started_at_ms, finished_at_ms, detail) =
                r.ctx("reading update step")?;
            job.steps.push(JournalStep {
                seq,
                name,
                state: JournalStepState::from_word(&state)?,
                started_at_ms,
                finished_at_ms,
                detail,
            });
        }
        Ok(job)
    }

    /// Sets a job's state (and its error, when given). A final state stamps `finished_at_ms`.
    pub fn set_update_state(
        &mut self,
        id: &str,
        state: JobState,
        error: Option<&str>,
    ) -> Result<()> {
        let now = now_ms();
        let n = self
            .conn
            .execute(
                "UPDATE update_jobs SET state = ?2, error = COALESCE(?3, error), updated_at_ms = ?4,
                    finished_at_ms = CASE WHEN ?5 THEN ?4 ELSE NULL END
                 WHERE id = ?1",
                params![id, state.as_str(), error, now, state.is_final()],
            )
            .ctx("setting update job state")?;
        if n == 0 {
            return Err(StoreError::Corrupt(format!("no update job {id}")));
        }
        Ok(())
    }

    /// Records the updater's pid.
    pub fn set_update_runner(&mut self, id: &str, pid: u32) -> Result<()> {
        self.conn
            .execute(
                "UPDATE update_jobs SET updater_pid = ?2, updated_at_ms = ?3 WHERE id = ?1",
                params![id, pid, now_ms()],
            )
            .ctx("recording the updater")?;
        Ok(())
    }

    /// Records how the updater was launched (`systemd-run:<unit>`, `detached:<pid>`).
    pub fn set_update_launcher(&mut self, id: &str, launcher: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE update_jobs SET launcher = ?2, updated_at_ms = ?3 WHERE id = ?1",
                params![id, launcher, now_ms()],
            )
            .ctx("recording the launcher")?;
        Ok(())
    }

    /// Records the versions the job moves between (either may be left as it is).
    pub fn set_update_versions(
        &mut self,
        id: &str,
        from: Option<(&str, &str)>,
        to: Option<(&str, &str)>,
    ) -> Result<()> {
        self.conn
            .execute(
                "UPDATE update_jobs SET
                    from_version = COALESCE(?2, from_version), from_build = COALESCE(?3, from_build),
                    to_version = COALESCE(?4, to_version), to_build = COALESCE(?5, to_build),
                    updated_at_ms = ?6
                 WHERE id = ?1",
                params![
                    id,
                    from.map(|f| f.0),
                    from.map(|f| f.1),
                    to.map(|t| t.0),
                    to.map(|t| t.1),
                    now_ms()
                ],
            )
            .ctx("recording update versions")?;
        Ok(())
    }

    /// Journals a step as `started`, before it acts; returns its sequence number.
    pub fn begin_update_step(&mut self, id: &str, name: &str) -> Result<i64> {
        let now = now_ms();
        let tx = self.write_tx().ctx("starting step transaction")?;
        let seq: i64 = tx
            .query_row(
                "INSERT INTO update_steps(job_id, seq, name, state, started_at_ms)
                 VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM update_steps WHERE job_id = ?1),
                         ?2, 'started', ?3)
                 RETURNING seq",
                params![id, name, now],
                |r| r.get(0),
            )
            .ctx("journalling update step")?;
        tx.execute(
            "UPDATE update_jobs SET updated_at_ms = ?2 WHERE id = ?1",
            params![id, now],
        )
        .ctx("touching update job")?;
        tx.commit().ctx("committing update step")?;
        Ok(seq)
    }

    /// Closes a journalled step.
    pub fn end_update_step(
        &mut self,
        id: &str,
        seq: i64,
        state: JournalStepState,
        detail: Option<&str>,
    ) -> Result<()> {
        self.conn
            .execute(
                "UPDATE update_steps SET state = ?3, finished_at_ms = ?4, detail = ?5
                 WHERE job_id = ?1 AND seq = ?2",
                params![id, seq, state.as_str(), now_ms(), detail],
            )
            .ctx("closing update step")?;
        Ok(())
    }

    /// Replaces a running step's detail (download progress).
    pub fn set_update_step_detail(&mut self, id: &str, seq: i64, detail: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE update_steps SET detail = ?3 WHERE job_id = ?1 AND seq = ?2",
                params![id, seq, detail],
            )
            .ctx("updating step detail")?;
        Ok(())
    }

    /// Writes a consistent copy of the database to `path` (`VACUUM INTO`), for rollback.
    pub fn snapshot_to(&self, path: &std::path::Path) -> Result<()> {
        let _ = std::fs::remove_file(path);
        self.conn
            .execute("VACUUM INTO ?1", [path.to_string_lossy()])
            .ctx("writing the state snapshot")?;
        // A copy of the state is as private as the state.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(())
    }
}

const STEP_COLUMNS: &str = "job_id, seq, name, state, started_at_ms, finished_at_ms, detail";

/// All rows of `table` (`columns`), as values.
fn dump(
    conn: &rusqlite::Connection,
    table: &str,
    columns: &str,
) -> Result<Vec<Vec<rusqlite::types::Value>>> {
    let n = columns.split(',').count();
    let mut stmt = conn
        .prepare(&format!("SELECT {columns} FROM {table}"))
        .ctx("preparing journal dump")?;
    let rows = stmt
        .query_map([], |r| (0..n).map(|i| r.get(i)).collect())
        .ctx("dumping the journal")?;
    let mut out = Vec::new();
    for r in rows {
        out.push(r.ctx("reading journal row")?);
    }
    Ok(out)
}

impl Store {
    /// Puts the database back to `snapshot` with SQLite's online backup, so connections other
    /// processes hold see the restored content. The update journal is newer than any
    /// snapshot and is kept. Everything else written since the snapshot is gone: this is only
    /// for undoing a migration. Gives up after `timeout` if writers keep the database busy.
    pub fn restore_snapshot(
        &mut self,
        snapshot: &std::path::Path,
        timeout: std::time::Duration,
    ) -> Result<()> {
        use rusqlite::backup::{Backup, StepResult};
        let jobs = dump(&self.conn, "update_jobs", JOB_COLUMNS)?;
        let steps = dump(&self.conn, "update_steps", STEP_COLUMNS)?;
        let src = rusqlite::Connection::open_with_flags(
            snapshot,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ctx("opening the snapshot")?;
        let deadline = std::time::Instant::now() + timeout;
        {
            let backup = Backup::new(&src, &mut self.conn).ctx("starting the restore")?;
            loop {
                match backup.step(256).ctx("restoring the snapshot")? {
                    StepResult::Done => break,
                    StepResult::More => {}
                    _ if std::time::Instant::now() >= deadline => {
                        return Err(StoreError::Corrupt(format!(
                            "the database stayed busy for {} ms; stop the gateway and retry",
                            timeout.as_millis()
                        )));
                    }
                    _ => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        }
        let has_journal: bool = self
            .conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'update_jobs'",
                [],
                |r| r.get(0),
            )
            .ctx("looking for the journal")?;
        if !has_journal {
            return Ok(());
        }
        let tx = self.write_tx().ctx("starting journal restore")?;
        for (table, columns, rows) in [
            ("update_jobs", JOB_COLUMNS, &jobs),
            ("update_steps", STEP_COLUMNS, &steps),
        ] {
            let marks = vec!["?"; columns.split(',').count()].join(", ");
            let sql = format!("INSERT OR REPLACE INTO {table}({columns}) VALUES ({marks})");
            for row in rows {
                tx.execute(&sql, rusqlite::params_from_iter(row.iter()))
                    .ctx("restoring the journal")?;
            }
        }
        tx.commit().ctx("committing the journal")?;
        Ok(())
    }
}

/// Reads `PRAGMA user_version` of a database file without migrating it.
pub fn schema_version_of(path: &std::path::Path) -> Result<i64> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ctx("opening the database read-only")?;
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .ctx("reading schema version")
}

// ---- the report view of a job: what `molt update status` and `update.status` show ----

pub use molt_protocol::methods::update::{StepLine, UpdateReport, VersionRef};

fn vref(p: &Option<(String, String)>) -> Option<VersionRef> {
    p.as_ref().map(|(v, b)| VersionRef {
        version: v.clone(),
        build_id: b.clone(),
    })
}

pub fn result_word(state: JobState) -> &'static str {
    match state {
        JobState::Ok => "OK",
        JobState::RolledBack => "ROLLED BACK",
        JobState::Failed => "FAILED",
        JobState::Running | JobState::RollingBack => "RUNNING",
        JobState::Pending => "PENDING",
    }
}

impl UpdateJob {
    /// The job as people read it.
    pub fn report(&self) -> UpdateReport {
        let job = self;
        let before = vref(&job.from);
        let target = vref(&job.to);
        let dry_run = serde_json::from_str::<serde_json::Value>(&job.params)
            .ok()
            .and_then(|p| p["dryRun"].as_bool())
            .unwrap_or(false);
        let after = match job.state {
            JobState::Ok if dry_run => before.clone(),
            JobState::Ok => target.clone(),
            JobState::RolledBack | JobState::Failed => before.clone(),
            _ => None,
        };
        UpdateReport {
            result: result_word(job.state).into(),
            job_id: job.id.clone(),
            kind: job.kind.as_str().into(),
            state: job.state.as_str().into(),
            dry_run,
            requester: job.requester.clone(),
            launcher: job.launcher.clone(),
            before,
            after,
            target,
            reason: job.error.clone(),
            steps: job
                .steps
                .iter()
                .map(|s| StepLine {
                    name: s.name.clone(),
                    status: s.state.as_str().into(),
                    ms: s.finished_at_ms.map(|f| f - s.started_at_ms),
                    detail: s.detail.clone(),
                })
                .collect(),
            total_ms: job.finished_at_ms.map(|f| f - job.created_at_ms),
            created_at_ms: job.created_at_ms,
            finished_at_ms: job.finished_at_ms,
            continuation_message: job.continuation.clone(),
            continuation_delivered: job.delivered_at_ms.is_some(),
        }
    }
}

/// Whether a step of the job's journal is still `started` (the in-flight one).
fn in_flight(job: &UpdateJob) -> Option<&str> {
    job.steps
        .iter()
        .rev()
        .find(|s| s.state == JournalStepState::Started)
        .map(|s| s.name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (std::path::PathBuf, Store) {
        let dir = std::env::temp_dir().join(format!("molt-updates-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let s = Store::open(&dir.join("molt.db")).unwrap();
        (dir, s)
    }

    #[test]
    fn a_job_journals_steps_in_order_and_ends_final() {
        let (dir, mut s) = store();
        let job = s
            .create_update_job(&NewUpdateJob {
                kind: UpdateKind::Update,
                requester: "cli".into(),
                params: "{}".into(),
                continuation: Some("back soon".into()),
                origin: None,
            })
            .unwrap();
        assert!(
            job.id.starts_with("upd-") && job.id.len() == 16,
            "{}",
            job.id
        );
        assert_eq!(job.state, JobState::Pending);
        assert_eq!(s.unfinished_update_jobs().unwrap().len(), 1);
        assert_eq!(job.where_stopped(), "before its first step");
        // Pending: abandoned only once its updater died, or it never came.
        assert!(!job.is_abandoned(now_ms(), |_| false));
        s.set_update_runner(&job.id, 4242).unwrap();
        let with_pid = s.update_job(&job.id).unwrap().unwrap();
        assert!(!with_pid.is_abandoned(now_ms(), |_| true));
        assert!(with_pid.is_abandoned(now_ms(), |_| false));
        assert!(job.is_abandoned(now_ms() + PENDING_STALE_MS + 1, |_| true));

        s.set_update_state(&job.id, JobState::Running, None)
            .unwrap();
        s.set_update_versions(&job.id, Some(("0.1.0", "b1")), None)
            .unwrap();
        let a = s.begin_update_step(&job.id, "lock").unwrap();
        s.end_update_step(&job.id, a, JournalStepState::Ok, None)
            .unwrap();
        let b = s.begin_update_step(&job.id, "resolve").unwrap();
        assert_eq!((a, b), (1, 2));
        let mid = s.update_job(&job.id).unwrap().unwrap();
        assert_eq!(mid.last_done().unwrap().name, "lock");
        assert_eq!(mid.steps[1].state, JournalStepState::Started);
        assert!(mid.done("lock") && !mid.done("resolve"));
        assert_eq!(mid.where_stopped(), "during resolve");
        // Running with the lock free: its updater died, whatever the pid says.
        assert!(mid.is_abandoned(now_ms(), |_| true));
        assert_eq!(mid.from, Some(("0.1.0".into(), "b1".into())));

        s.end_update_step(&job.id, b, JournalStepState::Failed, Some("boom"))
            .unwrap();
        s.set_update_state(&job.id, JobState::Failed, Some("boom"))
            .unwrap();
        let done = s.latest_update_job().unwrap().unwrap();
        assert_eq!(done.state, JobState::Failed);
        assert_eq!(done.error.as_deref(), Some("boom"));
        assert!(done.finished_at_ms.is_some());
        assert!(s.unfinished_update_jobs().unwrap().is_empty());

        let snap = dir.join("snap.db");
        s.snapshot_to(&snap).unwrap();
        assert_eq!(schema_version_of(&snap).unwrap(), crate::migrations::LATEST);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
