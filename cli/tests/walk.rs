//! The rule walker on real kube-proxy dumps from the lab (see `fixtures/README.md`): every shape
//! of Service, iptables and nftables, IPv4 and IPv6, whole dumps, listings and excerpts.

use std::net::IpAddr;

use ferrolb_cli::rules::{self, Format, Proto};
use ferrolb_cli::walk::check::{SliceEndpoint, cross_check};
use ferrolb_cli::walk::{self, Fate, Origin, Packet, Snat, Trace, WalkError, WalkOptions};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn trace_with(file: &str, p: Packet) -> Trace {
    let rs = rules::parse(&fixture(file)).expect("parses");
    walk::walk(&rs, &p, &WalkOptions::default()).expect("walks")
}

fn trace(file: &str, dst: &str, port: u16, from: Option<&str>) -> Trace {
    let mut p = Packet::to(ip(dst), port, Proto::Tcp);
    p.src = from.map(ip);
    trace_with(file, p)
}

/// (endpoint, share, snat) of every delivered outcome, with shares summed per endpoint and SNAT.
fn delivered(t: &Trace) -> Vec<(String, f64, Snat)> {
    let mut out: Vec<(String, f64, Snat)> = Vec::new();
    for o in &t.outcomes {
        if let Fate::Delivered { to } = &o.fate {
            let k = to.to_string();
            match out.iter_mut().find(|(e, _, s)| *e == k && *s == o.snat) {
                Some((_, sh, _)) => *sh += o.share,
                None => out.push((k, o.share, o.snat.clone())),
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

fn assert_split(t: &Trace, want: &[&str], snat: Snat) {
    let d = delivered(t);
    let got: Vec<&str> = d.iter().map(|(e, _, _)| e.as_str()).collect();
    assert_eq!(got, want, "{t:#?}");
    let each = 1.0 / want.len() as f64;
    for (e, s, sn) in &d {
        assert!(close(*s, each), "{e}: {s} != {each}");
        assert_eq!(*sn, snat, "{e}");
    }
}

const WEB: [&str; 3] = ["192.0.2.18:8080", "192.0.2.2:8080", "192.0.2.3:8080"];

#[test]
fn lb_ip_with_cluster_policy_splits_evenly_and_masquerades() {
    let t = trace("iptables-save-node-1.txt", "198.51.100.100", 80, None);
    assert_eq!(t.start, "nat PREROUTING");
    assert_split(&t, &WEB, Snat::Yes);
    let total: f64 = t.outcomes.iter().map(|o| o.share).sum();
    assert!(close(total, 1.0), "{total}");
}

#[test]
fn the_same_service_in_every_input_form() {
    for file in [
        "iptables-save-node-2.txt",
        "iptables-nL-nat-node-1.txt",
        "iptables-nvL-nat-node-1.txt",
        "nft-ruleset-node-2.json",
    ] {
        let t = trace(file, "198.51.100.100", 80, Some("198.51.100.200"));
        assert_split(&t, &WEB, Snat::Yes);
    }
}

#[test]
fn listings_are_detected_and_read_without_issues() {
    for (file, format) in [
        ("iptables-nL-nat-node-1.txt", Format::Listing),
        ("iptables-nvL-nat-node-1.txt", Format::Listing),
        ("iptables-nL-filter-node-1.txt", Format::Listing),
        ("ip6tables-nL-nat-node-1.txt", Format::Listing),
        ("iptables-save-node-1.txt", Format::IptablesSave),
        ("nft-ruleset-node-2.json", Format::NftJson),
    ] {
        let rs = rules::parse(&fixture(file)).expect("parses");
        assert_eq!(rs.format, format, "{file}");
        assert!(rs.issues.is_empty(), "{file}: {:?}", rs.issues);
        assert!(rs.rule_count() > 20, "{file}");
    }
}

#[test]
fn ipv6_lb_ip() {
    let t = trace("ip6tables-save-node-1.txt", "2001:db8::100", 80, None);
    assert_split(
        &t,
        &[
            "[2001:db8:1:1::2]:8080",
            "[2001:db8:1:1::3]:8080",
            "[2001:db8:1:2::18]:8080",
        ],
        Snat::Yes,
    );
    let t = trace("nft-ruleset-node-2.json", "2001:db8::100", 80, None);
    assert_split(
        &t,
        &[
            "[2001:db8:1:1::2]:8080",
            "[2001:db8:1:1::3]:8080",
            "[2001:db8:1:2::18]:8080",
        ],
        Snat::Yes,
    );
    let t = trace("ip6tables-nL-nat-node-1.txt", "2001:db8::100", 80, None);
    assert_eq!(delivered(&t).len(), 3);
}

#[test]
fn local_policy_keeps_the_source_and_uses_local_endpoints() {
    // node-1's only local endpoint is 192.0.2.4; node-2's is 192.0.2.19.
    let t = trace(
        "iptables-save-node-1.txt",
        "198.51.100.101",
        80,
        Some("198.51.100.200"),
    );
    assert_split(&t, &["192.0.2.4:8080"], Snat::No);
    let t = trace(
        "iptables-save-node-2.txt",
        "198.51.100.101",
        80,
        Some("198.51.100.200"),
    );
    assert_split(&t, &["192.0.2.19:8080"], Snat::No);
    let t = trace(
        "nft-ruleset-node-2.json",
        "198.51.100.101",
        80,
        Some("198.51.100.200"),
    );
    assert_split(&t, &["192.0.2.19:8080"], Snat::No);
}

#[test]
fn local_policy_from_a_pod_uses_every_endpoint() {
    let t = trace(
        "iptables-save-node-1.txt",
        "198.51.100.101",
        80,
        Some("192.0.2.3"),
    );
    let d = delivered(&t);
    let eps: Vec<&str> = d.iter().map(|(e, _, _)| e.as_str()).collect();
    assert_eq!(eps, ["192.0.2.19:8080", "192.0.2.4:8080"], "{d:?}");
    assert!(d.iter().all(|(_, s, sn)| close(*s, 0.5) && *sn == Snat::No));
}

#[test]
fn unknown_source_forks_with_named_assumptions() {
    let t = trace("iptables-save-node-1.txt", "198.51.100.101", 80, None);
    let pod = t
        .outcomes
        .iter()
        .filter(|o| o.assuming == ["the source is in 192.0.2.0/25"])
        .count();
    let outside: Vec<_> = t
        .outcomes
        .iter()
        .filter(|o| o.assuming == ["the source is not in 192.0.2.0/25"])
        .collect();
    assert_eq!(pod, 2, "{:#?}", t.outcomes);
    assert_eq!(outside.len(), 1);
    assert_eq!(outside[0].snat, Snat::No);
    assert!(
        matches!(&outside[0].fate, Fate::Delivered { to } if to.to_string() == "192.0.2.4:8080")
    );
}

#[test]
fn local_policy_without_a_local_endpoint_drops() {
    let t = trace(
        "iptables-save-node-1.txt",
        "198.51.100.105",
        80,
        Some("198.51.100.200"),
    );
    assert_eq!(t.outcomes.len(), 1, "{:#?}", t.outcomes);
    match &t.outcomes[0].fate {
        Fate::Dropped { chain, reason } => {
            assert_eq!(chain, "KUBE-EXTERNAL-SERVICES");
            assert_eq!(
                reason.as_deref(),
                Some("default/remote:http has no local endpoints")
            );
        }
        other => panic!("{other:?}"),
    }
    // On node-2, which has the endpoint, it is delivered.
    let t = trace(
        "iptables-save-node-2.txt",
        "198.51.100.105",
        80,
        Some("198.51.100.200"),
    );
    assert_split(&t, &["192.0.2.20:8080"], Snat::No);
}

#[test]
fn no_endpoints_rejects() {
    for file in ["iptables-save-node-1.txt", "nft-ruleset-node-2.json"] {
        let t = trace(file, "198.51.100.102", 80, None);
        assert_eq!(t.outcomes.len(), 1, "{file}");
        match &t.outcomes[0].fate {
            Fate::Rejected { reason, .. } => {
                assert_eq!(
                    reason.as_deref(),
                    Some("default/empty:http has no endpoints"),
                    "{file}"
                )
            }
            other => panic!("{file}: {other:?}"),
        }
    }
}

#[test]
fn source_ranges_drop_outsiders_and_admit_the_allowed() {
    for file in ["iptables-save-node-1.txt", "nft-ruleset-node-2.json"] {
        let t = trace(file, "198.51.100.104", 80, Some("198.51.100.50"));
        assert!(
            matches!(t.outcomes.as_slice(), [o] if matches!(o.fate, Fate::Dropped { .. })),
            "{file}: {:#?}",
            t.outcomes
        );
        let t = trace(file, "198.51.100.104", 80, Some("198.51.100.200"));
        assert_split(&t, &["192.0.2.6:8080"], Snat::Yes);
    }
}

#[test]
fn session_affinity_is_noted() {
    let t = trace("iptables-save-node-1.txt", "198.51.100.103", 80, None);
    assert_split(&t, &["192.0.2.21:8080", "192.0.2.5:8080"], Snat::Yes);
    let text = walk::render::text(&t);
    assert!(text.contains("session affinity"), "{text}");
    let t = trace("nft-ruleset-node-2.json", "198.51.100.103", 80, None);
    assert_split(&t, &["192.0.2.21:8080", "192.0.2.5:8080"], Snat::Yes);
}

#[test]
fn nodeport_on_a_node_address() {
    let mut p = Packet::to(ip("198.51.100.11"), 30080, Proto::Tcp);
    p.dst_local = Some(true);
    let t = trace_with("iptables-save-node-1.txt", p);
    assert_split(&t, &WEB, Snat::Yes);
    // Unknown locality: the walker says what it assumes (kube-proxy matches the node IP here).
    let t = trace("iptables-save-node-1.txt", "198.51.100.11", 30080, None);
    assert_split(&t, &WEB, Snat::Yes);
    let mut p = Packet::to(ip("198.51.100.12"), 30080, Proto::Tcp);
    p.dst_local = Some(true);
    let t = trace_with("nft-ruleset-node-2.json", p);
    assert_split(&t, &WEB, Snat::Yes);
}

#[test]
fn cluster_ip_udp_from_a_pod_and_from_the_node() {
    let mut p = Packet::to(ip("203.0.113.43"), 53, Proto::Udp);
    p.src = Some(ip("192.0.2.3"));
    let t = trace_with("iptables-save-node-1.txt", p.clone());
    assert_split(&t, &["192.0.2.9:5353"], Snat::No);
    let t = trace_with("nft-ruleset-node-2.json", p.clone());
    assert_split(&t, &["192.0.2.9:5353"], Snat::No);
    // TCP to the UDP port finds nothing.
    let mut tcp = p.clone();
    tcp.proto = Proto::Tcp;
    let t = trace_with("iptables-save-node-1.txt", tcp);
    assert!(
        t.outcomes
            .iter()
            .all(|o| !matches!(o.fate, Fate::Delivered { .. }))
    );
    // From the node itself: OUTPUT, masqueraded (the node's address is not a pod address).
    p.src = Some(ip("198.51.100.11"));
    p.origin = Origin::Node;
    let t = trace_with("iptables-save-node-1.txt", p.clone());
    assert_eq!(t.start, "nat OUTPUT");
    assert_split(&t, &["192.0.2.9:5353"], Snat::Yes);
    let t = trace_with("nft-ruleset-node-2.json", p);
    assert_split(&t, &["192.0.2.9:5353"], Snat::Yes);
}

#[test]
fn unknown_address_is_not_translated() {
    let t = trace(
        "iptables-save-node-1.txt",
        "198.51.100.99",
        80,
        Some("198.51.100.200"),
    );
    assert!(
        matches!(t.outcomes.as_slice(), [o] if o.fate == Fate::NotTranslated),
        "{:#?}",
        t.outcomes
    );
}

/// The lines of the node-1 dump that mention web, as pasted from a ticket (no PREROUTING, no
/// table header).
fn web_excerpt() -> String {
    let text = fixture("iptables-save-node-1.txt");
    let chains = [
        "CDGGSHYLG3RE2FKL",
        "SQPICSLDUGSKV7QU",
        "S3FQDP5GMOBJLYAN",
        "IDQLS7QGHCNG55ZQ",
    ];
    text.lines()
        .filter(|l| l.starts_with("-A") && chains.iter().any(|c| l.contains(c)))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn excerpt_without_prerouting_starts_at_kube_services() {
    let rs = rules::parse(&web_excerpt()).expect("parses");
    assert_eq!(rs.format, Format::Excerpt);
    let t = walk::walk(
        &rs,
        &Packet::to(ip("198.51.100.100"), 80, Proto::Tcp),
        &WalkOptions::default(),
    )
    .expect("walks");
    assert!(t.start.contains("starting at KUBE-SERVICES"), "{}", t.start);
    assert_split(&t, &WEB, Snat::Yes);
}

#[test]
fn a_missing_endpoint_chain_is_named_with_its_share() {
    let excerpt: String = web_excerpt()
        .lines()
        .filter(|l| !l.starts_with("-A KUBE-SEP-SQPICSLDUGSKV7QU"))
        .collect::<Vec<_>>()
        .join("\n");
    let rs = rules::parse(&excerpt).expect("parses");
    let t = walk::walk(
        &rs,
        &Packet::to(ip("198.51.100.100"), 80, Proto::Tcp),
        &WalkOptions::default(),
    )
    .expect("walks");
    let missing = t.missing_chains();
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].0, "KUBE-SEP-SQPICSLDUGSKV7QU");
    assert!(close(missing[0].1, 1.0 / 3.0));
    assert!(t.outcomes.iter().any(|o| matches!(&o.fate,
        Fate::MissingChain { hint: Some(h), .. } if h == "192.0.2.18:8080")));
    let text = walk::render::text(&t);
    assert!(
        text.contains("KUBE-SEP-SQPICSLDUGSKV7QU, which is not in the input"),
        "{text}"
    );
    assert!(text.contains("33.3%"), "{text}");
}

#[test]
fn excerpt_of_one_service_chain_starts_there() {
    let text = fixture("iptables-save-node-1.txt");
    let excerpt: String = text
        .lines()
        .filter(|l| l.starts_with("-A KUBE-SVC-CDGGSHYLG3RE2FKL"))
        .collect::<Vec<_>>()
        .join("\n");
    let rs = rules::parse(&excerpt).expect("parses");
    let t = walk::walk(
        &rs,
        &Packet::to(ip("198.51.100.100"), 80, Proto::Tcp),
        &WalkOptions::default(),
    )
    .expect("walks");
    assert_eq!(t.tree[0].chain, "KUBE-SVC-CDGGSHYLG3RE2FKL");
    let missing = t.missing_chains();
    assert_eq!(missing.len(), 3, "{missing:?}");
    assert!(missing.iter().all(|(_, s)| close(*s, 1.0 / 3.0)));
}

#[test]
fn cross_check_against_the_lab_endpoint_slices() {
    let t = trace("iptables-save-node-1.txt", "198.51.100.100", 80, None);
    let ep = |a: &str, node: &str| SliceEndpoint {
        ip: ip(a),
        port: 8080,
        ready: true,
        serving: true,
        terminating: false,
        node: Some(node.into()),
    };
    let ok = cross_check(
        &t,
        &[
            ep("192.0.2.2", "node-1"),
            ep("192.0.2.3", "node-1"),
            ep("192.0.2.18", "node-2"),
        ],
    );
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert_eq!(ok[0].check, "rules-match-endpoints");
    // A fourth, newer endpoint the dump does not know; 192.0.2.3 went away.
    let stale = cross_check(
        &t,
        &[
            ep("192.0.2.2", "node-1"),
            ep("192.0.2.18", "node-2"),
            ep("192.0.2.10", "node-1"),
        ],
    );
    let checks: Vec<&str> = stale.iter().map(|f| f.check.as_str()).collect();
    assert_eq!(
        checks,
        ["endpoint-not-programmed", "dnat-to-non-endpoint"],
        "{stale:?}"
    );
}

#[test]
fn json_output_carries_the_tree_and_shares() {
    let t = trace("nft-ruleset-node-2.json", "198.51.100.100", 80, None);
    let v = serde_json::to_value(&t).expect("serializes");
    assert_eq!(v["outcomes"].as_array().map(Vec::len), Some(3));
    assert_eq!(v["outcomes"][0]["fate"]["fate"], "delivered");
    assert_eq!(v["tree"][0]["chain"], "nat-prerouting");
}

#[test]
fn nothing_to_walk_is_an_error_in_words() {
    let rs = rules::parse("hello\nworld\n").expect("parses");
    assert_eq!(rs.issues.len(), 2);
    let e = walk::walk(
        &rs,
        &Packet::to(ip("198.51.100.100"), 80, Proto::Tcp),
        &WalkOptions::default(),
    );
    assert_eq!(e.err(), Some(WalkError::NoRules));
}

#[test]
fn cluster_ip_without_endpoints_is_rejected_on_every_path() {
    // From a pod (FORWARD) and from the node itself (OUTPUT), iptables and nftables.
    for file in ["iptables-save-node-1.txt", "nft-ruleset-node-2.json"] {
        for origin in [Origin::Outside, Origin::Node] {
            let mut p = Packet::to(ip("203.0.113.105"), 80, Proto::Tcp);
            p.src = Some(ip("192.0.2.3"));
            p.origin = origin;
            let t = trace_with(file, p);
            assert!(
                matches!(t.outcomes.as_slice(), [o] if matches!(&o.fate,
                    Fate::Rejected { reason: Some(r), .. } if r == "default/empty:http has no endpoints")),
                "{file} {origin:?}: {:#?}",
                t.outcomes
            );
        }
    }
}

#[test]
fn nft_rejects_unknown_ports_of_cluster_ips() {
    let mut p = Packet::to(ip("203.0.113.232"), 81, Proto::Tcp);
    p.src = Some(ip("192.0.2.3"));
    let t = trace_with("nft-ruleset-node-2.json", p.clone());
    assert!(
        matches!(t.outcomes.as_slice(), [o] if matches!(&o.fate, Fate::Rejected { chain, .. } if chain == "cluster-ips-check")),
        "{:#?}",
        t.outcomes
    );
    // iptables mode has no such rule: the packet is not translated.
    let t = trace_with("iptables-save-node-1.txt", p);
    assert!(
        matches!(t.outcomes.as_slice(), [o] if o.fate == Fate::NotTranslated),
        "{:#?}",
        t.outcomes
    );
}

#[test]
fn ipvs_mode_rules_are_named() {
    let rs = rules::parse(
        "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j KUBE-SERVICES\n-A KUBE-SERVICES -m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER\n-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ\nCOMMIT\n",
    )
    .expect("parses");
    let t = walk::walk(
        &rs,
        &Packet::to(ip("198.51.100.100"), 80, Proto::Tcp),
        &WalkOptions::default(),
    )
    .expect("walks");
    assert!(t.notes.iter().any(|n| n.contains("IPVS")), "{:?}", t.notes);
    // The ipset match is not understood: both ways are followed and said so.
    assert!(
        t.outcomes
            .iter()
            .any(|o| o.assuming.iter().any(|a| a.contains("--match-set"))),
        "{:#?}",
        t.outcomes
    );
}

#[test]
fn iptables_and_ip6tables_save_concatenated() {
    let both = format!(
        "{}{}",
        fixture("iptables-save-node-1.txt"),
        fixture("ip6tables-save-node-1.txt")
    );
    let rs = rules::parse(&both).expect("parses");
    assert!(rs.issues.is_empty(), "{:?}", rs.issues);
    for (dst, want) in [
        ("198.51.100.100", WEB.to_vec()),
        (
            "2001:db8::100",
            vec![
                "[2001:db8:1:1::2]:8080",
                "[2001:db8:1:1::3]:8080",
                "[2001:db8:1:2::18]:8080",
            ],
        ),
    ] {
        let t = walk::walk(
            &rs,
            &Packet::to(ip(dst), 80, Proto::Tcp),
            &WalkOptions::default(),
        )
        .expect("walks");
        assert_split(&t, &want, Snat::Yes);
    }
}

#[test]
fn a_family_the_input_lacks_is_named() {
    let rs = rules::parse(&fixture("iptables-save-node-1.txt")).expect("parses");
    let e = walk::walk(
        &rs,
        &Packet::to(ip("2001:db8::100"), 80, Proto::Tcp),
        &WalkOptions::default(),
    );
    match e {
        Err(WalkError::NoStart(m)) => assert!(
            m.contains("no IPv6 rules") && m.contains("ip6tables-save"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
}
