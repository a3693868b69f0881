//! Forwarder mode on real nodes: the chart's controller and speakers as pods, a node pool from
//! values, backends as real Deployments, real kube-proxy on every node, and traffic from the
//! client namespace to the nodes' own addresses.
//!
//! One story per kube-proxy mode (iptables, then nftables). The iptables story covers the
//! issue's whole list: Cluster and Local policy (with the client's address seen by the backend),
//! a node reaching its own published address, conflicts (a host listener, a second Service on
//! the same port, a deny-listed port), dual stack, node changes (NotReady, the exclude label, a
//! changed InternalIP) and IPVS. The nftables story runs the data-path checks again. A third
//! test checks that the API server itself refuses malformed node pools.
//!
//! Needs root, the lab's tools and `cargo build --workspace --bins` (for the image).

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use ferrolb_e2e::{
    apply, eventually, ferrolb_image, helm, install_crds, stdout_of, text, wait_rollout, workspace,
};
use ferrolb_lab::{Lab, LabOptions, ProxyMode, Signal};
use k8s_openapi::api::core::v1::{Event, Service};
use kube::api::{Api, ListParams};
use serde_json::json;

const NS: &str = "ferrolb-system";
const APP: &str = "shop";
/// Generous bound for anything the components do in response to a change (the speakers read
/// sockets every 2 s; node status and watches add a little).
const T: Duration = Duration::from_secs(60);

struct Env {
    lab: Lab,
    client: kube::Client,
}

impl Env {
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
                "--set",
                "addressPool.create=true",
                "--set",
                "addressPool.name=nodes",
                "--set",
                "addressPool.nodeAddresses.enabled=true",
            ],
        )?;
        wait_rollout(&lab, NS, "daemonset/ferrolb-speaker", T)?;
        wait_rollout(&lab, NS, "deployment/ferrolb-controller", T)?;
        lab.kubectl(&["create", "namespace", APP])?;
        let env = Env { lab, client };
        // Backends: one per node (Cluster policy), and one on node-2 only (Local policy).
        apply(
            &env.client,
            &[backend("web", 3, None), backend("solo", 1, Some("node-2"))],
        )
        .await?;
        wait_rollout(&env.lab, APP, "deployment/web", T)?;
        wait_rollout(&env.lab, APP, "deployment/solo", T)?;
        Ok(env)
    }

    async fn service(&self, name: &str) -> anyhow::Result<Service> {
        Ok(Api::<Service>::namespaced(self.client.clone(), APP)
            .get(name)
            .await?)
    }

    /// The published addresses, as text, in the order the status lists them.
    async fn ingress(&self, name: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .service(name)
            .await?
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| i.ip)
            .collect())
    }

    /// `(status, reason, message)` of `ferrolb.io/ForwarderReady`.
    async fn ready(&self, name: &str) -> anyhow::Result<Option<(String, String, String)>> {
        Ok(self
            .service(name)
            .await?
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == ferrolb_crds::conditions::FORWARDER_READY)
            .map(|c| (c.status, c.reason, c.message)))
    }

    /// Waits until Service `name` publishes exactly `want` and its condition has `reason`.
    async fn published(&self, name: &str, want: &[&str], reason: &str) -> anyhow::Result<String> {
        let what = format!("{name} published on {want:?} with {reason}");
        eventually(&what, T, || async {
            let have = self.ingress(name).await?;
            let cond = self.ready(name).await?;
            match &cond {
                Some((_, r, m)) if have == want && r == reason => Ok(Some(m.clone())),
                _ => bail!("ingress {have:?}, condition {cond:?}"),
            }
        })
        .await
    }

    /// HTTP through `addr` (`ip:port`) from `host`; the backend's answer.
    fn curl(&self, host: &str, addr: &str) -> anyhow::Result<String> {
        let url = format!("http://{addr}/");
        let out = self
            .lab
            .exec(host, &["curl", "-s", "-g", "--max-time", "3", &url])?;
        ensure!(
            out.status.success(),
            "curl {url} from {host}: {}",
            text(&out)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Retries [`Env::curl`] briefly: kube-proxy programs its rules a moment after the status.
    async fn curl_eventually(&self, host: &str, addr: &str) -> anyhow::Result<String> {
        eventually(&format!("an answer through {addr} from {host}"), T, || {
            std::future::ready(Ok(self
                .curl(host, addr)
                .ok()
                .filter(|b| b.starts_with("pod="))))
        })
        .await
    }

    async fn warning_events(&self, service: &str, reason: &str) -> anyhow::Result<Vec<String>> {
        Ok(Api::<Event>::namespaced(self.client.clone(), APP)
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| {
                e.involved_object.name.as_deref() == Some(service)
                    && e.reason.as_deref() == Some(reason)
            })
            .filter_map(|e| e.message)
            .collect())
    }
}

