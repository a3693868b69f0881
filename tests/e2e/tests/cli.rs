//! `kubectl ferrolb` on real nodes: the chart's controller and speakers as pods, backends as
//! Deployments, real kube-proxy on every node, and the plugin run as a user runs it (the
//! `kubectl-ferrolb` binary with the lab's kubeconfig; once through `kubectl ferrolb`).
//!
//! - `trace` on a working Service of an L2 pool and of a forwarder-mode (node) pool, with and
//!   without a node's rules, and on one broken in each way it claims to detect: no ready
//!   endpoint; no speaker on the node that must announce (one node's, then every speaker gone);
//!   rules taken before a scale-up (an endpoint not programmed) and before a scale-down (DNAT to
//!   a pod that is no endpoint); `externalTrafficPolicy: Local` on a node without an endpoint,
//!   where real traffic to that node's nodePort is checked to be dropped as the walk says.
//! - The walk's predicted split against reality: rules collected from the announcing node
//!   (`iptables-save`, and `nft -j list ruleset` in a lab with kube-proxy in nftables mode),
//!   and 3,000 new connections from the client to a Service with 3 endpoints.
//! - `doctor` on each misconfiguration it checks: each is created, seen, fixed, and seen gone.
//! - `migrate metallb` on MetalLB-style objects written here (IPAddressPool + L2Advertisement, a
//!   BGPPeer, a legacy ConfigMap): nothing changes without `--apply`; with it the objects apply
//!   and a Service gets an IP from each migrated pool, announced and answering.
//!
//! Every step asserts the words the plugin prints (or its JSON) and its exit status. The lab is
//! torn down by `Lab`'s drop when a step fails.
//!
//! Needs root, curl, the lab's tools and `cargo build --workspace --bins` (the image and the
//! plugin).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use ferrolb_e2e::{
    apply, eventually, ferrolb_image, helm, stdout_of, text, wait_rollout, workspace,
};
use ferrolb_lab::{Lab, LabOptions, ProxyMode};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

const NS: &str = "ferrolb-system";
/// Where the test's Services and backends live.
const APP: &str = "shop";
/// The L2 pool every Service gets its IP from unless it asks for another.
const POOL_RANGE: &str = "198.51.100.100-198.51.100.149";
/// Bound for anything the components or kube-proxy do in response to a change.
const T: Duration = Duration::from_secs(60);
/// Connections of the split check. With 3 endpoints at 1/3 each, one count's standard deviation
/// is sqrt(3000 * 1/3 * 2/3) = 25.8 connections.
const CONNECTIONS: usize = 3000;
/// Tolerance of the split check, in standard deviations per endpoint. For a correct prediction
/// a count falls outside ±4σ with probability 6.3e-5, so the check fails by chance in fewer
/// than 2 runs in 10,000 (3 endpoints); a wrong prediction is caught once it is off by more
/// than 4σ ≈ 103 connections ≈ 3.4 percentage points (for example 50/25/25 against 1/3 each is
/// off by 500).
const SIGMAS: f64 = 4.0;

struct Env {
    lab: Lab,
    client: kube::Client,
    mode: ProxyMode,
}

impl Env {
    /// A 3-node lab with kube-proxy in `mode`, the chart, an L2 pool with its advertisement, a
    /// node pool that Services must ask for, and the backend Deployment `web` (3 replicas, one
    /// per node) behind the Service `web`.
    async fn up(mode: ProxyMode) -> anyhow::Result<Env> {
        let lab = Lab::up(LabOptions {
            nodes: 3,
            kube_proxy: true,
            proxy_mode: mode,
            kubelet: true,
            images: vec![ferrolb_image()?],
            ..LabOptions::default()
        })
        .await?;
        let client = lab.client().await?;
        let chart = workspace().join("charts/ferrolb");
        helm(
            &lab,
            &[
                "install",
                "ferrolb",
                &chart.display().to_string(),
                "-n",
                NS,
                "--create-namespace",
                "--set",
                "image.pullPolicy=Never",
            ],
        )?;
        wait_rollout(&lab, NS, "daemonset/ferrolb-speaker", T)?;
        wait_rollout(&lab, NS, "deployment/ferrolb-controller", T)?;
        stdout_of(
            "create the app namespace",
            lab.kubectl(&["create", "namespace", APP])?,
        )?;
        let env = Env { lab, client, mode };
        apply(
            &env.client,
            &[
                pool("default", json!({"addresses": [POOL_RANGE]})),
                json!({
                    "apiVersion": "ferrolb.io/v1beta1", "kind": "L2Advertisement",
                    "metadata": {"name": "default"}, "spec": {"ipAddressPools": ["default"]},
                }),
                pool("nodes", json!({"autoAssign": false, "nodeAddresses": {}})),
                backend("web", 3, None, 8080),
                service("web", "web", 80, false, None),
            ],
        )
        .await?;
        wait_rollout(&env.lab, APP, "deployment/web", T)?;
        Ok(env)
    }

    /// Runs the plugin with the lab's kubeconfig (and none of the plugin's own `FERROLB_*`
    /// settings from the test's environment).
    fn plugin(&self, args: &[&str]) -> anyhow::Result<Output> {
        let bin = ferrolb_e2e::binary("kubectl-ferrolb");
        Command::new(&bin)
            .args(args)
            .env("KUBECONFIG", self.lab.kubeconfig())
            .env_remove("FERROLB_NAMESPACE")
            .env_remove("FERROLB_RULES")
            .env_remove("FERROLB_OUTPUT")
            .env_remove("FERROLB_METALLB_NAMESPACE")
            .output()
            .with_context(|| format!("run {bin}"))
    }

