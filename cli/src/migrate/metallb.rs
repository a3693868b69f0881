//! `migrate metallb`: MetalLB's objects to ferrolb's. Pure: objects in, objects and notes out.
//!
//! Reads MetalLB's CRs (`metallb.io/v1beta1` IPAddressPool, L2Advertisement, BGPAdvertisement,
//! Community, BFDProfile, BGPPeer; `metallb.io/v1beta2` BGPPeer), namespaced in MetalLB's
//! namespace, and the legacy ConfigMap format (a `config` key holding `address-pools`, `peers`,
//! `bgp-communities`, `bfd-profiles`). Writes ferrolb's cluster-scoped `ferrolb.io/v1beta1`
//! objects with the same field names, without a namespace. Every kind goes through ferrolb's
//! CRD type (`ferrolb_crds` and `ferrolb_crds::bgp`), so a field ferrolb does not have is
//! caught and reported, and one it accepts without implementing (`localASN`, `interface`,
//! `vrf`, BFD echo mode) is named. A `passwordSecret` loses its namespace: ferrolb's speakers
//! read Secrets in ferrolb's namespace only, and the notes say how to copy it there.
//! Everything not carried over is listed with why.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::findings::{Finding, Severity};

/// ferrolb's API version.
pub const API_VERSION: &str = "ferrolb.io/v1beta1";

/// Kinds converted one to one (same kind name in ferrolb).
const KINDS: [&str; 6] = [
    "IPAddressPool",
    "L2Advertisement",
    "BGPPeer",
    "BGPAdvertisement",
    "Community",
    "BFDProfile",
];

/// MetalLB kinds that hold status only: ferrolb writes its own.
const STATUS_KINDS: [&str; 2] = ["ServiceL2Status", "ServiceBGPStatus"];

/// The result of a conversion.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Converted {
    /// ferrolb objects, in apply order (pools first).
    pub objects: Vec<Value>,
    /// What was not carried over, or carried with a caveat.
    pub notes: Vec<Finding>,
}

/// Flattens `List` objects (`kubectl get -o yaml` output) into their items.
pub fn flatten(objs: Vec<Value>) -> Vec<Value> {
    let mut out = Vec::new();
    for o in objs {
        let kind = o.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind == "List" || kind.ends_with("List") {
            if let Some(items) = o.get("items").and_then(Value::as_array) {
                out.extend(flatten(items.clone()));
            }
        } else if !o.is_null() {
            out.push(o);
        }
    }
    out
}

fn meta_name(o: &Value) -> String {
    o.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn meta_ns(o: &Value) -> Option<String> {
    o.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Labels and annotations carried over: the user's, not the ones tools wrote.
fn carried_metadata(o: &Value, name: &str) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(name));
    if let Some(l) = o.pointer("/metadata/labels").and_then(Value::as_object) {
        let l: Map<String, Value> = l
            .iter()
            .filter(|(k, _)| {
                !k.starts_with("app.kubernetes.io/managed-by") && !k.starts_with("helm.sh/")
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !l.is_empty() {
            m.insert("labels".into(), Value::Object(l));
        }
    }
    Value::Object(m)
}

fn object(kind: &str, name: &str, src: &Value, spec: Value) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": carried_metadata(src, name),
        "spec": spec,
    })
}

