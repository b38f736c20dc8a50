//! `molt`: the gateway daemon and its command-line client, in one binary.

mod audit;
mod commands;
mod doctor;
mod host;
mod release;
mod service;
mod update;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// The version and build id fixed by `build.rs`.
pub const VERSION: &str = env!("MOLT_VERSION");
pub const BUILD_ID: &str = env!("MOLT_BUILD_ID");
/// A test fault baked in with `MOLT_BUILD_FAULT` (see build.rs); empty in real builds.
pub const FAULT: &str = env!("MOLT_FAULT");

fn long_version() -> &'static str {
    // clap prints "molt <this>", giving `molt <version> (<buildId>)`.
    concat!(env!("MOLT_VERSION"), " (", env!("MOLT_BUILD_ID"), ")")
}

#[derive(Parser, Debug)]
#[command(name = "molt", version = long_version(), about = "A gateway for personal AI agents, safe across restarts and updates")]
pub struct Cli {
    /// Profile: an isolated instance with its own config, state, port and unit.
    #[arg(long, global = true, env = "MOLT_PROFILE")]
    pub profile: Option<String>,
    /// Config file (default: ~/.config/molt[-P]/molt.toml).
    #[arg(long, global = true, env = "MOLT_CONFIG")]
    pub config: Option<PathBuf>,
    /// State directory (default: ~/.local/state/molt[-P]).
    #[arg(long, global = true, env = "MOLT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Gateway WebSocket URL for client commands (default: from the profile's config).
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// Gateway token for client commands (default: gateway.auth.token from the config, else
    /// the profile's generated token file).
    #[arg(long, global = true, env = "MOLT_TOKEN")]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run or manage the gateway daemon.
    #[command(subcommand)]
    Gateway(GatewayCommand),
    /// Show configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show the running gateway's version, pid, uptime, state and run counts.
    Status(JsonFlag),
    /// Create durable runs.
    #[command(subcommand)]
    Run(RunCommand),
    /// List, inspect and cancel runs (tasks).
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// Manage device pairing.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// Install this binary as a version of molt and point `current` at it.
    Install {
        /// Install under PREFIX/share and PREFIX/bin instead of ~/.local/share and ~/.local/bin.
        #[arg(long)]
        prefix: Option<PathBuf>,
    },
    /// Manage the systemd user unit.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Update to a signed release as one journalled transaction with automatic rollback.
    /// Works from anywhere, also from inside the gateway (then it returns a job id).
    Update(UpdateArgs),
    /// Make and sign releases (for maintainers and tests).
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// Check this profile's install, service, versions and port, and other gateways on the
    /// host; `--fix` repairs what is molt's own to repair. Exit 0 ok, 1 warnings, 2 failures.
    Doctor(DoctorArgs),
    /// Host security checks.
    #[command(subcommand)]
    Security(SecurityCommand),
    /// Call a protocol method directly and print the JSON result.
    Call {
        method: String,
        /// Params as JSON.
        #[arg(long)]
        params: Option<String>,
    },
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct UpdateArgs {
    #[command(subcommand)]
    pub command: Option<UpdateCommand>,
    #[command(flatten)]
    pub flags: UpdateFlags,
}

#[derive(Args, Debug)]
pub struct UpdateFlags {
    /// Release directory or base URL (https://, or http:// on loopback). Default: [update] source.
    #[arg(long)]
    pub source: Option<String>,
    /// Install this version instead of the newest on offer.
    #[arg(long)]
    pub to: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Resolve, download, verify, unpack and preflight; switch nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Allow a version older than the installed one.
    #[arg(long)]
    pub allow_downgrade: bool,
}

#[derive(Subcommand, Debug)]
pub enum UpdateCommand {
    /// Show the current or last update transaction.
    Status {
        /// Wait for a running transaction to end.
        #[arg(long)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
    /// Go back to the previous installed version, through the same transaction.
    Rollback {
        #[arg(long, short = 'y')]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
    /// Bring an install whose updater was interrupted to a consistent state.
    Recover {
        #[arg(long)]
        json: bool,
    },
    /// The updater itself (started by `molt update` as a transient unit).
    #[command(hide = true)]
    Apply {
        #[arg(long)]
        job: String,
    },
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Repair what molt can safely repair itself, then check again.
    #[arg(long)]
    pub fix: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum SecurityCommand {
    /// Read-only audit: exposed listeners, firewall, Docker, sshd, and molt's own config.
    /// Changes nothing. Exit 2 if anything is critical, 1 for warnings, 0 otherwise.
    Audit(AuditArgs),
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Also probe each exposed port (over loopback, or the bound local address) for an
    /// agent gateway: the OpenClaw/molt handshake challenge and GET /healthz.
    #[arg(long)]
    pub deep: bool,
}

#[derive(Subcommand, Debug)]
pub enum GatewayCommand {
    /// Run the gateway in the foreground.
    Run(GatewayRunArgs),
    /// Hand over to a new gateway process (what `current` points to): no refused connection,
    /// no lost run, no wait for a drain. Exit 1 if the new process fails; the old one serves on.
    Restart {
        #[arg(long)]
        json: bool,
    },
    /// Check that this binary accepts the config and the state (the update preflight):
    /// the config loads, the database schema is one this build knows. Changes nothing.
    Check {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct GatewayRunArgs {
    /// Port (overrides gateway.port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Bind address (overrides gateway.bind). Non-loopback needs auth.
    #[arg(long)]
    pub bind: Option<std::net::IpAddr>,
}

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

#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Write (or repair) the unit for what `current` points to, reload and enable it.
    Install {
        /// Also run `loginctl enable-linger $USER`.
        #[arg(long)]
        enable_linger: bool,
    },
    /// Stop, disable and remove the unit.
    Uninstall,
    /// Start the unit (returns once the gateway is ready).
    Start,
    /// Stop the unit (inside the stop budget).
    Stop,
    /// A handover when the gateway runs; a start when it does not. Never a stop and a start.
    Restart,
    /// Unit state, main pid, restarts, and the unit/current/running versions side by side.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Follow the journal, or the gateway's log file when there is no journal.
    Logs {
        #[arg(long)]
        no_follow: bool,
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the effective config (defaults, file, MOLT_* overrides), secrets masked.
    Show {
        /// Print only the gateway token (configured or generated), for another client.
        #[arg(long)]
        reveal_token: bool,
    },
}

#[derive(Args, Debug)]
pub struct JsonFlag {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum RunCommand {
    /// Run a command as a durable exec run; prints the run id once it is committed.
    Exec {
        #[arg(long)]
        title: Option<String>,
        /// Kill the step after this many milliseconds.
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// Working directory of the command.
        #[arg(long)]
        cwd: Option<String>,
        /// Deduplicate: a second call with the same key returns the first run.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TasksCommand {
    /// List runs, newest first.
    List {
        #[arg(long)]
        json: bool,
        /// Only runs with this status (queued, running, completed, failed, cancelled, timed_out).
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one run with its steps and attempts.
    Get {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a run.
    Cancel {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum DevicesCommand {
    /// List pending and paired devices.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Approve a pending device.
    Approve { id: String },
    /// Reject a device.
    Reject { id: String },
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
    let long_lived = matches!(
        &cli.command,
        Command::Gateway(GatewayCommand::Run(_))
            | Command::Update(UpdateArgs {
                command: Some(UpdateCommand::Apply { .. }),
                ..
            })
    );
    if !long_lived {
        // SAFETY: restoring the default disposition of one signal before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("molt: {}", e.message);
            ExitCode::from(e.code as u8)
        }
    }
}
