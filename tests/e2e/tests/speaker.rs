//! The speaker in a real lab: kube-apiserver, three nodes and a client as network namespaces on
//! one bridge, kube-proxy in every node, the controller allocating, one `ferrolb-speaker` per node,
//! and real clients (`arping`, `ndisc6`, `curl`, `ip neigh`) on the client host.
//!
//! One lab serves every scenario, run in order by a single test (bringing a lab up costs
//! seconds; scenarios build on the state the previous ones leave). Each scenario reports its own
//! failure and the rest still run when the lab is usable; the test fails listing every failed
//! scenario. The lab and every process are torn down when the test ends, also on panic
//! (`Lab` and `LabProcess` kill and clean up on drop).
//!
//! Needs root, iproute2, arping, ndisc6, curl, and the binaries from
//! `cargo build -p ferrolb-controller -p ferrolb-speaker -p ferrolb-e2e`.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure};
use ferrolb_e2e::{
    HostProcess, apply, audit, binary, eventually, install_crds, start_host_controller, text,
};
use ferrolb_lab::{Lab, LabOptions, LabProcess, Signal};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

const NS: &str = "default";
const WEB_V4: &str = "198.51.100.70";
const WEB_V6: &str = "2001:db8::1:70";
const LOC_V4: &str = "198.51.100.71";
const UNALLOCATED: &str = "198.51.100.90";
/// Generous bound for a fail-over seen by the slow tools here (the benchmark measures it
/// precisely; the speaker's own target is a few hundred milliseconds).
const FAILOVER_BOUND: Duration = Duration::from_secs(3);

struct Env {
    lab: Lab,
    client: kube::Client,
    speakers: BTreeMap<String, LabProcess>,
    _controller: HostProcess,
    _backends: Vec<LabProcess>,
    speaker_bin: String,
}

impl Env {
    fn node_names(&self) -> Vec<String> {
        self.lab.nodes().iter().map(|n| n.name.clone()).collect()
    }

    fn mac_of(&self, node: &str) -> String {
        self.lab
            .nodes()
            .iter()
            .find(|n| n.name == node)
            .map(|n| n.mac.to_lowercase())
            .unwrap_or_default()
    }

    fn node_of_mac(&self, mac: &str) -> Option<String> {
        let mac = mac.to_lowercase();
        self.lab
            .nodes()
            .iter()
            .find(|n| n.mac.to_lowercase() == mac)
            .map(|n| n.name.clone())
    }

    fn ipv4_of(&self, node: &str) -> String {
        self.lab
            .nodes()
            .iter()
            .find(|n| n.name == node)
            .map(|n| n.ipv4.to_string())
            .unwrap_or_default()
    }

    fn start_speaker(&mut self, node: &str) -> anyhow::Result<()> {
        let kubeconfig = self.lab.node_kubeconfig().display().to_string();
        let metrics = format!("{}:7473", self.ipv4_of(node));
        let n = self.speakers.len();
        let p = self.lab.spawn(
            node,
            &[
                &self.speaker_bin,
                "--node-name",
                node,
                "--kubeconfig",
                &kubeconfig,
                "--metrics-addr",
                &metrics,
                "--log-level",
                "info",
            ],
            &format!("speaker-{node}-{n}"),
        )?;
        self.speakers.insert(node.to_string(), p);
        Ok(())
    }

    fn signal_speaker(&mut self, node: &str, sig: Signal) -> anyhow::Result<()> {
        let p = self
            .speakers
            .get_mut(node)
            .ok_or_else(|| anyhow!("no speaker on {node}"))?;
        p.signal(sig)?;
        Ok(())
    }

    fn kill_speaker(&mut self, node: &str) {
        if let Some(mut p) = self.speakers.remove(node) {
            let _ = p.kill();
        }
    }

    /// SIGTERM and wait (at most 5 s) for the graceful exit.
    fn stop_speaker(&mut self, node: &str) -> anyhow::Result<()> {
        let mut p = self
            .speakers
            .remove(node)
            .ok_or_else(|| anyhow!("no speaker on {node}"))?;
        p.signal(Signal::Term)?;
        let status = p.wait_timeout(Duration::from_secs(5));
        ensure!(
            status.is_some_and(|s| s.success()),
            "speaker on {node} did not exit cleanly after SIGTERM ({status:?}); log:\n{}",
            tail(&p.log(), 20)
        );
        Ok(())
    }

    fn exec(&self, host: &str, cmd: &[&str]) -> anyhow::Result<std::process::Output> {
        Ok(self.lab.exec(host, cmd)?)
    }

    fn link(&self, node: &str, up: bool) -> anyhow::Result<()> {
        let out = self.exec(
            node,
            &["ip", "link", "set", "eth0", if up { "up" } else { "down" }],
        )?;
        ensure!(out.status.success(), "ip link set: {}", text(&out));
        Ok(())
    }

    /// MACs of the ARP replies the client gets for `count` requests.
    fn arping(&self, ip: &str, count: u32) -> anyhow::Result<Vec<String>> {
        self.arping_on("eth0", ip, count)
    }

