//! Which of this node's interfaces announce an IP: the L2Advertisements' wishes (from the
//! plan's [`Interfaces`]) resolved against the interface table, the node's InternalIPs and
//! `--interfaces`.
//!
//! Pure: the plan's choice, the table and the flags in, interfaces out. It must not do I/O or
//! read clocks; the announcer ([`super::announcer`]) feeds it the current table. The lookups the
//! default choice is made of (the InternalIP's interface, the IP's subnet) are
//! [`crate::netif`]'s, shared with every mode.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::netif::{self, Iface, IfaceTable};
use crate::plan::{Interfaces, WantedInterface};

/// Where one IP can be announced from this node.
#[derive(Debug, Default)]
pub struct Resolved<'a> {
    /// The usable interfaces, each once (the default choice first).
    pub usable: Vec<&'a Iface>,
    /// The wanted interfaces that resolve to nothing usable: missing, down, or not in
    /// `--interfaces`.
    pub unusable: Vec<WantedInterface>,
}

/// Resolves, for `ip`, which this node may announce, the interfaces to announce it on and those
/// it cannot use. Pure: the plan's interface choice, the table, the node's InternalIPs and
/// `--interfaces` (`allowed`).
///
/// - **An advertisement without `interfaces`** ([`Interfaces::default`]) means
///   the `--interfaces` list when one is given: the flag chooses, so a speaker told
///   `--interfaces=bond0.100` announces there. Without the flag it means the interface holding
///   the node's InternalIP plus every interface whose subnet contains `ip`
///   ([`netif::on_subnet`]), so an IP whose subnet lives on a second NIC or VLAN is answered
///   there. Unlike MetalLB, which answers on every interface, other interfaces (CNI bridges,
///   veths) never answer: a neighbour that is not on the IP's subnet has no business asking.
/// - **Named interfaces** are used when present, and `--interfaces` restricts them.
///
/// Every interface must be up and have a MAC. A wanted entry that yields no interface at all is
/// unusable.
pub fn resolve_interfaces<'a>(
    ip: IpAddr,
    wanted: &Interfaces,
    table: &'a IfaceTable,
    node_ips: &[IpAddr],
    allowed: &[String],
) -> Resolved<'a> {
    let mut out = Resolved::default();
    let up_with_mac = |i: &&Iface| i.up && i.mac.is_some();
    let add = |out: &mut Resolved<'a>, i: &'a Iface| {
        if out.usable.iter().all(|o| o.index != i.index) {
            out.usable.push(i);
        }
    };
    if wanted.default {
        let before = out.usable.len();
        if allowed.is_empty() {
            let chosen = netif::default_interface(table, node_ips)
                .into_iter()
                .chain(netif::on_subnet(table, ip));
            for i in chosen.filter(up_with_mac) {
                add(&mut out, i);
            }
        } else {
            for i in allowed
                .iter()
                .filter_map(|n| table.get(n))
                .filter(up_with_mac)
            {
                add(&mut out, i);
            }
        }
        if out.usable.len() == before {
            out.unusable.push(WantedInterface::Default);
        }
    }
    for name in &wanted.named {
        let found = table
            .get(name)
            .filter(up_with_mac)
            .filter(|i| allowed.is_empty() || allowed.contains(&i.name));
        match found {
            Some(i) => add(&mut out, i),
            None => out.unusable.push(WantedInterface::Named(name.clone())),
        }
    }
    out
}

