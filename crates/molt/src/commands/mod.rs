//! The `molt` commands, one module per family (as cargo's `src/bin/cargo/commands/`): each
//! holds its clap arguments and an `exec` that calls the libraries and formats the output.
//! Client commands reach the gateway only over the protocol.

mod agent;
mod approvals;
mod call;
mod channels;
mod chat;
mod config;
mod cron;
mod devices;
mod doctor;
mod gateway;
mod import;
mod install;
mod release;
mod run;
mod security;
mod service;
mod sessions;
mod status;
mod tasks;
mod update;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use molt_client::profile::Access;
use molt_config::Context;

use crate::build_info::VERSION;
use crate::output::Failure;

/// The flags every command takes.
#[derive(Args, Debug)]
pub struct Globals {
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
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run or manage the gateway daemon.
    #[command(subcommand)]
    Gateway(gateway::GatewayCommand),
    /// Show configuration.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Show the running gateway's version, pid, uptime, state and run counts.
    Status(status::StatusArgs),
    /// Create durable runs.
    #[command(subcommand)]
    Run(run::RunCommand),
    /// List, inspect and cancel runs (tasks).
    #[command(subcommand)]
    Tasks(tasks::TasksCommand),
    /// Manage device pairing.
    #[command(subcommand)]
    Devices(devices::DevicesCommand),
    /// Install this binary as a version of molt and point `current` at it.
    Install(install::InstallArgs),
    /// Manage the systemd user unit.
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Update to a signed release as one journalled transaction with automatic rollback.
    /// Works from anywhere, also from inside the gateway (then it returns a job id).
    Update(update::UpdateArgs),
    /// Make and sign releases (for maintainers and tests).
    #[command(subcommand)]
    Release(release::ReleaseCommand),
    /// Check this profile's install, service, versions and port, and other gateways on the
    /// host; `--fix` repairs what is molt's own to repair. Exit 0 ok, 1 warnings, 2 failures.
    Doctor(doctor::DoctorArgs),
    /// Host security checks.
    #[command(subcommand)]
    Security(security::SecurityCommand),
    /// Call a protocol method directly and print the JSON result.
    Call(call::CallArgs),
    /// Send one message to an agent and print its reply.
    Agent(agent::AgentArgs),
    /// Talk with an agent: each line of input is a turn, the reply streams back.
    Chat(chat::ChatArgs),
    /// Scheduled jobs: commands, agent turns and notes on a schedule.
    #[command(subcommand)]
    Cron(cron::CronCommand),
    /// Approve or deny the agent's commands that wait for an operator.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// List, show, reset and delete conversation sessions.
    #[command(subcommand)]
    Sessions(sessions::SessionsCommand),
    /// Chat channels (Discord): their state.
    #[command(subcommand)]
    Channels(channels::ChannelsCommand),
    /// Approve strangers who asked to talk to the agent by DM.
    #[command(subcommand)]
    Pairing(channels::PairingCommand),
    /// Post messages through a chat channel.
    #[command(subcommand)]
    Message(channels::MessageCommand),
    /// Move another gateway's config, agents, workspaces, sessions and cron jobs into molt
    /// (read-only on the source; safe to run again).
    #[command(subcommand)]
    Import(import::ImportCommand),
}

impl Command {
    /// The daemon and the updater: they run on whoever reads their output.
    pub fn is_long_lived(&self) -> bool {
        matches!(self, Command::Gateway(gateway::GatewayCommand::Run(_)))
            || matches!(self, Command::Update(u) if u.is_updater())
    }
}

impl Globals {
    fn access(&self) -> Access {
        Access {
            url: self.url.clone(),
            token: self.token.clone(),
            client_version: VERSION.into(),
        }
    }

    fn resolve(&self) -> Result<Context, Failure> {
        Context::resolve(
            self.profile.as_deref(),
            self.config.clone(),
            self.state_dir.clone(),
        )
        .map_err(Failure::config)
    }

    fn resolve_lenient(&self) -> Result<(Context, Option<String>), Failure> {
        Context::resolve_lenient(
            self.profile.as_deref(),
            self.config.clone(),
            self.state_dir.clone(),
        )
        .map_err(|e| Failure::config(e.to_string()))
    }
}

/// Runs one command.
pub fn run(globals: Globals, command: Command) -> Result<(), Failure> {
    let access = globals.access();
    let resolve = || globals.resolve();
    match command {
        // These two diagnose a broken config instead of refusing to start on one.
        Command::Doctor(args) => {
            let (ctx, config_error) = globals.resolve_lenient()?;
            doctor::exec(&ctx, config_error, access, &args)
        }
        // The import reads molt's config file itself, and maps into it even when it is new.
        Command::Import(cmd) => {
            let (ctx, _) = globals.resolve_lenient()?;
            import::exec(&ctx, &cmd)
        }
        Command::Security(cmd) => {
            let (ctx, config_error) = globals.resolve_lenient()?;
            security::exec(&ctx, config_error, &cmd)
        }
        Command::Gateway(cmd) => gateway::exec(resolve()?, &access, &cmd),
        Command::Config(cmd) => config::exec(&resolve()?, &access, &cmd),
        Command::Status(args) => status::exec(&resolve()?, &access, &args),
        Command::Run(cmd) => run::exec(&resolve()?, &access, &cmd),
        Command::Tasks(cmd) => tasks::exec(&resolve()?, &access, &cmd),
        Command::Devices(cmd) => devices::exec(&resolve()?, &access, &cmd),
        Command::Install(args) => install::exec(&resolve()?, &args),
        Command::Service(cmd) => service::exec(&resolve()?, &access, &cmd),
        Command::Update(args) => update::exec(&resolve()?, &access, &args),
        Command::Release(cmd) => {
            // Like every command but doctor and the audit, it refuses a config that does not load.
            resolve()?;
            release::exec(&cmd)
        }
        Command::Call(args) => call::exec(&resolve()?, &access, &args),
        Command::Agent(args) => agent::exec(&resolve()?, &access, &args),
        Command::Chat(args) => chat::exec(&resolve()?, &access, &args),
        Command::Sessions(cmd) => sessions::exec(&resolve()?, &access, &cmd),
        Command::Approvals(cmd) => approvals::exec(&resolve()?, &access, &cmd),
        Command::Cron(cmd) => cron::exec(&resolve()?, &access, &cmd),
        Command::Channels(cmd) => channels::exec_channels(&resolve()?, &access, &cmd),
        Command::Pairing(cmd) => channels::exec_pairing(&resolve()?, &access, &cmd),
        Command::Message(cmd) => channels::exec_message(&resolve()?, &access, &cmd),
    }
}
