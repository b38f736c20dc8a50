//! One profile resolved for a command: its paths and its config, from the `--profile`,
//! `--config` and `--state-dir` values given (or their `MOLT_*` variables), else the XDG
//! defaults.

use std::path::PathBuf;

use crate::{Config, ConfigError, Paths, Profile};

/// `--profile`, `--config` and `--state-dir` exactly as given, before defaults fill them in.
/// The molt processes an update starts and the service unit get the same ones, so they act
/// on the same install.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--profile` (or `MOLT_PROFILE`).
    pub profile: Option<String>,
    /// `--config` (or `MOLT_CONFIG`).
    pub config: Option<PathBuf>,
    /// `--state-dir` (or `MOLT_STATE_DIR`).
    pub state_dir: Option<PathBuf>,
}

impl Overrides {
    /// The overrides as arguments for another molt process (paths made absolute, so that
    /// process may run from any directory).
    pub fn global_args(&self) -> Result<Vec<String>, String> {
        let mut args = Vec::new();
        if let Some(p) = &self.profile {
            args.extend(["--profile".to_owned(), p.clone()]);
        }
        for (flag, path) in [("--config", &self.config), ("--state-dir", &self.state_dir)] {
            if let Some(p) = path {
                let abs = std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()))?;
                args.extend([flag.to_owned(), abs.display().to_string()]);
            }
        }
        Ok(args)
    }
}

/// The profile, its paths and its config, resolved once for every command.
#[derive(Debug, Clone)]
pub struct Context {
    pub profile: Profile,
    /// The config file read (it need not exist: every key has a default).
    pub config_path: PathBuf,
    /// `molt.db`, the token file, the identity, the logs.
    pub state_dir: PathBuf,
    /// `versions/` and `current`.
    pub share_dir: PathBuf,
    /// The effective config: defaults, the file, `MOLT_*` variables.
    pub config: Config,
    /// What the paths were resolved from.
    pub overrides: Overrides,
}

impl Context {
    /// Resolves the profile and loads its config; a config that does not load is an error
    /// that says how to go on.
    pub fn resolve(
        profile: Option<&str>,
        config: Option<PathBuf>,
        state_dir: Option<PathBuf>,
    ) -> Result<Context, String> {
        match Self::resolve_lenient(profile, config, state_dir).map_err(|e| e.to_string())? {
            (ctx, None) => Ok(ctx),
            (_, Some(e)) => Err(format!(
                "{e}\nfix the config, then retry; `molt config show` prints what is in effect"
            )),
        }
    }

    /// As [`Context::resolve`], but a config that does not load gives the defaults plus the
    /// error, for the commands that report on a broken install rather than refuse it (doctor,
    /// security audit).
    pub fn resolve_lenient(
        profile: Option<&str>,
        config: Option<PathBuf>,
        state_dir: Option<PathBuf>,
    ) -> Result<(Context, Option<String>), ConfigError> {
        let overrides = Overrides {
            profile: profile.map(str::to_owned),
            config,
            state_dir,
        };
        let profile = Profile::new(profile)?;
        let paths = Paths::for_profile(&profile)?;
        let config_path = overrides.config.clone().unwrap_or(paths.config_file);
        let (config, error) = match Config::load(&config_path) {
            Ok(c) => (c, None),
            Err(e) => (Config::default(), Some(e.to_string())),
        };
        Ok((
            Context {
                profile,
                config_path,
                state_dir: overrides.state_dir.clone().unwrap_or(paths.state_dir),
                share_dir: paths.share_dir,
                config,
                overrides,
            },
            error,
        ))
    }

    /// ` --profile P` for a named profile, empty for the default: what a suggested command
    /// needs to act on this profile.
    pub fn profile_flag(&self) -> String {
        self.profile
            .name()
            .map(|p| format!(" --profile {p}"))
            .unwrap_or_default()
    }
}
