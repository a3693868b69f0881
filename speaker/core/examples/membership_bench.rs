//! Membership benchmark: the SWIM core in the deterministic simulator at 10, 100 and 1,000
//! members, against the all-to-all heartbeat design it replaces (computed from the version 2
//! codec's sizes and interval, and simulated where that is affordable).
//!
//! `cargo run --release -p ferrolb-speaker-core --example membership_bench [seed]`
//!
//! Scenarios (each member claims 4 IPs; the successor of an IP is the best-ranked live member
//! other than its announcer, every member being eligible):
//! - steady: no faults; per-member traffic;
//! - deaths: members crash one after another and restart 1.5 s later; detection from the crash
//!   until every running member knows (all) and until the successor of each of its IPs knows;
//! - loss 1% / 5%: the same with random datagram loss;
//! - slow: some members stall 300 ms at a time (process nothing, then everything at once)
//!   while others die as above: false positives and detection in one run;
//! - partition: two halves for 3 s, then healed;
//! - cold start / mass restart: every member starts at once with nothing known.
//!
//! Virtual time; figures are exact for the seed. A false positive is any member declaring
//! dead (reason timeout) a member that is running (stalled counts as running).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use ferrolb_speaker_core::election;
use ferrolb_speaker_core::membership::sim::{self, Life, Net, Sim, WIRE_OVERHEAD};
use ferrolb_speaker_core::membership::{
    Config, DownReason, Event, Heartbeat, MAX_HEARD, Message, Protocol,
};

const CLAIMS_PER_MEMBER: usize = 4;
/// How long after a crash detection is measured (and when a victim rejoins, if it does).
const WINDOW: Duration = Duration::from_millis(1_500);
const MS: Duration = Duration::from_millis(1);
const STALL: Duration = Duration::from_millis(300);
/// An observer of a death must have been running this long before it.
const OBSERVER_SINCE: Duration = Duration::from_millis(500);

fn ip(i: usize, j: usize) -> IpAddr {
    let k = u32::try_from(i * CLAIMS_PER_MEMBER + j).unwrap_or(u32::MAX);
    IpAddr::V6(Ipv6Addr::new(
        0x2001,
        0xdb8,
        1,
        0,
        0,
        0,
        (k >> 16) as u16,
        k as u16,
    ))
}

/// Small deterministic generator for the bench's own choices (which member dies when).
struct Pick(u64);

impl Pick {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n.max(1) as u64) as usize
    }
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

#[derive(Default, Clone)]
struct Row {
    pkts: f64,
    bytes: f64,
    max_pkts: f64,
    all: Vec<f64>,
    succ: Vec<f64>,
    missed: usize,
    fp: usize,
    note: String,
}

/// Tracks which members are running, to judge false positives and pick observers.
struct Truth {
    dead_since: Vec<Option<Duration>>,
}

fn new_sim(n: usize, config: Config, net: Net, seed: u64, t0: Instant) -> Sim {
    let mut s = Sim::new(n, config, net, seed, t0);
    for i in 0..n {
        s.set_claims(i, (0..CLAIMS_PER_MEMBER).map(|j| ip(i, j)).collect());
    }
    s
}

fn traffic(s: &Sim, over: Duration, only: impl Fn(usize) -> bool) -> (f64, f64, f64) {
    let secs = over.as_secs_f64();
    let mut pk = 0.0;
    let mut by = 0.0;
    let mut max: f64 = 0.0;
    let mut k = 0.0;
    for i in 0..s.len() {
        if !only(i) {
            continue;
        }
        let t = s.traffic(i);
        let p = t.sent_packets as f64 / secs;
        pk += p;
        by += (t.sent_bytes + WIRE_OVERHEAD * t.sent_packets) as f64 / secs;
        max = max.max(p);
        k += 1.0;
    }
    (pk / k, by / k, max)
}

/// Counts Down(timeout) of running members in the log since `from`.
fn false_positives(s: &Sim, truth: &Truth, from: Duration) -> usize {
    let names: BTreeMap<String, usize> = (0..s.len()).map(|i| (sim::name(i), i)).collect();
    s.log()
        .iter()
        .filter(|l| l.at >= from)
        .filter(|l| match &l.event {
            Event::Down(p, DownReason::Timeout) => names
                .get(p)
                .is_some_and(|&i| truth.dead_since[i].is_none_or(|d| d > l.at)),
            _ => false,
        })
        .count()
}

