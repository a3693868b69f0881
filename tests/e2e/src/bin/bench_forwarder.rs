//! `make bench-forwarder`: forwarder mode's figures, each beside a comparator measured in the
//! same run, on a lab with real nodes (the chart's pods, real kube-proxy, a node pool).
//!
//! - create → node addresses in the Service's status, p50/p99, against the API server's own
//!   create → watch echo of the same objects;
//! - throughput and connection rate from the client through a published node address (kube-proxy's
//!   DNAT, `externalTrafficPolicy: Local` so no second hop) against the same backend pod reached
//!   directly (the client has a route to the pod network).
//!
//! Bounded: 100 Services, 5-second load runs, 5 runs per path. `bench_forwarder load ...` is the
//! load generator, run inside the client's namespace.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use ferrolb_e2e::{apply, ferrolb_image, helm, wait_rollout, workspace};
use ferrolb_lab::{Lab, LabOptions, ProxyMode};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event, watcher};
use serde_json::json;

const NS: &str = "ferrolb-system";
const APP: &str = "bench";
/// Services created for the latency figure.
const SERVICES: usize = 100;
/// One load run.
const RUN: Duration = Duration::from_secs(5);
/// Runs per path and measure.
const RUNS: usize = 5;
const T: Duration = Duration::from_secs(60);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("load") {
        return load(&args[1..]);
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench())
}