    /// The plugin's standard output, checking its exit status (0 fine, 1 a check found an
    /// error).
    fn plugin_says(&self, args: &[&str], status: i32) -> anyhow::Result<String> {
        let out = self.plugin(args)?;
        ensure!(
            out.status.code() == Some(status),
            "kubectl ferrolb {} exited with {:?}, want {status}:\n{}",
            args.join(" "),
            out.status.code(),
            text(&out)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `trace svc/NAME -n shop [args]` as text, with the exit status it must have.
    fn trace(&self, name: &str, args: &[&str], status: i32) -> anyhow::Result<String> {
        let svc = format!("svc/{name}");
        let mut all = vec!["trace", svc.as_str(), "-n", APP];
        all.extend_from_slice(args);
        self.plugin_says(&all, status)
    }

    /// `doctor -o json`.
    fn doctor(&self) -> anyhow::Result<Vec<Value>> {
        let out = self.plugin(&["doctor", "-o", "json"])?;
        ensure!(
            matches!(out.status.code(), Some(0 | 1)),
            "doctor failed: {}",
            text(&out)
        );
        let v: Value = serde_json::from_slice(&out.stdout).context("doctor's JSON")?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// Waits until doctor reports a finding of `check` whose title contains `words` (at
    /// `severity` or worse), and returns its title.
    async fn doctor_finds(&self, check: &str, words: &str) -> anyhow::Result<String> {
        eventually(&format!("doctor: {check} \"{words}\""), T, || async {
            let fs = self.doctor()?;
            Ok(fs
                .iter()
                .find(|f| {
                    f["check"] == check
                        && f["severity"] != "ok"
                        && f["title"].as_str().is_some_and(|t| t.contains(words))
                })
                .and_then(|f| f["title"].as_str().map(str::to_string)))
        })
        .await
    }

    /// Waits until no finding of `check` is worse than ok or info; returns what it says then.
    async fn doctor_clear(&self, check: &str) -> anyhow::Result<String> {
        eventually(&format!("doctor: {check} clear"), T, || async {
            let fs = self.doctor()?;
            let mine: Vec<&Value> = fs.iter().filter(|f| f["check"] == check).collect();
            let bad: Vec<&Value> = mine
                .iter()
                .copied()
                .filter(|f| f["severity"] == "warning" || f["severity"] == "error")
                .collect();
            if !bad.is_empty() {
                bail!("still {bad:?}");
            }
            Ok(mine
                .first()
                .and_then(|f| f["title"].as_str().map(str::to_string)))
        })
        .await
    }

    /// A node's kube-proxy rules as a user collects them, written to a file in the lab's run
    /// directory: `iptables-save`, or `nft -j list ruleset` in nftables mode.
    fn rules(&self, node: &str, tag: &str) -> anyhow::Result<PathBuf> {
        let (cmd, ext): (&[&str], &str) = match self.mode {
            ProxyMode::Nftables => (&["nft", "-j", "list", "ruleset"], "json"),
            _ => (&["iptables-save"], "txt"),
        };
        let out = self.lab.exec(node, cmd)?;
        ensure!(out.status.success(), "{cmd:?} on {node}: {}", text(&out));
        let path = self.lab.run_dir().join(format!("rules-{node}-{tag}.{ext}"));
        std::fs::write(&path, &out.stdout).with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }

    async fn service(&self, name: &str) -> anyhow::Result<Service> {
        Ok(Api::<Service>::namespaced(self.client.clone(), APP)
            .get(name)
            .await?)
    }

    /// The Service's first external IP and the node named by its True `Announced` condition,
    /// once both exist.
    async fn announced(&self, name: &str) -> anyhow::Result<(String, String)> {
        eventually(&format!("{name} announced"), T, || async {
            let s = self.service(name).await?;
            let st = s.status.unwrap_or_default();
            let ip = st
                .load_balancer
                .and_then(|l| l.ingress)
                .and_then(|i| i.first().and_then(|i| i.ip.clone()));
            let node = st
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "ferrolb.io/Announced" && c.status == "True")
                .and_then(|c| {
                    c.message
                        .split("announced by ")
                        .nth(1)
                        .and_then(|r| r.split_whitespace().next())
                        .map(str::to_string)
                });
            Ok(ip.zip(node))
        })
        .await
    }

    /// Ready pod IP → pod name, for pods with `app=<app>`.
    async fn pod_names(&self, app: &str) -> anyhow::Result<BTreeMap<String, String>> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), APP)
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await?;
        Ok(pods
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| {
                let ip = p.status.as_ref()?.pod_ip.clone()?;
                Some((ip, p.metadata.name.clone()?))
            })
            .collect())
    }

    /// Endpoint addresses of Service `name` in its EndpointSlices, sorted, and which of them
    /// are ready.
    async fn endpoints(&self, name: &str) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let slices = Api::<EndpointSlice>::namespaced(self.client.clone(), APP)
            .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
            .await?;
        let (mut all, mut ready) = (Vec::new(), Vec::new());
        for e in slices
            .items
            .iter()
            .flat_map(|s| s.endpoints.iter().flatten())
        {
            let is_ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            for a in &e.addresses {
                all.push(a.clone());
                if is_ready {
                    ready.push(a.clone());
                }
            }
        }
        all.sort();
        ready.sort();
        Ok((all, ready))
    }

    /// Waits until Service `name` has exactly `n` endpoints, all ready (terminating pods gone
    /// from its slices).
    async fn wait_ready_endpoints(&self, name: &str, n: usize) -> anyhow::Result<Vec<String>> {
        eventually(
            &format!("exactly {n} ready endpoints of {name}"),
            T,
            || async {
                let (all, ready) = self.endpoints(name).await?;
                Ok((all.len() == n && ready.len() == n).then_some(ready))
            },
        )
        .await
    }

    /// `curl` from the client; `None` when it fails (timeout, refused).
    fn curl(&self, url: &str) -> anyhow::Result<Option<String>> {
        let out = self
            .lab
            .exec("client", &["curl", "-s", "-g", "--max-time", "3", url])?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()))
    }

    async fn curl_eventually(&self, url: &str) -> anyhow::Result<String> {
        eventually(&format!("an answer from {url}"), T, || {
            std::future::ready(self.curl(url).map(|b| b.filter(|b| b.starts_with("pod="))))
        })
        .await
    }

    fn kubectl(&self, what: &str, args: &[&str]) -> anyhow::Result<String> {
        stdout_of(what, self.lab.kubectl(args)?)
    }
}

