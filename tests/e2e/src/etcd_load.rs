//! Copies of real objects written straight into a lab's etcd, for benchmarks that need more
//! objects than the lab's API server can create in the time they have.
//!
//! kube-apiserver reads what etcd holds: an object stored as JSON (with `apiVersion` and `kind`)
//! decodes as well as one it stored as protobuf itself, and its watch on etcd delivers every new
//! key to the watchers as an `ADDED` event. So a benchmark can create one object through the API,
//! let the controllers finish with it, read it back, and write copies of it with only names,
//! UIDs, IPs and creation times changed ([`substitute`]): the copies are what the API server and
//! the controllers would have made, but for their storage encoding (JSON, not protobuf) and
//! their made-up UIDs, at the speed etcd takes puts. A put never replaces a key that exists
//! ([`put_each`] fails instead), so a copy cannot silently take another object's place.
//!
//! Writes go through etcd's JSON gateway with `curl` inside the control-plane namespace, where
//! etcd listens on loopback only: one put per object, so every object gets its own revision as
//! it would from the API server, many puts per `curl` over one connection. (Several objects in
//! one transaction share a revision, and a client whose watch is cut in the middle of them
//! resumes after that revision and never sees the rest: in a trial loading 1,000 Services 42 to
//! a transaction, the controller's watch missed 124 of them.)

use std::fmt::Write as _;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ferrolb_lab::Lab;

/// Puts per `curl` process.
pub const PUTS_PER_CURL: usize = 600;

/// Where etcd listens, inside the lab's control-plane namespace.
const ETCD: &str = "http://127.0.0.1:2379";

/// kube-apiserver's key for an object (its default `--etcd-prefix` is `/registry`): namespaced
/// objects under `/registry/<resource>/<namespace>/<name>`, Services under `services/specs`.
pub fn key(resource: &str, namespace: Option<&str>, name: &str) -> String {
    let resource = match resource {
        "services" => "services/specs",
        r => r,
    };
    match namespace {
        Some(ns) => format!("/registry/{resource}/{ns}/{name}"),
        None => format!("/registry/{resource}/{name}"),
    }
}

fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

/// `text` with every whole occurrence of each `from` replaced by its `to`, in one pass. An
/// occurrence is whole where the characters on both sides cannot continue it (letters, digits and
/// `:`): `s000001-x7k2p` (a generated name) and "got 2001:db8::1 from" hold whole ones. Earlier
/// pairs win where two would match at one place. Fails if `text` also holds a `from` that is not
/// whole (`s0000012`, `2001:db8::10`): a copy must not keep anything of the original's identity,
/// and such a text needs other tokens.
pub fn substitute(text: &str, pairs: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len() + 64);
    let mut replaced = vec![0usize; pairs.len()];
    let mut rest = text;
    let mut prev: Option<char> = None;
    'scan: while let Some(c) = rest.chars().next() {
        if !prev.is_some_and(token_char) {
            for (n, (from, to)) in pairs.iter().enumerate() {
                if let Some(after) = rest.strip_prefix(from)
                    && !after.chars().next().is_some_and(token_char)
                {
                    out.push_str(to);
                    replaced[n] += 1;
                    prev = from.chars().last();
                    rest = after;
                    continue 'scan;
                }
            }
        }
        out.push(c);
        prev = Some(c);
        rest = &rest[c.len_utf8()..];
    }
    for ((from, _), n) in pairs.iter().zip(replaced) {
        if text.matches(from).count() > n {
            anyhow::bail!(
                "{from:?} is in {text} where it is not a whole token: a copy would keep it"
            );
        }
    }
    Ok(out)
}

/// A UUID for copy `i` of object kind `kind` (any number below 4096), unique per pair.
pub fn uid(kind: u16, i: usize) -> String {
    format!("00000000-0000-4000-8{:03x}-{i:012x}", kind & 0xfff)
}

