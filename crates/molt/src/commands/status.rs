//! `molt status`: the running gateway, as it reports itself.

use clap::Args;
use molt_client::profile::{Access, with_client};
use molt_config::Context;

use crate::output::{Failure, human_ms, print_json};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(ctx: &Context, access: &Access, args: &StatusArgs) -> Result<(), Failure> {
    let s = with_client(ctx, access, async |c| {
        Ok::<_, Failure>(c.call("status", None).await?)
    })?;
    if args.json {
        print_json(&s);
        return Ok(());
    }
    let runs = &s["runs"];
    println!(
        "molt {} ({})",
        s["version"].as_str().unwrap_or("?"),
        s["buildId"].as_str().unwrap_or("?")
    );
    println!("  profile   {}", s["profile"].as_str().unwrap_or("?"));
    println!("  state     {}", s["state"].as_str().unwrap_or("?"));
    println!("  pid       {}", s["pid"]);
    println!("  port      {}", s["port"]);
    println!(
        "  uptime    {}",
        human_ms(s["uptimeMs"].as_u64().unwrap_or(0))
    );
    println!("  boot      epoch {}", s["bootEpoch"]);
    println!(
        "  runs      {} queued, {} running, {} succeeded, {} failed, {} cancelled",
        runs["queued"], runs["running"], runs["succeeded"], runs["failed"], runs["cancelled"]
    );
    let h = &s["lastHandover"];
    if h.is_object() {
        let to = &h["to"];
        let target = if to.is_object() {
            format!(
                "pid {} ({})",
                to["pid"],
                to["version"].as_str().unwrap_or("?")
            )
        } else {
            "no successor".to_owned()
        };
        println!(
            "  handover  {} at {}: pid {} ({}) -> {target} in {} ms{}",
            h["result"].as_str().unwrap_or("?"),
            h["startedAtMs"],
            h["fromPid"],
            h["fromVersion"].as_str().unwrap_or("?"),
            h["durationMs"],
            h["error"]
                .as_str()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    } else {
        println!("  handover  none yet");
    }
    Ok(())
}
