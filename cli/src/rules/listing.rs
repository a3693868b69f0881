//! The listing format of `iptables -t nat -nL [CHAIN]` (and `ip6tables`), with or without `-v`,
//! `-x` and `--line-numbers`: `Chain NAME (…)` headers, a column header row, then one rule per
//! line — target, prot, opt, [in, out,] source, destination, then extras such as
//! `/* comment */ tcp dpt:80`, `statistic mode random probability 0.50000000000`,
//! `ADDRTYPE match dst-type LOCAL`, `mark match 0x4000/0x4000`, `tcp to:192.0.2.2:8080`.
//!
//! The listing does not say which table it shows; each rule's table is inferred from
//! kube-proxy's conventions ([`super::infer_table`]). Columns are found by their content, not by
//! position, because an empty target and ip6tables' empty `opt` column shift them. Extras not
//! understood are kept as [`Match::Unknown`] and reported.

use super::save::{clip, parse_rule_words};
use super::{
    AddrTypes, Format, Issue, Match, Net, Ports, ProtoMatch, RecentMode, Rule, Ruleset, Statistic,
    Table, TableName, infer_table, parse_mark, rule_family,
};

/// Whether `text` looks like a listing: a `Chain X (policy …)` or `Chain X (N references)` line,
/// or a column header row.
pub fn looks_like_listing(text: &str) -> bool {
    text.lines().take(10_000).any(|l| {
        let l = l.trim();
        (l.starts_with("Chain ")
            && l.contains('(')
            && (l.contains("policy") || l.contains("reference")))
            || is_column_header(l)
    })
}

fn is_column_header(l: &str) -> bool {
    let w: Vec<&str> = l.split_whitespace().collect();
    w.contains(&"target")
        && w.contains(&"prot")
        && w.contains(&"source")
        && w.contains(&"destination")
}

/// Parses a listing.
pub fn parse(text: &str) -> Ruleset {
    let mut tables: Vec<Table> = Vec::new();
    let mut issues = Vec::new();
    let mut chain: Option<String> = None;
    let mut cols = Columns::default();
    for (idx, raw) in text.lines().enumerate() {
        let n = idx + 1;
        let line = raw.trim_end();
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if let Some(rest) = t.strip_prefix("Chain ") {
            let name = rest.split_whitespace().next().unwrap_or("").to_string();
            let policy = rest
                .split_once("(policy ")
                .and_then(|(_, p)| p.split([' ', ')']).next())
                .map(str::to_string);
            // A header with no rules still declares the chain; it goes to the table its name
            // implies.
            let table = infer_table(&name, &[], &super::Target::None);
            let tbl = table_mut(&mut tables, table);
            let c = tbl.chains.entry(name.clone()).or_default();
            if policy.is_some() {
                c.policy = policy;
            }
            chain = Some(name);
            continue;
        }
        if is_column_header(t) {
            cols = Columns::from_header(t);
            continue;
        }
        let Some(chain_name) = chain.clone() else {
            issues.push(Issue {
                line: n,
                message: format!("rule outside any 'Chain' section, skipped: {}", clip(t)),
            });
            continue;
        };
        match parse_line(t, &cols) {
            Some((matches, target, comment, unknown)) => {
                for u in unknown {
                    issues.push(Issue {
                        line: n,
                        message: format!("kept as written, not understood: {u}"),
                    });
                }
                let table = infer_table(&chain_name, &matches, &target);
                let family = rule_family(&matches, &target);
                let tbl = table_mut(&mut tables, table);
                tbl.chains.entry(chain_name).or_default().rules.push(Rule {
                    line: n,
                    text: t.to_string(),
                    matches,
                    target,
                    comment,
                    family,
                });
            }
            None => issues.push(Issue {
                line: n,
                message: format!(
                    "not a listing row, skipped (host names instead of addresses? list with -n): {}",
                    clip(t)
                ),
            }),
        }
    }
    for t in &mut tables {
        let mut fams = t
            .chains
            .values()
            .flat_map(|c| c.rules.iter())
            .filter_map(|r| r.family);
        if let Some(first) = fams.next()
            && fams.all(|f| f == first)
        {
            t.family = Some(first);
        }
    }
    let format = if tables.iter().any(|t| !t.chains.is_empty()) {
        Format::Listing
    } else {
        Format::Empty
    };
    Ruleset {
        format,
        tables,
        nft: Vec::new(),
        inferred_tables: true,
        issues,
    }
}

