//! The lab's address plan: run ids, host names, namespaces, addresses, MACs, and the `ip`
//! commands that build the LAN.
//!
//! Owns every naming and numbering decision so tests can predict them. Pure: it never runs a
//! command, reads the clock or touches the filesystem; callers execute the argv lists it returns.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Most nodes a lab may have: node addresses run from .11 to .74, below the pools the tests use
/// (.100 and up) and the client (.200).
pub const MAX_NODES: usize = 64;
/// Port the API server listens on inside the control-plane namespace.
pub const API_PORT: u16 = 6443;
/// IPv4 address of the control-plane host on the LAN.
pub const CP_IPV4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// IPv6 address of the control-plane host on the LAN.
pub const CP_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x2);
/// Prefix length of the LAN's IPv4 subnet (198.51.100.0/24).
pub const LAN_PREFIX_V4: u8 = 24;
/// Prefix length of the LAN's IPv6 subnet (2001:db8::/64).
pub const LAN_PREFIX_V6: u8 = 64;
/// The dual-stack Service CIDRs handed to kube-apiserver.
pub const SERVICE_CIDRS: &str = "203.0.113.0/24,2001:db8:ffff::/112";
/// The first Service IP (the `kubernetes` Service), which must be in the serving cert.
pub const FIRST_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// Name of the bridge inside the LAN namespace.
pub const BRIDGE: &str = "br0";
/// Name of every host's LAN interface.
pub const HOST_IFACE: &str = "eth0";
/// Prefix of generated run ids (`flb` + 6 hex digits).
pub const RUN_ID_PREFIX: &str = "flb";
/// Most nodes a lab with real kubelets may have: each gets a /28 of [`POD_CIDR_V4`].
pub const MAX_KUBELET_NODES: usize = 8;
/// The IPv4 pod network of labs with real kubelets: node-k gets the k-th /28. The upper half of
/// 192.0.2.0/24 stays free for networks behind the lab's router.
pub const POD_CIDR_V4: &str = "192.0.2.0/25";
/// The IPv6 pod network: node-k gets `2001:db8:1:<k>::/64`.
pub const POD_CIDR_V6: &str = "2001:db8:1::/48";

/// Why a plan cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// The node count is outside `1..=MAX_NODES`.
    #[error("a lab needs between 1 and {MAX_NODES} nodes, not {0}")]
    NodeCount(usize),
    /// The lab name is not usable as a namespace prefix.
    #[error("invalid lab name {name:?}: {reason}")]
    InvalidId {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: IdProblem,
    },
    /// No host of that name exists in this lab.
    #[error("unknown host {0:?} (expected node-1..node-N, client, cp or lan)")]
    UnknownHost(String),
}

/// What is wrong with a lab name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdProblem {
    /// Empty or longer than 24 characters.
    Length,
    /// Contains something other than `a-z`, `0-9` and `-`.
    Charset,
    /// Does not start with a letter or ends with `-`.
    Edges,
}

impl IdProblem {
    /// A short, stable description.
    pub fn as_str(self) -> &'static str {
        match self {
            IdProblem::Length => "must be 1 to 24 characters",
            IdProblem::Charset => "may only contain a-z, 0-9 and '-'",
            IdProblem::Edges => "must start with a letter and not end with '-'",
        }
    }
}

impl std::fmt::Display for IdProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks that `id` can prefix namespace names (`<id>-node-1`, ...).
pub fn validate_id(id: &str) -> Result<(), PlanError> {
    let bad = |reason| {
        Err(PlanError::InvalidId {
            name: id.to_string(),
            reason,
        })
    };
    if id.is_empty() || id.len() > 24 {
        return bad(IdProblem::Length);
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad(IdProblem::Charset);
    }
    if !id.as_bytes()[0].is_ascii_lowercase() || id.ends_with('-') {
        return bad(IdProblem::Edges);
    }
    Ok(())
}

