//! `make bench-controller`: the controller's figures for 1k, 10k and 50k existing Services, each
//! printed beside a comparator measured in the same run.
//!
//! - allocation in the pure allocator vs a naive oracle (a linear scan for the lowest free address);
//! - create → IP visible in status in the lab, vs the API server's own create → watch echo;
//! - the controller's memory per Service vs the size of a Service object as JSON;
//! - API writes per Service change, and writes while idle.
//!
//! Bounded: at most 50k Services, 40 probes per size, each probe with a 10 s deadline.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use ferrolb_addresses::{Family, IpRange};
use ferrolb_allocator::{Allocator, FamilyPolicy, PoolConfig, Request, ServiceKey};
use ferrolb_e2e::{apply, binary, install_crds};
use ferrolb_lab::{Lab, LabOptions};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event};
use serde_json::json;

const SIZES: [usize; 3] = [1_000, 10_000, 50_000];
const PROBES: usize = 40;

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn v6_request() -> Request {
    let mut r = Request::new(FamilyPolicy::Single(Family::V6));
    r.candidate_pools = vec!["bench".into()];
    r
}

/// The oracle: the lowest free address by scanning from the start of the range.
fn naive_lowest_free(used: &BTreeSet<u128>, start: u128) -> u128 {
    let mut a = start;
    while used.contains(&a) {
        a += 1;
    }
    a
}

fn allocator_table() {
    println!("\n## Pure allocator: one more allocation with n Services already holding IPs");
    println!(
        "{:>8}  {:>14}  {:>16}  {:>8}",
        "n", "ferrolb (µs)", "naive scan (µs)", "ratio"
    );
    let base = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0));
    let range = IpRange::cidr(IpAddr::V6(Ipv6Addr::from(base)), 96).expect("valid CIDR");
    for n in SIZES {
        let mut alloc = Allocator::new();
        alloc.set_pools(vec![PoolConfig {
            name: "bench".into(),
            ranges: vec![range],
            auto_assign: true,
            avoid_buggy_ips: false,
        }]);
        let req = v6_request();
        for i in 0..n {
            alloc
                .assign(&ServiceKey(format!("ns/s{i}")), &req)
                .expect("room");
        }
        // Free a low address so both have to find a hole, then time repeated allocate/release.
        let reps = 2_000;
        let t = Instant::now();
        for i in 0..reps {
            let k = ServiceKey(format!("probe/{i}"));
            alloc.assign(&k, &req).expect("room");
            alloc.release(&k);
        }
        let ours = t.elapsed().as_secs_f64() * 1e6 / reps as f64;
        let used: BTreeSet<u128> = (0..n as u128).map(|i| base + i).collect();
        let t = Instant::now();
        let mut sink = 0u128;
        for _ in 0..reps {
            sink ^= naive_lowest_free(&used, base);
        }
        let naive = t.elapsed().as_secs_f64() * 1e6 / reps as f64;
        std::hint::black_box(sink);
        println!(
            "{n:>8}  {ours:>14.2}  {naive:>16.2}  {:>7.1}x",
            naive / ours
        );
    }
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn metric(lab: &Lab, series: &str) -> f64 {
    let out = lab
        .exec("cp", &["curl", "-s", "http://127.0.0.1:7472/metrics"])
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn svc(ns: &str, name: &str) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": "LoadBalancer", "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv6"],
                 // 50k Services would exhaust the NodePort range; a LoadBalancer needs none here.
                 "allocateLoadBalancerNodePorts": false,
                 "ports": [{"port": 80}], "selector": {"app": name}},
    }))
    .expect("valid Service")
}

async fn create_many(client: &kube::Client, ns: &str, from: usize, to: usize) {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    futures::stream::iter(from..to)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &svc(ns, &format!("s{i:05}")))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .expect("create Services");
}

/// Creates one Service and returns (create → watch sees it, create → watch sees its IP) in ms.
async fn probe(client: &kube::Client, name: &str) -> (f64, f64) {
    let api: Api<Service> = Api::namespaced(client.clone(), "probe");
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut w = watcher::watcher(api.clone(), cfg).boxed();
    // Wait for the watch to be established before creating.
    while let Some(Ok(ev)) = w.next().await {
        if matches!(ev, Event::InitDone) {
            break;
        }
    }
    let t0 = Instant::now();
    api.create(&PostParams::default(), &svc("probe", name))
        .await
        .expect("create probe");
    let (mut seen, mut ip) = (None, None);
    let deadline = t0 + Duration::from_secs(10);
    while ip.is_none() && Instant::now() < deadline {
        let Ok(Some(Ok(ev))) = tokio::time::timeout(Duration::from_secs(10), w.next()).await else {
            break;
        };
        if let Event::Apply(s) = ev {
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            seen.get_or_insert(ms);
            let has_ip = s
                .status
                .and_then(|st| st.load_balancer?.ingress)
                .is_some_and(|i| !i.is_empty());
            if has_ip {
                ip = Some(ms);
            }
        }
    }
    (seen.unwrap_or(f64::NAN), ip.unwrap_or(f64::NAN))
}

