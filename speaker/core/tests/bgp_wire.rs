//! Byte fixtures for the BGP codec: each is written field by field from the RFC layouts
//! (RFC 4271 §4, RFC 4760 §3-4, RFC 4724 §3, RFC 6793, RFC 8092, RFC 8203), parsed into the
//! expected representation and emitted back to the same bytes. Malformed fixtures check the
//! NOTIFICATION code/subcode (and data) the RFCs prescribe and the RFC 7606 handling.
//!
//! One fixture is not ours: the OPEN of a Cisco router from a public capture ("Example 71,
//! BGP Open Message" on ccexpert.us), which puts each capability in its own optional
//! parameter and includes Cisco's pre-standard route refresh capability (code 128).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ferrolb_speaker_core::bgp::{
    AfiSafi, AsPath, AsSegment, Capability, Encoding, Family, GracefulRestart, Handling,
    LargeCommunity, Message, MpNextHop, MpReach, MpUnreach, Notification, NotificationCode, Open,
    Origin, PathAttribute, Prefix, RouteRefresh, SegmentType, Update, WireError, frame_len,
};

/// Hex with spaces, newlines and `#` comments to the end of a line allowed.
fn hex(s: &str) -> Vec<u8> {
    let digits: String = s
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .flat_map(|l| l.chars())
        .filter(|c| c.is_ascii_hexdigit())
        .collect();
    assert_eq!(digits.len() % 2, 0, "odd number of hex digits");
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex digit"))
        .collect()
}

const MARKER: &str = "ffffffffffffffffffffffffffffffff";

fn p(s: &str) -> Prefix {
    let (a, l) = s.split_once('/').expect("prefix literal");
    Prefix::new(a.parse().expect("address"), l.parse().expect("length")).expect("valid prefix")
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("IPv6 literal")
}

/// Parses, compares with `want`, emits, compares with the bytes.
fn round_trip(bytes: &[u8], enc: Encoding, want: &Message) {
    assert_eq!(frame_len(bytes), Ok(Some(bytes.len())));
    let got = Message::parse(bytes, enc).expect("fixture parses");
    assert_eq!(&got, want);
    assert_eq!(got.emit(enc).expect("emits"), bytes);
}

#[test]
fn keepalive() {
    let bytes = hex(&format!("{MARKER} 0013 04"));
    round_trip(&bytes, Encoding::FOUR_OCTET, &Message::Keepalive);
}

/// Our OPEN: AS 64512, hold 90, id 192.0.2.1, MP IPv4+IPv6, route refresh, graceful restart
/// (R set, 120 s, both families with F), 4-octet AS.
const OUR_OPEN: &str = "
    ffffffffffffffffffffffffffffffff 003f 01
    04 fc00 005a c0000201   # version, AS 64512, hold 90, id 192.0.2.1
    22 02 20                # opt params 34 bytes; one capabilities parameter of 32
    01 04 0001 00 01        # MP IPv4 unicast
    01 04 0002 00 01        # MP IPv6 unicast
    02 00                   # route refresh
    40 0a 8078 0001 01 80 0002 01 80   # GR: R, 120 s; v4 F; v6 F
    41 04 0000fc00          # 4-octet AS 64512
";

fn our_open() -> Open {
    Open {
        my_as: 64512,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(192, 0, 2, 1),
        capabilities: vec![
            Capability::Multiprotocol(Family::Ipv4Unicast.afi_safi()),
            Capability::Multiprotocol(Family::Ipv6Unicast.afi_safi()),
            Capability::RouteRefresh,
            Capability::GracefulRestart(GracefulRestart {
                restarting: true,
                notification: false,
                restart_time: 120,
                families: vec![
                    (Family::Ipv4Unicast.afi_safi(), true),
                    (Family::Ipv6Unicast.afi_safi(), true),
                ],
            }),
            Capability::FourOctetAs(64512),
        ],
    }
}

