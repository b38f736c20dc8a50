//! `molt gateway run|restart|check`.

use clap::{Args, Subcommand};
use molt_checks::preflight::{self, Accepted, Refused};
use molt_client::profile::{Access, with_client};
use molt_config::Context;
use molt_gateway::{BuildInfo, GatewayOptions};
use molt_protocol::methods::system::{RestartParams, RestartRequest};
use serde_json::json;

use crate::build_info::{BUILD_ID, FAULT, VERSION};
use crate::output::{Failure, print_json};

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

pub fn exec(ctx: Context, access: &Access, cmd: &GatewayCommand) -> Result<(), Failure> {
    match cmd {
        GatewayCommand::Run(args) => run(ctx, args),
        GatewayCommand::Check { json } => check(&ctx, *json),
        GatewayCommand::Restart { json } => restart(&ctx, access, *json),
    }
}

fn run(mut ctx: Context, args: &GatewayRunArgs) -> Result<(), Failure> {
    if FAULT == "exit-at-start" {
        return Err(Failure::failed(
            "this build exits at start-up (MOLT_BUILD_FAULT=exit-at-start, a test fault)",
        ));
    }
    if let Some(port) = args.port {
        ctx.config.gateway.port = Some(port);
    }
    if let Some(bind) = args.bind {
        ctx.config.gateway.bind = bind;
    }
    ctx.config
        .validate()
        .map_err(|e| Failure::config(e.to_string()))?;
    molt_gateway::run(GatewayOptions {
        profile: ctx.profile,
        config: ctx.config,
        config_path: ctx.config_path,
        state_dir: ctx.state_dir,
        share_dir: ctx.share_dir,
        build: BuildInfo {
            version: VERSION.into(),
            build_id: BUILD_ID.into(),
        },
        never_ready: FAULT == "never-ready",
    })
    .map_err(|e| Failure {
        code: e.exit_code,
        message: e.message,
    })
}

/// `molt gateway check`, which the update preflight runs with the new binary.
fn check(ctx: &Context, json: bool) -> Result<(), Failure> {
    if FAULT == "check-fails" {
        return Err(Failure::config(
            "this build refuses every config (MOLT_BUILD_FAULT=check-fails, a test fault)",
        ));
    }
    let Accepted { found, known, port } = preflight::check(ctx).map_err(|e| match e {
        Refused::Config(m) => Failure::config(m),
        Refused::Failed(m) => Failure::failed(m),
    })?;
    if json {
        print_json(&json!({
            "ok": true,
            "version": VERSION,
            "buildId": BUILD_ID,
            "config": ctx.config_path.display().to_string(),
            "stateDir": ctx.state_dir.display().to_string(),
            "schema": { "found": found, "known": known },
            "port": port,
        }));
    } else {
        println!(
            "ok: molt {} ({}) accepts {} and {} (schema {} of {known}), port {port}",
            VERSION,
            BUILD_ID,
            ctx.config_path.display(),
            ctx.state_dir.display(),
            found.map(|f| f.to_string()).unwrap_or_else(|| "new".into())
        );
    }
    Ok(())
}

fn restart(ctx: &Context, access: &Access, json: bool) -> Result<(), Failure> {
    with_client(ctx, access, async |c| {
        // No reconnect: the answer comes before this connection is closed with 1012.
        let p = RestartParams {
            reason: Some("molt gateway restart".into()),
        };
        let r = c.request_once::<RestartRequest>(&p).await?;
        if json {
            print_json(&r);
        } else {
            println!("handover {}: {}", r.status, r.handover.describe());
        }
        Ok::<_, Failure>(())
    })
}
