//! What the controller keeps of a Service, and how a Service's spec and annotations become an
//! allocator [`Request`].
//!
//! Pure: Kubernetes objects in, plain data out. Bad annotations become a [`RequestError`] that the
//! core turns into a condition on the Service; nothing here panics on user input.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_allocator::{Family, FamilyPolicy, Protocol, Request, SharingKey, TrafficPolicy};
use ferrolb_crds::{annotations, conditions};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::strmap::StrMap;

/// `namespace/name`, shared (not copied) between the core's index and its work sets.
pub type SvcKey = Arc<str>;

/// A short text that nearly every Service fills with one of a few values (an IP family, a
/// family policy, an `ipMode`, a condition's status or ferrolb's reason): those values are
/// borrowed from [`WORDS`], so they cost no allocation per Service; any other is copied.
pub type Word = Cow<'static, str>;

/// The values [`word`] shares instead of copying.
pub const WORDS: &[&str] = &[
    "IPv4",
    "IPv6",
    "SingleStack",
    "PreferDualStack",
    "RequireDualStack",
    "VIP",
    "Proxy",
    "True",
    "False",
    "Unknown",
    "Allocated",
    "NotInAnyPool",
    "NodeAddresses",
];

/// `text` as a [`Word`]: borrowed when it is one of [`WORDS`], else copied.
pub fn word(text: &str) -> Word {
    WORDS
        .iter()
        .find(|w| **w == text)
        .map_or_else(|| Cow::Owned(text.to_owned()), |w| Cow::Borrowed(*w))
}

/// The parts of a Service the controller needs. Keeping a projection rather than the object, with
/// boxed strings and slices (no spare capacity) and compact maps, keeps memory near a few hundred
/// bytes per Service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceView {
    /// `namespace/name`; neither part may contain a `/`, so it splits back unambiguously.
    pub key: SvcKey,
    /// For event references.
    pub uid: Option<Box<str>>,
    /// Orders restores: on conflicting published statuses the older Service keeps the IP.
    pub created: Option<Time>,
    /// Written into conditions' `observedGeneration`.
    pub generation: Option<i64>,
    /// `spec.type` is `LoadBalancer`.
    pub load_balancer: bool,
    /// `spec.loadBalancerClass`.
    pub class: Option<Box<str>>,
    /// Deprecated `spec.loadBalancerIP`.
    pub load_balancer_ip: Option<Box<str>>,
    /// Only ferrolb's and MetalLB's annotations.
    pub annotations: StrMap,
    /// For pools' `serviceSelectors`.
    pub labels: StrMap,
    /// `(protocol, port)` pairs, for sharing.
    pub ports: Box<[(Protocol, u16)]>,
    /// Canonical `k=v,k=v` of `spec.selector`, for sharing under `externalTrafficPolicy: Local`;
    /// empty under `Cluster`, where nothing reads it.
    pub selector: Box<str>,
    /// `externalTrafficPolicy: Local`.
    pub etp_local: bool,
    /// `spec.ipFamilies`, as the API server defaulted them.
    pub ip_families: Box<[Box<str>]>,
    /// `spec.ipFamilyPolicy`.
    pub ip_family_policy: Option<Word>,
    /// IPs published in `status.loadBalancer.ingress` (unparsable entries are kept as text).
    pub ingress: Box<[Box<str>]>,
    /// The `ipMode` every ingress entry says (`None`: they differ, or one has none).
    pub ingress_mode: Option<Word>,
    /// Our condition, if the Service carries it. Boxed: Services that are not ours have none.
    pub condition: Option<Box<ObservedCondition>>,
    /// Our `ferrolb.io/ForwarderReady` condition (forwarder mode), if the Service carries it.
    pub forwarder: Option<Box<ObservedCondition>>,
    /// `(protocol, nodePort)` of every port with a nodePort: a forwarder-mode port equal to one
    /// of these shadows that NodePort on the published addresses.
    pub node_ports: Box<[(Protocol, u16)]>,
    /// `spec.externalIPs`: kube-proxy forwards their ports, so forwarder mode must not publish
    /// the same address and port.
    pub external_ips: Box<[IpAddr]>,
}

/// What the controller reads of its `ferrolb.io/IPAllocated` condition on a Service: enough to
/// write nothing when it already says what ferrolb wants, and to keep `lastTransitionTime` while
/// the status stays the same.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedCondition {
    /// `True`, `False` or `Unknown`.
    pub status: Word,
    /// CamelCase reason.
    pub reason: Word,
    /// Human-readable message.
    pub message: Box<str>,
    /// When the status last changed.
    pub last_transition_time: Time,
}

