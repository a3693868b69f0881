//! The controller against a real kube-apiserver: allocation, requests, pinning, sharing, dual stack,
//! exhaustion, overlaps, type and class changes, a restart that changes nothing, and leader failover.
//!
//! One lab and one sequence of scenarios, each in a namespace of its own, so the ~10 s the lab takes
//! to start is paid once. Each scenario says what it checks when it fails.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferrolb_e2e::{apply, binary, install_crds, wait_for};
use ferrolb_lab::{Lab, LabOptions, LabProcess, Signal};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams};
use serde_json::json;

const T: Duration = Duration::from_secs(20);

struct Ctx {
    lab: Lab,
    client: kube::Client,
}

impl Ctx {
    fn controller(&self, name: &str, port: u16, extra: &[&str]) -> LabProcess {
        let bin = binary("ferrolb-controller");
        let kc = self.lab.node_kubeconfig().to_string_lossy().into_owned();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = vec![
            bin.as_str(),
            "--kubeconfig",
            &kc,
            "--metrics-addr",
            &addr,
            "--identity",
            name,
        ];
        cmd.extend_from_slice(extra);
        self.lab.spawn("cp", &cmd, name).expect("controller starts")
    }

    /// One metric from a controller's /metrics (0 when absent).
    fn metric(&self, port: u16, series: &str) -> f64 {
        let url = format!("http://127.0.0.1:{port}/metrics");
        let out = self.lab.exec("cp", &["curl", "-s", &url]).expect("curl");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    async fn ns(&self, name: &str) {
        apply(
            &self.client,
            &[json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})],
        )
        .await
        .expect("namespace");
    }

    async fn pool(&self, name: &str, spec: serde_json::Value) {
        apply(&self.client, &[json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": name}, "spec": spec})])
            .await
            .expect("pool");
    }

    async fn svc(
        &self,
        ns: &str,
        name: &str,
        annotations: serde_json::Value,
        spec: serde_json::Value,
    ) {
        let mut s = json!({"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": name}});
        if let (Some(base), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        apply(
            &self.client,
            &[json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns, "annotations": annotations}, "spec": s})],
        )
        .await
        .expect("service");
    }

    async fn get(&self, ns: &str, name: &str) -> Option<Service> {
        Api::<Service>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .ok()
            .flatten()
    }

    async fn delete(&self, ns: &str, name: &str) {
        let _ = Api::<Service>::namespaced(self.client.clone(), ns)
            .delete(name, &DeleteParams::default())
            .await;
    }

    /// Waits until the Service shows exactly `n` ingress IPs, and returns them.
    async fn ips(&self, ns: &str, name: &str, n: usize) -> Vec<String> {
        wait_for(&format!("{ns}/{name} to show {n} IP(s)"), T, || async {
            let ips = ingress(&self.get(ns, name).await?);
            (ips.len() == n).then_some(ips)
        })
        .await
    }

    /// Waits for our condition on the Service with `status`, and returns its message.
    async fn condition(&self, ns: &str, name: &str, status: &str, contains: &str) -> String {
        wait_for(
            &format!("{ns}/{name} condition {status} mentioning {contains:?}"),
            T,
            || async {
                let s = self.get(ns, name).await?;
                let c = s
                    .status?
                    .conditions?
                    .into_iter()
                    .find(|c| c.type_ == "ferrolb.io/IPAllocated")?;
                (c.status == status && c.message.contains(contains)).then_some(c.message)
            },
        )
        .await
    }

    async fn pool_condition(&self, name: &str, type_: &str) -> Option<(String, String)> {
        let api: Api<ferrolb_crds::IPAddressPool> = Api::all(self.client.clone());
        let p = api.get_opt(name).await.ok().flatten()?;
        let c = p
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)?;
        Some((c.status, c.message))
    }
}

