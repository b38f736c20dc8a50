//! sshd's effective authentication settings, from `sshd -T` or from the config files.
//!
//! Two sources, best first:
//! - [`parse_sshd_t`]: the output of `sshd -T` (root only), one `keyword value` per line with
//!   lowercase keywords. This is sshd's own view and wins when available.
//! - [`parse_sshd_config`]: `sshd_config` and everything it `Include`s, read through a
//!   [`ConfigFs`] so the parser does no I/O of its own. It follows sshd's rules: the first
//!   value of a keyword wins; `Include` takes glob patterns (relative ones are under
//!   `/etc/ssh`), expanded in sorted order, and an included file cannot change the Match state
//!   of the file that includes it; a `Match` line ends the global section (settings under a
//!   conditional `Match` are kept apart in [`SshdSettings::conditional`]; `Match all` applies
//!   to every connection and overrides the global value); include cycles and nesting deeper
//!   than 16 are noted and cut.
//!
//! Absent keywords take OpenSSH's defaults (≥ 8.7): `PasswordAuthentication yes`,
//! `KbdInteractiveAuthentication yes`, `UsePAM no`, `PermitRootLogin prohibit-password`
//! (since 7.0), `AuthenticationMethods any`, `Port 22`.
//!
//! [`SshdSettings::findings`] turns the settings into findings whose remedies write a drop-in
//! ([`HARDENING_DROP_IN`], named to sort first because the first value wins) or, when a
//! drop-in would not be read first, put the lines at the top of the main file. Every remedy
//! validates with `sshd -t` (after making sure /run/sshd exists, without which it refuses to
//! run) and reverts when that fails, so sshd is never left unable to start.

use std::collections::BTreeMap;
use std::io;

use serde::Serialize;

use crate::findings::{Finding, ParseNotes, Severity, ids};
use crate::text::split_args;

/// sshd's configuration directory: relative `Include` paths are taken from here.
pub const SSHDIR: &str = "/etc/ssh";
/// The main configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/ssh/sshd_config";
/// The drop-in directory Debian and Ubuntu include first thing in `sshd_config`.
pub const DROP_IN_DIR: &str = "/etc/ssh/sshd_config.d";
/// The file the remedies write. Named `00-` so that it sorts before other drop-ins (such as
/// cloud-init's `50-cloud-init.conf`): sshd keeps the *first* value it reads.
pub const HARDENING_DROP_IN: &str = "/etc/ssh/sshd_config.d/00-molt-hardening.conf";
/// sshd refuses configurations nested deeper than this.
pub const MAX_INCLUDE_DEPTH: usize = 16;
/// The parser reads at most this many files in all (a guard against include explosions).
pub const MAX_FILES: usize = 256;

/// `PermitRootLogin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PermitRootLogin {
    /// `yes`: root may log in with any method, passwords included.
    Yes,
    /// `prohibit-password` (alias `without-password`): root may log in, but not by password.
    ProhibitPassword,
    /// `forced-commands-only`: root only with a key bound to a forced command.
    ForcedCommandsOnly,
    /// `no`.
    No,
}

impl PermitRootLogin {
    /// Parses a value, case-insensitively, as sshd does.
    pub fn parse(value: &str) -> Option<PermitRootLogin> {
        match value.to_ascii_lowercase().as_str() {
            "yes" => Some(PermitRootLogin::Yes),
            "prohibit-password" | "without-password" => Some(PermitRootLogin::ProhibitPassword),
            "forced-commands-only" => Some(PermitRootLogin::ForcedCommandsOnly),
            "no" => Some(PermitRootLogin::No),
            _ => None,
        }
    }

    /// The canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PermitRootLogin::Yes => "yes",
            PermitRootLogin::ProhibitPassword => "prohibit-password",
            PermitRootLogin::ForcedCommandsOnly => "forced-commands-only",
            PermitRootLogin::No => "no",
        }
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Origin {
    /// Not set anywhere: OpenSSH's default.
    Default,
    /// Reported by `sshd -T`.
    SshdT,
    /// Set at this line of this file.
    File {
        /// The file's path.
        path: String,
        /// 1-based line number.
        line: usize,
    },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("the OpenSSH default"),
            Origin::SshdT => f.write_str("sshd -T"),
            Origin::File { path, line } => write!(f, "{path}:{line}"),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting<T> {
    /// The effective value.
    pub value: T,
    /// Where it was set.
    pub origin: Origin,
}

impl<T> Setting<T> {
    fn default_value(value: T) -> Setting<T> {
        Setting {
            value,
            origin: Origin::Default,
        }
    }
}

/// Which source the settings were read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// `sshd -T`.
    SshdT,
    /// The configuration files.
    ConfigFiles,
}

