//! Measuring helpers for the lab benchmarks: percentiles, a process's CPU time from `/proc`,
//! Prometheus text sums, the time stamps of the speakers' log lines, and one ARP or NDP
//! request/reply exchange on a packet socket, timed (the neighbour-latency probe).
//!
//! Pure functions and small blocking readers; nothing here starts, stops or configures anything
//! in a lab.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use ferrolb_speaker_core::wire::{self, Frame, Mac, arp, ndp};

/// The `p`-quantile (0..=1) of `sorted` by nearest rank; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p.clamp(0.0, 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `(p50, p99, max)` of `values`.
pub fn summary(values: &[f64]) -> (f64, f64, f64) {
    let mut s = values.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    (
        percentile(&s, 0.5),
        percentile(&s, 0.99),
        s.last().copied().unwrap_or(f64::NAN),
    )
}

/// `utime + stime` (fields 14 and 15, in clock ticks) of `/proc/<pid>/stat` text: every thread
/// of the process, user and system. The command name (field 2) may hold spaces and parentheses,
/// so fields are counted after its closing parenthesis.
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time used so far by process `pid` (all threads), from `/proc/<pid>/stat`.
pub fn process_cpu(pid: u32, ticks_per_second: u64) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = stat_cpu_ticks(&stat)?;
    Some(Duration::from_secs_f64(
        ticks as f64 / ticks_per_second.max(1) as f64,
    ))
}

/// Clock ticks per second (`getconf CLK_TCK`), 100 if it cannot be read.
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// The sum of every series of metric `name` whose labels contain every `name="value"` pair of
/// `labels`, in Prometheus text `text`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.find('{') {
                Some(i) => (&series[..i], &series[i..]),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The time of a log line written by the speakers' text format (`2025-01-31T12:34:56.123456Z
/// LEVEL message fields`), in microseconds since the Unix epoch.
pub fn log_time_us(line: &str) -> Option<i64> {
    let ts = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let y: i64 = d.next()?.parse().ok()?;
    let mo: u32 = d.next()?.parse().ok()?;
    let da: u32 = d.next()?.parse().ok()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':');
    let h: i64 = t.next()?.parse().ok()?;
    let mi: i64 = t.next()?.parse().ok()?;
    let s: i64 = t.next()?.parse().ok()?;
    // Up to microseconds; more digits are cut, fewer padded.
    let mut digits: String = frac.chars().take(6).collect();
    while digits.len() < 6 {
        digits.push('0');
    }
    let us: i64 = digits.parse().ok()?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(y, mo, da);
    Some(((days * 86_400 + h * 3_600 + mi * 60 + s) * 1_000_000) + us)
}

/// Whether `line` has the field `key=value` exactly (a field `peer=node-1` is not
/// `peer=node-10`); quoted values match unquoted.
pub fn has_field(line: &str, key: &str, value: &str) -> bool {
    line.split_whitespace().any(|w| {
        w.strip_prefix(key)
            .and_then(|r| r.strip_prefix('='))
            .is_some_and(|v| v.trim_matches('"') == value)
    })
}

/// What a neighbour probe asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An ARP request for this IPv4 address.
    Arp(Ipv4Addr),
    /// A Neighbor Solicitation (to the solicited-node group) for this IPv6 address.
    Ndp(Ipv6Addr),
}

/// The request frame a probe from `mac` (`v4`/`v6`: its own addresses) sends for `target`.
pub fn request_frame(target: Target, mac: Mac, v4: Ipv4Addr, v6: Ipv6Addr) -> Vec<u8> {
    match target {
        Target::Arp(ip) => wire::Packet {
            ethernet: wire::EthernetRepr {
                dst: [0xff; 6],
                src: mac,
                vlan: None,
            },
            frame: Frame::Arp(arp::ArpRepr {
                operation: arp::ArpOperation::Request,
                sender_mac: mac,
                sender_ip: v4,
                target_mac: [0; 6],
                target_ip: ip,
            }),
        }
        .emit(),
        Target::Ndp(ip) => wire::Packet {
            ethernet: wire::EthernetRepr {
                dst: ndp::multicast_mac(ndp::solicited_node(ip)),
                src: mac,
                vlan: None,
            },
            frame: Frame::NeighborSolicit(ndp::NeighborSolicitRepr {
                ip: ndp::Ipv6Repr::new(v6, ndp::solicited_node(ip)),
                target: ip,
                source_mac: Some(mac),
                nonce: None,
            }),
        }
        .emit(),
    }
}

/// Whether `frame` answers a probe for `target` sent from `mac`: an ARP reply or a Neighbor
/// Advertisement for the target, addressed to us.
pub fn answers(frame: &[u8], target: Target, mac: Mac) -> bool {
    let Ok(p) = wire::parse(frame) else {
        return false;
    };
    if p.ethernet.dst != mac {
        return false;
    }
    match (p.frame, target) {
        (Frame::Arp(a), Target::Arp(ip)) => {
            a.operation == arp::ArpOperation::Reply && a.sender_ip == ip
        }
        (Frame::NeighborAdvert(na), Target::Ndp(ip)) => na.solicited && na.target == ip,
        _ => false,
    }
}