fn ingress(s: &Service) -> Vec<String> {
    s.status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|i| i.iter().filter_map(|x| x.ip.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn controller_in_the_lab() {
    let lab = Lab::up(LabOptions {
        nodes: 1,
        kube_proxy: false,
        kubelet: false,
        ..LabOptions::default()
    })
    .await
    .expect("lab up");
    let client = lab.client().await.expect("client");
    install_crds(&lab).expect("CRDs");
    let ctx = Ctx { lab, client };

    ctx.pool(
        "blue",
        json!({"addresses": ["198.51.100.100-198.51.100.109", "2001:db8::100-2001:db8::10f"]}),
    )
    .await;
    let mut ctl = ctx.controller("controller-1", 7472, &[]);

    create_and_delete(&ctx).await;
    requested_ips(&ctx).await;
    pinning(&ctx).await;
    sharing(&ctx).await;
    dual_stack(&ctx).await;
    exhaustion_and_recovery(&ctx).await;
    overlapping_pools(&ctx).await;
    l2advertisement_and_selector_conditions(&ctx).await;
    type_and_class_changes(&ctx).await;
    migration_annotations(&ctx).await;
    ip_out_of_every_pool(&ctx).await;
    restart_changes_nothing(&ctx, &mut ctl).await;
    ctl.kill().expect("stop controller");
    leader_failover(&ctx).await;

    let report = ctx.lab.down();
    assert!(
        report.problems.is_empty(),
        "teardown: {:?}",
        report.problems
    );
}

async fn create_and_delete(ctx: &Ctx) {
    ctx.ns("basic").await;
    let t0 = Instant::now();
    ctx.svc("basic", "web", json!({}), json!({})).await;
    let ips = ctx.ips("basic", "web", 1).await;
    println!(
        "create → IP in status: {:?} ({} ms)",
        ips,
        t0.elapsed().as_millis()
    );
    assert!(ips[0].starts_with("198.51.100.10"), "{ips:?}");
    let s = wait_for("the ip-allocated-from-pool annotation", T, || async {
        let s = ctx.get("basic", "web").await?;
        let ann = s.metadata.annotations.clone().unwrap_or_default();
        (ann.get("ferrolb.io/ip-allocated-from-pool")
            .map(String::as_str)
            == Some("blue"))
        .then_some(s)
    })
    .await;
    let mode = s
        .status
        .and_then(|st| st.load_balancer?.ingress?.into_iter().next()?.ip_mode);
    assert_eq!(mode.as_deref(), Some("VIP"));
    ctx.condition("basic", "web", "True", "from pool blue")
        .await;

    // The pool shows the usage.
    wait_for("pool blue to count 1 assigned IPv4", T, || async {
        let api: Api<ferrolb_crds::IPAddressPool> = Api::all(ctx.client.clone());
        let st = api.get("blue").await.ok()?.status?;
        (st.assigned_ipv4 == 1 && st.available_ipv4 == 9).then_some(())
    })
    .await;
    let out = ctx
        .lab
        .kubectl(&["get", "ipaddresspools"])
        .expect("kubectl");
    println!("{}", String::from_utf8_lossy(&out.stdout));

    ctx.delete("basic", "web").await;
    wait_for("pool blue to count 0 assigned after delete", T, || async {
        let api: Api<ferrolb_crds::IPAddressPool> = Api::all(ctx.client.clone());
        (api.get("blue").await.ok()?.status?.assigned_ipv4 == 0).then_some(())
    })
    .await;
}

async fn requested_ips(ctx: &Ctx) {
    ctx.ns("req").await;
    ctx.svc(
        "req",
        "in-pool",
        json!({"ferrolb.io/loadBalancerIPs": "198.51.100.105"}),
        json!({}),
    )
    .await;
    assert_eq!(ctx.ips("req", "in-pool", 1).await, vec!["198.51.100.105"]);
    ctx.svc(
        "req",
        "legacy",
        json!({}),
        json!({"loadBalancerIP": "198.51.100.106"}),
    )
    .await;
    assert_eq!(ctx.ips("req", "legacy", 1).await, vec!["198.51.100.106"]);
    ctx.svc(
        "req",
        "nowhere",
        json!({"ferrolb.io/loadBalancerIPs": "198.51.100.250"}),
        json!({}),
    )
    .await;
    let msg = ctx
        .condition("req", "nowhere", "False", "198.51.100.250")
        .await;
    assert!(msg.contains("no pool"), "{msg}");
    assert!(ingress(&ctx.get("req", "nowhere").await.expect("svc")).is_empty());
    ctx.svc(
        "req",
        "both",
        json!({"ferrolb.io/loadBalancerIPs": "198.51.100.107"}),
        json!({"loadBalancerIP": "198.51.100.108"}),
    )
    .await;
    ctx.condition("req", "both", "False", "keep only the annotation")
        .await;
    ctx.svc(
        "req",
        "garbage",
        json!({"ferrolb.io/loadBalancerIPs": "not-an-ip"}),
        json!({}),
    )
    .await;
    ctx.condition("req", "garbage", "False", "is not an IP address")
        .await;
}

async fn pinning(ctx: &Ctx) {
    ctx.pool(
        "manual",
        json!({"addresses": ["198.51.100.120-198.51.100.121"], "autoAssign": false}),
    )
    .await;
    ctx.ns("pin").await;
    ctx.svc(
        "pin",
        "pinned",
        json!({"ferrolb.io/address-pool": "manual"}),
        json!({}),
    )
    .await;
    assert_eq!(ctx.ips("pin", "pinned", 1).await, vec!["198.51.100.120"]);
    ctx.svc("pin", "free", json!({}), json!({})).await;
    let ip = ctx.ips("pin", "free", 1).await;
    assert!(
        !ip[0].starts_with("198.51.100.12"),
        "an autoAssign=false pool is used only on request: {ip:?}"
    );
    ctx.svc(
        "pin",
        "unknown",
        json!({"ferrolb.io/address-pool": "nosuchpool"}),
        json!({}),
    )
    .await;
    ctx.condition("pin", "unknown", "False", "nosuchpool").await;
}

async fn sharing(ctx: &Ctx) {
    ctx.ns("share").await;
    ctx.svc(
        "share",
        "http",
        json!({"ferrolb.io/allow-shared-ip": "k"}),
        json!({"ports": [{"port": 80}]}),
    )
    .await;
    let a = ctx.ips("share", "http", 1).await;
    ctx.svc(
        "share",
        "https",
        json!({"ferrolb.io/allow-shared-ip": "k"}),
        json!({"ports": [{"port": 443}]}),
    )
    .await;
    let b = ctx.ips("share", "https", 1).await;
    assert_eq!(a, b, "same key, different ports: one IP");
    // Refused: same IP explicitly, but another key.
    ctx.svc(
        "share",
        "intruder",
        json!({"ferrolb.io/allow-shared-ip": "other", "ferrolb.io/loadBalancerIPs": a[0]}),
        json!({"ports": [{"port": 8080}]}),
    )
    .await;
    let msg = ctx.condition("share", "intruder", "False", &a[0]).await;
    assert!(msg.contains("sharing keys differ"), "{msg}");
    // Same key, overlapping port: gets an IP of its own.
    ctx.svc(
        "share",
        "clash",
        json!({"ferrolb.io/allow-shared-ip": "k"}),
        json!({"ports": [{"port": 80}]}),
    )
    .await;
    let c = ctx.ips("share", "clash", 1).await;
    assert_ne!(c, a, "overlapping ports never share");
}

async fn dual_stack(ctx: &Ctx) {
    ctx.ns("dual").await;
    ctx.svc(
        "dual",
        "both",
        json!({}),
        json!({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"]}),
    )
    .await;
    let ips = ctx.ips("dual", "both", 2).await;
    assert!(ips[0].contains('.') && ips[1].contains(':'), "{ips:?}");
    ctx.svc(
        "dual",
        "v6first",
        json!({}),
        json!({"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv6", "IPv4"]}),
    )
    .await;
    let ips = ctx.ips("dual", "v6first", 2).await;
    assert!(
        ips[0].contains(':') && ips[1].contains('.'),
        "family order follows spec: {ips:?}"
    );
    ctx.svc(
        "dual",
        "only6",
        json!({}),
        json!({"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv6"]}),
    )
    .await;
    let ips = ctx.ips("dual", "only6", 1).await;
    assert!(ips[0].starts_with("2001:db8::1"), "{ips:?}");
}

async fn exhaustion_and_recovery(ctx: &Ctx) {
    ctx.ns("tiny").await;
    ctx.pool("tiny", json!({"addresses": ["198.51.100.140/32"], "serviceAllocation": {"namespaces": ["tiny"], "priority": 1}})).await;
    // Other pools stay out of the way: pin to tiny.
    let pin = json!({"ferrolb.io/address-pool": "tiny"});
    ctx.svc("tiny", "first", pin.clone(), json!({})).await;
    assert_eq!(ctx.ips("tiny", "first", 1).await, vec!["198.51.100.140"]);
    ctx.svc("tiny", "second", pin, json!({})).await;
    let msg = ctx.condition("tiny", "second", "False", "exhausted").await;
    println!("exhausted: {msg}");
    ctx.delete("tiny", "first").await;
    assert_eq!(
        ctx.ips("tiny", "second", 1).await,
        vec!["198.51.100.140"],
        "the freed IP goes to the waiting Service"
    );
    ctx.condition("tiny", "second", "True", "198.51.100.140")
        .await;
}

async fn overlapping_pools(ctx: &Ctx) {
    ctx.pool(
        "ov-a",
        json!({"addresses": ["198.51.100.150-198.51.100.151"], "autoAssign": false}),
    )
    .await;
    ctx.pool(
        "ov-b",
        json!({"addresses": ["198.51.100.151-198.51.100.152"], "autoAssign": false}),
    )
    .await;
    for (pool, other) in [("ov-a", "ov-b"), ("ov-b", "ov-a")] {
        let (status, msg) = wait_for(&format!("{pool} Overlapping condition"), T, || async {
            let c = ctx.pool_condition(pool, "Overlapping").await?;
            (c.0 == "True").then_some(c)
        })
        .await;
        assert_eq!(status, "True");
        assert!(
            msg.contains(other) && msg.contains("198.51.100.151"),
            "{msg}"
        );
    }
    ctx.ns("ov").await;
    let mut seen = BTreeMap::new();
    for (i, pool) in ["ov-a", "ov-a", "ov-b", "ov-b"].iter().enumerate() {
        let name = format!("s{i}");
        ctx.svc(
            "ov",
            &name,
            json!({"ferrolb.io/address-pool": pool}),
            json!({}),
        )
        .await;
    }
    for i in 0..4 {
        let name = format!("s{i}");
        let s = wait_for(&format!("ov/{name} decided"), T, || async {
            let s = ctx.get("ov", &name).await?;
            s.status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "ferrolb.io/IPAllocated")?;
            Some(s)
        })
        .await;
        for ip in ingress(&s) {
            assert!(
                seen.insert(ip.clone(), name.clone()).is_none(),
                "{ip} handed out twice"
            );
        }
    }
    assert_eq!(
        seen.len(),
        3,
        "three distinct addresses exist across the overlapping pools: {seen:?}"
    );
}

/// An L2Advertisement that names a pool that does not exist, or has a malformed selector, says so
/// in its Ready condition (and `kubectl get l2advertisements` shows it); it turns Ready once the
/// pool exists. A pool with a malformed serviceAllocation selector says so too.
async fn l2advertisement_and_selector_conditions(ctx: &Ctx) {
    let l2 = |name: &str, spec: serde_json::Value| json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "L2Advertisement", "metadata": {"name": name}, "spec": spec});
    let ready = |name: &'static str, status: &'static str, reason: &'static str| async move {
        let api: Api<ferrolb_crds::L2Advertisement> = Api::all(ctx.client.clone());
        wait_for(
            &format!("L2Advertisement {name} Ready={status} ({reason})"),
            T,
            || async {
                let c = api
                    .get_opt(name)
                    .await
                    .ok()
                    .flatten()?
                    .status?
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "Ready")?;
                (c.status == status && c.reason == reason).then_some(c.message)
            },
        )
        .await
    };
    apply(
        &ctx.client,
        &[
            l2("typo", json!({"ipAddressPools": ["blue", "later"]})),
            l2(
                "bad-op",
                json!({"nodeSelectors": [{"matchExpressions": [{"key": "zone", "operator": "Equals", "values": ["a"]}]}]}),
            ),
        ],
    )
    .await
    .expect("L2Advertisements");
    let msg = ready("typo", "False", "UnknownPools").await;
    assert_eq!(msg, "no IPAddressPool named later; announces blue");
    let msg = ready("bad-op", "False", "InvalidSelectors").await;
    assert!(
        msg.contains("nodeSelectors[0]") && msg.contains("Equals"),
        "{msg}"
    );
    let out = ctx
        .lab
        .kubectl(&["get", "l2advertisements", "typo", "-o", "wide"])
        .expect("kubectl");
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table.contains("READY") && table.contains("UnknownPools"),
        "{table}"
    );

    ctx.pool(
        "later",
        json!({"addresses": ["198.51.100.200/30"], "autoAssign": false}),
    )
    .await;
    let msg = ready("typo", "True", "Valid").await;
    assert_eq!(msg, "announces blue, later");

    ctx.pool(
        "picky",
        json!({"addresses": ["198.51.100.204/30"], "serviceAllocation": {"serviceSelectors": [{"matchExpressions": [{"key": "tier", "operator": "in", "values": ["web"]}]}]}}),
    )
    .await;
    let (_, msg) = wait_for("pool picky Ready=False", T, || async {
        let c = ctx.pool_condition("picky", "Ready").await?;
        (c.0 == "False").then_some(c)
    })
    .await;
    assert!(
        msg.contains("serviceSelectors[0]") && msg.contains("\"in\""),
        "{msg}"
    );

    for name in ["typo", "bad-op"] {
        let api: Api<ferrolb_crds::L2Advertisement> = Api::all(ctx.client.clone());
        api.delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    for name in ["later", "picky"] {
        let api: Api<ferrolb_crds::IPAddressPool> = Api::all(ctx.client.clone());
        api.delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
}

async fn type_and_class_changes(ctx: &Ctx) {
    ctx.ns("change").await;
    ctx.svc("change", "svc", json!({}), json!({})).await;
    let ip = ctx.ips("change", "svc", 1).await;
    ctx.svc("change", "svc", json!({}), json!({"type": "ClusterIP"}))
        .await;
    ctx.ips("change", "svc", 0).await;
    wait_for("our condition and annotation removed", T, || async {
        let s = ctx.get("change", "svc").await?;
        let has_cond = s
            .status
            .and_then(|st| st.conditions)
            .is_some_and(|c| c.iter().any(|c| c.type_ == "ferrolb.io/IPAllocated"));
        let has_ann = s
            .metadata
            .annotations
            .is_some_and(|a| a.contains_key("ferrolb.io/ip-allocated-from-pool"));
        (!has_cond && !has_ann).then_some(())
    })
    .await;
    ctx.svc("change", "svc", json!({}), json!({"type": "LoadBalancer"}))
        .await;
    assert_eq!(
        ctx.ips("change", "svc", 1).await,
        ip,
        "the freed lowest IP comes back"
    );
    // A class set at creation is immutable; another class is simply not ours.
    ctx.svc(
        "change",
        "other-class",
        json!({}),
        json!({"loadBalancerClass": "example.com/other"}),
    )
    .await;
    ctx.svc(
        "change",
        "our-class",
        json!({}),
        json!({"loadBalancerClass": "ferrolb.io/lb"}),
    )
    .await;
    ctx.ips("change", "our-class", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        ingress(&ctx.get("change", "other-class").await.expect("svc")).is_empty(),
        "another class is left alone"
    );
}

async fn migration_annotations(ctx: &Ctx) {
    ctx.pool(
        "legacy",
        json!({"addresses": ["198.51.100.130-198.51.100.131"], "autoAssign": false}),
    )
    .await;
    ctx.ns("migrate").await;
    ctx.svc(
        "migrate",
        "old",
        json!({"metallb.universe.tf/loadBalancerIPs": "198.51.100.131", "metallb.io/address-pool": "legacy"}),
        json!({}),
    )
    .await;
    assert_eq!(ctx.ips("migrate", "old", 1).await, vec!["198.51.100.131"]);
    wait_for(
        "a Warning event naming the ferrolb annotation",
        T,
        || async {
            let out = ctx
                .lab
                .kubectl(&["get", "events", "-n", "migrate", "-o", "json"])
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            (text.contains("DeprecatedAnnotation") && text.contains("ferrolb.io/loadBalancerIPs"))
                .then_some(())
        },
    )
    .await;
}

async fn ip_out_of_every_pool(ctx: &Ctx) {
    // migrate/old holds 198.51.100.131 from pool legacy; shrink the pool so .131 is in no pool.
    ctx.pool(
        "legacy",
        json!({"addresses": ["198.51.100.130/32"], "autoAssign": false}),
    )
    .await;
    let msg = ctx
        .condition("migrate", "old", "True", "is in no IPAddressPool")
        .await;
    println!("orphaned: {msg}");
    assert_eq!(
        ingress(&ctx.get("migrate", "old").await.expect("svc")),
        vec!["198.51.100.131"],
        "the IP is kept"
    );
    wait_for("a NotInAnyPool warning event", T, || async {
        let out = ctx
            .lab
            .kubectl(&["get", "events", "-n", "migrate", "-o", "json"])
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .contains("NotInAnyPool")
            .then_some(())
    })
    .await;
    // The documented way out: allow the IP to change. The explicit request must go too, since an
    // explicitly requested IP is never moved.
    ctx.svc(
        "migrate",
        "old",
        json!({"metallb.io/address-pool": "legacy", "ferrolb.io/allow-ip-change": "true"}),
        json!({}),
    )
    .await;
    let moved = wait_for("the Service to move into the pool", T, || async {
        let ips = ingress(&ctx.get("migrate", "old").await?);
        (ips == ["198.51.100.130"]).then_some(ips)
    })
    .await;
    println!("moved to {moved:?}");
    ctx.condition("migrate", "old", "True", "from pool legacy")
        .await;
}

async fn restart_changes_nothing(ctx: &Ctx, ctl: &mut LabProcess) {
    ctx.pool("big", json!({"addresses": ["198.51.100.160-198.51.100.199", "2001:db8::1:0/112"], "serviceAllocation": {"namespaces": ["many"]}}))
        .await;
    ctx.ns("many").await;
    // IPv6 Services, so the pool is large enough for all of them.
    let n = 100;
    for i in 0..n {
        ctx.svc(
            "many",
            &format!("s{i:02}"),
            json!({}),
            json!({"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv6"]}),
        )
        .await;
    }
    let mut before = BTreeMap::new();
    for i in 0..n {
        let name = format!("s{i:02}");
        before.insert(name.clone(), ctx.ips("many", &name, 1).await);
    }
    // Give the first controller time to finish its pool status writes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    ctl.kill().expect("kill controller");
    let mut again = ctx.controller("controller-restarted", 7473, &[]);
    wait_for("the restarted controller to be ready", T, || async {
        let out = ctx
            .lab
            .exec(
                "cp",
                &[
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "http://127.0.0.1:7473/readyz",
                ],
            )
            .ok()?;
        (String::from_utf8_lossy(&out.stdout) == "200").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes = ctx.metric(7473, "ferrolb_controller_api_writes_total");
    assert_eq!(
        writes,
        0.0,
        "a restart with nothing changed writes nothing (log: {})",
        again.log()
    );
    for (name, ips) in &before {
        assert_eq!(
            &ingress(&ctx.get("many", name).await.expect("svc")),
            ips,
            "{name} renumbered"
        );
    }
    println!(
        "restart with {} Services: 0 writes, no IP changed",
        ctx.lab
            .kubectl(&["get", "svc", "-A", "--no-headers"])
            .map(|o| o
                .stdout
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count())
            .unwrap_or(0)
    );
    again.kill().expect("stop");
}

async fn leader_failover(ctx: &Ctx) {
    let elect = [
        "--leader-elect",
        "--lease-namespace",
        "default",
        "--lease-duration",
        "3",
    ];
    let mut a = ctx.controller("ha-a", 7481, &elect);
    let mut b = ctx.controller("ha-b", 7482, &elect);
    let leader = wait_for("one leader", T, || async {
        let la = ctx.metric(7481, "ferrolb_controller_leader");
        let lb = ctx.metric(7482, "ferrolb_controller_leader");
        match (la as i32, lb as i32) {
            (1, 0) => Some("a"),
            (0, 1) => Some("b"),
            _ => None,
        }
    })
    .await;
    ctx.ns("ha").await;
    let v6 = json!({"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv6"]});
    ctx.svc("ha", "before", json!({}), v6.clone()).await;
    ctx.ips("ha", "before", 1).await;
    let (dead, survivor) = if leader == "a" {
        (&mut a, 7482)
    } else {
        (&mut b, 7481)
    };
    let t0 = Instant::now();
    dead.signal(Signal::Kill).expect("kill the leader");
    ctx.svc("ha", "after", json!({}), v6).await;
    ctx.ips("ha", "after", 1).await;
    println!(
        "leader killed → new Service got its IP from the standby in {} ms",
        t0.elapsed().as_millis()
    );
    assert_eq!(ctx.metric(survivor, "ferrolb_controller_leader"), 1.0);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "takeover within a few seconds"
    );
}
