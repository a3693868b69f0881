//! Byte fixtures for the wire code.
//!
//! The frames below are real: captured with an AF_PACKET socket on a veth pair between two
//! throw-away network namespaces (A = 02:00:00:00:00:0a, 198.51.100.1, 2001:db8::1, fe80::a;
//! B = 02:00:00:00:00:0b, 198.51.100.2, 2001:db8::2) while running Thomas Habets' `arping` 2.23,
//! `ndisc6` 1.0.5, and adding an address on A that B already had (kernel DAD). The replies are
//! the Linux kernel's own, so their ICMPv6 checksums are known-good values computed by an
//! independent implementation. Our responders, given the same requests, must produce the
//! kernel's bytes exactly.

use std::net::{Ipv4Addr, Ipv6Addr};

use ferrolb_speaker_core::wire::{
    self, ArpOperation, DropReason, Frame, IgnoreReason, Mac, NeighborAdvertRepr,
    NeighborSolicitRepr, Outcome, VlanTag, arp, ndp,
};

const MAC_A: Mac = [2, 0, 0, 0, 0, 0x0a];
const MAC_B: Mac = [2, 0, 0, 0, 0, 0x0b];
const IP4_A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const IP4_B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const IP6_B: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// `arping -c1 -i va 198.51.100.2` from A (58 bytes: arping pads after the 28-byte body).
const ARPING_REQUEST: &str = "ffffffffffff 02000000000a 0806 \
    0001 0800 06 04 0001 02000000000a c6336401 000000000000 c6336402 \
    00000000000000000000000000000000";
/// B's kernel reply to it (42 bytes).
const KERNEL_ARP_REPLY: &str = "02000000000a 02000000000b 0806 \
    0001 0800 06 04 0002 02000000000b c6336402 02000000000a c6336401";
/// `arping -0 ...`: RFC 5227 probe, sender IP 0.0.0.0.
const ARPING_PROBE: &str = "ffffffffffff 02000000000a 0806 \
    0001 0800 06 04 0001 02000000000a 00000000 000000000000 c6336402 \
    00000000000000000000000000000000";
/// B's kernel reply to the probe: target IP 0.0.0.0, unicast to the prober.
const KERNEL_PROBE_REPLY: &str = "02000000000a 02000000000b 0806 \
    0001 0800 06 04 0002 02000000000b c6336402 02000000000a 00000000";
/// `arping -U -S 198.51.100.1 198.51.100.1`: gratuitous ARP, request form (arping puts the
/// broadcast address in THA).
const ARPING_GARP_REQUEST: &str = "ffffffffffff 02000000000a 0806 \
    0001 0800 06 04 0001 02000000000a c6336401 ffffffffffff c6336401 \
    00000000000000000000000000000000";
/// `arping -U -P ...`: gratuitous ARP, reply form.
const ARPING_GARP_REPLY: &str = "ffffffffffff 02000000000a 0806 \
    0001 0800 06 04 0002 02000000000a c6336401 ffffffffffff c6336401 \
    00000000000000000000000000000000";
/// `ndisc6 -1 -r 1 2001:db8::2 va`: NS from fe80::a to ff02::1:ff00:2 with SLLA; ndisc6's
/// socket got an automatic flow label (0xbb862).
const NDISC6_NS: &str = "3333ff000002 02000000000a 86dd \
    600bb862 0020 3a ff fe80000000000000000000fffe00000a ff0200000000000000000001ff000002 \
    87 00 4c4d 00000000 20010db8000000000000000000000002 01 01 02000000000a";
/// B's kernel answer: solicited NA (S=1, O=1) from 2001:db8::2 to fe80::a with TLLA.
const KERNEL_NA: &str = "02000000000a 02000000000b 86dd \
    60000000 0020 3a ff 20010db8000000000000000000000002 fe80000000000000000000fffe00000a \
    88 00 ba97 60000000 20010db8000000000000000000000002 02 01 02000000000b";