/// A `curl` config that puts each `(key, value)` in turn through etcd's gateway, over one
/// connection: each a transaction of its own (one revision) that writes only if the key does not
/// exist yet (its create revision is 0).
pub fn curl_config(puts: &[(String, String)]) -> String {
    let mut config = String::from("silent\nshow-error\n");
    for (i, (k, v)) in puts.iter().enumerate() {
        if i > 0 {
            config.push_str("next\n");
        }
        let (k, v) = (B64.encode(k), B64.encode(v));
        // `next` resets per-request options, so each request has its own time limit.
        let _ = writeln!(config, r#"url = "{ETCD}/v3/kv/txn""#);
        config.push_str("max-time = 60\n");
        let body = format!(
            r#"{{"compare":[{{"key":"{k}","target":"CREATE","result":"EQUAL","create_revision":"0"}}],"success":[{{"request_put":{{"key":"{k}","value":"{v}"}}}}]}}"#
        );
        // Base64 needs no escaping; the body's quotes do, inside the config's string.
        let _ = writeln!(config, r#"data-binary = "{}""#, body.replace('"', "\\\""));
    }
    config
}

/// Puts every `(key, value)`, in order, each in its own revision; fails with etcd's answer if any
/// put was refused or its key existed already (the keys before it are written then).
pub fn put_each(lab: &Lab, puts: &[(String, String)]) -> anyhow::Result<()> {
    for chunk in puts.chunks(PUTS_PER_CURL) {
        let file = lab.run_dir().join("etcd-load.curl");
        std::fs::write(&file, curl_config(chunk))
            .with_context(|| format!("writing {}", file.display()))?;
        let config = file.display().to_string();
        let out = crate::exec_ok(lab, "cp", &["curl", "-K", &config])?;
        check_answers(&out, chunk)?;
    }
    Ok(())
}

/// Checks `curl`'s output for the puts of `chunk`: one answer each, every transaction applied.
/// A transaction whose comparison failed (the key existed) leaves `succeeded` out.
pub fn check_answers(out: &str, chunk: &[(String, String)]) -> anyhow::Result<()> {
    let mut answers = 0;
    for answer in serde_json::Deserializer::from_str(out).into_iter::<serde_json::Value>() {
        let answer = answer.with_context(|| format!("etcd answered what is not JSON: {out}"))?;
        if answer.get("error").is_some() || answer.get("header").is_none() {
            anyhow::bail!("etcd refused a put: {answer}");
        }
        if answer.get("succeeded") != Some(&serde_json::Value::Bool(true)) {
            let key = chunk.get(answers).map_or("?", |(k, _)| k.as_str());
            anyhow::bail!("etcd already holds {key}: a copy would replace it");
        }
        answers += 1;
    }
    anyhow::ensure!(
        answers == chunk.len(),
        "etcd answered {answers} of {} puts",
        chunk.len()
    );
    Ok(())
}

/// POSTs `body` to the gateway's `path` from inside the control-plane namespace; the answer.
fn gateway(lab: &Lab, path: &str, body: &str) -> anyhow::Result<serde_json::Value> {
    let file = lab.run_dir().join("etcd-load-body.json");
    std::fs::write(&file, body).with_context(|| format!("writing {}", file.display()))?;
    let data = format!("@{}", file.display());
    let url = format!("{ETCD}{path}");
    let out = crate::exec_ok(
        lab,
        "cp",
        &[
            "curl",
            "-sS",
            "-m",
            "60",
            "-X",
            "POST",
            "--data-binary",
            &data,
            &url,
        ],
    )?;
    let answer: serde_json::Value = serde_json::from_str(&out)
        .with_context(|| format!("etcd {path} answered what is not JSON: {out}"))?;
    if answer.get("error").is_some() || answer.get("code").is_some() {
        anyhow::bail!("etcd {path} refused: {out}");
    }
    Ok(answer)
}

/// How many keys etcd holds at exactly `key` (0 or 1).
pub fn count(lab: &Lab, key: &str) -> anyhow::Result<u64> {
    let body = format!(r#"{{"key":"{}","count_only":true}}"#, B64.encode(key));
    let answer = gateway(lab, "/v3/kv/range", &body)?;
    // int64 fields come as strings and are left out when zero.
    Ok(match answer.get("count") {
        None => 0,
        Some(serde_json::Value::String(s)) => s.parse()?,
        Some(v) => v.as_u64().context("count is not a number")?,
    })
}

/// `object` (as the API server returned it) as etcd should hold it: without `resourceVersion`,
/// which the API server takes from etcd's revision instead.
pub fn stored(mut object: serde_json::Value) -> anyhow::Result<String> {
    let meta = object
        .get_mut("metadata")
        .and_then(|m| m.as_object_mut())
        .context("an object without metadata")?;
    meta.remove("resourceVersion");
    anyhow::ensure!(
        object.get("apiVersion").is_some() && object.get("kind").is_some(),
        "the API server cannot decode an object without apiVersion and kind: {object}"
    );
    Ok(serde_json::to_string(&object)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitute_replaces_whole_tokens_only() {
        let text = r#"{"name":"s000001","slice":"s000001-x7k2p","ip":"2001:db8::1","ips":["2001:db8::1"],"msg":"got 2001:db8::1 from bench"}"#;
        let copy = substitute(
            text,
            &[("s000001", "s000042"), ("2001:db8::1", "2001:db8::2a")],
        )
        .expect("every occurrence replaced");
        assert_eq!(
            copy,
            r#"{"name":"s000042","slice":"s000042-x7k2p","ip":"2001:db8::2a","ips":["2001:db8::2a"],"msg":"got 2001:db8::2a from bench"}"#
        );
    }

    #[test]
    fn substitute_fails_when_a_token_would_survive() {
        // Glued to a longer token, "s000001" and "2001:db8::1" would stay in the copy.
        for text in [
            r#"{"a":"s000001","b":"s0000012"}"#,
            "2001:db8::1 2001:db8::10",
        ] {
            let err = substitute(
                text,
                &[("s000001", "s000042"), ("2001:db8::1", "2001:db8::2a")],
            )
            .expect_err("a glued token must fail");
            assert!(err.to_string().contains("not a whole token"), "{err}");
        }
    }

    #[test]
    fn substitute_allows_a_replacement_containing_the_original() {
        let copy = substitute("bulk-0 bulk-0", &[("bulk-0", "bulk-00")]).expect("fine");
        assert_eq!(copy, "bulk-00 bulk-00");
    }

    #[test]
    fn keys_follow_the_api_servers_layout() {
        assert_eq!(
            key("services", Some("ns"), "web"),
            "/registry/services/specs/ns/web"
        );
        assert_eq!(
            key("endpointslices", Some("ns"), "web-x"),
            "/registry/endpointslices/ns/web-x"
        );
        assert_eq!(
            key("ipaddresses", None, "2001:db8::1"),
            "/registry/ipaddresses/2001:db8::1"
        );
    }

    #[test]
    fn uids_are_distinct_per_kind_and_index() {
        assert_ne!(uid(1, 7), uid(2, 7));
        assert_ne!(uid(1, 7), uid(1, 8));
        assert_eq!(uid(1, 7).len(), 36);
    }

    #[test]
    fn curl_config_puts_each_pair_in_turn() {
        let config = curl_config(&[("k".into(), "v".into()), ("a".into(), "b".into())]);
        let requests: Vec<&str> = config.split("next\n").collect();
        assert_eq!(requests.len(), 2);
        for (request, (k, v)) in requests.iter().zip([("aw==", "dg=="), ("YQ==", "Yg==")]) {
            assert!(request.contains("url = \"http://127.0.0.1:2379/v3/kv/txn\"\n"));
            assert!(
                request.contains("max-time = 60\n"),
                "every request has a limit"
            );
            // The body, as curl reads it from the config's quoted string.
            let quoted = request
                .lines()
                .find_map(|l| l.strip_prefix("data-binary = \""))
                .and_then(|l| l.strip_suffix('"'))
                .expect("a body");
            let body: serde_json::Value =
                serde_json::from_str(&quoted.replace("\\\"", "\"")).expect("JSON");
            assert_eq!(body["compare"][0]["key"], k);
            assert_eq!(body["compare"][0]["target"], "CREATE");
            assert_eq!(body["compare"][0]["create_revision"], "0");
            assert_eq!(body["success"][0]["request_put"]["key"], k);
            assert_eq!(body["success"][0]["request_put"]["value"], v);
        }
    }

    #[test]
    fn answers_say_which_put_was_not_applied() {
        let chunk: Vec<(String, String)> = ["a", "b"]
            .iter()
            .map(|k| (k.to_string(), String::new()))
            .collect();
        let ok = r#"{"header":{"revision":"5"},"succeeded":true}"#;
        let existed = r#"{"header":{"revision":"5"}}"#;
        check_answers(&format!("{ok}{ok}"), &chunk).expect("both applied");
        let err = check_answers(&format!("{ok}{existed}"), &chunk).expect_err("b existed");
        assert!(err.to_string().contains("already holds b"), "{err}");
        let err = check_answers(ok, &chunk).expect_err("one answer missing");
        assert!(err.to_string().contains("1 of 2"), "{err}");
        let refused = r#"{"error":"etcdserver: too many operations","code":3}"#;
        let err = check_answers(refused, &chunk).expect_err("refused");
        assert!(err.to_string().contains("refused"), "{err}");
    }

    #[test]
    fn stored_drops_the_resource_version_and_needs_a_kind() {
        let obj = serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "a", "resourceVersion": "12"}});
        let text = stored(obj).expect("stored");
        assert!(!text.contains("resourceVersion"));
        assert!(stored(serde_json::json!({"metadata": {}})).is_err());
    }
}
