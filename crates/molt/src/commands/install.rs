//! `molt install`: this binary becomes a version of molt, and `current` points at it.

use std::path::PathBuf;

use clap::Args;
use molt_config::Context;
use molt_service::layout::InstallOutcome;

use crate::build_info::{BUILD_ID, VERSION};
use crate::output::Failure;

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// Install under PREFIX/share and PREFIX/bin instead of ~/.local/share and ~/.local/bin.
    #[arg(long)]
    prefix: Option<PathBuf>,
}

pub fn exec(ctx: &Context, args: &InstallArgs) -> Result<(), Failure> {
    let exe = std::env::current_exe()
        .map_err(|e| Failure::failed(format!("cannot locate the running binary: {e}")))?;
    let (layout, outcome) =
        molt_service::install::install(ctx, args.prefix.as_deref(), &exe, VERSION, BUILD_ID)?;
    let verb = match outcome {
        InstallOutcome::Installed => "installed",
        InstallOutcome::AlreadyInstalled => "already installed",
    };
    println!(
        "{verb}: molt {} ({}) in {}",
        VERSION,
        BUILD_ID,
        layout.versions().join(VERSION).display()
    );
    println!("current -> versions/{}", VERSION);
    println!(
        "{} -> {}",
        layout.bin_dir.join("molt").display(),
        layout.current_binary().display()
    );
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d == layout.bin_dir));
    if !on_path {
        println!("note: {} is not on PATH", layout.bin_dir.display());
    }
    Ok(())
}
