//! `doctor`: checks a [`Snapshot`] for the known misconfigurations. Each check is a pure
//! function from the snapshot to [`Finding`]s, with a severity, why it matters and what to do; a
//! check that finds nothing wrong says so with one `ok` finding, so the output lists everything
//! that was checked.

use std::collections::BTreeSet;

use ferrolb_addresses::IpRange;

use crate::findings::{Finding, Severity};
use crate::snapshot::{
    Snapshot, adv_covers, bgp_adv_covers, bgp_selected_nodes, is_node_pool, name_of,
    node_pool_nodes, pod_node_ready, pool_ranges, selected_nodes, speaker_pods,
};

/// Every check, in the order they are shown.
pub fn run(snap: &Snapshot) -> Vec<Finding> {
    let mut out = Vec::new();
    for gap in &snap.gaps {
        out.push(
            Finding::new(
                Severity::Warning,
                "snapshot-incomplete",
                format!("could not read {gap}"),
            )
            .because("checks that need it are skipped or may miss problems"),
        );
    }
    out.extend(pools_vs_service_cidrs(snap));
    out.extend(pools_vs_nodes_and_pods(snap));
    out.extend(kube_proxy_ipvs_strict_arp(snap));
    out.extend(speakers_missing(snap));
    out.extend(other_implementations(snap));
    out.extend(pools_without_advertisement(snap));
    out.extend(reported_by_the_controller(snap));
    out
}

/// What the controller already reports on pools and L2Advertisements (`Ready` false,
/// `Overlapping` true), gathered in one place.
pub fn reported_by_the_controller(snap: &Snapshot) -> Vec<Finding> {
    const CHECK: &str = "controller-conditions";
    let mut out = Vec::new();
    for p in &snap.pools {
        for c in p.status.iter().flat_map(|s| s.conditions.iter()) {
            let bad = (c.type_ == ferrolb_crds::conditions::POOL_READY && c.status == "False")
                || (c.type_ == ferrolb_crds::conditions::POOL_OVERLAP && c.status == "True");
            if bad {
                out.push(
                    Finding::new(
                        Severity::Warning,
                        CHECK,
                        format!(
                            "pool {}: {} {}: {}",
                            name_of(p),
                            c.type_,
                            c.reason,
                            c.message
                        ),
                    )
                    .fix("fix the pool's addresses or selectors as the message says"),
                );
            }
        }
    }
    for a in &snap.l2advs {
        for c in a.status.iter().flat_map(|s| s.conditions.iter()) {
            if c.type_ == ferrolb_crds::conditions::L2_READY && c.status == "False" {
                out.push(
                    Finding::new(
                        Severity::Warning,
                        CHECK,
                        format!(
                            "L2Advertisement {}: {}: {}",
                            name_of(a),
                            c.reason,
                            c.message
                        ),
                    )
                    .fix("fix the advertisement's pools or selectors as the message says"),
                );
            }
        }
    }
    if out.is_empty() {
        out.push(Finding::new(
            Severity::Ok,
            CHECK,
            "no pool or L2Advertisement condition reports a problem",
        ));
    }
    out
}

/// An entry's range and its text, for every pool.
fn pool_entries(snap: &Snapshot) -> Vec<(String, String, IpRange)> {
    let mut out = Vec::new();
    for p in &snap.pools {
        for a in &p.spec.addresses {
            if let Ok(r) = ferrolb_addresses::parse_pool_entry(a) {
                out.push((name_of(p), a.clone(), r));
            }
        }
    }
    out
}

fn cidr(s: &str) -> Option<IpRange> {
    let (a, l) = s.trim().split_once('/')?;
    IpRange::cidr(a.parse().ok()?, l.parse().ok()?).ok()
}

