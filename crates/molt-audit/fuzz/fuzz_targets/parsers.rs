//! Every molt-audit parser and findings builder on arbitrary bytes (read lossily as UTF-8,
//! as the audit reads files and command output).
//!
//! The input is also split at `\x01` into files of an in-memory /etc/ssh, so the sshd include
//! walker (globs, cycles, depth) sees hostile trees.
//!
//! Asserts, beyond "no panic":
//! - a parser never reports more records plus skipped lines than the input has lines;
//! - findings come ranked most severe first, with non-empty ids and titles, and no remedy
//!   uses `sed`;
//! - a "no firewall" remedy allows SSH before `ufw default deny incoming` and `ufw enable`;
//! - the sshd walker reads at most `MAX_FILES` files.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use molt_audit::docker;
use molt_audit::findings::{Finding, ids};
use molt_audit::firewall::{self, FirewallContext, FirewallInputs, iptables, nft, ufw};
use molt_audit::proc_net;
use molt_audit::sshd;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines = text.lines().count();

    // /proc/net/tcp
    let mut t = proc_net::parse(&text);
    assert!(t.sockets.len() + t.notes.total <= lines);
    for s in &t.sockets {
        assert_eq!(s.local.is_ipv4(), s.remote.is_ipv4());
    }
    t.merge(proc_net::parse_with(&text, proc_net::ByteOrder::Big));
    let mut all: Vec<Finding> = Vec::new();
    all.extend(t.parse_finding("/proc/net/tcp"));
    let exposed_ports: Vec<u16> = t.exposed_listeners().map(|s| s.local.port()).collect();
    for s in t.exposed_listeners().take(8) {
        all.push(proc_net::exposed_listener_finding(
            s,
            Some("pid 1 (x)"),
            false,
        ));
    }

    // fail2ban-client status, OpenClaw's JSON5 config, tokens, /proc/<pid>/{status,cgroup}
    if let Some(f) = molt_audit::fail2ban::parse_status(&text) {
        assert!(f.jails.len() <= text.len());
        let _ = f.guards_sshd();
    }
    let _ = molt_audit::agents::openclaw_auth(&text).is_configured();
    let _ = molt_audit::agents::token_strength(&text);
    let _ = molt_audit::inode_owner::parse_status_uid(&text);
    let _ = molt_audit::inode_owner::unit_from_cgroup(&text);

    // sshd -T
    let mut ssh_ports = vec![22];
    if let Some(s) = sshd::parse_sshd_t(&text) {
        check_ranked(&s.findings());
        ssh_ports = s.ports.clone();
    }

    // sshd_config and includes
    let mut fs = BTreeMap::new();
    for (i, part) in text.split('\u{1}').enumerate() {
        let path = match i {
            0 => "/etc/ssh/sshd_config".to_owned(),
            i if i % 2 == 1 => format!("/etc/ssh/sshd_config.d/{i}.conf"),
            i => format!("/etc/ssh/f{i}"),
        };
        fs.insert(path, part.to_owned());
    }
    if let Ok(s) = sshd::parse_sshd_config(sshd::DEFAULT_CONFIG, &mut fs) {
        assert!(s.files_read.len() <= sshd::MAX_FILES);
        check_ranked(&s.findings());
    }

    // Firewalls
    let u = ufw::parse(&text);
    assert!(u.rules.len() + u.notes.total <= lines);
    let n = nft::parse(&text);
    assert!(n.notes.total <= lines + 1);
    let i = iptables::parse(&text);
    assert!(i.rules.len() + i.notes.total <= lines);
    let ctx = FirewallContext {
        ssh_ports,
        keep_open: vec![18789],
        exposed_ports,
    };
    let a = firewall::assess(
        &FirewallInputs {
            ufw: Some(&u),
            nft: Some(&n),
            iptables: Some(&i),
            ip6tables: Some(&i),
        },
        &ctx,
    );
    let fw = a.findings(&ctx);
    for f in fw.iter().filter(|f| f.id == ids::FIREWALL_NONE) {
        let pos = |cmd: &str| f.remedy.iter().position(|c| c == cmd);
        let deny = pos("ufw default deny incoming").expect("default deny");
        let enable = pos("ufw enable").expect("enable");
        for p in &ctx.ssh_ports {
            let allow = pos(&format!("ufw allow {p}/tcp")).expect("ssh allowed");
            assert!(allow < deny && allow < enable, "{:?}", f.remedy);
        }
    }
    all.extend(fw);

    // Docker
    let ps = docker::parse_ps(&text);
    let d = docker::from_iptables(&i);
    let e = docker::exposed_ports(Some(&ps), Some(&d));
    all.extend(docker::findings(
        &e,
        a.filters_inbound(),
        d.docker_user_filters,
    ));

    molt_audit::findings::rank(&mut all);
    check_ranked(&all);
});

fn check_ranked(findings: &[Finding]) {
    for w in findings.windows(2) {
        assert!(w[0].severity >= w[1].severity, "not ranked: {findings:?}");
    }
    for f in findings {
        assert!(!f.id.is_empty() && !f.title.is_empty());
        assert!(
            f.remedy
                .iter()
                .all(|c| !c.is_empty() && !c.contains("sed ")),
            "{f:?}"
        );
    }
}
