//! The Adj-RIB-Out differ: minimal UPDATEs, NLRI packed per attribute set, batched
//! withdrawals, everything within 4096 bytes. A model peer parses the emitted bytes and applies
//! them, so every check is on what a router would actually receive.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ferrolb_speaker_core::bgp::{
    AdjRibOut, Attributes, Encoding, Family, GRACEFUL_SHUTDOWN, LargeCommunity, Message, MpNextHop,
    Origin, PathAttribute, Prefix, RejectReason, Update,
};
use proptest::prelude::*;

/// A router's Adj-RIB-In for us, built only from the bytes we send.
#[derive(Debug, Default)]
struct Peer {
    rib: BTreeMap<Prefix, Attributes>,
    messages: usize,
    largest: usize,
}

impl Peer {
    fn apply(&mut self, updates: &[Update], enc: Encoding) {
        for u in updates {
            let bytes = Message::Update(u.clone())
                .emit(enc)
                .expect("differ output emits");
            assert!(bytes.len() <= 4096, "UPDATE of {} bytes", bytes.len());
            self.largest = self.largest.max(bytes.len());
            self.messages += 1;
            let Ok(Message::Update(u)) = Message::parse(&bytes, enc) else {
                panic!("differ output does not parse");
            };
            self.apply_one(&u);
        }
    }

    fn apply_one(&mut self, u: &Update) {
        for p in &u.withdrawn {
            self.rib.remove(p);
        }
        let mut attrs = Attributes {
            origin: Origin::Igp,
            as_path: vec![],
            next_hop: MpNextHop::V4(Ipv4Addr::UNSPECIFIED),
            med: None,
            local_pref: None,
            communities: vec![],
            large_communities: vec![],
        };
        let mut as4 = None;
        let mut v6 = None;
        for a in &u.attributes {
            match a {
                PathAttribute::Origin(o) => attrs.origin = *o,
                PathAttribute::AsPath(p) => {
                    attrs.as_path = p.segments.iter().flat_map(|s| s.asns.clone()).collect()
                }
                PathAttribute::As4Path(p) => {
                    as4 = Some(p.segments.iter().flat_map(|s| s.asns.clone()).collect())
                }
                PathAttribute::NextHop(n) => attrs.next_hop = MpNextHop::V4(*n),
                PathAttribute::MultiExitDisc(m) => attrs.med = Some(*m),
                PathAttribute::LocalPref(l) => attrs.local_pref = Some(*l),
                PathAttribute::Communities(c) => attrs.communities = c.clone(),
                PathAttribute::LargeCommunities(c) => attrs.large_communities = c.clone(),
                PathAttribute::MpReach(m) => v6 = Some(m.clone()),
                PathAttribute::MpUnreach(m) => {
                    for p in &m.withdrawn {
                        self.rib.remove(p);
                    }
                }
                other => panic!("unexpected attribute {other:?}"),
            }
        }
        // RFC 6793 §4.2.3: a 2-octet peer's view merged with AS4_PATH.
        if let Some(real) = as4 {
            attrs.as_path = real;
        }
        for p in &u.nlri {
            self.rib.insert(*p, attrs.clone());
        }
        if let Some(m) = v6 {
            let mut a6 = attrs.clone();
            a6.next_hop = m.next_hop;
            for p in &m.nlri {
                self.rib.insert(*p, a6.clone());
            }
        }
    }
}

fn attrs4(community: u32) -> Attributes {
    Attributes {
        origin: Origin::Igp,
        as_path: vec![64512],
        next_hop: MpNextHop::V4(Ipv4Addr::new(198, 51, 100, 1)),
        med: None,
        local_pref: None,
        communities: vec![community],
        large_communities: vec![],
    }
}

fn attrs6() -> Attributes {
    Attributes {
        next_hop: MpNextHop::V6 {
            global: "2001:db8::1".parse().expect("literal"),
            link_local: Some("fe80::1".parse().expect("literal")),
        },
        ..attrs4(1)
    }
}

fn host4(i: u32) -> Prefix {
    Prefix::host(IpAddr::V4(Ipv4Addr::from(0xcb00_0000 + i)))
}

fn host6(i: u32) -> Prefix {
    Prefix::host(IpAddr::V6(Ipv6Addr::from(
        0x2001_0db8_0100_0000_0000_0000_0000_0000u128 + u128::from(i),
    )))
}

const BOTH: [Family; 2] = Family::ALL;
const ENC: Encoding = Encoding::FOUR_OCTET;

