//! Pure status computation: the observed children in, `MattermostStatus` out. `state` keeps the Go
//! operator's meaning (fleet tools read it); conditions say why.

pub mod conditions;
pub mod pods;

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
const REVISION: &str = "deployment.kubernetes.io/revision";

/// The Jobs of an upgrade, in the order they run: each has a condition and stable reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Database dump before the schema changes.
    Backup,
    /// `mattermost db migrate` with the new image.
    Update,
    /// The server's own health and version after the rollout.
    Verify,
}

impl JobKind {
    /// Condition type of this Job's state.
    pub fn condition(self) -> &'static str {
        match self {
            JobKind::Backup => BACKUP,
            JobKind::Update => UPDATE_JOB,
            JobKind::Verify => VERIFIED,
        }
    }

    /// Reason while it runs.
    pub fn running(self) -> &'static str {
        match self {
            JobKind::Backup => "BackupRunning",
            JobKind::Update => "UpdateJobRunning",
            JobKind::Verify => "VerificationRunning",
        }
    }

    /// Reason when it failed.
    pub fn failed(self) -> &'static str {
        match self {
            JobKind::Backup => "BackupFailed",
            JobKind::Update => "UpdateJobFailed",
            JobKind::Verify => "VerificationFailed",
        }
    }

    /// Reason when it succeeded (the condition type).
    pub fn succeeded(self) -> &'static str {
        self.condition()
    }

    /// Event reason when the operator started it.
    pub fn started(self) -> &'static str {
        match self {
            JobKind::Backup => "BackupStarted",
            JobKind::Update => "UpdateJobStarted",
            JobKind::Verify => "VerificationStarted",
        }
    }

    /// For messages.
    pub fn noun(self) -> &'static str {
        match self {
            JobKind::Backup => "backup Job",
            JobKind::Update => "update Job",
            JobKind::Verify => "verification Job",
        }
    }

    fn doing(self) -> &'static str {
        match self {
            JobKind::Backup => "dumps the database to object storage",
            JobKind::Update => "runs `mattermost db migrate`",
            JobKind::Verify => "asks the server for its health and version",
        }
    }
}

/// Where one Job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Created, not finished.
    Running,
    /// Finished with success.
    Succeeded,
    /// Failed; kept (no relaunch) until the spec changes or a retry is requested.
    Failed {
        /// Why, from the Job condition or the failed pod's termination message.
        message: String,
    },
}

/// One Job of an upgrade and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRun {
    /// Which Job.
    pub kind: JobKind,
    /// Job name.
    pub job: String,
    /// Its state.
    pub state: JobState,
}

/// Where the upgrade gate stands (preflight, slot, backup and update Jobs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Gate {
    /// No image change pending (or the gate is disabled).
    #[default]
    Open,
    /// A Job the new image waits for is running (backup, then update).
    Running {
        /// Which Job.
        kind: JobKind,
        /// Job name.
        job: String,
    },
    /// A Job the new image waits for failed; the Deployment is left alone.
    Failed {
        /// Which Job.
        kind: JobKind,
        /// Job name.
        job: String,
        /// Why, from the Job condition or the failed pod's termination message.
        message: String,
    },
    /// The update Job succeeded and the new image was applied.
    Passed {
        /// Job name.
        job: String,
    },
    /// A preflight check failed; nothing was changed.
    Blocked {
        /// Stable reason.
        reason: &'static str,
        /// For humans.
        message: String,
    },
    /// The rollout waits for a free slot (`MAX_RECONCILING_INSTALLATIONS`).
    Waiting,
}

/// A failure while applying children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Stable reason.
    pub reason: &'static str,
    /// Message for humans.
    pub message: String,
}

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

/// Rollout progress of one Deployment, as the Go operator measured it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rollout {
    /// The Deployment controller has seen the current generation.
    pub observed: bool,
    /// Pods of all revisions (`deployment.status.replicas`).
    pub replicas: i32,
    /// Available pods of the current revision.
    pub updated: i32,
    /// Image reference of the newest revision with available pods.
    pub serving_image: Option<String>,
}

fn container_image(
    template_spec: Option<&k8s_openapi::api::core::v1::PodSpec>,
    name: &str,
) -> Option<String> {
    template_spec?
        .containers
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.image.clone())
}

/// Measures the rollout of `dep` from its ReplicaSets.
pub fn rollout(dep: &Deployment, replica_sets: &[ReplicaSet], container: &str) -> Rollout {
    let status = dep.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0) >= dep.metadata.generation.unwrap_or(0);
    let uid = dep.metadata.uid.as_deref();
    let owned: Vec<&ReplicaSet> = replica_sets
        .iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| Some(o.uid.as_str()) == uid)
        })
        .collect();
    let rs_revision = |rs: &ReplicaSet| -> i64 {
        let ann = rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION));
        ann.and_then(|r| r.parse().ok()).unwrap_or(0)
    };
    let available = |rs: &ReplicaSet| rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
    let current = current_replica_set(dep, replica_sets);
    let serving = owned
        .iter()
        .filter(|rs| available(rs) > 0)
        .max_by_key(|rs| rs_revision(rs));
    Rollout {
        observed: observed && current.is_some(),
        replicas: status.replicas.unwrap_or(0),
        updated: current.map(available).unwrap_or(0),
        serving_image: serving
            .and_then(|rs| container_image(rs.spec.as_ref()?.template.as_ref()?.spec.as_ref(), container)),
    }
}

/// The ReplicaSet of `dep`'s current revision, once the ReplicaSet controller has seen it.
pub fn current_replica_set<'a>(dep: &Deployment, replica_sets: &'a [ReplicaSet]) -> Option<&'a ReplicaSet> {
    let revision = dep.metadata.annotations.as_ref()?.get(REVISION)?;
    let uid = dep.metadata.uid.as_deref()?;
    replica_sets.iter().find(|rs| {
        rs.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == uid)
            && rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)) == Some(revision)
            && rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0)
                > 0
    })
}

/// The Deployment controller's verdict that the rollout stopped progressing.
pub fn deadline_exceeded(dep: &Deployment) -> Option<String> {
    let conds = dep.status.as_ref()?.conditions.as_ref()?;
    let c = conds.iter().find(|c| c.type_ == "Progressing")?;
    (c.status == "False" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")).then(|| {
        c.message
            .clone()
            .unwrap_or_else(|| "progress deadline exceeded".to_owned())
    })
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
