//! sshd: `sshd -T` output and sshd_config with includes.

mod common;

use std::collections::BTreeMap;

use common::{etc_ssh, fixture};
use molt_audit::Severity;
use molt_audit::findings::ids;
use molt_audit::sshd::{self, DropIn, FnFs, HARDENING_DROP_IN, Origin, PermitRootLogin, Source};

fn file(path: &str, line: usize) -> Origin {
    Origin::File {
        path: path.to_owned(),
        line,
    }
}

fn mem_fs(files: &[(&str, &str)]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect()
}

#[test]
fn sshd_t_fixture() {
    let s = sshd::parse_sshd_t(&fixture("sshd_T_output")).expect("recognised");
    assert_eq!(s.source, Source::SshdT);
    assert!(s.notes.is_empty(), "{:?}", s.notes);
    assert!(s.password_authentication.value);
    assert_eq!(s.password_authentication.origin, Origin::SshdT);
    assert!(!s.kbd_interactive_authentication.value);
    assert!(s.use_pam.value);
    assert_eq!(s.permit_root_login.value, PermitRootLogin::ProhibitPassword);
    assert_eq!(s.authentication_methods.value, ["any"]);
    assert_eq!(s.ports, [22]);
    assert!(s.password_login());
    assert!(!s.root_password_login());
    assert_eq!(s.drop_in, DropIn::Unknown);

    let f = s.findings();
    let summary: Vec<(&str, Severity)> = f.iter().map(|f| (f.id, f.severity)).collect();
    assert_eq!(
        summary,
        [
            (ids::SSH_PASSWORD_LOGIN, Severity::Warn),
            (ids::SSH_ROOT_LOGIN, Severity::Info),
        ]
    );
    let remedy = &f[0].remedy;
    assert_eq!(
        remedy[0], "ls -l /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys",
        "keys are listed before anything changes"
    );
    assert!(remedy.iter().any(|c| c
        == &format!(
            "printf '%s\\n' 'PasswordAuthentication no' 'KbdInteractiveAuthentication no' > {HARDENING_DROP_IN}"
        )));
    assert!(
        remedy
            .iter()
            .any(|c| c.starts_with("if sshd -t; then systemctl reload ssh")
                && c.contains(&format!("rm -f {HARDENING_DROP_IN}")))
    );
    assert!(remedy.last().unwrap().starts_with("sshd -T | grep"));
    // sshd -t refuses to run without /run/sshd (sshd not running): made before the check.
    let privsep = remedy
        .iter()
        .position(|c| c == "install -d -m 0755 /run/sshd");
    let check = remedy.iter().position(|c| c.starts_with("if sshd -t"));
    assert!(privsep.is_some() && privsep < check, "{remedy:?}");
    assert!(!remedy.iter().any(|c| c.contains("sed ")));
    assert!(
        f[1].remedy.is_empty(),
        "no remedy that could lock out a root-only host"
    );
}

#[test]
fn sshd_t_root_with_password_is_critical() {
    let text =
        fixture("sshd_T_output").replace("permitrootlogin without-password", "permitrootlogin yes");
    let s = sshd::parse_sshd_t(&text).unwrap();
    assert!(s.root_password_login());
    let f = s.findings();
    assert_eq!(f[0].id, ids::SSH_PASSWORD_LOGIN);
    assert_eq!(f[0].severity, Severity::Critical);
    assert_eq!(f[1].id, ids::SSH_ROOT_LOGIN);
    assert_eq!(f[1].severity, Severity::Warn);
    // Both remedies write the same complete file, so running either (or both) is the same.
    assert_eq!(f[0].remedy, f[1].remedy);
    assert!(
        f[0].remedy
            .iter()
            .any(|c| c.contains("'PermitRootLogin prohibit-password'"))
    );
}

#[test]
fn sshd_t_old_challenge_response_name() {
    let s = sshd::parse_sshd_t(
        "port 22\npasswordauthentication no\nkbdinteractiveauthentication no\n\
         challengeresponseauthentication yes\nusepam yes\n",
    )
    .unwrap();
    assert!(s.kbd_interactive_authentication.value);
    assert!(
        s.password_login(),
        "PAM keyboard-interactive still asks for the password"
    );
}

