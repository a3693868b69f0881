//! The Helm chart on a cluster with real nodes: `helm install` runs the controller Deployment and
//! the speaker DaemonSet as pods (the ferrolb image built from the workspace's binaries, imported
//! on every node), a backend Deployment serves a LoadBalancer Service through Kubernetes' own
//! EndpointSlices, `helm upgrade` with changed values rolls both workloads while a client keeps
//! connecting through the Service's IP, the leader's node is cut off, a changed CRD arrives with an
//! upgrade, and `helm uninstall` leaves the cluster clean, pods and ReplicaSets included.
//!
//! The pods authenticate with the chart's ServiceAccounts, so the API server's audit log shows
//! every request they made: any refused request fails the test, and so does a grant nobody used.
//! What the containers log is read from the kubelets' log files on disk, which stay readable
//! while a node is cut off.
//!
//! Steps build on each other, so the first failure ends the story; the lab, its pods and every
//! process are torn down in any case (`Lab` and `LabProcess` clean up on drop).
//!
//! Needs root, iproute2, arping, curl, the lab's tools (helm and the kubelet among them) and the
//! binaries from `cargo build --workspace --bins`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail, ensure};
use ferrolb_crds::{ForwarderNode, IPAddressPool};
use ferrolb_e2e::{
    apply, audit, eventually, ferrolb_image, pod_log, stdout_of, text, wait_rollout, workspace,
};
use ferrolb_lab::{Lab, LabOptions, LabProcess};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::{ApiResource, Discovery, Scope, verbs};
use serde_json::json;

/// The release namespace, as in the README's install command.
const NS: &str = "ferrolb-system";
const RELEASE: &str = "ferrolb";
/// Where the test's Service and its backend live.
const APP_NS: &str = "demo";
const POOL: &str = "lan";
const FIRST_RANGE: &str = "198.51.100.80-198.51.100.89";
const ADDED_RANGE: &str = "198.51.100.120-198.51.100.129";
const CRDS: [&str; 2] = ["ipaddresspools.ferrolb.io", "l2advertisements.ferrolb.io"];
/// Generous bound for anything the components do in response to a change.
const T: Duration = Duration::from_secs(30);
/// Bound for a rollout: pods scheduled, started and passing their readiness probes (every 5 s in
/// the chart) one after another on a busy machine.
const ROLLOUT: Duration = Duration::from_secs(180);
/// Bound for an uninstall to leave nothing behind: pods end within their grace periods (30 s
/// for the controller), then the garbage collector removes what they owned.
const GONE: Duration = Duration::from_secs(90);
/// How a backend pod's answer starts (`pod=web-<hash> node=<node> src=<ip:port>`).
const BACKEND_ANSWER: &str = "pod=web-";
/// Given to every install of the chart: the image is imported on every node and no registry is
/// reachable, so nothing may be pulled. Upgrades keep it (`--reuse-values`).
const PULL_NEVER: &str = "image.pullPolicy=Never";
/// The client's connection loop during a rolling update: one new connection and GET this often.
const PROBE_INTERVAL_MS: u64 = 100;

/// `helm` against the lab ([`ferrolb_e2e::helm`]).
struct Helm<'a> {
    lab: &'a Lab,
}

impl Helm<'_> {
    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        ferrolb_e2e::helm(self.lab, args)
    }

    /// `helm install` (or `upgrade --reuse-values`) of `release` from `chart` in namespace `ns`,
    /// with a `--set` for each of `values`.
    fn deploy(
        &self,
        verb: Verb,
        release: &str,
        chart: &Path,
        ns: &str,
        values: &[&str],
    ) -> anyhow::Result<String> {
        let chart = chart.display().to_string();
        let mut args = match verb {
            Verb::Install => vec!["install", release, &chart, "--create-namespace"],
            Verb::Upgrade => vec!["upgrade", release, &chart, "--reuse-values"],
        };
        args.extend(["-n", ns]);
        for v in values {
            args.extend(["--set", v]);
        }
        self.run(&args)
    }

    fn uninstall(&self, release: &str, ns: &str) -> anyhow::Result<String> {
        self.run(&["uninstall", release, "-n", ns])
    }
}

#[derive(Debug, Clone, Copy)]
enum Verb {
    Install,
    Upgrade,
}

/// The chart's two workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Component {
    /// The Deployment `<release>-controller`.
    Controller,
    /// The DaemonSet `<release>-speaker`.
    Speaker,
}

impl Component {
    /// The `app.kubernetes.io/component` label of its pods, and its container's name.
    fn as_str(self) -> &'static str {
        match self {
            Component::Controller => "controller",
            Component::Speaker => "speaker",
        }
    }

    /// The workload, as `kubectl rollout status` names it.
    fn workload(self) -> String {
        match self {
            Component::Controller => format!("deployment/{RELEASE}-controller"),
            Component::Speaker => format!("daemonset/{RELEASE}-speaker"),
        }
    }
}

/// A pod of the release that runs and is not being deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RunningPod {
    name: String,
    node: String,
    ready: bool,
}

struct Env {
    lab: Lab,
    client: kube::Client,
    chart: PathBuf,
}

impl Env {
    fn node_names(&self) -> Vec<String> {
        self.lab.nodes().iter().map(|n| n.name.clone()).collect()
    }

    fn node_of_mac(&self, mac: &str) -> Option<String> {
        self.lab
            .nodes()
            .iter()
            .find(|n| n.mac.eq_ignore_ascii_case(mac))
            .map(|n| n.name.clone())
    }

