//! The CRDs against a real kube-apiserver: they install, a valid pool is accepted and printed with
//! its columns, and every malformed pool is rejected by the API server itself with a message a
//! person understands (no webhook involved).

use ferrolb_e2e::{install_crds, text};
use ferrolb_lab::{Lab, LabOptions};

fn pool_yaml(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: {name}\nspec: {spec}\n"
    )
}

fn apply(lab: &Lab, yaml: &str) -> std::process::Output {
    let path = lab
        .run_dir()
        .join(format!("obj-{}.yaml", std::process::id()));
    std::fs::write(&path, yaml).expect("write manifest");
    let out = lab
        .kubectl(&["apply", "-f", &path.to_string_lossy()])
        .expect("kubectl runs");
    let _ = std::fs::remove_file(&path);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn crds_validate_in_the_api_server() {
    let lab = Lab::up(LabOptions {
        nodes: 1,
        kube_proxy: false,
        kubelet: false,
        ..LabOptions::default()
    })
    .await
    .expect("lab up");
    install_crds(&lab).expect("the CRDs install and are established");

    // A valid pool is accepted, with defaults, and printed with its columns.
    let out = apply(
        &lab,
        &pool_yaml(
            "blue",
            r#"{addresses: ["198.51.100.0/24", "198.51.100.10-198.51.100.20", "2001:db8::/120", "2001:db8::10 - 2001:db8::1:0"]}"#,
        ),
    );
    assert!(out.status.success(), "valid pool: {}", text(&out));
    let out = lab.kubectl(&["get", "ipaddresspools"]).expect("kubectl");
    let table = text(&out);
    println!("{table}");
    for column in [
        "NAME",
        "ADDRESSES",
        "AUTO ASSIGN",
        "ASSIGNED",
        "AVAILABLE",
        "AGE",
    ] {
        assert!(
            table.contains(column),
            "column {column} missing in:\n{table}"
        );
    }
    assert!(
        table.contains("198.51.100.10-198.51.100.20") && table.contains("true"),
        "{table}"
    );
    let out = lab
        .kubectl(&["get", "ippool", "blue", "-o", "jsonpath={.spec.autoAssign}"])
        .expect("kubectl");
    assert_eq!(text(&out).trim(), "true", "autoAssign defaults to true");

    // Each malformed pool is refused with its own message.
    let cases = [
        (
            "bad-cidr",
            r#"{addresses: ["198.51.100.0/33"]}"#,
            r#""198.51.100.0/33" is not a CIDR"#,
        ),
        (
            "bad-text",
            r#"{addresses: ["nonsense"]}"#,
            r#""nonsense" is not a CIDR (like 198.51.100.0/24) or an inclusive range"#,
        ),
        (
            "backwards4",
            r#"{addresses: ["198.51.100.20-198.51.100.10"]}"#,
            "is backwards: its start is after its end",
        ),
        (
            "backwards6",
            r#"{addresses: ["2001:db8::1:0-2001:db8::ffff"]}"#,
            "is backwards: its start is after its end",
        ),
        (
            "mixed",
            r#"{addresses: ["198.51.100.1-2001:db8::1"]}"#,
            "mixes IPv4 and IPv6",
        ),
        (
            "empty",
            r#"{addresses: []}"#,
            "addresses must list at least one CIDR or range",
        ),
        (
            "negative",
            r#"{addresses: ["198.51.100.0/24"], serviceAllocation: {priority: -1}}"#,
            "priority must be 0 or greater",
        ),
    ];
    for (name, spec, message) in cases {
        let out = apply(&lab, &pool_yaml(name, spec));
        let said = text(&out);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(
            said.contains(message),
            "{name}: expected {message:?} in:\n{said}"
        );
        println!(
            "rejected {name}: {}",
            said.lines().last().unwrap_or_default()
        );
    }
    let out = lab
        .kubectl(&["get", "ipaddresspools", "-o", "name"])
        .expect("kubectl");
    assert_eq!(
        text(&out).trim(),
        "ipaddresspool.ferrolb.io/blue",
        "only the valid pool exists"
    );

    // An L2Advertisement with a bad interface name is refused too.
    let out = apply(
        &lab,
        "apiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2}\nspec: {interfaces: [\"eth 0\"]}\n",
    );
    assert!(
        !out.status.success() && text(&out).contains("is not an interface name"),
        "{}",
        text(&out)
    );
    let report = lab.down();
    println!("{report:?}");
}