#[test]
fn sshd_t_rejects_non_output() {
    assert!(sshd::parse_sshd_t("").is_none());
    assert!(sshd::parse_sshd_t("sshd: no hostkeys available -- exiting.\n").is_none());
    assert!(sshd::parse_sshd_t("Permission denied\n").is_none());
}

#[test]
fn config_fixture_with_includes() {
    let mut fs = etc_ssh();
    let s = sshd::parse_sshd_config(sshd::DEFAULT_CONFIG, &mut fs).unwrap();
    assert_eq!(s.source, Source::ConfigFiles);
    assert!(s.notes.is_empty(), "{:?}", s.notes);
    assert_eq!(
        s.files_read,
        [
            "/etc/ssh/sshd_config",
            "/etc/ssh/sshd_config.d/10-ports.conf",
            "/etc/ssh/sshd_config.d/extra/limits.conf",
            "/etc/ssh/sshd_config.d/50-cloud-init.conf",
        ],
        "sorted glob, nested relative include, no README, no dot file"
    );
    // First value wins: cloud-init's drop-in beats the commented default.
    assert!(s.password_authentication.value);
    assert_eq!(
        s.password_authentication.origin,
        file("/etc/ssh/sshd_config.d/50-cloud-init.conf", 1)
    );
    assert_eq!(s.permit_root_login.value, PermitRootLogin::Yes);
    assert_eq!(s.permit_root_login.origin, file("/etc/ssh/sshd_config", 28));
    assert!(!s.kbd_interactive_authentication.value);
    assert_eq!(s.use_pam.origin, file("/etc/ssh/sshd_config", 43));
    assert_eq!(s.ports, [22, 2222]);
    // `Match User deploy` settings are conditional; `Match all` ones are not.
    let cond: Vec<(&str, &str, &str)> = s
        .conditional
        .iter()
        .map(|c| (c.criteria.as_str(), c.keyword.as_str(), c.value.as_str()))
        .collect();
    assert_eq!(
        cond,
        [
            ("User deploy", "passwordauthentication", "yes"),
            ("User deploy", "x11forwarding", "no"),
        ]
    );
    assert_eq!(s.drop_in, DropIn::Effective);

    let f = s.findings();
    let summary: Vec<(&str, Severity)> = f.iter().map(|f| (f.id, f.severity)).collect();
    assert_eq!(
        summary,
        [
            (ids::SSH_PASSWORD_LOGIN, Severity::Critical),
            (ids::SSH_ROOT_LOGIN, Severity::Warn),
            (ids::SSH_MATCH_OVERRIDE, Severity::Warn),
        ]
    );
    assert!(
        f[0].detail.contains("50-cloud-init.conf:1"),
        "{}",
        f[0].detail
    );
    assert!(
        f[2].detail.contains("/etc/ssh/sshd_config:56"),
        "{}",
        f[2].detail
    );
    // The drop-in takes effect: it sorts before 50-cloud-init.conf and the Include comes
    // before `PermitRootLogin yes`.
    assert!(f[0].remedy.iter().any(|c| c.contains(HARDENING_DROP_IN)));
    assert!(!f[0].remedy.iter().any(|c| c.contains("molt-backup")));
}

