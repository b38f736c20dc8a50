//! `molt gateway check`: would this build start on this config and state? The update
//! preflight runs it with the new binary before anything is switched.

use molt_config::Context;

/// What the build accepts.
#[derive(Debug, Clone, Copy)]
pub struct Accepted {
    /// The schema version of the existing database; `None` when there is none yet.
    pub found: Option<i64>,
    /// The newest schema version this build knows.
    pub known: i64,
    /// The port the gateway would listen on.
    pub port: u16,
}

/// Why this build cannot run on the config and state.
#[derive(Debug)]
pub enum Refused {
    /// The config is invalid, or the database is newer than this build (a config error at
    /// the CLI: no restart fixes it).
    Config(String),
    /// The database could not be read.
    Failed(String),
}

/// Checks that the config validates and that the database's schema is one this build knows.
/// Changes nothing.
pub fn check(ctx: &Context) -> Result<Accepted, Refused> {
    ctx.config
        .validate()
        .map_err(|e| Refused::Config(e.to_string()))?;
    let db = ctx.state_dir.join("molt.db");
    let found = if db.exists() {
        Some(
            molt_store::schema_version_of(&db)
                .map_err(|e| Refused::Failed(format!("cannot read {}: {e}", db.display())))?,
        )
    } else {
        None
    };
    let known = molt_store::SCHEMA_VERSION;
    if let Some(found) = found.filter(|f| *f > known) {
        return Err(Refused::Config(format!(
            "{} has schema version {found}, newer than this molt knows ({known}); \
             this version cannot run on this state",
            db.display()
        )));
    }
    Ok(Accepted {
        found,
        known,
        port: ctx.config.port(&ctx.profile),
    })
}
