//! The sockets a node's own processes listen on, read from `/proc/net/{tcp,tcp6,udp,udp6}`:
//! TCP sockets in LISTEN state and unconnected bound UDP sockets, with their local address and
//! port. These are what a forwarder-mode Service would silently take over on a published node
//! address, since kube-proxy's DNAT runs before the packet ever reaches a socket.
//!
//! Pure: text in, sockets out. The kernel's format is fixed, but nothing here trusts it: a line
//! that does not parse is skipped, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ferrolb_addresses::Family;

use super::Proto;

/// One listening (TCP) or bound (UDP) socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Socket {
    /// TCP or UDP.
    pub proto: Proto,
    /// The local address (`0.0.0.0` or `::` for every address).
    pub addr: IpAddr,
    /// The local port.
    pub port: u16,
    /// The socket's inode: a socket of this very process is found by it in `/proc/self/fd`.
    pub inode: u64,
}

impl Socket {
    /// Whether a packet to `ip` of `family` on this socket's port reaches it: bound to `ip`, or
    /// to the wildcard of its family, or to `::`, which also takes IPv4 unless the socket is
    /// IPv6-only (not visible in /proc, so counted as taking both: a false conflict is safer
    /// than a hijacked sshd).
    pub fn takes(&self, family: Family, ip: Option<IpAddr>) -> bool {
        match self.addr {
            a if a.is_unspecified() => Family::of(a) == family || a.is_ipv6(),
            a => ip == Some(a),
        }
    }
}

/// TCP_LISTEN in `/proc/net/tcp*`.
const TCP_LISTEN: &str = "0A";
/// TCP_CLOSE, the state an unconnected UDP socket shows in `/proc/net/udp*`.
const UDP_UNCONNECTED: &str = "07";

/// Parses one `/proc/net/{tcp,tcp6,udp,udp6}` file.
pub fn parse(text: &str, proto: Proto) -> Vec<Socket> {
    let wanted = match proto {
        Proto::Tcp => TCP_LISTEN,
        Proto::Udp => UDP_UNCONNECTED,
        Proto::Sctp => return Vec::new(),
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _slot = fields.next()?;
            let local = fields.next()?;
            let _remote = fields.next()?;
            let state = fields.next()?;
            if state != wanted {
                return None;
            }
            // tx:rx queues, timer, retransmits, uid, timeout, then the inode.
            let inode = fields.nth(5)?.parse().ok()?;
            let (addr, port) = local.split_once(':')?;
            Some(Socket {
                proto,
                addr: parse_addr(addr)?,
                port: u16::from_str_radix(port, 16).ok()?,
                inode,
            })
        })
        .collect()
}

/// The socket inodes this process holds (`socket:[<inode>]` links in `/proc/self/fd`).
pub fn own_inodes() -> std::collections::BTreeSet<u64> {
    std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// The kernel prints addresses as 32-bit words in host byte order (`%08X` each): one word for
/// IPv4, four for IPv6. This machine is little-endian (x86_64), so each word's bytes are
/// reversed.
fn parse_addr(hex: &str) -> Option<IpAddr> {
    let word =
        |s: &str| -> Option<[u8; 4]> { u32::from_str_radix(s, 16).ok().map(u32::to_le_bytes) };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(hex)?))),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(hex.get(i * 8..i * 8 + 8)?)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Lines as a Linux 6.x kernel prints them (columns after the inode cut).
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 21361 1 0000000000000000 100 0 0 10 0
   1: 0B6433C6:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 21362 1 0000000000000000 100 0 0 10 0
   2: 0B6433C6:9C40 C86433C6:0050 01 00000000:00000000 00:00000000 00000000     0        0 21363 1 0000000000000000 100 0 0 10 0
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: B80D0120000000000000000011000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
";
    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3 2 0 0
  101: 0100007F:A000 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 4 2 0 0
";

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn listening_tcp_sockets_with_their_addresses() {
        assert_eq!(
            parse(TCP, Proto::Tcp),
            [
                Socket {
                    proto: Proto::Tcp,
                    addr: ip("0.0.0.0"),
                    port: 22,
                    inode: 21361
                },
                Socket {
                    proto: Proto::Tcp,
                    addr: ip("198.51.100.11"),
                    port: 443,
                    inode: 21362
                },
            ]
        );
        assert_eq!(
            parse(TCP6, Proto::Tcp),
            [
                Socket {
                    proto: Proto::Tcp,
                    addr: ip("::"),
                    port: 80,
                    inode: 1
                },
                Socket {
                    proto: Proto::Tcp,
                    addr: ip("2001:db8::11"),
                    port: 8080,
                    inode: 2
                },
            ]
        );
    }

    #[test]
    fn only_unconnected_udp_sockets() {
        assert_eq!(
            parse(UDP, Proto::Udp),
            [Socket {
                proto: Proto::Udp,
                addr: ip("0.0.0.0"),
                port: 53,
                inode: 3
            }]
        );
    }

    #[test]
    fn this_process_finds_its_own_socket_by_inode() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let text = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
        let mine = parse(&text, Proto::Tcp)
            .into_iter()
            .find(|s| s.port == port && s.addr == ip("127.0.0.1"))
            .expect("our listener is listed");
        assert!(own_inodes().contains(&mine.inode));
    }

    #[test]
    fn which_packets_a_socket_takes() {
        let any4 = Socket {
            proto: Proto::Tcp,
            addr: ip("0.0.0.0"),
            port: 22,
            inode: 106,
        };
        let any6 = Socket {
            proto: Proto::Tcp,
            addr: ip("::"),
            port: 22,
            inode: 107,
        };
        let one = Socket {
            proto: Proto::Tcp,
            addr: ip("198.51.100.11"),
            port: 22,
            inode: 108,
        };
        assert!(any4.takes(Family::V4, Some(ip("198.51.100.12"))));
        assert!(!any4.takes(Family::V6, Some(ip("2001:db8::11"))));
        assert!(any6.takes(Family::V4, None) && any6.takes(Family::V6, None));
        assert!(one.takes(Family::V4, Some(ip("198.51.100.11"))));
        assert!(!one.takes(Family::V4, Some(ip("198.51.100.12"))));
    }

    proptest! {
        /// Any text parses without panicking, and every socket found is in the wanted state.
        #[test]
        fn never_panics(text in "\\PC{0,400}", tcp in any::<bool>()) {
            let proto = if tcp { Proto::Tcp } else { Proto::Udp };
            for s in parse(&text, proto) {
                prop_assert_eq!(s.proto, proto);
            }
        }
    }
}
