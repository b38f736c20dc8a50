//! The version and build id fixed by `build.rs`, handed to the libraries as plain values.

/// This build's version (`MOLT_BUILD_VERSION`, else the package's).
pub const VERSION: &str = env!("MOLT_VERSION");
/// This build's id: what tells two builds of one version apart.
pub const BUILD_ID: &str = env!("MOLT_BUILD_ID");
/// A test fault baked in with `MOLT_BUILD_FAULT` (see build.rs); empty in real builds.
pub const FAULT: &str = env!("MOLT_FAULT");
/// What `molt --version` prints after "molt ": `<version> (<buildId>)`.
pub const LONG_VERSION: &str = concat!(env!("MOLT_VERSION"), " (", env!("MOLT_BUILD_ID"), ")");