#[test]
fn open_with_every_capability() {
    let want = our_open();
    round_trip(
        &hex(OUR_OPEN),
        Encoding::FOUR_OCTET,
        &Message::Open(want.clone()),
    );
    assert_eq!(want.asn(), 64512);
    assert!(want.route_refresh());
    assert_eq!(want.graceful_restart().map(|g| g.restart_time), Some(120));
    assert_eq!(
        want.afi_safis(),
        vec![
            Family::Ipv4Unicast.afi_safi(),
            Family::Ipv6Unicast.afi_safi()
        ]
    );
}

#[test]
fn open_with_four_octet_as_uses_as_trans() {
    // AS 4200000000 = 0xfa56ea00 does not fit: the 2-octet field carries AS_TRANS 23456.
    let bytes = hex(&format!(
        "{MARKER} 0025 01 04 5ba0 0009 c0000202 08 02 06 41 04 fa56ea00"
    ));
    let want = Open::new(
        4_200_000_000,
        9,
        Ipv4Addr::new(192, 0, 2, 2),
        vec![Capability::FourOctetAs(4_200_000_000)],
    );
    assert_eq!(want.my_as, 23456);
    round_trip(&bytes, Encoding::FOUR_OCTET, &Message::Open(want.clone()));
    assert_eq!(want.asn(), 4_200_000_000);
    // No MP capability means IPv4 unicast only (RFC 4760 §8).
    assert_eq!(want.afi_safis(), vec![Family::Ipv4Unicast.afi_safi()]);
}

#[test]
fn cisco_open_with_one_parameter_per_capability() {
    // 45 bytes: AS 1, hold 180, id 192.168.5.1, three parameters of one capability each.
    let bytes = hex(&format!(
        "{MARKER} 002d 01 04 0001 00b4 c0a80501 10 02 06 01 04 0001 00 01 02 02 80 00 02 02 02 00"
    ));
    let Ok(Message::Open(open)) = Message::parse(&bytes, Encoding::TWO_OCTET) else {
        panic!("Cisco OPEN does not parse");
    };
    assert_eq!(open.asn(), 1);
    assert_eq!(open.hold_time, 180);
    assert_eq!(open.bgp_id, Ipv4Addr::new(192, 168, 5, 1));
    assert_eq!(
        open.capabilities,
        vec![
            Capability::Multiprotocol(AfiSafi { afi: 1, safi: 1 }),
            Capability::Unknown {
                code: 128,
                value: vec![]
            },
            Capability::RouteRefresh,
        ]
    );
    // Re-emitted with all capabilities in one parameter: 2 bytes shorter, same meaning.
    let ours = Message::Open(open.clone())
        .emit(Encoding::TWO_OCTET)
        .expect("emits");
    assert_eq!(ours.len(), bytes.len() - 4);
    assert_eq!(
        Message::parse(&ours, Encoding::TWO_OCTET),
        Ok(Message::Open(open))
    );
}

#[test]
fn open_with_extended_optional_parameters_rfc9072() {
    // Length 255 + type 255 announce 2-octet lengths: 0x000b bytes of parameters follow.
    let bytes = hex(&format!(
        "{MARKER} 002b 01 04 fc00 005a c0000201 ff ff 000b 02 0008 41 04 0000fc00 02 00"
    ));
    let Ok(Message::Open(open)) = Message::parse(&bytes, Encoding::FOUR_OCTET) else {
        panic!("RFC 9072 OPEN does not parse");
    };
    assert_eq!(
        open.capabilities,
        vec![Capability::FourOctetAs(64512), Capability::RouteRefresh]
    );
}

/// eBGP UPDATE with two IPv4 /32s sharing attributes, 4-octet AS_PATH, one community.
const UPDATE_V4: &str = "
    ffffffffffffffffffffffffffffffff 003c 02
    0000                    # no withdrawn routes
    001b                    # 27 bytes of attributes
    40 01 01 00             # ORIGIN IGP
    40 02 06 02 01 0000fc00 # AS_PATH: SEQUENCE [64512]
    40 03 04 c6336401       # NEXT_HOP 198.51.100.1
    c0 08 04 fc000064       # COMMUNITIES 64512:100
    20 cb00710a 20 cb00710b # 203.0.113.10/32, 203.0.113.11/32
";

