//! The data the controller's shell hands to the allocator and gets back.
//!
//! Owns the plain request/answer types (keys, families, ports, traffic policy, [`Request`],
//! [`Assignment`]) and the sharing-compatibility rule between two Services. It must not hold
//! state or know about Kubernetes objects: the shell translates Services into these values.

use std::fmt;
use std::net::IpAddr;

use crate::error::Conflict;
use ferrolb_addresses::Family;

/// Which families a Service wants, in `spec.ipFamilies` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FamilyPolicy {
    /// Exactly one IP of this family.
    Single(Family),
    /// One IP per family when the pools allow; otherwise whichever family succeeded.
    PreferDual([Family; 2]),
    /// One IP per family, or fail without changing anything.
    RequireDual([Family; 2]),
}

impl FamilyPolicy {
    /// The families in order, without duplicates (`[V4, V4]` means just V4).
    pub fn families(&self) -> Vec<Family> {
        match self {
            FamilyPolicy::Single(f) => vec![*f],
            FamilyPolicy::PreferDual([a, b]) | FamilyPolicy::RequireDual([a, b]) => {
                if a == b {
                    vec![*a]
                } else {
                    vec![*a, *b]
                }
            }
        }
    }
}

/// A Service, as `"namespace/name"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey(pub String);

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The value of a Service's sharing-key annotation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SharingKey(pub String);

impl fmt::Display for SharingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Service port's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// "TCP", "UDP" or "SCTP", as Kubernetes spells them.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `spec.externalTrafficPolicy`; Services sharing an IP must agree on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TrafficPolicy {
    /// Traffic may land on any node.
    Cluster,
    /// Traffic must land on a node running a selected pod.
    Local {
        /// Canonical string of `spec.selector`; sharing Services must select the same pods.
        selector: String,
    },
}

/// Everything the allocator needs to know about one Service, computed by the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Families wanted, in `spec.ipFamilies` order.
    pub families: FamilyPolicy,
    /// Explicitly requested IPs, at most one per family.
    pub requested: Vec<IpAddr>,
    /// Pinned pool name (annotation); may name an autoAssign=false pool.
    pub pool: Option<String>,
    /// Pools to try in order when nothing is pinned (serviceAllocation matches by priority,
    /// then autoAssign pools). The allocator does not filter this by `auto_assign`.
    pub candidate_pools: Vec<String>,
    /// Sharing key annotation.
    pub sharing: Option<SharingKey>,
    /// The Service's ports.
    pub ports: Vec<(Protocol, u16)>,
    /// External traffic policy (and selector for Local).
    pub traffic: TrafficPolicy,
    /// IPs already published in the Service's status, reclaimed while still valid. They come
    /// first when the allocator has no record of the Service (after a restart); otherwise what
    /// the allocator holds comes first, since the status may lag behind its last decision.
    pub current: Vec<IpAddr>,
    /// The user allows moving an IP that fell out of every pool.
    pub allow_ip_change: bool,
}

impl Request {
    /// A request for `families` with nothing else set: no requested IPs, no pin, no candidate
    /// pools, no sharing, no ports, Cluster traffic, no current IPs, IP changes not allowed.
    pub fn new(families: FamilyPolicy) -> Request {
        Request {
            families,
            requested: Vec::new(),
            pool: None,
            candidate_pools: Vec::new(),
            sharing: None,
            ports: Vec::new(),
            traffic: TrafficPolicy::Cluster,
            current: Vec::new(),
            allow_ip_change: false,
        }
    }
}

/// One IP given to a Service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AssignedIp {
    /// The address.
    pub ip: IpAddr,
    /// A pool containing it (preferably the one it came from); `None` when it is in no pool
    /// any more (orphaned, kept for stability).
    pub pool: Option<String>,
}

/// The IPs a Service holds, in the order of its families.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Assignment {
    /// One entry per family that got an IP.
    pub ips: Vec<AssignedIp>,
}

impl Assignment {
    /// Just the addresses, in family order.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ips.iter().map(|a| a.ip)
    }

    /// The entry of `family`, if any.
    pub fn get(&self, family: Family) -> Option<&AssignedIp> {
        self.ips.iter().find(|a| Family::of(a.ip) == family)
    }
}

/// The parts of a request that decide whether two Services may share an IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Profile {
    pub(crate) sharing: Option<SharingKey>,
    /// Sorted and deduplicated, so the first overlap reported is deterministic.
    pub(crate) ports: Vec<(Protocol, u16)>,
    pub(crate) traffic: TrafficPolicy,
}

