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
        kubelet: false,
        ..LabOptions::default()
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
        kubelet: false,
        ..LabOptions::default()
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

/// What a lab with real nodes could leave on the machine, seen from outside the lab: mounts,
/// cgroups, processes and namespaces that name it, the host namespace's interfaces, the
/// kernel settings the kubelet writes, and the paths it hard-codes.
#[derive(Debug, PartialEq, Eq)]
struct Footprint {
    mounts: Vec<String>,
    cgroups: Vec<String>,
    processes: Vec<String>,
    namespaces: Vec<String>,
    host_links: String,
    sysctls: Vec<String>,
    shared_paths: Vec<String>,
    netns_mounted: bool,
}

fn footprint(id: &str, run_dir: &std::path::Path) -> Footprint {
    let run = run_dir.display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&run) || l.contains(id))
        .map(str::to_string)
        .collect();
    let cgroups = ferrolb_lab::host::cgroup_hierarchies()
        .into_iter()
        .flat_map(|h| std::fs::read_dir(h).into_iter().flatten().flatten())
        .map(|e| e.path().display().to_string())
        .filter(|p| p.contains(id))
        .collect();
    // Processes naming the run directory, or running in one of the lab's cgroups (containers).
    let processes = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            ferrolb_lab::process::cmdline_contains(&cmdline, &run) || cgroup.contains(id)
        })
        .filter(|pid| ferrolb_lab::state::ProcId::of(*pid).is_some_and(|p| p.is_alive()))
        .map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!("{pid} {}", comm.trim())
        })
        .collect();
    let namespaces = list_netns()
        .into_iter()
        .filter(|n| n.contains(id))
        .collect();
    let host_links = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let sysctls = ferrolb_lab::host::KUBELET_SYSCTLS
        .iter()
        .map(|k| {
            let v = std::fs::read_to_string(std::path::Path::new("/proc/sys").join(k))
                .unwrap_or_default();
            format!("{k}={}", v.trim())
        })
        .collect();
    let shared_paths = ferrolb_lab::host::SHARED_PATHS
        .iter()
        .filter(|p| std::path::Path::new(p).exists())
        .map(|p| p.to_string())
        .collect();
    let netns_mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some("/run/netns"));
    Footprint {
        netns_mounted,
        mounts,
        cgroups,
        processes,
        namespaces,
        host_links,
        sysctls,
        shared_paths,
    }
}

#[tokio::test]
async fn real_nodes_run_pods_and_leave_nothing_behind() {
    let started = Instant::now();
    // Each lab has a fresh id, so the "before" picture of it is empty by construction except
    // for the machine-wide parts (interfaces, settings, shared paths), which are what we
    // compare against afterwards.
    let before = footprint(
        "flb-no-such-lab",
        std::path::Path::new("/nonexistent-run-dir"),
    );
    let lab = Lab::up(LabOptions {
        nodes: 2,
        kube_proxy: true,
        ..LabOptions::default()
    })
    .await
    .expect("lab up");
    println!(
        "lab {} with real nodes up in {:.2?}",
        lab.id(),
        started.elapsed()
    );
    let id = lab.id().to_string();
    let run_dir = lab.run_dir().to_path_buf();

    // Real kubelets registered the nodes.
    let out = lab
        .kubectl(&["get", "nodes", "-o", "wide"])
        .expect("kubectl runs");
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{table}");
    assert!(table.contains("containerd://"), "{table}");
    assert_eq!(table.matches(" Ready ").count(), 2, "{table}");

    // Pods run: a Deployment on both nodes, reached from the client by pod IP and through a
    // NodePort Service, and answering with its own name.
    let manifest = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}}
      containers:
      - name: backend
        image: ferrolb.local/backend:lab
        imagePullPolicy: Never
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
"#;
    let path = run_dir.join("web.yaml");
    std::fs::write(&path, manifest).expect("write manifest");
    let out = lab
        .kubectl(&["apply", "-f", path.to_str().expect("utf-8")])
        .expect("kubectl apply");
    assert!(out.status.success(), "{}", text(&out));
    let out = lab
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .expect("rollout status");
    assert!(out.status.success(), "{}", text(&out));
    let out = lab
        .kubectl(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[*]}{.status.podIP} {.spec.nodeName}{\"\\n\"}{end}",
        ])
        .expect("pods");
    let pods = String::from_utf8_lossy(&out.stdout).to_string();
    let mut nodes_seen = Vec::new();
    for line in pods.lines() {
        let (ip, node) = line.split_once(' ').expect("ip and node");
        assert!(ip.starts_with("192.0.2."), "{pods}");
        nodes_seen.push(node.to_string());
        let out = lab
            .exec(
                "client",
                &[
                    "curl",
                    "-s",
                    "--max-time",
                    "5",
                    &format!("http://{ip}:8080/"),
                ],
            )
            .expect("curl");
        let body = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            body.contains(&format!("node={node} src=198.51.100.200:")),
            "{body}"
        );
    }
    nodes_seen.sort();
    assert_eq!(nodes_seen, ["node-1", "node-2"]);
    // kube-proxy programs the NodePort once it has seen the endpoints: allow it a few seconds.
    let mut out = None;
    for _ in 0..50 {
        let o = lab
            .exec(
                "client",
                &[
                    "curl",
                    "-s",
                    "--max-time",
                    "2",
                    "http://198.51.100.12:30080/",
                ],
            )
            .expect("curl nodeport");
        let done = String::from_utf8_lossy(&o.stdout).starts_with("pod=web-");
        out = Some(o);
        if done {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = out.expect("tried");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("pod=web-"),
        "{}",
        text(&out)
    );
    // kubectl logs and exec reach the kubelet by its InternalIP.
    let out = lab
        .kubectl(&["exec", "deploy/web", "--", "/backend", "--no-such-flag"])
        .expect("kubectl exec");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown argument"),
        "{}",
        text(&out)
    );

    // While it runs, the lab is visible from outside — so the checks below can fail.
    let during = footprint(&id, &run_dir);
    assert!(!during.mounts.is_empty(), "{during:?}");
    assert!(!during.cgroups.is_empty(), "{during:?}");
    assert!(
        during.processes.iter().any(|p| p.ends_with(" kubelet")),
        "{during:?}"
    );
    assert!(
        during.processes.iter().any(|p| p.ends_with(" backend")),
        "{during:?}"
    );
    assert!(
        during.processes.iter().any(|p| p.ends_with(" pause")),
        "{during:?}"
    );
    assert_eq!(during.namespaces.len(), 5, "{during:?}");

    let t = Instant::now();
    let report = lab.down();
    println!("lab {id} down in {:.2?}: {report:?}", t.elapsed());
    assert!(report.is_clean(), "{report:?}");
    let after = footprint(&id, &run_dir);
    assert_eq!(after.mounts, Vec::<String>::new());
    assert_eq!(after.cgroups, Vec::<String>::new());
    assert_eq!(after.processes, Vec::<String>::new());
    assert_eq!(after.namespaces, Vec::<String>::new());
    assert_eq!(
        after.host_links, before.host_links,
        "host interfaces changed"
    );
    // Settings and shared paths are machine-wide: compare them only when no other lab is up.
    if !ferrolb_lab::state::state_root().join("host.json").exists() {
        assert_eq!(
            after.sysctls, before.sysctls,
            "kernel settings not restored"
        );
        assert_eq!(after.shared_paths, before.shared_paths, "shared paths left");
        assert_eq!(
            after.netns_mounted, before.netns_mounted,
            "/run/netns mount left"
        );
    }
    assert_gone(&id, &run_dir);
}