/// A Deployment of the lab's backend image (HTTP on 8080), spread over nodes or pinned to one.
fn backend(name: &str, replicas: i32, node: Option<&str>) -> serde_json::Value {
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
            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}
        }],
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

/// A LoadBalancer Service for `app` on `port` (target 8080).
fn service(name: &str, app: &str, port: u16, local: bool, dual: bool) -> serde_json::Value {
    let mut spec = json!({
        "type": "LoadBalancer",
        "selector": {"app": app},
        "ports": [{"name": "http", "port": port, "targetPort": 8080, "protocol": "TCP"}],
    });
    if local {
        spec["externalTrafficPolicy"] = json!("Local");
    }
    if dual {
        spec["ipFamilyPolicy"] = json!("PreferDualStack");
        spec["ipFamilies"] = json!(["IPv4", "IPv6"]);
    }
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": APP},
        "spec": spec,
    })
}

const ALL_V4: [&str; 3] = ["198.51.100.11", "198.51.100.12", "198.51.100.13"];

/// Cluster policy: every node's address reaches a backend.
async fn cluster_policy(env: &Env) -> anyhow::Result<String> {
    apply(&env.client, &[service("web", "web", 8080, false, false)]).await?;
    let msg = env.published("web", &ALL_V4, "AllNodes").await?;
    let mut answers = Vec::new();
    for ip in ALL_V4 {
        answers.push(env.curl_eventually("client", &format!("{ip}:8080")).await?);
    }
    Ok(format!("{msg}; answers: {answers:?}"))
}

/// Local policy: only the endpoint's node, and the backend sees the client's own address.
async fn local_policy(env: &Env) -> anyhow::Result<String> {
    apply(
        &env.client,
        &[service("solo-local", "solo", 8082, true, false)],
    )
    .await?;
    env.published("solo-local", &["198.51.100.12"], "AllNodes")
        .await?;
    let body = env.curl_eventually("client", "198.51.100.12:8082").await?;
    ensure!(
        body.contains("node=node-2 src=198.51.100.200:"),
        "the backend did not see the client's address: {body}"
    );
    Ok(format!("published on node-2 only; {body}"))
}

/// A node reaches its own published address (kube-proxy's OUTPUT rules).
async fn node_to_itself(env: &Env) -> anyhow::Result<String> {
    let body = env.curl_eventually("node-1", "198.51.100.11:8080").await?;
    Ok(body)
}

/// A host process on node-2's port takes node-2 out, in words and with an event; it comes back
/// when the process stops.
async fn host_listener(env: &Env) -> anyhow::Result<String> {
    let bin = ferrolb_e2e::binary("ferrolb-lab");
    let mut listener = env.lab.spawn(
        "node-2",
        &[
            &bin, "backend", "--", "--http", "0", "--udp", "0", "--tcp", "8080", "--name",
            "squatter",
        ],
        "squatter",
    )?;
    let result = async {
        let msg = env
            .published(
                "web",
                &["198.51.100.11", "198.51.100.13"],
                "PartiallyAvailable",
            )
            .await?;
        ensure!(
            msg.contains(
                "node-2 (port 8080/TCP unavailable: a host process listens on [::]:8080 (TCP))"
            ),
            "the condition does not name node-2's listener: {msg}"
        );
        let events = eventually("a PortConflict event on web", T, || async {
            let e = env.warning_events("web", "PortConflict").await?;
            Ok((!e.is_empty()).then_some(e))
        })
        .await?;
        Ok(format!("{msg}; event: {}", events[0]))
    }
    .await;
    listener.kill()?;
    let report: String = result?;
    env.published("web", &ALL_V4, "AllNodes").await?;
    Ok(format!("{report}; node-2 back once the listener stopped"))
}

