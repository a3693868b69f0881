//! BGP mode in a real lab: kube-apiserver, three stand-in nodes with kube-proxy, the controller
//! on the host, one `ferrolb-speaker --bgp` process per node (admin kubeconfig), and BIRD 2 in
//! a router namespace between the LAN and a client network; the client reaches Services only
//! through the router.
//!
//! Speakers run as processes, not chart pods: the scenarios signal, stop and restart them at
//! will, which is what the graceful behaviours need, and the chart's own RBAC is covered by the
//! Helm lab test.
//!
//! One lab serves every scenario, in order; each reports its failure and the rest still run.
//! Needs root, iproute2, curl, BIRD 2 (`bird2`), and `cargo build -p ferrolb-controller -p
//! ferrolb-speaker -p ferrolb-e2e`.

#[path = "../src/bgp.rs"]
mod bgp;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure};
use bgp::{BgpLab, NS, advertisement, bfd_profile, by_family, peer};
use ferrolb_lab::router;
use serde_json::json;

/// Generous bound for convergence seen by polling tools.
const CONVERGE: Duration = Duration::from_secs(20);

fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

async fn setup() -> anyhow::Result<BgpLab> {
    let mut env = BgpLab::up(3, &["--bgp-drain-delay", "1s"]).await?;
    env.start_bird()?;
    env.apply(&[
        bfd_profile("lab"),
        peer(
            "tor",
            IpAddr::V4(router::LAN_V4),
            json!({"bfdProfile": "lab", "enableGracefulRestart": true}),
        ),
        peer("tor6", IpAddr::V6(router::LAN_V6), json!({})),
        advertisement(),
    ])
    .await?;
    env.start_speakers()?;
    Ok(env)
}

type Scenario =
    for<'a> fn(&'a mut BgpLab) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;

/// The API server rejects what one object can say is wrong, with our words.
async fn crd_rules(env: &mut BgpLab) -> anyhow::Result<()> {
    let cases = [
        (
            json!({"myASN": 64512, "peerASN": 1, "dynamicASN": "internal", "peerAddress": "198.51.100.1"}),
            "exactly one of peerASN and dynamicASN",
        ),
        (
            json!({"myASN": 64512, "peerASN": 1, "peerAddress": "198.51.100.1", "password": "x", "passwordSecret": {"name": "s"}}),
            "password and passwordSecret exclude each other",
        ),
        (
            json!({"myASN": 0, "peerASN": 1, "peerAddress": "198.51.100.1"}),
            "an AS number is from 1 to 4294967295",
        ),
        (
            json!({"myASN": 1, "peerASN": 2, "peerAddress": "198.51.100.1", "holdTime": "2s"}),
            "holdTime is 0s",
        ),
    ];
    for (spec, want) in cases {
        let obj = json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "BGPPeer", "metadata": {"name": "bad"}, "spec": spec});
        let err = env.apply(&[obj]).await.err().map(|e| format!("{e:#}"));
        ensure!(
            err.as_deref().is_some_and(|e| e.contains(want)),
            "BGPPeer {spec} not rejected with {want:?}: {err:?}"
        );
    }
    let adv = json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "BGPAdvertisement", "metadata": {"name": "bad"},
        "spec": {"communities": ["65536:1"], "aggregationLength": 33}});
    let err = env.apply(&[adv]).await.err().map(|e| format!("{e:#}"));
    ensure!(
        err.as_deref()
            .is_some_and(|e| e.contains("each half is at most 65535")
                && e.contains("aggregationLength is from 1 to 32")),
        "BGPAdvertisement not rejected: {err:?}"
    );
    Ok(())
}

/// Every node's sessions come up, seen by BIRD and in the BGPSessionStates.
async fn sessions_up(env: &mut BgpLab) -> anyhow::Result<()> {
    for (i, n) in env.nodes().iter().enumerate() {
        env.wait_established(&format!("node_{}", i + 1), CONVERGE)
            .await?;
        env.wait_established(&format!("node_{}_v6", i + 1), CONVERGE)
            .await?;
        let st = env
            .wait_state(n, "tor", CONVERGE, "Established with BFD Up", |s| {
                s["bgpState"] == "Established" && s["bfdState"] == "Up"
            })
            .await?;
        ensure!(
            st["negotiated"]["gracefulRestart"] == true
                && st["negotiated"]["holdTimeSeconds"] == 9
                && st["negotiated"]["fourOctetASN"] == true,
            "negotiated: {}",
            st["negotiated"]
        );
        env.wait_state(n, "tor6", CONVERGE, "Established, no BFD", |s| {
            s["bgpState"] == "Established" && s["bfdState"] == "N/A"
        })
        .await?;
    }
    let peers = env.kubectl(&["get", "bgppeers"])?;
    ensure!(
        peers.contains("198.51.100.1") && peers.contains("ASN"),
        "kubectl get bgppeers: {peers}"
    );
    Ok(())
}

