//! Forwarder mode, the speaker's side: this node's report for the node pools' Services
//! (`ForwarderNode`, named after the node). The controller publishes a node's addresses for a
//! Service only once the report says its ports are checked and free here; kube-proxy then
//! forwards them. The speaker forwards nothing itself.
//!
//! Pure parts: [`sockets`] (reading `/proc/net`), [`check`] (which wanted ports are
//! unavailable and why), [`proxy::listeners`]. Pools with `forwarding: Speaker` are forwarded
//! by this speaker's userspace [`proxy`] instead of kube-proxy. The shell, [`run`], keeps the
//! inputs (the shared plan's
//! `forwarded_ports`, this node's addresses, hostPort pods on this node from a watch, the
//! interface table for `kube-ipvs0`), re-reads the sockets every [`PERIOD`] while any port is
//! wanted, and writes the report by server-side apply only when it changes. A node whose pools
//! have no Services writes nothing at all.

pub mod check;
pub mod proxy;
pub mod sockets;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ferrolb_addresses::Family;
use ferrolb_crds::{ForwarderNode, ForwarderNodeStatus};
use ferrolb_runtime::Metrics;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use tokio::sync::watch;

use crate::netif::IfaceTable;
use crate::objects::FIELD_MANAGER;
use crate::watch::Published;
use check::{Denied, HostPort, Wanted};

/// How often the node's sockets are read while some port is wanted: a listener started on a
/// node takes the node out of the Service within about this long.
pub const PERIOD: Duration = Duration::from_secs(2);
/// The interface kube-proxy creates in IPVS mode.
pub const IPVS_INTERFACE: &str = "kube-ipvs0";
/// Where a node's sockets are listed, per protocol.
const PROC_NET: [(&str, Proto); 4] = [
    ("/proc/net/tcp", Proto::Tcp),
    ("/proc/net/tcp6", Proto::Tcp),
    ("/proc/net/udp", Proto::Udp),
    ("/proc/net/udp6", Proto::Udp),
];

/// A Service port's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP (only the deny-list and hostPorts are checked: /proc has no simple SCTP listing).
    Sctp,
}

impl Proto {
    /// As Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        }
    }

    /// From Kubernetes' spelling.
    pub fn parse(s: &str) -> Option<Proto> {
        match s {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }
}

/// Settings of the forwarder task.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node.
    pub node: String,
    /// Ports never published, with why.
    pub denied: Vec<Denied>,
}

/// Every `family/protocol/port` to check for the plan's forwarded ports (both families: the
/// controller decides which a Service uses, and a check too many costs nothing).
pub fn wanted(ports: &BTreeSet<(String, u16)>) -> BTreeSet<Wanted> {
    ports
        .iter()
        .filter_map(|(proto, port)| Some((Proto::parse(proto)?, *port)))
        .flat_map(|(proto, port)| {
            Family::ALL.map(|family| Wanted {
                family,
                proto,
                port,
            })
        })
        .collect()
}

/// The hostPorts of a pod, when it runs.
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let name = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded") | Some("Failed")) {
        return Vec::new();
    }
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = u16::try_from(p.host_port?).ok().filter(|p| *p > 0)?;
            Some(HostPort {
                pod: name.clone(),
                proto: Proto::parse(p.protocol.as_deref().unwrap_or("TCP"))?,
                port,
                host_ip: p.host_ip.as_deref().and_then(|h| h.parse().ok()),
            })
        })
        .collect()
}

fn read_sockets() -> Vec<sockets::Socket> {
    PROC_NET
        .iter()
        .filter_map(|(path, proto)| {
            Some(sockets::parse(&std::fs::read_to_string(path).ok()?, *proto))
        })
        .flatten()
        .collect()
}