fn table_mut(tables: &mut Vec<Table>, name: TableName) -> &mut Table {
    let i = match tables.iter().position(|t| t.name == name) {
        Some(i) => i,
        None => {
            tables.push(Table::new(name, None));
            tables.len() - 1
        }
    };
    &mut tables[i]
}

/// Which optional columns the header row announced.
#[derive(Debug, Default, Clone, Copy)]
struct Columns {
    num: bool,
    counters: bool,
}

impl Columns {
    fn from_header(h: &str) -> Self {
        let w: Vec<&str> = h.split_whitespace().collect();
        Self {
            num: w.first() == Some(&"num"),
            counters: w.contains(&"pkts"),
        }
    }
}

/// Whether a word is an address column (`0.0.0.0/0`, `!192.0.2.0/25`, `::/0`, and `anywhere`
/// as `iptables -L` without `-n` writes it).
fn address_word(w: &str) -> Option<(bool, Net)> {
    let (neg, w) = match w.strip_prefix('!') {
        Some(r) => (true, r),
        None => (false, w),
    };
    if w == "anywhere" {
        return Net::parse("0.0.0.0/0").map(|n| (neg, n));
    }
    Net::parse(w).map(|n| (neg, n))
}

/// Port names `iptables -L` without `-n` prints (from /etc/services) for ports Services use
/// most; others stay unknown and are reported.
fn port_by_name(name: &str) -> Option<u16> {
    Some(match name {
        "http" | "www" => 80,
        "https" => 443,
        "domain" => 53,
        "http-alt" | "webcache" => 8080,
        "ssh" => 22,
        "smtp" => 25,
        "ntp" => 123,
        "mysql" => 3306,
        "postgresql" => 5432,
        "redis" => 6379,
        "amqp" => 5672,
        "ldap" => 389,
        "ldaps" => 636,
        "imaps" => 993,
        "submission" => 587,
        _ => return None,
    })
}

/// Ports as the listing writes them: numbers, ranges, or names.
fn listing_ports(v: &str) -> Option<Ports> {
    Ports::parse(v).or_else(|| {
        let parts: Option<Vec<String>> = v
            .split(',')
            .map(|p| {
                p.split(':')
                    .map(|x| {
                        port_by_name(x).map_or_else(
                            || x.parse::<u16>().ok().map(|n| n.to_string()),
                            |n| Some(n.to_string()),
                        )
                    })
                    .collect::<Option<Vec<String>>>()
                    .map(|v| v.join(":"))
            })
            .collect();
        Ports::parse(&parts?.join(","))
    })
}

type Parsed = (Vec<Match>, super::Target, Option<String>, Vec<String>);