/// A Cluster Service's IP is one ECMP route with a next hop per node; curl from behind the
/// router reaches it; its IPv6 IP arrives as IPv6 NLRI over the IPv6 sessions.
async fn ecmp_curl_ipv6(env: &mut BgpLab) -> anyhow::Result<()> {
    let all = env.nodes();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    env.apply(&[BgpLab::service("web", false, true)]).await?;
    env.set_endpoints("web", &all).await?;
    let ips = env.service_ips("web", 2).await?;
    let (v4, v6) = by_family(&ips);
    let v4 = v4.ok_or_else(|| anyhow!("no IPv4: {ips:?}"))?;
    let v6 = v6.ok_or_else(|| anyhow!("no IPv6: {ips:?}"))?;
    env.wait_next_hops(v4, &all, CONVERGE).await?;
    // IPv6: one next hop per node, the nodes' global addresses.
    let started = Instant::now();
    loop {
        let hops = env.router.next_hops(v6)?;
        let want: Vec<IpAddr> = env.nodes().iter().map(|n| env.ipv6_of(n)).collect();
        if hops.len() == 3 && want.iter().all(|w| hops.contains(w)) {
            break;
        }
        if started.elapsed() > CONVERGE {
            bail!("IPv6 next hops for {v6}: {hops:?}, want {want:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shown = env.router.birdc(&["show", "route", &format!("{v4}/32")])?;
    ensure!(
        shown.matches("unicast").count() == 3,
        "BIRD does not hold three routes for {v4}: {shown}"
    );
    // kube-proxy programs the new Service within a few seconds; then every flow works.
    ferrolb_e2e::eventually("curl through the router", CONVERGE, || {
        std::future::ready(env.curl(v4, 40999).map(Some))
    })
    .await?;
    for i in 0..20u16 {
        let body = env.curl(v4, 41000 + i)?;
        ensure!(body.starts_with("hello from node-"), "curl: {body}");
    }
    let st = env
        .session_state("node-1", "tor6")
        .await
        .ok_or_else(|| anyhow!("no state"))?;
    ensure!(
        st["advertised"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p == &json!(format!("{v6}/128")))),
        "node-1-tor6 advertised: {}",
        st["advertised"]
    );
    Ok(())
}

/// `externalTrafficPolicy: Local`: only nodes with an endpoint announce, and they follow it.
async fn local_policy(env: &mut BgpLab) -> anyhow::Result<()> {
    env.apply(&[BgpLab::service("loc", true, false)]).await?;
    env.set_endpoints("loc", &["node-2"]).await?;
    let ip = env.service_ips("loc", 1).await?[0];
    env.wait_next_hops(ip, &["node-2"], CONVERGE).await?;
    ferrolb_e2e::eventually("curl through the router", CONVERGE, || {
        std::future::ready(env.curl(ip, 41999).map(Some))
    })
    .await?;
    let body = env.curl(ip, 42000)?;
    ensure!(body == "hello from node-2", "curl: {body}");
    env.set_endpoints("loc", &["node-1", "node-3"]).await?;
    env.wait_next_hops(ip, &["node-1", "node-3"], CONVERGE)
        .await?;
    Ok(())
}

/// MD5: with the router and the peer agreeing the sessions come up; with a wrong key they do
/// not, and the state says the connect fails; fixed, they come back.
async fn md5(env: &mut BgpLab) -> anyhow::Result<()> {
    let secret = |pw: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
            "metadata": {"name": "bgp-md5", "namespace": NS},
            "stringData": {"password": pw}})
    };
    env.apply(&[secret("lab-s3cret")]).await?;
    for p in env
        .bird_conf
        .peers
        .iter_mut()
        .filter(|p| p.address.is_ipv4())
    {
        p.password = Some("lab-s3cret".into());
    }
    env.reconfigure_bird()?;
    env.apply(&[peer(
        "tor",
        IpAddr::V4(router::LAN_V4),
        json!({"bfdProfile": "lab", "enableGracefulRestart": true,
            "passwordSecret": {"name": "bgp-md5", "namespace": NS}}),
    )])
    .await?;
    for (i, n) in env.nodes().iter().enumerate() {
        env.wait_established(&format!("node_{}", i + 1), Duration::from_secs(40))
            .await?;
        env.wait_state(n, "tor", CONVERGE, "Established", |s| {
            s["bgpState"] == "Established"
        })
        .await?;
    }
    // Wrong key on our side: the router drops our SYNs.
    env.apply(&[secret("wrong-key")]).await?;
    env.wait_state(
        "node-1",
        "tor",
        Duration::from_secs(40),
        "failing to connect",
        |s| {
            s["bgpState"] != "Established"
                && s["lastError"]
                    .as_str()
                    .is_some_and(|e| e.contains("TCP connect"))
        },
    )
    .await?;
    let (_, info) = env.bird_protocol("node_1")?;
    ensure!(!info.starts_with("Established"), "BIRD: {info}");
    env.apply(&[secret("lab-s3cret")]).await?;
    env.wait_established("node_1", Duration::from_secs(60))
        .await?;
    Ok(())
}