    fn helm(&self) -> Helm<'_> {
        Helm { lab: &self.lab }
    }

    fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        stdout_of(
            &format!("kubectl {}", args.join(" ")),
            self.lab.kubectl(args)?,
        )
    }

    fn exec(&self, host: &str, cmd: &[&str]) -> anyhow::Result<std::process::Output> {
        Ok(self.lab.exec(host, cmd)?)
    }

    /// `helm install` of the chart under test as [`RELEASE`], with [`PULL_NEVER`].
    fn install_chart(&self, values: &[&str]) -> anyhow::Result<String> {
        let mut all = vec![PULL_NEVER];
        all.extend_from_slice(values);
        self.helm()
            .deploy(Verb::Install, RELEASE, &self.chart, NS, &all)
    }

    /// The pods of `component` that exist and are not being deleted, with their nodes and
    /// whether they are Ready.
    async fn pods(&self, component: Component) -> anyhow::Result<Vec<RunningPod>> {
        let selector = format!(
            "app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={}",
            component.as_str()
        );
        let list = Api::<Pod>::namespaced(self.client.clone(), NS)
            .list(&ListParams::default().labels(&selector))
            .await?;
        Ok(list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                let ready = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                RunningPod {
                    name: p.metadata.name.unwrap_or_default(),
                    node: p.spec.and_then(|s| s.node_name).unwrap_or_default(),
                    ready,
                }
            })
            .collect())
    }

    /// What a pod of `component` logged, from the kubelet's files.
    fn pod_log(&self, component: Component, pod: &str) -> anyhow::Result<String> {
        pod_log(self.lab.run_dir(), NS, pod, component.as_str())
    }

    /// Both workloads rolled out as the chart describes them: the controller's replicas all
    /// Ready, exactly one Ready speaker on every node, and no pod of an older revision left.
    async fn workloads_ready(&self) -> anyhow::Result<String> {
        for c in [Component::Controller, Component::Speaker] {
            wait_rollout(&self.lab, NS, &c.workload(), ROLLOUT)?;
        }
        let replicas = Api::<Deployment>::namespaced(self.client.clone(), NS)
            .get(&format!("{RELEASE}-controller"))
            .await?
            .spec
            .and_then(|s| s.replicas)
            .unwrap_or(1);
        let replicas = usize::try_from(replicas).unwrap_or(0);
        let nodes = self.node_names();
        eventually(
            "the controller's replicas and a speaker per node, all Ready",
            T,
            || async {
                let ctl = self.pods(Component::Controller).await?;
                let spk = self.pods(Component::Speaker).await?;
                let mut spk_nodes: Vec<String> = spk.iter().map(|p| p.node.clone()).collect();
                spk_nodes.sort();
                let all_ready = ctl.iter().chain(&spk).all(|p| p.ready);
                if ctl.len() == replicas && spk_nodes == nodes && all_ready {
                    let on = |pods: &[RunningPod]| {
                        pods.iter()
                            .map(|p| format!("{} on {}", p.name, p.node))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    Ok(Some(format!(
                        "controller {replicas}/{replicas} ({}); speakers Ready ({})",
                        on(&ctl),
                        on(&spk)
                    )))
                } else {
                    bail!("controllers {ctl:?}; speakers {spk:?}")
                }
            },
        )
        .await
    }

    /// The end of every log the kubelets kept for the release's pods, for a failure message.
    /// Read from disk, so it works whatever state the API server is in.
    fn log_tails(&self) -> String {
        let mut out = String::new();
        let nodes = self.lab.run_dir().join("nodes");
        let Ok(node_dirs) = std::fs::read_dir(&nodes) else {
            return out;
        };
        for node in node_dirs.flatten() {
            let Ok(pods) = std::fs::read_dir(node.path().join("pod-logs")) else {
                continue;
            };
            for pod in pods.flatten() {
                let dir = pod.file_name().to_string_lossy().into_owned();
                let Some(rest) = dir.strip_prefix(&format!("{NS}_")) else {
                    continue;
                };
                let name = rest.rsplit_once('_').map(|(n, _)| n).unwrap_or(rest);
                for c in [Component::Controller, Component::Speaker] {
                    if let Ok(log) = self.pod_log(c, name)
                        && !log.is_empty()
                    {
                        out.push_str(&format!(
                            "--- {name} on {}:\n{}\n",
                            node.file_name().to_string_lossy(),
                            tail(&log, 15)
                        ));
                    }
                }
            }
        }
        out
    }

    /// The identity holding the chart's Lease, if anyone does.
    async fn lease_holder(&self) -> anyhow::Result<Option<String>> {
        let lease = Api::<Lease>::namespaced(self.client.clone(), NS)
            .get(&format!("{RELEASE}-controller"))
            .await?;
        Ok(lease.spec.and_then(|s| s.holder_identity))
    }

    async fn service(&self) -> anyhow::Result<Service> {
        Ok(Api::<Service>::namespaced(self.client.clone(), APP_NS)
            .get("web")
            .await?)
    }

    async fn ingress_ip(&self) -> anyhow::Result<Option<String>> {
        Ok(self
            .service()
            .await?
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .and_then(|i| i.into_iter().find_map(|x| x.ip)))
    }

    async fn pool(&self, name: &str) -> anyhow::Result<Option<IPAddressPool>> {
        Ok(Api::<IPAddressPool>::all(self.client.clone())
            .get_opt(name)
            .await?)
    }

    async fn crds_present(&self) -> anyhow::Result<usize> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let mut n = 0;
        for crd in CRDS {
            n += usize::from(api.get_opt(crd).await?.is_some());
        }
        Ok(n)
    }

    /// The node named in the Service's `ferrolb.io/Announced` condition, once it is True.
    async fn announcer(&self) -> anyhow::Result<Option<String>> {
        let svc = self.service().await?;
        let cond = svc
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "ferrolb.io/Announced" && c.status == "True");
        Ok(cond.and_then(|c| {
            self.node_names()
                .into_iter()
                .find(|n| c.message.contains(&format!("by {n} ")))
        }))
    }

    /// The Service answers from the LAN: the node its condition names is the one answering ARP
    /// (every reply from that node's MAC), and HTTP through the IP reaches a backend pod. Waits
    /// for that to hold (a healed partition settles on one announcer within a fraction of a
    /// second) and fails with the last disagreement.
    async fn check_served(&self, ip: &str) -> anyhow::Result<String> {
        let node = eventually(
            &format!("one node to announce {ip}, as its condition says"),
            T,
            || async {
                let node = self.announcer().await?;
                let out = self.exec(
                    "client",
                    &["arping", "-c", "3", "-w", "4", "-i", "eth0", ip],
                )?;
                let macs: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| l.contains("bytes from"))
                    .filter_map(|l| l.split_whitespace().nth(3).map(str::to_lowercase))
                    .collect();
                let answering: BTreeSet<Option<String>> =
                    macs.iter().map(|m| self.node_of_mac(m)).collect();
                match node {
                    Some(n) if answering == BTreeSet::from([Some(n.clone())]) => Ok(Some(n)),
                    _ => bail!("the condition names {node:?}, ARP replies came from {macs:?}"),
                }
            },
        )
        .await?;
        let url = format!("http://{ip}/");
        let body = eventually(&format!("curl {url}"), T, || {
            let out = self.exec("client", &["curl", "-s", "-m", "2", &url]);
            std::future::ready(out.map(|o| {
                let body = String::from_utf8_lossy(&o.stdout).trim().to_string();
                body.starts_with(BACKEND_ANSWER).then_some(body)
            }))
        })
        .await?;
        Ok(format!("{ip} announced by {node}, answered {body:?}"))
    }

    /// Every object in the cluster carrying `app.kubernetes.io/instance=<instance>`, as
    /// `Kind/namespace/name`, leaving out objects owned by another object (the garbage collector
    /// removes those with their owner: EndpointSlices of the metrics Services, for one).
    async fn labelled_objects(
        &self,
        kinds: &[Listable],
        instance: &str,
    ) -> anyhow::Result<BTreeSet<String>> {
        let selector = format!("app.kubernetes.io/instance={instance}");
        let mut found = BTreeSet::new();
        for l in kinds {
            let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &l.resource);
            let kind = &l.resource.kind;
            for o in api.list(&ListParams::default().labels(&selector)).await? {
                if o.metadata
                    .owner_references
                    .as_ref()
                    .is_some_and(|r| !r.is_empty())
                {
                    continue;
                }
                found.insert(object_id(kind, &o));
            }
        }
        Ok(found)
    }

    /// Every object in namespace `ns` but what any namespace holds without help: Events, the
    /// `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap.
    async fn namespace_contents(
        &self,
        kinds: &[Listable],
        ns: &str,
    ) -> anyhow::Result<BTreeSet<String>> {
        let mut found = BTreeSet::new();
        for l in kinds.iter().filter(|l| l.scope == Scope::Namespaced) {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), ns, &l.resource);
            let kind = &l.resource.kind;
            for o in api.list(&ListParams::default()).await? {
                let name = o.metadata.name.clone().unwrap_or_default();
                let ordinary = kind == "Event"
                    || (kind == "ServiceAccount" && name == "default")
                    || (kind == "ConfigMap" && name == "kube-root-ca.crt");
                if !ordinary {
                    found.insert(object_id(kind, &o));
                }
            }
        }
        Ok(found)
    }

    /// The objects of a release's manifest and hooks (`helm get manifest`, `helm get hooks`).
    fn manifest_docs(&self, release: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut yaml = self.helm().run(&["get", "manifest", release, "-n", NS])?;
        yaml.push_str("\n---\n");
        yaml.push_str(&self.helm().run(&["get", "hooks", release, "-n", NS])?);
        let mut docs = Vec::new();
        for doc in yaml.split("\n---") {
            let v: serde_json::Value = serde_yaml::from_str(doc)
                .with_context(|| format!("a document of release {release}:\n{doc}"))?;
            if !v.is_null() {
                docs.push(v);
            }
        }
        Ok(docs)
    }

    /// [`Self::manifest_docs`] in the form of [`Self::labelled_objects`].
    fn manifest_objects(&self, release: &str) -> anyhow::Result<BTreeSet<String>> {
        Ok(self
            .manifest_docs(release)?
            .iter()
            .map(|v| {
                let kind = v["kind"].as_str().unwrap_or_default();
                let ns = v["metadata"]["namespace"].as_str().unwrap_or_default();
                let name = v["metadata"]["name"].as_str().unwrap_or_default();
                format!("{kind}/{ns}/{name}")
            })
            .collect())
    }

    /// The objects in the cluster that belong to the release are exactly those of its manifest
    /// and hooks: nothing left over from an earlier revision, nothing missing.
    async fn check_release_matches_manifest(&self) -> anyhow::Result<()> {
        let want = self.manifest_objects(RELEASE)?;
        eventually("the release's objects to equal its manifest", T, || async {
            let kinds = listable(&self.client).await?;
            let have = self.labelled_objects(&kinds, RELEASE).await?;
            if have == want {
                Ok(Some(()))
            } else {
                bail!(
                    "only in the cluster: {:?}; only in the manifest: {:?}",
                    have.difference(&want).collect::<Vec<_>>(),
                    want.difference(&have).collect::<Vec<_>>()
                )
            }
        })
        .await
    }

    /// After an uninstall: nothing labelled with the release, no CRDs unless `crds_kept`, and
    /// nothing in the release namespace: the pods have ended and the garbage collector has
    /// removed what the workloads owned (ReplicaSets, ControllerRevisions, EndpointSlices).
    async fn check_clean(&self, crds_kept: bool) -> anyhow::Result<()> {
        eventually("a clean cluster after helm uninstall", GONE, || async {
            let kinds = listable(&self.client).await?;
            let labelled = self.labelled_objects(&kinds, RELEASE).await?;
            let crds = self.crds_present().await?;
            let left = self.namespace_contents(&kinds, NS).await?;
            let want_crds = if crds_kept { CRDS.len() } else { 0 };
            let labelled: Vec<&String> = labelled
                .iter()
                .filter(|o| !(crds_kept && o.starts_with("CustomResourceDefinition/")))
                .collect();
            if labelled.is_empty() && crds == want_crds && left.is_empty() {
                Ok(Some(()))
            } else {
                bail!(
                    "left behind: {labelled:?}; CRDs: {crds} (want {want_crds}); in {NS}: {left:?}"
                )
            }
        })
        .await
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn object_id(kind: &str, o: &DynamicObject) -> String {
    format!(
        "{kind}/{}/{}",
        o.metadata.namespace.as_deref().unwrap_or_default(),
        o.metadata.name.as_deref().unwrap_or_default()
    )
}

/// A kind of object the API server lists (its preferred version), and its scope.
struct Listable {
    resource: ApiResource,
    scope: Scope,
}

/// Every kind the API server lists, discovered once per check so that each check sees kinds
/// served since the last (the CRDs come and go).
async fn listable(client: &kube::Client) -> anyhow::Result<Vec<Listable>> {
    let discovery = Discovery::new(client.clone()).run().await?;
    Ok(discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .filter(|(_, caps)| caps.supports_operation(verbs::LIST))
        .map(|(resource, caps)| Listable {
            resource,
            scope: caps.scope,
        })
        .collect())
}

/// A request one ServiceAccount made, from the audit log.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Access {
    group: String,
    /// `resource` or `resource/subresource`.
    resource: String,
    verb: String,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {g}/{}", self.verb, self.resource)
    }
}