/// Formats a generated run id from three random bytes: `flb` + 6 lowercase hex digits.
pub fn format_run_id(random: [u8; 3]) -> String {
    format!(
        "{RUN_ID_PREFIX}{:02x}{:02x}{:02x}",
        random[0], random[1], random[2]
    )
}

/// True when `id` looks like a generated run id (`flb` + 6 hex digits).
pub fn is_generated_id(id: &str) -> bool {
    id.strip_prefix(RUN_ID_PREFIX).is_some_and(|hex| {
        hex.len() == 6
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// One host on the lab LAN (a network namespace with an `eth0` on the bridge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabHost {
    /// Host name as used by `exec` and as the Kubernetes node name: `node-1`, `client`, `cp`.
    pub name: String,
    /// Network namespace name: `<id>-<name>`.
    pub netns: String,
    /// IPv4 address of `eth0` (prefix [`LAN_PREFIX_V4`]).
    pub ipv4: Ipv4Addr,
    /// IPv6 address of `eth0` (prefix [`LAN_PREFIX_V6`]).
    pub ipv6: Ipv6Addr,
    /// Fixed, locally administered MAC of `eth0`, lowercase `02:fb:00:00:00:xx`.
    pub mac: String,
    /// Name of the veth end inside the LAN namespace, enslaved to `br0`.
    pub lan_port: String,
}

/// The pod subnets of node `k` (1-based) in a lab with real kubelets: the k-th /28 of
/// [`POD_CIDR_V4`] and `2001:db8:1:<k>::/64`. `None` beyond [`MAX_KUBELET_NODES`].
pub fn pod_subnets(k: usize) -> Option<(Ipv4Net, Ipv6Net)> {
    if k == 0 || k > MAX_KUBELET_NODES {
        return None;
    }
    let index = u8::try_from(k - 1).ok()?;
    let v4 = Ipv4Net {
        addr: Ipv4Addr::new(192, 0, 2, index * 16),
        prefix: 28,
    };
    let v6 = Ipv6Net {
        addr: Ipv6Addr::new(0x2001, 0xdb8, 1, u16::from(index) + 1, 0, 0, 0, 0),
        prefix: 64,
    };
    Some((v4, v6))
}

/// An IPv4 network (address and prefix length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv4Net {
    /// The network address.
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

/// An IPv6 network (address and prefix length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv6Net {
    /// The network address.
    pub addr: Ipv6Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::fmt::Display for Ipv6Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Ipv4Net {
    /// The `n`-th address of the network (the gateway is the first, `.1`).
    pub fn nth(&self, n: u8) -> Ipv4Addr {
        let [a, b, c, d] = self.addr.octets();
        Ipv4Addr::new(a, b, c, d.wrapping_add(n))
    }
}

/// Builds a host whose addresses end in `octet`: IPv4 `198.51.100.<octet>`, IPv6
/// `2001:db8::<octet written as hex digits>` (node-1 = .11 and ::11, so they read alike) and
/// MAC `02:fb:00:00:00:<octet in hex>`.
fn host(id: &str, name: &str, octet: u8) -> LabHost {
    let dec = u16::from(octet);
    // The IPv6 group shows the same decimal digits as the IPv4 octet (11 -> ::11).
    let group = (dec / 100) * 0x100 + ((dec / 10) % 10) * 0x10 + dec % 10;
    LabHost {
        name: name.to_string(),
        netns: format!("{id}-{name}"),
        ipv4: Ipv4Addr::new(198, 51, 100, octet),
        ipv6: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, group),
        mac: format!("02:fb:00:00:00:{octet:02x}"),
        lan_port: format!("v-{name}"),
    }
}

/// The complete address plan of one lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Run id, the prefix of every namespace.
    pub id: String,
    /// The control-plane host (etcd, kube-apiserver, kube-controller-manager).
    pub cp: LabHost,
    /// `node-1..node-N`.
    pub nodes: Vec<LabHost>,
    /// The client host, standing in for a machine elsewhere on the LAN.
    pub client: LabHost,
}