#[test]
fn drop_in_preempted_by_main_file() {
    let mut fs = mem_fs(&[
        (
            "/etc/ssh/sshd_config",
            "PasswordAuthentication yes\nInclude /etc/ssh/sshd_config.d/*.conf\n",
        ),
        ("/etc/ssh/sshd_config.d/99-x.conf", "PermitRootLogin no\n"),
    ]);
    let s = sshd::parse_sshd_config("/etc/ssh/sshd_config", &mut fs).unwrap();
    assert_eq!(
        s.drop_in,
        DropIn::Preempted {
            by: vec![file("/etc/ssh/sshd_config", 1)]
        }
    );
    let f = s.findings();
    assert_eq!(f[0].id, ids::SSH_PASSWORD_LOGIN);
    let r = &f[0].remedy;
    assert!(r.contains(&"cp -p /etc/ssh/sshd_config /etc/ssh/sshd_config.molt-backup".to_owned()));
    assert!(
        r.iter()
            .any(|c| c.starts_with("{ printf '%s\\n' '# added by molt")
                && c.ends_with("cat /etc/ssh/sshd_config.molt-backup; } > /etc/ssh/sshd_config"))
    );
    assert!(r.iter().any(|c| c.contains("else cp -p /etc/ssh/sshd_config.molt-backup /etc/ssh/sshd_config")));
}

#[test]
fn drop_in_position_among_other_drop_ins() {
    // A drop-in sorting before ours, setting the value: ours would come second and lose.
    let mut fs = mem_fs(&[
        (
            "/etc/ssh/sshd_config",
            "Include /etc/ssh/sshd_config.d/*.conf\n",
        ),
        (
            "/etc/ssh/sshd_config.d/0-early.conf",
            "PasswordAuthentication yes\n",
        ),
    ]);
    let s = sshd::parse_sshd_config("/etc/ssh/sshd_config", &mut fs).unwrap();
    assert!(
        matches!(s.drop_in, DropIn::Preempted { .. }),
        "{:?}",
        s.drop_in
    );

    // Byte order: "00-molt-hardening.conf" sorts before "000-early.conf" ('-' < '0').
    let mut fs = mem_fs(&[
        (
            "/etc/ssh/sshd_config",
            "Include /etc/ssh/sshd_config.d/*.conf\n",
        ),
        (
            "/etc/ssh/sshd_config.d/000-early.conf",
            "PasswordAuthentication yes\n",
        ),
    ]);
    let s = sshd::parse_sshd_config("/etc/ssh/sshd_config", &mut fs).unwrap();
    assert_eq!(s.drop_in, DropIn::Effective);

    // An existing hardening drop-in that is read first fixes things: no finding.
    let mut fs = fs_with_existing();
    let s = sshd::parse_sshd_config("/etc/ssh/sshd_config", &mut fs).unwrap();
    assert!(!s.password_login());
    assert!(s.findings().iter().all(|f| f.id != ids::SSH_PASSWORD_LOGIN));
}

fn fs_with_existing() -> BTreeMap<String, String> {
    mem_fs(&[
        (
            "/etc/ssh/sshd_config",
            "Include /etc/ssh/sshd_config.d/*.conf\nUsePAM yes\n",
        ),
        (
            HARDENING_DROP_IN,
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n",
        ),
        (
            "/etc/ssh/sshd_config.d/50-cloud-init.conf",
            "PasswordAuthentication yes\n",
        ),
    ])
}

#[test]
fn no_include_means_prepend() {
    let mut fs = mem_fs(&[("/etc/ssh/sshd_config", "UsePAM yes\n")]);
    let s = sshd::parse_sshd_config("/etc/ssh/sshd_config", &mut fs).unwrap();
    assert_eq!(s.drop_in, DropIn::NotIncluded);
    // Defaults: PasswordAuthentication yes, KbdInteractiveAuthentication yes.
    assert_eq!(s.password_authentication.origin, Origin::Default);
    assert_eq!(s.permit_root_login.value, PermitRootLogin::ProhibitPassword);
    assert_eq!(s.permit_root_login.origin, Origin::Default);
    let f = s.findings();
    assert_eq!(f[0].severity, Severity::Warn);
    assert!(f[0].detail.contains("does not include"), "{}", f[0].detail);
    assert!(f[0].remedy.iter().any(|c| c.contains("molt-backup")));
}

#[test]
fn match_all_overrides_global() {
    let mut fs = mem_fs(&[(
        "/etc/ssh/sshd_config",
        "PasswordAuthentication no\nMatch all\nPasswordAuthentication yes\n",
    )]);
    let s = sshd::parse_sshd_config("/etc/ssh/sshd_config", &mut fs).unwrap();
    assert!(s.password_authentication.value);
    assert_eq!(
        s.password_authentication.origin,
        file("/etc/ssh/sshd_config", 3)
    );
}

