//! The traversal shared by the iptables and nftables walkers: paths as [`State`]s flowing through
//! stages (hooks) and chains, forked by each rule's [`Eval`], recorded as the [`Visit`] tree and
//! [`Outcome`]s. The two front ends only say which stages exist and what one rule does to one
//! state ([`Program`]).
//!
//! Owns the bounds: depth, number of visits, shares that vanish. Decides nothing about rule
//! syntax.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::{
    Action, End, Endpoint, Fate, Hit, MAX_DEPTH, MAX_VISITS, Origin, Outcome, Packet, Snat, Visit,
};
use crate::rules::{MarkOp, Net, Proto};

/// Branches with a smaller share are not followed (a probability of 0 in the rules).
const MIN_SHARE: f64 = 1e-12;
/// kube-proxy's masquerade bit (`--masquerade-bit` 14).
pub(crate) const MASQ_MARK: u32 = 0x4000;

/// A fact the walker assumed on a branch, so later conditions on the same thing agree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fact {
    /// The destination is (not) an address of the node.
    DstLocal(bool),
    /// The source is (not) in the network.
    Src(Net, bool),
}

/// What a branch assumes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Assumption {
    /// In words.
    pub text: String,
    /// The fact, when the walker can use it later.
    pub fact: Option<Fact>,
}

/// A change a matching rule makes to the packet.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Effect {
    /// Masquerade mark.
    Masq,
    /// Masquerade mark only if these conditions (undecided) hold.
    MasqIf(Vec<String>),
    /// Another mark change.
    Mark(MarkOp),
    /// New destination.
    Dnat(Endpoint),
    /// Why the path goes on as it does (shown if it ends in a drop or reject).
    Reason(String),
}

/// Where a branch goes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Next {
    /// The rule does not apply to this branch.
    NoMatch,
    /// It applies, and the chain goes on.
    Continue,
    /// Into a chain and back.
    Jump(String),
    /// Into a chain, not back.
    Goto(String),
    /// Accepted: the stage ends (DNAT and SNAT also end it).
    Accept,
    /// Dropped.
    Drop,
    /// Rejected.
    Reject,
    /// Back to the calling chain.
    Return,
}

/// One way a rule can go for a state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Branch {
    /// Fraction of the state's traffic (with the assumptions, not counted in the fraction).
    pub weight: f64,
    /// What this branch assumes.
    pub assume: Vec<Assumption>,
    /// How chance chose it, for the output.
    pub chance: Option<String>,
    /// Changes to the packet.
    pub effects: Vec<Effect>,
    /// Where it goes.
    pub next: Next,
    /// What to show for the action when it is not implied by `next` and `effects`.
    pub action: Option<Action>,
}

impl Branch {
    /// A branch of the whole state with no assumption.
    pub fn all(next: Next) -> Self {
        Self {
            weight: 1.0,
            assume: Vec::new(),
            chance: None,
            effects: Vec::new(),
            next,
            action: None,
        }
    }
}

/// What a rule does to a state: its branches (covering all of it) and remarks.
#[derive(Debug, Default)]
pub(crate) struct Eval {
    /// The branches.
    pub branches: Vec<Branch>,
    /// Remarks for the visit.
    pub notes: Vec<String>,
    /// The conditions that held, for display.
    pub matched: Vec<String>,
}

/// A path in flight.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct State {
    /// Current destination (after any DNAT).
    pub dst: IpAddr,
    /// Current destination port.
    pub port: u16,
    /// Protocol.
    pub proto: Proto,
    /// Source, when known.
    pub src: Option<IpAddr>,
    /// Origin.
    pub origin: Origin,
    /// Whether the current destination is local, when known or assumed.
    pub dst_local: Option<bool>,
    /// Assumed facts about the source.
    pub src_facts: Vec<(Net, bool)>,
    /// Share of the traffic.
    pub share: f64,
    /// Assumptions so far, in words.
    pub assuming: Vec<String>,
    /// Masquerade.
    pub snat: Snat,
    /// Packet mark.
    pub mark: u32,
    /// Whether the mark is only conditionally set (then mark matches cannot be decided).
    pub mark_uncertain: bool,
    /// DNAT so far.
    pub dnat: Option<Endpoint>,
    /// Chains entered.
    pub path: Vec<String>,
    /// Why the path went where it goes, when a lookup said so (an nft map element's comment).
    pub reason: Option<String>,
}

