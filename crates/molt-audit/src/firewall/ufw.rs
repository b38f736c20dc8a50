//! `ufw status verbose` (also plain `ufw status` and `ufw status numbered`).
//!
//! ```text
//! Status: active
//! Logging: on (low)
//! Default: deny (incoming), allow (outgoing), disabled (routed)
//! New profiles: skip
//!
//! To                         Action      From
//! --                         ------      ----
//! 22/tcp                     ALLOW IN    Anywhere
//! 22/tcp (v6)                ALLOW IN    Anywhere (v6)
//! ```
//!
//! ufw translates its output: run it with `LC_ALL=C` so that the status line reads
//! `Status: active`.

use serde::Serialize;

use crate::findings::ParseNotes;
use crate::firewall::Policy;
use crate::text::parse_port_range;

/// ufw's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UfwState {
    /// `Status: active`.
    Active,
    /// `Status: inactive`: no ufw rules are loaded.
    Inactive,
    /// No status line (an error such as "You need to be root", or not ufw's output at all).
    Unknown,
}

/// Rule direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// `IN` (the default when ufw prints none).
    In,
    /// `OUT`.
    Out,
    /// `FWD` (route rules).
    Fwd,
}

/// One rule line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UfwRule {
    /// The `To` column: `"22/tcp"`, `"OpenSSH"`, `"Anywhere"`, `"80,443/tcp"`, `"10.0.0.1 22/tcp"`.
    pub to: String,
    /// `ALLOW`, `DENY`, `REJECT` or `LIMIT`.
    pub action: String,
    /// Direction.
    pub direction: Direction,
    /// The `From` column: `"Anywhere"`, `"192.168.1.0/24"`.
    pub from: String,
    /// The rule is ufw's IPv6 copy (`(v6)`).
    pub v6: bool,
    /// The `# comment`, if any.
    pub comment: Option<String>,
}

impl UfwRule {
    /// True when the rule lets anyone reach TCP `port` inbound: ALLOW or LIMIT, IN, from
    /// anywhere, and a `To` naming the port (`22`, `22/tcp`, `20:30/tcp`, `22,80/tcp`) or, for
    /// port 22, the `OpenSSH` application profile.
    pub fn allows_tcp_port_from_anywhere(&self, port: u16) -> bool {
        let action_ok = matches!(self.action.as_str(), "ALLOW" | "LIMIT");
        let from_ok = self.from.starts_with("Anywhere");
        action_ok
            && from_ok
            && self.direction == Direction::In
            && to_covers_tcp_port(&self.to, port)
    }
}

fn to_covers_tcp_port(to: &str, port: u16) -> bool {
    for word in to.split_ascii_whitespace() {
        if word == "OpenSSH" && port == 22 {
            return true;
        }
        let (ports, proto) = match word.split_once('/') {
            Some((p, proto)) => (p, Some(proto)),
            None => (word, None),
        };
        if proto.is_some_and(|p| p != "tcp") {
            continue;
        }
        for spec in ports.split(',') {
            if let Some((a, b)) = parse_port_range(spec)
                && a <= port
                && port <= b
            {
                return true;
            }
        }
    }
    false
}

/// The parsed status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UfwStatus {
    /// Active, inactive or unknown.
    pub state: UfwState,
    /// `Default: deny (incoming)`; `None` without `verbose` or when inactive.
    pub default_incoming: Option<Policy>,
    /// `allow (outgoing)`.
    pub default_outgoing: Option<Policy>,
    /// `disabled (routed)`, as written.
    pub default_routed: Option<String>,
    /// The rules, in order.
    pub rules: Vec<UfwRule>,
    /// Lines that could not be used.
    pub notes: ParseNotes,
}

impl UfwStatus {
    /// True when ufw filters inbound traffic by default: active, with a default incoming
    /// policy of deny or reject. With plain `ufw status` (no default shown) an active ufw is
    /// taken to deny, as ufw's own default is.
    pub fn filters_inbound(&self) -> bool {
        self.state == UfwState::Active
            && matches!(
                self.default_incoming,
                Some(Policy::Drop) | Some(Policy::Reject) | None
            )
    }

    /// True when some rule lets anyone reach TCP `port`.
    pub fn allows_tcp_port(&self, port: u16) -> bool {
        self.rules
            .iter()
            .any(|r| r.allows_tcp_port_from_anywhere(port))
    }
}

