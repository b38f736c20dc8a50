//! ufw, nftables and iptables fixtures, and the combined verdict.

mod common;

use common::fixture;
use molt_audit::Severity;
use molt_audit::findings::ids;
use molt_audit::firewall::ufw::{self, Direction, UfwState};
use molt_audit::firewall::{
    self, Family, FirewallContext, FirewallInputs, Inbound, Policy, iptables, nft,
};

#[test]
fn ufw_inactive() {
    let u = ufw::parse(&fixture("ufw_inactive"));
    assert_eq!(u.state, UfwState::Inactive);
    assert!(!u.filters_inbound());
    assert!(u.notes.is_empty());
}

#[test]
fn ufw_active_deny() {
    let u = ufw::parse(&fixture("ufw_active_deny"));
    assert!(u.notes.is_empty(), "{:?}", u.notes);
    assert_eq!(u.state, UfwState::Active);
    assert_eq!(u.default_incoming, Some(Policy::Drop));
    assert_eq!(u.default_outgoing, Some(Policy::Accept));
    assert_eq!(u.default_routed.as_deref(), Some("deny"));
    assert!(u.filters_inbound());
    assert_eq!(u.rules.len(), 7);
    let first = &u.rules[0];
    assert_eq!(
        (
            first.to.as_str(),
            first.action.as_str(),
            first.direction,
            first.from.as_str()
        ),
        ("22/tcp", "ALLOW", Direction::In, "Anywhere")
    );
    assert_eq!(first.comment.as_deref(), Some("ssh"));
    assert!(u.rules[4].v6);
    assert!(u.allows_tcp_port(22));
    assert!(u.allows_tcp_port(443));
    assert!(!u.allows_tcp_port(18789), "only from 10.0.0.0/8");
    assert!(!u.allows_tcp_port(60500), "that range is udp");
}

#[test]
fn ufw_not_root() {
    let u = ufw::parse("ERROR: You need to be root to run this script\n");
    assert_eq!(u.state, UfwState::Unknown);
    assert_eq!(u.notes.total, 1);
}

#[test]
fn nft_accept_variant() {
    let r = nft::parse(&fixture("nft_ruleset_accept"));
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    assert_eq!(r.tables.len(), 3);
    assert_eq!(r.chains.len(), 10);
    let input: Vec<_> = r.input_chains().collect();
    assert_eq!(input.len(), 1);
    assert_eq!(input[0].family, "inet");
    assert_eq!(input[0].policy, Some(Policy::Accept));
    assert!(input[0].rules.is_empty());
    assert_eq!(r.filters_inbound(Family::V4), Some(false));
    assert_eq!(r.filters_inbound(Family::V6), Some(false));
    let fwd = r
        .chains
        .iter()
        .find(|c| c.table == "filter" && c.family == "ip" && c.name == "FORWARD")
        .unwrap();
    assert_eq!(fwd.policy, Some(Policy::Drop));
    assert_eq!(fwd.rules.len(), 3);
    let pre = r.chains.iter().find(|c| c.name == "PREROUTING").unwrap();
    assert_eq!(
        (
            pre.chain_type.as_deref(),
            pre.hook.as_deref(),
            pre.priority.as_deref()
        ),
        (Some("nat"), Some("prerouting"), Some("dstnat"))
    );
}

#[test]
fn nft_drop_variant_with_sets_and_handles() {
    let r = nft::parse(&fixture("nft_ruleset_drop"));
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    assert_eq!(r.chains.len(), 3, "sets and maps are not chains");
    let input = r.input_chains().next().unwrap();
    assert_eq!(input.name, "input");
    assert_eq!(input.policy, Some(Policy::Drop));
    assert_eq!(input.rules.len(), 8);
    assert_eq!(input.rules[4], "tcp dport 22 accept comment \"ssh\"");
    assert_eq!(r.filters_inbound(Family::V4), Some(true));
    assert_eq!(r.filters_inbound(Family::V6), Some(true));
}

#[test]
fn nft_firewalld_final_reject() {
    let r = nft::parse(&fixture("nft_ruleset_firewalld"));
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    let input = r.input_chains().next().unwrap();
    assert_eq!(input.policy, Some(Policy::Accept));
    assert_eq!(input.priority.as_deref(), Some("filter + 10"));
    assert!(
        input.drops_by_default(),
        "ends with an unconditional reject"
    );
    assert_eq!(r.filters_inbound(Family::V4), Some(true));
}

#[test]
fn nft_empty_and_error() {
    let empty = nft::parse("");
    assert_eq!(
        empty.filters_inbound(Family::V4),
        Some(false),
        "empty ruleset: nothing filters"
    );
    let err = nft::parse("Error: Could not process rule: Operation not permitted\n");
    assert_eq!(err.filters_inbound(Family::V4), None);
}

#[test]
fn iptables_default_accept_with_docker() {
    let r = iptables::parse(&fixture("iptables_S"));
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    assert_eq!(r.policies.get("INPUT").map(String::as_str), Some("ACCEPT"));
    assert_eq!(r.policies.get("FORWARD").map(String::as_str), Some("DROP"));
    assert_eq!(
        r.chains,
        [
            "DOCKER",
            "DOCKER-ISOLATION-STAGE-1",
            "DOCKER-ISOLATION-STAGE-2",
            "DOCKER-USER"
        ]
    );
    assert_eq!(r.chain_rules("DOCKER").count(), 3);
    assert_eq!(r.filters_inbound(), Some(false));
}

#[test]
fn iptables_under_ufw() {
    let r = iptables::parse(&fixture("iptables_ufw_S"));
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    assert_eq!(r.filters_inbound(), Some(true));
    let ssh = r.chain_rules("ufw-user-input").next().unwrap();
    assert_eq!(ssh.option("--comment"), Some(("'dapp_OpenSSH'", false)));
}