/// Keeps this node's `ForwarderNode` report current until the process ends.
pub async fn run(
    client: kube::Client,
    cfg: Config,
    mut plans: watch::Receiver<Option<Arc<Published>>>,
    mut ifaces: watch::Receiver<IfaceTable>,
    metrics: Metrics,
) {
    let pods = watcher(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default().fields(&format!("spec.nodeName={}", cfg.node)),
    )
    .default_backoff();
    let mut pods = pods.boxed();
    let mut host_ports: std::collections::BTreeMap<String, Vec<HostPort>> = Default::default();
    let api: Api<ForwarderNode> = Api::all(client);
    let mut written: Option<ForwarderNodeStatus> = None;
    let mut proxies = proxy::Proxies::default();
    let mut last_error: Option<String> = None;
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            Some(ev) = pods.next() => match ev {
                Ok(Event::Apply(p)) | Ok(Event::InitApply(p)) => {
                    let key = format!("{}/{}", p.metadata.namespace.as_deref().unwrap_or_default(), p.metadata.name.as_deref().unwrap_or_default());
                    host_ports.insert(key, self::host_ports(&p));
                }
                Ok(Event::Delete(p)) => {
                    let key = format!("{}/{}", p.metadata.namespace.as_deref().unwrap_or_default(), p.metadata.name.as_deref().unwrap_or_default());
                    host_ports.remove(&key);
                }
                Ok(Event::Init) => host_ports.clear(),
                Ok(Event::InitDone) => {}
                Err(e) => tracing::warn!(error = %e, "pod watch (hostPorts on this node) error; retrying"),
            },
            Ok(()) = plans.changed() => {}
            Ok(()) = ifaces.changed() => {}
            _ = tick.tick() => {}
        }
        let Some(published) = plans.borrow().clone() else {
            continue;
        };
        proxies
            .reconcile(&proxy::listeners(&published.plan.proxied))
            .await;
        let wanted = wanted(&published.plan.forwarded_ports);
        if wanted.is_empty() && written.is_none() {
            // No node pool wants this node: no report at all.
            continue;
        }
        let ipvs = ifaces.borrow().contains_key(IPVS_INTERFACE);
        let mut sockets = if wanted.is_empty() {
            Vec::new()
        } else {
            read_sockets()
        };
        // This speaker's own sockets (the proxy's listeners, also ones just closing) are not in
        // the way of the Services they forward.
        let own = sockets::own_inodes();
        sockets.retain(|s| !own.contains(&s.inode));
        let hp: Vec<HostPort> = host_ports.values().flatten().cloned().collect();
        let addrs: Vec<IpAddr> = published
            .node_ips
            .iter()
            .chain(published.node_external_ips.iter())
            .copied()
            .collect();
        let status = check::check(check::Inputs {
            wanted: &wanted,
            node_addrs: &addrs,
            sockets: &sockets,
            host_ports: &hp,
            denied: &cfg.denied,
            ipvs,
        });
        if written.as_ref() == Some(&status) {
            continue;
        }
        // The object is applied once; afterwards only its status changes.
        let uid = written
            .is_none()
            .then_some(published.node_uid.as_deref())
            .flatten();
        let result = if written.is_none() {
            write(&api, &cfg.node, uid, &status).await
        } else {
            write_status(&api, &cfg.node, &status).await
        };
        match result {
            Ok(()) => {
                tracing::info!(checked = status.checked_count, unavailable = %status.summary, ipvs, "forwarder report written");
                metrics.set(
                    "ferrolb_speaker_forwarder_ports_unavailable",
                    "Forwarder-mode ports unavailable on this node",
                    &[],
                    status.unavailable.len() as f64,
                );
                written = Some(status);
                last_error = None;
            }
            Err(e) => {
                if matches!(&e, kube::Error::Api(s) if s.code == 404) {
                    // Someone deleted the report: apply the whole object next time.
                    written = None;
                }
                // Retried every PERIOD; said once per distinct error, not every time.
                let text = e.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(error = %text, "cannot write the ForwarderNode report; retrying every {PERIOD:?}");
                    last_error = Some(text);
                }
            }
        }
    }
}

/// Server-side apply of the report: the object (owned by the Node, so it goes with it), then
/// its status.
async fn write(
    api: &Api<ForwarderNode>,
    node: &str,
    node_uid: Option<&str>,
    status: &ForwarderNodeStatus,
) -> Result<(), kube::Error> {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let mut meta = serde_json::json!({"name": node});
    if let Some(uid) = node_uid {
        meta["ownerReferences"] = serde_json::json!([{
            "apiVersion": "v1", "kind": "Node", "name": node, "uid": uid,
        }]);
    }
    let obj = serde_json::json!({
        "apiVersion": "ferrolb.io/v1beta1", "kind": "ForwarderNode",
        "metadata": meta, "spec": {},
    });
    api.patch(node, &pp, &Patch::Apply(obj)).await?;
    write_status(api, node, status).await
}

/// Server-side apply of the report's status alone.
async fn write_status(
    api: &Api<ForwarderNode>,
    node: &str,
    status: &ForwarderNodeStatus,
) -> Result<(), kube::Error> {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let st = serde_json::json!({
        "apiVersion": "ferrolb.io/v1beta1", "kind": "ForwarderNode",
        "metadata": {"name": node}, "status": status,
    });
    api.patch_status(node, &pp, &Patch::Apply(st)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_covers_both_families_and_skips_unknown_protocols() {
        let ports = BTreeSet::from([("TCP".to_string(), 443), ("ICMP".to_string(), 1)]);
        let w: Vec<String> = wanted(&ports).iter().map(Wanted::text).collect();
        assert_eq!(w, ["IPv4/TCP/443", "IPv6/TCP/443"]);
    }

    #[test]
    fn host_ports_of_running_pods() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "nginx-0", "namespace": "ingress"},
            "spec": {"containers": [{"name": "c", "ports": [
                {"containerPort": 80, "hostPort": 80},
                {"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "198.51.100.11"},
                {"containerPort": 8080}
            ]}]},
            "status": {"phase": "Running"}
        }))
        .expect("pod");
        let hp = host_ports(&pod);
        assert_eq!(hp.len(), 2);
        assert_eq!(hp[0].pod, "ingress/nginx-0");
        assert_eq!((hp[1].proto, hp[1].port), (Proto::Udp, 53));
        assert_eq!(hp[1].host_ip, Some("198.51.100.11".parse().expect("ip")));
        let mut done = pod.clone();
        done.status.as_mut().expect("status").phase = Some("Succeeded".into());
        assert!(host_ports(&done).is_empty());
    }
}
