//! `molt status`: the running gateway, as it reports itself.

use clap::Args;
use molt_client::profile::{Access, with_client};
use molt_config::Context;
use molt_protocol::method::AnyParams;
use molt_protocol::methods::system::Status;

use crate::output::{Failure, human_ms, print_json};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(ctx: &Context, access: &Access, args: &StatusArgs) -> Result<(), Failure> {
    let s = with_client(ctx, access, async |c| {
        Ok::<_, Failure>(c.request::<Status>(&AnyParams {}).await?)
    })?;
    if args.json {
        print_json(&s);
        return Ok(());
    }
    let (p, runs) = (&s.probe, &s.runs);
    println!("molt {} ({})", p.version, p.build_id);
    println!("  profile   {}", s.profile);
    println!("  state     {}", p.state.as_str());
    println!("  pid       {}", p.pid);
    println!("  port      {}", s.port);
    println!("  uptime    {}", human_ms(p.uptime_ms));
    println!("  boot      epoch {}", p.boot_epoch);
    println!(
        "  runs      {} queued, {} running, {} succeeded, {} failed, {} cancelled",
        runs.queued, runs.running, runs.succeeded, runs.failed, runs.cancelled
    );
    match &s.last_handover {
        Some(h) => println!("  handover  {}", h.describe()),
        None => println!("  handover  none yet"),
    }
    // Chat channels, one summary line each (`molt channels status` has the detail).
    for c in s.openclaw.channel_summary.iter().filter_map(|c| c.as_str()) {
        println!("  channel   {c}");
    }
    Ok(())
}
