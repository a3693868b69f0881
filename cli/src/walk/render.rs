//! A [`Trace`] as readable text: the path as an indented tree with each step's share of the
//! traffic, then where the traffic ends, grouped by what the walker assumed. Pure string
//! building; JSON output is the serde form of the trace.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Action, Fate, Hit, Outcome, Trace, Visit};

/// Percent with one decimal; shares that are not 0 never print as 0.
pub fn pct(share: f64) -> String {
    let p = share * 100.0;
    if p > 0.0 && p < 0.05 {
        "<0.1%".into()
    } else {
        format!("{p:.1}%")
    }
}

fn action(h: &Hit) -> String {
    match &h.action {
        Action::Jump(c) => format!("jump {c}"),
        Action::Goto(c) => format!("goto {c}"),
        Action::MarkMasq => "mark for masquerade (SNAT will happen)".into(),
        Action::MarkMasqIf(c) => format!("mark for masquerade if {}", c.join(" and ")),
        Action::Mark(m) => format!("mark {m}"),
        Action::Dnat(to) => format!("DNAT to {to}"),
        Action::Accept => "ACCEPT".into(),
        Action::Drop => "DROP".into(),
        Action::Reject => "REJECT".into(),
        Action::Return => "RETURN".into(),
        Action::Nothing => "matches (no action)".into(),
        Action::Snat => "SNAT".into(),
    }
}

/// One line for an outcome.
pub fn fate(o: &Outcome) -> String {
    match &o.fate {
        Fate::Delivered { to } => format!("delivered to {to}, {}", o.snat.describe()),
        Fate::NotTranslated => {
            "not translated: no kube-proxy rule took it; it goes on to its original destination"
                .into()
        }
        Fate::Dropped { chain, reason } => match reason {
            Some(r) => format!("dropped in {chain}: {r}"),
            None => format!("dropped in {chain}"),
        },
        Fate::Rejected { chain, reason } => match reason {
            Some(r) => format!("rejected in {chain}: {r}"),
            None => format!("rejected in {chain}"),
        },
        Fate::MissingChain { chain, hint } => match hint {
            Some(h) => {
                format!("enters {chain}, which is not in the input (its jump's comment names {h})")
            }
            None => format!("enters {chain}, which is not in the input"),
        },
        Fate::Cut { why } => format!("walk cut: {why}"),
    }
}

fn visit(out: &mut String, t: &Trace, v: &Visit, depth: usize, header: bool) {
    let pad = "  ".repeat(depth);
    if header {
        let _ = writeln!(out, "{pad}{} {}", v.table, v.chain);
    }
    for n in &v.notes {
        let _ = writeln!(out, "{pad}  note: {n}");
    }
    for h in &v.hits {
        let mut line = format!("{pad}  {:>6}  {}", pct(h.share), action(h));
        if !h.matched.is_empty() {
            let _ = write!(line, "  when {}", h.matched);
        }
        if let Some(c) = &h.chance {
            let _ = write!(line, "  [{c}]");
        }
        if !h.assuming.is_empty() {
            let _ = write!(line, "  [if {}]", h.assuming.join("; "));
        }
        if let Some(c) = &h.comment {
            let _ = write!(line, "  /* {c} */");
        }
        let _ = writeln!(out, "{line}");
        if let Some(child) = &h.into {
            visit(out, t, child, depth + 2, true);
        }
        for n in &h.then {
            visit(out, t, n, depth + 2, true);
        }
        for &o in &h.outcomes {
            if let Some(o) = t.outcomes.get(o) {
                let _ = writeln!(out, "{pad}          => {}", fate(o));
            }
        }
    }
    if let Some(e) = &v.end {
        let _ = writeln!(out, "{pad}  {:>6}  end of chain: {}", pct(e.share), e.what);
        for n in &e.then {
            visit(out, t, n, depth + 2, true);
        }
        for &o in &e.outcomes {
            if let Some(o) = t.outcomes.get(o) {
                let _ = writeln!(out, "{pad}          => {}", fate(o));
            }
        }
    }
}

/// The trace as text.
pub fn text(t: &Trace) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Packet: {}", t.packet);
    let _ = writeln!(out, "Start:  {}", t.start);
    out.push('\n');
    for v in &t.tree {
        visit(&mut out, t, v, 0, true);
    }
    out.push('\n');
    let _ = writeln!(out, "Where the traffic goes:");
    // Group by assumptions, in first-seen order.
    let mut groups: BTreeMap<usize, (Vec<String>, Vec<&Outcome>)> = BTreeMap::new();
    let mut order: Vec<Vec<String>> = Vec::new();
    for o in &t.outcomes {
        let i = match order.iter().position(|a| *a == o.assuming) {
            Some(i) => i,
            None => {
                order.push(o.assuming.clone());
                order.len() - 1
            }
        };
        groups
            .entry(i)
            .or_insert_with(|| (o.assuming.clone(), Vec::new()))
            .1
            .push(o);
    }
    for (assuming, outs) in groups.values() {
        let indent = if assuming.is_empty() {
            "  "
        } else {
            let _ = writeln!(out, "  if {}:", assuming.join("; "));
            "    "
        };
        // Merge outcomes with the same end (a DNAT target reached along two paths).
        let mut merged: Vec<(String, f64)> = Vec::new();
        for o in outs {
            let f = fate(o);
            match merged.iter_mut().find(|(m, _)| *m == f) {
                Some((_, s)) => *s += o.share,
                None => merged.push((f, o.share)),
            }
        }
        for (f, s) in merged {
            let _ = writeln!(out, "{indent}{:>6}  {f}", pct(s));
        }
    }
    if !t.notes.is_empty() {
        out.push('\n');
        let _ = writeln!(out, "Notes:");
        for n in &t.notes {
            let _ = writeln!(out, "  - {n}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_never_hide_small_shares() {
        assert_eq!(pct(1.0), "100.0%");
        assert_eq!(pct(1.0 / 3.0), "33.3%");
        assert_eq!(pct(0.0001), "<0.1%");
        assert_eq!(pct(0.0), "0.0%");
    }
}
