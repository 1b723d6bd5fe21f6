//! After the rollout: the verification Job of a new version (through the same Job gate as the
//! backup and update Jobs), then the cleanup of the upgrade Jobs no longer needed.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use mattermost_api::v1beta1::Mattermost;

use super::context::{Context, cached};
use super::jobs::{cleanup_jobs, job_gate};
use super::outcome::ChildrenOutcome;
use super::upgrade::StableHistory;
use crate::apply::ApplyError;
use crate::desired::deployment::main_image;
use crate::desired::names::{MAIN_CONTAINER, Names};
use crate::desired::verify_job::verify_job;
use crate::status::{self, JobKind};

/// Verifies a new version once every replica of it is available, before it may be `stable`;
/// then deletes the upgrade Jobs this reconcile did not use. A version that already reached
/// `stable`, the first install and a rolled-back version are not verified again; a failed
/// verification stays reported while the spec asks for that version.
pub(super) async fn verify_and_clean_up(
    ctx: &Context,
    mm: &Mattermost,
    names: &Names,
    uid: &str,
    deployment: Option<&Deployment>,
    replica_sets: &[ReplicaSet],
    out: &mut ChildrenOutcome,
) -> Result<(), ApplyError> {
    let image = mm.spec.image_reference();
    let history = StableHistory::of(mm);
    let wanted = mm.spec.verify_enabled() && history.last.is_some() && history.last.as_ref() != Some(&image);
    if wanted {
        let exists = cached(&ctx.stores.jobs, &names.verify_job(&image), &names.namespace).is_some();
        let desired = mm.spec.effective_replicas();
        let rolled_out = deployment.is_some_and(|d| {
            let roll = status::rollout(d, replica_sets, MAIN_CONTAINER);
            main_image(d).as_ref() == Some(&image)
                && roll.observed
                && roll.updated == desired
                && roll.replicas == desired
        });
        if exists || (rolled_out && desired > 0 && out.rolled_back_from.is_none()) {
            let job = verify_job(mm, names, &image, &ctx.operator_image);
            out.verification = Some(job_gate(ctx, mm, uid, JobKind::Verify, job, out).await?);
        }
    }
    cleanup_jobs(ctx, names, uid, &out.jobs_in_use).await
}
