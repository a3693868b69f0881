//! `nft -j list ruleset` JSON: kube-proxy's nftables mode (tables `ip kube-proxy` and
//! `ip6 kube-proxy`: base chains `nat-prerouting`, `nat-output`, `filter-*`; the `services` chain
//! with its verdict maps `service-ips` and `service-nodeports`; per-Service chains `service-…`,
//! `external-…`, `local-…`, `firewall-…`, `endpoint-…`; `dnat … to numgen random mod N map {…}`
//! and `numgen random mod N vmap {…}`).
//!
//! Every table, chain, set and map is read, kube-proxy's or not. Statements and expressions this
//! module does not model are kept as their JSON text ([`Stmt::Other`], [`Expr::Other`]) and
//! reported; the walker treats them as conditions it cannot decide.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::{Format, Issue, MarkOp, Net, Ruleset};

/// An nftables table.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NftTable {
    /// `ip`, `ip6`, `inet`, …
    pub family: String,
    /// The name (`kube-proxy`).
    pub name: String,
    /// Chains by name.
    pub chains: BTreeMap<String, NftChain>,
    /// Maps by name.
    pub maps: BTreeMap<String, NftMap>,
    /// Sets by name.
    pub sets: BTreeMap<String, NftSet>,
}

/// A chain; base chains have a hook.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NftChain {
    /// `prerouting`, `input`, `forward`, `output`, `postrouting`.
    pub hook: Option<String>,
    /// `nat`, `filter`, `route`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Priority (lower runs first).
    pub prio: Option<i64>,
    /// `accept` or `drop`.
    pub policy: Option<String>,
    /// Rules in order.
    pub rules: Vec<NftRule>,
}

/// A rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NftRule {
    /// The rule's handle, when given.
    pub handle: Option<u64>,
    /// Its comment.
    pub comment: Option<String>,
    /// The statements, in order.
    pub stmts: Vec<Stmt>,
}

impl NftRule {
    /// The rule in nft's own syntax, approximately, for display.
    pub fn text(&self) -> String {
        let mut parts: Vec<String> = self.stmts.iter().map(|s| s.to_string()).collect();
        if let Some(c) = &self.comment {
            parts.push(format!("comment \"{c}\""));
        }
        parts.join(" ")
    }
}