async fn lab_table() -> anyhow::Result<()> {
    println!(
        "\n## In the lab: real kube-apiserver, ferrolb-controller (release build) in the control-plane namespace"
    );
    let lab = Lab::up(LabOptions {
        nodes: 1,
        kube_proxy: false,
        kubelet: false,
        ..LabOptions::default()
    })
    .await?;
    let client = lab.client().await?;
    install_crds(&lab)?;
    apply(
        &client,
        &[
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bulk"}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "probe"}}),
            json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "bench"},
                   "spec": {"addresses": ["2001:db8:1::/96"]}}),
        ],
    )
    .await?;
    let bin = binary("ferrolb-controller");
    let kc = lab.node_kubeconfig().to_string_lossy().into_owned();
    let ctl = lab.spawn(
        "cp",
        &[
            &bin,
            "--kubeconfig",
            &kc,
            "--metrics-addr",
            "127.0.0.1:7472",
            "--log-level",
            "warn",
        ],
        "bench-controller",
    )?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss0, _) = rss_kib(ctl.pid());
    let json_size = serde_json::to_vec(
        &Api::<Service>::namespaced(client.clone(), "default")
            .get("kubernetes")
            .await?,
    )?
    .len();

    println!(
        "{:>8}  {:>11} {:>11}  {:>12} {:>12}  {:>7}  {:>9}  {:>10}  {:>11}",
        "services",
        "ip p50 ms",
        "ip p99 ms",
        "echo p50 ms",
        "echo p99 ms",
        "p50 x",
        "rss MiB",
        "B/service",
        "writes/chg"
    );
    let mut have = 0;
    for n in SIZES {
        create_many(&client, "bulk", have, n).await;
        have = n;
        // Let the controller catch up: wait until it has written every status.
        let deadline = Instant::now() + Duration::from_secs(600);
        while metric(&lab, "ferrolb_controller_allocations") < n as f64 && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let writes_before = metric(&lab, "ferrolb_controller_api_writes_total");
        let (mut ip, mut echo) = (Vec::new(), Vec::new());
        for i in 0..PROBES {
            let (e, t) = probe(&client, &format!("p{n}-{i}")).await;
            echo.push(e);
            ip.push(t);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let writes = metric(&lab, "ferrolb_controller_api_writes_total") - writes_before;
        ip.sort_by(f64::total_cmp);
        echo.sort_by(f64::total_cmp);
        let (rss, _) = rss_kib(ctl.pid());
        let per = (rss.saturating_sub(rss0) * 1024) as f64 / (n + PROBES) as f64;
        println!(
            "{n:>8}  {:>11.1} {:>11.1}  {:>12.1} {:>12.1}  {:>7.1}  {:>9.1}  {:>10.0}  {:>11.2}",
            pct(&ip, 0.5),
            pct(&ip, 0.99),
            pct(&echo, 0.5),
            pct(&echo, 0.99),
            pct(&ip, 0.5) / pct(&echo, 0.5),
            rss as f64 / 1024.0,
            per,
            writes / PROBES as f64
        );
    }
    let idle_before = metric(&lab, "ferrolb_controller_api_writes_total");
    tokio::time::sleep(Duration::from_secs(30)).await;
    let idle = metric(&lab, "ferrolb_controller_api_writes_total") - idle_before;
    let (_, hwm) = rss_kib(ctl.pid());
    println!(
        "\nidle for 30 s with {} Services: {idle} API writes",
        have + 3 * PROBES
    );
    println!(
        "controller peak RSS: {:.1} MiB; a Service object is {json_size} bytes of JSON (comparator for B/service)",
        hwm as f64 / 1024.0
    );
    println!(
        "writes/chg counts status, annotation, pool-status and event writes per created Service"
    );
    drop(ctl);
    lab.down();
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("# ferrolb controller benchmark");
    allocator_table();
    lab_table().await
}
