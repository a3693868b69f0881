//! The walker's nftables front end: the base chains of the packet's hooks in priority order
//! (prerouting then input or forward; output for the node's own traffic), and what one rule's
//! statements do to a path: matches, verdict maps (kube-proxy's `service-ips`,
//! `service-nodeports`, `no-endpoint-services`, `firewall-ips`), `numgen random mod N` maps and
//! verdict maps, `dnat`, and the masquerade mark.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::str::FromStr;

use super::engine::{
    self, Assumption, Effect, Eval, Fact, MASQ_MARK, Next, Opt, Program, Stage, State, Walker,
};
use super::{Action, Endpoint, Origin, Packet, Trace, WalkError, WalkOptions};
use crate::rules::nft::{DnatTo, Expr, NftRule, NftTable, Op, Stmt, Verdict};
use crate::rules::{Family, MarkOp, Net, Proto, Ruleset};

struct Nft<'a> {
    tables: Vec<&'a NftTable>,
    pre: Vec<Stage>,
    family: Family,
}

fn key(t: &NftTable) -> String {
    format!("{} {}", t.family, t.name)
}

fn family_matches(t: &NftTable, f: Family) -> bool {
    match t.family.as_str() {
        "ip" => f == Family::Ipv4,
        "ip6" => f == Family::Ipv6,
        "inet" => true,
        _ => false,
    }
}

/// Base chains of `hook` in `tables`, by priority.
fn hook_stages(tables: &[&NftTable], hook: &str) -> Vec<Stage> {
    let mut v: Vec<(i64, Stage)> = Vec::new();
    for t in tables {
        for (name, c) in &t.chains {
            let kind = c.kind.as_deref().unwrap_or("");
            if c.hook.as_deref() == Some(hook) && matches!(kind, "nat" | "filter") {
                v.push((
                    c.prio.unwrap_or(0),
                    Stage {
                        table: key(t),
                        label: key(t),
                        chain: name.clone(),
                        prunable: kind == "filter",
                        policy: c.policy.clone().unwrap_or_else(|| "accept".into()),
                    },
                ));
            }
        }
    }
    v.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.chain.cmp(&b.1.chain)));
    v.into_iter().map(|(_, s)| s).collect()
}

/// Chains that some rule or map element enters.
fn entered(t: &NftTable) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut add = |v: &Verdict| {
        if let Verdict::Jump(c) | Verdict::Goto(c) = v {
            out.insert(c.clone());
        }
    };
    for c in t.chains.values() {
        for r in &c.rules {
            for s in &r.stmts {
                match s {
                    Stmt::Verdict { verdict } => add(verdict),
                    Stmt::Vmap { inline, .. } => inline.iter().for_each(|(_, v)| add(v)),
                    _ => {}
                }
            }
        }
    }
    for m in t.maps.values() {
        for e in &m.elems {
            if let Some(v) = &e.verdict {
                add(v);
            }
        }
    }
    out
}

/// Walks nftables rules.
pub(super) fn walk(rules: &Ruleset, p: &Packet, opts: &WalkOptions) -> Result<Trace, WalkError> {
    let family = p.family();
    let tables: Vec<&NftTable> = rules
        .nft
        .iter()
        .filter(|t| family_matches(t, family))
        .collect();
    if tables.iter().all(|t| t.chains.is_empty()) {
        return Err(WalkError::NoStart(format!(
            "the input has no {} nftables table",
            if family == Family::Ipv4 {
                "ip or inet"
            } else {
                "ip6 or inet"
            }
        )));
    }
    let hook = match p.origin {
        Origin::Outside => "prerouting",
        Origin::Node => "output",
    };
    let user_stage = |t: &NftTable, chain: &str| Stage {
        table: key(t),
        label: key(t),
        chain: chain.to_string(),
        prunable: false,
        policy: "accept".into(),
    };
    let (pre, why) = if let Some(c) = &opts.chain {
        let t = tables
            .iter()
            .find(|t| t.chains.contains_key(c))
            .ok_or_else(|| WalkError::UnknownChain(c.clone()))?;
        (vec![user_stage(t, c)], format!("starting at {c} as asked"))
    } else {
        let base = hook_stages(&tables, hook);
        if !base.is_empty() {
            let names: Vec<String> = base.iter().map(|s| s.chain.clone()).collect();
            (base, format!("the {hook} hook: {}", names.join(", ")))
        } else if let Some(t) = tables.iter().find(|t| t.chains.contains_key("services")) {
            (
                vec![user_stage(t, "services")],
                "the input has no base chains; starting at kube-proxy's services chain".into(),
            )
        } else {
            let mut roots = Vec::new();
            for t in &tables {
                let e = entered(t);
                for (n, c) in &t.chains {
                    if !e.contains(n) && !c.rules.is_empty() {
                        roots.push((*t, n.clone()));
                    }
                }
            }
            match roots.as_slice() {
                [(t, only)] => (
                    vec![user_stage(t, only)],
                    format!(
                        "the input has no base chains; starting at {only}, the only chain nothing enters"
                    ),
                ),
                _ => {
                    let names: Vec<&str> = roots.iter().map(|(_, n)| n.as_str()).collect();
                    return Err(WalkError::NoStart(format!(
                        "the input has no base chains and no services chain; chains nothing enters: {} (pass --chain to start at one)",
                        names.join(", ")
                    )));
                }
            }
        }
    };
    let prog = Nft {
        tables,
        pre,
        family,
    };
    let (tree, outcomes, notes) = Walker::new(&prog).run(State::new(p));
    Ok(Trace {
        packet: p.clone(),
        start: why,
        tree,
        outcomes,
        notes,
    })
}

