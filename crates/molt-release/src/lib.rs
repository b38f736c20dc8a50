//! Signed molt releases: Ed25519 release keys, a signed manifest, and `tar.zst` artifacts.
//!
//! A release directory (or HTTPS base URL) holds:
//! - `manifest.json`: the versions on offer, each with `sha256`, `size`, `expires` (unix
//!   seconds), `min_version` and its artifact path;
//! - `manifest.sig`: `molt-sig-v1 <key id> <base64url signature over manifest.json's bytes>`;
//! - the artifacts, `molt-<version>-<target>.tar.zst`, each holding one file: `molt`.
//!
//! Everything an updater must refuse is refused here, before anything is switched: an unknown
//! key, a bad signature, an expired entry, a version too old to update from, a downgrade not
//! asked for, an artifact whose size or hash differs from the manifest, and an archive that
//! holds anything but one regular file.

pub mod artifact;
pub mod keys;
pub mod manifest;
pub mod publish;

/// Why a release was refused or could not be made. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(
        "no trusted release key is configured: add the release's public key line to `[update] trusted_keys` in molt.toml (the line from its PREFIX.pub)"
    )]
    NoTrustedKey,
    #[error("invalid key: {0}")]
    BadKey(String),
    #[error("the manifest is signed by key {0}, which is not in [update] trusted_keys")]
    UnknownKey(String),
    #[error(
        "the manifest signature does not verify: the manifest was altered or signed with another key"
    )]
    BadSignature,
    #[error("invalid manifest: {0}")]
    BadManifest(String),
    #[error(
        "version {version} expired at {expires} (unix time); ask the publisher for a fresh manifest"
    )]
    Expired { version: String, expires: u64 },
    #[error(
        "version {version} is older than the installed {installed}; pass --allow-downgrade to go back on purpose"
    )]
    Downgrade { version: String, installed: String },
    #[error(
        "version {version} needs at least {min} installed first (installed: {installed}); update to {min} first"
    )]
    TooOld {
        version: String,
        min: String,
        installed: String,
    },
    #[error("no release for {target}{}", .version.as_ref().map(|v| format!(" at version {v}")).unwrap_or_default())]
    NotFound {
        target: String,
        version: Option<String>,
    },
    #[error(
        "the artifact does not match the manifest: {0}; the download is corrupt or tampered with"
    )]
    ArtifactMismatch(String),
    #[error(
        "the artifact is larger than the manifest declares ({declared} bytes); refusing the rest"
    )]
    TooLarge { declared: u64 },
    #[error("invalid archive: {0}")]
    BadArchive(String),
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ReleaseError {
    let what = what.into();
    move |source| ReleaseError::Io { what, source }
}

/// The target triple the artifact names use, e.g. `x86_64-linux`.
pub fn host_target() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}
