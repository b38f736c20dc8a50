//! `molt call METHOD [--params JSON]`: any protocol method, raw.

use clap::Args;
use molt_client::profile::{Access, with_client};
use molt_config::Context;

use crate::output::{Failure, print_json};

#[derive(Args, Debug)]
pub struct CallArgs {
    method: String,
    /// Params as JSON.
    #[arg(long)]
    params: Option<String>,
}

pub fn exec(ctx: &Context, access: &Access, args: &CallArgs) -> Result<(), Failure> {
    with_client(ctx, access, async |c| {
        let p = match &args.params {
            Some(t) => Some(
                serde_json::from_str(t)
                    .map_err(|e| Failure::config(format!("--params is not valid JSON: {e}")))?,
            ),
            None => None,
        };
        print_json(&c.call(&args.method, p).await?);
        Ok(())
    })
}