/// A verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "chain")]
pub enum Verdict {
    /// accept.
    Accept,
    /// drop.
    Drop,
    /// continue.
    Continue,
    /// return.
    Return,
    /// jump CHAIN.
    Jump(String),
    /// goto CHAIN.
    Goto(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Accept => f.write_str("accept"),
            Self::Drop => f.write_str("drop"),
            Self::Continue => f.write_str("continue"),
            Self::Return => f.write_str("return"),
            Self::Jump(c) => write!(f, "jump {c}"),
            Self::Goto(c) => write!(f, "goto {c}"),
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `==` (also nft's implicit match and `in`).
    Eq,
    /// `!=`.
    Ne,
    /// `<`, `>`, `<=`, `>=` kept as one "other" kind; the walker cannot decide them.
    Other,
}

/// An expression.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Expr {
    /// `ip daddr`, `tcp dport`, `th dport`, …
    Payload {
        /// `ip`, `ip6`, `tcp`, `udp`, `th`, …
        protocol: String,
        /// `saddr`, `daddr`, `dport`, …
        field: String,
    },
    /// `meta KEY` (`l4proto`, `mark`, `iifname`, …).
    Meta {
        /// The key.
        key: String,
    },
    /// `ct KEY` (`state`, `status`).
    Ct {
        /// The key.
        key: String,
    },
    /// `fib daddr type` and similar.
    Fib {
        /// `saddr`, `daddr`, `iif`, …
        flags: Vec<String>,
        /// `type`, `oif`, …
        result: String,
    },
    /// `numgen random mod N`.
    Numgen {
        /// N.
        modulus: u32,
        /// `random` or `inc`.
        mode: String,
        /// Offset added to the result.
        offset: u32,
    },
    /// `a . b . c`.
    Concat {
        /// The parts.
        parts: Vec<Expr>,
    },
    /// A literal: an address, a protocol name, a port, a ct state, …
    Literal {
        /// As nft wrote it.
        value: String,
    },
    /// `@set`.
    SetRef {
        /// The set's name.
        name: String,
    },
    /// `addr/len`.
    Prefix {
        /// The network.
        net: Net,
    },
    /// `a-b`.
    Range {
        /// Low end.
        from: String,
        /// High end.
        to: String,
    },
    /// `{ a, b }`.
    Set {
        /// The elements.
        elems: Vec<Expr>,
    },
    /// `X & mask` (marks).
    And {
        /// X.
        expr: Box<Expr>,
        /// The mask.
        mask: u64,
    },
    /// Not modelled: the JSON as written.
    Other {
        /// The JSON text.
        json: String,
    },
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Payload { protocol, field } => write!(f, "{protocol} {field}"),
            Self::Meta { key } => write!(f, "meta {key}"),
            Self::Ct { key } => write!(f, "ct {key}"),
            Self::Fib { flags, result } => write!(f, "fib {} {result}", flags.join(" . ")),
            Self::Numgen {
                modulus,
                mode,
                offset,
            } => {
                write!(f, "numgen {mode} mod {modulus}")?;
                if *offset != 0 {
                    write!(f, " offset {offset}")?;
                }
                Ok(())
            }
            Self::Concat { parts } => {
                let p: Vec<String> = parts.iter().map(|e| e.to_string()).collect();
                f.write_str(&p.join(" . "))
            }
            Self::Literal { value } => f.write_str(value),
            Self::SetRef { name } => write!(f, "@{name}"),
            Self::Prefix { net } => write!(f, "{}/{}", net.addr, net.len),
            Self::Range { from, to } => write!(f, "{from}-{to}"),
            Self::Set { elems } => {
                let p: Vec<String> = elems.iter().map(|e| e.to_string()).collect();
                write!(f, "{{ {} }}", p.join(", "))
            }
            Self::And { expr, mask } => write!(f, "{expr} and {mask:#x}"),
            Self::Other { json } => write!(f, "<{json}>"),
        }
    }
}

/// Where a DNAT sends packets.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum DnatTo {
    /// `dnat to ADDR[:PORT]`.
    Fixed {
        /// The address as written.
        addr: String,
        /// The port.
        port: Option<u16>,
    },
    /// `dnat … to KEY map { k : addr . port, … }` (kube-proxy: `numgen random mod N`).
    Map {
        /// The key (usually [`Expr::Numgen`]).
        key: Expr,
        /// Key → (address, port).
        entries: Vec<(Expr, String, Option<u16>)>,
    },
    /// Not modelled.
    Other {
        /// JSON text.
        json: String,
    },
}

/// A statement.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Stmt {
    /// `left OP right`.
    Match {
        /// Left side.
        left: Expr,
        /// Operator.
        op: Op,
        /// Right side.
        right: Expr,
    },
    /// A verdict.
    Verdict {
        /// Which.
        verdict: Verdict,
    },
    /// `KEY vmap @map` or `KEY vmap { … }`.
    Vmap {
        /// The key.
        key: Expr,
        /// A named map.
        map: Option<String>,
        /// An inline map.
        inline: Vec<(Expr, Verdict)>,
    },
    /// `meta mark set …`.
    Mark {
        /// The operation.
        op: MarkOp,
    },
    /// `dnat to …`.
    Dnat {
        /// Where.
        to: DnatTo,
    },
    /// `snat to …`.
    Snat,
    /// `masquerade`.
    Masquerade,
    /// `reject [with …]`.
    Reject {
        /// How, as written.
        with: Option<String>,
    },
    /// `counter`, `log`, `update @set { … }`, `limit`: no effect on the path.
    Passive {
        /// What.
        what: String,
    },
    /// Not modelled: the JSON as written.
    Other {
        /// JSON text.
        json: String,
    },
}

