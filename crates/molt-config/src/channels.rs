//! `[channels]`: the chat channels the agent answers on. Discord is the first.
//!
//! ```toml
//! [channels.discord]
//! token_env = "DISCORD_BOT_TOKEN"   # or `token = "..."` in a 0600 config file
//! agent = "main"
//! dm_policy = "pairing"             # pairing | allowlist | open | disabled
//! dm_scope = "main"                 # main | per-peer
//! allow_from = ["123456789012345678"]
//! group_policy = "allowlist"        # allowlist | open | disabled
//! require_mention = true
//! [channels.discord.guilds."111111111111111111"]
//! users = []                        # empty: anyone in the guild
//! [channels.discord.guilds."111111111111111111".channels."222222222222222222"]
//! require_mention = false
//! ```
//!
//! The names follow OpenClaw's `channels.discord` block (`dmPolicy`, `allowFrom`, `guilds.<id>
//! {requireMention, users, channels.<id>{enabled, requireMention, users}}`) in molt's
//! snake_case, so an imported config keeps its meaning.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// The variable the bot token is read from when neither `token` nor `token_env` is set.
pub const DEFAULT_DISCORD_TOKEN_ENV: &str = "DISCORD_BOT_TOKEN";

/// `[channels]`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {
    /// `[channels.discord]`; absent means no Discord channel, even when `DISCORD_BOT_TOKEN` is
    /// set (a token alone starts nothing, as in OpenClaw).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discord: Option<DiscordConfig>,
}

/// Who may talk to the agent in direct messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DmPolicy {
    /// An unknown sender gets a pairing code; their messages wait for an operator's approval.
    #[default]
    Pairing,
    /// Only the senders in `allow_from` (and senders approved by pairing).
    Allowlist,
    /// Anyone.
    Open,
    /// No direct messages are processed.
    Disabled,
}

/// Which session a direct message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum DmScope {
    /// The agent's main session, `agent:<id>:main`, shared by every sender.
    #[default]
    #[serde(rename = "main")]
    Main,
    /// A session per sender, `agent:<id>:direct:<userId>`.
    #[serde(rename = "per-peer")]
    PerPeer,
}

/// Which guild (server) channels the agent listens in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GroupPolicy {
    /// Only the guilds in `guilds` (and, where a guild lists channels, only those).
    #[default]
    Allowlist,
    /// Every guild the bot is in.
    Open,
    /// No guild messages are processed.
    Disabled,
}

/// `[channels.discord]`.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DiscordConfig {
    /// `false` keeps the block but starts no connection.
    pub enabled: bool,
    /// The bot token, inline. A config file that holds it must be 0600.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The environment variable that holds the token (default `DISCORD_BOT_TOKEN`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// The agent that answers.
    pub agent: String,
    pub dm_policy: DmPolicy,
    pub dm_scope: DmScope,
    /// User ids that may send direct messages under `allowlist` (`"*"`: anyone).
    pub allow_from: Vec<String>,
    pub group_policy: GroupPolicy,
    /// In guild channels, answer only messages that mention the bot (a guild or channel rule
    /// may override it).
    pub require_mention: bool,
    /// Guild allowlist by guild id.
    pub guilds: BTreeMap<String, DiscordGuild>,
}

impl Default for DiscordConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            token: None,
            token_env: None,
            agent: "main".into(),
            dm_policy: DmPolicy::default(),
            dm_scope: DmScope::default(),
            allow_from: Vec::new(),
            group_policy: GroupPolicy::default(),
            require_mention: true,
            guilds: BTreeMap::new(),
        }
    }
}

// By hand, so the token never reaches a log line through `{:?}`.
impl std::fmt::Debug for DiscordConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscordConfig")
            .field("enabled", &self.enabled)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_env", &self.token_env)
            .field("agent", &self.agent)
            .field("dm_policy", &self.dm_policy)
            .field("dm_scope", &self.dm_scope)
            .field("allow_from", &self.allow_from)
            .field("group_policy", &self.group_policy)
            .field("require_mention", &self.require_mention)
            .field("guilds", &self.guilds)
            .finish()
    }
}

/// `[channels.discord.guilds.<guildId>]`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DiscordGuild {
    /// Overrides `require_mention` for this guild.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_mention: Option<bool>,
    /// User ids that may talk to the agent here; empty means anyone in the guild.
    pub users: Vec<String>,
    /// When not empty, only these channels (by id); `"*"` matches every channel.
    pub channels: BTreeMap<String, DiscordChannelRule>,
}