/// From the audit log's events: what `user` was allowed, and every request it was refused.
fn audited(events: &[audit::Event], user: &str) -> (BTreeSet<Access>, Vec<String>) {
    let mut used = BTreeSet::new();
    let mut refused = Vec::new();
    for e in events.iter().filter(|e| e.user == user) {
        let access = Access {
            group: e.api_group.clone(),
            // Empty for a request that named no resource (discovery): never counted as used.
            resource: if e.resource.is_empty() {
                String::new()
            } else {
                e.resource_path()
            },
            verb: e.verb.clone(),
        };
        if e.code == 401 || e.code == 403 {
            refused.push(format!(
                "{access} {} -> {}: {}",
                e.request_uri, e.code, e.message
            ));
        } else if !access.resource.is_empty() {
            // A server-side apply that creates its object is authorized as a create too, inside
            // the one request the log records as a patch; the API server answers it 201.
            if access.verb == "patch" && e.code == 201 {
                used.insert(Access {
                    verb: "create".into(),
                    ..access.clone()
                });
            }
            used.insert(access);
        }
    }
    (used, refused)
}

/// What RBAC rules grant, in the form of [`Access`] (no wildcards: the chart test forbids them).
fn granted(rules: &[PolicyRule]) -> BTreeSet<Access> {
    let mut out = BTreeSet::new();
    for r in rules {
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    out.insert(Access {
                        group: g.clone(),
                        resource: res.clone(),
                        verb: v.clone(),
                    });
                }
            }
        }
    }
    out
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Connects `node` to the LAN or cuts it off, at the LAN bridge's port (the cable, as it were).
/// Not with the node's own `eth0`: setting that down makes the kernel drop the routes through
/// it, and the lab's routes to the Service CIDR and to the other nodes' pods would not come
/// back with the link.
fn set_link(env: &Env, node: &str, up: bool) -> anyhow::Result<()> {
    let state = if up { "up" } else { "down" };
    let port = env
        .lab
        .nodes()
        .iter()
        .find(|n| n.name == node)
        .map(|n| n.lan_port.clone())
        .ok_or_else(|| anyhow!("no node {node}"))?;
    let out = env.exec("lan", &["ip", "link", "set", &port, state])?;
    ensure!(
        out.status.success(),
        "LAN port of {node} {state}: {}",
        text(&out)
    );
    Ok(())
}

/// The client's connection loop through the Service's IP: `lab_probe http-probe`, a new TCP
/// connection and `GET /` every [`PROBE_INTERVAL_MS`], each attempt logged as it ends.
struct ConnectionLoop {
    process: LabProcess,
}

impl ConnectionLoop {
    fn start(env: &Env, ip: &str, name: &str) -> anyhow::Result<ConnectionLoop> {
        let target = format!("{ip}:80");
        let interval = PROBE_INTERVAL_MS.to_string();
        let process = env.lab.spawn(
            "client",
            &[
                env!("CARGO_BIN_EXE_lab_probe"),
                "http-probe",
                "--target",
                &target,
                "--interval-ms",
                &interval,
                "--timeout-ms",
                "3000",
                // A bound in case the test dies before stopping it.
                "--seconds",
                "900",
            ],
            name,
        )?;
        Ok(ConnectionLoop { process })
    }

