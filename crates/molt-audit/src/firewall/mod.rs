//! Inbound firewall state from ufw, nftables and iptables, read-only.
//!
//! Each tool has its parser ([`ufw`], [`nft`], [`iptables`]); [`assess`] combines whatever was
//! available into a verdict per address family: inbound traffic is *filtered* when any source
//! shows a default drop (netfilter drops a packet if any base chain on the hook drops it),
//! *open* ("no firewall / default-accept inbound") when sources were read and none drops, and
//! *unknown* when nothing could be read. [`Assessment::findings`] turns that into findings
//! whose ufw remedy allows SSH before it enables anything.

pub mod iptables;
pub mod nft;
pub mod ufw;

use serde::Serialize;

use crate::findings::{Finding, Severity, ids};
use iptables::IptablesRules;
use nft::NftRuleset;
use ufw::{UfwState, UfwStatus};

/// A chain or default policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Accept (ufw `allow`).
    Accept,
    /// Drop (ufw `deny`).
    Drop,
    /// Reject (ufw `reject`).
    Reject,
    /// Anything else, as written.
    Other(String),
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// The inbound verdict for one family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Inbound {
    /// Some source drops inbound traffic by default.
    Filtered {
        /// Which sources (`"ufw"`, `"nftables"`, `"iptables"`, `"ip6tables"`).
        by: Vec<String>,
    },
    /// Sources were read and none drops by default.
    Open {
        /// What each source showed (`"ufw is inactive"`, `"iptables INPUT policy ACCEPT"`).
        evidence: Vec<String>,
    },
    /// No source could be read.
    Unknown,
}

impl Inbound {
    /// True for [`Inbound::Filtered`].
    pub fn is_filtered(&self) -> bool {
        matches!(self, Inbound::Filtered { .. })
    }

    /// True for [`Inbound::Open`].
    pub fn is_open(&self) -> bool {
        matches!(self, Inbound::Open { .. })
    }
}

/// The parsed outputs available; `None` for a tool that is missing or could not be run.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirewallInputs<'a> {
    /// `ufw status verbose`.
    pub ufw: Option<&'a UfwStatus>,
    /// `nft list ruleset`.
    pub nft: Option<&'a NftRuleset>,
    /// `iptables -S` (filter table).
    pub iptables: Option<&'a IptablesRules>,
    /// `ip6tables -S` (filter table).
    pub ip6tables: Option<&'a IptablesRules>,
}

/// What the remedies must keep reachable, and what is exposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FirewallContext {
    /// sshd's ports (from [`crate::sshd::SshdSettings::ports`]); allowed before anything is
    /// enabled. Default `[22]`.
    pub ssh_ports: Vec<u16>,
    /// Other TCP ports that must stay reachable (a gateway deliberately bound to the network).
    pub keep_open: Vec<u16>,
    /// TCP ports listening on non-loopback addresses (from [`crate::proc_net`]).
    pub exposed_ports: Vec<u16>,
}

impl Default for FirewallContext {
    fn default() -> Self {
        FirewallContext {
            ssh_ports: vec![22],
            keep_open: Vec::new(),
            exposed_ports: Vec::new(),
        }
    }
}

/// The combined verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assessment {
    /// IPv4 inbound.
    pub v4: Inbound,
    /// IPv6 inbound.
    pub v6: Inbound,
    /// ufw's state, when ufw was read.
    pub ufw: Option<UfwState>,
    /// ufw is active and allows every SSH port (`None` when ufw is not active or not read).
    pub ufw_allows_ssh: Option<bool>,
    /// The SSH ports ufw does not allow, when ufw is active.
    pub ufw_missing_ssh_ports: Vec<u16>,
}

/// Combines the sources into a verdict per family.
pub fn assess(inputs: &FirewallInputs<'_>, ctx: &FirewallContext) -> Assessment {
    let verdict = |family: Family| {
        let mut by = Vec::new();
        let mut evidence = Vec::new();
        if let Some(ufw) = inputs.ufw {
            match ufw.state {
                UfwState::Active if ufw.filters_inbound() => by.push("ufw".to_owned()),
                UfwState::Active => {
                    evidence.push("ufw is active but allows incoming by default".to_owned())
                }
                UfwState::Inactive => evidence.push("ufw is inactive".to_owned()),
                UfwState::Unknown => {}
            }
        }
        if let Some(nft) = inputs.nft {
            match nft.filters_inbound(family) {
                Some(true) => by.push("nftables".to_owned()),
                Some(false) => {
                    let chains = nft
                        .input_chains()
                        .filter(|c| nft::family_covers(&c.family, family))
                        .count();
                    evidence.push(if chains == 0 {
                        "nftables has no input chain".to_owned()
                    } else {
                        format!("nftables: none of {chains} input chain(s) drops by default")
                    });
                }
                None => {}
            }
        }
        let ipt = match family {
            Family::V4 => inputs.iptables.map(|r| ("iptables", r)),
            Family::V6 => inputs.ip6tables.map(|r| ("ip6tables", r)),
        };
        if let Some((name, rules)) = ipt {
            match rules.filters_inbound() {
                Some(true) => by.push(name.to_owned()),
                Some(false) => evidence.push(format!(
                    "{name} INPUT policy {} and no final DROP/REJECT rule",
                    rules
                        .policies
                        .get("INPUT")
                        .map(String::as_str)
                        .unwrap_or("ACCEPT")
                )),
                None => {}
            }
        }
        if !by.is_empty() {
            Inbound::Filtered { by }
        } else if !evidence.is_empty() {
            Inbound::Open { evidence }
        } else {
            Inbound::Unknown
        }
    };
    let (ufw_allows_ssh, ufw_missing_ssh_ports) = match inputs.ufw {
        Some(u) if u.state == UfwState::Active => {
            let missing: Vec<u16> = ctx
                .ssh_ports
                .iter()
                .copied()
                .filter(|&p| !u.allows_tcp_port(p))
                .collect();
            (Some(missing.is_empty()), missing)
        }
        _ => (None, Vec::new()),
    };
    Assessment {
        v4: verdict(Family::V4),
        v6: verdict(Family::V6),
        ufw: inputs.ufw.map(|u| u.state),
        ufw_allows_ssh,
        ufw_missing_ssh_ports,
    }
}

