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

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure};
use clap::Parser;
use ferrolb_e2e::{apply, binary, install_crds, start_host_controller};
use ferrolb_lab::{Lab, LabOptions, LabProcess};
use ferrolb_speaker_core::election;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use serde_json::json;

const VIP: &str = "198.51.100.80";
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
    /// Extra speaker flags (e.g. --dead-after=300ms), comma separated.
    #[arg(long, value_delimiter = ',')]
    speaker_flags: Vec<String>,
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
        let current = {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let recent = log.read();
                if let Some((_, who)) = recent.last()
                    && recent.len() > 100
                    && recent.iter().all(|(_, w)| w == who)
                {
                    break who.clone();
                }
                ensure!(
                    Instant::now() < deadline,
                    "no stable responder before round {round}"
                );
            }
        };
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
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut got = None;
        while got.is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
            got = log
                .read()
                .into_iter()
                .find(|(t, w)| *t > t0 && *w != current);
        }
        match got {
            Some((t, who)) => {
                let ms = (t - t0) as f64 / 1000.0;
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
    Ok(())
}