/// `[channels.discord.guilds.<guildId>.channels.<channelId>]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DiscordChannelRule {
    /// `false` ignores the channel while keeping its entry.
    pub enabled: bool,
    /// Overrides the guild's `require_mention` for this channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_mention: Option<bool>,
    /// Overrides the guild's `users` for this channel when not empty.
    pub users: Vec<String>,
}

impl Default for DiscordChannelRule {
    fn default() -> Self {
        Self {
            enabled: true,
            require_mention: None,
            users: Vec::new(),
        }
    }
}

/// Where a resolved token came from, for messages that must not show the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `channels.discord.token` in the config file.
    Config,
    /// The named environment variable.
    Env(String),
}

impl DiscordConfig {
    /// The variable the token is read from when `token` is not set.
    pub fn token_env_name(&self) -> &str {
        self.token_env
            .as_deref()
            .unwrap_or(DEFAULT_DISCORD_TOKEN_ENV)
    }

    /// The bot token: inline, else from [`Self::token_env_name`] in `env`. `Err` says what to
    /// set, and never contains a token.
    pub fn resolve_token(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(String, TokenSource), String> {
        if let Some(t) = self
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            return Ok((t.to_owned(), TokenSource::Config));
        }
        let var = self.token_env_name();
        match env(var)
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
        {
            Some(t) => Ok((t, TokenSource::Env(var.to_owned()))),
            None => Err(format!(
                "no Discord bot token: set {var}, or channels.discord.token in a 0600 config file"
            )),
        }
    }

    /// The guild rule that applies to a message in `channel_id` (or its parent channel, for
    /// a thread) of `guild_id`, or `None` when the guild policy refuses it.
    pub fn guild_rule(
        &self,
        guild_id: &str,
        channel_id: &str,
        parent_id: Option<&str>,
    ) -> Option<ResolvedGuildRule> {
        let guild = self.guilds.get(guild_id);
        match (self.group_policy, guild) {
            (GroupPolicy::Disabled, _) | (GroupPolicy::Allowlist, None) => return None,
            _ => {}
        }
        let default_guild = DiscordGuild::default();
        let guild = guild.unwrap_or(&default_guild);
        let channel = if guild.channels.is_empty() {
            None
        } else {
            let found = [Some(channel_id), parent_id, Some("*")]
                .into_iter()
                .flatten()
                .find_map(|id| guild.channels.get(id));
            match found {
                Some(rule) if rule.enabled => Some(rule),
                _ => return None,
            }
        };
        let users = match channel {
            Some(c) if !c.users.is_empty() => c.users.clone(),
            _ => guild.users.clone(),
        };
        let require_mention = channel
            .and_then(|c| c.require_mention)
            .or(guild.require_mention)
            .unwrap_or(self.require_mention);
        Some(ResolvedGuildRule {
            require_mention,
            users,
        })
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.agent.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "channels.discord.agent",
                message: "name the agent that answers, for example \"main\"".into(),
            });
        }
        if let Some(var) = &self.token_env {
            let ok = !var.is_empty()
                && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !var.starts_with(|c: char| c.is_ascii_digit());
            if !ok {
                return Err(ConfigError::Invalid {
                    key: "channels.discord.token_env",
                    message: format!(
                        "{var:?} is not an environment variable name; use letters, digits \
                         and '_', for example DISCORD_BOT_TOKEN"
                    ),
                });
            }
        }
        if self.dm_policy == DmPolicy::Allowlist && self.allow_from.is_empty() {
            return Err(ConfigError::Invalid {
                key: "channels.discord.allow_from",
                message: "dm_policy = \"allowlist\" with an empty allow_from admits nobody; \
                          list user ids, or use dm_policy = \"pairing\""
                    .into(),
            });
        }
        let ids = self
            .allow_from
            .iter()
            .map(|id| ("channels.discord.allow_from", id));
        let guild_ids = self.guilds.iter().flat_map(|(gid, g)| {
            std::iter::once(("channels.discord.guilds", gid))
                .chain(g.users.iter().map(|u| ("channels.discord.guilds.users", u)))
                .chain(g.channels.iter().flat_map(|(cid, c)| {
                    std::iter::once(("channels.discord.guilds.channels", cid)).chain(
                        c.users
                            .iter()
                            .map(|u| ("channels.discord.guilds.channels.users", u)),
                    )
                }))
        });
        for (key, id) in ids.chain(guild_ids) {
            if id != "*" && (id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit())) {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!(
                        "{id:?} is not a Discord id; use the numeric id (Developer Mode → Copy \
                         ID) or \"*\""
                    ),
                });
            }
        }
        Ok(())
    }
}

