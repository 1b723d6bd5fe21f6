//! The children of a legacy installation, built by the `Mattermost` builders with the v1alpha1
//! labels and selector.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};
use mattermost_api::v1alpha1::ClusterInstallation;
use mattermost_api::v1beta1::Mattermost;

use super::context::LEGACY_INSTALLATION_LABEL;
use super::context::LEGACY_RESOURCE_LABEL;
use crate::convert::convert;
use crate::desired::labels::{INSTALLATION_LABEL, RESOURCE_LABEL};
use crate::desired::names::Names;
use crate::desired::{self, Inputs};

/// Rewrites the v1beta1 label keys to the v1alpha1 ones (selectors included).
fn relabel(labels: &mut BTreeMap<String, String>) {
    for (from, to) in [
        (INSTALLATION_LABEL, LEGACY_INSTALLATION_LABEL),
        (RESOURCE_LABEL, LEGACY_RESOURCE_LABEL),
    ] {
        if let Some(v) = labels.remove(from) {
            labels.insert(to.to_owned(), v);
        }
    }
}

/// The `ClusterInstallation` as controller owner reference.
pub(super) fn ci_owner(ci: &ClusterInstallation) -> Option<Vec<OwnerReference>> {
    ci.controller_owner_ref(&()).map(|r| vec![r])
}

/// The `Mattermost` equivalent of `ci` (same name, namespace and uid, for building children).
pub(super) fn as_mattermost(ci: &ClusterInstallation) -> Result<Mattermost, crate::convert::ConversionError> {
    let mut mm = Mattermost::new(&ci.name_any(), convert(&ci.spec)?);
    mm.metadata.namespace = ci.namespace();
    mm.metadata.uid = ci.uid();
    Ok(mm)
}

/// The legacy children: Service, ServiceAccount, Ingress, Deployment with v1alpha1 labels.
pub(super) fn legacy_children(
    ci: &ClusterInstallation,
    mm: &Mattermost,
    inputs: &Inputs,
) -> (Service, Option<ServiceAccount>, Option<Ingress>, Deployment) {
    let names = Names::of(mm);
    let owner = ci_owner(ci);
    let mut svc = desired::service::app_service(mm, &names);
    let mut sa = desired::service_account::service_account(mm, &names);
    let mut ing = desired::ingress::ingress(mm, &names);
    let mut dep = desired::deployment::deployment(mm, &names, inputs);
    for meta in [&mut svc.metadata, &mut dep.metadata]
        .into_iter()
        .chain(sa.as_mut().map(|s| &mut s.metadata))
        .chain(ing.as_mut().map(|i| &mut i.metadata))
    {
        meta.owner_references = owner.clone();
        if let Some(l) = meta.labels.as_mut() {
            relabel(l);
        }
    }
    if let Some(sel) = svc.spec.as_mut().and_then(|s| s.selector.as_mut()) {
        relabel(sel);
    }
    if let Some(spec) = dep.spec.as_mut() {
        if let Some(l) = spec.selector.match_labels.as_mut() {
            relabel(l);
        }
        if let Some(l) = spec.template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            relabel(l);
        }
        if let Some(p) = spec.template.spec.as_mut() {
            p.topology_spread_constraints = None;
        }
    }
    (svc, sa, ing, dep)
}

/// True for the v1alpha1 Deployment (its selector has the v1alpha1 label).
pub(super) fn is_legacy(dep: &Deployment) -> bool {
    let sel = dep.spec.as_ref().and_then(|s| s.selector.match_labels.as_ref());
    sel.is_some_and(|l| l.contains_key(LEGACY_INSTALLATION_LABEL))
}

/// Available pods of `dep`.
pub(super) fn available(dep: &Deployment) -> i32 {
    dep.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}