/// A setting under a conditional `Match` block: it applies to some connections only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConditionalSetting {
    /// The Match criteria, as written (`"User deploy"`, `"Address 10.0.0.0/8"`).
    pub criteria: String,
    /// The keyword, lowercase.
    pub keyword: String,
    /// The value, as written.
    pub value: String,
    /// Where.
    pub origin: Origin,
}

/// Whether writing [`HARDENING_DROP_IN`] would take effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DropIn {
    /// Unknown (settings from `sshd -T` alone, the files unread): the remedy assumes the usual layout and ends with a
    /// check.
    Unknown,
    /// The main file includes the drop-in directory before any setting the drop-in overrides.
    Effective,
    /// The main file does not include [`DROP_IN_DIR`]`/*.conf`.
    NotIncluded,
    /// The directory is included, but these settings are read before the drop-in would be.
    Preempted {
        /// Where the settings that would still win are.
        by: Vec<Origin>,
    },
}

/// sshd's effective authentication settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SshdSettings {
    /// Where they were read from.
    pub source: Source,
    /// The main config file (for [`Source::ConfigFiles`]; [`DEFAULT_CONFIG`] otherwise).
    pub main_config: String,
    /// `PasswordAuthentication`.
    pub password_authentication: Setting<bool>,
    /// `KbdInteractiveAuthentication` (or its old name `ChallengeResponseAuthentication`).
    pub kbd_interactive_authentication: Setting<bool>,
    /// `UsePAM`: with it, keyboard-interactive asks for the account password.
    pub use_pam: Setting<bool>,
    /// `PermitRootLogin`.
    pub permit_root_login: Setting<PermitRootLogin>,
    /// `AuthenticationMethods`: `["any"]`, or method lists like `"publickey,password"`.
    pub authentication_methods: Setting<Vec<String>>,
    /// `Port`s (all of them; `Port` accumulates).
    pub ports: Vec<u16>,
    /// Settings under conditional `Match` blocks (config files only).
    pub conditional: Vec<ConditionalSetting>,
    /// The files read, in order (config files only).
    pub files_read: Vec<String>,
    /// Whether a drop-in would take effect.
    pub drop_in: DropIn,
    /// How many `keyword value` lines were read (all keywords, in every file).
    pub lines_used: usize,
    /// What could not be used.
    pub notes: ParseNotes,
}

impl SshdSettings {
    /// True when a client can log in with an account password alone: `PasswordAuthentication`,
    /// or keyboard-interactive through PAM, is on and `AuthenticationMethods` has a list made
    /// only of those methods (`any` counts).
    pub fn password_login(&self) -> bool {
        let password = self.password_authentication.value;
        let kbd = self.kbd_interactive_authentication.value && self.use_pam.value;
        if !password && !kbd {
            return false;
        }
        let lists = &self.authentication_methods.value;
        if lists.is_empty() || lists.iter().any(|l| l.eq_ignore_ascii_case("any")) {
            return true;
        }
        lists.iter().any(|list| {
            list.split(',').all(|method| {
                let name = method.split(':').next().unwrap_or(method);
                (name == "password" && password) || (name == "keyboard-interactive" && kbd)
            })
        })
    }

    /// True when root can log in with a password.
    pub fn root_password_login(&self) -> bool {
        self.permit_root_login.value == PermitRootLogin::Yes && self.password_login()
    }

