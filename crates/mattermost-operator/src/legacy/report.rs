//! Status and events of a `ClusterInstallation`.

use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use mattermost_api::v1alpha1::{ClusterInstallation, ClusterInstallationStatus};
use serde_json::json;
use tracing::warn;

use super::context::{Ctx, Error};
use crate::apply::FIELD_MANAGER;

/// The `Reconciled` condition (transition time kept unless the status flips).
pub(super) fn set_reconciled(
    status: &mut ClusterInstallationStatus,
    generation: Option<i64>,
    result: Result<(), (&str, String)>,
) {
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let c = match result {
        Ok(()) => {
            crate::status::conditions::condition("Reconciled", true, "Reconciled", "", generation, &now)
        }
        Err((reason, message)) => {
            crate::status::conditions::condition("Reconciled", false, reason, message, generation, &now)
        }
    };
    crate::status::conditions::upsert(&mut status.conditions, c);
}

/// kstatus' `Reconciling`/`Stalled` pair (see `status::conditions::set_kstatus`).
pub(super) fn set_kstatus(
    status: &mut ClusterInstallationStatus,
    generation: Option<i64>,
    reconciling: Option<(&str, String)>,
    stalled: Option<(&str, String)>,
) {
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    crate::status::conditions::set_kstatus(&mut status.conditions, reconciling, stalled, generation, &now);
}

/// Writes `status` when it changed.
pub(super) async fn write_status(
    api: &Api<ClusterInstallation>,
    ci: &ClusterInstallation,
    status: ClusterInstallationStatus,
) -> Result<(), Error> {
    if ci.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let body =
        json!({"apiVersion": "mattermost.com/v1alpha1", "kind": "ClusterInstallation", "status": status});
    api.patch_status(
        &ci.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// Publishes an event on `ci`.
pub(super) async fn event(ctx: &Ctx, ci: &ClusterInstallation, type_: EventType, reason: &str, note: String) {
    let ev = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Migrate".to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &ci.object_ref(&())).await {
        warn!(error = %e, "publishing event failed");
    }
}
