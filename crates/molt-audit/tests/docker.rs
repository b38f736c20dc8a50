//! Docker published ports, the DOCKER chains, and the ufw bypass.

mod common;

use common::fixture;
use molt_audit::Severity;
use molt_audit::docker::{self, PortRange, Proto};
use molt_audit::findings::ids;
use molt_audit::firewall::iptables;

fn range(start: u16, end: u16) -> Option<PortRange> {
    Some(PortRange { start, end })
}

#[test]
fn docker_ps_fixture() {
    let ps = docker::parse_ps(&fixture("docker_ps"));
    assert!(ps.notes.is_empty(), "{:?}", ps.notes);
    assert_eq!(ps.published.len(), 6);
    assert_eq!(ps.unpublished, 1);
    let db = ps
        .published
        .iter()
        .find(|p| p.container.as_deref() == Some("db"))
        .unwrap();
    assert!(db.host_ip.is_loopback());

    let exposed = docker::exposed_ports(Some(&ps), None);
    let summary: Vec<(Proto, Option<PortRange>, Vec<String>)> = exposed
        .iter()
        .map(|e| (e.proto, e.host_ports, e.containers.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (Proto::Tcp, range(8080, 8080), vec!["web".to_owned()]),
            (Proto::Tcp, range(9000, 9002), vec!["ranges".to_owned()]),
            (Proto::Udp, range(53, 53), vec!["dns".to_owned()]),
        ],
        "5432 is on loopback, 6379 is not published"
    );
    assert_eq!(exposed[0].host_addresses, ["0.0.0.0", "::"]);
}

#[test]
fn iptables_docker_chains() {
    let filter = iptables::parse(&fixture("iptables_S"));
    let d = docker::from_iptables(&filter);
    assert!(d.docker_chain);
    assert_eq!(d.accepts.len(), 3);
    assert_eq!(
        d.accepts[0].container_address.as_deref(),
        Some("172.17.0.2/32")
    );
    assert_eq!(
        d.accepts[0].container_ports,
        PortRange { start: 80, end: 80 }
    );
    assert!(!d.docker_user_filters);

    let nat = iptables::parse(&fixture("iptables_nat_S"));
    let n = docker::from_iptables(&nat);
    assert_eq!(n.dnat.len(), 3);
    assert!(n.dnat[0].is_exposed());
    assert!(!n.dnat[1].is_exposed(), "-d 127.0.0.1/32");
    assert_eq!(n.dnat[0].to, "172.17.0.2:80");

    // Only the filter table: container ports, host side unknown.
    let exposed = docker::exposed_ports(None, Some(&d));
    assert_eq!(exposed.len(), 3);
    assert!(exposed.iter().all(|e| e.host_ports.is_none()));

    // The nat table gives host ports; the loopback one is left out.
    let exposed = docker::exposed_ports(None, Some(&n));
    let ports: Vec<_> = exposed
        .iter()
        .map(|e| (e.proto, e.host_ports, e.container_ports))
        .collect();
    assert_eq!(
        ports,
        [
            (Proto::Tcp, range(8080, 8080), range(80, 80)),
            (Proto::Udp, range(53, 53), range(53, 53)),
        ]
    );
}

#[test]
fn ports_bypassing_ufw() {
    let ps = docker::parse_ps(&fixture("docker_ps"));
    let nat = docker::from_iptables(&iptables::parse(&fixture("iptables_nat_S")));
    let exposed = docker::exposed_ports(Some(&ps), Some(&nat));
    assert_eq!(exposed.len(), 3, "nat and docker ps agree on 8080 and 53");
    let web = &exposed[0];
    assert_eq!(web.containers, ["web", "172.17.0.2:80"]);

    let f = docker::findings(&exposed, true, false);
    assert_eq!(f.len(), 3);
    assert!(
        f.iter()
            .all(|f| f.id == ids::DOCKER_BYPASS && f.severity == Severity::Warn)
    );
    assert!(f[0].title.contains("8080/tcp") && f[0].title.contains("around the firewall"));
    assert_eq!(
        f[0].remedy[0],
        "iptables -I DOCKER-USER -p tcp -m conntrack --ctorigdstport 8080 --ctdir ORIGINAL -j DROP"
    );
    assert!(
        f[0].remedy[1]
            .starts_with("ip6tables -L DOCKER-USER -n >/dev/null 2>&1 && ip6tables -I DOCKER-USER")
    );
    assert_eq!(
        f[1].remedy[0],
        "iptables -I DOCKER-USER -p tcp -m conntrack --ctorigdstport 9000:9002 --ctdir ORIGINAL -j DROP"
    );
    assert!(f[0].detail.contains("127.0.0.1:HOST:CONTAINER"));

    // No firewall: published, and ufw would not help.
    let f = docker::findings(&exposed, false, false);
    assert!(f.iter().all(|f| f.id == ids::DOCKER_PUBLISHED));
    assert!(f[0].detail.contains("enabling ufw will not change that"));

    // DOCKER-USER already filters: info.
    let f = docker::findings(&exposed, true, true);
    assert!(f.iter().all(|f| f.severity == Severity::Info));
}

#[test]
fn filter_only_remedy_targets_container() {
    let d = docker::from_iptables(&iptables::parse(&fixture("iptables_S")));
    let exposed = docker::exposed_ports(None, Some(&d));
    let f = docker::findings(&exposed, true, false);
    assert!(
        f[0].title.contains("container port 80/tcp"),
        "{}",
        f[0].title
    );
    assert_eq!(
        f[0].remedy[0],
        "iptables -I DOCKER-USER -d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j DROP"
    );
}
