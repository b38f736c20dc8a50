//! `/proc/net/tcp` and `/proc/net/tcp6`: the kernel's table of TCP sockets.
//!
//! Each data line looks like
//!
//! ```text
//!   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
//!    0: 0100007F:4965 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 31337 1 ...
//! ```
//!
//! An address is the raw bytes of the `in_addr` (8 hex digits) or `in6_addr` (32 hex digits,
//! four 32-bit words), each 32-bit word printed with `%08X` as a *host-order* integer: on a
//! little-endian machine `127.0.0.1` reads `0100007F`. The port is printed in host order after
//! `ntohs`, so `4965` is port 18789. [`parse`] assumes a little-endian host (x86-64, arm64);
//! [`parse_with`] takes the byte order explicitly.
//!
//! Lines that cannot be read (truncated, garbage, wrong field shapes) are skipped and noted in
//! [`ProcNetTcp::notes`]; the header line (starting with `sl`) is skipped silently.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::Serialize;

use crate::findings::{Finding, ParseNotes, Severity, ids};

/// The byte order of the machine that produced the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    /// x86, x86-64, arm64 and most others.
    Little,
    /// s390x, some ppc64, some MIPS.
    Big,
}

impl ByteOrder {
    /// The byte order of the machine this code runs on: the one to use for the local `/proc`.
    pub const NATIVE: ByteOrder = if cfg!(target_endian = "big") {
        ByteOrder::Big
    } else {
        ByteOrder::Little
    };

    fn bytes(self, word: u32) -> [u8; 4] {
        match self {
            ByteOrder::Little => word.to_le_bytes(),
            ByteOrder::Big => word.to_be_bytes(),
        }
    }
}

/// A TCP state, from the `st` column (`include/net/tcp_states.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TcpState {
    /// `01`
    Established,
    /// `02`
    SynSent,
    /// `03`
    SynRecv,
    /// `04`
    FinWait1,
    /// `05`
    FinWait2,
    /// `06`
    TimeWait,
    /// `07`
    Close,
    /// `08`
    CloseWait,
    /// `09`
    LastAck,
    /// `0A`: a listening socket.
    Listen,
    /// `0B`
    Closing,
    /// `0C`
    NewSynRecv,
    /// `0D`
    BoundInactive,
    /// Any other code.
    Other(u8),
}

impl TcpState {
    /// The state for a numeric code.
    pub fn from_code(code: u8) -> TcpState {
        match code {
            0x01 => TcpState::Established,
            0x02 => TcpState::SynSent,
            0x03 => TcpState::SynRecv,
            0x04 => TcpState::FinWait1,
            0x05 => TcpState::FinWait2,
            0x06 => TcpState::TimeWait,
            0x07 => TcpState::Close,
            0x08 => TcpState::CloseWait,
            0x09 => TcpState::LastAck,
            0x0A => TcpState::Listen,
            0x0B => TcpState::Closing,
            0x0C => TcpState::NewSynRecv,
            0x0D => TcpState::BoundInactive,
            other => TcpState::Other(other),
        }
    }

    /// The numeric code, as in the `st` column.
    pub fn code(self) -> u8 {
        match self {
            TcpState::Established => 0x01,
            TcpState::SynSent => 0x02,
            TcpState::SynRecv => 0x03,
            TcpState::FinWait1 => 0x04,
            TcpState::FinWait2 => 0x05,
            TcpState::TimeWait => 0x06,
            TcpState::Close => 0x07,
            TcpState::CloseWait => 0x08,
            TcpState::LastAck => 0x09,
            TcpState::Listen => 0x0A,
            TcpState::Closing => 0x0B,
            TcpState::NewSynRecv => 0x0C,
            TcpState::BoundInactive => 0x0D,
            TcpState::Other(c) => c,
        }
    }
}

/// One socket line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Socket {
    /// Local address and port (`local.ip()`, `local.port()`).
    pub local: SocketAddr,
    /// Remote address and port; `0.0.0.0:0` / `[::]:0` for a listener.
    pub remote: SocketAddr,
    /// Connection state.
    pub state: TcpState,
    /// Owning user id.
    pub uid: u32,
    /// Socket inode: the `N` of the `socket:[N]` fd links of the processes holding it. 0 for
    /// sockets no process holds (TIME_WAIT).
    pub inode: u64,
}

impl Socket {
    /// True for a listening socket.
    pub fn is_listening(&self) -> bool {
        self.state == TcpState::Listen
    }

    /// True when the local address is reachable from other hosts (see [`is_exposed`]).
    pub fn is_exposed(&self) -> bool {
        is_exposed(self.local.ip())
    }
}

/// The result of parsing one `/proc/net/tcp*` text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProcNetTcp {
    /// The sockets read, in input order.
    pub sockets: Vec<Socket>,
    /// Lines skipped, with reasons.
    pub notes: ParseNotes,
}

