//! `molt security audit [--json] [--deep]`: molt-checks audits; this prints the ranked
//! findings, each with the exact commands that fix it.

use clap::{Args, Subcommand};
use molt_audit::Severity;
use molt_checks::audit::{self, AuditOptions, AuditReport};
use molt_config::Context;

use crate::output::{Failure, print_json};

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

pub fn exec(
    ctx: &Context,
    config_error: Option<String>,
    cmd: &SecurityCommand,
) -> Result<(), Failure> {
    let SecurityCommand::Audit(args) = cmd;
    let report = audit::run(ctx, config_error, &AuditOptions { deep: args.deep });
    if args.json {
        print_json(&report.to_json());
    } else {
        print_report(&report);
    }
    match report.exit_code() {
        0 => Ok(()),
        code => Err(Failure {
            code,
            message: format!(
                "security audit: {} critical, {} warning(s); nothing was changed",
                report.count(Severity::Critical),
                report.count(Severity::Warn)
            ),
        }),
    }
}

fn print_report(r: &AuditReport) {
    println!("molt security audit (read-only: nothing is changed)");
    println!(
        "  {} of {} TCP listener(s) on non-loopback addresses{}",
        r.listeners.len(),
        r.listener_count,
        if r.deep {
            ", probed"
        } else {
            "; --deep probes them"
        }
    );
    for (k, v) in &r.sources {
        println!("  {k:<12} {v}");
    }
    println!();
    for f in &r.findings {
        println!(
            "{:<8}  {}  [{}]",
            f.severity.as_str().to_uppercase(),
            f.title,
            f.id
        );
        for line in f.detail.lines() {
            println!("          {line}");
        }
        if !f.remedy.is_empty() {
            println!("          remedy (run as root, in order):");
            for r in &f.remedy {
                println!("            $ {r}");
            }
        }
        println!();
    }
    if r.findings.is_empty() {
        println!("no findings");
    }
}