impl State {
    /// The first state of a walk.
    pub fn new(p: &Packet) -> Self {
        Self {
            dst: p.dst,
            port: p.port,
            proto: p.proto,
            src: p.src,
            origin: p.origin,
            dst_local: p.dst_local,
            src_facts: Vec::new(),
            share: 1.0,
            assuming: Vec::new(),
            snat: Snat::No,
            mark: 0,
            mark_uncertain: false,
            dnat: None,
            path: Vec::new(),
            reason: None,
        }
    }

    /// Whether the source is in `net`: known, assumed, or `None`.
    pub fn src_in(&self, net: &Net) -> Option<bool> {
        if let Some(s) = self.src {
            return Some(net.contains(&s));
        }
        if net.is_any() {
            return Some(true);
        }
        for (n, inside) in &self.src_facts {
            if n.family() != net.family() {
                continue;
            }
            // Inside a network that lies within `net`: inside `net` too.
            if *inside && net.len <= n.len && net.contains(&n.addr) {
                return Some(true);
            }
            // Outside a network that contains `net`: outside `net` too.
            if !*inside && n.len <= net.len && n.contains(&net.addr) {
                return Some(false);
            }
        }
        None
    }

    fn apply(&mut self, e: &Effect) {
        match e {
            Effect::Masq => {
                self.snat = Snat::Yes;
                self.mark |= MASQ_MARK;
            }
            Effect::MasqIf(c) => match &mut self.snat {
                // Already marked: the condition changes nothing.
                Snat::Yes => {}
                Snat::No => {
                    self.snat = Snat::If(vec![c.join(" and ")]);
                    self.mark_uncertain = true;
                }
                Snat::If(alts) => alts.push(c.join(" and ")),
            },
            Effect::Mark(op) => self.mark = op.apply(self.mark),
            Effect::Dnat(to) => {
                if let Some(ip) = to.ip {
                    if ip != self.dst {
                        // Service endpoints are pods or other nodes: not this node's address.
                        self.dst_local = Some(false);
                    }
                    self.dst = ip;
                }
                if let Some(p) = to.port {
                    self.port = p;
                }
                self.dnat = Some(to.clone());
            }
            Effect::Reason(r) => self.reason = Some(r.clone()),
        }
    }

    fn assume(&mut self, a: &Assumption) {
        self.assuming.push(a.text.clone());
        match &a.fact {
            Some(Fact::DstLocal(b)) => self.dst_local = Some(*b),
            Some(Fact::Src(n, b)) => self.src_facts.push((*n, *b)),
            None => {}
        }
    }
}

/// One stage: a base chain the packet passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stage {
    /// Key of the table for [`Program::rules`].
    pub table: String,
    /// The label shown (`nat`, `filter`, `ip kube-proxy`).
    pub label: String,
    /// The chain.
    pub chain: String,
    /// A filter stage: left out of the tree when nothing in it changes the path.
    pub prunable: bool,
    /// What falling off the end means: `ACCEPT` or `DROP`.
    pub policy: String,
}

/// What the walker needs from a rule language.
pub(crate) trait Program {
    /// A rule.
    type Rule;
    /// The stage at `idx` for a state that passed the earlier ones, if any.
    fn stage(&self, idx: usize, st: &State) -> Option<Stage>;
    /// A chain's rules, `None` when the input lacks the chain.
    fn rules(&self, table: &str, chain: &str) -> Option<&[Self::Rule]>;
    /// What a rule does to a state.
    fn eval(&self, table: &str, rule: &Self::Rule, st: &State) -> Eval;
    /// The rule for display.
    fn text(&self, rule: &Self::Rule) -> String;
    /// The rule's comment.
    fn comment(&self, rule: &Self::Rule) -> Option<String>;
    /// A chain that only sets the masquerade mark (entered, it is shown as one step).
    fn is_masq_chain(&self, chain: &str) -> bool;
    /// Why a drop or reject in `chain` happens, when the chain's name says and the rule does not.
    fn drop_reason(&self, _chain: &str) -> Option<String> {
        None
    }
}

