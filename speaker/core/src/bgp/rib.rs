//! The Adj-RIB-Out of one session: what was announced to the peer, and the minimal UPDATEs
//! that turn it into what should be announced.
//!
//! Owns the diff and the packing: prefixes that share a complete attribute set go into one
//! UPDATE (IPv4 in the body, IPv6 in MP_REACH_NLRI placed first, as RFC 7606 §5.1 advises),
//! withdrawals are batched (IPv4 in the body, IPv6 in MP_UNREACH_NLRI), and every UPDATE fits
//! 4096 bytes. RFC 6793 is applied here: on a 2-octet session an AS_PATH with a 4-octet ASN is
//! sent with AS_TRANS in its place plus an AS4_PATH. It must not know about sessions, timers
//! or configuration: callers give it complete [`Attributes`] per prefix and send every UPDATE
//! it returns, in order (the table counts them as sent as soon as they are returned).

use std::collections::BTreeMap;

use super::update::{
    AsPath, LargeCommunity, MpNextHop, MpReach, MpUnreach, Origin, PathAttribute, Prefix, Update,
};
use super::wire::{AS_TRANS, Encoding, Family, HEADER_LEN, MAX_MESSAGE_LEN};

/// The well-known GRACEFUL_SHUTDOWN community 65535:0 (RFC 8326).
pub const GRACEFUL_SHUTDOWN: u32 = 0xffff_0000;

/// Every attribute of one announced route.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attributes {
    /// ORIGIN; IGP for Service IPs.
    pub origin: Origin,
    /// One AS_SEQUENCE (our ASN for eBGP), empty for iBGP. At most 255 ASNs.
    pub as_path: Vec<u32>,
    /// NEXT_HOP for IPv4 prefixes, the MP_REACH next hop for IPv6 ones.
    pub next_hop: MpNextHop,
    /// MULTI_EXIT_DISC, if sent.
    pub med: Option<u32>,
    /// LOCAL_PREF: only to iBGP peers (RFC 4271 §5.1.5).
    pub local_pref: Option<u32>,
    /// Standard communities, sent in this order.
    pub communities: Vec<u32>,
    /// Large communities, sent in this order.
    pub large_communities: Vec<LargeCommunity>,
}

/// Why a desired route was not announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// An IPv4 prefix with an IPv6 next hop or the reverse (RFC 8950 is not supported).
    NextHopFamily,
    /// The attributes cannot be encoded, or do not leave room for one prefix in 4096 bytes.
    Unencodable,
}

impl RejectReason {
    /// Stable label for metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NextHopFamily => "next_hop_family",
            Self::Unencodable => "unencodable",
        }
    }
}

/// The result of a diff.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// UPDATEs to send, in order: withdrawals first, then announcements.
    pub updates: Vec<Update>,
    /// Desired routes that cannot be announced, with why. They are treated as not desired.
    pub rejected: Vec<(Prefix, RejectReason)>,
}

/// One session's Adj-RIB-Out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdjRibOut {
    sent: BTreeMap<Prefix, Attributes>,
}

impl AdjRibOut {
    /// An empty table (a new session has announced nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything: the session went down, so the peer dropped our routes (or keeps
    /// them as stale until our End-of-RIB, which is the same for us: we send them all again).
    pub fn clear(&mut self) {
        self.sent.clear();
    }

    /// Number of prefixes announced.
    pub fn len(&self) -> usize {
        self.sent.len()
    }

    /// Whether nothing is announced.
    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    /// Number of prefixes announced in one family.
    pub fn count(&self, family: Family) -> usize {
        self.sent.keys().filter(|p| p.family() == family).count()
    }

    /// What is announced, in prefix order.
    pub fn routes(&self) -> impl Iterator<Item = (&Prefix, &Attributes)> {
        self.sent.iter()
    }

