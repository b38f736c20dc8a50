//! Bad input: truncated lines, garbage, empty text, binary junk. Every parser must return
//! (never panic) and say what it could not use.

mod common;

use std::collections::BTreeMap;

use common::{etc_ssh, fixture};
use molt_audit::Severity;
use molt_audit::docker;
use molt_audit::findings::ids;
use molt_audit::firewall::ufw::{self, UfwState};
use molt_audit::firewall::{self, Family, FirewallContext, FirewallInputs, iptables, nft};
use molt_audit::proc_net;
use molt_audit::sshd;

const FIXTURES: &[&str] = &[
    "proc_net_tcp",
    "proc_net_tcp6",
    "sshd_T_output",
    "sshd_config",
    "ufw_inactive",
    "ufw_active_deny",
    "nft_ruleset_accept",
    "nft_ruleset_drop",
    "nft_ruleset_firewalld",
    "iptables_S",
    "iptables_nat_S",
    "iptables_ufw_S",
    "docker_ps",
    "fail2ban_status",
    "openclaw_json5",
];

/// Runs every parser (and every findings builder) on `text`.
fn run_all(text: &str) {
    let mut t = proc_net::parse(text);
    t.merge(proc_net::parse_with(text, proc_net::ByteOrder::Big));
    let _ = t.parse_finding("input");
    for s in t.exposed_listeners() {
        let _ = proc_net::exposed_listener_finding(s, None, false);
    }
    if let Some(s) = sshd::parse_sshd_t(text) {
        let _ = s.findings();
    }
    let mut fs = BTreeMap::new();
    fs.insert("/etc/ssh/sshd_config".to_owned(), text.to_owned());
    fs.insert("/etc/ssh/sshd_config.d/a.conf".to_owned(), text.to_owned());
    if let Ok(s) = sshd::parse_sshd_config("/etc/ssh/sshd_config", &mut fs) {
        let _ = s.findings();
    }
    let u = ufw::parse(text);
    let n = nft::parse(text);
    let i = iptables::parse(text);
    let ctx = FirewallContext::default();
    let a = firewall::assess(
        &FirewallInputs {
            ufw: Some(&u),
            nft: Some(&n),
            iptables: Some(&i),
            ip6tables: Some(&i),
        },
        &ctx,
    );
    let _ = a.findings(&ctx);
    let ps = docker::parse_ps(text);
    let d = docker::from_iptables(&i);
    let e = docker::exposed_ports(Some(&ps), Some(&d));
    let _ = docker::findings(&e, a.filters_inbound(), d.docker_user_filters);
    if let Some(f) = molt_audit::fail2ban::parse_status(text) {
        let _ = f.guards_sshd();
    }
    let _ = molt_audit::agents::openclaw_auth(text).is_configured();
    let _ = molt_audit::agents::token_strength(text);
    let _ = molt_audit::inode_owner::parse_status_uid(text);
    let _ = molt_audit::inode_owner::unit_from_cgroup(text);
}

#[test]
fn empty_input() {
    run_all("");
    let t = proc_net::parse("");
    assert!(t.sockets.is_empty() && t.notes.is_empty());
    assert!(t.parse_finding("/proc/net/tcp").is_none());
    assert!(sshd::parse_sshd_t("").is_none());
    assert_eq!(ufw::parse("").state, UfwState::Unknown);
    assert_eq!(iptables::parse("").filters_inbound(), None);
    assert!(docker::parse_ps("").published.is_empty());
}

#[test]
fn truncated_proc_net_keeps_complete_lines() {
    let text = fixture("proc_net_tcp");
    // Cut in the middle of the 5th socket line (0.0.0.0:8080).
    let cut = text.find("   4: 00000000:1F90").unwrap() + 30;
    let t = proc_net::parse(&text[..cut]);
    assert_eq!(t.sockets.len(), 4);
    assert_eq!(t.notes.total, 1);
    assert_eq!(t.notes.kept[0].line, 6);
    assert!(
        t.notes.kept[0].reason.contains("truncated"),
        "{:?}",
        t.notes
    );
    let f = t.parse_finding("/proc/net/tcp").unwrap();
    assert_eq!((f.id, f.severity), (ids::PARSE_INCOMPLETE, Severity::Info));
    assert!(t.exposed_listeners().any(|s| s.local.port() == 57725));
}