/// Parses `ufw status [verbose|numbered]` output. Never fails; see [`UfwStatus::state`].
pub fn parse(text: &str) -> UfwStatus {
    let mut out = UfwStatus {
        state: UfwState::Unknown,
        default_incoming: None,
        default_outgoing: None,
        default_routed: None,
        rules: Vec::new(),
        notes: ParseNotes::default(),
    };
    let mut in_table = false;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(status) = line.strip_prefix("Status:") {
            out.state = match status.trim() {
                "active" => UfwState::Active,
                "inactive" => UfwState::Inactive,
                _ => {
                    out.notes.push(None, n, "unknown status", raw);
                    UfwState::Unknown
                }
            };
            continue;
        }
        if let Some(defaults) = line.strip_prefix("Default:") {
            parse_defaults(defaults, &mut out, n, raw);
            continue;
        }
        if line.starts_with("Logging:") || line.starts_with("New profiles:") {
            continue;
        }
        if line.starts_with("To ") && line.contains("Action") && line.contains("From") {
            in_table = true;
            continue;
        }
        if line.bytes().all(|b| b == b'-' || b == b' ') {
            continue;
        }
        if in_table {
            match parse_rule(line) {
                Some(rule) => out.rules.push(rule),
                None => out.notes.push(None, n, "not a rule line", raw),
            }
        } else {
            out.notes.push(None, n, "unexpected line", raw);
        }
    }
    out
}

/// `deny (incoming), allow (outgoing), disabled (routed)`; one note for the line at most.
fn parse_defaults(defaults: &str, out: &mut UfwStatus, n: usize, raw: &str) {
    let mut bad = false;
    for part in defaults.split(',') {
        let part = part.trim();
        let Some((value, which)) = part.split_once(' ') else {
            bad = true;
            continue;
        };
        let which = which.trim().trim_start_matches('(').trim_end_matches(')');
        let policy = match value {
            "allow" => Some(Policy::Accept),
            "deny" => Some(Policy::Drop),
            "reject" => Some(Policy::Reject),
            _ => None,
        };
        match which {
            "incoming" => out.default_incoming = policy,
            "outgoing" => out.default_outgoing = policy,
            "routed" => out.default_routed = Some(value.to_owned()),
            _ => bad = true,
        }
    }
    if bad {
        out.notes.push(None, n, "unreadable default policy", raw);
    }
}

fn parse_rule(line: &str) -> Option<UfwRule> {
    // `ufw status numbered`: "[ 1] 22/tcp  ALLOW IN  Anywhere".
    let line = match line.strip_prefix('[') {
        Some(rest) => rest.split_once(']')?.1.trim_start(),
        None => line,
    };
    let (line, comment) = match line.split_once(" # ") {
        Some((l, c)) => (l.trim_end(), Some(c.trim().to_owned())),
        None => (line, None),
    };
    let words: Vec<&str> = line.split_ascii_whitespace().collect();
    let at = words
        .iter()
        .position(|w| matches!(*w, "ALLOW" | "DENY" | "REJECT" | "LIMIT"))?;
    let action = (*words.get(at)?).to_owned();
    let to_words = words.get(..at)?;
    if to_words.is_empty() {
        return None;
    }
    let (direction, from_start) = match words.get(at + 1) {
        Some(&"IN") => (Direction::In, at + 2),
        Some(&"OUT") => (Direction::Out, at + 2),
        Some(&"FWD") => (Direction::Fwd, at + 2),
        _ => (Direction::In, at + 1),
    };
    let from_words = words.get(from_start..)?;
    if from_words.is_empty() {
        return None;
    }
    let v6 = to_words.last() == Some(&"(v6)") || from_words.last() == Some(&"(v6)");
    let strip_v6 = |w: &[&str]| {
        w.iter()
            .filter(|x| **x != "(v6)")
            .copied()
            .collect::<Vec<_>>()
            .join(" ")
    };
    Some(UfwRule {
        to: strip_v6(to_words),
        action,
        direction,
        from: strip_v6(from_words),
        v6,
        comment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_shapes() {
        let r = parse_rule("22/tcp (v6)                ALLOW IN    Anywhere (v6)").unwrap();
        assert_eq!(
            (r.to.as_str(), r.from.as_str(), r.v6),
            ("22/tcp", "Anywhere", true)
        );
        let r = parse_rule("[ 3] 8000:8010/tcp  LIMIT IN  Anywhere  # dev").unwrap();
        assert_eq!(r.action, "LIMIT");
        assert_eq!(r.comment.as_deref(), Some("dev"));
        assert!(r.allows_tcp_port_from_anywhere(8005));
        let r = parse_rule("OpenSSH   ALLOW   Anywhere").unwrap();
        assert!(r.allows_tcp_port_from_anywhere(22));
        let r = parse_rule("53/udp   ALLOW IN   Anywhere").unwrap();
        assert!(!r.allows_tcp_port_from_anywhere(53));
        let r = parse_rule("22   ALLOW IN   10.0.0.0/8").unwrap();
        assert!(!r.allows_tcp_port_from_anywhere(22));
        assert!(parse_rule("ALLOW IN Anywhere").is_none());
        assert!(parse_rule("22/tcp ALLOW IN").is_none());
    }
}
