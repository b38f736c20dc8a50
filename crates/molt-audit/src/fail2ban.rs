//! Whether fail2ban guards sshd: the jail list from `fail2ban-client status`.
//!
//! The output looks like
//!
//! ```text
//! Status
//! |- Number of jail:      2
//! `- Jail list:   recidive, sshd
//! ```
//!
//! Anything else (an error message, a server that is not running) parses to `None`, and the
//! caller reports fail2ban as not running.

use serde::Serialize;

use crate::findings::ParseNotes;

/// The jails fail2ban runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Fail2banStatus {
    /// Jail names, in the order listed.
    pub jails: Vec<String>,
    /// `Number of jail:` as stated, when it was readable.
    pub stated_count: Option<usize>,
    /// Lines that could not be used.
    pub notes: ParseNotes,
}

impl Fail2banStatus {
    /// True when a jail watches sshd (`sshd`, `ssh`, or a name starting with `sshd-`/`sshd_`,
    /// as distributions and hand-written jails name them).
    pub fn guards_sshd(&self) -> bool {
        self.jails.iter().any(|j| {
            let j = j.to_ascii_lowercase();
            j == "sshd" || j == "ssh" || j.starts_with("sshd-") || j.starts_with("sshd_")
        })
    }
}

/// Parses `fail2ban-client status`. `None` when the text has no `Jail list:` line (fail2ban
/// not running, or not its output at all).
pub fn parse_status(text: &str) -> Option<Fail2banStatus> {
    let mut out = Fail2banStatus::default();
    let mut saw_list = false;
    for (i, raw) in text.lines().enumerate() {
        // Strip the tree drawing (`|- `, `` `- ``) and surrounding space.
        let line = raw.trim_start_matches(['|', '`', '-', ' ', '\t']).trim();
        if line.is_empty() || line == "Status" {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            out.notes.push(None, i + 1, "not a `key: value` line", raw);
            continue;
        };
        match key.trim() {
            "Jail list" => {
                saw_list = true;
                out.jails.extend(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|j| {
                            !j.is_empty()
                                && j.bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
                        })
                        .map(str::to_owned),
                );
            }
            "Number of jail" => match value.trim().parse() {
                Ok(n) => out.stated_count = Some(n),
                Err(_) => out
                    .notes
                    .push(None, i + 1, "jail count is not a number", raw),
            },
            _ => out.notes.push(None, i + 1, "unknown key", raw),
        }
    }
    saw_list.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jail_list() {
        let s = parse_status("Status\n|- Number of jail:\t2\n`- Jail list:\trecidive, sshd\n");
        let s = s.unwrap_or_default();
        assert_eq!(s.jails, ["recidive", "sshd"]);
        assert_eq!(s.stated_count, Some(2));
        assert!(s.guards_sshd());
        assert!(s.notes.is_empty());
    }

    #[test]
    fn no_sshd_jail_and_errors() {
        let s = parse_status("Status\n|- Number of jail:\t0\n`- Jail list:\t\n");
        assert_eq!(s.map(|s| s.guards_sshd()), Some(false));
        assert_eq!(
            parse_status(
                "ERROR   Failed to access socket path: /var/run/fail2ban/fail2ban.sock. Is fail2ban running?"
            ),
            None
        );
        assert_eq!(parse_status(""), None);
    }
}