/// One rule row.
fn parse_line(line: &str, cols: &Columns) -> Option<Parsed> {
    // Words with their byte offsets, so the extras can be cut from the line as written.
    let mut words: Vec<(usize, &str)> = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                words.push((s, &line[s..i]));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        words.push((s, &line[s..]));
    }
    // Source and destination: the first two adjacent address words.
    let src_at = (0..words.len().saturating_sub(1))
        .find(|&i| address_word(words[i].1).is_some() && address_word(words[i + 1].1).is_some())?;
    let (src_neg, src) = address_word(words[src_at].1)?;
    let (dst_neg, dst) = address_word(words[src_at + 1].1)?;
    let extras_at = words.get(src_at + 2).map_or(line.len(), |(off, _)| *off);
    let extras = &line[extras_at..];

    let mut lead: Vec<&str> = words[..src_at].iter().map(|(_, w)| *w).collect();
    if cols.num && !lead.is_empty() {
        lead.remove(0);
    }
    if cols.counters && lead.len() >= 2 {
        lead.drain(..2);
    }
    let mut in_if = None;
    let mut out_if = None;
    if cols.counters && lead.len() >= 2 {
        out_if = lead.pop();
        in_if = lead.pop();
    }
    if matches!(lead.last(), Some(&"--") | Some(&"-f") | Some(&"!f")) {
        lead.pop();
    }
    let prot = lead.pop()?;
    let target_name = lead.pop().unwrap_or("");
    if !lead.is_empty() {
        return None;
    }

    let mut matches = Vec::new();
    let mut unknown = Vec::new();
    let proto = ProtoMatch::parse(prot);
    let (pneg, proto) = match prot.strip_prefix('!') {
        Some(p) => (true, ProtoMatch::parse(p)),
        None => (false, proto),
    };
    if proto != ProtoMatch::All {
        matches.push(Match::Protocol {
            negated: pneg,
            proto,
        });
    }
    for (word, is_in) in [(in_if, true), (out_if, false)] {
        if let Some(w) = word.filter(|w| *w != "*") {
            let (negated, name) = match w.strip_prefix('!') {
                Some(n) => (true, n.to_string()),
                None => (false, w.to_string()),
            };
            matches.push(if is_in {
                Match::InInterface { negated, name }
            } else {
                Match::OutInterface { negated, name }
            });
        }
    }
    if !src.is_any() || src_neg {
        matches.push(Match::Source {
            negated: src_neg,
            net: src,
        });
    }
    if !dst.is_any() || dst_neg {
        matches.push(Match::Destination {
            negated: dst_neg,
            net: dst,
        });
    }

    let (comment, rest) = take_comments(extras);
    let (mut more, target_opts) = parse_extras(&rest, &mut unknown);
    matches.append(&mut more);
    // The target with its options, read by the same code as `-j NAME opts…`.
    let mut words = vec!["-j".to_string(), target_name.to_string()];
    words.extend(target_opts);
    let (_, target, _, mut tu) = parse_rule_words(&words);
    unknown.append(&mut tu);
    Some((matches, target, comment, unknown))
}

/// Cuts every `/* … */` out of the extras; the first is the comment.
fn take_comments(s: &str) -> (Option<String>, String) {
    let mut comment = None;
    let mut rest = String::new();
    let mut s = s;
    while let Some(open) = s.find("/*") {
        rest.push_str(&s[..open]);
        let after = &s[open + 2..];
        match after.find("*/") {
            Some(close) => {
                let c = after[..close].trim().to_string();
                comment.get_or_insert(c);
                s = &after[close + 2..];
            }
            None => {
                comment.get_or_insert(after.trim().to_string());
                s = "";
            }
        }
    }
    rest.push_str(s);
    (comment, rest)
}

/// Words that start an extra this module understands.
const KEYWORDS: [&str; 17] = [
    "tcp",
    "udp",
    "sctp",
    "udplite",
    "multiport",
    "statistic",
    "ADDRTYPE",
    "mark",
    "ctstate",
    "state",
    "recent:",
    "nfacct-name",
    "MARK",
    "reject-with",
    "random-fully",
    "random",
    "!",
];

