//! The Jobs of an upgrade (backup, update, verification) pass one gate: create the Job, read its
//! conditions, report a failure with the pod's message, retry only on request, and delete the
//! Jobs no longer needed.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{DeleteParams, PropagationPolicy};
use kube::runtime::reflector::Store;
use mattermost_api::v1beta1::{LastBackup, Mattermost};
use tracing::info;

use super::context::{Context, cached};
use super::outcome::ChildrenOutcome;
use crate::apply::{self, ApplyError};
use crate::cache::Cached;
use crate::desired::backup_job::{self, LOCATION_ANNOTATION, VERSION_ANNOTATION};
use crate::desired::job::RETRY_ANNOTATION;
use crate::desired::labels::{APP_BACKUP_JOB, APP_UPDATE_JOB, APP_VERIFY_JOB, INSTALLATION_LABEL};
use crate::desired::names::Names;
use crate::desired::{self, Inputs};
use crate::status::{self, Failure, Gate, JobKind, JobRun, JobState};

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

fn succeeded(job: &Job) -> bool {
    job_condition(job, "Complete").is_some() || job_condition(job, "SuccessCriteriaMet").is_some()
}

/// When the Job succeeded: `SuccessCriteriaMet` comes before `Complete` and `completionTime`
/// (which wait for the pods to terminate), and the next Job already starts then.
fn succeeded_at(job: &Job) -> Option<k8s_openapi::jiff::Timestamp> {
    let status = job.status.as_ref()?;
    let conds = status.conditions.iter().flatten();
    let at = |type_: &str| {
        conds
            .clone()
            .find(|c| c.type_ == type_ && c.status == "True")
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0)
    };
    at("SuccessCriteriaMet")
        .or_else(|| at("Complete"))
        .or_else(|| status.completion_time.as_ref().map(|t| t.0))
}

fn failed(job: &Job) -> Option<String> {
    job_condition(job, "Failed").or_else(|| job_condition(job, "FailureTarget"))
}

/// The one gate every upgrade Job passes: creates `desired` when absent, otherwise reports where
/// the live Job stands. A failed Job is kept (no relaunch loop) until the spec changes or the
/// retry annotation gets a new value.
pub(super) async fn job_gate(
    ctx: &Context,
    mm: &Mattermost,
    uid: &str,
    kind: JobKind,
    desired: Job,
    out: &mut ChildrenOutcome,
) -> Result<JobRun, ApplyError> {
    let name = desired.name_any();
    let ns = desired.namespace().unwrap_or_default();
    out.jobs_in_use.push(name.clone());
    let run = |state| JobRun {
        kind,
        job: name.clone(),
        state,
    };
    let Some(job) = cached(&ctx.stores.jobs, &name, &ns) else {
        apply::ensure(&ctx.client, None, desired, uid).await?;
        info!(job = %name, kind = kind.noun(), "Job started");
        out.jobs_created.push((kind, name.clone()));
        return Ok(run(JobState::Running));
    };
    if !apply::is_owned_by(&job, uid) {
        return Err(ApplyError::Conflict {
            kind: "Job".to_owned(),
            name,
        });
    }
    if succeeded(&job) {
        return Ok(run(JobState::Succeeded));
    }
    match failed(&job) {
        Some(_) if retry_requested(mm, &job) => {
            let params = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..Default::default()
            };
            apply::delete_owned(&ctx.client, &ns, &name, Some(job), uid, &params).await?;
            info!(job = %name, kind = kind.noun(), "retrying the Job on request");
            Ok(run(JobState::Running))
        }
        Some(reason) => {
            let message = failed_pod_message(&ctx.stores.pods, &ns, &name).unwrap_or(reason);
            Ok(run(JobState::Failed { message }))
        }
        None => {
            out.job_pod_problem = job_pod_problem(&ctx.stores.pods, &ns, kind, &name);
            Ok(run(JobState::Running))
        }
    }
}

/// True when a Job for the upgrade to `image` already exists: the upgrade is under way, its
/// preflight passed before.
pub(super) fn upgrade_started(ctx: &Context, names: &Names, image: &str) -> bool {
    let ns = names.namespace.as_str();
    [names.backup_job(image), names.update_job(image)]
        .iter()
        .any(|name| cached(&ctx.stores.jobs, name, ns).is_some())
}

/// The failed backup or update Job of the upgrade to `image`, unless a retry was asked for.
pub(super) fn failed_upgrade(ctx: &Context, mm: &Mattermost, names: &Names, image: &str) -> Option<Gate> {
    let ns = names.namespace.as_str();
    [
        (JobKind::Backup, names.backup_job(image)),
        (JobKind::Update, names.update_job(image)),
    ]
    .into_iter()
    .find_map(|(kind, name)| {
        let job = cached(&ctx.stores.jobs, &name, ns)?;
        let reason = failed(&job).filter(|_| !retry_requested(mm, &job))?;
        let message = failed_pod_message(&ctx.stores.pods, ns, &name).unwrap_or(reason);
        Some(Gate::Failed {
            kind,
            job: name,
            message,
        })
    })
}

