//! Building status conditions the way Kubernetes expects them: `lastTransitionTime` moves only
//! when `status` flips, and comparisons ignore it, so an unchanged world writes nothing.
//!
//! Pure helpers shared by the pool and L2Advertisement status code.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition of `type_`, keeping `previous`'s transition time while the status is unchanged.
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    previous: Option<&Condition>,
    now: &Time,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = previous
        .filter(|p| p.status == status)
        .map(|p| p.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// `conditions` with every transition time blanked, for comparing what they say.
pub fn without_times(conditions: &[Condition]) -> Vec<Condition> {
    conditions
        .iter()
        .map(|c| Condition {
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            ..c.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).expect("valid"))
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let first = condition("Ready", true, "Valid", "ok".into(), Some(1), None, &at(10));
        assert_eq!(first.last_transition_time, at(10));
        let same = condition(
            "Ready",
            true,
            "Valid",
            "still ok".into(),
            Some(2),
            Some(&first),
            &at(20),
        );
        assert_eq!(
            same.last_transition_time,
            at(10),
            "message changed, status did not"
        );
        let flipped = condition(
            "Ready",
            false,
            "Bad",
            "no".into(),
            Some(3),
            Some(&same),
            &at(30),
        );
        assert_eq!(flipped.last_transition_time, at(30));
        assert_eq!(
            without_times(std::slice::from_ref(&first)),
            without_times(&[Condition {
                last_transition_time: at(99),
                ..first
            }])
        );
    }
}