impl Assessment {
    /// True when IPv4 inbound traffic is filtered.
    pub fn filters_inbound(&self) -> bool {
        self.v4.is_filtered()
    }

    /// The ufw commands that turn on default-deny inbound while keeping SSH (and
    /// `ctx.keep_open`) reachable: allow rules first, then the default, then `ufw enable`.
    /// Installs ufw first when it was not read.
    pub fn ufw_remedy(&self, ctx: &FirewallContext) -> Vec<String> {
        let mut out = Vec::new();
        if self.ufw.is_none() {
            out.push("command -v ufw || apt-get install -y ufw".to_owned());
        }
        let mut ports: Vec<u16> = ctx.ssh_ports.clone();
        if ports.is_empty() {
            ports.push(22);
        }
        for p in &ctx.keep_open {
            if !ports.contains(p) {
                ports.push(*p);
            }
        }
        for p in ports {
            out.push(format!("ufw allow {p}/tcp"));
        }
        out.push("ufw default deny incoming".to_owned());
        out.push("ufw default allow outgoing".to_owned());
        out.push("ufw enable".to_owned());
        out.push("ufw status verbose".to_owned());
        out
    }

    /// The findings: [`ids::FIREWALL_NONE`] (critical when ports other than SSH are exposed),
    /// [`ids::FIREWALL_IPV6_OPEN`], [`ids::FIREWALL_SSH_NOT_ALLOWED`] or
    /// [`ids::FIREWALL_UNKNOWN`].
    pub fn findings(&self, ctx: &FirewallContext) -> Vec<Finding> {
        let mut out = Vec::new();
        let others: Vec<u16> = {
            let mut v: Vec<u16> = ctx
                .exposed_ports
                .iter()
                .copied()
                .filter(|p| !ctx.ssh_ports.contains(p))
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let ssh_list = match ctx.ssh_ports.as_slice() {
            [] => "port 22".to_owned(),
            [one] => format!("port {one}"),
            many => format!("ports {}", join_ports(many)),
        };
        match (&self.v4, &self.v6) {
            (Inbound::Open { evidence }, _) => {
                let severity = if others.is_empty() {
                    Severity::Warn
                } else {
                    Severity::Critical
                };
                let mut detail = format!(
                    "Inbound traffic is accepted by default: {}.",
                    evidence.join("; ")
                );
                if others.is_empty() {
                    detail.push_str(" Only SSH listens on the network now, but anything that binds a public address later is reachable at once.");
                } else {
                    detail.push_str(&format!(
                        " These TCP ports listen on the network and are reachable from anywhere: {}.",
                        join_ports(&others)
                    ));
                }
                detail.push_str(&format!(
                    " The commands allow SSH ({ssh_list}) before turning on default-deny, so \
                     the current session and new logins keep working. Ports published by Docker \
                     are not covered by ufw (see the Docker findings)."
                ));
                out.push(
                    Finding::new(
                        ids::FIREWALL_NONE,
                        severity,
                        "no firewall: inbound traffic is accepted by default",
                        detail,
                    )
                    .with_remedy(self.ufw_remedy(ctx)),
                );
            }
            (v4 @ (Inbound::Filtered { .. } | Inbound::Unknown), Inbound::Open { evidence }) => {
                let v4 = match v4 {
                    Inbound::Filtered { by } => format!("IPv4 is filtered by {}", by.join(", ")),
                    _ => "IPv4 could not be checked".to_owned(),
                };
                out.push(Finding::new(
                    ids::FIREWALL_IPV6_OPEN,
                    Severity::Warn,
                    "IPv6 inbound traffic is not filtered",
                    format!(
                        "{v4}, but IPv6 is accepted by default: {}. Services bound to `::` are \
                         reachable over IPv6. Add the same default-deny for IPv6 (an `inet` \
                         table in nftables, ip6tables rules, or IPV6=yes in /etc/default/ufw), \
                         allowing SSH first.",
                        evidence.join("; ")
                    ),
                ));
            }
            (Inbound::Unknown, Inbound::Unknown) => {
                out.push(
                    Finding::new(
                        ids::FIREWALL_UNKNOWN,
                        Severity::Info,
                        "could not read the firewall state",
                        "Neither ufw, nftables nor iptables could be read (not installed, or not \
                         run as root). Run the audit as root, or check by hand.",
                    )
                    .with_remedy([
                        "ufw status verbose",
                        "nft list ruleset",
                        "iptables -S",
                    ]),
                );
            }
            _ => {}
        }
        if !self.ufw_missing_ssh_ports.is_empty() {
            let ports = join_ports(&self.ufw_missing_ssh_ports);
            out.push(
                Finding::new(
                    ids::FIREWALL_SSH_NOT_ALLOWED,
                    Severity::Warn,
                    format!("ufw is active but has no rule allowing SSH (port {ports})"),
                    "Established sessions survive, but new SSH logins may be refused (unless \
                     /etc/ufw/before.rules or a source-restricted rule lets them in). Allow SSH \
                     explicitly.",
                )
                .with_remedy(
                    self.ufw_missing_ssh_ports
                        .iter()
                        .map(|p| format!("ufw allow {p}/tcp")),
                ),
            );
        }
        out
    }
}

fn join_ports(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