/// Whether one wanted interface resolves to a usable one for any of `ips` (see
/// [`resolve_interfaces`]; the default choice depends on the IP).
pub(super) fn interface_usable(
    w: &WantedInterface,
    ips: &BTreeSet<IpAddr>,
    table: &IfaceTable,
    node_ips: &[IpAddr],
    allowed: &[String],
) -> bool {
    let one = match w {
        WantedInterface::Default => Interfaces {
            default: true,
            named: BTreeSet::new(),
        },
        WantedInterface::Named(n) => Interfaces {
            default: false,
            named: [n.clone()].into(),
        },
    };
    ips.iter().any(|ip| {
        resolve_interfaces(*ip, &one, table, node_ips, allowed)
            .unusable
            .is_empty()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("literal")
    }

    /// eth0 holds the InternalIP (198.51.100.11, 2001:db8::11); eth1 is a second NIC on
    /// 203.0.113.0/24 and 2001:db8:2::/64; eth2 is down; cni0 is a CNI bridge and veth1 one of
    /// its ports (no address).
    fn table() -> IfaceTable {
        let mk = |name: &str, index: u32, up: bool, addrs: &[(&str, u8)]| Iface {
            index,
            name: name.into(),
            mac: Some([2, 0, 0, 0, 0, index as u8]),
            up,
            addrs: addrs.iter().map(|(a, p)| (ip(a), *p)).collect(),
        };
        [
            mk(
                "eth0",
                2,
                true,
                &[
                    ("198.51.100.11", 24),
                    ("2001:db8::11", 64),
                    ("fe80::11", 64),
                ],
            ),
            mk(
                "eth1",
                3,
                true,
                &[("203.0.113.11", 24), ("2001:db8:2::11", 64)],
            ),
            mk("eth2", 4, false, &[("192.0.2.11", 24)]),
            mk("cni0", 5, true, &[("10.244.0.1", 24)]),
            mk("veth1", 6, true, &[]),
        ]
        .into_iter()
        .map(|i| (i.name.clone(), i))
        .collect()
    }

    fn node_ips() -> Vec<IpAddr> {
        vec![ip("198.51.100.11"), ip("2001:db8::11")]
    }

    fn want(default: bool, named: &[&str]) -> Interfaces {
        Interfaces {
            default,
            named: named.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn names(r: &Resolved<'_>) -> Vec<String> {
        r.usable.iter().map(|i| i.name.clone()).collect()
    }

    fn allowed(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_default_is_the_internal_ip_interface_plus_the_ips_subnet() {
        let t = table();
        let r = |a: &str| resolve_interfaces(ip(a), &want(true, &[]), &t, &node_ips(), &[]);
        // An IP on the InternalIP's subnet: eth0 alone.
        assert_eq!(names(&r("198.51.100.70")), ["eth0"]);
        // An IP on the second NIC's subnet: eth1 too, for IPv4 and IPv6.
        assert_eq!(names(&r("203.0.113.70")), ["eth0", "eth1"]);
        assert_eq!(names(&r("2001:db8:2::70")), ["eth0", "eth1"]);
        // The other family's subnet of eth1 does not count.
        assert_eq!(names(&r("2001:db8::1:70")), ["eth0"]);
        // Nothing else answers: not a down interface on the IP's subnet (eth2), not the CNI
        // bridge or its veths; the bridge only for an IP of its own subnet (no pool should
        // hold one), as the rule says.
        assert_eq!(names(&r("192.0.2.70")), ["eth0"]);
        assert_eq!(names(&r("10.244.0.70")), ["eth0", "cni0"]);
        for a in ["198.51.100.70", "203.0.113.70", "2001:db8:2::70"] {
            assert!(r(a).unusable.is_empty(), "{a}");
        }
    }

    #[test]
    fn the_subnet_rule_carries_an_ip_when_the_internal_ip_interface_is_unusable() {
        let mut t = table();
        if let Some(i) = t.get_mut("eth0") {
            i.up = false;
        }
        let w = want(true, &[]);
        let r = resolve_interfaces(ip("203.0.113.70"), &w, &t, &node_ips(), &[]);
        assert_eq!((names(&r), r.unusable.len()), (vec!["eth1".to_string()], 0));
        let r = resolve_interfaces(ip("198.51.100.70"), &w, &t, &node_ips(), &[]);
        assert!(r.usable.is_empty());
        assert_eq!(r.unusable, [WantedInterface::Default]);
        // The InternalIP is on down eth2's subnet: the IP's own subnet still finds eth0; an
        // IP on eth2's subnet has no usable interface.
        let t = table();
        let other = [ip("192.0.2.200")];
        let r = resolve_interfaces(ip("198.51.100.70"), &w, &t, &other, &[]);
        assert_eq!(names(&r), ["eth0"]);
        let r = resolve_interfaces(ip("192.0.2.70"), &w, &t, &other, &[]);
        assert_eq!(
            (r.usable.len(), r.unusable),
            (0, vec![WantedInterface::Default])
        );
    }

    #[test]
    fn the_flag_chooses_when_the_advertisement_names_no_interface() {
        let t = table();
        let w = want(true, &[]);
        // Whatever the IP's subnet, the flag's interfaces, in the flag's order.
        for a in ["198.51.100.70", "203.0.113.70", "2001:db8::1:70"] {
            let r = resolve_interfaces(ip(a), &w, &t, &node_ips(), &allowed(&["eth1"]));
            assert_eq!(names(&r), ["eth1"], "{a}");
            assert!(r.unusable.is_empty());
        }
        let r = resolve_interfaces(
            ip("198.51.100.70"),
            &w,
            &t,
            &node_ips(),
            &allowed(&["eth1", "eth0", "eth1"]),
        );
        assert_eq!(names(&r), ["eth1", "eth0"]);
        // Flag interfaces that are missing or down are skipped; none left: unusable.
        let r = resolve_interfaces(
            ip("198.51.100.70"),
            &w,
            &t,
            &node_ips(),
            &allowed(&["bond0.100", "eth2", "eth1"]),
        );
        assert_eq!(names(&r), ["eth1"]);
        let r = resolve_interfaces(
            ip("198.51.100.70"),
            &w,
            &t,
            &node_ips(),
            &allowed(&["bond0.100", "eth2"]),
        );
        assert!(r.usable.is_empty());
        assert_eq!(r.unusable, [WantedInterface::Default]);
    }

    #[test]
    fn the_flag_restricts_named_interfaces() {
        let t = table();
        let a = ip("198.51.100.70");
        let r = resolve_interfaces(a, &want(false, &["eth1", "eth0"]), &t, &node_ips(), &[]);
        assert_eq!(names(&r), ["eth0", "eth1"]);
        let r = resolve_interfaces(
            a,
            &want(false, &["eth1", "eth0"]),
            &t,
            &node_ips(),
            &allowed(&["eth1"]),
        );
        assert_eq!(names(&r), ["eth1"]);
        assert_eq!(r.unusable, [WantedInterface::Named("eth0".into())]);
        // Down or missing named interfaces are not used, and are reported.
        let r = resolve_interfaces(a, &want(false, &["eth2", "nope"]), &t, &node_ips(), &[]);
        assert!(r.usable.is_empty());
        assert_eq!(
            r.unusable,
            [
                WantedInterface::Named("eth2".into()),
                WantedInterface::Named("nope".into())
            ]
        );
        // The default and a name together (two advertisements): each interface once, the
        // default first.
        let r = resolve_interfaces(
            ip("203.0.113.70"),
            &want(true, &["eth1", "eth0"]),
            &t,
            &node_ips(),
            &[],
        );
        assert_eq!(names(&r), ["eth0", "eth1"]);
        assert!(r.unusable.is_empty());
    }

    #[test]
    fn usable_again_depends_on_the_ips_that_wanted_it() {
        let t = table();
        let ips = |a: &[&str]| a.iter().map(|s| ip(s)).collect::<BTreeSet<_>>();
        let d = WantedInterface::Default;
        assert!(interface_usable(&d, &ips(&["203.0.113.70"]), &t, &[], &[]));
        assert!(!interface_usable(&d, &ips(&["192.0.2.70"]), &t, &[], &[]));
        let eth2 = WantedInterface::Named("eth2".into());
        assert!(!interface_usable(
            &eth2,
            &ips(&["192.0.2.70"]),
            &t,
            &[],
            &[]
        ));
        let eth1 = WantedInterface::Named("eth1".into());
        assert!(interface_usable(&eth1, &ips(&["192.0.2.70"]), &t, &[], &[]));
    }
}