fn update_v4() -> Update {
    Update {
        withdrawn: vec![],
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath::sequence(vec![64512])),
            PathAttribute::NextHop(Ipv4Addr::new(198, 51, 100, 1)),
            PathAttribute::Communities(vec![(64512 << 16) | 100]),
        ],
        nlri: vec![p("203.0.113.10/32"), p("203.0.113.11/32")],
    }
}

#[test]
fn update_ipv4_many_nlri() {
    round_trip(
        &hex(UPDATE_V4),
        Encoding::FOUR_OCTET,
        &Message::Update(update_v4()),
    );
}

#[test]
fn update_ipv4_two_octet_session_with_as4_path() {
    // RFC 6793 §4.2.2: AS_PATH with AS_TRANS, AS4_PATH with the real 4-octet ASN.
    let bytes = hex(&format!(
        "{MARKER} 0037 02 0000 001b
         40 01 01 00
         40 02 04 02 01 5ba0
         40 03 04 c6336401
         c0 11 06 02 01 fa56ea00
         20 cb00710a"
    ));
    let want = Update {
        withdrawn: vec![],
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath::sequence(vec![23456])),
            PathAttribute::NextHop(Ipv4Addr::new(198, 51, 100, 1)),
            PathAttribute::As4Path(AsPath::sequence(vec![4_200_000_000])),
        ],
        nlri: vec![p("203.0.113.10/32")],
    };
    round_trip(&bytes, Encoding::TWO_OCTET, &Message::Update(want.clone()));
    // The same bytes read as a 4-octet session are a malformed AS_PATH (2 bytes per ASN
    // cannot be read as 4): treat-as-withdraw, not a reset.
    let e = Message::parse(&bytes, Encoding::FOUR_OCTET).expect_err("width mismatch");
    assert_eq!(e.notification().code, NotificationCode::MALFORMED_AS_PATH);
    assert_eq!(e.handling(), Handling::TreatAsWithdraw);
    // And the codec refuses to write a 4-octet ASN into a 2-octet AS_PATH.
    let mut bad = want;
    bad.attributes[1] = PathAttribute::AsPath(AsPath::sequence(vec![4_200_000_000]));
    assert!(matches!(
        Message::Update(bad).emit(Encoding::TWO_OCTET),
        Err(WireError::Unencodable(_))
    ));
}

#[test]
fn update_ipv6_mp_reach_with_link_local_ibgp() {
    let bytes = hex(&format!(
        "{MARKER} 006d 02 0000 0056
         80 0e 36 0002 01 20
            20010db8000000000000000000000001     # global next hop 2001:db8::1
            fe80000000000000000000fffe00000a     # link-local fe80::ff:fe00:a
            00
            80 20010db8010000000000000000000001  # 2001:db8:100::1/128
         40 01 01 00
         40 02 00                                # empty AS_PATH (iBGP)
         40 05 04 00000064                       # LOCAL_PREF 100
         c0 20 0c 0000fc00 00000001 00000002     # LARGE_COMMUNITY 64512:1:2"
    ));
    let want = Update {
        withdrawn: vec![],
        attributes: vec![
            PathAttribute::MpReach(MpReach {
                family: Family::Ipv6Unicast,
                next_hop: MpNextHop::V6 {
                    global: v6("2001:db8::1"),
                    link_local: Some(v6("fe80::ff:fe00:a")),
                },
                nlri: vec![p("2001:db8:100::1/128")],
            }),
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath::default()),
            PathAttribute::LocalPref(100),
            PathAttribute::LargeCommunities(vec![LargeCommunity {
                global: 64512,
                local1: 1,
                local2: 2,
            }]),
        ],
        nlri: vec![],
    };
    round_trip(&bytes, Encoding::FOUR_OCTET, &Message::Update(want));
}