impl Nft<'_> {
    fn table(&self, key_: &str) -> Option<&NftTable> {
        self.tables.iter().copied().find(|t| key(t) == key_)
    }
}

impl Program for Nft<'_> {
    type Rule = NftRule;

    fn stage(&self, idx: usize, st: &State) -> Option<Stage> {
        if let Some(s) = self.pre.get(idx) {
            return Some(s.clone());
        }
        let post = match st.origin {
            Origin::Node => return None,
            Origin::Outside if st.dst_local == Some(true) => "input",
            Origin::Outside => "forward",
        };
        // Only after the real prerouting base chains: a walk started at a user chain has no
        // later hooks to guess.
        if !self.pre.iter().all(|s| {
            self.table(&s.table)
                .and_then(|t| t.chains.get(&s.chain))
                .is_some_and(|c| c.hook.is_some())
        }) {
            return None;
        }
        hook_stages(&self.tables, post)
            .into_iter()
            .nth(idx - self.pre.len())
    }

    fn rules(&self, table: &str, chain: &str) -> Option<&[NftRule]> {
        self.table(table)?
            .chains
            .get(chain)
            .map(|c| c.rules.as_slice())
    }

    fn eval(&self, table: &str, rule: &NftRule, st: &State) -> Eval {
        match self.table(table) {
            Some(t) => eval(t, rule, st, self.family),
            None => Eval {
                branches: vec![engine::Branch::all(Next::NoMatch)],
                ..Eval::default()
            },
        }
    }

    fn text(&self, rule: &NftRule) -> String {
        rule.text()
    }

    fn comment(&self, rule: &NftRule) -> Option<String> {
        rule.comment.clone()
    }

    fn is_masq_chain(&self, _chain: &str) -> bool {
        false
    }

    fn drop_reason(&self, chain: &str) -> Option<String> {
        chain.strip_prefix("firewall-").map(|rest| {
            let svc = rest.split_once('-').map_or(rest, |(_, s)| s);
            format!("{svc}: the source is not in the Service's loadBalancerSourceRanges")
        })
    }
}

/// A value taken from the packet.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Ip(IpAddr),
    Num(u64),
    Proto(Proto),
    Word(String),
    Tuple(Vec<Val>),
    /// The packet has no such field (an IPv6 field of an IPv4 packet): the match fails.
    Absent,
    /// Not known: the source address, an interface.
    Unknown(String),
}

impl std::fmt::Display for Val {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ip(ip) => write!(f, "{ip}"),
            Self::Num(n) => write!(f, "{n}"),
            Self::Proto(p) => f.write_str(p.as_str()),
            Self::Word(w) => f.write_str(w),
            Self::Tuple(v) => {
                let parts: Vec<String> = v.iter().map(|x| x.to_string()).collect();
                f.write_str(&parts.join(" . "))
            }
            Self::Absent => f.write_str("(absent)"),
            Self::Unknown(u) => write!(f, "({u})"),
        }
    }
}

