//! molt's durable state: one SQLite database in WAL mode (`molt.db` in the state dir).
//!
//! The store is the only place state lives (design §4). Every write that acknowledges work to
//! a client commits with `synchronous=FULL` before the acknowledgement leaves the process.
//!
//! Runs are sequences of steps. The lifecycle of a step is:
//! `pending` → (lease holder calls [`Store::start_step`]) → `running` →
//! [`Store::finish_step`] → `succeeded`/`failed`/`cancelled`, or [`Store::release_run`] /
//! [`Store::requeue_dead_leases`] → `pending` again, keeping its attempt count. Every
//! transition checks the run's lease, so two processes can never execute the same step.

mod agent;
mod approvals;
mod cron;
mod devices;
mod discord;
mod import;
mod migrations;
mod runs;
mod updates;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

pub use agent::{
    NewTurn, QueueMode, SessionRecord, StartedTurn, StoredMessage, Submitted, TurnProgress,
    TurnRecord,
};
pub use approvals::{ApprovalRecord, ApprovalState, NewApproval};
pub use cron::{
    Claimed, CronJobFields, CronJobRecord, EndedFire, FireAction, FireClaim, FireOutcome,
    FireRecord,
};
pub use devices::{DeviceRecord, DeviceRequest, Pairing};
pub use discord::{
    DiscordInbound, DiscordOutbound, DiscordPairingRequest, DiscordSession, DueReply,
    OutboundStatus, PairingOutcome, QueuedSend,
};
pub use import::{
    ImportBatch, ImportResult, ImportedCronJob, ImportedSession, JobOutcome, SessionOutcome,
};
/// The newest database schema version this build knows.
pub use migrations::LATEST as SCHEMA_VERSION;
pub use runs::{
    ExecSpec, Lease, RunCounts, RunId, RunRecord, RunState, StepOutcome, StepRecord, StepSpec,
    StepState,
};
pub use updates::{
    Delivery, JobState, JournalStep, JournalStepState, NewUpdateJob, PENDING_STALE_MS, StepLine,
    TurnOrigin, UpdateJob, UpdateKind, UpdateReport, VersionRef, schema_version_of,
};

/// Parses a word column (a state) into its enum, or reports the row as corrupt.
pub(crate) trait FromWord: Sized {
    fn from_word(s: &str) -> Result<Self>;
}

macro_rules! from_word {
    ($($t:ty),+) => {$(
        impl FromWord for $t {
            fn from_word(s: &str) -> Result<Self> {
                <$t>::parse(s).ok_or_else(|| {
                    StoreError::Corrupt(format!("unknown {} {s:?}", stringify!($t)))
                })
            }
        }
    )+};
}
from_word!(
    RunState,
    StepState,
    Pairing,
    UpdateKind,
    JobState,
    JournalStepState,
    ApprovalState
);

