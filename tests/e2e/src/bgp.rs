//! What BGP mode's lab test (`tests/bgp.rs`) and benchmark (`bin/bench_bgp.rs`) share: a lab
//! with a router (BIRD 2) between the LAN and a client network, the controller on the host,
//! one `ferrolb-speaker --bgp` process per node (admin kubeconfig, stand-in Node objects,
//! kube-proxy in every node namespace) and an HTTP/UDP backend per node; plus the helpers
//! that read the router's kernel routes and BIRD's view.
//!
//! Included with `#[path]` by both (so `src/lib.rs` is untouched). Nothing here decides a
//! test's outcome; it starts things, reads things and waits with deadlines.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use ferrolb_e2e::{HostProcess, apply, binary, install_crds, stdout_of};
use ferrolb_lab::{BirdConfig, BirdPeer, Lab, LabOptions, LabProcess, Router, Signal};
use serde_json::json;

/// Our AS (the nodes').
pub const NODE_AS: u32 = 64512;
/// The router's AS.
pub const ROUTER_AS: u32 = 64513;
/// The BGP pool's IPv4 block (behind the router, not on the LAN, not the Service CIDR).
pub const POOL_V4: &str = "192.0.2.192/27";
/// The BGP pool's IPv6 block.
pub const POOL_V6: &str = "2001:db8:100::/120";
/// Namespace of the test Services and of the MD5 Secret.
pub const NS: &str = "default";

/// A lab running BGP mode against BIRD.
pub struct BgpLab {
    /// The lab.
    pub lab: Lab,
    /// Admin client.
    pub client: kube::Client,
    /// The router.
    pub router: Router,
    /// BIRD, while it runs.
    pub bird: Option<LabProcess>,
    /// BIRD's configuration in force.
    pub bird_conf: BirdConfig,
    /// Speakers by node.
    pub speakers: BTreeMap<String, LabProcess>,
    /// Extra speaker flags.
    pub speaker_flags: Vec<String>,
    speaker_bin: String,
    _controller: HostProcess,
    _backends: Vec<LabProcess>,
    started: u32,
}

impl BgpLab {
    /// Brings up `nodes` stand-in nodes with kube-proxy, the router, the CRDs, the controller
    /// and a backend per node (HTTP on :8080, UDP echo on :9000). Speakers and BIRD are
    /// started by the caller.
    pub async fn up(nodes: usize, speaker_flags: &[&str]) -> anyhow::Result<BgpLab> {
        let probe = binary("lab_probe");
        let lab = Lab::up(LabOptions {
            nodes,
            kube_proxy: true,
            kubelet: false,
            router: true,
            ..LabOptions::default()
        })
        .await?;
        install_crds(&lab)?;
        stdout_of(
            "kubectl wait for the BGP CRDs",
            lab.kubectl(&[
                "wait",
                "--for=condition=Established",
                "--timeout=30s",
                "crd/bgppeers.ferrolb.io",
                "crd/bgpadvertisements.ferrolb.io",
                "crd/communities.ferrolb.io",
                "crd/bfdprofiles.ferrolb.io",
                "crd/bgpsessionstates.ferrolb.io",
            ])?,
        )?;
        let controller = start_controller(&lab)?;
        let mut backends = Vec::new();
        for n in lab.nodes() {
            let http = format!("{}:8080", n.ipv4);
            backends.push(lab.spawn(
                &n.name,
                &[
                    &probe,
                    "http",
                    "--bind",
                    &http,
                    "--name",
                    &n.name,
                    "--seconds",
                    "7200",
                ],
                &format!("backend-{}", n.name),
            )?);
            let udp = "0.0.0.0:9000";
            backends.push(lab.spawn(
                &n.name,
                &[
                    &probe,
                    "udp-echo",
                    "--bind",
                    udp,
                    "--name",
                    &n.name,
                    "--seconds",
                    "7200",
                ],
                &format!("echo-{}", n.name),
            )?);
        }
        let client = lab.client().await?;
        let router = lab
            .router()
            .ok_or_else(|| anyhow!("the lab has no router"))?;
        let peers = lab
            .nodes()
            .iter()
            .enumerate()
            .flat_map(|(i, n)| {
                [
                    BirdPeer {
                        name: format!("node_{}", i + 1),
                        address: IpAddr::V4(n.ipv4),
                        asn: NODE_AS,
                        password: None,
                        bfd: true,
                    },
                    BirdPeer {
                        name: format!("node_{}_v6", i + 1),
                        address: IpAddr::V6(n.ipv6),
                        asn: NODE_AS,
                        password: None,
                        bfd: false,
                    },
                ]
            })
            .collect();
        let bird_conf = BirdConfig {
            local_as: ROUTER_AS,
            hold_time: 9,
            bfd_interval_ms: 300,
            bfd_multiplier: 3,
            graceful_restart: true,
            bfd_graceful: false,
            import_v4: vec!["192.0.2.192/26{26,32}".into()],
            import_v6: vec!["2001:db8:100::/48{48,128}".into()],
            peers,
        };
        apply(
            &client,
            &[json!({
                "apiVersion": "ferrolb.io/v1beta1",
                "kind": "IPAddressPool",
                "metadata": {"name": "bgp"},
                "spec": {"addresses": [POOL_V4, POOL_V6]},
            })],
        )
        .await?;
        Ok(BgpLab {
            lab,
            client,
            router,
            bird: None,
            bird_conf,
            speakers: BTreeMap::new(),
            speaker_flags: speaker_flags.iter().map(|s| s.to_string()).collect(),
            speaker_bin: binary("ferrolb-speaker"),
            _controller: controller,
            _backends: backends,
            started: 0,
        })
    }

