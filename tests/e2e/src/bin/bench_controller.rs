//! `make bench-controller`: the controller's figures at 1k, 10k, 50k and 100k Services, each
//! printed beside a comparator measured in the same run.
//!
//! - allocation in the pure allocator vs a naive oracle (a linear scan for the lowest free address);
//! - in the lab, per size: create → IP visible in status vs the API server's own create → watch
//!   echo; API writes per created Service, counted in the API server's audit log (the controller
//!   runs as a ServiceAccount, so every request it makes is audited) beside its own metric;
//!   restart-to-ready of a fresh controller process vs a bare LIST of the same objects, and the
//!   writes it makes on restart (the goal is none); VmRSS per Service after the controller took the
//!   Services in and again after the restart; optionally valgrind massif's heap at one size.
//!
//! The bulk Services (all but the probes and the first) are by default copies of the first,
//! which went the whole way (created through the API, given a ClusterIP, an EndpointSlice and an
//! IP by the controller), written straight into etcd ([`ferrolb_e2e::etcd_load`]) with their
//! EndpointSlices and ClusterIP IPAddresses; the controller takes them in from its watch like any Service that
//! already has an IP, and the bench counts the writes that costs. The lab's API server cannot
//! create 100k Services through its API in a bench's time (see [`PER_NAMESPACE`]).
//! `FERROLB_BENCH_BULK=api` creates them through the API instead, so the controller allocates
//! every one (over an hour for 50k).
//!
//! Bounded: at most [`PROBES`] probes per size, each with a 10 s deadline; bulk creation stops
//! at the time budget (`FERROLB_BENCH_MINUTES`, default 150): the rate reached is reported and the
//! last row is measured at the size reached.
//! `FERROLB_BENCH_SIZES=1000,10000` picks other sizes; `FERROLB_BENCH_MASSIF=50000` runs massif
//! at that size (default 50000, `0` skips it); `FERROLB_BENCH_WRAP` runs every controller under a
//! profiler (see [`start_controller`]).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ferrolb_addresses::{Family, IpRange};
use ferrolb_allocator::{Allocator, FamilyPolicy, PoolConfig, Request, ServiceKey};
use ferrolb_e2e::etcd_load::{self, PUTS_PER_CURL};
use ferrolb_e2e::{apply, audit, binary, install_crds};
use ferrolb_lab::{Lab, LabOptions, LabProcess, Signal};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use kube::runtime::watcher::{self, Event};
use serde_json::json;

const ALLOC_SIZES: [usize; 4] = [1_000, 10_000, 50_000, 100_000];
const LAB_SIZES: [usize; 4] = [1_000, 10_000, 50_000, 100_000];
const PROBES: usize = 40;
/// Concurrent creates: enough to keep one API server busy, few enough not to hit its
/// max-requests-inflight limits.
const CREATE_CONCURRENCY: usize = 48;
/// The ServiceAccount the controller runs as: its requests are the audited ones.
const SA_NS: &str = "ferrolb-system";
const SA_NAME: &str = "bench-controller";
const METRICS: &str = "http://127.0.0.1:7472";
/// How long to watch for writes after a restarted controller is ready.
const QUIET_AFTER_READY: Duration = Duration::from_secs(10);

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
    for n in ALLOC_SIZES {
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
        // Both have to find the first hole above n used addresses; time repeated allocate/release.
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

/// `(VmRSS, VmHWM)` of `pid` in KiB (0 when unreadable).
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

/// The controller's metrics text ("" when it does not answer).
fn metrics_text(lab: &Lab) -> String {
    lab.exec(
        "cp",
        &["curl", "-s", "-m", "5", &format!("{METRICS}/metrics")],
    )
    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    .unwrap_or_default()
}

/// Sum of every sample of `series` in a metrics text.
fn metric_in(text: &str, series: &str) -> f64 {
    let sum: f64 = text
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    // An empty sum is -0.0; print it as 0.
    sum + 0.0
}

fn metric(lab: &Lab, series: &str) -> f64 {
    metric_in(&metrics_text(lab), series)
}

/// A Service shaped like a typical application's: two labels, two named ports, a selector
/// (so kube-controller-manager gives it an EndpointSlice, as in a real cluster), IPv6 only.
fn svc(ns: &str, name: &str) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name, "tier": "web"}},
        "spec": {"type": "LoadBalancer", "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv6"],
                 // 100k Services would exhaust the NodePort range; a LoadBalancer needs none here.
                 "allocateLoadBalancerNodePorts": false,
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080},
                           {"name": "https", "port": 443, "targetPort": 8443}],
                 "selector": {"app": name}},
    }))
    .expect("valid Service")
}

/// Bulk Services per namespace. Spread as in a real cluster: kube-controller-manager's
/// EndpointSlice controller lists a namespace's slices on every Service change, so with every
/// Service in one namespace it took 67 % of a core at 26k Services (13 % spread out). The create
/// rate still falls as n grows (95/s at 5k, 8/s at 45k): after every ClusterIP it allocates,
/// kube-apiserver 1.36 counts all allocated ones (`createIPAddress` lists every IPAddress for
/// its metrics), under the allocator's lock, so 100k creates take hours on two cores: hence
/// the copies written into etcd ([`Bulk::Etcd`]).
const PER_NAMESPACE: usize = 1_000;

/// The namespace of bulk Service `i`.
fn bulk_namespace(i: usize) -> String {
    format!("bulk-{:03}", i / PER_NAMESPACE)
}

/// Bulk Service `i`'s name.
fn bulk_name(i: usize) -> String {
    format!("s{i:06}")
}