/// A peer that answers with garbage gets NOTIFICATION 1/1 and says so; a NOTIFICATION from the
/// router is reported in words.
async fn garbage_and_notification(env: &mut BgpLab) -> anyhow::Result<()> {
    // An HTTP server on the router's port 1790 answers our OPEN with "HTTP/1.0 200 OK…".
    let probe = ferrolb_e2e::binary("lab_probe");
    let bind = format!("{}:1790", router::LAN_V4);
    let cmd = [
        "ip",
        "netns",
        "exec",
        &env.router.netns,
        &probe,
        "http",
        "--bind",
        &bind,
        "--name",
        "junk",
        "--seconds",
        "120",
    ];
    let mut junk = std::process::Command::new(cmd[0])
        .args(&cmd[1..])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let result = async {
        env.apply(&[peer(
            "junk",
            IpAddr::V4(router::LAN_V4),
            json!({"peerPort": 1790, "nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": "node-1"}}]}),
        )])
        .await?;
        env.wait_state("node-1", "junk", CONVERGE, "reporting the garbage", |s| {
            s["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("NOTIFICATION 1/1"))
        })
        .await?;
        let sent = env.metric(
            "node-1",
            "ferrolb_speaker_bgp_notifications_sent_total{peer=\"junk\",code=\"1/1\"}",
        );
        ensure!(sent.is_some_and(|v| v >= 1.0), "notifications metric: {sent:?}");
        env.kubectl(&["delete", "bgppeer", "junk"])?;
        // The router shuts node_2's session down: NOTIFICATION 6/2.
        env.router.birdc(&["disable", "node_2"])?;
        env.wait_state("node-2", "tor", CONVERGE, "reporting the router's Cease", |s| {
            s["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("received NOTIFICATION 6/2"))
        })
        .await?;
        env.router.birdc(&["enable", "node_2"])?;
        env.wait_established("node_2", CONVERGE).await?;
        Ok(())
    }
    .await;
    let _ = junk.kill();
    let _ = junk.wait();
    result
}

/// The router restarting: it shuts down (Cease to every speaker, routes removed), comes back,
/// and the sessions and routes come back with it.
async fn router_restart(env: &mut BgpLab) -> anyhow::Result<()> {
    let ip = env.service_ips("web", 1).await?[0];
    let down = env.router.birdc(&["down"]);
    // `birdc down` makes BIRD close every session and exit; the process is gone after it.
    let wait = env.wait_next_hops(ip, &[], Duration::from_secs(10)).await;
    env.kill_bird();
    env.start_bird()?;
    down?;
    wait?;
    let all = env.nodes();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    env.wait_next_hops(ip, &all, Duration::from_secs(40))
        .await?;
    env.wait_state(
        "node-1",
        "tor",
        CONVERGE,
        "showing the router's Cease",
        |s| {
            s["bgpState"] == "Established"
                && s["flaps"].as_i64().is_some_and(|f| f >= 1)
                && s["lastError"]
                    .as_str()
                    .is_some_and(|e| e.contains("received NOTIFICATION 6/2"))
        },
    )
    .await?;
    Ok(())
}

