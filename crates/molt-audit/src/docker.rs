//! Ports Docker publishes, and why a host firewall does not see them.
//!
//! Docker publishes a port with a DNAT rule in the nat table's `DOCKER` chain (reached from
//! `PREROUTING`) and an ACCEPT in the filter table's `DOCKER` chain (reached from `FORWARD`).
//! The traffic is forwarded to the container and never crosses the `INPUT` chain, where ufw
//! and most host firewalls filter. So a port published on `0.0.0.0` is reachable from
//! anywhere whatever ufw says; only rules in `DOCKER-USER` (which Docker jumps to first from
//! `FORWARD`) or binding the port to `127.0.0.1` stop that.
//!
//! Sources:
//! - [`parse_ps`]: `docker ps --format '{{.Names}}\t{{.Ports}}'` (or just `{{.Ports}}`), e.g.
//!   `web\t0.0.0.0:8080->80/tcp, :::8080->80/tcp`;
//! - [`from_iptables`]: the `DOCKER` and `DOCKER-USER` chains of `iptables -S`,
//!   `iptables -t nat -S` or `iptables-save`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

use crate::findings::{Finding, ParseNotes, Severity, ids};
use crate::firewall::iptables::IptablesRules;
use crate::proc_net::is_loopback;
use crate::text::parse_port_range;

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Proto {
    /// Parses `tcp`, `udp`, `sctp`.
    pub fn parse(s: &str) -> Option<Proto> {
        match s {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            "sctp" => Some(Proto::Sctp),
            _ => None,
        }
    }

    /// `"tcp"`, `"udp"`, `"sctp"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// An inclusive port range; `start == end` for one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port.
    pub end: u16,
}

impl PortRange {
    fn parse(s: &str) -> Option<PortRange> {
        parse_port_range(s).map(|(start, end)| PortRange { start, end })
    }

    /// True when `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }

    /// `8080`, or `8000-8002` for a range (Docker's spelling).
    pub fn dashed(&self) -> String {
        if self.start == self.end {
            self.start.to_string()
        } else {
            format!("{}-{}", self.start, self.end)
        }
    }

    /// `8080`, or `8000:8002` for a range (iptables' spelling).
    pub fn coloned(&self) -> String {
        if self.start == self.end {
            self.start.to_string()
        } else {
            format!("{}:{}", self.start, self.end)
        }
    }
}

/// One published mapping from `docker ps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishedPort {
    /// The container's name, when the line had one.
    pub container: Option<String>,
    /// The host address the port is bound to (`0.0.0.0`, `::`, `127.0.0.1`).
    pub host_ip: IpAddr,
    /// Host port(s).
    pub host_ports: PortRange,
    /// Container port(s).
    pub container_ports: PortRange,
    /// Protocol.
    pub proto: Proto,
}

/// Parsed `docker ps` port columns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DockerPs {
    /// Published mappings, in order.
    pub published: Vec<PublishedPort>,
    /// Ports a container exposes without publishing them (`80/tcp`): not reachable from
    /// outside; counted only.
    pub unpublished: usize,
    /// Entries that could not be read.
    pub notes: ParseNotes,
}

/// Parses `docker ps --format '{{.Names}}\t{{.Ports}}'` output, one container per line; the
/// name and tab are optional. Never fails.
pub fn parse_ps(text: &str) -> DockerPs {
    let mut out = DockerPs::default();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let (name, ports) = match raw.split_once('\t') {
            Some((name, ports)) => (Some(name.trim()).filter(|s| !s.is_empty()), ports),
            None => (None, raw),
        };
        for entry in ports.split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            match parse_entry(entry) {
                Some(Entry::Published {
                    host_ip,
                    host_ports,
                    container_ports,
                    proto,
                }) => out.published.push(PublishedPort {
                    container: name.map(str::to_owned),
                    host_ip,
                    host_ports,
                    container_ports,
                    proto,
                }),
                Some(Entry::Unpublished) => out.unpublished += 1,
                None => out.notes.push(None, n, "not a port mapping", entry),
            }
        }
    }
    out
}

enum Entry {
    Published {
        host_ip: IpAddr,
        host_ports: PortRange,
        container_ports: PortRange,
        proto: Proto,
    },
    Unpublished,
}

