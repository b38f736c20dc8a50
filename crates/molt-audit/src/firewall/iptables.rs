//! `iptables -S` / `ip6tables -S` (any table), and `iptables-save` output.
//!
//! ```text
//! -P INPUT ACCEPT
//! -N DOCKER
//! -A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
//! ```
//!
//! `iptables-save` adds `*table` headers, `:CHAIN POLICY [packets:bytes]` lines and `COMMIT`;
//! those are understood too, and rules then carry their table.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::findings::ParseNotes;
use crate::text::{parse_port_range, split_args};

/// One `-A` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IptRule {
    /// The table, when known (from an `iptables-save` `*table` header).
    pub table: Option<String>,
    /// The chain it is appended to.
    pub chain: String,
    /// The words after the chain name, unquoted: `["-p", "tcp", "--dport", "80", "-j", "ACCEPT"]`.
    pub args: Vec<String>,
}

impl IptRule {
    /// The value after option `name` (`"-j"`, `"--dport"`), and whether it was negated with a
    /// preceding `!`.
    pub fn option(&self, name: &str) -> Option<(&str, bool)> {
        let at = self.args.iter().position(|a| a == name)?;
        let value = self.args.get(at + 1)?;
        let negated = at > 0 && self.args.get(at - 1).is_some_and(|a| a == "!");
        Some((value.as_str(), negated))
    }

    /// The target (`-j`), e.g. `ACCEPT`, `DROP`, `DNAT`, `DOCKER`.
    pub fn target(&self) -> Option<&str> {
        self.option("-j")
            .or_else(|| self.option("--jump"))
            .map(|o| o.0)
    }

    /// The protocol (`-p`), unless negated.
    pub fn protocol(&self) -> Option<&str> {
        self.option("-p")
            .or_else(|| self.option("--protocol"))
            .filter(|o| !o.1)
            .map(|o| o.0)
    }

    /// The destination ports: `--dport N`, `--dport A:B`, or `--dports A,B:C` (multiport),
    /// unless negated.
    pub fn dports(&self) -> Vec<(u16, u16)> {
        if let Some((v, false)) = self
            .option("--dport")
            .or_else(|| self.option("--destination-port"))
        {
            return parse_port_range(v).into_iter().collect();
        }
        if let Some((v, false)) = self.option("--dports") {
            return v.split(',').filter_map(parse_port_range).collect();
        }
        Vec::new()
    }

    /// The destination address (`-d`), unless negated, as written (`172.17.0.2/32`).
    pub fn destination(&self) -> Option<&str> {
        self.option("-d")
            .or_else(|| self.option("--destination"))
            .filter(|o| !o.1)
            .map(|o| o.0)
    }

    /// True when the rule matches every packet: only a target (and its options, like
    /// `--reject-with`), comments and counters.
    pub fn is_unconditional(&self) -> bool {
        let mut it = self.args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "-j" | "--jump" | "--reject-with" | "--comment" | "-c" => {
                    it.next();
                }
                "-m" => {
                    if it.next().is_some_and(|m| m != "comment") {
                        return false;
                    }
                }
                _ => return false,
            }
        }
        true
    }
}

/// The parsed rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IptablesRules {
    /// Built-in chain → policy (`ACCEPT`/`DROP`), from `-P` (or `:CHAIN POLICY`) lines.
    pub policies: BTreeMap<String, String>,
    /// User chains, from `-N` (or `:CHAIN -`) lines, in order.
    pub chains: Vec<String>,
    /// The rules, in order.
    pub rules: Vec<IptRule>,
    /// The tables seen in `*table` headers (`iptables-save`).
    pub tables: Vec<String>,
    /// Lines that could not be used.
    pub notes: ParseNotes,
}

impl IptablesRules {
    /// The rules of `chain`, in order.
    pub fn chain_rules<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a IptRule> {
        self.rules.iter().filter(move |r| r.chain == chain)
    }

    /// True when the text is (or includes) the filter table: `iptables-save` with `*filter`,
    /// or `-S` output with INPUT and FORWARD policies and no PREROUTING one (nat, mangle and
    /// raw have PREROUTING).
    pub fn has_filter_table(&self) -> bool {
        if !self.tables.is_empty() {
            return self.tables.iter().any(|t| t == "filter");
        }
        self.policies.contains_key("INPUT")
            && self.policies.contains_key("FORWARD")
            && !self.policies.contains_key("PREROUTING")
    }