    /// The findings for these settings, most severe first:
    /// - [`ids::SSH_PASSWORD_LOGIN`]: critical when root can use a password too, else warn;
    /// - [`ids::SSH_ROOT_LOGIN`]: warn for `PermitRootLogin yes`, info when root may log in
    ///   with a key only (no remedy: turning that off could lock out a root-only host);
    /// - [`ids::SSH_MATCH_OVERRIDE`]: warn for `Match` blocks that turn passwords or root login
    ///   back on for some connections;
    /// - a parse finding when some lines could not be used.
    pub fn findings(&self) -> Vec<Finding> {
        let mut out = Vec::new();
        let password = self.password_login();
        let root = self.permit_root_login.value;
        let lines = self.hardening_lines();
        let remedy = self.remedy(&lines);
        let safety = "Before running this, make sure the account you log in with has a key in \
                      the authorized_keys files listed by the first command, and that \
                      `ssh -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no \
                      USER@HOST true` succeeds from your machine. Keep your current session \
                      open until a new login works: reloading sshd does not end sessions.";
        if password {
            let how = self.password_how();
            let (severity, title) = if root == PermitRootLogin::Yes {
                (
                    Severity::Critical,
                    "SSH accepts password logins, root included",
                )
            } else {
                (Severity::Warn, "SSH accepts password logins")
            };
            let mut detail = format!(
                "{how}. Passwords can be guessed from anywhere the SSH port is reachable.{} {safety}",
                if root == PermitRootLogin::Yes {
                    format!(
                        " PermitRootLogin is yes (from {}), so root's password is enough.",
                        self.permit_root_login.origin
                    )
                } else {
                    String::new()
                }
            );
            detail.push_str(&self.drop_in_note());
            out.push(
                Finding::new(ids::SSH_PASSWORD_LOGIN, severity, title, detail)
                    .with_remedy(remedy.clone()),
            );
        }
        match root {
            PermitRootLogin::Yes => {
                let mut detail = format!(
                    "PermitRootLogin yes (from {}) lets root log in with any method{}. \
                     prohibit-password keeps root's key logins working and refuses its \
                     password. {safety}",
                    self.permit_root_login.origin,
                    if password {
                        ", its password included"
                    } else {
                        ""
                    }
                );
                detail.push_str(&self.drop_in_note());
                out.push(
                    Finding::new(
                        ids::SSH_ROOT_LOGIN,
                        Severity::Warn,
                        "SSH allows root login (PermitRootLogin yes)",
                        detail,
                    )
                    .with_remedy(remedy),
                );
            }
            PermitRootLogin::ProhibitPassword | PermitRootLogin::ForcedCommandsOnly => {
                out.push(Finding::new(
                    ids::SSH_ROOT_LOGIN,
                    Severity::Info,
                    format!(
                        "root may log in over SSH with a key (PermitRootLogin {})",
                        root.as_str()
                    ),
                    format!(
                        "Set by {}. Passwords are refused for root. To stop root logins \
                         altogether, first create an administrator account with sudo and a \
                         key, log in with it, then set PermitRootLogin no; doing it the other \
                         way round locks out a host reached only as root.",
                        self.permit_root_login.origin
                    ),
                ));
            }
            PermitRootLogin::No => {}
        }
        let loosened: Vec<&ConditionalSetting> = self
            .conditional
            .iter()
            .filter(|c| {
                let v = c.value.to_ascii_lowercase();
                match c.keyword.as_str() {
                    "passwordauthentication" | "kbdinteractiveauthentication" => v == "yes",
                    "permitrootlogin" => v == "yes",
                    _ => false,
                }
            })
            .collect();
        if !loosened.is_empty() {
            let mut detail = String::from(
                "These Match blocks turn password or root login back on for the connections \
                 they match; the global settings do not cover them:",
            );
            for c in &loosened {
                detail.push_str(&format!(
                    "\n  {}: Match {} → {} {}",
                    c.origin, c.criteria, c.keyword, c.value
                ));
            }
            detail.push_str("\nChange those lines to `no` (or remove them) if they are not needed, then run the commands.");
            out.push(
                Finding::new(
                    ids::SSH_MATCH_OVERRIDE,
                    Severity::Warn,
                    "an sshd Match block allows passwords or root login",
                    detail,
                )
                .with_remedy([
                    PRIVSEP_DIR.to_owned(),
                    "sshd -t && (systemctl reload ssh || systemctl reload sshd)".to_owned(),
                    format!("sshd -T -C user=root,host=example,addr=192.0.2.1 | {GREP_SETTINGS}"),
                ]),
            );
        }
        let what = match self.source {
            Source::SshdT => "sshd -T output",
            Source::ConfigFiles => "the sshd configuration",
        };
        out.extend(self.notes.finding(what, self.lines_used));
        crate::findings::rank(&mut out);
        out
    }

    /// Why passwords are accepted, for the finding's detail.
    fn password_how(&self) -> String {
        let mut parts = Vec::new();
        if self.password_authentication.value {
            parts.push(format!(
                "PasswordAuthentication is yes (from {})",
                self.password_authentication.origin
            ));
        }
        if self.kbd_interactive_authentication.value && self.use_pam.value {
            parts.push(format!(
                "KbdInteractiveAuthentication is yes (from {}) with UsePAM yes (from {}), which \
                 asks for the account password",
                self.kbd_interactive_authentication.origin, self.use_pam.origin
            ));
        }
        parts.join("; ")
    }

