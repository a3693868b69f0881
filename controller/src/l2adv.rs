//! What the controller keeps of L2Advertisements, and the status each should show: whether its
//! selectors are valid and the pools it names exist, and which pools it announces.
//!
//! Pure: objects in, plain data out. The speakers act on L2Advertisements; the controller only
//! reports on them, because a typo in a pool name or an operator would otherwise show only as
//! "not announced" on each Service it was meant for.

use std::collections::BTreeMap;

use ferrolb_crds::{L2Advertisement, L2AdvertisementStatus, conditions, selector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

use crate::conditions::{condition, without_times};
use crate::pools::PoolView;

/// Pool names listed in a condition message before "and N more".
const LISTED: usize = 10;

/// The parts of an L2Advertisement the controller needs.
#[derive(Debug, Clone, PartialEq)]
pub struct L2View {
    /// Object name.
    pub name: String,
    /// For event references.
    pub uid: Option<String>,
    /// For `observedGeneration`.
    pub generation: Option<i64>,
    /// `spec.ipAddressPools`.
    pub pools: Vec<String>,
    /// `spec.ipAddressPoolSelectors`.
    pub pool_selectors: Vec<LabelSelector>,
    /// Malformed selectors of any field, with the reason.
    pub bad_selectors: Vec<String>,
    /// The status as last observed, to write only on change.
    pub status: Option<L2AdvertisementStatus>,
}

impl L2View {
    /// Projects an L2Advertisement. `None` for an object without a name.
    pub fn from_l2(l2: &L2Advertisement) -> Option<L2View> {
        let spec = &l2.spec;
        let fields = [
            ("ipAddressPoolSelectors", &spec.ip_address_pool_selectors),
            ("nodeSelectors", &spec.node_selectors),
            ("serviceSelectors", &spec.service_selectors),
        ];
        let bad_selectors = fields
            .into_iter()
            .flat_map(|(field, list)| {
                list.iter().enumerate().filter_map(move |(i, s)| {
                    selector::validate(s)
                        .err()
                        .map(|e| format!("{field}[{i}]: {e}"))
                })
            })
            .collect();
        Some(L2View {
            name: l2.metadata.name.clone()?,
            uid: l2.metadata.uid.clone(),
            generation: l2.metadata.generation,
            pools: spec.ip_address_pools.clone(),
            pool_selectors: spec.ip_address_pool_selectors.clone(),
            bad_selectors,
            status: l2.status.clone(),
        })
    }

    /// The existing pools this advertisement announces, by name: those it names and those its
    /// selectors match; with neither, every pool.
    pub fn announced<'a>(&self, pools: &'a BTreeMap<String, PoolView>) -> Vec<&'a str> {
        if self.pools.is_empty() && self.pool_selectors.is_empty() {
            return pools.keys().map(String::as_str).collect();
        }
        pools
            .values()
            .filter(|p| {
                self.pools.contains(&p.name)
                    || self
                        .pool_selectors
                        .iter()
                        .any(|s| selector::matches(s, &p.labels).unwrap_or(false))
            })
            .map(|p| p.name.as_str())
            .collect()
    }
}

fn listing(names: &[&str]) -> String {
    let mut out = names
        .iter()
        .take(LISTED)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > LISTED {
        out.push_str(&format!(" and {} more", names.len() - LISTED));
    }
    out
}

/// The status `l2` should show, given the pools that exist.
pub fn desired_status(
    l2: &L2View,
    pools: &BTreeMap<String, PoolView>,
    now: &Time,
) -> L2AdvertisementStatus {
    let announced = l2.announced(pools);
    let unknown: Vec<&str> = l2
        .pools
        .iter()
        .filter(|n| !pools.contains_key(*n))
        .map(String::as_str)
        .collect();
    let announcing = if announced.is_empty() {
        "announces no pool".to_string()
    } else {
        format!("announces {}", listing(&announced))
    };
    let (ok, reason, message) = if !l2.bad_selectors.is_empty() {
        (
            false,
            "InvalidSelectors",
            format!(
                "selectors that select nothing: {}; {announcing}",
                l2.bad_selectors.join("; ")
            ),
        )
    } else if !unknown.is_empty() {
        (
            false,
            "UnknownPools",
            format!("no IPAddressPool named {}; {announcing}", listing(&unknown)),
        )
    } else if announced.is_empty() {
        (false, "NoPools", "no IPAddressPool matches".to_string())
    } else {
        (true, "Valid", announcing)
    };
    let previous = l2.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == conditions::L2_READY)
    });
    L2AdvertisementStatus {
        conditions: vec![condition(
            conditions::L2_READY,
            ok,
            reason,
            message,
            l2.generation,
            previous,
            now,
        )],
    }
}

