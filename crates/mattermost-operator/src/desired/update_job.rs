//! The update Job: `mattermost db migrate` with the new image before the Deployment changes.
//!
//! Unlike the Go operator's Job (one fixed name per namespace, a copy of the whole pod with
//! sidecars and probes), it is named per installation and image and runs a minimal pod: the main
//! container with the database and file-store environment only, under a restricted security
//! context unless the spec gives one.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mattermost_api::v1beta1::Mattermost;

use super::deployment::{command, volume_mounts, volumes};
use super::labels::{self, APP_UPDATE_JOB};
use super::meta::child_meta;
use super::names::{MAIN_CONTAINER, Names};
use super::security;
use super::{Inputs, env};

/// Annotation on the `Mattermost` that requests a new attempt after a failed update Job: set it
/// to any new value (copied to the Job, so each value gets one attempt).
pub const RETRY_ANNOTATION: &str = "installation.mattermost.com/retry-update-job";
/// Annotation recording the image the Job validates.
pub const IMAGE_ANNOTATION: &str = "installation.mattermost.com/update-image";

/// The update Job for `image`.
pub fn update_job(
    mm: &Mattermost,
    names: &Names,
    inputs: &Inputs,
    image: &str,
    backoff_limit: i32,
    active_deadline_seconds: i64,
) -> Job {
    let spec = &mm.spec;
    let update = spec.update_job.as_ref();
    let mut meta = child_meta(
        mm,
        names,
        &names.update_job(image),
        labels::object_labels(mm, names, APP_UPDATE_JOB),
    );
    let mut annotations = BTreeMap::from([(IMAGE_ANNOTATION.to_owned(), image.to_owned())]);
    if let Some(retry) = mm
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RETRY_ANNOTATION))
    {
        annotations.insert(RETRY_ANNOTATION.to_owned(), retry.clone());
    }
    meta.annotations = Some(annotations);
    let mut pod_labels = spec.resource_labels.clone().unwrap_or_default();
    pod_labels.extend(update.and_then(|u| u.extra_labels.clone()).unwrap_or_default());
    pod_labels.extend(labels::selector(names, APP_UPDATE_JOB));
    let container = Container {
        name: MAIN_CONTAINER.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: spec.image_pull_policy.clone().filter(|p| !p.is_empty()),
        command: Some(command(mm)),
        args: Some(vec!["db".to_owned(), "migrate".to_owned()]),
        env: Some(env::mattermost_env(mm, inputs)),
        volume_mounts: Some(volume_mounts(mm)).filter(|m| !m.is_empty()),
        security_context: Some(security::container(mm)),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Default::default()
    };
    let scheduling = spec.scheduling.as_ref();
    let pod = PodSpec {
        restart_policy: Some("Never".to_owned()),
        service_account_name: Some(names.app.clone()),
        image_pull_secrets: spec.image_pull_secrets.clone().filter(|s| !s.is_empty()),
        volumes: Some(volumes(mm, names)).filter(|v| !v.is_empty()),
        affinity: scheduling.and_then(|s| s.affinity.clone()),
        node_selector: scheduling
            .and_then(|s| s.node_selector.clone())
            .filter(|n| !n.is_empty()),
        tolerations: scheduling
            .and_then(|s| s.tolerations.clone())
            .filter(|t| !t.is_empty()),
        dns_config: spec.dns_config.clone(),
        security_context: Some(security::pod(mm)),
        containers: vec![container],
        ..Default::default()
    };
    Job {
        metadata: meta,
        spec: Some(JobSpec {
            backoff_limit: Some(backoff_limit),
            active_deadline_seconds: Some(active_deadline_seconds),
            // A migration that exits non-zero fails the same way on retry: fail the Job at once.
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![PodFailurePolicyRule {
                    action: "FailJob".to_owned(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        container_name: Some(MAIN_CONTAINER.to_owned()),
                        operator: "NotIn".to_owned(),
                        values: vec![0],
                    }),
                    on_pod_conditions: None,
                }],
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: update
                        .and_then(|u| u.extra_annotations.clone())
                        .filter(|a| !a.is_empty()),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mattermost_api::v1beta1::{MattermostSpec, PodExtensions, UpdateJob};

    #[test]
    fn minimal_pod_per_installation_and_image() {
        let mut m = Mattermost::new(
            "chat",
            MattermostSpec {
                pod_extensions: Some(PodExtensions {
                    sidecar_containers: Some(vec![Container {
                        name: "proxy".into(),
                        ..Default::default()
                    }]),
                    init_containers: Some(vec![Container {
                        name: "init".into(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                update_job: Some(UpdateJob {
                    extra_labels: Some(BTreeMap::from([("x".into(), "y".into())])),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        m.metadata.uid = Some("u".into());
        let names = Names::of(&m);
        let job = update_job(&m, &names, &Inputs::default(), "mm:2", 2, 600);
        assert_eq!(job.metadata.name, Some(names.update_job("mm:2")));
        let spec = job.spec.unwrap();
        assert_eq!(
            (spec.backoff_limit, spec.active_deadline_seconds),
            (Some(2), Some(600))
        );
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(
            (labels["app"].as_str(), labels["x"].as_str()),
            ("mattermost-update-check", "y")
        );
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.containers.len(), 1, "no sidecars");
        assert!(pod.init_containers.is_none(), "no init containers");
        let c = &pod.containers[0];
        assert_eq!(
            c.args.as_deref(),
            Some(&["db".to_owned(), "migrate".to_owned()][..])
        );
        assert!(c.readiness_probe.is_none() && c.ports.is_none());
        assert_eq!(c.security_context.as_ref().unwrap().run_as_non_root, Some(true));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    }
}