/// A second Service on the same port loses on every node and says why; both get an event.
async fn second_service(env: &Env) -> anyhow::Result<String> {
    apply(&env.client, &[service("web2", "web", 8080, false, false)]).await?;
    let msg = env.published("web2", &[], "PortConflict").await?;
    ensure!(msg.contains("Service shop/web holds it"), "{msg}");
    eventually("a PortConflict event on web (the holder)", T, || async {
        let e = env.warning_events("web", "PortConflict").await?;
        Ok(e.iter().any(|m| m.contains("shop/web2")).then_some(()))
    })
    .await?;
    env.lab.kubectl(&["-n", APP, "delete", "service", "web2"])?;
    Ok(msg)
}

/// A deny-listed port is refused everywhere.
async fn deny_listed(env: &Env) -> anyhow::Result<String> {
    apply(&env.client, &[service("ssh", "web", 22, false, false)]).await?;
    let msg = env.published("ssh", &[], "PortConflict").await?;
    ensure!(msg.contains("port 22 is on the deny-list"), "{msg}");
    env.lab.kubectl(&["-n", APP, "delete", "service", "ssh"])?;
    Ok(msg)
}

/// Dual stack: IPv4 and IPv6 node addresses, in `ipFamilies` order, and IPv6 traffic works.
async fn dual_stack(env: &Env) -> anyhow::Result<String> {
    apply(&env.client, &[service("web6", "web", 8090, false, true)]).await?;
    let want = [
        "198.51.100.11",
        "198.51.100.12",
        "198.51.100.13",
        "2001:db8::11",
        "2001:db8::12",
        "2001:db8::13",
    ];
    env.published("web6", &want, "AllNodes").await?;
    let body = env.curl_eventually("client", "[2001:db8::13]:8090").await?;
    env.lab.kubectl(&["-n", APP, "delete", "service", "web6"])?;
    Ok(format!("6 addresses; over IPv6: {body}"))
}

