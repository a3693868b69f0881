//! Command-line flags. Every flag can also be set with a `FERROLB_*` environment variable.

use std::net::SocketAddr;

use clap::Parser;
use ferrolb_runtime::CommonArgs;

/// ferrolb controller: assigns LoadBalancer IPs from IPAddressPools and publishes them in Service status.
#[derive(Debug, Clone, Parser)]
#[command(name = "ferrolb-controller", version, about, long_about = None)]
pub struct Args {
    /// Kubeconfig, class, logging: shared with the speaker.
    #[command(flatten)]
    pub common: CommonArgs,

    /// Run leader election on a coordination.k8s.io Lease; only the leader writes.
    #[arg(long, env = "FERROLB_LEADER_ELECT")]
    pub leader_elect: bool,

    /// Name of the Lease used for leader election.
    #[arg(long, env = "FERROLB_LEASE_NAME", default_value = "ferrolb-controller")]
    pub lease_name: String,

    /// Namespace of the Lease (default: POD_NAMESPACE, else "ferrolb-system").
    #[arg(long, env = "FERROLB_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Seconds a leader's Lease stays valid without renewal; a standby takes over after that.
    #[arg(long, env = "FERROLB_LEASE_DURATION", default_value_t = 4)]
    pub lease_duration: u64,

    /// This replica's identity in the Lease (default: POD_NAME, else the hostname and process id).
    #[arg(long, env = "FERROLB_IDENTITY")]
    pub identity: Option<String>,

    /// Address serving /metrics, /healthz and /readyz.
    #[arg(long, env = "FERROLB_METRICS_ADDR", default_value = "0.0.0.0:7472")]
    pub metrics_addr: SocketAddr,

    /// Namespace of the speaker pods (default: the Lease namespace). Forwarder mode publishes a
    /// node only while a speaker pod there is Ready.
    #[arg(long, env = "FERROLB_SPEAKER_NAMESPACE")]
    pub speaker_namespace: Option<String>,

    /// Label selector of the speaker pods.
    #[arg(
        long,
        env = "FERROLB_SPEAKER_SELECTOR",
        default_value = "app.kubernetes.io/component=speaker"
    )]
    pub speaker_selector: String,

    /// Forwarder mode: what a Service port equal to another Service's nodePort does (it shadows
    /// that NodePort on the published node addresses): `warn` (condition message and event) or
    /// `block` (the node is left out).
    #[arg(
        long,
        env = "FERROLB_NODE_PORT_SHADOWING",
        value_enum,
        default_value = "warn"
    )]
    pub node_port_shadowing: Shadowing,

    /// BGP mode: report on BGPPeers and BGPAdvertisements (watches them, Communities,
    /// BFDProfiles, BGPSessionStates and the names of the Secrets in the speakers' namespace).
    #[arg(long = "bgp", env = "FERROLB_BGP")]
    pub bgp: bool,
}

/// What forwarder mode does when a port shadows another Service's NodePort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shadowing {
    /// Publish, and say so.
    Warn,
    /// Do not publish on those nodes.
    Block,
}

impl Args {
    /// The Lease namespace after defaults.
    pub fn lease_namespace(&self) -> String {
        self.lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "ferrolb-system".into())
    }

    /// The speaker pods' namespace after defaults.
    pub fn speaker_namespace(&self) -> String {
        self.speaker_namespace
            .clone()
            .unwrap_or_else(|| self.lease_namespace())
    }

    /// This replica's identity after defaults.
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                format!("{}-{}", host.trim(), std::process::id())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let a = Args::parse_from(["ferrolb-controller"]);
        assert_eq!(a.common.lb_class, "ferrolb.io/lb");
        assert!(!a.leader_elect && !a.common.ignore_classless);
        assert_eq!(a.metrics_addr.port(), 7472);
        assert_eq!(a.node_port_shadowing, Shadowing::Warn);
        assert_eq!(a.speaker_selector, "app.kubernetes.io/component=speaker");
    }
}