    /// Stops the loop and reads it. Every connection must have been answered by a backend pod,
    /// but one open at the moment the client's ARP entry for the IP moved to another node: its
    /// next packets reach a node that has no state for it, and it is reset (L2 failover cannot
    /// carry an open TCP connection across nodes). The loop is sequential, so a move cuts at
    /// most one. The loop must have run from before `from` to after `to` (unix ms), kept its
    /// pace there, and seen the IP move at least once.
    fn finish(mut self, from: u128, to: u128) -> anyhow::Result<String> {
        let _ = self.process.kill();
        let log = self.process.log();
        let attempts: Vec<Attempt> = log.lines().filter_map(Attempt::parse).collect();
        let mut lost = Vec::new();
        let mut cut = Vec::new();
        for a in &attempts {
            match &a.outcome {
                Ok(first) if first.starts_with(BACKEND_ANSWER) => {}
                Err(e) if a.moved() && !e.starts_with("connect:") => cut.push(a.line.as_str()),
                _ => lost.push(a.line.as_str()),
            }
        }
        ensure!(
            lost.is_empty(),
            "{} of {} connections through the Service were lost:\n{}",
            lost.len(),
            attempts.len(),
            lost.join("\n")
        );
        let macs: Vec<&str> = attempts
            .iter()
            .flat_map(|a| [a.before.as_str(), a.after.as_str()])
            .filter(|m| *m != "-")
            .collect();
        let moves = macs.windows(2).filter(|w| w[0] != w[1]).count();
        ensure!(
            moves >= 1,
            "the IP never moved while the loop ran: the rollout replaced no announcing speaker?"
        );
        ensure!(
            cut.len() <= moves,
            "{} connections were reset but the IP moved only {moves} times:\n{}",
            cut.len(),
            cut.join("\n")
        );
        let answered: Vec<u128> = attempts
            .iter()
            .filter(|a| a.outcome.is_ok())
            .map(|a| a.at)
            .collect();
        let first = answered.first().copied().unwrap_or(u128::MAX);
        let last = answered.last().copied().unwrap_or(0);
        ensure!(
            first <= from && last >= to,
            "the loop answered from {first} to {last} (unix ms), not around {from}..{to}:\n{}",
            tail(&log, 10)
        );
        let window = answered.iter().filter(|t| (from..=to).contains(*t)).count();
        let expected = (to - from) / u128::from(PROBE_INTERVAL_MS);
        ensure!(
            window as u128 * 2 >= expected,
            "only {window} connections in {} ms: the loop fell behind",
            to - from
        );
        let pods: BTreeSet<&str> = attempts
            .iter()
            .filter_map(|a| a.outcome.as_ref().ok()?.strip_prefix("pod="))
            .collect();
        Ok(format!(
            "{} connections with a GET, {window} of them during the {:.1} s rollout, answered by {pods:?}; \
             the IP moved {moves} times, {} connection(s) open at a move reset, none other lost",
            attempts.len(),
            (to - from) as f64 / 1000.0,
            cut.len()
        ))
    }
}

/// One attempt of the connection loop, from its line (see `lab_probe http-probe`).
struct Attempt {
    /// When it ended (unix ms).
    at: u128,
    /// The first word of the answer, or what went wrong.
    outcome: Result<String, String>,
    /// The client's neighbour entry for the IP before and after the attempt.
    before: String,
    after: String,
    /// The line, for messages.
    line: String,
}

impl Attempt {
    fn parse(line: &str) -> Option<Attempt> {
        let mut w = line.split_whitespace();
        let kind = w.next()?;
        let at = w.next()?.parse().ok()?;
        let (outcome, before, after) = match kind {
            "ok" => {
                let first = w.nth(1)?.to_string();
                (Ok(first), w.next()?, w.next()?)
            }
            "fail" => {
                let (before, after) = (w.next()?, w.next()?);
                (Err(w.collect::<Vec<_>>().join(" ")), before, after)
            }
            _ => return None,
        };
        Some(Attempt {
            at,
            outcome,
            before: before.to_string(),
            after: after.to_string(),
            line: line.to_string(),
        })
    }

    /// Whether the IP moved to another node's MAC while this connection was open.
    fn moved(&self) -> bool {
        self.before != "-" && self.after != "-" && self.before != self.after
    }
}

/// `helm install` with a pool from values: the CRDs, RBAC, workloads, the chart's Lease (without
/// a spec: who leads is the controllers' business), and the pool as a post-install hook.
async fn install(env: &Env) -> anyhow::Result<String> {
    let addresses = format!("addressPool.addresses={{{FIRST_RANGE}}}");
    let pool_name = format!("addressPool.name={POOL}");
    env.install_chart(&["addressPool.create=true", &pool_name, &addresses])?;
    ensure!(
        env.crds_present().await? == 2,
        "the CRDs were not installed"
    );
    let pool = env
        .pool(POOL)
        .await?
        .ok_or_else(|| anyhow!("no pool {POOL} after install"))?;
    let annotations = pool.metadata.annotations.unwrap_or_default();
    ensure!(
        annotations.get("helm.sh/hook").map(String::as_str) == Some("post-install"),
        "the first install creates the pool as a post-install hook: {annotations:?}"
    );
    ensure!(
        pool.spec.addresses == [FIRST_RANGE],
        "{:?}",
        pool.spec.addresses
    );
    let lease_name = format!("{RELEASE}-controller");
    let rendered = env
        .manifest_docs(RELEASE)?
        .into_iter()
        .find(|d| d["kind"] == "Lease" && d["metadata"]["name"] == lease_name.as_str())
        .ok_or_else(|| anyhow!("the release has no Lease {lease_name}"))?;
    ensure!(
        rendered.get("spec").is_none(),
        "the chart writes the Lease's spec: {rendered}"
    );
    // The pods start at once; if one already leads, it must be one of the controller's.
    let holder = env.lease_holder().await.context("the chart's Lease")?;
    if let Some(h) = &holder {
        let ctl = env.pods(Component::Controller).await?;
        ensure!(
            ctl.iter().any(|p| p.name == *h),
            "the chart's Lease is held by {h:?}, not a controller pod ({ctl:?})"
        );
    }
    for what in [
        "deployment/ferrolb-controller",
        "daemonset/ferrolb-speaker",
        "serviceaccount/ferrolb-controller",
        "serviceaccount/ferrolb-speaker",
        "role/ferrolb-controller-leader-election",
    ] {
        env.kubectl(&["-n", NS, "get", what])?;
    }
    for what in [
        "clusterrole/ferrolb-controller",
        "clusterrole/ferrolb-speaker",
    ] {
        env.kubectl(&["get", what])?;
    }
    env.check_release_matches_manifest().await?;
    Ok(format!(
        "installed; pool {POOL} is a post-install hook; the Lease is the chart's, without a spec"
    ))
}

/// The chart's workloads run as pods: two controller replicas and a speaker on every node, all
/// Ready; one of the controllers holds the chart's Lease.
async fn workloads_run(env: &Env) -> anyhow::Result<String> {
    let replicas = Api::<Deployment>::namespaced(env.client.clone(), NS)
        .get(&format!("{RELEASE}-controller"))
        .await?
        .spec
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    ensure!(
        replicas == 2,
        "the chart's default is 2 replicas, got {replicas}"
    );
    let running = env.workloads_ready().await?;
    let holder = eventually("a controller to hold the Lease", T, || env.lease_holder()).await?;
    let ctl = env.pods(Component::Controller).await?;
    ensure!(
        ctl.iter().any(|p| p.name == holder),
        "the Lease is held by {holder:?}, not one of {ctl:?}"
    );
    Ok(format!("{running}; {holder} leads"))
}

