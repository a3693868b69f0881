//! [`Lab`]: bringing a whole lab up (network, PKI, etcd, kube-apiserver, relays,
//! kube-controller-manager, then real nodes — containerd, CNI and a kubelet per node, with
//! kube-scheduler — or stand-in Node objects, optionally kube-proxy) and using it from tests.
//!
//! Owns the sequencing and the lab's lifetime: a `Lab` tears everything down when dropped,
//! also when `up` fails halfway. Naming and addressing decisions come from `plan`, command lines
//! from `controlplane`; this module executes them. It never touches the host network
//! namespace: every `ip` command targets a lab namespace.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::certs::{self, CertError};
use crate::controlplane::{self as cp, Layout, ProxyMode};
use crate::host::{self, HostError};
use crate::image::{self, ImageError};
use crate::kubeconfig::{self, Credentials, KubeconfigSpec};
use crate::node::{self, NodeLayout};
use crate::plan::{API_PORT, CP_IPV4, LabHost, MAX_KUBELET_NODES, Plan, PlanError};
use crate::process::{self, LabProcess, ProcessError, Signal};
use crate::router::{self, Router};
use crate::state::{self, LabState, Phase, ProcId, ProcRecord, StateError};
use crate::teardown::{self, TeardownReport};
use crate::tools::{self, ToolsError};

/// How long kube-apiserver may take to report ready.
const APISERVER_READY: Duration = Duration::from_secs(120);
/// How long kube-proxy may take to program its first rules.
const KUBE_PROXY_READY: Duration = Duration::from_secs(60);
/// How long containerd may take to open its socket.
const CONTAINERD_READY: Duration = Duration::from_secs(20);
/// How long real nodes may take to register and report Ready.
const NODES_READY: Duration = Duration::from_secs(90);
/// How long the host relay may take to report its port.
const RELAY_READY: Duration = Duration::from_secs(10);
/// Comment kube-proxy puts on the ClusterIP rule of the `kubernetes` Service.
const KUBERNETES_SERVICE_RULE: &str = "default/kubernetes:https cluster IP";
/// Log lines shown when something fails to come up.
const TAIL: usize = 30;