#[test]
fn garbage_proc_net_lines() {
    let text = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:E17D 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 48211
   1: 0000000G:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1
   2: 00000000:10016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1
   3: 000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1
   4: 00000000:0016 00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 1
   5: 00000000:0016 00000000:0000 XYZ 00000000:00000000 00:00000000 00000000     0        0 1
   6: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000    -1        0 1
   7: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 -5
   x: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1
hello world
";
    let t = proc_net::parse(text);
    assert_eq!(t.sockets.len(), 1);
    assert_eq!(t.sockets[0].local.port(), 57725);
    assert_eq!(t.notes.total, 9);
    let f = t.parse_finding("/proc/net/tcp").unwrap();
    assert!(f.detail.contains("9 line(s)"), "{}", f.detail);

    let t = proc_net::parse("garbage\n\u{0}\u{1}\u{2}\nmore garbage");
    assert!(t.sockets.is_empty());
    let f = t.parse_finding("/proc/net/tcp").unwrap();
    assert_eq!((f.id, f.severity), (ids::PARSE_FAILED, Severity::Warn));
    assert!(
        f.detail.contains("\\u{0}"),
        "control characters are escaped: {}",
        f.detail
    );
}

#[test]
fn garbage_firewall_outputs() {
    let junk = "iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)\n";
    let i = iptables::parse(junk);
    assert_eq!(i.filters_inbound(), None);
    assert_eq!(i.notes.total, 1);
    let n = nft::parse(junk);
    assert_eq!(n.filters_inbound(Family::V4), None);
    let u = ufw::parse(junk);
    assert_eq!(u.state, UfwState::Unknown);
    // With nothing readable the verdict is unknown, not "no firewall".
    let ctx = FirewallContext::default();
    let f = firewall::assess(
        &FirewallInputs {
            ufw: Some(&u),
            nft: Some(&n),
            iptables: Some(&i),
            ip6tables: None,
        },
        &ctx,
    )
    .findings(&ctx);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].id, ids::FIREWALL_UNKNOWN);
}

#[test]
fn truncated_nft_ruleset() {
    let text = fixture("nft_ruleset_drop");
    let cut = text.find("tcp dport 22").unwrap();
    let n = nft::parse(&text[..cut]);
    assert!(
        n.notes
            .kept
            .iter()
            .any(|x| x.reason.contains("inside a block")),
        "{:?}",
        n.notes
    );
    // What was read still counts: the input chain and its drop policy came first.
    assert_eq!(n.filters_inbound(Family::V4), Some(true));

    let n = nft::parse(
        "}\n}}\ntable inet x {\n chain y {\n type filter hook input priority 0; policy drop;\n}}}}\n",
    );
    assert!(n.notes.total >= 2);
    assert_eq!(n.filters_inbound(Family::V6), Some(true));
}

#[test]
fn garbage_ufw_rules() {
    let u = ufw::parse(
        "Status: active\nDefault: sideways (incoming), allow\n\nTo Action From\n-- ------ ----\nnonsense\n22/tcp ALLOW\n",
    );
    assert_eq!(u.state, UfwState::Active);
    assert_eq!(u.default_incoming, None);
    assert!(u.rules.is_empty());
    assert_eq!(u.notes.total, 3, "{:?}", u.notes);
}

#[test]
fn garbage_sshd() {
    assert!(sshd::parse_sshd_t("\u{0}\u{fffd}\u{fffd}\nrandom words here\n").is_none());
    let s = sshd::parse_sshd_t("port 22\nPasswordAuthentication yes\n\u{0}junk\npermitrootlogin\n")
        .unwrap();
    assert_eq!(s.notes.total, 3, "{:?}", s.notes);
    assert!(
        s.password_authentication.value,
        "default: the mixed-case line is not sshd -T"
    );

    let mut fs = BTreeMap::new();
    fs.insert(
        "/etc/ssh/sshd_config".to_owned(),
        "\u{0}\u{1}\u{2} yes\n\u{fffd}\u{fffd}\n\"unterminated\nPasswordAuthentication no\n"
            .to_owned(),
    );
    let s = sshd::parse_sshd_config("/etc/ssh/sshd_config", &mut fs).unwrap();
    assert!(!s.password_authentication.value);
    assert_eq!(s.notes.total, 3, "{:?}", s.notes);
    let f = s.findings();
    assert!(f.iter().any(|f| f.id == ids::PARSE_INCOMPLETE));
}

