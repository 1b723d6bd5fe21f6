//! The update Job: `mattermost db migrate` with the new image before the Deployment changes.
//!
//! Unlike the Go operator's Job (one fixed name per namespace, a copy of the whole pod with
//! sidecars and probes), it is named per installation and image and runs a minimal pod: the main
//! container with the database and file-store environment only, under a restricted security
//! context unless the spec gives one. The Job shell is shared with the backup and verification
//! Jobs (`job.rs`).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use kube::ResourceExt;
use mattermost_api::v1beta1::Mattermost;

use super::deployment::{command, placement, volume_mounts, volumes};
use super::job::{JobPod, RETRY_ANNOTATION, job};
use super::labels::{self, APP_UPDATE_JOB};
use super::meta::child_meta;
use super::names::{MAIN_CONTAINER, Names};
use super::security;
use super::{Inputs, env};

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
    meta.annotations = Some(BTreeMap::from([(IMAGE_ANNOTATION.to_owned(), image.to_owned())]));
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
        service_account_name: Some(names.app.clone()),
        image_pull_secrets: spec.image_pull_secrets.clone().filter(|s| !s.is_empty()),
        volumes: Some(volumes(mm, names)).filter(|v| !v.is_empty()),
        affinity: scheduling.and_then(|s| s.affinity.clone()),
        dns_config: spec.dns_config.clone(),
        security_context: Some(security::pod(mm)),
        containers: vec![container],
        ..placement(mm)
    };
    job(
        meta,
        mm.annotations().get(RETRY_ANNOTATION),
        JobPod {
            labels: pod_labels,
            annotations: update.and_then(|u| u.extra_annotations.clone()),
            spec: pod,
            main_container: MAIN_CONTAINER.to_owned(),
            backoff_limit,
            active_deadline_seconds,
        },
    )
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
