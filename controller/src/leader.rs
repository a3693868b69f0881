//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! One task owns the Lease and publishes leadership on a `watch` channel; everything else only reads
//! that channel. The decision of what to do with the Lease is a pure function ([`decide`]) of what was
//! read and the time; the task around it only reads, writes and sleeps. Writes use the Lease's
//! resourceVersion, so two replicas can never both win the same term.
//!
//! Two clocks never meet: a standby times a holder's Lease on its own monotonic clock, from when
//! it last saw the Lease change ([`Observed`]), never by comparing the holder's `renewTime` with
//! its own wall clock, so clock skew between nodes cannot shorten a term. A leader stays leader
//! only while its last confirmed renewal is younger than two thirds of the lease
//! ([`still_leading`]); every request has a deadline that ends no later than that, and the task
//! wakes up when it passes. So a leader whose API connection hangs steps down a third of a lease
//! before a standby may take over, while a single failed renewal does not cost the lead.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

/// What to do with the Lease as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, it expired, or it was released: take it.
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Someone else holds a valid Lease: wait.
    Follow { holder: String },
}

/// Decides from a Lease's spec and how long this replica has seen it unchanged (on its own
/// clock; see [`Observed`]), `own_duration` being the term this replica would write. Pure.
///
/// A missing Lease is created only once it has been missing for a whole term: the chart creates
/// the Lease, and Helm creates kinds it does not order (Lease among them) after the Deployment,
/// so a replica that started fast and created it first would fail `helm install` with
/// "already exists". Without the chart, the first term of a fresh install is `own_duration`
/// longer.
pub fn decide(
    spec: Option<&LeaseSpec>,
    me: &str,
    unchanged_for: Duration,
    own_duration: Duration,
) -> Decision {
    let Some(spec) = spec else {
        return if unchanged_for >= own_duration {
            Decision::Acquire
        } else {
            Decision::Follow {
                holder: String::new(),
            }
        };
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == me {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Acquire;
    }
    let duration = u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0);
    if unchanged_for >= Duration::from_secs(duration) {
        Decision::Acquire
    } else {
        Decision::Follow { holder }
    }
}

/// When this replica last saw the Lease's holder or renewal change, on its own clock.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    record: Option<(Option<String>, Option<MicroTime>)>,
    since: Option<Instant>,
}

impl Observed {
    /// Notes the Lease as read at `now` and returns how long it has looked the same. A Lease seen
    /// for the first time counts from now: a fresh replica waits a full term before taking over.
    pub fn see(&mut self, spec: Option<&LeaseSpec>, now: Instant) -> Duration {
        let record = spec.map(|s| (s.holder_identity.clone(), s.renew_time.clone()));
        if self.since.is_none() || record != self.record {
            self.record = record;
            self.since = Some(now);
        }
        self.since
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or_default()
    }
}

/// Whether a replica whose last confirmed renewal started at `last_renewed` may still act as
/// leader at `now`. `deadline` is shorter than the lease: the renewal's `renewTime` was taken when
/// it started, so a standby cannot acquire before `lease_duration` after it. Pure.
pub fn still_leading(last_renewed: Option<Instant>, now: Instant, deadline: Duration) -> bool {
    last_renewed.is_some_and(|at| now.saturating_duration_since(at) < deadline)
}

/// What one round with the Lease came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// We hold the Lease, renewed (or acquired) just now.
    Leads,
    /// Someone else holds it, or took it from under us (a write conflict).
    Follows,
    /// The API server did not answer, or answered with an error: nothing is known.
    Unknown,
}

