//! `molt`: the gateway daemon and its command-line client, in one binary. This crate parses
//! arguments and formats output; the work is done by the library crates.

mod build_info;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;

use commands::{Command, Globals};

#[derive(Parser, Debug)]
#[command(name = "molt", version = build_info::LONG_VERSION, about = "A gateway for personal AI agents, safe across restarts and updates")]
struct Cli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                _ => molt_gateway::EXIT_CONFIG,
            };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    // A CLI whose output is piped into `head` should end quietly when the reader goes, as
    // Unix tools do, not panic in println!. The gateway and the updater keep SIGPIPE ignored:
    // they must finish their work even if their log reader disappears. (Sockets never raise
    // SIGPIPE here: Rust sends with MSG_NOSIGNAL.)
    if !cli.command.is_long_lived() {
        // SAFETY: restoring the default disposition of one signal before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match commands::run(cli.globals, cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("molt: {}", e.message);
            ExitCode::from(e.code as u8)
        }
    }
}
