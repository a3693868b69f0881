//! Kubernetes events (`events.k8s.io/v1`) for both binaries: what kube's recorder does, with the
//! one difference users see. An event counts as a repeat (and is folded into its series) only when
//! its note is the same too. kube-runtime 5 folds by reason and action alone and keeps the first
//! note, so a later "announced by node-1 on eth1" would show as an earlier "announced by node-1
//! on eth0" with a higher count.
//!
//! Building the event and its cache key is pure ([`new_event`], [`key_of`]); [`Recorder`] only
//! keeps the cache and talks to the API server. The cache is bounded in age and size.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use tokio::sync::Mutex;

pub use kube::runtime::events::{Event, EventType, Reporter};

/// How long an event may be continued as a series, as in Kubernetes' own recorders.
const CACHE_TTL: SignedDuration = SignedDuration::from_mins(6);
/// Most events remembered for folding; the oldest is forgotten beyond that.
const CACHE_MAX: usize = 4096;
/// The API server rejects longer notes (bytes).
pub const NOTE_MAX: usize = 1024;

/// What makes two events the same event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    warning: bool,
    reason: String,
    action: String,
    note: String,
    regarding: [Option<String>; 5],
    related: Option<[Option<String>; 5]>,
}

fn reference_key(r: &ObjectReference) -> [Option<String>; 5] {
    [
        r.api_version.clone(),
        r.kind.clone(),
        r.namespace.clone(),
        r.name.clone(),
        r.uid.clone(),
    ]
}

/// `note` cut to what the API server accepts, on a character boundary.
pub fn truncate_note(note: &str) -> String {
    if note.len() <= NOTE_MAX {
        return note.to_string();
    }
    let mut end = NOTE_MAX;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note[..end].to_string()
}

/// The key under which `ev` about `regarding` is folded. Pure.
pub fn key_of(ev: &Event, regarding: &ObjectReference) -> Key {
    Key {
        warning: ev.type_ == EventType::Warning,
        reason: ev.reason.clone(),
        action: ev.action.clone(),
        note: truncate_note(ev.note.as_deref().unwrap_or_default()),
        regarding: reference_key(regarding),
        related: ev.secondary.as_ref().map(reference_key),
    }
}

/// A new event object for `ev` about `regarding`, reported by `reporter` at `now`. Events about
/// cluster-scoped objects go to the `default` namespace, as Kubernetes' recorders put them. Pure.
pub fn new_event(
    reporter: &Reporter,
    ev: &Event,
    regarding: &ObjectReference,
    now: Timestamp,
) -> K8sEvent {
    let namespace = regarding
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let base = regarding.name.as_deref().unwrap_or(&reporter.controller);
    K8sEvent {
        metadata: ObjectMeta {
            name: Some(format!("{base}.{:x}", now.as_nanosecond())),
            namespace: Some(namespace),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(
            match ev.type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .into(),
        ),
        reason: Some(ev.reason.clone()),
        action: Some(ev.action.clone()),
        note: ev.note.as_deref().map(truncate_note),
        regarding: Some(regarding.clone()),
        related: ev.secondary.clone(),
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(
            reporter
                .instance
                .clone()
                .unwrap_or_else(|| reporter.controller.clone()),
        ),
        ..Default::default()
    }
}

fn last_seen(e: &K8sEvent) -> Timestamp {
    e.series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Publishes events, folding repeats into a series. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    reporter: Reporter,
    cache: Arc<Mutex<HashMap<Key, K8sEvent>>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("reporter", &self.reporter)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder reporting as `reporter`.
    pub fn new(client: kube::Client, reporter: Reporter) -> Recorder {
        Recorder {
            client,
            reporter,
            cache: Arc::default(),
        }
    }

    /// Creates the event, or, when the same event (note included) was published in the last six
    /// minutes, counts it in that event's series.
    pub async fn publish(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = key_of(ev, regarding);
        let earlier = {
            let mut cache = self.cache.lock().await;
            cache.retain(|_, e| last_seen(e) + CACHE_TTL > now);
            cache.get(&key).cloned()
        };
        let api_for = |e: &K8sEvent| -> Api<K8sEvent> {
            Api::namespaced(
                self.client.clone(),
                e.metadata.namespace.as_deref().unwrap_or("default"),
            )
        };
        let continued = match earlier {
            Some(mut e) => {
                let count = e.series.as_ref().map_or(2, |s| s.count.saturating_add(1));
                e.series = Some(EventSeries {
                    count,
                    last_observed_time: MicroTime(now),
                });
                let name = e.metadata.name.clone().unwrap_or_default();
                let body = serde_json::json!({ "series": e.series });
                match api_for(&e)
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
                    .await
                {
                    Ok(_) => Some(e),
                    // Deleted meanwhile (by hand, or by a short --event-ttl): start afresh.
                    Err(kube::Error::Api(s)) if s.is_not_found() => None,
                    Err(err) => return Err(err),
                }
            }
            None => None,
        };
        let event = match continued {
            Some(e) => e,
            None => {
                let e = new_event(&self.reporter, ev, regarding, now);
                api_for(&e).create(&PostParams::default(), &e).await?
            }
        };
        let mut cache = self.cache.lock().await;
        if cache.len() >= CACHE_MAX
            && !cache.contains_key(&key)
            && let Some(oldest) = cache
                .iter()
                .min_by_key(|(_, e)| last_seen(e))
                .map(|(k, _)| k.clone())
        {
            cache.remove(&oldest);
        }
        cache.insert(key, event);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(reason: &str, note: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Announce".into(),
            secondary: None,
        }
    }

    fn svc() -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some("shop".into()),
            name: Some("web".into()),
            uid: Some("u1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_new_note_is_a_new_event() {
        let a = key_of(&ev("Announced", "announced by node-1 on eth0"), &svc());
        let b = key_of(&ev("Announced", "announced by node-1 on eth1"), &svc());
        assert_ne!(a, b, "kube-runtime's recorder would fold these");
        assert_eq!(
            a,
            key_of(&ev("Announced", "announced by node-1 on eth0"), &svc())
        );
        let mut other = svc();
        other.uid = Some("u2".into());
        assert_ne!(
            a,
            key_of(&ev("Announced", "announced by node-1 on eth0"), &other)
        );
    }

    #[test]
    fn events_about_cluster_objects_go_to_default() {
        let node = ObjectReference {
            kind: Some("Node".into()),
            name: Some("node-1".into()),
            ..Default::default()
        };
        let r = Reporter {
            controller: "ferrolb-speaker".into(),
            instance: Some("node-1".into()),
        };
        let now = Timestamp::from_second(1_700_000_000).expect("valid");
        let e = new_event(&r, &ev("InterfaceUnusable", "eth9 is missing"), &node, now);
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
        assert!(
            e.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("node-1."))
        );
        assert_eq!(e.reporting_instance.as_deref(), Some("node-1"));
        assert_eq!(e.type_.as_deref(), Some("Normal"));
    }

    #[test]
    fn notes_are_cut_to_the_api_limit_on_a_char_boundary() {
        let long = "é".repeat(600);
        let cut = truncate_note(&long);
        assert!(cut.len() <= NOTE_MAX && cut.chars().all(|c| c == 'é'));
        assert_eq!(cut.chars().count(), 512);
        assert_eq!(truncate_note("short"), "short");
    }
}
