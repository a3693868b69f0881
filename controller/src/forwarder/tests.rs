//! Unit and property tests of forwarder mode's decisions.

use super::*;
use proptest::prelude::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn node(name: &str, internal: &[&str]) -> NodeView {
    NodeView {
        name: name.into(),
        internal: internal.iter().map(|a| ip(a)).collect(),
        external: Vec::new(),
        labels: StrMap::default(),
        ready: true,
        deleting: false,
        to_be_deleted: false,
    }
}

fn pool(name: &str) -> NodePool {
    NodePool {
        name: name.into(),
        selector: None,
        address_type: NodeAddressType::InternalIP,
        cidrs: Vec::new(),
        k3s_labels: false,
        forwarding: ferrolb_crds::NodeForwarding::KubeProxy,
    }
}

fn svc(key: &str, created: i64, port: u16) -> FwdService {
    FwdService {
        key: key.into(),
        created: Some(created),
        pool: "edge".into(),
        ports: vec![(Protocol::Tcp, port)],
        families: vec![Family::V4],
        require_dual: false,
        etp_local: false,
        labels: StrMap::default(),
    }
}

/// A three-node cluster, dual-stack addresses, speakers everywhere, every port checked free.
#[derive(Debug, Clone)]
struct World {
    nodes: BTreeMap<String, NodeView>,
    reports: BTreeMap<String, NodeReport>,
    speakers: BTreeSet<String>,
    pools: BTreeMap<String, NodePool>,
    endpoints: BTreeMap<SvcKey, BTreeSet<String>>,
    holders: Vec<Holder>,
    node_ports: BTreeMap<(Protocol, u16), BTreeSet<SvcKey>>,
    block: bool,
}

impl World {
    fn new() -> World {
        let mut nodes = BTreeMap::new();
        for k in 1..=3 {
            let n = node(
                &format!("node-{k}"),
                &[&format!("198.51.100.1{k}"), &format!("2001:db8::1{k}")],
            );
            nodes.insert(n.name.to_string(), n);
        }
        let speakers = nodes.keys().cloned().collect();
        World {
            nodes,
            reports: BTreeMap::new(),
            speakers,
            pools: BTreeMap::from([("edge".to_string(), pool("edge"))]),
            endpoints: BTreeMap::new(),
            holders: Vec::new(),
            node_ports: BTreeMap::new(),
            block: false,
        }
    }

    /// Every node's speaker checked these ports (both families) and found them free.
    fn checked(&mut self, ports: &[(Protocol, u16)]) {
        for n in self.nodes.keys() {
            let r = self.reports.entry(n.clone()).or_default();
            for (proto, port) in ports {
                for family in Family::ALL {
                    r.checked.insert(PortKey {
                        family,
                        protocol: *proto,
                        port: *port,
                    });
                }
            }
        }
    }

    fn unavailable(&mut self, node: &str, port: u16, detail: &str) {
        let r = self.reports.entry(node.into()).or_default();
        for family in Family::ALL {
            let key = PortKey {
                family,
                protocol: Protocol::Tcp,
                port,
            };
            r.checked.insert(key);
            r.unavailable
                .insert(key, ("HostSocket".into(), detail.into()));
        }
    }

    fn decide(&self, services: &[FwdService]) -> BTreeMap<SvcKey, Outcome> {
        decide(Inputs {
            nodes: &self.nodes,
            reports: &self.reports,
            speakers: &self.speakers,
            pools: &self.pools,
            services,
            endpoints: &self.endpoints,
            holders: &self.holders,
            node_ports: &self.node_ports,
            block_node_port_shadowing: self.block,
        })
    }
}

fn one(w: &World, s: FwdService) -> Outcome {
    let key = s.key.clone();
    w.decide(&[s]).remove(&key).expect("an outcome per Service")
}

