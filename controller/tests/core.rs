//! The controller core, driven with plain data: what it writes, and above all what it does not write.

use std::collections::BTreeSet;

use ferrolb_controller::core::{Action, Core, CoreConfig, Kind};
use ferrolb_controller::pools::PoolView;
use ferrolb_controller::service::ServiceView;
use ferrolb_crds::{IPAddressPool, IPAddressPoolSpec};
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec, ServiceStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ObjectMeta;

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}

fn service(name: &str, created_s: i64) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            uid: Some(format!("uid-{name}")),
            creation_timestamp: Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(created_s).expect("valid time"),
            )),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            ip_families: Some(vec!["IPv4".into()]),
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn pool(name: &str, addresses: &[&str]) -> PoolView {
    let p = IPAddressPool::new(
        name,
        IPAddressPoolSpec {
            node_addresses: None,
            addresses: addresses.iter().map(|s| s.to_string()).collect(),
            auto_assign: true,
            avoid_buggy_ips: false,
            service_allocation: None,
        },
    );
    PoolView::from_pool(&p).expect("named")
}

fn view(s: &Service) -> ServiceView {
    ServiceView::from_service(s).expect("named")
}

/// A core that has synced `pools` and `services` and leads.
fn core_with(pools: &[PoolView], services: &[Service]) -> Core {
    let mut c = Core::new(CoreConfig {
        lb_class: "ferrolb.io/lb".into(),
        ignore_classless: false,
        block_node_port_shadowing: false,
    });
    for p in pools {
        c.upsert_pool(p.clone());
    }
    for s in services {
        c.upsert_service(view(s));
    }
    let names = |it: Vec<String>| it.into_iter().collect::<BTreeSet<_>>();
    c.resynced(
        Kind::Pools,
        &names(pools.iter().map(|p| p.name.clone()).collect()),
    );
    c.resynced(
        Kind::Services,
        &names(
            services
                .iter()
                .map(|s| format!("shop/{}", s.metadata.name.clone().unwrap_or_default()))
                .collect(),
        ),
    );
    for k in [
        Kind::Namespaces,
        Kind::L2Advertisements,
        Kind::Nodes,
        Kind::ForwarderNodes,
        Kind::SpeakerPods,
        Kind::EndpointSlices,
    ] {
        c.resynced(k, &BTreeSet::new());
    }
    c.set_leader(true);
    c
}

/// Applies the core's status and annotation writes to the objects, as the API server would, so the
/// next watch event carries them.
fn echo(services: &mut [Service], actions: &[Action]) {
    for a in actions {
        match a {
            Action::ServiceStatus {
                name,
                ingress,
                condition,
                forwarder,
                ip_mode,
                ..
            } => {
                let s = services
                    .iter_mut()
                    .find(|s| s.metadata.name.as_deref() == Some(name))
                    .expect("known");
                s.status = Some(ServiceStatus {
                    load_balancer: Some(LoadBalancerStatus {
                        ingress: Some(
                            ingress
                                .iter()
                                .map(|ip| LoadBalancerIngress {
                                    ip: Some(ip.to_string()),
                                    ip_mode: Some(ip_mode.to_string()),
                                    ..Default::default()
                                })
                                .collect(),
                        ),
                    }),
                    conditions: Some(condition.iter().chain(forwarder).cloned().collect()),
                });
            }
            Action::ServiceAnnotation { name, pools, .. } => {
                let s = services
                    .iter_mut()
                    .find(|s| s.metadata.name.as_deref() == Some(name))
                    .expect("known");
                let ann = s.metadata.annotations.get_or_insert_with(Default::default);
                match pools {
                    Some(p) => {
                        ann.insert("ferrolb.io/ip-allocated-from-pool".into(), p.clone());
                    }
                    None => {
                        ann.remove("ferrolb.io/ip-allocated-from-pool");
                    }
                }
            }
            _ => {}
        }
    }
}

fn ips(actions: &[Action], svc: &str) -> Option<Vec<String>> {
    actions.iter().find_map(|a| match a {
        Action::ServiceStatus { name, ingress, .. } if name == svc => {
            Some(ingress.iter().map(|i| i.to_string()).collect())
        }
        _ => None,
    })
}

fn condition_of<'a>(
    actions: &'a [Action],
    svc: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    actions.iter().find_map(|a| match a {
        Action::ServiceStatus {
            name, condition, ..
        } if name == svc => condition.as_ref(),
        _ => None,
    })
}

