//! The capacity preflight's view of the cluster, kept by two watches (Nodes, and Pods bound to a
//! node that have not finished) instead of a LIST of every Node and Pod per upgrade. Only the
//! summaries the check needs are kept ([`NodeCapacity`], [`PodUsage`]: a few dozen bytes per pod),
//! so memory grows with the cluster's pod count by that much, and an upgrade costs no request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use mattermost_api::v1beta1::Mattermost;
use tokio::sync::watch;

use crate::preflight::{self, Blocked, ClusterView, NodeCapacity, PodUsage};
use crate::watch::{Health, guarded};

/// Pods that occupy a node: bound and not finished (a pod leaving this selection is a delete).
const BOUND_AND_RUNNING: &str = "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed";

/// The shared capacity view (one per operator, whatever the number of watched namespaces).
#[derive(Debug)]
pub struct Capacity {
    nodes: Mutex<HashMap<String, NodeCapacity>>,
    pods: Mutex<HashMap<String, PodUsage>>,
    nodes_synced: watch::Sender<bool>,
    pods_synced: watch::Sender<bool>,
}

impl Capacity {
    /// Starts the two watches on `client` (cluster-wide; needs list/watch on nodes and pods).
    pub fn start(client: &Client, health: &Health) -> Arc<Self> {
        let this = Arc::new(Self {
            nodes: Mutex::default(),
            pods: Mutex::default(),
            nodes_synced: watch::channel(false).0,
            pods_synced: watch::channel(false).0,
        });
        let nodes = watcher::watcher(Api::<Node>::all(client.clone()), crate::watch::config());
        let pods = watcher::watcher(
            Api::<Pod>::all(client.clone()),
            crate::watch::config().fields(BOUND_AND_RUNNING),
        );
        tokio::spawn(follow(
            guarded("Node capacity".to_owned(), nodes, health),
            this.clone(),
            |c| &c.nodes,
            |c| &c.nodes_synced,
            |n: &Node| Some(NodeCapacity::of(n)),
        ));
        tokio::spawn(follow(
            guarded("Pod requests in all namespaces".to_owned(), pods, health),
            this.clone(),
            |c| &c.pods,
            |c| &c.pods_synced,
            PodUsage::of,
        ));
        this
    }

    /// Completes once both watches have their initial list.
    pub async fn synced(&self) {
        let mut nodes = self.nodes_synced.subscribe();
        let mut pods = self.pods_synced.subscribe();
        let _ = nodes.wait_for(|s| *s).await;
        let _ = pods.wait_for(|s| *s).await;
    }

    /// The cluster as it is now.
    pub fn view(&self) -> ClusterView {
        let nodes: Vec<(String, NodeCapacity)> = self
            .nodes
            .lock()
            .map(|n| n.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let pods: Vec<PodUsage> = self
            .pods
            .lock()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default();
        ClusterView::new(nodes, pods)
    }

    /// Whether `count` more pods of `mm` fit now.
    pub fn check(&self, mm: &Mattermost, count: u32) -> Result<(), Blocked> {
        preflight::installation_fits(&self.view(), mm, count)
    }
}

/// Keeps one summary map up to date from a watch; a relist replaces it whole.
async fn follow<K, V>(
    events: impl Stream<Item = Result<Event<K>, watcher::Error>>,
    capacity: Arc<Capacity>,
    map: fn(&Capacity) -> &Mutex<HashMap<String, V>>,
    synced: fn(&Capacity) -> &watch::Sender<bool>,
    summary: fn(&K) -> Option<V>,
) where
    K: kube::Resource,
{
    let key = |k: &K| format!("{}/{}", k.namespace().unwrap_or_default(), k.name_any());
    let mut relist: Option<HashMap<String, V>> = None;
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let Ok(event) = event else { continue };
        match event {
            Event::Init => relist = Some(HashMap::new()),
            Event::InitApply(obj) => {
                if let (Some(r), Some(v)) = (relist.as_mut(), summary(&obj)) {
                    r.insert(key(&obj), v);
                }
            }
            Event::InitDone => {
                if let (Some(r), Ok(mut m)) = (relist.take(), map(&capacity).lock()) {
                    *m = r;
                }
                synced(&capacity).send_replace(true);
            }
            Event::Apply(obj) => {
                if let Ok(mut m) = map(&capacity).lock() {
                    match summary(&obj) {
                        Some(v) => m.insert(key(&obj), v),
                        None => m.remove(&key(&obj)),
                    };
                }
            }
            Event::Delete(obj) => {
                if let Ok(mut m) = map(&capacity).lock() {
                    m.remove(&key(&obj));
                }
            }
        }
    }
}