/// What a churn scenario does.
#[derive(Clone)]
struct Churn {
    /// Members crashed, one every `every`.
    deaths: usize,
    every: Duration,
    /// How long after its crash a victim restarts as a new instance (`None`: never).
    rejoin: Option<Duration>,
    /// Members that stall 300 ms, run 200..700 ms, stall again, all along (never victims).
    slow: Vec<usize>,
    seed: u64,
}

/// Crashes members one after another while `slow` members stall, and measures detection:
/// from the crash until every member running throughout knows (`all`), and until the
/// successor of each of the victim's IPs knows (`succ`). False positives: declarations of
/// members that were running (stalled counts as running).
fn churn(mut s: Sim, c: &Churn) -> Row {
    let n = s.len();
    let mut pick = Pick(c.seed);
    let mut stall_pick = Pick(c.seed ^ 0x5157);
    let start = s.now();
    let end = start + c.every * c.deaths as u32 + WINDOW;
    let mut plan: Vec<(Duration, usize)> = Vec::new();
    for &m in &c.slow {
        let mut t = start + Duration::from_millis(stall_pick.below(500) as u64);
        while t < end {
            plan.push((t, m));
            t += STALL + Duration::from_millis(200 + stall_pick.below(500) as u64);
        }
    }
    plan.sort();
    let stalls = plan.len();
    let mut next_stall = 0;
    s.clear_log();
    s.reset_traffic();
    s.classify = std::env::var("BENCH_DEBUG").is_ok();
    // (victim, crash time); a victim is down from its crash until its rejoin (if any).
    let mut killed: Vec<(usize, Duration)> = Vec::new();
    let down_during = |killed: &[(usize, Duration)], i: usize, from: Duration, to: Duration| {
        killed
            .iter()
            .any(|&(w, t)| w == i && t < to && c.rejoin.is_none_or(|r| t + r > from))
    };
    let mut next_death = start + c.every;
    let mut t = start;
    while t < end {
        t += Duration::from_millis(5);
        s.run_until(t);
        while next_stall < plan.len() && plan[next_stall].0 <= t {
            let m = plan[next_stall].1;
            if s.life(m) == Life::Up {
                s.stall(m, STALL);
            }
            next_stall += 1;
        }
        if let Some(r) = c.rejoin {
            for &(v, at) in &killed {
                if at + r <= t && at + r > t - Duration::from_millis(5) {
                    s.restart(v);
                }
            }
        }
        if killed.len() < c.deaths && t >= next_death {
            next_death += c.every;
            // A victim must be running and have been for a while, so every member knows it.
            let mut v = pick.below(n);
            for _ in 0..n {
                if !c.slow.contains(&v)
                    && !down_during(&killed, v, t.saturating_sub(OBSERVER_SINCE), t + MS)
                {
                    break;
                }
                v = (v + 1) % n;
            }
            s.kill(v);
            killed.push((v, t));
        }
    }
    let elapsed = s.now() - start;
    let (pkts, bytes, max_pkts) = traffic(&s, elapsed, |_| true);
    note_spins(&s);
    if std::env::var("BENCH_DEBUG").is_ok() {
        for (k, (p, b)) in s.traffic_by_kind() {
            let secs = elapsed.as_secs_f64();
            eprintln!(
                "  {n}: {k:<16} {:>10.1} pkt/s/node {:>10.0} B/s/node",
                *p as f64 / n as f64 / secs,
                *b as f64 / n as f64 / secs
            );
        }
    }
    let names: BTreeMap<String, usize> = (0..n).map(|i| (sim::name(i), i)).collect();
    let all_names: Vec<String> = (0..n).map(sim::name).collect();
    let mut row = Row {
        pkts,
        bytes,
        max_pkts,
        note: if c.slow.is_empty() {
            String::new()
        } else {
            format!("{} members, {stalls} stalls of 300 ms", c.slow.len())
        },
        ..Row::default()
    };
    for l in s.log() {
        if let Event::Down(p, DownReason::Timeout) = &l.event
            && let Some(&i) = names.get(p)
            && !down_during(&killed, i, l.at, l.at + MS)
        {
            row.fp += 1;
        }
    }
    for &(v, at) in &killed {
        let running = |i: usize| {
            i != v
                && !c.slow.contains(&i)
                && !down_during(&killed, i, at.saturating_sub(OBSERVER_SINCE), at + WINDOW)
        };
        let mut firsts: BTreeMap<usize, Duration> = BTreeMap::new();
        for l in s.log() {
            if l.at < at || l.at >= at + WINDOW {
                continue;
            }
            if let Event::Down(p, _) = &l.event
                && names.get(p) == Some(&v)
            {
                firsts.entry(l.node).or_insert(l.at - at);
            }
        }
        let mut worst = Duration::ZERO;
        for o in (0..n).filter(|&o| running(o)) {
            match firsts.get(&o) {
                Some(d) => worst = worst.max(*d),
                None => row.missed += 1,
            }
        }
        row.all.push(worst.as_secs_f64() * 1e3);
        for j in 0..CLAIMS_PER_MEMBER {
            let order = election::preference(ip(v, j), all_names.iter());
            let succ = order
                .iter()
                .filter_map(|m| names.get(*m).copied())
                .find(|&i| running(i));
            if let Some(sx) = succ {
                match firsts.get(&sx) {
                    Some(d) => row.succ.push(d.as_secs_f64() * 1e3),
                    None => row.missed += 1,
                }
            }
        }
    }
    row
}