impl ServiceView {
    /// Projects a Service. Returns `None` for an object without name or namespace.
    pub fn from_service(svc: &Service) -> Option<ServiceView> {
        let meta = &svc.metadata;
        let key: SvcKey =
            format!("{}/{}", meta.namespace.as_deref()?, meta.name.as_deref()?).into();
        let spec = svc.spec.as_ref();
        let status = svc.status.as_ref();
        let ingress_list = status
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_deref())
            .unwrap_or_default();
        let ingress = ingress_list
            .iter()
            .filter_map(|i| i.ip.as_deref())
            .map(Box::from)
            .collect();
        let first_mode = ingress_list.first().and_then(|i| i.ip_mode.as_deref());
        let ingress_mode = ingress_list
            .iter()
            .all(|i| i.ip_mode.as_deref() == first_mode)
            .then_some(first_mode)
            .flatten()
            .map(word);
        let observed = |type_: &str| {
            status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
                .map(|c| {
                    Box::new(ObservedCondition {
                        status: word(&c.status),
                        reason: word(&c.reason),
                        message: c.message.as_str().into(),
                        last_transition_time: c.last_transition_time.clone(),
                    })
                })
        };
        let condition = observed(conditions::IP_ALLOCATED);
        let forwarder = observed(conditions::FORWARDER_READY);
        let annotations = StrMap::from_pairs(
            meta.annotations
                .iter()
                .flatten()
                .filter(|(k, _)| {
                    k.starts_with("ferrolb.io/")
                        || annotations::METALLB_PREFIXES
                            .iter()
                            .any(|p| k.starts_with(p))
                })
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let port_list = |node_port: bool| -> Box<[(Protocol, u16)]> {
            spec.and_then(|s| s.ports.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let proto = match p.protocol.as_deref().unwrap_or("TCP") {
                        "TCP" => Protocol::Tcp,
                        "UDP" => Protocol::Udp,
                        "SCTP" => Protocol::Sctp,
                        _ => return None,
                    };
                    let port = if node_port { p.node_port? } else { p.port };
                    u16::try_from(port).ok().map(|port| (proto, port))
                })
                .collect()
        };
        let ports = port_list(false);
        let node_ports = port_list(true);
        let external_ips = spec
            .and_then(|s| s.external_ips.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|a| a.parse().ok())
            .collect();
        let etp_local = spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local");
        let selector = spec
            .and_then(|s| s.selector.as_ref())
            .filter(|_| etp_local)
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
            .into_boxed_str();
        let text = |v: Option<&String>| v.map(|s| Box::from(s.as_str()));
        Some(ServiceView {
            key,
            uid: text(meta.uid.as_ref()),
            created: meta.creation_timestamp.clone(),
            generation: meta.generation,
            load_balancer: spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer"),
            class: text(spec.and_then(|s| s.load_balancer_class.as_ref())),
            load_balancer_ip: text(
                spec.and_then(|s| s.load_balancer_ip.as_ref())
                    .filter(|s| !s.is_empty()),
            ),
            annotations,
            labels: meta.labels.as_ref().map(StrMap::from).unwrap_or_default(),
            ports,
            selector,
            etp_local,
            ip_families: spec
                .and_then(|s| s.ip_families.as_ref())
                .into_iter()
                .flatten()
                .map(|f| Box::from(f.as_str()))
                .collect(),
            ip_family_policy: spec.and_then(|s| s.ip_family_policy.as_deref()).map(word),
            ingress,
            ingress_mode,
            condition,
            forwarder,
            node_ports,
            external_ips,
        })
    }

    /// `namespace/name`.
    pub fn key(&self) -> &SvcKey {
        &self.key
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        self.key.split_once('/').map_or(&self.key, |(ns, _)| ns)
    }

    /// The name.
    pub fn name(&self) -> &str {
        self.key.split_once('/').map_or("", |(_, name)| name)
    }

    /// Whether ferrolb should serve this Service.
    pub fn is_ours(&self, lb_class: &str, ignore_classless: bool) -> bool {
        self.load_balancer
            && match &self.class {
                None => !ignore_classless,
                Some(c) => &**c == lb_class,
            }
    }

    /// Whether the Service carries anything ferrolb wrote (so it must be cleaned when it stops being ours).
    pub fn has_our_marks(&self) -> bool {
        self.condition.is_some()
            || self.forwarder.is_some()
            || self
                .annotations
                .contains_key(annotations::ALLOCATED_FROM_POOL)
    }

    /// Published IPs that parse.
    pub fn current_ips(&self) -> Vec<IpAddr> {
        self.ingress.iter().filter_map(|s| s.parse().ok()).collect()
    }

    /// The annotation `suffix` under ferrolb's name, else MetalLB's. The second value names the
    /// MetalLB key that was used, for a deprecation warning.
    pub fn annotation(&self, suffix: &str) -> (Option<&str>, Option<String>) {
        if let Some(v) = self.annotations.get(&format!("ferrolb.io/{suffix}")) {
            return (Some(v), None);
        }
        for prefix in annotations::METALLB_PREFIXES {
            let key = format!("{prefix}{suffix}");
            if let Some(v) = self.annotations.get(&key) {
                return (Some(v), Some(key));
            }
        }
        (None, None)
    }
}

