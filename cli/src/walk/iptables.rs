//! The walker's iptables front end: which stages a packet passes (nat PREROUTING or OUTPUT, or
//! the start of an excerpt; then filter INPUT, FORWARD or OUTPUT, or kube-proxy's filter chains
//! when the built-in ones are missing) and what one rule does to a path.

use super::engine::{
    self, Assumption, Effect, Eval, Fact, MASQ_MARK, Next, Opt, Program, Stage, State, Walker,
};
use super::{Action, Endpoint, Origin, Packet, Trace, WalkError, WalkOptions, start};
use crate::rules::{
    Family, MarkOp, Match, ProtoMatch, RecentMode, Rule, Ruleset, Table, TableName, Target,
};

struct Ipt<'a> {
    nat: Option<&'a Table>,
    filter: Option<&'a Table>,
    nat_start: Option<String>,
    family: Family,
}

/// Walks iptables rules.
pub(super) fn walk(rules: &Ruleset, p: &Packet, opts: &WalkOptions) -> Result<Trace, WalkError> {
    let family = p.family();
    let nat = rules.table(&TableName::Nat, family);
    let filter = rules.table(&TableName::Filter, family);
    let builtin = match p.origin {
        Origin::Outside => "PREROUTING",
        Origin::Node => "OUTPUT",
    };
    let mut notes = Vec::new();
    let (nat_start, why) = match (&opts.chain, nat) {
        (Some(c), Some(t)) if t.chains.contains_key(c) => {
            (Some(c.clone()), format!("starting at {c} as asked"))
        }
        (Some(c), _) => {
            let in_filter = filter.is_some_and(|t| t.chains.contains_key(c));
            if !in_filter {
                return Err(WalkError::UnknownChain(c.clone()));
            }
            (None, format!("starting at filter {c} as asked"))
        }
        (None, Some(t)) if t.chains.contains_key(builtin) => {
            (Some(builtin.to_string()), format!("nat {builtin}"))
        }
        (None, Some(t)) if t.chains.values().any(|c| !c.rules.is_empty()) => {
            let s = start::iptables(t, p)?;
            (Some(s.chain), s.why)
        }
        (None, _) => {
            if filter.is_none_or(|f| f.chains.is_empty()) {
                if rules.tables.iter().any(|t| !t.chains.is_empty()) {
                    return Err(WalkError::NoStart(format!(
                        "the input holds no {} rules{}",
                        family.as_str(),
                        if family == Family::Ipv6 {
                            " (pass ip6tables-save output for IPv6)"
                        } else {
                            ""
                        }
                    )));
                }
                return Err(WalkError::NoRules);
            }
            notes.push("the input has no nat rules: only the filter rules are walked".to_string());
            (None, "filter rules only".into())
        }
    };
    // IPVS mode keeps its load balancing in IPVS, not in these chains.
    if rules.tables.iter().any(|t| {
        t.chains.contains_key("KUBE-LOAD-BALANCER") || t.chains.contains_key("KUBE-NODE-PORT")
    }) {
        notes.push(
            "these look like kube-proxy's IPVS-mode rules: they only mark and filter; the split across endpoints is in IPVS (ipvsadm -Ln on the node), which this walk cannot see"
                .into(),
        );
    }
    if rules.inferred_tables {
        notes.push(
            "the input does not say which table each rule is in; nat and filter were told apart by kube-proxy's conventions"
                .into(),
        );
    }
    let prog = Ipt {
        nat,
        filter,
        nat_start,
        family,
    };
    let (tree, outcomes, mut more) = Walker::new(&prog).run(State::new(p));
    notes.append(&mut more);
    let forced_filter = opts
        .chain
        .as_ref()
        .filter(|c| nat.is_none_or(|t| !t.chains.contains_key(*c)));
    if let Some(c) = forced_filter {
        notes.push(format!(
            "--chain {c} is a filter chain: walked among the filter stages"
        ));
    }
    Ok(Trace {
        packet: p.clone(),
        start: why,
        tree,
        outcomes,
        notes,
    })
}