fn pool(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": name}, "spec": spec,
    })
}

/// A Deployment of the lab's backend image (HTTP on 8080), one pod per node, or all on one;
/// ready once `ready_port` answers HTTP (a port nothing listens on keeps it unready).
fn backend(name: &str, replicas: i32, node: Option<&str>, ready_port: u16) -> Value {
    let mut spec = json!({
        "containers": [{
            "name": "backend",
            "image": ferrolb_lab::image::BACKEND,
            "imagePullPolicy": "Never",
            "args": ["--tcp", "0", "--udp", "0"],
            "env": [
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
            ],
            "readinessProbe": {"httpGet": {"path": "/", "port": ready_port}, "periodSeconds": 1}
        }],
        // The backend has nothing to finish: a deleted pod leaves its Service's slices at once.
        "terminationGracePeriodSeconds": 1,
        "topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": name}}
        }]
    });
    if let Some(n) = node {
        spec["nodeSelector"] = json!({"kubernetes.io/hostname": n});
    }
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": APP},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec}
        }
    })
}

/// A LoadBalancer Service for `app` on `port` (target 8080), optionally pinned to a pool by
/// annotation.
fn service(name: &str, app: &str, port: u16, local: bool, pool: Option<(&str, &str)>) -> Value {
    let mut v = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": APP},
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": app},
            "ports": [{"name": "http", "port": port, "targetPort": 8080, "protocol": "TCP"}],
        },
    });
    if local {
        v["spec"]["externalTrafficPolicy"] = json!("Local");
    }
    if let Some((annotation, p)) = pool {
        v["metadata"]["annotations"] = json!({annotation: p});
    }
    v
}

fn must_say(out: &str, words: &[&str]) -> anyhow::Result<()> {
    for w in words {
        ensure!(out.contains(w), "the output does not say {w:?}:\n{out}");
    }
    Ok(())
}

/// The split check: rules collected from the node that answers for the Service's IP, the
/// walk's prediction (`trace -o json`), and which pod answers each of 3,000 new connections.
async fn split_matches_reality(env: &Env) -> anyhow::Result<String> {
    let (ip, node) = env.announced("web").await?;
    let pods = env.pod_names("web").await?;
    ensure!(pods.len() == 3, "3 backends expected, found {pods:?}");
    // kube-proxy programs a moment after the endpoints appear: take the dump once the walk
    // finds all three.
    let (rules, predicted) = eventually("rules on the announcer with 3 endpoints", T, || async {
        let rules = env.rules(&node, "split")?;
        let out = env.trace(
            "web",
            &["--rules", &rules.display().to_string(), "-o", "json"],
            0,
        );
        let v: Value = match out {
            Ok(o) => serde_json::from_str(&o)?,
            Err(e) => bail!("{e:#}"),
        };
        let mut shares: BTreeMap<String, f64> = BTreeMap::new();
        for o in v["rules"][0]["trace"]["outcomes"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let to = o["fate"]["to"]["ip"].as_str().unwrap_or("?").to_string();
            ensure!(o["fate"]["fate"] == "delivered", "not delivered: {o}");
            *shares.entry(to).or_default() += o["share"].as_f64().unwrap_or(0.0);
        }
        Ok((shares.len() == 3).then_some((rules, shares)))
    })
    .await?;
    let total: f64 = predicted.values().sum();
    ensure!((total - 1.0).abs() < 1e-9, "shares sum to {total}");
    let text_out = env.trace(
        "web",
        &[
            "--rules",
            &rules.display().to_string(),
            "--from",
            "198.51.100.200",
        ],
        0,
    )?;
    must_say(
        &text_out,
        &[
            "33.3%  delivered to",
            "SNAT (masquerade)",
            "[ok] the rules send traffic to exactly the 3 usable endpoint(s)",
        ],
    )?;

    env.curl_eventually(&format!("http://{ip}/")).await?;
    let started = Instant::now();
    // One curl, 3,000 URLs: the backend closes every connection, so each is a new one (a new
    // source port, a new conntrack entry, a new random choice in kube-proxy's rules).
    let url = format!("http://{ip}/[1-{CONNECTIONS}]");
    let out = env.lab.exec(
        "client",
        &[
            "curl",
            "-s",
            "--connect-timeout",
            "2",
            "--max-time",
            "3",
            "-w",
            "\n",
            &url,
        ],
    )?;
    let took = started.elapsed();
    let body = String::from_utf8_lossy(&out.stdout);
    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    for line in body.lines() {
        if let Some(pod) = line
            .split_whitespace()
            .next()
            .and_then(|w| w.strip_prefix("pod="))
        {
            *answered.entry(pod.to_string()).or_default() += 1;
        }
    }
    // The split is of the connections that were answered. A few may fail on a busy machine (a
    // speaker taking over mid-run resets handshakes in flight); more than 1% is a fault of its
    // own.
    let n: usize = answered.values().sum();
    ensure!(
        n * 100 >= CONNECTIONS * 99,
        "only {n} of {CONNECTIONS} connections answered in {took:?}: {answered:?}"
    );
    let mut chi2 = 0.0;
    let mut lines = Vec::new();
    for (ip, share) in &predicted {
        let pod = pods.get(ip).ok_or_else(|| {
            anyhow!("the walk sends traffic to {ip}, which is no web pod: {pods:?}")
        })?;
        let seen = answered.get(pod).copied().unwrap_or(0) as f64;
        let want = share * n as f64;
        let sigma = (n as f64 * share * (1.0 - share)).sqrt();
        chi2 += (seen - want).powi(2) / want;
        lines.push(format!(
            "{ip} ({pod}): predicted {:.1}% = {want:.0}, seen {seen} ({:+.1}σ)",
            share * 100.0,
            (seen - want) / sigma
        ));
        ensure!(
            (seen - want).abs() <= SIGMAS * sigma,
            "{pod} answered {seen} connections, the walk predicts {want:.0} ± {:.0} (±{SIGMAS}σ)",
            SIGMAS * sigma
        );
    }
    ensure!(
        answered.keys().all(|p| pods.values().any(|q| q == p)),
        "answers from pods the walk did not predict: {answered:?}"
    );
    Ok(format!(
        "{} rules of {node}; {n} of {CONNECTIONS} connections answered in {:.1} s; {}; chi-square {chi2:.2} (2 degrees of freedom; 13.8 is p = 0.001)",
        match env.mode {
            ProxyMode::Nftables => "nftables",
            _ => "iptables",
        },
        took.as_secs_f64(),
        lines.join("; ")
    ))
}

