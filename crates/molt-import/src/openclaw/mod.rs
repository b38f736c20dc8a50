//! OpenClaw's state dir, read without writing to it: where it is, its config, its agents,
//! their sessions and its cron jobs. The layouts are described in `docs/openclaw-state.md`.

pub mod config;
pub mod cron;
pub mod sessions;
mod sqlite;

use std::path::{Path, PathBuf};

use molt_config::expand_home;
use serde_json::Value;

use crate::ImportError;

/// Where the state dir is: `--from`, else `OPENCLAW_STATE_DIR`, else `~/.openclaw-<profile>`
/// with `--profile`, else `~/.openclaw`.
pub fn locate(
    from: Option<&Path>,
    profile: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PathBuf, ImportError> {
    if let Some(dir) = from {
        return Ok(dir.to_owned());
    }
    if let Some(dir) = env("OPENCLAW_STATE_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = env("HOME").filter(|h| !h.is_empty()).ok_or_else(|| {
        ImportError::at(
            Path::new("~"),
            "HOME is not set; name the OpenClaw state dir with --from".to_owned(),
        )
    })?;
    Ok(match profile {
        Some(p) => PathBuf::from(home).join(format!(".openclaw-{p}")),
        None => PathBuf::from(home).join(".openclaw"),
    })
}

/// Which on-disk layout the state dir has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// SQLite session and cron stores (OpenClaw 2026.7 and later).
    Sqlite,
    /// `sessions.json` + JSONL transcripts and `cron/jobs.json` (older).
    Files,
    /// A config and no sessions or jobs.
    ConfigOnly,
}

/// One agent of the source.
#[derive(Debug, Clone)]
pub struct SourceAgent {
    pub id: String,
    pub name: Option<String>,
    /// `provider/model`, when the agent sets one.
    pub model: Option<String>,
    /// The workspace directory, `~` expanded.
    pub workspace: PathBuf,
    /// Config keys of the entry that molt does not map.
    pub unmapped: Vec<String>,
}

