//! What the control plane and node daemons are started with: the run-directory layout,
//! etcd / kube-apiserver / kube-controller-manager / kube-scheduler / kube-proxy command lines,
//! kube-proxy's config file, and the `Node` objects standing in for kubelets in labs without
//! real nodes (real nodes are [`crate::node`]'s).
//!
//! Pure: builds argv lists, JSON text and API objects from the plan and paths. It must not
//! spawn, wait, read clocks (callers pass `now`) or talk to the API server.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::certs::{self, Pki};
use crate::plan::{API_PORT, CP_IPV4, LabHost, SERVICE_CIDRS};

/// The files of one lab inside its run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The run directory itself.
    pub run: PathBuf,
}

impl Layout {
    /// Layout rooted at `run`.
    pub fn new(run: &Path) -> Layout {
        Layout {
            run: run.to_path_buf(),
        }
    }
    /// Certificates and keys.
    pub fn pki(&self) -> Pki {
        Pki {
            dir: self.run.join("pki"),
        }
    }
    /// Log files of background processes.
    pub fn logs(&self) -> PathBuf {
        self.run.join("logs")
    }
    /// Log file for `name`.
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs().join(format!("{name}.log"))
    }
    /// etcd's data directory.
    pub fn etcd_data(&self) -> PathBuf {
        self.run.join("etcd")
    }
    /// Host-side kubeconfig (through the relay on 127.0.0.1).
    pub fn kubeconfig(&self) -> PathBuf {
        self.run.join("kubeconfig")
    }
    /// Kubeconfig for processes in node namespaces (the API server's LAN address).
    pub fn node_kubeconfig(&self) -> PathBuf {
        self.run.join("kubeconfig-node")
    }
    /// kube-controller-manager's kubeconfig (127.0.0.1:6443 inside the cp namespace).
    pub fn kcm_kubeconfig(&self) -> PathBuf {
        self.run.join("kubeconfig-kcm")
    }
    /// kube-scheduler's kubeconfig (127.0.0.1:6443 inside the cp namespace).
    pub fn scheduler_kubeconfig(&self) -> PathBuf {
        self.run.join("kubeconfig-scheduler")
    }
    /// Unix socket the cp-side relay listens on.
    pub fn api_socket(&self) -> PathBuf {
        self.run.join("apiserver.sock")
    }
    /// File where the host-side relay writes the port it bound.
    pub fn host_port_file(&self) -> PathBuf {
        self.run.join("relay-host.port")
    }
    /// kube-apiserver's scratch certificate directory (keeps it out of /var/run/kubernetes).
    pub fn apiserver_cert_dir(&self) -> PathBuf {
        self.run.join("apiserver")
    }
    /// kube-proxy's config file for `node`.
    pub fn kube_proxy_config(&self, node: &str) -> PathBuf {
        self.run.join(format!("kube-proxy-{node}.json"))
    }
    /// kube-apiserver's audit policy ([`AUDIT_POLICY`]).
    pub fn audit_policy(&self) -> PathBuf {
        self.run.join("audit-policy.yaml")
    }
    /// kube-apiserver's audit log: one JSON event per line.
    pub fn audit_log(&self) -> PathBuf {
        self.logs().join("audit.jsonl")
    }
}