impl Ipt<'_> {
    /// The filter stages after nat for a state.
    fn filter_stages(&self, st: &State) -> Vec<Stage> {
        let Some(f) = self.filter else {
            return Vec::new();
        };
        let builtin = match st.origin {
            Origin::Node => "OUTPUT",
            Origin::Outside if st.dst_local == Some(true) => "INPUT",
            Origin::Outside => "FORWARD",
        };
        let stage = |chain: &str, policy: Option<&String>| Stage {
            table: "filter".into(),
            label: "filter".into(),
            chain: chain.to_string(),
            prunable: true,
            policy: policy.cloned().unwrap_or_else(|| "ACCEPT".into()),
        };
        if let Some(c) = f.chains.get(builtin) {
            return vec![stage(builtin, c.policy.as_ref())];
        }
        // No built-in chain: kube-proxy's filter chains that the built-in one would enter.
        let names: &[&str] = match builtin {
            "INPUT" => &[
                "KUBE-PROXY-FIREWALL",
                "KUBE-NODEPORTS",
                "KUBE-EXTERNAL-SERVICES",
            ],
            "FORWARD" => &[
                "KUBE-PROXY-FIREWALL",
                "KUBE-EXTERNAL-SERVICES",
                "KUBE-SERVICES",
                "KUBE-FORWARD",
            ],
            _ => &["KUBE-PROXY-FIREWALL", "KUBE-SERVICES"],
        };
        names
            .iter()
            .filter(|n| f.chains.contains_key(**n))
            .map(|n| stage(n, None))
            .collect()
    }
}

impl Program for Ipt<'_> {
    type Rule = Rule;

    fn stage(&self, idx: usize, st: &State) -> Option<Stage> {
        let pre = usize::from(self.nat_start.is_some());
        if idx == 0
            && let (Some(chain), Some(nat)) = (&self.nat_start, self.nat)
        {
            return Some(Stage {
                table: "nat".into(),
                label: "nat".into(),
                chain: chain.clone(),
                prunable: false,
                policy: nat
                    .chains
                    .get(chain)
                    .and_then(|c| c.policy.clone())
                    .unwrap_or_else(|| "ACCEPT".into()),
            });
        }
        self.filter_stages(st)
            .into_iter()
            .nth(idx.checked_sub(pre)?)
    }

    fn rules(&self, table: &str, chain: &str) -> Option<&[Rule]> {
        let t = if table == "nat" {
            self.nat
        } else {
            self.filter
        }?;
        t.chains.get(chain).map(|c| c.rules.as_slice())
    }

    fn eval(&self, _table: &str, rule: &Rule, st: &State) -> Eval {
        eval(rule, st, self.family)
    }

    fn text(&self, rule: &Rule) -> String {
        rule.text.clone()
    }

    fn comment(&self, rule: &Rule) -> Option<String> {
        rule.comment.clone()
    }

    fn is_masq_chain(&self, chain: &str) -> bool {
        chain == "KUBE-MARK-MASQ"
    }
}

enum Tri {
    Yes,
    No,
    Maybe(Assumption, Assumption),
}

fn maybe(yes: String, no: String, fact: Option<(Fact, Fact)>) -> Tri {
    let (a, b) = engine::undecided(yes, no, fact);
    Tri::Maybe(a, b)
}

fn bool_tri(b: bool) -> Tri {
    if b { Tri::Yes } else { Tri::No }
}