/// A's kernel DAD probe for 2001:db8::2: source ::, RFC 7527 nonce option, no SLLA.
const KERNEL_DAD_NS: &str = "3333ff000002 02000000000a 86dd \
    60000000 0020 3a ff 00000000000000000000000000000000 ff0200000000000000000001ff000002 \
    87 00 5c39 00000000 20010db8000000000000000000000002 0e 01 67e7dd579d69";
/// B's kernel defence: NA to all-nodes with S=0, O=1, TLLA.
const KERNEL_DAD_NA: &str = "333300000001 02000000000b 86dd \
    60000000 0020 3a ff 20010db8000000000000000000000002 ff020000000000000000000000000001 \
    88 00 f91e 20000000 20010db8000000000000000000000002 02 01 02000000000b";
/// B's kernel router solicitation (ICMPv6 type 133).
const KERNEL_RS: &str = "333300000002 02000000000b 86dd \
    60000000 0010 3a ff fe80000000000000000000fffe00000b ff020000000000000000000000000002 \
    85 00 7b18 00000000 01 01 02000000000b";
/// B's kernel MLDv2 report (hop-by-hop extension header, hop limit 1).
const KERNEL_MLD: &str = "333300000016 02000000000b 86dd \
    60000000 0038 00 01 fe80000000000000000000fffe00000b ff020000000000000000000000000016 \
    3a00050200000100 8f00 6fd7 0000 0002 04000000 ff0200000000000000000001ff00000b \
    04000000 ff0200000000000000000001ff000002";

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    assert_eq!(digits.len() % 2, 0, "odd hex fixture");
    digits
        .chunks(2)
        .map(|p| {
            let s = std::str::from_utf8(p).expect("ascii");
            u8::from_str_radix(s, 16).expect("hex digit")
        })
        .collect()
}

