//! Real nodes: what a lab node's containerd, CNI plugins and kubelet are given — their
//! directories, configuration files and command lines.
//!
//! Everything a node writes lives under its own directory (`<run>/nodes/<node>`) and cgroup
//! root, because several kubelets share one kernel: two kubelets with one cgroup root delete
//! each other's pod cgroups as orphans, and a shared pod-log directory is garbage-collected by
//! whichever kubelet does not know the pod.
//!
//! Pure: builds paths, text and argv lists. It must not spawn, read clocks or touch the
//! filesystem; `lab` writes and runs what this returns, `host` undoes what the programs change
//! outside these directories.

use std::path::{Path, PathBuf};

use crate::plan::{Ipv4Net, Ipv6Net, LabHost, POD_CIDR_V4, POD_CIDR_V6};

/// containerd from Debian's package (1.6).
pub const CONTAINERD: &str = "/usr/bin/containerd";
/// containerd's client, used to import images.
pub const CTR: &str = "/usr/bin/ctr";
/// runc from Debian's package. Not crun: crun 1.8 rejects the machine's hybrid cgroup layout.
pub const RUNC: &str = "/usr/sbin/runc";
/// Where Debian's `containernetworking-plugins` installs bridge, host-local, portmap.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// The sandbox image every pod starts with; the lab builds and imports it.
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";
/// The containerd namespace the CRI plugin (and so the kubelet) uses.
pub const CRI_NAMESPACE: &str = "k8s.io";
/// The bridge the CNI plugin creates in each node namespace for its pods.
pub const POD_BRIDGE: &str = "cni0";
/// Most pods a node runs (its /28 holds 13 pod addresses; hostNetwork pods take none).
pub const MAX_PODS: u32 = 24;

/// The files of one real node, all under `<run>/nodes/<node>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLayout {
    /// The node's directory.
    pub dir: PathBuf,
}

impl NodeLayout {
    /// The layout of `node` in run directory `run`.
    pub fn new(run: &Path, node: &str) -> NodeLayout {
        NodeLayout {
            dir: run.join("nodes").join(node),
        }
    }
    /// containerd's persistent root (content store, snapshots).
    pub fn containerd_root(&self) -> PathBuf {
        self.dir.join("containerd/root")
    }
    /// containerd's state directory (task bundles, pod network namespaces).
    pub fn containerd_state(&self) -> PathBuf {
        self.dir.join("containerd/state")
    }
    /// containerd's gRPC socket.
    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd/c.sock")
    }
    /// containerd's config file.
    pub fn containerd_config(&self) -> PathBuf {
        self.dir.join("containerd/config.toml")
    }
    /// runc's state root (instead of the shared /run/containerd/runc).
    pub fn runc_root(&self) -> PathBuf {
        self.dir.join("runc")
    }
    /// The CNI configuration directory.
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("cni/net.d")
    }
    /// host-local's allocation records.
    pub fn cni_ipam_dir(&self) -> PathBuf {
        self.dir.join("cni/ipam")
    }
    /// The kubelet's root directory (`--root-dir`).
    pub fn kubelet_root(&self) -> PathBuf {
        self.dir.join("kubelet")
    }
    /// The kubelet's configuration file.
    pub fn kubelet_config(&self) -> PathBuf {
        self.dir.join("kubelet.json")
    }
    /// Pod logs (`podLogsDir`).
    pub fn pod_logs(&self) -> PathBuf {
        self.dir.join("pod-logs")
    }
    /// The resolv.conf pods get (the lab has no DNS).
    pub fn resolv_conf(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }
    /// The directories to create before containerd and the kubelet start.
    pub fn dirs(&self) -> Vec<PathBuf> {
        vec![
            self.containerd_root(),
            self.containerd_state(),
            self.runc_root(),
            self.cni_conf_dir(),
            self.cni_ipam_dir(),
            self.kubelet_root(),
            self.pod_logs(),
        ]
    }
}

/// The cgroup root of a node's kubelet, e.g. `/flb0a1b2c-node-1`, the same in every hierarchy.
pub fn cgroup_root(lab_id: &str, node: &str) -> String {
    format!("/{lab_id}-{node}")
}

/// The CNI network name of a lab; it names host-local's and libcni's records, so teardown can
/// tell a lab's entries in the shared `/var/lib/cni` from another lab's.
pub fn cni_network(lab_id: &str) -> String {
    format!("{lab_id}-pods")
}

fn s(p: impl AsRef<Path>) -> String {
    p.as_ref().to_string_lossy().into_owned()
}