/// Pools overlapping a `ServiceCIDR`: the controller would hand out cluster IPs as external IPs.
pub fn pools_vs_service_cidrs(snap: &Snapshot) -> Vec<Finding> {
    const CHECK: &str = "pool-overlaps-service-cidr";
    let mut out = Vec::new();
    if snap.service_cidrs.is_empty() {
        return vec![
            Finding::new(Severity::Info, CHECK, "no ServiceCIDR objects to compare pools with")
                .because("networking.k8s.io/v1 ServiceCIDRs exist from Kubernetes 1.33 on; on older clusters compare the pools with --service-cluster-ip-range by hand"),
        ];
    }
    let entries = pool_entries(snap);
    for sc in &snap.service_cidrs {
        for c in sc
            .spec
            .as_ref()
            .and_then(|s| s.cidrs.as_ref())
            .into_iter()
            .flatten()
        {
            let Some(r) = cidr(c) else { continue };
            for (pool, entry, pr) in &entries {
                if pr.overlap(&r).is_some() {
                    out.push(
                        Finding::new(
                            Severity::Error,
                            CHECK,
                            format!("pool {pool} ({entry}) overlaps the Service CIDR {c} (ServiceCIDR {})", name_of(sc)),
                        )
                        .because("an external IP from this range can equal a ClusterIP: kube-proxy sends both to whichever Service it meets first")
                        .fix(format!("remove {c}'s addresses from pool {pool}")),
                    );
                }
            }
        }
    }
    if out.is_empty() {
        out.push(Finding::new(
            Severity::Ok,
            CHECK,
            "no pool overlaps a Service CIDR",
        ));
    }
    out
}

/// Pools holding node addresses, or overlapping pod CIDRs.
pub fn pools_vs_nodes_and_pods(snap: &Snapshot) -> Vec<Finding> {
    const NODES: &str = "pool-overlaps-node-addresses";
    const PODS: &str = "pool-overlaps-pod-cidr";
    let entries = pool_entries(snap);
    let mut out = Vec::new();
    for n in &snap.nodes {
        let name = name_of(n);
        let addrs = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP");
        for a in addrs {
            let Ok(ip) = a.address.parse() else { continue };
            for (pool, entry, r) in &entries {
                if r.contains(ip) {
                    out.push(
                        Finding::new(
                            Severity::Error,
                            NODES,
                            format!("pool {pool} ({entry}) holds {ip}, the {} of node {name}", a.type_),
                        )
                        .because("a Service could get the node's own address; the speaker would then answer ARP/NDP for it from another node and cut the node off")
                        .fix(format!("take {ip} out of pool {pool}")),
                    );
                }
            }
        }
        let pod_cidrs = n
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidrs.clone())
            .or_else(|| {
                n.spec
                    .as_ref()
                    .and_then(|s| s.pod_cidr.clone())
                    .map(|c| vec![c])
            })
            .unwrap_or_default();
        for c in pod_cidrs {
            let Some(r) = cidr(&c) else { continue };
            for (pool, entry, pr) in &entries {
                if pr.overlap(&r).is_some() {
                    out.push(
                        Finding::new(
                            Severity::Error,
                            PODS,
                            format!("pool {pool} ({entry}) overlaps node {name}'s pod CIDR {c}"),
                        )
                        .because("an external IP equal to a pod's address is routed to the pod, not to the Service")
                        .fix(format!("remove {c}'s addresses from pool {pool}")),
                    );
                }
            }
        }
    }
    // kube-proxy's clusterCIDR covers pods on nodes without spec.podCIDRs.
    if let Some(cfg) = kube_proxy_conf(snap) {
        for c in cfg
            .get("clusterCIDR")
            .and_then(serde_yaml::Value::as_str)
            .unwrap_or("")
            .split(',')
            .filter(|c| !c.trim().is_empty())
        {
            let Some(r) = cidr(c) else { continue };
            for (pool, entry, pr) in &entries {
                if pr.overlap(&r).is_some() {
                    out.push(
                        Finding::new(
                            Severity::Error,
                            PODS,
                            format!("pool {pool} ({entry}) overlaps kube-proxy's clusterCIDR {}", c.trim()),
                        )
                        .because("kube-proxy treats sources in the cluster CIDR as pods (no masquerade), and pods may hold these addresses")
                        .fix(format!("remove {}'s addresses from pool {pool}", c.trim())),
                    );
                }
            }
        }
    }
    if !out.iter().any(|f| f.check == NODES) {
        out.push(Finding::new(
            Severity::Ok,
            NODES,
            "no pool holds a node address",
        ));
    }
    if !out.iter().any(|f| f.check == PODS) {
        out.push(Finding::new(
            Severity::Ok,
            PODS,
            "no pool overlaps a pod CIDR",
        ));
    }
    out
}