impl ProcNetTcp {
    /// The listening sockets.
    pub fn listeners(&self) -> impl Iterator<Item = &Socket> {
        listeners(&self.sockets)
    }

    /// The listening sockets on a non-loopback address.
    pub fn exposed_listeners(&self) -> impl Iterator<Item = &Socket> {
        self.listeners().filter(|s| s.is_exposed())
    }

    /// Appends another table's sockets and notes (for `tcp` followed by `tcp6`).
    pub fn merge(&mut self, other: ProcNetTcp) {
        self.sockets.extend(other.sockets);
        self.notes.extend(other.notes);
    }

    /// A finding about skipped lines, if any; `what` names the input (`"/proc/net/tcp6"`).
    pub fn parse_finding(&self, what: &str) -> Option<Finding> {
        self.notes.finding(what, self.sockets.len())
    }
}

/// The listening sockets among `sockets`.
pub fn listeners(sockets: &[Socket]) -> impl Iterator<Item = &Socket> {
    sockets.iter().filter(|s| s.is_listening())
}

/// Parses `/proc/net/tcp` or `/proc/net/tcp6` text produced on a little-endian host.
/// Never fails: unusable lines are skipped and noted.
pub fn parse(text: &str) -> ProcNetTcp {
    parse_with(text, ByteOrder::Little)
}

/// [`parse`] for text produced on a host of the given byte order
/// (use [`ByteOrder::NATIVE`] for the local `/proc`).
pub fn parse_with(text: &str, order: ByteOrder) -> ProcNetTcp {
    let mut out = ProcNetTcp::default();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with("sl ") || trimmed == "sl" {
            continue;
        }
        match parse_line(trimmed, order) {
            Ok(socket) => out.sockets.push(socket),
            Err(reason) => out.notes.push(None, n, reason, line),
        }
    }
    out
}

fn parse_line(line: &str, order: ByteOrder) -> Result<Socket, &'static str> {
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    let [
        sl,
        local,
        remote,
        st,
        _queues,
        _timer,
        _retr,
        uid,
        _timeout,
        inode,
        ..,
    ] = fields[..]
    else {
        return Err("truncated line: fewer than 10 fields");
    };
    if !sl.ends_with(':') || !sl.trim_end_matches(':').bytes().all(|b| b.is_ascii_digit()) {
        return Err("first field is not a slot number like `12:`");
    }
    let local = parse_endpoint(local, order).ok_or("bad local address")?;
    let remote = parse_endpoint(remote, order).ok_or("bad remote address")?;
    if local.is_ipv4() != remote.is_ipv4() {
        return Err("local and remote address families differ");
    }
    if st.len() != 2 {
        return Err("state is not two hex digits");
    }
    let state = u8::from_str_radix(st, 16).map_err(|_| "state is not hex")?;
    let uid = uid.parse::<u32>().map_err(|_| "uid is not a number")?;
    let inode = inode.parse::<u64>().map_err(|_| "inode is not a number")?;
    Ok(Socket {
        local,
        remote,
        state: TcpState::from_code(state),
        uid,
        inode,
    })
}

/// `ADDR:PORT` in the kernel's hex encoding.
fn parse_endpoint(s: &str, order: ByteOrder) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    if port.is_empty() || port.len() > 4 || !port.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = parse_hex_addr(addr, order)?;
    Some(SocketAddr::new(ip, port))
}