/// Matches and target options (as `--opt value` words) from the extras.
fn parse_extras(s: &str, unknown: &mut Vec<String>) -> (Vec<Match>, Vec<String>) {
    let w: Vec<&str> = s.split_whitespace().collect();
    let mut matches = Vec::new();
    let mut target = Vec::new();
    let mut i = 0usize;
    let mut neg = false;
    let get = |i: usize| w.get(i).copied();
    while let Some(x) = get(i) {
        i += 1;
        if x == "!" {
            neg = true;
            continue;
        }
        let negated = std::mem::take(&mut neg);
        match x {
            "tcp" | "udp" | "sctp" | "udplite" => {
                // Port options follow: dpt:80, dpts:a:b, spt:, spts:, flags:…
                while let Some(p) = get(i) {
                    let (key, val) = match p.split_once(':') {
                        Some(kv) => kv,
                        None => break,
                    };
                    if !matches!(key, "dpt" | "dpts" | "spt" | "spts" | "flags" | "to") {
                        break;
                    }
                    if key == "to" {
                        // `tcp to:192.0.2.2:8080`: the DNAT target's option.
                        break;
                    }
                    i += 1;
                    let (pneg, val) = match val.strip_prefix('!') {
                        Some(v) => (true, v),
                        None => (false, val),
                    };
                    match (key, listing_ports(val)) {
                        ("dpt" | "dpts", Some(ports)) => matches.push(Match::DestinationPort {
                            negated: pneg,
                            ports,
                        }),
                        ("spt" | "spts", Some(ports)) => matches.push(Match::SourcePort {
                            negated: pneg,
                            ports,
                        }),
                        _ => {
                            let u = format!("{x} {p}");
                            unknown.push(u.clone());
                            matches.push(Match::Unknown(u));
                        }
                    }
                }
            }
            "multiport" => {
                let kind = get(i).unwrap_or("");
                let mut val = get(i + 1).unwrap_or("");
                i += 2;
                let mut pneg = negated;
                if val == "!" {
                    pneg = true;
                    val = get(i).unwrap_or("");
                    i += 1;
                } else if let Some(v) = val.strip_prefix('!') {
                    pneg = true;
                    val = v;
                }
                match (kind, listing_ports(val)) {
                    ("dports", Some(ports)) => matches.push(Match::DestinationPort {
                        negated: pneg,
                        ports,
                    }),
                    ("sports", Some(ports)) => matches.push(Match::SourcePort {
                        negated: pneg,
                        ports,
                    }),
                    _ => {
                        let u = format!("multiport {kind} {val}");
                        unknown.push(u.clone());
                        matches.push(Match::Unknown(u));
                    }
                }
            }
            "statistic" => {
                // statistic mode random probability P | statistic mode nth every N [packet P]
                let mode = if get(i) == Some("mode") {
                    get(i + 1)
                } else {
                    None
                };
                if mode.is_some() {
                    i += 2;
                }
                match mode {
                    Some("random") if get(i) == Some("probability") => {
                        match get(i + 1)
                            .and_then(|p| p.parse::<f64>().ok())
                            .filter(|p| p.is_finite())
                        {
                            Some(probability) => {
                                matches.push(Match::Statistic(Statistic::Random { probability }))
                            }
                            None => {
                                let u =
                                    format!("statistic probability {}", get(i + 1).unwrap_or(""));
                                unknown.push(u.clone());
                                matches.push(Match::Unknown(u));
                            }
                        }
                        i += 2;
                    }
                    Some("nth") if get(i) == Some("every") => {
                        match get(i + 1).and_then(|p| p.parse::<u32>().ok()) {
                            Some(every) => matches.push(Match::Statistic(Statistic::Nth { every })),
                            None => {
                                let u = "statistic nth".to_string();
                                unknown.push(u.clone());
                                matches.push(Match::Unknown(u));
                            }
                        }
                        i += 2;
                        if get(i) == Some("packet") {
                            i += 2;
                        }
                    }
                    _ => {
                        let u = "statistic (mode not understood)".to_string();
                        unknown.push(u.clone());
                        matches.push(Match::Unknown(u));
                    }
                }
            }
            "ADDRTYPE" => {
                if get(i) == Some("match") {
                    i += 1;
                }
                let mut src = None;
                let mut dst = None;
                while let Some(k) = get(i) {
                    let is_src = k == "src-type";
                    if !is_src && k != "dst-type" {
                        if matches!(k, "limit-in" | "limit-out") {
                            i += 1;
                            continue;
                        }
                        break;
                    }
                    let mut v = get(i + 1).unwrap_or("");
                    i += 2;
                    let mut tneg = false;
                    if v == "!" {
                        tneg = true;
                        v = get(i).unwrap_or("");
                        i += 1;
                    } else if let Some(r) = v.strip_prefix('!') {
                        tneg = true;
                        v = r;
                    }
                    let types = AddrTypes {
                        negated: tneg,
                        types: v.split(',').map(str::to_ascii_uppercase).collect(),
                    };
                    if is_src {
                        src = Some(types);
                    } else {
                        dst = Some(types);
                    }
                }
                matches.push(Match::AddrType { src, dst });
            }
            "mark" if get(i) == Some("match") => {
                let mut v = get(i + 1).unwrap_or("");
                i += 2;
                let mut mneg = negated;
                if v == "!" {
                    mneg = true;
                    v = get(i).unwrap_or("");
                    i += 1;
                } else if let Some(r) = v.strip_prefix('!') {
                    mneg = true;
                    v = r;
                }
                match parse_mark(v) {
                    Some((value, mask)) => matches.push(Match::Mark {
                        negated: mneg,
                        value,
                        mask,
                    }),
                    None => {
                        let u = format!("mark match {v}");
                        unknown.push(u.clone());
                        matches.push(Match::Unknown(u));
                    }
                }
            }
            "ctstate" | "state" => {
                let v = get(i).unwrap_or("");
                i += 1;
                matches.push(Match::CtState {
                    negated,
                    states: v.split(',').map(str::to_ascii_uppercase).collect(),
                });
            }
            "recent:" => {
                let mode = match get(i) {
                    Some("SET") => RecentMode::Set,
                    Some("REMOVE") => RecentMode::Remove,
                    _ => RecentMode::Check,
                };
                i += 1;
                let mut name = None;
                let mut seconds = None;
                while let Some(k) = get(i) {
                    match k {
                        "seconds:" => {
                            seconds = get(i + 1).and_then(|v| v.parse().ok());
                            i += 2;
                        }
                        "name:" => {
                            name = get(i + 1).map(str::to_string);
                            i += 2;
                        }
                        "side:" | "mask:" | "hit_count:" => i += 2,
                        "reap" | "TTL-Match" => i += 1,
                        _ => break,
                    }
                }
                matches.push(Match::Recent {
                    mode,
                    name,
                    seconds,
                });
            }
            "nfacct-name" => {
                let v = get(i).unwrap_or("");
                i += 1;
                matches.push(Match::Always(format!("nfacct {v}")));
            }
            "MARK" => {
                // MARK or 0x4000 | xor | and | set V | xset V/M
                let op = get(i).unwrap_or("");
                let v = get(i + 1).unwrap_or("");
                i += 2;
                let opt = match op {
                    "or" => "--or-mark",
                    "xor" => "--xor-mark",
                    "and" => "--and-mark",
                    "set" => "--set-mark",
                    _ => "--set-xmark",
                };
                target.push(opt.to_string());
                target.push(v.to_string());
            }
            "reject-with" => {
                target.push("--reject-with".into());
                target.push(get(i).unwrap_or("").to_string());
                i += 1;
            }
            "random-fully" | "random" | "persistent" => target.push(format!("--{x}")),
            t if t.starts_with("to:") => {
                target.push("--to-destination".into());
                target.push(t.trim_start_matches("to:").to_string());
            }
            other => {
                // Unknown words up to the next keyword form one unknown match.
                let mut u = format!("{}{other}", if negated { "! " } else { "" });
                while let Some(next) = get(i) {
                    if KEYWORDS.contains(&next) || next.starts_with("to:") {
                        break;
                    }
                    u.push(' ');
                    u.push_str(next);
                    i += 1;
                }
                unknown.push(u.clone());
                matches.push(Match::Unknown(u));
            }
        }
    }
    (matches, target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Family, Target};

    const PLAIN: &str = "Chain KUBE-SVC-ABC (2 references)
target     prot opt source               destination
KUBE-MARK-MASQ  tcp  --  !192.0.2.0/25        203.0.113.10         /* default/web:http cluster IP */ tcp dpt:80
KUBE-SEP-ONE  all  --  0.0.0.0/0            0.0.0.0/0            /* default/web:http -> 192.0.2.2:8080 */ statistic mode random probability 0.33333333349
KUBE-SEP-TWO  all  --  0.0.0.0/0            0.0.0.0/0            /* default/web:http -> 192.0.2.3:8080 */ statistic mode random probability 0.50000000000
KUBE-SEP-THREE  all  --  0.0.0.0/0            0.0.0.0/0            /* default/web:http -> 192.0.2.18:8080 */

Chain KUBE-SEP-ONE (1 references)
target     prot opt source               destination
KUBE-MARK-MASQ  all  --  192.0.2.2            0.0.0.0/0            /* default/web:http */
DNAT       tcp  --  0.0.0.0/0            0.0.0.0/0            /* default/web:http */ tcp to:192.0.2.2:8080
";

    #[test]
    fn plain_listing_rows_become_rules() {
        assert!(looks_like_listing(PLAIN));
        let rs = parse(PLAIN);
        assert!(rs.issues.is_empty(), "{:?}", rs.issues);
        let nat = rs.table(&TableName::Nat, Family::Ipv4).expect("nat");
        let svc = &nat.chains["KUBE-SVC-ABC"];
        assert_eq!(svc.rules.len(), 4);
        assert_eq!(svc.rules[0].target, Target::Jump("KUBE-MARK-MASQ".into()));
        assert!(
            svc.rules[0]
                .matches
                .iter()
                .any(|m| matches!(m, Match::Source { negated: true, .. }))
        );
        assert!(
            svc.rules[0]
                .matches
                .iter()
                .any(|m| matches!(m, Match::DestinationPort { ports, .. } if ports.contains(80)))
        );
        assert_eq!(
            svc.rules[1].comment.as_deref(),
            Some("default/web:http -> 192.0.2.2:8080")
        );
        assert!(
            matches!(svc.rules[2].matches[..], [Match::Statistic(Statistic::Random { probability })] if (probability - 0.5).abs() < 1e-12)
        );
        let sep = &nat.chains["KUBE-SEP-ONE"];
        assert_eq!(sep.rules[1].target, Target::Dnat("192.0.2.2:8080".into()));
    }

    #[test]
    fn verbose_listing_with_line_numbers_and_empty_target() {
        let text = "Chain KUBE-FW-X (1 references)
num   pkts bytes target     prot opt in     out     source               destination
1        0     0 KUBE-EXT-X  all  --  *      *       198.51.100.192/26    0.0.0.0/0            /* default/fw:http loadbalancer IP */
2        3   180            all  --  *      *       0.0.0.0/0            0.0.0.0/0            /* other traffic to default/fw:http will be dropped by KUBE-PROXY-FIREWALL */
Chain KUBE-SERVICES (2 references)
num   pkts bytes target     prot opt in     out     source               destination
1        0     0 KUBE-NODEPORTS  all  --  *      *       0.0.0.0/0            0.0.0.0/0            /* kubernetes service nodeports; NOTE: this must be the last rule in this chain */ ADDRTYPE match dst-type LOCAL
";
        let rs = parse(text);
        assert!(rs.issues.is_empty(), "{:?}", rs.issues);
        let nat = rs.table(&TableName::Nat, Family::Ipv4).expect("nat");
        let fw = &nat.chains["KUBE-FW-X"];
        assert_eq!(fw.rules.len(), 2);
        assert_eq!(fw.rules[1].target, Target::None);
        assert!(
            fw.rules[1]
                .comment
                .as_deref()
                .is_some_and(|c| c.contains("KUBE-PROXY-FIREWALL"))
        );
        let np = &nat.chains["KUBE-SERVICES"].rules[0];
        assert!(
            matches!(&np.matches[0], Match::AddrType { dst: Some(AddrTypes { types, .. }), .. } if types == &["LOCAL"])
        );
    }

    #[test]
    fn ip6tables_listing_has_no_opt_column() {
        let text = "Chain KUBE-SEP-V6 (1 references)
target     prot opt source               destination
KUBE-MARK-MASQ  all      2001:db8:1:1::5      ::/0                 /* default/web6:http */
DNAT       tcp      ::/0                 ::/0                 /* default/web6:http */ tcp to:[2001:db8:1:1::5]:8080
";
        let rs = parse(text);
        assert!(rs.issues.is_empty(), "{:?}", rs.issues);
        let nat = rs.table(&TableName::Nat, Family::Ipv6).expect("nat v6");
        assert_eq!(
            nat.chains["KUBE-SEP-V6"].rules[1].target,
            Target::Dnat("[2001:db8:1:1::5]:8080".into())
        );
    }

    #[test]
    fn target_extras_become_targets() {
        let text = "Chain KUBE-POSTROUTING (1 references)
target     prot opt source               destination
RETURN     0    --  0.0.0.0/0            0.0.0.0/0            mark match ! 0x4000/0x4000
MARK       0    --  0.0.0.0/0            0.0.0.0/0            MARK xor 0x4000
MASQUERADE  0    --  0.0.0.0/0            0.0.0.0/0            /* kubernetes service traffic requiring SNAT */ random-fully
";
        let rs = parse(text);
        assert!(rs.issues.is_empty(), "{:?}", rs.issues);
        let nat = rs.table(&TableName::Nat, Family::Ipv4).expect("nat");
        let r = &nat.chains["KUBE-POSTROUTING"].rules;
        assert_eq!(r[0].target, Target::Return);
        assert_eq!(
            r[0].matches,
            vec![Match::Mark {
                negated: true,
                value: 0x4000,
                mask: 0x4000
            }]
        );
        assert_eq!(
            r[1].target,
            Target::Mark(crate::rules::MarkOp::Xor { value: 0x4000 })
        );
        assert_eq!(r[2].target, Target::Masquerade);
    }

    #[test]
    fn listing_without_dash_n() {
        let text = "Chain KUBE-SERVICES (2 references)
target     prot opt source               destination
KUBE-SVC-ABC  tcp  --  anywhere             203.0.113.10         /* default/web:http cluster IP */ tcp dpt:http
KUBE-SVC-DNS  udp  --  anywhere             203.0.113.43         /* default/dns:dns cluster IP */ udp dpt:domain
KUBE-SVC-X  tcp  --  anywhere             web.example.test     tcp dpt:http
";
        let rs = parse(text);
        let nat = rs.table(&TableName::Nat, Family::Ipv4).expect("nat");
        let r = &nat.chains["KUBE-SERVICES"].rules;
        assert_eq!(r.len(), 2);
        assert!(
            r[0].matches
                .iter()
                .any(|m| matches!(m, Match::DestinationPort { ports, .. } if ports.contains(80)))
        );
        assert!(
            r[1].matches
                .iter()
                .any(|m| matches!(m, Match::DestinationPort { ports, .. } if ports.contains(53)))
        );
        assert_eq!(rs.issues.len(), 1);
        assert!(
            rs.issues[0].message.contains("list with -n"),
            "{:?}",
            rs.issues
        );
    }

    #[test]
    fn filter_rows_and_unknown_extras() {
        let text = "Chain KUBE-EXTERNAL-SERVICES (2 references)
target     prot opt source               destination
DROP       tcp  --  0.0.0.0/0            198.51.100.101       /* default/local:http has no local endpoints */ tcp dpt:80
REJECT     tcp  --  0.0.0.0/0            198.51.100.102       /* default/empty:http has no endpoints */ tcp dpt:80 reject-with icmp-port-unreachable
ACCEPT     all  --  0.0.0.0/0            0.0.0.0/0            match-set KUBE-X dst
";
        let rs = parse(text);
        let f = rs.table(&TableName::Filter, Family::Ipv4).expect("filter");
        let r = &f.chains["KUBE-EXTERNAL-SERVICES"].rules;
        assert_eq!(r[0].target, Target::Drop);
        assert_eq!(
            r[1].target,
            Target::Reject(Some("icmp-port-unreachable".into()))
        );
        assert_eq!(rs.issues.len(), 1, "{:?}", rs.issues);
        assert!(
            rs.issues[0].message.ends_with("match-set KUBE-X dst"),
            "{:?}",
            rs.issues
        );
        assert!(r[2].matches.iter().any(|m| matches!(m, Match::Unknown(_))));
    }
}