    /// The lines the hardening remedy writes: every one needed, so that running the remedy of
    /// any finding gives the same file.
    ///
    /// A method that an `AuthenticationMethods` list combines with another one (a second
    /// factor such as `publickey,keyboard-interactive`) is left alone: turning it off would
    /// break that login path.
    fn hardening_lines(&self) -> Vec<&'static str> {
        let mut lines = Vec::new();
        let in_multi_factor = |method: &str| {
            self.authentication_methods.value.iter().any(|list| {
                list.contains(',')
                    && list
                        .split(',')
                        .any(|m| m.split(':').next().unwrap_or(m) == method)
            })
        };
        if self.password_login() {
            if !in_multi_factor("password") {
                lines.push("PasswordAuthentication no");
            }
            if !in_multi_factor("keyboard-interactive") {
                lines.push("KbdInteractiveAuthentication no");
            }
        }
        if self.permit_root_login.value == PermitRootLogin::Yes {
            lines.push("PermitRootLogin prohibit-password");
        }
        lines
    }

    fn remedy(&self, lines: &[&str]) -> Vec<String> {
        if lines.is_empty() {
            return Vec::new();
        }
        let quoted: Vec<String> = lines.iter().map(|l| format!("'{l}'")).collect();
        let mut out =
            vec!["ls -l /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys".to_owned()];
        let main = shell_quote(&self.main_config);
        out.push(PRIVSEP_DIR.to_owned());
        match &self.drop_in {
            DropIn::Unknown | DropIn::Effective => {
                out.push(format!("mkdir -p {DROP_IN_DIR}"));
                out.push(format!(
                    "printf '%s\\n' {} > {HARDENING_DROP_IN}",
                    quoted.join(" ")
                ));
                out.push(format!(
                    "if sshd -t; then systemctl reload ssh || systemctl reload sshd; else rm -f \
                     {HARDENING_DROP_IN}; echo 'sshd -t failed: change reverted'; fi"
                ));
            }
            DropIn::NotIncluded | DropIn::Preempted { .. } => {
                let backup = shell_quote(&format!("{}.molt-backup", self.main_config));
                out.push(format!("cp -p {main} {backup}"));
                out.push(format!(
                    "{{ printf '%s\\n' '# added by molt security audit: the first value wins' {}; cat {backup}; }} > {main}",
                    quoted.join(" ")
                ));
                out.push(format!(
                    "if sshd -t; then systemctl reload ssh || systemctl reload sshd; else cp -p \
                     {backup} {main}; echo 'sshd -t failed: change reverted'; fi"
                ));
            }
        }
        out.push(format!("sshd -T | {GREP_SETTINGS}"));
        out
    }

    fn drop_in_note(&self) -> String {
        match &self.drop_in {
            DropIn::Unknown => format!(
                " The remedy writes {HARDENING_DROP_IN}; if the last command still shows yes, \
                 {} does not include {DROP_IN_DIR}/*.conf before the setting, and the lines \
                 must go at the top of {} instead.",
                self.main_config, self.main_config
            ),
            DropIn::Effective => String::new(),
            DropIn::NotIncluded => format!(
                " {} does not include {DROP_IN_DIR}/*.conf, so the lines go at the top of it \
                 (sshd keeps the first value it reads); a backup is kept next to it.",
                self.main_config
            ),
            DropIn::Preempted { by } => {
                let places: Vec<String> = by.iter().map(ToString::to_string).collect();
                format!(
                    " A drop-in would be read after {}, and sshd keeps the first value, so the \
                     lines go at the top of {}; a backup is kept next to it.",
                    places.join(", "),
                    self.main_config
                )
            }
        }
    }
}

/// `sshd -t` and `sshd -T` refuse to run without sshd's privilege separation directory, which
/// exists only while sshd runs (not before a socket-activated sshd's first connection, nor
/// after it stopped). Without it the check fails and the remedy would revert a good change.
const PRIVSEP_DIR: &str = "install -d -m 0755 /run/sshd";

const GREP_SETTINGS: &str = "grep -Ei '^(passwordauthentication|kbdinteractiveauthentication|usepam|permitrootlogin|authenticationmethods) '";

/// Quotes `s` for a POSIX shell when it holds anything but safe path characters.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@%,".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A finding for when neither `sshd -T` nor the config files could be read.
pub fn unknown_finding(reason: &str) -> Finding {
    Finding::new(
        ids::SSH_UNKNOWN,
        Severity::Info,
        "could not determine sshd's settings",
        format!(
            "{reason}. Run the audit as root so that `sshd -T` can report the effective \
             settings."
        ),
    )
    .with_remedy([PRIVSEP_DIR.to_owned(), format!("sshd -T | {GREP_SETTINGS}")])
}

// ---------------------------------------------------------------------------------------------
// Collected directives, shared by both sources.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    Global,
    MatchAll,
    Conditional(String),
}

#[derive(Debug, Clone)]
struct Directive {
    keyword: String,
    args: Vec<String>,
    origin: Origin,
    scope: Scope,
    /// Reading order across all files.
    seq: usize,
}

/// The canonical lowercase keyword (old names mapped to new ones).
fn canonical_keyword(k: &str) -> String {
    let k = k.to_ascii_lowercase();
    match k.as_str() {
        "challengeresponseauthentication" => "kbdinteractiveauthentication".to_owned(),
        _ => k,
    }
}

fn parse_flag(v: &str) -> Option<bool> {
    if v.eq_ignore_ascii_case("yes") {
        Some(true)
    } else if v.eq_ignore_ascii_case("no") {
        Some(false)
    } else {
        None
    }
}

/// The winning directive for `keyword`: the first under `Match all` (it overrides the global
/// value for every connection), else the first global one, among those whose value parses.
fn winner<'a, T>(
    directives: &'a [Directive],
    keyword: &str,
    parse: impl Fn(&[String]) -> Option<T>,
) -> Option<(T, &'a Directive)> {
    let pick = |scope: &Scope| {
        directives
            .iter()
            .filter(|d| d.keyword == keyword && &d.scope == scope)
            .find_map(|d| parse(&d.args).map(|v| (v, d)))
    };
    pick(&Scope::MatchAll).or_else(|| pick(&Scope::Global))
}