/// Creates the namespaces of bulk Services `from..to`.
async fn bulk_namespaces(client: &kube::Client, from: usize, to: usize) -> anyhow::Result<()> {
    let namespaces: BTreeSet<String> = (from..to).map(bulk_namespace).collect();
    let objects: Vec<serde_json::Value> = namespaces
        .iter()
        .map(|ns| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
        .collect();
    apply(client, &objects).await
}

/// Creates bulk Service `s<i>` (in [`bulk_namespace`], which must exist) for `i` in `from..to`
/// through the API with [`CREATE_CONCURRENCY`] requests in flight, stopping at `deadline`.
/// Returns how many exist afterwards (`from` + created) and the seconds spent. Already existing
/// names count as created (a retried run).
async fn create_many(
    client: &kube::Client,
    from: usize,
    to: usize,
    deadline: Instant,
) -> anyhow::Result<(usize, f64)> {
    let t = Instant::now();
    let results: Vec<Result<(), kube::Error>> = futures::stream::iter(from..to)
        .take_while(|_| futures::future::ready(Instant::now() < deadline))
        .map(|i| {
            let ns = bulk_namespace(i);
            let api: Api<Service> = Api::namespaced(client.clone(), &ns);
            async move {
                match api
                    .create(&PostParams::default(), &svc(&ns, &bulk_name(i)))
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                    Err(e) => Err(e),
                }
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect()
        .await;
    let secs = t.elapsed().as_secs_f64();
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    if let Some(e) = failed.first() {
        anyhow::bail!(
            "{} of {} creates failed; first: {e}",
            failed.len(),
            results.len()
        );
    }
    Ok((from + results.len(), secs))
}

/// How the bulk Services come to exist (`FERROLB_BENCH_BULK`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bulk {
    /// Copies of bulk Service 0 written into etcd (the default).
    Etcd,
    /// Created one by one through the API (`api`).
    Api,
}

fn bulk_mode() -> anyhow::Result<Bulk> {
    match std::env::var("FERROLB_BENCH_BULK").as_deref() {
        Err(_) | Ok("etcd") => Ok(Bulk::Etcd),
        Ok("api") => Ok(Bulk::Api),
        Ok(other) => anyhow::bail!("FERROLB_BENCH_BULK={other:?}: expected etcd or api"),
    }
}

/// Where the copies' ClusterIPs start: the upper half of the bench's /108 ServiceCIDR.
const COPY_CLUSTER_IPS: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xfff0, 0, 0, 0, 0x8, 0);
/// The last address of that ServiceCIDR.
const LAST_CLUSTER_IP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xfff0, 0, 0, 0, 0xf, 0xffff);
/// Where the copies' LoadBalancer IPs start: the upper half of the bench pool (a /96), above
/// the lowest free addresses the controller gives the probes.
const COPY_INGRESS_IPS: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x1, 0, 0, 0, 0x8000, 0);

fn nth(base: Ipv6Addr, i: usize) -> String {
    Ipv6Addr::from(u128::from(base) + i as u128).to_string()
}

/// The copies' ClusterIPs: consecutive addresses from [`COPY_CLUSTER_IPS`], skipping those the
/// API server gave out before (it picks at random across its ServiceCIDRs, so the template's and
/// earlier probes' may lie anywhere; a copy put over one would take it from its Service).
struct CopyIps {
    next: u128,
    taken: BTreeSet<u128>,
}

impl CopyIps {
    fn new() -> CopyIps {
        CopyIps {
            next: u128::from(COPY_CLUSTER_IPS),
            taken: BTreeSet::new(),
        }
    }

    /// The next free address, or an error past the ServiceCIDR's end.
    fn take(&mut self) -> anyhow::Result<String> {
        while self.taken.contains(&self.next) {
            self.next += 1;
        }
        anyhow::ensure!(
            self.next <= u128::from(LAST_CLUSTER_IP),
            "the copies' ClusterIPs ran past {LAST_CLUSTER_IP}"
        );
        let ip = Ipv6Addr::from(self.next).to_string();
        self.next += 1;
        Ok(ip)
    }

    /// Marks every IPv6 address the API server has handed out (its IPAddress objects) as taken.
    async fn refresh(&mut self, client: &kube::Client) -> anyhow::Result<()> {
        let api = dynamic_api(client, ("networking.k8s.io", "v1", "IPAddress"), None);
        let mut lp = ListParams::default().limit(500);
        loop {
            let page = api.list_metadata(&lp).await?;
            self.taken.extend(
                page.items
                    .iter()
                    .filter_map(|o| o.metadata.name.as_deref()?.parse::<Ipv6Addr>().ok())
                    .map(u128::from),
            );
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => lp = lp.continue_token(&c),
                None => return Ok(()),
            }
        }
    }
}

/// Bulk Service 0 as the API server, kube-controller-manager and the controller left it: the
/// Service, its EndpointSlice and its ClusterIP's IPAddress, as JSON for etcd.
struct Template {
    service: String,
    slice: String,
    slice_name: String,
    address: String,
    service_uid: String,
    slice_uid: String,
    address_uid: String,
    cluster_ip: String,
    ingress_ip: String,
    /// The three objects' `creationTimestamp`s (distinct): copies are created when written,
    /// else the API server's ClusterIP repair would take a copy's IPAddress, seen a moment
    /// before its Service, for one leaked a minute ago and delete it. Other times of the same
    /// second (managed fields, conditions) change with them.
    created: Vec<String>,
}

fn dynamic_api(
    client: &kube::Client,
    gvk: (&str, &str, &str),
    ns: Option<&str>,
) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(gvk.0, gvk.1, gvk.2));
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