    /// MACs of the ARP replies the client gets for `count` requests sent on `iface`.
    fn arping_on(&self, iface: &str, ip: &str, count: u32) -> anyhow::Result<Vec<String>> {
        let c = count.to_string();
        let w = (count + 1).to_string();
        let out = self.exec(
            "client",
            &["arping", "-c", &c, "-w", &w, "-W", "0.2", "-i", iface, ip],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("bytes from"))
            .filter_map(|l| l.split_whitespace().nth(3).map(str::to_lowercase))
            .collect())
    }

    /// The node answering ARP for `ip`: exactly one answer per request, all from one MAC.
    fn announcer_v4(&self, ip: &str) -> anyhow::Result<String> {
        let macs = self.arping(ip, 3)?;
        ensure!(
            macs.len() == 3,
            "expected exactly 3 ARP replies for {ip}, got {macs:?}"
        );
        ensure!(
            macs.iter().all(|m| *m == macs[0]),
            "replies from several MACs for {ip}: {macs:?}"
        );
        self.node_of_mac(&macs[0])
            .ok_or_else(|| anyhow!("reply from unknown MAC {}", macs[0]))
    }

    /// The link-layer address `ndisc6` resolves `ip` to.
    fn ndisc(&self, ip: &str) -> anyhow::Result<Option<String>> {
        self.ndisc_on("eth0", ip)
    }

    /// The link-layer address `ndisc6` resolves `ip` to on the client's `iface`.
    fn ndisc_on(&self, iface: &str, ip: &str) -> anyhow::Result<Option<String>> {
        let out = self.exec(
            "client",
            &["ndisc6", "-1", "-r", "3", "-w", "500", ip, iface],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("Target link-layer address: "))
            .map(|m| m.trim().to_lowercase()))
    }

    fn neigh_mac(&self, ip: &str) -> anyhow::Result<Option<String>> {
        let out = self.exec("client", &["ip", "neigh", "show", ip, "dev", "eth0"])?;
        let t = String::from_utf8_lossy(&out.stdout).to_string();
        let mut it = t.split_whitespace();
        Ok(it
            .by_ref()
            .find(|w| *w == "lladdr")
            .and_then(|_| it.next())
            .map(str::to_lowercase))
    }

    fn curl(&self, ip: &str) -> anyhow::Result<String> {
        let url = format!("http://{ip}/");
        let out = self.exec("client", &["curl", "-s", "-m", "2", &url])?;
        ensure!(out.status.success(), "curl {url} failed: {}", text(&out));
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The Service's `ferrolb.io/Announced` condition: status, reason, message.
    async fn condition(&self, svc: &str) -> Option<(String, String, String)> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), NS);
        let s = api.get(svc).await.ok()?;
        s.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "ferrolb.io/Announced")
            .map(|c| (c.status, c.reason, c.message))
    }

    /// Status writes (condition writes and removals) all speakers have sent so far.
    fn status_writes(&self) -> f64 {
        self.gauge("ferrolb_speaker_api_requests_total{kind=\"status\"}")
            .into_iter()
            .filter(|v| v.is_finite())
            .sum()
    }

    /// A speaker gauge on every node (NaN where the metrics cannot be read).
    fn gauge(&self, name: &str) -> Vec<f64> {
        self.node_names()
            .iter()
            .map(|n| {
                let url = format!("http://{}:7473/metrics", self.ipv4_of(n));
                self.exec(n, &["curl", "-s", "-m", "2", &url])
                    .ok()
                    .and_then(|o| {
                        String::from_utf8_lossy(&o.stdout)
                            .lines()
                            .find(|l| l.split_whitespace().next() == Some(name))
                            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    })
                    .unwrap_or(f64::NAN)
            })
            .collect()
    }

    async fn set_endpoints(&self, svc: &str, nodes: &[&str]) -> anyhow::Result<()> {
        let endpoints: Vec<serde_json::Value> = nodes
            .iter()
            .map(|n| {
                json!({
                    "addresses": [self.ipv4_of(n)],
                    "nodeName": n,
                    "conditions": {"ready": true, "serving": true},
                })
            })
            .collect();
        apply(
            &self.client,
            &[json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": format!("{svc}-lab"),
                    "namespace": NS,
                    "labels": {"kubernetes.io/service-name": svc},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": endpoints,
            })],
        )
        .await
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// [`eventually`] for a check that does not wait on anything itself.
async fn poll<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    eventually(what, timeout, || std::future::ready(f())).await
}

async fn poll_condition(
    env: &Env,
    svc: &str,
    timeout: Duration,
    want: impl Fn(&str, &str, &str) -> bool,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let c = env.condition(svc).await;
        if let Some((status, reason, msg)) = &c
            && want(status, reason, msg)
        {
            return Ok(msg.clone());
        }
        if Instant::now() >= deadline {
            bail!("condition of {svc} after {timeout:?}: {c:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn service(name: &str, ips: &str, local: bool, dual: bool) -> serde_json::Value {
    let mut spec = json!({
        "type": "LoadBalancer",
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
        "externalTrafficPolicy": if local { "Local" } else { "Cluster" },
    });
    if dual {
        spec["ipFamilyPolicy"] = json!("PreferDualStack");
        spec["ipFamilies"] = json!(["IPv4", "IPv6"]);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS, "annotations": {"ferrolb.io/loadBalancerIPs": ips}},
        "spec": spec,
    })
}

fn l2adv(node_selectors: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "ferrolb.io/v1beta1",
        "kind": "L2Advertisement",
        "metadata": {"name": "lan"},
        "spec": {"nodeSelectors": node_selectors},
    })
}

/// The same advertisement, asking for named interfaces. Applied with the same field manager,
/// so applying [`l2adv`] afterwards removes `interfaces` again.
fn l2adv_on(interfaces: &[&str]) -> serde_json::Value {
    let mut adv = l2adv(json!([]));
    adv["spec"]["interfaces"] = json!(interfaces);
    adv
}

async fn setup() -> anyhow::Result<Env> {
    let speaker_bin = binary("ferrolb-speaker");
    let probe_bin = env!("CARGO_BIN_EXE_lab_probe").to_string();
    let lab = Lab::up(LabOptions {
        nodes: 3,
        kube_proxy: true,
        kubelet: false,
        ..LabOptions::default()
    })
    .await?;
    install_crds(&lab)?;
    let controller = start_host_controller(&lab)?;
    let mut backends = Vec::new();
    for node in lab.nodes() {
        let bind = format!("{}:8080", node.ipv4);
        backends.push(lab.spawn(
            &node.name,
            &[
                &probe_bin,
                "http",
                "--bind",
                &bind,
                "--name",
                &node.name,
                "--seconds",
                "900",
            ],
            &format!("backend-{}", node.name),
        )?);
    }
    let client = lab.client().await?;
    let mut env = Env {
        lab,
        client,
        speakers: BTreeMap::new(),
        _controller: controller,
        _backends: backends,
        speaker_bin,
    };
    apply(
        &env.client,
        &[json!({
            "apiVersion": "ferrolb.io/v1beta1",
            "kind": "IPAddressPool",
            "metadata": {"name": "lan"},
            "spec": {"addresses": ["198.51.100.64/27", "2001:db8::1:0/112"]},
        })],
    )
    .await?;
    apply(&env.client, &[l2adv(json!([]))]).await?;
    for n in env.node_names() {
        env.start_speaker(&n)?;
    }
    Ok(env)
}

type Scenario = for<'a> fn(&'a mut Env) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;

/// Who answers: exactly one ARP reply per request for an allocated IPv4, from the node the
/// speakers agree on (named in the Service condition), the same for IPv6 with ndisc6, and no
/// answer at all for an unallocated IP.
async fn who_answers(env: &mut Env) -> anyhow::Result<()> {
    apply(
        &env.client,
        &[service("web", &format!("{WEB_V4},{WEB_V6}"), false, true)],
    )
    .await?;
    env.set_endpoints("web", &["node-1"]).await?;
    let msg = poll_condition(env, "web", Duration::from_secs(20), |s, _, m| {
        s == "True" && m.contains(WEB_V4) && m.contains(WEB_V6) && !m.contains("not announced")
    })
    .await?;
    let v4 = env.announcer_v4(WEB_V4)?;
    ensure!(
        msg.contains(&format!("{WEB_V4} announced by {v4}")),
        "ARP answered by {v4} but the condition says {msg:?}"
    );
    let v6_mac = poll("ndisc6 answer", Duration::from_secs(5), || {
        env.ndisc(WEB_V6)
    })
    .await?;
    let v6 = env
        .node_of_mac(&v6_mac)
        .ok_or_else(|| anyhow!("NA from unknown MAC {v6_mac}"))?;
    ensure!(
        msg.contains(&format!("{WEB_V6} announced by {v6}")),
        "NDP answered by {v6} but the condition says {msg:?}"
    );
    let none = env.arping(UNALLOCATED, 2)?;
    ensure!(
        none.is_empty(),
        "unallocated {UNALLOCATED} was answered: {none:?}"
    );
    println!("who answers: {WEB_V4} by {v4}, {WEB_V6} by {v6}; condition: {msg}");
    Ok(())
}

