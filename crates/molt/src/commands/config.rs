//! `molt config show`.

use clap::Subcommand;
use molt_client::profile::{Access, Credential};
use molt_config::Context;

use crate::output::Failure;

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the effective config (defaults, file, MOLT_* overrides), secrets masked.
    Show {
        /// Print only the gateway token (configured or generated), for another client.
        #[arg(long)]
        reveal_token: bool,
    },
}

pub fn exec(ctx: &Context, access: &Access, cmd: &ConfigCommand) -> Result<(), Failure> {
    let ConfigCommand::Show { reveal_token } = cmd;
    let credential = Credential::resolve(access, ctx);
    if *reveal_token {
        return match credential {
            Credential::Token { value, .. } => {
                println!("{value}");
                Ok(())
            }
            other => Err(Failure::failed(format!(
                "no token to reveal: {}",
                other.describe()
            ))),
        };
    }
    println!(
        "# profile: {}\n# config file: {}\n# state dir: {}\n# auth: {}",
        ctx.profile,
        ctx.config_path.display(),
        ctx.state_dir.display(),
        credential.describe()
    );
    print!("{}", ctx.config.to_masked_toml(&ctx.profile));
    Ok(())
}