#[test]
fn one_update_carries_many_prefixes_with_the_same_attributes() {
    let mut rib = AdjRibOut::new();
    let desired: BTreeMap<_, _> = (0..100).map(|i| (host4(i), attrs4(1))).collect();
    let d = rib.diff(&desired, &BOTH, ENC);
    assert!(d.rejected.is_empty());
    assert_eq!(d.updates.len(), 1, "100 /32s fit one UPDATE");
    assert_eq!(d.updates[0].nlri.len(), 100);
    let mut peer = Peer::default();
    peer.apply(&d.updates, ENC);
    assert_eq!(peer.rib, desired);
    // Nothing changed: nothing to send.
    assert!(rib.diff(&desired, &BOTH, ENC).updates.is_empty());
}

#[test]
fn thousands_of_prefixes_split_at_4096_bytes_with_full_packing() {
    let mut rib = AdjRibOut::new();
    let mut desired: BTreeMap<_, _> = (0..2000).map(|i| (host4(i), attrs4(1))).collect();
    desired.extend((0..1000).map(|i| (host6(i), attrs6())));
    let d = rib.diff(&desired, &BOTH, ENC);
    let mut peer = Peer::default();
    peer.apply(&d.updates, ENC);
    assert_eq!(peer.rib, desired);
    // IPv4: 19 header + 4 lengths + 27 attributes (ORIGIN 4, AS_PATH 9, NEXT_HOP 7,
    // COMMUNITIES 7) leave room for (4096-50)/5 = 809 /32s per UPDATE.
    let v4: Vec<usize> = d
        .updates
        .iter()
        .map(|u| u.nlri.len())
        .filter(|n| *n > 0)
        .collect();
    assert_eq!(v4, vec![809, 809, 382]);
    // IPv6: MP_REACH with a 32-byte next hop; /128s take 17 bytes each.
    let v6: Vec<usize> = d
        .updates
        .iter()
        .filter_map(|u| match u.attributes.first() {
            Some(PathAttribute::MpReach(m)) => Some(m.nlri.len()),
            _ => None,
        })
        .collect();
    assert_eq!(v6.iter().sum::<usize>(), 1000);
    assert_eq!(v6.len(), 1000usize.div_ceil(v6[0]));
    assert!(
        peer.largest > 4000,
        "messages are filled, largest {}",
        peer.largest
    );

    // Withdraw everything: IPv4 in the body (4073 bytes hold 814 /32s), IPv6 in MP_UNREACH.
    let d = rib.diff(&BTreeMap::new(), &BOTH, ENC);
    peer.apply(&d.updates, ENC);
    assert!(peer.rib.is_empty());
    let w4: Vec<usize> = d
        .updates
        .iter()
        .map(|u| u.withdrawn.len())
        .filter(|n| *n > 0)
        .collect();
    assert_eq!(w4, vec![814, 814, 372]);
    assert!(rib.is_empty());
}

#[test]
fn only_changes_are_sent() {
    let mut rib = AdjRibOut::new();
    let mut peer = Peer::default();
    let mut desired: BTreeMap<_, _> = (0..10).map(|i| (host4(i), attrs4(1))).collect();
    peer.apply(&rib.diff(&desired, &BOTH, ENC).updates, ENC);

    // One prefix changes its community, one goes, one arrives.
    desired.insert(host4(3), attrs4(2));
    desired.remove(&host4(7));
    desired.insert(host4(10), attrs4(1));
    let d = rib.diff(&desired, &BOTH, ENC);
    assert_eq!(d.updates.len(), 3, "{:#?}", d.updates);
    assert_eq!(d.updates[0].withdrawn, vec![host4(7)]);
    let announced: Vec<Vec<Prefix>> = d.updates[1..].iter().map(|u| u.nlri.clone()).collect();
    assert!(announced.contains(&vec![host4(3)]));
    assert!(announced.contains(&vec![host4(10)]));
    peer.apply(&d.updates, ENC);
    assert_eq!(peer.rib, desired);
}

#[test]
fn families_not_negotiated_are_left_alone() {
    let mut rib = AdjRibOut::new();
    let desired: BTreeMap<_, _> = [(host4(1), attrs4(1)), (host6(1), attrs6())].into();
    let d = rib.diff(&desired, &[Family::Ipv4Unicast], ENC);
    assert_eq!(d.updates.len(), 1);
    assert_eq!(rib.count(Family::Ipv6Unicast), 0);
    assert_eq!(rib.count(Family::Ipv4Unicast), 1);
}

#[test]
fn a_next_hop_of_the_other_family_is_rejected() {
    let mut rib = AdjRibOut::new();
    let desired: BTreeMap<_, _> = [(host6(1), attrs4(1)), (host4(1), attrs4(1))].into();
    let d = rib.diff(&desired, &BOTH, ENC);
    assert_eq!(d.rejected, vec![(host6(1), RejectReason::NextHopFamily)]);
    assert_eq!(rib.len(), 1);
}