/// `0.0.0.0:8080->80/tcp`, `:::8080->80/tcp`, `[::]:8080->80/tcp`,
/// `0.0.0.0:8000-8002->8000-8002/tcp`, `80/tcp`.
fn parse_entry(entry: &str) -> Option<Entry> {
    let (host, container) = match entry.split_once("->") {
        Some((h, c)) => (Some(h), c),
        None => (None, entry),
    };
    let (cports, proto) = container.split_once('/')?;
    let proto = Proto::parse(proto.trim())?;
    let container_ports = PortRange::parse(cports)?;
    let Some(host) = host else {
        return Some(Entry::Unpublished);
    };
    let (ip, hports) = match host.rsplit_once(':') {
        Some((ip, p)) => (ip, p),
        None => ("", host),
    };
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    let host_ip = if ip.is_empty() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        ip.parse().ok()?
    };
    Some(Entry::Published {
        host_ip,
        host_ports: PortRange::parse(hports)?,
        container_ports,
        proto,
    })
}

/// A DNAT rule of the nat `DOCKER` chain: a published host port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DockerDnat {
    /// The `-d` address the rule is limited to (`127.0.0.1/32`), if any.
    pub host_address: Option<String>,
    /// Host port(s).
    pub host_ports: PortRange,
    /// Protocol.
    pub proto: Proto,
    /// `--to-destination`, e.g. `172.17.0.2:80`.
    pub to: String,
}

impl DockerDnat {
    /// True unless the rule is limited to a loopback address.
    pub fn is_exposed(&self) -> bool {
        match &self.host_address {
            None => true,
            Some(a) => {
                let ip = a.split('/').next().unwrap_or(a);
                ip.parse::<IpAddr>().map_or(true, |ip| !is_loopback(ip))
            }
        }
    }
}

/// An ACCEPT rule of the filter `DOCKER` chain: traffic let through to a container port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DockerAccept {
    /// The container address (`-d`), e.g. `172.17.0.2/32`.
    pub container_address: Option<String>,
    /// Container port(s).
    pub container_ports: PortRange,
    /// Protocol.
    pub proto: Proto,
}

/// What the iptables rules say about Docker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DockerIptables {
    /// A `DOCKER` chain exists (`-N DOCKER`, `:DOCKER -`, or rules in it).
    pub docker_chain: bool,
    /// DNAT rules (nat table): the published host ports.
    pub dnat: Vec<DockerDnat>,
    /// ACCEPT rules (filter table): container ports reachable through the forward path.
    pub accepts: Vec<DockerAccept>,
    /// `DOCKER-USER` has DROP or REJECT rules: someone filters forwarded traffic there.
    pub docker_user_filters: bool,
}

/// Reads the Docker chains out of parsed iptables rules (filter, nat, or both).
pub fn from_iptables(rules: &IptablesRules) -> DockerIptables {
    let mut out = DockerIptables {
        docker_chain: rules.chains.iter().any(|c| c == "DOCKER"),
        ..DockerIptables::default()
    };
    for rule in &rules.rules {
        match rule.chain.as_str() {
            "DOCKER" => {
                out.docker_chain = true;
                let proto = rule.protocol().and_then(Proto::parse);
                let ports = rule.dports();
                let (Some(proto), Some(&(start, end))) = (proto, ports.first()) else {
                    continue;
                };
                let range = PortRange { start, end };
                match rule.target() {
                    Some("DNAT") => out.dnat.push(DockerDnat {
                        host_address: rule.destination().map(str::to_owned),
                        host_ports: range,
                        proto,
                        to: rule
                            .option("--to-destination")
                            .map(|o| o.0.to_owned())
                            .unwrap_or_default(),
                    }),
                    Some("ACCEPT") => out.accepts.push(DockerAccept {
                        container_address: rule.destination().map(str::to_owned),
                        container_ports: range,
                        proto,
                    }),
                    _ => {}
                }
            }
            "DOCKER-USER" => {
                if matches!(rule.target(), Some("DROP" | "REJECT")) {
                    out.docker_user_filters = true;
                }
            }
            _ => {}
        }
    }
    out
}