/// Why a Service's request could not even be formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Both the deprecated field and the annotation ask for IPs.
    #[error(
        "both spec.loadBalancerIP ({field}) and {annotation} ({value}) are set; keep only the annotation"
    )]
    BothIpFields {
        field: String,
        annotation: String,
        value: String,
    },
    /// An entry of the IP annotation is not an IP.
    #[error("{annotation}: {value:?} is not an IP address")]
    BadIp { annotation: String, value: String },
    /// Two IPs of one family requested.
    #[error("{annotation}: at most one IP per family, got {value}")]
    TwoOfAFamily { annotation: String, value: String },
    /// The sharing key is empty.
    #[error("{annotation} is empty; give a sharing key or remove it")]
    EmptySharingKey { annotation: String },
    /// `spec.ipFamilies` names no family we know.
    #[error("spec.ipFamilies {0:?} names no IP family")]
    NoFamily(Vec<String>),
}

impl RequestError {
    /// Stable label for metrics and condition reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            RequestError::BothIpFields { .. } => "ConflictingIPRequests",
            RequestError::BadIp { .. } => "InvalidIPAnnotation",
            RequestError::TwoOfAFamily { .. } => "InvalidIPAnnotation",
            RequestError::EmptySharingKey { .. } => "InvalidSharingKey",
            RequestError::NoFamily(_) => "NoIPFamily",
        }
    }
}

/// A request, plus the MetalLB annotation keys it used (each gets one deprecation warning).
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    /// The allocator's request, without `candidate_pools` (the core fills those in).
    pub request: Request,
    /// MetalLB annotation keys in use, with the ferrolb key to use instead.
    pub deprecated: Vec<(String, String)>,
}

fn family_of(name: &str) -> Option<Family> {
    match name {
        "IPv4" => Some(Family::V4),
        "IPv6" => Some(Family::V6),
        _ => None,
    }
}

