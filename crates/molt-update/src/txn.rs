//! The updater: `molt update apply --job ID` (design §5). It runs outside the gateway (a
//! transient unit, or a detached process) and takes one journalled job to a final state.
//!
//! The plan of an update:
//!
//! ```text
//! lock → resolve → download → verify → unpack      failure here: FAILED, nothing changed
//! → preflight → snapshot → switch → unit → handover → serving
//!                                                  failure here: roll back → ROLLED BACK
//! → commit → prune                                 OK
//! ```
//!
//! Rolling back, and recovering a job whose updater died, are the same move: *converge* on a
//! version that is known to work. Converging points `current` at it, rewrites the unit for it,
//! restores the snapshot if the schema moved, hands over (or starts the unit) until the gateway
//! runs it, and verifies it serves. Every step is journalled before it acts.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use molt_client::profile::{Access, request};
use molt_config::Context;
use molt_protocol::method::AnyParams;
use molt_protocol::methods::system::{Probe, RestartParams, RestartRequest, Status};
use molt_protocol::methods::update::{NotifyParams, UpdateNotify};
use molt_release::artifact;
use molt_release::keys::{self, PublicKey};
use molt_release::manifest::{Entry, Manifest};
use molt_service::install::{self, now_ms};
use molt_service::layout::{self, InstallOutcome, Layout};
use molt_service::update_lock::UpdateLock;
use molt_store::{JobState, JournalStepState, Store, UpdateJob, UpdateKind, VersionRef};
use serde::{Deserialize, Serialize};

use crate::error::UpdateError;
use crate::source::Source;

/// The request stored with an update job.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UpdateParams {
    pub source: Option<String>,
    pub to: Option<String>,
    pub allow_downgrade: bool,
    /// Stop after the preflight: nothing is installed or switched.
    pub dry_run: bool,
    /// `update.run`'s `restartDelayMs`: wait this long before the handover, so a reply the
    /// agent is sending goes out before its connection is moved (capped at a minute).
    pub restart_delay_ms: Option<u64>,
    /// `update.run`'s `timeoutMs`: overrides `[update] verify_timeout_ms` for this job.
    pub verify_timeout_ms: Option<u64>,
}

/// The longest `restartDelayMs` honoured.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);

/// Steps after which a failure rolls back rather than just stopping.
const ROLLS_BACK_FROM: &str = "preflight";

/// A step's result: a value, what to journal, and whether it was skipped.
struct Done<T> {
    value: T,
    detail: Option<String>,
    skipped: bool,
}

fn done<T>(value: T, detail: impl Into<String>) -> Done<T> {
    Done {
        value,
        detail: Some(detail.into()),
        skipped: false,
    }
}

fn skipped<T>(value: T, why: impl Into<String>) -> Done<T> {
    Done {
        value,
        detail: Some(why.into()),
        skipped: true,
    }
}

/// A step that failed, and why.
struct StepError {
    step: String,
    message: String,
}

type StepResult<T> = Result<T, StepError>;

/// One run of the updater over one job.
pub struct Updater<'a> {
    access: &'a Access,
    ctx: &'a Context,
    /// The job's request (defaults for rollback and recovery jobs).
    params: UpdateParams,
    store: Store,
    job: UpdateJob,
    layout: Layout,
    unit: String,
    failpoint: Option<String>,
    /// The journal row of the step now running (download progress goes into it).
    step_seq: i64,
}

/// Opens the profile's store (creating the state dir 0700 if needed).
pub fn open_store(ctx: &Context) -> Result<Store, UpdateError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&ctx.state_dir)
        .map_err(|e| {
            UpdateError::Failed(format!(
                "cannot create the state dir {}: {e}",
                ctx.state_dir.display()
            ))
        })?;
    let path = ctx.state_dir.join("molt.db");
    Store::open(&path)
        .map_err(|e| UpdateError::Failed(format!("cannot open {}: {e}", path.display())))
}

