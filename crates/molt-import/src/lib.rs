//! `molt import openclaw`: bring an OpenClaw install's config, agents, workspaces, sessions
//! and cron jobs into molt, leaving the source untouched.
//!
//! The import runs in three phases:
//!
//! 1. **Read** the source ([`openclaw::Source`]): `openclaw.json` (JSON5, `$include`,
//!    `${VAR}` references kept), the agents, their sessions (SQLite or JSON files) and the
//!    cron jobs. SQLite files are read from private copies, so nothing is written next to the
//!    source, not even a `-shm`. Any unreadable, malformed or too-new file stops the import
//!    here with an error that names it.
//! 2. **Plan** against molt's current config and store: each item is new, unchanged, kept
//!    (molt's own setting differs) or not imported (with the reason). `--dry-run` stops here
//!    and reports exactly what a real run would do: the store part runs in a transaction that
//!    is rolled back.
//! 3. **Write**: the new config goes to a temporary file and workspace files to a staging
//!    directory; then the sessions and jobs commit in one store transaction; only then are
//!    the config and the staged files renamed into place. A failure before the commit leaves
//!    molt as it was.
//!
//! A second import adds only what is new (see `molt_store::import`).

pub mod openclaw;
mod plan;
pub mod report;
mod workspace;

use std::path::{Path, PathBuf};

use molt_config::Config;
use molt_store::{ImportBatch, ImportedCronJob, JobOutcome, SessionOutcome, Store};

pub use report::{Report, Status};

/// An import that could not go ahead; `path` is the file at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    pub path: PathBuf,
    pub message: String,
}

impl ImportError {
    pub(crate) fn at(path: &Path, message: String) -> Self {
        Self {
            path: path.to_owned(),
            message,
        }
    }

    pub(crate) fn io(path: &Path, what: &str, e: &std::io::Error) -> Self {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                " (permission denied: run as the user who owns it)"
            }
            std::io::ErrorKind::NotFound => " (not found)",
            _ => "",
        };
        Self::at(path, format!("{what}: {e}{hint}"))
    }
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for ImportError {}

/// Where the workspaces end up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkspaceMode {
    /// Copied into molt's workspace directories; OpenClaw's stay as they are.
    #[default]
    Copy,
    /// molt's agents use OpenClaw's directories (and will write to them).
    InPlace,
}

/// One import's inputs.
#[derive(Debug, Clone)]
pub struct Options {
    /// OpenClaw's state dir (see [`openclaw::locate`]).
    pub source: PathBuf,
    /// molt's `molt.toml`, state dir and data dir (for the default workspaces).
    pub config_file: PathBuf,
    pub state_dir: PathBuf,
    pub share_dir: PathBuf,
    pub home: PathBuf,
    /// The molt unit name, for the next steps.
    pub unit: String,
    pub workspaces: WorkspaceMode,
    pub dry_run: bool,
    /// "Now", for the jobs' next runs.
    pub now_ms: i64,
    /// The host's time zone, for cron expressions without one.
    pub host_tz: String,
}

