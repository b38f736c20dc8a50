//! `nft list ruleset`: tables, chains, their hooks and policies, and their rules.
//!
//! ```text
//! table inet filter {
//!     chain input {
//!         type filter hook input priority filter; policy drop;
//!         ct state established,related accept
//!         tcp dport 22 accept
//!     }
//! }
//! ```
//!
//! The parser follows braces, so sets, maps, flowtables and multi-line anonymous sets are
//! skipped over whatever their contents. What matters for the audit is the base chains on the
//! `input` hook: a packet is dropped if *any* of them drops it, so inbound traffic is filtered
//! when one of them has `policy drop` or ends with an unconditional `drop`/`reject` (the way
//! firewalld ends `filter_INPUT`).

use serde::Serialize;

use crate::findings::ParseNotes;
use crate::firewall::{Family, Policy};
use crate::text::strip_comment;

/// One chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NftChain {
    /// The table's family: `ip`, `ip6`, `inet`, `arp`, `bridge`, `netdev`.
    pub family: String,
    /// The table's name.
    pub table: String,
    /// The chain's name.
    pub name: String,
    /// `type filter|nat|route`, for base chains.
    pub chain_type: Option<String>,
    /// `hook input|forward|output|prerouting|postrouting|ingress`, for base chains.
    pub hook: Option<String>,
    /// `priority ...`, as written.
    pub priority: Option<String>,
    /// `policy accept|drop`; a base chain without one accepts.
    pub policy: Option<Policy>,
    /// The rules, one line each, as written.
    pub rules: Vec<String>,
}

impl NftChain {
    /// True for a base chain (one attached to a hook).
    pub fn is_base(&self) -> bool {
        self.hook.is_some()
    }

    /// The policy in effect: the declared one, else accept.
    pub fn effective_policy(&self) -> Policy {
        self.policy.clone().unwrap_or(Policy::Accept)
    }

    /// True when this chain drops what its rules do not accept: `policy drop`, or a last rule
    /// that drops or rejects unconditionally.
    pub fn drops_by_default(&self) -> bool {
        matches!(self.effective_policy(), Policy::Drop | Policy::Reject)
            || self.rules.last().is_some_and(|r| is_unconditional_drop(r))
    }

    /// True for a `type filter hook input` base chain covering `family`.
    pub fn is_input_filter_for(&self, family: Family) -> bool {
        self.hook.as_deref() == Some("input")
            && self.chain_type.as_deref().is_none_or(|t| t == "filter")
            && family_covers(&self.family, family)
    }
}

/// True when an nft table family sees traffic of `family`.
pub fn family_covers(table_family: &str, family: Family) -> bool {
    matches!(
        (table_family, family),
        ("inet", _) | ("ip", Family::V4) | ("ip6", Family::V6)
    )
}

/// True for a rule that is just a verdict: `drop`, `counter drop`,
/// `counter packets 12 bytes 720 reject with icmpx admin-prohibited`, ... (optionally with a
/// trailing `comment "..."`).
fn is_unconditional_drop(rule: &str) -> bool {
    let words: Vec<&str> = rule.split_ascii_whitespace().collect();
    let mut i = 0;
    while let Some(w) = words.get(i) {
        match *w {
            "counter" => i += 1,
            "packets" | "bytes" => i += 2,
            _ => break,
        }
    }
    match words.get(i) {
        Some(&"drop") => words.len() == i + 1 || words.get(i + 1) == Some(&"comment"),
        Some(&"reject") => {
            // `reject` alone or `reject with <type> [<code>]`.
            let rest = words.get(i + 1..).unwrap_or(&[]);
            let rest: Vec<&&str> = rest.iter().take_while(|w| **w != "comment").collect();
            rest.is_empty() || rest.first() == Some(&&"with")
        }
        _ => false,
    }
}

/// The parsed ruleset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NftRuleset {
    /// `(family, name)` of every table.
    pub tables: Vec<(String, String)>,
    /// Every chain, in order.
    pub chains: Vec<NftChain>,
    /// Lines that could not be used.
    pub notes: ParseNotes,
}

impl NftRuleset {
    /// The base chains on the `input` hook.
    pub fn input_chains(&self) -> impl Iterator<Item = &NftChain> {
        self.chains
            .iter()
            .filter(|c| c.hook.as_deref() == Some("input"))
    }