    /// The UPDATEs that move the peer from what was sent to `desired`, restricted to
    /// `families` (routes of other families are neither announced nor withdrawn). Only
    /// prefixes that are new or whose attributes changed are announced; prefixes no longer
    /// desired are withdrawn.
    pub fn diff(
        &mut self,
        desired: &BTreeMap<Prefix, Attributes>,
        families: &[Family],
        enc: Encoding,
    ) -> Diff {
        let mut rejected = Vec::new();
        let mut groups: BTreeMap<(Family, &Attributes), Vec<Prefix>> = BTreeMap::new();
        let mut keep: BTreeMap<Prefix, Attributes> = BTreeMap::new();
        for (prefix, attrs) in desired {
            let family = prefix.family();
            if !families.contains(&family) {
                continue;
            }
            let nh_family = match attrs.next_hop {
                MpNextHop::V4(_) => Family::Ipv4Unicast,
                MpNextHop::V6 { .. } => Family::Ipv6Unicast,
            };
            if nh_family != family {
                rejected.push((*prefix, RejectReason::NextHopFamily));
                continue;
            }
            if self.sent.get(prefix) != Some(attrs) {
                groups.entry((family, attrs)).or_default().push(*prefix);
            }
            keep.insert(*prefix, attrs.clone());
        }

        let mut announcements = Vec::new();
        for ((family, attrs), prefixes) in &groups {
            match pack_announcements(*family, attrs, prefixes, enc) {
                Some(updates) => announcements.extend(updates),
                None => {
                    for p in prefixes {
                        keep.remove(p);
                        rejected.push((*p, RejectReason::Unencodable));
                    }
                }
            }
        }

        let withdrawn: Vec<Prefix> = self
            .sent
            .keys()
            .filter(|p| families.contains(&p.family()) && !keep.contains_key(*p))
            .copied()
            .collect();
        let mut updates = pack_withdrawals(&withdrawn);
        updates.extend(announcements);

        self.sent.retain(|p, _| !families.contains(&p.family()));
        self.sent.extend(keep);
        Diff { updates, rejected }
    }

    /// Every route of `family` again, for a ROUTE-REFRESH (RFC 2918 §4). Nothing changes in
    /// the table.
    pub fn refresh(&self, family: Family, enc: Encoding) -> Vec<Update> {
        let mut groups: BTreeMap<&Attributes, Vec<Prefix>> = BTreeMap::new();
        for (p, a) in self.sent.iter().filter(|(p, _)| p.family() == family) {
            groups.entry(a).or_default().push(*p);
        }
        groups
            .iter()
            .filter_map(|(a, ps)| pack_announcements(family, a, ps, enc))
            .flatten()
            .collect()
    }
}

/// The path attributes of an UPDATE for `attrs`, without NLRI, in type-code order (with
/// MP_REACH_NLRI, which is filled by the packer, first for IPv6).
fn build_attributes(family: Family, attrs: &Attributes, enc: Encoding) -> Vec<PathAttribute> {
    let mut out = Vec::with_capacity(8);
    if family == Family::Ipv6Unicast {
        out.push(PathAttribute::MpReach(MpReach {
            family,
            next_hop: attrs.next_hop,
            nlri: Vec::new(),
        }));
    }
    out.push(PathAttribute::Origin(attrs.origin));
    let path = AsPath::sequence(attrs.as_path.clone());
    let needs_as4 = !enc.four_octet_as && path.has_four_octet();
    if needs_as4 {
        let two: Vec<u32> = attrs
            .as_path
            .iter()
            .map(|a| {
                if *a > u32::from(u16::MAX) {
                    u32::from(AS_TRANS)
                } else {
                    *a
                }
            })
            .collect();
        out.push(PathAttribute::AsPath(AsPath::sequence(two)));
    } else {
        out.push(PathAttribute::AsPath(path.clone()));
    }
    if let (Family::Ipv4Unicast, MpNextHop::V4(nh)) = (family, attrs.next_hop) {
        out.push(PathAttribute::NextHop(nh));
    }
    if let Some(m) = attrs.med {
        out.push(PathAttribute::MultiExitDisc(m));
    }
    if let Some(l) = attrs.local_pref {
        out.push(PathAttribute::LocalPref(l));
    }
    if !attrs.communities.is_empty() {
        out.push(PathAttribute::Communities(attrs.communities.clone()));
    }
    if needs_as4 {
        out.push(PathAttribute::As4Path(path));
    }
    if !attrs.large_communities.is_empty() {
        out.push(PathAttribute::LargeCommunities(
            attrs.large_communities.clone(),
        ));
    }
    out
}

