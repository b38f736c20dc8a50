//! What the audit reports: [`Finding`]s ranked by [`Severity`], and the [`ParseNotes`] every
//! parser keeps about input it could not use.
//!
//! A finding's `remedy` is a list of exact shell commands, to be run in order, as root. They
//! are never applied automatically, and none of them can lock the operator out: SSH is allowed
//! through a firewall before the firewall is enabled, and password login is only turned off
//! after the commands that show which accounts have keys.

use serde::Serialize;

/// How much a finding matters. Orders `Info < Warn < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; nothing to fix.
    Info,
    /// A weakness to fix.
    Warn,
    /// Exposed now: fix first.
    Critical,
}

impl Severity {
    /// `"info"`, `"warn"` or `"critical"`, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Critical => "critical",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One result of the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable identifier, dotted: `"ssh.password-login"`, `"firewall.none"`. The ids this
    /// crate emits are the constants in [`ids`].
    pub id: &'static str,
    /// How much it matters.
    pub severity: Severity,
    /// One line, no trailing period.
    pub title: String,
    /// What was seen and why it matters; may name files, lines and ports.
    pub detail: String,
    /// Exact shell commands, in order, run as root. Empty when there is nothing to run.
    pub remedy: Vec<String>,
}

impl Finding {
    /// A finding without remedy commands.
    pub fn new(
        id: &'static str,
        severity: Severity,
        title: impl Into<String>,
        detail: impl Into<String>,
    ) -> Finding {
        Finding {
            id,
            severity,
            title: title.into(),
            detail: detail.into(),
            remedy: Vec::new(),
        }
    }

    /// The same finding with `commands` appended to its remedy.
    pub fn with_remedy<I, S>(mut self, commands: I) -> Finding
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.remedy.extend(commands.into_iter().map(Into::into));
        self
    }
}

/// Sorts findings most severe first, keeping the relative order of equal severities.
pub fn rank(findings: &mut [Finding]) {
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
}

/// Drops repeats: findings with the same id and title (two gateways of one profile name, say)
/// are reported once, keeping the first. After [`rank`], that is the most severe.
pub fn dedup(findings: &mut Vec<Finding>) {
    let mut seen = std::collections::HashSet::new();
    findings.retain(|f| seen.insert((f.id, f.title.clone())));
}

/// The highest severity among `findings`, if any.
pub fn worst(findings: &[Finding]) -> Option<Severity> {
    findings.iter().map(|f| f.severity).max()
}

/// The finding ids this crate emits.
pub mod ids {
    /// A TCP listener on a non-loopback address.
    pub const LISTENER_EXPOSED: &str = "listener.exposed";
    /// No inbound filtering for IPv4 (or for both families).
    pub const FIREWALL_NONE: &str = "firewall.none";
    /// IPv4 inbound is filtered, IPv6 is not.
    pub const FIREWALL_IPV6_OPEN: &str = "firewall.ipv6-open";
    /// No firewall tool could be read.
    pub const FIREWALL_UNKNOWN: &str = "firewall.unknown";
    /// ufw is active and SSH is not among its allow rules.
    pub const FIREWALL_SSH_NOT_ALLOWED: &str = "firewall.ssh-not-allowed";
    /// A Docker-published port reachable from outside despite an inbound firewall.
    pub const DOCKER_BYPASS: &str = "docker.published-bypasses-firewall";
    /// A Docker-published port on a non-loopback address, with no inbound firewall at all.
    pub const DOCKER_PUBLISHED: &str = "docker.published";
    /// sshd accepts password (or keyboard-interactive PAM) logins.
    pub const SSH_PASSWORD_LOGIN: &str = "ssh.password-login";
    /// sshd lets root log in.
    pub const SSH_ROOT_LOGIN: &str = "ssh.root-login";
    /// A `Match` block loosens password or root login for some connections.
    pub const SSH_MATCH_OVERRIDE: &str = "ssh.match-override";
    /// The sshd settings could not be determined.
    pub const SSH_UNKNOWN: &str = "ssh.unknown";
    /// Some input could not be parsed; the results from it may be incomplete.
    pub const PARSE_INCOMPLETE: &str = "parse.incomplete";
    /// An input could not be parsed at all.
    pub const PARSE_FAILED: &str = "parse.failed";
}

/// At most this many [`ParseNote`]s are kept per parse; the rest are only counted.
pub const MAX_NOTES: usize = 32;

/// Something a parser could not use: a skipped line, an unknown value, an include cycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParseNote {
    /// The file the line came from, when the parser knows it (sshd_config and its includes).
    pub file: Option<String>,
    /// 1-based line number; 0 when the note is about the input as a whole.
    pub line: usize,
    /// Why the line was not used.
    pub reason: String,
    /// The start of the line, control characters escaped, at most 80 characters.
    pub excerpt: String,
}

/// The notes of one parse: the first [`MAX_NOTES`] kept, all counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ParseNotes {
    /// How many notes there were, kept or not.
    pub total: usize,
    /// The first [`MAX_NOTES`] of them.
    pub kept: Vec<ParseNote>,
}

