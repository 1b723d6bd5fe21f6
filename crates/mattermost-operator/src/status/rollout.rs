//! Rollout progress read from a Deployment and its ReplicaSets, as the Go operator measured it.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

pub(super) const REVISION: &str = "deployment.kubernetes.io/revision";

/// Rollout progress of one Deployment, as the Go operator measured it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rollout {
    /// The Deployment controller has seen the current generation.
    pub observed: bool,
    /// Pods of all revisions (`deployment.status.replicas`).
    pub replicas: i32,
    /// Available pods of the current revision.
    pub updated: i32,
    /// Image reference of the newest revision with available pods.
    pub serving_image: Option<String>,
}

pub(crate) fn container_image(
    template_spec: Option<&k8s_openapi::api::core::v1::PodSpec>,
    name: &str,
) -> Option<String> {
    template_spec?
        .containers
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.image.clone())
}

/// Measures the rollout of `dep` from its ReplicaSets.
pub fn rollout(dep: &Deployment, replica_sets: &[ReplicaSet], container: &str) -> Rollout {
    let status = dep.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0) >= dep.metadata.generation.unwrap_or(0);
    let uid = dep.metadata.uid.as_deref();
    let owned: Vec<&ReplicaSet> = replica_sets
        .iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| Some(o.uid.as_str()) == uid)
        })
        .collect();
    let rs_revision = |rs: &ReplicaSet| -> i64 {
        let ann = rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION));
        ann.and_then(|r| r.parse().ok()).unwrap_or(0)
    };
    let available = |rs: &ReplicaSet| rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
    let current = current_replica_set(dep, replica_sets);
    let serving = owned
        .iter()
        .filter(|rs| available(rs) > 0)
        .max_by_key(|rs| rs_revision(rs));
    Rollout {
        observed: observed && current.is_some(),
        replicas: status.replicas.unwrap_or(0),
        updated: current.map(available).unwrap_or(0),
        serving_image: serving
            .and_then(|rs| container_image(rs.spec.as_ref()?.template.as_ref()?.spec.as_ref(), container)),
    }
}

/// The ReplicaSet of `dep`'s current revision, once the ReplicaSet controller has seen it.
pub fn current_replica_set<'a>(dep: &Deployment, replica_sets: &'a [ReplicaSet]) -> Option<&'a ReplicaSet> {
    let revision = dep.metadata.annotations.as_ref()?.get(REVISION)?;
    let uid = dep.metadata.uid.as_deref()?;
    replica_sets.iter().find(|rs| {
        rs.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == uid)
            && rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)) == Some(revision)
            && rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0)
                > 0
    })
}

/// The Deployment controller's verdict that the rollout stopped progressing.
pub fn deadline_exceeded(dep: &Deployment) -> Option<String> {
    let conds = dep.status.as_ref()?.conditions.as_ref()?;
    let c = conds.iter().find(|c| c.type_ == "Progressing")?;
    (c.status == "False" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")).then(|| {
        c.message
            .clone()
            .unwrap_or_else(|| "progress deadline exceeded".to_owned())
    })
}
