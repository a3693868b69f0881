//! This node's network interfaces, from rtnetlink, followed as events.
//!
//! Owns the interface table (name, index, MAC, up, addresses with prefix lengths) and the pure
//! lookups the default interface choice is made of: the interface holding the node's InternalIP
//! ([`default_interface`]) and the interfaces on an IP's subnet ([`on_subnet`]). [`monitor`] subscribes to the link and address multicast groups and re-reads the
//! table after each burst of events (no polling). The selection functions are pure; only
//! `monitor` does I/O. It must not change any interface or address.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use rtnetlink::MulticastGroup;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags};
use tokio::sync::watch;

use ferrolb_speaker_core::wire::Mac;

/// Why the interface table cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum NetifError {
    /// The netlink socket could not be opened.
    #[error("cannot open an rtnetlink socket: {0}")]
    Socket(std::io::Error),
    /// A dump request failed.
    #[error("rtnetlink dump failed: {0}")]
    Dump(rtnetlink::Error),
    /// The event stream ended (the netlink connection died).
    #[error("the rtnetlink event stream ended")]
    Ended,
}

/// One interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Iface {
    /// Kernel index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Ethernet address (`None` for interfaces without one, like loopback or tun).
    pub mac: Option<Mac>,
    /// Administratively up and with carrier.
    pub up: bool,
    /// Addresses with prefix lengths.
    pub addrs: Vec<(IpAddr, u8)>,
}

impl Iface {
    /// The IPv6 link-local address, if any (for logs and diagnostics; Neighbor Advertisements
    /// are sent from the announced address itself, see [`crate::l2::packet`]).
    pub fn link_local(&self) -> Option<Ipv6Addr> {
        self.addrs.iter().find_map(|(a, _)| match a {
            IpAddr::V6(v6) if v6.is_unicast_link_local() => Some(*v6),
            _ => None,
        })
    }
}

/// Interfaces by name.
pub type IfaceTable = BTreeMap<String, Iface>;

fn in_subnet(addr: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    match (addr, ip) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let p = u32::from(prefix.min(32));
            let mask = u32::MAX.checked_shl(32 - p).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let p = u32::from(prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - p).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// The default interface: the one holding one of the node's InternalIPs, else the one whose
/// subnet contains one (in the order the Node lists them). Interfaces without a MAC are skipped.
pub fn default_interface<'a>(table: &'a IfaceTable, node_ips: &[IpAddr]) -> Option<&'a Iface> {
    let candidates = || table.values().filter(|i| i.mac.is_some());
    node_ips
        .iter()
        .find_map(|ip| candidates().find(|i| i.addrs.iter().any(|(a, _)| a == ip)))
        .or_else(|| {
            node_ips.iter().find_map(|ip| {
                candidates().find(|i| {
                    i.addrs
                        .iter()
                        .any(|(a, p)| a.is_ipv4() == ip.is_ipv4() && in_subnet(*a, *p, *ip))
                })
            })
        })
}

/// The interfaces on `ip`'s subnet: those with a MAC holding an address of `ip`'s family whose
/// prefix contains it, in name order. Host addresses (a /32 or /128, such as a VIP or an IPVS
/// dummy's Service addresses) and /0 define no on-link subnet, so they never count: a neighbour
/// asking for `ip` is only ever reached through an interface whose subnet the IP belongs to.
pub fn on_subnet(table: &IfaceTable, ip: IpAddr) -> impl Iterator<Item = &Iface> {
    let full = if ip.is_ipv4() { 32 } else { 128 };
    table.values().filter(move |i| {
        i.mac.is_some()
            && i.addrs.iter().any(|(a, p)| {
                a.is_ipv4() == ip.is_ipv4() && *p > 0 && *p < full && in_subnet(*a, *p, ip)
            })
    })
}

/// Reads links and addresses.
async fn dump(handle: &rtnetlink::Handle) -> Result<IfaceTable, NetifError> {
    let mut by_index: BTreeMap<u32, Iface> = BTreeMap::new();
    let mut links = handle.link().get().execute();
    while let Some(msg) = links.try_next().await.map_err(NetifError::Dump)? {
        let mut iface = Iface {
            index: msg.header.index,
            up: msg.header.flags.contains(LinkFlags::Up)
                && msg.header.flags.contains(LinkFlags::LowerUp),
            ..Default::default()
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => iface.name = n.clone(),
                LinkAttribute::Address(a) => iface.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
                _ => {}
            }
        }
        // An all-zero address (loopback) is no MAC to answer from.
        if iface.mac == Some([0; 6]) {
            iface.mac = None;
        }
        by_index.insert(iface.index, iface);
    }
    let mut addrs = handle.address().get().execute();
    while let Some(msg) = addrs.try_next().await.map_err(NetifError::Dump)? {
        let Some(iface) = by_index.get_mut(&msg.header.index) else {
            continue;
        };
        // IFA_LOCAL is the address on point-to-point links; IFA_ADDRESS otherwise.
        let local = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let addr = local.or_else(|| {
            msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        });
        if let Some(a) = addr {
            iface.addrs.push((a, msg.header.prefix_len));
        }
    }
    Ok(by_index
        .into_values()
        .filter(|i| !i.name.is_empty())
        .map(|i| (i.name.clone(), i))
        .collect())
}