/// The Jobs before the Deployment may change to `image`: the backup when enabled, then the
/// update Job unless disabled.
pub(super) async fn upgrade_jobs(
    ctx: &Context,
    mm: &Mattermost,
    names: &Names,
    uid: &str,
    inputs: &Inputs,
    image: &str,
    out: &mut ChildrenOutcome,
) -> Result<Gate, ApplyError> {
    if mm.spec.backup().is_some() {
        let from = mm.status.as_ref().and_then(|s| s.version.as_deref());
        let built = backup_job::backup_job(mm, names, inputs, image, from.unwrap_or("unknown"));
        let desired = match built {
            Ok(job) => job,
            Err(e) => {
                return Ok(Gate::Blocked {
                    reason: e.reason(),
                    message: e.to_string(),
                });
            }
        };
        let run = job_gate(ctx, mm, uid, JobKind::Backup, desired, out).await?;
        if run.state != JobState::Succeeded {
            return Ok(gate_of(run));
        }
        out.last_backup = last_backup(ctx, names, image);
    }
    if mm.spec.update_job_disabled() {
        return Ok(Gate::Open);
    }
    let settings = ctx.update_job;
    let desired = desired::update_job::update_job(
        mm,
        names,
        inputs,
        image,
        settings.backoff_limit,
        settings.active_deadline_seconds,
    );
    let run = job_gate(ctx, mm, uid, JobKind::Update, desired, out).await?;
    Ok(gate_of(run))
}

/// The upgrade gate as a Job before the Deployment change leaves it.
fn gate_of(run: JobRun) -> Gate {
    let JobRun { kind, job, state } = run;
    match state {
        JobState::Running => Gate::Running { kind, job },
        JobState::Failed { message } => Gate::Failed { kind, job, message },
        JobState::Succeeded => Gate::Passed { job },
    }
}

/// What the succeeded backup Job for `image` recorded.
fn last_backup(ctx: &Context, names: &Names, image: &str) -> Option<LastBackup> {
    let job = cached(&ctx.stores.jobs, &names.backup_job(image), &names.namespace)?;
    let annotations = job.metadata.annotations.as_ref()?;
    let time = succeeded_at(&job)?.to_string();
    Some(LastBackup {
        location: annotations.get(LOCATION_ANNOTATION)?.clone(),
        time,
        version: annotations.get(VERSION_ANNOTATION)?.clone(),
    })
}

/// True when the verification of `image` failed (the automatic rollback's other trigger).
pub(super) fn verification_failed(ctx: &Context, names: &Names, image: &str) -> bool {
    cached(&ctx.stores.jobs, &names.verify_job(image), &names.namespace).is_some_and(|j| failed(&j).is_some())
}

/// True when the user asked for another attempt: the retry annotation of the installation differs
/// from the one the failed Job was created with.
fn retry_requested(mm: &Mattermost, job: &Job) -> bool {
    let want = mm.annotations().get(RETRY_ANNOTATION);
    want.is_some() && want != job.annotations().get(RETRY_ANNOTATION)
}

fn job_pods(pods: &Store<Cached<Pod>>, ns: &str, job: &str) -> Vec<Pod> {
    let mut pods: Vec<Pod> = pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns))
        .filter(|p| p.labels().get("job-name").map(String::as_str) == Some(job))
        .filter_map(|p| p.object())
        .collect();
    pods.sort_by_key(|p| p.name_any());
    pods
}

/// The problem the pod of a running Job shows, if any (otherwise the upgrade would wait for it
/// silently until the Job's deadline).
fn job_pod_problem(pods: &Store<Cached<Pod>>, ns: &str, kind: JobKind, job: &str) -> Option<Failure> {
    job_pods(pods, ns, job).iter().find_map(|p| {
        let problem = status::pods::pod_problem(p)?;
        Some(Failure {
            reason: problem.reason,
            message: crate::redact::truncate(
                &format!("{} pod {}: {}", kind.noun(), p.name_any(), problem.message),
                crate::redact::MAX_STATUS_MESSAGE,
            ),
        })
    })
}

/// Termination message of the Job's failed pod (the Go operator never looked), from the pod
/// cache: the first container (init containers first) that exited non-zero, scrubbed, cut to its
/// end (with `FallbackToLogsOnError` it is the log tail).
fn failed_pod_message(pods: &Store<Cached<Pod>>, ns: &str, job: &str) -> Option<String> {
    job_pods(pods, ns, job).iter().find_map(|p| {
        let status = p.status.as_ref()?;
        let statuses = status.init_container_statuses.iter().flatten();
        statuses
            .chain(status.container_statuses.iter().flatten())
            .find_map(|c| {
                let terminated = c.state.as_ref()?.terminated.as_ref()?;
                (terminated.exit_code != 0).then(|| {
                    let msg = terminated.message.as_deref().unwrap_or_default();
                    format!(
                        "exit code {}: {}",
                        terminated.exit_code,
                        crate::redact::message_tail(msg)
                    )
                })
            })
    })
}

/// Deletes this installation's upgrade Jobs that this reconcile did not use.
pub(super) async fn cleanup_jobs(
    ctx: &Context,
    names: &Names,
    uid: &str,
    in_use: &[String],
) -> Result<(), ApplyError> {
    let ns = names.namespace.as_str();
    let apps = [APP_BACKUP_JOB, APP_UPDATE_JOB, APP_VERIFY_JOB];
    let stale: Vec<Job> = ctx
        .stores
        .jobs
        .state()
        .into_iter()
        .filter(|j| j.namespace().as_deref() == Some(ns))
        .filter(|j| j.labels().get("app").is_some_and(|a| apps.contains(&a.as_str())))
        .filter(|j| j.labels().get(INSTALLATION_LABEL) == Some(&names.app))
        .filter(|j| !in_use.contains(&j.name_any()))
        .filter(|j| !j.uid().is_some_and(|u| ctx.deleted.recently(&u)))
        .filter_map(|j| j.object())
        .collect();
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    for job in stale {
        let job_uid = job.uid();
        apply::delete_owned(&ctx.client, ns, &job.name_any(), Some(job), uid, &params).await?;
        if let Some(u) = job_uid {
            ctx.deleted.record(&u);
        }
    }
    Ok(())
}