/// Converts MetalLB objects (CRs and legacy ConfigMaps; other objects are listed as skipped).
/// `metallb_ns` is MetalLB's namespace, for `passwordSecret`s that name none.
pub fn convert(objs: &[Value], metallb_ns: &str) -> Converted {
    let mut out = Converted::default();
    let mut names: BTreeMap<(String, String), String> = BTreeMap::new();
    for o in objs {
        let api = o.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = o.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = meta_name(o);
        let what = format!(
            "{kind} {}{name}",
            meta_ns(o).map(|n| format!("{n}/")).unwrap_or_default()
        );
        if kind == "ConfigMap" {
            match o.pointer("/data/config").and_then(Value::as_str) {
                Some(cfg) => legacy(
                    cfg,
                    &what,
                    meta_ns(o).as_deref().unwrap_or(metallb_ns),
                    &mut out,
                ),
                None => out.notes.push(Finding::new(
                    Severity::Info,
                    "not-metallb",
                    format!("{what}: no `config` key, not MetalLB's legacy configuration; skipped"),
                )),
            }
            continue;
        }
        if !api.starts_with("metallb.io/") {
            out.notes.push(Finding::new(
                Severity::Info,
                "not-metallb",
                format!("{what} ({api}) is not a MetalLB object; skipped"),
            ));
            continue;
        }
        if STATUS_KINDS.contains(&kind) {
            out.notes.push(
                Finding::new(Severity::Info, "status-only", format!("{what} holds MetalLB's status; not carried over"))
                    .because("ferrolb reports on Services with its own conditions (ferrolb.io/IPAllocated, ferrolb.io/Announced)"),
            );
            continue;
        }
        if !KINDS.contains(&kind) {
            out.notes.push(
                Finding::new(
                    Severity::Warning,
                    "unknown-kind",
                    format!(
                        "{what}: MetalLB kind {kind} has no ferrolb counterpart; not carried over"
                    ),
                )
                .fix("configure the equivalent by hand, if ferrolb has one"),
            );
            continue;
        }
        // Cluster-scoped now: objects of one kind from several namespaces could collide.
        let key = (kind.to_string(), name.clone());
        if let Some(prev) = names.get(&key) {
            out.notes.push(
                Finding::new(
                    Severity::Error,
                    "name-collision",
                    format!(
                        "{what}: a {kind} named {name} was already converted (from {prev}); skipped"
                    ),
                )
                .because("ferrolb's objects are cluster-scoped, MetalLB's namespaced")
                .fix("rename one of them and convert again"),
            );
            continue;
        }
        names.insert(key, meta_ns(o).unwrap_or_default());
        let mut spec = o.get("spec").cloned().unwrap_or_else(|| json!({}));
        if kind == "BGPPeer" {
            bgp_peer_spec(
                &mut spec,
                meta_ns(o).as_deref().unwrap_or(metallb_ns),
                &what,
                &mut out,
            );
            if api == "metallb.io/v1beta1" {
                out.notes.push(Finding::new(
                    Severity::Info,
                    "bgppeer-v1beta1",
                    format!("{what}: metallb.io/v1beta1 BGPPeer read with the same field names as v1beta2"),
                ));
            }
        }
        let Some(spec) = typed_spec(kind, spec, &what, &mut out) else {
            continue;
        };
        out.objects.push(object(kind, &name, o, spec));
    }
    if out.objects.iter().any(|o| {
        matches!(
            o.get("kind").and_then(Value::as_str),
            Some("BGPPeer" | "BGPAdvertisement")
        )
    }) {
        out.notes.push(
            Finding::new(Severity::Info, "bgp-mode", "BGP objects were converted: they take effect once ferrolb runs in BGP mode")
                .because("the chart installs BGP mode's watches and RBAC only with bgp.enabled=true")
                .fix("helm upgrade ferrolb charts/ferrolb -n ferrolb-system --reuse-values --set bgp.enabled=true"),
        );
    }
    order(&mut out.objects);
    out
}

