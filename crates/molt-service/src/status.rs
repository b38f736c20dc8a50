//! `molt service status`: the unit's state and the unit, `current` and running versions side
//! by side, with each disagreement as a problem and its fix.

use molt_config::Context;
use molt_protocol::methods::system::StatusResult;
use serde::Serialize;

use crate::{ServiceError, install, layout, systemctl, unit};

/// One problem in `molt service status`, with the fix.
#[derive(Debug, Serialize)]
pub struct Problem {
    pub what: String,
    pub fix: String,
}

/// `molt service status`, side by side.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub unit: String,
    pub unit_file: String,
    pub installed: bool,
    pub active_state: Option<String>,
    pub sub_state: Option<String>,
    pub result: Option<String>,
    pub main_pid: Option<u32>,
    pub n_restarts: Option<u32>,
    pub unit_label: Option<String>,
    pub unit_build: Option<String>,
    pub current_version: Option<String>,
    pub current_build: Option<String>,
    pub running_version: Option<String>,
    pub running_build: Option<String>,
    pub running_pid: Option<u32>,
    pub coherent: bool,
    pub problems: Vec<Problem>,
}

/// The profile's service status; `running` is the gateway's answer to `status`, if one
/// answered.
pub fn status(ctx: &Context, running: Option<&StatusResult>) -> Result<StatusReport, ServiceError> {
    let unit = ctx.profile.unit_name();
    let path = install::unit_path(ctx)?;
    let text = std::fs::read_to_string(&path).ok();
    let labels = text.as_deref().map(unit::parse_labels).unwrap_or_default();
    let props = systemctl::show(
        &unit,
        &[
            "ActiveState",
            "SubState",
            "Result",
            "MainPID",
            "NRestarts",
            "LoadState",
        ],
    )
    .ok();
    let prop = |k: &str| {
        props
            .as_ref()
            .and_then(|m| m.get(k))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let current = layout::binary_version(&install::layout(ctx, None)?.current_binary()).ok();
    let mut r = StatusReport {
        unit: unit.clone(),
        unit_file: path.display().to_string(),
        installed: text.is_some(),
        active_state: prop("ActiveState"),
        sub_state: prop("SubState"),
        result: prop("Result"),
        main_pid: prop("MainPID")
            .and_then(|v| v.parse().ok())
            .filter(|p| *p != 0),
        n_restarts: prop("NRestarts").and_then(|v| v.parse().ok()),
        unit_label: labels.label().map(str::to_owned).or(labels.version.clone()),
        unit_build: labels.build_id.clone(),
        current_version: current.as_ref().map(|c| c.0.clone()),
        current_build: current.as_ref().map(|c| c.1.clone()),
        running_version: running.map(|r| r.probe.version.clone()),
        running_build: running.map(|r| r.probe.build_id.clone()),
        running_pid: running.map(|r| r.probe.pid),
        coherent: false,
        problems: Vec::new(),
    };
    let pf = ctx.profile_flag();
    let mut problem = |what: String, fix: String| r.problems.push(Problem { what, fix });
    if text.is_none() {
        problem(
            format!("{unit} is not installed"),
            format!("molt service install{pf}"),
        );
    }
    if labels.label().is_none() && text.is_some() {
        problem(
            format!(
                "the unit's labels disagree: Description names {:?}, X-Molt-Version {:?}",
                labels.description_version, labels.version
            ),
            format!("molt service install{pf}"),
        );
    }
    if let (Some(l), Some(c)) = (&labels.version, &current) {
        if *l != c.0 || labels.build_id.as_deref() != Some(c.1.as_str()) {
            problem(
                format!("the unit says {l} but current is {} ({})", c.0, c.1),
                format!("molt service install{pf}, then molt service restart{pf}"),
            );
        }
    }
    if current.is_none() {
        problem(
            "no installed version (current is missing)".into(),
            format!("molt install{pf}"),
        );
    }
    match prop("ActiveState").as_deref() {
        Some("active") => {}
        Some("failed") => problem(
            format!(
                "{unit} failed (result {})",
                prop("Result").unwrap_or_default()
            ),
            format!("systemctl --user reset-failed {unit} && molt service start{pf}"),
        ),
        other => problem(
            format!("{unit} is {}", other.unwrap_or("unknown")),
            format!("molt service start{pf}"),
        ),
    }
    if let (Some(run), Some(c)) = (running, &current) {
        let (rv, rb) = (&run.probe.version, &run.probe.build_id);
        if *rv != c.0 || *rb != c.1 {
            problem(
                format!(
                    "the gateway runs {rv} ({rb}) but current is {} ({})",
                    c.0, c.1
                ),
                format!("molt service restart{pf}"),
            );
        }
    }
    if let (Some(pid), Some(main)) = (r.running_pid, r.main_pid) {
        if pid != main {
            problem(
                format!("the gateway answering (pid {pid}) is not the unit's main pid {main}"),
                "find the stray gateway with `ss -ltnp` and stop it".into(),
            );
        }
    }
    r.coherent = r.problems.is_empty();
    Ok(r)
}