/// Runs an import (or a dry run). `env` looks up environment variables.
pub fn run(opts: &Options, env: &dyn Fn(&str) -> Option<String>) -> Result<Report, ImportError> {
    let src = openclaw::Source::read(&opts.source, env)?;
    let before = read_molt_config(&opts.config_file)?;
    let mut config = before.clone();
    let mut items = plan::Items(Vec::new());
    let mut next = Vec::new();
    plan::map_config(
        &src,
        &mut config,
        &mut items,
        env,
        opts.workspaces == WorkspaceMode::InPlace,
        &mut next,
    );
    config.validate().map_err(|e| {
        ImportError::at(
            &opts.config_file,
            format!("the config the import would write is not valid ({e}); nothing was written"),
        )
    })?;

    let workspaces = match opts.workspaces {
        WorkspaceMode::Copy => workspace::plan(&src, &config, opts, &mut items)?,
        WorkspaceMode::InPlace => Vec::new(),
    };
    let (batch, job_notes) = batch(&src, opts, &mut items);
    let config_changed = config != before;

    let staged = if opts.dry_run {
        None
    } else {
        Some(workspace::stage(workspaces)?)
    };
    let config_tmp = match (&staged, config_changed) {
        (Some(_), true) => Some(write_config_tmp(&opts.config_file, &config)?),
        _ => None,
    };
    let db = opts.state_dir.join("molt.db");
    let result = open_store(&opts.state_dir, &db, opts.dry_run).and_then(|store| match store {
        Some(mut s) => s
            .import_batch(&batch, !opts.dry_run)
            .map(Some)
            .map_err(|e| {
                ImportError::at(
                    &db,
                    format!("the import did not commit ({e}); nothing was written"),
                )
            }),
        None => Ok(None),
    });
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            if let Some(tmp) = &config_tmp {
                let _ = std::fs::remove_file(tmp);
            }
            if let Some(s) = staged {
                s.discard();
            }
            return Err(e);
        }
    };
    // Committed: the rest are renames within one file system.
    if let Some(s) = staged {
        s.commit(&mut items)?;
    }
    if let Some(tmp) = config_tmp {
        if opts.config_file.exists() {
            let backup = opts.config_file.with_extension("toml.before-import");
            std::fs::copy(&opts.config_file, &backup).map_err(|e| {
                ImportError::io(&backup, "cannot keep a copy of the old config", &e)
            })?;
        }
        std::fs::rename(&tmp, &opts.config_file).map_err(|e| {
            ImportError::io(
                &opts.config_file,
                "cannot write the config (the store import did commit; run the import again)",
                &e,
            )
        })?;
    }

    report_outcomes(&batch, &job_notes, result.as_ref(), &mut items);
    next.insert(
        0,
        "Stop OpenClaw's gateway: systemctl --user disable --now openclaw-gateway.service".into(),
    );
    next.push(format!(
        "Start molt's: molt service install && molt service start (or systemctl --user restart {} if it runs)",
        opts.unit
    ));
    next.push("Check it: molt doctor && molt sessions list".into());
    let mut report = Report {
        source: src.dir.display().to_string(),
        layout: src.layout,
        dry_run: opts.dry_run,
        config_file: opts.config_file.display().to_string(),
        config_changed,
        counts: Default::default(),
        items: items.0,
        next_steps: next,
    };
    report.count();
    Ok(report)
}

/// molt's config as written in its file (no environment overrides, which must not be baked
/// into the file).
fn read_molt_config(path: &Path) -> Result<Config, ImportError> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            ImportError::at(
                path,
                format!(
                    "molt's config does not parse ({}); fix it first",
                    e.to_string().trim()
                ),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(ImportError::io(path, "cannot read molt's config", &e)),
    }
}