/// `load tput ADDR STREAMS` or `load conn ADDR WORKERS`: runs [`RUN`] and prints one number
/// (bytes/s or completed connections/s), then the number of failed connections.
fn load(args: &[String]) -> anyhow::Result<()> {
    let [kind, addr, n] = args else {
        bail!("usage: load tput|conn ADDR N");
    };
    let addr: SocketAddr = addr.parse().context("address")?;
    let n: usize = n.parse().context("N")?;
    let count = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + RUN;
    let workers: Vec<_> = (0..n)
        .map(|_| {
            let count = count.clone();
            let failed = failed.clone();
            let kind = kind.clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                match kind.as_str() {
                    "tput" => {
                        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
                        let buf = vec![0x5au8; 64 * 1024];
                        while Instant::now() < deadline {
                            s.write_all(&buf)?;
                            count.fetch_add(buf.len() as u64, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        let mut line = [0u8; 256];
                        while Instant::now() < deadline {
                            let mut one = || -> std::io::Result<()> {
                                let mut s =
                                    TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
                                s.set_read_timeout(Some(Duration::from_secs(1)))?;
                                while s.read(&mut line)? > 0 {}
                                Ok(())
                            };
                            match one() {
                                Ok(()) => count.fetch_add(1, Ordering::Relaxed),
                                Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                            };
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
    }
    println!(
        "{} {}",
        count.load(Ordering::Relaxed) as f64 / RUN.as_secs_f64(),
        failed.load(Ordering::Relaxed)
    );
    Ok(())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    pct(&v, 0.5)
}

/// One run of the load generator in the client's namespace: the rate, and failed connections.
fn run_load(lab: &Lab, kind: &str, addr: &str, n: usize) -> anyhow::Result<(f64, u64)> {
    let me = std::env::current_exe()?;
    let me = me.to_string_lossy();
    let out = lab.exec("client", &[&me, "load", kind, addr, &n.to_string()])?;
    ensure!(
        out.status.success(),
        "load {kind} {addr}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut it = text.split_whitespace();
    let rate = it.next().context("no rate")?.parse()?;
    let failed = it.next().context("no failure count")?.parse()?;
    Ok((rate, failed))
}

async fn bench() -> anyhow::Result<()> {
    let lab = Lab::up(LabOptions {
        nodes: 3,
        kube_proxy: true,
        proxy_mode: ProxyMode::Iptables,
        kubelet: true,
        images: vec![ferrolb_image()?],
        ..LabOptions::default()
    })
    .await?;
    let result = measure(&lab).await;
    let report = lab.down();
    if !report.is_clean() {
        eprintln!("lab teardown: {report:?}");
    }
    result
}

/// The machine's 1-minute load average, printed with the figures: they mean little on a busy
/// 2-core machine.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

async fn measure(lab: &Lab) -> anyhow::Result<()> {
    println!("load average at start: {}", loadavg());
    let client = lab.client().await?;
    let chart = workspace().join("charts/ferrolb");
    helm(
        lab,
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
    wait_rollout(lab, NS, "daemonset/ferrolb-speaker", T)?;
    wait_rollout(lab, NS, "deployment/ferrolb-controller", T)?;
    lab.kubectl(&["create", "namespace", APP])?;
    apply(
        &client,
        &[
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "sink", "namespace": APP},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "sink"}},
                    "template": {"metadata": {"labels": {"app": "sink"}}, "spec": {
                        "nodeSelector": {"kubernetes.io/hostname": "node-2"},
                        "containers": [{"name": "backend", "image": ferrolb_lab::image::BACKEND,
                            "imagePullPolicy": "Never", "args": ["--sink", "5001", "--udp", "0"],
                            "readinessProbe": {"tcpSocket": {"port": 9000}, "periodSeconds": 1}}]
                    }}
                }
            }),
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "sink", "namespace": APP},
                "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                    "selector": {"app": "sink"},
                    "ports": [
                        {"name": "sink", "port": 5001, "targetPort": 5001},
                        {"name": "line", "port": 9000, "targetPort": 9000}
                    ]}
            }),
        ],
    )
    .await?;
    wait_rollout(lab, APP, "deployment/sink", T)?;
    // The same backend through a pool the speakers forward themselves (ipMode: Proxy), on
    // ports of its own.
    apply(
        &client,
        &[
            json!({
                "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
                "metadata": {"name": "proxied"},
                "spec": {"autoAssign": false, "nodeAddresses": {"forwarding": "Speaker"}},
            }),
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "sink-p", "namespace": APP,
                    "annotations": {"ferrolb.io/address-pool": "proxied"}},
                "spec": {"type": "LoadBalancer", "selector": {"app": "sink"},
                    "ports": [
                        {"name": "sink", "port": 6001, "targetPort": 5001},
                        {"name": "line", "port": 6002, "targetPort": 9000}
                    ]}
            }),
        ],
    )
    .await?;
    let svcs: Api<Service> = Api::namespaced(client.clone(), APP);
    let started = Instant::now();
    loop {
        let ingress = svcs
            .get("sink")
            .await?
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress)
            .unwrap_or_default();
        if ingress
            .iter()
            .any(|i| i.ip.as_deref() == Some("198.51.100.12"))
        {
            break;
        }
        ensure!(
            started.elapsed() < T,
            "the sink Service was never published on node-2"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The client makes thousands of connections per run: let it reuse ports in TIME_WAIT and
    // use the whole ephemeral range (both settings are the client namespace's own).
    for sysctl in [
        "net.ipv4.tcp_tw_reuse=1",
        "net.ipv4.ip_local_port_range=1024 65000",
    ] {
        lab.exec("client", &["sysctl", "-q", "-w", sysctl])?;
    }
    let pod_ip = String::from_utf8_lossy(
        &lab.kubectl(&[
            "-n",
            APP,
            "get",
            "pods",
            "-l",
            "app=sink",
            "-o",
            "jsonpath={.items[0].status.podIP}",
        ])?
        .stdout,
    )
    .trim()
    .to_string();
    ensure!(!pod_ip.is_empty(), "no pod IP for the sink");

    // kube-proxy programs the rules a moment after the status: wait for one answer.
    let started = Instant::now();
    while !run_load(lab, "conn", "198.51.100.12:9000", 1).is_ok_and(|(r, f)| r > 0.0 && f == 0) {
        ensure!(
            started.elapsed() < T,
            "no answer through 198.51.100.12:9000"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    println!(
        "\n## Data path: client → node-2's address (kube-proxy DNAT, Local) vs client → the pod directly"
    );
    let mut rows = Vec::new();
    let mut failures = [0u64; 3];
    println!("(medians of {RUNS} runs of {RUN:?}; 4 streams or 4 connecting workers)");
    for (kind, unit, ports) in [
        ("tput", "MB/s", [5001, 5001, 6001]),
        ("conn", "conn/s", [9000, 9000, 6002]),
    ] {
        let addrs = [
            format!("{pod_ip}:{}", ports[0]),
            format!("198.51.100.12:{}", ports[1]),
            format!("198.51.100.12:{}", ports[2]),
        ];
        let mut runs: [Vec<f64>; 3] = Default::default();
        for _ in 0..RUNS {
            for (i, a) in addrs.iter().enumerate() {
                let (rate, failed) = run_load(lab, kind, a, 4)?;
                runs[i].push(rate);
                failures[i] += failed;
            }
        }
        let scale = if kind == "tput" { 1e6 } else { 1.0 };
        let m: Vec<f64> = runs.iter().map(|r| median(r.clone()) / scale).collect();
        for (i, name) in [
            "direct to the pod",
            "kube-proxy (ipMode VIP)",
            "speaker proxy (ipMode Proxy)",
        ]
        .iter()
        .enumerate()
        {
            println!(
                "{kind:>5} {name:<30} {:>10.1} {unit}  {:>6.1} % of direct  runs {:?}",
                m[i],
                100.0 * m[i] / m[0],
                runs[i]
                    .iter()
                    .map(|x| (x / scale).round())
                    .collect::<Vec<_>>()
            );
        }
        rows.push((kind, 100.0 * m[1] / m[0], 100.0 * m[2] / m[0]));
    }
    println!(
        "failed connections: direct {}, kube-proxy {}, speaker proxy {}",
        failures[0], failures[1], failures[2]
    );

    println!(
        "\n## create → node addresses in status, {SERVICES} Services, against the API's create → watch echo"
    );
    let (echo, published) = latency(&svcs).await?;
    println!(
        "API echo: p50 {:.1} ms, p99 {:.1} ms; node addresses published: p50 {:.1} ms, p99 {:.1} ms",
        pct(&echo, 0.5),
        pct(&echo, 0.99),
        pct(&published, 0.5),
        pct(&published, 0.99)
    );

    println!("load average at the end: {}", loadavg());
    println!();
    for (kind, kube_proxy, speaker) in rows {
        let what = if kind == "tput" {
            "throughput"
        } else {
            "connection rate"
        };
        println!("goal kube-proxy path {what} vs direct: {kube_proxy:.1} % (target >= 95 %)");
        println!("speaker proxy {what} vs direct: {speaker:.1} % (measured, no target)");
    }
    println!(
        "goal failed connections through node addresses: {} (target = 0)",
        failures[1] + failures[2]
    );
    println!(
        "goal create to node addresses p99: {:.0} ms (target <= 1000 ms)",
        pct(&published, 0.99)
    );
    Ok(())
}

/// Creates [`SERVICES`] Services (each on its own port, so none conflicts) and times, from each
/// create call, the watch's first sight of the object (the API's echo) and of node addresses in
/// its status. Returns both, sorted, in milliseconds.
async fn latency(svcs: &Api<Service>) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let mut stream = watcher(
        svcs.clone(),
        watcher::Config::default().labels("bench=latency"),
    )
    .boxed();
    // Let the watch establish before the first create.
    while let Some(ev) = stream.next().await {
        if matches!(ev, Ok(Event::InitDone)) {
            break;
        }
    }
    let mut created: std::collections::BTreeMap<String, Instant> = Default::default();
    let mut echo = Vec::new();
    let mut published = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..SERVICES {
        let name = format!("lat-{i}");
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"bench": "latency"}},
            "spec": {"type": "LoadBalancer", "selector": {"app": "sink"},
                "ports": [{"port": 20000 + i, "targetPort": 9000}]}
        }))?;
        created.insert(name.clone(), Instant::now());
        svcs.create(&PostParams::default(), &svc).await?;
        // Drain what has arrived meanwhile, without waiting.
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(1), stream.next()).await
        {
            note(ev, &created, &mut seen, &mut echo, &mut published);
        }
        // One creation every 200 ms: a steady trickle (each creation makes about ten writes:
        // the controller's status and annotation, three speakers' reports, the published status).
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + T;
    while published.len() < SERVICES && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), stream.next()).await {
            Ok(Some(ev)) => note(ev, &created, &mut seen, &mut echo, &mut published),
            _ => continue,
        }
    }
    ensure!(
        published.len() == SERVICES,
        "only {} of {SERVICES} Services were published within {T:?}",
        published.len()
    );
    echo.sort_by(f64::total_cmp);
    published.sort_by(f64::total_cmp);
    Ok((echo, published))
}

fn note(
    ev: Result<Event<Service>, watcher::Error>,
    created: &std::collections::BTreeMap<String, Instant>,
    seen: &mut std::collections::BTreeSet<String>,
    echo: &mut Vec<f64>,
    published: &mut Vec<f64>,
) {
    let Ok(Event::Apply(s)) = ev else { return };
    let Some(name) = s.metadata.name.clone() else {
        return;
    };
    let Some(t0) = created.get(&name) else { return };
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    if seen.insert(format!("echo/{name}")) {
        echo.push(ms);
    }
    let has_ips = s
        .status
        .and_then(|st| st.load_balancer)
        .and_then(|l| l.ingress)
        .is_some_and(|i| !i.is_empty());
    if has_ips && seen.insert(format!("ips/{name}")) {
        published.push(ms);
    }
}
