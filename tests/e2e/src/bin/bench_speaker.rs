//! `make bench-speaker`: what a speaker costs and how its membership behaves, measured on real
//! speaker processes (release build) in lab namespaces, each figure beside a comparator measured
//! in the same run.
//!
//! **Three nodes, 102 Services** (a lab without kubelets or kube-proxy, the controller on the
//! host, one speaker per node, 100 Services with an endpoint each plus `VIP` and `VIP6`):
//! - *CPU idle*: `utime + stime` of each speaker from `/proc/<pid>/stat` over `--window` seconds;
//! - *CPU under a flood*: the same over the same length while the client sends `--flood-pps`
//!   64-byte UDP datagrams to the node announcing `VIP`, at its own address (traffic the speaker
//!   has nothing to do with); the rate is the one counted at that node's `eth0`;
//! - *ARP and NDP reply latency*: the client's packet socket sends an ARP request (a Neighbor
//!   Solicitation) and times the reply, alternating between `VIP` (`VIP6`), answered by the
//!   speaker, and the announcing node's own address, answered by its kernel: the comparator;
//! - *membership traffic*: packets and bytes per second per node, from the speakers' own
//!   counters over the idle window;
//! - *API requests while nothing changes*: the speakers authenticate as a ServiceAccount, so the
//!   API server's audit log holds every request they make; those received from the start of the
//!   idle window to the end of the flood window are counted by verb and resource, beside the
//!   speakers' own `ferrolb_speaker_api_requests_total`.
//!
//! **`--nodes` nodes (50 by default)**, one speaker each (no Service but one): membership
//! traffic and speaker CPU per node, then `--kills` rounds in which one speaker is SIGKILLed
//! and restarted (the next round starts once every speaker sees all its peers again). *Detection* is from the kill to the time stamp of the `peer down` log line
//! of each survivor (first survivor, and the last one: every survivor, the next announcer of
//! any IP included, knows). *False positives*: every `peer down ... reason=timeout` for a peer
//! nobody killed, from the moment all speakers settled to the end, and every stall the
//! speakers logged.
//!
//! Bounded: every wait has a deadline, every helper process a `--seconds`; both labs are torn
//! down at the end (also on error, when the `Lab` is dropped). The flood and the neighbour probe
//! are this same binary run inside the client's namespace (`flood`, `neigh-probe`).

use std::collections::BTreeMap;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail, ensure};
use clap::{Parser, Subcommand};
use ferrolb_e2e::audit;
use ferrolb_e2e::measure::{self, Target};
use ferrolb_e2e::{apply, binary, install_crds, start_host_controller};
use ferrolb_lab::{Lab, LabOptions, LabProcess};
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use serde_json::json;

const VIP: &str = "198.51.100.80";
const VIP6: &str = "2001:db8::1:80";
const POOL_V4: &str = "198.51.100.80-198.51.100.199";
const POOL_V6: &str = "2001:db8::1:0/112";
const SERVICES: usize = 100;
/// How long the speakers of the large lab may take to settle, each seeing every other one.
const SETTLE_SECS: u64 = 180;
const METRICS_PORT: u16 = 7473;
/// The ServiceAccount the three-node part's speakers authenticate as.
const SPEAKER_SA: &str = "bench-speaker";

#[derive(Debug, Parser)]
#[command(
    name = "bench_speaker",
    about = "Speaker cost and membership benchmark"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    helper: Option<Helper>,
    #[command(flatten)]
    args: Args,
}

#[derive(Debug, clap::Args)]
struct Args {
    /// Length of each CPU window (idle, flood), in seconds.
    #[arg(long, default_value_t = 30)]
    window: u64,
    /// Datagrams per second the client sends to the announcing node.
    #[arg(long, default_value_t = 200_000)]
    flood_pps: u64,
    /// Sender threads of the flood.
    #[arg(long, default_value_t = 2)]
    flood_threads: usize,
    /// Request/reply exchanges per target and family for the latency figures.
    #[arg(long, default_value_t = 400)]
    probes: usize,
    /// Nodes of the large lab (at most the lab's MAX_NODES).
    #[arg(long, default_value_t = 50)]
    nodes: usize,
    /// Kill rounds in the large lab.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Membership traffic window of the large lab, in seconds.
    #[arg(long, default_value_t = 20)]
    traffic_window: u64,
    /// Skip the three-node part.
    #[arg(long)]
    skip_small: bool,
    /// Skip the large part.
    #[arg(long)]
    skip_large: bool,
}

#[derive(Debug, Subcommand)]
enum Helper {
    /// Sends 64-byte (`--size`) UDP datagrams to `--target` at `--pps` for `--seconds`.
    Flood {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long)]
        pps: u64,
        #[arg(long)]
        seconds: u64,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Times ARP/NDP exchanges on `--iface`, alternating between `--targets`; prints one line
    /// per target: `target <ip> lost <n> us <t1,t2,...>`.
    NeighProbe {
        #[arg(long)]
        iface: String,
        #[arg(long, value_delimiter = ',')]
        targets: Vec<std::net::IpAddr>,
        #[arg(long)]
        v4: Ipv4Addr,
        #[arg(long)]
        v6: Ipv6Addr,
        #[arg(long)]
        count: usize,
    },
}

fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn flood(target: SocketAddr, pps: u64, seconds: u64, size: usize, threads: usize) {
    let threads = threads.max(1);
    let per = pps as f64 / threads as f64;
    let deadline = Duration::from_secs(seconds);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || -> (u64, u64) {
                let Ok(sock) = UdpSocket::bind(("0.0.0.0", 0)) else {
                    return (0, 0);
                };
                if sock.connect(target).is_err() {
                    return (0, 0);
                }
                let buf = vec![0x5au8; size];
                let start = Instant::now();
                let (mut sent, mut errors) = (0u64, 0u64);
                loop {
                    let el = start.elapsed();
                    if el >= deadline {
                        break;
                    }
                    let due = (el.as_secs_f64() * per) as u64;
                    if sent >= due {
                        std::thread::sleep(Duration::from_micros(200));
                        continue;
                    }
                    // Bounded bursts keep the pace even, and catch up at most 5 ms at a time.
                    let burst = (due - sent).min((per / 200.0).max(1.0) as u64);
                    for _ in 0..burst {
                        // ICMP port unreachable comes back now and then (rate-limited by the
                        // receiver); the send that reports it is counted and retried.
                        match sock.send(&buf) {
                            Ok(_) => sent += 1,
                            Err(_) => errors += 1,
                        }
                    }
                }
                (sent, errors)
            })
        })
        .collect();
    let (mut sent, mut errors) = (0, 0);
    for h in handles {
        if let Ok((s, e)) = h.join() {
            sent += s;
            errors += e;
        }
    }
    println!(
        "sent {sent} errors {errors} rate {:.0}",
        sent as f64 / seconds.max(1) as f64
    );
}

fn neigh_probe(
    iface: &str,
    targets: &[std::net::IpAddr],
    v4: Ipv4Addr,
    v6: Ipv6Addr,
    count: usize,
) -> anyhow::Result<()> {
    let t: Vec<Target> = targets
        .iter()
        .map(|ip| match ip {
            std::net::IpAddr::V4(a) => Target::Arp(*a),
            std::net::IpAddr::V6(a) => Target::Ndp(*a),
        })
        .collect();
    let results = measure::neighbour_latency(
        iface,
        &t,
        v4,
        v6,
        count,
        Duration::from_millis(2),
        Duration::from_millis(100),
    )
    .map_err(|e| anyhow!("{e}"))?;
    for (ip, (times, lost)) in targets.iter().zip(results) {
        let list: Vec<String> = times.iter().map(|t| format!("{t:.1}")).collect();
        println!("target {ip} lost {lost} us {}", list.join(","));
    }
    Ok(())
}

/// A running speaker and the logs of its earlier instances.
struct Speaker {
    node: String,
    ip: String,
    proc: LabProcess,
    old_logs: Vec<PathBuf>,
}

struct Bench {
    lab: Lab,
    /// The kubeconfig the speakers authenticate with.
    kubeconfig: String,
    speaker_bin: String,
    self_bin: String,
    speakers: BTreeMap<String, Speaker>,
    starts: usize,
    ticks: u64,
}

impl Bench {
    fn exec_ok(&self, host: &str, cmd: &[&str]) -> anyhow::Result<String> {
        ferrolb_e2e::exec_ok(&self.lab, host, cmd)
    }

    fn start_speaker(&mut self, node: &str, ip: &str) -> anyhow::Result<()> {
        let kubeconfig = self.kubeconfig.clone();
        let metrics = format!("{ip}:{METRICS_PORT}");
        self.starts += 1;
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
            ],
            &format!("speaker-{node}-{}", self.starts),
        )?;
        let old_logs = self
            .speakers
            .remove(node)
            .map(|s| {
                let mut l = s.old_logs;
                l.push(s.proc.log_path().to_path_buf());
                l
            })
            .unwrap_or_default();
        self.speakers.insert(
            node.to_string(),
            Speaker {
                node: node.to_string(),
                ip: ip.to_string(),
                proc: p,
                old_logs,
            },
        );
        Ok(())
    }

    fn scrape(&self, node: &str) -> String {
        let Some(s) = self.speakers.get(node) else {
            return String::new();
        };
        let url = format!("http://{}:{METRICS_PORT}/metrics", s.ip);
        self.lab
            .exec(node, &["curl", "-s", "-m", "2", &url])
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    }

    fn cpu(&self, node: &str) -> Option<Duration> {
        measure::process_cpu(self.speakers.get(node)?.proc.pid(), self.ticks)
    }

    /// Every speaker's CPU time and membership counters now.
    fn sample(&self) -> BTreeMap<String, Sample> {
        self.speakers
            .keys()
            .map(|n| {
                let text = self.scrape(n);
                let c =
                    |dir: &str, name: &str| measure::metric_sum(&text, name, &[("direction", dir)]);
                (
                    n.clone(),
                    Sample {
                        at: Instant::now(),
                        cpu: self.cpu(n),
                        sent_packets: c("sent", "ferrolb_speaker_membership_packets_total"),
                        received_packets: c("received", "ferrolb_speaker_membership_packets_total"),
                        sent_bytes: c("sent", "ferrolb_speaker_membership_bytes_total"),
                        received_bytes: c("received", "ferrolb_speaker_membership_bytes_total"),
                        api_requests: measure::metric_sum(
                            &text,
                            "ferrolb_speaker_api_requests_total",
                            &[],
                        ),
                    },
                )
            })
            .collect()
    }

    /// Each speaker's `(ferrolb_speaker_settled, ferrolb_speaker_peers_alive)`; NaN when its
    /// metrics could not be read.
    fn membership_states(&self) -> BTreeMap<String, (f64, f64)> {
        self.speakers
            .keys()
            .map(|node| {
                let t = self.scrape(node);
                let state = if t.is_empty() {
                    (f64::NAN, f64::NAN)
                } else {
                    (
                        measure::metric_sum(&t, "ferrolb_speaker_settled", &[]),
                        measure::metric_sum(&t, "ferrolb_speaker_peers_alive", &[]),
                    )
                };
                (node.clone(), state)
            })
            .collect()
    }

    /// Prints why speakers are not settled: how many report what, and the end of the log of
    /// two of those that are behind.
    fn explain_unsettled(&self, states: &BTreeMap<String, (f64, f64)>, n: usize) {
        let mut by_state: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (node, (settled, alive)) in states {
            by_state
                .entry(format!("settled={settled} peers_alive={alive}"))
                .or_default()
                .push(node);
        }
        for (state, nodes) in &by_state {
            eprintln!("{} speaker(s) {state}: {}", nodes.len(), nodes.join(" "));
        }
        let behind = states
            .iter()
            .filter(|(_, (s, a))| !(*s == 1.0 && *a == (n - 1) as f64))
            .map(|(node, _)| node)
            .take(2);
        for node in behind {
            if let Some(s) = self.speakers.get(node) {
                eprintln!(
                    "--- last lines of {node}'s speaker log ---\n{}",
                    ferrolb_lab::process::log_tail(s.proc.log_path(), 30)
                );
            }
        }
    }

    /// Bytes received on `eth0` of `host` so far, in packets.
    fn rx_packets(&self, host: &str) -> anyhow::Result<u64> {
        let out = self.exec_ok(host, &["ip", "-s", "-j", "link", "show", "dev", "eth0"])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        v[0]["stats64"]["rx"]["packets"]
            .as_u64()
            .ok_or_else(|| anyhow!("no rx packets in {out}"))
    }
}