fn first_flag(args: &[String]) -> Option<bool> {
    args.first().and_then(|a| parse_flag(a))
}

fn resolve(
    directives: &[Directive],
    source: Source,
    main_config: &str,
    mut notes: ParseNotes,
) -> SshdSettings {
    // Values sshd would refuse are noted (sshd itself would not start with them).
    for d in directives {
        let bad = match d.keyword.as_str() {
            "passwordauthentication" | "kbdinteractiveauthentication" | "usepam" => {
                first_flag(&d.args).is_none()
            }
            "permitrootlogin" => d
                .args
                .first()
                .and_then(|a| PermitRootLogin::parse(a))
                .is_none(),
            "port" => d
                .args
                .first()
                .and_then(|a| a.parse::<u16>().ok())
                .is_none_or(|p| p == 0),
            _ => false,
        };
        if bad {
            let (file, line) = match &d.origin {
                Origin::File { path, line } => (Some(path.as_str()), *line),
                _ => (None, 0),
            };
            notes.push(
                file,
                line,
                format!("unsupported value for {}", d.keyword),
                &d.args.join(" "),
            );
        }
    }
    let setting = |found: Option<(bool, &Directive)>, default: bool| match found {
        Some((value, d)) => Setting {
            value,
            origin: d.origin.clone(),
        },
        None => Setting::default_value(default),
    };
    let password_authentication = setting(
        winner(directives, "passwordauthentication", first_flag),
        true,
    );
    let kbd_interactive_authentication = match source {
        // Old `sshd -T` prints both names: keyboard-interactive is on if either is.
        Source::SshdT => {
            let any_yes = directives.iter().find(|d| {
                d.keyword == "kbdinteractiveauthentication" && first_flag(&d.args) == Some(true)
            });
            match any_yes {
                Some(d) => Setting {
                    value: true,
                    origin: d.origin.clone(),
                },
                None => setting(
                    winner(directives, "kbdinteractiveauthentication", first_flag),
                    true,
                ),
            }
        }
        Source::ConfigFiles => setting(
            winner(directives, "kbdinteractiveauthentication", first_flag),
            true,
        ),
    };
    let use_pam = setting(winner(directives, "usepam", first_flag), false);
    let permit_root_login = match winner(directives, "permitrootlogin", |a| {
        a.first().and_then(|v| PermitRootLogin::parse(v))
    }) {
        Some((value, d)) => Setting {
            value,
            origin: d.origin.clone(),
        },
        None => Setting::default_value(PermitRootLogin::ProhibitPassword),
    };
    let authentication_methods = match winner(directives, "authenticationmethods", |a| {
        (!a.is_empty()).then(|| a.to_vec())
    }) {
        Some((value, d)) => Setting {
            value,
            origin: d.origin.clone(),
        },
        None => Setting::default_value(vec!["any".to_owned()]),
    };
    let mut ports: Vec<u16> = Vec::new();
    for d in directives
        .iter()
        .filter(|d| d.keyword == "port" && d.scope == Scope::Global)
    {
        if let Some(p) = d.args.first().and_then(|a| a.parse::<u16>().ok())
            && p != 0
            && !ports.contains(&p)
        {
            ports.push(p);
        }
    }
    if ports.is_empty() {
        ports.push(22);
    }
    let conditional = directives
        .iter()
        .filter_map(|d| match &d.scope {
            Scope::Conditional(criteria) => Some(ConditionalSetting {
                criteria: criteria.clone(),
                keyword: d.keyword.clone(),
                value: d.args.join(" "),
                origin: d.origin.clone(),
            }),
            _ => None,
        })
        .collect();
    SshdSettings {
        source,
        main_config: main_config.to_owned(),
        password_authentication,
        kbd_interactive_authentication,
        use_pam,
        permit_root_login,
        authentication_methods,
        ports,
        conditional,
        files_read: Vec::new(),
        drop_in: DropIn::Unknown,
        lines_used: directives.len(),
        notes,
    }
}

// ---------------------------------------------------------------------------------------------
// sshd -T

/// Keywords whose presence marks text as `sshd -T` output.
const SSHD_T_MARKERS: &[&str] = &[
    "port",
    "passwordauthentication",
    "permitrootlogin",
    "pubkeyauthentication",
    "usepam",
    "kbdinteractiveauthentication",
];