#[test]
fn withdrawals_and_end_of_rib() {
    let v4 = hex(&format!("{MARKER} 001c 02 0005 20 cb00710a 0000"));
    round_trip(
        &v4,
        Encoding::FOUR_OCTET,
        &Message::Update(Update {
            withdrawn: vec![p("203.0.113.10/32")],
            ..Update::default()
        }),
    );
    let v6 = hex(&format!(
        "{MARKER} 002e 02 0000 0017 80 0f 14 0002 01 80 20010db8010000000000000000000001"
    ));
    round_trip(
        &v6,
        Encoding::FOUR_OCTET,
        &Message::Update(Update {
            attributes: vec![PathAttribute::MpUnreach(MpUnreach {
                family: Family::Ipv6Unicast,
                withdrawn: vec![p("2001:db8:100::1/128")],
            })],
            ..Update::default()
        }),
    );
    // End-of-RIB (RFC 4724 §2): an empty UPDATE for IPv4, an empty MP_UNREACH for IPv6.
    let eor4 = hex(&format!("{MARKER} 0017 02 0000 0000"));
    round_trip(
        &eor4,
        Encoding::FOUR_OCTET,
        &Message::Update(Update::end_of_rib(Family::Ipv4Unicast)),
    );
    let eor6 = hex(&format!("{MARKER} 001d 02 0000 0006 80 0f 03 0002 01"));
    round_trip(
        &eor6,
        Encoding::FOUR_OCTET,
        &Message::Update(Update::end_of_rib(Family::Ipv6Unicast)),
    );
}

#[test]
fn unknown_optional_attributes_are_kept_verbatim() {
    // Type 99 optional transitive with the partial bit, and an extended-length encoding of a
    // short value, both as received.
    let bytes = hex(&format!(
        "{MARKER} 002a 02 0000 0013
         e0 63 02 abcd
         d0 64 0003 010203
         40 01 01 02
         40 02 00"
    ));
    let want = Update {
        withdrawn: vec![],
        attributes: vec![
            PathAttribute::Unknown {
                flags: 0xe0,
                type_code: 99,
                value: vec![0xab, 0xcd],
            },
            PathAttribute::Unknown {
                flags: 0xd0,
                type_code: 100,
                value: vec![1, 2, 3],
            },
            PathAttribute::Origin(Origin::Incomplete),
            PathAttribute::AsPath(AsPath::default()),
        ],
        nlri: vec![],
    };
    round_trip(&bytes, Encoding::FOUR_OCTET, &Message::Update(want));
}

#[test]
fn notification_with_shutdown_communication() {
    let text = "ferrolb: node draining";
    let bytes = hex(&format!(
        "{MARKER} 002c 03 06 02 16 {}",
        text.bytes().map(|b| format!("{b:02x}")).collect::<String>()
    ));
    let n = Notification::cease(2, text);
    round_trip(
        &bytes,
        Encoding::FOUR_OCTET,
        &Message::Notification(n.clone()),
    );
    assert_eq!(n.shutdown_message().as_deref(), Some(text));
    assert_eq!(
        n.to_string(),
        "NOTIFICATION 6/2 administrative shutdown: \"ferrolb: node draining\""
    );
    let hold = hex(&format!("{MARKER} 0015 03 04 00"));
    round_trip(
        &hold,
        Encoding::FOUR_OCTET,
        &Message::Notification(Notification::new(
            NotificationCode::HOLD_TIMER_EXPIRED,
            vec![],
        )),
    );
}

#[test]
fn route_refresh() {
    let bytes = hex(&format!("{MARKER} 0017 05 0002 00 01"));
    round_trip(
        &bytes,
        Encoding::FOUR_OCTET,
        &Message::RouteRefresh(RouteRefresh {
            afi_safi: Family::Ipv6Unicast.afi_safi(),
            subtype: 0,
        }),
    );
}

/// A malformed message's NOTIFICATION code/subcode, data and RFC 7606 handling.
fn rejects(bytes: &[u8], enc: Encoding, code: NotificationCode, handling: Handling) -> Vec<u8> {
    let e = Message::parse(bytes, enc).expect_err("malformed fixture must not parse");
    let n = e.notification();
    assert_eq!(n.code, code, "{e}");
    assert_eq!(e.handling(), handling, "{e}");
    n.data
}