/// A working Service of an L2 pool: every step ok, and the same through `kubectl ferrolb`
/// (kubectl finds the plugin on PATH).
async fn working_l2(env: &Env) -> anyhow::Result<String> {
    let (ip, node) = env.announced("web").await?;
    let out = env.trace("web", &[], 0)?;
    must_say(
        &out,
        &[
            "Service shop/web (LoadBalancer, externalTrafficPolicy Cluster)",
            "[ok] type LoadBalancer, answered by ferrolb",
            &format!("[ok] external IPs: {ip} (pool default)"),
            &format!("[ok] announced by {node} on eth0"),
            "[ok] http 80/TCP -> nodePort",
            "[ok] 3/3 endpoints ready (ready/total per node: node-1 1/1, node-2 1/1, node-3 1/1)",
            "[ok] externalTrafficPolicy Cluster",
            &format!("To follow the packet through kube-proxy on {node}"),
        ],
    )?;
    ensure!(
        !out.contains("[error]") && !out.contains("[warning]"),
        "{out}"
    );

    // As a user runs it: kubectl finds kubectl-ferrolb on PATH.
    let plugin_dir = PathBuf::from(ferrolb_e2e::binary("kubectl-ferrolb"))
        .parent()
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("no directory"))?;
    let path = format!(
        "{}:{}:{}",
        plugin_dir.display(),
        env.lab.tools_bin().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let via = Command::new(env.lab.tools_bin().join("kubectl"))
        .args(["ferrolb", "trace", "svc/web", "-n", APP])
        .env("KUBECONFIG", env.lab.kubeconfig())
        .env("PATH", path)
        .output()?;
    ensure!(via.status.success(), "kubectl ferrolb: {}", text(&via));
    ensure!(
        String::from_utf8_lossy(&via.stdout) == out,
        "kubectl ferrolb printed something else:\n{}",
        text(&via)
    );
    Ok(format!(
        "{ip} announced by {node}; all ok, also through kubectl"
    ))
}

/// A working Service of the node pool: where it is published, and node-2's rules walked for
/// node-2's own address.
async fn working_forwarder(env: &Env) -> anyhow::Result<String> {
    apply(
        &env.client,
        &[service(
            "edge",
            "web",
            8081,
            false,
            Some(("ferrolb.io/address-pool", "nodes")),
        )],
    )
    .await?;
    let published = "published on node-1, node-2, node-3 (InternalIP)";
    let out = eventually("edge published on every node", T, || async {
        let o = env.trace("edge", &[], 0);
        Ok(o.ok().filter(|o| o.contains(published)))
    })
    .await?;
    must_say(
        &out,
        &[
            "[ok] external IPs: 198.51.100.11 (node-1's InternalIP, node pool nodes), 198.51.100.12 (node-2's InternalIP, node pool nodes), 198.51.100.13 (node-3's InternalIP, node pool nodes)",
            &format!("[ok] {published}"),
            "condition ferrolb.io/ForwarderReady: True/AllNodes",
        ],
    )?;
    ensure!(
        !out.contains("[error]") && !out.contains("[warning]"),
        "{out}"
    );
    env.curl_eventually("http://198.51.100.12:8081/").await?;
    let rules = env.rules("node-2", "edge")?;
    let out = env.trace(
        "edge",
        &[
            "--rules",
            &rules.display().to_string(),
            "--node",
            "node-2",
            "--from",
            "198.51.100.200",
        ],
        0,
    )?;
    must_say(
        &out,
        &[
            "Through node-2's rules to 198.51.100.12:8081/TCP:",
            "the destination is an address of this node",
            "[ok] the rules send traffic to exactly the 3 usable endpoint(s)",
        ],
    )?;
    ensure!(
        !out.contains("198.51.100.11:8081/TCP") && !out.contains("198.51.100.13:8081/TCP"),
        "other nodes' addresses walked on node-2's rules:\n{out}"
    );
    Ok(published.to_string())
}

/// No ready endpoint: the pods never pass their readiness probe.
async fn no_ready_endpoint(env: &Env) -> anyhow::Result<String> {
    apply(
        &env.client,
        &[
            backend("sick", 2, None, 9999),
            service("sick", "sick", 80, false, None),
        ],
    )
    .await?;
    let want = "[error] no ready endpoint: pods app=sick are 0/2 ready";
    let out = eventually("trace of sick names its unready pods", T, || async {
        let o = env.trace("sick", &[], 1);
        Ok(o.ok().filter(|o| {
            o.contains(want) && o.contains("not announced: the Service has no serving endpoint")
        }))
    })
    .await?;
    must_say(
        &out,
        &[
            "condition ferrolb.io/Announced: False/NoEndpoints",
            "what to do: make the Service's pods ready",
            "what to do: check the pods' readiness probes and events",
        ],
    )?;
    env.kubectl(
        "delete sick",
        &[
            "-n",
            APP,
            "delete",
            "service,deployment",
            "sick",
            "--wait=false",
        ],
    )?;
    Ok(want.to_string())
}