impl Profile {
    pub(crate) fn of(req: &Request) -> Profile {
        let mut ports = req.ports.clone();
        ports.sort_unstable();
        ports.dedup();
        Profile {
            sharing: req.sharing.clone(),
            ports,
            traffic: req.traffic.clone(),
        }
    }

    /// Why `self` and `other` may not share an IP, or `None` if they may: same sharing key,
    /// same traffic policy (and selector for Local), no common (protocol, port).
    pub(crate) fn conflict_with(&self, other: &Profile) -> Option<Conflict> {
        match (&self.sharing, &other.sharing) {
            (Some(a), Some(b)) if a == b => {}
            (Some(_), Some(_)) => return Some(Conflict::SharingKeysDiffer),
            _ => return Some(Conflict::NotShared),
        }
        match (&self.traffic, &other.traffic) {
            (TrafficPolicy::Cluster, TrafficPolicy::Cluster) => {}
            (TrafficPolicy::Local { selector: a }, TrafficPolicy::Local { selector: b }) => {
                if a != b {
                    return Some(Conflict::SelectorsDiffer);
                }
            }
            _ => return Some(Conflict::TrafficPoliciesDiffer),
        }
        // Both lists are sorted: a linear merge finds the lowest common port.
        let (mut i, mut j) = (0, 0);
        while let (Some(a), Some(b)) = (self.ports.get(i), other.ports.get(j)) {
            match a.cmp(b) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    return Some(Conflict::PortsOverlap {
                        protocol: a.0,
                        port: a.1,
                    });
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(key: Option<&str>, ports: &[(Protocol, u16)], traffic: TrafficPolicy) -> Profile {
        let mut req = Request::new(FamilyPolicy::Single(Family::V4));
        req.sharing = key.map(|k| SharingKey(k.to_string()));
        req.ports = ports.to_vec();
        req.traffic = traffic;
        Profile::of(&req)
    }

    fn local(sel: &str) -> TrafficPolicy {
        TrafficPolicy::Local {
            selector: sel.to_string(),
        }
    }

    #[test]
    fn compatibility_rules() {
        use Protocol::*;
        let web = profile(Some("k"), &[(Tcp, 80)], TrafficPolicy::Cluster);
        let dns = profile(Some("k"), &[(Udp, 53), (Tcp, 53)], TrafficPolicy::Cluster);
        assert_eq!(web.conflict_with(&dns), None);
        assert_eq!(dns.conflict_with(&web), None);
        let web2 = profile(Some("k"), &[(Tcp, 443), (Tcp, 80)], TrafficPolicy::Cluster);
        assert_eq!(
            web.conflict_with(&web2),
            Some(Conflict::PortsOverlap {
                protocol: Tcp,
                port: 80
            })
        );
        let udp80 = profile(Some("k"), &[(Udp, 80)], TrafficPolicy::Cluster);
        assert_eq!(web.conflict_with(&udp80), None, "same port, other protocol");
        let other_key = profile(Some("j"), &[(Udp, 53)], TrafficPolicy::Cluster);
        assert_eq!(
            web.conflict_with(&other_key),
            Some(Conflict::SharingKeysDiffer)
        );
        let no_key = profile(None, &[(Udp, 53)], TrafficPolicy::Cluster);
        assert_eq!(web.conflict_with(&no_key), Some(Conflict::NotShared));
        assert_eq!(no_key.conflict_with(&no_key), Some(Conflict::NotShared));
        let local_a = profile(Some("k"), &[(Udp, 53)], local("app=a"));
        let local_a2 = profile(Some("k"), &[(Tcp, 53)], local("app=a"));
        let local_b = profile(Some("k"), &[(Tcp, 8080)], local("app=b"));
        assert_eq!(
            web.conflict_with(&local_a),
            Some(Conflict::TrafficPoliciesDiffer)
        );
        assert_eq!(local_a.conflict_with(&local_a2), None);
        assert_eq!(
            local_a.conflict_with(&local_b),
            Some(Conflict::SelectorsDiffer)
        );
    }

    #[test]
    fn families_dedupe() {
        use Family::*;
        assert_eq!(FamilyPolicy::PreferDual([V6, V4]).families(), vec![V6, V4]);
        assert_eq!(FamilyPolicy::RequireDual([V4, V4]).families(), vec![V4]);
        assert_eq!(FamilyPolicy::Single(V6).families(), vec![V6]);
    }
}