#[test]
fn header_errors_rfc4271_6_1() {
    let mut bad = hex(&format!("{MARKER} 0013 04"));
    bad[0] = 0xfe;
    rejects(
        &bad,
        Encoding::FOUR_OCTET,
        NotificationCode::CONNECTION_NOT_SYNCHRONIZED,
        Handling::SessionReset,
    );
    assert_eq!(frame_len(&bad), Err(WireError::ConnectionNotSynchronized));
    // Length below 19, above 4096, and wrong for the type: data is the length field.
    for (len, body) in [("0012", ""), ("1001", ""), ("0014", "00")] {
        let m = hex(&format!("{MARKER} {len} 04 {body}"));
        let data = rejects(
            &m,
            Encoding::FOUR_OCTET,
            NotificationCode::BAD_MESSAGE_LENGTH,
            Handling::SessionReset,
        );
        assert_eq!(data, hex(len));
    }
    // An OPEN shorter than 29 bytes.
    let m = hex(&format!("{MARKER} 001c 01 04 fc00 005a c00002"));
    rejects(
        &m,
        Encoding::FOUR_OCTET,
        NotificationCode::BAD_MESSAGE_LENGTH,
        Handling::SessionReset,
    );
    let m = hex(&format!("{MARKER} 0013 09"));
    let data = rejects(
        &m,
        Encoding::FOUR_OCTET,
        NotificationCode::BAD_MESSAGE_TYPE,
        Handling::SessionReset,
    );
    assert_eq!(data, vec![9]);
    // A ROUTE-REFRESH of the wrong length has its own code (RFC 7313 §5); data is the message.
    let m = hex(&format!("{MARKER} 0018 05 0001 00 01 00"));
    let data = rejects(
        &m,
        Encoding::FOUR_OCTET,
        NotificationCode::ROUTE_REFRESH_INVALID_LENGTH,
        Handling::SessionReset,
    );
    assert_eq!(data, m);
}

#[test]
fn open_errors_rfc4271_6_2() {
    let m = hex(&format!("{MARKER} 001d 01 03 fc00 005a c0000201 00"));
    let data = rejects(
        &m,
        Encoding::FOUR_OCTET,
        NotificationCode::UNSUPPORTED_VERSION,
        Handling::SessionReset,
    );
    assert_eq!(data, vec![0, 4], "data: the largest version we support");
    // Parameter type 1 (authentication, deprecated).
    let m = hex(&format!(
        "{MARKER} 0021 01 04 fc00 005a c0000201 04 01 02 0000"
    ));
    rejects(
        &m,
        Encoding::FOUR_OCTET,
        NotificationCode::UNSUPPORTED_OPTIONAL_PARAMETER,
        Handling::SessionReset,
    );
    // Optional parameters length disagreeing with the message.
    let m = hex(&format!(
        "{MARKER} 0021 01 04 fc00 005a c0000201 05 02 02 0200"
    ));
    rejects(
        &m,
        Encoding::FOUR_OCTET,
        NotificationCode::OPEN_UNSPECIFIC,
        Handling::SessionReset,
    );
    // A 4-octet AS capability of 3 bytes.
    let m = hex(&format!(
        "{MARKER} 0022 01 04 fc00 005a c0000201 05 02 03 41 01 00"
    ));
    rejects(
        &m,
        Encoding::FOUR_OCTET,
        NotificationCode::OPEN_UNSPECIFIC,
        Handling::SessionReset,
    );
}

fn update(attrs: &str, nlri: &str) -> Vec<u8> {
    let a = hex(attrs);
    let n = hex(nlri);
    let mut m = hex(MARKER);
    m.extend_from_slice(
        &u16::try_from(23 + a.len() + n.len())
            .expect("short")
            .to_be_bytes(),
    );
    m.push(2);
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&u16::try_from(a.len()).expect("short").to_be_bytes());
    m.extend_from_slice(&a);
    m.extend_from_slice(&n);
    m
}

const ORIGIN: &str = "40 01 01 00";
const AS_PATH: &str = "40 02 06 02 01 0000fc00";
const NEXT_HOP: &str = "40 03 04 c6336401";
const NLRI: &str = "20 cb00710a";

