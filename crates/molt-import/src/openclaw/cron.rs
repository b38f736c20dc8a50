//! Cron jobs, from the global SQLite store (`state/openclaw.sqlite`, 2026.7 and later) or
//! from `cron/jobs.json` (older), into molt's [`JobSpec`].
//!
//! OpenClaw's own system jobs (rows with a `declarationKey`: its heartbeat, memory and skill
//! reviews) are not user jobs; OpenClaw recreates them and molt has no counterpart, so they
//! are reported and skipped.

use std::path::{Path, PathBuf};

use molt_cron::{JobSpec, Payload, Schedule};
use serde_json::Value;

use super::sqlite::Db;
use crate::ImportError;

/// The newest global schema this importer knows (OpenClaw 2026.9).
pub const GLOBAL_SCHEMA_MAX: i64 = 18;

/// One job as read from the source.
#[derive(Debug, Clone)]
pub struct SourceJob {
    pub id: String,
    pub name: String,
    pub agent_id: Option<String>,
    pub enabled: bool,
    pub created_at_ms: i64,
    /// The CronJob object.
    pub job: Value,
    pub source: PathBuf,
}

/// What was found.
#[derive(Debug, Default)]
pub struct SourceJobs {
    pub jobs: Vec<SourceJob>,
    /// `(what, why)` for jobs not imported.
    pub skipped: Vec<(String, String)>,
}

/// Reads the jobs of the state dir `state`, whichever layout it has.
pub fn read(state: &Path) -> Result<SourceJobs, ImportError> {
    let db = state.join("state").join("openclaw.sqlite");
    let legacy = state.join("cron").join("jobs.json");
    if db.exists() {
        let mut out = read_db(&db)?;
        if legacy.exists() {
            out.skipped.push((
                legacy.display().to_string(),
                "superseded by the SQLite cron store".into(),
            ));
        }
        Ok(out)
    } else if legacy.exists() {
        read_file(&legacy)
    } else {
        Ok(SourceJobs::default())
    }
}

fn read_db(path: &Path) -> Result<SourceJobs, ImportError> {
    let db = Db::open_copy(path)?;
    db.check_schema("global", GLOBAL_SCHEMA_MAX)?;
    let rows = db.rows(
        "SELECT job_id, name, enabled, agent_id, job_json, declaration_key
         FROM cron_jobs ORDER BY sort_order, job_id",
        &[],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        },
    )?;
    let mut out = SourceJobs::default();
    for (id, name, enabled, agent_id, json, declaration) in rows {
        if let Some(d) = declaration {
            out.skipped
                .push((format!("{name} ({d})"), "an OpenClaw system job".into()));
            continue;
        }
        let job: Value = serde_json::from_str(&json).map_err(|e| {
            ImportError::at(path, format!("cron job {id} has unreadable job_json: {e}"))
        })?;
        out.jobs.push(SourceJob {
            created_at_ms: job.get("createdAtMs").and_then(Value::as_i64).unwrap_or(0),
            id,
            name,
            agent_id,
            enabled,
            job,
            source: path.to_owned(),
        });
    }
    Ok(out)
}

fn read_file(path: &Path) -> Result<SourceJobs, ImportError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ImportError::io(path, "cannot read the cron store", &e))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| ImportError::at(path, format!("not valid JSON: {e}")))?;
    let jobs = match value {
        Value::Array(jobs) => jobs,
        Value::Object(mut o) => match o.remove("jobs") {
            Some(Value::Array(jobs)) => jobs,
            _ => return Err(ImportError::at(path, "has no \"jobs\" list".to_owned())),
        },
        _ => return Err(ImportError::at(path, "is not a cron store".to_owned())),
    };
    let mut out = SourceJobs::default();
    for (n, job) in jobs.into_iter().enumerate() {
        let s = |k: &str| job.get(k).and_then(Value::as_str).map(str::to_owned);
        let (Some(id), Some(name)) = (s("id"), s("name")) else {
            out.skipped
                .push((format!("job #{}", n + 1), "has no id or name".into()));
            continue;
        };
        if let Some(d) = s("declarationKey") {
            out.skipped
                .push((format!("{name} ({d})"), "an OpenClaw system job".into()));
            continue;
        }
        out.jobs.push(SourceJob {
            agent_id: s("agentId"),
            enabled: job.get("enabled").and_then(Value::as_bool).unwrap_or(true),
            created_at_ms: job.get("createdAtMs").and_then(Value::as_i64).unwrap_or(0),
            id,
            name,
            job,
            source: path.to_owned(),
        });
    }
    Ok(out)
}