fn write_config_tmp(path: &Path, config: &Config) -> Result<PathBuf, ImportError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| ImportError::io(dir, "cannot create molt's config dir", &e))?;
    let text = render_config(path, config)?;
    let tmp = path.with_extension(format!("toml.import-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| ImportError::io(&tmp, "cannot write the config", &e))?;
    let header = "# Written by `molt import openclaw`; the previous file, if any, is kept as \
                  molt.toml.before-import.\n";
    f.write_all(header.as_bytes())
        .and_then(|()| f.write_all(text.as_bytes()))
        .and_then(|()| f.sync_all())
        .map_err(|e| ImportError::io(&tmp, "cannot write the config", &e))?;
    Ok(tmp)
}

/// The config as TOML with the keys left at their defaults left out (unless the file already
/// wrote them), so that a later molt's better default still applies.
fn render_config(path: &Path, config: &Config) -> Result<String, ImportError> {
    let bad =
        |e: &dyn std::fmt::Display| ImportError::at(path, format!("cannot render the config: {e}"));
    let mut new = toml::Table::try_from(config).map_err(|e| bad(&e))?;
    // Defaults of the tables a default config does not have: each provider's limits, and
    // the Discord block.
    let mut with_tables = Config::default();
    for (name, p) in &config.models.providers {
        let mut d = p.clone();
        d.limits = Default::default();
        with_tables.models.providers.insert(name.clone(), d);
    }
    if config.channels.discord.is_some() {
        with_tables.channels.discord = Some(Default::default());
    }
    let mut defaults = toml::Table::try_from(with_tables).map_err(|e| bad(&e))?;
    // Only the limits of a provider are defaults; its other keys always stay.
    if let Some(toml::Value::Table(ps)) = defaults
        .get_mut("models")
        .and_then(|m| m.as_table_mut())
        .and_then(|m| m.get_mut("providers"))
    {
        for (_, p) in ps.iter_mut() {
            if let toml::Value::Table(t) = p {
                t.retain(|k, _| k == "limits");
            }
        }
    }
    let written: toml::Table = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_default();
    prune(&mut new, &defaults, &written);
    toml::to_string(&new).map_err(|e| bad(&e))
}

fn prune(new: &mut toml::Table, defaults: &toml::Table, written: &toml::Table) {
    let empty = toml::Table::new();
    new.retain(|k, v| {
        let in_file = written.get(k);
        match (v, defaults.get(k)) {
            (toml::Value::Table(t), d) => {
                let d = d.and_then(toml::Value::as_table).unwrap_or(&empty);
                let w = in_file.and_then(toml::Value::as_table).unwrap_or(&empty);
                prune(t, d, w);
                !t.is_empty() || in_file.is_some()
            }
            (v, Some(d)) => v != d || in_file.is_some(),
            (_, None) => true,
        }
    });
}

/// The store, or `None` in a dry run when it does not exist yet (everything is then new).
fn open_store(state_dir: &Path, db: &Path, dry_run: bool) -> Result<Option<Store>, ImportError> {
    use std::os::unix::fs::DirBuilderExt;
    if dry_run && !db.exists() {
        return Ok(None);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|e| ImportError::io(state_dir, "cannot create molt's state dir", &e))?;
    Store::open(db).map(Some).map_err(|e| {
        ImportError::at(
            db,
            format!("cannot open molt's store ({e}); nothing was written"),
        )
    })
}

/// The store's part of the import, and per job (in batch order) notes for its report line.
fn batch(
    src: &openclaw::Source,
    opts: &Options,
    items: &mut plan::Items,
) -> (ImportBatch, Vec<Vec<String>>) {
    let mut notes_by_job = Vec::new();
    let mut batch = ImportBatch {
        origin: "openclaw".into(),
        ..Default::default()
    };
    for (what, why) in &src.session_skips {
        items.push("sessions", what.clone(), Status::NotImported, why.clone());
    }
    for s in &src.sessions {
        if !s.dropped.is_empty() {
            items.push(
                "sessions",
                s.session.key.clone(),
                Status::Note,
                format!("left out: {}", s.dropped.join("; ")),
            );
        }
        batch.sessions.push(s.session.clone());
    }
    for (what, why) in &src.jobs.skipped {
        items.push("cron", what.clone(), Status::NotImported, why.clone());
    }
    for j in &src.jobs.jobs {
        let (spec, notes) = match openclaw::cron::to_spec(&j.job) {
            Ok(x) => x,
            Err(why) => {
                items.push("cron", j.name.clone(), Status::NotImported, why);
                continue;
            }
        };
        let compiled = match spec.schedule.compile(&opts.host_tz) {
            Ok(c) => c,
            Err(e) => {
                items.push(
                    "cron",
                    j.name.clone(),
                    Status::NotImported,
                    format!("schedule: {e}"),
                );
                continue;
            }
        };
        notes_by_job.push(notes);
        let text = match serde_json::to_string(&spec) {
            Ok(t) => t,
            Err(e) => {
                items.push("cron", j.name.clone(), Status::NotImported, e.to_string());
                continue;
            }
        };
        batch.cron_jobs.push(ImportedCronJob {
            id: j.id.clone(),
            name: j.name.clone(),
            agent_id: j
                .agent_id
                .clone()
                .unwrap_or_else(|| src.default_agent.0.clone()),
            enabled: j.enabled,
            spec: text,
            next_run_at_ms: if j.enabled {
                compiled.next_after(opts.now_ms - 1)
            } else {
                None
            },
            created_at_ms: j.created_at_ms,
        });
    }
    (batch, notes_by_job)
}

fn report_outcomes(
    batch: &ImportBatch,
    job_notes: &[Vec<String>],
    result: Option<&molt_store::ImportResult>,
    items: &mut plan::Items,
) {
    for (n, s) in batch.sessions.iter().enumerate() {
        let outcome = result
            .and_then(|r| r.sessions.get(n))
            .map(|(_, o)| o.clone())
            .unwrap_or(SessionOutcome::New {
                messages: s.messages.len(),
            });
        let (status, detail) = match outcome {
            SessionOutcome::New { messages } => (Status::Imported, format!("{messages} messages")),
            SessionOutcome::Appended { messages } => (
                Status::Imported,
                format!("{messages} new messages appended"),
            ),
            SessionOutcome::Unchanged => (Status::Unchanged, String::new()),
            SessionOutcome::Skipped { reason } => (Status::NotImported, reason),
        };
        items.push("sessions", s.key.clone(), status, detail);
    }
    for (n, j) in batch.cron_jobs.iter().enumerate() {
        let outcome = result
            .and_then(|r| r.cron_jobs.get(n))
            .map(|(_, o)| o.clone())
            .unwrap_or(JobOutcome::New);
        let (status, detail) = match outcome {
            JobOutcome::New => {
                let mut detail = vec![format!(
                    "{}, agent {}",
                    if j.enabled { "enabled" } else { "disabled" },
                    j.agent_id
                )];
                detail.extend(job_notes.get(n).into_iter().flatten().cloned());
                (Status::Imported, detail.join("; "))
            }
            JobOutcome::Unchanged => (Status::Unchanged, String::new()),
            JobOutcome::Skipped { reason } => (Status::NotImported, reason),
        };
        items.push("cron", j.name.clone(), status, detail);
    }
}