impl Template {
    /// Waits (at most 60 s) until bulk Service 0 has its IP, its `IPAllocated` condition, its
    /// EndpointSlice and its IPAddress, and the controller's writes have settled; reads the three
    /// objects and checks that etcd holds them where [`etcd_load::key`] says.
    async fn capture(client: &kube::Client, lab: &Lab) -> anyhow::Result<Template> {
        let (ns, name) = (bulk_namespace(0), bulk_name(0));
        let services: Api<Service> = Api::namespaced(client.clone(), &ns);
        let slices = dynamic_api(
            client,
            ("discovery.k8s.io", "v1", "EndpointSlice"),
            Some(&ns),
        );
        let addresses = dynamic_api(client, ("networking.k8s.io", "v1", "IPAddress"), None);
        let by_service =
            ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        let (svc, slice, address) = loop {
            anyhow::ensure!(
                Instant::now() < deadline,
                "bulk Service {ns}/{name} did not get an IP, an EndpointSlice and an IPAddress within 60 s"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
            let svc = services.get(&name).await?;
            let status = svc.status.clone().unwrap_or_default();
            let has_ip = status
                .load_balancer
                .and_then(|lb| lb.ingress)
                .is_some_and(|i| !i.is_empty());
            let has_condition = status.conditions.is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == ferrolb_crds::conditions::IP_ALLOCATED)
            });
            let cluster_ip = svc.spec.as_ref().and_then(|s| s.cluster_ip.clone());
            let slice = slices.list(&by_service).await?.items.into_iter().next();
            let address = match &cluster_ip {
                Some(ip) => addresses.get_opt(ip).await?,
                None => None,
            };
            if let (true, true, Some(slice), Some(address)) =
                (has_ip, has_condition, slice, address)
            {
                break (svc, slice, address);
            }
        };
        // The controller's writes for it have settled when its resourceVersion stays put.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let service = dynamic_api(client, ("", "v1", "Service"), Some(&ns))
            .get(&name)
            .await?;
        anyhow::ensure!(
            service.metadata.resource_version == svc.metadata.resource_version,
            "bulk Service {ns}/{name} still changes 3 s after it got its IP"
        );
        let template = Template::from_objects(&service, &slice, &address)?;
        tokio::task::block_in_place(|| {
            for key in template.keys(0, &template.cluster_ip, &template.created[0])? {
                anyhow::ensure!(
                    etcd_load::count(lab, &key)? == 1,
                    "etcd holds nothing at {key}: the API server's key layout is not the one etcd_load assumes"
                );
            }
            Ok(())
        })?;
        Ok(template)
    }

    /// The template from the three objects as the API server returned them. Fails if an
    /// identity the copies replace is in none of them (a time written otherwise than the API
    /// server writes it would stay the template's in every copy).
    fn from_objects(
        service: &DynamicObject,
        slice: &DynamicObject,
        address: &DynamicObject,
    ) -> anyhow::Result<Template> {
        // Items of a list come without apiVersion and kind; etcd's copies need them.
        let stored = |o: &DynamicObject, api_version: &str, kind: &str| {
            let mut o = o.clone();
            o.types = Some(kube::core::TypeMeta {
                api_version: api_version.into(),
                kind: kind.into(),
            });
            etcd_load::stored(serde_json::to_value(o)?)
        };
        let uid = |o: &DynamicObject| o.metadata.uid.clone().context("an object without uid");
        let text = |v: &serde_json::Value, what: &str| {
            v.as_str()
                .map(str::to_string)
                .with_context(|| format!("the Service has no {what}"))
        };
        let mut created: Vec<String> = [service, slice, address]
            .iter()
            .filter_map(|o| Some(o.metadata.creation_timestamp.as_ref()?.0.to_string()))
            .collect();
        created.sort();
        created.dedup();
        let template = Template {
            created,
            slice_name: slice
                .metadata
                .name
                .clone()
                .context("a slice without name")?,
            service_uid: uid(service)?,
            slice_uid: uid(slice)?,
            address_uid: uid(address)?,
            cluster_ip: text(&service.data["spec"]["clusterIP"], "ClusterIP")?,
            ingress_ip: text(
                &service.data["status"]["loadBalancer"]["ingress"][0]["ip"],
                "ingress IP",
            )?,
            service: stored(service, "v1", "Service")?,
            slice: stored(slice, "discovery.k8s.io/v1", "EndpointSlice")?,
            address: stored(address, "networking.k8s.io/v1", "IPAddress")?,
        };
        let texts = [&template.service, &template.slice, &template.address];
        for (from, _) in template.pairs(1, "", "") {
            anyhow::ensure!(
                texts.iter().any(|t| t.contains(&from)),
                "{from:?} is in none of the template's objects: copies would keep the template's"
            );
        }
        Ok(template)
    }

    /// The substitutions that make copy `i` (`i` = 0 is the template itself) with `cluster_ip`,
    /// created at `now`.
    fn pairs(&self, i: usize, cluster_ip: &str, now: &str) -> Vec<(String, String)> {
        let t = |s: &str| s.to_string();
        let mut pairs = vec![
            (bulk_name(0), bulk_name(i)),
            (bulk_namespace(0), bulk_namespace(i)),
            (t(&self.service_uid), etcd_load::uid(1, i)),
            (t(&self.slice_uid), etcd_load::uid(2, i)),
            (t(&self.address_uid), etcd_load::uid(3, i)),
            (t(&self.cluster_ip), t(cluster_ip)),
            (
                t(&self.ingress_ip),
                if i == 0 {
                    t(&self.ingress_ip)
                } else {
                    nth(COPY_INGRESS_IPS, i)
                },
            ),
        ];
        pairs.extend(self.created.iter().map(|c| (t(c), t(now))));
        pairs
    }

    fn subst(&self, text: &str, i: usize, cluster_ip: &str, now: &str) -> anyhow::Result<String> {
        let pairs = self.pairs(i, cluster_ip, now);
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        etcd_load::substitute(text, &refs)
    }

    /// Copy `i`'s etcd keys: IPAddress, EndpointSlice, Service.
    fn keys(&self, i: usize, cluster_ip: &str, now: &str) -> anyhow::Result<[String; 3]> {
        let (ns, name) = (bulk_namespace(i), bulk_name(i));
        Ok([
            etcd_load::key("ipaddresses", None, cluster_ip),
            etcd_load::key(
                "endpointslices",
                Some(&ns),
                &self.subst(&self.slice_name, i, cluster_ip, now)?,
            ),
            etcd_load::key("services", Some(&ns), &name),
        ])
    }

    /// Copy `i` of the three objects, keyed as etcd holds them: IPAddress, EndpointSlice,
    /// Service (see [`load_many`] for the order they are written in).
    fn copy(&self, i: usize, cluster_ip: &str, now: &str) -> anyhow::Result<[(String, String); 3]> {
        let [k_addr, k_slice, k_svc] = self.keys(i, cluster_ip, now)?;
        Ok([
            (k_addr, self.subst(&self.address, i, cluster_ip, now)?),
            (k_slice, self.subst(&self.slice, i, cluster_ip, now)?),
            (k_svc, self.subst(&self.service, i, cluster_ip, now)?),
        ])
    }
}

