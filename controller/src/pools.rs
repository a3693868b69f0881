//! What the controller keeps of IPAddressPools: the parsed configuration the allocator needs, the
//! selectors that decide which Services may use a pool, and the status the pool should show.
//!
//! Pure: objects in, plain data out. A pool whose entries do not parse (possible when the CRD was
//! installed without its CEL rules, or an object predates them) is kept with its error so its status
//! can say why; its valid entries are still used, and no Service is touched because of it.

use std::collections::BTreeMap;

use ferrolb_allocator::{
    Family, FamilyStats, IpRange, Overlap, PoolConfig, PoolStats, parse_pool_entry,
};
use ferrolb_crds::selector::Labels;
use ferrolb_crds::{IPAddressPool, IPAddressPoolStatus, ServiceAllocation, conditions, selector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::conditions::{condition, without_times};
use crate::forwarder::NodePool;

/// The parts of a pool the controller needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolView {
    /// Pool name.
    pub name: String,
    /// For event references.
    pub uid: Option<String>,
    /// For `observedGeneration`.
    pub generation: Option<i64>,
    /// The allocator's view (valid entries only).
    pub config: PoolConfig,
    /// Entries that did not parse, with the reason.
    pub bad_entries: Vec<String>,
    /// `serviceAllocation` selectors that are malformed, with the reason. They select nothing.
    pub bad_selectors: Vec<String>,
    /// `spec.serviceAllocation`.
    pub allocation: Option<ServiceAllocation>,
    /// The pool's labels, for L2Advertisements' `ipAddressPoolSelectors`.
    pub labels: BTreeMap<String, String>,
    /// The status as last observed, to write only on change.
    pub status: Option<IPAddressPoolStatus>,
    /// `spec.nodeAddresses`: a forwarder-mode pool, which the allocator never sees.
    pub node: Option<NodePool>,
}

impl PoolView {
    /// Projects a pool. `None` for an object without a name.
    pub fn from_pool(pool: &IPAddressPool) -> Option<PoolView> {
        let name = pool.metadata.name.clone()?;
        let mut ranges = Vec::new();
        let mut bad_entries = Vec::new();
        for entry in &pool.spec.addresses {
            match parse_pool_entry(entry) {
                Ok(r) => ranges.push(r),
                Err(e) => bad_entries.push(format!("{entry:?}: {e}")),
            }
        }
        let mut bad_selectors = pool
            .spec
            .service_allocation
            .as_ref()
            .map(bad_selectors)
            .unwrap_or_default();
        let node = pool.spec.node_addresses.as_ref().map(|na| {
            let mut cidrs = Vec::new();
            for c in &na.cidrs {
                // A CIDR, not a range: the CRD's rule is isCIDR.
                match parse_pool_entry(c) {
                    Ok(r) if c.contains('/') => cidrs.push(r),
                    Ok(_) => bad_entries.push(format!("nodeAddresses.cidrs {c:?}: not a CIDR")),
                    Err(e) => bad_entries.push(format!("nodeAddresses.cidrs {c:?}: {e}")),
                }
            }
            if let Some(sel) = &na.node_selector
                && let Err(e) = selector::validate(sel)
            {
                bad_selectors.push(format!("nodeAddresses.nodeSelector: {e}"));
            }
            NodePool {
                name: name.clone(),
                selector: na.node_selector.clone(),
                address_type: na.address_type,
                cidrs,
                k3s_labels: na.k3s_servicelb_labels,
                forwarding: na.forwarding,
            }
        });
        if node.is_none() && pool.spec.addresses.is_empty() {
            // Only possible without the CRD's rules (an older CRD, or an object stored before).
            bad_entries.push("neither addresses nor nodeAddresses is set".into());
        }
        Some(PoolView {
            config: PoolConfig {
                name: name.clone(),
                ranges,
                auto_assign: pool.spec.auto_assign,
                avoid_buggy_ips: pool.spec.avoid_buggy_ips,
            },
            name,
            uid: pool.metadata.uid.clone(),
            generation: pool.metadata.generation,
            bad_entries,
            bad_selectors,
            allocation: pool.spec.service_allocation.clone(),
            labels: pool.metadata.labels.clone().unwrap_or_default(),
            status: pool.status.clone(),
            node,
        })
    }

    /// Whether this is a forwarder-mode pool (it publishes node addresses).
    pub fn is_node_pool(&self) -> bool {
        self.node.is_some()
    }

