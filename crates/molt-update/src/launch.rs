//! Starting an update and waiting for it.
//!
//! The CLI records a job, starts the updater (`molt update apply --job ID`) outside the
//! gateway, as a transient unit or a detached process, and then either follows it to the end
//! (from a shell) or returns the job id at once (from inside the gateway's process tree or
//! cgroup, where waiting would tie the caller to the process being replaced).

use std::time::{Duration, Instant};

use molt_client::profile::Access;
use molt_config::Context;
use molt_service::transient::Launched;
use molt_store::{JobState, NewUpdateJob, Store, UpdateJob, UpdateKind};

use crate::error::UpdateError;
use crate::txn::{self, UpdateParams};

/// Where a started job runs, and so what the caller does next.
pub enum Started {
    /// A dry run ran in this process (it switches nothing and touches no gateway); its job
    /// is final.
    Here { store: Store, job: String },
    /// The updater runs outside, and this process runs inside the gateway (`why`): it must
    /// not wait for the gateway it would replace.
    Inside {
        job: String,
        launched: Launched,
        why: String,
    },
    /// The updater runs outside; follow it with [`wait`].
    Outside {
        store: Store,
        job: String,
        launched: Launched,
    },
}

/// Records a job of `kind` and starts its updater: here for a dry run (`in_process`), else
/// outside this process tree.
pub fn start(
    ctx: &Context,
    access: &Access,
    kind: UpdateKind,
    params: &UpdateParams,
    in_process: bool,
) -> Result<Started, UpdateError> {
    let mut store = txn::open_store(ctx)?;
    let job = store
        .create_update_job(&NewUpdateJob {
            kind,
            requester: "cli".into(),
            params: serde_json::to_string(params).unwrap_or_else(|_| "{}".into()),
            continuation: None,
            origin: None,
        })
        .map_err(|e| UpdateError::Failed(format!("cannot record the update job: {e}")))?;
    if in_process {
        // Its outcome is in the journal, which the caller reports.
        let _ = txn::apply(ctx, access, &job.id);
        return Ok(Started::Here { store, job: job.id });
    }
    let launched = launch_updater(ctx, &mut store, &job.id)?;
    Ok(match inside_gateway(ctx) {
        Some(why) => Started::Inside {
            job: job.id,
            launched,
            why,
        },
        None => Started::Outside {
            store,
            job: job.id,
            launched,
        },
    })
}

/// Starts `molt update apply --job ID` outside this process tree, and journals how.
pub fn launch_updater(
    ctx: &Context,
    store: &mut Store,
    job: &str,
) -> Result<Launched, UpdateError> {
    let args = ctx.overrides.global_args().map_err(UpdateError::Failed)?;
    let launched =
        molt_service::transient::launch_updater(&args, job, &ctx.state_dir).map_err(|e| {
            let msg = format!("cannot start the updater: {e}");
            let _ = store.set_update_state(job, JobState::Failed, Some(&msg));
            UpdateError::Failed(msg)
        })?;
    let _ = store.set_update_launcher(job, &launched.describe());
    Ok(launched)
}

/// Why this process counts as inside a gateway of this profile: an exec run's environment,
/// a `molt gateway run` ancestor, or the unit's cgroup.
pub fn inside_gateway(ctx: &Context) -> Option<String> {
    if let Ok(run) = std::env::var("MOLT_RUN_ID") {
        return Some(format!("inside the gateway's exec run {run}"));
    }
    let mut pid = std::os::unix::process::parent_id();
    for _ in 0..64 {
        if pid <= 1 {
            break;
        }
        if molt_host::Process::read(pid).is_some_and(|p| p.is_molt_gateway()) {
            return Some(format!("under the gateway process {pid}"));
        }
        pid = match parent_of(pid) {
            Some(p) => p,
            None => break,
        };
    }
    let unit = ctx.profile.unit_name();
    molt_host::Process::read(std::process::id())
        .and_then(|me| me.unit)
        .filter(|u| *u == unit)
        .map(|_| format!("in the cgroup of {unit}"))
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parens; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Whether the updater of `job` can still be running.
fn updater_alive(job: &UpdateJob, launched: Option<&Launched>) -> bool {
    if let Some(pid) = job.updater_pid.filter(|p| *p > 0) {
        return molt_host::process::pid_alive(pid);
    }
    match launched {
        Some(Launched::Unit(u)) => molt_service::systemctl::show(u, &["ActiveState"])
            .ok()
            .and_then(|m| m.get("ActiveState").cloned())
            .is_some_and(|s| matches!(s.as_str(), "active" | "activating")),
        Some(Launched::Detached { pid, .. }) => molt_host::process::pid_alive(*pid),
        None => true,
    }
}

/// How waiting for a job ended.
pub enum Ended {
    /// The job reached a final state.
    Final(UpdateJob),
    /// Its updater is gone and the job is not final: it was interrupted.
    Interrupted(UpdateJob),
}

/// Waits for the job to end, calling `on_poll` with the job each time it is read (every
/// 100 ms, and once more when it is final).
pub fn wait(
    store: &Store,
    id: &str,
    launched: Option<&Launched>,
    mut on_poll: impl FnMut(&UpdateJob),
) -> Result<Ended, UpdateError> {
    let mut dead_since: Option<Instant> = None;
    loop {
        let job = job(store, id)?;
        on_poll(&job);
        if job.state.is_final() {
            return Ok(Ended::Final(job));
        }
        if updater_alive(&job, launched) {
            dead_since = None;
        } else {
            // Give the journal a moment to catch up with an updater that just ended.
            let since = *dead_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(2) {
                return Ok(Ended::Interrupted(job));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The job `id` as journalled now.
pub fn job(store: &Store, id: &str) -> Result<UpdateJob, UpdateError> {
    store
        .update_job(id)
        .map_err(|e| UpdateError::Failed(e.to_string()))?
        .ok_or_else(|| UpdateError::Failed(format!("update job {id} vanished")))
}

/// The newest update job of the profile with its store; `None` when no update has run.
pub fn latest(ctx: &Context) -> Result<Option<(Store, UpdateJob)>, UpdateError> {
    let db = ctx.state_dir.join("molt.db");
    if !db.exists() {
        return Ok(None);
    }
    let store = txn::open_store(ctx)?;
    let job = store
        .latest_update_job()
        .map_err(|e| UpdateError::Failed(e.to_string()))?;
    Ok(job.map(|j| (store, j)))
}
