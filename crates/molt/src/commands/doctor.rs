//! `molt doctor [--fix] [--json]`: molt-checks runs the checks; this prints each line as it
//! is done, and the summary.

use clap::Args;
use molt_checks::doctor::{self, CheckReport, DoctorOptions, Status};
use molt_client::profile::Access;
use molt_config::Context;
use serde_json::json;

use crate::output::{Failure, print_json};

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Repair what molt can safely repair itself, then check again.
    #[arg(long)]
    pub fix: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(
    ctx: &Context,
    config_error: Option<String>,
    access: Access,
    args: &DoctorArgs,
) -> Result<(), Failure> {
    let unit = ctx.profile.unit_name();
    let pf = ctx.profile_flag();
    if !args.json {
        println!(
            "molt doctor: profile {} ({unit}){}",
            ctx.profile,
            if args.fix { ", fixing" } else { "" }
        );
    }
    let opts = DoctorOptions {
        fix: args.fix,
        access,
    };
    let report = doctor::run(ctx, config_error, &opts, |check| {
        if !args.json {
            print_check(check);
        }
    });
    let (ok, warn, fail, code) = (report.ok, report.warn, report.fail, report.exit_code);
    if args.json {
        print_json(&json!({
            "profile": ctx.profile.to_string(),
            "unit": unit,
            "fix": args.fix,
            "checks": report.checks,
            "summary": { "ok": ok, "warn": warn, "fail": fail },
            "exitCode": code,
        }));
    } else {
        println!("{ok} ok, {warn} warning(s), {fail} failure(s)");
        if !args.fix && report.checks.iter().any(|r| r.outcome.fixable) {
            println!("run `molt doctor{pf} --fix` to repair what is marked fixable");
        }
    }
    match code {
        0 => Ok(()),
        _ => Err(Failure {
            code,
            message: format!("doctor: {fail} check(s) failed, {warn} warning(s)"),
        }),
    }
}

fn print_check(r: &CheckReport) {
    let o = &r.outcome;
    if let Some(f) = &r.fix {
        println!(
            "{:<5} {:<15} {}",
            f.before.status.label(),
            r.id,
            f.before.finding
        );
        for a in &f.actions {
            println!("      fixed: {a}");
        }
        if let Some(e) = &f.error {
            println!("      fix failed: {e}");
        }
        println!("      now: {} {}", o.status.label(), o.finding);
    } else {
        println!("{:<5} {:<15} {}", o.status.label(), r.id, o.finding);
    }
    if o.status != Status::Ok {
        if let Some(rem) = &o.remedy {
            println!(
                "      remedy{}: {rem}",
                if o.fixable { " (--fix)" } else { "" }
            );
        }
    }
}
