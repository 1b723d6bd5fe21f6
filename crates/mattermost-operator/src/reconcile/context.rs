//! What every reconcile shares: the client, the child caches, the cap, the settings.

use std::sync::Arc;

use crate::recorder::Recorder;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::retry::{Backoff, Resync};
use crate::cache::Cached;
use crate::capacity::Capacity;
use crate::metrics::Metrics;
use crate::observe;
use crate::rollout_cap::RolloutSlots;

/// Caches of the children, filled by label-selected watches (see `controller`), each object kept
/// as [`Cached`]: read them with [`cached`].
#[derive(Clone)]
pub struct Stores {
    /// Deployments of installations.
    pub deployments: Store<Cached<Deployment>>,
    /// ReplicaSets of installations (for rollout progress).
    pub replica_sets: Store<Cached<ReplicaSet>>,
    /// Services of installations.
    pub services: Store<Cached<Service>>,
    /// Ingresses of installations.
    pub ingresses: Store<Cached<Ingress>>,
    /// ServiceAccounts of installations.
    pub service_accounts: Store<Cached<ServiceAccount>>,
    /// Upgrade Jobs (backup, update, verification) of installations.
    pub jobs: Store<Cached<Job>>,
    /// Volume claims of installations.
    pub pvcs: Store<Cached<PersistentVolumeClaim>>,
    /// Disruption budgets of installations.
    pub pdbs: Store<Cached<PodDisruptionBudget>>,
    /// Pods of installations (why new pods do not run; failed update-Job pods).
    pub pods: Store<Cached<Pod>>,
}

/// Settings of the update Job.
#[derive(Debug, Clone, Copy)]
pub struct UpdateJobSettings {
    /// Pod retries before the Job fails.
    pub backoff_limit: i32,
    /// Seconds before a running Job is failed.
    pub active_deadline_seconds: i64,
}

impl Default for UpdateJobSettings {
    fn default() -> Self {
        Self {
            backoff_limit: 2,
            active_deadline_seconds: 600,
        }
    }
}

/// Shared state of every reconcile.
pub struct Context {
    /// True once every child cache of this watch scope has its initial list.
    pub synced: tokio::sync::watch::Receiver<bool>,
    /// API client.
    pub client: Client,
    /// Child caches.
    pub stores: Stores,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Update Job settings.
    pub update_job: UpdateJobSettings,
    /// Image of the verification Jobs (the operator's own).
    pub operator_image: String,
    /// Rollout cap.
    pub slots: Arc<RolloutSlots>,
    /// The capacity preflight's view of the cluster; `None` when the operator may not watch Nodes
    /// (the check is skipped and the RolloutStarted event says so).
    pub capacity: Option<Arc<Capacity>>,
    /// Retry delays of failing installations.
    pub backoff: Backoff,
    /// When stable installations are reconciled again without a trigger.
    pub resync: Resync,
    /// When each installation's status was last written (progress is written at most every 5 s).
    pub status_pace: super::pace::Pace,
    /// Events published recently (not repeated from a stale cached status).
    pub published: super::pace::Published,
    /// Status writes the cache has not shown yet (a reconcile starts from them, not the cache).
    pub written: super::pace::Written,
    /// Children deleted a moment ago (not deleted again while the cache still shows them).
    pub deleted: super::pace::Deleted,
    /// Referenced Secrets as last read, shared across installations (see [`observe::SecretReads`]).
    pub secret_reads: Arc<observe::SecretReads>,
    /// What was read from referenced Secrets, per installation.
    pub observed: observe::Memo,
}

/// The cached object `ns/name`, if any.
pub(super) fn cached<K>(store: &Store<Cached<K>>, name: &str, ns: &str) -> Option<K>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + crate::trim::Trim + 'static,
{
    store.get(&ObjectRef::new(name).within(ns))?.object()
}

/// The cached objects of installation `app` in `ns` (by its label), decoded.
pub(super) fn cached_of<K>(store: &Store<Cached<K>>, ns: &str, app: &str) -> Vec<K>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + crate::trim::Trim + 'static,
{
    store
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(ns))
        .filter(|o| {
            o.meta()
                .labels
                .as_ref()
                .and_then(|l| l.get(crate::desired::labels::INSTALLATION_LABEL))
                .is_some_and(|a| a == app)
        })
        .filter_map(|o| o.object())
        .collect()
}
