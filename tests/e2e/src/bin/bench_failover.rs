//! `make bench-failover`: how fast the speakers move an IP when its node dies, beside the floor
//! on this machine, plus ARP reply latency against the kernel and API requests while idle.
//!
//! Set-up: a 3-node lab (no kube-proxy), the controller, one speaker per node with default
//! flags, one Service with IP `VIP`. Every node also holds `VIP` on `lo` (with `arp_ignore=1`,
//! so the kernel never answers ARP for it) and runs a UDP echo server that appends its node
//! name: whichever node the client's frames reach answers, and says who it is.
//!
//! **Fail-over time** = from the kill (the announcing node's link is set down, then its speaker
//! SIGKILLed) to the first echo reply, received by the client, from another node. The client
//! sends a probe every 1 ms (`lab_probe udp-probe`), so this is "first successful reply from
//! the IP via the new node" at 1 ms resolution. Rounds alternate between:
//! - **speakers**: the speakers detect the death and the new announcer sends gratuitous ARP;
//! - **oracle**: at the kill instant the harness itself sends a correct gratuitous ARP from the
//!   node the speakers would elect (a `lab_probe garp-agent` waiting on a pipe): the floor here.
//!
//! After each round the node comes back (link up, speaker restarted) and must not take the IP
//! back; the next round kills the current announcer.
//!
//! **ARP latency**: `arping` from the client to `VIP` answered by the speaker, then to the same
//! IP put on node-1's `eth0` and answered by the kernel (speakers stopped).
//!
//! **API requests while idle**: 100 more Services announced, then `--idle-seconds` of nothing;
//! the speakers' own request counters (writes and (re)lists) and, for context, the API server's
//! `apiserver_request_total` over all clients.
//!
//! Bounded: `--rounds` (default 20) of each kind, 3 s per round at most, fixed idle window.
//!
//! **Real pods**: then a second lab with real nodes (3, kube-proxy), the chart installed with
//! the ferrolb image of the same build, so the speakers are the DaemonSet's pods with the
//! chart's defaults. The Service (`externalTrafficPolicy: Local`, the same `VIP`) is served by
//! a DaemonSet of the lab's backend image, which answers each datagram with its node's name:
//! with `Local`, a node hands the client's packets only to its own pod, so the answer again
//! says which node the client's frames reached. Rounds alternate between:
//! - **pod delete**: the announcing node's speaker pod is deleted through the API (graceful:
//!   the kubelet sends SIGTERM and the speaker hands its IPs over before it exits);
//! - **container kill**: its container is killed with SIGKILL through the node's containerd
//!   (`ctr tasks kill`), as an OOM kill or a crash would end it.
//!
//! The node itself stays up in both, so the client is served all along; what is measured is
//! the same as above, from the delete request or the kill to the first reply via the new node,
//! and the longest silence the client saw is shown beside it. After each round the pod is
//! replaced (after a kill too, so the kubelet's crash-loop back-off never delays a round) and
//! must not take the IP back. `--pod-rounds` (default 12) of each kind, 10 s per round at most
//! to the first reply through the new node.
//!
//! The summary shows both labs' figures side by side, the process-level ones as the
//! comparator, and ends with `goal` lines.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail, ensure};
use clap::Parser;
use ferrolb_e2e::{
    apply, binary, ferrolb_image, helm, install_crds, pod_log, start_host_controller, wait_rollout,
};
use ferrolb_lab::node::{CRI_NAMESPACE, CTR, NodeLayout};
use ferrolb_lab::{Lab, LabOptions, LabProcess};
use ferrolb_speaker_core::election;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;

const VIP: &str = "198.51.100.80";
/// How long a real-pod round waits for the first reply through another node: longer than the
/// process rounds' 3 s, since a deletion first goes through the API server and the kubelet, and
/// a slow round should show in the figures rather than drop out of them.
const POD_WINDOW: Duration = Duration::from_secs(10);
const ECHO_PORT: u16 = 9000;

#[derive(Debug, Parser)]
#[command(name = "bench_failover", about = "Speaker fail-over benchmark")]
struct Args {
    /// Kills per kind (speakers, oracle).
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Length of the idle window for API requests per minute.
    #[arg(long, default_value_t = 60)]
    idle_seconds: u64,
    /// Extra speaker flags (e.g. --dead-after=300ms), comma separated (process level only).
    #[arg(long, value_delimiter = ',')]
    speaker_flags: Vec<String>,
    /// Rounds per kind with real pods (pod delete, container kill); at least 10.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u16).range(10..))]
    pod_rounds: u16,
}