/// Everything that can go wrong with a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Bad options or host name.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Run directory or state.json trouble.
    #[error(transparent)]
    State(#[from] StateError),
    /// Certificates could not be made.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// A program the lab needs is missing.
    #[error(transparent)]
    Tools(#[from] ToolsError),
    /// A background process could not be started or signalled.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A setup command could not be run.
    #[error("cannot run {cmd}: {source}")]
    Spawn {
        /// The command.
        cmd: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A setup command failed.
    #[error("{cmd} failed ({status}): {stderr}")]
    Command {
        /// The command.
        cmd: String,
        /// Its exit status.
        status: String,
        /// Its stderr.
        stderr: String,
    },
    /// A file could not be written.
    #[error("write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A kubeconfig could not be loaded.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// An API request could not be built.
    #[error("request: {0}")]
    Request(#[from] kube::core::request::Error),
    /// The API server rejected a request or could not be reached.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A component did not become ready in time.
    #[error("{what} not ready after {waited:?}; last log lines:\n{log_tail}")]
    NotReady {
        /// The component.
        what: String,
        /// How long we waited.
        waited: Duration,
        /// The end of its log.
        log_tail: String,
    },
    /// A component exited while the lab was starting.
    #[error("{what} exited ({status}); last log lines:\n{log_tail}")]
    Exited {
        /// The component.
        what: String,
        /// Its exit status.
        status: String,
        /// The end of its log.
        log_tail: String,
    },
    /// The API server is not running (after `stop_apiserver`).
    #[error("kube-apiserver is already {0}")]
    ApiserverState(&'static str),
    /// The machine could not be prepared for real nodes.
    #[error(transparent)]
    Host(#[from] HostError),
    /// An image could not be built.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Too many nodes for real kubelets (pod subnets).
    #[error("a lab with real nodes has at most {MAX_KUBELET_NODES} nodes, not {0}")]
    TooManyRealNodes(usize),
}

/// Options for [`Lab::up`].
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Number of nodes (`node-1..node-N`), 1 to [`crate::plan::MAX_NODES`]
    /// ([`MAX_KUBELET_NODES`] with `kubelet`).
    pub nodes: usize,
    /// Run kube-proxy in every node namespace.
    pub kube_proxy: bool,
    /// kube-proxy's mode.
    pub proxy_mode: ProxyMode,
    /// Real nodes: containerd, the CNI plugins and a kubelet in every node namespace, plus
    /// kube-scheduler and the workload controllers, so pods run. Without it, Node objects stand
    /// in for kubelets and nothing runs pods (tests that drive Node status themselves, and
    /// benchmarks with more nodes than real ones can have).
    pub kubelet: bool,
    /// OCI image archives to import on every real node, besides the lab's own pause and
    /// backend images.
    pub images: Vec<PathBuf>,
    /// Lab id; `None` generates `flb<6 hex>`.
    pub name: Option<String>,
    /// A router namespace between the LAN and a client network behind it, for BGP mode
    /// ([`crate::router`]); BIRD is started by the test with [`Router::start_bird`].
    pub router: bool,
}

impl Default for LabOptions {
    fn default() -> LabOptions {
        LabOptions {
            nodes: 2,
            kube_proxy: false,
            proxy_mode: ProxyMode::Iptables,
            kubelet: true,
            images: Vec::new(),
            name: None,
            router: false,
        }
    }
}

/// A running lab. Dropping it tears everything down (best effort, never panics); call
/// [`Lab::down`] to get the report, or [`Lab::detach`] to keep it running.
#[derive(Debug)]
pub struct Lab {
    plan: Plan,
    layout: Layout,
    state: LabState,
    tools_bin: PathBuf,
    lab_bin: PathBuf,
    kubeconfig: PathBuf,
    node_kubeconfig: PathBuf,
    children: Vec<(String, Child)>,
    finished: bool,
}

impl Lab {
    /// Brings a lab up and returns when the API server is ready, the nodes are registered and
    /// (if asked) kube-proxy has programmed its rules. Labs whose owner process has died are
    /// garbage-collected first.
    ///
    /// Async because it waits on the API server; the setup steps themselves are blocking
    /// commands run on the calling task (this is test tooling, not a server). On error
    /// everything created so far is removed.
    pub async fn up(opts: LabOptions) -> Result<Lab, LabError> {
        let started = Instant::now();
        if opts.kubelet && opts.nodes > MAX_KUBELET_NODES {
            return Err(LabError::TooManyRealNodes(opts.nodes));
        }
        let needed: Vec<&str> = tools::CORE_TOOLS
            .iter()
            .copied()
            .chain(opts.kube_proxy.then_some("kube-proxy"))
            .chain(opts.kubelet.then_some("kubelet"))
            .chain(opts.kubelet.then_some("kube-scheduler"))
            .collect();
        let tools_bin = tools::tools_bin(&needed)?;
        let lab_bin = tools::lab_bin()?;
        for r in teardown::gc() {
            tracing::info!(lab = %r.id, reason = r.reason.map(|x| x.as_str()), "removed stale lab");
        }

        let (id, run) = claim_id(opts.name.as_deref())?;
        let plan = match Plan::new(&id, opts.nodes) {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&run);
                return Err(e.into());
            }
        };
        let layout = Layout::new(&run);
        let state = LabState {
            version: state::STATE_VERSION,
            id: id.clone(),
            created_unix_ms: state::now_unix_ms(),
            phase: Phase::Starting,
            owner: ProcId::current(),
            nodes: opts.nodes,
            kube_proxy: opts.kube_proxy,
            proxy_mode: opts.proxy_mode,
            kubelet: opts.kubelet,
            router: opts.router,
            tools_bin: tools_bin.clone(),
            host_port: None,
            // Recorded before creation so a crash midway still lets `gc` find them.
            namespaces: plan
                .namespaces()
                .into_iter()
                .chain(
                    opts.router
                        .then(|| router::namespaces(&id))
                        .into_iter()
                        .flatten(),
                )
                .collect(),
            processes: Vec::new(),
        };
        // From here on, dropping `lab` (including via `?`) tears down what exists.
        let mut lab = Lab {
            kubeconfig: layout.kubeconfig(),
            node_kubeconfig: layout.node_kubeconfig(),
            plan,
            layout,
            state,
            tools_bin,
            lab_bin,
            children: Vec::new(),
            finished: false,
        };
        lab.save()?;
        host::acquire(&id, opts.kubelet)?;
        tracing::info!(lab = %id, nodes = opts.nodes, "bringing lab up");

        // Certificates and the network are independent; make them side by side.
        let pki_dir = lab.layout.pki().dir;
        let serials: Vec<String> = (0..8).map(|_| hex(&random_bytes::<12>())).collect();
        let kubelet = opts.kubelet;
        let (pki, net, images) = std::thread::scope(|s| {
            let pki = s.spawn(|| certs::generate(&pki_dir, &serials));
            // The pause and backend images are compiled on first use (a few seconds), cached after.
            let images = s.spawn(|| {
                if kubelet {
                    image::lab_images()
                } else {
                    Ok(Vec::new())
                }
            });
            let mut net = run_all(&lab.plan.setup_commands());
            if net.is_ok() {
                net = lab
                    .plan
                    .neighbour_batches()
                    .iter()
                    .try_for_each(|(ns, script)| run_ip_batch(ns, script));
            }
            if kubelet && net.is_ok() {
                net = run_all(&lab.plan.pod_route_commands());
            }
            if opts.router && net.is_ok() {
                let r = Router::new(&lab.plan.id, &lab.layout.run);
                net = run_all(&r.setup_commands(&lab.plan.lan_netns(), &lab.plan.nodes));
            }
            (pki.join(), net, images.join())
        });
        net?;
        let mut images = match images {
            Ok(r) => r?,
            Err(_) => {
                return Err(LabError::Exited {
                    what: "image thread".into(),
                    status: "panicked".into(),
                    log_tail: String::new(),
                });
            }
        };
        images.extend(opts.images.iter().cloned());
        match pki {
            Ok(r) => r?,
            Err(_) => {
                return Err(LabError::Exited {
                    what: "certificate thread".into(),
                    status: "panicked".into(),
                    log_tail: String::new(),
                });
            }
        };
        tracing::info!(lab = %id, elapsed = ?started.elapsed(), "network and PKI ready");

        lab.write_kubeconfig(
            &lab.layout.kcm_kubeconfig(),
            &format!("https://127.0.0.1:{API_PORT}"),
            certs::CONTROLLER_MANAGER,
        )?;
        lab.write_kubeconfig(
            &lab.layout.scheduler_kubeconfig(),
            &format!("https://127.0.0.1:{API_PORT}"),
            certs::ADMIN,
        )?;
        lab.write_kubeconfig(
            &lab.node_kubeconfig.clone(),
            &format!("https://{CP_IPV4}:{API_PORT}"),
            certs::ADMIN,
        )?;

        let cp_ns = lab.plan.cp.netns.clone();
        let etcd = cp::etcd_args(&lab.tools_bin, &lab.layout);
        lab.start("etcd", Some(&cp_ns), &etcd)?;
        let policy = lab.layout.audit_policy();
        std::fs::write(&policy, cp::AUDIT_POLICY).map_err(|source| LabError::Write {
            path: policy.clone(),
            source,
        })?;
        let apiserver = cp::apiserver_args(&lab.tools_bin, &lab.layout);
        lab.start("kube-apiserver", Some(&cp_ns), &apiserver)?;
        let relay_cp = lab.relay_args(
            &format!("unix:{}", lab.layout.api_socket().display()),
            &format!("tcp:127.0.0.1:{API_PORT}"),
            None,
        );
        lab.start("relay-cp", Some(&cp_ns), &relay_cp)?;
        let port = lab.start_host_relay()?;
        lab.write_kubeconfig(
            &lab.kubeconfig.clone(),
            &format!("https://127.0.0.1:{port}"),
            certs::ADMIN,
        )?;

        lab.wait_apiserver_ready().await?;
        tracing::info!(lab = %id, elapsed = ?started.elapsed(), "kube-apiserver ready");
        let kcm = cp::kcm_args(&lab.tools_bin, &lab.layout, opts.kubelet);
        lab.start("kube-controller-manager", Some(&cp_ns), &kcm)?;
        if opts.kubelet {
            let sched = cp::scheduler_args(&lab.tools_bin, &lab.layout);
            lab.start("kube-scheduler", Some(&cp_ns), &sched)?;
            lab.start_real_nodes(&images)?;
            tracing::info!(lab = %id, elapsed = ?started.elapsed(), "kubelets started");
        } else {
            lab.register_nodes().await?;
        }

        if opts.kube_proxy {
            lab.start_kube_proxies().await?;
            tracing::info!(lab = %id, elapsed = ?started.elapsed(), "kube-proxy ready");
        }
        if opts.kubelet {
            lab.wait_nodes_ready().await?;
            tracing::info!(lab = %id, elapsed = ?started.elapsed(), "nodes ready");
        }
        lab.state.phase = Phase::Ready;
        lab.save()?;
        tracing::info!(lab = %id, elapsed = ?started.elapsed(), "lab is up");
        Ok(lab)
    }

    /// The API server's audit log: a JSON event per request made with ServiceAccount credentials
    /// (see [`cp::AUDIT_POLICY`]).
    pub fn audit_log(&self) -> PathBuf {
        self.layout.audit_log()
    }

    /// A kubeconfig for processes in node namespaces that authenticates as ServiceAccount
    /// `namespace/name`; see [`service_account_kubeconfig`].
    pub fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<PathBuf, LabError> {
        service_account_kubeconfig(&self.state, namespace, name)
    }

    /// The run id (prefix of every namespace).
    pub fn id(&self) -> &str {
        &self.plan.id
    }

    /// Host-side kubeconfig (https://127.0.0.1:<relay port>), for kubectl and kube-rs.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Kubeconfig for processes inside node namespaces (https://198.51.100.2:6443), admin
    /// credentials.
    pub fn node_kubeconfig(&self) -> &Path {
        &self.node_kubeconfig
    }

    /// A kube-rs client for the host-side kubeconfig.
    pub async fn client(&self) -> Result<kube::Client, LabError> {
        client_for(&self.kubeconfig).await
    }

    /// The nodes, in order.
    pub fn nodes(&self) -> &[LabHost] {
        &self.plan.nodes
    }

    /// The client host.
    pub fn client_host(&self) -> &LabHost {
        &self.plan.client
    }

    /// The router between the LAN and the client network behind it, if the lab has one.
    pub fn router(&self) -> Option<Router> {
        self.state
            .router
            .then(|| Router::new(&self.plan.id, &self.layout.run))
    }

    /// The control-plane host.
    pub fn cp_host(&self) -> &LabHost {
        &self.plan.cp
    }

    /// The whole address plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Namespace of `host` (`node-k`, `client`, `cp` or `lan`).
    pub fn netns(&self, host: &str) -> Result<String, LabError> {
        Ok(self.plan.netns(host)?)
    }

    /// Runs `cmd` inside `host`'s namespace and waits for it. A non-zero exit is not an error;
    /// check `status`.
    pub fn exec(&self, host: &str, cmd: &[&str]) -> Result<Output, LabError> {
        let ns = self.netns(host)?;
        let argv = process::in_netns(Some(&ns), &strings(cmd));
        output(&argv)
    }

    /// Starts `cmd` in the background inside `host`'s namespace, output to
    /// `<run>/logs/<log_name>.log`, and returns once it runs in that namespace. The process is killed when the [`LabProcess`] is dropped
    /// or killed, and in any case when the lab goes down.
    pub fn spawn(&self, host: &str, cmd: &[&str], log_name: &str) -> Result<LabProcess, LabError> {
        let ns = self.netns(host)?;
        let log = self.layout.log(log_name);
        let child = process::spawn_detached(Some(&ns), &strings(cmd), &log, &[])?;
        let pid = child.id();
        let proc = LabProcess::new(log_name, child, log);
        // Return only once the process is inside the namespace, so callers can find it with
        // `ip netns pids` or signal it knowing it runs there. If it exits first, the caller
        // sees that through `is_running` and its log.
        process::wait_in_netns(pid, &ns, Duration::from_secs(5));
        Ok(proc)
    }

    /// Runs kubectl with the host-side kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Result<Output, LabError> {
        let mut argv = vec![
            self.tools_bin
                .join("kubectl")
                .to_string_lossy()
                .into_owned(),
            format!("--kubeconfig={}", self.kubeconfig.display()),
        ];
        argv.extend(strings(args));
        output(&argv)
    }

    /// Where kubectl, helm, kube-proxy and friends live.
    pub fn tools_bin(&self) -> &Path {
        &self.tools_bin
    }

    /// The run directory (certs, kubeconfigs, logs, state.json).
    pub fn run_dir(&self) -> &Path {
        &self.layout.run
    }

    /// Path of the log file for `name` (e.g. `kube-apiserver`, or a [`Lab::spawn`] log name).
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.layout.log(name)
    }

    /// The persisted state (what `ferrolb-lab status` shows).
    pub fn state(&self) -> &LabState {
        &self.state
    }

    /// Kills kube-apiserver (SIGKILL) to simulate an API outage. Clients get refused
    /// connections until [`Lab::start_apiserver`].
    pub fn stop_apiserver(&mut self) -> Result<(), LabError> {
        let Some(i) = self
            .children
            .iter()
            .position(|(n, _)| n == "kube-apiserver")
        else {
            return Err(LabError::ApiserverState("stopped"));
        };
        let (_, mut child) = self.children.remove(i);
        let _ = process::signal_group(child.id(), Signal::Kill);
        process::wait_timeout(&mut child, Duration::from_secs(10));
        self.state.processes.retain(|p| p.name != "kube-apiserver");
        self.save()?;
        Ok(())
    }

    /// Starts kube-apiserver again after [`Lab::stop_apiserver`] and waits until it is ready.
    pub async fn start_apiserver(&mut self) -> Result<(), LabError> {
        if self.children.iter().any(|(n, _)| n == "kube-apiserver") {
            return Err(LabError::ApiserverState("running"));
        }
        let args = cp::apiserver_args(&self.tools_bin, &self.layout);
        let ns = self.plan.cp.netns.clone();
        self.start("kube-apiserver", Some(&ns), &args)?;
        self.wait_apiserver_ready().await
    }

    /// Keeps the lab running after this handle is gone: clears the owner, so `gc` leaves it
    /// alone until `ferrolb-lab down`. Returns its state.
    pub fn detach(mut self) -> Result<LabState, LabError> {
        self.state.owner = None;
        self.save()?;
        self.finished = true;
        Ok(self.state.clone())
    }

    /// Tears the lab down now and reports what was done.
    pub fn down(mut self) -> TeardownReport {
        self.teardown()
    }

    fn teardown(&mut self) -> TeardownReport {
        self.finished = true;
        let report = teardown::teardown(
            &self.plan.id,
            Some(&self.state),
            &self.layout.run,
            &mut self.children,
        );
        for p in &report.problems {
            tracing::warn!(lab = %self.plan.id, "teardown: {p}");
        }
        report
    }

    fn save(&self) -> Result<(), LabError> {
        Ok(state::save(&self.layout.run, &self.state)?)
    }

    /// Starts a detached daemon and records it (pid and start time) in state.json at once.
    fn start(&mut self, name: &str, netns: Option<&str>, argv: &[String]) -> Result<(), LabError> {
        self.start_as(name, netns, argv, false)
    }

    /// [`Lab::start`], entering the namespace with `nsenter --net` when `entered` (see
    /// [`process::nsenter_argv`]) instead of `ip netns exec`.
    fn start_as(
        &mut self,
        name: &str,
        netns: Option<&str>,
        argv: &[String],
        entered: bool,
    ) -> Result<(), LabError> {
        let log = self.layout.log(name);
        let child = match (netns, entered) {
            (Some(ns), true) => {
                process::spawn_detached(None, &process::nsenter_argv(ns, argv), &log, &[])?
            }
            _ => process::spawn_detached(netns, argv, &log, &[])?,
        };
        let pid = child.id();
        self.children.push((name.to_string(), child));
        // The start time identifies the process later even if the pid is recycled; a process
        // that has already died gets 0 and is simply never signalled.
        let id = ProcId::of(pid).unwrap_or(ProcId { pid, start_time: 0 });
        self.state.processes.retain(|p| p.name != name);
        self.state.processes.push(ProcRecord {
            name: name.to_string(),
            id,
            netns: netns.map(str::to_string),
            log,
        });
        self.save()
    }

    fn relay_args(&self, listen: &str, connect: &str, port_file: Option<&Path>) -> Vec<String> {
        let mut args = vec![
            self.lab_bin.to_string_lossy().into_owned(),
            "relay".into(),
            format!("--listen={listen}"),
            format!("--connect={connect}"),
            format!("--watch={}", self.layout.run.display()),
        ];
        if let Some(f) = port_file {
            args.push(format!("--port-file={}", f.display()));
        }
        args
    }

    /// Starts the host-namespace relay on a free loopback port and returns the port.
    fn start_host_relay(&mut self) -> Result<u16, LabError> {
        let port_file = self.layout.host_port_file();
        let args = self.relay_args(
            "tcp:127.0.0.1:0",
            &format!("unix:{}", self.layout.api_socket().display()),
            Some(&port_file),
        );
        self.start("relay-host", None, &args)?;
        let deadline = Instant::now() + RELAY_READY;
        while Instant::now() < deadline {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|p| p.trim().parse::<u16>().ok())
            {
                self.state.host_port = Some(port);
                self.save()?;
                return Ok(port);
            }
            self.check_alive("relay-host")?;
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(self.not_ready("relay-host", RELAY_READY))
    }

    fn write_kubeconfig(&self, path: &Path, server: &str, user: &str) -> Result<(), LabError> {
        let pki = self.layout.pki();
        let text = kubeconfig::render(&KubeconfigSpec {
            server,
            ca: &pki.ca_crt(),
            user: Credentials::Certificate {
                cert: &pki.crt(user),
                key: &pki.key(user),
            },
        });
        std::fs::write(path, text).map_err(|source| LabError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Fails if the daemon `name` has exited, with the end of its log.
    fn check_alive(&mut self, name: &str) -> Result<(), LabError> {
        let Some((_, child)) = self.children.iter_mut().find(|(n, _)| n == name) else {
            return Ok(());
        };
        match child.try_wait() {
            Ok(Some(status)) => Err(LabError::Exited {
                what: name.to_string(),
                status: status.to_string(),
                log_tail: process::log_tail(&self.layout.log(name), TAIL),
            }),
            _ => Ok(()),
        }
    }

    fn not_ready(&self, name: &str, waited: Duration) -> LabError {
        LabError::NotReady {
            what: name.to_string(),
            waited,
            log_tail: process::log_tail(&self.layout.log(name), TAIL),
        }
    }

    /// Polls `/readyz` through the host relay until it answers `ok`.
    async fn wait_apiserver_ready(&mut self) -> Result<(), LabError> {
        let client = self.client().await?;
        let started = Instant::now();
        while started.elapsed() < APISERVER_READY {
            self.check_alive("etcd")?;
            self.check_alive("kube-apiserver")?;
            self.check_alive("relay-cp")?;
            self.check_alive("relay-host")?;
            let req = kube::core::Request::new("").get("readyz", &Default::default())?;
            let probe = tokio::time::timeout(Duration::from_secs(3), client.request_text(req));
            if let Ok(Ok(body)) = probe.await
                && body.trim() == "ok"
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(self.not_ready("kube-apiserver", APISERVER_READY))
    }

    /// Creates a `Node` per node namespace and reports it Ready, as a kubelet would.
    async fn register_nodes(&self) -> Result<(), LabError> {
        let api: Api<Node> = Api::all(self.client().await?);
        let now = k8s_openapi::jiff::Timestamp::now();
        for host in &self.plan.nodes {
            api.create(&PostParams::default(), &cp::node_object(host))
                .await?;
            let status = serde_json::json!({ "status": cp::node_status(host, now) });
            api.patch_status(&host.name, &PatchParams::default(), &Patch::Merge(&status))
                .await?;
        }
        Ok(())
    }

    /// Prepares the machine and starts containerd and a kubelet in every node namespace:
    /// directories, cgroup root, configuration, images imported. Returns once every kubelet
    /// runs; [`Lab::wait_nodes_ready`] waits for them to register.
    fn start_real_nodes(&mut self, images: &[PathBuf]) -> Result<(), LabError> {
        let nodes = self.plan.nodes.clone();
        let id = self.plan.id.clone();
        for (k, h) in nodes.iter().enumerate() {
            let layout = NodeLayout::new(&self.layout.run, &h.name);
            for d in layout.dirs() {
                std::fs::create_dir_all(&d).map_err(|source| LabError::Write {
                    path: d.clone(),
                    source,
                })?;
            }
            let (v4, v6) = crate::plan::pod_subnets(k + 1)
                .ok_or(LabError::TooManyRealNodes(self.plan.nodes.len()))?;
            let files = [
                (
                    layout.containerd_config(),
                    node::containerd_config(&layout, &id),
                ),
                (
                    layout.cni_conf_dir().join("10-lab.conflist"),
                    node::cni_conflist(&id, &layout, v4, v6),
                ),
                (
                    layout.kubelet_config(),
                    node::kubelet_config(&id, h, &layout),
                ),
                (layout.resolv_conf(), "options ndots:1\n".to_string()),
            ];
            for (path, text) in files {
                std::fs::write(&path, text).map_err(|source| LabError::Write {
                    path: path.clone(),
                    source,
                })?;
            }
            host::create_cgroup_root(&node::cgroup_root(&id, &h.name))?;
            let args = node::containerd_args(&layout);
            self.start_as(
                &format!("containerd-{}", h.name),
                Some(&h.netns),
                &args,
                true,
            )?;
        }
        // Images go into every node at once: each import is a separate ctr against its own
        // containerd.
        let deadline = Instant::now() + CONTAINERD_READY;
        for h in &nodes {
            let sock = NodeLayout::new(&self.layout.run, &h.name).containerd_socket();
            while !sock.exists() {
                self.check_alive(&format!("containerd-{}", h.name))?;
                if Instant::now() > deadline {
                    return Err(self.not_ready(&format!("containerd-{}", h.name), CONTAINERD_READY));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let run = self.layout.run.clone();
        std::thread::scope(|s| {
            let jobs: Vec<_> = nodes
                .iter()
                .map(|h| {
                    let layout = NodeLayout::new(&run, &h.name);
                    s.spawn(move || -> Result<(), LabError> {
                        for archive in images {
                            run_all(&[node::import_args(&layout, archive)])?;
                        }
                        Ok(())
                    })
                })
                .collect();
            jobs.into_iter().try_for_each(|j| {
                j.join().unwrap_or_else(|_| {
                    Err(LabError::Exited {
                        what: "image import thread".into(),
                        status: "panicked".into(),
                        log_tail: String::new(),
                    })
                })
            })
        })?;
        let kubeconfig = self.node_kubeconfig.clone();
        for h in &nodes {
            let layout = NodeLayout::new(&self.layout.run, &h.name);
            let args = node::kubelet_args(&self.tools_bin, &layout, h, &kubeconfig);
            self.start_as(&format!("kubelet-{}", h.name), Some(&h.netns), &args, true)?;
        }
        Ok(())
    }

    /// Waits until every real node has registered and reports Ready.
    async fn wait_nodes_ready(&mut self) -> Result<(), LabError> {
        let api: Api<Node> = Api::all(self.client().await?);
        let started = Instant::now();
        let names: Vec<String> = self.plan.nodes.iter().map(|h| h.name.clone()).collect();
        loop {
            for n in &names {
                self.check_alive(&format!("kubelet-{n}"))?;
                self.check_alive(&format!("containerd-{n}"))?;
            }
            let list = api.list(&Default::default()).await?;
            let ready = |n: &String| {
                list.items.iter().any(|node| {
                    node.metadata.name.as_ref() == Some(n)
                        && node
                            .status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| {
                                c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                })
            };
            if names.iter().all(ready) {
                return Ok(());
            }
            if started.elapsed() > NODES_READY {
                let missing = names
                    .iter()
                    .find(|n| !ready(n))
                    .cloned()
                    .unwrap_or_default();
                return Err(self.not_ready(&format!("kubelet-{missing}"), NODES_READY));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Starts kube-proxy in every node namespace and waits for its first sync.
    async fn start_kube_proxies(&mut self) -> Result<(), LabError> {
        let nodes = self.plan.nodes.clone();
        let cluster_cidr = self.state.kubelet.then(node::cluster_cidrs);
        for node in &nodes {
            let path = self.layout.kube_proxy_config(&node.name);
            let text = cp::kube_proxy_config(
                node,
                &self.layout,
                self.state.proxy_mode,
                cluster_cidr.as_deref(),
            );
            std::fs::write(&path, text).map_err(|source| LabError::Write {
                path: path.clone(),
                source,
            })?;
            let args = cp::kube_proxy_args(&self.tools_bin, &self.layout, &node.name);
            self.start(
                &format!("kube-proxy-{}", node.name),
                Some(&node.netns),
                &args,
            )?;
        }
        let started = Instant::now();
        for node in &nodes {
            let name = format!("kube-proxy-{}", node.name);
            loop {
                self.check_alive(&name)?;
                // kube-proxy creates its chains before the first sync fills them; the rule for
                // the `kubernetes` Service (which always exists) shows the sync has happened.
                let synced = match self.state.proxy_mode {
                    ProxyMode::Iptables => {
                        let probe = self.exec(
                            &node.name,
                            &["iptables", "-t", "nat", "-S", "KUBE-SERVICES"],
                        )?;
                        String::from_utf8_lossy(&probe.stdout).contains(KUBERNETES_SERVICE_RULE)
                    }
                    ProxyMode::Nftables => {
                        let probe = self.exec(
                            &node.name,
                            &["nft", "list", "map", "ip", "kube-proxy", "service-ips"],
                        )?;
                        String::from_utf8_lossy(&probe.stdout).contains("default/kubernetes")
                    }
                };
                if synced {
                    break;
                }
                if started.elapsed() > KUBE_PROXY_READY {
                    return Err(self.not_ready(&name, KUBE_PROXY_READY));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.teardown();
        }
    }
}

/// Writes a kubeconfig that authenticates as ServiceAccount `namespace/name` with a fresh token
/// (`kubectl create token`, valid 24 h) and reaches the API server at its LAN address, as a pod's
/// mounted token would. Processes started in node namespaces with it get exactly that account's
/// RBAC. Returns the file's path (`<run>/kubeconfig-sa-<namespace>-<name>`, mode 0600).
pub fn service_account_kubeconfig(
    st: &LabState,
    namespace: &str,
    name: &str,
) -> Result<PathBuf, LabError> {
    let argv = crate::cli::kubectl_argv(
        st,
        &strings(&[
            "create",
            "token",
            name,
            "--namespace",
            namespace,
            "--duration=24h",
        ]),
    );
    let out = output(&argv)?;
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || token.is_empty() {
        return Err(LabError::Command {
            cmd: argv.join(" "),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let layout = Layout::new(&state::run_dir(&st.id));
    let text = kubeconfig::render(&KubeconfigSpec {
        server: &format!("https://{CP_IPV4}:{API_PORT}"),
        ca: &layout.pki().ca_crt(),
        user: Credentials::Token(&token),
    });
    let path = layout.run.join(format!("kubeconfig-sa-{namespace}-{name}"));
    let write = || -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(text.as_bytes())
    };
    write().map_err(|source| LabError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// A kube-rs client from a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Result<kube::Client, LabError> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    Ok(kube::Client::try_from(config)?)
}

/// Picks the lab id and claims its run directory (atomically, so concurrent `up`s never
/// share one).
fn claim_id(name: Option<&str>) -> Result<(String, PathBuf), LabError> {
    if let Some(id) = name {
        crate::plan::validate_id(id)?;
        return Ok((id.to_string(), state::create_run_dir(id)?));
    }
    let mut last = None;
    for _ in 0..16 {
        let id = crate::plan::format_run_id(random_bytes::<3>());
        match state::create_run_dir(&id) {
            Ok(dir) => return Ok((id, dir)),
            Err(e @ StateError::Exists(_)) => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.unwrap_or(StateError::Exists(String::new())).into())
}

/// Random bytes from /dev/urandom, falling back to std's randomly seeded hasher.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok();
    if !ok {
        use std::hash::BuildHasher as _;
        // Each RandomState gets fresh random keys, so hashing the index is unpredictable.
        for (i, b) in buf.iter_mut().enumerate() {
            *b = std::collections::hash_map::RandomState::new()
                .hash_one(i)
                .to_le_bytes()[0];
        }
    }
    buf
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn strings(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_string()).collect()
}

/// Runs argv and returns its output whatever the exit status.
pub(crate) fn output(argv: &[String]) -> Result<Output, LabError> {
    let (program, args) = argv.split_first().ok_or(ProcessError::EmptyCommand)?;
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            cmd: argv.join(" "),
            source,
        })
}

/// Runs `ip -n <netns> -batch -` with `script` on its standard input.
fn run_ip_batch(netns: &str, script: &str) -> Result<(), LabError> {
    use std::io::Write as _;
    let argv = strings(&["ip", "-n", netns, "-batch", "-"]);
    let spawn_err = |source| LabError::Spawn {
        cmd: argv.join(" "),
        source,
    };
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    // Taking stdin closes it (EOF) before the wait. A failed write shows up as ip's own error.
    let wrote = match child.stdin.take() {
        Some(mut stdin) => stdin.write_all(script.as_bytes()),
        None => Ok(()),
    };
    let out = child.wait_with_output().map_err(spawn_err)?;
    if out.status.success() {
        return wrote.map_err(spawn_err);
    }
    Err(LabError::Command {
        cmd: argv.join(" "),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// Runs each argv in order, stopping at the first failure.
fn run_all(cmds: &[Vec<String>]) -> Result<(), LabError> {
    for argv in cmds {
        let out = output(argv)?;
        if !out.status.success() {
            return Err(LabError::Command {
                cmd: argv.join(" "),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
    }
    Ok(())
}