impl Plan {
    /// Plans a lab `id` with `nodes` nodes.
    pub fn new(id: &str, nodes: usize) -> Result<Plan, PlanError> {
        validate_id(id)?;
        if nodes == 0 || nodes > MAX_NODES {
            return Err(PlanError::NodeCount(nodes));
        }
        let nodes = (1..=nodes)
            // MAX_NODES keeps 10 + k well below 200, so the conversion cannot fail.
            .map(|k| {
                host(
                    id,
                    &format!("node-{k}"),
                    u8::try_from(10 + k).unwrap_or(u8::MAX),
                )
            })
            .collect();
        Ok(Plan {
            id: id.to_string(),
            cp: host(id, "cp", 2),
            nodes,
            client: host(id, "client", 200),
        })
    }

    /// Name of the LAN namespace holding `br0`.
    pub fn lan_netns(&self) -> String {
        format!("{}-lan", self.id)
    }

    /// Every host with an `eth0`: cp, the nodes, then the client.
    pub fn hosts(&self) -> impl Iterator<Item = &LabHost> {
        std::iter::once(&self.cp)
            .chain(self.nodes.iter())
            .chain(std::iter::once(&self.client))
    }

    /// Every namespace of the lab, LAN first (the order they are created in).
    pub fn namespaces(&self) -> Vec<String> {
        std::iter::once(self.lan_netns())
            .chain(self.hosts().map(|h| h.netns.clone()))
            .collect()
    }

    /// The host called `name` (`cp`, `client`, `node-k`); `lan` has no [`LabHost`].
    pub fn host(&self, name: &str) -> Option<&LabHost> {
        self.hosts().find(|h| h.name == name)
    }

    /// Namespace of `name`, including `lan`.
    pub fn netns(&self, name: &str) -> Result<String, PlanError> {
        if name == "lan" {
            return Ok(self.lan_netns());
        }
        self.host(name)
            .map(|h| h.netns.clone())
            .ok_or_else(|| PlanError::UnknownHost(name.to_string()))
    }

    /// Routes for a lab with real kubelets: in every node namespace, each other node's pod
    /// subnets via that node, and the Service CIDRs on `eth0` (hostNetwork pods reach the API
    /// server through the `kubernetes` Service, and a socket to an unroutable address fails
    /// before kube-proxy's DNAT could apply); in the client namespace, every pod subnet via its
    /// node (the direct path benchmarks compare against).
    pub fn pod_route_commands(&self) -> Vec<Vec<String>> {
        let mut cmds = Vec::new();
        let subnets: Vec<_> = (1..=self.nodes.len()).filter_map(pod_subnets).collect();
        let hosts = self.nodes.iter().chain(std::iter::once(&self.client));
        for h in hosts {
            let ns = h.netns.as_str();
            for (peer, (v4, v6)) in self.nodes.iter().zip(&subnets) {
                if peer.name == h.name {
                    continue;
                }
                let (v4, v6) = (v4.to_string(), v6.to_string());
                let (gw4, gw6) = (peer.ipv4.to_string(), peer.ipv6.to_string());
                cmds.push(argv(&["ip", "-n", ns, "route", "add", &v4, "via", &gw4]));
                cmds.push(argv(&[
                    "ip", "-n", ns, "-6", "route", "add", &v6, "via", &gw6,
                ]));
            }
            if h.name.starts_with("node-") {
                for cidr in SERVICE_CIDRS.split(',') {
                    cmds.push(argv(&[
                        "ip", "-n", ns, "route", "add", cidr, "dev", HOST_IFACE,
                    ]));
                }
            }
        }
        cmds
    }