fn unix_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    (
        pct(&s, 0.5),
        pct(&s, 0.99),
        s.last().copied().unwrap_or(f64::NAN),
    )
}

/// A process in a node namespace with a pipe to its stdin, killed when dropped.
struct Agent {
    child: Child,
    stdin: ChildStdin,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the probe's output as it grows.
struct ProbeLog {
    file: std::fs::File,
    pending: String,
}

impl ProbeLog {
    /// New replies since the last call: (received µs, responder).
    fn read(&mut self) -> Vec<(u128, String)> {
        let mut buf = String::new();
        let _ = self.file.read_to_string(&mut buf);
        self.pending.push_str(&buf);
        let mut out = Vec::new();
        let complete = self.pending.rfind('\n').map(|i| i + 1).unwrap_or(0);
        for line in self.pending[..complete].lines() {
            let mut it = line.split_whitespace();
            if let (Some(t), Some(_seq), Some(who)) = (it.next(), it.next(), it.next())
                && let Ok(t) = t.parse()
            {
                out.push((t, who.to_string()));
            }
        }
        self.pending.drain(..complete);
        out
    }
}

impl ProbeLog {
    /// Waits (at most 5 s) until one node answered every probe of the last 200 ms, and more
    /// than 100 of them, and returns that node.
    async fn stable_responder(&mut self) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let recent = self.read();
            if let Some((_, who)) = recent.last()
                && recent.len() > 100
                && recent.iter().all(|(_, w)| w == who)
            {
                return Some(who.clone());
            }
        }
        None
    }

    /// Waits at most `within` for the first reply received after `t0` (unix µs) from another
    /// node than `old`.
    async fn first_reply_elsewhere(
        &mut self,
        t0: u128,
        old: &str,
        within: Duration,
    ) -> Option<Takeover> {
        let deadline = Instant::now() + within;
        let mut last = t0;
        let mut silence = 0u128;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
            for (t, who) in self.read() {
                if t <= t0 {
                    continue;
                }
                silence = silence.max(t - last);
                last = t;
                if who != old {
                    return Some(Takeover {
                        ms: (t - t0) as f64 / 1000.0,
                        who,
                        silence_ms: silence as f64 / 1000.0,
                    });
                }
            }
        }
        None
    }
}

/// The first reply through another node after a kill.
struct Takeover {
    /// From the kill to that reply.
    ms: f64,
    /// The node it came through.
    who: String,
    /// The longest time without any reply between the kill and that reply.
    silence_ms: f64,
}

struct Bench {
    lab: Lab,
    speaker_bin: String,
    speaker_flags: Vec<String>,
    speakers: BTreeMap<String, LabProcess>,
    starts: usize,
}

impl Bench {
    fn exec_ok(&self, host: &str, cmd: &[&str]) -> anyhow::Result<String> {
        let out = self.lab.exec(host, cmd)?;
        ensure!(
            out.status.success(),
            "{host}: {}: {}",
            cmd.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    fn start_speaker(&mut self, node: &str, ip: &str) -> anyhow::Result<()> {
        let kubeconfig = self.lab.node_kubeconfig().display().to_string();
        let metrics = format!("{ip}:7473");
        let mut argv: Vec<&str> = vec![
            &self.speaker_bin,
            "--node-name",
            node,
            "--kubeconfig",
            &kubeconfig,
            "--metrics-addr",
            &metrics,
        ];
        argv.extend(self.speaker_flags.iter().map(String::as_str));
        self.starts += 1;
        let p = self
            .lab
            .spawn(node, &argv, &format!("speaker-{node}-{}", self.starts))?;
        self.speakers.insert(node.to_string(), p);
        Ok(())
    }

    fn metrics_sum(&self, node_ip: &str, node: &str, name: &str) -> f64 {
        let url = format!("http://{node_ip}:7473/metrics");
        self.lab
            .exec(node, &["curl", "-s", "-m", "2", &url])
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| l.starts_with(name))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum()
            })
            .unwrap_or(0.0)
    }
}

