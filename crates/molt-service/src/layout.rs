//! The install layout (design §3):
//!
//! ```text
//! <share>/versions/<version>/molt           immutable binary
//! <share>/versions/<version>/release.json   {version, buildId, sha256, installedAtMs}
//! <share>/current -> versions/<version>     switched atomically (temp symlink + rename)
//! <bin>/molt -> <share>/current/molt
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ServiceError;

/// `release.json`: what a version directory holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Release {
    pub version: String,
    pub build_id: String,
    pub sha256: String,
    pub installed_at_ms: u64,
}

/// Where one profile's versions live.
#[derive(Debug, Clone)]
pub struct Layout {
    pub share: PathBuf,
    /// The directory that gets the `molt` link (`~/.local/bin`).
    pub bin_dir: PathBuf,
}

/// What `install` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallOutcome {
    Installed,
    AlreadyInstalled,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServiceError {
    let what = what.into();
    move |source| ServiceError::Io { what, source }
}

/// sha256 of a file, hex (the same digest a release manifest states).
pub fn sha256_file(path: &Path) -> Result<String, ServiceError> {
    molt_release::artifact::hash_file(path)
        .map(|(sha, _)| sha)
        .map_err(|e| ServiceError::Conflict(e.to_string()))
}

/// Points `link` at `target` atomically: a temp symlink renamed over the old one, so a reader
/// sees either the old or the new target, never none.
pub fn switch_symlink(target: &Path, link: &Path) -> Result<(), ServiceError> {
    let tmp = link.with_file_name(format!(
        ".{}.tmp{}",
        link.file_name().and_then(|n| n.to_str()).unwrap_or("link"),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(io(format!("creating {}", tmp.display())))?;
    std::fs::rename(&tmp, link).map_err(io(format!("switching {}", link.display())))
}

impl Layout {
    pub fn versions(&self) -> PathBuf {
        self.share.join("versions")
    }

    pub fn current(&self) -> PathBuf {
        self.share.join("current")
    }

    /// The binary `current` points to.
    pub fn current_binary(&self) -> PathBuf {
        self.current().join("molt")
    }

    /// The version directory `current` points to, if any.
    pub fn current_release(&self) -> Option<Release> {
        read_release(&self.current())
    }

    /// Installs `binary` as `version` and points `current` and the bin link at it. Running it
    /// again with the same binary changes nothing. A different binary under an installed
    /// version is refused: versions are immutable.
    pub fn install(
        &self,
        binary: &Path,
        version: &str,
        build_id: &str,
        now_ms: u64,
    ) -> Result<InstallOutcome, ServiceError> {
        let outcome = self.add_version(binary, version, build_id, now_ms)?;
        self.switch_to(version)?;
        std::fs::create_dir_all(&self.bin_dir)
            .map_err(io(format!("creating {}", self.bin_dir.display())))?;
        switch_symlink(&self.current_binary(), &self.bin_dir.join("molt"))?;
        Ok(outcome)
    }

    /// Copies `binary` into `versions/<version>` without switching anything. The same binary
    /// again is a no-op; another binary under an installed version is refused.
    pub fn add_version(
        &self,
        binary: &Path,
        version: &str,
        build_id: &str,
        now_ms: u64,
    ) -> Result<InstallOutcome, ServiceError> {
        let sha = sha256_file(binary)?;
        let dir = self.versions().join(version);
        match read_release(&dir) {
            Some(r) if r.sha256 == sha => Ok(InstallOutcome::AlreadyInstalled),
            Some(r) => Err(ServiceError::Conflict(format!(
                "version {version} is already installed from another build ({}, sha256 {}); \
                 versions are immutable: build with another MOLT_BUILD_VERSION",
                r.build_id,
                &r.sha256[..12.min(r.sha256.len())]
            ))),
            None => {
                self.copy_in(
                    binary,
                    &dir,
                    &Release {
                        version: version.to_owned(),
                        build_id: build_id.to_owned(),
                        sha256: sha,
                        installed_at_ms: now_ms,
                    },
                )?;
                Ok(InstallOutcome::Installed)
            }
        }
    }

    /// Points `current` at `versions/<version>` atomically.
    pub fn switch_to(&self, version: &str) -> Result<(), ServiceError> {
        switch_symlink(&PathBuf::from("versions").join(version), &self.current())
    }

    /// The version `current` points to, read from the link itself (not the binary).
    pub fn current_version(&self) -> Option<String> {
        let target = std::fs::read_link(self.current()).ok()?;
        target
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
    }

    /// Copies into a staging dir, fsyncs, then renames it into place, so a version dir is
    /// either complete or absent.
    fn copy_in(&self, binary: &Path, dir: &Path, release: &Release) -> Result<(), ServiceError> {
        use std::os::unix::fs::PermissionsExt;
        let staging = self.versions().join(format!(
            ".staging-{}-{}",
            release.version,
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(io(format!("creating {}", staging.display())))?;
        let dst = staging.join("molt");
        std::fs::copy(binary, &dst).map_err(io(format!("copying {}", binary.display())))?;
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755))
            .map_err(io("setting the binary's mode"))?;
        let json = serde_json::to_string_pretty(release)
            .map_err(|e| ServiceError::Conflict(e.to_string()))?;
        std::fs::write(staging.join("release.json"), json).map_err(io("writing release.json"))?;
        for f in [&dst, &staging.join("release.json")] {
            std::fs::File::open(f)
                .and_then(|f| f.sync_all())
                .map_err(io(format!("syncing {}", f.display())))?;
        }
        std::fs::rename(&staging, dir).map_err(io(format!("moving {} into place", dir.display())))
    }

    /// Installed versions, oldest first by install time.
    pub fn installed(&self) -> Vec<Release> {
        let mut out: Vec<Release> = std::fs::read_dir(self.versions())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| read_release(&e.path()))
            .collect();
        out.sort_by_key(|r| r.installed_at_ms);
        out
    }
}

/// Reads `<dir>/release.json`.
pub fn read_release(dir: &Path) -> Option<Release> {
    let text = std::fs::read_to_string(dir.join("release.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Asks a molt binary for its version: `molt <version> (<buildId>)`.
pub fn binary_version(binary: &Path) -> Result<(String, String), ServiceError> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .map_err(io(format!("running {} --version", binary.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_version_line(text.trim()).ok_or_else(|| {
        ServiceError::Conflict(format!(
            "{} --version printed {:?}, not `molt <version> (<buildId>)`",
            binary.display(),
            text.trim()
        ))
    })
}

/// Parses `molt 1.2.3 (abc-def)`.
pub fn parse_version_line(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("molt ")?;
    let (version, build) = rest.split_once(" (")?;
    let build = build.strip_suffix(')')?;
    (!version.is_empty() && !build.is_empty()).then(|| (version.to_owned(), build.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_lines() {
        assert_eq!(
            parse_version_line("molt 2.0.0 (abc-123)"),
            Some(("2.0.0".into(), "abc-123".into()))
        );
        assert_eq!(parse_version_line("molt 2.0.0"), None);
        assert_eq!(parse_version_line("node v20"), None);
    }

    #[test]
    fn install_is_idempotent_and_versions_immutable() {
        let root = std::env::temp_dir().join(format!("molt-layout-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let bin = root.join("molt-src");
        std::fs::write(&bin, b"#!/bin/sh\necho one\n").unwrap();
        let layout = Layout {
            share: root.join("share"),
            bin_dir: root.join("bin"),
        };
        assert_eq!(
            layout.install(&bin, "1.0.0", "b1", 1).unwrap(),
            InstallOutcome::Installed
        );
        assert_eq!(
            layout.install(&bin, "1.0.0", "b1", 2).unwrap(),
            InstallOutcome::AlreadyInstalled
        );
        assert_eq!(layout.current_release().unwrap().version, "1.0.0");
        assert!(
            std::fs::read_link(root.join("bin/molt"))
                .unwrap()
                .ends_with("current/molt")
        );
        std::fs::write(&bin, b"#!/bin/sh\necho two\n").unwrap();
        assert!(matches!(
            layout.install(&bin, "1.0.0", "b2", 3),
            Err(ServiceError::Conflict(_))
        ));
        layout.install(&bin, "2.0.0", "b2", 4).unwrap();
        assert_eq!(layout.current_release().unwrap().version, "2.0.0");
        assert_eq!(layout.installed().len(), 2);
        let _ = std::fs::remove_dir_all(&root);
    }
}