#[test]
fn every_healthy_node_is_published_in_family_order() {
    let mut w = World::new();
    w.checked(&[(Protocol::Tcp, 443)]);
    let mut s = svc("shop/web", 1, 443);
    s.families = vec![Family::V6, Family::V4];
    let o = one(&w, s);
    assert_eq!(o.reason, Reason::AllNodes);
    assert_eq!(
        o.ingress,
        [
            "2001:db8::11",
            "2001:db8::12",
            "2001:db8::13",
            "198.51.100.11",
            "198.51.100.12",
            "198.51.100.13"
        ]
        .map(ip)
    );
    assert_eq!(o.published, ["node-1", "node-2", "node-3"]);
    assert_eq!(
        o.message,
        "published on node-1, node-2, node-3 (InternalIP)"
    );
}

#[test]
fn nothing_is_published_before_the_speakers_checked_the_ports() {
    let mut w = World::new();
    let o = one(&w, svc("shop/web", 1, 443));
    assert_eq!(o.reason, Reason::NoEligibleNodes);
    assert!(o.ingress.is_empty());
    assert!(
        o.message
            .contains("node-1 (port check pending for 443/TCP)"),
        "{}",
        o.message
    );
    // One node checked: it alone is published, the Service says it is partial.
    w.reports.insert("node-2".into(), NodeReport::default());
    w.reports
        .get_mut("node-2")
        .expect("r")
        .checked
        .insert(PortKey {
            family: Family::V4,
            protocol: Protocol::Tcp,
            port: 443,
        });
    let o = one(&w, svc("shop/web", 1, 443));
    assert_eq!(o.published, ["node-2"]);
    assert_eq!(o.reason, Reason::PartiallyAvailable);
}

#[test]
fn a_host_socket_leaves_its_node_out_and_the_message_names_it() {
    let mut w = World::new();
    w.checked(&[(Protocol::Tcp, 443)]);
    w.unavailable("node-2", 443, "a host process listens on 0.0.0.0:443");
    let o = one(&w, svc("shop/web", 1, 443));
    assert_eq!(o.reason, Reason::PartiallyAvailable);
    assert_eq!(o.published, ["node-1", "node-3"]);
    assert_eq!(o.ingress, ["198.51.100.11", "198.51.100.13"].map(ip));
    assert_eq!(
        o.message,
        "published on node-1, node-3 (InternalIP); left out: node-2 (port 443/TCP unavailable: a host process listens on 0.0.0.0:443)"
    );
    assert_eq!(o.conflicts().count(), 1);
    assert_eq!(o.conflicts().next().map(|c| c.reason()), Some("HostSocket"));
}

#[test]
fn every_node_conflicted_is_a_port_conflict() {
    let mut w = World::new();
    w.checked(&[(Protocol::Tcp, 22)]);
    for n in ["node-1", "node-2", "node-3"] {
        w.unavailable(n, 22, "port 22 is deny-listed (ssh)");
    }
    let o = one(&w, svc("shop/ssh", 1, 22));
    assert_eq!(o.reason, Reason::PortConflict);
    assert!(!o.reason.status());
    assert!(o.ingress.is_empty());
}

#[test]
fn the_older_service_keeps_a_contested_port_and_the_younger_says_why() {
    let mut w = World::new();
    w.checked(&[(Protocol::Tcp, 443)]);
    let out = w.decide(&[svc("b/younger", 20, 443), svc("a/traefik", 10, 443)]);
    let old = &out["a/traefik"];
    let young = &out["b/younger"];
    assert_eq!(old.reason, Reason::AllNodes);
    assert_eq!(old.published.len(), 3);
    assert_eq!(young.reason, Reason::PortConflict);
    assert!(young.ingress.is_empty());
    assert!(
        young
            .message
            .contains("node-1 (port 443/TCP unavailable: Service a/traefik holds it)"),
        "{}",
        young.message
    );
    // Another port is no conflict at all.
    let out = w.decide(&[svc("a/traefik", 10, 443), svc("b/other", 20, 8443)]);
    assert_eq!(
        out["b/other"].reason,
        Reason::NoEligibleNodes,
        "8443 is unchecked"
    );
}