#[test]
fn include_inside_match_is_conditional() {
    let mut fs = mem_fs(&[
        (
            "/etc/ssh/sshd_config",
            "PasswordAuthentication no\nMatch Address 10.0.0.0/8\n  Include lan.conf\n",
        ),
        (
            "/etc/ssh/lan.conf",
            "PasswordAuthentication yes\nMatch all\nPermitRootLogin yes\n",
        ),
    ]);
    let s = sshd::parse_sshd_config("/etc/ssh/sshd_config", &mut fs).unwrap();
    assert!(!s.password_authentication.value);
    assert_eq!(s.permit_root_login.value, PermitRootLogin::ProhibitPassword);
    assert_eq!(s.conditional.len(), 2);
    assert!(
        s.conditional
            .iter()
            .all(|c| c.criteria == "Address 10.0.0.0/8")
    );
    let f = s.findings();
    assert!(f.iter().any(|f| f.id == ids::SSH_MATCH_OVERRIDE));
}

#[test]
fn included_file_cannot_leak_its_match_state() {
    let mut fs = mem_fs(&[
        (
            "/etc/ssh/sshd_config",
            "Include /etc/ssh/a.conf\nPasswordAuthentication no\n",
        ),
        ("/etc/ssh/a.conf", "Match User x\n  X11Forwarding no\n"),
    ]);
    let s = sshd::parse_sshd_config("/etc/ssh/sshd_config", &mut fs).unwrap();
    assert!(!s.password_authentication.value, "line 2 is global again");
}

#[test]
fn include_cycles_and_depth_are_cut() {
    let mut fs = mem_fs(&[
        (
            "/etc/ssh/sshd_config",
            "Include /etc/ssh/a.conf\nPasswordAuthentication no\n",
        ),
        ("/etc/ssh/a.conf", "Include b.conf\n"),
        (
            "/etc/ssh/b.conf",
            "Include /etc/ssh/a.conf /etc/ssh/sshd_config\nPermitRootLogin no\n",
        ),
    ]);
    let s = sshd::parse_sshd_config("/etc/ssh/sshd_config", &mut fs).unwrap();
    assert_eq!(s.notes.total, 2, "{:?}", s.notes);
    assert!(
        s.notes
            .kept
            .iter()
            .all(|n| n.reason.contains("include cycle"))
    );
    assert_eq!(s.permit_root_login.value, PermitRootLogin::No);
    assert!(!s.password_authentication.value);

    // A chain of 40 files: cut at depth 16.
    let mut files = vec![("/etc/ssh/sshd_config".to_owned(), "Include f0\n".to_owned())];
    for i in 0..40 {
        files.push((format!("/etc/ssh/f{i}"), format!("Include f{}\n", i + 1)));
    }
    let mut fs: BTreeMap<String, String> = files.into_iter().collect();
    let s = sshd::parse_sshd_config("/etc/ssh/sshd_config", &mut fs).unwrap();
    assert_eq!(s.files_read.len(), sshd::MAX_INCLUDE_DEPTH);
    assert!(
        s.notes
            .kept
            .iter()
            .any(|n| n.reason.contains("deeper than 16"))
    );

    // Diamond includes that would explode: capped.
    let mut fs = BTreeMap::new();
    fs.insert(
        "/etc/ssh/sshd_config".to_owned(),
        "Include d0/*\n".to_owned(),
    );
    for i in 0..12 {
        for j in 0..4 {
            fs.insert(
                format!("/etc/ssh/d{i}/{j}"),
                format!("Include d{}/*\n", i + 1),
            );
        }
    }
    let s = sshd::parse_sshd_config("/etc/ssh/sshd_config", &mut fs).unwrap();
    assert_eq!(s.files_read.len(), sshd::MAX_FILES);
    assert!(s.notes.total > 0);
}