impl fmt::Display for Stmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Match { left, op, right } => match op {
                Op::Eq => write!(f, "{left} {right}"),
                Op::Ne => write!(f, "{left} != {right}"),
                Op::Other => write!(f, "{left} <op> {right}"),
            },
            Self::Verdict { verdict } => write!(f, "{verdict}"),
            Self::Vmap { key, map, inline } => match map {
                Some(m) => write!(f, "{key} vmap @{m}"),
                None => {
                    let p: Vec<String> = inline.iter().map(|(k, v)| format!("{k} : {v}")).collect();
                    write!(f, "{key} vmap {{ {} }}", p.join(", "))
                }
            },
            Self::Mark { op } => match op {
                MarkOp::Or { value } => write!(f, "meta mark set meta mark or {value:#x}"),
                MarkOp::Xor { value } => write!(f, "meta mark set meta mark xor {value:#x}"),
                MarkOp::And { value } => write!(f, "meta mark set meta mark and {value:#x}"),
                MarkOp::SetXmark { value, .. } => write!(f, "meta mark set {value:#x}"),
            },
            Self::Dnat { to } => match to {
                DnatTo::Fixed { addr, port } => match port {
                    Some(p) if addr.contains(':') => write!(f, "dnat to [{addr}]:{p}"),
                    Some(p) => write!(f, "dnat to {addr}:{p}"),
                    None => write!(f, "dnat to {addr}"),
                },
                DnatTo::Map { key, entries } => {
                    let p: Vec<String> = entries
                        .iter()
                        .map(|(k, a, port)| match port {
                            Some(port) => format!("{k} : {a} . {port}"),
                            None => format!("{k} : {a}"),
                        })
                        .collect();
                    write!(f, "dnat to {key} map {{ {} }}", p.join(", "))
                }
                DnatTo::Other { json } => write!(f, "dnat <{json}>"),
            },
            Self::Snat => f.write_str("snat"),
            Self::Masquerade => f.write_str("masquerade"),
            Self::Reject { with } => match with {
                Some(w) => write!(f, "reject with {w}"),
                None => f.write_str("reject"),
            },
            Self::Passive { what } => f.write_str(what),
            Self::Other { json } => write!(f, "<{json}>"),
        }
    }
}

/// A verdict or data map.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NftMap {
    /// The key's types (`ipv4_addr`, `inet_proto`, `inet_service`).
    pub key_types: Vec<String>,
    /// `verdict`, or the data type.
    pub data: String,
    /// Elements: key and value.
    pub elems: Vec<MapElem>,
}

/// One map element.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MapElem {
    /// The key (a [`Expr::Concat`] for concatenated types).
    pub key: Expr,
    /// A verdict, for verdict maps.
    pub verdict: Option<Verdict>,
    /// A data value, for data maps.
    pub value: Option<Expr>,
    /// The element's comment (kube-proxy names the Service there).
    pub comment: Option<String>,
}

/// A named set.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NftSet {
    /// The key's types.
    pub key_types: Vec<String>,
    /// The elements.
    pub elems: Vec<Expr>,
}