/// The spec read through ferrolb's CRD type of `kind` and written back, so a field ferrolb
/// does not have is reported and dropped, and what ferrolb accepts but does not implement is
/// said. `None` (with a note) when it does not read as that kind at all.
fn typed_spec(kind: &str, spec: Value, what: &str, out: &mut Converted) -> Option<Value> {
    use ferrolb_crds::bgp::{BFDProfileSpec, BGPAdvertisementSpec, BGPPeerSpec, CommunitySpec};
    fn through<T: serde::de::DeserializeOwned + serde::Serialize>(
        spec: &Value,
        what: &str,
        kind: &str,
        out: &mut Converted,
    ) -> Option<(T, Value)> {
        match serde_json::from_value::<T>(spec.clone()) {
            Ok(typed) => {
                report_dropped(spec, &typed, what, out);
                let v = serde_json::to_value(&typed).ok()?;
                Some((typed, v))
            }
            Err(e) => {
                out.notes.push(
                    Finding::new(
                        Severity::Error,
                        "invalid",
                        format!("{what}: spec does not read as a ferrolb {kind} ({e}); skipped"),
                    )
                    .fix("fix the object and convert again"),
                );
                None
            }
        }
    }
    let unsupported = |fields: Vec<ferrolb_crds::bgp::Unsupported>, out: &mut Converted| {
        for u in fields {
            out.notes.push(
                Finding::new(
                    Severity::Warning,
                    "not-implemented",
                    format!("{what}: {}", u.describe()),
                )
                .because(format!(
                    "ferrolb accepts {} so MetalLB manifests apply, but does not implement it",
                    u.as_str()
                )),
            );
        }
    };
    match kind {
        "IPAddressPool" => {
            through::<ferrolb_crds::IPAddressPoolSpec>(&spec, what, kind, out).map(|(_, v)| v)
        }
        "L2Advertisement" => {
            through::<ferrolb_crds::L2AdvertisementSpec>(&spec, what, kind, out).map(|(_, v)| v)
        }
        "BGPPeer" => through::<BGPPeerSpec>(&spec, what, kind, out).map(|(t, v)| {
            unsupported(t.unsupported(), out);
            v
        }),
        "BGPAdvertisement" => {
            through::<BGPAdvertisementSpec>(&spec, what, kind, out).map(|(_, v)| v)
        }
        "Community" => through::<CommunitySpec>(&spec, what, kind, out).map(|(_, v)| v),
        "BFDProfile" => through::<BFDProfileSpec>(&spec, what, kind, out).map(|(t, v)| {
            unsupported(t.unsupported(), out);
            v
        }),
        _ => Some(spec),
    }
}

/// Names fields of `raw` that the typed spec dropped.
fn report_dropped<T: serde::Serialize>(raw: &Value, typed: &T, what: &str, out: &mut Converted) {
    let back = serde_json::to_value(typed).unwrap_or(Value::Null);
    if let (Some(r), Some(b)) = (raw.as_object(), back.as_object()) {
        for k in r.keys() {
            if !b.contains_key(k) && !r[k].is_null() && !is_empty_default(&r[k]) {
                out.notes.push(
                    Finding::new(
                        Severity::Warning,
                        "field-dropped",
                        format!("{what}: field {k} has no ferrolb counterpart; dropped"),
                    )
                    .because("ferrolb's CRD does not have it"),
                );
            }
        }
    }
}

fn is_empty_default(v: &Value) -> bool {
    matches!(v, Value::Array(a) if a.is_empty()) || matches!(v, Value::Object(o) if o.is_empty())
}

/// BGPPeer caveats: the secret's namespace, plain passwords.
///
/// MetalLB read `passwordSecret` in its own namespace; ferrolb's speakers may read Secrets in
/// ferrolb's namespace only, which is the default when the reference names none. So the
/// namespace is dropped and the user is told to copy the Secret there.
fn bgp_peer_spec(spec: &mut Value, ns: &str, what: &str, out: &mut Converted) {
    if let Some(ps) = spec
        .get_mut("passwordSecret")
        .and_then(Value::as_object_mut)
    {
        let from = ps
            .remove("namespace")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| ns.to_string());
        let name = ps
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        out.notes.push(
            Finding::new(
                Severity::Warning,
                "password-secret",
                format!("{what}: passwordSecret {name} must be in ferrolb's namespace; MetalLB read it in {from}"),
            )
            .because("ferrolb's speakers may read Secrets in their own namespace only, the default when passwordSecret names none")
            .fix(format!("copy it: kubectl -n ferrolb-system create secret generic {name} --type=kubernetes.io/basic-auth --from-literal=password=\"$(kubectl -n {from} get secret {name} -o jsonpath='{{.data.password}}' | base64 -d)\"")),
        );
    }
    if spec
        .get("password")
        .and_then(Value::as_str)
        .is_some_and(|p| !p.is_empty())
    {
        out.notes.push(
            Finding::new(
                Severity::Warning,
                "plain-password",
                format!("{what}: the BGP password is written in clear text in the output"),
            )
            .fix("move it into a Secret and use passwordSecret"),
        );
    }
}