/// Runs the election until `shutdown` fires, then releases the Lease if we hold it. Leadership
/// goes to `flag` (read by the writer before every write) and then to `tx`.
pub async fn run(
    api: Api<Lease>,
    name: String,
    me: String,
    lease_duration: Duration,
    flag: Arc<AtomicBool>,
    tx: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let secs = i32::try_from(lease_duration.as_secs()).unwrap_or(15).max(1);
    // Renew three times per lease period, so one slow request does not cost the lease; give up
    // leading two thirds into it without a confirmed renewal.
    let period = lease_duration / 3;
    let deadline = lease_duration * 2 / 3;
    let mut last_renewed: Option<Instant> = None;
    let mut observed = Observed::default();
    let publish = |leading: bool| {
        if *tx.borrow() != leading {
            flag.store(leading, Ordering::Release);
            if leading {
                tracing::info!(lease = %name, identity = %me, "became leader");
            } else {
                tracing::warn!(lease = %name, identity = %me, "not leader");
            }
            let _ = tx.send(leading);
        }
    };
    loop {
        let started = Instant::now();
        // While leading, a request may not outlast the lead it is meant to extend.
        let limit = match last_renewed {
            Some(at) if still_leading(last_renewed, started, deadline) => {
                period.min((at + deadline).saturating_duration_since(started))
            }
            _ => period,
        };
        let round = step(&api, &name, &me, secs, &mut observed);
        let outcome = match tokio::time::timeout(limit, round).await {
            Ok(o) => o,
            Err(_) => {
                tracing::warn!(lease = %name, timeout = ?limit, "the API server did not answer about the Lease in time");
                Outcome::Unknown
            }
        };
        match outcome {
            Outcome::Leads => last_renewed = Some(started),
            Outcome::Follows => last_renewed = None,
            Outcome::Unknown => {}
        }
        let now = Instant::now();
        let leading = still_leading(last_renewed, now, deadline);
        publish(leading);
        // Wake for the next renewal, or when the lead would lapse without one, whichever is first.
        let mut pause = if leading {
            period
        } else {
            period.min(Duration::from_secs(1))
        };
        if let Some(at) = last_renewed.filter(|_| leading) {
            pause = pause.min((at + deadline).saturating_duration_since(now));
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => break,
        }
    }
    if *tx.borrow() {
        publish(false);
        release(&api, &name, &me).await;
    }
}