/// An ICMPv6 checksum written independently of the crate's: build the pseudo-header as bytes,
/// append the message, sum 16-bit words. Used to re-seal hand-mutated frames.
fn reference_checksum(ipv6_packet: &[u8]) -> u16 {
    let len = usize::from(u16::from_be_bytes([ipv6_packet[4], ipv6_packet[5]]));
    let mut data = Vec::new();
    data.extend_from_slice(&ipv6_packet[8..40]);
    data.extend_from_slice(&(len as u32).to_be_bytes());
    data.extend_from_slice(&[0, 0, 0, 58]);
    let mut msg = ipv6_packet[40..40 + len].to_vec();
    msg[2] = 0;
    msg[3] = 0;
    data.extend_from_slice(&msg);
    if data.len() % 2 == 1 {
        data.push(0);
    }
    let mut sum: u32 = 0;
    for w in data.chunks(2) {
        sum += u32::from(w[0]) << 8 | u32::from(w[1]);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes a correct checksum into an untagged Ethernet+IPv6+ICMPv6 frame.
fn reseal(frame: &mut [u8]) {
    let c = reference_checksum(&frame[14..]);
    frame[14 + 42..14 + 44].copy_from_slice(&c.to_be_bytes());
}

fn owns4(ip: Ipv4Addr) -> impl Fn(Ipv4Addr) -> bool {
    move |x| x == ip
}

fn owns6(ip: Ipv6Addr) -> impl Fn(Ipv6Addr) -> bool {
    move |x| x == ip
}

fn with_vlan(frame: &[u8], tci: u16) -> Vec<u8> {
    let mut v = frame[..12].to_vec();
    v.extend_from_slice(&[0x81, 0x00]);
    v.extend_from_slice(&tci.to_be_bytes());
    v.extend_from_slice(&frame[12..]);
    v
}

#[test]
fn reference_checksum_agrees_with_the_kernel() {
    for f in [
        NDISC6_NS,
        KERNEL_NA,
        KERNEL_DAD_NS,
        KERNEL_DAD_NA,
        KERNEL_RS,
    ] {
        let b = hex(f);
        assert_eq!(
            reference_checksum(&b[14..]),
            u16::from_be_bytes([b[56], b[57]]),
            "{f}"
        );
    }
}

#[test]
fn arp_request_is_answered_like_the_kernel() {
    let out = arp::respond(&hex(ARPING_REQUEST), MAC_B, owns4(IP4_B));
    assert_eq!(out, Outcome::Reply(hex(KERNEL_ARP_REPLY)));
}

#[test]
fn arp_probe_is_answered_like_the_kernel() {
    let probe = wire::parse(&hex(ARPING_PROBE)).expect("valid probe");
    let Frame::Arp(a) = probe.frame else {
        panic!("not ARP")
    };
    assert!(a.is_probe());
    let out = arp::respond(&hex(ARPING_PROBE), MAC_B, owns4(IP4_B));
    assert_eq!(out, Outcome::Reply(hex(KERNEL_PROBE_REPLY)));
}

#[test]
fn ns_is_answered_like_the_kernel() {
    // Linux uses the target as the NA source; pass it as the interface source to compare.
    let out = ndp::respond(&hex(NDISC6_NS), MAC_B, IP6_B, owns6(IP6_B));
    assert_eq!(out, Outcome::Reply(hex(KERNEL_NA)));
}

#[test]
fn dad_probe_is_defended_like_the_kernel() {
    let out = ndp::respond(&hex(KERNEL_DAD_NS), MAC_B, IP6_B, owns6(IP6_B));
    assert_eq!(out, Outcome::Reply(hex(KERNEL_DAD_NA)));
}

#[test]
fn unsolicited_na_matches_the_kernels_all_nodes_advert() {
    // The kernel's DAD defence is exactly the takeover advert: to ff02::1, S=0, O=1, TLLA.
    let na = ndp::unsolicited_advert(MAC_B, IP6_B, IP6_B, None);
    assert_eq!(na.emit(), hex(KERNEL_DAD_NA));
}

#[test]
fn every_fixture_round_trips() {
    let fixtures = [
        (ARPING_REQUEST, 42),
        (KERNEL_ARP_REPLY, 42),
        (ARPING_PROBE, 42),
        (KERNEL_PROBE_REPLY, 42),
        (ARPING_GARP_REQUEST, 42),
        (ARPING_GARP_REPLY, 42),
        (NDISC6_NS, 86),
        (KERNEL_NA, 86),
        (KERNEL_DAD_NS, 86),
        (KERNEL_DAD_NA, 86),
    ];
    for (f, meaningful) in fixtures {
        let bytes = hex(f);
        let packet = wire::parse(&bytes).unwrap_or_else(|e| panic!("{f}: {e}"));
        // Bytes past `meaningful` are Ethernet padding, which emit does not add.
        assert_eq!(packet.emit(), bytes[..meaningful], "{f}");
        // Tagged variant: same repr plus the tag, same bytes plus the tag.
        let tagged = with_vlan(&bytes, 0x602a);
        let tp = wire::parse(&tagged).expect("tagged fixture parses");
        assert_eq!(tp.ethernet.vlan, Some(VlanTag::from_tci(0x602a)));
        assert_eq!(tp.frame, packet.frame);
        assert_eq!(tp.emit(), tagged[..meaningful + 4]);
    }
}

#[test]
fn parsed_fields_are_the_captured_ones() {
    let p = wire::parse(&hex(NDISC6_NS)).expect("valid NS");
    assert_eq!(p.ethernet.dst, [0x33, 0x33, 0xff, 0, 0, 2]);
    let Frame::NeighborSolicit(ns) = p.frame else {
        panic!("not an NS")
    };
    assert_eq!(
        ns.ip.src,
        "fe80::ff:fe00:a".parse::<Ipv6Addr>().expect("literal")
    );
    assert_eq!(ns.ip.dst, ndp::solicited_node(IP6_B));
    assert_eq!(ns.ip.flow_label, 0xbb862);
    assert_eq!(
        (ns.target, ns.source_mac, ns.nonce),
        (IP6_B, Some(MAC_A), None)
    );
    assert!(!ns.is_dad());
    assert_eq!(ndp::multicast_mac(ns.ip.dst), p.ethernet.dst);

    let Frame::NeighborSolicit(dad) = wire::parse(&hex(KERNEL_DAD_NS)).expect("valid").frame else {
        panic!("not an NS")
    };
    assert!(dad.is_dad());
    assert_eq!(dad.nonce, Some([0x67, 0xe7, 0xdd, 0x57, 0x9d, 0x69]));

    let Frame::NeighborAdvert(na) = wire::parse(&hex(KERNEL_NA)).expect("valid").frame else {
        panic!("not an NA")
    };
    assert!(na.solicited && na.override_ && !na.router);
    assert_eq!(na.target_mac, Some(MAC_B));

    let Frame::Arp(a) = wire::parse(&hex(KERNEL_ARP_REPLY)).expect("valid").frame else {
        panic!("not ARP")
    };
    assert_eq!(a.operation, ArpOperation::Reply);
    assert_eq!((a.sender_ip, a.target_ip), (IP4_B, IP4_A));
    assert_eq!((a.sender_mac, a.target_mac), (MAC_B, MAC_A));
}

#[test]
fn our_gratuitous_arp_in_both_forms() {
    let request = arp::gratuitous_request(MAC_A, IP4_A, None).emit();
    assert_eq!(
        request,
        hex("ffffffffffff 02000000000a 0806 0001 0800 06 04 0001 \
             02000000000a c6336401 000000000000 c6336401")
    );
    let reply = arp::gratuitous_reply(MAC_A, IP4_A, Some(VlanTag::new(42))).emit();
    assert_eq!(
        reply,
        hex(
            "ffffffffffff 02000000000a 8100 002a 0806 0001 0800 06 04 0002 \
             02000000000a c6336401 02000000000a c6336401"
        )
    );
}

#[test]
fn gratuitous_arp_from_others_is_a_conflict_only_for_owned_ips() {
    for f in [ARPING_GARP_REQUEST, ARPING_GARP_REPLY] {
        let b = hex(f);
        assert_eq!(
            arp::respond(&b, MAC_B, owns4(IP4_A)),
            Outcome::Ignore(IgnoreReason::AddressConflict)
        );
        assert_eq!(
            arp::respond(&b, MAC_B, owns4(IP4_B)),
            Outcome::Ignore(IgnoreReason::Gratuitous)
        );
        // Our own announcement looping back is not a conflict.
        assert_eq!(
            arp::respond(&b, MAC_A, owns4(IP4_A)),
            Outcome::Ignore(IgnoreReason::FromSelf)
        );
    }
}

#[test]
fn responders_ignore_what_is_not_for_them() {
    let req = hex(ARPING_REQUEST);
    assert_eq!(
        arp::respond(&req, MAC_B, |_| false),
        Outcome::Ignore(IgnoreReason::NotOwned)
    );
    assert_eq!(
        arp::respond(&hex(KERNEL_ARP_REPLY), MAC_A, |_| false),
        Outcome::Ignore(IgnoreReason::NotARequest)
    );
    // Someone else answering for an IP we announce.
    assert_eq!(
        arp::respond(&hex(KERNEL_ARP_REPLY), MAC_A, owns4(IP4_B)),
        Outcome::Ignore(IgnoreReason::AddressConflict)
    );
    assert_eq!(
        arp::respond(&hex(NDISC6_NS), MAC_B, |_| true),
        Outcome::Ignore(IgnoreReason::WrongProtocol)
    );
    assert_eq!(
        ndp::respond(&req, MAC_B, IP6_B, |_| true),
        Outcome::Ignore(IgnoreReason::WrongProtocol)
    );
    assert_eq!(
        ndp::respond(&hex(NDISC6_NS), MAC_B, IP6_B, |_| false),
        Outcome::Ignore(IgnoreReason::NotOwned)
    );
    assert_eq!(
        ndp::respond(&hex(NDISC6_NS), MAC_A, IP6_B, |_| true),
        Outcome::Ignore(IgnoreReason::FromSelf)
    );
    assert_eq!(
        ndp::respond(&hex(KERNEL_NA), MAC_A, IP6_B, owns6(IP6_B)),
        Outcome::Ignore(IgnoreReason::AddressConflict)
    );
    assert_eq!(
        ndp::respond(&hex(KERNEL_NA), MAC_A, IP6_B, |_| false),
        Outcome::Ignore(IgnoreReason::NotARequest)
    );
    assert_eq!(
        ndp::respond(&hex(KERNEL_RS), MAC_A, IP6_B, |_| true),
        Outcome::Drop(DropReason::NotNdp)
    );
    assert_eq!(
        ndp::respond(&hex(KERNEL_MLD), MAC_A, IP6_B, |_| true),
        Outcome::Drop(DropReason::NotNdp)
    );
}

#[test]
fn replies_keep_the_vlan_tag() {
    let out = arp::respond(
        &with_vlan(&hex(ARPING_REQUEST), 0x602a),
        MAC_B,
        owns4(IP4_B),
    );
    assert_eq!(
        out,
        Outcome::Reply(with_vlan(&hex(KERNEL_ARP_REPLY), 0x602a))
    );
    let out = ndp::respond(
        &with_vlan(&hex(NDISC6_NS), 0x0064),
        MAC_B,
        IP6_B,
        owns6(IP6_B),
    );
    assert_eq!(out, Outcome::Reply(with_vlan(&hex(KERNEL_NA), 0x0064)));
}

#[test]
fn na_source_is_the_callers_interface_address() {
    let link_local: Ipv6Addr = "fe80::ff:fe00:b".parse().expect("literal");
    let Outcome::Reply(bytes) = ndp::respond(&hex(NDISC6_NS), MAC_B, link_local, owns6(IP6_B))
    else {
        panic!("no reply")
    };
    let Frame::NeighborAdvert(na) = wire::parse(&bytes).expect("our NA parses").frame else {
        panic!("not an NA")
    };
    assert_eq!(na.ip.src, link_local);
    assert_eq!(na.target, IP6_B);
    assert_eq!(
        reference_checksum(&bytes[14..]),
        u16::from_be_bytes([bytes[56], bytes[57]])
    );
}

#[test]
fn unicast_ns_without_slla_is_answered_to_the_ethernet_source() {
    // A NUD probe: unicast to the target, no SLLA option.
    let ns = NeighborSolicitRepr {
        ip: wire::Ipv6Repr::new("fe80::ff:fe00:a".parse().expect("literal"), IP6_B),
        target: IP6_B,
        source_mac: None,
        nonce: None,
    };
    let frame = wire::Packet {
        ethernet: wire::EthernetRepr {
            dst: MAC_B,
            src: MAC_A,
            vlan: None,
        },
        frame: Frame::NeighborSolicit(ns),
    }
    .emit();
    let Outcome::Reply(bytes) = ndp::respond(&frame, MAC_B, IP6_B, owns6(IP6_B)) else {
        panic!("no reply")
    };
    let p = wire::parse(&bytes).expect("our NA parses");
    assert_eq!(p.ethernet.dst, MAC_A);
    let Frame::NeighborAdvert(NeighborAdvertRepr {
        solicited,
        override_,
        router,
        ip,
        ..
    }) = p.frame
    else {
        panic!("not an NA")
    };
    assert!(solicited && override_ && !router);
    assert_eq!(ip.dst, ns.ip.src);
}

/// Applies `mutate` to a copy of `fixture`, re-seals the checksum, and parses.
fn parse_mutated(fixture: &str, reseal_after: bool, mutate: impl Fn(&mut Vec<u8>)) -> DropReason {
    let mut b = hex(fixture);
    mutate(&mut b);
    if reseal_after {
        reseal(&mut b);
    }
    wire::parse(&b).expect_err("mutated frame must be dropped")
}

#[test]
fn rfc4861_validation_of_ns_and_na() {
    use DropReason::*;
    // Offsets in an untagged frame: IPv6 at 14, ICMPv6 at 54, options at 78.
    assert_eq!(
        parse_mutated(NDISC6_NS, false, |b| b[21] = 254),
        HopLimitNot255
    );
    assert_eq!(parse_mutated(NDISC6_NS, false, |b| b[70] ^= 1), BadChecksum);
    assert_eq!(parse_mutated(NDISC6_NS, true, |b| b[55] = 1), BadIcmpCode);
    assert_eq!(
        parse_mutated(NDISC6_NS, true, |b| b[62] = 0xff),
        MulticastTarget
    );
    assert_eq!(
        parse_mutated(NDISC6_NS, true, |b| b[22] = 0xff),
        MulticastSource
    );
    assert_eq!(parse_mutated(NDISC6_NS, true, |b| b[79] = 0), BadOption);
    assert_eq!(parse_mutated(NDISC6_NS, true, |b| b[79] = 2), BadOption);
    // ICMPv6 message of 20 bytes (payload length and frame cut to match).
    assert_eq!(
        parse_mutated(NDISC6_NS, true, |b| {
            b[19] = 20;
            b.truncate(74);
        }),
        IcmpTooShort
    );
    // DAD (source ::) with an SLLA option.
    assert_eq!(
        parse_mutated(NDISC6_NS, true, |b| b[22..38].fill(0)),
        DadWithSourceLinkAddr
    );
    // DAD not to a solicited-node group.
    assert_eq!(
        parse_mutated(KERNEL_DAD_NS, true, |b| b[38..54]
            .copy_from_slice(&IP6_B.octets())),
        DadNotToSolicitedNode
    );
    // Solicited NA to a multicast destination.
    assert_eq!(
        parse_mutated(KERNEL_DAD_NA, true, |b| b[58] = 0x60),
        SolicitedAdvertToMulticast
    );
    assert_eq!(parse_mutated(KERNEL_NA, true, |b| b[55] = 3), BadIcmpCode);
    // IPv6 framing.
    assert_eq!(
        parse_mutated(NDISC6_NS, false, |b| b[14] = 0x40),
        BadIpVersion
    );
    assert_eq!(parse_mutated(NDISC6_NS, false, |b| b[19] = 0x21), Truncated);
    assert_eq!(parse_mutated(NDISC6_NS, false, |b| b[20] = 17), NotNdp);
    assert_eq!(
        parse_mutated(NDISC6_NS, false, |b| b.truncate(50)),
        Truncated
    );
    // ARP framing.
    assert_eq!(
        parse_mutated(ARPING_REQUEST, false, |b| b.truncate(41)),
        Truncated
    );
    assert_eq!(
        parse_mutated(ARPING_REQUEST, false, |b| b[21] = 9),
        UnknownOperation
    );
    assert_eq!(
        parse_mutated(ARPING_REQUEST, false, |b| b[6] = 3),
        MulticastSenderMac
    );
    assert_eq!(
        parse_mutated(ARPING_REQUEST, false, |b| b[13] = 0x00),
        NotArpOrIpv6
    );
}

#[test]
fn an_invalid_ns_is_dropped_by_the_responder() {
    let mut b = hex(NDISC6_NS);
    b[21] = 64;
    assert_eq!(
        ndp::respond(&b, MAC_B, IP6_B, |_| true),
        Outcome::Drop(DropReason::HopLimitNot255)
    );
}

#[test]
fn solicited_node_and_multicast_mac_examples() {
    // RFC 4291 §2.7.1 example form; RFC 2464 §7 mapping.
    let ip: Ipv6Addr = "2001:db8::4:5:6:7".parse().expect("literal");
    assert_eq!(
        ndp::solicited_node(ip),
        "ff02::1:ff06:7".parse::<Ipv6Addr>().expect("literal")
    );
    assert_eq!(
        ndp::multicast_mac(ndp::solicited_node(ip)),
        [0x33, 0x33, 0xff, 0x06, 0x00, 0x07]
    );
}
