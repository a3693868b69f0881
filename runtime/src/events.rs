//! Kubernetes events (`events.k8s.io/v1`) for both binaries: what kube's recorder does, with the
//! one difference users see. An event counts as a repeat (and is folded into its series) only when
//! its note is the same too. kube-runtime 5 folds by reason and action alone and keeps the first
//! note, so a later "announced by node-1 on eth1" would show as an earlier "announced by node-1
//! on eth0" with a higher count.
//!
//! Building the event, its cache key and the cache's decisions are pure ([`new_event`],
//! [`key_of`], [`Cache`]); [`Recorder`] only holds the cache and talks to the API server. The
//! cache is bounded in age and size, and keeps a few hundred bytes per event.

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

/// What makes two events the same event: its type, reason, action, note and the objects it is
/// about. Kept as one string (each field length-prefixed, so no two keys share a text) because
/// the cache holds one key per Service that had an event in the last six minutes: at a few
/// thousand Services created at once, nine `String`s apiece were most of the controller's memory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    warning: bool,
    text: Box<str>,
}

/// Appends `field` to a key's text, length-prefixed; `-` for a field that is absent.
fn push_field(text: &mut String, field: Option<&str>) {
    use std::fmt::Write as _;
    match field {
        Some(f) => {
            let _ = write!(text, "{}:{f}", f.len());
        }
        None => text.push('-'),
    }
}

fn push_reference(text: &mut String, r: &ObjectReference) {
    for field in [&r.api_version, &r.kind, &r.namespace, &r.name, &r.uid] {
        push_field(text, field.as_deref());
    }
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
    let mut text = String::new();
    push_field(&mut text, Some(&ev.reason));
    push_field(&mut text, Some(&ev.action));
    push_field(
        &mut text,
        Some(&truncate_note(ev.note.as_deref().unwrap_or_default())),
    );
    push_reference(&mut text, regarding);
    match &ev.secondary {
        Some(related) => {
            text.push('+');
            push_reference(&mut text, related);
        }
        None => text.push('-'),
    }
    Key {
        warning: ev.type_ == EventType::Warning,
        text: text.into_boxed_str(),
    }
}

/// What the cache keeps of a published event: enough to count a repeat in its series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Where the event object is.
    pub namespace: Box<str>,
    /// Its name.
    pub name: Box<str>,
    /// Its series count (1 for an event seen once).
    pub count: i32,
    /// When it was last seen.
    pub last_seen: Timestamp,
}

impl Published {
    /// The same event seen again at `now`: one more in its series.
    pub fn repeated(self, now: Timestamp) -> Published {
        Published {
            count: self.count.saturating_add(1),
            last_seen: now,
            ..self
        }
    }
}

/// Events published lately, by key: bounded in age ([`CACHE_TTL`]) and size (`max`, the
/// oldest forgotten first). Pure; [`Recorder`] keeps one behind a lock.
#[derive(Debug)]
pub struct Cache {
    max: usize,
    events: HashMap<Key, Published>,
}

impl Cache {
    /// An empty cache of at most `max` events.
    pub fn new(max: usize) -> Cache {
        Cache {
            max,
            events: HashMap::new(),
        }
    }

    /// The event published under `key` that a repeat at `now` continues, if any; forgets those
    /// too old to be continued.
    pub fn continued(&mut self, key: &Key, now: Timestamp) -> Option<Published> {
        self.events.retain(|_, e| e.last_seen + CACHE_TTL > now);
        self.events.get(key).cloned()
    }

    /// Remembers `event` under `key`, forgetting the oldest event if the cache is full.
    pub fn remember(&mut self, key: Key, event: Published) {
        if self.events.len() >= self.max
            && !self.events.contains_key(&key)
            && let Some(oldest) = self
                .events
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(k, _)| k.clone())
        {
            self.events.remove(&oldest);
        }
        self.events.insert(key, event);
    }

    /// How many events it holds.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
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