/// A port Docker makes reachable from other hosts, merged from every source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExposedPort {
    /// Protocol.
    pub proto: Proto,
    /// Host port(s); `None` when only the filter table's ACCEPT rule was seen (the host side
    /// lives in the nat table).
    pub host_ports: Option<PortRange>,
    /// Container port(s), when known.
    pub container_ports: Option<PortRange>,
    /// Host addresses it is bound to (`0.0.0.0`, `::`), as written.
    pub host_addresses: Vec<String>,
    /// Containers publishing it (names, or the DNAT/ACCEPT destination address).
    pub containers: Vec<String>,
}

/// The ports Docker exposes beyond loopback, from `docker ps` and/or iptables. Entries bound
/// to loopback are left out. The filter table's ACCEPT rules are used only when neither
/// `docker ps` nor the nat table said anything (they name container ports, not host ports).
pub fn exposed_ports(ps: Option<&DockerPs>, ipt: Option<&DockerIptables>) -> Vec<ExposedPort> {
    let mut merged: BTreeMap<(Proto, PortRange), ExposedPort> = BTreeMap::new();
    let mut add = |proto: Proto,
                   host: PortRange,
                   container: Option<PortRange>,
                   address: String,
                   who: Option<String>| {
        let e = merged.entry((proto, host)).or_insert_with(|| ExposedPort {
            proto,
            host_ports: Some(host),
            container_ports: container,
            host_addresses: Vec::new(),
            containers: Vec::new(),
        });
        if e.container_ports.is_none() {
            e.container_ports = container;
        }
        if !e.host_addresses.contains(&address) {
            e.host_addresses.push(address);
        }
        if let Some(who) = who
            && !e.containers.contains(&who)
        {
            e.containers.push(who);
        }
    };
    for p in ps.map(|p| p.published.as_slice()).unwrap_or(&[]) {
        if !is_loopback(p.host_ip) {
            add(
                p.proto,
                p.host_ports,
                Some(p.container_ports),
                p.host_ip.to_string(),
                p.container.clone(),
            );
        }
    }
    let mut any_nat = false;
    for d in ipt.map(|i| i.dnat.as_slice()).unwrap_or(&[]) {
        any_nat = true;
        if d.is_exposed() {
            let container = d.to.rsplit_once(':').and_then(|(_, p)| PortRange::parse(p));
            add(
                d.proto,
                d.host_ports,
                container,
                d.host_address
                    .clone()
                    .unwrap_or_else(|| "0.0.0.0/0".to_owned()),
                (!d.to.is_empty()).then(|| d.to.clone()),
            );
        }
    }
    let mut out: Vec<ExposedPort> = merged.into_values().collect();
    let have_ps = ps.is_some_and(|p| !p.published.is_empty());
    if !have_ps && !any_nat {
        for a in ipt.map(|i| i.accepts.as_slice()).unwrap_or(&[]) {
            out.push(ExposedPort {
                proto: a.proto,
                host_ports: None,
                container_ports: Some(a.container_ports),
                host_addresses: Vec::new(),
                containers: a.container_address.iter().cloned().collect(),
            });
        }
    }
    out
}

