//! The parser foundation of `molt security audit`: pure functions from the text of system
//! files and tool outputs to typed results and ranked [`Finding`]s.
//!
//! Nothing here does I/O, spawns processes or reads the clock; the caller gathers the text
//! (`/proc/net/tcp`, `sshd -T`, `ufw status verbose`, `nft list ruleset`, `iptables -S`,
//! `docker ps`) and passes it in, which keeps every parser testable on fixtures and fuzzable.
//! Bad input never panics: unusable lines are skipped and recorded as [`ParseNote`]s, which
//! become a finding of their own.
//!
//! - [`proc_net`]: TCP sockets from `/proc/net/tcp` and `tcp6`; listeners; loopback vs exposed.
//! - [`inode_owner`]: socket inodes to pids through the `socket:[N]` fd links.
//! - [`sshd`]: effective password and root-login settings from `sshd -T` or the config files
//!   and their includes.
//! - [`firewall`]: ufw, nftables and iptables; "no firewall / default-accept inbound".
//! - [`docker`]: published ports, the `DOCKER` chain, and ports that bypass the firewall.
//! - [`fail2ban`]: the jails `fail2ban-client status` lists (is sshd guarded).
//! - [`accounts`]: local accounts from `/etc/passwd` (who else can reach loopback).
//! - [`agents`]: token strength, and the auth an OpenClaw config (JSON5) sets up.
//! - [`findings`]: the [`Finding`] type, severities, parse notes.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]
#![warn(missing_docs)]

pub mod accounts;
pub mod agents;
pub mod docker;
pub mod fail2ban;
pub mod findings;
pub mod firewall;
pub mod inode_owner;
pub mod proc_net;
pub mod sshd;
mod text;

pub use findings::{Finding, ParseNote, ParseNotes, Severity};
pub use text::split_args;
