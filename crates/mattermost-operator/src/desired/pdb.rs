//! PodDisruptionBudget `<name>`: voluntary disruptions (node drains) take at most
//! `maxUnavailable` Mattermost pods at once. Only with more than one replica: a budget on a single
//! pod would block drains forever.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mattermost_api::v1beta1::Mattermost;

use super::labels::{self, APP_MATTERMOST};
use super::meta::child_meta;
use super::names::Names;

/// The budget, or `None` when there should be none.
pub fn pod_disruption_budget(mm: &Mattermost, names: &Names) -> Option<PodDisruptionBudget> {
    let max_unavailable = mm.spec.pdb_max_unavailable()?;
    Some(PodDisruptionBudget {
        metadata: child_meta(
            mm,
            names,
            &names.app,
            labels::object_labels(mm, names, APP_MATTERMOST),
        ),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(max_unavailable)),
            selector: Some(LabelSelector {
                match_labels: Some(labels::selector(names, APP_MATTERMOST)),
                match_expressions: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mattermost_api::v1beta1::{MattermostSpec, PodDisruptionBudgetPolicy};

    #[test]
    fn only_with_several_replicas_and_not_disabled() {
        let build = |spec: MattermostSpec| {
            let mm = Mattermost::new("chat", spec);
            pod_disruption_budget(&mm, &Names::of(&mm))
        };
        let pdb = build(MattermostSpec {
            replicas: Some(3),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(pdb.spec.unwrap().max_unavailable, Some(IntOrString::Int(1)));
        assert!(
            build(MattermostSpec {
                replicas: Some(1),
                ..Default::default()
            })
            .is_none()
        );
        let disabled = PodDisruptionBudgetPolicy {
            disabled: Some(true),
            ..Default::default()
        };
        assert!(
            build(MattermostSpec {
                replicas: Some(3),
                pod_disruption_budget: Some(disabled),
                ..Default::default()
            })
            .is_none()
        );
    }
}