/// containerd's configuration (format version 2, as Debian's 1.6 reads it).
///
/// Beyond a textbook setup: `restrict_oom_score_adj` (the machine's root lacks
/// CAP_SYS_RESOURCE, so a negative score fails), runc with its state in the node directory,
/// pod network namespaces under the state directory, no AppArmor, and the `opt` plugin kept out
/// of `/opt/containerd`.
pub fn containerd_config(layout: &NodeLayout, lab_id: &str) -> String {
    let sock = s(layout.containerd_socket());
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{RUNC}"
        Root = "{runc}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{conf}"
    max_conf_num = 1
    conf_template = ""
# {lab_id}
"#,
        root = s(layout.containerd_root()),
        state = s(layout.containerd_state()),
        opt = s(layout.dir.join("containerd/opt")),
        runc = s(layout.runc_root()),
        conf = s(layout.cni_conf_dir()),
    )
}

/// The CNI network of a node: a bridge with the node as gateway and host-local addresses from
/// its pod subnets, both families, plus portmap for hostPort pods.
pub fn cni_conflist(lab_id: &str, layout: &NodeLayout, v4: Ipv4Net, v6: Ipv6Net) -> String {
    let conf = serde_json::json!({
        "cniVersion": "0.4.0",
        "name": cni_network(lab_id),
        "plugins": [
            {
                "type": "bridge",
                "bridge": POD_BRIDGE,
                "isGateway": true,
                // Pods reach the API server and other nodes' pods with the node's address, so
                // nothing outside the nodes needs a route to the pod network.
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": s(layout.cni_ipam_dir()),
                    "ranges": [[{"subnet": v4.to_string()}], [{"subnet": v6.to_string()}]],
                    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    });
    serde_json::to_string_pretty(&conf).unwrap_or_default()
}

/// The kubelet's configuration for `host`.
///
/// Beyond a textbook setup: `failCgroupV1: false` (kubelet 1.36 refuses the machine's cgroup
/// v1 otherwise), a cgroup root and pod-log directory of its own, anonymous read of its API
/// (the API server's `kubectl logs`/`exec` connect without a client certificate), image garbage
/// collection off (the imported images cannot be pulled again), and eviction thresholds that a
/// busy shared disk does not trip.
pub fn kubelet_config(lab_id: &str, host: &LabHost, layout: &NodeLayout) -> String {
    let ip = host.ipv4.to_string();
    let conf = serde_json::json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": false,
        "failSwapOn": false,
        "cgroupRoot": cgroup_root(lab_id, &host.name),
        "containerRuntimeEndpoint": format!("unix://{}", s(layout.containerd_socket())),
        "address": ip,
        "healthzBindAddress": ip,
        "readOnlyPort": 0,
        "authentication": {"anonymous": {"enabled": true}, "webhook": {"enabled": false}},
        "authorization": {"mode": "AlwaysAllow"},
        "podLogsDir": s(layout.pod_logs()),
        "resolvConf": s(layout.resolv_conf()),
        "oomScoreAdj": 0,
        "maxPods": MAX_PODS,
        "serializeImagePulls": false,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
        // Pods start and Node status follows within a couple of seconds, not tens.
        "nodeStatusUpdateFrequency": "2s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
    });
    serde_json::to_string_pretty(&conf).unwrap_or_default()
}

/// containerd for a node.
pub fn containerd_args(layout: &NodeLayout) -> Vec<String> {
    vec![
        CONTAINERD.into(),
        "--config".into(),
        s(layout.containerd_config()),
    ]
}

/// The kubelet for `host`, registering itself as the Node `host.name` with both LAN addresses.
pub fn kubelet_args(
    tools: &Path,
    layout: &NodeLayout,
    host: &LabHost,
    kubeconfig: &Path,
) -> Vec<String> {
    vec![
        s(tools.join("kubelet")),
        format!("--config={}", s(layout.kubelet_config())),
        format!("--kubeconfig={}", s(kubeconfig)),
        format!("--root-dir={}", s(layout.kubelet_root())),
        format!("--cert-dir={}", s(layout.kubelet_root().join("pki"))),
        format!("--hostname-override={}", host.name),
        format!("--node-ip={},{}", host.ipv4, host.ipv6),
        "--v=1".into(),
    ]
}

/// `ctr` importing an image archive into a node's containerd, in the CRI namespace.
pub fn import_args(layout: &NodeLayout, archive: &Path) -> Vec<String> {
    vec![
        CTR.into(),
        "--address".into(),
        s(layout.containerd_socket()),
        "--namespace".into(),
        CRI_NAMESPACE.into(),
        "images".into(),
        "import".into(),
        "--all-platforms".into(),
        s(archive),
    ]
}