/// The backend: two pods of the lab's backend image, one per node, answering HTTP on 8080 with
/// their own name and node.
fn backend_deployment() -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": APP_NS},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "topologySpreadConstraints": [{
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": {"matchLabels": {"app": "web"}},
                    }],
                    "containers": [{
                        "name": "backend",
                        "image": ferrolb_lab::image::BACKEND,
                        "imagePullPolicy": "Never",
                        "env": [
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        ],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                    }],
                },
            },
        },
    })
}

/// A backend Deployment behind a LoadBalancer Service, its EndpointSlices written by Kubernetes:
/// the Service gets an IP from the chart's pool, the pool's usage shows it, an Event says so, one
/// node announces it, and it answers from the client with a backend pod's name.
async fn serve(env: &Env) -> anyhow::Result<String> {
    env.kubectl(&["create", "namespace", APP_NS])?;
    apply(
        &env.client,
        &[
            backend_deployment(),
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web", "namespace": APP_NS},
                "spec": {
                    "type": "LoadBalancer",
                    "selector": {"app": "web"},
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
                },
            }),
        ],
    )
    .await?;
    wait_rollout(&env.lab, APP_NS, "deployment/web", ROLLOUT)?;
    let backends = eventually(
        "EndpointSlices of web listing both backend pods ready",
        T,
        || async {
            let slices = Api::<EndpointSlice>::namespaced(env.client.clone(), APP_NS)
                .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
                .await?;
            let mut pods = BTreeSet::new();
            for s in &slices.items {
                let by = s
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("endpointslice.kubernetes.io/managed-by"))
                    .cloned();
                ensure!(
                    by.as_deref() == Some("endpointslice-controller.k8s.io"),
                    "EndpointSlice {:?} is managed by {by:?}",
                    s.metadata.name
                );
                for e in s.endpoints.iter().flatten() {
                    let ready = e.conditions.as_ref().and_then(|c| c.ready) == Some(true);
                    let pod = e
                        .target_ref
                        .as_ref()
                        .filter(|r| r.kind.as_deref() == Some("Pod"))
                        .and_then(|r| r.name.clone());
                    if let (true, Some(p)) = (ready, pod) {
                        pods.insert(p);
                    }
                }
            }
            Ok((pods.len() == 2).then_some(pods))
        },
    )
    .await?;
    let ip = eventually("an EXTERNAL-IP", T, || env.ingress_ip()).await?;
    let first: std::net::Ipv4Addr = "198.51.100.80".parse()?;
    let last: std::net::Ipv4Addr = "198.51.100.89".parse()?;
    let addr: std::net::Ipv4Addr = ip.parse()?;
    ensure!(
        (first..=last).contains(&addr),
        "{ip} is not from {FIRST_RANGE}"
    );
    // The annotation is a write of its own, just after the status.
    eventually("ip-allocated-from-pool: lan", T, || async {
        let svc = env.service().await?;
        let from = svc
            .metadata
            .annotations
            .unwrap_or_default()
            .get(ferrolb_crds::annotations::ALLOCATED_FROM_POOL)
            .cloned();
        Ok((from.as_deref() == Some(POOL)).then_some(()))
    })
    .await?;
    eventually("the pool's usage: 1 assigned, 9 available", T, || async {
        let st = env.pool(POOL).await?.and_then(|p| p.status);
        Ok(st.filter(|s| s.assigned_ipv4 == 1 && s.available_ipv4 == 9))
    })
    .await?;
    eventually("an Event from ferrolb about web", T, || async {
        let events = Api::<Event>::namespaced(env.client.clone(), APP_NS)
            .list(&ListParams::default())
            .await?;
        Ok(events
            .items
            .into_iter()
            .find(|e| {
                e.involved_object.name.as_deref() == Some("web")
                    && e.reason.as_deref() == Some("IPAllocated")
            })
            .map(|_| ()))
    })
    .await?;
    let served = env.check_served(&ip).await?;
    Ok(format!(
        "endpoints written by Kubernetes: {backends:?}; {served}"
    ))
}

/// The first upgrade, with changed values: the pool becomes an ordinary release object without
/// being recreated, the Deployment and the DaemonSet roll to the new flags by themselves, and a
/// client that opens a new connection through the Service's IP every 100 ms all along loses
/// none of them (the speakers hand the IP over on SIGTERM).
async fn upgrade_takeover(env: &Env, ip: &str) -> anyhow::Result<String> {
    let uid_before = env.pool(POOL).await?.and_then(|p| p.metadata.uid);
    let mut before = BTreeSet::new();
    for c in [Component::Controller, Component::Speaker] {
        before.extend(env.pods(c).await?.into_iter().map(|p| p.name));
    }
    let probe = ConnectionLoop::start(env, ip, "http-probe-rollout")?;
    // The loop shows the Service answering before anything changes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let upgraded_at = unix_ms();
    env.helm().deploy(
        Verb::Upgrade,
        RELEASE,
        &env.chart,
        NS,
        &[
            "logLevel=debug",
            "speaker.heartbeatInterval=50ms",
            "speaker.deadAfter=400ms",
        ],
    )?;
    let deploy = env.kubectl(&[
        "-n",
        NS,
        "get",
        "deployment/ferrolb-controller",
        "-o",
        "json",
    ])?;
    ensure!(
        deploy.contains("--log-level=debug"),
        "the Deployment did not get --log-level=debug"
    );
    ensure!(
        deploy.contains("\"ferrolb.io/address-pool-in-release\": \"true\""),
        "the Deployment does not record the takeover"
    );
    let ds = env.kubectl(&["-n", NS, "get", "daemonset/ferrolb-speaker", "-o", "json"])?;
    ensure!(
        ds.contains("--heartbeat-interval=50ms") && ds.contains("--dead-after=400ms"),
        "the DaemonSet did not get the new failover timing"
    );
    let pool = env.pool(POOL).await?.ok_or_else(|| anyhow!("pool gone"))?;
    ensure!(pool.metadata.uid == uid_before, "the pool was recreated");
    ensure!(
        pool.spec.addresses == [FIRST_RANGE],
        "{:?}",
        pool.spec.addresses
    );
    env.check_release_matches_manifest().await?;
    env.workloads_ready().await?;
    let rolled_at = unix_ms();
    // The last speaker to start is still joining its peers; keep connecting a little longer.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let connections = probe.finish(upgraded_at, rolled_at)?;

    let mut now = Vec::new();
    for c in [Component::Controller, Component::Speaker] {
        now.extend(env.pods(c).await?.into_iter().map(|p| (c, p.name)));
    }
    let kept: Vec<&String> = now
        .iter()
        .map(|(_, n)| n)
        .filter(|n| before.contains(*n))
        .collect();
    ensure!(
        kept.is_empty(),
        "pods of the old revision still run: {kept:?}"
    );
    for (c, name) in &now {
        let log = env.pod_log(*c, name)?;
        ensure!(
            log.contains(" DEBUG "),
            "{name} does not log at debug level after the upgrade:\n{}",
            tail(&log, 10)
        );
    }
    let now_ip = env.ingress_ip().await?;
    ensure!(
        now_ip.as_deref() == Some(ip),
        "the IP changed from {ip} to {now_ip:?}"
    );
    let served = env.check_served(ip).await?;
    Ok(format!(
        "pool adopted as it was; {} pods replaced by the rollout, all logging at debug level; {connections}; {served}",
        now.len()
    ))
}