/// Parses `sshd -T` output. `None` when the text does not look like it (no known keyword:
/// an error message, empty output), so the caller falls back to [`parse_sshd_config`].
pub fn parse_sshd_t(text: &str) -> Option<SshdSettings> {
    let mut notes = ParseNotes::default();
    let mut directives = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        let key_ok = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !key_ok || value.trim().is_empty() {
            notes.push(None, i + 1, "not a `keyword value` line", raw);
            continue;
        }
        directives.push(Directive {
            keyword: canonical_keyword(key),
            args: value.split_ascii_whitespace().map(str::to_owned).collect(),
            origin: Origin::SshdT,
            scope: Scope::Global,
            seq: directives.len(),
        });
    }
    if !directives
        .iter()
        .any(|d| SSHD_T_MARKERS.contains(&d.keyword.as_str()))
    {
        return None;
    }
    Some(resolve(&directives, Source::SshdT, DEFAULT_CONFIG, notes))
}

// ---------------------------------------------------------------------------------------------
// sshd_config and includes

/// Read access to the configuration files, so the parser does no I/O itself.
pub trait ConfigFs {
    /// The whole text of the file at `path` (invalid UTF-8 replaced, say).
    fn read_file(&mut self, path: &str) -> io::Result<String>;
    /// The names (not paths) of the entries of directory `dir`, in any order.
    fn list_dir(&mut self, dir: &str) -> io::Result<Vec<String>>;
}

/// A [`ConfigFs`] made of two closures.
pub struct FnFs<R, L> {
    /// Reads a file.
    pub read: R,
    /// Lists a directory's entry names.
    pub list: L,
}

impl<R, L> ConfigFs for FnFs<R, L>
where
    R: FnMut(&str) -> io::Result<String>,
    L: FnMut(&str) -> io::Result<Vec<String>>,
{
    fn read_file(&mut self, path: &str) -> io::Result<String> {
        (self.read)(path)
    }
    fn list_dir(&mut self, dir: &str) -> io::Result<Vec<String>> {
        (self.list)(dir)
    }
}

