//! Property tests: the rule parsers and the walker never panic, whatever the text, and the
//! shares of a walk's outcomes that assume nothing never add up to more than the whole.

use ferrolb_cli::rules::{self, Proto};
use ferrolb_cli::walk::{self, Packet, WalkOptions};
use proptest::prelude::*;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn walk_all(text: &str) {
    let Ok(rs) = rules::parse(text) else { return };
    for (dst, port, proto) in [
        ("198.51.100.100", 80, Proto::Tcp),
        ("2001:db8::100", 80, Proto::Tcp),
        ("203.0.113.43", 53, Proto::Udp),
        ("198.51.100.11", 30080, Proto::Tcp),
    ] {
        let p = Packet::to(dst.parse().expect("ip"), port, proto);
        if let Ok(t) = walk::walk(&rs, &p, &WalkOptions::default()) {
            let certain: f64 = t
                .outcomes
                .iter()
                .filter(|o| o.assuming.is_empty())
                .map(|o| o.share)
                .sum();
            assert!(certain <= 1.0 + 1e-9, "{certain}");
            for o in &t.outcomes {
                assert!(o.share >= 0.0 && o.share <= 1.0 + 1e-9, "{}", o.share);
            }
            let _ = walk::render::text(&t);
            let _ = serde_json::to_string(&t).expect("serializes");
        }
    }
}

/// Words that make up rules, so random text reaches the deeper parser paths.
fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("-A".to_string()),
        Just("-j".to_string()),
        Just("-m".to_string()),
        Just("!".to_string()),
        Just("--comment".to_string()),
        Just("\"a b\"".to_string()),
        Just("KUBE-SERVICES".to_string()),
        Just("KUBE-SVC-X".to_string()),
        Just("KUBE-SEP-X".to_string()),
        Just("KUBE-MARK-MASQ".to_string()),
        Just("PREROUTING".to_string()),
        Just("DNAT".to_string()),
        Just("--to-destination".to_string()),
        Just("192.0.2.2:8080".to_string()),
        Just("[2001:db8::5]:80".to_string()),
        Just("-d".to_string()),
        Just("198.51.100.100/32".to_string()),
        Just("-s".to_string()),
        Just("statistic".to_string()),
        Just("--mode".to_string()),
        Just("random".to_string()),
        Just("--probability".to_string()),
        Just("0.5".to_string()),
        Just("NaN".to_string()),
        Just("-p".to_string()),
        Just("tcp".to_string()),
        Just("--dport".to_string()),
        Just("80".to_string()),
        Just("*nat".to_string()),
        Just("COMMIT".to_string()),
        Just(":KUBE-SERVICES - [0:0]".to_string()),
        Just("Chain KUBE-SVC-X (1 references)".to_string()),
        Just("target prot opt source destination".to_string()),
        Just("0.0.0.0/0".to_string()),
        Just("/*".to_string()),
        Just("*/".to_string()),
        Just("-g".to_string()),
        Just("\n".to_string()),
        "[ -~]{0,12}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,400}") {
        walk_all(&s);
    }

    #[test]
    fn rule_like_text_never_panics(words in prop::collection::vec(word(), 0..80)) {
        walk_all(&words.join(" "));
    }

    #[test]
    fn arbitrary_json_never_panics(v in arbitrary_json()) {
        walk_all(&serde_json::json!({"nftables": v}).to_string());
    }
}

proptest! {
    // Each case walks three whole dumps twice: fewer cases keep the suite quick.
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn cut_and_shuffled_real_dumps_never_panic(
        cut in 0usize..20_000,
        len in 0usize..20_000,
        skip in prop::collection::vec(0usize..200, 0..20),
    ) {
        for name in ["iptables-save-node-1.txt", "iptables-nvL-nat-node-1.txt", "nft-ruleset-node-2.json"] {
            let text = fixture(name);
            let chars: Vec<char> = text.chars().collect();
            let start = cut.min(chars.len());
            let end = (start + len).min(chars.len());
            let piece: String = chars[start..end].iter().collect();
            walk_all(&piece);
            let lines: Vec<&str> = text.lines().enumerate().filter(|(i, _)| !skip.contains(i)).map(|(_, l)| l).collect();
            walk_all(&lines.join("\n"));
        }
    }

}

fn arbitrary_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        prop_oneof![
            Just("ip"),
            Just("kube-proxy"),
            Just("services"),
            Just("nat-prerouting"),
            Just("prerouting"),
            Just("nat"),
            Just("@service-ips"),
            Just("198.51.100.100"),
            Just("tcp"),
            Just("daddr"),
            Just("payload"),
            Just("goto"),
            Just("target"),
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("table".to_string()),
                    Just("chain".to_string()),
                    Just("rule".to_string()),
                    Just("map".to_string()),
                    Just("expr".to_string()),
                    Just("family".to_string()),
                    Just("name".to_string()),
                    Just("hook".to_string()),
                    Just("type".to_string()),
                    Just("elem".to_string()),
                    Just("match".to_string()),
                    Just("vmap".to_string()),
                    Just("dnat".to_string()),
                    Just("numgen".to_string()),
                    Just("mod".to_string()),
                    Just("left".to_string()),
                    Just("right".to_string()),
                    Just("key".to_string()),
                    Just("data".to_string()),
                    Just("set".to_string()),
                    Just("concat".to_string()),
                ],
                inner,
                0..5,
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