/// Node changes are followed: the exclude label, NotReady, a changed InternalIP.
async fn node_changes(env: &Env) -> anyhow::Result<String> {
    let two = ["198.51.100.11", "198.51.100.12"];
    env.lab.kubectl(&[
        "label",
        "node",
        "node-3",
        "node.kubernetes.io/exclude-from-external-load-balancers=",
    ])?;
    env.published("web", &two, "AllNodes").await?;
    env.lab.kubectl(&[
        "label",
        "node",
        "node-3",
        "node.kubernetes.io/exclude-from-external-load-balancers-",
    ])?;
    env.published("web", &ALL_V4, "AllNodes").await?;

    // The kubelet is stopped so that it does not correct what the test writes into the Node.
    let kubelet = env
        .lab
        .state()
        .process("kubelet-node-3")
        .map(|p| p.id.pid)
        .ok_or_else(|| anyhow!("no kubelet-node-3 in the lab's state"))?;
    ferrolb_lab::process::signal_pid(kubelet, Signal::Stop)?;
    let result = async {
        stdout_of(
            "mark node-3 NotReady",
            env.lab.kubectl(&[
                "patch", "node", "node-3", "--subresource=status", "--type=strategic", "-p",
                r#"{"status":{"conditions":[{"type":"Ready","status":"False","reason":"FerrolbTest","message":"the test says so"}]}}"#,
            ])?,
        )?;
        let msg = env.published("web", &two, "AllNodes").await?;
        ensure!(msg.contains("node-3 (not Ready)"), "{msg}");
        // A new InternalIP, really on the node, replaces the old one in the Service.
        let out = env.lab.exec("node-3", &["ip", "addr", "add", "198.51.100.53/24", "dev", "eth0"])?;
        ensure!(out.status.success(), "{}", text(&out));
        stdout_of(
            "change node-3's InternalIP",
            env.lab.kubectl(&[
                "patch", "node", "node-3", "--subresource=status", "--type=merge", "-p",
                r#"{"status":{"addresses":[{"type":"InternalIP","address":"198.51.100.53"},{"type":"Hostname","address":"node-3"}],"conditions":[{"type":"Ready","status":"True","reason":"FerrolbTest","message":"ready again"}]}}"#,
            ])?,
        )?;
        env.published("web", &["198.51.100.11", "198.51.100.12", "198.51.100.53"], "AllNodes")
            .await?;
        let body = env.curl_eventually("client", "198.51.100.53:8080").await?;
        Ok(format!("NotReady left out; new InternalIP published and answering ({body})"))
    }
    .await;
    ferrolb_lab::process::signal_pid(kubelet, Signal::Cont)?;
    let report = result?;
    let _ = env.lab.exec(
        "node-3",
        &["ip", "addr", "del", "198.51.100.53/24", "dev", "eth0"],
    );
    // The kubelet reports its own addresses again.
    env.published("web", &ALL_V4, "AllNodes").await?;
    Ok(report)
}

/// kube-proxy in IPVS mode (its kube-ipvs0 interface on a node): nothing of a kube-proxy
/// pool is published, while a pool the speakers forward (`ipMode: Proxy`) keeps serving
/// through their userspace proxy.
async fn ipvs(env: &Env) -> anyhow::Result<String> {
    apply(
        &env.client,
        &[
            json!({
                "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
                "metadata": {"name": "proxied"},
                "spec": {"autoAssign": false, "nodeAddresses": {"forwarding": "Speaker"}},
            }),
            {
                let mut s = service("web-p", "web", 8085, false, false);
                s["metadata"]["annotations"] = json!({"ferrolb.io/address-pool": "proxied"});
                s
            },
        ],
    )
    .await?;
    env.published("web-p", &ALL_V4, "AllNodes").await?;
    let mode = env
        .service("web-p")
        .await?
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|l| l.ingress)
        .and_then(|i| i.first().and_then(|e| e.ip_mode.clone()));
    ensure!(
        mode.as_deref() == Some("Proxy"),
        "ipMode {mode:?}, want Proxy"
    );
    let through_speaker = env.curl_eventually("client", "198.51.100.11:8085").await?;

    let out = env.lab.exec(
        "node-1",
        &["ip", "link", "add", "kube-ipvs0", "type", "bridge"],
    )?;
    ensure!(out.status.success(), "{}", text(&out));
    let result = async {
        let msg = env.published("web", &[], "UnsupportedProxyMode").await?;
        ensure!(msg.contains("kube-ipvs0 on node-1"), "{msg}");
        env.published("web-p", &ALL_V4, "AllNodes").await?;
        let still = env.curl_eventually("client", "198.51.100.12:8085").await?;
        Ok(format!(
            "{msg}; the speaker-forwarded pool serves on: {still}"
        ))
    }
    .await;
    let _ = env.lab.exec("node-1", &["ip", "link", "del", "kube-ipvs0"]);
    let report = result?;
    env.published("web", &ALL_V4, "AllNodes").await?;
    Ok(format!("ipMode Proxy answered {through_speaker}; {report}"))
}

fn report(step: &str, outcome: anyhow::Result<String>) -> anyhow::Result<()> {
    let what = outcome.with_context(|| format!("step `{step}`"))?;
    println!("{step}: {what}");
    Ok(())
}