#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    cpu: Option<Duration>,
    sent_packets: f64,
    received_packets: f64,
    sent_bytes: f64,
    received_bytes: f64,
    /// The speaker's own count of Kubernetes API requests (lists, status and event writes).
    api_requests: f64,
}

/// API requests the speakers counted themselves between two sets of samples, summed.
fn api_requests(a: &BTreeMap<String, Sample>, b: &BTreeMap<String, Sample>) -> f64 {
    a.iter()
        .filter_map(|(n, sa)| Some(b.get(n)?.api_requests - sa.api_requests))
        .sum()
}

/// Per-node rates between two samples: (cpu % of a core, packets/s sent+received, bytes/s
/// sent+received, packets/s sent).
fn rates(a: &Sample, b: &Sample) -> (f64, f64, f64, f64) {
    let secs = b.at.saturating_duration_since(a.at).as_secs_f64().max(1e-9);
    let cpu = match (a.cpu, b.cpu) {
        (Some(x), Some(y)) => y.saturating_sub(x).as_secs_f64() / secs * 100.0,
        _ => f64::NAN,
    };
    let pk = (b.sent_packets + b.received_packets - a.sent_packets - a.received_packets) / secs;
    let by = (b.sent_bytes + b.received_bytes - a.sent_bytes - a.received_bytes) / secs;
    let sent = (b.sent_packets - a.sent_packets) / secs;
    (cpu, pk, by, sent)
}

fn service(name: &str, ip: Option<&str>, v6: bool) -> serde_json::Value {
    let mut meta = json!({"name": name, "namespace": "default"});
    if let Some(ip) = ip {
        meta["annotations"] = json!({"ferrolb.io/loadBalancerIPs": ip});
    }
    let mut spec = json!({"type": "LoadBalancer", "ports": [{"port": 9000, "protocol": "UDP"}]});
    if v6 {
        spec["ipFamilyPolicy"] = json!("SingleStack");
        spec["ipFamilies"] = json!(["IPv6"]);
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec})
}

fn slice(svc: &str, node: &str, addr: &str, v6: bool) -> serde_json::Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{svc}-bench"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": if v6 { "IPv6" } else { "IPv4" },
        "ports": [{"port": 9000, "protocol": "UDP"}],
        "endpoints": [{"addresses": [addr], "nodeName": node, "conditions": {"ready": true}}],
    })
}

/// The `ferrolb.io/Announced` message of each Service that is announced.
async fn announced(client: &kube::Client) -> anyhow::Result<BTreeMap<String, String>> {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let list = api.list(&Default::default()).await?;
    Ok(list
        .items
        .iter()
        .filter_map(|s| {
            let c = s
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "ferrolb.io/Announced" && c.status == "True")?;
            Some((s.metadata.name.clone()?, c.message.clone()))
        })
        .collect())
}