/// A store error, with what was being done when it happened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Sqlite {
        context: &'static str,
        source: rusqlite::Error,
    },
    #[error(
        "the database schema is version {found}, newer than this molt knows ({known}); run a newer molt or restore a snapshot"
    )]
    TooNew { found: i64, known: i64 },
    #[error("no run with id {0}")]
    NoSuchRun(String),
    #[error("no session {0}")]
    NoSuchSession(String),
    #[error("run {run} is leased by boot epoch {holder:?}, not {caller}")]
    LeaseLost {
        run: String,
        holder: Option<i64>,
        caller: i64,
    },
    #[error("no approval {0}; `molt approvals list` shows the pending ones")]
    NoSuchApproval(String),
    #[error("approval {id} is already {state}")]
    AlreadyDecided { id: String, state: &'static str },
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Adds a context to rusqlite errors: `conn.execute(..).ctx("creating run")?`.
pub(crate) trait Ctx<T> {
    fn ctx(self, context: &'static str) -> Result<T>;
}

impl<T> Ctx<T> for rusqlite::Result<T> {
    fn ctx(self, context: &'static str) -> Result<T> {
        self.map_err(|source| StoreError::Sqlite { context, source })
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A boot of the gateway: every start gets a new, strictly larger epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Boot {
    pub epoch: i64,
    pub pid: u32,
}

/// The open database.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, sets WAL and `synchronous=FULL`, and
    /// runs pending migrations. The file is made 0600; SQLite gives its `-wal`/`-shm` the same
    /// mode.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).ctx("opening the database")?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Best effort: a read-only file system still lets us read, and the open above has
            // already reported real errors.
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .ctx("enabling WAL")?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt(format!(
                "journal_mode is {mode}, WAL was refused"
            )));
        }
        conn.execute_batch(
            "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;",
        )
        .ctx("setting pragmas")?;
        let mut store = Self { conn };
        migrations::run(&mut store.conn)?;
        store.digest_plaintext_device_tokens()?;
        Ok(store)
    }

    /// A write transaction. `BEGIN IMMEDIATE` takes the write lock up front, so a busy
    /// database waits (`busy_timeout`) instead of failing: a deferred transaction that reads
    /// and then writes gets SQLITE_BUSY at once in WAL mode when another process wrote.
    pub(crate) fn write_tx(&mut self) -> rusqlite::Result<rusqlite::Transaction<'_>> {
        self.conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
    }

    /// The schema version after migrations.
    pub fn schema_version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .ctx("reading schema version")
    }

    /// `PRAGMA quick_check`: `Ok(())` when the database is sound, else the problems found.
    pub fn quick_check(&self) -> Result<Result<(), String>> {
        let out: String = self
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .ctx("checking integrity")?;
        Ok(if out == "ok" { Ok(()) } else { Err(out) })
    }

    /// Records a new boot: bumps the `boot_epoch` row and logs the boot. Call once per start.
    pub fn begin_boot(&mut self, pid: u32, version: &str, build_id: &str) -> Result<Boot> {
        let tx = self.write_tx().ctx("starting boot transaction")?;
        let epoch: i64 = tx
            .query_row(
                "INSERT INTO meta(key, value) VALUES ('boot_epoch', '1')
                 ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1
                 RETURNING CAST(value AS INTEGER)",
                [],
                |r| r.get(0),
            )
            .ctx("bumping boot_epoch")?;
        tx.execute(
            "INSERT INTO boots(epoch, pid, version, build_id, started_at_ms) VALUES (?1,?2,?3,?4,?5)",
            params![epoch, pid, version, build_id, now_ms()],
        )
        .ctx("recording boot")?;
        tx.commit().ctx("committing boot")?;
        Ok(Boot { epoch, pid })
    }

    /// Marks a boot as ended. `clean` is false when the stop had to abort steps.
    pub fn end_boot(&mut self, epoch: i64, clean: bool) -> Result<()> {
        self.conn
            .execute(
                "UPDATE boots SET ended_at_ms = ?2, clean = ?3 WHERE epoch = ?1",
                params![epoch, now_ms(), clean],
            )
            .ctx("ending boot")?;
        Ok(())
    }

    /// Boots before `current` that never recorded their end: (epoch, pid, started_at_ms).
    /// Some may still run (handover predecessors draining); check each pid.
    pub fn unended_boots(&self, current: i64) -> Result<Vec<(i64, u32, i64)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT epoch, pid, started_at_ms FROM boots WHERE ended_at_ms IS NULL AND epoch < ?1")
            .ctx("preparing boots query")?;
        let rows = stmt
            .query_map([current], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .ctx("listing boots")?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.ctx("reading boot")?);
        }
        Ok(out)
    }

    /// The current boot epoch, if any boot was recorded.
    pub fn boot_epoch(&self) -> Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'boot_epoch'",
                [],
                |r| r.get(0),
            )
            .optional()
            .ctx("reading boot_epoch")
    }

    /// Stores a small named value (JSON text) in `meta`.
    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
                params![key, value],
            )
            .ctx("writing meta")?;
        Ok(())
    }

    /// Reads a value stored with [`Store::set_meta`].
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .ctx("reading meta")
    }

    /// Looks up a stored result for an idempotency key of `method`, if still inside `window_ms`.
    pub fn idempotent_result(
        &self,
        method: &str,
        key: &str,
        window_ms: i64,
    ) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT response FROM idempotency WHERE method = ?1 AND key = ?2 AND created_at_ms >= ?3",
                params![method, key, now_ms() - window_ms],
                |r| r.get(0),
            )
            .optional()
            .ctx("reading idempotency key")
    }

    /// Remembers the result of a side-effecting call for its idempotency key.
    pub fn remember_result(&mut self, method: &str, key: &str, response: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO idempotency(method, key, response, created_at_ms) VALUES (?1,?2,?3,?4)",
                params![method, key, response, now_ms()],
            )
            .ctx("storing idempotency key")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
