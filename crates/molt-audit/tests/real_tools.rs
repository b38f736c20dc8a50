//! The parsers on what the real tools printed (`tests/fixtures/real/`, written by
//! `scripts/audit-fixtures.sh`; `VERSIONS` names the tools). The hand-written fixtures beside
//! them cover what cannot run here (Docker, firewalld, odd layouts); these pin the shapes the
//! tools actually produce, and `crates/molt/tests/audit_fixtures.rs` checks they still do.

mod common;

use common::fixture;
use molt_audit::fail2ban;
use molt_audit::findings::{Severity, ids};
use molt_audit::firewall::ufw::{self, UfwState};
use molt_audit::firewall::{
    self, Family, FirewallContext, FirewallInputs, Inbound, Policy, iptables, nft,
};
use molt_audit::sshd::{self, PermitRootLogin, Source};

fn real(name: &str) -> String {
    fixture(&format!("real/{name}"))
}

#[test]
fn sshd_t_with_passwords_and_root_allowed_is_critical() {
    let s = sshd::parse_sshd_t(&real("sshd_T_password_root_yes")).expect("sshd -T output");
    assert!(s.notes.is_empty(), "{:?}", s.notes);
    assert_eq!(s.source, Source::SshdT);
    assert!(s.password_authentication.value);
    assert!(!s.kbd_interactive_authentication.value);
    assert!(s.use_pam.value);
    assert_eq!(s.permit_root_login.value, PermitRootLogin::Yes);
    assert_eq!(s.ports, [22]);
    assert!(s.password_login() && s.root_password_login());
    let f = s.findings();
    let password = f.iter().find(|f| f.id == ids::SSH_PASSWORD_LOGIN).unwrap();
    assert_eq!(password.severity, Severity::Critical);
    let root = f.iter().find(|f| f.id == ids::SSH_ROOT_LOGIN).unwrap();
    assert_eq!(root.severity, Severity::Warn);
    assert!(!f.iter().any(|f| f.id.starts_with("parse")), "{f:#?}");
}

#[test]
fn sshd_t_defaults_accept_passwords_but_not_for_root() {
    let s = sshd::parse_sshd_t(&real("sshd_T_defaults")).expect("sshd -T output");
    assert!(s.notes.is_empty(), "{:?}", s.notes);
    assert!(s.password_authentication.value);
    assert_eq!(s.permit_root_login.value, PermitRootLogin::ProhibitPassword);
    let f = s.findings();
    assert_eq!(
        f.iter().map(|f| (f.id, f.severity)).collect::<Vec<_>>(),
        [
            (ids::SSH_PASSWORD_LOGIN, Severity::Warn),
            (ids::SSH_ROOT_LOGIN, Severity::Info)
        ]
    );
}

#[test]
fn sshd_t_keys_only_in_every_permit_root_login_spelling() {
    // sshd -T prints prohibit-password under its old name, without-password.
    for (file, expected, root_finding) in [
        (
            "prohibit-password",
            PermitRootLogin::ProhibitPassword,
            Some(Severity::Info),
        ),
        (
            "without-password",
            PermitRootLogin::ProhibitPassword,
            Some(Severity::Info),
        ),
        (
            "forced-commands-only",
            PermitRootLogin::ForcedCommandsOnly,
            Some(Severity::Info),
        ),
        ("no", PermitRootLogin::No, None),
    ] {
        let text = real(&format!("sshd_T_keys_root_{file}"));
        let s = sshd::parse_sshd_t(&text).expect("sshd -T output");
        assert!(s.notes.is_empty(), "{file}: {:?}", s.notes);
        assert_eq!(s.permit_root_login.value, expected, "{file}");
        assert!(!s.password_login(), "{file}");
        let f = s.findings();
        assert!(!f.iter().any(|f| f.id == ids::SSH_PASSWORD_LOGIN), "{file}");
        assert_eq!(
            f.iter()
                .find(|f| f.id == ids::SSH_ROOT_LOGIN)
                .map(|f| f.severity),
            root_finding,
            "{file}"
        );
        assert!(f.iter().all(|f| f.severity == Severity::Info), "{f:#?}");
    }
}

#[test]
fn sshd_t_refusing_without_its_privsep_dir_is_not_read_as_settings() {
    assert_eq!(sshd::parse_sshd_t(&real("sshd_T_no_privsep_dir")), None);
}

#[test]
fn nft_accept_policy_is_open_and_drop_policy_is_filtered() {
    let accept = nft::parse(&real("nft_ruleset_accept"));
    assert!(accept.notes.is_empty(), "{:?}", accept.notes);
    assert_eq!(accept.input_chains().count(), 1);
    assert_eq!(accept.filters_inbound(Family::V4), Some(false));
    assert_eq!(accept.filters_inbound(Family::V6), Some(false));
    for name in ["nft_ruleset_drop_ssh", "nft_ruleset_drop_ssh_handles"] {
        let drop = nft::parse(&real(name));
        assert!(drop.notes.is_empty(), "{name}: {:?}", drop.notes);
        let input = drop.input_chains().next().expect("an input chain");
        assert_eq!(input.policy, Some(Policy::Drop), "{name}");
        assert_eq!(input.rules.len(), 5, "{name}: {input:?}");
        assert_eq!(drop.filters_inbound(Family::V4), Some(true), "{name}");
        assert_eq!(drop.filters_inbound(Family::V6), Some(true), "{name}");
    }
}

