//! The `kubectl-ferrolb` binary in the modes that need no cluster: offline trace (from a file and
//! from standard input, text and JSON) and migrate from files. Exit codes and output are checked
//! as a user sees them.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kubectl-ferrolb"));
    // Never reach a real cluster from these tests.
    c.env("KUBECONFIG", "/nonexistent");
    c
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = bin();
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = c.spawn().expect("runs");
    if let (Some(s), Some(mut i)) = (stdin, child.stdin.take()) {
        i.write_all(s.as_bytes()).expect("stdin");
    }
    child.wait_with_output().expect("output")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn offline_trace_prints_the_path_and_shares() {
    let out = run(
        &[
            "trace",
            "--rules",
            &fixture("iptables-save-node-1.txt"),
            "--to",
            "198.51.100.100:80/tcp",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for needle in [
        "Rules: iptables-save output",
        "jump KUBE-EXT-CDGGSHYLG3RE2FKL",
        "mark for masquerade (SNAT will happen)",
        "33.3%  delivered to 192.0.2.18:8080, SNAT (masquerade)",
        "33.3%  delivered to 192.0.2.2:8080, SNAT (masquerade)",
    ] {
        assert!(s.contains(needle), "missing {needle:?} in\n{s}");
    }
}

#[test]
fn offline_trace_reads_standard_input_and_writes_json() {
    let rules = std::fs::read_to_string(fixture("nft-ruleset-node-2.json")).expect("fixture");
    let out = run(
        &[
            "trace",
            "--rules",
            "-",
            "--to",
            "[2001:db8::100]:80/tcp",
            "-o",
            "json",
        ],
        Some(&rules),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["rules"]["format"], "nft-json");
    let outcomes = v["trace"]["outcomes"].as_array().expect("outcomes");
    assert_eq!(outcomes.len(), 3);
    let total: f64 = outcomes.iter().filter_map(|o| o["share"].as_f64()).sum();
    assert!((total - 1.0).abs() < 1e-9);
}

/// The web Service's EndpointSlices from `lab-services.yaml`, optionally with one more
/// endpoint, written to a file of their own.
fn web_slices(extra: Option<&str>) -> std::path::PathBuf {
    let all = std::fs::read_to_string(fixture("lab-services.yaml")).expect("fixture");
    let mut docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&all)
        .map(|d| <serde_json::Value as serde::Deserialize>::deserialize(d).expect("yaml"))
        .filter(|d| {
            d["kind"] == "EndpointSlice"
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("web-"))
        })
        .collect();
    assert_eq!(docs.len(), 2);
    if let (Some(ip), Some(eps)) = (extra, docs[0]["endpoints"].as_array_mut()) {
        eps.push(serde_json::json!({"addresses": [ip], "nodeName": "node-1", "conditions": {"ready": true}}));
    }
    let path = std::env::temp_dir().join(format!(
        "ferrolb-cli-web-slices-{}-{}.yaml",
        std::process::id(),
        extra.unwrap_or("none")
    ));
    let text: Vec<String> = docs
        .iter()
        .map(|d| serde_yaml::to_string(d).expect("yaml"))
        .collect();
    std::fs::write(&path, text.join("---\n")).expect("write");
    path
}

#[test]
fn offline_trace_checks_against_endpoint_slices() {
    let rules = fixture("iptables-save-node-1.txt");
    let ok = web_slices(None);
    let out = run(
        &[
            "trace",
            "--rules",
            &rules,
            "--to",
            "198.51.100.100:80",
            "--endpoints",
            &ok.to_string_lossy(),
        ],
        None,
    );
    let _ = std::fs::remove_file(&ok);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.contains("[ok] the rules send traffic to exactly the 3 usable endpoint(s)"),
        "{s}"
    );

    // A newer endpoint the dump does not know about.
    let newer = web_slices(Some("192.0.2.10"));
    let out = run(
        &[
            "trace",
            "--rules",
            &rules,
            "--to",
            "198.51.100.100:80",
            "--endpoints",
            &newer.to_string_lossy(),
        ],
        None,
    );
    let _ = std::fs::remove_file(&newer);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.contains(
            "[error] endpoint 192.0.2.10:8080 on node-1 is ready but no rule sends traffic to it"
        ),
        "{s}"
    );
}

#[test]
fn bad_arguments_fail_in_words() {
    let out = run(
        &[
            "trace",
            "--rules",
            &fixture("iptables-save-node-1.txt"),
            "--to",
            "nonsense",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("is not IP:PORT"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["trace"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--rules FILE and --to"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn migrate_metallb_from_files_prints_yaml_and_changes_nothing() {
    let out = run(
        &[
            "migrate",
            "metallb",
            "-f",
            &fixture("migrate/metallb-l2.yaml"),
            &fixture("migrate/metallb-legacy.yaml"),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&text(&out.stdout))
        .map(|d| <serde_json::Value as serde::Deserialize>::deserialize(d).expect("yaml"))
        .collect();
    let kinds: Vec<(&str, &str)> = docs
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or(""),
                d["metadata"]["name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("IPAddressPool", "first-pool"),
            ("IPAddressPool", "default"),
            ("L2Advertisement", "example"),
            ("L2Advertisement", "default")
        ]
    );
    assert!(docs.iter().all(
        |d| d["apiVersion"] == "ferrolb.io/v1beta1" && d["metadata"].get("namespace").is_none()
    ));
    assert!(text(&out.stderr).contains("nothing was changed in the cluster"));
}

#[test]
fn migrate_k3s_from_a_node_list() {
    let out = run(
        &[
            "migrate",
            "k3s-servicelb",
            "-f",
            &fixture("migrate/k3s-nodes.yaml"),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("name: servicelb-edge"), "{s}");
    assert!(s.contains("addressType: PreferExternalIP"), "{s}");
    let e = text(&out.stderr);
    assert!(e.contains("pool servicelb: 2 node(s)"), "{e}");
    assert!(e.contains("--disable=servicelb"), "{e}");
}

#[test]
fn a_reader_that_goes_away_ends_the_program_quietly() {
    // `kubectl ferrolb trace ... | head -1`: the pipe closes after one line.
    let mut c = bin();
    c.args([
        "trace",
        "--rules",
        &fixture("iptables-save-node-1.txt"),
        "--to",
        "198.51.100.100:80",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .stdin(Stdio::null());
    let mut child = c.spawn().expect("runs");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("output");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
}