/// One finding per exposed port.
///
/// With `firewall_filters_inbound` (ufw or another INPUT firewall is on) the port bypasses it:
/// [`ids::DOCKER_BYPASS`]. Without, it is simply published: [`ids::DOCKER_PUBLISHED`], with the
/// warning that enabling ufw will not cover it. `docker_user_filters` (DOCKER-USER already has
/// DROP rules) lowers the severity to info, since those rules may cover it.
///
/// The remedy inserts a DROP for the port at the top of `DOCKER-USER`, matched on the
/// original destination port (`conntrack --ctorigdstport`), which Docker leaves alone. It
/// does not survive a reboot; the lasting fix is publishing on `127.0.0.1`.
pub fn findings(
    ports: &[ExposedPort],
    firewall_filters_inbound: bool,
    docker_user_filters: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in ports {
        let proto = p.proto.as_str();
        let what = match (p.host_ports, p.container_ports) {
            (Some(h), _) => format!("port {}/{proto}", h.dashed()),
            (None, Some(c)) => format!("container port {}/{proto}", c.dashed()),
            (None, None) => format!("a {proto} port"),
        };
        let who = if p.containers.is_empty() {
            String::new()
        } else {
            format!(" for {}", p.containers.join(", "))
        };
        let (id, title) = if firewall_filters_inbound {
            (
                ids::DOCKER_BYPASS,
                format!("Docker publishes {what}{who} around the firewall"),
            )
        } else {
            (
                ids::DOCKER_PUBLISHED,
                format!("Docker publishes {what}{who} on every interface"),
            )
        };
        let severity = if docker_user_filters {
            Severity::Info
        } else {
            Severity::Warn
        };
        let mut detail = format!(
            "Docker forwards {what} (bound to {}) to a container through its own DOCKER chains, \
             before the INPUT chain where ufw filters, so it is reachable from other hosts{}.",
            if p.host_addresses.is_empty() {
                "all addresses".to_owned()
            } else {
                p.host_addresses.join(", ")
            },
            if firewall_filters_inbound {
                " even though the firewall is on"
            } else {
                "; enabling ufw will not change that"
            }
        );
        if docker_user_filters {
            detail.push_str(
                " DOCKER-USER already has DROP/REJECT rules; check that they cover this port.",
            );
        }
        detail.push_str(
            " Lasting fix: publish it on loopback only (`-p 127.0.0.1:HOST:CONTAINER`, or \
             \"127.0.0.1:HOST:CONTAINER\" under `ports:` in compose) and recreate the container. \
             The commands below block it now (until reboot): forwarded traffic from other hosts \
             and from other containers calling the host's address; connections from this host \
             are not affected.",
        );
        let mut remedy = Vec::new();
        let rule = match (p.host_ports, p.container_ports) {
            // Matched on the port the client asked for, which DNAT does not change in conntrack.
            (Some(h), _) => Some(format!(
                "-I DOCKER-USER -p {proto} -m conntrack --ctorigdstport {} --ctdir ORIGINAL -j DROP",
                h.coloned()
            )),
            // Only the filter table was seen: after DNAT the packet is addressed to the container.
            (None, Some(c)) => Some(format!(
                "-I DOCKER-USER{} -p {proto} -m {proto} --dport {} -j DROP",
                p.containers
                    .first()
                    .map(|a| format!(" -d {a}"))
                    .unwrap_or_default(),
                c.coloned()
            )),
            (None, None) => None,
        };
        if let Some(rule) = rule {
            remedy.push(format!("iptables {rule}"));
            if p.host_addresses.iter().any(|a| a.contains(':')) {
                remedy.push(format!(
                    "ip6tables -L DOCKER-USER -n >/dev/null 2>&1 && ip6tables {rule}"
                ));
            }
        }
        remedy.push("docker ps --format '{{.Names}}\t{{.Ports}}'".to_owned());
        out.push(Finding::new(id, severity, title, detail).with_remedy(remedy));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries() {
        let ps = parse_ps(
            "web\t0.0.0.0:8080->80/tcp, :::8080->80/tcp, [::]:9090->90/udp, 5000/tcp, 127.0.0.1:5432->5432/tcp, 0.0.0.0:8000-8002->8000-8002/tcp",
        );
        assert!(ps.notes.is_empty(), "{:?}", ps.notes);
        assert_eq!(ps.published.len(), 5);
        assert_eq!(ps.unpublished, 1);
        assert_eq!(ps.published[1].host_ip, "::".parse::<IpAddr>().unwrap());
        assert_eq!(ps.published[2].proto, Proto::Udp);
        assert_eq!(
            ps.published[4].host_ports,
            PortRange {
                start: 8000,
                end: 8002
            }
        );
        let exposed = exposed_ports(Some(&ps), None);
        // 8080 (v4 and v6 merged), 9090/udp, 8000-8002; not 5432 (loopback).
        assert_eq!(exposed.len(), 3);
        let e8080 = exposed
            .iter()
            .find(|e| {
                e.host_ports
                    == Some(PortRange {
                        start: 8080,
                        end: 8080,
                    })
            })
            .unwrap();
        assert_eq!(e8080.host_addresses, ["0.0.0.0", "::"]);
        assert_eq!(e8080.containers, ["web"]);
    }

    #[test]
    fn bad_entries_are_noted() {
        let ps = parse_ps("x\t0.0.0.0:99999->80/tcp, nonsense, 1.2.3.4:80->80/xyz");
        assert!(ps.published.is_empty());
        assert_eq!(ps.notes.total, 3);
    }
}