/// Publishes events, folding repeats into a series. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    reporter: Reporter,
    cache: Arc<Mutex<Cache>>,
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
            cache: Arc::new(Mutex::new(Cache::new(CACHE_MAX))),
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
        let earlier = self.cache.lock().await.continued(&key, now);
        let continued = match earlier {
            Some(e) => {
                let e = e.repeated(now);
                let body = serde_json::json!({ "series": EventSeries {
                    count: e.count,
                    last_observed_time: MicroTime(now),
                }});
                match Api::<K8sEvent>::namespaced(self.client.clone(), &e.namespace)
                    .patch(&e.name, &PatchParams::default(), &Patch::Merge(&body))
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
        let published = match continued {
            Some(e) => e,
            None => {
                let e = new_event(&self.reporter, ev, regarding, now);
                let namespace = e.metadata.namespace.clone().unwrap_or_default();
                let created = Api::<K8sEvent>::namespaced(self.client.clone(), &namespace)
                    .create(&PostParams::default(), &e)
                    .await?;
                Published {
                    namespace: namespace.into(),
                    name: created.metadata.name.unwrap_or_default().into(),
                    count: 1,
                    last_seen: now,
                }
            }
        };
        self.cache.lock().await.remember(key, published);
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
    fn fields_cannot_run_into_each_other() {
        // Joined with plain `:` separators, both would read "Announced:A:B".
        let mut a = ev("Announced", "x");
        a.action = "A:B".into();
        let mut b = ev("Announced", "x");
        b.reason = "Announced:A".into();
        b.action = "B".into();
        assert_ne!(key_of(&a, &svc()), key_of(&b, &svc()));
        let mut no_uid = svc();
        no_uid.uid = None;
        let mut empty_uid = svc();
        empty_uid.uid = Some(String::new());
        let e = ev("Announced", "x");
        assert_ne!(key_of(&e, &no_uid), key_of(&e, &empty_uid));
        let mut related = ev("Announced", "x");
        related.secondary = Some(svc());
        assert_ne!(key_of(&e, &svc()), key_of(&related, &svc()));
        let mut warning = ev("Announced", "x");
        warning.type_ = EventType::Warning;
        assert_ne!(key_of(&e, &svc()), key_of(&warning, &svc()));
    }

    fn published(name: &str, at: Timestamp) -> Published {
        Published {
            namespace: "shop".into(),
            name: name.into(),
            count: 1,
            last_seen: at,
        }
    }

    #[test]
    fn a_repeat_continues_the_event_for_six_minutes() {
        let t0 = Timestamp::from_second(1_700_000_000).expect("valid");
        let key = key_of(&ev("Announced", "announced by node-1 on eth0"), &svc());
        let mut cache = Cache::new(8);
        assert_eq!(cache.continued(&key, t0), None);
        cache.remember(key.clone(), published("web.1", t0));
        let later = t0 + SignedDuration::from_mins(5);
        assert_eq!(
            cache.continued(&key, later).map(|e| e.name),
            Some("web.1".into())
        );
        let again = published("web.1", t0).repeated(later);
        assert_eq!((again.count, again.last_seen), (2, later));
        assert_eq!(cache.continued(&key, t0 + CACHE_TTL), None);
        assert!(cache.is_empty(), "expired events are forgotten");
    }

    #[test]
    fn a_full_cache_forgets_the_oldest_event() {
        let t0 = Timestamp::from_second(1_700_000_000).expect("valid");
        let keys: Vec<Key> = (0..3)
            .map(|i| key_of(&ev("Announced", &format!("n{i}")), &svc()))
            .collect();
        let mut cache = Cache::new(2);
        cache.remember(
            keys[0].clone(),
            published("a", t0 + SignedDuration::from_secs(2)),
        );
        cache.remember(keys[1].clone(), published("b", t0));
        // Replacing a key already held evicts nothing.
        cache.remember(
            keys[0].clone(),
            published("a2", t0 + SignedDuration::from_secs(3)),
        );
        assert_eq!(cache.len(), 2);
        cache.remember(
            keys[2].clone(),
            published("c", t0 + SignedDuration::from_secs(4)),
        );
        assert_eq!(cache.len(), 2);
        let now = t0 + SignedDuration::from_secs(5);
        assert_eq!(cache.continued(&keys[1], now), None, "the oldest went");
        assert_eq!(
            cache.continued(&keys[0], now).map(|e| e.name),
            Some("a2".into())
        );
        assert_eq!(
            cache.continued(&keys[2], now).map(|e| e.name),
            Some("c".into())
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