/// The traversal.
pub(crate) struct Walker<'a, P: Program> {
    prog: &'a P,
    outcomes: Vec<Outcome>,
    visits: usize,
    notes: BTreeSet<String>,
}

impl<'a, P: Program> Walker<'a, P> {
    /// A walker over `prog`.
    pub fn new(prog: &'a P) -> Self {
        Self {
            prog,
            outcomes: Vec::new(),
            visits: 0,
            notes: BTreeSet::new(),
        }
    }

    /// Walks `st` through every stage; returns the tree, the outcomes and notes.
    pub fn run(mut self, st: State) -> (Vec<Visit>, Vec<Outcome>, Vec<String>) {
        let (visits, loose) = self.stage(0, st);
        if visits.is_empty() && !loose.is_empty() {
            self.notes.insert(
                "no stage changed the packet: it passes kube-proxy's rules untouched".into(),
            );
        }
        (visits, self.outcomes, self.notes.into_iter().collect())
    }

    fn outcome(&mut self, st: &State, fate: Fate) -> usize {
        self.outcomes.push(Outcome {
            share: st.share,
            assuming: st.assuming.clone(),
            path: st.path.clone(),
            fate,
            snat: st.snat.clone(),
        });
        self.outcomes.len() - 1
    }

    fn finish(&mut self, st: &State) -> usize {
        let fate = match &st.dnat {
            Some(to) => Fate::Delivered { to: to.clone() },
            None => Fate::NotTranslated,
        };
        self.outcome(st, fate)
    }

    /// Runs stage `idx` for `st`; returns the visits to show and outcomes not inside them.
    fn stage(&mut self, idx: usize, st: State) -> (Vec<Visit>, Vec<usize>) {
        let Some(stage) = self.prog.stage(idx, &st) else {
            let o = self.finish(&st);
            return (Vec::new(), vec![o]);
        };
        if self.prog.rules(&stage.table, &stage.chain).is_none() {
            return self.stage(idx + 1, st);
        }
        let mut visit = Visit {
            table: stage.label.clone(),
            chain: stage.chain.clone(),
            hits: Vec::new(),
            end: None,
            notes: Vec::new(),
        };
        let mut st = st;
        st.path.push(stage.chain.clone());
        let returned = self.chain(&mut visit, &stage, &stage.chain, st, 0, idx);
        let total: f64 = returned.iter().map(|s| s.share).sum();
        if total > MIN_SHARE {
            let mut end = End {
                share: total,
                what: format!("policy {}", stage.policy),
                then: Vec::new(),
                outcomes: Vec::new(),
            };
            for r in returned {
                if stage.policy.eq_ignore_ascii_case("drop") {
                    let o = self.outcome(
                        &r,
                        Fate::Dropped {
                            chain: stage.chain.clone(),
                            reason: Some("the chain's policy is DROP".into()),
                        },
                    );
                    end.outcomes.push(o);
                } else {
                    let (v, o) = self.stage(idx + 1, r);
                    end.then.extend(v);
                    end.outcomes.extend(o);
                }
            }
            visit.end = Some(end);
        }
        if stage.prunable && !self.interesting(&visit) {
            let mut visits = Vec::new();
            let mut outs = Vec::new();
            hoist(visit, &mut visits, &mut outs);
            return (visits, outs);
        }
        if stage.prunable {
            prune_noop(&mut visit);
        }
        (vec![visit], Vec::new())
    }

    /// Whether a visit shows anything beyond letting the packet through.
    fn interesting(&self, v: &Visit) -> bool {
        let fate_matters = |i: &usize| {
            self.outcomes
                .get(*i)
                .is_some_and(|o| !matches!(o.fate, Fate::Delivered { .. } | Fate::NotTranslated))
        };
        v.hits.iter().any(|h| {
            !h.assuming.is_empty()
                || !matches!(
                    h.action,
                    Action::Jump(_)
                        | Action::Goto(_)
                        | Action::Accept
                        | Action::Return
                        | Action::Nothing
                        | Action::MarkMasq
                        | Action::MarkMasqIf(_)
                        | Action::Mark(_)
                )
                || h.outcomes.iter().any(fate_matters)
                || h.into.as_ref().is_some_and(|c| self.interesting(c))
        }) || v
            .end
            .as_ref()
            .is_some_and(|e| e.outcomes.iter().any(fate_matters))
    }