/// The job as molt's spec, with notes on what molt does differently; `Err` says why it
/// cannot be imported.
pub fn to_spec(job: &Value) -> Result<(JobSpec, Vec<String>), String> {
    let mut notes = Vec::new();
    let schedule: Schedule = serde_json::from_value(
        job.get("schedule").cloned().ok_or("it has no schedule")?,
    )
    .map_err(|e| {
        let kind = job.pointer("/schedule/kind").and_then(Value::as_str);
        match kind {
            Some(k @ ("on-exit" | "stream")) => {
                format!("its schedule kind {k:?} runs on a process event, which molt has not")
            }
            _ => format!("its schedule is not one molt reads: {e}"),
        }
    })?;
    let payload = job.get("payload").ok_or("it has no payload")?;
    let text = |k: &str| payload.get(k).and_then(Value::as_str).map(str::to_owned);
    let payload = match payload.get("kind").and_then(Value::as_str) {
        Some("agentTurn") => Payload::AgentTurn {
            message: text("message").ok_or("its agentTurn has no message")?,
            model: text("model"),
        },
        Some("systemEvent") => Payload::SystemEvent {
            text: text("text").ok_or("its systemEvent has no text")?,
        },
        Some(other) => {
            return Err(format!(
                "its payload kind {other:?} has no molt counterpart"
            ));
        }
        None => return Err("its payload has no kind".into()),
    };
    if let Some(mode) = job.pointer("/delivery/mode").and_then(Value::as_str)
        && mode != "none"
    {
        notes.push(format!(
            "delivery {mode:?} is not imported: molt keeps each run's result in its session"
        ));
    }
    let session_target = job
        .get("sessionTarget")
        .and_then(Value::as_str)
        .unwrap_or("isolated")
        .to_owned();
    let spec = JobSpec {
        schedule,
        payload,
        session_target,
        wake_mode: job
            .get("wakeMode")
            .and_then(Value::as_str)
            .unwrap_or("now")
            .to_owned(),
        description: job
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_owned),
        delete_after_run: job
            .get("deleteAfterRun")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    spec.check()?;
    Ok((spec, notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn specs_map_and_what_molt_lacks_is_refused_with_a_reason() {
        let (spec, notes) = to_spec(&json!({
            "schedule": {"kind": "cron", "expr": "30 7 * * 1-5", "tz": "Europe/Berlin", "staggerMs": 0},
            "sessionTarget": "isolated", "wakeMode": "now",
            "payload": {"kind": "agentTurn", "message": "Summarize.", "toolsAllow": ["*"]},
            "delivery": {"mode": "announce", "channel": "last"}
        }))
        .unwrap();
        assert!(
            matches!(spec.payload, Payload::AgentTurn { ref message, .. } if message == "Summarize.")
        );
        assert_eq!(notes.len(), 1);
        let e = to_spec(&json!({"schedule": {"kind": "on-exit", "command": "x"},
            "payload": {"kind": "agentTurn", "message": "m"}}))
        .unwrap_err();
        assert!(e.contains("on-exit"), "{e}");
        let e = to_spec(&json!({"schedule": {"kind": "every", "everyMs": 60000},
            "payload": {"kind": "heartbeat"}}))
        .unwrap_err();
        assert!(e.contains("heartbeat"), "{e}");
        let e = to_spec(&json!({"schedule": {"kind": "every", "everyMs": 60000},
            "sessionTarget": "current", "payload": {"kind": "agentTurn", "message": "m"}}))
        .unwrap_err();
        assert!(e.contains("current"), "{e}");
    }
}