/// `molt update apply --job ID`: runs the job to a final state.
pub fn apply(ctx: &Context, access: &Access, job_id: &str) -> Result<(), UpdateError> {
    let store = open_store(ctx)?;
    let job = store
        .update_job(job_id)
        .map_err(|e| UpdateError::Failed(e.to_string()))?
        .ok_or_else(|| UpdateError::Failed(format!("no update job {job_id}")))?;
    if job.state != JobState::Pending {
        return Err(UpdateError::Failed(format!(
            "update job {job_id} already ran (it is {}); see `molt update status`",
            job.state.as_str()
        )));
    }
    let params: UpdateParams = serde_json::from_str(&job.params).unwrap_or_default();
    let mut u = Updater {
        access,
        ctx,
        params,
        store,
        job,
        layout: install::layout(ctx, None)?,
        unit: ctx.profile.unit_name(),
        failpoint: std::env::var("MOLT_UPDATE_FAILPOINT").ok(),
        step_seq: 0,
    };
    let pid = std::process::id();
    u.store
        .set_update_runner(job_id, pid)
        .map_err(|e| UpdateError::Failed(e.to_string()))?;
    let outcome = u.run();
    let job = u.reload();
    if let Err(e) = &outcome {
        tracing::error!(job = job_id, error = %e.message, "update job failed");
    }
    u.notify_gateway();
    let code = job.report().exit_code();
    if code == 0 {
        Ok(())
    } else {
        Err(UpdateError::Ended {
            code,
            message: format!(
                "update job {job_id}: {}",
                job.error.unwrap_or_else(|| job.state.as_str().into())
            ),
        })
    }
}

