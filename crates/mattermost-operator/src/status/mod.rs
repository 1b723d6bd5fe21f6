//! Pure status computation: the observed children in, `MattermostStatus` out. `state` keeps the Go
//! operator's meaning (fleet tools read it); conditions say why.

pub mod conditions;
mod gate;
pub mod pods;
mod rollout;

pub use gate::{Failure, Gate, JobKind, JobRun, JobState};
#[cfg(test)]
use rollout::REVISION;
pub(crate) use rollout::container_image;
pub use rollout::{Rollout, current_replica_set, deadline_exceeded, rollout};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use mattermost_api::v1beta1::{
    LastBackup, Mattermost, MattermostStatus, ResourcePatchStatus, RunningState, split_image_reference,
};

use crate::desired::names::{JOB_SERVER_CONTAINER, MAIN_CONTAINER};
use crate::observe::Check;
use conditions::{condition, upsert};

/// Summary condition: True when the installation is `stable` for the current generation.
pub const READY: &str = "Ready";
/// True while a change is being rolled out (update Job or new pods).
pub const PROGRESSING: &str = "Progressing";
/// True when the installation cannot converge without intervention.
pub const DEGRADED: &str = "Degraded";
/// kstatus "abnormal-true" condition: True while a change is rolled out or waits for a rollout
/// slot. Flux, Helm's `--wait` and kpt read it as InProgress.
pub const RECONCILING: &str = "Reconciling";
/// kstatus "abnormal-true" condition: True when the operator cannot make progress without a
/// person (failed update Job or preflight, progress deadline, bad configuration). Read as Failed.
pub const STALLED: &str = "Stalled";
/// Whether the Mattermost pods' metrics are scraped (`spec.monitoring`); absent when monitoring
/// is off. See `crate::monitoring`.
pub const MONITORING: &str = "MonitoringConfigured";
/// State of the update Job gate.
pub const UPDATE_JOB: &str = "UpdateJobSucceeded";
/// State of the backup before the update Job (`spec.upgrade.backup`).
pub const BACKUP: &str = "BackupSucceeded";
/// State of the verification after the rollout of a new version (`spec.upgrade.verify`).
pub const VERIFIED: &str = "VerificationSucceeded";
/// Result of the upgrade preflight checks.
pub const PREFLIGHT: &str = "PreflightPassed";
/// False when `version` is a tag that moves (`latest`, `master`, ...).
pub const IMAGE_PINNED: &str = "ImagePinned";
/// Endpoint value when there is none.
pub const NO_ENDPOINT: &str = "not available";
/// Ready reason while a wanted child is absent (deleted by someone, or being deleted).
pub const CHILDREN_MISSING: &str = "ChildrenMissing";

/// Everything status depends on.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    /// The installation.
    pub mm: &'a Mattermost,
    /// Dependency checks.
    pub checks: &'a [Check],
    /// Failure while applying children, if any.
    pub failure: Option<&'a Failure>,
    /// The update Job gate.
    pub gate: &'a Gate,
    /// The app Deployment as last seen.
    pub deployment: Option<&'a Deployment>,
    /// ReplicaSets of the app Deployment.
    pub replica_sets: &'a [ReplicaSet],
    /// Pods of the installation.
    pub pods: &'a [Pod],
    /// The job-server Deployment when it is wanted.
    pub job_server: Option<Option<&'a Deployment>>,
    /// The app Service.
    pub service: Option<&'a Service>,
    /// The Ingress when one is wanted.
    pub ingress: Option<&'a Ingress>,
    /// Result of the resource patches.
    pub resource_patch: Option<ResourcePatchStatus>,
    /// Set when the rollout of this image was rolled back automatically.
    pub rolled_back_from: Option<String>,
    /// The verification of a new version after its rollout, when one ran.
    pub verification: Option<&'a JobRun>,
    /// The backup taken before this upgrade, once it succeeded.
    pub last_backup: Option<&'a LastBackup>,
    /// Wanted children that were absent or being deleted when observed (`Kind name`); the
    /// installation is not stable until they exist again.
    pub missing: &'a [String],
}