/// What [`DiscordConfig::guild_rule`] decided for one guild channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedGuildRule {
    /// Answer only when the bot is mentioned.
    pub require_mention: bool,
    /// Senders allowed here; empty means anyone.
    pub users: Vec<String>,
}

impl ResolvedGuildRule {
    /// Whether `user_id` may talk to the agent here.
    pub fn admits(&self, user_id: &str) -> bool {
        self.users.is_empty() || self.users.iter().any(|u| u == "*" || u == user_id)
    }
}

impl ChannelsConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        match &self.discord {
            Some(d) => d.validate(),
            None => Ok(()),
        }
    }

    /// Whether the config holds a channel secret inline (so the file must be 0600).
    pub fn holds_secret(&self) -> bool {
        self.discord
            .as_ref()
            .is_some_and(|d| d.token.as_deref().is_some_and(|t| !t.trim().is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> DiscordConfig {
        let c: ChannelsConfig = toml::from_str(text).unwrap();
        c.discord.unwrap()
    }

    #[test]
    fn defaults_are_pairing_main_session_guild_allowlist_and_mentions() {
        let d = parse("[discord]\n");
        assert!(d.enabled);
        assert_eq!(d.agent, "main");
        assert_eq!(d.dm_policy, DmPolicy::Pairing);
        assert_eq!(d.dm_scope, DmScope::Main);
        assert_eq!(d.group_policy, GroupPolicy::Allowlist);
        assert!(d.require_mention);
        assert_eq!(d.guild_rule("1", "2", None), None);
    }

    #[test]
    fn the_token_comes_from_the_file_then_the_named_variable_and_is_never_in_debug_or_errors() {
        let mut d = parse("[discord]\ntoken = \"sekrit-token\"\n");
        let (t, src) = d.resolve_token(|_| None).unwrap();
        assert_eq!((t.as_str(), src), ("sekrit-token", TokenSource::Config));
        assert!(!format!("{d:?}").contains("sekrit"));
        d.token = None;
        let (t, src) = d
            .resolve_token(|k| (k == "DISCORD_BOT_TOKEN").then(|| "from-env".into()))
            .unwrap();
        assert_eq!(
            (t.as_str(), src),
            ("from-env", TokenSource::Env("DISCORD_BOT_TOKEN".into()))
        );
        d.token_env = Some("MY_BOT".into());
        let e = d
            .resolve_token(|k| (k == "DISCORD_BOT_TOKEN").then(|| "x".into()))
            .unwrap_err();
        assert!(e.contains("MY_BOT"), "{e}");
    }

    #[test]
    fn guild_channels_form_an_allowlist_with_overrides_and_threads_follow_their_parent() {
        let d = parse(
            r#"[discord.guilds."10"]
users = ["7"]
[discord.guilds."10".channels."20"]
require_mention = false
[discord.guilds."10".channels."30"]
enabled = false
[discord.guilds."11"]
"#,
        );
        let r = d.guild_rule("10", "20", None).unwrap();
        assert!(!r.require_mention);
        assert!(r.admits("7") && !r.admits("8"));
        assert_eq!(d.guild_rule("10", "30", None), None);
        assert_eq!(d.guild_rule("10", "40", None), None);
        assert_eq!(
            d.guild_rule("10", "999", Some("20"))
                .map(|r| r.require_mention),
            Some(false)
        );
        let open_guild = d.guild_rule("11", "5", None).unwrap();
        assert!(open_guild.require_mention && open_guild.admits("anyone"));
        assert_eq!(d.guild_rule("12", "5", None), None);
    }

    #[test]
    fn validation_names_the_key_and_the_fix() {
        for (text, key) in [
            (
                "[discord]\ndm_policy = \"allowlist\"\n",
                "channels.discord.allow_from",
            ),
            (
                "[discord]\nallow_from = [\"@bob\"]\n",
                "channels.discord.allow_from",
            ),
            (
                "[discord]\ntoken_env = \"1-BAD\"\n",
                "channels.discord.token_env",
            ),
            ("[discord]\nagent = \"\"\n", "channels.discord.agent"),
            ("[discord.guilds.general]\n", "channels.discord.guilds"),
        ] {
            match parse(text).validate() {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(toml::from_str::<ChannelsConfig>("[discord]\ndm_policy = \"maybe\"\n").is_err());
    }
}
