//! Chat channels (Discord is the first): their state, DM pairing, and posting a message.
//! The shapes are OpenClaw's (`ChannelsStatusResult`, `ChannelsPairingListResult`,
//! `ChannelsPairingApproveParams`, `ChannelsPairingDismissParams`, `SendParams`); molt adds a few fields to an account's
//! status, which the schema allows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

crate::declare_methods! {
    /// Each channel's state: connected, resumed, last event, errors.
    ChannelsStatus = "channels.status", Read, reads, ChannelsStatusParams => ChannelsStatusResult;
    /// Pending DM pairing requests.
    ChannelsPairingList = "channels.pairing.list", Pairing, reads, ChannelsPairingListParams => ChannelsPairingListResult;
    /// Approves a pairing request: its sender may message the agent from now on. The
    /// schema's scope is "dynamic"; molt asks for write, as for its other dynamic methods.
    ChannelsPairingApprove = "channels.pairing.approve", Write, mutates, ChannelsPairingApproveParams => ChannelsPairingApproveResult;
    ChannelsPairingDismiss = "channels.pairing.dismiss", Pairing, mutates, ChannelsPairingDismissParams => ChannelsPairingDismissResult;
    /// Posts a message to a channel target (`to`: a channel id, or `user:<id>` for a DM).
    Send = "send", Write, mutates, SendParams => SendResult;
}

/// The only account of a channel molt runs (one bot per channel).
pub const DEFAULT_ACCOUNT: &str = "default";

/// `ChannelsStatusParams`; molt reports the state it has and probes nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelsStatusParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// `ChannelsStatusResult`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelsStatusResult {
    pub ts: u64,
    pub channel_order: Vec<String>,
    pub channel_labels: BTreeMap<String, String>,
    /// A summary per channel (molt: the default account's status).
    pub channels: BTreeMap<String, Value>,
    pub channel_accounts: BTreeMap<String, Vec<ChannelAccountStatus>>,
    pub channel_default_account_id: BTreeMap<String, String>,
}

/// One account of a channel (`channelAccounts.<channel>[]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelAccountStatus {
    pub account_id: String,
    pub enabled: bool,
    /// A token was found.
    pub configured: bool,
    /// The connection task runs (it stops on a configuration error).
    pub running: bool,
    /// A gateway socket is open and the session is live.
    pub connected: bool,
    pub reconnect_attempts: u64,
    pub last_connected_at: Option<u64>,
    /// What went wrong last (a bad token, missing intents, a failed post); never the token.
    pub last_error: Option<String>,
    /// `connected`, `connecting`, `reconnecting`, `error`, `stopped` or `disabled`.
    pub health_state: String,
    pub last_start_at: Option<u64>,
    pub last_inbound_at: Option<u64>,
    pub last_outbound_at: Option<u64>,
    pub last_transport_activity_at: Option<u64>,
    pub busy: bool,
    pub active_runs: u64,
    pub dm_policy: String,
    pub allow_from: Vec<String>,
    /// `config`, `env:<NAME>` or `none`.
    pub token_source: String,
    pub base_url: String,
    // molt's own fields.
    /// The current session was continued by a RESUME (not a new IDENTIFY).
    pub resumed: bool,
    /// IDENTIFYs and RESUMEs that succeeded in this process.
    pub identifies: u64,
    pub resumes: u64,
    /// The last gateway sequence number handled.
    pub seq: u64,
    /// The error is a configuration error: molt does not retry until restarted.
    pub fatal: bool,
    pub bot_user_id: Option<String>,
    /// Replies queued or being posted, and replies that could not be posted.
    pub pending_replies: u64,
    pub failed_replies: u64,
}

/// `ChannelsPairingListParams`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelsPairingListParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

/// `ChannelsPairingListResult`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelsPairingListResult {
    pub accounts: Vec<PairingAccount>,
    pub requests: Vec<PairingRequest>,
    pub command_owner_configured: bool,
    pub limits: PairingLimits,
}

/// `ChannelsPairingListResult.accounts[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingAccount {
    pub channel: String,
    pub channel_label: String,
    pub account_id: String,
    pub notify_supported: bool,
}

/// A pending request; `requestId` is the code the sender got.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingRequest {
    pub request_id: String,
    pub channel: String,
    pub channel_label: String,
    pub account_id: String,
    pub sender_id: String,
    pub sender_label: String,
    /// RFC 3339 times.
    pub created_at: String,
    pub last_seen_at: String,
    pub expires_at: String,
    pub notify_supported: bool,
}

/// `ChannelsPairingListResult.limits`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingLimits {
    pub pending_per_account: u32,
    pub ttl_ms: u64,
}

/// `ChannelsPairingApproveParams`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelsPairingApproveParams {
    pub channel: String,
    pub account_id: String,
    /// The pairing code.
    pub request_id: String,
    /// Tell the sender they were approved (a DM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_command_owner: Option<bool>,
}

/// `ChannelsPairingApproveResult`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelsPairingApproveResult {
    pub request_id: String,
    pub sender_id: String,
    /// `not-requested`, `sent`, `unsupported` or `failed`.
    pub notification: String,
    /// molt has no command owner: `not-requested` or `unavailable`.
    pub command_owner_bootstrap: String,
}

/// `SendParams`: the fields molt acts on (text to a channel); others are accepted and
/// ignored.
/// Drops a pending pairing request without approving its sender.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelsPairingDismissParams {
    pub channel: String,
    pub account_id: String,
    pub request_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelsPairingDismissResult {
    pub request_id: String,
    pub sender_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendParams {
    /// A Discord channel id, or `user:<id>` (a DM with that user).
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `discord` (the default, and the only channel so far).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    pub idempotency_key: String,
}

/// What `send` posted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendResult {
    pub channel: String,
    /// The channel the message went to (the DM channel for `user:<id>`).
    pub channel_id: String,
    /// The id of the first message posted (a long text is posted in several).
    pub message_id: String,
    pub message_ids: Vec<String>,
}
