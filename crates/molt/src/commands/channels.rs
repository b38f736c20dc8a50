//! `molt channels status`, `molt pairing list|approve|dismiss CODE` and `molt message send`:
//! the chat channels (Discord) over the protocol.

use clap::{Args, Subcommand};
use molt_client::ClientError;
use molt_client::profile::{Access, with_client};
use molt_config::Context;
use molt_protocol::frame::code;
use molt_protocol::methods::channels::{
    ChannelAccountStatus, ChannelsPairingApprove, ChannelsPairingApproveParams,
    ChannelsPairingDismiss, ChannelsPairingDismissParams, ChannelsPairingList,
    ChannelsPairingListParams, ChannelsStatus, ChannelsStatusParams, DEFAULT_ACCOUNT, Send,
    SendParams,
};

use crate::output::{Failure, print_json};

#[derive(Subcommand, Debug)]
pub enum ChannelsCommand {
    /// Each channel's state: connected, resumed, last event, last error.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum PairingCommand {
    /// Strangers who asked to talk to the agent by DM, with their codes.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Let the sender of pairing code CODE talk to the agent.
    Approve {
        /// The 8-character code the sender got.
        code: String,
        /// Tell the sender by DM that they were approved.
        #[arg(long)]
        notify: bool,
        #[arg(long)]
        json: bool,
    },
    /// Drop the request with pairing code CODE without approving its sender (it frees a
    /// pending place; the sender gets a new code if they write again).
    Dismiss {
        /// The 8-character code the sender got.
        code: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum MessageCommand {
    /// Post a message to a channel, or to a user's DM with `--to user:<id>`.
    Send(SendArgs),
}

#[derive(Args, Debug)]
pub struct SendArgs {
    /// The channel to post through.
    #[arg(long, default_value = "discord")]
    pub channel: String,
    /// A Discord channel id, or `user:<id>`.
    #[arg(long)]
    pub to: String,
    /// The text to post (long text is posted in several messages).
    pub text: String,
    /// Names this message: sending again with the same key posts nothing twice and prints
    /// the same message ids (default: a new key for each run).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    #[arg(long)]
    pub json: bool,
}

pub fn exec_channels(ctx: &Context, access: &Access, cmd: &ChannelsCommand) -> Result<(), Failure> {
    match cmd {
        ChannelsCommand::Status { json } => {
            let r = with_client(ctx, access, async |c| {
                Ok::<_, Failure>(
                    c.request::<ChannelsStatus>(&ChannelsStatusParams::default())
                        .await?,
                )
            })?;
            if *json {
                print_json(&r);
                return Ok(());
            }
            if r.channel_order.is_empty() {
                println!("no channels configured (add a [channels.discord] table to the config)");
            }
            for id in &r.channel_order {
                for a in r.channel_accounts.get(id).into_iter().flatten() {
                    println!("{}", line(id, a));
                }
            }
        }
    }
    Ok(())
}

/// `discord  connected (resumed)  seq 42  identifies 1  resumes 3  token env:DISCORD_BOT_TOKEN`.
fn line(id: &str, a: &ChannelAccountStatus) -> String {
    let mut s = format!(
        "{id}  {}{}  seq {}  identifies {}  resumes {}  token {}  dm {}",
        a.health_state,
        if a.connected && a.resumed {
            " (resumed)"
        } else {
            ""
        },
        a.seq,
        a.identifies,
        a.resumes,
        a.token_source,
        a.dm_policy
    );
    if a.pending_replies > 0 || a.failed_replies > 0 {
        s.push_str(&format!(
            "  replies pending {} failed {}",
            a.pending_replies, a.failed_replies
        ));
    }
    if let Some(e) = &a.last_error {
        s.push_str(&format!("\n  last error: {e}"));
    }
    s
}

pub fn exec_pairing(ctx: &Context, access: &Access, cmd: &PairingCommand) -> Result<(), Failure> {
    match cmd {
        PairingCommand::List { json } => {
            let r = with_client(ctx, access, async |c| {
                Ok::<_, Failure>(
                    c.request::<ChannelsPairingList>(&ChannelsPairingListParams {
                        channel: Some("discord".into()),
                        account_id: None,
                    })
                    .await?,
                )
            })?;
            if *json {
                print_json(&r);
                return Ok(());
            }
            if r.requests.is_empty() {
                println!("no pairing requests");
            }
            for q in &r.requests {
                println!(
                    "{}  {}  {} ({})  expires {}",
                    q.request_id, q.channel, q.sender_label, q.sender_id, q.expires_at
                );
            }
        }
        PairingCommand::Approve { code, notify, json } => {
            let p = ChannelsPairingApproveParams {
                channel: "discord".into(),
                account_id: DEFAULT_ACCOUNT.into(),
                request_id: code.trim().to_ascii_uppercase(),
                notify: Some(*notify),
                bootstrap_command_owner: None,
            };
            let r = with_client(ctx, access, async |c| {
                Ok::<_, Failure>(c.request::<ChannelsPairingApprove>(&p).await?)
            })?;
            if *json {
                print_json(&r);
            } else {
                println!(
                    "approved {}: sender {} may message the agent (notification: {})",
                    r.request_id, r.sender_id, r.notification
                );
            }
        }
        PairingCommand::Dismiss { code, json } => {
            let p = ChannelsPairingDismissParams {
                channel: "discord".into(),
                account_id: DEFAULT_ACCOUNT.into(),
                request_id: code.trim().to_ascii_uppercase(),
            };
            let r = with_client(ctx, access, async |c| {
                Ok::<_, Failure>(c.request::<ChannelsPairingDismiss>(&p).await?)
            })?;
            if *json {
                print_json(&r);
            } else {
                println!(
                    "dismissed {}: sender {} was not approved",
                    r.request_id, r.sender_id
                );
            }
        }
    }
    Ok(())
}

pub fn exec_message(ctx: &Context, access: &Access, cmd: &MessageCommand) -> Result<(), Failure> {
    let MessageCommand::Send(a) = cmd;
    let key = a.idempotency_key.clone().unwrap_or_else(idempotency_key);
    let p = SendParams {
        to: a.to.clone(),
        message: Some(a.text.clone()),
        channel: Some(a.channel.clone()),
        account_id: None,
        idempotency_key: key.clone(),
    };
    let r = with_client(ctx, access, async |c| {
        c.request::<Send>(&p)
            .await
            .map_err(|e| send_failure(e, &key))
    })?;
    if a.json {
        print_json(&r);
    } else {
        let ids = if r.message_ids.is_empty() {
            r.message_id.clone()
        } else {
            r.message_ids.join(", ")
        };
        let plural = if r.message_ids.len() > 1 { "s" } else { "" };
        println!(
            "sent to {} channel {}: message{plural} {ids}",
            r.channel, r.channel_id
        );
    }
    Ok(())
}

/// The failure of a `send`, with the key to retry with when the message may be queued (the
/// gateway keeps it and posts it; the same key never posts it twice).
fn send_failure(e: ClientError, key: &str) -> Failure {
    let final_answer = match &e {
        ClientError::Connect { .. } | ClientError::Handshake(_) => true,
        ClientError::Rpc(s) => s.code == code::INVALID_REQUEST || s.retryable == Some(false),
        _ => false,
    };
    let mut f = Failure::from(e);
    if !final_answer {
        f.message.push_str(&format!(
            "\nThe message may be queued; to retry without posting it twice, run the same \
             command with --idempotency-key {key}"
        ));
    }
    f
}

fn idempotency_key() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("cli-send-{}-{t}", std::process::id())
}