/// Whether `a` says something `b` does not (transition times aside).
pub fn status_differs(a: &L2AdvertisementStatus, b: Option<&L2AdvertisementStatus>) -> bool {
    b.is_none_or(|b| without_times(&a.conditions) != without_times(&b.conditions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_crds::{IPAddressPool, IPAddressPoolSpec, L2AdvertisementSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn pools(specs: &[(&str, &[(&str, &str)])]) -> BTreeMap<String, PoolView> {
        specs
            .iter()
            .map(|(name, labels)| {
                let mut p = IPAddressPool::new(
                    name,
                    IPAddressPoolSpec {
                        node_addresses: None,
                        addresses: vec!["198.51.100.0/30".into()],
                        auto_assign: true,
                        avoid_buggy_ips: false,
                        service_allocation: None,
                    },
                );
                p.metadata.labels = Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                );
                (name.to_string(), PoolView::from_pool(&p).expect("named"))
            })
            .collect()
    }

    fn l2(spec: L2AdvertisementSpec) -> L2View {
        L2View::from_l2(&L2Advertisement::new("lan", spec)).expect("named")
    }

    fn ready(v: &L2View, p: &BTreeMap<String, PoolView>) -> (String, String, String) {
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let c = desired_status(v, p, &now).conditions.remove(0);
        (c.status, c.reason, c.message)
    }

    #[test]
    fn names_selectors_and_all_pools() {
        let p = pools(&[("blue", &[("tier", "edge")]), ("red", &[]), ("green", &[])]);
        let all = l2(L2AdvertisementSpec::default());
        assert_eq!(
            ready(&all, &p),
            (
                "True".into(),
                "Valid".into(),
                "announces blue, green, red".into()
            )
        );
        let by_label = l2(L2AdvertisementSpec {
            ip_address_pools: vec!["red".into()],
            ip_address_pool_selectors: vec![LabelSelector {
                match_labels: Some([("tier".to_string(), "edge".to_string())].into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(by_label.announced(&p), ["blue", "red"]);
    }

    #[test]
    fn a_missing_pool_or_a_bad_selector_is_reported() {
        let p = pools(&[("blue", &[])]);
        let typo = l2(L2AdvertisementSpec {
            ip_address_pools: vec!["blue".into(), "bleu".into()],
            ..Default::default()
        });
        assert_eq!(
            ready(&typo, &p),
            (
                "False".into(),
                "UnknownPools".into(),
                "no IPAddressPool named bleu; announces blue".into()
            )
        );
        let bad = l2(L2AdvertisementSpec {
            node_selectors: vec![LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "zone".into(),
                    operator: "Equals".into(),
                    values: Some(vec!["a".into()]),
                }]),
                ..Default::default()
            }],
            ..Default::default()
        });
        let (status, reason, message) = ready(&bad, &p);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "InvalidSelectors")
        );
        assert!(
            message.contains("nodeSelectors[0]") && message.contains("\"Equals\""),
            "{message}"
        );
        assert_eq!(
            ready(&l2(L2AdvertisementSpec::default()), &BTreeMap::new()),
            (
                "False".into(),
                "NoPools".into(),
                "no IPAddressPool matches".into()
            )
        );
    }

    #[test]
    fn an_unchanged_status_is_not_rewritten() {
        let p = pools(&[("blue", &[])]);
        let mut v = l2(L2AdvertisementSpec::default());
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let st = desired_status(&v, &p, &now);
        assert!(status_differs(&st, None));
        v.status = Some(st.clone());
        let later = Time(k8s_openapi::jiff::Timestamp::from_second(60).expect("valid"));
        let again = desired_status(&v, &p, &later);
        assert!(!status_differs(&again, Some(&st)));
        assert_eq!(again.conditions[0].last_transition_time, now);
    }

    #[test]
    fn long_lists_are_cut() {
        let names: Vec<String> = (0..13).map(|i| format!("p{i:02}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(
            listing(&refs),
            "p00, p01, p02, p03, p04, p05, p06, p07, p08, p09 and 3 more"
        );
    }
}
