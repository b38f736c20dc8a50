//! Versioned schema migrations, tracked in `PRAGMA user_version`.
//!
//! Each entry is applied once, in order, inside one transaction with its version bump. Never
//! edit a released entry: append a new one.

use rusqlite::Connection;

use crate::{Ctx, Result, StoreError};

const MIGRATIONS: &[&str] = &[
    // 1: boots and durable runs.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE boots (
        epoch INTEGER PRIMARY KEY,
        pid INTEGER NOT NULL,
        version TEXT NOT NULL,
        build_id TEXT NOT NULL,
        started_at_ms INTEGER NOT NULL,
        ended_at_ms INTEGER,
        clean INTEGER
     );
     CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        title TEXT,
        state TEXT NOT NULL
            CHECK (state IN ('queued','running','succeeded','failed','cancelled')),
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        finished_at_ms INTEGER,
        next_step INTEGER NOT NULL DEFAULT 0,
        step_count INTEGER NOT NULL,
        lease_epoch INTEGER,
        lease_pid INTEGER,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        idempotency_key TEXT UNIQUE,
        error TEXT
     );
     CREATE INDEX runs_by_state ON runs(state, created_at_ms);
     CREATE TABLE steps (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        spec TEXT NOT NULL,
        state TEXT NOT NULL
            CHECK (state IN ('pending','running','succeeded','failed','cancelled')),
        attempts INTEGER NOT NULL DEFAULT 0,
        effect_key TEXT NOT NULL,
        exit_code INTEGER,
        output_tail TEXT,
        started_at_ms INTEGER,
        finished_at_ms INTEGER,
        error TEXT,
        PRIMARY KEY (run_id, idx)
     );",
    // 2: protocol state: idempotency keys, paired devices.
    "CREATE TABLE idempotency (
        method TEXT NOT NULL,
        key TEXT NOT NULL,
        response TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (method, key)
     );
     CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        public_key TEXT NOT NULL,
        client_id TEXT,
        platform TEXT,
        state TEXT NOT NULL CHECK (state IN ('pending','approved','rejected')),
        role TEXT NOT NULL,
        scopes TEXT NOT NULL,
        token TEXT,
        remote TEXT,
        created_at_ms INTEGER NOT NULL,
        decided_at_ms INTEGER,
        last_seen_ms INTEGER
     );",
    // 3: the update journal: one row per transaction, one per step, written before it acts.
    "CREATE TABLE update_jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('update','rollback','recover')),
        state TEXT NOT NULL
            CHECK (state IN ('pending','running','rolling_back','ok','rolled_back','failed')),
        requester TEXT NOT NULL,
        params TEXT NOT NULL,
        continuation TEXT,
        from_version TEXT,
        from_build TEXT,
        to_version TEXT,
        to_build TEXT,
        error TEXT,
        launcher TEXT,
        updater_pid INTEGER,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        finished_at_ms INTEGER,
        delivered_at_ms INTEGER
     );
     CREATE INDEX update_jobs_by_time ON update_jobs(created_at_ms);
     CREATE TABLE update_steps (
        job_id TEXT NOT NULL REFERENCES update_jobs(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        name TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('started','ok','failed','skipped')),
        started_at_ms INTEGER NOT NULL,
        finished_at_ms INTEGER,
        detail TEXT,
        PRIMARY KEY (job_id, seq)
     );",
    // 4: the agent: sessions, transcripts, turns (runs of kind 'turn'), inputs waiting for a
    // turn, and events relayed from a draining process to its successor.
    "ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'exec'
        CHECK (kind IN ('exec','turn'));
     CREATE TABLE sessions (
        key TEXT PRIMARY KEY,
        agent_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        label TEXT,
        model TEXT,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        total_tokens INTEGER NOT NULL DEFAULT 0,
        last_run_id TEXT
     );
     CREATE INDEX sessions_by_update ON sessions(updated_at_ms);
     CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_key TEXT NOT NULL,
        session_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        run_id TEXT,
        role TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        UNIQUE (session_key, seq)
     );
     CREATE TABLE turns (
        run_id TEXT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
        session_key TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        origin TEXT NOT NULL,
        event_seq INTEGER NOT NULL DEFAULT 0,
        final_text TEXT,
        stop_reason TEXT,
        error_kind TEXT,
        usage TEXT,
        model TEXT
     );
     CREATE INDEX turns_by_session ON turns(session_key);
     CREATE TABLE turn_inputs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL,
        session_key TEXT NOT NULL,
        text TEXT NOT NULL,
        idempotency_key TEXT,
        created_at_ms INTEGER NOT NULL
     );
     CREATE INDEX turn_inputs_by_run ON turn_inputs(run_id);
     CREATE TABLE relay_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL
     );",
    // 5: operator approvals of tool calls (one per tool step, by its effect key), and update
    // jobs an agent's tool asked for: the step's effect key makes the request idempotent, and
    // the session gets the outcome.
    "CREATE TABLE approvals (
        id TEXT PRIMARY KEY,
        effect_key TEXT NOT NULL UNIQUE,
        run_id TEXT NOT NULL,
        session_key TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        tool TEXT NOT NULL,
        command TEXT NOT NULL,
        cwd TEXT,
        reason TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'approved', 'denied', 'cancelled')),
        created_at_ms INTEGER NOT NULL,
        decided_at_ms INTEGER,
        decided_by TEXT
     );
     CREATE INDEX approvals_pending ON approvals(state, created_at_ms);
     ALTER TABLE update_jobs ADD COLUMN effect_key TEXT;
     ALTER TABLE update_jobs ADD COLUMN session_key TEXT;
     ALTER TABLE update_jobs ADD COLUMN agent_id TEXT;
     CREATE UNIQUE INDEX update_jobs_by_effect ON update_jobs(effect_key)
        WHERE effect_key IS NOT NULL;",
    // 6: cron. A job's schedule and payload are the gateway's JSON (`spec`); the scheduler
    // reads `next_run_at_ms`. A fire is claimed by its (job, scheduled time) primary key in
    // the same transaction that creates its run and advances the job, so no overlap of two
    // processes and no restart can fire one scheduled time twice.
    "CREATE TABLE cron_jobs (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        spec TEXT NOT NULL,
        next_run_at_ms INTEGER,
        consecutive_errors INTEGER NOT NULL DEFAULT 0,
        last_run_at_ms INTEGER,
        last_status TEXT,
        last_error TEXT,
        last_duration_ms INTEGER,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
     );
     CREATE INDEX cron_jobs_due ON cron_jobs(next_run_at_ms) WHERE enabled = 1;
     CREATE TABLE cron_fires (
        job_id TEXT NOT NULL,
        scheduled_at_ms INTEGER NOT NULL,
        job_name TEXT NOT NULL,
        trigger TEXT NOT NULL,
        run_id TEXT,
        session_key TEXT,
        state TEXT NOT NULL CHECK (state IN ('started', 'ok', 'error', 'skipped')),
        started_at_ms INTEGER NOT NULL,
        finished_at_ms INTEGER,
        error TEXT,
        summary TEXT,
        PRIMARY KEY (job_id, scheduled_at_ms)
     );
     CREATE INDEX cron_fires_open ON cron_fires(state) WHERE state = 'started';
     CREATE INDEX cron_fires_by_time ON cron_fires(started_at_ms);",
    // 7: the Discord channel. An inbound message id is recorded in the transaction that
    // creates its turn, so a redelivered message starts nothing. A reply is queued in the
    // transaction that marks its message answered, and posted chunk by chunk with a nonce
    // derived from the row, so an interrupted post is retried without a duplicate. The
    // gateway session (id, sequence, resume URL) is kept with the boot that owns it, so a
    // successor or the next start RESUMEs instead of identifying again.
    "CREATE TABLE discord_inbound (
        message_id TEXT PRIMARY KEY,
        channel_id TEXT NOT NULL,
        author_id TEXT NOT NULL,
        session_key TEXT,
        run_id TEXT,
        state TEXT NOT NULL CHECK (state IN ('turn','replied','pairing')),
        received_at_ms INTEGER NOT NULL
     );
     CREATE INDEX discord_inbound_open ON discord_inbound(state) WHERE state = 'turn';
     CREATE TABLE discord_outbound (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel_id TEXT NOT NULL,
        content TEXT NOT NULL,
        nonce TEXT NOT NULL,
        source TEXT,
        state TEXT NOT NULL CHECK (state IN ('pending','sending','sent','failed')),
        claim_epoch INTEGER,
        chunks_sent INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
     );
     CREATE INDEX discord_outbound_open ON discord_outbound(state)
        WHERE state IN ('pending','sending');
     CREATE TABLE discord_pairing (
        code TEXT PRIMARY KEY,
        user_id TEXT NOT NULL UNIQUE,
        username TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL
     );
     CREATE TABLE discord_allowed (
        user_id TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        code TEXT,
        approved_at_ms INTEGER NOT NULL
     );
     CREATE TABLE discord_session (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        session_id TEXT,
        seq INTEGER NOT NULL DEFAULT 0,
        resume_url TEXT,
        owner_epoch INTEGER,
        updated_at_ms INTEGER NOT NULL
     );",
    // 8: `send` goes through the Discord outbound queue. Its idempotency key names one row,
    // so a retried `send` finds the row instead of queueing the message again; the ids of
    // the messages posted are recorded chunk by chunk (a JSON array), so whoever waits for
    // the row, or asks again with the key, gets them.
    "ALTER TABLE discord_outbound ADD COLUMN send_key TEXT;
     ALTER TABLE discord_outbound ADD COLUMN message_ids TEXT NOT NULL DEFAULT '[]';
     CREATE UNIQUE INDEX discord_outbound_by_send_key ON discord_outbound(send_key)
        WHERE send_key IS NOT NULL;",
];

/// The newest schema version this build knows.
pub const LATEST: i64 = MIGRATIONS.len() as i64;

pub(crate) fn run(conn: &mut Connection) -> Result<()> {
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .ctx("reading schema version")?;
    if current > LATEST {
        return Err(StoreError::TooNew {
            found: current,
            known: LATEST,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .ctx("starting migration")?;
        tx.execute_batch(sql).ctx("applying migration")?;
        tx.pragma_update(None, "user_version", i as i64 + 1)
            .ctx("bumping schema version")?;
        tx.commit().ctx("committing migration")?;
    }
    Ok(())
}