    /// Static neighbour entries, one `ip -batch` script per host namespace: every other host's
    /// IPv4 and IPv6 address mapped to its MAC, `nud permanent`.
    ///
    /// Every namespace shares the host kernel's neighbour tables, whose dynamic entries are capped
    /// by the host's `gc_thresh3` (1,024 by default). Node-to-node membership traffic needs
    /// n x (n - 1) entries, 2,450 at 50 nodes; past the cap the kernel drops datagrams while
    /// `sendto` reports success. Permanent entries are not garbage-collected and do not count
    /// against the cap, so a large lab works without touching a host setting. LoadBalancer IPs
    /// never get an entry: they must still be resolved by ARP and NDP, which is what the speakers
    /// are tested on.
    pub fn neighbour_batches(&self) -> Vec<(String, String)> {
        self.hosts()
            .map(|h| {
                let script = self
                    .hosts()
                    .filter(|peer| peer.name != h.name)
                    .flat_map(|peer| {
                        [peer.ipv4.to_string(), peer.ipv6.to_string()].map(|addr| {
                            format!(
                                "neigh replace {addr} lladdr {} dev {HOST_IFACE} nud permanent\n",
                                peer.mac
                            )
                        })
                    })
                    .collect();
                (h.netns.clone(), script)
            })
            .collect()
    }

    /// The commands that build the LAN, in order. Each entry is an argv (program first).
    ///
    /// Veth pairs are created directly between two lab namespaces, so no interface ever
    /// appears in the host namespace.
    pub fn setup_commands(&self) -> Vec<Vec<String>> {
        let lan = self.lan_netns();
        let mut cmds = vec![
            argv(&["ip", "netns", "add", &lan]),
            argv(&["ip", "-n", &lan, "link", "set", "lo", "up"]),
            argv(&[
                "ip",
                "-n",
                &lan,
                "link",
                "add",
                BRIDGE,
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ]),
            argv(&["ip", "-n", &lan, "link", "set", BRIDGE, "up"]),
        ];
        for h in self.hosts() {
            cmds.extend(self.host_commands(h));
        }
        cmds
    }

    /// The commands that attach one host to the LAN.
    fn host_commands(&self, h: &LabHost) -> Vec<Vec<String>> {
        let lan = self.lan_netns();
        let ns = h.netns.as_str();
        let v4 = format!("{}/{LAN_PREFIX_V4}", h.ipv4);
        let v6 = format!("{}/{LAN_PREFIX_V6}", h.ipv6);
        let dad = format!("net.ipv6.conf.{HOST_IFACE}.accept_dad=0");
        let mut sysctls = vec!["ip", "netns", "exec", ns, "sysctl", "-q", "-w", &dad];
        if h.name.starts_with("node-") {
            // Nodes route for the Service VIPs kube-proxy may program; nothing else is changed.
            sysctls.push("net.ipv4.ip_forward=1");
        }
        vec![
            argv(&["ip", "netns", "add", ns]),
            argv(&["ip", "-n", ns, "link", "set", "lo", "up"]),
            argv(&[
                "ip",
                "link",
                "add",
                HOST_IFACE,
                "netns",
                ns,
                "address",
                &h.mac,
                "type",
                "veth",
                "peer",
                "name",
                &h.lan_port,
                "netns",
                &lan,
            ]),
            argv(&sysctls),
            argv(&["ip", "-n", ns, "addr", "add", &v4, "dev", HOST_IFACE]),
            argv(&[
                "ip", "-n", ns, "addr", "add", &v6, "dev", HOST_IFACE, "nodad",
            ]),
            argv(&["ip", "-n", ns, "link", "set", HOST_IFACE, "up"]),
            argv(&[
                "ip",
                "-n",
                &lan,
                "link",
                "set",
                &h.lan_port,
                "master",
                BRIDGE,
                "up",
            ]),
        ]
    }
}