/// A rolling restart with graceful restart keeps the route (BIRD `bfd graceful`, see
/// `BirdConfig::bfd_graceful`), and the new speaker's End-of-RIB ends the stale period.
async fn graceful_restart(env: &mut BgpLab) -> anyhow::Result<()> {
    env.bird_conf.bfd_graceful = true;
    env.reconfigure_bird()?;
    let ip = env.service_ips("web", 1).await?[0];
    let all = env.nodes();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    env.wait_next_hops(ip, &all, CONVERGE).await?;
    for n in env.nodes() {
        env.stop_speaker(&n, Duration::from_secs(10))?;
        // While it is away, the route keeps its next hop.
        for _ in 0..10 {
            let hops = env.next_hop_nodes(ip)?;
            ensure!(hops.len() == 3, "during {n}'s restart: {hops:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        env.start_speaker(&n)?;
        let i = n.trim_start_matches("node-");
        env.wait_established(&format!("node_{i}"), CONVERGE).await?;
        let log = std::fs::read_to_string(env.router.log_path()).unwrap_or_default();
        ensure!(
            log.contains(&format!("node_{i}: Neighbor graceful restart done")),
            "BIRD saw no graceful restart of node_{i}"
        );
    }
    env.wait_next_hops(ip, &all, CONVERGE).await?;
    env.bird_conf.bfd_graceful = false;
    env.reconfigure_bird()?;
    Ok(())
}

/// A node leaving (out-of-service taint): its routes go first, then Cease 6/2 with a message.
async fn node_leaving(env: &mut BgpLab) -> anyhow::Result<()> {
    let ip = env.service_ips("web", 1).await?[0];
    env.kubectl(&[
        "taint",
        "node",
        "node-3",
        "node.kubernetes.io/out-of-service=nodeshutdown:NoExecute",
    ])?;
    env.wait_next_hops(ip, &["node-1", "node-2"], CONVERGE)
        .await?;
    // Withdrawn while the session is still up (the drain), closed after.
    let (_, info) = env.bird_protocol("node_3")?;
    let withdrawn_first = info.starts_with("Established");
    let started = Instant::now();
    while started.elapsed() < CONVERGE {
        let log = std::fs::read_to_string(env.router.log_path()).unwrap_or_default();
        if log
            .contains("node_3: Received: Administrative shutdown: \"ferrolb: node out of service\"")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(env.router.log_path()).unwrap_or_default();
    ensure!(
        log.contains("node_3: Received: Administrative shutdown"),
        "BIRD got no Cease 6/2 from node_3"
    );
    ensure!(
        withdrawn_first,
        "the session closed before the withdrawal was seen ({info})"
    );
    env.kubectl(&[
        "taint",
        "node",
        "node-3",
        "node.kubernetes.io/out-of-service-",
    ])?;
    env.wait_next_hops(ip, &["node-1", "node-2", "node-3"], CONVERGE)
        .await?;
    Ok(())
}

/// A BGPPeer deleted: its routes are withdrawn, then Cease 6/3, and its states go.
async fn peer_deleted(env: &mut BgpLab) -> anyhow::Result<()> {
    let ips = env.service_ips("web", 2).await?;
    let v6 = by_family(&ips).1.ok_or_else(|| anyhow!("no IPv6"))?;
    env.kubectl(&["delete", "bgppeer", "tor6"])?;
    let started = Instant::now();
    let mut withdrawn_while_up = false;
    while started.elapsed() < CONVERGE {
        let hops = env.router.next_hops(v6)?;
        let (_, info) = env.bird_protocol("node_1_v6")?;
        if hops.is_empty() {
            withdrawn_while_up = info.starts_with("Established");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(
        withdrawn_while_up,
        "IPv6 routes not withdrawn before the sessions closed"
    );
    let deadline = Instant::now() + CONVERGE;
    loop {
        let log = std::fs::read_to_string(env.router.log_path()).unwrap_or_default();
        let ceased =
            (1..=3).all(|i| log.contains(&format!("node_{i}_v6: Received: Peer de-configured")));
        if ceased {
            break;
        }
        ensure!(Instant::now() < deadline, "no Cease 6/3 from every node");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + CONVERGE;
    while env.session_state("node-1", "tor6").await.is_some() {
        ensure!(Instant::now() < deadline, "node-1-tor6 still exists");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The controller's conditions: Ready peers count their Established sessions; references that
/// do not resolve and unsupported fields say so.
async fn controller_conditions(env: &mut BgpLab) -> anyhow::Result<()> {
    let ready =
        |env: &BgpLab, kind: &str, name: &str| -> anyhow::Result<(String, String, String)> {
            let out = env.kubectl(&["get", kind, name, "-o", "json"])?;
            let v: serde_json::Value = serde_json::from_str(&out)?;
            let c = v["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned())
                .unwrap_or_default();
            Ok((
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
                format!("{} | sessions: {}", c["message"], v["status"]["sessions"]),
            ))
        };
    let poll = |what: &'static str,
                kind: &'static str,
                name: &'static str,
                want: &'static [&'static str]| {
        let env = &*env;
        async move {
            let deadline = Instant::now() + CONVERGE;
            loop {
                let got = ready(env, kind, name)?;
                let text = format!("{} {} {}", got.0, got.1, got.2);
                if want.iter().all(|w| text.contains(w)) {
                    return Ok::<_, anyhow::Error>(());
                }
                ensure!(Instant::now() < deadline, "{what}: {text}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    poll(
        "tor Ready with 3 sessions",
        "bgppeer",
        "tor",
        &["True", "Valid", "3/3 established"],
    )
    .await?;
    poll(
        "bgp advertisement Ready",
        "bgpadvertisement",
        "bgp",
        &["True", "announces bgp"],
    )
    .await?;
    env.apply(&[
        peer(
            "typo",
            ip("198.51.100.1"),
            json!({"bfdProfile": "no-such-profile", "passwordSecret": {"name": "no-such-secret"},
                "nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": "no-such-node"}}]}),
        ),
        json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "BGPAdvertisement", "metadata": {"name": "typo"},
            "spec": {"ipAddressPools": ["no-such-pool"], "communities": ["no-such-alias"]}}),
    ])
    .await?;
    poll(
        "typo peer not Ready",
        "bgppeer",
        "typo",
        &[
            "False",
            "UnknownBFDProfile",
            "no-such-secret does not exist",
        ],
    )
    .await?;
    poll(
        "typo advertisement not Ready",
        "bgpadvertisement",
        "typo",
        &["False", "UnknownPools", "no-such-alias"],
    )
    .await?;
    env.kubectl(&["delete", "bgppeer", "typo"])?;
    env.kubectl(&["delete", "bgpadvertisement", "typo"])?;
    Ok(())
}

/// Fields accepted but not implemented: the peer is not used and the state says why.
async fn unsupported_field(env: &mut BgpLab) -> anyhow::Result<()> {
    env.apply(&[peer(
        "vrf-peer",
        ip("198.51.100.1"),
        json!({"vrf": "red", "nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": "node-1"}}]}),
    )])
    .await?;
    env.wait_state("node-1", "vrf-peer", CONVERGE, "not started", |s| {
        s["bgpState"] == "Idle"
            && s["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("vrf is not implemented"))
    })
    .await?;
    env.kubectl(&["delete", "bgppeer", "vrf-peer"])?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bgp_in_the_lab() {
    let started = Instant::now();
    let mut env = setup().await.expect("lab, router, controller, speakers");
    let scenarios: Vec<(&str, Scenario)> = vec![
        ("CRD rules", |e| Box::pin(crd_rules(e))),
        ("sessions up", |e| Box::pin(sessions_up(e))),
        ("ECMP route, curl through the router, IPv6 NLRI", |e| {
            Box::pin(ecmp_curl_ipv6(e))
        }),
        ("externalTrafficPolicy Local", |e| Box::pin(local_policy(e))),
        ("controller conditions", |e| {
            Box::pin(controller_conditions(e))
        }),
        ("unsupported field", |e| Box::pin(unsupported_field(e))),
        ("MD5 right and wrong", |e| Box::pin(md5(e))),
        ("garbage and NOTIFICATION", |e| {
            Box::pin(garbage_and_notification(e))
        }),
        ("router restart", |e| Box::pin(router_restart(e))),
        ("graceful restart of every speaker", |e| {
            Box::pin(graceful_restart(e))
        }),
        ("node leaving: withdraw, drain, Cease 6/2", |e| {
            Box::pin(node_leaving(e))
        }),
        ("BGPPeer deleted: withdraw, Cease 6/3", |e| {
            Box::pin(peer_deleted(e))
        }),
    ];
    let mut failed = Vec::new();
    for (name, run) in scenarios {
        let t = Instant::now();
        match run(&mut env).await {
            Ok(()) => println!("ok   {name} ({:.1?})", t.elapsed()),
            Err(e) => {
                println!("FAIL {name} ({:.1?}): {e:#}", t.elapsed());
                failed.push(format!("{name}: {e:#}"));
            }
        }
    }
    for (node, p) in env.speakers.iter_mut() {
        if !p.is_running() {
            failed.push(format!(
                "speaker on {node} exited:\n{}",
                bgp::tail(&p.log(), 20)
            ));
        }
    }
    if !failed.is_empty() {
        println!("{}", bgp::logs(&env));
    }
    let down = env.down();
    println!("BGP lab test took {:.1?}", started.elapsed());
    assert!(
        failed.is_empty(),
        "{} scenario(s) failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    down.expect("clean teardown");
}