/// Parses `nft -j list ruleset` output.
pub fn parse(text: &str) -> Ruleset {
    let mut rs = Ruleset::empty(Format::NftJson);
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            rs.format = Format::Empty;
            rs.issues.push(Issue {
                line: e.line(),
                message: format!("not valid JSON: {e}"),
            });
            return rs;
        }
    };
    let Some(items) = v.get("nftables").and_then(Value::as_array) else {
        rs.format = Format::Empty;
        rs.issues.push(Issue {
            line: 0,
            message: "JSON without an \"nftables\" list: not `nft -j list ruleset` output".into(),
        });
        return rs;
    };
    let mut tables: Vec<NftTable> = Vec::new();
    let mut xt_seen = false;
    for (idx, item) in items.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            continue;
        };
        for (kind, body) in obj {
            let family = str_of(body, "family");
            let table_name = match kind.as_str() {
                "table" => str_of(body, "name"),
                _ => str_of(body, "table"),
            };
            let table = |tables: &mut Vec<NftTable>| -> usize {
                match tables
                    .iter()
                    .position(|t| t.family == family && t.name == table_name)
                {
                    Some(i) => i,
                    None => {
                        tables.push(NftTable {
                            family: family.clone(),
                            name: table_name.clone(),
                            ..NftTable::default()
                        });
                        tables.len() - 1
                    }
                }
            };
            match kind.as_str() {
                "metainfo" => {}
                "table" => {
                    table(&mut tables);
                }
                "chain" => {
                    let t = table(&mut tables);
                    let name = str_of(body, "name");
                    let c = tables[t].chains.entry(name).or_default();
                    c.hook = opt_str(body, "hook");
                    c.kind = opt_str(body, "type");
                    c.prio = body.get("prio").and_then(Value::as_i64);
                    c.policy = opt_str(body, "policy");
                }
                "rule" => {
                    let t = table(&mut tables);
                    let chain = str_of(body, "chain");
                    let mut stmts = Vec::new();
                    for s in body
                        .get("expr")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let st = stmt(s);
                        if s.get("xt").is_some() && !matches!(st, Stmt::Passive { .. }) {
                            xt_seen = true;
                        }
                        if let Stmt::Other { json } = &st {
                            rs.issues.push(Issue {
                                line: idx + 1,
                                message: format!(
                                    "chain {chain}: statement kept as written, not understood: {json}"
                                ),
                            });
                        }
                        stmts.push(st);
                    }
                    tables[t]
                        .chains
                        .entry(chain)
                        .or_default()
                        .rules
                        .push(NftRule {
                            handle: body.get("handle").and_then(Value::as_u64),
                            comment: opt_str(body, "comment"),
                            stmts,
                        });
                }
                "map" => {
                    let t = table(&mut tables);
                    let name = str_of(body, "name");
                    let verdict = body.get("map").and_then(Value::as_str) == Some("verdict");
                    let mut elems = Vec::new();
                    for e in body
                        .get("elem")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let Some(pair) = e.as_array() else { continue };
                        let (Some(k), Some(val)) = (pair.first(), pair.get(1)) else {
                            continue;
                        };
                        let (key, comment) = elem_key(k);
                        let (verdict_v, value) = if verdict {
                            (verdict_of(val), None)
                        } else {
                            (None, Some(expr(val)))
                        };
                        elems.push(MapElem {
                            key,
                            verdict: verdict_v,
                            value,
                            comment,
                        });
                    }
                    tables[t].maps.insert(
                        name,
                        NftMap {
                            key_types: types(body.get("type")),
                            data: body
                                .get("map")
                                .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_string))
                                .unwrap_or_default(),
                            elems,
                        },
                    );
                }
                "set" => {
                    let t = table(&mut tables);
                    let name = str_of(body, "name");
                    let elems = body
                        .get("elem")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|e| elem_key(e).0)
                        .collect();
                    tables[t].sets.insert(
                        name,
                        NftSet {
                            key_types: types(body.get("type")),
                            elems,
                        },
                    );
                }
                "element" => {
                    // `add element` records (nft -j list never prints them; kept for completeness).
                }
                other => rs.issues.push(Issue {
                    line: idx + 1,
                    message: format!("nftables object \"{other}\" not read"),
                }),
            }
        }
    }
    if xt_seen {
        rs.issues.push(Issue {
            line: 0,
            message: "some rules were written by iptables-nft (xt statements): nft shows them without their parameters, so they cannot be walked; for those tables use iptables-save".into(),
        });
    }
    if tables
        .iter()
        .all(|t| t.chains.is_empty() && t.maps.is_empty())
    {
        rs.format = if tables.is_empty() {
            Format::Empty
        } else {
            Format::NftJson
        };
    }
    rs.nft = tables;
    rs
}