fn value(e: &Expr, st: &State, family: Family) -> Val {
    match e {
        Expr::Payload { protocol, field } => match (protocol.as_str(), field.as_str()) {
            ("ip", f) | ("ip6", f) => {
                let fam = if protocol == "ip" {
                    Family::Ipv4
                } else {
                    Family::Ipv6
                };
                if fam != family {
                    return Val::Absent;
                }
                match f {
                    "daddr" => Val::Ip(st.dst),
                    "saddr" => st
                        .src
                        .map_or_else(|| Val::Unknown("the source address".into()), Val::Ip),
                    other => Val::Unknown(format!("{protocol} {other}")),
                }
            }
            (proto, "dport") => {
                if proto == "th" || Proto::parse(proto) == Some(st.proto) {
                    Val::Num(u64::from(st.port))
                } else {
                    Val::Absent
                }
            }
            (proto, "sport") => {
                if proto == "th" || Proto::parse(proto) == Some(st.proto) {
                    Val::Unknown("the source port".into())
                } else {
                    Val::Absent
                }
            }
            (p, f) => Val::Unknown(format!("{p} {f}")),
        },
        Expr::Meta { key } => match key.as_str() {
            "l4proto" => Val::Proto(st.proto),
            "nfproto" | "protocol" => Val::Word(match family {
                Family::Ipv4 => "ipv4".into(),
                Family::Ipv6 => "ipv6".into(),
            }),
            // A conditional masquerade mark is left out (see the iptables front end).
            "mark" => Val::Num(u64::from(st.mark)),
            other => Val::Unknown(format!("meta {other}")),
        },
        Expr::Ct { key } => match key.as_str() {
            "state" => Val::Word("new".into()),
            "status" => Val::Word(if st.dnat.is_some() {
                "dnat".into()
            } else {
                "none".into()
            }),
            other => Val::Unknown(format!("ct {other}")),
        },
        Expr::Fib { flags, result } if result == "type" => {
            if flags.iter().any(|f| f == "daddr") {
                match st.dst_local {
                    Some(true) => Val::Word("local".into()),
                    Some(false) => Val::Word("unicast".into()),
                    None => Val::Unknown("fib daddr type".into()),
                }
            } else if flags.iter().any(|f| f == "saddr") {
                Val::Word(if st.origin == Origin::Node {
                    "local".into()
                } else {
                    "unicast".into()
                })
            } else {
                Val::Unknown(e.to_string())
            }
        }
        Expr::And { expr, mask } => match value(expr, st, family) {
            Val::Num(n) => Val::Num(n & mask),
            other => other,
        },
        Expr::Concat { parts } => Val::Tuple(parts.iter().map(|p| value(p, st, family)).collect()),
        Expr::Literal { value } => literal(value),
        other => Val::Unknown(other.to_string()),
    }
}

fn literal(s: &str) -> Val {
    if let Ok(ip) = IpAddr::from_str(s) {
        return Val::Ip(ip);
    }
    if let Ok(n) = s.parse::<u64>() {
        return Val::Num(n);
    }
    if let Some(h) = s.strip_prefix("0x")
        && let Ok(n) = u64::from_str_radix(h, 16)
    {
        return Val::Num(n);
    }
    if let Some(p) = Proto::parse(s) {
        return Val::Proto(p);
    }
    Val::Word(s.to_string())
}

/// Whether `v` matches one element `e` (a literal, prefix, range, concatenation); `None` when
/// `v` is unknown.
fn elem_matches(v: &Val, e: &Expr, st: &State, t: &NftTable) -> Option<bool> {
    match (v, e) {
        (Val::Absent, _) => Some(false),
        (Val::Unknown(_), _) => None,
        (Val::Tuple(vs), Expr::Concat { parts }) => {
            if vs.len() != parts.len() {
                return Some(false);
            }
            let mut undecided = false;
            for (v, p) in vs.iter().zip(parts) {
                match elem_matches(v, p, st, t) {
                    Some(false) => return Some(false),
                    None => undecided = true,
                    Some(true) => {}
                }
            }
            if undecided { None } else { Some(true) }
        }
        (_, Expr::Set { elems }) => any_of(v, elems, st, t),
        (_, Expr::SetRef { name }) => match t.sets.get(name) {
            Some(s) => any_of(v, &s.elems, st, t),
            None => Some(false),
        },
        (Val::Ip(ip), Expr::Prefix { net }) => Some(net.contains(ip)),
        (Val::Ip(ip), Expr::Range { from, to }) => {
            match (IpAddr::from_str(from), IpAddr::from_str(to)) {
                (Ok(a), Ok(b)) => Some(a <= *ip && *ip <= b),
                _ => Some(false),
            }
        }
        (Val::Num(n), Expr::Range { from, to }) => match (from.parse::<u64>(), to.parse::<u64>()) {
            (Ok(a), Ok(b)) => Some(a <= *n && *n <= b),
            _ => Some(false),
        },
        (_, Expr::Literal { value }) => Some(literal(value) == *v),
        _ => Some(false),
    }
}