/// `time=…` values of arping's replies, in microseconds.
fn arping_times(out: &str) -> Vec<f64> {
    out.lines()
        .filter_map(|l| {
            let t = l.split("time=").nth(1)?;
            let mut it = t.split_whitespace();
            let v: f64 = it.next()?.parse().ok()?;
            Some(match it.next()? {
                "usec" => v,
                "msec" => v * 1000.0,
                "sec" => v * 1e6,
                _ => return None,
            })
        })
        .collect()
}

fn apiserver_requests(lab: &Lab) -> f64 {
    lab.kubectl(&["get", "--raw", "/metrics"])
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with("apiserver_request_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(f64::NAN)
}

async fn wait_announced(
    client: &kube::Client,
    names: &[String],
    timeout: Duration,
) -> anyhow::Result<()> {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + timeout;
    loop {
        let list = api.list(&Default::default()).await?;
        let done = names
            .iter()
            .filter(|n| {
                list.items.iter().any(|s| {
                    s.metadata.name.as_deref() == Some(n.as_str())
                        && s.status
                            .as_ref()
                            .and_then(|st| st.conditions.as_ref())
                            .is_some_and(|cs| {
                                cs.iter().any(|c| {
                                    c.type_ == "ferrolb.io/Announced" && c.status == "True"
                                })
                            })
                })
            })
            .count();
        if done == names.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "only {done} of {} Services announced after {timeout:?}",
                names.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn service(name: &str, ip: Option<&str>) -> serde_json::Value {
    let mut meta = json!({"name": name, "namespace": "default"});
    if let Some(ip) = ip {
        meta["annotations"] = json!({"ferrolb.io/loadBalancerIPs": ip});
    }
    json!({
        "apiVersion": "v1", "kind": "Service", "metadata": meta,
        "spec": {"type": "LoadBalancer", "ports": [{"port": ECHO_PORT, "protocol": "UDP"}]},
    })
}

fn slice(svc: &str, node: &str, node_ip: &str) -> serde_json::Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{svc}-bench"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"port": ECHO_PORT, "protocol": "UDP"}],
        "endpoints": [{"addresses": [node_ip], "nodeName": node, "conditions": {"ready": true}}],
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let probe_bin = std::env::current_exe()?
        .parent()
        .map(|d| d.join("lab_probe"))
        .filter(|p| p.exists())
        .ok_or_else(|| {
            anyhow!("lab_probe not found beside bench_failover: cargo build -p ferrolb-e2e --bins")
        })?
        .display()
        .to_string();
    let process = process_case(&args, &probe_bin).await?;
    println!();
    let pods = pod_case(&args, &probe_bin).await?;
    summary(&process, &pods);
    Ok(())
}

/// The process-level benchmark: speakers as processes on a lab without kubelets, the oracle
/// beside them, then ARP latency and idle API requests. Returns the fail-over times per mode
/// (`speakers`, `oracle`), in ms.
async fn process_case(
    args: &Args,
    probe_bin: &str,
) -> anyhow::Result<BTreeMap<&'static str, Vec<f64>>> {
    let probe_bin = probe_bin.to_string();
    let speaker_bin = binary("ferrolb-speaker");
    let lab = Lab::up(LabOptions {
        nodes: 3,
        kube_proxy: false,
        kubelet: false,
        ..LabOptions::default()
    })
    .await?;
    println!("lab {} up", lab.id());
    install_crds(&lab)?;
    let _controller = start_host_controller(&lab)?;
    let client = lab.client().await?;
    let nodes: Vec<(String, String)> = lab
        .nodes()
        .iter()
        .map(|n| (n.name.clone(), n.ipv4.to_string()))
        .collect();
    let mut bench = Bench {
        lab,
        speaker_bin,
        speaker_flags: args.speaker_flags.clone(),
        speakers: BTreeMap::new(),
        starts: 0,
    };

    // Nodes: VIP on lo (kernel never answers ARP for it), a UDP echo, an oracle agent.
    let mut echos = Vec::new();
    let mut agents: BTreeMap<String, Agent> = BTreeMap::new();
    for (node, _) in &nodes {
        for s in [
            "net.ipv4.conf.all.arp_ignore=1",
            "net.ipv4.conf.all.arp_announce=2",
        ] {
            bench.exec_ok(node, &["sysctl", "-q", "-w", s])?;
        }
        bench.exec_ok(
            node,
            &["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"],
        )?;
        let bind = format!("0.0.0.0:{ECHO_PORT}");
        echos.push(bench.lab.spawn(
            node,
            &[
                &probe_bin,
                "udp-echo",
                "--bind",
                &bind,
                "--name",
                node,
                "--seconds",
                "1800",
            ],
            &format!("echo-{node}"),
        )?);
        let ns = bench.lab.netns(node)?;
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                &probe_bin,
                "garp-agent",
                "--iface",
                "eth0",
                "--ip",
                VIP,
                "--seconds",
                "1800",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first)?;
        ensure!(first.trim() == "ready", "garp-agent on {node}: {first:?}");
        agents.insert(node.clone(), Agent { child, stdin });
    }

    // Pools, advertisement, the benchmark Service (endpoint anywhere: Cluster policy).
    let mut tries = 0;
    while let Err(e) = apply(&client, &[json!({
        "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "bench"},
        "spec": {"addresses": ["198.51.100.64/27", "198.51.100.100-198.51.100.199"]},
    })]).await
    {
        tries += 1;
        ensure!(tries < 50, "pool: {e:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    apply(&client, &[json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "L2Advertisement", "metadata": {"name": "all"}, "spec": {}})]).await?;
    apply(
        &client,
        &[
            service("bench", Some(VIP)),
            slice("bench", &nodes[0].0, &nodes[0].1),
        ],
    )
    .await?;
    for (node, ip) in &nodes {
        bench.start_speaker(node, ip)?;
    }
    wait_announced(&client, &["bench".to_string()], Duration::from_secs(30)).await?;

    // The client's probe runs for the whole fail-over part.
    let seconds = (args.rounds as u64 * 2 * 6 + 30).to_string();
    let target = format!("{VIP}:{ECHO_PORT}");
    let _probe = bench.lab.spawn(
        "client",
        &[
            &probe_bin,
            "udp-probe",
            "--target",
            &target,
            "--interval-us",
            "1000",
            "--seconds",
            &seconds,
        ],
        "udp-probe",
    )?;
    let mut log = ProbeLog {
        file: std::fs::File::open(bench.lab.log_path("udp-probe"))?,
        pending: String::new(),
    };
    let _ = log.file.seek(SeekFrom::End(0));

    let vip: IpAddr = VIP.parse()?;
    let mut results: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut wrong_node = 0usize;
    let mut timeouts = 0usize;
    let mut snatches = 0usize;
    for round in 0..args.rounds * 2 {
        let mode = if round % 2 == 0 { "speakers" } else { "oracle" };
        // The current responder: every reply of the last 200 ms from one node.
        let current = log
            .stable_responder()
            .await
            .ok_or_else(|| anyhow!("no stable responder before round {round}"))?;
        let others: Vec<&str> = nodes
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| *n != current)
            .collect();
        let next = election::preference(vip, &others)
            .first()
            .copied()
            .unwrap_or_default()
            .to_string();
        let victim_ns = bench.lab.netns(&current)?;
        // Kill: the node leaves the LAN, then its speaker dies.
        let out = Command::new("ip")
            .args(["-n", &victim_ns, "link", "set", "eth0", "down"])
            .output()?;
        ensure!(out.status.success(), "link down failed");
        let t0 = unix_us();
        if mode == "oracle"
            && let Some(a) = agents.get_mut(&next)
        {
            a.stdin.write_all(b"go\n")?;
            a.stdin.flush()?;
        }
        if let Some(mut p) = bench.speakers.remove(&current) {
            let _ = p.kill();
        }
        match log
            .first_reply_elsewhere(t0, &current, Duration::from_secs(3))
            .await
        {
            Some(Takeover { ms, who, .. }) => {
                results.entry(mode).or_default().push(ms);
                if who != next {
                    wrong_node += 1;
                }
                println!(
                    "round {round:2} {mode:8} {current} -> {who} (elected {next}): {ms:7.1} ms"
                );
            }
            None => {
                timeouts += 1;
                println!(
                    "round {round:2} {mode:8} {current}: no reply via another node within 3 s"
                );
            }
        }
        // The node comes back and must not take the IP back.
        let out = Command::new("ip")
            .args(["-n", &victim_ns, "link", "set", "eth0", "up"])
            .output()?;
        ensure!(out.status.success(), "link up failed");
        let ip = nodes
            .iter()
            .find(|(n, _)| *n == current)
            .map(|(_, i)| i.clone())
            .unwrap_or_default();
        bench.start_speaker(&current, &ip)?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if log.read().iter().any(|(_, w)| *w == current) {
            snatches += 1;
        }
    }

    println!();
    println!("fail-over time (kill -> first reply via the new node), probe every 1 ms:");
    println!(
        "{:<10} {:>5} {:>9} {:>9} {:>9}",
        "mode", "n", "p50 ms", "p99 ms", "max ms"
    );
    for (mode, v) in &results {
        let (p50, p99, max) = stats(v);
        println!("{mode:<10} {:>5} {p50:>9.1} {p99:>9.1} {max:>9.1}", v.len());
    }
    if let (Some(s), Some(o)) = (results.get("speakers"), results.get("oracle")) {
        let (sp50, sp99, _) = stats(s);
        let (op50, op99, _) = stats(o);
        println!(
            "ratio speakers/oracle: p50 {:.1}x, p99 {:.1}x",
            sp50 / op50,
            sp99 / op99
        );
    }
    println!(
        "rounds without a reply within 3 s: {timeouts}; answered by another node than elected: {wrong_node}; returning node took the IP back: {snatches}"
    );

    // ARP reply latency: the speaker, then the kernel for the same IP on an interface.
    let speaker_out = bench.exec_ok(
        "client",
        &["arping", "-c", "200", "-W", "0.005", "-i", "eth0", VIP],
    )?;
    let speaker_t = arping_times(&speaker_out);
    let names: Vec<String> = bench.speakers.keys().cloned().collect();
    for n in &names {
        if let Some(mut p) = bench.speakers.remove(n) {
            let _ = p.signal(ferrolb_lab::Signal::Term);
            let _ = p.wait_timeout(Duration::from_secs(5));
        }
    }
    let n1 = nodes[0].0.clone();
    bench.exec_ok(
        &n1,
        &["ip", "addr", "add", &format!("{VIP}/32"), "dev", "eth0"],
    )?;
    let kernel_out = bench.exec_ok(
        "client",
        &["arping", "-c", "200", "-W", "0.005", "-i", "eth0", VIP],
    )?;
    let kernel_t = arping_times(&kernel_out);
    bench.exec_ok(
        &n1,
        &["ip", "addr", "del", &format!("{VIP}/32"), "dev", "eth0"],
    )?;
    let (sp50, sp99, smax) = stats(&speaker_t);
    let (kp50, kp99, kmax) = stats(&kernel_t);
    println!();
    println!(
        "ARP reply latency seen by arping (µs): {:<8} {:>5} {:>8} {:>8} {:>8}",
        "", "n", "p50", "p99", "max"
    );
    println!(
        "{:<46} {:>5} {sp50:>8.0} {sp99:>8.0} {smax:>8.0}",
        "speaker (userspace, packet socket)",
        speaker_t.len()
    );
    println!(
        "{:<46} {:>5} {kp50:>8.0} {kp99:>8.0} {kmax:>8.0}",
        "kernel (same IP on node-1 eth0)",
        kernel_t.len()
    );

    // API requests with 100 Services idle.
    for (node, ip) in &nodes {
        bench.start_speaker(node, ip)?;
    }
    let mut objs = Vec::new();
    let mut names = Vec::new();
    for i in 0..100 {
        let name = format!("idle-{i:03}");
        let (node, ip) = &nodes[i % nodes.len()];
        objs.push(service(&name, None));
        objs.push(slice(&name, node, ip));
        names.push(name);
    }
    apply(&client, &objs).await?;
    wait_announced(&client, &names, Duration::from_secs(90)).await?;
    // Let the last writes and events land before the window opens.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let speaker_sum = |b: &Bench| -> f64 {
        nodes
            .iter()
            .map(|(n, ip)| b.metrics_sum(ip, n, "ferrolb_speaker_api_requests_total"))
            .sum()
    };
    let s0 = speaker_sum(&bench);
    let a0 = apiserver_requests(&bench.lab);
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let s1 = speaker_sum(&bench);
    let a1 = apiserver_requests(&bench.lab);
    let per_min = |d: f64| d * 60.0 / args.idle_seconds as f64;
    println!();
    println!(
        "API requests per minute, 101 Services announced, idle for {} s:",
        args.idle_seconds
    );
    println!(
        "  speakers (3, own counters: status/event writes and watch lists): {:.1}",
        per_min(s1 - s0)
    );
    println!(
        "  API server total, all clients (controller, kcm, speakers, this harness's scrapes): {:.1}",
        per_min(a1 - a0)
    );
    drop(agents);
    drop(echos);
    let report = bench.lab.down();
    if !report.problems.is_empty() {
        eprintln!("teardown problems: {:?}", report.problems);
    }
    Ok(results)
}