async fn wait_announced(
    client: &kube::Client,
    want: usize,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<String, String>> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = announced(client).await?;
        if got.len() >= want {
            return Ok(got);
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {want} Services announced after {timeout:?}",
                got.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The node named in an `announced by <node>` message.
fn announcer(message: &str) -> Option<String> {
    let rest = message.split("announced by ").nth(1)?;
    Some(
        rest.split_whitespace()
            .next()?
            .trim_end_matches(';')
            .to_string(),
    )
}

async fn lab_with_controller(nodes: usize) -> anyhow::Result<(Lab, kube::Client)> {
    let lab = Lab::up(LabOptions {
        nodes,
        kube_proxy: false,
        kubelet: false,
        ..LabOptions::default()
    })
    .await?;
    install_crds(&lab)?;
    let client = lab.client().await?;
    let mut tries = 0;
    while let Err(e) = apply(
        &client,
        &[json!({
            "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "bench"},
            "spec": {"addresses": [POOL_V4, POOL_V6]},
        })],
    )
    .await
    {
        tries += 1;
        ensure!(tries < 50, "pool: {e:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    apply(
        &client,
        &[json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "L2Advertisement", "metadata": {"name": "all"}, "spec": {}})],
    )
    .await?;
    Ok((lab, client))
}

/// What the three-node part measured.
struct Small {
    /// Requests of the speakers in the audit log during the idle window, by verb and resource.
    idle_api: BTreeMap<String, usize>,
    /// The same from the start of the idle window to the end of the flood window.
    quiet_api: BTreeMap<String, usize>,
    /// The speakers' own API request counters over the same two spans (sample to sample).
    idle_api_own: f64,
    quiet_api_own: f64,
    quiet_secs: f64,
    idle_cpu: BTreeMap<String, f64>,
    flood_cpu: BTreeMap<String, f64>,
    announcer: String,
    flood_rate: f64,
    flood_sent_rate: f64,
    traffic: BTreeMap<String, (f64, f64, f64)>,
    arp: (Vec<f64>, Vec<f64>, usize, usize),
    ndp: (Vec<f64>, Vec<f64>, usize, usize),
    load: (String, String),
}

async fn small(args: &Args, speaker_bin: &str, self_bin: &str) -> anyhow::Result<Small> {
    let (lab, client) = lab_with_controller(3).await?;
    println!("3-node lab {} up", lab.id());
    let _controller = start_host_controller(&lab)?;
    let nodes: Vec<(String, String, String)> = lab
        .nodes()
        .iter()
        .map(|n| (n.name.clone(), n.ipv4.to_string(), n.ipv6.to_string()))
        .collect();
    let client_host = lab.client_host().clone();
    // The speakers authenticate as a ServiceAccount of their own, so the API server's audit log
    // (which records ServiceAccount requests) shows every request they make.
    apply(
        &client,
        &[
            json!({"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": SPEAKER_SA, "namespace": "default"}}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": SPEAKER_SA},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                               "name": "cluster-admin"},
                   "subjects": [{"kind": "ServiceAccount", "name": SPEAKER_SA,
                                 "namespace": "default"}]}),
        ],
    )
    .await?;
    let kubeconfig = lab
        .service_account_kubeconfig("default", SPEAKER_SA)?
        .display()
        .to_string();
    let mut bench = Bench {
        kubeconfig,
        lab,
        speaker_bin: speaker_bin.to_string(),
        self_bin: self_bin.to_string(),
        speakers: BTreeMap::new(),
        starts: 0,
        ticks: measure::clock_ticks(),
    };
    let mut objs = vec![
        service("vip", Some(VIP), false),
        slice("vip", &nodes[0].0, &nodes[0].1, false),
        service("vip6", Some(VIP6), true),
        slice("vip6", &nodes[0].0, &nodes[0].2, true),
    ];
    for i in 0..SERVICES {
        let name = format!("idle-{i:03}");
        let (node, ip, _) = &nodes[i % nodes.len()];
        objs.push(service(&name, None, false));
        objs.push(slice(&name, node, ip, false));
    }
    apply(&client, &objs).await?;
    for (node, ip, _) in &nodes {
        bench.start_speaker(node, ip)?;
    }
    let msgs = wait_announced(&client, SERVICES + 2, Duration::from_secs(120)).await?;
    let vip_by = msgs
        .get("vip")
        .and_then(|m| announcer(m))
        .ok_or_else(|| anyhow!("vip not announced: {msgs:?}"))?;
    let vip6_by = msgs
        .get("vip6")
        .and_then(|m| announcer(m))
        .ok_or_else(|| anyhow!("vip6 not announced"))?;
    println!(
        "{} Services announced; {VIP} by {vip_by}, {VIP6} by {vip6_by}",
        msgs.len()
    );
    // Let start-up writes and joins settle before the window opens.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let load_start = loadavg();
    let window = Duration::from_secs(args.window);
    let idle_from = unix_us();
    let a = bench.sample();
    tokio::time::sleep(window).await;
    let b = bench.sample();
    let idle_to = unix_us();
    let idle_api_own = api_requests(&a, &b);
    let idle_start = a.clone();
    let mut idle_cpu = BTreeMap::new();
    let mut traffic = BTreeMap::new();
    for (n, sa) in &a {
        if let Some(sb) = b.get(n) {
            let (cpu, pk, by, sent) = rates(sa, sb);
            idle_cpu.insert(n.clone(), cpu);
            traffic.insert(n.clone(), (pk, by, sent));
        }
    }
    println!("idle window done ({}s): cpu {idle_cpu:?}", args.window);

    // The flood: client -> the announcing node's own address, a port nobody listens on.
    let (_, target_ip, _) = nodes
        .iter()
        .find(|(n, _, _)| *n == vip_by)
        .ok_or_else(|| anyhow!("unknown node {vip_by}"))?
        .clone();
    let target = format!("{target_ip}:9");
    let seconds = (args.window + 8).to_string();
    let pps = args.flood_pps.to_string();
    let threads = args.flood_threads.to_string();
    let mut flooder = bench.lab.spawn(
        "client",
        &[
            &bench.self_bin,
            "flood",
            "--target",
            &target,
            "--pps",
            &pps,
            "--seconds",
            &seconds,
            "--threads",
            &threads,
        ],
        "flood",
    )?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rx0 = bench.rx_packets(&vip_by)?;
    let t0 = Instant::now();
    let a = bench.sample();
    tokio::time::sleep(window).await;
    let b = bench.sample();
    let flood_to = unix_us();
    let quiet_api_own = api_requests(&idle_start, &b);
    let rx1 = bench.rx_packets(&vip_by)?;
    let flood_rate = (rx1.saturating_sub(rx0)) as f64 / t0.elapsed().as_secs_f64();
    let mut flood_cpu = BTreeMap::new();
    for (n, sa) in &a {
        if let Some(sb) = b.get(n) {
            flood_cpu.insert(n.clone(), rates(sa, sb).0);
        }
    }
    let _ = flooder.wait_timeout(Duration::from_secs(15));
    let _ = flooder.kill();
    let flood_log = flooder.log();
    let flood_sent_rate = flood_log
        .lines()
        .find_map(|l| l.split("rate ").nth(1)?.trim().parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    let load_end = loadavg();
    println!(
        "flood window done: {flood_rate:.0} pps at {vip_by}'s eth0 (sender: {flood_sent_rate:.0}/s); cpu {flood_cpu:?}"
    );

    // Neighbour latency: speaker (VIP) against the kernel (the node's own address), alternating.
    let (_, n4, _) = nodes
        .iter()
        .find(|(n, _, _)| *n == vip_by)
        .cloned()
        .ok_or_else(|| anyhow!("unknown node"))?;
    let (_, _, m6) = nodes
        .iter()
        .find(|(n, _, _)| *n == vip6_by)
        .cloned()
        .ok_or_else(|| anyhow!("unknown node"))?;
    let v4 = client_host.ipv4.to_string();
    let v6 = client_host.ipv6.to_string();
    let count = args.probes.to_string();
    let run_probe = |targets: String| -> anyhow::Result<BTreeMap<String, (Vec<f64>, usize)>> {
        let out = bench.exec_ok(
            "client",
            &[
                &bench.self_bin,
                "neigh-probe",
                "--iface",
                "eth0",
                "--targets",
                &targets,
                "--v4",
                &v4,
                "--v6",
                &v6,
                "--count",
                &count,
            ],
        )?;
        let mut m = BTreeMap::new();
        for l in out.lines() {
            let w: Vec<&str> = l.split_whitespace().collect();
            if let ["target", ip, "lost", lost, "us", list @ ..] = w.as_slice() {
                let times = list
                    .first()
                    .map(|s| s.split(',').filter_map(|t| t.parse().ok()).collect())
                    .unwrap_or_default();
                m.insert(ip.to_string(), (times, lost.parse().unwrap_or(0)));
            }
        }
        Ok(m)
    };
    let arp = run_probe(format!("{VIP},{n4}"))?;
    let ndp = run_probe(format!("{VIP6},{m6}"))?;
    let get =
        |m: &BTreeMap<String, (Vec<f64>, usize)>, k: &str| m.get(k).cloned().unwrap_or_default();
    let (as_, asl) = get(&arp, VIP);
    let (ak, akl) = get(&arp, &n4);
    let vip6_key = VIP6.parse::<Ipv6Addr>()?.to_string();
    let (ns, nsl) = get(&ndp, &vip6_key);
    let (nk, nkl) = get(&ndp, &m6.parse::<Ipv6Addr>()?.to_string());
    let names: Vec<String> = bench.speakers.keys().cloned().collect();
    for n in names {
        if let Some(mut s) = bench.speakers.remove(&n) {
            let _ = s.proc.signal(ferrolb_lab::Signal::Term);
            let _ = s.proc.wait_timeout(Duration::from_secs(5));
        }
    }
    drop(_controller);
    // The speakers are gone, so every request they made, watches included, is in the audit log.
    let user = format!("system:serviceaccount:default:{SPEAKER_SA}");
    let audit = audit::read_user(&bench.lab.audit_log(), &user)
        .context("read the audit log")?
        .events;
    ensure!(
        !audit::requests_by_kind(&audit, &user, 0, i64::MAX).is_empty(),
        "the audit log has no request of {user}: the count below would mean nothing"
    );
    let idle_api = audit::requests_by_kind(&audit, &user, idle_from, idle_to);
    let quiet_api = audit::requests_by_kind(&audit, &user, idle_from, flood_to);
    let report = bench.lab.down();
    if !report.problems.is_empty() {
        eprintln!("teardown problems: {:?}", report.problems);
    }
    Ok(Small {
        idle_api,
        quiet_api,
        idle_api_own,
        quiet_api_own,
        quiet_secs: (flood_to - idle_from) as f64 / 1e6,
        idle_cpu,
        flood_cpu,
        announcer: vip_by,
        flood_rate,
        flood_sent_rate,
        traffic,
        arp: (as_, ak, asl, akl),
        ndp: (ns, nk, nsl, nkl),
        load: (load_start, load_end),
    })
}