/// Writes copies `from..to` of the template into etcd (see [`Template`]) with ClusterIPs from
/// `ips`, stopping at `deadline`. Returns how many bulk Services exist afterwards and the
/// seconds spent.
fn load_many(
    lab: &Lab,
    template: &Template,
    ips: &mut CopyIps,
    from: usize,
    to: usize,
    deadline: Instant,
) -> anyhow::Result<(usize, f64)> {
    let per_curl = PUTS_PER_CURL / 3;
    let t = Instant::now();
    let mut i = from;
    while i < to && Instant::now() < deadline {
        let end = (i + per_curl).min(to);
        let now = Timestamp::from_second(Timestamp::now().as_second())?.to_string();
        // The chunk's IPAddresses first, well ahead of their Services, so the API server's
        // ClusterIP repair has seen them when it checks a Service; each EndpointSlice right
        // before its Service, so kube-controller-manager finds it, and its garbage collector has
        // at most a moment in which the slice's owner is missing (every bench run so far ended
        // with one EndpointSlice per Service).
        let mut addresses = Vec::with_capacity(end - i);
        let mut rest = Vec::with_capacity(2 * (end - i));
        for j in i..end {
            let [address, slice, service] = template.copy(j, &ips.take()?, &now)?;
            addresses.push(address);
            rest.extend([slice, service]);
        }
        let mut puts = addresses;
        puts.append(&mut rest);
        etcd_load::put_each(lab, &puts).with_context(|| format!("copies {i}..{end}"))?;
        i = end;
    }
    Ok((i, t.elapsed().as_secs_f64()))
}