/// Rules collected before a scale-up miss the new endpoint; rules collected before a scale-down
/// still send traffic to pods that are gone.
async fn stale_rules(env: &Env) -> anyhow::Result<String> {
    let (_, node) = env.announced("web").await?;
    let before = env.wait_ready_endpoints("web", 3).await?;
    let old = env.rules(&node, "before-scaling")?;
    let old = old.display().to_string();
    env.kubectl(
        "scale web to 4",
        &["-n", APP, "scale", "deployment/web", "--replicas=4"],
    )?;
    let four = env.wait_ready_endpoints("web", 4).await?;
    let new: Vec<&String> = four.iter().filter(|e| !before.contains(e)).collect();
    ensure!(
        new.len() == 1,
        "one new endpoint expected: {before:?} -> {four:?}"
    );
    let out = env.trace("web", &["--rules", &old], 1)?;
    let not_programmed = format!("[error] endpoint {}:8080 on", new[0]);
    must_say(
        &out,
        &[
            &not_programmed,
            "is ready but no rule sends traffic to it",
            "take a fresh dump",
        ],
    )?;

    env.kubectl(
        "scale web to 2",
        &["-n", APP, "scale", "deployment/web", "--replicas=2"],
    )?;
    let two = env.wait_ready_endpoints("web", 2).await?;
    let gone: Vec<&String> = before.iter().filter(|e| !two.contains(e)).collect();
    ensure!(
        !gone.is_empty(),
        "no endpoint of the old dump went away: {before:?} -> {two:?}"
    );
    let out = env.trace("web", &["--rules", &old], 1)?;
    for g in &gone {
        must_say(
            &out,
            &[&format!(
                "[error] 33.3% of the traffic is sent to {g}:8080, which is no endpoint of the Service"
            )],
        )?;
    }
    // A fresh dump agrees with the EndpointSlices again.
    let fresh = eventually("fresh rules of web agree", T, || async {
        let r = env.rules(&node, "after-scaling")?;
        Ok(env
            .trace("web", &["--rules", &r.display().to_string()], 0)
            .ok()
            .filter(|o| o.contains("exactly the 2 usable endpoint(s)")))
    })
    .await?;
    must_say(&fresh, &["50.0%  delivered to"])?;
    env.kubectl(
        "scale web back to 3",
        &["-n", APP, "scale", "deployment/web", "--replicas=3"],
    )?;
    env.wait_ready_endpoints("web", 3).await?;
    Ok(format!(
        "before the scale-up: {not_programmed}...; before the scale-down: DNAT to {gone:?} named"
    ))
}

/// `externalTrafficPolicy: Local` with the only endpoint on node-2: node-1's rules drop the
/// traffic, in the walk and in reality (node-1's nodePort does not answer, node-2's does).
async fn local_policy_elsewhere(env: &Env) -> anyhow::Result<String> {
    apply(
        &env.client,
        &[
            backend("solo", 1, Some("node-2"), 8080),
            service("solo", "solo", 80, true, None),
        ],
    )
    .await?;
    wait_rollout(&env.lab, APP, "deployment/solo", T)?;
    let (ip, node) = env.announced("solo").await?;
    ensure!(node == "node-2", "solo announced by {node}, want node-2");
    env.curl_eventually(&format!("http://{ip}/")).await?;
    let node_port = env
        .service("solo")
        .await?
        .spec
        .and_then(|s| s.ports)
        .and_then(|p| p.first().and_then(|p| p.node_port))
        .ok_or_else(|| anyhow!("solo has no nodePort"))?;
    let rules = eventually("node-1's rules drop solo", T, || async {
        let r = env.rules("node-1", "solo")?;
        let s = std::fs::read_to_string(&r)?;
        Ok((s.contains("shop/solo:http has no local endpoints")).then_some(r))
    })
    .await?;
    let rules = rules.display().to_string();
    let out = env.trace(
        "solo",
        &[
            "--rules",
            &rules,
            "--node",
            "node-1",
            "--from",
            "198.51.100.200",
        ],
        1,
    )?;
    must_say(
        &out,
        &[
            "[ok] externalTrafficPolicy Local: the client's address is kept; only nodes with a ready endpoint take traffic (node-2); others drop it",
            "Through node-1's rules to",
            "[error] 100.0% of the traffic is dropped in KUBE-EXTERNAL-SERVICES: shop/solo:http has no local endpoints",
            "what to do: externalTrafficPolicy Local and no ready endpoint on this node",
        ],
    )?;
    // The same through node-1's nodePort, offline, and what really happens there.
    let to = format!("198.51.100.11:{node_port}/tcp");
    let offline = env.plugin_says(
        &[
            "trace",
            "--rules",
            &rules,
            "--to",
            &to,
            "--from",
            "198.51.100.200",
            "--dst-local",
            "true",
        ],
        0,
    )?;
    must_say(
        &offline,
        &["100.0%  dropped in KUBE-EXTERNAL-SERVICES: shop/solo:http has no local endpoints"],
    )?;
    ensure!(
        env.curl(&format!("http://198.51.100.11:{node_port}/"))?
            .is_none(),
        "node-1's nodePort answered although its rules drop the traffic"
    );
    let there = env
        .curl_eventually(&format!("http://198.51.100.12:{node_port}/"))
        .await?;
    ensure!(
        there.contains("src=198.51.100.200:"),
        "policy Local keeps the client's address: {there}"
    );
    Ok(format!(
        "node-1 drops (walk and curl to its nodePort {node_port}); node-2 answers: {there}"
    ))
}