fn any_of(v: &Val, elems: &[Expr], st: &State, t: &NftTable) -> Option<bool> {
    let mut undecided = false;
    for e in elems {
        match elem_matches(v, e, st, t) {
            Some(true) => return Some(true),
            None => undecided = true,
            Some(false) => {}
        }
    }
    if undecided { None } else { Some(false) }
}

enum Tri {
    Yes,
    No,
    Maybe(Assumption, Assumption),
}

/// One match statement.
fn compare(left: &Expr, op: Op, right: &Expr, st: &State, t: &NftTable, family: Family) -> Tri {
    let v = value(left, st, family);
    let neg = match op {
        Op::Eq => false,
        Op::Ne => true,
        Op::Other => {
            let (a, b) = engine::undecided(
                format!("`{left} <op> {right}` holds"),
                format!("`{left} <op> {right}` does not hold"),
                None,
            );
            return Tri::Maybe(a, b);
        }
    };
    // The source address against a network: facts assumed earlier decide it.
    if let (Val::Unknown(_), Expr::Payload { field, .. }) = (&v, left)
        && field == "saddr"
    {
        let net = match right {
            Expr::Prefix { net } => Some(*net),
            Expr::Literal { value } => Net::parse(value),
            _ => None,
        };
        if let Some(net) = net {
            return match st.src_in(&net) {
                Some(inside) => {
                    if inside != neg {
                        Tri::Yes
                    } else {
                        Tri::No
                    }
                }
                None => {
                    let (yes, no) = (
                        format!("the source is in {net}"),
                        format!("the source is not in {net}"),
                    );
                    let (yes, no) = if neg { (no, yes) } else { (yes, no) };
                    let (a, b) = engine::undecided(
                        yes,
                        no,
                        Some((Fact::Src(net, !neg), Fact::Src(net, neg))),
                    );
                    Tri::Maybe(a, b)
                }
            };
        }
    }
    if let (Val::Unknown(_), Expr::Fib { flags, .. }) = (&v, left)
        && flags.iter().any(|f| f == "daddr")
    {
        let wants_local = matches!(right, Expr::Literal { value } if value == "local");
        let positive = wants_local != neg;
        let (yes, no) = (
            format!("{} is an address of this node", st.dst),
            format!("{} is not an address of this node", st.dst),
        );
        let (yes, no) = if positive { (yes, no) } else { (no, yes) };
        let (a, b) = engine::undecided(
            yes,
            no,
            Some((Fact::DstLocal(positive), Fact::DstLocal(!positive))),
        );
        return Tri::Maybe(a, b);
    }
    // `ct state new` is written with op "in" against a flag list.
    let r = match (&v, right) {
        (Val::Word(w), Expr::Set { elems }) if matches!(left, Expr::Ct { .. }) => Some(
            elems
                .iter()
                .any(|e| matches!(e, Expr::Literal { value } if value == w)),
        ),
        _ => elem_matches(&v, right, st, t),
    };
    match r {
        Some(b) => {
            if b != neg {
                Tri::Yes
            } else {
                Tri::No
            }
        }
        None => {
            let text = format!("{left} {}{right}", if neg { "!= " } else { "" });
            let (a, b) = engine::undecided(
                format!("`{text}` holds"),
                format!("`{text}` does not hold"),
                None,
            );
            Tri::Maybe(a, b)
        }
    }
}

fn verdict_next(v: &Verdict) -> Next {
    match v {
        Verdict::Accept => Next::Accept,
        Verdict::Drop => Next::Drop,
        Verdict::Continue => Next::Continue,
        Verdict::Return => Next::Return,
        Verdict::Jump(c) => Next::Jump(c.clone()),
        Verdict::Goto(c) => Next::Goto(c.clone()),
    }
}