    /// Whether the filter table's INPUT chain filters inbound traffic: `Some(true)` for a
    /// DROP policy or a last INPUT rule that drops or rejects unconditionally, `Some(false)`
    /// otherwise, `None` when the text holds no filter table (an error, or another table).
    pub fn filters_inbound(&self) -> Option<bool> {
        if !self.has_filter_table() {
            return None;
        }
        let in_filter = |r: &&IptRule| r.table.as_deref().is_none_or(|t| t == "filter");
        let policy_drops = self
            .policies
            .get("INPUT")
            .is_some_and(|p| p == "DROP" || p == "REJECT");
        let last_drops = self
            .chain_rules("INPUT")
            .filter(in_filter)
            .last()
            .is_some_and(|r| matches!(r.target(), Some("DROP" | "REJECT")) && r.is_unconditional());
        Some(policy_drops || last_drops)
    }
}

/// Parses `iptables -S`, `ip6tables -S` or `iptables-save` output. Never fails.
pub fn parse(text: &str) -> IptablesRules {
    let mut out = IptablesRules::default();
    let mut table: Option<String> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line == "COMMIT" {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            let name = name.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                out.notes.push(None, n, "bad table header", raw);
                continue;
            }
            table = Some(name.to_owned());
            out.tables.push(name.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix(':') {
            // `:INPUT ACCEPT [0:0]` or `:DOCKER - [0:0]`
            let mut words = rest.split_ascii_whitespace();
            match (words.next(), words.next()) {
                (Some(chain), Some("-")) => out.chains.push(chain.to_owned()),
                (Some(chain), Some(policy)) => {
                    if table.as_deref().is_none_or(|t| t == "filter") {
                        out.policies.insert(chain.to_owned(), policy.to_owned());
                    }
                }
                _ => out.notes.push(None, n, "bad chain declaration", raw),
            }
            continue;
        }
        let Some(words) = split_args(line) else {
            out.notes.push(None, n, "unbalanced quotes", raw);
            continue;
        };
        match words.as_slice() {
            [flag, chain, policy] if flag == "-P" => {
                out.policies.insert(chain.clone(), policy.clone());
            }
            [flag, chain] if flag == "-N" => out.chains.push(chain.clone()),
            [flag, chain, args @ ..] if flag == "-A" && !args.is_empty() => {
                out.rules.push(IptRule {
                    table: table.clone(),
                    chain: chain.clone(),
                    args: args.to_vec(),
                });
            }
            _ => out.notes.push(None, n, "not an -P, -N or -A line", raw),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_negation() {
        let r = parse(
            "-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT",
        );
        let rule = &r.rules[0];
        assert_eq!(rule.option("-i"), Some(("docker0", true)));
        assert_eq!(rule.destination(), Some("172.17.0.2/32"));
        assert_eq!(rule.protocol(), Some("tcp"));
        assert_eq!(rule.dports(), [(80, 80)]);
        assert_eq!(rule.target(), Some("ACCEPT"));
        assert!(!rule.is_unconditional());
    }

    #[test]
    fn unconditional_reject_ends_input() {
        let r = parse(
            "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n\
             -A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT\n\
             -A INPUT -p tcp -m multiport --dports 22,80:81 -j ACCEPT\n\
             -A INPUT -m comment --comment \"end of input\" -j REJECT --reject-with icmp-host-prohibited\n",
        );
        assert_eq!(r.filters_inbound(), Some(true));
        assert_eq!(r.rules[1].dports(), [(22, 22), (80, 81)]);
    }

    #[test]
    fn nat_table_is_not_filter() {
        let r = parse(
            "-P PREROUTING ACCEPT\n-P INPUT ACCEPT\n-P OUTPUT ACCEPT\n-P POSTROUTING ACCEPT\n",
        );
        assert_eq!(r.filters_inbound(), None);
    }

    #[test]
    fn iptables_save_format() {
        let r = parse(
            "# Generated by iptables-save\n*nat\n:PREROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n\
             -A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80\n\
             COMMIT\n*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n",
        );
        assert_eq!(r.filters_inbound(), Some(true));
        assert_eq!(r.rules[0].table.as_deref(), Some("nat"));
        assert!(r.notes.is_empty(), "{:?}", r.notes);
    }
}