async fn step(
    api: &Api<Lease>,
    name: &str,
    me: &str,
    secs: i32,
    observed: &mut Observed,
) -> Outcome {
    let now = Timestamp::now();
    let current = match api.get_opt(name).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the leader Lease");
            return Outcome::Unknown;
        }
    };
    let spec = current.as_ref().and_then(|l| l.spec.as_ref());
    let unchanged_for = observed.see(spec, Instant::now());
    let own_duration = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    let decision = decide(spec, me, unchanged_for, own_duration);
    let Some(mut lease) = current else {
        if decision != Decision::Acquire {
            tracing::debug!(lease = %name, waited = ?unchanged_for, "no Lease yet; waiting a term for the chart to create it");
            return Outcome::Follows;
        }
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(me.into()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Outcome::Leads,
            Err(kube::Error::Api(e)) if e.is_already_exists() => {
                tracing::debug!(lease = %name, "another replica created the Lease first");
                Outcome::Follows
            }
            Err(e) => {
                tracing::warn!(lease = %name, error = %e, "the Lease does not exist and cannot be created");
                Outcome::Unknown
            }
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    match decision {
        Decision::Follow { .. } => return Outcome::Follows,
        Decision::Renew => {}
        Decision::Acquire => {
            spec.holder_identity = Some(me.into());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
    }
    spec.lease_duration_seconds = Some(secs);
    spec.renew_time = Some(MicroTime(now));
    // replace() carries resourceVersion: a concurrent writer makes this fail with a conflict.
    match api.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => Outcome::Leads,
        Err(kube::Error::Api(e)) if e.is_conflict() => {
            tracing::debug!(lease = %name, "the Lease changed under us; another replica wrote it");
            Outcome::Follows
        }
        Err(e) => {
            tracing::warn!(lease = %name, error = %e, "cannot renew the Lease");
            Outcome::Unknown
        }
    }
}

/// Gives the Lease up so a standby takes over at once (rolling updates).
async fn release(api: &Api<Lease>, name: &str, me: &str) {
    if let Ok(Some(mut lease)) = api.get_opt(name).await
        && let Some(spec) = lease
            .spec
            .as_mut()
            .filter(|s| s.holder_identity.as_deref() == Some(me))
    {
        spec.holder_identity = None;
        spec.renew_time = None;
        match api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(lease = %name, "released leadership"),
            Err(e) => tracing::warn!(error = %e, "could not release the Lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(
        holder: Option<&str>,
        renewed_secs_ago: i64,
        duration: i32,
        now: Timestamp,
    ) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(String::from),
            lease_duration_seconds: Some(duration),
            renew_time: Some(MicroTime(
                now.checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(
                    renewed_secs_ago,
                ))
                .expect("in range"),
            )),
            ..Default::default()
        }
    }

    #[test]
    fn leadership_lasts_until_the_renew_deadline() {
        let t0 = Instant::now();
        let deadline = Duration::from_millis(2666);
        assert!(!still_leading(None, t0, deadline), "never renewed");
        assert!(still_leading(Some(t0), t0, deadline));
        assert!(still_leading(
            Some(t0),
            t0 + Duration::from_millis(2665),
            deadline
        ));
        assert!(
            !still_leading(Some(t0), t0 + deadline, deadline),
            "a renewal as old as the deadline no longer counts"
        );
        // A clock that went backwards (cannot happen with Instant, but saturate anyway).
        assert!(still_leading(
            Some(t0 + Duration::from_secs(1)),
            t0,
            deadline
        ));
    }

    #[test]
    fn decisions_time_the_holder_on_our_own_clock() {
        let secs = Duration::from_secs;
        let far_past = Timestamp::UNIX_EPOCH;
        let far_future = Timestamp::from_second(4_000_000_000).expect("valid");
        // A missing Lease is the chart's to create first; after a whole term without one, ours.
        assert_eq!(
            decide(None, "a", secs(3), secs(4)),
            Decision::Follow {
                holder: String::new()
            }
        );
        assert_eq!(decide(None, "a", secs(4), secs(4)), Decision::Acquire);
        assert_eq!(
            decide(
                Some(&spec(Some("a"), 1, 4, far_past)),
                "a",
                secs(0),
                secs(4)
            ),
            Decision::Renew
        );
        // The holder's renewTime says nothing: a skewed clock far ahead or behind changes nothing.
        for t in [far_past, far_future] {
            assert_eq!(
                decide(Some(&spec(Some("b"), 0, 4, t)), "a", secs(3), secs(4)),
                Decision::Follow { holder: "b".into() }
            );
            assert_eq!(
                decide(Some(&spec(Some("b"), 0, 4, t)), "a", secs(4), secs(4)),
                Decision::Acquire,
                "unchanged for a whole term"
            );
        }
        assert_eq!(
            decide(Some(&spec(None, 0, 4, far_past)), "a", secs(0), secs(4)),
            Decision::Acquire,
            "released"
        );
    }

    #[test]
    fn a_lease_counts_as_unchanged_only_while_it_looks_the_same() {
        let t0 = Instant::now();
        let now = Timestamp::UNIX_EPOCH;
        let mut o = Observed::default();
        let held = spec(Some("b"), 0, 4, now);
        assert_eq!(
            o.see(Some(&held), t0),
            Duration::ZERO,
            "first sight counts from now"
        );
        assert_eq!(
            o.see(Some(&held), t0 + Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        let renewed = spec(Some("b"), -1, 4, now);
        assert_eq!(
            o.see(Some(&renewed), t0 + Duration::from_secs(5)),
            Duration::ZERO
        );
        assert_eq!(
            o.see(Some(&renewed), t0 + Duration::from_secs(9)),
            Duration::from_secs(4)
        );
    }
}