    /// Whether the pool's `serviceAllocation` selects this Service. `None`: the pool has no
    /// `serviceAllocation` (it serves anyone through autoAssign). Bad selectors select nothing.
    pub fn selects<L: Labels + ?Sized>(
        &self,
        namespace: &str,
        ns_labels: Option<&BTreeMap<String, String>>,
        svc_labels: &L,
    ) -> Option<bool> {
        let a = self.allocation.as_ref()?;
        if a.namespaces.is_empty()
            && a.namespace_selectors.is_empty()
            && a.service_selectors.is_empty()
        {
            return None;
        }
        let empty = BTreeMap::new();
        let ns_ok = if a.namespaces.is_empty() && a.namespace_selectors.is_empty() {
            true
        } else {
            a.namespaces.iter().any(|n| n == namespace)
                || (!a.namespace_selectors.is_empty()
                    && a.namespace_selectors.iter().any(|s| {
                        selector::matches(s, ns_labels.unwrap_or(&empty)).unwrap_or(false)
                    }))
        };
        let svc_ok = a.service_selectors.is_empty()
            || a.service_selectors
                .iter()
                .any(|s| selector::matches(s, svc_labels).unwrap_or(false));
        Some(ns_ok && svc_ok)
    }

    fn priority(&self) -> Option<i32> {
        self.allocation.as_ref().and_then(|a| a.priority)
    }
}

/// Every malformed selector of a `serviceAllocation`, named by its field and index.
fn bad_selectors(a: &ServiceAllocation) -> Vec<String> {
    let fields = [
        ("namespaceSelectors", &a.namespace_selectors),
        ("serviceSelectors", &a.service_selectors),
    ];
    fields
        .into_iter()
        .flat_map(|(field, list)| {
            list.iter().enumerate().filter_map(move |(i, s)| {
                selector::validate(s)
                    .err()
                    .map(|e| format!("serviceAllocation.{field}[{i}]: {e}"))
            })
        })
        .collect()
}

/// The pools a Service may get addresses from automatically, in the order they are tried: pools whose
/// `serviceAllocation` selects it, by priority (lower first, unset last, then by name); then the other
/// `autoAssign` pools without a `serviceAllocation`, by name. A pool whose `serviceAllocation` does not
/// select the Service is never offered to it, and `autoAssign: false` pools only on explicit request.
pub fn candidates<'a, L: Labels + ?Sized>(
    pools: impl IntoIterator<Item = &'a PoolView>,
    namespace: &str,
    ns_labels: Option<&BTreeMap<String, String>>,
    svc_labels: &L,
) -> Vec<String> {
    let mut selected = Vec::new();
    let mut rest = Vec::new();
    for p in pools {
        if !p.config.auto_assign {
            continue;
        }
        match p.selects(namespace, ns_labels, svc_labels) {
            Some(true) => selected.push(p),
            Some(false) => {}
            None => rest.push(p),
        }
    }
    selected.sort_by(|a, b| {
        let key = |p: &PoolView| (p.priority().is_none(), p.priority().unwrap_or(0));
        key(a).cmp(&key(b)).then_with(|| a.name.cmp(&b.name))
    });
    rest.sort_by(|a, b| a.name.cmp(&b.name));
    selected
        .into_iter()
        .chain(rest)
        .map(|p| p.name.clone())
        .collect()
}