/// How the announcing speaker pod ends in a real-pod round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PodEnd {
    /// `DELETE` of the pod through the API: graceful, SIGTERM from the kubelet.
    Delete,
    /// SIGKILL of its container through the node's containerd.
    Kill,
}

impl PodEnd {
    fn as_str(self) -> &'static str {
        match self {
            PodEnd::Delete => "pod delete",
            PodEnd::Kill => "container kill",
        }
    }
}

/// What the real-pod rounds measured.
#[derive(Debug, Default)]
struct PodResults {
    /// Fail-over times (ms) per way of ending the pod.
    failover: BTreeMap<PodEnd, Vec<f64>>,
    /// The longest time without a reply in each round (ms), per way of ending the pod.
    silence: BTreeMap<PodEnd, Vec<f64>>,
    /// Rounds without a reply through another node within [`POD_WINDOW`].
    timeouts: usize,
    /// Rounds answered through another node than the one elected.
    wrong_node: usize,
    /// Rounds whose node took the IP back once its new speaker ran.
    snatches: usize,
}

/// The speaker pod on `node` that runs and is not being deleted: its name, its container's
/// runtime id (`containerd://` removed) once it has one, and whether it is Ready.
async fn speaker_pod(
    pods: &Api<Pod>,
    node: &str,
) -> anyhow::Result<Option<(String, Option<String>, bool)>> {
    let list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/component=speaker"))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .map(|p| {
            let status = p.status.unwrap_or_default();
            let ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let container = status
                .container_statuses
                .iter()
                .flatten()
                .find(|c| c.name == "speaker")
                .and_then(|c| c.container_id.clone())
                .and_then(|id| id.strip_prefix("containerd://").map(str::to_string));
            (p.metadata.name.unwrap_or_default(), container, ready)
        }))
}

