//! `molt run exec`: a durable exec run.

use clap::Subcommand;
use molt_client::profile::{Access, with_client};
use molt_config::Context;
use molt_protocol::methods::tasks::{RunExec, RunExecParams};

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
        let p = RunExecParams {
            command: cmd.clone(),
            args: args.to_vec(),
            env: Default::default(),
            cwd: cwd.clone(),
            timeout_ms: *timeout_ms,
            title: title.clone(),
            idempotency_key: idempotency_key.clone(),
        };
        let r = c.request::<RunExec>(&p).await?;
        println!("{}", r.run_id);
        Ok(())
    })
}