fn summary(stats: &PoolStats, pick: impl Fn(&FamilyStats) -> u128, ranges: &[IpRange]) -> String {
    let has = |f: Family| ranges.iter().any(|r| r.family() == f);
    let mut parts = Vec::new();
    if has(Family::V4) {
        parts.push((Family::V4, pick(stats.family(Family::V4))));
    }
    if has(Family::V6) {
        parts.push((Family::V6, pick(stats.family(Family::V6))));
    }
    match parts.as_slice() {
        [] => "0".into(),
        [(_, n)] => n.to_string(),
        _ => parts
            .iter()
            .map(|(f, n)| format!("{} {n}", if *f == Family::V4 { "IPv4" } else { "IPv6" }))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The status a pool should show given the allocator's counts and the overlaps found.
pub fn desired_status(
    pool: &PoolView,
    stats: PoolStats,
    overlaps: &[Overlap],
    now: &Time,
) -> IPAddressPoolStatus {
    let previous = pool.status.as_ref();
    let prev = |t: &str| previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == t));
    let v4 = stats.family(Family::V4);
    let v6 = stats.family(Family::V6);

    let mut problems = Vec::new();
    if !pool.bad_entries.is_empty() {
        problems.push(format!("ignored entries: {}", pool.bad_entries.join("; ")));
    }
    if !pool.bad_selectors.is_empty() {
        problems.push(format!(
            "selectors that select nothing: {}",
            pool.bad_selectors.join("; ")
        ));
    }
    let reason = if !pool.bad_entries.is_empty() {
        "InvalidAddresses"
    } else {
        "InvalidSelectors"
    };
    let ready = if problems.is_empty() {
        condition(
            conditions::POOL_READY,
            true,
            "Valid",
            "all addresses and selectors are valid".into(),
            pool.generation,
            prev(conditions::POOL_READY),
            now,
        )
    } else {
        condition(
            conditions::POOL_READY,
            false,
            reason,
            problems.join(". "),
            pool.generation,
            prev(conditions::POOL_READY),
            now,
        )
    };
    let mine: Vec<String> = overlaps
        .iter()
        .filter_map(|o| {
            let other = if o.a == pool.name {
                &o.b
            } else if o.b == pool.name {
                &o.a
            } else {
                return None;
            };
            Some(format!(
                "{}-{} is also in pool {other}",
                o.range.start(),
                o.range.end()
            ))
        })
        .collect();
    let overlap = if mine.is_empty() {
        condition(
            conditions::POOL_OVERLAP,
            false,
            "NoOverlap",
            "no address is in another pool".into(),
            pool.generation,
            prev(conditions::POOL_OVERLAP),
            now,
        )
    } else {
        condition(
            conditions::POOL_OVERLAP,
            true,
            "OverlapsOtherPools",
            format!("{}; each address is still handed out once", mine.join("; ")),
            pool.generation,
            prev(conditions::POOL_OVERLAP),
            now,
        )
    };
    IPAddressPoolStatus {
        assigned_ipv4: i64::try_from(v4.assigned).unwrap_or(i64::MAX),
        available_ipv4: i64::try_from(v4.available).unwrap_or(i64::MAX),
        assigned_ipv6: v6.assigned.to_string(),
        available_ipv6: v6.available.to_string(),
        assigned: summary(&stats, |f| f.assigned, &pool.config.ranges),
        available: summary(&stats, |f| f.available, &pool.config.ranges),
        conditions: vec![ready, overlap],
        observed_generation: pool.generation,
        nodes: None,
    }
}

/// The status of a forwarder-mode pool: how many Services it publishes and on which nodes
/// (`assigned` and `available` say so in words for `kubectl get ipaddresspools`), and `Ready`
/// as for any pool.
pub fn desired_node_pool_status(
    pool: &PoolView,
    services: usize,
    nodes: &[String],
    now: &Time,
) -> IPAddressPoolStatus {
    let previous = pool.status.as_ref();
    let prev = |t: &str| previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == t));
    let mut problems = Vec::new();
    if !pool.bad_entries.is_empty() {
        problems.push(format!("ignored entries: {}", pool.bad_entries.join("; ")));
    }
    if !pool.bad_selectors.is_empty() {
        problems.push(format!(
            "selectors that select nothing: {}",
            pool.bad_selectors.join("; ")
        ));
    }
    let ready = if problems.is_empty() {
        condition(
            conditions::POOL_READY,
            true,
            "Valid",
            "node selection and cidrs are valid".into(),
            pool.generation,
            prev(conditions::POOL_READY),
            now,
        )
    } else {
        condition(
            conditions::POOL_READY,
            false,
            if pool.bad_entries.is_empty() {
                "InvalidSelectors"
            } else {
                "InvalidAddresses"
            },
            problems.join(". "),
            pool.generation,
            prev(conditions::POOL_READY),
            now,
        )
    };
    let noun = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    IPAddressPoolStatus {
        assigned: noun(services, "Service", "Services"),
        available: noun(nodes.len(), "node", "nodes"),
        nodes: Some(if nodes.is_empty() {
            "none".into()
        } else {
            nodes.join(",")
        }),
        conditions: vec![ready],
        observed_generation: pool.generation,
        ..Default::default()
    }
}