/// What the API server audits: every request made with a ServiceAccount's credentials, once its
/// response is sent, without bodies. Tests read it to see exactly which verbs ferrolb's components
/// used and whether any was refused, whatever the components did with the refusal. Requests
/// of the lab itself (admin and controller-manager certificates) are not logged.
pub const AUDIT_POLICY: &str = "\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted, Panic]
rules:
  - level: Metadata
    userGroups: [\"system:serviceaccounts\"]
  - level: None
";

fn s(p: impl AsRef<Path>) -> String {
    p.as_ref().to_string_lossy().into_owned()
}

fn bin(tools: &Path, name: &str) -> String {
    s(tools.join(name))
}

/// etcd, listening only on 127.0.0.1 inside the cp namespace.
pub fn etcd_args(tools: &Path, layout: &Layout) -> Vec<String> {
    vec![
        bin(tools, "etcd"),
        "--name=lab".into(),
        format!("--data-dir={}", s(layout.etcd_data())),
        "--listen-client-urls=http://127.0.0.1:2379".into(),
        "--advertise-client-urls=http://127.0.0.1:2379".into(),
        "--listen-peer-urls=http://127.0.0.1:2380".into(),
        "--initial-advertise-peer-urls=http://127.0.0.1:2380".into(),
        "--initial-cluster=lab=http://127.0.0.1:2380".into(),
        // A lab's data is thrown away; fsync only costs time on a busy machine.
        "--unsafe-no-fsync".into(),
        "--log-level=warn".into(),
    ]
}

/// kube-apiserver, serving on every address of the cp namespace.
pub fn apiserver_args(tools: &Path, layout: &Layout) -> Vec<String> {
    let pki = layout.pki();
    vec![
        bin(tools, "kube-apiserver"),
        "--etcd-servers=http://127.0.0.1:2379".into(),
        format!("--secure-port={API_PORT}"),
        "--bind-address=0.0.0.0".into(),
        format!("--advertise-address={CP_IPV4}"),
        format!("--tls-cert-file={}", s(pki.crt(certs::APISERVER))),
        format!("--tls-private-key-file={}", s(pki.key(certs::APISERVER))),
        format!("--client-ca-file={}", s(pki.ca_crt())),
        "--authorization-mode=RBAC".into(),
        "--service-account-issuer=https://kubernetes.default.svc".into(),
        format!("--service-account-signing-key-file={}", s(pki.sa_key())),
        format!("--service-account-key-file={}", s(pki.sa_pub())),
        format!("--service-cluster-ip-range={SERVICE_CIDRS}"),
        format!("--cert-dir={}", s(layout.apiserver_cert_dir())),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
        // Nodes have no DNS names here: `kubectl logs` and `exec` dial the kubelet by address.
        "--kubelet-preferred-address-types=InternalIP".into(),
        format!("--audit-policy-file={}", s(layout.audit_policy())),
        format!("--audit-log-path={}", s(layout.audit_log())),
        "--audit-log-format=json".into(),
        // Blocking: an event is on disk before its response is sent, so a test that has seen a
        // component's effect can read the request behind it.
        "--audit-log-mode=blocking".into(),
        // A lab left running (make demo) must not fill the disk: 50 MB, then one rotated file.
        "--audit-log-maxsize=50".into(),
        "--audit-log-maxbackup=1".into(),
    ]
}

/// The controllers kube-controller-manager always runs. No node lifecycle controller: in labs
/// without real nodes it would taint and evict every stand-in Node, and with real nodes the
/// tests decide themselves when a node counts as gone.
pub const KCM_CONTROLLERS: &str = "namespace,garbagecollector,serviceaccount,serviceaccount-token,endpointslicemirroring,endpointslice";
/// The controllers added when real nodes run pods: Deployments, ReplicaSets, DaemonSets, the
/// `kube-root-ca.crt` ConfigMap that projected ServiceAccount tokens need, and node lifecycle
/// (it lifts the `not-ready` taint a kubelet registers with, and marks a silent node NotReady),
/// with the pod eviction and garbage collection that follow from it.
pub const KCM_WORKLOAD_CONTROLLERS: &str = "deployment-controller,replicaset-controller,daemonset-controller,root-ca-certificate-publisher-controller,node-lifecycle-controller,taint-eviction-controller,pod-garbage-collector-controller";

/// kube-controller-manager, talking to the API server over the cp namespace's loopback; with
/// the workload controllers when `workloads` (real nodes).
pub fn kcm_args(tools: &Path, layout: &Layout, workloads: bool) -> Vec<String> {
    let pki = layout.pki();
    let controllers = if workloads {
        format!("{KCM_CONTROLLERS},{KCM_WORKLOAD_CONTROLLERS}")
    } else {
        KCM_CONTROLLERS.to_string()
    };
    vec![
        bin(tools, "kube-controller-manager"),
        format!("--kubeconfig={}", s(layout.kcm_kubeconfig())),
        format!("--controllers={controllers}"),
        "--use-service-account-credentials=false".into(),
        format!("--service-account-private-key-file={}", s(pki.sa_key())),
        format!("--root-ca-file={}", s(pki.ca_crt())),
        "--leader-elect=false".into(),
        // No serving endpoint: nothing scrapes it, and it would need its own certificates.
        "--secure-port=0".into(),
    ]
}

/// kube-scheduler, talking to the API server over the cp namespace's loopback, serving nothing.
pub fn scheduler_args(tools: &Path, layout: &Layout) -> Vec<String> {
    vec![
        bin(tools, "kube-scheduler"),
        format!("--kubeconfig={}", s(layout.scheduler_kubeconfig())),
        format!(
            "--authentication-kubeconfig={}",
            s(layout.scheduler_kubeconfig())
        ),
        format!(
            "--authorization-kubeconfig={}",
            s(layout.scheduler_kubeconfig())
        ),
        "--leader-elect=false".into(),
        // Its health endpoint would need a port of the cp namespace and nothing reads it.
        "--bind-address=127.0.0.1".into(),
        "--secure-port=10259".into(),
        format!("--cert-dir={}", s(layout.run.join("scheduler"))),
    ]
}

/// How kube-proxy programs Services.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    /// iptables rules (kube-proxy's default).
    #[default]
    Iptables,
    /// nftables rules (table `kube-proxy` per family).
    Nftables,
}

