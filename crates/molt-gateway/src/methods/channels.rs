//! `channels.status`, `channels.pairing.list|approve|dismiss` and `send`.

use std::sync::Arc;

use molt_protocol::frame::{ErrorShape, code};
use molt_protocol::methods::channels::{
    ChannelsPairingApprove, ChannelsPairingApproveParams, ChannelsPairingApproveResult,
    ChannelsPairingDismiss, ChannelsPairingDismissParams, ChannelsPairingDismissResult,
    ChannelsPairingList, ChannelsPairingListParams, ChannelsPairingListResult, ChannelsStatus,
    ChannelsStatusParams, ChannelsStatusResult, DEFAULT_ACCOUNT, PairingAccount, PairingLimits,
    PairingRequest, Send, SendParams, SendResult,
};
use serde_json::json;

use crate::app::now_ms;
use crate::channels::discord::{PAIRING_MAX_PENDING, PAIRING_TTL_MS, SEND_WAIT, SendError};
use crate::channels::{Channels, Discord};
use crate::router::{Caller, Router};
use crate::store_handle::to_error_shape;

pub fn register(r: &mut Router, channels: &Arc<Channels>) {
    r.with(channels)
        .on::<ChannelsStatus>(status)
        .on::<ChannelsPairingList>(pairing_list)
        .on::<ChannelsPairingApprove>(pairing_approve)
        .on::<ChannelsPairingDismiss>(pairing_dismiss)
        .on::<Send>(send);
}

/// The Discord channel, or an error naming the fix.
fn discord(c: &Channels, channel: Option<&str>) -> Result<Arc<Discord>, ErrorShape> {
    match channel {
        None | Some("discord") => {}
        Some(other) => {
            return Err(ErrorShape::invalid(format!(
                "unknown channel {other:?}; molt has the channel \"discord\""
            )));
        }
    }
    c.discord.clone().ok_or_else(|| {
        ErrorShape::invalid(
            "the Discord channel is not configured: add a [channels.discord] table to the \
             config and restart",
        )
    })
}

async fn status(
    c: Arc<Channels>,
    _: Caller,
    p: ChannelsStatusParams,
) -> Result<ChannelsStatusResult, ErrorShape> {
    let mut out = ChannelsStatusResult {
        ts: now_ms(),
        ..Default::default()
    };
    for (id, account) in c.status().await {
        if p.channel.as_deref().is_some_and(|want| want != id) {
            continue;
        }
        out.channel_order.push(id.into());
        out.channel_labels.insert(id.into(), "Discord".into());
        out.channel_default_account_id
            .insert(id.into(), DEFAULT_ACCOUNT.into());
        out.channels.insert(
            id.into(),
            serde_json::to_value(&account).unwrap_or_default(),
        );
        out.channel_accounts.insert(id.into(), vec![account]);
    }
    Ok(out)
}

async fn pairing_list(
    c: Arc<Channels>,
    _: Caller,
    p: ChannelsPairingListParams,
) -> Result<ChannelsPairingListResult, ErrorShape> {
    let d = discord(&c, p.channel.as_deref())?;
    let list = d
        .store()
        .call(|s| s.discord_pairing_list())
        .await
        .map_err(to_error_shape)?;
    Ok(ChannelsPairingListResult {
        accounts: vec![PairingAccount {
            channel: "discord".into(),
            channel_label: "Discord".into(),
            account_id: DEFAULT_ACCOUNT.into(),
            notify_supported: true,
        }],
        requests: list
            .into_iter()
            .map(|r| PairingRequest {
                request_id: r.code,
                channel: "discord".into(),
                channel_label: "Discord".into(),
                account_id: DEFAULT_ACCOUNT.into(),
                sender_id: r.user_id,
                sender_label: r.username,
                created_at: molt_cron::format_at(r.created_at_ms),
                last_seen_at: molt_cron::format_at(r.last_seen_ms),
                expires_at: molt_cron::format_at(r.expires_at_ms),
                notify_supported: true,
            })
            .collect(),
        command_owner_configured: false,
        limits: PairingLimits {
            pending_per_account: PAIRING_MAX_PENDING,
            ttl_ms: PAIRING_TTL_MS as u64,
        },
    })
}

async fn pairing_approve(
    c: Arc<Channels>,
    _: Caller,
    p: ChannelsPairingApproveParams,
) -> Result<ChannelsPairingApproveResult, ErrorShape> {
    let d = discord(&c, Some(&p.channel))?;
    let code = p.request_id.clone();
    let req = d
        .store()
        .call(move |s| s.discord_pairing_approve(&code))
        .await
        .map_err(to_error_shape)?
        .ok_or_else(|| no_such_request(&p.request_id))?;
    tracing::info!(sender = %req.user_id, "discord: pairing approved");
    let notification = if p.notify.unwrap_or(false) {
        match d.notify_approved(&req.user_id).await {
            Ok(()) => "sent",
            Err(e) => {
                tracing::warn!(error = %e, "discord: cannot tell the sender they were approved");
                "failed"
            }
        }
    } else {
        "not-requested"
    };
    Ok(ChannelsPairingApproveResult {
        request_id: req.code,
        sender_id: req.user_id,
        notification: notification.into(),
        command_owner_bootstrap: if p.bootstrap_command_owner.unwrap_or(false) {
            "unavailable".into()
        } else {
            "not-requested".into()
        },
    })
}

