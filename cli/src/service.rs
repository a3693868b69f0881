//! `trace svc/NAME` without rules, and the cluster half of it with rules: a Service's external IPs
//! and the pool of each, who announces them, its ports (port → nodePort → targetPort), its
//! endpoints (ready or not, on which node), and what its `externalTrafficPolicy` means for each
//! node. Every step says what it checked and, when something is wrong, what to do. Pure over a
//! [`Snapshot`].

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use serde::Serialize;

use crate::findings::{Finding, Severity};
use crate::rules::{Family, Net, Proto, Ruleset};
use ferrolb_crds::conditions::FORWARDER_READY;

use crate::snapshot::{
    self, ANNOUNCED, BgpSessionView, BgpView, Snapshot, adv_covers, endpoints, ingress_ips,
    ip_mode, ip_source, is_ours, node_ready, pool_of, service_condition, speaker_pods,
};
use crate::walk::check::SliceEndpoint;
use crate::walk::{self, Origin, Packet, Trace, WalkOptions};

/// One Service port, followed through to the pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortMap {
    /// The port's name ("" when unnamed).
    pub name: String,
    /// Protocol.
    pub protocol: String,
    /// The Service port.
    pub port: u16,
    /// The node port, when allocated.
    pub node_port: Option<u16>,
    /// The target port as the Service writes it (a number or a pod port's name).
    pub target_port: String,
    /// The ports the EndpointSlices give for it.
    pub endpoint_ports: Vec<u16>,
}

/// An external IP and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpInfo {
    /// The IP.
    pub ip: IpAddr,
    /// The pool whose addresses hold it, or the node pool that published it.
    pub pool: Option<String>,
    /// Forwarder mode: the node whose own address it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Forwarder mode: the type of that address (`InternalIP`, `ExternalIP`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_type: Option<String>,
    /// `ipMode` in the Service's status (`VIP`; `Proxy` when the speakers forward).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_mode: Option<String>,
}

/// Everything `trace` found about a Service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceReport {
    /// `namespace/name`.
    pub service: String,
    /// `spec.type`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `Cluster` or `Local`.
    pub external_traffic_policy: String,
    /// External IPs.
    pub ips: Vec<IpInfo>,
    /// Nodes announcing them (from the `ferrolb.io/Announced` condition).
    pub announcers: Vec<String>,
    /// Forwarder mode: the nodes whose addresses are published, in the status's order.
    pub published_nodes: Vec<String>,
    /// BGP mode: the nodes announcing any of the IPs on at least one session (from the
    /// BGPSessionStates).
    pub advertisers: Vec<String>,
    /// BGP mode: per external IP whose pool a BGPAdvertisement covers, the advertisements, the
    /// sessions the speakers report and whether each announces the IP.
    pub bgp: Vec<BgpView>,
    /// Ports.
    pub ports: Vec<PortMap>,
    /// Endpoints (for the first traced port).
    pub endpoints: Vec<SliceEndpoint>,
    /// The steps, in the order a packet meets them.
    pub steps: Vec<Finding>,
}

fn pods_selector(s: &Service) -> String {
    s.spec
        .as_ref()
        .and_then(|sp| sp.selector.as_ref())
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "(no selector)".into())
}

fn port_matches(p: &ServicePort, want: &str) -> bool {
    p.name.as_deref() == Some(want) || p.port.to_string() == want
}

/// The ports traced: all, or the one `--port` names (number or name).
pub fn ports(svc: &Service, snap: &Snapshot, want: Option<&str>) -> Vec<PortMap> {
    let mut out = Vec::new();
    for p in svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
    {
        if want.is_some_and(|w| !port_matches(p, w)) {
            continue;
        }
        let name = p.name.clone().unwrap_or_default();
        let eps = endpoints(snap, svc, Some(&name));
        let mut endpoint_ports: Vec<u16> = eps.iter().map(|e| e.port).collect();
        endpoint_ports.sort_unstable();
        endpoint_ports.dedup();
        out.push(PortMap {
            name,
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            port: u16::try_from(p.port).unwrap_or(0),
            node_port: p.node_port.and_then(|n| u16::try_from(n).ok()),
            target_port: p.target_port.as_ref().map_or_else(
                || p.port.to_string(),
                |t| match t {
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => {
                        i.to_string()
                    }
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => {
                        s.clone()
                    }
                },
            ),
            endpoint_ports,
        });
    }
    out
}

/// The endpoints kube-proxy on `node` uses for traffic from outside to an external IP: with
/// `Local` policy the node's own, else all.
pub fn expected_for_node(
    eps: &[SliceEndpoint],
    local: bool,
    node: Option<&str>,
) -> Vec<SliceEndpoint> {
    eps.iter()
        .filter(|e| !local || (node.is_some() && e.node.as_deref() == node))
        .cloned()
        .collect()
}