/// The time of the first log line at or after `after` that contains `needle`, from the
/// binaries' text log format (`2026-12-01T16:23:28.225079Z  INFO became leader ...`).
fn logged_at(log: &str, needle: &str, after: Timestamp) -> Option<Timestamp> {
    log.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| l.split_whitespace().next()?.parse::<Timestamp>().ok())
        .find(|t| *t >= after)
}

/// The Lease holder, its node, and the other replica, on another node. The chart spreads the
/// replicas by preference only, so a rolling update may leave both on one node; then the standby
/// is deleted and the scheduler puts its replacement on the node without a replica.
async fn leader_and_standby_apart(env: &Env) -> anyhow::Result<(String, String, String)> {
    for _ in 0..3 {
        let holder = env
            .lease_holder()
            .await?
            .ok_or_else(|| anyhow!("nobody holds the Lease"))?;
        let ctl = env.pods(Component::Controller).await?;
        let leader = ctl
            .iter()
            .find(|p| p.name == holder)
            .ok_or_else(|| anyhow!("the holder {holder} is not a controller pod: {ctl:?}"))?;
        let standby = ctl
            .iter()
            .find(|p| p.name != holder)
            .ok_or_else(|| anyhow!("no standby controller: {ctl:?}"))?;
        if standby.node != leader.node {
            return Ok((holder, leader.node.clone(), standby.name.clone()));
        }
        println!(
            "both controllers run on {}: deleting the standby {} so that it runs elsewhere",
            leader.node, standby.name
        );
        env.kubectl(&["-n", NS, "delete", "pod", &standby.name])?;
        env.workloads_ready().await?;
    }
    bail!("the controller's replicas stay on one node")
}

/// The leader's node loses the network. The leader must stop acting as leader before the
/// standby may take the Lease over, so two replicas never write at once; the standby then
/// leads, and the Service keeps its IP (its announcement fails over with the node's speaker).
/// Both moments come from the pods' own log lines, read from the kubelets' files on disk.
async fn partitioned_leader(env: &Env, ip: &str) -> anyhow::Result<String> {
    let (holder, old_node, standby) = leader_and_standby_apart(env).await?;
    let cut_at = Timestamp::now();
    set_link(env, &old_node, false)?;
    let result = async {
        let new = eventually("the standby to take the Lease", T, || async {
            Ok(env.lease_holder().await?.filter(|h| *h != holder))
        })
        .await?;
        ensure!(
            new == standby,
            "the Lease went to {new}, not the standby {standby}"
        );
        let logged = |pod: &str, needle: &'static str| {
            let log = env.pod_log(Component::Controller, pod);
            std::future::ready(log.map(|l| logged_at(&l, needle, cut_at)))
        };
        let stepped_down = eventually(
            &format!("the partitioned leader {holder} to log `not leader`"),
            T,
            || logged(&holder, "not leader"),
        )
        .await?;
        let took_over = eventually(
            &format!("{standby} to log `became leader`"),
            T,
            || logged(&standby, "became leader"),
        )
        .await?;
        ensure!(
            stepped_down < took_over,
            "two leaders: {holder} stepped down at {stepped_down}, after {standby} took over at {took_over}"
        );
        Ok(format!(
            "{holder} on {old_node} stepped down {} ms before {standby} took over",
            stepped_down.duration_until(took_over).as_millis()
        ))
    }
    .await;
    set_link(env, &old_node, true)?;
    let report = result?;
    env.workloads_ready().await?;
    let now = env.ingress_ip().await?;
    ensure!(
        now.as_deref() == Some(ip),
        "the IP changed from {ip} to {now:?}"
    );
    let served = env.check_served(ip).await?;
    Ok(format!("{report}; {served}"))
}

/// A second upgrade from a newer chart: its changed CRD reaches the cluster, the pool grows,
/// metrics Services switched off are deleted, the workloads roll again, and nothing is
/// renumbered.
async fn upgrade_changes(env: &Env, ip: &str) -> anyhow::Result<String> {
    let dir = env.lab.run_dir().join("chart-next");
    let out = Command::new("cp")
        .args([
            "-r",
            &env.chart.display().to_string(),
            &dir.display().to_string(),
        ])
        .output()?;
    ensure!(out.status.success(), "cp: {}", text(&out));
    let crds = dir.join("charts/crds/files/crds.yaml");
    let yaml = std::fs::read_to_string(&crds)?;
    let changed = yaml.replacen("    - ippool\n", "    - ippool\n    - flbpool\n", 1);
    ensure!(
        changed != yaml,
        "the CRD file has no `- ippool` short name to extend"
    );
    std::fs::write(&crds, changed)?;
    let uid_before = env.pool(POOL).await?.and_then(|p| p.metadata.uid);

    let addresses = format!("addressPool.addresses={{{FIRST_RANGE},{ADDED_RANGE}}}");
    env.helm().deploy(
        Verb::Upgrade,
        RELEASE,
        &dir,
        NS,
        &[&addresses, "metrics.enabled=false"],
    )?;
    let short = eventually("the upgraded CRD", T, || async {
        let crd = Api::<CustomResourceDefinition>::all(env.client.clone())
            .get(CRDS[0])
            .await?;
        let names = crd.spec.names.short_names.unwrap_or_default();
        Ok(names.contains(&"flbpool".to_string()).then_some(names))
    })
    .await?;
    eventually("`kubectl get flbpool`", T, || {
        std::future::ready(Ok(env.kubectl(&["get", "flbpool", POOL]).ok().map(|_| ())))
    })
    .await?;
    let pool = env.pool(POOL).await?.ok_or_else(|| anyhow!("pool gone"))?;
    ensure!(pool.metadata.uid == uid_before, "the pool was recreated");
    ensure!(
        pool.spec.addresses == [FIRST_RANGE, ADDED_RANGE],
        "the pool's addresses are {:?}",
        pool.spec.addresses
    );
    eventually("the pool's usage: 1 assigned, 19 available", T, || async {
        let st = env.pool(POOL).await?.and_then(|p| p.status);
        Ok(st.filter(|s| s.assigned_ipv4 == 1 && s.available_ipv4 == 19))
    })
    .await?;
    let metrics: Vec<String> = Api::<Service>::namespaced(env.client.clone(), NS)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    ensure!(
        metrics.is_empty(),
        "metrics.enabled=false left Services: {metrics:?}"
    );
    env.check_release_matches_manifest().await?;
    env.workloads_ready().await?;
    let now = env.ingress_ip().await?;
    ensure!(
        now.as_deref() == Some(ip),
        "the IP changed from {ip} to {now:?}"
    );
    Ok(format!(
        "CRD short names now {short:?}; pool has 20 addresses; the workloads rolled again; {ip} kept"
    ))
}