/// kube-proxy's configuration from the `kube-system/kube-proxy` ConfigMap (kubeadm's layout:
/// key `config.conf`; any key holding a KubeProxyConfiguration is accepted).
fn kube_proxy_conf(snap: &Snapshot) -> Option<serde_yaml::Value> {
    let data = snap.kube_proxy_config.as_ref()?.data.as_ref()?;
    data.values()
        .filter_map(|v| serde_yaml::from_str::<serde_yaml::Value>(v).ok())
        .find(|v| {
            v.get("kind").and_then(serde_yaml::Value::as_str) == Some("KubeProxyConfiguration")
                || v.get("mode").is_some()
        })
}

/// kube-proxy in IPVS mode without `strictARP`: every node answers ARP for every LoadBalancer IP.
pub fn kube_proxy_ipvs_strict_arp(snap: &Snapshot) -> Vec<Finding> {
    const CHECK: &str = "kube-proxy-ipvs-strict-arp";
    let Some(cfg) = kube_proxy_conf(snap) else {
        return vec![Finding::new(
            Severity::Info,
            CHECK,
            "no kube-proxy ConfigMap (kube-system/kube-proxy) to read: its mode is not checked",
        )];
    };
    let mode = cfg
        .get("mode")
        .and_then(serde_yaml::Value::as_str)
        .unwrap_or("");
    if mode != "ipvs" {
        return vec![Finding::new(
            Severity::Ok,
            CHECK,
            format!(
                "kube-proxy runs in {} mode; strictARP only matters for ipvs",
                if mode.is_empty() {
                    "its default (iptables)"
                } else {
                    mode
                }
            ),
        )];
    }
    let strict = cfg
        .get("ipvs")
        .and_then(|i| i.get("strictARP"))
        .and_then(serde_yaml::Value::as_bool)
        .unwrap_or(false);
    if strict {
        vec![Finding::new(
            Severity::Ok,
            CHECK,
            "kube-proxy runs in ipvs mode with strictARP: true",
        )]
    } else {
        vec![
            Finding::new(Severity::Error, CHECK, "kube-proxy runs in ipvs mode without strictARP")
                .because("IPVS puts every LoadBalancer IP on kube-ipvs0 of every node, and without strictARP every node answers ARP for it: clients reach random nodes and failover does not move traffic")
                .fix("set ipvs.strictARP: true in the kube-system/kube-proxy ConfigMap and restart kube-proxy"),
        ]
    }
}

/// Nodes that L2Advertisements, BGPAdvertisements or node pools select but that run no ready
/// speaker.
pub fn speakers_missing(snap: &Snapshot) -> Vec<Finding> {
    const CHECK: &str = "speakers-missing";
    let speakers = speaker_pods(snap);
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for adv in &snap.l2advs {
        for n in selected_nodes(snap, adv) {
            wanted.insert(name_of(n));
        }
    }
    // BGP mode: the nodes a BGPAdvertisement lets announce are the next hops routers get.
    for adv in &snap.bgp_advs {
        for n in bgp_selected_nodes(snap, adv) {
            wanted.insert(name_of(n));
        }
    }
    // Forwarder mode publishes a node only while a speaker there has checked its ports.
    for p in snap.pools.iter().filter(|p| is_node_pool(p)) {
        for n in node_pool_nodes(snap, p) {
            wanted.insert(name_of(n));
        }
    }
    if wanted.is_empty() {
        return vec![Finding::new(
            Severity::Info,
            CHECK,
            "no L2Advertisement, BGPAdvertisement or node pool selects any node: no speaker is needed",
        )];
    }
    if speakers.is_empty() {
        return vec![
            Finding::new(
                Severity::Error,
                CHECK,
                format!("no speaker pods found, and advertisements or node pools select {} node(s)", wanted.len()),
            )
            .because("without speakers nobody answers ARP/NDP for the IPs or announces them over BGP (speakers run outside Kubernetes cannot be seen from here)")
            .fix("install the chart (helm install ferrolb charts/ferrolb -n ferrolb-system) or check the speaker DaemonSet"),
        ];
    }
    let ready: BTreeSet<String> = speakers
        .iter()
        .filter_map(|p| match pod_node_ready(p) {
            (Some(n), true) => Some(n),
            _ => None,
        })
        .collect();
    let missing: Vec<&String> = wanted.iter().filter(|n| !ready.contains(*n)).collect();
    if missing.is_empty() {
        vec![Finding::new(
            Severity::Ok,
            CHECK,
            format!(
                "a ready speaker runs on each of the {} selected node(s)",
                wanted.len()
            ),
        )]
    } else {
        let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        vec![
            Finding::new(
                Severity::Warning,
                CHECK,
                format!("no ready speaker on {}", names.join(", ")),
            )
            .because("advertisements or node pools select these nodes, but no speaker there can announce: IPs fail over to fewer nodes, routers lose these next hops, Local Services with endpoints only there stay unannounced, and forwarder mode leaves these nodes out")
            .fix("check the DaemonSet's tolerations and nodeSelector, and the pods' events (kubectl -n ferrolb-system get pods -o wide)"),
        ]
    }
}