/// Reads what the Service asks for.
pub fn build_request(view: &ServiceView) -> Result<Built, RequestError> {
    let mut deprecated = Vec::new();
    let mut note = |used: Option<String>, suffix: &str| {
        if let Some(key) = used {
            deprecated.push((key, format!("ferrolb.io/{suffix}")));
        }
    };

    let fams: Vec<Family> = view
        .ip_families
        .iter()
        .filter_map(|f| family_of(f))
        .collect();
    let first = match fams.first() {
        Some(f) => *f,
        // The API server always defaults ipFamilies; an empty list means a very old object.
        None if view.ip_families.is_empty() => Family::V4,
        None => {
            return Err(RequestError::NoFamily(
                view.ip_families.iter().map(|f| f.to_string()).collect(),
            ));
        }
    };
    let other = match first {
        Family::V4 => Family::V6,
        Family::V6 => Family::V4,
    };
    let families = match view.ip_family_policy.as_deref() {
        Some("RequireDualStack") => FamilyPolicy::RequireDual([first, other]),
        Some("PreferDualStack") => FamilyPolicy::PreferDual([first, other]),
        _ => FamilyPolicy::Single(first),
    };
    let mut request = Request::new(families);

    let (ips, used) = view.annotation("loadBalancerIPs");
    note(used.clone(), "loadBalancerIPs");
    let annotation_name = used.unwrap_or_else(|| annotations::LOAD_BALANCER_IPS.to_string());
    if let (Some(field), Some(value)) = (&view.load_balancer_ip, ips) {
        return Err(RequestError::BothIpFields {
            field: field.to_string(),
            annotation: annotation_name,
            value: value.to_string(),
        });
    }
    let (source, text) = match (ips, &view.load_balancer_ip) {
        (Some(v), _) => (annotation_name, v.to_string()),
        (None, Some(f)) => ("spec.loadBalancerIP".to_string(), f.to_string()),
        (None, None) => (String::new(), String::new()),
    };
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ip: IpAddr = part.parse().map_err(|_| RequestError::BadIp {
            annotation: source.clone(),
            value: part.to_string(),
        })?;
        if request
            .requested
            .iter()
            .any(|r| Family::of(*r) == Family::of(ip))
        {
            return Err(RequestError::TwoOfAFamily {
                annotation: source,
                value: text.clone(),
            });
        }
        request.requested.push(ip);
    }

    let (pool, used) = view.annotation("address-pool");
    note(used, "address-pool");
    request.pool = pool
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from);

    let (share, used) = view.annotation("allow-shared-ip");
    if let Some(key) = share {
        if key.trim().is_empty() {
            let annotation = used
                .clone()
                .unwrap_or_else(|| annotations::ALLOW_SHARED_IP.into());
            return Err(RequestError::EmptySharingKey { annotation });
        }
        request.sharing = Some(SharingKey(key.trim().to_string()));
    }
    note(used, "allow-shared-ip");

    request.ports = view.ports.to_vec();
    request.traffic = if view.etp_local {
        TrafficPolicy::Local {
            selector: view.selector.to_string(),
        }
    } else {
        TrafficPolicy::Cluster
    };
    request.current = view.current_ips();
    request.allow_ip_change = view
        .annotations
        .get(annotations::ALLOW_IP_CHANGE)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    Ok(Built {
        request,
        deprecated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use kube::api::ObjectMeta;

    fn svc(annotations: &[(&str, &str)], spec: ServiceSpec) -> ServiceView {
        let s = Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        };
        ServiceView::from_service(&s).expect("named")
    }

    fn lb() -> ServiceSpec {
        ServiceSpec {
            type_: Some("LoadBalancer".into()),
            ip_families: Some(vec!["IPv4".into()]),
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn the_projection_keeps_what_decisions_read() {
        use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

        let mut s = Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                uid: Some("u-1".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                annotations: Some(
                    [
                        ("ferrolb.io/ip-allocated-from-pool", "blue"),
                        ("metallb.io/address-pool", "red"),
                        ("note", "not ours"),
                    ]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ),
                ..Default::default()
            },
            spec: Some(lb()),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![LoadBalancerIngress {
                        ip: Some("198.51.100.7".into()),
                        ip_mode: Some("VIP".into()),
                        ..Default::default()
                    }]),
                }),
                conditions: Some(vec![Condition {
                    type_: conditions::IP_ALLOCATED.into(),
                    status: "True".into(),
                    reason: "Allocated".into(),
                    message: "198.51.100.7 from pool blue".into(),
                    observed_generation: None,
                    last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                }]),
            }),
        };
        let v = ServiceView::from_service(&s).expect("named");
        assert_eq!(&**v.key(), "shop/web");
        assert_eq!((v.namespace(), v.name()), ("shop", "web"));
        assert_eq!(v.uid.as_deref(), Some("u-1"));
        assert_eq!(v.labels.get("app"), Some("web"));
        assert_eq!(
            v.annotations.iter().collect::<Vec<_>>(),
            vec![
                ("ferrolb.io/ip-allocated-from-pool", "blue"),
                ("metallb.io/address-pool", "red")
            ],
            "only ferrolb's and MetalLB's annotations are kept"
        );
        assert!(v.has_our_marks());
        assert_eq!(
            v.current_ips(),
            vec!["198.51.100.7".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(v.ingress_mode.as_deref(), Some("VIP"));
        let c = v.condition.as_deref().expect("condition");
        assert_eq!((&*c.status, &*c.reason), ("True", "Allocated"));
        assert_eq!(&*c.message, "198.51.100.7 from pool blue");
        assert_eq!(&*v.ip_families, &[Box::from("IPv4")]);
        assert!(v.load_balancer && v.class.is_none() && v.load_balancer_ip.is_none());

        s.metadata.namespace = None;
        assert!(
            ServiceView::from_service(&s).is_none(),
            "no namespace, no view"
        );
    }

    #[test]
    fn class_decides_ownership() {
        let mut s = svc(&[], lb());
        assert!(s.is_ours("ferrolb.io/lb", false));
        assert!(
            !s.is_ours("ferrolb.io/lb", true),
            "class-less ignored on request"
        );
        s.class = Some("other.example/lb".into());
        assert!(!s.is_ours("ferrolb.io/lb", false));
        s.class = Some("ferrolb.io/lb".into());
        assert!(s.is_ours("ferrolb.io/lb", true));
        s.load_balancer = false;
        assert!(!s.is_ours("ferrolb.io/lb", false));
    }

    #[test]
    fn annotation_ips_and_pool_and_sharing() {
        let s = svc(
            &[
                ("ferrolb.io/loadBalancerIPs", "198.51.100.7, 2001:db8::7"),
                ("ferrolb.io/address-pool", "blue"),
                ("ferrolb.io/allow-shared-ip", "k1"),
            ],
            lb(),
        );
        let b = build_request(&s).expect("valid");
        assert_eq!(b.request.requested.len(), 2);
        assert_eq!(b.request.pool.as_deref(), Some("blue"));
        assert_eq!(b.request.sharing, Some(SharingKey("k1".into())));
        assert_eq!(b.request.ports, vec![(Protocol::Tcp, 80)]);
        assert!(b.deprecated.is_empty());
    }

    #[test]
    fn both_ip_fields_is_an_error_in_words() {
        let mut spec = lb();
        spec.load_balancer_ip = Some("198.51.100.7".into());
        let s = svc(&[("ferrolb.io/loadBalancerIPs", "198.51.100.8")], spec);
        let e = build_request(&s).expect_err("conflict");
        assert!(e.to_string().contains("keep only the annotation"), "{e}");
    }

    #[test]
    fn malformed_annotations_are_errors() {
        let s = svc(&[("ferrolb.io/loadBalancerIPs", "198.51.100.300")], lb());
        assert!(matches!(build_request(&s), Err(RequestError::BadIp { .. })));
        let s = svc(
            &[("ferrolb.io/loadBalancerIPs", "198.51.100.1,198.51.100.2")],
            lb(),
        );
        assert!(matches!(
            build_request(&s),
            Err(RequestError::TwoOfAFamily { .. })
        ));
        let s = svc(&[("ferrolb.io/allow-shared-ip", " ")], lb());
        assert!(matches!(
            build_request(&s),
            Err(RequestError::EmptySharingKey { .. })
        ));
    }

    #[test]
    fn metallb_annotations_work_and_are_reported() {
        let s = svc(
            &[
                ("metallb.universe.tf/loadBalancerIPs", "198.51.100.9"),
                ("metallb.io/address-pool", "blue"),
            ],
            lb(),
        );
        let b = build_request(&s).expect("valid");
        assert_eq!(
            b.request.requested,
            vec!["198.51.100.9".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(b.request.pool.as_deref(), Some("blue"));
        let keys: Vec<_> = b.deprecated.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "metallb.universe.tf/loadBalancerIPs",
                "metallb.io/address-pool"
            ]
        );
    }

    #[test]
    fn family_policy_follows_spec() {
        let mut spec = lb();
        spec.ip_families = Some(vec!["IPv6".into(), "IPv4".into()]);
        spec.ip_family_policy = Some("RequireDualStack".into());
        let b = build_request(&svc(&[], spec.clone())).expect("valid");
        assert_eq!(
            b.request.families,
            FamilyPolicy::RequireDual([Family::V6, Family::V4])
        );
        spec.ip_family_policy = Some("PreferDualStack".into());
        let b = build_request(&svc(&[], spec.clone())).expect("valid");
        assert_eq!(
            b.request.families,
            FamilyPolicy::PreferDual([Family::V6, Family::V4])
        );
        spec.ip_family_policy = Some("SingleStack".into());
        let b = build_request(&svc(&[], spec)).expect("valid");
        assert_eq!(b.request.families, FamilyPolicy::Single(Family::V6));
    }

    #[test]
    fn common_words_are_shared_and_others_copied() {
        for w in WORDS {
            assert!(matches!(word(w), Cow::Borrowed(b) if b == *w));
        }
        assert!(matches!(word("ThirdStack"), Cow::Owned(o) if o == "ThirdStack"));
        let mut spec = lb();
        spec.ip_family_policy = Some("SingleStack".into());
        let v = svc(&[], spec);
        assert!(matches!(
            v.ip_family_policy,
            Some(Cow::Borrowed("SingleStack"))
        ));
    }

    #[test]
    fn the_selector_is_kept_only_under_local_policy() {
        let mut spec = lb();
        spec.selector = Some([("app".to_string(), "web".to_string())].into());
        assert_eq!(
            &*svc(&[], spec.clone()).selector,
            "",
            "Cluster: nothing reads it"
        );
        spec.external_traffic_policy = Some("Local".into());
        assert_eq!(&*svc(&[], spec).selector, "app=web");
    }

    #[test]
    fn local_policy_carries_the_selector() {
        let mut spec = lb();
        spec.external_traffic_policy = Some("Local".into());
        spec.selector = Some([("app".to_string(), "web".to_string())].into());
        let b = build_request(&svc(&[], spec)).expect("valid");
        assert_eq!(
            b.request.traffic,
            TrafficPolicy::Local {
                selector: "app=web".into()
            }
        );
    }
}