/// The pod network CIDRs kube-proxy treats as the cluster's (`clusterCIDR`): traffic from
/// elsewhere to a Service is masqueraded, traffic from pods is not.
pub fn cluster_cidrs() -> String {
    format!("{POD_CIDR_V4},{POD_CIDR_V6}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Plan, pod_subnets};

    fn layout() -> NodeLayout {
        NodeLayout::new(Path::new("/run/l"), "node-2")
    }

    #[test]
    fn every_node_path_is_inside_its_directory() {
        let l = layout();
        assert_eq!(l.dir, Path::new("/run/l/nodes/node-2"));
        for d in l.dirs() {
            assert!(d.starts_with(&l.dir), "{}", d.display());
        }
        // Unix socket paths are limited to 108 bytes; a long run directory still fits.
        let long = NodeLayout::new(
            Path::new("/tmp/ferrolb-lab/abcdefghijklmnopqrstuvwx"),
            "node-64",
        );
        assert!(s(long.containerd_socket()).len() + ".ttrpc".len() < 108);
    }

    #[test]
    fn containerd_keeps_its_state_in_the_node_directory() {
        let text = containerd_config(&layout(), "t");
        for needle in [
            r#"root = "/run/l/nodes/node-2/containerd/root""#,
            r#"state = "/run/l/nodes/node-2/containerd/state""#,
            r#"address = "/run/l/nodes/node-2/containerd/c.sock""#,
            r#"Root = "/run/l/nodes/node-2/runc""#,
            r#"conf_dir = "/run/l/nodes/node-2/cni/net.d""#,
            r#"path = "/run/l/nodes/node-2/containerd/opt""#,
            "restrict_oom_score_adj = true",
            "netns_mounts_under_state_dir = true",
            r#"BinaryName = "/usr/sbin/runc""#,
            r#"sandbox_image = "registry.k8s.io/pause:3.10""#,
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }

    #[test]
    fn cni_network_is_dual_stack_and_named_after_the_lab() {
        let (v4, v6) = pod_subnets(2).expect("subnets");
        let v: serde_json::Value =
            serde_json::from_str(&cni_conflist("flb1", &layout(), v4, v6)).expect("json");
        assert_eq!(v["name"], "flb1-pods");
        let bridge = &v["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["bridge"], POD_BRIDGE);
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "192.0.2.16/28");
        assert_eq!(
            bridge["ipam"]["ranges"][1][0]["subnet"],
            "2001:db8:1:2::/64"
        );
        assert_eq!(bridge["ipam"]["dataDir"], "/run/l/nodes/node-2/cni/ipam");
        assert_eq!(v["plugins"][1]["type"], "portmap");
    }

    #[test]
    fn kubelets_never_share_a_cgroup_root_or_log_directory() {
        let plan = Plan::new("t", 3).expect("plan");
        let confs: Vec<serde_json::Value> = plan
            .nodes
            .iter()
            .map(|h| {
                let l = NodeLayout::new(Path::new("/run/l"), &h.name);
                serde_json::from_str(&kubelet_config("t", h, &l)).expect("json")
            })
            .collect();
        assert_eq!(confs[0]["cgroupRoot"], "/t-node-1");
        assert_eq!(confs[0]["failCgroupV1"], false);
        assert_eq!(confs[0]["address"], "198.51.100.11");
        assert_eq!(
            confs[0]["containerRuntimeEndpoint"],
            "unix:///run/l/nodes/node-1/containerd/c.sock"
        );
        for (i, a) in confs.iter().enumerate() {
            for b in &confs[i + 1..] {
                assert_ne!(a["cgroupRoot"], b["cgroupRoot"]);
                assert_ne!(a["podLogsDir"], b["podLogsDir"]);
                assert_ne!(a["containerRuntimeEndpoint"], b["containerRuntimeEndpoint"]);
            }
        }
    }

    #[test]
    fn kubelet_registers_with_both_lan_addresses() {
        let plan = Plan::new("t", 1).expect("plan");
        let l = NodeLayout::new(Path::new("/run/l"), "node-1");
        let args = kubelet_args(
            Path::new("/bin"),
            &l,
            &plan.nodes[0],
            Path::new("/run/l/kc"),
        );
        assert_eq!(args[0], "/bin/kubelet");
        assert!(args.contains(&"--node-ip=198.51.100.11,2001:db8::11".to_string()));
        assert!(args.contains(&"--hostname-override=node-1".to_string()));
        assert!(args.contains(&"--root-dir=/run/l/nodes/node-1/kubelet".to_string()));
    }
}
