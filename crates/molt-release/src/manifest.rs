//! `manifest.json`: the versions a release directory offers, and choosing one.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::keys::{self, PublicKey};
use crate::{ReleaseError, io};

/// One version on offer for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub version: String,
    pub target: String,
    /// Path of the artifact relative to the manifest.
    pub artifact: String,
    pub sha256: String,
    pub size: u64,
    /// Unix seconds after which this entry must not be installed.
    pub expires: u64,
    /// The oldest installed version this one may be installed over.
    pub min_version: String,
}

/// The manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub versions: Vec<Entry>,
}

fn semver(v: &str) -> Result<semver::Version, ReleaseError> {
    semver::Version::parse(v).map_err(|e| ReleaseError::BadManifest(format!("version {v:?}: {e}")))
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Self, ReleaseError> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ReleaseError::BadManifest(e.to_string()))?;
        if m.format != 1 {
            return Err(ReleaseError::BadManifest(format!(
                "format {} is not 1; update molt",
                m.format
            )));
        }
        for e in &m.versions {
            semver(&e.version)?;
            semver(&e.min_version)?;
            if e.artifact.contains("..") || e.artifact.starts_with('/') {
                return Err(ReleaseError::BadManifest(format!(
                    "artifact path {:?} leaves the release",
                    e.artifact
                )));
            }
        }
        Ok(m)
    }

    /// Reads `dir/manifest.json` and checks `dir/manifest.sig` against `trusted`.
    pub fn load_verified(
        dir: &Path,
        trusted: &[PublicKey],
    ) -> Result<(Self, Vec<u8>), ReleaseError> {
        let bytes = std::fs::read(dir.join("manifest.json"))
            .map_err(io(format!("reading {}/manifest.json", dir.display())))?;
        let sig = std::fs::read_to_string(dir.join("manifest.sig")).map_err(io(format!(
            "reading {}/manifest.sig (is the release signed?)",
            dir.display()
        )))?;
        keys::verify_signature(&bytes, &sig, trusted)?;
        Ok((Self::parse(&bytes)?, bytes))
    }

    /// Adds `entry`, replacing one of the same version and target.
    pub fn upsert(&mut self, entry: Entry) {
        self.format = 1;
        self.versions
            .retain(|e| !(e.version == entry.version && e.target == entry.target));
        self.versions.push(entry);
    }

    /// Chooses what to install: `to`, or the newest version for `target`. Refuses an expired
    /// entry, a downgrade unless allowed, and a version whose `min_version` is above the
    /// installed one.
    pub fn select(
        &self,
        target: &str,
        to: Option<&str>,
        installed: &str,
        allow_downgrade: bool,
        now_secs: u64,
    ) -> Result<&Entry, ReleaseError> {
        let candidates = self.versions.iter().filter(|e| e.target == target);
        let entry = match to {
            Some(v) => candidates.into_iter().find(|e| e.version == v),
            None => candidates.max_by(|a, b| semver(&a.version).ok().cmp(&semver(&b.version).ok())),
        }
        .ok_or_else(|| ReleaseError::NotFound {
            target: target.to_owned(),
            version: to.map(str::to_owned),
        })?;
        if now_secs >= entry.expires {
            return Err(ReleaseError::Expired {
                version: entry.version.clone(),
                expires: entry.expires,
            });
        }
        let (want, have) = (semver(&entry.version)?, semver(installed)?);
        if want < have && !allow_downgrade {
            return Err(ReleaseError::Downgrade {
                version: entry.version.clone(),
                installed: installed.to_owned(),
            });
        }
        if have < semver(&entry.min_version)? {
            return Err(ReleaseError::TooOld {
                version: entry.version.clone(),
                min: entry.min_version.clone(),
                installed: installed.to_owned(),
            });
        }
        Ok(entry)
    }
}
