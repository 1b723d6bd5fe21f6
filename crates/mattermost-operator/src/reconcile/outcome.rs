//! What applying the children produced, for status, events and the next requeue.

use k8s_openapi::api::apps::v1::Deployment;

use mattermost_api::v1beta1::LastBackup;

use crate::status::{Failure, Gate, JobKind, JobRun};

/// What applying the children produced, for status and events.
#[derive(Debug, Default)]
pub(super) struct ChildrenOutcome {
    pub(super) gate: Gate,
    pub(super) deployment: Option<Deployment>,
    pub(super) job_server: Option<Deployment>,
    pub(super) resource_patch: Option<mattermost_api::v1beta1::ResourcePatchStatus>,
    /// Upgrade Jobs created by this reconcile.
    pub(super) jobs_created: Vec<(JobKind, String)>,
    /// Upgrade Jobs this reconcile read or created; the others are deleted.
    pub(super) jobs_in_use: Vec<String>,
    /// The backup before this upgrade, once it succeeded.
    pub(super) last_backup: Option<LastBackup>,
    /// The verification of a new version after its rollout.
    pub(super) verification: Option<JobRun>,
    pub(super) rollout_started: bool,
    pub(super) capacity_check_skipped: bool,
    pub(super) rolled_back_from: Option<String>,
    pub(super) rollback_started: bool,
    /// A scale-up the capacity preflight refused (the live replica count was kept).
    pub(super) scale_blocked: Option<Failure>,
    /// Why the running upgrade Job's pod does not run (unschedulable, image pull...).
    pub(super) job_pod_problem: Option<Failure>,
    /// Wanted children absent from the caches or being deleted (`Kind name`).
    pub(super) missing: Vec<String>,
}
