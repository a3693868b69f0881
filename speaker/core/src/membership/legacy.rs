//! The version 1/2 all-to-all heartbeat rules, for peers that predate version 3 (and for
//! [`super::Protocol::Legacy`], where every peer is treated so).
//!
//! Owns one legacy peer's state and the rule that judges it: a peer is dead when nothing was
//! heard from it directly for `dead_after` **and** no peer that is itself directly alive reports
//! (in its heartbeat's `heard` list, with the report's own age added) having heard it within
//! `dead_after`. Only direct hearing is ever reported, and only directly-alive reporters count,
//! so a dead peer cannot be kept alive by rumours. It must not send anything or decide which
//! protocol a peer speaks; [`super::Membership`] does both.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::codec::Heartbeat;

/// What a legacy peer last told us.
#[derive(Debug, Clone)]
pub(crate) struct LegacyState {
    pub(crate) incarnation: u64,
    pub(crate) seq: u64,
    /// Last direct heartbeat of this incarnation.
    pub(crate) last_heard: Instant,
    pub(crate) claims: Vec<IpAddr>,
    /// IPs the peer reported it cannot announce (last heartbeat).
    pub(crate) unable: Vec<IpAddr>,
    /// The peer's last report of whom it heard and how long before `last_heard`.
    pub(crate) heard: Vec<(String, u32)>,
    pub(crate) alive: bool,
    pub(crate) left: bool,
}

/// How a heartbeat changed a legacy peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heard {
    /// Repeated, reordered or superseded (old seq or incarnation, heartbeat after Leave).
    Stale,
    /// Same instance, newer heartbeat (or the first one).
    Fresh,
    /// Another instance replaced the known one.
    Restarted,
}

impl LegacyState {
    fn fresh(hb: Heartbeat, now: Instant) -> Self {
        Self {
            incarnation: hb.incarnation,
            seq: hb.seq,
            last_heard: now,
            claims: hb.claims,
            unable: hb.unable,
            heard: hb.heard,
            alive: true,
            left: false,
        }
    }

    fn left(incarnation: u64, now: Instant) -> Self {
        Self {
            incarnation,
            seq: 0,
            last_heard: now,
            claims: Vec::new(),
            unable: Vec::new(),
            heard: Vec::new(),
            alive: false,
            left: true,
        }
    }
}

/// Applies a heartbeat. A newer incarnation means the peer restarted: its old state, including
/// its claims, is dropped. While a peer is dead, a heartbeat with any other incarnation is also
/// taken as a new instance, so a restart whose clock went backwards recovers once the old
/// instance is declared dead.
pub(crate) fn on_heartbeat(
    state: &mut Option<Box<LegacyState>>,
    hb: Heartbeat,
    now: Instant,
) -> Heard {
    match state {
        None => {
            *state = Some(Box::new(LegacyState::fresh(hb, now)));
            Heard::Fresh
        }
        Some(s) if hb.incarnation == s.incarnation => {
            if s.left || hb.seq <= s.seq {
                Heard::Stale
            } else {
                **s = LegacyState::fresh(hb, now);
                Heard::Fresh
            }
        }
        Some(s) if hb.incarnation > s.incarnation || !s.alive => {
            **s = LegacyState::fresh(hb, now);
            Heard::Restarted
        }
        Some(_) => Heard::Stale,
    }
}

/// Applies a Leave: false when it is stale (an older incarnation than the alive one).
pub(crate) fn on_leave(
    state: &mut Option<Box<LegacyState>>,
    incarnation: u64,
    now: Instant,
) -> bool {
    if state
        .as_ref()
        .is_some_and(|s| incarnation < s.incarnation && s.alive)
    {
        return false;
    }
    *state = Some(Box::new(LegacyState::left(incarnation, now)));
    true
}

/// Recomputes `alive` of every legacy peer in `peers` (name → state) by the rule in the module
/// docs.
pub(crate) fn update_liveness<'a>(
    peers: impl Iterator<Item = (&'a str, &'a mut LegacyState)>,
    now: Instant,
    dead_after: Duration,
) {
    let mut states: BTreeMap<&'a str, &'a mut LegacyState> = peers.collect();
    // Ages of the evidence each peer is alive: direct, then vouched for by reporters that are
    // themselves directly alive.
    let mut best: BTreeMap<&str, Duration> = BTreeMap::new();
    for (name, s) in &states {
        if !s.left {
            best.insert(name, now.saturating_duration_since(s.last_heard));
        }
    }
    for (reporter, s) in &states {
        if s.left {
            continue;
        }
        let report_age = now.saturating_duration_since(s.last_heard);
        if report_age >= dead_after {
            continue;
        }
        for (subject, age_ms) in &s.heard {
            if subject == reporter {
                continue;
            }
            if let Some(b) = best.get_mut(subject.as_str()) {
                let age = report_age.saturating_add(Duration::from_millis(u64::from(*age_ms)));
                *b = (*b).min(age);
            }
        }
    }
    let verdicts: Vec<(&str, bool)> = best
        .into_iter()
        .map(|(name, age)| (name, age < dead_after))
        .collect();
    for (name, alive) in verdicts {
        if let Some(s) = states.get_mut(name) {
            s.alive = alive;
        }
    }
}