impl Updater<'_> {
    fn run(&mut self) -> StepResult<()> {
        let lock = self.step("lock", |u| {
            // A brief wait: a start-up check may hold the lock for a moment.
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                match UpdateLock::try_acquire(&u.ctx.state_dir)? {
                    Some(l) => return Ok(done(l, "update.lock held")),
                    None if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    None => {
                        return Err("another update is running (update.lock is held); follow it with `molt update status --follow`".into());
                    }
                }
            }
        });
        let _lock = match lock {
            Ok(l) => l,
            Err(e) => {
                self.finish(JobState::Failed, Some(&e.message));
                return Err(e);
            }
        };
        self.set_state(JobState::Running, None);
        // An interrupted job is settled before anything new starts.
        let others: Vec<UpdateJob> = self
            .store
            .unfinished_update_jobs()
            .unwrap_or_default()
            .into_iter()
            .filter(|j| j.id != self.job.id)
            .collect();
        for other in &others {
            if let Err(e) = self.recover(other) {
                let msg = format!(
                    "could not recover interrupted job {}: {}; run `molt doctor --fix`",
                    other.id, e.message
                );
                self.finish(JobState::Failed, Some(&msg));
                return Err(e);
            }
        }
        match self.job.kind {
            UpdateKind::Update => {
                let params = self.params.clone();
                self.update(&params)
            }
            UpdateKind::Rollback => self.rollback_to_previous(),
            UpdateKind::Recover => {
                if others.is_empty() {
                    let _ = self.step("inspect", |_| {
                        Ok(skipped((), "no interrupted update job; nothing to recover"))
                    });
                }
                self.step("commit", |_| Ok(done((), "recovered")))?;
                self.set_state(JobState::Ok, None);
                Ok(())
            }
        }
    }

    /// Journals `name` as started, runs it, and journals how it ended.
    fn step<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Self) -> Result<Done<T>, String>,
    ) -> StepResult<T> {
        let id = self.job.id.clone();
        let seq = self
            .store
            .begin_update_step(&id, name)
            .map_err(|e| StepError {
                step: name.into(),
                message: format!("cannot journal step {name}: {e}"),
            })?;
        self.step_seq = seq;
        let t0 = Instant::now();
        let result = f(self);
        let (state, detail) = match &result {
            Ok(d) if d.skipped => (JournalStepState::Skipped, d.detail.clone()),
            Ok(d) => (JournalStepState::Ok, d.detail.clone()),
            Err(e) => (JournalStepState::Failed, Some(e.clone())),
        };
        if let Err(e) = self
            .store
            .end_update_step(&id, seq, state, detail.as_deref())
        {
            tracing::error!(step = name, error = %e, "cannot close the journalled step");
        }
        tracing::info!(
            step = name,
            state = state.as_str(),
            ms = t0.elapsed().as_millis() as u64,
            detail = detail.as_deref().unwrap_or(""),
            "update step"
        );
        if result.is_ok() && self.failpoint.as_deref() == Some(&format!("kill-after:{name}")) {
            tracing::warn!(step = name, "MOLT_UPDATE_FAILPOINT: killing the updater");
            // SAFETY: kill(2) on our own pid; SIGKILL is the point.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
        result.map(|d| d.value).map_err(|message| StepError {
            step: name.into(),
            message,
        })
    }

    fn reload(&mut self) -> UpdateJob {
        if let Ok(Some(j)) = self.store.update_job(&self.job.id) {
            self.job = j;
        }
        self.job.clone()
    }

    fn set_state(&mut self, state: JobState, error: Option<&str>) {
        if let Err(e) = self.store.set_update_state(&self.job.id, state, error) {
            tracing::error!(error = %e, "cannot record the job state");
        }
    }

    fn finish(&mut self, state: JobState, error: Option<&str>) {
        self.set_state(state, error);
        let _ = std::fs::remove_dir_all(self.work_dir(&self.job.id));
    }

    fn work_dir(&self, job: &str) -> PathBuf {
        self.ctx.state_dir.join("update").join(job)
    }

    fn current(&self) -> Result<VersionRef, String> {
        let r = self.layout.current_release().ok_or_else(|| {
            format!(
                "no installed version ({} is missing): run `molt install{}` first",
                self.layout.current().display(),
                self.ctx.profile_flag()
            )
        })?;
        Ok(VersionRef {
            version: r.version,
            build_id: r.build_id,
        })
    }

    fn record_versions(&mut self, from: Option<&VersionRef>, to: Option<&VersionRef>) {
        let from = from.map(|v| (v.version.as_str(), v.build_id.as_str()));
        let to = to.map(|v| (v.version.as_str(), v.build_id.as_str()));
        if let Err(e) = self.store.set_update_versions(&self.job.id, from, to) {
            tracing::error!(error = %e, "cannot record versions");
        }
    }

    // ---- update -------------------------------------------------------------------------

    fn update(&mut self, p: &UpdateParams) -> StepResult<()> {
        let from = match self.current() {
            Ok(c) => c,
            Err(e) => {
                let e = StepError {
                    step: "resolve".into(),
                    message: e,
                };
                self.finish(JobState::Failed, Some(&e.message));
                return Err(e);
            }
        };
        self.record_versions(Some(&from), None);
        match self.update_inner(p, &from) {
            Ok(()) => Ok(()),
            Err((e, to)) => self.fail_or_roll_back(e, &from, to.as_ref(), true),
        }
    }

    fn update_inner(
        &mut self,
        p: &UpdateParams,
        from: &VersionRef,
    ) -> Result<(), (StepError, Option<VersionRef>)> {
        let (source, entry) = self
            .step("resolve", |u| u.resolve(p, from))
            .map_err(|e| (e, None))?;
        let Some(entry) = entry else {
            // Already on that version: nothing to do, and nothing was touched.
            self.record_versions(None, Some(from));
            self.step("commit", |_| {
                Ok(done((), format!("already at {}", from.version)))
            })
            .map_err(|e| (e, None))?;
            self.set_state(JobState::Ok, None);
            return Ok(());
        };
        let mut to = VersionRef {
            version: entry.version.clone(),
            build_id: String::new(),
        };
        self.record_versions(None, Some(&to));
        let work = self.work_dir(&self.job.id);
        let artifact_path = work.join(&entry.artifact);
        let staging = work.join("staging");
        self.step("download", |u| {
            private_dir(&work)?;
            let n = u.download(&source, &entry, &artifact_path)?;
            Ok(done((), format!("{n} bytes from {}", source.describe())))
        })
        .map_err(|e| (e, None))?;
        self.step("verify", |_| {
            let sha = artifact::verify_file(&artifact_path, &entry).map_err(|e| e.to_string())?;
            Ok(done(
                (),
                format!(
                    "sha256 {}… and {} bytes match the signed manifest",
                    &sha[..12],
                    entry.size
                ),
            ))
        })
        .map_err(|e| (e, None))?;
        let binary = self
            .step("unpack", |_| {
                let _ = std::fs::remove_dir_all(&staging);
                let b = artifact::unpack(&artifact_path, &staging).map_err(|e| e.to_string())?;
                Ok(done(b, "one file, molt, unpacked to staging"))
            })
            .map_err(|e| (e, None))?;
        let build = self
            .step("preflight", |u| {
                u.preflight(&binary, &entry.version, !p.dry_run)
            })
            .map_err(|e| (e, Some(to.clone())))?;
        to.build_id = build;
        self.record_versions(None, Some(&to));
        if p.dry_run {
            self.step("commit", |_| {
                Ok(skipped(
                    (),
                    format!(
                        "dry run: {} -> {} would switch now; nothing was changed",
                        from.version, to.version
                    ),
                ))
            })
            .map_err(|e| (e, None))?;
            let _ = std::fs::remove_dir_all(self.work_dir(&self.job.id));
            self.set_state(JobState::Ok, None);
            return Ok(());
        }
        self.switch_phase(from, &to)
    }

    fn resolve(
        &mut self,
        p: &UpdateParams,
        from: &VersionRef,
    ) -> Result<Done<(Source, Option<Entry>)>, String> {
        let trusted = trusted_keys(self.ctx)?;
        let spec = p
            .source
            .clone()
            .or_else(|| self.ctx.config.update.source.clone())
            .ok_or_else(|| {
                "no release source: pass --source DIR|URL or set [update] source in molt.toml"
                    .to_owned()
            })?;
        let source = Source::open(&spec, &format!("molt/{}", self.access.client_version))?;
        let (bytes, sig) = source.manifest()?;
        keys::verify_signature(&bytes, &sig, &trusted).map_err(|e| e.to_string())?;
        let key = sig.split_whitespace().nth(1).unwrap_or("?").to_owned();
        let manifest = Manifest::parse(&bytes).map_err(|e| e.to_string())?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let entry = manifest
            .select(
                &molt_release::host_target(),
                p.to.as_deref(),
                &from.version,
                p.allow_downgrade,
                now,
            )
            .map_err(|e| e.to_string())?
            .clone();
        let signer = format!("signed by key {key}");
        if entry.version == from.version {
            return Ok(done(
                (source, None),
                format!(
                    "{} is the newest on offer; already installed ({signer})",
                    entry.version
                ),
            ));
        }
        let detail = format!(
            "{} -> {} from {} ({signer})",
            from.version,
            entry.version,
            source.describe()
        );
        Ok(done((source, Some(entry)), detail))
    }

    fn download(&mut self, source: &Source, entry: &Entry, dst: &Path) -> Result<u64, String> {
        let (id, seq) = (self.job.id.clone(), self.step_seq);
        let mut last = Instant::now();
        let store = &mut self.store;
        source.download(entry, dst, |got, total| {
            if last.elapsed() >= Duration::from_millis(200) || got == total {
                last = Instant::now();
                let _ = store.set_update_step_detail(&id, seq, &format!("progress {got}/{total}"));
            }
        })
    }

    /// The new binary must print exactly `version` and accept the config and state; then it
    /// is installed as `versions/<version>` (immutable). Returns its build id.
    fn preflight(
        &mut self,
        binary: &Path,
        version: &str,
        install: bool,
    ) -> Result<Done<String>, String> {
        let (printed, build) =
            layout::binary_version(binary).map_err(|e| format!("the new binary: {e}"))?;
        if printed != version {
            return Err(format!(
                "the new binary prints version {printed}, the signed manifest says {version}"
            ));
        }
        let out = std::process::Command::new(binary)
            .args(self.ctx.overrides.global_args()?)
            .args(["gateway", "check", "--json"])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run the new binary: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "molt {version} refuses this install (`molt gateway check` exit {}): {}",
                out.status.code().unwrap_or(-1),
                err.trim().trim_start_matches("molt: ")
            ));
        }
        if !install {
            return Ok(done(
                build.clone(),
                format!("molt {version} ({build}) accepts the config and state"),
            ));
        }
        let how = match self
            .layout
            .add_version(binary, version, &build, now_ms())
            .map_err(|e| e.to_string())?
        {
            InstallOutcome::Installed => "installed",
            InstallOutcome::AlreadyInstalled => "already installed",
        };
        Ok(done(
            build.clone(),
            format!(
                "molt {version} ({build}) accepts the config and state; {how} as versions/{version}"
            ),
        ))
    }

    /// snapshot → switch → unit → handover → serving → commit → prune; rolls back on failure.
    fn switch_phase(
        &mut self,
        from: &VersionRef,
        to: &VersionRef,
    ) -> Result<(), (StepError, Option<VersionRef>)> {
        let with_to = |e| (e, Some(to.clone()));
        let snapshot = self.snapshot_path(&self.job.id);
        self.step("snapshot", |u| {
            if let Some(d) = snapshot.parent() {
                private_dir(d)?;
            }
            u.store.snapshot_to(&snapshot).map_err(|e| e.to_string())?;
            let schema = molt_store::schema_version_of(&snapshot).map_err(|e| e.to_string())?;
            Ok(done(
                (),
                format!("schema {schema} -> {}", snapshot.display()),
            ))
        })
        .map_err(with_to)?;
        self.converge_steps("", to, None).map_err(with_to)?;
        // The job is final only once every step is closed, so a report never shows one in
        // flight. A crash from here on rolls forward: the new version was verified serving.
        self.step("commit", |_| {
            Ok(done(
                (),
                format!("{} -> {} committed", from.version, to.version),
            ))
        })
        .map_err(with_to)?;
        let _ = self.step("prune", |u| u.prune(from, to));
        let _ = std::fs::remove_dir_all(self.work_dir(&self.job.id));
        self.set_state(JobState::Ok, None);
        Ok(())
    }

    fn snapshot_path(&self, job: &str) -> PathBuf {
        self.ctx
            .state_dir
            .join("snapshots")
            .join(format!("pre-{job}.db"))
    }

    /// switch, unit, (restore), handover and serving for `target`, each step named
    /// `<prefix><name>`. `restore_from` is the snapshot to restore if the schema moved.
    fn converge_steps(
        &mut self,
        prefix: &str,
        target: &VersionRef,
        restore_from: Option<PathBuf>,
    ) -> StepResult<()> {
        self.step(&format!("{prefix}switch"), |u| {
            if u.layout.current_version().as_deref() == Some(target.version.as_str()) {
                return Ok(skipped(
                    (),
                    format!("current -> versions/{} already", target.version),
                ));
            }
            u.layout
                .switch_to(&target.version)
                .map_err(|e| e.to_string())?;
            Ok(done((), format!("current -> versions/{}", target.version)))
        })?;
        self.step(&format!("{prefix}unit"), |u| {
            let path = install::unit_path(u.ctx).map_err(|e| e.to_string())?;
            if !path.exists() {
                return Ok(skipped((), "no unit installed"));
            }
            let changes = install::write_unit(u.ctx).map_err(|e| e.to_string())?;
            if changes.is_empty() {
                Ok(skipped(
                    (),
                    format!("{} already names {}", u.unit, target.version),
                ))
            } else {
                Ok(done(
                    (),
                    format!("{} relabelled {}; daemon-reload", u.unit, target.version),
                ))
            }
        })?;
        if let Some(snapshot) = restore_from {
            self.step(&format!("{prefix}restore"), |u| {
                u.restore_if_migrated(&snapshot)
            })?;
        }
        self.step(&format!("{prefix}handover"), |u| u.hand_over(target))?;
        self.step(&format!("{prefix}serving"), |u| u.verify_serving(target))?;
        Ok(())
    }

    /// The snapshot goes back only when the schema moved; otherwise runs created since stay.
    fn restore_if_migrated(&mut self, snapshot: &Path) -> Result<Done<()>, String> {
        if !snapshot.exists() {
            return Ok(skipped((), "no snapshot was taken"));
        }
        let then = molt_store::schema_version_of(snapshot).map_err(|e| e.to_string())?;
        let now = self.store.schema_version().map_err(|e| e.to_string())?;
        if then == now {
            return Ok(skipped(
                (),
                format!("schema unchanged ({now}); nothing to restore"),
            ));
        }
        self.store
            .restore_snapshot(snapshot, Duration::from_secs(30))
            .map_err(|e| {
                format!(
                    "the schema moved from {then} to {now} and the snapshot could not be restored ({e}); \
                     stop the gateway and copy {} over {}",
                    snapshot.display(),
                    self.ctx.state_dir.join("molt.db").display()
                )
            })?;
        Ok(done(
            (),
            format!(
                "the schema moved from {then} to {now}: restored {}",
                snapshot.display()
            ),
        ))
    }

    /// Gets the gateway to run `target`: a handover when one runs another version, a start
    /// when the unit is down. Never a stop.
    fn hand_over(&mut self, target: &VersionRef) -> Result<Done<()>, String> {
        let running = self.gateway_status();
        let unit_installed = install::unit_path(self.ctx).is_ok_and(|p| p.exists());
        match running {
            Some(s) if s.0 == target.version && s.1 == target.build_id => Ok(skipped(
                (),
                format!("pid {} already runs {}", s.2, target.version),
            )),
            Some(s) => {
                if let Some(ms) = self.params.restart_delay_ms.filter(|ms| *ms > 0) {
                    std::thread::sleep(Duration::from_millis(ms).min(MAX_RESTART_DELAY));
                }
                let p = RestartParams {
                    reason: Some(format!("molt update {}", self.job.id)),
                };
                let r = request::<RestartRequest>(self.ctx, self.access, &p).map_err(|f| {
                    format!(
                        "{} did not take over: {f}; {} still serves",
                        target.version, s.0
                    )
                })?;
                Ok(done((), r.handover.describe()))
            }
            None if unit_installed => {
                // Down (failed, or never started): one start. reset-failed clears a
                // start-limit so the start is allowed.
                let _ = molt_service::systemctl::run(&["reset-failed", &self.unit]);
                molt_service::systemctl::run(&["start", &self.unit])
                    .map_err(|e| format!("{} did not start: {e}", target.version))?;
                Ok(done(
                    (),
                    format!("the gateway was down; started {}", self.unit),
                ))
            }
            None => Ok(skipped((), "no gateway runs and no unit is installed")),
        }
    }

    /// (version, buildId, pid) of the gateway answering on this profile's port.
    fn gateway_status(&self) -> Option<(String, String, u64)> {
        let s = request::<Status>(self.ctx, self.access, &AnyParams {}).ok()?;
        Some((s.probe.version, s.probe.build_id, u64::from(s.probe.pid)))
    }

    /// `/readyz` and the protocol must report exactly `target`, and the answering pid must be
    /// the unit's main pid, before the deadline.
    fn verify_serving(&mut self, target: &VersionRef) -> Result<Done<()>, String> {
        let unit_installed = install::unit_path(self.ctx).is_ok_and(|p| p.exists());
        let timeout = Duration::from_millis(
            self.params
                .verify_timeout_ms
                .unwrap_or(self.ctx.config.update.verify_timeout_ms),
        );
        let deadline = Instant::now() + timeout;
        let port = self.ctx.config.port(&self.ctx.profile);
        let bind = self.ctx.config.gateway.bind;
        let host = if bind.is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            bind
        };
        let addr = std::net::SocketAddr::new(host, port);
        let mut last;
        let mut first = true;
        loop {
            let ready = molt_host::http_get(addr, "/readyz");
            let status = self.gateway_status();
            match (&ready, &status) {
                (None, None) if !unit_installed && first => {
                    return Ok(skipped((), "no gateway runs; nothing to verify"));
                }
                (Some((200, body)), Some((v, b, pid))) => {
                    let probe = serde_json::from_str::<Probe>(body).ok();
                    let (rv, rb) = probe
                        .as_ref()
                        .map_or(("", ""), |p| (p.version.as_str(), p.build_id.as_str()));
                    let main_pid = if unit_installed {
                        molt_service::systemctl::show(&self.unit, &["MainPID"])
                            .ok()
                            .and_then(|m| m.get("MainPID").and_then(|p| p.parse::<u64>().ok()))
                    } else {
                        None
                    };
                    let exact = rv == target.version
                        && rb == target.build_id
                        && *v == target.version
                        && *b == target.build_id;
                    let pid_ok = main_pid.is_none_or(|m| m == *pid);
                    if exact && pid_ok {
                        return Ok(done(
                            (),
                            format!(
                                "/readyz and status report {} ({}), pid {pid}{}",
                                target.version,
                                target.build_id,
                                if main_pid.is_some() {
                                    " = the unit's main pid"
                                } else {
                                    ""
                                }
                            ),
                        ));
                    }
                    last = if exact {
                        format!("pid {pid} answers but the unit's main pid is {main_pid:?}")
                    } else {
                        format!("/readyz reports {rv} ({rb}), status {v} ({b})")
                    };
                }
                (Some((code, _)), _) => last = format!("/readyz answers {code}"),
                (None, _) => last = format!("nothing answers on {addr}"),
            }
            first = false;
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} is not serving after {} ms: {last}",
                    target.version,
                    timeout.as_millis()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Keeps the 3 newest versions, and always `current`, `from` and the running one.
    fn prune(&mut self, from: &VersionRef, to: &VersionRef) -> Result<Done<()>, String> {
        let mut installed = self.layout.installed();
        installed.sort_by_key(|r| std::cmp::Reverse(r.installed_at_ms));
        let running = self.gateway_status().map(|s| s.0);
        let keep = |v: &str| v == from.version || v == to.version || running.as_deref() == Some(v);
        let mut removed = Vec::new();
        for (i, r) in installed.iter().enumerate() {
            if i < 3 || keep(&r.version) {
                continue;
            }
            let dir = self.layout.versions().join(&r.version);
            std::fs::remove_dir_all(&dir)
                .map_err(|e| format!("cannot remove {}: {e}", dir.display()))?;
            removed.push(r.version.clone());
        }
        // Snapshots: the newest 3 stay.
        let snaps = self.ctx.state_dir.join("snapshots");
        let mut files: Vec<_> = std::fs::read_dir(&snaps)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        files.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
        for (_, p) in files.into_iter().skip(3) {
            let _ = std::fs::remove_file(p);
        }
        if removed.is_empty() {
            Ok(skipped(
                (),
                format!("{} version(s) installed; nothing to prune", installed.len()),
            ))
        } else {
            Ok(done((), format!("removed {}", removed.join(", "))))
        }
    }

    // ---- failure, rollback, recovery ----------------------------------------------------

    fn fail_or_roll_back(
        &mut self,
        e: StepError,
        from: &VersionRef,
        to: Option<&VersionRef>,
        discard: bool,
    ) -> StepResult<()> {
        let reached_preflight = self.job_reached(ROLLS_BACK_FROM);
        let reason = format!("{}: {}", e.step, e.message);
        if !reached_preflight || to.is_none() {
            self.finish(JobState::Failed, Some(&reason));
            return Err(e);
        }
        self.set_state(JobState::RollingBack, Some(&reason));
        let snapshot = self.snapshot_path(&self.job.id);
        match self.converge_steps("rollback-", from, Some(snapshot)) {
            Ok(()) => {
                if let (Some(to), true) = (to, discard) {
                    self.discard_version(to, from);
                }
                self.finish(JobState::RolledBack, Some(&reason));
            }
            Err(r) => {
                let msg = format!(
                    "{reason}; the rollback failed too ({}: {}); run `molt doctor --fix{}`",
                    r.step,
                    r.message,
                    self.ctx.profile_flag()
                );
                self.finish(JobState::Failed, Some(&msg));
            }
        }
        Err(e)
    }

    /// Whether the job journalled a step of this name (in any state).
    fn job_reached(&mut self, step: &str) -> bool {
        self.reload().steps.iter().any(|s| s.name == step)
    }

    /// A version that failed is removed, so a later rollback cannot pick it.
    fn discard_version(&self, bad: &VersionRef, keep: &VersionRef) {
        if bad.version == keep.version
            || self.layout.current_version().as_deref() == Some(bad.version.as_str())
        {
            return;
        }
        let _ = std::fs::remove_dir_all(self.layout.versions().join(&bad.version));
    }

    /// `molt update rollback`: the previous installed version, through the same path.
    fn rollback_to_previous(&mut self) -> StepResult<()> {
        let from = match self.current() {
            Ok(c) => c,
            Err(message) => {
                let e = StepError {
                    step: "resolve".into(),
                    message,
                };
                self.finish(JobState::Failed, Some(&e.message));
                return Err(e);
            }
        };
        self.record_versions(Some(&from), None);
        let result = (|| {
            let (to, binary) = self
                .step("resolve", |u| {
                    let mut installed = u.layout.installed();
                    installed.sort_by_key(|r| std::cmp::Reverse(r.installed_at_ms));
                    let prev = installed
                        .into_iter()
                        .find(|r| r.version != from.version)
                        .ok_or_else(|| {
                            format!("no other version is installed than {}; nothing to roll back to", from.version)
                        })?;
                    let binary = u.layout.versions().join(&prev.version).join("molt");
                    let sha = layout::sha256_file(&binary).map_err(|e| e.to_string())?;
                    if sha != prev.sha256 {
                        return Err(format!(
                            "{} no longer matches its release.json (sha256 {sha}); reinstall it from a release",
                            binary.display()
                        ));
                    }
                    let to = VersionRef {
                        version: prev.version.clone(),
                        build_id: prev.build_id.clone(),
                    };
                    Ok(done((to, binary), format!("{} -> {} (installed, sha256 checked)", from.version, prev.version)))
                })
                .map_err(|e| (e, None))?;
            self.record_versions(None, Some(&to));
            self.step("preflight", |u| {
                let d = u.preflight(&binary, &to.version, false)?;
                if d.value != to.build_id {
                    return Err(format!(
                        "{} reports build {}, release.json says {}",
                        binary.display(),
                        d.value,
                        to.build_id
                    ));
                }
                Ok(d)
            })
            .map_err(|e| (e, Some(to.clone())))?;
            self.switch_phase(&from, &to)
        })();
        match result {
            Ok(()) => Ok(()),
            // A rollback target is a known installed version: it stays on failure.
            Err((e, to)) => self.fail_or_roll_back(e, &from, to.as_ref(), false),
        }
    }

    /// Settles a job whose updater died: roll forward when the new version was verified
    /// serving, otherwise converge on the old one.
    fn recover(&mut self, j: &UpdateJob) -> StepResult<()> {
        if j.state == JobState::Pending {
            let died = j
                .updater_pid
                .is_some_and(|p| !molt_host::process::pid_alive(p));
            if j.is_abandoned(now_ms() as i64, molt_host::process::pid_alive) {
                let why = if died {
                    "its updater died before it took the lock; nothing was changed"
                } else {
                    "its updater never started; abandoned"
                };
                self.step("recover-inspect", |u| {
                    u.store
                        .set_update_state(&j.id, JobState::Failed, Some(why))
                        .map_err(|e| e.to_string())?;
                    Ok(done((), format!("job {}: {why}", j.id)))
                })?;
            }
            return Ok(());
        }
        if j.kind == UpdateKind::Recover {
            // A recovery that died converges nothing itself: the job it was recovering is
            // still unfinished in the journal (it is settled last) and is recovered on its own,
            // before this one. Its recorded versions are a snapshot of a half-switched install.
            let why = format!(
                "the recovery was interrupted {}; the job it recovered is recovered again",
                j.where_stopped()
            );
            return self.step("recover-inspect", |u| {
                u.store
                    .set_update_state(&j.id, JobState::Failed, Some(&why))
                    .map_err(|e| e.to_string())?;
                Ok(done((), format!("job {}: {why}", j.id)))
            });
        }
        let forward = j.state == JobState::Running && j.done("serving");
        let target = if forward {
            j.to.clone()
        } else {
            j.from.clone()
        };
        let current = self.current().ok();
        let target = match (target, current.clone()) {
            (Some((v, b)), _) => VersionRef {
                version: v,
                build_id: b,
            },
            (None, Some(c)) => c,
            (None, None) => {
                return Err(StepError {
                    step: "recover-inspect".into(),
                    message: "no installed version to recover to".into(),
                });
            }
        };
        let switched = j.steps.iter().any(|s| s.name == "switch");
        let stopped = j.where_stopped();
        if self.job.kind == UpdateKind::Recover {
            self.record_versions(current.as_ref(), Some(&target));
        }
        self.step("recover-inspect", |u| {
            Ok(done(
                (),
                format!(
                    "job {} ({}) stopped {stopped}; current -> {}; bringing {} back to {}",
                    j.id,
                    j.state.as_str(),
                    u.layout
                        .current_version()
                        .unwrap_or_else(|| "nothing".into()),
                    if forward { "forward" } else { "it" },
                    target.version
                ),
            ))
        })?;
        // The interrupted job's snapshot is the one to restore; the steps go to this job.
        let snapshot = (!forward).then(|| self.snapshot_path(&j.id));
        self.converge_steps("recover-", &target, snapshot)?;
        let note = format!(
            "the updater was interrupted {stopped}; recovered by {}",
            self.job.id
        );
        let (state, error) = if forward {
            (JobState::Ok, None)
        } else if switched {
            (JobState::RolledBack, Some(note))
        } else {
            (
                JobState::Failed,
                Some(format!("{note}; nothing was switched")),
            )
        };
        if let Err(e) = self.store.set_update_state(&j.id, state, error.as_deref()) {
            tracing::error!(error = %e, "cannot settle the interrupted job");
        }
        if !forward {
            if let Some((v, b)) = &j.to {
                self.discard_version(
                    &VersionRef {
                        version: v.clone(),
                        build_id: b.clone(),
                    },
                    &target,
                );
            }
        }
        let _ = std::fs::remove_dir_all(self.work_dir(&j.id));
        Ok(())
    }

    /// Tells the gateway the job ended, so it broadcasts the result and the continuation.
    fn notify_gateway(&mut self) {
        let params = NotifyParams {
            job_id: self.job.id.clone(),
        };
        match request::<UpdateNotify>(self.ctx, self.access, &params) {
            Ok(_) => {}
            Err(e) => tracing::info!(error = %e, "no gateway took the update result"),
        }
    }
}

/// Creates `dir` (and its parents) 0700: everything under the state dir is private.
fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// The configured release keys; none is an error that says how to add one.
pub fn trusted_keys(ctx: &Context) -> Result<Vec<PublicKey>, String> {
    if ctx.config.update.trusted_keys.is_empty() {
        return Err(molt_release::ReleaseError::NoTrustedKey.to_string());
    }
    ctx.config
        .update
        .trusted_keys
        .iter()
        .map(|k| PublicKey::parse(k).map_err(|e| format!("[update] trusted_keys: {e}")))
        .collect()
}