/// What the large part measured.
struct Large {
    /// API requests the speakers counted themselves over the traffic window, all together.
    api_own: f64,
    traffic_secs: u64,
    nodes: usize,
    cpu: Vec<f64>,
    traffic: Vec<(f64, f64, f64)>,
    first: Vec<f64>,
    all: Vec<f64>,
    missed: usize,
    false_positives: Vec<String>,
    stalls: usize,
    load: (String, String),
}

/// Reads what `path` gained since `offset`.
fn read_from(path: &std::path::Path, offset: &mut u64) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    if f.seek(SeekFrom::Start(*offset)).is_err() {
        return String::new();
    }
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    // Only whole lines; the rest is read next time.
    let complete = s.rfind('\n').map(|i| i + 1).unwrap_or(0);
    s.truncate(complete);
    *offset += complete as u64;
    s
}

async fn large(args: &Args, speaker_bin: &str, self_bin: &str) -> anyhow::Result<Large> {
    let n = args.nodes.clamp(3, ferrolb_lab::plan::MAX_NODES);
    let (lab, client) = lab_with_controller(n).await?;
    println!("{n}-node lab {} up", lab.id());
    let _controller = start_host_controller(&lab)?;
    let nodes: Vec<(String, String)> = lab
        .nodes()
        .iter()
        .map(|h| (h.name.clone(), h.ipv4.to_string()))
        .collect();
    let mut bench = Bench {
        kubeconfig: lab.node_kubeconfig().display().to_string(),
        lab,
        speaker_bin: speaker_bin.to_string(),
        self_bin: self_bin.to_string(),
        speakers: BTreeMap::new(),
        starts: 0,
        ticks: measure::clock_ticks(),
    };
    apply(
        &client,
        &[
            service("big", Some(VIP), false),
            slice("big", &nodes[0].0, &nodes[0].1, false),
        ],
    )
    .await?;
    for (node, ip) in &nodes {
        bench.start_speaker(node, ip)?;
    }
    // Every speaker settled and seeing every other one.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(SETTLE_SECS);
    loop {
        let states = bench.membership_states();
        let ready = states
            .values()
            .filter(|(settled, alive)| *settled == 1.0 && *alive == (n - 1) as f64)
            .count();
        if ready == n {
            break;
        }
        if Instant::now() >= deadline {
            bench.explain_unsettled(&states, n);
            bail!(
                "only {ready} of {n} speakers settled with {} peers alive after {SETTLE_SECS} s",
                n - 1
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    println!(
        "settled in {:.1} s after the last speaker started",
        started.elapsed().as_secs_f64()
    );
    let settled_at = unix_us();
    println!("{n} speakers settled, each seeing {} peers", n - 1);
    wait_announced(&client, 1, Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let load_start = loadavg();
    let a = bench.sample();
    tokio::time::sleep(Duration::from_secs(args.traffic_window)).await;
    let b = bench.sample();
    let api_own = api_requests(&a, &b);
    let mut cpu = Vec::new();
    let mut traffic = Vec::new();
    for (node, sa) in &a {
        if let Some(sb) = b.get(node) {
            let (c, pk, by, sent) = rates(sa, sb);
            cpu.push(c);
            traffic.push((pk, by, sent));
        }
    }
    println!("traffic window done ({}s)", args.traffic_window);

    // Kill rounds.
    let mut offsets: BTreeMap<PathBuf, u64> = BTreeMap::new();
    let mut first = Vec::new();
    let mut all = Vec::new();
    let mut missed = 0usize;
    let mut kills: Vec<(String, i64)> = Vec::new();
    for round in 0..args.kills {
        // Victims cycle through the nodes but the first (which announces the Service).
        let (victim, victim_ip) = nodes[1 + round % (n - 1)].clone();
        // Everyone's log from now on.
        for s in bench.speakers.values() {
            let p = s.proc.log_path().to_path_buf();
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            offsets.insert(p, len);
        }
        let t0 = unix_us();
        if let Some(s) = bench.speakers.get_mut(&victim) {
            s.proc.kill()?;
        }
        kills.push((victim.clone(), t0));
        let survivors: Vec<String> = bench
            .speakers
            .keys()
            .filter(|k| **k != victim)
            .cloned()
            .collect();
        let mut seen: BTreeMap<String, i64> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.len() < survivors.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            for s in &survivors {
                if seen.contains_key(s) {
                    continue;
                }
                let Some(sp) = bench.speakers.get(s) else {
                    continue;
                };
                let path = sp.proc.log_path().to_path_buf();
                let off = offsets.entry(path.clone()).or_insert(0);
                let text = read_from(&path, off);
                if let Some(t) = text
                    .lines()
                    .filter(|l| l.contains("peer down") && measure::has_field(l, "peer", &victim))
                    .find_map(measure::log_time_us)
                {
                    seen.insert(s.clone(), t);
                }
            }
        }
        if seen.len() < survivors.len() {
            missed += survivors.len() - seen.len();
        }
        let times: Vec<f64> = seen.values().map(|t| (t - t0) as f64 / 1000.0).collect();
        let (f, l) = (
            times.iter().copied().fold(f64::INFINITY, f64::min),
            times.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        );
        if !times.is_empty() {
            first.push(f);
        }
        if seen.len() == survivors.len() {
            all.push(l);
        }
        println!(
            "round {round:2}: killed {victim}: first survivor {f:6.1} ms, all {}/{} by {l:6.1} ms",
            seen.len(),
            survivors.len()
        );
        // Back again, and seen by everyone, before the next round.
        bench.start_speaker(&victim, &victim_ip)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let t = bench.scrape(&victim);
            if measure::metric_sum(&t, "ferrolb_speaker_settled", &[]) == 1.0
                && measure::metric_sum(&t, "ferrolb_speaker_peers_alive", &[]) == (n - 1) as f64
            {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{victim} did not rejoin within 20 s"
            );
        }
        // Its peers see it too (a survivor still counting it dead would skew the next round).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let behind: Vec<String> = bench
                .speakers
                .keys()
                .filter(|node| {
                    let t = bench.scrape(node);
                    measure::metric_sum(&t, "ferrolb_speaker_peers_alive", &[]) != (n - 1) as f64
                })
                .cloned()
                .collect();
            if behind.is_empty() {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{} speakers do not see {} peers alive 20 s after {victim} restarted: {behind:?}",
                behind.len(),
                n - 1
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let load_end = loadavg();

    // False positives: any timeout Down of a peer nobody killed just before, any stall.
    let mut false_positives = Vec::new();
    let mut stalls = 0;
    for s in bench.speakers.values() {
        let mut logs = s.old_logs.clone();
        logs.push(s.proc.log_path().to_path_buf());
        for p in logs {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            for l in text.lines() {
                let Some(t) = measure::log_time_us(l) else {
                    continue;
                };
                if t < settled_at {
                    continue;
                }
                if l.contains("stalled") {
                    stalls += 1;
                }
                if !(l.contains("peer down") && measure::has_field(l, "reason", "timeout")) {
                    continue;
                }
                let explained = kills.iter().any(|(v, k)| {
                    measure::has_field(l, "peer", v) && t >= *k && t <= *k + 5_000_000
                });
                if !explained {
                    false_positives.push(format!("{}: {l}", s.node));
                }
            }
        }
    }
    let names: Vec<String> = bench.speakers.keys().cloned().collect();
    for name in names {
        if let Some(mut s) = bench.speakers.remove(&name) {
            let _ = s.proc.kill();
        }
    }
    drop(_controller);
    let report = bench.lab.down();
    if !report.problems.is_empty() {
        eprintln!("teardown problems: {:?}", report.problems);
    }
    Ok(Large {
        api_own,
        traffic_secs: args.traffic_window,
        nodes: n,
        cpu,
        traffic,
        first,
        all,
        missed,
        false_positives,
        stalls,
        load: (load_start, load_end),
    })
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

fn report(args: &Args, small: Option<&Small>, large: Option<&Large>) {
    println!();
    println!("=== bench-speaker (release speakers; load average shown per part) ===");
    let mut goals = Vec::new();
    let mut traffic3 = None;
    if let Some(s) = small {
        println!(
            "three nodes, {} Services; load average {} at the start, {} at the end",
            SERVICES + 2,
            s.load.0,
            s.load.1
        );
        println!(
            "{:<10} {:>14} {:>16} {:>18} {:>18}",
            "speaker", "idle % core", "flood % core", "membership pkt/s", "membership B/s"
        );
        for (n, idle) in &s.idle_cpu {
            let f = s.flood_cpu.get(n).copied().unwrap_or(f64::NAN);
            let (pk, by, _) = s
                .traffic
                .get(n)
                .copied()
                .unwrap_or((f64::NAN, f64::NAN, 0.0));
            let mark = if *n == s.announcer {
                " (announces VIP, flooded)"
            } else {
                ""
            };
            println!("{n:<10} {idle:>14.3} {f:>16.3} {pk:>18.1} {by:>18.0}{mark}");
        }
        let idle_a = s.idle_cpu.get(&s.announcer).copied().unwrap_or(f64::NAN);
        let flood_a = s.flood_cpu.get(&s.announcer).copied().unwrap_or(f64::NAN);
        println!(
            "flood: {:.0} pps of 64-byte UDP counted at {}'s eth0 (asked {}, sender managed {:.0}/s)",
            s.flood_rate, s.announcer, args.flood_pps, s.flood_sent_rate
        );
        println!(
            "announcing speaker: idle {idle_a:.3} %, flood {flood_a:.3} % of a core: ratio {:.2}x, difference {:+.3} % of a core",
            flood_a / idle_a,
            flood_a - idle_a
        );
        println!(
            "  = {:+.3} % of a core per 100k pps of unrelated traffic",
            (flood_a - idle_a) / (s.flood_rate / 100_000.0)
        );
        let list = |m: &BTreeMap<String, usize>| {
            if m.is_empty() {
                "none".to_string()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{v} {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let idle_n: usize = s.idle_api.values().sum();
        let quiet_n: usize = s.quiet_api.values().sum();
        println!(
            "Kubernetes API requests of the 3 speakers while nothing changed (audit log, received in the span; the speakers' own counter beside):\n  idle window ({}s): {idle_n} ({}); own counter {:.0}\n  idle window to the end of the flood ({:.0}s): {quiet_n} ({}); own counter {:.0}",
            args.window,
            list(&s.idle_api),
            s.idle_api_own,
            s.quiet_secs,
            list(&s.quiet_api),
            s.quiet_api_own
        );
        let lat = |name: &str, (sp, k, sl, kl): &(Vec<f64>, Vec<f64>, usize, usize)| {
            let (s50, s99, smax) = measure::summary(sp);
            let (k50, k99, kmax) = measure::summary(k);
            println!(
                "{name} reply latency (µs)   n   p50   p99   max  lost\n  speaker   {:>8} {s50:>5.0} {s99:>5.0} {smax:>5.0} {sl:>5}\n  kernel    {:>8} {k50:>5.0} {k99:>5.0} {kmax:>5.0} {kl:>5}\n  ratio p50 {:.2}x, p99 {:.2}x",
                sp.len(),
                k.len(),
                s50 / k50,
                s99 / k99
            );
            s50 / k50
        };
        let arp_ratio = lat("ARP", &s.arp);
        let ndp_ratio = lat("NDP", &s.ndp);
        let pk: Vec<f64> = s.traffic.values().map(|t| t.0).collect();
        let by: Vec<f64> = s.traffic.values().map(|t| t.1).collect();
        traffic3 = Some(mean(&pk));
        println!(
            "membership at 3 nodes, per node (sent + received): {:.1} packets/s, {:.0} bytes/s (mean; max {:.1} packets/s)",
            mean(&pk),
            mean(&by),
            max(&pk)
        );
        let idle_max = s.idle_cpu.values().copied().fold(f64::NAN, f64::max);
        goals.push(format!(
            "goal speaker idle cpu: {idle_max:.3} % of a core (target <= 0.5 % of a core)"
        ));
        goals.push(format!(
            "goal speaker cpu under {:.0}k pps flood: {flood_a:.3} % of a core (target <= {:.3} % of a core)",
            s.flood_rate / 1000.0,
            idle_a + 1.0
        ));
        let writes: usize = s
            .quiet_api
            .iter()
            .filter(|(k, _)| {
                ["create ", "update ", "patch ", "delete "]
                    .iter()
                    .any(|v| k.starts_with(v))
            })
            .map(|(_, v)| v)
            .sum();
        goals.push(format!(
            "goal speaker API writes while nothing changes: {writes} requests in {:.0} s (target == 0 requests)",
            s.quiet_secs
        ));
        goals.push(format!(
            "goal arp reply p50 vs kernel: {arp_ratio:.2} x (target <= 2 x)"
        ));
        goals.push(format!(
            "goal ndp reply p50 vs kernel: {ndp_ratio:.2} x (target <= 2 x)"
        ));
    }
    if let Some(l) = large {
        println!();
        println!(
            "{} nodes; load average {} at the start, {} at the end",
            l.nodes, l.load.0, l.load.1
        );
        let pk: Vec<f64> = l.traffic.iter().map(|t| t.0).collect();
        let by: Vec<f64> = l.traffic.iter().map(|t| t.1).collect();
        let sent: Vec<f64> = l.traffic.iter().map(|t| t.2).collect();
        println!(
            "membership at {} nodes, per node (sent + received): {:.1} packets/s, {:.0} bytes/s (mean; max {:.1} packets/s, {:.0} bytes/s; sent alone {:.1} packets/s)",
            l.nodes,
            mean(&pk),
            mean(&by),
            max(&pk),
            max(&by),
            mean(&sent)
        );
        if let Some(t3) = traffic3 {
            println!(
                "membership packets per node, {} nodes against 3: {:.2}x (all-to-all heartbeats would be {:.1}x)",
                l.nodes,
                mean(&pk) / t3,
                (l.nodes - 1) as f64 / 2.0
            );
        }
        println!(
            "speaker cpu at {} nodes: mean {:.3} %, max {:.3} % of a core",
            l.nodes,
            mean(&l.cpu),
            max(&l.cpu)
        );
        println!(
            "API requests the {} speakers counted themselves over the {} s traffic window: {:.0}",
            l.nodes, l.traffic_secs, l.api_own
        );
        let (f50, f99, fmax) = measure::summary(&l.first);
        let (a50, a99, amax) = measure::summary(&l.all);
        println!(
            "failover detection over {} SIGKILLs (kill -> `peer down` logged):\n  first survivor   p50 {f50:6.1} ms  p99 {f99:6.1} ms  max {fmax:6.1} ms\n  every survivor   p50 {a50:6.1} ms  p99 {a99:6.1} ms  max {amax:6.1} ms  (rounds complete: {}; survivor detections missing: {})",
            l.first.len(),
            l.all.len(),
            l.missed
        );
        println!(
            "false positives: {} peer(s) declared dead that nobody killed; {} stall(s) logged",
            l.false_positives.len(),
            l.stalls
        );
        for fp in l.false_positives.iter().take(10) {
            println!("  {fp}");
        }
        let p99 = if l.all.len() == args.kills && l.missed == 0 {
            a99
        } else {
            f64::INFINITY
        };
        goals.push(format!(
            "goal failover p99 at {} nodes: {p99:.1} ms (target <= 500 ms)",
            l.nodes
        ));
        goals.push(format!(
            "goal false failovers at {} nodes: {} (target == 0)",
            l.nodes,
            l.false_positives.len() + l.stalls
        ));
    }
    println!();
    for g in goals {
        println!("{g}");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.helper {
        Some(Helper::Flood {
            target,
            pps,
            seconds,
            size,
            threads,
        }) => {
            flood(target, pps, seconds, size, threads);
            return Ok(());
        }
        Some(Helper::NeighProbe {
            iface,
            targets,
            v4,
            v6,
            count,
        }) => return neigh_probe(&iface, &targets, v4, v6, count),
        None => {}
    }
    let args = cli.args;
    let started = Instant::now();
    let speaker_bin = binary("ferrolb-speaker");
    let self_bin = std::env::current_exe()
        .context("own path")?
        .display()
        .to_string();
    println!("speaker binary {speaker_bin}; load average {}", loadavg());
    let small = if args.skip_small {
        None
    } else {
        Some(small(&args, &speaker_bin, &self_bin).await?)
    };
    let large = if args.skip_large {
        None
    } else {
        match large(&args, &speaker_bin, &self_bin).await {
            Ok(l) => Some(l),
            Err(e) => {
                // What was measured is still worth seeing.
                report(&args, small.as_ref(), None);
                return Err(e.context(format!(
                    "the {}-node part failed after {:.0?} (figures above are the three-node part's)",
                    args.nodes,
                    started.elapsed()
                )));
            }
        }
    };
    report(&args, small.as_ref(), large.as_ref());
    println!("bench-speaker took {:.0?}", started.elapsed());
    Ok(())
}