#[test]
fn update_errors_rfc4271_6_3_with_rfc7606_handling() {
    let e4 = Encoding::FOUR_OCTET;
    // The base case parses.
    assert!(Message::parse(&update(&format!("{ORIGIN} {AS_PATH} {NEXT_HOP}"), NLRI), e4).is_ok());

    // Withdrawn Routes Length overrunning the message: NLRI cannot be located, reset.
    let m = hex(&format!("{MARKER} 0017 02 0005 0000"));
    rejects(
        &m,
        e4,
        NotificationCode::MALFORMED_ATTRIBUTE_LIST,
        Handling::SessionReset,
    );
    // A body prefix longer than 32 bits: reset.
    let m = update(&format!("{ORIGIN} {AS_PATH} {NEXT_HOP}"), "21 cb00710a00");
    rejects(
        &m,
        e4,
        NotificationCode::INVALID_NETWORK_FIELD,
        Handling::SessionReset,
    );
    // A prefix overrunning the NLRI field: reset.
    let m = update(&format!("{ORIGIN} {AS_PATH} {NEXT_HOP}"), "20 cb0071");
    rejects(
        &m,
        e4,
        NotificationCode::INVALID_NETWORK_FIELD,
        Handling::SessionReset,
    );

    // ORIGIN 5: treat-as-withdraw, data is the attribute.
    let m = update(&format!("40 01 01 05 {AS_PATH} {NEXT_HOP}"), NLRI);
    let data = rejects(
        &m,
        e4,
        NotificationCode::INVALID_ORIGIN,
        Handling::TreatAsWithdraw,
    );
    assert_eq!(data, hex("40 01 01 05"));
    // NEXT_HOP missing with IPv4 NLRI: data is the missing type code.
    let m = update(&format!("{ORIGIN} {AS_PATH}"), NLRI);
    let data = rejects(
        &m,
        e4,
        NotificationCode::MISSING_WELL_KNOWN_ATTRIBUTE,
        Handling::TreatAsWithdraw,
    );
    assert_eq!(data, vec![3]);
    // ORIGIN flagged optional.
    let m = update(&format!("c0 01 01 00 {AS_PATH} {NEXT_HOP}"), NLRI);
    rejects(
        &m,
        e4,
        NotificationCode::ATTRIBUTE_FLAGS_ERROR,
        Handling::TreatAsWithdraw,
    );
    // NEXT_HOP of 5 bytes.
    let m = update(&format!("{ORIGIN} {AS_PATH} 40 03 05 c633640101"), NLRI);
    rejects(
        &m,
        e4,
        NotificationCode::ATTRIBUTE_LENGTH_ERROR,
        Handling::TreatAsWithdraw,
    );
    // An AS_PATH segment with no ASNs (RFC 7606 §7.2).
    let m = update(&format!("{ORIGIN} 40 02 02 02 00 {NEXT_HOP}"), NLRI);
    rejects(
        &m,
        e4,
        NotificationCode::MALFORMED_AS_PATH,
        Handling::TreatAsWithdraw,
    );
    // An attribute whose length runs past the attributes field.
    let m = update(&format!("{ORIGIN} {AS_PATH} 40 03 09 c6336401"), "");
    rejects(
        &m,
        e4,
        NotificationCode::ATTRIBUTE_LENGTH_ERROR,
        Handling::TreatAsWithdraw,
    );
    // COMMUNITIES of 6 bytes.
    let m = update(
        &format!("{ORIGIN} {AS_PATH} {NEXT_HOP} c0 08 06 000000000000"),
        NLRI,
    );
    rejects(
        &m,
        e4,
        NotificationCode::ATTRIBUTE_LENGTH_ERROR,
        Handling::TreatAsWithdraw,
    );
    // ATOMIC_AGGREGATE with a value: attribute discard.
    let m = update(&format!("{ORIGIN} {AS_PATH} {NEXT_HOP} 40 06 01 00"), NLRI);
    rejects(
        &m,
        e4,
        NotificationCode::ATTRIBUTE_LENGTH_ERROR,
        Handling::AttributeDiscard,
    );
    // An unknown well-known (non-optional) attribute.
    let m = update(&format!("{ORIGIN} {AS_PATH} {NEXT_HOP} 40 63 00"), NLRI);
    let data = rejects(
        &m,
        e4,
        NotificationCode::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
        Handling::SessionReset,
    );
    assert_eq!(data, hex("40 63 00"));
    // A repeated COMMUNITIES: discard; a repeated MP_UNREACH: reset (RFC 7606 §3 g).
    let m = update(
        &format!("{ORIGIN} {AS_PATH} {NEXT_HOP} c0 08 00 c0 08 00"),
        NLRI,
    );
    rejects(
        &m,
        e4,
        NotificationCode::MALFORMED_ATTRIBUTE_LIST,
        Handling::AttributeDiscard,
    );
    let m = update("80 0f 03 0002 01 80 0f 03 0002 01", "");
    rejects(
        &m,
        e4,
        NotificationCode::MALFORMED_ATTRIBUTE_LIST,
        Handling::SessionReset,
    );
    // MP_REACH for AFI 25 (L2VPN): not ours, ignore that AFI/SAFI.
    let m = update(&format!("80 0e 05 0019 46 00 00 {ORIGIN} {AS_PATH}"), "");
    rejects(
        &m,
        e4,
        NotificationCode::OPTIONAL_ATTRIBUTE_ERROR,
        Handling::AfiSafiDisable,
    );
    // MP_REACH whose IPv6 prefix overruns: reset.
    let m = update(
        &format!(
            "80 0e 18 0002 01 10 20010db8000000000000000000000001 00 80 2001 {ORIGIN} {AS_PATH}"
        ),
        "",
    );
    rejects(
        &m,
        e4,
        NotificationCode::OPTIONAL_ATTRIBUTE_ERROR,
        Handling::SessionReset,
    );
    // MP_REACH with a 4-byte next hop for IPv6.
    let m = update(
        &format!("80 0e 0a 0002 01 04 c6336401 00 00 {ORIGIN} {AS_PATH}"),
        "",
    );
    rejects(
        &m,
        e4,
        NotificationCode::OPTIONAL_ATTRIBUTE_ERROR,
        Handling::TreatAsWithdraw,
    );
}