/// The options of a `numgen random mod N` lookup: one per entry, `1/N` each.
fn numgen_options<T>(
    modulus: u32,
    offset: u32,
    entries: &[(Expr, T)],
    make: impl Fn(&T) -> (Vec<Effect>, Next, Option<Action>),
) -> Vec<Opt> {
    if modulus == 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for k in 0..modulus {
        let n = u64::from(k) + u64::from(offset);
        if let Some((_, t)) = entries.iter().find(|(key, _)| {
            matches!(key, Expr::Literal { value } if value.parse::<u64>().ok() == Some(n))
        }) {
            let (effects, next, action) = make(t);
            out.push(Opt {
                weight: 1.0 / f64::from(modulus),
                chance: Some(format!("numgen {n} of {modulus}")),
                effects,
                next,
                action,
            });
        }
    }
    out
}

/// What one rule does to one path.
fn eval(t: &NftTable, rule: &NftRule, st: &State, family: Family) -> Eval {
    let mut ev = Eval::default();
    let mut undecided = Vec::new();
    let mut effects = Vec::new();
    let no_match = |mut ev: Eval| {
        ev.branches = vec![engine::Branch::all(Next::NoMatch)];
        ev
    };
    for s in &rule.stmts {
        match s {
            // kube-proxy's session affinity: a dynamic set of recent clients. An unknown client
            // is taken as a new one, like iptables' `recent --rcheck`.
            Stmt::Match {
                left: Expr::Payload { field, .. },
                op: Op::Eq,
                right: Expr::SetRef { name },
            } if field == "saddr" && st.src.is_none() && name.starts_with("affinity-") => {
                ev.notes.push(format!(
                    "session affinity: a client in @{name} (seen recently) goes back to its endpoint instead of the split shown"
                ));
                return no_match(ev);
            }
            Stmt::Match { left, op, right } => match compare(left, *op, right, st, t, family) {
                Tri::Yes => ev.matched.push(s.to_string()),
                Tri::No => return no_match(ev),
                Tri::Maybe(a, b) => undecided.push((a, b)),
            },
            Stmt::Mark { op } => {
                let masq = match op {
                    MarkOp::Or { value } => value & MASQ_MARK != 0,
                    MarkOp::SetXmark { value, .. } => value & MASQ_MARK != 0,
                    _ => false,
                };
                effects.push(if masq {
                    Effect::Masq
                } else {
                    Effect::Mark(*op)
                });
            }
            Stmt::Passive { .. } => {}
            Stmt::Other { json } => {
                ev.notes.push(format!(
                    "a statement the walker does not understand ({json}); both ways are followed"
                ));
                let (a, b) = engine::undecided(
                    format!("`{json}` matches"),
                    format!("`{json}` does not match"),
                    None,
                );
                undecided.push((a, b));
            }
            Stmt::Verdict { verdict } => {
                ev.branches =
                    engine::fork(undecided, vec![Opt::all(effects, verdict_next(verdict))]);
                return ev;
            }
            Stmt::Reject { .. } => {
                ev.branches = engine::fork(undecided, vec![Opt::all(effects, Next::Reject)]);
                return ev;
            }
            Stmt::Masquerade | Stmt::Snat => {
                let mut o = Opt::all(effects, Next::Accept);
                o.action = Some(Action::Snat);
                ev.branches = engine::fork(undecided, vec![o]);
                return ev;
            }
            Stmt::Vmap { key, map, inline } => {
                let options = match key {
                    Expr::Numgen {
                        modulus, offset, ..
                    } => {
                        let entries: Vec<(Expr, Verdict)> = match map {
                            None => inline.clone(),
                            Some(m) => t
                                .maps
                                .get(m)
                                .map(|m| {
                                    m.elems
                                        .iter()
                                        .filter_map(|e| Some((e.key.clone(), e.verdict.clone()?)))
                                        .collect()
                                })
                                .unwrap_or_default(),
                        };
                        numgen_options(*modulus, *offset, &entries, |v| {
                            (effects.clone(), verdict_next(v), None)
                        })
                    }
                    _ => {
                        let v = value(key, st, family);
                        let found = match map {
                            None => inline
                                .iter()
                                .find(|(k, _)| elem_matches(&v, k, st, t) == Some(true))
                                .map(|(_, verdict)| (verdict.clone(), None)),
                            Some(name) => match t.maps.get(name) {
                                Some(m) => m
                                    .elems
                                    .iter()
                                    .find(|e| elem_matches(&v, &e.key, st, t) == Some(true))
                                    .and_then(|e| Some((e.verdict.clone()?, e.comment.clone()))),
                                None => {
                                    ev.notes.push(format!("map @{name} is not in the input"));
                                    None
                                }
                            },
                        };
                        match found {
                            Some((verdict, comment)) => {
                                ev.matched.push(match map {
                                    Some(m) => format!("{key} {v} in @{m}"),
                                    None => format!("{key} {v}"),
                                });
                                let mut e = effects.clone();
                                if let Some(c) = comment {
                                    e.push(Effect::Reason(element_reason(
                                        map.as_deref(),
                                        &c,
                                        &verdict,
                                    )));
                                }
                                vec![Opt::all(e, verdict_next(&verdict))]
                            }
                            None => {
                                if matches!(v, Val::Unknown(_))
                                    || matches!(&v, Val::Tuple(p) if p.iter().any(|x| matches!(x, Val::Unknown(_))))
                                {
                                    ev.notes.push(format!("the lookup of `{key}` depends on something unknown; taken as finding nothing"));
                                }
                                Vec::new()
                            }
                        }
                    }
                };
                ev.branches = engine::fork(undecided, options);
                return ev;
            }
            Stmt::Dnat { to } => {
                let options = match to {
                    DnatTo::Fixed { addr, port } => {
                        let ep = endpoint(addr, *port);
                        let a = Action::Dnat(ep.to_string());
                        let mut e = effects.clone();
                        e.push(Effect::Dnat(ep));
                        let mut o = Opt::all(e, Next::Accept);
                        o.action = Some(a);
                        vec![o]
                    }
                    DnatTo::Map { key, entries } => {
                        let entries: Vec<(Expr, (String, Option<u16>))> = entries
                            .iter()
                            .map(|(k, a, p)| (k.clone(), (a.clone(), *p)))
                            .collect();
                        match key {
                            Expr::Numgen {
                                modulus, offset, ..
                            } => numgen_options(*modulus, *offset, &entries, |(a, p)| {
                                let ep = endpoint(a, *p);
                                let act = Action::Dnat(ep.to_string());
                                let mut e = effects.clone();
                                e.push(Effect::Dnat(ep));
                                (e, Next::Accept, Some(act))
                            }),
                            other => {
                                let v = value(other, st, family);
                                entries
                                    .iter()
                                    .find(|(k, _)| elem_matches(&v, k, st, t) == Some(true))
                                    .map(|(_, (a, p))| {
                                        let ep = endpoint(a, *p);
                                        let act = Action::Dnat(ep.to_string());
                                        let mut e = effects.clone();
                                        e.push(Effect::Dnat(ep));
                                        let mut o = Opt::all(e, Next::Accept);
                                        o.action = Some(act);
                                        vec![o]
                                    })
                                    .unwrap_or_default()
                            }
                        }
                    }
                    DnatTo::Other { json } => {
                        ev.notes
                            .push(format!("a dnat the walker does not understand: {json}"));
                        let (a, b) = engine::undecided(
                            format!("`dnat {json}` applies"),
                            format!("`dnat {json}` does not apply"),
                            None,
                        );
                        undecided.push((a, b));
                        vec![Opt::all(effects.clone(), Next::Accept)]
                    }
                };
                ev.branches = engine::fork(undecided, options);
                return ev;
            }
        }
    }
    let action = if effects.contains(&Effect::Masq) {
        Some(Action::MarkMasq)
    } else {
        None
    };
    let mut o = Opt::all(effects, Next::Continue);
    o.action = action;
    ev.branches = engine::fork(undecided, vec![o]);
    ev
}

/// Why a map element sends a packet where it does, from kube-proxy's map names and the element's
/// comment (which names the Service port).
fn element_reason(map: Option<&str>, comment: &str, v: &Verdict) -> String {
    match (map, v) {
        (Some("no-endpoint-services" | "no-endpoint-nodeports"), Verdict::Drop) => {
            format!("{comment} has no local endpoints")
        }
        (Some("no-endpoint-services" | "no-endpoint-nodeports"), _) => {
            format!("{comment} has no endpoints")
        }
        (Some(m), _) => format!("{comment} (element of @{m})"),
        (None, _) => comment.to_string(),
    }
}

fn endpoint(addr: &str, port: Option<u16>) -> Endpoint {
    let ip = IpAddr::from_str(addr).ok();
    let written = match (ip, port) {
        (Some(IpAddr::V6(a)), Some(p)) => format!("[{a}]:{p}"),
        (_, Some(p)) => format!("{addr}:{p}"),
        _ => addr.to_string(),
    };
    Endpoint { written, ip, port }
}