fn steady(mut s: Sim, d: Duration) -> Row {
    s.clear_log();
    s.reset_traffic();
    let from = s.now();
    s.run_for(d);
    let (pkts, bytes, max_pkts) = traffic(&s, d, |_| true);
    note_spins(&s);
    let truth = Truth {
        dead_since: vec![None; s.len()],
    };
    Row {
        pkts,
        bytes,
        max_pkts,
        fp: false_positives(&s, &truth, from),
        ..Row::default()
    }
}

/// Two halves for `hold`, then healed: time for each side to see the other dead, and for
/// every member's view to be whole again.
fn partition(mut s: Sim, hold: Duration) -> Row {
    let n = s.len();
    s.clear_log();
    s.reset_traffic();
    let start = s.now();
    let groups: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
    s.partition(groups.clone());
    s.run_for(hold);
    s.heal();
    let healed = s.now();
    let mut whole = None;
    for _ in 0..400 {
        s.run_for(Duration::from_millis(25));
        if (0..n).all(|i| s.member(i).alive().len() == n) {
            whole = Some(s.now() - healed);
            break;
        }
    }
    let elapsed = s.now() - start;
    let (pkts, bytes, max_pkts) = traffic(&s, elapsed, |_| true);
    note_spins(&s);
    let names: BTreeMap<String, usize> = (0..n).map(|i| (sim::name(i), i)).collect();
    // Per observer: when it had declared the whole other side dead.
    let mut seen: BTreeMap<usize, (usize, Duration)> = BTreeMap::new();
    let mut fp = 0;
    for l in s.log() {
        if l.at >= healed {
            continue;
        }
        if let Event::Down(p, DownReason::Timeout) = &l.event
            && let Some(&i) = names.get(p)
        {
            if groups[i] == groups[l.node] {
                fp += 1;
            } else {
                let e = seen.entry(l.node).or_insert((0, Duration::ZERO));
                e.0 += 1;
                e.1 = l.at - start;
            }
        }
    }
    let other = n / 2;
    let all: Vec<f64> = (0..n)
        .map(|o| match seen.get(&o) {
            Some((k, d)) if *k >= other => d.as_secs_f64() * 1e3,
            _ => f64::INFINITY,
        })
        .collect();
    Row {
        pkts,
        bytes,
        max_pkts,
        all,
        fp,
        note: match whole {
            Some(d) => format!("views whole {:.0} ms after heal", d.as_secs_f64() * 1e3),
            None => "views not whole 10 s after heal".to_string(),
        },
        ..Row::default()
    }
}

/// Every member restarts at once; time until every member is settled with a whole view.
/// Every member restarts at once; see [`join`].
fn mass_restart(mut s: Sim) -> Row {
    for i in 0..s.len() {
        s.restart(i);
    }
    join(&mut s)
}

