//! Making a release directory: pack a binary into it and list it in `manifest.json`, then
//! sign the manifest. The same code that checks releases makes them, so tests and
//! maintainers exercise the real format.

use std::path::Path;

use crate::keys::{self, PublicKey, SecretKey};
use crate::manifest::{Entry, Manifest};
use crate::{ReleaseError, artifact};

/// What to pack: the binary, its version and target, and how long the entry is valid.
#[derive(Debug, Clone)]
pub struct Packing<'a> {
    pub binary: &'a Path,
    pub version: &'a str,
    pub target: &'a str,
    /// Unix seconds after which updaters refuse the entry.
    pub expires: u64,
    pub min_version: &'a str,
}

/// Packs `p.binary` into `dir` and adds (or replaces) its entry in `dir/manifest.json`. The old
/// signature no longer covers the manifest, so it is removed: sign again with [`sign_dir`].
pub fn add_to_dir(dir: &Path, p: &Packing<'_>) -> Result<Entry, ReleaseError> {
    let entry = artifact::build(p.binary, p.version, p.target, dir, p.expires, p.min_version)?;
    let path = dir.join("manifest.json");
    let mut manifest = match std::fs::read(&path) {
        Ok(bytes) => Manifest::parse(&bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest::default(),
        Err(source) => {
            return Err(ReleaseError::Io {
                what: format!("cannot read {}", path.display()),
                source,
            });
        }
    };
    manifest.upsert(entry.clone());
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| ReleaseError::BadManifest(e.to_string()))?;
    std::fs::write(&path, json).map_err(|source| ReleaseError::Io {
        what: format!("cannot write {}", path.display()),
        source,
    })?;
    match std::fs::remove_file(dir.join("manifest.sig")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ReleaseError::Io {
            what: "cannot remove the old manifest.sig".into(),
            source: e,
        }),
        _ => Ok(entry),
    }
}

/// Signs `dir/manifest.json` with the key at `key`, writing `dir/manifest.sig`. Returns the
/// signing key's public half.
pub fn sign_dir(key: &Path, dir: &Path) -> Result<PublicKey, ReleaseError> {
    let key = SecretKey::load(key)?;
    let path = dir.join("manifest.json");
    let bytes = std::fs::read(&path).map_err(|source| ReleaseError::Io {
        what: format!("cannot read {}", path.display()),
        source,
    })?;
    Manifest::parse(&bytes)?;
    std::fs::write(dir.join("manifest.sig"), keys::signature_line(&key, &bytes)).map_err(
        |source| ReleaseError::Io {
            what: "cannot write the signature".into(),
            source,
        },
    )?;
    Ok(key.public())
}