/// Points `web`'s endpoint at a node other than `avoid`, returns it.
async fn backend_elsewhere(env: &Env, avoid: &str) -> anyhow::Result<String> {
    let backend = env
        .node_names()
        .into_iter()
        .find(|n| n != avoid)
        .ok_or_else(|| anyhow!("no other node"))?;
    env.set_endpoints("web", &[&backend]).await?;
    // kube-proxy programs the new endpoint within a second or so.
    let want = format!("hello from {backend}");
    poll(
        "curl reaching the new backend",
        Duration::from_secs(10),
        || Ok(env.curl(WEB_V4).ok().filter(|b| *b == want)),
    )
    .await?;
    Ok(backend)
}

/// Failover: the announcing node goes away (link down and its speaker SIGKILLed). Another node
/// answers, the client's neighbour entry moves to its MAC without expiring, curl works before
/// and after (kube-proxy in the nodes), and the node coming back does not snatch the IP.
async fn failover_link_down_and_kill(env: &mut Env) -> anyhow::Result<()> {
    let old = env.announcer_v4(WEB_V4)?;
    let backend = backend_elsewhere(env, &old).await?;
    let before = env.curl(WEB_V4)?;
    ensure!(
        before == format!("hello from {backend}"),
        "curl before: {before}"
    );
    let old_mac = env.mac_of(&old);
    ensure!(
        env.neigh_mac(WEB_V4)?.as_deref() == Some(old_mac.as_str()),
        "client's entry is not {old_mac}"
    );
    let t0 = Instant::now();
    env.link(&old, false)?;
    env.kill_speaker(&old);
    let new_mac = poll(
        "the client's neighbour entry to move",
        FAILOVER_BOUND,
        || Ok(env.neigh_mac(WEB_V4)?.filter(|m| *m != old_mac)),
    )
    .await?;
    let moved_after = t0.elapsed();
    let new = env
        .node_of_mac(&new_mac)
        .ok_or_else(|| anyhow!("unknown MAC {new_mac}"))?;
    let after = poll("curl after fail-over", FAILOVER_BOUND, || {
        Ok(env.curl(WEB_V4).ok())
    })
    .await?;
    ensure!(
        after == format!("hello from {backend}"),
        "curl after: {after}"
    );
    ensure!(
        env.announcer_v4(WEB_V4)? == new,
        "ARP not answered by {new} alone"
    );
    poll_condition(env, "web", Duration::from_secs(10), |_, _, m| {
        m.contains(&format!("{WEB_V4} announced by {new}"))
    })
    .await?;
    println!("fail-over {old} -> {new}: client's neighbour entry moved after {moved_after:?}");
    // The node comes back: it must not take the IP back.
    env.link(&old, true)?;
    env.start_speaker(&old)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = env.announcer_v4(WEB_V4)?;
    ensure!(
        now == new,
        "{old} came back and took the IP from {new} (now {now})"
    );
    Ok(())
}

/// A hung speaker (SIGSTOP) is failed over; when it resumes it does not answer or take the
/// IP back.
async fn failover_sigstop(env: &mut Env) -> anyhow::Result<()> {
    let old = env.announcer_v4(WEB_V4)?;
    let old_mac = env.mac_of(&old);
    // Refresh the client's entry to the current announcer.
    let _ = env.exec("client", &["ping", "-c", "1", "-W", "1", WEB_V4]);
    let t0 = Instant::now();
    env.signal_speaker(&old, Signal::Stop)?;
    let result = async {
        let new_mac = poll(
            "the client's neighbour entry to move",
            FAILOVER_BOUND,
            || Ok(env.neigh_mac(WEB_V4)?.filter(|m| *m != old_mac)),
        )
        .await?;
        let new = env
            .node_of_mac(&new_mac)
            .ok_or_else(|| anyhow!("unknown MAC {new_mac}"))?;
        println!("SIGSTOP fail-over {old} -> {new} in {:?}", t0.elapsed());
        ensure!(
            env.announcer_v4(WEB_V4)? == new,
            "ARP not answered by {new} alone while {old} is stopped"
        );
        Ok(new)
    }
    .await;
    env.signal_speaker(&old, Signal::Cont)?;
    let new = result?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = env.announcer_v4(WEB_V4)?;
    ensure!(
        now == new,
        "resumed {old} took the IP back from {new} (now {now})"
    );
    Ok(())
}

/// Both cores loaded (more CPU hogs than cores) for 8 s: no speaker declares a peer dead, the
/// announcer stays, and ARP is still answered exactly once.
async fn busy_cores(env: &mut Env) -> anyhow::Result<()> {
    let timeouts = |env: &Env| -> f64 {
        env.node_names()
            .iter()
            .map(|n| {
                let url = format!("http://{}:7473/metrics", env.ipv4_of(n));
                env.exec(n, &["curl", "-s", "-m", "2", &url])
                    .map(|o| {
                        String::from_utf8_lossy(&o.stdout)
                            .lines()
                            .filter(|l| {
                                l.starts_with("ferrolb_speaker_peer_down_total{reason=\"timeout\"}")
                            })
                            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                            .sum::<f64>()
                    })
                    .unwrap_or(f64::NAN)
            })
            .sum()
    };
    let before_owner = env.announcer_v4(WEB_V4)?;
    let before = timeouts(env);
    ensure!(before.is_finite(), "speaker metrics unreadable");
    let mut hogs = Vec::new();
    for i in 0..3 {
        hogs.push(env.lab.spawn(
            "client",
            &["timeout", "8", "sha256sum", "/dev/zero"],
            &format!("hog-{i}"),
        )?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut checks = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(6) {
        let now = env.announcer_v4(WEB_V4)?;
        ensure!(
            now == before_owner,
            "announcer moved from {before_owner} to {now} under load"
        );
        checks += 1;
    }
    for mut h in hogs {
        let _ = h.wait_timeout(Duration::from_secs(5));
    }
    let after = timeouts(env);
    println!("busy cores: {checks} ARP checks, peer timeouts {before} -> {after}");
    ensure!(
        after == before,
        "peers declared dead under CPU load: {before} -> {after}"
    );
    Ok(())
}

/// externalTrafficPolicy Local: only a node with a local endpoint announces, and the announcer
/// follows the endpoint.
async fn local_policy(env: &mut Env) -> anyhow::Result<()> {
    apply(&env.client, &[service("loc", LOC_V4, true, false)]).await?;
    for target in ["node-3", "node-2", "node-1"] {
        env.set_endpoints("loc", &[target]).await?;
        let got = poll(
            &format!("{LOC_V4} announced by {target}"),
            Duration::from_secs(10),
            || Ok(env.announcer_v4(LOC_V4).ok().filter(|n| n == target)),
        )
        .await?;
        let body = poll(
            "curl through the local endpoint",
            Duration::from_secs(10),
            || Ok(env.curl(LOC_V4).ok()),
        )
        .await?;
        ensure!(
            body == format!("hello from {got}"),
            "Local traffic served by {body:?}, not {got}"
        );
    }
    // No endpoint at all: nobody answers.
    env.set_endpoints("loc", &[]).await?;
    poll(
        "no answer without endpoints",
        Duration::from_secs(10),
        || Ok(env.arping(LOC_V4, 1)?.is_empty().then_some(())),
    )
    .await?;
    poll_condition(env, "loc", Duration::from_secs(10), |s, _, _| s == "False").await?;
    Ok(())
}

/// Configuration: an L2Advertisement node selector moves the IP off a node, and so does the
/// exclude-from-external-load-balancers label.
async fn config_changes(env: &mut Env) -> anyhow::Result<()> {
    let first = env.announcer_v4(WEB_V4)?;
    apply(
        &env.client,
        &[l2adv(json!([{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "NotIn", "values": [first]}]}]))],
    )
    .await?;
    let second = poll(
        "the IP to leave the deselected node",
        Duration::from_secs(10),
        || Ok(env.announcer_v4(WEB_V4).ok().filter(|n| *n != first)),
    )
    .await?;
    let label = "node.kubernetes.io/exclude-from-external-load-balancers=";
    let out = env.lab.kubectl(&["label", "node", &second, label])?;
    ensure!(out.status.success(), "label: {}", text(&out));
    let third = poll(
        "the IP to leave the excluded node",
        Duration::from_secs(10),
        || {
            Ok(env
                .announcer_v4(WEB_V4)
                .ok()
                .filter(|n| *n != first && *n != second))
        },
    )
    .await?;
    println!("config: {first} deselected -> {second} excluded -> {third}");
    let out = env.lab.kubectl(&[
        "label",
        "node",
        &second,
        "node.kubernetes.io/exclude-from-external-load-balancers-",
    ])?;
    ensure!(out.status.success(), "unlabel: {}", text(&out));
    apply(&env.client, &[l2adv(json!([]))]).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(
        env.announcer_v4(WEB_V4)? == third,
        "restoring the configuration moved the IP"
    );
    Ok(())
}