#[test]
fn external_ips_of_other_services_are_held() {
    let mut w = World::new();
    w.checked(&[(Protocol::Tcp, 80)]);
    w.holders.push(Holder {
        key: "legacy/ext".into(),
        ips: vec![ip("198.51.100.12")],
        ports: vec![(Protocol::Tcp, 80)],
    });
    let o = one(&w, svc("shop/web", 1, 80));
    assert_eq!(o.published, ["node-1", "node-3"]);
    assert!(
        o.message.contains("Service legacy/ext holds it"),
        "{}",
        o.message
    );
}

#[test]
fn unhealthy_nodes_are_left_out_with_their_reason() {
    let mut w = World::new();
    w.checked(&[(Protocol::Tcp, 80)]);
    w.nodes.get_mut("node-1").expect("n").ready = false;
    w.nodes.get_mut("node-2").expect("n").labels = StrMap::from_pairs([(nodes::EXCLUDE_LABEL, "")]);
    w.speakers.remove("node-3");
    let o = one(&w, svc("shop/web", 1, 80));
    assert_eq!(o.reason, Reason::NoEligibleNodes);
    assert_eq!(
        o.left_out
            .iter()
            .map(|(n, l)| (n.as_str(), l.clone()))
            .collect::<Vec<_>>(),
        [
            ("node-1", LeftOut::NotReady),
            ("node-2", LeftOut::Excluded),
            ("node-3", LeftOut::NoSpeaker),
        ]
    );
    // Not Ready and excluded are not the Service's problem; a missing speaker is.
    w.speakers.insert("node-3".into());
    let o = one(&w, svc("shop/web", 1, 80));
    assert_eq!(o.reason, Reason::AllNodes);
    assert_eq!(o.published, ["node-3"]);
}

#[test]
fn local_policy_publishes_only_endpoint_nodes() {
    let mut w = World::new();
    w.checked(&[(Protocol::Tcp, 80)]);
    let mut s = svc("shop/web", 1, 80);
    s.etp_local = true;
    w.endpoints
        .insert("shop/web".into(), BTreeSet::from(["node-2".to_string()]));
    let o = one(&w, s.clone());
    assert_eq!(o.published, ["node-2"]);
    assert_eq!(o.reason, Reason::AllNodes, "no endpoint is not a fault");
    w.endpoints.clear();
    let o = one(&w, s);
    assert_eq!(o.reason, Reason::NoEligibleNodes);
    assert!(o.ingress.is_empty());
}

#[test]
fn address_types_cidrs_and_missing_families() {
    let mut w = World::new();
    w.checked(&[(Protocol::Tcp, 80)]);
    w.nodes.get_mut("node-1").expect("n").external = vec![ip("203.0.113.50")];
    let mut s = svc("shop/web", 1, 80);
    s.families = vec![Family::V4, Family::V6];
    s.require_dual = true;

    w.pools.get_mut("edge").expect("p").address_type = NodeAddressType::ExternalIP;
    let o = one(&w, s.clone());
    assert_eq!(o.ingress, [ip("203.0.113.50")]);
    assert_eq!(o.published, ["node-1"]);
    assert_eq!(o.missing_families, [Family::V6]);
    assert_eq!(o.reason, Reason::PartiallyAvailable);
    assert!(
        o.message.contains("no published node has an IPv6 address"),
        "{}",
        o.message
    );

    w.pools.get_mut("edge").expect("p").address_type = NodeAddressType::PreferExternalIP;
    let o = one(&w, s.clone());
    assert_eq!(o.published, ["node-1", "node-2", "node-3"]);
    assert!(o.ingress.contains(&ip("203.0.113.50")));
    assert!(
        !o.ingress.contains(&ip("198.51.100.11")),
        "node-1 prefers its ExternalIP"
    );
    assert!(
        o.ingress.contains(&ip("2001:db8::11")),
        "but has no external IPv6"
    );

    let p = w.pools.get_mut("edge").expect("p");
    p.address_type = NodeAddressType::InternalIP;
    p.cidrs = vec![ferrolb_allocator::parse_pool_entry("2001:db8::/64").expect("cidr")];
    let o = one(&w, s);
    assert_eq!(
        o.ingress,
        ["2001:db8::11", "2001:db8::12", "2001:db8::13"].map(ip)
    );
    assert_eq!(o.missing_families, [Family::V4]);
}