/// An in-memory file system: absolute path → contents. Directories are implied by the paths.
impl ConfigFs for BTreeMap<String, String> {
    fn read_file(&mut self, path: &str) -> io::Result<String> {
        self.get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn list_dir(&mut self, dir: &str) -> io::Result<Vec<String>> {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let mut names: Vec<String> = self
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(|rest| rest.split('/').next().unwrap_or(rest).to_owned())
            .collect();
        names.dedup();
        if names.is_empty() {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(names)
    }
}

struct Walker<'a, F: ConfigFs> {
    fs: &'a mut F,
    directives: Vec<Directive>,
    notes: ParseNotes,
    files_read: Vec<String>,
    /// Files being parsed, outermost first (for cycle detection).
    stack: Vec<String>,
    /// Position (in `directives`) where the hardening drop-in would be read, if the drop-in
    /// directory is included from a global context.
    drop_in_seq: Option<usize>,
    seq: usize,
}

/// Parses `main_path` (normally [`DEFAULT_CONFIG`]) and its includes through `fs`.
///
/// Fails only when the main file cannot be read; every other problem (unreadable or missing
/// includes, cycles, bad lines) is a note in [`SshdSettings::notes`].
pub fn parse_sshd_config<F: ConfigFs>(main_path: &str, fs: &mut F) -> Result<SshdSettings, String> {
    let text = fs
        .read_file(main_path)
        .map_err(|e| format!("cannot read {main_path}: {e}"))?;
    let mut w = Walker {
        fs,
        directives: Vec::new(),
        notes: ParseNotes::default(),
        files_read: Vec::new(),
        stack: Vec::new(),
        drop_in_seq: None,
        seq: 0,
    };
    w.parse_file(main_path, &text, Scope::Global);
    let Walker {
        directives,
        notes,
        files_read,
        drop_in_seq,
        ..
    } = w;
    let mut settings = resolve(&directives, Source::ConfigFiles, main_path, notes);
    settings.files_read = files_read;
    settings.drop_in = match drop_in_seq {
        None => DropIn::NotIncluded,
        Some(at) => {
            // Only the keywords the remedy must change matter; for each, the value that wins
            // now must be read after the drop-in (and not come from a `Match all` block, whose
            // values override global ones).
            let password = settings.password_login();
            let needed = [
                (
                    "passwordauthentication",
                    password && settings.password_authentication.value,
                ),
                (
                    "kbdinteractiveauthentication",
                    password
                        && settings.kbd_interactive_authentication.value
                        && settings.use_pam.value,
                ),
                (
                    "permitrootlogin",
                    settings.permit_root_login.value == PermitRootLogin::Yes,
                ),
            ];
            let mut by = Vec::new();
            for (keyword, _) in needed.iter().filter(|(_, needed)| *needed) {
                let of_keyword = |scope: Scope| {
                    directives
                        .iter()
                        .find(move |d| d.keyword == *keyword && d.scope == scope)
                };
                if let Some(d) = of_keyword(Scope::MatchAll) {
                    by.push(d.origin.clone());
                } else if let Some(d) = of_keyword(Scope::Global).filter(|d| d.seq < at) {
                    by.push(d.origin.clone());
                }
            }
            if by.is_empty() {
                DropIn::Effective
            } else {
                DropIn::Preempted { by }
            }
        }
    };
    Ok(settings)
}

impl<F: ConfigFs> Walker<'_, F> {
    /// Parses one file. `initial` is the scope of the line that included it (Global for the
    /// main file): an included file starts in its includer's Match state, and when that is a
    /// conditional block, everything in the file stays conditional (sshd's NEVERMATCH).
    fn parse_file(&mut self, path: &str, text: &str, initial: Scope) {
        self.files_read.push(path.to_owned());
        self.stack.push(path.to_owned());
        let forced = matches!(initial, Scope::Conditional(_));
        let mut scope = initial.clone();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let Some((keyword, rest)) = split_keyword(raw) else {
                continue;
            };
            if !keyword.bytes().all(|b| b.is_ascii_alphanumeric()) {
                self.notes.push(Some(path), n, "not a keyword", raw);
                continue;
            }
            let Some(mut args) = split_args(rest) else {
                self.notes.push(Some(path), n, "unbalanced quotes", raw);
                continue;
            };
            if let Some(hash) = args.iter().position(|a| a.starts_with('#')) {
                args.truncate(hash);
            }
            let keyword = canonical_keyword(keyword);
            if args.is_empty() {
                self.notes
                    .push(Some(path), n, format!("no argument after {keyword}"), raw);
                continue;
            }
            match keyword.as_str() {
                "match" => {
                    scope = if forced {
                        initial.clone()
                    } else if args.len() == 1
                        && args.first().is_some_and(|a| a.eq_ignore_ascii_case("all"))
                    {
                        Scope::MatchAll
                    } else {
                        Scope::Conditional(args.join(" "))
                    };
                }
                "include" => {
                    for pattern in &args {
                        self.include(path, n, raw, pattern, &scope);
                    }
                }
                _ => {
                    self.directives.push(Directive {
                        keyword,
                        args,
                        origin: Origin::File {
                            path: path.to_owned(),
                            line: n,
                        },
                        scope: scope.clone(),
                        seq: self.seq,
                    });
                    self.seq += 1;
                }
            }
        }
        self.stack.pop();
    }

    fn include(&mut self, from: &str, line: usize, raw: &str, pattern: &str, scope: &Scope) {
        if pattern.starts_with('~') {
            self.notes.push(
                Some(from),
                line,
                "Include relative to a home directory is not followed",
                raw,
            );
            return;
        }
        let pattern = if pattern.starts_with('/') {
            pattern.to_owned()
        } else {
            format!("{SSHDIR}/{pattern}")
        };
        let mut paths = self.expand(&pattern);
        paths.sort();
        paths.dedup();
        // Where the hardening drop-in would be read: just before the first file of this
        // include that sorts after it (or is it), else after the last one.
        let mut drop_in_pending = *scope == Scope::Global
            && self.drop_in_seq.is_none()
            && glob_path_matches(&pattern, HARDENING_DROP_IN);
        for path in paths {
            if drop_in_pending && path.as_str() >= HARDENING_DROP_IN {
                self.drop_in_seq = Some(self.seq);
                drop_in_pending = false;
            }
            if self.stack.len() >= MAX_INCLUDE_DEPTH {
                self.notes.push(
                    Some(from),
                    line,
                    format!("includes nested deeper than {MAX_INCLUDE_DEPTH}; {path} not read"),
                    raw,
                );
                continue;
            }
            if self.stack.contains(&path) {
                self.notes.push(
                    Some(from),
                    line,
                    format!("include cycle: {path} is already being read"),
                    raw,
                );
                continue;
            }
            if self.files_read.len() >= MAX_FILES {
                self.notes.push(
                    Some(from),
                    line,
                    format!("more than {MAX_FILES} files; {path} not read"),
                    raw,
                );
                continue;
            }
            match self.fs.read_file(&path) {
                Ok(text) => self.parse_file(&path, &text, scope.clone()),
                Err(e) => {
                    self.notes
                        .push(Some(from), line, format!("cannot read {path}: {e}"), raw)
                }
            }
        }
        if drop_in_pending {
            self.drop_in_seq = Some(self.seq);
        }
    }

    /// Expands a glob path, one component at a time. A path without wildcards is returned as
    /// is (reading it will tell whether it exists).
    fn expand(&mut self, pattern: &str) -> Vec<String> {
        let mut current = vec![String::new()];
        let components: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
        for component in components {
            let mut next = Vec::new();
            for base in &current {
                if has_magic(component) {
                    let dir = if base.is_empty() { "/" } else { base.as_str() };
                    let Ok(mut names) = self.fs.list_dir(dir) else {
                        continue;
                    };
                    names.sort();
                    for name in names {
                        if glob_match(component, &name) {
                            next.push(format!("{base}/{name}"));
                        }
                    }
                } else {
                    next.push(format!("{base}/{component}"));
                }
                if next.len() > MAX_FILES {
                    break;
                }
            }
            current = next;
        }
        current.retain(|p| !p.is_empty());
        current
    }
}