/// Forwarder mode, as far as the chart's grants go: a node pool and a Service from it make every
/// speaker write its node's `ForwarderNode` report, the controller publishes the nodes' own
/// addresses for the Service, and the client reaches a backend through one of them. The mode
/// itself is `tests/forwarder.rs`'s; this step is here so that the audit check that follows
/// sees what the chart grants for it used, like every other grant.
async fn node_pool(env: &Env) -> anyhow::Result<String> {
    const PORT: u16 = 8088;
    apply(
        &env.client,
        &[
            json!({
                "apiVersion": "ferrolb.io/v1beta1",
                "kind": "IPAddressPool",
                "metadata": {"name": "nodes"},
                "spec": {"nodeAddresses": {}, "autoAssign": false},
            }),
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "fwd",
                    "namespace": APP_NS,
                    "annotations": {ferrolb_crds::annotations::ADDRESS_POOL: "nodes"},
                },
                "spec": {
                    "type": "LoadBalancer",
                    "selector": {"app": "web"},
                    "ports": [{"name": "http", "port": PORT, "targetPort": 8080, "protocol": "TCP"}],
                },
            }),
        ],
    )
    .await?;
    let port = format!("IPv4/TCP/{PORT}");
    let nodes = env.node_names();
    eventually("every node's ForwarderNode report", T, || async {
        let reports = Api::<ForwarderNode>::all(env.client.clone())
            .list(&ListParams::default())
            .await?;
        let checked: BTreeSet<String> = reports
            .items
            .iter()
            .filter(|r| r.status.as_ref().is_some_and(|s| s.checked.contains(&port)))
            .filter_map(|r| r.metadata.name.clone())
            .collect();
        Ok((checked.len() == nodes.len()).then_some(()))
    })
    .await?;
    let mut want: Vec<String> = env.lab.nodes().iter().map(|n| n.ipv4.to_string()).collect();
    want.sort();
    let published = eventually("the nodes' addresses published for fwd", T, || async {
        let svc = Api::<Service>::namespaced(env.client.clone(), APP_NS)
            .get("fwd")
            .await?;
        let mut have: Vec<String> = svc
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| i.ip)
            .collect();
        have.sort();
        Ok((have == want).then_some(have))
    })
    .await?;
    let url = format!("http://{}:{PORT}/", want[0]);
    let body = eventually(&format!("curl {url}"), T, || {
        let out = env.exec("client", &["curl", "-s", "-m", "2", &url]);
        std::future::ready(out.map(|o| {
            let body = String::from_utf8_lossy(&o.stdout).trim().to_string();
            body.starts_with(BACKEND_ANSWER).then_some(body)
        }))
    })
    .await?;
    Ok(format!(
        "every speaker reported its node; fwd published on {published:?}; {url} answered {body:?}"
    ))
}

/// Grants whose moment does not come in this test: an Event that repeats (its series is patched),
/// and a Lease someone deleted (the chart creates it).
const RARELY_USED: [&str; 2] = [
    "patch events.k8s.io/events",
    "create coordination.k8s.io/leases",
];

/// What ServiceAccount `sa` of the release namespace is granted: the rules of every role its
/// ClusterRoleBindings and RoleBindings refer to (so a role the chart adds is counted without
/// naming it here), and those roles' names.
async fn grants_of(env: &Env, sa: &str) -> anyhow::Result<(Vec<PolicyRule>, Vec<String>)> {
    let bound = |subjects: &Option<Vec<Subject>>| {
        subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount" && s.name == sa && s.namespace.as_deref() == Some(NS)
        })
    };
    let mut refs: Vec<(String, Option<String>)> = Vec::new();
    for b in Api::<ClusterRoleBinding>::all(env.client.clone())
        .list(&ListParams::default())
        .await?
    {
        if bound(&b.subjects) {
            refs.push((b.role_ref.name, None));
        }
    }
    for b in Api::<RoleBinding>::namespaced(env.client.clone(), NS)
        .list(&ListParams::default())
        .await?
    {
        if bound(&b.subjects) {
            let ns = (b.role_ref.kind == "Role").then(|| NS.to_string());
            refs.push((b.role_ref.name, ns));
        }
    }
    let mut rules = Vec::new();
    let mut names = Vec::new();
    for (name, ns) in refs {
        match ns {
            None => {
                let role = Api::<ClusterRole>::all(env.client.clone())
                    .get(&name)
                    .await?;
                rules.extend(role.rules.unwrap_or_default());
                names.push(format!("ClusterRole/{name}"));
            }
            Some(ns) => {
                let role = Api::<Role>::namespaced(env.client.clone(), &ns)
                    .get(&name)
                    .await?;
                rules.extend(role.rules.unwrap_or_default());
                names.push(format!("Role/{ns}/{name}"));
            }
        }
    }
    names.sort();
    Ok((rules, names))
}

/// Every request the chart's ServiceAccounts made was allowed, and each component used all its
/// roles grant but [`RARELY_USED`]: least privilege, measured. Reads the roles from the cluster,
/// so it runs before the uninstall.
async fn rbac_from_audit(env: &Env) -> anyhow::Result<String> {
    let log = audit::read(&env.lab.audit_log())
        .context("read the audit log")?
        .events;
    let mut report = Vec::new();
    for sa in ["ferrolb-controller", "ferrolb-speaker"] {
        let (rules, roles) = grants_of(env, sa).await?;
        ensure!(!roles.is_empty(), "nothing grants {sa} anything");
        let user = format!("system:serviceaccount:{NS}:{sa}");
        let (used, refused) = audited(&log, &user);
        ensure!(
            refused.is_empty(),
            "{sa} was refused:\n{}",
            refused.join("\n")
        );
        ensure!(!used.is_empty(), "the audit log has no request of {user}");
        let granted = granted(&rules);
        let beyond: Vec<String> = used.difference(&granted).map(|a| a.to_string()).collect();
        ensure!(
            beyond.is_empty(),
            "{sa} used what its roles do not list: {beyond:?}"
        );
        let unused: Vec<String> = granted
            .difference(&used)
            .map(|a| a.to_string())
            .filter(|a| !RARELY_USED.contains(&a.as_str()))
            .collect();
        ensure!(
            unused.is_empty(),
            "{sa} is granted what it never used: {unused:?} (used: {:?})",
            used.iter().map(|a| a.to_string()).collect::<Vec<_>>()
        );
        report.push(format!(
            "{sa} ({}): {} kinds of request, none refused, every grant used",
            roles.join(", "),
            used.len()
        ));
    }
    Ok(report.join("; "))
}

/// `helm uninstall`: the workloads' pods end and the garbage collector removes the ReplicaSets
/// and the rest of what they owned; no object of the release, no CRD, no pool, nothing left in
/// the release namespace.
async fn uninstall(env: &Env) -> anyhow::Result<String> {
    let pods = Api::<Pod>::namespaced(env.client.clone(), NS)
        .list(&ListParams::default())
        .await?
        .items
        .len();
    let replica_sets =
        Api::<k8s_openapi::api::apps::v1::ReplicaSet>::namespaced(env.client.clone(), NS)
            .list(&ListParams::default())
            .await?
            .items
            .len();
    ensure!(
        pods > 0 && replica_sets > 0,
        "nothing ran before the uninstall: {pods} pods, {replica_sets} ReplicaSets"
    );
    env.helm().uninstall(RELEASE, NS)?;
    env.check_clean(false).await?;
    Ok(format!(
        "the cluster is clean: {pods} pods and {replica_sets} ReplicaSets went with the release"
    ))
}

