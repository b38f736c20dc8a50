//! `/proc/net/tcp` and `tcp6` fixtures.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use common::fixture;
use molt_audit::findings::ids;
use molt_audit::inode_owner;
use molt_audit::proc_net::{self, Exposure, TcpState};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn tcp4_fixture() {
    let t = proc_net::parse(&fixture("proc_net_tcp"));
    assert!(t.notes.is_empty(), "{:?}", t.notes);
    assert_eq!(t.sockets.len(), 10);

    let listeners: Vec<SocketAddr> = t.listeners().map(|s| s.local).collect();
    assert_eq!(
        listeners,
        [
            addr("127.0.0.53:53"),
            addr("0.0.0.0:22"),
            addr("127.0.0.1:18789"),
            addr("0.0.0.0:57725"),
            addr("0.0.0.0:8080"),
        ]
    );
    let exposed: Vec<u16> = t.exposed_listeners().map(|s| s.local.port()).collect();
    assert_eq!(
        exposed,
        [22, 57725, 8080],
        "loopback listeners are not exposed"
    );

    let gw = t.sockets.iter().find(|s| s.local.port() == 57725).unwrap();
    assert_eq!((gw.uid, gw.inode, gw.state), (0, 48211, TcpState::Listen));
    assert_eq!(proc_net::exposure(gw.local.ip()), Exposure::AllInterfaces);

    let molt = t.sockets.iter().find(|s| s.inode == 39544).unwrap();
    assert_eq!(molt.local, addr("127.0.0.1:18789"));
    assert_eq!(molt.uid, 1000);
    assert!(!molt.is_exposed());

    let ssh = t.sockets.iter().find(|s| s.inode == 61377).unwrap();
    assert_eq!(ssh.state, TcpState::Established);
    assert_eq!(ssh.local, addr("10.0.0.5:22"));
    assert_eq!(ssh.remote, addr("203.0.113.7:50522"));

    let tw = t
        .sockets
        .iter()
        .find(|s| s.state == TcpState::TimeWait)
        .unwrap();
    assert_eq!(tw.inode, 0);
    assert_eq!(tw.remote, addr("151.101.1.69:443"));

    // An established connection to the exposed port is not a listener.
    assert!(
        t.sockets
            .iter()
            .any(|s| s.local.port() == 57725 && s.state == TcpState::Established)
    );
    assert!(t.parse_finding("/proc/net/tcp").is_none());
}

#[test]
fn tcp6_fixture() {
    let t = proc_net::parse(&fixture("proc_net_tcp6"));
    assert!(t.notes.is_empty(), "{:?}", t.notes);
    let listeners: Vec<(IpAddr, u16, bool)> = t
        .listeners()
        .map(|s| (s.local.ip(), s.local.port(), s.is_exposed()))
        .collect();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(
        listeners,
        [
            (ip("::"), 22, true),
            (ip("::"), 8080, true),
            (ip("::1"), 631, false),
            (ip("::ffff:127.0.0.1"), 5432, false),
            (ip("2001:db8:0:1::5"), 3000, true),
        ]
    );
    let est = t
        .sockets
        .iter()
        .find(|s| s.state == TcpState::Established)
        .unwrap();
    assert_eq!(est.remote, addr("[2001:db8:ffff::99]:60000"));
    assert_eq!(proc_net::exposure(ip("2001:db8:0:1::5")), Exposure::Address);
}

#[test]
fn merged_tables_and_owners() {
    let mut t = proc_net::parse(&fixture("proc_net_tcp"));
    t.merge(proc_net::parse(&fixture("proc_net_tcp6")));
    let exposed: BTreeSet<u64> = t.exposed_listeners().map(|s| s.inode).collect();
    assert_eq!(exposed.len(), 6);

    // A fake /proc: pid 812 is sshd, 4242 the stray gateway, 1337 docker-proxy, 99 unreadable.
    let fds = |pid: u32| -> std::io::Result<Vec<String>> {
        let v: &[&str] = match pid {
            812 => &[
                "/dev/null",
                "socket:[21044]",
                "socket:[21046]",
                "socket:[61377]",
            ],
            4242 => &[
                "pipe:[900]",
                "socket:[48211]",
                "socket:[62011]",
                "anon_inode:[eventpoll]",
            ],
            1337 => &["socket:[52110]", "socket:[52112]"],
            _ => return Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
        };
        Ok(v.iter().map(|s| s.to_string()).collect())
    };
    let owners = inode_owner::owners([1, 812, 1337, 4242, 99], fds);
    assert_eq!(owners.unreadable, [1, 99]);
    let gw = t
        .exposed_listeners()
        .find(|s| s.local.port() == 57725)
        .unwrap();
    assert_eq!(owners.pids(gw.inode), [4242]);
    let unowned: Vec<u16> = t
        .exposed_listeners()
        .filter(|s| owners.pids(s.inode).is_empty())
        .map(|s| s.local.port())
        .collect();
    assert_eq!(unowned, [3000]);

    let f = proc_net::exposed_listener_finding(gw, Some("pid 4242 (node)"), false);
    assert_eq!(f.id, ids::LISTENER_EXPOSED);
    assert!(
        f.title.contains("57725") && f.title.contains("every interface"),
        "{}",
        f.title
    );
    assert!(f.detail.contains("pid 4242 (node)"));
    assert_eq!(f.remedy, ["ss -ltnp 'sport = :57725'"]);
}