fn eval_match(m: &Match, st: &State, notes: &mut Vec<String>) -> Tri {
    match m {
        Match::Source { negated, net } => match st.src_in(net) {
            Some(inside) => bool_tri(inside != *negated),
            None => {
                let (yes, no) = if *negated {
                    (
                        format!("the source is not in {net}"),
                        format!("the source is in {net}"),
                    )
                } else {
                    (
                        format!("the source is in {net}"),
                        format!("the source is not in {net}"),
                    )
                };
                maybe(
                    yes,
                    no,
                    Some((Fact::Src(*net, !negated), Fact::Src(*net, *negated))),
                )
            }
        },
        Match::Destination { negated, net } => bool_tri(net.contains(&st.dst) != *negated),
        Match::Protocol { negated, proto } => {
            let is = match proto {
                ProtoMatch::All => true,
                ProtoMatch::Is(p) => *p == st.proto,
                ProtoMatch::Other(_) => false,
            };
            bool_tri(is != *negated)
        }
        Match::InInterface { negated, name } => maybe(
            format!(
                "it arrives on {}{name}",
                if *negated {
                    "an interface other than "
                } else {
                    ""
                }
            ),
            format!(
                "it does not arrive on {}{name}",
                if *negated {
                    "an interface other than "
                } else {
                    ""
                }
            ),
            None,
        ),
        Match::OutInterface { negated, name } => maybe(
            format!(
                "it leaves through {}{name}",
                if *negated {
                    "an interface other than "
                } else {
                    ""
                }
            ),
            format!(
                "it does not leave through {}{name}",
                if *negated {
                    "an interface other than "
                } else {
                    ""
                }
            ),
            None,
        ),
        Match::DestinationPort { negated, ports } => bool_tri(ports.contains(st.port) != *negated),
        Match::SourcePort { negated, ports } => maybe(
            format!(
                "the source port is {}in {ports}",
                if *negated { "not " } else { "" }
            ),
            format!(
                "the source port is {}in {ports}",
                if *negated { "" } else { "not " }
            ),
            None,
        ),
        Match::AddrType { src, dst } => {
            let mut out = Tri::Yes;
            if let Some(t) = src {
                let local = st.origin == Origin::Node;
                let is = if t.types.iter().all(|x| x == "LOCAL") {
                    local
                } else {
                    !local && t.types.iter().any(|x| x == "UNICAST")
                };
                if is == t.negated {
                    return Tri::No;
                }
            }
            if let Some(t) = dst {
                if t.types.iter().all(|x| x == "LOCAL") {
                    out = match st.dst_local {
                        Some(l) => bool_tri(l != t.negated),
                        None => {
                            let ip = st.dst;
                            let (yes, no) = (
                                format!("{ip} is an address of this node"),
                                format!("{ip} is not an address of this node"),
                            );
                            let (yes, no) = if t.negated { (no, yes) } else { (yes, no) };
                            maybe(
                                yes,
                                no,
                                Some((Fact::DstLocal(!t.negated), Fact::DstLocal(t.negated))),
                            )
                        }
                    };
                } else {
                    out = maybe(
                        format!("the destination's address type is {}", t.types.join(",")),
                        format!(
                            "the destination's address type is not {}",
                            t.types.join(",")
                        ),
                        None,
                    );
                }
            }
            out
        }
        Match::Statistic(_) => Tri::Yes,
        Match::Mark {
            negated,
            value,
            mask,
        } => {
            let without = ((st.mark & mask) == *value) != *negated;
            let with = (((st.mark | MASQ_MARK) & mask) == *value) != *negated;
            if st.mark_uncertain && with != without {
                // Only a conditional masquerade mark could change the answer; following both
                // ways would double every path for a rule that only accepts early.
                notes.push(format!(
                    "mark {value:#x}/{mask:#x} tested without the conditional masquerade mark"
                ));
            }
            bool_tri(without)
        }
        Match::CtState { negated, states } => {
            let is = states
                .iter()
                .any(|s| s == "NEW" || (s == "DNAT" && st.dnat.is_some()));
            bool_tri(is != *negated)
        }
        Match::Recent {
            mode,
            name,
            seconds,
        } => match mode {
            RecentMode::Check => {
                notes.push(format!(
                    "session affinity: a client seen in the last {} s goes back to {} instead of the split shown",
                    seconds.map_or("?".to_string(), |s| s.to_string()),
                    name.as_deref().unwrap_or("its endpoint")
                ));
                Tri::No
            }
            RecentMode::Set | RecentMode::Remove => Tri::Yes,
        },
        Match::Always(_) => Tri::Yes,
        Match::Unknown(text) => maybe(
            format!("`{text}` matches"),
            format!("`{text}` does not match"),
            None,
        ),
    }
}

