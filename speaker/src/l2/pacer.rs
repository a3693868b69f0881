//! Pacing of takeover announcements (gratuitous ARP, unsolicited NA): `--garp-burst` frames per
//! IP, spread one heartbeat interval apart, and at most `--garp-rate` frames per second across
//! all IPs through a token bucket.
//!
//! Pure: `now` comes from the caller; it returns which frames to send, never sends them. Why a
//! bucket and not a fixed gap: a single takeover (the common case) goes out at once, while 1,000
//! IPs moving together are spread to the rate a switch with ARP inspection tolerates. First
//! frames of every IP go before repeats, because they are due earlier.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// One frame to send: the `index`-th announcement of `ip` in its current burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The IP.
    pub ip: IpAddr,
    /// 0-based position in the burst (callers alternate ARP forms on it).
    pub index: u32,
}

/// A queued frame: (due, sequence, ip, index, generation); the sequence keeps FIFO order
/// among equal dues.
type Entry = (Instant, u64, IpAddr, u32, u64);

/// The takeover announcement queue. See the module docs.
#[derive(Debug)]
pub struct Pacer {
    rate: f64,
    capacity: f64,
    tokens: f64,
    refilled: Instant,
    burst: u32,
    spacing: Duration,
    queue: BinaryHeap<Reverse<Entry>>,
    /// Current generation per IP; entries of older generations are stale and skipped.
    generation: BTreeMap<IpAddr, u64>,
    seq: u64,
}

impl Pacer {
    /// `rate` frames per second overall (at least 1), `burst` frames per takeover, repeats
    /// `spacing` apart. The bucket holds `max(burst, rate/10)` tokens, so one takeover is never
    /// delayed and a mass move is smoothed within 100 ms windows.
    pub fn new(rate: u32, burst: u32, spacing: Duration, now: Instant) -> Pacer {
        let rate = f64::from(rate.max(1));
        let capacity = f64::from(burst.max(1)).max(rate / 10.0);
        Pacer {
            rate,
            capacity,
            tokens: capacity,
            refilled: now,
            burst: burst.max(1),
            spacing,
            queue: BinaryHeap::new(),
            generation: BTreeMap::new(),
            seq: 0,
        }
    }

    /// Schedules a burst for `ip` (replacing any burst still pending for it).
    pub fn takeover(&mut self, ip: IpAddr, now: Instant) {
        let g = self.generation.entry(ip).or_default();
        *g += 1;
        let g = *g;
        for index in 0..self.burst {
            let due = now + self.spacing.saturating_mul(index);
            self.seq += 1;
            self.queue.push(Reverse((due, self.seq, ip, index, g)));
        }
    }

    /// Cancels what is pending for `ip` (it was released).
    pub fn cancel(&mut self, ip: IpAddr) {
        if let Some(g) = self.generation.get_mut(&ip) {
            *g += 1;
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.capacity);
        self.refilled = now;
    }

    /// The frames to send now, within the budget.
    pub fn due(&mut self, now: Instant) -> Vec<Due> {
        self.refill(now);
        let mut out = Vec::new();
        while let Some(Reverse((due, _, ip, index, g))) = self.queue.peek().copied() {
            if self.generation.get(&ip) != Some(&g) {
                self.queue.pop();
                continue;
            }
            if due > now || self.tokens < 1.0 {
                break;
            }
            self.queue.pop();
            self.tokens -= 1.0;
            out.push(Due { ip, index });
        }
        // Forget IPs with nothing pending so the map stays as small as the queue.
        if self.queue.is_empty() {
            self.generation.clear();
        }
        out
    }

    /// When [`Self::due`] may have something next, if anything is queued.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        let Reverse((due, ..)) = self.queue.peek()?;
        let token_at = if self.tokens >= 1.0 {
            now
        } else {
            now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        };
        Some((*due).max(token_at))
    }

    /// Frames queued (including stale ones not yet skipped).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0xc633_6400 + i))
    }

    #[test]
    fn one_takeover_goes_out_at_once_then_repeats() {
        let t0 = Instant::now();
        let mut p = Pacer::new(200, 3, Duration::from_millis(25), t0);
        p.takeover(ip(1), t0);
        assert_eq!(
            p.due(t0),
            vec![Due {
                ip: ip(1),
                index: 0
            }]
        );
        assert!(p.due(t0 + Duration::from_millis(10)).is_empty());
        assert_eq!(p.next_wakeup(t0), Some(t0 + Duration::from_millis(25)));
        assert_eq!(p.due(t0 + Duration::from_millis(25)).len(), 1);
        assert_eq!(p.due(t0 + Duration::from_millis(50))[0].index, 2);
        assert!(p.due(t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(p.next_wakeup(t0), None);
    }

    #[test]
    fn a_thousand_ips_respect_the_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(200, 3, Duration::from_millis(25), t0);
        for i in 0..1000 {
            p.takeover(ip(i), t0);
        }
        let mut sent = 0usize;
        let mut first_frames_done_at = None;
        let mut t = t0;
        // Simulate 20 s in 1 ms steps, counting frames per 1 s window.
        let mut window = [0usize; 20];
        for ms in 0..20_000u64 {
            t = t0 + Duration::from_millis(ms);
            let d = p.due(t);
            sent += d.len();
            window[(ms / 1000) as usize] += d.len();
            if first_frames_done_at.is_none() && sent >= 1000 {
                first_frames_done_at = Some(ms);
            }
        }
        assert_eq!(sent, 3000, "every frame is sent eventually");
        for (s, n) in window.iter().enumerate() {
            // The bucket allows its 20-token capacity on top of 200/s in the first second.
            assert!(*n <= 220, "second {s}: {n} frames");
        }
        // First frames of all IPs go out before the repeats: 1000 frames at 200/s ≈ 5 s.
        let done = first_frames_done_at.expect("first frames sent");
        assert!((4_800..=5_200).contains(&done), "{done} ms");
        assert!(p.due(t).is_empty());
    }

    #[test]
    fn cancel_and_retake() {
        let t0 = Instant::now();
        let mut p = Pacer::new(200, 3, Duration::from_millis(25), t0);
        p.takeover(ip(1), t0);
        p.cancel(ip(1));
        assert!(p.due(t0 + Duration::from_secs(1)).is_empty());
        p.takeover(ip(2), t0);
        p.takeover(ip(2), t0);
        // The second takeover replaces the first burst: three frames, not six.
        let n: usize = (0..100)
            .map(|ms| p.due(t0 + Duration::from_millis(ms)).len())
            .sum();
        assert_eq!(n, 3);
    }
}
