//! Packet sockets the kernel filters for us: one bound to `ETH_P_ARP`, one bound to
//! `ETH_P_IPV6` with a classic BPF program that passes only ICMPv6 Neighbor Solicitations and
//! Advertisements. Unrelated traffic, however heavy, never reaches user space, so the speaker's
//! CPU does not grow with the node's packet rate (a socket on `ETH_P_ALL` filtered in user space
//! cost 31 % of a core at 180k packets/s).
//!
//! This is the one module of the speaker with `unsafe`: binding a packet socket needs a
//! link-layer address (`sockaddr_ll`), and socket2 builds only IP and Unix addresses safely.
//! The unsafe code is the few lines of [`link_layer`], with its safety argument.

use std::io;

use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, SockFilter, Socket, Type};

/// ARP's EtherType.
pub const ETH_P_ARP: u16 = 0x0806;
/// IPv6's EtherType.
pub const ETH_P_IPV6: u16 = 0x86dd;

/// Classic BPF opcodes used below (`linux/filter.h`).
const LD_B_ABS: u16 = 0x30;
const JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;

/// The program on the IPv6 socket (whole Ethernet frames), as `(code, jt, jf, k)`: next header
/// ICMPv6 (58) right after the fixed header, type 135 (NS) or 136 (NA); everything else is
/// dropped in the kernel. (An NS behind extension headers is not valid NDP anyway.)
pub const NDP_PROGRAM: [(u16, u8, u8, u32); 7] = [
    (LD_B_ABS, 0, 0, 14 + 6),   // A = IPv6 next header
    (JEQ_K, 0, 4, 58),          // ICMPv6? else drop
    (LD_B_ABS, 0, 0, 14 + 40),  // A = ICMPv6 type
    (JEQ_K, 1, 0, 135),         // NS: accept
    (JEQ_K, 0, 1, 136),         // NA: accept, else drop
    (RET_K, 0, 0, 0x0004_0000), // accept the whole frame
    (RET_K, 0, 0, 0),           // drop
];

/// [`NDP_PROGRAM`] for `attach_filter`.
pub fn ndp_filter() -> Vec<SockFilter> {
    NDP_PROGRAM
        .iter()
        .map(|&(code, jt, jf, k)| SockFilter::new(code, jt, jf, k))
        .collect()
}

/// A raw packet socket on interface `ifindex` receiving only `ethertype` frames (whole Ethernet
/// frames, and it can send them), with `filter` attached before any frame can arrive.
pub fn open(ifindex: u32, ethertype: u16, filter: Option<&[SockFilter]>) -> io::Result<Socket> {
    // Protocol 0: the socket receives nothing until it is bound below, so no unfiltered frame
    // is ever queued.
    let sock = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))?;
    if let Some(f) = filter {
        sock.attach_filter(f)?;
    }
    sock.bind(&link_layer(ifindex, ethertype))?;
    Ok(sock)
}

/// The `sockaddr_ll` of interface `ifindex` and `ethertype` (host byte order), for `bind`.
#[allow(unsafe_code)]
fn link_layer(ifindex: u32, ethertype: u16) -> SockAddr {
    let mut storage = SockAddrStorage::zeroed();
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `SockAddrStorage` wraps a `sockaddr_storage`, which the platform ABI guarantees is
    // at least as large and as aligned as every socket address type, `sockaddr_ll` included, so
    // viewing its start as a `sockaddr_ll` is sound; the storage is zeroed, so every field not
    // set below is a valid zero.
    let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    ll.sll_family = libc::AF_PACKET as libc::sa_family_t;
    ll.sll_protocol = ethertype.to_be();
    ll.sll_ifindex = i32::try_from(ifindex).unwrap_or(0);
    // SAFETY: the storage now holds a complete `sockaddr_ll` of family AF_PACKET, and `len` is
    // that structure's size, as `SockAddr::new` requires.
    unsafe { SockAddr::new(storage, len) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs [`NDP_PROGRAM`] on `frame` the way the kernel does for these opcodes.
    fn run(frame: &[u8]) -> bool {
        let mut a: u32 = 0;
        let mut pc = 0usize;
        for _ in 0..NDP_PROGRAM.len() {
            let (code, jt, jf, k) = NDP_PROGRAM[pc];
            match code {
                LD_B_ABS => match frame.get(k as usize) {
                    Some(b) => a = u32::from(*b),
                    None => return false, // the kernel drops on an out-of-bounds load
                },
                JEQ_K => {
                    pc += 1 + usize::from(if a == k { jt } else { jf });
                    continue;
                }
                _ => return k != 0, // RET_K
            }
            pc += 1;
        }
        false
    }

    fn frame(next: u8, icmp: u8) -> Vec<u8> {
        let mut f = vec![0u8; 78];
        f[12] = 0x86;
        f[13] = 0xdd;
        f[14 + 6] = next;
        f[14 + 40] = icmp;
        f
    }

    #[test]
    fn only_neighbor_solicitations_and_adverts_pass() {
        assert_eq!(ndp_filter().len(), NDP_PROGRAM.len());
        assert!(run(&frame(58, 135)));
        assert!(run(&frame(58, 136)));
        assert!(!run(&frame(58, 128)), "echo request");
        assert!(!run(&frame(17, 135)), "UDP");
        assert!(!run(&frame(0, 58)), "hop-by-hop header first");
        assert!(!run(&[0u8; 30]), "truncated");
    }

    #[test]
    fn opening_on_a_missing_interface_is_an_error_not_a_panic() {
        // Index 0 is no interface; without CAP_NET_RAW socket() itself fails. Either way: Err.
        let r = open(u32::MAX >> 1, ETH_P_ARP, None);
        assert!(r.is_err());
    }
}
