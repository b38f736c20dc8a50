//! One profile's install: its layout, installing a binary as a version, and the unit that
//! runs what `current` points to (rendered, compared, written, reloaded).

use std::path::{Path, PathBuf};

use molt_config::Context;

use crate::layout::{self, InstallOutcome, Layout};
use crate::{ServiceError, systemctl, unit};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn home() -> Result<PathBuf, ServiceError> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or_else(|| ServiceError::Setup("HOME is not set".into()))
}

/// The profile's layout; `prefix` P puts it under `P/share` and `P/bin` instead of
/// `~/.local/share` and `~/.local/bin`.
pub fn layout(ctx: &Context, prefix: Option<&Path>) -> Result<Layout, ServiceError> {
    Ok(match prefix {
        Some(p) => Layout {
            share: p
                .join("share")
                .join(format!("molt{}", ctx.profile.suffix())),
            bin_dir: p.join("bin"),
        },
        None => Layout {
            share: ctx.share_dir.clone(),
            bin_dir: home()?.join(".local/bin"),
        },
    })
}

/// Copies `exe` (which prints `version`, `build_id`) into `versions/<version>` and switches
/// `current` to it; returns the layout and whether the version was new.
pub fn install(
    ctx: &Context,
    prefix: Option<&Path>,
    exe: &Path,
    version: &str,
    build_id: &str,
) -> Result<(Layout, InstallOutcome), ServiceError> {
    let layout = layout(ctx, prefix)?;
    let outcome = layout.install(exe, version, build_id, now_ms())?;
    Ok((layout, outcome))
}

/// Environment the service needs to resolve the same paths as the installer.
fn service_env(ctx: &Context) -> Result<Vec<(String, String)>, ServiceError> {
    let mut env = vec![("HOME".to_owned(), home()?.display().to_string())];
    for k in ["XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME"] {
        if let Some(v) = std::env::var_os(k).filter(|v| !v.is_empty()) {
            env.push((k.to_owned(), v.to_string_lossy().into_owned()));
        }
    }
    if let Some(c) = &ctx.overrides.config {
        env.push(("MOLT_CONFIG".into(), absolute(c)?.display().to_string()));
    }
    if let Some(s) = &ctx.overrides.state_dir {
        env.push(("MOLT_STATE_DIR".into(), absolute(s)?.display().to_string()));
    }
    Ok(env)
}

fn absolute(p: &Path) -> Result<PathBuf, ServiceError> {
    std::path::absolute(p).map_err(|source| ServiceError::Io {
        what: p.display().to_string(),
        source,
    })
}

/// The unit text for what `current` points to now.
pub fn desired_unit(ctx: &Context) -> Result<String, ServiceError> {
    let layout = layout(ctx, None)?;
    let exec = layout.current_binary();
    if !exec.exists() {
        return Err(ServiceError::NotInstalled(format!(
            "{} does not exist: run `molt install{}` first",
            exec.display(),
            ctx.profile_flag()
        )));
    }
    // The label is read from the binary itself, never from this CLI's own version.
    let (version, build) = layout::binary_version(&exec)?;
    // release.json records the sha256 taken when the version was installed; versions are
    // immutable, so hashing the binary again would only cost time.
    let sha = match layout.current_release() {
        Some(r) if r.version == version && r.build_id == build => r.sha256,
        _ => layout::sha256_file(&exec)?,
    };
    let env = service_env(ctx)?;
    Ok(unit::render(&unit::UnitSpec {
        profile: ctx.profile.name(),
        exec: &exec,
        version: &version,
        build_id: &build,
        sha256: &sha,
        stop_budget_ms: ctx.config.gateway.stop_budget_ms,
        env: &env,
    }))
}

/// Where the profile's unit file is (or would be).
pub fn unit_path(ctx: &Context) -> Result<PathBuf, ServiceError> {
    Ok(systemctl::unit_dir()?.join(ctx.profile.unit_name()))
}

/// Writes the unit if it differs; returns the changed lines (empty: it was current).
pub fn write_unit(ctx: &Context) -> Result<Vec<String>, ServiceError> {
    let path = unit_path(ctx)?;
    let text = desired_unit(ctx)?;
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    if old == text {
        return Ok(Vec::new());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ServiceError::Io {
            what: format!("cannot create {}", dir.display()),
            source,
        })?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &text)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|source| ServiceError::Io {
            what: format!("cannot write {}", path.display()),
            source,
        })?;
    systemctl::run(&["daemon-reload"])?;
    Ok(if old.is_empty() {
        vec![format!("+ new unit {}", path.display())]
    } else {
        unit::diff(&old, &text)
    })
}