/// Runs a cluster whose members all just started (knowing nothing of each other) until every
/// member knows every other member's record and sees all of them alive.
fn join(s: &mut Sim) -> Row {
    let n = s.len();
    s.clear_log();
    s.reset_traffic();
    let start = s.now();
    let grace = s.config.join_grace;
    let mut done = None;
    let mut peak: f64 = 0.0;
    for _ in 0..200 {
        let before: Vec<u64> = (0..n).map(|i| s.traffic(i).sent_packets).collect();
        s.run_for(Duration::from_millis(50));
        for (i, b) in before.iter().enumerate() {
            peak = peak.max((s.traffic(i).sent_packets - b) as f64 / 0.05);
        }
        if (0..n).all(|i| s.member(i).knows_every_peer() && s.member(i).alive().len() == n) {
            done = Some(s.now() - start);
            break;
        }
    }
    let elapsed = s.now() - start;
    let (pkts, bytes, _) = traffic(s, elapsed, |_| true);
    note_spins(s);
    let truth = Truth {
        dead_since: vec![None; n],
    };
    Row {
        pkts,
        bytes,
        max_pkts: peak,
        fp: false_positives(s, &truth, start),
        all: done.map(|d| d.as_secs_f64() * 1e3).into_iter().collect(),
        note: match done {
            Some(d) => format!(
                "every record known, views whole after {:.0} ms (join grace {} ms)",
                d.as_secs_f64() * 1e3,
                grace.as_millis()
            ),
            None => "records still unknown after 10 s".into(),
        },
        ..Row::default()
    }
}

type Job = Box<dyn FnOnce() -> Row + Send>;

