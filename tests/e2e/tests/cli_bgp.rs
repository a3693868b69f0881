//! `kubectl ferrolb trace` on a Service of a BGP pool, in the BGP lab (kube-apiserver, three
//! stand-in nodes with kube-proxy, `ferrolb-speaker --bgp` processes, BIRD 2 as the router):
//! the announce step names the nodes advertising the IP to the router with the sessions' BGP
//! and BFD states, and says so in words when no session is Established (BIRD killed). Short on
//! purpose: the BGP behaviours themselves are `tests/bgp.rs`'s.
//!
//! Needs root, iproute2, BIRD 2, and `cargo build -p ferrolb-controller -p ferrolb-speaker -p
//! ferrolb-cli -p ferrolb-e2e --bins`.

#[path = "../src/bgp.rs"]
mod bgp;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use bgp::{BgpLab, NS, advertisement, bfd_profile, peer};
use ferrolb_lab::router;
use serde_json::json;

/// Generous bound for convergence seen by polling tools.
const CONVERGE: Duration = Duration::from_secs(30);

/// `kubectl-ferrolb ARGS` with the lab's kubeconfig: exit code and standard output.
fn plugin(env: &BgpLab, args: &[&str]) -> anyhow::Result<(Option<i32>, String)> {
    let bin = ferrolb_e2e::binary("kubectl-ferrolb");
    let out = Command::new(&bin)
        .args(args)
        .env("KUBECONFIG", env.lab.kubeconfig())
        .env_remove("FERROLB_NAMESPACE")
        .env_remove("FERROLB_RULES")
        .env_remove("FERROLB_OUTPUT")
        .output()
        .with_context(|| format!("run {bin}"))?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// Polls `trace svc/web` until its text holds `words` and exits with `status`.
async fn trace_until(env: &BgpLab, status: i32, words: &[String]) -> anyhow::Result<String> {
    let started = Instant::now();
    loop {
        let (code, out) = plugin(env, &["trace", "svc/web", "-n", NS])?;
        if code == Some(status) && words.iter().all(|w| out.contains(w.as_str())) {
            return Ok(out);
        }
        if started.elapsed() > CONVERGE {
            return Err(anyhow!(
                "trace after {CONVERGE:?} (exit {code:?}, want {status}) does not say {words:?}:\n{out}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn scenario(env: &mut BgpLab) -> anyhow::Result<()> {
    env.start_bird()?;
    env.apply(&[
        bfd_profile("lab"),
        peer(
            "tor",
            std::net::IpAddr::V4(router::LAN_V4),
            json!({"bfdProfile": "lab"}),
        ),
        advertisement(),
    ])
    .await?;
    env.start_speakers()?;
    // Policy Local, endpoints on node-1 and node-2: those two advertise, node-3 does not.
    env.apply(&[BgpLab::service("web", true, false)]).await?;
    env.set_endpoints("web", &["node-1", "node-2"]).await?;
    let ip = env.service_ips("web", 1).await?[0];
    env.wait_next_hops(ip, &["node-1", "node-2"], CONVERGE)
        .await?;

    let ok = trace_until(
        env,
        0,
        &[format!(
            "[ok] {ip} advertised over BGP by node-1, node-2 to tor (Established, BFD Up)"
        )],
    )
    .await?;
    ensure!(
        !ok.contains("[error]") && !ok.contains("[warning]") && !ok.contains("Announced"),
        "a working BGP Service traces with a fault, or an L2 step:\n{ok}"
    );
    ensure!(
        ok.contains("advertised over BGP by node-1, node-2"),
        "the policy step does not compare endpoints with advertisers:\n{ok}"
    );
    println!("--- trace, working:\n{ok}");
    let (_, js) = plugin(env, &["trace", "svc/web", "-n", NS, "-o", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&js).context("trace's JSON")?;
    ensure!(
        v["service"]["advertisers"] == json!(["node-1", "node-2"])
            && v["service"]["bgp"][0]["sessions"]
                .as_array()
                .is_some_and(|s| s.len() == 3),
        "trace -o json: {}",
        v["service"]
    );
    // A dual-stack Service with only an IPv4 peer: its IPv6 IP is desired but not carried on
    // the IPv4 sessions (no dualStackAddressFamily), and trace gives the speakers' reason.
    env.apply(&[BgpLab::service("dual", false, true)]).await?;
    env.set_endpoints("dual", &["node-1"]).await?;
    let dual = env.service_ips("dual", 2).await?;
    let (v4, v6) = bgp::by_family(&dual);
    let (v4, v6) = (
        v4.ok_or_else(|| anyhow!("no IPv4: {dual:?}"))?,
        v6.ok_or_else(|| anyhow!("no IPv6: {dual:?}"))?,
    );
    let started = Instant::now();
    let out = loop {
        let (code, out) = plugin(env, &["trace", "svc/dual", "-n", NS])?;
        let want = [
            format!(
                "[ok] {v4} advertised over BGP by node-1, node-2, node-3 to tor (Established, BFD Up)"
            ),
            format!(
                "[error] {v6} not advertised over BGP: {v6}/128 not announced on node-1, node-2, node-3 → tor: family not carried on this session (set dualStackAddressFamily)"
            ),
        ];
        if code == Some(1) && want.iter().all(|w| out.contains(w.as_str())) {
            break out;
        }
        ensure!(
            started.elapsed() < CONVERGE,
            "trace svc/dual (exit {code:?}) does not say {want:?}:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!("--- trace, dual-stack with an IPv4 peer only:\n{out}");
    let (_, status) = plugin(env, &["status"])?;
    ensure!(
        status.contains("advertised over BGP by node-1, node-2")
            && status.contains("BGP sessions:"),
        "status:\n{status}"
    );
    println!("--- status:\n{status}");

    // The router gone: every session leaves Established, and trace says so.
    env.kill_bird();
    let broken = trace_until(
        env,
        1,
        &[format!(
            "[error] {ip} not advertised over BGP: no session is Established"
        )],
    )
    .await?;
    println!("--- trace, BIRD killed:\n{broken}");
    // Past BFD's detection time (3 × 300 ms) and the speakers' one-second write limit: still
    // broken, as the states settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = trace_until(env, 1, &[format!("[error] {ip} not advertised over BGP")]).await?;
    println!("--- trace, BIRD killed, 3 s later:\n{settled}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_in_the_bgp_lab() {
    let started = Instant::now();
    let mut env = BgpLab::up(3, &[]).await.expect("lab, controller");
    let r = scenario(&mut env).await;
    if r.is_err() {
        println!("{}", bgp::logs(&env));
    }
    let down = env.down();
    println!("cli BGP lab test took {:.1?}", started.elapsed());
    r.expect("trace in the BGP lab");
    down.expect("clean teardown");
}