impl ProxyMode {
    /// The name kube-proxy's `mode` setting takes.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Iptables => "iptables",
            ProxyMode::Nftables => "nftables",
        }
    }
}

/// kube-proxy's configuration for `node`: `mode`, bound to the node's LAN address, and
/// with every conntrack setting left alone (`maxPerCore: 0` and zero timeouts), because
/// `nf_conntrack_max` is global to the machine, not per namespace. With real nodes,
/// `cluster_cidr` names the pod network, so traffic from outside it to a Service is
/// masqueraded and traffic from pods is not.
pub fn kube_proxy_config(
    node: &LabHost,
    layout: &Layout,
    mode: ProxyMode,
    cluster_cidr: Option<&str>,
) -> String {
    let mut cfg = serde_json::json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": { "kubeconfig": s(layout.node_kubeconfig()) },
        "hostnameOverride": node.name,
        "bindAddress": node.ipv4.to_string(),
        "healthzBindAddress": format!("{}:10256", node.ipv4),
        "metricsBindAddress": format!("{}:10249", node.ipv4),
        "mode": mode.as_str(),
        // NodePorts on the node's own addresses only; this also keeps route_localnet off.
        "nodePortAddresses": ["primary"],
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
            "udpTimeout": "0s",
            "udpStreamTimeout": "0s",
        },
        // Leave the test process tree's OOM scores alone.
        "oomScoreAdj": 0,
    });
    if let Some(cidr) = cluster_cidr {
        cfg["clusterCIDR"] = cidr.into();
    }
    serde_json::to_string_pretty(&cfg).unwrap_or_default()
}

/// kube-proxy for `node`.
pub fn kube_proxy_args(tools: &Path, layout: &Layout, node: &str) -> Vec<String> {
    vec![
        bin(tools, "kube-proxy"),
        format!("--config={}", s(layout.kube_proxy_config(node))),
    ]
}

/// The `Node` object for a lab node (labels only; status is patched separately).
pub fn node_object(host: &LabHost) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(host.name.clone()),
            labels: Some(
                [
                    ("kubernetes.io/hostname", host.name.as_str()),
                    ("kubernetes.io/os", "linux"),
                    ("kubernetes.io/arch", "amd64"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ),
            ..ObjectMeta::default()
        },
        ..Node::default()
    }
}

