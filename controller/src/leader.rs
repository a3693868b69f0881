//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! One task owns the Lease and publishes leadership on a `watch` channel; everything else only reads
//! that channel. The decision of what to do with the Lease is a pure function ([`decide`]) of what was
//! read and the time; the task around it only reads, writes and sleeps. Writes use the Lease's
//! resourceVersion, so two replicas can never both win the same term.
//!
//! A leader stays leader only while its last confirmed renewal is younger than two thirds of the
//! lease ([`still_leading`]), and every request to the Lease has a deadline. So a leader whose API
//! connection hangs steps down before a standby may take the expired Lease over, and two replicas
//! never write at once; a single failed renewal, on the other hand, does not cost the lead.

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

/// Decides from a Lease's spec. Pure.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == me {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Acquire;
    }
    let duration = spec.lease_duration_seconds.unwrap_or(0).max(0);
    let renewed = spec
        .renew_time
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let expires = renewed
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(i64::from(
            duration,
        )))
        .unwrap_or(renewed);
    if now >= expires {
        Decision::Acquire
    } else {
        Decision::Follow { holder }
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

/// Runs the election until `shutdown` fires, then releases the Lease if we hold it.
pub async fn run(
    api: Api<Lease>,
    name: String,
    me: String,
    lease_duration: Duration,
    tx: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let secs = i32::try_from(lease_duration.as_secs()).unwrap_or(15).max(1);
    // Renew three times per lease period, so one slow request does not cost the lease; give up
    // leading two thirds into it without a confirmed renewal.
    let period = lease_duration / 3;
    let deadline = lease_duration * 2 / 3;
    let mut last_renewed: Option<Instant> = None;
    loop {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(period, step(&api, &name, &me, secs)).await {
            Ok(o) => o,
            Err(_) => {
                tracing::warn!(lease = %name, timeout = ?period, "the API server did not answer about the Lease in time");
                Outcome::Unknown
            }
        };
        match outcome {
            Outcome::Leads => last_renewed = Some(started),
            Outcome::Follows => last_renewed = None,
            Outcome::Unknown => {}
        }
        let leading = still_leading(last_renewed, Instant::now(), deadline);
        if *tx.borrow() != leading {
            if leading {
                tracing::info!(lease = %name, identity = %me, "became leader");
            } else {
                tracing::warn!(lease = %name, identity = %me, "not leader");
            }
            let _ = tx.send(leading);
        }
        tokio::select! {
            _ = tokio::time::sleep(if leading { period } else { period.min(Duration::from_secs(1)) }) => {}
            _ = shutdown.changed() => break,
        }
    }
    if *tx.borrow() {
        let _ = tx.send(false);
        release(&api, &name, &me).await;
    }
}

async fn step(api: &Api<Lease>, name: &str, me: &str, secs: i32) -> Outcome {
    let now = Timestamp::now();
    let current = match api.get_opt(name).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the leader Lease");
            return Outcome::Unknown;
        }
    };
    let decision = decide(current.as_ref().and_then(|l| l.spec.as_ref()), me, now);
    let Some(mut lease) = current else {
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
    fn decisions() {
        let now = Timestamp::now();
        assert_eq!(decide(None, "a", now), Decision::Acquire);
        assert_eq!(
            decide(Some(&spec(Some("a"), 1, 4, now)), "a", now),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&spec(Some("b"), 1, 4, now)), "a", now),
            Decision::Follow { holder: "b".into() }
        );
        assert_eq!(
            decide(Some(&spec(Some("b"), 5, 4, now)), "a", now),
            Decision::Acquire,
            "expired"
        );
        assert_eq!(
            decide(Some(&spec(None, 0, 4, now)), "a", now),
            Decision::Acquire,
            "released"
        );
    }
}