/// An L2Advertisement naming an interface no node has (`eth9`): every speaker reports it cannot
/// place the IP, so nobody is elected, nothing answers ARP or NDP, the Service's condition turns
/// False/NoUsableInterface naming eth9 and the nodes (instead of the last announcer's words
/// staying up), each node's gauge counts the IPs, and a Warning InterfaceUnusable regarding a
/// Node is recorded. Restoring the advertisement announces the IP again from one node.
async fn unusable_interface(env: &mut Env) -> anyhow::Result<()> {
    const GAUGE: &str = "ferrolb_speaker_ips_without_interface";
    let before = env.announcer_v4(WEB_V4)?;
    apply(&env.client, &[l2adv_on(&["eth9"])]).await?;
    let result = async {
        let msg = poll_condition(env, "web", Duration::from_secs(10), |s, r, m| {
            s == "False" && r == "NoUsableInterface" && m.contains("wanted eth9")
        })
        .await?;
        for n in env.node_names() {
            ensure!(msg.contains(&n), "{n} not named in {msg:?}");
        }
        // Nobody answers, for IPv4 or IPv6, and it stays so.
        poll("ARP to go unanswered", Duration::from_secs(5), || {
            Ok(env.arping(WEB_V4, 1)?.is_empty().then_some(()))
        })
        .await?;
        let late = env.arping(WEB_V4, 3)?;
        ensure!(late.is_empty(), "{WEB_V4} answered without eth9: {late:?}");
        let na = env.ndisc(WEB_V6)?;
        ensure!(na.is_none(), "{WEB_V6} answered without eth9: {na:?}");
        // web's two IPs, on every node.
        let gauges = env.gauge(GAUGE);
        ensure!(
            gauges.iter().all(|g| *g >= 2.0),
            "{GAUGE} per node: {gauges:?}"
        );
        let events: Api<Event> = Api::namespaced(env.client.clone(), NS);
        let note = eventually(
            "a Warning InterfaceUnusable regarding a Node",
            Duration::from_secs(10),
            || async {
                let list = events.list(&Default::default()).await?;
                Ok(list.items.into_iter().find_map(|e| {
                    let regards_node =
                        e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Node");
                    let note = e.note.unwrap_or_default();
                    (regards_node
                        && e.type_.as_deref() == Some("Warning")
                        && e.reason.as_deref() == Some("InterfaceUnusable")
                        && note.contains("eth9")
                        && note.contains(WEB_V4))
                    .then_some(note)
                }))
            },
        )
        .await?;
        println!("unusable interface: condition {msg:?}; event {note:?}");
        Ok(())
    }
    .await;
    // Restore whatever happened above, so the next scenarios find web announced.
    apply(&env.client, &[l2adv(json!([]))]).await?;
    result?;
    let after = poll(
        "the IP to be announced again",
        Duration::from_secs(10),
        || Ok(env.announcer_v4(WEB_V4).ok()),
    )
    .await?;
    poll_condition(env, "web", Duration::from_secs(10), |s, r, m| {
        s == "True" && r == "Announced" && m.contains(&format!("{WEB_V4} announced by {after}"))
    })
    .await?;
    let gauges = poll(
        "the gauge back to 0 on every node",
        Duration::from_secs(5),
        || {
            let g = env.gauge(GAUGE);
            Ok(g.iter().all(|v| *v == 0.0).then_some(g))
        },
    )
    .await?;
    println!(
        "unusable interface: announced by {before}, then nobody, then {after}; {GAUGE} {gauges:?}"
    );
    Ok(())
}