    /// Walks chain `name` for `st`; returns the states that come back to the caller.
    fn chain(
        &mut self,
        visit: &mut Visit,
        stage: &Stage,
        name: &str,
        st: State,
        depth: usize,
        idx: usize,
    ) -> Vec<State> {
        self.visits += 1;
        let prog = self.prog;
        let Some(rules) = prog.rules(&stage.table, name) else {
            return vec![st];
        };
        let mut returned = Vec::new();
        let mut live = vec![st];
        for rule in rules {
            if live.is_empty() {
                break;
            }
            let mut next_live = Vec::new();
            for s in live {
                let ev = prog.eval(&stage.table, rule, &s);
                for n in ev.notes {
                    if !visit.notes.contains(&n) {
                        visit.notes.push(n);
                    }
                }
                for br in ev.branches {
                    let mut s2 = s.clone();
                    s2.share *= br.weight;
                    if s2.share <= MIN_SHARE {
                        continue;
                    }
                    for a in &br.assume {
                        s2.assume(a);
                    }
                    if br.next == Next::NoMatch {
                        next_live.push(s2);
                        continue;
                    }
                    for e in &br.effects {
                        s2.apply(e);
                    }
                    let mut hit = Hit {
                        share: s2.share,
                        assuming: br.assume.iter().map(|a| a.text.clone()).collect(),
                        chance: br.chance.clone(),
                        rule: prog.text(rule),
                        comment: prog.comment(rule),
                        matched: ev.matched.join(" "),
                        action: br.action.clone().unwrap_or(Action::Nothing),
                        into: None,
                        then: Vec::new(),
                        outcomes: Vec::new(),
                    };
                    let effect_action = br.effects.iter().find_map(|e| match e {
                        Effect::Masq | Effect::MasqIf(_) => Some(Action::MarkMasq),
                        Effect::Mark(op) => Some(Action::Mark(format!("{op:?}"))),
                        Effect::Dnat(to) => Some(Action::Dnat(to.to_string())),
                        Effect::Reason(_) => None,
                    });
                    match br.next {
                        Next::NoMatch => {}
                        Next::Continue => {
                            if br.action.is_none() {
                                hit.action = effect_action.unwrap_or(Action::Nothing);
                            }
                            next_live.push(s2);
                        }
                        Next::Jump(ref c) | Next::Goto(ref c) => {
                            let goto = matches!(br.next, Next::Goto(_));
                            hit.action = if goto {
                                Action::Goto(c.clone())
                            } else {
                                Action::Jump(c.clone())
                            };
                            if prog.is_masq_chain(c) {
                                hit.action = Action::MarkMasq;
                                s2.apply(&Effect::Masq);
                                if goto {
                                    returned.push(s2);
                                } else {
                                    next_live.push(s2);
                                }
                            } else if prog.rules(&stage.table, c).is_none() {
                                s2.path.push(c.clone());
                                let hint = hit.comment.as_deref().and_then(|c| {
                                    c.split_once(" -> ").map(|(_, ep)| ep.trim().to_string())
                                });
                                let o = self.outcome(
                                    &s2,
                                    Fate::MissingChain {
                                        chain: c.clone(),
                                        hint,
                                    },
                                );
                                self.notes.insert(format!(
                                    "chain {c} is entered but not in the input; what happens there is unknown"
                                ));
                                hit.outcomes.push(o);
                            } else if depth + 1 >= crate::walk::MAX_DEPTH
                                || self.visits >= MAX_VISITS
                                || s2.path.iter().filter(|p| *p == c).count() > 1
                            {
                                let why = if self.visits >= MAX_VISITS {
                                    format!("more than {MAX_VISITS} chain visits")
                                } else if depth + 1 >= MAX_DEPTH {
                                    format!("chains nested deeper than {MAX_DEPTH}")
                                } else {
                                    format!("chain {c} entered again (a loop)")
                                };
                                let o = self.outcome(&s2, Fate::Cut { why: why.clone() });
                                self.notes.insert(format!("walk cut: {why}"));
                                hit.outcomes.push(o);
                            } else {
                                s2.path.push(c.clone());
                                let mut child = Visit {
                                    table: visit.table.clone(),
                                    chain: c.clone(),
                                    hits: Vec::new(),
                                    end: None,
                                    notes: Vec::new(),
                                };
                                let back = self.chain(&mut child, stage, c, s2, depth + 1, idx);
                                hit.into = Some(Box::new(child));
                                if goto {
                                    returned.extend(back);
                                } else {
                                    next_live.extend(back);
                                }
                            }
                        }
                        Next::Accept => {
                            if br.action.is_none() {
                                hit.action = effect_action.unwrap_or(Action::Accept);
                            }
                            let (v, o) = self.stage(idx + 1, s2);
                            hit.then = v;
                            hit.outcomes = o;
                        }
                        Next::Drop | Next::Reject => {
                            let reject = br.next == Next::Reject;
                            hit.action = if reject { Action::Reject } else { Action::Drop };
                            let reason = hit
                                .comment
                                .clone()
                                .or_else(|| s2.reason.clone())
                                .or_else(|| prog.drop_reason(name));
                            let fate = if reject {
                                Fate::Rejected {
                                    chain: name.to_string(),
                                    reason,
                                }
                            } else {
                                Fate::Dropped {
                                    chain: name.to_string(),
                                    reason,
                                }
                            };
                            let o = self.outcome(&s2, fate);
                            hit.outcomes.push(o);
                        }
                        Next::Return => {
                            hit.action = Action::Return;
                            returned.push(s2);
                        }
                    }
                    visit.hits.push(hit);
                }
            }
            live = next_live;
        }
        if depth > 0 {
            let back: f64 = live.iter().map(|s| s.share).sum();
            if back > MIN_SHARE && visit.hits.is_empty() {
                visit
                    .notes
                    .push("no rule matched; back to the calling chain".into());
            }
        }
        returned.extend(live);
        returned
    }
}