/// Pools and profiles first, so objects that name them apply after them.
fn order(objs: &mut [Value]) {
    let rank = |o: &Value| match o.get("kind").and_then(Value::as_str) {
        Some("IPAddressPool") => 0,
        Some("BFDProfile") => 1,
        Some("Community") => 2,
        Some("BGPPeer") => 3,
        _ => 4,
    };
    objs.sort_by_key(rank);
}

/// kebab-case legacy keys to the CRDs' camelCase.
fn camel(key: &str) -> String {
    match key {
        "my-asn" => "myASN".into(),
        "peer-asn" => "peerASN".into(),
        "router-id" => "routerID".into(),
        "avoid-buggy-ips" => "avoidBuggyIPs".into(),
        "localpref" => "localPref".into(),
        "ebgp-multihop" => "ebgpMultiHop".into(),
        "aggregation-length-v6" => "aggregationLengthV6".into(),
        other => {
            let mut s = String::new();
            let mut up = false;
            for c in other.chars() {
                if c == '-' {
                    up = true;
                } else if up {
                    s.extend(c.to_uppercase());
                    up = false;
                } else {
                    s.push(c);
                }
            }
            s
        }
    }
}

/// A legacy value with its keys camelCased (recursively).
fn camelize(v: &serde_yaml::Value) -> Value {
    match v {
        serde_yaml::Value::Mapping(m) => {
            let mut o = Map::new();
            for (k, v) in m {
                let k = k.as_str().map_or_else(|| format!("{k:?}"), str::to_string);
                o.insert(camel(&k), camelize(v));
            }
            Value::Object(o)
        }
        serde_yaml::Value::Sequence(s) => Value::Array(s.iter().map(camelize).collect()),
        other => serde_json::to_value(other).unwrap_or(Value::Null),
    }
}