/// MetalLB or K3s servicelb running beside ferrolb.
pub fn other_implementations(snap: &Snapshot) -> Vec<Finding> {
    const CHECK: &str = "other-load-balancer";
    let mut out = Vec::new();
    let is_metallb = |name: &str, l: &std::collections::BTreeMap<String, String>| {
        name.contains("metallb")
            || l.get("app.kubernetes.io/name").map(String::as_str) == Some("metallb")
            || l.get("app").map(String::as_str) == Some("metallb")
    };
    let mut metallb: Vec<String> = Vec::new();
    for d in &snap.daemonsets {
        let l = d.metadata.labels.clone().unwrap_or_default();
        if is_metallb(&name_of(d), &l) {
            metallb.push(format!(
                "DaemonSet {}/{}",
                d.metadata.namespace.as_deref().unwrap_or(""),
                name_of(d)
            ));
        }
    }
    for d in &snap.deployments {
        let l = d.metadata.labels.clone().unwrap_or_default();
        if is_metallb(&name_of(d), &l) {
            metallb.push(format!(
                "Deployment {}/{}",
                d.metadata.namespace.as_deref().unwrap_or(""),
                name_of(d)
            ));
        }
    }
    if !metallb.is_empty() {
        out.push(
            Finding::new(Severity::Error, CHECK, format!("MetalLB is running: {}", metallb.join(", ")))
                .because("MetalLB and ferrolb both assign IPs to and answer for classless LoadBalancer Services: they overwrite each other's status and both answer ARP")
                .fix("migrate with `kubectl ferrolb migrate metallb --from-cluster`, then uninstall MetalLB (or give one of them a loadBalancerClass)"),
        );
    }
    let svclb_ds: Vec<String> = snap
        .daemonsets
        .iter()
        .filter(|d| {
            name_of(*d).starts_with("svclb-")
                || d.metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key("svccontroller.k3s.cattle.io/svcname"))
        })
        .map(|d| {
            format!(
                "{}/{}",
                d.metadata.namespace.as_deref().unwrap_or(""),
                name_of(d)
            )
        })
        .collect();
    let svclb_pods = snap
        .pods
        .iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key("svccontroller.k3s.cattle.io/svcname"))
        })
        .count();
    if !svclb_ds.is_empty() || svclb_pods > 0 {
        let what = if svclb_ds.is_empty() {
            format!("{svclb_pods} svclb pod(s)")
        } else {
            format!("DaemonSets {}", svclb_ds.join(", "))
        };
        out.push(
            Finding::new(Severity::Error, CHECK, format!("K3s servicelb is running: {what}"))
                .because("servicelb publishes node IPs for every LoadBalancer Service and binds their ports on the nodes, beside ferrolb's IPs")
                .fix("start the K3s servers with --disable=servicelb (see `kubectl ferrolb migrate k3s-servicelb`)"),
        );
    }
    if out.is_empty() {
        out.push(Finding::new(
            Severity::Ok,
            CHECK,
            "neither MetalLB nor K3s servicelb is running",
        ));
    }
    out
}