/// The status a kubelet would report: addresses and Ready / NetworkUnavailable conditions.
pub fn node_status(host: &LabHost, now: Timestamp) -> NodeStatus {
    let addr = |type_: &str, address: String| NodeAddress {
        type_: type_.into(),
        address,
    };
    let cond = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    };
    NodeStatus {
        addresses: Some(vec![
            addr("InternalIP", host.ipv4.to_string()),
            addr("InternalIP", host.ipv6.to_string()),
            addr("Hostname", host.name.clone()),
        ]),
        conditions: Some(vec![
            cond("Ready", "True", "FerrolbLab", "lab node (no kubelet)"),
            cond("NetworkUnavailable", "False", "FerrolbLab", "lab LAN is up"),
        ]),
        ..NodeStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;

    fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
        args.iter()
            .find_map(|a| a.strip_prefix(name)?.strip_prefix('='))
    }

    #[test]
    fn apiserver_is_dual_stack_and_advertises_the_cp_address() {
        let layout = Layout::new(Path::new("/run/l"));
        let args = apiserver_args(Path::new("/bin"), &layout);
        assert_eq!(args[0], "/bin/kube-apiserver");
        assert_eq!(
            flag(&args, "--service-cluster-ip-range"),
            Some("203.0.113.0/24,2001:db8:ffff::/112")
        );
        assert_eq!(flag(&args, "--advertise-address"), Some("198.51.100.2"));
        assert_eq!(flag(&args, "--bind-address"), Some("0.0.0.0"));
        assert_eq!(flag(&args, "--secure-port"), Some("6443"));
        assert_eq!(flag(&args, "--authorization-mode"), Some("RBAC"));
        assert_eq!(
            flag(&args, "--service-account-issuer"),
            Some("https://kubernetes.default.svc")
        );
        assert_eq!(flag(&args, "--client-ca-file"), Some("/run/l/pki/ca.crt"));
        // Every path it is given lives in the run directory.
        for a in &args[1..] {
            if let Some((_, v)) = a.split_once('=')
                && v.starts_with('/')
            {
                assert!(v.starts_with("/run/l/"), "{a}");
            }
        }
    }

    #[test]
    fn controller_manager_never_runs_node_lifecycle() {
        let args = kcm_args(Path::new("/bin"), &Layout::new(Path::new("/run/l")), false);
        let controllers = flag(&args, "--controllers").expect("controllers flag");
        assert!(!controllers.contains("node"), "{controllers}");
        assert!(!controllers.contains('*'), "{controllers}");
        for c in [
            "namespace",
            "garbagecollector",
            "serviceaccount-token",
            "endpointslice",
        ] {
            assert!(controllers.split(',').any(|x| x == c), "{c}");
        }
        assert_eq!(flag(&args, "--leader-elect"), Some("false"));
        assert_eq!(
            flag(&args, "--use-service-account-credentials"),
            Some("false")
        );
        assert!(!controllers.contains("deployment"), "{controllers}");
        let real = kcm_args(Path::new("/bin"), &Layout::new(Path::new("/run/l")), true);
        let controllers = flag(&real, "--controllers").expect("controllers flag");
        for c in [
            "deployment-controller",
            "replicaset-controller",
            "daemonset-controller",
            "root-ca-certificate-publisher-controller",
            "node-lifecycle-controller",
            "endpointslice",
        ] {
            assert!(controllers.split(',').any(|x| x == c), "{c}");
        }
    }

    #[test]
    fn etcd_stays_on_loopback() {
        let args = etcd_args(Path::new("/bin"), &Layout::new(Path::new("/run/l")));
        for a in &args {
            if a.contains("://") {
                assert!(a.contains("127.0.0.1"), "{a}");
            }
        }
        assert_eq!(flag(&args, "--data-dir"), Some("/run/l/etcd"));
    }

    #[test]
    fn kube_proxy_config_stays_in_its_namespace() {
        let plan = Plan::new("t", 1).expect("plan");
        let text = kube_proxy_config(
            &plan.nodes[0],
            &Layout::new(Path::new("/run/l")),
            ProxyMode::Iptables,
            None,
        );
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["hostnameOverride"], "node-1");
        assert_eq!(v["bindAddress"], "198.51.100.11");
        assert_eq!(v["healthzBindAddress"], "198.51.100.11:10256");
        assert_eq!(v["metricsBindAddress"], "198.51.100.11:10249");
        assert_eq!(v["mode"], "iptables");
        assert_eq!(v["conntrack"]["maxPerCore"], 0);
        assert_eq!(v["nodePortAddresses"][0], "primary");
        assert_eq!(
            v["clientConnection"]["kubeconfig"],
            "/run/l/kubeconfig-node"
        );
        assert!(v.get("clusterCIDR").is_none());
        let nft = kube_proxy_config(
            &plan.nodes[0],
            &Layout::new(Path::new("/run/l")),
            ProxyMode::Nftables,
            Some("192.0.2.0/25,2001:db8:1::/48"),
        );
        let v: serde_json::Value = serde_json::from_str(&nft).expect("json");
        assert_eq!(v["mode"], "nftables");
        assert_eq!(v["clusterCIDR"], "192.0.2.0/25,2001:db8:1::/48");
    }

    #[test]
    fn node_objects_look_like_kubelet_registered_them() {
        let plan = Plan::new("t", 2).expect("plan");
        let n = node_object(&plan.nodes[1]);
        assert_eq!(n.metadata.name.as_deref(), Some("node-2"));
        let labels = n.metadata.labels.expect("labels");
        assert_eq!(labels["kubernetes.io/hostname"], "node-2");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["kubernetes.io/arch"], "amd64");

        let now = Timestamp::from_second(1_700_000_000).expect("valid time");
        let st = node_status(&plan.nodes[1], now);
        let addrs: Vec<_> = st
            .addresses
            .expect("addresses")
            .into_iter()
            .map(|a| (a.type_, a.address))
            .collect();
        assert_eq!(
            addrs,
            [
                ("InternalIP".to_string(), "198.51.100.12".to_string()),
                ("InternalIP".to_string(), "2001:db8::12".to_string()),
                ("Hostname".to_string(), "node-2".to_string()),
            ]
        );
        let conds: Vec<_> = st
            .conditions
            .expect("conditions")
            .into_iter()
            .map(|c| (c.type_, c.status))
            .collect();
        assert_eq!(
            conds,
            [
                ("Ready".to_string(), "True".to_string()),
                ("NetworkUnavailable".to_string(), "False".to_string()),
            ]
        );
        let json = serde_json::to_value(node_status(&plan.nodes[0], now)).expect("json");
        assert_eq!(
            json["conditions"][0]["lastHeartbeatTime"],
            "2023-11-14T22:13:20Z"
        );
    }
}