/// Speakers gone: first node-2's (solo's only eligible node), then every one. `trace` says so,
/// and so does doctor's `speakers-missing`; both clear once the speakers are back.
async fn speakers_gone(env: &Env) -> anyhow::Result<String> {
    let affinity = |nodes: &[&str]| {
        json!({"spec": {"template": {"spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{
                "matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "NotIn", "values": nodes}]
            }]}
        }}}}}})
        .to_string()
    };
    env.kubectl(
        "keep the speakers off node-2",
        &[
            "-n",
            NS,
            "patch",
            "daemonset",
            "ferrolb-speaker",
            "--type=merge",
            "-p",
            &affinity(&["node-2"]),
        ],
    )?;
    let result = async {
        wait_rollout(&env.lab, NS, "daemonset/ferrolb-speaker", T)?;
        let want = "no eligible speaker is alive — no speaker alive on node-2";
        let out = eventually("trace of solo names node-2", T, || async {
            Ok(env.trace("solo", &[], 1).ok().filter(|o| o.contains(want)))
        })
        .await?;
        must_say(
            &out,
            &[
                "condition ferrolb.io/Announced: False/NoAliveNode",
                "what to do: start the speakers (the DaemonSet's pods) on the eligible nodes",
            ],
        )?;
        let doctor_one = env
            .doctor_finds("speakers-missing", "no ready speaker on node-2")
            .await?;

        env.kubectl(
            "keep the speakers off every node",
            &[
                "-n",
                NS,
                "patch",
                "daemonset",
                "ferrolb-speaker",
                "--type=merge",
                "-p",
                &affinity(&["node-1", "node-2", "node-3"]),
            ],
        )?;
        // Nobody is left to rewrite web's condition: it still names a node, now without a
        // speaker (or, if the last speaker wrote it on its way out, no node is alive).
        let out = eventually("trace of web says no speaker is alive", T, || async {
            Ok(env
                .trace("web", &[], 1)
                .ok()
                .filter(|o| o.contains("no speaker alive on")))
        })
        .await?;
        let line = out
            .lines()
            .find(|l| l.contains("no speaker alive on"))
            .unwrap_or_default()
            .trim()
            .to_string();
        ensure!(line.starts_with("[error]"), "{out}");
        let doctor_all = env
            .doctor_finds("speakers-missing", "no speaker pods found")
            .await?;
        Ok(format!(
            "solo: {want}; doctor: {doctor_one}; all gone, web: {line}; doctor: {doctor_all}"
        ))
    }
    .await;
    env.kubectl(
        "let the speakers back",
        &[
            "-n",
            NS,
            "patch",
            "daemonset",
            "ferrolb-speaker",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/spec/template/spec/affinity"}]"#,
        ],
    )?;
    let report = result?;
    wait_rollout(&env.lab, NS, "daemonset/ferrolb-speaker", T)?;
    let back = env.doctor_clear("speakers-missing").await?;
    eventually("web announced again, all ok", T, || async {
        Ok(env
            .trace("web", &[], 0)
            .ok()
            .filter(|o| !o.contains("[error]")))
    })
    .await?;
    Ok(format!("{report}; back: {back}"))
}