/// A Service stops being a LoadBalancer (`type: ClusterIP`): within a bound its
/// `ferrolb.io/Announced` condition is gone (removed by server-side apply of the speakers' field
/// manager with no condition, so `managedFields` keep no speaker entry for it), nothing answers
/// ARP for the old IP, exactly one status write did it with one ConditionRemoved event, and
/// nothing is written afterwards.
async fn no_longer_a_load_balancer(env: &mut Env) -> anyhow::Result<()> {
    const GONE_V4: &str = "198.51.100.72";
    let api: Api<Service> = Api::namespaced(env.client.clone(), NS);
    apply(&env.client, &[service("gone", GONE_V4, false, false)]).await?;
    env.set_endpoints("gone", &["node-2"]).await?;
    let result = async {
        let msg = poll_condition(env, "gone", Duration::from_secs(20), |s, r, _| {
            s == "True" && r == "Announced"
        })
        .await?;
        let owner = poll("ARP answers for gone", Duration::from_secs(5), || {
            Ok(env.announcer_v4(GONE_V4).ok())
        })
        .await?;
        // Settle: no write in flight for anyone before counting.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = env.status_writes();
        let mut cluster_ip = service("gone", GONE_V4, false, false);
        cluster_ip["spec"]["type"] = json!("ClusterIP");
        if let Some(spec) = cluster_ip["spec"].as_object_mut() {
            spec.remove("externalTrafficPolicy");
        }
        let t0 = Instant::now();
        apply(&env.client, &[cluster_ip]).await?;
        eventually(
            "the Announced condition to go",
            Duration::from_secs(10),
            || async { Ok(env.condition("gone").await.is_none().then_some(())) },
        )
        .await?;
        let gone_after = t0.elapsed();
        poll("ARP for the old IP to go unanswered", Duration::from_secs(5), || {
            Ok(env.arping(GONE_V4, 1)?.is_empty().then_some(()))
        })
        .await?;
        let late = env.arping(GONE_V4, 3)?;
        ensure!(late.is_empty(), "{GONE_V4} still answered: {late:?}");
        let svc = api.get("gone").await?;
        ensure!(
            svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ClusterIP"),
            "type is not ClusterIP"
        );
        let speaker_fields: Vec<String> = svc
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter(|m| m.manager.as_deref() == Some("ferrolb-speaker"))
            .map(|m| {
                m.fields_v1
                    .as_ref()
                    .map(|f| f.0.to_string())
                    .unwrap_or_default()
            })
            .collect();
        ensure!(
            speaker_fields.iter().all(|f| !f.contains("ferrolb.io/Announced")),
            "the speakers' field manager still owns the condition: {speaker_fields:?}"
        );
        // Steady state: nothing more is written.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = env.status_writes();
        ensure!(
            env.condition("gone").await.is_none(),
            "the condition came back"
        );
        ensure!(
            after - before == 1.0,
            "expected exactly one status write (the removal), got {before} -> {after}"
        );
        let events: Api<Event> = Api::namespaced(env.client.clone(), NS);
        let about_gone = || async {
            let list = events.list(&Default::default()).await?;
            anyhow::Ok(
                list.items
                    .into_iter()
                    .filter(|e| {
                        e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("gone")
                    })
                    .map(|e| {
                        (
                            e.reason.unwrap_or_default(),
                            e.note.unwrap_or_default(),
                            e.reporting_instance.unwrap_or_default(),
                        )
                    })
                    .collect::<Vec<_>>(),
            )
        };
        let note = eventually(
            "a ConditionRemoved event regarding gone",
            Duration::from_secs(5),
            || async {
                Ok(about_gone().await?.into_iter().find_map(|(reason, note, _)| {
                    (reason == "ConditionRemoved" && note.contains("no longer of type LoadBalancer"))
                        .then_some(note)
                }))
            },
        )
        .await;
        let note = match note {
            Ok(n) => n,
            Err(e) => {
                let logs: Vec<String> = env
                    .speakers
                    .values()
                    .flat_map(|p| {
                        p.log()
                            .lines()
                            .filter(|l| l.contains("gone") || l.contains("event"))
                            .map(str::to_string)
                            .collect::<Vec<_>>()
                    })
                    .collect();
                bail!(
                    "{e:#}; events regarding gone: {:?}; speaker logs:\n{}",
                    about_gone().await?,
                    logs.join("\n")
                )
            }
        };
        // The mechanism the removal relies on, checked against the API server alone: applying
        // a status without conditions deletes the conditions only that field manager owned and
        // leaves another manager's.
        let cond = |ty: &str| {
            json!({"type": ty, "status": "True", "reason": "Probe", "message": "probe",
                   "lastTransitionTime": "2026-01-01T00:00:00Z"})
        };
        let body = |status: serde_json::Value| {
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "gone", "namespace": NS}, "status": status})
        };
        for (manager, status) in [
            ("ferrolb-e2e-other", json!({"conditions": [cond("example.com/Other")]})),
            ("ferrolb-e2e-probe", json!({"conditions": [cond("example.com/Probe")]})),
            ("ferrolb-e2e-probe", json!({})),
        ] {
            api.patch_status("gone", &PatchParams::apply(manager), &Patch::Apply(body(status)))
                .await?;
        }
        let types: Vec<String> = api
            .get("gone")
            .await?
            .status
            .and_then(|s| s.conditions)
            .into_iter()
            .flatten()
            .map(|c| c.type_)
            .collect();
        ensure!(
            types.iter().any(|t| t == "example.com/Other")
                && !types.iter().any(|t| t == "example.com/Probe"),
            "apply of no condition: conditions left {types:?}"
        );
        println!(
            "no longer a LoadBalancer: {msg:?} by {owner}; condition gone after {gone_after:?}, status writes {before} -> {after}; event {note:?}; probe conditions left {types:?}"
        );
        Ok(())
    }
    .await;
    let _ = api.delete("gone", &DeleteParams::default()).await;
    result
}

/// The default interface choice follows the IP's subnet: node-1 gets a second NIC (a veth to
/// the client, `eth1` on 198.51.100.240/28 and 2001:db8:2::/64), and an IP of that subnet is
/// answered on it (ARP and NDP, from eth1's MAC) as well as on eth0, while an IP outside it is
/// not answered on eth1. The NIC and the pool are removed afterwards.
async fn second_nic_subnet(env: &mut Env) -> anyhow::Result<()> {
    const NIC2_V4: &str = "198.51.100.245";
    const NIC2_V6: &str = "2001:db8:2::45";
    const ETH1_MAC: &str = "02:fb:01:00:00:11";
    let client_ns = env.lab.netns("client")?;
    let run = |host: &str, cmd: &[&str]| -> anyhow::Result<()> {
        let out = env.exec(host, cmd)?;
        ensure!(out.status.success(), "{host}: {cmd:?}: {}", text(&out));
        Ok(())
    };
    run(
        "node-1",
        &[
            "ip",
            "link",
            "add",
            "eth1",
            "address",
            ETH1_MAC,
            "type",
            "veth",
            "peer",
            "name",
            "lb1",
            "address",
            "02:fb:01:00:00:c8",
            "netns",
            &client_ns,
        ],
    )?;
    let result = async {
        for (host, dev, v4, v6) in [
            ("node-1", "eth1", "198.51.100.241/28", "2001:db8:2::11/64"),
            ("client", "lb1", "198.51.100.254/28", "2001:db8:2::200/64"),
        ] {
            run(host, &["ip", "addr", "add", v4, "dev", dev])?;
            run(host, &["ip", "addr", "add", v6, "dev", dev, "nodad"])?;
            run(host, &["ip", "link", "set", dev, "up"])?;
        }
        apply(
            &env.client,
            &[json!({
                "apiVersion": "ferrolb.io/v1beta1",
                "kind": "IPAddressPool",
                "metadata": {"name": "nic2"},
                "spec": {"addresses": ["198.51.100.244/30", "2001:db8:2::40/124"]},
            })],
        )
        .await?;
        apply(
            &env.client,
            &[service("nic2", &format!("{NIC2_V4},{NIC2_V6}"), true, true)],
        )
        .await?;
        env.set_endpoints("nic2", &["node-1"]).await?;
        // loc (outside eth1's subnet) is announced by node-1 too.
        env.set_endpoints("loc", &["node-1"]).await?;
        let msg = poll_condition(env, "nic2", Duration::from_secs(20), |s, r, m| {
            s == "True"
                && r == "Announced"
                && m.contains(&format!("{NIC2_V4} announced by node-1 on eth0,eth1"))
                && m.contains(&format!("{NIC2_V6} announced by node-1 on eth0,eth1"))
        })
        .await?;
        let loc = poll_condition(env, "loc", Duration::from_secs(10), |s, _, m| {
            s == "True" && m == "announced by node-1 on eth0"
        })
        .await?;
        let on_eth1 = poll("ARP answers on the second NIC", Duration::from_secs(5), || {
            let macs = env.arping_on("lb1", NIC2_V4, 3)?;
            Ok((macs.len() == 3).then_some(macs))
        })
        .await?;
        ensure!(
            on_eth1.iter().all(|m| m == ETH1_MAC),
            "ARP on lb1 for {NIC2_V4} answered by {on_eth1:?}, not {ETH1_MAC}"
        );
        ensure!(
            env.announcer_v4(NIC2_V4)? == "node-1",
            "{NIC2_V4} not answered by node-1 on eth0"
        );
        let na = poll("NDP answer on the second NIC", Duration::from_secs(5), || {
            env.ndisc_on("lb1", NIC2_V6)
        })
        .await?;
        ensure!(na == ETH1_MAC, "NA on lb1 for {NIC2_V6} from {na}, not {ETH1_MAC}");
        // Not for others: loc's IP is announced by node-1, but not on eth1.
        ensure!(
            env.announcer_v4(LOC_V4)? == "node-1",
            "{LOC_V4} not answered by node-1"
        );
        let stray = env.arping_on("lb1", LOC_V4, 3)?;
        ensure!(stray.is_empty(), "{LOC_V4} answered on eth1: {stray:?}");
        println!("second NIC: nic2 {msg:?}, loc {loc:?}; {NIC2_V4} and {NIC2_V6} answered on eth1, {LOC_V4} not");
        Ok(())
    }
    .await;
    // Leave things as the next scenarios expect: no nic2, loc without endpoints, one NIC.
    let api: Api<Service> = Api::namespaced(env.client.clone(), NS);
    let _ = api.delete("nic2", &DeleteParams::default()).await;
    let _ = env.set_endpoints("loc", &[]).await;
    let pools: Api<ferrolb_crds::IPAddressPool> = Api::all(env.client.clone());
    let _ = pools.delete("nic2", &DeleteParams::default()).await;
    let cleanup = run("node-1", &["ip", "link", "del", "eth1"]);
    result?;
    cleanup
}

