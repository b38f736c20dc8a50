//! `molt devices list|approve|reject`: device pairing.

use clap::Subcommand;
use molt_client::profile::{Access, with_client};
use molt_config::Context;
use molt_protocol::method::NoParams;
use molt_protocol::methods::devices::{PairApprove, PairList, PairReject, RequestIdParams};

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
                Ok::<_, Failure>(c.request::<PairList>(&NoParams {}).await?)
            })?;
            if *as_json {
                print_json(&r);
                return Ok(());
            }
            for (label, list) in [("pending", &r.pending), ("paired", &r.paired)] {
                println!("{label}: {}", list.len());
                for d in list {
                    println!(
                        "  {}  {:<8}  {} {}  from {}",
                        d.id,
                        d.state.as_str(),
                        d.client_id.as_deref().unwrap_or("?"),
                        d.platform.as_deref().unwrap_or(""),
                        d.remote.as_deref().unwrap_or("?")
                    );
                }
            }
        }
        DevicesCommand::Approve { id } => {
            with_client(ctx, access, async |c| {
                let p = RequestIdParams {
                    request_id: id.clone(),
                };
                Ok::<_, Failure>(c.request::<PairApprove>(&p).await?)
            })?;
            println!("approved {id}");
        }
        DevicesCommand::Reject { id } => {
            with_client(ctx, access, async |c| {
                let p = RequestIdParams {
                    request_id: id.clone(),
                };
                Ok::<_, Failure>(c.request::<PairReject>(&p).await?)
            })?;
            println!("rejected {id}");
        }
    }
    Ok(())
}