/// Waits (at most `timeout`) for a Ready speaker pod on `node` other than `old`.
async fn wait_new_speaker(
    pods: &Api<Pod>,
    node: &str,
    old: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some((name, _, true)) = speaker_pod(pods, node).await?
            && name != old
        {
            return Ok(name);
        }
        ensure!(
            Instant::now() < deadline,
            "no new Ready speaker on {node} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The last lines of a speaker pod's log (from the kubelet's files) that say what it did with
/// peers and IPs, indented, for a round that went wrong.
fn speaker_log_summary(lab: &Lab, pod: &str) -> String {
    let text = pod_log(lab.run_dir(), "ferrolb-system", pod, "speaker")
        .unwrap_or_else(|e| format!("(no log: {e:#})"));
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            [
                "announc",
                "withdraw",
                "peer",
                "membership",
                "stalled",
                "claim",
                "no log",
            ]
            .iter()
            .any(|k| l.contains(k))
        })
        .collect();
    lines[lines.len().saturating_sub(10)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The real-pod benchmark (see the module documentation).
async fn pod_case(args: &Args, probe_bin: &str) -> anyhow::Result<PodResults> {
    let image = ferrolb_image()?;
    let lab = Lab::up(LabOptions {
        nodes: 3,
        kube_proxy: true,
        kubelet: true,
        images: vec![image],
        ..LabOptions::default()
    })
    .await?;
    println!("lab {} with real nodes up", lab.id());
    let result = pod_rounds(&lab, args, probe_bin).await;
    let report = lab.down();
    if !report.problems.is_empty() {
        eprintln!("teardown problems: {:?}", report.problems);
    }
    result
}

async fn pod_rounds(lab: &Lab, args: &Args, probe_bin: &str) -> anyhow::Result<PodResults> {
    let chart = ferrolb_e2e::workspace().join("charts/ferrolb");
    let chart = chart.display().to_string();
    helm(
        lab,
        &[
            "install",
            "ferrolb",
            &chart,
            "--namespace",
            "ferrolb-system",
            "--create-namespace",
            "--set",
            "image.pullPolicy=Never",
            "--set",
            "addressPool.create=true",
            "--set",
            "addressPool.name=bench",
            "--set",
            "addressPool.addresses={198.51.100.64/27}",
        ],
    )?;
    for w in ["deployment/ferrolb-controller", "daemonset/ferrolb-speaker"] {
        wait_rollout(lab, "ferrolb-system", w, Duration::from_secs(180))?;
    }
    let client = lab.client().await?;
    // The responder on every node: a pod of the backend image, named after its node.
    let mut svc = service("bench", Some(VIP));
    svc["spec"]["externalTrafficPolicy"] = json!("Local");
    svc["spec"]["selector"] = json!({"app": "echo"});
    apply(
        &client,
        &[
            json!({
                "apiVersion": "apps/v1", "kind": "DaemonSet",
                "metadata": {"name": "echo", "namespace": "default"},
                "spec": {
                    "selector": {"matchLabels": {"app": "echo"}},
                    "template": {
                        "metadata": {"labels": {"app": "echo"}},
                        "spec": {"containers": [{
                            "name": "backend",
                            "image": ferrolb_lab::image::BACKEND,
                            "imagePullPolicy": "Never",
                            "env": [
                                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                            ],
                            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                        }]},
                    },
                },
            }),
            svc,
        ],
    )
    .await?;
    wait_rollout(lab, "default", "daemonset/echo", Duration::from_secs(120))?;
    wait_announced(&client, &["bench".to_string()], Duration::from_secs(60)).await?;

    let rounds = usize::from(args.pod_rounds) * 2;
    let seconds = (rounds as u64 * 40 + 60).to_string();
    let target = format!("{VIP}:{ECHO_PORT}");
    let _probe = lab.spawn(
        "client",
        &[
            probe_bin,
            "udp-probe",
            "--target",
            &target,
            "--interval-us",
            "1000",
            "--seconds",
            &seconds,
        ],
        "udp-probe-pods",
    )?;
    let mut log = ProbeLog {
        file: std::fs::File::open(lab.log_path("udp-probe-pods"))?,
        pending: String::new(),
    };
    let _ = log.file.seek(SeekFrom::End(0));

    let pods: Api<Pod> = Api::namespaced(client.clone(), "ferrolb-system");
    let nodes: Vec<String> = lab.nodes().iter().map(|n| n.name.clone()).collect();
    let vip: IpAddr = VIP.parse()?;
    let mut out = PodResults::default();
    for round in 0..rounds {
        let end = if round % 2 == 0 {
            PodEnd::Delete
        } else {
            PodEnd::Kill
        };
        let current = log
            .stable_responder()
            .await
            .ok_or_else(|| anyhow!("no stable responder before pod round {round}"))?;
        let others: Vec<&str> = nodes
            .iter()
            .map(String::as_str)
            .filter(|n| *n != current)
            .collect();
        let next = election::preference(vip, &others)
            .first()
            .copied()
            .unwrap_or_default()
            .to_string();
        let (pod, container, _) = speaker_pod(&pods, &current)
            .await?
            .ok_or_else(|| anyhow!("no speaker pod on {current}"))?;
        let kill = match end {
            PodEnd::Delete => None,
            PodEnd::Kill => {
                let id = container.ok_or_else(|| anyhow!("{pod} has no container id yet"))?;
                let sock = NodeLayout::new(lab.run_dir(), &current).containerd_socket();
                let mut cmd = Command::new(CTR);
                cmd.arg("--address").arg(sock).args([
                    "-n",
                    CRI_NAMESPACE,
                    "tasks",
                    "kill",
                    "-s",
                    "SIGKILL",
                    &id,
                ]);
                Some(cmd)
            }
        };
        let t0 = unix_us();
        match kill {
            None => {
                pods.delete(&pod, &DeleteParams::default())
                    .await
                    .with_context(|| format!("delete {pod}"))?;
            }
            Some(mut cmd) => {
                let o = cmd.output().context("run ctr")?;
                ensure!(
                    o.status.success(),
                    "ctr tasks kill {pod}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
        match log.first_reply_elsewhere(t0, &current, POD_WINDOW).await {
            Some(Takeover {
                ms,
                who,
                silence_ms,
            }) => {
                out.failover.entry(end).or_default().push(ms);
                out.silence.entry(end).or_default().push(silence_ms);
                if who != next {
                    out.wrong_node += 1;
                }
                println!(
                    "pod round {round:2} {:<14} {current} -> {who} (elected {next}): {ms:7.1} ms, longest silence {silence_ms:6.1} ms",
                    end.as_str()
                );
            }
            None => {
                out.timeouts += 1;
                println!(
                    "pod round {round:2} {:<14} {current}: no reply via another node within {POD_WINDOW:?}",
                    end.as_str()
                );
            }
        }
        // Kept before the kubelet removes the pod's logs with it, to explain a take-back.
        let old_log = speaker_log_summary(lab, &pod);
        // A new pod in any case: after a kill the kubelet would restart the container, but
        // with a back-off that grows with every kill of the same pod.
        if end == PodEnd::Kill {
            pods.delete(&pod, &DeleteParams::default())
                .await
                .with_context(|| format!("delete {pod}"))?;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = log.read();
        let new = wait_new_speaker(&pods, &current, &pod, Duration::from_secs(90)).await?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if let Some((t, _)) = log.read().into_iter().find(|(_, w)| *w == current) {
            out.snatches += 1;
            println!(
                "pod round {round:2}: {new} on {current} took the IP back ({:.1} s after the kill)\n  {pod} (the old pod):\n{old_log}\n  {new}:\n{}",
                (t - t0) as f64 / 1e6,
                speaker_log_summary(lab, &new)
            );
        }
    }
    Ok(out)
}

/// Both labs' fail-over figures side by side, then the goals.
fn summary(process: &BTreeMap<&'static str, Vec<f64>>, pods: &PodResults) {
    println!();
    println!("fail-over time (first reply via the new node), probe every 1 ms, both labs:");
    println!(
        "{:<44} {:>4} {:>8} {:>8} {:>8} {:>13}",
        "case", "n", "p50 ms", "p99 ms", "max ms", "p50/process"
    );
    let (proc_p50, proc_p99, _) =
        process
            .get("speakers")
            .map(|v| stats(v))
            .unwrap_or((f64::NAN, f64::NAN, f64::NAN));
    let row = |name: &str, v: &[f64]| {
        let (p50, p99, max) = stats(v);
        println!(
            "{name:<44} {:>4} {p50:>8.1} {p99:>8.1} {max:>8.1} {:>12.2}x",
            v.len(),
            p50 / proc_p50
        );
    };
    if let Some(v) = process.get("speakers") {
        row("processes: link down + SIGKILL (comparator)", v);
    }
    if let Some(v) = process.get("oracle") {
        row("processes: oracle GARP (floor)", v);
    }
    for (end, v) in &pods.failover {
        row(&format!("pods: {}", end.as_str()), v);
    }
    for (end, v) in &pods.silence {
        let (p50, _, max) = stats(v);
        println!(
            "pods: {}: longest silence the client saw, p50 {p50:.1} ms, max {max:.1} ms (the node stays up)",
            end.as_str()
        );
    }
    println!(
        "pod rounds without a reply within {POD_WINDOW:?}: {}; answered by another node than elected: {}; returning node took the IP back: {}",
        pods.timeouts, pods.wrong_node, pods.snatches
    );
    println!();
    let p99_of = |end: PodEnd| {
        pods.failover
            .get(&end)
            .map(|v| stats(v).1)
            .unwrap_or(f64::NAN)
    };
    let p50_of = |end: PodEnd| {
        pods.failover
            .get(&end)
            .map(|v| stats(v).0)
            .unwrap_or(f64::NAN)
    };
    println!("goal failover-process-p99: {proc_p99:.1} ms (target <= 300 ms)");
    println!(
        "goal failover-pod-kill-p99: {:.1} ms (target <= 300 ms)",
        p99_of(PodEnd::Kill)
    );
    println!(
        "goal failover-pod-kill-vs-process-p50: {:.2} x (target <= 1.5 x)",
        p50_of(PodEnd::Kill) / proc_p50
    );
    println!(
        "goal failover-pod-delete-p99: {:.1} ms (target <= 1000 ms)",
        p99_of(PodEnd::Delete)
    );
    println!(
        "goal pod-rounds-without-takeover: {} rounds (target = 0 rounds)",
        pods.timeouts
    );
}