/// Publishes the interface table into `tx` now and after every burst of link/address events,
/// until the netlink connection fails. Bursts are coalesced over 10 ms so an `ip link set down`
/// (several messages) costs one dump.
pub async fn monitor(tx: watch::Sender<IfaceTable>) -> Result<(), NetifError> {
    let (conn, handle, mut events) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
    ])
    .map_err(NetifError::Socket)?;
    let conn = tokio::spawn(conn);
    let result = async {
        tx.send_replace(dump(&handle).await?);
        loop {
            if events.next().await.is_none() {
                return Err(NetifError::Ended);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            // Drain what arrived meanwhile: one dump covers it.
            while events.try_recv().is_ok() {}
            let table = dump(&handle).await?;
            tx.send_if_modified(|old| {
                let changed = *old != table;
                if changed {
                    *old = table;
                }
                changed
            });
        }
    }
    .await;
    conn.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, index: u32, addrs: &[(&str, u8)]) -> Iface {
        Iface {
            index,
            name: name.into(),
            mac: Some([2, 0, 0, 0, 0, index as u8]),
            up: true,
            addrs: addrs
                .iter()
                .map(|(a, p)| (a.parse().expect("literal"), *p))
                .collect(),
        }
    }

    #[test]
    fn default_interface_prefers_the_address_then_the_subnet() {
        let mut t = IfaceTable::new();
        t.insert(
            "lo".into(),
            Iface {
                mac: None,
                ..iface("lo", 1, &[("127.0.0.1", 8)])
            },
        );
        t.insert(
            "eth0".into(),
            iface("eth0", 2, &[("198.51.100.11", 24), ("fe80::1", 64)]),
        );
        t.insert("eth1".into(), iface("eth1", 3, &[("203.0.113.5", 24)]));
        let ip = |s: &str| s.parse::<IpAddr>().expect("literal");
        assert_eq!(
            default_interface(&t, &[ip("198.51.100.11")]).map(|i| i.index),
            Some(2)
        );
        // Not held locally (e.g. NAT): the interface whose subnet contains it.
        assert_eq!(
            default_interface(&t, &[ip("203.0.113.99")]).map(|i| i.index),
            Some(3)
        );
        assert!(default_interface(&t, &[ip("192.0.2.1")]).is_none());
        assert!(default_interface(&t, &[ip("127.0.0.1")]).is_none());
        assert_eq!(
            t["eth0"].link_local(),
            Some("fe80::1".parse().expect("literal"))
        );
    }

    #[test]
    fn on_subnet_finds_each_interface_whose_subnet_holds_the_ip() {
        let mut t = IfaceTable::new();
        t.insert(
            "eth0".into(),
            iface("eth0", 2, &[("198.51.100.11", 24), ("2001:db8::11", 64)]),
        );
        t.insert(
            "eth1".into(),
            iface("eth1", 3, &[("203.0.113.11", 24), ("2001:db8:2::11", 64)]),
        );
        // A VIP or an IPVS dummy: host addresses, no subnet.
        t.insert(
            "kube-ipvs0".into(),
            iface(
                "kube-ipvs0",
                4,
                &[("203.0.113.70", 32), ("2001:db8:2::70", 128)],
            ),
        );
        t.insert(
            "tun0".into(),
            Iface {
                mac: None,
                ..iface("tun0", 5, &[("203.0.113.200", 24)])
            },
        );
        let ip = |s: &str| s.parse::<IpAddr>().expect("literal");
        let names = |a: &str| {
            on_subnet(&t, ip(a))
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(names("203.0.113.70"), ["eth1"]);
        assert_eq!(names("198.51.100.70"), ["eth0"]);
        assert_eq!(names("2001:db8:2::70"), ["eth1"]);
        assert_eq!(names("2001:db8::1:70"), ["eth0"]);
        assert!(names("192.0.2.1").is_empty());
        assert!(names("2001:db8:3::1").is_empty());
    }

    #[test]
    fn subnet_math_handles_edges() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("literal");
        assert!(in_subnet(ip("10.0.0.1"), 0, ip("192.0.2.1")));
        assert!(in_subnet(ip("198.51.100.1"), 32, ip("198.51.100.1")));
        assert!(!in_subnet(ip("198.51.100.1"), 32, ip("198.51.100.2")));
        assert!(in_subnet(ip("2001:db8::1"), 64, ip("2001:db8::ffff")));
        assert!(!in_subnet(ip("2001:db8::1"), 128, ip("2001:db8::2")));
        assert!(!in_subnet(ip("2001:db8::1"), 64, ip("198.51.100.1")));
        assert!(in_subnet(ip("2001:db8::1"), 200, ip("2001:db8::1")));
    }
}