    /// Node names.
    pub fn nodes(&self) -> Vec<String> {
        self.lab.nodes().iter().map(|n| n.name.clone()).collect()
    }

    /// A node's IPv4 address.
    pub fn ipv4_of(&self, node: &str) -> IpAddr {
        self.lab
            .nodes()
            .iter()
            .find(|n| n.name == node)
            .map(|n| IpAddr::V4(n.ipv4))
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    /// A node's IPv6 address.
    pub fn ipv6_of(&self, node: &str) -> IpAddr {
        self.lab
            .nodes()
            .iter()
            .find(|n| n.name == node)
            .map(|n| IpAddr::V6(n.ipv6))
            .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
    }

    /// The node whose LAN address is `ip`.
    pub fn node_of(&self, ip: IpAddr) -> Option<String> {
        self.lab
            .nodes()
            .iter()
            .find(|n| IpAddr::V4(n.ipv4) == ip || IpAddr::V6(n.ipv6) == ip)
            .map(|n| n.name.clone())
    }

    /// Starts (or restarts) BIRD with the current configuration.
    pub fn start_bird(&mut self) -> anyhow::Result<()> {
        self.bird = None;
        self.bird = Some(self.router.start_bird(&self.bird_conf)?);
        Ok(())
    }

    /// Loads a changed configuration into the running BIRD.
    pub fn reconfigure_bird(&self) -> anyhow::Result<()> {
        let out = self.router.reconfigure(&self.bird_conf)?;
        ensure!(
            out.contains("Reconfigured") || out.contains("Reconfiguration in progress"),
            "birdc configure: {out}"
        );
        Ok(())
    }

    /// Starts the speaker on `node`.
    pub fn start_speaker(&mut self, node: &str) -> anyhow::Result<()> {
        let kubeconfig = self.lab.node_kubeconfig().display().to_string();
        let metrics = format!("{}:7473", self.ipv4_of(node));
        self.started += 1;
        let mut argv: Vec<String> = [
            self.speaker_bin.as_str(),
            "--node-name",
            node,
            "--kubeconfig",
            &kubeconfig,
            "--metrics-addr",
            &metrics,
            "--log-level",
            "info",
            "--bgp",
            "--bgp-secret-namespace",
            NS,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.extend(self.speaker_flags.iter().cloned());
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        let p = self
            .lab
            .spawn(node, &refs, &format!("speaker-{node}-{}", self.started))?;
        self.speakers.insert(node.to_string(), p);
        Ok(())
    }

    /// Starts every node's speaker.
    pub fn start_speakers(&mut self) -> anyhow::Result<()> {
        for n in self.nodes() {
            self.start_speaker(&n)?;
        }
        Ok(())
    }

    /// SIGTERM and wait for the graceful exit (at most `within`).
    pub fn stop_speaker(&mut self, node: &str, within: Duration) -> anyhow::Result<()> {
        let mut p = self
            .speakers
            .remove(node)
            .ok_or_else(|| anyhow!("no speaker on {node}"))?;
        p.signal(Signal::Term)?;
        let status = p.wait_timeout(within);
        ensure!(
            status.is_some_and(|s| s.success()),
            "speaker on {node} did not exit cleanly after SIGTERM ({status:?}); log:\n{}",
            tail(&p.log(), 20)
        );
        Ok(())
    }

    /// Sends `sig` to the speaker on `node`.
    pub fn signal_speaker(&mut self, node: &str, sig: Signal) -> anyhow::Result<()> {
        self.speakers
            .get_mut(node)
            .ok_or_else(|| anyhow!("no speaker on {node}"))?
            .signal(sig)?;
        Ok(())
    }

    /// A Service `name` on the BGP pool: port 80 → 8080 (TCP) and 9000 (UDP).
    pub fn service(name: &str, local: bool, dual: bool) -> serde_json::Value {
        let mut spec = json!({
            "type": "LoadBalancer",
            "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                {"name": "echo", "port": 9000, "targetPort": 9000, "protocol": "UDP"},
            ],
            "externalTrafficPolicy": if local { "Local" } else { "Cluster" },
        });
        if dual {
            spec["ipFamilyPolicy"] = json!("PreferDualStack");
            spec["ipFamilies"] = json!(["IPv4", "IPv6"]);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": NS, "annotations": {"ferrolb.io/address-pool": "bgp"}},
            "spec": spec,
        })
    }