/// Picks out of `listed` (names from `ip netns list`) the namespaces that belong to lab `id`:
/// `<id>-lan`, `<id>-cp`, `<id>-client`, `<id>-node-<digits>` and, with a router,
/// `<id>-router` and `<id>-rclient`.
pub fn namespaces_of(id: &str, listed: &[String]) -> Vec<String> {
    listed
        .iter()
        .filter(|name| {
            name.strip_prefix(id)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|suffix| {
                    matches!(suffix, "lan" | "cp" | "client" | "router" | "rclient")
                        || suffix
                            .strip_prefix("node-")
                            .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
                })
        })
        .cloned()
        .collect()
}

/// The lab id a namespace name belongs to, if it looks like one of a generated-id lab's.
pub fn generated_id_of_netns(netns: &str) -> Option<&str> {
    let (id, _) = netns.split_once('-')?;
    (is_generated_id(id) && !namespaces_of(id, &[netns.to_string()]).is_empty()).then_some(id)
}

/// Parses `ip netns list` output (`name` or `name (id: 3)` per line) into names.
pub fn parse_netns_list(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_numbers_hosts_predictably() {
        let plan = Plan::new("flb0a1b2c", 2).expect("valid plan");
        let n1 = &plan.nodes[0];
        assert_eq!(n1.name, "node-1");
        assert_eq!(n1.netns, "flb0a1b2c-node-1");
        assert_eq!(n1.ipv4, Ipv4Addr::new(198, 51, 100, 11));
        assert_eq!(n1.ipv6.to_string(), "2001:db8::11");
        assert_eq!(n1.mac, "02:fb:00:00:00:0b");
        assert_eq!(plan.nodes[1].ipv4.to_string(), "198.51.100.12");
        assert_eq!(plan.cp.ipv4, CP_IPV4);
        assert_eq!(plan.cp.ipv6, CP_IPV6);
        assert_eq!(plan.client.ipv4.to_string(), "198.51.100.200");
        assert_eq!(plan.client.ipv6.to_string(), "2001:db8::200");
        assert_eq!(plan.client.mac, "02:fb:00:00:00:c8");
        assert_eq!(
            plan.namespaces(),
            [
                "flb0a1b2c-lan",
                "flb0a1b2c-cp",
                "flb0a1b2c-node-1",
                "flb0a1b2c-node-2",
                "flb0a1b2c-client"
            ]
        );
    }

    #[test]
    fn every_address_and_mac_is_unique_at_max_size() {
        let plan = Plan::new("x", MAX_NODES).expect("valid plan");
        let hosts: Vec<_> = plan.hosts().collect();
        for (i, a) in hosts.iter().enumerate() {
            assert!(
                a.lan_port.len() <= 15,
                "{} too long for an ifname",
                a.lan_port
            );
            for b in &hosts[i + 1..] {
                assert_ne!(a.ipv4, b.ipv4);
                assert_ne!(a.ipv6, b.ipv6);
                assert_ne!(a.mac, b.mac);
                assert_ne!(a.lan_port, b.lan_port);
            }
        }
    }

    #[test]
    fn node_count_and_names_are_validated() {
        assert_eq!(Plan::new("x", 0), Err(PlanError::NodeCount(0)));
        assert_eq!(
            Plan::new("x", MAX_NODES + 1),
            Err(PlanError::NodeCount(MAX_NODES + 1))
        );
        for (bad, why) in [
            ("", IdProblem::Length),
            ("a".repeat(25).as_str(), IdProblem::Length),
            ("Lab", IdProblem::Charset),
            ("a_b", IdProblem::Charset),
            ("1lab", IdProblem::Edges),
            ("lab-", IdProblem::Edges),
        ] {
            assert_eq!(
                validate_id(bad),
                Err(PlanError::InvalidId {
                    name: bad.to_string(),
                    reason: why
                })
            );
        }
        assert!(validate_id("my-lab-2").is_ok());
    }

    #[test]
    fn host_lookup() {
        let plan = Plan::new("t", 3).expect("valid plan");
        assert_eq!(plan.netns("lan").as_deref(), Ok("t-lan"));
        assert_eq!(plan.netns("node-3").as_deref(), Ok("t-node-3"));
        assert_eq!(plan.netns("client").as_deref(), Ok("t-client"));
        assert_eq!(
            plan.netns("node-4"),
            Err(PlanError::UnknownHost("node-4".into()))
        );
    }

    #[test]
    fn run_ids() {
        assert_eq!(format_run_id([0x0a, 0xff, 0x00]), "flb0aff00");
        assert!(is_generated_id("flb0aff00"));
        assert!(!is_generated_id("flb0aff0"));
        assert!(!is_generated_id("flb0aff0g"));
        assert!(!is_generated_id("lab0aff00"));
        assert_eq!(
            generated_id_of_netns("flb0aff00-node-12"),
            Some("flb0aff00")
        );
        assert_eq!(generated_id_of_netns("flb0aff00-lan"), Some("flb0aff00"));
        assert_eq!(generated_id_of_netns("flb0aff00-other"), None);
        assert_eq!(generated_id_of_netns("mylab-lan"), None);
    }

    #[test]
    fn namespaces_of_matches_only_that_lab() {
        let listed: Vec<String> = [
            "a-lan",
            "a-cp",
            "a-node-1",
            "a-node-12",
            "a-client",
            "a-node-",
            "a-node-x",
            "a-node-lan",
            "ab-lan",
            "a",
            "other",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            namespaces_of("a", &listed),
            ["a-lan", "a-cp", "a-node-1", "a-node-12", "a-client"]
        );
        assert_eq!(namespaces_of("a-node", &listed), ["a-node-lan"]);
    }

    #[test]
    fn pod_subnets_are_disjoint_and_inside_the_documentation_ranges() {
        let all: Vec<_> = (1..=MAX_KUBELET_NODES).filter_map(pod_subnets).collect();
        assert_eq!(all.len(), MAX_KUBELET_NODES);
        assert_eq!(all[0].0.to_string(), "192.0.2.0/28");
        assert_eq!(all[0].1.to_string(), "2001:db8:1:1::/64");
        assert_eq!(all[7].0.to_string(), "192.0.2.112/28");
        assert_eq!(all[7].0.nth(1).to_string(), "192.0.2.113");
        // Every /28 lies in the lower half of 192.0.2.0/24 and no two share an address.
        for (i, (v4, v6)) in all.iter().enumerate() {
            assert_eq!(v4.addr.octets()[..3], [192, 0, 2]);
            assert!(v4.addr.octets()[3] + 15 < 128, "{v4}");
            assert_eq!(v6.addr.segments()[..3], [0x2001, 0xdb8, 1]);
            for (w4, w6) in &all[i + 1..] {
                assert_ne!(v4.addr, w4.addr);
                assert_ne!(v6.addr, w6.addr);
            }
        }
        assert_eq!(pod_subnets(0), None);
        assert_eq!(pod_subnets(MAX_KUBELET_NODES + 1), None);
    }

    #[test]
    fn pod_routes_reach_every_other_node_and_stay_in_the_lab() {
        let plan = Plan::new("t", 3).expect("plan");
        let cmds = plan.pod_route_commands();
        let on = |ns: &str| -> Vec<String> {
            cmds.iter()
                .filter(|c| c[2] == ns)
                .map(|c| c[3..].join(" "))
                .collect()
        };
        let n1 = on("t-node-1");
        assert!(
            n1.contains(&"route add 192.0.2.16/28 via 198.51.100.12".to_string()),
            "{n1:?}"
        );
        assert!(
            n1.contains(&"-6 route add 2001:db8:1:3::/64 via 2001:db8::13".to_string()),
            "{n1:?}"
        );
        assert!(
            n1.contains(&"route add 203.0.113.0/24 dev eth0".to_string()),
            "{n1:?}"
        );
        assert!(
            !n1.iter().any(|c| c.contains("192.0.2.0/28")),
            "no route to its own pods: {n1:?}"
        );
        let client = on("t-client");
        assert_eq!(client.len(), 6, "{client:?}");
        assert!(
            !client.iter().any(|c| c.contains("203.0.113.0/24")),
            "{client:?}"
        );
        assert!(cmds.iter().all(|c| c[..2] == ["ip", "-n"]));
    }

    #[test]
    fn neighbour_entries_cover_every_other_host_and_no_service_ip() {
        let plan = Plan::new("t", 3).expect("plan");
        let batches = plan.neighbour_batches();
        assert_eq!(batches.len(), 5, "cp, three nodes, client");
        let (ns, script) = &batches[1];
        assert_eq!(ns, "t-node-1");
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines.len(), 8, "four other hosts, two families: {lines:?}");
        assert!(lines.contains(
            &"neigh replace 198.51.100.12 lladdr 02:fb:00:00:00:0c dev eth0 nud permanent"
        ));
        assert!(lines.contains(
            &"neigh replace 2001:db8::200 lladdr 02:fb:00:00:00:c8 dev eth0 nud permanent"
        ));
        assert!(!script.contains("198.51.100.11 "), "no entry for itself");
        for (_, script) in &batches {
            for line in script.lines() {
                let addr: std::net::IpAddr =
                    line.split(' ').nth(2).expect("addr").parse().expect("ip");
                assert!(
                    plan.hosts().any(|h| addr == h.ipv4 || addr == h.ipv6),
                    "{line}"
                );
            }
        }
    }

    #[test]
    fn parses_ip_netns_list() {
        let out = "flb1-cp (id: 3)\nflb1-lan (id: 0)\nplain\n\n";
        assert_eq!(parse_netns_list(out), ["flb1-cp", "flb1-lan", "plain"]);
    }

    #[test]
    fn setup_never_creates_links_outside_lab_namespaces() {
        let plan = Plan::new("t", 2).expect("valid plan");
        let cmds = plan.setup_commands();
        let lab_ns = plan.namespaces();
        for c in &cmds {
            assert_eq!(c[0], "ip");
            let joined = c.join(" ");
            if c[1] == "netns" {
                assert!(lab_ns.contains(&c[3]), "{joined}");
                continue;
            }
            // Every other command either targets a lab namespace with -n, or creates a veth
            // whose both ends are placed in lab namespaces.
            if c[1] == "-n" {
                assert!(lab_ns.contains(&c[2]), "{joined}");
            } else {
                assert_eq!(&c[1..3], ["link", "add"], "{joined}");
                let netns_args: Vec<_> = c
                    .windows(2)
                    .filter(|w| w[0] == "netns")
                    .map(|w| w[1].clone())
                    .collect();
                assert_eq!(netns_args.len(), 2, "{joined}");
                assert!(netns_args.iter().all(|n| lab_ns.contains(n)), "{joined}");
            }
        }
        // Namespaces are created before anything is put in them.
        let first_use = |ns: &str| cmds.iter().position(|c| c.iter().any(|a| a == ns));
        for ns in &lab_ns {
            let add = cmds
                .iter()
                .position(|c| c[..3] == ["ip", "netns", "add"] && &c[3] == ns);
            assert_eq!(add, first_use(ns), "{ns}");
        }
        let node_sysctl = cmds
            .iter()
            .find(|c| c.contains(&"t-node-1".to_string()) && c.contains(&"sysctl".to_string()))
            .expect("node sysctl");
        assert!(node_sysctl.contains(&"net.ipv4.ip_forward=1".to_string()));
        let client_sysctl = cmds
            .iter()
            .find(|c| c.contains(&"t-client".to_string()) && c.contains(&"sysctl".to_string()))
            .expect("client sysctl");
        assert!(!client_sysctl.contains(&"net.ipv4.ip_forward=1".to_string()));
    }
}
