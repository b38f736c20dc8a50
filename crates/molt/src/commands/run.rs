//! `molt run exec`: a durable exec run.

use clap::Subcommand;
use molt_client::profile::{Access, with_client};
use molt_config::Context;
use serde_json::{Value, json};

use crate::output::Failure;

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

pub fn exec(ctx: &Context, access: &Access, cmd: &RunCommand) -> Result<(), Failure> {
    let RunCommand::Exec {
        title,
        timeout_ms,
        cwd,
        idempotency_key,
        argv,
    } = cmd;
    with_client(ctx, access, async |c| {
        let Some((cmd, args)) = argv.split_first() else {
            return Err(Failure::config(
                "give the command after --, e.g. `molt run exec -- echo hi`",
            ));
        };
        let mut p = json!({ "command": cmd, "args": args });
        for (k, v) in [
            ("title", title.clone().map(Value::from)),
            ("timeoutMs", timeout_ms.map(Value::from)),
            ("cwd", cwd.clone().map(Value::from)),
            ("idempotencyKey", idempotency_key.clone().map(Value::from)),
        ] {
            if let Some(v) = v {
                p[k] = v;
            }
        }
        let r = c.call("molt.run.exec", Some(p)).await?;
        println!("{}", r["runId"].as_str().unwrap_or_default());
        Ok(())
    })
}