/// Address pools that no L2Advertisement or BGPAdvertisement covers: their IPs are allocated
/// but never announced. Node pools (forwarder mode) publish the nodes' own addresses, which
/// need no announcement, and are left out.
pub fn pools_without_advertisement(snap: &Snapshot) -> Vec<Finding> {
    const CHECK: &str = "pool-without-advertisement";
    let mut out = Vec::new();
    let address_pools: Vec<_> = snap.pools.iter().filter(|p| !is_node_pool(p)).collect();
    for p in &address_pools {
        let bgp = snap.bgp_advs.iter().any(|a| bgp_adv_covers(a, p));
        let l2: Vec<_> = snap.l2advs.iter().filter(|a| adv_covers(a, p)).collect();
        if l2.is_empty() && !bgp {
            out.push(
                Finding::new(Severity::Warning, CHECK, format!("no L2Advertisement or BGPAdvertisement covers pool {}", name_of(*p)))
                    .because("Services get IPs from it, but no speaker announces them: they do not answer")
                    .fix(format!("create an L2Advertisement with ipAddressPools: [{}] (or one without ipAddressPools, for every pool)", name_of(*p))),
            );
        } else if !bgp
            && l2.iter().all(|a| selected_nodes(snap, a).is_empty())
            && !snap.nodes.is_empty()
        {
            out.push(
                Finding::new(
                    Severity::Warning,
                    CHECK,
                    format!(
                        "the L2Advertisements covering pool {} select no node",
                        name_of(*p)
                    ),
                )
                .because("no node may announce its IPs")
                .fix("fix the advertisements' nodeSelectors, or the nodes' labels"),
            );
        }
        if pool_ranges(p).is_empty() {
            out.push(
                Finding::new(
                    Severity::Warning,
                    "pool-unusable",
                    format!("pool {} has no entry that parses", name_of(*p)),
                )
                .fix("see the pool's Ready condition (kubectl get ipaddresspools)"),
            );
        }
    }
    if out.is_empty() {
        let node_pools = snap.pools.len() - address_pools.len();
        out.push(Finding::new(
            Severity::Ok,
            CHECK,
            match (address_pools.len(), node_pools) {
                (0, 0) => "no pools".to_string(),
                (0, n) => format!("{n} node pool(s) (forwarder mode), which need no advertisement"),
                (a, 0) => format!("every pool ({a}) is covered by an advertisement"),
                (a, n) => format!("every address pool ({a}) is covered by an advertisement; {n} node pool(s) (forwarder mode) need none"),
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snap() -> Snapshot {
        let mut s = Snapshot::default();
        s.pools.push(
            serde_json::from_value(json!({
                "metadata": {"name": "blue", "labels": {"tier": "a"}},
                "spec": {"addresses": ["198.51.100.100-198.51.100.149", "2001:db8::100/120"]}
            }))
            .expect("pool"),
        );
        s.l2advs.push(
            serde_json::from_value(json!({
                "metadata": {"name": "all"}, "spec": {}
            }))
            .expect("adv"),
        );
        for (n, ip) in [("node-1", "198.51.100.11"), ("node-2", "198.51.100.12")] {
            s.nodes.push(serde_json::from_value(json!({
                "metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}},
                "spec": {"podCIDRs": [format!("192.0.2.{}/28", if n == "node-1" { 0 } else { 16 })]},
                "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                           "conditions": [{"type": "Ready", "status": "True"}]}
            })).expect("node"));
            s.pods.push(serde_json::from_value(json!({
                "metadata": {"name": format!("speaker-{n}"), "namespace": "ferrolb-system",
                             "labels": {"app.kubernetes.io/component": "speaker", "app.kubernetes.io/part-of": "ferrolb"}},
                "spec": {"nodeName": n, "containers": []},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}
            })).expect("pod"));
        }
        s.service_cidrs.push(serde_json::from_value(json!({
            "metadata": {"name": "kubernetes"}, "spec": {"cidrs": ["203.0.113.0/24", "2001:db8:ffff::/112"]}
        })).expect("cidr"));
        s.kube_proxy_config = Some(serde_json::from_value(json!({
            "metadata": {"name": "kube-proxy", "namespace": "kube-system"},
            "data": {"config.conf": "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: iptables\nclusterCIDR: 192.0.2.0/25\n"}
        })).expect("cm"));
        s
    }

    fn errors(f: &[Finding]) -> Vec<&str> {
        f.iter()
            .filter(|f| f.severity >= Severity::Warning)
            .map(|f| f.check.as_str())
            .collect()
    }

    #[test]
    fn a_healthy_cluster_has_only_ok_findings() {
        let f = run(&snap());
        assert!(errors(&f).is_empty(), "{f:#?}");
        assert!(f.len() >= 6);
    }

    #[test]
    fn pool_in_the_service_cidr() {
        let mut s = snap();
        s.pools[0]
            .spec
            .addresses
            .push("203.0.113.200-203.0.113.210".into());
        let f = pools_vs_service_cidrs(&s);
        assert_eq!(errors(&f), ["pool-overlaps-service-cidr"]);
        assert!(f[0].title.contains("203.0.113.0/24"), "{}", f[0].title);
        s.service_cidrs.clear();
        assert_eq!(pools_vs_service_cidrs(&s)[0].severity, Severity::Info);
    }

    #[test]
    fn pool_holding_a_node_or_pod_address() {
        let mut s = snap();
        s.pools[0].spec.addresses = vec!["198.51.100.0/24".into()];
        let f = pools_vs_nodes_and_pods(&s);
        assert_eq!(
            errors(&f),
            [
                "pool-overlaps-node-addresses",
                "pool-overlaps-node-addresses"
            ]
        );
        let mut s = snap();
        s.pools[0].spec.addresses = vec!["192.0.2.16-192.0.2.20".into()];
        let f = pools_vs_nodes_and_pods(&s);
        // node-2's pod CIDR and kube-proxy's clusterCIDR.
        assert_eq!(
            errors(&f),
            ["pool-overlaps-pod-cidr", "pool-overlaps-pod-cidr"],
            "{f:#?}"
        );
    }

    #[test]
    fn ipvs_without_strict_arp() {
        let mut s = snap();
        let cm = |conf: &str| {
            serde_json::from_value(
                json!({"metadata": {"name": "kube-proxy"}, "data": {"config.conf": conf}}),
            )
            .expect("cm")
        };
        s.kube_proxy_config = Some(cm(
            "kind: KubeProxyConfiguration\nmode: ipvs\nipvs:\n  strictARP: false\n",
        ));
        assert_eq!(kube_proxy_ipvs_strict_arp(&s)[0].severity, Severity::Error);
        s.kube_proxy_config = Some(cm("kind: KubeProxyConfiguration\nmode: ipvs\n"));
        assert_eq!(kube_proxy_ipvs_strict_arp(&s)[0].severity, Severity::Error);
        s.kube_proxy_config = Some(cm(
            "kind: KubeProxyConfiguration\nmode: ipvs\nipvs:\n  strictARP: true\n",
        ));
        assert_eq!(kube_proxy_ipvs_strict_arp(&s)[0].severity, Severity::Ok);
        s.kube_proxy_config = None;
        assert_eq!(kube_proxy_ipvs_strict_arp(&s)[0].severity, Severity::Info);
    }

    #[test]
    fn speaker_missing_on_a_selected_node() {
        let mut s = snap();
        s.pods
            .retain(|p| p.spec.as_ref().and_then(|x| x.node_name.as_deref()) != Some("node-2"));
        let f = speakers_missing(&s);
        assert_eq!(errors(&f), ["speakers-missing"]);
        assert_eq!(f[0].title, "no ready speaker on node-2");
        // An advertisement that selects only node-1 needs no speaker on node-2.
        s.l2advs[0] = serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "spec": {"nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": "node-1"}}]}
        }))
        .expect("adv");
        assert!(errors(&speakers_missing(&s)).is_empty());
        s.pods.clear();
        assert_eq!(errors(&speakers_missing(&s)), ["speakers-missing"]);
    }

    #[test]
    fn speaker_missing_on_a_node_bgp_announces_from() {
        let mut s = snap();
        s.l2advs.clear();
        s.pods
            .retain(|p| p.spec.as_ref().and_then(|x| x.node_name.as_deref()) != Some("node-2"));
        assert_eq!(
            speakers_missing(&s)[0].severity,
            Severity::Info,
            "nothing selects a node"
        );
        s.bgp_advs.push(
            serde_json::from_value(json!({"metadata": {"name": "all"}, "spec": {}}))
                .expect("bgp adv"),
        );
        let f = speakers_missing(&s);
        assert_eq!(errors(&f), ["speakers-missing"]);
        assert_eq!(f[0].title, "no ready speaker on node-2");
        s.bgp_advs[0] = serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "spec": {"nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": "node-1"}}]}
        }))
        .expect("bgp adv");
        assert!(errors(&speakers_missing(&s)).is_empty());
    }

    #[test]
    fn metallb_and_servicelb_are_found() {
        let mut s = snap();
        s.daemonsets.push(serde_json::from_value(json!({
            "metadata": {"name": "speaker", "namespace": "metallb-system", "labels": {"app": "metallb"}}
        })).expect("ds"));
        s.daemonsets.push(
            serde_json::from_value(json!({
                "metadata": {"name": "svclb-web-1234", "namespace": "kube-system"}
            }))
            .expect("ds"),
        );
        let f = other_implementations(&s);
        assert_eq!(errors(&f), ["other-load-balancer", "other-load-balancer"]);
        assert!(f[0].title.contains("metallb-system/speaker"));
        assert!(f[1].title.contains("svclb-web-1234"));
    }

    #[test]
    fn controller_conditions_are_gathered() {
        let mut s = snap();
        assert!(errors(&reported_by_the_controller(&s)).is_empty());
        s.pools[0].status = Some(serde_json::from_value(json!({
            "conditions": [{"type": "Overlapping", "status": "True", "reason": "Overlap",
                            "message": "198.51.100.100-198.51.100.149 overlaps pool red", "lastTransitionTime": "2026-12-07T08:00:00Z"}]
        })).expect("status"));
        s.l2advs[0].status = Some(serde_json::from_value(json!({
            "conditions": [{"type": "Ready", "status": "False", "reason": "UnknownPools",
                            "message": "pool green does not exist", "lastTransitionTime": "2026-12-07T08:00:00Z"}]
        })).expect("status"));
        let f = reported_by_the_controller(&s);
        assert_eq!(
            errors(&f),
            ["controller-conditions", "controller-conditions"]
        );
        assert!(f[0].title.contains("overlaps pool red"));
        assert!(f[1].title.contains("UnknownPools"));
    }

    #[test]
    fn pool_without_advertisement() {
        let mut s = snap();
        s.l2advs[0] = serde_json::from_value(json!({
            "metadata": {"name": "red-only"}, "spec": {"ipAddressPools": ["red"]}
        }))
        .expect("adv");
        let f = pools_without_advertisement(&s);
        assert_eq!(errors(&f), ["pool-without-advertisement"]);
        assert!(
            f[0].fix
                .as_deref()
                .is_some_and(|x| x.contains("ipAddressPools: [blue]"))
        );
        s.l2advs[0] = serde_json::from_value(json!({
            "metadata": {"name": "by-label"},
            "spec": {"ipAddressPoolSelectors": [{"matchLabels": {"tier": "a"}}]}
        }))
        .expect("adv");
        assert!(errors(&pools_without_advertisement(&s)).is_empty());
        // A BGPAdvertisement covers it just as well.
        s.l2advs.clear();
        assert_eq!(
            errors(&pools_without_advertisement(&s)),
            ["pool-without-advertisement"]
        );
        s.bgp_advs.push(
            serde_json::from_value(json!({
                "metadata": {"name": "bgp"}, "spec": {"ipAddressPools": ["blue"]}
            }))
            .expect("bgp adv"),
        );
        assert!(errors(&pools_without_advertisement(&s)).is_empty());
    }

    #[test]
    fn node_pools_need_no_advertisement_but_speakers() {
        let mut s = snap();
        s.l2advs.clear();
        s.pools[0] = serde_json::from_value(json!({
            "metadata": {"name": "nodes"},
            "spec": {"nodeAddresses": {"nodeSelector": {"matchLabels": {"kubernetes.io/hostname": "node-2"}}}}
        }))
        .expect("node pool");
        let f = run(&s);
        assert!(errors(&f).is_empty(), "{f:#?}");
        let adv = pools_without_advertisement(&s);
        assert_eq!(
            adv[0].title,
            "1 node pool(s) (forwarder mode), which need no advertisement"
        );
        // Forwarder mode needs a ready speaker on the nodes the pool selects.
        s.pods
            .retain(|p| p.spec.as_ref().and_then(|x| x.node_name.as_deref()) != Some("node-2"));
        let f = speakers_missing(&s);
        assert_eq!(errors(&f), ["speakers-missing"]);
        assert_eq!(f[0].title, "no ready speaker on node-2");
    }
}
