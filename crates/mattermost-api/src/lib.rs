//! Custom resource types of the Mattermost operator. CRD types only: no client code.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub mod v1alpha1;
pub mod v1beta1;

/// Every CRD the operator serves, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![v1beta1::Mattermost::crd(), v1alpha1::ClusterInstallation::crd()]
}