/// Runs independent scenarios on up to `threads` threads; results in the order given. Each job
/// owns its own simulator, so the figures do not depend on the scheduling.
fn run_parallel(jobs: Vec<(&'static str, Job)>, threads: usize) -> Vec<(&'static str, Row)> {
    let queue = std::sync::Mutex::new(jobs.into_iter().enumerate().collect::<Vec<_>>());
    let done = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().ok().and_then(|mut q| q.pop());
                    let Some((k, (label, job))) = next else {
                        break;
                    };
                    let row = job();
                    if let Ok(mut d) = done.lock() {
                        d.push((k, label, row));
                    }
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_default();
    done.sort_by_key(|(k, _, _)| *k);
    done.into_iter().map(|(_, l, r)| (l, r)).collect()
}

fn legacy_heartbeat_len(n: usize) -> usize {
    Message::Heartbeat(Heartbeat {
        from: sim::name(0),
        incarnation: 1_700_000_000_000,
        seq: 1,
        uptime_ms: 1,
        heard: (1..n.min(MAX_HEARD + 1))
            .map(|i| (sim::name(i), 10))
            .collect(),
        claims: (0..CLAIMS_PER_MEMBER).map(|j| ip(0, j)).collect(),
        unable: vec![],
    })
    .encode()
    .len()
}

fn print_row(n: usize, name: &str, r: &Row) {
    if std::env::var("BENCH_DEBUG").is_ok() {
        eprintln!("[{n} {name} at {:?}]", START.get().map(|s| s.elapsed()));
    }
    let f = |v: f64| {
        if v.is_finite() {
            format!("{v:.0}")
        } else {
            "-".into()
        }
    };
    println!(
        "{n:>5} {name:<12} {:>8.1} {:>9.0} {:>8.0} {:>7} {:>7} {:>7} {:>7} {:>5} {:>4}  {}",
        r.pkts,
        r.bytes,
        r.max_pkts,
        f(pct(&r.all, 50.0)),
        f(pct(&r.all, 99.0)),
        f(pct(&r.succ, 50.0)),
        f(pct(&r.succ, 99.0)),
        r.missed,
        r.fp,
        r.note
    );
}

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Sum of simulator spins (must stay 0; see `Sim::spins`).
static SPINS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn note_spins(s: &Sim) {
    SPINS.fetch_add(s.spins(), std::sync::atomic::Ordering::Relaxed);
}

fn main() {
    let seed: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let t0 = Instant::now();
    let wall = Instant::now();
    let _ = START.set(wall);
    println!(
        "membership_bench seed {seed}: SWIM (version 3) in virtual time; comparator: all-to-all heartbeats (version 2)"
    );
    println!(
        "LAN: 0.2 ms + up to 0.3 ms per link + up to 0.5 ms jitter; each member claims {CLAIMS_PER_MEMBER} IPs"
    );
    println!(
        "{:>5} {:<12} {:>8} {:>9} {:>8} {:>7} {:>7} {:>7} {:>7} {:>5} {:>4}",
        "n",
        "scenario",
        "pkt/s",
        "B/s",
        "maxpkt/s",
        "all50",
        "all99",
        "succ50",
        "succ99",
        "miss",
        "FP"
    );
    let mut goals: BTreeMap<&str, f64> = BTreeMap::new();
    let mut fp_slow = 0usize;
    let mut fp_steady = 0usize;
    let mut steady_pkts: BTreeMap<usize, f64> = BTreeMap::new();
    let mut steady_bytes: BTreeMap<usize, f64> = BTreeMap::new();
    let mut legacy_sim: BTreeMap<usize, (f64, f64, usize)> = BTreeMap::new();
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100, 1000]);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let want = |s: &str| only.is_empty() || only.split(',').any(|o| o == s);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    for &n in &sizes {
        // Churn schedules: at 10 and 100 members victims rejoin after the measuring window
        // (a restart is a join: a bulk digest and every record pulled); at 1,000 they stay
        // down, which keeps the run to minutes rather than a quarter of an hour.
        let (count, every, rejoin) = match n {
            10 => (30, Duration::from_millis(1_600), Some(WINDOW)),
            100 => (60, Duration::from_millis(250), Some(WINDOW)),
            _ => (60, Duration::from_millis(50), None),
        };
        let slow_members: Vec<usize> = (0..(n / 10).max(1)).map(|k| k * 10 + 3).collect();
        let plain = Churn {
            deaths: count,
            every,
            rejoin,
            slow: Vec::new(),
            seed,
        };
        let config = Config::default();
        // Cold start: every member starts at once knowing nothing, which is also what a mass
        // restart of the whole cluster is.
        let mut warm = new_sim(n, config, Net::default(), seed, t0);
        let cold = join(&mut warm);
        if want("cold") {
            print_row(n, "cold start", &cold);
        }
        let mut jobs: Vec<(&str, Job)> = Vec::new();
        warm.run_until(Duration::from_secs(4));
        if want("steady") {
            let w = warm.clone();
            jobs.push((
                "steady",
                Box::new(move || steady(w, Duration::from_secs(3))),
            ));
        }
        if want("deaths") {
            let (w, c) = (warm.clone(), plain.clone());
            jobs.push(("deaths", Box::new(move || churn(w, &c))));
        }
        for (loss, label) in [(10_000u32, "loss 1%"), (50_000, "loss 5%")] {
            if want("loss") {
                let (mut w, c) = (warm.clone(), plain.clone());
                w.net.loss_ppm = loss;
                jobs.push((label, Box::new(move || churn(w, &c))));
            }
        }
        if want("slow") {
            let w = warm.clone();
            let c = Churn {
                slow: slow_members.clone(),
                ..plain.clone()
            };
            jobs.push(("slow 300ms", Box::new(move || churn(w, &c))));
        }
        if want("partition") {
            let w = warm.clone();
            jobs.push((
                "partition",
                Box::new(move || partition(w, Duration::from_secs(3))),
            ));
        }
        if want("restart") && n < 1000 {
            // At 1,000 the cold start above stands for it (it costs a minute to repeat).
            let w = warm.clone();
            jobs.push(("mass restart", Box::new(move || mass_restart(w))));
        }
        if n == 10 && want("legacy") {
            // The all-to-all design in the same simulator where it is cheap (at 100 members it
            // is 400,000 heartbeats a simulated second): its traffic, checking the computed
            // figures, and its false positives with the same slow members.
            let lc = Config::new(Duration::from_millis(25), Duration::from_millis(200));
            let mut l = new_sim(n, lc, Net::default(), seed, t0);
            let c = Churn {
                deaths: 3,
                slow: slow_members.clone(),
                ..plain.clone()
            };
            jobs.push((
                "legacy",
                Box::new(move || {
                    l.run_until(Duration::from_millis(500));
                    let mut r = steady(l.clone(), Duration::from_millis(500));
                    r.fp = churn(l, &c).fp;
                    r
                }),
            ));
        }
        drop(warm);
        for (label, r) in run_parallel(jobs, threads) {
            match label {
                "legacy" => {
                    legacy_sim.insert(n, (r.pkts, r.bytes, r.fp));
                    continue;
                }
                "steady" => {
                    fp_steady += r.fp;
                    steady_pkts.insert(n, r.pkts);
                    steady_bytes.insert(n, r.bytes);
                }
                "deaths" if n == 1000 => {
                    goals.insert("succ99", pct(&r.succ, 99.0));
                }
                "loss 1%" if n == 1000 => {
                    goals.insert("succ99_loss1", pct(&r.succ, 99.0));
                }
                "slow 300ms" => {
                    fp_slow += r.fp;
                    if n == 1000 {
                        goals.insert("succ99_slow", pct(&r.succ, 99.0));
                    }
                }
                _ => {}
            }
            print_row(n, label, &r);
        }
        eprintln!(
            "[{n} members done after {:.1} s]",
            wall.elapsed().as_secs_f64()
        );
    }
    println!();
    println!(
        "comparator: all-to-all heartbeats every 25 ms, dead after 200 ms (version 2 codec sizes)"
    );
    println!(
        "{:>5} {:>10} {:>11} {:>13} {:>13} {:>14}",
        "n", "pkt/s", "B/s", "sim pkt/s", "sim B/s", "FP slow (sim)"
    );
    let mut legacy_pkts: BTreeMap<usize, f64> = BTreeMap::new();
    for &n in &[10usize, 100, 1000] {
        let pkts = (n - 1) as f64 * 40.0;
        let bytes = pkts * (legacy_heartbeat_len(n) as u64 + WIRE_OVERHEAD) as f64;
        legacy_pkts.insert(n, pkts);
        let (sp, sb, sfp) = legacy_sim
            .get(&n)
            .map(|(a, b, c)| (format!("{a:.0}"), format!("{b:.0}"), c.to_string()))
            .unwrap_or(("-".into(), "-".into(), "-".into()));
        println!("{n:>5} {pkts:>10.0} {bytes:>11.0} {sp:>13} {sb:>13} {sfp:>14}");
    }
    for &n in &[10usize, 100, 1000] {
        if !steady_pkts.contains_key(&n) {
            continue;
        }
        println!(
            "ratio at {n:>4}: SWIM sends {:.4} x the packets and {:.4} x the bytes of all-to-all",
            steady_pkts[&n] / legacy_pkts[&n],
            steady_bytes[&n]
                / (legacy_pkts[&n] * (legacy_heartbeat_len(n) as u64 + WIRE_OVERHEAD) as f64)
        );
    }
    let _ = Protocol::Swim;
    println!();
    eprintln!("[done after {:.1} s]", wall.elapsed().as_secs_f64());
    let get = |m: &BTreeMap<&str, f64>, k: &str| m.get(k).copied().unwrap_or(f64::NAN);
    println!(
        "goal failover p99 at 1000 nodes (death -> successor knows): {:.0} ms (target <= 500 ms)",
        get(&goals, "succ99")
    );
    println!(
        "goal failover p99 at 1000 nodes with 1% loss: {:.0} ms (target <= 500 ms)",
        get(&goals, "succ99_loss1")
    );
    println!(
        "goal failover p99 at 1000 nodes with slow members: {:.0} ms (target <= 500 ms)",
        get(&goals, "succ99_slow")
    );
    println!("goal false positives with a slow member: {fp_slow} (target = 0)");
    println!("goal false positives in steady state: {fp_steady} (target = 0)");
    println!(
        "goal simulator spins (deadlines left in the past): {} (target = 0)",
        SPINS.load(std::sync::atomic::Ordering::Relaxed)
    );
    let growth = |m: &BTreeMap<usize, f64>| match (m.get(&10), m.get(&1000)) {
        (Some(a), Some(b)) => b / a,
        _ => f64::NAN,
    };
    println!(
        "goal per-node packets/s growth 10->1000: {:.2} x (target <= 2 x)",
        growth(&steady_pkts)
    );
    println!(
        "goal per-node bytes/s growth 10->1000: {:.2} x (target <= 2 x)",
        growth(&steady_bytes)
    );
}