fn endpoint(obs: &Observation<'_>) -> Option<String> {
    if obs.mm.spec.use_service_load_balancer() {
        let lb = obs
            .service?
            .status
            .as_ref()?
            .load_balancer
            .as_ref()?
            .ingress
            .as_ref()?
            .first()?;
        return lb
            .hostname
            .clone()
            .filter(|h| !h.is_empty())
            .or_else(|| lb.ip.clone());
    }
    let rules = obs.ingress?.spec.as_ref()?.rules.as_ref()?;
    rules.first()?.host.clone()
}

/// Computes the new status from `obs`, keeping condition transition times of `old`.
pub fn compute(obs: &Observation<'_>, old: Option<&MattermostStatus>, now: &Time) -> MattermostStatus {
    let mm = obs.mm;
    let generation = mm.metadata.generation;
    let mut status = old.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.resource_patch = obs.resource_patch.clone();
    let conds = &mut status.conditions;

    let mut problems: Vec<(&'static str, String)> = Vec::new();
    for check in obs.checks {
        match &check.result {
            Ok((reason, message)) => upsert(
                conds,
                condition(check.type_, true, reason, message.clone(), generation, now),
            ),
            Err(e) => {
                upsert(
                    conds,
                    condition(check.type_, false, e.reason(), e.to_string(), generation, now),
                );
                problems.push((e.reason(), e.to_string()));
            }
        }
    }
    if let Some(f) = obs.failure {
        problems.push((f.reason, f.message.clone()));
    }
    match obs.gate {
        Gate::Blocked { reason, message } => {
            upsert(
                conds,
                condition(PREFLIGHT, false, reason, message.clone(), generation, now),
            );
            problems.push((reason, format!("upgrade blocked: {message}")));
        }
        Gate::Open | Gate::Waiting => {}
        _ => upsert(
            conds,
            condition(
                PREFLIGHT,
                true,
                "ChecksPassed",
                "preflight checks passed",
                generation,
                now,
            ),
        ),
    }
    // A new upgrade makes the verification of the last one moot, and a new backup its update Job.
    match obs.gate {
        Gate::Open => {}
        Gate::Running {
            kind: JobKind::Backup,
            ..
        }
        | Gate::Failed {
            kind: JobKind::Backup,
            ..
        } => {
            conditions::remove(conds, UPDATE_JOB);
            conditions::remove(conds, VERIFIED);
        }
        _ => conditions::remove(conds, VERIFIED),
    }
    if let Some(backup) = obs.last_backup {
        status.last_backup = Some(backup.clone());
        let msg = format!("database of {} backed up to {}", backup.version, backup.location);
        upsert(
            conds,
            condition(BACKUP, true, JobKind::Backup.succeeded(), msg, generation, now),
        );
    }
    if let Some(run) = obs.verification {
        let kind = run.kind;
        let job = &run.job;
        let c = match &run.state {
            JobState::Running => condition(
                kind.condition(),
                false,
                kind.running(),
                format!("{} {job} {}", kind.noun(), kind.doing()),
                generation,
                now,
            ),
            JobState::Succeeded => condition(
                kind.condition(),
                true,
                kind.succeeded(),
                format!(
                    "{} {job}: the server is healthy and runs the new version",
                    kind.noun()
                ),
                generation,
                now,
            ),
            JobState::Failed { message } => {
                let msg = format!("{} {job} failed: {message}", kind.noun());
                problems.push((kind.failed(), msg.clone()));
                condition(kind.condition(), false, kind.failed(), msg, generation, now)
            }
        };
        upsert(conds, c);
    }
    if let Some(image) = &obs.rolled_back_from {
        problems.push((
            "RolledBack",
            format!("the rollout of {image} did not progress or failed verification and was rolled back to the last stable version"),
        ));
    } else if let Some(msg) = obs.deployment.and_then(deadline_exceeded) {
        problems.push(("ProgressDeadlineExceeded", msg));
    }
    let deployments = [obs.deployment, obs.job_server.flatten()];
    if let Some(p) = deployments
        .into_iter()
        .flatten()
        .find_map(|d| pods::new_pods_problem(d, current_replica_set(d, obs.replica_sets), obs.pods))
    {
        problems.push((p.reason, p.message));
    }
    let pinned = if mm.spec.has_mutable_tag() {
        condition(
            IMAGE_PINNED,
            false,
            "MutableTag",
            format!(
                "version {:?} is a tag that moves: pods may run different builds and upgrades are not gated; pin a version or a sha256: digest",
                mm.spec.version()
            ),
            generation,
            now,
        )
    } else {
        condition(
            IMAGE_PINNED,
            true,
            "Pinned",
            format!("version {:?} is pinned", mm.spec.version()),
            generation,
            now,
        )
    };
    upsert(conds, pinned);
    match obs.gate {
        Gate::Open | Gate::Blocked { .. } | Gate::Waiting => {
            conditions::remove(conds, UPDATE_JOB);
            if obs.last_backup.is_none() {
                conditions::remove(conds, BACKUP);
            }
        }
        Gate::Running { kind, job } => upsert(
            conds,
            condition(
                kind.condition(),
                false,
                kind.running(),
                format!("{} {job} {}", kind.noun(), kind.doing()),
                generation,
                now,
            ),
        ),
        Gate::Failed { kind, job, message } => {
            let msg = format!(
                "{} {job} failed: {message}; the Deployment was not changed",
                kind.noun()
            );
            upsert(
                conds,
                condition(
                    kind.condition(),
                    false,
                    kind.failed(),
                    msg.clone(),
                    generation,
                    now,
                ),
            );
            problems.push((kind.failed(), msg));
        }
        Gate::Passed { job } => upsert(
            conds,
            condition(
                UPDATE_JOB,
                true,
                "UpdateJobSucceeded",
                format!("update Job {job} succeeded"),
                generation,
                now,
            ),
        ),
    }

    let desired = mm.spec.effective_replicas();
    let roll = obs
        .deployment
        .map(|d| rollout(d, obs.replica_sets, MAIN_CONTAINER))
        .unwrap_or_default();
    let endpoint = endpoint(obs);
    let job_server_ok = match obs.job_server {
        None => true,
        Some(Some(js)) => {
            let r = rollout(js, obs.replica_sets, JOB_SERVER_CONTAINER);
            r.observed && r.updated == 1 && r.replicas == 1
        }
        Some(None) => false,
    };
    let (state, progress) = if matches!(obs.gate, Gate::Waiting) && problems.is_empty() {
        (
            RunningState::Reconciling,
            "waiting for a rollout slot (MAX_RECONCILING_INSTALLATIONS)".to_owned(),
        )
    } else if !problems.is_empty() || matches!(obs.gate, Gate::Running { .. }) || obs.deployment.is_none() {
        (
            RunningState::Reconciling,
            "waiting for the update Job or a fix".to_owned(),
        )
    } else if !obs.missing.is_empty() {
        (
            RunningState::Reconciling,
            format!("children missing (being created): {}", obs.missing.join(", ")),
        )
    } else if !roll.observed {
        (
            RunningState::Reconciling,
            "rollout not yet picked up by the Deployment controller".to_owned(),
        )
    } else if desired > 0 && roll.updated == 0 {
        (
            RunningState::Reconciling,
            format!("0/{desired} pods of the current revision available"),
        )
    } else if roll.updated != desired || roll.replicas != desired {
        let state = if roll.replicas > 0 {
            RunningState::Ready
        } else {
            RunningState::Reconciling
        };
        (
            state,
            format!(
                "{}/{desired} pods of the current revision available, {} pods in total",
                roll.updated, roll.replicas
            ),
        )
    } else if mm.spec.use_service_load_balancer() && endpoint.is_none() {
        (
            RunningState::Ready,
            "waiting for the load balancer address".to_owned(),
        )
    } else if !job_server_ok {
        (RunningState::Ready, "waiting for the job server".to_owned())
    } else if let Some(JobRun {
        job,
        state: JobState::Running,
        ..
    }) = obs.verification
    {
        (
            RunningState::Ready,
            format!("verification Job {job} asks the server for its health and version"),
        )
    } else {
        (
            RunningState::Stable,
            format!("{desired}/{desired} pods of the current revision available"),
        )
    };

    status.state = Some(state.as_str().to_owned());
    status.replicas = Some(roll.replicas);
    status.updated_replicas = Some(roll.updated);
    status.endpoint = Some(endpoint.unwrap_or_else(|| NO_ENDPOINT.to_owned()));
    // Only what serves: the newest revision with available pods; nothing when no pod is
    // available; the template's image when hibernated (nothing should serve).
    let available = obs
        .deployment
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    let template_image = obs
        .deployment
        .and_then(|d| container_image(d.spec.as_ref()?.template.spec.as_ref(), MAIN_CONTAINER));
    let serving = match (&roll.serving_image, desired) {
        (Some(image), _) => Some(Some(image.clone())),
        (None, 0) => template_image.map(Some),
        (None, _) if obs.deployment.is_some() && available == 0 => Some(None),
        (None, _) => None,
    };
    match serving.map(|i| i.map(|i| split_image_reference(&i))) {
        Some(Some((repo, version))) => {
            status.image = Some(repo);
            status.version = Some(version);
        }
        Some(None) => {
            status.image = None;
            status.version = None;
        }
        None => {}
    }
    status.error = problems.first().map(|(_, m)| m.clone());

    match problems.first() {
        Some((reason, message)) => {
            upsert(
                conds,
                condition(DEGRADED, true, reason, message.clone(), generation, now),
            );
            upsert(
                conds,
                condition(READY, false, reason, message.clone(), generation, now),
            );
        }
        None => {
            upsert(
                conds,
                condition(DEGRADED, false, "AsExpected", "", generation, now),
            );
            let ready = state == RunningState::Stable;
            let reason = match (ready, obs.missing.is_empty()) {
                (true, _) => "Stable",
                (false, false) => CHILDREN_MISSING,
                (false, true) => "RollingOut",
            };
            upsert(
                conds,
                condition(READY, ready, reason, progress.clone(), generation, now),
            );
        }
    }
    let progressing = problems.is_empty() && state != RunningState::Stable;
    let reason = match (progressing, obs.gate) {
        (true, Gate::Running { kind, .. }) => kind.running(),
        (true, _) if obs.verification.is_some_and(|v| v.state == JobState::Running) => {
            JobKind::Verify.running()
        }
        (true, Gate::Waiting) => "WaitingForRolloutSlot",
        (true, _) if !obs.missing.is_empty() => "RecreatingChildren",
        (true, _) => "RollingOut",
        (false, _) if state == RunningState::Stable => "RolloutComplete",
        _ => "Blocked",
    };
    upsert(
        conds,
        condition(
            PROGRESSING,
            progressing,
            reason,
            progress.clone(),
            generation,
            now,
        ),
    );
    let (reconciling, stalled) = match problems.first() {
        Some((reason, message)) => (None, Some((*reason, message.clone()))),
        None if progressing => (Some((reason, progress)), None),
        None => (None, None),
    };
    conditions::set_kstatus(conds, reconciling, stalled, generation, now);

    if state == RunningState::Stable
        && let (Some(image), Some(version)) = (status.image.clone(), status.version.clone())
        && status.last_stable_version.as_ref() != Some(&version)
    {
        status.previous_stable_version = status.last_stable_version.replace(version);
        status.previous_stable_image = status.last_stable_image.replace(image);
    }
    status.rolled_back_from = obs.rolled_back_from.clone();
    status
}

#[cfg(test)]
mod tests;
