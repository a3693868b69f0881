//! Which of the ports forwarder-mode Services want on this node are free: the pure decision
//! behind the node's `ForwarderNode` report.
//!
//! A port is unavailable when publishing it would take traffic from something already there:
//! a host process listening on it (on a node address or a wildcard), a pod on this node with
//! that `hostPort`, or a deny-listed port (sshd, DNS, BGP, etcd, the API server, the kubelet,
//! and the speaker's own ports by default). kube-proxy's rules for a published address run
//! before any of these would see the packet, so without this check they would be hijacked
//! silently.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use ferrolb_addresses::Family;
use ferrolb_crds::{ForwarderNodeStatus, UnavailablePort};

use super::Proto;
use super::sockets::Socket;

/// One `family/protocol/port` a Service of a node pool may be published with here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Wanted {
    /// Address family.
    pub family: Family,
    /// Protocol.
    pub proto: Proto,
    /// Port.
    pub port: u16,
}

impl Wanted {
    /// `IPv4/TCP/443`: the form the controller reads in `ForwarderNode.status.checked`.
    pub fn text(&self) -> String {
        format!(
            "{}/{}/{}",
            self.family.as_str(),
            self.proto.as_str(),
            self.port
        )
    }
}

/// A pod on this node that reserves a host port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPort {
    /// `namespace/name` of the pod.
    pub pod: String,
    /// Protocol.
    pub proto: Proto,
    /// The host port.
    pub port: u16,
    /// `hostIP`, when the pod pins one.
    pub host_ip: Option<IpAddr>,
}

/// A port that is never published, and why in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The ports.
    pub ports: RangeInclusive<u16>,
    /// Why, e.g. "the speaker's memberlist port".
    pub why: String,
}

/// Everything one check reads.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// What the node pools' Services want here.
    pub wanted: &'a BTreeSet<Wanted>,
    /// This node's addresses (InternalIP and ExternalIP).
    pub node_addrs: &'a [IpAddr],
    /// Listening and bound sockets of the node.
    pub sockets: &'a [Socket],
    /// hostPort pods on the node.
    pub host_ports: &'a [HostPort],
    /// Deny-listed ports.
    pub denied: &'a [Denied],
    /// `kube-ipvs0` exists: kube-proxy runs in IPVS mode.
    pub ipvs: bool,
}

/// The report for this node.
pub fn check(inp: Inputs<'_>) -> ForwarderNodeStatus {
    let mut unavailable = Vec::new();
    for w in inp.wanted {
        let reason = unavailable_because(&inp, w);
        if let Some((reason, detail)) = reason {
            unavailable.push(UnavailablePort {
                family: w.family.as_str().into(),
                protocol: w.proto.as_str().into(),
                port: i32::from(w.port),
                reason: reason.into(),
                detail,
            });
        }
    }
    let checked: Vec<String> = inp.wanted.iter().map(Wanted::text).collect();
    let summary = summary(&unavailable);
    ForwarderNodeStatus {
        ipvs: inp.ipvs,
        checked_count: checked.len() as i64,
        checked,
        unavailable,
        summary,
    }
}

fn unavailable_because(inp: &Inputs<'_>, w: &Wanted) -> Option<(&'static str, String)> {
    if let Some(d) = inp.denied.iter().find(|d| d.ports.contains(&w.port)) {
        return Some(("DenyList", format!("port {} is {}", w.port, d.why)));
    }
    let addrs: Vec<IpAddr> = inp
        .node_addrs
        .iter()
        .copied()
        .filter(|a| Family::of(*a) == w.family)
        .collect();
    if let Some(s) = inp.sockets.iter().find(|s| {
        s.proto == w.proto
            && s.port == w.port
            && (s.takes(w.family, None) || addrs.iter().any(|a| s.takes(w.family, Some(*a))))
    }) {
        let verb = match s.proto {
            Proto::Tcp => "listens on",
            _ => "is bound to",
        };
        let addr = match s.addr {
            IpAddr::V6(a) => format!("[{a}]:{}", s.port),
            IpAddr::V4(a) => format!("{a}:{}", s.port),
        };
        return Some((
            "HostSocket",
            format!("a host process {verb} {addr} ({})", s.proto.as_str()),
        ));
    }
    if let Some(h) = inp.host_ports.iter().find(|h| {
        h.proto == w.proto
            && h.port == w.port
            && h.host_ip.is_none_or(|ip| {
                ip.is_unspecified() || (Family::of(ip) == w.family && addrs.contains(&ip))
            })
    }) {
        return Some((
            "HostPort",
            format!(
                "pod {} uses hostPort {}/{}",
                h.pod,
                h.port,
                h.proto.as_str()
            ),
        ));
    }
    None
}

