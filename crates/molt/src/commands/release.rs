//! `molt release keygen|build|sign`: making signed releases with the same code that checks
//! them, so tests and maintainers use the real path.

use std::path::PathBuf;

use clap::Subcommand;
use molt_release::{ReleaseError, keys, publish};

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
            let entry = publish::add_to_dir(
                out,
                &publish::Packing {
                    binary,
                    version,
                    target: &target,
                    expires: now + expires_days * 86_400,
                    min_version,
                },
            )
            .map_err(fail)?;
            println!(
                "{}: {} bytes, sha256 {}",
                entry.artifact, entry.size, entry.sha256
            );
            println!(
                "updated {}; sign it with `molt release sign --key KEY {}`",
                out.join("manifest.json").display(),
                out.display()
            );
            Ok(())
        }
        ReleaseCommand::Sign { key, dir } => {
            let public = publish::sign_dir(key, dir).map_err(fail)?;
            println!(
                "signed {} with key {}",
                dir.join("manifest.json").display(),
                public.id()
            );
            Ok(())
        }
    }
}