#[test]
fn allocates_then_stays_silent() {
    let mut svcs = vec![service("a", 1)];
    let pools = [pool("blue", &["198.51.100.10-198.51.100.11"])];
    let mut core = core_with(&pools, &svcs);
    let actions = core.reconcile(&now());
    assert_eq!(ips(&actions, "a"), Some(vec!["198.51.100.10".to_string()]));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::ServiceAnnotation { pools: Some(p), .. } if p == "blue"))
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Event { reason, .. } if reason == "IPAllocated"))
    );

    // Nothing more while the watch has not echoed the write.
    assert!(core.reconcile(&now()).is_empty());
    // The watch echoes it: still nothing.
    echo(&mut svcs, &actions);
    core.upsert_service(view(&svcs[0]));
    assert!(
        core.reconcile(&now()).is_empty(),
        "no write when the cluster shows what we want"
    );
}

#[test]
fn restart_with_published_statuses_writes_nothing() {
    let pools = [pool("blue", &["198.51.100.0/26"])];
    let mut svcs: Vec<Service> = (0..200).map(|i| service(&format!("s{i:03}"), i)).collect();
    let mut first = core_with(&pools, &svcs);
    let actions = first.reconcile(&now());
    echo(&mut svcs, &actions);
    // Only 64 fit; the rest fail. Their failure conditions are published too.
    let before: Vec<_> = svcs.iter().map(|s| s.status.clone()).collect();

    let mut second = core_with(&pools, &svcs);
    let again = second.reconcile(&now());
    assert!(
        again.is_empty(),
        "a restart must not write anything, got {} actions: {:?}",
        again.len(),
        again.first()
    );
    let after: Vec<_> = svcs.iter().map(|s| s.status.clone()).collect();
    assert_eq!(before, after);
}

#[test]
fn restart_keeps_ips_even_when_lower_ones_are_free() {
    // s1 published .12 while .10 and .11 are free: a fresh controller must not renumber it.
    let mut s1 = service("s1", 1);
    s1.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some("198.51.100.12".into()),
                ip_mode: Some("VIP".into()),
                ..Default::default()
            }]),
        }),
        conditions: None,
    });
    let mut core = core_with(&[pool("blue", &["198.51.100.10-198.51.100.20"])], &[s1]);
    let actions = core.reconcile(&now());
    assert_eq!(
        ips(&actions, "s1"),
        Some(vec!["198.51.100.12".to_string()]),
        "same IP, only the condition is added"
    );
}

#[test]
fn exhaustion_is_explained_and_recovers_when_an_ip_is_freed() {
    let mut svcs = vec![service("a", 1), service("b", 2)];
    let pools = [pool("tiny", &["198.51.100.10/32"])];
    let mut core = core_with(&pools, &svcs);
    let actions = core.reconcile(&now());
    echo(&mut svcs, &actions);
    let cond = condition_of(&actions, "b").expect("b gets a condition");
    assert_eq!(cond.status, "False");
    assert!(cond.message.contains("exhausted"), "{}", cond.message);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Event { warning: true, .. }))
    );
    for s in &svcs {
        core.upsert_service(view(s));
    }
    assert!(core.reconcile(&now()).is_empty());

    core.delete_service("shop/a");
    let actions = core.reconcile(&now());
    assert_eq!(ips(&actions, "b"), Some(vec!["198.51.100.10".to_string()]));
}

#[test]
fn an_ip_out_of_every_pool_is_kept_and_reported() {
    let mut svcs = vec![service("a", 1)];
    let mut core = core_with(&[pool("blue", &["198.51.100.10/32"])], &svcs);
    let actions = core.reconcile(&now());
    echo(&mut svcs, &actions);
    core.upsert_service(view(&svcs[0]));
    core.delete_pool("blue");
    let actions = core.reconcile(&now());
    assert_eq!(
        ips(&actions, "a"),
        Some(vec!["198.51.100.10".to_string()]),
        "the IP is kept"
    );
    let cond = condition_of(&actions, "a").expect("condition");
    assert_eq!(cond.reason, "NotInAnyPool");
    assert!(actions.iter().any(
        |a| matches!(a, Action::Event { warning: true, reason, .. } if reason == "NotInAnyPool")
    ));
}

