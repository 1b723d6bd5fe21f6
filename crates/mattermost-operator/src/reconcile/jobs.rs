//! The update Job gate: create the Job, read its conditions, report a failure with the pod's
//! message, retry only on request, clean up the Jobs no longer needed.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{DeleteParams, PropagationPolicy};
use kube::runtime::reflector::Store;
use mattermost_api::v1beta1::Mattermost;
use tracing::info;

use super::context::{Context, cached};
use super::outcome::ChildrenOutcome;
use crate::apply::{self, ApplyError};
use crate::desired::labels::{APP_UPDATE_JOB, INSTALLATION_LABEL};
use crate::desired::names::{MAIN_CONTAINER, Names};
use crate::desired::{self, Inputs};
use crate::status::{self, Failure, Gate};

fn job_condition(job: &Job, type_: &str) -> Option<String> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    conds
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| {
            c.message
                .clone()
                .filter(|m| !m.is_empty())
                .or(c.reason.clone())
                .unwrap_or_default()
        })
}

/// Runs the update Job for `image` and reports where it stands. The Deployment is only changed
/// once it succeeded. A failed Job is kept (no relaunch loop) until the spec changes.
pub(super) async fn update_job_gate(
    ctx: &Context,
    mm: &Mattermost,
    names: &Names,
    uid: &str,
    inputs: &Inputs,
    image: &str,
    out: &mut ChildrenOutcome,
) -> Result<Gate, ApplyError> {
    let ns = names.namespace.as_str();
    let job_name = names.update_job(image);
    let Some(job) = cached(&ctx.stores.jobs, &job_name, ns) else {
        let settings = ctx.update_job;
        let job = desired::update_job::update_job(
            mm,
            names,
            inputs,
            image,
            settings.backoff_limit,
            settings.active_deadline_seconds,
        );
        apply::ensure(&ctx.client, None, job, uid).await?;
        info!(job = %job_name, image, "update Job started");
        out.job_created = Some(job_name.clone());
        return Ok(Gate::Running { job: job_name });
    };
    if !apply::is_owned_by(&job, uid) {
        return Err(ApplyError::Conflict {
            kind: "Job".to_owned(),
            name: job_name,
        });
    }
    if job_condition(&job, "Complete").is_some() || job_condition(&job, "SuccessCriteriaMet").is_some() {
        return Ok(Gate::Passed { job: job_name });
    }
    let failed = job_condition(&job, "Failed").or_else(|| job_condition(&job, "FailureTarget"));
    match failed {
        Some(_) if retry_requested(mm, &job) => {
            let params = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..Default::default()
            };
            apply::delete_owned(&ctx.client, ns, &job_name, Some(job), uid, &params).await?;
            info!(job = %job_name, "retrying the update Job on request");
            Ok(Gate::Running { job: job_name })
        }
        Some(reason) => {
            let message = failed_pod_message(&ctx.stores.pods, ns, &job_name).unwrap_or(reason);
            Ok(Gate::Failed {
                job: job_name,
                message,
            })
        }
        None => {
            out.job_pod_problem = job_pod_problem(&ctx.stores.pods, ns, &job_name);
            Ok(Gate::Running { job: job_name })
        }
    }
}

/// True when the user asked for another attempt: the retry annotation of the installation differs
/// from the one the failed Job was created with.
fn retry_requested(mm: &Mattermost, job: &Job) -> bool {
    let want = mm.annotations().get(desired::update_job::RETRY_ANNOTATION);
    want.is_some() && want != job.annotations().get(desired::update_job::RETRY_ANNOTATION)
}

/// The problem the pod of a running update Job shows, if any (otherwise the upgrade would wait
/// for it silently until the Job's deadline).
fn job_pod_problem(pods: &Store<Pod>, ns: &str, job: &str) -> Option<Failure> {
    let mut pods: Vec<Arc<Pod>> = pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns))
        .filter(|p| p.labels().get("job-name").map(String::as_str) == Some(job))
        .collect();
    pods.sort_by_key(|p| p.name_any());
    pods.iter().find_map(|p| {
        let problem = status::pods::pod_problem(p)?;
        Some(Failure {
            reason: problem.reason,
            message: crate::redact::truncate(
                &format!("update Job pod {}: {}", p.name_any(), problem.message),
                crate::redact::MAX_STATUS_MESSAGE,
            ),
        })
    })
}

/// Termination message of the Job's failed pod (the Go operator never looked), from the pod
/// cache: scrubbed, and cut to its end (with `FallbackToLogsOnError` it is the log tail).
fn failed_pod_message(pods: &Store<Pod>, ns: &str, job: &str) -> Option<String> {
    let pods: Vec<Arc<Pod>> = pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns))
        .filter(|p| p.labels().get("job-name").map(String::as_str) == Some(job))
        .collect();
    pods.iter().find_map(|p| {
        let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
        let terminated = statuses
            .iter()
            .find(|c| c.name == MAIN_CONTAINER)?
            .state
            .as_ref()?
            .terminated
            .as_ref()?;
        (terminated.exit_code != 0).then(|| {
            let msg = terminated.message.as_deref().unwrap_or_default();
            format!(
                "exit code {}: {}",
                terminated.exit_code,
                crate::redact::message_tail(msg)
            )
        })
    })
}

/// Deletes this installation's update Jobs that are no longer needed: every one when the gate is
/// open, every one but the current otherwise.
pub(super) async fn cleanup_update_jobs(
    ctx: &Context,
    names: &Names,
    uid: &str,
    gate: &Gate,
) -> Result<(), ApplyError> {
    let keep = match gate {
        Gate::Open | Gate::Blocked { .. } | Gate::Waiting => None,
        Gate::Running { job } | Gate::Failed { job, .. } | Gate::Passed { job } => Some(job.as_str()),
    };
    let ns = names.namespace.as_str();
    let stale: Vec<Arc<Job>> = ctx
        .stores
        .jobs
        .state()
        .into_iter()
        .filter(|j| j.namespace().as_deref() == Some(ns))
        .filter(|j| j.labels().get("app").map(String::as_str) == Some(APP_UPDATE_JOB))
        .filter(|j| j.labels().get(INSTALLATION_LABEL) == Some(&names.app))
        .filter(|j| Some(j.name_any().as_str()) != keep)
        .collect();
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    for job in stale {
        apply::delete_owned(
            &ctx.client,
            ns,
            &job.name_any(),
            Some((*job).clone()),
            uid,
            &params,
        )
        .await?;
    }
    Ok(())
}