/// Times request/reply exchanges on `iface` (a packet socket; run inside the client's
/// namespace): `rounds` rounds, each one exchange per target in turn (so every target sees the
/// same machine load), `gap` apart, each waiting at most `timeout`. Returns, per target, the
/// reply times in microseconds (lost requests left out) and the number lost.
pub fn neighbour_latency(
    iface: &str,
    targets: &[Target],
    v4: Ipv4Addr,
    v6: Ipv6Addr,
    rounds: usize,
    gap: Duration,
    timeout: Duration,
) -> Result<Vec<(Vec<f64>, usize)>, String> {
    let ni = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == iface)
        .ok_or_else(|| format!("no interface {iface}"))?;
    let m = ni.mac.ok_or_else(|| format!("{iface} has no MAC"))?;
    let mac = [m.0, m.1, m.2, m.3, m.4, m.5];
    let cfg = pnet_datalink::Config {
        read_timeout: Some(Duration::from_millis(2)),
        promiscuous: false,
        ..Default::default()
    };
    let (mut tx, mut rx) = match pnet_datalink::channel(&ni, cfg) {
        Ok(pnet_datalink::Channel::Ethernet(tx, rx)) => (tx, rx),
        Ok(_) => return Err("not an Ethernet channel".into()),
        Err(e) => return Err(e.to_string()),
    };
    let frames: Vec<Vec<u8>> = targets
        .iter()
        .map(|t| request_frame(*t, mac, v4, v6))
        .collect();
    let mut out: Vec<(Vec<f64>, usize)> = vec![(Vec::with_capacity(rounds), 0); targets.len()];
    for _ in 0..rounds {
        for (i, target) in targets.iter().enumerate() {
            // Whatever arrived since the last exchange (a late reply) is not this one's.
            let drain_until = Instant::now() + Duration::from_micros(300);
            while Instant::now() < drain_until {
                if rx.next().is_err() {
                    break;
                }
            }
            let t0 = Instant::now();
            match tx.send_to(&frames[i], None) {
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(format!("send: {e}")),
                None => return Err("send: no room".into()),
            }
            let deadline = t0 + timeout;
            let mut got = None;
            while Instant::now() < deadline {
                if let Ok(f) = rx.next()
                    && answers(f, *target, mac)
                {
                    got = Some(t0.elapsed());
                    break;
                }
            }
            match got {
                Some(d) => out[i].0.push(d.as_secs_f64() * 1e6),
                None => out[i].1 += 1,
            }
            std::thread::sleep(gap);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert!(percentile(&[], 0.5).is_nan());
        assert_eq!(summary(&[3.0, 1.0, 2.0]), (2.0, 3.0, 3.0));
    }

    #[test]
    fn cpu_ticks_count_after_the_command_name() {
        let stat = "4242 (ferrolb (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20 0 9 0 100 0 0";
        assert_eq!(stat_cpu_ticks(stat), Some(1234 + 567));
        assert_eq!(stat_cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn metric_sums_match_name_and_labels() {
        let text = "# HELP x y\nferrolb_a_total{direction=\"sent\",kind=\"ping\"} 10\nferrolb_a_total{direction=\"received\",kind=\"ping\"} 7\nferrolb_a_total{direction=\"sent\",kind=\"ack\"} 5\nferrolb_ab 3\nferrolb_a_total_x 9\n";
        assert_eq!(metric_sum(text, "ferrolb_a_total", &[]), 22.0);
        assert_eq!(
            metric_sum(text, "ferrolb_a_total", &[("direction", "sent")]),
            15.0
        );
        assert_eq!(
            metric_sum(
                text,
                "ferrolb_a_total",
                &[("direction", "sent"), ("kind", "ack")]
            ),
            5.0
        );
        assert_eq!(metric_sum(text, "ferrolb_ab", &[]), 3.0);
    }

    #[test]
    fn log_times_are_unix_microseconds() {
        assert_eq!(
            log_time_us("1970-01-01T00:00:01.5Z  INFO x"),
            Some(1_500_000)
        );
        // 2024-02-29 is day 19782 since the epoch.
        assert_eq!(
            log_time_us("2024-02-29T12:00:00.000001Z  WARN peer down peer=node-7"),
            Some((19_782 * 86_400 + 43_200) * 1_000_000 + 1)
        );
        assert_eq!(log_time_us("peer down"), None);
        assert_eq!(log_time_us("2024-13-01T00:00:00Z x"), None);
    }

    #[test]
    fn fields_match_whole_values() {
        let l = "2024-02-29T12:00:00Z WARN peer down peer=node-10 reason=\"timeout\"";
        assert!(has_field(l, "peer", "node-10"));
        assert!(!has_field(l, "peer", "node-1"));
        assert!(has_field(l, "reason", "timeout"));
    }

    #[test]
    fn probes_recognise_their_answers_only() {
        let me: Mac = [2, 0, 0, 0, 0, 0xc8];
        let them: Mac = [2, 0, 0, 0, 0, 0x0b];
        let v4 = Ipv4Addr::new(198, 51, 100, 200);
        let v6: Ipv6Addr = "2001:db8::c8".parse().expect("ip");
        let vip4 = Ipv4Addr::new(198, 51, 100, 80);
        let vip6: Ipv6Addr = "2001:db8::1:80".parse().expect("ip");
        // The speaker's own responders answer our requests, and we recognise the answers.
        let req = request_frame(Target::Arp(vip4), me, v4, v6);
        let wire::Outcome::Reply(reply) = arp::respond(&req, them, |ip| ip == vip4) else {
            panic!("no ARP reply");
        };
        assert!(answers(&reply, Target::Arp(vip4), me));
        assert!(!answers(&reply, Target::Arp(v4), me));
        assert!(!answers(&req, Target::Arp(vip4), me), "our own request");
        let ns = request_frame(Target::Ndp(vip6), me, v4, v6);
        let wire::Outcome::Reply(na) = ndp::respond(&ns, them, vip6, |ip| ip == vip6) else {
            panic!("no NA");
        };
        assert!(answers(&na, Target::Ndp(vip6), me));
        assert!(!answers(&na, Target::Arp(vip4), me));
        assert!(!answers(&na, Target::Ndp(vip6), them));
    }
}
