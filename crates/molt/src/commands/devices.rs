//! `molt devices list|approve|reject`: device pairing.

use clap::Subcommand;
use molt_client::profile::{Access, with_client};
use molt_config::Context;
use serde_json::json;

use crate::output::{Failure, print_json};

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

pub fn exec(ctx: &Context, access: &Access, cmd: &DevicesCommand) -> Result<(), Failure> {
    match cmd {
        DevicesCommand::List { json: as_json } => {
            let r = with_client(ctx, access, async |c| {
                Ok::<_, Failure>(c.call("device.pair.list", Some(json!({}))).await?)
            })?;
            if *as_json {
                print_json(&r);
                return Ok(());
            }
            for (label, key) in [("pending", "pending"), ("paired", "paired")] {
                let list = r[key].as_array().cloned().unwrap_or_default();
                println!("{label}: {}", list.len());
                for d in list {
                    println!(
                        "  {}  {:<8}  {} {}  from {}",
                        d["id"].as_str().unwrap_or("?"),
                        d["state"].as_str().unwrap_or("?"),
                        d["clientId"].as_str().unwrap_or("?"),
                        d["platform"].as_str().unwrap_or(""),
                        d["remote"].as_str().unwrap_or("?")
                    );
                }
            }
        }
        DevicesCommand::Approve { id } => {
            with_client(ctx, access, async |c| {
                Ok::<_, Failure>(
                    c.call("device.pair.approve", Some(json!({ "requestId": id })))
                        .await?,
                )
            })?;
            println!("approved {id}");
        }
        DevicesCommand::Reject { id } => {
            with_client(ctx, access, async |c| {
                Ok::<_, Failure>(
                    c.call("device.pair.reject", Some(json!({ "requestId": id })))
                        .await?,
                )
            })?;
            println!("rejected {id}");
        }
    }
    Ok(())
}