#[test]
fn attributes_too_large_for_one_prefix_are_rejected() {
    let mut rib = AdjRibOut::new();
    let mut huge = attrs4(1);
    huge.communities = (0..1100).collect(); // 4400 bytes of communities
    let desired: BTreeMap<_, _> = [(host4(1), huge)].into();
    let d = rib.diff(&desired, &BOTH, ENC);
    assert!(d.updates.is_empty());
    assert_eq!(d.rejected, vec![(host4(1), RejectReason::Unencodable)]);
    assert!(rib.is_empty(), "a rejected route is not recorded as sent");
}

#[test]
fn two_octet_sessions_get_as_trans_and_as4_path() {
    let mut rib = AdjRibOut::new();
    let mut a = attrs4(1);
    a.as_path = vec![4_200_000_000];
    let desired: BTreeMap<_, _> = [(host4(1), a)].into();
    let d = rib.diff(&desired, &BOTH, Encoding::TWO_OCTET);
    let u = &d.updates[0];
    assert_eq!(
        u.attribute(2),
        Some(&PathAttribute::AsPath(
            ferrolb_speaker_core::bgp::AsPath::sequence(vec![23456])
        ))
    );
    assert!(u.attribute(17).is_some());
    let mut peer = Peer::default();
    peer.apply(&d.updates, Encoding::TWO_OCTET);
    assert_eq!(peer.rib, desired);
}

#[test]
fn refresh_resends_one_family() {
    let mut rib = AdjRibOut::new();
    let desired: BTreeMap<_, _> = [
        (host4(1), attrs4(1)),
        (host4(2), attrs4(GRACEFUL_SHUTDOWN)),
        (host6(1), attrs6()),
    ]
    .into();
    rib.diff(&desired, &BOTH, ENC);
    let again = rib.refresh(Family::Ipv4Unicast, ENC);
    let mut peer = Peer::default();
    peer.apply(&again, ENC);
    assert_eq!(peer.rib.len(), 2);
    assert_eq!(rib.len(), 3, "refresh changes nothing");
}

fn arb_attrs(v6: bool) -> impl Strategy<Value = Attributes> {
    (
        prop::sample::select(vec![vec![], vec![64512u32], vec![4_200_000_000]]),
        proptest::option::of(0..3u32),
        proptest::option::of(any::<u32>()),
        prop::collection::vec(0..4u32, 0..3),
        prop::collection::vec((0..3u32, 0..2u32), 0..2),
    )
        .prop_map(move |(as_path, med, lp, comms, large)| Attributes {
            origin: Origin::Igp,
            as_path,
            next_hop: if v6 {
                MpNextHop::V6 {
                    global: "2001:db8::1".parse().expect("literal"),
                    link_local: None,
                }
            } else {
                MpNextHop::V4(Ipv4Addr::new(198, 51, 100, 1))
            },
            med,
            local_pref: lp,
            communities: comms,
            large_communities: large
                .into_iter()
                .map(|(a, b)| LargeCommunity {
                    global: 64512,
                    local1: a,
                    local2: b,
                })
                .collect(),
        })
}

fn arb_table() -> impl Strategy<Value = BTreeMap<Prefix, Attributes>> {
    let v4 = prop::collection::btree_map((0..1500u32).prop_map(host4), arb_attrs(false), 0..400);
    let v6 = prop::collection::btree_map((0..600u32).prop_map(host6), arb_attrs(true), 0..200);
    (v4, v6).prop_map(|(mut a, b)| {
        a.extend(b);
        a
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// After every diff the peer holds exactly the desired table, every message fits 4096
    /// bytes, and only changed prefixes were announced or withdrawn.
    #[test]
    fn peer_converges_with_minimal_updates(
        tables in prop::collection::vec(arb_table(), 1..5),
        two_octet in any::<bool>(),
    ) {
        let enc = if two_octet { Encoding::TWO_OCTET } else { Encoding::FOUR_OCTET };
        let mut rib = AdjRibOut::new();
        let mut peer = Peer::default();
        let mut before: BTreeMap<Prefix, Attributes> = BTreeMap::new();
        for t in tables {
            let d = rib.diff(&t, &BOTH, enc);
            prop_assert!(d.rejected.is_empty());
            let announced: usize = d.updates.iter().map(|u| u.nlri.len() + match u.attributes.first() {
                Some(PathAttribute::MpReach(m)) => m.nlri.len(),
                _ => 0,
            }).sum();
            let withdrawn: usize = d.updates.iter().map(|u| u.withdrawn.len() + match u.attributes.first() {
                Some(PathAttribute::MpUnreach(m)) => m.withdrawn.len(),
                _ => 0,
            }).sum();
            let changed = t.iter().filter(|(p, a)| before.get(*p) != Some(*a)).count();
            let removed = before.keys().filter(|p| !t.contains_key(*p)).count();
            prop_assert_eq!(announced, changed);
            prop_assert_eq!(withdrawn, removed);
            peer.apply(&d.updates, enc);
            prop_assert_eq!(&peer.rib, &t);
            before = t;
        }
    }
}
