//! `make bench-bgp`: BGP mode against BIRD 2 in the lab, each scenario at least `--runs` times
//! (default 20), p50/p95/max, ending with `goal` lines.
//!
//! 1. Silent node death (its LAN port down): time to the router's route change (`ip -ts
//!    monitor route` in the router) and to the client's first reply through another node (a
//!    UDP probe every millisecond from behind the router), with BFD 300 ms × 3 and, as the
//!    comparator, with the hold timer only (9 s).
//! 2. A rolling restart of every speaker with graceful restart: datagrams lost by 6 UDP flows
//!    (one every 2 ms each) while each speaker in turn stops and starts. BIRD runs
//!    `bfd graceful` here (BIRD 2.0.12 reads BFD AdminDown as a failure; see docs/bgp.md).
//! 3. A node leaving (out-of-service taint, then its LAN port down as the shutdown): failed new
//!    TCP connections (one every 10 ms); the comparator is the same shutdown without the taint.
//! 4. A hung speaker (SIGSTOP): time to the router's route change and datagrams lost.
//! 5. Both cores busy (stress-ng, bounded): BFD sessions going down at 300 ms × 3.
//!
//! Speakers run as processes (admin kubeconfig) on stand-in nodes with kube-proxy; the Service
//! is `externalTrafficPolicy: Local` with an endpoint on every node, so a reply names the node
//! the router sent the datagram to. Every loop is bounded; the lab is removed at the end.

#[path = "../bgp.rs"]
mod bgp;

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use bgp::{BgpLab, advertisement, bfd_profile, peer, percentile};
use clap::Parser;
use ferrolb_lab::{Signal, router};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(
    name = "bench_bgp",
    about = "BGP mode failover and graceful behaviours against BIRD"
)]
struct Args {
    /// Runs per scenario.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Only these scenarios (comma separated: death, restart, drain, sigstop, busy).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

fn now_us() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i128)
        .unwrap_or(0)
}

/// Lines of a child's stdout with the time they were read, collected by a thread.
struct Lines {
    child: Child,
    lines: Arc<Mutex<Vec<(i128, String)>>>,
}