fn str_of(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

fn opt_str(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

fn types(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// A set or map element's key, unwrapping `{"elem": {"val": …, "comment": …}}`.
fn elem_key(v: &Value) -> (Expr, Option<String>) {
    if let Some(e) = v.get("elem") {
        let key = e.get("val").map_or(
            Expr::Other {
                json: e.to_string(),
            },
            expr,
        );
        return (key, opt_str(e, "comment"));
    }
    (expr(v), None)
}

/// Text of a JSON value, truncated for messages.
fn json_text(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 200 {
        let mut cut = 200;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &s[..cut])
    } else {
        s
    }
}

fn verdict_of(v: &Value) -> Option<Verdict> {
    let obj = v.as_object()?;
    let (k, body) = obj.iter().next()?;
    let target = || {
        body.get("target")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Some(match k.as_str() {
        "accept" => Verdict::Accept,
        "drop" => Verdict::Drop,
        "continue" => Verdict::Continue,
        "return" => Verdict::Return,
        "jump" => Verdict::Jump(target()?),
        "goto" => Verdict::Goto(target()?),
        _ => return None,
    })
}

fn expr(v: &Value) -> Expr {
    match v {
        Value::String(s) => match s.strip_prefix('@') {
            Some(name) => Expr::SetRef {
                name: name.to_string(),
            },
            None => Expr::Literal { value: s.clone() },
        },
        Value::Number(n) => Expr::Literal {
            value: n.to_string(),
        },
        Value::Bool(b) => Expr::Literal {
            value: b.to_string(),
        },
        Value::Array(a) => Expr::Set {
            elems: a.iter().map(expr).collect(),
        },
        Value::Object(o) => {
            let Some((k, body)) = o.iter().next() else {
                return Expr::Other { json: json_text(v) };
            };
            match k.as_str() {
                "payload" => Expr::Payload {
                    protocol: str_of(body, "protocol"),
                    field: str_of(body, "field"),
                },
                "meta" => Expr::Meta {
                    key: str_of(body, "key"),
                },
                "ct" => Expr::Ct {
                    key: str_of(body, "key"),
                },
                "fib" => Expr::Fib {
                    flags: types(body.get("flags")),
                    result: str_of(body, "result"),
                },
                "numgen" => Expr::Numgen {
                    modulus: body
                        .get("mod")
                        .and_then(Value::as_u64)
                        .and_then(|m| u32::try_from(m).ok())
                        .unwrap_or(0),
                    mode: str_of(body, "mode"),
                    offset: body
                        .get("offset")
                        .and_then(Value::as_u64)
                        .and_then(|m| u32::try_from(m).ok())
                        .unwrap_or(0),
                },
                "concat" => Expr::Concat {
                    parts: body.as_array().into_iter().flatten().map(expr).collect(),
                },
                "prefix" => {
                    let addr = str_of(body, "addr");
                    let len = body.get("len").and_then(Value::as_u64).unwrap_or(0);
                    match Net::parse(&format!("{addr}/{len}")) {
                        Some(net) => Expr::Prefix { net },
                        None => Expr::Other { json: json_text(v) },
                    }
                }
                "range" => {
                    let a = body.as_array();
                    let end = |i: usize| {
                        a.and_then(|a| a.get(i))
                            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                            .unwrap_or_default()
                    };
                    Expr::Range {
                        from: end(0),
                        to: end(1),
                    }
                }
                "set" => match body {
                    Value::Array(a) => Expr::Set {
                        elems: a.iter().map(|e| elem_key(e).0).collect(),
                    },
                    other => Expr::Set {
                        elems: vec![expr(other)],
                    },
                },
                "&" => {
                    let a = body.as_array();
                    let inner = a.and_then(|a| a.first()).map(expr);
                    let mask = a.and_then(|a| a.get(1)).and_then(Value::as_u64);
                    match (inner, mask) {
                        (Some(e), Some(mask)) => Expr::And {
                            expr: Box::new(e),
                            mask,
                        },
                        _ => Expr::Other { json: json_text(v) },
                    }
                }
                _ => Expr::Other { json: json_text(v) },
            }
        }
        Value::Null => Expr::Other {
            json: "null".into(),
        },
    }
}

/// The mark operation of a `mangle` of `meta mark`, if it is one.
fn mark_op(body: &Value) -> Option<MarkOp> {
    let key = body.get("key")?;
    if key.get("meta")?.get("key")?.as_str()? != "mark" {
        return None;
    }
    let value = body.get("value")?;
    if let Some(n) = value.as_u64() {
        let value = u32::try_from(n).ok()?;
        return Some(MarkOp::SetXmark {
            value,
            mask: u32::MAX,
        });
    }
    let obj = value.as_object()?;
    let (op, args) = obj.iter().next()?;
    let n = args.as_array()?.get(1)?.as_u64()?;
    let n = u32::try_from(n).ok()?;
    match op.as_str() {
        "|" => Some(MarkOp::Or { value: n }),
        "^" => Some(MarkOp::Xor { value: n }),
        "&" => Some(MarkOp::And { value: n }),
        _ => None,
    }
}

fn port_of(v: Option<&Value>) -> Option<u16> {
    let v = v?;
    v.as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn stmt(v: &Value) -> Stmt {
    let other = || Stmt::Other { json: json_text(v) };
    let Some(obj) = v.as_object() else {
        return other();
    };
    let Some((k, body)) = obj.iter().next() else {
        return other();
    };
    if let Some(verdict) = verdict_of(v) {
        return Stmt::Verdict { verdict };
    }
    match k.as_str() {
        "match" => {
            let op = match body.get("op").and_then(Value::as_str).unwrap_or("==") {
                "==" | "in" => Op::Eq,
                "!=" => Op::Ne,
                _ => Op::Other,
            };
            let (Some(l), Some(r)) = (body.get("left"), body.get("right")) else {
                return other();
            };
            Stmt::Match {
                left: expr(l),
                op,
                right: expr(r),
            }
        }
        "vmap" => {
            let key = body.get("key").map_or(
                Expr::Other {
                    json: "null".into(),
                },
                expr,
            );
            match body.get("data") {
                Some(Value::String(s)) => Stmt::Vmap {
                    key,
                    map: Some(s.trim_start_matches('@').to_string()),
                    inline: Vec::new(),
                },
                Some(d) => {
                    let entries = d
                        .get("set")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|e| {
                            let pair = e.as_array()?;
                            Some((elem_key(pair.first()?).0, verdict_of(pair.get(1)?)?))
                        })
                        .collect();
                    Stmt::Vmap {
                        key,
                        map: None,
                        inline: entries,
                    }
                }
                None => other(),
            }
        }
        "mangle" => match mark_op(body) {
            Some(op) => Stmt::Mark { op },
            None => other(),
        },
        "dnat" => {
            let addr = body.get("addr");
            let to = match addr {
                Some(Value::String(a)) => DnatTo::Fixed {
                    addr: a.clone(),
                    port: port_of(body.get("port")),
                },
                Some(Value::Object(o)) if o.contains_key("map") => {
                    let m = &o["map"];
                    let key = m.get("key").map_or(
                        Expr::Other {
                            json: "null".into(),
                        },
                        expr,
                    );
                    let entries = m
                        .get("data")
                        .and_then(|d| d.get("set"))
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|e| {
                            let pair = e.as_array()?;
                            let k = elem_key(pair.first()?).0;
                            let val = pair.get(1)?;
                            match val {
                                Value::String(a) => Some((k, a.clone(), None)),
                                _ => {
                                    let parts = val.get("concat")?.as_array()?;
                                    let a = parts.first()?.as_str()?.to_string();
                                    Some((k, a, port_of(parts.get(1))))
                                }
                            }
                        })
                        .collect();
                    DnatTo::Map { key, entries }
                }
                _ => DnatTo::Other {
                    json: json_text(body),
                },
            };
            Stmt::Dnat { to }
        }
        "snat" => Stmt::Snat,
        "masquerade" => Stmt::Masquerade,
        "reject" => Stmt::Reject {
            with: body.get("expr").and_then(Value::as_str).map(str::to_string),
        },
        // iptables-nft's comment match, as nft shows it (without the text).
        "xt" if body.get("name").and_then(Value::as_str) == Some("comment") => Stmt::Passive {
            what: "xt comment".into(),
        },
        "counter" | "log" | "limit" | "set" | "notrack" | "quota" => Stmt::Passive {
            what: match k.as_str() {
                "set" => format!(
                    "{} {}",
                    str_of(body, "op"),
                    body.get("set").and_then(Value::as_str).unwrap_or("")
                ),
                other => other.to_string(),
            },
        },
        _ => other(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_proxy_statements_parse() {
        let json = r#"{"nftables":[{"metainfo":{"version":"1.0.6"}},
{"table":{"family":"ip","name":"kube-proxy","handle":1}},
{"chain":{"family":"ip","table":"kube-proxy","name":"nat-prerouting","handle":2,"type":"nat","hook":"prerouting","prio":-100,"policy":"accept"}},
{"map":{"family":"ip","name":"service-ips","table":"kube-proxy","type":["ipv4_addr","inet_proto","inet_service"],"handle":6,"map":"verdict","elem":[[{"concat":["203.0.113.10","tcp",80]},{"goto":{"target":"service-X"}}],[{"elem":{"val":{"concat":["198.51.100.102","tcp",80]},"comment":"default/empty:http"}},{"goto":{"target":"reject-chain"}}]]}},
{"rule":{"family":"ip","table":"kube-proxy","chain":"nat-prerouting","handle":3,"expr":[{"jump":{"target":"services"}}]}},
{"rule":{"family":"ip","table":"kube-proxy","chain":"service-X","handle":4,"expr":[{"match":{"op":"==","left":{"meta":{"key":"l4proto"}},"right":"tcp"}},{"dnat":{"family":"ip","addr":{"map":{"key":{"numgen":{"mode":"random","mod":2,"offset":0}},"data":{"set":[[0,{"concat":["192.0.2.2",8080]}],[1,{"concat":["192.0.2.3",8080]}]]}}}}}]}},
{"rule":{"family":"ip","table":"kube-proxy","chain":"service-X","handle":5,"expr":[{"mangle":{"key":{"meta":{"key":"mark"}},"value":{"|":[{"meta":{"key":"mark"}},16384]}}},{"wibble":{}}]}}
]}"#;
        let rs = parse(json);
        assert_eq!(rs.format, Format::NftJson);
        let t = &rs.nft[0];
        assert_eq!((t.family.as_str(), t.name.as_str()), ("ip", "kube-proxy"));
        let pre = &t.chains["nat-prerouting"];
        assert_eq!(pre.hook.as_deref(), Some("prerouting"));
        assert_eq!(pre.prio, Some(-100));
        assert_eq!(
            pre.rules[0].stmts,
            vec![Stmt::Verdict {
                verdict: Verdict::Jump("services".into())
            }]
        );
        let m = &t.maps["service-ips"];
        assert_eq!(m.elems.len(), 2);
        assert_eq!(m.elems[1].comment.as_deref(), Some("default/empty:http"));
        assert_eq!(m.elems[0].verdict, Some(Verdict::Goto("service-X".into())));
        let svc = &t.chains["service-X"].rules;
        match &svc[0].stmts[1] {
            Stmt::Dnat {
                to: DnatTo::Map { key, entries },
            } => {
                assert!(matches!(key, Expr::Numgen { modulus: 2, .. }));
                assert_eq!(entries[1].1, "192.0.2.3");
                assert_eq!(entries[1].2, Some(8080));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            svc[1].stmts[0],
            Stmt::Mark {
                op: MarkOp::Or { value: 0x4000 }
            }
        );
        assert!(matches!(svc[1].stmts[1], Stmt::Other { .. }));
        assert_eq!(rs.issues.len(), 1, "{:?}", rs.issues);
        assert!(
            svc[0].text().contains("numgen random mod 2"),
            "{}",
            svc[0].text()
        );
    }

    #[test]
    fn iptables_nft_rules_are_flagged() {
        let json = r#"{"nftables":[{"rule":{"family":"ip","table":"nat","chain":"KUBE-SVC-X","expr":[{"xt":{"name":"comment","type":"match"}},{"xt":{"name":"statistic","type":"match"}},{"jump":{"target":"KUBE-SEP-X"}}]}}]}"#;
        let rs = parse(json);
        let stmts = &rs.nft[0].chains["KUBE-SVC-X"].rules[0].stmts;
        assert!(matches!(stmts[0], Stmt::Passive { .. }));
        assert!(matches!(stmts[1], Stmt::Other { .. }));
        assert!(
            rs.issues.iter().any(|i| i.message.contains("iptables-nft")),
            "{:?}",
            rs.issues
        );
    }

    #[test]
    fn bad_json_is_an_issue_not_a_panic() {
        assert_eq!(parse("{").format, Format::Empty);
        assert_eq!(parse("{\"x\":1}").issues.len(), 1);
        assert_eq!(parse("{\"nftables\":[1,[],{\"rule\":7}]}").rule_count(), 1);
    }
}
