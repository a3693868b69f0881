//! Brings real labs up and down: kube-apiserver, etcd, relays and network namespaces.
//! Needs root, iproute2 and the tools from scripts/build-tools.sh (built on first use).

use std::time::Instant;

use ferrolb_lab::plan::namespaces_of;
use ferrolb_lab::process::pids_with_arg;
use ferrolb_lab::teardown::list_netns;
use ferrolb_lab::{Lab, LabOptions, Signal};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};

fn text(out: &std::process::Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts nothing of lab `id` is left: namespaces, processes naming its run dir, the dir.
fn assert_gone(id: &str, run_dir: &std::path::Path) {
    let left = namespaces_of(id, &list_netns());
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(
        !list_netns()
            .iter()
            .any(|n| n.starts_with(&format!("{id}-"))),
        "a {id}-* namespace is left"
    );
    let procs = pids_with_arg(&format!("{}/", run_dir.display()));
    assert!(procs.is_empty(), "lab processes left behind: {procs:?}");
    assert!(!run_dir.exists(), "{} left behind", run_dir.display());
}

#[tokio::test]
async fn two_node_lab_comes_up_works_and_goes_away() {
    let started = Instant::now();
    let lab = Lab::up(LabOptions {
        nodes: 2,
        kube_proxy: false,
        name: None,
    })
    .await
    .expect("lab up");
    println!("lab {} up in {:.2?}", lab.id(), started.elapsed());
    let id = lab.id().to_string();
    let run_dir = lab.run_dir().to_path_buf();
    assert!(id.starts_with("flb") && id.len() == 9, "{id}");

    // kubectl on the host, through the relay pair.
    let out = lab
        .kubectl(&["get", "nodes", "-o", "wide"])
        .expect("kubectl runs");
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{table}");
    for node in lab.nodes() {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("{} ", node.name)))
            .unwrap_or_else(|| panic!("{} missing from\n{table}", node.name));
        assert!(row.contains(" Ready "), "{row}");
        assert!(row.contains(&node.ipv4.to_string()), "{row}");
    }

    // kube-rs (rustls) with the same kubeconfig; both address families are registered.
    let nodes: Api<Node> = Api::all(lab.client().await.expect("client"));
    let listed = nodes
        .list(&ListParams::default())
        .await
        .expect("list nodes");
    assert_eq!(listed.items.len(), 2);
    let n1 = nodes.get("node-1").await.expect("node-1");
    let addrs: Vec<String> = n1
        .status
        .and_then(|s| s.addresses)
        .unwrap_or_default()
        .into_iter()
        .map(|a| format!("{}={}", a.type_, a.address))
        .collect();
    assert_eq!(
        addrs,
        [
            "InternalIP=198.51.100.11",
            "InternalIP=2001:db8::11",
            "Hostname=node-1"
        ]
    );

    // The LAN: client reaches both nodes over IPv4 and IPv6, with the planned MACs.
    let out = lab
        .exec("client", &["ping", "-c1", "-W2", "198.51.100.11"])
        .expect("ping runs");
    assert!(out.status.success(), "{}", text(&out));
    let out = lab
        .exec("client", &["ping", "-6", "-c1", "-W2", "2001:db8::12"])
        .expect("ping6 runs");
    assert!(out.status.success(), "{}", text(&out));
    let out = lab
        .exec("client", &["ip", "neigh", "show", "198.51.100.11"])
        .expect("ip neigh");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&lab.nodes()[0].mac),
        "{}",
        text(&out)
    );

    // A node reaches the API server natively over the LAN.
    let kubectl = lab.tools_bin().join("kubectl");
    let kubectl = kubectl.to_str().expect("utf-8 path");
    let node_kc = format!("--kubeconfig={}", lab.node_kubeconfig().display());
    let out = lab
        .exec("node-1", &[kubectl, &node_kc, "get", "--raw", "/readyz"])
        .expect("kubectl in node-1");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    // ...and the host namespace cannot use the node kubeconfig: no route to the LAN.
    let out = std::process::Command::new(kubectl)
        .args([&node_kc, "--request-timeout=2s", "get", "--raw", "/readyz"])
        .output()
        .expect("kubectl on host");
    assert!(
        !out.status.success(),
        "host reached the LAN: {}",
        text(&out)
    );

    // Background processes in a namespace are stopped, resumed and killed.
    let mut sleeper = lab
        .spawn("node-2", &["sleep", "300"], "sleeper")
        .expect("spawn");
    let ns_pids = ferrolb_lab::teardown::netns_pids(&lab.netns("node-2").expect("netns"));
    assert!(ns_pids.contains(&sleeper.pid()), "{ns_pids:?}");
    sleeper.signal(Signal::Stop).expect("SIGSTOP");
    sleeper.signal(Signal::Cont).expect("SIGCONT");
    assert!(sleeper.is_running());
    drop(sleeper);
    let ns_pids = ferrolb_lab::teardown::netns_pids(&lab.netns("node-2").expect("netns"));
    assert!(ns_pids.is_empty(), "{ns_pids:?}");

    println!("lab {id} checks done after {:.2?}", started.elapsed());
    let report = lab.down();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.namespaces.len(), 5, "{report:?}");
    assert_gone(&id, &run_dir);
}