#[test]
fn missing_and_unreadable_includes_are_notes() {
    let mut fs = mem_fs(&[(
        "/etc/ssh/sshd_config",
        "Include /etc/ssh/nowhere/*.conf\nInclude /etc/ssh/missing.conf\nInclude ~/x.conf\n",
    )]);
    let s = sshd::parse_sshd_config("/etc/ssh/sshd_config", &mut fs).unwrap();
    // A glob without matches is silent (as in sshd); a named missing file and a ~ path are noted.
    assert_eq!(s.notes.total, 2, "{:?}", s.notes);
    assert_eq!(s.drop_in, DropIn::NotIncluded);
}

#[test]
fn main_file_unreadable_is_an_error() {
    let mut fs = BTreeMap::new();
    let e = sshd::parse_sshd_config("/etc/ssh/sshd_config", &mut fs).unwrap_err();
    assert!(e.contains("/etc/ssh/sshd_config"), "{e}");
    let f = sshd::unknown_finding(&e);
    assert_eq!(f.id, ids::SSH_UNKNOWN);
}

#[test]
fn closures_as_file_system_and_keyword_spellings() {
    let mut fsys = FnFs {
        read: |p: &str| {
            match p {
            "/etc/ssh/sshd_config" => Ok("passwordauthentication=No\nPermitRootLogin  \"no\"\nAuthenticationMethods publickey\n".to_owned()),
            _ => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        }
        },
        list: |_: &str| Ok(Vec::new()),
    };
    let s = sshd::parse_sshd_config("/etc/ssh/sshd_config", &mut fsys).unwrap();
    assert!(!s.password_authentication.value);
    assert_eq!(s.permit_root_login.value, PermitRootLogin::No);
    assert_eq!(s.authentication_methods.value, ["publickey"]);
    assert!(!s.password_login());
    assert!(s.findings().is_empty());
}

#[test]
fn bad_values_are_noted_not_applied() {
    let mut fs = mem_fs(&[(
        "/etc/ssh/sshd_config",
        "PasswordAuthentication maybe\nPermitRootLogin sometimes\nPort 0\nPort x\nPort 2200\nUsePAM\nX11Forwarding \"yes\n",
    )]);
    let s = sshd::parse_sshd_config("/etc/ssh/sshd_config", &mut fs).unwrap();
    assert!(
        s.password_authentication.value,
        "default, the bad value is ignored"
    );
    assert_eq!(s.password_authentication.origin, Origin::Default);
    assert_eq!(s.permit_root_login.origin, Origin::Default);
    assert_eq!(s.ports, [2200]);
    // maybe, sometimes, Port 0, Port x, UsePAM without argument, unbalanced quote.
    assert_eq!(s.notes.total, 6, "{:?}", s.notes);
    let f = s.findings();
    assert!(f.iter().any(|f| f.id == ids::PARSE_INCOMPLETE));
}

#[test]
fn second_factor_methods_are_not_turned_off() {
    // Password alone is allowed (second list), but keyboard-interactive is a second factor
    // after a key in the first list: the remedy must not disable it.
    let s = sshd::parse_sshd_t(
        "port 22\npasswordauthentication yes\nkbdinteractiveauthentication yes\nusepam yes\n\
         authenticationmethods publickey,keyboard-interactive password\n",
    )
    .unwrap();
    assert!(s.password_login());
    let f = s.findings();
    let r = f[0].remedy.join("\n");
    assert!(r.contains("'PasswordAuthentication no'"), "{r}");
    assert!(!r.contains("KbdInteractiveAuthentication"), "{r}");
}

#[test]
fn repeated_ports_are_listed_once() {
    let mut fs = mem_fs(&[("/etc/ssh/sshd_config", "Port 22\nPort 2222\nPort 22\n")]);
    let s = sshd::parse_sshd_config("/etc/ssh/sshd_config", &mut fs).unwrap();
    assert_eq!(s.ports, [22, 2222]);
    assert_eq!(s.lines_used, 3);
}