    /// The Service's endpoints: the backends on `nodes`.
    pub async fn set_endpoints(&self, svc: &str, nodes: &[&str]) -> anyhow::Result<()> {
        let endpoints: Vec<serde_json::Value> = nodes
            .iter()
            .map(|n| {
                json!({
                    "addresses": [self.ipv4_of(n).to_string()],
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
                "ports": [
                    {"name": "http", "port": 8080, "protocol": "TCP"},
                    {"name": "echo", "port": 9000, "protocol": "UDP"},
                ],
                "endpoints": endpoints,
            })],
        )
        .await
    }

    /// The Service's load-balancer IPs, once it has `want` of them.
    pub async fn service_ips(&self, svc: &str, want: usize) -> anyhow::Result<Vec<IpAddr>> {
        let api: kube::Api<k8s_openapi::api::core::v1::Service> =
            kube::Api::namespaced(self.client.clone(), NS);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ips: Vec<IpAddr> = api
                .get(svc)
                .await
                .ok()
                .and_then(|s| s.status?.load_balancer?.ingress)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|i| i.ip?.parse().ok())
                .collect();
            if ips.len() >= want {
                return Ok(ips);
            }
            if Instant::now() > deadline {
                bail!("{svc} has IPs {ips:?} after 20 s, want {want}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The router's next hops for `ip`, as node names (unknown gateways as their address).
    pub fn next_hop_nodes(&self, ip: IpAddr) -> anyhow::Result<Vec<String>> {
        Ok(self
            .router
            .next_hops(ip)?
            .into_iter()
            .map(|h| self.node_of(h).unwrap_or_else(|| h.to_string()))
            .collect())
    }

    /// Waits until the router's next hops for `ip` are exactly `want` (node names, sorted).
    pub async fn wait_next_hops(
        &self,
        ip: IpAddr,
        want: &[&str],
        within: Duration,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut last = Vec::new();
        while started.elapsed() < within {
            last = self.next_hop_nodes(ip)?;
            if last.iter().map(String::as_str).eq(want.iter().copied()) {
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("next hops for {ip}: {last:?} after {within:?}, want {want:?}")
    }

    /// BIRD's state of protocol `name` (`up`, `start`…) and its info column.
    pub fn bird_protocol(&self, name: &str) -> anyhow::Result<(String, String)> {
        let out = self.router.birdc(&["show", "protocols", name])?;
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .ok_or_else(|| anyhow!("birdc: no protocol {name}: {out}"))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let state = words.get(3).copied().unwrap_or_default().to_string();
        let info = words.get(6..).map(|w| w.join(" ")).unwrap_or_default();
        Ok((state, info))
    }

    /// Waits until BIRD's protocol `name` is Established.
    pub async fn wait_established(&self, name: &str, within: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut last = (String::new(), String::new());
        while started.elapsed() < within {
            last = self.bird_protocol(name)?;
            if last.1.starts_with("Established") {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("BIRD protocol {name} is {last:?} after {within:?}")
    }

    /// A BGPSessionState's status (JSON), if the object exists.
    pub async fn session_state(&self, node: &str, peer: &str) -> Option<serde_json::Value> {
        let out = self
            .lab
            .kubectl(&[
                "get",
                "bgpsessionstate",
                &format!("{node}-{peer}"),
                "-o",
                "json",
            ])
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(v.get("status")?.clone())
    }

    /// Waits until `check` holds for the BGPSessionState of (`node`, `peer`).
    pub async fn wait_state(
        &self,
        node: &str,
        peer: &str,
        within: Duration,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        let started = Instant::now();
        let mut last = None;
        while started.elapsed() < within {
            last = self.session_state(node, peer).await;
            if let Some(s) = &last
                && check(s)
            {
                return Ok(s.clone());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("BGPSessionState {node}-{peer} after {within:?} is not {what}: {last:?}")
    }

    /// `curl` from the client behind the router; the body.
    pub fn curl(&self, ip: IpAddr, local_port: u16) -> anyhow::Result<String> {
        let url = match ip {
            IpAddr::V4(a) => format!("http://{a}/"),
            IpAddr::V6(a) => format!("http://[{a}]/"),
        };
        let port = local_port.to_string();
        let out =
            self.router
                .exec_client(&["curl", "-s", "-m", "2", "--local-port", &port, &url])?;
        ensure!(
            out.status.success(),
            "curl {url} from port {port} failed: {}",
            ferrolb_e2e::text(&out)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// A speaker metric summed over nodes (NaN where unreadable).
    pub fn metric(&self, node: &str, name_and_labels: &str) -> Option<f64> {
        let url = format!("http://{}:7473/metrics", self.ipv4_of(node));
        let out = self.lab.exec(node, &["curl", "-s", "-m", "2", &url]).ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name_and_labels))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// Kills BIRD (SIGKILL), if it runs.
    pub fn kill_bird(&mut self) {
        if let Some(mut b) = self.bird.take() {
            let _ = b.kill();
        }
    }

    /// Applies objects.
    pub async fn apply(&self, objs: &[serde_json::Value]) -> anyhow::Result<()> {
        apply(&self.client, objs).await
    }

    /// `kubectl` with the admin kubeconfig; its output (an error unless it succeeded).
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        stdout_of(
            &format!("kubectl {}", args.join(" ")),
            self.lab.kubectl(args)?,
        )
    }

    /// Tears everything down and reports leftovers.
    pub fn down(mut self) -> anyhow::Result<()> {
        self.speakers.clear();
        self.kill_bird();
        let report = self.lab.down();
        ensure!(
            report.problems.is_empty(),
            "teardown: {:?}",
            report.problems
        );
        Ok(())
    }
}

/// `ferrolb-controller --bgp` on the host (admin kubeconfig, no leader election), logging to
/// the lab's `controller` log.
pub fn start_controller(lab: &Lab) -> anyhow::Result<HostProcess> {
    let log = std::fs::File::create(lab.log_path("controller"))?;
    let child = std::process::Command::new(binary("ferrolb-controller"))
        .args([
            "--kubeconfig",
            &lab.kubeconfig().display().to_string(),
            "--metrics-addr",
            "127.0.0.1:0",
            "--bgp",
            "--speaker-namespace",
            NS,
        ])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("start the controller")?;
    Ok(HostProcess(child))
}

/// A BGPPeer to the router on `address` (IPv4 or IPv6).
pub fn peer(name: &str, address: IpAddr, extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({
        "myASN": NODE_AS,
        "peerASN": ROUTER_AS,
        "peerAddress": address.to_string(),
        "holdTime": "9s",
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "ferrolb.io/v1beta1",
        "kind": "BGPPeer",
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// A BFDProfile of 300 ms × 3: a silent peer is down after 900 ms.
pub fn bfd_profile(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "ferrolb.io/v1beta1",
        "kind": "BFDProfile",
        "metadata": {"name": name},
        "spec": {"receiveInterval": 300, "transmitInterval": 300, "detectMultiplier": 3},
    })
}

/// The BGPAdvertisement `bgp` of the lab's pool `bgp`, to every peer.
pub fn advertisement() -> serde_json::Value {
    json!({
        "apiVersion": "ferrolb.io/v1beta1",
        "kind": "BGPAdvertisement",
        "metadata": {"name": "bgp"},
        "spec": {"ipAddressPools": ["bgp"]},
    })
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Context for an error: the log tails of every speaker and of BIRD.
pub fn logs(env: &BgpLab) -> String {
    let mut out = String::new();
    for (n, p) in &env.speakers {
        out.push_str(&format!("--- speaker {n}:\n{}\n", tail(&p.log(), 12)));
    }
    let bird = std::fs::read_to_string(env.router.log_path()).unwrap_or_default();
    out.push_str(&format!("--- bird:\n{}\n", tail(&bird, 20)));
    out
}

/// Percentile `p` (0..=100) of sorted `v`.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[idx.min(v.len() - 1)]
}

/// Reads a Service's IPs as the first of each family.
pub fn by_family(ips: &[IpAddr]) -> (Option<IpAddr>, Option<IpAddr>) {
    (
        ips.iter().copied().find(IpAddr::is_ipv4),
        ips.iter().copied().find(IpAddr::is_ipv6),
    )
}

/// Makes an error message carry the lab's logs.
pub fn with_logs<T>(env: &BgpLab, r: anyhow::Result<T>) -> anyhow::Result<T> {
    r.with_context(|| logs(env))
}
