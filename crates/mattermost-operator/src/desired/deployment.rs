//! placeholder
use super::{Inputs, names::Names};
use k8s_openapi::api::apps::v1::Deployment;
use mattermost_api::v1beta1::Mattermost;
pub fn deployment(_mm: &Mattermost, _n: &Names, _i: &Inputs) -> Deployment {
    Deployment::default()
}
pub fn job_server_deployment(_mm: &Mattermost, _n: &Names, _i: &Inputs) -> Deployment {
    Deployment::default()
}