#[test]
fn iptables_nft_rules_read_the_same_through_both_tools() {
    let v4 = iptables::parse(&real("iptables_S_drop_ssh"));
    let v6 = iptables::parse(&real("ip6tables_S_accept"));
    let nft = nft::parse(&real("nft_ruleset_iptables_nft"));
    for (what, notes) in [("v4", &v4.notes), ("v6", &v6.notes), ("nft", &nft.notes)] {
        assert!(notes.is_empty(), "{what}: {notes:?}");
    }
    assert_eq!(v4.filters_inbound(), Some(true));
    assert_eq!(v6.filters_inbound(), Some(false));
    assert_eq!(v4.rules[2].dports(), [(22, 22)]);
    assert_eq!(v4.rules[3].dports(), [(80, 80), (443, 443)]);
    assert_eq!(nft.filters_inbound(Family::V4), Some(true));
    assert_eq!(nft.filters_inbound(Family::V6), Some(false));
    // The nat table without Docker is not a filter table.
    let nat = iptables::parse(&real("iptables_nat_S_empty"));
    assert!(nat.notes.is_empty(), "{:?}", nat.notes);
    assert_eq!(nat.filters_inbound(), None);

    let a = firewall::assess(
        &FirewallInputs {
            ufw: None,
            nft: Some(&nft),
            iptables: Some(&v4),
            ip6tables: Some(&v6),
        },
        &FirewallContext::default(),
    );
    assert!(a.v4.is_filtered() && a.v6.is_open(), "{a:?}");
    let f = a.findings(&FirewallContext::default());
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].id, ids::FIREWALL_IPV6_OPEN);
}

#[test]
fn ufw_inactive_active_and_numbered() {
    let off = ufw::parse(&real("ufw_status_inactive"));
    assert!(off.notes.is_empty(), "{:?}", off.notes);
    assert_eq!(off.state, UfwState::Inactive);
    for name in ["ufw_status_active_deny", "ufw_status_numbered"] {
        let on = ufw::parse(&real(name));
        assert!(on.notes.is_empty(), "{name}: {:?}", on.notes);
        assert_eq!(on.state, UfwState::Active, "{name}");
        assert!(on.filters_inbound(), "{name}");
        assert_eq!(on.rules.len(), 3, "{name}: {:?}", on.rules);
        assert!(on.allows_tcp_port(22), "{name}");
        assert!(!on.allows_tcp_port(18789), "{name}: only from 10.0.0.0/8");
        assert_eq!(on.rules[1].comment.as_deref(), Some("gateway"), "{name}");
        assert!(on.rules[2].v6, "{name}");
    }
    let verbose = ufw::parse(&real("ufw_status_active_deny"));
    assert_eq!(verbose.default_incoming, Some(Policy::Drop));
    assert_eq!(verbose.default_outgoing, Some(Policy::Accept));
    assert_eq!(verbose.default_routed.as_deref(), Some("disabled"));
}

#[test]
fn ufw_rules_as_netfilter_sees_them() {
    let v4 = iptables::parse(&real("iptables_S_ufw"));
    let v6 = iptables::parse(&real("ip6tables_S_ufw"));
    let nft = nft::parse(&real("nft_ruleset_ufw"));
    for (what, notes) in [("v4", &v4.notes), ("v6", &v6.notes), ("nft", &nft.notes)] {
        assert!(notes.is_empty(), "{what}: {notes:?}");
    }
    assert_eq!(v4.filters_inbound(), Some(true));
    assert_eq!(v6.filters_inbound(), Some(true));
    assert_eq!(nft.filters_inbound(Family::V4), Some(true));
    assert_eq!(nft.filters_inbound(Family::V6), Some(true));
    let u = ufw::parse(&real("ufw_status_active_deny"));
    let a = firewall::assess(
        &FirewallInputs {
            ufw: Some(&u),
            nft: Some(&nft),
            iptables: Some(&v4),
            ip6tables: Some(&v6),
        },
        &FirewallContext::default(),
    );
    assert_eq!(
        a.v4,
        Inbound::Filtered {
            by: vec!["ufw".into(), "nftables".into(), "iptables".into()]
        }
    );
    assert_eq!(a.ufw_allows_ssh, Some(true));
    assert!(a.findings(&FirewallContext::default()).is_empty());
}

#[test]
fn fail2ban_status_running_with_and_without_the_sshd_jail() {
    let on = fail2ban::parse_status(&real("fail2ban_status_sshd")).expect("a jail list");
    assert!(on.notes.is_empty(), "{:?}", on.notes);
    assert_eq!(on.jails, ["sshd"]);
    assert_eq!(on.stated_count, Some(1));
    assert!(on.guards_sshd());
    let none = fail2ban::parse_status(&real("fail2ban_status_no_jail")).expect("a jail list");
    assert!(none.notes.is_empty(), "{:?}", none.notes);
    assert!(none.jails.is_empty() && !none.guards_sshd());
    assert_eq!(none.stated_count, Some(0));
    assert_eq!(
        fail2ban::parse_status(&real("fail2ban_status_not_running")),
        None
    );
}