#[test]
fn one_note_per_bad_line() {
    // Found by the fuzzer: a mangled `Default:` line used to give one note per part.
    let u = ufw::parse(
        "Status: active\nDefault: deny (in\u{fffd}oming), allow (ou\u{fffd}, deny (routed), x\n",
    );
    assert_eq!(u.notes.total, 1, "{:?}", u.notes);
    assert_eq!(u.default_incoming, None);
    let n = nft::parse("}}}}\n");
    assert_eq!(n.notes.total, 1, "{:?}", n.notes);
}

#[test]
fn garbage_docker_ps() {
    let ps = docker::parse_ps(
        "web\t0.0.0.0:abc->80/tcp, ->/, :::->80/tcp, 0.0.0.0:80->80/tcp\n\t\t\t\n",
    );
    assert_eq!(ps.published.len(), 1);
    assert_eq!(ps.notes.total, 3, "{:?}", ps.notes);
}

#[test]
fn binary_junk_never_panics() {
    // Deterministic pseudo-random bytes, read as the callers read files: lossily.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for len in [1usize, 7, 64, 512, 4096] {
        for _ in 0..20 {
            let bytes: Vec<u8> = (0..len).map(|_| (next() & 0xff) as u8).collect();
            run_all(&String::from_utf8_lossy(&bytes));
        }
    }
    // Junk made of the parsers' own alphabet is nastier than random bytes.
    let alphabet: &[&str] = &[
        "{",
        "}",
        "\n",
        " ",
        "\t",
        ":",
        "/",
        "-",
        ",",
        "\"",
        "#",
        "!",
        "[",
        "]",
        "*",
        "table ",
        "chain ",
        "type filter hook input ",
        "policy drop;",
        "-A ",
        "-P ",
        "-N ",
        "INPUT ",
        "DOCKER ",
        "--dport ",
        "-j ",
        "DNAT ",
        "0.0.0.0:",
        "->",
        "tcp",
        "Status: active",
        "ALLOW IN",
        "Include ",
        "Match ",
        "all",
        "/etc/ssh/sshd_config.d/*.conf",
        "0A",
        "0100007F",
        "FFFF",
        "22",
        "65535",
        "99999",
    ];
    for _ in 0..3000 {
        let n = (next() % 40) as usize;
        let text: String = (0..n)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        run_all(&text);
    }
}

#[test]
fn mutated_fixtures_never_panic() {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for name in FIXTURES {
        let text = fixture(name);
        let bytes = text.as_bytes();
        // Every truncation point of the fixture.
        for cut in (0..bytes.len()).step_by(7) {
            run_all(&String::from_utf8_lossy(&bytes[..cut]));
        }
        // Random byte flips and line shuffles.
        for _ in 0..200 {
            let mut b = bytes.to_vec();
            for _ in 0..(next() % 8) {
                if b.is_empty() {
                    break;
                }
                let at = (next() % b.len() as u64) as usize;
                b[at] = (next() & 0xff) as u8;
            }
            let text = String::from_utf8_lossy(&b);
            let mut lines: Vec<&str> = text.lines().collect();
            if lines.len() > 1 {
                let i = (next() % lines.len() as u64) as usize;
                let j = (next() % lines.len() as u64) as usize;
                lines.swap(i, j);
            }
            run_all(&lines.join("\n"));
        }
    }
}

#[test]
fn hostile_sshd_include_globs() {
    let mut fs = etc_ssh();
    fs.insert(
        "/etc/ssh/sshd_config".to_owned(),
        format!(
            "Include {}\nInclude /etc/ssh/[\nInclude /etc/ssh/[!\nInclude /**/**/*\nInclude /etc/ssh/sshd_config.d/*.conf\n",
            "*a".repeat(200)
        ),
    );
    let s = sshd::parse_sshd_config("/etc/ssh/sshd_config", &mut fs).unwrap();
    assert!(s.files_read.len() <= sshd::MAX_FILES);
    assert!(s.password_authentication.value);
}