/// Drops jumps into chains where nothing matched (filter stages only: there they are noise).
fn prune_noop(v: &mut Visit) {
    v.hits.retain(|h| {
        !(matches!(h.action, Action::Jump(_) | Action::Goto(_))
            && h.assuming.is_empty()
            && h.then.is_empty()
            && h.outcomes.is_empty()
            && h.into
                .as_ref()
                .is_some_and(|c| c.hits.is_empty() && c.end.is_none()))
    });
    for h in &mut v.hits {
        if let Some(c) = h.into.as_mut() {
            prune_noop(c);
        }
    }
}

/// The next-stage visits and outcomes inside a visit left out of the tree.
fn hoist(v: Visit, visits: &mut Vec<Visit>, outs: &mut Vec<usize>) {
    for h in v.hits {
        visits.extend(h.then);
        outs.extend(h.outcomes);
        if let Some(c) = h.into {
            hoist(*c, visits, outs);
        }
    }
    if let Some(e) = v.end {
        visits.extend(e.then);
        outs.extend(e.outcomes);
    }
}

/// One way a matching rule can go, before the undecided conditions are applied.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Opt {
    /// Fraction chosen by chance (1 when no chance is involved).
    pub weight: f64,
    /// How chance chose it.
    pub chance: Option<String>,
    /// Changes to the packet.
    pub effects: Vec<Effect>,
    /// Where it goes.
    pub next: Next,
    /// What to show, when not implied.
    pub action: Option<Action>,
}

impl Opt {
    /// The whole matching traffic goes `next`.
    pub fn all(effects: Vec<Effect>, next: Next) -> Self {
        Self {
            weight: 1.0,
            chance: None,
            effects,
            next,
            action: None,
        }
    }
}