#[test]
fn iptables_nat_is_not_a_filter_verdict() {
    let r = iptables::parse(&fixture("iptables_nat_S"));
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    assert_eq!(r.filters_inbound(), None);
}

#[test]
fn assessment_no_firewall() {
    let u = ufw::parse(&fixture("ufw_inactive"));
    let n = nft::parse(&fixture("nft_ruleset_accept"));
    let i = iptables::parse(&fixture("iptables_S"));
    let inputs = FirewallInputs {
        ufw: Some(&u),
        nft: Some(&n),
        iptables: Some(&i),
        ip6tables: None,
    };
    let ctx = FirewallContext {
        ssh_ports: vec![22, 2222],
        keep_open: vec![],
        exposed_ports: vec![22, 57725, 8080],
    };
    let a = firewall::assess(&inputs, &ctx);
    assert!(!a.filters_inbound());
    let Inbound::Open { evidence } = &a.v4 else {
        panic!("{:?}", a.v4)
    };
    assert_eq!(evidence.len(), 3, "{evidence:?}");
    assert!(a.v6.is_open());
    let f = a.findings(&ctx);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].id, ids::FIREWALL_NONE);
    assert_eq!(
        f[0].severity,
        Severity::Critical,
        "57725 and 8080 are exposed"
    );
    assert!(f[0].detail.contains("8080, 57725"), "{}", f[0].detail);
    assert_eq!(
        f[0].remedy,
        [
            "ufw allow 22/tcp",
            "ufw allow 2222/tcp",
            "ufw default deny incoming",
            "ufw default allow outgoing",
            "ufw enable",
            "ufw status verbose",
        ],
        "SSH is allowed before the default changes and before enabling"
    );
}

#[test]
fn assessment_only_ssh_exposed_is_a_warning_and_installs_ufw() {
    let i = iptables::parse(&fixture("iptables_S"));
    let inputs = FirewallInputs {
        iptables: Some(&i),
        ..FirewallInputs::default()
    };
    let ctx = FirewallContext {
        exposed_ports: vec![22],
        keep_open: vec![18789],
        ..FirewallContext::default()
    };
    let a = firewall::assess(&inputs, &ctx);
    assert_eq!(a.v6, Inbound::Unknown);
    let f = a.findings(&ctx);
    assert_eq!(f[0].severity, Severity::Warn);
    assert_eq!(f[0].remedy[0], "command -v ufw || apt-get install -y ufw");
    assert_eq!(f[0].remedy[1], "ufw allow 22/tcp");
    assert_eq!(f[0].remedy[2], "ufw allow 18789/tcp");
}

#[test]
fn assessment_filtered() {
    let u = ufw::parse(&fixture("ufw_active_deny"));
    let i = iptables::parse(&fixture("iptables_ufw_S"));
    let inputs = FirewallInputs {
        ufw: Some(&u),
        iptables: Some(&i),
        ..FirewallInputs::default()
    };
    let ctx = FirewallContext::default();
    let a = firewall::assess(&inputs, &ctx);
    assert_eq!(
        a.v4,
        Inbound::Filtered {
            by: vec!["ufw".into(), "iptables".into()]
        }
    );
    assert_eq!(a.ufw_allows_ssh, Some(true));
    assert!(a.findings(&ctx).is_empty());

    // nft with an inet drop chain filters both families even with ufw inactive.
    let u = ufw::parse(&fixture("ufw_inactive"));
    let n = nft::parse(&fixture("nft_ruleset_drop"));
    let inputs = FirewallInputs {
        ufw: Some(&u),
        nft: Some(&n),
        ..FirewallInputs::default()
    };
    let a = firewall::assess(&inputs, &ctx);
    assert!(a.v4.is_filtered() && a.v6.is_filtered());
    assert!(a.findings(&ctx).is_empty());
}

#[test]
fn assessment_ipv6_open_and_ssh_missing_and_unknown() {
    let n = nft::parse(
        "table ip filter {\n\tchain INPUT {\n\t\ttype filter hook input priority filter; policy drop;\n\t}\n}\n",
    );
    let i6 = iptables::parse("-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n");
    let u = ufw::parse(
        "Status: active\n\nTo  Action  From\n--  ------  ----\n443/tcp  ALLOW IN  Anywhere\n",
    );
    let inputs = FirewallInputs {
        ufw: Some(&u),
        nft: Some(&n),
        iptables: None,
        ip6tables: Some(&i6),
    };
    let ctx = FirewallContext::default();
    let a = firewall::assess(&inputs, &ctx);
    // ufw active counts for both families.
    assert!(a.v6.is_filtered());
    assert_eq!(a.ufw_missing_ssh_ports, [22]);
    let f = a.findings(&ctx);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].id, ids::FIREWALL_SSH_NOT_ALLOWED);
    assert_eq!(f[0].remedy, ["ufw allow 22/tcp"]);

    let inputs = FirewallInputs {
        nft: Some(&n),
        ip6tables: Some(&i6),
        ..FirewallInputs::default()
    };
    let f = firewall::assess(&inputs, &ctx).findings(&ctx);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].id, ids::FIREWALL_IPV6_OPEN);

    let e = nft::parse("Error: Operation not permitted\n");
    let inputs = FirewallInputs {
        nft: Some(&e),
        ..FirewallInputs::default()
    };
    let f = firewall::assess(&inputs, &ctx).findings(&ctx);
    assert_eq!(f[0].id, ids::FIREWALL_UNKNOWN);
    assert_eq!(f[0].severity, Severity::Info);
}