/// Each of doctor's checks: the misconfiguration made, found, fixed, gone.
async fn doctor_checks(env: &Env) -> anyhow::Result<String> {
    let mut seen = Vec::new();
    let start = env.doctor()?;
    let bad: Vec<&Value> = start
        .iter()
        .filter(|f| f["severity"] == "warning" || f["severity"] == "error")
        .collect();
    ensure!(
        bad.is_empty(),
        "doctor finds problems before any was made: {bad:?}"
    );

    // A pool inside the Service CIDR.
    apply(
        &env.client,
        &[pool(
            "in-svc",
            json!({"addresses": ["203.0.113.200-203.0.113.210"], "autoAssign": false}),
        )],
    )
    .await?;
    seen.push(
        env.doctor_finds(
            "pool-overlaps-service-cidr",
            "pool in-svc (203.0.113.200-203.0.113.210) overlaps the Service CIDR 203.0.113.0/24 (ServiceCIDR kubernetes)",
        )
        .await?,
    );
    env.kubectl("delete in-svc", &["delete", "ipaddresspool", "in-svc"])?;
    env.doctor_clear("pool-overlaps-service-cidr").await?;

    // A pool holding a node's address.
    apply(
        &env.client,
        &[pool(
            "has-node",
            json!({"addresses": ["198.51.100.13/32"], "autoAssign": false}),
        )],
    )
    .await?;
    seen.push(
        env.doctor_finds(
            "pool-overlaps-node-addresses",
            "pool has-node (198.51.100.13/32) holds 198.51.100.13, the InternalIP of node node-3",
        )
        .await?,
    );
    env.kubectl("delete has-node", &["delete", "ipaddresspool", "has-node"])?;
    env.doctor_clear("pool-overlaps-node-addresses").await?;

    // kube-proxy's configuration, published where kubeadm keeps it (the lab's kube-proxy reads
    // it from a file): its clusterCIDR is the lab's real pod network.
    let conf = std::fs::read_to_string(env.lab.run_dir().join("kube-proxy-node-1.json"))
        .context("the lab's kube-proxy configuration")?;
    let publish = |conf: String| async move {
        apply(
            &env.client,
            &[json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "kube-proxy", "namespace": "kube-system"},
                "data": {"config.conf": conf},
            })],
        )
        .await
    };
    publish(conf.clone()).await?;
    let mode = env.doctor_clear("kube-proxy-ipvs-strict-arp").await?;
    ensure!(mode.contains("kube-proxy runs in iptables mode"), "{mode}");
    apply(
        &env.client,
        &[pool(
            "on-pods",
            json!({"addresses": ["192.0.2.64/28"], "autoAssign": false}),
        )],
    )
    .await?;
    seen.push(
        env.doctor_finds(
            "pool-overlaps-pod-cidr",
            "pool on-pods (192.0.2.64/28) overlaps kube-proxy's clusterCIDR 192.0.2.0/25",
        )
        .await?,
    );
    env.kubectl("delete on-pods", &["delete", "ipaddresspool", "on-pods"])?;
    env.doctor_clear("pool-overlaps-pod-cidr").await?;
    let mut v: Value = serde_json::from_str(&conf)?;
    v["mode"] = json!("ipvs");
    publish(v.to_string()).await?;
    seen.push(
        env.doctor_finds(
            "kube-proxy-ipvs-strict-arp",
            "kube-proxy runs in ipvs mode without strictARP",
        )
        .await?,
    );
    v["ipvs"] = json!({"strictARP": true});
    publish(v.to_string()).await?;
    let strict = env.doctor_clear("kube-proxy-ipvs-strict-arp").await?;
    ensure!(strict.contains("with strictARP: true"), "{strict}");
    env.kubectl(
        "delete the kube-proxy ConfigMap",
        &["-n", "kube-system", "delete", "configmap", "kube-proxy"],
    )?;

    // MetalLB and K3s servicelb beside ferrolb (stand-ins with their names and labels, running
    // the backend image).
    env.kubectl(
        "create metallb-system",
        &["create", "namespace", "metallb-system"],
    )?;
    let mut metallb = backend("controller", 1, None, 8080);
    metallb["metadata"]["namespace"] = json!("metallb-system");
    metallb["metadata"]["labels"] = json!({"app.kubernetes.io/name": "metallb"});
    let svclb = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "svclb-web-5c1a2b3d", "namespace": "kube-system",
                     "labels": {"svccontroller.k3s.cattle.io/svcname": "web"}},
        "spec": {
            "selector": {"matchLabels": {"app": "svclb-web-5c1a2b3d"}},
            "template": {
                "metadata": {"labels": {"app": "svclb-web-5c1a2b3d", "svccontroller.k3s.cattle.io/svcname": "web"}},
                "spec": {"containers": [{"name": "lb-tcp-80", "image": ferrolb_lab::image::BACKEND,
                                         "imagePullPolicy": "Never", "args": ["--tcp", "0", "--udp", "0"]}]}
            }
        }
    });
    apply(&env.client, &[metallb, svclb]).await?;
    seen.push(
        env.doctor_finds(
            "other-load-balancer",
            "MetalLB is running: Deployment metallb-system/controller",
        )
        .await?,
    );
    seen.push(
        env.doctor_finds(
            "other-load-balancer",
            "K3s servicelb is running: DaemonSets kube-system/svclb-web-5c1a2b3d",
        )
        .await?,
    );
    env.kubectl(
        "delete the MetalLB stand-in",
        &["-n", "metallb-system", "delete", "deployment", "controller"],
    )?;
    env.kubectl(
        "delete metallb-system",
        &["delete", "namespace", "metallb-system", "--wait=false"],
    )?;
    env.kubectl(
        "delete svclb",
        &[
            "-n",
            "kube-system",
            "delete",
            "daemonset",
            "svclb-web-5c1a2b3d",
        ],
    )?;
    env.doctor_clear("other-load-balancer").await?;

    // A pool no advertisement covers, then one whose advertisement selects no node.
    apply(
        &env.client,
        &[pool(
            "lonely",
            json!({"addresses": ["198.51.100.180/30"], "autoAssign": false}),
        )],
    )
    .await?;
    seen.push(
        env.doctor_finds(
            "pool-without-advertisement",
            "no L2Advertisement or BGPAdvertisement covers pool lonely",
        )
        .await?,
    );
    apply(
        &env.client,
        &[json!({
            "apiVersion": "ferrolb.io/v1beta1", "kind": "L2Advertisement",
            "metadata": {"name": "lonely"},
            "spec": {"ipAddressPools": ["lonely"],
                     "nodeSelectors": [{"matchLabels": {"rack": "nowhere"}}]},
        })],
    )
    .await?;
    seen.push(
        env.doctor_finds(
            "pool-without-advertisement",
            "the L2Advertisements covering pool lonely select no node",
        )
        .await?,
    );
    env.kubectl(
        "fix lonely's advertisement",
        &[
            "patch",
            "l2advertisement",
            "lonely",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/spec/nodeSelectors"}]"#,
        ],
    )?;
    env.doctor_clear("pool-without-advertisement").await?;

    // What the controller reports: overlapping pools, an advertisement naming no pool.
    apply(
        &env.client,
        &[
            pool(
                "overlap",
                json!({"addresses": ["198.51.100.140-198.51.100.159"], "autoAssign": false}),
            ),
            json!({
                "apiVersion": "ferrolb.io/v1beta1", "kind": "L2Advertisement",
                "metadata": {"name": "ghost"}, "spec": {"ipAddressPools": ["ghost"]},
            }),
        ],
    )
    .await?;
    seen.push(
        env.doctor_finds("controller-conditions", "pool overlap: Overlapping")
            .await?,
    );
    seen.push(
        env.doctor_finds(
            "controller-conditions",
            "L2Advertisement ghost: UnknownPools",
        )
        .await?,
    );
    env.kubectl(
        "delete overlap, ghost and lonely",
        &["delete", "ipaddresspool", "overlap", "lonely"],
    )?;
    env.kubectl(
        "delete the advertisements",
        &["delete", "l2advertisement", "ghost", "lonely"],
    )?;
    env.doctor_clear("controller-conditions").await?;

    let end = eventually("doctor clean again", T, || async {
        let fs = env.doctor()?;
        let bad: Vec<&Value> = fs
            .iter()
            .filter(|f| f["severity"] == "warning" || f["severity"] == "error")
            .collect();
        Ok(bad.is_empty().then_some(fs.len()))
    })
    .await?;
    Ok(format!(
        "{} findings made and cleared: {}; {end} checks clean at the end",
        seen.len(),
        seen.join(" | ")
    ))
}