/// The branches of a rule whose undecided conditions are `undecided` (each with its
/// assumptions when true and when false) and which, when its conditions hold, goes one of
/// `options` (their weights summing to at most 1; the rest does not match). A rule whose only
/// effect is the masquerade mark does not fork on undecided conditions: the mark becomes
/// conditional.
pub(crate) fn fork(undecided: Vec<(Assumption, Assumption)>, options: Vec<Opt>) -> Vec<Branch> {
    if let [only] = options.as_slice()
        && !undecided.is_empty()
        && only.next == Next::Continue
        && only.weight >= 1.0
        && !only.effects.is_empty()
        && only.effects.iter().all(|e| matches!(e, Effect::Masq))
    {
        let conds: Vec<String> = undecided.iter().map(|(t, _)| t.text.clone()).collect();
        return vec![Branch {
            weight: 1.0,
            assume: Vec::new(),
            chance: None,
            effects: vec![Effect::MasqIf(conds.clone())],
            next: Next::Continue,
            action: Some(Action::MarkMasqIf(conds)),
        }];
    }
    let when_true: Vec<Assumption> = undecided.iter().map(|(t, _)| t.clone()).collect();
    let chosen: f64 = options.iter().map(|o| o.weight).sum();
    let mut out: Vec<Branch> = options
        .into_iter()
        .map(|o| Branch {
            weight: o.weight,
            assume: when_true.clone(),
            chance: o.chance,
            effects: o.effects,
            next: o.next,
            action: o.action,
        })
        .collect();
    if chosen < 1.0 {
        out.push(Branch {
            weight: 1.0 - chosen,
            assume: when_true,
            ..Branch::all(Next::NoMatch)
        });
    }
    if !undecided.is_empty() {
        // With one condition its negation keeps its fact; several are negated as a whole.
        let negation = if let [(_, not)] = undecided.as_slice() {
            vec![not.clone()]
        } else {
            vec![Assumption {
                text: format!(
                    "not all of: {}",
                    undecided
                        .iter()
                        .map(|(t, _)| t.text.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                fact: None,
            }]
        };
        out.push(Branch {
            weight: 1.0,
            assume: negation,
            ..Branch::all(Next::NoMatch)
        });
    }
    out
}

/// The pair of assumptions for an undecided condition.
pub(crate) fn undecided(
    yes: String,
    no: String,
    fact: Option<(Fact, Fact)>,
) -> (Assumption, Assumption) {
    let (fy, fnot) = match fact {
        Some((a, b)) => (Some(a), Some(b)),
        None => (None, None),
    };
    (
        Assumption {
            text: yes,
            fact: fy,
        },
        Assumption {
            text: no,
            fact: fnot,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Net {
        Net::parse(s).expect("net")
    }

    #[test]
    fn assumed_source_facts_decide_later_conditions() {
        let p = Packet::to("198.51.100.100".parse().expect("ip"), 80, Proto::Tcp);
        let mut st = State::new(&p);
        assert_eq!(st.src_in(&net("192.0.2.0/25")), None);
        assert_eq!(st.src_in(&net("0.0.0.0/0")), Some(true));
        st.src_facts.push((net("192.0.2.0/25"), false));
        // Outside the /25: outside any network within it, unknown for wider ones.
        assert_eq!(st.src_in(&net("192.0.2.4/32")), Some(false));
        assert_eq!(st.src_in(&net("192.0.2.0/24")), None);
        let mut st = State::new(&p);
        st.src_facts.push((net("192.0.2.0/25"), true));
        assert_eq!(st.src_in(&net("192.0.2.0/24")), Some(true));
        assert_eq!(st.src_in(&net("192.0.2.4/32")), None);
        assert_eq!(st.src_in(&net("2001:db8::/32")), None);
    }

    #[test]
    fn fork_keeps_the_shares_whole() {
        // A statistic rule: p matches, 1 - p goes on.
        let b = fork(
            Vec::new(),
            vec![Opt {
                weight: 0.25,
                ..Opt::all(Vec::new(), Next::Jump("X".into()))
            }],
        );
        let w: Vec<(f64, bool)> = b
            .iter()
            .map(|b| (b.weight, b.next == Next::NoMatch))
            .collect();
        assert_eq!(w, [(0.25, false), (0.75, true)]);
        // An undecided condition: both ways, each whole, each with its assumption.
        let (yes, no) = undecided("a".into(), "not a".into(), None);
        let b = fork(vec![(yes, no)], vec![Opt::all(Vec::new(), Next::Drop)]);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].weight, b[0].assume[0].text.as_str()), (1.0, "a"));
        assert_eq!((b[1].weight, b[1].assume[0].text.as_str()), (1.0, "not a"));
        // A masquerade mark under an undecided condition does not fork.
        let (yes, no) = undecided("a".into(), "not a".into(), None);
        let b = fork(
            vec![(yes, no)],
            vec![Opt::all(vec![Effect::Masq], Next::Continue)],
        );
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].effects, [Effect::MasqIf(vec!["a".into()])]);
    }
}
