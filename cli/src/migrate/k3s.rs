//! `migrate k3s-servicelb`: K3s servicelb's node labels to forwarder-mode IPAddressPools, and
//! the steps to turn servicelb off. Pure: Nodes in, pools and steps out.
//!
//! servicelb publishes, for each LoadBalancer Service, the addresses of nodes: only nodes
//! labelled `svccontroller.k3s.cattle.io/enablelb=true` once any node carries that label, and,
//! for a Service labelled `svccontroller.k3s.cattle.io/lbpool=P`, only nodes with the same
//! `lbpool` label. A node's ExternalIP is published where it has one, else its InternalIP.
//! Here that becomes one pool per `lbpool` value (selecting those nodes, serving the Services
//! with that label first) and one default pool, each with `spec.nodeAddresses` (`nodeSelector`,
//! `addressType: PreferExternalIP`), built from ferrolb-crds' types. (A single pool with
//! `nodeAddresses.k3sServiceLBLabels: true` honours the same labels at run time; these pools
//! say it with selectors, the ferrolb way.)

use std::collections::{BTreeMap, BTreeSet};

use ferrolb_crds::{IPAddressPoolSpec, NodeAddressType, NodeAddresses, ServiceAllocation};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};

use crate::findings::{Finding, Severity};
use crate::migrate::metallb::{API_VERSION, Converted};

/// servicelb's node label that limits publishing to labelled nodes.
pub const ENABLE_LB: &str = "svccontroller.k3s.cattle.io/enablelb";
/// servicelb's node (and Service) label naming a pool.
pub const LB_POOL: &str = "svccontroller.k3s.cattle.io/lbpool";

/// What to do on the K3s servers, in order.
pub const STEPS: [&str; 4] = [
    "apply the pools printed on standard output (kubectl apply -f -, or rerun with --apply); until servicelb is off both implementations answer LoadBalancer Services, so take the next step right after",
    "on every K3s server, add `disable: [servicelb]` to /etc/rancher/k3s/config.yaml (or start k3s with --disable=servicelb) and restart k3s; K3s then deletes the svclb-* DaemonSets in kube-system",
    "check with `kubectl ferrolb doctor` that servicelb is gone, and with `kubectl get svc` that each LoadBalancer Service shows its nodes' addresses again",
    "later, replace the node labels by the pools' nodeSelectors if you like; the labels no longer matter to K3s",
];