async fn logs(env: &Env) -> String {
    let mut out = String::new();
    for (ns, what) in [
        (NS, "daemonset/ferrolb-speaker"),
        (NS, "deployment/ferrolb-controller"),
    ] {
        if let Ok(o) = env.lab.kubectl(&[
            "-n",
            ns,
            "logs",
            what,
            "--tail=40",
            "--all-containers",
            "--prefix",
        ]) {
            out.push_str(&String::from_utf8_lossy(&o.stdout));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarder_mode_with_iptables() {
    let env = Env::up(ProxyMode::Iptables)
        .await
        .expect("lab with the chart");
    let story = async {
        report("Cluster policy", cluster_policy(&env).await)?;
        report("Local policy", local_policy(&env).await)?;
        report("a node to its own address", node_to_itself(&env).await)?;
        report("a host listener on node-2", host_listener(&env).await)?;
        report("a second Service on the port", second_service(&env).await)?;
        report("a deny-listed port", deny_listed(&env).await)?;
        report("dual stack", dual_stack(&env).await)?;
        report("node changes", node_changes(&env).await)?;
        report("IPVS", ipvs(&env).await)
    }
    .await;
    if let Err(e) = story {
        panic!("{e:#}\n{}", logs(&env).await);
    }
    let r = env.lab.down();
    assert!(r.is_clean(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarder_mode_with_nftables() {
    let env = Env::up(ProxyMode::Nftables)
        .await
        .expect("lab with the chart");
    let story = async {
        report("Cluster policy (nftables)", cluster_policy(&env).await)?;
        report("Local policy (nftables)", local_policy(&env).await)?;
        report(
            "a node to its own address (nftables)",
            node_to_itself(&env).await,
        )?;
        report(
            "a host listener on node-2 (nftables)",
            host_listener(&env).await,
        )
    }
    .await;
    if let Err(e) = story {
        panic!("{e:#}\n{}", logs(&env).await);
    }
    let r = env.lab.down();
    assert!(r.is_clean(), "{r:?}");
}

/// The API server refuses a pool with both `addresses` and `nodeAddresses`, with neither, and
/// with a malformed CIDR, each with a message in words.
#[tokio::test]
async fn malformed_node_pools_are_refused_by_the_api_server() {
    let lab = Lab::up(LabOptions {
        nodes: 1,
        kubelet: false,
        ..LabOptions::default()
    })
    .await
    .expect("lab up");
    install_crds(&lab).expect("CRDs");
    let client = lab.client().await.expect("client");
    let cases = [
        (
            json!({"addresses": ["198.51.100.0/24"], "nodeAddresses": {}}),
            "addresses and nodeAddresses exclude each other",
        ),
        (json!({"autoAssign": true}), "a pool needs addresses"),
        (
            json!({"nodeAddresses": {"cidrs": ["198.51.100.0/33"]}}),
            "\"198.51.100.0/33\" is not a CIDR",
        ),
        (
            json!({"nodeAddresses": {"addressType": "Public"}}),
            "Unsupported value: \"Public\"",
        ),
    ];
    let api: Api<kube::api::DynamicObject> = Api::all_with(
        client,
        &kube::api::ApiResource::erase::<ferrolb_crds::IPAddressPool>(&()),
    );
    for (i, (spec, want)) in cases.iter().enumerate() {
        let obj: kube::api::DynamicObject = serde_json::from_value(json!({
            "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": format!("bad-{i}")}, "spec": spec,
        }))
        .expect("object");
        let err = api
            .create(&Default::default(), &obj)
            .await
            .expect_err(&format!("{spec} was accepted"));
        assert!(err.to_string().contains(want), "{spec}: {err}");
        println!("refused: {spec} -> {want}");
    }
    // The good one is accepted.
    let good: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": "nodes"},
        "spec": {"nodeAddresses": {"addressType": "PreferExternalIP", "cidrs": ["2001:db8::/64"]}},
    }))
    .expect("object");
    api.create(&Default::default(), &good)
        .await
        .expect("a node pool is accepted");
    let r = lab.down();
    assert!(r.is_clean(), "{r:?}");
}