/// Splits a config line into keyword and the rest, as sshd's `strdelim` does: the keyword ends
/// at whitespace or `=`, and one `=` may separate it from the arguments. `None` for blank and
/// comment lines.
fn split_keyword(line: &str) -> Option<(&str, &str)> {
    let line = line.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\u{c}');
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line
        .find(|c: char| c.is_ascii_whitespace() || c == '=')
        .unwrap_or(line.len());
    let (keyword, rest) = line.split_at(end);
    if keyword.is_empty() {
        return None;
    }
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let rest = rest.strip_prefix('=').unwrap_or(rest);
    Some((
        keyword,
        rest.trim_start_matches(|c: char| c.is_ascii_whitespace()),
    ))
}

fn has_magic(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// True when the full path `path` matches the glob `pattern` component by component.
fn glob_path_matches(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    let q: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    p.len() == q.len() && p.iter().zip(&q).all(|(p, q)| glob_match(p, q))
}

/// fnmatch(3)-style matching of one path component: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`/`[^x]`,
/// `\` escapes. A leading `.` must be matched literally, as glob(3) requires. Linear-time
/// backtracking on the last `*` only, so hostile patterns cannot blow up.
fn glob_match(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        let c = n.get(ni).copied().unwrap_or_default();
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
                continue;
            }
            Some('?') => {
                pi += 1;
                ni += 1;
                continue;
            }
            Some('[') => {
                if let Some((matched, len)) = match_class(p.get(pi + 1..).unwrap_or(&[]), c) {
                    if matched {
                        pi += 1 + len;
                        ni += 1;
                        continue;
                    }
                } else if c == '[' {
                    // An unclosed `[` is a literal.
                    pi += 1;
                    ni += 1;
                    continue;
                }
            }
            Some('\\') if p.get(pi + 1) == Some(&c) => {
                pi += 2;
                ni += 1;
                continue;
            }
            Some(&pc) if pc == c && pc != '\\' => {
                pi += 1;
                ni += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    p.get(pi..).unwrap_or(&[]).iter().all(|&c| c == '*')
}

/// Matches `c` against a bracket expression starting just after `[`. Returns whether it
/// matched and how many pattern characters the expression used (including the closing `]`),
/// or `None` when there is no closing `]`.
fn match_class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 0;
    let negate = matches!(p.first(), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let pc = *p.get(i)?;
        if pc == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&e| e != ']') {
            let end = *p.get(i + 2)?;
            if pc <= c && c <= end {
                matched = true;
            }
            i += 3;
        } else {
            if pc == c {
                matched = true;
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_basics() {
        assert!(glob_match("*.conf", "50-cloud-init.conf"));
        assert!(!glob_match("*.conf", ".hidden.conf"));
        assert!(!glob_match("*.conf", "x.conf.bak"));
        assert!(glob_match("0?-*.conf", "00-a.conf"));
        assert!(glob_match("[0-4]*", "3x"));
        assert!(!glob_match("[!0-4]*", "3x"));
        assert!(glob_match("a[", "a["));
        assert!(glob_match("*", ""));
        assert!(glob_match("**a*b", "xxaxxb"));
        assert!(!glob_match("*a*b", "xxaxx"));
        assert!(glob_match(r"\*", "*"));
        let long = "a".repeat(5000);
        assert!(!glob_match(
            &"*a".repeat(50).to_string(),
            &format!("{long}b")
        ));
    }

    #[test]
    fn keyword_split() {
        assert_eq!(
            split_keyword("  PasswordAuthentication yes"),
            Some(("PasswordAuthentication", "yes"))
        );
        assert_eq!(split_keyword("Port=2222"), Some(("Port", "2222")));
        assert_eq!(split_keyword("Port = 2222"), Some(("Port", "2222")));
        assert_eq!(split_keyword("# comment"), None);
        assert_eq!(split_keyword("   "), None);
        assert_eq!(split_keyword("=x"), None);
    }

    #[test]
    fn password_login_logic() {
        let mut s = parse_sshd_t("port 22\npasswordauthentication no\nkbdinteractiveauthentication yes\nusepam yes\nauthenticationmethods any\n").unwrap();
        assert!(
            s.password_login(),
            "kbd-interactive through PAM asks for the password"
        );
        s.use_pam.value = false;
        assert!(!s.password_login());
        s.password_authentication.value = true;
        s.authentication_methods.value = vec!["publickey,password".into()];
        assert!(!s.password_login(), "password only as a second factor");
        s.authentication_methods.value = vec!["publickey".into(), "password".into()];
        assert!(s.password_login());
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/etc/ssh/sshd_config"), "/etc/ssh/sshd_config");
        assert_eq!(shell_quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