/// Creates one Service and returns (create → watch sees it, create → watch sees its IP) in ms
/// (NaN when not seen within 10 s); `None` when the create failed.
async fn probe(client: &kube::Client, name: &str) -> Option<(f64, f64)> {
    let api: Api<Service> = Api::namespaced(client.clone(), "probe");
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut w = watcher::watcher(api.clone(), cfg).boxed();
    // Wait for the watch to be established before creating.
    while let Ok(Some(Ok(ev))) = tokio::time::timeout(Duration::from_secs(30), w.next()).await {
        if matches!(ev, Event::InitDone) {
            break;
        }
    }
    let t0 = Instant::now();
    if api
        .create(&PostParams::default(), &svc("probe", name))
        .await
        .is_err()
    {
        return None;
    }
    let (mut seen, mut ip) = (None, None);
    let deadline = t0 + Duration::from_secs(10);
    while ip.is_none() && Instant::now() < deadline {
        let Ok(Some(Ok(ev))) = tokio::time::timeout_at(deadline.into(), w.next()).await else {
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
    Some((seen.unwrap_or(f64::NAN), ip.unwrap_or(f64::NAN)))
}

/// Write requests the controller's ServiceAccount made between `from` and `to` (received in
/// that span, both ends included), by `resource[/subresource]`, read from the API server's audit
/// log and its rotated copies; none if the log cannot be read.
fn audited_writes(
    lab: &Lab,
    from: Timestamp,
    to: Timestamp,
) -> std::collections::BTreeMap<String, u64> {
    let user = format!("system:serviceaccount:{SA_NS}:{SA_NAME}");
    let mut by_resource = std::collections::BTreeMap::new();
    let events = audit::read_user(&lab.audit_log(), &user)
        .map(|log| log.events)
        .unwrap_or_default();
    for e in events
        .iter()
        .filter(|e| e.is_write() && audit::within(e.received_us, from, to))
    {
        *by_resource.entry(e.resource_path()).or_insert(0) += 1;
    }
    by_resource
}

fn total(m: &std::collections::BTreeMap<String, u64>) -> u64 {
    m.values().sum()
}

fn breakdown(m: &std::collections::BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The controller's malloc setting: the chart's (`GLIBC_TUNABLES`, two arenas), unless
/// `FERROLB_BENCH_MALLOC` says otherwise: `default` for glibc's defaults, or tunables of its
/// own (`glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=…`) to compare settings.
fn malloc_env() -> Option<String> {
    match std::env::var("FERROLB_BENCH_MALLOC").as_deref() {
        Ok("default") => None,
        Ok(t) if t.starts_with("glibc.") => Some(format!("GLIBC_TUNABLES={t}")),
        _ => Some("GLIBC_TUNABLES=glibc.malloc.arena_max=2".into()),
    }
}

/// Starts the controller as the bench ServiceAccount, with the chart's malloc setting
/// ([`malloc_env`]), optionally under `wrapper` (valgrind). `env` execs the controller, so the
/// process's pid is the controller's.
fn start_controller(
    lab: &Lab,
    kubeconfig: &str,
    wrapper: &[&str],
    log: &str,
) -> anyhow::Result<LabProcess> {
    let bin = binary("ferrolb-controller");
    // For finding where memory goes: every controller of the run under a profiler, e.g.
    // FERROLB_BENCH_WRAP="valgrind --tool=massif --massif-out-file=/tmp/massif.%p" (the VmRSS
    // figures are then the profiler's).
    let wrap_env = std::env::var("FERROLB_BENCH_WRAP").unwrap_or_default();
    let malloc = malloc_env();
    let mut argv: Vec<&str> = vec!["env"];
    argv.extend(malloc.as_deref());
    if wrapper.is_empty() {
        argv.extend(wrap_env.split_whitespace());
    }
    argv.extend(wrapper);
    argv.extend([
        bin.as_str(),
        "--kubeconfig",
        kubeconfig,
        "--metrics-addr",
        "127.0.0.1:7472",
        "--log-level",
        "warn",
    ]);
    Ok(lab.spawn("cp", &argv, log)?)
}

/// Waits until the controller's `/readyz` answers 200, polling every 50 ms from inside the
/// control-plane namespace, for at most `limit`. Returns whether it became ready.
fn wait_ready(lab: &Lab, limit: Duration) -> bool {
    let polls = (limit.as_millis() / 50).max(1);
    let script = format!(
        "i=0; while [ $i -lt {polls} ]; do \
         curl -sf -m 2 -o /dev/null {METRICS}/readyz && exit 0; i=$((i+1)); sleep 0.05; done; exit 1"
    );
    tokio::task::block_in_place(|| {
        lab.exec("cp", &["sh", "-c", &script])
            .is_ok_and(|o| o.status.success())
    })
}

/// Stops the controller with SIGTERM (it releases nothing and writes nothing on the way out),
/// SIGKILL after 30 s.
fn stop(ctl: &mut LabProcess) {
    let _ = ctl.signal(Signal::Term);
    if ctl.wait_timeout(Duration::from_secs(30)).is_none() {
        let _ = ctl.kill();
    }
}

/// A bare paginated LIST of every Service and EndpointSlice (what the controller must read at
/// least once on start), in seconds: the comparator for restart-to-ready; and how many of each.
async fn bare_list(client: &kube::Client) -> anyhow::Result<(f64, usize, usize)> {
    async fn all<K>(api: Api<K>) -> anyhow::Result<usize>
    where
        K: kube::Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let mut n = 0;
        let mut lp = ListParams::default().limit(500);
        loop {
            let page = api.list(&lp).await?;
            n += page.items.len();
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => lp = lp.continue_token(&c),
                None => return Ok(n),
            }
        }
    }
    let t = Instant::now();
    let (svcs, slices) = futures::try_join!(
        all(Api::<Service>::all(client.clone())),
        all(Api::<EndpointSlice>::all(client.clone()))
    )?;
    Ok((t.elapsed().as_secs_f64(), svcs, slices))
}

/// Heap from a massif output: `(peak, last snapshot taken before `before_ms`)` in bytes
/// (useful heap plus allocator overhead).
fn massif_heap(text: &str, before_ms: u64) -> Option<(u64, u64)> {
    let mut peak = 0;
    let mut last = None;
    let (mut time, mut heap) = (0u64, 0u64);
    for line in text.lines() {
        let num = |p: &str| {
            line.strip_prefix(p)
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let Some(v) = num("time=") {
            time = v;
        } else if let Some(v) = num("mem_heap_B=") {
            heap = v;
        } else if let Some(extra) = num("mem_heap_extra_B=") {
            peak = peak.max(heap + extra);
            if time <= before_ms {
                last = Some(heap + extra);
            }
        }
    }
    last.map(|l| (peak, l))
}

/// One size's figures.
#[derive(Debug, Default, Clone)]
struct Row {
    n: usize,
    /// Bulk Services created (or written into etcd) per second while growing to `n`.
    create_rate: f64,
    ip: (f64, f64),
    echo: (f64, f64),
    probes_ok: usize,
    writes_per_change_audit: f64,
    writes_per_change_metric: f64,
    write_breakdown: String,
    rss_grown_kib: u64,
    ready_s: Option<f64>,
    list_s: f64,
    restart_writes_audit: Option<u64>,
    restart_writes_metric: f64,
    rss_restart_kib: u64,
    hwm_restart_kib: u64,
    massif: Option<(u64, u64)>,
}

fn kb(bytes: f64) -> f64 {
    bytes / 1000.0
}

async fn lab_table() -> anyhow::Result<Vec<Row>> {
    let sizes: Vec<usize> = std::env::var("FERROLB_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| LAB_SIZES.to_vec());
    let minutes: u64 = std::env::var("FERROLB_BENCH_MINUTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    let massif_at: usize = std::env::var("FERROLB_BENCH_MASSIF")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50_000);
    let budget = Instant::now() + Duration::from_secs(minutes * 60);
    let bulk = bulk_mode()?;
    println!(
        "\n## In the lab: real kube-apiserver and kube-controller-manager (EndpointSlices), \
         ferrolb-controller (release build) as a process in the control-plane namespace"
    );
    println!(
        "sizes {sizes:?}, time budget {minutes} min, {CREATE_CONCURRENCY} creates in flight, \
         {PROBES} probes per size, controller malloc: {}",
        malloc_env().as_deref().unwrap_or("glibc defaults")
    );
    println!(
        "bulk Services: {}",
        match bulk {
            Bulk::Etcd =>
                "copies of the first (created through the API and given its IP by the \
                           controller) written into etcd; FERROLB_BENCH_BULK=api creates them \
                           through the API",
            Bulk::Api => "created through the API (FERROLB_BENCH_BULK=api)",
        }
    );
    let lab = Lab::up(LabOptions {
        nodes: 1,
        kube_proxy: false,
        kubelet: false,
        ..LabOptions::default()
    })
    .await?;
    let rows = lab_rows(&lab, &sizes, bulk, budget, massif_at).await;
    let report = lab.down();
    println!("lab down: {report:?}");
    rows
}

async fn lab_rows(
    lab: &Lab,
    sizes: &[usize],
    bulk: Bulk,
    budget: Instant,
    massif_at: usize,
) -> anyhow::Result<Vec<Row>> {
    let client = lab.client().await?;
    install_crds(lab)?;
    apply(
        &client,
        &[
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "probe"}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SA_NS}}),
            json!({"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": SA_NAME, "namespace": SA_NS}}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": SA_NAME},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                   "subjects": [{"kind": "ServiceAccount", "name": SA_NAME, "namespace": SA_NS}]}),
            // The lab's IPv6 Service range is a /112 (65,536 ClusterIPs); 100k Services need
            // another range.
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
                   "metadata": {"name": "bench-v6"},
                   "spec": {"cidrs": ["2001:db8:fff0::/108"]}}),
            json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "bench"},
                   "spec": {"addresses": ["2001:db8:1::/96"]}}),
        ],
    )
    .await?;
    let kubeconfig = lab
        .service_account_kubeconfig(SA_NS, SA_NAME)?
        .to_string_lossy()
        .into_owned();
    let mut ctl = start_controller(lab, &kubeconfig, &[], "controller-0")?;
    anyhow::ensure!(
        wait_ready(lab, Duration::from_secs(60)),
        "the controller did not become ready with an empty cluster: {}",
        ctl.log()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss0, _) = rss_kib(ctl.pid());
    let json_size = serde_json::to_vec(&svc(&bulk_namespace(0), "s000000"))?.len();
    println!(
        "controller VmRSS with no Service: {:.1} MiB (the baseline subtracted below)",
        rss0 as f64 / 1024.0
    );

    let mut rows = Vec::new();
    let mut have = 0;
    // Allocations the current controller process has to make before it has caught up.
    let mut owed = 0usize;
    let mut generation = 0;
    let mut budget_spent = false;
    let mut template: Option<Template> = None;
    let mut copy_ips = CopyIps::new();
    let mut probes_created = 0usize;
    for &n in sizes {
        let mut row = Row {
            n,
            ..Row::default()
        };
        // When the bulk Services of this row started to be written into etcd, and the
        // controller's write count then: what taking them in cost.
        let mut loaded_since = None;
        if n > have {
            bulk_namespaces(&client, have, n).await?;
            let (now_have, secs, how) = match bulk {
                Bulk::Api => {
                    let (now_have, secs) = create_many(&client, have, n, budget).await?;
                    owed += now_have - have;
                    (now_have, secs, "created through the API")
                }
                Bulk::Etcd => {
                    let mut from = have;
                    if template.is_none() {
                        let (created, _) = create_many(&client, have, have + 1, budget).await?;
                        owed += created - have;
                        from = created;
                        template = Some(Template::capture(&client, lab).await?);
                    }
                    let template = template.as_ref().context("no template")?;
                    copy_ips.refresh(&client).await?;
                    loaded_since = Some((
                        Timestamp::now(),
                        metric(lab, "ferrolb_controller_api_writes_total"),
                    ));
                    let (now_have, secs) = tokio::task::block_in_place(|| {
                        load_many(lab, template, &mut copy_ips, from, n, budget)
                    })?;
                    (
                        now_have,
                        secs,
                        "written into etcd with their EndpointSlices and IPAddresses",
                    )
                }
            };
            row.create_rate = (now_have - have) as f64 / secs;
            println!(
                "{} Services {how} in {secs:.0} s: {:.0}/s (now {now_have})",
                now_have - have,
                row.create_rate
            );
            have = now_have;
            if have < n {
                println!(
                    "time budget spent at {have} of {n} Services: the last row is measured at {have}"
                );
                budget_spent = true;
            }
        }
        row.n = have;
        // The row's messages and probe names say the size measured.
        let n = have;
        // Let the controller catch up: every new Service allocated and the writes settled.
        let t = Instant::now();
        let catch_up_deadline = Instant::now() + Duration::from_secs(1800);
        let mut last_writes = -1.0;
        // Every bulk Service, the probes created so far and none more.
        let services = (have + probes_created) as f64;
        loop {
            let text = metrics_text(lab);
            let allocs = metric_in(&text, "ferrolb_controller_allocations");
            let writes = metric_in(&text, "ferrolb_controller_api_writes_total");
            let indexed = metric_in(&text, "ferrolb_controller_services");
            if allocs >= owed as f64 && indexed >= services && writes == last_writes {
                break;
            }
            last_writes = writes;
            if Instant::now() > catch_up_deadline {
                println!(
                    "the controller did not catch up within 30 min ({allocs} of {owed} \
                     allocations, {indexed} of {services} Services)"
                );
                break;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        println!(
            "controller caught up {:.0} s after the last bulk Service (polled every 2 s)",
            t.elapsed().as_secs_f64()
        );
        if let Some((since, before)) = loaded_since {
            let audit = audited_writes(lab, since, Timestamp::now());
            let by_metric = metric(lab, "ferrolb_controller_api_writes_total") - before;
            println!(
                "taking in the Services written into etcd cost the controller {} writes by \
                 audit ({}), {by_metric} by metric",
                total(&audit),
                breakdown(&audit)
            );
        }

        // Probes: create → IP against create → echo, and the writes each change costs.
        let writes_before = metric(lab, "ferrolb_controller_api_writes_total");
        let from = Timestamp::now();
        let (mut ip, mut echo) = (Vec::new(), Vec::new());
        for i in 0..PROBES {
            let (e, t) = match probe(&client, &format!("p{n}-{i}")).await {
                Some(times) => {
                    probes_created += 1;
                    times
                }
                None => (f64::NAN, f64::NAN),
            };
            echo.push(e);
            ip.push(t);
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let to = Timestamp::now();
        let writes = metric(lab, "ferrolb_controller_api_writes_total") - writes_before;
        let audit = audited_writes(lab, from, to);
        row.probes_ok = ip.iter().filter(|v| v.is_finite()).count();
        ip.retain(|v| v.is_finite());
        echo.retain(|v| v.is_finite());
        ip.sort_by(f64::total_cmp);
        echo.sort_by(f64::total_cmp);
        row.ip = (pct(&ip, 0.5), pct(&ip, 0.99));
        row.echo = (pct(&echo, 0.5), pct(&echo, 0.99));
        row.writes_per_change_audit = total(&audit) as f64 / PROBES as f64;
        row.writes_per_change_metric = writes / PROBES as f64;
        row.write_breakdown = breakdown(&audit);
        row.rss_grown_kib = rss_kib(ctl.pid()).0;
        println!(
            "n={n}: create→IP p50 {:.1} ms p99 {:.1} ms; echo p50 {:.1} ms p99 {:.1} ms; \
             {}/{PROBES} probes got an IP; writes per change {:.2} (audit: {}) / {:.2} (metric); \
             VmRSS {:.1} MiB",
            row.ip.0,
            row.ip.1,
            row.echo.0,
            row.echo.1,
            row.probes_ok,
            row.writes_per_change_audit,
            row.write_breakdown,
            row.writes_per_change_metric,
            row.rss_grown_kib as f64 / 1024.0,
        );

        // Restart: a fresh process must rebuild from the published statuses and write nothing.
        let (list_s, listed, slices) = bare_list(&client).await?;
        row.list_s = list_s;
        stop(&mut ctl);
        generation += 1;
        let from = Timestamp::now();
        let t = Instant::now();
        ctl = start_controller(lab, &kubeconfig, &[], &format!("controller-{generation}"))?;
        let ready = wait_ready(lab, Duration::from_secs(600));
        row.ready_s = ready.then(|| t.elapsed().as_secs_f64());
        tokio::time::sleep(QUIET_AFTER_READY).await;
        let audit = audited_writes(lab, from, Timestamp::now());
        row.restart_writes_audit = Some(total(&audit));
        row.restart_writes_metric = metric(lab, "ferrolb_controller_api_writes_total");
        (row.rss_restart_kib, row.hwm_restart_kib) = rss_kib(ctl.pid());
        owed = 0;
        println!(
            "n={n}: restart to ready {} (bare LIST of {listed} Services and {slices} EndpointSlices: \
             {list_s:.2} s); writes in the {} s after ready: {} by audit ({}), {} by metric; \
             VmRSS {:.1} MiB, VmHWM {:.1} MiB",
            row.ready_s
                .map_or("not ready in 600 s".into(), |s| format!("{s:.2} s")),
            QUIET_AFTER_READY.as_secs(),
            total(&audit),
            breakdown(&audit),
            row.restart_writes_metric,
            row.rss_restart_kib as f64 / 1024.0,
            row.hwm_restart_kib as f64 / 1024.0,
        );

        if massif_at > 0 && n == massif_at {
            row.massif = run_massif(lab, &kubeconfig, &mut ctl, &mut generation).await;
        }
        rows.push(row);
        if budget_spent {
            break;
        }
    }

    let idle_from = Timestamp::now();
    let idle_before = metric(lab, "ferrolb_controller_api_writes_total");
    tokio::time::sleep(Duration::from_secs(30)).await;
    let idle = metric(lab, "ferrolb_controller_api_writes_total") - idle_before;
    let idle_audit = audited_writes(lab, idle_from, Timestamp::now());
    println!(
        "\nidle for 30 s with {have} bulk and {} probe Services: {} API writes by audit, {idle} by metric",
        rows.len() * PROBES,
        total(&idle_audit)
    );
    println!(
        "a bulk Service is {json_size} bytes of JSON as created (comparator for bytes per Service)"
    );
    print_tables(&rows, rss0);
    stop(&mut ctl);
    Ok(rows)
}

/// Restarts the controller under valgrind massif, waits until it is ready and settled, stops it
/// and reads the heap. Leaves a normal controller running again.
async fn run_massif(
    lab: &Lab,
    kubeconfig: &str,
    ctl: &mut LabProcess,
    generation: &mut usize,
) -> Option<(u64, u64)> {
    if std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("valgrind is not installed: no massif figure");
        return None;
    }
    stop(ctl);
    let out = lab.run_dir().join("massif.out");
    let out_arg = format!("--massif-out-file={}", out.display());
    let t = Instant::now();
    let mut m = start_controller(
        lab,
        kubeconfig,
        &["valgrind", "--tool=massif", "--time-unit=ms", &out_arg],
        "controller-massif",
    )
    .ok()?;
    let ready = wait_ready(lab, Duration::from_secs(1200));
    let ready_s = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let before_ms = t.elapsed().as_millis() as u64;
    let _ = m.signal(Signal::Term);
    if m.wait_timeout(Duration::from_secs(300)).is_none() {
        let _ = m.kill();
    }
    let heap = std::fs::read_to_string(&out)
        .ok()
        .and_then(|text| massif_heap(&text, before_ms));
    if !ready {
        println!("under massif the controller was not ready within 1200 s");
    } else {
        println!(
            "under massif: ready after {ready_s:.0} s; heap {}",
            heap.map_or("unreadable".into(), |(peak, last)| format!(
                "{:.1} MB steady, {:.1} MB peak",
                last as f64 / 1e6,
                peak as f64 / 1e6
            ))
        );
    }
    *generation += 1;
    match start_controller(lab, kubeconfig, &[], &format!("controller-{generation}")) {
        Ok(c) => *ctl = c,
        Err(e) => println!("could not restart the controller after massif: {e}"),
    }
    wait_ready(lab, Duration::from_secs(600));
    if ready { heap } else { None }
}

fn print_tables(rows: &[Row], rss0: u64) {
    println!("\n## create → IP visible, against the API server's create → watch echo (same run)");
    println!(
        "{:>8}  {:>9}  {:>10} {:>10}  {:>11} {:>11}  {:>6}  {:>11} {:>11}",
        "services",
        "bulk/s",
        "ip p50 ms",
        "ip p99 ms",
        "echo p50 ms",
        "echo p99 ms",
        "p50 x",
        "writes/chg",
        "(metric)"
    );
    for r in rows {
        println!(
            "{:>8}  {:>9.0}  {:>10.1} {:>10.1}  {:>11.1} {:>11.1}  {:>6.2}  {:>11.2} {:>11.2}",
            r.n,
            r.create_rate,
            r.ip.0,
            r.ip.1,
            r.echo.0,
            r.echo.1,
            r.ip.0 / r.echo.0,
            r.writes_per_change_audit,
            r.writes_per_change_metric
        );
    }
    println!("\n## restart of the controller process: ready, and writes, against a bare LIST");
    println!(
        "{:>8}  {:>9}  {:>10}  {:>6}  {:>13}  {:>9}",
        "services", "ready s", "bare list s", "x", "writes audit", "(metric)"
    );
    for r in rows {
        println!(
            "{:>8}  {:>9}  {:>10.2}  {:>6}  {:>13}  {:>9}",
            r.n,
            r.ready_s.map_or("-".into(), |s| format!("{s:.2}")),
            r.list_s,
            r.ready_s
                .map_or("-".into(), |s| format!("{:.1}", s / r.list_s)),
            r.restart_writes_audit.map_or("-".into(), |w| w.to_string()),
            r.restart_writes_metric
        );
    }
    println!(
        "\n## memory: VmRSS above the empty controller's {:.1} MiB, per Service (KB = 1000 bytes)",
        rss0 as f64 / 1024.0
    );
    println!(
        "{:>8}  {:>10} {:>10}  {:>10} {:>10}  {:>10}  {:>16}",
        "services", "grown MiB", "KB/svc", "restart MiB", "KB/svc", "HWM MiB", "massif heap/svc"
    );
    for r in rows {
        let per = |rss: u64| kb(rss.saturating_sub(rss0) as f64 * 1024.0 / r.n as f64);
        println!(
            "{:>8}  {:>10.1} {:>10.2}  {:>10.1} {:>10.2}  {:>10.1}  {:>16}",
            r.n,
            r.rss_grown_kib as f64 / 1024.0,
            per(r.rss_grown_kib),
            r.rss_restart_kib as f64 / 1024.0,
            per(r.rss_restart_kib),
            r.hwm_restart_kib as f64 / 1024.0,
            r.massif.map_or("-".into(), |(_, last)| format!(
                "{:.2} KB",
                kb(last as f64 / r.n as f64)
            )),
        );
    }
    println!(
        "grown: after the controller took in the bulk Services (allocated each, or adopted the \
         copies in etcd) and the probes; restart: a fresh process {} s after it was ready. \
         Services counted: the bulk ones (the probes add 4% at 1,000, under 0.5% from 50,000).",
        QUIET_AFTER_READY.as_secs()
    );
    let Some(last) = rows.last() else {
        println!("\nno lab row was measured");
        return;
    };
    let n = last.n;
    let per_grown = kb(last.rss_grown_kib.saturating_sub(rss0) as f64 * 1024.0 / n as f64);
    let per_restart = kb(last.rss_restart_kib.saturating_sub(rss0) as f64 * 1024.0 / n as f64);
    println!();
    println!(
        "goal controller RSS per Service at {n} (after growth): {per_grown:.2} KB (target <= 2 KB)"
    );
    println!(
        "goal controller RSS per Service at {n} (after restart): {per_restart:.2} KB (target <= 2 KB)"
    );
    println!(
        "goal restart writes at {n}: {} writes (target = 0 writes)",
        last.restart_writes_audit
            .map_or("unmeasured".into(), |w| w.to_string())
    );
    println!(
        "goal create->IP p99 at {n}: {:.1} ms (target <= 100 ms; the API server's own echo p99 in this run: {:.1} ms)",
        last.ip.1, last.echo.1
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("# ferrolb controller benchmark");
    allocator_table();
    lab_table().await.context("lab rows")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Template {
        let created = "2026-12-07T20:55:53Z";
        Template {
            service: format!(
                r#"{{"metadata":{{"name":"s000000","namespace":"bulk-000","uid":"svc-uid","creationTimestamp":"{created}"}},"spec":{{"clusterIP":"2001:db8:fff0::3:7","clusterIPs":["2001:db8:fff0::3:7"]}},"status":{{"loadBalancer":{{"ingress":[{{"ip":"2001:db8:1::"}}]}},"conditions":[{{"message":"2001:db8:1:: from pool bench","lastTransitionTime":"2026-12-07T20:55:54Z"}}]}}}}"#
            ),
            slice: format!(
                r#"{{"metadata":{{"name":"s000000-x7k2p","namespace":"bulk-000","uid":"slice-uid","creationTimestamp":"{created}","ownerReferences":[{{"name":"s000000","uid":"svc-uid"}}]}}}}"#
            ),
            slice_name: "s000000-x7k2p".into(),
            address: format!(
                r#"{{"metadata":{{"name":"2001:db8:fff0::3:7","uid":"addr-uid","creationTimestamp":"{created}"}},"spec":{{"parentRef":{{"namespace":"bulk-000","name":"s000000"}}}}}}"#
            ),
            service_uid: "svc-uid".into(),
            slice_uid: "slice-uid".into(),
            address_uid: "addr-uid".into(),
            cluster_ip: "2001:db8:fff0::3:7".into(),
            ingress_ip: "2001:db8:1::".into(),
            created: vec![created.into()],
        }
    }

    #[test]
    fn a_copy_keeps_nothing_of_the_templates_identity() {
        let now = "2026-12-07T21:00:00Z";
        let [(k_addr, addr), (k_slice, slice), (k_svc, svc)] = template()
            .copy(1_234, "2001:db8:fff0::8:4d2", now)
            .expect("copy");
        assert_eq!(k_addr, "/registry/ipaddresses/2001:db8:fff0::8:4d2");
        assert_eq!(k_slice, "/registry/endpointslices/bulk-001/s001234-x7k2p");
        assert_eq!(k_svc, "/registry/services/specs/bulk-001/s001234");
        for text in [&addr, &slice, &svc] {
            for old in [
                "s000000",
                "bulk-000",
                "svc-uid",
                "slice-uid",
                "addr-uid",
                "2001:db8:fff0::3:7",
                "2026-12-07T20:55:53Z",
            ] {
                assert!(!text.contains(old), "{old} left in {text}");
            }
        }
        assert!(svc.contains(r#""ip":"2001:db8:1::8000:4d2""#), "{svc}");
        assert!(
            svc.contains("2001:db8:1::8000:4d2 from pool bench"),
            "{svc}"
        );
        // Only the creation time is the copy's; times from another second stay as they were.
        assert!(
            svc.contains(now) && svc.contains("2026-12-07T20:55:54Z"),
            "{svc}"
        );
        let uid = etcd_load::uid(1, 1_234);
        assert!(
            slice.contains(&format!(r#""uid":"{uid}""#)),
            "the owner is the copy's Service"
        );
        assert!(addr.contains(r#""name":"s001234""#), "{addr}");
    }

    fn object(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).expect("an object")
    }

    #[test]
    fn a_template_is_read_from_the_api_servers_objects() {
        let meta = |name: &str, uid: &str| {
            json!({"name": name, "namespace": "bulk-000", "uid": uid, "resourceVersion": "9",
                   "creationTimestamp": "2026-12-07T20:55:53Z"})
        };
        let mut service = json!({"metadata": meta("s000000", "svc-uid"),
            "spec": {"clusterIP": "2001:db8:fff0::3:7", "clusterIPs": ["2001:db8:fff0::3:7"]},
            "status": {"loadBalancer": {"ingress": [{"ip": "2001:db8:1::"}]}}});
        let slice = object(json!({"metadata": meta("s000000-x7k2p", "slice-uid"),
            "ownerReferences": [{"name": "s000000", "uid": "svc-uid"}]}));
        let mut address = meta("2001:db8:fff0::3:7", "addr-uid");
        address["namespace"] = serde_json::Value::Null;
        let address = object(json!({"metadata": address,
            "spec": {"parentRef": {"namespace": "bulk-000", "name": "s000000"}}}));
        let t =
            Template::from_objects(&object(service.clone()), &slice, &address).expect("a template");
        assert_eq!(
            (
                t.cluster_ip.as_str(),
                t.ingress_ip.as_str(),
                t.slice_name.as_str()
            ),
            ("2001:db8:fff0::3:7", "2001:db8:1::", "s000000-x7k2p")
        );
        assert_eq!(t.created, ["2026-12-07T20:55:53Z"]);
        let stored: serde_json::Value = serde_json::from_str(&t.slice).expect("JSON");
        assert_eq!(
            stored["kind"], "EndpointSlice",
            "list items get their kind back"
        );
        assert!(stored["metadata"].get("resourceVersion").is_none());
        service["spec"] = json!({});
        assert!(Template::from_objects(&object(service), &slice, &address).is_err());
    }

    #[test]
    fn copy_ips_skip_what_the_api_server_gave_out_and_stay_in_the_cidr() {
        let mut ips = CopyIps::new();
        let base = u128::from(COPY_CLUSTER_IPS);
        ips.taken.extend([base + 1, base + 2]);
        let got: Vec<String> = (0..3).map(|_| ips.take().expect("room")).collect();
        assert_eq!(
            got,
            [
                "2001:db8:fff0::8:0",
                "2001:db8:fff0::8:3",
                "2001:db8:fff0::8:4"
            ]
        );
        ips.next = u128::from(LAST_CLUSTER_IP);
        assert_eq!(ips.take().expect("the last one"), "2001:db8:fff0::f:ffff");
        assert!(ips.take().is_err());
    }

    #[test]
    fn copy_zero_is_the_template() {
        let t = template();
        let created = t.created[0].clone();
        let [_, _, (_, svc)] = t.copy(0, &t.cluster_ip, &created).expect("copy");
        let svc = svc.replace(&etcd_load::uid(1, 0), "svc-uid");
        assert_eq!(svc, t.service);
    }
}