#[test]
fn prefixes_with_host_bits_are_masked() {
    // 203.0.113.0/24 sent as cb0071 is canonical; a /23 with the last bit of its third octet
    // set (cb0071 = ...0111 0001) is read as 203.0.112.0/23.
    let m = update(&format!("{ORIGIN} {AS_PATH} {NEXT_HOP}"), "17 cb0071");
    let Ok(Message::Update(u)) = Message::parse(&m, Encoding::FOUR_OCTET) else {
        panic!("parses");
    };
    assert_eq!(u.nlri, vec![p("203.0.112.0/23")]);
    assert_eq!(u.nlri[0].addr(), IpAddr::V4(Ipv4Addr::new(203, 0, 112, 0)));
}

#[test]
fn emit_refuses_what_cannot_be_sent() {
    // A 255-ASN segment is fine, 256 is not.
    let mut u = update_v4();
    u.attributes[1] = PathAttribute::AsPath(AsPath {
        segments: vec![AsSegment {
            kind: SegmentType::Sequence,
            asns: vec![64512; 256],
        }],
    });
    assert!(matches!(
        Message::Update(u).emit(Encoding::FOUR_OCTET),
        Err(WireError::Unencodable(_))
    ));
    // An IPv6 prefix in the IPv4 NLRI field.
    let mut u = update_v4();
    u.nlri.push(p("2001:db8::/32"));
    assert!(Message::Update(u).emit(Encoding::FOUR_OCTET).is_err());
    // More than 4096 bytes of NLRI.
    let mut u = update_v4();
    u.nlri = (0..900u32)
        .map(|i| Prefix::host(IpAddr::V4(Ipv4Addr::from(0xcb00_7100 + i))))
        .collect();
    assert!(matches!(
        Message::Update(u).emit(Encoding::FOUR_OCTET),
        Err(WireError::TooLong { length: 4550 })
    ));
}