fn no_such_request(code: &str) -> ErrorShape {
    ErrorShape::invalid(format!(
        "no pending pairing request {code}; `molt pairing list` shows the pending ones (a code \
         expires after an hour)"
    ))
    .with_details(json!({"code": "PAIRING_REQUEST_NOT_FOUND"}))
}

async fn pairing_dismiss(
    c: Arc<Channels>,
    _: Caller,
    p: ChannelsPairingDismissParams,
) -> Result<ChannelsPairingDismissResult, ErrorShape> {
    let d = discord(&c, Some(&p.channel))?;
    let code = p.request_id.clone();
    let req = d
        .store()
        .call(move |s| s.discord_pairing_dismiss(&code))
        .await
        .map_err(to_error_shape)?
        .ok_or_else(|| no_such_request(&p.request_id))?;
    tracing::info!(sender = %req.user_id, "discord: pairing request dismissed");
    Ok(ChannelsPairingDismissResult {
        request_id: req.code,
        sender_id: req.user_id,
    })
}

/// Queues the message durably under its idempotency key and waits (bounded) until it is
/// posted; see [`Discord::send`].
async fn send(c: Arc<Channels>, _: Caller, p: SendParams) -> Result<SendResult, ErrorShape> {
    let d = discord(&c, p.channel.as_deref())?;
    let text = p
        .message
        .as_deref()
        .filter(|m| !m.trim().is_empty())
        .ok_or_else(|| ErrorShape::invalid("send needs a non-empty `message`"))?;
    // The key names the queued message: an empty one would make every such send one message.
    let key = p.idempotency_key.as_str();
    if key.trim().is_empty() {
        return Err(ErrorShape::invalid(
            "send needs a non-empty `idempotencyKey` (a new one for each new message)",
        ));
    }
    let target = p.to.trim();
    let channel_id = match target.strip_prefix("user:") {
        Some(user) => d.dm_channel(user).await.map_err(ErrorShape::invalid)?,
        None => target.strip_prefix("channel:").unwrap_or(target).to_owned(),
    };
    if channel_id.is_empty() || !channel_id.chars().all(|c| c.is_ascii_digit()) {
        return Err(ErrorShape::invalid(format!(
            "`to` {target:?} is not a Discord channel id; give a channel id or user:<id>"
        )));
    }
    let ids = d
        .send(&channel_id, text, key)
        .await
        .map_err(|e| send_error(e, key))?;
    Ok(SendResult {
        channel: "discord".into(),
        channel_id,
        message_id: ids.first().cloned().unwrap_or_default(),
        message_ids: ids,
    })
}

/// The protocol error for a `send` that returned no ids, with what the caller can do.
fn send_error(e: SendError, key: &str) -> ErrorShape {
    match e {
        SendError::NotRunning(why) => ErrorShape::unavailable(why, 1000),
        SendError::KeyReused { channel_id } => ErrorShape::invalid(format!(
            "idempotency key {key:?} was already used for another message (to channel \
             {channel_id}); use a new key for a new message"
        ))
        .with_details(json!({"code": "IDEMPOTENCY_KEY_REUSED"})),
        SendError::Failed(why) => ErrorShape {
            // Final: the same key returns this again; a new key sends the message anew.
            retryable: Some(false),
            ..ErrorShape::new(
                code::UNAVAILABLE,
                format!(
                    "Discord did not take the message, and it will not be posted: {why}. Fix \
                     the cause (the bot's access to the channel, the text) and send it again \
                     with a new idempotency key"
                ),
            )
        }
        .with_details(json!({"code": "SEND_FAILED"})),
        SendError::Queued(why) => ErrorShape::unavailable(
            format!(
                "the message is queued and will be posted, but not yet: {why} (waited at most \
                 {}s). Retrying send with the same idempotency key {key:?} is safe: it posts \
                 nothing twice and returns the message ids once posted",
                SEND_WAIT.as_secs()
            ),
            2000,
        )
        .with_details(json!({"code": "SEND_QUEUED", "idempotencyKey": key})),
        SendError::Store(e) => to_error_shape(e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    // Pairing times are shown as OpenClaw's clients read them: RFC 3339 UTC, milliseconds.
    fn pairing_times_are_rfc3339_utc() {
        assert_eq!(molt_cron::format_at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            molt_cron::format_at(1_796_159_229_828),
            "2026-12-01T21:07:09.828Z"
        );
        assert_eq!(
            molt_cron::format_at(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
    }
}