/// The report for Service `ns/name`; `None` when the snapshot does not have it.
pub fn report(snap: &Snapshot, ns: &str, name: &str, port: Option<&str>) -> Option<ServiceReport> {
    let svc = snap.services.iter().find(|s| {
        s.metadata.namespace.as_deref() == Some(ns) && s.metadata.name.as_deref() == Some(name)
    })?;
    let spec = svc.spec.clone().unwrap_or_default();
    let type_ = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
    let etp = spec
        .external_traffic_policy
        .clone()
        .unwrap_or_else(|| "Cluster".into());
    let local = etp == "Local";
    let mut steps = Vec::new();

    // 1. Is it ours?
    if type_ != "LoadBalancer" {
        steps.push(
            Finding::new(Severity::Info, "service-type", format!("type {type_}: no LoadBalancer IP is expected"))
                .because("ferrolb only answers Services of type LoadBalancer; ports and endpoints are still traced below"),
        );
    } else if !is_ours(svc) {
        steps.push(
            Finding::new(
                Severity::Warning,
                "service-class",
                format!(
                    "loadBalancerClass {} is not ferrolb's",
                    spec.load_balancer_class.as_deref().unwrap_or("")
                ),
            )
            .because("another implementation is asked to answer this Service; ferrolb leaves it alone (unless it runs with that --lb-class)")
            .fix(format!("remove spec.loadBalancerClass, or set it to {}", snapshot::DEFAULT_CLASS)),
        );
    } else {
        steps.push(Finding::new(
            Severity::Ok,
            "service-class",
            "type LoadBalancer, answered by ferrolb",
        ));
    }

    // 2. External IPs and pools.
    let ips: Vec<IpInfo> = ingress_ips(svc)
        .into_iter()
        .map(|ip| {
            let src = ip_source(snap, svc, ip);
            IpInfo {
                ip,
                pool: src.pool,
                node: src.node,
                address_type: src.address_type,
                ip_mode: ip_mode(svc, ip).map(str::to_string),
            }
        })
        .collect();
    let mut published_nodes: Vec<String> = Vec::new();
    for n in ips.iter().filter_map(|i| i.node.clone()) {
        if !published_nodes.contains(&n) {
            published_nodes.push(n);
        }
    }
    let alloc = service_condition(svc, ferrolb_crds::conditions::IP_ALLOCATED);
    let alloc_text = alloc.map(|c| {
        format!(
            "condition {}: {}/{}: {}",
            c.type_, c.status, c.reason, c.message
        )
    });
    if type_ == "LoadBalancer" && is_ours(svc) {
        if ips.is_empty() {
            let mut f = Finding::new(Severity::Error, "external-ips", "no external IP")
                .because(alloc_text.clone().unwrap_or_else(|| {
                    format!("the controller wrote no {} condition: it is not running, not leading, or cannot reach the API server", ferrolb_crds::conditions::IP_ALLOCATED)
                }));
            f = f.fix(match alloc.map(|c| c.message.as_str()) {
                Some(m) if m.contains("exhausted") => {
                    "add addresses to the pool, or free some".to_string()
                }
                Some(m) if m.contains("in no pool") => {
                    "request an IP that a pool holds, or add it to a pool".to_string()
                }
                Some(_) => "read the condition's message; `kubectl describe svc` shows the events"
                    .to_string(),
                None => "check the ferrolb controller's pods and logs".to_string(),
            });
            steps.push(f);
        } else {
            let parts: Vec<String> = ips
                .iter()
                .map(|i| match (&i.pool, &i.node) {
                    (pool, Some(n)) => format!(
                        "{} ({n}'s {}{})",
                        i.ip,
                        i.address_type.as_deref().unwrap_or("address"),
                        pool.as_deref()
                            .map_or(String::new(), |p| format!(", node pool {p}"))
                    ),
                    (Some(p), None) => format!("{} (pool {p})", i.ip),
                    (None, None) => format!("{} (in no pool)", i.ip),
                })
                .collect();
            let orphan = ips.iter().any(|i| i.pool.is_none() && i.node.is_none());
            let mut f = Finding::new(
                if orphan {
                    Severity::Warning
                } else {
                    Severity::Ok
                },
                "external-ips",
                format!("external IPs: {}", parts.join(", ")),
            );
            if let Some(t) = &alloc_text {
                f = f.because(t.clone());
            }
            if orphan {
                f = f.fix("add the IP back to a pool, or annotate the Service ferrolb.io/allow-ip-change=true to move it");
            }
            steps.push(f);
        }
    }

    // 3. Announcement: forwarder-mode pools publish node addresses (the controller says where
    // in its own condition); L2 pools are announced by a speaker.
    let forwarder = service_condition(svc, FORWARDER_READY);
    if let Some(c) = forwarder {
        let (severity, fix) = match (c.status.as_str(), c.reason.as_str()) {
            ("True", "AllNodes") => (Severity::Ok, None),
            ("True", _) => (
                Severity::Warning,
                Some(
                    "the nodes left out do not take this Service: free the port there, or accept the smaller set; the message says why each is out",
                ),
            ),
            (_, "PortConflict") => (
                Severity::Error,
                Some(
                    "free the port on the nodes named (stop the host process, remove the hostPort or the other Service), or give the Service another port",
                ),
            ),
            (_, "UnsupportedProxyMode") => (
                Severity::Error,
                Some(
                    "kube-proxy in IPVS mode binds published addresses everywhere: switch it to iptables or nftables mode, or set nodeAddresses.forwarding: Speaker on the pool",
                ),
            ),
            (_, "NoEligibleNodes") => (
                Severity::Error,
                Some(
                    "check the pool's nodeSelector, that the nodes are Ready and not excluded from load balancers, that a speaker pod is Ready on them, and (policy Local) where the endpoints run",
                ),
            ),
            _ => (
                Severity::Error,
                Some(
                    "read the message: a node is left out when a Service port is taken on it or kube-proxy runs in IPVS mode there",
                ),
            ),
        };
        let mut f = Finding::new(severity, "published", c.message.clone()).because(format!(
            "condition {FORWARDER_READY}: {}/{}",
            c.status, c.reason
        ));
        if let Some(x) = fix {
            f = f.fix(x);
        }
        steps.push(f);
        if ips.iter().any(|i| i.ip_mode.as_deref() == Some("Proxy")) {
            steps.push(
                Finding::new(
                    Severity::Info,
                    "forwarding",
                    "ipMode Proxy: the speakers' own proxy forwards these addresses, not kube-proxy",
                )
                .because("kube-proxy leaves Proxy-mode addresses alone; the speaker on each published node forwards to the ClusterIP (policy Cluster) or the nodePort on the node (policy Local), and the client's address is not kept"),
            );
        }
    }
    // BGP mode: the IPs whose pool a BGPAdvertisement covers. The L2 step is left out when
    // BGP alone covers every IP (the speakers write no L2 condition then, or, without --bgp, one
    // saying no L2Advertisement covers the pool), unless an L2 condition says it is announced.
    let bgp: Vec<BgpView> = if forwarder.is_none() {
        ips.iter()
            .filter_map(|i| snapshot::bgp_view(snap, svc, i.ip))
            .collect()
    } else {
        Vec::new()
    };
    let l2_covers = |ip: IpAddr| {
        pool_of(&snap.pools, ip).is_some_and(|p| snap.l2advs.iter().any(|a| adv_covers(a, p)))
    };
    let bgp_only = |ip: IpAddr| bgp.iter().any(|v| v.ip == ip) && !l2_covers(ip);
    let l2_step = !ips.is_empty()
        && forwarder.is_none()
        && (ips.iter().any(|i| !bgp_only(i.ip))
            || service_condition(svc, ANNOUNCED).is_some_and(|c| c.status == "True"));
    let mut announcers = Vec::new();
    if l2_step {
        let speakers = speaker_pods(snap);
        let speaker_ready_on = |node: &str| {
            speakers.iter().any(|p| {
                let (n, ready) = snapshot::pod_node_ready(p);
                ready && n.as_deref() == Some(node)
            })
        };
        match service_condition(svc, ANNOUNCED) {
            Some(c) if c.status == "True" => {
                announcers = snapshot::announcer(&c.message);
                let mut problems = Vec::new();
                for a in &announcers {
                    match snap.nodes.iter().find(|n| n.metadata.name.as_deref() == Some(a)) {
                        None => problems.push(format!("node {a} does not exist any more")),
                        Some(n) if !node_ready(n) => problems.push(format!("node {a} is not Ready")),
                        _ => {}
                    }
                    if speakers.is_empty() {
                        problems.push(format!(
                            "no speaker alive on {a} (no ferrolb speaker pod runs in the cluster)"
                        ));
                    } else if !speaker_ready_on(a) {
                        problems.push(format!("no speaker alive on {a}"));
                    }
                }
                let mut f = Finding::new(Severity::Ok, "announced", c.message.clone())
                    .because(format!("condition {ANNOUNCED}: {}/{}", c.status, c.reason));
                if !problems.is_empty() {
                    f.severity = Severity::Error;
                    f.title = format!("{} — but {}", c.message, problems.join("; "));
                    f = f.fix(if speakers.is_empty() {
                        "the condition is stale: nobody answers ARP/NDP for the IP once clients' caches expire; start the speakers (kubectl -n ferrolb-system get daemonset,pods) and they announce it again"
                    } else {
                        "the other speakers take the IP over within a second once they see the node gone; if they do not, check their logs and heartbeats (UDP 7946)"
                    });
                }
                steps.push(f);
            }
            Some(c) => {
                let fix = match c.reason.as_str() {
                    "NoUsableInterface" => "bring the interface up, or fix the L2Advertisement's interfaces and the speakers' --interfaces",
                    "NoAliveNode" => "start the speakers (the DaemonSet's pods) on the eligible nodes",
                    "NoL2Advertisement" => "create an L2Advertisement that covers the IP's pool (and the Service, if it selects Services)",
                    "NoEndpoints" => "make the Service's pods ready; with no serving endpoint nothing is announced",
                    "NoEligibleNode" => "check the L2Advertisement's nodeSelectors, the exclude-from-external-load-balancers label, and (for Local) where the endpoints run",
                    "NoPool" => "add the IP to an IPAddressPool",
                    _ => "read the condition's message",
                };
                let mut title = c.message.clone();
                if c.reason == "NoAliveNode" {
                    // Name the nodes that could announce but have no speaker: for Local, those
                    // with a ready endpoint; else every node an advertisement selects.
                    let candidates: Vec<String> = if local {
                        let mut v: Vec<String> = endpoints(snap, svc, None)
                            .into_iter()
                            .filter(|e| e.ready)
                            .filter_map(|e| e.node)
                            .collect();
                        v.sort();
                        v.dedup();
                        v
                    } else {
                        let mut v: Vec<String> = snap
                            .l2advs
                            .iter()
                            .flat_map(|a| snapshot::selected_nodes(snap, a))
                            .map(snapshot::name_of)
                            .collect();
                        v.sort();
                        v.dedup();
                        v
                    };
                    let without: Vec<String> = candidates
                        .into_iter()
                        .filter(|n| !speaker_ready_on(n))
                        .collect();
                    if !without.is_empty() {
                        title = format!("{title} — no speaker alive on {}", without.join(", "));
                    }
                }
                steps.push(
                    Finding::new(Severity::Error, "announced", title)
                        .because(format!("condition {ANNOUNCED}: {}/{}", c.status, c.reason))
                        .fix(fix),
                );
            }
            None => steps.push(
                Finding::new(Severity::Error, "announced", "no node announces the IPs")
                    .because(format!("no speaker wrote the {ANNOUNCED} condition"))
                    .fix("check that the speaker DaemonSet runs (kubectl -n ferrolb-system get pods) and that an L2Advertisement or a BGPAdvertisement covers the pool"),
            ),
        }
    }
    // Serving endpoints by node: BGP speakers announce for policy Local from nodes with one.
    let all_eps = endpoints(snap, svc, None);
    let mut serving_nodes: Vec<String> = all_eps
        .iter()
        .filter(|e| e.ready || e.serving)
        .filter_map(|e| e.node.clone())
        .collect();
    serving_nodes.sort();
    serving_nodes.dedup();
    for v in &bgp {
        steps.push(bgp_finding(
            snap,
            v,
            local,
            &serving_nodes,
            all_eps.iter().any(|e| e.ready || e.serving),
        ));
    }
    let mut advertisers: Vec<String> = bgp
        .iter()
        .flat_map(|v| v.advertising_nodes.iter().cloned())
        .collect();
    advertisers.sort();
    advertisers.dedup();
    if forwarder.is_none()
        && bgp.len() < ips.len()
        && let Some(why) = &snap.bgp_unread.advertisements
    {
        let uncovered = ips.iter().any(|i| !l2_covers(i.ip));
        if uncovered {
            steps.push(if why == "not installed" {
                Finding::new(
                    Severity::Info,
                    "bgp-advertised",
                    "BGP mode's kinds are not installed: only L2 announcement was checked",
                )
            } else {
                Finding::new(
                    Severity::Warning,
                    "bgp-advertised",
                    format!("BGPAdvertisements could not be read ({why}): whether BGP announces the IPs was not checked"),
                )
                .fix("read them with a user allowed to list bgpadvertisements.ferrolb.io (and bgpsessionstates)")
            });
        }
    }

    // 4. Ports.
    let port_maps = ports(svc, snap, port);
    if port_maps.is_empty() {
        steps.push(
            Finding::new(
                Severity::Error,
                "ports",
                match port {
                    Some(p) => format!("the Service has no port {p}"),
                    None => "the Service has no ports".into(),
                },
            )
            .fix("pass --port with one of the Service's ports"),
        );
    }
    for p in &port_maps {
        let np = p
            .node_port
            .map_or("no nodePort".to_string(), |n| format!("nodePort {n}"));
        let ep = if p.endpoint_ports.is_empty() {
            "no endpoint port yet".to_string()
        } else {
            format!(
                "endpoints on {}",
                p.endpoint_ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        let label = if p.name.is_empty() {
            String::new()
        } else {
            format!("{} ", p.name)
        };
        let mut f = Finding::new(
            Severity::Ok,
            "ports",
            format!(
                "{label}{}/{} -> {np} -> targetPort {} ({ep})",
                p.port, p.protocol, p.target_port
            ),
        );
        if type_ == "LoadBalancer"
            && p.node_port.is_none()
            && spec.allocate_load_balancer_node_ports != Some(false)
        {
            f.severity = Severity::Warning;
            f = f.because(
                "a LoadBalancer port without a nodePort: the API server has not allocated one yet",
            );
        }
        steps.push(f);
    }

    // 5. Endpoints.
    let first = port_maps.first().map(|p| p.name.clone());
    let eps = endpoints(snap, svc, first.as_deref());
    let ready: Vec<&SliceEndpoint> = eps.iter().filter(|e| e.ready).collect();
    let sel = pods_selector(svc);
    if eps.is_empty() {
        steps.push(
            Finding::new(Severity::Error, "endpoints", format!("no endpoints: no pod matches {sel}"))
                .because("without endpoints kube-proxy rejects the traffic and the speakers do not announce the IP")
                .fix(format!("check `kubectl get pods -n {ns} -l {sel}` and the Service's selector")),
        );
    } else if ready.is_empty() {
        steps.push(
            Finding::new(
                Severity::Error,
                "endpoints",
                format!("no ready endpoint: pods {sel} are 0/{} ready", eps.len()),
            )
            .because("kube-proxy sends traffic only to ready endpoints (or serving, terminating ones when none is ready)")
            .fix("check the pods' readiness probes and events (`kubectl describe pod`)"),
        );
    } else {
        let mut by_node: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for e in &eps {
            let n = by_node
                .entry(e.node.clone().unwrap_or_else(|| "(no node)".into()))
                .or_default();
            n.1 += 1;
            if e.ready {
                n.0 += 1;
            }
        }
        let parts: Vec<String> = by_node
            .iter()
            .map(|(n, (r, t))| format!("{n} {r}/{t}"))
            .collect();
        let list: Vec<String> = eps
            .iter()
            .map(|e| {
                format!(
                    "{} on {} ({})",
                    std::net::SocketAddr::new(e.ip, e.port),
                    e.node.as_deref().unwrap_or("?"),
                    if e.ready {
                        "ready"
                    } else if e.serving {
                        "serving, not ready"
                    } else {
                        "not ready"
                    }
                )
            })
            .collect();
        steps.push(
            Finding::new(
                if ready.len() < eps.len() {
                    Severity::Warning
                } else {
                    Severity::Ok
                },
                "endpoints",
                format!(
                    "{}/{} endpoints ready (ready/total per node: {})",
                    ready.len(),
                    eps.len(),
                    parts.join(", ")
                ),
            )
            .because(list.join("; ")),
        );
    }

    // 6. Traffic policy.
    if type_ == "LoadBalancer" || type_ == "NodePort" {
        if local {
            let mut nodes: Vec<String> = ready.iter().filter_map(|e| e.node.clone()).collect();
            nodes.sort();
            nodes.dedup();
            let mut f = Finding::new(
                Severity::Ok,
                "traffic-policy",
                format!(
                    "externalTrafficPolicy Local: the client's address is kept; only nodes with a ready endpoint take traffic ({}); others drop it",
                    if nodes.is_empty() {
                        "none".to_string()
                    } else {
                        nodes.join(", ")
                    }
                ),
            );
            let bad: Vec<&String> = announcers.iter().filter(|a| !nodes.contains(a)).collect();
            let bad_published: Vec<&String> = published_nodes
                .iter()
                .filter(|a| !nodes.contains(a))
                .collect();
            // BGP: every advertising node should hold a serving endpoint (kube-proxy there
            // drops the rest), and every node with a ready endpoint should advertise.
            let bad_bgp: Vec<&String> = advertisers
                .iter()
                .filter(|a| !serving_nodes.contains(a))
                .collect();
            let silent_bgp: Vec<&String> = if bgp.is_empty() {
                Vec::new()
            } else {
                nodes.iter().filter(|n| !advertisers.contains(n)).collect()
            };
            let names = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
            // (severity, why, what to do), composed so L2 and BGP problems both show.
            let mut why: Vec<String> = Vec::new();
            let mut fixes: Vec<&str> = Vec::new();
            if !bgp.is_empty() {
                why.push(format!(
                    "advertised over BGP by {}",
                    if advertisers.is_empty() {
                        "no node".to_string()
                    } else {
                        advertisers.join(", ")
                    }
                ));
            }
            if !bad_bgp.is_empty() {
                f.severity = Severity::Error;
                why.push(format!(
                    "{} advertises the IP over BGP but has no ready endpoint: the router sends it traffic that kube-proxy there drops",
                    names(&bad_bgp)
                ));
                fixes.push("the speakers withdraw the route from nodes without a serving endpoint; if it stays, check that node's speaker log and whether its view of EndpointSlices is current");
            } else if !silent_bgp.is_empty() && !advertisers.is_empty() {
                f.severity = Severity::Warning;
                why.push(format!(
                    "{} has a ready endpoint but does not advertise the IP over BGP: its endpoints get no traffic from outside",
                    names(&silent_bgp)
                ));
                fixes.push("see the BGP step above: that node's sessions, and whether the BGPAdvertisement's nodeSelectors select it");
            }
            if !bad.is_empty() {
                f.severity = Severity::Error;
                why.push(format!(
                    "{} announces the IP but has no ready endpoint: kube-proxy there drops the traffic",
                    names(&bad)
                ));
                fixes.push("the speakers move the IP to a node with an endpoint; if the condition stays, check the speakers' logs and whether their view of EndpointSlices is current");
            } else if !bad_published.is_empty() {
                f.severity = Severity::Error;
                why.push(format!(
                    "{} is published but has no ready endpoint: kube-proxy there drops the traffic",
                    names(&bad_published)
                ));
                fixes.push("the controller publishes only nodes with an endpoint for policy Local; if the status stays, check the controller's log and whether its view of EndpointSlices is current");
            }
            if !why.is_empty() {
                f = f.because(why.join("; "));
            }
            if !fixes.is_empty() {
                f = f.fix(fixes.join("; "));
            }
            steps.push(f);
        } else {
            steps.push(Finding::new(
                Severity::Ok,
                "traffic-policy",
                "externalTrafficPolicy Cluster: any node forwards to any endpoint; the source is masqueraded, so pods see a node's address",
            ));
        }
    }

    Some(ServiceReport {
        service: format!("{ns}/{name}"),
        type_,
        external_traffic_policy: etp,
        ips,
        announcers,
        published_nodes,
        advertisers,
        bgp,
        ports: port_maps,
        endpoints: eps,
        steps,
    })
}

fn session_words(s: &BgpSessionView) -> String {
    let mut t = format!(
        "{} → {}: {}, BFD {}",
        s.node, s.peer, s.bgp_state, s.bfd_state
    );
    if let Some(e) = &s.last_error {
        t.push_str(&format!(" (last error: {e})"));
    }
    t
}

/// Sessions in words, those in the same state with the same peer and last error together
/// ("node-1, node-2 → tor: Active, BFD Down (last error: …)").
fn sessions_words(v: &[&BgpSessionView]) -> String {
    let mut groups: Vec<(BgpSessionView, Vec<String>)> = Vec::new();
    for s in v {
        let key = BgpSessionView {
            node: String::new(),
            ..(*s).clone()
        };
        match groups.iter_mut().find(|(k, _)| {
            k.peer == key.peer
                && k.bgp_state == key.bgp_state
                && k.bfd_state == key.bfd_state
                && k.last_error == key.last_error
        }) {
            Some((_, nodes)) => nodes.push(s.node.clone()),
            None => groups.push((key, vec![s.node.clone()])),
        }
    }
    groups
        .into_iter()
        .map(|(k, nodes)| {
            session_words(&BgpSessionView {
                node: nodes.join(", "),
                ..k
            })
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn quoted_list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// The BGP step for one IP: who announces it over which sessions, or why nobody does, from
/// the BGPSessionStates the speakers write. `serving_nodes`: nodes with a ready or serving
/// endpoint; `any_serving`: the Service has a ready or serving endpoint anywhere.
fn bgp_finding(
    snap: &Snapshot,
    v: &BgpView,
    local: bool,
    serving_nodes: &[String],
    any_serving: bool,
) -> Finding {
    const CHECK: &str = "bgp-advertised";
    let ip = v.ip;
    let advs = format!(
        "BGPAdvertisement {} covers its pool",
        v.advertisements.join(", ")
    );
    // The nodes expected to announce: those the advertisements select, and for policy Local
    // only those with a serving endpoint; none while the Service has no serving endpoint.
    let expected: Vec<String> = v
        .selected_nodes
        .iter()
        .filter(|n| {
            if local {
                serving_nodes.contains(n)
            } else {
                any_serving
            }
        })
        .cloned()
        .collect();
    if v.sessions.is_empty() {
        if let Some(why) = &snap.bgp_unread.sessions {
            return Finding::new(
                Severity::Warning,
                CHECK,
                format!("{ip}: whether it is advertised over BGP is unknown: BGPSessionStates could not be read ({why})"),
            )
            .because(advs)
            .fix("read them with a user allowed to list bgpsessionstates.ferrolb.io: kubectl get bgpsessionstates");
        }
        if snap.bgp_sessions.is_empty() {
            if snap.bgp_peers.is_empty() && snap.bgp_unread.peers.is_none() {
                return Finding::new(
                    Severity::Error,
                    CHECK,
                    format!("{ip} not advertised over BGP: no BGPPeer exists"),
                )
                .because(format!(
                    "{advs}, but the speakers have no router to announce it to"
                ))
                .fix("create a BGPPeer for your router (see docs/bgp.md)");
            }
            return Finding::new(
                Severity::Error,
                CHECK,
                format!("{ip} not advertised over BGP: no BGPSessionState exists"),
            )
            .because(format!("{advs}; speakers running with --bgp write one BGPSessionState per node and BGPPeer, and none has: the speakers do not run in BGP mode, or no BGPPeer selects any node"))
            .fix("turn BGP mode on (helm upgrade ferrolb charts/ferrolb -n ferrolb-system --reuse-values --set bgp.enabled=true) and check the BGPPeers' nodeSelectors");
        }
        let mut others: Vec<String> = snap
            .bgp_sessions
            .iter()
            .filter_map(|s| s.status.as_ref().map(|st| st.peer.clone()))
            .collect();
        others.sort();
        others.dedup();
        return Finding::new(
            Severity::Error,
            CHECK,
            format!(
                "{ip} not advertised over BGP: no session with peer {}",
                v.peers.join(", ")
            ),
        )
        .because(format!(
            "{advs} and announces to {} only; the speakers report sessions with {}",
            v.peers.join(", "),
            others.join(", ")
        ))
        .fix("fix the BGPAdvertisement's peers, or the BGPPeers' names and nodeSelectors");
    }
    let established: Vec<&BgpSessionView> = v.sessions.iter().filter(|s| s.established()).collect();
    if established.is_empty() {
        return Finding::new(
            Severity::Error,
            CHECK,
            format!("{ip} not advertised over BGP: no session is Established"),
        )
        .because(
            sessions_words(&v.sessions.iter().collect::<Vec<_>>()),
        )
        .fix("check the router's side (it must accept the nodes' addresses with the right AS numbers and MD5 password) and that the nodes reach peerAddress:port; each session's lastError says what failed (kubectl get bgpsessionstates)");
    }
    // "PREFIX not announced on NODES → PEER: WHY", sessions with the same peer and reason
    // together.
    let mut refused_groups: Vec<((String, String), Vec<String>)> = Vec::new();
    for s in &v.sessions {
        let Some(w) = &s.not_announced else { continue };
        let key = (s.peer.clone(), w.clone());
        match refused_groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, nodes)) => nodes.push(s.node.clone()),
            None => refused_groups.push((key, vec![s.node.clone()])),
        }
    }
    let refused: Vec<String> = refused_groups
        .iter()
        .map(|((peer, w), nodes)| {
            let (prefix, why) = w
                .split_once(": ")
                .unwrap_or((w.as_str(), "no reason given"));
            format!(
                "{prefix} not announced on {} → {peer}: {why}",
                nodes.join(", ")
            )
        })
        .collect();
    let mut refused_fixes: Vec<&str> = Vec::new();
    for ((_, w), _) in &refused_groups {
        let fix = if w.contains("family") {
            "set dualStackAddressFamily: true on the BGPPeer, or add a BGPPeer over the IP's family (an IPv6 peer address for IPv6 IPs)"
        } else if w.contains("next hop") {
            "give the nodes an address of the IP's family on the interface towards the router"
        } else {
            "the reason is the speaker's; its log says more"
        };
        if !refused_fixes.contains(&fix) {
            refused_fixes.push(fix);
        }
    }
    let refused_fix = refused_fixes.join("; ");
    if v.advertising_nodes.is_empty() {
        if !refused.is_empty() {
            return Finding::new(
                Severity::Error,
                CHECK,
                format!("{ip} not advertised over BGP: {}", refused.join("; ")),
            )
            .because(advs)
            .fix(refused_fix);
        }
        let truncated: Vec<String> = established
            .iter()
            .filter(|s| s.truncated)
            .map(|s| format!("{} → {}", s.node, s.peer))
            .collect();
        if !truncated.is_empty() {
            return Finding::new(
                Severity::Warning,
                CHECK,
                format!("{ip}: whether it is advertised over BGP is unknown"),
            )
            .because(format!(
                    "a BGPSessionState lists at most 64 prefixes, and the full lists of {} do not hold it",
                    truncated.join(", ")
                ))
            .fix("ask the router: e.g. `birdc show route for IP` or `show ip bgp IP`");
        }
        let why = if !any_serving {
            "the Service has no serving endpoint, so no speaker announces it".to_string()
        } else if v.selected_nodes.is_empty() {
            "the BGPAdvertisements' nodeSelectors select no node (or only nodes labelled node.kubernetes.io/exclude-from-external-load-balancers)".to_string()
        } else if expected.is_empty() {
            format!(
                "policy Local: the nodes with a serving endpoint ({}) are not among those the BGPAdvertisements select ({})",
                quoted_list(serving_nodes),
                quoted_list(&v.selected_nodes)
            )
        } else {
            format!(
                "{} should announce it and have Established sessions, yet none lists a prefix holding it ({})",
                expected.join(", "),
                established
                    .iter()
                    .map(|s| session_words(s))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        };
        return Finding::new(
            Severity::Error,
            CHECK,
            format!("{ip} not advertised over BGP: no session announces it"),
        )
        .because(format!("{advs}; {why}"))
        .fix(if !any_serving {
            "make the Service's pods ready"
        } else if expected.is_empty() {
            "fix the BGPAdvertisement's nodeSelectors, or run the pods on nodes it selects"
        } else {
            "check those nodes' speaker logs, and whether their network is marked unavailable (NetworkUnavailable) or they are leaving (cordoned with --bgp-withdraw-on-cordon, out-of-service)"
        });
    }
    // Announced somewhere: who, to which peer, in which state.
    let mut groups: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
    for s in v.sessions.iter().filter(|s| s.announced.is_some()) {
        groups
            .entry((s.peer.clone(), s.bgp_state.clone(), s.bfd_state.clone()))
            .or_default()
            .push(s.node.clone());
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|((peer, st, bfd), nodes)| {
            format!("by {} to {peer} ({st}, BFD {bfd})", nodes.join(", "))
        })
        .collect();
    let mut f = Finding::new(
        Severity::Ok,
        CHECK,
        format!("{ip} advertised over BGP {}", parts.join("; ")),
    );
    let mut problems = refused;
    for s in &v.sessions {
        if s.announced.is_some() || s.not_announced.is_some() || !expected.contains(&s.node) {
            continue;
        }
        if !s.established() {
            problems.push(format!(
                "{} is down, so the router gets no route from {}",
                session_words(s),
                s.node
            ));
        } else if !s.truncated {
            problems.push(format!(
                "{} → {} is Established but does not announce it",
                s.node, s.peer
            ));
        }
    }
    for n in &expected {
        if !v.sessions.iter().any(|s| &s.node == n) {
            problems.push(format!(
                "{n} should announce it but has no session{} (a BGPPeer's nodeSelectors leave it out, or its speaker does not run with --bgp)",
                if v.peers.is_empty() {
                    String::new()
                } else {
                    format!(" with {}", v.peers.join(", "))
                }
            ));
        }
    }
    if problems.is_empty() {
        let mut prefixes: Vec<&str> = v
            .sessions
            .iter()
            .filter_map(|s| s.announced.as_deref())
            .collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        f = f.because(format!(
            "{advs}; the BGPSessionStates list {} as announced",
            prefixes.join(", ")
        ));
    } else {
        f.severity = Severity::Warning;
        let mut fix = refused_fix;
        if !fix.is_empty() {
            fix.push_str("; ");
        }
        fix.push_str("each session's state and lastError: kubectl get bgpsessionstates; the nodes that do announce keep the IP reachable meanwhile");
        f = f.because(problems.join("; ")).fix(fix);
    }
    f
}

/// How to walk a node's rules for a Service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RulesOptions {
    /// The client's address.
    pub from: Option<IpAddr>,
    /// The packet comes from a process on the node.
    pub from_node: bool,
    /// Override: whether the destination is an address of the node.
    pub dst_local: Option<bool>,
    /// The node the rules were taken on (default: the announcing node).
    pub node: Option<String>,
    /// Start at this chain.
    pub chain: Option<String>,
}

/// The walk for one destination of the Service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RulesTrace {
    /// `IP:PORT/PROTO`.
    pub destination: String,
    /// The node whose rules these are taken to be (`--node`, else the announcing or first
    /// published node), when known.
    pub node: Option<String>,
    /// The walk, when it could start.
    pub trace: Option<Trace>,
    /// Why it could not.
    pub error: Option<String>,
    /// The cross-check against the EndpointSlices.
    pub findings: Vec<Finding>,
}

fn node_ips(snap: &Snapshot, node: &str) -> Vec<IpAddr> {
    snap.nodes
        .iter()
        .filter(|n| n.metadata.name.as_deref() == Some(node))
        .flat_map(|n| n.status.iter().flat_map(|s| s.addresses.iter().flatten()))
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect()
}

fn in_pod_network(snap: &Snapshot, ip: IpAddr) -> bool {
    snap.nodes.iter().any(|n| {
        n.spec
            .as_ref()
            .and_then(|s| s.pod_cidrs.as_ref())
            .into_iter()
            .flatten()
            .any(|c| Net::parse(c).is_some_and(|net| net.contains(&ip)))
    })
}

/// Walks `rules` for each destination of the Service: its external IPs (not node addresses), or,
/// without any, its node port on the node's InternalIPs, or else its ClusterIPs; and checks each
/// walk against the endpoints kube-proxy on that node should use.
pub fn walk_rules(
    snap: &Snapshot,
    report: &ServiceReport,
    rules: &Ruleset,
    o: &RulesOptions,
) -> Vec<RulesTrace> {
    let Some(svc) = snap
        .services
        .iter()
        .find(|s| snapshot::key(s) == report.service)
    else {
        return Vec::new();
    };
    let spec = svc.spec.clone().unwrap_or_default();
    // The node the rules come from: as told, else the one the traffic reaches (the announcing
    // node in L2 mode, the first published node in forwarder mode).
    let node = o.node.clone().or_else(|| {
        report
            .announcers
            .first()
            .or(report.advertisers.first())
            .or(report.published_nodes.first())
            .cloned()
    });
    let forwarder = !report.published_nodes.is_empty();
    let external_local = report.external_traffic_policy == "Local";
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let from_pod = o.from.is_some_and(|s| in_pod_network(snap, s));
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for p in &report.ports {
        let proto = Proto::parse(&p.protocol).unwrap_or(Proto::Tcp);
        // (destination, port, destination is local, endpoints limited to the node)
        // In forwarder mode the external IPs are node addresses: only the rules' node's own
        // reach it (and are local there); other nodes' addresses are walked on their rules.
        let mut dests: Vec<(IpAddr, u16, bool, bool)> = report
            .ips
            .iter()
            .filter(|i| !forwarder || i.node.is_none() || i.node == node)
            .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
            .map(|i| (i.ip, p.port, forwarder, external_local && !from_pod))
            .collect();
        let proxied: Vec<String> = report
            .ips
            .iter()
            .filter(|i| i.ip_mode.as_deref() == Some("Proxy"))
            .map(|i| format!("{}", std::net::SocketAddr::new(i.ip, p.port)))
            .collect();
        if !proxied.is_empty() {
            let destination = format!("{}/{}", proxied.join(", "), p.protocol);
            out.push(RulesTrace {
                destination: destination.clone(),
                node: node.clone(),
                trace: None,
                error: Some("forwarded by the speakers' proxy (ipMode Proxy), not by kube-proxy".into()),
                findings: vec![Finding::new(
                    Severity::Info,
                    "rules-proxy-mode",
                    format!("{destination}: ipMode Proxy, so kube-proxy's rules do not take it; the speaker on the node forwards it"),
                )],
            });
        }
        if dests.is_empty() && forwarder {
            if proxied.is_empty() {
                let n = node.as_deref().unwrap_or("this node");
                out.push(RulesTrace {
                    destination: format!("port {}/{}", p.port, p.protocol),
                    node: node.clone(),
                    trace: None,
                    error: Some(format!("{n} is not published for this Service")),
                    findings: vec![Finding::new(
                        Severity::Info,
                        "rules-node-not-published",
                        format!("{n} is not published for this Service: no client is sent to its address (published: {})", report.published_nodes.join(", ")),
                    )
                    .fix("pass the rules of a published node, with --node")],
                });
            }
            continue;
        }
        if dests.is_empty()
            && let (Some(np), Some(n)) = (p.node_port, node.as_deref())
        {
            dests = node_ips(snap, n)
                .into_iter()
                .map(|ip| (ip, np, true, external_local && !from_pod))
                .collect();
        }
        if dests.is_empty() {
            dests = spec
                .cluster_ips
                .iter()
                .flatten()
                .filter_map(|c| c.parse().ok())
                .map(|ip| (ip, p.port, false, internal_local))
                .collect();
        }
        let eps = endpoints(snap, svc, Some(&p.name));
        for (ip, port, local_dst, node_only) in dests {
            // A dump of one family (iptables-save without ip6tables-save) says nothing of the
            // other: skipped, not reported as a failed walk.
            if !rules.has_family(Family::of(&ip)) {
                skipped.push(format!(
                    "{}/{}",
                    std::net::SocketAddr::new(ip, port),
                    p.protocol
                ));
                continue;
            }
            let destination = format!("{}/{}", std::net::SocketAddr::new(ip, port), p.protocol);
            let pkt = Packet {
                dst: ip,
                port,
                proto,
                src: o.from,
                origin: if o.from_node {
                    Origin::Node
                } else {
                    Origin::Outside
                },
                dst_local: o.dst_local.or(Some(local_dst)),
            };
            match walk::walk(
                rules,
                &pkt,
                &WalkOptions {
                    chain: o.chain.clone(),
                },
            ) {
                Ok(tr) => {
                    let fam: Vec<SliceEndpoint> = eps
                        .iter()
                        .filter(|e| Family::of(&e.ip) == Family::of(&ip))
                        .cloned()
                        .collect();
                    let expected = expected_for_node(&fam, node_only, node.as_deref());
                    let mut findings = walk::check::cross_check(&tr, &expected);
                    if node_only && node.is_none() {
                        findings.push(Finding::new(
                            Severity::Warning,
                            "rules-node-unknown",
                            "the node the rules come from is not known: pass --node so its local endpoints can be checked",
                        ));
                    }
                    out.push(RulesTrace {
                        destination,
                        node: node.clone(),
                        trace: Some(tr),
                        error: None,
                        findings,
                    });
                }
                Err(e) => out.push(RulesTrace {
                    destination: destination.clone(),
                    node: node.clone(),
                    trace: None,
                    error: Some(e.to_string()),
                    findings: vec![Finding::new(
                        Severity::Warning,
                        "rules-walk",
                        format!("{destination}: {e}"),
                    )],
                }),
            }
        }
    }
    if out.is_empty() && !skipped.is_empty() {
        let destination = skipped.join(", ");
        out.push(RulesTrace {
            destination: destination.clone(),
            node: node.clone(),
            trace: None,
            error: Some("the rules hold nothing of these destinations' address family".into()),
            findings: vec![
                Finding::new(
                    Severity::Warning,
                    "rules-family",
                    format!("the rules hold nothing for {destination}"),
                )
                .fix("for IPv6 pass ip6tables-save output (or both, concatenated)"),
            ],
        });
    }
    out
}

/// The report as text.
pub fn text(r: &ServiceReport) -> String {
    let mut s = format!(
        "Service {} ({}, externalTrafficPolicy {})\n",
        r.service, r.type_, r.external_traffic_policy
    );
    for f in &r.steps {
        s.push_str(&f.render("  "));
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("service")
    }

    pub(crate) fn speaker(node: &str) -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("speaker-{node}"), "namespace": "ferrolb-system",
                         "labels": {"app.kubernetes.io/component": "speaker", "app.kubernetes.io/part-of": "ferrolb"}},
            "spec": {"nodeName": node, "containers": []},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .expect("pod")
    }

    pub(crate) fn base_snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        s.services.push(svc(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "externalTrafficPolicy": "Local",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.100"}]},
                       "conditions": [
                         {"type": "ferrolb.io/IPAllocated", "status": "True", "reason": "Allocated", "message": "198.51.100.100 from pool default", "lastTransitionTime": "2026-12-07T08:00:00Z"},
                         {"type": "ferrolb.io/Announced", "status": "True", "reason": "Announced", "message": "announced by node-2 on eth0", "lastTransitionTime": "2026-12-07T08:00:00Z"}]}
        })));
        s.slices.push(serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["192.0.2.2"], "nodeName": "node-1", "conditions": {"ready": true}},
                {"addresses": ["192.0.2.18"], "nodeName": "node-2", "conditions": {"ready": true}}]
        })).expect("slice"));
        for (n, ip) in [("node-1", "198.51.100.11"), ("node-2", "198.51.100.12")] {
            s.nodes.push(
                serde_json::from_value(json!({
                    "metadata": {"name": n},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}],
                               "addresses": [{"type": "InternalIP", "address": ip}]}
                }))
                .expect("node"),
            );
            s.pods.push(speaker(n));
        }
        s.pools.push(
            serde_json::from_value(json!({
                "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
                "metadata": {"name": "default"},
                "spec": {"addresses": ["198.51.100.100-198.51.100.149"]}
            }))
            .expect("pool"),
        );
        s
    }

    fn checks(r: &ServiceReport) -> Vec<(String, Severity)> {
        r.steps
            .iter()
            .map(|f| (f.check.clone(), f.severity))
            .collect()
    }

    #[test]
    fn a_working_service_reads_all_ok() {
        let r = report(&base_snapshot(), "default", "web", None).expect("found");
        assert!(
            r.steps.iter().all(|f| f.severity == Severity::Ok),
            "{}",
            text(&r)
        );
        assert_eq!(r.ips[0].pool.as_deref(), Some("default"));
        assert_eq!(r.announcers, ["node-2"]);
        assert_eq!(r.ports[0].node_port, Some(30080));
        assert_eq!(r.ports[0].endpoint_ports, [8080]);
        let t = text(&r);
        assert!(
            t.contains("http 80/TCP -> nodePort 30080 -> targetPort 8080"),
            "{t}"
        );
    }

    #[test]
    fn unready_pods_are_named_with_their_selector() {
        let mut s = base_snapshot();
        s.slices[0] = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["192.0.2.2"], "nodeName": "node-1", "conditions": {"ready": false}},
                {"addresses": ["192.0.2.3"], "nodeName": "node-1", "conditions": {"ready": false}},
                {"addresses": ["192.0.2.18"], "nodeName": "node-2", "conditions": {"ready": false}}]
        })).expect("slice");
        let r = report(&s, "default", "web", None).expect("found");
        let f = r
            .steps
            .iter()
            .find(|f| f.check == "endpoints")
            .expect("endpoints");
        assert_eq!(f.severity, Severity::Error);
        assert_eq!(f.title, "no ready endpoint: pods app=web are 0/3 ready");
        // Local policy: the announcer has no ready endpoint either.
        let tp = r
            .steps
            .iter()
            .find(|f| f.check == "traffic-policy")
            .expect("policy");
        assert_eq!(tp.severity, Severity::Error);
    }

    #[test]
    fn local_policy_with_the_announcer_lacking_an_endpoint() {
        let mut s = base_snapshot();
        if let Some(eps) = s.slices[0].endpoints.as_mut() {
            eps.retain(|e| e.node_name.as_deref() == Some("node-1"));
        }
        let r = report(&s, "default", "web", None).expect("found");
        let tp = r
            .steps
            .iter()
            .find(|f| f.check == "traffic-policy")
            .expect("policy");
        assert_eq!(tp.severity, Severity::Error, "{}", text(&r));
        assert!(
            tp.explanation
                .contains("node-2 announces the IP but has no ready endpoint")
        );
    }

    #[test]
    fn no_ip_quotes_the_controller() {
        let mut s = base_snapshot();
        s.services[0] = svc(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
            "status": {"conditions": [{"type": "ferrolb.io/IPAllocated", "status": "False", "reason": "PoolExhausted", "message": "pool tiny exhausted (0 of 1 free)", "lastTransitionTime": "2026-12-07T08:00:00Z"}]}
        }));
        let r = report(&s, "default", "web", None).expect("found");
        let f = r
            .steps
            .iter()
            .find(|f| f.check == "external-ips")
            .expect("ips");
        assert_eq!(f.severity, Severity::Error);
        assert!(f.explanation.contains("pool tiny exhausted"));
        assert_eq!(
            f.fix.as_deref(),
            Some("add addresses to the pool, or free some")
        );
        assert!(
            !checks(&r).iter().any(|(c, _)| c == "announced"),
            "no IP, nothing to announce"
        );
    }

    #[test]
    fn announcer_without_a_speaker_or_gone() {
        let mut s = base_snapshot();
        s.nodes.pop();
        let r = report(&s, "default", "web", None).expect("found");
        let f = r
            .steps
            .iter()
            .find(|f| f.check == "announced")
            .expect("announced");
        assert_eq!(f.severity, Severity::Error);
        assert!(
            f.title.contains("node node-2 does not exist any more"),
            "{}",
            f.title
        );

        let mut s = base_snapshot();
        s.pods
            .retain(|p| p.metadata.name.as_deref() != Some("speaker-node-2"));
        let r = report(&s, "default", "web", None).expect("found");
        let f = r
            .steps
            .iter()
            .find(|f| f.check == "announced")
            .expect("announced");
        assert_eq!(f.severity, Severity::Error);
        assert!(
            f.title.ends_with("— but no speaker alive on node-2"),
            "{}",
            f.title
        );

        // No speaker pod at all: the condition is stale, nobody rewrites it.
        let mut s = base_snapshot();
        s.pods.clear();
        let r = report(&s, "default", "web", None).expect("found");
        let f = r
            .steps
            .iter()
            .find(|f| f.check == "announced")
            .expect("announced");
        assert_eq!(f.severity, Severity::Error);
        assert!(
            f.title.contains(
                "no speaker alive on node-2 (no ferrolb speaker pod runs in the cluster)"
            ),
            "{}",
            f.title
        );
        assert!(f.fix.as_deref().is_some_and(|x| x.contains("stale")));
    }

    #[test]
    fn no_alive_node_names_the_nodes_without_a_speaker() {
        let mut s = base_snapshot();
        s.pods
            .retain(|p| p.metadata.name.as_deref() != Some("speaker-node-2"));
        if let Some(eps) = s.slices[0].endpoints.as_mut() {
            eps.retain(|e| e.node_name.as_deref() == Some("node-2"));
        }
        if let Some(st) = s.services[0].status.as_mut()
            && let Some(cs) = st.conditions.as_mut()
        {
            cs[1].status = "False".into();
            cs[1].reason = "NoAliveNode".into();
            cs[1].message = "not announced: no eligible speaker is alive".into();
        }
        let r = report(&s, "default", "web", None).expect("found");
        let f = r
            .steps
            .iter()
            .find(|f| f.check == "announced")
            .expect("announced");
        assert_eq!(f.severity, Severity::Error);
        assert_eq!(
            f.title,
            "not announced: no eligible speaker is alive — no speaker alive on node-2"
        );
    }

    #[test]
    fn not_announced_gives_the_reason_and_a_fix() {
        let mut s = base_snapshot();
        if let Some(st) = s.services[0].status.as_mut()
            && let Some(cs) = st.conditions.as_mut()
        {
            cs[1].status = "False".into();
            cs[1].reason = "NoL2Advertisement".into();
            cs[1].message =
                "not announced: no L2Advertisement covers its pool and the Service".into();
        }
        let r = report(&s, "default", "web", None).expect("found");
        let f = r
            .steps
            .iter()
            .find(|f| f.check == "announced")
            .expect("announced");
        assert_eq!(f.severity, Severity::Error);
        assert!(
            f.fix
                .as_deref()
                .is_some_and(|x| x.contains("create an L2Advertisement"))
        );
    }

    /// The base Service moved to a node pool: published on both nodes' InternalIPs.
    fn forwarder_snapshot(reason: &str, message: &str) -> Snapshot {
        let mut s = base_snapshot();
        s.pools.push(
            serde_json::from_value(json!({
                "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
                "metadata": {"name": "nodes"}, "spec": {"nodeAddresses": {}}
            }))
            .expect("pool"),
        );
        s.services[0] = svc(json!({
            "metadata": {"name": "web", "namespace": "default",
                         "annotations": {"ferrolb.io/ip-allocated-from-pool": "nodes"}},
            "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "externalTrafficPolicy": "Local",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.11", "ipMode": "VIP"}, {"ip": "198.51.100.12", "ipMode": "VIP"}]},
                       "conditions": [
                         {"type": "ferrolb.io/IPAllocated", "status": "True", "reason": "NodeAddresses", "message": "node pool nodes publishes node addresses (forwarder mode); see condition ferrolb.io/ForwarderReady", "lastTransitionTime": "2026-12-07T08:00:00Z"},
                         {"type": FORWARDER_READY, "status": "True", "reason": reason, "message": message, "lastTransitionTime": "2026-12-07T08:00:00Z"}]}
        }));
        s
    }

    #[test]
    fn forwarder_mode_shows_where_it_is_published() {
        let s = forwarder_snapshot("AllNodes", "published on node-1, node-2 (InternalIP)");
        let r = report(&s, "default", "web", None).expect("found");
        assert!(
            r.steps.iter().all(|f| f.severity == Severity::Ok),
            "{}",
            text(&r)
        );
        assert_eq!(r.published_nodes, ["node-1", "node-2"]);
        let ips = r
            .steps
            .iter()
            .find(|f| f.check == "external-ips")
            .expect("ips");
        assert_eq!(
            ips.title,
            "external IPs: 198.51.100.11 (node-1's InternalIP, node pool nodes), 198.51.100.12 (node-2's InternalIP, node pool nodes)"
        );
        assert!(
            !r.steps.iter().any(|f| f.check == "announced"),
            "no speaker condition expected"
        );

        let s = forwarder_snapshot(
            "PartiallyAvailable",
            "published on node-1 (InternalIP); left out: node-2 (port 80/TCP unavailable: a host process listens on 0.0.0.0:80 (TCP))",
        );
        let r = report(&s, "default", "web", None).expect("found");
        let f = r
            .steps
            .iter()
            .find(|f| f.check == "published")
            .expect("published");
        assert_eq!(f.severity, Severity::Warning);
        assert!(f.title.contains("left out: node-2"));
    }

    #[test]
    fn forwarder_rules_are_walked_for_the_rules_node_address_only() {
        // node-1's rules: its own address is local there and DNATs to its local endpoint.
        let rules = crate::rules::parse(
            "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j KUBE-SERVICES\n-A KUBE-SERVICES -d 198.51.100.11/32 -p tcp -m tcp --dport 80 -j KUBE-EXT-A\n-A KUBE-SERVICES -d 198.51.100.12/32 -p tcp -m tcp --dport 80 -j KUBE-EXT-A\n-A KUBE-EXT-A -j KUBE-SVL-A\n-A KUBE-SVL-A -j KUBE-SEP-B\n-A KUBE-SEP-B -p tcp -j DNAT --to-destination 192.0.2.2:8080\nCOMMIT\n",
        )
        .expect("parses");
        let s = forwarder_snapshot("AllNodes", "published on node-1, node-2 (InternalIP)");
        let r = report(&s, "default", "web", None).expect("found");
        let w = walk_rules(
            &s,
            &r,
            &rules,
            &RulesOptions {
                node: Some("node-1".into()),
                ..RulesOptions::default()
            },
        );
        assert_eq!(w.len(), 1, "{w:#?}");
        assert_eq!(w[0].destination, "198.51.100.11:80/TCP");
        let tr = w[0].trace.as_ref().expect("walked");
        assert_eq!(tr.packet.dst_local, Some(true));
        assert_eq!(w[0].findings.len(), 1, "{:?}", w[0].findings);
        assert_eq!(w[0].findings[0].severity, Severity::Ok);
        // Without --node: the first published node's.
        let w = walk_rules(&s, &r, &rules, &RulesOptions::default());
        assert_eq!(w[0].node.as_deref(), Some("node-1"));
    }

    #[test]
    fn port_filter_and_missing_port() {
        let s = base_snapshot();
        assert_eq!(
            report(&s, "default", "web", Some("http")).map(|r| r.ports.len()),
            Some(1)
        );
        assert_eq!(
            report(&s, "default", "web", Some("80")).map(|r| r.ports.len()),
            Some(1)
        );
        let r = report(&s, "default", "web", Some("443")).expect("found");
        assert!(
            r.steps
                .iter()
                .any(|f| f.check == "ports" && f.severity == Severity::Error)
        );
        assert!(report(&s, "default", "nope", None).is_none());
    }

    #[test]
    fn rules_are_walked_and_checked_for_the_announcing_node() {
        let rules = crate::rules::parse(
            "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j KUBE-SERVICES\n-A KUBE-SERVICES -d 198.51.100.100/32 -p tcp -m tcp --dport 80 -j KUBE-EXT-A\n-A KUBE-EXT-A -j KUBE-SVL-A\n-A KUBE-SVL-A -j KUBE-SEP-B\n-A KUBE-SEP-B -p tcp -j DNAT --to-destination 192.0.2.18:8080\nCOMMIT\n",
        )
        .expect("parses");
        let s = base_snapshot();
        let r = report(&s, "default", "web", None).expect("found");
        let w = walk_rules(&s, &r, &rules, &RulesOptions::default());
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].destination, "198.51.100.100:80/TCP");
        // node-2 announces; its local endpoint is 192.0.2.18.
        assert_eq!(w[0].findings.len(), 1, "{:?}", w[0].findings);
        assert_eq!(w[0].findings[0].severity, Severity::Ok);
        // Taken on node-1 instead: 192.0.2.2 is expected there, 192.0.2.18 is not local.
        let w = walk_rules(
            &s,
            &r,
            &rules,
            &RulesOptions {
                node: Some("node-1".into()),
                ..RulesOptions::default()
            },
        );
        let checks: Vec<&str> = w[0].findings.iter().map(|f| f.check.as_str()).collect();
        assert_eq!(checks, ["endpoint-not-programmed", "dnat-to-non-endpoint"]);
    }

    #[test]
    fn expected_endpoints_follow_the_policy() {
        let r = report(&base_snapshot(), "default", "web", None).expect("found");
        assert_eq!(
            expected_for_node(&r.endpoints, true, Some("node-2")).len(),
            1
        );
        assert_eq!(
            expected_for_node(&r.endpoints, false, Some("node-2")).len(),
            2
        );
        assert!(expected_for_node(&r.endpoints, true, None).is_empty());
    }

    // ---- BGP mode ----

    pub(crate) fn session_state(
        node: &str,
        peer: &str,
        bgp: &str,
        bfd: &str,
        advertised: &[&str],
        not_advertised: &[&str],
    ) -> ferrolb_crds::bgp::BGPSessionState {
        serde_json::from_value(json!({
            "apiVersion": "ferrolb.io/v1beta1", "kind": "BGPSessionState",
            "metadata": {"name": format!("{node}-{peer}")},
            "spec": {},
            "status": {"node": node, "peer": peer, "bgpState": bgp, "bfdState": bfd,
                       "prefixesAdvertised": advertised.len(), "advertised": advertised,
                       "notAdvertised": not_advertised, "flaps": 0}
        }))
        .expect("session state")
    }

    /// The base Service's pool covered by a BGPAdvertisement only, as speakers run with --bgp
    /// leave it: no Announced condition; node-1 and node-2 announce it to `tor`.
    pub(crate) fn bgp_snapshot() -> Snapshot {
        let mut s = base_snapshot();
        if let Some(st) = s.services[0].status.as_mut()
            && let Some(cs) = st.conditions.as_mut()
        {
            cs.retain(|c| c.type_ != ANNOUNCED);
        }
        s.bgp_advs.push(
            serde_json::from_value(json!({
                "apiVersion": "ferrolb.io/v1beta1", "kind": "BGPAdvertisement",
                "metadata": {"name": "bgp"}, "spec": {"ipAddressPools": ["default"]}
            }))
            .expect("bgp adv"),
        );
        s.bgp_peers.push(
            serde_json::from_value(json!({
                "apiVersion": "ferrolb.io/v1beta1", "kind": "BGPPeer",
                "metadata": {"name": "tor"},
                "spec": {"myASN": 64512, "peerASN": 64513, "peerAddress": "198.51.100.1"}
            }))
            .expect("bgp peer"),
        );
        for n in ["node-1", "node-2"] {
            s.bgp_sessions.push(session_state(
                n,
                "tor",
                "Established",
                "Up",
                &["198.51.100.100/32"],
                &[],
            ));
        }
        s
    }

    fn step<'a>(r: &'a ServiceReport, check: &str) -> &'a Finding {
        r.steps
            .iter()
            .find(|f| f.check == check)
            .unwrap_or_else(|| panic!("no {check} step in\n{}", text(r)))
    }

    #[test]
    fn a_bgp_only_pool_reads_advertised_not_an_l2_error() {
        let r = report(&bgp_snapshot(), "default", "web", None).expect("found");
        assert!(
            r.steps.iter().all(|f| f.severity == Severity::Ok),
            "{}",
            text(&r)
        );
        assert!(
            !r.steps.iter().any(|f| f.check == "announced"),
            "no L2 step for a pool only BGP covers:\n{}",
            text(&r)
        );
        assert_eq!(
            step(&r, "bgp-advertised").title,
            "198.51.100.100 advertised over BGP by node-1, node-2 to tor (Established, BFD Up)"
        );
        assert_eq!(r.advertisers, ["node-1", "node-2"]);
        assert!(
            step(&r, "traffic-policy")
                .explanation
                .contains("advertised over BGP by node-1, node-2"),
            "{}",
            text(&r)
        );

        // Speakers without --bgp write this condition for the same Service: it is not the
        // answer when BGP covers the pool.
        let mut s = bgp_snapshot();
        if let Some(st) = s.services[0].status.as_mut()
            && let Some(cs) = st.conditions.as_mut()
        {
            cs.push(
                serde_json::from_value(json!({
                "type": ANNOUNCED, "status": "False", "reason": "NoL2Advertisement",
                "message": "not announced: no L2Advertisement covers its pool and the Service",
                "lastTransitionTime": "2026-12-07T08:00:00Z"}))
                .expect("condition"),
            );
        }
        let r = report(&s, "default", "web", None).expect("found");
        assert!(
            !r.steps.iter().any(|f| f.check == "announced"),
            "{}",
            text(&r)
        );
        assert_eq!(step(&r, "bgp-advertised").severity, Severity::Ok);
    }

    #[test]
    fn bgp_without_any_session_state_or_peer_says_so() {
        let mut s = bgp_snapshot();
        s.bgp_sessions.clear();
        let r = report(&s, "default", "web", None).expect("found");
        let f = step(&r, "bgp-advertised");
        assert_eq!(f.severity, Severity::Error);
        assert_eq!(
            f.title,
            "198.51.100.100 not advertised over BGP: no BGPSessionState exists"
        );
        assert!(
            f.explanation
                .contains("BGPAdvertisement bgp covers its pool")
        );
        assert!(
            f.fix
                .as_deref()
                .is_some_and(|x| x.contains("bgp.enabled=true")),
            "{f:?}"
        );
        assert!(r.advertisers.is_empty());

        s.bgp_peers.clear();
        let r = report(&s, "default", "web", None).expect("found");
        assert_eq!(
            step(&r, "bgp-advertised").title,
            "198.51.100.100 not advertised over BGP: no BGPPeer exists"
        );

        // Sessions that could not be read: unknown, not broken.
        let mut s = bgp_snapshot();
        s.bgp_sessions.clear();
        s.bgp_unread.sessions = Some("forbidden: no list".into());
        let r = report(&s, "default", "web", None).expect("found");
        let f = step(&r, "bgp-advertised");
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.title
                .contains("BGPSessionStates could not be read (forbidden: no list)")
        );
    }

    #[test]
    fn bgp_with_no_session_established_names_each_and_its_error() {
        let mut s = bgp_snapshot();
        s.bgp_sessions = vec![
            session_state("node-1", "tor", "Connect", "Down", &[], &[]),
            session_state("node-2", "tor", "Active", "Down", &[], &[]),
        ];
        if let Some(st) = s.bgp_sessions[0].status.as_mut() {
            st.last_error = Some("TCP connect to 198.51.100.1:179 timed out".into());
        }
        let r = report(&s, "default", "web", None).expect("found");
        let f = step(&r, "bgp-advertised");
        assert_eq!(f.severity, Severity::Error);
        assert_eq!(
            f.title,
            "198.51.100.100 not advertised over BGP: no session is Established"
        );
        assert_eq!(
            f.explanation,
            "node-1 → tor: Connect, BFD Down (last error: TCP connect to 198.51.100.1:179 timed out); node-2 → tor: Active, BFD Down"
        );
        // Sessions alike are said once, with their nodes.
        s.bgp_sessions[0] = session_state("node-1", "tor", "Active", "Down", &[], &[]);
        let r = report(&s, "default", "web", None).expect("found");
        assert_eq!(
            step(&r, "bgp-advertised").explanation,
            "node-1, node-2 → tor: Active, BFD Down"
        );
    }

    #[test]
    fn bgp_not_announced_gives_the_speakers_reason() {
        let mut s = bgp_snapshot();
        for st in s.bgp_sessions.iter_mut().filter_map(|x| x.status.as_mut()) {
            st.advertised.clear();
            st.prefixes_advertised = 0;
            st.not_advertised = vec!["198.51.100.100/32: family_not_negotiated".into()];
        }
        let r = report(&s, "default", "web", None).expect("found");
        let f = step(&r, "bgp-advertised");
        assert_eq!(f.severity, Severity::Error);
        assert_eq!(
            f.title,
            "198.51.100.100 not advertised over BGP: 198.51.100.100/32 not announced on node-1, node-2 → tor: the router did not negotiate the address family"
        );
        assert!(
            f.fix
                .as_deref()
                .is_some_and(|x| x.contains("dualStackAddressFamily"))
        );

        // One node announces, the other does not: a warning naming it, the reason kept.
        let mut s = bgp_snapshot();
        if let Some(st) = s.bgp_sessions[1].status.as_mut() {
            st.advertised.clear();
            st.not_advertised =
                vec!["198.51.100.100/32: family not carried on this session (set dualStackAddressFamily)".into()];
        }
        let r = report(&s, "default", "web", None).expect("found");
        let f = step(&r, "bgp-advertised");
        assert_eq!(f.severity, Severity::Warning, "{}", text(&r));
        assert_eq!(
            f.title,
            "198.51.100.100 advertised over BGP by node-1 to tor (Established, BFD Up)"
        );
        assert!(
            f.explanation.contains(
                "198.51.100.100/32 not announced on node-2 → tor: family not carried on this session (set dualStackAddressFamily)"
            ),
            "{}",
            f.explanation
        );
    }

    #[test]
    fn bgp_and_l2_both_covering_give_both_lines() {
        let mut s = base_snapshot();
        s.l2advs.push(
            serde_json::from_value(json!({
                "apiVersion": "ferrolb.io/v1beta1", "kind": "L2Advertisement",
                "metadata": {"name": "l2"}, "spec": {}
            }))
            .expect("l2 adv"),
        );
        let b = bgp_snapshot();
        s.bgp_advs = b.bgp_advs;
        s.bgp_peers = b.bgp_peers;
        s.bgp_sessions = b.bgp_sessions;
        let r = report(&s, "default", "web", None).expect("found");
        assert!(
            r.steps.iter().all(|f| f.severity == Severity::Ok),
            "{}",
            text(&r)
        );
        assert_eq!(step(&r, "announced").title, "announced by node-2 on eth0");
        assert_eq!(
            step(&r, "bgp-advertised").title,
            "198.51.100.100 advertised over BGP by node-1, node-2 to tor (Established, BFD Up)"
        );
        assert_eq!(r.announcers, ["node-2"]);
        assert_eq!(r.advertisers, ["node-1", "node-2"]);
    }

    #[test]
    fn bgp_local_policy_compares_advertisers_with_endpoint_nodes() {
        // node-2 lost its endpoint but still advertises: the router sends it traffic it drops.
        let mut s = bgp_snapshot();
        if let Some(eps) = s.slices[0].endpoints.as_mut() {
            eps.retain(|e| e.node_name.as_deref() == Some("node-1"));
        }
        let r = report(&s, "default", "web", None).expect("found");
        let tp = step(&r, "traffic-policy");
        assert_eq!(tp.severity, Severity::Error, "{}", text(&r));
        assert!(
            tp.explanation.contains(
                "node-2 advertises the IP over BGP but has no ready endpoint: the router sends it traffic that kube-proxy there drops"
            ),
            "{}",
            tp.explanation
        );

        // node-2 has an endpoint and an Established session, but does not announce the IP.
        let mut s = bgp_snapshot();
        if let Some(st) = s.bgp_sessions[1].status.as_mut() {
            st.advertised.clear();
            st.prefixes_advertised = 0;
        }
        let r = report(&s, "default", "web", None).expect("found");
        let f = step(&r, "bgp-advertised");
        assert_eq!(f.severity, Severity::Warning, "{}", text(&r));
        assert!(
            f.explanation
                .contains("node-2 → tor is Established but does not announce it"),
            "{}",
            f.explanation
        );
        let tp = step(&r, "traffic-policy");
        assert_eq!(tp.severity, Severity::Warning);
        assert!(
            tp.explanation
                .contains("node-2 has a ready endpoint but does not advertise the IP over BGP"),
            "{}",
            tp.explanation
        );

        // node-2's session is down: named, with the router losing node-2 as a next hop.
        let mut s = bgp_snapshot();
        s.bgp_sessions[1] = session_state("node-2", "tor", "Connect", "Down", &[], &[]);
        let r = report(&s, "default", "web", None).expect("found");
        let f = step(&r, "bgp-advertised");
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.explanation.contains(
                "node-2 → tor: Connect, BFD Down is down, so the router gets no route from node-2"
            ),
            "{}",
            f.explanation
        );
    }

    #[test]
    fn bgp_nobody_announcing_says_why() {
        // No serving endpoint anywhere.
        let mut s = bgp_snapshot();
        for st in s.bgp_sessions.iter_mut().filter_map(|x| x.status.as_mut()) {
            st.advertised.clear();
            st.prefixes_advertised = 0;
        }
        let mut no_eps = s.clone();
        no_eps.slices.clear();
        let r = report(&no_eps, "default", "web", None).expect("found");
        let f = step(&r, "bgp-advertised");
        assert_eq!(f.severity, Severity::Error);
        assert_eq!(
            f.title,
            "198.51.100.100 not advertised over BGP: no session announces it"
        );
        assert!(
            f.explanation
                .contains("the Service has no serving endpoint")
        );

        // The advertisement selects only node-1; policy Local and the endpoints are on node-2.
        let mut s2 = s.clone();
        s2.bgp_advs[0].spec.node_selectors = vec![
            serde_json::from_value(json!({"matchLabels": {"kubernetes.io/hostname": "node-1"}}))
                .expect("selector"),
        ];
        s2.nodes[0].metadata.labels =
            Some([("kubernetes.io/hostname".to_string(), "node-1".to_string())].into());
        if let Some(eps) = s2.slices[0].endpoints.as_mut() {
            eps.retain(|e| e.node_name.as_deref() == Some("node-2"));
        }
        let r = report(&s2, "default", "web", None).expect("found");
        let f = step(&r, "bgp-advertised");
        assert_eq!(f.severity, Severity::Error);
        assert!(
            f.explanation.contains(
                "policy Local: the nodes with a serving endpoint (node-2) are not among those the BGPAdvertisements select (node-1)"
            ),
            "{}",
            f.explanation
        );

        // The status lists only part of the prefixes: unknown, not a fault.
        let mut s3 = s.clone();
        for st in s3.bgp_sessions.iter_mut().filter_map(|x| x.status.as_mut()) {
            st.advertised = (0..64).map(|i| format!("203.0.113.{i}/32")).collect();
            st.prefixes_advertised = 100;
        }
        let r = report(&s3, "default", "web", None).expect("found");
        let f = step(&r, "bgp-advertised");
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(
            f.title,
            "198.51.100.100: whether it is advertised over BGP is unknown"
        );
    }

    #[test]
    fn bgp_aggregated_prefixes_and_named_peers() {
        // aggregationLength 27: the session announces 198.51.100.96/27, which holds the IP.
        let mut s = bgp_snapshot();
        for st in s.bgp_sessions.iter_mut().filter_map(|x| x.status.as_mut()) {
            st.advertised = vec!["198.51.100.96/27".into()];
        }
        let r = report(&s, "default", "web", None).expect("found");
        assert_eq!(step(&r, "bgp-advertised").severity, Severity::Ok);
        assert_eq!(
            r.bgp[0].sessions[0].announced.as_deref(),
            Some("198.51.100.96/27")
        );

        // The advertisement names a peer no session is with.
        let mut s = bgp_snapshot();
        s.bgp_advs[0].spec.peers = vec!["tor6".into()];
        let r = report(&s, "default", "web", None).expect("found");
        let f = step(&r, "bgp-advertised");
        assert_eq!(f.severity, Severity::Error);
        assert_eq!(
            f.title,
            "198.51.100.100 not advertised over BGP: no session with peer tor6"
        );
        assert!(
            f.explanation
                .contains("the speakers report sessions with tor")
        );

        // serviceSelectors that do not select the Service: not BGP's, so the L2 step is back.
        let mut s = bgp_snapshot();
        s.bgp_advs[0].spec.service_selectors =
            vec![serde_json::from_value(json!({"matchLabels": {"bgp": "yes"}})).expect("selector")];
        let r = report(&s, "default", "web", None).expect("found");
        assert!(r.bgp.is_empty());
        assert_eq!(step(&r, "announced").severity, Severity::Error);
    }

    #[test]
    fn bgp_json_carries_the_sessions_and_rules_follow_an_advertiser() {
        let s = bgp_snapshot();
        let r = report(&s, "default", "web", None).expect("found");
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["advertisers"], json!(["node-1", "node-2"]));
        assert_eq!(v["bgp"][0]["ip"], "198.51.100.100");
        assert_eq!(v["bgp"][0]["advertisements"], json!(["bgp"]));
        assert_eq!(v["bgp"][0]["sessions"][1]["node"], "node-2");
        assert_eq!(v["bgp"][0]["sessions"][1]["bgp_state"], "Established");
        assert_eq!(v["bgp"][0]["sessions"][1]["announced"], "198.51.100.100/32");
        assert!(
            v["steps"]
                .as_array()
                .is_some_and(|a| a.iter().any(|f| f["check"] == "bgp-advertised"
                    && f["title"]
                        == "198.51.100.100 advertised over BGP by node-1, node-2 to tor (Established, BFD Up)"))
        );
        // Without --node, the rules are read as the first advertising node's.
        let rules = crate::rules::parse(
            "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j KUBE-SERVICES\n-A KUBE-SERVICES -d 198.51.100.100/32 -p tcp -m tcp --dport 80 -j KUBE-EXT-A\n-A KUBE-EXT-A -j KUBE-SVL-A\n-A KUBE-SVL-A -j KUBE-SEP-B\n-A KUBE-SEP-B -p tcp -j DNAT --to-destination 192.0.2.2:8080\nCOMMIT\n",
        )
        .expect("parses");
        let w = walk_rules(&s, &r, &rules, &RulesOptions::default());
        assert_eq!(w[0].node.as_deref(), Some("node-1"));
        assert_eq!(
            w[0].findings[0].severity,
            Severity::Ok,
            "{:?}",
            w[0].findings
        );
    }

    #[test]
    fn bgp_kinds_not_installed_is_said_where_l2_does_not_cover() {
        let mut s = base_snapshot();
        s.bgp_unread.advertisements = Some("not installed".into());
        let r = report(&s, "default", "web", None).expect("found");
        let f = step(&r, "bgp-advertised");
        assert_eq!(f.severity, Severity::Info);
        assert_eq!(
            f.title,
            "BGP mode's kinds are not installed: only L2 announcement was checked"
        );
        s.bgp_unread.advertisements = Some("forbidden: no".into());
        let r = report(&s, "default", "web", None).expect("found");
        assert_eq!(step(&r, "bgp-advertised").severity, Severity::Warning);
    }
}