/// 8 hex digits (IPv4) or 32 (IPv6, four host-order 32-bit words).
fn parse_hex_addr(s: &str, order: ByteOrder) -> Option<IpAddr> {
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match s.len() {
        8 => {
            let word = u32::from_str_radix(s, 16).ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(order.bytes(word))))
        }
        32 => {
            let mut bytes = [0u8; 16];
            for (chunk, out) in s.as_bytes().chunks(8).zip(bytes.chunks_mut(4)) {
                let hex = std::str::from_utf8(chunk).ok()?;
                let word = u32::from_str_radix(hex, 16).ok()?;
                out.copy_from_slice(&order.bytes(word));
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// Where a bound address can be reached from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exposure {
    /// Loopback only: `127.0.0.0/8`, `::1`, `::ffff:127.0.0.0/104`.
    Loopback,
    /// The wildcard address (`0.0.0.0`, `::`, `::ffff:0.0.0.0`): every interface.
    AllInterfaces,
    /// One specific non-loopback address.
    Address,
}

/// Classifies a bound address. IPv4-mapped IPv6 addresses are classified as their IPv4 address.
pub fn exposure(addr: IpAddr) -> Exposure {
    let addr = match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    if addr.is_loopback() {
        Exposure::Loopback
    } else if addr.is_unspecified() {
        Exposure::AllInterfaces
    } else {
        Exposure::Address
    }
}

/// True for loopback addresses: `127.0.0.0/8`, `::1` and `::ffff:127.x.y.z`.
pub fn is_loopback(addr: IpAddr) -> bool {
    exposure(addr) == Exposure::Loopback
}

/// True when a socket bound to `addr` is reachable from other hosts: anything but loopback.
/// The wildcard addresses `0.0.0.0` and `::` are exposed on every interface; link-local and
/// private addresses count as exposed too (the local network can reach them).
pub fn is_exposed(addr: IpAddr) -> bool {
    !is_loopback(addr)
}

/// A finding for a listener on a non-loopback address.
///
/// `owner` describes the process when known (`"pid 4242 (node)"`); `firewall_filters_inbound`
/// says whether an inbound firewall was found (the port may then be unreachable from outside,
/// which is why this is a warning and not critical). Agent control surfaces identified by a
/// deeper probe deserve a [`Severity::Critical`] finding of their own.
pub fn exposed_listener_finding(
    socket: &Socket,
    owner: Option<&str>,
    firewall_filters_inbound: bool,
) -> Finding {
    let port = socket.local.port();
    let ip = socket.local.ip();
    let whom = owner.unwrap_or("an unidentified process");
    let where_ = match exposure(ip) {
        Exposure::AllInterfaces => "on every interface".to_owned(),
        _ => format!("on {ip}"),
    };
    let mut detail = format!(
        "TCP port {port} listens {where_} ({}), held by {whom} (uid {}, socket inode {}).",
        socket.local, socket.uid, socket.inode
    );
    if firewall_filters_inbound {
        detail.push_str(
            " An inbound firewall is active, so the port may be filtered; check its rules.",
        );
    } else {
        detail.push_str(" No inbound firewall was found, so other hosts can connect to it.");
    }
    detail.push_str(
        " If it should only serve this machine, bind it to 127.0.0.1; if it is not needed, stop \
         the process.",
    );
    Finding::new(
        ids::LISTENER_EXPOSED,
        Severity::Warn,
        format!("port {port}/tcp listens {where_}"),
        detail,
    )
    .with_remedy([format!("ss -ltnp 'sport = :{port}'")])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_ipv4_little_endian() {
        let s = parse(
            "   0: 0100007F:4965 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 31337 1 0000000000000000 100 0 0 10 0",
        );
        assert!(s.notes.is_empty(), "{:?}", s.notes);
        let sock = &s.sockets[0];
        assert_eq!(sock.local, "127.0.0.1:18789".parse().unwrap());
        assert_eq!(sock.state, TcpState::Listen);
        assert_eq!((sock.uid, sock.inode), (1000, 31337));
    }

    #[test]
    fn decodes_ipv4_big_endian() {
        let s = parse_with(
            "0: 7F000001:0016 00000000:0000 0A 0:0 0:0 0 0 0 7",
            ByteOrder::Big,
        );
        assert_eq!(s.sockets[0].local, "127.0.0.1:22".parse().unwrap());
    }

    #[test]
    fn decodes_ipv6_words() {
        // ::1 -> last word 0x01000000 little-endian.
        let a = parse_hex_addr("00000000000000000000000001000000", ByteOrder::Little);
        assert_eq!(a, Some("::1".parse().unwrap()));
        // ::ffff:127.0.0.1
        let a = parse_hex_addr("0000000000000000FFFF00000100007F", ByteOrder::Little);
        assert_eq!(a, Some("::ffff:127.0.0.1".parse().unwrap()));
        // 2001:db8::1
        let a = parse_hex_addr("B80D0120000000000000000001000000", ByteOrder::Little);
        assert_eq!(a, Some("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn exposure_classes() {
        let e = |s: &str| exposure(s.parse().unwrap());
        assert_eq!(e("127.0.0.1"), Exposure::Loopback);
        assert_eq!(e("127.1.2.3"), Exposure::Loopback);
        assert_eq!(e("::1"), Exposure::Loopback);
        assert_eq!(e("::ffff:127.0.0.53"), Exposure::Loopback);
        assert_eq!(e("0.0.0.0"), Exposure::AllInterfaces);
        assert_eq!(e("::"), Exposure::AllInterfaces);
        assert_eq!(e("::ffff:0.0.0.0"), Exposure::AllInterfaces);
        assert_eq!(e("10.0.0.5"), Exposure::Address);
        assert_eq!(e("fe80::1"), Exposure::Address);
        assert!(is_exposed("0.0.0.0".parse().unwrap()));
        assert!(!is_exposed("::1".parse().unwrap()));
    }

    #[test]
    fn state_codes_round_trip() {
        for c in 0..=255u8 {
            assert_eq!(TcpState::from_code(c).code(), c);
        }
    }
}