impl Lines {
    fn spawn(netns: &str, argv: &[&str]) -> anyhow::Result<Lines> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns])
            .args(argv)
            .env("TZ", "UTC")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawn {argv:?} in {netns}"))?;
        let out = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(mut v) = sink.lock() {
                    v.push((now_us(), l));
                }
            }
        });
        Ok(Lines { child, lines })
    }

    fn snapshot(&self) -> Vec<(i128, String)> {
        self.lines.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn clear(&self) {
        if let Ok(mut v) = self.lines.lock() {
            v.clear();
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `[2026-12-07T09:17:30.313859] ...` (ip -ts, TZ=UTC) → unix µs.
fn monitor_time(line: &str) -> Option<i128> {
    let ts = line.strip_prefix('[')?.split(']').next()?;
    let dt: k8s_openapi::jiff::civil::DateTime = ts.parse().ok()?;
    let z = dt.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC).ok()?;
    Some(z.timestamp().as_microsecond() as i128)
}

/// UDP probe replies: `<unix µs> <seq> <node>`.
fn replies(lines: &[(i128, String)]) -> Vec<(i128, u64, String)> {
    lines
        .iter()
        .filter_map(|(_, l)| {
            let mut w = l.split_whitespace();
            let t: i128 = w.next()?.parse().ok()?;
            let s: u64 = w.next()?.parse().ok()?;
            Some((t, s, w.next()?.to_string()))
        })
        .collect()
}

struct Stats {
    name: String,
    unit: &'static str,
    values: Vec<f64>,
}

impl Stats {
    fn new(name: &str, unit: &'static str) -> Stats {
        Stats {
            name: name.into(),
            unit,
            values: Vec::new(),
        }
    }
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.values.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    }
    fn p(&self, q: f64) -> f64 {
        percentile(&self.sorted(), q)
    }
    fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
    fn line(&self) -> String {
        format!(
            "{:<58} n={:<3} p50={:>9.1} p95={:>9.1} max={:>9.1} {}",
            self.name,
            self.values.len(),
            self.p(50.0),
            self.p(95.0),
            self.max(),
            self.unit
        )
    }
}

struct Bench {
    env: BgpLab,
    ip: IpAddr,
    monitor: Lines,
    args: Args,
}

impl Bench {
    fn lan_port(&self, node: &str, up: bool) -> anyhow::Result<()> {
        let port = format!("v-{node}");
        let out = self.env.lab.exec(
            "lan",
            &["ip", "link", "set", &port, if up { "up" } else { "down" }],
        )?;
        anyhow::ensure!(out.status.success(), "ip link set {port}");
        Ok(())
    }

    async fn all_hops(&self, within: Duration) -> anyhow::Result<()> {
        let nodes = self.env.nodes();
        let all: Vec<&str> = nodes.iter().map(String::as_str).collect();
        self.env.wait_next_hops(self.ip, &all, within).await?;
        Ok(())
    }

    /// The first route change for the Service IP after `t0`, µs after it.
    fn route_change_after(&self, t0: i128) -> Option<f64> {
        let ip = self.ip.to_string();
        self.monitor
            .snapshot()
            .iter()
            .filter(|(_, l)| l.contains(&ip))
            .filter_map(|(_, l)| monitor_time(l))
            .find(|t| *t >= t0)
            .map(|t| (t - t0) as f64 / 1000.0)
    }

    fn udp_probe(
        &self,
        flows: usize,
        interval_us: u64,
        seconds: u64,
    ) -> anyhow::Result<Vec<Lines>> {
        let probe = ferrolb_e2e::binary("lab_probe");
        let target = format!("{}:9000", self.ip);
        let iv = interval_us.to_string();
        let secs = seconds.to_string();
        (0..flows)
            .map(|_| {
                Lines::spawn(
                    &self.env.router.client_netns,
                    &[
                        &probe,
                        "udp-probe",
                        "--target",
                        &target,
                        "--interval-us",
                        &iv,
                        "--seconds",
                        &secs,
                    ],
                )
            })
            .collect()
    }

    /// Scenario 1 for one BFD setting: `runs` deaths; (route change ms, first reply ms).
    async fn deaths(&mut self, label: &str, runs: usize) -> anyhow::Result<(Stats, Stats)> {
        let mut route = Stats::new(&format!("silent death, {label}: router route change"), "ms");
        let mut reply = Stats::new(
            &format!("silent death, {label}: first reply via another node"),
            "ms",
        );
        for run in 0..runs {
            self.all_hops(Duration::from_secs(90)).await?;
            let probe = self.udp_probe(1, 1000, 60)?;
            // Which node serves the flow now.
            let deadline = Instant::now() + Duration::from_secs(5);
            let victim = loop {
                if let Some((_, _, who)) = replies(&probe[0].snapshot()).last().cloned() {
                    break who;
                }
                if Instant::now() > deadline {
                    bail!("the probe got no reply");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            self.monitor.clear();
            let t0 = now_us();
            self.lan_port(&victim, false)?;
            let deadline = Instant::now() + Duration::from_secs(60);
            let first = loop {
                if let Some((t, _, _)) = replies(&probe[0].snapshot())
                    .into_iter()
                    .find(|(t, _, who)| *t > t0 && *who != victim)
                {
                    break Some(t);
                }
                if Instant::now() > deadline {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            // Let the route event land in the monitor's output.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let rc = self.route_change_after(t0);
            self.lan_port(&victim, true)?;
            drop(probe);
            match (rc, first) {
                (Some(rc), Some(f)) => {
                    route.values.push(rc);
                    reply.values.push((f - t0) as f64 / 1000.0);
                    println!(
                        "  {label} run {run}: {victim} down; route {rc:.0} ms, first reply {:.0} ms",
                        (f - t0) as f64 / 1000.0
                    );
                }
                other => println!("  {label} run {run}: {victim} down; incomplete {other:?}"),
            }
        }
        Ok((route, reply))
    }

    /// Scenario 2: datagrams lost per rolling restart of every speaker.
    async fn rolling_restart(&mut self, runs: usize) -> anyhow::Result<Stats> {
        let mut lost = Stats::new(
            "rolling restart of every speaker (GR): datagrams lost",
            "datagrams",
        );
        self.env.bird_conf.bfd_graceful = true;
        self.env.reconfigure_bird()?;
        // Let the reconfigured BFD requests settle before the first run.
        tokio::time::sleep(Duration::from_secs(5)).await;
        for run in 0..runs {
            self.all_hops(Duration::from_secs(90)).await?;
            let probes = self.udp_probe(6, 2000, 60)?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let t0 = now_us();
            for n in self.env.nodes() {
                self.env.stop_speaker(&n, Duration::from_secs(10))?;
                self.env.start_speaker(&n)?;
                let i = n.trim_start_matches("node-").to_string();
                self.env
                    .wait_established(&format!("node_{i}"), Duration::from_secs(30))
                    .await?;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let t1 = now_us();
            // Lost: sequence numbers sent between t0 and t1 without a reply. A probe sends
            // one datagram per 2 ms from its start; replies name their sequence number.
            let mut missing = 0u64;
            for p in &probes {
                let r = replies(&p.snapshot());
                let inside: Vec<u64> = r
                    .iter()
                    .filter(|(t, _, _)| *t >= t0 && *t <= t1)
                    .map(|(_, s, _)| *s)
                    .collect();
                if let (Some(lo), Some(hi)) = (inside.iter().min(), inside.iter().max()) {
                    let got: std::collections::BTreeSet<u64> = inside.iter().copied().collect();
                    let gone: Vec<u64> = (*lo..=*hi).filter(|s| !got.contains(s)).collect();
                    if let (Some(a), Some(z)) = (gone.first(), gone.last()) {
                        // Sequence numbers are 2 ms apart: where in the run the loss was.
                        let last = r
                            .iter()
                            .filter(|(_, s, _)| s < a)
                            .map(|(_, _, w)| w.clone())
                            .next_back();
                        println!(
                            "    lost seq {a}..{z} ({} datagrams), last reply before from {last:?}",
                            gone.len()
                        );
                    }
                    missing += gone.len() as u64;
                } else {
                    missing += ((t1 - t0) / 2000) as u64;
                }
            }
            println!("  restart run {run}: {missing} datagrams lost");
            lost.values.push(missing as f64);
        }
        self.env.bird_conf.bfd_graceful = false;
        self.env.reconfigure_bird()?;
        Ok(lost)
    }

    /// Scenario 3: failed new connections while a node leaves (`taint`) or just dies.
    async fn leave(&mut self, runs: usize, taint: bool) -> anyhow::Result<Stats> {
        let label = if taint {
            "node leaving (taint, drain, then power off): failed new connections"
        } else {
            "comparator: power off without leaving: failed new connections"
        };
        let mut failed = Stats::new(label, "connections");
        let probe = ferrolb_e2e::binary("lab_probe");
        let target = format!("{}:80", self.ip);
        for run in 0..runs {
            self.all_hops(Duration::from_secs(90)).await?;
            let nodes = self.env.nodes();
            let victim = nodes[run % nodes.len()].clone();
            let p = Lines::spawn(
                &self.env.router.client_netns,
                &[
                    &probe,
                    "tcp-probe",
                    "--target",
                    &target,
                    "--interval-ms",
                    "10",
                    "--timeout-ms",
                    "1000",
                    "--seconds",
                    "8",
                ],
            )?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            if taint {
                self.env.kubectl(&[
                    "taint",
                    "node",
                    &victim,
                    "node.kubernetes.io/out-of-service=nodeshutdown:NoExecute",
                ])?;
                // Withdrawn, then the drain (2 s), then Cease; the node powers off after.
                let others: Vec<String> = nodes.iter().filter(|n| **n != victim).cloned().collect();
                let others: Vec<&str> = others.iter().map(String::as_str).collect();
                self.env
                    .wait_next_hops(self.ip, &others, Duration::from_secs(10))
                    .await?;
                tokio::time::sleep(Duration::from_millis(2500)).await;
            } else {
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
            self.lan_port(&victim, false)?;
            // The probe ends by itself (8 s); its summary is its last line.
            let deadline = Instant::now() + Duration::from_secs(15);
            let summary = loop {
                if let Some((_, l)) = p
                    .snapshot()
                    .into_iter()
                    .find(|(_, l)| l.starts_with("attempts="))
                {
                    break Some(l);
                }
                if Instant::now() > deadline {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            self.lan_port(&victim, true)?;
            if taint {
                self.env.kubectl(&[
                    "taint",
                    "node",
                    &victim,
                    "node.kubernetes.io/out-of-service-",
                ])?;
            }
            let Some(s) = summary else {
                println!("  leave run {run}: no summary");
                continue;
            };
            let n = s
                .split_whitespace()
                .find_map(|w| w.strip_prefix("failed="))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(f64::NAN);
            println!(
                "  {} run {run}: {victim}: {s}",
                if taint { "leave" } else { "power-off" }
            );
            failed.values.push(n);
        }
        Ok(failed)
    }

    /// Scenario 4: SIGSTOP of a speaker: route change and datagrams lost.
    async fn sigstop(&mut self, runs: usize) -> anyhow::Result<(Stats, Stats)> {
        let mut route = Stats::new("hung speaker (SIGSTOP): router route change", "ms");
        let mut lost = Stats::new(
            "hung speaker (SIGSTOP): datagrams lost, 6 flows",
            "datagrams",
        );
        for run in 0..runs {
            self.all_hops(Duration::from_secs(90)).await?;
            let nodes = self.env.nodes();
            let victim = nodes[run % nodes.len()].clone();
            let probes = self.udp_probe(6, 2000, 60)?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.monitor.clear();
            let t0 = now_us();
            self.env.signal_speaker(&victim, Signal::Stop)?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let t1 = now_us();
            self.env.signal_speaker(&victim, Signal::Cont)?;
            let rc = self.route_change_after(t0);
            let mut missing = 0u64;
            for p in &probes {
                let r = replies(&p.snapshot());
                let got: std::collections::BTreeSet<u64> = r
                    .iter()
                    .filter(|(t, _, _)| *t >= t0 && *t <= t1)
                    .map(|(_, s, _)| *s)
                    .collect();
                if let (Some(lo), Some(hi)) = (got.iter().next(), got.iter().next_back()) {
                    missing += (*lo..=*hi).filter(|s| !got.contains(s)).count() as u64;
                }
            }
            println!("  sigstop run {run}: {victim}: route change {rc:?} ms, {missing} lost");
            if let Some(rc) = rc {
                route.values.push(rc);
            }
            lost.values.push(missing as f64);
        }
        Ok((route, lost))
    }

    /// Scenario 5: BFD downs on the router while both cores are busy.
    async fn busy(&mut self, runs: usize) -> anyhow::Result<Stats> {
        let mut flaps = Stats::new(
            "both cores busy 10 s (stress-ng): BFD session downs",
            "downs",
        );
        for run in 0..runs {
            self.all_hops(Duration::from_secs(90)).await?;
            let log = std::fs::read_to_string(self.env.router.log_path()).unwrap_or_default();
            let before = log.matches("changed state from Up to Down").count();
            let out = self.env.lab.exec(
                "node-1",
                &["stress-ng", "--cpu", "2", "--timeout", "10s", "--quiet"],
            )?;
            anyhow::ensure!(out.status.success(), "stress-ng failed");
            tokio::time::sleep(Duration::from_millis(500)).await;
            let log = std::fs::read_to_string(self.env.router.log_path()).unwrap_or_default();
            let n = log.matches("changed state from Up to Down").count() - before;
            println!("  busy run {run}: {n} BFD downs");
            flaps.values.push(n as f64);
        }
        Ok(flaps)
    }
}

fn want(args: &Args, s: &str) -> bool {
    args.only.is_empty() || args.only.iter().any(|o| o == s)
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let env = BgpLab::up(3, &["--bgp-drain-delay", "2s"]).await?;
    let monitor = Lines::spawn(&env.router.netns, &["ip", "-ts", "monitor", "route"])?;
    let mut b = Bench {
        env,
        ip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        monitor,
        args,
    };
    b.env.start_bird()?;
    let profile = bfd_profile("bench");
    let with_bfd = peer(
        "tor",
        IpAddr::V4(router::LAN_V4),
        json!({"bfdProfile": "bench", "enableGracefulRestart": true, "connectTime": "2s"}),
    );
    b.env
        .apply(&[
            profile,
            with_bfd.clone(),
            advertisement(),
            BgpLab::service("echo", true, false),
        ])
        .await?;
    let nodes = b.env.nodes();
    let all: Vec<&str> = nodes.iter().map(String::as_str).collect();
    b.env.set_endpoints("echo", &all).await?;
    b.env.start_speakers()?;
    b.ip = b.env.service_ips("echo", 1).await?[0];
    b.all_hops(Duration::from_secs(60)).await?;
    // kube-proxy programs the Service within seconds.
    ferrolb_e2e::eventually("curl through the router", Duration::from_secs(20), || {
        std::future::ready(b.env.curl(b.ip, 40999).map(Some))
    })
    .await?;
    let runs = b.args.runs;
    let mut report: Vec<Stats> = Vec::new();
    let mut goals: Vec<String> = Vec::new();

    if want(&b.args, "death") {
        let (r_bfd, c_bfd) = b.deaths("BFD 300ms x3", runs).await?;
        // Comparator: the hold timer alone (9 s).
        b.env
            .apply(&[peer(
                "tor",
                IpAddr::V4(router::LAN_V4),
                json!({"enableGracefulRestart": true, "connectTime": "2s"}),
            )])
            .await?;
        for p in b.env.bird_conf.peers.iter_mut() {
            p.bfd = false;
        }
        b.env.reconfigure_bird()?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (r_hold, c_hold) = b.deaths("hold timer 9s", runs).await?;
        for p in b
            .env
            .bird_conf
            .peers
            .iter_mut()
            .filter(|p| p.address.is_ipv4())
        {
            p.bfd = true;
        }
        b.env.reconfigure_bird()?;
        b.env.apply(std::slice::from_ref(&with_bfd)).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let ratio = c_hold.p(50.0) / c_bfd.p(50.0);
        println!("ratio hold timer / BFD (first reply, p50): {ratio:.1}x");
        goals.push(format!(
            "goal failover_bfd_p95: {:.0} ms (target <= 1000 ms)",
            c_bfd.p(95.0)
        ));
        report.extend([r_bfd, c_bfd, r_hold, c_hold]);
    }
    if want(&b.args, "restart") {
        let lost = b.rolling_restart(runs).await?;
        goals.push(format!(
            "goal rolling_restart_lost_max: {:.0} datagrams (target == 0 datagrams)",
            lost.max()
        ));
        report.push(lost);
    }
    if want(&b.args, "drain") {
        let leave = b.leave(runs, true).await?;
        let abrupt = b.leave(runs, false).await?;
        println!(
            "failed new connections, leaving vs power off without leaving (sum): {} vs {}",
            leave.values.iter().sum::<f64>(),
            abrupt.values.iter().sum::<f64>()
        );
        goals.push(format!(
            "goal node_leaving_failed_connections_max: {:.0} connections (target == 0 connections)",
            leave.max()
        ));
        report.extend([leave, abrupt]);
    }
    if want(&b.args, "sigstop") {
        let (route, lost) = b.sigstop(runs).await?;
        goals.push(format!(
            "goal sigstop_route_change_p50: {:.0} ms (measured, no target)",
            route.p(50.0)
        ));
        report.extend([route, lost]);
    }
    if want(&b.args, "busy") {
        let flaps = b.busy(runs).await?;
        goals.push(format!(
            "goal busy_bfd_flaps_total: {:.0} downs (target == 0 downs)",
            flaps.values.iter().sum::<f64>()
        ));
        report.push(flaps);
    }
    println!("\n=== results");
    for s in &report {
        println!("{}", s.line());
    }
    for g in &goals {
        println!("{g}");
    }
    drop(b.monitor);
    b.env.down()?;
    Ok(())
}

fn main() {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench_bgp: runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(bench(args)) {
        eprintln!("bench_bgp: {e:#}");
        std::process::exit(1);
    }
}
