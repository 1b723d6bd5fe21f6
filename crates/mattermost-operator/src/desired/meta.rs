//! Metadata shared by every child: namespace, labels, controller owner reference.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use mattermost_api::v1beta1::Mattermost;

use super::names::Names;

/// Controller owner reference to the installation (`blockOwnerDeletion`, as the Go operator).
pub fn owner_reference(mm: &Mattermost) -> Option<OwnerReference> {
    mm.controller_owner_ref(&())
}

/// Metadata of a child named `name` with `labels`, owned by the installation.
pub fn child_meta(
    mm: &Mattermost,
    names: &Names,
    name: &str,
    labels: BTreeMap<String, String>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(names.namespace.clone()),
        labels: Some(labels),
        owner_references: owner_reference(mm).map(|r| vec![r]),
        ..Default::default()
    }
}