/// Everything read from one state dir.
#[derive(Debug)]
pub struct Source {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    /// `openclaw.json` with its `$include`s resolved; `${VAR}` references kept.
    pub config: Value,
    pub layout: Layout,
    pub agents: Vec<SourceAgent>,
    /// The agent OpenClaw treats as default, and why.
    pub default_agent: (String, &'static str),
    pub sessions: Vec<sessions::SourceSession>,
    /// `(what, why)` for sessions and files not imported.
    pub session_skips: Vec<(String, String)>,
    pub jobs: cron::SourceJobs,
}

impl Source {
    /// Reads the state dir `dir`. `env` resolves `HOME` and `OPENCLAW_CONFIG_PATH`.
    pub fn read(dir: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ImportError> {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(ImportError::at(
                    dir,
                    "is not a directory; name OpenClaw's state dir (usually ~/.openclaw)".into(),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ImportError::at(
                    dir,
                    "does not exist; name OpenClaw's state dir with --from (usually \
                     ~/.openclaw, or ~/.openclaw-<profile>)"
                        .into(),
                ));
            }
            Err(e) => return Err(ImportError::io(dir, "cannot read", &e)),
        }
        let config_path = env("OPENCLAW_CONFIG_PATH")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.join("openclaw.json"));
        if !config_path.exists() {
            return Err(ImportError::at(
                &config_path,
                "is missing: is this an OpenClaw state dir?".into(),
            ));
        }
        let config = config::load(&config_path)?;
        if !config.is_object() {
            return Err(ImportError::at(
                &config_path,
                "is not a JSON5 object".into(),
            ));
        }
        let home = env("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.to_owned());
        let (agents, default_agent) = read_agents(&config, dir, &home);
        let mut sessions = Vec::new();
        let mut session_skips = Vec::new();
        let mut layout = Layout::ConfigOnly;
        for agent in &agents {
            let agent_dir = dir.join("agents").join(&agent.id);
            if agent_dir
                .join("agent")
                .join("openclaw-agent.sqlite")
                .exists()
            {
                layout = Layout::Sqlite;
            } else if agent_dir.join("sessions").join("sessions.json").exists()
                && layout == Layout::ConfigOnly
            {
                layout = Layout::Files;
            }
            let found = sessions::read_agent(&agent_dir, &agent.id)?;
            sessions.extend(found.sessions);
            session_skips.extend(found.skipped);
        }
        let jobs = cron::read(dir)?;
        if layout == Layout::ConfigOnly && dir.join("cron").join("jobs.json").exists() {
            layout = Layout::Files;
        }
        if dir.join("state").join("openclaw.sqlite").exists() {
            layout = Layout::Sqlite;
        }
        Ok(Self {
            dir: dir.to_owned(),
            config_path,
            config,
            layout,
            agents,
            default_agent,
            sessions,
            session_skips,
            jobs,
        })
    }
}

const AGENT_KEYS: &[&str] = &["id", "name", "workspace", "model", "default", "agentDir"];

/// The agents: `agents.entries` (2026.9) or `agents.list` (older), plus agent directories
/// under `agents/` the config does not name (their sessions are still worth keeping).
fn read_agents(
    config: &Value,
    dir: &Path,
    home: &Path,
) -> (Vec<SourceAgent>, (String, &'static str)) {
    let agents_cfg = config.get("agents").cloned().unwrap_or(Value::Null);
    let mut raw: Vec<(String, Value)> = Vec::new();
    if let Some(Value::Object(entries)) = agents_cfg.get("entries") {
        raw.extend(entries.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    if let Some(Value::Array(list)) = agents_cfg.get("list") {
        for a in list {
            if let Some(id) = a.get("id").and_then(Value::as_str) {
                raw.push((id.to_owned(), a.clone()));
            }
        }
    }
    let marked = raw
        .iter()
        .find(|(_, a)| a.get("default").and_then(Value::as_bool) == Some(true))
        .map(|(id, _)| id.clone());
    let default_agent = match marked {
        Some(id) => (id, "marked default"),
        None if raw.iter().any(|(id, _)| id == "main") => ("main".into(), "named main"),
        None if raw.len() == 1 => (raw[0].0.clone(), "the only agent"),
        None if !raw.is_empty() => (raw[0].0.clone(), "the first agent listed"),
        None => ("main".into(), "no agents configured"),
    };
    if !raw.iter().any(|(id, _)| *id == default_agent.0) {
        raw.insert(0, (default_agent.0.clone(), Value::Null));
    }
    if let Ok(entries) = std::fs::read_dir(dir.join("agents")) {
        let mut extra: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|id| !raw.iter().any(|(r, _)| r == id))
            .collect();
        extra.sort();
        raw.extend(extra.into_iter().map(|id| (id, Value::Null)));
    }
    let defaults_ws = agents_cfg
        .pointer("/defaults/workspace")
        .and_then(Value::as_str);
    let agents = raw
        .into_iter()
        .map(|(id, a)| {
            let workspace = match a.get("workspace").and_then(Value::as_str) {
                Some(w) => expand_home(w, home),
                None if id == default_agent.0 => defaults_ws
                    .map(|w| expand_home(w, home))
                    .unwrap_or_else(|| dir.join("workspace")),
                None => dir.join(format!("workspace-{id}")),
            };
            let model = match a.get("model") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(m) => m.get("primary").and_then(Value::as_str).map(str::to_owned),
                None => None,
            };
            let unmapped = a
                .as_object()
                .map(|o| {
                    o.keys()
                        .filter(|k| !AGENT_KEYS.contains(&k.as_str()))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            SourceAgent {
                name: a.get("name").and_then(Value::as_str).map(str::to_owned),
                id,
                model,
                workspace,
                unmapped,
            }
        })
        .collect();
    (agents, default_agent)
}