/// The legacy ConfigMap's `config`.
fn legacy(cfg: &str, what: &str, ns: &str, out: &mut Converted) {
    let doc: serde_yaml::Value = match serde_yaml::from_str(cfg) {
        Ok(v) => v,
        Err(e) => {
            out.notes.push(
                Finding::new(
                    Severity::Error,
                    "invalid",
                    format!("{what}: `config` is not YAML ({e})"),
                )
                .fix("fix the ConfigMap and convert again"),
            );
            return;
        }
    };
    let src = json!({});
    for (i, p) in doc
        .get("peers")
        .and_then(|p| p.as_sequence())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let mut spec = camelize(p);
        let name = spec
            .get("peerAddress")
            .and_then(Value::as_str)
            .map(|a| format!("peer-{}", a.replace([':', '.'], "-")))
            .unwrap_or_else(|| format!("peer-{i}"));
        let pwhat = format!("{what} peers[{i}]");
        bgp_peer_spec(&mut spec, ns, &pwhat, out);
        if let Some(spec) = typed_spec("BGPPeer", spec, &pwhat, out) {
            out.objects.push(object("BGPPeer", &name, &src, spec));
            out.notes.push(Finding::new(
                Severity::Info,
                "legacy-peer",
                format!("{pwhat}: written as BGPPeer {name}"),
            ));
        }
    }
    if let Some(comms) = doc.get("bgp-communities").and_then(|c| c.as_mapping()) {
        let entries: Vec<Value> = comms
            .iter()
            .map(|(k, v)| {
                json!({
                    "name": k.as_str().unwrap_or(""),
                    "value": v.as_str().map_or_else(|| serde_json::to_value(v).unwrap_or(Value::Null), |s| json!(s)),
                })
            })
            .collect();
        let cwhat = format!("{what} bgp-communities");
        if let Some(spec) = typed_spec("Community", json!({ "communities": entries }), &cwhat, out)
        {
            out.objects
                .push(object("Community", "bgp-communities", &src, spec));
        }
    }
    for (i, p) in doc
        .get("bfd-profiles")
        .and_then(|p| p.as_sequence())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let mut spec = camelize(p);
        let name = spec
            .get("name")
            .and_then(Value::as_str)
            .map_or_else(|| format!("bfd-{i}"), str::to_string);
        if let Some(o) = spec.as_object_mut() {
            o.remove("name");
        }
        let bwhat = format!("{what} bfd-profiles[{i}]");
        if let Some(spec) = typed_spec("BFDProfile", spec, &bwhat, out) {
            out.objects.push(object("BFDProfile", &name, &src, spec));
        }
    }
    for (i, p) in doc
        .get("address-pools")
        .and_then(|p| p.as_sequence())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let pool = camelize(p);
        let Some(name) = pool.get("name").and_then(Value::as_str).map(str::to_string) else {
            out.notes.push(
                Finding::new(
                    Severity::Error,
                    "invalid",
                    format!("{what}: address-pools[{i}] has no name; skipped"),
                )
                .fix("name it and convert again"),
            );
            continue;
        };
        let pwhat = format!("{what} address-pools[{i}] ({name})");
        let mut spec =
            json!({ "addresses": pool.get("addresses").cloned().unwrap_or_else(|| json!([])) });
        for k in ["autoAssign", "avoidBuggyIPs"] {
            if let Some(v) = pool.get(k) {
                spec[k] = v.clone();
            }
        }
        match serde_json::from_value::<ferrolb_crds::IPAddressPoolSpec>(spec.clone()) {
            Ok(t) => spec = serde_json::to_value(t).unwrap_or(spec),
            Err(e) => {
                out.notes.push(
                    Finding::new(
                        Severity::Error,
                        "invalid",
                        format!("{pwhat}: not a pool ({e}); skipped"),
                    )
                    .fix("fix the pool and convert again"),
                );
                continue;
            }
        }
        out.objects.push(object("IPAddressPool", &name, &src, spec));
        match pool.get("protocol").and_then(Value::as_str) {
            Some("layer2") => out.objects.push(object(
                "L2Advertisement",
                &name,
                &src,
                json!({ "ipAddressPools": [name] }),
            )),
            Some("bgp") => {
                let advs = pool
                    .get("bgpAdvertisements")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let advs = if advs.is_empty() { vec![json!({})] } else { advs };
                for (j, a) in advs.iter().enumerate() {
                    let mut spec = a.clone();
                    spec["ipAddressPools"] = json!([name]);
                    let aname = if j == 0 { name.clone() } else { format!("{name}-{j}") };
                    let awhat = format!("{pwhat} bgp-advertisements[{j}]");
                    if let Some(spec) = typed_spec("BGPAdvertisement", spec, &awhat, out) {
                        out.objects
                            .push(object("BGPAdvertisement", &aname, &src, spec));
                    }
                }
            }
            other => out.notes.push(
                Finding::new(
                    Severity::Warning,
                    "unknown-protocol",
                    format!("{pwhat}: protocol {} is neither layer2 nor bgp; the pool is converted without an advertisement", other.unwrap_or("(none)")),
                )
                .fix("create an L2Advertisement for it"),
            ),
        }
    }
    if let Some(m) = doc.as_mapping() {
        for k in m.keys().filter_map(|k| k.as_str()) {
            if !matches!(
                k,
                "peers" | "bgp-communities" | "bfd-profiles" | "address-pools"
            ) {
                out.notes.push(
                    Finding::new(
                        Severity::Warning,
                        "unknown-key",
                        format!("{what}: key {k} not carried over"),
                    )
                    .because("it is not part of MetalLB's legacy format as ferrolb reads it"),
                );
            }
        }
    }
    order(&mut out.objects);
}

/// The objects as a YAML stream.
pub fn yaml(objs: &[Value]) -> String {
    let mut s = String::new();
    for o in objs {
        s.push_str("---\n");
        s.push_str(&serde_yaml::to_string(o).unwrap_or_default());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(y: &str) -> Vec<Value> {
        flatten(
            serde_yaml::Deserializer::from_str(y)
                .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap_or(Value::Null))
                .collect(),
        )
    }

    /// Objects in the shape of MetalLB's documented L2 and BGP examples (written here from the
    /// documented field lists).
    const CRS: &str = r#"
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: first-pool, namespace: metallb-system, labels: {zone: a}}
spec:
  addresses: [198.51.100.10-198.51.100.20, 2001:db8::10/124]
  avoidBuggyIPs: true
  serviceAllocation:
    priority: 50
    namespaces: [shop]
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: spare, namespace: metallb-system}
spec:
  addresses: [203.0.113.0/28]
  autoAssign: false
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: l2, namespace: metallb-system}
spec:
  ipAddressPools: [first-pool]
  nodeSelectors:
  - matchLabels: {kubernetes.io/hostname: node-1}
  interfaces: [eth0]
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: router, namespace: metallb-system}
spec:
  myASN: 64500
  peerASN: 64501
  peerAddress: 198.51.100.1
  holdTime: 90s
  bfdProfile: fast
  passwordSecret: {name: bgp-auth}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: ads, namespace: metallb-system}
