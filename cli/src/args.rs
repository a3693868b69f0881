//! The command line of `kubectl ferrolb`: clap definitions only. Each flag can also come from a
//! `FERROLB_*` environment variable. No behaviour lives here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// kubectl ferrolb: trace a packet from a LoadBalancer IP to the pod, check the setup, migrate
/// from MetalLB and K3s's servicelb.
#[derive(Debug, Parser)]
#[command(name = "kubectl-ferrolb", bin_name = "kubectl ferrolb", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    /// Readable text.
    #[default]
    Text,
    /// JSON, for scripts.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Follow a packet: a Service's IPs, pool, announcing node, ports, endpoints and traffic
    /// policy; with --rules, through a node's kube-proxy rules to the pods.
    Trace(TraceArgs),
    /// Pools and their usage, who announces each IP, Services without an IP and why.
    Status(StatusArgs),
    /// Check the cluster for known misconfigurations and explain each.
    Doctor(DoctorArgs),
    /// Convert another load balancer's configuration to ferrolb's.
    #[command(subcommand)]
    Migrate(Migrate),
}

/// `trace`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  kubectl ferrolb trace svc/web
  ssh node-1 sudo iptables-save | kubectl ferrolb trace svc/web --rules -
  kubectl ferrolb trace --rules dump.txt --to 198.51.100.100:80/tcp
  kubectl ferrolb trace --rules ruleset.json --to [2001:db8::100]:80/tcp --from 2001:db8::200 -o json")]
pub struct TraceArgs {
    /// The Service: `svc/NAME`, `service/NAME` or `NAME`. Without it, --rules and --to are needed
    /// and no cluster is contacted.
    pub service: Option<String>,
    /// The Service's namespace (default: the kubeconfig context's).
    #[arg(short, long, env = "FERROLB_NAMESPACE")]
    pub namespace: Option<String>,
    /// The Service port (number or name) to follow; default: every port.
    #[arg(long)]
    pub port: Option<String>,
    /// The client's address (decides conditions on the source, like loadBalancerSourceRanges).
    #[arg(long)]
    pub from: Option<String>,
    /// A node's rules: `iptables-save`, `ip6tables-save`, an excerpt of -A lines, an
    /// `iptables -t nat -nL` listing, or `nft -j list ruleset`. `-` reads standard input.
    #[arg(long, env = "FERROLB_RULES")]
    pub rules: Option<PathBuf>,
    /// The destination when tracing rules without a Service: IP:PORT[/PROTO].
    #[arg(long)]
    pub to: Option<String>,
    /// The packet is sent by a process on the node (OUTPUT), not arriving from outside.
    #[arg(long)]
    pub from_node: bool,
    /// Whether the destination is an address of the node where the rules were taken; unknown
    /// by default, and rules that depend on it show both ways.
    #[arg(long)]
    pub dst_local: Option<bool>,
    /// Start the walk at this chain.
    #[arg(long)]
    pub chain: Option<String>,
    /// The node the rules come from (for ETP Local: which endpoints are local). Default: the
    /// announcing node. Offline, limits --endpoints to that node's.
    #[arg(long)]
    pub node: Option<String>,
    /// Offline: the Service's EndpointSlices (`kubectl get endpointslices -l
    /// kubernetes.io/service-name=NAME -o yaml`) to check the rules against; --port picks the
    /// port by name or number when the slices have several.
    #[arg(long, requires = "rules", conflicts_with = "service")]
    pub endpoints: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, env = "FERROLB_OUTPUT", default_value_t)]
    pub output: Output,
}

/// `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(short, long, value_enum, env = "FERROLB_OUTPUT", default_value_t)]
    pub output: Output,
}

/// `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Output format.
    #[arg(short, long, value_enum, env = "FERROLB_OUTPUT", default_value_t)]
    pub output: Output,
}

/// `migrate` subcommands.
#[derive(Debug, Subcommand)]
pub enum Migrate {
    /// MetalLB's CRs (metallb.io v1beta1/v1beta2) or legacy ConfigMap to ferrolb's objects.
    Metallb(MetallbArgs),
    /// K3s servicelb's node labels to a forwarder-mode pool, and how to turn servicelb off.
    #[command(name = "k3s-servicelb")]
    K3sServicelb(K3sArgs),
}

/// `migrate metallb`.
#[derive(Debug, Args)]
pub struct MetallbArgs {
    /// Read MetalLB's objects from the cluster.
    #[arg(long, conflicts_with = "files")]
    pub from_cluster: bool,
    /// Read MetalLB's objects from these YAML files (`-` for standard input).
    #[arg(short = 'f', long = "filename", num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// MetalLB's namespace (for --from-cluster).
    #[arg(
        long,
        env = "FERROLB_METALLB_NAMESPACE",
        default_value = "metallb-system"
    )]
    pub metallb_namespace: String,
    /// Create the objects in the cluster (server-side apply). Without it, nothing changes.
    #[arg(long)]
    pub apply: bool,
}

/// `migrate k3s-servicelb`.
#[derive(Debug, Args)]
pub struct K3sArgs {
    /// Read Nodes from the cluster.
    #[arg(long, conflicts_with = "files")]
    pub from_cluster: bool,
    /// Read Nodes (a `kubectl get nodes -o yaml` list) from these files.
    #[arg(short = 'f', long = "filename", num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Name of the pool to create.
    #[arg(long, default_value = "servicelb")]
    pub pool_name: String,
    /// Create the pools in the cluster (server-side apply). Without it, nothing changes.
    #[arg(long)]
    pub apply: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn offline_trace_parses() {
        let c = Cli::try_parse_from([
            "kubectl-ferrolb",
            "trace",
            "--rules",
            "-",
            "--to",
            "198.51.100.100:80/tcp",
            "-o",
            "json",
        ])
        .expect("parses");
        match c.command {
            Command::Trace(t) => {
                assert_eq!(t.service, None);
                assert_eq!(t.output, Output::Json);
                assert_eq!(t.rules.as_deref(), Some(std::path::Path::new("-")));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
