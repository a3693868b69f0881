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
}

impl Args {
    /// The Lease namespace after defaults.
    pub fn lease_namespace(&self) -> String {
        self.lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "ferrolb-system".into())
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
    }
}