spec:
  ipAddressPools: [spare]
  aggregationLength: 32
  localPref: 100
  communities: [no-advertise]
---
apiVersion: metallb.io/v1beta1
kind: Community
metadata: {name: communities, namespace: metallb-system}
spec:
  communities:
  - name: no-advertise
    value: "65535:65282"
---
apiVersion: metallb.io/v1beta1
kind: BFDProfile
metadata: {name: fast, namespace: metallb-system}
spec:
  receiveInterval: 300
  transmitInterval: 300
  detectMultiplier: 3
---
apiVersion: metallb.io/v1beta1
kind: ServiceL2Status
metadata: {name: l2-abc, namespace: metallb-system}
"#;

    #[test]
    fn crs_convert_to_cluster_scoped_objects_with_the_same_fields() {
        let c = convert(&docs(CRS), "metallb-system");
        let kinds: Vec<&str> = c
            .objects
            .iter()
            .filter_map(|o| o["kind"].as_str())
            .collect();
        assert_eq!(
            kinds,
            [
                "IPAddressPool",
                "IPAddressPool",
                "BFDProfile",
                "Community",
                "BGPPeer",
                "L2Advertisement",
                "BGPAdvertisement"
            ]
        );
        for o in &c.objects {
            assert_eq!(o["apiVersion"], API_VERSION);
            assert!(o.pointer("/metadata/namespace").is_none(), "{o}");
        }
        let pool = &c.objects[0];
        assert_eq!(pool["metadata"]["name"], "first-pool");
        assert_eq!(pool["metadata"]["labels"]["zone"], "a");
        assert_eq!(pool["spec"]["avoidBuggyIPs"], true);
        assert_eq!(pool["spec"]["serviceAllocation"]["priority"], 50);
        assert_eq!(c.objects[1]["spec"]["autoAssign"], false);
        let l2 = &c.objects[5];
        assert_eq!(l2["spec"]["interfaces"][0], "eth0");
        assert_eq!(
            l2["spec"]["nodeSelectors"][0]["matchLabels"]["kubernetes.io/hostname"],
            "node-1"
        );
        let peer = &c.objects[4];
        assert_eq!(peer["spec"]["peerASN"], 64501);
        assert_eq!(peer["spec"]["holdTime"], "90s");
        assert_eq!(peer["spec"]["passwordSecret"]["name"], "bgp-auth");
        assert!(
            peer.pointer("/spec/passwordSecret/namespace").is_none(),
            "ferrolb reads Secrets in its own namespace: {peer}"
        );
        assert_eq!(c.objects[6]["spec"]["localPref"], 100);
        let checks: Vec<&str> = c.notes.iter().map(|n| n.check.as_str()).collect();
        assert!(checks.contains(&"status-only"), "{checks:?}");
        assert!(checks.contains(&"bgp-mode"));
        let secret = c
            .notes
            .iter()
            .find(|n| n.check == "password-secret")
            .expect("a note on the secret");
        assert!(
            secret
                .fix
                .as_deref()
                .is_some_and(|f| f.contains("kubectl -n metallb-system get secret bgp-auth")),
            "{secret:?}"
        );
        assert!(!checks.contains(&"field-dropped"), "{:?}", c.notes);
        // The YAML applies as written: every document parses back.
        let y = yaml(&c.objects);
        assert_eq!(docs(&y).len(), c.objects.len());
    }

    #[test]
    fn unknown_fields_and_collisions_are_reported() {
        let y = r#"
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: p, namespace: a}
spec: {addresses: [198.51.100.0/28], someFutureField: 3}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: p, namespace: b}
spec: {addresses: [198.51.100.16/28]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
"#;
        let c = convert(&docs(y), "metallb-system");
        assert_eq!(c.objects.len(), 1);
        let checks: Vec<&str> = c.notes.iter().map(|n| n.check.as_str()).collect();
        assert_eq!(checks, ["field-dropped", "name-collision", "not-metallb"]);
    }

    #[test]
    fn bgp_fields_ferrolb_does_not_implement_are_named() {
        let y = r#"
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: vrf-peer, namespace: metallb-system}
spec: {myASN: 64500, peerASN: 64501, peerAddress: 198.51.100.1, vrf: red, connectTime: 5s}
---
apiVersion: metallb.io/v1beta1
kind: BFDProfile
metadata: {name: echo, namespace: metallb-system}
spec: {echoMode: true, echoInterval: 50}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: bad, namespace: metallb-system}
spec: {aggregationLength: "wide"}
"#;
        let c = convert(&docs(y), "metallb-system");
        let kinds: Vec<&str> = c
            .objects
            .iter()
            .filter_map(|o| o["kind"].as_str())
            .collect();
        assert_eq!(kinds, ["BFDProfile", "BGPPeer"], "{:?}", c.notes);
        let titles: Vec<&str> = c
            .notes
            .iter()
            .filter(|n| n.check == "not-implemented")
            .map(|n| n.title.as_str())
            .collect();
        assert_eq!(titles.len(), 2, "{titles:?}");
        assert!(titles[0].contains("vrf is not implemented"), "{titles:?}");
        assert!(titles[1].contains("echo mode"), "{titles:?}");
        assert!(
            c.notes
                .iter()
                .any(|n| n.check == "invalid" && n.title.contains("BGPAdvertisement"))
        );
        assert_eq!(c.objects[1]["spec"]["connectTime"], "5s");
    }

    const LEGACY: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: config, namespace: metallb-system}
