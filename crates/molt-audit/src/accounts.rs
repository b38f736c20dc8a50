//! Local accounts from `/etc/passwd`: who else on this host could reach a loopback port.
//!
//! Loopback is not a trust boundary: every local account can connect to 127.0.0.1. An account
//! counts as "another user" of the host when a person can log in with it (a real shell) or
//! when a process runs as it (a web panel's `www-data`, a container's user). Root is left out:
//! it can read the gateway's secrets anyway.

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The login name.
    pub name: String,
    /// The numeric user id.
    pub uid: u32,
    /// The login shell.
    pub shell: String,
}

impl Account {
    /// A person can log in with it: its shell is not one of the "no login" ones.
    pub fn can_log_in(&self) -> bool {
        let shell = self.shell.rsplit('/').next().unwrap_or("");
        !(shell.is_empty() || matches!(shell, "nologin" | "false" | "sync" | "halt" | "shutdown"))
    }
}

/// Parses `/etc/passwd`. Lines that are not seven colon-separated fields with a numeric uid
/// (comments, NIS `+` entries) are skipped.
pub fn parse_passwd(text: &str) -> Vec<Account> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() != 7 {
                return None;
            }
            let name = f.first()?;
            let uid = f.get(2)?.parse().ok()?;
            let shell = f.get(6)?;
            Some(Account {
                name: (*name).to_owned(),
                uid,
                shell: (*shell).to_owned(),
            })
        })
        .collect()
}

/// The accounts other than root and `owner` that can log in or run a process (`running`
/// holds the uids of running processes).
pub fn others<'a>(accounts: &'a [Account], owner: u32, running: &[u32]) -> Vec<&'a Account> {
    accounts
        .iter()
        .filter(|a| a.uid != 0 && a.uid != owner)
        .filter(|a| a.can_log_in() || running.contains(&a.uid))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash
# a comment
+::::::
broken:x:notanumber:1::/:/bin/sh
agent:x:1001:1001::/home/agent:/bin/false
";

    #[test]
    fn other_accounts_are_login_shells_or_running_uids_but_never_root_or_the_owner() {
        let accounts = parse_passwd(PASSWD);
        assert_eq!(accounts.len(), 6, "{accounts:?}");
        let names = |v: Vec<&Account>| v.iter().map(|a| a.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(others(&accounts, 1001, &[0, 1001])), ["alice"]);
        assert_eq!(
            names(others(&accounts, 1001, &[33, 0])),
            ["www-data", "alice"]
        );
        assert!(others(&accounts, 1000, &[0]).is_empty());
        assert!(others(&parse_passwd("garbage\n::::\n"), 0, &[1]).is_empty());
    }
}