#[tokio::test]
async fn api_outage_and_kube_proxy_and_drop_cleanup() {
    let started = Instant::now();
    let mut lab = Lab::up(LabOptions {
        nodes: 1,
        kube_proxy: true,
        name: None,
    })
    .await
    .expect("lab up");
    println!(
        "lab {} (kube-proxy) up in {:.2?}",
        lab.id(),
        started.elapsed()
    );
    let id = lab.id().to_string();
    let run_dir = lab.run_dir().to_path_buf();

    // kube-proxy programmed the `kubernetes` Service in the node namespace only.
    let out = lab
        .exec("node-1", &["iptables-save", "-t", "nat"])
        .expect("iptables-save");
    let rules = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        rules.contains("-d 203.0.113.1/32") && rules.contains("--to-destination 198.51.100.2:6443"),
        "{rules}"
    );
    let host_rules = std::process::Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .expect("host iptables-save (read only)");
    assert!(
        !String::from_utf8_lossy(&host_rules.stdout).contains("198.51.100.2:6443"),
        "kube-proxy wrote rules in the host namespace"
    );

    // API outage: refused while stopped, back after start.
    lab.stop_apiserver().expect("stop");
    let out = lab
        .kubectl(&["--request-timeout=2s", "get", "--raw", "/readyz"])
        .expect("kubectl runs");
    assert!(
        !out.status.success(),
        "API answered while stopped: {}",
        text(&out)
    );
    let t = Instant::now();
    lab.start_apiserver().await.expect("start again");
    println!("kube-apiserver restarted in {:.2?}", t.elapsed());
    let out = lab.kubectl(&["get", "nodes"]).expect("kubectl runs");
    assert!(out.status.success(), "{}", text(&out));

    // Dropping the lab (as a failing test would) removes everything too.
    let t = Instant::now();
    drop(lab);
    println!("lab {id} dropped in {:.2?}", t.elapsed());
    assert_gone(&id, &run_dir);
}

#[test]
fn a_lab_whose_owner_was_killed_midway_is_garbage_collected() {
    use std::process::{Command, Stdio};
    let bin = env!("CARGO_BIN_EXE_ferrolb-lab");
    let name = format!("gc{}", std::process::id());
    let mut up = Command::new(bin)
        .args(["up", "--nodes", "1", "--name", &name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ferrolb-lab up");
    // Kill the owner once the lab exists, i.e. in the middle of bringing it up.
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while namespaces_of(&name, &list_netns()).len() < 4 && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    up.kill().expect("kill up");
    up.wait().expect("reap up");
    let run_dir = ferrolb_lab::state::run_dir(&name);
    assert!(
        !namespaces_of(&name, &list_netns()).is_empty(),
        "the killed lab should have left namespaces for gc to find"
    );
    let out = Command::new(bin).arg("gc").output().expect("gc runs");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("lab {name}: owner process is gone")),
        "{}",
        text(&out)
    );
    assert_gone(&name, &run_dir);
}
