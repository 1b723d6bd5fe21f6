//! The Job shell shared by the update, backup and verification Jobs: a pod that runs once, and a
//! non-zero exit of its main container fails the Job at once (the same input fails the same way
//! on retry, and the gate reports the pod's message instead of waiting for the backoff).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Annotation on the `Mattermost` that requests a new attempt after a failed update, backup or
/// verification Job: set it to any new value (copied to the Job, so each value gets one attempt).
pub const RETRY_ANNOTATION: &str = "installation.mattermost.com/retry-update-job";

/// Where the pod of a Job runs and how long it may take.
#[derive(Debug, Clone)]
pub struct JobPod {
    /// Labels of the pod.
    pub labels: BTreeMap<String, String>,
    /// Annotations of the pod (the user's extra ones).
    pub annotations: Option<BTreeMap<String, String>>,
    /// The pod; `restartPolicy` is set to `Never`.
    pub spec: PodSpec,
    /// The container whose exit code decides.
    pub main_container: String,
    /// Pod retries before the Job fails.
    pub backoff_limit: i32,
    /// Seconds before a running Job is failed.
    pub active_deadline_seconds: i64,
}

/// A Job with `meta` running `pod`; the retry annotation of `retry` is copied to the Job.
pub fn job(mut meta: ObjectMeta, retry: Option<&String>, pod: JobPod) -> Job {
    if let Some(retry) = retry {
        meta.annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(RETRY_ANNOTATION.to_owned(), retry.clone());
    }
    let spec = PodSpec {
        restart_policy: Some("Never".to_owned()),
        ..pod.spec
    };
    Job {
        metadata: meta,
        spec: Some(JobSpec {
            backoff_limit: Some(pod.backoff_limit),
            active_deadline_seconds: Some(pod.active_deadline_seconds),
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![PodFailurePolicyRule {
                    action: "FailJob".to_owned(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        container_name: Some(pod.main_container),
                        operator: "NotIn".to_owned(),
                        values: vec![0],
                    }),
                    on_pod_conditions: None,
                }],
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod.labels),
                    annotations: pod.annotations.filter(|a| !a.is_empty()),
                    ..Default::default()
                }),
                spec: Some(spec),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}
