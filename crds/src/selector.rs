//! Kubernetes label selector matching (`matchLabels` and `matchExpressions`), shared by the controller
//! (pool `serviceAllocation`) and the speaker (L2Advertisement selectors).
//!
//! Pure: labels in, a verdict out. An operator the API does not define is an error the caller reports
//! as a condition, never a panic and never a silent match. Labels are read through the [`Labels`]
//! trait, so a holder of many objects may keep their labels in a more compact form than the
//! `BTreeMap` k8s-openapi gives (one B-tree node per object costs hundreds of bytes).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A selector that cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// `operator` is not In, NotIn, Exists or DoesNotExist.
    #[error("unknown label selector operator {0:?} (want In, NotIn, Exists or DoesNotExist)")]
    UnknownOperator(String),
    /// In and NotIn need at least one value.
    #[error("label selector operator {0} on key {1:?} needs at least one value")]
    MissingValues(String, String),
}

/// A set of labels a selector can be evaluated against: a lookup by key.
pub trait Labels {
    /// The value of label `key`, if the object carries it.
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// Checks a selector on its own: `Ok` exactly when [`matches`] cannot fail for it, whatever the
/// labels. Lets a holder of selectors report a bad one before any object meets it.
pub fn validate(selector: &LabelSelector) -> Result<(), SelectorError> {
    for expr in selector.match_expressions.iter().flatten() {
        let values = expr.values.as_deref().unwrap_or_default();
        match expr.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(SelectorError::MissingValues(
                    expr.operator.clone(),
                    expr.key.clone(),
                ));
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => return Err(SelectorError::UnknownOperator(other.to_string())),
        }
    }
    Ok(())
}

/// Whether `labels` satisfy `selector`. An empty selector matches everything, as in Kubernetes.
/// A malformed selector is an error, never a silent match or mismatch.
pub fn matches<L: Labels + ?Sized>(
    selector: &LabelSelector,
    labels: &L,
) -> Result<bool, SelectorError> {
    validate(selector)?;
    if let Some(want) = &selector.match_labels
        && want
            .iter()
            .any(|(k, v)| labels.label(k) != Some(v.as_str()))
    {
        return Ok(false);
    }
    let holds =
        |expr: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement| {
            let values = expr.values.as_deref().unwrap_or_default();
            let have = labels.label(&expr.key);
            let listed = |v: &str| values.iter().any(|w| w == v);
            match expr.operator.as_str() {
                "In" => have.is_some_and(listed),
                "NotIn" => !have.is_some_and(listed),
                "Exists" => have.is_some(),
                // DoesNotExist; validate() has ruled out anything else.
                _ => have.is_none(),
            }
        };
    Ok(selector.match_expressions.iter().flatten().all(holds))
}

/// Whether any selector in `selectors` matches; an empty list matches everything.
pub fn any_matches<L: Labels + ?Sized>(
    selectors: &[LabelSelector],
    labels: &L,
) -> Result<bool, SelectorError> {
    if selectors.is_empty() {
        return Ok(true);
    }
    for s in selectors {
        if matches(s, labels)? {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values: Some(values.iter().map(|s| s.to_string()).collect()),
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert_eq!(matches(&LabelSelector::default(), &labels(&[])), Ok(true));
        assert_eq!(any_matches(&[], &labels(&[("a", "b")])), Ok(true));
    }

    #[test]
    fn match_labels_need_every_pair() {
        let s = LabelSelector {
            match_labels: Some([("team".to_string(), "blue".to_string())].into()),
            ..Default::default()
        };
        assert_eq!(
            matches(&s, &labels(&[("team", "blue"), ("x", "y")])),
            Ok(true)
        );
        assert_eq!(matches(&s, &labels(&[("team", "red")])), Ok(false));
        assert_eq!(matches(&s, &labels(&[])), Ok(false));
    }

    #[test]
    fn operators_follow_kubernetes() {
        let l = labels(&[("zone", "a")]);
        assert_eq!(matches(&expr("zone", "In", &["a", "b"]), &l), Ok(true));
        assert_eq!(matches(&expr("zone", "In", &["b"]), &l), Ok(false));
        assert_eq!(matches(&expr("zone", "NotIn", &["b"]), &l), Ok(true));
        assert_eq!(matches(&expr("other", "NotIn", &["b"]), &l), Ok(true));
        assert_eq!(matches(&expr("zone", "Exists", &[]), &l), Ok(true));
        assert_eq!(matches(&expr("zone", "DoesNotExist", &[]), &l), Ok(false));
    }

    #[test]
    fn bad_selectors_are_errors_not_matches() {
        let l = labels(&[("zone", "a")]);
        assert!(matches!(
            matches(&expr("zone", "Near", &["a"]), &l),
            Err(SelectorError::UnknownOperator(_))
        ));
        assert!(matches!(
            matches(&expr("zone", "In", &[]), &l),
            Err(SelectorError::MissingValues(..))
        ));
    }

    /// Labels as a plain list of pairs: any [`Labels`] gives the same verdicts as the map.
    struct Pairs<'a>(&'a [(&'a str, &'a str)]);

    impl Labels for Pairs<'_> {
        fn label(&self, key: &str) -> Option<&str> {
            self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
        }
    }

    #[test]
    fn any_labels_implementation_gives_the_same_verdicts() {
        let mut team = expr("zone", "NotIn", &["b"]);
        team.match_labels = Some([("team".to_string(), "blue".to_string())].into());
        let selectors = [
            LabelSelector::default(),
            team,
            expr("zone", "In", &["a", "b"]),
            expr("zone", "In", &["b"]),
            expr("zone", "Exists", &[]),
            expr("zone", "DoesNotExist", &[]),
            expr("zone", "Near", &["a"]),
            expr("zone", "In", &[]),
        ];
        let sets: [&[(&str, &str)]; 4] = [
            &[],
            &[("zone", "a")],
            &[("team", "blue"), ("zone", "a")],
            &[("team", "blue"), ("zone", "b")],
        ];
        for pairs in sets {
            for s in &selectors {
                assert_eq!(matches(s, &Pairs(pairs)), matches(s, &labels(pairs)));
            }
            assert_eq!(
                any_matches(&selectors[2..4], &Pairs(pairs)),
                any_matches(&selectors[2..4], &labels(pairs))
            );
        }
    }

    #[test]
    fn a_bad_expression_is_an_error_even_when_match_labels_already_fail() {
        let mut s = expr("zone", "in", &["a"]);
        s.match_labels = Some([("tier".to_string(), "web".to_string())].into());
        let l = labels(&[("zone", "a")]);
        assert!(matches!(
            matches(&s, &l),
            Err(SelectorError::UnknownOperator(op)) if op == "in"
        ));
        assert!(validate(&s).is_err());
        assert_eq!(validate(&expr("zone", "Exists", &[])), Ok(()));
        assert_eq!(validate(&LabelSelector::default()), Ok(()));
    }
}
