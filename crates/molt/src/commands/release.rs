//! `molt release keygen|build|sign`: making signed releases with the same code that checks
//! them, so tests and maintainers use the real path.

use std::path::PathBuf;

use clap::Subcommand;
use molt_release::keys::{self, SecretKey};
use molt_release::manifest::Manifest;
use molt_release::{ReleaseError, artifact};

use crate::output::Failure;

#[derive(Subcommand, Debug)]
pub enum ReleaseCommand {
    /// Write an Ed25519 release key pair: PREFIX.key (0600) and PREFIX.pub (one line, for
    /// `[update] trusted_keys`).
    Keygen {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "molt release key")]
        comment: String,
    },
    /// Pack a binary as molt-V-<target>.tar.zst in DIR and add it to DIR/manifest.json.
    Build {
        #[arg(long)]
        binary: PathBuf,
        #[arg(long)]
        version: String,
        #[arg(long)]
        out: PathBuf,
        /// Target name (default: this host's, e.g. x86_64-linux).
        #[arg(long)]
        target: Option<String>,
        /// Days until the entry expires.
        #[arg(long, default_value_t = 30)]
        expires_days: u64,
        /// The oldest installed version this release may be installed over.
        #[arg(long, default_value = "0.0.0")]
        min_version: String,
        /// Do not check that the binary prints exactly this version (test fixtures only).
        #[arg(long)]
        skip_version_check: bool,
    },
    /// Sign DIR/manifest.json with a key: writes DIR/manifest.sig.
    Sign {
        #[arg(long)]
        key: PathBuf,
        dir: PathBuf,
    },
}

fn fail(e: ReleaseError) -> Failure {
    Failure::failed(e.to_string())
}

pub fn exec(cmd: &ReleaseCommand) -> Result<(), Failure> {
    match cmd {
        ReleaseCommand::Keygen { out, comment } => {
            let public = keys::keygen(out, comment).map_err(fail)?;
            println!(
                "wrote {} (secret, 0600) and {}",
                out.with_extension("key").display(),
                out.with_extension("pub").display()
            );
            println!(
                "key id {}; trust it with:\n\n[update]\ntrusted_keys = [\"{}\"]",
                public.id(),
                public.to_line(comment)
            );
            Ok(())
        }
        ReleaseCommand::Build {
            binary,
            version,
            out,
            target,
            expires_days,
            min_version,
            skip_version_check,
        } => {
            if !skip_version_check {
                let (printed, _) = molt_service::layout::binary_version(binary)
                    .map_err(|e| Failure::failed(e.to_string()))?;
                if printed != *version {
                    return Err(Failure::failed(format!(
                        "{} prints version {printed}, not {version}; build it with MOLT_BUILD_VERSION={version}",
                        binary.display()
                    )));
                }
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let target = target.clone().unwrap_or_else(molt_release::host_target);
            let entry = artifact::build(
                binary,
                version,
                &target,
                out,
                now + expires_days * 86_400,
                min_version,
            )
            .map_err(fail)?;
            let path = out.join("manifest.json");
            let mut manifest = match std::fs::read(&path) {
                Ok(bytes) => Manifest::parse(&bytes).map_err(fail)?,
                Err(_) => Manifest::default(),
            };
            println!(
                "{}: {} bytes, sha256 {}",
                entry.artifact, entry.size, entry.sha256
            );
            manifest.upsert(entry);
            let json =
                serde_json::to_vec_pretty(&manifest).map_err(|e| Failure::failed(e.to_string()))?;
            std::fs::write(&path, json)
                .map_err(|e| Failure::failed(format!("cannot write {}: {e}", path.display())))?;
            // The old signature no longer covers the manifest.
            let _ = std::fs::remove_file(out.join("manifest.sig"));
            println!(
                "updated {}; sign it with `molt release sign --key KEY {}`",
                path.display(),
                out.display()
            );
            Ok(())
        }
        ReleaseCommand::Sign { key, dir } => {
            let key = SecretKey::load(key).map_err(fail)?;
            let path = dir.join("manifest.json");
            let bytes = std::fs::read(&path)
                .map_err(|e| Failure::failed(format!("cannot read {}: {e}", path.display())))?;
            Manifest::parse(&bytes).map_err(fail)?;
            std::fs::write(dir.join("manifest.sig"), keys::signature_line(&key, &bytes))
                .map_err(|e| Failure::failed(format!("cannot write the signature: {e}")))?;
            println!("signed {} with key {}", path.display(), key.public().id());
            Ok(())
        }
    }
}