#[test]
fn a_service_that_stops_being_ours_is_cleared() {
    let mut svcs = vec![service("a", 1)];
    let mut core = core_with(&[pool("blue", &["198.51.100.10/32"])], &svcs);
    let actions = core.reconcile(&now());
    echo(&mut svcs, &actions);
    svcs[0].spec.as_mut().expect("spec").type_ = Some("ClusterIP".into());
    core.upsert_service(view(&svcs[0]));
    let actions = core.reconcile(&now());
    assert_eq!(ips(&actions, "a"), Some(vec![]));
    assert!(
        condition_of(&actions, "a").is_none(),
        "our condition is removed"
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::ServiceAnnotation { pools: None, .. }))
    );
    // Once the clean-up is echoed, nothing of ours is left on it and it is not kept in memory.
    assert_eq!(core.service_count(), 1);
    echo(&mut svcs, &actions);
    core.upsert_service(view(&svcs[0]));
    assert!(core.reconcile(&now()).is_empty());
    assert_eq!(core.service_count(), 0);
}

#[test]
fn services_that_are_not_ours_are_not_indexed_until_they_become_ours() {
    let mut svcs = vec![service("a", 1)];
    svcs[0].spec.as_mut().expect("spec").type_ = Some("ClusterIP".into());
    let mut core = core_with(&[pool("blue", &["198.51.100.10/32"])], &svcs);
    assert_eq!(core.service_count(), 0);
    assert!(core.reconcile(&now()).is_empty());
    svcs[0].spec.as_mut().expect("spec").type_ = Some("LoadBalancer".into());
    core.upsert_service(view(&svcs[0]));
    assert_eq!(core.service_count(), 1);
    let actions = core.reconcile(&now());
    assert_eq!(ips(&actions, "a"), Some(vec!["198.51.100.10".to_string()]));
}

#[test]
fn nothing_happens_before_sync_or_without_leadership() {
    let svcs = vec![service("a", 1)];
    let mut c = Core::new(CoreConfig {
        lb_class: "ferrolb.io/lb".into(),
        ignore_classless: false,
        block_node_port_shadowing: false,
    });
    c.upsert_pool(pool("blue", &["198.51.100.10/32"]));
    c.upsert_service(view(&svcs[0]));
    c.set_leader(true);
    assert!(c.reconcile(&now()).is_empty(), "not synced");
    let mut c = core_with(&[pool("blue", &["198.51.100.10/32"])], &svcs);
    c.set_leader(false);
    assert!(c.reconcile(&now()).is_empty(), "standby writes nothing");
    c.set_leader(true);
    assert!(!c.reconcile(&now()).is_empty());
}