data:
  config: |
    peers:
    - peer-address: 198.51.100.1
      peer-asn: 64501
      my-asn: 64500
      node-selectors:
      - match-labels:
          rack: a
    bgp-communities:
      no-advertise: 65535:65282
    address-pools:
    - name: default
      protocol: layer2
      addresses:
      - 198.51.100.100-198.51.100.149
      avoid-buggy-ips: true
    - name: bgp-pool
      protocol: bgp
      auto-assign: false
      addresses:
      - 203.0.113.0/28
      bgp-advertisements:
      - aggregation-length: 32
        localpref: 100
        communities: [no-advertise]
    - name: odd
      protocol: carrier-pigeon
      addresses: [192.0.2.0/28]
"#;

    #[test]
    fn the_legacy_configmap_converts() {
        let c = convert(&docs(LEGACY), "metallb-system");
        let by = |kind: &str, name: &str| {
            c.objects
                .iter()
                .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
                .cloned()
                .unwrap_or(Value::Null)
        };
        assert_eq!(
            by("IPAddressPool", "default")["spec"]["avoidBuggyIPs"],
            true
        );
        assert_eq!(
            by("L2Advertisement", "default")["spec"]["ipAddressPools"][0],
            "default"
        );
        assert_eq!(by("IPAddressPool", "bgp-pool")["spec"]["autoAssign"], false);
        let adv = by("BGPAdvertisement", "bgp-pool");
        assert_eq!(adv["spec"]["aggregationLength"], 32);
        assert_eq!(adv["spec"]["localPref"], 100);
        assert_eq!(adv["spec"]["ipAddressPools"][0], "bgp-pool");
        let peer = by("BGPPeer", "peer-198-51-100-1");
        assert_eq!(peer["spec"]["peerASN"], 64501);
        assert_eq!(peer["spec"]["myASN"], 64500);
        assert_eq!(peer["spec"]["nodeSelectors"][0]["matchLabels"]["rack"], "a");
        assert_eq!(
            by("Community", "bgp-communities")["spec"]["communities"][0]["value"],
            "65535:65282"
        );
        assert_eq!(by("IPAddressPool", "odd")["kind"], "IPAddressPool");
        assert!(by("L2Advertisement", "odd").is_null());
        assert!(
            c.notes
                .iter()
                .any(|n| n.check == "unknown-protocol" && n.title.contains("carrier-pigeon"))
        );
    }
}