#[test]
fn ipvs_anywhere_refuses_everything() {
    let mut w = World::new();
    w.checked(&[(Protocol::Tcp, 80)]);
    w.reports.get_mut("node-3").expect("r").ipvs = true;
    let o = one(&w, svc("shop/web", 1, 80));
    assert_eq!(o.reason, Reason::UnsupportedProxyMode);
    assert!(o.ingress.is_empty());
    assert!(o.message.contains("kube-ipvs0 on node-3"), "{}", o.message);
    // A pool the speakers forward (ipMode: Proxy) is left alone by IPVS.
    w.pools.get_mut("edge").expect("p").forwarding = ferrolb_crds::NodeForwarding::Speaker;
    let o = one(&w, svc("shop/web", 1, 80));
    assert_eq!(o.reason, Reason::AllNodes);
    assert_eq!(o.ip_mode, "Proxy");
    assert!(
        o.message.contains("forwarded by the speakers"),
        "{}",
        o.message
    );
}

#[test]
fn node_port_shadowing_warns_or_blocks() {
    let mut w = World::new();
    w.checked(&[(Protocol::Tcp, 30080)]);
    w.node_ports.insert(
        (Protocol::Tcp, 30080),
        BTreeSet::from([SvcKey::from("other/np")]),
    );
    let o = one(&w, svc("shop/web", 1, 30080));
    assert_eq!(o.reason, Reason::AllNodes);
    assert!(
        o.message.contains("nodePort of Service other/np"),
        "{}",
        o.message
    );
    w.block = true;
    let o = one(&w, svc("shop/web", 1, 30080));
    assert_eq!(o.reason, Reason::PortConflict);
    assert!(o.conflicts().all(|c| c.reason() == "NodePort"));
}

#[test]
fn k3s_labels_allow_list_and_pools() {
    let mut w = World::new();
    w.checked(&[(Protocol::Tcp, 80)]);
    w.pools.get_mut("edge").expect("p").k3s_labels = true;
    // No node labelled: every node serves.
    assert_eq!(one(&w, svc("shop/web", 1, 80)).published.len(), 3);
    w.nodes.get_mut("node-1").expect("n").labels =
        StrMap::from_pairs([(nodes::K3S_ENABLELB, "true"), (nodes::K3S_LBPOOL, "a")]);
    w.nodes.get_mut("node-2").expect("n").labels =
        StrMap::from_pairs([(nodes::K3S_ENABLELB, "true"), (nodes::K3S_LBPOOL, "b")]);
    assert_eq!(
        one(&w, svc("shop/web", 1, 80)).published,
        ["node-1", "node-2"]
    );
    let mut s = svc("shop/web", 1, 80);
    s.labels = StrMap::from_pairs([(nodes::K3S_LBPOOL, "b")]);
    assert_eq!(one(&w, s).published, ["node-2"]);
    // A pool that does not honour them ignores them.
    w.pools.get_mut("edge").expect("p").k3s_labels = false;
    assert_eq!(one(&w, svc("shop/web", 1, 80)).published.len(), 3);
}

