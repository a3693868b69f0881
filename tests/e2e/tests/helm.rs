//! The Helm chart against the lab's real API server: `helm install`, the controller and a speaker
//! per node running as the chart describes them, `helm upgrade` with changed values and a changed
//! CRD, and `helm uninstall`, each leaving the cluster as it should be.
//!
//! The lab has no kubelet, so the chart's pods never start. This test plays the kubelet: it reads
//! the Deployment's and the DaemonSet's pod templates from the API server and runs each container
//! as a process in a node namespace, with the template's args, its env (values and the
//! downward-API fields the chart uses, `$(VAR)` references expanded) and a token of the template's
//! ServiceAccount. So the chart's flags, probes and RBAC are what the processes get. The API
//! server's audit log then shows every request those ServiceAccounts made: any refused request
//! fails the test, whether or not the component noticed.
//!
//! Steps build on each other, so the first failure ends the story; the lab and every process are
//! torn down in any case (`Lab` and `LabProcess` clean up on drop).
//!
//! Needs root, iproute2, arping, curl, the lab's tools (helm among them) and the binaries from
//! `cargo build --workspace --bins`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use ferrolb_crds::IPAddressPool;
use ferrolb_e2e::{apply, binary, eventually, stdout_of, text, workspace};
use ferrolb_lab::{Lab, LabOptions, LabProcess, Signal};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, PodSpec, Service};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::{ApiResource, Discovery, Scope, verbs};
use serde_json::json;

/// The release namespace, as in the README's install command.
const NS: &str = "ferrolb-system";
const RELEASE: &str = "ferrolb";
/// Where the test's Service lives.
const APP_NS: &str = "demo";
const POOL: &str = "lan";
const FIRST_RANGE: &str = "198.51.100.80-198.51.100.89";
const ADDED_RANGE: &str = "198.51.100.120-198.51.100.129";
const CRDS: [&str; 2] = ["ipaddresspools.ferrolb.io", "l2advertisements.ferrolb.io"];
/// Generous bound for anything the components do in response to a change.
const T: Duration = Duration::from_secs(30);
/// How each backend's answer starts (`hello from <node>`).
const HELLO: &str = "hello from node-";

/// `helm` from the lab's tools, with the lab's kubeconfig and its own state directories.
struct Helm {
    bin: PathBuf,
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Helm {
    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.bin)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_DATA_HOME", self.home.join("data"))
            .output()
            .with_context(|| format!("run {}", self.bin.display()))?;
        stdout_of(&format!("helm {}", args.join(" ")), out)
    }
}

impl Helm {
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

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Component::Controller => "controller",
            Component::Speaker => "speaker",
        })
    }
}

/// One pod of the chart's workloads, run as a process in a node namespace.
struct Pod {
    name: String,
    node: String,
    component: Component,
    /// The readiness probe's URL, from the pod template.
    ready_url: String,
    process: LabProcess,
}

struct Env {
    lab: Lab,
    client: kube::Client,
    helm: Helm,
    chart: PathBuf,
    pods: Vec<Pod>,
    /// Pods created so far, for unique names.
    started: usize,
    _backends: Vec<LabProcess>,
}

impl Env {
    fn node_names(&self) -> Vec<String> {
        self.lab.nodes().iter().map(|n| n.name.clone()).collect()
    }

    fn node_ipv4(&self, node: &str) -> anyhow::Result<String> {
        self.lab
            .nodes()
            .iter()
            .find(|n| n.name == node)
            .map(|n| n.ipv4.to_string())
            .ok_or_else(|| anyhow!("no node {node}"))
    }