#[test]
fn a_pool_with_a_malformed_selector_gets_one_warning_and_a_condition() {
    use ferrolb_crds::ServiceAllocation;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
    let mut p = IPAddressPool::new(
        "blue",
        IPAddressPoolSpec {
            node_addresses: None,
            addresses: vec!["198.51.100.0/30".into()],
            auto_assign: true,
            avoid_buggy_ips: false,
            service_allocation: Some(ServiceAllocation {
                service_selectors: vec![LabelSelector {
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: "tier".into(),
                        operator: "in".into(),
                        values: Some(vec!["web".into()]),
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        },
    );
    let mut c = core_with(&[PoolView::from_pool(&p).expect("named")], &[]);
    assert!(
        c.reconcile(&now()).is_empty(),
        "no Service, nothing to write"
    );
    let first = c.object_statuses(&now());
    let warnings: Vec<_> = first
        .iter()
        .filter_map(|a| match a {
            Action::Event {
                warning: true,
                reason,
                note,
                ..
            } => Some((reason.clone(), note.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(warnings.len(), 1, "{first:?}");
    assert_eq!(warnings[0].0, "InvalidSelectors");
    assert!(
        warnings[0].1.contains("serviceSelectors[0]"),
        "{}",
        warnings[0].1
    );
    // The API server echoes the status back: nothing more to write, and no second warning.
    let status = first
        .iter()
        .find_map(|a| match a {
            Action::PoolStatus { status, .. } => Some(status.clone()),
            _ => None,
        })
        .expect("a status write");
    p.status = Some(status);
    c.upsert_pool(PoolView::from_pool(&p).expect("named"));
    assert!(c.object_statuses(&now()).is_empty());
}

mod forwarding {
    //! Forwarder mode through the core: node pools, reports, speakers and the writes they lead to.

    use super::*;
    use ferrolb_controller::forwarder::{NodeReport, NodeView, PortKey};
    use ferrolb_crds::NodeAddresses;

    fn node_pool(name: &str) -> PoolView {
        let p = IPAddressPool::new(
            name,
            IPAddressPoolSpec {
                node_addresses: Some(NodeAddresses::default()),
                addresses: Vec::new(),
                auto_assign: true,
                avoid_buggy_ips: false,
                service_allocation: None,
            },
        );
        PoolView::from_pool(&p).expect("named")
    }

    fn node(k: u8) -> NodeView {
        let n: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("node-{k}")},
            "status": {
                "addresses": [{"type": "InternalIP", "address": format!("198.51.100.1{k}")}],
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }))
        .expect("node");
        NodeView::from_node(&n).expect("named")
    }

    fn checked(ports: &[u16], busy: Option<u16>) -> NodeReport {
        let mut r = NodeReport::default();
        for p in ports {
            let key = PortKey {
                family: ferrolb_allocator::Family::V4,
                protocol: ferrolb_allocator::Protocol::Tcp,
                port: *p,
            };
            r.checked.insert(key);
            if busy == Some(*p) {
                r.unavailable.insert(
                    key,
                    (
                        "HostSocket".into(),
                        format!("a host process listens on 0.0.0.0:{p}"),
                    ),
                );
            }
        }
        r
    }

    fn forwarder_of<'a>(
        actions: &'a [Action],
        svc: &str,
    ) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
        actions.iter().find_map(|a| match a {
            Action::ServiceStatus {
                name, forwarder, ..
            } if name == svc => forwarder.as_ref(),
            _ => None,
        })
    }

    /// A core with a node pool, two Ready nodes with Ready speakers, and `services`.
    fn cluster(services: &[Service]) -> Core {
        let mut c = core_with(&[node_pool("edge")], services);
        for k in 1..=2 {
            c.upsert_node(node(k));
            c.upsert_speaker_pod(
                format!("ferrolb-system/speaker-{k}"),
                format!("node-{k}"),
                true,
            );
        }
        c
    }

    #[test]
    fn node_addresses_are_published_once_the_speakers_checked_the_port() {
        let mut svcs = vec![service("web", 1)];
        let mut core = cluster(&svcs);
        let actions = core.reconcile(&now());
        // The pool is chosen at once (the speakers learn the ports from it), nothing published.
        assert!(
            actions.iter().any(
                |a| matches!(a, Action::ServiceAnnotation { pools: Some(p), .. } if p == "edge")
            )
        );
        assert_eq!(ips(&actions, "web"), Some(vec![]));
        let f = forwarder_of(&actions, "web").expect("ForwarderReady");
        assert_eq!(
            (f.status.as_str(), f.reason.as_str()),
            ("False", "NoEligibleNodes")
        );
        assert!(
            f.message.contains("port check pending for 80/TCP"),
            "{}",
            f.message
        );
        echo(&mut svcs, &actions);
        core.upsert_service(view(&svcs[0]));
        assert!(
            core.reconcile(&now())
                .iter()
                .all(|a| matches!(a, Action::Event { .. }))
        );

        core.upsert_report("node-1".into(), checked(&[80], None));
        core.upsert_report("node-2".into(), checked(&[80], None));
        let actions = core.reconcile(&now());
        assert_eq!(
            ips(&actions, "web"),
            Some(vec![
                "198.51.100.11".to_string(),
                "198.51.100.12".to_string()
            ])
        );
        let f = forwarder_of(&actions, "web").expect("ForwarderReady");
        assert_eq!((f.status.as_str(), f.reason.as_str()), ("True", "AllNodes"));
        let alloc = condition_of(&actions, "web").expect("IPAllocated");
        assert_eq!(alloc.reason, "NodeAddresses");
        echo(&mut svcs, &actions);
        core.upsert_service(view(&svcs[0]));
        assert!(core.reconcile(&now()).is_empty(), "silent once shown");

        // A host socket on node-2: node-2 leaves, with a Warning event naming the culprit.
        core.upsert_report("node-2".into(), checked(&[80], Some(80)));
        let actions = core.reconcile(&now());
        assert_eq!(
            ips(&actions, "web"),
            Some(vec!["198.51.100.11".to_string()])
        );
        let f = forwarder_of(&actions, "web").expect("ForwarderReady");
        assert_eq!(f.reason, "PartiallyAvailable");
        assert!(
            actions.iter().any(|a| matches!(a, Action::Event { reason, note, warning: true, .. }
                if reason == "PortConflict" && note.contains("a host process listens on 0.0.0.0:80"))),
            "{actions:?}"
        );
        // Node-2's speaker goes away: node-2 stays out for that reason now.
        core.delete_speaker_pod("ferrolb-system/speaker-2");
        core.upsert_report("node-2".into(), checked(&[80], None));
        echo(&mut svcs, &actions);
        core.upsert_service(view(&svcs[0]));
        let actions = core.reconcile(&now());
        let f = forwarder_of(&actions, "web").expect("ForwarderReady");
        assert!(
            f.message
                .contains("node-2 (no ferrolb speaker is ready there)"),
            "{}",
            f.message
        );
    }

    #[test]
    fn the_younger_of_two_services_on_one_port_loses_and_both_hear_of_it() {
        let mut svcs = vec![service("traefik", 1), service("late", 2)];
        let mut core = cluster(&svcs);
        core.upsert_report("node-1".into(), checked(&[80], None));
        core.upsert_report("node-2".into(), checked(&[80], None));
        let actions = core.reconcile(&now());
        assert_eq!(ips(&actions, "traefik").map(|v| v.len()), Some(2));
        assert_eq!(ips(&actions, "late"), Some(vec![]));
        let f = forwarder_of(&actions, "late").expect("ForwarderReady");
        assert_eq!(f.reason, "PortConflict");
        assert!(
            f.message.contains("Service shop/traefik holds it"),
            "{}",
            f.message
        );
        let events: Vec<String> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Event {
                    target: ferrolb_controller::core::Target::Service { name, .. },
                    reason,
                    ..
                } if reason == "PortConflict" => Some(name.clone()),
                _ => None,
            })
            .collect();
        assert!(events.contains(&"late".to_string()) && events.contains(&"traefik".to_string()));

        // The older one goes: the younger gets the nodes.
        echo(&mut svcs, &actions);
        core.delete_service("shop/traefik");
        core.upsert_service(view(&svcs[1]));
        let actions = core.reconcile(&now());
        assert_eq!(ips(&actions, "late").map(|v| v.len()), Some(2));
    }

    #[test]
    fn k3s_labels_are_honoured_when_asked_and_said_once() {
        let mut svcs = vec![service("web", 1)];
        let mut p = IPAddressPool::new(
            "edge",
            IPAddressPoolSpec {
                node_addresses: Some(NodeAddresses {
                    k3s_servicelb_labels: true,
                    ..Default::default()
                }),
                addresses: Vec::new(),
                auto_assign: true,
                avoid_buggy_ips: false,
                service_allocation: None,
            },
        );
        p.metadata.uid = Some("uid-edge".into());
        let mut core = core_with(&[PoolView::from_pool(&p).expect("named")], &svcs);
        for k in 1..=2 {
            let mut n = node(k);
            if k == 2 {
                n.labels = ferrolb_controller::strmap::StrMap::from_pairs([(
                    "svccontroller.k3s.cattle.io/enablelb",
                    "true",
                )]);
            }
            core.upsert_node(n);
            core.upsert_speaker_pod(
                format!("ferrolb-system/speaker-{k}"),
                format!("node-{k}"),
                true,
            );
            core.upsert_report(format!("node-{k}"), checked(&[80], None));
        }
        let actions = core.reconcile(&now());
        assert_eq!(
            ips(&actions, "web"),
            Some(vec!["198.51.100.12".to_string()])
        );
        let noted = |a: &[Action]| {
            a.iter()
                .filter(|a| matches!(a, Action::Event { reason, note, .. }
                    if reason == "K3sServiceLBLabels" && note.contains("nodeAddresses.nodeSelector")))
                .count()
        };
        assert_eq!(noted(&actions), 1);
        echo(&mut svcs, &actions);
        core.upsert_service(view(&svcs[0]));
        core.upsert_node(node(1));
        assert_eq!(noted(&core.reconcile(&now())), 0, "said once");
    }

    #[test]
    fn leaving_forwarder_mode_removes_its_condition() {
        let mut svcs = vec![service("web", 1)];
        let mut core = cluster(&svcs);
        core.upsert_report("node-1".into(), checked(&[80], None));
        let actions = core.reconcile(&now());
        echo(&mut svcs, &actions);
        core.upsert_service(view(&svcs[0]));
        assert!(core.reconcile(&now()).is_empty());
        // Another class: everything ferrolb wrote goes.
        svcs[0].spec.as_mut().expect("spec").load_balancer_class = Some("other.io/lb".into());
        core.upsert_service(view(&svcs[0]));
        let actions = core.reconcile(&now());
        assert_eq!(ips(&actions, "web"), Some(vec![]));
        assert!(forwarder_of(&actions, "web").is_none());
        assert!(condition_of(&actions, "web").is_none());
    }
}
