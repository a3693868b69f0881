//! Keeps BGP mode's inputs ([`BgpInputs`]) current from watches on BGPPeers,
//! BGPAdvertisements, Communities, BFDProfiles, the Secrets of the Secret namespace and this
//! node's Node, and publishes them.
//!
//! Owns those watches and their projections ([`super::objects`]); it decides nothing.
//! Incremental (no polling). Nothing is published until every watch has listed once, so the
//! first routes a session announces (and its End-of-RIB) reflect the whole configuration;
//! during an API outage the last known inputs stay published.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ferrolb_crds::bgp::{BFDProfile, BGPAdvertisement, BGPPeer, Community, CommunityValue};
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use tokio::sync::watch;

use super::decide::BgpInputs;
use super::objects::{AdvInfo, BfdProfileInfo, PeerInfo, SelfNode, aliases, secret_password};

/// One kind's objects by key, with relist bookkeeping.
struct Store<V> {
    map: BTreeMap<String, V>,
    relist: Option<BTreeSet<String>>,
    synced: bool,
    what: &'static str,
}

impl<V: PartialEq> Store<V> {
    fn new(what: &'static str) -> Self {
        Store {
            map: BTreeMap::new(),
            relist: None,
            synced: false,
            what,
        }
    }

    /// Applies one event; true when the stored objects changed.
    fn apply<K>(
        &mut self,
        ev: Result<Event<K>, watcher::Error>,
        project: impl Fn(&K) -> Option<(String, V)>,
        key: impl Fn(&K) -> Option<String>,
    ) -> bool {
        match ev {
            Ok(Event::Init) => {
                self.relist = Some(BTreeSet::new());
                false
            }
            Ok(Event::InitApply(o)) | Ok(Event::Apply(o)) => {
                let Some((k, v)) = project(&o) else {
                    return false;
                };
                if let Some(seen) = self.relist.as_mut() {
                    seen.insert(k.clone());
                }
                if self.map.get(&k) == Some(&v) {
                    return false;
                }
                self.map.insert(k, v);
                true
            }
            Ok(Event::Delete(o)) => key(&o).is_some_and(|k| self.map.remove(&k).is_some()),
            Ok(Event::InitDone) => {
                let seen = self.relist.take().unwrap_or_default();
                let before = self.map.len();
                self.map.retain(|k, _| seen.contains(k));
                let first = !self.synced;
                self.synced = true;
                first || self.map.len() != before
            }
            Err(e) => {
                tracing::warn!(kind = self.what, error = %e, "watch error; retrying with backoff (last known state is kept)");
                false
            }
        }
    }
}

fn stream<K>(
    api: Api<K>,
    cfg: watcher::Config,
) -> BoxStream<'static, Result<Event<K>, watcher::Error>>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    watcher(api, cfg).default_backoff().boxed()
}

fn ns_name(meta: &kube::api::ObjectMeta) -> Option<String> {
    Some(format!(
        "{}/{}",
        meta.namespace.as_deref()?,
        meta.name.as_deref()?
    ))
}

/// Runs the watches forever, publishing into `tx` (at most every 10 ms while events flow).
pub async fn run(
    client: kube::Client,
    node: String,
    secret_namespace: String,
    tx: watch::Sender<Option<Arc<BgpInputs>>>,
) {
    let mut peers_w = stream(
        Api::<BGPPeer>::all(client.clone()),
        watcher::Config::default(),
    );
    let mut advs_w = stream(
        Api::<BGPAdvertisement>::all(client.clone()),
        watcher::Config::default(),
    );
    let mut comms_w = stream(
        Api::<Community>::all(client.clone()),
        watcher::Config::default(),
    );
    let mut bfd_w = stream(
        Api::<BFDProfile>::all(client.clone()),
        watcher::Config::default(),
    );
    let mut secrets_w = stream(
        Api::<Secret>::namespaced(client.clone(), &secret_namespace),
        watcher::Config::default(),
    );
    let mut node_w = stream(
        Api::<Node>::all(client),
        watcher::Config::default().fields(&format!("metadata.name={node}")),
    );

    let mut peers: Store<PeerInfo> = Store::new("BGPPeer");
    let mut advs: Store<AdvInfo> = Store::new("BGPAdvertisement");
    let mut comms: Store<Vec<(String, CommunityValue)>> = Store::new("Community");
    let mut bfds: Store<BfdProfileInfo> = Store::new("BFDProfile");
    let mut secrets: Store<Option<String>> = Store::new("Secret");
    let mut nodes: Store<SelfNode> = Store::new("Node");
    let mut dirty = false;
    let debounce = Duration::from_millis(10);
    let ns = secret_namespace.clone();
    loop {
        let changed = tokio::select! {
            Some(ev) = peers_w.next() => peers.apply(ev, |p| {
                let v = PeerInfo::from_peer(p, &ns)?;
                Some((v.name.clone(), v))
            }, |p| p.metadata.name.clone()),
            Some(ev) = advs_w.next() => advs.apply(ev, |a| {
                let v = AdvInfo::from_adv(a)?;
                Some((v.name.clone(), v))
            }, |a| a.metadata.name.clone()),
            Some(ev) = comms_w.next() => comms.apply(ev, |c| {
                Some((c.metadata.name.clone()?, aliases(c)))
            }, |c| c.metadata.name.clone()),
            Some(ev) = bfd_w.next() => bfds.apply(ev, |b| {
                Some((b.metadata.name.clone()?, BfdProfileInfo::from_profile(b)))
            }, |b| b.metadata.name.clone()),
            Some(ev) = secrets_w.next() => secrets.apply(ev, |s| {
                Some((ns_name(&s.metadata)?, secret_password(s)))
            }, |s| ns_name(&s.metadata)),
            Some(ev) = node_w.next() => nodes.apply(ev, |n| {
                Some((n.metadata.name.clone()?, SelfNode::from_node(n)))
            }, |n| n.metadata.name.clone()),
            _ = tokio::time::sleep(debounce), if dirty => {
                dirty = false;
                let synced = peers.synced && advs.synced && comms.synced && bfds.synced
                    && secrets.synced && nodes.synced;
                if synced {
                    let mut alias_map = BTreeMap::new();
                    for list in comms.map.values() {
                        for (name, value) in list {
                            alias_map.entry(name.clone()).or_insert(*value);
                        }
                    }
                    let inputs = BgpInputs {
                        peers: peers.map.clone(),
                        advs: advs.map.clone(),
                        aliases: alias_map,
                        bfd_profiles: bfds.map.clone(),
                        secrets: secrets.map.clone(),
                        node: nodes.map.get(&node).cloned(),
                    };
                    tx.send_replace(Some(Arc::new(inputs)));
                }
                false
            }
            else => break,
        };
        dirty |= changed;
    }
    tracing::error!("every BGP watch stream ended");
}