/// Whether two statuses differ in anything but condition timestamps.
pub fn status_differs(a: &IPAddressPoolStatus, b: Option<&IPAddressPoolStatus>) -> bool {
    let Some(b) = b else { return true };
    let strip = |s: &IPAddressPoolStatus| IPAddressPoolStatus {
        conditions: without_times(&s.conditions),
        ..s.clone()
    };
    strip(a) != strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_crds::IPAddressPoolSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn pool(name: &str, auto: bool, alloc: Option<ServiceAllocation>) -> PoolView {
        let mut p = IPAddressPool::new(
            name,
            IPAddressPoolSpec {
                node_addresses: None,
                addresses: vec!["198.51.100.0/28".into()],
                auto_assign: auto,
                avoid_buggy_ips: false,
                service_allocation: alloc,
            },
        );
        p.metadata.generation = Some(1);
        PoolView::from_pool(&p).expect("named")
    }

    fn prio(p: Option<i32>, ns: &[&str]) -> Option<ServiceAllocation> {
        Some(ServiceAllocation {
            priority: p,
            namespaces: ns.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
    }

    #[test]
    fn matching_pools_first_by_priority_then_auto_assign_pools() {
        let pools = [
            pool("zeta", true, None),
            pool("alpha", true, None),
            pool("manual", false, None),
            pool("blue-low", true, prio(Some(10), &["shop"])),
            pool("blue-high", true, prio(Some(1), &["shop"])),
            pool("blue-none", true, prio(None, &["shop"])),
            pool("red", true, prio(Some(0), &["other"])),
        ];
        let got = candidates(&pools, "shop", None, &BTreeMap::new());
        assert_eq!(
            got,
            vec!["blue-high", "blue-low", "blue-none", "alpha", "zeta"]
        );
    }

    #[test]
    fn selectors_on_namespaces_and_services() {
        let sel = |k: &str, v: &str| LabelSelector {
            match_labels: Some([(k.to_string(), v.to_string())].into()),
            ..Default::default()
        };
        let p = pool(
            "p",
            true,
            Some(ServiceAllocation {
                namespace_selectors: vec![sel("team", "a")],
                service_selectors: vec![sel("tier", "web")],
                ..Default::default()
            }),
        );
        let ns: BTreeMap<_, _> = [("team".to_string(), "a".to_string())].into();
        let web: BTreeMap<_, _> = [("tier".to_string(), "web".to_string())].into();
        assert_eq!(p.selects("x", Some(&ns), &web), Some(true));
        assert_eq!(p.selects("x", None, &web), Some(false));
        assert_eq!(p.selects("x", Some(&ns), &BTreeMap::new()), Some(false));
    }

    #[test]
    fn status_reports_counts_and_bad_entries() {
        let mut p = IPAddressPool::new(
            "p",
            IPAddressPoolSpec {
                node_addresses: None,
                addresses: vec![
                    "198.51.100.0/30".into(),
                    "nonsense".into(),
                    "2001:db8::/64".into(),
                ],
                auto_assign: true,
                avoid_buggy_ips: false,
                service_allocation: None,
            },
        );
        p.metadata.generation = Some(3);
        let view = PoolView::from_pool(&p).expect("named");
        assert_eq!(view.config.ranges.len(), 2);
        let mut alloc = ferrolb_allocator::Allocator::new();
        alloc.set_pools(vec![view.config.clone()]);
        let stats = alloc.pool_stats("p").expect("known pool");
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let st = desired_status(&view, stats, &[], &now);
        assert_eq!(st.available_ipv4, 4);
        assert_eq!(st.available_ipv6, "18446744073709551616");
        assert_eq!(st.available, "IPv4 4, IPv6 18446744073709551616");
        let ready = &st.conditions[0];
        assert_eq!(ready.status, "False");
        assert!(ready.message.contains("nonsense"), "{}", ready.message);
        assert!(!status_differs(&st, Some(&st)));
    }

    #[test]
    fn malformed_selectors_select_nothing_and_say_so() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
        let bad = |op: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "team".into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            ..Default::default()
        };
        let p = pool(
            "p",
            true,
            Some(ServiceAllocation {
                namespace_selectors: vec![bad("in", &["a"])],
                service_selectors: vec![LabelSelector::default(), bad("NotIn", &[])],
                ..Default::default()
            }),
        );
        assert_eq!(
            p.bad_selectors,
            [
                "serviceAllocation.namespaceSelectors[0]: unknown label selector operator \"in\" (want In, NotIn, Exists or DoesNotExist)",
                "serviceAllocation.serviceSelectors[1]: label selector operator NotIn on key \"team\" needs at least one value",
            ]
        );
        let ns: BTreeMap<_, _> = [("team".to_string(), "a".to_string())].into();
        assert_eq!(p.selects("x", Some(&ns), &BTreeMap::new()), Some(false));

        let mut alloc = ferrolb_allocator::Allocator::new();
        alloc.set_pools(vec![p.config.clone()]);
        let stats = alloc.pool_stats("p").expect("known pool");
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let ready = desired_status(&p, stats, &[], &now).conditions[0].clone();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InvalidSelectors")
        );
        assert!(
            ready.message.contains("namespaceSelectors[0]"),
            "{}",
            ready.message
        );
        assert!(
            ready.message.contains("serviceSelectors[1]"),
            "{}",
            ready.message
        );
    }
}