/// `443/TCP (HostSocket), 22/TCP (DenyList)`, for `kubectl get forwardernodes`.
fn summary(unavailable: &[UnavailablePort]) -> String {
    let mut parts: Vec<String> = unavailable
        .iter()
        .map(|u| format!("{}/{} ({})", u.port, u.protocol, u.reason))
        .collect();
    parts.dedup();
    parts.join(", ")
}

/// Parses the deny-list flag: `22,53,2379-2380`.
pub fn parse_deny_list(s: &str) -> Result<Vec<RangeInclusive<u16>>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (lo, hi) = p.split_once('-').unwrap_or((p, p));
            let lo: u16 = lo
                .trim()
                .parse()
                .map_err(|_| format!("{p:?} is not a port or range"))?;
            let hi: u16 = hi
                .trim()
                .parse()
                .map_err(|_| format!("{p:?} is not a port or range"))?;
            if lo > hi || lo == 0 {
                return Err(format!("{p:?} is not a port range (1-65535, low to high)"));
            }
            Ok(lo..=hi)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn want(family: Family, port: u16) -> Wanted {
        Wanted {
            family,
            proto: Proto::Tcp,
            port,
        }
    }

    fn run(wanted: &[Wanted], sockets: &[Socket], host_ports: &[HostPort]) -> ForwarderNodeStatus {
        let wanted: BTreeSet<Wanted> = wanted.iter().copied().collect();
        let denied = [Denied {
            ports: 22..=22,
            why: "on the deny-list (--forwarder-deny-ports)".into(),
        }];
        check(Inputs {
            wanted: &wanted,
            node_addrs: &[ip("198.51.100.11"), ip("2001:db8::11")],
            sockets,
            host_ports,
            denied: &denied,
            ipvs: false,
        })
    }

    #[test]
    fn free_ports_are_checked_and_listed() {
        let st = run(&[want(Family::V4, 443), want(Family::V6, 443)], &[], &[]);
        assert_eq!(st.checked, ["IPv4/TCP/443", "IPv6/TCP/443"]);
        assert_eq!(st.checked_count, 2);
        assert!(st.unavailable.is_empty() && st.summary.is_empty());
    }

    #[test]
    fn a_wildcard_listener_blocks_its_family_and_says_where() {
        let sock = Socket {
            proto: Proto::Tcp,
            addr: ip("0.0.0.0"),
            port: 443,
            inode: 101,
        };
        let st = run(
            &[want(Family::V4, 443), want(Family::V6, 443)],
            &[sock],
            &[],
        );
        assert_eq!(st.unavailable.len(), 1);
        assert_eq!(st.unavailable[0].family, "IPv4");
        assert_eq!(st.unavailable[0].reason, "HostSocket");
        assert_eq!(
            st.unavailable[0].detail,
            "a host process listens on 0.0.0.0:443 (TCP)"
        );
        assert_eq!(st.summary, "443/TCP (HostSocket)");
    }

    #[test]
    fn a_listener_on_another_address_does_not_count() {
        let sock = Socket {
            proto: Proto::Tcp,
            addr: ip("127.0.0.1"),
            port: 443,
            inode: 1,
        };
        assert!(
            run(&[want(Family::V4, 443)], &[sock], &[])
                .unavailable
                .is_empty()
        );
        let udp = Socket {
            proto: Proto::Udp,
            addr: ip("0.0.0.0"),
            port: 443,
            inode: 2,
        };
        assert!(
            run(&[want(Family::V4, 443)], &[udp], &[])
                .unavailable
                .is_empty()
        );
    }

    #[test]
    fn deny_list_and_host_ports() {
        let st = run(&[want(Family::V4, 22)], &[], &[]);
        assert_eq!(st.unavailable[0].reason, "DenyList");
        assert_eq!(
            st.unavailable[0].detail,
            "port 22 is on the deny-list (--forwarder-deny-ports)"
        );
        let hp = HostPort {
            pod: "ingress/nginx-0".into(),
            proto: Proto::Tcp,
            port: 80,
            host_ip: None,
        };
        let st = run(&[want(Family::V4, 80)], &[], std::slice::from_ref(&hp));
        assert_eq!(
            st.unavailable[0].detail,
            "pod ingress/nginx-0 uses hostPort 80/TCP"
        );
        // Pinned to another node address: not in the way.
        let pinned = HostPort {
            host_ip: Some(ip("198.51.100.99")),
            ..hp
        };
        assert!(
            run(&[want(Family::V4, 80)], &[], &[pinned])
                .unavailable
                .is_empty()
        );
    }

    #[test]
    fn deny_list_flag() {
        assert_eq!(
            parse_deny_list("22, 2379-2380,"),
            Ok(vec![22..=22, 2379..=2380])
        );
        assert!(parse_deny_list("x").is_err());
        assert!(parse_deny_list("10-5").is_err());
        assert!(parse_deny_list("0").is_err());
        assert!(parse_deny_list("70000").is_err());
    }
}