/// Rolling restart of every speaker (SIGTERM, wait, start, next) while the client connects to
/// the IP every 10 ms through kube-proxy: not one connect may fail (no SYN lost for good, none
/// refused). Reported apart, not failed: a handshake that straddles the instant the client's
/// neighbour entry moves (SYN via the old announcer, ACK via the new one) completes and is then
/// reset, because the new node's kube-proxy has no conntrack state for it and sends the ACK to
/// a backend that never saw the SYN; that is inherent to moving an IP with `Cluster` policy.
async fn rolling_restart(env: &mut Env) -> anyhow::Result<()> {
    let probe_bin = env!("CARGO_BIN_EXE_lab_probe");
    let target = format!("{WEB_V4}:80");
    let mut probe = env.lab.spawn(
        "client",
        &[
            probe_bin,
            "tcp-probe",
            "--target",
            &target,
            "--interval-ms",
            "10",
            "--timeout-ms",
            "3000",
            "--seconds",
            "14",
        ],
        "tcp-probe-rolling",
    )?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for node in env.node_names() {
        let owner = env.announcer_v4(WEB_V4).unwrap_or_default();
        println!(
            "rolling restart: stopping {node} at unix ms {} (announcer {owner})",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        );
        env.stop_speaker(&node)?;
        env.start_speaker(&node)?;
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    let status = probe.wait_timeout(Duration::from_secs(20));
    ensure!(status.is_some(), "tcp-probe did not finish");
    let out = probe.log();
    let summary = out
        .lines()
        .find(|l| l.starts_with("attempts="))
        .unwrap_or_default()
        .to_string();
    println!("rolling restart: {summary}");
    for l in out
        .lines()
        .filter(|l| l.starts_with("slow ") || l.starts_with("fail "))
    {
        println!("  {l}");
    }
    ensure!(
        summary.contains(" failed=0"),
        "connects failed during the rolling restart:\n{}",
        tail(&out, 20)
    );
    let attempts: u64 = summary
        .split_whitespace()
        .next()
        .and_then(|a| a.strip_prefix("attempts="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    ensure!(
        attempts >= 500,
        "too few connects to mean anything: {summary}"
    );
    Ok(())
}

/// API server stopped: a node failure still fails over.
async fn apiserver_outage(env: &mut Env) -> anyhow::Result<()> {
    let old = env.announcer_v4(WEB_V4)?;
    let backend = backend_elsewhere(env, &old).await?;
    env.lab.stop_apiserver()?;
    let result = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        env.link(&old, false)?;
        env.kill_speaker(&old);
        let new = poll("a fail-over without the API server", FAILOVER_BOUND, || {
            Ok(env.announcer_v4(WEB_V4).ok().filter(|n| *n != old))
        })
        .await?;
        let body = poll("curl without the API server", FAILOVER_BOUND, || {
            Ok(env.curl(WEB_V4).ok())
        })
        .await?;
        ensure!(body == format!("hello from {backend}"), "curl: {body}");
        println!("API server down: fail-over {old} -> {new}, curl ok");
        Ok(())
    }
    .await;
    env.lab.start_apiserver().await?;
    env.link(&old, true)?;
    env.start_speaker(&old)?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaker_in_the_lab() {
    let started = Instant::now();
    let mut env = setup().await.expect("lab, controller, speakers");
    let scenarios: Vec<(&str, Scenario)> = vec![
        ("who answers", |e| Box::pin(who_answers(e))),
        ("fail-over: link down + SIGKILL, curl", |e| {
            Box::pin(failover_link_down_and_kill(e))
        }),
        ("fail-over: SIGSTOP", |e| Box::pin(failover_sigstop(e))),
        ("busy cores: no spurious fail-over", |e| {
            Box::pin(busy_cores(e))
        }),
        ("externalTrafficPolicy Local", |e| Box::pin(local_policy(e))),
        ("config: node selector and exclude label", |e| {
            Box::pin(config_changes(e))
        }),
        ("config: interface no node has", |e| {
            Box::pin(unusable_interface(e))
        }),
        ("type changed to ClusterIP: condition removed once", |e| {
            Box::pin(no_longer_a_load_balancer(e))
        }),
        ("second NIC: the subnet rule", |e| {
            Box::pin(second_nic_subnet(e))
        }),
        ("rolling restart loses no connect", |e| {
            Box::pin(rolling_restart(e))
        }),
        ("API server stopped", |e| Box::pin(apiserver_outage(e))),
    ];
    let mut failed = Vec::new();
    for (name, run) in scenarios {
        let t = Instant::now();
        match run(&mut env).await {
            Ok(()) => println!("ok   {name} ({:.1?})", t.elapsed()),
            Err(e) => {
                println!("FAIL {name} ({:.1?}): {e:#}", t.elapsed());
                failed.push(format!("{name}: {e:#}"));
            }
        }
    }
    // Every speaker must still be running (none crashed along the way).
    for (node, p) in env.speakers.iter_mut() {
        if !p.is_running() {
            failed.push(format!("speaker on {node} exited:\n{}", tail(&p.log(), 20)));
        }
    }
    if !failed.is_empty() {
        for (node, p) in &env.speakers {
            println!("--- speaker {node} log tail:\n{}", tail(&p.log(), 15));
        }
    }
    let api: Api<Service> = Api::namespaced(env.client.clone(), NS);
    for s in ["web", "loc"] {
        let _ = api.delete(s, &DeleteParams::default()).await;
    }
    let run_dir = env.lab.run_dir().to_path_buf();
    let report = env.lab.down();
    assert!(
        report.problems.is_empty(),
        "teardown: {:?}",
        report.problems
    );
    assert!(
        !Path::new(&run_dir).exists(),
        "{} left behind",
        run_dir.display()
    );
    println!("speaker lab test took {:.1?}", started.elapsed());
    assert!(
        failed.is_empty(),
        "{} scenario(s) failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// The ServiceAccount the idle test's speakers authenticate as: the lab's API server audits
/// every request made with ServiceAccount credentials (and none of the lab's own), so the audit
/// log holds exactly the speakers' requests.
const IDLE_SA_NS: &str = "ferrolb-system";
const IDLE_SA: &str = "speaker";
/// Services announced while idle (`FERROLB_IDLE_SERVICES` changes it, at most 132: the pool).
const IDLE_SERVICES: usize = 6;
/// Watches one speaker keeps in L2 mode: Services, EndpointSlices, Nodes, IPAddressPools and
/// L2Advertisements for the plan, hostPort Pods on its node for the forwarder check.
const WATCHES_PER_SPEAKER: usize = 6;

/// One request the API server audited.
#[derive(Debug, Clone)]
struct Audited {
    /// The node whose address the request came from (`?` if none).
    node: String,
    verb: String,
    /// `resource[/subresource]`.
    resource: String,
    code: i64,
}

impl Audited {
    fn is_write(&self) -> bool {
        audit::is_write_verb(&self.verb)
    }
}

/// Requests by ServiceAccount `user` completed between `from` and `to` (a watch is audited when
/// it ends), from the lab's audit log and its rotated copies; none if the log cannot be read.
fn audited(
    lab: &Lab,
    user: &str,
    from: k8s_openapi::jiff::Timestamp,
    to: k8s_openapi::jiff::Timestamp,
) -> Vec<Audited> {
    let node_of: BTreeMap<String, String> = lab
        .nodes()
        .iter()
        .map(|n| (n.ipv4.to_string(), n.name.clone()))
        .collect();
    let events = audit::read_user(&lab.audit_log(), user)
        .map(|log| log.events)
        .unwrap_or_default();
    events
        .into_iter()
        .filter(|e| audit::within(e.stage_us, from, to))
        .map(|e| Audited {
            node: e
                .source_ips
                .first()
                .and_then(|ip| node_of.get(ip))
                .cloned()
                .unwrap_or_else(|| "?".into()),
            resource: e.resource_path(),
            code: i64::from(e.code),
            verb: e.verb,
        })
        .collect()
}

/// `apiserver_request_total` by `verb resource[/subresource]`, over every client.
fn apiserver_requests(lab: &Lab) -> anyhow::Result<BTreeMap<String, f64>> {
    let out = lab.kubectl(&["get", "--raw", "/metrics"])?;
    ensure!(out.status.success(), "/metrics: {}", text(&out));
    let mut by = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let sub = label("subresource");
        let key = format!(
            "{} {}{}",
            label("verb"),
            label("resource"),
            if sub.is_empty() {
                String::new()
            } else {
                format!("/{sub}")
            }
        );
        *by.entry(key).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    Ok(by)
}

/// A speaker's own counters of API requests (by kind), ownership changes and peers declared
/// dead, from its /metrics (empty when unreadable).
fn speaker_counters(lab: &Lab, node: &str, ip: &str) -> BTreeMap<String, f64> {
    let url = format!("http://{ip}:7473/metrics");
    let Ok(out) = lab.exec(node, &["curl", "-s", "-m", "2", &url]) else {
        return BTreeMap::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.starts_with("ferrolb_speaker_api_requests_total")
                || l.starts_with("ferrolb_speaker_ownership_changes_total")
                || l.starts_with("ferrolb_speaker_peer_down_total")
        })
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((
                k.trim_start_matches("ferrolb_speaker_").to_string(),
                v.parse().ok()?,
            ))
        })
        .collect()
}

/// `after - before`, keeping only what changed.
fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect()
}

fn per_minute(m: &BTreeMap<String, f64>, seconds: f64) -> String {
    if m.is_empty() {
        return "0/min: none".into();
    }
    let total: f64 = m.values().sum();
    let mut parts: Vec<(f64, &String)> = m.iter().map(|(k, v)| (*v, k)).collect();
    parts.sort_by(|a, b| b.0.total_cmp(&a.0));
    format!(
        "{:.1}/min: {}",
        total * 60.0 / seconds,
        parts
            .iter()
            .map(|(v, k)| format!("{k} {:.1}", v * 60.0 / seconds))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Idle speakers make no API writes and no polling: with Services announced and settled, the
/// speakers' requests (every one audited, as they run with a ServiceAccount) over a quiet window
/// (`FERROLB_IDLE_SECONDS`, default 60) are only watch re-opens, at most one per watch (kube-rs
/// asks for 290 s watches), and at most one re-list per watch; not a single create, update,
/// patch or delete. For context the test prints the API server's `apiserver_request_total` over
/// all clients in the same window, and with `FERROLB_IDLE_COMPARE=1` the same with the speakers
/// stopped; `FERROLB_IDLE_HOGS=N` runs N CPU hogs (in the client namespace) through the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_speakers_make_no_writes() {
    let seconds: u64 = std::env::var("FERROLB_IDLE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let compare = std::env::var("FERROLB_IDLE_COMPARE").is_ok_and(|v| v == "1");
    let hogs: usize = std::env::var("FERROLB_IDLE_HOGS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let services: usize = std::env::var("FERROLB_IDLE_SERVICES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(IDLE_SERVICES);
    let lab = Lab::up(LabOptions {
        nodes: 3,
        kube_proxy: false,
        kubelet: false,
        ..LabOptions::default()
    })
    .await
    .expect("lab");
    let result = idle_run(&lab, seconds, services, hogs, compare).await;
    let run_dir = lab.run_dir().to_path_buf();
    let report = lab.down();
    assert!(
        report.problems.is_empty(),
        "teardown: {:?}",
        report.problems
    );
    assert!(
        !Path::new(&run_dir).exists(),
        "{} left behind",
        run_dir.display()
    );
    if let Err(e) = result {
        panic!("{e:#}");
    }
}

async fn idle_run(
    lab: &Lab,
    seconds: u64,
    services: usize,
    hogs: usize,
    compare: bool,
) -> anyhow::Result<()> {
    install_crds(lab)?;
    let _controller = start_host_controller(lab)?;
    let client = lab.client().await?;
    apply(
        &client,
        &[
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": IDLE_SA_NS}}),
            json!({"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": IDLE_SA, "namespace": IDLE_SA_NS}}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": "ferrolb-idle-speaker"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                   "subjects": [{"kind": "ServiceAccount", "name": IDLE_SA, "namespace": IDLE_SA_NS}]}),
            json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
                   "metadata": {"name": "lan"},
                   "spec": {"addresses": ["198.51.100.64/27", "198.51.100.100-198.51.100.199"]}}),
            l2adv(json!([])),
        ],
    )
    .await?;
    let kubeconfig = lab
        .service_account_kubeconfig(IDLE_SA_NS, IDLE_SA)?
        .display()
        .to_string();
    let speaker_bin = binary("ferrolb-speaker");
    let started = k8s_openapi::jiff::Timestamp::now();
    let mut speakers = BTreeMap::new();
    for n in lab.nodes() {
        let metrics = format!("{}:7473", n.ipv4);
        let p = lab.spawn(
            &n.name,
            &[
                &speaker_bin,
                "--node-name",
                &n.name,
                "--kubeconfig",
                &kubeconfig,
                "--metrics-addr",
                &metrics,
                "--log-level",
                "info",
            ],
            &format!("speaker-{}", n.name),
        )?;
        speakers.insert(n.name.clone(), p);
    }
    let mut objs = Vec::new();
    let mut names = Vec::new();
    for i in 0..services {
        let name = format!("idle-{i}");
        let node = &lab.nodes()[i % lab.nodes().len()];
        objs.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"type": "LoadBalancer",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
        }));
        objs.push(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-lab"), "namespace": NS,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [node.ipv4.to_string()], "nodeName": node.name,
                           "conditions": {"ready": true, "serving": true}}],
        }));
        names.push(name);
    }
    apply(&client, &objs).await?;
    let api: Api<Service> = Api::namespaced(client.clone(), NS);
    eventually(
        "every idle Service announced",
        Duration::from_secs(120),
        || async {
            let list = api.list(&Default::default()).await?;
            let announced = list
                .items
                .iter()
                .filter(|s| {
                    s.metadata
                        .name
                        .as_deref()
                        .is_some_and(|n| names.iter().any(|m| m == n))
                })
                .filter(|s| {
                    s.status
                        .as_ref()
                        .and_then(|st| st.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c.type_ == "ferrolb.io/Announced" && c.status == "True")
                        })
                })
                .count();
            Ok((announced == names.len()).then_some(()))
        },
    )
    .await?;
    // Let the last writes and events land before the window opens.
    tokio::time::sleep(Duration::from_secs(10)).await;

    let user = format!("system:serviceaccount:{IDLE_SA_NS}:{IDLE_SA}");
    let from = k8s_openapi::jiff::Timestamp::now();
    // The audit log sees the speakers: each listed and wrote on its way up (the conditions).
    let startup = audited(lab, &user, started, from);
    for n in lab.nodes() {
        let lists = startup
            .iter()
            .filter(|a| a.node == n.name && a.verb == "list")
            .count();
        ensure!(
            lists >= WATCHES_PER_SPEAKER,
            "the audit log shows {lists} lists by the speaker on {} at start-up: {startup:?}",
            n.name
        );
    }
    let startup_writes = startup.iter().filter(|a| a.is_write()).count();
    ensure!(
        startup_writes > 0,
        "the audit log shows no condition write by any speaker at start-up"
    );
    let counters = |lab: &Lab| -> Vec<BTreeMap<String, f64>> {
        lab.nodes()
            .iter()
            .map(|n| speaker_counters(lab, &n.name, &n.ipv4.to_string()))
            .collect()
    };
    let c0 = counters(lab);
    let a0 = apiserver_requests(lab)?;
    let limit = (seconds + 2).to_string();
    let mut hog_procs = Vec::new();
    for i in 0..hogs {
        hog_procs.push(lab.spawn(
            "client",
            &["timeout", &limit, "sha256sum", "/dev/zero"],
            &format!("idle-hog-{i}"),
        )?);
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    for mut h in hog_procs {
        if h.wait_timeout(Duration::from_secs(5)).is_none() {
            let _ = h.kill();
        }
    }
    let a1 = apiserver_requests(lab)?;
    let c1 = counters(lab);
    let to = k8s_openapi::jiff::Timestamp::now();
    let seen = audited(lab, &user, from, to);
    let all = delta(&a0, &a1);
    let secs = seconds as f64;

    let mut by_node: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for a in &seen {
        *by_node
            .entry(a.node.clone())
            .or_default()
            .entry(format!("{} {} {}", a.verb, a.resource, a.code))
            .or_insert(0.0) += 1.0;
    }
    println!(
        "idle for {seconds} s ({hogs} CPU hogs), {services} Services announced, 3 speakers ({WATCHES_PER_SPEAKER} watches each; \
         {} requests and {startup_writes} writes audited at start-up):",
        startup.len()
    );
    for (i, n) in lab.nodes().iter().enumerate() {
        let m = by_node.remove(&n.name).unwrap_or_default();
        println!("  speaker {} (audit): {}", n.name, per_minute(&m, secs));
        println!(
            "  speaker {} (own counters, changes in the window): {:?}",
            n.name,
            delta(&c0[i], &c1[i])
        );
    }
    for (n, m) in &by_node {
        println!("  from {n} (audit): {}", per_minute(m, secs));
    }
    println!(
        "  API server, all clients (apiserver_request_total, 2 scrapes included): {}",
        per_minute(&all, secs)
    );

    let mut problems = Vec::new();
    let writes: Vec<&Audited> = seen.iter().filter(|a| a.is_write()).collect();
    if !writes.is_empty() {
        problems.push(format!(
            "{} API writes by idle speakers: {writes:?}",
            writes.len()
        ));
    }
    // kube-rs opens 290 s watches: in a window no longer than that, each watch ends (and is
    // re-opened) at most once; a re-list follows only a watch that could not resume.
    let windows = (secs / 290.0).ceil().max(1.0) as usize;
    for n in lab.nodes() {
        let mine = seen.iter().filter(|a| a.node == n.name);
        let watches = mine.clone().filter(|a| a.verb == "watch").count();
        let reads = mine.filter(|a| !a.is_write() && a.verb != "watch").count();
        if watches > WATCHES_PER_SPEAKER * windows {
            problems.push(format!(
                "speaker {}: {watches} watches ended in {seconds} s (at most {} expected)",
                n.name,
                WATCHES_PER_SPEAKER * windows
            ));
        }
        if reads > WATCHES_PER_SPEAKER * windows {
            problems.push(format!(
                "speaker {}: {reads} lists/gets in {seconds} s (at most {} expected)",
                n.name,
                WATCHES_PER_SPEAKER * windows
            ));
        }
    }
    let unknown = seen.iter().filter(|a| a.node == "?").count();
    if unknown > 0 {
        problems.push(format!(
            "{unknown} requests by the speakers' account from no node's address"
        ));
    }

    if compare {
        for (n, mut p) in std::mem::take(&mut speakers) {
            p.signal(Signal::Term)?;
            if p.wait_timeout(Duration::from_secs(5)).is_none() {
                problems.push(format!("speaker on {n} did not stop after SIGTERM"));
                let _ = p.kill();
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let b0 = apiserver_requests(lab)?;
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let b1 = apiserver_requests(lab)?;
        println!(
            "  API server, all clients, speakers stopped: {}",
            per_minute(&delta(&b0, &b1), secs)
        );
    }
    for (n, p) in speakers.iter_mut() {
        if !p.is_running() {
            problems.push(format!("speaker on {n} exited:\n{}", tail(&p.log(), 20)));
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}