impl ParseNotes {
    /// Records a note about `line` (1-based; 0 for the whole input).
    pub fn push(&mut self, file: Option<&str>, line: usize, reason: impl Into<String>, text: &str) {
        self.total = self.total.saturating_add(1);
        if self.kept.len() < MAX_NOTES {
            self.kept.push(ParseNote {
                file: file.map(str::to_owned),
                line,
                reason: reason.into(),
                excerpt: excerpt(text),
            });
        }
    }

    /// True when there is nothing to report.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Appends `other`'s notes (counting all, keeping up to [`MAX_NOTES`]).
    pub fn extend(&mut self, other: ParseNotes) {
        self.total = self.total.saturating_add(other.total);
        let room = MAX_NOTES.saturating_sub(self.kept.len());
        self.kept.extend(other.kept.into_iter().take(room));
    }

    /// A finding about these notes, or `None` when there are none.
    ///
    /// `what` names the input (`"/proc/net/tcp"`, `"nft list ruleset"`); `used` is how many
    /// records the parser did get out of it. With nothing used the finding is a
    /// [`ids::PARSE_FAILED`] warning (the audit's view of that input is missing); otherwise it
    /// is an [`ids::PARSE_INCOMPLETE`] info.
    pub fn finding(&self, what: &str, used: usize) -> Option<Finding> {
        if self.is_empty() {
            return None;
        }
        let mut detail = format!(
            "{} line(s) of {what} could not be used ({} record(s) were read).",
            self.total, used
        );
        for note in self.kept.iter().take(5) {
            let place = match &note.file {
                Some(file) => format!("{file}:{}", note.line),
                None => format!("line {}", note.line),
            };
            detail.push_str(&format!(
                "\n  {place}: {} ({:?})",
                note.reason, note.excerpt
            ));
        }
        if self.total > 5 {
            detail.push_str(&format!("\n  ... and {} more", self.total - 5));
        }
        Some(if used == 0 {
            Finding::new(
                ids::PARSE_FAILED,
                Severity::Warn,
                format!("could not read {what}"),
                detail,
            )
        } else {
            Finding::new(
                ids::PARSE_INCOMPLETE,
                Severity::Info,
                format!("{what} was read in part"),
                detail,
            )
        })
    }
}

/// The start of `line` for a note: control characters (and other non-printing ones) escaped,
/// cut at 80 characters.
pub(crate) fn excerpt(line: &str) -> String {
    const MAX: usize = 80;
    let mut out = String::new();
    for (i, c) in line.chars().enumerate() {
        if i >= MAX {
            out.push('…');
            break;
        }
        if c.is_control() || c == '\u{FFFD}' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_orders_and_serialises() {
        assert!(Severity::Critical > Severity::Warn && Severity::Warn > Severity::Info);
        let f = Finding::new(ids::FIREWALL_NONE, Severity::Critical, "t", "d").with_remedy(["a"]);
        let v = serde_json::to_value(&f).unwrap_or_default();
        assert_eq!(v["severity"], "critical");
        assert_eq!(v["id"], "firewall.none");
        assert_eq!(v["remedy"][0], "a");
    }

    #[test]
    fn rank_is_stable_and_worst_first() {
        let mut v = vec![
            Finding::new("a", Severity::Info, "", ""),
            Finding::new("b", Severity::Critical, "", ""),
            Finding::new("c", Severity::Warn, "", ""),
            Finding::new("d", Severity::Critical, "", ""),
        ];
        rank(&mut v);
        let order: Vec<_> = v.iter().map(|f| f.id).collect();
        assert_eq!(order, ["b", "d", "c", "a"]);
        assert_eq!(worst(&v), Some(Severity::Critical));
        assert_eq!(worst(&[]), None);
    }

    #[test]
    fn dedup_keeps_the_most_severe_of_a_repeated_finding() {
        let title = "the molt profile default gateway runs as root";
        let mut v = vec![
            Finding::new("agent.root", Severity::Warn, title, "home /a"),
            Finding::new("agent.root", Severity::Critical, title, "home /b"),
            Finding::new("agent.root", Severity::Warn, "another title", ""),
        ];
        rank(&mut v);
        dedup(&mut v);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].severity, Severity::Critical);
        assert_eq!(v[1].title, "another title");
    }

    #[test]
    fn notes_are_capped_but_counted() {
        let mut n = ParseNotes::default();
        for i in 0..100 {
            n.push(None, i, "bad", "x\u{0}y");
        }
        assert_eq!(n.total, 100);
        assert_eq!(n.kept.len(), MAX_NOTES);
        assert_eq!(n.kept[0].excerpt, "x\\u{0}y");
        let f = n.finding("thing", 0);
        assert_eq!(f.map(|f| f.id), Some(ids::PARSE_FAILED));
    }

    #[test]
    fn excerpt_cuts_on_char_boundaries() {
        let long = "é".repeat(200);
        let e = excerpt(&long);
        assert_eq!(e.chars().count(), 81);
    }
}