    /// Whether inbound traffic of `family` is filtered: `Some(true)` when some input filter
    /// chain covering it drops by default, `Some(false)` when none does (including an empty
    /// ruleset), `None` when the text was not a ruleset (no table, and lines were skipped: an
    /// error message such as "Operation not permitted").
    pub fn filters_inbound(&self, family: Family) -> Option<bool> {
        if self.tables.is_empty() && !self.notes.is_empty() {
            return None;
        }
        Some(
            self.chains
                .iter()
                .any(|c| c.is_input_filter_for(family) && c.drops_by_default()),
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum Ctx {
    Table(usize),
    Chain(usize),
    Block,
}

/// Parses `nft list ruleset` output (with or without `-a` handles). Never fails.
pub fn parse(text: &str) -> NftRuleset {
    let mut out = NftRuleset::default();
    let mut stack: Vec<Ctx> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        let (opens, closes) = count_braces(line);
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        let first = words.first().copied().unwrap_or_default();
        // A line that starts by closing: `}` (possibly several).
        if first.starts_with('}') {
            for _ in 0..closes {
                if stack.pop().is_none() {
                    out.notes.push(None, n, "unbalanced `}`", raw);
                    break;
                }
            }
            continue;
        }
        let top = stack.last().copied();
        match top {
            None => {
                if first == "table" && opens > closes {
                    let (family, name) = match words.get(1..) {
                        Some([name, "{", ..]) => ("ip".to_owned(), (*name).to_owned()),
                        Some([family, name, ..]) => ((*family).to_owned(), (*name).to_owned()),
                        _ => {
                            out.notes.push(None, n, "table without a name", raw);
                            ("?".to_owned(), "?".to_owned())
                        }
                    };
                    out.tables
                        .push((family, name.trim_end_matches('{').to_owned()));
                    stack.push(Ctx::Table(out.tables.len() - 1));
                    push_blocks(&mut stack, opens.saturating_sub(closes + 1));
                } else {
                    out.notes
                        .push(None, n, "expected `table <family> <name> {`", raw);
                    push_blocks(&mut stack, opens.saturating_sub(closes));
                }
            }
            Some(Ctx::Table(t)) => {
                if first == "chain" && opens > closes {
                    let (family, table) = out.tables.get(t).cloned().unwrap_or_default();
                    let name = words
                        .get(1)
                        .map(|w| w.trim_end_matches('{'))
                        .unwrap_or_default();
                    out.chains.push(NftChain {
                        family,
                        table,
                        name: name.to_owned(),
                        chain_type: None,
                        hook: None,
                        priority: None,
                        policy: None,
                        rules: Vec::new(),
                    });
                    stack.push(Ctx::Chain(out.chains.len() - 1));
                    push_blocks(&mut stack, opens.saturating_sub(closes + 1));
                } else {
                    // set, map, flowtable, counter, quota, ct helper, ... : skip the block.
                    pop_or_push(&mut stack, opens, closes, &mut out.notes, n, raw);
                }
            }
            Some(Ctx::Chain(c)) => {
                if let Some(chain) = out.chains.get_mut(c) {
                    chain_line(chain, line);
                }
                pop_or_push(&mut stack, opens, closes, &mut out.notes, n, raw);
            }
            Some(Ctx::Block) => pop_or_push(&mut stack, opens, closes, &mut out.notes, n, raw),
        }
    }
    if !stack.is_empty() {
        out.notes
            .push(None, 0, "input ended inside a block (truncated?)", "");
    }
    out
}

/// One line inside a chain: the `type ... hook ...; policy ...;` header, or a rule.
fn chain_line(chain: &mut NftChain, line: &str) {
    let first = line.split_ascii_whitespace().next().unwrap_or_default();
    if matches!(first, "type" | "policy") {
        for stmt in line.split(';') {
            let words: Vec<&str> = stmt.split_ascii_whitespace().collect();
            match words.as_slice() {
                ["type", t, rest @ ..] => {
                    chain.chain_type = Some((*t).to_owned());
                    let mut it = rest.iter();
                    while let Some(w) = it.next() {
                        match *w {
                            "hook" => chain.hook = it.next().map(|h| (*h).to_owned()),
                            "priority" => {
                                let p: Vec<&str> = it.by_ref().copied().collect();
                                chain.priority = Some(p.join(" "));
                            }
                            _ => {}
                        }
                    }
                }
                ["policy", p, ..] => {
                    chain.policy = Some(match *p {
                        "accept" => Policy::Accept,
                        "drop" => Policy::Drop,
                        other => Policy::Other(other.to_owned()),
                    })
                }
                _ => {}
            }
        }
    } else if !matches!(first, "comment" | "devices" | "device") {
        chain.rules.push(line.to_owned());
    }
}

fn push_blocks(stack: &mut Vec<Ctx>, n: usize) {
    for _ in 0..n {
        stack.push(Ctx::Block);
    }
}

fn pop_or_push(
    stack: &mut Vec<Ctx>,
    opens: usize,
    closes: usize,
    notes: &mut ParseNotes,
    n: usize,
    raw: &str,
) {
    if opens >= closes {
        push_blocks(stack, opens - closes);
    } else {
        for _ in 0..closes - opens {
            if stack.pop().is_none() {
                notes.push(None, n, "unbalanced `}`", raw);
                break;
            }
        }
    }
}

/// `{` and `}` outside double quotes.
fn count_braces(line: &str) -> (usize, usize) {
    let (mut opens, mut closes, mut quoted) = (0usize, 0usize, false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            '{' if !quoted => opens += 1,
            '}' if !quoted => closes += 1,
            _ => {}
        }
    }
    (opens, closes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unconditional_verdicts() {
        assert!(is_unconditional_drop("drop"));
        assert!(is_unconditional_drop("counter packets 3 bytes 180 drop"));
        assert!(is_unconditional_drop("reject with icmpx admin-prohibited"));
        assert!(is_unconditional_drop("reject"));
        assert!(is_unconditional_drop("drop comment \"end\""));
        assert!(!is_unconditional_drop("tcp dport 22 drop"));
        assert!(!is_unconditional_drop("ct state invalid drop"));
        assert!(!is_unconditional_drop("accept"));
    }

    #[test]
    fn default_family_is_ip() {
        let r = parse(
            "table filter {\n chain input {\n type filter hook input priority 0; policy drop;\n }\n}\n",
        );
        assert_eq!(r.tables, [("ip".to_owned(), "filter".to_owned())]);
        assert_eq!(r.filters_inbound(Family::V4), Some(true));
        assert_eq!(r.filters_inbound(Family::V6), Some(false));
        assert!(r.notes.is_empty(), "{:?}", r.notes);
    }
}