/// `migrate metallb` on MetalLB-style objects written for this test: an IPAddressPool with its
/// L2Advertisement and a BGPPeer (metallb.io CRs in metallb-system), and a legacy ConfigMap.
async fn migrate_metallb(env: &Env) -> anyhow::Result<String> {
    let crs = r#"apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: first-pool
  namespace: metallb-system
spec:
  addresses:
  - 198.51.100.160-198.51.100.169
  autoAssign: false
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata:
  name: example
  namespace: metallb-system
spec:
  ipAddressPools:
  - first-pool
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata:
  name: upstream
  namespace: metallb-system
spec:
  myASN: 64500
  peerASN: 64501
  peerAddress: 198.51.100.1
  holdTime: 90s
"#;
    let legacy = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: config
  namespace: metallb-system
data:
  config: |
    address-pools:
    - name: legacy
      protocol: layer2
      auto-assign: false
      addresses:
      - 198.51.100.170-198.51.100.179
"#;
    let dir = env.lab.run_dir();
    let (crs_file, legacy_file) = (
        dir.join("metallb-crs.yaml"),
        dir.join("metallb-legacy.yaml"),
    );
    std::fs::write(&crs_file, crs)?;
    std::fs::write(&legacy_file, legacy)?;
    let (crs_file, legacy_file) = (
        crs_file.display().to_string(),
        legacy_file.display().to_string(),
    );
    let args = ["migrate", "metallb", "-f", &crs_file, &legacy_file];

    // Without --apply: YAML out, nothing changed.
    let out = env.plugin(&args)?;
    ensure!(out.status.success(), "{}", text(&out));
    let yaml = String::from_utf8_lossy(&out.stdout);
    must_say(
        &yaml,
        &[
            "kind: IPAddressPool",
            "name: first-pool",
            "name: legacy",
            "kind: BGPPeer",
            "peerASN: 64501",
        ],
    )?;
    must_say(
        &String::from_utf8_lossy(&out.stderr),
        &["nothing was changed in the cluster"],
    )?;
    let pools = env.kubectl("list pools", &["get", "ipaddresspools", "-o", "name"])?;
    ensure!(
        !pools.contains("first-pool") && !pools.contains("legacy"),
        "{pools}"
    );

    let mut apply_args = args.to_vec();
    apply_args.push("--apply");
    let out = env.plugin(&apply_args)?;
    ensure!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    must_say(
        &said,
        &[
            "IPAddressPool first-pool applied",
            "IPAddressPool legacy applied",
            "L2Advertisement example applied",
            "L2Advertisement legacy applied",
            "BGPPeer upstream applied",
            "BGP objects were converted: they take effect once ferrolb runs in BGP mode",
        ],
    )?;
    let peer = env.kubectl(
        "read the BGPPeer",
        &[
            "get",
            "bgppeers.ferrolb.io",
            "upstream",
            "-o",
            "jsonpath={.spec.peerASN} {.spec.holdTime}",
        ],
    )?;
    ensure!(peer == "64501 90s", "{peer}");

    // Behaves the same: Services asking for the pools by MetalLB's annotations get IPs from
    // them, announced and answering.
    apply(
        &env.client,
        &[
            service(
                "from-crs",
                "web",
                80,
                false,
                Some(("metallb.universe.tf/address-pool", "first-pool")),
            ),
            service(
                "from-legacy",
                "web",
                80,
                false,
                Some(("metallb.io/address-pool", "legacy")),
            ),
        ],
    )
    .await?;
    let mut report = Vec::new();
    for (name, prefix, pool) in [
        ("from-crs", "198.51.100.16", "first-pool"),
        ("from-legacy", "198.51.100.17", "legacy"),
    ] {
        let (ip, node) = env.announced(name).await?;
        ensure!(
            ip.starts_with(prefix),
            "{name} got {ip}, not from pool {pool}"
        );
        let out = env.trace(name, &[], 0)?;
        must_say(
            &out,
            &[
                &format!("[ok] external IPs: {ip} (pool {pool})"),
                &format!("[ok] announced by {node} on eth0"),
            ],
        )?;
        let body = env.curl_eventually(&format!("http://{ip}/")).await?;
        report.push(format!(
            "{name}: {ip} (pool {pool}) announced by {node}, answered {body}"
        ));
    }
    Ok(report.join("; "))
}

fn report(step: &str, outcome: anyhow::Result<String>) -> anyhow::Result<()> {
    let what = outcome.with_context(|| format!("step `{step}`"))?;
    println!("{step}: {what}");
    Ok(())
}

async fn logs(env: &Env) -> String {
    let mut out = String::new();
    for what in ["daemonset/ferrolb-speaker", "deployment/ferrolb-controller"] {
        if let Ok(o) = env.lab.kubectl(&[
            "-n",
            NS,
            "logs",
            what,
            "--tail=30",
            "--all-containers",
            "--prefix",
        ]) {
            out.push_str(&String::from_utf8_lossy(&o.stdout));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_ferrolb_with_iptables() {
    let started = Instant::now();
    let env = Env::up(ProxyMode::Iptables)
        .await
        .expect("lab with the chart");
    println!(
        "lab with the chart up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let story = async {
        report("trace: a working L2 Service", working_l2(&env).await)?;
        report(
            "split: the walk against 3,000 connections",
            split_matches_reality(&env).await,
        )?;
        report(
            "trace: a working forwarder-mode Service",
            working_forwarder(&env).await,
        )?;
        report("trace: no ready endpoint", no_ready_endpoint(&env).await)?;
        report(
            "trace: rules older than the endpoints",
            stale_rules(&env).await,
        )?;
        report(
            "trace: policy Local on a node without an endpoint",
            local_policy_elsewhere(&env).await,
        )?;
        report("trace and doctor: speakers gone", speakers_gone(&env).await)?;
        report("doctor: each check", doctor_checks(&env).await)?;
        report("migrate metallb", migrate_metallb(&env).await)
    }
    .await;
    if let Err(e) = story {
        panic!("{e:#}\n{}", logs(&env).await);
    }
    let r = env.lab.down();
    assert!(r.is_clean(), "{r:?}");
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_ferrolb_split_with_nftables() {
    let started = Instant::now();
    let env = Env::up(ProxyMode::Nftables)
        .await
        .expect("lab with the chart");
    let story = async {
        report(
            "trace: a working L2 Service (nftables)",
            working_l2(&env).await,
        )?;
        report(
            "split: the walk against 3,000 connections (nftables)",
            split_matches_reality(&env).await,
        )
    }
    .await;
    if let Err(e) = story {
        panic!("{e:#}\n{}", logs(&env).await);
    }
    let r = env.lab.down();
    assert!(r.is_clean(), "{r:?}");
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
}