    fn node_of_mac(&self, mac: &str) -> Option<String> {
        self.lab
            .nodes()
            .iter()
            .find(|n| n.mac.eq_ignore_ascii_case(mac))
            .map(|n| n.name.clone())
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

    /// Starts one pod of `component` on `node` from the workload's pod template as it is now.
    async fn start_pod(&mut self, component: Component, node: &str) -> anyhow::Result<()> {
        let workload = format!("{RELEASE}-{component}");
        let template = match component {
            Component::Controller => {
                let d = Api::<Deployment>::namespaced(self.client.clone(), NS)
                    .get(&workload)
                    .await?;
                d.spec.map(|s| s.template)
            }
            Component::Speaker => {
                let d = Api::<DaemonSet>::namespaced(self.client.clone(), NS)
                    .get(&workload)
                    .await?;
                d.spec.map(|s| s.template)
            }
        };
        let spec = template
            .and_then(|t| t.spec)
            .ok_or_else(|| anyhow!("the {component} workload has no pod template"))?;
        let sa = spec
            .service_account_name
            .clone()
            .ok_or_else(|| anyhow!("the {component} pod template names no ServiceAccount"))?;
        let kubeconfig = self.lab.service_account_kubeconfig(NS, &sa)?;
        self.started += 1;
        let name = format!("{RELEASE}-{component}-{}", self.started);
        let node_ip = self.node_ipv4(node)?;
        let pod = PodRun::of(&spec, &name, node, &kubeconfig, &node_ip)?;
        let argv: Vec<&str> = pod.argv.iter().map(String::as_str).collect();
        let process = self.lab.spawn(node, &argv, &name)?;
        self.pods.push(Pod {
            name,
            node: node.to_string(),
            component,
            ready_url: pod.ready_url,
            process,
        });
        Ok(())
    }

    /// Waits until every pod answers its readiness probe, as the kubelet would check it.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        for i in 0..self.pods.len() {
            let (node, url, name) = {
                let p = &self.pods[i];
                (p.node.clone(), p.ready_url.clone(), p.name.clone())
            };
            let r = eventually(&format!("{name} ready ({url})"), T, || {
                let out = self.exec(&node, &["curl", "-sf", "-m", "2", &url]);
                std::future::ready(out.map(|o| o.status.success().then_some(())))
            })
            .await;
            if let Err(e) = r {
                let p = &mut self.pods[i];
                bail!(
                    "{e:#}; running: {}; log:\n{}",
                    p.process.is_running(),
                    tail(&p.process.log(), 30)
                );
            }
        }
        Ok(())
    }

    /// Stops a pod as the kubelet does: SIGTERM, then a clean exit within its grace period.
    fn stop_pod(&mut self, index: usize) -> anyhow::Result<()> {
        let mut pod = self.pods.remove(index);
        pod.process.signal(Signal::Term)?;
        let status = pod.process.wait_timeout(Duration::from_secs(10));
        ensure!(
            status.is_some_and(|s| s.success()),
            "{} did not exit cleanly after SIGTERM ({status:?}); log:\n{}",
            pod.name,
            tail(&pod.process.log(), 20)
        );
        Ok(())
    }

    fn stop_all(&mut self) -> anyhow::Result<()> {
        while !self.pods.is_empty() {
            self.stop_pod(0)?;
        }
        Ok(())
    }

    /// A rolling update: each pod in turn is stopped and replaced from the current template.
    async fn roll(&mut self) -> anyhow::Result<()> {
        let old: Vec<(Component, String)> = self
            .pods
            .iter()
            .map(|p| (p.component, p.node.clone()))
            .collect();
        for (component, node) in old {
            self.stop_pod(0)?;
            self.start_pod(component, &node).await?;
            self.wait_ready().await?;
        }
        Ok(())
    }

    fn log_tails(&self) -> String {
        self.pods
            .iter()
            .map(|p| {
                format!(
                    "--- {} on {}:\n{}\n",
                    p.name,
                    p.node,
                    tail(&p.process.log(), 15)
                )
            })
            .collect()
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
    /// (every reply from that node's MAC), and HTTP through the IP reaches a backend. Waits for
    /// that to hold (a healed partition settles on one announcer within a fraction of a second)
    /// and fails with the last disagreement.
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
                body.starts_with(HELLO).then_some(body)
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

    /// The objects of a release's manifest and hooks (`helm get manifest`, `helm get hooks`), in
    /// the form of [`Self::labelled_objects`].
    fn manifest_objects(&self, release: &str) -> anyhow::Result<BTreeSet<String>> {
        let mut yaml = self.helm.run(&["get", "manifest", release, "-n", NS])?;
        yaml.push_str("\n---\n");
        yaml.push_str(&self.helm.run(&["get", "hooks", release, "-n", NS])?);
        let mut found = BTreeSet::new();
        for doc in yaml.split("\n---") {
            let v: serde_json::Value = serde_yaml::from_str(doc)
                .with_context(|| format!("a document of release {release}:\n{doc}"))?;
            if v.is_null() {
                continue;
            }
            let kind = v["kind"].as_str().unwrap_or_default();
            let ns = v["metadata"]["namespace"].as_str().unwrap_or_default();
            let name = v["metadata"]["name"].as_str().unwrap_or_default();
            found.insert(format!("{kind}/{ns}/{name}"));
        }
        Ok(found)
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
    /// nothing in the release namespace.
    async fn check_clean(&self, crds_kept: bool) -> anyhow::Result<()> {
        eventually("a clean cluster after helm uninstall", T, || async {
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

/// What a kubelet would run for a pod template's first container as pod `pod` on `node`.
struct PodRun {
    argv: Vec<String>,
    ready_url: String,
}

impl PodRun {
    /// The container's command becomes the workspace binary of the same name; `$(VAR)` in its
    /// args is expanded from its env (literal values and the downward-API fields `metadata.name`,
    /// `metadata.namespace`, `spec.nodeName`), which the process also gets; `--kubeconfig`
    /// stands in for the mounted ServiceAccount token.
    fn of(
        spec: &PodSpec,
        pod: &str,
        node: &str,
        kubeconfig: &Path,
        node_ip: &str,
    ) -> anyhow::Result<PodRun> {
        let c = spec
            .containers
            .first()
            .ok_or_else(|| anyhow!("no container"))?;
        let command = c.command.clone().unwrap_or_default();
        let [program] = command.as_slice() else {
            bail!("expected a one-word command, got {command:?}");
        };
        let program = binary(program.trim_start_matches('/'));
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for e in c.env.iter().flatten() {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) => {
                    let path = from
                        .field_ref
                        .as_ref()
                        .map(|f| f.field_path.as_str())
                        .unwrap_or_default();
                    match path {
                        "metadata.name" => pod.to_string(),
                        "metadata.namespace" => NS.to_string(),
                        "spec.nodeName" => node.to_string(),
                        other => bail!("env {}: unsupported source {other:?}", e.name),
                    }
                }
                (None, None) => String::new(),
            };
            env.insert(e.name.clone(), value);
        }
        let expand = |arg: &str| {
            env.iter().fold(arg.to_string(), |a, (k, v)| {
                a.replace(&format!("$({k})"), v)
            })
        };
        let mut argv = vec!["env".to_string()];
        argv.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
        argv.push(program);
        argv.extend(c.args.iter().flatten().map(|a| expand(a)));
        argv.push(format!("--kubeconfig={}", kubeconfig.display()));

        let probe = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .ok_or_else(|| anyhow!("no HTTP readiness probe"))?;
        let port = match &probe.port {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p) => *p,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => c
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| anyhow!("the probe's port {name:?} is not declared"))?,
        };
        let path = probe.path.clone().unwrap_or_else(|| "/".into());
        Ok(PodRun {
            argv,
            ready_url: format!("http://{node_ip}:{port}{path}"),
        })
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

/// From the audit log: what `user` was allowed, and every request it was refused.
fn audited(log: &str, user: &str) -> (BTreeSet<Access>, Vec<String>) {
    let mut used = BTreeSet::new();
    let mut refused = Vec::new();
    for line in log.lines() {
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if ev["user"]["username"].as_str() != Some(user) {
            continue;
        }
        let o = &ev["objectRef"];
        let resource = match o["subresource"].as_str() {
            Some(sub) => format!("{}/{sub}", o["resource"].as_str().unwrap_or_default()),
            None => o["resource"].as_str().unwrap_or_default().to_string(),
        };
        let access = Access {
            group: o["apiGroup"].as_str().unwrap_or_default().to_string(),
            resource,
            verb: ev["verb"].as_str().unwrap_or_default().to_string(),
        };
        let code = ev["responseStatus"]["code"].as_i64().unwrap_or(0);
        if code == 401 || code == 403 {
            refused.push(format!(
                "{access} {} -> {code}: {}",
                ev["requestURI"].as_str().unwrap_or_default(),
                ev["responseStatus"]["message"].as_str().unwrap_or_default()
            ));
        } else if !access.resource.is_empty() {
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

/// `helm install` with a pool from values: the CRDs, RBAC, workloads, the chart's Lease, and the
/// pool as a post-install hook.
async fn install(env: &Env) -> anyhow::Result<String> {
    let addresses = format!("addressPool.addresses={{{FIRST_RANGE}}}");
    let pool_name = format!("addressPool.name={POOL}");
    env.helm.deploy(
        Verb::Install,
        RELEASE,
        &env.chart,
        NS,
        &["addressPool.create=true", &pool_name, &addresses],
    )?;
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
    let lease = Api::<Lease>::namespaced(env.client.clone(), NS)
        .get(&format!("{RELEASE}-controller"))
        .await
        .context("the chart's Lease")?;
    let holder = lease.spec.and_then(|s| s.holder_identity);
    ensure!(
        holder.is_none(),
        "the chart's Lease has a holder: {holder:?}"
    );
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
    Ok(format!("installed; pool {POOL} is a post-install hook"))
}

/// The chart's workloads as processes: two controller replicas on different nodes, a speaker on
/// every node. Both controllers are ready; one of them holds the chart's Lease.
async fn run_workloads(env: &mut Env) -> anyhow::Result<String> {
    let nodes = env.node_names();
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
    for node in nodes.iter().take(2) {
        env.start_pod(Component::Controller, node).await?;
    }
    for node in &nodes {
        env.start_pod(Component::Speaker, node).await?;
    }
    env.wait_ready().await?;
    let controllers: Vec<String> = env
        .pods
        .iter()
        .filter(|p| p.component == Component::Controller)
        .map(|p| p.name.clone())
        .collect();
    let holder = eventually("a controller to hold the Lease", T, || env.lease_holder()).await?;
    ensure!(
        controllers.contains(&holder),
        "the Lease is held by {holder:?}, not one of {controllers:?}"
    );
    Ok(format!("{} pods ready; {holder} leads", env.pods.len()))
}

/// A LoadBalancer Service gets an IP from the chart's pool, the pool's usage shows it, an Event
/// says so, one node announces it, and it answers from the client.
async fn serve(env: &Env) -> anyhow::Result<String> {
    env.kubectl(&["create", "namespace", APP_NS])?;
    let endpoints: Vec<serde_json::Value> = env
        .lab
        .nodes()
        .iter()
        .map(|n| {
            json!({
                "addresses": [n.ipv4.to_string()],
                "nodeName": n.name,
                "conditions": {"ready": true, "serving": true},
            })
        })
        .collect();
    apply(
        &env.client,
        &[
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
            json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "web-lab",
                    "namespace": APP_NS,
                    "labels": {"kubernetes.io/service-name": "web"},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": endpoints,
            }),
        ],
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
    Ok(served)
}

/// The first upgrade, with changed values: the workloads change, the pool becomes an ordinary
/// release object without being recreated, and the Service keeps its IP through a rolling update.
async fn upgrade_takeover(env: &mut Env, ip: &str) -> anyhow::Result<String> {
    let uid_before = env.pool(POOL).await?.and_then(|p| p.metadata.uid);
    env.helm.deploy(
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
    env.roll().await?;
    let debug_logs = env
        .pods
        .iter()
        .filter(|p| p.process.log().contains("DEBUG"))
        .count();
    ensure!(
        debug_logs == env.pods.len(),
        "only {debug_logs} of {} pods log at debug level after the upgrade",
        env.pods.len()
    );
    let now = env.ingress_ip().await?;
    ensure!(
        now.as_deref() == Some(ip),
        "the IP changed from {ip} to {now:?}"
    );
    let served = env.check_served(ip).await?;
    Ok(format!(
        "pool adopted as it was; rolled {} pods; {served}",
        env.pods.len()
    ))
}

/// The time of the first log line containing `needle`, from the binaries' text log format
/// (`2026-12-01T16:23:28.225079Z  INFO became leader ...`).
fn logged_at(log: &str, needle: &str) -> Option<k8s_openapi::jiff::Timestamp> {
    log.lines()
        .find(|l| l.contains(needle))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|t| t.parse().ok())
}

/// The leader's node loses the network. The leader must stop acting as leader before the
/// standby may take the Lease over, so two replicas never write at once; the standby then
/// leads, and the Service keeps its IP (its announcement fails over with the node's speaker).
async fn partitioned_leader(env: &mut Env, ip: &str) -> anyhow::Result<String> {
    let holder = env
        .lease_holder()
        .await?
        .ok_or_else(|| anyhow!("nobody holds the Lease"))?;
    let (old_node, old_log_before) = {
        let p = env
            .pods
            .iter()
            .find(|p| p.name == holder)
            .ok_or_else(|| anyhow!("the holder {holder} is not one of the test's pods"))?;
        (p.node.clone(), p.process.log())
    };
    let standby = env
        .pods
        .iter()
        .find(|p| p.component == Component::Controller && p.name != holder)
        .map(|p| p.name.clone())
        .ok_or_else(|| anyhow!("no standby controller"))?;
    let skip = old_log_before.len();
    let out = env.exec(&old_node, &["ip", "link", "set", "eth0", "down"])?;
    ensure!(out.status.success(), "link down: {}", text(&out));
    let result = async {
        let new = eventually("the standby to take the Lease", T, || async {
            Ok(env.lease_holder().await?.filter(|h| *h != holder))
        })
        .await?;
        ensure!(new == standby, "the Lease went to {new}, not the standby {standby}");
        let log_of = |name: &str| {
            env.pods
                .iter()
                .find(|p| p.name == name)
                .map(|p| p.process.log())
                .unwrap_or_default()
        };
        let old_log = log_of(&holder);
        let stepped_down = logged_at(old_log.get(skip..).unwrap_or_default(), "not leader")
            .ok_or_else(|| anyhow!("the partitioned leader {holder} never stepped down"))?;
        let took_over = logged_at(&log_of(&standby), "became leader")
            .ok_or_else(|| anyhow!("{standby} does not log that it leads"))?;
        ensure!(
            stepped_down < took_over,
            "two leaders: {holder} stepped down at {stepped_down}, after {standby} took over at {took_over}"
        );
        Ok(format!(
            "{holder} stepped down {} ms before {standby} took over",
            (took_over - stepped_down).get_milliseconds()
        ))
    }
    .await;
    let out = env.exec(&old_node, &["ip", "link", "set", "eth0", "up"])?;
    ensure!(out.status.success(), "link up: {}", text(&out));
    let report = result?;
    env.wait_ready().await?;
    let now = env.ingress_ip().await?;
    ensure!(
        now.as_deref() == Some(ip),
        "the IP changed from {ip} to {now:?}"
    );
    let served = env.check_served(ip).await?;
    Ok(format!("{report}; {served}"))
}

/// A second upgrade from a newer chart: its changed CRD reaches the cluster, the pool grows,
/// metrics Services switched off are deleted, and nothing is renumbered.
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
    env.helm.deploy(
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
    let now = env.ingress_ip().await?;
    ensure!(
        now.as_deref() == Some(ip),
        "the IP changed from {ip} to {now:?}"
    );
    Ok(format!(
        "CRD short names now {short:?}; pool has 20 addresses; {ip} kept"
    ))
}

/// Grants whose moment does not come in this test: an Event that repeats (its series is patched),
/// and a Lease someone deleted (the chart creates it).
const RARELY_USED: [&str; 2] = [
    "patch events.k8s.io/events",
    "create coordination.k8s.io/leases",
];

/// Every request the chart's ServiceAccounts made was allowed, and each component used all its
/// roles grant but [`RARELY_USED`]: least privilege, measured. Reads the roles from the cluster,
/// so it runs before the uninstall.
async fn rbac_from_audit(env: &Env) -> anyhow::Result<String> {
    let log = std::fs::read_to_string(env.lab.audit_log()).context("read the audit log")?;
    let ctl_role = Api::<ClusterRole>::all(env.client.clone())
        .get("ferrolb-controller")
        .await?;
    let lease_role = Api::<Role>::namespaced(env.client.clone(), NS)
        .get("ferrolb-controller-leader-election")
        .await?;
    let spk_role = Api::<ClusterRole>::all(env.client.clone())
        .get("ferrolb-speaker")
        .await?;
    let mut ctl_rules = ctl_role.rules.unwrap_or_default();
    ctl_rules.extend(lease_role.rules.unwrap_or_default());
    let mut report = Vec::new();
    for (sa, rules) in [
        ("ferrolb-controller", ctl_rules),
        ("ferrolb-speaker", spk_role.rules.unwrap_or_default()),
    ] {
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
            "{sa}: {} kinds of request, none refused, every grant used",
            used.len()
        ));
    }
    Ok(report.join("; "))
}

/// `helm uninstall` after the pods are gone (as deleting the workloads would make them): no
/// object of the release, no CRD, no pool, nothing left in the release namespace.
async fn uninstall(env: &mut Env) -> anyhow::Result<String> {
    env.stop_all()?;
    env.helm.uninstall(RELEASE, NS)?;
    env.check_clean(false).await?;
    Ok("the cluster is clean".into())
}

/// crds.keep=true: uninstall leaves the CRDs and the user's pools; a reinstall under the same
/// release name adopts the CRDs, and its uninstall (without keep) removes them.
async fn keep_crds(env: &Env) -> anyhow::Result<String> {
    env.helm
        .deploy(Verb::Install, RELEASE, &env.chart, NS, &["crds.keep=true"])?;
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
    env.helm.uninstall(RELEASE, NS)?;
    env.check_clean(true).await?;
    ensure!(
        env.pool("kept").await?.is_some(),
        "the user's pool was removed"
    );

    // Helm adopts the CRDs; it keeps the live annotation, but uninstall goes by the release's
    // manifest, which no longer asks to keep them.
    env.helm
        .deploy(Verb::Install, RELEASE, &env.chart, NS, &[])?;
    env.helm.uninstall(RELEASE, NS)?;
    env.check_clean(false).await?;
    Ok("kept across uninstall, adopted by a reinstall, removed by its uninstall".into())
}

/// The CRDs as their own release: ferrolb with crds.enabled=false creates its pool as an ordinary
/// release object, and uninstalling ferrolb leaves the CRDs to their release.
async fn separate_crds_release(env: &Env) -> anyhow::Result<String> {
    let sub = env.chart.join("charts/crds");
    env.helm
        .deploy(Verb::Install, "ferrolb-crds", &sub, "default", &[])?;
    let addresses = format!("addressPool.addresses={{{FIRST_RANGE}}}");
    let pool_name = format!("addressPool.name={POOL}");
    eventually("ferrolb installs once the CRDs are served", T, || {
        std::future::ready(
            env.helm
                .deploy(
                    Verb::Install,
                    RELEASE,
                    &env.chart,
                    NS,
                    &[
                        "crds.enabled=false",
                        "addressPool.create=true",
                        &pool_name,
                        &addresses,
                    ],
                )
                .map(|_| Some(())),
        )
    })
    .await?;
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
    env.helm.uninstall(RELEASE, NS)?;
    env.check_clean(true).await?;
    ensure!(
        env.pool(POOL).await?.is_none(),
        "the release's pool outlived it"
    );
    env.helm.uninstall("ferrolb-crds", "default")?;
    env.check_clean(false).await?;
    Ok("CRDs outlived ferrolb in their own release, then went with it".into())
}

/// A Lease of the chart's name that a controller made before the chart owned its Lease does not
/// fail the install: the chart leaves it out of the release, and uninstall leaves it alone.
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
    env.helm
        .deploy(Verb::Install, RELEASE, &env.chart, NS, &[])?;
    let manifest = env.manifest_objects(RELEASE)?;
    ensure!(
        !manifest.contains(&format!("Lease/{NS}/{lease}")),
        "the release claims a Lease it did not make: {manifest:?}"
    );
    ensure!(
        env.lease_holder().await?.as_deref() == Some("an-old-controller"),
        "the install touched the existing Lease"
    );
    env.helm.uninstall(RELEASE, NS)?;
    ensure!(
        env.lease_holder().await?.as_deref() == Some("an-old-controller"),
        "uninstall removed a Lease the release did not own"
    );
    env.kubectl(&["-n", NS, "delete", "lease", &lease])?;
    env.check_clean(false).await?;
    Ok("an existing Lease is left out of the release and survives its uninstall".into())
}

/// Prints a step's outcome, or names the step in its error.
fn report(step: &str, outcome: anyhow::Result<String>) -> anyhow::Result<()> {
    let what = outcome.with_context(|| format!("step `{step}`"))?;
    println!("{step}: {what}");
    Ok(())
}

async fn story(env: &mut Env) -> anyhow::Result<()> {
    report("install", install(env).await)?;
    report("run the workloads", run_workloads(env).await)?;
    report("serve a Service", serve(env).await)?;
    let ip = env
        .ingress_ip()
        .await?
        .ok_or_else(|| anyhow!("the Service lost its IP"))?;
    report("first upgrade (takeover)", upgrade_takeover(env, &ip).await)?;
    report("partitioned leader", partitioned_leader(env, &ip).await)?;
    report("second upgrade (changes)", upgrade_changes(env, &ip).await)?;
    report("RBAC from the audit log", rbac_from_audit(env).await)?;
    report("uninstall", uninstall(env).await)?;
    report("crds.keep", keep_crds(env).await)?;
    report(
        "CRDs as their own release",
        separate_crds_release(env).await,
    )?;
    report("a Lease the release did not make", foreign_lease(env).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_install_upgrade_uninstall() {
    let lab = Lab::up(LabOptions {
        nodes: 2,
        kube_proxy: true,
        kubelet: false,
        ..LabOptions::default()
    })
    .await
    .expect("lab up");
    let client = lab.client().await.expect("client");
    let probe = env!("CARGO_BIN_EXE_lab_probe");
    let mut backends = Vec::new();
    for node in lab.nodes() {
        let bind = format!("{}:8080", node.ipv4);
        let name = node.name.clone();
        backends.push(
            lab.spawn(
                &node.name,
                &[
                    probe,
                    "http",
                    "--bind",
                    &bind,
                    "--name",
                    &name,
                    "--seconds",
                    "900",
                ],
                &format!("backend-{name}"),
            )
            .expect("backend"),
        );
    }
    let helm = Helm {
        bin: lab.tools_bin().join("helm"),
        kubeconfig: lab.kubeconfig().to_path_buf(),
        home: lab.run_dir().join("helm"),
    };
    let mut env = Env {
        lab,
        client,
        helm,
        chart: workspace().join("charts/ferrolb"),
        pods: Vec::new(),
        started: 0,
        _backends: backends,
    };
    let result = story(&mut env).await;
    let logs = env.log_tails();
    env.pods.clear();
    let report = env.lab.down();
    if let Err(e) = result {
        panic!("{e:#}\n{logs}");
    }
    assert!(report.is_clean(), "lab teardown left: {report:?}");
}