/// Size of an attribute header for a value of `len` bytes.
fn attr_header(len: usize) -> usize {
    if len > 255 { 4 } else { 3 }
}

/// UPDATEs announcing `prefixes` (all of `family`) with `attrs`, each at most 4096 bytes;
/// `None` if the attributes cannot be encoded or leave no room for a prefix.
fn pack_announcements(
    family: Family,
    attrs: &Attributes,
    prefixes: &[Prefix],
    enc: Encoding,
) -> Option<Vec<Update>> {
    let template = build_attributes(family, attrs, enc);
    // Every attribute but MP_REACH has a fixed size; measure them once.
    let mut fixed = HEADER_LEN + 4;
    let mut mp_fixed = 0;
    for a in &template {
        match a {
            PathAttribute::MpReach(m) => {
                let nh = match m.next_hop {
                    MpNextHop::V4(_) => 4,
                    MpNextHop::V6 { link_local, .. } => {
                        if link_local.is_some() {
                            32
                        } else {
                            16
                        }
                    }
                };
                mp_fixed = 2 + 1 + 1 + nh + 1;
            }
            other => fixed += other.encoded_len(enc).ok()?,
        }
    }
    let size = |nlri_bytes: usize| match family {
        Family::Ipv4Unicast => fixed + nlri_bytes,
        Family::Ipv6Unicast => {
            let v = mp_fixed + nlri_bytes;
            fixed + attr_header(v) + v
        }
    };
    let mut updates = Vec::new();
    let mut batch: Vec<Prefix> = Vec::new();
    let mut bytes = 0;
    for p in prefixes {
        let n = p.encoded_len();
        if size(bytes + n) > MAX_MESSAGE_LEN {
            if batch.is_empty() {
                return None;
            }
            updates.push(finish(family, &template, std::mem::take(&mut batch)));
            bytes = 0;
            if size(n) > MAX_MESSAGE_LEN {
                return None;
            }
        }
        batch.push(*p);
        bytes += n;
    }
    if !batch.is_empty() {
        updates.push(finish(family, &template, batch));
    }
    Some(updates)
}

fn finish(family: Family, template: &[PathAttribute], nlri: Vec<Prefix>) -> Update {
    let mut attributes = template.to_vec();
    match family {
        Family::Ipv4Unicast => Update {
            withdrawn: Vec::new(),
            attributes,
            nlri,
        },
        Family::Ipv6Unicast => {
            if let Some(PathAttribute::MpReach(m)) = attributes.first_mut() {
                m.nlri = nlri;
            }
            Update {
                withdrawn: Vec::new(),
                attributes,
                nlri: Vec::new(),
            }
        }
    }
}

/// UPDATEs withdrawing `prefixes` (any mix of families), each at most 4096 bytes.
pub(crate) fn pack_withdrawals(prefixes: &[Prefix]) -> Vec<Update> {
    let mut out = Vec::new();
    for family in Family::ALL {
        let mut batch: Vec<Prefix> = Vec::new();
        let mut bytes = 0;
        let size = |b: usize| match family {
            Family::Ipv4Unicast => HEADER_LEN + 4 + b,
            Family::Ipv6Unicast => HEADER_LEN + 4 + attr_header(3 + b) + 3 + b,
        };
        let flush = |batch: Vec<Prefix>, out: &mut Vec<Update>| {
            out.push(match family {
                Family::Ipv4Unicast => Update {
                    withdrawn: batch,
                    ..Update::default()
                },
                Family::Ipv6Unicast => Update {
                    attributes: vec![PathAttribute::MpUnreach(MpUnreach {
                        family,
                        withdrawn: batch,
                    })],
                    ..Update::default()
                },
            });
        };
        for p in prefixes.iter().filter(|p| p.family() == family) {
            let n = p.encoded_len();
            if size(bytes + n) > MAX_MESSAGE_LEN && !batch.is_empty() {
                flush(std::mem::take(&mut batch), &mut out);
                bytes = 0;
            }
            batch.push(*p);
            bytes += n;
        }
        if !batch.is_empty() {
            flush(batch, &mut out);
        }
    }
    out
}