/// A condition in iptables' own syntax, for display (`None` for those shown otherwise).
fn describe(m: &Match) -> Option<String> {
    let bang = |n: bool| if n { "! " } else { "" };
    Some(match m {
        Match::Source { negated, net } => format!("{}-s {net}", bang(*negated)),
        Match::Destination { negated, net } => format!("{}-d {net}", bang(*negated)),
        Match::Protocol { negated, proto } => match proto {
            ProtoMatch::All => return None,
            ProtoMatch::Is(p) => format!("{}-p {}", bang(*negated), p.as_str()),
            ProtoMatch::Other(o) => format!("{}-p {o}", bang(*negated)),
        },
        Match::InInterface { negated, name } => format!("{}-i {name}", bang(*negated)),
        Match::OutInterface { negated, name } => format!("{}-o {name}", bang(*negated)),
        Match::DestinationPort { negated, ports } => format!("{}--dport {ports}", bang(*negated)),
        Match::SourcePort { negated, ports } => format!("{}--sport {ports}", bang(*negated)),
        Match::AddrType { src, dst } => {
            let mut parts = Vec::new();
            if let Some(t) = src {
                parts.push(format!(
                    "{}--src-type {}",
                    bang(t.negated),
                    t.types.join(",")
                ));
            }
            if let Some(t) = dst {
                parts.push(format!(
                    "{}--dst-type {}",
                    bang(t.negated),
                    t.types.join(",")
                ));
            }
            parts.join(" ")
        }
        Match::Mark {
            negated,
            value,
            mask,
        } => format!("{}--mark {value:#x}/{mask:#x}", bang(*negated)),
        Match::CtState { negated, states } => {
            format!("{}--ctstate {}", bang(*negated), states.join(","))
        }
        Match::Statistic(_) | Match::Recent { .. } | Match::Always(_) => return None,
        Match::Unknown(t) => t.clone(),
    })
}

/// What one rule does to one path.
pub(super) fn eval(rule: &Rule, st: &State, family: Family) -> Eval {
    let mut ev = Eval::default();
    if rule.family.is_some_and(|f| f != family) {
        ev.branches.push(engine::Branch::all(Next::NoMatch));
        return ev;
    }
    let mut undecided = Vec::new();
    let mut p = 1.0f64;
    let mut chance = None;
    for m in &rule.matches {
        if let Match::Statistic(s) = m {
            p *= s.fraction();
            chance = Some(match s {
                crate::rules::Statistic::Random { probability } => {
                    format!("statistic random {probability}")
                }
                crate::rules::Statistic::Nth { every } => format!("statistic nth every {every}"),
            });
        }
        match eval_match(m, st, &mut ev.notes) {
            Tri::Yes => ev.matched.extend(describe(m)),
            Tri::No => {
                ev.branches.push(engine::Branch::all(Next::NoMatch));
                return ev;
            }
            Tri::Maybe(a, b) => undecided.push((a, b)),
        }
    }
    if rule.matches.iter().any(|m| matches!(m, Match::Unknown(_))) {
        ev.notes.push(format!(
            "line {}: a match the walker does not understand; both ways are followed",
            rule.line
        ));
    }
    let (effects, next, action) = match &rule.target {
        Target::None => (Vec::new(), Next::Continue, Some(Action::Nothing)),
        Target::Jump(c) => (Vec::new(), Next::Jump(c.clone()), None),
        Target::Goto(c) => (Vec::new(), Next::Goto(c.clone()), None),
        Target::Accept => (Vec::new(), Next::Accept, Some(Action::Accept)),
        Target::Drop => (Vec::new(), Next::Drop, None),
        Target::Reject(_) => (Vec::new(), Next::Reject, None),
        Target::Return => (Vec::new(), Next::Return, None),
        Target::Dnat(to) => {
            let ep = Endpoint::parse(to);
            let a = Action::Dnat(ep.to_string());
            (vec![Effect::Dnat(ep)], Next::Accept, Some(a))
        }
        Target::Snat(_) | Target::Masquerade => (Vec::new(), Next::Accept, Some(Action::Snat)),
        Target::Mark(op) => {
            let sets_masq = match op {
                MarkOp::Or { value } | MarkOp::SetXmark { value, .. } => value & MASQ_MARK != 0,
                _ => false,
            };
            if sets_masq {
                (vec![Effect::Masq], Next::Continue, Some(Action::MarkMasq))
            } else {
                (
                    vec![Effect::Mark(*op)],
                    Next::Continue,
                    Some(Action::Mark(format!("{op:?}"))),
                )
            }
        }
        Target::Other(_) => (Vec::new(), Next::Continue, Some(Action::Nothing)),
    };
    // A jump to the masquerade chain is a masquerade effect for the fork rule.
    let (effects, next) = match &next {
        Next::Jump(c) if c == "KUBE-MARK-MASQ" => (vec![Effect::Masq], Next::Continue),
        _ => (effects, next),
    };
    let action = if effects == [Effect::Masq] {
        Some(Action::MarkMasq)
    } else {
        action
    };
    ev.branches = engine::fork(
        undecided,
        vec![Opt {
            weight: p,
            chance,
            effects,
            next,
            action,
        }],
    );
    ev
}