/// Converts Nodes to forwarder-mode pools named `<base>` and `<base>-<lbpool>`.
pub fn convert(nodes: &[Node], base: &str) -> Converted {
    let mut out = Converted::default();
    let label = |n: &Node, k: &str| n.metadata.labels.as_ref().and_then(|l| l.get(k)).cloned();
    let gated = nodes.iter().any(|n| label(n, ENABLE_LB).is_some());
    let pools: BTreeSet<String> = nodes.iter().filter_map(|n| label(n, LB_POOL)).collect();
    let enabled = |n: &Node| !gated || label(n, ENABLE_LB).as_deref() == Some("true");
    let count = |pool: Option<&str>| {
        nodes
            .iter()
            .filter(|n| enabled(n) && pool.is_none_or(|p| label(n, LB_POOL).as_deref() == Some(p)))
            .count()
    };
    let mut match_labels = BTreeMap::new();
    if gated {
        match_labels.insert(ENABLE_LB.to_string(), "true".to_string());
    }
    let pool = |name: &str, labels: BTreeMap<String, String>, service: Option<&str>| {
        let selector = |l: BTreeMap<String, String>| LabelSelector {
            match_labels: Some(l),
            ..LabelSelector::default()
        };
        let spec = IPAddressPoolSpec {
            addresses: Vec::new(),
            node_addresses: Some(NodeAddresses {
                node_selector: (!labels.is_empty()).then(|| selector(labels)),
                address_type: NodeAddressType::PreferExternalIP,
                ..NodeAddresses::default()
            }),
            auto_assign: true,
            avoid_buggy_ips: false,
            service_allocation: service.map(|p| ServiceAllocation {
                priority: Some(0),
                service_selectors: vec![selector(BTreeMap::from([(
                    LB_POOL.to_string(),
                    p.to_string(),
                )]))],
                ..ServiceAllocation::default()
            }),
        };
        json!({
            "apiVersion": API_VERSION,
            "kind": "IPAddressPool",
            "metadata": {"name": name, "labels": {"ferrolb.io/migrated-from": "k3s-servicelb"}},
            "spec": serde_json::to_value(spec).unwrap_or(Value::Null),
        })
    };
    out.objects.push(pool(base, match_labels.clone(), None));
    out.notes.push(Finding::new(
        Severity::Info,
        "k3s-default-pool",
        format!(
            "pool {base}: {} node(s){}",
            count(None),
            if gated {
                format!(" labelled {ENABLE_LB}=true")
            } else {
                String::new()
            }
        ),
    ));
    for p in &pools {
        let mut l = match_labels.clone();
        l.insert(LB_POOL.to_string(), p.clone());
        let name = format!("{base}-{p}");
        out.objects.push(pool(&name, l, Some(p)));
        out.notes.push(Finding::new(
            Severity::Info,
            "k3s-lbpool",
            format!(
                "pool {name}: {} node(s) with {LB_POOL}={p}, for Services labelled {LB_POOL}={p}",
                count(Some(p))
            ),
        ));
    }
    if gated && count(None) == 0 {
        out.notes.push(
            Finding::new(
                Severity::Warning,
                "k3s-no-nodes",
                format!("no node is labelled {ENABLE_LB}=true"),
            )
            .because("servicelb published no node; the pools select none either"),
        );
    }
    out.notes.push(
        Finding::new(Severity::Info, "k3s-forwarder-mode", "the pools use forwarder mode (spec.nodeAddresses): the nodes' own addresses, forwarded by kube-proxy")
            .because("that is what servicelb published; unlike servicelb, externalTrafficPolicy Local keeps the client's address and a port taken on a node is a condition naming the culprit"),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: &[(&str, &str)]) -> Node {
        let l: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| ((*k).to_string(), json!(v)))
            .collect();
        serde_json::from_value(json!({"metadata": {"name": name, "labels": l}})).expect("node")
    }

    #[test]
    fn labels_become_pools() {
        let nodes = [
            node("a", &[(ENABLE_LB, "true"), (LB_POOL, "edge")]),
            node("b", &[(ENABLE_LB, "true")]),
            node("c", &[(ENABLE_LB, "false"), (LB_POOL, "edge")]),
            node("d", &[]),
        ];
        let c = convert(&nodes, "servicelb");
        assert_eq!(c.objects.len(), 2);
        let def = &c.objects[0];
        assert_eq!(def["metadata"]["name"], "servicelb");
        assert_eq!(
            def["spec"]["nodeAddresses"]["nodeSelector"]["matchLabels"][ENABLE_LB],
            "true"
        );
        assert_eq!(
            def["spec"]["nodeAddresses"]["addressType"],
            "PreferExternalIP"
        );
        let edge = &c.objects[1];
        assert_eq!(edge["metadata"]["name"], "servicelb-edge");
        assert_eq!(
            edge["spec"]["nodeAddresses"]["nodeSelector"]["matchLabels"][LB_POOL],
            "edge"
        );
        assert_eq!(
            edge["spec"]["serviceAllocation"]["serviceSelectors"][0]["matchLabels"][LB_POOL],
            "edge"
        );
        assert!(
            c.notes.iter().any(|n| n.title
                == "pool servicelb: 2 node(s) labelled svccontroller.k3s.cattle.io/enablelb=true"),
            "{:?}",
            c.notes
        );
        assert!(
            c.notes
                .iter()
                .any(|n| n.title.starts_with("pool servicelb-edge: 1 node(s)")),
            "{:?}",
            c.notes
        );
    }

    #[test]
    fn without_labels_every_node_is_published() {
        let c = convert(&[node("a", &[]), node("b", &[])], "lb");
        assert_eq!(c.objects.len(), 1);
        assert!(
            c.objects[0]["spec"]["nodeAddresses"]
                .get("nodeSelector")
                .is_none()
        );
        assert!(c.notes[0].title.contains("2 node(s)"));
    }
}