/// crds.keep=true: uninstall leaves the CRDs and the user's pools; a reinstall under the same
/// release name adopts the CRDs, and its uninstall (without keep) removes them.
async fn keep_crds(env: &Env) -> anyhow::Result<String> {
    env.install_chart(&["crds.keep=true"])?;
    eventually("the CRDs served", T, || async {
        Ok(apply(
            &env.client,
            &[json!({
                "apiVersion": "ferrolb.io/v1beta1",
                "kind": "IPAddressPool",
                "metadata": {"name": "kept"},
                "spec": {"addresses": [ADDED_RANGE]},
            })],
        )
        .await
        .ok())
    })
    .await?;
    env.helm().uninstall(RELEASE, NS)?;
    env.check_clean(true).await?;
    ensure!(
        env.pool("kept").await?.is_some(),
        "the user's pool was removed"
    );

    // Helm adopts the CRDs; it keeps the live annotation, but uninstall goes by the release's
    // manifest, which no longer asks to keep them.
    env.install_chart(&[])?;
    env.helm().uninstall(RELEASE, NS)?;
    env.check_clean(false).await?;
    Ok("kept across uninstall, adopted by a reinstall, removed by its uninstall".into())
}

/// The CRDs as their own release: ferrolb with crds.enabled=false creates its pool as an ordinary
/// release object, and uninstalling ferrolb leaves the CRDs to their release.
async fn separate_crds_release(env: &Env) -> anyhow::Result<String> {
    let sub = env.chart.join("charts/crds");
    env.helm()
        .deploy(Verb::Install, "ferrolb-crds", &sub, "default", &[])?;
    let addresses = format!("addressPool.addresses={{{FIRST_RANGE}}}");
    let pool_name = format!("addressPool.name={POOL}");
    // Helm decides from discovery whether the pool can be an ordinary object, and a failed
    // install keeps the release name: install once, when the API server serves both kinds.
    eventually("the CRDs served", T, || {
        let served = env.kubectl(&["get", "ipaddresspools,l2advertisements"]);
        std::future::ready(Ok(served.ok().map(|_| ())))
    })
    .await?;
    env.install_chart(&[
        "crds.enabled=false",
        "addressPool.create=true",
        &pool_name,
        &addresses,
    ])?;
    let pool = env
        .pool(POOL)
        .await?
        .ok_or_else(|| anyhow!("no pool {POOL}"))?;
    let annotations = pool.metadata.annotations.unwrap_or_default();
    ensure!(
        !annotations.contains_key("helm.sh/hook"),
        "with the CRDs already served the pool is an ordinary object: {annotations:?}"
    );
    env.check_release_matches_manifest().await?;
    env.helm().uninstall(RELEASE, NS)?;
    env.check_clean(true).await?;
    ensure!(
        env.pool(POOL).await?.is_none(),
        "the release's pool outlived it"
    );
    env.helm().uninstall("ferrolb-crds", "default")?;
    env.check_clean(false).await?;
    Ok("CRDs outlived ferrolb in their own release, then went with it".into())
}

/// A Lease of the chart's name that a controller made before the chart owned its Lease does not
/// fail the install: the chart leaves it out of the release, the controllers go on using it,
/// and uninstall leaves it alone.
async fn foreign_lease(env: &Env) -> anyhow::Result<String> {
    let lease = format!("{RELEASE}-controller");
    apply(
        &env.client,
        &[json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": lease, "namespace": NS},
            "spec": {"holderIdentity": "an-old-controller", "leaseDurationSeconds": 4},
        })],
    )
    .await?;
    let api = Api::<Lease>::namespaced(env.client.clone(), NS);
    let uid = api.get(&lease).await?.metadata.uid;
    env.install_chart(&[])?;
    let manifest = env.manifest_objects(RELEASE)?;
    ensure!(
        !manifest.contains(&format!("Lease/{NS}/{lease}")),
        "the release claims a Lease it did not make: {manifest:?}"
    );
    let live = api.get(&lease).await?;
    ensure!(live.metadata.uid == uid, "the install replaced the Lease");
    let helm_owned = live
        .metadata
        .annotations
        .unwrap_or_default()
        .contains_key("meta.helm.sh/release-name");
    ensure!(!helm_owned, "the install adopted the Lease");
    // The old holder renews nothing: after a term the controllers take the Lease over.
    env.workloads_ready().await?;
    let holder = eventually("a controller to take the old Lease over", T, || async {
        let ctl = env.pods(Component::Controller).await?;
        Ok(env
            .lease_holder()
            .await?
            .filter(|h| ctl.iter().any(|p| p.name == *h)))
    })
    .await?;
    env.helm().uninstall(RELEASE, NS)?;
    eventually("the release's pods to end", GONE, || async {
        Ok(Api::<Pod>::namespaced(env.client.clone(), NS)
            .list(&ListParams::default())
            .await?
            .items
            .is_empty()
            .then_some(()))
    })
    .await?;
    let left = api.get_opt(&lease).await?;
    ensure!(
        left.as_ref().is_some_and(|l| l.metadata.uid == uid),
        "uninstall removed a Lease the release did not own"
    );
    env.kubectl(&["-n", NS, "delete", "lease", &lease])?;
    env.check_clean(false).await?;
    Ok(format!(
        "an existing Lease is left out of the release, {holder} led with it, and it survives the uninstall"
    ))
}

/// Prints a step's outcome, or names the step in its error.
fn report(step: &str, started: Instant, outcome: anyhow::Result<String>) -> anyhow::Result<()> {
    let what = outcome.with_context(|| format!("step `{step}`"))?;
    println!("{step} ({:.1?}): {what}", started.elapsed());
    Ok(())
}

async fn story(env: &Env) -> anyhow::Result<()> {
    let t = Instant::now();
    report("install", t, install(env).await)?;
    let t = Instant::now();
    report("the workloads run", t, workloads_run(env).await)?;
    let t = Instant::now();
    report("serve a Service", t, serve(env).await)?;
    let ip = env
        .ingress_ip()
        .await?
        .ok_or_else(|| anyhow!("the Service lost its IP"))?;
    let t = Instant::now();
    report(
        "first upgrade (takeover, rolling update)",
        t,
        upgrade_takeover(env, &ip).await,
    )?;
    let t = Instant::now();
    report("partitioned leader", t, partitioned_leader(env, &ip).await)?;
    let t = Instant::now();
    report(
        "second upgrade (changes)",
        t,
        upgrade_changes(env, &ip).await,
    )?;
    let t = Instant::now();
    report("a node pool (forwarder mode)", t, node_pool(env).await)?;
    let t = Instant::now();
    report("RBAC from the audit log", t, rbac_from_audit(env).await)?;
    let t = Instant::now();
    report("uninstall", t, uninstall(env).await)?;
    let t = Instant::now();
    report("crds.keep", t, keep_crds(env).await)?;
    let t = Instant::now();
    report(
        "CRDs as their own release",
        t,
        separate_crds_release(env).await,
    )?;
    let t = Instant::now();
    report(
        "a Lease the release did not make",
        t,
        foreign_lease(env).await,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_install_upgrade_uninstall() {
    let started = Instant::now();
    let image = ferrolb_image().expect("the ferrolb image");
    let lab = Lab::up(LabOptions {
        nodes: 2,
        kube_proxy: true,
        kubelet: true,
        images: vec![image],
        ..LabOptions::default()
    })
    .await
    .expect("lab up");
    println!("lab {} up in {:.1?}", lab.id(), started.elapsed());
    let client = lab.client().await.expect("client");
    let env = Env {
        lab,
        client,
        chart: workspace().join("charts/ferrolb"),
    };
    let result = story(&env).await;
    let logs = if result.is_err() {
        env.log_tails()
    } else {
        String::new()
    };
    let report = env.lab.down();
    if let Err(e) = result {
        panic!("{e:#}\n{logs}");
    }
    assert!(report.is_clean(), "lab teardown left: {report:?}");
    println!("helm test took {:.1?}", started.elapsed());
}
