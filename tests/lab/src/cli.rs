//! The `ferrolb-lab` command line: argument definitions and the commands that work on labs
//! from their `state.json` (status, env, kubectl, exec, down, gc).
//!
//! Owns user-facing output. It holds no lab logic of its own: bringing labs up is
//! [`crate::Lab::up`], removing them is [`crate::teardown`].

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::controlplane::{Layout, ProxyMode};
use crate::lab::LabError;
use crate::plan::{MAX_NODES, Plan};
use crate::process;
use crate::state::{self, LabState};
use crate::teardown;

/// ferrolb's lab: a real Kubernetes control plane plus nodes as network namespaces.
#[derive(Debug, Parser)]
#[command(name = "ferrolb-lab", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Bring a lab up and keep it running until `down`; prints `export` lines on stdout.
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=MAX_NODES as i64))]
        nodes: u16,
        /// Lab id (default: generated `flb<6 hex>`).
        #[arg(long)]
        name: Option<String>,
        /// Run kube-proxy in every node namespace.
        #[arg(long)]
        kube_proxy: bool,
        /// kube-proxy's mode.
        #[arg(long, value_enum, default_value_t = ProxyMode::Iptables)]
        proxy_mode: ProxyMode,
        /// No real nodes: stand-in Node objects instead of containerd and a kubelet per node
        /// (nothing runs pods; allows up to 64 nodes).
        #[arg(long)]
        no_kubelet: bool,
        /// An OCI image archive to import on every node (repeatable), e.g.
        /// target/image/ferrolb.oci.tar or one made by `ferrolb-lab image`.
        #[arg(long = "image")]
        images: Vec<PathBuf>,
        /// A router namespace (`<id>-router`) between the LAN and a client network behind it
        /// (`<id>-rclient`), for BGP mode; start BIRD there with the lab's router helpers.
        #[arg(long)]
        router: bool,
    },
    /// Write a debug ferrolb image (the workspace's debug binaries, stripped, with their shared
    /// libraries) as an OCI archive; prints its path.
    Image {
        /// Directory holding ferrolb-controller and ferrolb-speaker.
        #[arg(long, default_value = "target/debug")]
        bin_dir: PathBuf,
        /// Where to write the archive.
        #[arg(long, default_value = "target/lab-images/ferrolb-debug.oci.tar")]
        out: PathBuf,
    },
    /// Tear a lab down (the most recent one by default).
    Down {
        /// Lab id.
        #[arg(conflicts_with = "all")]
        name: Option<String>,
        /// Tear down every lab, including orphaned namespaces.
        #[arg(long)]
        all: bool,
    },
    /// List labs.
    Status,
    /// Run kubectl against a lab: `ferrolb-lab kubectl -- get nodes -o wide`.
    Kubectl {
        /// Lab id (default: $FERROLB_LAB, else the most recent lab).
        #[arg(long, env = "FERROLB_LAB")]
        name: Option<String>,
        /// kubectl arguments.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run a command inside a lab host's namespace: `ferrolb-lab exec client -- ping -c1 198.51.100.11`.
    Exec {
        /// Lab id (default: $FERROLB_LAB, else the most recent lab).
        #[arg(long, env = "FERROLB_LAB")]
        name: Option<String>,
        /// node-1..node-N, client, cp or lan.
        host: String,
        /// The command.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Print shell `export` lines for a lab (KUBECONFIG, FERROLB_LAB, PATH with the tools).
    Env {
        /// Lab id (default: $FERROLB_LAB, else the most recent lab).
        #[arg(env = "FERROLB_LAB")]
        name: Option<String>,
    },
    /// Start a command in the background inside a lab host's namespace, logging to the run
    /// directory; `down` stops it with everything else in the namespace.
    Spawn {
        /// Lab id (default: $FERROLB_LAB, else the most recent lab).
        #[arg(long, env = "FERROLB_LAB")]
        name: Option<String>,
        /// Log name: output goes to `<run>/logs/<log>.log`.
        #[arg(long)]
        log: String,
        /// node-1..node-N, client, cp or lan.
        host: String,
        /// The command.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Write a kubeconfig that authenticates as a ServiceAccount (a fresh token) and reaches
    /// the API server from node namespaces; prints its path.
    SaKubeconfig {
        /// Lab id (default: $FERROLB_LAB, else the most recent lab).
        #[arg(long, env = "FERROLB_LAB")]
        name: Option<String>,
        /// The ServiceAccount's namespace.
        #[arg(long, short = 'n', default_value = "default")]
        namespace: String,
        /// The ServiceAccount.
        service_account: String,
    },
    /// Serve the lab backend (HTTP, TCP and UDP answers naming the pod, node and source
    /// address), as the backend image does: `ferrolb-lab backend -- --http 8080 --name web-1`.
    Backend {
        /// The backend's arguments (see the backend image).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Remove labs whose owner process is gone, and orphaned namespaces.
    Gc,
    /// (internal) Relay connections between two endpoints, used for API server access.
    #[command(hide = true)]
    Relay {
        /// `tcp:HOST:PORT` or `unix:PATH`.
        #[arg(long)]
        listen: String,
        /// `tcp:HOST:PORT` or `unix:PATH`.
        #[arg(long)]
        connect: String,
        /// Write the bound TCP port here.
        #[arg(long)]
        port_file: Option<PathBuf>,
        /// Exit once this path no longer exists.
        #[arg(long)]
        watch: Option<PathBuf>,
        /// Exit after this many seconds regardless (default: a week).
        #[arg(long, default_value_t = 7 * 24 * 3600)]
        max_lifetime_secs: u64,
    },
}

/// Shell `export` lines for a lab.
pub fn env_lines(st: &LabState) -> String {
    let layout = Layout::new(&state::run_dir(&st.id));
    let q = |s: String| format!("'{}'", s.replace('\'', r"'\''"));
    [
        format!("export FERROLB_LAB={}", q(st.id.clone())),
        format!(
            "export KUBECONFIG={}",
            q(layout.kubeconfig().display().to_string())
        ),
        format!(
            "export FERROLB_LAB_NODE_KUBECONFIG={}",
            q(layout.node_kubeconfig().display().to_string())
        ),
        format!(
            "export FERROLB_LAB_RUN_DIR={}",
            q(layout.run.display().to_string())
        ),
        format!(
            "export FERROLB_TOOLS_BIN={}",
            q(st.tools_bin.display().to_string())
        ),
        format!(
            "export PATH={}:\"$PATH\"",
            q(st.tools_bin.display().to_string())
        ),
    ]
    .join("\n")
}

/// `status`: one line per lab.
pub fn status() -> String {
    let labs = state::list();
    if labs.is_empty() {
        return "no labs".into();
    }
    let now = state::now_unix_ms();
    let mut out = format!(
        "{:<16} {:<8} {:>5} {:<10} {:<12} {:>6} {:>8}  {}\n",
        "ID", "PHASE", "NODES", "PROXY", "OWNER", "PORT", "AGE", "HEALTH"
    );
    for st in labs {
        let owner = match st.owner {
            None => "kept".to_string(),
            Some(o) if o.is_alive() => format!("pid {}", o.pid),
            Some(o) => format!("gone {}", o.pid),
        };
        let dead: Vec<&str> = st
            .processes
            .iter()
            .filter(|p| !p.id.is_alive())
            .map(|p| p.name.as_str())
            .collect();
        let health = if teardown::is_healthy(&st) {
            "ok".to_string()
        } else if dead.is_empty() {
            st.phase.as_str().to_string()
        } else {
            format!("dead: {}", dead.join(","))
        };
        let age = Duration::from_millis(now.saturating_sub(st.created_unix_ms)).as_secs();
        out.push_str(&format!(
            "{:<16} {:<8} {:>5} {:<10} {:<12} {:>6} {:>7}s  {}\n",
            st.id,
            st.phase.as_str(),
            st.nodes,
            if st.kube_proxy { "kube-proxy" } else { "-" },
            owner,
            st.host_port.map(|p| p.to_string()).unwrap_or("-".into()),
            age,
            health,
        ));
    }
    out
}

/// Runs `argv` with inherited stdio and returns its exit code (1 if killed by a signal).
pub fn run_inherited(argv: &[String]) -> Result<i32, LabError> {
    let (program, args) = argv
        .split_first()
        .ok_or(process::ProcessError::EmptyCommand)?;
    let status = Command::new(program)
        .args(args)
        .stdin(Stdio::inherit())
        .status()
        .map_err(|source| LabError::Spawn {
            cmd: argv.join(" "),
            source,
        })?;
    Ok(status.code().unwrap_or(1))
}

/// argv for kubectl against lab `st`.
pub fn kubectl_argv(st: &LabState, args: &[String]) -> Vec<String> {
    let layout = Layout::new(&state::run_dir(&st.id));
    let mut argv = vec![
        st.tools_bin.join("kubectl").display().to_string(),
        format!("--kubeconfig={}", layout.kubeconfig().display()),
    ];
    argv.extend(args.iter().cloned());
    argv
}

/// argv for running `cmd` on `host` of lab `st`.
pub fn exec_argv(st: &LabState, host: &str, cmd: &[String]) -> Result<Vec<String>, LabError> {
    let plan = Plan::new(&st.id, st.nodes)?;
    let ns = plan.netns(host)?;
    Ok(process::in_netns(Some(&ns), cmd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ferrolb-lab").chain(args.iter().copied()))
    }

    #[test]
    fn parses_the_documented_commands() {
        match parse(&[
            "up",
            "--nodes",
            "3",
            "--name",
            "x",
            "--kube-proxy",
            "--proxy-mode",
            "nftables",
            "--image",
            "a.tar",
        ])
        .map(|c| c.command)
        {
            Ok(Cmd::Up {
                nodes: 3,
                name: Some(n),
                kube_proxy: true,
                proxy_mode: ProxyMode::Nftables,
                no_kubelet: false,
                images,
                router: false,
            }) => {
                assert_eq!(n, "x");
                assert_eq!(images, [PathBuf::from("a.tar")]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["up", "--no-kubelet"]).map(|c| c.command),
            Ok(Cmd::Up {
                nodes: 2,
                name: None,
                kube_proxy: false,
                proxy_mode: ProxyMode::Iptables,
                no_kubelet: true,
                ..
            })
        ));
        assert!(parse(&["up", "--nodes", "0"]).is_err());
        assert!(parse(&["up", "--nodes", "65"]).is_err());
        assert!(matches!(
            parse(&["down", "--all"]).map(|c| c.command),
            Ok(Cmd::Down {
                name: None,
                all: true
            })
        ));
        assert!(parse(&["down", "x", "--all"]).is_err());
        match parse(&["exec", "client", "--", "ping", "-c1", "198.51.100.11"]).map(|c| c.command) {
            Ok(Cmd::Exec { host, cmd, .. }) => {
                assert_eq!(host, "client");
                assert_eq!(cmd, ["ping", "-c1", "198.51.100.11"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["exec", "client"]).is_err());
        match parse(&["kubectl", "--", "get", "nodes", "-o", "wide"]).map(|c| c.command) {
            Ok(Cmd::Kubectl { args, .. }) => assert_eq!(args, ["get", "nodes", "-o", "wide"]),
            other => panic!("{other:?}"),
        }
        match parse(&["sa-kubeconfig", "-n", "ferrolb-system", "ferrolb-speaker"])
            .map(|c| c.command)
        {
            Ok(Cmd::SaKubeconfig {
                namespace,
                service_account,
                ..
            }) => assert_eq!(
                (namespace.as_str(), service_account.as_str()),
                ("ferrolb-system", "ferrolb-speaker")
            ),
            other => panic!("{other:?}"),
        }
        assert!(
            parse(&["sa-kubeconfig"]).is_err(),
            "the ServiceAccount is required"
        );
        match parse(&[
            "relay",
            "--listen",
            "tcp:127.0.0.1:0",
            "--connect",
            "unix:/x",
        ])
        .map(|c| c.command)
        {
            Ok(Cmd::Relay {
                max_lifetime_secs, ..
            }) => assert_eq!(max_lifetime_secs, 604_800),
            other => panic!("{other:?}"),
        }
    }

    fn sample() -> LabState {
        LabState {
            version: state::STATE_VERSION,
            id: "flb0000aa".into(),
            created_unix_ms: 0,
            phase: state::Phase::Ready,
            owner: None,
            nodes: 2,
            kube_proxy: false,
            proxy_mode: ProxyMode::Iptables,
            kubelet: true,
            router: false,
            tools_bin: "/tools/bin".into(),
            host_port: Some(1234),
            namespaces: vec![],
            processes: vec![],
        }
    }

    #[test]
    fn env_and_argv_rendering() {
        let st = sample();
        let env = env_lines(&st);
        assert!(env.contains("export FERROLB_LAB='flb0000aa'"), "{env}");
        assert!(env.contains("/flb0000aa/kubeconfig'"), "{env}");
        assert!(env.contains("export PATH='/tools/bin':\"$PATH\""), "{env}");
        let argv = exec_argv(&st, "node-2", &["true".into()]).expect("argv");
        assert_eq!(argv, ["ip", "netns", "exec", "flb0000aa-node-2", "true"]);
        assert!(exec_argv(&st, "node-3", &["true".into()]).is_err());
        let k = kubectl_argv(&st, &["get".into(), "nodes".into()]);
        assert_eq!(k[0], "/tools/bin/kubectl");
        assert!(k[1].starts_with("--kubeconfig=") && k[1].ends_with("/flb0000aa/kubeconfig"));
        assert_eq!(&k[2..], ["get", "nodes"]);
    }
}