#[test]
fn a_missing_pool_is_said_not_crashed() {
    let w = World::new();
    let mut s = svc("shop/web", 1, 80);
    s.pool = "gone".into();
    let o = one(&w, s);
    assert_eq!(o.reason, Reason::NoEligibleNodes);
    assert_eq!(o.message, "node pool gone does not exist");
}

prop_compose! {
    fn arb_world()(
        ready in proptest::collection::vec(any::<bool>(), 4),
        speaker in proptest::collection::vec(any::<bool>(), 4),
        busy in proptest::collection::vec(proptest::option::of(0u16..4), 4),
        shared_ip in any::<bool>(),
    ) -> World {
        let mut w = World::new();
        w.nodes.insert("node-4".into(), node("node-4", &[if shared_ip { "198.51.100.11" } else { "198.51.100.14" }]));
        w.speakers.insert("node-4".into());
        let ports: Vec<(Protocol, u16)> = (0..4).map(|p| (Protocol::Tcp, 8000 + p)).collect();
        w.checked(&ports);
        for (i, name) in ["node-1", "node-2", "node-3", "node-4"].iter().enumerate() {
            w.nodes.get_mut(*name).expect("n").ready = ready[i];
            if !speaker[i] {
                w.speakers.remove(*name);
            }
            if let Some(p) = busy[i] {
                w.unavailable(name, 8000 + p, "busy");
            }
        }
        w
    }
}

fn arb_services() -> impl Strategy<Value = Vec<FwdService>> {
    proptest::collection::vec((0i64..5, 0u16..4, any::<bool>()), 1..6).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (created, port, dual))| {
                let mut s = svc(&format!("ns/s{i}"), created, 8000 + port);
                if dual {
                    s.families = vec![Family::V4, Family::V6];
                }
                s
            })
            .collect()
    })
}

proptest! {
    /// No address and port is ever published twice, whatever the Services want.
    #[test]
    fn no_address_and_port_is_published_twice(w in arb_world(), services in arb_services()) {
        let out = w.decide(&services);
        let mut seen = BTreeSet::new();
        for s in &services {
            for ip in &out[&s.key].ingress {
                for (proto, port) in &s.ports {
                    prop_assert!(seen.insert((*ip, *proto, *port)), "{ip} {port} twice");
                }
            }
        }
    }

    /// Every published address belongs to a Ready node with a speaker that checked the port free.
    #[test]
    fn only_healthy_checked_nodes_are_published(w in arb_world(), services in arb_services()) {
        let out = w.decide(&services);
        for s in &services {
            let o = &out[&s.key];
            for n in &o.published {
                let node = &w.nodes[n];
                prop_assert!(node.ready && w.speakers.contains(n));
                for (proto, port) in &s.ports {
                    let key = PortKey { family: Family::V4, protocol: *proto, port: *port };
                    prop_assert!(!w.reports[n].unavailable.contains_key(&key));
                }
            }
            for ip in &o.ingress {
                prop_assert!(o.published.iter().any(|n| w.nodes[n].internal.contains(ip)));
            }
            prop_assert_eq!(o.reason.status(), !o.ingress.is_empty());
        }
    }

    /// The answer does not depend on the order Services are listed in.
    #[test]
    fn order_of_input_does_not_matter(w in arb_world(), services in arb_services()) {
        let mut reversed = services.clone();
        reversed.reverse();
        prop_assert_eq!(w.decide(&services), w.decide(&reversed));
    }

    /// A Service never loses a node to a younger one: adding a younger Service changes nothing
    /// for the older ones.
    #[test]
    fn younger_services_never_take_from_older(w in arb_world(), services in arb_services()) {
        let before = w.decide(&services);
        let mut more = services.clone();
        let mut young = svc("zz/young", 100, 8000);
        young.families = vec![Family::V4, Family::V6];
        more.push(young);
        let after = w.decide(&more);
        for s in &services {
            prop_assert_eq!(&before[&s.key], &after[&s.key]);
        }
    }
}
